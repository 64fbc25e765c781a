//! The comparison harness: Brine's RocksDB backend beside raw RocksDB writing the same
//! bytes, `Sync` creates beside raw synced writes at the same concurrency, and index
//! reads as the store grows, printed as medians and ratios measured in one run.
//!
//! `cargo bench -p brine-bench --bench compare -- [N] [--rounds R] [--no-sweep] [--each] [--json]`
//! (`--profile brine|raw` runs one subject's point operations alone, for `perf record`)
//! (or `cargo xtask bench`). A bench target rather than a binary so that it builds with
//! the same dependency graph as the criterion benches and shares their compiled RocksDB.
//!
//! Fairness: every round opens a fresh store for each subject. Within a phase the two
//! take turns every 500 operations, who goes first alternating, so a slow spell of the
//! machine (or the background flush both stores' writes cause) falls on both alike;
//! before every phase both stores' background flushes and compactions are waited for,
//! and both are closed and removed before the next round, so one round's compaction
//! never lands on the next. The workload's records are built before the clock starts.
//! Each row reports the median over the rounds and the spread of the per-round ratios;
//! `--each` prints every round's rates too. `Sync` rows alternate which subject runs
//! first, each on a fresh store.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use brine_bench::{sample_execution, RawStore};
use brine_rocksdb::{Durability, OpenOptions, RocksExecutionStore};
use brine_store::model::{Execution, ExecutionId, ExecutionState, JobId};
use brine_store::{ExecutionStore, UpdateExecutionRequest};

// Both subjects run in this process on the allocator the `brine` command uses.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PER_JOB: u64 = 10;

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

/// One engine under the point-operation workload.
trait Subject: Sized {
    fn open(dir: &Path) -> Self;
    async fn create(&self, e: Execution);
    async fn update(&self, id: &ExecutionId);
    async fn get(&self, id: &ExecutionId) -> Execution;
    async fn get_by_job(&self, job: &JobId) -> Vec<Execution>;
    async fn settle(&self);
    async fn close(self);
}

fn open_brine(dir: &Path, durability: Durability) -> RocksExecutionStore {
    let options = OpenOptions { durability, ..OpenOptions::default() };
    RocksExecutionStore::open(dir.join("brine.db"), &options).expect("open brine")
}

impl Subject for RocksExecutionStore {
    fn open(dir: &Path) -> Self {
        open_brine(dir, Durability::Buffered)
    }
    async fn create(&self, e: Execution) {
        self.create_execution(e, vec![]).await.expect("create");
    }
    async fn update(&self, id: &ExecutionId) {
        let req = UpdateExecutionRequest::to_state(id.clone(), ExecutionState::BidAccepted, "moved");
        self.update_execution_state(req).await.expect("update");
    }
    async fn get(&self, id: &ExecutionId) -> Execution {
        self.get_execution(id).await.expect("get")
    }
    async fn get_by_job(&self, job: &JobId) -> Vec<Execution> {
        self.get_executions(job).await.expect("by job")
    }
    async fn settle(&self) {
        self.wait_for_compactions().await.expect("wait for compactions");
    }
    async fn close(self) {
        ExecutionStore::close(&self).await.expect("close");
    }
}

impl Subject for RawStore {
    fn open(dir: &Path) -> Self {
        RawStore::open(&dir.join("raw.db"), false)
    }
    async fn create(&self, e: Execution) {
        RawStore::create(self, e);
    }
    async fn update(&self, id: &ExecutionId) {
        RawStore::update(self, id, ExecutionState::BidAccepted);
    }
    async fn get(&self, id: &ExecutionId) -> Execution {
        RawStore::get(self, id)
    }
    async fn get_by_job(&self, job: &JobId) -> Vec<Execution> {
        RawStore::get_by_job(self, job)
    }
    async fn settle(&self) {
        self.wait_for_compactions();
    }
    async fn close(self) {
        self.wait_for_compactions();
    }
}

