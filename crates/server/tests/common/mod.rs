//! An in-process cloud for tests: a real server on 127.0.0.1:0 with a fresh
//! SQLite database and simulated agents running the real agent code.

#![allow(dead_code)]

use gpucloud_agent::runtime::Runtime;
use gpucloud_agent::sim::{SimHost, SimRuntime};
use gpucloud_agent::{Agent, AgentOptions};
use gpucloud_agent_api::ControlPlane;
use gpucloud_client::Client;
use gpucloud_server::{App, Config};
use gpucloud_store::images::ImageRow;
use gpucloud_store::{SecretBox, Store};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub struct TestCloud {
    pub app: Arc<App>,
    pub addr: SocketAddr,
    pub endpoint: String,
    pub hosts: Vec<String>,
    shutdown: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

impl Drop for TestCloud {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

impl TestCloud {
    pub async fn start(spec: &str) -> Self {
        Self::start_with(spec, Duration::from_millis(30)).await
    }

    pub async fn start_with(spec: &str, boot: Duration) -> Self {
        Self::start_on(None, spec, boot).await
    }

    /// A cloud on a database of its own (`None`: a fresh SQLite file) or on
    /// a shared one (several servers of one cluster on PostgreSQL).
    pub async fn start_on(url: Option<&str>, spec: &str, boot: Duration) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = url.map_or_else(
            || format!("sqlite://{}", dir.path().join("t.db").display()),
            str::to_string,
        );
        let store = Store::connect(&url, SecretBox::from_key(&[9u8; 32]))
            .await
            .unwrap();
        let mut cfg = Config::for_region("ap-guangzhou");
        cfg.resync_every = Duration::from_secs(2);
        let app = App::new(store, cfg.clone()).await.unwrap();
        let (shutdown, rx) = watch::channel(false);
        gpucloud_server::reconcile::spawn(app.clone(), rx.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = app.router();
        let mut srx = rx.clone();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = srx.changed().await;
                })
                .await
                .unwrap();
        });
        let link: Arc<dyn ControlPlane> = app.gateway.clone();
        let hosts = if spec.is_empty() {
            vec![]
        } else {
            SimHost::expand(
                &gpucloud_core::simspec::parse(spec, "ap-guangzhou", &cfg.default_zone).unwrap(),
            )
        };
        let ids: Vec<String> = hosts.iter().map(|h| h.host_id()).collect();
        for h in hosts {
            let rt: Arc<dyn Runtime> = Arc::new(SimRuntime::new(boot, boot));
            let agent = Agent::new(
                link.clone(),
                Arc::new(h),
                vec![rt],
                AgentOptions {
                    poll_wait: Duration::from_secs(5),
                    heartbeat: Duration::from_secs(2),
                    report_delay: Duration::from_millis(2),
                    retry: Duration::from_millis(100),
                    inventory_every: None,
                    power_check: None,
                    command_journal: None,
                },
            );
            tokio::spawn(agent.run(rx.clone()));
        }
        let cloud = Self {
            app,
            addr,
            endpoint: format!("http://{addr}"),
            hosts: ids,
            shutdown,
            _dir: dir,
        };
        cloud.wait_hosts().await;
        cloud
    }

    async fn wait_hosts(&self) {
        let want = self.hosts.len();
        poll("hosts register", Duration::from_secs(30), || async {
            let n = self.app.store.host_list().await.unwrap().len();
            (n >= want).then_some(())
        })
        .await;
        // And the scheduler sees them.
        poll("scheduler index", Duration::from_secs(30), || async {
            (self.app.sched.with_index(|i| i.len()) >= want).then_some(())
        })
        .await;
    }

    pub async fn tenant(&self, name: &str) -> (Client, i64) {
        let c = self.app.store.tenant_create(name, 1000).await.unwrap();
        (
            Client::new(&self.endpoint, &c.secret_id, &c.secret_key, "ap-guangzhou")
                .with_language("en-US"),
            c.app_id,
        )
    }
}

/// Fresh PostgreSQL databases, as the store suite makes them.
#[path = "../../../store/tests/common/mod.rs"]
mod store_db;
#[allow(unused_imports)]
pub use store_db::pg_database;

/// Closes the apps' pools and drops a database made by [`pg_database`].
pub async fn drop_database(apps: &[Arc<App>], admin: &str, name: &str) {
    for a in apps {
        a.store.close().await;
    }
    store_db::drop_pg_database(admin, name).await;
}

/// Polls `f` until it yields, with a deadline (never sleep-and-hope).
pub async fn poll<T, F, Fut>(what: &str, deadline: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub async fn state(c: &Client, id: &str) -> String {
    let r = c
        .cvm("DescribeInstances", json!({"InstanceIds": [id]}))
        .await
        .unwrap();
    r["InstanceSet"][0]["InstanceState"]
        .as_str()
        .unwrap_or("GONE")
        .to_string()
}

pub async fn wait_state(c: &Client, id: &str, want: &str) -> Value {
    poll(
        &format!("{id} to be {want}"),
        Duration::from_secs(30),
        || async {
            let r = c
                .cvm("DescribeInstances", json!({"InstanceIds": [id]}))
                .await
                .unwrap();
            let st = r["InstanceSet"][0]["InstanceState"]
                .as_str()
                .unwrap_or("GONE");
            (st == want).then(|| r["InstanceSet"][0].clone())
        },
    )
    .await
}

pub async fn wait_gone(c: &Client, id: &str) {
    poll(
        &format!("{id} to disappear"),
        Duration::from_secs(30),
        || async {
            let r = c
                .cvm("DescribeInstances", json!({"InstanceIds": [id]}))
                .await
                .unwrap();
            (r["TotalCount"] == 0).then_some(())
        },
    )
    .await
}

pub fn run_params(ty: &str) -> Value {
    json!({"Placement": {"Zone": "ap-guangzhou-3"}, "ImageId": "img-gc0ubt22", "InstanceType": ty})
}

pub async fn run_one(c: &Client, ty: &str) -> String {
    let r = c.cvm("RunInstances", run_params(ty)).await.unwrap();
    r["InstanceIdSet"][0].as_str().unwrap().to_string()
}

pub fn code(r: Result<Value, gpucloud_client::ClientError>) -> String {
    match r {
        Ok(v) => format!("OK {v}"),
        Err(e) => e.code().unwrap_or("TRANSPORT").to_string(),
    }
}

/// Registers a public VM image `img-gcvmtest` (runtime `qemu`).
pub async fn vm_image(cloud: &TestCloud) {
    image(cloud, "img-gcvmtest", "qemu").await;
}

/// Registers a public image of a runtime (`qemu`, `container`).
pub async fn image(cloud: &TestCloud, id: &str, runtime: &str) {
    cloud
        .app
        .store
        .image_upsert(&ImageRow {
            image_id: id.into(),
            app_id: None,
            name: "vm".into(),
            os_name: "Debian".into(),
            platform: "Debian".into(),
            description: String::new(),
            size_gib: 2,
            architecture: "x86_64".into(),
            image_type: "PUBLIC_IMAGE".into(),
            source: "IMPORT".into(),
            state: "NORMAL".into(),
            runtime: runtime.into(),
            location: format!("{id}/disk"),
            gpu_driver: false,
            guest_agent: true,
            tags: vec![("runtime".into(), runtime.into())],
            created_at: 0,
        })
        .await
        .unwrap();
}
