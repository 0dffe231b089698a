//! `gpucloud doctor`: what this host can and cannot do, and why.
//!
//! Every check reads the machine (sysfs, procfs, `/dev`, the tools on PATH)
//! rather than assuming; the roots are parameters so tests run against fake
//! trees. KVM is judged by booting a 512-byte guest that writes to the serial
//! port and powers off through QEMU's `isa-debug-exit`: on some nested hosts
//! `/dev/kvm` exists and opens, but a guest never runs.

use crate::host::{cgroup_v2_unified, pick_oci_runtime};
use crate::inventory::scan_pci_gpus;
use crate::nvml::GpuDriver;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Works.
    Ok,
    /// Works partly, or not needed everywhere.
    Warn,
    /// Does not work.
    Fail,
    /// A fact.
    Info,
}

/// One finding.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub area: &'static str,
    /// Outcome.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do about it (empty when nothing).
    pub fix: String,
}

/// Something the host can offer, or not.
#[derive(Debug, Clone, Serialize)]
pub struct Capability {
    /// What.
    pub what: &'static str,
    /// Whether it works here.
    pub available: bool,
    /// Why (not).
    pub why: String,
}

/// The whole answer.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Findings, in order.
    pub checks: Vec<Check>,
    /// What the host can do.
    pub capabilities: Vec<Capability>,
}

/// Where to look.
#[derive(Debug, Clone)]
pub struct Roots {
    /// `/sys`.
    pub sysfs: PathBuf,
    /// `/proc`.
    pub procfs: PathBuf,
    /// `/dev`.
    pub dev: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Self {
            sysfs: "/sys".into(),
            procfs: "/proc".into(),
            dev: "/dev".into(),
        }
    }
}

fn check(
    area: &'static str,
    status: Status,
    detail: impl Into<String>,
    fix: impl Into<String>,
) -> Check {
    Check {
        area,
        status,
        detail: detail.into(),
        fix: fix.into(),
    }
}

