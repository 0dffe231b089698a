//! The gpucloud control plane.
//!
//! * [`api`] — the Tencent Cloud API 3.0 front (TC3 and v1 auth, decoding,
//!   dispatch) and the CVM actions;
//! * [`app`] — the application services the actions use (placement with
//!   transactional claims, lifecycle operations, API views);
//! * [`sched`] — the scheduler service around the pure planner;
//! * [`gateway`] — the server side of the agent protocol;
//! * [`console`] — serial consoles of VMs over WebSocket, relayed by agents;
//! * [`reconcile`] — background loops that read the world and repair it.
//!
//! The server runs no host-side effects: hosts change only through agents.

pub mod agent_http;
pub mod api;
pub mod app;
pub mod console;
pub mod gateway;
pub mod metrics;
pub mod pki;
pub mod reconcile;
pub mod sched;

use gateway::Gateway;
use gpucloud_store::Store;
use sched::Scheduler;
use std::sync::Arc;
use std::time::Duration;

/// Settings of a control plane.
#[derive(Debug, Clone)]
pub struct Config {
    /// The region this cloud serves (`ap-guangzhou`).
    pub region: String,
    /// The zone used when nothing else says (`ap-guangzhou-3`).
    pub default_zone: String,
    /// After how long without hearing from an agent its host is unreachable.
    pub host_grace: Duration,
    /// How often the scheduler looks for hosts whose database generation
    /// moved (claims by other servers, operator changes) and reloads them.
    pub resync_every: Duration,
}

impl Config {
    /// Defaults for a region.
    pub fn for_region(region: &str) -> Self {
        Self {
            region: region.to_string(),
            default_zone: format!("{region}-3"),
            host_grace: Duration::from_secs(90),
            // One cheap `SELECT host_id, generation` per pass: operator
            // changes (uncordon) and other servers' claims show within it.
            resync_every: Duration::from_secs(3),
        }
    }
}

/// Failure to start the control plane.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store failed.
    #[error("database")]
    Store(#[from] gpucloud_store::StoreError),
}

/// The control plane's shared state.
pub struct App {
    /// Persistence.
    pub store: Store,
    /// Placement.
    pub sched: Arc<Scheduler>,
    /// Agents.
    pub gateway: Arc<Gateway>,
    /// Settings.
    pub cfg: Config,
    /// Request metrics.
    pub metrics: metrics::Metrics,
    /// Recently used API keys (unsealed), so a request costs no key lookup.
    pub keys: KeyCache,
}

/// API keys seen in the last [`KeyCache::TTL`]. Unknown keys are never
/// cached, so a key created by `admin tenant create` works at once; a disabled
/// key stops working within the TTL.
#[derive(Default)]
pub struct KeyCache {
    map: std::sync::Mutex<
        std::collections::HashMap<String, (gpucloud_store::tenants::KeyRecord, std::time::Instant)>,
    >,
}

impl KeyCache {
    /// How long a key is trusted without looking at the database.
    pub const TTL: Duration = Duration::from_secs(15);

    /// Looks a SecretId up, from the cache or the store.
    pub async fn lookup(
        &self,
        store: &Store,
        secret_id: &str,
    ) -> gpucloud_store::Result<Option<gpucloud_store::tenants::KeyRecord>> {
        if let Some((rec, at)) = self
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(secret_id)
        {
            if at.elapsed() < Self::TTL {
                return Ok(Some(rec.clone()));
            }
        }
        let rec = store.api_key_lookup(secret_id).await?;
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        match &rec {
            Some(r) => {
                if map.len() > 100_000 {
                    map.clear();
                }
                map.insert(
                    secret_id.to_string(),
                    (r.clone(), std::time::Instant::now()),
                );
            }
            None => {
                map.remove(secret_id);
            }
        }
        Ok(rec)
    }
}

impl App {
    /// Builds the control plane over an open store: seeds the built-in images
    /// and loads the scheduler's index.
    pub async fn new(store: Store, cfg: Config) -> Result<Arc<Self>, StartError> {
        app::images::seed_builtin(&store).await?;
        let sched = Arc::new(Scheduler::new());
        sched.resync(&store.capacity_snapshot().await?);
        // Often enough that every server sees a live host within its grace
        // period (reports come at least every heartbeat, 15 s by default).
        // SQLite has one server, which needs only its own memory.
        let liveness_write = match store.backend() {
            gpucloud_store::Backend::Sqlite => std::time::Duration::MAX,
            gpucloud_store::Backend::Postgres => {
                (cfg.host_grace / 3).min(std::time::Duration::from_secs(20))
            }
        };
        let gateway = Arc::new(Gateway::new(store.clone(), sched.clone(), liveness_write));
        Ok(Arc::new(Self {
            store,
            sched,
            gateway,
            cfg,
            metrics: metrics::Metrics::default(),
            keys: KeyCache::default(),
        }))
    }

    /// The HTTP router.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        api::router(self.clone())
    }
}
