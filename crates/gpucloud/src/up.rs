//! `gpucloud up`: the whole cloud in one process, in the foreground.

use crate::cloud::{self, CloudOptions};
use anyhow::{Context, Result};
use gpucloud_store::Store;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Flags of `up`.
#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// Where the cloud keeps its state (database, master key, credentials).
    #[arg(long, env = "GPUCLOUD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address of the API (use port 0 for any free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Simulated hosts: COUNT*MODELxGPUS[@ZONE],… e.g. `4*H100x8,2*T4x4@ap-guangzhou-4`.
    #[arg(long)]
    simulate: Option<String>,
    /// Region served.
    #[arg(long, default_value = "ap-guangzhou")]
    region: String,
    /// Default zone (default: `<region>-3`).
    #[arg(long)]
    zone: Option<String>,
    /// PostgreSQL URL instead of the SQLite file in the data directory.
    #[arg(long, env = "GPUCLOUD_DATABASE")]
    database: Option<String>,
    /// How long a simulated instance takes to boot, in milliseconds.
    #[arg(long, default_value_t = 1500)]
    sim_boot_ms: u64,
    /// How long a simulated instance takes to shut down, in milliseconds.
    #[arg(long, default_value_t = 500)]
    sim_stop_ms: u64,
    /// Do not run an agent for this machine itself.
    #[arg(long)]
    no_local_agent: bool,
    /// Seconds without a report after which a host is unreachable.
    #[arg(long, default_value_t = 90)]
    host_grace_s: u64,
    /// Where the agent endpoint (mutual TLS) listens; the local agent joins
    /// through it, and agents on other machines can too when it is not on a
    /// loopback address.
    #[arg(long, default_value = "127.0.0.1:0")]
    agent_listen: SocketAddr,
    /// Extra DNS names or IP addresses for the agent endpoint's certificate.
    #[arg(long = "agent-name")]
    agent_names: Vec<String>,
    /// OCI runtime for container instances (default: crun or runc, found on PATH).
    #[arg(long)]
    container_runtime: Option<PathBuf>,
    /// VM acceleration: `auto` (KVM when a probe guest runs under it, else
    /// TCG), `kvm` or `tcg`.
    #[arg(long, default_value = "auto")]
    vm_accel: gpucloud_agent::qemu::AccelChoice,
    /// Where the local agent serves its `/metrics` (GPU telemetry, XID
    /// counters, instances), as `gpucloud agent` does; `off` (the default)
    /// serves nothing. The server's own metrics are on --listen's /metrics.
    #[arg(long, default_value = "off")]
    agent_metrics_listen: String,
    /// Put the local host's GPUs fenced after an XID back in service (after
    /// an operator reset or repaired them), then run.
    #[arg(long)]
    clear_gpu_fences: bool,
}

/// What `credentials.json` holds.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Credentials {
    pub secret_id: String,
    pub secret_key: String,
    pub region: String,
    endpoint: String,
    app_id: i64,
    uin: i64,
}

fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Makes sure the operator's tenant and credentials exist; returns them.
pub async fn operator_credentials(
    store: &Store,
    data_dir: &Path,
    region: &str,
    endpoint: &str,
) -> Result<(Credentials, bool)> {
    let path = data_dir.join("credentials.json");
    let existing: Option<Credentials> = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok());
    let operator = match store.setting("operator_app_id").await? {
        Some(id) => store.tenant_get(id.parse().unwrap_or(0)).await?,
        None => None,
    };
    let (creds, fresh) = match (existing, operator) {
        // The same key as before, with the endpoint of this start.
        (Some(c), Some(t))
            if c.app_id == t.app_id && store.api_key_lookup(&c.secret_id).await?.is_some() =>
        {
            (
                Credentials {
                    endpoint: endpoint.to_string(),
                    region: region.to_string(),
                    ..c
                },
                false,
            )
        }
        (_, Some(t)) => {
            // The file is gone or stale: rewrite it from the key in the database.
            let (secret_id, secret_key, fresh) = match store.api_key_first(t.app_id).await? {
                Some((id, key)) => (id, key, false),
                None => {
                    let (id, key) = store.api_key_create(t.app_id).await?;
                    (id, key, true)
                }
            };
            (
                Credentials {
                    secret_id,
                    secret_key,
                    region: region.to_string(),
                    endpoint: endpoint.to_string(),
                    app_id: t.app_id,
                    uin: t.uin,
                },
                fresh,
            )
        }
        (_, None) => {
            let c = store
                .tenant_create("operator", 10_000)
                .await
                .map_err(|e| anyhow::anyhow!(cloud::chain(&e)))?;
            store
                .set_setting("operator_app_id", &c.app_id.to_string())
                .await?;
            (
                Credentials {
                    secret_id: c.secret_id,
                    secret_key: c.secret_key,
                    region: region.to_string(),
                    endpoint: endpoint.to_string(),
                    app_id: c.app_id,
                    uin: c.uin,
                },
                true,
            )
        }
    };
    write_private(&path, &serde_json::to_string_pretty(&creds)?)?;
    Ok((creds, fresh))
}

