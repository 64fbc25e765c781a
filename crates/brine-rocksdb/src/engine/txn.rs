//! The write transaction: the held commit lock, the pending batch, the overlay that
//! lets reads see pending writes, and the commit.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use brine_store::model::{ExecutionState, LogEntry, LogObject, Operation, Timestamp};
use brine_store::{Result, StoreError};
use rocksdb::{WriteBatch, WriteOptions};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::OwnedMutexGuard;

use super::{engine_err, lock, slot, Engine, Holder, Published, Seqs, SpaceUse};
use crate::cf::Cf;
use crate::codec::{decode, encode};
use crate::layout::{self, meta};
use crate::Durability;

/// A write in progress: holds the commit lock, the pending batch and an overlay of the
/// pending writes so that reads see them.
pub(crate) struct Txn {
    engine: Arc<Engine>,
    guard: OwnedMutexGuard<Seqs>,
    seqs: Seqs,
    batch: WriteBatch,
    overlay: BTreeMap<(Cf, Vec<u8>), Option<Vec<u8>>>,
    /// Prefixes deleted whole in this transaction (range deletes): keys under them read
    /// as absent unless the overlay has a later write.
    cleared: Vec<(Cf, Vec<u8>)>,
    /// Set for an explicit transaction: forgets its holder when the transaction ends.
    holder: Option<HolderMark>,
    /// What the write does to the store's size, for the quota.
    space: SpaceUse,
}

/// Clears the store's transaction holder when an explicit transaction ends (commit,
/// rollback or drop).
struct HolderMark(Arc<Engine>);

impl Drop for HolderMark {
    fn drop(&mut self) {
        *lock(&self.0.tx_holder) = None;
    }
}

impl Engine {
    /// Starts a write: waits for the commit lock.
    ///
    /// Fails with `TransactionHeld` instead of waiting forever when the calling task
    /// holds an explicit transaction on this store (it would wait for itself).
    pub(crate) async fn begin(self: &Arc<Self>) -> Result<Txn> {
        self.check_writable()?;
        // A cooperative yield point: a task writing in a loop on an uncontended store
        // still lets the other tasks of its runtime run (tokio's task budget).
        tokio::task::coop::consume_budget().await;
        let guard = match Arc::clone(&self.writer).try_lock_owned() {
            Ok(guard) => guard,
            Err(_) => {
                if *lock(&self.tx_holder) == Some(Holder::current()) {
                    return Err(StoreError::TransactionHeld);
                }
                Arc::clone(&self.writer).lock_owned().await
            }
        };
        self.check_writable()?;
        let seqs = guard.clone();
        Ok(Txn {
            engine: Arc::clone(self),
            guard,
            seqs,
            batch: WriteBatch::default(),
            overlay: BTreeMap::new(),
            cleared: Vec::new(),
            holder: None,
            space: SpaceUse::Unknown,
        })
    }

    /// Starts an explicit transaction (`begin_tx`): a write held open by the caller,
    /// whose task is remembered so that a plain write from the same task is refused
    /// rather than deadlocking.
    pub(crate) async fn begin_tx(self: &Arc<Self>) -> Result<Txn> {
        let mut txn = self.begin().await?;
        *lock(&self.tx_holder) = Some(Holder::current());
        txn.holder = Some(HolderMark(Arc::clone(self)));
        Ok(txn)
    }
}

impl Txn {
    pub(crate) fn now(&self) -> Timestamp {
        self.engine.now()
    }

    /// Reads raw bytes: the transaction's own write if any, else the database.
    pub(crate) fn get_raw(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(pending) = self.overlay.get(&(cf, key.to_vec())) {
            return Ok(pending.clone());
        }
        if self.is_cleared(cf, key) {
            return Ok(None);
        }
        let db = self.engine.db()?;
        let handle = self.engine.cf(&db, cf)?;
        let value = db.get_pinned_cf(handle, key).map_err(|e| engine_err("read", e))?.map(|v| v.to_vec());
        Ok(value)
    }

