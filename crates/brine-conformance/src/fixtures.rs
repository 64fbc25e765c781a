//! Shared helpers: a test environment on a manual clock, and record builders.

use std::sync::Arc;
use std::time::Duration;

use brine_store::model::{Event, Execution, ExecutionId, ExecutionState, Job, JobId, Timestamp};
use brine_store::{Clock, EventFilter, ExecutionStore, JobStore, ManualClock, Position, UpdateExecutionRequest};

use crate::{Backend, Factory};

/// One test's stores and the clock they read.
pub struct Env {
    /// The stores.
    pub backend: Box<dyn Backend>,
    /// Their clock: advance it to age records.
    pub clock: Arc<ManualClock>,
}

impl Env {
    /// Fresh stores from `factory` on a new manual clock.
    pub async fn new(factory: &dyn Factory) -> Env {
        let clock = Arc::new(ManualClock::default());
        let backend = factory.open(Arc::clone(&clock) as Arc<dyn Clock>).await;
        Env { backend, clock }
    }

    /// The execution store.
    pub fn exec(&self) -> Arc<dyn ExecutionStore> {
        self.backend.executions()
    }

    /// The job store.
    pub fn jobs(&self) -> Arc<dyn JobStore> {
        self.backend.jobs()
    }

    /// Moves the clock forward.
    pub fn advance(&self, d: Duration) {
        self.clock.advance(d);
    }

    /// The clock's time.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Asserts that both stores' consistency checks find nothing.
    pub async fn assert_consistent(&self) {
        let exec = self.exec().check().await.expect("check the execution store");
        assert!(exec.is_ok(), "execution store: {:?}", exec.problems);
        let jobs = self.jobs().check().await.expect("check the job store");
        assert!(jobs.is_ok(), "job store: {:?}", jobs.problems);
        assert!(jobs.keys_checked > 0 || exec.keys_checked > 0, "the checks read something");
    }
}

pub(crate) fn eid(s: &str) -> ExecutionId {
    ExecutionId::new(s).expect("valid test id")
}

pub(crate) fn jid(s: &str) -> JobId {
    JobId::new(s).expect("valid test id")
}

pub(crate) fn job(id: &str) -> Job {
    Job::new(jid(id), format!("name-{id}"))
}

pub(crate) fn execution(id: &str, job_id: &str) -> Execution {
    Execution::new(eid(id), &job(job_id))
}

pub(crate) fn event(msg: &str) -> Event {
    Event::new("Test", msg, Timestamp::from_secs(1))
}

pub(crate) fn to_state(id: &str, state: ExecutionState) -> UpdateExecutionRequest {
    UpdateExecutionRequest::to_state(eid(id), state, format!("to {state}"))
}

/// Creates executions `ids` of `job_id` in state Created.
pub(crate) async fn create_all(store: &dyn ExecutionStore, job_id: &str, ids: &[&str]) {
    for id in ids {
        store.create_execution(execution(id, job_id), vec![]).await.expect("create");
    }
}

/// Every execution state count, in code order.
pub(crate) async fn counts(store: &dyn ExecutionStore) -> Vec<u64> {
    let mut out = Vec::new();
    for st in ExecutionState::ALL {
        out.push(store.get_execution_count(st).await.expect("count"));
    }
    out
}

/// The whole event log, read in pages of 7.
pub(crate) async fn whole_log(store: &dyn ExecutionStore) -> Vec<brine_store::model::LogEntry> {
    read_log(&*store.event_log()).await
}

pub(crate) async fn read_log(log: &dyn brine_store::EventLog) -> Vec<brine_store::model::LogEntry> {
    let mut out = Vec::new();
    let mut pos = Position::TrimHorizon;
    loop {
        let batch = log.get_events(pos, 7, &EventFilter::all()).await.expect("read log");
        if batch.entries.is_empty() {
            return out;
        }
        pos = batch.next;
        out.extend(batch.entries);
    }
}

pub(crate) fn ids(execs: &[Execution]) -> Vec<&str> {
    execs.iter().map(|e| e.id.as_str()).collect()
}

/// Asserts that `result` failed with a variant matching `pat`.
#[macro_export]
#[doc(hidden)]
macro_rules! assert_err {
    ($result:expr, $pat:pat) => {
        match $result {
            Err(e @ $pat) => e,
            other => panic!("expected {}, got {:?}", stringify!($pat), other.map(|_| "Ok")),
        }
    };
}
