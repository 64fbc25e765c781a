//! `MemJobStore`: the requester node's job store in memory.

use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use brine_store::model::{
    Evaluation, EvaluationId, Event, Execution, ExecutionId, HistoryLevel, Job, JobHistory, JobId, JobState, JobType,
    LogObject, NodeId, Operation, Timestamp,
};
use brine_store::{
    rules, Clock, EventLog, HistoryPage, HistoryQuery, JobBundle, JobOutcome, JobPage, JobQuery, JobSort, JobStamp,
    JobStore, ObjectKind, Result, SortOrder, StoreError, SystemClock, UpdateExecutionRequest, UpdateJobStateRequest,
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

fn expirable(job: &Job) -> bool {
    job.queue.is_some() && matches!(job.state(), JobState::Queued | JobState::Running)
}

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

    /// Adds or removes every index entry of `job`.
    fn index(&mut self, job: &Job, add: bool) {
        let id = job.id.clone();
        let ns = &job.namespace;
        let created = (job.create_time, id.clone());
        let modified = (job.modify_time, id.clone());
        if add {
            self.by_name.insert((ns.clone(), job.name.clone()), id.clone());
            self.by_create.insert(created.clone());
            self.by_modify.insert(modified.clone());
            insert_nested(&mut self.ns_create, ns, created.clone());
            insert_nested(&mut self.ns_modify, ns, modified.clone());
            insert_nested(&mut self.state_create, &job.state(), created.clone());
            insert_nested(&mut self.state_modify, &job.state(), modified.clone());
            for (k, v) in &job.labels {
                let label = (k.clone(), v.clone());
                insert_nested(&mut self.label_create, &label, created.clone());
                insert_nested(&mut self.label_modify, &label, modified.clone());
            }
            if !job.state().is_terminal() {
                insert_nested(&mut self.in_progress, &job.job_type, id.clone());
            }
            if let (Some(q), JobState::Queued) = (&job.queue, job.state()) {
                insert_nested(&mut self.queued, q, created);
            }
            if expirable(job) {
                self.idle.insert((job.last_accessed_time, id));
            }
        } else {
            self.by_name.remove(&(ns.clone(), job.name.clone()));
            self.by_create.remove(&created);
            self.by_modify.remove(&modified);
            remove_nested(&mut self.ns_create, ns, &created);
            remove_nested(&mut self.ns_modify, ns, &modified);
            remove_nested(&mut self.state_create, &job.state(), &created);
            remove_nested(&mut self.state_modify, &job.state(), &modified);
            for (k, v) in &job.labels {
                let label = (k.clone(), v.clone());
                remove_nested(&mut self.label_create, &label, &created);
                remove_nested(&mut self.label_modify, &label, &modified);
            }
            remove_nested(&mut self.in_progress, &job.job_type, &id);
            if let Some(q) = &job.queue {
                remove_nested(&mut self.queued, q, &created);
            }
            self.idle.remove(&(job.last_accessed_time, id));
        }
    }

    fn history(
        &mut self,
        job: &Job,
        level: HistoryLevel,
        execution: Option<&ExecutionId>,
        event: Event,
        now: Timestamp,
    ) {
        self.history_seq += 1;
        let entry = JobHistory {
            seq: self.history_seq,
            level,
            job_id: job.id.clone(),
            job_version: job.version,
            execution_id: execution.cloned(),
            event,
            time: now,
        };
        self.history.entry(job.id.clone()).or_default().insert(entry.seq, Arc::new(entry));
    }

    fn sorted_execs(&self, ids: Option<&OrdSet<ExecutionId>>) -> Vec<Execution> {
        let mut out: Vec<Execution> = ids
            .into_iter()
            .flat_map(|s| s.iter())
            .filter_map(|id| self.execs.get(id).map(|e| Execution::clone(e)))
            .collect();
        out.sort_by(|a, b| b.modify_time.cmp(&a.modify_time).then_with(|| a.id.cmp(&b.id)));
        out
    }
}