    /// Reads and decodes a value, seeing pending writes.
    pub(crate) fn get<T: DeserializeOwned>(&self, cf: Cf, key: &[u8]) -> Result<Option<T>> {
        self.get_raw(cf, key)?.map(|bytes| decode(cf, key, &bytes)).transpose()
    }

    /// Whether a key exists, seeing pending writes.
    pub(crate) fn exists(&self, cf: Cf, key: &[u8]) -> Result<bool> {
        Ok(self.get_raw(cf, key)?.is_some())
    }

    /// Queues a put of raw bytes.
    pub(crate) fn put_raw(&mut self, cf: Cf, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        let db = self.engine.db()?;
        self.batch.put_cf(self.engine.cf(&db, cf)?, &key, &value);
        self.overlay.insert((cf, key), Some(value));
        Ok(())
    }

    /// Queues a put of an encoded value.
    pub(crate) fn put<T: Serialize + ?Sized>(&mut self, cf: Cf, key: Vec<u8>, value: &T) -> Result<()> {
        self.put_raw(cf, key, encode(value))
    }

    /// Queues a delete.
    pub(crate) fn delete(&mut self, cf: Cf, key: Vec<u8>) -> Result<()> {
        let db = self.engine.db()?;
        self.batch.delete_cf(self.engine.cf(&db, cf)?, &key);
        self.overlay.insert((cf, key), None);
        Ok(())
    }

    fn is_cleared(&self, cf: Cf, key: &[u8]) -> bool {
        self.cleared.iter().any(|(c, p)| *c == cf && key.starts_with(p))
    }

    /// Queues the delete of every key under `prefix` as one range delete (no scan), for
    /// key spaces a write removes whole (a job's versions and history).
    pub(crate) fn clear_prefix(&mut self, cf: Cf, prefix: &[u8]) -> Result<()> {
        let Some(end) = brine_store::keys::prefix_end(prefix) else {
            self.delete_prefix(cf, prefix)?;
            return Ok(());
        };
        let db = self.engine.db()?;
        self.batch.delete_range_cf(self.engine.cf(&db, cf)?, prefix, &end);
        // Pending writes under the prefix are deleted by the range (it comes later in
        // the batch); the overlay says so too.
        for ((_, _), v) in self.overlay.range_mut((cf, prefix.to_vec())..(cf, end)) {
            *v = None;
        }
        self.cleared.push((cf, prefix.to_vec()));
        Ok(())
    }

    /// The keys under `prefix`, seeing pending writes.
    pub(crate) fn keys_with_prefix(&self, cf: Cf, prefix: &[u8]) -> Result<Vec<Vec<u8>>> {
        Ok(self.merged(cf, prefix, false)?.into_keys().collect())
    }

    /// The keys and values under `prefix`, seeing pending writes (for small key spaces
    /// such as one job's index entries).
    pub(crate) fn entries_with_prefix(&self, cf: Cf, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(self.merged(cf, prefix, true)?.into_iter().collect())
    }

    /// What is under `prefix` once the pending writes apply; values only when asked.
    fn merged(&self, cf: Cf, prefix: &[u8], values: bool) -> Result<BTreeMap<Vec<u8>, Vec<u8>>> {
        let mut out = BTreeMap::new();
        self.engine.scan_prefix(cf, prefix, |k, v| {
            if !self.is_cleared(cf, k) {
                out.insert(k.to_vec(), if values { v.to_vec() } else { Vec::new() });
            }
            Ok(true)
        })?;
        for ((c, k), v) in self.overlay.range((cf, prefix.to_vec())..) {
            if *c != cf || !k.starts_with(prefix) {
                break;
            }
            match v {
                Some(v) => out.insert(k.clone(), if values { v.clone() } else { Vec::new() }),
                None => out.remove(k),
            };
        }
        Ok(out)
    }

