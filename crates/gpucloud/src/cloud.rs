//! Wiring of a cloud process: store, control plane, the API server, the
//! agent endpoint (mutual TLS) and agents. `up`, `server` and the benchmarks
//! start one of these.
//!
//! The local host's agent (in `up`) joins through the agent endpoint like any
//! remote agent — token, CSR, mutual TLS — so `up` exercises the same path as
//! a fleet. Simulated hosts talk to the gateway in process: they stand in for
//! machines, not for the transport, and thousands of them would otherwise
//! cost thousands of TLS sessions.

use anyhow::{Context, Result};
use gpucloud_agent::host::{HostConfig, LocalHost};
use gpucloud_agent::remote::{self, HttpControlPlane, Identity};
use gpucloud_agent::runtime::Runtime;
use gpucloud_agent::sim::{SimHost, SimRuntime};
use gpucloud_agent::{Agent, AgentOptions};
use gpucloud_agent_api::ControlPlane;
use gpucloud_server::pki::Pki;
use gpucloud_server::{App, Config};
use gpucloud_store::{SecretBox, Store};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// What to start.
#[derive(Debug, Clone)]
pub struct CloudOptions {
    /// Data directory (SQLite file, master key, credentials).
    pub data_dir: PathBuf,
    /// Database URL; `None` = SQLite in the data directory.
    pub database: Option<String>,
    /// Listen address.
    pub listen: SocketAddr,
    /// Region.
    pub region: String,
    /// Default zone.
    pub zone: Option<String>,
    /// `--simulate` spec.
    pub simulate: Option<String>,
    /// Simulated boot time.
    pub sim_boot: Duration,
    /// Simulated shutdown time.
    pub sim_stop: Duration,
    /// Run the local host's agent (needs `agent_listen`).
    pub local_agent: bool,
    /// The local agent's OCI runtime (`None`: crun or runc, found).
    pub container_runtime: Option<PathBuf>,
    /// The local agent's VM acceleration.
    pub vm_accel: gpucloud_agent::qemu::AccelChoice,
    /// Host liveness grace period.
    pub host_grace: Duration,
    /// Where the agent endpoint listens (`None`: no remote agents).
    pub agent_listen: Option<SocketAddr>,
    /// Extra names (DNS or IP) for the agent endpoint's certificate.
    pub agent_names: Vec<String>,
    /// Image manifests to register at start (`*/image.json` under it).
    pub images_dir: Option<PathBuf>,
    /// Where the local agent serves `/metrics`, if anywhere.
    pub agent_metrics_listen: Option<String>,
    /// Clear the local host's GPU fences before it starts.
    pub clear_gpu_fences: bool,
}

/// A running cloud.
pub struct Cloud {
    /// The control plane.
    pub app: Arc<App>,
    /// Where the API listens.
    pub addr: SocketAddr,
    /// Where the agent endpoint listens.
    pub agent_addr: Option<SocketAddr>,
    /// `sha256:…` of the cluster CA (what agents pin).
    pub ca_hash: String,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Cloud {
    /// Stops agents, reconcilers and the server; instances are left as they are.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        self.app.store.close().await;
    }
}

/// Opens the store of a data directory (creating the directory and master key).
pub async fn open_store(data_dir: &Path, database: Option<&str>) -> Result<Store> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data directory {}", data_dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700));
    }
    let secrets = SecretBox::load_or_create(&data_dir.join("master.key"))
        .map_err(|e| anyhow::anyhow!(e))
        .context("loading the master key")?;
    let url = match database {
        Some(u) => u.to_string(),
        None => format!("sqlite://{}", data_dir.join("gpucloud.db").display()),
    };
    Store::connect(&url, secrets)
        .await
        .map_err(|e| anyhow::anyhow!(chain(&e)))
        .with_context(|| format!("opening the database {}", redact(&url)))
}

/// The error and its sources on one line.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(a), Some(b)) if b > a => format!("{}://…{}", &url[..a], &url[b..]),
        _ => url.to_string(),
    }
}

