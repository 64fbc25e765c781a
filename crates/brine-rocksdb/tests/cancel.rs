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

/// A commit of more than half a MiB builds and writes its batch on a blocking thread.
/// A caller that drops it there (polled once, up to its first wait, then dropped)
/// leaves each transaction whole or absent, in the open store and after a reopen, and
/// its own next write waits for the dropped one instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_commits_cut_short_are_whole_or_absent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    const PER_TX: usize = 300;
    const TXS: u64 = 24;
    let note = "x".repeat(2000);
    let job_of = |t: u64| JobId::new(format!("job-{t:03}")).expect("id");
    let mut cut = 0;
    for t in 0..TXS {
        let job = Job::new(job_of(t), "job");
        let note = note.clone();
        let store = Arc::clone(&store);
        let write = async move {
            let mut tx = store.begin_tx().await?;
            for i in 0..PER_TX {
                let e = Execution::new(ExecutionId::new(format!("e-{t:03}-{i:04}")).expect("id"), &job);
                let event = brine_store::model::Event::new("test", note.as_str(), brine_store::model::Timestamp::now());
                tx.create_execution(e, vec![event]).await?;
            }
            tx.commit().await
        };
        if t % 3 == 0 {
            must_finish("a whole transaction", write).await.expect("commit");
        } else {
            tokio::select! {
                biased;
                done = write => done.expect("a transaction that did not wait commits"),
                () = std::future::ready(()) => cut += 1,
            }
        }
    }
    assert!(cut > 0, "some transactions were dropped while they waited");
    // The task that dropped them writes next: it waits for the lock, then goes on.
    must_finish("a create after cut commits", store.create_execution(exec("after".into()), vec![]))
        .await
        .expect("create");
    let whole_or_absent = |store: Arc<RocksExecutionStore>| async move {
        let mut whole = 0;
        for t in 0..TXS {
            let n = store.get_executions(&job_of(t)).await.expect("read").len();
            assert!(n == 0 || n == PER_TX, "transaction {t} is partly there: {n} of {PER_TX}");
            whole += usize::from(n == PER_TX);
        }
        whole
    };
    let whole = must_finish("reads", whole_or_absent(Arc::clone(&store))).await;
    assert!(whole >= 8, "the transactions not cut are there ({whole} of {TXS} whole)");
    assert_eq!(store.get_execution_count(ExecutionState::Created).await.expect("count"), (whole * PER_TX + 1) as u64);
    must_finish("close", store.close()).await.expect("close");
    drop(store);
    let again = open(dir.path());
    assert_eq!(whole_or_absent(Arc::clone(&again)).await, whole, "the same transactions after a reopen");
    again.close().await.expect("close");
}

/// A `Sync` commit waits for its fsync without blocking the runtime's other work: a
/// blocking thread syncs, whichever thread drives the commit. Every way of driving a
/// future must work: a worker task, `block_on` of either runtime flavour, a `LocalSet`,
/// and `Handle::block_on` from a blocking thread.
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
