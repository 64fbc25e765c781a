//! A program depending only on `brine` opens the store its environment names.

use std::collections::HashMap;

use brine::model::{Execution, ExecutionId, ExecutionState, Job, JobId, JobState};
use brine::{OpenError, StoreConfig, StoreType};

fn config(vars: &[(&str, &str)]) -> StoreConfig {
    let map: HashMap<&str, &str> = vars.iter().copied().collect();
    StoreConfig::from_lookup(|k| map.get(k).map(|v| v.to_string())).expect("a valid configuration")
}

/// Writes through the store `config` opens, reopens it, and says whether the write is
/// still there.
async fn survives_reopen(config: &StoreConfig) -> bool {
    let store = brine::open_execution_store(config).await.expect("opens");
    let job = Job::new(JobId::new("job-1").unwrap(), "nightly");
    store.create_execution(Execution::new(ExecutionId::new("exec-1").unwrap(), &job), vec![]).await.unwrap();
    assert_eq!(store.get_execution_count(ExecutionState::Created).await.unwrap(), 1);
    assert!(store.check().await.unwrap().is_ok());
    store.close().await.unwrap();
    let again = brine::open_execution_store(config).await.expect("opens again");
    let kept = again.get_execution(&ExecutionId::new("exec-1").unwrap()).await.is_ok();
    again.close().await.unwrap();
    kept
}

#[tokio::test]
async fn the_compute_store_type_chooses_the_backend() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let memory = config(&[("BRINE_DIR", d), ("BRINE_COMPUTE_STORE_TYPE", "inmemory")]);
    assert_eq!(memory.compute_store_type, StoreType::InMemory);
    assert!(!survives_reopen(&memory).await, "memory keeps nothing across a reopen");
    assert!(!memory.compute_store_path.exists(), "and writes nothing to disk");

    let rocks = config(&[("BRINE_DIR", d), ("BRINE_COMPUTE_STORE_TYPE", "rocksdb")]);
    assert!(survives_reopen(&rocks).await, "rocksdb keeps what was written");
    assert!(rocks.compute_store_path.join("CURRENT").exists());

    // Bacalhau's name for the embedded store is the same backend, the same data.
    let bolt = config(&[("BRINE_DIR", d), ("BACALHAU_COMPUTE_STORE_TYPE", "boltdb")]);
    assert_eq!(bolt.compute_store_type, StoreType::RocksDb);
    let store = brine::open_execution_store(&bolt).await.unwrap();
    assert!(store.get_execution(&ExecutionId::new("exec-1").unwrap()).await.is_ok());
    store.close().await.unwrap();
}

#[tokio::test]
async fn the_job_store_type_chooses_the_requester_backend() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    for (kind, kept) in [("inmemory", false), ("rocksdb", true)] {
        let config = config(&[("BRINE_DIR", d), ("BRINE_JOB_STORE_TYPE", kind)]);
        let jobs = brine::open_job_store(&config).await.unwrap();
        jobs.enqueue("q", Job::new(JobId::new("job-1").unwrap(), "n")).await.unwrap();
        assert_eq!(jobs.grab_next("q").await.unwrap().unwrap().state(), JobState::Running);
        assert!(jobs.check().await.unwrap().is_ok());
        jobs.close().await.unwrap();
        let again = brine::open_job_store(&config).await.unwrap();
        assert_eq!(again.get_job(&JobId::new("job-1").unwrap()).await.is_ok(), kept, "{kind}");
        again.close().await.unwrap();
    }
}

/// A PostgreSQL server that cannot be reached is one clear error naming where it looked,
/// not a driver dump.
#[tokio::test]
async fn an_unreachable_database_is_refused_naming_it() {
    let config = config(&[
        ("BRINE_DIR", "/x"),
        ("BRINE_COMPUTE_STORE_TYPE", "postgres"),
        ("BRINE_DATABASE_URL", "postgresql://brine@127.0.0.1:1/jobs_db"),
    ]);
    let err = brine::open_execution_store(&config).await.err().expect("refused");
    assert!(matches!(err, OpenError::Postgres(brine_postgres::OpenError::Unreachable { .. })), "{err}");
    let text = err.to_string();
    assert!(text.starts_with("cannot connect to PostgreSQL at 127.0.0.1:1/jobs_db"), "{text}");
    assert!(text.contains("is the server running"), "{text}");
    let config = config_with_url("postgresql://brine@127.0.0.1:1/db?sslmode=bogus");
    let err = brine::open_job_store(&config).await.err().expect("refused");
    assert!(err.to_string().starts_with("invalid database URL"), "{err}");
}

fn config_with_url(url: &str) -> StoreConfig {
    config(&[("BRINE_DIR", "/x"), ("BRINE_JOB_STORE_TYPE", "postgres"), ("BRINE_DATABASE_URL", url)])
}
