//! Hosts and their GPUs. Hosts are written by the agent gateway (from agent
//! inventory reports) and by operator commands; no tenant scope here.

use crate::db::{col, placeholders};
use crate::{now_ms, Result, Store, StoreError};
use sqlx::any::AnyRow;
use std::collections::HashMap;

/// Host states: what the control plane knows of the host's agent.
pub mod state {
    /// Reporting.
    pub const READY: &str = "READY";
    /// The agent has not reported within the grace period.
    pub const UNREACHABLE: &str = "UNREACHABLE";
    /// Known but not running (e.g. a simulated host absent from the current spec).
    pub const OFFLINE: &str = "OFFLINE";
}

/// Operator states, kept apart from [`state`] so that a host that goes
/// unreachable and comes back is still cordoned.
pub mod admin {
    /// Takes new instances.
    pub const ACTIVE: &str = "ACTIVE";
    /// Takes no new instances; existing ones keep running.
    pub const CORDONED: &str = "CORDONED";
    /// Cordoned, and its instances are to leave it: the operator removes the
    /// host once none is left.
    pub const DRAINING: &str = "DRAINING";
}

/// An operator state to set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminState {
    /// [`admin::ACTIVE`].
    Active,
    /// [`admin::CORDONED`].
    Cordoned,
    /// [`admin::DRAINING`].
    Draining,
}

impl AdminState {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => admin::ACTIVE,
            Self::Cordoned => admin::CORDONED,
            Self::Draining => admin::DRAINING,
        }
    }
}

/// GPU health values.
pub mod health {
    /// Schedulable.
    pub const HEALTHY: &str = "HEALTHY";
    /// Fenced off.
    pub const UNHEALTHY: &str = "UNHEALTHY";
}

/// A host as an agent reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct HostUpsert {
    /// `host-…`.
    pub host_id: String,
    /// Name (hostname).
    pub name: String,
    /// Zone.
    pub zone: String,
    /// `sim` or `real`.
    pub kind: String,
    /// GPU model key, `None` without GPUs.
    pub gpu_model: Option<String>,
    /// vCPUs offered to instances.
    pub cpu_total: i64,
    /// Memory offered to instances, MiB.
    pub mem_total_mib: i64,
    /// Runtimes (`sim`, `container`, `qemu`).
    pub runtimes: Vec<String>,
    /// Rack.
    pub rack: String,
    /// Switch.
    pub switch: String,
    /// Full inventory document (JSON) for operators.
    pub inventory: serde_json::Value,
}

/// A GPU as an agent reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuUpsert {
    /// `GPU-<uuid>`.
    pub gpu_id: String,
    /// Position on the host.
    pub idx: i64,
    /// Model key (`H100`).
    pub model: String,
    /// PCI address.
    pub pci_address: String,
    /// NUMA node.
    pub numa_node: i64,
    /// NVLink domain.
    pub nvlink_domain: Option<i64>,
    /// Memory, MiB.
    pub memory_mib: i64,
    /// Healthy?
    pub healthy: bool,
    /// Why not healthy.
    pub health_reason: String,
}

/// A stored host.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Host {
    /// `host-…`.
    pub host_id: String,
    /// Name.
    pub name: String,
    /// Zone.
    pub zone: String,
    /// `sim` or `real`.
    pub kind: String,
    /// GPU model key.
    pub gpu_model: Option<String>,
    /// vCPUs.
    pub cpu_total: i64,
    /// Memory, MiB.
    pub mem_total_mib: i64,
    /// vCPUs claimed.
    pub cpu_used: i64,
    /// Memory claimed.
    pub mem_used_mib: i64,
    /// Runtimes.
    pub runtimes: Vec<String>,
    /// Rack.
    pub rack: String,
    /// Switch.
    pub switch: String,
    /// Agent state ([`state`]).
    pub state: String,
    /// Why.
    pub state_reason: String,
    /// Operator state ([`admin`]).
    pub admin_state: String,
    /// Desired-state generation.
    pub generation: i64,
    /// Generation the agent last reported converging to.
    pub observed_generation: i64,
    /// Inventory document.
    pub inventory: serde_json::Value,
    /// Last report (ms).
    pub last_seen: i64,
}

