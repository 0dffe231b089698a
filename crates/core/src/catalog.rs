//! The instance catalog: families, instance types and the built-in images.
//!
//! Type names follow Tencent's grammar `<FAMILY>.<SIZE><MEMORY GiB>` where SIZE
//! is `SMALL|MEDIUM|LARGE|<n>XLARGE`. The Tencent GPU families and sizes come
//! from Tencent's published specifications (reference §8). Families for
//! current GPUs that Tencent does not list publicly are named in the same style
//! and marked `tencent: false`:
//!
//! | family | GPU | notes |
//! |---|---|---|
//! | `GT5` | H100 SXM 80GB | successor of GT4 (A100 SXM) |
//! | `GT5e` | H200 SXM 141GB | memory-enhanced GT5 |
//! | `GT4e` | A100 SXM 80GB | memory-enhanced GT4 |
//! | `PNV6s` | L40S 48GB | PCIe inference/graphics, sized like PNV4 |
//!
//! Fractional (vGPU) sizes such as `GN7.LARGE20` are not offered: gpucloud
//! passes whole GPUs through.

use crate::gpu::GpuModel;
use serde::Serialize;

/// A family of instance types.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Family {
    /// `GN7`, `GT5`, `S5` …
    pub name: &'static str,
    /// The GPU model, `None` for CPU-only families.
    pub gpu: Option<GpuModel>,
    /// Human description.
    pub description: &'static str,
    /// CPU model shown in `DescribeZoneInstanceConfigInfos`.
    pub cpu_type: &'static str,
    /// Base/turbo frequency.
    pub frequency: &'static str,
    /// Whether Tencent publishes this family (false: gpucloud's own naming).
    pub tencent: bool,
}

/// An instance type.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct InstanceType {
    /// `GN7.2XLARGE32`.
    pub name: &'static str,
    /// Family name.
    pub family: &'static str,
    /// vCPUs.
    pub cpu: u32,
    /// Memory, GiB.
    pub memory_gib: u32,
    /// Whole GPUs.
    pub gpus: u32,
    /// Private network bandwidth, Gbps.
    pub bandwidth_gbps: f64,
    /// Packets per second, in units of 10,000.
    pub pps_10k: u32,
}

impl InstanceType {
    /// The family row.
    pub fn family(&self) -> &'static Family {
        family(self.family).expect("every type's family is in FAMILIES")
    }

    /// The GPU model, if any.
    pub fn gpu_model(&self) -> Option<GpuModel> {
        self.family().gpu
    }

    /// Memory in MiB.
    pub fn memory_mib(&self) -> u64 {
        u64::from(self.memory_gib) * 1024
    }
}

