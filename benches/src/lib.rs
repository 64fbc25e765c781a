//! Workloads shared by the criterion benches and the comparison harness, and the raw
//! RocksDB baseline: the same bytes written to the same column families with the same
//! options, without Brine's API, locking, validation or overlay. The baseline is the
//! limit Brine's RocksDB backend is measured against.

use std::path::Path;
use std::sync::Mutex;

use brine_rocksdb::codec::encode;
use brine_rocksdb::layout::{self, meta};
use brine_rocksdb::{db_options, family_options, Cf, StoreKind};
use brine_store::keys::prefix_end;
use brine_store::model::{
    ComputeState, Execution, ExecutionId, ExecutionState, Job, JobId, LogEntry, LogObject, Operation, Timestamp,
};
use rocksdb::{ColumnFamilyDescriptor, ReadOptions, WriteBatch, WriteOptions, DB};

/// Resets the peak RSS the kernel tracks for this process (`VmHWM`), so that the next
/// [`peak_rss_mib`] covers only what runs after it. Linux 4.0 and later; elsewhere
/// peak RSS is not reported.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The process's peak RSS in MiB since the last [`reset_peak_rss`] (or its start), if
/// the kernel reports it.
pub fn peak_rss_mib() -> Option<f64> {
    status_mib("VmHWM:")
}

/// The process's resident set in MiB now (`VmRSS`), if the kernel reports it.
pub fn rss_mib() -> Option<f64> {
    status_mib("VmRSS:")
}

fn status_mib(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Samples the resident set every 20 ms on a thread of its own, together with what
/// `breakdown` says at that moment, and keeps the sample taken at the largest resident
/// set: what memory held when the process was at its peak.
pub struct PeakSampler<T: Send + 'static> {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Option<(f64, T)>>,
}

impl<T: Send + 'static> PeakSampler<T> {
    /// Starts sampling.
    pub fn start(breakdown: impl Fn() -> Option<T> + Send + 'static) -> Self {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak: Option<(f64, T)> = None;
            while !stopped.load(Ordering::Relaxed) {
                if let Some(rss) = rss_mib() {
                    if peak.as_ref().is_none_or(|(p, _)| rss > *p) {
                        if let Some(b) = breakdown() {
                            peak = Some((rss, b));
                        }
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            peak
        });
        PeakSampler { stop, thread }
    }

    /// Stops sampling; the largest resident set seen (MiB) and the breakdown then.
    pub fn finish(self) -> Option<(f64, T)> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("the sampling thread")
    }
}

/// A [`PeakSampler`] of a store's [`brine_rocksdb::MemoryUsage`] as JSON, in MiB:
/// the resident set at its peak, and what RocksDB held then (`null` if not sampled).
pub fn memory_at_peak(peak: Option<(f64, brine_rocksdb::MemoryUsage)>) -> serde_json::Value {
    let Some((rss, m)) = peak else { return serde_json::Value::Null };
    let mib = |b: u64| (b as f64 / 1048576.0 * 10.0).round() / 10.0;
    serde_json::json!({
        "rss_mib": (rss * 10.0).round() / 10.0,
        "memtables_mib": mib(m.memtables),
        "table_readers_mib": mib(m.table_readers),
        "block_cache_mib": mib(m.block_cache),
        "block_cache_pinned_mib": mib(m.block_cache_pinned),
        "outside_rocksdb_mib": ((rss - m.total() as f64 / 1048576.0) * 10.0).round() / 10.0,
    })
}

/// One line saying what [`memory_at_peak`] found, if it found anything.
pub fn describe_memory_at_peak(at_peak: &serde_json::Value) -> Option<String> {
    let mib = |k: &str| at_peak[k].as_f64();
    Some(format!(
        "at the sampled peak of {:.0} MiB: memtables {:.0}, table readers {:.0}, block cache {:.0} ({:.0} pinned), outside RocksDB {:.0} MiB",
        mib("rss_mib")?,
        mib("memtables_mib")?,
        mib("table_readers_mib")?,
        mib("block_cache_mib")?,
        mib("block_cache_pinned_mib")?,
        mib("outside_rocksdb_mib")?
    ))
}

/// Settings of the two allocators in a Brine process (the system allocator, which
/// RocksDB's C++ uses, and mimalloc, which the Rust side uses) that bound the memory
/// they keep after it is freed: one system allocator arena, large blocks (memtable
/// arenas) mapped and unmapped rather than kept in the heap, and mimalloc returning
/// freed pages after 10 ms instead of 1 s. They are read at process start, so they are
/// set in the environment of the process they apply to (`brine`'s too).
pub const MEMORY_BOUNDED_ENV: [(&str, &str); 3] =
    [("MALLOC_ARENA_MAX", "1"), ("MALLOC_MMAP_THRESHOLD_", "131072"), ("MIMALLOC_PURGE_DELAY", "10")];

