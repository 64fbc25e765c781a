//! `PgJobStore`: the requester's jobs in the seed's `compute.jobs` (with Brine's added
//! columns), their versions, history, labels, evaluations and executions, shared by
//! every requester process that opens the database.
//!
//! Every write runs the same `brine_store::job_write` function the other backends run,
//! over [`Staged`]: a [`JobStorage`] that answers reads from rows loaded inside the
//! database transaction and collects the writes. A read it has not loaded yet stops the
//! function; the runner loads the rows (locking them `FOR UPDATE`, or for `grab_next`
//! taking the next queued job with `SKIP LOCKED`) and runs the function again from the
//! start. The function is pure over the storage, so the last run decides; its writes
//! then go to the database, the event-log entries last, and the transaction commits.
//! The index entries `rules::job_indexes` names are the row's own columns and
//! PostgreSQL's indexes over them (the labels are rows of `compute.job_labels`), so
//! they move with the row.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use brine_store::job_write::{self, JobStorage, OwnedRecords, Removed};
use brine_store::model::{
    Evaluation, EvaluationId, Event, Execution, ExecutionId, Job, JobHistory, JobId, JobState, JobType, LogObject,
    NodeId, Operation, Timestamp,
};
use brine_store::rules::{self, JobIndex, JobScan};
use brine_store::{
    codec, CheckReport, EventLog, HistoryPage, HistoryQuery, JobBundle, JobOutcome, JobPage, JobQuery, JobSort,
    JobStamp, JobStore, ObjectKind, Result, SortOrder, StoreError, UpdateExecutionRequest, UpdateJobStateRequest,
};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::db::{i64_of, system_time, u64_of, Access, Db, Write};
use crate::error::unique_violation;
use crate::log::PgEventLog;

/// How many rows a listing or history page reads at a time.
const PAGE_ROWS: i64 = 256;

/// A read [`Staged`] could not answer yet.
#[derive(Debug, Clone)]
enum Need {
    Job(JobId),
    /// Several jobs at once (a purge's batch), in one statement.
    Jobs(Vec<JobId>),
    Name(String, String),
    Evaluation(EvaluationId),
    Execution(ExecutionId),
    FirstQueued(String),
    Idle(Timestamp, usize),
    Owned(JobId),
}

/// Rows loaded (and locked) inside the write's transaction.
#[derive(Default)]
struct Loaded {
    jobs: HashMap<JobId, Option<Job>>,
    /// The archive of each job loaded by `Need::Job`, if it was purged.
    purged: HashMap<JobId, Option<String>>,
    names: HashMap<(String, String), bool>,
    evaluations: HashMap<EvaluationId, Option<Evaluation>>,
    executions: HashMap<ExecutionId, Option<Execution>>,
    first_queued: HashMap<String, Option<JobId>>,
    idle: HashMap<(Timestamp, usize), Vec<JobId>>,
    owned: HashMap<JobId, (Vec<Evaluation>, Vec<Execution>)>,
}

/// One write to send to the database.
enum Change {
    PutJob {
        job: Job,
        before: Option<Job>,
    },
    PutVersion(Job),
    RemoveJob(JobId),
    MarkPurged(JobId, String),
    History(JobHistory),
    /// A history entry stored under its own sequence number (a load).
    LoadHistory(JobHistory),
    PutEvaluation {
        evaluation: Evaluation,
        new: bool,
    },
    DeleteEvaluation(EvaluationId),
    PutExecution {
        execution: Execution,
        new: bool,
    },
    Log(Operation, LogObject, Timestamp),
}

/// The [`JobStorage`] of one run of a write function: loaded rows, this run's own
/// writes over them, and the first read that found nothing loaded.
struct Staged<'a> {
    loaded: &'a Loaded,
    jobs: HashMap<JobId, Option<Job>>,
    names: HashMap<(String, String), bool>,
    evaluations: HashMap<EvaluationId, Option<Evaluation>>,
    executions: HashMap<ExecutionId, Option<Execution>>,
    changes: Vec<Change>,
    missing: RefCell<Option<Need>>,
    history: u64,
}

impl<'a> Staged<'a> {
    fn new(loaded: &'a Loaded) -> Self {
        Staged {
            loaded,
            jobs: HashMap::new(),
            names: HashMap::new(),
            evaluations: HashMap::new(),
            executions: HashMap::new(),
            changes: Vec::new(),
            missing: RefCell::new(None),
            history: 0,
        }
    }

    /// Stops the run: `need` must be loaded first.
    fn miss<T>(&self, need: Need) -> Result<T> {
        self.missing.borrow_mut().get_or_insert(need);
        Err(StoreError::Unsupported { what: "a read the PostgreSQL write has not loaded yet".into() })
    }
}

/// Looks a key up in this run's writes, then in what is loaded, else stops the run.
fn lookup<K, V>(
    s: &Staged<'_>,
    own: &HashMap<K, V>,
    loaded: &HashMap<K, V>,
    key: &K,
    need: impl FnOnce() -> Need,
) -> Result<V>
where
    K: std::hash::Hash + Eq,
    V: Clone,
{
    match own.get(key).or_else(|| loaded.get(key)) {
        Some(v) => Ok(v.clone()),
        None => s.miss(need()),
    }
}

