//! Criterion benches of the execution store on RocksDB: the point operations
//! (`Buffered`), each beside the raw RocksDB baseline writing the same bytes, and `Sync`
//! creates with 1, 4, 16 and 64 concurrent writers sharing fsyncs (group commit).
//!
//! `cargo bench -p brine-bench --bench ops`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use brine_bench::{sample_execution, RawStore};
use brine_rocksdb::{Durability, OpenOptions, RocksExecutionStore};
use brine_store::model::ExecutionState;
use brine_store::{ExecutionStore, UpdateExecutionRequest};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const PRELOAD: u64 = 10_000;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let options = OpenOptions { durability: Durability::Buffered, ..OpenOptions::default() };
    let brine = RocksExecutionStore::open(dir.path().join("brine.db"), &options).expect("open");
    let raw = RawStore::open(&dir.path().join("raw.db"), false);
    for i in 0..PRELOAD {
        rt.block_on(brine.create_execution(sample_execution(i, 10), vec![])).expect("preload");
        raw.create(sample_execution(i, 10));
    }
    let next = AtomicU64::new(PRELOAD);
    let mut g = c.benchmark_group("create_execution");
    g.bench_function("brine", |b| {
        b.iter(|| {
            let i = next.fetch_add(1, Ordering::Relaxed);
            rt.block_on(brine.create_execution(sample_execution(i, 10), vec![])).expect("create")
        })
    });
    g.bench_function("raw", |b| b.iter(|| raw.create(sample_execution(next.fetch_add(1, Ordering::Relaxed), 10))));
    g.finish();

    let target = sample_execution(7, 10).id;
    let mut g = c.benchmark_group("update_execution_state");
    g.bench_function("brine", |b| {
        b.iter(|| {
            let req = UpdateExecutionRequest::to_state(target.clone(), ExecutionState::Running, "again");
            rt.block_on(brine.update_execution_state(req)).expect("update")
        })
    });
    g.bench_function("raw", |b| b.iter(|| raw.update(&target, ExecutionState::Running)));
    g.finish();

    let mut g = c.benchmark_group("get_execution");
    g.bench_function("brine", |b| b.iter(|| rt.block_on(brine.get_execution(&target)).expect("get")));
    g.bench_function("raw", |b| b.iter(|| raw.get(&target)));
    g.finish();

    let job = sample_execution(42, 10).job_id;
    let mut g = c.benchmark_group("get_executions_by_job");
    g.bench_function("brine", |b| b.iter(|| rt.block_on(brine.get_executions(&job)).expect("by job")));
    g.bench_function("raw", |b| b.iter(|| raw.get_by_job(&job)));
    g.finish();
}

/// Creates per iteration by each writer of the `Sync` group.
const CREATES_PER_WRITER: u64 = 4;

fn sync_writers(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let options = OpenOptions { durability: Durability::Sync, ..OpenOptions::default() };
    let store = Arc::new(RocksExecutionStore::open(dir.path().join("sync.db"), &options).expect("open"));
    let next = Arc::new(AtomicU64::new(0));
    let mut g = c.benchmark_group("sync_create_writers");
    g.sample_size(10);
    for writers in [1u64, 4, 16, 64] {
        g.throughput(Throughput::Elements(writers * CREATES_PER_WRITER));
        g.bench_function(writers.to_string(), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let mut tasks = Vec::new();
                    for _ in 0..writers {
                        let (store, next) = (Arc::clone(&store), Arc::clone(&next));
                        tasks.push(tokio::spawn(async move {
                            for _ in 0..CREATES_PER_WRITER {
                                let i = next.fetch_add(1, Ordering::Relaxed);
                                store.create_execution(sample_execution(i, 10), vec![]).await.expect("create");
                            }
                        }));
                    }
                    for t in tasks {
                        t.await.expect("writer");
                    }
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench, sync_writers);
criterion_main!(benches);
