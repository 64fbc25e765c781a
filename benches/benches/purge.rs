//! Purge on RocksDB at scale: 1 000 000 executions across 100 000 terminal
//! jobs of a requester store, archived with zstd. Targets: at least 150 000 executions/s;
//! peak RSS under 256 MiB. The store is built, closed and compacted first; the purge then
//! runs in a fresh process of this program (as `brine purge` or a restarted node would),
//! which reports its time, its peak RSS (`VmHWM`) and what RocksDB held at the peak. It
//! runs twice, on two copies of the store: with the allocators' default settings and
//! with [`brine_bench::MEMORY_BOUNDED_ENV`].
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

/// Writes `jobs` completed jobs with `PER_JOB` executions each, on a clock at 2026-01-01,
/// and leaves a copy of the compacted store at `copy` (a RocksDB checkpoint).
async fn build(path: &Path, jobs: usize, copy: &Path) {
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
    rocksdb::checkpoint::Checkpoint::new(&db).and_then(|c| c.create_checkpoint(copy)).expect("copy the store");
}

/// The measured part, in a fresh process: opens the store, purges everything into
/// `archive` and prints one JSON line.
async fn measure(path: &Path, archive: &Path) {
    brine_bench::reset_peak_rss();
    let t = Instant::now();
    let store = Arc::new(RocksJobStore::open(path, &OpenOptions::default()).expect("open"));
    let sampled = store.clone();
    let sampler = brine_bench::PeakSampler::start(move || sampled.memory_usage().ok());
    let options = PurgeOptions {
        min_age: Duration::from_secs(86_400),
        compression: Compression::Zstd,
        ..PurgeOptions::new(archive)
    };
    let report = purge(&Source::Jobs(store.clone()), &options).await.expect("purge");
    let at_peak = brine_bench::memory_at_peak(sampler.finish());
    store.close().await.expect("close");
    let secs = t.elapsed().as_secs_f64();
    let rss = brine_bench::peak_rss_mib();
    println!(
        r#"{{"jobs":{},"executions":{},"seconds":{secs:.3},"files":{},"archive_bytes":{},"json_bytes":{},"peak_rss_mib":{},"at_peak":{at_peak}}}"#,
        report.jobs,
        report.executions,
        report.files.len(),
        report.bytes,
        report.raw_bytes,
        rss.map_or_else(|| "null".into(), |m| format!("{m:.1}"))
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, path, archive] = args.as_slice() {
        if flag == "--measure" {
            measure(Path::new(path), Path::new(archive)).await;
            return;
        }
    }
    let json = args.iter().any(|a| a == "--json");
    let jobs: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(100_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let (path, copy) = (dir.path().join("node-requester.db"), dir.path().join("copy.db"));
    let t = Instant::now();
    build(&path, jobs, &copy).await;
    let build_s = t.elapsed().as_secs_f64();

    // The same purge twice, each in a fresh process on its own copy of the store: with
    // the allocators' default settings, and with the settings that bound what they keep.
    let run = |store: &Path, archive: &str, env: &[(&str, &str)]| {
        let archive = dir.path().join(archive);
        let m = brine_bench::in_fresh_process(
            &["--measure", &store.display().to_string(), &archive.display().to_string()],
            env,
        );
        let num = |k: &str| m[k].as_f64().expect(k);
        assert_eq!(num("jobs") as usize, jobs, "{m}");
        assert_eq!(num("executions") as usize, jobs * PER_JOB, "{m}");
        let secs = num("seconds");
        serde_json::json!({
            "seconds": secs,
            "executions_per_s": (num("executions") / secs).round(),
            "jobs_per_s": (num("jobs") / secs).round(),
            "files": m["files"],
            "archive_bytes": m["archive_bytes"],
            "json_bytes": m["json_bytes"],
            "peak_rss_mib": m["peak_rss_mib"],
            "at_peak": m["at_peak"],
        })
    };
    let default = run(&path, "archive", &[]);
    let bounded = run(&copy, "archive-bounded", &brine_bench::MEMORY_BOUNDED_ENV);
    if json {
        let env: serde_json::Map<String, serde_json::Value> =
            brine_bench::MEMORY_BOUNDED_ENV.iter().map(|(k, v)| ((*k).to_owned(), (*v).into())).collect();
        println!(
            "{}",
            serde_json::json!({
                "jobs": jobs,
                "executions": jobs * PER_JOB,
                "default": default,
                "memory_bounded": bounded,
                "memory_bounded_env": env,
            })
        );
        return;
    }
    println!("Purge on RocksDB with zstd ({jobs} jobs x {PER_JOB} executions written in {build_s:.0} s)");
    let env = brine_bench::MEMORY_BOUNDED_ENV.map(|(k, v)| format!("{k}={v}")).join(" ");
    for (name, m) in [("default allocator settings", &default), (env.as_str(), &bounded)] {
        let num = |k: &str| m[k].as_f64().expect(k);
        println!("  {name}:");
        println!(
            "    {} executions in {:.2} s: {:.0} executions/s (target >= 150 000), {:.0} jobs/s",
            jobs * PER_JOB,
            num("seconds"),
            num("executions_per_s"),
            num("jobs_per_s")
        );
        println!(
            "    {} files, {} bytes of zstd from {} bytes of JSON ({:.1}x); peak RSS {} (target < 256 MiB)",
            m["files"],
            m["archive_bytes"],
            m["json_bytes"],
            num("json_bytes") / num("archive_bytes").max(1.0),
            m["peak_rss_mib"].as_f64().map_or_else(|| "n/a".into(), |m| format!("{m:.0} MiB"))
        );
        if let Some(line) = brine_bench::describe_memory_at_peak(&m["at_peak"]) {
            println!("    {line}");
        }
    }
}
