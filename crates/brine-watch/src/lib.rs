//! Watchers of a Brine event log (CONTRACT §4): named followers that deliver entries in
//! sequence order to a handler in batches, checkpoint durably after each handled batch,
//! retry a failing handler with exponential backoff and then block or skip, and react
//! to a position that retention deleted. A [`Manager`] creates, looks up and stops
//! watchers; [`Retention`] deletes what every durable watcher has handled once it is old
//! enough.
//!
//! Delivery is at-least-once: a batch is checkpointed only after its handler returned,
//! so after a crash a durable watcher re-sees at most the one batch it was handling, and
//! never skips one. A seek wins over the batch in flight: that batch checkpoints nothing.
//! A durable watcher records its starting point as its checkpoint when it is created, so
//! retention keeps what it is yet to read even before its first batch. Waiting for new
//! entries uses the store's commit notification
//! ([`EventLog::wait_for`](brine_store::EventLog::wait_for)), never a polling loop.
//!
//! Works on every backend: it only uses the `EventLog` trait.

mod error;
mod manager;
mod options;
mod retention;
mod watcher;

pub use error::{HandlerError, WatchError};
pub use manager::Manager;
pub use options::{OnCompacted, OnRetriesExhausted, WatcherOptions};
pub use retention::{Retention, RetentionOptions, RetentionPass, RetentionTask};
pub use watcher::{Handler, SkippedRange, WatchStats, Watcher, WatcherState};
