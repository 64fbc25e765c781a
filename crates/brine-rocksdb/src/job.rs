//! `RocksJobStore`: the requester node's job store on RocksDB.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use brine_store::keys::{prefix_end, KeyBuilder, KeyReader};
use brine_store::model::{
    Evaluation, EvaluationId, Event, Execution, ExecutionId, HistoryLevel, Job, JobHistory, JobId, JobState, JobType,
    LogObject, NodeId, Operation, Timestamp,
};
use brine_store::{
    rules, EventLog, HistoryPage, HistoryQuery, JobBundle, JobOutcome, JobPage, JobQuery, JobSort, JobStamp, JobStore,
    ObjectKind, Result, SortOrder, StoreError, UpdateExecutionRequest, UpdateJobStateRequest,
};

use rocksdb::{DBRawIteratorWithThreadMode, DB};
use serde::de::DeserializeOwned;

use crate::cf::{Cf, StoreKind};
use crate::codec::decode;
use crate::engine::{Engine, Snapshot, Txn};
use crate::execution::{by_job_key, by_job_prefix, exec_key, newest_first, read_indexed};
use crate::log::{corrupt_key, RocksEventLog};
use crate::{OpenError, OpenOptions};
use brine_store::config::StoreConfig;

fn job_key(id: &JobId) -> Vec<u8> {
    id.as_bytes().to_vec()
}

fn name_key(namespace: &str, name: &str) -> Vec<u8> {
    KeyBuilder::new().str(namespace).last_str(name).build()
}

fn version_key(id: &JobId, version: u64) -> Vec<u8> {
    KeyBuilder::new().str(id.as_str()).u64(version).build()
}

fn history_key(id: &JobId, seq: u64) -> Vec<u8> {
    KeyBuilder::new().str(id.as_str()).u64(seq).build()
}

fn time_key(time: Timestamp, id: &JobId) -> Vec<u8> {
    KeyBuilder::new().u64(time.as_nanos()).last_str(id.as_str()).build()
}

fn ns_time_key(ns: &str, time: Timestamp, id: &JobId) -> Vec<u8> {
    KeyBuilder::new().str(ns).u64(time.as_nanos()).last_str(id.as_str()).build()
}

fn state_prefix(state: JobState) -> Vec<u8> {
    vec![state.code()]
}

fn label_prefix(key: &str, value: &str) -> Vec<u8> {
    KeyBuilder::new().str(key).str(value).build()
}

/// `prefix time:u64 job_id`: the layout of every time-ordered job index.
fn prefixed_time_key(prefix: &[u8], time: Timestamp, id: &JobId) -> Vec<u8> {
    [prefix, &time_key(time, id)].concat()
}

pub(crate) fn node_key(node: &NodeId, id: &ExecutionId) -> Vec<u8> {
    node_key_parts(node.as_str(), id.as_bytes())
}

/// [`node_key`] from the raw parts an index entry holds.
fn node_key_parts(node: &str, id: &[u8]) -> Vec<u8> {
    let mut key = KeyBuilder::new().str(node).build();
    key.extend_from_slice(id);
    key
}

pub(crate) fn eval_by_job_key(job: &JobId, id: &EvaluationId) -> Vec<u8> {
    KeyBuilder::new().str(job.as_str()).last_str(id.as_str()).build()
}

fn expirable(job: &Job) -> bool {
    job.queue.is_some() && matches!(job.state(), JobState::Queued | JobState::Running)
}

/// The job id an index entry points at (for `check`).
pub(crate) fn indexed_job_id(cf: Cf, key: &[u8], value: &[u8]) -> Option<JobId> {
    let mut r = KeyReader::new(key);
    let id = match cf {
        Cf::IdxJobsByName => std::str::from_utf8(value).ok(),
        Cf::IdxJobsByCreate | Cf::IdxJobsByModify | Cf::IdxJobsIdle => r.u64().ok().and_then(|_| r.last_str().ok()),
        Cf::IdxJobsByNamespaceCreate | Cf::IdxJobsByNamespaceModify | Cf::IdxJobsQueued => {
            r.str().ok().and_then(|_| r.u64().ok()).and_then(|_| r.last_str().ok())
        }
        Cf::IdxJobsInProgress => r.u8().ok().and_then(|_| r.last_str().ok()),
        Cf::IdxJobsByStateCreate | Cf::IdxJobsByStateModify => {
            r.u8().ok().and_then(|_| r.u64().ok()).and_then(|_| r.last_str().ok())
        }
        Cf::IdxJobsByLabelCreate | Cf::IdxJobsByLabelModify => {
            r.str().ok().and_then(|_| r.str().ok()).and_then(|_| r.u64().ok()).and_then(|_| r.last_str().ok())
        }
        _ => None,
    }?;
    JobId::new(id).ok()
}

