//! The agent gateway: the server side of the agent protocol.
//!
//! Agents register their inventory, long-poll for desired state and report
//! what they observe. The gateway turns registrations into host rows (and
//! refreshes the scheduler), builds desired state from the store, and settles
//! reports into instance states (returning released capacity to the
//! scheduler). Writers call [`Gateway::poke`] after a change so a waiting
//! agent wakes at once; without a poke it still learns on its next poll.
//!
//! The same [`ControlPlane`] implementation serves in-process agents (`up`)
//! and, behind the HTTP endpoints, remote agents.

use crate::sched::Scheduler;
use gpucloud_agent_api::{
    AssignedGpu, CommandSpec, ConsoleDown, ConsoleUp, ControlPlane, DesiredPower, DesiredState,
    HostInventory, ImageRef, InstanceSpec, LinkError, NicSpec, ObservedPower, ObservedState,
};
use gpucloud_core::lifecycle::{self, Observed};
use gpucloud_store::commands::TaskOutcome;
use gpucloud_store::hosts::{GpuUpsert, HostUpsert};
use gpucloud_store::instances::ObservedInstance;
use gpucloud_store::{Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The gateway.
pub struct Gateway {
    store: Store,
    sched: Arc<Scheduler>,
    wakers: Mutex<HashMap<String, Arc<Notify>>>,
    seen: Mutex<HashMap<String, Instant>>,
    /// The last report settled per host: an identical heartbeat report
    /// cannot settle anything, so it only shows liveness — in this server's
    /// memory, and in the database (`hosts.last_seen`, for the other
    /// servers) on the first report after each `liveness_write`. It is
    /// settled in full again after `RESETTLE_EVERY` intervals, since another
    /// server may have settled a different report of the host meanwhile.
    last_report: Mutex<HashMap<String, LastReport>>,
    liveness_write: Duration,
    /// This server, in the wake-ups it sends other servers
    /// ([`gpucloud_store::wakeups`]).
    pub server_id: String,
    /// Hosts to tell the other servers about, gathered by one task that
    /// sends them in batches (PostgreSQL only).
    notify: Option<tokio::sync::mpsc::UnboundedSender<String>>,
    /// Serial-console sessions (listed in their hosts' desired state,
    /// relayed through [`ControlPlane::console`]; through the database when
    /// servers share PostgreSQL).
    pub consoles: crate::console::ConsoleHub,
}

/// The task that tells the other servers what changed (host IDs on
/// `channel`, or console words): it takes what has gathered since its last
/// send and sends it at once, so a burst of pokes costs a few notifications,
/// not a connection each. Ends with the gateway.
fn notifier(
    store: Store,
    origin: String,
    channel: &'static str,
) -> tokio::sync::mpsc::UnboundedSender<String> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut words = std::collections::BTreeSet::from([first]);
            while let Ok(h) = rx.try_recv() {
                words.insert(h);
            }
            let words: Vec<String> = words.into_iter().collect();
            if let Err(e) = store.notify(channel, &origin, &words).await {
                // Their agents (or console relays) still look on their own.
                tracing::warn!(channel, words = words.len(), error = ?e, "could not tell the other servers about a change");
            }
        }
    });
    tx
}

/// What the gateway remembers of a host's last report.
struct LastReport {
    digest: [u8; 32],
    touched: Instant,
    settled: Instant,
}

/// Unchanged reports are settled in full again after this many liveness
/// intervals (PostgreSQL; on SQLite the interval is unbounded).
const RESETTLE_EVERY: u32 = 5;

fn store_err(e: StoreError) -> LinkError {
    match e {
        StoreError::NotFound(what) => LinkError::Refused(format!("{what} is not registered")),
        other => {
            tracing::error!(error = ?other, "agent gateway store failure");
            LinkError::Unreachable("the control plane's database failed; retry".into())
        }
    }
}

impl Gateway {
    /// A gateway over a store and scheduler. A host's liveness reaches the
    /// database with its first report after each `liveness_write`.
    pub fn new(store: Store, sched: Arc<Scheduler>, liveness_write: Duration) -> Self {
        let server_id = uuid::Uuid::new_v4().simple().to_string();
        use gpucloud_store::wakeups::{CHANNEL, CONSOLE_CHANNEL};
        let shared = store.backend() == gpucloud_store::Backend::Postgres;
        let notify = shared.then(|| notifier(store.clone(), server_id.clone(), CHANNEL));
        let consoles = if shared {
            crate::console::ConsoleHub::shared(
                store.clone(),
                notifier(store.clone(), server_id.clone(), CONSOLE_CHANNEL),
            )
        } else {
            crate::console::ConsoleHub::default()
        };
        Self {
            notify,
            store,
            sched,
            liveness_write,
            server_id,
            wakers: Mutex::new(HashMap::new()),
            seen: Mutex::new(HashMap::new()),
            last_report: Mutex::new(HashMap::new()),
            consoles,
        }
    }

    fn waker(&self, host_id: &str) -> Arc<Notify> {
        self.wakers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(host_id.to_string())
            .or_default()
            .clone()
    }

