//! `RocksJobStore`: the requester node's job store on RocksDB.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use brine_store::job_write::{self, JobStorage, OwnedRecords, Removed};
use brine_store::keys::prefix_end;
use brine_store::model::{
    Evaluation, EvaluationId, Event, Execution, ExecutionId, Job, JobHistory, JobId, JobType, LogObject, NodeId,
    Operation, Timestamp,
};
use brine_store::rules::JobIndex;
use brine_store::{
    rules, CheckReport, EventLog, HistoryPage, HistoryQuery, JobBundle, JobOutcome, JobPage, JobQuery, JobStamp,
    JobStore, ObjectKind, Result, SortOrder, StoreError, UpdateExecutionRequest, UpdateJobStateRequest,
};

use rocksdb::{DBRawIteratorWithThreadMode, DB};
use serde::de::DeserializeOwned;

use crate::cf::{Cf, StoreKind};
use crate::codec::decode;
use crate::engine::{visit_prefix, Engine, Snapshot, Txn};
use crate::execution::read_indexed;
use crate::layout::{self, Placement};
use crate::log::RocksEventLog;
use crate::{OpenError, OpenOptions};
use brine_store::config::StoreConfig;

/// The job store's writes (`brine_store::job_write`) on a write batch with its overlay.
impl JobStorage for Txn {
    fn job(&self, id: &JobId) -> Result<Option<Job>> {
        self.get(Cf::Jobs, &layout::job(id))
    }

    fn name_taken(&self, namespace: &str, name: &str) -> Result<bool> {
        self.exists(Cf::IdxJobsByName, &layout::job_name(namespace, name))
    }

    fn purged(&self, id: &JobId) -> Result<Option<String>> {
        self.get(Cf::PurgedJobs, &layout::job(id))
    }

    fn evaluation(&self, id: &EvaluationId) -> Result<Option<Evaluation>> {
        self.get(Cf::Evaluations, &layout::evaluation(id))
    }

    fn execution(&self, id: &ExecutionId) -> Result<Option<Execution>> {
        self.get(Cf::Executions, &layout::execution(id))
    }

    fn first_queued(&self, queue: &str) -> Result<Option<JobId>> {
        let prefix = layout::queue(queue);
        let Some(first) = self.first_key_with_prefix(Cf::IdxJobsQueued, &prefix)? else { return Ok(None) };
        Ok(Some(layout::decode_time_entry(Cf::IdxJobsQueued, &first, prefix.len())?.1))
    }

    fn idle_before(&self, cutoff: Timestamp, limit: usize) -> Result<Vec<JobId>> {
        let mut ids = Vec::new();
        self.scan_keys(Cf::IdxJobsIdle, &[], |k| {
            let (accessed, id) = layout::decode_time_entry(Cf::IdxJobsIdle, k, 0)?;
            if accessed >= cutoff || ids.len() == limit {
                return Ok(false);
            }
            ids.push(id);
            Ok(true)
        })?;
        Ok(ids)
    }

    fn put_job(&mut self, job: &Job) -> Result<()> {
        self.put(Cf::Jobs, layout::job(&job.id), job)
    }

    fn put_job_version(&mut self, job: &Job) -> Result<()> {
        self.put(Cf::JobVersions, layout::job_version(&job.id, job.version), job)
    }

    fn add_job_index(&mut self, id: &JobId, entry: &JobIndex<'_>) -> Result<()> {
        let (cf, key, value) = layout::job_index(id, entry);
        self.put_raw(cf, key, value)
    }

    fn remove_job_index(&mut self, id: &JobId, entry: &JobIndex<'_>) -> Result<()> {
        let (cf, key, _) = layout::job_index(id, entry);
        self.delete(cf, key)
    }

