//! The core shared by both RocksDB stores: the open database, reads, publication of
//! the sequences and counters, and close. `open.rs` opens a store (checks before
//! writing, first-open setup), `txn.rs` is the write transaction (commit lock, batch,
//! overlay, commit) and `sync.rs` the group commit. The sequences and counters change
//! only through [`Txn`]'s named operations (`count_added`, `move_count`, …).
//!
//! Commit protocol: a writer takes the store's commit lock (an async mutex over the
//! store's sequences and counters), reads what it needs through a [`Txn`] (its own
//! pending writes first, then the database), builds one `WriteBatch` holding the record,
//! its index moves, counter changes, history events, the event-log entry and the new
//! sequence values, and writes it without sync. Because the lock is held from the first
//! read to the write, conditions are decided on current data and event-log sequence
//! numbers follow commit order. The lock is released before a `Sync` commit waits for
//! its fsync, so concurrent `Sync` commits share fsyncs: whoever finds no sync running
//! syncs the WAL up to the newest write and wakes every writer it covered.
//!
//! Publication: readers of the sequences and counters (the event log's head, `wait_for`,
//! the per-state counts) see a commit only once it counts as done: at once on a
//! `Buffered` store (under the commit lock), after the WAL sync that covers it on a
//! `Sync` store, so a watcher never acts on an entry that a power loss could take back.
//! Publication is ordered by commit number, so the head never goes backwards.
//!
//! Cancel safety: any of these futures may be dropped at an `.await`. Waiting for the
//! commit lock is cancel-safe (tokio's mutex); a dropped write before its batch is
//! written writes nothing; the writer leading a group sync holds the lead as a guard, so
//! one dropped mid-sync hands the lead back and a waiter leads the next sync (which
//! covers and publishes everything written), and a waiter dropped leaves nothing behind;
//! `close` finishes on a blocking thread of its own, and a second `close` waits for the
//! first to finish.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use brine_store::model::{ExecutionState, Timestamp};
use brine_store::{Clock, Result, StoreError};
use rocksdb::{DBRawIteratorWithThreadMode, ReadOptions, DB};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

/// A consistent read view of a store's database.
pub(crate) type Snapshot<'d> = rocksdb::SnapshotWithThreadMode<'d, DB>;

mod open;
mod quota;
mod sync;
mod txn;

use crate::cf::{Cf, StoreKind};
use crate::codec::{decode, encode};
use crate::layout::meta;
use crate::Durability;

pub use open::{db_options, family_options, store_kind_at, SCHEMA_VERSION};
pub(crate) use open::{map_open_error, version_error};
pub(crate) use quota::read_alarm;
pub use quota::Alarm;
pub(crate) use quota::SpaceUse;
use sync::GroupSync;
pub(crate) use txn::Txn;

/// The store's sequences and counters: authoritative under the commit lock, published
/// after each commit for lock-free reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Seqs {
    log_head: u64,
    log_trimmed: u64,
    history_seq: u64,
    counts: [u64; 9],
}

impl Seqs {
    /// The newest event-log sequence number.
    pub(crate) fn log_head(&self) -> u64 {
        self.log_head
    }

    /// The highest event-log sequence number retention deleted.
    pub(crate) fn log_trimmed(&self) -> u64 {
        self.log_trimmed
    }

    /// How many executions are in `state`.
    pub(crate) fn count(&self, state: ExecutionState) -> u64 {
        self.counts[slot(state)]
    }
}

fn slot(state: ExecutionState) -> usize {
    usize::from(state.code())
}

/// What readers see: the sequences and counters as of commit number `commit`.
#[derive(Debug, Clone, Default)]
struct Published {
    commit: u64,
    seqs: Seqs,
}

