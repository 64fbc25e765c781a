//! The schema `compute`, owned by the library: numbered migration steps embedded in the
//! binary, applied at open in one transaction under an advisory lock.
//!
//! `compute.meta` holds `schema_version` (the last step applied) and
//! `min_code_version` (the oldest schema version of code that may still open the
//! database). A database whose version is newer than [`SCHEMA_VERSION`] is refused unless
//! its `min_code_version` says this code may still open it. Each step is SQL only: no
//! text is ever built from a value. `docs/POSTGRES.md` explains every table, column and
//! index.
//!
//! The SQL below names state codes as numbers where PostgreSQL needs constants (partial
//! indexes and the queries that must match them): job states `Queued = 1`,
//! `Running = 2`, terminal from `Completed = 3`; execution states live from
//! `BidAccepted = 1` to `Publishing = 5`. A unit test checks these against the model.

use tokio_postgres::Client;

use crate::error::{pg_error, OpenError};

/// The schema version this code writes.
pub const SCHEMA_VERSION: u32 = 1;

/// The oldest schema version whose code can still read and write what this code
/// writes (recorded as `min_code_version`).
pub const MIN_CODE_VERSION: u32 = 1;

/// The advisory-lock class of every lock Brine takes (`BRNE`), so it never collides
/// with an application's own advisory locks on a shared server.
pub const LOCK_CLASS: i32 = 0x4252_4E45;

/// The advisory lock (within [`LOCK_CLASS`]) that serialises migrations.
const MIGRATION_LOCK: i32 = 0;

/// One migration step: its version, what it does, and its SQL.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    /// The schema version after this step.
    pub version: u32,
    /// What it changes, for `brine migrate status`.
    pub description: &'static str,
    /// The statements.
    pub sql: &'static str,
}

/// Every step, in order.
pub const STEPS: &[Step] = &[Step {
    version: 1,
    description: "the seed's compute.jobs with Brine's columns, the requester's and compute node's tables, event logs and checkpoints",
    sql: STEP_1,
}];

/// Created before any step runs (the version lives here).
const BOOTSTRAP: &str = "
CREATE SCHEMA IF NOT EXISTS compute;
CREATE TABLE IF NOT EXISTS compute.meta (
    key VARCHAR(32) PRIMARY KEY CHECK (length(key) > 2),
    value VARCHAR(256) NOT NULL
);
";

const STEP_1: &str = r#"
CREATE TABLE compute.jobs (
    job_id BYTEA PRIMARY KEY CHECK (length(job_id) = 16),
    status VARCHAR(11) NOT NULL CHECK (status IN ('queued', 'in-progress', 'complete', 'failed', 'expired')),
    queue VARCHAR(32) NOT NULL,
    config TEXT,
    input_files VARCHAR[] NOT NULL,
    created TIMESTAMP WITH TIME ZONE NOT NULL,
    last_accessed TIMESTAMP WITH TIME ZONE NOT NULL,
    grabbed TIMESTAMP WITH TIME ZONE,
    finished TIMESTAMP WITH TIME ZONE,
    output_files VARCHAR[],
    id TEXT COLLATE "C" NOT NULL UNIQUE,
    namespace TEXT COLLATE "C" NOT NULL,
    name TEXT COLLATE "C" NOT NULL,
    state SMALLINT NOT NULL,
    job_type SMALLINT NOT NULL,
    created_ns BIGINT NOT NULL,
    modified_ns BIGINT NOT NULL,
    accessed_ns BIGINT NOT NULL,
    revision BIGINT NOT NULL,
    version BIGINT NOT NULL,
    record BYTEA NOT NULL,
    CONSTRAINT jobs_name_key UNIQUE (namespace, name)
);
CREATE INDEX jobs_queued ON compute.jobs (queue, created_ns, id) WHERE state = 1 AND queue <> '';
CREATE INDEX jobs_idle ON compute.jobs (accessed_ns, id) WHERE state IN (1, 2) AND queue <> '';
CREATE INDEX jobs_in_progress ON compute.jobs (job_type, id) WHERE state < 3;
CREATE INDEX jobs_by_created ON compute.jobs (created_ns, id);
CREATE INDEX jobs_by_modified ON compute.jobs (modified_ns, id);
CREATE INDEX jobs_by_namespace_created ON compute.jobs (namespace, created_ns, id);
CREATE INDEX jobs_by_namespace_modified ON compute.jobs (namespace, modified_ns, id);
CREATE INDEX jobs_by_state_created ON compute.jobs (state, created_ns, id);
CREATE INDEX jobs_by_state_modified ON compute.jobs (state, modified_ns, id);

