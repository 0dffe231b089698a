//! What a host has: CPUs, memory, GPUs.
//!
//! The real inventory reads `/proc` and scans PCI devices in sysfs for NVIDIA
//! GPUs (vendor `0x10de`, class `0x0300` or `0x0302`) — a GPU bound to
//! `vfio-pci` for passthrough is invisible to the driver, so sysfs, not the
//! driver, is the source of truth for what exists. The sysfs root is a
//! parameter so tests run against a fake tree.

use crate::nvml::{nvlink_domains, DriverGpu, GpuMonitor};
use gpucloud_agent_api::{GpuInventory, HostInventory, HostKind, RuntimeKind};
use gpucloud_core::gpu::GpuModel;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Something that can describe a host.
pub trait Inventory: Send + Sync + 'static {
    /// The current inventory.
    fn collect(&self) -> HostInventory;
}

/// A PCI GPU found in sysfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciGpu {
    /// `0000:18:00.0`.
    pub address: String,
    /// PCI device ID.
    pub device_id: u16,
    /// NUMA node (`-1` in sysfs becomes 0).
    pub numa_node: u32,
    /// Bound driver (`nvidia`, `vfio-pci`, none).
    pub driver: Option<String>,
    /// IOMMU group, when the IOMMU is on.
    pub iommu_group: Option<u32>,
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

fn parse_hex(s: &str) -> Option<u32> {
    u32::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok()
}

/// NUMA nodes with their CPUs and memory, from `<sysfs>/devices/system/node`.
pub fn numa_nodes(sysfs: &Path) -> Vec<serde_json::Value> {
    let dir = sysfs.join("devices/system/node");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return vec![];
    };
    let mut nodes: Vec<(u32, serde_json::Value)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let n: u32 = name.strip_prefix("node")?.parse().ok()?;
            let cpus = read_trim(&e.path().join("cpulist")).unwrap_or_default();
            let mem_mib = std::fs::read_to_string(e.path().join("meminfo"))
                .ok()
                .and_then(|m| {
                    m.lines()
                        .find(|l| l.contains("MemTotal:"))
                        .and_then(|l| l.split_whitespace().rev().nth(1)?.parse::<u64>().ok())
                })
                .map_or(0, |kb| kb / 1024);
            Some((
                n,
                serde_json::json!({"node": n, "cpus": cpus, "memory_mib": mem_mib}),
            ))
        })
        .collect();
    nodes.sort_by_key(|(n, _)| *n);
    nodes.into_iter().map(|(_, v)| v).collect()
}

/// Scans `<sysfs>/bus/pci/devices` for NVIDIA display/3D controllers.
pub fn scan_pci_gpus(sysfs: &Path) -> Vec<PciGpu> {
    let dir = sysfs.join("bus/pci/devices");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return vec![];
    };
    let mut out: Vec<PciGpu> = entries
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            let vendor = parse_hex(&read_trim(&p.join("vendor"))?)?;
            let class = parse_hex(&read_trim(&p.join("class"))?)?;
            if vendor != 0x10de || !matches!(class >> 8, 0x0300 | 0x0302) {
                return None;
            }
            let device_id = parse_hex(&read_trim(&p.join("device"))?)? as u16;
            let numa_node = read_trim(&p.join("numa_node"))
                .and_then(|s| s.parse::<i64>().ok())
                .filter(|n| *n >= 0)
                .unwrap_or(0) as u32;
            let driver = std::fs::read_link(p.join("driver"))
                .ok()
                .and_then(|l| l.file_name().map(|f| f.to_string_lossy().to_string()));
            let iommu_group = std::fs::read_link(p.join("iommu_group"))
                .ok()
                .and_then(|l| l.file_name().and_then(|f| f.to_str()?.parse().ok()));
            Some(PciGpu {
                address: e.file_name().to_string_lossy().to_string(),
                device_id,
                numa_node,
                driver,
                iommu_group,
            })
        })
        .collect();
    out.sort_by(|a, b| a.address.cmp(&b.address));
    out
}

