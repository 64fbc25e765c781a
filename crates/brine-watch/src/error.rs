//! Errors of watchers, the manager and retention.

use std::time::Duration;

use brine_store::StoreError;

/// What a handler returns when it could not handle a batch.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

/// Why a watcher operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    /// An option is out of range; nothing was created or changed.
    #[error("invalid watcher option {field}: {reason}")]
    InvalidOption {
        /// The option.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The watcher name is not usable as a checkpoint name.
    #[error("invalid watcher name {name:?}: {source}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Why it was refused.
        #[source]
        source: StoreError,
    },
    /// A watcher with this name already exists in the manager.
    #[error("a watcher named {name:?} already exists")]
    Duplicate {
        /// The name.
        name: String,
    },
    /// No watcher with this name exists in the manager.
    #[error("no watcher named {name:?}")]
    NotFound {
        /// The name.
        name: String,
    },
    /// The watcher is already running.
    #[error("watcher {name:?} is already running")]
    AlreadyRunning {
        /// The name.
        name: String,
    },
    /// An ephemeral watcher keeps no checkpoint.
    #[error("watcher {name:?} is ephemeral and keeps no checkpoint")]
    Ephemeral {
        /// The name.
        name: String,
    },
    /// Handlers did not return before the deadline.
    #[error("watchers {names:?} did not stop within {deadline:?} (a handler has not returned)")]
    Timeout {
        /// The watchers still running.
        names: Vec<String>,
        /// The deadline.
        deadline: Duration,
    },
    /// The watcher stopped on an error (a compacted position with `OnCompacted::Stop`,
    /// or a store failure).
    #[error("watcher {name:?} stopped: {source}")]
    Stopped {
        /// The name.
        name: String,
        /// What stopped it.
        #[source]
        source: StoreError,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
