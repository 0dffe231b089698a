//! The protocol between the gpucloud server and its host agents.
//!
//! It is **level-triggered**. The server keeps, per host, the complete desired
//! state — every instance the host must run, keep stopped or remove — under a
//! generation number that rises with every change. An agent asks for the
//! desired state newer than the generation it has ([`ControlPlane::desired`],
//! a long poll), converges its runtimes to it, and reports what it observes
//! ([`ControlPlane::report`]). Each instance carries its own spec generation;
//! the server settles an instance only from a report at or past that
//! generation. Nothing is a one-shot command: a lost message, a restarted
//! agent or a restarted server is repaired by the next exchange.
//!
//! Agents dial out to the server. In `gpucloud up` the transport is an
//! in-process call; between machines it is HTTP/JSON over mutual TLS. Both go
//! through the same [`ControlPlane`] trait, so the agent code is identical.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Protocol version; bumped on incompatible changes.
pub const PROTOCOL_VERSION: u32 = 1;

/// The name every agent endpoint certificate carries and every agent checks,
/// whatever address it dials (as Kubernetes clients check
/// `kubernetes.default.svc`): servers move and sit behind NAT, the CA is the
/// cluster's own, and agent certificates cannot serve (no server-auth usage).
pub const SERVER_NAME: &str = "gpucloud-server";

/// Agent endpoint paths.
pub mod paths {
    /// `GET`: the cluster CA (PEM).
    pub const CA: &str = "/agent/v1/ca";
    /// `POST` [`super::JoinRequest`] → [`super::JoinResponse`].
    pub const JOIN: &str = "/agent/v1/join";
    /// `POST` [`super::HostInventory`].
    pub const REGISTER: &str = "/agent/v1/register";
    /// `POST` [`super::DesiredRequest`] → [`super::DesiredState`].
    pub const DESIRED: &str = "/agent/v1/desired";
    /// `POST` [`super::ObservedState`].
    pub const REPORT: &str = "/agent/v1/report";
    /// `POST /agent/v1/console/<session_id>`: one exchange of a serial
    /// console relay. Request body: console output read since the last
    /// exchange (raw bytes, at most [`super::MAX_CONSOLE_CHUNK`]); header
    /// [`super::CONSOLE_ERROR_HEADER`] when the agent cannot serve the session.
    /// Response `200`: the tenant's input (raw bytes, possibly empty); `410
    /// Gone`: the session ended, drop the console connection.
    pub const CONSOLE: &str = "/agent/v1/console/";
}

/// Largest console chunk carried by one exchange, either way.
pub const MAX_CONSOLE_CHUNK: usize = 64 * 1024;

/// Request header an agent sets when it cannot serve a console session (the
/// VM is not running here …); its value, printable ASCII, is shown to the
/// tenant and the session ends.
pub const CONSOLE_ERROR_HEADER: &str = "x-gpucloud-console-error";

/// What kind of machine an agent manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostKind {
    /// A simulated host (demo fleets, scale tests).
    Sim,
    /// A real machine.
    Real,
}

/// An instance runtime an agent offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    /// Simulated instances.
    Sim,
    /// OCI containers (runc/crun).
    Container,
    /// QEMU/KVM virtual machines.
    Qemu,
}

impl RuntimeKind {
    /// Name used in image tags and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sim => "sim",
            Self::Container => "container",
            Self::Qemu => "qemu",
        }
    }
}

/// One GPU as the agent found it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuInventory {
    /// `GPU-<uuid>`, globally unique.
    pub uuid: String,
    /// Position on the host (stable order by PCI address).
    pub index: u32,
    /// Model key (`H100`), or `unknown`.
    pub model: String,
    /// Marketing name.
    pub name: String,
    /// PCI address `0000:18:00.0`.
    pub pci_address: String,
    /// NUMA node (0 when the platform has one).
    pub numa_node: u32,
    /// NVLink domain (GPUs that share NVLink/NVSwitch), `None` for PCIe-only.
    pub nvlink_domain: Option<u32>,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// Schedulable.
    pub healthy: bool,
    /// Why not.
    pub health_reason: String,
    /// MIG mode on (the driver's view).
    #[serde(default)]
    pub mig_enabled: bool,
    /// ECC on (`None`: unknown or unsupported).
    #[serde(default)]
    pub ecc_enabled: Option<bool>,
    /// Kernel driver bound to the GPU (`nvidia`, `vfio-pci`), from sysfs.
    #[serde(default)]
    pub kernel_driver: Option<String>,
}