impl JobStorage for Staged<'_> {
    fn job(&self, id: &JobId) -> Result<Option<Job>> {
        lookup(self, &self.jobs, &self.loaded.jobs, id, || Need::Job(id.clone()))
    }

    fn name_taken(&self, namespace: &str, name: &str) -> Result<bool> {
        let key = (namespace.to_owned(), name.to_owned());
        lookup(self, &self.names, &self.loaded.names, &key, || Need::Name(key.0.clone(), key.1.clone()))
    }

    fn purged(&self, id: &JobId) -> Result<Option<String>> {
        match self.loaded.purged.get(id) {
            Some(file) => Ok(file.clone()),
            None => self.miss(Need::Job(id.clone())),
        }
    }

    fn evaluation(&self, id: &EvaluationId) -> Result<Option<Evaluation>> {
        lookup(self, &self.evaluations, &self.loaded.evaluations, id, || Need::Evaluation(id.clone()))
    }

    fn execution(&self, id: &ExecutionId) -> Result<Option<Execution>> {
        lookup(self, &self.executions, &self.loaded.executions, id, || Need::Execution(id.clone()))
    }

    fn first_queued(&self, queue: &str) -> Result<Option<JobId>> {
        match self.loaded.first_queued.get(queue) {
            Some(id) => Ok(id.clone()),
            None => self.miss(Need::FirstQueued(queue.to_owned())),
        }
    }

    fn idle_before(&self, cutoff: Timestamp, limit: usize) -> Result<Vec<JobId>> {
        match self.loaded.idle.get(&(cutoff, limit)) {
            Some(ids) => Ok(ids.clone()),
            None => self.miss(Need::Idle(cutoff, limit)),
        }
    }

    fn put_job(&mut self, job: &Job) -> Result<()> {
        let before = self.job(&job.id)?;
        if let Some(b) = &before {
            self.names.insert((b.namespace.clone(), b.name.clone()), false);
        }
        self.names.insert((job.namespace.clone(), job.name.clone()), true);
        self.jobs.insert(job.id.clone(), Some(job.clone()));
        self.changes.push(Change::PutJob { job: job.clone(), before });
        Ok(())
    }

    fn put_job_version(&mut self, job: &Job) -> Result<()> {
        self.changes.push(Change::PutVersion(job.clone()));
        Ok(())
    }

    fn add_job_index(&mut self, _id: &JobId, _entry: &JobIndex<'_>) -> Result<()> {
        // The entry is the row's columns (or a label row), written with the row.
        Ok(())
    }

    fn remove_job_index(&mut self, _id: &JobId, _entry: &JobIndex<'_>) -> Result<()> {
        Ok(())
    }

    fn remove_job(&mut self, id: &JobId, owned: OwnedRecords) -> Result<Removed> {
        let before = self.job(id)?;
        let removed = match owned {
            OwnedRecords::Skip => Removed::default(),
            OwnedRecords::Return => match self.loaded.owned.get(id) {
                Some((evaluations, executions)) => {
                    Removed { evaluations: evaluations.clone(), executions: executions.clone() }
                }
                None => return self.miss(Need::Owned(id.clone())),
            },
        };
        if let Some(b) = before {
            self.names.insert((b.namespace, b.name), false);
        }
        self.jobs.insert(id.clone(), None);
        for e in &removed.evaluations {
            self.evaluations.insert(e.id.clone(), None);
        }
        for e in &removed.executions {
            self.executions.insert(e.id.clone(), None);
        }
        self.changes.push(Change::RemoveJob(id.clone()));
        Ok(removed)
    }

    fn mark_purged(&mut self, id: &JobId, archive: &str) -> Result<()> {
        self.changes.push(Change::MarkPurged(id.clone(), archive.to_owned()));
        Ok(())
    }

    fn next_history_seq(&mut self) -> Result<u64> {
        // The stored sequence number comes from the table's identity column at insert;
        // this one only orders the entries of this write.
        self.history += 1;
        Ok(self.history)
    }

    fn put_history(&mut self, entry: &JobHistory) -> Result<()> {
        self.changes.push(Change::History(entry.clone()));
        Ok(())
    }

    fn load_history(&mut self, entry: &JobHistory) -> Result<()> {
        self.changes.push(Change::LoadHistory(entry.clone()));
        Ok(())
    }

    fn put_evaluation(&mut self, evaluation: &Evaluation) -> Result<()> {
        let new = self.evaluation(&evaluation.id)?.is_none();
        self.evaluations.insert(evaluation.id.clone(), Some(evaluation.clone()));
        self.changes.push(Change::PutEvaluation { evaluation: evaluation.clone(), new });
        Ok(())
    }

    fn delete_evaluation(&mut self, evaluation: &Evaluation) -> Result<()> {
        self.evaluations.insert(evaluation.id.clone(), None);
        self.changes.push(Change::DeleteEvaluation(evaluation.id.clone()));
        Ok(())
    }

    fn put_execution(&mut self, before: Option<&Execution>, next: &Execution) -> Result<()> {
        self.executions.insert(next.id.clone(), Some(next.clone()));
        self.changes.push(Change::PutExecution { execution: next.clone(), new: before.is_none() });
        Ok(())
    }

    fn append_log(&mut self, operation: Operation, object: LogObject, now: Timestamp) -> Result<()> {
        self.changes.push(Change::Log(operation, object, now));
        Ok(())
    }
}

fn decode_job(row: &Row, id_column: usize, record_column: usize) -> Result<Job> {
    let id: &str = row.get(id_column);
    codec::decode("compute.jobs", id.as_bytes(), row.get(record_column))
}

fn decode_in<T: serde::de::DeserializeOwned>(
    table: &str,
    row: &Row,
    id_column: usize,
    record_column: usize,
) -> Result<T> {
    let id: &str = row.get(id_column);
    codec::decode(table, id.as_bytes(), row.get(record_column))
}

/// A history row (`seq, job, record`): the stored entry with its sequence number.
fn decode_history(row: &Row) -> Result<JobHistory> {
    let seq = u64_of(row.get(0));
    let mut entry: JobHistory = codec::decode("compute.job_history", &seq.to_be_bytes(), row.get(2))?;
    entry.seq = seq;
    Ok(entry)
}

/// Loads what `need` names into `loaded`, inside `w`.
async fn load(w: &mut Write, loaded: &mut Loaded, need: Need, now: Timestamp) -> Result<()> {
    match need {
        Need::Job(id) => {
            // The job row (locked) and its retained purge entry, in one round trip: one
            // row always, with NULLs for what is not there.
            let row = w
                .query_opt(
                    "WITH j AS (SELECT id, record FROM compute.jobs WHERE id = $1 FOR UPDATE) \
                     SELECT j.id, j.record, (SELECT archive FROM compute.purged_jobs WHERE id = $1) \
                     FROM (SELECT 1) one LEFT JOIN j ON true",
                    &[&id.as_str()],
                )
                .await?;
            let (job, purged) = match &row {
                Some(r) if r.get::<_, Option<&str>>(0).is_some() => (Some(decode_job(r, 0, 1)?), r.get(2)),
                Some(r) => (None, r.get(2)),
                None => (None, None),
            };
            loaded.purged.insert(id.clone(), purged);
            loaded.jobs.insert(id, job);
        }
        Need::Jobs(ids) => {
            let texts: Vec<&str> = ids.iter().map(JobId::as_str).collect();
            let rows = w
                .query("SELECT id, record FROM compute.jobs WHERE id = ANY($1) ORDER BY id FOR UPDATE", &[&texts])
                .await?;
            for id in ids {
                loaded.jobs.insert(id, None);
            }
            for row in &rows {
                let job = decode_job(row, 0, 1)?;
                loaded.jobs.insert(job.id.clone(), Some(job));
            }
        }
        Need::Name(namespace, name) => {
            let row = w
                .query_opt("SELECT 1 FROM compute.jobs WHERE namespace = $1 AND name = $2", &[&namespace, &name])
                .await?;
            loaded.names.insert((namespace, name), row.is_some());
        }
        Need::Evaluation(id) => {
            let row = w
                .query_opt("SELECT id, record FROM compute.evaluations WHERE id = $1 FOR UPDATE", &[&id.as_str()])
                .await?;
            let evaluation = row.map(|r| decode_in("compute.evaluations", &r, 0, 1)).transpose()?;
            loaded.evaluations.insert(id, evaluation);
        }
        Need::Execution(id) => {
            let row = w
                .query_opt("SELECT id, record FROM compute.job_executions WHERE id = $1 FOR UPDATE", &[&id.as_str()])
                .await?;
            let execution = row.map(|r| decode_in("compute.job_executions", &r, 0, 1)).transpose()?;
            loaded.executions.insert(id, execution);
        }
        Need::FirstQueued(queue) => {
            // A job its group locked for it (see `crate::group`): the write that follows
            // sets the row's status and grab time, as the statement below would.
            if let Some((id, record)) = w.take_locked_job(&queue) {
                let job: Job = codec::decode("compute.jobs", id.as_bytes(), &record)?;
                loaded.first_queued.insert(queue, Some(job.id.clone()));
                loaded.jobs.insert(job.id.clone(), Some(job));
                return Ok(());
            }
            // The next queued job, locked, skipping jobs another grabber holds; the
            // materialized CTE takes exactly one row (never `IN (SELECT … SKIP
            // LOCKED)`, which may update more rows than the limit).
            let row = w
                .query_opt(
                    "WITH next AS MATERIALIZED ( \
                         SELECT job_id FROM compute.jobs \
                         WHERE queue = $1 AND state = 1 AND queue <> '' \
                         ORDER BY created_ns, id LIMIT 1 FOR UPDATE SKIP LOCKED) \
                     UPDATE compute.jobs j SET status = 'in-progress', grabbed = $2 \
                     FROM next WHERE j.job_id = next.job_id \
                     RETURNING j.id, j.record",
                    &[&queue, &system_time(now)],
                )
                .await?;
            let job = row.map(|r| decode_job(&r, 0, 1)).transpose()?;
            let id = job.as_ref().map(|j| j.id.clone());
            if let Some(job) = job {
                loaded.jobs.insert(job.id.clone(), Some(job));
            }
            loaded.first_queued.insert(queue, id);
        }
        Need::Idle(cutoff, limit) => {
            let rows = w
                .query(
                    "SELECT id, record FROM compute.jobs \
                     WHERE state IN (1, 2) AND queue <> '' AND accessed_ns < $1 \
                     ORDER BY accessed_ns, id LIMIT $2 FOR UPDATE SKIP LOCKED",
                    &[&i64_of(cutoff.as_nanos()), &i64_of(limit as u64)],
                )
                .await?;
            let mut ids = Vec::new();
            for row in &rows {
                let job = decode_job(row, 0, 1)?;
                ids.push(job.id.clone());
                loaded.jobs.insert(job.id.clone(), Some(job));
            }
            loaded.idle.insert((cutoff, limit), ids);
        }
        Need::Owned(id) => {
            let rows = w
                .query(
                    "SELECT id, record FROM compute.evaluations WHERE job = $1 ORDER BY id FOR UPDATE",
                    &[&id.as_str()],
                )
                .await?;
            let evaluations =
                rows.iter().map(|r| decode_in("compute.evaluations", r, 0, 1)).collect::<Result<Vec<Evaluation>>>()?;
            let rows = w
                .query(
                    "SELECT id, record FROM compute.job_executions WHERE job = $1 ORDER BY id FOR UPDATE",
                    &[&id.as_str()],
                )
                .await?;
            let executions = rows
                .iter()
                .map(|r| decode_in("compute.job_executions", r, 0, 1))
                .collect::<Result<Vec<Execution>>>()?;
            loaded.owned.insert(id, (evaluations, executions));
        }
    }
    Ok(())
}

