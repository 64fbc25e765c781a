//! `MemJobStore`: the requester node's job store in memory.

use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use brine_store::job_write::{self, JobStorage, OwnedRecords, Removed};
use brine_store::model::{
    Evaluation, EvaluationId, Event, Execution, ExecutionId, Job, JobHistory, JobId, JobState, JobType, LogObject,
    NodeId, Operation, Timestamp,
};
use brine_store::rules::JobIndex;
use brine_store::{
    rules, CheckReport, Clock, EventLog, HistoryPage, HistoryQuery, JobBundle, JobOutcome, JobPage, JobQuery, JobSort,
    JobStamp, JobStore, ObjectKind, Result, SortOrder, StoreError, SystemClock, UpdateExecutionRequest,
    UpdateJobStateRequest,
};
use imbl::{OrdMap, OrdSet};

use crate::db::{Db, MemEventLog, Snapshot};

/// An ordered index of jobs by a time, then id.
type TimeIndex = OrdSet<(Timestamp, JobId)>;

/// The job tables and every index the job store's queries read.
#[derive(Clone, Default)]
pub(crate) struct JobTables {
    jobs: OrdMap<JobId, Arc<Job>>,
    versions: OrdMap<JobId, OrdMap<u64, Arc<Job>>>,
    by_name: OrdMap<(String, String), JobId>,
    by_create: TimeIndex,
    by_modify: TimeIndex,
    ns_create: OrdMap<String, TimeIndex>,
    ns_modify: OrdMap<String, TimeIndex>,
    state_create: OrdMap<JobState, TimeIndex>,
    state_modify: OrdMap<JobState, TimeIndex>,
    /// Per (label key, value).
    label_create: OrdMap<(String, String), TimeIndex>,
    label_modify: OrdMap<(String, String), TimeIndex>,
    in_progress: OrdMap<JobType, OrdSet<JobId>>,
    /// Queued jobs of each queue, oldest first.
    queued: OrdMap<String, TimeIndex>,
    /// Queue jobs that can expire, by last access.
    idle: TimeIndex,
    history: OrdMap<JobId, OrdMap<u64, Arc<JobHistory>>>,
    history_seq: u64,
    evals: OrdMap<EvaluationId, Arc<Evaluation>>,
    evals_by_job: OrdMap<JobId, OrdSet<EvaluationId>>,
    execs: OrdMap<ExecutionId, Arc<Execution>>,
    execs_by_job: OrdMap<JobId, OrdSet<ExecutionId>>,
    execs_by_node: OrdMap<NodeId, OrdSet<ExecutionId>>,
    /// Purged job ids and the archive each went to (the retained table).
    purged: OrdMap<JobId, String>,
}

type State = Snapshot<JobTables>;

/// The records `table` holds for the keys `index` lists under `owner`, in key order.
fn related<K: Ord + Clone, V: Clone>(
    index: &OrdMap<JobId, OrdSet<K>>,
    table: &OrdMap<K, Arc<V>>,
    owner: &JobId,
) -> Vec<V> {
    index
        .get(owner)
        .into_iter()
        .flat_map(|keys| keys.iter())
        .filter_map(|k| table.get(k).map(|v| V::clone(v)))
        .collect()
}

/// Whether an index entry is added or removed.
#[derive(Clone, Copy)]
enum Change {
    Add,
    Remove,
}

fn change_flat<V: Ord + Clone>(set: &mut OrdSet<V>, v: V, change: Change) {
    match change {
        Change::Add => {
            set.insert(v);
        }
        Change::Remove => {
            set.remove(&v);
        }
    }
}

fn change_nested<K: Ord + Clone, V: Ord + Clone>(map: &mut OrdMap<K, OrdSet<V>>, k: K, v: V, change: Change) {
    match change {
        Change::Add => insert_nested(map, &k, v),
        Change::Remove => remove_nested(map, &k, &v),
    }
}

fn insert_nested<K: Ord + Clone, V: Ord + Clone>(map: &mut OrdMap<K, OrdSet<V>>, k: &K, v: V) {
    map.entry(k.clone()).or_default().insert(v);
}

fn remove_nested<K: Ord + Clone, V: Ord + Clone>(map: &mut OrdMap<K, OrdSet<V>>, k: &K, v: &V) {
    if let Some(set) = map.get_mut(k) {
        set.remove(v);
        if set.is_empty() {
            map.remove(k);
        }
    }
}

