//! The write transaction: the held commit lock, the pending writes (which reads of the
//! same transaction see), and the commit.
//!
//! Pending writes are kept once, in order, as [`Pending`] entries; the `WriteBatch` is
//! built from them at commit, looking up each family's handle once. A small write (a
//! create is six entries) is read back by a scan from the newest entry; from
//! [`INDEX_FROM`] entries on, a key index keeps reads of a large transaction (a purge,
//! a load) logarithmic.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use brine_store::codec::{encode_change, RecordKind};
use brine_store::model::{Event, ExecutionState, LogEntry, LogObject, Operation, Timestamp};
use brine_store::{Result, StoreError};
use rocksdb::{WriteBatch, WriteOptions, DB};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::OwnedMutexGuard;

use super::{engine_err, lock, slot, Engine, Holder, Published, Seqs, SpaceUse};
use crate::cf::Cf;
use crate::codec::{decode, encode};
use crate::layout::{self, meta};
use crate::Durability;

/// One pending write, kept in the order the transaction made it.
enum Pending {
    Put(Cf, Vec<u8>, Vec<u8>),
    Delete(Cf, Vec<u8>),
    /// Every key under a prefix (one range delete, `[prefix, end)`).
    Clear {
        cf: Cf,
        prefix: Vec<u8>,
        end: Vec<u8>,
    },
}

impl Pending {
    fn cf(&self) -> Cf {
        match self {
            Pending::Put(cf, ..) | Pending::Delete(cf, _) | Pending::Clear { cf, .. } => *cf,
        }
    }

    /// The key a put or delete writes.
    fn key(&self) -> Option<&[u8]> {
        match self {
            Pending::Put(_, k, _) | Pending::Delete(_, k) => Some(k),
            Pending::Clear { .. } => None,
        }
    }

    /// What a read of this entry's key sees: the value put, or nothing.
    fn value(&self) -> Option<&[u8]> {
        match self {
            Pending::Put(_, _, v) => Some(v),
            Pending::Delete(..) | Pending::Clear { .. } => None,
        }
    }

    /// Whether this is a range delete covering `key` of `cf`.
    fn clears(&self, cf: Cf, key: &[u8]) -> bool {
        matches!(self, Pending::Clear { cf: c, prefix, .. } if *c == cf && key.starts_with(prefix))
    }
}

/// From this many pending writes on, a transaction indexes them by key.
const INDEX_FROM: usize = 32;

/// From this many bytes on, a commit builds and writes its batch on a blocking thread.
const OFF_RUNTIME_BYTES: usize = 512 << 10;

/// A write in progress: holds the commit lock and the pending writes, which reads of
/// this transaction see.
pub(crate) struct Txn {
    engine: Arc<Engine>,
    guard: OwnedMutexGuard<Seqs>,
    seqs: Seqs,
    writes: Vec<Pending>,
    /// Each key's newest put or delete (its position in `writes`), kept once the
    /// transaction has [`INDEX_FROM`] writes.
    index: Option<BTreeMap<(Cf, Vec<u8>), usize>>,
    /// The positions of the range deletes in `writes`.
    clears: Vec<usize>,
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
            writes: Vec::new(),
            index: None,
            clears: Vec::new(),
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

    /// What this transaction's own writes say about `key`: `Some(Some(value))` put,
    /// `Some(None)` deleted, `None` untouched (the database has the answer).
    fn pending(&self, cf: Cf, key: &[u8]) -> Option<Option<&[u8]>> {
        let newest = match &self.index {
            Some(index) => index.get(&(cf, key.to_vec())).copied(),
            None => self.writes.iter().rposition(|w| w.cf() == cf && w.key() == Some(key)),
        };
        // A range delete after the key's newest write (or any, when it has none) hides it.
        let cleared = self.clears.iter().any(|&at| newest.is_none_or(|n| at > n) && self.writes[at].clears(cf, key));
        if cleared {
            return Some(None);
        }
        newest.map(|at| self.writes[at].value())
    }