/// All families.
pub const FAMILIES: &[Family] = &[
    Family {
        name: "GT5",
        gpu: Some(GpuModel::H100),
        description: "GPU compute, NVIDIA H100 SXM 80GB with NVLink/NVSwitch",
        cpu_type: "Intel Xeon Platinum 8480+",
        frequency: "2.0GHz/3.8GHz",
        tencent: false,
    },
    Family {
        name: "GT5e",
        gpu: Some(GpuModel::H200),
        description: "GPU compute, NVIDIA H200 SXM 141GB with NVLink/NVSwitch",
        cpu_type: "Intel Xeon Platinum 8480+",
        frequency: "2.0GHz/3.8GHz",
        tencent: false,
    },
    Family {
        name: "GT4e",
        gpu: Some(GpuModel::A100_80),
        description: "GPU compute, NVIDIA A100 SXM 80GB with NVLink",
        cpu_type: "AMD EPYC Milan",
        frequency: "2.55GHz/3.5GHz",
        tencent: false,
    },
    Family {
        name: "GT4",
        gpu: Some(GpuModel::A100_40),
        description: "GPU compute, NVIDIA A100 NVLink 40GB",
        cpu_type: "AMD EPYC ROME",
        frequency: "2.6GHz/3.3GHz",
        tencent: true,
    },
    Family {
        name: "PNV6s",
        gpu: Some(GpuModel::L40S),
        description: "GPU inference and graphics, NVIDIA L40S 48GB",
        cpu_type: "AMD EPYC Genoa",
        frequency: "2.6GHz/3.7GHz",
        tencent: false,
    },
    Family {
        name: "PNV4",
        gpu: Some(GpuModel::A10),
        description: "GPU compute, NVIDIA A10 24GB",
        cpu_type: "AMD EPYC Milan",
        frequency: "2.55GHz/3.5GHz",
        tencent: true,
    },
    Family {
        name: "GNV4",
        gpu: Some(GpuModel::A10),
        description: "GPU rendering, NVIDIA A10 24GB",
        cpu_type: "AMD EPYC Milan",
        frequency: "2.55GHz/3.5GHz",
        tencent: true,
    },
    Family {
        name: "GNV4v",
        gpu: Some(GpuModel::A10),
        description: "GPU rendering, NVIDIA A10 24GB (whole-GPU sizes)",
        cpu_type: "AMD EPYC Milan",
        frequency: "2.55GHz/3.5GHz",
        tencent: true,
    },
    Family {
        name: "GN10Xp",
        gpu: Some(GpuModel::V100),
        description: "GPU compute, NVIDIA V100 NVLink 32GB",
        cpu_type: "Intel Xeon Platinum 8255C",
        frequency: "2.5GHz/3.1GHz",
        tencent: true,
    },
    Family {
        name: "GN10X",
        gpu: Some(GpuModel::V100),
        description: "GPU compute, NVIDIA V100 NVLink 32GB",
        cpu_type: "Intel Xeon Gold 6133",
        frequency: "2.5GHz/3.0GHz",
        tencent: true,
    },
    Family {
        name: "GN7",
        gpu: Some(GpuModel::T4),
        description: "GPU compute, NVIDIA T4 16GB",
        cpu_type: "Intel Xeon Platinum 8255C",
        frequency: "2.5GHz/3.1GHz",
        tencent: true,
    },
    Family {
        name: "GN7vi",
        gpu: Some(GpuModel::T4),
        description: "GPU video enhancement, NVIDIA T4 16GB",
        cpu_type: "Intel Xeon Platinum 8255C",
        frequency: "2.5GHz/3.1GHz",
        tencent: true,
    },
    Family {
        name: "GN7vw",
        gpu: Some(GpuModel::T4),
        description: "GPU rendering (vDWS), NVIDIA T4 16GB (whole-GPU sizes)",
        cpu_type: "Intel Xeon Platinum 8255C",
        frequency: "2.5GHz/3.1GHz",
        tencent: true,
    },
    Family {
        name: "GI3X",
        gpu: Some(GpuModel::T4),
        description: "GPU inference, NVIDIA T4 16GB",
        cpu_type: "AMD EPYC ROME",
        frequency: "2.6GHz/3.3GHz",
        tencent: true,
    },
    Family {
        name: "GN8",
        gpu: Some(GpuModel::P40),
        description: "GPU compute, NVIDIA P40 24GB",
        cpu_type: "Intel Xeon E5-2680 v4",
        frequency: "2.4GHz/3.3GHz",
        tencent: true,
    },
    Family {
        name: "GN6",
        gpu: Some(GpuModel::P4),
        description: "GPU compute, NVIDIA P4 8GB",
        cpu_type: "Intel Xeon E5-2680 v4",
        frequency: "2.4GHz/3.3GHz",
        tencent: true,
    },
    Family {
        name: "GN6S",
        gpu: Some(GpuModel::P4),
        description: "GPU compute, NVIDIA P4 8GB",
        cpu_type: "Intel Xeon Silver 4110",
        frequency: "2.1GHz/3.0GHz",
        tencent: true,
    },
    Family {
        name: "S5",
        gpu: None,
        description: "Standard, CPU only",
        cpu_type: "Intel Xeon Cascade Lake 8255C",
        frequency: "2.5GHz/3.1GHz",
        tencent: true,
    },
];

macro_rules! t {
    ($name:literal, $family:literal, $cpu:literal, $mem:literal, $gpus:literal, $bw:literal, $pps:literal) => {
        InstanceType {
            name: $name,
            family: $family,
            cpu: $cpu,
            memory_gib: $mem,
            gpus: $gpus,
            bandwidth_gbps: $bw,
            pps_10k: $pps,
        }
    };
}

