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
    /// Bytes of output the runtime discarded before `output` (it keeps the
    /// tail of a chatty command), so the task can say how much is missing.
    pub dropped: u64,
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

    /// The reboot count (`InstanceSpec::reboot_seq`) the running instance
    /// last booted with, when the runtime records it ([`record_boot`]).
    /// An agent that restarts while a reboot (or a reinstall, a key or
    /// password change with `ForceStop`) is pending learns from it that the
    /// instance must still reboot. `None`: not recorded.
    fn booted_seq(&self, id: &str) -> Option<i64> {
        let _ = id;
        None
    }

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

/// Kills a process and every process below it, as TAT does when a command
/// passes its `Timeout`: each process is stopped before its children are
/// read (so it cannot start new ones), children are killed before their
/// parent (so none is re-parented out of reach). Processes that already left
/// the tree (daemons that double-forked) are not followed.
pub fn kill_process_tree(pid: i32) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    fn children(pid: i32) -> Vec<i32> {
        let mut out = Vec::new();
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return out;
        };
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|c| c.parse::<i32>().ok()));
            }
        }
        out
    }
    fn walk(pid: i32, depth: usize) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGSTOP);
        if depth < 64 {
            for c in children(pid) {
                walk(c, depth + 1);
            }
        }
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    if pid > 1 {
        walk(pid, 0);
    }
}

/// Whether an instance's system disk must be rebuilt before it boots: the
/// spec's reinstall count (`ResetInstance`) is past the one recorded in
/// `<dir>/system.seq` (absent: none yet). A crash between rebuilding and
/// [`reinstall_done`] rebuilds again, before anything booted from the new
/// disk. A record that cannot be read is an error, never a reason to wipe
/// a disk in use.
pub fn reinstall_due(dir: &std::path::Path, wanted: i64) -> std::io::Result<bool> {
    let done: i64 = match std::fs::read_to_string(dir.join("system.seq")) {
        Ok(s) => s.trim().parse().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} is damaged ({:?}); write the reinstall count the disk has (0 if never reinstalled) into it",
                    dir.join("system.seq").display(),
                    s.trim()
                ),
            )
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e),
    };
    Ok(wanted > done)
}

/// Records, durably (file and directory synced), that the system disk was
/// rebuilt for reinstall `seq`.
pub fn reinstall_done(dir: &std::path::Path, seq: i64) -> std::io::Result<()> {
    write_durably(dir, "system.seq", seq.to_string().as_bytes())
}

fn write_durably(dir: &std::path::Path, name: &str, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Records the reboot count an instance booted with (see
/// [`Runtime::booted_seq`]). Best effort: without it, a pending reboot is
/// only missed across an agent restart.
pub fn record_boot(dir: &std::path::Path, reboot_seq: i64) {
    if let Err(e) = write_durably(dir, "boot.seq", reboot_seq.to_string().as_bytes()) {
        tracing::warn!(dir = %dir.display(), error = %e, "could not record the boot");
    }
}

/// The reboot count recorded by [`record_boot`].
pub fn booted_seq(dir: &std::path::Path) -> Option<i64> {
    std::fs::read_to_string(dir.join("boot.seq"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// [`kill_process_tree`] as a POSIX shell function, for guests (`$1` is the
/// process ID); it needs only `/proc/<pid>/task/<tid>/children`.
pub const KILL_TREE_SH: &str = "t() { kill -STOP \"$1\" 2>/dev/null; for c in $(cat /proc/\"$1\"/task/*/children 2>/dev/null); do t \"$c\"; done; kill -KILL \"$1\" 2>/dev/null; }; t \"$1\"";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reinstalls_are_counted_once() {
        let d = tempfile::tempdir().unwrap();
        let due = |n| reinstall_due(d.path(), n).unwrap();
        assert!(!due(0), "a new instance has nothing to rebuild");
        assert!(due(1));
        reinstall_done(d.path(), 1).unwrap();
        assert!(!due(1), "done once");
        assert!(due(2));
        std::fs::write(d.path().join("system.seq"), "garbage").unwrap();
        assert!(
            reinstall_due(d.path(), 2).is_err(),
            "a damaged record never wipes a disk"
        );
        // Boots.
        assert_eq!(booted_seq(d.path()), None);
        record_boot(d.path(), 3);
        assert_eq!(booted_seq(d.path()), Some(3));
    }

    #[test]
    fn a_process_tree_dies_whole() {
        // sh → (sleep, sh → sleep): every one of them goes.
        let mut child = std::process::Command::new("/bin/sh")
            .args([
                "-c",
                "sleep 300 & sh -c 'sleep 300 & wait' & echo ready; wait",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let pid = child.id() as i32;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let descendants = |pid: i32| -> Vec<i32> {
            let mut all = vec![];
            let mut queue = vec![pid];
            while let Some(p) = queue.pop() {
                for t in std::fs::read_dir(format!("/proc/{p}/task"))
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    let s = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
                    for c in s.split_whitespace().filter_map(|c| c.parse().ok()) {
                        all.push(c);
                        queue.push(c);
                    }
                }
            }
            all
        };
        let mut below = descendants(pid);
        while below.len() < 3 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
            below = descendants(pid);
        }
        assert!(below.len() >= 3, "{below:?}");
        // (state, start time) of a process; the start time tells a reused PID.
        let stat = |p: i32| -> Option<(String, String)> {
            let s = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            let f: Vec<String> = s
                .rsplit(')')
                .next()?
                .split_whitespace()
                .map(String::from)
                .collect();
            Some((f.first()?.clone(), f.get(19)?.clone()))
        };
        let started: Vec<(i32, String)> = below
            .iter()
            .filter_map(|&p| stat(p).map(|(_, t)| (p, t)))
            .collect();
        kill_process_tree(pid);
        let status = child.wait().unwrap();
        assert!(!status.success());
        // SIGKILL is delivered asynchronously: each process must be gone (or
        // a zombie) within a deadline.
        for (p, t) in started {
            let dead = || match stat(p) {
                None => true,
                Some((state, start)) => start != t || state == "Z" || state == "X",
            };
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !dead() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            assert!(dead(), "process {p} still runs: {:?}", stat(p));
        }
    }
}
