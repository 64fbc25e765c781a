//! The compute node's execution store (Bacalhau's execution store).

use std::sync::Arc;

use async_trait::async_trait;
use brine_model::{Event, Execution, ExecutionId, ExecutionState, JobId};

use crate::{CheckReport, EventLog, RepairReport, Result, UpdateExecutionRequest};

/// Executions of a compute node, their history events, indexes by job and state,
/// per-state counters, and the event log.
///
/// Every change commits atomically with its index moves, counter changes, history
/// events and event-log entry. After [`ExecutionStore::close`] every operation returns
/// `Closed`.
///
/// # Cancel safety
///
/// Every method is cancel-safe: its future may be dropped at any `.await` and the
/// store stays usable. A read dropped has done nothing. A write dropped before its
/// change is written has written nothing; dropped while it waits for durability (a
/// `Sync` store's fsync), the change is committed and becomes durable and visible with
/// the next group sync; as with a timed-out call to any database, the caller learns the
/// outcome by reading. `begin_tx` dropped while waiting begins nothing; a transaction
/// dropped rolls back. `close` dropped still closes, and a later `close` waits for it.
#[async_trait]
pub trait ExecutionStore: Send + Sync {
    /// Stores a new execution with revision 1, and `events` as its first history.
    /// Fails with `AlreadyExists` for a known id. Returns the stored value.
    async fn create_execution(&self, execution: Execution, events: Vec<Event>) -> Result<Execution>;

    /// The execution with `id`.
    async fn get_execution(&self, id: &ExecutionId) -> Result<Execution>;

    /// Every execution of `job_id`, newest modify time first, read through the job index.
    async fn get_executions(&self, job_id: &JobId) -> Result<Vec<Execution>>;

    /// Every execution in a live state, newest modify time first, read through the state
    /// index.
    async fn get_live_executions(&self) -> Result<Vec<Execution>>;

    /// Up to `limit` executions in `state`, in id order, starting after `after`: for
    /// streaming a whole state in bounded batches.
    async fn get_executions_in_state(
        &self,
        state: ExecutionState,
        after: Option<&ExecutionId>,
        limit: usize,
    ) -> Result<Vec<Execution>>;

    /// The number of executions in `state`, from a counter (O(1)).
    async fn get_execution_count(&self, state: ExecutionState) -> Result<u64>;

    /// Applies a conditional update and returns the new value.
    async fn update_execution_state(&self, request: UpdateExecutionRequest) -> Result<Execution>;

    /// Appends history events to an execution.
    async fn add_execution_event(&self, id: &ExecutionId, events: Vec<Event>) -> Result<()>;

    /// The history events of an execution, in write order.
    async fn get_execution_events(&self, id: &ExecutionId) -> Result<Vec<Event>>;

    /// Removes the execution, its index entries and its history events.
    async fn delete_execution(&self, id: &ExecutionId) -> Result<()>;

    /// Stores executions exactly as given (revision, state, times) with their history
    /// events, in one atomic write that logs nothing: how `brine import` restores a dump.
    /// Each must pass `rules::loaded_execution` and be new (`AlreadyExists`); the
    /// indexes and counters follow the records. Nothing is written when one is refused.
    async fn load_executions(&self, executions: Vec<(Execution, Vec<Event>)>) -> Result<()>;

    /// Starts a transaction. Until it ends, other writers wait; it reads its own writes
    /// and rolls back when dropped without [`ExecutionTx::commit`].
    async fn begin_tx(&self) -> Result<Box<dyn ExecutionTx>>;

    /// Records watcher `name`'s checkpoint (see [`EventLog::checkpoint`]).
    async fn checkpoint(&self, name: &str, seq: u64) -> Result<()> {
        self.event_log().checkpoint(name, seq).await
    }

    /// Watcher `name`'s checkpoint, 0 if none.
    async fn get_checkpoint(&self, name: &str) -> Result<u64> {
        self.event_log().get_checkpoint(name).await
    }

    /// The store's event log.
    fn event_log(&self) -> Arc<dyn EventLog>;

    /// Finds where the derived data (indexes, counters, history) disagrees with the
    /// records and, unless `dry_run`, puts it right (see [`crate::RepairReport`] for
    /// what is repaired and how). Streams in bounded batches, so memory does not grow
    /// with the store; each batch of fixes commits atomically, and writers may run
    /// between batches.
    async fn repair(&self, dry_run: bool) -> Result<RepairReport>;

    /// Checks the store's consistency, changing nothing: every index entry, counter,
    /// history event and event-log position against the records, by the rules the
    /// writes follow. Reads one consistent state (a live store may be checked); a disk
    /// backend reads on a blocking thread.
    async fn check(&self) -> Result<CheckReport>;

    /// Compacts the execution data (RocksDB `compact_range` over the execution
    /// families), reclaiming the space of deleted records. Backends with nothing to
    /// compact return at once.
    async fn compact(&self) -> Result<()>;

    /// Whether the previous session of this store ended without [`ExecutionStore::close`]
    /// (a crash or a kill) and no repair has run since. Recovery runs a repair scan when
    /// it did. Stores without persistence always answer `false`.
    fn unclean_shutdown(&self) -> bool;

    /// Makes every write acknowledged so far durable (a WAL sync on a `Buffered`
    /// RocksDB store); returns at once where acknowledged writes are durable already or
    /// nothing persists. Purge calls it before it forgets an archive's pending marker.
    async fn sync(&self) -> Result<()>;

    /// An id unique to this store, kept for its lifetime (a memory store's lives as
    /// long as the process): archive markers name it, so an interrupted purge is only
    /// ever finished against the store that started it.
    fn store_id(&self) -> String;

    /// Closes the store; idempotent. Later operations return `Closed`.
    async fn close(&self) -> Result<()>;
}

/// A group of execution changes that commit together or not at all.
#[async_trait]
pub trait ExecutionTx: Send {
    /// As [`ExecutionStore::create_execution`], inside the transaction.
    async fn create_execution(&mut self, execution: Execution, events: Vec<Event>) -> Result<Execution>;

    /// As [`ExecutionStore::get_execution`], seeing the transaction's own writes.
    async fn get_execution(&mut self, id: &ExecutionId) -> Result<Execution>;

    /// As [`ExecutionStore::update_execution_state`], inside the transaction.
    async fn update_execution_state(&mut self, request: UpdateExecutionRequest) -> Result<Execution>;

    /// As [`ExecutionStore::add_execution_event`], inside the transaction.
    async fn add_execution_event(&mut self, id: &ExecutionId, events: Vec<Event>) -> Result<()>;

    /// As [`ExecutionStore::delete_execution`], inside the transaction.
    async fn delete_execution(&mut self, id: &ExecutionId) -> Result<()>;

    /// Makes every change visible at once, with their event-log entries.
    async fn commit(self: Box<Self>) -> Result<()>;

    /// Discards every change (as dropping does).
    async fn rollback(self: Box<Self>) -> Result<()>;
}
