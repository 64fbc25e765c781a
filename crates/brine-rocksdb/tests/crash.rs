//! Crash test with a real process: this test binary re-runs itself as a child that
//! writes with `Sync` durability, records every acknowledged write in a file it fsyncs
//! before counting the write as acknowledged, and is killed with SIGKILL at a random
//! moment. The parent reopens the store and checks that every acknowledged write is
//! there, that no partial write is visible (records, indexes, counters and the event log
//! agree), and that watchers can resume from their checkpoints. Then the next round
//! continues on the same store.
//!
//! `BRINE_CRASH_ROUNDS` sets the number of rounds (default 20), `BRINE_CRASH_SEED` the
//! random seed (printed on failure).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use brine_rocksdb::{Durability, OpenOptions, RocksExecutionStore};
use brine_store::model::{Execution, ExecutionId, ExecutionState, Job, JobId, LogObject, Operation};
use brine_store::{EventFilter, ExecutionStore, Position, UpdateExecutionRequest};

const CHILD_DIR: &str = "BRINE_CRASH_CHILD_DIR";
const CHILD_ROUND: &str = "BRINE_CRASH_ROUND";
const READY: &str = "brine-crash-child ready";
const WRITERS: usize = 4;

fn store_path(dir: &Path) -> PathBuf {
    dir.join("node-compute.db")
}

fn open(dir: &Path) -> RocksExecutionStore {
    let options = OpenOptions { durability: Durability::Sync, ..OpenOptions::default() };
    RocksExecutionStore::open(store_path(dir), &options).expect("open the store")
}

/// The acknowledgement log: one line per acknowledged write, fsynced before the write
/// counts as acknowledged.
struct Acks(Mutex<std::fs::File>);

impl Acks {
    fn open(dir: &Path) -> Acks {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("acks.log")).expect("acks file");
        Acks(Mutex::new(file))
    }

    fn ack(&self, line: String) {
        let mut f = self.0.lock().expect("acks lock");
        f.write_all(format!("{line}\n").as_bytes()).expect("write ack");
        f.sync_data().expect("sync acks");
    }
}

fn job(w: usize) -> Job {
    Job::new(JobId::new(format!("job{}", w % 3)).expect("id"), format!("job{}", w % 3))
}

/// One writer: create, two conditional updates, sometimes a delete; `limit` bounds it.
async fn writer(store: Arc<RocksExecutionStore>, acks: Arc<Acks>, round: u64, w: usize, limit: Option<usize>) {
    let mut i = 0;
    while limit.is_none_or(|l| i < l) {
        let id = ExecutionId::new(format!("r{round}-w{w}-{i}")).expect("id");
        store.create_execution(Execution::new(id.clone(), &job(w)), vec![]).await.expect("create");
        acks.ack(format!("C {id}"));
        for (rev, state) in [(1, ExecutionState::BidAccepted), (2, ExecutionState::Running)] {
            let req = UpdateExecutionRequest::to_state(id.clone(), state, "step").expect_revision(rev);
            store.update_execution_state(req).await.expect("update");
            acks.ack(format!("U {id} {}", rev + 1));
        }
        if i % 5 == 4 {
            store.delete_execution(&id).await.expect("delete");
            acks.ack(format!("D {id}"));
        }
        i += 1;
    }
}

/// A watcher that follows the log and checkpoints after every batch.
async fn follower(store: Arc<RocksExecutionStore>, acks: Arc<Acks>, until: Option<u64>) {
    let log = store.event_log();
    let mut after = log.get_checkpoint("follower").await.expect("checkpoint");
    while until.is_none_or(|u| after < u) {
        log.wait_for(after).await.expect("wait");
        let batch = log.get_events(Position::After(after), 50, &EventFilter::all()).await.expect("read");
        for (n, entry) in batch.entries.iter().enumerate() {
            assert_eq!(entry.seq, after + 1 + n as u64, "the follower sees no gap");
        }
        after = batch.next_after();
        log.checkpoint("follower", after).await.expect("checkpoint");
        acks.ack(format!("K follower {after}"));
    }
}

async fn workload(dir: &Path, round: u64, limit: Option<usize>) {
    let store = Arc::new(open(dir));
    let acks = Arc::new(Acks::open(dir));
    let start = store.event_log().head().await.expect("head");
    println!("{READY}");
    std::io::stdout().flush().expect("flush");
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        tasks.push(tokio::spawn(writer(Arc::clone(&store), Arc::clone(&acks), round, w, limit)));
    }
    let per_writer = limit.map(|l| (l * 3 + l / 5) as u64);
    let follow =
        tokio::spawn(follower(Arc::clone(&store), Arc::clone(&acks), per_writer.map(|p| start + p * WRITERS as u64)));
    for t in tasks {
        t.await.expect("writer");
    }
    follow.await.expect("follower");
    store.close().await.expect("close");
}

/// Whether the workload deletes `id` after its last update (every fifth execution).
fn deleted_by_workload(id: &str) -> bool {
    id.rsplit('-').next().and_then(|i| i.parse::<usize>().ok()).is_some_and(|i| i % 5 == 4)
}

/// Everything the acknowledgement log says must be in the store.
#[derive(Default)]
struct Expected {
    created: BTreeSet<String>,
    deleted: BTreeSet<String>,
    revision: BTreeMap<String, u64>,
    checkpoint: u64,
    lines: usize,
}

