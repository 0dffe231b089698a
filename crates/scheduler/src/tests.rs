use super::*;
use proptest::prelude::*;
use std::collections::HashSet;

fn host(id: &str, zone: &str, model: Option<GpuModel>, gpus: u32, sxm: bool) -> HostCapacity {
    HostCapacity {
        host_id: id.to_string(),
        zone: zone.to_string(),
        model,
        schedulable: true,
        runtimes: Runtimes(Runtimes::SIM),
        rack: format!("rack-{id}"),
        switch: "sw-0".to_string(),
        cpu_total: 192,
        cpu_used: 0,
        mem_total_mib: 2048 * 1024,
        mem_used_mib: 0,
        gpus: (0..gpus)
            .map(|i| GpuSlot {
                index: i,
                healthy: true,
                used: false,
                numa: if i < gpus / 2 { 0 } else { 1 },
                nvlink_domain: sxm.then_some(0),
            })
            .collect(),
    }
}

fn req(gpus: u32) -> PlacementRequest {
    PlacementRequest {
        zone: "z1".into(),
        model: Some(GpuModel::H100),
        gpus,
        cpu: 24 * gpus,
        mem_mib: 240 * 1024 * u64::from(gpus),
        runtime: Runtimes::SIM,
        spread: None,
        exclude_hosts: vec![],
    }
}

#[test]
fn best_fit_keeps_whole_hosts_free() {
    let mut idx = CapacityIndex::new();
    idx.upsert(host("a", "z1", Some(GpuModel::H100), 8, true));
    idx.upsert(host("b", "z1", Some(GpuModel::H100), 8, true));
    // Eight 1-GPU instances fill one host before touching the other.
    for _ in 0..8 {
        let p = idx.plan(&req(1)).unwrap();
        assert_eq!(p.host_id, "a");
        idx.claim(&p.host_id, &p.gpus, 24, 240 * 1024);
    }
    let p = idx.plan(&req(8)).unwrap();
    assert_eq!(p.host_id, "b");
    assert_eq!(p.gpus, (0..8).collect::<Vec<_>>());
}

#[test]
fn explains_why_nothing_fits() {
    let mut idx = CapacityIndex::new();
    idx.upsert(host("a", "z1", Some(GpuModel::H100), 8, true));
    let p = idx.plan(&req(2)).unwrap();
    idx.claim(&p.host_id, &p.gpus, 48, 480 * 1024);
    match idx.plan(&req(8)) {
        Err(NoFit::Full(msg)) => assert!(msg.contains("most free on any host is 6"), "{msg}"),
        other => panic!("{other:?}"),
    }
    let mut r = req(1);
    r.model = Some(GpuModel::T4);
    assert_eq!(idx.plan(&r), Err(NoFit::NotOffered));
    let mut r = req(1);
    r.runtime = Runtimes::QEMU;
    assert_eq!(idx.plan(&r), Err(NoFit::NoRuntime));
}

#[test]
fn gpu_sets_stay_inside_a_numa_node_on_pcie_hosts() {
    let h = host("a", "z1", Some(GpuModel::L40S), 8, false);
    assert_eq!(choose_gpus(&h.gpus, 4), vec![0, 1, 2, 3]);
    let mut slots = h.gpus.clone();
    slots[0].used = true; // node 0 has 3 free, node 1 has 4
    assert_eq!(choose_gpus(&slots, 3), vec![1, 2, 3]);
    assert_eq!(choose_gpus(&slots, 4), vec![4, 5, 6, 7]);
    // Five GPUs cannot fit one node: take the fuller node's four plus one.
    let five = choose_gpus(&slots, 5);
    assert_eq!(five.len(), 5);
    assert!(five.iter().filter(|i| **i >= 4).count() == 4);
}

