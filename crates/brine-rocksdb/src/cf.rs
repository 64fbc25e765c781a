//! Typed column families: every family the backend creates, with its name and store.

use std::fmt;

/// Which store a database holds: they have different families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// A compute node's execution store.
    Compute,
    /// A requester node's job store.
    Requester,
}

impl StoreKind {
    /// The value kept under `meta/store_kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Compute => "compute",
            StoreKind::Requester => "requester",
        }
    }

    /// The column families this kind of store creates, in display order.
    pub fn families(self) -> &'static [Cf] {
        match self {
            StoreKind::Compute => &[
                Cf::Executions,
                Cf::ExecutionEvents,
                Cf::IdxExecutionsByJobId,
                Cf::IdxExecutionsByState,
                Cf::Events,
                Cf::Checkpoints,
                Cf::Meta,
            ],
            StoreKind::Requester => &[
                Cf::Jobs,
                Cf::JobVersions,
                Cf::JobHistory,
                Cf::Evaluations,
                Cf::Executions,
                Cf::IdxJobsByName,
                Cf::IdxJobsByCreate,
                Cf::IdxJobsByModify,
                Cf::IdxJobsByNamespaceCreate,
                Cf::IdxJobsByNamespaceModify,
                Cf::IdxJobsInProgress,
                Cf::IdxJobsQueued,
                Cf::IdxJobsIdle,
                Cf::IdxJobsByStateCreate,
                Cf::IdxJobsByStateModify,
                Cf::IdxJobsByLabelCreate,
                Cf::IdxJobsByLabelModify,
                Cf::IdxEvaluationsByJob,
                Cf::IdxExecutionsByJobId,
                Cf::IdxExecutionsByNode,
                Cf::PurgedJobs,
                Cf::Events,
                Cf::Checkpoints,
                Cf::Meta,
            ],
        }
    }
}

impl fmt::Display for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A column family. `docs/FORMAT.md` documents the key and value of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cf {
    /// `execution_id` → `Execution`.
    Executions,
    /// `execution_id 0x00 seq:u64` → `Event`.
    ExecutionEvents,
    /// `job_id 0x00 execution_id` → empty.
    IdxExecutionsByJobId,
    /// `state:u8 execution_id` → empty.
    IdxExecutionsByState,
    /// `node_id 0x00 execution_id` → empty (requester).
    IdxExecutionsByNode,
    /// `seq:u64` → `LogEntry`.
    Events,
    /// `name` → `u64`.
    Checkpoints,
    /// `name` → value (schema version, kind, node id, sequences, counters).
    Meta,
    /// `job_id` → `Job`.
    Jobs,
    /// `job_id 0x00 version:u64` → `Job`.
    JobVersions,
    /// `job_id 0x00 seq:u64` → `JobHistory`.
    JobHistory,
    /// `evaluation_id` → `Evaluation`.
    Evaluations,
    /// `namespace 0x00 name` → `job_id`.
    IdxJobsByName,
    /// `create_time:u64 job_id` → empty.
    IdxJobsByCreate,
    /// `modify_time:u64 job_id` → empty.
    IdxJobsByModify,
    /// `namespace 0x00 create_time:u64 job_id` → empty.
    IdxJobsByNamespaceCreate,
    /// `namespace 0x00 modify_time:u64 job_id` → empty.
    IdxJobsByNamespaceModify,
    /// `job_type:u8 job_id` → empty, for non-terminal jobs.
    IdxJobsInProgress,
    /// `queue 0x00 create_time:u64 job_id` → empty, for queued jobs.
    IdxJobsQueued,
    /// `last_accessed:u64 job_id` → empty, for queued and in-progress queue jobs.
    IdxJobsIdle,
    /// `state:u8 create_time:u64 job_id` → empty (format version 2).
    IdxJobsByStateCreate,
    /// `state:u8 modify_time:u64 job_id` → empty (format version 2).
    IdxJobsByStateModify,
    /// `label_key 0x00 label_value 0x00 create_time:u64 job_id` → empty, one entry per
    /// label (format version 2).
    IdxJobsByLabelCreate,
    /// `label_key 0x00 label_value 0x00 modify_time:u64 job_id` → empty, one entry per
    /// label (format version 2).
    IdxJobsByLabelModify,
    /// `job_id 0x00 evaluation_id` → empty.
    IdxEvaluationsByJob,
    /// `job_id` → `String`: the archive file a purged job went to (the retained table).
    PurgedJobs,
}

impl Cf {
    /// Every family of either store.
    pub const ALL: [Cf; 26] = [
        Cf::Executions,
        Cf::ExecutionEvents,
        Cf::IdxExecutionsByJobId,
        Cf::IdxExecutionsByState,
        Cf::IdxExecutionsByNode,
        Cf::Events,
        Cf::Checkpoints,
        Cf::Meta,
        Cf::Jobs,
        Cf::JobVersions,
        Cf::JobHistory,
        Cf::Evaluations,
        Cf::IdxJobsByName,
        Cf::IdxJobsByCreate,
        Cf::IdxJobsByModify,
        Cf::IdxJobsByNamespaceCreate,
        Cf::IdxJobsByNamespaceModify,
        Cf::IdxJobsInProgress,
        Cf::IdxJobsQueued,
        Cf::IdxJobsIdle,
        Cf::IdxJobsByStateCreate,
        Cf::IdxJobsByStateModify,
        Cf::IdxJobsByLabelCreate,
        Cf::IdxJobsByLabelModify,
        Cf::IdxEvaluationsByJob,
        Cf::PurgedJobs,
    ];

    /// The family's name on disk.
    pub fn name(self) -> &'static str {
        match self {
            Cf::Executions => "executions",
            Cf::ExecutionEvents => "execution_events",
            Cf::IdxExecutionsByJobId => "idx_executions_by_job_id",
            Cf::IdxExecutionsByState => "idx_executions_by_state",
            Cf::IdxExecutionsByNode => "idx_executions_by_node",
            Cf::Events => "events",
            Cf::Checkpoints => "checkpoints",
            Cf::Meta => "meta",
            Cf::Jobs => "jobs",
            Cf::JobVersions => "job_versions",
            Cf::JobHistory => "job_history",
            Cf::Evaluations => "evaluations",
            Cf::IdxJobsByName => "idx_jobs_by_name",
            Cf::IdxJobsByCreate => "idx_jobs_by_create_time",
            Cf::IdxJobsByModify => "idx_jobs_by_modify_time",
            Cf::IdxJobsByNamespaceCreate => "idx_jobs_by_namespace_create_time",
            Cf::IdxJobsByNamespaceModify => "idx_jobs_by_namespace_modify_time",
            Cf::IdxJobsInProgress => "idx_jobs_in_progress",
            Cf::IdxJobsQueued => "idx_jobs_queued",
            Cf::IdxJobsIdle => "idx_jobs_idle",
            Cf::IdxJobsByStateCreate => "idx_jobs_by_state_create_time",
            Cf::IdxJobsByStateModify => "idx_jobs_by_state_modify_time",
            Cf::IdxJobsByLabelCreate => "idx_jobs_by_label_create_time",
            Cf::IdxJobsByLabelModify => "idx_jobs_by_label_modify_time",
            Cf::IdxEvaluationsByJob => "idx_evaluations_by_job",
            Cf::PurgedJobs => "purged_jobs",
        }
    }

    /// The family called `name`.
    pub fn from_name(name: &str) -> Option<Cf> {
        Cf::ALL.into_iter().find(|cf| cf.name() == name)
    }
}

impl fmt::Display for Cf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
