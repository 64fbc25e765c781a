//! The test database of each test, from `brine_postgres::testing`, and the stores on it.

#![allow(dead_code)]

use std::sync::Arc;

pub use brine_postgres::testing::*;
use brine_postgres::{PgExecutionStore, PgJobStore, PgOptions};
use brine_store::model::NodeId;
use brine_store::Clock;

/// The node every test's execution store belongs to.
pub fn node() -> NodeId {
    NodeId::new("node-1").unwrap()
}

/// Opens both stores on `database`.
pub async fn open(database: &str, clock: Arc<dyn Clock>) -> (PgExecutionStore, PgJobStore) {
    let options = PgOptions { pool_size: 8, clock };
    let url = url_for(database);
    let executions = brine_postgres::open_execution_store(&url, &node(), options.clone()).await.unwrap();
    let jobs = brine_postgres::open_job_store(&url, options).await.unwrap();
    (executions, jobs)
}
