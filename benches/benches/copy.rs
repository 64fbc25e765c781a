//! Export, import and copy throughput (`brine::dump`, what `brine export`, `brine
//! import` and `brine migrate copy` run) on RocksDB stores: records per second and
//! peak RSS of each phase. Target: memory bounded by the dump's channels and one batch
//! and by RocksDB's budgets (the shared 64 MiB block cache, 64 MiB of memtables per
//! open store), never by the store: the peak RSS of each phase does not grow with the
//! store's size (compare EXECUTIONS = 200 000 with 1 000 000).
//!
//! Stores measured: every `--store PATH` given (`cargo xtask bench-copy` passes the
//! demo's two stores, written by `brine simulate`), then a compute store of EXECUTIONS
//! generated executions (default 1 000 000) with two history events each, in every
//! state, and its event log. Each phase runs on the same store: export to a JSON-lines
//! file, import of that file into a new store, copy into another new store (export
//! feeding import, then the comparison). Peak RSS is the process's `VmHWM`, reset
//! (`/proc/self/clear_refs`) before each phase.
//!
//! `cargo bench -p brine-bench --bench copy -- [EXECUTIONS] [--store PATH]… [--json]`
//! (or `cargo xtask bench-copy [EXECUTIONS] [--json]`).

use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use brine::dump::{self, Kind, Store};
use brine_bench::{peak_rss_mib, reset_peak_rss};
use brine_rocksdb::{Durability, OpenOptions, RocksExecutionStore, RocksJobStore, StoreKind};
use brine_store::model::{Event, Execution, ExecutionId, ExecutionState, Job, JobId, Timestamp};
use brine_store::ExecutionStore;
use tokio::sync::mpsc;

/// The allocator the `brine` command uses, so the figures are the command's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Opens the RocksDB store at `path` (of the kind its families say, or `kind` when it
/// is new) as a dump store; targets write `Buffered` and are synced by the import.
fn open(path: &Path, kind: Kind) -> Store {
    let options = OpenOptions { durability: Durability::Buffered, ..OpenOptions::default() };
    let kind = match brine_rocksdb::store_kind_at(path) {
        Ok(StoreKind::Compute) => Kind::Compute,
        Ok(StoreKind::Requester) => Kind::Requester,
        Err(_) => kind,
    };
    match kind {
        Kind::Compute => Store::Compute(Arc::new(RocksExecutionStore::open(path, &options).expect("open"))),
        Kind::Requester => Store::Requester(Arc::new(RocksJobStore::open(path, &options).expect("open"))),
    }
}

/// Writes `n` executions in every state, each with two events, and a log entry per
/// thousand, with the load methods (so the store is built fast).
async fn generate(path: &Path, n: usize) {
    let store =
        RocksExecutionStore::open(path, &OpenOptions { durability: Durability::Buffered, ..Default::default() })
            .expect("open");
    let mut i = 0;
    while i < n {
        let mut batch = Vec::with_capacity(1000);
        for _ in 0..1000.min(n - i) {
            let job = Job::new(JobId::new(format!("job-{:07}", i / 4)).expect("id"), "bench job");
            let mut e = Execution::new(ExecutionId::new(format!("e-{i:08}")).expect("id"), &job);
            e.compute_state.state = ExecutionState::ALL[i % ExecutionState::ALL.len()];
            e.revision = 1 + (i % 5) as u64;
            let events = vec![
                Event::new("Scheduling", "bid accepted", Timestamp::from_secs(1_700_000_000 + i as u64)),
                Event::new("Execution", "running", Timestamp::from_secs(1_700_000_001 + i as u64)),
            ];
            batch.push((e, events));
            i += 1;
        }
        store.load_executions(batch).await.expect("load");
    }
    let log = store.event_log();
    for k in 0..n / 1000 {
        log.append("bench", &format!("{{\"k\":{k}}}")).await.expect("append");
    }
    log.checkpoint("metrics", log.head().await.expect("head")).await.expect("checkpoint");
    store.close().await.expect("close");
}

/// One phase's figures.
struct Phase {
    name: &'static str,
    records: u64,
    seconds: f64,
    rss: Option<f64>,
    bytes: Option<u64>,
}

impl Phase {
    fn rate(&self) -> f64 {
        self.records as f64 / self.seconds.max(1e-9)
    }
}

