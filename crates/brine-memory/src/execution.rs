//! `MemExecutionStore`: the compute node's execution store in memory.

use std::sync::Arc;

use async_trait::async_trait;
use brine_store::model::{Event, Execution, ExecutionId, ExecutionState, JobId, LogObject, Operation, Timestamp};
use brine_store::{
    rules, CheckReport, Clock, EventLog, ExecutionStore, ExecutionTx, ObjectKind, RepairReport, Result, StoreError,
    SystemClock, UpdateExecutionRequest,
};
use imbl::{OrdMap, OrdSet, Vector};

use crate::db::{Db, MemEventLog, Snapshot, WriteTx};

/// The execution tables: records, history, both indexes and the per-state counters.
#[derive(Clone, Default)]
pub(crate) struct ExecTables {
    executions: OrdMap<ExecutionId, Arc<Execution>>,
    events: OrdMap<ExecutionId, Vector<Event>>,
    by_job: OrdMap<JobId, OrdSet<ExecutionId>>,
    by_state: [OrdSet<ExecutionId>; 9],
    counts: [u64; 9],
}

type State = Snapshot<ExecTables>;

fn slot(state: ExecutionState) -> usize {
    usize::from(state.code())
}

impl ExecTables {
    fn get(&self, id: &ExecutionId) -> Result<&Arc<Execution>> {
        self.executions.get(id).ok_or_else(|| StoreError::not_found(ObjectKind::Execution, id))
    }

    fn index(&mut self, e: &Execution) {
        self.by_job.entry(e.job_id.clone()).or_default().insert(e.id.clone());
        self.by_state[slot(e.state())].insert(e.id.clone());
        self.counts[slot(e.state())] += 1;
    }

    fn unindex(&mut self, e: &Execution) {
        if let Some(set) = self.by_job.get_mut(&e.job_id) {
            set.remove(&e.id);
            if set.is_empty() {
                self.by_job.remove(&e.job_id);
            }
        }
        self.by_state[slot(e.state())].remove(&e.id);
        // A counter already at 0 is wrong (a repair sets it right); it stays at 0.
        self.counts[slot(e.state())] = self.counts[slot(e.state())].saturating_sub(1);
    }

    fn collect(&self, ids: impl Iterator<Item = ExecutionId>) -> Vec<Execution> {
        rules::newest_first(ids.filter_map(|id| self.executions.get(&id).map(|e| Execution::clone(e))).collect())
    }
}

fn create(s: &mut State, execution: Execution, events: Vec<Event>, now: Timestamp) -> Result<Execution> {
    let execution = rules::new_execution(execution, now)?;
    if s.tables.executions.contains_key(&execution.id) {
        return Err(StoreError::already_exists(ObjectKind::Execution, &execution.id));
    }
    s.tables.index(&execution);
    if !events.is_empty() {
        s.tables.events.insert(execution.id.clone(), events.iter().cloned().collect());
    }
    s.tables.executions.insert(execution.id.clone(), Arc::new(execution.clone()));
    let object = LogObject::Execution { current: Some(Box::new(execution.clone())), previous: None, events };
    s.log.append(Operation::Create, object, now);
    Ok(execution)
}

fn load(s: &mut State, executions: Vec<(Execution, Vec<Event>)>) -> Result<()> {
    rules::loaded_executions(&executions)?;
    for (execution, events) in executions {
        if s.tables.executions.contains_key(&execution.id) {
            return Err(StoreError::already_exists(ObjectKind::Execution, &execution.id));
        }
        s.tables.index(&execution);
        if !events.is_empty() {
            s.tables.events.insert(execution.id.clone(), events.into_iter().collect());
        }
        s.tables.executions.insert(execution.id.clone(), Arc::new(execution));
    }
    Ok(())
}

fn update(s: &mut State, request: UpdateExecutionRequest, now: Timestamp) -> Result<Execution> {
    let current = Arc::clone(s.tables.get(&request.execution_id)?);
    let next = rules::update_execution(&current, &request, now)?;
    s.tables.unindex(&current);
    s.tables.index(&next);
    s.tables.executions.insert(next.id.clone(), Arc::new(next.clone()));
    if !request.events.is_empty() {
        s.tables.events.entry(next.id.clone()).or_default().extend(request.events.iter().cloned());
    }
    let object = LogObject::Execution {
        current: Some(Box::new(next.clone())),
        previous: Some(Box::new(Execution::clone(&current))),
        events: request.events,
    };
    s.log.append(Operation::Update, object, now);
    Ok(next)
}

