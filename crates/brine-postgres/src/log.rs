//! `PgEventLog`: a store's event log in `compute.log_entries`, its head and retention
//! point in `compute.logs`, and watcher checkpoints in `compute.checkpoints`.
//!
//! A write appends its entries as its last statement: one `UPDATE compute.logs SET
//! last_seq = last_seq + n` takes the head row's lock and numbers the entries, so writers
//! of one log number their entries in the order they commit, and a reader that sees head
//! `h` sees every entry up to `h`. Reads run in one repeatable-read snapshot, so the head,
//! the retention point and the entries agree.

use std::sync::Arc;

use async_trait::async_trait;
use brine_store::model::{LogEntry, LogObject, Operation, Timestamp};
use brine_store::{
    codec, rules, validate_checkpoint_name, EventBatch, EventFilter, EventLog, Position, Result, StoreError,
};
use tokio_postgres::Row;

use crate::db::{i64_of, object_type_code, operation_code, operation_of, u64_of, Access, Db, Write};

/// The [`EventLog`] of a PostgreSQL store.
pub(crate) struct PgEventLog(pub(crate) Arc<Db>);

/// The head and retention point of the log, read inside `w`.
pub(crate) async fn bounds(w: &Write) -> Result<(u64, u64)> {
    let row = w
        .query_opt("SELECT last_seq, trimmed FROM compute.logs WHERE name = $1", &[&w.db().shared.log])
        .await?
        .ok_or_else(|| missing_log(&w.db().shared.log))?;
    Ok((u64_of(row.get(0)), u64_of(row.get(1))))
}

/// The store's log has no head row (the schema was changed by hand).
pub(crate) fn missing_log(log: &str) -> StoreError {
    StoreError::Corrupt {
        cf: "compute.logs".into(),
        key: log.to_owned(),
        reason: "the store's event log row is missing".into(),
    }
}

/// Decodes a row of `seq, created_ns, object_type, operation, entry`.
pub(crate) fn entry_of(row: &Row) -> Result<LogEntry> {
    let seq = u64_of(row.get(0));
    let key = seq.to_be_bytes();
    let object: LogObject = codec::decode("compute.log_entries", &key, row.get(4))?;
    let operation = operation_of(row.get(3)).ok_or_else(|| StoreError::Corrupt {
        cf: "compute.log_entries".into(),
        key: seq.to_string(),
        reason: format!("unknown operation code {}", row.get::<_, i16>(3)),
    })?;
    Ok(LogEntry {
        seq,
        operation,
        object_type: object.object_type(),
        object,
        timestamp: Timestamp::from_nanos(u64_of(row.get(1))),
    })
}

#[async_trait]
impl EventLog for PgEventLog {
    async fn get_events(&self, from: Position, limit: usize, filter: &EventFilter) -> Result<EventBatch> {
        rules::check_limit(limit)?;
        let read = self.0.snapshot().await?;
        let (head, trimmed) = bounds(&read).await?;
        let first = rules::first_seq(from, head, trimmed)?;
        // The window a call examines: at most MAX_EXAMINED entries from `first`.
        let last_examinable = head.min(first.saturating_add(rules::MAX_EXAMINED as u64 - 1));
        let types: Option<Vec<i16>> = (!filter.object_types.is_empty())
            .then(|| filter.object_types.iter().map(|t| crate::db::object_type_code_of(*t)).collect());
        let operations: Option<Vec<i16>> =
            (!filter.operations.is_empty()).then(|| filter.operations.iter().map(|o| operation_code(*o)).collect());
        let rows = read
            .query(
                "SELECT seq, created_ns, object_type, operation, entry FROM compute.log_entries \
                 WHERE log = $1 AND seq >= $2 AND seq <= $3 \
                 AND ($4::smallint[] IS NULL OR object_type = ANY($4)) \
                 AND ($5::smallint[] IS NULL OR operation = ANY($5)) \
                 ORDER BY seq LIMIT $6",
                &[
                    &self.0.shared.log,
                    &i64_of(first),
                    &i64_of(last_examinable),
                    &types,
                    &operations,
                    &i64_of(limit as u64),
                ],
            )
            .await?;
        read.commit().await?;
        let entries = rows.iter().map(entry_of).collect::<Result<Vec<_>>>()?;
        let last = if entries.len() == limit { entries.last().map_or(first - 1, |e| e.seq) } else { last_examinable };
        Ok(EventBatch { entries, next: Position::After(last.min(head).max(first - 1)), head })
    }

