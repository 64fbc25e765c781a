//! Executions: one attempt to run a job on a compute node, and its states.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{EvaluationId, ExecutionId, Job, JobId, NodeId, StateCode, Timestamp, ValidationError};

/// The compute-side state of an execution (Bacalhau's table, in its order).
///
/// The discriminant is the stable one-byte code used in keys and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum ExecutionState {
    /// Accepted by the node, not yet bid on.
    Created = 0,
    /// The node's bid was accepted; resources are reserved.
    BidAccepted = 1,
    /// Running on the node.
    Running = 2,
    /// Finished running, waiting for its result to be verified.
    WaitingVerification = 3,
    /// The result was accepted.
    ResultAccepted = 4,
    /// The result is being published.
    Publishing = 5,
    /// Finished successfully.
    Completed = 6,
    /// Finished unsuccessfully.
    Failed = 7,
    /// Stopped before finishing.
    Cancelled = 8,
}

impl ExecutionState {
    /// Every state, in code order.
    pub const ALL: [ExecutionState; 9] = [
        ExecutionState::Created,
        ExecutionState::BidAccepted,
        ExecutionState::Running,
        ExecutionState::WaitingVerification,
        ExecutionState::ResultAccepted,
        ExecutionState::Publishing,
        ExecutionState::Completed,
        ExecutionState::Failed,
        ExecutionState::Cancelled,
    ];

    /// The states that hold node resources.
    pub const LIVE: [ExecutionState; 5] = [
        ExecutionState::BidAccepted,
        ExecutionState::Running,
        ExecutionState::WaitingVerification,
        ExecutionState::ResultAccepted,
        ExecutionState::Publishing,
    ];

    /// Whether the execution holds node resources in this state.
    pub fn is_live(self) -> bool {
        Self::LIVE.contains(&self)
    }

    /// The state's name, as written in policy files and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionState::Created => "Created",
            ExecutionState::BidAccepted => "BidAccepted",
            ExecutionState::Running => "Running",
            ExecutionState::WaitingVerification => "WaitingVerification",
            ExecutionState::ResultAccepted => "ResultAccepted",
            ExecutionState::Publishing => "Publishing",
            ExecutionState::Completed => "Completed",
            ExecutionState::Failed => "Failed",
            ExecutionState::Cancelled => "Cancelled",
        }
    }
}

impl StateCode for ExecutionState {
    const ALL: &'static [Self] = &ExecutionState::ALL;

    fn code(self) -> u8 {
        self as u8
    }

    fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code)).copied()
    }

    fn is_terminal(self) -> bool {
        matches!(self, ExecutionState::Completed | ExecutionState::Failed | ExecutionState::Cancelled)
    }
}

impl ExecutionState {
    /// See [`StateCode::code`].
    pub fn code(self) -> u8 {
        StateCode::code(self)
    }

    /// See [`StateCode::is_terminal`].
    pub fn is_terminal(self) -> bool {
        StateCode::is_terminal(self)
    }

    /// See [`StateCode::from_code`].
    pub fn from_code(code: u8) -> Option<Self> {
        StateCode::from_code(code)
    }
}

impl fmt::Display for ExecutionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ExecutionState {
    type Err = String;

    /// Accepts the plain name (`Running`) and Bacalhau's long form
    /// (`ExecutionStateRunning`), ignoring ASCII case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let short = s.get(..14).filter(|p| p.eq_ignore_ascii_case("ExecutionState")).map_or(s, |_| &s[14..]);
        Self::ALL
            .iter()
            .copied()
            .find(|st| st.as_str().eq_ignore_ascii_case(short))
            .ok_or_else(|| format!("unknown execution state {s:?}"))
    }
}

/// What the requester wants an execution to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum DesiredStateKind {
    /// Not yet decided.
    #[default]
    Pending,
    /// Should run.
    Running,
    /// Should stop.
    Stopped,
}

/// The desired state with the reason it was set.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DesiredState {
    /// The desired state.
    pub state: DesiredStateKind,
    /// Why it was set.
    pub message: String,
}

/// The observed compute state with its reason and details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComputeState {
    /// The state.
    pub state: ExecutionState,
    /// Why the execution is in this state.
    pub message: String,
    /// Free-form details.
    pub details: BTreeMap<String, String>,
}

impl ComputeState {
    /// A compute state with a message and no details.
    pub fn new(state: ExecutionState, message: impl Into<String>) -> Self {
        ComputeState { state, message: message.into(), details: BTreeMap::new() }
    }
}

/// Resources reserved for an execution on its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Resources {
    /// CPU in thousandths of a core.
    pub cpu_millis: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Disk in bytes.
    pub disk_bytes: u64,
    /// Number of GPUs.
    pub gpus: u64,
}