    fn remove_job(&mut self, id: &JobId, owned: OwnedRecords) -> Result<Removed> {
        self.delete(Cf::Jobs, layout::job(id))?;
        let prefix = layout::owned_by(id);
        self.clear_prefix(Cf::JobVersions, &prefix)?;
        self.clear_prefix(Cf::JobHistory, &prefix)?;
        let mut removed = Removed::default();
        for key in self.keys_with_prefix(Cf::IdxEvaluationsByJob, &prefix)? {
            self.delete(Cf::IdxEvaluationsByJob, key.clone())?;
            let eval_key = layout::after_prefix(&key, &prefix);
            if owned == OwnedRecords::Return {
                removed.evaluations.extend(self.get::<Evaluation>(Cf::Evaluations, eval_key)?);
            }
            self.delete(Cf::Evaluations, eval_key.to_vec())?;
        }
        for (key, marker) in self.entries_with_prefix(Cf::IdxExecutionsByJobId, &prefix)? {
            self.delete(Cf::IdxExecutionsByJobId, key.clone())?;
            let exec_key = layout::after_prefix(&key, &prefix);
            // When nothing is returned and the index entry names the node, the record
            // need not be read and decoded.
            let placement = layout::placement(&marker);
            if owned == OwnedRecords::Skip && placement != Placement::Unknown {
                if let Placement::Node(node) = placement {
                    self.delete(Cf::IdxExecutionsByNode, layout::execution_by_node_raw(node, exec_key))?;
                }
                self.delete(Cf::Executions, exec_key.to_vec())?;
                continue;
            }
            if let Some(exec) = self.get::<Execution>(Cf::Executions, exec_key)? {
                if let Some(node) = &exec.node_id {
                    self.delete(Cf::IdxExecutionsByNode, layout::execution_by_node(node, &exec.id))?;
                }
                self.delete(Cf::Executions, exec_key.to_vec())?;
                if owned == OwnedRecords::Return {
                    removed.executions.push(exec);
                }
            }
        }
        Ok(removed)
    }

    fn mark_purged(&mut self, id: &JobId, archive: &str) -> Result<()> {
        self.put(Cf::PurgedJobs, layout::job(id), archive)
    }

    fn next_history_seq(&mut self) -> Result<u64> {
        Ok(Txn::next_history_seq(self))
    }

    fn put_history(&mut self, entry: &JobHistory) -> Result<()> {
        self.put(Cf::JobHistory, layout::job_history(&entry.job_id, entry.seq), entry)
    }

    fn load_history(&mut self, entry: &JobHistory) -> Result<()> {
        self.raise_history_seq(entry.seq);
        self.put_history(entry)
    }

    fn put_evaluation(&mut self, evaluation: &Evaluation) -> Result<()> {
        self.put(Cf::Evaluations, layout::evaluation(&evaluation.id), evaluation)?;
        self.put_raw(Cf::IdxEvaluationsByJob, layout::evaluation_by_job(&evaluation.job_id, &evaluation.id), Vec::new())
    }

    fn delete_evaluation(&mut self, evaluation: &Evaluation) -> Result<()> {
        self.delete(Cf::Evaluations, layout::evaluation(&evaluation.id))?;
        self.delete(Cf::IdxEvaluationsByJob, layout::evaluation_by_job(&evaluation.job_id, &evaluation.id))
    }

    fn put_execution(&mut self, before: Option<&Execution>, next: &Execution) -> Result<()> {
        let old_node = before.map(|b| b.node_id.as_ref());
        if old_node != Some(next.node_id.as_ref()) {
            if let Some(node) = old_node.flatten() {
                self.delete(Cf::IdxExecutionsByNode, layout::execution_by_node(node, &next.id))?;
            }
            if let Some(node) = &next.node_id {
                self.put_raw(Cf::IdxExecutionsByNode, layout::execution_by_node(node, &next.id), Vec::new())?;
            }
            let marker = layout::node_marker(next.node_id.as_ref());
            self.put_raw(Cf::IdxExecutionsByJobId, layout::execution_by_job(&next.job_id, &next.id), marker)?;
        }
        self.put(Cf::Executions, layout::execution(&next.id), next)
    }