    async fn wait_for(&self, after: u64) -> Result<u64> {
        self.0.wait_for(after).await
    }

    async fn head(&self) -> Result<u64> {
        self.0.check_open()?;
        self.0.shared.refresh().await
    }

    async fn oldest(&self) -> Result<u64> {
        let read = self.0.snapshot().await?;
        let (_, trimmed) = bounds(&read).await?;
        read.commit().await?;
        Ok(trimmed + 1)
    }

    async fn append(&self, kind: &str, data: &str) -> Result<u64> {
        let mut w = self.0.begin(Access::Shared).await?;
        let now = self.0.clock.now();
        w.log(Operation::Create, LogObject::Custom { kind: kind.to_owned(), data: data.to_owned() }, now);
        w.commit().await
    }

    async fn load(&self, after: u64, entries: Vec<LogEntry>) -> Result<u64> {
        let w = self.0.begin(Access::Shared).await?;
        let log = &self.0.shared.log;
        let row = w
            .query_opt("SELECT last_seq, trimmed FROM compute.logs WHERE name = $1 FOR UPDATE", &[log])
            .await?
            .ok_or_else(|| missing_log(log))?;
        let now = rules::LogBounds { head: u64_of(row.get(0)), trimmed: u64_of(row.get(1)) };
        let next = rules::log_load(now, after, &entries)?;
        if !entries.is_empty() {
            let seqs: Vec<i64> = entries.iter().map(|e| i64_of(e.seq)).collect();
            let times: Vec<i64> = entries.iter().map(|e| i64_of(e.timestamp.as_nanos())).collect();
            let types: Vec<i16> = entries.iter().map(|e| object_type_code(&e.object)).collect();
            let operations: Vec<i16> = entries.iter().map(|e| operation_code(e.operation)).collect();
            let objects: Vec<Vec<u8>> = entries.iter().map(|e| codec::encode(&e.object)).collect();
            w.execute(
                "INSERT INTO compute.log_entries (log, seq, created_ns, object_type, operation, entry) \
                 SELECT $1, * FROM unnest($2::bigint[], $3::bigint[], $4::smallint[], $5::smallint[], $6::bytea[])",
                &[log, &seqs, &times, &types, &operations, &objects],
            )
            .await?;
        }
        w.execute(
            "UPDATE compute.logs SET last_seq = $2, trimmed = $3 WHERE name = $1",
            &[log, &i64_of(next.head), &i64_of(next.trimmed)],
        )
        .await?;
        w.commit().await?;
        self.0.shared.publish(next.head);
        self.0.shared.notify.notify_one();
        Ok(next.head)
    }

    async fn checkpoint(&self, name: &str, seq: u64) -> Result<()> {
        validate_checkpoint_name(name)?;
        let w = self.0.begin(Access::Shared).await?;
        let (head, _) = bounds(&w).await?;
        if seq > head {
            return Err(StoreError::CheckpointBeyondHead { name: name.to_owned(), seq, head });
        }
        w.execute(
            "INSERT INTO compute.checkpoints (log, name, seq) VALUES ($1, $2, $3) \
             ON CONFLICT (log, name) DO UPDATE SET seq = EXCLUDED.seq",
            &[&self.0.shared.log, &name, &i64_of(seq)],
        )
        .await?;
        w.commit().await.map(|_| ())
    }

    async fn get_checkpoint(&self, name: &str) -> Result<u64> {
        validate_checkpoint_name(name)?;
        let conn = self.0.read().await?;
        let row = conn
            .query_opt("SELECT seq FROM compute.checkpoints WHERE log = $1 AND name = $2", &[&self.0.shared.log, &name])
            .await
            .map_err(|e| crate::error::pg_error("read a checkpoint", e))?;
        Ok(row.map_or(0, |r| u64_of(r.get(0))))
    }

    async fn list_checkpoints(&self) -> Result<Vec<(String, u64)>> {
        let conn = self.0.read().await?;
        let rows = conn
            .query("SELECT name, seq FROM compute.checkpoints WHERE log = $1 ORDER BY name", &[&self.0.shared.log])
            .await
            .map_err(|e| crate::error::pg_error("list the checkpoints", e))?;
        Ok(rows.iter().map(|r| (r.get::<_, String>(0), u64_of(r.get(1)))).collect())
    }

