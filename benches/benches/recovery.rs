//! Recovery at scale on RocksDB. Targets: open + recovery with the `seed`
//! preset over 1 000 000 stored executions under 100 ms (counters, not a scan);
//! `fail-live` over 100 000 live executions with peak RSS under 256 MiB. Also reported:
//! the full cleanup scan over the 1 000 000 executions, as after an unclean shutdown.
//!
//! Each open + recovery runs in a fresh process of this program, as a restarting node
//! does, and reports its time and peak RSS (`VmHWM`), which so covers only the open and
//! the recovery.
//!
//! `cargo bench -p brine-bench --bench recovery -- [EXECUTIONS] [--json]` (or
//! `cargo xtask bench-recovery`); EXECUTIONS defaults to 1 000 000, and the live store
//! holds a tenth of that.

use std::path::Path;
use std::time::Instant;

use brine_bench::{peak_rss_mib, reset_peak_rss};
use brine_recovery::{recover, Cleanup, Policy, RecoveryOptions};
use brine_rocksdb::{OpenOptions, RocksExecutionStore};
use brine_store::model::{Execution, ExecutionId, ExecutionState, Job, JobId, JobType};
use brine_store::{ExecutionStore, UpdateExecutionRequest};

// As in `brine` and the other benches.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn open(path: &Path) -> RocksExecutionStore {
    RocksExecutionStore::open(path, &OpenOptions::default()).expect("open")
}

/// Writes `n` executions, in transactions of 1000; `state` picks each one's state.
async fn build(path: &Path, n: usize, state: impl Fn(usize) -> ExecutionState) {
    let store = open(path);
    let jobs: Vec<Job> = (0..4)
        .map(|t| {
            let mut job = Job::new(JobId::new(format!("j-{t}")).expect("id"), "bench job");
            job.job_type = JobType::ALL[t];
            job
        })
        .collect();
    let mut i = 0;
    while i < n {
        let mut tx = store.begin_tx().await.expect("begin");
        for _ in 0..1000.min(n - i) {
            let mut job = jobs[i % 4].clone();
            job.id = JobId::new(format!("j-{:07}", i / 10)).expect("id");
            let e = Execution::new(ExecutionId::new(format!("e-{i:08}")).expect("id"), &job);
            let e = tx.create_execution(e, vec![]).await.expect("create");
            if state(i) != ExecutionState::Created {
                let to = UpdateExecutionRequest::to_state(e.id, state(i), "stored");
                tx.update_execution_state(to).await.expect("move to its state");
            }
            i += 1;
        }
        tx.commit().await.expect("commit");
    }
    store.close().await.expect("close");
}

struct Run {
    ms: f64,
    rss: Option<f64>,
    /// Executions before recovery, changed by it, and cleaned by its scan.
    before: u64,
    changed: u64,
    cleaned: u64,
    keys: u64,
}

/// The measured part, in a fresh process (as a restarting node): opens the store at
/// `path`, recovers it with the preset `policy` and `cleanup` (`auto` or `always`), and
/// prints one JSON line.
async fn measure(path: &Path, policy: &str, cleanup: &str) {
    let policy = match policy {
        "seed" => Policy::seed(),
        "fail-live" => Policy::fail_live(),
        other => panic!("--measure takes the preset seed or fail-live, not {other:?}"),
    };
    let cleanup = match cleanup {
        "auto" => Cleanup::Auto,
        "always" => Cleanup::Always,
        other => panic!("--measure takes the cleanup auto or always, not {other:?}"),
    };
    reset_peak_rss();
    let t = Instant::now();
    let store = open(path);
    let options = RecoveryOptions { cleanup, ..RecoveryOptions::default() };
    let report = recover(&store, &policy, &options).await.expect("recover");
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    let rss = peak_rss_mib();
    store.close().await.expect("close");
    let keys = report.cleanup.as_ref().map_or(0, |c| c.keys_scanned);
    println!(
        r#"{{"ms":{ms:.3},"peak_rss_mib":{},"before":{},"changed":{},"cleaned":{},"keys":{keys}}}"#,
        rss.map_or_else(|| "null".into(), |m| format!("{m:.1}")),
        report.before.total(),
        report.changed(),
        report.cleaned()
    );
}

/// Runs [`measure`] in a fresh process of this program.
fn open_and_recover(path: &Path, policy: &str, cleanup: &str) -> Run {
    let m = brine_bench::in_fresh_process(&["--measure", &path.display().to_string(), policy, cleanup], &[]);
    let num = |k: &str| m[k].as_u64().expect(k);
    Run {
        ms: m["ms"].as_f64().expect("ms"),
        rss: m["peak_rss_mib"].as_f64(),
        before: num("before"),
        changed: num("changed"),
        cleaned: num("cleaned"),
        keys: num("keys"),
    }
}

fn rss(r: Option<f64>) -> String {
    r.map_or_else(|| "n/a".into(), |m| format!("{m:.0} MiB"))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, path, policy, cleanup] = args.as_slice() {
        if flag == "--measure" {
            measure(Path::new(path), policy, cleanup).await;
            return;
        }
    }
    let json = args.iter().any(|a| a == "--json");
    let n: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(1_000_000);
    let live_n = n / 10;
    let dir = tempfile::tempdir().expect("temp dir");
    let big = dir.path().join("big.db");
    let live = dir.path().join("live.db");

    let t = Instant::now();
    build(&big, n, |i| ExecutionState::ALL[i % 9]).await;
    let build_s = t.elapsed().as_secs_f64();
    build(&live, live_n, |i| ExecutionState::LIVE[i % 5]).await;

    let seed = open_and_recover(&big, "seed", "auto");
    assert_eq!(seed.before, n as u64);
    let scan = open_and_recover(&big, "seed", "always");
    assert_eq!(scan.cleaned, 0, "a consistent store needs no repair");
    let fail = open_and_recover(&live, "fail-live", "auto");
    assert_eq!(fail.changed, live_n as u64);
    let rate = live_n as f64 / (fail.ms / 1000.0);
    let keys = scan.keys;

    if json {
        let opt = |r: Option<f64>| r.map_or_else(|| "null".into(), |m| format!("{m:.1}"));
        println!(
            r#"{{"executions":{n},"seed":{{"open_and_recover_ms":{:.2},"peak_rss_mib":{}}},"cleanup_scan":{{"ms":{:.0},"keys":{keys},"peak_rss_mib":{}}},"fail_live":{{"executions":{live_n},"ms":{:.0},"executions_per_s":{rate:.0},"peak_rss_mib":{}}}}}"#,
            seed.ms,
            opt(seed.rss),
            scan.ms,
            opt(scan.rss),
            fail.ms,
            opt(fail.rss)
        );
        return;
    }
    println!("Recovery on RocksDB ({n} executions written in {build_s:.0} s)");
    println!(
        "  seed preset, open + recovery over {n}: {:.2} ms (target < 100 ms), peak RSS {}",
        seed.ms,
        rss(seed.rss)
    );
    println!(
        "  cleanup scan over {n} ({keys} keys, as after an unclean shutdown): {:.0} ms, peak RSS {}",
        scan.ms,
        rss(scan.rss)
    );
    println!(
        "  fail-live over {live_n} live executions: {:.0} ms, {rate:.0} executions/s, peak RSS {} (target < 256 MiB)",
        fail.ms,
        rss(fail.rss)
    );
}
