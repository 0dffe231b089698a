//! `DescribeInstanceVncUrl`: the action's refusals (tenant walls, state,
//! VM-only), single-use and expiring tokens on the WebSocket endpoint, and a
//! full relay — a WebSocket client, the server, a real agent over mutual TLS
//! and a fake VM serial console — carrying bytes both ways; and the same
//! across two servers on one PostgreSQL database, the WebSocket on one and
//! the agent on the other.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use gpucloud_agent::remote::{self, HttpControlPlane};
use gpucloud_agent::runtime::{Power, Runtime, RuntimeError, StopType};
use gpucloud_agent::sim::{SimHost, SimRuntime};
use gpucloud_agent::{Agent, AgentOptions};
use gpucloud_agent_api::{ControlPlane, InstanceSpec, RuntimeKind};
use gpucloud_server::pki::Pki;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::{self, Message};

async fn run_vm(c: &gpucloud_client::Client) -> String {
    let r = c
        .cvm(
            "RunInstances",
            json!({"Placement": {"Zone": "ap-guangzhou-3"}, "ImageId": "img-gcvmtest", "InstanceType": "S5.SMALL2"}),
        )
        .await
        .unwrap();
    r["InstanceIdSet"][0].as_str().unwrap().to_string()
}

async fn vnc_url(c: &gpucloud_client::Client, id: &str) -> String {
    let r = c
        .cvm("DescribeInstanceVncUrl", json!({"InstanceId": id}))
        .await
        .unwrap();
    r["InstanceVncUrl"].as_str().unwrap().to_string()
}

