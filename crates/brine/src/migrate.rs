//! Format versions and the steps that upgrade a store written by an older brine: what
//! `brine migrate status|up` and a downstream `cargo xtask migrate` call.
//!
//! - **RocksDB** ([`rocksdb`]): a store records its format version in `meta`; opening
//!   an older one is refused naming `brine migrate up PATH`. [`rocksdb::up_with`] takes
//!   a RocksDB checkpoint of the store first ([`rocksdb::UpOptions::backup`]), applies
//!   each numbered step in bounded batches, records each in `meta`, and is resumable:
//!   a step cut short leaves the old version, and running it again redoes the step.
//!   The steps run on blocking I/O: call them from a blocking thread.
//! - **PostgreSQL** ([`postgres`]): the schema's embedded SQL steps run in one
//!   transaction under a lock whenever a store opens; [`postgres::schema_status`] reads
//!   where a database stands, [`postgres::migrate_schema`] applies the steps without
//!   opening a store. Take a `pg_dump` of the `compute` schema first
//!   (`docs/POSTGRES.md`).
//!
//! `crates/brine/examples/migrate.rs` is the program `cargo xtask migrate` runs: the
//! form a downstream project copies into its own xtask.

/// The RocksDB backend's format versions and steps.
#[cfg(feature = "rocksdb")]
pub mod rocksdb {
    pub use brine_rocksdb::migrate::{
        status, up, up_with, upgradable, AppliedStep, MigrateError, PendingStep, Report, Status, Step, UpOptions, STEPS,
    };
    pub use brine_rocksdb::SCHEMA_VERSION;
}

/// The PostgreSQL backend's schema versions and steps.
#[cfg(feature = "postgres")]
pub mod postgres {
    pub use brine_postgres::schema::{Migrated, Step, SCHEMA_VERSION, STEPS};
    pub use brine_postgres::{migrate_schema, schema_status, SchemaStatus};
}