    fn append_log(&mut self, operation: Operation, object: LogObject, now: Timestamp) -> Result<()> {
        Txn::append_log(self, operation, object, now).map(|_| ())
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
        layout::decode_time_entry(self.cf, self.it.key().unwrap_or_default(), self.prefix_len)
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
    let start = after.map(|(t, id)| layout::time_entry(prefix, *t, id));
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

    /// The NOSPACE alarm, when the store went past its space quota
    /// ([`crate::OpenOptions::quota_bytes`]): writes that add data are refused until it
    /// is disarmed.
    pub fn alarm(&self) -> Option<crate::Alarm> {
        self.engine.alarm()
    }

    /// Disarms the NOSPACE alarm (after space was freed): writes that add data are
    /// admitted again, and raise it anew if the store is still past its quota. Returns
    /// the alarm that was raised, if any.
    pub async fn disarm_alarm(&self) -> Result<Option<crate::Alarm>> {
        self.engine.disarm().await
    }

    /// Waits until the background flushes and compactions of what was written so far
    /// are done: before a timed phase of a benchmark, or a latency-sensitive one, so
    /// that earlier writes' compaction does not land on it. Writes go on meanwhile.
    pub async fn wait_for_compactions(&self) -> Result<()> {
        self.engine.wait_for_compactions().await
    }

    /// What the store's RocksDB holds in memory now (memtables, table readers, the
    /// shared block cache).
    pub fn memory_usage(&self) -> Result<crate::MemoryUsage> {
        self.engine.memory_usage()
    }

    async fn write<R>(&self, f: impl FnOnce(&mut Txn, Timestamp) -> Result<R>) -> Result<R> {
        let mut txn = self.engine.begin().await?;
        let now = txn.now();
        let out = f(&mut txn, now)?;
        txn.commit().await?;
        Ok(out)
    }

    /// A write that frees space (a delete, a purge): a store past its quota takes it.
    async fn freeing_write<R>(&self, f: impl FnOnce(&mut Txn, Timestamp) -> Result<R>) -> Result<R> {
        self.write(|txn, now| {
            txn.frees_space();
            f(txn, now)
        })
        .await
    }

    fn job(&self, id: &JobId) -> Result<Job> {
        self.engine.get_required(Cf::Jobs, &layout::job(id), || StoreError::not_found(ObjectKind::Job, id))
    }

    /// The values `owner` keeps under its prefix of `cf` (versions, history), decoded, in
    /// key order.
    fn owned<T: DeserializeOwned>(&self, cf: Cf, owner: &JobId) -> Result<Vec<T>> {
        let mut out = Vec::new();
        self.engine.scan_prefix(cf, &layout::owned_by(owner), |k, v| {
            out.push(decode(cf, k, v)?);
            Ok(true)
        })?;
        Ok(out)
    }

    /// The bundles of a page of jobs (`None` for a job not there), read from one
    /// snapshot, each family's records in one batched lookup ([`JobStore::job_bundle`]
    /// is a page of one). Opening an iterator visits every level and, on the versions
    /// and history, fragments the memtable's range deletions (a purge leaves many
    /// there), so those two are opened once per page.
    fn bundles(&self, ids: &[JobId]) -> Result<Vec<Option<JobBundle>>> {
        let engine = &self.engine;
        let db = engine.db()?;
        let snapshot = db.snapshot();
        let job_keys: Vec<Vec<u8>> = ids.iter().map(layout::job).collect();
        let jobs: Vec<Option<Job>> = engine.get_values_at(&db, Some(&snapshot), Cf::Jobs, &job_keys)?;
        // A removed job's versions and history go as range deletions, which an iterator
        // steps over in one seek, so those two iterators are shared by the page. A
        // removed job's index entries go one by one: a seek past a job with no entries
        // would step over each deleted one up to the next live key, so the indexes are
        // read with an iterator bounded to each job.
        let mut versions_it = engine.iter_at(&db, Some(&snapshot), Cf::JobVersions, &[], None)?;
        let mut history_it = engine.iter_at(&db, Some(&snapshot), Cf::JobHistory, &[], None)?;
        let mut pages = Vec::with_capacity(ids.len());
        let (mut eval_keys, mut exec_keys) = (Vec::new(), Vec::new());
        for (id, job) in ids.iter().zip(jobs) {
            let Some(job) = job else {
                pages.push(None);
                continue;
            };
            let prefix = layout::owned_by(id);
            let (mut versions, mut history) = (Vec::new(), Vec::new());
            visit_prefix(&mut versions_it, &prefix, |k, v| {
                versions.push(decode(Cf::JobVersions, k, v)?);
                Ok(true)
            })?;
            visit_prefix(&mut history_it, &prefix, |k, v| {
                history.push(decode(Cf::JobHistory, k, v)?);
                Ok(true)
            })?;
            let (evals_from, execs_from) = (eval_keys.len(), exec_keys.len());
            for (cf, keys) in [(Cf::IdxEvaluationsByJob, &mut eval_keys), (Cf::IdxExecutionsByJobId, &mut exec_keys)] {
                let mut it = engine.iter_at(&db, Some(&snapshot), cf, &prefix, prefix_end(&prefix))?;
                visit_prefix(&mut it, &prefix, |k, _| {
                    keys.push(layout::after_prefix(k, &prefix).to_vec());
                    Ok(true)
                })?;
            }
            let counts = (eval_keys.len() - evals_from, exec_keys.len() - execs_from);
            pages.push(Some((job, versions, history, counts)));
        }
        let evaluations: Vec<Option<Evaluation>> =
            engine.get_values_at(&db, Some(&snapshot), Cf::Evaluations, &eval_keys)?;
        let executions: Vec<Option<Execution>> =
            engine.get_values_at(&db, Some(&snapshot), Cf::Executions, &exec_keys)?;
        let (mut evaluations, mut executions) = (evaluations.into_iter(), executions.into_iter());
        Ok(pages
            .into_iter()
            .map(|page| {
                page.map(|(job, versions, history, (evals, execs))| JobBundle {
                    job,
                    versions,
                    history,
                    // A record an index entry names but a concurrent delete removed is
                    // skipped, as a single job's read skips it.
                    evaluations: evaluations.by_ref().take(evals).flatten().collect(),
                    executions: executions.by_ref().take(execs).flatten().collect(),
                })
            })
            .collect())
    }

    /// The evaluations of `job`, read through the by-job index, in id order.
    fn evaluations_of(&self, job: &JobId) -> Result<Vec<Evaluation>> {
        let prefix = layout::owned_by(job);
        let mut ids = Vec::new();
        self.engine.scan_prefix(Cf::IdxEvaluationsByJob, &prefix, |k, _| {
            ids.push(layout::after_prefix(k, &prefix).to_vec());
            Ok(true)
        })?;
        self.engine.get_values(Cf::Evaluations, &ids)
    }
}

#[async_trait]
impl JobStore for RocksJobStore {
    async fn create_job(&self, job: Job) -> Result<Job> {
        self.write(|txn, now| job_write::create_job(txn, job, now)).await
    }

