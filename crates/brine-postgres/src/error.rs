//! Errors: opening a database ([`OpenError`]) and turning driver errors into
//! [`StoreError`]s that say what failed, where, and what to do.

use brine_store::StoreError;
use tokio_postgres::error::SqlState;

/// Why a PostgreSQL store could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The URL does not parse.
    #[error("invalid database URL: {reason} (expected e.g. postgresql://user:password@host:5432/database)")]
    BadUrl {
        /// What is wrong with it.
        reason: String,
    },
    /// The server could not be reached.
    #[error("cannot connect to PostgreSQL at {target}: {reason}; is the server running and reachable?")]
    Unreachable {
        /// Host (or socket directory), port and database.
        target: String,
        /// The driver's reason.
        reason: String,
    },
    /// The server refused the credentials.
    #[error("PostgreSQL at {target} refused the login: {reason}; check the user and password in the URL")]
    Authentication {
        /// Host, port and database.
        target: String,
        /// The server's message.
        reason: String,
    },
    /// The database does not exist.
    #[error("database {database} does not exist on {target}; create it first (CREATE DATABASE {database};)")]
    NoDatabase {
        /// The database.
        database: String,
        /// Host and port.
        target: String,
    },
    /// The user may not create the schema or its tables.
    #[error(
        "the user may not create schema compute in database {database}: {reason}; grant it (GRANT ALL ON DATABASE {database} TO <user>;)"
    )]
    PermissionDenied {
        /// The database.
        database: String,
        /// The server's message.
        reason: String,
    },
    /// The database was migrated by newer code that this code cannot open.
    #[error(
        "database {database} has schema version {found}, newer than this build of Brine supports ({supported}); upgrade Brine"
    )]
    NewerSchema {
        /// The database.
        database: String,
        /// The version found.
        found: u32,
        /// The newest version this code knows.
        supported: u32,
    },
    /// A value of `compute.meta` that Brine wrote does not parse.
    #[error("compute.meta key {key} holds {value:?}, not a version number")]
    CorruptMeta {
        /// The key.
        key: String,
        /// The value found.
        value: String,
    },
    /// Opened read-only (for inspection), a database without Brine's stores: nothing is
    /// created to inspect.
    #[error("database {database} holds no Brine stores ({reason}); nothing to inspect")]
    NoStores {
        /// The database.
        database: String,
        /// What is missing.
        reason: String,
    },
    /// Any other failure while opening.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl OpenError {
    /// Classifies a driver error met while opening `context`.
    pub(crate) fn from_pg(context: String, e: tokio_postgres::Error) -> Self {
        if let Some(db) = e.as_db_error() {
            if *db.code() == SqlState::INSUFFICIENT_PRIVILEGE {
                return OpenError::PermissionDenied {
                    database: database_of(&context),
                    reason: db.message().to_owned(),
                };
            }
        }
        OpenError::Store(pg_error(&context, e))
    }
}

/// The database name in a context string built as `"… (database NAME)"`.
fn database_of(context: &str) -> String {
    context.rsplit_once("(database ").and_then(|(_, rest)| rest.strip_suffix(')')).unwrap_or(context).to_owned()
}

/// A driver error as a [`StoreError::Backend`] naming what the store was doing, the
/// server's message and, for a statement timeout, what that means.
pub(crate) fn pg_error(context: &str, e: tokio_postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        let hint = if *db.code() == SqlState::QUERY_CANCELED {
            " (the statement was cancelled: a statement_timeout or an operator's pg_cancel_backend)"
        } else {
            ""
        };
        let message = format!("{}: {} [SQLSTATE {}]{hint}", context, db.message(), db.code().code());
        return StoreError::Backend { context: message, source: Box::new(e) };
    }
    if e.is_closed() {
        return StoreError::Backend {
            context: format!("{context}: the connection to PostgreSQL was lost"),
            source: Box::new(e),
        };
    }
    StoreError::backend(context.to_owned(), e)
}

/// How many times a write is retried after the server broke a deadlock or refused a
/// serialization.
pub(crate) const MAX_RETRIES: u32 = 8;

/// The driver error inside a store error, if there is one.
fn driver_error(e: &StoreError) -> Option<&tokio_postgres::Error> {
    match e {
        StoreError::Backend { source, .. } => source.downcast_ref::<tokio_postgres::Error>(),
        _ => None,
    }
}

/// Whether retrying the whole transaction may succeed: the server broke a deadlock or
/// refused a serialization.
pub(crate) fn is_retryable(e: &StoreError) -> bool {
    driver_error(e)
        .and_then(|e| e.code())
        .is_some_and(|c| *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED)
}

/// Whether `e` is a lock wait given up (`lock_timeout`).
pub(crate) fn is_lock_timeout(e: &StoreError) -> bool {
    driver_error(e).and_then(|e| e.code()).is_some_and(|c| *c == SqlState::LOCK_NOT_AVAILABLE)
}

/// The source of the error a write gets when the group it was committed with failed
/// as a whole (the first write of the group gets the driver's error itself).
#[derive(Debug, thiserror::Error)]
#[error("the writes grouped into the same transaction failed with it")]
pub(crate) struct GroupFailure;

/// The constraint a unique violation names, if `e` is one.
pub(crate) fn unique_violation(e: &StoreError) -> Option<&str> {
    let db = driver_error(e)?.as_db_error()?;
    (*db.code() == SqlState::UNIQUE_VIOLATION).then(|| db.constraint().unwrap_or(""))
}