impl JobTables {
    fn job(&self, id: &JobId) -> Result<&Arc<Job>> {
        self.jobs.get(id).ok_or_else(|| StoreError::not_found(ObjectKind::Job, id))
    }

    /// Every version of `id`, oldest first.
    fn versions_of(&self, id: &JobId) -> Vec<Job> {
        self.versions.get(id).map(|v| v.values().map(|j| Job::clone(j)).collect()).unwrap_or_default()
    }

    /// The evaluations of `id`, in id order.
    fn evaluations_of(&self, id: &JobId) -> Vec<Evaluation> {
        related(&self.evals_by_job, &self.evals, id)
    }

    /// Everything that belongs to `id`.
    fn bundle(&self, id: &JobId) -> Result<JobBundle> {
        Ok(JobBundle {
            job: Job::clone(self.job(id)?),
            versions: self.versions_of(id),
            history: self
                .history
                .get(id)
                .map(|h| h.values().map(|e| JobHistory::clone(e)).collect())
                .unwrap_or_default(),
            evaluations: self.evaluations_of(id),
            executions: related(&self.execs_by_job, &self.execs, id),
        })
    }

    /// Adds or removes one index entry of job `id`: where each [`JobIndex`] lives here.
    fn index_entry(&mut self, id: &JobId, entry: &JobIndex<'_>, change: Change) {
        let id = id.clone();
        match *entry {
            JobIndex::Name { namespace, name } => {
                let key = (namespace.to_owned(), name.to_owned());
                match change {
                    Change::Add => self.by_name.insert(key, id),
                    Change::Remove => self.by_name.remove(&key),
                };
            }
            JobIndex::Created(time) => change_flat(&mut self.by_create, (time, id), change),
            JobIndex::Modified(time) => change_flat(&mut self.by_modify, (time, id), change),
            JobIndex::NamespaceCreated { namespace, time } => {
                change_nested(&mut self.ns_create, namespace.to_owned(), (time, id), change)
            }
            JobIndex::NamespaceModified { namespace, time } => {
                change_nested(&mut self.ns_modify, namespace.to_owned(), (time, id), change)
            }
            JobIndex::StateCreated { state, time } => change_nested(&mut self.state_create, state, (time, id), change),
            JobIndex::StateModified { state, time } => change_nested(&mut self.state_modify, state, (time, id), change),
            JobIndex::LabelCreated { key, value, time } => {
                change_nested(&mut self.label_create, (key.to_owned(), value.to_owned()), (time, id), change)
            }
            JobIndex::LabelModified { key, value, time } => {
                change_nested(&mut self.label_modify, (key.to_owned(), value.to_owned()), (time, id), change)
            }
            JobIndex::InProgress(job_type) => change_nested(&mut self.in_progress, job_type, id, change),
            JobIndex::Queued { queue, time } => change_nested(&mut self.queued, queue.to_owned(), (time, id), change),
            JobIndex::Idle(time) => change_flat(&mut self.idle, (time, id), change),
        }
    }

    /// Whether the maps hold one index entry of job `id`.
    fn has_index(&self, id: &JobId, entry: &JobIndex<'_>) -> bool {
        let timed = |set: Option<&TimeIndex>, time: Timestamp| set.is_some_and(|s| s.contains(&(time, id.clone())));
        match *entry {
            JobIndex::Name { namespace, name } => {
                self.by_name.get(&(namespace.to_owned(), name.to_owned())) == Some(id)
            }
            JobIndex::Created(time) => timed(Some(&self.by_create), time),
            JobIndex::Modified(time) => timed(Some(&self.by_modify), time),
            JobIndex::NamespaceCreated { namespace, time } => timed(self.ns_create.get(namespace), time),
            JobIndex::NamespaceModified { namespace, time } => timed(self.ns_modify.get(namespace), time),
            JobIndex::StateCreated { state, time } => timed(self.state_create.get(&state), time),
            JobIndex::StateModified { state, time } => timed(self.state_modify.get(&state), time),
            JobIndex::LabelCreated { key, value, time } => {
                timed(self.label_create.get(&(key.to_owned(), value.to_owned())), time)
            }
            JobIndex::LabelModified { key, value, time } => {
                timed(self.label_modify.get(&(key.to_owned(), value.to_owned())), time)
            }
            JobIndex::InProgress(job_type) => self.in_progress.get(&job_type).is_some_and(|s| s.contains(id)),
            JobIndex::Queued { queue, time } => timed(self.queued.get(queue), time),
            JobIndex::Idle(time) => timed(Some(&self.idle), time),
        }
    }

