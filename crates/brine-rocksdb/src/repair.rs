//! Repair of a compute store's derived data against its records (see
//! [`brine_store::RepairReport`]), and the fault-injection hook its tests use.
//!
//! A repair makes four passes: records (each has both index entries), the job index and
//! the state index (each entry points at a record in that job or state), history (each
//! key belongs to an existing execution), then counters. A pass reads the family in
//! chunks on a blocking thread, outside the commit lock, and collects candidate fixes;
//! each chunk's candidates are then checked again and fixed inside one write under the
//! commit lock, so a writer running between chunks can never be undone by a stale fix.
//! The counter pass holds the commit lock while it counts the state index. No fix
//! writes an event-log entry: records are never changed.

use std::sync::Arc;

use brine_store::model::{Execution, ExecutionId, ExecutionState};
use brine_store::{RepairReport, Result, StoreError};

use crate::cf::Cf;
use crate::codec::decode;
use crate::engine::{Engine, Txn};
use crate::layout;

/// Keys read per chunk.
const CHUNK: usize = 1024;

/// A fix found by a scan, checked again before it is made.
enum Fix {
    /// The execution may lack index entries.
    AddIndex(ExecutionId),
    /// This index entry may point at nothing, or at a record elsewhere.
    RemoveIndex(Cf, Vec<u8>),
    /// This execution may be missing while its history is stored.
    RemoveHistory(ExecutionId),
}

/// What one chunk of a scan found.
struct Chunk {
    fixes: Vec<Fix>,
    /// The last key read; `None` when the family is done.
    last: Option<Vec<u8>>,
    scanned: u64,
    undecodable: u64,
    /// Fixes a dry run counts (index entries, history events).
    would_fix: u64,
    /// How the state index's size per state would change, for a dry run's counter pass.
    state_delta: [i64; 9],
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| StoreError::backend("repair task", e))?
}

/// Whether index entry `key` of `cf` is the entry `record` should have.
fn entry_matches(cf: Cf, key: &[u8], record: &Execution) -> bool {
    match cf {
        Cf::IdxExecutionsByState => key == layout::execution_by_state(record.state(), &record.id).as_slice(),
        _ => key == layout::execution_by_job(&record.job_id, &record.id).as_slice(),
    }
}

