//! The instance state machine (reference §6.3).
//!
//! ```text
//!                    RunInstances
//!                         │
//!                         ▼
//!        ┌──────────── PENDING ────────────┐
//!        │ agent: running                  │ agent: failed
//!        ▼                                 ▼
//!     RUNNING ◀──── REBOOTING         LAUNCH_FAILED
//!      │  ▲  └───────▶ (Reboot)            │
//!  Stop│  │agent: running                  │
//!      ▼  │                                │
//!   STOPPING          STARTING ◀── Start / ResetInstancesType
//!      │ agent: stopped   ▲                │
//!      ▼                  │                │
//!   STOPPED ──────────────┘                │
//!      │                                   │
//!      └──── Terminate (from any settled state) ──▶ TERMINATING ──agent: gone──▶ TERMINATED
//! ```
//!
//! Transitional states (`PENDING`, `STARTING`, `STOPPING`, `REBOOTING`,
//! `TERMINATING`) carry `LatestOperationState = OPERATING`; they settle only
//! when a host agent reports the observed state. `TERMINATED` instances are
//! kept for idempotency but never listed.

use serde::{Deserialize, Serialize};

/// An instance state, spelled as the API spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum InstanceState {
    /// Created, waiting for its host to start it.
    Pending,
    /// The host could not create it.
    LaunchFailed,
    /// Running.
    Running,
    /// Stopped.
    Stopped,
    /// Being started.
    Starting,
    /// Being stopped.
    Stopping,
    /// Being rebooted.
    Rebooting,
    /// Stopped and waiting to be destroyed (isolated prepaid instances).
    Shutdown,
    /// Being destroyed.
    Terminating,
    /// Destroyed (never shown by `DescribeInstances`).
    Terminated,
}

impl InstanceState {
    /// All states.
    pub const ALL: [Self; 10] = [
        Self::Pending,
        Self::LaunchFailed,
        Self::Running,
        Self::Stopped,
        Self::Starting,
        Self::Stopping,
        Self::Rebooting,
        Self::Shutdown,
        Self::Terminating,
        Self::Terminated,
    ];

    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::LaunchFailed => "LAUNCH_FAILED",
            Self::Running => "RUNNING",
            Self::Stopped => "STOPPED",
            Self::Starting => "STARTING",
            Self::Stopping => "STOPPING",
            Self::Rebooting => "REBOOTING",
            Self::Shutdown => "SHUTDOWN",
            Self::Terminating => "TERMINATING",
            Self::Terminated => "TERMINATED",
        }
    }

    /// Parses the API spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// `UnsupportedOperation.InstanceState<State>`: the code for refusing an
    /// operation because the instance is in this state.
    pub fn refusal_code(self) -> &'static str {
        match self {
            Self::Pending => "UnsupportedOperation.InstanceStatePending",
            Self::LaunchFailed => "UnsupportedOperation.InstanceStateLaunchFailed",
            Self::Running => "UnsupportedOperation.InstanceStateRunning",
            Self::Stopped => "UnsupportedOperation.InstanceStateStopped",
            Self::Starting => "UnsupportedOperation.InstanceStateStarting",
            Self::Stopping => "UnsupportedOperation.InstanceStateStopping",
            Self::Rebooting => "UnsupportedOperation.InstanceStateRebooting",
            Self::Shutdown => "UnsupportedOperation.InstanceStateShutdown",
            Self::Terminating => "UnsupportedOperation.InstanceStateTerminating",
            Self::Terminated => "UnsupportedOperation.InstanceStateTerminated",
        }
    }

    /// Whether an operation is under way (`LatestOperationState = OPERATING`).
    pub fn is_transitional(self) -> bool {
        match self {
            Self::Pending
            | Self::Starting
            | Self::Stopping
            | Self::Rebooting
            | Self::Terminating => true,
            Self::LaunchFailed
            | Self::Running
            | Self::Stopped
            | Self::Shutdown
            | Self::Terminated => false,
        }
    }

    /// What the host should be doing with the instance in this state.
    pub fn desired_power(self) -> DesiredPower {
        match self {
            Self::Pending | Self::Running | Self::Starting | Self::Rebooting => {
                DesiredPower::Running
            }
            Self::Stopped | Self::Stopping | Self::Shutdown => DesiredPower::Stopped,
            Self::LaunchFailed | Self::Terminating | Self::Terminated => DesiredPower::Absent,
        }
    }
}