    async fn delete_checkpoint(&self, name: &str) -> Result<()> {
        validate_checkpoint_name(name)?;
        let w = self.0.begin(Access::Shared).await?;
        w.execute("DELETE FROM compute.checkpoints WHERE log = $1 AND name = $2", &[&self.0.shared.log, &name]).await?;
        w.commit().await.map(|_| ())
    }

    async fn trim(&self, up_to: u64, before: Timestamp, max: usize) -> Result<u64> {
        rules::check_limit(max)?;
        let w = self.0.begin(Access::Shared).await?;
        let log = &self.0.shared.log;
        let row = w
            .query_opt("SELECT last_seq, trimmed FROM compute.logs WHERE name = $1 FOR UPDATE", &[log])
            .await?
            .ok_or_else(|| missing_log(&self.0.shared.log))?;
        let (head, trimmed) = (u64_of(row.get(0)), u64_of(row.get(1)));
        let rows = w
            .query(
                "SELECT seq, created_ns FROM compute.log_entries WHERE log = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                &[log, &i64_of(trimmed), &i64_of(max as u64)],
            )
            .await?;
        let mut deleted = 0u64;
        for row in &rows {
            let (seq, time) = (u64_of(row.get(0)), Timestamp::from_nanos(u64_of(row.get(1))));
            if seq != trimmed + deleted + 1 || seq > head || !rules::may_trim(seq, time, up_to, before) {
                break;
            }
            deleted += 1;
        }
        if deleted > 0 {
            let to = i64_of(trimmed + deleted);
            w.execute(
                "DELETE FROM compute.log_entries WHERE log = $1 AND seq > $2 AND seq <= $3",
                &[log, &i64_of(trimmed), &to],
            )
            .await?;
            w.execute("UPDATE compute.logs SET trimmed = $2 WHERE name = $1", &[log, &to]).await?;
        }
        w.commit().await?;
        Ok(deleted)
    }
}

/// Checks the log inside one snapshot: exactly the entries `trimmed + 1 ..= head`, each
/// decoding, and every checkpoint at or below the head.
pub(crate) async fn check(read: &Write, report: &mut brine_store::CheckReport) -> Result<()> {
    let (head, trimmed) = bounds(read).await?;
    let log = &read.db().shared.log;
    let row = read
        .query_opt(
            "SELECT count(*), coalesce(min(seq), 0), coalesce(max(seq), 0) FROM compute.log_entries WHERE log = $1",
            &[log],
        )
        .await?
        .ok_or_else(|| missing_log(&read.db().shared.log))?;
    let (count, min, max) = (u64_of(row.get(0)), u64_of(row.get(1)), u64_of(row.get(2)));
    report.keys_checked += count;
    let expected = head - trimmed.min(head);
    if count != expected || (count > 0 && (min != trimmed + 1 || max != head)) {
        report.problem(
            "compute.log_entries",
            "",
            format!("{count} entries {min}..={max}, expected {expected} ({}..={head})", trimmed + 1),
        );
    }
    // Every entry decodes, read in bounded batches.
    let mut after = trimmed;
    loop {
        let rows = read
            .query(
                "SELECT seq, created_ns, object_type, operation, entry FROM compute.log_entries \
                 WHERE log = $1 AND seq > $2 ORDER BY seq LIMIT 1000",
                &[log, &i64_of(after)],
            )
            .await?;
        let Some(last) = rows.last() else { break };
        after = u64_of(last.get(0));
        for row in &rows {
            match entry_of(row) {
                Ok(entry) if object_type_code(&entry.object) == row.get::<_, i16>(2) => {}
                Ok(entry) => report.problem(
                    "compute.log_entries",
                    entry.seq.to_string(),
                    "object_type column disagrees with the entry",
                ),
                Err(e) => report.problem("compute.log_entries", u64_of(row.get(0)).to_string(), e.to_string()),
            }
        }
    }
    let rows = read.query("SELECT name, seq FROM compute.checkpoints WHERE log = $1", &[log]).await?;
    for row in &rows {
        report.keys_checked += 1;
        let (name, seq) = (row.get::<_, String>(0), u64_of(row.get(1)));
        if seq > head {
            report.problem("compute.checkpoints", name, format!("checkpoint {seq} is beyond the head {head}"));
        }
    }
    Ok(())
}
