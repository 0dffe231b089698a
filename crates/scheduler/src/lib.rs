//! Placement: which host, and which GPUs on it, a new instance gets.
//!
//! The planner is a pure function of a [`CapacityIndex`] and a
//! [`PlacementRequest`]; committing a plan is the store's job (a GPU claim is a
//! row under a unique constraint, so even a stale index can never double-book
//! a GPU — the claim fails and the caller re-plans).
//!
//! # Filters
//! zone, GPU model, enough free healthy GPUs, free vCPUs and memory, the
//! image's runtime offered by the host, host schedulable (not cordoned or
//! unreachable), spread-group anti-affinity (host / rack / switch), explicit
//! exclusions.
//!
//! # Scoring: best fit that keeps big shapes free
//! Hosts of a `(zone, model)` pool sit in buckets by free GPU count. A request
//! for `g` GPUs walks buckets from `g` upward and takes the first host that
//! passes the filters, so partly used hosts fill up before whole hosts are
//! broken — whole 8-GPU hosts stay free for 8-GPU instances. Within a host the
//! GPU set comes from the NVLink domain (SXM boards) or NUMA node (PCIe) with
//! the fewest free GPUs that still fits, again keeping whole domains free.
//!
//! CPU-only requests go to GPU-less hosts first (best fit on free vCPUs). They
//! may use a GPU host only where that leaves the vCPUs and memory the host's
//! free GPUs need (`free_gpus × per-GPU share`), so GPUs are never stranded.
//! The per-GPU share is the host's proportional share, capped at what the
//! largest-per-GPU instance type of the model that fits the host needs: a
//! small host (a 16-vCPU machine with one H100) keeps 8 vCPUs for its GPU,
//! not all 16.
//!
//! Every operation is O(log n) in the number of hosts plus the hosts skipped
//! by filters; `gpucloud bench scheduler` measures it.

use gpucloud_core::gpu::GpuModel;
use std::collections::{BTreeSet, HashMap};

/// Index of a host inside a [`CapacityIndex`].
pub type HostKey = u32;

/// Runtimes a host offers, as a bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Runtimes(pub u8);

impl Runtimes {
    /// Simulated.
    pub const SIM: u8 = 1;
    /// Containers.
    pub const CONTAINER: u8 = 2;
    /// Virtual machines.
    pub const QEMU: u8 = 4;
    /// Virtual machines with GPUs passed through (IOMMU + vfio-pci).
    pub const QEMU_GPU: u8 = 8;

    /// Whether `bit` is offered.
    pub fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
}

/// One GPU of a host, as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuSlot {
    /// Position on the host (0-based).
    pub index: u32,
    /// Healthy and schedulable.
    pub healthy: bool,
    /// Claimed by an instance.
    pub used: bool,
    /// NUMA node.
    pub numa: u32,
    /// NVLink domain (GPUs sharing NVLink/NVSwitch), `None` for PCIe-only GPUs.
    pub nvlink_domain: Option<u32>,
}

/// The capacity of one host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostCapacity {
    /// `host-…`.
    pub host_id: String,
    /// Zone.
    pub zone: String,
    /// GPU model (all GPUs of a host are one model), `None` without GPUs.
    pub model: Option<GpuModel>,
    /// Whether new instances may land here.
    pub schedulable: bool,
    /// Runtimes offered.
    pub runtimes: Runtimes,
    /// Rack, for rack-level spread.
    pub rack: String,
    /// Switch, for switch-level spread.
    pub switch: String,
    /// vCPUs.
    pub cpu_total: u32,
    /// vCPUs claimed.
    pub cpu_used: u32,
    /// Memory, MiB.
    pub mem_total_mib: u64,
    /// Memory claimed, MiB.
    pub mem_used_mib: u64,
    /// GPUs.
    pub gpus: Vec<GpuSlot>,
}

impl HostCapacity {
    /// Free healthy GPUs.
    pub fn free_gpus(&self) -> u32 {
        self.gpus.iter().filter(|g| g.healthy && !g.used).count() as u32
    }

    /// Free vCPUs.
    pub fn free_cpu(&self) -> u32 {
        self.cpu_total.saturating_sub(self.cpu_used)
    }