/// The inventory of the machine the agent runs on.
#[derive(Debug, Clone)]
pub struct LocalInventory {
    /// Stable host ID.
    pub host_id: String,
    /// Zone the host serves.
    pub zone: String,
    /// sysfs root (`/sys`).
    pub sysfs: PathBuf,
    /// procfs root (`/proc`).
    pub procfs: PathBuf,
    /// Runtimes the agent found usable.
    pub runtimes: Vec<RuntimeKind>,
    /// Memory kept back for the host itself, MiB.
    pub reserved_mib: u64,
    /// Extra facts to show (runtime checks, KVM …).
    pub details: serde_json::Value,
    /// The GPU driver and health (`None`: sysfs only).
    pub gpu_monitor: Option<Arc<GpuMonitor>>,
    /// Where GPU identities are remembered (`None`: not remembered).
    pub state_dir: Option<PathBuf>,
    /// The VM accelerator verdict, once the KVM probe has run (`None`: no VMs).
    pub vm_accel: Option<Arc<std::sync::OnceLock<crate::qemu::AccelVerdict>>>,
    /// VMs can take GPUs here (QEMU, IOMMU, vfio-pci).
    pub gpu_passthrough: bool,
}

/// A UUID derived from host and PCI address, for a GPU the driver has never
/// described (no driver, or bound to `vfio-pci` since before the agent knew it).
fn derived_uuid(host_id: &str, pci: &str) -> String {
    let h = hex::encode(Sha256::digest(format!("{host_id}/{pci}").as_bytes()));
    format!(
        "GPU-{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl LocalInventory {
    /// Reads or creates the host ID kept in `state_dir/host-id`.
    pub fn host_id_in(state_dir: &Path) -> std::io::Result<String> {
        let p = state_dir.join("host-id");
        if let Ok(id) = std::fs::read_to_string(&p) {
            let id = id.trim().to_string();
            if gpucloud_api_types::ids::is_valid(gpucloud_api_types::ids::IdKind::Host, &id) {
                return Ok(id);
            }
        }
        std::fs::create_dir_all(state_dir)?;
        let id = gpucloud_api_types::ids::new_id(gpucloud_api_types::ids::IdKind::Host);
        std::fs::write(&p, &id)?;
        Ok(id)
    }

    fn mem_total_mib(&self) -> u64 {
        std::fs::read_to_string(self.procfs.join("meminfo"))
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            })
            .map_or(0, |kb| kb / 1024)
    }

    fn cpu_model(&self) -> String {
        std::fs::read_to_string(self.procfs.join("cpuinfo"))
            .ok()
            .and_then(|c| {
                c.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':').map(|(_, v)| v.trim().to_string()))
            })
            .unwrap_or_else(|| "unknown".into())
    }
}

