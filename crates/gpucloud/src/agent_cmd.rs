//! `gpucloud agent`: the host agent of a GPU server. It joins a cluster once
//! with a token (see [`gpucloud_agent::remote`]), then dials the server over
//! mutual TLS, registers the machine's inventory and runs the instances the
//! control plane places here. Instances keep running when the agent stops;
//! a restarted agent adopts them.

use anyhow::{Context, Result};
use gpucloud_agent::host::{HostConfig, LocalHost};
use gpucloud_agent::remote::{self, HttpControlPlane, Identity};
use gpucloud_agent::{Agent, AgentOptions};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Flags of `agent`.
#[derive(clap::Args, Debug)]
pub struct AgentArgs {
    /// The server's agent endpoint, e.g. https://10.0.0.1:8443.
    #[arg(long, env = "GPUCLOUD_SERVER")]
    server: String,
    /// Join token from `gpucloud admin join-token create` (first start only).
    #[arg(long, env = "GPUCLOUD_JOIN_TOKEN")]
    join_token: Option<String>,
    /// The cluster CA's hash that token creation printed (first start only).
    #[arg(long, env = "GPUCLOUD_CA_HASH")]
    ca_hash: Option<String>,
    /// Where the agent keeps its host ID, credentials and instance bundles.
    #[arg(long, default_value = "/var/lib/gpucloud/agent")]
    state_dir: PathBuf,
    /// Where image files are found (default: <state-dir>/images).
    #[arg(long)]
    images_dir: Option<PathBuf>,
    /// Zone this host serves (default: the server's default zone).
    #[arg(long, default_value = "")]
    zone: String,
    /// OCI runtime for container instances (default: crun or runc, found on PATH).
    #[arg(long)]
    container_runtime: Option<PathBuf>,
    /// VM acceleration: `auto` (KVM when a probe guest runs under it, else
    /// TCG), `kvm` or `tcg`.
    #[arg(long, default_value = "auto")]
    vm_accel: gpucloud_agent::qemu::AccelChoice,
    /// Offer no instance runtime (inventory only).
    #[arg(long)]
    no_runtimes: bool,
    /// Memory kept back for the host itself, MiB.
    #[arg(long, default_value_t = 2048)]
    reserved_mib: u64,
    /// Seconds between full reports (the server's grace period must be longer).
    #[arg(long, default_value_t = 15)]
    heartbeat_s: u64,
    /// Longest desired-state long poll, seconds.
    #[arg(long, default_value_t = 25)]
    poll_wait_s: u64,
    /// Where `/metrics` (Prometheus) is served; `off` to serve nothing.
    #[arg(long, default_value = "127.0.0.1:9101")]
    metrics_listen: String,
    /// The NVML library (default: libnvidia-ml.so.1 from the loader path).
    #[arg(long, env = "GPUCLOUD_NVML_LIB")]
    nvml_lib: Option<PathBuf>,
    /// Put GPUs fenced after an XID back in service (after an operator reset
    /// or repaired them), then run.
    #[arg(long)]
    clear_gpu_fences: bool,
}

/// Runs `agent`.
pub async fn run(a: AgentArgs) -> Result<()> {
    let host = LocalHost::probe(&HostConfig {
        state_dir: a.state_dir.clone(),
        images_dir: a
            .images_dir
            .clone()
            .unwrap_or_else(|| a.state_dir.join("images")),
        zone: a.zone.clone(),
        container_runtime: a.container_runtime.clone(),
        no_runtimes: a.no_runtimes,
        reserved_mib: a.reserved_mib,
        nvml_lib: a.nvml_lib.clone(),
        vm_accel: a.vm_accel,
    })
    .with_context(|| format!("preparing the state directory {}", a.state_dir.display()))?;
    let host_id = host.inventory.host_id.clone();
    if a.clear_gpu_fences {
        host.gpu_monitor.clear_fences();
        eprintln!("cleared the GPU fences of {host_id}");
    }
    let id = match Identity::load(&a.state_dir).map_err(|e| anyhow::anyhow!(e))? {
        Some(id) => id,
        None => {
            let (Some(token), Some(hash)) = (&a.join_token, &a.ca_hash) else {
                anyhow::bail!(
                    "this host has not joined a cluster yet: pass --join-token and --ca-hash, as printed by `gpucloud admin join-token create` on the server"
                );
            };
            let id = remote::join(&a.server, token, hash, &host_id, &a.state_dir)
                .await
                .map_err(|e| anyhow::anyhow!(e))?;
            eprintln!(
                "joined the cluster at {} as {host_id}; credentials are in {}",
                a.server,
                a.state_dir.display()
            );
            id
        }
    };
    let link = HttpControlPlane::new(&a.server, &id).map_err(|e| anyhow::anyhow!(e))?;
    let runtimes: Vec<String> = host
        .inventory
        .runtimes
        .iter()
        .map(|r| r.as_str().to_string())
        .collect();
    tracing::info!(
        host = %host_id,
        server = %a.server,
        runtimes = %if runtimes.is_empty() { "none".to_string() } else { runtimes.join(",") },
        "agent starting"
    );
    let agent = Agent::new(
        Arc::new(link),
        host.inventory.clone(),
        host.runtimes.clone(),
        AgentOptions {
            poll_wait: Duration::from_secs(a.poll_wait_s.clamp(1, 60)),
            heartbeat: Duration::from_secs(a.heartbeat_s.max(1)),
            command_journal: Some(a.state_dir.join("commands")),
            ..AgentOptions::default()
        },
    );
    let (tx, rx) = watch::channel(false);
    if a.metrics_listen != "off" {
        serve_metrics(&a.metrics_listen, &host, agent.stats(), rx.clone()).await;
    }
    let mut task = tokio::spawn(agent.run(rx));
    tokio::select! {
        () = crate::up::wait_for_signal() => {}
        r = &mut task => {
            return match r {
                Ok(Err(e)) => Err(anyhow::anyhow!(e)).context(format!(
                    "the server will not take this host; fix the cause, or to join anew remove {} and {} and use a new join token",
                    a.state_dir.join("agent.crt").display(),
                    a.state_dir.join("agent.key").display()
                )),
                _ => Ok(()),
            };
        }
    }
    let _ = tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    eprintln!("agent stopped; instances keep running and are adopted at the next start");
    Ok(())
}

/// Serves `/metrics`; a port that cannot be bound is logged, not fatal.
pub(crate) async fn serve_metrics(
    listen: &str,
    host: &LocalHost,
    stats: Arc<gpucloud_agent::AgentStats>,
    mut stop: watch::Receiver<bool>,
) {
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(listen, error = %e, "cannot serve /metrics; pass --metrics-listen ADDR or off");
            return;
        }
    };
    if let Ok(at) = listener.local_addr() {
        tracing::info!(%at, "serving /metrics");
    }
    let inventory = host.inventory.clone();
    let monitor = host.gpu_monitor.clone();
    let handler = move || {
        let (inventory, monitor, stats) = (inventory.clone(), monitor.clone(), stats.clone());
        async move {
            let text = tokio::task::spawn_blocking(move || {
                use gpucloud_agent::inventory::Inventory as _;
                let view = monitor.look();
                let inv = inventory.collect();
                gpucloud_agent::metrics::render(&inv.host_id, &stats, &inv.gpus, &view)
            })
            .await
            .unwrap_or_default();
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4",
                )],
                text,
            )
        }
    };
    let app = axum::Router::new().route("/metrics", axum::routing::get(handler));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.changed().await;
            })
            .await;
    });
}
