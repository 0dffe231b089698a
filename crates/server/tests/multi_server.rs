//! Several stateless servers on one PostgreSQL database race for the same
//! GPUs. Each has its own scheduler index (so each believes all GPUs are
//! free); the database's unique constraint on GPU claims lets exactly as many
//! launches win as there are GPUs, and the losers re-plan or are refused.
//!
//! A host that reports to one server is live for all (liveness goes through
//! `hosts.last_seen`, not only the memory of the server it talks to), and
//! silent for all once it stops; a change served by one wakes an agent
//! polling another (`NOTIFY`, batched).

mod common;

use common::{drop_database, pg_database};
use gpucloud_agent::inventory::Inventory;
use gpucloud_agent::runtime::Runtime;
use gpucloud_agent::sim::{SimHost, SimRuntime};
use gpucloud_agent::{Agent, AgentOptions};
use gpucloud_agent_api::ControlPlane;
use gpucloud_client::Client;
use gpucloud_server::{App, Config};
use gpucloud_store::hosts::state;
use gpucloud_store::{SecretBox, Store};
use serde_json::json;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

async fn server(url: &str) -> (Arc<App>, String) {
    let store = Store::connect(url, SecretBox::from_key(&[5u8; 32]))
        .await
        .unwrap();
    let app = App::new(store, Config::for_region("ap-guangzhou"))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app.router();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (app, format!("http://{addr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_race_for_the_last_gpus() {
    let Some((url, admin, name)) = pg_database().await else {
        return;
    };
    let (a, ea) = server(&url).await;
    let (b, eb) = server(&url).await;
    // One 8-GPU host, registered through server A.
    let host = SimHost::expand(
        &gpucloud_core::simspec::parse("H100x8", "ap-guangzhou", "ap-guangzhou-3").unwrap(),
    )
    .remove(0);
    a.gateway.register(&host.collect()).await.unwrap();
    // Server B learns about it only from the database.
    b.sched.resync(&b.store.capacity_snapshot().await.unwrap());
    let t = a.store.tenant_create("race", 1000).await.unwrap();
    let ca = Client::new(&ea, &t.secret_id, &t.secret_key, "ap-guangzhou");
    let cb = Client::new(&eb, &t.secret_id, &t.secret_key, "ap-guangzhou");
    let mut tasks = Vec::new();
    for i in 0..24 {
        let c = if i % 2 == 0 { ca.clone() } else { cb.clone() };
        tasks.push(tokio::spawn(async move {
            c.cvm(
                "RunInstances",
                json!({"Placement": {"Zone": "ap-guangzhou-3"}, "ImageId": "img-gc0ubt22", "InstanceType": "GT5.6XLARGE240"}),
            )
            .await
        }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => won += 1,
            Err(e) => assert_eq!(
                e.code(),
                Some("ResourceInsufficient.SpecifiedInstanceType"),
                "{e}"
            ),
        }
    }
    assert_eq!(won, 8);
    let claims = a.store.gpu_claims().await.unwrap();
    assert_eq!(claims.len(), 8);
    assert_eq!(claims.iter().map(|c| &c.0).collect::<HashSet<_>>().len(), 8);
    assert_eq!(
        claims.iter().map(|c| &c.1).collect::<HashSet<_>>().len(),
        8,
        "one GPU per instance"
    );
    let h = a.store.host_get(&host.host_id()).await.unwrap().unwrap();
    assert_eq!(h.cpu_used, 8 * 24, "CPU counters match the 8 winners");
    drop_database(&[a, b], &admin, &name).await;
}

/// A server with a 3 s grace period (no HTTP front: tests call its gateway).
async fn app(url: &str) -> Arc<App> {
    let store = Store::connect(url, SecretBox::from_key(&[9u8; 32]))
        .await
        .unwrap();
    let mut cfg = Config::for_region("ap-guangzhou");
    cfg.host_grace = Duration::from_secs(3);
    App::new(store, cfg).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_reporting_to_one_server_is_live_for_the_other() {
    // Several servers share PostgreSQL (SQLite has one server).
    let Some((url, admin, name)) = pg_database().await else {
        return;
    };
    let a = app(&url).await;
    let host = SimHost::expand(
        &gpucloud_core::simspec::parse("1*H100x8", "ap-guangzhou", "ap-guangzhou-3").unwrap(),
    )
    .remove(0);
    let host_id = host.host_id();
    let rt: Arc<dyn Runtime> = Arc::new(SimRuntime::new(Duration::ZERO, Duration::ZERO));
    let link: Arc<dyn ControlPlane> = a.gateway.clone();
    let agent = Agent::new(
        link,
        Arc::new(host),
        vec![rt],
        AgentOptions {
            poll_wait: Duration::from_secs(1),
            heartbeat: Duration::from_millis(200),
            report_delay: Duration::from_millis(2),
            retry: Duration::from_millis(100),
            inventory_every: None,
            power_check: None,
            command_journal: None,
        },
    );
    let (stop, rx) = watch::channel(false);
    let agent = tokio::spawn(agent.run(rx));

    // Server B has never heard from the host itself, and started well over
    // a grace period ago.
    let b = app(&url).await;
    let b_started = Instant::now() - Duration::from_secs(60);
    let deadline = Instant::now() + Duration::from_secs(30);
    while b.store.host_get(&host_id).await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "the host never registered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Longer than the grace period: B keeps it READY throughout.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        gpucloud_server::reconcile::liveness_pass(&b, b_started)
            .await
            .unwrap();
        let h = b.store.host_get(&host_id).await.unwrap().unwrap();
        assert_eq!(h.state, state::READY, "{}", h.state_reason);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The agent stops: B finds the host unreachable within the grace period
    // (plus the write interval).
    stop.send(true).unwrap();
    agent.await.unwrap().unwrap();
    let stopped = Instant::now();
    loop {
        gpucloud_server::reconcile::liveness_pass(&b, b_started)
            .await
            .unwrap();
        let h = b.store.host_get(&host_id).await.unwrap().unwrap();
        if h.state == state::UNREACHABLE {
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(15),
            "B never found the silent host unreachable"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop_database(&[a, b], &admin, &name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_on_one_server_wakes_the_agent_polling_another() {
    use gpucloud_store::hosts::AdminState;
    let Some((url, admin, name)) = pg_database().await else {
        return;
    };
    let a = app(&url).await;
    let b = app(&url).await;
    let (stop, rx) = watch::channel(false);
    gpucloud_server::reconcile::spawn(a.clone(), rx);
    let host = SimHost::expand(
        &gpucloud_core::simspec::parse("1*H100x8", "ap-guangzhou", "ap-guangzhou-3").unwrap(),
    )
    .remove(0);
    let host_id = host.host_id();
    let link: Arc<dyn ControlPlane> = a.gateway.clone();
    use gpucloud_agent::inventory::Inventory;
    link.register(&host.collect()).await.unwrap();
    let now = link.desired(&host_id, 0, Duration::ZERO).await.unwrap();

    // The agent long-polls server A (30 s); server B changes the host.
    let poll = {
        let (link, host_id) = (link.clone(), host_id.clone());
        tokio::spawn(async move {
            let t = Instant::now();
            let d = link
                .desired(&host_id, now.generation, Duration::from_secs(30))
                .await
                .unwrap();
            (d.generation, t.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.store
        .host_set_admin(&host_id, AdminState::Cordoned)
        .await
        .unwrap();
    b.gateway.poke(&host_id);
    let (generation, waited) = poll.await.unwrap();
    assert!(generation > now.generation);
    assert!(
        waited < Duration::from_secs(10),
        "woken by the other server's NOTIFY, not the poll timeout: {waited:?}"
    );

    stop.send(true).unwrap();
    drop_database(&[a, b], &admin, &name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_changes_goes_out_in_few_notifications() {
    use gpucloud_store::wakeups::Wakeup;
    let Some((url, admin, name)) = pg_database().await else {
        return;
    };
    let a = app(&url).await;
    let mut listener = a.store.listen().await.unwrap().expect("PostgreSQL listens");
    let hosts: Vec<String> = (0..1500).map(|i| format!("host-{i:08}")).collect();
    a.store.notify_hosts("server-b", &hosts).await.unwrap();
    let mut heard = Vec::new();
    let mut notifications = 0;
    while heard.len() < hosts.len() {
        match tokio::time::timeout(Duration::from_secs(10), listener.next())
            .await
            .expect("every host is announced")
            .unwrap()
        {
            Wakeup::Hosts { origin, host_ids } => {
                assert_eq!(origin, "server-b");
                heard.extend(host_ids);
                notifications += 1;
            }
            Wakeup::Consoles { .. } => panic!("no console was relayed"),
            Wakeup::Lost => panic!("the connection dropped"),
        }
    }
    assert_eq!(heard, hosts);
    assert!(
        (2..=5).contains(&notifications),
        "{notifications} notifications for 1500 hosts (payloads up to ~7 KB)"
    );
    drop_database(&[a], &admin, &name).await;
}