/// All instance types.
pub const INSTANCE_TYPES: &[InstanceType] = &[
    // gpucloud families for current GPUs (1/2/4/8 GPUs).
    t!("GT5.2XLARGE40", "GT5", 8, 40, 1, 10.0, 100),
    t!("GT5.6XLARGE240", "GT5", 24, 240, 1, 25.0, 300),
    t!("GT5.12XLARGE480", "GT5", 48, 480, 2, 50.0, 600),
    t!("GT5.24XLARGE960", "GT5", 96, 960, 4, 100.0, 1200),
    t!("GT5.48XLARGE1920", "GT5", 192, 1920, 8, 200.0, 2400),
    t!("GT5e.2XLARGE48", "GT5e", 8, 48, 1, 10.0, 100),
    t!("GT5e.6XLARGE256", "GT5e", 24, 256, 1, 25.0, 300),
    t!("GT5e.12XLARGE512", "GT5e", 48, 512, 2, 50.0, 600),
    t!("GT5e.24XLARGE1024", "GT5e", 96, 1024, 4, 100.0, 1200),
    t!("GT5e.48XLARGE2048", "GT5e", 192, 2048, 8, 200.0, 2400),
    t!("GT4e.4XLARGE120", "GT4e", 16, 120, 1, 10.0, 150),
    t!("GT4e.8XLARGE240", "GT4e", 32, 240, 2, 20.0, 300),
    t!("GT4e.16XLARGE480", "GT4e", 64, 480, 4, 40.0, 600),
    t!("GT4e.32XLARGE960", "GT4e", 128, 960, 8, 80.0, 1200),
    t!("PNV6s.7XLARGE116", "PNV6s", 28, 116, 1, 13.0, 250),
    t!("PNV6s.14XLARGE232", "PNV6s", 56, 232, 2, 25.0, 500),
    t!("PNV6s.28XLARGE466", "PNV6s", 112, 466, 4, 50.0, 1000),
    t!("PNV6s.56XLARGE932", "PNV6s", 224, 932, 8, 100.0, 1900),
    // Tencent GPU families (reference §8).
    t!("PNV4.7XLARGE116", "PNV4", 28, 116, 1, 13.0, 240),
    t!("PNV4.14XLARGE232", "PNV4", 56, 232, 2, 25.0, 470),
    t!("PNV4.28XLARGE466", "PNV4", 112, 466, 4, 50.0, 950),
    t!("PNV4.56XLARGE932", "PNV4", 224, 932, 8, 100.0, 1900),
    t!("GT4.4XLARGE96", "GT4", 16, 96, 1, 5.0, 120),
    t!("GT4.8XLARGE192", "GT4", 32, 192, 2, 10.0, 240),
    t!("GT4.20XLARGE474", "GT4", 82, 474, 4, 25.0, 490),
    t!("GT4.41XLARGE948", "GT4", 164, 948, 8, 50.0, 980),
    t!("GN10Xp.2XLARGE40", "GN10Xp", 10, 40, 1, 3.0, 80),
    t!("GN10Xp.5XLARGE80", "GN10Xp", 20, 80, 2, 6.0, 150),
    t!("GN10Xp.10XLARGE160", "GN10Xp", 40, 160, 4, 12.0, 250),
    t!("GN10Xp.20XLARGE320", "GN10Xp", 80, 320, 8, 24.0, 490),
    t!("GN7.2XLARGE32", "GN7", 8, 32, 1, 3.0, 60),
    t!("GN7.5XLARGE80", "GN7", 20, 80, 1, 7.0, 100),
    t!("GN7.8XLARGE128", "GN7", 32, 128, 1, 10.0, 140),
    t!("GN7.10XLARGE160", "GN7", 40, 160, 2, 13.0, 200),
    t!("GN7.20XLARGE320", "GN7", 80, 320, 4, 25.0, 380),
    t!("GN7vi.5XLARGE80", "GN7vi", 20, 80, 1, 6.0, 100),
    t!("GN7vi.10XLARGE160", "GN7vi", 40, 160, 2, 13.0, 200),
    t!("GN7vi.20XLARGE320", "GN7vi", 80, 320, 4, 25.0, 380),
    t!("GI3X.8XLARGE64", "GI3X", 32, 64, 1, 5.0, 100),
    t!("GI3X.22XLARGE226", "GI3X", 90, 226, 2, 13.0, 200),
    t!("GI3X.45XLARGE452", "GI3X", 180, 452, 4, 25.0, 400),
    t!("GN10X.2XLARGE40", "GN10X", 8, 40, 1, 3.0, 80),
    t!("GN10X.9XLARGE160", "GN10X", 36, 160, 4, 13.0, 250),
    t!("GN10X.18XLARGE320", "GN10X", 72, 320, 8, 25.0, 490),
    t!("GN8.LARGE56", "GN8", 6, 56, 1, 1.5, 50),
    t!("GN8.3XLARGE112", "GN8", 14, 112, 2, 2.5, 80),
    t!("GN8.7XLARGE224", "GN8", 28, 224, 4, 5.0, 150),
    t!("GN8.14XLARGE448", "GN8", 56, 448, 8, 10.0, 300),
    t!("GN6.7XLARGE48", "GN6", 28, 48, 1, 5.0, 100),
    t!("GN6.14XLARGE96", "GN6", 56, 96, 2, 10.0, 200),
    t!("GN6S.LARGE20", "GN6S", 4, 20, 1, 5.0, 50),
    t!("GN6S.2XLARGE40", "GN6S", 8, 40, 2, 9.0, 80),
    t!("GNV4v.7XLARGE116", "GNV4v", 28, 116, 1, 13.0, 240),
    t!("GNV4.3XLARGE44", "GNV4", 12, 44, 1, 2.0, 60),
    t!("GN7vw.4XLARGE64", "GN7vw", 16, 64, 1, 7.0, 100),
    // CPU only.
    t!("S5.SMALL1", "S5", 1, 1, 0, 1.5, 25),
    t!("S5.SMALL2", "S5", 1, 2, 0, 1.5, 25),
    t!("S5.SMALL4", "S5", 1, 4, 0, 1.5, 25),
    t!("S5.MEDIUM4", "S5", 2, 4, 0, 1.5, 30),
    t!("S5.MEDIUM8", "S5", 2, 8, 0, 1.5, 30),
    t!("S5.LARGE8", "S5", 4, 8, 0, 1.5, 50),
    t!("S5.LARGE16", "S5", 4, 16, 0, 1.5, 50),
    t!("S5.2XLARGE16", "S5", 8, 16, 0, 3.0, 80),
    t!("S5.2XLARGE32", "S5", 8, 32, 0, 3.0, 80),
    t!("S5.4XLARGE32", "S5", 16, 32, 0, 6.0, 150),
    t!("S5.4XLARGE64", "S5", 16, 64, 0, 6.0, 150),
    t!("S5.8XLARGE64", "S5", 32, 64, 0, 12.0, 300),
    t!("S5.8XLARGE128", "S5", 32, 128, 0, 12.0, 300),
    t!("S5.12XLARGE96", "S5", 48, 96, 0, 15.0, 450),
    t!("S5.16XLARGE256", "S5", 64, 256, 0, 25.0, 600),
];

