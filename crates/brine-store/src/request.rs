//! Request and page types of the store operations.

use brine_model::{
    ComputeState, DesiredState, EvaluationId, Event, ExecutionId, ExecutionState, HistoryLevel, Job, JobHistory, JobId,
    JobState, NodeId, PublishedResult, Resources, RunOutput, StateCode, Timestamp,
};

use crate::LabelSelector;

/// A condition an update must meet; all parts must hold. Empty parts always hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition<S> {
    /// The object must be in one of these states (if not empty).
    pub expected_states: Vec<S>,
    /// The object must not be in any of these states.
    pub unexpected_states: Vec<S>,
    /// The object must be at this revision (if set).
    pub expected_revision: Option<u64>,
}

impl<S> Default for Condition<S> {
    fn default() -> Self {
        Condition { expected_states: Vec::new(), unexpected_states: Vec::new(), expected_revision: None }
    }
}

impl<S: StateCode> Condition<S> {
    /// A condition that always holds.
    pub fn none() -> Self {
        Self::default()
    }
}

/// The fields an execution update sets; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecutionUpdate {
    /// New compute state.
    pub compute_state: Option<ComputeState>,
    /// New desired state.
    pub desired_state: Option<DesiredState>,
    /// New node.
    pub node_id: Option<NodeId>,
    /// New resources.
    pub allocated_resources: Option<Resources>,
    /// Where the result was published.
    pub published_result: Option<PublishedResult>,
    /// What the process produced.
    pub run_output: Option<RunOutput>,
    /// The execution that replaces this one.
    pub next_execution: Option<ExecutionId>,
    /// Evaluation to run after this one.
    pub followup_eval_id: Option<EvaluationId>,
}

/// A conditional update of one execution, with the history events to record with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateExecutionRequest {
    /// The execution to update.
    pub execution_id: ExecutionId,
    /// What to change.
    pub new_values: ExecutionUpdate,
    /// When the change is allowed.
    pub condition: Condition<ExecutionState>,
    /// History events written in the same commit.
    pub events: Vec<Event>,
}

impl UpdateExecutionRequest {
    /// An update that moves `id` to `state` with `message`, unconditionally.
    pub fn to_state(id: ExecutionId, state: ExecutionState, message: impl Into<String>) -> Self {
        UpdateExecutionRequest {
            execution_id: id,
            new_values: ExecutionUpdate {
                compute_state: Some(ComputeState::new(state, message)),
                ..ExecutionUpdate::default()
            },
            condition: Condition::default(),
            events: Vec::new(),
        }
    }

    /// Requires the execution to be in one of `states`.
    pub fn expect_states(mut self, states: impl IntoIterator<Item = ExecutionState>) -> Self {
        self.condition.expected_states = states.into_iter().collect();
        self
    }

    /// Requires the execution not to be in any of `states`.
    pub fn unexpected_states(mut self, states: impl IntoIterator<Item = ExecutionState>) -> Self {
        self.condition.unexpected_states = states.into_iter().collect();
        self
    }

    /// Requires the execution to be at `revision`.
    pub fn expect_revision(mut self, revision: u64) -> Self {
        self.condition.expected_revision = Some(revision);
        self
    }

    /// Records `events` with the change.
    pub fn with_events(mut self, events: impl IntoIterator<Item = Event>) -> Self {
        self.events = events.into_iter().collect();
        self
    }
}

/// A conditional change of a job's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateJobStateRequest {
    /// The job.
    pub job_id: JobId,
    /// Its new state.
    pub new_state: JobState,
    /// Why.
    pub message: String,
    /// When the change is allowed.
    pub condition: Condition<JobState>,
    /// History events written in the same commit (besides the state change itself).
    pub events: Vec<Event>,
}

