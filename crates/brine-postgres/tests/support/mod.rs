//! The test database of each test, from `brine_postgres::testing`, and the stores on it.

#![allow(dead_code)]

use std::sync::Arc;

pub use brine_postgres::testing::*;
use brine_postgres::{PgExecutionStore, PgJobStore, PgOptions};
use brine_store::model::{ExecutionId, Job, JobId, NodeId};
use brine_store::{Clock, ExecutionStore, JobStore};

/// The runtime of a test: two workers, as on the machines the tests run on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

pub fn eid(s: &str) -> ExecutionId {
    ExecutionId::new(s).unwrap()
}

/// A job whose id and name are `id`.
pub fn job(id: &str) -> Job {
    Job::new(JobId::new(id).unwrap(), id)
}

/// Closes both stores and drops the test's database.
pub async fn close(database: &str, store: &PgExecutionStore, jobs: &PgJobStore) {
    store.close().await.unwrap();
    jobs.close().await.unwrap();
    drop_database(database).await;
}

/// The node every test's execution store belongs to.
pub fn node() -> NodeId {
    NodeId::new("node-1").unwrap()
}

/// Opens both stores on `database`.
pub async fn open(database: &str, clock: Arc<dyn Clock>) -> (PgExecutionStore, PgJobStore) {
    let options = PgOptions { pool_size: 8, clock, ..PgOptions::default() };
    let url = url_for(database);
    let executions = brine_postgres::open_execution_store(&url, &node(), options.clone()).await.unwrap();
    let jobs = brine_postgres::open_job_store(&url, options).await.unwrap();
    (executions, jobs)
}
