//! The comparison harness: Brine's RocksDB backend beside raw RocksDB writing the same
//! bytes, and `Sync` group-commit scaling, measured in one run and printed as ratios.
//!
//! `cargo bench -p brine-bench --bench compare -- [N] [--json]` (or `cargo xtask bench`).
//! A bench target rather than a binary so that it builds with the same dependency graph
//! as the criterion benches and shares their compiled RocksDB.

use std::sync::Arc;
use std::time::{Duration, Instant};

use brine_bench::{sample_execution, RawStore};
use brine_rocksdb::{Durability, OpenOptions, RocksExecutionStore};
use brine_store::model::{ExecutionId, ExecutionState, JobId};
use brine_store::{ExecutionStore, UpdateExecutionRequest};

const PER_JOB: u64 = 10;

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn open_brine(dir: &std::path::Path, durability: Durability) -> RocksExecutionStore {
    let options = OpenOptions { durability, ..OpenOptions::default() };
    RocksExecutionStore::open(dir.join("brine.db"), &options).expect("open brine")
}

struct Row {
    name: &'static str,
    brine: f64,
    raw: f64,
}

async fn point_ops(n: u64) -> Vec<Row> {
    let dir = tempfile::tempdir().expect("temp dir");
    let brine = open_brine(dir.path(), Durability::Buffered);
    let mut raw = RawStore::open(&dir.path().join("raw.db"), false);
    let ids: Vec<ExecutionId> = (0..n).map(|i| sample_execution(i, PER_JOB).id).collect();
    let jobs: Vec<JobId> = (0..n / PER_JOB).map(|j| sample_execution(j * PER_JOB, PER_JOB).job_id).collect();
    let mut rows = Vec::new();

    let t = Instant::now();
    for i in 0..n {
        raw.create(sample_execution(i, PER_JOB));
    }
    let raw_create = rate(n, t.elapsed());
    let t = Instant::now();
    for i in 0..n {
        brine.create_execution(sample_execution(i, PER_JOB), vec![]).await.expect("create");
    }
    rows.push(Row { name: "create_execution", brine: rate(n, t.elapsed()), raw: raw_create });

    let t = Instant::now();
    for id in &ids {
        raw.update(id, ExecutionState::BidAccepted);
    }
    let raw_update = rate(n, t.elapsed());
    let t = Instant::now();
    for id in &ids {
        let req = UpdateExecutionRequest::to_state(id.clone(), ExecutionState::BidAccepted, "moved");
        brine.update_execution_state(req).await.expect("update");
    }
    rows.push(Row { name: "update_execution_state", brine: rate(n, t.elapsed()), raw: raw_update });

    let t = Instant::now();
    for id in &ids {
        std::hint::black_box(raw.get(id));
    }
    let raw_get = rate(n, t.elapsed());
    let t = Instant::now();
    for id in &ids {
        std::hint::black_box(brine.get_execution(id).await.expect("get"));
    }
    rows.push(Row { name: "get_execution", brine: rate(n, t.elapsed()), raw: raw_get });

    let t = Instant::now();
    for job in &jobs {
        std::hint::black_box(raw.get_by_job(job));
    }
    let raw_by_job = rate(jobs.len() as u64, t.elapsed());
    let t = Instant::now();
    for job in &jobs {
        std::hint::black_box(brine.get_executions(job).await.expect("by job"));
    }
    rows.push(Row { name: "get_executions(job of 10)", brine: rate(jobs.len() as u64, t.elapsed()), raw: raw_by_job });
    brine.close().await.expect("close");
    rows
}

/// Creates per second with `writers` concurrent tasks on a `Sync` store for `window`.
async fn sync_throughput(writers: usize, window: Duration) -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(open_brine(dir.path(), Durability::Sync));
    let deadline = Instant::now() + window;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let i = (w as u64) * 1_000_000_000 + n;
                store.create_execution(sample_execution(i, PER_JOB), vec![]).await.expect("create");
                n += 1;
            }
            n
        }));
    }
    let start = Instant::now();
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("writer");
    }
    let r = rate(total, start.elapsed());
    store.close().await.expect("close");
    r
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    let n: u64 = args.iter().find_map(|a| a.parse().ok()).unwrap_or(50_000);
    let rows = point_ops(n).await;
    let window = Duration::from_secs(2);
    let mut sync = Vec::new();
    for writers in [1usize, 4, 16, 64] {
        sync.push((writers, sync_throughput(writers, window).await));
    }
    let one = sync[0].1;
    if json {
        let ops: Vec<String> = rows
            .iter()
            .map(|r| {
                format!(
                    r#"{{"op":"{}","brine_per_s":{:.0},"raw_per_s":{:.0},"ratio":{:.3}}}"#,
                    r.name,
                    r.brine,
                    r.raw,
                    r.brine / r.raw
                )
            })
            .collect();
        let syncs: Vec<String> =
            sync.iter().map(|(w, r)| format!(r#"{{"writers":{w},"per_s":{r:.0},"vs_one":{:.2}}}"#, r / one)).collect();
        println!(r#"{{"n":{n},"buffered":[{}],"sync":[{}]}}"#, ops.join(","), syncs.join(","));
        return;
    }
    println!("Brine RocksDB backend vs raw RocksDB (same bytes, same families, Buffered), n = {n}");
    println!("{:<28} {:>14} {:>14} {:>8}", "operation", "brine ops/s", "raw ops/s", "ratio");
    for r in &rows {
        println!("{:<28} {:>14.0} {:>14.0} {:>7.2}x", r.name, r.brine, r.raw, r.brine / r.raw);
    }
    println!("\nSync durability, concurrent writers (group commit), {}s each", window.as_secs());
    println!("{:<10} {:>14} {:>10}", "writers", "creates/s", "vs 1");
    for (w, r) in &sync {
        println!("{:<10} {:>14.0} {:>9.2}x", w, r, r / one);
    }
}
