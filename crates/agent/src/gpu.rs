//! What a container needs to use its GPUs: the device nodes and the driver's
//! user-space files, the way NVIDIA's container toolkit provides them.
//!
//! [`GpuDevices`] is the hardware edge: [`NvidiaDevices`] reads the real
//! `/dev` and `/proc/driver/nvidia`, tests use a fixed fake. The OCI spec
//! builder only sees the trait.

use gpucloud_agent_api::AssignedGpu;
use std::path::{Path, PathBuf};

/// A character device to create in the container and allow in its cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceNode {
    /// Path inside the container (same as on the host).
    pub path: PathBuf,
    /// Major number.
    pub major: i64,
    /// Minor number.
    pub minor: i64,
}

/// The GPU devices and driver files of a host.
pub trait GpuDevices: Send + Sync + 'static {
    /// `/dev/nvidiaN` of one GPU.
    fn gpu_node(&self, gpu: &AssignedGpu) -> Option<DeviceNode>;
    /// Control nodes every GPU container needs (`nvidiactl`, `nvidia-uvm`, …).
    fn control_nodes(&self) -> Vec<DeviceNode>;
    /// Driver libraries and tools to bind-mount read-only (`libcuda.so.*`,
    /// `libnvidia-ml.so.*`, `nvidia-smi`).
    fn driver_files(&self) -> Vec<PathBuf>;
}

/// The real NVIDIA devices of this host.
#[derive(Debug, Clone)]
pub struct NvidiaDevices {
    /// `/dev`.
    pub dev: PathBuf,
    /// `/proc`.
    pub proc: PathBuf,
    /// Directories searched for driver libraries.
    pub lib_dirs: Vec<PathBuf>,
    /// Directories searched for driver tools.
    pub bin_dirs: Vec<PathBuf>,
}

impl Default for NvidiaDevices {
    fn default() -> Self {
        Self {
            dev: "/dev".into(),
            proc: "/proc".into(),
            lib_dirs: [
                "/usr/lib/x86_64-linux-gnu",
                "/usr/lib64",
                "/usr/lib",
                "/usr/local/nvidia/lib64",
                "/usr/local/nvidia/lib",
                "/lib/x86_64-linux-gnu",
            ]
            .iter()
            .map(PathBuf::from)
            .collect(),
            bin_dirs: ["/usr/bin", "/usr/local/nvidia/bin", "/usr/sbin"]
                .iter()
                .map(PathBuf::from)
                .collect(),
        }
    }
}

/// Driver libraries a CUDA program needs (prefixes of file names).
const LIBS: &[&str] = &[
    "libcuda.so",
    "libnvidia-ml.so",
    "libnvidia-ptxjitcompiler.so",
    "libnvidia-nvvm.so",
    "libcudadebugger.so",
    "libnvidia-gpucomp.so",
];
const TOOLS: &[&str] = &["nvidia-smi", "nvidia-debugdump", "nvidia-persistenced"];

/// Where a driver file of the host goes inside a container whose root
/// filesystem is `rootfs`: libraries into the image's own library directory
/// and tools into `/usr/bin`, whatever directory the host's driver installs
/// to (`/usr/local/nvidia/lib64` on some hosts), so the image's dynamic
/// loader and `PATH` find them with no `LD_LIBRARY_PATH` — what NVIDIA's
/// container toolkit does. The library directory is the multiarch one
/// (Debian, Ubuntu, and images with no libraries yet) unless the image has
/// only `/usr/lib64` (Red Hat family).
pub fn container_destination(host_file: &Path, rootfs: &Path) -> PathBuf {
    let Some(name) = host_file.file_name().and_then(|n| n.to_str()) else {
        return host_file.to_path_buf();
    };
    if TOOLS.contains(&name) {
        return Path::new("/usr/bin").join(name);
    }
    if LIBS.iter().any(|l| name.starts_with(l)) {
        let multiarch = "usr/lib/x86_64-linux-gnu";
        let dir = if !rootfs.join(multiarch).is_dir() && rootfs.join("usr/lib64").is_dir() {
            "/usr/lib64"
        } else {
            "/usr/lib/x86_64-linux-gnu"
        };
        return Path::new(dir).join(name);
    }
    host_file.to_path_buf()
}

/// Major and minor of a character device file.
pub fn char_device(path: &Path) -> Option<(i64, i64)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = std::fs::metadata(path).ok()?;
    if !m.file_type().is_char_device() {
        return None;
    }
    let rdev = m.rdev();
    // Linux dev_t encoding.
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    Some((major as i64, minor as i64))
}

impl NvidiaDevices {
    /// The driver's minor number of a GPU, from `/proc/driver/nvidia/gpus/<pci>/information`.
    fn minor_of(&self, pci: &str) -> Option<i64> {
        let p = self
            .proc
            .join("driver/nvidia/gpus")
            .join(pci.to_ascii_lowercase())
            .join("information");
        let text = std::fs::read_to_string(p).ok()?;
        text.lines()
            .find(|l| l.starts_with("Device Minor"))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.trim().parse().ok())
    }
}

impl GpuDevices for NvidiaDevices {
    fn gpu_node(&self, gpu: &AssignedGpu) -> Option<DeviceNode> {
        let minor = self
            .minor_of(&gpu.pci_address)
            .unwrap_or(i64::from(gpu.index));
        let path = self.dev.join(format!("nvidia{minor}"));
        let (major, minor) = char_device(&path)?;
        Some(DeviceNode {
            path: PathBuf::from(format!("/dev/nvidia{minor}")),
            major,
            minor,
        })
    }

