//! Test databases: a fresh SQLite file or a fresh PostgreSQL database per test.
//!
//! PostgreSQL comes from `GPUCLOUD_TEST_PG` (default
//! `postgres://postgres@127.0.0.1:5432/test`). Each test creates its own
//! database `gct_<random>` and drops it afterwards. If the server is not
//! reachable the test fails, unless `GPUCLOUD_SKIP_PG=1` says to skip.

#![allow(dead_code)]

use gpucloud_store::hosts::{GpuUpsert, HostUpsert};
use gpucloud_store::{SecretBox, Store, TenantScope};
use sqlx::Connection;

pub struct TestDb {
    pub store: Store,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.pg.take() {
            let store = self.store.clone();
            // Drop the database from a thread with its own runtime: Drop cannot await.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    store.close().await;
                    drop_pg_database(&admin, &name).await;
                });
            })
            .join();
        }
    }
}

pub fn pg_admin_url() -> String {
    std::env::var("GPUCLOUD_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub async fn sqlite() -> TestDb {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let store = Store::connect(&url, SecretBox::from_key(&[1u8; 32]))
        .await
        .unwrap();
    TestDb {
        store,
        _dir: Some(dir),
        pg: None,
    }
}

/// A fresh PostgreSQL database: `(url, admin url, name)`, or `None` (skip)
/// when PostgreSQL is unreachable and `GPUCLOUD_SKIP_PG=1`.
pub async fn pg_database() -> Option<(String, String, String)> {
    sqlx::any::install_default_drivers();
    let admin = pg_admin_url();
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
    let _ = conn.close().await;
    let base = admin.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap();
    Some((format!("{base}/{name}"), admin, name))
}

/// Drops a database made by [`pg_database`] (its pools closed first).
pub async fn drop_pg_database(admin: &str, name: &str) {
    if let Ok(mut c) = sqlx::AnyConnection::connect(admin).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut c)
            .await;
    }
}

pub async fn postgres() -> Option<TestDb> {
    let (url, admin, name) = pg_database().await?;
    let store = Store::connect(&url, SecretBox::from_key(&[1u8; 32]))
        .await
        .unwrap();
    Some(TestDb {
        store,
        _dir: None,
        pg: Some((admin, name)),
    })
}

/// Runs the body against SQLite and PostgreSQL as two tests.
#[macro_export]
macro_rules! both {
    ($name:ident, |$db:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                let $db = $crate::common::sqlite().await;
                $body
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                let Some($db) = $crate::common::postgres().await else {
                    return;
                };
                $body
            }
        }
    };
}

pub async fn tenant(store: &Store, name: &str) -> TenantScope {
    let c = store.tenant_create(name, 1000).await.unwrap();
    TenantScope::new(c.app_id)
}

pub fn host(id: &str, zone: &str, gpus: i64) -> (HostUpsert, Vec<GpuUpsert>) {
    (
        HostUpsert {
            host_id: id.into(),
            name: id.into(),
            zone: zone.into(),
            kind: "sim".into(),
            gpu_model: (gpus > 0).then(|| "H100".to_string()),
            cpu_total: 192,
            mem_total_mib: 1920 * 1024,
            runtimes: vec!["sim".into()],
            rack: format!("rack-{id}"),
            switch: "sw-0".into(),
            inventory: serde_json::json!({"test": true}),
        },
        (0..gpus)
            .map(|i| GpuUpsert {
                gpu_id: format!("GPU-{id}-{i}"),
                idx: i,
                model: "H100".into(),
                pci_address: format!("0000:{:02x}:00.0", 0x18 + i),
                numa_node: i / 4,
                nvlink_domain: Some(0),
                memory_mib: 81559,
                healthy: true,
                health_reason: String::new(),
            })
            .collect(),
    )
}

pub async fn add_host(store: &Store, id: &str, gpus: i64) {
    let (h, g) = host(id, "ap-guangzhou-3", gpus);
    store.host_register(&h, &g).await.unwrap();
}
