//! The peers of the comparison harness (`--peers`): the stores a downstream project
//! would consider instead of Brine, each doing the harness's operations.
//!
//! - redb and fjall, the two pure-Rust embedded stores: the same bytes as the raw
//!   RocksDB baseline (`brine_bench::write_create` / `write_update`) in five tables
//!   (keyspaces), one transaction (write batch) per operation;
//! - bbolt with Bacalhau's own layout (JSON values, a sub-bucket per job, per state and
//!   per execution's events, the log entry in the same transaction), a Go program in
//!   `benches/peers/bbolt` that `cargo xtask bench --peers` builds against Debian's
//!   packaged bbolt and names in `BRINE_BENCH_BBOLT`; the harness drives it over a pipe
//!   and it times each chunk itself.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use brine_bench::{decode_execution, indexed_id, write_create, write_update, Seqs, Sink};
use brine_rocksdb::layout;
use brine_rocksdb::Cf;
use brine_store::keys::prefix_end;
use brine_store::model::{Execution, ExecutionId, ExecutionState, JobId};
use redb::{ReadableDatabase, ReadableTable};

/// The five families a create or update writes, in table order.
const TABLES: [Cf; 5] = [Cf::Executions, Cf::IdxExecutionsByJobId, Cf::IdxExecutionsByState, Cf::Events, Cf::Meta];

fn table(cf: Cf) -> usize {
    TABLES.iter().position(|t| *t == cf).expect("one of the five tables")
}

type Bytes = redb::TableDefinition<'static, &'static [u8], &'static [u8]>;

const REDB_TABLES: [Bytes; 5] = [
    redb::TableDefinition::new("executions"),
    redb::TableDefinition::new("idx_executions_by_job_id"),
    redb::TableDefinition::new("idx_executions_by_state"),
    redb::TableDefinition::new("events"),
    redb::TableDefinition::new("meta"),
];

/// redb: one write transaction per operation over the five tables; `Buffered` is
/// redb's `Durability::None` (its only mode without an fsync: such a commit is made
/// durable by the next `Immediate` one), `Sync` is `Durability::Immediate`.
pub struct RedbStore {
    db: redb::Database,
    seqs: Mutex<Seqs>,
    durability: redb::Durability,
}

/// A redb write transaction's five tables as a [`Sink`].
struct RedbSink<'t> {
    tables: Vec<redb::Table<'t, &'static [u8], &'static [u8]>>,
}

impl Sink for RedbSink<'_> {
    fn put(&mut self, cf: Cf, key: &[u8], value: &[u8]) {
        self.tables[table(cf)].insert(key, value).expect("redb insert");
    }

    fn delete(&mut self, cf: Cf, key: &[u8]) {
        self.tables[table(cf)].remove(key).expect("redb remove");
    }
}

impl RedbStore {
    pub fn open(dir: &Path, sync: bool) -> RedbStore {
        let db = redb::Database::create(dir.join("peer.redb")).expect("create redb");
        let durability = if sync { redb::Durability::Immediate } else { redb::Durability::None };
        let store = RedbStore { db, seqs: Mutex::new(Seqs::default()), durability };
        store.write(|_| {});
        store
    }

    fn write(&self, f: impl FnOnce(&mut RedbSink<'_>)) {
        let mut txn = self.db.begin_write().expect("redb write");
        txn.set_durability(self.durability).expect("redb durability");
        {
            let tables = REDB_TABLES.iter().map(|t| txn.open_table(*t).expect("redb table")).collect();
            f(&mut RedbSink { tables });
        }
        txn.commit().expect("redb commit");
    }

    pub fn create(&self, e: Execution) {
        self.write(|sink| write_create(sink, &self.seqs, e));
    }

    pub fn update(&self, id: &ExecutionId, state: ExecutionState) {
        self.write(|sink| {
            let key = layout::execution(id);
            let before = {
                let value = sink.tables[table(Cf::Executions)].get(key.as_slice()).expect("redb read");
                decode_execution(&key, value.expect("present").value())
            };
            write_update(sink, &self.seqs, before, state);
        });
    }

    pub fn get(&self, id: &ExecutionId) -> Execution {
        let txn = self.db.begin_read().expect("redb read");
        let executions = txn.open_table(REDB_TABLES[table(Cf::Executions)]).expect("redb table");
        let key = layout::execution(id);
        let value = executions.get(key.as_slice()).expect("redb get").expect("present");
        decode_execution(&key, value.value())
    }

    pub fn get_by_job(&self, job: &JobId) -> Vec<Execution> {
        let txn = self.db.begin_read().expect("redb read");
        let index = txn.open_table(REDB_TABLES[table(Cf::IdxExecutionsByJobId)]).expect("redb table");
        let executions = txn.open_table(REDB_TABLES[table(Cf::Executions)]).expect("redb table");
        let prefix = layout::owned_by(job);
        let end = prefix_end(&prefix).expect("bounded");
        let mut out = Vec::new();
        for item in index.range(prefix.as_slice()..end.as_slice()).expect("redb range") {
            let (k, _) = item.expect("redb entry");
            let key = layout::execution(&indexed_id(k.value(), &prefix));
            let value = executions.get(key.as_slice()).expect("redb get").expect("present");
            out.push(decode_execution(&key, value.value()));
        }
        brine_store::rules::newest_first(out)
    }
}

/// fjall: one write batch per operation over five keyspaces (atomic across them);
/// `Buffered` is fjall's default (written to the OS, not synced), `Sync` persists each
/// batch with `fdatasync` (`PersistMode::SyncData`, as RocksDB syncs its WAL).
pub struct FjallStore {
    db: fjall::Database,
    keyspaces: Vec<fjall::Keyspace>,
    seqs: Mutex<Seqs>,
    durability: Option<fjall::PersistMode>,
}

/// A fjall write batch over the five keyspaces as a [`Sink`].
struct FjallSink<'k> {
    keyspaces: &'k [fjall::Keyspace],
    batch: fjall::OwnedWriteBatch,
}