    /// Reads `key` (the transaction's own write if any, else the database) and hands
    /// the bytes to `f` without copying them.
    fn read<R>(&self, cf: Cf, key: &[u8], f: impl FnOnce(Option<&[u8]>) -> Result<R>) -> Result<R> {
        if let Some(pending) = self.pending(cf, key) {
            return f(pending);
        }
        let db = self.engine.db()?;
        let handle = self.engine.cf(&db, cf)?;
        let value = db.get_pinned_cf(handle, key).map_err(|e| engine_err("read", e))?;
        f(value.as_deref())
    }

    /// Reads raw bytes, seeing pending writes.
    #[cfg(test)]
    pub(crate) fn get_raw(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.read(cf, key, |v| Ok(v.map(<[u8]>::to_vec)))
    }

    /// Reads and decodes a value, seeing pending writes.
    pub(crate) fn get<T: DeserializeOwned>(&self, cf: Cf, key: &[u8]) -> Result<Option<T>> {
        self.read(cf, key, |v| v.map(|bytes| decode(cf, key, bytes)).transpose())
    }

    /// Reads and decodes a value, seeing pending writes, with the bytes it decoded from
    /// (for a log entry that carries the value as it was: `codec::encode_change`).
    pub(crate) fn get_encoded<T: DeserializeOwned>(&self, cf: Cf, key: &[u8]) -> Result<Option<(T, Vec<u8>)>> {
        self.read(cf, key, |v| v.map(|bytes| Ok((decode(cf, key, bytes)?, bytes.to_vec()))).transpose())
    }

    /// Whether a key exists, seeing pending writes.
    pub(crate) fn exists(&self, cf: Cf, key: &[u8]) -> Result<bool> {
        self.read(cf, key, |v| Ok(v.is_some()))
    }

    fn push(&mut self, write: Pending) {
        let at = self.writes.len();
        match (&write, &mut self.index) {
            (Pending::Clear { .. }, _) => self.clears.push(at),
            (Pending::Put(cf, key, _) | Pending::Delete(cf, key), Some(index)) => {
                index.insert((*cf, key.clone()), at);
            }
            _ => {}
        }
        self.writes.push(write);
        if self.index.is_none() && self.writes.len() >= INDEX_FROM {
            let mut index = BTreeMap::new();
            for (at, w) in self.writes.iter().enumerate() {
                if let Some(key) = w.key() {
                    index.insert((w.cf(), key.to_vec()), at);
                }
            }
            self.index = Some(index);
        }
    }

    /// Queues a put of raw bytes.
    pub(crate) fn put_raw(&mut self, cf: Cf, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        self.push(Pending::Put(cf, key, value));
        Ok(())
    }

    /// Queues a put of an encoded value.
    pub(crate) fn put<T: Serialize + ?Sized>(&mut self, cf: Cf, key: Vec<u8>, value: &T) -> Result<()> {
        self.put_raw(cf, key, encode(value))
    }

    /// Queues a delete.
    pub(crate) fn delete(&mut self, cf: Cf, key: Vec<u8>) -> Result<()> {
        self.push(Pending::Delete(cf, key));
        Ok(())
    }

    /// Whether a range delete of this transaction covers `key` of `cf` (for keys read
    /// from the database).
    fn is_cleared(&self, cf: Cf, key: &[u8]) -> bool {
        self.clears.iter().any(|&at| self.writes[at].clears(cf, key))
    }

    /// Queues the delete of every key under `prefix` as one range delete (no scan), for
    /// key spaces a write removes whole (a job's versions and history).
    pub(crate) fn clear_prefix(&mut self, cf: Cf, prefix: &[u8]) -> Result<()> {
        let Some(end) = brine_store::keys::prefix_end(prefix) else {
            self.delete_prefix(cf, prefix)?;
            return Ok(());
        };
        self.push(Pending::Clear { cf, prefix: prefix.to_vec(), end });
        Ok(())
    }

