//! What the recovery tests share: every backend behind one type (PostgreSQL on the
//! server `BRINE_TEST_DATABASE_URL` names), and executions made in a chosen state at a
//! chosen age.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use brine_memory::MemExecutionStore;
use brine_rocksdb::{OpenOptions, RocksExecutionStore};
use brine_store::model::{ComputeState, Execution, ExecutionId, ExecutionState, Job, JobId, JobType};
use brine_store::{Clock, ExecutionStore, Fault, ManualClock, Result, UpdateExecutionRequest};

/// The backends every test runs on.
pub const BACKENDS: [Backend; 3] = [Backend::Memory, Backend::Rocks, Backend::Postgres];

/// The backends that can write a fault straight into their tables (PostgreSQL keeps its
/// indexes itself, so the faults of the others cannot be written there).
pub const FAULT_BACKENDS: [Backend; 2] = [Backend::Memory, Backend::Rocks];

/// A backend to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `brine-memory`.
    Memory,
    /// `brine-rocksdb`, in a temp dir.
    Rocks,
    /// `brine-postgres`, in a fresh database.
    Postgres,
}

/// An open store of either backend.
pub enum Store {
    /// In memory.
    Memory(MemExecutionStore),
    /// On RocksDB, with its path.
    Rocks(RocksExecutionStore, PathBuf),
    /// On PostgreSQL, with its database.
    Postgres(brine_postgres::PgExecutionStore, String),
}

impl Store {
    /// Opens a fresh store of `backend` under `dir` on `clock`.
    pub async fn open(backend: Backend, dir: &Path, clock: Arc<ManualClock>) -> Store {
        match backend {
            Backend::Memory => Store::Memory(MemExecutionStore::with_clock(clock)),
            Backend::Rocks => {
                let path = dir.join("node-compute.db");
                Store::Rocks(rocks_at(&path, clock), path)
            }
            Backend::Postgres => {
                let database = brine_postgres::testing::fresh_database().await;
                let url = brine_postgres::testing::url_for(&database);
                let node = brine_store::model::NodeId::new("node").unwrap();
                let options = brine_postgres::PgOptions { pool_size: 4, clock, ..Default::default() };
                let store = brine_postgres::open_execution_store(&url, &node, options).await.expect("open the store");
                Store::Postgres(store, database)
            }
        }
    }

    /// The store as the trait recovery takes.
    pub fn dyn_store(&self) -> &dyn ExecutionStore {
        match self {
            Store::Memory(s) => s,
            Store::Rocks(s, _) => s,
            Store::Postgres(s, _) => s,
        }
    }

    /// Writes a fault.
    pub async fn inject(&self, fault: Fault) -> Result<()> {
        match self {
            Store::Memory(s) => s.inject(fault).await,
            Store::Rocks(s, _) => s.inject(fault).await,
            Store::Postgres(..) => Err(brine_store::StoreError::Unsupported { what: format!("injecting {fault:?}") }),
        }
    }

    /// The problems the store's consistency check finds.
    pub async fn check_problems(&self) -> Vec<String> {
        let report = self.dyn_store().check().await.expect("check");
        report.problems.iter().map(|p| p.to_string()).collect()
    }
}

/// Opens the RocksDB store at `path`.
pub fn rocks_at(path: &Path, clock: Arc<dyn Clock>) -> RocksExecutionStore {
    RocksExecutionStore::open(path, &OpenOptions { clock, ..OpenOptions::default() }).expect("open the store")
}

/// An execution `id` of a `job_type` job (`j-<id>`) in `state`.
pub fn execution(id: &str, job_type: JobType, state: ExecutionState) -> Execution {
    let mut job = Job::new(JobId::new(format!("j-{id}")).unwrap(), format!("job {id}"));
    job.job_type = job_type;
    let mut e = Execution::new(ExecutionId::new(id).unwrap(), &job);
    e.compute_state = ComputeState::new(state, "stored before the restart");
    e
}

/// Creates executions `(id, job type, state, age)` so that each was last modified `age`
/// before the clock's final time, and leaves the clock there.
pub async fn populate(
    store: &dyn ExecutionStore,
    clock: &ManualClock,
    rows: &[(String, JobType, ExecutionState, Duration)],
) {
    let mut rows: Vec<_> = rows.to_vec();
    rows.sort_by_key(|r| std::cmp::Reverse(r.3));
    let oldest = rows.first().map_or(Duration::ZERO, |r| r.3);
    let mut elapsed = Duration::ZERO;
    for (id, job_type, state, age) in rows {
        let target = oldest - age;
        clock.advance(target - elapsed);
        elapsed = target;
        create_in_state(store, execution(&id, job_type, state)).await;
    }
    // Now is `oldest` after the first create, so each row is its age old (plus the
    // nanoseconds the clock ticks per call).
    clock.advance(oldest - elapsed);
}

/// Stores `e` in its state: created in `Created` (the only state a create takes), then
/// moved to its state with the same message in one transaction.
pub async fn create_in_state(store: &dyn ExecutionStore, e: Execution) {
    let state = e.compute_state.clone();
    let mut created = e;
    created.compute_state = ComputeState::new(ExecutionState::Created, state.message.clone());
    let mut tx = store.begin_tx().await.expect("begin");
    let id = created.id.clone();
    tx.create_execution(created, vec![]).await.expect("create");
    if state.state != ExecutionState::Created {
        let request = UpdateExecutionRequest::to_state(id, state.state, state.message);
        tx.update_execution_state(request).await.expect("move to its state");
    }
    tx.commit().await.expect("commit");
}

/// Every execution's (id, state, message), in id order, read through the state index.
pub async fn end_state(store: &dyn ExecutionStore) -> Vec<(String, ExecutionState, String)> {
    let mut out = Vec::new();
    for state in ExecutionState::ALL {
        let mut after: Option<ExecutionId> = None;
        loop {
            let batch = store.get_executions_in_state(state, after.as_ref(), 500).await.expect("read a state");
            let Some(last) = batch.last() else { break };
            after = Some(last.id.clone());
            out.extend(batch.into_iter().map(|e| (e.id.to_string(), e.state(), e.compute_state.message)));
        }
    }
    out.sort();
    out
}
