//! Two control-plane servers on one PostgreSQL database: a host that reports
//! to one of them is live for both (liveness goes through `hosts.last_seen`,
//! not only the memory of the server it talks to), and silent for both once
//! it stops; a change served by one wakes an agent polling the other.

use gpucloud_agent::runtime::Runtime;
use gpucloud_agent::sim::{SimHost, SimRuntime};
use gpucloud_agent::{Agent, AgentOptions};
use gpucloud_agent_api::ControlPlane;
use gpucloud_server::{App, Config};
use gpucloud_store::hosts::state;
use gpucloud_store::{SecretBox, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

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

async fn drop_database(apps: &[Arc<App>], admin: &str, name: &str) {
    use sqlx::Connection;
    for a in apps {
        a.store.close().await;
    }
    if let Ok(mut c) = sqlx::AnyConnection::connect(admin).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut c)
            .await;
    }
}

/// A fresh PostgreSQL database (dropped at the end of the test).
async fn pg_database() -> Option<(String, String, String)> {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let admin = std::env::var("GPUCLOUD_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let mut conn = match sqlx::AnyConnection::connect(&admin).await {
        Ok(c) => c,
        Err(e) => {
            if std::env::var("GPUCLOUD_SKIP_PG").as_deref() == Ok("1") {
                eprintln!("skipping: PostgreSQL unreachable at {admin}: {e}");
                return None;
            }
            panic!("PostgreSQL is not reachable at {admin} ({e}); start it (scripts/test.sh does) or set GPUCLOUD_SKIP_PG=1");
        }
    };
    let name = format!("gct_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let base = admin.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap();
    Some((format!("{base}/{name}"), admin, name))
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
    let mut listener = a
        .store
        .listen_hosts()
        .await
        .unwrap()
        .expect("PostgreSQL listens");
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