/// Starts a cloud.
pub async fn start(opts: &CloudOptions) -> Result<Cloud> {
    let store = open_store(&opts.data_dir, opts.database.as_deref()).await?;
    match store.setting("region").await? {
        Some(r) if r != opts.region => anyhow::bail!(
            "the data directory {} serves region {r}; start with --region {r} or use another --data-dir",
            opts.data_dir.display()
        ),
        Some(_) => {}
        None => store.set_setting("region", &opts.region).await?,
    }
    let mut cfg = Config::for_region(&opts.region);
    if let Some(z) = &opts.zone {
        cfg.default_zone = z.clone();
    }
    cfg.host_grace = opts.host_grace;
    let app = App::new(store, cfg.clone())
        .await
        .map_err(|e| anyhow::anyhow!(chain(&e)))?;
    let (shutdown, rx) = watch::channel(false);
    let mut tasks = gpucloud_server::reconcile::spawn(app.clone(), rx.clone());

    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("listening on {}", opts.listen))?;
    let addr = listener.local_addr()?;
    let router = app.router();
    let mut srx = rx.clone();
    tasks.push(tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = srx.changed().await;
            })
            .await;
    }));

    let pki = Arc::new(
        Pki::load_or_create(&app.store)
            .await
            .map_err(|e| anyhow::anyhow!(chain(&e)))
            .context("loading the cluster CA")?,
    );
    let ca_hash = pki.ca_hash();
    let mut agent_addr = None;
    if let Some(at) = opts.agent_listen {
        let listener = tokio::net::TcpListener::bind(at)
            .await
            .with_context(|| format!("agent endpoint: listening on {at}"))?;
        let bound = listener.local_addr()?;
        let mut names = opts.agent_names.clone();
        names.push(bound.ip().to_string());
        names.push("localhost".into());
        let tls = gpucloud_server::agent_http::tls_config(&pki, &names)?;
        tasks.push(tokio::spawn(gpucloud_server::agent_http::serve(
            app.clone(),
            pki.clone(),
            tls,
            listener,
            rx.clone(),
        )));
        agent_addr = Some(bound);
    }
    if let Some(dir) = &opts.images_dir {
        let (ok, refused) = gpucloud_server::app::images::import_dir(&app.store, dir).await;
        for i in ok {
            tracing::info!(image = %i.image_id, runtime = %i.runtime, location = %i.location, "image registered");
        }
        for r in refused {
            tracing::warn!("image not registered: {r}");
        }
    }

    let link: Arc<dyn ControlPlane> = app.gateway.clone();
    if opts.local_agent {
        let at = agent_addr.context("the local agent needs the agent endpoint")?;
        let state_dir = opts.data_dir.join("agent");
        let host = LocalHost::probe(&HostConfig {
            state_dir: state_dir.clone(),
            nvml_lib: None,
            images_dir: opts
                .images_dir
                .clone()
                .unwrap_or_else(|| opts.data_dir.join("images")),
            zone: cfg.default_zone.clone(),
            container_runtime: opts.container_runtime.clone(),
            no_runtimes: false,
            reserved_mib: 2048,
            vm_accel: opts.vm_accel,
        })
        .context("probing this host")?;
        let server = format!("https://127.0.0.1:{}", at.port());
        let id =
            local_identity(&app, &server, &ca_hash, &host.inventory.host_id, &state_dir).await?;
        let http = HttpControlPlane::new(&server, &id).map_err(|e| anyhow::anyhow!(e))?;
        if opts.clear_gpu_fences {
            host.gpu_monitor.clear_fences();
            tracing::info!(host = %host.inventory.host_id, "cleared the GPU fences");
        }
        let agent = Agent::new(
            Arc::new(http),
            host.inventory.clone(),
            host.runtimes.clone(),
            AgentOptions {
                command_journal: Some(state_dir.join("commands")),
                ..AgentOptions::default()
            },
        );
        if let Some(listen) = &opts.agent_metrics_listen {
            crate::agent_cmd::serve_metrics(listen, &host, agent.stats(), rx.clone()).await;
        }
        let rx = rx.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = agent.run(rx).await {
                tracing::error!(error = %e, "the local host agent stopped");
            }
        }));
    }
    if let Some(spec) = &opts.simulate {
        let groups = gpucloud_core::simspec::parse(spec, &opts.region, &cfg.default_zone)?;
        let hosts = SimHost::expand(&groups);
        tracing::info!(hosts = hosts.len(), "starting simulated hosts");
        let sim_opts = AgentOptions {
            poll_wait: Duration::from_secs(30),
            heartbeat: Duration::from_secs(20),
            report_delay: Duration::from_millis(10),
            retry: Duration::from_secs(1),
            inventory_every: None,
            power_check: None,
            command_journal: None,
        };
        for h in hosts {
            let rt: Arc<dyn Runtime> = Arc::new(SimRuntime::new(opts.sim_boot, opts.sim_stop));
            let agent = Agent::new(link.clone(), Arc::new(h), vec![rt], sim_opts.clone());
            let rx = rx.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = agent.run(rx).await {
                    tracing::error!(error = %e, "a simulated host agent stopped");
                }
            }));
        }
    }
    Ok(Cloud {
        app,
        addr,
        agent_addr,
        ca_hash,
        shutdown,
        tasks,
    })
}

/// The local agent's credentials: the ones it has when they are still valid
/// for this cluster, else a fresh join with a one-use token.
async fn local_identity(
    app: &App,
    server: &str,
    ca_hash: &str,
    host_id: &str,
    state_dir: &Path,
) -> Result<Identity> {
    if let Some(id) = Identity::load(state_dir).map_err(|e| anyhow::anyhow!(e))? {
        let same_ca = id.ca_hash().ok().as_deref() == Some(ca_hash);
        let known = match gpucloud_agent::remote::cert_fingerprint(&id.cert_pem) {
            Some(fp) => app.store.agent_cert_host(&fp).await?.as_deref() == Some(host_id),
            None => false,
        };
        if same_ca && known {
            return Ok(id);
        }
        tracing::info!(
            "the local agent's certificate is not valid for this cluster; joining again"
        );
    }
    let token = app
        .store
        .join_token_for_host("local agent of gpucloud up", 60_000, host_id)
        .await?;
    remote::join(server, &token, ca_hash, host_id, state_dir)
        .await
        .map_err(|e| anyhow::anyhow!(e))
        .context("joining the local agent")
}

/// Waits until `n` hosts are registered and in the scheduler's index (or
/// the deadline passes).
pub async fn wait_for_hosts(app: &App, n: usize, deadline: Duration) -> Result<()> {
    let end = tokio::time::Instant::now() + deadline;
    loop {
        let have = app.sched.with_index(|i| i.len());
        if have >= n {
            return Ok(());
        }
        if tokio::time::Instant::now() > end {
            anyhow::bail!("only {have} of {n} hosts registered in time");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