async fn export(source: &Path, file: &Path) -> Phase {
    reset_peak_rss();
    let t = Instant::now();
    let store = open(source, Kind::Compute);
    let (tx, mut rx) = mpsc::channel(dump::CHANNEL_LINES);
    let out = BufWriter::with_capacity(1 << 20, std::fs::File::create(file).expect("create the dump"));
    let writer = tokio::task::spawn_blocking(move || dump::write_lines(&mut rx, out).expect("write"));
    let exported = dump::export(&store, "bench", &tx, &|_| {}).await.expect("export");
    drop(tx);
    let bytes = writer.await.expect("writer");
    store.close().await.expect("close");
    let kind = store.kind();
    Phase {
        name: "export",
        records: exported.tally.main_records(kind),
        seconds: t.elapsed().as_secs_f64(),
        rss: peak_rss_mib(),
        bytes: Some(bytes),
    }
}

async fn import(file: &Path, target: &Path, kind: Kind) -> Phase {
    reset_peak_rss();
    let t = Instant::now();
    let store = open(target, kind);
    let (tx, mut rx) = mpsc::channel(dump::CHANNEL_LINES);
    let input = BufReader::with_capacity(1 << 20, std::fs::File::open(file).expect("open the dump"));
    let reader = tokio::task::spawn_blocking(move || dump::read_lines(input, &tx));
    let imported = dump::import(&store, &mut rx, &|_| {}).await.expect("import");
    drop(rx);
    reader.await.expect("reader");
    store.close().await.expect("close");
    Phase {
        name: "import",
        records: imported.tally.main_records(kind),
        seconds: t.elapsed().as_secs_f64(),
        rss: peak_rss_mib(),
        bytes: None,
    }
}

async fn copy(source: &Path, target: &Path, kind: Kind) -> Phase {
    reset_peak_rss();
    let t = Instant::now();
    let (from, to) = (open(source, kind), open(target, kind));
    let (imported, comparison) = dump::copy(&from, "bench", &to, &|_| {}).await.expect("copy");
    assert!(comparison.differences.is_empty(), "{:?}", comparison.differences);
    from.close().await.expect("close");
    to.close().await.expect("close");
    Phase {
        name: "copy",
        records: imported.tally.main_records(kind),
        seconds: t.elapsed().as_secs_f64(),
        rss: peak_rss_mib(),
        bytes: None,
    }
}

/// Runs the three phases on the store at `path`, in `scratch`.
async fn measure(path: &Path, scratch: &Path) -> (Kind, Vec<Phase>) {
    let kind = match brine_rocksdb::store_kind_at(path).expect("a store") {
        StoreKind::Compute => Kind::Compute,
        StoreKind::Requester => Kind::Requester,
    };
    let file = scratch.join("dump.jsonl");
    let exported = export(path, &file).await;
    let imported = import(&file, &scratch.join("imported.db"), kind).await;
    let copied = copy(path, &scratch.join("copied.db"), kind).await;
    (kind, vec![exported, imported, copied])
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    let executions: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(1_000_000);
    let mut stores: Vec<PathBuf> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--store" {
            stores.push(PathBuf::from(it.next().expect("--store needs a path")));
        }
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let generated = dir.path().join("generated-compute.db");
    let t = Instant::now();
    generate(&generated, executions).await;
    let build_s = t.elapsed().as_secs_f64();
    stores.push(generated);

    if !json {
        println!(
            "Export, import and copy on RocksDB (a generated store of {executions} executions built in {build_s:.0} s)"
        );
    }
    for (i, path) in stores.iter().enumerate() {
        let scratch = dir.path().join(format!("run-{i}"));
        std::fs::create_dir_all(&scratch).expect("scratch");
        let (kind, phases) = measure(path, &scratch).await;
        let _ = std::fs::remove_dir_all(&scratch);
        for p in &phases {
            let rss = p.rss.map_or_else(|| "null".into(), |m| format!("{m:.1}"));
            if json {
                println!(
                    r#"{{"store":"{}","kind":"{kind}","phase":"{}","records":{},"seconds":{:.3},"records_per_s":{:.0},"peak_rss_mib":{rss},"bytes":{}}}"#,
                    path.display(),
                    p.name,
                    p.records,
                    p.seconds,
                    p.rate(),
                    p.bytes.map_or_else(|| "null".into(), |b| b.to_string())
                );
            } else {
                let size =
                    p.bytes.map(|b| format!(", {:.1} MiB of JSON lines", b as f64 / 1048576.0)).unwrap_or_default();
                println!(
                    "  {:<32} {:<6} {:>8} records in {:>6.2} s: {:>7.0} records/s, peak RSS {} MiB{size}",
                    format!("{} ({kind})", path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()),
                    p.name,
                    p.records,
                    p.seconds,
                    p.rate(),
                    p.rss.map_or_else(|| "n/a".into(), |m| format!("{m:.0}"))
                );
            }
        }
    }
}
