//! Wiring of an embedded cloud: store, control plane, HTTP server and
//! in-process agents (the local host and simulated hosts). `up` and the
//! benchmarks start one of these.

use anyhow::{Context, Result};
use gpucloud_agent::inventory::LocalInventory;
use gpucloud_agent::runtime::Runtime;
use gpucloud_agent::sim::{SimHost, SimRuntime};
use gpucloud_agent::{Agent, AgentOptions};
use gpucloud_agent_api::ControlPlane;
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
    /// Run the local host's agent.
    pub local_agent: bool,
    /// Host liveness grace period.
    pub host_grace: Duration,
}

/// A running cloud.
pub struct Cloud {
    /// The control plane.
    pub app: Arc<App>,
    /// Where the API listens.
    pub addr: SocketAddr,
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

    let link: Arc<dyn ControlPlane> = app.gateway.clone();
    if opts.local_agent {
        let inv = LocalInventory {
            host_id: LocalInventory::host_id_in(&opts.data_dir).context("reading the host ID")?,
            zone: cfg.default_zone.clone(),
            sysfs: "/sys".into(),
            procfs: "/proc".into(),
            runtimes: vec![],
            reserved_mib: 2048,
            details: serde_json::json!({
                "runtimes": "no instance runtime is available on this host",
            }),
        };
        let agent = Agent::new(link.clone(), Arc::new(inv), vec![], AgentOptions::default());
        tasks.push(tokio::spawn(agent.run(rx.clone())));
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
        };
        for h in hosts {
            let rt: Arc<dyn Runtime> = Arc::new(SimRuntime::new(opts.sim_boot, opts.sim_stop));
            let agent = Agent::new(link.clone(), Arc::new(h), vec![rt], sim_opts.clone());
            tasks.push(tokio::spawn(agent.run(rx.clone())));
        }
    }
    Ok(Cloud {
        app,
        addr,
        shutdown,
        tasks,
    })
}

/// Waits until `n` hosts are registered (or the deadline passes).
pub async fn wait_for_hosts(app: &App, n: usize, deadline: Duration) -> Result<()> {
    let end = tokio::time::Instant::now() + deadline;
    loop {
        let have = app.store.host_list().await?.len();
        if have >= n {
            return Ok(());
        }
        if tokio::time::Instant::now() > end {
            anyhow::bail!("only {have} of {n} hosts registered in time");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
