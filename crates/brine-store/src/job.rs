//! The requester node's job store, with the queue operations of the `compute.jobs` schema.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use brine_model::{
    Evaluation, EvaluationId, Event, Execution, ExecutionId, Job, JobHistory, JobId, JobType, NodeId, Timestamp,
};
use serde::{Deserialize, Serialize};

use crate::{
    CheckReport, EventLog, HistoryPage, HistoryQuery, JobOutcome, JobPage, JobQuery, Result, UpdateExecutionRequest,
    UpdateJobStateRequest,
};

/// Jobs of a requester node with their versions, history, evaluations and executions,
/// and named queues of jobs.
///
/// Every change commits atomically with its indexes, history entries and event-log
/// entry. Listings and lookups read through indexes; their cost grows with the result.
///
/// # Cancel safety
///
/// Every method is cancel-safe, as [`crate::ExecutionStore`]'s are. Operations that work
/// in several bounded writes ([`JobStore::expire`]) commit each write whole: dropped
/// midway, the jobs of the writes done are expired and the rest are not.
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Stores a new job at version 1, revision 1. Its id must be new (`AlreadyExists`),
    /// and never purged (`AlreadyPurged`, naming the archive), and its name new within
    /// its namespace.
    async fn create_job(&self, job: Job) -> Result<Job>;

    /// The job with `id`. A purged job gives `Archived` naming its archive.
    async fn get_job(&self, id: &JobId) -> Result<Job>;

    /// The job called `name` in `namespace`.
    async fn get_job_by_name(&self, namespace: &str, name: &str) -> Result<Job>;

    /// The job whose id is `prefix`, or else the only job whose id starts with it
    /// (`MultipleJobsFound` when there are several).
    async fn get_job_by_prefix(&self, prefix: &str) -> Result<Job>;

    /// Stores a new version of a job's spec. `job.revision` must be the stored revision;
    /// version and revision are bumped by one.
    async fn update_job(&self, job: Job) -> Result<Job>;

    /// Every stored version of the job, oldest first.
    async fn get_job_versions(&self, id: &JobId) -> Result<Vec<Job>>;

    /// One version of the job.
    async fn get_job_version(&self, id: &JobId, version: u64) -> Result<Job>;

    /// Applies a conditional state change, writing a job-level history entry.
    async fn update_job_state(&self, request: UpdateJobStateRequest) -> Result<Job>;

    /// Removes the job with its versions, history, evaluations and executions.
    async fn delete_job(&self, id: &JobId) -> Result<()>;

    /// Appends job-level history events.
    async fn add_job_event(&self, id: &JobId, events: Vec<Event>) -> Result<()>;

    /// A page of the job's history, oldest first, filtered.
    async fn get_job_history(&self, id: &JobId, query: &HistoryQuery) -> Result<HistoryPage>;

    /// A page of jobs matching the query, in its order.
    async fn list_jobs(&self, query: &JobQuery) -> Result<JobPage>;

    /// Every non-terminal job, of one type or of all types, in id order.
    async fn get_in_progress_jobs(&self, job_type: Option<JobType>) -> Result<Vec<Job>>;

    /// Stores a new evaluation of an existing job.
    async fn create_evaluation(&self, evaluation: Evaluation) -> Result<Evaluation>;

    /// The evaluation with `id`.
    async fn get_evaluation(&self, id: &EvaluationId) -> Result<Evaluation>;

    /// Replaces an evaluation's fields; its job, its namespace and its create time are
    /// kept, and its modify time moves.
    async fn update_evaluation(&self, evaluation: Evaluation) -> Result<Evaluation>;

    /// Removes an evaluation.
    async fn delete_evaluation(&self, id: &EvaluationId) -> Result<()>;

    /// Every evaluation of a job, in id order.
    async fn get_evaluations(&self, job_id: &JobId) -> Result<Vec<Evaluation>>;

    /// Stores a new execution of an existing job (requester side).
    async fn create_execution(&self, execution: Execution) -> Result<Execution>;

    /// The requester's copy of an execution.
    async fn get_execution(&self, id: &ExecutionId) -> Result<Execution>;

    /// Applies a conditional update, writing an execution-level history entry.
    async fn update_execution(&self, request: UpdateExecutionRequest) -> Result<Execution>;

    /// Every execution of a job, newest modify time first.
    async fn get_executions_for_job(&self, job_id: &JobId) -> Result<Vec<Execution>>;

    /// Every execution placed on a node, newest modify time first.
    async fn get_executions_for_node(&self, node_id: &NodeId) -> Result<Vec<Execution>>;

    /// Creates `job` in state `Queued` on `queue` (status `queued` in `compute.jobs`).
    async fn enqueue(&self, queue: &str, job: Job) -> Result<Job>;

    /// Moves the oldest queued job of `queue` to `Running` (`in-progress`), setting its
    /// grabbed time. Two concurrent callers never get the same job.
    async fn grab_next(&self, queue: &str) -> Result<Option<Job>>;

    /// Ends a grabbed job with its outcome and output files.
    async fn finish(&self, id: &JobId, outcome: JobOutcome, output_files: Vec<String>) -> Result<Job>;

    /// Records that the job was accessed now.
    async fn touch_job(&self, id: &JobId) -> Result<Job>;

    /// Moves every queue job (one made by [`JobStore::enqueue`]) that is waiting or
    /// running and was not accessed for `idle_for` to `Expired`, returning their ids
    /// (`rules::expirable`). A job outside any queue never expires.
    async fn expire(&self, idle_for: Duration) -> Result<Vec<JobId>>;

    /// Up to `limit` terminal jobs last modified at or before `before`, oldest modify
    /// time first, starting after `after` (a modify time and id from the previous call):
    /// what a purge may archive. Reads the modify-time index.
    async fn purgeable_jobs(
        &self,
        before: Timestamp,
        after: Option<(Timestamp, JobId)>,
        limit: usize,
    ) -> Result<Vec<Job>>;

    /// The job with everything that belongs to it, for an archive.
    async fn job_bundle(&self, id: &JobId) -> Result<JobBundle>;

    /// [`JobStore::job_bundle`] of each of `ids`, in order, `None` for a job that is
    /// not there (deleted since it was picked). A backend may read the page at once:
    /// RocksDB reads it from one snapshot, with batched lookups.
    async fn job_bundles(&self, ids: &[JobId]) -> Result<Vec<Option<JobBundle>>> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(match self.job_bundle(id).await {
                Ok(bundle) => Some(bundle),
                Err(e) if e.is_not_found() => None,
                Err(e) => return Err(e),
            });
        }
        Ok(out)
    }

    /// Deletes each job of `jobs` with everything that belongs to it (as
    /// [`JobStore::delete_job`]) and keeps a retained entry naming `archive`, all in one
    /// atomic write: from then on [`JobStore::get_job`] on such an id is
    /// `Archived { id, file: archive }`. Each purged job logs one `Delete` entry, the
    /// job's, whose event (`rules::purge_event`) names the archive; its evaluations and
    /// executions are in the archive, not logged one by one.
    ///
    /// Each job comes with the [`JobStamp`] of the bundle that was archived: a job whose
    /// stamp moved since (anything of it changed, see `rules::dependent_change`) is not
    /// deleted, so nothing is deleted that the archive does not hold. Ids that are gone
    /// already are skipped too. Returns how many jobs were purged.
    async fn purge_jobs(&self, jobs: &[(JobId, JobStamp)], archive: &str) -> Result<u64>;

    /// Stores jobs exactly as given, each with its versions, history (under its own
    /// sequence numbers), evaluations and executions, in one atomic write that logs
    /// nothing: how `brine import` restores a dump. Each bundle must pass
    /// `rules::loaded_bundle`; a job, name, evaluation or execution already stored, or
    /// a purged id, is refused (`AlreadyExists`, `AlreadyPurged`) and nothing is written.
    async fn load_jobs(&self, bundles: Vec<JobBundle>) -> Result<()>;

    /// Stores retained purge entries (job id, archive file) as given, in one atomic
    /// write: a job id stored or already retained is refused and nothing is written.
    async fn load_purged(&self, entries: Vec<(JobId, String)>) -> Result<()>;

    /// Up to `limit` retained purge entries (job id, archive file) in id order, after
    /// `after`: for exporting a store in bounded batches.
    async fn list_purged(&self, after: Option<&JobId>, limit: usize) -> Result<Vec<(JobId, String)>>;

    /// Makes every write acknowledged so far durable (a WAL sync on a `Buffered`
    /// RocksDB store); returns at once where acknowledged writes are durable already or
    /// nothing persists. Purge calls it before it forgets an archive's pending marker.
    async fn sync(&self) -> Result<()>;

    /// An id unique to this store, kept for its lifetime (a memory store's lives as
    /// long as the process): archive markers name it, so an interrupted purge is only
    /// ever finished against the store that started it.
    fn store_id(&self) -> String;

    /// The store's event log.
    fn event_log(&self) -> Arc<dyn EventLog>;

    /// Checks the store's consistency, changing nothing: each job's index entries
    /// against `rules::job_indexes`, every index entry against its job, what belongs to
    /// a job against the job, and the event log. Reads one consistent state (a live
    /// store may be checked); a disk backend reads on a blocking thread.
    async fn check(&self) -> Result<CheckReport>;

    /// Closes the store; idempotent. Later operations return `Closed`.
    async fn close(&self) -> Result<()>;
}

/// What identifies one state of a job and everything that belongs to it, for purge:
/// any write to the job or to its executions, evaluations or history moves it (see
/// `rules::purge_stamp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct JobStamp {
    /// The job's revision.
    pub revision: u64,
    /// Its modify time.
    pub modify_time: Timestamp,
    /// Its last access time.
    pub last_accessed_time: Timestamp,
}

/// A job with everything that belongs to it: one line of a purge archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobBundle {
    /// The job.
    pub job: Job,
    /// Every version, oldest first.
    pub versions: Vec<Job>,
    /// Every history entry, in write order.
    pub history: Vec<JobHistory>,
    /// Its evaluations, in id order.
    pub evaluations: Vec<Evaluation>,
    /// Its executions (the requester's copies), in id order.
    pub executions: Vec<Execution>,
}

impl JobBundle {
    /// The stamp of the job as bundled (what `purge_jobs` must still find).
    pub fn stamp(&self) -> JobStamp {
        crate::rules::purge_stamp(&self.job)
    }
}
