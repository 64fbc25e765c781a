//! `RocksJobStore`: the requester node's job store on RocksDB.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use brine_store::job_write::{self, JobStorage, OwnedRecords, Removed};
use brine_store::keys::{prefix_end, KeyBuilder, KeyReader};
use brine_store::model::{
    Evaluation, EvaluationId, Event, Execution, ExecutionId, Job, JobHistory, JobId, JobState, JobType, LogObject,
    NodeId, Operation, Timestamp,
};
use brine_store::rules::JobIndex;
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

/// The family, key and value of one index entry of job `id`: where each [`JobIndex`]
/// lives in RocksDB.
pub(crate) fn index_entry(id: &JobId, entry: &JobIndex<'_>) -> (Cf, Vec<u8>, Vec<u8>) {
    let none = Vec::new;
    match *entry {
        JobIndex::Name { namespace, name } => (Cf::IdxJobsByName, name_key(namespace, name), id.as_bytes().to_vec()),
        JobIndex::Created(time) => (Cf::IdxJobsByCreate, time_key(time, id), none()),
        JobIndex::Modified(time) => (Cf::IdxJobsByModify, time_key(time, id), none()),
        JobIndex::NamespaceCreated { namespace, time } => {
            (Cf::IdxJobsByNamespaceCreate, ns_time_key(namespace, time, id), none())
        }
        JobIndex::NamespaceModified { namespace, time } => {
            (Cf::IdxJobsByNamespaceModify, ns_time_key(namespace, time, id), none())
        }
        JobIndex::StateCreated { state, time } => {
            (Cf::IdxJobsByStateCreate, prefixed_time_key(&state_prefix(state), time, id), none())
        }
        JobIndex::StateModified { state, time } => {
            (Cf::IdxJobsByStateModify, prefixed_time_key(&state_prefix(state), time, id), none())
        }
        JobIndex::LabelCreated { key, value, time } => {
            (Cf::IdxJobsByLabelCreate, prefixed_time_key(&label_prefix(key, value), time, id), none())
        }
        JobIndex::LabelModified { key, value, time } => {
            (Cf::IdxJobsByLabelModify, prefixed_time_key(&label_prefix(key, value), time, id), none())
        }
        JobIndex::InProgress(job_type) => {
            (Cf::IdxJobsInProgress, KeyBuilder::new().u8(job_type.code()).last_str(id.as_str()).build(), none())
        }
        JobIndex::Queued { queue, time } => (Cf::IdxJobsQueued, ns_time_key(queue, time, id), none()),
        JobIndex::Idle(time) => (Cf::IdxJobsIdle, time_key(time, id), none()),
    }
}

/// Every index entry of a job (`rules::job_indexes`): family, key and value.
pub(crate) fn index_entries(job: &Job) -> Vec<(Cf, Vec<u8>, Vec<u8>)> {
    rules::job_indexes(job).iter().map(|entry| index_entry(&job.id, entry)).collect()
}

/// The value of a requester's `idx_executions_by_job_id` entry: the execution's node
/// id, or [`NO_NODE`] when it has none. (Entries written before format version 2 are
/// empty: readers then consult the record.)
fn node_marker(node: Option<&NodeId>) -> Vec<u8> {
    node.map_or_else(|| NO_NODE.to_vec(), |n| n.as_bytes().to_vec())
}

/// The by-job index value of an execution placed on no node.
const NO_NODE: &[u8] = &[0];

/// The time and job id of `key`, an entry `prefix time:u64 job_id` of the time-ordered
/// index `cf` whose prefix is `prefix_len` bytes long.
fn time_entry_id(cf: Cf, key: &[u8], prefix_len: usize) -> Result<(u64, JobId)> {
    let mut r = KeyReader::new(key.get(prefix_len..).unwrap_or_default());
    let time = r.u64().map_err(|e| corrupt_key(cf, key, &e.reason))?;
    let id = r.last_str().map_err(|e| corrupt_key(cf, key, &e.reason))?;
    Ok((time, JobId::new(id).map_err(|e| corrupt_key(cf, key, &e.to_string()))?))
}

/// The job store's writes (`brine_store::job_write`) on a write batch with its overlay.
impl JobStorage for Txn {
    fn job(&self, id: &JobId) -> Result<Option<Job>> {
        self.get(Cf::Jobs, &job_key(id))
    }

