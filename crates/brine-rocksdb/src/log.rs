//! The event log of a RocksDB store: the `events` and `checkpoints` families.

use std::sync::Arc;

use async_trait::async_trait;
use brine_store::model::{LogEntry, LogObject, Operation, Timestamp};
use brine_store::{rules, validate_checkpoint_name, EventBatch, EventFilter, EventLog, Position, Result, StoreError};

use crate::cf::Cf;
use crate::codec::decode;
use crate::engine::{log_key, Engine};

/// The [`EventLog`] of a RocksDB store.
pub(crate) struct RocksEventLog(pub(crate) Arc<Engine>);

#[async_trait]
impl EventLog for RocksEventLog {
    async fn get_events(&self, from: Position, limit: usize, filter: &EventFilter) -> Result<EventBatch> {
        rules::check_limit(limit)?;
        let seqs = self.0.published()?;
        let first = rules::first_seq(from, seqs.log_head, seqs.log_trimmed)?;
        let mut entries = Vec::new();
        let mut last = first - 1;
        if first <= seqs.log_head {
            let db = self.0.db()?;
            let mut it = self.0.iter(&db, Cf::Events, &log_key(first), Some(log_key(seqs.log_head + 1)))?;
            it.seek(log_key(first));
            while it.valid() && entries.len() < limit {
                let (Some(k), Some(v)) = (it.key(), it.value()) else { break };
                let entry: LogEntry = decode(Cf::Events, k, v)?;
                last = entry.seq;
                if filter.matches(&entry) {
                    entries.push(entry);
                }
                it.next();
            }
            it.status().map_err(|e| StoreError::backend("read the event log", e))?;
        }
        Ok(EventBatch { entries, next: Position::After(last), head: seqs.log_head })
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
        Ok(self.0.published()?.log_head)
    }

    async fn oldest(&self) -> Result<u64> {
        // The log is gap-free above what retention trimmed (`brine db check` verifies it),
        // so the oldest entry is the one after the trimmed point, or head + 1 when empty.
        Ok(self.0.published()?.log_trimmed + 1)
    }

    async fn append(&self, kind: &str, data: &str) -> Result<u64> {
        let mut txn = self.0.begin().await?;
        let now = txn.now();
        let object = LogObject::Custom { kind: kind.to_owned(), data: data.to_owned() };
        let seq = txn.append_log(Operation::Create, object, now)?;
        txn.commit().await?;
        Ok(seq)
    }

    async fn checkpoint(&self, name: &str, seq: u64) -> Result<()> {
        validate_checkpoint_name(name)?;
        let mut txn = self.0.begin().await?;
        let head = txn.seqs.log_head;
        if seq > head {
            return Err(StoreError::CheckpointBeyondHead { name: name.to_owned(), seq, head });
        }
        txn.put(Cf::Checkpoints, name.as_bytes().to_vec(), &seq)?;
        txn.commit().await
    }

    async fn get_checkpoint(&self, name: &str) -> Result<u64> {
        validate_checkpoint_name(name)?;
        Ok(self.0.get_value(Cf::Checkpoints, name.as_bytes())?.unwrap_or(0))
    }

    async fn list_checkpoints(&self) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        self.0.scan_prefix(Cf::Checkpoints, &[], |k, v| {
            let name =
                String::from_utf8(k.to_vec()).map_err(|_| corrupt_key(Cf::Checkpoints, k, "name is not UTF-8"))?;
            out.push((name, decode(Cf::Checkpoints, k, v)?));
            Ok(true)
        })?;
        Ok(out)
    }

    async fn delete_checkpoint(&self, name: &str) -> Result<()> {
        validate_checkpoint_name(name)?;
        let mut txn = self.0.begin().await?;
        txn.delete(Cf::Checkpoints, name.as_bytes().to_vec())?;
        txn.commit().await
    }

    async fn trim(&self, up_to: u64, before: Timestamp, max: usize) -> Result<u64> {
        rules::check_limit(max)?;
        let mut txn = self.0.begin().await?;
        let mut deleted = 0;
        while deleted < max as u64 {
            let seq = txn.seqs.log_trimmed + 1;
            if seq > txn.seqs.log_head {
                break;
            }
            let key = log_key(seq);
            let entry: LogEntry = txn
                .get(Cf::Events, &key)?
                .ok_or_else(|| corrupt_key(Cf::Events, &key, "entry missing below the head"))?;
            if !rules::may_trim(seq, entry.timestamp, up_to, before) {
                break;
            }
            txn.delete(Cf::Events, key)?;
            txn.seqs.log_trimmed = seq;
            deleted += 1;
        }
        // The deletes and the new trimmed point commit together.
        txn.commit().await?;
        Ok(deleted)
    }
}

pub(crate) fn corrupt_key(cf: Cf, key: &[u8], reason: &str) -> StoreError {
    StoreError::Corrupt { cf: cf.name().to_owned(), key: brine_store::keys::printable(key), reason: reason.to_owned() }
}
