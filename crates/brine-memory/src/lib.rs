//! The in-memory backend: the reference semantics of Brine's store traits.
//!
//! Each store keeps its whole state in one immutable snapshot made of persistent maps
//! (`imbl`), whose clone costs O(1). A writer takes the store's writer lock, clones the
//! snapshot, changes the clone and publishes it in one pointer swap; a reader clones the
//! current pointer and reads without locks. That gives, without any undo code:
//! - atomic operations (an error half-way leaves the published snapshot untouched);
//! - transactions that read their own writes and roll back by being dropped;
//! - gap-free event-log sequence numbers in commit order (assigned under the writer
//!   lock, published together with the change);
//! - indexes and counters that move in the same step as the record.
//!
//! There is no persistence: closing the store ends it. This crate depends on
//! `brine-store` only; nothing here knows about any other backend.

mod db;
mod execution;
mod job;

pub use execution::MemExecutionStore;
pub use job::MemJobStore;