    /// The smallest key under `prefix`, seeing pending writes; reads one key from disk
    /// per pending delete it skips, not the whole prefix.
    pub(crate) fn first_key_with_prefix(&self, cf: Cf, prefix: &[u8]) -> Result<Option<Vec<u8>>> {
        let pending = self
            .overlay
            .range((cf, prefix.to_vec())..)
            .take_while(|((c, k), _)| *c == cf && k.starts_with(prefix))
            .find(|(_, v)| v.is_some())
            .map(|((_, k), _)| k.clone());
        let db = self.engine.db()?;
        let mut it = self.engine.iter(&db, cf, prefix, brine_store::keys::prefix_end(prefix))?;
        it.seek(prefix);
        let mut on_disk = None;
        while it.valid() {
            let Some(k) = it.key() else { break };
            let visible = match self.overlay.get(&(cf, k.to_vec())) {
                Some(pending) => pending.is_some(),
                None => !self.is_cleared(cf, k),
            };
            if visible {
                on_disk = Some(k.to_vec());
                break;
            }
            it.next();
        }
        it.status().map_err(|e| engine_err("scan", e))?;
        Ok(match (pending, on_disk) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Visits the keys under `prefix` in order, seeing pending writes, until `visit`
    /// returns false. Reads from disk only as far as `visit` goes, unless this
    /// transaction has written under the prefix (then it merges the whole prefix).
    pub(crate) fn scan_keys(&self, cf: Cf, prefix: &[u8], mut visit: impl FnMut(&[u8]) -> Result<bool>) -> Result<()> {
        let pending = self
            .overlay
            .range((cf, prefix.to_vec())..)
            .next()
            .is_some_and(|((c, k), _)| *c == cf && k.starts_with(prefix));
        if pending || self.cleared.iter().any(|(c, _)| *c == cf) {
            for key in self.keys_with_prefix(cf, prefix)? {
                if !visit(&key)? {
                    break;
                }
            }
            return Ok(());
        }
        self.engine.scan_prefix(cf, prefix, |k, _| visit(k))
    }

    /// Queues deletes of every key under `prefix`.
    pub(crate) fn delete_prefix(&mut self, cf: Cf, prefix: &[u8]) -> Result<usize> {
        let keys = self.keys_with_prefix(cf, prefix)?;
        let n = keys.len();
        for k in keys {
            self.delete(cf, k)?;
        }
        Ok(n)
    }

    /// Queues an event-log entry and returns its sequence number.
    pub(crate) fn append_log(&mut self, operation: Operation, object: LogObject, now: Timestamp) -> Result<u64> {
        self.seqs.log_head += 1;
        let seq = self.seqs.log_head;
        let entry = LogEntry { seq, operation, object_type: object.object_type(), object, timestamp: now };
        self.put(Cf::Events, layout::log_entry(seq), &entry)?;
        Ok(seq)
    }

    /// Marks this write as one that frees space (a delete, a purge, retention): a
    /// store past its quota still takes it, unless a step of it also adds data.
    pub(crate) fn frees_space(&mut self) {
        if self.space == SpaceUse::Unknown {
            self.space = SpaceUse::Frees;
        }
    }

    /// Marks this write as one that adds data (a step of an explicit transaction that
    /// creates or changes a record).
    pub(crate) fn adds_space(&mut self) {
        self.space = SpaceUse::Adds;
    }

    /// Queues event-log entries exactly as given (a load, `rules::log_load`), returning
    /// the new head.
    pub(crate) fn load_log(&mut self, after: u64, entries: &[LogEntry]) -> Result<u64> {
        let now = brine_store::rules::LogBounds { head: self.seqs.log_head, trimmed: self.seqs.log_trimmed };
        let next = brine_store::rules::log_load(now, after, entries)?;
        for entry in entries {
            self.put(Cf::Events, layout::log_entry(entry.seq), entry)?;
        }
        self.seqs.log_head = next.head;
        self.seqs.log_trimmed = next.trimmed;
        Ok(next.head)
    }

    /// Moves the history sequence up to at least `seq` (a load keeps the numbers of the
    /// entries it stores).
    pub(crate) fn raise_history_seq(&mut self, seq: u64) {
        self.seqs.history_seq = self.seqs.history_seq.max(seq);
    }

    /// The store's sequences and counters as this write has them so far.
    pub(crate) fn seqs(&self) -> &Seqs {
        &self.seqs
    }

    /// Counts a new execution in `state`.
    pub(crate) fn count_added(&mut self, state: ExecutionState) {
        self.seqs.counts[slot(state)] += 1;
    }

    /// Counts an execution that left the store from `state`. A counter already at 0 is
    /// wrong on disk, which `brine db check` reports and recovery repairs, so it stays
    /// at 0 rather than wrapping.
    pub(crate) fn count_removed(&mut self, state: ExecutionState) {
        let counter = &mut self.seqs.counts[slot(state)];
        *counter = counter.saturating_sub(1);
    }

    /// Counts an execution that moved from `from` to `to`.
    pub(crate) fn move_count(&mut self, from: ExecutionState, to: ExecutionState) {
        if from != to {
            self.count_removed(from);
            self.count_added(to);
        }
    }

    /// Sets the counter of `state` (repair, and the faults tests inject).
    pub(crate) fn set_count(&mut self, state: ExecutionState, n: u64) {
        self.seqs.counts[slot(state)] = n;
    }

    /// Records that retention deleted the event log up to `seq`.
    pub(crate) fn set_log_trimmed(&mut self, seq: u64) {
        self.seqs.log_trimmed = seq;
    }

    /// The next history sequence number.
    pub(crate) fn next_history_seq(&mut self) -> u64 {
        self.seqs.history_seq += 1;
        self.seqs.history_seq
    }

    /// Writes the batch. Sequences and counters that changed are written with it; a
    /// `Sync` store returns once the batch is on disk.
    pub(crate) async fn commit(mut self) -> Result<()> {
        let before = self.guard.clone();
        let changed: Vec<(&[u8], u64, u64)> = vec![
            (meta::LOG_HEAD, before.log_head, self.seqs.log_head),
            (meta::LOG_TRIMMED, before.log_trimmed, self.seqs.log_trimmed),
            (meta::HISTORY_SEQ, before.history_seq, self.seqs.history_seq),
        ];
        for (key, old, new) in changed {
            if old != new {
                self.put(Cf::Meta, key.to_vec(), &new)?;
            }
        }
        for code in 0..9u8 {
            let (old, new) = (before.counts[usize::from(code)], self.seqs.counts[usize::from(code)]);
            if old != new {
                self.put(Cf::Meta, meta::count(code), &new)?;
            }
        }
        if self.batch.is_empty() {
            return Ok(());
        }
        let engine = Arc::clone(&self.engine);
        let batch = std::mem::take(&mut self.batch);
        let bytes = batch.size_in_bytes() as u64;
        // Under the commit lock: the quota's estimate moves in commit order.
        engine.admit(bytes, self.space)?;
        let commit = {
            // Held while the batch is written, so a close waits for this write (and
            // then syncs it) or has already happened (and nothing is written).
            let db = engine.db.read().unwrap_or_else(PoisonError::into_inner);
            let Some(db) = db.as_ref().filter(|_| !engine.closed.load(Ordering::Acquire)) else {
                return Err(StoreError::Closed);
            };
            let mut wo = WriteOptions::default();
            wo.set_sync(false);
            if let Err(e) = db.write_opt(batch, &wo) {
                // A failed write (a full disk, an I/O error) may have left part of the
                // batch in the write-ahead log; RocksDB itself stops taking writes.
                // Poisoning makes every later write say so by name; reads go on, and
                // a reopen with room again replays what was acknowledged.
                return Err(engine.poison(format!("write failed: {e}")));
            }
            engine.committed.fetch_add(1, Ordering::AcqRel) + 1
        };
        engine.written(bytes);
        *self.guard = self.seqs.clone();
        match engine.durability {
            Durability::Buffered => {
                engine.publish(commit, &self.seqs);
                drop(self.guard);
                drop(self.holder);
                Ok(())
            }
            Durability::Sync => {
                *lock(&engine.written) = Published { commit, seqs: self.seqs.clone() };
                drop(self.guard);
                drop(self.holder);
                engine.sync_up_to(commit).await
            }
        }
    }
}
