//! The event log of a RocksDB store: the `events` and `checkpoints` families.

use std::sync::Arc;

use async_trait::async_trait;
use brine_store::model::{LogEntry, LogObject, Operation, Timestamp};
use brine_store::{rules, validate_checkpoint_name, EventBatch, EventFilter, EventLog, Position, Result, StoreError};

use crate::cf::Cf;
use crate::codec::decode;
use crate::engine::Engine;
use crate::layout::{self, corrupt_key, meta};

/// The [`EventLog`] of a RocksDB store.
pub(crate) struct RocksEventLog(pub(crate) Arc<Engine>);

#[async_trait]
impl EventLog for RocksEventLog {
    async fn get_events(&self, from: Position, limit: usize, filter: &EventFilter) -> Result<EventBatch> {
        rules::check_limit(limit)?;
        let seqs = self.0.published()?;
        let first = rules::first_seq(from, seqs.log_head(), seqs.log_trimmed())?;
        let mut entries = Vec::new();
        let mut last = first - 1;
        if first <= seqs.log_head() {
            let db = self.0.db()?;
            // The iterator reads one consistent view; a trim that committed after the
            // sequences above were read shows as entries missing from `first` on, which
            // is `Compacted`, never a silent gap.
            let mut it = self.0.iter(
                &db,
                Cf::Events,
                &layout::log_entry(first),
                Some(layout::log_entry(seqs.log_head() + 1)),
            )?;
            it.seek(layout::log_entry(first));
            let mut expected = first;
            // Bounded: a selective filter reads on from `next` in the following call.
            while it.valid() && entries.len() < limit && expected - first < rules::MAX_EXAMINED as u64 {
                let (Some(k), Some(v)) = (it.key(), it.value()) else { break };
                let entry: LogEntry = decode(Cf::Events, k, v)?;
                if entry.seq != expected {
                    return Err(self.missing_from(expected)?);
                }
                expected += 1;
                last = entry.seq;
                if filter.matches(&entry) {
                    entries.push(entry);
                }
                it.next();
            }
            it.status().map_err(|e| StoreError::backend("read the event log", e))?;
            if expected == first {
                // Nothing at `first` although it is at or below the head.
                return Err(self.missing_from(first)?);
            }
        }
        Ok(EventBatch { entries, next: Position::After(last), head: seqs.log_head() })
    }

    async fn wait_for(&self, after: u64) -> Result<u64> {
        let mut rx = self.0.subscribe();
        loop {
            if self.0.is_closed() {
                return Err(StoreError::Closed);
            }
            let head = *rx.borrow_and_update();
            if head > after {
                return Ok(head);
            }
            rx.changed().await.map_err(|_| StoreError::Closed)?;
        }
    }

    async fn head(&self) -> Result<u64> {
        Ok(self.0.published()?.log_head())
    }

    async fn oldest(&self) -> Result<u64> {
        // The log is gap-free above what retention trimmed (`brine db check` verifies it),
        // so the oldest entry is the one after the trimmed point, or head + 1 when empty.
        Ok(self.0.published()?.log_trimmed() + 1)
    }

    async fn append(&self, kind: &str, data: &str) -> Result<u64> {
        let mut txn = self.0.begin().await?;
        let now = txn.now();
        let object = LogObject::Custom { kind: kind.to_owned(), data: data.to_owned() };
        let seq = txn.append_log(Operation::Create, object, now)?;
        txn.commit().await?;
        Ok(seq)
    }

    async fn load(&self, after: u64, entries: Vec<LogEntry>) -> Result<u64> {
        let mut txn = self.0.begin().await?;
        let head = txn.load_log(after, &entries)?;
        txn.commit().await?;
        Ok(head)
    }

    async fn checkpoint(&self, name: &str, seq: u64) -> Result<()> {
        validate_checkpoint_name(name)?;
        let mut txn = self.0.begin().await?;
        let head = txn.seqs().log_head();
        if seq > head {
            return Err(StoreError::CheckpointBeyondHead { name: name.to_owned(), seq, head });
        }
        txn.put(Cf::Checkpoints, layout::checkpoint(name), &seq)?;
        // A watcher's progress is what lets retention free the log: a store past its
        // quota still takes it.
        txn.frees_space();
        txn.commit().await
    }