/// Runs this bench's own program again with `args`, and `env` added to its environment,
/// and returns what it printed: the measured part runs in a fresh process, as a
/// restarted node or a `brine` command does, so memory the allocator kept from building
/// the store (in the build's threads) does not count in its peak RSS. The measurement
/// prints one JSON line; this returns it.
pub fn in_fresh_process(args: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    let program = std::env::current_exe().expect("this program's path");
    let out =
        std::process::Command::new(program).args(args).envs(env.iter().copied()).output().expect("run the measurement");
    assert!(out.status.success(), "the measurement failed: {}", String::from_utf8_lossy(&out.stderr));
    let line = String::from_utf8(out.stdout).expect("utf-8 output");
    serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("the measurement's JSON line {line:?}: {e}"))
}

/// The `i`-th sample execution, of job `i / per_job`.
pub fn sample_execution(i: u64, per_job: u64) -> Execution {
    let mut job = Job::new(JobId::new(format!("job-{:08}", i / per_job)).expect("id"), format!("job-{}", i / per_job));
    job.config = r#"{"image":"ubuntu:24.04","cmd":["python","train.py","--epochs","10"]}"#.into();
    job.labels.insert("team".into(), "ml".into());
    let mut e = Execution::new(ExecutionId::new(format!("exec-{i:010}")).expect("id"), &job);
    e.name = format!("execution {i}");
    e
}

/// Where a baseline puts the bytes of one operation: a RocksDB write batch, a redb write
/// transaction's tables, a fjall batch. The same functions ([`write_create`],
/// [`write_update`]) fill each, so every baseline writes exactly the same keys and values.
pub trait Sink {
    /// Puts `value` at `key` of family `cf`.
    fn put(&mut self, cf: Cf, key: &[u8], value: &[u8]);
    /// Deletes `key` of family `cf`.
    fn delete(&mut self, cf: Cf, key: &[u8]);
}

/// The event-log head and per-state counters a baseline keeps, as Brine does.
#[derive(Default)]
pub struct Seqs {
    log_head: u64,
    counts: [u64; 9],
}

fn log_entry(sink: &mut impl Sink, seqs: &mut Seqs, operation: Operation, object: LogObject) {
    seqs.log_head += 1;
    let entry = LogEntry {
        seq: seqs.log_head,
        operation,
        object_type: object.object_type(),
        object,
        timestamp: Timestamp::now(),
    };
    sink.put(Cf::Events, &layout::log_entry(seqs.log_head), &encode(&entry));
    sink.put(Cf::Meta, meta::LOG_HEAD, &encode(&seqs.log_head));
}

/// The writes of a create: record, two index entries, counter, log entry, log head.
pub fn write_create(sink: &mut impl Sink, seqs: &Mutex<Seqs>, mut e: Execution) {
    let now = Timestamp::now();
    e.revision = 1;
    e.create_time = now;
    e.modify_time = now;
    let code = e.state().code();
    sink.put(Cf::Executions, &layout::execution(&e.id), &encode(&e));
    sink.put(Cf::IdxExecutionsByJobId, &layout::execution_by_job(&e.job_id, &e.id), &[]);
    sink.put(Cf::IdxExecutionsByState, &layout::execution_by_state(e.state(), &e.id), &[]);
    let mut seqs = seqs.lock().expect("baseline seqs");
    seqs.counts[usize::from(code)] += 1;
    let count = seqs.counts[usize::from(code)];
    sink.put(Cf::Meta, &meta::count(code), &encode(&count));
    let object = LogObject::Execution { current: Some(Box::new(e)), previous: None, events: vec![] };
    log_entry(sink, &mut seqs, Operation::Create, object);
}

/// The writes moving `before` to `state`: record, index move, counters, log entry.
pub fn write_update(sink: &mut impl Sink, seqs: &Mutex<Seqs>, before: Execution, state: ExecutionState) {
    let mut next = before.clone();
    next.compute_state = ComputeState::new(state, "moved");
    next.revision += 1;
    next.modify_time = Timestamp::now();
    let (old, new) = (before.state().code(), state.code());
    let id = &before.id;
    sink.put(Cf::Executions, &layout::execution(id), &encode(&next));
    sink.delete(Cf::IdxExecutionsByState, &layout::execution_by_state(before.state(), id));
    sink.put(Cf::IdxExecutionsByState, &layout::execution_by_state(state, id), &[]);
    let mut seqs = seqs.lock().expect("baseline seqs");
    seqs.counts[usize::from(old)] -= 1;
    seqs.counts[usize::from(new)] += 1;
    let (count_old, count_new) = (seqs.counts[usize::from(old)], seqs.counts[usize::from(new)]);
    sink.put(Cf::Meta, &meta::count(old), &encode(&count_old));
    sink.put(Cf::Meta, &meta::count(new), &encode(&count_new));
    let object =
        LogObject::Execution { current: Some(Box::new(next)), previous: Some(Box::new(before)), events: vec![] };
    log_entry(sink, &mut seqs, Operation::Update, object);
}