/// A stored GPU.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Gpu {
    /// `GPU-<uuid>`.
    pub gpu_id: String,
    /// Host.
    pub host_id: String,
    /// Position.
    pub idx: i64,
    /// Model key.
    pub model: String,
    /// PCI address.
    pub pci_address: String,
    /// NUMA node.
    pub numa_node: i64,
    /// NVLink domain.
    pub nvlink_domain: Option<i64>,
    /// Memory, MiB.
    pub memory_mib: i64,
    /// `HEALTHY` / `UNHEALTHY`.
    pub health: String,
    /// Why.
    pub health_reason: String,
    /// Instance holding it.
    pub claimed_by: Option<String>,
    /// Whether the claim is being released.
    pub claim_released: bool,
}

fn host_from_row(r: &AnyRow) -> Result<Host> {
    let runtimes: String = col(r, "runtimes")?;
    let inventory: String = col(r, "inventory")?;
    Ok(Host {
        host_id: col(r, "host_id")?,
        name: col(r, "name")?,
        zone: col(r, "zone")?,
        kind: col(r, "kind")?,
        gpu_model: col(r, "gpu_model")?,
        cpu_total: col(r, "cpu_total")?,
        mem_total_mib: col(r, "mem_total_mib")?,
        cpu_used: col(r, "cpu_used")?,
        mem_used_mib: col(r, "mem_used_mib")?,
        runtimes: runtimes
            .split(',')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        rack: col(r, "rack")?,
        switch: col(r, "switch_name")?,
        state: col(r, "state")?,
        state_reason: col(r, "state_reason")?,
        admin_state: col(r, "admin_state")?,
        generation: col(r, "generation")?,
        observed_generation: col(r, "observed_generation")?,
        inventory: serde_json::from_str(&inventory).unwrap_or(serde_json::Value::Null),
        last_seen: col(r, "last_seen")?,
    })
}

fn gpu_from_row(r: &AnyRow) -> Result<Gpu> {
    let released: Option<i64> = col(r, "claim_released")?;
    Ok(Gpu {
        gpu_id: col(r, "gpu_id")?,
        host_id: col(r, "host_id")?,
        idx: col(r, "idx")?,
        model: col(r, "model")?,
        pci_address: col(r, "pci_address")?,
        numa_node: col(r, "numa_node")?,
        nvlink_domain: col(r, "nvlink_domain")?,
        memory_mib: col(r, "memory_mib")?,
        health: col(r, "health")?,
        health_reason: col(r, "health_reason")?,
        claimed_by: col(r, "claimed_by")?,
        claim_released: released == Some(1),
    })
}

const GPU_SELECT: &str = "SELECT g.gpu_id, g.host_id, g.idx, g.model, g.pci_address, g.numa_node, g.nvlink_domain, g.memory_mib, g.health, g.health_reason, c.instance_id AS claimed_by, c.released AS claim_released FROM gpus g LEFT JOIN gpu_claims c ON c.gpu_id = g.gpu_id";

