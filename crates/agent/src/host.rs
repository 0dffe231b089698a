//! Assembling the agent of a real machine: its inventory and the runtimes it
//! can offer, each probed rather than assumed. A runtime that cannot work here
//! is left out and the reason goes into the host's details, so operators see
//! (`gpucloud admin hosts`, `gpucloud doctor`) why a host offers what it offers.

use crate::container::{self, ContainerConfig, ContainerRuntime};
use crate::gpu::NvidiaDevices;
use crate::inventory::LocalInventory;
use crate::nvml::{GpuDriver, GpuMonitor, Nvml};
use crate::qemu::{AccelChoice, QemuConfig, QemuRuntime};
use crate::runtime::Runtime;
use gpucloud_agent_api::RuntimeKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How to set up the agent of this machine.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Where the agent keeps its state (host ID, credentials, bundles).
    pub state_dir: PathBuf,
    /// Where image files are found (image locations are relative to it).
    pub images_dir: PathBuf,
    /// Zone the host serves (empty: the server's default zone).
    pub zone: String,
    /// The OCI runtime binary; `None` picks `crun` or `runc` from the usual places.
    pub container_runtime: Option<PathBuf>,
    /// Offer no instance runtime at all (inventory only).
    pub no_runtimes: bool,
    /// Memory kept back for the host itself, MiB.
    pub reserved_mib: u64,
    /// NVML library to load (`None`: `libnvidia-ml.so.1` from the loader path).
    pub nvml_lib: Option<PathBuf>,
    /// VM acceleration: KVM when it works (`Auto`), or forced.
    pub vm_accel: AccelChoice,
}

/// The agent's parts for this machine.
pub struct LocalHost {
    /// Inventory.
    pub inventory: Arc<LocalInventory>,
    /// Runtimes that work here.
    pub runtimes: Vec<Arc<dyn Runtime>>,
    /// GPU driver, health and telemetry.
    pub gpu_monitor: Arc<GpuMonitor>,
}

fn find_bin(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            [
                "/usr/sbin",
                "/usr/bin",
                "/sbin",
                "/bin",
                "/usr/local/bin",
                "/usr/local/sbin",
            ]
            .map(PathBuf::from),
        )
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Whether the cgroup hierarchy is cgroup v2 only ("unified").
pub fn cgroup_v2_unified(sysfs: &Path) -> bool {
    sysfs.join("fs/cgroup/cgroup.controllers").exists()
}

/// The OCI runtime to use: `crun` where cgroup v2 is unified and crun is
/// installed, else `runc`.
pub fn pick_oci_runtime(sysfs: &Path) -> Option<PathBuf> {
    let crun = find_bin("crun");
    let runc = find_bin("runc");
    if cgroup_v2_unified(sysfs) {
        crun.or(runc)
    } else {
        runc.or(crun)
    }
}

fn version_of(bin: &Path) -> String {
    std::process::Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_default()
}