/// The point operations, in the order a round runs them.
const OPS: [&str; 4] = ["create_execution", "update_execution_state", "get_execution", "get_executions(job of 10)"];

/// The workload of a round: the records to create (built before any clock starts).
struct Workload {
    executions: Vec<Execution>,
    ids: Vec<ExecutionId>,
    jobs: Vec<JobId>,
}

impl Workload {
    fn new(n: u64) -> Workload {
        let executions: Vec<Execution> = (0..n).map(|i| sample_execution(i, PER_JOB)).collect();
        let ids = executions.iter().map(|e| e.id.clone()).collect();
        let jobs = (0..n / PER_JOB).map(|j| sample_execution(j * PER_JOB, PER_JOB).job_id).collect();
        Workload { executions, ids, jobs }
    }
}

/// One of the point operations a round times.
#[derive(Clone, Copy)]
enum Phase {
    Create,
    Update,
    Get,
    GetByJob,
}

const PHASES: [Phase; 4] = [Phase::Create, Phase::Update, Phase::Get, Phase::GetByJob];

/// Operations per chunk: Brine and raw take turns chunk by chunk.
const CHUNK: usize = 500;

impl Phase {
    /// How many operations the phase makes.
    fn count(self, w: &Workload) -> usize {
        match self {
            Phase::GetByJob => w.jobs.len(),
            _ => w.ids.len(),
        }
    }

    /// Runs operations `range` of the phase on `s`; `records` are the records to
    /// create (built by the caller, before the clock starts). Returns the time taken.
    async fn run<S: Subject>(
        self,
        s: &S,
        w: &Workload,
        range: std::ops::Range<usize>,
        records: Vec<Execution>,
    ) -> Duration {
        let t = Instant::now();
        match self {
            Phase::Create => {
                for e in records {
                    s.create(e).await;
                }
            }
            Phase::Update => {
                for id in &w.ids[range] {
                    s.update(id).await;
                }
            }
            Phase::Get => {
                for id in &w.ids[range] {
                    std::hint::black_box(s.get(id).await);
                }
            }
            Phase::GetByJob => {
                for job in &w.jobs[range] {
                    std::hint::black_box(s.get_by_job(job).await);
                }
            }
        }
        t.elapsed()
    }
}

/// One round of the four point operations on a fresh store of each subject: the two
/// take turns every [`CHUNK`] operations (who goes first alternating), so that what
/// slows the machine for a while slows both alike; both stores settle before each
/// phase. Returns each subject's ops/s per phase.
async fn round<A: Subject, B: Subject>(w: &Workload, r: usize) -> ([f64; 4], [f64; 4]) {
    let (dir_a, dir_b) = (tempfile::tempdir().expect("temp dir"), tempfile::tempdir().expect("temp dir"));
    let (a, b) = (A::open(dir_a.path()), B::open(dir_b.path()));
    let (mut rates_a, mut rates_b) = ([0.0; 4], [0.0; 4]);
    for (p, phase) in PHASES.into_iter().enumerate() {
        a.settle().await;
        b.settle().await;
        let count = phase.count(w);
        let (mut time_a, mut time_b) = (Duration::ZERO, Duration::ZERO);
        for (c, start) in (0..count).step_by(CHUNK).enumerate() {
            let range = start..(start + CHUNK).min(count);
            let records = |_: ()| match phase {
                Phase::Create => w.executions[range.clone()].to_vec(),
                _ => Vec::new(),
            };
            let (for_a, for_b) = (records(()), records(()));
            if (c + r).is_multiple_of(2) {
                time_a += phase.run(&a, w, range.clone(), for_a).await;
                time_b += phase.run(&b, w, range, for_b).await;
            } else {
                time_b += phase.run(&b, w, range.clone(), for_b).await;
                time_a += phase.run(&a, w, range, for_a).await;
            }
        }
        rates_a[p] = rate(count as u64, time_a);
        rates_b[p] = rate(count as u64, time_b);
    }
    a.close().await;
    b.close().await;
    (rates_a, rates_b)
}