/// Every index entry of a job: family, key and value.
pub(crate) fn index_entries(job: &Job) -> Vec<(Cf, Vec<u8>, Vec<u8>)> {
    let id = &job.id;
    let ns = job.namespace.as_str();
    let mut out = vec![
        (Cf::IdxJobsByName, name_key(ns, &job.name), id.as_bytes().to_vec()),
        (Cf::IdxJobsByCreate, time_key(job.create_time, id), Vec::new()),
        (Cf::IdxJobsByModify, time_key(job.modify_time, id), Vec::new()),
        (Cf::IdxJobsByNamespaceCreate, ns_time_key(ns, job.create_time, id), Vec::new()),
        (Cf::IdxJobsByNamespaceModify, ns_time_key(ns, job.modify_time, id), Vec::new()),
        (Cf::IdxJobsByStateCreate, prefixed_time_key(&state_prefix(job.state()), job.create_time, id), Vec::new()),
        (Cf::IdxJobsByStateModify, prefixed_time_key(&state_prefix(job.state()), job.modify_time, id), Vec::new()),
    ];
    for (key, value) in &job.labels {
        let prefix = label_prefix(key, value);
        out.push((Cf::IdxJobsByLabelCreate, prefixed_time_key(&prefix, job.create_time, id), Vec::new()));
        out.push((Cf::IdxJobsByLabelModify, prefixed_time_key(&prefix, job.modify_time, id), Vec::new()));
    }
    if !job.state().is_terminal() {
        out.push((
            Cf::IdxJobsInProgress,
            KeyBuilder::new().u8(job.job_type.code()).last_str(id.as_str()).build(),
            Vec::new(),
        ));
    }
    if let (Some(q), JobState::Queued) = (&job.queue, job.state()) {
        out.push((Cf::IdxJobsQueued, ns_time_key(q, job.create_time, id), Vec::new()));
    }
    if expirable(job) {
        out.push((Cf::IdxJobsIdle, time_key(job.last_accessed_time, id), Vec::new()));
    }
    out
}

fn not_found(id: &JobId) -> StoreError {
    StoreError::not_found(ObjectKind::Job, id)
}

fn current(txn: &Txn, id: &JobId) -> Result<Job> {
    txn.get(Cf::Jobs, &job_key(id))?.ok_or_else(|| not_found(id))
}

fn history(
    txn: &mut Txn,
    job: &Job,
    level: HistoryLevel,
    execution: Option<&ExecutionId>,
    event: Event,
    now: Timestamp,
) -> Result<()> {
    let seq = txn.next_history_seq();
    let entry = JobHistory {
        seq,
        level,
        job_id: job.id.clone(),
        job_version: job.version,
        execution_id: execution.cloned(),
        event,
        time: now,
    };
    txn.put(Cf::JobHistory, history_key(&job.id, seq), &entry)
}

fn log_job(
    txn: &mut Txn,
    op: Operation,
    previous: Option<Job>,
    current: Option<Job>,
    events: Vec<Event>,
    now: Timestamp,
) -> Result<()> {
    let object = LogObject::Job { current: current.map(Box::new), previous: previous.map(Box::new), events };
    txn.append_log(op, object, now).map(|_| ())
}

fn log_exec(
    txn: &mut Txn,
    op: Operation,
    previous: Option<Execution>,
    current: Option<Execution>,
    events: Vec<Event>,
    now: Timestamp,
) -> Result<()> {
    let object = LogObject::Execution { current: current.map(Box::new), previous: previous.map(Box::new), events };
    txn.append_log(op, object, now).map(|_| ())
}

fn log_eval(
    txn: &mut Txn,
    op: Operation,
    previous: Option<Evaluation>,
    current: Option<Evaluation>,
    now: Timestamp,
) -> Result<()> {
    let object = LogObject::Evaluation { current: current.map(Box::new), previous: previous.map(Box::new) };
    txn.append_log(op, object, now).map(|_| ())
}

fn put_indexes(txn: &mut Txn, job: &Job) -> Result<()> {
    for (cf, key, value) in index_entries(job) {
        txn.put_raw(cf, key, value)?;
    }
    Ok(())
}

fn delete_indexes(txn: &mut Txn, job: &Job) -> Result<()> {
    for (cf, key, _) in index_entries(job) {
        txn.delete(cf, key)?;
    }
    Ok(())
}

fn create_job(txn: &mut Txn, job: Job, now: Timestamp) -> Result<Job> {
    let job = rules::new_job(job, now)?;
    if txn.exists(Cf::Jobs, &job_key(&job.id))? {
        return Err(StoreError::already_exists(ObjectKind::Job, &job.id));
    }
    if txn.exists(Cf::IdxJobsByName, &name_key(&job.namespace, &job.name))? {
        return Err(StoreError::already_exists(ObjectKind::JobName, format!("{}/{}", job.namespace, job.name)));
    }
    txn.put(Cf::Jobs, job_key(&job.id), &job)?;
    txn.put(Cf::JobVersions, version_key(&job.id, job.version), &job)?;
    put_indexes(txn, &job)?;
    let event = Event::new("JobSubmission", format!("job submitted in state {}", job.state()), now);
    history(txn, &job, HistoryLevel::Job, None, event.clone(), now)?;
    log_job(txn, Operation::Create, None, Some(job.clone()), vec![event], now)?;
    Ok(job)
}

