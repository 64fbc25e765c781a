//! The conformance suite, run against the PostgreSQL backend on a real server.

mod support;

use std::sync::Arc;

use brine_conformance::{Backend, Factory};
use brine_postgres::{PgExecutionStore, PgJobStore};
use brine_store::{async_trait, Clock, ExecutionStore, JobStore};

struct Postgres;

struct PostgresBackend {
    database: String,
    clock: Arc<dyn Clock>,
    executions: Arc<PgExecutionStore>,
    jobs: Arc<PgJobStore>,
}

#[async_trait]
impl Factory for Postgres {
    async fn open(&self, clock: Arc<dyn Clock>) -> Box<dyn Backend> {
        let database = support::fresh_database().await;
        let (executions, jobs) = support::open(&database, Arc::clone(&clock)).await;
        Box::new(PostgresBackend { database, clock, executions: Arc::new(executions), jobs: Arc::new(jobs) })
    }
}

#[async_trait]
impl Backend for PostgresBackend {
    fn executions(&self) -> Arc<dyn ExecutionStore> {
        Arc::clone(&self.executions) as Arc<dyn ExecutionStore>
    }

    fn jobs(&self) -> Arc<dyn JobStore> {
        Arc::clone(&self.jobs) as Arc<dyn JobStore>
    }

    async fn reopen(&mut self) -> bool {
        self.executions.close().await.unwrap();
        self.jobs.close().await.unwrap();
        let (executions, jobs) = support::open(&self.database, Arc::clone(&self.clock)).await;
        self.executions = Arc::new(executions);
        self.jobs = Arc::new(jobs);
        true
    }
}

impl Drop for PostgresBackend {
    fn drop(&mut self) {
        support::drop_database_now(&self.database);
    }
}

brine_conformance::conformance_tests!(Postgres);
