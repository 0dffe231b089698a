//! What the NVIDIA driver knows about the GPUs, and their health.
//!
//! sysfs says which GPUs exist (see [`crate::inventory`]); the driver, through
//! NVML, adds what only it knows — UUID, board name, memory, MIG and ECC mode,
//! NVLink peers — and the signals health is judged from: XID events, ECC
//! error counts, pending page retirements, temperature against the slowdown
//! threshold, and hardware slowdown or power-brake throttling.
//!
//! NVML is loaded at run time (`nvml-wrapper` dlopens `libnvidia-ml.so.1`),
//! so the same agent binary runs on machines without a driver; there
//! [`GpuDriver::info`] says why nothing is known. GPUs bound to `vfio-pci`
//! are invisible to NVML and keep what sysfs says.
//!
//! # Health
//! [`GpuMonitor`] judges each GPU at every look:
//! * an XID that is not an application error (13, 31, 43, 45 and 68 are the
//!   application's fault and do not fence) **fences** the GPU: it stays
//!   unhealthy, across agent restarts (kept in `gpu-fences.json` in the
//!   state directory), until an operator has reset the GPU and clears it;
//! * uncorrectable ECC errors, pages pending retirement, temperature at or
//!   above the slowdown threshold, hardware slowdown or power brake make it
//!   unhealthy while they last.
//!
//! An unhealthy GPU is not scheduled; an instance that holds one sees which
//! in `GPUInfo.GPUHealth`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// XIDs caused by the application, not the GPU (NVIDIA's XID catalogue):
/// 13 graphics engine exception, 31 GPU memory page fault, 43 GPU stopped
/// processing, 45 preemptive cleanup, 68 video processor exception.
pub const APPLICATION_XIDS: [u64; 5] = [13, 31, 43, 45, 68];

/// Whether an XID fences the GPU.
pub fn xid_fences(xid: u64) -> bool {
    !APPLICATION_XIDS.contains(&xid)
}

/// What an XID means, for people.
pub fn xid_meaning(xid: u64) -> &'static str {
    match xid {
        13 => "graphics engine exception (application)",
        31 => "GPU memory page fault (application)",
        43 => "GPU stopped processing (application)",
        45 => "preemptive cleanup (application)",
        48 => "double-bit ECC error",
        61 | 62 => "internal micro-controller error",
        63 => "ECC page retirement or row remapping recorded",
        64 => "ECC page retirement or row remapping failed",
        68 => "video processor exception (application)",
        74 => "NVLink error",
        79 => "GPU has fallen off the bus",
        92 => "high single-bit ECC error rate",
        94 => "contained ECC error",
        95 => "uncontained ECC error",
        119 | 120 => "GSP firmware error",
        _ => "GPU error",
    }
}

/// Facts about the driver.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DriverInfo {
    /// Driver version (`580.159.04`).
    pub driver_version: String,
    /// NVML version.
    pub nvml_version: String,
    /// CUDA driver API version (`13.0`).
    pub cuda_version: String,
}

/// One GPU as the driver describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct DriverGpu {
    /// PCI address, lower case, `0000:18:00.0`.
    pub pci_address: String,
    /// `GPU-<uuid>`.
    pub uuid: String,
    /// Board name (`NVIDIA H100 80GB HBM3`).
    pub name: String,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// Minor number: the device node is `/dev/nvidia<minor>`.
    pub minor: Option<u32>,
    /// MIG mode on.
    pub mig_enabled: bool,
    /// ECC on (`None`: not supported).
    pub ecc_enabled: Option<bool>,
    /// PCI addresses of GPUs reached over an active NVLink.
    pub nvlink_gpu_peers: Vec<String>,
    /// An active NVLink goes to an NVSwitch.
    pub nvswitch: bool,
}

