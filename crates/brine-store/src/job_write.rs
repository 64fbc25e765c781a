//! The job store's writes, written once for every backend that makes a write as one
//! atomic step under a lock (memory, RocksDB).
//!
//! Each function here is one `JobStore` write: it reads what it needs through
//! [`JobStorage`], asks [`crate::rules`] what changes, and hands the outcome back to the
//! storage: records, index entries (the ones [`crate::rules::job_indexes`] names),
//! history entries and event-log entries. A backend implements [`JobStorage`] over its
//! own write (a snapshot being built, a write batch with an overlay) and runs these
//! functions inside it; it decides nothing, so backends cannot drift apart. A backend
//! whose writes are not one lock-held step (PostgreSQL) asks the same rules in its own
//! statements.

use brine_model::{
    Evaluation, EvaluationId, Event, Execution, ExecutionId, HistoryLevel, Job, JobId, LogObject, Operation, Timestamp,
};

use crate::rules::{self, JobIndex};
use crate::{
    JobBundle, JobOutcome, JobStamp, ObjectKind, Result, StoreError, UpdateExecutionRequest, UpdateJobStateRequest,
};

/// What [`JobStorage::remove_job`] returns of the evaluations and executions it deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnedRecords {
    /// Return them: a plain delete logs each one.
    Return,
    /// Return nothing: a purge logs only the job (its archive holds the rest), so a
    /// backend need not read them.
    Skip,
}

/// The evaluations and executions a job's removal deleted (empty under
/// [`OwnedRecords::Skip`]).
#[derive(Debug, Default)]
pub struct Removed {
    /// The job's evaluations.
    pub evaluations: Vec<Evaluation>,
    /// The job's executions.
    pub executions: Vec<Execution>,
}

/// The reads and writes of a job store inside one write. Reads see the write's own
/// earlier changes; nothing is visible to anyone else until the backend commits the
/// whole write.
pub trait JobStorage {
    /// The job stored under `id`.
    fn job(&self, id: &JobId) -> Result<Option<Job>>;
    /// Whether a job has `name` in `namespace`.
    fn name_taken(&self, namespace: &str, name: &str) -> Result<bool>;
    /// The evaluation stored under `id`.
    fn evaluation(&self, id: &EvaluationId) -> Result<Option<Evaluation>>;
    /// The execution stored under `id`.
    fn execution(&self, id: &ExecutionId) -> Result<Option<Execution>>;
    /// The archive job `id` was purged to, if it was (the retained entry).
    fn purged(&self, id: &JobId) -> Result<Option<String>>;
    /// The first job of `queue`'s [`JobIndex::Queued`] entries.
    fn first_queued(&self, queue: &str) -> Result<Option<JobId>>;
    /// Up to `limit` jobs of the [`JobIndex::Idle`] entries last accessed before
    /// `cutoff`, oldest access first.
    fn idle_before(&self, cutoff: Timestamp, limit: usize) -> Result<Vec<JobId>>;