/// Who holds an explicit transaction ([`Engine::begin_tx`]): the tokio task, or the
/// thread when the transaction was begun outside any task (`block_on`).
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One open RocksDB store.
pub(crate) struct Engine {
    /// The database; `None` once closed. A commit holds the read lock while it writes
    /// its batch, so `close` (which takes the write lock) never cuts a write in half: a
    /// commit either wrote before the close (and the close's WAL sync covers it) or finds
    /// the store closed and writes nothing.
    db: RwLock<Option<Arc<DB>>>,
    pub(crate) path: PathBuf,
    pub(crate) kind: StoreKind,
    writer: Arc<tokio::sync::Mutex<Seqs>>,
    published: RwLock<Published>,
    /// The newest batch written and the sequences after it (set under the commit lock),
    /// which a `Sync` store publishes once a WAL sync covers it.
    written: Mutex<Published>,
    /// Number of batches written; a commit's number is the value after its write.
    committed: AtomicU64,
    group: GroupSync,
    head: watch::Sender<u64>,
    closed: AtomicBool,
    /// `None` until a `close` has finished, then its outcome.
    close_done: Arc<watch::Sender<Option<std::result::Result<(), String>>>>,
    /// The holder of the open explicit transaction, if any.
    tx_holder: Mutex<Option<Holder>>,
    poisoned: Mutex<Option<String>>,
    durability: Durability,
    pub(crate) clock: Arc<dyn Clock>,
    /// The previous session ended without a clean close.
    pub(crate) unclean_shutdown: bool,
    /// The store's id (`meta/store_id`).
    pub(crate) store_id: String,
    /// A repair ran in this session (after which a clean close clears the marker even
    /// when the previous session was unclean).
    pub(crate) repaired: AtomicBool,
    /// The space quota in bytes (`OpenOptions::quota_bytes`), if any.
    pub(crate) quota: Option<u64>,
    /// What is known of the store's size, for the quota.
    space: Mutex<quota::Space>,
    /// The NOSPACE alarm, when raised (recorded in `meta`).
    alarm: Mutex<Option<Alarm>>,
    /// The scratch directory of a read-only secondary instance ([`Engine::open_secondary`]);
    /// `None` for a store opened for writing.
    secondary: Option<tempfile::TempDir>,
    /// Makes the next WAL sync fail (tests of poisoning).
    #[cfg(test)]
    fail_next_sync: AtomicBool,
    /// Delays every WAL sync (tests of what readers see meanwhile).
    #[cfg(test)]
    sync_delay: Mutex<std::time::Duration>,
}

/// Seeks `it` to `prefix` and visits each key (and value) under it, in order, until
/// `visit` returns `false`. The iterator may be bounded to the prefix or be kept across
/// prefixes (a page of jobs).
pub(crate) fn visit_prefix(
    it: &mut DBRawIteratorWithThreadMode<'_, DB>,
    prefix: &[u8],
    mut visit: impl FnMut(&[u8], &[u8]) -> Result<bool>,
) -> Result<()> {
    it.seek(prefix);
    while let (Some(k), Some(v)) = (it.key(), it.value()) {
        if !k.starts_with(prefix) || !visit(k, v)? {
            break;
        }
        it.next();
    }
    it.status().map_err(|e| engine_err("scan", e))
}

fn engine_err(context: &str, e: rocksdb::Error) -> StoreError {
    StoreError::backend(context.to_owned(), e)
}

/// What a store's RocksDB holds in memory, in bytes, by RocksDB's own accounting.
/// Memory the process allocates around it (records being decoded, the allocator's
/// reserve, a purge's archive writer) is not counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryUsage {
    /// Memtables, the active ones and those waiting to be flushed (the write budget is
    /// 64 MiB across all families).
    pub memtables: u64,
    /// Open table files' readers: their index and filter blocks, which are kept
    /// outside the block cache.
    pub table_readers: u64,
    /// The block cache every store of the process shares (at most 64 MiB), counted
    /// once for the process.
    pub block_cache: u64,
    /// The part of the block cache held by open iterators and readers, which cannot
    /// be evicted while they hold it.
    pub block_cache_pinned: u64,
}

impl MemoryUsage {
    /// The sum of memtables, table readers and the block cache.
    pub fn total(&self) -> u64 {
        self.memtables + self.table_readers + self.block_cache
    }
}

impl Engine {
    /// What the database holds in memory now.
    pub(crate) fn memory_usage(&self) -> Result<MemoryUsage> {
        let db = self.db()?;
        let cache = open::shared_block_cache();
        let stats = rocksdb::perf::get_memory_usage_stats(Some(&[db.as_ref()]), Some(&[cache]))
            .map_err(|e| engine_err("measure memory", e))?;
        Ok(MemoryUsage {
            memtables: stats.mem_table_total,
            table_readers: stats.mem_table_readers_total,
            block_cache: stats.cache_total,
            block_cache_pinned: cache.get_pinned_usage() as u64,
        })
    }