/// A subject's point operations alone on a fresh store (for `--profile`).
async fn alone<S: Subject>(w: &Workload) -> [f64; 4] {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = S::open(dir.path());
    let mut rates = [0.0; 4];
    for (p, phase) in PHASES.into_iter().enumerate() {
        s.settle().await;
        let count = phase.count(w);
        let records = match phase {
            Phase::Create => w.executions.clone(),
            _ => Vec::new(),
        };
        rates[p] = rate(count as u64, phase.run(&s, w, 0..count, records).await);
    }
    s.close().await;
    rates
}

/// The median of `values` (not empty).
fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if !v.len().is_multiple_of(2) {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// Brine's and raw's rates in each round, paired by round.
struct Row {
    name: String,
    brine: Vec<f64>,
    raw: Vec<f64>,
}

impl Row {
    fn ratios(&self) -> Vec<f64> {
        self.brine.iter().zip(&self.raw).map(|(b, r)| b / r).collect()
    }

    fn ratio(&self) -> f64 {
        median(&self.ratios())
    }

    fn spread(&self) -> (f64, f64) {
        let r = self.ratios();
        (r.iter().copied().fold(f64::INFINITY, f64::min), r.iter().copied().fold(0.0, f64::max))
    }

    fn json(&self, key: &str) -> String {
        let (lo, hi) = self.spread();
        format!(
            r#"{{"{key}":{},"brine_per_s":{:.0},"raw_per_s":{:.0},"ratio":{:.3},"ratio_min":{lo:.3},"ratio_max":{hi:.3}}}"#,
            if key == "op" { format!("{:?}", self.name) } else { self.name.clone() },
            median(&self.brine),
            median(&self.raw),
            self.ratio(),
        )
    }
}

async fn point_ops(n: u64, rounds: usize, each: bool) -> Vec<Row> {
    let w = Workload::new(n);
    let mut rows: Vec<Row> =
        OPS.iter().map(|name| Row { name: (*name).into(), brine: Vec::new(), raw: Vec::new() }).collect();
    for r in 0..rounds {
        let (brine, raw) = round::<RocksExecutionStore, RawStore>(&w, r).await;
        if each {
            eprintln!("round {r}: brine {brine:.0?} raw {raw:.0?}");
        }
        for (i, row) in rows.iter_mut().enumerate() {
            row.brine.push(brine[i]);
            row.raw.push(raw[i]);
        }
    }
    rows
}

/// Creates per second with `writers` concurrent tasks on a fresh `Sync` Brine store
/// for `window`.
async fn sync_brine(writers: usize, window: Duration) -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(open_brine(dir.path(), Durability::Sync));
    let start = Instant::now();
    let deadline = start + window;
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
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("writer");
    }
    let r = rate(total, start.elapsed());
    ExecutionStore::close(&*store).await.expect("close");
    r
}

/// The same with raw RocksDB: `writers` threads writing the same batches with
/// `sync = true` (RocksDB groups concurrent synced writes into one fsync).
async fn sync_raw(writers: usize, window: Duration) -> f64 {
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(RawStore::open(&dir.path().join("raw.db"), true));
        let total = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let deadline = start + window;
        let threads: Vec<_> = (0..writers)
            .map(|w| {
                let (store, total) = (Arc::clone(&store), Arc::clone(&total));
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        store.create(sample_execution((w as u64) * 1_000_000_000 + n, PER_JOB));
                        n += 1;
                    }
                    total.fetch_add(n, Ordering::Relaxed);
                })
            })
            .collect();
        for t in threads {
            t.join().expect("writer thread");
        }
        rate(total.load(Ordering::Relaxed), start.elapsed())
    })
    .await
    .expect("raw sync writers")
}