/// A moment's telemetry of one GPU.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct GpuSample {
    /// PCI address.
    pub pci_address: String,
    /// The driver lost the GPU.
    pub lost: bool,
    /// Core temperature, °C.
    pub temperature_c: Option<u32>,
    /// Hardware slowdown threshold, °C.
    pub slowdown_c: Option<u32>,
    /// Power draw, W.
    pub power_w: Option<f64>,
    /// Enforced power limit, W.
    pub power_limit_w: Option<f64>,
    /// GPU busy, percent.
    pub utilization_pct: Option<u32>,
    /// Memory in use, bytes.
    pub memory_used_bytes: Option<u64>,
    /// Memory in total, bytes.
    pub memory_total_bytes: Option<u64>,
    /// Corrected ECC errors since the driver loaded.
    pub ecc_corrected: Option<u64>,
    /// Uncorrected ECC errors since the driver loaded.
    pub ecc_uncorrected: Option<u64>,
    /// Memory pages waiting to be retired (needs a GPU reset).
    pub pages_pending_retirement: bool,
    /// Hardware slowdown engaged (other than power brake).
    pub hw_slowdown: bool,
    /// Hardware power brake engaged (an external power signal).
    pub hw_power_brake: bool,
}

/// The driver, as the agent uses it. [`Nvml`] is the real one; tests use
/// [`FakeDriver`].
pub trait GpuDriver: Send + Sync + 'static {
    /// Driver facts, or why there is no driver.
    fn info(&self) -> Result<DriverInfo, String>;
    /// The GPUs the driver manages.
    fn gpus(&self) -> Vec<DriverGpu>;
    /// Telemetry now.
    fn sample(&self) -> Vec<GpuSample>;
    /// XID events since the last call: `(pci_address, xid)`.
    fn take_xids(&self) -> Vec<(String, u64)>;
}

/// Lower-cases a PCI bus ID and trims NVML's 8-digit domain to 4.
pub fn normalize_pci(bus_id: &str) -> String {
    let s = bus_id.trim().to_ascii_lowercase();
    match s.split_once(':') {
        Some((domain, rest)) if domain.len() == 8 && domain.starts_with("0000") => {
            format!("{}:{rest}", &domain[4..])
        }
        _ => s,
    }
}

/// The real driver, through NVML.
pub struct Nvml {
    nvml: Result<nvml_wrapper::Nvml, String>,
    xids: Arc<Mutex<Vec<(String, u64)>>>,
}

impl Nvml {
    /// Loads NVML (from `lib_path`, or `libnvidia-ml.so.1` on the loader
    /// path) and starts listening for XID events. Never fails: without a
    /// driver, [`GpuDriver::info`] says why.
    pub fn load(lib_path: Option<&std::ffi::OsStr>) -> Self {
        let init = |p: Option<&std::ffi::OsStr>| {
            let mut b = nvml_wrapper::Nvml::builder();
            if let Some(p) = p {
                b.lib_path(p);
            }
            b.init()
        };
        // Without an explicit path: the dynamic loader's search first, then the
        // directories drivers install to outside it (`/usr/local/nvidia/lib64` …).
        let mut path = lib_path.map(|p| p.to_os_string());
        let mut first = init(lib_path);
        if path.is_none() && first.is_err() {
            if let Some(p) = crate::gpu::NvidiaDevices::default()
                .lib_dirs
                .iter()
                .map(|d| d.join("libnvidia-ml.so.1"))
                .find(|p| p.exists())
            {
                first = init(Some(p.as_os_str()));
                path = Some(p.into_os_string());
            }
        }
        let nvml = first.map_err(|e| match e {
            nvml_wrapper::error::NvmlError::LibloadingError(_) => {
                "the NVIDIA driver's libnvidia-ml.so.1 is not installed".to_string()
            }
            nvml_wrapper::error::NvmlError::DriverNotLoaded => {
                "the NVIDIA kernel driver is not loaded".to_string()
            }
            other => format!("NVML failed to start: {other}"),
        });
        let xids = Arc::new(Mutex::new(Vec::new()));
        if nvml.is_ok() {
            let sink = xids.clone();
            // Events block in NVML: a thread of their own, with its own handle.
            let _ = std::thread::Builder::new()
                .name("nvml-events".into())
                .spawn(move || {
                    if let Ok(n) = init(path.as_deref()) {
                        listen_xids(&n, &sink);
                    }
                });
        }
        Self { nvml, xids }
    }
}