fn log_job(
    s: &mut State,
    op: Operation,
    previous: Option<&Job>,
    current: Option<&Job>,
    events: Vec<Event>,
    now: Timestamp,
) {
    let object = LogObject::Job {
        current: current.map(|j| Box::new(j.clone())),
        previous: previous.map(|j| Box::new(j.clone())),
        events,
    };
    s.log.append(op, object, now);
}

fn log_exec(
    s: &mut State,
    op: Operation,
    previous: Option<&Execution>,
    current: Option<&Execution>,
    events: Vec<Event>,
    now: Timestamp,
) {
    let object = LogObject::Execution {
        current: current.map(|e| Box::new(e.clone())),
        previous: previous.map(|e| Box::new(e.clone())),
        events,
    };
    s.log.append(op, object, now);
}

fn log_eval(s: &mut State, op: Operation, previous: Option<&Evaluation>, current: Option<&Evaluation>, now: Timestamp) {
    let object = LogObject::Evaluation {
        current: current.map(|e| Box::new(e.clone())),
        previous: previous.map(|e| Box::new(e.clone())),
    };
    s.log.append(op, object, now);
}

fn create_job(s: &mut State, job: Job, now: Timestamp) -> Result<Job> {
    let job = rules::new_job(job, now)?;
    let t = &mut s.tables;
    if t.jobs.contains_key(&job.id) {
        return Err(StoreError::already_exists(ObjectKind::Job, &job.id));
    }
    if t.by_name.contains_key(&(job.namespace.clone(), job.name.clone())) {
        return Err(StoreError::already_exists(ObjectKind::JobName, format!("{}/{}", job.namespace, job.name)));
    }
    t.index(&job, true);
    let arc = Arc::new(job.clone());
    t.jobs.insert(job.id.clone(), Arc::clone(&arc));
    t.versions.entry(job.id.clone()).or_default().insert(job.version, arc);
    let event = Event::new("JobSubmission", format!("job submitted in state {}", job.state()), now);
    t.history(&job, HistoryLevel::Job, None, event.clone(), now);
    log_job(s, Operation::Create, None, Some(&job), vec![event], now);
    Ok(job)
}

/// Replaces the stored job with `next`, moving its indexes, and logs the change.
fn replace_job(s: &mut State, current: &Job, next: Job, events: Vec<Event>, now: Timestamp) -> Job {
    let t = &mut s.tables;
    t.index(current, false);
    t.index(&next, true);
    let arc = Arc::new(next.clone());
    t.jobs.insert(next.id.clone(), Arc::clone(&arc));
    t.versions.entry(next.id.clone()).or_default().insert(next.version, arc);
    for event in &events {
        t.history(&next, HistoryLevel::Job, None, event.clone(), now);
    }
    log_job(s, Operation::Update, Some(current), Some(&next), events, now);
    next
}

/// Moves a finished job's modify time after a write to what belongs to it
/// (`rules::dependent_change`): the record and its modify-time indexes, logged as an
/// update; no new version.
fn dependent_change(s: &mut State, id: &JobId, now: Timestamp) -> Result<()> {
    let current = Arc::clone(s.tables.job(id)?);
    let Some(next) = rules::dependent_change(&current, now) else { return Ok(()) };
    let t = &mut s.tables;
    t.index(&current, false);
    t.index(&next, true);
    t.jobs.insert(next.id.clone(), Arc::new(next.clone()));
    log_job(s, Operation::Update, Some(&current), Some(&next), Vec::new(), now);
    Ok(())
}

fn update_job_state(s: &mut State, request: &UpdateJobStateRequest, now: Timestamp) -> Result<Job> {
    let current = Arc::clone(s.tables.job(&request.job_id)?);
    let next = rules::update_job_state(&current, request, now)?;
    let mut events = vec![rules::job_state_event(current.state(), &next, now)];
    events.extend(request.events.iter().cloned());
    Ok(replace_job(s, &current, next, events, now))
}

