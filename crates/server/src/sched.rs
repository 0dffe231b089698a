//! The scheduler service: the pure planner's capacity index kept in memory,
//! plus reservations for plans that are being committed.
//!
//! Planning and reserving happen under one short lock, so concurrent requests
//! in this process never plan the same GPU. The database claim is the real
//! guard: if another server (or a stale index) lets two plans pick one GPU,
//! the second transaction fails and the caller re-plans after refreshing that
//! host.
//!
//! # Refreshing without going stale
//! A host is refreshed from the database one at a time, and only if nothing
//! touched it in memory while its row was being read (an epoch per host) and
//! no reservation on it is in flight. So a refresh can never overwrite a claim
//! or release this server made in the meantime with an older row; a refresh
//! that loses that race is simply dropped and the next pass retries. The
//! capacity reconciler refreshes the hosts whose database generation moved.

use gpucloud_core::gpu::GpuModel;
use gpucloud_scheduler::{
    choose_gpus, CapacityIndex, GpuSlot, HostCapacity, NoFit, Placement, PlacementRequest, Runtimes,
};
use gpucloud_store::hosts::{Gpu, Host};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A reservation in flight.
#[derive(Debug, Clone)]
struct Reservation {
    items: Vec<(String, Vec<u32>, u32, u64)>,
}

/// What the API shows beside an instance's own state: hosts that are not
/// reporting and GPUs that are fenced. Kept with the index because it is
/// loaded from the same rows.
#[derive(Debug, Default, Clone)]
pub struct Facts {
    /// Hosts whose agent is not reporting → why.
    pub unreachable: HashMap<String, String>,
    /// Unhealthy GPUs → (host, why).
    pub unhealthy_gpus: HashMap<String, (String, String)>,
}

impl Facts {
    fn set(&mut self, h: &Host, gpus: &[Gpu]) {
        if h.state == gpucloud_store::hosts::state::READY {
            self.unreachable.remove(&h.host_id);
        } else {
            let why = if h.state_reason.is_empty() {
                format!("the host is {}", h.state)
            } else {
                h.state_reason.clone()
            };
            self.unreachable.insert(h.host_id.clone(), why);
        }
        self.unhealthy_gpus
            .retain(|_, (host, _)| host != &h.host_id);
        for g in gpus {
            if g.health != gpucloud_store::hosts::health::HEALTHY {
                self.unhealthy_gpus.insert(
                    g.gpu_id.clone(),
                    (h.host_id.clone(), g.health_reason.clone()),
                );
            }
        }
    }

    fn forget(&mut self, host: &str) {
        self.unreachable.remove(host);
        self.unhealthy_gpus.retain(|_, (h, _)| h != host);
    }
}

#[derive(Default)]
struct State {
    index: CapacityIndex,
    facts: Facts,
    reservations: HashMap<u64, Reservation>,
    /// Per host: bumped by every change made in memory.
    epochs: HashMap<String, u64>,
    /// Per host: the database generation the index last loaded.
    db_gens: HashMap<String, i64>,
}

impl State {
    fn touch(&mut self, host: &str) {
        *self.epochs.entry(host.to_string()).or_default() += 1;
    }

    fn pending_on(&self, host: &str) -> bool {
        self.reservations
            .values()
            .any(|r| r.items.iter().any(|i| i.0 == host))
    }
}

/// Handle of a reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReservationId(u64);

/// A request's reservation, given back when dropped unless committed: a
/// request cancelled between reserving and committing (its deadline passed
/// while it waited for the database) never strands capacity in memory — a
/// host with a reservation pending is not reloaded, so it would stay
/// stranded until a restart. The database has the last word either way: if
/// the transaction had committed just before, the next claim on that host
/// meets the database's refusal and the host is reloaded.
#[must_use = "a reservation is cancelled when dropped"]
pub struct Held<'a> {
    sched: &'a Scheduler,
    id: Option<ReservationId>,
}

impl Held<'_> {
    /// The reservation is in the database now.
    pub fn commit(mut self) {
        if let Some(id) = self.id.take() {
            self.sched.commit(id);
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.sched.cancel(id);
        }
    }
}

/// The scheduler.
#[derive(Default)]
pub struct Scheduler {
    state: Mutex<State>,
    next: AtomicU64,
}

/// The runtime bit for a runtime name.
pub fn runtime_bit(name: &str) -> u8 {
    match name {
        "sim" => Runtimes::SIM,
        "container" => Runtimes::CONTAINER,
        "qemu" => Runtimes::QEMU,
        "qemu-gpu" => Runtimes::QEMU_GPU,
        _ => 0,
    }
}