    async fn get_job(&self, id: &JobId) -> Result<Job> {
        match self.engine.get_value::<Job>(Cf::Jobs, &layout::job(id))? {
            Some(job) => Ok(job),
            None => Err(rules::missing_job(id, self.engine.get_value::<String>(Cf::PurgedJobs, &layout::job(id))?)),
        }
    }

    async fn get_job_by_name(&self, namespace: &str, name: &str) -> Result<Job> {
        rules::check_namespace(namespace)?;
        let missing = || StoreError::not_found(ObjectKind::JobName, format!("{namespace}/{name}"));
        let key = layout::job_name(namespace, name);
        let db = self.engine.db()?;
        let raw = db
            .get_pinned_cf(self.engine.cf(&db, Cf::IdxJobsByName)?, &key)
            .map_err(|e| StoreError::backend("read the name index", e))?
            .ok_or_else(missing)?;
        let id = std::str::from_utf8(&raw)
            .ok()
            .and_then(|s| JobId::new(s).ok())
            .ok_or_else(|| layout::corrupt_key(Cf::IdxJobsByName, &key, "value is not a job id"))?;
        self.job(&id)
    }

    async fn get_job_by_prefix(&self, prefix: &str) -> Result<Job> {
        let start = JobId::new(prefix)?;
        if let Some(job) = self.engine.get_value::<Job>(Cf::Jobs, &layout::job(&start))? {
            return Ok(job);
        }
        let mut matches = Vec::new();
        self.engine.scan_prefix(Cf::Jobs, &layout::job(&start), |k, v| {
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
        self.engine.get_required(Cf::JobVersions, &layout::job_version(id, version), || {
            StoreError::not_found(ObjectKind::JobVersion, format!("{id}@{version}"))
        })
    }

    async fn update_job_state(&self, request: UpdateJobStateRequest) -> Result<Job> {
        self.write(|txn, now| job_write::update_job_state(txn, &request, now)).await
    }

    async fn delete_job(&self, id: &JobId) -> Result<()> {
        self.freeing_write(|txn, now| job_write::delete_job(txn, id, now)).await
    }

    async fn add_job_event(&self, id: &JobId, events: Vec<Event>) -> Result<()> {
        self.write(|txn, now| job_write::add_job_events(txn, id, events, now)).await
    }

    async fn get_job_history(&self, id: &JobId, query: &HistoryQuery) -> Result<HistoryPage> {
        let mut page = rules::HistoryPager::new(query)?;
        let job = self.job(id)?;
        let prefix = layout::owned_by(id);
        let db = self.engine.db()?;
        let mut it = self.engine.iter(&db, Cf::JobHistory, &prefix, prefix_end(&prefix))?;
        it.seek(layout::job_history(id, page.after().saturating_add(1)));
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
        let scans: Vec<(Cf, Vec<u8>)> = page.scans().iter().map(layout::job_scan).collect();
        let db = self.engine.db()?;
        let snapshot = db.snapshot();
        ordered_ids(&self.engine, &db, &snapshot, &scans, page.after(), query.order, |time, id| {
            let job = self.engine.get_value_at::<Job>(&db, &snapshot, Cf::Jobs, &layout::job(&id))?;
            Ok(page.offer(time, &id, job.as_ref()))
        })?;
        Ok(page.finish())
    }

    async fn get_in_progress_jobs(&self, job_type: Option<JobType>) -> Result<Vec<Job>> {
        let mut ids = Vec::new();
        self.engine.scan_prefix(Cf::IdxJobsInProgress, &layout::in_progress(job_type), |k, _| {
            let decoded = layout::decode_or_corrupt(Cf::IdxJobsInProgress, k)?;
            ids.push(decoded.str("job_id").unwrap_or_default().as_bytes().to_vec());
            Ok(true)
        })?;
        Ok(rules::in_id_order(self.engine.get_values(Cf::Jobs, &ids)?))
    }

    async fn create_evaluation(&self, evaluation: Evaluation) -> Result<Evaluation> {
        self.write(|txn, now| job_write::create_evaluation(txn, evaluation, now)).await
    }

    async fn get_evaluation(&self, id: &EvaluationId) -> Result<Evaluation> {
        self.engine.get_required(Cf::Evaluations, &layout::evaluation(id), || {
            StoreError::not_found(ObjectKind::Evaluation, id)
        })
    }

    async fn update_evaluation(&self, evaluation: Evaluation) -> Result<Evaluation> {
        self.write(|txn, now| job_write::update_evaluation(txn, evaluation, now)).await
    }

    async fn delete_evaluation(&self, id: &EvaluationId) -> Result<()> {
        self.freeing_write(|txn, now| job_write::delete_evaluation(txn, id, now)).await
    }

    async fn get_evaluations(&self, job_id: &JobId) -> Result<Vec<Evaluation>> {
        self.job(job_id)?;
        self.evaluations_of(job_id)
    }

    async fn create_execution(&self, execution: Execution) -> Result<Execution> {
        self.write(|txn, now| job_write::create_execution(txn, execution, now)).await
    }

    async fn get_execution(&self, id: &ExecutionId) -> Result<Execution> {
        self.engine
            .get_required(Cf::Executions, &layout::execution(id), || StoreError::not_found(ObjectKind::Execution, id))
    }

    async fn update_execution(&self, request: UpdateExecutionRequest) -> Result<Execution> {
        self.write(|txn, now| job_write::update_execution(txn, &request, now)).await
    }

    async fn get_executions_for_job(&self, job_id: &JobId) -> Result<Vec<Execution>> {
        Ok(rules::newest_first(read_indexed(&self.engine, Cf::IdxExecutionsByJobId, &layout::owned_by(job_id))?))
    }

    async fn get_executions_for_node(&self, node_id: &NodeId) -> Result<Vec<Execution>> {
        let prefix = layout::on_node(node_id);
        Ok(rules::newest_first(read_indexed(&self.engine, Cf::IdxExecutionsByNode, &prefix)?))
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
        let scans: Vec<(Cf, Vec<u8>)> = rules::PurgeCandidates::scans().iter().map(layout::job_scan).collect();
        ordered_ids(&self.engine, &db, &snapshot, &scans, after, SortOrder::Ascending, |time, id| {
            candidates.offer(time, || self.engine.get_value_at::<Job>(&db, &snapshot, Cf::Jobs, &layout::job(&id)))
        })?;
        Ok(candidates.finish())
    }

    async fn job_bundle(&self, id: &JobId) -> Result<JobBundle> {
        self.bundles(std::slice::from_ref(id))?
            .pop()
            .flatten()
            .ok_or_else(|| StoreError::not_found(ObjectKind::Job, id))
    }

    async fn job_bundles(&self, ids: &[JobId]) -> Result<Vec<Option<JobBundle>>> {
        self.bundles(ids)
    }

    async fn purge_jobs(&self, jobs: &[(JobId, JobStamp)], archive: &str) -> Result<u64> {
        self.freeing_write(|txn, now| job_write::purge_jobs(txn, jobs, archive, now)).await
    }

    async fn load_jobs(&self, bundles: Vec<JobBundle>) -> Result<()> {
        self.write(|txn, _| job_write::load_jobs(txn, &bundles)).await
    }

    async fn load_purged(&self, entries: Vec<(JobId, String)>) -> Result<()> {
        self.write(|txn, _| job_write::load_purged(txn, &entries)).await
    }

    async fn list_purged(&self, after: Option<&JobId>, limit: usize) -> Result<Vec<(JobId, String)>> {
        rules::check_limit(limit)?;
        let after = after.map(layout::job);
        let db = self.engine.db()?;
        let mut it = self.engine.iter(&db, Cf::PurgedJobs, after.as_deref().unwrap_or_default(), None)?;
        it.seek_to_first();
        let mut out = Vec::new();
        while it.valid() && out.len() < limit {
            let (Some(k), Some(v)) = (it.key(), it.value()) else { break };
            if after.as_deref() != Some(k) {
                let id = layout::decode_or_corrupt(Cf::PurgedJobs, k)?
                    .str("job_id")
                    .and_then(|id| JobId::new(id).ok())
                    .ok_or_else(|| layout::corrupt_key(Cf::PurgedJobs, k, "not a job id"))?;
                out.push((id, decode(Cf::PurgedJobs, k, v)?));
            }
            it.next();
        }
        it.status().map_err(|e| StoreError::backend("scan the purged jobs", e))?;
        Ok(out)
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

    async fn check(&self) -> Result<CheckReport> {
        crate::check::check_on_blocking_thread(&self.engine).await
    }

    async fn close(&self) -> Result<()> {
        self.engine.close().await
    }
}