impl LocalInventory {
    /// The GPUs: sysfs says which exist; the driver adds identity, memory,
    /// NVLink and health. A GPU keeps the first UUID the agent gave it (kept
    /// in `<state>/gpu-uuids.json`), so its identity survives the driver
    /// coming and going (e.g. while it is bound to `vfio-pci`).
    fn gpus(&self, pci: &[PciGpu]) -> Vec<GpuInventory> {
        let driver_gpus: Vec<DriverGpu> = self
            .gpu_monitor
            .as_ref()
            .map(|m| m.driver().gpus())
            .unwrap_or_default();
        let view = self
            .gpu_monitor
            .as_ref()
            .map(|m| m.look())
            .unwrap_or_default();
        let domains = nvlink_domains(&driver_gpus);
        let by_pci: HashMap<&str, &DriverGpu> = driver_gpus
            .iter()
            .map(|g| (g.pci_address.as_str(), g))
            .collect();
        let uuid_file = self.state_dir.as_ref().map(|d| d.join("gpu-uuids.json"));
        let mut known: BTreeMap<String, String> = uuid_file
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        let before = known.clone();
        let out = pci
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let d = by_pci.get(g.address.as_str()).copied();
                let model = GpuModel::from_pci_device(g.device_id)
                    .or_else(|| d.and_then(|d| GpuModel::from_driver_name(&d.name, d.memory_mib)));
                let uuid = known
                    .entry(g.address.clone())
                    .or_insert_with(|| match d {
                        Some(d) if !d.uuid.is_empty() => d.uuid.clone(),
                        _ => derived_uuid(&self.host_id, &g.address),
                    })
                    .clone();
                let health_reason = if model.is_none() {
                    format!(
                        "unknown GPU model (PCI device {:04x}{})",
                        g.device_id,
                        d.map(|d| format!(", {}", d.name)).unwrap_or_default()
                    )
                } else if d.is_some_and(|d| d.mig_enabled) {
                    "MIG mode is on; gpucloud hands out whole GPUs (turn MIG off to offer it)"
                        .into()
                } else if let Some(why) = view.unhealthy.get(&g.address) {
                    why.clone()
                } else {
                    String::new()
                };
                GpuInventory {
                    uuid,
                    index: i as u32,
                    model: model.map_or("unknown".into(), |m| m.spec().key.to_string()),
                    name: match (model, d) {
                        (Some(m), _) => m.spec().name.to_string(),
                        (None, Some(d)) if !d.name.is_empty() => d.name.clone(),
                        _ => format!("NVIDIA device {:04x}", g.device_id),
                    },
                    pci_address: g.address.clone(),
                    numa_node: g.numa_node,
                    nvlink_domain: domains.get(&g.address).copied(),
                    memory_mib: match (d, model) {
                        (Some(d), _) if d.memory_mib > 0 => d.memory_mib,
                        (_, Some(m)) => u64::from(m.spec().memory_gib) * 1024,
                        _ => 0,
                    },
                    healthy: health_reason.is_empty(),
                    health_reason,
                    mig_enabled: d.is_some_and(|d| d.mig_enabled),
                    ecc_enabled: d.and_then(|d| d.ecc_enabled),
                    kernel_driver: g.driver.clone(),
                }
            })
            .collect();
        if known != before {
            if let Some(p) = &uuid_file {
                let tmp = p.with_extension("tmp");
                let text = serde_json::to_string_pretty(&known).unwrap_or_default();
                if let Err(e) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, p)) {
                    tracing::warn!(file = %p.display(), error = %e, "could not remember GPU identities");
                }
            }
        }
        out
    }
}

