//! What the purge tests share: stores of every backend (PostgreSQL on the server
//! `BRINE_TEST_DATABASE_URL` names) filled with old and young, terminal and running
//! jobs.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use brine_memory::{MemExecutionStore, MemJobStore};
use brine_rocksdb::{Durability, OpenOptions, RocksExecutionStore, RocksJobStore};
use brine_store::model::{
    Evaluation, EvaluationId, Event, Execution, ExecutionId, ExecutionState, Job, JobId, JobState, Timestamp,
};
use brine_store::{ExecutionStore, JobStore, ManualClock, UpdateExecutionRequest, UpdateJobStateRequest};

/// Days every "old" record is older than the purge's minimum age.
pub const OLD: Duration = Duration::from_secs(10 * 86_400);

/// A job id.
pub fn jid(s: &str) -> JobId {
    JobId::new(s).unwrap()
}

/// The options of a PostgreSQL store in a fresh test database, and its URL.
async fn postgres(clock: Arc<ManualClock>) -> (String, brine_postgres::PgOptions) {
    let database = brine_postgres::testing::fresh_database().await;
    (
        brine_postgres::testing::url_for(&database),
        brine_postgres::PgOptions { pool_size: 4, clock, ..Default::default() },
    )
}

/// A requester store of `backend` ("memory", "rocksdb" or "postgres") under `dir` (a
/// fresh database for "postgres").
pub async fn job_store(backend: &str, dir: &Path, clock: Arc<ManualClock>) -> Arc<dyn JobStore> {
    match backend {
        "memory" => Arc::new(MemJobStore::with_clock(clock)),
        "postgres" => {
            let (url, options) = postgres(clock).await;
            Arc::new(brine_postgres::open_job_store(&url, options).await.unwrap())
        }
        _ => Arc::new(rocks_jobs(&dir.join("node-requester.db"), clock, Durability::Buffered)),
    }
}

/// Opens the RocksDB job store at `path`.
pub fn rocks_jobs(path: &Path, clock: Arc<ManualClock>, durability: Durability) -> RocksJobStore {
    RocksJobStore::open(path, &OpenOptions { clock, durability, ..OpenOptions::default() }).unwrap()
}

/// A compute store of `backend` under `dir` (a fresh database for "postgres").
pub async fn exec_store(backend: &str, dir: &Path, clock: Arc<ManualClock>) -> Arc<dyn ExecutionStore> {
    match backend {
        "memory" => Arc::new(MemExecutionStore::with_clock(clock)),
        "postgres" => {
            let (url, options) = postgres(clock).await;
            let node = brine_store::model::NodeId::new("node").unwrap();
            Arc::new(brine_postgres::open_execution_store(&url, &node, options).await.unwrap())
        }
        _ => Arc::new(
            RocksExecutionStore::open(
                dir.join("node-compute.db"),
                &OpenOptions { clock, durability: Durability::Buffered, ..OpenOptions::default() },
            )
            .unwrap(),
        ),
    }
}

/// Creates job `id` with a second version, an evaluation, `executions` executions and a
/// history event, and ends it in `state` (left running when not terminal).
pub async fn add_job(store: &dyn JobStore, id: &str, executions: usize, state: JobState) {
    let job = store.create_job(Job::new(jid(id), format!("name-{id}"))).await.unwrap();
    store.update_job(job).await.unwrap();
    let eval = Evaluation::new(EvaluationId::new(format!("ev-{id}")).unwrap(), "default", jid(id));
    store.create_evaluation(eval).await.unwrap();
    for n in 0..executions {
        let job = store.get_job(&jid(id)).await.unwrap();
        let x = store
            .create_execution(Execution::new(ExecutionId::new(format!("x-{id}-{n}")).unwrap(), &job))
            .await
            .unwrap();
        let done = UpdateExecutionRequest::to_state(x.id, ExecutionState::Completed, "done");
        store.update_execution(done).await.unwrap();
    }
    store.add_job_event(&jid(id), vec![Event::new("test", "hello", Timestamp::from_secs(1))]).await.unwrap();
    if state != JobState::Pending {
        store.update_job_state(UpdateJobStateRequest::new(jid(id), state, "ended")).await.unwrap();
    }
}

/// `old` old terminal jobs (`old-0000`…, two executions each), 3 old running jobs and 4
/// young terminal jobs; the clock ends `OLD` after the old ones.
pub async fn fill(store: &dyn JobStore, clock: &ManualClock, old: usize) {
    let ends = [JobState::Completed, JobState::Failed, JobState::Stopped];
    for i in 0..old {
        add_job(store, &format!("old-{i:04}"), 2, ends[i % 3]).await;
    }
    for i in 0..3 {
        add_job(store, &format!("running-{i}"), 1, JobState::Pending).await;
    }
    clock.advance(OLD);
    for i in 0..4 {
        add_job(store, &format!("young-{i}"), 1, JobState::Completed).await;
    }
}

/// Every archived record in `dir`, by file (compressed or not; `.tmp` files excluded).
pub fn archived_ids(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
    files.sort();
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with(brine_purge::ARCHIVE_PREFIX) || name.ends_with(".tmp") {
            continue;
        }
        for record in brine_purge::archive::read_archive(&path).unwrap() {
            out.push(brine_purge::archive::record_id(&record.unwrap()).unwrap().to_owned());
        }
    }
    out
}

/// The index's lines as (id, archive stamp).
pub fn index_lines(dir: &Path) -> Vec<(String, brine_purge::archive::Stamp)> {
    let text = std::fs::read_to_string(dir.join(brine_purge::INDEX_FILE)).unwrap_or_default();
    text.lines()
        .map(|l| {
            let (id, t) = brine_purge::archive::parse_index_line(l).unwrap_or_else(|| panic!("bad index line {l:?}"));
            (id.to_owned(), t)
        })
        .collect()
}