/// Where an execution's result was published.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PublishedResult {
    /// Publisher type, e.g. `s3` or `local`.
    pub kind: String,
    /// Publisher-specific parameters.
    pub params: BTreeMap<String, String>,
}

/// What the execution's process produced.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RunOutput {
    /// Standard output, possibly truncated.
    pub stdout: String,
    /// Whether `stdout` was truncated.
    pub stdout_truncated: bool,
    /// Standard error, possibly truncated.
    pub stderr: String,
    /// Whether `stderr` was truncated.
    pub stderr_truncated: bool,
    /// Process exit code.
    pub exit_code: i32,
    /// Error message when the run itself failed.
    pub error_msg: String,
}

/// One attempt to run a job on a compute node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Execution {
    /// The execution's id.
    pub id: ExecutionId,
    /// Namespace of the job.
    pub namespace: String,
    /// The job this execution runs.
    pub job_id: JobId,
    /// Snapshot of the job spec when the execution was created.
    pub job: Job,
    /// The evaluation that created this execution.
    pub eval_id: Option<EvaluationId>,
    /// Human-readable name.
    pub name: String,
    /// The node it runs on.
    pub node_id: Option<NodeId>,
    /// Resources reserved on the node.
    pub allocated_resources: Resources,
    /// What the requester wants.
    pub desired_state: DesiredState,
    /// What the node observes.
    pub compute_state: ComputeState,
    /// Where the result went.
    pub published_result: Option<PublishedResult>,
    /// What the process produced.
    pub run_output: Option<RunOutput>,
    /// The execution this one replaces.
    pub previous_execution: Option<ExecutionId>,
    /// The execution that replaced this one.
    pub next_execution: Option<ExecutionId>,
    /// Evaluation to run after this execution ends.
    pub followup_eval_id: Option<EvaluationId>,
    /// Bumped by exactly one on every update; 1 after creation.
    pub revision: u64,
    /// Set by the store on create.
    pub create_time: Timestamp,
    /// Set by the store on every change.
    pub modify_time: Timestamp,
}

impl Execution {
    /// A new execution of `job` in state `Created`; the store sets revision and times.
    pub fn new(id: ExecutionId, job: &Job) -> Self {
        Execution {
            id,
            namespace: job.namespace.clone(),
            job_id: job.id.clone(),
            job: job.clone(),
            eval_id: None,
            name: String::new(),
            node_id: None,
            allocated_resources: Resources::default(),
            desired_state: DesiredState::default(),
            compute_state: ComputeState::new(ExecutionState::Created, ""),
            published_result: None,
            run_output: None,
            previous_execution: None,
            next_execution: None,
            followup_eval_id: None,
            revision: 0,
            create_time: Timestamp::ZERO,
            modify_time: Timestamp::ZERO,
        }
    }

    /// The current compute state.
    pub fn state(&self) -> ExecutionState {
        self.compute_state.state
    }

    /// Checks the fields that are not typed identifiers but become key parts.
    pub fn validate(&self) -> Result<(), ValidationError> {
        crate::validate_name("namespace", &self.namespace, crate::MAX_ID_LEN)?;
        if self.job.id != self.job_id {
            return Err(ValidationError::new(
                "job",
                self.job.id.as_str(),
                crate::InvalidReason::Other(format!("job snapshot id differs from job_id {}", self.job_id)),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_and_round_trip() {
        for (i, st) in ExecutionState::ALL.iter().enumerate() {
            assert_eq!(usize::from(st.code()), i);
            assert_eq!(ExecutionState::from_code(st.code()), Some(*st));
        }
        assert_eq!(ExecutionState::from_code(9), None);
        assert_eq!(ExecutionState::Cancelled.code(), 8);
    }

    #[test]
    fn terminal_and_live_sets() {
        let terminal: Vec<_> = ExecutionState::ALL.into_iter().filter(|s| s.is_terminal()).collect();
        assert_eq!(terminal, [ExecutionState::Completed, ExecutionState::Failed, ExecutionState::Cancelled]);
        let live: Vec<_> = ExecutionState::ALL.into_iter().filter(|s| s.is_live()).collect();
        assert_eq!(live, ExecutionState::LIVE);
        assert!(!ExecutionState::Created.is_live());
    }

    #[test]
    fn parses_both_spellings() {
        assert_eq!("Running".parse::<ExecutionState>(), Ok(ExecutionState::Running));
        assert_eq!("ExecutionStateBidAccepted".parse::<ExecutionState>(), Ok(ExecutionState::BidAccepted));
        assert_eq!("publishing".parse::<ExecutionState>(), Ok(ExecutionState::Publishing));
        assert!("Sleeping".parse::<ExecutionState>().is_err());
    }
}