/// Replaces the stored job with `next`, moving its indexes and logging the change.
fn replace_job(txn: &mut Txn, before: Job, next: Job, events: Vec<Event>, now: Timestamp) -> Result<Job> {
    delete_indexes(txn, &before)?;
    put_indexes(txn, &next)?;
    txn.put(Cf::Jobs, job_key(&next.id), &next)?;
    txn.put(Cf::JobVersions, version_key(&next.id, next.version), &next)?;
    for event in &events {
        history(txn, &next, HistoryLevel::Job, None, event.clone(), now)?;
    }
    log_job(txn, Operation::Update, Some(before), Some(next.clone()), events, now)?;
    Ok(next)
}

/// Moves a finished job's modify time after a write to what belongs to it
/// (`rules::dependent_change`): the record and its modify-time index entries, logged
/// as an update; no new version.
fn dependent_change(txn: &mut Txn, id: &JobId, now: Timestamp) -> Result<()> {
    let Some(before) = txn.get::<Job>(Cf::Jobs, &job_key(id))? else { return Ok(()) };
    let Some(next) = rules::dependent_change(&before, now) else { return Ok(()) };
    delete_indexes(txn, &before)?;
    put_indexes(txn, &next)?;
    txn.put(Cf::Jobs, job_key(id), &next)?;
    log_job(txn, Operation::Update, Some(before), Some(next), Vec::new(), now)
}

fn update_job_state(txn: &mut Txn, request: &UpdateJobStateRequest, now: Timestamp) -> Result<Job> {
    let before = current(txn, &request.job_id)?;
    let next = rules::update_job_state(&before, request, now)?;
    let mut events = vec![rules::job_state_event(before.state(), &next, now)];
    events.extend(request.events.iter().cloned());
    replace_job(txn, before, next, events, now)
}

/// The value of a requester's `idx_executions_by_job_id` entry: the execution's node
/// id, or [`NO_NODE`] when it has none. (Entries written before this was kept are empty:
/// readers then consult the record.)
fn node_marker(node: Option<&NodeId>) -> Vec<u8> {
    node.map_or_else(|| NO_NODE.to_vec(), |n| n.as_bytes().to_vec())
}

/// The by-job index value of an execution placed on no node.
const NO_NODE: &[u8] = &[0];

/// Deletes a job with its versions, history, evaluations and executions. A plain delete
/// logs each deleted object; a purge to `archive` logs one entry for the job, whose
/// event names the archive holding the rest.
fn delete_job(txn: &mut Txn, id: &JobId, now: Timestamp, purge: Option<&str>) -> Result<()> {
    let before = current(txn, id)?;
    delete_indexes(txn, &before)?;
    txn.delete(Cf::Jobs, job_key(id))?;
    let prefix = KeyBuilder::new().str(id.as_str()).build();
    txn.clear_prefix(Cf::JobVersions, &prefix)?;
    txn.clear_prefix(Cf::JobHistory, &prefix)?;
    for key in txn.keys_with_prefix(Cf::IdxEvaluationsByJob, &prefix)? {
        txn.delete(Cf::IdxEvaluationsByJob, key.clone())?;
        let eval_id = &key[prefix.len()..];
        if let Some(eval) = txn.get::<Evaluation>(Cf::Evaluations, eval_id)? {
            txn.delete(Cf::Evaluations, eval_id.to_vec())?;
            if purge.is_none() {
                log_eval(txn, Operation::Delete, Some(eval), None, now)?;
            }
        }
    }
    for (key, marker) in txn.entries_with_prefix(Cf::IdxExecutionsByJobId, &prefix)? {
        txn.delete(Cf::IdxExecutionsByJobId, key.clone())?;
        let exec_id = &key[prefix.len()..];
        // A purge logs nothing per execution, so when the index entry names the node
        // (see `node_marker`) the record need not be read and decoded.
        if purge.is_some() && !marker.is_empty() {
            if marker != NO_NODE {
                txn.delete(Cf::IdxExecutionsByNode, node_key_parts(&String::from_utf8_lossy(&marker), exec_id))?;
            }
            txn.delete(Cf::Executions, exec_id.to_vec())?;
            continue;
        }
        if let Some(exec) = txn.get::<Execution>(Cf::Executions, exec_id)? {
            if let Some(node) = &exec.node_id {
                txn.delete(Cf::IdxExecutionsByNode, node_key(node, &exec.id))?;
            }
            txn.delete(Cf::Executions, exec_id.to_vec())?;
            if purge.is_none() {
                log_exec(txn, Operation::Delete, Some(exec), None, Vec::new(), now)?;
            }
        }
    }
    let events = purge.map(|archive| vec![rules::purge_event(archive, now)]).unwrap_or_default();
    log_job(txn, Operation::Delete, Some(before), None, events, now)
}

/// One scan of a time-ordered job index: the entries `prefix time:u64 job_id` under
/// `prefix`, in `order`, after `after`, as of the snapshot its iterator reads.
struct IndexScan<'d> {
    it: DBRawIteratorWithThreadMode<'d, DB>,
    cf: Cf,
    prefix_len: usize,
    order: SortOrder,
    started: bool,
    done: bool,
}