fn listen_xids(nvml: &nvml_wrapper::Nvml, sink: &Mutex<Vec<(String, u64)>>) {
    use nvml_wrapper::bitmasks::event::EventTypes;
    use nvml_wrapper::enums::event::XidError;
    let Ok(mut set) = nvml.create_event_set() else {
        return;
    };
    let wanted = EventTypes::CRITICAL_XID_ERROR | EventTypes::DOUBLE_BIT_ECC_ERROR;
    let n = nvml.device_count().unwrap_or(0);
    for i in 0..n {
        let Ok(dev) = nvml.device_by_index(i) else {
            continue;
        };
        // Register only what the device supports: a failed registration
        // consumes the set.
        let types = dev.supported_event_types().unwrap_or(EventTypes::empty()) & wanted;
        if types.is_empty() {
            continue;
        }
        set = match dev.register_events(types, set) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e.error, "NVML refused XID event registration; XIDs will not be seen");
                return;
            }
        };
    }
    loop {
        match set.wait(1000) {
            Ok(ev) => {
                let pci = ev
                    .device
                    .pci_info()
                    .map(|p| normalize_pci(&p.bus_id))
                    .unwrap_or_default();
                let xid = match ev.event_data {
                    Some(XidError::Value(x)) => x,
                    // A double-bit ECC event without an XID: report it as XID 48.
                    _ if ev.event_type.contains(EventTypes::DOUBLE_BIT_ECC_ERROR) => 48,
                    _ => continue,
                };
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((pci, xid));
            }
            Err(nvml_wrapper::error::NvmlError::Timeout) => {}
            Err(_) => std::thread::sleep(std::time::Duration::from_secs(5)),
        }
    }
}

impl GpuDriver for Nvml {
    fn info(&self) -> Result<DriverInfo, String> {
        let n = self.nvml.as_ref().map_err(Clone::clone)?;
        Ok(DriverInfo {
            driver_version: n.sys_driver_version().unwrap_or_default(),
            nvml_version: n.sys_nvml_version().unwrap_or_default(),
            cuda_version: n
                .sys_cuda_driver_version()
                .map(|v| format!("{}.{}", v / 1000, (v % 1000) / 10))
                .unwrap_or_default(),
        })
    }

    fn gpus(&self) -> Vec<DriverGpu> {
        use nvml_wrapper::enum_wrappers::nv_link::IntDeviceType;
        let Ok(n) = &self.nvml else {
            return vec![];
        };
        let count = n.device_count().unwrap_or(0);
        (0..count)
            .filter_map(|i| {
                let d = n.device_by_index(i).ok()?;
                let pci = normalize_pci(&d.pci_info().ok()?.bus_id);
                let mut peers = Vec::new();
                let mut nvswitch = false;
                for link in 0..18 {
                    let l = d.link_wrapper_for(link);
                    if !l.is_active().unwrap_or(false) {
                        continue;
                    }
                    match l.remote_device_type(link) {
                        Ok(IntDeviceType::Switch) => nvswitch = true,
                        _ => {
                            if let Ok(r) = l.remote_pci_info() {
                                let a = normalize_pci(&r.bus_id);
                                if !peers.contains(&a) {
                                    peers.push(a);
                                }
                            }
                        }
                    }
                }
                Some(DriverGpu {
                    uuid: d.uuid().unwrap_or_default(),
                    name: d.name().unwrap_or_default(),
                    memory_mib: d
                        .memory_info()
                        .map(|m| m.total / (1024 * 1024))
                        .unwrap_or(0),
                    minor: d.minor_number().ok(),
                    mig_enabled: d.mig_mode().map(|m| m.current == 1).unwrap_or(false),
                    ecc_enabled: d.is_ecc_enabled().ok().map(|e| e.currently_enabled),
                    nvlink_gpu_peers: peers,
                    nvswitch,
                    pci_address: pci,
                })
            })
            .collect()
    }