fn find_bin(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn first_line(bin: &Path, arg: &str) -> String {
    Command::new(bin)
        .arg(arg)
        .stdin(Stdio::null())
        .output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

/// A boot sector that prints "KVM" on COM1 and exits QEMU through
/// `isa-debug-exit` (QEMU's exit status becomes `(0x10 << 1) | 1` = 33).
pub fn probe_boot_sector() -> [u8; 512] {
    let code: [u8; 21] = [
        0xBA, 0xF8, 0x03, // mov dx, 0x3f8
        0xB0, b'K', 0xEE, // mov al, 'K'; out dx, al
        0xB0, b'V', 0xEE, // mov al, 'V'; out dx, al
        0xB0, b'M', 0xEE, // mov al, 'M'; out dx, al
        0xBA, 0xF4, 0x00, // mov dx, 0xf4
        0xB0, 0x10, 0xEE, // mov al, 0x10; out dx, al
        0xF4, // hlt
        0xEB, 0xFD, // jmp back to hlt
    ];
    let mut s = [0u8; 512];
    s[..code.len()].copy_from_slice(&code);
    s[510] = 0x55;
    s[511] = 0xAA;
    s
}

/// Boots the probe guest with `accel` (`kvm` or `tcg`); returns how long it
/// took, or why it did not run.
pub fn probe_guest(qemu: &Path, accel: &str, timeout: Duration) -> Result<Duration, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let img = dir.path().join("probe.img");
    std::fs::write(&img, probe_boot_sector()).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut child = Command::new(qemu)
        .args([
            "-accel",
            accel,
            "-m",
            "16",
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
        ])
        .args(["-serial", "stdio", "-monitor", "none"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .arg("-drive")
        .arg(format!("file={},format=raw,if=ide,index=0", img.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", qemu.display()))?;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let out = child
                    .wait_with_output()
                    .map(|o| {
                        (
                            String::from_utf8_lossy(&o.stdout).to_string(),
                            String::from_utf8_lossy(&o.stderr).trim().to_string(),
                        )
                    })
                    .unwrap_or_default();
                return if status.code() == Some(33) && out.0.contains("KVM") {
                    Ok(started.elapsed())
                } else {
                    Err(format!(
                        "the probe guest did not run (exit {:?}{})",
                        status.code(),
                        if out.1.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", out.1)
                        }
                    ))
                };
            }
            Ok(None) if started.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "the probe guest hung for {} s (a nested hypervisor that exposes /dev/kvm but does not run guests)",
                    timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Judges KVM from the probe's times under KVM and TCG. A healthy KVM runs
/// the probe in well under a second; a nested hypervisor that traps every
/// exit can take seconds — slower than software emulation — and there full
/// guests hang.
pub fn kvm_verdict(kvm: Duration, tcg: Option<Duration>) -> Result<(), String> {
    let limit = Duration::from_secs(2);
    let slower = tcg.filter(|t| kvm > *t * 4 + Duration::from_millis(500));
    match (kvm > limit, slower) {
        (false, None) => Ok(()),
        (_, Some(t)) => Err(format!(
            "a probe guest took {} ms under KVM but {} ms under software emulation (a nested hypervisor that traps every exit; full guests hang)",
            kvm.as_millis(),
            t.as_millis()
        )),
        (true, None) => Err(format!(
            "a probe guest took {} ms under KVM (expected well under a second)",
            kvm.as_millis()
        )),
    }
}

/// Whether KVM runs guests here: boots the probe guest under KVM and, to
/// judge it, under TCG. `Ok` with the KVM time, or why not.
pub fn kvm_usable(qemu: &Path) -> Result<Duration, String> {
    let t = probe_guest(qemu, "kvm", Duration::from_secs(10))?;
    let tcg = probe_guest(qemu, "tcg", Duration::from_secs(30)).ok();
    kvm_verdict(t, tcg).map(|()| t)
}

/// Examines the host. `probe_kvm` boots the probe guest when QEMU is installed.
pub fn examine(roots: &Roots, driver: &dyn GpuDriver, probe_kvm: bool) -> Report {
    let mut checks = Vec::new();
    let mut caps = Vec::new();
    let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();

    // Privileges.
    let root = read(roots.procfs.join("self/status"))
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        .unwrap_or(false);
    checks.push(if root {
        check("privileges", Status::Ok, "running as root", "")
    } else {
        check(
            "privileges",
            Status::Warn,
            "not running as root: instances, cgroups and network namespaces need root",
            "run the agent (and this check) as root",
        )
    });

    // CPU and memory.
    let cpuinfo = read(roots.procfs.join("cpuinfo"));
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':').map(|(_, v)| v.trim().to_string()))
        .unwrap_or_else(|| "unknown".into());
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let mem_kib: u64 = read(roots.procfs.join("meminfo"))
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    checks.push(check(
        "cpu and memory",
        Status::Info,
        format!(
            "{cpus} CPU(s), {model}; {} GiB memory",
            mem_kib / 1024 / 1024
        ),
        "",
    ));

    // KVM.
    let flags = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap_or("")
        .to_string();
    let vt = flags.split_whitespace().any(|f| f == "vmx" || f == "svm");
    let kvm_dev = roots.dev.join("kvm").exists();
    let qemu = find_bin("qemu-system-x86_64");
    let kvm_ok = match (kvm_dev, &qemu, probe_kvm) {
        (false, _, _) => {
            checks.push(check(
                "kvm",
                Status::Fail,
                format!(
                    "no /dev/kvm{}",
                    if vt { "" } else { " and the CPU shows no vmx/svm flag" }
                ),
                if vt {
                    "load the kvm module (modprobe kvm_intel or kvm_amd)"
                } else {
                    "enable virtualisation (VT-x/AMD-V) in the firmware, or nested virtualisation on the hypervisor"
                },
            ));
            false
        }
        (true, Some(q), true) => match kvm_usable(q) {
            Ok(t) => {
                checks.push(check(
                    "kvm",
                    Status::Ok,
                    format!("a probe guest ran under KVM in {} ms", t.as_millis()),
                    "",
                ));
                true
            }
            Err(why) => {
                checks.push(check(
                    "kvm",
                    Status::Fail,
                    format!("/dev/kvm exists but is not usable: {why}"),
                    "virtual machines fall back to TCG (slow, no GPU passthrough); use a host with working hardware virtualisation for production",
                ));
                false
            }
        },
        (true, None, _) => {
            checks.push(check(
                "kvm",
                Status::Warn,
                "/dev/kvm exists; not verified by running a guest because QEMU is not installed",
                "apt-get install qemu-system-x86, then run gpucloud doctor again",
            ));
            false
        }
        (true, Some(_), false) => {
            checks.push(check(
                "kvm",
                Status::Info,
                "/dev/kvm exists (probe skipped)",
                "",
            ));
            false
        }
    };

    // IOMMU and VFIO.
    let groups = std::fs::read_dir(roots.sysfs.join("kernel/iommu_groups"))
        .map(|d| d.count())
        .unwrap_or(0);
    let cmdline = read(roots.procfs.join("cmdline"));
    let iommu_ok = groups > 0;
    checks.push(if iommu_ok {
        check("iommu", Status::Ok, format!("{groups} IOMMU group(s)"), "")
    } else {
        check(
            "iommu",
            Status::Fail,
            if cmdline.contains("iommu=") {
                "no IOMMU groups, although the kernel command line mentions the IOMMU".to_string()
            } else {
                "no IOMMU groups: the IOMMU is off or absent".to_string()
            },
            "enable VT-d/AMD-Vi in the firmware and boot with intel_iommu=on iommu=pt (or amd_iommu=on)",
        )
    });
    let vfio_driver = roots.sysfs.join("bus/pci/drivers/vfio-pci").exists();
    let vfio_dev = roots.dev.join("vfio/vfio").exists();
    let vfio_ok = vfio_driver && vfio_dev;
    checks.push(if vfio_ok {
        check(
            "vfio",
            Status::Ok,
            "vfio-pci is loaded and /dev/vfio/vfio exists",
            "",
        )
    } else {
        check(
            "vfio",
            Status::Fail,
            match (vfio_driver, vfio_dev) {
                (false, false) => {
                    "the vfio-pci driver is not loaded and there is no /dev/vfio/vfio"
                }
                (false, true) => "the vfio-pci driver is not loaded",
                _ => "there is no /dev/vfio/vfio",
            },
            "modprobe vfio-pci (and have an IOMMU)",
        )
    });

    // GPUs and the driver.
    let pci = scan_pci_gpus(&roots.sysfs);
    checks.push(if pci.is_empty() {
        check(
            "gpus (sysfs)",
            Status::Info,
            "no NVIDIA GPU (vendor 0x10de, class 0x0300/0x0302) on the PCI bus",
            "",
        )
    } else {
        let list: Vec<String> = pci
            .iter()
            .map(|g| {
                format!(
                    "{} (device {:04x}, driver {})",
                    g.address,
                    g.device_id,
                    g.driver.as_deref().unwrap_or("none")
                )
            })
            .collect();
        check(
            "gpus (sysfs)",
            Status::Ok,
            format!("{} GPU(s): {}", pci.len(), list.join(", ")),
            "",
        )
    });
    let driver_info = driver.info();
    match &driver_info {
        Ok(i) => checks.push(check(
            "nvidia driver",
            Status::Ok,
            format!(
                "driver {}, NVML {}, CUDA {}; {} GPU(s) managed",
                i.driver_version,
                i.nvml_version,
                i.cuda_version,
                driver.gpus().len()
            ),
            "",
        )),
        Err(why) => checks.push(check(
            "nvidia driver",
            if pci.is_empty() { Status::Info } else { Status::Fail },
            why.clone(),
            if pci.is_empty() {
                ""
            } else {
                "install the NVIDIA driver (libnvidia-ml.so.1 and the kernel module) for GPU containers and GPU health"
            },
        )),
    }
    let device_nodes =
        roots.dev.join("nvidiactl").exists() && roots.dev.join("nvidia-uvm").exists();

    // Containers.
    let oci = pick_oci_runtime(&roots.sysfs);
    let v2 = cgroup_v2_unified(&roots.sysfs);
    match &oci {
        Some(b) => checks.push(check(
            "oci runtime",
            Status::Ok,
            format!("{} ({})", b.display(), first_line(b, "--version")),
            "",
        )),
        None => checks.push(check(
            "oci runtime",
            Status::Fail,
            "neither runc nor crun is installed",
            "apt-get install runc",
        )),
    }
    let cg = roots.sysfs.join("fs/cgroup");
    let controllers: Vec<String> = if v2 {
        read(cg.join("cgroup.controllers"))
            .split_whitespace()
            .map(String::from)
            .collect()
    } else {
        ["cpu", "cpuset", "memory", "pids", "devices"]
            .iter()
            .filter(|c| cg.join(c).exists())
            .map(|c| c.to_string())
            .collect()
    };
    let needed = ["cpu", "cpuset", "memory", "pids"];
    let missing: Vec<&str> = needed
        .iter()
        .copied()
        .filter(|c| !controllers.iter().any(|x| x == c))
        .collect();
    checks.push(check(
        "cgroups",
        if missing.is_empty() { Status::Ok } else { Status::Fail },
        format!(
            "{} with controllers {}{}",
            if v2 { "cgroup v2 (unified)" } else { "cgroup v1 or hybrid" },
            controllers.join(" "),
            if missing.is_empty() {
                String::new()
            } else {
                format!("; missing {}", missing.join(", "))
            }
        ),
        if missing.is_empty() {
            ""
        } else {
            "enable the missing controllers (systemd.unified_cgroup_hierarchy and cgroup_enable= on the kernel command line)"
        },
    ));

    // Networking.
    match find_bin("nft") {
        Some(b) => {
            let listed = Command::new(&b)
                .args(["list", "tables"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output();
            let (status, detail) = match listed {
                Ok(o) if o.status.success() => {
                    (Status::Ok, format!("{} works", first_line(&b, "--version")))
                }
                Ok(o) => (
                    Status::Warn,
                    format!(
                        "{} is installed but cannot list tables: {}",
                        first_line(&b, "--version"),
                        String::from_utf8_lossy(&o.stderr).trim()
                    ),
                ),
                Err(e) => (Status::Warn, e.to_string()),
            };
            checks.push(check(
                "nftables",
                status,
                detail,
                if status == Status::Ok {
                    ""
                } else {
                    "run as root"
                },
            ));
        }
        None => checks.push(check(
            "nftables",
            Status::Fail,
            "nft is not installed: security groups and load balancers need it",
            "apt-get install nftables",
        )),
    }

    // What that adds up to.
    let containers = oci.is_some() && root && missing.is_empty();
    caps.push(Capability {
        what: "container instances",
        available: containers,
        why: if containers {
            "an OCI runtime, root and the needed cgroup controllers".into()
        } else if oci.is_none() {
            "no runc or crun".into()
        } else if !root {
            "not root".into()
        } else {
            format!("cgroup controllers missing: {}", missing.join(", "))
        },
    });
    let gpu_containers = containers && !pci.is_empty() && driver_info.is_ok() && device_nodes;
    caps.push(Capability {
        what: "GPU container instances",
        available: gpu_containers,
        why: if gpu_containers {
            "GPUs, the NVIDIA driver and its device nodes".into()
        } else if pci.is_empty() {
            "no NVIDIA GPU".into()
        } else if let Err(why) = &driver_info {
            why.clone()
        } else if !device_nodes {
            "/dev/nvidiactl or /dev/nvidia-uvm missing (load nvidia-uvm)".into()
        } else {
            "no container runtime".into()
        },
    });
    let vm_tools: Vec<&str> = [("qemu-img", "qemu-utils"), ("genisoimage", "genisoimage")]
        .into_iter()
        .filter(|(b, _)| find_bin(b).is_none())
        .map(|(_, pkg)| pkg)
        .collect();
    caps.push(Capability {
        what: "virtual machines",
        available: qemu.is_some() && vm_tools.is_empty(),
        why: match (&qemu, kvm_ok) {
            (None, _) => "QEMU is not installed (apt-get install qemu-system-x86)".into(),
            (Some(_), _) if !vm_tools.is_empty() => format!(
                "disks and cloud-init seeds need apt-get install {}",
                vm_tools.join(" ")
            ),
            (Some(_), true) => "QEMU with KVM".into(),
            (Some(_), false) => "QEMU with TCG only (software emulation: slow)".into(),
        },
    });
    let passthrough = kvm_ok && iommu_ok && vfio_ok && !pci.is_empty();
    caps.push(Capability {
        what: "GPU passthrough to VMs (VFIO)",
        available: passthrough,
        why: if passthrough {
            "KVM, an IOMMU, vfio-pci and GPUs".into()
        } else {
            let mut why = Vec::new();
            if pci.is_empty() {
                why.push("no NVIDIA GPU");
            }
            if !kvm_ok {
                why.push("KVM is not usable");
            }
            if !iommu_ok {
                why.push("no IOMMU");
            }
            if !vfio_ok {
                why.push("vfio-pci is not available");
            }
            why.join("; ")
        },
    });
    Report {
        checks,
        capabilities: caps,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvml::FakeDriver;

    fn fake_roots(dir: &Path) -> Roots {
        let r = Roots {
            sysfs: dir.join("sys"),
            procfs: dir.join("proc"),
            dev: dir.join("dev"),
        };
        std::fs::create_dir_all(r.procfs.join("self")).unwrap();
        std::fs::create_dir_all(&r.dev).unwrap();
        std::fs::write(r.procfs.join("self/status"), "Name:\tx\nUid:\t0\t0\t0\t0\n").unwrap();
        std::fs::write(
            r.procfs.join("cpuinfo"),
            "processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: fpu sse2\nprocessor\t: 1\nmodel name\t: Test CPU\n",
        )
        .unwrap();
        std::fs::write(r.procfs.join("meminfo"), "MemTotal:       33554432 kB\n").unwrap();
        std::fs::write(r.procfs.join("cmdline"), "quiet\n").unwrap();
        std::fs::create_dir_all(r.sysfs.join("fs/cgroup")).unwrap();
        std::fs::write(
            r.sysfs.join("fs/cgroup/cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        r
    }

    #[test]
    fn a_cpu_only_host_without_kvm_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let roots = fake_roots(dir.path());
        let rep = examine(&roots, &FakeDriver::default(), false);
        let by = |a: &str| rep.checks.iter().find(|c| c.area == a).unwrap().clone();
        assert_eq!(by("kvm").status, Status::Fail);
        assert!(by("kvm").detail.contains("no vmx/svm"), "{:?}", by("kvm"));
        assert_eq!(by("iommu").status, Status::Fail);
        assert!(by("iommu").fix.contains("intel_iommu=on"));
        assert_eq!(by("vfio").status, Status::Fail);
        assert_eq!(by("cgroups").status, Status::Ok, "{:?}", by("cgroups"));
        assert_eq!(
            by("nvidia driver").status,
            Status::Info,
            "no GPU, no driver needed"
        );
        assert!(by("cpu and memory")
            .detail
            .contains("2 CPU(s), Test CPU; 32 GiB"));
        let cap = |w: &str| {
            rep.capabilities
                .iter()
                .find(|c| c.what == w)
                .unwrap()
                .clone()
        };
        let pt = cap("GPU passthrough to VMs (VFIO)");
        assert!(!pt.available);
        assert!(
            pt.why.contains("no NVIDIA GPU")
                && pt.why.contains("no IOMMU")
                && pt.why.contains("vfio-pci")
        );
        assert!(!cap("GPU container instances").available);
    }

    #[test]
    fn a_gpu_host_with_iommu_and_vfio() {
        let dir = tempfile::tempdir().unwrap();
        let roots = fake_roots(dir.path());
        for g in 0..3 {
            std::fs::create_dir_all(roots.sysfs.join(format!("kernel/iommu_groups/{g}"))).unwrap();
        }
        std::fs::create_dir_all(roots.sysfs.join("bus/pci/drivers/vfio-pci")).unwrap();
        std::fs::create_dir_all(roots.dev.join("vfio")).unwrap();
        std::fs::write(roots.dev.join("vfio/vfio"), "").unwrap();
        std::fs::write(roots.dev.join("kvm"), "").unwrap();
        let d = roots.sysfs.join("bus/pci/devices/0000:18:00.0");
        std::fs::create_dir_all(&d).unwrap();
        for (f, v) in [
            ("vendor", "0x10de"),
            ("device", "0x2330"),
            ("class", "0x030200"),
            ("numa_node", "0"),
        ] {
            std::fs::write(d.join(f), v).unwrap();
        }
        let rep = examine(&roots, &FakeDriver::default(), false);
        let by = |a: &str| rep.checks.iter().find(|c| c.area == a).unwrap().clone();
        assert_eq!(by("iommu").status, Status::Ok);
        assert_eq!(by("vfio").status, Status::Ok);
        assert!(by("gpus (sysfs)")
            .detail
            .contains("0000:18:00.0 (device 2330"));
        assert_eq!(
            by("nvidia driver").status,
            Status::Fail,
            "GPUs without a driver"
        );
        let pt = rep
            .capabilities
            .iter()
            .find(|c| c.what == "GPU passthrough to VMs (VFIO)")
            .unwrap();
        assert!(
            !pt.available && pt.why.contains("KVM is not usable"),
            "{pt:?}"
        );
    }

    #[test]
    fn kvm_slower_than_tcg_is_not_trusted() {
        let ms = Duration::from_millis;
        assert!(kvm_verdict(ms(150), Some(ms(200))).is_ok());
        assert!(kvm_verdict(ms(150), None).is_ok());
        let e = kvm_verdict(ms(5000), Some(ms(200))).unwrap_err();
        assert!(e.contains("5000 ms under KVM but 200 ms"), "{e}");
        assert!(kvm_verdict(ms(3000), None).is_err());
    }

    #[test]
    fn the_probe_guest_runs_under_tcg() {
        let Some(qemu) = find_bin("qemu-system-x86_64") else {
            eprintln!("skipping: QEMU is not installed");
            return;
        };
        let t = probe_guest(&qemu, "tcg", Duration::from_secs(60)).unwrap();
        assert!(t < Duration::from_secs(60));
    }
}