    async fn get_checkpoint(&self, name: &str) -> Result<u64> {
        validate_checkpoint_name(name)?;
        Ok(self.0.get_value(Cf::Checkpoints, &layout::checkpoint(name))?.unwrap_or(0))
    }

    async fn list_checkpoints(&self) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        self.0.scan_prefix(Cf::Checkpoints, &[], |k, v| {
            let name = layout::decode_or_corrupt(Cf::Checkpoints, k)?.str("name").unwrap_or_default().to_owned();
            out.push((name, decode(Cf::Checkpoints, k, v)?));
            Ok(true)
        })?;
        Ok(out)
    }

    async fn delete_checkpoint(&self, name: &str) -> Result<()> {
        validate_checkpoint_name(name)?;
        let mut txn = self.0.begin().await?;
        txn.delete(Cf::Checkpoints, layout::checkpoint(name))?;
        txn.frees_space();
        txn.commit().await
    }

    async fn trim(&self, up_to: u64, before: Timestamp, max: usize) -> Result<u64> {
        rules::check_limit(max)?;
        let mut deleted = 0u64;
        let mut from = self.0.published()?.log_trimmed();
        while deleted < max as u64 {
            let chunk = (max as u64 - deleted).min(TRIM_CHUNK);
            // Decided outside the commit lock: entries below the head never change, so
            // what may go after `from` holds for as long as the trimmed point is `from`.
            let n = self.trimmable(from, chunk, up_to, before)?;
            if n == 0 {
                break;
            }
            let mut txn = self.0.begin().await?;
            if txn.seqs().log_trimmed() != from {
                // Another trim moved the point meanwhile: decide again from there.
                from = txn.seqs().log_trimmed();
                continue;
            }
            for seq in from + 1..=from + n {
                txn.delete(Cf::Events, layout::log_entry(seq))?;
            }
            // The deletes and the new trimmed point commit together.
            txn.set_log_trimmed(from + n);
            txn.frees_space();
            txn.commit().await?;
            deleted += n;
            from += n;
            if n < chunk {
                break;
            }
            // Between chunks, let the other tasks of this runtime run.
            tokio::task::yield_now().await;
        }
        Ok(deleted)
    }
}

/// The most entries one trim write deletes.
const TRIM_CHUNK: u64 = 256;

impl RocksEventLog {
    /// How many entries after `from` (up to `chunk`, within the published head) retention
    /// may delete, reading them without the commit lock.
    fn trimmable(&self, from: u64, chunk: u64, up_to: u64, before: Timestamp) -> Result<u64> {
        let head = self.0.published()?.log_head();
        let last = head.min(from + chunk);
        if last <= from {
            return Ok(0);
        }
        let db = self.0.db()?;
        let mut it = self.0.iter(&db, Cf::Events, &layout::log_entry(from + 1), Some(layout::log_entry(last + 1)))?;
        it.seek(layout::log_entry(from + 1));
        let mut n = 0;
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else { break };
            let entry: LogEntry = decode(Cf::Events, k, v)?;
            if entry.seq != from + 1 + n || !rules::may_trim(entry.seq, entry.timestamp, up_to, before) {
                break;
            }
            n += 1;
            it.next();
        }
        it.status().map_err(|e| StoreError::backend("read the event log", e))?;
        Ok(n)
    }

    /// The error for a read that found no entry at `seq` (at or below the head): trimmed
    /// by retention meanwhile (`Compacted`), or else a gap in the log (`Corrupt`).
    fn missing_from(&self, seq: u64) -> Result<StoreError> {
        // Read from the database, not the published sequences: a trim's deletes and its
        // new trimmed point are one batch, visible together, while publication waits
        // for the sync on a `Sync` store.
        let trimmed = self.0.get_value::<u64>(Cf::Meta, meta::LOG_TRIMMED)?.unwrap_or(0);
        Ok(if seq <= trimmed {
            StoreError::Compacted { requested: seq, oldest: trimmed + 1 }
        } else {
            corrupt_key(Cf::Events, &layout::log_entry(seq), "entry missing below the head")
        })
    }
}