impl IndexScan<'_> {
    fn entry(&self) -> Result<(Timestamp, JobId)> {
        let k = self.it.key().unwrap_or_default();
        let mut r = KeyReader::new(k.get(self.prefix_len..).unwrap_or_default());
        let time = r.u64().map_err(|e| corrupt_key(self.cf, k, &e.reason))?;
        let id = r.last_str().map_err(|e| corrupt_key(self.cf, k, &e.reason))?;
        let id = JobId::new(id).map_err(|e| corrupt_key(self.cf, k, &e.to_string()))?;
        Ok((Timestamp::from_nanos(time), id))
    }
}

impl Iterator for IndexScan<'_> {
    type Item = Result<(Timestamp, JobId)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if std::mem::replace(&mut self.started, true) {
            match self.order {
                SortOrder::Ascending => self.it.next(),
                SortOrder::Descending => self.it.prev(),
            }
        }
        if !self.it.valid() {
            self.done = true;
            return self.it.status().err().map(|e| Err(StoreError::backend("scan a job index", e)));
        }
        let entry = self.entry();
        self.done = entry.is_err();
        Some(entry)
    }
}

/// Starts an [`IndexScan`] of `cf` under `prefix` through `snapshot`.
fn index_scan<'d>(
    engine: &Engine,
    db: &'d DB,
    snapshot: &Snapshot<'_>,
    cf: Cf,
    prefix: &[u8],
    after: Option<&(Timestamp, JobId)>,
    order: SortOrder,
) -> Result<IndexScan<'d>> {
    let upper = if prefix.is_empty() { None } else { prefix_end(prefix) };
    let mut it = engine.iter_at(db, Some(snapshot), cf, prefix, upper)?;
    let start = after.map(|(t, id)| prefixed_time_key(prefix, *t, id));
    match (order, &start) {
        (SortOrder::Ascending, None) => it.seek_to_first(),
        (SortOrder::Ascending, Some(k)) => {
            it.seek(k);
            if it.key() == Some(k.as_slice()) {
                it.next();
            }
        }
        (SortOrder::Descending, None) => it.seek_to_last(),
        (SortOrder::Descending, Some(k)) => {
            it.seek_for_prev(k);
            if it.key() == Some(k.as_slice()) {
                it.prev();
            }
        }
    }
    Ok(IndexScan { it, cf, prefix_len: prefix.len(), order, started: false, done: false })
}

/// Visits the `(time, id)` entries of the time-ordered job indexes `scans` (a family and
/// a prefix each), merged into one `order`, starting after `after`, through one
/// snapshot, until `visit` returns false.
#[allow(clippy::too_many_arguments)]
fn ordered_ids(
    engine: &Engine,
    db: &DB,
    snapshot: &Snapshot<'_>,
    scans: &[(Cf, Vec<u8>)],
    after: Option<(Timestamp, JobId)>,
    order: SortOrder,
    mut visit: impl FnMut(Timestamp, JobId) -> Result<bool>,
) -> Result<()> {
    let scans = scans
        .iter()
        .map(|(cf, prefix)| index_scan(engine, db, snapshot, *cf, prefix, after.as_ref(), order))
        .collect::<Result<Vec<_>>>()?;
    for entry in rules::merge_ordered(scans, order) {
        let (time, id) = entry?;
        if !visit(time, id)? {
            break;
        }
    }
    Ok(())
}

/// The job store of a requester node, on RocksDB.
#[derive(Clone)]
pub struct RocksJobStore {
    engine: Arc<Engine>,
}

impl RocksJobStore {
    /// Opens (or creates) the job store at `path`.
    pub fn open(path: impl AsRef<Path>, options: &OpenOptions) -> std::result::Result<Self, OpenError> {
        Ok(RocksJobStore { engine: Engine::open(path.as_ref(), StoreKind::Requester, options)? })
    }

    /// Opens (or creates) the job store at `config.job_store_path`, recording `config.node_id`
    /// in a new store.
    pub fn open_from_config(config: &StoreConfig, options: &OpenOptions) -> std::result::Result<Self, OpenError> {
        let options = OpenOptions { node_id: Some(config.node_id.clone()), ..options.clone() };
        Self::open(&config.job_store_path, &options)
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.engine.path
    }

    /// Checks the store's consistency (see [`crate::check`]) on a blocking thread.
    pub async fn check(&self) -> Result<crate::check::CheckReport> {
        let engine = Arc::clone(&self.engine);
        tokio::task::spawn_blocking(move || crate::check::check(&engine))
            .await
            .map_err(|e| StoreError::backend("check", e))?
    }

    async fn write<R>(&self, f: impl FnOnce(&mut Txn, Timestamp) -> Result<R>) -> Result<R> {
        let mut txn = self.engine.begin().await?;
        let now = txn.now();
        let out = f(&mut txn, now)?;
        txn.commit().await?;
        Ok(out)
    }

    fn job(&self, id: &JobId) -> Result<Job> {
        self.engine.get_required(Cf::Jobs, &job_key(id), || not_found(id))
    }

    /// The values `owner` keeps under its prefix of `cf` (versions, history), decoded, in
    /// key order.
    fn owned<T: DeserializeOwned>(&self, cf: Cf, owner: &JobId) -> Result<Vec<T>> {
        let mut out = Vec::new();
        self.engine.scan_prefix(cf, &KeyBuilder::new().str(owner.as_str()).build(), |k, v| {
            out.push(decode(cf, k, v)?);
            Ok(true)
        })?;
        Ok(out)
    }

