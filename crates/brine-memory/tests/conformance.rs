//! The conformance suite, run against the in-memory backend.

use std::sync::Arc;

use brine_conformance::{Backend, Factory};
use brine_memory::{MemExecutionStore, MemJobStore};
use brine_store::{async_trait, Clock, ExecutionStore, JobStore};

struct Memory;

struct MemoryBackend {
    executions: Arc<MemExecutionStore>,
    jobs: Arc<MemJobStore>,
}

#[async_trait]
impl Factory for Memory {
    async fn open(&self, clock: Arc<dyn Clock>) -> Box<dyn Backend> {
        Box::new(MemoryBackend {
            executions: Arc::new(MemExecutionStore::with_clock(Arc::clone(&clock))),
            jobs: Arc::new(MemJobStore::with_clock(clock)),
        })
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    fn executions(&self) -> Arc<dyn ExecutionStore> {
        Arc::clone(&self.executions) as Arc<dyn ExecutionStore>
    }

    fn jobs(&self) -> Arc<dyn JobStore> {
        Arc::clone(&self.jobs) as Arc<dyn JobStore>
    }

    async fn reopen(&mut self) -> bool {
        false
    }
}

brine_conformance::conformance_tests!(Memory);
