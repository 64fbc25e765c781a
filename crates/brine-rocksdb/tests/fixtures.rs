//! Stores written by past format versions, kept in `tests/fixtures/v<N>/`: a small
//! requester store and a small compute store, each with `<kind>.json`, every key and
//! decoded value of every family as the version that wrote it read them.
//!
//! `generate_fixture` writes them with the code it is compiled with (run it at the
//! commit of that version: `BRINE_WRITE_FIXTURE=1 cargo test --workspace --test
//! fixtures -- --ignored generate_fixture`); the tests below open every committed
//! fixture with today's code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use brine_rocksdb::{Inspector, OpenOptions, RocksExecutionStore, RocksJobStore};
use brine_store::keys::printable;
use brine_store::model::{
    ComputeState, Evaluation, EvaluationId, Event, Execution, ExecutionId, ExecutionState, Job, JobId, JobState,
    JobType, NodeId, Timestamp,
};
use brine_store::{rules, ExecutionStore, JobStore, ManualClock, UpdateExecutionRequest, UpdateJobStateRequest};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Every key (printable) and decoded value of every family of the store at `path`.
fn dump(path: &Path) -> BTreeMap<String, BTreeMap<String, serde_json::Value>> {
    let ins = Inspector::open(path).expect("open for inspection");
    let mut out = BTreeMap::new();
    for cf in ins.families() {
        let mut keys = Vec::new();
        ins.keys(*cf, b"", |k| {
            keys.push(k.to_vec());
            true
        })
        .expect("keys");
        let mut family = BTreeMap::new();
        for k in keys {
            let value = ins.get_json(*cf, &k).expect("decode").expect("present");
            family.insert(printable(&k), value);
        }
        out.insert(cf.name().to_owned(), family);
    }
    out
}

fn job(n: usize) -> Job {
    let mut job = Job::new(JobId::new(format!("job-{n}")).unwrap(), format!("name-{n}"));
    job.namespace = if n.is_multiple_of(3) { "team-a".into() } else { "default".into() };
    job.job_type = if n.is_multiple_of(4) { JobType::Service } else { JobType::Batch };
    job.labels.insert("tier".into(), if n.is_multiple_of(2) { "gold" } else { "silver" }.into());
    job.labels.insert("max".into(), n.to_string());
    job
}

async fn write_requester(path: &Path, clock: &Arc<ManualClock>) {
    let options = OpenOptions { clock: clock.clone(), ..OpenOptions::default() };
    let s = RocksJobStore::open(path, &options).unwrap();
    let states = [
        JobState::Pending,
        JobState::Running,
        JobState::Completed,
        JobState::Failed,
        JobState::Stopped,
        JobState::Completed,
        JobState::Running,
    ];
    for (i, state) in states.into_iter().enumerate() {
        clock.advance(Duration::from_secs(60));
        let j = s.create_job(job(i + 1)).await.unwrap();
        if state != JobState::Pending {
            s.update_job_state(UpdateJobStateRequest::new(j.id.clone(), state, "stored")).await.unwrap();
        }
    }
    // A queue: one job queued, one grabbed.
    for n in [8, 9] {
        clock.advance(Duration::from_secs(60));
        s.enqueue("q1", job(n)).await.unwrap();
    }
    s.grab_next("q1").await.unwrap().expect("a queued job");
    // A second version, history events, an evaluation, requester-side executions.
    let mut j2 = s.get_job(&JobId::new("job-2").unwrap()).await.unwrap();
    j2.labels.insert("tier".into(), "platinum".into());
    s.update_job(j2).await.unwrap();
    s.add_job_event(&JobId::new("job-7").unwrap(), vec![Event::new("note", "kept", Timestamp::from_secs(5))])
        .await
        .unwrap();
    s.create_evaluation(Evaluation::new(EvaluationId::new("eval-1").unwrap(), "default", JobId::new("job-2").unwrap()))
        .await
        .unwrap();
    let mut e = Execution::new(ExecutionId::new("e-req-1").unwrap(), &job(2));
    e.node_id = Some(NodeId::new("node-b").unwrap());
    s.create_execution(e).await.unwrap();
    // A purged job: the retained table names its archive.
    let purged = s.get_job(&JobId::new("job-3").unwrap()).await.unwrap();
    s.purge_jobs(&[(purged.id.clone(), rules::purge_stamp(&purged))], "job_archive_100.jsonl").await.unwrap();
    // What a watcher leaves: a checkpoint below the head.
    let log = s.event_log();
    let head = log.head().await.unwrap();
    log.checkpoint("fixture-watcher", head - 2).await.unwrap();
    s.close().await.unwrap();
}

async fn write_compute(path: &Path, clock: &Arc<ManualClock>) {
    let options = OpenOptions { clock: clock.clone(), ..OpenOptions::default() };
    let s = RocksExecutionStore::open(path, &options).unwrap();
    let states = [
        ExecutionState::Running,
        ExecutionState::Completed,
        ExecutionState::BidAccepted,
        ExecutionState::Failed,
        ExecutionState::Created,
    ];
    for (i, state) in states.into_iter().enumerate() {
        clock.advance(Duration::from_secs(60));
        let mut e = Execution::new(ExecutionId::new(format!("e-{}", i + 1)).unwrap(), &job(i + 1));
        e.compute_state = ComputeState::new(ExecutionState::Created, "new");
        let events = vec![Event::new("scheduling", "bid submitted", Timestamp::from_secs(1))];
        let e = s.create_execution(e, events).await.unwrap();
        if state != ExecutionState::Created {
            s.update_execution_state(UpdateExecutionRequest::to_state(e.id, state, "stored")).await.unwrap();
        }
    }
    s.delete_execution(&ExecutionId::new("e-4").unwrap()).await.unwrap();
    s.checkpoint("fixture-watcher", 4).await.unwrap();
    s.close().await.unwrap();
}

/// Writes `tests/fixtures/v<SCHEMA_VERSION>/` with this build's code.
#[tokio::test]
#[ignore = "writes the fixture of the current format version; run once per version"]
async fn generate_fixture() {
    if std::env::var_os("BRINE_WRITE_FIXTURE").is_none() {
        panic!("set BRINE_WRITE_FIXTURE=1 to write tests/fixtures/v{}", brine_rocksdb::SCHEMA_VERSION);
    }
    let dir = fixtures_dir().join(format!("v{}", brine_rocksdb::SCHEMA_VERSION));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    let clock = Arc::new(ManualClock::default());
    for (kind, path) in [("requester", dir.join("requester.db")), ("compute", dir.join("compute.db"))] {
        if kind == "requester" {
            write_requester(&path, &clock).await;
        } else {
            write_compute(&path, &clock).await;
        }
        let text = serde_json::to_string_pretty(&dump(&path)).unwrap();
        std::fs::write(dir.join(format!("{kind}.json")), text + "\n").unwrap();
        // RocksDB's own logs and options files are not part of the format.
        for entry in std::fs::read_dir(&path).unwrap() {
            let p = entry.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with("LOG") || name.starts_with("OPTIONS") || name == "LOCK" {
                std::fs::remove_file(&p).unwrap();
            }
        }
    }
}