    /// The newest state of each key under `prefix` this transaction wrote, in key
    /// order: `Some(value)` put, `None` deleted.
    fn pending_under(&self, cf: Cf, prefix: &[u8]) -> BTreeMap<&[u8], Option<&[u8]>> {
        let mut out = BTreeMap::new();
        match &self.index {
            Some(index) => {
                for ((_, key), &at) in
                    index.range((cf, prefix.to_vec())..).take_while(|((c, k), _)| *c == cf && k.starts_with(prefix))
                {
                    let cleared = self.clears.iter().any(|&c| c > at && self.writes[c].clears(cf, key));
                    out.insert(key.as_slice(), if cleared { None } else { self.writes[at].value() });
                }
            }
            None => {
                for w in &self.writes {
                    match w.key() {
                        Some(key) if w.cf() == cf && key.starts_with(prefix) => {
                            out.insert(key, w.value());
                        }
                        Some(_) => {}
                        None => {
                            for (key, value) in out.iter_mut() {
                                if w.clears(cf, key) {
                                    *value = None;
                                }
                            }
                        }
                    }
                }
            }
        }
        out
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
        for (k, v) in self.pending_under(cf, prefix) {
            match v {
                Some(v) => out.insert(k.to_vec(), if values { v.to_vec() } else { Vec::new() }),
                None => out.remove(k),
            };
        }
        Ok(out)
    }