impl Sink for FjallSink<'_> {
    fn put(&mut self, cf: Cf, key: &[u8], value: &[u8]) {
        self.batch.insert(&self.keyspaces[table(cf)], key, value);
    }

    fn delete(&mut self, cf: Cf, key: &[u8]) {
        self.batch.remove(&self.keyspaces[table(cf)], key);
    }
}

impl FjallStore {
    pub fn open(dir: &Path, sync: bool) -> FjallStore {
        let db = fjall::Database::builder(dir.join("peer.fjall")).open().expect("open fjall");
        let keyspaces = TABLES
            .iter()
            .map(|cf| db.keyspace(cf.name(), fjall::KeyspaceCreateOptions::default).expect("fjall keyspace"))
            .collect();
        let durability = sync.then_some(fjall::PersistMode::SyncData);
        FjallStore { db, keyspaces, seqs: Mutex::new(Seqs::default()), durability }
    }

    fn write(&self, f: impl FnOnce(&mut FjallSink<'_>)) {
        let mut sink = FjallSink { keyspaces: &self.keyspaces, batch: self.db.batch().durability(self.durability) };
        f(&mut sink);
        sink.batch.commit().expect("fjall commit");
    }

    pub fn create(&self, e: Execution) {
        self.write(|sink| write_create(sink, &self.seqs, e));
    }

    pub fn update(&self, id: &ExecutionId, state: ExecutionState) {
        let before = self.get(id);
        self.write(|sink| write_update(sink, &self.seqs, before, state));
    }

    pub fn get(&self, id: &ExecutionId) -> Execution {
        let key = layout::execution(id);
        let value = self.keyspaces[table(Cf::Executions)].get(&key).expect("fjall get").expect("present");
        decode_execution(&key, &value)
    }

    pub fn get_by_job(&self, job: &JobId) -> Vec<Execution> {
        let prefix = layout::owned_by(job);
        let mut out = Vec::new();
        for guard in self.keyspaces[table(Cf::IdxExecutionsByJobId)].prefix(&prefix) {
            let key = guard.key().expect("fjall key");
            out.push(self.get(&indexed_id(&key, &prefix)));
        }
        brine_store::rules::newest_first(out)
    }

    /// Waits until fjall has no flush outstanding and no compaction running (it reports
    /// both but has no call that waits for them).
    pub fn settle(&self) {
        while self.db.outstanding_flushes() > 0 || self.db.active_compactions() > 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The bbolt program, driven over its stdin and stdout.
pub struct Bbolt {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

/// The variable naming the built bbolt program.
pub const BBOLT_VAR: &str = "BRINE_BENCH_BBOLT";

impl Bbolt {
    /// Starts the program and opens a store in `dir` (`sync`: every commit fsynced).
    pub fn open(dir: &Path, sync: bool) -> Bbolt {
        let program = std::env::var(BBOLT_VAR).unwrap_or_else(|_| {
            panic!("{BBOLT_VAR} names the bbolt peer program: run `cargo xtask bench --peers`, which builds it")
        });
        let mut child = Command::new(&program)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start the bbolt peer {program}: {e}"));
        let input = child.stdin.take().expect("piped stdin");
        let output = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut peer = Bbolt { child, input, output };
        let path = dir.join("peer.bbolt");
        let reply = peer.ask(&format!("open {} {}", path.display(), if sync { "sync" } else { "nosync" }));
        assert_eq!(reply, "ok", "bbolt peer open");
        peer
    }

    /// Sends one command and returns its reply line.
    pub fn ask(&mut self, command: &str) -> String {
        writeln!(self.input, "{command}").and_then(|()| self.input.flush()).expect("write to the bbolt peer");
        let mut line = String::new();
        let n = self.output.read_line(&mut line).expect("read from the bbolt peer");
        assert!(n > 0, "the bbolt peer ended at {command:?} (its error is above)");
        line.trim().to_owned()
    }

    /// Runs `op START END` and returns the time the program measured.
    pub fn timed(&mut self, op: &str, start: usize, end: usize) -> Duration {
        let reply = self.ask(&format!("{op} {start} {end}"));
        Duration::from_nanos(reply.parse().unwrap_or_else(|_| panic!("bbolt peer: {reply:?}")))
    }

    /// Creates for `window` from `writers` goroutines: creates per second.
    pub fn writers(&mut self, writers: usize, window: Duration) -> f64 {
        let reply = self.ask(&format!("writers {writers} {}", window.as_millis()));
        let mut parts = reply.split_whitespace().map(|p| p.parse::<u64>().expect("bbolt peer numbers"));
        let (count, nanos) = (parts.next().unwrap_or(0), parts.next().unwrap_or(1));
        count as f64 / (nanos as f64 / 1e9)
    }

    /// Closes the store and ends the program.
    pub fn close(mut self) {
        assert_eq!(self.ask("close"), "ok", "bbolt peer close");
        drop(self.input);
        let status = self.child.wait().expect("bbolt peer exit");
        assert!(status.success(), "bbolt peer exited with {status}");
    }
}
