//! The space quota (`OpenOptions::quota_bytes`): past it a store refuses writes that
//! add data with `NoSpace` and records a NOSPACE alarm, while reads, deletes, purges,
//! checkpoints and retention go on; the store stays consistent, the alarm survives a
//! restart, and once space is freed and the alarm disarmed, writes are taken again.

use std::path::Path;

use brine_rocksdb::{Durability, OpenOptions, RocksExecutionStore, RocksJobStore};
use brine_store::model::{Event, Execution, ExecutionId, ExecutionState, Job, JobId, JobState, Timestamp};
use brine_store::{ExecutionStore, JobStore, StoreError, UpdateExecutionRequest, UpdateJobStateRequest};

fn dir_size(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .unwrap()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

fn options(quota: Option<u64>) -> OpenOptions {
    OpenOptions { durability: Durability::Buffered, quota_bytes: quota, ..OpenOptions::default() }
}

/// A job whose spec is `kib` KiB of text that compresses well: large in the
/// write-ahead log, small once flushed into tables.
fn big_job(i: usize, kib: usize) -> Job {
    let mut job = Job::new(JobId::new(format!("job-{i:05}")).unwrap(), format!("name-{i}"));
    job.config = "x".repeat(kib << 10);
    job
}

fn is_no_space<T: std::fmt::Debug>(result: brine_store::Result<T>) -> StoreError {
    match result {
        Err(e @ StoreError::NoSpace { .. }) => e,
        other => panic!("expected NoSpace, got {other:?}"),
    }
}

#[tokio::test]
async fn past_its_quota_a_job_store_refuses_creates_takes_purges_and_recovers_once_disarmed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("requester.db");
    RocksJobStore::open(&path, &options(None)).unwrap().close().await.unwrap();
    let quota = dir_size(&path) + (4 << 20);
    let store = RocksJobStore::open(&path, &options(Some(quota))).unwrap();

    // Fill it: every other job finishes, so a purge has something to take.
    let mut created = 0;
    let refused = loop {
        match store.create_job(big_job(created, 8)).await {
            Ok(_) => {
                if created % 2 == 0 {
                    let done = UpdateJobStateRequest::new(
                        JobId::new(format!("job-{created:05}")).unwrap(),
                        JobState::Completed,
                        "done",
                    );
                    if let Err(e) = store.update_job_state(done).await {
                        break e;
                    }
                }
                created += 1;
            }
            Err(e) => break e,
        }
        assert!(created < 10_000, "the quota stops the writes");
    };
    assert!(matches!(refused, StoreError::NoSpace { quota: q, .. } if q == quota), "{refused:?}");
    assert!(refused.is_no_space());
    assert!(refused.to_string().contains(&format!("past its quota of {quota}")), "{refused}");
    assert!(created > 10, "the store took writes up to its quota ({created})");
    let alarm = store.alarm().expect("the alarm is raised");
    assert_eq!(alarm.quota, quota);
    assert!(alarm.size > quota - (64 << 10), "{alarm:?}");

    // While the alarm is raised: anything that adds data is refused at once, even a
    // tiny write, and changes nothing; reads go on.
    let head = store.event_log().head().await.unwrap();
    is_no_space(store.create_job(Job::new(JobId::new("tiny").unwrap(), "tiny")).await);
    is_no_space(
        store
            .add_job_event(&JobId::new("job-00001").unwrap(), vec![Event::new("T", "m", Timestamp::from_secs(1))])
            .await,
    );
    is_no_space(store.event_log().append("note", "{}").await);
    assert_eq!(store.event_log().head().await.unwrap(), head, "a refused write logs nothing");
    assert!(store.get_job(&JobId::new("tiny").unwrap()).await.unwrap_err().is_not_found());
    assert_eq!(store.get_job(&JobId::new("job-00001").unwrap()).await.unwrap().config.len(), 8 << 10);

    // What frees space goes on: a purge of the finished jobs, a delete, a checkpoint
    // and retention.
    let mut batch = Vec::new();
    for i in (0..created).step_by(2) {
        let id = JobId::new(format!("job-{i:05}")).unwrap();
        if let Ok(bundle) = store.job_bundle(&id).await {
            if bundle.job.state().is_terminal() {
                batch.push((id, bundle.stamp()));
            }
        }
    }
    let purged = store.purge_jobs(&batch, "job_archive_1.jsonl").await.unwrap();
    assert!(purged > 0);
    store.delete_job(&JobId::new("job-00001").unwrap()).await.unwrap();
    let log = store.event_log();
    log.checkpoint("sync", log.head().await.unwrap()).await.unwrap();
    log.trim(log.head().await.unwrap(), Timestamp::MAX, 100).await.unwrap();
    let report = store.check().await.unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);

    // The alarm is recorded: a restart keeps it, with the quota or without one.
    store.close().await.unwrap();
    let store = RocksJobStore::open(&path, &options(None)).unwrap();
    assert_eq!(store.alarm(), Some(alarm));
    is_no_space(store.create_job(Job::new(JobId::new("tiny").unwrap(), "tiny")).await);
    store.close().await.unwrap();

    // Once the freed space is gone from disk (the restart flushed the log the deletes
    // were in) and the alarm is disarmed, writes are taken again.
    let store = RocksJobStore::open(&path, &options(Some(quota))).unwrap();
    assert!(dir_size(&path) < quota, "the purge freed space: {} of {quota}", dir_size(&path));
    assert_eq!(store.disarm_alarm().await.unwrap(), Some(alarm));
    assert_eq!(store.alarm(), None);
    store.create_job(Job::new(JobId::new("tiny").unwrap(), "tiny")).await.unwrap();
    assert_eq!(store.disarm_alarm().await.unwrap(), None, "disarming twice is harmless");
    assert!(store.check().await.unwrap().is_ok());
    store.close().await.unwrap();
}

