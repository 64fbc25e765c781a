//! The snapshot-and-swap core shared by the memory stores, with the event log.

use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use async_trait::async_trait;
use brine_store::model::{LogEntry, LogObject, ObjectType, Operation, Timestamp};
use brine_store::{
    rules, validate_checkpoint_name, Clock, EventBatch, EventFilter, EventLog, Position, Result, StoreError,
};
use imbl::OrdMap;
use tokio::sync::{watch, OwnedMutexGuard};

/// The event log and checkpoints inside a snapshot.
#[derive(Clone, Default)]
pub(crate) struct LogState {
    entries: OrdMap<u64, Arc<LogEntry>>,
    head: u64,
    /// Highest sequence number deleted by retention (0: none).
    trimmed: u64,
    checkpoints: OrdMap<String, u64>,
}

impl LogState {
    /// Appends an entry, returning its sequence number.
    pub(crate) fn append(&mut self, operation: Operation, object: LogObject, now: Timestamp) -> u64 {
        self.head += 1;
        let entry = LogEntry { seq: self.head, operation, object_type: object.object_type(), object, timestamp: now };
        self.entries.insert(self.head, Arc::new(entry));
        self.head
    }

    /// Checks the log as the RocksDB check does: exactly the entries
    /// `trimmed + 1 ..= head`, each under its own sequence number, and every checkpoint
    /// at or below the head.
    pub(crate) fn check(&self, report: &mut brine_store::CheckReport) {
        report.keys_checked += self.entries.len() as u64 + self.checkpoints.len() as u64;
        let expected = self.head - self.trimmed.min(self.head);
        if self.entries.len() as u64 != expected {
            report.problem(
                "events",
                "",
                format!("{} entries, expected {expected} ({}..={})", self.entries.len(), self.trimmed + 1, self.head),
            );
        }
        for (seq, entry) in &self.entries {
            if *seq <= self.trimmed || *seq > self.head || entry.seq != *seq {
                report.problem(
                    "events",
                    seq.to_string(),
                    format!("entry {} outside {}..={} or misplaced", entry.seq, self.trimmed + 1, self.head),
                );
            }
        }
        for (name, seq) in &self.checkpoints {
            if *seq > self.head {
                report.problem(
                    "checkpoints",
                    name.clone(),
                    format!("checkpoint {seq} is beyond the head {}", self.head),
                );
            }
        }
    }
}

/// Everything a store holds: its own tables and its event log.
#[derive(Clone, Default)]
pub(crate) struct Snapshot<T> {
    pub(crate) tables: T,
    pub(crate) log: LogState,
}

/// Who holds an explicit transaction: the tokio task, or the thread when it was begun
/// outside any task (`block_on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holder {
    Task(tokio::task::Id),
    Thread(std::thread::ThreadId),
}

impl Holder {
    fn current() -> Holder {
        match tokio::task::try_id() {
            Some(id) => Holder::Task(id),
            None => Holder::Thread(std::thread::current().id()),
        }
    }
}

/// A store's shared core.
pub(crate) struct Db<T> {
    current: RwLock<Arc<Snapshot<T>>>,
    writer: Arc<tokio::sync::Mutex<()>>,
    /// The holder of the open explicit transaction, if any.
    tx_holder: Arc<Mutex<Option<Holder>>>,
    head: watch::Sender<u64>,
    closed: AtomicBool,
    pub(crate) clock: Arc<dyn Clock>,
    /// This store's id (`store_id`), new for every store.
    pub(crate) id: String,
}

/// Clears the transaction holder when an explicit transaction ends.
struct HolderMark(Arc<Mutex<Option<Holder>>>);