/// Builds a host's capacity from its stored rows.
pub fn capacity_from(h: &Host, gpus: &[Gpu]) -> HostCapacity {
    let mut bits = 0u8;
    for r in &h.runtimes {
        bits |= runtime_bit(r);
    }
    let mut slots: Vec<GpuSlot> = gpus
        .iter()
        .map(|g| GpuSlot {
            index: g.idx as u32,
            healthy: g.health == gpucloud_store::hosts::health::HEALTHY,
            used: g.claimed_by.is_some(),
            numa: g.numa_node as u32,
            nvlink_domain: g.nvlink_domain.map(|d| d as u32),
        })
        .collect();
    slots.sort_by_key(|s| s.index);
    HostCapacity {
        host_id: h.host_id.clone(),
        zone: h.zone.clone(),
        model: h.gpu_model.as_deref().and_then(GpuModel::from_key),
        schedulable: h.state == gpucloud_store::hosts::state::READY
            && h.admin_state == gpucloud_store::hosts::admin::ACTIVE,
        runtimes: Runtimes(bits),
        rack: h.rack.clone(),
        switch: h.switch.clone(),
        cpu_total: h.cpu_total.max(0) as u32,
        cpu_used: h.cpu_used.max(0) as u32,
        mem_total_mib: h.mem_total_mib.max(0) as u64,
        mem_used_mib: h.mem_used_mib.max(0) as u64,
        gpus: slots,
    }
}

impl Scheduler {
    /// An empty scheduler.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Builds the index from stored hosts (at start, before any request).
    pub fn resync(&self, snapshot: &[(Host, Vec<Gpu>)]) {
        let mut index = CapacityIndex::new();
        let mut gens = HashMap::new();
        let mut facts = Facts::default();
        for (h, g) in snapshot {
            index.upsert(capacity_from(h, g));
            gens.insert(h.host_id.clone(), h.generation);
            facts.set(h, g);
        }
        let mut st = self.lock();
        st.facts = facts;
        for r in st.reservations.values() {
            for (host, gpus, cpu, mem) in &r.items {
                index.claim(host, gpus, *cpu, *mem);
            }
        }
        st.index = index;
        st.db_gens = gens;
    }

    /// Hosts whose database generation differs from what the index loaded,
    /// and hosts the index has that the database no longer has.
    pub fn stale(&self, gens: &[(String, i64)]) -> (Vec<String>, Vec<String>) {
        let st = self.lock();
        let changed = gens
            .iter()
            .filter(|(h, g)| st.db_gens.get(h) != Some(g))
            .map(|(h, _)| h.clone())
            .collect();
        let known: std::collections::HashSet<&String> = gens.iter().map(|(h, _)| h).collect();
        let gone = st
            .db_gens
            .keys()
            .filter(|h| !known.contains(h))
            .cloned()
            .collect();
        (changed, gone)
    }

    /// Forgets a host that left the database.
    pub fn forget(&self, host_id: &str) {
        let mut st = self.lock();
        st.index.remove(host_id);
        st.db_gens.remove(host_id);
        st.facts.forget(host_id);
        st.touch(host_id);
    }

    /// Reads the host and GPU facts.
    pub fn with_facts<T>(&self, f: impl FnOnce(&Facts) -> T) -> T {
        f(&self.lock().facts)
    }

    /// Reloads one host from the store, unless this server changes it meanwhile
    /// (then the next pass does). Returns whether the index took the new row.
    pub async fn refresh_from(
        &self,
        store: &gpucloud_store::Store,
        host_id: &str,
    ) -> gpucloud_store::Result<bool> {
        let epoch = {
            let st = self.lock();
            if st.pending_on(host_id) {
                return Ok(false);
            }
            st.epochs.get(host_id).copied().unwrap_or(0)
        };
        let Some((h, g)) = store.capacity_of(host_id).await? else {
            self.forget(host_id);
            return Ok(true);
        };
        let mut st = self.lock();
        // Facts do not depend on claims: they are always current.
        st.facts.set(&h, &g);
        if st.epochs.get(host_id).copied().unwrap_or(0) != epoch || st.pending_on(host_id) {
            return Ok(false);
        }
        st.index.upsert(capacity_from(&h, &g));
        st.db_gens.insert(host_id.to_string(), h.generation);
        st.touch(host_id);
        Ok(true)
    }

    /// Replaces the index with these hosts (benchmarks, tests).
    pub fn load(&self, hosts: Vec<HostCapacity>) {
        let mut index = CapacityIndex::new();
        for h in hosts {
            index.upsert(h);
        }
        self.lock().index = index;
    }

