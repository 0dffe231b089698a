//! GPU passthrough to QEMU virtual machines through VFIO.
//!
//! # What the kernel needs
//! A device can be given to a guest only together with everything the IOMMU
//! cannot tell apart from it: its *IOMMU group*
//! (`/sys/bus/pci/devices/<addr>/iommu_group` → `/sys/kernel/iommu_groups/<n>`).
//! VFIO opens a group (`/dev/vfio/<n>`) only when every endpoint in it is
//! bound to a VFIO driver or to none; PCIe bridges are allowed to stay with
//! their driver. So for every assigned GPU, [`Vfio::prepare`] binds every
//! endpoint function of the GPU's group to `vfio-pci`, with the usual sysfs
//! steps: write `vfio-pci` to `driver_override` (first, so nothing can
//! bind the native driver back in between), write the address to
//! `driver/unbind`, write it to `bus/pci/drivers_probe`, then read the
//! `driver` link back to verify.
//!
//! # What may be in a group
//! Taking a device from the host is the one dangerous thing this module does,
//! so the whole plan is made — and refused — before anything is written:
//! - bridges (class `0x0604`) are skipped;
//! - functions in the same slot as an assigned GPU (`dddd:bb:dd`: its HDMI
//!   audio, on some boards a USB-C controller) are part of the card and go
//!   to the guest with it;
//! - another GPU is refused unless it is assigned too: binding it would take
//!   a GPU the scheduler may give to someone else;
//! - an audio function elsewhere (`0x0403`) is bound (the group needs it) but
//!   not given to the guest;
//! - anything else already on `vfio-pci` is left alone;
//! - anything else (a NIC, a disk controller …) refuses the whole request.
//!
//! If a step fails halfway, everything this call changed is given back before
//! the error returns. [`Vfio::release`] gives every recorded device back:
//! unbind from `vfio-pci`, clear `driver_override`, `drivers_probe`, so the
//! kernel picks the native driver again; a driver that does not come back is
//! logged, not fatal. Both are idempotent and work from what sysfs shows now,
//! so an agent that crashed midway just calls them again; the [`Assignment`]
//! persisted by the earlier run supplies the original drivers of devices
//! already found on `vfio-pci`.
//!
//! # The 64-bit MMIO window
//! Data-centre GPUs have huge 64-bit prefetchable BARs (H100 and A100 80GB:
//! BAR1 128 GiB). QEMU's q35 default window for 64-bit BARs is far smaller,
//! and firmware that cannot place a BAR leaves the GPU unusable in the guest.
//! Each GPU sits behind its own PCIe root port, whose prefetchable window
//! holds that GPU's 64-bit prefetchable BARs and is aligned to the largest of
//! them; windows are placed largest alignment first, the way OVMF and Linux
//! allocate. [`mmio64_need`] computes the end of that layout (stored as
//! [`Assignment::mmio64_bytes`]); [`mmio64_window_gib`] adds 1 GiB for
//! emulated devices, rounds up to a power of two (firmware aligns the window
//! to its size, so a power-of-two window holds any such layout) and takes at
//! least 32 GiB. 8 × H100 need 1920 GiB + 32 MiB → a 2048 GiB window.
//! 64-bit non-prefetchable BARs are not counted: behind a bridge they must
//! live in the 32-bit window.
//!
//! The sysfs side is a trait, [`PciSysfs`]: [`RealSysfs`] reads and writes
//! `/sys`; [`fake::FakeSysfs`] is a directory tree that also plays the
//! kernel's part, for tests here and elsewhere.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The VFIO PCI driver's name.
pub const VFIO_DRIVER: &str = "vfio-pci";
/// Smallest 64-bit MMIO window given to a VM with GPUs, GiB.
pub const MIN_MMIO64_GIB: u64 = 32;
/// Room left in the 64-bit window for emulated devices, bytes.
pub const MMIO64_HEADROOM_BYTES: u64 = GIB;
/// Chassis number of the first GPU root port; GPU `i` gets `BASE + i` (and
/// the same slot number), leaving lower numbers to other root ports.
pub const ROOT_PORT_CHASSIS_BASE: usize = 16;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

const CLASS_VGA: u32 = 0x0300;
const CLASS_3D: u32 = 0x0302;
const CLASS_AUDIO: u32 = 0x0403;
const CLASS_PCI_BRIDGE: u32 = 0x0604;

const IORESOURCE_MEM: u64 = 0x0000_0200;
const IORESOURCE_PREFETCH: u64 = 0x0000_2000;
const IORESOURCE_MEM_64: u64 = 0x0010_0000;

/// The sysfs operations passthrough needs. Paths are relative to the sysfs
/// root (`bus/pci/devices/0000:18:00.0/class`).
pub trait PciSysfs: Send + Sync {
    /// Reads a file.
    fn read(&self, rel: &Path) -> io::Result<String>;
    /// Writes `value` to an existing file in one write (sysfs attributes act
    /// on each write).
    fn write(&self, rel: &Path, value: &str) -> io::Result<()>;
    /// Reads a symbolic link.
    fn read_link(&self, rel: &Path) -> io::Result<PathBuf>;
    /// Names in a directory, sorted.
    fn list(&self, rel: &Path) -> io::Result<Vec<String>>;
    /// Whether the path exists (following links).
    fn exists(&self, rel: &Path) -> bool;
}

/// The real sysfs.
#[derive(Debug, Clone)]
pub struct RealSysfs {
    /// The sysfs root, `/sys`.
    pub root: PathBuf,
}

impl Default for RealSysfs {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/sys"),
        }
    }
}

impl RealSysfs {
    fn path(&self, rel: &Path) -> PathBuf {
        // A leading `/` would make join replace the root.
        self.root.join(rel.strip_prefix("/").unwrap_or(rel))
    }
}

impl PciSysfs for RealSysfs {
    fn read(&self, rel: &Path) -> io::Result<String> {
        std::fs::read_to_string(self.path(rel))
    }

    fn write(&self, rel: &Path, value: &str) -> io::Result<()> {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(self.path(rel))?;
        f.write_all(value.as_bytes())
    }

    fn read_link(&self, rel: &Path) -> io::Result<PathBuf> {
        std::fs::read_link(self.path(rel))
    }

    fn list(&self, rel: &Path) -> io::Result<Vec<String>> {
        list_dir(&self.path(rel))
    }

    fn exists(&self, rel: &Path) -> bool {
        self.path(rel).exists()
    }
}

fn list_dir(p: &Path) -> io::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(p)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<io::Result<_>>()?;
    names.sort();
    Ok(names)
}

/// One device bound to vfio-pci for an instance, with the driver to give it
/// back to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundDevice {
    /// PCI address, `0000:18:00.1`.
    pub address: String,
    /// PCI class code (`0x040300` for HDMI audio).
    pub class: u32,
    /// The driver it had before (`nvidia`, `snd_hda_intel`); `None` when it
    /// had none or it was already on vfio-pci with no earlier record.
    pub original_driver: Option<String>,
    /// Its IOMMU group.
    pub iommu_group: u32,
    /// Address of the assigned GPU this function belongs to.
    pub gpu: String,
}

/// Everything bound for one instance (the agent persists it as JSON next to
/// the VM so release works after a crash).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The assigned GPUs, normalised (`0000:18:00.0`), in request order.
    pub gpus: Vec<String>,
    /// Every device bound to vfio-pci, in binding order.
    pub devices: Vec<BoundDevice>,
    /// Bytes the guest-visible devices need in the 64-bit MMIO window
    /// ([`mmio64_need`]); the window itself is [`mmio64_window_gib`] of it.
    pub mmio64_bytes: u64,
}

/// Why passthrough could not be set up or undone. The messages say what to
/// do about it.
#[derive(Debug, thiserror::Error)]
pub enum VfioError {
    /// No IOMMU groups exist.
    #[error(
        "no IOMMU groups on this host: the IOMMU is off or absent; enable VT-d/AMD-Vi in the firmware and boot with intel_iommu=on iommu=pt (or amd_iommu=on)"
    )]
    NoIommu,
    /// The vfio-pci driver is not loaded.
    #[error(
        "the vfio-pci driver is not loaded: modprobe vfio-pci (and list it in /etc/modules-load.d so it is loaded at boot)"
    )]
    VfioNotLoaded,
    /// The VFIO container device is missing.
    #[error("{} does not exist: modprobe vfio-pci (it loads vfio, which creates it)", .path.display())]
    NoVfioContainer {
        /// The missing path (`/dev/vfio/vfio`).
        path: PathBuf,
    },
    /// A GPU address is malformed.
    #[error(
        "`{address}` is not a PCI address (expected domain:bus:slot.function, e.g. 0000:18:00.0)"
    )]
    InvalidAddress {
        /// What was given.
        address: String,
    },
    /// No such PCI device.
    #[error(
        "there is no PCI device {address} on this host (lspci -D lists them): the instance's GPU assignment does not match the host's inventory"
    )]
    NoSuchDevice {
        /// The address.
        address: String,
    },
    /// The device is not a display or 3D controller.
    #[error("{address} is not a GPU (class {class:#08x}); only display and 3D controllers are assigned as GPUs")]
    NotAGpu {
        /// The address.
        address: String,
        /// Its class code.
        class: u32,
    },
    /// The GPU is in no IOMMU group.
    #[error(
        "GPU {address} is in no IOMMU group: the IOMMU is off for it; enable VT-d/AMD-Vi and boot with intel_iommu=on iommu=pt (or amd_iommu=on)"
    )]
    NoIommuGroup {
        /// The GPU.
        address: String,
    },
    /// The group holds a device that must not leave the host.
    #[error(
        "IOMMU group {group} (of GPU {gpu}) also holds {address} (class {class:#08x}, driver {}); it cannot be passed through safely: fix the platform's ACS/slot layout",
        .driver.as_deref().unwrap_or("none")
    )]
    ForeignDevice {
        /// The group.
        group: u32,
        /// The assigned GPU whose group it is.
        gpu: String,
        /// The device that would be taken.
        address: String,
        /// Its class code.
        class: u32,
        /// Its driver now.
        driver: Option<String>,
    },
    /// The group holds another GPU that is not assigned.
    #[error(
        "IOMMU group {group} (of GPU {gpu}) also holds GPU {address}, which is not assigned to this instance; GPUs sharing an IOMMU group can only be assigned together (or fix the platform's ACS/slot layout)"
    )]
    SharedGroup {
        /// The group.
        group: u32,
        /// The assigned GPU.
        gpu: String,
        /// The other GPU.
        address: String,
    },
    /// The device did not end up on vfio-pci.
    #[error(
        "{address} did not bind to vfio-pci (its driver is now {}); see dmesg, check that vfio-pci is loaded (modprobe vfio-pci) and that nothing else claims the device",
        .driver.as_deref().unwrap_or("none")
    )]
    BindFailed {
        /// The device.
        address: String,
        /// Its driver after the attempt.
        driver: Option<String>,
    },
    /// `/dev/vfio/<group>` did not appear.
    #[error(
        "{} did not appear after binding IOMMU group {group} to vfio-pci; see dmesg (every endpoint of the group must be on vfio-pci)",
        .path.display()
    )]
    NoGroupDevice {
        /// The group.
        group: u32,
        /// The missing device node.
        path: PathBuf,
    },
    /// A sysfs read or write failed.
    #[error("sysfs {what}: {source}{}", permission_hint(source))]
    Sysfs {
        /// The path, and the value for writes.
        what: String,
        /// The error.
        source: io::Error,
    },
    /// Some devices could not be given back.
    #[error("giving devices back to their drivers failed: {}", .failures.join("; "))]
    Release {
        /// One line per device.
        failures: Vec<String>,
    },
    /// Preparing failed, and so did undoing what it had done.
    #[error(
        "{cause}; undoing the binding also failed ({}): release the instance's assignment again, or reboot the host",
        .failures.join("; ")
    )]
    RollbackFailed {
        /// Why preparing failed.
        cause: Box<VfioError>,
        /// One line per device not given back.
        failures: Vec<String>,
    },
}