impl Drop for HolderMark {
    fn drop(&mut self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

/// A write in progress: holds the writer lock and a private copy of the snapshot.
pub(crate) struct WriteTx<T> {
    _holder: Option<HolderMark>,
    _guard: OwnedMutexGuard<()>,
    db: Arc<Db<T>>,
    pub(crate) state: Snapshot<T>,
}

impl<T: Clone + Default + Send + Sync + 'static> Db<T> {
    pub(crate) fn new(clock: Arc<dyn Clock>) -> Arc<Self> {
        Arc::new(Db {
            current: RwLock::new(Arc::new(Snapshot::default())),
            writer: Arc::new(tokio::sync::Mutex::new(())),
            tx_holder: Arc::new(Mutex::new(None)),
            id: brine_store::new_store_id(),
            head: watch::channel(0).0,
            closed: AtomicBool::new(false),
            clock,
        })
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        Ok(())
    }

    /// The current snapshot, for reading.
    pub(crate) fn read(&self) -> Result<Arc<Snapshot<T>>> {
        self.check_open()?;
        let guard = self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(Arc::clone(&guard))
    }

    /// Starts a write: waits for the writer lock and copies the snapshot.
    ///
    /// Fails with `TransactionHeld` instead of waiting forever when the calling task
    /// holds an explicit transaction on this store (it would wait for itself).
    /// Cancel-safe: waiting for the lock is.
    pub(crate) async fn begin(self: &Arc<Self>) -> Result<WriteTx<T>> {
        self.check_open()?;
        // A cooperative yield point: a task writing in a loop on an uncontended store
        // still lets the other tasks of its runtime run (tokio's task budget).
        tokio::task::coop::consume_budget().await;
        let guard = match Arc::clone(&self.writer).try_lock_owned() {
            Ok(guard) => guard,
            Err(_) => {
                if *self.tx_holder.lock().unwrap_or_else(PoisonError::into_inner) == Some(Holder::current()) {
                    return Err(StoreError::TransactionHeld);
                }
                Arc::clone(&self.writer).lock_owned().await
            }
        };
        let state = (*self.read()?).clone();
        Ok(WriteTx { _holder: None, _guard: guard, db: Arc::clone(self), state })
    }

    /// Starts an explicit transaction (`begin_tx`), remembering the calling task so a
    /// plain write from it is refused rather than deadlocking.
    pub(crate) async fn begin_tx(self: &Arc<Self>) -> Result<WriteTx<T>> {
        let mut tx = self.begin().await?;
        *self.tx_holder.lock().unwrap_or_else(PoisonError::into_inner) = Some(Holder::current());
        tx._holder = Some(HolderMark(Arc::clone(&self.tx_holder)));
        Ok(tx)
    }

    /// Runs `f` on a private copy and publishes it if `f` succeeds.
    pub(crate) async fn write<R>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Snapshot<T>, Timestamp) -> Result<R>,
    ) -> Result<R> {
        let mut tx = self.begin().await?;
        let now = self.clock.now();
        let out = f(&mut tx.state, now)?;
        tx.commit()?;
        Ok(out)
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        // Wake every waiter so it sees the store is closed.
        self.head.send_modify(|_| {});
    }
}

impl<T: Clone + Default + Send + Sync + 'static> WriteTx<T> {
    /// Publishes the copy: every change becomes visible at once.
    pub(crate) fn commit(self) -> Result<()> {
        self.db.check_open()?;
        let head = self.state.log.head;
        {
            let mut current = self.db.current.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            *current = Arc::new(self.state);
        }
        // Still under the writer lock, so heads are sent in commit order.
        self.db.head.send_if_modified(|h| {
            let moved = head > *h;
            if moved {
                *h = head;
            }
            moved
        });
        Ok(())
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.db.clock.now()
    }
}

/// The [`EventLog`] view of a memory store.
pub(crate) struct MemEventLog<T>(pub(crate) Arc<Db<T>>);

