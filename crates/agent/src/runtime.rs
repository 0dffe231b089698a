//! The runtime seam: how an agent creates, powers and destroys instances.
//!
//! The simulated, container and QEMU runtimes implement the same trait, so
//! the convergence loop in [`crate::Agent`] is the same code for all of them.
//! Every method is idempotent: calling it again after a crash is safe.

use gpucloud_agent_api::{InstanceSpec, RuntimeKind};

/// Power state a runtime reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    /// Running.
    Running,
    /// Present, powered off.
    Stopped,
}

/// How to stop or reboot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StopType {
    /// Ask the guest (ACPI / SIGTERM) and wait.
    #[default]
    Soft,
    /// Pull the plug.
    Hard,
    /// Soft, then hard after a timeout.
    SoftFirst,
}

impl StopType {
    /// Parses the API value (absent: `SOFT`).
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("HARD") => Self::Hard,
            Some("SOFT_FIRST") => Self::SoftFirst,
            _ => Self::Soft,
        }
    }
}

/// A runtime failure, with a message a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RuntimeError(pub String);

impl RuntimeError {
    /// From anything displayable.
    pub fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

/// A command to run inside an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    /// The script (run by `/bin/sh`).
    pub script: Vec<u8>,
    /// Working directory.
    pub working_directory: String,
    /// User.
    pub username: String,
    /// Kill after this long.
    pub timeout: std::time::Duration,
}

/// What a command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit status (signals as 128 + n).
    pub exit_code: i64,
    /// Combined stdout and stderr.
    pub output: Vec<u8>,
    /// Killed at the timeout.
    pub timed_out: bool,
}

/// An instance runtime.
#[async_trait::async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// The runtime kinds this implementation serves.
    fn kinds(&self) -> Vec<RuntimeKind>;

    /// Instances this runtime has right now (adoption after an agent restart).
    async fn list(&self) -> Result<Vec<(String, Power)>, RuntimeError>;

    /// Power state of one instance; `None` when it does not exist.
    async fn status(&self, id: &str) -> Result<Option<Power>, RuntimeError>;

    /// Creates the instance, powered off.
    async fn create(&self, spec: &InstanceSpec) -> Result<(), RuntimeError>;

    /// Applies a changed spec (shape, keys, host name) to an existing instance.
    async fn update(&self, spec: &InstanceSpec) -> Result<(), RuntimeError>;

    /// Powers the instance on.
    async fn start(&self, spec: &InstanceSpec) -> Result<(), RuntimeError>;

    /// Powers the instance off.
    async fn stop(&self, id: &str, how: StopType) -> Result<(), RuntimeError>;

    /// Reboots the instance.
    async fn reboot(&self, spec: &InstanceSpec, how: StopType) -> Result<(), RuntimeError>;

    /// Destroys the instance and everything it left on the host.
    async fn destroy(&self, id: &str) -> Result<(), RuntimeError>;

    /// Runs a command inside a running instance.
    async fn exec(&self, id: &str, req: &ExecRequest) -> Result<ExecOutput, RuntimeError> {
        let _ = (id, req);
        Err(RuntimeError::new(
            "this runtime cannot run commands inside instances",
        ))
    }

    /// Connects to the serial console of a running instance (the relay of
    /// `DescribeInstanceVncUrl` sessions). The console takes one client at a
    /// time; dropping the stream lets the next one in.
    async fn console(&self, id: &str) -> Result<tokio::net::UnixStream, RuntimeError> {
        let _ = id;
        Err(RuntimeError::new(
            "this runtime has no serial console; the console exists for VM instances only",
        ))
    }
}
