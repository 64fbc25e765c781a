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

/// A `Sync` commit waits for its fsync without blocking the runtime's other work: on a
/// worker of a multi-threaded runtime the worker hands its tasks over and syncs itself,
/// elsewhere a blocking thread syncs. Every way of driving a future must work: a worker
/// task, `block_on` of either runtime flavour, a `LocalSet`, and `Handle::block_on` from
/// a blocking thread.
#[test]
fn sync_commits_complete_in_every_runtime_context() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let create = |store: &Arc<RocksExecutionStore>, id: &str| {
        let store = Arc::clone(store);
        let id = id.to_owned();
        async move { store.create_execution(exec(id), vec![]).await.expect("create") }
    };
    let multi = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    multi.block_on(create(&store, "block-on-multi"));
    multi.block_on(async {
        tokio::spawn(create(&store, "worker-task")).await.expect("task");
        tokio::task::LocalSet::new().run_until(create(&store, "local-set")).await;
        let handle = tokio::runtime::Handle::current();
        let (store2, fut) = (Arc::clone(&store), create(&store, "blocking-thread"));
        tokio::task::spawn_blocking(move || {
            handle.block_on(fut);
            drop(store2);
        })
        .await
        .expect("blocking thread");
    });
    let single = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    single.block_on(create(&store, "current-thread"));
    single.block_on(tokio::task::LocalSet::new().run_until(create(&store, "current-thread-local-set")));
    let count = single.block_on(store.get_execution_count(ExecutionState::Created)).expect("count");
    assert_eq!(count, 6);
    single.block_on(store.close()).expect("close");
}