fn add_events(s: &mut State, id: &ExecutionId, events: Vec<Event>, now: Timestamp) -> Result<()> {
    let current = Arc::clone(s.tables.get(id)?);
    s.tables.events.entry(id.clone()).or_default().extend(events.iter().cloned());
    if let Some(next) = rules::events_added(&current, now) {
        s.tables.executions.insert(id.clone(), Arc::new(next.clone()));
        let object = LogObject::Execution {
            current: Some(Box::new(next)),
            previous: Some(Box::new(Execution::clone(&current))),
            events,
        };
        s.log.append(Operation::Update, object, now);
    }
    Ok(())
}

fn delete(s: &mut State, id: &ExecutionId, now: Timestamp) -> Result<()> {
    let current = Arc::clone(s.tables.get(id)?);
    s.tables.unindex(&current);
    s.tables.executions.remove(id);
    s.tables.events.remove(id);
    let object =
        LogObject::Execution { current: None, previous: Some(Box::new(Execution::clone(&current))), events: vec![] };
    s.log.append(Operation::Delete, object, now);
    Ok(())
}

/// Puts the indexes, counters and history right against the records (see
/// [`brine_store::RepairReport`]).
/// The consistency check of an execution store: the rules `repair` puts right, reported
/// instead (each record in its job's and its state's index, each index entry on a
/// matching record, counters equal to the state index and the records, history only of
/// stored executions), and the event log.
fn check(s: &State) -> CheckReport {
    let t = &s.tables;
    let mut report = CheckReport::default();
    let mut counts = [0u64; 9];
    for (id, e) in &t.executions {
        report.keys_checked += 1;
        counts[slot(e.state())] += 1;
        if !t.by_job.get(&e.job_id).is_some_and(|set| set.contains(id)) {
            report.problem("executions", id.as_str(), format!("missing from the job index under job {}", e.job_id));
        }
        if !t.by_state[slot(e.state())].contains(id) {
            report.problem("executions", id.as_str(), format!("missing from the state index under {}", e.state()));
        }
    }
    for (job, ids) in &t.by_job {
        for id in ids {
            report.keys_checked += 1;
            match t.executions.get(id) {
                None => report.problem("by_job", format!("{job}/{id}"), format!("points at missing execution {id}")),
                Some(e) if e.job_id != *job => report.problem(
                    "by_job",
                    format!("{job}/{id}"),
                    format!("execution {id} belongs to job {}", e.job_id),
                ),
                Some(_) => {}
            }
        }
    }
    for state in ExecutionState::ALL {
        for id in &t.by_state[slot(state)] {
            report.keys_checked += 1;
            match t.executions.get(id) {
                None => {
                    report.problem("by_state", format!("{state}/{id}"), format!("points at missing execution {id}"))
                }
                Some(e) if e.state() != state => report.problem(
                    "by_state",
                    format!("{state}/{id}"),
                    format!("execution is in state {}, indexed under {state}", e.state()),
                ),
                Some(_) => {}
            }
        }
        let (stored, indexed) = (t.counts[slot(state)], t.by_state[slot(state)].len() as u64);
        if stored != indexed || stored != counts[slot(state)] {
            report.problem(
                "counts",
                state.as_str(),
                format!(
                    "counter of {state} is {stored}, the state index has {indexed}, the records {}",
                    counts[slot(state)]
                ),
            );
        }
    }
    for id in t.events.keys() {
        report.keys_checked += 1;
        if !t.executions.contains_key(id) {
            report.problem("events_by_execution", id.as_str(), format!("history of missing execution {id}"));
        }
    }
    s.log.check(&mut report);
    report
}