    /// The evaluations of `job`, read through the by-job index, in id order.
    fn evaluations_of(&self, job: &JobId) -> Result<Vec<Evaluation>> {
        let prefix = KeyBuilder::new().str(job.as_str()).build();
        let mut ids = Vec::new();
        self.engine.scan_prefix(Cf::IdxEvaluationsByJob, &prefix, |k, _| {
            ids.push(k[prefix.len()..].to_vec());
            Ok(true)
        })?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.extend(self.engine.get_value::<Evaluation>(Cf::Evaluations, &id)?);
        }
        Ok(out)
    }
}

#[async_trait]
impl JobStore for RocksJobStore {
    async fn create_job(&self, job: Job) -> Result<Job> {
        self.write(|txn, now| create_job(txn, job, now)).await
    }

    async fn get_job(&self, id: &JobId) -> Result<Job> {
        match self.engine.get_value::<Job>(Cf::Jobs, &job_key(id))? {
            Some(job) => Ok(job),
            None => match self.engine.get_value::<String>(Cf::PurgedJobs, id.as_bytes())? {
                Some(file) => Err(StoreError::Archived { id: id.to_string(), file }),
                None => Err(not_found(id)),
            },
        }
    }

    async fn get_job_by_name(&self, namespace: &str, name: &str) -> Result<Job> {
        rules::check_namespace(namespace)?;
        let missing = || StoreError::not_found(ObjectKind::JobName, format!("{namespace}/{name}"));
        let key = name_key(namespace, name);
        let db = self.engine.db()?;
        let raw = db
            .get_pinned_cf(self.engine.cf(&db, Cf::IdxJobsByName)?, &key)
            .map_err(|e| StoreError::backend("read the name index", e))?
            .ok_or_else(missing)?;
        let id = std::str::from_utf8(&raw)
            .ok()
            .and_then(|s| JobId::new(s).ok())
            .ok_or_else(|| corrupt_key(Cf::IdxJobsByName, &key, "value is not a job id"))?;
        self.job(&id)
    }

    async fn get_job_by_prefix(&self, prefix: &str) -> Result<Job> {
        let start = JobId::new(prefix)?;
        if let Some(job) = self.engine.get_value::<Job>(Cf::Jobs, start.as_bytes())? {
            return Ok(job);
        }
        let mut matches = Vec::new();
        self.engine.scan_prefix(Cf::Jobs, start.as_bytes(), |k, v| {
            matches.push(decode::<Job>(Cf::Jobs, k, v)?);
            Ok(matches.len() < 10)
        })?;
        match matches.len() {
            0 => Err(StoreError::not_found(ObjectKind::Job, prefix)),
            1 => Ok(matches.remove(0)),
            _ => Err(StoreError::MultipleJobsFound {
                prefix: prefix.to_owned(),
                ids: matches.into_iter().map(|j| j.id).collect(),
            }),
        }
    }

    async fn update_job(&self, job: Job) -> Result<Job> {
        self.write(|txn, now| {
            let before = current(txn, &job.id)?;
            let next = rules::new_job_version(&before, job, now)?;
            if next.name != before.name && txn.exists(Cf::IdxJobsByName, &name_key(&next.namespace, &next.name))? {
                return Err(StoreError::already_exists(
                    ObjectKind::JobName,
                    format!("{}/{}", next.namespace, next.name),
                ));
            }
            let event = Event::new("JobUpdate", format!("job spec updated to version {}", next.version), now);
            replace_job(txn, before, next, vec![event], now)
        })
        .await
    }

    async fn get_job_versions(&self, id: &JobId) -> Result<Vec<Job>> {
        self.job(id)?;
        self.owned(Cf::JobVersions, id)
    }

    async fn get_job_version(&self, id: &JobId, version: u64) -> Result<Job> {
        self.job(id)?;
        self.engine.get_required(Cf::JobVersions, &version_key(id, version), || {
            StoreError::not_found(ObjectKind::JobVersion, format!("{id}@{version}"))
        })
    }

    async fn update_job_state(&self, request: UpdateJobStateRequest) -> Result<Job> {
        self.write(|txn, now| update_job_state(txn, &request, now)).await
    }

    async fn delete_job(&self, id: &JobId) -> Result<()> {
        self.write(|txn, now| delete_job(txn, id, now, None)).await
    }

    async fn add_job_event(&self, id: &JobId, events: Vec<Event>) -> Result<()> {
        self.write(|txn, now| {
            let job = current(txn, id)?;
            for event in events {
                history(txn, &job, HistoryLevel::Job, None, event, now)?;
            }
            dependent_change(txn, id, now)
        })
        .await
    }