/// Deletes a job with everything it owns; a purge to an archive logs only the job's
/// entry (see the RocksDB backend).
fn delete_job(s: &mut State, id: &JobId, now: Timestamp, purge: Option<&str>) -> Result<()> {
    let current = Arc::clone(s.tables.job(id)?);
    let t = &mut s.tables;
    t.index(&current, false);
    t.jobs.remove(id);
    t.versions.remove(id);
    t.history.remove(id);
    let evals: Vec<EvaluationId> = t.evals_by_job.remove(id).map(|s| s.into_iter().collect()).unwrap_or_default();
    let execs: Vec<ExecutionId> = t.execs_by_job.remove(id).map(|s| s.into_iter().collect()).unwrap_or_default();
    let mut removed_evals = Vec::new();
    for eid in evals {
        removed_evals.extend(t.evals.remove(&eid));
    }
    let mut removed_execs = Vec::new();
    for xid in execs {
        if let Some(e) = t.execs.remove(&xid) {
            if let Some(node) = &e.node_id {
                remove_nested(&mut t.execs_by_node, node, &xid);
            }
            removed_execs.push(e);
        }
    }
    if purge.is_none() {
        for e in removed_evals {
            log_eval(s, Operation::Delete, Some(&e), None, now);
        }
        for e in removed_execs {
            log_exec(s, Operation::Delete, Some(&e), None, vec![], now);
        }
    }
    let events = purge.map(|archive| vec![rules::purge_event(archive, now)]).unwrap_or_default();
    log_job(s, Operation::Delete, Some(&current), None, events, now);
    Ok(())
}