    /// Free memory, MiB.
    pub fn free_mem(&self) -> u64 {
        self.mem_total_mib.saturating_sub(self.mem_used_mib)
    }

    /// vCPUs and memory to keep for the free GPUs of this host.
    fn gpu_reserve(&self) -> (u32, u64) {
        let total = self.gpus.len() as u64;
        if total == 0 {
            return (0, 0);
        }
        let free = u64::from(self.free_gpus());
        let proportional = (
            (u64::from(self.cpu_total) * free / total) as u32,
            self.mem_total_mib * free / total,
        );
        let Some(model) = self.model else {
            return proportional;
        };
        match gpucloud_core::catalog::gpu_share_on(model, self.cpu_total, self.mem_total_mib) {
            Some((cpu, mem)) => (
                proportional.0.min((u64::from(cpu) * free) as u32),
                proportional.1.min(mem * free),
            ),
            // No type of this model fits here: nothing to keep.
            None => (0, 0),
        }
    }
}

/// Spread (anti-affinity) level of a disaster-recover group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpreadLevel {
    /// One member per host.
    Host,
    /// One member per rack.
    Rack,
    /// One member per switch.
    Switch,
}

/// What an instance needs.
#[derive(Debug, Clone, PartialEq)]
pub struct PlacementRequest {
    /// Zone.
    pub zone: String,
    /// GPU model, `None` for CPU-only types.
    pub model: Option<GpuModel>,
    /// Whole GPUs.
    pub gpus: u32,
    /// vCPUs.
    pub cpu: u32,
    /// Memory, MiB.
    pub mem_mib: u64,
    /// Runtime bit the image needs ([`Runtimes::SIM`], …).
    pub runtime: u8,
    /// Spread constraint: level and the hosts already holding group members.
    pub spread: Option<(SpreadLevel, Vec<String>)>,
    /// Hosts not to use.
    pub exclude_hosts: Vec<String>,
}

/// A planned placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Host.
    pub host_id: String,
    /// GPU indexes on that host.
    pub gpus: Vec<u32>,
}

/// Why nothing fits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoFit {
    /// The zone has no host with this hardware at all.
    #[error("no host in the zone has this hardware")]
    NotOffered,
    /// No host offers the runtime.
    #[error("no host in the zone offers the runtime")]
    NoRuntime,
    /// Hardware exists but is full, with a human explanation.
    #[error("{0}")]
    Full(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    zone: String,
    model: Option<GpuModel>,
}

#[derive(Debug, Default, Clone)]
struct Pool {
    /// For GPU pools: `buckets[free_gpus]` = hosts with that many free GPUs.
    buckets: Vec<BTreeSet<HostKey>>,
    /// For CPU-only pools: `(free_cpu, host)`.
    by_cpu: BTreeSet<(u32, HostKey)>,
    /// All hosts in the pool (schedulable or not).
    members: BTreeSet<HostKey>,
}

/// In-memory capacity of the fleet.
#[derive(Debug, Default, Clone)]
pub struct CapacityIndex {
    hosts: Vec<Option<HostCapacity>>,
    keys: HashMap<String, HostKey>,
    pools: HashMap<PoolKey, Pool>,
    /// Where each host is filed, to unfile it exactly.
    filed: HashMap<HostKey, (PoolKey, u32, u32)>,
}