CREATE TABLE compute.job_labels (
    job TEXT COLLATE "C" NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    value TEXT COLLATE "C" NOT NULL,
    created_ns BIGINT NOT NULL,
    modified_ns BIGINT NOT NULL,
    PRIMARY KEY (job, key)
);
CREATE INDEX job_labels_created ON compute.job_labels (key, value, created_ns, job);
CREATE INDEX job_labels_modified ON compute.job_labels (key, value, modified_ns, job);

CREATE TABLE compute.job_versions (
    job TEXT COLLATE "C" NOT NULL,
    version BIGINT NOT NULL,
    record BYTEA NOT NULL,
    PRIMARY KEY (job, version)
);

CREATE TABLE compute.job_history (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job TEXT COLLATE "C" NOT NULL,
    record BYTEA NOT NULL
);
CREATE INDEX job_history_by_job ON compute.job_history (job, seq);

CREATE TABLE compute.evaluations (
    id TEXT COLLATE "C" PRIMARY KEY,
    job TEXT COLLATE "C" NOT NULL,
    record BYTEA NOT NULL
);
CREATE INDEX evaluations_by_job ON compute.evaluations (job, id);

CREATE TABLE compute.job_executions (
    id TEXT COLLATE "C" PRIMARY KEY,
    job TEXT COLLATE "C" NOT NULL,
    node TEXT COLLATE "C",
    record BYTEA NOT NULL
);
CREATE INDEX job_executions_by_job ON compute.job_executions (job, id);
CREATE INDEX job_executions_by_node ON compute.job_executions (node, id) WHERE node IS NOT NULL;

CREATE TABLE compute.purged_jobs (
    id TEXT COLLATE "C" PRIMARY KEY,
    archive TEXT COLLATE "C" NOT NULL
);

CREATE TABLE compute.executions (
    node TEXT COLLATE "C" NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    job TEXT COLLATE "C" NOT NULL,
    state SMALLINT NOT NULL,
    modified_ns BIGINT NOT NULL,
    revision BIGINT NOT NULL,
    record BYTEA NOT NULL,
    PRIMARY KEY (node, id)
);
CREATE INDEX executions_by_job ON compute.executions (node, job, id);
CREATE INDEX executions_by_state ON compute.executions (node, state, id);

CREATE TABLE compute.execution_events (
    node TEXT COLLATE "C" NOT NULL,
    execution TEXT COLLATE "C" NOT NULL,
    seq BIGINT GENERATED ALWAYS AS IDENTITY,
    event BYTEA NOT NULL,
    PRIMARY KEY (node, execution, seq)
);

CREATE TABLE compute.execution_counts (
    node TEXT COLLATE "C" NOT NULL,
    state SMALLINT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (node, state)
);

CREATE TABLE compute.logs (
    name TEXT COLLATE "C" PRIMARY KEY,
    last_seq BIGINT NOT NULL DEFAULT 0,
    trimmed BIGINT NOT NULL DEFAULT 0,
    store_id TEXT NOT NULL
);

CREATE TABLE compute.log_entries (
    log TEXT COLLATE "C" NOT NULL,
    seq BIGINT NOT NULL,
    created_ns BIGINT NOT NULL,
    object_type SMALLINT NOT NULL,
    operation SMALLINT NOT NULL,
    entry BYTEA NOT NULL,
    PRIMARY KEY (log, seq)
);

CREATE TABLE compute.checkpoints (
    log TEXT COLLATE "C" NOT NULL,
    name TEXT COLLATE "C" NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (log, name)
);
"#;

/// What opening found and did to the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// The version found (0: a database without Brine's schema).
    pub from: u32,
    /// The version now.
    pub to: u32,
}

fn parse_version(key: &str, value: Option<String>) -> Result<u32, OpenError> {
    match value {
        None => Ok(0),
        Some(v) => v.parse().map_err(|_| OpenError::CorruptMeta { key: key.to_owned(), value: v }),
    }
}

