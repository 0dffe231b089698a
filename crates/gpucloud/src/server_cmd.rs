//! `gpucloud server`: the control plane alone — the API and the agent
//! endpoint that host agents on other machines join and talk to over
//! mutual TLS. Several servers may share one PostgreSQL database.

use crate::cloud::{self, CloudOptions};
use crate::up::operator_credentials;
use anyhow::{Context, Result};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Flags of `server`.
#[derive(clap::Args, Debug)]
pub struct ServerArgs {
    /// Where the server keeps its master key, credentials and (without
    /// --database) its SQLite database.
    #[arg(long, env = "GPUCLOUD_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// PostgreSQL URL (every server of a cluster uses the same database and
    /// the same master key).
    #[arg(long, env = "GPUCLOUD_DATABASE")]
    database: Option<String>,
    /// Address of the Tencent-compatible API.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Address of the agent endpoint (mutual TLS).
    #[arg(long, default_value = "0.0.0.0:8443")]
    agent_listen: SocketAddr,
    /// Names (DNS or IP) agents use to reach the agent endpoint; the first
    /// one goes into the command `admin join-token create` prints.
    #[arg(long = "agent-name")]
    agent_names: Vec<String>,
    /// Region served.
    #[arg(long, default_value = "ap-guangzhou")]
    region: String,
    /// Default zone (default: `<region>-3`); agents without --zone serve it.
    #[arg(long)]
    zone: Option<String>,
    /// Seconds without a report after which a host is unreachable.
    #[arg(long, default_value_t = 90)]
    host_grace_s: u64,
    /// Image manifests to register at start (`*/image.json` under it).
    #[arg(long)]
    images_dir: Option<PathBuf>,
}

/// Runs `server`.
pub async fn run(a: ServerArgs) -> Result<()> {
    let data_dir = a.data_dir.clone().unwrap_or_else(crate::default_data_dir);
    crate::up::check_region_zone(&a.region, a.zone.as_deref())?;
    let opts = CloudOptions {
        data_dir: data_dir.clone(),
        database: a.database.clone(),
        listen: a.listen,
        region: a.region.clone(),
        zone: a.zone.clone(),
        simulate: None,
        sim_boot: Duration::ZERO,
        sim_stop: Duration::ZERO,
        local_agent: false,
        container_runtime: None,
        vm_accel: gpucloud_agent::qemu::AccelChoice::Auto,
        host_grace: Duration::from_secs(a.host_grace_s.max(1)),
        agent_listen: Some(a.agent_listen),
        agent_names: a.agent_names.clone(),
        images_dir: a.images_dir.clone(),
        agent_metrics_listen: None,
        clear_gpu_fences: false,
    };
    let cloud = cloud::start(&opts).await?;
    let endpoint = format!("http://{}", cloud.addr);
    let agent_addr = cloud
        .agent_addr
        .context("the agent endpoint did not start")?;
    let advertised = match a.agent_names.first() {
        Some(n) => n.clone(),
        None if agent_addr.ip().is_unspecified() => "SERVER".into(),
        None => agent_addr.ip().to_string(),
    };
    let agent_url = if advertised.contains(':') && !advertised.starts_with('[') {
        format!("https://[{advertised}]:{}", agent_addr.port())
    } else {
        format!("https://{advertised}:{}", agent_addr.port())
    };
    cloud
        .app
        .store
        .set_setting("agent_endpoint", &agent_url)
        .await?;
    let (creds, _) =
        operator_credentials(&cloud.app.store, &data_dir, &a.region, &endpoint).await?;
    println!("gpucloud server is up.");
    println!();
    println!("  API endpoint    {endpoint}");
    println!("  agent endpoint  {agent_url} (listening on {agent_addr})");
    println!("  cluster CA      {}", cloud.ca_hash);
    println!("  region          {}", a.region);
    println!(
        "  credentials     {} (SecretId {})",
        data_dir.join("credentials.json").display(),
        creds.secret_id
    );
    println!();
    println!(
        "Add a GPU host: create a join token here, then run the command it prints on the host:"
    );
    println!(
        "  gpucloud admin join-token create --data-dir {}{}",
        data_dir.display(),
        a.database
            .as_ref()
            .map(|_| " --database $GPUCLOUD_DATABASE")
            .unwrap_or("")
    );
    crate::up::wait_for_signal().await;
    eprintln!("stopping…");
    cloud.stop().await;
    Ok(())
}