impl Inventory for LocalInventory {
    fn collect(&self) -> HostInventory {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
        let mem = self.mem_total_mib();
        let offered_mem = mem.saturating_sub(self.reserved_mib.min(mem / 4));
        let pci = scan_pci_gpus(&self.sysfs);
        let gpus = self.gpus(&pci);
        let hostname = read_trim(&self.procfs.join("sys/kernel/hostname"))
            .unwrap_or_else(|| "localhost".into());
        let mut details = self.details.clone();
        if let serde_json::Value::Object(m) = &mut details {
            m.insert("cpu_model".into(), self.cpu_model().into());
            m.insert("memory_total_mib".into(), mem.into());
            m.insert("numa_nodes".into(), numa_nodes(&self.sysfs).into());
            if let Some(cell) = &self.vm_accel {
                m.insert(
                    "vm_acceleration".into(),
                    match cell.get() {
                        Some(v) => serde_json::json!({ "accel": v.accel, "why": v.why }),
                        None => serde_json::json!({ "accel": "probing", "why": "the KVM probe is running" }),
                    },
                );
            }
            m.insert(
                "gpu_note".into(),
                if gpus.is_empty() {
                    "no NVIDIA GPU (vendor 0x10de, class 0x0300/0x0302) found in sysfs".into()
                } else {
                    format!("{} NVIDIA GPU(s) found in sysfs", gpus.len()).into()
                },
            );
            match self.gpu_monitor.as_ref().map(|g| g.driver().info()) {
                Some(Ok(info)) => {
                    m.insert(
                        "gpu_driver".into(),
                        serde_json::to_value(info).unwrap_or_default(),
                    );
                }
                Some(Err(why)) => {
                    m.insert("gpu_driver".into(), format!("unavailable: {why}").into());
                }
                None => {}
            }
        }
        HostInventory {
            host_id: self.host_id.clone(),
            hostname: hostname.clone(),
            zone: self.zone.clone(),
            kind: HostKind::Real,
            cpu_total: cpus,
            mem_total_mib: offered_mem,
            runtimes: self.runtimes.clone(),
            rack: format!("{}-rack-local", self.zone),
            switch: format!("{}-sw-local", self.zone),
            gpus,
            details,
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            gpu_passthrough: self.gpu_passthrough,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_device(root: &Path, addr: &str, vendor: &str, device: &str, class: &str, numa: &str) {
        let d = root.join("bus/pci/devices").join(addr);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("vendor"), format!("{vendor}\n")).unwrap();
        std::fs::write(d.join("device"), format!("{device}\n")).unwrap();
        std::fs::write(d.join("class"), format!("{class}\n")).unwrap();
        std::fs::write(d.join("numa_node"), format!("{numa}\n")).unwrap();
    }

    #[test]
    fn finds_nvidia_display_and_3d_controllers_only() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        fake_device(r, "0000:18:00.0", "0x10de", "0x2330", "0x030200", "0");
        fake_device(r, "0000:9a:00.0", "0x10de", "0x2330", "0x030200", "1");
        fake_device(r, "0000:3b:00.0", "0x10de", "0x1eb8", "0x030000", "-1");
        fake_device(r, "0000:3b:00.1", "0x10de", "0x10f8", "0x040300", "0"); // HDMI audio
        fake_device(r, "0000:00:1f.0", "0x8086", "0xa1c8", "0x060100", "0"); // chipset
        let gpus = scan_pci_gpus(r);
        assert_eq!(
            gpus.iter().map(|g| g.address.as_str()).collect::<Vec<_>>(),
            vec!["0000:18:00.0", "0000:3b:00.0", "0000:9a:00.0"]
        );
        assert_eq!(gpus[1].numa_node, 0, "-1 means no NUMA information");
        assert_eq!(gpus[2].numa_node, 1);
        let inv = LocalInventory {
            host_id: "host-aaaaaaaa".into(),
            zone: "ap-guangzhou-3".into(),
            sysfs: r.to_path_buf(),
            procfs: r.join("proc"),
            runtimes: vec![],
            reserved_mib: 1024,
            details: serde_json::json!({}),
            gpu_monitor: None,
            state_dir: None,
            vm_accel: None,
            gpu_passthrough: false,
        }
        .collect();
        assert_eq!(inv.gpus.len(), 3);
        assert_eq!(inv.gpus[0].model, "H100");
        assert_eq!(inv.gpus[1].model, "T4");
        assert_eq!(inv.gpus[0].uuid, inv.gpus[0].uuid.clone());
        assert!(inv.gpus.iter().all(|g| g.healthy));
    }

