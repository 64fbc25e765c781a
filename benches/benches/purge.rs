//! Purge on RocksDB at scale: 1 000 000 executions across 100 000 terminal
//! jobs of a requester store, archived with zstd. Targets: at least 100 000 executions/s;
//! peak RSS under 256 MiB (`VmHWM`, reset after the store is built and closed).
//!
//! `cargo bench -p brine-bench --bench purge -- [JOBS] [--json]` (or
//! `cargo xtask bench-purge`); JOBS defaults to 100 000, with 10 executions each.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use brine_purge::{purge, Compression, PurgeOptions, Source};
use brine_rocksdb::{Durability, OpenOptions, RocksJobStore};
use brine_store::model::{Execution, ExecutionId, ExecutionState, Job, JobId, JobState};
use brine_store::{JobStore, ManualClock, UpdateExecutionRequest, UpdateJobStateRequest};

/// The allocator the `brine` binary uses too (see its `main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PER_JOB: usize = 10;

/// Writes `jobs` completed jobs with `PER_JOB` executions each, on a clock at 2026-01-01.
async fn build(path: &Path, jobs: usize) {
    let options = OpenOptions {
        durability: Durability::Buffered,
        clock: Arc::new(ManualClock::default()),
        ..OpenOptions::default()
    };
    let store = RocksJobStore::open(path, &options).expect("open");
    for j in 0..jobs {
        let id = JobId::new(format!("job-{j:07}")).expect("id");
        let mut job = Job::new(id.clone(), format!("bench-{j}"));
        job.config = r#"{"image":"ubuntu:24.04","cmd":["run"]}"#.into();
        let job = store.create_job(job).await.expect("create");
        for x in 0..PER_JOB {
            let e = Execution::new(ExecutionId::new(format!("e-{j:07}-{x}")).expect("id"), &job);
            let e = store.create_execution(e).await.expect("execution");
            let done = UpdateExecutionRequest::to_state(e.id, ExecutionState::Completed, "done");
            store.update_execution(done).await.expect("execution done");
        }
        store.update_job_state(UpdateJobStateRequest::new(id, JobState::Completed, "done")).await.expect("finish");
    }
    store.close().await.expect("close");
    // Let the background compaction of what was just written finish before the timed
    // part, as it would have long finished on a store whose jobs are days old.
    let opts = brine_rocksdb::db_options();
    let families = rocksdb::DB::list_cf(&opts, path).expect("families");
    let db = rocksdb::DB::open_cf(&opts, path, &families).expect("open raw");
    for name in &families {
        let cf = db.cf_handle(name).expect("family");
        db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    let jobs: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(100_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("node-requester.db");
    let t = Instant::now();
    build(&path, jobs).await;
    let build_s = t.elapsed().as_secs_f64();

    brine_bench::reset_peak_rss();
    let t = Instant::now();
    let store = Arc::new(RocksJobStore::open(&path, &OpenOptions::default()).expect("open"));
    let options = PurgeOptions {
        min_age: Duration::from_secs(86_400),
        compression: Compression::Zstd,
        ..PurgeOptions::new(dir.path().join("archive"))
    };
    let report = purge(&Source::Jobs(store.clone()), &options).await.expect("purge");
    store.close().await.expect("close");
    let secs = t.elapsed().as_secs_f64();
    let rss = brine_bench::peak_rss_mib();
    assert_eq!(report.jobs as usize, jobs, "{report}");
    assert_eq!(report.executions as usize, jobs * PER_JOB);
    let rate = report.executions as f64 / secs;
    if json {
        println!(
            r#"{{"jobs":{},"executions":{},"seconds":{secs:.2},"executions_per_s":{rate:.0},"jobs_per_s":{:.0},"files":{},"archive_bytes":{},"json_bytes":{},"peak_rss_mib":{}}}"#,
            report.jobs,
            report.executions,
            report.jobs as f64 / secs,
            report.files.len(),
            report.bytes,
            report.raw_bytes,
            rss.map_or_else(|| "null".into(), |m| format!("{m:.1}"))
        );
        return;
    }
    println!("Purge on RocksDB with zstd ({jobs} jobs x {PER_JOB} executions written in {build_s:.0} s)");
    println!(
        "  {} executions of {} jobs in {secs:.2} s: {rate:.0} executions/s (target >= 100 000), {:.0} jobs/s",
        report.executions,
        report.jobs,
        report.jobs as f64 / secs
    );
    println!(
        "  {} files, {} bytes of zstd from {} bytes of JSON ({:.1}x); peak RSS {} (target < 256 MiB)",
        report.files.len(),
        report.bytes,
        report.raw_bytes,
        report.raw_bytes as f64 / report.bytes.max(1) as f64,
        rss.map_or_else(|| "n/a".into(), |m| format!("{m:.0} MiB"))
    );
}
