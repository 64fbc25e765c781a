//! `RocksExecutionStore`: the compute node's execution store on RocksDB.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use brine_store::codec::RecordKind;
use brine_store::keys::prefix_end;
use brine_store::model::{Event, Execution, ExecutionId, ExecutionState, JobId, Operation, Timestamp};
use brine_store::{
    rules, CheckReport, EventLog, ExecutionStore, ExecutionTx, ObjectKind, RepairReport, Result, StoreError,
    UpdateExecutionRequest,
};

use crate::cf::{Cf, StoreKind};
use crate::codec::{decode, encode};
use crate::engine::{Engine, Txn};
use crate::layout;
use crate::log::RocksEventLog;
use crate::{OpenError, OpenOptions};
use brine_store::config::StoreConfig;

fn not_found(id: &ExecutionId) -> StoreError {
    StoreError::not_found(ObjectKind::Execution, id)
}

/// Reads an execution inside a write, with its stored bytes (which its log entry
/// carries as the previous value).
fn current(txn: &Txn, id: &ExecutionId) -> Result<(Execution, Vec<u8>)> {
    txn.get_encoded(Cf::Executions, &layout::execution(id))?.ok_or_else(|| not_found(id))
}

fn put_events(txn: &mut Txn, id: &ExecutionId, events: &[Event]) -> Result<()> {
    for event in events {
        let seq = txn.next_history_seq();
        txn.put(Cf::ExecutionEvents, layout::execution_event(id, seq), event)?;
    }
    Ok(())
}

/// Refuses `id` when an execution has it.
fn check_free(txn: &Txn, id: &ExecutionId) -> Result<()> {
    if txn.exists(Cf::Executions, &layout::execution(id))? {
        return Err(StoreError::already_exists(ObjectKind::Execution, id));
    }
    Ok(())
}

/// Stores a new execution `e` (its id checked free, its value encoded as `record`)
/// with its index entries, its count and `events` as its history: what a create and a
/// load both write.
fn put_new(txn: &mut Txn, e: &Execution, record: Vec<u8>, events: &[Event]) -> Result<()> {
    txn.put_raw(Cf::Executions, layout::execution(&e.id), record)?;
    txn.put_raw(Cf::IdxExecutionsByJobId, layout::execution_by_job(&e.job_id, &e.id), Vec::new())?;
    txn.put_raw(Cf::IdxExecutionsByState, layout::execution_by_state(e.state(), &e.id), Vec::new())?;
    txn.count_added(e.state());
    put_events(txn, &e.id, events)
}

fn create(txn: &mut Txn, execution: Execution, events: Vec<Event>, now: Timestamp) -> Result<Execution> {
    txn.adds_space();
    let e = rules::new_execution(execution, now)?;
    check_free(txn, &e.id)?;
    let record = encode(&e);
    txn.append_change(Operation::Create, RecordKind::Execution, (Some(&record), None), &events, now)?;
    put_new(txn, &e, record, &events)?;
    Ok(e)
}

fn load(txn: &mut Txn, executions: Vec<(Execution, Vec<Event>)>) -> Result<()> {
    rules::loaded_executions(&executions)?;
    for (e, events) in &executions {
        check_free(txn, &e.id)?;
        put_new(txn, e, encode(e), events)?;
    }
    Ok(())
}

fn update(txn: &mut Txn, request: UpdateExecutionRequest, now: Timestamp) -> Result<Execution> {
    txn.adds_space();
    let (before, stored) = current(txn, &request.execution_id)?;
    let next = rules::update_execution(&before, &request, now)?;
    if before.state() != next.state() {
        txn.delete(Cf::IdxExecutionsByState, layout::execution_by_state(before.state(), &before.id))?;
        txn.put_raw(Cf::IdxExecutionsByState, layout::execution_by_state(next.state(), &next.id), Vec::new())?;
        txn.move_count(before.state(), next.state());
    }
    let record = encode(&next);
    let records = (Some(record.as_slice()), Some(stored.as_slice()));
    txn.append_change(Operation::Update, RecordKind::Execution, records, &request.events, now)?;
    txn.put_raw(Cf::Executions, layout::execution(&next.id), record)?;
    put_events(txn, &next.id, &request.events)?;
    Ok(next)
}

fn add_events(txn: &mut Txn, id: &ExecutionId, events: Vec<Event>, now: Timestamp) -> Result<()> {
    txn.adds_space();
    let (before, stored) = current(txn, id)?;
    put_events(txn, id, &events)?;
    if let Some(next) = rules::events_added(&before, now) {
        let record = encode(&next);
        let records = (Some(record.as_slice()), Some(stored.as_slice()));
        txn.append_change(Operation::Update, RecordKind::Execution, records, &events, now)?;
        txn.put_raw(Cf::Executions, layout::execution(id), record)?;
    }
    Ok(())
}

