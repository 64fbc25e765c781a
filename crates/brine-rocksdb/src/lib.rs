//! The RocksDB backend: Brine's embedded default.
//!
//! One column family per bucket of Bacalhau's execution store (`executions`, `execution_events`,
//! `idx_executions_by_job_id`, `idx_executions_by_state`, `events`, `checkpoints`) plus
//! `meta`, and the job store's own families; `docs/FORMAT.md` gives every key and value
//! layout. Keys are ordered byte strings built with `brine_store::keys`, so every index
//! read is a prefix scan whose cost grows with the result. Values are a codec tag byte
//! and bincode 1.3.3 ([`codec`]).
//!
//! Why a commit lock around a plain `WriteBatch` rather than `TransactionDB` or
//! optimistic transactions: every write must also take the next event-log sequence
//! number, and sequence numbers must follow commit order, so writes are serialized in
//! any design. Holding one async lock from the first read to the batch write makes
//! conditional updates exact (no retry loop, no lost update), makes transactions simple
//! (a held lock plus the pending writes, which its reads see, dropped to roll back), and costs
//! nothing extra. Durability does not suffer from the serialization: the fsync of a
//! `Sync` commit happens after the lock is released and is shared by every commit
//! written meanwhile (group commit).
//!
//! This crate depends on `brine-store` and RocksDB; nothing above the backends depends
//! on it except the CLI, the benches and tests.

mod cf;
pub mod check;
pub mod codec;
mod engine;
mod execution;
pub mod inspect;
mod job;
pub mod layout;
mod log;
pub mod migrate;
pub mod readable;
mod repair;

use std::path::PathBuf;
use std::sync::Arc;

use brine_store::model::NodeId;
use brine_store::{Clock, StoreError, SystemClock};

pub use cf::{Cf, StoreKind};
pub use engine::{db_options, family_options, store_kind_at, Alarm, MemoryUsage, SCHEMA_VERSION};
pub use execution::RocksExecutionStore;
pub use inspect::Inspector;
pub use job::RocksJobStore;

/// When a commit counts as done (defined in `brine-store`, as every durable backend
/// takes it).
pub use brine_store::Durability;

/// How to open a store.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Commit durability.
    pub durability: Durability,
    /// Create the store (and its directories, mode 0700) if it does not exist.
    pub create_if_missing: bool,
    /// Node id recorded in a new store's `meta`.
    pub node_id: Option<NodeId>,
    /// Source of timestamps.
    pub clock: Arc<dyn Clock>,
    /// A space quota in bytes (`BRINE_QUOTA_BYTES`): past it, writes that add data get
    /// `StoreError::NoSpace` and a NOSPACE alarm is recorded, while deletes, purges,
    /// retention and compaction go on (see [`Alarm`]). `None`: no quota.
    pub quota_bytes: Option<u64>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            durability: Durability::Sync,
            create_if_missing: true,
            node_id: None,
            clock: Arc::new(SystemClock),
            quota_bytes: None,
        }
    }
}

/// Whether `e`, or an error it was caused by, is corruption RocksDB itself reports (a
/// block checksum mismatch, a truncated table file or log): the store's files are
/// damaged, which `brine db check` reports as a problem rather than a failure to run.
pub fn reports_corruption(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(err) = cause {
        if err.downcast_ref::<rocksdb::Error>().is_some_and(|r| r.kind() == rocksdb::ErrorKind::Corruption) {
            return true;
        }
        cause = err.source();
    }
    false
}

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Another process (or handle) has the store open.
    #[error("store is in use: {} (another brine process holds its lock; stop it or use a copy)", path.display())]
    InUse {
        /// The store's path.
        path: PathBuf,
    },
    /// There is no store at the path and creating one was not asked for.
    #[error("no store at {}", path.display())]
    NotFound {
        /// The path.
        path: PathBuf,
    },
    /// The path holds something that is not a Brine store.
    #[error("{} is not a Brine store: {reason}", path.display())]
    NotABrineStore {
        /// The path.
        path: PathBuf,
        /// What gave it away.
        reason: String,
    },
    /// The store was written by a newer Brine.
    #[error("store {} has schema version {found}, newer than this build supports ({supported}); upgrade brine", path.display())]
    NewerSchema {
        /// The path.
        path: PathBuf,
        /// The store's version.
        found: u64,
        /// The newest version this build reads.
        supported: u64,
    },
    /// The store was written by an older Brine: `brine migrate up` upgrades it.
    #[error("store {} has schema version {found}, older than this build's {supported}: upgrade it with `brine migrate up {}` (see `brine migrate status`)", path.display(), path.display())]
    OlderSchema {
        /// The path.
        path: PathBuf,
        /// The store's version.
        found: u64,
        /// The version this build reads and writes.
        supported: u64,
    },
    /// The store has a schema version this build does not know.
    #[error("store {} has unknown schema version {found} (this build reads only {supported} and has no migration from it); open it with the brine build that wrote it", path.display())]
    UnknownSchema {
        /// The path.
        path: PathBuf,
        /// The store's version.
        found: u64,
        /// The version this build reads.
        supported: u64,
    },
    /// A compute store opened as a requester store or the other way round.
    #[error("store {} is a {found} store, not a {expected} store", path.display())]
    WrongKind {
        /// The path.
        path: PathBuf,
        /// What the store is.
        found: String,
        /// What was asked for.
        expected: &'static str,
    },
    /// Creating a directory failed.
    #[error("cannot create {}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// RocksDB refused to open the store.
    #[error("cannot open {}: {source}", path.display())]
    Engine {
        /// The path.
        path: PathBuf,
        /// RocksDB's error.
        #[source]
        source: rocksdb::Error,
    },
    /// Reading the store's metadata failed.
    #[error("cannot open {}: {source}", path.display())]
    Store {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: StoreError,
    },
}