/// What a host should make of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DesiredPower {
    /// Exists and runs.
    Running,
    /// Exists, powered off (disks kept).
    Stopped,
    /// Does not exist on the host.
    Absent,
}

/// Whether `from → to` is a legal transition. Exhaustive on purpose: adding a
/// state forces every transition to be decided.
pub fn valid_transition(from: InstanceState, to: InstanceState) -> bool {
    use InstanceState::*;
    match (from, to) {
        (Pending, Running | LaunchFailed | Terminating) => true,
        (Pending, Pending | Stopped | Starting | Stopping | Rebooting | Shutdown | Terminated) => {
            false
        }
        (Running, Stopping | Rebooting | Terminating | Starting | Stopped | Shutdown) => true,
        (Running, Pending | LaunchFailed | Running | Terminated) => false,
        (Stopping, Stopped | Running) => true,
        (Stopping, Pending | LaunchFailed | Stopping | Starting | Rebooting | Shutdown)
        | (Stopping, Terminating | Terminated) => false,
        (Stopped, Starting | Terminating | Shutdown) => true,
        (Stopped, Pending | LaunchFailed | Running | Stopped | Stopping | Rebooting)
        | (Stopped, Terminated) => false,
        (Starting, Running | Stopped) => true,
        (Starting, Pending | LaunchFailed | Starting | Stopping | Rebooting | Shutdown)
        | (Starting, Terminating | Terminated) => false,
        (Rebooting, Running | Stopped) => true,
        (Rebooting, Pending | LaunchFailed | Starting | Stopping | Rebooting | Shutdown)
        | (Rebooting, Terminating | Terminated) => false,
        (LaunchFailed, Terminating) => true,
        (LaunchFailed, Pending | LaunchFailed | Running | Stopped | Starting | Stopping)
        | (LaunchFailed, Rebooting | Shutdown | Terminated) => false,
        (Shutdown, Terminating | Starting) => true,
        (Shutdown, Pending | LaunchFailed | Running | Stopped | Stopping | Rebooting)
        | (Shutdown, Shutdown | Terminated) => false,
        (Terminating, Terminated) => true,
        (Terminating, Pending | LaunchFailed | Running | Stopped | Starting | Stopping)
        | (Terminating, Rebooting | Shutdown | Terminating) => false,
        (Terminated, _) => false,
    }
}

/// A user operation on an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Operation {
    /// `RunInstances`
    Run,
    /// `StartInstances`
    Start,
    /// `StopInstances`
    Stop,
    /// `RebootInstances`
    Reboot,
    /// `TerminateInstances`
    Terminate,
    /// `ResetInstancesType`
    ResetType,
    /// `AssociateInstancesKeyPairs` with `ForceStop` on a running instance
    AssociateKeyPairs,
    /// `DisassociateInstancesKeyPairs` with `ForceStop` on a running instance
    DisassociateKeyPairs,
    /// `ResetInstancesPassword` with `ForceStop` on a running instance
    ResetPassword,
    /// `ResetInstance`: reinstall the system disk, then run
    Reinstall,
}