    /// The open database, or `Closed`.
    pub(crate) fn db(&self) -> Result<Arc<DB>> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        self.db.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone().ok_or(StoreError::Closed)
    }

    pub(crate) fn cf<'d>(&self, db: &'d DB, cf: Cf) -> Result<&'d rocksdb::ColumnFamily> {
        db.cf_handle(cf.name()).ok_or_else(|| StoreError::Corrupt {
            cf: cf.name().to_owned(),
            key: String::new(),
            reason: "column family missing".into(),
        })
    }

    /// Reads and decodes one value.
    pub(crate) fn get_value<T: DeserializeOwned>(&self, cf: Cf, key: &[u8]) -> Result<Option<T>> {
        let db = self.db()?;
        let handle = self.cf(&db, cf)?;
        let raw = db.get_pinned_cf(handle, key).map_err(|e| engine_err("read", e))?;
        raw.map(|bytes| decode(cf, key, &bytes)).transpose()
    }

    /// Reads and decodes the values of `keys` (absent ones skipped), in the order of
    /// `keys`, in one batched lookup: RocksDB reads them from one implicit snapshot and
    /// visits each table block once for the keys it holds.
    pub(crate) fn get_values<T: DeserializeOwned>(&self, cf: Cf, keys: &[Vec<u8>]) -> Result<Vec<T>> {
        let db = self.db()?;
        Ok(self.get_values_at(&db, None, cf, keys)?.into_iter().flatten().collect())
    }

    /// Reads and decodes the values of `keys`, as of `snapshot` when given, one answer
    /// per key in the order of `keys`, in one batched lookup.
    pub(crate) fn get_values_at<T: DeserializeOwned>(
        &self,
        db: &DB,
        snapshot: Option<&Snapshot<'_>>,
        cf: Cf,
        keys: &[Vec<u8>],
    ) -> Result<Vec<Option<T>>> {
        let mut ro = ReadOptions::default();
        if let Some(s) = snapshot {
            ro.set_snapshot(s);
        }
        let handle = self.cf(db, cf)?;
        keys.iter()
            .zip(db.batched_multi_get_cf_opt(handle, keys, false, &ro))
            .map(|(key, raw)| match raw.map_err(|e| engine_err("read", e))? {
                Some(bytes) => decode(cf, key, &bytes).map(Some),
                None => Ok(None),
            })
            .collect()
    }

    /// Whether `key` exists in `cf`, without decoding its value.
    pub(crate) fn contains(&self, cf: Cf, key: &[u8]) -> Result<bool> {
        let db = self.db()?;
        let found = db.get_pinned_cf(self.cf(&db, cf)?, key).map_err(|e| engine_err("read", e))?.is_some();
        Ok(found)
    }

    /// Reads and decodes one value, `NotFound` when absent.
    pub(crate) fn get_required<T: DeserializeOwned>(
        &self,
        cf: Cf,
        key: &[u8],
        missing: impl FnOnce() -> StoreError,
    ) -> Result<T> {
        self.get_value(cf, key)?.ok_or_else(missing)
    }

    /// Visits every key (and value) under `prefix` in `cf`, in order, until `visit`
    /// returns `false`.
    pub(crate) fn scan_prefix(
        &self,
        cf: Cf,
        prefix: &[u8],
        visit: impl FnMut(&[u8], &[u8]) -> Result<bool>,
    ) -> Result<()> {
        let db = self.db()?;
        let mut it = self.iter(&db, cf, prefix, brine_store::keys::prefix_end(prefix))?;
        visit_prefix(&mut it, prefix, visit)
    }

    /// A raw iterator over `cf` bounded to `[lower, upper)`.
    pub(crate) fn iter<'d>(
        &self,
        db: &'d DB,
        cf: Cf,
        lower: &[u8],
        upper: Option<Vec<u8>>,
    ) -> Result<DBRawIteratorWithThreadMode<'d, DB>> {
        self.iter_at(db, None, cf, lower, upper)
    }

    /// A raw iterator over `cf` bounded to `[lower, upper)`, reading `snapshot` when
    /// given.
    pub(crate) fn iter_at<'d>(
        &self,
        db: &'d DB,
        snapshot: Option<&Snapshot<'_>>,
        cf: Cf,
        lower: &[u8],
        upper: Option<Vec<u8>>,
    ) -> Result<DBRawIteratorWithThreadMode<'d, DB>> {
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(lower.to_vec());
        if let Some(u) = upper {
            ro.set_iterate_upper_bound(u);
        }
        if let Some(s) = snapshot {
            ro.set_snapshot(s);
        }
        Ok(db.raw_iterator_cf_opt(self.cf(db, cf)?, ro))
    }

    /// Reads and decodes one value as of `snapshot`.
    pub(crate) fn get_value_at<T: DeserializeOwned>(
        &self,
        db: &DB,
        snapshot: &Snapshot<'_>,
        cf: Cf,
        key: &[u8],
    ) -> Result<Option<T>> {
        let raw = snapshot.get_pinned_cf(self.cf(db, cf)?, key).map_err(|e| engine_err("read", e))?;
        raw.map(|bytes| decode(cf, key, &bytes)).transpose()
    }

    /// The sequences and counters as of the last commit that counts as done (see the
    /// module doc: on a `Sync` store, the last one synced).
    pub(crate) fn published(&self) -> Result<Seqs> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        Ok(self.published.read().unwrap_or_else(PoisonError::into_inner).seqs.clone())
    }

    /// Makes commit `commit` (and its sequences) what readers see, unless a later one
    /// already is, and wakes `wait_for` callers when the head moved.
    fn publish(&self, commit: u64, seqs: &Seqs) {
        let mut published = self.published.write().unwrap_or_else(PoisonError::into_inner);
        if commit <= published.commit {
            return;
        }
        *published = Published { commit, seqs: seqs.clone() };
        let head = seqs.log_head;
        // Under the lock, so two publishers cannot send heads out of order.
        self.head.send_if_modified(|h| {
            let moved = head > *h;
            if moved {
                *h = head;
            }
            moved
        });
    }

    fn check_writable(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        if self.is_read_only() {
            return Err(StoreError::backend(
                "write",
                std::io::Error::new(
                    std::io::ErrorKind::ReadOnlyFilesystem,
                    "the store is open read-only for inspection",
                ),
            ));
        }
        if let Some(reason) = self.poisoned.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone() {
            return Err(StoreError::Poisoned { reason });
        }
        Ok(())
    }

    fn poison(&self, reason: String) -> StoreError {
        let mut p = self.poisoned.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        p.get_or_insert(reason.clone());
        StoreError::Poisoned { reason }
    }

    /// Closes the store: flushes the memtables, syncs the WAL, releases the database
    /// (and its lock file once in-flight reads finish), wakes every waiter.
    ///
    /// Does not wait for an open transaction: its later steps and its commit get
    /// `Closed`. Cancel-safe: the work runs on a blocking thread that finishes even if
    /// this future is dropped, and every `close` call (the first or a later one) waits
    /// for that work to finish and returns its outcome.
    pub(crate) async fn close(&self) -> Result<()> {
        let mut done = self.close_done.subscribe();
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.start_close();
        }
        loop {
            if let Some(outcome) = done.borrow_and_update().clone() {
                return outcome.map_err(|reason| StoreError::backend("close", std::io::Error::other(reason)));
            }
            if done.changed().await.is_err() {
                return Err(StoreError::backend("close", std::io::Error::other("the close task ended early")));
            }
        }
    }

    /// Takes the database away (waiting only for a batch being written) and finishes
    /// the close on a blocking thread, which reports to `close_done`.
    fn start_close(&self) {
        // The marker stays set when this session did not close cleanly (a failed sync
        // poisoned it) or when the previous one did not and no repair has run since, so
        // the next recovery still knows to scan.
        let poisoned = lock(&self.poisoned).is_some();
        let pending = self.unclean_shutdown && !self.repaired.load(Ordering::Acquire);
        let clear_marker = !(poisoned || pending);
        let db = self.db.write().unwrap_or_else(PoisonError::into_inner).take();
        self.head.send_modify(|_| {});
        self.group.wake_all();
        let done = Arc::clone(&self.close_done);
        let Some(db) = db else {
            done.send_replace(Some(Ok(())));
            return;
        };
        if self.is_read_only() {
            // A read-only inspection wrote nothing, so there is nothing to flush or mark.
            drop(db);
            done.send_replace(Some(Ok(())));
            return;
        }
        // Flushing the memtables leaves nothing in the WAL to replay, so the next open
        // is quick however much was written. The marker is written first and made
        // durable by the same flush.
        let kind = self.kind;
        tokio::task::spawn_blocking(move || {
            let outcome = (|| -> Result<()> {
                if clear_marker {
                    let meta_cf = db.cf_handle(Cf::Meta.name()).ok_or_else(|| StoreError::Corrupt {
                        cf: Cf::Meta.name().to_owned(),
                        key: String::new(),
                        reason: "column family missing".into(),
                    })?;
                    db.put_cf(meta_cf, meta::OPEN, encode(&0u64))
                        .map_err(|e| engine_err("clear the open marker", e))?;
                }
                for cf in kind.families() {
                    if let Some(handle) = db.cf_handle(cf.name()) {
                        db.flush_cf(handle).map_err(|e| engine_err("flush on close", e))?;
                    }
                }
                db.flush_wal(true).map_err(|e| engine_err("sync on close", e))
            })();
            // Release the database before reporting, so a caller that reopens the
            // store right after `close` returns finds its lock free.
            drop(db);
            done.send_replace(Some(outcome.map_err(|e| e.to_string())));
        });
    }

    /// Whether this is a read-only secondary instance ([`Engine::open_secondary`]).
    pub(crate) fn is_read_only(&self) -> bool {
        self.secondary.is_some()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.clock.now()
    }
}

