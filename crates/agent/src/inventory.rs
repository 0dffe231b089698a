//! What a host has: CPUs, memory, GPUs.
//!
//! The real inventory reads `/proc` and scans PCI devices in sysfs for NVIDIA
//! GPUs (vendor `0x10de`, class `0x0300` or `0x0302`) — a GPU bound to
//! `vfio-pci` for passthrough is invisible to the driver, so sysfs, not the
//! driver, is the source of truth for what exists. The sysfs root is a
//! parameter so tests run against a fake tree.

use gpucloud_agent_api::{GpuInventory, HostInventory, HostKind, RuntimeKind};
use gpucloud_core::gpu::GpuModel;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

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

impl Inventory for LocalInventory {
    fn collect(&self) -> HostInventory {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
        let mem = self.mem_total_mib();
        let offered_mem = mem.saturating_sub(self.reserved_mib.min(mem / 4));
        let pci = scan_pci_gpus(&self.sysfs);
        let gpus: Vec<GpuInventory> = pci
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let model = GpuModel::from_pci_device(g.device_id);
                GpuInventory {
                    // Without the driver the UUID is unknown; derive a stable one
                    // from host and PCI address until the driver tells the real one.
                    uuid: {
                        let h = hex::encode(Sha256::digest(
                            format!("{}/{}", self.host_id, g.address).as_bytes(),
                        ));
                        format!(
                            "GPU-{}-{}-{}-{}-{}",
                            &h[0..8],
                            &h[8..12],
                            &h[12..16],
                            &h[16..20],
                            &h[20..32]
                        )
                    },
                    index: i as u32,
                    model: model.map_or("unknown".into(), |m| m.spec().key.to_string()),
                    name: model.map_or(format!("NVIDIA device {:04x}", g.device_id), |m| {
                        m.spec().name.to_string()
                    }),
                    pci_address: g.address.clone(),
                    numa_node: g.numa_node,
                    nvlink_domain: None,
                    memory_mib: model.map_or(0, |m| u64::from(m.spec().memory_gib) * 1024),
                    healthy: model.is_some(),
                    health_reason: if model.is_some() {
                        String::new()
                    } else {
                        format!("unknown GPU model (PCI device {:04x})", g.device_id)
                    },
                }
            })
            .collect();
        let hostname = read_trim(&self.procfs.join("sys/kernel/hostname"))
            .unwrap_or_else(|| "localhost".into());
        let mut details = self.details.clone();
        if let serde_json::Value::Object(m) = &mut details {
            m.insert("cpu_model".into(), self.cpu_model().into());
            m.insert("memory_total_mib".into(), mem.into());
            m.insert(
                "gpu_note".into(),
                if gpus.is_empty() {
                    "no NVIDIA GPU (vendor 0x10de, class 0x0300/0x0302) found in sysfs".into()
                } else {
                    format!("{} NVIDIA GPU(s) found in sysfs", gpus.len()).into()
                },
            );
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
        }
        .collect();
        assert_eq!(inv.gpus.len(), 3);
        assert_eq!(inv.gpus[0].model, "H100");
        assert_eq!(inv.gpus[1].model, "T4");
        assert_eq!(inv.gpus[0].uuid, inv.gpus[0].uuid.clone());
        assert!(inv.gpus.iter().all(|g| g.healthy));
    }

    #[test]
    fn no_sysfs_no_gpus() {
        assert!(scan_pci_gpus(Path::new("/nonexistent")).is_empty());
    }
}