/// The `compute.jobs` status of a state: the seed's five statuses, with `Pending`
/// counted as `queued` (waiting) and `Stopped` as `failed` (ended unsuccessfully).
pub(crate) fn status(state: JobState) -> &'static str {
    match state.queue_status() {
        Some(status) => status.as_str(),
        None if state.is_terminal() => "failed",
        None => "queued",
    }
}

/// A statement's parameter, owned (statements are built first and sent together).
type Param = Box<dyn ToSql + Send + Sync>;

/// How a failed statement's unique violation reads to the caller.
#[derive(Clone, Copy)]
enum Taken {
    /// Nothing special: the driver's error.
    No,
    /// A new job: its name (`jobs_name_key`) or its id was taken.
    Job,
    Evaluation,
    Execution,
    /// A loaded history entry: its sequence number is stored already.
    History,
}

/// One statement of a write, with what its unique violation means.
struct Statement {
    sql: &'static str,
    params: Vec<Param>,
    taken: Taken,
    /// The id (or `namespace/name`) a unique violation names.
    names: (String, String),
}

impl Statement {
    fn new(sql: &'static str, params: Vec<Param>) -> Self {
        Statement { sql, params, taken: Taken::No, names: (String::new(), String::new()) }
    }

    fn taken(mut self, taken: Taken, id: String, name: String) -> Self {
        self.taken = taken;
        self.names = (id, name);
        self
    }

    /// `e` as the caller should see it.
    fn error(&self, e: StoreError) -> StoreError {
        let Some(constraint) = unique_violation(&e) else { return e };
        match self.taken {
            Taken::No => e,
            Taken::Job if constraint == "jobs_name_key" => {
                StoreError::already_exists(ObjectKind::JobName, &self.names.1)
            }
            Taken::Job => StoreError::already_exists(ObjectKind::Job, &self.names.0),
            Taken::Evaluation => StoreError::already_exists(ObjectKind::Evaluation, &self.names.0),
            Taken::Execution => StoreError::already_exists(ObjectKind::Execution, &self.names.0),
            Taken::History => brine_store::model::ValidationError::new(
                "seq",
                &self.names.0,
                brine_store::model::InvalidReason::Other("a history entry with this number is stored already".into()),
            )
            .into(),
        }
    }
}

fn text(s: &str) -> Param {
    Box::new(s.to_owned())
}