#[cfg(test)]
mod tests {
    use brine_store::model::{Execution, ExecutionId, Job, JobId};
    use brine_store::{ExecutionStore, StoreError};

    use crate::{OpenOptions, RocksExecutionStore};

    fn exec(id: &str) -> Execution {
        Execution::new(ExecutionId::new(id).unwrap(), &Job::new(JobId::new("j").unwrap(), "j"))
    }

    #[tokio::test]
    async fn publication_never_goes_backwards() {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksExecutionStore::open(dir.path().join("s.db"), &OpenOptions::default()).unwrap();
        let engine = store.engine();
        let seqs = |head: u64| super::Seqs { log_head: head, ..super::Seqs::default() };
        // Commit 2 (head 11) is published before commit 1 (head 10) gets to it, as when
        // commit 1's writer is preempted between its write and its publication.
        engine.publish(2, &seqs(11));
        engine.publish(1, &seqs(10));
        assert_eq!(engine.published().unwrap().log_head, 11, "a later commit's sequences stay");
        assert_eq!(*engine.subscribe().borrow(), 11, "the head notification does not go back to 10");
        let log = store.event_log();
        let waited = tokio::time::timeout(std::time::Duration::from_millis(200), log.wait_for(10)).await;
        assert_eq!(waited.unwrap().unwrap(), 11, "a waiter for entry 11 does not sleep");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sync_commit_is_published_only_once_synced() {
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let store = RocksExecutionStore::open(dir.path().join("s.db"), &OpenOptions::default()).unwrap();
        *store.engine().sync_delay.lock().unwrap() = Duration::from_millis(500);
        let log = store.event_log();
        let writer = {
            let store = store.clone();
            tokio::spawn(async move { store.create_execution(exec("e-1"), vec![]).await })
        };
        tokio::time::sleep(Duration::from_millis(150)).await;
        // The batch is written but its WAL sync has not finished: a power loss now could
        // take it back, so the log's readers, its waiters and the counters do not see it.
        assert_eq!(log.head().await.unwrap(), 0);
        assert_eq!(store.get_execution_count(brine_store::model::ExecutionState::Created).await.unwrap(), 0);
        assert!(tokio::time::timeout(Duration::from_millis(50), log.wait_for(0)).await.is_err());
        let batch = log.get_events(brine_store::Position::TrimHorizon, 10, &brine_store::EventFilter::all()).await;
        assert!(batch.unwrap().entries.is_empty());
        // Once synced, the writer's acknowledgement and the publication come together.
        writer.await.unwrap().unwrap();
        assert_eq!(log.head().await.unwrap(), 1);
        assert_eq!(store.get_execution_count(brine_store::model::ExecutionState::Created).await.unwrap(), 1);
        store.close().await.unwrap();
    }

    #[tokio::test]
    async fn a_failed_sync_poisons_the_store_for_writes_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksExecutionStore::open(dir.path().join("s.db"), &OpenOptions::default()).unwrap();
        store.create_execution(exec("e-1"), vec![]).await.unwrap();
        store.engine().fail_next_sync.store(true, std::sync::atomic::Ordering::Release);
        let err = store.create_execution(exec("e-2"), vec![]).await.unwrap_err();
        assert!(matches!(err, StoreError::Poisoned { .. }), "{err:?}");
        assert!(err.to_string().contains("refuses writes") && err.to_string().contains("injected"), "{err}");
        // Every later write is refused with the original reason, before anything is written.
        let err = store.create_execution(exec("e-3"), vec![]).await.unwrap_err();
        assert!(err.to_string().contains("injected"), "{err}");
        assert!(store.get_execution(&ExecutionId::new("e-3").unwrap()).await.unwrap_err().is_not_found());
        let err = store.checkpoint("w", 1).await.unwrap_err();
        assert!(matches!(err, StoreError::Poisoned { .. }), "{err:?}");
        // Reads still work, so an operator can inspect what is there.
        assert_eq!(store.get_execution(&ExecutionId::new("e-1").unwrap()).await.unwrap().revision, 1);
        store.close().await.unwrap();
    }
}