    /// Every index entry the maps hold: the job it names and which [`JobIndex`] it is.
    fn index_entries(&self) -> Vec<(&JobId, JobIndex<'_>)> {
        fn timed<'a>(
            out: &mut Vec<(&'a JobId, JobIndex<'a>)>,
            set: &'a TimeIndex,
            entry: impl Fn(Timestamp) -> JobIndex<'a>,
        ) {
            out.extend(set.iter().map(|(time, id)| (id, entry(*time))));
        }
        let mut out = Vec::new();
        for ((namespace, name), id) in &self.by_name {
            out.push((id, JobIndex::Name { namespace, name }));
        }
        timed(&mut out, &self.by_create, JobIndex::Created);
        timed(&mut out, &self.by_modify, JobIndex::Modified);
        for (namespace, set) in &self.ns_create {
            timed(&mut out, set, |time| JobIndex::NamespaceCreated { namespace, time });
        }
        for (namespace, set) in &self.ns_modify {
            timed(&mut out, set, |time| JobIndex::NamespaceModified { namespace, time });
        }
        for (state, set) in &self.state_create {
            timed(&mut out, set, |time| JobIndex::StateCreated { state: *state, time });
        }
        for (state, set) in &self.state_modify {
            timed(&mut out, set, |time| JobIndex::StateModified { state: *state, time });
        }
        for ((key, value), set) in &self.label_create {
            timed(&mut out, set, |time| JobIndex::LabelCreated { key, value, time });
        }
        for ((key, value), set) in &self.label_modify {
            timed(&mut out, set, |time| JobIndex::LabelModified { key, value, time });
        }
        for (job_type, ids) in &self.in_progress {
            out.extend(ids.iter().map(|id| (id, JobIndex::InProgress(*job_type))));
        }
        for (queue, set) in &self.queued {
            timed(&mut out, set, |time| JobIndex::Queued { queue, time });
        }
        timed(&mut out, &self.idle, JobIndex::Idle);
        out
    }

    /// The index a [`rules::JobScan`] reads here.
    fn range(&self, scan: &rules::JobScan<'_>) -> Option<&TimeIndex> {
        let create = |sort: &JobSort| *sort == JobSort::CreateTime;
        match scan {
            rules::JobScan::All(sort) => Some(if create(sort) { &self.by_create } else { &self.by_modify }),
            rules::JobScan::Namespace(ns, sort) => {
                if create(sort) { &self.ns_create } else { &self.ns_modify }.get(*ns)
            }
            rules::JobScan::State(state, sort) => {
                if create(sort) { &self.state_create } else { &self.state_modify }.get(state)
            }
            rules::JobScan::Label { key, value, sort } => {
                if create(sort) { &self.label_create } else { &self.label_modify }
                    .get(&((*key).to_owned(), (*value).to_owned()))
            }
        }
    }

    fn sorted_execs(&self, ids: Option<&OrdSet<ExecutionId>>) -> Vec<Execution> {
        let execs =
            ids.into_iter().flat_map(|s| s.iter()).filter_map(|id| self.execs.get(id)).map(|e| Execution::clone(e));
        rules::newest_first(execs.collect())
    }
}