/// `s` quoted for a POSIX shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Waits for SIGINT or SIGTERM.
pub async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Checks `--region` and `--zone`.
pub fn check_region_zone(region: &str, zone: Option<&str>) -> Result<()> {
    if gpucloud_core::region::region(region).is_none() {
        anyhow::bail!(
            "unknown region `{region}`; use one of {}",
            gpucloud_core::region::REGIONS
                .iter()
                .map(|r| r.code)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if let Some(z) = zone {
        match gpucloud_core::region::Zone::parse(z) {
            Some(zz) if zz.region == region => {}
            _ => anyhow::bail!(
                "zone `{z}` is not a zone of region {region} (zones look like {region}-3)"
            ),
        }
    }
    Ok(())
}

/// Runs `up`.
pub async fn run(a: UpArgs) -> Result<()> {
    let data_dir = a.data_dir.clone().unwrap_or_else(crate::default_data_dir);
    check_region_zone(&a.region, a.zone.as_deref())?;
    if let Some(s) = &a.simulate {
        let default_zone = a.zone.clone().unwrap_or_else(|| format!("{}-3", a.region));
        gpucloud_core::simspec::parse(s, &a.region, &default_zone).context("--simulate")?;
    }
    let opts = CloudOptions {
        data_dir: data_dir.clone(),
        database: a.database.clone(),
        listen: a.listen,
        region: a.region.clone(),
        zone: a.zone.clone(),
        simulate: a.simulate.clone(),
        sim_boot: Duration::from_millis(a.sim_boot_ms),
        sim_stop: Duration::from_millis(a.sim_stop_ms),
        local_agent: !a.no_local_agent,
        container_runtime: a.container_runtime.clone(),
        vm_accel: a.vm_accel,
        host_grace: Duration::from_secs(a.host_grace_s.max(1)),
        agent_listen: Some(a.agent_listen),
        agent_names: a.agent_names.clone(),
        images_dir: Some(data_dir.join("images")),
        agent_metrics_listen: (a.agent_metrics_listen != "off")
            .then(|| a.agent_metrics_listen.clone()),
        clear_gpu_fences: a.clear_gpu_fences,
    };
    let cloud = cloud::start(&opts).await?;
    let endpoint = format!("http://{}", cloud.addr);
    let hosts = a
        .simulate
        .as_ref()
        .map(|s| {
            gpucloud_core::simspec::parse(s, &a.region, &cloud.app.cfg.default_zone)
                .map(|g| g.iter().map(|x| x.count as usize).sum::<usize>())
                .unwrap_or(0)
        })
        .unwrap_or(0);
    // Ready means the hosts can take instances: wait for the simulated
    // hosts and the local agent to register before handing out the
    // credentials (which is what scripts and tests wait for).
    let want = hosts + usize::from(!a.no_local_agent);
    if let Err(e) = cloud::wait_for_hosts(&cloud.app, want, Duration::from_secs(120)).await {
        tracing::warn!("{e}; instances may be refused until the rest register (gpucloud admin hosts shows them)");
    }
    let (creds, fresh) =
        operator_credentials(&cloud.app.store, &data_dir, &a.region, &endpoint).await?;
    let cred_path = data_dir.join("credentials.json");
    println!("gpucloud is up.");
    println!();
    println!("  API endpoint   {endpoint}");
    println!("  region         {}", a.region);
    println!("  data directory {}", data_dir.display());
    if let Some(at) = cloud.agent_addr {
        println!("  agent endpoint https://{at} (CA {})", cloud.ca_hash);
    }
    println!(
        "  credentials    {} (mode 0600){}",
        cred_path.display(),
        if fresh { ", new" } else { "" }
    );
    if hosts > 0 {
        println!(
            "  simulated      {hosts} host(s): {}",
            a.simulate.as_deref().unwrap_or("")
        );
    }
    println!();
    println!("Point tccli at it (one time):");
    // The secret goes to the terminal (or log) once, when it is made; later
    // starts read it from the 0600 file instead of printing it again.
    let secret = if fresh {
        creds.secret_key.clone()
    } else {
        format!(
            "\"$(sed -n 's/.*\"SecretKey\": *\"\\([^\"]*\\)\".*/\\1/p' {})\"",
            shell_quote(&cred_path.display().to_string())
        )
    };
    println!(
        "  tccli configure set secretId {} secretKey {secret} region {} cvm.endpoint {endpoint} tat.endpoint {endpoint} --profile gpucloud",
        creds.secret_id, a.region
    );
    println!("Then, for example:");
    println!("  tccli cvm DescribeZoneInstanceConfigInfos --profile gpucloud");
    println!(
        "  tccli cvm RunInstances --profile gpucloud --Placement '{{\"Zone\":\"{}\"}}' --ImageId img-gc0ubt22 --InstanceType GT5.6XLARGE240",
        cloud.app.cfg.default_zone
    );
    println!();
    println!(
        "More tenants: gpucloud admin tenant create NAME --data-dir {}",
        data_dir.display()
    );
    println!("Press Ctrl-C to stop; instances and keys stay in the data directory.");
    wait_for_signal().await;
    eprintln!("stopping…");
    cloud.stop().await;
    Ok(())
}