    fn name_taken(&self, namespace: &str, name: &str) -> Result<bool> {
        self.exists(Cf::IdxJobsByName, &name_key(namespace, name))
    }

    fn evaluation(&self, id: &EvaluationId) -> Result<Option<Evaluation>> {
        self.get(Cf::Evaluations, id.as_bytes())
    }

    fn execution(&self, id: &ExecutionId) -> Result<Option<Execution>> {
        self.get(Cf::Executions, &exec_key(id))
    }

    fn first_queued(&self, queue: &str) -> Result<Option<JobId>> {
        let prefix = KeyBuilder::new().str(queue).build();
        let Some(first) = self.first_key_with_prefix(Cf::IdxJobsQueued, &prefix)? else { return Ok(None) };
        Ok(Some(time_entry_id(Cf::IdxJobsQueued, &first, prefix.len())?.1))
    }

    fn idle_before(&self, cutoff: Timestamp, limit: usize) -> Result<Vec<JobId>> {
        let mut ids = Vec::new();
        self.scan_keys(Cf::IdxJobsIdle, &[], |k| {
            let (accessed, id) = time_entry_id(Cf::IdxJobsIdle, k, 0)?;
            if accessed >= cutoff.as_nanos() || ids.len() == limit {
                return Ok(false);
            }
            ids.push(id);
            Ok(true)
        })?;
        Ok(ids)
    }

    fn put_job(&mut self, job: &Job) -> Result<()> {
        self.put(Cf::Jobs, job_key(&job.id), job)
    }

    fn put_job_version(&mut self, job: &Job) -> Result<()> {
        self.put(Cf::JobVersions, version_key(&job.id, job.version), job)
    }

    fn add_job_index(&mut self, id: &JobId, entry: &JobIndex<'_>) -> Result<()> {
        let (cf, key, value) = index_entry(id, entry);
        self.put_raw(cf, key, value)
    }

    fn remove_job_index(&mut self, id: &JobId, entry: &JobIndex<'_>) -> Result<()> {
        let (cf, key, _) = index_entry(id, entry);
        self.delete(cf, key)
    }

    fn remove_job(&mut self, id: &JobId, owned: OwnedRecords) -> Result<Removed> {
        self.delete(Cf::Jobs, job_key(id))?;
        let prefix = KeyBuilder::new().str(id.as_str()).build();
        self.clear_prefix(Cf::JobVersions, &prefix)?;
        self.clear_prefix(Cf::JobHistory, &prefix)?;
        let mut removed = Removed::default();
        for key in self.keys_with_prefix(Cf::IdxEvaluationsByJob, &prefix)? {
            self.delete(Cf::IdxEvaluationsByJob, key.clone())?;
            let eval_id = &key[prefix.len()..];
            if owned == OwnedRecords::Return {
                removed.evaluations.extend(self.get::<Evaluation>(Cf::Evaluations, eval_id)?);
            }
            self.delete(Cf::Evaluations, eval_id.to_vec())?;
        }
        for (key, marker) in self.entries_with_prefix(Cf::IdxExecutionsByJobId, &prefix)? {
            self.delete(Cf::IdxExecutionsByJobId, key.clone())?;
            let exec_id = &key[prefix.len()..];
            // When nothing is returned and the index entry names the node (see
            // `node_marker`), the record need not be read and decoded.
            if owned == OwnedRecords::Skip && !marker.is_empty() {
                if marker != NO_NODE {
                    self.delete(Cf::IdxExecutionsByNode, node_key_parts(&String::from_utf8_lossy(&marker), exec_id))?;
                }
                self.delete(Cf::Executions, exec_id.to_vec())?;
                continue;
            }
            if let Some(exec) = self.get::<Execution>(Cf::Executions, exec_id)? {
                if let Some(node) = &exec.node_id {
                    self.delete(Cf::IdxExecutionsByNode, node_key(node, &exec.id))?;
                }
                self.delete(Cf::Executions, exec_id.to_vec())?;
                if owned == OwnedRecords::Return {
                    removed.executions.push(exec);
                }
            }
        }
        Ok(removed)
    }

    fn mark_purged(&mut self, id: &JobId, archive: &str) -> Result<()> {
        self.put(Cf::PurgedJobs, id.as_bytes().to_vec(), archive)
    }

    fn next_history_seq(&mut self) -> Result<u64> {
        Ok(Txn::next_history_seq(self))
    }

