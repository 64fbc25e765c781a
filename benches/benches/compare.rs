//! The comparison harness: Brine's RocksDB backend beside raw RocksDB writing the same
//! bytes, `Sync` creates beside raw synced writes at the same concurrency, and index
//! reads as the store grows, printed as medians and ratios measured in one run; with
//! `--peers`, also beside bbolt holding Bacalhau's layout, redb and fjall (`peers`).
//!
//! `cargo bench -p brine-bench --bench compare -- [N] [--rounds R] [--peers] [--no-sweep]
//! [--each] [--json]` (or `cargo xtask bench`, which builds the bbolt program for
//! `--peers`); `--profile SUBJECT` runs one subject's point operations alone, for `perf
//! record`. A bench target rather than a binary so that it builds with the same
//! dependency graph as the criterion benches and shares their compiled RocksDB.
//!
//! Fairness: every round opens a fresh store for each subject. Within a phase the
//! subjects take turns every 500 operations, who goes first rotating, so a slow spell of
//! the machine (or the background flush the stores' writes cause) falls on all alike;
//! before every phase every store's background flushes and compactions are waited for,
//! and all are closed and removed before the next round, so one round's compaction
//! never lands on the next. The workload's records are built before the clock starts.
//! Each row reports the median over the rounds and the spread of Brine's per-round
//! ratio to raw RocksDB; `--each` prints every round's rates too. `Sync` rows rotate
//! which subject runs first, each on a fresh store.

mod peers;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use brine_bench::{sample_execution, RawStore};
use brine_rocksdb::{Durability, OpenOptions, RocksExecutionStore};
use brine_store::model::{Execution, ExecutionId, ExecutionState, JobId};
use brine_store::{ExecutionStore, UpdateExecutionRequest};
use peers::{Bbolt, FjallStore, RedbStore};

// Every subject in this process runs on the allocator the `brine` command uses.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PER_JOB: u64 = 10;

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

/// The stores the harness compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Brine,
    Raw,
    Bbolt,
    Redb,
    Fjall,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Brine => "brine",
            Kind::Raw => "raw",
            Kind::Bbolt => "bbolt",
            Kind::Redb => "redb",
            Kind::Fjall => "fjall",
        }
    }

    fn parse(name: &str) -> Option<Kind> {
        [Kind::Brine, Kind::Raw, Kind::Bbolt, Kind::Redb, Kind::Fjall].into_iter().find(|k| k.name() == name)
    }
}

fn open_brine(dir: &Path, durability: Durability) -> RocksExecutionStore {
    let options = OpenOptions { durability, ..OpenOptions::default() };
    RocksExecutionStore::open(dir.join("brine.db"), &options).expect("open brine")
}

/// One open store of the comparison: in this process, or the bbolt program.
enum Subject {
    Local(Local),
    Bbolt(Bbolt),
}

/// The stores that run in this process, one operation per call.
enum Local {
    Brine(RocksExecutionStore),
    Raw(RawStore),
    Redb(RedbStore),
    Fjall(FjallStore),
}

impl Subject {
    fn open(kind: Kind, dir: &Path, sync: bool) -> Subject {
        let durability = if sync { Durability::Sync } else { Durability::Buffered };
        Subject::Local(match kind {
            Kind::Brine => Local::Brine(open_brine(dir, durability)),
            Kind::Raw => Local::Raw(RawStore::open(&dir.join("raw.db"), sync)),
            Kind::Redb => Local::Redb(RedbStore::open(dir, sync)),
            Kind::Fjall => Local::Fjall(FjallStore::open(dir, sync)),
            Kind::Bbolt => return Subject::Bbolt(Bbolt::open(dir, sync)),
        })
    }

    async fn settle(&self) {
        match self {
            Subject::Local(Local::Brine(s)) => s.wait_for_compactions().await.expect("wait for compactions"),
            Subject::Local(Local::Raw(s)) => s.wait_for_compactions(),
            Subject::Local(Local::Fjall(s)) => s.settle(),
            // A B+tree has no background work.
            Subject::Local(Local::Redb(_)) | Subject::Bbolt(_) => {}
        }
    }

    async fn close(self) {
        match self {
            Subject::Local(Local::Brine(s)) => ExecutionStore::close(&s).await.expect("close"),
            Subject::Bbolt(s) => s.close(),
            Subject::Local(_) => {}
        }
    }
}

impl Local {
    async fn create(&self, e: Execution) {
        match self {
            Local::Brine(s) => drop(s.create_execution(e, vec![]).await.expect("create")),
            Local::Raw(s) => s.create(e),
            Local::Redb(s) => s.create(e),
            Local::Fjall(s) => s.create(e),
        }
    }

    async fn update(&self, id: &ExecutionId) {
        let to = ExecutionState::BidAccepted;
        match self {
            Local::Brine(s) => {
                let req = UpdateExecutionRequest::to_state(id.clone(), to, "moved");
                drop(s.update_execution_state(req).await.expect("update"));
            }
            Local::Raw(s) => s.update(id, to),
            Local::Redb(s) => s.update(id, to),
            Local::Fjall(s) => s.update(id, to),
        }
    }