#[test]
fn unhealthy_gpus_are_never_chosen() {
    let mut h = host("a", "z1", Some(GpuModel::H100), 8, true);
    h.gpus[3].healthy = false;
    let mut idx = CapacityIndex::new();
    idx.upsert(h);
    assert!(idx.plan(&req(8)).is_err());
    let p = idx.plan(&req(7)).unwrap();
    assert!(!p.gpus.contains(&3));
}

#[test]
fn spread_groups_use_distinct_hosts() {
    let mut idx = CapacityIndex::new();
    idx.upsert(host("a", "z1", Some(GpuModel::H100), 8, true));
    idx.upsert(host("b", "z1", Some(GpuModel::H100), 8, true));
    let mut r = req(1);
    r.spread = Some((SpreadLevel::Host, vec!["a".into()]));
    assert_eq!(idx.plan(&r).unwrap().host_id, "b");
    r.spread = Some((SpreadLevel::Host, vec!["a".into(), "b".into()]));
    assert!(matches!(idx.plan(&r), Err(NoFit::Full(_))));
}

#[test]
fn cpu_only_instances_prefer_cpu_hosts_and_never_strand_gpus() {
    let mut idx = CapacityIndex::new();
    idx.upsert(host("g", "z1", Some(GpuModel::H100), 8, true));
    let r = PlacementRequest {
        zone: "z1".into(),
        model: None,
        gpus: 0,
        cpu: 8,
        mem_mib: 16 * 1024,
        runtime: Runtimes::SIM,
        spread: None,
        exclude_hosts: vec![],
    };
    // The GPU host's vCPUs all belong to its 8 free GPUs.
    assert!(idx.plan(&r).is_err());
    assert_eq!(idx.placeable("z1", None, 0, 8, 16 * 1024), 0);
    let mut c = host("c", "z1", None, 0, false);
    c.cpu_total = 96;
    idx.upsert(c);
    assert_eq!(idx.plan(&r).unwrap().host_id, "c");
}

#[test]
fn a_small_gpu_host_keeps_only_what_its_gpu_types_need() {
    // One H100 in a 16-vCPU, 125 GiB machine: the largest 1-GPU H100 type
    // that fits (GT5.2XLARGE40) needs 8 vCPUs and 40 GiB.
    let mut idx = CapacityIndex::new();
    let mut g = host("g", "z1", Some(GpuModel::H100), 1, false);
    g.cpu_total = 16;
    g.mem_total_mib = 125 * 1024;
    idx.upsert(g.clone());
    let cpu_only = |cpu: u32, gib: u64| PlacementRequest {
        zone: "z1".into(),
        model: None,
        gpus: 0,
        cpu,
        mem_mib: gib * 1024,
        runtime: Runtimes::SIM,
        spread: None,
        exclude_hosts: vec![],
    };
    // Stock agrees with placement: eight 1-vCPU/2 GiB instances, one 8-vCPU.
    assert_eq!(idx.placeable("z1", None, 0, 1, 2 * 1024), 8);
    assert_eq!(idx.placeable("z1", None, 0, 8, 80 * 1024), 1);
    assert_eq!(idx.placeable("z1", None, 0, 9, 1024), 0);
    assert_eq!(idx.plan(&cpu_only(8, 80)).unwrap().host_id, "g");
    assert!(
        idx.plan(&cpu_only(9, 2)).is_err(),
        "8 vCPUs stay for the GPU"
    );
    assert!(
        idx.plan(&cpu_only(2, 90)).is_err(),
        "40 GiB stay for the GPU"
    );
    // With 8 vCPUs and 80 GiB taken, the GPU still sells.
    g.cpu_used = 8;
    g.mem_used_mib = 80 * 1024;
    idx.upsert(g);
    let mut one = req(1);
    one.cpu = 8;
    one.mem_mib = 40 * 1024;
    assert_eq!(idx.plan(&one).unwrap().host_id, "g");
}