/// Deletes frees space: a store past its quota still takes it (a purge of a compute
/// store is deletes in transactions).
fn delete(txn: &mut Txn, id: &ExecutionId, now: Timestamp) -> Result<()> {
    txn.frees_space();
    let (before, stored) = current(txn, id)?;
    txn.delete(Cf::Executions, layout::execution(id))?;
    txn.delete(Cf::IdxExecutionsByJobId, layout::execution_by_job(&before.job_id, id))?;
    txn.delete(Cf::IdxExecutionsByState, layout::execution_by_state(before.state(), id))?;
    txn.count_removed(before.state());
    txn.delete_prefix(Cf::ExecutionEvents, &layout::execution_events(id))?;
    txn.append_change(Operation::Delete, RecordKind::Execution, (None, Some(&stored)), &[], now)?;
    Ok(())
}

/// Reads the executions whose ids are the last part of the index keys under `prefix`.
pub(crate) fn read_indexed(engine: &Engine, index: Cf, prefix: &[u8]) -> Result<Vec<Execution>> {
    let mut ids = Vec::new();
    engine.scan_prefix(index, prefix, |k, _| {
        ids.push(layout::after_prefix(k, prefix).to_vec());
        Ok(true)
    })?;
    fetch_records(engine, ids)
}

/// Reads the executions with these ids, in order, in one batched lookup. An id whose
/// record a concurrent delete removed after the index scan is skipped.
fn fetch_records(engine: &Engine, ids: Vec<Vec<u8>>) -> Result<Vec<Execution>> {
    engine.get_values(Cf::Executions, &ids)
}

/// The execution store of a compute node, on RocksDB.
#[derive(Clone)]
pub struct RocksExecutionStore {
    engine: Arc<Engine>,
}

impl RocksExecutionStore {
    /// Opens (or creates) the execution store at `path`.
    pub fn open(path: impl AsRef<Path>, options: &OpenOptions) -> std::result::Result<Self, OpenError> {
        Ok(RocksExecutionStore { engine: Engine::open(path.as_ref(), StoreKind::Compute, options)? })
    }

    /// Opens (or creates) the execution store at `config.compute_store_path`, recording `config.node_id`
    /// in a new store.
    pub fn open_from_config(config: &StoreConfig, options: &OpenOptions) -> std::result::Result<Self, OpenError> {
        let options = OpenOptions { node_id: Some(config.node_id.clone()), ..options.clone() };
        Self::open(&config.compute_store_path, &options)
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

    #[cfg(test)]
    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Writes `fault` straight into the families, bypassing every rule: for tests of
    /// check and repair.
    #[cfg(feature = "fault-injection")]
    pub async fn inject(&self, fault: brine_store::Fault) -> Result<()> {
        crate::repair::inject(&self.engine, fault).await
    }
}

#[async_trait]
impl ExecutionStore for RocksExecutionStore {
    async fn create_execution(&self, execution: Execution, events: Vec<Event>) -> Result<Execution> {
        let mut txn = self.engine.begin().await?;
        let now = txn.now();
        let e = create(&mut txn, execution, events, now)?;
        txn.commit().await?;
        Ok(e)
    }

    async fn get_execution(&self, id: &ExecutionId) -> Result<Execution> {
        self.engine.get_required(Cf::Executions, &layout::execution(id), || not_found(id))
    }

    async fn get_executions(&self, job_id: &JobId) -> Result<Vec<Execution>> {
        Ok(rules::newest_first(read_indexed(&self.engine, Cf::IdxExecutionsByJobId, &layout::owned_by(job_id))?))
    }

    async fn get_live_executions(&self) -> Result<Vec<Execution>> {
        let mut all = Vec::new();
        for state in ExecutionState::LIVE {
            all.extend(read_indexed(&self.engine, Cf::IdxExecutionsByState, &layout::in_state(state))?);
        }
        Ok(rules::newest_first(all))
    }

    async fn get_executions_in_state(
        &self,
        state: ExecutionState,
        after: Option<&ExecutionId>,
        limit: usize,
    ) -> Result<Vec<Execution>> {
        rules::check_limit(limit)?;
        let prefix = layout::in_state(state);
        let start = match after {
            Some(a) => layout::in_state_after(state, a),
            None => prefix.clone(),
        };
        let db = self.engine.db()?;
        let mut it = self.engine.iter(&db, Cf::IdxExecutionsByState, &prefix, prefix_end(&prefix))?;
        it.seek(&start);
        let mut ids = Vec::new();
        while it.valid() && ids.len() < limit {
            let Some(k) = it.key() else { break };
            ids.push(layout::after_prefix(k, &prefix).to_vec());
            it.next();
        }
        it.status().map_err(|e| StoreError::backend("scan the state index", e))?;
        drop(it);
        fetch_records(&self.engine, ids)
    }

