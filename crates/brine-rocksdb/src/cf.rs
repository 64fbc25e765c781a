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

/// A column family. What each holds is below; the layout of its keys is
/// `layout::key_layout`, and `docs/FORMAT.md` documents keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cf {
    /// Execution records (both stores; the requester keeps its copy).
    Executions,
    /// An execution's history events (compute).
    ExecutionEvents,
    /// Executions by job. Values: empty on a compute store; on a requester store the
    /// execution's node (`layout::node_marker`), empty in entries written before
    /// format version 2.
    IdxExecutionsByJobId,
    /// Executions by state (compute).
    IdxExecutionsByState,
    /// Executions by node (requester).
    IdxExecutionsByNode,
    /// The event log.
    Events,
    /// Watcher checkpoints.
    Checkpoints,
    /// Schema version, store kind, node and store ids, sequences, counters
    /// (`layout::meta`).
    Meta,
    /// Job records.
    Jobs,
    /// Every version of each job.
    JobVersions,
    /// Each job's history.
    JobHistory,
    /// Evaluation records.
    Evaluations,
    /// Jobs by namespace and name; the value is the job id.
    IdxJobsByName,
    /// Jobs by create time.
    IdxJobsByCreate,
    /// Jobs by modify time.
    IdxJobsByModify,
    /// Jobs by namespace, then create time.
    IdxJobsByNamespaceCreate,
    /// Jobs by namespace, then modify time.
    IdxJobsByNamespaceModify,
    /// Unfinished jobs by type.
    IdxJobsInProgress,
    /// Queued jobs by queue, then create time.
    IdxJobsQueued,
    /// Expirable queue jobs by last access.
    IdxJobsIdle,
    /// Jobs by state, then create time (format version 2).
    IdxJobsByStateCreate,
    /// Jobs by state, then modify time (format version 2).
    IdxJobsByStateModify,
    /// Jobs by label key and value, then create time; one entry per label (format
    /// version 2).
    IdxJobsByLabelCreate,
    /// Jobs by label key and value, then modify time; one entry per label (format
    /// version 2).
    IdxJobsByLabelModify,
    /// Evaluations by job.
    IdxEvaluationsByJob,
    /// Purged jobs: the archive file each went to (the retained table).
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

    /// The family's position in [`Cf::ALL`].
    pub fn index(self) -> usize {
        self as usize
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

#[cfg(test)]
mod tests {
    use super::Cf;

    #[test]
    fn a_family_index_is_its_place_in_all() {
        for (at, cf) in Cf::ALL.into_iter().enumerate() {
            assert_eq!(cf.index(), at, "{cf}");
            assert_eq!(Cf::from_name(cf.name()), Some(cf));
        }
    }
}