/// A family by name (case-sensitive, as Tencent's are).
pub fn family(name: &str) -> Option<&'static Family> {
    FAMILIES.iter().find(|f| f.name == name)
}

/// An instance type by name.
pub fn instance_type(name: &str) -> Option<&'static InstanceType> {
    INSTANCE_TYPES.iter().find(|t| t.name == name)
}

/// Whether `name` has the grammar of an instance type (`FAMILY.SIZE<mem>`).
pub fn is_well_formed_type(name: &str) -> bool {
    let Some((fam, size)) = name.split_once('.') else {
        return false;
    };
    if fam.is_empty() || !fam.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return false;
    }
    let rest = size
        .strip_prefix("SMALL")
        .or_else(|| size.strip_prefix("MEDIUM"))
        .or_else(|| size.strip_prefix("LARGE"))
        .or_else(|| {
            let digits = size.bytes().take_while(u8::is_ascii_digit).count();
            size[digits..].strip_prefix("XLARGE")
        });
    matches!(rest, Some(mem) if !mem.is_empty() && mem.bytes().all(|b| b.is_ascii_digit()))
}

/// The instance types of one GPU model (or the CPU-only types for `None`).
pub fn types_for_gpu(model: Option<GpuModel>) -> impl Iterator<Item = &'static InstanceType> {
    INSTANCE_TYPES
        .iter()
        .filter(move |t| t.gpu_model() == model)
}

/// vCPUs and memory (GiB) a host with `gpus` GPUs of `model` needs so that every
/// type of that model, scaled to the whole host, fits. Used to size simulated
/// hosts; CPU-only hosts get 96 vCPU / 384 GiB.
pub fn host_shape(model: Option<GpuModel>, gpus: u32) -> (u32, u32) {
    if model.is_none() || gpus == 0 {
        return (96, 384);
    }
    let mut cpu = 0u32;
    let mut mem = 0u32;
    for t in types_for_gpu(model) {
        cpu = cpu.max((t.cpu * gpus).div_ceil(t.gpus));
        mem = mem.max((t.memory_gib * gpus).div_ceil(t.gpus));
    }
    (cpu, mem)
}