fn repair(t: &mut ExecTables) -> RepairReport {
    let mut report = RepairReport::default();
    let records: Vec<Arc<Execution>> = t.executions.values().cloned().collect();
    report.keys_scanned += records.len() as u64;
    for e in &records {
        if !t.by_job.get(&e.job_id).is_some_and(|set| set.contains(&e.id)) {
            t.by_job.entry(e.job_id.clone()).or_default().insert(e.id.clone());
            report.missing_index_entries += 1;
        }
        if !t.by_state[slot(e.state())].contains(&e.id) {
            t.by_state[slot(e.state())].insert(e.id.clone());
            report.missing_index_entries += 1;
        }
    }
    let by_job: Vec<(JobId, ExecutionId)> =
        t.by_job.iter().flat_map(|(job, ids)| ids.iter().map(move |id| (job.clone(), id.clone()))).collect();
    report.keys_scanned += by_job.len() as u64;
    for (job, id) in by_job {
        if t.executions.get(&id).is_none_or(|e| e.job_id != job) {
            if let Some(set) = t.by_job.get_mut(&job) {
                set.remove(&id);
                if set.is_empty() {
                    t.by_job.remove(&job);
                }
            }
            report.orphan_index_entries += 1;
        }
    }
    for state in ExecutionState::ALL {
        let ids: Vec<ExecutionId> = t.by_state[slot(state)].iter().cloned().collect();
        report.keys_scanned += ids.len() as u64;
        for id in ids {
            if t.executions.get(&id).is_none_or(|e| e.state() != state) {
                t.by_state[slot(state)].remove(&id);
                report.orphan_index_entries += 1;
            }
        }
    }
    let histories: Vec<(ExecutionId, usize)> = t.events.iter().map(|(id, v)| (id.clone(), v.len())).collect();
    report.keys_scanned += histories.len() as u64;
    for (id, n) in histories {
        if !t.executions.contains_key(&id) {
            t.events.remove(&id);
            report.orphan_history_events += n as u64;
        }
    }
    for state in ExecutionState::ALL {
        let indexed = t.by_state[slot(state)].len() as u64;
        if t.counts[slot(state)] != indexed {
            t.counts[slot(state)] = indexed;
            report.counters_fixed += 1;
        }
    }
    report
}

/// The execution store of a compute node, in memory.
#[derive(Clone)]
pub struct MemExecutionStore {
    db: Arc<Db<ExecTables>>,
}

impl Default for MemExecutionStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemExecutionStore {
    /// An empty store on the wall clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// An empty store that takes its timestamps from `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        MemExecutionStore { db: Db::new(clock) }
    }

    /// Writes `fault` straight into the tables, bypassing every rule: for tests of
    /// check and repair.
    #[cfg(feature = "fault-injection")]
    pub async fn inject(&self, fault: brine_store::Fault) -> Result<()> {
        use brine_store::Fault;
        let mut tx = self.db.begin().await?;
        let t = &mut tx.state.tables;
        match fault {
            Fault::DropStateIndexEntry(id) => {
                let state = t.get(&id)?.state();
                t.by_state[slot(state)].remove(&id);
            }
            Fault::DropJobIndexEntry(id) => {
                let job = t.get(&id)?.job_id.clone();
                if let Some(set) = t.by_job.get_mut(&job) {
                    set.remove(&id);
                }
            }
            Fault::OrphanStateIndexEntry(state, id) => {
                t.by_state[slot(state)].insert(id);
            }
            Fault::OrphanJobIndexEntry(job, id) => {
                t.by_job.entry(job).or_default().insert(id);
            }
            Fault::OrphanHistory(id, events) => {
                t.events.entry(id).or_default().extend(events);
            }
            Fault::SetCounter(state, n) => t.counts[slot(state)] = n,
            other => return Err(StoreError::Unsupported { what: format!("injecting {other:?}") }),
        }
        tx.commit()
    }
}

#[async_trait]
impl ExecutionStore for MemExecutionStore {
    async fn create_execution(&self, execution: Execution, events: Vec<Event>) -> Result<Execution> {
        self.db.write(|s, now| create(s, execution, events, now)).await
    }

    async fn get_execution(&self, id: &ExecutionId) -> Result<Execution> {
        Ok(Execution::clone(self.db.read()?.tables.get(id)?))
    }

    async fn get_executions(&self, job_id: &JobId) -> Result<Vec<Execution>> {
        let snap = self.db.read()?;
        let ids = snap.tables.by_job.get(job_id).into_iter().flat_map(|set| set.iter().cloned());
        Ok(snap.tables.collect(ids))
    }

    async fn get_live_executions(&self) -> Result<Vec<Execution>> {
        let snap = self.db.read()?;
        let t = &snap.tables;
        let ids = ExecutionState::LIVE.iter().flat_map(|st| t.by_state[slot(*st)].iter().cloned());
        Ok(t.collect(ids))
    }