    /// Wakes the agent of a host whose desired state changed, on this
    /// server and (PostgreSQL) on the others, where its agent may be
    /// polling.
    pub fn poke(&self, host_id: &str) {
        self.poke_local(host_id);
        if let Some(tx) = &self.notify {
            let _ = tx.send(host_id.to_string());
        }
    }

    /// Wakes the long polls of one host on this server only.
    pub fn poke_local(&self, host_id: &str) {
        self.waker(host_id).notify_waiters();
    }

    /// Wakes every long poll on this server (a wake-up may have been missed).
    pub fn poke_all(&self) {
        for w in self
            .wakers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            w.notify_waiters();
        }
    }

    fn touch(&self, host_id: &str) {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(host_id.to_string(), Instant::now());
    }

    /// When each host last talked to this server.
    pub fn last_seen(&self) -> HashMap<String, Instant> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn refresh(&self, host_id: &str) {
        if let Err(e) = self.sched.refresh_from(&self.store, host_id).await {
            tracing::warn!(host = host_id, error = ?e, "could not refresh host capacity");
        }
    }
}

fn to_spec(d: gpucloud_store::instances::DesiredInstance) -> InstanceSpec {
    InstanceSpec {
        power: match d.power {
            lifecycle::DesiredPower::Running => DesiredPower::Running,
            lifecycle::DesiredPower::Stopped => DesiredPower::Stopped,
            lifecycle::DesiredPower::Absent => DesiredPower::Absent,
        },
        spec_generation: d.spec_generation,
        reboot_seq: d.reboot_seq,
        system_disk_seq: d.reset_seq,
        stop_type: d.stop_type,
        name: d.name,
        hostname: d.host_name,
        instance_type: d.instance_type,
        cpu: d.cpu.max(0) as u32,
        memory_mib: (d.memory_gib.max(0) as u64) * 1024,
        gpus: d
            .gpus
            .into_iter()
            .map(|(index, uuid, pci_address)| AssignedGpu {
                index: index as u32,
                uuid,
                pci_address,
            })
            .collect(),
        image: ImageRef {
            image_id: d.image_id,
            runtime: d.runtime,
            location: d.image_location,
        },
        user_data: d.user_data,
        password: d.password,
        ssh_keys: d.public_keys,
        nic: match (d.private_ip, d.subnet_cidr) {
            (Some(ip), Some(cidr)) => Some(NicSpec {
                ip,
                cidr,
                vpc_id: d.vpc_id.unwrap_or_default(),
            }),
            _ => None,
        },
        system_disk_gib: d
            .system_disk
            .get("DiskSize")
            .and_then(|v| v.as_i64())
            .filter(|g| *g > 0)
            .map(|g| g as u64),
        data_disks_gib: d
            .data_disks
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.get("DiskSize").and_then(|v| v.as_i64()))
                    .filter(|g| *g > 0)
                    .map(|g| g as u64)
                    .collect()
            })
            .unwrap_or_default(),
        app_id: d.app_id,
        instance_id: d.instance_id,
    }
}

#[async_trait::async_trait]
impl ControlPlane for Gateway {
    async fn register(&self, inv: &HostInventory) -> Result<(), LinkError> {
        let model = inv
            .gpus
            .iter()
            .find(|g| g.model != "unknown")
            .map(|g| g.model.clone());
        let host = HostUpsert {
            host_id: inv.host_id.clone(),
            name: inv.hostname.clone(),
            zone: inv.zone.clone(),
            kind: match inv.kind {
                gpucloud_agent_api::HostKind::Sim => "sim".into(),
                gpucloud_agent_api::HostKind::Real => "real".into(),
            },
            gpu_model: model,
            cpu_total: i64::from(inv.cpu_total),
            mem_total_mib: inv.mem_total_mib as i64,
            runtimes: inv
                .runtimes
                .iter()
                .map(|r| r.as_str().to_string())
                .chain(
                    (inv.gpu_passthrough
                        && !inv.gpus.is_empty()
                        && inv
                            .runtimes
                            .contains(&gpucloud_agent_api::RuntimeKind::Qemu))
                    .then(|| "qemu-gpu".to_string()),
                )
                .collect(),
            rack: inv.rack.clone(),
            switch: inv.switch.clone(),
            inventory: serde_json::to_value(inv).unwrap_or_default(),
        };
        let gpus: Vec<GpuUpsert> = inv
            .gpus
            .iter()
            .map(|g| GpuUpsert {
                gpu_id: g.uuid.clone(),
                idx: i64::from(g.index),
                model: g.model.clone(),
                pci_address: g.pci_address.clone(),
                numa_node: i64::from(g.numa_node),
                nvlink_domain: g.nvlink_domain.map(i64::from),
                memory_mib: g.memory_mib as i64,
                healthy: g.healthy,
                health_reason: g.health_reason.clone(),
            })
            .collect();
        self.store
            .host_register(&host, &gpus)
            .await
            .map_err(store_err)?;
        self.touch(&inv.host_id);
        self.refresh(&inv.host_id).await;
        tracing::debug!(host = %inv.host_id, zone = %inv.zone, gpus = inv.gpus.len(), "host registered");
        Ok(())
    }