    /// Plans and reserves up to `n` placements of `req` (at least `min`),
    /// spreading across hosts when `req.spread` is set.
    pub fn reserve(
        &self,
        req: &PlacementRequest,
        n: usize,
        min: usize,
    ) -> Result<(ReservationId, Vec<Placement>), NoFit> {
        let mut st = self.lock();
        let mut placed: Vec<Placement> = Vec::with_capacity(n);
        let mut items = Vec::with_capacity(n);
        let mut req = req.clone();
        let mut first_err = None;
        for _ in 0..n {
            match st.index.plan(&req) {
                Ok(p) => {
                    st.index.claim(&p.host_id, &p.gpus, req.cpu, req.mem_mib);
                    items.push((p.host_id.clone(), p.gpus.clone(), req.cpu, req.mem_mib));
                    if let Some((_, members)) = &mut req.spread {
                        members.push(p.host_id.clone());
                    }
                    placed.push(p);
                }
                Err(e) => {
                    first_err = Some(e);
                    break;
                }
            }
        }
        if placed.len() < min.max(1) {
            for (h, g, c, m) in &items {
                st.index.release(h, g, *c, *m);
            }
            return Err(first_err.unwrap_or(NoFit::Full("no capacity".into())));
        }
        for (h, ..) in &items {
            st.touch(h);
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        st.reservations.insert(id, Reservation { items });
        Ok((ReservationId(id), placed))
    }

    /// Reserves a specific set of resources on one host (resize on the spot,
    /// restart of a released instance). `None` if they are not free.
    pub fn reserve_on_host(
        &self,
        host_id: &str,
        gpus: u32,
        keep: &[u32],
        cpu: u32,
        mem_mib: u64,
    ) -> Option<(ReservationId, Vec<u32>)> {
        let mut st = self.lock();
        let h = st.index.host(host_id)?;
        if h.free_cpu() < cpu || h.free_mem() < mem_mib {
            return None;
        }
        let needed = gpus.saturating_sub(keep.len() as u32);
        let mut slots = h.gpus.clone();
        // Prefer GPUs next to the ones kept: mark kept ones as used and pick among free.
        let add = if needed > 0 {
            if h.free_gpus() < needed {
                return None;
            }
            // Bias towards the domain/NUMA node of kept GPUs by filtering first.
            let near: Vec<GpuSlot> = slots
                .iter()
                .filter(|s| {
                    keep.iter().any(|k| {
                        let ks = &h.gpus[*k as usize];
                        s.nvlink_domain == ks.nvlink_domain && s.numa == ks.numa
                    })
                })
                .cloned()
                .collect();
            let near_pick = choose_gpus(&near, needed);
            if near_pick.len() as u32 == needed {
                near_pick
            } else {
                slots.iter_mut().for_each(|s| {
                    if keep.contains(&s.index) {
                        s.used = true
                    }
                });
                choose_gpus(&slots, needed)
            }
        } else {
            vec![]
        };
        if add.len() as u32 != needed {
            return None;
        }
        st.index.claim(host_id, &add, cpu, mem_mib);
        st.touch(host_id);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        st.reservations.insert(
            id,
            Reservation {
                items: vec![(host_id.to_string(), add.clone(), cpu, mem_mib)],
            },
        );
        Some((ReservationId(id), add))
    }

    /// Guards a reservation for a request: see [`Held`].
    pub fn hold(&self, id: ReservationId) -> Held<'_> {
        Held {
            sched: self,
            id: Some(id),
        }
    }

    /// The reservation is in the database now.
    pub fn commit(&self, id: ReservationId) {
        let mut st = self.lock();
        if let Some(r) = st.reservations.remove(&id.0) {
            for (h, ..) in &r.items {
                st.touch(h);
            }
        }
    }

    /// The reservation was not used: give everything back.
    pub fn cancel(&self, id: ReservationId) {
        let mut st = self.lock();
        if let Some(r) = st.reservations.remove(&id.0) {
            for (h, g, c, m) in &r.items {
                st.index.release(h, g, *c, *m);
                st.touch(h);
            }
        }
    }

    /// A host let go of resources.
    pub fn release(&self, host_id: &str, gpus: &[u32], cpu: u32, mem_mib: u64) {
        let mut st = self.lock();
        st.index.release(host_id, gpus, cpu, mem_mib);
        st.touch(host_id);
    }

    /// Lowers a host's usage after a shrink on the spot (CPU/memory only).
    pub fn shrink(&self, host_id: &str, cpu: u32, mem_mib: u64) {
        let mut st = self.lock();
        st.index.release(host_id, &[], cpu, mem_mib);
        st.touch(host_id);
    }