/// The consistency check of a job store, by the rules the RocksDB check follows: each
/// job has exactly the index entries `rules::job_indexes` names, every index entry is
/// one of its job's, and what belongs to a job (versions, history, evaluations,
/// executions and their indexes) belongs to a stored job; then the event log.
fn check(s: &State) -> CheckReport {
    let t = &s.tables;
    let mut report = CheckReport::default();
    for (id, job) in &t.jobs {
        report.keys_checked += 1;
        if job.id != *id {
            report.problem("jobs", id.as_str(), format!("key does not match the record's id {}", job.id));
        }
        for entry in rules::job_indexes(job) {
            if !t.has_index(id, &entry) {
                report.problem("jobs", id.as_str(), format!("missing index entry {entry:?}"));
            }
        }
    }
    for (id, entry) in t.index_entries() {
        report.keys_checked += 1;
        match t.jobs.get(id) {
            None => report.problem("job indexes", format!("{entry:?}"), format!("points at missing job {id}")),
            Some(job) if !rules::job_indexes(job).contains(&entry) => {
                report.problem("job indexes", format!("{entry:?}"), format!("does not match job {id} (stale entry)"))
            }
            Some(_) => {}
        }
    }
    let owned = [("job_versions", t.versions.keys().collect::<Vec<_>>()), ("job_history", t.history.keys().collect())];
    for (place, ids) in owned {
        for id in ids {
            report.keys_checked += 1;
            if !t.jobs.contains_key(id) {
                report.problem(place, id.as_str(), format!("belongs to missing job {id}"));
            }
        }
    }
    for (id, eval) in &t.evals {
        report.keys_checked += 1;
        if !t.jobs.contains_key(&eval.job_id) {
            report.problem("evaluations", id.as_str(), format!("belongs to missing job {}", eval.job_id));
        }
        if !t.evals_by_job.get(&eval.job_id).is_some_and(|set| set.contains(id)) {
            report.problem("evaluations", id.as_str(), "missing from the by-job index");
        }
    }
    for (job, ids) in &t.evals_by_job {
        for id in ids {
            if t.evals.get(id).is_none_or(|e| e.job_id != *job) {
                report.problem(
                    "evaluations by job",
                    format!("{job}/{id}"),
                    format!("points at missing evaluation {id}"),
                );
            }
        }
    }
    for (id, exec) in &t.execs {
        report.keys_checked += 1;
        if !t.jobs.contains_key(&exec.job_id) {
            report.problem("executions", id.as_str(), format!("belongs to missing job {}", exec.job_id));
        }
        if !t.execs_by_job.get(&exec.job_id).is_some_and(|set| set.contains(id)) {
            report.problem(
                "executions",
                id.as_str(),
                format!("missing from the by-job index under job {}", exec.job_id),
            );
        }
        if let Some(node) = &exec.node_id {
            if !t.execs_by_node.get(node).is_some_and(|set| set.contains(id)) {
                report.problem("executions", id.as_str(), format!("missing from the by-node index under node {node}"));
            }
        }
    }
    for (job, ids) in &t.execs_by_job {
        for id in ids {
            if t.execs.get(id).is_none_or(|e| e.job_id != *job) {
                report.problem("executions by job", format!("{job}/{id}"), format!("points at missing execution {id}"));
            }
        }
    }
    for (node, ids) in &t.execs_by_node {
        for id in ids {
            if t.execs.get(id).is_none_or(|e| e.node_id.as_ref() != Some(node)) {
                report.problem(
                    "executions by node",
                    format!("{node}/{id}"),
                    format!("points at missing execution {id}"),
                );
            }
        }
    }
    for (id, file) in &t.purged {
        if file.is_empty() {
            report.problem("purged jobs", id.as_str(), "names no archive file");
        }
        if t.jobs.contains_key(id) {
            report.problem("purged jobs", id.as_str(), brine_store::rules::purged_id_reused(file));
        }
    }
    s.log.check(&mut report);
    report
}

/// The job store's writes (`brine_store::job_write`) on a snapshot being built.
impl JobStorage for State {
    fn job(&self, id: &JobId) -> Result<Option<Job>> {
        Ok(self.tables.jobs.get(id).map(|j| Job::clone(j)))
    }

    fn name_taken(&self, namespace: &str, name: &str) -> Result<bool> {
        Ok(self.tables.by_name.contains_key(&(namespace.to_owned(), name.to_owned())))
    }

    fn purged(&self, id: &JobId) -> Result<Option<String>> {
        Ok(self.tables.purged.get(id).cloned())
    }

    fn evaluation(&self, id: &EvaluationId) -> Result<Option<Evaluation>> {
        Ok(self.tables.evals.get(id).map(|e| Evaluation::clone(e)))
    }

    fn execution(&self, id: &ExecutionId) -> Result<Option<Execution>> {
        Ok(self.tables.execs.get(id).map(|e| Execution::clone(e)))
    }

    fn first_queued(&self, queue: &str) -> Result<Option<JobId>> {
        Ok(self.tables.queued.get(queue).and_then(|q| q.get_min()).map(|(_, id)| id.clone()))
    }