/// The statements of one change, in order, appended to `out`; a log entry is queued on
/// `w` instead.
fn statements(w: &mut Write, change: Change, out: &mut Vec<Statement>) {
    match change {
        Change::PutJob { job, before } => {
            // A new job is inserted, never upserted: a racing create of the same id or
            // name fails on the unique index instead of overwriting the other's job.
            let sql = if before.is_none() {
                "INSERT INTO compute.jobs (job_id, status, queue, config, input_files, created, last_accessed, \
                     grabbed, finished, output_files, id, namespace, name, state, job_type, created_ns, \
                     modified_ns, accessed_ns, revision, version, record) \
                 VALUES (decode(md5($1), 'hex'), $2, $3, $4, $5, $6, $7, $8, $9, $10, $1, $11, $12, $13, $14, \
                     $15, $16, $17, $18, $19, $20)"
            } else {
                "UPDATE compute.jobs SET status = $2, queue = $3, config = $4, input_files = $5, created = $6, \
                     last_accessed = $7, grabbed = $8, finished = $9, output_files = $10, namespace = $11, \
                     name = $12, state = $13, job_type = $14, created_ns = $15, modified_ns = $16, \
                     accessed_ns = $17, revision = $18, version = $19, record = $20 \
                 WHERE id = $1"
            };
            let id = job.id.as_str();
            let params: Vec<Param> = vec![
                text(id),
                Box::new(status(job.state())),
                text(job.queue.as_deref().unwrap_or("")),
                Box::new(job.config.clone()),
                Box::new(job.input_files.clone()),
                Box::new(system_time(job.create_time)),
                Box::new(system_time(job.last_accessed_time)),
                Box::new(job.grabbed_time.map(system_time)),
                Box::new(job.finished_time.map(system_time)),
                Box::new(job.output_files.clone()),
                text(&job.namespace),
                text(&job.name),
                Box::new(i16::from(job.state().code())),
                Box::new(i16::from(job.job_type.code())),
                Box::new(i64_of(job.create_time.as_nanos())),
                Box::new(i64_of(job.modify_time.as_nanos())),
                Box::new(i64_of(job.last_accessed_time.as_nanos())),
                Box::new(i64_of(job.revision)),
                Box::new(i64_of(job.version)),
                Box::new(codec::encode(&job)),
            ];
            let name = format!("{}/{}", job.namespace, job.name);
            out.push(Statement::new(sql, params).taken(Taken::Job, id.to_owned(), name));
            if before.as_ref().is_some_and(|b| !b.labels.is_empty()) {
                out.push(Statement::new("DELETE FROM compute.job_labels WHERE job = $1", vec![text(id)]));
            }
            if !job.labels.is_empty() {
                let keys: Vec<String> = job.labels.keys().cloned().collect();
                let values: Vec<String> = job.labels.values().cloned().collect();
                out.push(Statement::new(
                    "INSERT INTO compute.job_labels (job, key, value, created_ns, modified_ns) \
                     SELECT $1, k, v, $4, $5 FROM unnest($2::text[], $3::text[]) AS l(k, v)",
                    vec![
                        text(id),
                        Box::new(keys),
                        Box::new(values),
                        Box::new(i64_of(job.create_time.as_nanos())),
                        Box::new(i64_of(job.modify_time.as_nanos())),
                    ],
                ));
            }
        }
        Change::PutVersion(job) => out.push(Statement::new(
            "INSERT INTO compute.job_versions (job, version, record) VALUES ($1, $2, $3) \
             ON CONFLICT (job, version) DO UPDATE SET record = EXCLUDED.record",
            vec![text(job.id.as_str()), Box::new(i64_of(job.version)), Box::new(codec::encode(&job))],
        )),
        Change::RemoveJob(id) => {
            for sql in [
                "DELETE FROM compute.jobs WHERE id = $1",
                "DELETE FROM compute.job_labels WHERE job = $1",
                "DELETE FROM compute.job_versions WHERE job = $1",
                "DELETE FROM compute.job_history WHERE job = $1",
                "DELETE FROM compute.evaluations WHERE job = $1",
                "DELETE FROM compute.job_executions WHERE job = $1",
            ] {
                out.push(Statement::new(sql, vec![text(id.as_str())]));
            }
        }
        Change::MarkPurged(id, archive) => out.push(Statement::new(
            "INSERT INTO compute.purged_jobs (id, archive) VALUES ($1, $2) \
             ON CONFLICT (id) DO UPDATE SET archive = EXCLUDED.archive",
            vec![text(id.as_str()), Box::new(archive)],
        )),
        Change::History(entry) => out.push(Statement::new(
            "INSERT INTO compute.job_history (job, record) VALUES ($1, $2)",
            vec![text(entry.job_id.as_str()), Box::new(codec::encode(&entry))],
        )),
        Change::LoadHistory(entry) => out.push(
            Statement::new(
                "INSERT INTO compute.job_history (seq, job, record) OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3)",
                vec![Box::new(i64_of(entry.seq)), text(entry.job_id.as_str()), Box::new(codec::encode(&entry))],
            )
            .taken(Taken::History, entry.seq.to_string(), String::new()),
        ),
        Change::PutEvaluation { evaluation: e, new } => {
            let sql = if new {
                "INSERT INTO compute.evaluations (id, job, record) VALUES ($1, $2, $3)"
            } else {
                "UPDATE compute.evaluations SET job = $2, record = $3 WHERE id = $1"
            };
            let params = vec![text(e.id.as_str()), text(e.job_id.as_str()), Box::new(codec::encode(&e)) as Param];
            out.push(Statement::new(sql, params).taken(Taken::Evaluation, e.id.as_str().to_owned(), String::new()));
        }
        Change::DeleteEvaluation(id) => {
            out.push(Statement::new("DELETE FROM compute.evaluations WHERE id = $1", vec![text(id.as_str())]));
        }
        Change::PutExecution { execution: e, new } => {
            let sql = if new {
                "INSERT INTO compute.job_executions (id, job, node, record) VALUES ($1, $2, $3, $4)"
            } else {
                "UPDATE compute.job_executions SET job = $2, node = $3, record = $4 WHERE id = $1"
            };
            let node: Option<String> = e.node_id.as_ref().map(|n| n.as_str().to_owned());
            let params = vec![
                text(e.id.as_str()),
                text(e.job_id.as_str()),
                Box::new(node) as Param,
                Box::new(codec::encode(&e)),
            ];
            out.push(Statement::new(sql, params).taken(Taken::Execution, e.id.as_str().to_owned(), String::new()));
        }
        Change::Log(operation, object, now) => w.log(operation, object, now),
    }
}

/// Sends a write's changes to the database, all statements in one round trip, in order.
async fn apply(w: &mut Write, changes: Vec<Change>) -> Result<()> {
    let mut out = Vec::new();
    for change in changes {
        statements(w, change, &mut out);
    }
    let batch: Vec<(&str, Vec<&(dyn ToSql + Sync)>)> =
        out.iter().map(|s| (s.sql, s.params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect())).collect();
    let results = w.pipeline(&batch).await?;
    // The first failure is the one to report: the statements after it failed because
    // the transaction was aborted.
    for (statement, result) in out.iter().zip(results) {
        result.map_err(|e| statement.error(e))?;
    }
    Ok(())
}

/// Moves the history table's identity sequence up to at least `seq`, never down (other
/// requesters may hold numbers above the highest stored one).
const RAISE_HISTORY_SEQ: &str = "SELECT setval(pg_get_serial_sequence('compute.job_history', 'seq'), $1) \
     FROM pg_sequences WHERE format('%I.%I', schemaname, sequencename)::regclass \
         = pg_get_serial_sequence('compute.job_history', 'seq')::regclass \
     AND coalesce(last_value, 0) < $1";

/// `JobStore::load_jobs` in `w`: the checks of `rules::loaded_bundle`, a purged id
/// refused, then every row in one round trip (a taken id or name fails on its unique
/// index and names it), and the history sequence moved past the loaded entries.
async fn load_jobs(w: &mut Write, bundles: &[JobBundle]) -> Result<()> {
    for bundle in bundles {
        rules::loaded_bundle(bundle)?;
    }
    let ids: Vec<&str> = bundles.iter().map(|b| b.job.id.as_str()).collect();
    if let Some(row) = w
        .query_opt("SELECT id, archive FROM compute.purged_jobs WHERE id = ANY($1) ORDER BY id LIMIT 1", &[&ids])
        .await?
    {
        return Err(StoreError::AlreadyPurged { id: row.get(0), file: row.get(1) });
    }
    let mut changes = Vec::new();
    let mut top = 0;
    for bundle in bundles {
        changes.push(Change::PutJob { job: bundle.job.clone(), before: None });
        changes.extend(bundle.versions.iter().cloned().map(Change::PutVersion));
        for entry in &bundle.history {
            top = top.max(entry.seq);
            changes.push(Change::LoadHistory(entry.clone()));
        }
        let evaluations = bundle.evaluations.iter().cloned();
        changes.extend(evaluations.map(|evaluation| Change::PutEvaluation { evaluation, new: true }));
        let executions = bundle.executions.iter().cloned();
        changes.extend(executions.map(|execution| Change::PutExecution { execution, new: true }));
    }
    apply(w, changes).await?;
    if top > 0 {
        w.execute(RAISE_HISTORY_SEQ, &[&i64_of(top)]).await?;
    }
    Ok(())
}

