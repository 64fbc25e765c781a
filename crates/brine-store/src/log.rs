//! The event log: every change in commit order, read by watchers from a position.

use async_trait::async_trait;
use brine_model::{validate_name, LogEntry, ObjectType, Operation, Timestamp, MAX_ID_LEN};

use crate::{Result, StoreError};

/// Where to start reading the event log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Position {
    /// From the oldest entry still stored.
    TrimHorizon,
    /// Only entries committed after the call.
    Latest,
    /// From this sequence number, inclusive.
    At(u64),
    /// From the entry after this sequence number.
    After(u64),
}

/// Which entries to return; an empty list means "all".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only these object types.
    pub object_types: Vec<ObjectType>,
    /// Only these operations.
    pub operations: Vec<Operation>,
}

impl EventFilter {
    /// A filter that passes everything.
    pub fn all() -> Self {
        EventFilter::default()
    }

    /// Whether `entry` passes.
    pub fn matches(&self, entry: &LogEntry) -> bool {
        (self.object_types.is_empty() || self.object_types.contains(&entry.object_type))
            && (self.operations.is_empty() || self.operations.contains(&entry.operation))
    }
}

/// Entries read from the log, and where to read on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventBatch {
    /// Matching entries in sequence order.
    pub entries: Vec<LogEntry>,
    /// The position to pass to the next read: after the last entry examined, including
    /// entries the filter skipped.
    pub next: Position,
    /// The newest committed sequence number when the batch was read.
    pub head: u64,
}

impl EventBatch {
    /// The sequence number the next read starts after.
    pub fn next_after(&self) -> u64 {
        match self.next {
            Position::After(n) => n,
            Position::At(n) => n.saturating_sub(1),
            Position::TrimHorizon | Position::Latest => self.head,
        }
    }
}

/// Checks a checkpoint or watcher name.
pub fn validate_checkpoint_name(name: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(StoreError::BlankCheckpointName);
    }
    Ok(validate_name("checkpoint name", name, MAX_ID_LEN)?)
}

/// The ordered log of changes of one store, with named durable checkpoints.
///
/// Sequence numbers start at 1 and are gap-free in commit order: a reader that has seen
/// `n` never later finds a committed entry below `n`.
///
/// # Cancel safety
///
/// Every method is cancel-safe: `wait_for` and reads may be dropped at any point;
/// `append` and `checkpoint` are writes (see [`crate::ExecutionStore`]); `trim` deletes
/// in bounded atomic writes, so dropped midway it has trimmed a prefix and the log stays
/// gap-free above its oldest entry.
#[async_trait]
pub trait EventLog: Send + Sync {
    /// Reads up to `limit` entries matching `filter`, starting at `from`.
    ///
    /// Examines at most [`rules::MAX_EXAMINED`](crate::rules::MAX_EXAMINED) entries, so
    /// a selective filter may return fewer entries (even none) while more match further
    /// on: read on from `next` until it reaches `head`. Fails with `Compacted` when `from`
    /// lies below what retention kept.
    async fn get_events(&self, from: Position, limit: usize, filter: &EventFilter) -> Result<EventBatch>;

    /// Resolves as soon as an entry newer than `after` is committed, returning the head.
    /// Resolves at once if one already is. Driven by commit notification, not polling.
    async fn wait_for(&self, after: u64) -> Result<u64>;

    /// The newest committed sequence number (0 when the log is empty).
    async fn head(&self) -> Result<u64>;

    /// The oldest sequence number still stored (`head + 1` when nothing is stored).
    async fn oldest(&self) -> Result<u64>;

    /// Appends a caller's own entry (`ObjectType::Custom`), returning its sequence number.
    async fn append(&self, kind: &str, data: &str) -> Result<u64>;

    /// Stores `entries` exactly as given, numbered `after + 1`, `after + 2`, … without a
    /// gap, in one atomic write: how `brine import` restores a dump's log, so watchers
    /// resume at the same sequence numbers. A log that holds entries continues at its
    /// head (`after` = head); one that holds none may start above its head and then
    /// counts as trimmed up to `after` (see `rules::log_load`). With no entries, moves
    /// the head of an empty log to `after`. Returns the new head.
    async fn load(&self, after: u64, entries: Vec<LogEntry>) -> Result<u64>;

    /// Durably records that watcher `name` has handled everything up to `seq`.
    async fn checkpoint(&self, name: &str, seq: u64) -> Result<()>;

    /// The checkpoint of `name`, 0 if none was recorded.
    async fn get_checkpoint(&self, name: &str) -> Result<u64>;

    /// Every recorded checkpoint, by name.
    async fn list_checkpoints(&self) -> Result<Vec<(String, u64)>>;

    /// Forgets the checkpoint of `name` (no error if there is none).
    async fn delete_checkpoint(&self, name: &str) -> Result<()>;

    /// Retention: deletes, oldest first, at most `max` entries whose sequence number is
    /// at or below `up_to` and whose timestamp is before `before` (see
    /// [`rules::may_trim`](crate::rules::may_trim)), stopping at the first entry that may
    /// not go, in one atomic write. Returns how many were deleted. Reads of a deleted
    /// position then fail with `Compacted`; the head and later sequence numbers do not
    /// change.
    async fn trim(&self, up_to: u64, before: Timestamp, max: usize) -> Result<u64>;
}
