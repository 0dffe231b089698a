//! GPU models: the one table of facts (memory, throughput, interconnect, PCI ID).
//!
//! Throughput figures are NVIDIA's published dense (non-sparse) peak numbers.
//! `bf16_tflops` is `None` for GPUs without BF16 tensor cores.

use serde::Serialize;

/// A GPU model gpucloud knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum GpuModel {
    /// NVIDIA H100 SXM5 80 GB.
    H100,
    /// NVIDIA H200 SXM 141 GB.
    H200,
    /// NVIDIA A100 SXM4 80 GB.
    A100_80,
    /// NVIDIA A100 SXM4 40 GB (Tencent's GT4 "A100 NVLink 40GB").
    A100_40,
    /// NVIDIA L40S 48 GB (PCIe).
    L40S,
    /// NVIDIA A10 24 GB (PCIe).
    A10,
    /// NVIDIA T4 16 GB (PCIe).
    T4,
    /// NVIDIA V100 SXM2 32 GB.
    V100,
    /// NVIDIA Tesla P40 24 GB (PCIe).
    P40,
    /// NVIDIA Tesla P4 8 GB (PCIe).
    P4,
}

/// Facts about one GPU model.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct GpuSpec {
    /// The model.
    pub model: GpuModel,
    /// Short key used in `--simulate` specs (`H100`).
    pub key: &'static str,
    /// `GpuType` / `GPUType` string in API answers.
    pub name: &'static str,
    /// Memory per GPU, GiB.
    pub memory_gib: u32,
    /// FP32 peak, TFLOPS.
    pub fp32_tflops: f64,
    /// FP64 peak, TFLOPS.
    pub fp64_tflops: f64,
    /// BF16 dense tensor peak, TFLOPS.
    pub bf16_tflops: Option<f64>,
    /// NVLink bandwidth per GPU, GB/s (0 = none).
    pub nvlink_gbps: u32,
    /// Whether an 8-GPU board forms one NVLink/NVSwitch domain.
    pub sxm: bool,
    /// PCI device ID (vendor 0x10de).
    pub pci_device_id: u16,
    /// Hourly list price per GPU, CNY.
    pub hourly_price: f64,
}

/// All GPU models, in catalog order.
pub const GPU_SPECS: &[GpuSpec] = &[
    GpuSpec {
        model: GpuModel::H100,
        key: "H100",
        name: "NVIDIA H100 SXM 80GB",
        memory_gib: 80,
        fp32_tflops: 67.0,
        fp64_tflops: 34.0,
        bf16_tflops: Some(989.0),
        nvlink_gbps: 900,
        sxm: true,
        pci_device_id: 0x2330,
        hourly_price: 28.0,
    },
    GpuSpec {
        model: GpuModel::H200,
        key: "H200",
        name: "NVIDIA H200 SXM 141GB",
        memory_gib: 141,
        fp32_tflops: 67.0,
        fp64_tflops: 34.0,
        bf16_tflops: Some(989.0),
        nvlink_gbps: 900,
        sxm: true,
        pci_device_id: 0x2335,
        hourly_price: 34.0,
    },
    GpuSpec {
        model: GpuModel::A100_80,
        key: "A100",
        name: "NVIDIA A100 SXM 80GB",
        memory_gib: 80,
        fp32_tflops: 19.5,
        fp64_tflops: 9.7,
        bf16_tflops: Some(312.0),
        nvlink_gbps: 600,
        sxm: true,
        pci_device_id: 0x20b2,
        hourly_price: 16.0,
    },
    GpuSpec {
        model: GpuModel::A100_40,
        key: "A100-40G",
        name: "NVIDIA A100 SXM 40GB",
        memory_gib: 40,
        fp32_tflops: 19.5,
        fp64_tflops: 9.7,
        bf16_tflops: Some(312.0),
        nvlink_gbps: 600,
        sxm: true,
        pci_device_id: 0x20b0,
        hourly_price: 12.5,
    },
    GpuSpec {
        model: GpuModel::L40S,
        key: "L40S",
        name: "NVIDIA L40S 48GB",
        memory_gib: 48,
        fp32_tflops: 91.6,
        fp64_tflops: 1.4,
        bf16_tflops: Some(362.0),
        nvlink_gbps: 0,
        sxm: false,
        pci_device_id: 0x26b9,
        hourly_price: 9.0,
    },
    GpuSpec {
        model: GpuModel::A10,
        key: "A10",
        name: "NVIDIA A10 24GB",
        memory_gib: 24,
        fp32_tflops: 31.2,
        fp64_tflops: 0.98,
        bf16_tflops: Some(125.0),
        nvlink_gbps: 0,
        sxm: false,
        pci_device_id: 0x2236,
        hourly_price: 4.2,
    },
    GpuSpec {
        model: GpuModel::T4,
        key: "T4",
        name: "NVIDIA T4 16GB",
        memory_gib: 16,
        fp32_tflops: 8.1,
        fp64_tflops: 0.25,
        bf16_tflops: None,
        nvlink_gbps: 0,
        sxm: false,
        pci_device_id: 0x1eb8,
        hourly_price: 2.2,
    },
    GpuSpec {
        model: GpuModel::V100,
        key: "V100",
        name: "NVIDIA V100 SXM2 32GB",
        memory_gib: 32,
        fp32_tflops: 15.7,
        fp64_tflops: 7.8,
        bf16_tflops: None,
        nvlink_gbps: 300,
        sxm: true,
        pci_device_id: 0x1db5,
        hourly_price: 7.5,
    },
    GpuSpec {
        model: GpuModel::P40,
        key: "P40",
        name: "NVIDIA P40 24GB",
        memory_gib: 24,
        fp32_tflops: 11.8,
        fp64_tflops: 0.37,
        bf16_tflops: None,
        nvlink_gbps: 0,
        sxm: false,
        pci_device_id: 0x1b38,
        hourly_price: 3.6,
    },
    GpuSpec {
        model: GpuModel::P4,
        key: "P4",
        name: "NVIDIA P4 8GB",
        memory_gib: 8,
        fp32_tflops: 5.5,
        fp64_tflops: 0.17,
        bf16_tflops: None,
        nvlink_gbps: 0,
        sxm: false,
        pci_device_id: 0x1bb3,
        hourly_price: 1.6,
    },
];