    /// The smallest key under `prefix`, seeing pending writes; reads one key from disk
    /// per pending delete it skips, not the whole prefix.
    pub(crate) fn first_key_with_prefix(&self, cf: Cf, prefix: &[u8]) -> Result<Option<Vec<u8>>> {
        let pending = self.pending_under(cf, prefix);
        let first_pending = pending.iter().find(|(_, v)| v.is_some()).map(|(k, _)| k.to_vec());
        let db = self.engine.db()?;
        let mut it = self.engine.iter(&db, cf, prefix, brine_store::keys::prefix_end(prefix))?;
        it.seek(prefix);
        let mut on_disk = None;
        while it.valid() {
            let Some(k) = it.key() else { break };
            let visible = match pending.get(k) {
                Some(state) => state.is_some(),
                None => !self.is_cleared(cf, k),
            };
            if visible {
                on_disk = Some(k.to_vec());
                break;
            }
            it.next();
        }
        it.status().map_err(|e| engine_err("scan", e))?;
        Ok(match (first_pending, on_disk) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Visits the keys under `prefix` in order, seeing pending writes, until `visit`
    /// returns false. Reads from disk only as far as `visit` goes, unless this
    /// transaction has written under the prefix (then it merges the whole prefix).
    pub(crate) fn scan_keys(&self, cf: Cf, prefix: &[u8], mut visit: impl FnMut(&[u8]) -> Result<bool>) -> Result<()> {
        let touched = self.writes.iter().any(|w| w.cf() == cf && w.key().is_some_and(|k| k.starts_with(prefix)));
        if touched || self.clears.iter().any(|&at| self.writes[at].cf() == cf) {
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

    /// Queues the event-log entry of an execution or job change whose records are given
    /// encoded (`current` as just encoded for its put, `previous` as read), and returns
    /// its sequence number: the entry [`Txn::append_log`] would write, without encoding
    /// the records again.
    pub(crate) fn append_change(
        &mut self,
        operation: Operation,
        kind: RecordKind,
        records: (Option<&[u8]>, Option<&[u8]>),
        events: &[Event],
        now: Timestamp,
    ) -> Result<u64> {
        self.seqs.log_head += 1;
        let seq = self.seqs.log_head;
        let (current, previous) = records;
        let entry = encode_change(seq, operation, kind, current, previous, events, now);
        self.put_raw(Cf::Events, layout::log_entry(seq), entry)?;
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

    /// About how many bytes the write batch of the pending writes takes.
    fn batch_bytes(&self) -> usize {
        self.writes
            .iter()
            .map(|w| match w {
                Pending::Put(_, k, v) => k.len() + v.len() + 16,
                Pending::Delete(_, k) => k.len() + 8,
                Pending::Clear { prefix, end, .. } => prefix.len() + end.len() + 16,
            })
            .sum()
    }

    /// The write batch of the pending writes, in order; each family's handle is looked
    /// up once.
    fn batch(&self, db: &DB) -> Result<WriteBatch> {
        // Sized up front: one allocation instead of a growing buffer copied as it grows.
        let mut batch = WriteBatch::with_capacity_bytes(self.batch_bytes() + 12);
        let mut handles: [Option<&rocksdb::ColumnFamily>; Cf::ALL.len()] = [None; Cf::ALL.len()];
        for w in &self.writes {
            let slot = &mut handles[w.cf().index()];
            let handle = match *slot {
                Some(handle) => handle,
                None => *slot.insert(self.engine.cf(db, w.cf())?),
            };
            match w {
                Pending::Put(_, k, v) => batch.put_cf(handle, k, v),
                Pending::Delete(_, k) => batch.delete_cf(handle, k),
                Pending::Clear { prefix, end, .. } => batch.delete_range_cf(handle, prefix, end),
            }
        }
        Ok(batch)
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
        if self.writes.is_empty() {
            return Ok(());
        }
        let engine = Arc::clone(&self.engine);
        let commit = if self.batch_bytes() >= OFF_RUNTIME_BYTES {
            // A large batch (a recovery or purge batch, a load) takes milliseconds to
            // build and write: a blocking thread does it, and the caller's thread is free
            // meanwhile (recovery reads its next batch then). The closure owns the
            // transaction, so a caller dropped here leaves the write to finish whole,
            // with its bookkeeping, or not happen at all. The calling task no longer
            // holds the transaction: a write it starts next waits for this one to
            // finish instead of being refused as its own holder's.
            drop(self.holder.take());
            tokio::task::spawn_blocking(move || self.write()).await.map_err(|e| {
                if e.is_panic() {
                    engine.poison(format!("a commit task failed: {e}"))
                } else {
                    // Never run (the runtime is shutting down): nothing was written.
                    StoreError::backend("commit", e)
                }
            })??
        } else {
            self.write()?
        };
        match engine.durability {
            Durability::Buffered => Ok(()),
            Durability::Sync => engine.sync_up_to(commit).await,
        }
    }

    /// Builds and writes the batch, then makes the commit count: the sequences move,
    /// and it is published (`Buffered`) or handed to the group sync (`Sync`). Returns the
    /// commit's number; the commit lock is released on return.
    fn write(self) -> Result<u64> {
        let engine = Arc::clone(&self.engine);
        let batch = self.batch(&*engine.db()?)?;
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
        let Txn { mut guard, seqs, holder, .. } = self;
        *guard = seqs.clone();
        match engine.durability {
            Durability::Buffered => engine.publish(commit, &seqs),
            Durability::Sync => *lock(&engine.written) = Published { commit, seqs },
        }
        drop(guard);
        drop(holder);
        Ok(commit)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::{Cf, INDEX_FROM};
    use crate::cf::StoreKind;
    use crate::engine::Engine;
    use crate::OpenOptions;

    /// One step of a script of writes: put, delete, or clear a prefix.
    #[derive(Clone, Copy)]
    enum Step {
        Put(&'static str, &'static str),
        Delete(&'static str),
        Clear(&'static str),
    }

    /// Runs `script` in one transaction over a store already holding `on_disk`, after
    /// `filler` unrelated writes (enough of them switch the transaction to its key
    /// index), and checks every read against a model of what the writes leave.
    async fn check(on_disk: &[&str], script: &[Step], filler: usize) {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(&dir.path().join("s.db"), StoreKind::Compute, &OpenOptions::default()).unwrap();
        let mut txn = engine.begin().await.unwrap();
        for k in on_disk {
            txn.put_raw(Cf::Checkpoints, k.as_bytes().to_vec(), format!("disk {k}").into_bytes()).unwrap();
        }
        txn.commit().await.unwrap();
        let mut model: BTreeMap<String, String> =
            on_disk.iter().map(|k| (k.to_string(), format!("disk {k}"))).collect();
        let mut txn = engine.begin().await.unwrap();
        for i in 0..filler {
            txn.put_raw(Cf::Meta, format!("filler-{i}").into_bytes(), vec![]).unwrap();
        }
        for step in script {
            match *step {
                Step::Put(k, v) => {
                    txn.put_raw(Cf::Checkpoints, k.as_bytes().to_vec(), v.as_bytes().to_vec()).unwrap();
                    model.insert(k.into(), v.into());
                }
                Step::Delete(k) => {
                    txn.delete(Cf::Checkpoints, k.as_bytes().to_vec()).unwrap();
                    model.remove(k);
                }
                Step::Clear(p) => {
                    txn.clear_prefix(Cf::Checkpoints, p.as_bytes()).unwrap();
                    model.retain(|k, _| !k.starts_with(p));
                }
            }
        }
        assert_eq!(txn.index.is_some(), txn.writes.len() >= INDEX_FROM, "indexed past {INDEX_FROM} writes");
        for key in ["a", "a1", "a2", "a3", "b", "b1", "b2", "c"] {
            let got = txn.get_raw(Cf::Checkpoints, key.as_bytes()).unwrap();
            assert_eq!(got, model.get(key).map(|v| v.clone().into_bytes()), "{key} (filler {filler})");
            assert_eq!(txn.exists(Cf::Checkpoints, key.as_bytes()).unwrap(), model.contains_key(key));
        }
        for prefix in ["", "a", "b", "c"] {
            let want: Vec<(Vec<u8>, Vec<u8>)> = model
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| (k.clone().into_bytes(), v.clone().into_bytes()))
                .collect();
            assert_eq!(txn.entries_with_prefix(Cf::Checkpoints, prefix.as_bytes()).unwrap(), want, "{prefix:?}");
            let first = txn.first_key_with_prefix(Cf::Checkpoints, prefix.as_bytes()).unwrap();
            assert_eq!(first, want.first().map(|(k, _)| k.clone()), "first under {prefix:?}");
            let mut seen = Vec::new();
            txn.scan_keys(Cf::Checkpoints, prefix.as_bytes(), |k| {
                seen.push(k.to_vec());
                Ok(true)
            })
            .unwrap();
            assert_eq!(seen, want.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(), "scan {prefix:?}");
        }
        txn.commit().await.unwrap();
        let mut stored = Vec::new();
        engine
            .scan_prefix(Cf::Checkpoints, &[], |k, v| {
                stored.push((String::from_utf8(k.to_vec()).unwrap(), String::from_utf8(v.to_vec()).unwrap()));
                Ok(true)
            })
            .unwrap();
        assert_eq!(stored, model.into_iter().collect::<Vec<_>>(), "committed (filler {filler})");
        engine.close().await.unwrap();
    }

    #[tokio::test]
    async fn a_transaction_reads_its_own_writes_small_or_indexed() {
        use Step::*;
        let scripts: Vec<Vec<Step>> = vec![
            vec![Put("a1", "x"), Put("b1", "y"), Delete("a2"), Put("a1", "z")],
            vec![Clear("a"), Put("a3", "new"), Delete("b2")],
            vec![Put("a3", "before"), Clear("a"), Put("a1", "after"), Delete("c")],
            vec![Put("b1", "1"), Delete("b1"), Put("b2", "2"), Clear("b"), Put("b1", "3")],
            vec![Delete("a1"), Delete("a2"), Put("a2", "back")],
        ];
        for script in &scripts {
            for filler in [0, INDEX_FROM - 2, INDEX_FROM] {
                check(&["a1", "a2", "b2", "c"], script, filler).await;
            }
        }
    }
}
