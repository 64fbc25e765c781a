//! Brine: the persistent state layer of a distributed compute platform, as one crate.
//!
//! A scheduler depends on this crate alone. It re-exports the store traits
//! ([`ExecutionStore`], [`JobStore`], [`EventLog`]), the data model ([`model`]), the
//! errors and the configuration, and opens stores on the backend the configuration
//! names, so the backend is chosen at run time, not compile time:
//!
//! | `BRINE_COMPUTE_STORE_TYPE` / `BRINE_JOB_STORE_TYPE` | backend |
//! | --- | --- |
//! | `rocksdb` (default), `boltdb` (Bacalhau's name for the embedded store) | RocksDB at the configured path (cargo feature `rocksdb`, on by default) |
//! | `inmemory` | in memory; nothing is kept once the process ends |
//! | `postgres` | the PostgreSQL database `BRINE_DATABASE_URL` names, shared with other processes (cargo feature `postgres`, on by default) |
//!
//! Each variable falls back to Bacalhau's `BACALHAU_*` name; [`StoreConfig`] documents
//! the paths. A build without the `rocksdb` feature compiles no C++ and refuses
//! `rocksdb` with [`OpenError::Unavailable`], naming the feature; likewise `postgres`.
//! On PostgreSQL, the compute store of node `BRINE_NODE_ID` is that node's rows of the
//! shared schema, and every requester opening the database shares one job store.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use brine::model::{Execution, ExecutionId, Job, JobId};
//!
//! // A scheduler reads the configuration from its environment:
//! //     let config = brine::StoreConfig::from_env()?;
//! // Here the environment is spelled out, choosing the in-memory backend.
//! let env = [("BRINE_DIR", "/tmp/brine-example"), ("BRINE_COMPUTE_STORE_TYPE", "inmemory")];
//! let config = brine::StoreConfig::from_lookup(|k| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string()))?;
//! let executions = brine::open_execution_store(&config).await?;
//!
//! let job = Job::new(JobId::new("job-1")?, "nightly");
//! let created = executions.create_execution(Execution::new(ExecutionId::new("exec-1")?, &job), vec![]).await?;
//! assert_eq!(created.revision, 1);
//! executions.close().await?;
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;

pub mod backup;
pub mod dump;
pub mod migrate;

pub use brine_store::config::{ConfigError, StoreConfig, StoreType};
pub use brine_store::{
    async_trait, model, rules, AnyState, CheckReport, Clock, Condition, Durability, EventBatch, EventFilter, EventLog,
    ExecutionStore, ExecutionTx, ExecutionUpdate, HistoryPage, HistoryQuery, JobBundle, JobOutcome, JobPage, JobQuery,
    JobSort, JobStamp, JobStore, LabelSelector, ManualClock, ObjectKind, Position, Problem, RepairReport, Result,
    SortOrder, StoreError, SystemClock, UpdateExecutionRequest, UpdateJobStateRequest,
};

/// How stores are opened, beyond what [`StoreConfig`] says.
#[derive(Debug, Clone)]
pub struct Options {
    /// When a commit counts as done (durable backends).
    pub durability: Durability,
    /// Create the store when it does not exist (durable backends). Tools that inspect
    /// or repair an existing store turn this off.
    pub create_if_missing: bool,
    /// Where timestamps come from.
    pub clock: Arc<dyn Clock>,
}

impl Default for Options {
    fn default() -> Self {
        Options { durability: Durability::Sync, create_if_missing: true, clock: Arc::new(SystemClock) }
    }
}