    async fn desired(
        &self,
        host_id: &str,
        after: i64,
        wait: Duration,
    ) -> Result<DesiredState, LinkError> {
        self.touch(host_id);
        let deadline = tokio::time::Instant::now() + wait;
        let waker = self.waker(host_id);
        loop {
            let notified = waker.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Boxed: the query's large future lives only while it runs, so the
            // thousands of agents parked in this long poll cost little memory.
            let (generation, instances) = Box::pin(self.store.host_desired(host_id))
                .await
                .map_err(store_err)?;
            if generation > after || tokio::time::Instant::now() >= deadline {
                let tasks = Box::pin(self.store.host_tasks(host_id))
                    .await
                    .map_err(store_err)?;
                return Ok(DesiredState {
                    host_id: host_id.to_string(),
                    generation,
                    instances: instances.into_iter().map(to_spec).collect(),
                    commands: tasks
                        .into_iter()
                        .map(|t| CommandSpec {
                            task_id: t.task_id,
                            instance_id: t.instance_id,
                            content: t.command.content,
                            command_type: t.command.command_type,
                            working_directory: t.command.working_directory,
                            timeout_s: t.command.timeout_s.max(1) as u64,
                            username: t.command.username,
                            status: t.status,
                        })
                        .collect(),
                    consoles: self.consoles.for_host(host_id).await.map_err(store_err)?,
                });
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }

    async fn console(
        &self,
        host_id: &str,
        session_id: &str,
        up: ConsoleUp,
    ) -> Result<ConsoleDown, LinkError> {
        self.touch(host_id);
        self.consoles
            .exchange(host_id, session_id, up)
            .await
            .map_err(store_err)
    }

    async fn report(&self, observed: &ObservedState) -> Result<(), LinkError> {
        self.touch(&observed.host_id);
        let digest: [u8; 32] = {
            use sha2::{Digest, Sha256};
            Sha256::digest(serde_json::to_vec(observed).unwrap_or_default()).into()
        };
        let same = self
            .last_report
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&observed.host_id)
            .filter(|r| r.digest == digest)
            .map(|r| (r.touched.elapsed(), r.settled.elapsed()));
        match same {
            Some((touched, _)) if touched < self.liveness_write => return Ok(()),
            // Settled long ago: settle again (below).
            Some((_, settled)) if settled >= self.liveness_write.saturating_mul(RESETTLE_EVERY) => {
            }
            // Unchanged, but the other servers should hear it is alive.
            Some(_) => match self.store.host_touch(&observed.host_id).await {
                Ok(true) => {
                    if let Some(e) = self
                        .last_report
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_mut(&observed.host_id)
                    {
                        e.touched = Instant::now();
                    }
                    return Ok(());
                }
                Ok(false) => {} // not READY: the full report flips it back
                Err(e) => return Err(store_err(e)),
            },
            None => {}
        }
        let obs: Vec<ObservedInstance> = observed
            .instances
            .iter()
            .map(|i| ObservedInstance {
                instance_id: i.instance_id.clone(),
                spec_generation: i.spec_generation,
                observed: match i.power {
                    ObservedPower::Running => Observed::Running,
                    ObservedPower::Stopped => Observed::Stopped,
                    ObservedPower::Absent => Observed::Absent,
                    ObservedPower::Failed => Observed::Failed,
                },
                reboot_seq: i.reboot_seq,
                error: i.message.clone(),
            })
            .collect();
        let tasks: Vec<TaskOutcome> = observed
            .commands
            .iter()
            .map(|c| TaskOutcome {
                task_id: c.task_id.clone(),
                status: c.status.clone(),
                exit_code: c.exit_code,
                output: c.output.clone(),
                dropped: c.dropped as i64,
                started_ms: c.started_ms,
                ended_ms: c.ended_ms,
                error: c.error.clone(),
            })
            .collect();
        let outcome =
            Box::pin(
                self.store
                    .host_report(&observed.host_id, observed.generation, &obs, &tasks),
            )
            .await
            .map_err(store_err)?;
        for r in &outcome.released {
            let gpus: Vec<u32> = r.gpu_indexes.iter().map(|g| *g as u32).collect();
            self.sched.release(
                &r.host_id,
                &gpus,
                r.cpu.max(0) as u32,
                r.mem_mib.max(0) as u64,
            );
        }
        for (id, from, to) in &outcome.transitions {
            tracing::info!(instance = %id, from = from.as_str(), to = to.as_str(), host = %observed.host_id, "instance state");
        }
        // Releasing a claim raised the host's generation (the instance left its
        // desired state): let its agent see that at once. Settling a state
        // changes nothing the host has to do, so it wakes nobody.
        if !outcome.released.is_empty() {
            self.poke(&observed.host_id);
        }
        self.last_report
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                observed.host_id.clone(),
                LastReport {
                    digest,
                    touched: Instant::now(),
                    settled: Instant::now(),
                },
            );
        Ok(())
    }
}
