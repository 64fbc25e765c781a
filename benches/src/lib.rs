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
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
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

/// Raw RocksDB writing what Brine writes for the same operations: one `WriteBatch` per
/// operation, no reads before a create, no locks beyond the one that numbers the log.
/// Safe to share between threads; with `sync` every write is a synced write, and
/// concurrent synced writers share fsyncs through RocksDB's own write groups.
pub struct RawStore {
    db: DB,
    seqs: Mutex<RawSeqs>,
    sync: bool,
}

#[derive(Default)]
struct RawSeqs {
    log_head: u64,
    counts: [u64; 9],
}

impl RawStore {
    /// Opens a raw store with the compute store's families at `path`.
    pub fn open(path: &Path, sync: bool) -> RawStore {
        let names = StoreKind::Compute
            .families()
            .iter()
            .map(|cf| ColumnFamilyDescriptor::new(cf.name(), family_options(cf.name())));
        let db = DB::open_cf_descriptors(&db_options(), path, names).expect("open raw rocksdb");
        RawStore { db, seqs: Mutex::new(RawSeqs::default()), sync }
    }

    fn cf(&self, cf: Cf) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(cf.name()).expect("family exists")
    }

    fn write(&self, batch: WriteBatch) {
        let mut wo = WriteOptions::default();
        wo.set_sync(self.sync);
        self.db.write_opt(batch, &wo).expect("raw write");
    }

    /// Waits until RocksDB's background flushes and compactions are done.
    pub fn wait_for_compactions(&self) {
        self.db.wait_for_compact(&rocksdb::WaitForCompactOptions::default()).expect("wait for compactions");
    }

    fn log(&self, seqs: &mut RawSeqs, batch: &mut WriteBatch, operation: Operation, object: LogObject) {
        seqs.log_head += 1;
        let entry = LogEntry {
            seq: seqs.log_head,
            operation,
            object_type: object.object_type(),
            object,
            timestamp: Timestamp::now(),
        };
        batch.put_cf(self.cf(Cf::Events), layout::log_entry(seqs.log_head), encode(&entry));
        batch.put_cf(self.cf(Cf::Meta), meta::LOG_HEAD, encode(&seqs.log_head));
    }

    /// Creates an execution: record, two index entries, counter, log entry, log head.
    pub fn create(&self, mut e: Execution) {
        let now = Timestamp::now();
        e.revision = 1;
        e.create_time = now;
        e.modify_time = now;
        let code = e.state().code();
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(Cf::Executions), layout::execution(&e.id), encode(&e));
        batch.put_cf(self.cf(Cf::IdxExecutionsByJobId), layout::execution_by_job(&e.job_id, &e.id), []);
        batch.put_cf(self.cf(Cf::IdxExecutionsByState), layout::execution_by_state(e.state(), &e.id), []);
        {
            let mut seqs = self.seqs.lock().expect("raw seqs");
            seqs.counts[usize::from(code)] += 1;
            batch.put_cf(self.cf(Cf::Meta), meta::count(code), encode(&seqs.counts[usize::from(code)]));
            let object = LogObject::Execution { current: Some(Box::new(e)), previous: None, events: vec![] };
            self.log(&mut seqs, &mut batch, Operation::Create, object);
        }
        self.write(batch);
    }

    /// Moves an execution to `state`: read, decode, record, index move, counters, log.
    pub fn update(&self, id: &ExecutionId, state: ExecutionState) {
        let before = self.get(id);
        let mut next = before.clone();
        next.compute_state = ComputeState::new(state, "moved");
        next.revision += 1;
        next.modify_time = Timestamp::now();
        let (old, new) = (before.state().code(), state.code());
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(Cf::Executions), layout::execution(id), encode(&next));
        batch.delete_cf(self.cf(Cf::IdxExecutionsByState), layout::execution_by_state(before.state(), id));
        batch.put_cf(self.cf(Cf::IdxExecutionsByState), layout::execution_by_state(state, id), []);
        {
            let mut seqs = self.seqs.lock().expect("raw seqs");
            seqs.counts[usize::from(old)] -= 1;
            seqs.counts[usize::from(new)] += 1;
            batch.put_cf(self.cf(Cf::Meta), meta::count(old), encode(&seqs.counts[usize::from(old)]));
            batch.put_cf(self.cf(Cf::Meta), meta::count(new), encode(&seqs.counts[usize::from(new)]));
            let object = LogObject::Execution {
                current: Some(Box::new(next)),
                previous: Some(Box::new(before)),
                events: vec![],
            };
            self.log(&mut seqs, &mut batch, Operation::Update, object);
        }
        self.write(batch);
    }
    /// Reads and decodes one execution.
    pub fn get(&self, id: &ExecutionId) -> Execution {
        let key = layout::execution(id);
        let raw = self.db.get_pinned_cf(self.cf(Cf::Executions), &key).expect("raw read").expect("present");
        brine_rocksdb::codec::decode(Cf::Executions, &key, &raw).expect("decodes")
    }

    /// Reads a job's executions through the job index.
    pub fn get_by_job(&self, job: &JobId) -> Vec<Execution> {
        let prefix = layout::owned_by(job);
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(prefix_end(&prefix).expect("bounded"));
        let mut it = self.db.raw_iterator_cf_opt(self.cf(Cf::IdxExecutionsByJobId), ro);
        it.seek(&prefix);
        let mut out = Vec::new();
        while let Some(k) = it.key() {
            let id = std::str::from_utf8(layout::after_prefix(k, &prefix)).expect("utf-8");
            let id = ExecutionId::new(id).expect("an execution id");
            out.push(self.get(&id));
            it.next();
        }
        brine_store::rules::newest_first(out)
    }
}