    /// Stores `job`'s record (its index entries move separately).
    fn put_job(&mut self, job: &Job) -> Result<()>;
    /// Stores `job` as its version `job.version`.
    fn put_job_version(&mut self, job: &Job) -> Result<()>;
    /// Adds one index entry of job `id`.
    fn add_job_index(&mut self, id: &JobId, entry: &JobIndex<'_>) -> Result<()>;
    /// Removes one index entry of job `id`.
    fn remove_job_index(&mut self, id: &JobId, entry: &JobIndex<'_>) -> Result<()>;
    /// Deletes job `id`'s record, versions and history, and its evaluations and
    /// executions with their index entries (its own index entries are removed
    /// separately).
    fn remove_job(&mut self, id: &JobId, owned: OwnedRecords) -> Result<Removed>;
    /// Records that job `id` was purged to `archive` (the retained entry `get_job`
    /// reports as `Archived`).
    fn mark_purged(&mut self, id: &JobId, archive: &str) -> Result<()>;
    /// The next number of the store's history sequence.
    fn next_history_seq(&mut self) -> Result<u64>;
    /// Stores a history entry of its job.
    fn put_history(&mut self, entry: &brine_model::JobHistory) -> Result<()>;
    /// Stores a history entry under its own sequence number (a load), moving the
    /// store's history sequence past it so later entries still number upwards.
    fn load_history(&mut self, entry: &brine_model::JobHistory) -> Result<()>;
    /// Stores an evaluation with its by-job index entry.
    fn put_evaluation(&mut self, evaluation: &Evaluation) -> Result<()>;
    /// Deletes an evaluation with its by-job index entry.
    fn delete_evaluation(&mut self, evaluation: &Evaluation) -> Result<()>;
    /// Stores an execution with its by-job index entry and, when it is placed on a node,
    /// its by-node entry (moved when `before` was on another node).
    fn put_execution(&mut self, before: Option<&Execution>, next: &Execution) -> Result<()>;
    /// Appends an entry to the store's event log.
    fn append_log(&mut self, operation: Operation, object: LogObject, now: Timestamp) -> Result<()>;
}

/// How a job change treats the job's versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Versions {
    /// Store the job as its current version too (a spec or state change).
    Store,
    /// Leave the versions (an access, a change to what belongs to the job).
    Keep,
}

fn require_job<S: JobStorage + ?Sized>(s: &S, id: &JobId) -> Result<Job> {
    s.job(id)?.ok_or_else(|| StoreError::not_found(ObjectKind::Job, id))
}

fn job_object(previous: Option<Job>, current: Option<Job>, events: Vec<Event>) -> LogObject {
    LogObject::Job { current: current.map(Box::new), previous: previous.map(Box::new), events }
}

fn execution_object(previous: Option<Execution>, current: Option<Execution>, events: Vec<Event>) -> LogObject {
    LogObject::Execution { current: current.map(Box::new), previous: previous.map(Box::new), events }
}

fn evaluation_object(previous: Option<Evaluation>, current: Option<Evaluation>) -> LogObject {
    LogObject::Evaluation { current: current.map(Box::new), previous: previous.map(Box::new) }
}

/// Moves the index entries of a job from what `before` has to what `after` has.
fn move_indexes<S: JobStorage + ?Sized>(
    s: &mut S,
    id: &JobId,
    before: Option<&Job>,
    after: Option<&Job>,
) -> Result<()> {
    let (removed, added) = rules::job_index_moves(before, after);
    for entry in &removed {
        s.remove_job_index(id, entry)?;
    }
    for entry in &added {
        s.add_job_index(id, entry)?;
    }
    Ok(())
}

fn history<S: JobStorage + ?Sized>(
    s: &mut S,
    job: &Job,
    level: HistoryLevel,
    execution: Option<&ExecutionId>,
    event: Event,
    now: Timestamp,
) -> Result<()> {
    let seq = s.next_history_seq()?;
    s.put_history(&rules::history_entry(seq, job, level, execution, event, now))
}

/// Replaces the stored `before` with `next`: record, index entries, the version when
/// asked, a job-level history entry per event, and one logged update carrying them.
fn replace_job<S: JobStorage + ?Sized>(
    s: &mut S,
    before: Job,
    next: Job,
    versions: Versions,
    events: Vec<Event>,
    now: Timestamp,
) -> Result<Job> {
    move_indexes(s, &next.id, Some(&before), Some(&next))?;
    s.put_job(&next)?;
    if versions == Versions::Store {
        s.put_job_version(&next)?;
    }
    for event in &events {
        history(s, &next, HistoryLevel::Job, None, event.clone(), now)?;
    }
    s.append_log(Operation::Update, job_object(Some(before), Some(next.clone()), events), now)?;
    Ok(next)
}

/// After a write to what belongs to job `id`, moves a finished job's modify time
/// ([`rules::dependent_change`]); nothing when the job is gone or unfinished.
fn dependent_change<S: JobStorage + ?Sized>(s: &mut S, id: &JobId, now: Timestamp) -> Result<()> {
    let Some(before) = s.job(id)? else { return Ok(()) };
    let Some(next) = rules::dependent_change(&before, now) else { return Ok(()) };
    replace_job(s, before, next, Versions::Keep, Vec::new(), now).map(|_| ())
}

fn check_name_free<S: JobStorage + ?Sized>(s: &S, job: &Job) -> Result<()> {
    if s.name_taken(&job.namespace, &job.name)? {
        return Err(StoreError::already_exists(ObjectKind::JobName, format!("{}/{}", job.namespace, job.name)));
    }
    Ok(())
}

/// `JobStore::create_job`.
pub fn create_job<S: JobStorage + ?Sized>(s: &mut S, job: Job, now: Timestamp) -> Result<Job> {
    let job = rules::new_job(job, now)?;
    if s.job(&job.id)?.is_some() {
        return Err(StoreError::already_exists(ObjectKind::Job, &job.id));
    }
    if let Some(file) = s.purged(&job.id)? {
        return Err(StoreError::AlreadyPurged { id: job.id.to_string(), file });
    }
    check_name_free(s, &job)?;
    move_indexes(s, &job.id, None, Some(&job))?;
    s.put_job(&job)?;
    s.put_job_version(&job)?;
    let event = rules::submission_event(&job, now);
    history(s, &job, HistoryLevel::Job, None, event.clone(), now)?;
    s.append_log(Operation::Create, job_object(None, Some(job.clone()), vec![event]), now)?;
    Ok(job)
}

/// `JobStore::update_job`.
pub fn update_job<S: JobStorage + ?Sized>(s: &mut S, job: Job, now: Timestamp) -> Result<Job> {
    let before = require_job(s, &job.id)?;
    let next = rules::new_job_version(&before, job, now)?;
    if next.name != before.name {
        check_name_free(s, &next)?;
    }
    let event = rules::spec_update_event(&next, now);
    replace_job(s, before, next, Versions::Store, vec![event], now)
}

/// `JobStore::update_job_state`.
pub fn update_job_state<S: JobStorage + ?Sized>(
    s: &mut S,
    request: &UpdateJobStateRequest,
    now: Timestamp,
) -> Result<Job> {
    let before = require_job(s, &request.job_id)?;
    let next = rules::update_job_state(&before, request, now)?;
    let mut events = vec![rules::job_state_event(before.state(), &next, now)];
    events.extend(request.events.iter().cloned());
    replace_job(s, before, next, Versions::Store, events, now)
}

/// Deletes job `id` with everything it owns. A plain delete (`purge: None`) logs each
/// deleted evaluation and execution, then the job; a purge to an archive logs only the
/// job, with the event naming the archive that holds the rest.
fn remove<S: JobStorage + ?Sized>(s: &mut S, id: &JobId, purge: Option<&str>, now: Timestamp) -> Result<()> {
    let before = require_job(s, id)?;
    move_indexes(s, id, Some(&before), None)?;
    let owned = if purge.is_some() { OwnedRecords::Skip } else { OwnedRecords::Return };
    let removed = s.remove_job(id, owned)?;
    for evaluation in removed.evaluations {
        s.append_log(Operation::Delete, evaluation_object(Some(evaluation), None), now)?;
    }
    for execution in removed.executions {
        s.append_log(Operation::Delete, execution_object(Some(execution), None, Vec::new()), now)?;
    }
    let events = purge.map(|archive| vec![rules::purge_event(archive, now)]).unwrap_or_default();
    s.append_log(Operation::Delete, job_object(Some(before), None, events), now)
}

/// `JobStore::delete_job`.
pub fn delete_job<S: JobStorage + ?Sized>(s: &mut S, id: &JobId, now: Timestamp) -> Result<()> {
    remove(s, id, None, now)
}

/// `JobStore::add_job_event`.
pub fn add_job_events<S: JobStorage + ?Sized>(s: &mut S, id: &JobId, events: Vec<Event>, now: Timestamp) -> Result<()> {
    let job = require_job(s, id)?;
    for event in events {
        history(s, &job, HistoryLevel::Job, None, event, now)?;
    }
    dependent_change(s, id, now)
}

/// `JobStore::create_evaluation`.
pub fn create_evaluation<S: JobStorage + ?Sized>(
    s: &mut S,
    evaluation: Evaluation,
    now: Timestamp,
) -> Result<Evaluation> {
    let evaluation = rules::new_evaluation(evaluation, now)?;
    require_job(s, &evaluation.job_id)?;
    if s.evaluation(&evaluation.id)?.is_some() {
        return Err(StoreError::already_exists(ObjectKind::Evaluation, &evaluation.id));
    }
    s.put_evaluation(&evaluation)?;
    s.append_log(Operation::Create, evaluation_object(None, Some(evaluation.clone())), now)?;
    dependent_change(s, &evaluation.job_id, now)?;
    Ok(evaluation)
}

fn require_evaluation<S: JobStorage + ?Sized>(s: &S, id: &EvaluationId) -> Result<Evaluation> {
    s.evaluation(id)?.ok_or_else(|| StoreError::not_found(ObjectKind::Evaluation, id))
}

/// `JobStore::update_evaluation`.
pub fn update_evaluation<S: JobStorage + ?Sized>(s: &mut S, update: Evaluation, now: Timestamp) -> Result<Evaluation> {
    let before = require_evaluation(s, &update.id)?;
    let next = rules::update_evaluation(&before, update, now)?;
    s.put_evaluation(&next)?;
    s.append_log(Operation::Update, evaluation_object(Some(before), Some(next.clone())), now)?;
    dependent_change(s, &next.job_id, now)?;
    Ok(next)
}

/// `JobStore::delete_evaluation`.
pub fn delete_evaluation<S: JobStorage + ?Sized>(s: &mut S, id: &EvaluationId, now: Timestamp) -> Result<()> {
    let before = require_evaluation(s, id)?;
    s.delete_evaluation(&before)?;
    let job_id = before.job_id.clone();
    s.append_log(Operation::Delete, evaluation_object(Some(before), None), now)?;
    dependent_change(s, &job_id, now)
}

/// `JobStore::create_execution`.
pub fn create_execution<S: JobStorage + ?Sized>(s: &mut S, execution: Execution, now: Timestamp) -> Result<Execution> {
    let execution = rules::new_execution(execution, now)?;
    let job = require_job(s, &execution.job_id)?;
    if s.execution(&execution.id)?.is_some() {
        return Err(StoreError::already_exists(ObjectKind::Execution, &execution.id));
    }
    s.put_execution(None, &execution)?;
    let event = rules::execution_created_event(&execution, now);
    history(s, &job, HistoryLevel::Execution, Some(&execution.id), event.clone(), now)?;
    s.append_log(Operation::Create, execution_object(None, Some(execution.clone()), vec![event]), now)?;
    dependent_change(s, &execution.job_id, now)?;
    Ok(execution)
}

/// `JobStore::update_execution`.
pub fn update_execution<S: JobStorage + ?Sized>(
    s: &mut S,
    request: &UpdateExecutionRequest,
    now: Timestamp,
) -> Result<Execution> {
    let before = s
        .execution(&request.execution_id)?
        .ok_or_else(|| StoreError::not_found(ObjectKind::Execution, &request.execution_id))?;
    let next = rules::update_execution(&before, request, now)?;
    let job = require_job(s, &next.job_id)?;
    s.put_execution(Some(&before), &next)?;
    let events = rules::execution_update_events(&before, &next, request, now);
    for event in &events {
        history(s, &job, HistoryLevel::Execution, Some(&next.id), event.clone(), now)?;
    }
    s.append_log(Operation::Update, execution_object(Some(before), Some(next.clone()), events), now)?;
    dependent_change(s, &next.job_id, now)?;
    Ok(next)
}

/// `JobStore::enqueue`.
pub fn enqueue<S: JobStorage + ?Sized>(s: &mut S, queue: &str, job: Job, now: Timestamp) -> Result<Job> {
    create_job(s, rules::enqueued(queue, job)?, now)
}

/// `JobStore::grab_next`.
pub fn grab_next<S: JobStorage + ?Sized>(s: &mut S, queue: &str, now: Timestamp) -> Result<Option<Job>> {
    rules::check_queue(queue)?;
    let Some(id) = s.first_queued(queue)? else { return Ok(None) };
    let before = require_job(s, &id)?;
    let next = rules::grab(&before, now)?;
    let events = vec![rules::job_state_event(before.state(), &next, now)];
    replace_job(s, before, next, Versions::Store, events, now).map(Some)
}

/// `JobStore::finish`.
pub fn finish<S: JobStorage + ?Sized>(
    s: &mut S,
    id: &JobId,
    outcome: JobOutcome,
    output_files: Vec<String>,
    now: Timestamp,
) -> Result<Job> {
    let request = rules::finish_request(id, outcome);
    let before = require_job(s, id)?;
    let next = rules::finish(&before, &request, output_files, now)?;
    let events = vec![rules::job_state_event(before.state(), &next, now)];
    replace_job(s, before, next, Versions::Store, events, now)
}

/// `JobStore::touch_job`: only the access time moves, logged as an update with no
/// history entry and no new version.
pub fn touch_job<S: JobStorage + ?Sized>(s: &mut S, id: &JobId, now: Timestamp) -> Result<Job> {
    let before = require_job(s, id)?;
    let next = rules::touch_job(&before, now);
    replace_job(s, before, next, Versions::Keep, Vec::new(), now)
}

/// One bounded write of `JobStore::expire`: up to [`rules::EXPIRE_BATCH`] jobs idle
/// since before `cutoff` move to `Expired` with `message`; returns them.
pub fn expire_batch<S: JobStorage + ?Sized>(
    s: &mut S,
    cutoff: Timestamp,
    message: &str,
    now: Timestamp,
) -> Result<Vec<JobId>> {
    let ids = s.idle_before(cutoff, rules::EXPIRE_BATCH)?;
    for id in &ids {
        update_job_state(s, &rules::expire_request(id, message), now)?;
    }
    Ok(ids)
}

/// `JobStore::purge_jobs`: deletes each job whose stamp is still the archived one,
/// recording the archive it went to; returns how many.
pub fn purge_jobs<S: JobStorage + ?Sized>(
    s: &mut S,
    jobs: &[(JobId, JobStamp)],
    archive: &str,
    now: Timestamp,
) -> Result<u64> {
    rules::purge_each(
        s,
        jobs,
        |s, id| s.job(id),
        |s, id| {
            remove(s, id, Some(archive), now)?;
            s.mark_purged(id, archive)
        },
    )
}

/// `JobStore::load_jobs`: stores each bundle as it is (`rules::loaded_bundle`), with
/// the job's index entries, logging nothing.
pub fn load_jobs<S: JobStorage + ?Sized>(s: &mut S, bundles: &[JobBundle]) -> Result<()> {
    for bundle in bundles {
        rules::loaded_bundle(bundle)?;
        let job = &bundle.job;
        if s.job(&job.id)?.is_some() {
            return Err(StoreError::already_exists(ObjectKind::Job, &job.id));
        }
        if let Some(file) = s.purged(&job.id)? {
            return Err(StoreError::AlreadyPurged { id: job.id.to_string(), file });
        }
        check_name_free(s, job)?;
        move_indexes(s, &job.id, None, Some(job))?;
        s.put_job(job)?;
        for version in &bundle.versions {
            s.put_job_version(version)?;
        }
        for entry in &bundle.history {
            s.load_history(entry)?;
        }
        for evaluation in &bundle.evaluations {
            if s.evaluation(&evaluation.id)?.is_some() {
                return Err(StoreError::already_exists(ObjectKind::Evaluation, &evaluation.id));
            }
            s.put_evaluation(evaluation)?;
        }
        for execution in &bundle.executions {
            if s.execution(&execution.id)?.is_some() {
                return Err(StoreError::already_exists(ObjectKind::Execution, &execution.id));
            }
            s.put_execution(None, execution)?;
        }
    }
    Ok(())
}

/// `JobStore::load_purged`: records each retained entry; an id stored or retained
/// already is refused.
pub fn load_purged<S: JobStorage + ?Sized>(s: &mut S, entries: &[(JobId, String)]) -> Result<()> {
    rules::loaded_purge_entries(entries)?;
    for (id, archive) in entries {
        if s.job(id)?.is_some() {
            return Err(StoreError::already_exists(ObjectKind::Job, id));
        }
        if let Some(file) = s.purged(id)? {
            return Err(StoreError::AlreadyPurged { id: id.to_string(), file });
        }
        s.mark_purged(id, archive)?;
    }
    Ok(())
}