#[async_trait]
impl<T: Clone + Default + Send + Sync + 'static> EventLog for MemEventLog<T> {
    async fn get_events(&self, from: Position, limit: usize, filter: &EventFilter) -> Result<EventBatch> {
        rules::check_limit(limit)?;
        let snap = self.0.read()?;
        let log = &snap.log;
        let first = rules::first_seq(from, log.head, log.trimmed)?;
        let mut entries = Vec::new();
        let mut last = first - 1;
        // Bounded: a selective filter reads on from `next` in the following call.
        for (seq, entry) in log.entries.range((Bound::Included(first), Bound::Unbounded)).take(rules::MAX_EXAMINED) {
            if entries.len() == limit {
                break;
            }
            last = *seq;
            if filter.matches(entry) {
                entries.push((**entry).clone());
            }
        }
        Ok(EventBatch { entries, next: Position::After(last.min(log.head).max(first - 1)), head: log.head })
    }

    async fn wait_for(&self, after: u64) -> Result<u64> {
        let mut rx = self.0.head.subscribe();
        loop {
            self.0.check_open()?;
            let head = *rx.borrow_and_update();
            if head > after {
                return Ok(head);
            }
            rx.changed().await.map_err(|_| StoreError::Closed)?;
        }
    }

    async fn head(&self) -> Result<u64> {
        Ok(self.0.read()?.log.head)
    }

    async fn oldest(&self) -> Result<u64> {
        let snap = self.0.read()?;
        Ok(snap.log.entries.keys().next().copied().unwrap_or(snap.log.head + 1))
    }

    async fn append(&self, kind: &str, data: &str) -> Result<u64> {
        let object = LogObject::Custom { kind: kind.to_owned(), data: data.to_owned() };
        debug_assert_eq!(object.object_type(), ObjectType::Custom);
        self.0.write(|s, now| Ok(s.log.append(Operation::Create, object, now))).await
    }

    async fn load(&self, after: u64, entries: Vec<LogEntry>) -> Result<u64> {
        self.0
            .write(|s, _| {
                let log = &mut s.log;
                let now = rules::LogBounds { head: log.head, trimmed: log.trimmed };
                let next = rules::log_load(now, after, &entries)?;
                for entry in entries {
                    log.entries.insert(entry.seq, Arc::new(entry));
                }
                log.head = next.head;
                log.trimmed = next.trimmed;
                Ok(next.head)
            })
            .await
    }

    async fn checkpoint(&self, name: &str, seq: u64) -> Result<()> {
        validate_checkpoint_name(name)?;
        self.0
            .write(|s, _| {
                if seq > s.log.head {
                    return Err(StoreError::CheckpointBeyondHead { name: name.to_owned(), seq, head: s.log.head });
                }
                s.log.checkpoints.insert(name.to_owned(), seq);
                Ok(())
            })
            .await
    }

    async fn get_checkpoint(&self, name: &str) -> Result<u64> {
        validate_checkpoint_name(name)?;
        Ok(self.0.read()?.log.checkpoints.get(name).copied().unwrap_or(0))
    }

    async fn list_checkpoints(&self) -> Result<Vec<(String, u64)>> {
        Ok(self.0.read()?.log.checkpoints.iter().map(|(k, v)| (k.clone(), *v)).collect())
    }

    async fn delete_checkpoint(&self, name: &str) -> Result<()> {
        validate_checkpoint_name(name)?;
        self.0
            .write(|s, _| {
                s.log.checkpoints.remove(name);
                Ok(())
            })
            .await
    }

    async fn trim(&self, up_to: u64, before: Timestamp, max: usize) -> Result<u64> {
        rules::check_limit(max)?;
        self.0
            .write(|s, _| {
                let log = &mut s.log;
                let mut deleted = 0;
                while deleted < max as u64 {
                    let seq = log.trimmed + 1;
                    match log.entries.get(&seq) {
                        Some(e) if seq <= log.head && rules::may_trim(seq, e.timestamp, up_to, before) => {}
                        _ => break,
                    }
                    log.entries.remove(&seq);
                    log.trimmed = seq;
                    deleted += 1;
                }
                Ok(deleted)
            })
            .await
    }
}