fn read_acks(dir: &Path) -> Expected {
    let mut e = Expected::default();
    let Ok(text) = std::fs::read_to_string(dir.join("acks.log")) else { return e };
    // Only newline-terminated lines count: the kill may cut the last one short.
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    for line in complete.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        match parts.as_slice() {
            ["C", id] => {
                e.created.insert((*id).to_owned());
            }
            ["U", id, rev] => {
                let rev: u64 = rev.parse().expect("revision");
                let slot = e.revision.entry((*id).to_owned()).or_default();
                *slot = (*slot).max(rev);
            }
            ["D", id] => {
                e.deleted.insert((*id).to_owned());
            }
            ["K", "follower", seq] => e.checkpoint = e.checkpoint.max(seq.parse().expect("seq")),
            other => panic!("unreadable acknowledgement {other:?}"),
        }
        e.lines += 1;
    }
    e
}

/// Reopens the store and checks it against the acknowledgements.
async fn verify(dir: &Path) -> Expected {
    let expected = read_acks(dir);
    let store = open(dir);
    let report = store.check().await.expect("check runs");
    assert!(report.is_ok(), "db check after the crash: {:#?}", report.problems);
    for id in &expected.created {
        let got = store.get_execution(&ExecutionId::new(id.as_str()).expect("id")).await;
        if expected.deleted.contains(id) {
            assert!(got.unwrap_err().is_not_found(), "acknowledged delete of {id} is durable");
            continue;
        }
        let acked = expected.revision.get(id).copied().unwrap_or(1);
        if got.as_ref().is_err_and(|err| err.is_not_found()) && acked == 3 && deleted_by_workload(id) {
            // Its delete was written; the kill came before the acknowledgement.
            continue;
        }
        let e = got.unwrap_or_else(|err| panic!("acknowledged create of {id} is durable: {err}"));
        assert!(e.revision >= acked, "{id}: acknowledged revision {acked}, found {}", e.revision);
    }
    let log = store.event_log();
    let head = log.head().await.expect("head");
    let checkpoint = log.get_checkpoint("follower").await.expect("checkpoint");
    assert!(
        checkpoint >= expected.checkpoint,
        "acknowledged checkpoint {} is durable, found {checkpoint}",
        expected.checkpoint
    );
    assert!(checkpoint <= head, "checkpoint {checkpoint} is at or below head {head}");
    log.get_events(Position::After(checkpoint), 10, &EventFilter::all())
        .await
        .expect("a watcher resumes from its checkpoint");
    // Record and log entry commit together: each execution's newest log entry matches it.
    let mut last: BTreeMap<String, Option<u64>> = BTreeMap::new();
    let mut pos = Position::TrimHorizon;
    loop {
        let batch = log.get_events(pos, 500, &EventFilter::all()).await.expect("read log");
        if batch.entries.is_empty() {
            break;
        }
        for entry in &batch.entries {
            if let LogObject::Execution { current, previous, .. } = &entry.object {
                let id = current.as_ref().or(previous.as_ref()).map(|e| e.id.to_string()).expect("an execution");
                let rev =
                    if entry.operation == Operation::Delete { None } else { current.as_ref().map(|e| e.revision) };
                last.insert(id, rev);
            }
        }
        pos = batch.next;
    }
    for (id, rev) in &last {
        let got = store.get_execution(&ExecutionId::new(id.as_str()).expect("id")).await;
        match rev {
            Some(rev) => assert_eq!(got.expect("logged record exists").revision, *rev, "{id}: record and log agree"),
            None => assert!(got.unwrap_err().is_not_found(), "{id}: logged delete and record agree"),
        }
    }
    store.close().await.expect("close");
    expected
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// The child's entry point. Run directly (no environment), it runs a bounded workload
/// in a temporary store, then reopens it and checks every acknowledgement.
#[test]
fn crash_child() {
    let rt = runtime();
    if let Ok(dir) = std::env::var(CHILD_DIR) {
        let round = std::env::var(CHILD_ROUND).ok().and_then(|r| r.parse().ok()).unwrap_or(0);
        rt.block_on(workload(Path::new(&dir), round, None));
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    rt.block_on(workload(dir.path(), 0, Some(25)));
    let expected = rt.block_on(verify(dir.path()));
    assert_eq!(expected.created.len(), WRITERS * 25);
    assert_eq!(expected.deleted.len(), WRITERS * 5);
    assert!(expected.checkpoint > 0, "the follower checkpointed");
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn sigkill_loses_no_acknowledged_write() {
    let rounds: u64 = std::env::var("BRINE_CRASH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(20);
    let seed: u64 = std::env::var("BRINE_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    let mut rng = Rng(seed.max(1));
    let dir = tempfile::tempdir().expect("temp dir");
    let exe = std::env::current_exe().expect("test binary");
    let rt = runtime();
    let mut acknowledged = 0;
    for round in 1..=rounds {
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--nocapture", "--test-threads", "1"])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_ROUND, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the child");
        let stdout = child.stdout.take().expect("child stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains(READY) {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("child of round {round} never got ready (seed {seed})"));
        let started = Instant::now();
        std::thread::sleep(Duration::from_millis(20 + rng.below(300)));
        child.kill().expect("SIGKILL the child");
        child.wait().expect("reap the child");
        let expected = rt.block_on(verify(dir.path()));
        assert!(expected.lines >= acknowledged, "acknowledgements only grow");
        acknowledged = expected.lines;
        eprintln!("round {round}: killed after {:?}, {} acknowledged writes so far", started.elapsed(), expected.lines);
    }
    assert!(acknowledged > rounds as usize, "the children made progress before being killed (seed {seed})");
}