impl Operation {
    /// The action name shown in `LatestOperation`.
    pub fn action(self) -> &'static str {
        match self {
            Self::Run => "RunInstances",
            Self::Start => "StartInstances",
            Self::Stop => "StopInstances",
            Self::Reboot => "RebootInstances",
            Self::Terminate => "TerminateInstances",
            Self::ResetType => "ResetInstancesType",
            Self::AssociateKeyPairs => "AssociateInstancesKeyPairs",
            Self::DisassociateKeyPairs => "DisassociateInstancesKeyPairs",
            Self::ResetPassword => "ResetInstancesPassword",
            Self::Reinstall => "ResetInstance",
        }
    }

    /// Parses an action name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Run,
            Self::Start,
            Self::Stop,
            Self::Reboot,
            Self::Terminate,
            Self::ResetType,
            Self::AssociateKeyPairs,
            Self::DisassociateKeyPairs,
            Self::ResetPassword,
            Self::Reinstall,
        ]
        .into_iter()
        .find(|o| o.action() == s)
    }
}

/// The state an operation moves an instance into, or the state that refuses it.
pub fn begin(state: InstanceState, op: Operation) -> Result<InstanceState, InstanceState> {
    use InstanceState::*;
    let to = match (op, state) {
        (Operation::Start, Stopped) => Starting,
        (Operation::Stop, Running) => Stopping,
        (Operation::Reboot, Running) => Rebooting,
        (Operation::Terminate, Pending | Running | Stopped | LaunchFailed | Shutdown) => {
            Terminating
        }
        (Operation::ResetType | Operation::Reinstall, Stopped | Running) => Starting,
        (
            Operation::AssociateKeyPairs
            | Operation::DisassociateKeyPairs
            | Operation::ResetPassword,
            Running,
        ) => Rebooting,
        _ => return Err(state),
    };
    debug_assert!(valid_transition(state, to), "{state:?} -> {to:?}");
    Ok(to)
}

/// [`begin`] with the instance's charge type: the first `TerminateInstances`
/// of a prepaid instance moves it to the recycle bin (`SHUTDOWN`: powered
/// off, resources kept), the second destroys it.
pub fn begin_charged(
    state: InstanceState,
    op: Operation,
    prepaid: bool,
) -> Result<InstanceState, InstanceState> {
    use InstanceState::*;
    match (op, state) {
        (Operation::Terminate, Running | Stopped) if prepaid => Ok(Shutdown),
        _ => begin(state, op),
    }
}

/// What a host agent saw of an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// Running the current spec.
    Running,
    /// Present and powered off.
    Stopped,
    /// Not on the host.
    Absent,
    /// The host failed to converge it.
    Failed,
}