    async fn get_executions_in_state(
        &self,
        state: ExecutionState,
        after: Option<&ExecutionId>,
        limit: usize,
    ) -> Result<Vec<Execution>> {
        rules::check_limit(limit)?;
        let snap = self.db.read()?;
        let set = &snap.tables.by_state[slot(state)];
        let lower = after.map_or(std::ops::Bound::Unbounded, |a| std::ops::Bound::Excluded(a.clone()));
        Ok(set
            .range((lower, std::ops::Bound::Unbounded))
            .take(limit)
            .filter_map(|id| snap.tables.executions.get(id).map(|e| Execution::clone(e)))
            .collect())
    }

    async fn get_execution_count(&self, state: ExecutionState) -> Result<u64> {
        Ok(self.db.read()?.tables.counts[slot(state)])
    }

    async fn update_execution_state(&self, request: UpdateExecutionRequest) -> Result<Execution> {
        self.db.write(|s, now| update(s, request, now)).await
    }

    async fn add_execution_event(&self, id: &ExecutionId, events: Vec<Event>) -> Result<()> {
        self.db.write(|s, now| add_events(s, id, events, now)).await
    }

    async fn get_execution_events(&self, id: &ExecutionId) -> Result<Vec<Event>> {
        let snap = self.db.read()?;
        snap.tables.get(id)?;
        Ok(snap.tables.events.get(id).map(|v| v.iter().cloned().collect()).unwrap_or_default())
    }

    async fn delete_execution(&self, id: &ExecutionId) -> Result<()> {
        self.db.write(|s, now| delete(s, id, now)).await
    }

    async fn load_executions(&self, executions: Vec<(Execution, Vec<Event>)>) -> Result<()> {
        self.db.write(|s, _| load(s, executions)).await
    }

    async fn begin_tx(&self) -> Result<Box<dyn ExecutionTx>> {
        Ok(Box::new(MemExecutionTx { tx: self.db.begin_tx().await?, steps: rules::TxSteps::default() }))
    }

    fn event_log(&self) -> Arc<dyn EventLog> {
        Arc::new(MemEventLog(Arc::clone(&self.db)))
    }

    async fn repair(&self, dry_run: bool) -> Result<RepairReport> {
        let mut tx = self.db.begin().await?;
        let report = repair(&mut tx.state.tables);
        if !dry_run && report.repaired() > 0 {
            tx.commit()?;
        }
        Ok(report)
    }

    async fn check(&self) -> Result<CheckReport> {
        Ok(check(&*self.db.read()?))
    }

    async fn compact(&self) -> Result<()> {
        self.db.read().map(|_| ())
    }

    fn unclean_shutdown(&self) -> bool {
        false
    }

    async fn sync(&self) -> Result<()> {
        self.db.read().map(|_| ())
    }

    fn store_id(&self) -> String {
        self.db.id.clone()
    }

    async fn close(&self) -> Result<()> {
        self.db.close();
        Ok(())
    }
}

/// A transaction on a [`MemExecutionStore`]: a private snapshot under the writer lock.
struct MemExecutionTx {
    tx: WriteTx<ExecTables>,
    steps: rules::TxSteps,
}

#[async_trait]
impl ExecutionTx for MemExecutionTx {
    async fn create_execution(&mut self, execution: Execution, events: Vec<Event>) -> Result<Execution> {
        let now = self.tx.now();
        let state = &mut self.tx.state;
        self.steps.step(|| create(state, execution, events, now))
    }

    async fn get_execution(&mut self, id: &ExecutionId) -> Result<Execution> {
        Ok(Execution::clone(self.tx.state.tables.get(id)?))
    }

    async fn update_execution_state(&mut self, request: UpdateExecutionRequest) -> Result<Execution> {
        let now = self.tx.now();
        let state = &mut self.tx.state;
        self.steps.step(|| update(state, request, now))
    }

    async fn add_execution_event(&mut self, id: &ExecutionId, events: Vec<Event>) -> Result<()> {
        let now = self.tx.now();
        let state = &mut self.tx.state;
        self.steps.step(|| add_events(state, id, events, now))
    }

    async fn delete_execution(&mut self, id: &ExecutionId) -> Result<()> {
        let now = self.tx.now();
        let state = &mut self.tx.state;
        self.steps.step(|| delete(state, id, now))
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        self.steps.check()?;
        self.tx.commit()
    }

    async fn rollback(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}
