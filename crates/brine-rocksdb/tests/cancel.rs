//! Cancel safety: a store operation's future may be dropped at any `.await` (a timeout,
//! a `select!`, an aborted task, a server dropping a request whose client went away)
//! and the store stays usable: later operations complete, nothing waits forever.

use std::sync::Arc;
use std::time::Duration;

use brine_rocksdb::{Durability, OpenOptions, RocksExecutionStore};
use brine_store::model::{Execution, ExecutionId, ExecutionState, Job, JobId};
use brine_store::{ExecutionStore, UpdateExecutionRequest};

fn exec(id: String) -> Execution {
    Execution::new(ExecutionId::new(id).expect("id"), &Job::new(JobId::new("job").expect("id"), "job"))
}

fn open(dir: &std::path::Path) -> Arc<RocksExecutionStore> {
    let options = OpenOptions { durability: Durability::Sync, ..OpenOptions::default() };
    Arc::new(RocksExecutionStore::open(dir.join("s.db"), &options).expect("open"))
}

/// Every operation must finish well within this once nothing else is running.
const PATIENCE: Duration = Duration::from_secs(10);

async fn must_finish<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(PATIENCE, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {PATIENCE:?}: the store is stalled"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_commits_cut_short_by_timeouts_do_not_stall_later_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    // Timeouts short enough to fire while the commit waits for its fsync.
    for i in 0..400u64 {
        let micros = 20 + (i * 37) % 280;
        let _ =
            tokio::time::timeout(Duration::from_micros(micros), store.create_execution(exec(format!("t-{i}")), vec![]))
                .await;
    }
    for i in 0..20 {
        must_finish("a create after cancelled creates", store.create_execution(exec(format!("after-{i}")), vec![]))
            .await
            .expect("create");
    }
    must_finish("close", store.close()).await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_writer_tasks_do_not_stall_later_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    for round in 0..30 {
        let mut tasks = Vec::new();
        for w in 0..8 {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                for i in 0..5 {
                    let id = format!("r{round}-w{w}-{i}");
                    let e = store.create_execution(exec(id.clone()), vec![]).await?;
                    let request = UpdateExecutionRequest::to_state(e.id.clone(), ExecutionState::BidAccepted, "bid")
                        .expect_states([ExecutionState::Created]);
                    store.update_execution_state(request).await?;
                }
                Ok::<_, brine_store::StoreError>(())
            }));
        }
        // Let them get going, then abort half of them wherever they are.
        tokio::time::sleep(Duration::from_micros(100 + round * 20)).await;
        for task in tasks.iter().step_by(2) {
            task.abort();
        }
        for task in tasks {
            if let Ok(result) = must_finish("a writer task", task).await {
                result.expect("a writer that was not aborted succeeds");
            }
        }
    }
    for i in 0..20 {
        must_finish("a create after aborted writers", store.create_execution(exec(format!("after-{i}")), vec![]))
            .await
            .expect("create");
    }
    must_finish("close", store.close()).await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_cut_short_still_closes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    for i in 0..50 {
        store.create_execution(exec(format!("e-{i}")), vec![]).await.expect("create");
    }
    // The first close is dropped at once; the store must still end up closed, and a
    // second close waits for the first to finish rather than returning early.
    let _ = tokio::time::timeout(Duration::from_micros(1), store.close()).await;
    must_finish("a second close", store.close()).await.expect("close");
    drop(store);
    // The lock is released: the store opens again, and the close was clean.
    let again = open(dir.path());
    assert!(!again.unclean_shutdown(), "a completed close leaves the store marked clean");
    assert_eq!(again.get_execution_count(ExecutionState::Created).await.expect("count"), 50);
    again.close().await.expect("close");
}
