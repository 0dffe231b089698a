//! The simulated host: inventory and runtime for demo fleets and scale tests.
//!
//! A simulated host runs the real agent code; only the hardware edge is
//! simulated. Its GPUs look real — a stable `GPU-<uuid>`, a PCI address, a NUMA
//! node and, for SXM boards, one NVLink domain — and the same group spec yields
//! the same host and GPU IDs on every start. The runtime sleeps for a boot or
//! shutdown time instead of running a guest.
//!
//! Test hook: an instance whose decoded user data contains
//! `gpucloud-sim: fail-launch` fails to launch, the way a broken image would.

use crate::inventory::Inventory;
use crate::runtime::{Power, Runtime, RuntimeError, StopType};
use base64::Engine as _;
use gpucloud_agent_api::{GpuInventory, HostInventory, HostKind, InstanceSpec, RuntimeKind};
use gpucloud_api_types::ids::{id_from_bytes, IdKind};
use gpucloud_core::catalog::host_shape;
use gpucloud_core::simspec::SimGroup;
use rand::Rng;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// PCI bus numbers of an 8-GPU HGX board.
const HGX_BUSES: [u8; 8] = [0x18, 0x2a, 0x3a, 0x5d, 0x9a, 0xab, 0xba, 0xdb];

/// One simulated host.
#[derive(Debug, Clone)]
pub struct SimHost {
    group: SimGroup,
    ordinal: u32,
}

impl SimHost {
    /// The `ordinal`-th host among hosts of the same model, GPU count and zone.
    pub fn new(group: SimGroup, ordinal: u32) -> Self {
        Self { group, ordinal }
    }

    /// Expands a parsed SPEC into hosts. Ordinals count per (model, GPUs, zone),
    /// so `3*H100x8` and `2*H100x8,1*H100x8` describe the same three hosts.
    pub fn expand(groups: &[SimGroup]) -> Vec<SimHost> {
        let mut next: HashMap<(String, u32, String), u32> = HashMap::new();
        let mut out = Vec::new();
        for g in groups {
            let key = (model_key(g), g.gpus, g.zone.clone());
            let start = *next.get(&key).unwrap_or(&0);
            for i in 0..g.count {
                out.push(SimHost::new(g.clone(), start + i));
            }
            next.insert(key, start + g.count);
        }
        out
    }

    fn seed(&self) -> String {
        format!(
            "gpucloud-sim/{}/{}/{}/{}",
            model_key(&self.group),
            self.group.gpus,
            self.group.zone,
            self.ordinal
        )
    }

    /// The host's stable ID.
    pub fn host_id(&self) -> String {
        id_from_bytes(IdKind::Host, &Sha256::digest(self.seed().as_bytes()))
    }
}

fn model_key(g: &SimGroup) -> String {
    g.model
        .map_or("CPU".to_string(), |m| m.spec().key.to_string())
}

