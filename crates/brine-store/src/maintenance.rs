//! Repair of an execution store's derived data, and the faults tests inject to exercise
//! it.
//!
//! An execution store keeps derived data beside its records: the index by job, the
//! index by state, per-state counters and per-execution history. Every change writes
//! them in one atomic batch, so a crash cannot make them disagree; an outside edit, a
//! bug in an older build or a damaged file can. [`crate::ExecutionStore::repair`] finds
//! such disagreements and puts them right, treating the records as the truth: a missing
//! index entry is added, an index entry that points at nothing (or at a record in
//! another state or job) is removed, history without an execution is removed, and a
//! counter is set to the number of entries in its state index. Records are never
//! deleted or rewritten by a repair; a record that does not decode is reported and left
//! for an operator.

use std::fmt;

use brine_model::{Event, ExecutionId, ExecutionState, JobId};
use serde::{Deserialize, Serialize};

/// One inconsistency a consistency check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// Where: the column family, table or map.
    pub place: String,
    /// The key, printable (empty for problems of a whole place).
    pub key: String,
    /// What is wrong.
    pub what: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.place, self.what)
        } else {
            write!(f, "{} {}: {}", self.place, self.key, self.what)
        }
    }
}

/// What a consistency check found ([`crate::ExecutionStore::check`],
/// [`crate::JobStore::check`]), with how much it read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckReport {
    /// Every problem, in the order found.
    pub problems: Vec<Problem>,
    /// Number of keys (records and index entries) read.
    pub keys_checked: u64,
}

impl CheckReport {
    /// Whether nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// Records a problem at `place`, `key`.
    pub fn problem(&mut self, place: impl Into<String>, key: impl Into<String>, what: impl Into<String>) {
        self.problems.push(Problem { place: place.into(), key: key.into(), what: what.into() });
    }
}

/// What a repair found (and, unless it was a dry run, fixed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairReport {
    /// Index entries added for records that lacked them.
    pub missing_index_entries: u64,
    /// Index entries removed because their record is missing or elsewhere.
    pub orphan_index_entries: u64,
    /// History events removed because their execution is missing.
    pub orphan_history_events: u64,
    /// Per-state counters set to the size of their state index.
    pub counters_fixed: u64,
    /// Records that do not decode: reported, left in place.
    pub undecodable_records: u64,
    /// Keys read.
    pub keys_scanned: u64,
}

impl RepairReport {
    /// The number of items put right (or, in a dry run, that would be).
    pub fn repaired(&self) -> u64 {
        self.missing_index_entries + self.orphan_index_entries + self.orphan_history_events + self.counters_fixed
    }
}

impl fmt::Display for RepairReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} missing index entries, {} orphan index entries, {} orphan history events, {} counters, \
             {} undecodable records ({} keys read)",
            self.missing_index_entries,
            self.orphan_index_entries,
            self.orphan_history_events,
            self.counters_fixed,
            self.undecodable_records,
            self.keys_scanned
        )
    }
}

/// A disagreement between an execution store's records and its derived data, written
/// directly by a backend's fault-injection hook (for tests and drills, never by the
/// store itself).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Removes the execution's entry from the state index.
    DropStateIndexEntry(ExecutionId),
    /// Removes the execution's entry from the job index.
    DropJobIndexEntry(ExecutionId),
    /// Adds a state-index entry for an execution that does not exist (or is in another
    /// state).
    OrphanStateIndexEntry(ExecutionState, ExecutionId),
    /// Adds a job-index entry for an execution that does not exist (or belongs to
    /// another job).
    OrphanJobIndexEntry(JobId, ExecutionId),
    /// Adds history events for an execution that does not exist.
    OrphanHistory(ExecutionId, Vec<Event>),
    /// Sets a per-state counter to a wrong value.
    SetCounter(ExecutionState, u64),
    /// Overwrites the execution's stored value with bytes that do not decode (stores
    /// with an encoding only).
    CorruptExecution(ExecutionId),
    /// Deletes one event-log entry below the head, leaving a gap (stores that can
    /// represent one only).
    DropLogEntry(u64),
}

/// A new store id (see `ExecutionStore::store_id`): 32 hex digits from the wall clock's
/// nanoseconds, the process id and a process-wide counter, unique across the stores a
/// host creates. Not a secret.
pub fn new_store_id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:016x}{:08x}{:08x}", nanos as u64, std::process::id(), count)
}