/// vCPUs and memory (MiB) per GPU that the largest-per-GPU type of `model`
/// fitting on a host of `cpu_total` vCPUs and `mem_total_mib` needs, or
/// `None` when no type of that model fits (its GPUs cannot be sold there).
/// What the scheduler keeps free for each free GPU of such a host.
///
/// The scheduler asks this for every GPU host it weighs for a CPU-only
/// request, so the GPU types are indexed by model once, as plain numbers.
pub fn gpu_share_on(model: GpuModel, cpu_total: u32, mem_total_mib: u64) -> Option<(u32, u64)> {
    /// Per model: (vCPUs, memory MiB, vCPUs per GPU, memory MiB per GPU) of each type.
    type Shapes = std::collections::HashMap<GpuModel, Vec<(u32, u64, u32, u64)>>;
    static SHAPES: std::sync::OnceLock<Shapes> = std::sync::OnceLock::new();
    let shapes = SHAPES.get_or_init(|| {
        let mut m = Shapes::new();
        for t in INSTANCE_TYPES.iter().filter(|t| t.gpus > 0) {
            if let Some(g) = t.gpu_model() {
                m.entry(g).or_default().push((
                    t.cpu,
                    t.memory_mib(),
                    t.cpu.div_ceil(t.gpus),
                    t.memory_mib().div_ceil(u64::from(t.gpus)),
                ));
            }
        }
        m
    });
    shapes
        .get(&model)?
        .iter()
        .filter(|s| s.0 <= cpu_total && s.1 <= mem_total_mib)
        .map(|s| (s.2, s.3))
        .reduce(|a, b| (a.0.max(b.0), a.1.max(b.1)))
}

/// Where an image can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum ImageRuntime {
    /// Simulated hosts only (demos, scale tests).
    Sim,
    /// OCI container on a real host.
    Container,
    /// QEMU/KVM virtual machine on a real host.
    Qemu,
}

impl ImageRuntime {
    /// The value of the image's `runtime` tag.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sim => "sim",
            Self::Container => "container",
            Self::Qemu => "qemu",
        }
    }

    /// Parses a `runtime` tag value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sim" => Some(Self::Sim),
            "container" => Some(Self::Container),
            "qemu" => Some(Self::Qemu),
            _ => None,
        }
    }
}

/// A public image shipped with gpucloud.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct BuiltinImage {
    /// `img-…`.
    pub id: &'static str,
    /// Display name.
    pub name: &'static str,
    /// OS name.
    pub os_name: &'static str,
    /// `Ubuntu`, `Debian`, `TencentOS` …
    pub platform: &'static str,
    /// Description.
    pub description: &'static str,
    /// GiB.
    pub size_gib: i64,
    /// Where it runs.
    pub runtime: ImageRuntime,
    /// Whether it carries the NVIDIA driver and CUDA (for GPU types).
    pub gpu_driver: bool,
}