impl CapacityIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of hosts.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// A host by ID.
    pub fn host(&self, host_id: &str) -> Option<&HostCapacity> {
        self.keys
            .get(host_id)
            .and_then(|k| self.hosts[*k as usize].as_ref())
    }

    /// All hosts.
    pub fn hosts(&self) -> impl Iterator<Item = &HostCapacity> {
        self.hosts.iter().flatten()
    }

    /// Adds or replaces a host.
    pub fn upsert(&mut self, host: HostCapacity) {
        let key = match self.keys.get(&host.host_id).copied() {
            Some(k) => {
                self.unfile(k);
                k
            }
            None => {
                let k = self.hosts.len() as HostKey;
                self.hosts.push(None);
                self.keys.insert(host.host_id.clone(), k);
                k
            }
        };
        self.hosts[key as usize] = Some(host);
        self.file(key);
    }

    /// Removes a host.
    pub fn remove(&mut self, host_id: &str) {
        if let Some(k) = self.keys.remove(host_id) {
            self.unfile(k);
            self.hosts[k as usize] = None;
        }
    }

    fn file(&mut self, key: HostKey) {
        let h = self.hosts[key as usize]
            .as_ref()
            .expect("filed host exists");
        let pk = PoolKey {
            zone: h.zone.clone(),
            model: h.model,
        };
        let free = h.free_gpus();
        let free_cpu = h.free_cpu();
        let schedulable = h.schedulable;
        let n = h.gpus.len();
        let pool = self.pools.entry(pk.clone()).or_default();
        pool.members.insert(key);
        if schedulable {
            if pk.model.is_some() {
                if pool.buckets.len() <= n {
                    pool.buckets.resize_with(n + 1, BTreeSet::new);
                }
                pool.buckets[free as usize].insert(key);
            } else {
                pool.by_cpu.insert((free_cpu, key));
            }
        }
        self.filed.insert(key, (pk, free, free_cpu));
    }

    fn unfile(&mut self, key: HostKey) {
        if let Some((pk, free, free_cpu)) = self.filed.remove(&key) {
            if let Some(pool) = self.pools.get_mut(&pk) {
                pool.members.remove(&key);
                if let Some(b) = pool.buckets.get_mut(free as usize) {
                    b.remove(&key);
                }
                pool.by_cpu.remove(&(free_cpu, key));
            }
        }
    }

    /// Marks GPUs and resources of a host as claimed.
    pub fn claim(&mut self, host_id: &str, gpus: &[u32], cpu: u32, mem_mib: u64) {
        let Some(&k) = self.keys.get(host_id) else {
            return;
        };
        self.unfile(k);
        if let Some(h) = self.hosts[k as usize].as_mut() {
            for g in h.gpus.iter_mut().filter(|g| gpus.contains(&g.index)) {
                g.used = true;
            }
            h.cpu_used = h.cpu_used.saturating_add(cpu);
            h.mem_used_mib = h.mem_used_mib.saturating_add(mem_mib);
        }
        self.file(k);
    }

    /// Returns GPUs and resources of a host.
    pub fn release(&mut self, host_id: &str, gpus: &[u32], cpu: u32, mem_mib: u64) {
        let Some(&k) = self.keys.get(host_id) else {
            return;
        };
        self.unfile(k);
        if let Some(h) = self.hosts[k as usize].as_mut() {
            for g in h.gpus.iter_mut().filter(|g| gpus.contains(&g.index)) {
                g.used = false;
            }
            h.cpu_used = h.cpu_used.saturating_sub(cpu);
            h.mem_used_mib = h.mem_used_mib.saturating_sub(mem_mib);
        }
        self.file(k);
    }

    /// Whether the zone has any host of this GPU model (or any CPU-only host for `None`).
    pub fn offers(&self, zone: &str, model: Option<GpuModel>) -> bool {
        self.pools
            .get(&PoolKey {
                zone: zone.to_string(),
                model,
            })
            .is_some_and(|p| !p.members.is_empty())
    }

    /// Zones that hold at least one host.
    pub fn zones(&self) -> BTreeSet<String> {
        self.pools
            .iter()
            .filter(|(_, p)| !p.members.is_empty())
            .map(|(k, _)| k.zone.clone())
            .collect()
    }

    /// GPU models present in a zone (`None` = CPU-only hosts).
    pub fn models_in(&self, zone: &str) -> Vec<Option<GpuModel>> {
        let mut v: Vec<_> = self
            .pools
            .iter()
            .filter(|(k, p)| k.zone == zone && !p.members.is_empty())
            .map(|(k, _)| k.model)
            .collect();
        v.sort();
        v
    }

    /// How many instances of this shape could be placed right now, counting
    /// each host independently (an upper bound used for stock levels). A
    /// CPU-only shape counts GPU hosts too, with what they keep for their free
    /// GPUs set aside, as [`CapacityIndex::plan`] places it.
    pub fn placeable(
        &self,
        zone: &str,
        model: Option<GpuModel>,
        gpus: u32,
        cpu: u32,
        mem_mib: u64,
    ) -> u64 {
        let mut n = 0u64;
        for (key, pool) in &self.pools {
            let ours = key.zone == zone
                && (key.model == model || (model.is_none() && gpus == 0 && key.model.is_some()));
            if !ours {
                continue;
            }
            for k in &pool.members {
                let Some(h) = self.hosts[*k as usize].as_ref() else {
                    continue;
                };
                if !h.schedulable || h.runtimes.0 == 0 {
                    continue;
                }
                let (res_cpu, res_mem) = if gpus == 0 { h.gpu_reserve() } else { (0, 0) };
                let by_gpu = h.free_gpus().checked_div(gpus).map_or(u64::MAX, u64::from);
                let by_cpu = h
                    .free_cpu()
                    .saturating_sub(res_cpu)
                    .checked_div(cpu)
                    .map_or(u64::MAX, u64::from);
                let by_mem = h
                    .free_mem()
                    .saturating_sub(res_mem)
                    .checked_div(mem_mib)
                    .unwrap_or(u64::MAX);
                n = n.saturating_add(by_gpu.min(by_cpu).min(by_mem));
            }
        }
        n
    }

    fn passes(&self, h: &HostCapacity, req: &PlacementRequest) -> bool {
        if !h.schedulable || !h.runtimes.has(req.runtime) {
            return false;
        }
        if req.exclude_hosts.contains(&h.host_id) {
            return false;
        }
        if let Some((level, members)) = &req.spread {
            for m in members {
                let Some(other) = self.host(m) else { continue };
                let clash = match level {
                    SpreadLevel::Host => other.host_id == h.host_id,
                    SpreadLevel::Rack => other.rack == h.rack,
                    SpreadLevel::Switch => other.switch == h.switch,
                };
                if clash {
                    return false;
                }
            }
        }
        let (res_cpu, res_mem) = if req.gpus == 0 {
            h.gpu_reserve()
        } else {
            (0, 0)
        };
        h.free_cpu() >= req.cpu.saturating_add(res_cpu)
            && h.free_mem() >= req.mem_mib.saturating_add(res_mem)
            && h.free_gpus() >= req.gpus
    }

    /// Plans a placement.
    pub fn plan(&self, req: &PlacementRequest) -> Result<Placement, NoFit> {
        let pk = PoolKey {
            zone: req.zone.clone(),
            model: req.model,
        };
        let pool = self.pools.get(&pk);
        if req.model.is_some() {
            let Some(pool) = pool.filter(|p| !p.members.is_empty()) else {
                return Err(NoFit::NotOffered);
            };
            for bucket in pool.buckets.iter().skip(req.gpus as usize) {
                for k in bucket {
                    let h = self.hosts[*k as usize].as_ref().expect("filed");
                    if self.passes(h, req) {
                        return Ok(Placement {
                            host_id: h.host_id.clone(),
                            gpus: choose_gpus(&h.gpus, req.gpus),
                        });
                    }
                }
            }
            return Err(self.explain(req, pool));
        }
        // CPU-only: GPU-less hosts first, best fit on vCPUs.
        if let Some(pool) = pool {
            for (_, k) in pool.by_cpu.range((req.cpu, 0)..) {
                let h = self.hosts[*k as usize].as_ref().expect("filed");
                if self.passes(h, req) {
                    return Ok(Placement {
                        host_id: h.host_id.clone(),
                        gpus: vec![],
                    });
                }
            }
        }
        // Then GPU hosts with spare vCPUs, fullest GPU hosts first.
        let mut gpu_pools: Vec<(&PoolKey, &Pool)> = self
            .pools
            .iter()
            .filter(|(k, _)| k.zone == req.zone && k.model.is_some())
            .collect();
        gpu_pools.sort_by_key(|(k, _)| k.model);
        for (_, p) in &gpu_pools {
            for bucket in &p.buckets {
                for k in bucket {
                    let h = self.hosts[*k as usize].as_ref().expect("filed");
                    if self.passes(h, req) {
                        return Ok(Placement {
                            host_id: h.host_id.clone(),
                            gpus: vec![],
                        });
                    }
                }
            }
        }
        let any_host = pool.is_some_and(|p| !p.members.is_empty()) || !gpu_pools.is_empty();
        if !any_host {
            return Err(NoFit::NotOffered);
        }
        let runtime_ok = self
            .hosts()
            .any(|h| h.zone == req.zone && h.runtimes.has(req.runtime));
        if !runtime_ok {
            return Err(NoFit::NoRuntime);
        }
        Err(NoFit::Full(format!(
            "no host has {} free vCPUs and {} GiB free memory",
            req.cpu,
            req.mem_mib / 1024
        )))
    }

    fn explain(&self, req: &PlacementRequest, pool: &Pool) -> NoFit {
        let hosts: Vec<&HostCapacity> = pool
            .members
            .iter()
            .filter_map(|k| self.hosts[*k as usize].as_ref())
            .collect();
        if !hosts.iter().any(|h| h.runtimes.has(req.runtime)) {
            return NoFit::NoRuntime;
        }
        let sched: Vec<&&HostCapacity> = hosts.iter().filter(|h| h.schedulable).collect();
        let max_free = sched.iter().map(|h| h.free_gpus()).max().unwrap_or(0);
        let total_free: u32 = sched.iter().map(|h| h.free_gpus()).sum();
        if max_free < req.gpus {
            return NoFit::Full(format!(
                "{} GPUs needed on one host; the most free on any host is {max_free} ({total_free} free across {} schedulable hosts)",
                req.gpus,
                sched.len()
            ));
        }
        if req.spread.is_some() {
            return NoFit::Full(
                "every host with enough free GPUs already holds a member of the disaster recover group"
                    .to_string(),
            );
        }
        NoFit::Full(format!(
            "hosts with {} free GPUs lack {} free vCPUs or {} GiB memory",
            req.gpus,
            req.cpu,
            req.mem_mib / 1024
        ))
    }
}