impl UpdateJobStateRequest {
    /// An unconditional move of `job_id` to `state`.
    pub fn new(job_id: JobId, state: JobState, message: impl Into<String>) -> Self {
        UpdateJobStateRequest {
            job_id,
            new_state: state,
            message: message.into(),
            condition: Condition::default(),
            events: Vec::new(),
        }
    }

    /// Requires the job to be in one of `states`.
    pub fn expect_states(mut self, states: impl IntoIterator<Item = JobState>) -> Self {
        self.condition.expected_states = states.into_iter().collect();
        self
    }

    /// Requires the job not to be in any of `states`.
    pub fn unexpected_states(mut self, states: impl IntoIterator<Item = JobState>) -> Self {
        self.condition.unexpected_states = states.into_iter().collect();
        self
    }

    /// Requires the job to be at `revision`.
    pub fn expect_revision(mut self, revision: u64) -> Self {
        self.condition.expected_revision = Some(revision);
        self
    }
}

/// How a queued job ended (`finished` in `compute.jobs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// The job succeeded: status `complete`.
    Completed,
    /// The job failed: status `failed`.
    Failed {
        /// Why.
        message: String,
    },
}

/// Sort key of a job listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JobSort {
    /// By creation time, then id.
    #[default]
    CreateTime,
    /// By last modification time, then id.
    ModifyTime,
}

/// Direction of a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortOrder {
    /// Oldest first.
    #[default]
    Ascending,
    /// Newest first.
    Descending,
}

/// A job listing: filters, order, page size and the token of the previous page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobQuery {
    /// Only this namespace (`None`: every namespace).
    pub namespace: Option<String>,
    /// Only these states (empty: every state).
    pub states: Vec<JobState>,
    /// Only jobs whose labels match.
    pub selector: LabelSelector,
    /// Sort key.
    pub sort: JobSort,
    /// Direction.
    pub order: SortOrder,
    /// Page size, at least 1.
    pub limit: usize,
    /// Token from the previous page.
    pub token: Option<String>,
}

impl Default for JobQuery {
    fn default() -> Self {
        JobQuery {
            namespace: None,
            states: Vec::new(),
            selector: LabelSelector::default(),
            sort: JobSort::default(),
            order: SortOrder::default(),
            limit: 100,
            token: None,
        }
    }
}

/// One page of a job listing.
///
/// A listing examines a bounded number of index entries per page
/// ([`rules::MAX_EXAMINED`](crate::rules::MAX_EXAMINED)), so with a selective filter a
/// page can hold fewer jobs than the limit (even none) and still carry a token: read on
/// until the token is `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobPage {
    /// The jobs, in the requested order.
    pub jobs: Vec<Job>,
    /// Token for the next page; `None` when there is none.
    pub next_token: Option<String>,
}

/// Filters and paging of a job's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Only entries recorded at or after this time.
    pub since: Option<Timestamp>,
    /// Only entries of this execution.
    pub execution_id: Option<ExecutionId>,
    /// Only entries of this level.
    pub level: Option<HistoryLevel>,
    /// Only entries written at this job version.
    pub version: Option<u64>,
    /// Page size, at least 1.
    pub limit: usize,
    /// Token from the previous page.
    pub token: Option<String>,
}

impl Default for HistoryQuery {
    fn default() -> Self {
        HistoryQuery { since: None, execution_id: None, level: None, version: None, limit: 100, token: None }
    }
}

impl HistoryQuery {
    /// Whether `entry` passes the filters.
    pub fn matches(&self, entry: &JobHistory) -> bool {
        self.since.is_none_or(|t| entry.time >= t)
            && self.execution_id.as_ref().is_none_or(|e| entry.execution_id.as_ref() == Some(e))
            && self.level.is_none_or(|l| entry.level == l)
            && self.version.is_none_or(|v| entry.job_version == v)
    }
}

/// One page of a job's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    /// The entries, oldest first.
    pub entries: Vec<JobHistory>,
    /// Token to read on; `None` only when the job is terminal and everything was read.
    pub next_token: Option<String>,
}