impl LocalHost {
    /// Probes this machine and builds the agent's parts.
    pub fn probe(cfg: &HostConfig) -> std::io::Result<Self> {
        let host_id = LocalInventory::host_id_in(&cfg.state_dir)?;
        let driver: Arc<dyn GpuDriver> =
            Arc::new(Nvml::load(cfg.nvml_lib.as_deref().map(|p| p.as_os_str())));
        let monitor = Arc::new(GpuMonitor::new(
            driver,
            Some(cfg.state_dir.join("gpu-fences.json")),
        ));
        let sysfs = PathBuf::from("/sys");
        let mut runtimes: Vec<Arc<dyn Runtime>> = Vec::new();
        let mut kinds = Vec::new();
        let mut notes = serde_json::Map::new();
        let bin = cfg
            .container_runtime
            .clone()
            .or_else(|| pick_oci_runtime(&sysfs));
        let container_note = if cfg.no_runtimes {
            "disabled (--no-runtimes)".to_string()
        } else {
            match &bin {
                None => "no OCI runtime found (apt-get install runc)".to_string(),
                Some(b) => match container::available(b) {
                    Ok(()) => {
                        let rt = ContainerRuntime::new(
                            ContainerConfig {
                                runtime_bin: b.clone(),
                                state_dir: cfg.state_dir.join("container"),
                                images_dir: cfg.images_dir.clone(),
                                host_cpus: std::thread::available_parallelism()
                                    .map_or(1, |n| n.get() as u32),
                                stop_grace: Duration::from_secs(10),
                            },
                            Arc::new(NvidiaDevices::default()),
                        );
                        runtimes.push(Arc::new(rt));
                        kinds.push(RuntimeKind::Container);
                        format!(
                            "available: {} ({}, cgroup {})",
                            b.display(),
                            version_of(b),
                            if cgroup_v2_unified(&sysfs) {
                                "v2"
                            } else {
                                "v1/hybrid"
                            }
                        )
                    }
                    Err(why) => why,
                },
            }
        };
        if !kinds.contains(&RuntimeKind::Container) {
            runtimes.push(Arc::new(crate::runtime::Unavailable::new(
                RuntimeKind::Container,
                ContainerRuntime::instances_dir(&cfg.state_dir.join("container")),
                container_note.clone(),
            )));
        }
        notes.insert("container".into(), container_note.into());
        let mut qemu_rt = None;
        let qemu_note = if cfg.no_runtimes {
            "disabled (--no-runtimes)".to_string()
        } else {
            let bins = (
                find_bin("qemu-system-x86_64"),
                find_bin("qemu-img"),
                find_bin("genisoimage"),
            );
            let missing = |p: &Option<PathBuf>, name: &str| {
                p.clone()
                    .unwrap_or_else(|| PathBuf::from(format!("/usr/bin/{name}")))
            };
            let (q, img, iso) = (
                missing(&bins.0, "qemu-system-x86_64"),
                missing(&bins.1, "qemu-img"),
                missing(&bins.2, "genisoimage"),
            );
            let root = container::running_as_root();
            match crate::qemu::available(&q, &img, &iso) {
                Ok(_) if !root => "needs root (tap devices, network namespaces)".to_string(),
                Ok(version) => {
                    let rt = Arc::new(QemuRuntime::new(
                        QemuConfig {
                            qemu_bin: q,
                            qemu_img: img,
                            iso_bin: iso,
                            state_dir: cfg.state_dir.join("qemu"),
                            images_dir: cfg.images_dir.clone(),
                            accel: cfg.vm_accel,
                            boot_timeout: Duration::from_secs(180),
                            // A soft stop waits this long for the guest: a full
                            // distribution under TCG on a busy host needs more than a minute.
                            stop_timeout: Duration::from_secs(120),
                        },
                        crate::vfio::Vfio::host(),
                    ));
                    kinds.push(RuntimeKind::Qemu);
                    runtimes.push(rt.clone());
                    qemu_rt = Some(rt);
                    format!("available: {version}")
                }
                Err(why) => why,
            }
        };
        if qemu_rt.is_none() {
            runtimes.push(Arc::new(crate::runtime::Unavailable::new(
                RuntimeKind::Qemu,
                QemuRuntime::instances_dir(&cfg.state_dir.join("qemu")),
                qemu_note.clone(),
            )));
        }
        notes.insert("qemu".into(), qemu_note.into());
        // GPU passthrough needs VMs and a usable IOMMU with vfio-pci.
        let passthrough = match (&qemu_rt, crate::vfio::Vfio::host().available()) {
            (None, _) => Err("no VMs on this host (see qemu)".to_string()),
            (Some(_), Err(e)) => Err(e.to_string()),
            (Some(_), Ok(())) => Ok(()),
        };
        notes.insert(
            "gpu_passthrough".into(),
            match &passthrough {
                Ok(()) => "available (IOMMU and vfio-pci)".to_string(),
                Err(why) => format!("unavailable: {why}"),
            }
            .into(),
        );
        Ok(Self {
            inventory: Arc::new(LocalInventory {
                host_id,
                zone: cfg.zone.clone(),
                sysfs,
                procfs: "/proc".into(),
                runtimes: kinds,
                reserved_mib: cfg.reserved_mib,
                details: serde_json::json!({ "runtimes": notes }),
                vm_accel: qemu_rt.map(|q| q.verdict_cell()),
                gpu_passthrough: passthrough.is_ok(),
                gpu_monitor: Some(monitor.clone()),
                state_dir: Some(cfg.state_dir.clone()),
            }),
            gpu_monitor: monitor,
            runtimes,
        })
    }
}