async fn sync_rows(rounds: usize, window: Duration) -> Vec<Row> {
    let mut rows = Vec::new();
    for writers in [1usize, 4, 16, 64] {
        let mut row = Row { name: writers.to_string(), brine: Vec::new(), raw: Vec::new() };
        for r in 0..rounds {
            if r.is_multiple_of(2) {
                row.brine.push(sync_brine(writers, window).await);
                row.raw.push(sync_raw(writers, window).await);
            } else {
                row.raw.push(sync_raw(writers, window).await);
                row.brine.push(sync_brine(writers, window).await);
            }
        }
        rows.push(row);
    }
    rows
}

/// Index and point reads at each store size of the sweep, in ops/s.
struct Sweep {
    sizes: Vec<u64>,
    /// (operation, ops/s at each size)
    reads: Vec<(&'static str, Vec<f64>)>,
}

/// How many executions of the sweep's store are live (the rest stay `Created`).
const LIVE: u64 = 50;

/// A spread of `count` indexes below `n`, visiting the whole range (a fixed stride
/// coprime with `n`), so reads do not all fall on recently written, cached blocks.
fn spread(count: u64, n: u64) -> impl Iterator<Item = u64> {
    let stride = (n / 2 + 1..).find(|s| gcd(*s, n) == 1).unwrap_or(1);
    (0..count).map(move |k| (k * stride) % n)
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Grows one Brine store through `sizes` and times its reads at each size.
async fn sweep(sizes: &[u64]) -> Sweep {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_brine(dir.path(), Durability::Buffered);
    let mut reads: Vec<(&'static str, Vec<f64>)> = vec![
        ("get_execution", Vec::new()),
        ("get_executions(job of 10)", Vec::new()),
        ("get_live_executions (50 live)", Vec::new()),
        ("get_execution_count", Vec::new()),
    ];
    let mut stored = 0u64;
    for &size in sizes {
        while stored < size {
            store.create_execution(sample_execution(stored, PER_JOB), vec![]).await.expect("create");
            if stored < LIVE {
                let id = sample_execution(stored, PER_JOB).id;
                let req = UpdateExecutionRequest::to_state(id, ExecutionState::Running, "live");
                store.update_execution_state(req).await.expect("live");
            }
            stored += 1;
        }
        store.wait_for_compactions().await.expect("settle");
        let gets = 20_000;
        let t = Instant::now();
        for i in spread(gets, size) {
            let id = ExecutionId::new(format!("exec-{i:010}")).expect("id");
            std::hint::black_box(store.get_execution(&id).await.expect("get"));
        }
        reads[0].1.push(rate(gets, t.elapsed()));
        let jobs = 5_000;
        let t = Instant::now();
        for j in spread(jobs, size / PER_JOB) {
            let job = JobId::new(format!("job-{j:08}")).expect("id");
            let found = store.get_executions(&job).await.expect("by job");
            assert_eq!(found.len() as u64, PER_JOB, "job {job} has its executions");
        }
        reads[1].1.push(rate(jobs, t.elapsed()));
        let lives = 2_000;
        let t = Instant::now();
        for _ in 0..lives {
            let live = store.get_live_executions().await.expect("live");
            assert_eq!(live.len() as u64, LIVE);
        }
        reads[2].1.push(rate(lives, t.elapsed()));
        let counts = 200_000;
        let t = Instant::now();
        for _ in 0..counts {
            std::hint::black_box(store.get_execution_count(ExecutionState::Created).await.expect("count"));
        }
        reads[3].1.push(rate(counts, t.elapsed()));
    }
    ExecutionStore::close(&store).await.expect("close");
    Sweep { sizes: sizes.to_vec(), reads }
}

fn flag_value(args: &[String], flag: &str) -> Option<u64> {
    let at = args.iter().position(|a| a == flag)?;
    let value = args.get(at + 1).and_then(|v| v.parse().ok());
    Some(value.unwrap_or_else(|| panic!("{flag} takes a whole number")))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    let rounds = flag_value(&args, "--rounds").unwrap_or(5).max(1) as usize;
    let n: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(50_000);
    let window = Duration::from_secs(1);
    let each = args.iter().any(|a| a == "--each");
    if let Some(at) = args.iter().position(|a| a == "--profile") {
        // One subject's point operations alone, for `perf record` (no ratios).
        let w = Workload::new(n);
        for r in 0..rounds {
            let rates = match args.get(at + 1).map(String::as_str) {
                Some("brine") => alone::<RocksExecutionStore>(&w).await,
                Some("raw") => alone::<RawStore>(&w).await,
                other => panic!("--profile takes brine or raw, not {other:?}"),
            };
            println!("round {r}: {} {rates:.0?}", OPS.join(", "));
        }
        return;
    }
    let point = point_ops(n, rounds, each).await;
    let sync = sync_rows(rounds, window).await;
    let sweep =
        if args.iter().any(|a| a == "--no-sweep") { None } else { Some(sweep(&[10_000, 100_000, 1_000_000]).await) };

    if json {
        let ops: Vec<String> = point.iter().map(|r| r.json("op")).collect();
        let syncs: Vec<String> = sync.iter().map(|r| r.json("writers")).collect();
        let sweep_json = sweep.as_ref().map_or("null".to_owned(), |s| {
            let reads: Vec<String> = s
                .reads
                .iter()
                .map(|(name, rates)| {
                    let per_s: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
                    format!(r#"{{"op":{name:?},"per_s":[{}],"growth":{:.3}}}"#, per_s.join(","), growth(rates))
                })
                .collect();
            let sizes: Vec<String> = s.sizes.iter().map(u64::to_string).collect();
            format!(r#"{{"sizes":[{}],"reads":[{}]}}"#, sizes.join(","), reads.join(","))
        });
        println!(
            r#"{{"n":{n},"rounds":{rounds},"buffered":[{}],"sync":[{}],"sweep":{sweep_json}}}"#,
            ops.join(","),
            syncs.join(",")
        );
        return;
    }
    println!(
        "Brine RocksDB backend vs raw RocksDB (same bytes, same families, Buffered), n = {n}, \
         median of {rounds} rounds (ratio range over the rounds)"
    );
    println!("{:<28} {:>12} {:>12} {:>8} {:>14}", "operation", "brine ops/s", "raw ops/s", "ratio", "range");
    for r in &point {
        print_row(&r.name, r);
    }
    println!(
        "\nSync durability: creates/s with concurrent writers (Brine's group commit) vs raw RocksDB's synced \
         writes of the same batches, {}s windows, median of {rounds}",
        window.as_secs()
    );
    println!("{:<28} {:>12} {:>12} {:>8} {:>14}", "writers", "brine/s", "raw/s", "ratio", "range");
    for r in &sync {
        print_row(&r.name, r);
    }
    if let Some(s) = &sweep {
        let sizes: Vec<String> = s.sizes.iter().map(|n| format!("{n} stored")).collect();
        println!("\nReads as the store grows (Brine, ops/s; growth = time per read at the largest size / smallest)");
        print!("{:<30}", "operation");
        for size in &sizes {
            print!(" {size:>16}");
        }
        println!(" {:>8}", "growth");
        for (name, rates) in &s.reads {
            print!("{name:<30}");
            for r in rates {
                print!(" {r:>16.0}");
            }
            println!(" {:>7.2}x", growth(rates));
        }
    }
}

fn print_row(name: &str, r: &Row) {
    let (lo, hi) = r.spread();
    println!(
        "{:<28} {:>12.0} {:>12.0} {:>7.2}x {:>14}",
        name,
        median(&r.brine),
        median(&r.raw),
        r.ratio(),
        format!("{lo:.2}-{hi:.2}x")
    );
}

/// How much slower a read is at the largest size than at the smallest.
fn growth(rates: &[f64]) -> f64 {
    match (rates.first(), rates.last()) {
        (Some(first), Some(last)) if *last > 0.0 => first / last,
        _ => 0.0,
    }
}