    async fn get(&self, id: &ExecutionId) -> Execution {
        match self {
            Local::Brine(s) => s.get_execution(id).await.expect("get"),
            Local::Raw(s) => s.get(id),
            Local::Redb(s) => s.get(id),
            Local::Fjall(s) => s.get(id),
        }
    }

    async fn get_by_job(&self, job: &JobId) -> Vec<Execution> {
        match self {
            Local::Brine(s) => s.get_executions(job).await.expect("by job"),
            Local::Raw(s) => s.get_by_job(job),
            Local::Redb(s) => s.get_by_job(job),
            Local::Fjall(s) => s.get_by_job(job),
        }
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
    async fn run(
        self,
        s: &mut Subject,
        w: &Workload,
        range: std::ops::Range<usize>,
        records: Vec<Execution>,
    ) -> Duration {
        let s = match s {
            Subject::Local(s) => s,
            Subject::Bbolt(peer) => {
                // The program builds the same records itself and times the chunk.
                let op = ["create", "update", "get", "byjob"][self as usize];
                return peer.timed(op, range.start, range.end);
            }
        };
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

/// One round of the four point operations on a fresh store of each subject: they take
/// turns every [`CHUNK`] operations (who goes first rotating), so that what slows the
/// machine for a while slows all alike; every store settles before each phase. Returns
/// each subject's ops/s per phase.
async fn round(kinds: &[Kind], w: &Workload, r: usize) -> Vec<[f64; 4]> {
    let dirs: Vec<tempfile::TempDir> = kinds.iter().map(|_| tempfile::tempdir().expect("temp dir")).collect();
    let mut subjects: Vec<Subject> = kinds.iter().zip(&dirs).map(|(k, d)| Subject::open(*k, d.path(), false)).collect();
    let mut rates = vec![[0.0; 4]; kinds.len()];
    for (p, phase) in PHASES.into_iter().enumerate() {
        for s in &subjects {
            s.settle().await;
        }
        let count = phase.count(w);
        let mut times = vec![Duration::ZERO; kinds.len()];
        for (c, start) in (0..count).step_by(CHUNK).enumerate() {
            let range = start..(start + CHUNK).min(count);
            for turn in 0..kinds.len() {
                let at = (c + r + turn) % kinds.len();
                let records = match phase {
                    Phase::Create if matches!(subjects[at], Subject::Local(_)) => w.executions[range.clone()].to_vec(),
                    _ => Vec::new(),
                };
                times[at] += phase.run(&mut subjects[at], w, range.clone(), records).await;
            }
        }
        for (at, time) in times.into_iter().enumerate() {
            rates[at][p] = rate(count as u64, time);
        }
    }
    for s in subjects {
        s.close().await;
    }
    rates
}

/// A subject's point operations alone on a fresh store (for `--profile`).
async fn alone(kind: Kind, w: &Workload) -> [f64; 4] {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut s = Subject::open(kind, dir.path(), false);
    let mut rates = [0.0; 4];
    for (p, phase) in PHASES.into_iter().enumerate() {
        s.settle().await;
        let count = phase.count(w);
        let records = match phase {
            Phase::Create => w.executions.clone(),
            _ => Vec::new(),
        };
        rates[p] = rate(count as u64, phase.run(&mut s, w, 0..count, records).await);
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

/// Every subject's rate in each round (`per[subject][round]`); Brine is first and raw
/// RocksDB second.
struct Row {
    name: String,
    per: Vec<Vec<f64>>,
}

impl Row {
    fn new(name: impl Into<String>, subjects: usize) -> Row {
        Row { name: name.into(), per: vec![Vec::new(); subjects] }
    }

    /// Brine's ratio to raw RocksDB in each round.
    fn ratios(&self) -> Vec<f64> {
        self.per[0].iter().zip(&self.per[1]).map(|(b, r)| b / r).collect()
    }

    fn ratio(&self) -> f64 {
        median(&self.ratios())
    }

    fn spread(&self) -> (f64, f64) {
        let r = self.ratios();
        (r.iter().copied().fold(f64::INFINITY, f64::min), r.iter().copied().fold(0.0, f64::max))
    }

    fn json(&self, key: &str, kinds: &[Kind]) -> String {
        let (lo, hi) = self.spread();
        let per: Vec<String> =
            kinds.iter().zip(&self.per).map(|(k, rates)| format!(r#""{}":{:.0}"#, k.name(), median(rates))).collect();
        format!(
            r#"{{"{key}":{},"per_s":{{{}}},"ratio":{:.3},"ratio_min":{lo:.3},"ratio_max":{hi:.3}}}"#,
            if key == "op" { format!("{:?}", self.name) } else { self.name.clone() },
            per.join(","),
            self.ratio(),
        )
    }
}

async fn point_ops(kinds: &[Kind], n: u64, rounds: usize, each: bool) -> Vec<Row> {
    let w = Workload::new(n);
    let mut rows: Vec<Row> = OPS.iter().map(|name| Row::new(*name, kinds.len())).collect();
    for r in 0..rounds {
        let rates = round(kinds, &w, r).await;
        for (kind, rates) in kinds.iter().zip(&rates) {
            if each {
                eprintln!("round {r}: {:<6} {rates:.0?}", kind.name());
            }
            let at = kinds.iter().position(|k| k == kind).unwrap_or(0);
            for (i, row) in rows.iter_mut().enumerate() {
                row.per[at].push(rates[i]);
            }
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

/// Creates per second from `writers` threads on a fresh synced store of an in-process
/// baseline: raw RocksDB writes the same batches with `sync = true` (RocksDB groups
/// concurrent synced writes into one fsync); redb commits `Immediate`; fjall persists
/// each batch.
async fn sync_threads(kind: Kind, writers: usize, window: Duration) -> f64 {
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().expect("temp dir");
        let Subject::Local(store) = Subject::open(kind, dir.path(), true) else {
            unreachable!("{kind:?} is an in-process store")
        };
        let store = Arc::new(store);
        let total = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let deadline = start + window;
        let threads: Vec<_> = (0..writers)
            .map(|w| {
                let (store, total) = (Arc::clone(&store), Arc::clone(&total));
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        let e = sample_execution((w as u64) * 1_000_000_000 + n, PER_JOB);
                        match &*store {
                            Local::Raw(s) => s.create(e),
                            Local::Redb(s) => s.create(e),
                            Local::Fjall(s) => s.create(e),
                            Local::Brine(_) => unreachable!("Brine's writers are tasks"),
                        }
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
    .expect("synced writers")
}

/// Creates per second with `writers` concurrent writers on a fresh synced store of `kind`.
async fn sync_rate(kind: Kind, writers: usize, window: Duration) -> f64 {
    match kind {
        Kind::Brine => sync_brine(writers, window).await,
        Kind::Bbolt => {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut peer = Bbolt::open(dir.path(), true);
            let r = peer.writers(writers, window);
            peer.close();
            r
        }
        _ => sync_threads(kind, writers, window).await,
    }
}

async fn sync_rows(kinds: &[Kind], rounds: usize, window: Duration) -> Vec<Row> {
    let mut rows = Vec::new();
    for writers in [1usize, 4, 16, 64] {
        let mut row = Row::new(writers.to_string(), kinds.len());
        for r in 0..rounds {
            for turn in 0..kinds.len() {
                let at = (r + turn) % kinds.len();
                row.per[at].push(sync_rate(kinds[at], writers, window).await);
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
        let name = args.get(at + 1).map(String::as_str).unwrap_or_default();
        let kind = Kind::parse(name).unwrap_or_else(|| panic!("--profile takes brine, raw, bbolt, redb or fjall"));
        let w = Workload::new(n);
        for r in 0..rounds {
            let rates = alone(kind, &w).await;
            println!("round {r}: {} {rates:.0?}", OPS.join(", "));
        }
        return;
    }
    let mut kinds = vec![Kind::Brine, Kind::Raw];
    if args.iter().any(|a| a == "--peers") {
        kinds.extend([Kind::Bbolt, Kind::Redb, Kind::Fjall]);
    }
    let point = point_ops(&kinds, n, rounds, each).await;
    let sync = sync_rows(&kinds, rounds, window).await;
    let sweep =
        if args.iter().any(|a| a == "--no-sweep") { None } else { Some(sweep(&[10_000, 100_000, 1_000_000]).await) };

    if json {
        let ops: Vec<String> = point.iter().map(|r| r.json("op", &kinds)).collect();
        let syncs: Vec<String> = sync.iter().map(|r| r.json("writers", &kinds)).collect();
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
        "Point operations, Buffered (no fsync per commit), n = {n}, ops/s: median of {rounds} rounds; \
         ratio = Brine / raw RocksDB writing the same bytes to the same families (range over the rounds)"
    );
    print_header("operation", &kinds);
    for r in &point {
        print_row(r);
    }
    println!(
        "\nSync durability (every acknowledged create on disk): creates/s with concurrent writers, \
         {}s windows, median of {rounds} rounds",
        window.as_secs()
    );
    print_header("writers", &kinds);
    for r in &sync {
        print_row(r);
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

fn print_header(first: &str, kinds: &[Kind]) {
    print!("{first:<26}");
    for k in kinds {
        print!(" {:>10}", k.name());
    }
    println!(" {:>10} {:>12}", "brine/raw", "range");
}

fn print_row(r: &Row) {
    let (lo, hi) = r.spread();
    print!("{:<26}", r.name);
    for rates in &r.per {
        print!(" {:>10.0}", median(rates));
    }
    println!(" {:>9.2}x {:>12}", r.ratio(), format!("{lo:.2}-{hi:.2}x"));
}

/// How much slower a read is at the largest size than at the smallest.
fn growth(rates: &[f64]) -> f64 {
    match (rates.first(), rates.last()) {
        (Some(first), Some(last)) if *last > 0.0 => first / last,
        _ => 0.0,
    }
}