    fn control_nodes(&self) -> Vec<DeviceNode> {
        [
            "nvidiactl",
            "nvidia-uvm",
            "nvidia-uvm-tools",
            "nvidia-modeset",
        ]
        .iter()
        .filter_map(|n| {
            let (major, minor) = char_device(&self.dev.join(n))?;
            Some(DeviceNode {
                path: PathBuf::from(format!("/dev/{n}")),
                major,
                minor,
            })
        })
        .collect()
    }

    fn driver_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for dir in &self.lib_dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut names: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| LIBS.iter().any(|l| n.starts_with(l)))
                })
                .collect();
            names.sort();
            out.extend(names);
        }
        for dir in &self.bin_dirs {
            for t in TOOLS {
                let p = dir.join(t);
                if p.is_file() {
                    out.push(p);
                }
            }
        }
        out.dedup_by(|a, b| a.file_name() == b.file_name());
        out
    }
}

/// A fixed set of devices for tests and simulated hosts: major 195 for GPUs
/// and `nvidiactl` (minor 255), 511 for `nvidia-uvm`, as on real hosts.
#[derive(Debug, Clone, Default)]
pub struct FakeGpuDevices {
    /// Driver files to report.
    pub files: Vec<PathBuf>,
}

impl GpuDevices for FakeGpuDevices {
    fn gpu_node(&self, gpu: &AssignedGpu) -> Option<DeviceNode> {
        Some(DeviceNode {
            path: PathBuf::from(format!("/dev/nvidia{}", gpu.index)),
            major: 195,
            minor: i64::from(gpu.index),
        })
    }

    fn control_nodes(&self) -> Vec<DeviceNode> {
        vec![
            DeviceNode {
                path: "/dev/nvidiactl".into(),
                major: 195,
                minor: 255,
            },
            DeviceNode {
                path: "/dev/nvidia-uvm".into(),
                major: 511,
                minor: 0,
            },
            DeviceNode {
                path: "/dev/nvidia-uvm-tools".into(),
                major: 511,
                minor: 1,
            },
        ]
    }

    fn driver_files(&self) -> Vec<PathBuf> {
        self.files.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_devices_degrade_to_nothing_without_a_driver() {
        let d = NvidiaDevices {
            dev: "/nonexistent/dev".into(),
            proc: "/nonexistent/proc".into(),
            lib_dirs: vec!["/nonexistent/lib".into()],
            bin_dirs: vec![],
        };
        assert!(d.control_nodes().is_empty());
        assert!(d.driver_files().is_empty());
        assert!(d
            .gpu_node(&AssignedGpu {
                index: 0,
                uuid: "GPU-x".into(),
                pci_address: "0000:18:00.0".into()
            })
            .is_none());
    }

    #[test]
    fn finds_driver_files_in_a_fake_tree() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("lib");
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::create_dir_all(&bin).unwrap();
        for f in [
            "libcuda.so.550.54",
            "libnvidia-ml.so.1",
            "libc.so.6",
            "libcuda.so.1",
        ] {
            std::fs::write(lib.join(f), b"").unwrap();
        }
        std::fs::write(bin.join("nvidia-smi"), b"").unwrap();
        let d = NvidiaDevices {
            dev: dir.path().join("dev"),
            proc: dir.path().join("proc"),
            lib_dirs: vec![lib.clone()],
            bin_dirs: vec![bin.clone()],
        };
        let files = d.driver_files();
        let names: Vec<String> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
            .collect();
        assert_eq!(
            names,
            vec![
                "libcuda.so.1",
                "libcuda.so.550.54",
                "libnvidia-ml.so.1",
                "nvidia-smi"
            ]
        );
        // Minor numbers come from the driver's information file.
        let info = dir.path().join("proc/driver/nvidia/gpus/0000:9a:00.0");
        std::fs::create_dir_all(&info).unwrap();
        std::fs::write(
            info.join("information"),
            "Model: NVIDIA H100\nDevice Minor: 5\n",
        )
        .unwrap();
        assert_eq!(d.minor_of("0000:9A:00.0"), Some(5));
    }

    #[test]
    fn driver_files_go_where_the_image_looks() {
        let debian = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(debian.path().join("usr/lib/x86_64-linux-gnu")).unwrap();
        std::fs::create_dir_all(debian.path().join("usr/lib64")).unwrap();
        let redhat = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(redhat.path().join("usr/lib64")).unwrap();
        let bare = tempfile::tempdir().unwrap();
        let lib = Path::new("/usr/local/nvidia/lib64/libnvidia-ml.so.1");
        let dest = |root: &Path| container_destination(lib, root);
        assert_eq!(
            dest(debian.path()),
            Path::new("/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1")
        );
        assert_eq!(
            dest(redhat.path()),
            Path::new("/usr/lib64/libnvidia-ml.so.1")
        );
        assert_eq!(
            dest(bare.path()),
            Path::new("/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1")
        );
        assert_eq!(
            container_destination(Path::new("/opt/nv/bin/nvidia-smi"), bare.path()),
            Path::new("/usr/bin/nvidia-smi")
        );
        assert_eq!(
            container_destination(Path::new("/etc/other.conf"), bare.path()),
            Path::new("/etc/other.conf")
        );
    }
}