    fn put_history(&mut self, entry: &JobHistory) -> Result<()> {
        self.put(Cf::JobHistory, history_key(&entry.job_id, entry.seq), entry)
    }

    fn put_evaluation(&mut self, evaluation: &Evaluation) -> Result<()> {
        self.put(Cf::Evaluations, evaluation.id.as_bytes().to_vec(), evaluation)?;
        self.put_raw(Cf::IdxEvaluationsByJob, eval_by_job_key(&evaluation.job_id, &evaluation.id), Vec::new())
    }

    fn delete_evaluation(&mut self, evaluation: &Evaluation) -> Result<()> {
        self.delete(Cf::Evaluations, evaluation.id.as_bytes().to_vec())?;
        self.delete(Cf::IdxEvaluationsByJob, eval_by_job_key(&evaluation.job_id, &evaluation.id))
    }

    fn put_execution(&mut self, before: Option<&Execution>, next: &Execution) -> Result<()> {
        let old_node = before.map(|b| b.node_id.as_ref());
        if old_node != Some(next.node_id.as_ref()) {
            if let Some(node) = old_node.flatten() {
                self.delete(Cf::IdxExecutionsByNode, node_key(node, &next.id))?;
            }
            if let Some(node) = &next.node_id {
                self.put_raw(Cf::IdxExecutionsByNode, node_key(node, &next.id), Vec::new())?;
            }
            let marker = node_marker(next.node_id.as_ref());
            self.put_raw(Cf::IdxExecutionsByJobId, by_job_key(&next.job_id, &next.id), marker)?;
        }
        self.put(Cf::Executions, exec_key(&next.id), next)
    }

    fn append_log(&mut self, operation: Operation, object: LogObject, now: Timestamp) -> Result<()> {
        Txn::append_log(self, operation, object, now).map(|_| ())
    }
}