    async fn get_job_history(&self, id: &JobId, query: &HistoryQuery) -> Result<HistoryPage> {
        rules::check_limit(query.limit)?;
        let after = query.token.as_deref().map(rules::parse_history_token).transpose()?.unwrap_or(0);
        let job = self.job(id)?;
        let prefix = KeyBuilder::new().str(id.as_str()).build();
        let db = self.engine.db()?;
        let mut it = self.engine.iter(&db, Cf::JobHistory, &prefix, prefix_end(&prefix))?;
        it.seek(history_key(id, after.saturating_add(1)));
        let (mut entries, mut last_examined, mut more) = (Vec::new(), after, false);
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else { break };
            let entry: JobHistory = decode(Cf::JobHistory, k, v)?;
            if query.matches(&entry) {
                if entries.len() == query.limit {
                    more = true;
                    break;
                }
                last_examined = entry.seq;
                entries.push(entry);
            } else if entries.len() < query.limit {
                last_examined = entry.seq;
            }
            it.next();
        }
        it.status().map_err(|e| StoreError::backend("read job history", e))?;
        Ok(HistoryPage {
            entries,
            next_token: rules::history_next_token(more, job.state().is_terminal(), last_examined),
        })
    }

    async fn list_jobs(&self, query: &JobQuery) -> Result<JobPage> {
        rules::check_limit(query.limit)?;
        if let Some(ns) = &query.namespace {
            rules::check_namespace(ns)?;
        }
        let after = query.token.as_deref().map(rules::parse_job_token).transpose()?;
        let create = query.sort == JobSort::CreateTime;
        let scans: Vec<(Cf, Vec<u8>)> = match rules::job_drive(query) {
            rules::JobDrive::Label { key, values } => {
                let cf = if create { Cf::IdxJobsByLabelCreate } else { Cf::IdxJobsByLabelModify };
                values.into_iter().map(|v| (cf, label_prefix(key, v))).collect()
            }
            rules::JobDrive::States(states) => {
                let cf = if create { Cf::IdxJobsByStateCreate } else { Cf::IdxJobsByStateModify };
                states.into_iter().map(|s| (cf, state_prefix(s))).collect()
            }
            rules::JobDrive::Time => vec![match (&query.namespace, create) {
                (None, true) => (Cf::IdxJobsByCreate, Vec::new()),
                (None, false) => (Cf::IdxJobsByModify, Vec::new()),
                (Some(ns), true) => (Cf::IdxJobsByNamespaceCreate, KeyBuilder::new().str(ns).build()),
                (Some(ns), false) => (Cf::IdxJobsByNamespaceModify, KeyBuilder::new().str(ns).build()),
            }],
        };
        let mut page = rules::JobPager::new(query);
        let db = self.engine.db()?;
        let snapshot = db.snapshot();
        ordered_ids(&self.engine, &db, &snapshot, &scans, after, query.order, |time, id| {
            let job = self.engine.get_value_at::<Job>(&db, &snapshot, Cf::Jobs, id.as_bytes())?;
            Ok(page.offer(time, &id, job.as_ref()))
        })?;
        Ok(page.finish())
    }

    async fn get_in_progress_jobs(&self, job_type: Option<JobType>) -> Result<Vec<Job>> {
        let prefix = job_type.map(|t| vec![t.code()]).unwrap_or_default();
        let mut ids = Vec::new();
        self.engine.scan_prefix(Cf::IdxJobsInProgress, &prefix, |k, _| {
            ids.push(k.get(1..).ok_or_else(|| corrupt_key(Cf::IdxJobsInProgress, k, "too short"))?.to_vec());
            Ok(true)
        })?;
        let mut jobs = Vec::with_capacity(ids.len());
        for id in ids {
            jobs.extend(self.engine.get_value::<Job>(Cf::Jobs, &id)?);
        }
        jobs.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(jobs)
    }

    async fn create_evaluation(&self, evaluation: Evaluation) -> Result<Evaluation> {
        self.write(|txn, now| {
            let eval = rules::new_evaluation(evaluation, now)?;
            current(txn, &eval.job_id)?;
            if txn.exists(Cf::Evaluations, eval.id.as_bytes())? {
                return Err(StoreError::already_exists(ObjectKind::Evaluation, &eval.id));
            }
            txn.put(Cf::Evaluations, eval.id.as_bytes().to_vec(), &eval)?;
            txn.put_raw(Cf::IdxEvaluationsByJob, eval_by_job_key(&eval.job_id, &eval.id), Vec::new())?;
            log_eval(txn, Operation::Create, None, Some(eval.clone()), now)?;
            dependent_change(txn, &eval.job_id, now)?;
            Ok(eval)
        })
        .await
    }

    async fn get_evaluation(&self, id: &EvaluationId) -> Result<Evaluation> {
        self.engine.get_required(Cf::Evaluations, id.as_bytes(), || StoreError::not_found(ObjectKind::Evaluation, id))
    }

    async fn update_evaluation(&self, evaluation: Evaluation) -> Result<Evaluation> {
        evaluation.validate()?;
        self.write(|txn, now| {
            let before: Evaluation = txn
                .get(Cf::Evaluations, evaluation.id.as_bytes())?
                .ok_or_else(|| StoreError::not_found(ObjectKind::Evaluation, &evaluation.id))?;
            let next = Evaluation {
                job_id: before.job_id.clone(),
                namespace: before.namespace.clone(),
                create_time: before.create_time,
                modify_time: now,
                ..evaluation
            };
            txn.put(Cf::Evaluations, next.id.as_bytes().to_vec(), &next)?;
            log_eval(txn, Operation::Update, Some(before), Some(next.clone()), now)?;
            dependent_change(txn, &next.job_id, now)?;
            Ok(next)
        })
        .await
    }

    async fn delete_evaluation(&self, id: &EvaluationId) -> Result<()> {
        self.write(|txn, now| {
            let before: Evaluation = txn
                .get(Cf::Evaluations, id.as_bytes())?
                .ok_or_else(|| StoreError::not_found(ObjectKind::Evaluation, id))?;
            txn.delete(Cf::Evaluations, id.as_bytes().to_vec())?;
            txn.delete(Cf::IdxEvaluationsByJob, eval_by_job_key(&before.job_id, id))?;
            let job_id = before.job_id.clone();
            log_eval(txn, Operation::Delete, Some(before), None, now)?;
            dependent_change(txn, &job_id, now)
        })
        .await
    }

    async fn get_evaluations(&self, job_id: &JobId) -> Result<Vec<Evaluation>> {
        self.job(job_id)?;
        self.evaluations_of(job_id)
    }

    async fn create_execution(&self, execution: Execution) -> Result<Execution> {
        self.write(|txn, now| {
            let exec = rules::new_execution(execution, now)?;
            let job = current(txn, &exec.job_id)?;
            if txn.exists(Cf::Executions, &exec_key(&exec.id))? {
                return Err(StoreError::already_exists(ObjectKind::Execution, &exec.id));
            }
            txn.put(Cf::Executions, exec_key(&exec.id), &exec)?;
            txn.put_raw(
                Cf::IdxExecutionsByJobId,
                by_job_key(&exec.job_id, &exec.id),
                node_marker(exec.node_id.as_ref()),
            )?;
            if let Some(node) = &exec.node_id {
                txn.put_raw(Cf::IdxExecutionsByNode, node_key(node, &exec.id), Vec::new())?;
            }
            let event = Event::new("ExecutionCreated", format!("execution created in state {}", exec.state()), now);
            history(txn, &job, HistoryLevel::Execution, Some(&exec.id), event.clone(), now)?;
            log_exec(txn, Operation::Create, None, Some(exec.clone()), vec![event], now)?;
            dependent_change(txn, &exec.job_id, now)?;
            Ok(exec)
        })
        .await
    }

    async fn get_execution(&self, id: &ExecutionId) -> Result<Execution> {
        self.engine.get_required(Cf::Executions, &exec_key(id), || StoreError::not_found(ObjectKind::Execution, id))
    }

    async fn update_execution(&self, request: UpdateExecutionRequest) -> Result<Execution> {
        self.write(|txn, now| {
            let before: Execution = txn
                .get(Cf::Executions, &exec_key(&request.execution_id))?
                .ok_or_else(|| StoreError::not_found(ObjectKind::Execution, &request.execution_id))?;
            let next = rules::update_execution(&before, &request, now)?;
            let job = current(txn, &next.job_id)?;
            if before.node_id != next.node_id {
                if let Some(node) = &before.node_id {
                    txn.delete(Cf::IdxExecutionsByNode, node_key(node, &next.id))?;
                }
                if let Some(node) = &next.node_id {
                    txn.put_raw(Cf::IdxExecutionsByNode, node_key(node, &next.id), Vec::new())?;
                }
                let marker = node_marker(next.node_id.as_ref());
                txn.put_raw(Cf::IdxExecutionsByJobId, by_job_key(&next.job_id, &next.id), marker)?;
            }
            txn.put(Cf::Executions, exec_key(&next.id), &next)?;
            let mut events = Vec::new();
            if before.state() != next.state() {
                events.push(rules::execution_state_event(before.state(), &next, now));
            }
            events.extend(request.events.iter().cloned());
            for event in &events {
                history(txn, &job, HistoryLevel::Execution, Some(&next.id), event.clone(), now)?;
            }
            log_exec(txn, Operation::Update, Some(before), Some(next.clone()), events, now)?;
            dependent_change(txn, &next.job_id, now)?;
            Ok(next)
        })
        .await
    }

    async fn get_executions_for_job(&self, job_id: &JobId) -> Result<Vec<Execution>> {
        Ok(newest_first(read_indexed(&self.engine, Cf::IdxExecutionsByJobId, &by_job_prefix(job_id))?))
    }

    async fn get_executions_for_node(&self, node_id: &NodeId) -> Result<Vec<Execution>> {
        let prefix = KeyBuilder::new().str(node_id.as_str()).build();
        Ok(newest_first(read_indexed(&self.engine, Cf::IdxExecutionsByNode, &prefix)?))
    }

    async fn enqueue(&self, queue: &str, mut job: Job) -> Result<Job> {
        rules::check_queue(queue)?;
        job.queue = Some(queue.to_owned());
        job.state.state = JobState::Queued;
        self.write(|txn, now| create_job(txn, job, now)).await
    }

    async fn grab_next(&self, queue: &str) -> Result<Option<Job>> {
        rules::check_queue(queue)?;
        self.write(|txn, now| {
            let prefix = KeyBuilder::new().str(queue).build();
            let Some(first) = txn.first_key_with_prefix(Cf::IdxJobsQueued, &prefix)? else { return Ok(None) };
            let mut r = KeyReader::new(&first[prefix.len()..]);
            r.u64().map_err(|e| corrupt_key(Cf::IdxJobsQueued, &first, &e.reason))?;
            let id = r.last_str().map_err(|e| corrupt_key(Cf::IdxJobsQueued, &first, &e.reason))?;
            let id = JobId::new(id).map_err(|e| corrupt_key(Cf::IdxJobsQueued, &first, &e.to_string()))?;
            let request = UpdateJobStateRequest::new(id, JobState::Running, "grabbed from queue")
                .expect_states([JobState::Queued]);
            let before = current(txn, &request.job_id)?;
            let mut next = rules::update_job_state(&before, &request, now)?;
            next.grabbed_time = Some(now);
            next.last_accessed_time = now;
            let events = vec![rules::job_state_event(before.state(), &next, now)];
            replace_job(txn, before, next, events, now).map(Some)
        })
        .await
    }

    async fn finish(&self, id: &JobId, outcome: JobOutcome, output_files: Vec<String>) -> Result<Job> {
        let (state, message) = match outcome {
            JobOutcome::Completed => (JobState::Completed, "job completed".to_owned()),
            JobOutcome::Failed { message } => (JobState::Failed, message),
        };
        let request = UpdateJobStateRequest::new(id.clone(), state, message).expect_states([JobState::Running]);
        self.write(|txn, now| {
            let before = current(txn, id)?;
            let mut next = rules::update_job_state(&before, &request, now)?;
            next.output_files = output_files;
            next.last_accessed_time = now;
            let events = vec![rules::job_state_event(before.state(), &next, now)];
            replace_job(txn, before, next, events, now)
        })
        .await
    }

    async fn touch_job(&self, id: &JobId) -> Result<Job> {
        self.write(|txn, now| {
            let before = current(txn, id)?;
            let next = rules::touch_job(&before, now);
            if expirable(&before) {
                txn.delete(Cf::IdxJobsIdle, time_key(before.last_accessed_time, id))?;
                txn.put_raw(Cf::IdxJobsIdle, time_key(now, id), Vec::new())?;
            }
            txn.put(Cf::Jobs, job_key(id), &next)?;
            log_job(txn, Operation::Update, Some(before), Some(next.clone()), Vec::new(), now)?;
            Ok(next)
        })
        .await
    }

    async fn expire(&self, idle_for: Duration) -> Result<Vec<JobId>> {
        let (cutoff, message) = rules::expire_cutoff(idle_for, self.engine.now());
        let message = &message;
        rules::expire_in_batches(|| {
            self.write(move |txn, now| {
                let mut ids = Vec::new();
                self.engine.scan_prefix(Cf::IdxJobsIdle, &[], |k, _| {
                    let mut r = KeyReader::new(k);
                    let accessed = r.u64().map_err(|e| corrupt_key(Cf::IdxJobsIdle, k, &e.reason))?;
                    if accessed >= cutoff.as_nanos() || ids.len() == rules::EXPIRE_BATCH {
                        return Ok(false);
                    }
                    let id = r.last_str().map_err(|e| corrupt_key(Cf::IdxJobsIdle, k, &e.reason))?;
                    ids.push(JobId::new(id).map_err(|e| corrupt_key(Cf::IdxJobsIdle, k, &e.to_string()))?);
                    Ok(true)
                })?;
                for id in &ids {
                    let request = rules::expire_request(id, message);
                    update_job_state(txn, &request, now)?;
                }
                Ok(ids)
            })
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
        let db = self.engine.db()?;
        let snapshot = db.snapshot();
        let scans: Vec<(Cf, Vec<u8>)> =
            rules::purgeable_states().map(|s| (Cf::IdxJobsByStateModify, state_prefix(s))).collect();
        ordered_ids(&self.engine, &db, &snapshot, &scans, after, SortOrder::Ascending, |time, id| {
            candidates.offer(time, || self.engine.get_value_at::<Job>(&db, &snapshot, Cf::Jobs, &job_key(&id)))
        })?;
        Ok(candidates.finish())
    }

    async fn job_bundle(&self, id: &JobId) -> Result<JobBundle> {
        Ok(JobBundle {
            job: self.job(id)?,
            versions: self.owned(Cf::JobVersions, id)?,
            history: self.owned(Cf::JobHistory, id)?,
            evaluations: self.evaluations_of(id)?,
            executions: read_indexed(&self.engine, Cf::IdxExecutionsByJobId, &by_job_prefix(id))?,
        })
    }

    async fn purge_jobs(&self, jobs: &[(JobId, JobStamp)], archive: &str) -> Result<u64> {
        self.write(|txn, now| {
            rules::purge_each(
                txn,
                jobs,
                |txn, id| txn.get(Cf::Jobs, &job_key(id)),
                |txn, id| {
                    delete_job(txn, id, now, Some(archive))?;
                    txn.put(Cf::PurgedJobs, id.as_bytes().to_vec(), archive)
                },
            )
        })
        .await
    }

    async fn sync(&self) -> Result<()> {
        self.engine.sync().await
    }

    fn store_id(&self) -> String {
        self.engine.store_id.clone()
    }

    fn event_log(&self) -> Arc<dyn EventLog> {
        Arc::new(RocksEventLog(Arc::clone(&self.engine)))
    }

    async fn close(&self) -> Result<()> {
        self.engine.close().await
    }
}