    #[test]
    fn the_driver_enriches_sysfs_and_health_follows_xids() {
        use crate::nvml::{DriverInfo, FakeDriver, GpuSample};
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path().join("sys");
        // Two SXM H100s on an NVSwitch board, an H100 PCIe the table does not
        // list by ID (0x2331), and a GPU bound to vfio-pci the driver cannot see.
        fake_device(&r, "0000:18:00.0", "0x10de", "0x2330", "0x030200", "0");
        fake_device(&r, "0000:2a:00.0", "0x10de", "0x2330", "0x030200", "0");
        fake_device(&r, "0000:3b:00.0", "0x10de", "0x2331", "0x030200", "1");
        fake_device(&r, "0000:9a:00.0", "0x10de", "0x2330", "0x030200", "1");
        let drv = Arc::new(FakeDriver::default());
        *drv.info.lock().unwrap() = Some(Ok(DriverInfo {
            driver_version: "580.159.04".into(),
            nvml_version: "13.580".into(),
            cuda_version: "13.0".into(),
        }));
        let dg = |pci: &str, uuid: &str, name: &str, sw: bool, mig: bool| DriverGpu {
            pci_address: pci.into(),
            uuid: uuid.into(),
            name: name.into(),
            memory_mib: 81_559,
            minor: Some(0),
            mig_enabled: mig,
            ecc_enabled: Some(true),
            nvlink_gpu_peers: vec![],
            nvswitch: sw,
        };
        *drv.gpus.lock().unwrap() = vec![
            dg(
                "0000:18:00.0",
                "GPU-aaaa",
                "NVIDIA H100 80GB HBM3",
                true,
                false,
            ),
            dg(
                "0000:2a:00.0",
                "GPU-bbbb",
                "NVIDIA H100 80GB HBM3",
                true,
                false,
            ),
            dg("0000:3b:00.0", "GPU-cccc", "NVIDIA H100 PCIe", false, true),
        ];
        *drv.samples.lock().unwrap() = ["0000:18:00.0", "0000:2a:00.0", "0000:3b:00.0"]
            .iter()
            .map(|p| GpuSample {
                pci_address: p.to_string(),
                temperature_c: Some(40),
                slowdown_c: Some(87),
                ..Default::default()
            })
            .collect();
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        let monitor = Arc::new(GpuMonitor::new(
            drv.clone(),
            Some(state.join("gpu-fences.json")),
        ));
        let inv = LocalInventory {
            host_id: "host-aaaaaaaa".into(),
            zone: "ap-guangzhou-3".into(),
            sysfs: r.clone(),
            procfs: dir.path().join("proc"),
            runtimes: vec![],
            reserved_mib: 1024,
            details: serde_json::json!({}),
            gpu_monitor: Some(monitor),
            state_dir: Some(state.clone()),
            vm_accel: None,
            gpu_passthrough: false,
        };
        let got = inv.collect();
        let g = &got.gpus;
        assert_eq!(g.len(), 4);
        assert_eq!(
            (g[0].uuid.as_str(), g[1].uuid.as_str(), g[2].uuid.as_str()),
            ("GPU-aaaa", "GPU-bbbb", "GPU-cccc")
        );
        assert!(
            g[3].uuid.starts_with("GPU-") && g[3].uuid.len() == 40,
            "derived for the vfio GPU"
        );
        assert_eq!(g[0].nvlink_domain, g[1].nvlink_domain);
        assert!(g[0].nvlink_domain.is_some() && g[2].nvlink_domain.is_none());
        assert_eq!(g[2].model, "H100", "found by the driver's name");
        assert_eq!(g[0].memory_mib, 81_559, "the driver's figure");
        assert!(
            !g[2].healthy && g[2].health_reason.contains("MIG"),
            "{:?}",
            g[2]
        );
        assert!(g[0].healthy && g[1].healthy && g[3].healthy);
        assert_eq!(got.details["gpu_driver"]["driver_version"], "580.159.04");

        // An application XID changes nothing; XID 48 fences, across restarts.
        drv.xids.lock().unwrap().push(("0000:18:00.0".into(), 13));
        assert!(inv.collect().gpus[0].healthy);
        drv.xids.lock().unwrap().push(("0000:2a:00.0".into(), 48));
        let after = inv.collect();
        assert!(!after.gpus[1].healthy);
        assert!(after.gpus[1]
            .health_reason
            .contains("XID 48 (double-bit ECC error)"));

        // The driver goes away (GPUs moved to vfio-pci): same identities.
        drv.gpus.lock().unwrap().clear();
        drv.samples.lock().unwrap().clear();
        let restarted = LocalInventory {
            gpu_monitor: Some(Arc::new(GpuMonitor::new(
                drv,
                Some(state.join("gpu-fences.json")),
            ))),
            ..inv.clone()
        }
        .collect();
        let ids: Vec<&str> = restarted.gpus.iter().map(|g| g.uuid.as_str()).collect();
        assert_eq!(ids[..3], ["GPU-aaaa", "GPU-bbbb", "GPU-cccc"]);
        assert!(!restarted.gpus[1].healthy, "the fence outlives the agent");
    }

    #[test]
    fn numa_nodes_from_sysfs() {
        let dir = tempfile::tempdir().unwrap();
        for (n, cpus, kb) in [(1, "48-95", 263_000_000u64), (0, "0-47", 264_000_000)] {
            let d = dir.path().join(format!("devices/system/node/node{n}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("cpulist"), format!("{cpus}\n")).unwrap();
            std::fs::write(
                d.join("meminfo"),
                format!("Node {n} MemTotal:       {kb} kB\n"),
            )
            .unwrap();
        }
        let nodes = numa_nodes(dir.path());
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[0]["cpus"], "0-47");
        assert_eq!(nodes[1]["memory_mib"], 263_000_000 / 1024);
    }

    #[test]
    fn no_sysfs_no_gpus() {
        assert!(scan_pci_gpus(Path::new("/nonexistent")).is_empty());
    }
}