    fn idle_before(&self, cutoff: Timestamp, limit: usize) -> Result<Vec<JobId>> {
        let idle = self.tables.idle.iter().take_while(|(accessed, _)| *accessed < cutoff).take(limit);
        Ok(idle.map(|(_, id)| id.clone()).collect())
    }

    fn put_job(&mut self, job: &Job) -> Result<()> {
        self.tables.jobs.insert(job.id.clone(), Arc::new(job.clone()));
        Ok(())
    }

    fn put_job_version(&mut self, job: &Job) -> Result<()> {
        self.tables.versions.entry(job.id.clone()).or_default().insert(job.version, Arc::new(job.clone()));
        Ok(())
    }

    fn add_job_index(&mut self, id: &JobId, entry: &JobIndex<'_>) -> Result<()> {
        self.tables.index_entry(id, entry, Change::Add);
        Ok(())
    }

    fn remove_job_index(&mut self, id: &JobId, entry: &JobIndex<'_>) -> Result<()> {
        self.tables.index_entry(id, entry, Change::Remove);
        Ok(())
    }

    fn remove_job(&mut self, id: &JobId, owned: OwnedRecords) -> Result<Removed> {
        let t = &mut self.tables;
        t.jobs.remove(id);
        t.versions.remove(id);
        t.history.remove(id);
        let mut removed = Removed::default();
        for eid in t.evals_by_job.remove(id).unwrap_or_default() {
            removed.evaluations.extend(t.evals.remove(&eid).map(|e| Evaluation::clone(&e)));
        }
        for xid in t.execs_by_job.remove(id).unwrap_or_default() {
            if let Some(e) = t.execs.remove(&xid) {
                if let Some(node) = &e.node_id {
                    remove_nested(&mut t.execs_by_node, node, &xid);
                }
                removed.executions.push(Execution::clone(&e));
            }
        }
        if owned == OwnedRecords::Skip {
            removed = Removed::default();
        }
        Ok(removed)
    }

    fn mark_purged(&mut self, id: &JobId, archive: &str) -> Result<()> {
        self.tables.purged.insert(id.clone(), archive.to_owned());
        Ok(())
    }

    fn next_history_seq(&mut self) -> Result<u64> {
        self.tables.history_seq += 1;
        Ok(self.tables.history_seq)
    }

    fn put_history(&mut self, entry: &JobHistory) -> Result<()> {
        let history = self.tables.history.entry(entry.job_id.clone()).or_default();
        history.insert(entry.seq, Arc::new(entry.clone()));
        Ok(())
    }

    fn load_history(&mut self, entry: &JobHistory) -> Result<()> {
        self.tables.history_seq = self.tables.history_seq.max(entry.seq);
        self.put_history(entry)
    }

    fn put_evaluation(&mut self, evaluation: &Evaluation) -> Result<()> {
        let t = &mut self.tables;
        insert_nested(&mut t.evals_by_job, &evaluation.job_id, evaluation.id.clone());
        t.evals.insert(evaluation.id.clone(), Arc::new(evaluation.clone()));
        Ok(())
    }

    fn delete_evaluation(&mut self, evaluation: &Evaluation) -> Result<()> {
        let t = &mut self.tables;
        t.evals.remove(&evaluation.id);
        remove_nested(&mut t.evals_by_job, &evaluation.job_id, &evaluation.id);
        Ok(())
    }

    fn put_execution(&mut self, before: Option<&Execution>, next: &Execution) -> Result<()> {
        let t = &mut self.tables;
        if let Some(node) = before.and_then(|b| b.node_id.as_ref()) {
            remove_nested(&mut t.execs_by_node, node, &next.id);
        }
        if let Some(node) = &next.node_id {
            insert_nested(&mut t.execs_by_node, node, next.id.clone());
        }
        insert_nested(&mut t.execs_by_job, &next.job_id, next.id.clone());
        t.execs.insert(next.id.clone(), Arc::new(next.clone()));
        Ok(())
    }

    fn append_log(&mut self, operation: Operation, object: LogObject, now: Timestamp) -> Result<()> {
        self.log.append(operation, object, now);
        Ok(())
    }
}