fn permission_hint(e: &io::Error) -> &'static str {
    if e.kind() == io::ErrorKind::PermissionDenied {
        " (binding devices needs root)"
    } else {
        ""
    }
}

/// Binds GPUs (with their IOMMU groups) to vfio-pci and gives them back.
pub struct Vfio {
    sysfs: Arc<dyn PciSysfs>,
    dev_root: PathBuf,
}

impl std::fmt::Debug for Vfio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vfio")
            .field("dev_root", &self.dev_root)
            .finish_non_exhaustive()
    }
}

/// A device the plan binds.
struct Planned {
    address: String,
    class: u32,
    driver: Option<String>,
    group: u32,
    gpu: String,
}

fn dev_file(address: &str, file: &str) -> PathBuf {
    Path::new("bus/pci/devices").join(address).join(file)
}

fn is_gpu(class: u32) -> bool {
    matches!(class >> 8, CLASS_VGA | CLASS_3D)
}

fn parse_hex(s: &str) -> Option<u64> {
    let s = s.trim();
    u64::from_str_radix(s.strip_prefix("0x").unwrap_or(s), 16).ok()
}

/// `0000:18:00.0` from `0000:18:00.0` or `18:00.0` (any case); `None` when
/// it is not a PCI address.
pub fn normalize_address(a: &str) -> Option<String> {
    let a = a.trim().to_ascii_lowercase();
    let full = if a.matches(':').count() == 1 {
        format!("0000:{a}")
    } else {
        a
    };
    let (domain, rest) = full.split_once(':')?;
    let (bus, rest) = rest.split_once(':')?;
    let (slot, func) = rest.split_once('.')?;
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let ok = hex(domain, 4)
        && hex(bus, 2)
        && hex(slot, 2)
        && u8::from_str_radix(slot, 16).is_ok_and(|s| s < 32)
        && func.len() == 1
        && matches!(func.as_bytes()[0], b'0'..=b'7');
    ok.then_some(full)
}

/// `0000:18:00` of `0000:18:00.1`.
fn slot_of(a: &str) -> &str {
    a.rsplit_once('.').map_or(a, |(s, _)| s)
}

fn function_of(a: &str) -> u8 {
    a.rsplit_once('.')
        .and_then(|(_, f)| f.parse().ok())
        .unwrap_or(0)
}

fn sysfs_err(rel: &Path, value: Option<&str>) -> impl FnOnce(io::Error) -> VfioError {
    let what = match value {
        Some(v) => format!("writing {:?} to {}", v, rel.display()),
        None => rel.display().to_string(),
    };
    move |source| VfioError::Sysfs { what, source }
}

impl Vfio {
    /// Passthrough over `sysfs`, with device nodes under `dev_root`
    /// (`/dev`).
    pub fn new(sysfs: Arc<dyn PciSysfs>, dev_root: PathBuf) -> Self {
        Self { sysfs, dev_root }
    }

    /// This host: `/sys` and `/dev`.
    pub fn host() -> Self {
        Self::new(Arc::new(RealSysfs::default()), PathBuf::from("/dev"))
    }

    /// Why passthrough cannot work on this host (no IOMMU groups, vfio-pci
    /// driver absent, /dev/vfio/vfio absent), or Ok.
    pub fn available(&self) -> Result<(), VfioError> {
        let groups = self
            .sysfs
            .list(Path::new("kernel/iommu_groups"))
            .unwrap_or_default();
        if groups.is_empty() {
            return Err(VfioError::NoIommu);
        }
        if !self
            .sysfs
            .exists(Path::new("bus/pci/drivers").join(VFIO_DRIVER).as_path())
        {
            return Err(VfioError::VfioNotLoaded);
        }
        let container = self.dev_root.join("vfio/vfio");
        if !container.exists() {
            return Err(VfioError::NoVfioContainer { path: container });
        }
        Ok(())
    }

    /// Binds every function of the GPUs' IOMMU groups to vfio-pci.
    /// `previous` = an assignment persisted by an earlier run (keeps
    /// original drivers).
    ///
    /// Nothing is written when the request is refused; when a step fails,
    /// what this call changed is given back before the error returns.
    /// Unbinding a GPU from `nvidia` blocks while a process holds it, so
    /// call this off the async runtime (`spawn_blocking`).
    pub fn prepare(
        &self,
        gpus: &[String],
        previous: Option<&Assignment>,
    ) -> Result<Assignment, VfioError> {
        let mut wanted: Vec<String> = Vec::new();
        for g in gpus {
            let a = normalize_address(g)
                .ok_or_else(|| VfioError::InvalidAddress { address: g.clone() })?;
            if !wanted.contains(&a) {
                wanted.push(a);
            }
        }
        if wanted.is_empty() {
            return Ok(Assignment::default());
        }
        self.available()?;
        for g in &wanted {
            if !self.sysfs.exists(&Path::new("bus/pci/devices").join(g)) {
                return Err(VfioError::NoSuchDevice { address: g.clone() });
            }
            let class = self.class(g)?;
            if !is_gpu(class) {
                return Err(VfioError::NotAGpu {
                    address: g.clone(),
                    class,
                });
            }
        }
        let plan = self.plan(&wanted)?;

        // The window the guest-visible functions need, per root port.
        let mut ports = Vec::new();
        for g in &wanted {
            let mut bars = Vec::new();
            for p in plan
                .iter()
                .filter(|p| p.gpu == *g && slot_of(&p.address) == slot_of(g))
            {
                let rel = dev_file(&p.address, "resource");
                let text = self.sysfs.read(&rel).map_err(sysfs_err(&rel, None))?;
                bars.extend(
                    parse_resource(&text)
                        .iter()
                        .filter(|b| b.is_mem64_prefetch())
                        .map(|b| b.size),
                );
            }
            ports.push(bars);
        }
        let mmio64_bytes = mmio64_need(&ports);

        let mut changed: Vec<BoundDevice> = Vec::new();
        let mut devices = Vec::new();
        for p in plan {
            let original_driver = match &p.driver {
                Some(d) if d != VFIO_DRIVER => Some(d.clone()),
                _ => previous
                    .and_then(|a| a.devices.iter().find(|d| d.address == p.address))
                    .and_then(|d| d.original_driver.clone()),
            };
            let dev = BoundDevice {
                address: p.address,
                class: p.class,
                original_driver,
                iommu_group: p.group,
                gpu: p.gpu,
            };
            if p.driver.as_deref() != Some(VFIO_DRIVER) {
                changed.push(dev.clone());
                if let Err(e) = self.bind(&dev.address) {
                    return Err(self.roll_back(e, &changed));
                }
                tracing::info!(device = %dev.address, group = dev.iommu_group, from = ?dev.original_driver, "bound to vfio-pci");
            }
            devices.push(dev);
        }
        let groups: BTreeSet<u32> = devices.iter().map(|d| d.iommu_group).collect();
        for group in groups {
            let path = self.dev_root.join("vfio").join(group.to_string());
            if !path.exists() {
                return Err(self.roll_back(VfioError::NoGroupDevice { group, path }, &changed));
            }
        }
        Ok(Assignment {
            gpus: wanted,
            devices,
            mmio64_bytes,
        })
    }

    /// Gives every device back to its original driver. Idempotent.
    ///
    /// Call it once QEMU has exited: unbinding a device a VM still holds
    /// blocks until the VM lets it go. A driver that does not come back is
    /// logged, not an error; failed sysfs writes are (after every device
    /// was tried).
    pub fn release(&self, a: &Assignment) -> Result<(), VfioError> {
        let failures = self.release_devices(&a.devices);
        if failures.is_empty() {
            Ok(())
        } else {
            Err(VfioError::Release { failures })
        }
    }