    async fn get_execution_count(&self, state: ExecutionState) -> Result<u64> {
        Ok(self.engine.published()?.count(state))
    }

    async fn update_execution_state(&self, request: UpdateExecutionRequest) -> Result<Execution> {
        let mut txn = self.engine.begin().await?;
        let now = txn.now();
        let e = update(&mut txn, request, now)?;
        txn.commit().await?;
        Ok(e)
    }

    async fn add_execution_event(&self, id: &ExecutionId, events: Vec<Event>) -> Result<()> {
        let mut txn = self.engine.begin().await?;
        let now = txn.now();
        add_events(&mut txn, id, events, now)?;
        txn.commit().await
    }

    async fn get_execution_events(&self, id: &ExecutionId) -> Result<Vec<Event>> {
        if !self.engine.contains(Cf::Executions, &layout::execution(id))? {
            return Err(not_found(id));
        }
        let prefix = layout::execution_events(id);
        let mut out = Vec::new();
        self.engine.scan_prefix(Cf::ExecutionEvents, &prefix, |k, v| {
            layout::decode_or_corrupt(Cf::ExecutionEvents, k)?;
            out.push(decode(Cf::ExecutionEvents, k, v)?);
            Ok(true)
        })?;
        Ok(out)
    }

    async fn delete_execution(&self, id: &ExecutionId) -> Result<()> {
        let mut txn = self.engine.begin().await?;
        let now = txn.now();
        delete(&mut txn, id, now)?;
        txn.commit().await
    }

    async fn load_executions(&self, executions: Vec<(Execution, Vec<Event>)>) -> Result<()> {
        let mut txn = self.engine.begin().await?;
        load(&mut txn, executions)?;
        txn.commit().await
    }

    async fn begin_tx(&self) -> Result<Box<dyn ExecutionTx>> {
        Ok(Box::new(RocksExecutionTx { txn: self.engine.begin_tx().await?, steps: rules::TxSteps::default() }))
    }

    fn event_log(&self) -> Arc<dyn EventLog> {
        Arc::new(RocksEventLog(Arc::clone(&self.engine)))
    }

    async fn repair(&self, dry_run: bool) -> Result<RepairReport> {
        crate::repair::repair(&self.engine, dry_run).await
    }

    async fn check(&self) -> Result<CheckReport> {
        crate::check::check_on_blocking_thread(&self.engine).await
    }

    async fn compact(&self) -> Result<()> {
        crate::repair::compact(&self.engine).await
    }

    fn unclean_shutdown(&self) -> bool {
        self.engine.unclean_shutdown
    }

    async fn sync(&self) -> Result<()> {
        self.engine.sync().await
    }

    fn store_id(&self) -> String {
        self.engine.store_id.clone()
    }

    async fn close(&self) -> Result<()> {
        self.engine.close().await
    }
}

/// A transaction on a [`RocksExecutionStore`]: the commit lock and one pending batch.
struct RocksExecutionTx {
    txn: Txn,
    steps: rules::TxSteps,
}

#[async_trait]
impl ExecutionTx for RocksExecutionTx {
    async fn create_execution(&mut self, execution: Execution, events: Vec<Event>) -> Result<Execution> {
        let now = self.txn.now();
        let txn = &mut self.txn;
        self.steps.step(|| create(txn, execution, events, now))
    }

    async fn get_execution(&mut self, id: &ExecutionId) -> Result<Execution> {
        self.txn.get(Cf::Executions, &layout::execution(id))?.ok_or_else(|| not_found(id))
    }

    async fn update_execution_state(&mut self, request: UpdateExecutionRequest) -> Result<Execution> {
        let now = self.txn.now();
        let txn = &mut self.txn;
        self.steps.step(|| update(txn, request, now))
    }

    async fn add_execution_event(&mut self, id: &ExecutionId, events: Vec<Event>) -> Result<()> {
        let now = self.txn.now();
        let txn = &mut self.txn;
        self.steps.step(|| add_events(txn, id, events, now))
    }

    async fn delete_execution(&mut self, id: &ExecutionId) -> Result<()> {
        let now = self.txn.now();
        let txn = &mut self.txn;
        self.steps.step(|| delete(txn, id, now))
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        self.steps.check()?;
        self.txn.commit().await
    }

    async fn rollback(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}