/// The entries of `index` past `after` in `order` (none when the index is absent).
fn page_of(
    index: Option<&TimeIndex>,
    after: Option<(Timestamp, JobId)>,
    order: SortOrder,
) -> Box<dyn Iterator<Item = Result<(Timestamp, JobId)>> + '_> {
    let Some(index) = index else {
        return Box::new(std::iter::empty());
    };
    let entries: Box<dyn Iterator<Item = &(Timestamp, JobId)>> = match (order, after) {
        (SortOrder::Ascending, None) => Box::new(index.iter()),
        (SortOrder::Ascending, Some(k)) => Box::new(index.range((Bound::Excluded(k), Bound::Unbounded))),
        (SortOrder::Descending, None) => Box::new(index.iter().rev()),
        (SortOrder::Descending, Some(k)) => Box::new(index.range((Bound::Unbounded, Bound::Excluded(k))).rev()),
    };
    Box::new(entries.cloned().map(Ok))
}

/// The job store of a requester node, in memory.
#[derive(Clone)]
pub struct MemJobStore {
    db: Arc<Db<JobTables>>,
}

impl Default for MemJobStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemJobStore {
    /// An empty store on the wall clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// An empty store that takes its timestamps from `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        MemJobStore { db: Db::new(clock) }
    }
}

#[async_trait]
impl JobStore for MemJobStore {
    async fn create_job(&self, job: Job) -> Result<Job> {
        self.db.write(|s, now| job_write::create_job(s, job, now)).await
    }

    async fn get_job(&self, id: &JobId) -> Result<Job> {
        let snap = self.db.read()?;
        match snap.tables.jobs.get(id) {
            Some(job) => Ok(Job::clone(job)),
            None => Err(rules::missing_job(id, snap.tables.purged.get(id).cloned())),
        }
    }

    async fn get_job_by_name(&self, namespace: &str, name: &str) -> Result<Job> {
        rules::check_namespace(namespace)?;
        let snap = self.db.read()?;
        let id = snap
            .tables
            .by_name
            .get(&(namespace.to_owned(), name.to_owned()))
            .ok_or_else(|| StoreError::not_found(ObjectKind::JobName, format!("{namespace}/{name}")))?;
        Ok(Job::clone(snap.tables.job(id)?))
    }

    async fn get_job_by_prefix(&self, prefix: &str) -> Result<Job> {
        let start = JobId::new(prefix)?;
        let snap = self.db.read()?;
        if let Some(job) = snap.tables.jobs.get(&start) {
            return Ok(Job::clone(job));
        }
        let matches = snap
            .tables
            .jobs
            .range(start..)
            .take_while(|(id, _)| id.as_str().starts_with(prefix))
            .take(rules::PREFIX_MATCHES)
            .map(|(_, j)| Job::clone(j));
        rules::job_by_prefix(prefix, matches.collect())
    }

    async fn update_job(&self, job: Job) -> Result<Job> {
        self.db.write(|s, now| job_write::update_job(s, job, now)).await
    }

    async fn get_job_versions(&self, id: &JobId) -> Result<Vec<Job>> {
        let snap = self.db.read()?;
        snap.tables.job(id)?;
        Ok(snap.tables.versions_of(id))
    }

    async fn get_job_version(&self, id: &JobId, version: u64) -> Result<Job> {
        let snap = self.db.read()?;
        snap.tables.job(id)?;
        snap.tables
            .versions
            .get(id)
            .and_then(|v| v.get(&version))
            .map(|j| Job::clone(j))
            .ok_or_else(|| StoreError::not_found(ObjectKind::JobVersion, format!("{id}@{version}")))
    }

    async fn update_job_state(&self, request: UpdateJobStateRequest) -> Result<Job> {
        self.db.write(|s, now| job_write::update_job_state(s, &request, now)).await
    }

    async fn delete_job(&self, id: &JobId) -> Result<()> {
        self.db.write(|s, now| job_write::delete_job(s, id, now)).await
    }

    async fn add_job_event(&self, id: &JobId, events: Vec<Event>) -> Result<()> {
        self.db.write(|s, now| job_write::add_job_events(s, id, events, now)).await
    }

    async fn get_job_history(&self, id: &JobId, query: &HistoryQuery) -> Result<HistoryPage> {
        let mut page = rules::HistoryPager::new(query)?;
        let snap = self.db.read()?;
        let job = snap.tables.job(id)?;
        if let Some(history) = snap.tables.history.get(id) {
            for (_, entry) in history.range((Bound::Excluded(page.after()), Bound::Unbounded)) {
                if !page.offer(JobHistory::clone(entry)) {
                    break;
                }
            }
        }
        Ok(page.finish(job.state()))
    }