/// Chooses `n` free healthy GPUs on a host: inside the NVLink domain (or else
/// NUMA node) with the fewest free GPUs that still fits; if none fits, from
/// the groups with the most free GPUs first, touching as few groups as possible.
pub fn choose_gpus(slots: &[GpuSlot], n: u32) -> Vec<u32> {
    if n == 0 {
        return vec![];
    }
    let free: Vec<&GpuSlot> = slots.iter().filter(|g| g.healthy && !g.used).collect();
    let group_of = |g: &GpuSlot| -> (u32, u32) {
        match g.nvlink_domain {
            Some(d) => (d, g.numa),
            None => (u32::MAX, g.numa),
        }
    };
    // Primary grouping: NVLink domain when present, else NUMA node.
    let mut groups: Vec<(u32, Vec<&GpuSlot>)> = Vec::new();
    for g in &free {
        let (dom, numa) = group_of(g);
        let key = if dom == u32::MAX { numa } else { dom };
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(g),
            None => groups.push((key, vec![g])),
        }
    }
    let fits: Option<&(u32, Vec<&GpuSlot>)> = groups
        .iter()
        .filter(|(_, v)| v.len() as u32 >= n)
        .min_by_key(|(k, v)| (v.len(), *k));
    if let Some((_, members)) = fits {
        // Inside an NVLink domain, prefer one NUMA node too.
        let mut by_numa: Vec<(u32, Vec<&GpuSlot>)> = Vec::new();
        for g in members {
            match by_numa.iter_mut().find(|(k, _)| *k == g.numa) {
                Some((_, v)) => v.push(g),
                None => by_numa.push((g.numa, vec![g])),
            }
        }
        if let Some((_, v)) = by_numa
            .iter()
            .filter(|(_, v)| v.len() as u32 >= n)
            .min_by_key(|(k, v)| (v.len(), *k))
        {
            let mut idx: Vec<u32> = v.iter().map(|g| g.index).collect();
            idx.sort_unstable();
            idx.truncate(n as usize);
            return idx;
        }
        let mut idx: Vec<u32> = members.iter().map(|g| g.index).collect();
        idx.sort_unstable();
        idx.truncate(n as usize);
        return idx;
    }
    groups.sort_by_key(|(k, v)| (std::cmp::Reverse(v.len()), *k));
    let mut out = Vec::with_capacity(n as usize);
    for (_, v) in groups {
        let mut idx: Vec<u32> = v.iter().map(|g| g.index).collect();
        idx.sort_unstable();
        for i in idx {
            if out.len() as u32 == n {
                break;
            }
            out.push(i);
        }
    }
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests;