impl GpuModel {
    /// The facts about this model.
    pub fn spec(self) -> &'static GpuSpec {
        GPU_SPECS
            .iter()
            .find(|s| s.model == self)
            .expect("every GpuModel has a row in GPU_SPECS")
    }

    /// Finds a model by its `--simulate` key (case-insensitive; `A100-80G` is accepted too).
    pub fn from_key(key: &str) -> Option<Self> {
        let k = key.trim().to_ascii_uppercase();
        let k = match k.as_str() {
            "A100-80G" | "A100-80GB" | "A100_80" => "A100",
            "A100-40" | "A100-40GB" | "A100_40" => "A100-40G",
            other => other,
        };
        GPU_SPECS
            .iter()
            .find(|s| s.key.eq_ignore_ascii_case(k))
            .map(|s| s.model)
    }

    /// Finds a model by its API name (`NVIDIA H100 SXM 80GB`).
    pub fn from_name(name: &str) -> Option<Self> {
        GPU_SPECS.iter().find(|s| s.name == name).map(|s| s.model)
    }

    /// Finds a model by the name the driver reports (`NVIDIA H100 80GB HBM3`,
    /// `NVIDIA H100 PCIe`, `Tesla T4` …) and its memory, for boards whose PCI
    /// device ID the table does not list (PCIe and NVL variants).
    pub fn from_driver_name(name: &str, memory_mib: u64) -> Option<Self> {
        let n = name.to_ascii_uppercase();
        let has = |w: &str| {
            n.split(|c: char| !c.is_ascii_alphanumeric())
                .any(|t| t == w)
        };
        Some(if has("H200") {
            Self::H200
        } else if has("H100") {
            Self::H100
        } else if has("A100") {
            if memory_mib > 50 * 1024 {
                Self::A100_80
            } else {
                Self::A100_40
            }
        } else if has("L40S") {
            Self::L40S
        } else if has("A10") {
            Self::A10
        } else if has("T4") {
            Self::T4
        } else if has("V100") {
            Self::V100
        } else if has("P40") {
            Self::P40
        } else if has("P4") {
            Self::P4
        } else {
            return None;
        })
    }

    /// Finds a model by PCI device ID.
    pub fn from_pci_device(id: u16) -> Option<Self> {
        GPU_SPECS
            .iter()
            .find(|s| s.pci_device_id == id)
            .map(|s| s.model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_model_has_a_unique_row() {
        for s in GPU_SPECS {
            assert_eq!(s.model.spec().key, s.key);
            assert_eq!(GpuModel::from_key(s.key), Some(s.model));
            assert_eq!(GpuModel::from_name(s.name), Some(s.model));
            assert_eq!(GpuModel::from_pci_device(s.pci_device_id), Some(s.model));
            assert_eq!(
                GpuModel::from_driver_name(s.name, u64::from(s.memory_gib) * 1024),
                Some(s.model),
                "{}",
                s.name
            );
        }
        assert_eq!(GpuModel::from_key("h100"), Some(GpuModel::H100));
        assert_eq!(GpuModel::from_key("B200"), None);
    }
}