/// The family and key prefix of the entries a [`rules::JobScan`] reads.
fn scan_range(scan: &rules::JobScan<'_>) -> (Cf, Vec<u8>) {
    let create = |sort: &JobSort| *sort == JobSort::CreateTime;
    match scan {
        rules::JobScan::All(sort) => (if create(sort) { Cf::IdxJobsByCreate } else { Cf::IdxJobsByModify }, Vec::new()),
        rules::JobScan::Namespace(ns, sort) => (
            if create(sort) { Cf::IdxJobsByNamespaceCreate } else { Cf::IdxJobsByNamespaceModify },
            KeyBuilder::new().str(ns).build(),
        ),
        rules::JobScan::State(state, sort) => {
            (if create(sort) { Cf::IdxJobsByStateCreate } else { Cf::IdxJobsByStateModify }, state_prefix(*state))
        }
        rules::JobScan::Label { key, value, sort } => {
            (if create(sort) { Cf::IdxJobsByLabelCreate } else { Cf::IdxJobsByLabelModify }, label_prefix(key, value))
        }
    }
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
        let (time, id) = time_entry_id(self.cf, self.it.key().unwrap_or_default(), self.prefix_len)?;
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
        self.engine.get_required(Cf::Jobs, &job_key(id), || StoreError::not_found(ObjectKind::Job, id))
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
        self.write(|txn, now| job_write::create_job(txn, job, now)).await
    }

    async fn get_job(&self, id: &JobId) -> Result<Job> {
        match self.engine.get_value::<Job>(Cf::Jobs, &job_key(id))? {
            Some(job) => Ok(job),
            None => Err(rules::missing_job(id, self.engine.get_value::<String>(Cf::PurgedJobs, id.as_bytes())?)),
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
            Ok(matches.len() < rules::PREFIX_MATCHES)
        })?;
        rules::job_by_prefix(prefix, matches)
    }

    async fn update_job(&self, job: Job) -> Result<Job> {
        self.write(|txn, now| job_write::update_job(txn, job, now)).await
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
        self.write(|txn, now| job_write::update_job_state(txn, &request, now)).await
    }

    async fn delete_job(&self, id: &JobId) -> Result<()> {
        self.write(|txn, now| job_write::delete_job(txn, id, now)).await
    }

    async fn add_job_event(&self, id: &JobId, events: Vec<Event>) -> Result<()> {
        self.write(|txn, now| job_write::add_job_events(txn, id, events, now)).await
    }

    async fn get_job_history(&self, id: &JobId, query: &HistoryQuery) -> Result<HistoryPage> {
        let mut page = rules::HistoryPager::new(query)?;
        let job = self.job(id)?;
        let prefix = KeyBuilder::new().str(id.as_str()).build();
        let db = self.engine.db()?;
        let mut it = self.engine.iter(&db, Cf::JobHistory, &prefix, prefix_end(&prefix))?;
        it.seek(history_key(id, page.after().saturating_add(1)));
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else { break };
            if !page.offer(decode(Cf::JobHistory, k, v)?) {
                break;
            }
            it.next();
        }
        it.status().map_err(|e| StoreError::backend("read job history", e))?;
        Ok(page.finish(job.state()))
    }

    async fn list_jobs(&self, query: &JobQuery) -> Result<JobPage> {
        let mut page = rules::JobPager::new(query)?;
        let scans: Vec<(Cf, Vec<u8>)> = page.scans().iter().map(scan_range).collect();
        let db = self.engine.db()?;
        let snapshot = db.snapshot();
        ordered_ids(&self.engine, &db, &snapshot, &scans, page.after(), query.order, |time, id| {
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
        self.write(|txn, now| job_write::create_evaluation(txn, evaluation, now)).await
    }

    async fn get_evaluation(&self, id: &EvaluationId) -> Result<Evaluation> {
        self.engine.get_required(Cf::Evaluations, id.as_bytes(), || StoreError::not_found(ObjectKind::Evaluation, id))
    }

    async fn update_evaluation(&self, evaluation: Evaluation) -> Result<Evaluation> {
        self.write(|txn, now| job_write::update_evaluation(txn, evaluation, now)).await
    }

    async fn delete_evaluation(&self, id: &EvaluationId) -> Result<()> {
        self.write(|txn, now| job_write::delete_evaluation(txn, id, now)).await
    }

    async fn get_evaluations(&self, job_id: &JobId) -> Result<Vec<Evaluation>> {
        self.job(job_id)?;
        self.evaluations_of(job_id)
    }

    async fn create_execution(&self, execution: Execution) -> Result<Execution> {
        self.write(|txn, now| job_write::create_execution(txn, execution, now)).await
    }

    async fn get_execution(&self, id: &ExecutionId) -> Result<Execution> {
        self.engine.get_required(Cf::Executions, &exec_key(id), || StoreError::not_found(ObjectKind::Execution, id))
    }

    async fn update_execution(&self, request: UpdateExecutionRequest) -> Result<Execution> {
        self.write(|txn, now| job_write::update_execution(txn, &request, now)).await
    }

    async fn get_executions_for_job(&self, job_id: &JobId) -> Result<Vec<Execution>> {
        Ok(newest_first(read_indexed(&self.engine, Cf::IdxExecutionsByJobId, &by_job_prefix(job_id))?))
    }

    async fn get_executions_for_node(&self, node_id: &NodeId) -> Result<Vec<Execution>> {
        let prefix = KeyBuilder::new().str(node_id.as_str()).build();
        Ok(newest_first(read_indexed(&self.engine, Cf::IdxExecutionsByNode, &prefix)?))
    }

    async fn enqueue(&self, queue: &str, job: Job) -> Result<Job> {
        self.write(|txn, now| job_write::enqueue(txn, queue, job, now)).await
    }

    async fn grab_next(&self, queue: &str) -> Result<Option<Job>> {
        self.write(|txn, now| job_write::grab_next(txn, queue, now)).await
    }

    async fn finish(&self, id: &JobId, outcome: JobOutcome, output_files: Vec<String>) -> Result<Job> {
        self.write(|txn, now| job_write::finish(txn, id, outcome, output_files, now)).await
    }

    async fn touch_job(&self, id: &JobId) -> Result<Job> {
        self.write(|txn, now| job_write::touch_job(txn, id, now)).await
    }

    async fn expire(&self, idle_for: Duration) -> Result<Vec<JobId>> {
        let (cutoff, message) = rules::expire_cutoff(idle_for, self.engine.now());
        let message = &message;
        rules::expire_in_batches(|| self.write(move |txn, now| job_write::expire_batch(txn, cutoff, message, now)))
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
        let scans: Vec<(Cf, Vec<u8>)> = rules::PurgeCandidates::scans().iter().map(scan_range).collect();
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
        self.write(|txn, now| job_write::purge_jobs(txn, jobs, archive, now)).await
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