impl Store {
    /// Registers or refreshes a host from its agent's inventory. A host that
    /// was unreachable or offline becomes ready; its operator state stays.
    /// GPUs that vanished from the inventory are marked unhealthy.
    pub async fn host_register(&self, h: &HostUpsert, gpus: &[GpuUpsert]) -> Result<()> {
        let now = now_ms();
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO hosts (host_id, name, zone, kind, gpu_model, cpu_total, mem_total_mib, runtimes, rack, switch_name, state, state_reason, inventory, last_seen, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'READY', '', $11, $12, $12)
             ON CONFLICT (host_id) DO UPDATE SET name = $2, zone = $3, kind = $4, gpu_model = $5, cpu_total = $6, mem_total_mib = $7,
               runtimes = $8, rack = $9, switch_name = $10, inventory = $11, last_seen = $12, generation = hosts.generation + 1,
               state = CASE WHEN hosts.state IN ('UNREACHABLE', 'OFFLINE') THEN 'READY' ELSE hosts.state END,
               state_reason = CASE WHEN hosts.state IN ('UNREACHABLE', 'OFFLINE') THEN '' ELSE hosts.state_reason END",
        )
        .bind(&h.host_id)
        .bind(&h.name)
        .bind(&h.zone)
        .bind(&h.kind)
        .bind(h.gpu_model.clone())
        .bind(h.cpu_total)
        .bind(h.mem_total_mib)
        .bind(h.runtimes.join(","))
        .bind(&h.rack)
        .bind(&h.switch)
        .bind(h.inventory.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        for g in gpus {
            let n = sqlx::query(
                "INSERT INTO gpus (gpu_id, host_id, idx, model, pci_address, numa_node, nvlink_domain, memory_mib, health, health_reason)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT (gpu_id) DO UPDATE SET host_id = $2, idx = $3, model = $4, pci_address = $5, numa_node = $6,
                   nvlink_domain = $7, memory_mib = $8, health = $9, health_reason = $10
                 WHERE gpus.host_id = $2",
            )
            .bind(&g.gpu_id)
            .bind(&h.host_id)
            .bind(g.idx)
            .bind(&g.model)
            .bind(&g.pci_address)
            .bind(g.numa_node)
            .bind(g.nvlink_domain)
            .bind(g.memory_mib)
            .bind(if g.healthy {
                health::HEALTHY
            } else {
                health::UNHEALTHY
            })
            .bind(&g.health_reason)
            .execute(&mut *tx)
            .await
            .map_err(|e| match StoreError::from(e) {
                StoreError::Conflict(m) => StoreError::Conflict(format!(
                    "GPU index {} of host {} is reported under two UUIDs: {m}",
                    g.idx, h.host_id
                )),
                other => other,
            })?;
            if n.rows_affected() == 0 {
                // Another host has it: a host never takes a GPU over by
                // naming its UUID (it would corrupt the other host's claims).
                tracing::warn!(host = %h.host_id, gpu = %g.gpu_id, "a GPU this host reports belongs to another host; remove that host first (gpucloud admin hosts remove); ignored");
            }
        }
        // GPUs that disappeared.
        let known: Vec<String> = gpus.iter().map(|g| g.gpu_id.clone()).collect();
        let mut q = String::from(
            "UPDATE gpus SET health = 'UNHEALTHY', health_reason = 'missing from the host inventory' WHERE host_id = $1",
        );
        if !known.is_empty() {
            q.push_str(&format!(
                " AND gpu_id NOT IN ({})",
                placeholders(2, known.len())
            ));
        }
        let mut query = sqlx::query(&q).bind(&h.host_id);
        for k in &known {
            query = query.bind(k);
        }
        query.execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records that a `READY` host's agent is alive (`last_seen`), for the
    /// other servers' liveness checks. `false` when the host is not `READY`
    /// (or gone): then only a full report may change it.
    pub async fn host_touch(&self, host_id: &str) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let n =
            sqlx::query("UPDATE hosts SET last_seen = $2 WHERE host_id = $1 AND state = 'READY'")
                .bind(host_id)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?
                .rows_affected();
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Sets a host's agent state (liveness reconciler).
    pub async fn host_set_state(&self, host_id: &str, state: &str, reason: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query("UPDATE hosts SET state = $2, state_reason = $3, generation = generation + 1 WHERE host_id = $1")
            .bind(host_id)
            .bind(state)
            .bind(reason)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound(format!("host {host_id}")));
        }
        tx.commit().await?;
        Ok(())
    }

    /// The liveness reconciler's flips, each only from the state it saw:
    /// `READY` → `UNREACHABLE` only while `last_seen` is still before
    /// `silent_since` (another server may just have heard from the host),
    /// `UNREACHABLE` → `READY` only while it is still unreachable. Returns
    /// whether it changed the host.
    pub async fn host_flip_liveness(
        &self,
        host_id: &str,
        reachable: bool,
        reason: &str,
        silent_since_ms: i64,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let n = if reachable {
            sqlx::query("UPDATE hosts SET state = 'READY', state_reason = '', generation = generation + 1 WHERE host_id = $1 AND state = 'UNREACHABLE'")
                .bind(host_id)
                .execute(&mut *tx)
                .await?
        } else {
            sqlx::query("UPDATE hosts SET state = 'UNREACHABLE', state_reason = $2, generation = generation + 1 WHERE host_id = $1 AND state = 'READY' AND last_seen < $3")
                .bind(host_id)
                .bind(reason)
                .bind(silent_since_ms)
                .execute(&mut *tx)
                .await?
        }
        .rows_affected();
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Sets a host's operator state (cordon, drain, uncordon).
    pub async fn host_set_admin(&self, host_id: &str, admin_state: AdminState) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query(
            "UPDATE hosts SET admin_state = $2, generation = generation + 1 WHERE host_id = $1",
        )
        .bind(host_id)
        .bind(admin_state.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound(format!("host {host_id}")));
        }
        tx.commit().await?;
        Ok(())
    }

    /// `(host, generation)` of every host: cheap change detection.
    pub async fn host_generations(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT host_id, generation FROM hosts")
            .fetch_all(self.r())
            .await?;
        rows.iter()
            .map(|r| Ok((col(r, "host_id")?, col(r, "generation")?)))
            .collect()
    }

    /// All hosts.
    pub async fn host_list(&self) -> Result<Vec<Host>> {
        let rows = sqlx::query("SELECT * FROM hosts ORDER BY zone, host_id")
            .fetch_all(self.r())
            .await?;
        rows.iter().map(host_from_row).collect()
    }

    /// One host.
    pub async fn host_get(&self, host_id: &str) -> Result<Option<Host>> {
        let row = sqlx::query("SELECT * FROM hosts WHERE host_id = $1")
            .bind(host_id)
            .fetch_optional(self.r())
            .await?;
        row.as_ref().map(host_from_row).transpose()
    }

    /// GPUs, optionally of one host, with who holds them.
    pub async fn gpu_list(&self, host_id: Option<&str>) -> Result<Vec<Gpu>> {
        let rows = match host_id {
            Some(h) => {
                sqlx::query(&format!(
                    "{GPU_SELECT} WHERE g.host_id = $1 ORDER BY g.host_id, g.idx"
                ))
                .bind(h)
                .fetch_all(self.r())
                .await?
            }
            None => {
                sqlx::query(&format!("{GPU_SELECT} ORDER BY g.host_id, g.idx"))
                    .fetch_all(self.r())
                    .await?
            }
        };
        rows.iter().map(gpu_from_row).collect()
    }

    /// Sets the health of one GPU.
    pub async fn gpu_set_health(&self, gpu_id: &str, healthy: bool, reason: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query("UPDATE gpus SET health = $2, health_reason = $3 WHERE gpu_id = $1")
            .bind(gpu_id)
            .bind(if healthy {
                health::HEALTHY
            } else {
                health::UNHEALTHY
            })
            .bind(reason)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound(format!("GPU {gpu_id}")));
        }
        sqlx::query("UPDATE hosts SET generation = generation + 1 WHERE host_id = (SELECT host_id FROM gpus WHERE gpu_id = $1)")
            .bind(gpu_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Hosts with their GPUs: what the scheduler's capacity index is built from.
    pub async fn capacity_snapshot(&self) -> Result<Vec<(Host, Vec<Gpu>)>> {
        let hosts = self.host_list().await?;
        let gpus = self.gpu_list(None).await?;
        let mut by_host: HashMap<String, Vec<Gpu>> = HashMap::new();
        for g in gpus {
            by_host.entry(g.host_id.clone()).or_default().push(g);
        }
        Ok(hosts
            .into_iter()
            .map(|h| {
                let g = by_host.remove(&h.host_id).unwrap_or_default();
                (h, g)
            })
            .collect())
    }

    /// One host with its GPUs.
    pub async fn capacity_of(&self, host_id: &str) -> Result<Option<(Host, Vec<Gpu>)>> {
        let Some(h) = self.host_get(host_id).await? else {
            return Ok(None);
        };
        let g = self.gpu_list(Some(host_id)).await?;
        Ok(Some((h, g)))
    }
}