#[tokio::test]
async fn past_its_quota_a_compute_store_takes_deletes_in_transactions_but_not_creates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("compute.db");
    RocksExecutionStore::open(&path, &options(None)).unwrap().close().await.unwrap();
    let quota = dir_size(&path) + (1 << 20);
    let store = RocksExecutionStore::open(&path, &options(Some(quota))).unwrap();
    let big = |i: usize| {
        let mut job = Job::new(JobId::new(format!("job-{i}")).unwrap(), "j");
        job.config = "y".repeat(32 << 10);
        Execution::new(ExecutionId::new(format!("e-{i:05}")).unwrap(), &job)
    };
    let mut n = 0;
    while store.create_execution(big(n), vec![]).await.is_ok() {
        n += 1;
        assert!(n < 10_000, "the quota stops the writes");
    }
    assert!(store.alarm().is_some());
    is_no_space(
        store
            .update_execution_state(UpdateExecutionRequest::to_state(
                ExecutionId::new("e-00000").unwrap(),
                ExecutionState::Running,
                "go",
            ))
            .await,
    );
    // A transaction that only deletes commits; one that also creates does not.
    let mut tx = store.begin_tx().await.unwrap();
    tx.delete_execution(&ExecutionId::new("e-00000").unwrap()).await.unwrap();
    tx.delete_execution(&ExecutionId::new("e-00001").unwrap()).await.unwrap();
    tx.commit().await.unwrap();
    let mut tx = store.begin_tx().await.unwrap();
    tx.delete_execution(&ExecutionId::new("e-00002").unwrap()).await.unwrap();
    tx.create_execution(big(99_999), vec![]).await.unwrap();
    is_no_space(tx.commit().await);
    store.get_execution(&ExecutionId::new("e-00002").unwrap()).await.unwrap();
    store.delete_execution(&ExecutionId::new("e-00003").unwrap()).await.unwrap();
    assert_eq!(store.get_execution_count(ExecutionState::Created).await.unwrap(), n as u64 - 3);
    let report = store.check().await.unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    store.close().await.unwrap();
}