    /// Checks every group of the wanted GPUs and lists what to bind.
    fn plan(&self, wanted: &[String]) -> Result<Vec<Planned>, VfioError> {
        let mut plan = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        for g in wanted {
            let group = self.group(g)?;
            let rel = PathBuf::from(format!("kernel/iommu_groups/{group}/devices"));
            let members = self.sysfs.list(&rel).map_err(sysfs_err(&rel, None))?;
            for m in members {
                if seen.contains(&m) {
                    continue;
                }
                let Some(m) = normalize_address(&m) else {
                    return Err(VfioError::InvalidAddress { address: m });
                };
                let class = self.class(&m)?;
                let driver = self.driver(&m)?;
                let owner = wanted.iter().find(|w| slot_of(w) == slot_of(&m));
                let gpu = if class >> 8 == CLASS_PCI_BRIDGE {
                    None
                } else if let Some(owner) = owner {
                    Some(owner.clone())
                } else if is_gpu(class) {
                    return Err(VfioError::SharedGroup {
                        group,
                        gpu: g.clone(),
                        address: m,
                    });
                } else if class >> 8 == CLASS_AUDIO {
                    Some(g.clone())
                } else if driver.as_deref() == Some(VFIO_DRIVER) {
                    None
                } else {
                    return Err(VfioError::ForeignDevice {
                        group,
                        gpu: g.clone(),
                        address: m,
                        class,
                        driver,
                    });
                };
                seen.insert(m.clone());
                if let Some(gpu) = gpu {
                    plan.push(Planned {
                        address: m,
                        class,
                        driver,
                        group,
                        gpu,
                    });
                }
            }
        }
        Ok(plan)
    }

    fn bind(&self, address: &str) -> Result<(), VfioError> {
        self.write(&dev_file(address, "driver_override"), VFIO_DRIVER)?;
        if self.driver(address)?.is_some() {
            self.write(&dev_file(address, "driver/unbind"), address)?;
        }
        self.write(Path::new("bus/pci/drivers_probe"), address)?;
        match self.driver(address)? {
            Some(d) if d == VFIO_DRIVER => Ok(()),
            driver => Err(VfioError::BindFailed {
                address: address.to_string(),
                driver,
            }),
        }
    }

    fn roll_back(&self, cause: VfioError, changed: &[BoundDevice]) -> VfioError {
        tracing::warn!(error = %cause, devices = changed.len(), "GPU passthrough setup failed; giving devices back");
        let failures = self.release_devices(changed);
        if failures.is_empty() {
            cause
        } else {
            VfioError::RollbackFailed {
                cause: Box::new(cause),
                failures,
            }
        }
    }

    fn release_devices(&self, devices: &[BoundDevice]) -> Vec<String> {
        devices
            .iter()
            .rev()
            .filter_map(|d| {
                self.release_one(d)
                    .err()
                    .map(|e| format!("{}: {e}", d.address))
            })
            .collect()
    }

    fn release_one(&self, d: &BoundDevice) -> Result<(), VfioError> {
        let a = d.address.as_str();
        if normalize_address(a).as_deref() != Some(a) {
            return Err(VfioError::InvalidAddress {
                address: a.to_string(),
            });
        }
        if !self.sysfs.exists(&Path::new("bus/pci/devices").join(a)) {
            tracing::warn!(device = a, "device to give back is gone from the PCI bus");
            return Ok(());
        }
        let mut changed = false;
        if self.driver(a)?.as_deref() == Some(VFIO_DRIVER) {
            let unbind = Path::new("bus/pci/drivers")
                .join(VFIO_DRIVER)
                .join("unbind");
            self.write(&unbind, a)?;
            changed = true;
        }
        if self.driver_override(a)?.as_deref() == Some(VFIO_DRIVER) {
            self.write(&dev_file(a, "driver_override"), "\n")?;
            changed = true;
        }
        // Also after a crash between clearing and probing: no driver yet,
        // but one is expected.
        if self.driver(a)?.is_none() && (changed || d.original_driver.is_some()) {
            self.write(Path::new("bus/pci/drivers_probe"), a)?;
            let now = self.driver(a)?;
            match (&d.original_driver, &now) {
                (Some(want), Some(got)) if want == got => {
                    tracing::info!(device = a, driver = %got, "given back");
                }
                (Some(want), got) => tracing::warn!(
                    device = a,
                    expected = %want,
                    now = got.as_deref().unwrap_or("none"),
                    "device released from vfio-pci but its driver did not come back; load the driver (modprobe) or rescan"
                ),
                (None, got) => tracing::info!(
                    device = a,
                    driver = got.as_deref().unwrap_or("none"),
                    "released from vfio-pci"
                ),
            }
        }
        Ok(())
    }

    fn write(&self, rel: &Path, value: &str) -> Result<(), VfioError> {
        self.sysfs
            .write(rel, value)
            .map_err(sysfs_err(rel, Some(value)))
    }

    fn class(&self, address: &str) -> Result<u32, VfioError> {
        let rel = dev_file(address, "class");
        let text = self.sysfs.read(&rel).map_err(sysfs_err(&rel, None))?;
        parse_hex(&text)
            .map(|c| c as u32)
            .ok_or_else(|| VfioError::Sysfs {
                what: rel.display().to_string(),
                source: io::Error::new(io::ErrorKind::InvalidData, format!("bad class {text:?}")),
            })
    }