/// Which store of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The compute node's execution store (`BRINE_COMPUTE_STORE_TYPE`).
    Compute,
    /// The requester's job store (`BRINE_JOB_STORE_TYPE`).
    Requester,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Compute => "compute",
            Side::Requester => "requester",
        })
    }
}

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The configuration names a backend this build cannot open.
    #[error("cannot open the {side} store on {store_type}: {reason}")]
    Unavailable {
        /// Which store.
        side: Side,
        /// The backend asked for.
        store_type: StoreType,
        /// Why it is not available.
        reason: String,
    },
    /// The RocksDB backend refused the store.
    #[cfg(feature = "rocksdb")]
    #[error(transparent)]
    RocksDb(#[from] brine_rocksdb::OpenError),
    /// The PostgreSQL backend could not open the store.
    #[cfg(feature = "postgres")]
    #[error(transparent)]
    Postgres(#[from] brine_postgres::OpenError),
}

/// What opening the `side` store of `config` opens, in words a command can print:
/// `rocksdb compute store at PATH`, `postgres compute store of node N in URL` (the
/// URL's password hidden), `inmemory … (empty: nothing outlives the command)`.
pub fn describe(config: &StoreConfig, side: Side) -> String {
    let (store_type, path) = match side {
        Side::Compute => (config.compute_store_type, &config.compute_store_path),
        Side::Requester => (config.job_store_type, &config.job_store_path),
    };
    match store_type {
        StoreType::InMemory => format!("inmemory {side} store (empty: nothing outlives the command)"),
        StoreType::RocksDb => format!("rocksdb {side} store at {}", path.display()),
        StoreType::Postgres => {
            let node = match side {
                Side::Compute => format!(" of node {}", config.node_id),
                Side::Requester => String::new(),
            };
            let url = config.database_url.as_deref().map_or_else(|| "(no database URL)".to_owned(), redact_password);
            format!("postgres {side} store{node} in {url}")
        }
    }
}

/// A connection string with its password replaced by `***`, in URL form
/// (`postgresql://user:secret@host/db`) and key-value form (`password=secret`).
fn redact_password(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(start) = out.find("://").map(|i| i + 3) {
        if let Some(at) = out[start..].find('@').map(|i| start + i) {
            if let Some(colon) = out[start..at].find(':').map(|i| start + i) {
                out.replace_range(colon + 1..at, "***");
            }
        }
    }
    for key in ["password=", "PASSWORD="] {
        let mut from = 0;
        while let Some(i) = out[from..].find(key).map(|i| from + i + key.len()) {
            let end = out[i..].find(['&', ' ']).map_or(out.len(), |j| i + j);
            out.replace_range(i..end, "***");
            from = i + 3;
        }
    }
    out
}

fn unavailable(side: Side, store_type: StoreType) -> OpenError {
    let reason = format!("this build of brine was compiled without the `{store_type}` cargo feature");
    OpenError::Unavailable { side, store_type, reason }
}

#[cfg(feature = "rocksdb")]
fn rocks_options(config: &StoreConfig, options: &Options) -> brine_rocksdb::OpenOptions {
    brine_rocksdb::OpenOptions {
        durability: options.durability,
        create_if_missing: options.create_if_missing,
        node_id: Some(config.node_id.clone()),
        clock: Arc::clone(&options.clock),
        quota_bytes: config.quota_bytes,
    }
}

/// Refuses a space quota on a backend that keeps none (only RocksDB stores have one),
/// rather than ignore it.
fn check_quota(config: &StoreConfig, side: Side, store_type: StoreType) -> std::result::Result<(), OpenError> {
    match (config.quota_bytes, store_type) {
        (Some(_), StoreType::InMemory | StoreType::Postgres) => Err(OpenError::Unavailable {
            side,
            store_type,
            reason: "BRINE_QUOTA_BYTES applies to rocksdb stores only (a PostgreSQL database's space is the \
                     server's to limit); unset it for this store"
                .to_owned(),
        }),
        _ => Ok(()),
    }
}

#[cfg(feature = "postgres")]
fn pg_options(options: &Options) -> brine_postgres::PgOptions {
    brine_postgres::PgOptions { clock: Arc::clone(&options.clock), ..brine_postgres::PgOptions::default() }
}

/// The database URL of a postgres configuration (`StoreConfig` refuses one without).
#[cfg(feature = "postgres")]
fn database_url(config: &StoreConfig, side: Side) -> std::result::Result<&str, OpenError> {
    config.database_url.as_deref().ok_or_else(|| OpenError::Unavailable {
        side,
        store_type: StoreType::Postgres,
        reason: "no database URL is configured (BRINE_DATABASE_URL)".to_owned(),
    })
}

/// Opens the compute node's execution store on the backend `config` names
/// (`compute_store_type`), with default [`Options`].
pub async fn open_execution_store(config: &StoreConfig) -> std::result::Result<Arc<dyn ExecutionStore>, OpenError> {
    open_execution_store_with(config, &Options::default()).await
}

/// Opens the compute node's execution store on the backend `config` names.
pub async fn open_execution_store_with(
    config: &StoreConfig,
    options: &Options,
) -> std::result::Result<Arc<dyn ExecutionStore>, OpenError> {
    check_quota(config, Side::Compute, config.compute_store_type)?;
    match config.compute_store_type {
        StoreType::InMemory => Ok(Arc::new(brine_memory::MemExecutionStore::with_clock(Arc::clone(&options.clock)))),
        #[cfg(feature = "rocksdb")]
        StoreType::RocksDb => Ok(Arc::new(brine_rocksdb::RocksExecutionStore::open(
            &config.compute_store_path,
            &rocks_options(config, options),
        )?)),
        #[cfg(feature = "postgres")]
        StoreType::Postgres => Ok(Arc::new(
            brine_postgres::open_execution_store(
                database_url(config, Side::Compute)?,
                &config.node_id,
                pg_options(options),
            )
            .await?,
        )),
        // Reached in builds without a backend's cargo feature.
        #[allow(unreachable_patterns)]
        other => Err(unavailable(Side::Compute, other)),
    }
}

/// Opens the requester's job store on the backend `config` names (`job_store_type`),
/// with default [`Options`].
pub async fn open_job_store(config: &StoreConfig) -> std::result::Result<Arc<dyn JobStore>, OpenError> {
    open_job_store_with(config, &Options::default()).await
}

/// Opens the requester's job store on the backend `config` names.
pub async fn open_job_store_with(
    config: &StoreConfig,
    options: &Options,
) -> std::result::Result<Arc<dyn JobStore>, OpenError> {
    check_quota(config, Side::Requester, config.job_store_type)?;
    match config.job_store_type {
        StoreType::InMemory => Ok(Arc::new(brine_memory::MemJobStore::with_clock(Arc::clone(&options.clock)))),
        #[cfg(feature = "rocksdb")]
        StoreType::RocksDb => {
            Ok(Arc::new(brine_rocksdb::RocksJobStore::open(&config.job_store_path, &rocks_options(config, options))?))
        }
        #[cfg(feature = "postgres")]
        StoreType::Postgres => Ok(Arc::new(
            brine_postgres::open_job_store(database_url(config, Side::Requester)?, pg_options(options)).await?,
        )),
        // Reached in builds without a backend's cargo feature.
        #[allow(unreachable_patterns)]
        other => Err(unavailable(Side::Requester, other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_name_the_backend_and_hide_passwords() {
        let mut config = StoreConfig::from_lookup(|k| (k == "BRINE_DIR").then(|| "/d".to_owned())).unwrap();
        assert_eq!(describe(&config, Side::Compute), "rocksdb compute store at /d/node-0-compute.db");
        config.job_store_type = StoreType::InMemory;
        assert_eq!(
            describe(&config, Side::Requester),
            "inmemory requester store (empty: nothing outlives the command)"
        );
        config.compute_store_type = StoreType::Postgres;
        config.database_url = Some("postgresql://brine:s3cret@db.example/brine?sslmode=require".into());
        assert_eq!(
            describe(&config, Side::Compute),
            "postgres compute store of node node-0 in postgresql://brine:***@db.example/brine?sslmode=require"
        );
        assert_eq!(redact_password("host=/tmp user=u password=pw dbname=x"), "host=/tmp user=u password=*** dbname=x");
        assert_eq!(
            redact_password("postgresql:///postgres?host=/tmp&password=pw"),
            "postgresql:///postgres?host=/tmp&password=***"
        );
    }
}