    fn sample(&self) -> Vec<GpuSample> {
        use nvml_wrapper::bitmasks::device::ThrottleReasons;
        use nvml_wrapper::enum_wrappers::device::{
            EccCounter, MemoryError, TemperatureSensor, TemperatureThreshold,
        };
        let Ok(n) = &self.nvml else {
            return vec![];
        };
        let count = n.device_count().unwrap_or(0);
        (0..count)
            .filter_map(|i| {
                let d = n.device_by_index(i).ok()?;
                let pci = normalize_pci(&d.pci_info().ok()?.bus_id);
                let temp = d.temperature(TemperatureSensor::Gpu);
                let lost = matches!(temp, Err(nvml_wrapper::error::NvmlError::GpuLost));
                let throttle = d
                    .current_throttle_reasons()
                    .unwrap_or(ThrottleReasons::empty());
                let mem = d.memory_info().ok();
                Some(GpuSample {
                    pci_address: pci,
                    lost,
                    temperature_c: temp.ok(),
                    slowdown_c: d.temperature_threshold(TemperatureThreshold::Slowdown).ok(),
                    power_w: d.power_usage().ok().map(|mw| f64::from(mw) / 1000.0),
                    power_limit_w: d
                        .enforced_power_limit()
                        .ok()
                        .map(|mw| f64::from(mw) / 1000.0),
                    utilization_pct: d.utilization_rates().ok().map(|u| u.gpu),
                    memory_used_bytes: mem.as_ref().map(|m| m.used),
                    memory_total_bytes: mem.as_ref().map(|m| m.total),
                    ecc_corrected: d
                        .total_ecc_errors(MemoryError::Corrected, EccCounter::Volatile)
                        .ok(),
                    ecc_uncorrected: d
                        .total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile)
                        .ok(),
                    pages_pending_retirement: d.are_pages_pending_retired().unwrap_or(false),
                    hw_slowdown: throttle.intersects(
                        ThrottleReasons::HW_SLOWDOWN | ThrottleReasons::HW_THERMAL_SLOWDOWN,
                    ),
                    hw_power_brake: throttle.contains(ThrottleReasons::HW_POWER_BRAKE_SLOWDOWN),
                })
            })
            .collect()
    }

    fn take_xids(&self) -> Vec<(String, u64)> {
        std::mem::take(&mut *self.xids.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A driver for tests and simulations: whatever the test sets.
#[derive(Default)]
pub struct FakeDriver {
    /// What [`GpuDriver::info`] answers.
    pub info: Mutex<Option<Result<DriverInfo, String>>>,
    /// GPUs.
    pub gpus: Mutex<Vec<DriverGpu>>,
    /// Telemetry.
    pub samples: Mutex<Vec<GpuSample>>,
    /// Pending XID events.
    pub xids: Mutex<Vec<(String, u64)>>,
}

impl GpuDriver for FakeDriver {
    fn info(&self) -> Result<DriverInfo, String> {
        self.info
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| Err("no driver".into()))
    }
    fn gpus(&self) -> Vec<DriverGpu> {
        self.gpus.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    fn sample(&self) -> Vec<GpuSample> {
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
    fn take_xids(&self) -> Vec<(String, u64)> {
        std::mem::take(&mut *self.xids.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Judges a GPU from a sample (and a fence, if it has one): `None` when
/// healthy, else why not.
pub fn assess(sample: Option<&GpuSample>, fence: Option<&str>) -> Option<String> {
    if let Some(f) = fence {
        return Some(f.to_string());
    }
    let s = sample?;
    if s.lost {
        return Some("the driver lost the GPU (fallen off the bus?); reset or reboot".into());
    }
    if let Some(n) = s.ecc_uncorrected.filter(|n| *n > 0) {
        return Some(format!(
            "{n} uncorrectable ECC error(s) since the driver loaded; reset the GPU"
        ));
    }
    if s.pages_pending_retirement {
        return Some("memory pages are pending retirement; reset the GPU".into());
    }
    if let (Some(t), Some(limit)) = (s.temperature_c, s.slowdown_c) {
        if limit > 0 && t >= limit {
            return Some(format!(
                "overheating: {t} °C at or above the slowdown threshold of {limit} °C"
            ));
        }
    }
    if s.hw_power_brake {
        return Some("hardware power brake engaged (power supply or board signal)".into());
    }
    if s.hw_slowdown {
        return Some("hardware slowdown engaged".into());
    }
    None
}

/// Health and telemetry of this host's GPUs, with fences that outlive the agent.
pub struct GpuMonitor {
    driver: Arc<dyn GpuDriver>,
    fences_file: Option<PathBuf>,
    state: Mutex<MonitorState>,
}

impl std::fmt::Debug for GpuMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuMonitor")
            .field("fences_file", &self.fences_file)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct MonitorState {
    /// PCI address → why fenced.
    fences: BTreeMap<String, String>,
    /// `(pci, xid)` → events seen.
    xid_counts: BTreeMap<(String, u64), u64>,
}

/// What the monitor saw at one look.
#[derive(Debug, Clone, Default)]
pub struct GpuView {
    /// Telemetry per PCI address.
    pub samples: HashMap<String, GpuSample>,
    /// Why a GPU is unhealthy, per PCI address (absent: healthy).
    pub unhealthy: HashMap<String, String>,
    /// XID events seen since the agent started, per `(pci, xid)`.
    pub xid_counts: BTreeMap<(String, u64), u64>,
}

impl GpuMonitor {
    /// A monitor over a driver; fences are kept in `fences_file` if given.
    pub fn new(driver: Arc<dyn GpuDriver>, fences_file: Option<PathBuf>) -> Self {
        let fences = fences_file
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        Self {
            driver,
            fences_file,
            state: Mutex::new(MonitorState {
                fences,
                xid_counts: BTreeMap::new(),
            }),
        }
    }

    /// The driver.
    pub fn driver(&self) -> &Arc<dyn GpuDriver> {
        &self.driver
    }

    /// Takes new XID events, then judges every GPU the driver sees.
    pub fn look(&self) -> GpuView {
        let xids = self.driver.take_xids();
        let samples: HashMap<String, GpuSample> = self
            .driver
            .sample()
            .into_iter()
            .map(|s| (s.pci_address.clone(), s))
            .collect();
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut fenced_now = false;
        for (pci, xid) in xids {
            *st.xid_counts.entry((pci.clone(), xid)).or_default() += 1;
            if xid_fences(xid) && !st.fences.contains_key(&pci) {
                tracing::error!(gpu = %pci, xid, meaning = xid_meaning(xid), "GPU fenced");
                st.fences.insert(
                    pci,
                    format!(
                        "XID {xid} ({}) at {}; after fixing the GPU, clear it with `gpucloud agent --clear-gpu-fences`",
                        xid_meaning(xid),
                        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
                    ),
                );
                fenced_now = true;
            } else if !xid_fences(xid) {
                tracing::info!(gpu = %pci, xid, meaning = xid_meaning(xid), "application XID (GPU stays in service)");
            }
        }
        if fenced_now {
            self.save(&st.fences);
        }
        let mut unhealthy = HashMap::new();
        let mut pcis: Vec<&String> = samples.keys().chain(st.fences.keys()).collect();
        pcis.sort_unstable();
        pcis.dedup();
        for pci in pcis {
            if let Some(why) = assess(samples.get(pci), st.fences.get(pci).map(String::as_str)) {
                unhealthy.insert(pci.clone(), why);
            }
        }
        GpuView {
            samples,
            unhealthy,
            xid_counts: st.xid_counts.clone(),
        }
    }

    fn save(&self, fences: &BTreeMap<String, String>) {
        let Some(p) = &self.fences_file else {
            return;
        };
        let text = serde_json::to_string_pretty(fences).unwrap_or_default();
        let tmp = p.with_extension("tmp");
        if let Err(e) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, p)) {
            tracing::error!(file = %p.display(), error = %e, "could not keep the GPU fences");
        }
    }

    /// Forgets every fence (an operator reset the GPUs).
    pub fn clear_fences(&self) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.fences.clear();
        self.save(&st.fences);
    }
}

/// Groups GPUs into NVLink domains: GPUs joined by NVLink (directly or
/// through NVSwitches) share a domain. Returns PCI address → domain number
/// (numbered by the lowest PCI address in each), for GPUs with NVLink only.
pub fn nvlink_domains(gpus: &[DriverGpu]) -> HashMap<String, u32> {
    let mut addrs: Vec<&str> = gpus.iter().map(|g| g.pci_address.as_str()).collect();
    addrs.sort_unstable();
    let idx: HashMap<&str, usize> = addrs.iter().enumerate().map(|(i, a)| (*a, i)).collect();
    // Union-find; slot `n` stands for the NVSwitch fabric.
    let n = addrs.len();
    let mut parent: Vec<usize> = (0..=n).collect();
    fn find(p: &mut [usize], mut x: usize) -> usize {
        while p[x] != x {
            p[x] = p[p[x]];
            x = p[x];
        }
        x
    }
    let mut linked = vec![false; n + 1];
    for g in gpus {
        let a = idx[g.pci_address.as_str()];
        let join = |b: usize, parent: &mut Vec<usize>| {
            let (ra, rb) = (find(parent, a), find(parent, b));
            parent[ra.max(rb)] = ra.min(rb);
        };
        if g.nvswitch {
            join(n, &mut parent);
            linked[a] = true;
        }
        for peer in &g.nvlink_gpu_peers {
            if let Some(&b) = idx.get(peer.as_str()) {
                join(b, &mut parent);
                linked[a] = true;
                linked[b] = true;
            }
        }
    }
    let mut out = HashMap::new();
    for (i, a) in addrs.iter().enumerate() {
        if linked[i] {
            let root = find(&mut parent, i);
            // The root is the lowest member's slot unless only the fabric
            // slot (n) is shared: then use the lowest GPU linked to it.
            let domain = if root == n {
                (0..n)
                    .find(|j| linked[*j] && find(&mut parent, *j) == n)
                    .unwrap_or(i)
            } else {
                root
            };
            out.insert(a.to_string(), domain as u32);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(pci: &str) -> GpuSample {
        GpuSample {
            pci_address: pci.into(),
            temperature_c: Some(40),
            slowdown_c: Some(87),
            ecc_uncorrected: Some(0),
            ..Default::default()
        }
    }

    #[test]
    fn application_xids_do_not_fence_and_the_others_stay_fenced() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("gpu-fences.json");
        let drv = Arc::new(FakeDriver::default());
        *drv.samples.lock().unwrap() = vec![sample("0000:18:00.0"), sample("0000:2a:00.0")];
        let mon = GpuMonitor::new(drv.clone(), Some(file.clone()));
        for x in APPLICATION_XIDS {
            drv.xids.lock().unwrap().push(("0000:18:00.0".into(), x));
        }
        let v = mon.look();
        assert!(v.unhealthy.is_empty(), "{:?}", v.unhealthy);
        assert_eq!(v.xid_counts.len(), 5);
        drv.xids.lock().unwrap().push(("0000:2a:00.0".into(), 79));
        let v = mon.look();
        assert!(v.unhealthy["0000:2a:00.0"].contains("XID 79 (GPU has fallen off the bus)"));
        assert!(!v.unhealthy.contains_key("0000:18:00.0"));
        // Still fenced at the next look, and for a new agent.
        assert!(mon.look().unhealthy.contains_key("0000:2a:00.0"));
        let again = GpuMonitor::new(drv.clone(), Some(file.clone()));
        assert!(again.look().unhealthy.contains_key("0000:2a:00.0"));
        again.clear_fences();
        assert!(GpuMonitor::new(drv, Some(file)).look().unhealthy.is_empty());
    }

    #[test]
    fn telemetry_makes_a_gpu_unhealthy_while_it_lasts() {
        let ok = sample("a");
        assert_eq!(assess(Some(&ok), None), None);
        let hot = GpuSample {
            temperature_c: Some(90),
            ..ok.clone()
        };
        assert!(assess(Some(&hot), None).unwrap().contains("overheating"));
        let ecc = GpuSample {
            ecc_uncorrected: Some(2),
            ..ok.clone()
        };
        assert!(assess(Some(&ecc), None)
            .unwrap()
            .contains("2 uncorrectable ECC"));
        let pending = GpuSample {
            pages_pending_retirement: true,
            ..ok.clone()
        };
        assert!(assess(Some(&pending), None).unwrap().contains("retirement"));
        let brake = GpuSample {
            hw_power_brake: true,
            ..ok.clone()
        };
        assert!(assess(Some(&brake), None).unwrap().contains("power brake"));
        let lost = GpuSample {
            lost: true,
            ..ok.clone()
        };
        assert!(assess(Some(&lost), None).unwrap().contains("lost"));
        // Corrected errors alone are fine.
        let corrected = GpuSample {
            ecc_corrected: Some(1000),
            ..ok
        };
        assert_eq!(assess(Some(&corrected), None), None);
        assert_eq!(
            assess(None, None),
            None,
            "no telemetry (vfio-bound) is not a fault"
        );
    }

    #[test]
    fn nvlink_domains_follow_links_and_switches() {
        let g = |pci: &str, peers: &[&str], sw: bool| DriverGpu {
            pci_address: pci.into(),
            nvlink_gpu_peers: peers.iter().map(|s| s.to_string()).collect(),
            nvswitch: sw,
            ..Default::default()
        };
        // Two NVLink bridge pairs and a PCIe-only GPU.
        let d = nvlink_domains(&[
            g("0000:01:00.0", &["0000:02:00.0"], false),
            g("0000:02:00.0", &["0000:01:00.0"], false),
            g("0000:03:00.0", &["0000:04:00.0"], false),
            g("0000:04:00.0", &["0000:03:00.0"], false),
            g("0000:05:00.0", &[], false),
        ]);
        assert_eq!(d["0000:01:00.0"], d["0000:02:00.0"]);
        assert_eq!(d["0000:03:00.0"], d["0000:04:00.0"]);
        assert_ne!(d["0000:01:00.0"], d["0000:03:00.0"]);
        assert!(!d.contains_key("0000:05:00.0"));
        // An 8-GPU NVSwitch board is one domain.
        let board: Vec<DriverGpu> = (0..8)
            .map(|i| g(&format!("0000:{:02x}:00.0", 0x18 + i), &[], true))
            .collect();
        let d = nvlink_domains(&board);
        assert_eq!(d.len(), 8);
        assert!(d.values().all(|v| *v == d["0000:18:00.0"]));
    }

    #[test]
    fn pci_ids_and_driver_names() {
        assert_eq!(normalize_pci("00000000:18:00.0"), "0000:18:00.0");
        assert_eq!(normalize_pci("0000:9A:00.0"), "0000:9a:00.0");
        use gpucloud_core::gpu::GpuModel;
        for (name, mem, want) in [
            ("NVIDIA H100 80GB HBM3", 81_559, GpuModel::H100),
            ("NVIDIA H100 PCIe", 81_559, GpuModel::H100),
            ("NVIDIA H200", 143_771, GpuModel::H200),
            ("NVIDIA A100-SXM4-80GB", 81_920, GpuModel::A100_80),
            ("NVIDIA A100-PCIE-40GB", 40_960, GpuModel::A100_40),
            ("NVIDIA A10", 23_028, GpuModel::A10),
            ("Tesla T4", 15_360, GpuModel::T4),
            ("NVIDIA L40S", 46_068, GpuModel::L40S),
        ] {
            assert_eq!(GpuModel::from_driver_name(name, mem), Some(want), "{name}");
        }
        assert_eq!(
            GpuModel::from_driver_name("NVIDIA GeForce RTX 4090", 24_000),
            None
        );
    }

    #[test]
    fn without_a_driver_the_agent_says_why() {
        let n = Nvml::load(Some(std::ffi::OsStr::new("/nonexistent/libnvidia-ml.so.1")));
        let why = n.info().unwrap_err();
        assert!(why.contains("not installed"), "{why}");
        assert!(n.gpus().is_empty() && n.sample().is_empty() && n.take_xids().is_empty());
    }
}