/// A host as its agent sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostInventory {
    /// `host-…`, stable across restarts.
    pub host_id: String,
    /// Host name.
    pub hostname: String,
    /// Zone the host serves.
    pub zone: String,
    /// Simulated or real.
    pub kind: HostKind,
    /// vCPUs offered to instances.
    pub cpu_total: u32,
    /// Memory offered to instances, MiB.
    pub mem_total_mib: u64,
    /// Runtimes this host can run.
    pub runtimes: Vec<RuntimeKind>,
    /// Rack (for spread groups).
    pub rack: String,
    /// Top-of-rack switch (for spread groups).
    pub switch: String,
    /// GPUs.
    pub gpus: Vec<GpuInventory>,
    /// Everything else worth showing an operator (CPU model, kernel, KVM, driver …).
    pub details: serde_json::Value,
    /// Agent version.
    pub agent_version: String,
    /// Whether VM instances can take this host's GPUs (QEMU runs here and
    /// the IOMMU and vfio-pci are usable). Older agents omit it: no.
    #[serde(default)]
    pub gpu_passthrough: bool,
}

/// What an instance should be doing on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DesiredPower {
    /// Exists and runs.
    Running,
    /// Exists, powered off.
    Stopped,
    /// Must not exist here.
    Absent,
}

/// A GPU assigned to an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssignedGpu {
    /// Index on the host.
    pub index: u32,
    /// `GPU-<uuid>`.
    pub uuid: String,
    /// PCI address.
    pub pci_address: String,
}

/// The image an instance boots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    /// `img-…`.
    pub image_id: String,
    /// Runtime it needs.
    pub runtime: String,
    /// Where the runtime finds it on the host (rootfs directory, qcow2 …).
    pub location: String,
}

/// The instance's network interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicSpec {
    /// Private IPv4.
    pub ip: String,
    /// Subnet CIDR.
    pub cidr: String,
    /// The VPC (`vpc-…`): instances of one VPC share a layer-2 segment on a
    /// host; different VPCs never do, even with overlapping addresses.
    #[serde(default)]
    pub vpc_id: String,
}

/// Everything an agent needs to run one instance.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceSpec {
    /// `ins-…`.
    pub instance_id: String,
    /// Rises whenever the spec or the desired power changes.
    pub spec_generation: i64,
    /// Desired power.
    pub power: DesiredPower,
    /// Reboot requests: the instance must have rebooted this many times.
    pub reboot_seq: i64,
    /// `SOFT`, `HARD` or `SOFT_FIRST` for stops and reboots.
    pub stop_type: Option<String>,
    /// Instance name.
    pub name: String,
    /// Host name inside the instance.
    pub hostname: String,
    /// Instance type.
    pub instance_type: String,
    /// vCPUs.
    pub cpu: u32,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// GPUs.
    pub gpus: Vec<AssignedGpu>,
    /// Image.
    pub image: ImageRef,
    /// Base64 user data.
    pub user_data: Option<String>,
    /// Login password (only over the authenticated channel; never logged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Authorised SSH public keys.
    pub ssh_keys: Vec<String>,
    /// Network interface.
    pub nic: Option<NicSpec>,
    /// System disk size, GiB (`None`: the image's own size).
    #[serde(default)]
    pub system_disk_gib: Option<u64>,
    /// Data disk sizes, GiB, in order.
    #[serde(default)]
    pub data_disks_gib: Vec<u64>,
    /// Reinstalls (`ResetInstance`): when it rises, the runtime rebuilds
    /// the system disk from the image before the next boot.
    #[serde(default)]
    pub system_disk_seq: i64,
    /// Owner (AppId), for labels and isolation.
    pub app_id: i64,
}

