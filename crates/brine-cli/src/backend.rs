//! Which backend a command opens: `--backend`, else the configuration
//! (`BRINE_COMPUTE_STORE_TYPE`, `BRINE_JOB_STORE_TYPE`). Stores are opened through the
//! `brine` facade, so the command honours the configured backend or refuses it by name.

use std::path::Path;

use brine::StoreType;
use clap::ValueEnum;

/// A backend named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum BackendArg {
    /// In memory: the store starts empty and nothing outlives the command.
    Memory,
    /// Embedded RocksDB on local disk (the default).
    Rocksdb,
    /// The PostgreSQL database `--database-url` (or BRINE_DATABASE_URL) names.
    Postgres,
}

impl From<BackendArg> for StoreType {
    fn from(b: BackendArg) -> StoreType {
        match b {
            BackendArg::Memory => StoreType::InMemory,
            BackendArg::Rocksdb => StoreType::RocksDb,
            BackendArg::Postgres => StoreType::Postgres,
        }
    }
}

/// Applies `--database-url` over BRINE_DATABASE_URL, and refuses a postgres backend
/// without either, naming both.
pub(crate) fn database_url(
    config: &mut brine::StoreConfig,
    backend: StoreType,
    flag: Option<String>,
) -> anyhow::Result<()> {
    if let Some(url) = flag {
        config.database_url = Some(url);
    }
    if backend == StoreType::Postgres && config.database_url.is_none() {
        anyhow::bail!("the postgres backend needs a database: give --database-url URL or set BRINE_DATABASE_URL");
    }
    Ok(())
}

/// The backend to open: the flag's, else the configured one. A `--store` path names a
/// RocksDB directory, so it is refused with any other backend rather than ignored.
pub(crate) fn choose(
    flag: Option<BackendArg>,
    configured: StoreType,
    path: Option<&Path>,
) -> anyhow::Result<StoreType> {
    let chosen = flag.map_or(configured, StoreType::from);
    if let (Some(path), false) = (path, chosen == StoreType::RocksDb) {
        anyhow::bail!("--store {} names a RocksDB directory, but the backend is {chosen}", path.display());
    }
    Ok(chosen)
}