    async fn list_jobs(&self, query: &JobQuery) -> Result<JobPage> {
        let mut page = rules::JobPager::new(query)?;
        let snap = self.db.read()?;
        let t = &snap.tables;
        let scans = page.scans().iter().map(|scan| page_of(t.range(scan), page.after(), query.order)).collect();
        for entry in rules::merge_ordered(scans, query.order) {
            let (time, id) = entry?;
            if !page.offer(time, &id, t.jobs.get(&id).map(|j| j.as_ref())) {
                break;
            }
        }
        Ok(page.finish())
    }

    async fn get_in_progress_jobs(&self, job_type: Option<JobType>) -> Result<Vec<Job>> {
        let snap = self.db.read()?;
        let t = &snap.tables;
        let ids: Vec<&JobId> = match job_type {
            Some(ty) => t.in_progress.get(&ty).into_iter().flat_map(|s| s.iter()).collect(),
            None => t.in_progress.values().flat_map(|s| s.iter()).collect(),
        };
        let jobs: Vec<Job> = ids.into_iter().filter_map(|id| t.jobs.get(id).map(|j| Job::clone(j))).collect();
        Ok(rules::in_id_order(jobs))
    }

    async fn create_evaluation(&self, evaluation: Evaluation) -> Result<Evaluation> {
        self.db.write(|s, now| job_write::create_evaluation(s, evaluation, now)).await
    }

    async fn get_evaluation(&self, id: &EvaluationId) -> Result<Evaluation> {
        let snap = self.db.read()?;
        snap.tables
            .evals
            .get(id)
            .map(|e| Evaluation::clone(e))
            .ok_or_else(|| StoreError::not_found(ObjectKind::Evaluation, id))
    }

    async fn update_evaluation(&self, evaluation: Evaluation) -> Result<Evaluation> {
        self.db.write(|s, now| job_write::update_evaluation(s, evaluation, now)).await
    }

    async fn delete_evaluation(&self, id: &EvaluationId) -> Result<()> {
        self.db.write(|s, now| job_write::delete_evaluation(s, id, now)).await
    }

    async fn get_evaluations(&self, job_id: &JobId) -> Result<Vec<Evaluation>> {
        let snap = self.db.read()?;
        snap.tables.job(job_id)?;
        Ok(snap.tables.evaluations_of(job_id))
    }

    async fn create_execution(&self, execution: Execution) -> Result<Execution> {
        self.db.write(|s, now| job_write::create_execution(s, execution, now)).await
    }

    async fn get_execution(&self, id: &ExecutionId) -> Result<Execution> {
        let snap = self.db.read()?;
        snap.tables
            .execs
            .get(id)
            .map(|e| Execution::clone(e))
            .ok_or_else(|| StoreError::not_found(ObjectKind::Execution, id))
    }

    async fn update_execution(&self, request: UpdateExecutionRequest) -> Result<Execution> {
        self.db.write(|s, now| job_write::update_execution(s, &request, now)).await
    }

    async fn get_executions_for_job(&self, job_id: &JobId) -> Result<Vec<Execution>> {
        let snap = self.db.read()?;
        Ok(snap.tables.sorted_execs(snap.tables.execs_by_job.get(job_id)))
    }

    async fn get_executions_for_node(&self, node_id: &NodeId) -> Result<Vec<Execution>> {
        let snap = self.db.read()?;
        Ok(snap.tables.sorted_execs(snap.tables.execs_by_node.get(node_id)))
    }

    async fn enqueue(&self, queue: &str, job: Job) -> Result<Job> {
        self.db.write(|s, now| job_write::enqueue(s, queue, job, now)).await
    }

    async fn grab_next(&self, queue: &str) -> Result<Option<Job>> {
        self.db.write(|s, now| job_write::grab_next(s, queue, now)).await
    }

    async fn finish(&self, id: &JobId, outcome: JobOutcome, output_files: Vec<String>) -> Result<Job> {
        self.db.write(|s, now| job_write::finish(s, id, outcome, output_files, now)).await
    }

