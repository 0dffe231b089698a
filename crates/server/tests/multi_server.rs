//! Several stateless servers on one PostgreSQL database race for the same
//! GPUs. Each has its own scheduler index (so each believes all GPUs are
//! free); the database's unique constraint on GPU claims lets exactly as many
//! launches win as there are GPUs, and the losers re-plan or are refused.

use gpucloud_agent::inventory::Inventory;
use gpucloud_agent::sim::SimHost;
use gpucloud_agent_api::ControlPlane;
use gpucloud_client::Client;
use gpucloud_server::{App, Config};
use gpucloud_store::{SecretBox, Store};
use serde_json::json;
use sqlx::Connection;
use std::collections::HashSet;
use std::sync::Arc;

async fn pg_database() -> Option<(String, String, String)> {
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
    let base = admin.rsplit_once('/').unwrap().0.to_string();
    Some((format!("{base}/{name}"), admin, name))
}

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
    a.store.close().await;
    b.store.close().await;
    if let Ok(mut c) = sqlx::AnyConnection::connect(&admin).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut c)
            .await;
    }
}