/// The schema version of the database, read without writing anything (a read-only
/// open, for inspection): a database without Brine's schema, or of a version this code
/// cannot read, is refused.
pub async fn check_version(client: &Client, database: &str) -> Result<u32, OpenError> {
    let exists = client
        .query_one("SELECT to_regclass('compute.meta') IS NOT NULL", &[])
        .await
        .map_err(|e| OpenError::from_pg(format!("look for compute.meta (database {database})"), e))?;
    if !exists.get::<_, bool>(0) {
        return Err(OpenError::NoStores { database: database.to_owned(), reason: "no compute schema".into() });
    }
    let mut read = Vec::new();
    for key in ["schema_version", "min_code_version"] {
        let row = client
            .query_opt("SELECT value FROM compute.meta WHERE key = $1", &[&key])
            .await
            .map_err(|e| OpenError::from_pg(format!("read compute.meta (database {database})"), e))?;
        read.push(parse_version(key, row.map(|r| r.get::<_, String>(0)))?);
    }
    let (version, min_code) = (read[0], read[1]);
    if version == 0 {
        return Err(OpenError::NoStores { database: database.to_owned(), reason: "no schema version".into() });
    }
    if version > SCHEMA_VERSION && (min_code > SCHEMA_VERSION || min_code == 0) {
        return Err(OpenError::NewerSchema {
            database: database.to_owned(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(version)
}

/// Brings the schema to [`SCHEMA_VERSION`] in one transaction under the migration lock:
/// four processes opening a fresh database at once end with one schema. Refuses a
/// database that is newer than this code can open.
pub async fn migrate(client: &mut Client, database: &str) -> Result<Migrated, OpenError> {
    let ctx = |what: &str| format!("{what} (database {database})");
    let tx = client.transaction().await.map_err(|e| OpenError::from_pg(ctx("begin the migration"), e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1, $2)", &[&LOCK_CLASS, &MIGRATION_LOCK])
        .await
        .map_err(|e| OpenError::from_pg(ctx("take the migration lock"), e))?;
    tx.batch_execute(BOOTSTRAP).await.map_err(|e| OpenError::from_pg(ctx("create schema compute"), e))?;
    let read = |key: &'static str| {
        let tx = &tx;
        async move {
            let row = tx
                .query_opt("SELECT value FROM compute.meta WHERE key = $1", &[&key])
                .await
                .map_err(|e| OpenError::from_pg(format!("read compute.meta (database {database})"), e))?;
            parse_version(key, row.map(|r| r.get::<_, String>(0)))
        }
    };
    let from = read("schema_version").await?;
    let min_code = read("min_code_version").await?;
    if from > SCHEMA_VERSION {
        if min_code > SCHEMA_VERSION || min_code == 0 {
            return Err(OpenError::NewerSchema {
                database: database.to_owned(),
                found: from,
                supported: SCHEMA_VERSION,
            });
        }
        // A newer schema that says this code may still open it.
        tx.commit().await.map_err(|e| OpenError::from_pg(ctx("end the migration"), e))?;
        return Ok(Migrated { from, to: from });
    }
    for step in STEPS.iter().filter(|s| s.version > from) {
        tx.batch_execute(step.sql)
            .await
            .map_err(|e| OpenError::from_pg(ctx(&format!("apply schema step {}", step.version)), e))?;
    }
    if from < SCHEMA_VERSION {
        let upsert = "INSERT INTO compute.meta (key, value) VALUES ($1, $2) \
                      ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value";
        for (key, value) in [("schema_version", SCHEMA_VERSION), ("min_code_version", MIN_CODE_VERSION)] {
            tx.execute(upsert, &[&key, &value.to_string()])
                .await
                .map_err(|e| pg_error(&ctx("record the schema version"), e))
                .map_err(OpenError::Store)?;
        }
    }
    tx.commit().await.map_err(|e| OpenError::from_pg(ctx("commit the migration"), e))?;
    Ok(Migrated { from, to: SCHEMA_VERSION })
}

#[cfg(test)]
mod tests {
    use brine_store::model::{ExecutionState, JobState};

    use super::*;

    /// The SQL names state codes as constants; they must be the model's.
    #[test]
    fn the_state_codes_in_the_sql_are_the_models() {
        assert_eq!(JobState::Queued.code(), 1);
        assert_eq!(JobState::Running.code(), 2);
        let terminal: Vec<u8> = JobState::ALL.iter().filter(|s| s.is_terminal()).map(|s| s.code()).collect();
        assert_eq!(terminal, vec![3, 4, 5, 6]);
        let live: Vec<u8> = ExecutionState::LIVE.iter().map(|s| s.code()).collect();
        assert_eq!(live, vec![1, 2, 3, 4, 5]);
        assert!(STEP_1.contains("WHERE state = 1 AND queue <> ''"));
    }

    #[test]
    fn steps_are_numbered_from_one_without_gaps() {
        for (i, step) in STEPS.iter().enumerate() {
            assert_eq!(step.version as usize, i + 1);
        }
        assert_eq!(STEPS.last().map(|s| s.version), Some(SCHEMA_VERSION));
    }
}