    /// Reads the index.
    pub fn with_index<T>(&self, f: impl FnOnce(&CapacityIndex) -> T) -> T {
        f(&self.lock().index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(id: &str) -> (Host, Vec<Gpu>) {
        (
            Host {
                host_id: id.into(),
                name: id.into(),
                zone: "z".into(),
                kind: "sim".into(),
                gpu_model: Some("H100".into()),
                cpu_total: 192,
                mem_total_mib: 1_966_080,
                cpu_used: 0,
                mem_used_mib: 0,
                runtimes: vec!["sim".into()],
                rack: "r".into(),
                switch: "s".into(),
                state: "READY".into(),
                state_reason: String::new(),
                admin_state: "ACTIVE".into(),
                generation: 1,
                observed_generation: 0,
                inventory: serde_json::Value::Null,
                last_seen: 0,
            },
            (0..8)
                .map(|i| Gpu {
                    gpu_id: format!("GPU-{id}-{i}"),
                    host_id: id.into(),
                    idx: i,
                    model: "H100".into(),
                    pci_address: String::new(),
                    numa_node: i / 4,
                    nvlink_domain: Some(0),
                    memory_mib: 81920,
                    health: "HEALTHY".into(),
                    health_reason: String::new(),
                    claimed_by: None,
                    claim_released: false,
                })
                .collect(),
        )
    }

    fn req() -> PlacementRequest {
        PlacementRequest {
            zone: "z".into(),
            model: Some(GpuModel::H100),
            gpus: 1,
            cpu: 24,
            mem_mib: 240 * 1024,
            runtime: Runtimes::SIM,
            spread: None,
            exclude_hosts: vec![],
        }
    }

    #[tokio::test]
    async fn a_request_cancelled_mid_way_gives_its_reservation_back() {
        let s = std::sync::Arc::new(Scheduler::new());
        s.resync(&[host("a")]);
        let free = |s: &Scheduler| s.with_index(|i| i.host("a").unwrap().free_gpus());
        // A request that reserves and then waits on a database that does not
        // answer before its deadline.
        let s2 = s.clone();
        let request = async move {
            let (id, _) = s2.reserve(&req(), 2, 2).unwrap();
            let _held = s2.hold(id);
            std::future::pending::<()>().await;
        };
        let r = tokio::time::timeout(std::time::Duration::from_millis(50), request).await;
        assert!(r.is_err(), "the deadline passed");
        assert_eq!(free(&s), 8, "given back");
        assert_eq!(
            s.stale(&[("a".into(), 2)]),
            (vec!["a".to_string()], vec![]),
            "reloadable"
        );
        // Committed: it stays taken.
        let (id, _) = s.reserve(&req(), 2, 2).unwrap();
        s.hold(id).commit();
        assert_eq!(free(&s), 6);
    }

    #[test]
    fn reservations_survive_a_resync_and_cancel_cleanly() {
        let s = Scheduler::new();
        let snap = vec![host("a")];
        s.resync(&snap);
        let (id, placed) = s.reserve(&req(), 3, 3).unwrap();
        assert_eq!(placed.len(), 3);
        s.resync(&snap);
        assert_eq!(s.with_index(|i| i.host("a").unwrap().free_gpus()), 5);
        assert_eq!(s.stale(&[("a".into(), 1)]), (vec![], vec![]));
        assert_eq!(s.stale(&[("a".into(), 2)]), (vec!["a".to_string()], vec![]));
        assert_eq!(s.stale(&[]), (vec![], vec!["a".to_string()]));
        s.cancel(id);
        assert_eq!(s.with_index(|i| i.host("a").unwrap().free_gpus()), 8);
        // Min count not met: nothing stays reserved.
        assert!(s.reserve(&req(), 9, 9).is_err());
        assert_eq!(s.with_index(|i| i.host("a").unwrap().free_gpus()), 8);
        // Partial delivery.
        let (_, placed) = s.reserve(&req(), 9, 4).unwrap();
        assert_eq!(placed.len(), 8);
    }

    #[test]
    fn growing_on_the_spot_stays_near_kept_gpus() {
        let s = Scheduler::new();
        s.resync(&[host("a")]);
        s.reserve_on_host("a", 1, &[], 24, 0).unwrap(); // takes GPU 0? choose_gpus picks the smallest fitting NUMA group
        let (_, add) = s.reserve_on_host("a", 4, &[0], 72, 0).unwrap();
        assert_eq!(add.len(), 3);
        assert!(add.iter().all(|g| *g < 4), "{add:?} stays on NUMA node 0");
    }
}