/// Decodes an execution record a baseline read.
pub fn decode_execution(key: &[u8], bytes: &[u8]) -> Execution {
    brine_rocksdb::codec::decode(Cf::Executions, key, bytes).expect("decodes")
}

/// The execution id at the end of a job-index key.
pub fn indexed_id(key: &[u8], prefix: &[u8]) -> ExecutionId {
    let id = std::str::from_utf8(layout::after_prefix(key, prefix)).expect("utf-8");
    ExecutionId::new(id).expect("an execution id")
}

/// Raw RocksDB writing what Brine writes for the same operations: one `WriteBatch` per
/// operation, no reads before a create, no locks beyond the one that numbers the log.
/// Safe to share between threads; with `sync` every write is a synced write, and
/// concurrent synced writers share fsyncs through RocksDB's own write groups.
pub struct RawStore {
    db: DB,
    seqs: Mutex<Seqs>,
    sync: bool,
}

/// A RocksDB write batch as a [`Sink`].
struct Batch<'d> {
    db: &'d DB,
    batch: WriteBatch,
}

impl Sink for Batch<'_> {
    fn put(&mut self, cf: Cf, key: &[u8], value: &[u8]) {
        self.batch.put_cf(self.db.cf_handle(cf.name()).expect("family exists"), key, value);
    }

    fn delete(&mut self, cf: Cf, key: &[u8]) {
        self.batch.delete_cf(self.db.cf_handle(cf.name()).expect("family exists"), key);
    }
}

impl RawStore {
    /// Opens a raw store with the compute store's families at `path`.
    pub fn open(path: &Path, sync: bool) -> RawStore {
        let names = StoreKind::Compute
            .families()
            .iter()
            .map(|cf| ColumnFamilyDescriptor::new(cf.name(), family_options(cf.name())));
        let db = DB::open_cf_descriptors(&db_options(), path, names).expect("open raw rocksdb");
        RawStore { db, seqs: Mutex::new(Seqs::default()), sync }
    }

    fn cf(&self, cf: Cf) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(cf.name()).expect("family exists")
    }

    fn write(&self, batch: Batch<'_>) {
        let mut wo = WriteOptions::default();
        wo.set_sync(self.sync);
        self.db.write_opt(batch.batch, &wo).expect("raw write");
    }

    /// Waits until RocksDB's background flushes and compactions are done.
    pub fn wait_for_compactions(&self) {
        self.db.wait_for_compact(&rocksdb::WaitForCompactOptions::default()).expect("wait for compactions");
    }

    /// Creates an execution: record, two index entries, counter, log entry, log head.
    pub fn create(&self, e: Execution) {
        let mut batch = Batch { db: &self.db, batch: WriteBatch::default() };
        write_create(&mut batch, &self.seqs, e);
        self.write(batch);
    }

    /// Moves an execution to `state`: read, decode, record, index move, counters, log.
    pub fn update(&self, id: &ExecutionId, state: ExecutionState) {
        let before = self.get(id);
        let mut batch = Batch { db: &self.db, batch: WriteBatch::default() };
        write_update(&mut batch, &self.seqs, before, state);
        self.write(batch);
    }

    /// Reads and decodes one execution.
    pub fn get(&self, id: &ExecutionId) -> Execution {
        let key = layout::execution(id);
        let raw = self.db.get_pinned_cf(self.cf(Cf::Executions), &key).expect("raw read").expect("present");
        decode_execution(&key, &raw)
    }

    /// Reads a job's executions through the job index, in one batched lookup as Brine does.
    pub fn get_by_job(&self, job: &JobId) -> Vec<Execution> {
        let prefix = layout::owned_by(job);
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(prefix_end(&prefix).expect("bounded"));
        let mut it = self.db.raw_iterator_cf_opt(self.cf(Cf::IdxExecutionsByJobId), ro);
        it.seek(&prefix);
        let mut keys = Vec::new();
        while let Some(k) = it.key() {
            keys.push(layout::execution(&indexed_id(k, &prefix)));
            it.next();
        }
        let cf = self.cf(Cf::Executions);
        let out = keys
            .iter()
            .zip(self.db.batched_multi_get_cf(cf, &keys, false))
            .map(|(key, raw)| decode_execution(key, &raw.expect("raw read").expect("present")))
            .collect();
        brine_store::rules::newest_first(out)
    }
}