fn uuid_from(seed: &str) -> String {
    let h = hex::encode(Sha256::digest(seed.as_bytes()));
    format!(
        "GPU-{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl Inventory for SimHost {
    fn collect(&self) -> HostInventory {
        let g = &self.group;
        let (cpu, mem_gib) = host_shape(g.model, g.gpus);
        let host_id = self.host_id();
        let gpus = g
            .model
            .map(|m| {
                let spec = m.spec();
                (0..g.gpus)
                    .map(|i| {
                        let bus = HGX_BUSES
                            .get(i as usize)
                            .copied()
                            .unwrap_or(0x10 + i as u8 * 0x10);
                        GpuInventory {
                            uuid: uuid_from(&format!("{}/gpu/{i}", self.seed())),
                            index: i,
                            model: spec.key.to_string(),
                            name: spec.name.to_string(),
                            pci_address: format!("0000:{bus:02x}:00.0"),
                            numa_node: if g.gpus >= 2 && i >= g.gpus / 2 { 1 } else { 0 },
                            nvlink_domain: spec.sxm.then_some(0),
                            memory_mib: u64::from(spec.memory_gib) * 1024,
                            healthy: true,
                            health_reason: String::new(),
                            mig_enabled: false,
                            ecc_enabled: Some(true),
                            kernel_driver: Some("nvidia".into()),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let zone_short = g.zone.rsplit('-').next().unwrap_or("0").to_string();
        HostInventory {
            hostname: format!(
                "sim-{}-{}{}-{:04}",
                zone_short,
                model_key(g).to_ascii_lowercase(),
                if g.gpus > 0 {
                    format!("x{}", g.gpus)
                } else {
                    String::new()
                },
                self.ordinal
            ),
            host_id,
            zone: g.zone.clone(),
            kind: HostKind::Sim,
            cpu_total: cpu,
            mem_total_mib: u64::from(mem_gib) * 1024,
            runtimes: vec![RuntimeKind::Sim, RuntimeKind::Container, RuntimeKind::Qemu],
            rack: format!("{}-rack-{:03}", g.zone, self.ordinal / 4),
            switch: format!("{}-sw-{:02}", g.zone, self.ordinal / 16),
            gpus,
            details: serde_json::json!({
                "simulated": true,
                "cpu_model": "Simulated x86_64",
                "numa_nodes": if g.gpus >= 2 { 2 } else { 1 },
                "nvlink": g.model.is_some_and(|m| m.spec().sxm),
            }),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            // Simulated GPU servers are passthrough-capable ones.
            gpu_passthrough: true,
        }
    }
}

#[derive(Debug, Clone)]
struct SimVm {
    power: Power,
    /// Boots so far, and the reboot count of the last one.
    boots: u64,
    booted_seq: i64,
}

/// Simulated instances: state in memory, time spent sleeping.
#[derive(Debug)]
pub struct SimRuntime {
    boot: Duration,
    shutdown: Duration,
    vms: Mutex<HashMap<String, SimVm>>,
}

impl SimRuntime {
    /// A runtime whose instances take `boot` to start and `shutdown` to stop.
    pub fn new(boot: Duration, shutdown: Duration) -> Self {
        Self {
            boot,
            shutdown,
            vms: Mutex::new(HashMap::new()),
        }
    }

    async fn pause(d: Duration) {
        if d.is_zero() {
            tokio::task::yield_now().await;
            return;
        }
        let jitter = rand::thread_rng().gen_range(0.8..1.2);
        tokio::time::sleep(d.mul_f64(jitter)).await;
    }

    /// How many times an instance booted (tests).
    pub fn boots(&self, id: &str) -> u64 {
        self.vms
            .lock()
            .expect("sim runtime lock")
            .get(id)
            .map_or(0, |v| v.boots)
    }

    fn set(&self, id: &str, power: Power) -> Result<(), RuntimeError> {
        let mut vms = self.vms.lock().expect("sim runtime lock");
        match vms.get_mut(id) {
            Some(vm) => {
                vm.power = power;
                Ok(())
            }
            None => Err(RuntimeError::new(format!(
                "instance {id} does not exist on this host"
            ))),
        }
    }
}

fn wants_failure(spec: &InstanceSpec) -> bool {
    spec.user_data
        .as_deref()
        .and_then(|u| base64::engine::general_purpose::STANDARD.decode(u).ok())
        .is_some_and(|raw| String::from_utf8_lossy(&raw).contains("gpucloud-sim: fail-launch"))
}

#[async_trait::async_trait]
impl Runtime for SimRuntime {
    fn kinds(&self) -> Vec<RuntimeKind> {
        vec![RuntimeKind::Sim, RuntimeKind::Container, RuntimeKind::Qemu]
    }

    async fn list(&self) -> Result<Vec<(String, Power)>, RuntimeError> {
        let vms = self.vms.lock().expect("sim runtime lock");
        Ok(vms.iter().map(|(k, v)| (k.clone(), v.power)).collect())
    }

    async fn status(&self, id: &str) -> Result<Option<Power>, RuntimeError> {
        Ok(self
            .vms
            .lock()
            .expect("sim runtime lock")
            .get(id)
            .map(|v| v.power))
    }

    async fn create(&self, spec: &InstanceSpec) -> Result<(), RuntimeError> {
        if wants_failure(spec) {
            return Err(RuntimeError::new(format!(
                "image {} failed to boot (simulated launch failure requested by user data)",
                spec.image.image_id
            )));
        }
        self.vms
            .lock()
            .expect("sim runtime lock")
            .entry(spec.instance_id.clone())
            .or_insert(SimVm {
                power: Power::Stopped,
                boots: 0,
                booted_seq: 0,
            });
        Ok(())
    }

    async fn update(&self, _spec: &InstanceSpec) -> Result<(), RuntimeError> {
        Ok(())
    }

    async fn start(&self, spec: &InstanceSpec) -> Result<(), RuntimeError> {
        Self::pause(self.boot).await;
        self.set(&spec.instance_id, Power::Running)?;
        if let Some(vm) = self
            .vms
            .lock()
            .expect("sim runtime lock")
            .get_mut(&spec.instance_id)
        {
            vm.boots += 1;
            vm.booted_seq = spec.reboot_seq;
        }
        Ok(())
    }

    fn booted_seq(&self, id: &str) -> Option<i64> {
        self.vms
            .lock()
            .expect("sim runtime lock")
            .get(id)
            .map(|v| v.booted_seq)
    }

    async fn stop(&self, id: &str, how: StopType) -> Result<(), RuntimeError> {
        if how != StopType::Hard {
            Self::pause(self.shutdown).await;
        }
        self.set(id, Power::Stopped)
    }

    async fn reboot(&self, spec: &InstanceSpec, how: StopType) -> Result<(), RuntimeError> {
        self.stop(&spec.instance_id, how).await?;
        self.start(spec).await
    }

    async fn destroy(&self, id: &str) -> Result<(), RuntimeError> {
        self.vms.lock().expect("sim runtime lock").remove(id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpucloud_core::simspec::parse;

    #[test]
    fn same_spec_same_ids() {
        let a = SimHost::expand(&parse("3*H100x8", "ap-guangzhou", "ap-guangzhou-3").unwrap());
        let b = SimHost::expand(
            &parse("2*H100x8,1*T4x4,1*H100x8", "ap-guangzhou", "ap-guangzhou-3").unwrap(),
        );
        let ids_a: Vec<String> = a.iter().map(|h| h.host_id()).collect();
        let ids_b: Vec<String> = b
            .iter()
            .filter(|h| h.group.gpus == 8)
            .map(|h| h.host_id())
            .collect();
        assert_eq!(ids_a, ids_b);
        let inv1 = a[0].collect();
        let inv2 = a[0].collect();
        assert_eq!(inv1, inv2);
        assert_eq!(inv1.gpus.len(), 8);
        assert!(inv1.gpus[0].uuid.starts_with("GPU-"));
        assert_eq!(inv1.gpus[0].uuid.len(), 40);
        assert_eq!(inv1.gpus[0].pci_address, "0000:18:00.0");
        assert!(inv1.gpus.iter().all(|g| g.nvlink_domain == Some(0)));
        assert_eq!(inv1.gpus[7].numa_node, 1);
        let all: std::collections::HashSet<String> = b
            .iter()
            .flat_map(|h| h.collect().gpus.into_iter().map(|g| g.uuid))
            .collect();
        assert_eq!(all.len(), 8 * 3 + 4, "GPU UUIDs are unique");
    }

    #[test]
    fn pcie_gpus_have_no_nvlink_domain() {
        let h = SimHost::expand(&parse("T4x4", "ap-guangzhou", "ap-guangzhou-3").unwrap());
        let inv = h[0].collect();
        assert!(inv.gpus.iter().all(|g| g.nvlink_domain.is_none()));
        assert_eq!(
            inv.cpu_total, 180,
            "GI3X.45XLARGE452 needs 180 vCPUs for 4 T4s"
        );
    }
}