/// The HTTP status a refused WebSocket connect got.
async fn refused_status(url: &str) -> u16 {
    match tokio_tungstenite::connect_async(url).await {
        Err(tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Ok(_) => panic!("{url} was upgraded"),
        Err(e) => panic!("{url}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_action_checks_the_instance_and_tokens_work_once() {
    let cloud = TestCloud::start("1*CPU").await;
    vm_image(&cloud).await;
    let (a, _) = cloud.tenant("a").await;
    let (b, _) = cloud.tenant("b").await;

    let ctr = run_one(&a, "S5.SMALL2").await;
    let vm = run_vm(&a).await;
    wait_state(&a, &ctr, "RUNNING").await;
    wait_state(&a, &vm, "RUNNING").await;

    // Walls and shapes.
    let call = |c: &gpucloud_client::Client, p: serde_json::Value| {
        let c = c.clone();
        async move { c.cvm("DescribeInstanceVncUrl", p).await }
    };
    assert_eq!(
        code(call(&b, json!({"InstanceId": vm})).await),
        "InvalidInstanceId.NotFound"
    );
    assert_eq!(
        code(call(&a, json!({"InstanceId": "ins-"})).await),
        "InvalidInstanceId.Malformed"
    );
    assert_eq!(code(call(&a, json!({})).await), "MissingParameter");
    assert_eq!(
        code(call(&a, json!({"InstanceId": vm, "Foo": 1})).await),
        "UnknownParameter"
    );
    // Containers have no serial console.
    match a
        .cvm("DescribeInstanceVncUrl", json!({"InstanceId": ctr}))
        .await
    {
        Err(e) => {
            assert_eq!(e.code(), Some("UnsupportedOperation"));
            let m = e.to_string();
            assert!(
                m.contains("VM instances only") && m.contains("RunCommand"),
                "{m}"
            );
        }
        Ok(v) => panic!("container console: {v}"),
    }

    // A URL on the address the caller used.
    let url = vnc_url(&a, &vm).await;
    let prefix = format!("ws://{}/console/v1/", cloud.addr);
    assert!(url.starts_with(&prefix), "{url}");
    let token = &url[prefix.len()..];
    assert_eq!(token.len(), 43, "{token}");

    // First use upgrades. The simulated host has no serial console, so its
    // agent says so and the client gets the reason, then a close.
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let why = reason(&mut ws).await;
    assert!(why.contains("serial console"), "{why}");
    // Second use: gone.
    assert_eq!(refused_status(&url).await, 404);
    // Garbage and expired tokens: not found, no upgrade.
    assert_eq!(refused_status(&format!("{prefix}nope")).await, 404);
    let expired = gpucloud_server::console::new_token();
    let host = cloud.hosts[0].clone();
    cloud
        .app
        .store
        .console_session_create(&expired, "cs-expired", 1, &vm, &host, -1)
        .await
        .unwrap();
    assert_eq!(refused_status(&format!("{prefix}{expired}")).await, 404);
    // A plain GET does not use a token up.
    let fresh = vnc_url(&a, &vm).await;
    let plain = reqwest::get(fresh.replacen("ws://", "http://", 1))
        .await
        .unwrap();
    assert_eq!(plain.status(), 400);
    let (ws2, _) = tokio_tungstenite::connect_async(&fresh).await.unwrap();
    drop(ws2);

    // Only RUNNING instances.
    a.cvm("StopInstances", json!({"InstanceIds": [vm]}))
        .await
        .unwrap();
    wait_state(&a, &vm, "STOPPED").await;
    assert_eq!(
        code(call(&a, json!({"InstanceId": vm})).await),
        "UnsupportedOperation.InstanceStateStopped"
    );
    a.cvm("StartInstances", json!({"InstanceIds": [vm]}))
        .await
        .unwrap();
    let starting = code(call(&a, json!({"InstanceId": vm})).await);
    assert!(
        starting == "InvalidInstanceState" || starting.starts_with("OK"),
        "{starting}"
    );
}

/// A simulated VM runtime whose serial console is one end of a socket pair;
/// the test holds the other (the "VM").
struct ConsoleVm {
    inner: SimRuntime,
    vm_side: mpsc::UnboundedSender<UnixStream>,
}

#[async_trait::async_trait]
impl Runtime for ConsoleVm {
    fn kinds(&self) -> Vec<RuntimeKind> {
        self.inner.kinds()
    }
    async fn list(&self) -> Result<Vec<(String, Power)>, RuntimeError> {
        self.inner.list().await
    }
    async fn status(&self, id: &str) -> Result<Option<Power>, RuntimeError> {
        self.inner.status(id).await
    }
    async fn create(&self, spec: &InstanceSpec) -> Result<(), RuntimeError> {
        self.inner.create(spec).await
    }
    async fn update(&self, spec: &InstanceSpec) -> Result<(), RuntimeError> {
        self.inner.update(spec).await
    }
    async fn start(&self, spec: &InstanceSpec) -> Result<(), RuntimeError> {
        self.inner.start(spec).await
    }
    async fn stop(&self, id: &str, how: StopType) -> Result<(), RuntimeError> {
        self.inner.stop(id, how).await
    }
    async fn reboot(&self, spec: &InstanceSpec, how: StopType) -> Result<(), RuntimeError> {
        self.inner.reboot(spec, how).await
    }
    async fn destroy(&self, id: &str) -> Result<(), RuntimeError> {
        self.inner.destroy(id).await
    }
    async fn console(&self, id: &str) -> Result<UnixStream, RuntimeError> {
        if self.inner.status(id).await? != Some(Power::Running) {
            return Err(RuntimeError::new(format!("instance {id} is not running")));
        }
        let (agent_side, vm_side) =
            UnixStream::pair().map_err(|e| RuntimeError::new(e.to_string()))?;
        let _ = self.vm_side.send(vm_side);
        Ok(agent_side)
    }
}

/// A simulated CPU host.
fn cpu_host() -> SimHost {
    let groups = gpucloud_core::simspec::parse("1*CPU", "ap-guangzhou", "ap-guangzhou-3").unwrap();
    SimHost::expand(&groups).remove(0)
}

/// Runs an agent for `host` over `link` with a [`ConsoleVm`] runtime; the
/// receiver gets the VM's side of each serial connection the agent makes.
fn spawn_console_agent(
    link: Arc<dyn ControlPlane>,
    host: SimHost,
    stop: watch::Receiver<bool>,
) -> mpsc::UnboundedReceiver<UnixStream> {
    let (vm_tx, vm_rx) = mpsc::unbounded_channel();
    let rt: Arc<dyn Runtime> = Arc::new(ConsoleVm {
        inner: SimRuntime::new(Duration::from_millis(20), Duration::from_millis(20)),
        vm_side: vm_tx,
    });
    let agent = Agent::new(
        link,
        Arc::new(host),
        vec![rt],
        AgentOptions {
            poll_wait: Duration::from_secs(5),
            heartbeat: Duration::from_secs(1),
            report_delay: Duration::from_millis(2),
            retry: Duration::from_millis(100),
            inventory_every: None,
            power_check: None,
            command_journal: None,
        },
    );
    tokio::spawn(agent.run(stop));
    vm_rx
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects to a console URL and waits for the agent to open the VM's
/// serial console.
async fn attach(url: &str, vm_rx: &mut mpsc::UnboundedReceiver<UnixStream>) -> (Ws, UnixStream) {
    let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let serial = tokio::time::timeout(Duration::from_secs(30), vm_rx.recv())
        .await
        .expect("the agent opens the serial console")
        .unwrap();
    (ws, serial)
}

/// Carries bytes both ways, then closes the WebSocket and checks that the
/// agent lets go of the serial console.
async fn relay_both_ways(mut ws: Ws, mut serial: UnixStream) {
    // Tenant → VM.
    ws.send(Message::text("hello\n")).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        let mut buf = [0u8; 256];
        while !got.ends_with(b"hello\n") {
            let n = serial.read(&mut buf).await.unwrap();
            assert!(n > 0, "serial closed early");
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the VM receives the tenant's input");
    assert_eq!(got, b"hello\n");

    // VM → tenant, as binary frames.
    serial.write_all(b"login: ").await.unwrap();
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while !seen.ends_with(b"login: ") {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) => seen.extend_from_slice(&b),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                other => panic!("expected output, got {other:?}"),
            }
        }
    })
    .await
    .expect("the tenant receives the VM's output");
    assert_eq!(seen, b"login: ");

    // Closing the WebSocket ends the session: the agent lets go of the console.
    ws.close(None).await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), async {
        let mut buf = [0u8; 64];
        loop {
            match serial.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the agent closes the serial connection");
}

/// The text frame (the failure reason) a console WebSocket gets, skipping
/// output.
async fn reason(ws: &mut Ws) -> String {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => return t.to_string(),
                Some(Ok(_)) => continue,
                other => panic!("expected the reason, got {other:?}"),
            }
        }
    })
    .await
    .expect("the reason reaches the client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_relays_bytes_both_ways_through_an_mtls_agent() {
    let cloud = TestCloud::start("").await;
    vm_image(&cloud).await;
    let (t, _) = cloud.tenant("t").await;

    // An agent endpoint, a joined host and its agent over HTTPS.
    let pki = Arc::new(Pki::load_or_create(&cloud.app.store).await.unwrap());
    let tls = gpucloud_server::agent_http::tls_config(&pki, &["127.0.0.1".into()]).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, rx) = watch::channel(false);
    tokio::spawn(gpucloud_server::agent_http::serve(
        cloud.app.clone(),
        pki.clone(),
        tls,
        listener,
        rx.clone(),
    ));
    let endpoint = format!("https://127.0.0.1:{port}");
    let host = cpu_host();
    let host_id = host.host_id();
    let state = tempfile::tempdir().unwrap();
    let token = cloud
        .app
        .store
        .join_token_create("", 60_000, 1)
        .await
        .unwrap();
    let id = remote::join(&endpoint, &token, &pki.ca_hash(), &host_id, state.path())
        .await
        .unwrap();
    let link = Arc::new(HttpControlPlane::new(&endpoint, &id).unwrap());
    let mut vm_rx = spawn_console_agent(link, host, rx);
    poll("the host to register", Duration::from_secs(30), || async {
        (cloud.app.sched.with_index(|i| i.len()) == 1).then_some(())
    })
    .await;
    let vm = run_vm(&t).await;
    wait_state(&t, &vm, "RUNNING").await;

    // The tenant connects; the agent attaches to the VM's console.
    let (ws, serial) = attach(&vnc_url(&t, &vm).await, &mut vm_rx).await;
    relay_both_ways(ws, serial).await;
    poll(
        "the session to be forgotten",
        Duration::from_secs(30),
        || async { cloud.app.gateway.consoles.is_empty().then_some(()) },
    )
    .await;
    let _ = stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_console_crosses_servers_through_the_database() {
    let Some((url, admin, name)) = pg_database().await else {
        return;
    };
    // Two servers of one cluster; the host's agent talks to A only.
    let a = TestCloud::start_on(Some(&url), "", Duration::from_millis(30)).await;
    let b = TestCloud::start_on(Some(&url), "", Duration::from_millis(30)).await;
    vm_image(&a).await;
    let cred = a.app.store.tenant_create("t", 1000).await.unwrap();
    let client = |endpoint: &str| {
        gpucloud_client::Client::new(endpoint, &cred.secret_id, &cred.secret_key, "ap-guangzhou")
    };
    let (ta, tb) = (client(&a.endpoint), client(&b.endpoint));
    let (stop, rx) = watch::channel(false);
    let host = cpu_host();
    let host_id = host.host_id();
    let link: Arc<dyn ControlPlane> = a.app.gateway.clone();
    let mut vm_rx = spawn_console_agent(link, host, rx);
    poll("the host to register", Duration::from_secs(30), || async {
        (a.app.sched.with_index(|i| i.len()) == 1).then_some(())
    })
    .await;
    let vm = run_vm(&ta).await;
    wait_state(&ta, &vm, "RUNNING").await;

    // The tenant asks B and connects to B; the agent relays through A.
    let url = vnc_url(&tb, &vm).await;
    assert!(url.starts_with(&format!("ws://{}/", b.addr)), "{url}");
    let (ws, serial) = attach(&url, &mut vm_rx).await;
    relay_both_ways(ws, serial).await;
    poll(
        "B to forget the session",
        Duration::from_secs(30),
        || async { b.app.gateway.consoles.is_empty().then_some(()) },
    )
    .await;
    assert!(a
        .app
        .store
        .console_live_for_host(&host_id, 0)
        .await
        .unwrap()
        .is_empty());

    // The VM's console closes: the agent's reason crosses to B's tenant.
    let (mut ws, serial) = attach(&vnc_url(&tb, &vm).await, &mut vm_rx).await;
    drop(serial);
    let why = reason(&mut ws).await;
    assert!(why.contains("serial console closed"), "{why}");

    let _ = stop.send(true);
    drop_database(&[a.app.clone(), b.app.clone()], &admin, &name).await;
}