    fn driver(&self, address: &str) -> Result<Option<String>, VfioError> {
        let rel = dev_file(address, "driver");
        match self.sysfs.read_link(&rel) {
            Ok(l) => Ok(l.file_name().map(|f| f.to_string_lossy().into_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(sysfs_err(&rel, None)(e)),
        }
    }

    fn driver_override(&self, address: &str) -> Result<Option<String>, VfioError> {
        let rel = dev_file(address, "driver_override");
        match self.sysfs.read(&rel) {
            Ok(s) => {
                let s = s.trim();
                Ok((!s.is_empty() && s != "(null)").then(|| s.to_string()))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(sysfs_err(&rel, None)(e)),
        }
    }

    fn group(&self, address: &str) -> Result<u32, VfioError> {
        self.sysfs
            .read_link(&dev_file(address, "iommu_group"))
            .ok()
            .and_then(|l| l.file_name()?.to_str()?.parse().ok())
            .ok_or_else(|| VfioError::NoIommuGroup {
                address: address.to_string(),
            })
    }
}

/// A BAR from a sysfs `resource` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bar {
    /// BAR number, 0–5.
    pub index: usize,
    /// Size in bytes.
    pub size: u64,
    /// The kernel's `IORESOURCE_*` flags.
    pub flags: u64,
}

impl Bar {
    /// A 64-bit prefetchable memory BAR (the kind that lives in the 64-bit
    /// window).
    pub fn is_mem64_prefetch(&self) -> bool {
        let want = IORESOURCE_MEM | IORESOURCE_PREFETCH | IORESOURCE_MEM_64;
        self.flags & want == want
    }
}

/// The BARs (0–5, non-empty) in a sysfs `resource` file: one
/// `start end flags` line (hex) per resource; later lines (ROM, SR-IOV,
/// bridge windows) are not BARs.
pub fn parse_resource(text: &str) -> Vec<Bar> {
    text.lines()
        .take(6)
        .enumerate()
        .filter_map(|(index, line)| {
            let mut f = line.split_whitespace().map(parse_hex);
            let (start, end, flags) = (f.next()??, f.next()??, f.next()??);
            (end != 0 && end >= start).then(|| Bar {
                index,
                size: end - start + 1,
                flags,
            })
        })
        .collect()
}

fn align_up(x: u64, align: u64) -> u64 {
    let a = align.max(1).next_power_of_two();
    x.saturating_add(a - 1) & !(a - 1)
}

/// Bytes the 64-bit MMIO window must span for these root ports, each given
/// as the sizes of the 64-bit prefetchable BARs behind it: each port's
/// window packs its BARs largest first (1 MiB granularity) and is aligned to
/// its largest BAR; ports are placed largest alignment first from an aligned
/// base.
pub fn mmio64_need(root_ports: &[Vec<u64>]) -> u64 {
    let mut windows: Vec<(u64, u64)> = root_ports
        .iter()
        .filter(|bars| bars.iter().any(|b| *b > 0))
        .map(|bars| {
            let mut bars: Vec<u64> = bars.iter().copied().filter(|b| *b > 0).collect();
            bars.sort_unstable_by_key(|b| std::cmp::Reverse(*b));
            let size = bars
                .iter()
                .fold(0u64, |end, b| align_up(end, *b).saturating_add(*b));
            let align = bars[0].next_power_of_two().max(MIB);
            (align_up(size, MIB), align)
        })
        .collect();
    windows.sort_by_key(|w| std::cmp::Reverse(w.1));
    windows.iter().fold(0u64, |end, (size, align)| {
        align_up(end, *align).saturating_add(*size)
    })
}

/// The 64-bit MMIO window (`pci-hole64-size`) for a need of `need_bytes`,
/// GiB: the need plus [`MMIO64_HEADROOM_BYTES`], rounded up to a power of
/// two, at least [`MIN_MMIO64_GIB`].
pub fn mmio64_window_gib(need_bytes: u64) -> u64 {
    need_bytes
        .saturating_add(MMIO64_HEADROOM_BYTES)
        .div_ceil(GIB)
        .next_power_of_two()
        .max(MIN_MMIO64_GIB)
}

/// QEMU arguments for an assignment (machine global for the 64-bit window +
/// root ports + vfio-pci devices).
///
/// The window goes to q35 (`-global q35-pcihost.pci-hole64-size=<N>G`) and to
/// OVMF (`-fw_cfg name=opt/ovmf/X-PciMmio64Mb`, ignored by SeaBIOS); the
/// guest needs enough physical address bits for it (`-cpu host`). GPU `i`
/// gets root port `vfio-rp<i>` (chassis and slot
/// [`ROOT_PORT_CHASSIS_BASE`]` + i`) with the GPU as function 0 and the other
/// functions of its slot (HDMI audio) as functions 1…, `multifunction=on`
/// when there are several. Devices bound only to make the group viable are
/// not given to the guest. Empty when there are no GPUs.
pub fn qemu_args(a: &Assignment) -> Vec<String> {
    if a.gpus.is_empty() {
        return Vec::new();
    }
    let gib = mmio64_window_gib(a.mmio64_bytes);
    let mut args = vec![
        "-global".to_string(),
        format!("q35-pcihost.pci-hole64-size={gib}G"),
        "-fw_cfg".to_string(),
        format!("name=opt/ovmf/X-PciMmio64Mb,string={}", gib * 1024),
    ];
    for (i, gpu) in a.gpus.iter().enumerate() {
        let port = format!("vfio-rp{i}");
        let chassis = ROOT_PORT_CHASSIS_BASE + i;
        args.push("-device".into());
        args.push(format!(
            "pcie-root-port,id={port},chassis={chassis},slot={chassis},bus=pcie.0"
        ));
        let mut functions: Vec<&str> = a
            .devices
            .iter()
            .filter(|d| d.gpu == *gpu && slot_of(&d.address) == slot_of(gpu))
            .map(|d| d.address.as_str())
            .collect();
        if !functions.contains(&gpu.as_str()) {
            functions.push(gpu);
        }
        functions.sort_by_key(|f| (*f != gpu, function_of(f)));
        functions.dedup();
        let multi = functions.len() > 1;
        for (f, host) in functions.iter().enumerate() {
            let mut dev = if f == 0 {
                format!("vfio-pci,host={host},id=vfio-gpu{i},bus={port},addr=0x0.0")
            } else {
                format!("vfio-pci,host={host},id=vfio-gpu{i}-f{f},bus={port},addr=0x0.{f}")
            };
            if f == 0 {
                if multi {
                    dev.push_str(",multifunction=on");
                }
                dev.push_str(",x-vga=off");
            }
            args.push("-device".into());
            args.push(dev);
        }
    }
    args
}

pub mod fake {
    //! A fake sysfs for tests: a real directory tree (in a temporary
    //! directory) that also plays the kernel's part for the writes
    //! passthrough makes — `unbind` removes the `driver` link,
    //! `drivers_probe` binds the `driver_override` driver when it is loaded
    //! (else the device's native one), binding a group to `vfio-pci` creates
    //! `/dev/vfio/<group>` under [`FakeSysfs::dev_root`] — and logs every
    //! write in order.

    use super::{list_dir, PciSysfs, Vfio, VFIO_DRIVER};
    use std::collections::{HashMap, HashSet};
    use std::io;
    use std::path::{Path, PathBuf};
    use std::sync::{Arc, Mutex};

    /// One write: path relative to the sysfs root, and the value.
    pub type LoggedWrite = (String, String);

    /// A fake sysfs and `/dev`; see the module docs.
    #[derive(Debug)]
    pub struct FakeSysfs {
        dir: tempfile::TempDir,
        state: Mutex<State>,
    }

    #[derive(Debug, Default)]
    struct State {
        log: Vec<LoggedWrite>,
        native: HashMap<String, Option<String>>,
        refuse: HashSet<String>,
        group_nodes: bool,
    }

    #[derive(Debug, Clone)]
    struct Device {
        address: String,
        group: u32,
        class: u32,
        vendor: u16,
        device: u16,
        numa: i32,
        bars: Vec<(u64, u64)>,
        driver: Option<String>,
        on_vfio: bool,
    }

    /// Builds a [`FakeSysfs`]. Devices start bound to their native driver.
    #[derive(Debug, Clone)]
    pub struct FakeSysfsBuilder {
        devices: Vec<Device>,
        vfio_loaded: bool,
        vfio_container: bool,
        iommu: bool,
        group_nodes: bool,
        refuse: Vec<String>,
    }

    /// 32-bit non-prefetchable memory BAR flags.
    const MEM32: u64 = 0x0004_0200;
    /// 64-bit prefetchable memory BAR flags (as an H100's BAR1 shows).
    const MEM64_PREF: u64 = 0x0014_220c;

    impl FakeSysfsBuilder {
        fn push(mut self, d: Device) -> Self {
            self.devices.retain(|x| x.address != d.address);
            self.devices.push(d);
            self
        }

        /// An NVIDIA 3D controller (driver `nvidia`): BAR0 16 MiB 32-bit,
        /// BAR1 `bar_bytes` and BAR3 32 MiB 64-bit prefetchable.
        pub fn gpu(self, address: &str, group: u32, bar_bytes: u64, numa: i32) -> Self {
            self.push(Device {
                address: address.into(),
                group,
                class: 0x030200,
                vendor: 0x10de,
                device: 0x2330,
                numa,
                bars: vec![
                    (16 << 20, MEM32),
                    (bar_bytes, MEM64_PREF),
                    (0, 0),
                    (32 << 20, MEM64_PREF),
                    (0, 0),
                    (0, 0),
                ],
                driver: Some("nvidia".into()),
                on_vfio: false,
            })
        }

        /// An HDMI audio function (class `0x0403`, driver `snd_hda_intel`).
        pub fn audio(self, address: &str, group: u32) -> Self {
            self.function(address, group, 0x040300, Some("snd_hda_intel"))
        }

        /// A PCIe bridge (class `0x0604`, driver `pcieport`).
        pub fn bridge(self, address: &str, group: u32) -> Self {
            self.function(address, group, 0x060400, Some("pcieport"))
        }

        /// An Ethernet controller (class `0x0200`, driver `ixgbe`).
        pub fn nic(self, address: &str, group: u32) -> Self {
            self.function(address, group, 0x020000, Some("ixgbe"))
        }

        /// Any function with a 16 KiB 32-bit BAR.
        pub fn function(self, address: &str, group: u32, class: u32, driver: Option<&str>) -> Self {
            self.push(Device {
                address: address.into(),
                group,
                class,
                vendor: 0x10de,
                device: 0x22a3,
                numa: 0,
                bars: vec![(16 << 10, MEM32)],
                driver: driver.map(str::to_string),
                on_vfio: false,
            })
        }

        /// The device (added before) starts on vfio-pci, as left by an
        /// earlier run; its native driver stays known to the fake kernel.
        pub fn on_vfio(mut self, address: &str) -> Self {
            if let Some(d) = self.devices.iter_mut().find(|d| d.address == address) {
                d.on_vfio = true;
            }
            self
        }

        /// Whether the vfio-pci driver is loaded (default yes).
        pub fn vfio_loaded(mut self, loaded: bool) -> Self {
            self.vfio_loaded = loaded;
            self
        }

        /// Whether `/dev/vfio/vfio` exists (default yes).
        pub fn vfio_container(mut self, present: bool) -> Self {
            self.vfio_container = present;
            self
        }

        /// No IOMMU: no groups at all.
        pub fn no_iommu(mut self) -> Self {
            self.iommu = false;
            self
        }

        /// Binding to vfio-pci creates no `/dev/vfio/<group>`.
        pub fn no_group_nodes(mut self) -> Self {
            self.group_nodes = false;
            self
        }

        /// vfio-pci's probe fails for this device.
        pub fn refuse_vfio(mut self, address: &str) -> Self {
            self.refuse.push(address.into());
            self
        }

        /// Writes the tree. Panics when the temporary directory cannot be
        /// written (it is for tests).
        pub fn build(self) -> Arc<FakeSysfs> {
            let dir = tempfile::tempdir().expect("temporary directory");
            let sys = dir.path().join("sys");
            let dev = dir.path().join("dev");
            let mk = |p: &Path| std::fs::create_dir_all(p).expect("create fake sysfs dir");
            let put = |p: &Path, s: &str| std::fs::write(p, s).expect("write fake sysfs file");
            let link = |target: &str, at: &Path| {
                std::os::unix::fs::symlink(target, at).expect("fake sysfs link")
            };
            mk(&sys.join("bus/pci/devices"));
            mk(&sys.join("kernel/iommu_groups"));
            mk(&dev);
            put(&sys.join("bus/pci/drivers_probe"), "");
            let mut drivers: Vec<&str> = self
                .devices
                .iter()
                .filter_map(|d| d.driver.as_deref())
                .collect();
            if self.vfio_loaded {
                drivers.push(VFIO_DRIVER);
            }
            for d in drivers {
                let p = sys.join("bus/pci/drivers").join(d);
                mk(&p);
                put(&p.join("bind"), "");
                put(&p.join("unbind"), "");
            }
            if self.vfio_container {
                mk(&dev.join("vfio"));
                put(&dev.join("vfio/vfio"), "");
            }
            let mut native = HashMap::new();
            for d in &self.devices {
                // As in the kernel: the device lives under devices/, and
                // bus/pci/devices/ links to it.
                let p = sys.join("devices/pci0000:00").join(&d.address);
                mk(&p);
                link(
                    &format!("../../../devices/pci0000:00/{}", d.address),
                    &sys.join("bus/pci/devices").join(&d.address),
                );
                put(&p.join("class"), &format!("0x{:06x}\n", d.class));
                put(&p.join("vendor"), &format!("0x{:04x}\n", d.vendor));
                put(&p.join("device"), &format!("0x{:04x}\n", d.device));
                put(&p.join("numa_node"), &format!("{}\n", d.numa));
                let mut resource = String::new();
                let mut base: u64 = 0x20_0000_0000 * (native.len() as u64 + 1);
                for i in 0..13 {
                    match d.bars.get(i) {
                        Some((size, flags)) if *size > 0 => {
                            resource.push_str(&format!(
                                "0x{base:016x} 0x{:016x} 0x{flags:016x}\n",
                                base + size - 1
                            ));
                            base += size;
                        }
                        _ => resource.push_str(&format!("0x{0:016x} 0x{0:016x} 0x{0:016x}\n", 0)),
                    }
                }
                put(&p.join("resource"), &resource);
                put(
                    &p.join("driver_override"),
                    if d.on_vfio { "vfio-pci\n" } else { "(null)\n" },
                );
                let current = if d.on_vfio {
                    Some(VFIO_DRIVER)
                } else {
                    d.driver.as_deref()
                };
                if let Some(drv) = current {
                    link(
                        &format!("../../../bus/pci/drivers/{drv}"),
                        &p.join("driver"),
                    );
                }
                if self.iommu {
                    let g = sys.join(format!("kernel/iommu_groups/{}/devices", d.group));
                    mk(&g);
                    link(
                        &format!("../../../kernel/iommu_groups/{}", d.group),
                        &p.join("iommu_group"),
                    );
                    link(
                        &format!("../../../../devices/pci0000:00/{}", d.address),
                        &g.join(&d.address),
                    );
                    if d.on_vfio && self.group_nodes {
                        mk(&dev.join("vfio"));
                        put(&dev.join(format!("vfio/{}", d.group)), "");
                    }
                }
                native.insert(d.address.clone(), d.driver.clone());
            }
            Arc::new(FakeSysfs {
                dir,
                state: Mutex::new(State {
                    log: Vec::new(),
                    native,
                    refuse: self.refuse.into_iter().collect(),
                    group_nodes: self.group_nodes,
                }),
            })
        }
    }

    fn no_device(what: &str) -> io::Error {
        io::Error::new(io::ErrorKind::NotFound, format!("no such device: {what}"))
    }

    impl FakeSysfs {
        /// A builder with no devices, vfio-pci loaded and an IOMMU.
        pub fn builder() -> FakeSysfsBuilder {
            FakeSysfsBuilder {
                devices: Vec::new(),
                vfio_loaded: true,
                vfio_container: true,
                iommu: true,
                group_nodes: true,
                refuse: Vec::new(),
            }
        }

        /// A [`Vfio`] over this fake and its `/dev`.
        pub fn vfio(self: &Arc<Self>) -> Vfio {
            Vfio::new(self.clone(), self.dev_root())
        }

        /// The fake sysfs root.
        pub fn sys_root(&self) -> PathBuf {
            self.dir.path().join("sys")
        }

        /// The fake `/dev`.
        pub fn dev_root(&self) -> PathBuf {
            self.dir.path().join("dev")
        }

        fn state(&self) -> std::sync::MutexGuard<'_, State> {
            self.state.lock().unwrap_or_else(|e| e.into_inner())
        }

        /// Every write so far, in order.
        pub fn log(&self) -> Vec<LoggedWrite> {
            self.state().log.clone()
        }

        /// Every write so far, emptying the log.
        pub fn take_log(&self) -> Vec<LoggedWrite> {
            std::mem::take(&mut self.state().log)
        }

        /// The driver a device is bound to now.
        pub fn driver(&self, address: &str) -> Option<String> {
            std::fs::read_link(self.dev_dir(address).join("driver"))
                .ok()
                .and_then(|l| Some(l.file_name()?.to_string_lossy().into_owned()))
        }

        /// A device's `driver_override` (`None` when unset).
        pub fn driver_override(&self, address: &str) -> Option<String> {
            let s = std::fs::read_to_string(self.dev_dir(address).join("driver_override")).ok()?;
            let s = s.trim();
            (!s.is_empty() && s != "(null)").then(|| s.to_string())
        }

        /// Unloads a driver module: its devices are unbound and it is gone
        /// from `bus/pci/drivers`.
        pub fn unload(&self, driver: &str) {
            let devices = list_dir(&self.sys_root().join("bus/pci/devices")).unwrap_or_default();
            for d in devices {
                if self.driver(&d).as_deref() == Some(driver) {
                    let _ = std::fs::remove_file(self.dev_dir(&d).join("driver"));
                }
            }
            let _ = std::fs::remove_dir_all(self.sys_root().join("bus/pci/drivers").join(driver));
        }

        fn dev_dir(&self, address: &str) -> PathBuf {
            self.sys_root().join("bus/pci/devices").join(address)
        }

        fn group_of(&self, address: &str) -> Option<String> {
            std::fs::read_link(self.dev_dir(address).join("iommu_group"))
                .ok()
                .and_then(|l| Some(l.file_name()?.to_string_lossy().into_owned()))
        }

        fn unbind(&self, driver: &str, address: &str) -> io::Result<()> {
            if self.driver(address).as_deref() != Some(driver) {
                return Err(no_device(address));
            }
            std::fs::remove_file(self.dev_dir(address).join("driver"))?;
            if driver == VFIO_DRIVER {
                if let Some(g) = self.group_of(address) {
                    let members = list_dir(
                        &self
                            .sys_root()
                            .join(format!("kernel/iommu_groups/{g}/devices")),
                    )?;
                    if !members
                        .iter()
                        .any(|m| self.driver(m).as_deref() == Some(VFIO_DRIVER))
                    {
                        let _ = std::fs::remove_file(self.dev_root().join("vfio").join(&g));
                    }
                }
            }
            Ok(())
        }

        fn probe(&self, st: &State, address: &str) -> io::Result<()> {
            let dir = self.dev_dir(address);
            if !dir.is_dir() {
                return Err(no_device(address));
            }
            if self.driver(address).is_some() {
                return Ok(());
            }
            let loaded = |d: &str| self.sys_root().join("bus/pci/drivers").join(d).is_dir();
            let target = match self.driver_override(address) {
                Some(o) => {
                    (loaded(&o) && !(o == VFIO_DRIVER && st.refuse.contains(address))).then_some(o)
                }
                None => st
                    .native
                    .get(address)
                    .cloned()
                    .flatten()
                    .filter(|n| loaded(n)),
            };
            if let Some(t) = target {
                std::os::unix::fs::symlink(
                    format!("../../../bus/pci/drivers/{t}"),
                    dir.join("driver"),
                )?;
                if t == VFIO_DRIVER && st.group_nodes {
                    if let Some(g) = self.group_of(address) {
                        std::fs::create_dir_all(self.dev_root().join("vfio"))?;
                        std::fs::write(self.dev_root().join("vfio").join(g), "")?;
                    }
                }
            }
            Ok(())
        }
    }

    impl PciSysfs for FakeSysfs {
        fn read(&self, rel: &Path) -> io::Result<String> {
            std::fs::read_to_string(self.sys_root().join(rel))
        }

        fn write(&self, rel: &Path, value: &str) -> io::Result<()> {
            let key = rel.to_string_lossy().into_owned();
            let mut st = self.state();
            st.log.push((key.clone(), value.to_string()));
            let parts: Vec<&str> = key.split('/').collect();
            match parts.as_slice() {
                ["bus", "pci", "drivers_probe"] => self.probe(&st, value.trim()),
                ["bus", "pci", "devices", dev, "driver", "unbind"] => {
                    let drv = self.driver(dev).ok_or_else(|| no_device(dev))?;
                    self.unbind(&drv, value.trim())
                }
                ["bus", "pci", "drivers", drv, "unbind"] => {
                    if !self.sys_root().join("bus/pci/drivers").join(drv).is_dir() {
                        return Err(no_device(drv));
                    }
                    self.unbind(drv, value.trim())
                }
                ["bus", "pci", "devices", dev, "driver_override"] => {
                    let dir = self.dev_dir(dev);
                    if !dir.is_dir() {
                        return Err(no_device(dev));
                    }
                    let v = value.trim();
                    let v = if v.is_empty() { "(null)" } else { v };
                    std::fs::write(dir.join("driver_override"), format!("{v}\n"))
                }
                _ => {
                    let p = self.sys_root().join(rel);
                    if !p.is_file() {
                        return Err(io::Error::new(io::ErrorKind::NotFound, key));
                    }
                    std::fs::write(p, value)
                }
            }
        }

        fn read_link(&self, rel: &Path) -> io::Result<PathBuf> {
            std::fs::read_link(self.sys_root().join(rel))
        }

        fn list(&self, rel: &Path) -> io::Result<Vec<String>> {
            list_dir(&self.sys_root().join(rel))
        }

        fn exists(&self, rel: &Path) -> bool {
            self.sys_root().join(rel).exists()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::{FakeSysfs, LoggedWrite};
    use super::*;

    const GPU: &str = "0000:18:00.0";
    const AUDIO: &str = "0000:18:00.1";
    const GPU2: &str = "0000:3b:00.0";
    const NIC: &str = "0000:19:00.0";
    const H100_BAR1: u64 = 128 << 30;
    const BAR3: u64 = 32 << 20;

    fn w(path: &str, value: &str) -> LoggedWrite {
        (path.to_string(), value.to_string())
    }

    fn dev(a: &str, file: &str) -> String {
        format!("bus/pci/devices/{a}/{file}")
    }

    /// What binding one bound device to vfio-pci writes.
    fn bind_writes(a: &str) -> Vec<LoggedWrite> {
        vec![
            w(&dev(a, "driver_override"), "vfio-pci"),
            w(&dev(a, "driver/unbind"), a),
            w("bus/pci/drivers_probe", a),
        ]
    }

    /// What giving one device back writes.
    fn release_writes(a: &str) -> Vec<LoggedWrite> {
        vec![
            w("bus/pci/drivers/vfio-pci/unbind", a),
            w(&dev(a, "driver_override"), "\n"),
            w("bus/pci/drivers_probe", a),
        ]
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn bound(
        address: &str,
        class: u32,
        driver: Option<&str>,
        group: u32,
        gpu: &str,
    ) -> BoundDevice {
        BoundDevice {
            address: address.into(),
            class,
            original_driver: driver.map(str::to_string),
            iommu_group: group,
            gpu: gpu.into(),
        }
    }

    #[test]
    fn one_gpu_in_its_own_group() {
        let fake = FakeSysfs::builder().gpu(GPU, 3, H100_BAR1, 0).build();
        let vfio = fake.vfio();
        let a = vfio.prepare(&strings(&[GPU]), None).unwrap();
        assert_eq!(fake.take_log(), bind_writes(GPU));
        assert_eq!(fake.driver(GPU).as_deref(), Some("vfio-pci"));
        assert!(fake.dev_root().join("vfio/3").exists());
        // The fake's links resolve the way the kernel's do.
        assert!(fake.exists(Path::new(&dev(GPU, "driver/unbind"))));
        assert!(fake.exists(Path::new(&dev(
            GPU,
            "iommu_group/devices/0000:18:00.0/class"
        ))));
        assert_eq!(
            a,
            Assignment {
                gpus: strings(&[GPU]),
                devices: vec![bound(GPU, 0x030200, Some("nvidia"), 3, GPU)],
                mmio64_bytes: H100_BAR1 + BAR3,
            }
        );
        assert_eq!(
            qemu_args(&a),
            strings(&[
                "-global",
                "q35-pcihost.pci-hole64-size=256G",
                "-fw_cfg",
                "name=opt/ovmf/X-PciMmio64Mb,string=262144",
                "-device",
                "pcie-root-port,id=vfio-rp0,chassis=16,slot=16,bus=pcie.0",
                "-device",
                "vfio-pci,host=0000:18:00.0,id=vfio-gpu0,bus=vfio-rp0,addr=0x0.0,x-vga=off",
            ])
        );
        vfio.release(&a).unwrap();
        assert_eq!(fake.take_log(), release_writes(GPU));
        assert_eq!(fake.driver(GPU).as_deref(), Some("nvidia"));
        assert_eq!(fake.driver_override(GPU), None);
        assert!(!fake.dev_root().join("vfio/3").exists());
    }

    #[test]
    fn two_gpus() {
        let fake = FakeSysfs::builder()
            .gpu(GPU, 3, H100_BAR1, 0)
            .gpu(GPU2, 4, H100_BAR1, 0)
            .build();
        let vfio = fake.vfio();
        let a = vfio.prepare(&strings(&[GPU, GPU2]), None).unwrap();
        assert_eq!(
            fake.take_log(),
            [bind_writes(GPU), bind_writes(GPU2)].concat()
        );
        // Second port aligned to 128 GiB: 256 GiB + 128 GiB + 32 MiB.
        assert_eq!(a.mmio64_bytes, (384 << 30) + BAR3);
        assert_eq!(
            qemu_args(&a),
            strings(&[
                "-global",
                "q35-pcihost.pci-hole64-size=512G",
                "-fw_cfg",
                "name=opt/ovmf/X-PciMmio64Mb,string=524288",
                "-device",
                "pcie-root-port,id=vfio-rp0,chassis=16,slot=16,bus=pcie.0",
                "-device",
                "vfio-pci,host=0000:18:00.0,id=vfio-gpu0,bus=vfio-rp0,addr=0x0.0,x-vga=off",
                "-device",
                "pcie-root-port,id=vfio-rp1,chassis=17,slot=17,bus=pcie.0",
                "-device",
                "vfio-pci,host=0000:3b:00.0,id=vfio-gpu1,bus=vfio-rp1,addr=0x0.0,x-vga=off",
            ])
        );
        vfio.release(&a).unwrap();
        assert_eq!(
            fake.take_log(),
            [release_writes(GPU2), release_writes(GPU)].concat()
        );
        assert_eq!(fake.driver(GPU).as_deref(), Some("nvidia"));
        assert_eq!(fake.driver(GPU2).as_deref(), Some("nvidia"));
    }

    #[test]
    fn eight_h100s_get_a_2_tib_window_and_eight_root_ports() {
        let addrs = [
            "0000:18:00.0",
            "0000:2a:00.0",
            "0000:3a:00.0",
            "0000:5d:00.0",
            "0000:9a:00.0",
            "0000:ab:00.0",
            "0000:ba:00.0",
            "0000:db:00.0",
        ];
        let mut b = FakeSysfs::builder();
        for (i, a) in addrs.iter().enumerate() {
            b = b.gpu(a, 20 + i as u32, H100_BAR1, (i / 4) as i32);
        }
        let fake = b.build();
        let vfio = fake.vfio();
        let a = vfio.prepare(&strings(&addrs), None).unwrap();
        assert_eq!(
            fake.take_log(),
            addrs
                .iter()
                .flat_map(|a| bind_writes(a))
                .collect::<Vec<_>>()
        );
        // 7 ports at 256 GiB strides, the last one 128 GiB + 32 MiB.
        assert_eq!(a.mmio64_bytes, (1920 << 30) + BAR3);
        let args = qemu_args(&a);
        assert_eq!(
            args[..4],
            strings(&[
                "-global",
                "q35-pcihost.pci-hole64-size=2048G",
                "-fw_cfg",
                "name=opt/ovmf/X-PciMmio64Mb,string=2097152",
            ])
        );
        let devices: Vec<&String> = args.iter().skip(4).skip(1).step_by(2).collect();
        assert_eq!(devices.len(), 16);
        for (i, gpu) in addrs.iter().enumerate() {
            assert_eq!(
                *devices[2 * i],
                format!(
                    "pcie-root-port,id=vfio-rp{i},chassis={c},slot={c},bus=pcie.0",
                    c = 16 + i
                )
            );
            assert_eq!(
                *devices[2 * i + 1],
                format!("vfio-pci,host={gpu},id=vfio-gpu{i},bus=vfio-rp{i},addr=0x0.0,x-vga=off")
            );
        }
        for g in addrs {
            assert_eq!(fake.driver(g).as_deref(), Some("vfio-pci"));
        }
        vfio.release(&a).unwrap();
        for g in addrs {
            assert_eq!(fake.driver(g).as_deref(), Some("nvidia"));
        }
    }

    #[test]
    fn hdmi_audio_goes_along_as_function_1_and_comes_back_to_snd_hda_intel() {
        let fake = FakeSysfs::builder()
            .gpu(GPU, 3, 256 << 20, 0)
            .audio(AUDIO, 3)
            .build();
        let vfio = fake.vfio();
        let a = vfio.prepare(&strings(&[GPU]), None).unwrap();
        assert_eq!(
            fake.take_log(),
            [bind_writes(GPU), bind_writes(AUDIO)].concat()
        );
        assert_eq!(
            a.devices,
            vec![
                bound(GPU, 0x030200, Some("nvidia"), 3, GPU),
                bound(AUDIO, 0x040300, Some("snd_hda_intel"), 3, GPU),
            ]
        );
        assert_eq!(fake.driver(AUDIO).as_deref(), Some("vfio-pci"));
        // T4-like: 256 MiB + 32 MiB; the audio BAR is 32-bit.
        assert_eq!(a.mmio64_bytes, 288 << 20);
        assert_eq!(
            qemu_args(&a),
            strings(&[
                "-global",
                "q35-pcihost.pci-hole64-size=32G",
                "-fw_cfg",
                "name=opt/ovmf/X-PciMmio64Mb,string=32768",
                "-device",
                "pcie-root-port,id=vfio-rp0,chassis=16,slot=16,bus=pcie.0",
                "-device",
                "vfio-pci,host=0000:18:00.0,id=vfio-gpu0,bus=vfio-rp0,addr=0x0.0,multifunction=on,x-vga=off",
                "-device",
                "vfio-pci,host=0000:18:00.1,id=vfio-gpu0-f1,bus=vfio-rp0,addr=0x0.1",
            ])
        );
        vfio.release(&a).unwrap();
        assert_eq!(
            fake.take_log(),
            [release_writes(AUDIO), release_writes(GPU)].concat()
        );
        assert_eq!(fake.driver(AUDIO).as_deref(), Some("snd_hda_intel"));
        assert_eq!(fake.driver(GPU).as_deref(), Some("nvidia"));
    }

    #[test]
    fn other_functions_of_the_card_follow_and_stray_audio_is_bound_but_not_passed() {
        let fake = FakeSysfs::builder()
            .gpu(GPU, 3, 256 << 20, 0)
            .audio(AUDIO, 3)
            .function("0000:18:00.2", 3, 0x0c0330, Some("xhci_hcd"))
            .audio("0000:00:1f.3", 3)
            .build();
        let vfio = fake.vfio();
        let a = vfio.prepare(&strings(&[GPU]), None).unwrap();
        let addrs: Vec<&str> = a.devices.iter().map(|d| d.address.as_str()).collect();
        assert_eq!(addrs, ["0000:00:1f.3", GPU, AUDIO, "0000:18:00.2"]);
        assert!(a.devices.iter().all(|d| d.gpu == GPU));
        assert_eq!(fake.driver("0000:00:1f.3").as_deref(), Some("vfio-pci"));
        let args = qemu_args(&a);
        assert_eq!(
            args[6..],
            strings(&[
                "-device",
                "vfio-pci,host=0000:18:00.0,id=vfio-gpu0,bus=vfio-rp0,addr=0x0.0,multifunction=on,x-vga=off",
                "-device",
                "vfio-pci,host=0000:18:00.1,id=vfio-gpu0-f1,bus=vfio-rp0,addr=0x0.1",
                "-device",
                "vfio-pci,host=0000:18:00.2,id=vfio-gpu0-f2,bus=vfio-rp0,addr=0x0.2",
            ])
        );
        vfio.release(&a).unwrap();
        assert_eq!(
            fake.driver("0000:00:1f.3").as_deref(),
            Some("snd_hda_intel")
        );
        assert_eq!(fake.driver("0000:18:00.2").as_deref(), Some("xhci_hcd"));
    }

    #[test]
    fn bridge_in_the_group_is_skipped() {
        let fake = FakeSysfs::builder()
            .bridge("0000:17:00.0", 3)
            .gpu(GPU, 3, H100_BAR1, 0)
            .build();
        let vfio = fake.vfio();
        let a = vfio.prepare(&strings(&[GPU]), None).unwrap();
        assert_eq!(fake.take_log(), bind_writes(GPU));
        assert_eq!(
            a.devices,
            vec![bound(GPU, 0x030200, Some("nvidia"), 3, GPU)]
        );
        assert_eq!(fake.driver("0000:17:00.0").as_deref(), Some("pcieport"));
        vfio.release(&a).unwrap();
        assert_eq!(fake.take_log(), release_writes(GPU));
        assert_eq!(fake.driver("0000:17:00.0").as_deref(), Some("pcieport"));
    }

    #[test]
    fn nic_in_the_group_is_refused_before_anything_is_written() {
        let fake = FakeSysfs::builder()
            .gpu(GPU2, 4, H100_BAR1, 0)
            .gpu(GPU, 5, H100_BAR1, 0)
            .nic(NIC, 5)
            .build();
        let vfio = fake.vfio();
        // The first GPU is fine, the second's group is not: nothing is bound.
        let e = vfio.prepare(&strings(&[GPU2, GPU]), None).unwrap_err();
        assert!(
            matches!(e, VfioError::ForeignDevice { group: 5, .. }),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "IOMMU group 5 (of GPU 0000:18:00.0) also holds 0000:19:00.0 (class 0x020000, driver ixgbe); \
             it cannot be passed through safely: fix the platform's ACS/slot layout"
        );
        assert_eq!(fake.log(), vec![]);
        assert_eq!(fake.driver(GPU2).as_deref(), Some("nvidia"));
        assert_eq!(fake.driver(GPU).as_deref(), Some("nvidia"));
        assert_eq!(fake.driver(NIC).as_deref(), Some("ixgbe"));
    }

    #[test]
    fn a_device_already_on_vfio_pci_in_the_group_is_left_alone() {
        let fake = FakeSysfs::builder()
            .gpu(GPU, 5, H100_BAR1, 0)
            .nic(NIC, 5)
            .on_vfio(NIC)
            .build();
        let vfio = fake.vfio();
        let a = vfio.prepare(&strings(&[GPU]), None).unwrap();
        assert_eq!(fake.take_log(), bind_writes(GPU));
        assert_eq!(a.devices.len(), 1);
        vfio.release(&a).unwrap();
        assert_eq!(fake.take_log(), release_writes(GPU));
        assert_eq!(fake.driver(NIC).as_deref(), Some("vfio-pci"));
    }

    #[test]
    fn gpus_sharing_a_group_go_together_or_not_at_all() {
        let build = || {
            FakeSysfs::builder()
                .gpu(GPU, 3, H100_BAR1, 0)
                .gpu(GPU2, 3, H100_BAR1, 0)
                .build()
        };
        let fake = build();
        let e = fake.vfio().prepare(&strings(&[GPU]), None).unwrap_err();
        assert!(
            matches!(e, VfioError::SharedGroup { group: 3, .. }),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .contains("also holds GPU 0000:3b:00.0, which is not assigned"),
            "{e}"
        );
        assert_eq!(fake.log(), vec![]);

        let fake = build();
        let a = fake.vfio().prepare(&strings(&[GPU, GPU2]), None).unwrap();
        assert_eq!(
            fake.take_log(),
            [bind_writes(GPU), bind_writes(GPU2)].concat()
        );
        assert_eq!(
            a.devices,
            vec![
                bound(GPU, 0x030200, Some("nvidia"), 3, GPU),
                bound(GPU2, 0x030200, Some("nvidia"), 3, GPU2),
            ]
        );
        assert_eq!(qemu_args(&a).len(), 4 + 8);
    }

    #[test]
    fn vfio_pci_not_loaded_is_refused_before_anything_is_written() {
        let fake = FakeSysfs::builder()
            .gpu(GPU, 3, H100_BAR1, 0)
            .vfio_loaded(false)
            .build();
        let e = fake.vfio().prepare(&strings(&[GPU]), None).unwrap_err();
        assert!(matches!(e, VfioError::VfioNotLoaded), "{e:?}");
        assert!(e.to_string().contains("modprobe vfio-pci"), "{e}");
        assert_eq!(fake.log(), vec![]);
        assert_eq!(fake.driver(GPU).as_deref(), Some("nvidia"));
    }

    #[test]
    fn a_failed_bind_rolls_back_what_was_bound() {
        let fake = FakeSysfs::builder()
            .gpu(GPU, 3, H100_BAR1, 0)
            .audio(AUDIO, 3)
            .gpu(GPU2, 4, H100_BAR1, 0)
            .refuse_vfio(GPU2)
            .build();
        let e = fake
            .vfio()
            .prepare(&strings(&[GPU, GPU2]), None)
            .unwrap_err();
        assert!(
            matches!(&e, VfioError::BindFailed { address, driver: None } if address == GPU2),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .contains("did not bind to vfio-pci (its driver is now none)"),
            "{e}"
        );
        let rollback_gpu2 = vec![
            w(&dev(GPU2, "driver_override"), "\n"),
            w("bus/pci/drivers_probe", GPU2),
        ];
        assert_eq!(
            fake.take_log(),
            [
                bind_writes(GPU),
                bind_writes(AUDIO),
                bind_writes(GPU2),
                rollback_gpu2,
                release_writes(AUDIO),
                release_writes(GPU),
            ]
            .concat()
        );
        for (d, driver) in [(GPU, "nvidia"), (AUDIO, "snd_hda_intel"), (GPU2, "nvidia")] {
            assert_eq!(fake.driver(d).as_deref(), Some(driver), "{d}");
            assert_eq!(fake.driver_override(d), None, "{d}");
        }
        assert!(!fake.dev_root().join("vfio/3").exists());
    }

    #[test]
    fn a_missing_group_device_node_rolls_back() {
        let fake = FakeSysfs::builder()
            .gpu(GPU, 3, H100_BAR1, 0)
            .no_group_nodes()
            .build();
        let e = fake.vfio().prepare(&strings(&[GPU]), None).unwrap_err();
        assert!(
            matches!(e, VfioError::NoGroupDevice { group: 3, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("vfio/3 did not appear"), "{e}");
        assert_eq!(
            fake.take_log(),
            [bind_writes(GPU), release_writes(GPU)].concat()
        );
        assert_eq!(fake.driver(GPU).as_deref(), Some("nvidia"));
    }

    #[test]
    fn prepare_twice_changes_nothing_the_second_time() {
        let fake = FakeSysfs::builder()
            .gpu(GPU, 3, H100_BAR1, 0)
            .audio(AUDIO, 3)
            .build();
        let vfio = fake.vfio();
        let first = vfio.prepare(&strings(&[GPU]), None).unwrap();
        fake.take_log();
        let again = vfio.prepare(&strings(&[GPU]), Some(&first)).unwrap();
        assert_eq!(again, first);
        assert_eq!(fake.log(), vec![]);
        // Without the earlier record the original drivers are unknown, but
        // the devices still are recorded (and release still works).
        let blind = vfio.prepare(&strings(&[GPU]), None).unwrap();
        assert_eq!(fake.log(), vec![]);
        assert!(blind.devices.iter().all(|d| d.original_driver.is_none()));
        assert_eq!(qemu_args(&blind), qemu_args(&first));
    }

    #[test]
    fn release_twice_changes_nothing_the_second_time() {
        let fake = FakeSysfs::builder()
            .gpu(GPU, 3, H100_BAR1, 0)
            .audio(AUDIO, 3)
            .build();
        let vfio = fake.vfio();
        let a = vfio.prepare(&strings(&[GPU]), None).unwrap();
        vfio.release(&a).unwrap();
        fake.take_log();
        vfio.release(&a).unwrap();
        assert_eq!(fake.log(), vec![]);
        assert_eq!(fake.driver(GPU).as_deref(), Some("nvidia"));
    }

    #[test]
    fn prepare_after_a_crash_midway_keeps_the_recorded_driver() {
        // The GPU was bound before the crash, its audio not yet.
        let fake = FakeSysfs::builder()
            .gpu(GPU, 3, H100_BAR1, 0)
            .audio(AUDIO, 3)
            .on_vfio(GPU)
            .build();
        let previous = Assignment {
            gpus: strings(&[GPU]),
            devices: vec![bound(GPU, 0x030200, Some("nvidia"), 3, GPU)],
            mmio64_bytes: 0,
        };
        let vfio = fake.vfio();
        let a = vfio.prepare(&strings(&[GPU]), Some(&previous)).unwrap();
        assert_eq!(fake.take_log(), bind_writes(AUDIO));
        assert_eq!(
            a.devices,
            vec![
                bound(GPU, 0x030200, Some("nvidia"), 3, GPU),
                bound(AUDIO, 0x040300, Some("snd_hda_intel"), 3, GPU),
            ]
        );
        vfio.release(&a).unwrap();
        assert_eq!(fake.driver(GPU).as_deref(), Some("nvidia"));
        assert_eq!(fake.driver(AUDIO).as_deref(), Some("snd_hda_intel"));
    }

    #[test]
    fn prepare_after_a_crash_without_a_record_still_releases_to_the_native_driver() {
        let fake = FakeSysfs::builder()
            .gpu(GPU, 3, H100_BAR1, 0)
            .on_vfio(GPU)
            .build();
        let vfio = fake.vfio();
        let a = vfio.prepare(&strings(&[GPU]), None).unwrap();
        assert_eq!(fake.take_log(), vec![]);
        assert_eq!(a.devices, vec![bound(GPU, 0x030200, None, 3, GPU)]);
        vfio.release(&a).unwrap();
        assert_eq!(fake.take_log(), release_writes(GPU));
        assert_eq!(fake.driver(GPU).as_deref(), Some("nvidia"));
    }

    #[test]
    fn release_after_a_crash_midway_finishes_the_job() {
        let fake = FakeSysfs::builder().gpu(GPU, 3, H100_BAR1, 0).build();
        let vfio = fake.vfio();
        let a = vfio.prepare(&strings(&[GPU]), None).unwrap();
        // Unbound and override cleared, then the agent died before probing.
        fake.write(Path::new("bus/pci/drivers/vfio-pci/unbind"), GPU)
            .unwrap();
        fake.write(Path::new(&dev(GPU, "driver_override")), "\n")
            .unwrap();
        fake.take_log();
        assert_eq!(fake.driver(GPU), None);
        vfio.release(&a).unwrap();
        assert_eq!(fake.take_log(), vec![w("bus/pci/drivers_probe", GPU)]);
        assert_eq!(fake.driver(GPU).as_deref(), Some("nvidia"));
        vfio.release(&a).unwrap();
        assert_eq!(fake.log(), vec![]);
    }

    #[test]
    fn a_driver_that_does_not_come_back_is_not_an_error() {
        let fake = FakeSysfs::builder()
            .gpu(GPU, 3, 256 << 20, 0)
            .audio(AUDIO, 3)
            .build();
        let vfio = fake.vfio();
        let a = vfio.prepare(&strings(&[GPU]), None).unwrap();
        fake.unload("snd_hda_intel");
        vfio.release(&a).unwrap();
        assert_eq!(fake.driver(AUDIO), None);
        assert_eq!(fake.driver_override(AUDIO), None);
        assert_eq!(fake.driver(GPU).as_deref(), Some("nvidia"));
    }

    #[test]
    fn available_says_what_is_missing() {
        let ok = FakeSysfs::builder().gpu(GPU, 3, H100_BAR1, 0).build();
        ok.vfio().available().unwrap();

        let fake = FakeSysfs::builder()
            .gpu(GPU, 3, H100_BAR1, 0)
            .no_iommu()
            .build();
        let e = fake.vfio().available().unwrap_err();
        assert!(matches!(e, VfioError::NoIommu), "{e:?}");
        assert!(e.to_string().contains("intel_iommu=on iommu=pt"), "{e}");
        let e = fake.vfio().prepare(&strings(&[GPU]), None).unwrap_err();
        assert!(matches!(e, VfioError::NoIommu), "{e:?}");

        let fake = FakeSysfs::builder()
            .gpu(GPU, 3, H100_BAR1, 0)
            .vfio_loaded(false)
            .build();
        assert_eq!(
            fake.vfio().available().unwrap_err().to_string(),
            "the vfio-pci driver is not loaded: modprobe vfio-pci (and list it in /etc/modules-load.d so it is loaded at boot)"
        );

        let fake = FakeSysfs::builder()
            .gpu(GPU, 3, H100_BAR1, 0)
            .vfio_container(false)
            .build();
        let e = fake.vfio().available().unwrap_err();
        assert!(matches!(e, VfioError::NoVfioContainer { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!(
                "{} does not exist: modprobe vfio-pci (it loads vfio, which creates it)",
                fake.dev_root().join("vfio/vfio").display()
            )
        );
    }

    #[test]
    fn bad_requests_are_refused() {
        let fake = FakeSysfs::builder()
            .gpu(GPU, 3, H100_BAR1, 0)
            .nic(NIC, 4)
            .build();
        let vfio = fake.vfio();
        for bad in ["18:00", "../../../etc", "0000:18:00.8", "0000:18:20.0", ""] {
            let e = vfio.prepare(&strings(&[bad]), None).unwrap_err();
            assert!(
                matches!(e, VfioError::InvalidAddress { .. }),
                "{bad}: {e:?}"
            );
        }
        let e = vfio.prepare(&strings(&["0000:99:00.0"]), None).unwrap_err();
        assert!(matches!(e, VfioError::NoSuchDevice { .. }), "{e:?}");
        let e = vfio.prepare(&strings(&[NIC]), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "0000:19:00.0 is not a GPU (class 0x020000); only display and 3D controllers are assigned as GPUs"
        );
        assert_eq!(fake.log(), vec![]);
        assert_eq!(vfio.prepare(&[], None).unwrap(), Assignment::default());
        assert!(qemu_args(&Assignment::default()).is_empty());
        // Short and upper-case forms name the same GPU, once.
        let a = vfio
            .prepare(&strings(&["18:00.0", "0000:18:00.0", "0000:18:00.0"]), None)
            .unwrap();
        assert_eq!(a.gpus, strings(&[GPU]));
        assert_eq!(
            normalize_address("0000:AB:1F.7").as_deref(),
            Some("0000:ab:1f.7")
        );
    }

    #[test]
    fn window_rule() {
        assert_eq!(mmio64_window_gib(0), 32);
        // T4: 256 MiB + 32 MiB.
        assert_eq!(mmio64_need(&[vec![256 << 20, BAR3]]), 288 << 20);
        assert_eq!(mmio64_window_gib(288 << 20), 32);
        // One H100 / A100 80GB.
        let h100 = vec![H100_BAR1, BAR3];
        assert_eq!(mmio64_need(std::slice::from_ref(&h100)), H100_BAR1 + BAR3);
        assert_eq!(mmio64_window_gib(H100_BAR1 + BAR3), 256);
        assert_eq!(mmio64_window_gib(mmio64_need(&vec![h100.clone(); 2])), 512);
        assert_eq!(mmio64_window_gib(mmio64_need(&vec![h100.clone(); 4])), 1024);
        assert_eq!(mmio64_need(&vec![h100.clone(); 8]), (1920 << 30) + BAR3);
        assert_eq!(mmio64_window_gib(mmio64_need(&vec![h100.clone(); 8])), 2048);
        // Ports with nothing 64-bit take no room; larger alignments go first.
        assert_eq!(
            mmio64_need(&[vec![], vec![BAR3], h100.clone()]),
            H100_BAR1 + 2 * BAR3
        );
        // A 31 GiB need just fits 32 GiB with the headroom; 31.5 does not.
        assert_eq!(mmio64_window_gib(31 << 30), 32);
        assert_eq!(mmio64_window_gib((31 << 30) + (512 << 20)), 64);
    }

    #[test]
    fn resource_file_parsing() {
        let text = "\
0x00000000e2000000 0x00000000e2ffffff 0x0000000000040200
0x0000220000000000 0x0000221fffffffff 0x000000000014220c
0x0000000000000000 0x0000000000000000 0x0000000000000000
0x0000222000000000 0x0000222001ffffff 0x000000000014220c
0x0000000000000000 0x0000000000000000 0x0000000000000000
0x0000000000000000 0x0000000000000000 0x0000000000000000
0x00000000e3000000 0x00000000e307ffff 0x0000000000046200
";
        let bars = parse_resource(text);
        assert_eq!(
            bars,
            vec![
                Bar {
                    index: 0,
                    size: 16 << 20,
                    flags: 0x40200
                },
                Bar {
                    index: 1,
                    size: H100_BAR1,
                    flags: 0x14220c
                },
                Bar {
                    index: 3,
                    size: BAR3,
                    flags: 0x14220c
                },
            ]
        );
        let wide: Vec<u64> = bars
            .iter()
            .filter(|b| b.is_mem64_prefetch())
            .map(|b| b.size)
            .collect();
        assert_eq!(wide, vec![H100_BAR1, BAR3]);
        assert!(parse_resource("garbage\n\n").is_empty());
    }

    #[test]
    fn assignment_round_trips_as_json() {
        let a = Assignment {
            gpus: strings(&[GPU]),
            devices: vec![
                bound(GPU, 0x030200, Some("nvidia"), 3, GPU),
                bound(AUDIO, 0x040300, None, 3, GPU),
            ],
            mmio64_bytes: H100_BAR1 + BAR3,
        };
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<Assignment>(&json).unwrap(), a);
    }

    #[test]
    fn real_sysfs_reads_a_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("sys");
        let d = root.join("bus/pci/devices");
        let link = |target: String, at: PathBuf| std::os::unix::fs::symlink(target, at).unwrap();
        std::fs::create_dir_all(&d).unwrap();
        for (a, class, driver, group) in [
            (GPU, "0x030200", "nvidia", 5),
            (NIC, "0x020000", "ixgbe", 5),
        ] {
            // The kernel's layout: bus/pci/devices/<a> links into devices/.
            let real = root.join("devices/pci0000:00").join(a);
            std::fs::create_dir_all(&real).unwrap();
            link(format!("../../../devices/pci0000:00/{a}"), d.join(a));
            std::fs::write(real.join("class"), format!("{class}\n")).unwrap();
            std::fs::create_dir_all(root.join("bus/pci/drivers").join(driver)).unwrap();
            std::fs::write(root.join("bus/pci/drivers").join(driver).join("unbind"), "").unwrap();
            link(
                format!("../../../bus/pci/drivers/{driver}"),
                real.join("driver"),
            );
            let g = root.join(format!("kernel/iommu_groups/{group}/devices"));
            std::fs::create_dir_all(&g).unwrap();
            link(
                format!("../../../kernel/iommu_groups/{group}"),
                real.join("iommu_group"),
            );
            link(format!("../../../../devices/pci0000:00/{a}"), g.join(a));
        }
        std::fs::create_dir_all(root.join("bus/pci/drivers/vfio-pci")).unwrap();
        let sys = RealSysfs { root: root.clone() };
        assert_eq!(
            sys.read(Path::new("bus/pci/devices/0000:18:00.0/class"))
                .unwrap(),
            "0x030200\n"
        );
        assert_eq!(
            sys.read(Path::new("/bus/pci/devices/0000:19:00.0/class"))
                .unwrap(),
            "0x020000\n"
        );
        assert_eq!(
            sys.read_link(Path::new("bus/pci/devices/0000:18:00.0/driver"))
                .unwrap(),
            PathBuf::from("../../../bus/pci/drivers/nvidia")
        );
        assert_eq!(
            sys.list(Path::new("kernel/iommu_groups/5/devices"))
                .unwrap(),
            strings(&[GPU, NIC])
        );
        assert!(sys.exists(Path::new("bus/pci/devices/0000:18:00.0/driver")));
        assert!(sys.exists(Path::new("bus/pci/devices/0000:18:00.0/driver/unbind")));
        assert!(sys.exists(Path::new(
            "kernel/iommu_groups/5/devices/0000:19:00.0/iommu_group/devices"
        )));
        assert!(!sys.exists(Path::new("bus/pci/devices/0000:18:00.0/nothing")));
        assert!(sys.read(Path::new("nothing")).is_err());

        // The whole check runs over the real implementation and refuses
        // before writing (nothing here could take a write anyway).
        let dev = dir.path().join("dev");
        std::fs::create_dir_all(dev.join("vfio")).unwrap();
        std::fs::write(dev.join("vfio/vfio"), "").unwrap();
        let vfio = Vfio::new(Arc::new(sys), dev);
        vfio.available().unwrap();
        let e = vfio.prepare(&strings(&[GPU]), None).unwrap_err();
        assert!(
            matches!(e, VfioError::ForeignDevice { group: 5, .. }),
            "{e:?}"
        );
        assert_eq!(
            std::fs::read_to_string(d.join(GPU).join("class")).unwrap(),
            "0x030200\n"
        );
    }
}