/// The catalog images that the simulated fleet runs. Real runtime images are
/// registered in the store when they are built or imported.
pub const BUILTIN_IMAGES: &[BuiltinImage] = &[
    BuiltinImage {
        id: "img-gc0tos31",
        name: "TencentOS Server 3.1 (TK4)",
        os_name: "TencentOS Server 3.1 (TK4)",
        platform: "TencentOS",
        description: "TencentOS Server 3.1 64bit",
        size_gib: 20,
        runtime: ImageRuntime::Sim,
        gpu_driver: false,
    },
    BuiltinImage {
        id: "img-gc0ubt22",
        name: "Ubuntu Server 22.04 LTS 64bit",
        os_name: "Ubuntu Server 22.04 LTS 64bit",
        platform: "Ubuntu",
        description: "Ubuntu Server 22.04 LTS 64bit",
        size_gib: 20,
        runtime: ImageRuntime::Sim,
        gpu_driver: false,
    },
    BuiltinImage {
        id: "img-gc0ubt24",
        name: "Ubuntu Server 24.04 LTS 64bit",
        os_name: "Ubuntu Server 24.04 LTS 64bit",
        platform: "Ubuntu",
        description: "Ubuntu Server 24.04 LTS 64bit",
        size_gib: 20,
        runtime: ImageRuntime::Sim,
        gpu_driver: false,
    },
    BuiltinImage {
        id: "img-gc0deb12",
        name: "Debian 12 64bit",
        os_name: "Debian GNU/Linux 12 (bookworm)",
        platform: "Debian",
        description: "Debian 12 bookworm 64bit",
        size_gib: 20,
        runtime: ImageRuntime::Sim,
        gpu_driver: false,
    },
    BuiltinImage {
        id: "img-gc0cuda4",
        name: "Ubuntu 22.04 GPU (NVIDIA driver 550, CUDA 12.4)",
        os_name: "Ubuntu Server 22.04 LTS 64bit",
        platform: "Ubuntu",
        description: "Ubuntu 22.04 with the NVIDIA 550 driver, CUDA 12.4 and cuDNN 9",
        size_gib: 50,
        runtime: ImageRuntime::Sim,
        gpu_driver: true,
    },
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn a_gpu_keeps_what_the_largest_fitting_type_needs() {
        // GT5: 8 vCPU/40 GiB per GPU for the smallest, 24/240 for the rest.
        assert_eq!(
            gpu_share_on(GpuModel::H100, 16, 125 * 1024),
            Some((8, 40 * 1024))
        );
        assert_eq!(
            gpu_share_on(GpuModel::H100, 192, 2048 * 1024),
            Some((24, 240 * 1024))
        );
        // A host too small for any H100 type cannot sell its GPU.
        assert_eq!(gpu_share_on(GpuModel::H100, 4, 16 * 1024), None);
        // Full-size hosts (as simulated) keep exactly their proportional share.
        for model in [GpuModel::H100, GpuModel::T4, GpuModel::A100_80] {
            let (cpu, gib) = host_shape(Some(model), 8);
            let (c, m) = gpu_share_on(model, cpu, u64::from(gib) * 1024).unwrap();
            assert!(c * 8 <= cpu && m * 8 <= u64::from(gib) * 1024, "{model:?}");
        }
    }

    #[test]
    fn catalog_is_consistent() {
        let mut names = HashSet::new();
        for t in INSTANCE_TYPES {
            assert!(names.insert(t.name), "duplicate type {}", t.name);
            assert!(is_well_formed_type(t.name), "{} is not well formed", t.name);
            let (fam, size) = t.name.split_once('.').unwrap();
            assert_eq!(fam, t.family);
            assert!(
                size.ends_with(&t.memory_gib.to_string()),
                "{} memory suffix",
                t.name
            );
            assert_eq!(t.family().gpu.is_some(), t.gpus > 0, "{}", t.name);
        }
        for f in FAMILIES {
            assert!(
                INSTANCE_TYPES.iter().any(|t| t.family == f.name),
                "{} has no types",
                f.name
            );
        }
    }

    #[test]
    fn current_gpu_families_have_all_sizes() {
        for fam in ["GT5", "GT5e", "GT4e", "PNV6s"] {
            let mut sizes: Vec<u32> = INSTANCE_TYPES
                .iter()
                .filter(|t| t.family == fam)
                .map(|t| t.gpus)
                .collect();
            sizes.dedup();
            assert_eq!(sizes, vec![1, 2, 4, 8], "{fam}");
        }
    }

    #[test]
    fn host_shapes_fit_every_type() {
        for spec in crate::gpu::GPU_SPECS {
            for gpus in [1, 2, 4, 8] {
                let (cpu, mem) = host_shape(Some(spec.model), gpus);
                for t in types_for_gpu(Some(spec.model)).filter(|t| t.gpus <= gpus) {
                    let copies = gpus / t.gpus;
                    assert!(t.cpu * copies <= cpu && t.memory_gib * copies <= mem);
                }
            }
        }
    }

    #[test]
    fn type_grammar() {
        assert!(is_well_formed_type("GN7.2XLARGE32"));
        assert!(is_well_formed_type("S5.SMALL1"));
        assert!(is_well_formed_type("GN8.LARGE56"));
        assert!(!is_well_formed_type("GN7"));
        assert!(!is_well_formed_type("GN7.HUGE32"));
        assert!(!is_well_formed_type("GN7.2XLARGE"));
        assert!(!is_well_formed_type(".2XLARGE32"));
    }

    #[test]
    fn builtin_images_have_valid_ids() {
        for i in BUILTIN_IMAGES {
            assert!(gpucloud_api_types::ids::is_valid(
                gpucloud_api_types::ids::IdKind::Image,
                i.id
            ));
        }
    }
}
