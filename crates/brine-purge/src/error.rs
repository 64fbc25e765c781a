//! The errors of purging and of reading archives back.

use std::path::PathBuf;

use brine_store::StoreError;

/// Why a purge or an archive read failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PurgeError {
    /// The store failed.
    #[error("purge: {0}")]
    Store(StoreError),
    /// A file operation failed.
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A record could not be encoded as JSON.
    #[error("cannot encode a record as JSON: {0}")]
    Encode(String),
    /// An archive, index or marker file does not read as one.
    #[error("{} line {line}: {reason}", path.display())]
    BadArchive {
        /// The file.
        path: PathBuf,
        /// The 1-based line (0: the file as a whole).
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The index names an archive file that is not there.
    #[error("the index puts {id} in archive {stamp}, which is not in {}", dir.display())]
    MissingArchive {
        /// The id looked up.
        id: String,
        /// Its archive's stamp.
        stamp: crate::archive::Stamp,
        /// The archive directory.
        dir: PathBuf,
    },
    /// The archive directory does not exist.
    #[error("no archive directory at {}", dir.display())]
    NoArchiveDir {
        /// The directory.
        dir: PathBuf,
    },
    /// The archive directory has no index: no purge has written to it.
    #[error("{} has no archive index ({}): no purge has archived into it", dir.display(), crate::archive::INDEX_FILE)]
    NoIndex {
        /// The directory.
        dir: PathBuf,
    },
    /// Another purge holds the archive directory.
    #[error("another purge is running on {} (it holds {})", dir.display(), crate::archive::LOCK_FILE)]
    Busy {
        /// The archive directory.
        dir: PathBuf,
    },
    /// The archive directory holds another kind of store's archives.
    #[error("{} holds archives of a {holds} store, not of a {kind} store: use another archive directory", dir.display())]
    WrongDirectory {
        /// The archive directory.
        dir: PathBuf,
        /// Whose archives it holds (`requester` or `compute`).
        holds: String,
        /// What this purge writes.
        kind: String,
    },
    /// A task of the purge failed.
    #[error("purge: {0}")]
    Task(String),
    /// The archive directory holds an interrupted purge of another store.
    #[error("{} holds an interrupted purge of store {marker_store} (marker {marker}), not of this store {store}: use that store's own archive directory", dir.display())]
    ForeignMarker {
        /// The archive directory.
        dir: std::path::PathBuf,
        /// The marker's file name.
        marker: String,
        /// The store id the marker names.
        marker_store: String,
        /// This store's id.
        store: String,
    },
    /// Options that cannot work.
    #[error("purge option {option}: {reason}")]
    Options {
        /// The option.
        option: &'static str,
        /// Why.
        reason: String,
    },
}