    async fn touch_job(&self, id: &JobId) -> Result<Job> {
        self.db.write(|s, now| job_write::touch_job(s, id, now)).await
    }

    async fn expire(&self, idle_for: Duration) -> Result<Vec<JobId>> {
        let (cutoff, message) = rules::expire_cutoff(idle_for, self.db.clock.now());
        let message = &message;
        rules::expire_in_batches(|| self.db.write(move |s, now| job_write::expire_batch(s, cutoff, message, now))).await
    }

    async fn purgeable_jobs(
        &self,
        before: Timestamp,
        after: Option<(Timestamp, JobId)>,
        limit: usize,
    ) -> Result<Vec<Job>> {
        let mut candidates = rules::PurgeCandidates::new(before, limit)?;
        let snap = self.db.read()?;
        let t = &snap.tables;
        let scans = rules::PurgeCandidates::scans()
            .iter()
            .map(|scan| page_of(t.range(scan), after.clone(), SortOrder::Ascending))
            .collect();
        for entry in rules::merge_ordered(scans, SortOrder::Ascending) {
            let (time, id) = entry?;
            if !candidates.offer(time, || Ok::<_, StoreError>(t.jobs.get(&id).map(|j| Job::clone(j))))? {
                break;
            }
        }
        Ok(candidates.finish())
    }

    async fn job_bundle(&self, id: &JobId) -> Result<JobBundle> {
        self.db.read()?.tables.bundle(id)
    }

    async fn purge_jobs(&self, jobs: &[(JobId, JobStamp)], archive: &str) -> Result<u64> {
        self.db.write(|s, now| job_write::purge_jobs(s, jobs, archive, now)).await
    }

    async fn load_jobs(&self, bundles: Vec<JobBundle>) -> Result<()> {
        self.db.write(|s, _| job_write::load_jobs(s, &bundles)).await
    }

    async fn load_purged(&self, entries: Vec<(JobId, String)>) -> Result<()> {
        self.db.write(|s, _| job_write::load_purged(s, &entries)).await
    }

    async fn list_purged(&self, after: Option<&JobId>, limit: usize) -> Result<Vec<(JobId, String)>> {
        rules::check_limit(limit)?;
        let snap = self.db.read()?;
        let purged = &snap.tables.purged;
        let rest = match after {
            Some(a) => purged.range((std::ops::Bound::Excluded(a.clone()), std::ops::Bound::Unbounded)),
            None => purged.range::<_, JobId>(..),
        };
        Ok(rest.take(limit).map(|(id, archive)| (id.clone(), archive.clone())).collect())
    }

    async fn sync(&self) -> Result<()> {
        self.db.read().map(|_| ())
    }

    fn store_id(&self) -> String {
        self.db.id.clone()
    }

    fn event_log(&self) -> Arc<dyn EventLog> {
        Arc::new(MemEventLog(Arc::clone(&self.db)))
    }

    async fn check(&self) -> Result<CheckReport> {
        Ok(check(&*self.db.read()?))
    }

    async fn close(&self) -> Result<()> {
        self.db.close();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The check finds an index entry a job should have and lacks, and one it should
    /// not have (the two ways the indexes and `rules::job_indexes` can disagree).
    #[tokio::test]
    async fn the_check_finds_missing_and_stale_index_entries() {
        let store = MemJobStore::new();
        let job = store.enqueue("q", Job::new(JobId::new("j1").unwrap(), "n")).await.unwrap();
        assert!(store.check().await.unwrap().is_ok());
        store
            .db
            .write(|s, _| {
                let t = &mut s.tables;
                t.state_modify.clear();
                t.idle.insert((Timestamp::from_nanos(1), job.id.clone()));
                t.execs_by_node.insert(NodeId::new("n1").unwrap(), OrdSet::unit(ExecutionId::new("ghost").unwrap()));
                Ok(())
            })
            .await
            .unwrap();
        let report = store.check().await.unwrap();
        let text: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
        assert!(text.iter().any(|p| p.contains("missing index entry StateModified")), "{text:?}");
        assert!(text.iter().any(|p| p.contains("Idle(") && p.contains("stale entry")), "{text:?}");
        assert!(text.iter().any(|p| p.contains("executions by node") && p.contains("ghost")), "{text:?}");
        assert_eq!(report.problems.len(), 3, "{text:?}");
    }
}