gpucloud_api_types::debug_redacted!(InstanceSpec { instance_id, spec_generation, power, reboot_seq, stop_type, name, hostname, instance_type, cpu, memory_mib, gpus, image, ssh_keys, nic, system_disk_gib, data_disks_gib, system_disk_seq, app_id } secret { user_data, password });

/// A command to run inside an instance (TAT `RunCommand`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandSpec {
    /// `invt-…`: the task (one instance of one invocation).
    pub task_id: String,
    /// The instance.
    pub instance_id: String,
    /// Base64 script.
    pub content: String,
    /// `SHELL`.
    pub command_type: String,
    /// Working directory inside the instance.
    pub working_directory: String,
    /// Seconds before the command is killed.
    pub timeout_s: u64,
    /// User to run as.
    pub username: String,
    /// `PENDING` (run it) or `RUNNING` (it was started before; do not start again).
    pub status: String,
}

/// A live serial-console session (`DescribeInstanceVncUrl`) of a VM on this
/// host: the agent connects to the VM's serial console and relays it through
/// [`ControlPlane::console`] until the control plane says it ended.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConsoleSpec {
    /// Names the session on the relay; not the tenant's secret URL token.
    pub session_id: String,
    /// The instance whose console is wanted.
    pub instance_id: String,
}

/// What an agent sends in one console exchange.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsoleUp {
    /// Console output read since the last exchange.
    pub output: Vec<u8>,
    /// Why the agent cannot serve the session (it then ends).
    pub error: Option<String>,
}

/// What the control plane answers to a console exchange.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsoleDown {
    /// The tenant's input gathered since the last exchange.
    pub input: Vec<u8>,
    /// The session is over: close the console connection.
    pub ended: bool,
}

/// The desired state of a host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredState {
    /// The host.
    pub host_id: String,
    /// Generation of this state.
    pub generation: i64,
    /// Instances.
    pub instances: Vec<InstanceSpec>,
    /// Commands to run (or being run) in instances of this host.
    #[serde(default)]
    pub commands: Vec<CommandSpec>,
    /// Live serial-console sessions of VMs on this host.
    #[serde(default)]
    pub consoles: Vec<ConsoleSpec>,
}

/// Progress or outcome of a command task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    /// `invt-…`.
    pub task_id: String,
    /// `RUNNING`, `SUCCESS`, `FAILED`, `TIMEOUT` or `START_FAILED`.
    pub status: String,
    /// Exit code when finished.
    pub exit_code: Option<i64>,
    /// Base64 of the (possibly truncated) combined stdout and stderr.
    pub output: String,
    /// Bytes of output dropped beyond the limit.
    pub dropped: u64,
    /// When the command started (Unix ms).
    pub started_ms: Option<i64>,
    /// When it ended (Unix ms).
    pub ended_ms: Option<i64>,
    /// Why it could not run, for a person.
    pub error: String,
}

/// What an agent saw of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObservedPower {
    /// Running the spec of `spec_generation`.
    Running,
    /// Present and powered off.
    Stopped,
    /// Not present.
    Absent,
    /// Could not converge; see the message.
    Failed,
}

/// The observed state of one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceStatus {
    /// `ins-…`.
    pub instance_id: String,
    /// The spec generation the agent acted on.
    pub spec_generation: i64,
    /// What it saw.
    pub power: ObservedPower,
    /// Reboots done (matches the spec's `reboot_seq` once done).
    pub reboot_seq: i64,
    /// Error for a person, when failed.
    pub message: Option<String>,
}