fn page_of(
    index: Option<&TimeIndex>,
    after: Option<(Timestamp, JobId)>,
    order: SortOrder,
) -> Box<dyn Iterator<Item = (Timestamp, JobId)> + '_> {
    let Some(index) = index else {
        return Box::new(std::iter::empty());
    };
    match (order, after) {
        (SortOrder::Ascending, None) => Box::new(index.iter().cloned()),
        (SortOrder::Ascending, Some(k)) => Box::new(index.range((Bound::Excluded(k), Bound::Unbounded)).cloned()),
        (SortOrder::Descending, None) => Box::new(index.iter().rev().cloned()),
        (SortOrder::Descending, Some(k)) => {
            Box::new(index.range((Bound::Unbounded, Bound::Excluded(k))).rev().cloned())
        }
    }
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
        self.db.write(|s, now| create_job(s, job, now)).await
    }

    async fn get_job(&self, id: &JobId) -> Result<Job> {
        let snap = self.db.read()?;
        match (snap.tables.jobs.get(id), snap.tables.purged.get(id)) {
            (Some(job), _) => Ok(Job::clone(job)),
            (None, Some(file)) => Err(StoreError::Archived { id: id.to_string(), file: file.clone() }),
            (None, None) => Err(StoreError::not_found(ObjectKind::Job, id)),
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
        let matches: Vec<&Arc<Job>> = snap
            .tables
            .jobs
            .range(start..)
            .take_while(|(id, _)| id.as_str().starts_with(prefix))
            .take(10)
            .map(|(_, j)| j)
            .collect();
        match matches.as_slice() {
            [] => Err(StoreError::not_found(ObjectKind::Job, prefix)),
            [one] => Ok(Job::clone(one)),
            many => Err(StoreError::MultipleJobsFound {
                prefix: prefix.to_owned(),
                ids: many.iter().map(|j| j.id.clone()).collect(),
            }),
        }
    }

    async fn update_job(&self, job: Job) -> Result<Job> {
        self.db
            .write(|s, now| {
                let current = Arc::clone(s.tables.job(&job.id)?);
                let next = rules::new_job_version(&current, job, now)?;
                if next.name != current.name
                    && s.tables.by_name.contains_key(&(next.namespace.clone(), next.name.clone()))
                {
                    return Err(StoreError::already_exists(
                        ObjectKind::JobName,
                        format!("{}/{}", next.namespace, next.name),
                    ));
                }
                let event = Event::new("JobUpdate", format!("job spec updated to version {}", next.version), now);
                Ok(replace_job(s, &current, next, vec![event], now))
            })
            .await
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
        self.db.write(|s, now| update_job_state(s, &request, now)).await
    }

    async fn delete_job(&self, id: &JobId) -> Result<()> {
        self.db.write(|s, now| delete_job(s, id, now, None)).await
    }

    async fn add_job_event(&self, id: &JobId, events: Vec<Event>) -> Result<()> {
        self.db
            .write(|s, now| {
                let job = Arc::clone(s.tables.job(id)?);
                for event in events {
                    s.tables.history(&job, HistoryLevel::Job, None, event, now);
                }
                dependent_change(s, id, now)
            })
            .await
    }

    async fn get_job_history(&self, id: &JobId, query: &HistoryQuery) -> Result<HistoryPage> {
        rules::check_limit(query.limit)?;
        let after = query.token.as_deref().map(rules::parse_history_token).transpose()?.unwrap_or(0);
        let snap = self.db.read()?;
        let job = snap.tables.job(id)?;
        let mut entries = Vec::new();
        let mut last_examined = after;
        let mut more = false;
        if let Some(history) = snap.tables.history.get(id) {
            for (seq, entry) in history.range((Bound::Excluded(after), Bound::Unbounded)) {
                if !query.matches(entry) {
                    if entries.len() < query.limit {
                        last_examined = *seq;
                    }
                    continue;
                }
                if entries.len() == query.limit {
                    more = true;
                    break;
                }
                last_examined = *seq;
                entries.push(JobHistory::clone(entry));
            }
        }
        let next_token =
            if more || !job.state().is_terminal() { Some(rules::history_token(last_examined)) } else { None };
        Ok(HistoryPage { entries, next_token })
    }

    async fn list_jobs(&self, query: &JobQuery) -> Result<JobPage> {
        rules::check_limit(query.limit)?;
        if let Some(ns) = &query.namespace {
            rules::check_namespace(ns)?;
        }
        let after = query.token.as_deref().map(rules::parse_job_token).transpose()?;
        let snap = self.db.read()?;
        let t = &snap.tables;
        let create = query.sort == JobSort::CreateTime;
        let indexes: Vec<Option<&TimeIndex>> = match rules::job_drive(query) {
            rules::JobDrive::Label { key, values } => {
                let map = if create { &t.label_create } else { &t.label_modify };
                values.into_iter().map(|v| map.get(&(key.to_owned(), v.to_owned()))).collect()
            }
            rules::JobDrive::States(states) => {
                let map = if create { &t.state_create } else { &t.state_modify };
                states.iter().map(|s| map.get(s)).collect()
            }
            rules::JobDrive::Time => vec![match (&query.namespace, create) {
                (None, true) => Some(&t.by_create),
                (None, false) => Some(&t.by_modify),
                (Some(ns), true) => t.ns_create.get(ns),
                (Some(ns), false) => t.ns_modify.get(ns),
            }],
        };
        let scans =
            indexes.into_iter().map(|i| page_of(i, after.clone(), query.order).map(Ok::<_, StoreError>)).collect();
        let mut page = rules::JobPager::new(query);
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
        let mut jobs: Vec<Job> = ids.into_iter().filter_map(|id| t.jobs.get(id).map(|j| Job::clone(j))).collect();
        jobs.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(jobs)
    }

    async fn create_evaluation(&self, evaluation: Evaluation) -> Result<Evaluation> {
        self.db
            .write(|s, now| {
                let eval = rules::new_evaluation(evaluation, now)?;
                s.tables.job(&eval.job_id)?;
                if s.tables.evals.contains_key(&eval.id) {
                    return Err(StoreError::already_exists(ObjectKind::Evaluation, &eval.id));
                }
                insert_nested(&mut s.tables.evals_by_job, &eval.job_id, eval.id.clone());
                s.tables.evals.insert(eval.id.clone(), Arc::new(eval.clone()));
                log_eval(s, Operation::Create, None, Some(&eval), now);
                dependent_change(s, &eval.job_id, now)?;
                Ok(eval)
            })
            .await
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
        evaluation.validate()?;
        self.db
            .write(|s, now| {
                let current = s
                    .tables
                    .evals
                    .get(&evaluation.id)
                    .cloned()
                    .ok_or_else(|| StoreError::not_found(ObjectKind::Evaluation, &evaluation.id))?;
                let next = Evaluation {
                    job_id: current.job_id.clone(),
                    namespace: current.namespace.clone(),
                    create_time: current.create_time,
                    modify_time: now,
                    ..evaluation
                };
                s.tables.evals.insert(next.id.clone(), Arc::new(next.clone()));
                log_eval(s, Operation::Update, Some(&current), Some(&next), now);
                if s.tables.jobs.contains_key(&next.job_id) {
                    dependent_change(s, &next.job_id, now)?;
                }
                Ok(next)
            })
            .await
    }

    async fn delete_evaluation(&self, id: &EvaluationId) -> Result<()> {
        self.db
            .write(|s, now| {
                let current =
                    s.tables.evals.remove(id).ok_or_else(|| StoreError::not_found(ObjectKind::Evaluation, id))?;
                remove_nested(&mut s.tables.evals_by_job, &current.job_id, id);
                log_eval(s, Operation::Delete, Some(&current), None, now);
                if s.tables.jobs.contains_key(&current.job_id) {
                    dependent_change(s, &current.job_id, now)?;
                }
                Ok(())
            })
            .await
    }

    async fn get_evaluations(&self, job_id: &JobId) -> Result<Vec<Evaluation>> {
        let snap = self.db.read()?;
        snap.tables.job(job_id)?;
        Ok(snap.tables.evaluations_of(job_id))
    }

    async fn create_execution(&self, execution: Execution) -> Result<Execution> {
        self.db
            .write(|s, now| {
                let exec = rules::new_execution(execution, now)?;
                let job = Arc::clone(s.tables.job(&exec.job_id)?);
                if s.tables.execs.contains_key(&exec.id) {
                    return Err(StoreError::already_exists(ObjectKind::Execution, &exec.id));
                }
                let t = &mut s.tables;
                insert_nested(&mut t.execs_by_job, &exec.job_id, exec.id.clone());
                if let Some(node) = &exec.node_id {
                    insert_nested(&mut t.execs_by_node, node, exec.id.clone());
                }
                t.execs.insert(exec.id.clone(), Arc::new(exec.clone()));
                let event = Event::new("ExecutionCreated", format!("execution created in state {}", exec.state()), now);
                t.history(&job, HistoryLevel::Execution, Some(&exec.id), event.clone(), now);
                log_exec(s, Operation::Create, None, Some(&exec), vec![event], now);
                dependent_change(s, &exec.job_id, now)?;
                Ok(exec)
            })
            .await
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
        self.db
            .write(|s, now| {
                let t = &mut s.tables;
                let current = t
                    .execs
                    .get(&request.execution_id)
                    .cloned()
                    .ok_or_else(|| StoreError::not_found(ObjectKind::Execution, &request.execution_id))?;
                let next = rules::update_execution(&current, &request, now)?;
                let job = Arc::clone(t.job(&next.job_id)?);
                if current.node_id != next.node_id {
                    if let Some(node) = &current.node_id {
                        remove_nested(&mut t.execs_by_node, node, &next.id);
                    }
                    if let Some(node) = &next.node_id {
                        insert_nested(&mut t.execs_by_node, node, next.id.clone());
                    }
                }
                t.execs.insert(next.id.clone(), Arc::new(next.clone()));
                let mut events = Vec::new();
                if current.state() != next.state() {
                    events.push(rules::execution_state_event(current.state(), &next, now));
                }
                events.extend(request.events.iter().cloned());
                for event in &events {
                    t.history(&job, HistoryLevel::Execution, Some(&next.id), event.clone(), now);
                }
                log_exec(s, Operation::Update, Some(&current), Some(&next), events, now);
                dependent_change(s, &next.job_id, now)?;
                Ok(next)
            })
            .await
    }

    async fn get_executions_for_job(&self, job_id: &JobId) -> Result<Vec<Execution>> {
        let snap = self.db.read()?;
        Ok(snap.tables.sorted_execs(snap.tables.execs_by_job.get(job_id)))
    }

    async fn get_executions_for_node(&self, node_id: &NodeId) -> Result<Vec<Execution>> {
        let snap = self.db.read()?;
        Ok(snap.tables.sorted_execs(snap.tables.execs_by_node.get(node_id)))
    }

    async fn enqueue(&self, queue: &str, mut job: Job) -> Result<Job> {
        rules::check_queue(queue)?;
        job.queue = Some(queue.to_owned());
        job.state.state = JobState::Queued;
        self.db.write(|s, now| create_job(s, job, now)).await
    }

    async fn grab_next(&self, queue: &str) -> Result<Option<Job>> {
        rules::check_queue(queue)?;
        self.db
            .write(|s, now| {
                let Some((_, id)) = s.tables.queued.get(queue).and_then(|q| q.get_min().cloned()) else {
                    return Ok(None);
                };
                let request = UpdateJobStateRequest::new(id, JobState::Running, "grabbed from queue")
                    .expect_states([JobState::Queued]);
                let current = Arc::clone(s.tables.job(&request.job_id)?);
                let mut next = rules::update_job_state(&current, &request, now)?;
                next.grabbed_time = Some(now);
                next.last_accessed_time = now;
                let events = vec![rules::job_state_event(current.state(), &next, now)];
                Ok(Some(replace_job(s, &current, next, events, now)))
            })
            .await
    }

    async fn finish(&self, id: &JobId, outcome: JobOutcome, output_files: Vec<String>) -> Result<Job> {
        let (state, message) = match outcome {
            JobOutcome::Completed => (JobState::Completed, "job completed".to_owned()),
            JobOutcome::Failed { message } => (JobState::Failed, message),
        };
        let request = UpdateJobStateRequest::new(id.clone(), state, message).expect_states([JobState::Running]);
        self.db
            .write(|s, now| {
                let current = Arc::clone(s.tables.job(id)?);
                let mut next = rules::update_job_state(&current, &request, now)?;
                next.output_files = output_files;
                next.last_accessed_time = now;
                let events = vec![rules::job_state_event(current.state(), &next, now)];
                Ok(replace_job(s, &current, next, events, now))
            })
            .await
    }

    async fn touch_job(&self, id: &JobId) -> Result<Job> {
        self.db
            .write(|s, now| {
                let current = Arc::clone(s.tables.job(id)?);
                let next = rules::touch_job(&current, now);
                let t = &mut s.tables;
                if expirable(&current) {
                    t.idle.remove(&(current.last_accessed_time, id.clone()));
                    t.idle.insert((now, id.clone()));
                }
                t.jobs.insert(id.clone(), Arc::new(next.clone()));
                let object = LogObject::Job {
                    current: Some(Box::new(next.clone())),
                    previous: Some(Box::new(Job::clone(&current))),
                    events: Vec::new(),
                };
                s.log.append(Operation::Update, object, now);
                Ok(next)
            })
            .await
    }

    async fn expire(&self, idle_for: Duration) -> Result<Vec<JobId>> {
        let (cutoff, message) = rules::expire_cutoff(idle_for, self.db.clock.now());
        let message = &message;
        rules::expire_in_batches(|| {
            self.db.write(move |s, now| {
                let ids: Vec<JobId> = s
                    .tables
                    .idle
                    .iter()
                    .take_while(|(accessed, _)| *accessed < cutoff)
                    .take(rules::EXPIRE_BATCH)
                    .map(|(_, id)| id.clone())
                    .collect();
                for id in &ids {
                    let request = rules::expire_request(id, message);
                    update_job_state(s, &request, now)?;
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
        let snap = self.db.read()?;
        let t = &snap.tables;
        let scans = rules::purgeable_states()
            .map(|s| page_of(t.state_modify.get(&s), after.clone(), SortOrder::Ascending).map(Ok::<_, StoreError>))
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
        self.db
            .write(|s, now| {
                rules::purge_each(
                    s,
                    jobs,
                    |s, id| Ok(s.tables.jobs.get(id).map(|j| Job::clone(j))),
                    |s, id| {
                        delete_job(s, id, now, Some(archive))?;
                        s.tables.purged.insert(id.clone(), archive.to_owned());
                        Ok(())
                    },
                )
            })
            .await
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

    async fn close(&self) -> Result<()> {
        self.db.close();
        Ok(())
    }
}