/// Runs a `job_write` function over rows loaded (and locked) in `w`: loads `first`,
/// then runs the function, loading what it missed and running it again, until it ran
/// with everything it read; applies its changes when it succeeded.
async fn run_staged<R>(
    w: &mut Write,
    first: &[Need],
    f: &(impl Fn(&mut Staged<'_>, Timestamp) -> Result<R> + Sync),
    now: Timestamp,
) -> Result<R> {
    let mut loaded = Loaded::default();
    for need in first {
        load(w, &mut loaded, need.clone(), now).await?;
    }
    loop {
        let (out, missing, changes) = {
            let mut staged = Staged::new(&loaded);
            let out = f(&mut staged, now);
            (out, staged.missing.into_inner(), staged.changes)
        };
        if let Some(need) = missing {
            load(w, &mut loaded, need, now).await?;
            continue;
        }
        let out = out?;
        apply(w, changes).await?;
        return Ok(out);
    }
}

/// The requester's job store in a PostgreSQL database.
#[derive(Clone)]
pub struct PgJobStore {
    pub(crate) db: Arc<Db>,
}

impl PgJobStore {
    /// Runs a `job_write` function in the store's next commit group, running it again
    /// (from the start, in a fresh savepoint) when the server broke a deadlock.
    async fn write<R, F>(&self, f: F) -> Result<R>
    where
        F: Fn(&mut Staged<'_>, Timestamp) -> Result<R> + Send + Sync + 'static,
        R: Send + 'static,
    {
        self.write_loading(Vec::new(), f).await
    }

    /// As [`PgJobStore::write`], loading `first` before the first run (rows the
    /// function will read, fetched together rather than one miss at a time).
    async fn write_loading<R, F>(&self, first: Vec<Need>, f: F) -> Result<R>
    where
        F: Fn(&mut Staged<'_>, Timestamp) -> Result<R> + Send + Sync + 'static,
        R: Send + 'static,
    {
        self.staged_write(None, first, f).await
    }

    /// Runs `f` through the store's commit groups; `grabs`: the queue it grabs from,
    /// whose jobs its group locks for all its grabs at once ([`crate::group`]).
    async fn staged_write<R, F>(&self, grabs: Option<String>, first: Vec<Need>, f: F) -> Result<R>
    where
        F: Fn(&mut Staged<'_>, Timestamp) -> Result<R> + Send + Sync + 'static,
        R: Send + 'static,
    {
        let (first, f) = (Arc::new(first), Arc::new(f));
        self.db
            .write_as(grabs, move |w, now| {
                let (first, f) = (Arc::clone(&first), Arc::clone(&f));
                Box::pin(async move { run_staged(w, &first, &*f, now).await })
            })
            .await
    }

    async fn rows(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        let conn = self.db.read().await?;
        let statement = conn.prepare_cached(sql).await.map_err(|e| crate::db::statement_error(sql, e))?;
        conn.query(&statement, params).await.map_err(|e| crate::db::statement_error(sql, e))
    }

    /// The job, or the error a missing (or purged) job gives.
    async fn require(&self, read: &Write, id: &JobId) -> Result<Job> {
        match read.query_opt("SELECT id, record FROM compute.jobs WHERE id = $1", &[&id.as_str()]).await? {
            Some(row) => decode_job(&row, 0, 1),
            None => Err(StoreError::not_found(ObjectKind::Job, id)),
        }
    }
}

/// One listing range's statement: the rows of one index from a position, in order.
/// Parameters: `$1, $2` the (time, id) to start after, `$3` the limit, then the range's
/// own (`$4` namespace; `$4` state; `$4, $5` label key and value).
macro_rules! scan {
    (jobs, $filter:literal, $col:literal, $cmp:literal, $dir:literal) => {
        concat!(
            "SELECT j.",
            $col,
            ", j.id, j.record FROM compute.jobs j WHERE ",
            $filter,
            " AND (j.",
            $col,
            ", j.id) ",
            $cmp,
            " ($1, $2) ORDER BY j.",
            $col,
            " ",
            $dir,
            ", j.id ",
            $dir,
            " LIMIT $3"
        )
    };
    (labels, $col:literal, $cmp:literal, $dir:literal) => {
        concat!(
            "SELECT l.",
            $col,
            ", j.id, j.record FROM compute.job_labels l JOIN compute.jobs j ON j.id = l.job ",
            "WHERE l.key = $4 AND l.value = $5 AND (l.",
            $col,
            ", j.id) ",
            $cmp,
            " ($1, $2) ",
            "ORDER BY l.",
            $col,
            " ",
            $dir,
            ", j.id ",
            $dir,
            " LIMIT $3"
        )
    };
}

/// A listing range's own parameters.
enum ScanArgs<'q> {
    None,
    Namespace(&'q str),
    State(i16),
    Label(&'q str, &'q str),
}

/// The statement of one listing range (every statement is a literal; values are
/// parameters) and its own parameters.
fn scan_sql<'q>(scan: &JobScan<'q>, order: SortOrder) -> (&'static str, ScanArgs<'q>) {
    use JobSort::{CreateTime as C, ModifyTime as M};
    use SortOrder::{Ascending as Up, Descending as Down};
    match (scan, order) {
        (JobScan::All(C), Up) => (scan!(jobs, "TRUE", "created_ns", ">", "ASC"), ScanArgs::None),
        (JobScan::All(C), Down) => (scan!(jobs, "TRUE", "created_ns", "<", "DESC"), ScanArgs::None),
        (JobScan::All(M), Up) => (scan!(jobs, "TRUE", "modified_ns", ">", "ASC"), ScanArgs::None),
        (JobScan::All(M), Down) => (scan!(jobs, "TRUE", "modified_ns", "<", "DESC"), ScanArgs::None),
        (JobScan::Namespace(ns, sort), order) => (
            match (sort, order) {
                (C, Up) => scan!(jobs, "j.namespace = $4", "created_ns", ">", "ASC"),
                (C, Down) => scan!(jobs, "j.namespace = $4", "created_ns", "<", "DESC"),
                (M, Up) => scan!(jobs, "j.namespace = $4", "modified_ns", ">", "ASC"),
                (M, Down) => scan!(jobs, "j.namespace = $4", "modified_ns", "<", "DESC"),
            },
            ScanArgs::Namespace(ns),
        ),
        (JobScan::State(state, sort), order) => (
            match (sort, order) {
                (C, Up) => scan!(jobs, "j.state = $4", "created_ns", ">", "ASC"),
                (C, Down) => scan!(jobs, "j.state = $4", "created_ns", "<", "DESC"),
                (M, Up) => scan!(jobs, "j.state = $4", "modified_ns", ">", "ASC"),
                (M, Down) => scan!(jobs, "j.state = $4", "modified_ns", "<", "DESC"),
            },
            ScanArgs::State(i16::from(state.code())),
        ),
        (JobScan::Label { key, value, sort }, order) => (
            match (sort, order) {
                (C, Up) => scan!(labels, "created_ns", ">", "ASC"),
                (C, Down) => scan!(labels, "created_ns", "<", "DESC"),
                (M, Up) => scan!(labels, "modified_ns", ">", "ASC"),
                (M, Down) => scan!(labels, "modified_ns", "<", "DESC"),
            },
            ScanArgs::Label(key, value),
        ),
    }
}

#[async_trait]
impl JobStore for PgJobStore {
    async fn create_job(&self, job: Job) -> Result<Job> {
        self.write(move |s, now| job_write::create_job(s, job.clone(), now)).await
    }

    async fn get_job(&self, id: &JobId) -> Result<Job> {
        let read = self.db.snapshot().await?;
        let row = read.query_opt("SELECT id, record FROM compute.jobs WHERE id = $1", &[&id.as_str()]).await?;
        let out = match row {
            Some(row) => decode_job(&row, 0, 1),
            None => {
                let purged =
                    read.query_opt("SELECT archive FROM compute.purged_jobs WHERE id = $1", &[&id.as_str()]).await?;
                Err(rules::missing_job(id, purged.map(|r| r.get::<_, String>(0))))
            }
        };
        read.commit().await?;
        out
    }

    async fn get_job_by_name(&self, namespace: &str, name: &str) -> Result<Job> {
        rules::check_namespace(namespace)?;
        let rows = self
            .rows("SELECT id, record FROM compute.jobs WHERE namespace = $1 AND name = $2", &[&namespace, &name])
            .await?;
        match rows.first() {
            Some(row) => decode_job(row, 0, 1),
            None => Err(StoreError::not_found(ObjectKind::JobName, format!("{namespace}/{name}"))),
        }
    }

    async fn get_job_by_prefix(&self, prefix: &str) -> Result<Job> {
        let start = JobId::new(prefix)?;
        let read = self.db.snapshot().await?;
        if let Some(row) =
            read.query_opt("SELECT id, record FROM compute.jobs WHERE id = $1", &[&start.as_str()]).await?
        {
            read.commit().await?;
            return decode_job(&row, 0, 1);
        }
        let rows = read
            .query(
                "SELECT id, record FROM compute.jobs WHERE id >= $1 AND starts_with(id, $1) ORDER BY id LIMIT $2",
                &[&start.as_str(), &(rules::PREFIX_MATCHES as i64)],
            )
            .await?;
        read.commit().await?;
        let matches = rows.iter().map(|r| decode_job(r, 0, 1)).collect::<Result<Vec<_>>>()?;
        rules::job_by_prefix(prefix, matches)
    }

    async fn update_job(&self, job: Job) -> Result<Job> {
        self.write(move |s, now| job_write::update_job(s, job.clone(), now)).await
    }

    async fn get_job_versions(&self, id: &JobId) -> Result<Vec<Job>> {
        let read = self.db.snapshot().await?;
        self.require(&read, id).await?;
        let rows = read
            .query("SELECT job, record FROM compute.job_versions WHERE job = $1 ORDER BY version", &[&id.as_str()])
            .await?;
        read.commit().await?;
        rows.iter().map(|r| decode_in("compute.job_versions", r, 0, 1)).collect()
    }

    async fn get_job_version(&self, id: &JobId, version: u64) -> Result<Job> {
        let read = self.db.snapshot().await?;
        self.require(&read, id).await?;
        let row = read
            .query_opt(
                "SELECT job, record FROM compute.job_versions WHERE job = $1 AND version = $2",
                &[&id.as_str(), &i64_of(version)],
            )
            .await?;
        read.commit().await?;
        match row {
            Some(row) => decode_in("compute.job_versions", &row, 0, 1),
            None => Err(StoreError::not_found(ObjectKind::JobVersion, format!("{id}@{version}"))),
        }
    }

    async fn update_job_state(&self, request: UpdateJobStateRequest) -> Result<Job> {
        self.write(move |s, now| job_write::update_job_state(s, &request, now)).await
    }

    async fn delete_job(&self, id: &JobId) -> Result<()> {
        let id = id.clone();
        self.write(move |s, now| job_write::delete_job(s, &id, now)).await
    }

    async fn add_job_event(&self, id: &JobId, events: Vec<Event>) -> Result<()> {
        let id = id.clone();
        self.write(move |s, now| job_write::add_job_events(s, &id, events.clone(), now)).await
    }

    async fn get_job_history(&self, id: &JobId, query: &HistoryQuery) -> Result<HistoryPage> {
        let mut page = rules::HistoryPager::new(query)?;
        let read = self.db.snapshot().await?;
        let job = self.require(&read, id).await?;
        let mut after = page.after();
        'pages: loop {
            let rows = read
                .query(
                    "SELECT seq, job, record FROM compute.job_history WHERE job = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                    &[&id.as_str(), &i64_of(after), &PAGE_ROWS],
                )
                .await?;
            for row in &rows {
                let entry = decode_history(row)?;
                after = entry.seq;
                if !page.offer(entry) {
                    break 'pages;
                }
            }
            if (rows.len() as i64) < PAGE_ROWS {
                break;
            }
        }
        read.commit().await?;
        Ok(page.finish(job.state()))
    }

    async fn list_jobs(&self, query: &JobQuery) -> Result<JobPage> {
        let mut page = rules::JobPager::new(query)?;
        let read = self.db.snapshot().await?;
        let (start_time, start_id) = match page.after() {
            Some((t, id)) => (i64_of(t.as_nanos()), id.as_str().to_owned()),
            None => match query.order {
                SortOrder::Ascending => (i64::MIN, String::new()),
                SortOrder::Descending => (i64::MAX, "\u{10FFFF}".repeat(64)),
            },
        };
        // Every range is read from the same position, up to what one page examines;
        // `rules::merge_ordered` merges them as every backend does.
        let limit = i64_of(rules::MAX_EXAMINED as u64 + 1);
        let mut ranges = Vec::new();
        let mut jobs: HashMap<JobId, Job> = HashMap::new();
        for scan in page.scans() {
            let (sql, args) = scan_sql(&scan, query.order);
            let mut params: Vec<&(dyn ToSql + Sync)> = vec![&start_time, &start_id, &limit];
            let state;
            match &args {
                ScanArgs::None => {}
                ScanArgs::Namespace(ns) => params.push(ns),
                ScanArgs::State(code) => {
                    state = *code;
                    params.push(&state);
                }
                ScanArgs::Label(key, value) => params.extend([key as &(dyn ToSql + Sync), value]),
            }
            let mut range = Vec::new();
            for row in read.query(sql, &params).await? {
                let job = decode_job(&row, 1, 2)?;
                range.push(Ok::<_, StoreError>((Timestamp::from_nanos(u64_of(row.get(0))), job.id.clone())));
                jobs.insert(job.id.clone(), job);
            }
            ranges.push(range.into_iter());
        }
        read.commit().await?;
        for entry in rules::merge_ordered(ranges, query.order) {
            let (time, id) = entry?;
            if !page.offer(time, &id, jobs.get(&id)) {
                break;
            }
        }
        Ok(page.finish())
    }

    async fn get_in_progress_jobs(&self, job_type: Option<JobType>) -> Result<Vec<Job>> {
        let code = job_type.map(|t| i16::from(t.code()));
        let rows = self
            .rows(
                "SELECT id, record FROM compute.jobs WHERE state < 3 AND ($1::smallint IS NULL OR job_type = $1) ORDER BY id",
                &[&code],
            )
            .await?;
        let jobs = rows.iter().map(|r| decode_job(r, 0, 1)).collect::<Result<Vec<_>>>()?;
        Ok(rules::in_id_order(jobs))
    }

    async fn create_evaluation(&self, evaluation: Evaluation) -> Result<Evaluation> {
        self.write(move |s, now| job_write::create_evaluation(s, evaluation.clone(), now)).await
    }

    async fn get_evaluation(&self, id: &EvaluationId) -> Result<Evaluation> {
        let rows = self.rows("SELECT id, record FROM compute.evaluations WHERE id = $1", &[&id.as_str()]).await?;
        match rows.first() {
            Some(row) => decode_in("compute.evaluations", row, 0, 1),
            None => Err(StoreError::not_found(ObjectKind::Evaluation, id)),
        }
    }

    async fn update_evaluation(&self, evaluation: Evaluation) -> Result<Evaluation> {
        self.write(move |s, now| job_write::update_evaluation(s, evaluation.clone(), now)).await
    }

    async fn delete_evaluation(&self, id: &EvaluationId) -> Result<()> {
        let id = id.clone();
        self.write(move |s, now| job_write::delete_evaluation(s, &id, now)).await
    }

    async fn get_evaluations(&self, job_id: &JobId) -> Result<Vec<Evaluation>> {
        let read = self.db.snapshot().await?;
        self.require(&read, job_id).await?;
        let rows = read
            .query("SELECT id, record FROM compute.evaluations WHERE job = $1 ORDER BY id", &[&job_id.as_str()])
            .await?;
        read.commit().await?;
        rows.iter().map(|r| decode_in("compute.evaluations", r, 0, 1)).collect()
    }

    async fn create_execution(&self, execution: Execution) -> Result<Execution> {
        self.write(move |s, now| job_write::create_execution(s, execution.clone(), now)).await
    }

    async fn get_execution(&self, id: &ExecutionId) -> Result<Execution> {
        let rows = self.rows("SELECT id, record FROM compute.job_executions WHERE id = $1", &[&id.as_str()]).await?;
        match rows.first() {
            Some(row) => decode_in("compute.job_executions", row, 0, 1),
            None => Err(StoreError::not_found(ObjectKind::Execution, id)),
        }
    }

    async fn update_execution(&self, request: UpdateExecutionRequest) -> Result<Execution> {
        self.write(move |s, now| job_write::update_execution(s, &request, now)).await
    }

    async fn get_executions_for_job(&self, job_id: &JobId) -> Result<Vec<Execution>> {
        let rows =
            self.rows("SELECT id, record FROM compute.job_executions WHERE job = $1", &[&job_id.as_str()]).await?;
        let all = rows.iter().map(|r| decode_in("compute.job_executions", r, 0, 1)).collect::<Result<Vec<_>>>()?;
        Ok(rules::newest_first(all))
    }

    async fn get_executions_for_node(&self, node_id: &NodeId) -> Result<Vec<Execution>> {
        let rows =
            self.rows("SELECT id, record FROM compute.job_executions WHERE node = $1", &[&node_id.as_str()]).await?;
        let all = rows.iter().map(|r| decode_in("compute.job_executions", r, 0, 1)).collect::<Result<Vec<_>>>()?;
        Ok(rules::newest_first(all))
    }

    async fn enqueue(&self, queue: &str, job: Job) -> Result<Job> {
        let queue = queue.to_owned();
        self.write(move |s, now| job_write::enqueue(s, &queue, job.clone(), now)).await
    }

    async fn grab_next(&self, queue: &str) -> Result<Option<Job>> {
        let (queue, hint) = (queue.to_owned(), queue.to_owned());
        self.staged_write(Some(hint), Vec::new(), move |s, now| job_write::grab_next(s, &queue, now)).await
    }

    async fn finish(&self, id: &JobId, outcome: JobOutcome, output_files: Vec<String>) -> Result<Job> {
        let id = id.clone();
        self.write(move |s, now| job_write::finish(s, &id, outcome.clone(), output_files.clone(), now)).await
    }

    async fn touch_job(&self, id: &JobId) -> Result<Job> {
        let id = id.clone();
        self.write(move |s, now| job_write::touch_job(s, &id, now)).await
    }

    async fn expire(&self, idle_for: Duration) -> Result<Vec<JobId>> {
        self.db.check_open()?;
        let (cutoff, message) = rules::expire_cutoff(idle_for, self.db.clock.now());
        rules::expire_in_batches(|| {
            let message = message.clone();
            self.write(move |s, now| job_write::expire_batch(s, cutoff, &message, now))
        })
        .await
    }

    async fn purgeable_jobs(
        &self,
        before: Timestamp,
        after: Option<(Timestamp, JobId)>,
        limit: usize,
    ) -> Result<Vec<Job>> {
        let mut candidates = rules::PurgeCandidates::new(before, limit)?;
        let (after_time, after_id) = match &after {
            Some((t, id)) => (i64_of(t.as_nanos()), id.as_str().to_owned()),
            None => (i64::MIN, String::new()),
        };
        let rows = self
            .rows(
                "SELECT modified_ns, id, record FROM compute.jobs \
                 WHERE state >= 3 AND modified_ns <= $1 AND (modified_ns, id) > ($2, $3) \
                 ORDER BY modified_ns, id LIMIT $4",
                &[&i64_of(before.as_nanos()), &after_time, &after_id, &i64_of(limit as u64)],
            )
            .await?;
        for row in &rows {
            let time = Timestamp::from_nanos(u64_of(row.get(0)));
            if !candidates.offer(time, || decode_job(row, 1, 2).map(Some))? {
                break;
            }
        }
        Ok(candidates.finish())
    }

    async fn job_bundle(&self, id: &JobId) -> Result<JobBundle> {
        let read = self.db.snapshot().await?;
        let job = self.require(&read, id).await?;
        let key = [&id.as_str() as &(dyn ToSql + Sync)];
        let versions =
            read.query("SELECT job, record FROM compute.job_versions WHERE job = $1 ORDER BY version", &key).await?;
        let history =
            read.query("SELECT seq, job, record FROM compute.job_history WHERE job = $1 ORDER BY seq", &key).await?;
        let evaluations =
            read.query("SELECT id, record FROM compute.evaluations WHERE job = $1 ORDER BY id", &key).await?;
        let executions =
            read.query("SELECT id, record FROM compute.job_executions WHERE job = $1 ORDER BY id", &key).await?;
        read.commit().await?;
        Ok(JobBundle {
            job,
            versions: versions.iter().map(|r| decode_in("compute.job_versions", r, 0, 1)).collect::<Result<_>>()?,
            history: history.iter().map(decode_history).collect::<Result<_>>()?,
            evaluations: evaluations
                .iter()
                .map(|r| decode_in("compute.evaluations", r, 0, 1))
                .collect::<Result<_>>()?,
            executions: executions
                .iter()
                .map(|r| decode_in("compute.job_executions", r, 0, 1))
                .collect::<Result<_>>()?,
        })
    }

    async fn purge_jobs(&self, jobs: &[(JobId, JobStamp)], archive: &str) -> Result<u64> {
        let ids = jobs.iter().map(|(id, _)| id.clone()).collect();
        let (jobs, archive) = (jobs.to_vec(), archive.to_owned());
        self.write_loading(vec![Need::Jobs(ids)], move |s, now| job_write::purge_jobs(s, &jobs, &archive, now)).await
    }

    async fn load_jobs(&self, bundles: Vec<JobBundle>) -> Result<()> {
        let mut w = self.db.begin(Access::Shared).await?;
        load_jobs(&mut w, &bundles).await?;
        w.commit().await.map(|_| ())
    }

    async fn load_purged(&self, entries: Vec<(JobId, String)>) -> Result<()> {
        rules::loaded_purge_entries(&entries)?;
        let w = self.db.begin(Access::Shared).await?;
        let ids: Vec<&str> = entries.iter().map(|(id, _)| id.as_str()).collect();
        let archives: Vec<&str> = entries.iter().map(|(_, a)| a.as_str()).collect();
        if let Some(row) =
            w.query_opt("SELECT id FROM compute.jobs WHERE id = ANY($1) ORDER BY id LIMIT 1", &[&ids]).await?
        {
            return Err(StoreError::already_exists(ObjectKind::Job, row.get::<_, &str>(0)));
        }
        let stored = w
            .query(
                "INSERT INTO compute.purged_jobs (id, archive) SELECT * FROM unnest($1::text[], $2::text[]) \
                 ON CONFLICT (id) DO NOTHING RETURNING id",
                &[&ids, &archives],
            )
            .await?;
        if stored.len() < entries.len() {
            // The batch repeats no id (the rule above), so the first id this statement
            // did not store was retained already.
            let stored: std::collections::HashSet<String> = stored.iter().map(|r| r.get(0)).collect();
            let (id, _) = entries.iter().find(|(id, _)| !stored.contains(id.as_str())).unwrap_or(&entries[0]);
            let file = w
                .query_opt("SELECT archive FROM compute.purged_jobs WHERE id = $1", &[&id.as_str()])
                .await?
                .map(|r| r.get(0))
                .unwrap_or_default();
            return Err(StoreError::AlreadyPurged { id: id.to_string(), file });
        }
        w.commit().await.map(|_| ())
    }

    async fn list_purged(&self, after: Option<&JobId>, limit: usize) -> Result<Vec<(JobId, String)>> {
        rules::check_limit(limit)?;
        let rows = self
            .rows(
                "SELECT id, archive FROM compute.purged_jobs WHERE id > $1 ORDER BY id LIMIT $2",
                &[&after.map_or("", JobId::as_str), &i64_of(limit as u64)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let id: &str = r.get(0);
                let id = JobId::new(id).map_err(|e| StoreError::Corrupt {
                    cf: "compute.purged_jobs".into(),
                    key: id.to_owned(),
                    reason: e.to_string(),
                })?;
                Ok((id, r.get(1)))
            })
            .collect()
    }

    async fn sync(&self) -> Result<()> {
        self.db.check_open()
    }

    fn store_id(&self) -> String {
        self.db.store_id.clone()
    }

    fn event_log(&self) -> Arc<dyn EventLog> {
        Arc::new(PgEventLog(Arc::clone(&self.db)))
    }

    async fn check(&self) -> Result<CheckReport> {
        let read = self.db.snapshot().await?;
        let mut report = CheckReport::default();
        check(&read, &mut report).await?;
        crate::log::check(&read, &mut report).await?;
        read.commit().await?;
        Ok(report)
    }

    async fn close(&self) -> Result<()> {
        self.db.close();
        Ok(())
    }
}

/// The rows of what belongs to a job whose job is missing, per table (at most 1 000 jobs
/// each).
macro_rules! orphans {
    ($table:literal) => {
        (
            $table,
            concat!(
                "SELECT t.job, count(*) FROM ",
                $table,
                " t WHERE NOT EXISTS ",
                "(SELECT 1 FROM compute.jobs j WHERE j.id = t.job) GROUP BY t.job ORDER BY t.job LIMIT 1000"
            ),
        )
    };
}

const ORPHANS: [(&str, &str); 5] = [
    orphans!("compute.job_labels"),
    orphans!("compute.job_versions"),
    orphans!("compute.job_history"),
    orphans!("compute.evaluations"),
    orphans!("compute.job_executions"),
];

/// The columns a job's row must hold, from its record.
#[derive(Debug, PartialEq)]
struct JobColumns {
    status: String,
    queue: String,
    namespace: String,
    name: String,
    state: i16,
    job_type: i16,
    created_ns: i64,
    modified_ns: i64,
    accessed_ns: i64,
    revision: i64,
    version: i64,
}

impl JobColumns {
    fn of(job: &Job) -> Self {
        JobColumns {
            status: status(job.state()).to_owned(),
            queue: job.queue.clone().unwrap_or_default(),
            namespace: job.namespace.clone(),
            name: job.name.clone(),
            state: i16::from(job.state().code()),
            job_type: i16::from(job.job_type.code()),
            created_ns: i64_of(job.create_time.as_nanos()),
            modified_ns: i64_of(job.modify_time.as_nanos()),
            accessed_ns: i64_of(job.last_accessed_time.as_nanos()),
            revision: i64_of(job.revision),
            version: i64_of(job.version),
        }
    }
}

/// Checks the job store in one snapshot: each row's columns and labels against its
/// record (they are its index entries), its `job_id` the hash of its id, and that what
/// belongs to a job (versions, history, evaluations, executions, labels) belongs to a
/// stored job.
async fn check(read: &Write, report: &mut CheckReport) -> Result<()> {
    let mut after = String::new();
    loop {
        let rows = read
            .query(
                "SELECT id, record, status, queue, namespace, name, state, job_type, created_ns, modified_ns, \
                     accessed_ns, revision, version, job_id = decode(md5(id), 'hex'), \
                     coalesce((SELECT array_agg(key || '=' || value ORDER BY key) FROM compute.job_labels l \
                               WHERE l.job = j.id AND l.created_ns = j.created_ns AND l.modified_ns = j.modified_ns), \
                              '{}'), \
                     (SELECT count(*) FROM compute.job_labels l WHERE l.job = j.id) \
                 FROM compute.jobs j WHERE id > $1 ORDER BY id LIMIT 500",
                &[&after],
            )
            .await?;
        let Some(last) = rows.last() else { break };
        after = last.get::<_, String>(0);
        for row in &rows {
            report.keys_checked += 1;
            let id: String = row.get(0);
            let job = match decode_job(row, 0, 1) {
                Ok(job) => job,
                Err(e) => {
                    report.problem("compute.jobs", id, e.to_string());
                    continue;
                }
            };
            let stored = JobColumns {
                status: row.get(2),
                queue: row.get(3),
                namespace: row.get(4),
                name: row.get(5),
                state: row.get(6),
                job_type: row.get(7),
                created_ns: row.get(8),
                modified_ns: row.get(9),
                accessed_ns: row.get(10),
                revision: row.get(11),
                version: row.get(12),
            };
            let expected = JobColumns::of(&job);
            if job.id.as_str() != id || stored != expected {
                report.problem(
                    "compute.jobs",
                    &id,
                    format!("columns {stored:?} disagree with the record {expected:?}"),
                );
            }
            if !row.get::<_, bool>(13) {
                report.problem("compute.jobs", &id, "job_id is not the MD5 hash of the id");
            }
            let labels: Vec<String> = row.get(14);
            let expected_labels: Vec<String> = job.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let label_rows = u64_of(row.get(15));
            report.keys_checked += label_rows;
            if labels != expected_labels || label_rows != expected_labels.len() as u64 {
                report.problem(
                    "compute.job_labels",
                    &id,
                    format!(
                        "label rows {labels:?} ({label_rows} in all) disagree with the record's {expected_labels:?}"
                    ),
                );
            }
        }
    }
    for (table, sql) in ORPHANS {
        for row in read.query(sql, &[]).await? {
            report.problem(table, row.get::<_, String>(0), format!("{} rows of a missing job", row.get::<_, i64>(1)));
        }
    }
    let reused = "SELECT j.id, p.archive FROM compute.jobs j JOIN compute.purged_jobs p ON p.id = j.id ORDER BY j.id";
    for row in read.query(reused, &[]).await? {
        let file: String = row.get(1);
        report.problem("compute.jobs", row.get::<_, String>(0), rules::purged_id_reused(&file));
    }
    Ok(())
}