/// An agent's report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObservedState {
    /// The host.
    pub host_id: String,
    /// The desired generation the agent last received.
    pub generation: i64,
    /// Every instance of that desired state, plus any other the host runs.
    pub instances: Vec<InstanceStatus>,
    /// Command tasks the agent ran or is running.
    #[serde(default)]
    pub commands: Vec<CommandResult>,
}

/// Largest command output kept, bytes (the rest is counted as dropped).
pub const MAX_COMMAND_OUTPUT: usize = 24 * 1024;

/// A request to join the cluster: a join token and a certificate signing
/// request for the agent's own key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The join token (`gcj.<id>.<secret>`).
    pub token: String,
    /// The host ID the agent will use (also the certificate's common name).
    pub host_id: String,
    /// PEM certificate signing request.
    pub csr_pem: String,
}

gpucloud_api_types::debug_redacted!(JoinRequest { host_id, csr_pem } secret { token });

/// The answer to a join: the agent's certificate, signed by the cluster CA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinResponse {
    /// PEM certificate for the agent.
    pub cert_pem: String,
    /// PEM of the cluster CA.
    pub ca_pem: String,
}

/// A long-poll request for desired state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredRequest {
    /// Return once the generation exceeds this.
    pub after: i64,
    /// Longest wait, milliseconds.
    pub wait_ms: u64,
}

/// Error body of the agent endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentApiError {
    /// Stable code (`token_invalid`, `token_expired`, `unknown_host`, …).
    pub code: String,
    /// What to do about it.
    pub message: String,
}

/// Transport or server failure seen by an agent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The server could not be reached; retry later.
    #[error("control plane unreachable: {0}")]
    Unreachable(String),
    /// The server refused the request (unknown host, bad certificate, …).
    #[error("control plane refused the request: {0}")]
    Refused(String),
}

/// The control plane as an agent sees it.
#[async_trait::async_trait]
pub trait ControlPlane: Send + Sync + 'static {
    /// Announces (or refreshes) the host and its inventory.
    async fn register(&self, inventory: &HostInventory) -> Result<(), LinkError>;

    /// The desired state, once its generation exceeds `after`; returns the
    /// current state anyway after `wait`.
    async fn desired(
        &self,
        host_id: &str,
        after: i64,
        wait: Duration,
    ) -> Result<DesiredState, LinkError>;

    /// Reports the observed state.
    async fn report(&self, observed: &ObservedState) -> Result<(), LinkError>;

    /// One exchange of a console relay: hands over the VM's output and
    /// returns the tenant's input, waiting briefly (about a second) for input
    /// when there is nothing to carry either way. `Ok` with `ended` once the
    /// session is over (or unknown to this control plane).
    async fn console(
        &self,
        host_id: &str,
        session_id: &str,
        up: ConsoleUp,
    ) -> Result<ConsoleDown, LinkError> {
        let _ = (host_id, session_id, up);
        Err(LinkError::Refused(
            "this control plane does not relay serial consoles".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_reports_without_commands_still_decode() {
        let d: DesiredState =
            serde_json::from_str(r#"{"host_id":"h","generation":1,"instances":[]}"#).unwrap();
        assert!(d.commands.is_empty());
        assert!(d.consoles.is_empty());
        let o: ObservedState =
            serde_json::from_str(r#"{"host_id":"h","generation":1,"instances":[]}"#).unwrap();
        assert!(o.commands.is_empty());
    }

    #[test]
    fn wire_shapes_are_stable() {
        let s = InstanceStatus {
            instance_id: "ins-a".into(),
            spec_generation: 3,
            power: ObservedPower::Running,
            reboot_seq: 0,
            message: None,
        };
        let j = serde_json::to_value(&s).unwrap();
        assert_eq!(j["power"], "running");
        let back: InstanceStatus = serde_json::from_value(j).unwrap();
        assert_eq!(back, s);
        assert_eq!(
            serde_json::to_value(DesiredPower::Absent).unwrap(),
            "absent"
        );
        assert_eq!(serde_json::to_value(RuntimeKind::Qemu).unwrap(), "qemu");
    }
}
