//! Online backup of a store: a consistent copy taken while its node keeps writing,
//! checked before it is reported (`brine db backup`).
//!
//! - **RocksDB**: a read-only secondary instance reads one frozen state of the store
//!   (no lock, nothing written to it) and copies every key into a fresh store at the
//!   destination, compacted; the copy is then opened read-only and checked. Restoring
//!   is opening the copy (or moving it where the node expects its store).
//! - **PostgreSQL**: refused, naming the tool: `pg_dump --schema=compute` takes a
//!   consistent copy of every store in the database (`docs/POSTGRES.md`).
//! - **memory**: refused: nothing of an in-memory store outlives its process; a caller
//!   that wants its content on disk exports it with [`crate::dump`].

use std::path::{Path, PathBuf};

use brine_store::CheckReport;

use crate::{Side, StoreConfig, StoreType};

/// What a backup copied, and the copy's check.
#[derive(Debug, Clone)]
pub struct Backup {
    /// The store copied.
    pub source: PathBuf,
    /// The copy.
    pub destination: PathBuf,
    /// Keys copied.
    pub keys: u64,
    /// The copy's size on disk.
    pub bytes: u64,
    /// The store was open (a node running) when it was copied: the copy's first open
    /// runs the repair scan, as after a crash.
    pub source_was_open: bool,
    /// The copy's consistency check.
    pub check: CheckReport,
}

/// Why a backup was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The backend has no backup of its own here (see the module docs).
    #[error("cannot back up the {side} store on {store_type}: {reason}")]
    Unsupported {
        /// Which store.
        side: Side,
        /// Its backend.
        store_type: StoreType,
        /// What to do instead.
        reason: &'static str,
    },
    /// Opening the store or the copy failed.
    #[cfg(feature = "rocksdb")]
    #[error("{doing}: {source}")]
    Open {
        /// What was being opened.
        doing: String,
        /// Why.
        #[source]
        source: brine_rocksdb::OpenError,
    },
    /// Copying or checking failed.
    #[error("{doing}: {source}")]
    Store {
        /// What was being done.
        doing: String,
        /// Why.
        #[source]
        source: brine_store::StoreError,
    },
}

/// Backs up the `side` store `config` names into `dest` (which must not exist, or be
/// an empty directory, outside the store), calling `progress` with the keys copied so
/// far. The copy and the check run on blocking threads.
#[cfg_attr(not(feature = "rocksdb"), allow(unused_variables))]
pub async fn backup(
    config: &StoreConfig,
    side: Side,
    dest: &Path,
    progress: impl FnMut(u64) + Send + 'static,
) -> Result<Backup, BackupError> {
    let (store_type, path) = match side {
        Side::Compute => (config.compute_store_type, &config.compute_store_path),
        Side::Requester => (config.job_store_type, &config.job_store_path),
    };
    match store_type {
        StoreType::InMemory => Err(BackupError::Unsupported {
            side,
            store_type,
            reason: "nothing of an in-memory store outlives its process; export its content with brine::dump \
                     (brine export) instead",
        }),
        StoreType::Postgres => Err(BackupError::Unsupported {
            side,
            store_type,
            reason: "back the database up with pg_dump --schema=compute, which copies every store in it \
                     (docs/POSTGRES.md)",
        }),
        #[cfg(feature = "rocksdb")]
        StoreType::RocksDb => rocksdb(path, dest, progress).await,
        #[allow(unreachable_patterns)]
        other => Err(BackupError::Unsupported {
            side,
            store_type: other,
            reason: "this build of brine was compiled without the backend's cargo feature",
        }),
    }
}

#[cfg(feature = "rocksdb")]
async fn rocksdb(
    path: &Path,
    dest: &Path,
    mut progress: impl FnMut(u64) + Send + 'static,
) -> Result<Backup, BackupError> {
    use std::sync::Arc;

    use brine_rocksdb::Inspector;
    let store = |doing: &str| {
        let doing = doing.to_owned();
        move |source| BackupError::Store { doing, source }
    };
    let blocking_failed = |e: tokio::task::JoinError| BackupError::Store {
        doing: "run the backup".into(),
        source: brine_store::StoreError::backend("a blocking task", e),
    };
    let source = Inspector::open(path)
        .map_err(|source| BackupError::Open { doing: format!("cannot open {}", path.display()), source })?;
    let source = Arc::new(source);
    let source_was_open = source.marked_open();
    let copied = tokio::task::spawn_blocking({
        let (source, dest) = (Arc::clone(&source), dest.to_path_buf());
        move || {
            let mut keys = 0;
            let sizes = source.compact_into(&dest, 10_000, |n| {
                keys = n;
                progress(n)
            });
            sizes.map(|(_, bytes)| (keys, bytes))
        }
    })
    .await
    .map_err(blocking_failed)?;
    let closed = source.close().await;
    let (keys, bytes) = copied.map_err(store("copy the store"))?;
    closed.map_err(store("close the store"))?;
    let copy = Inspector::open(dest)
        .map_err(|source| BackupError::Open { doing: "cannot open the copy to check it".into(), source })?;
    let copy = Arc::new(copy);
    let check = tokio::task::spawn_blocking({
        let copy = Arc::clone(&copy);
        move || copy.check()
    })
    .await
    .map_err(blocking_failed)?;
    copy.close().await.map_err(store("close the copy"))?;
    let check = check.map_err(store("check the copy"))?;
    Ok(Backup { source: path.to_path_buf(), destination: dest.to_path_buf(), keys, bytes, source_was_open, check })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_and_postgres_stores_are_refused_naming_what_to_do_instead() {
        let mut config = StoreConfig::from_lookup(|k| (k == "BRINE_DIR").then(|| "/d".to_owned())).unwrap();
        config.compute_store_type = StoreType::InMemory;
        let err = backup(&config, Side::Compute, Path::new("/tmp/x"), |_| {}).await.unwrap_err().to_string();
        assert!(
            err.starts_with("cannot back up the compute store on inmemory: nothing of an in-memory store"),
            "{err}"
        );
        assert!(err.contains("brine export"), "{err}");
        config.job_store_type = StoreType::Postgres;
        let err = backup(&config, Side::Requester, Path::new("/tmp/x"), |_| {}).await.unwrap_err().to_string();
        assert!(err.contains("pg_dump --schema=compute"), "{err}");
        assert!(!Path::new("/tmp/x").join("CURRENT").exists(), "nothing written");
    }
}