/// How a report settles a state: the new state, and whether the operation
/// succeeded (`Some(true)`), failed (`Some(false)`) or is not finished (`None`).
pub fn settle(state: InstanceState, observed: Observed) -> (InstanceState, Option<bool>) {
    use InstanceState::*;
    match (state, observed) {
        (Pending, Observed::Running) => (Running, Some(true)),
        (Pending, Observed::Failed) => (LaunchFailed, Some(false)),
        (Pending, Observed::Stopped | Observed::Absent) => (Pending, None),
        (Starting, Observed::Running) => (Running, Some(true)),
        (Starting, Observed::Failed) => (Stopped, Some(false)),
        (Starting, Observed::Stopped | Observed::Absent) => (Starting, None),
        (Rebooting, Observed::Running) => (Running, Some(true)),
        // Most often the guest would not shut down for the reboot: it still
        // runs (and the host brings it back to running if it did not).
        (Rebooting, Observed::Failed) => (Running, Some(false)),
        (Rebooting, Observed::Stopped | Observed::Absent) => (Rebooting, None),
        (Stopping, Observed::Stopped) => (Stopped, Some(true)),
        // The guest would not power off (or the host failed to stop it): it
        // still runs, and the user can stop it again, harder.
        (Stopping, Observed::Failed) => (Running, Some(false)),
        (Stopping, Observed::Running | Observed::Absent) => (Stopping, None),
        (Terminating, Observed::Absent) => (Terminated, Some(true)),
        (Terminating, Observed::Running | Observed::Stopped | Observed::Failed) => {
            (Terminating, None)
        }
        // A running instance whose guest powered itself off is honestly stopped.
        (Running, Observed::Stopped) => (Stopped, None),
        (Running, Observed::Running | Observed::Absent | Observed::Failed) => (Running, None),
        (Stopped, _) => (Stopped, None),
        (LaunchFailed, _) => (LaunchFailed, None),
        (Shutdown, _) => (Shutdown, None),
        (Terminated, _) => (Terminated, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_round_trip() {
        for s in InstanceState::ALL {
            assert_eq!(InstanceState::parse(s.as_str()), Some(s));
            assert!(s.refusal_code().ends_with(
                &s.as_str()
                    .split('_')
                    .map(|w| w[..1].to_string() + &w[1..].to_lowercase())
                    .collect::<String>()
            ));
        }
    }

    #[test]
    fn every_begin_and_settle_is_a_valid_transition() {
        let ops = [
            Operation::Start,
            Operation::Stop,
            Operation::Reboot,
            Operation::Terminate,
            Operation::ResetType,
            Operation::AssociateKeyPairs,
            Operation::DisassociateKeyPairs,
            Operation::ResetPassword,
            Operation::Reinstall,
        ];
        for s in InstanceState::ALL {
            for op in ops {
                if let Ok(to) = begin(s, op) {
                    assert!(valid_transition(s, to), "{s:?} --{op:?}--> {to:?}");
                    assert!(to.is_transitional());
                }
            }
            for o in [
                Observed::Running,
                Observed::Stopped,
                Observed::Absent,
                Observed::Failed,
            ] {
                let (to, _) = settle(s, o);
                assert!(
                    to == s || valid_transition(s, to),
                    "{s:?} --{o:?}--> {to:?}"
                );
            }
        }
    }

    #[test]
    fn a_stop_the_host_could_not_finish_leaves_a_running_instance_that_can_be_stopped_again() {
        let (to, ok) = settle(InstanceState::Stopping, Observed::Failed);
        assert_eq!((to, ok), (InstanceState::Running, Some(false)));
        assert_eq!(begin(to, Operation::Stop), Ok(InstanceState::Stopping));
        assert_eq!(to.desired_power(), DesiredPower::Running);
        let (to, ok) = settle(InstanceState::Rebooting, Observed::Failed);
        assert_eq!((to, ok), (InstanceState::Running, Some(false)));
    }

    #[test]
    fn prepaid_instances_go_to_the_recycle_bin_first() {
        use InstanceState::*;
        for s in [Running, Stopped] {
            let to = begin_charged(s, Operation::Terminate, true).unwrap();
            assert_eq!(to, Shutdown);
            assert!(valid_transition(s, to));
            assert_eq!(to.desired_power(), DesiredPower::Stopped);
            assert_eq!(
                begin_charged(to, Operation::Terminate, true),
                Ok(Terminating)
            );
            assert_eq!(
                begin_charged(s, Operation::Terminate, false),
                Ok(Terminating)
            );
        }
        assert_eq!(
            begin_charged(LaunchFailed, Operation::Terminate, true),
            Ok(Terminating)
        );
        assert_eq!(
            begin_charged(Shutdown, Operation::Start, true),
            Err(Shutdown)
        );
    }

    #[test]
    fn refusals() {
        assert_eq!(
            begin(InstanceState::Running, Operation::Start),
            Err(InstanceState::Running)
        );
        assert_eq!(
            begin(InstanceState::Stopped, Operation::Stop),
            Err(InstanceState::Stopped)
        );
        assert_eq!(
            begin(InstanceState::Terminating, Operation::Terminate),
            Err(InstanceState::Terminating)
        );
        assert_eq!(
            begin(InstanceState::Stopped, Operation::Start),
            Ok(InstanceState::Starting)
        );
    }
}
