//! What the `brine` command tests share: the command, stores to run it on, and readers
//! of its output.

#![allow(dead_code)] // each test binary uses part of it

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use assert_cmd::Command;
use brine_rocksdb::{OpenOptions, RocksExecutionStore, RocksJobStore};
use brine_store::model::JobState;
use brine_store::model::{ComputeState, Event, Execution, ExecutionId, ExecutionState, Job, JobId, JobType, Timestamp};
use brine_store::{ExecutionStore, Fault, JobStore, ManualClock, UpdateExecutionRequest, UpdateJobStateRequest};
use serde_json::Value;

/// The `brine` binary, with logging off and no store configuration from the caller's
/// environment.
pub fn brine() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_brine"));
    cmd.env_remove("BRINE_LOG");
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("BRINE_") || name.starts_with("BACALHAU_") {
            cmd.env_remove(name.as_ref());
        }
    }
    cmd
}

pub fn id(s: &str) -> ExecutionId {
    ExecutionId::new(s).unwrap()
}

pub fn execution(n: usize, state: ExecutionState) -> Execution {
    let mut job = Job::new(JobId::new(format!("job-{}", n / 2)).unwrap(), "a job");
    job.job_type = if n.is_multiple_of(3) { JobType::Service } else { JobType::Batch };
    let mut e = Execution::new(id(&format!("e-{n}")), &job);
    e.compute_state = ComputeState::new(state, "stored");
    e
}

fn options() -> OpenOptions {
    OpenOptions { clock: Arc::new(ManualClock::default()), ..OpenOptions::default() }
}

pub fn open(path: &Path) -> RocksExecutionStore {
    RocksExecutionStore::open(path, &options()).unwrap()
}

/// A compute store with executions e-1..=e-6 in several states, history, a checkpoint.
pub async fn store(dir: &Path) -> PathBuf {
    let path = dir.join("node-compute.db");
    let s = open(&path);
    let states = [
        ExecutionState::Running,
        ExecutionState::Completed,
        ExecutionState::Running,
        ExecutionState::Failed,
        ExecutionState::BidAccepted,
        ExecutionState::Completed,
    ];
    for (i, state) in states.into_iter().enumerate() {
        let events = vec![Event::new("scheduling", "bid submitted", Timestamp::from_secs(1))];
        let e = s.create_execution(execution(i + 1, ExecutionState::Created), events).await.unwrap();
        s.update_execution_state(UpdateExecutionRequest::to_state(e.id, state, "stored")).await.unwrap();
    }
    s.checkpoint("metrics", 4).await.unwrap();
    s.close().await.unwrap();
    path
}

/// The compute store of [`store`] with `fault` written into it.
pub async fn with_fault(dir: &Path, fault: Fault) -> PathBuf {
    let path = store(dir).await;
    let s = open(&path);
    s.inject(fault).await.unwrap();
    s.close().await.unwrap();
    path
}

/// A requester store whose `n` jobs ended on 2026-01-01 (months ago), plus one running.
pub async fn requester_store(dir: &Path, n: usize) -> PathBuf {
    let path = dir.join("node-requester.db");
    let s = RocksJobStore::open(&path, &options()).unwrap();
    for i in 0..=n {
        let id = JobId::new(format!("job-{i:03}")).unwrap();
        s.create_job(Job::new(id.clone(), format!("name-{i}"))).await.unwrap();
        if i < n {
            s.update_job_state(UpdateJobStateRequest::new(id, JobState::Completed, "done")).await.unwrap();
        }
    }
    s.close().await.unwrap();
    path
}

/// Runs a command that must succeed; returns its stdout.
pub fn stdout(cmd: &mut Command) -> String {
    let out = cmd.assert().success().get_output().stdout.clone();
    String::from_utf8(out).unwrap()
}

/// Runs a command that must succeed and print JSON.
pub fn json(cmd: &mut Command) -> Value {
    serde_json::from_str(&stdout(cmd)).unwrap()
}

/// Runs a command that must fail with status 1 and one line on stderr; returns it.
pub fn error_line(cmd: &mut Command) -> String {
    let out = cmd.assert().code(1).get_output().clone();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "one line expected: {err:?}");
    assert!(out.stdout.is_empty());
    err.trim_end().to_owned()
}

/// Every key and value of every column family of the store at `path`, read without
/// taking its lock: equal before and after a command means the command changed nothing.
pub fn contents(path: &Path) -> BTreeMap<(String, Vec<u8>), Vec<u8>> {
    let opts = brine_rocksdb::db_options();
    let cfs = rocksdb::DB::list_cf(&opts, path).unwrap();
    let db = rocksdb::DB::open_cf_for_read_only(&opts, path, &cfs, false).unwrap();
    let mut all = BTreeMap::new();
    for name in &cfs {
        let cf = db.cf_handle(name).unwrap();
        for item in db.iterator_cf(cf, rocksdb::IteratorMode::Start) {
            let (k, v) = item.unwrap();
            all.insert((name.clone(), k.to_vec()), v.to_vec());
        }
    }
    all
}