#[test]
fn unschedulable_hosts_are_skipped_and_reinstated() {
    let mut idx = CapacityIndex::new();
    let mut h = host("a", "z1", Some(GpuModel::H100), 8, true);
    h.schedulable = false;
    idx.upsert(h.clone());
    assert!(idx.plan(&req(1)).is_err());
    h.schedulable = true;
    idx.upsert(h);
    assert!(idx.plan(&req(1)).is_ok());
    idx.remove("a");
    assert_eq!(idx.plan(&req(1)), Err(NoFit::NotOffered));
    assert!(idx.is_empty());
}

#[derive(Debug, Clone)]
enum Op {
    Place(u32),
    Release(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => prop::sample::select(vec![1u32, 1, 1, 2, 4, 8]).prop_map(Op::Place),
        1 => any::<usize>().prop_map(Op::Release),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    /// Across any sequence of placements and releases: no GPU is held twice,
    /// resources never go over capacity, a failed plan means no host could
    /// take the request, and a successful one is a best fit.
    #[test]
    fn placements_are_sound_complete_and_best_fit(
        hosts in prop::collection::vec((prop::sample::select(vec![2u32, 4, 8]), any::<bool>()), 1..8),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let mut idx = CapacityIndex::new();
        for (i, (g, sxm)) in hosts.iter().enumerate() {
            idx.upsert(host(&format!("h{i}"), "z1", Some(GpuModel::H100), *g, *sxm));
        }
        let mut live: Vec<(String, Vec<u32>, u32, u64)> = Vec::new();
        for o in ops {
            match o {
                Op::Place(g) => {
                    let r = req(g);
                    match idx.plan(&r) {
                        Ok(p) => {
                            let h = idx.host(&p.host_id).unwrap();
                            prop_assert_eq!(p.gpus.len() as u32, g);
                            let set: HashSet<u32> = p.gpus.iter().copied().collect();
                            prop_assert_eq!(set.len() as u32, g);
                            for i in &p.gpus {
                                let slot = h.gpus.iter().find(|s| s.index == *i).unwrap();
                                prop_assert!(!slot.used && slot.healthy);
                            }
                            // Best fit: no feasible host has fewer free GPUs.
                            let chosen_free = h.free_gpus();
                            for other in idx.hosts() {
                                if other.free_gpus() >= g && other.free_cpu() >= r.cpu && other.free_mem() >= r.mem_mib {
                                    prop_assert!(other.free_gpus() >= chosen_free);
                                }
                            }
                            // NVLink: if one domain could hold the set, it does.
                            let doms: HashSet<Option<u32>> = p.gpus.iter()
                                .map(|i| h.gpus[*i as usize].nvlink_domain).collect();
                            if h.gpus.iter().all(|s| s.nvlink_domain.is_some()) {
                                prop_assert_eq!(doms.len(), 1);
                            }
                            idx.claim(&p.host_id, &p.gpus, r.cpu, r.mem_mib);
                            live.push((p.host_id, p.gpus, r.cpu, r.mem_mib));
                        }
                        Err(_) => {
                            for other in idx.hosts() {
                                prop_assert!(!(other.free_gpus() >= g && other.free_cpu() >= r.cpu && other.free_mem() >= r.mem_mib));
                            }
                        }
                    }
                }
                Op::Release(i) => {
                    if !live.is_empty() {
                        let (h, g, c, m) = live.swap_remove(i % live.len());
                        idx.release(&h, &g, c, m);
                    }
                }
            }
            // Invariants: claims match the index, nothing over capacity.
            let mut held: HashSet<(String, u32)> = HashSet::new();
            for (h, g, _, _) in &live {
                for i in g {
                    prop_assert!(held.insert((h.clone(), *i)), "GPU {h}/{i} held twice");
                }
            }
            for h in idx.hosts() {
                prop_assert!(h.cpu_used <= h.cpu_total && h.mem_used_mib <= h.mem_total_mib);
                let used: u32 = h.gpus.iter().filter(|s| s.used).count() as u32;
                let expected = held.iter().filter(|(hh, _)| *hh == h.host_id).count() as u32;
                prop_assert_eq!(used, expected);
            }
        }
    }
}