/// Whether index entry `key` of `cf` is stale: unparseable, or its record is missing
/// or lives in another state or job. `record` reads an execution (from the database
/// while scanning, through the write when re-checking). An undecodable record is
/// counted by the records pass; its index entries stay until an operator deals with it.
fn is_stale(cf: Cf, key: &[u8], record: impl FnOnce(&[u8]) -> Result<Option<Execution>>) -> Result<bool> {
    let Some(id) = layout::indexed_execution(cf, key) else { return Ok(true) };
    match record(&layout::execution(&id)) {
        Ok(Some(e)) => Ok(!entry_matches(cf, key, &e)),
        Ok(None) => Ok(true),
        Err(e) if e.is_corrupt() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Reads up to [`CHUNK`] keys of `cf` after `after` and returns the candidate fixes.
fn scan_chunk(engine: &Engine, cf: Cf, after: Option<&[u8]>) -> Result<Chunk> {
    let db = engine.db()?;
    let mut it = engine.iter(&db, cf, &[], None)?;
    match after {
        Some(k) => {
            it.seek(k);
            if it.valid() && it.key() == Some(k) {
                it.next();
            }
        }
        None => it.seek_to_first(),
    }
    let mut chunk =
        Chunk { fixes: Vec::new(), last: None, scanned: 0, undecodable: 0, would_fix: 0, state_delta: [0; 9] };
    let mut history_of: Option<(String, bool)> = None;
    while it.valid() && chunk.scanned < CHUNK as u64 {
        let (Some(k), Some(v)) = (it.key(), it.value()) else { break };
        chunk.scanned += 1;
        chunk.last = Some(k.to_vec());
        match cf {
            Cf::Executions => match decode::<Execution>(cf, k, v) {
                Ok(e) => {
                    let by_job =
                        engine.contains(Cf::IdxExecutionsByJobId, &layout::execution_by_job(&e.job_id, &e.id))?;
                    let by_state =
                        engine.contains(Cf::IdxExecutionsByState, &layout::execution_by_state(e.state(), &e.id))?;
                    if !by_state {
                        chunk.state_delta[usize::from(e.state().code())] += 1;
                    }
                    if !by_job || !by_state {
                        chunk.would_fix += u64::from(!by_job) + u64::from(!by_state);
                        chunk.fixes.push(Fix::AddIndex(e.id));
                    }
                }
                Err(_) => chunk.undecodable += 1,
            },
            Cf::IdxExecutionsByJobId | Cf::IdxExecutionsByState => {
                let stale = is_stale(cf, k, |key| engine.get_value::<Execution>(Cf::Executions, key))?;
                if stale {
                    let state = layout::decode(cf, k).ok().and_then(|d| d.u8("state"));
                    if let (Cf::IdxExecutionsByState, Some(code)) = (cf, state) {
                        if let Some(slot) = chunk.state_delta.get_mut(usize::from(code)) {
                            *slot -= 1;
                        }
                    }
                    chunk.would_fix += 1;
                    chunk.fixes.push(Fix::RemoveIndex(cf, k.to_vec()));
                }
            }
            Cf::ExecutionEvents => {
                let decoded = layout::decode(cf, k).ok();
                let id = decoded.and_then(|d| d.str("execution_id")).unwrap_or_default().to_owned();
                let known = match &history_of {
                    Some((last, exists)) if *last == id => *exists,
                    _ => {
                        let exists = engine.contains(Cf::Executions, id.as_bytes())?;
                        history_of = Some((id.clone(), exists));
                        if !exists {
                            if let Ok(id) = ExecutionId::new(id) {
                                chunk.fixes.push(Fix::RemoveHistory(id));
                            }
                        }
                        exists
                    }
                };
                if !known {
                    chunk.would_fix += 1;
                }
            }
            other => {
                return Err(StoreError::Corrupt {
                    cf: other.name().to_owned(),
                    key: String::new(),
                    reason: "repair does not scan this family".into(),
                })
            }
        }
        it.next();
    }
    it.status().map_err(|e| StoreError::backend("repair scan", e))?;
    if chunk.scanned < CHUNK as u64 {
        chunk.last = None;
    }
    Ok(chunk)
}

/// Checks a candidate again under the commit lock and makes it; returns what it fixed.
fn apply(txn: &mut Txn, fix: &Fix, report: &mut RepairReport) -> Result<()> {
    match fix {
        Fix::AddIndex(id) => {
            let Some(e) = txn.get::<Execution>(Cf::Executions, &layout::execution(id))? else { return Ok(()) };
            for (cf, key) in [
                (Cf::IdxExecutionsByJobId, layout::execution_by_job(&e.job_id, &e.id)),
                (Cf::IdxExecutionsByState, layout::execution_by_state(e.state(), &e.id)),
            ] {
                if !txn.exists(cf, &key)? {
                    txn.put_raw(cf, key, Vec::new())?;
                    report.missing_index_entries += 1;
                }
            }
        }
        Fix::RemoveIndex(cf, key) => {
            if !txn.exists(*cf, key)? {
                return Ok(());
            }
            let stale = is_stale(*cf, key, |k| txn.get::<Execution>(Cf::Executions, k))?;
            if stale {
                txn.delete(*cf, key.clone())?;
                report.orphan_index_entries += 1;
            }
        }
        Fix::RemoveHistory(id) => {
            if !txn.exists(Cf::Executions, &layout::execution(id))? {
                report.orphan_history_events +=
                    txn.delete_prefix(Cf::ExecutionEvents, &layout::execution_events(id))? as u64;
            }
        }
    }
    Ok(())
}

/// Runs the repair passes (see the module documentation).
pub(crate) async fn repair(engine: &Arc<Engine>, dry_run: bool) -> Result<RepairReport> {
    let mut report = RepairReport::default();
    let mut state_delta = [0i64; 9];
    for cf in [Cf::Executions, Cf::IdxExecutionsByJobId, Cf::IdxExecutionsByState, Cf::ExecutionEvents] {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let e = Arc::clone(engine);
            let from = after.take();
            let chunk = blocking(move || scan_chunk(&e, cf, from.as_deref())).await?;
            report.keys_scanned += chunk.scanned;
            report.undecodable_records += chunk.undecodable;
            for (total, d) in state_delta.iter_mut().zip(chunk.state_delta) {
                *total += d;
            }
            if dry_run {
                match cf {
                    Cf::Executions => report.missing_index_entries += chunk.would_fix,
                    Cf::ExecutionEvents => report.orphan_history_events += chunk.would_fix,
                    _ => report.orphan_index_entries += chunk.would_fix,
                }
            } else if !chunk.fixes.is_empty() {
                let mut txn = engine.begin().await?;
                // A repair puts derived data right; a store past its quota still takes it.
                txn.frees_space();
                for fix in &chunk.fixes {
                    apply(&mut txn, fix, &mut report)?;
                }
                txn.commit().await?;
            }
            match chunk.last {
                Some(last) => after = Some(last),
                None => break,
            }
        }
    }
    // A dry run fixed nothing, so the state index still holds what the scans found:
    // count it as it would be after the fixes.
    let delta = if dry_run { state_delta } else { [0; 9] };
    repair_counters(engine, dry_run, delta, &mut report).await?;
    if !dry_run {
        engine.repaired.store(true, std::sync::atomic::Ordering::Release);
    }
    Ok(report)
}

/// Sets each counter to the size of its state index (adjusted by `delta`), counting
/// under the commit lock.
async fn repair_counters(
    engine: &Arc<Engine>,
    dry_run: bool,
    delta: [i64; 9],
    report: &mut RepairReport,
) -> Result<()> {
    let txn = engine.begin().await?;
    let e = Arc::clone(engine);
    let (mut txn, indexed) = blocking(move || {
        let mut indexed = [0u64; 9];
        for state in ExecutionState::ALL {
            e.scan_prefix(Cf::IdxExecutionsByState, &layout::in_state(state), |_, _| {
                indexed[usize::from(state.code())] += 1;
                Ok(true)
            })?;
        }
        Ok((txn, indexed))
    })
    .await?;
    report.keys_scanned += indexed.iter().sum::<u64>();
    for state in ExecutionState::ALL {
        let slot = usize::from(state.code());
        let n = indexed[slot].saturating_add_signed(delta[slot]);
        if txn.seqs().count(state) != n {
            txn.set_count(state, n);
            report.counters_fixed += 1;
        }
    }
    if dry_run {
        return Ok(());
    }
    txn.frees_space();
    txn.commit().await
}

/// Compacts the compute store's execution families.
pub(crate) async fn compact(engine: &Arc<Engine>) -> Result<()> {
    let e = Arc::clone(engine);
    blocking(move || {
        let db = e.db()?;
        for cf in [Cf::Executions, Cf::IdxExecutionsByJobId, Cf::IdxExecutionsByState, Cf::ExecutionEvents, Cf::Events]
        {
            db.compact_range_cf(e.cf(&db, cf)?, None::<&[u8]>, None::<&[u8]>);
        }
        Ok(())
    })
    .await
}

/// Writes a fault straight into the families, bypassing every rule.
#[cfg(feature = "fault-injection")]
pub(crate) async fn inject(engine: &Arc<Engine>, fault: brine_store::Fault) -> Result<()> {
    use brine_store::Fault;
    let mut txn = engine.begin().await?;
    let record = |txn: &Txn, id: &ExecutionId| -> Result<Execution> {
        txn.get(Cf::Executions, &layout::execution(id))?
            .ok_or_else(|| StoreError::not_found(brine_store::ObjectKind::Execution, id))
    };
    match fault {
        Fault::DropStateIndexEntry(id) => {
            let e = record(&txn, &id)?;
            txn.delete(Cf::IdxExecutionsByState, layout::execution_by_state(e.state(), &id))?;
        }
        Fault::DropJobIndexEntry(id) => {
            let e = record(&txn, &id)?;
            txn.delete(Cf::IdxExecutionsByJobId, layout::execution_by_job(&e.job_id, &id))?;
        }
        Fault::OrphanStateIndexEntry(state, id) => {
            txn.put_raw(Cf::IdxExecutionsByState, layout::execution_by_state(state, &id), Vec::new())?;
        }
        Fault::OrphanJobIndexEntry(job, id) => {
            txn.put_raw(Cf::IdxExecutionsByJobId, layout::execution_by_job(&job, &id), Vec::new())?;
        }
        Fault::OrphanHistory(id, events) => {
            for event in events {
                let seq = txn.next_history_seq();
                txn.put(Cf::ExecutionEvents, layout::execution_event(&id, seq), &event)?;
            }
        }
        Fault::SetCounter(state, n) => txn.set_count(state, n),
        Fault::CorruptExecution(id) => {
            record(&txn, &id)?;
            txn.put_raw(Cf::Executions, layout::execution(&id), vec![0xff, 0x00, 0x13])?;
        }
        Fault::DropLogEntry(seq) => txn.delete(Cf::Events, layout::log_entry(seq))?,
        other => return Err(StoreError::Unsupported { what: format!("injecting {other:?}") }),
    }
    txn.commit().await
}
