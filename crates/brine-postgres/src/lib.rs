//! The PostgreSQL backend of Brine: where a platform goes when one node is not enough.
//! Several requester processes (and compute nodes) share one database.
//!
//! The library owns its schema, `compute` ([`schema`]): the seed's `compute.meta` and
//! `compute.jobs`, with Brine's other data in added columns and tables
//! (`docs/POSTGRES.md` documents every one). Opening a store migrates the schema under
//! an advisory lock, so any number of processes may open a fresh database at once.
//!
//! Design choices, each because several processes share the data:
//! - **Rows are locked, not the store.** A write locks the rows it reads
//!   (`SELECT … FOR UPDATE`); conditional updates read the current revision under that
//!   lock, so no update is lost across processes. An explicit transaction
//!   (`ExecutionStore::begin_tx`) takes its store's advisory lock exclusively, plain
//!   writes take it shared: "other writers wait" holds across processes too.
//! - **The event log is numbered at commit.** Each log's head row is updated as the last
//!   statement of the writing transaction, so sequence numbers are gap-free in commit
//!   order across processes (no sequence object with gap detection).
//! - **Writes commit in groups.** The head row makes the writers of one log commit one
//!   after another; plain writes that arrive together therefore share one transaction,
//!   each in a savepoint, and so one WAL flush (see `group.rs`).
//! - **Watchers are pushed, not polled.** After a commit, at most one `pg_notify` per
//!   10 ms, carrying the head (never inside the writing transaction: NOTIFY takes a
//!   global lock at commit); a listener connection per store wakes waiters and
//!   reconnects on its own, and a slow poll covers the time it is away.
//! - **The job store's decisions are the other backends'.** Its writes run
//!   `brine_store::job_write` over rows loaded in the transaction (see [`PgJobStore`]).
//! - **Values are the codec's bytes.** Records are `BYTEA` in the versioned codec every
//!   persistent backend shares (`brine_store::codec`); the columns queries filter and
//!   order on are plain columns beside them.
//!
//! It depends on `brine-store` and the driver only; nothing here knows RocksDB.

mod db;
mod error;
mod execution;
mod group;
mod job;
mod log;
pub mod schema;
#[cfg(feature = "testing")]
pub mod testing;

pub use db::PgOptions;
pub use error::OpenError;
pub use execution::PgExecutionStore;
pub use job::PgJobStore;

use brine_store::model::NodeId;

/// The name of a compute node's event log.
fn compute_log(node: &NodeId) -> String {
    format!("compute/{node}")
}

/// The name of the requester's event log (one job store per database).
const REQUESTER_LOG: &str = "requester";

/// Opens the execution store of compute node `node` in the database at `url` (a
/// `postgresql://` URL or a `key=value` connection string), migrating the schema first.
///
/// Stores of several nodes share one database: each node's executions, counters and log
/// are its own.
pub async fn open_execution_store(url: &str, node: &NodeId, options: PgOptions) -> Result<PgExecutionStore, OpenError> {
    let db = db::Db::open(url, compute_log(node), node.as_str().to_owned(), &options).await?;
    Ok(PgExecutionStore { db })
}

/// Opens the requester's job store in the database at `url`, migrating the schema
/// first. Every requester process that opens the same database shares its jobs.
pub async fn open_job_store(url: &str, options: PgOptions) -> Result<PgJobStore, OpenError> {
    let db = db::Db::open(url, REQUESTER_LOG.to_owned(), String::new(), &options).await?;
    Ok(PgJobStore { db })
}

/// A database's schema version and the steps that bring it to this build's.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SchemaStatus {
    /// The database's name.
    pub database: String,
    /// Its schema version (0: no Brine schema yet).
    pub current: u32,
    /// The version this build reads and writes ([`schema::SCHEMA_VERSION`]).
    pub target: u32,
    /// The steps opening a store (or [`migrate_schema`]) applies, in order: the version
    /// each produces and what it does.
    pub pending: Vec<(u32, &'static str)>,
}

async fn connect(url: &str) -> Result<(tokio_postgres::Client, String), OpenError> {
    use std::str::FromStr;
    let config = tokio_postgres::Config::from_str(url).map_err(|e| OpenError::BadUrl { reason: e.to_string() })?;
    let database = config.get_dbname().or(config.get_user()).unwrap_or("postgres").to_owned();
    let (client, connection) =
        config.connect(tokio_postgres::NoTls).await.map_err(|e| db::connect_error(&config, e))?;
    tokio::spawn(async move {
        // Ends when the client is dropped; an error then has no one left to tell.
        let _ = connection.await;
    });
    Ok((client, database))
}

/// Where the schema of the database at `url` stands, read without writing anything
/// (`brine migrate status postgres:URL`). A database newer than this build is refused
/// as opening it would be.
pub async fn schema_status(url: &str) -> Result<SchemaStatus, OpenError> {
    let (client, database) = connect(url).await?;
    let current = match schema::check_version(&client, &database).await {
        Ok(version) => version,
        Err(OpenError::NoStores { .. }) => 0,
        Err(e) => return Err(e),
    };
    let pending = schema::STEPS.iter().filter(|s| s.version > current).map(|s| (s.version, s.description)).collect();
    Ok(SchemaStatus { database, current, target: schema::SCHEMA_VERSION, pending })
}

/// Brings the schema of the database at `url` to this build's version, as opening a
/// store does (one transaction under the migration lock; `brine migrate up
/// postgres:URL`). Back the `compute` schema up first with `pg_dump` (docs/POSTGRES.md).
pub async fn migrate_schema(url: &str) -> Result<schema::Migrated, OpenError> {
    let (mut client, database) = connect(url).await?;
    schema::migrate(&mut client, &database).await
}

/// The stores a database holds, each checked: `requester` (the job store) and
/// `compute/<node>` for every compute node that has opened an execution store in it.
pub type DatabaseCheck = Vec<(String, brine_store::CheckReport)>;

/// Checks every store in the database at `url` (`brine db check --database-url`): the
/// job store and each compute node's execution store, each in one snapshot, with the
/// checks their `check` methods run (every record decodes and agrees with its columns,
/// labels and counters; what belongs to a job or an execution belongs to a stored one;
/// each log holds exactly `trimmed + 1 ..= head`; checkpoints are at or below the head).
///
/// It opens the stores read-only ([`PgOptions::read_only`]): it creates, migrates and
/// registers nothing, so it can run against a live database, and a database without
/// Brine's schema is refused (`NoStores`) rather than set up.
pub async fn check_database(url: &str, options: PgOptions) -> Result<DatabaseCheck, OpenError> {
    use brine_store::{ExecutionStore, JobStore};
    let options = PgOptions { read_only: true, ..options };
    let jobs = open_job_store(url, options.clone()).await?;
    let mut out = vec![(REQUESTER_LOG.to_owned(), jobs.check().await?)];
    let nodes = jobs.db.compute_nodes().await?;
    jobs.close().await?;
    for node in nodes {
        let node = NodeId::new(node).map_err(brine_store::StoreError::from)?;
        let store = open_execution_store(url, &node, options.clone()).await?;
        out.push((compute_log(&node), store.check().await?));
        store.close().await?;
    }
    Ok(out)
}
