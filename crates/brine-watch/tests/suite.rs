//! The watcher suite, run unchanged on the in-memory, RocksDB and PostgreSQL backends
//! (the last on the server `BRINE_TEST_DATABASE_URL` names): resume
//! after restart, retries, skip and block, many writers with several watchers, filters,
//! seek (also while a batch is in flight or in backoff), ephemeral watchers, retention
//! (also of new watchers that have handled nothing yet), `Compacted` on a stale resume,
//! and the manager.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brine_memory::MemExecutionStore;
use brine_rocksdb::{Durability, OpenOptions, RocksExecutionStore};
use brine_store::model::{
    Execution, ExecutionId, ExecutionState, Job, JobId, LogEntry, ObjectType, Operation, Timestamp,
};
use brine_store::{
    async_trait, Clock, EventFilter, EventLog, ExecutionStore, ManualClock, Position, StoreError,
    UpdateExecutionRequest,
};
use brine_watch::{
    Handler, HandlerError, Manager, OnCompacted, OnRetriesExhausted, Retention, RetentionOptions, WatchError, Watcher,
    WatcherOptions, WatcherState,
};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::Semaphore;

/// A store under test, which may be closed and reopened.
#[async_trait]
trait Env: Send + Sync {
    fn store(&self) -> Arc<dyn ExecutionStore>;
    /// Closes and reopens the store where it persists; returns whether it did.
    async fn reopen(&mut self) -> bool;
}

#[async_trait]
trait Factory: Sync {
    async fn open(&self, clock: Arc<dyn Clock>) -> Box<dyn Env>;
}

struct Memory;
struct MemEnv(Arc<MemExecutionStore>);

#[async_trait]
impl Env for MemEnv {
    fn store(&self) -> Arc<dyn ExecutionStore> {
        Arc::clone(&self.0) as Arc<dyn ExecutionStore>
    }
    async fn reopen(&mut self) -> bool {
        false
    }
}

#[async_trait]
impl Factory for Memory {
    async fn open(&self, clock: Arc<dyn Clock>) -> Box<dyn Env> {
        Box::new(MemEnv(Arc::new(MemExecutionStore::with_clock(clock))))
    }
}

struct Rocks;
struct RocksEnv {
    _dir: tempfile::TempDir,
    path: PathBuf,
    options: OpenOptions,
    store: Arc<RocksExecutionStore>,
}

#[async_trait]
impl Env for RocksEnv {
    fn store(&self) -> Arc<dyn ExecutionStore> {
        Arc::clone(&self.store) as Arc<dyn ExecutionStore>
    }
    async fn reopen(&mut self) -> bool {
        self.store.close().await.expect("close");
        self.store = Arc::new(RocksExecutionStore::open(&self.path, &self.options).expect("reopen"));
        true
    }
}

#[async_trait]
impl Factory for Rocks {
    async fn open(&self, clock: Arc<dyn Clock>) -> Box<dyn Env> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("n-compute.db");
        let options = OpenOptions { durability: Durability::Buffered, clock, ..OpenOptions::default() };
        let store = Arc::new(RocksExecutionStore::open(&path, &options).expect("open"));
        Box::new(RocksEnv { _dir: dir, path, options, store })
    }
}

struct Postgres;
struct PgEnv {
    database: String,
    clock: Arc<dyn Clock>,
    store: Arc<brine_postgres::PgExecutionStore>,
}

async fn open_pg(database: &str, clock: Arc<dyn Clock>) -> Arc<brine_postgres::PgExecutionStore> {
    let url = brine_postgres::testing::url_for(database);
    let node = brine_store::model::NodeId::new("watch-node").unwrap();
    let options = brine_postgres::PgOptions { pool_size: 8, clock, ..Default::default() };
    Arc::new(brine_postgres::open_execution_store(&url, &node, options).await.expect("open"))
}

#[async_trait]
impl Env for PgEnv {
    fn store(&self) -> Arc<dyn ExecutionStore> {
        Arc::clone(&self.store) as Arc<dyn ExecutionStore>
    }
    async fn reopen(&mut self) -> bool {
        self.store.close().await.unwrap();
        self.store = open_pg(&self.database, Arc::clone(&self.clock)).await;
        true
    }
}

impl Drop for PgEnv {
    fn drop(&mut self) {
        brine_postgres::testing::drop_database_now(&self.database);
    }
}

#[async_trait]
impl Factory for Postgres {
    async fn open(&self, clock: Arc<dyn Clock>) -> Box<dyn Env> {
        let database = brine_postgres::testing::fresh_database().await;
        let store = open_pg(&database, Arc::clone(&clock)).await;
        Box::new(PgEnv { database, clock, store })
    }
}

/// Records every sequence number it handles; fails as `fail` says.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<u64>>,
    calls: AtomicU32,
    /// Fail the first `n` calls.
    fail_first: u32,
    /// Always fail a batch holding this sequence number.
    poison: Option<u64>,
}

impl Recorder {
    fn failing_first(n: u32) -> Arc<Recorder> {
        Arc::new(Recorder { fail_first: n, ..Recorder::default() })
    }

    fn poisoned(seq: u64) -> Arc<Recorder> {
        Arc::new(Recorder { poison: Some(seq), ..Recorder::default() })
    }

    fn seen(&self) -> Vec<u64> {
        self.seen.lock().unwrap().clone()
    }
}

#[async_trait]
impl Handler for Recorder {
    async fn handle(&self, entries: &[LogEntry]) -> Result<(), HandlerError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        if call < self.fail_first {
            return Err(format!("planned failure {}", call + 1).into());
        }
        if let Some(p) = self.poison {
            if entries.iter().any(|e| e.seq == p) {
                return Err(format!("cannot handle {p}").into());
            }
        }
        self.seen.lock().unwrap().extend(entries.iter().map(|e| e.seq));
        Ok(())
    }
}

/// A handler that never returns.
struct Stuck;

#[async_trait]
impl Handler for Stuck {
    async fn handle(&self, _: &[LogEntry]) -> Result<(), HandlerError> {
        std::future::pending::<()>().await;
        Ok(())
    }
}

/// Records what it handles, like `Recorder`, but holds the first batch that starts at
/// one of `holds` (once per number) until the test releases it, after sending the test
/// that first sequence number: the test then knows the batch is in flight.
struct Holding {
    holds: Mutex<Vec<u64>>,
    entered: UnboundedSender<u64>,
    release: Semaphore,
    seen: Mutex<Vec<u64>>,
}

impl Holding {
    fn new(holds: &[u64]) -> (Arc<Holding>, UnboundedReceiver<u64>) {
        let (entered, rx) = unbounded_channel();
        let h =
            Holding { holds: Mutex::new(holds.to_vec()), entered, release: Semaphore::new(0), seen: Mutex::default() };
        (Arc::new(h), rx)
    }

    /// Lets the held batch return.
    fn release(&self) {
        self.release.add_permits(1);
    }

    fn seen(&self) -> Vec<u64> {
        self.seen.lock().unwrap().clone()
    }
}

#[async_trait]
impl Handler for Holding {
    async fn handle(&self, entries: &[LogEntry]) -> Result<(), HandlerError> {
        let first = entries.first().map_or(0, |e| e.seq);
        let hold = {
            let mut holds = self.holds.lock().unwrap();
            let before = holds.len();
            holds.retain(|h| *h != first);
            holds.len() < before
        };
        if hold {
            self.entered.send(first)?;
            self.release.acquire().await?.forget();
        }
        self.seen.lock().unwrap().extend(entries.iter().map(|e| e.seq));
        Ok(())
    }
}

/// Waits (up to 20 s) until a `Holding` handler holds a batch; returns its first entry.
async fn held(entered: &mut UnboundedReceiver<u64>) -> u64 {
    let got = tokio::time::timeout(Duration::from_secs(20), entered.recv()).await;
    got.expect("no batch was held within 20 s").expect("the handler is gone")
}

fn fast(batch_size: usize) -> WatcherOptions {
    WatcherOptions {
        batch_size,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(8),
        ..WatcherOptions::default()
    }
}

async fn append(log: &Arc<dyn EventLog>, n: u64) {
    for i in 0..n {
        log.append("test", &i.to_string()).await.expect("append");
    }
}

/// Waits (up to 20 s) until the watcher has handled everything up to `seq`.
async fn until_handled(w: &Watcher, seq: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let stats = w.stats().await;
        if stats.last_handled >= seq {
            return;
        }
        assert!(!matches!(stats.state, WatcherState::Failed(_)), "{} failed: {:?}", w.name(), stats.state);
        assert!(tokio::time::Instant::now() < deadline, "{} stuck at {} (want {seq})", w.name(), stats.last_handled);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(Timestamp::from_secs(1_700_000_000)))
}

async fn resume_after_restart(f: &dyn Factory) {
    let mut env = f.open(clock()).await;
    let log = env.store().event_log();
    append(&log, 50).await;
    // The third batch (21..=30) fails until the watcher is stopped: the "crash" happens
    // while it is being handled, so it is never checkpointed.
    let first = Recorder::poisoned(25);
    let w = Watcher::new("resumer", log, first.clone(), fast(10)).await.unwrap();
    w.start().unwrap();
    until_handled(&w, 20).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    w.stop().await.unwrap();
    assert_eq!(w.stats().await.last_handled, 20);
    drop(w);
    env.reopen().await;
    let log = env.store().event_log();
    assert_eq!(log.get_checkpoint("resumer").await.unwrap(), 20, "the checkpoint survives the restart");
    let second = Arc::new(Recorder::default());
    let w = Watcher::new("resumer", log, second.clone(), fast(10)).await.unwrap();
    w.start().unwrap();
    until_handled(&w, 50).await;
    w.stop().await.unwrap();
    let (a, b) = (first.seen(), second.seen());
    assert_eq!(a, (1..=20).collect::<Vec<_>>());
    assert_eq!(b, (21..=50).collect::<Vec<_>>(), "resumes right after the checkpoint, skipping nothing");
}

async fn fails_k_times_then_succeeds(f: &dyn Factory) {
    let env = f.open(clock()).await;
    let log = env.store().event_log();
    append(&log, 12).await;
    let h = Recorder::failing_first(3);
    let w = Watcher::new("flaky", log, h.clone(), WatcherOptions { max_retries: 3, ..fast(5) }).await.unwrap();
    w.start().unwrap();
    until_handled(&w, 12).await;
    let stats = w.stats().await;
    w.stop().await.unwrap();
    assert_eq!(h.seen(), (1..=12).collect::<Vec<_>>());
    assert_eq!((stats.retries, stats.skipped, stats.batches, stats.delivered), (3, 0, 3, 12));
}

async fn skips_after_max_retries(f: &dyn Factory) {
    let env = f.open(clock()).await;
    let log = env.store().event_log();
    append(&log, 10).await;
    let h = Recorder::poisoned(5);
    let options = WatcherOptions { max_retries: 2, on_retries_exhausted: OnRetriesExhausted::Skip, ..fast(1) };
    let w = Watcher::new("skipper", Arc::clone(&log), h.clone(), options).await.unwrap();
    w.start().unwrap();
    until_handled(&w, 10).await;
    let stats = w.stats().await;
    w.stop().await.unwrap();
    assert_eq!(h.seen(), vec![1, 2, 3, 4, 6, 7, 8, 9, 10]);
    assert_eq!((stats.skipped, stats.retries), (1, 2));
    assert_eq!(stats.skipped_ranges.len(), 1);
    let r = &stats.skipped_ranges[0];
    assert_eq!((r.first, r.last), (5, 5));
    assert_eq!(r.error, "cannot handle 5");
    assert_eq!(log.get_checkpoint("skipper").await.unwrap(), 10);
}

async fn blocks_after_max_retries(f: &dyn Factory) {
    let env = f.open(clock()).await;
    let log = env.store().event_log();
    append(&log, 10).await;
    let h = Recorder::poisoned(5);
    let options = WatcherOptions { max_retries: 1, on_retries_exhausted: OnRetriesExhausted::Block, ..fast(1) };
    let w = Watcher::new("blocker", Arc::clone(&log), h.clone(), options).await.unwrap();
    w.start().unwrap();
    until_handled(&w, 4).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stats = w.stats().await;
    assert_eq!(stats.last_handled, 4, "nothing past the failing entry");
    assert!(stats.retries >= 3, "keeps retrying: {}", stats.retries);
    assert_eq!(stats.skipped, 0);
    w.stop().await.unwrap();
    assert_eq!(w.state(), WatcherState::Stopped);
    assert_eq!(log.get_checkpoint("blocker").await.unwrap(), 4);
}

async fn writers_and_watchers_in_parallel(f: &dyn Factory) {
    const WRITERS: u64 = 8;
    const EACH: u64 = 150;
    let env = f.open(clock()).await;
    let log = env.store().event_log();
    let mut watchers = Vec::new();
    for (i, batch) in [1usize, 17, 256].into_iter().enumerate() {
        let h = Arc::new(Recorder::default());
        let w = Watcher::new(&format!("w{i}"), Arc::clone(&log), h.clone(), fast(batch)).await.unwrap();
        w.start().unwrap();
        watchers.push((w, h));
    }
    let mut writers = Vec::new();
    for _ in 0..WRITERS {
        let log = Arc::clone(&log);
        writers.push(tokio::spawn(async move { append(&log, EACH).await }));
    }
    for t in writers {
        t.await.unwrap();
    }
    for (w, h) in &watchers {
        until_handled(w, WRITERS * EACH).await;
        w.stop().await.unwrap();
        assert_eq!(
            h.seen(),
            (1..=WRITERS * EACH).collect::<Vec<_>>(),
            "{} sees every sequence once, in order",
            w.name()
        );
    }
}

async fn filters_and_checkpoints_past_filtered(f: &dyn Factory) {
    let env = f.open(clock()).await;
    let store = env.store();
    let log = store.event_log();
    let job = Job::new(JobId::new("j").unwrap(), "j");
    for i in 0..5 {
        let id = ExecutionId::new(format!("e{i}")).unwrap();
        store.create_execution(Execution::new(id.clone(), &job), vec![]).await.unwrap();
        store
            .update_execution_state(UpdateExecutionRequest::to_state(id, ExecutionState::Running, "go"))
            .await
            .unwrap();
        log.append("note", "x").await.unwrap();
    }
    let h = Arc::new(Recorder::default());
    let filter = EventFilter { object_types: vec![ObjectType::Execution], operations: vec![Operation::Update] };
    let w = Watcher::new("updates", Arc::clone(&log), h.clone(), WatcherOptions { filter, ..fast(4) }).await.unwrap();
    w.start().unwrap();
    until_handled(&w, 15).await;
    w.stop().await.unwrap();
    assert_eq!(h.seen(), vec![2, 5, 8, 11, 14]);
    assert_eq!(log.get_checkpoint("updates").await.unwrap(), 15, "filtered entries are checkpointed past");
}

async fn start_positions_seek_and_ephemeral(f: &dyn Factory) {
    let env = f.open(clock()).await;
    let log = env.store().event_log();
    append(&log, 10).await;
    // Latest: only what comes after creation.
    let h = Arc::new(Recorder::default());
    let w = Watcher::new("latest", Arc::clone(&log), h.clone(), WatcherOptions { start: Position::Latest, ..fast(3) })
        .await
        .unwrap();
    w.start().unwrap();
    append(&log, 2).await;
    until_handled(&w, 12).await;
    w.stop().await.unwrap();
    assert_eq!(h.seen(), vec![11, 12]);
    // Seek back while stopped: the checkpoint moves, the next start delivers from there.
    w.seek(Position::At(4)).await.unwrap();
    assert_eq!(log.get_checkpoint("latest").await.unwrap(), 3);
    w.start().unwrap();
    until_handled(&w, 12).await;
    w.stop().await.unwrap();
    assert_eq!(h.seen(), vec![11, 12, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    let err = w.seek(Position::After(99)).await.unwrap_err();
    assert!(matches!(err, WatchError::Store(StoreError::CheckpointBeyondHead { .. })), "{err}");
    // A second start of a running watcher is refused.
    w.start().unwrap();
    assert!(matches!(w.start().unwrap_err(), WatchError::AlreadyRunning { .. }));
    w.stop().await.unwrap();
    // Ephemeral: starts at its position, keeps no checkpoint, refuses to checkpoint.
    let h = Arc::new(Recorder::default());
    let options = WatcherOptions { start: Position::At(9), ephemeral: true, ..fast(2) };
    let e = Watcher::new("ephemeral", Arc::clone(&log), h.clone(), options).await.unwrap();
    e.start().unwrap();
    until_handled(&e, 12).await;
    e.stop().await.unwrap();
    assert_eq!(h.seen(), vec![9, 10, 11, 12]);
    assert_eq!(log.get_checkpoint("ephemeral").await.unwrap(), 0);
    assert!(!log.list_checkpoints().await.unwrap().iter().any(|(n, _)| n == "ephemeral"));
    let err = e.checkpoint(10).await.unwrap_err();
    assert!(matches!(err, WatchError::Ephemeral { .. }), "{err}");
    assert!(err.to_string().contains("ephemeral"));
}

async fn waits_on_commit_notification(f: &dyn Factory) {
    let env = f.open(clock()).await;
    let log = env.store().event_log();
    let h = Arc::new(Recorder::default());
    let w = Watcher::new("waiter", Arc::clone(&log), h.clone(), fast(10)).await.unwrap();
    w.start().unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(w.stats().await.batches, 0);
    let t = std::time::Instant::now();
    append(&log, 1).await;
    until_handled(&w, 1).await;
    assert!(t.elapsed() < Duration::from_secs(2), "delivered on commit, took {:?}", t.elapsed());
    w.stop().await.unwrap();
}

async fn retention_keeps_everything_above_the_minimum_checkpoint(f: &dyn Factory) {
    let clock = clock();
    let mut env = f.open(Arc::clone(&clock) as Arc<dyn Clock>).await;
    let log = env.store().event_log();
    append(&log, 100).await;
    log.checkpoint("a", 60).await.unwrap();
    log.checkpoint("b", 40).await.unwrap();
    let options =
        RetentionOptions { min_age: Duration::from_secs(3600), batch_size: 7, interval: Duration::from_secs(1) };
    let retention = Retention::new(Arc::clone(&log), Arc::clone(&clock) as Arc<dyn Clock>, options.clone()).unwrap();
    // Nothing is old enough yet.
    assert_eq!(retention.run_once().await.unwrap().deleted, 0);
    clock.advance(Duration::from_secs(7200));
    append(&log, 10).await; // 101..=110 are young
    let pass = retention.run_once().await.unwrap();
    assert_eq!((pass.deleted, pass.up_to, pass.oldest), (40, 40, 41));
    assert_eq!(log.oldest().await.unwrap(), 41);
    let batch = log.get_events(Position::TrimHorizon, 1000, &EventFilter::all()).await.unwrap();
    assert_eq!(batch.entries.first().map(|e| e.seq), Some(41));
    assert_eq!(batch.entries.len(), 70, "everything above the minimum checkpoint is kept");
    let err = log.get_events(Position::At(40), 10, &EventFilter::all()).await.unwrap_err();
    assert!(matches!(err, StoreError::Compacted { requested: 40, oldest: 41 }), "{err}");
    // Everyone has handled everything, but the young entries stay.
    log.checkpoint("a", 110).await.unwrap();
    log.checkpoint("b", 110).await.unwrap();
    let pass = retention.run_once().await.unwrap();
    assert_eq!((pass.deleted, pass.oldest), (60, 101));
    if env.reopen().await {
        let log = env.store().event_log();
        assert_eq!(log.oldest().await.unwrap(), 101, "retention is durable");
        assert!(log.get_events(Position::At(100), 1, &EventFilter::all()).await.is_err());
        assert_eq!(log.head().await.unwrap(), 110);
    }
    assert!(Retention::new(env.store().event_log(), clock, RetentionOptions { batch_size: 0, ..options }).is_err());
}

async fn compacted_on_a_stale_resume(f: &dyn Factory) {
    let clock = clock();
    let env = f.open(Arc::clone(&clock) as Arc<dyn Clock>).await;
    let log = env.store().event_log();
    append(&log, 30).await;
    log.checkpoint("stale", 5).await.unwrap();
    clock.advance(Duration::from_secs(10));
    // An operator's trim ignores the stale watcher's checkpoint.
    assert_eq!(log.trim(20, clock.peek(), 1000).await.unwrap(), 20);
    let h = Arc::new(Recorder::default());
    let stop = WatcherOptions { on_compacted: OnCompacted::Stop, ..fast(10) };
    let w = Watcher::new("stale", Arc::clone(&log), h.clone(), stop).await.unwrap();
    w.start().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !matches!(w.state(), WatcherState::Failed(_)) {
        assert!(tokio::time::Instant::now() < deadline, "the watcher stops on Compacted");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let WatcherState::Failed(msg) = w.state() else { unreachable!() };
    assert!(msg.contains("position 6 was compacted away; the oldest entry is 21"), "{msg}");
    assert!(h.seen().is_empty());
    w.stop().await.unwrap();
    let restart = WatcherOptions { on_compacted: OnCompacted::RestartFromOldest, ..fast(10) };
    let w = Watcher::new("stale", Arc::clone(&log), h.clone(), restart).await.unwrap();
    w.start().unwrap();
    until_handled(&w, 30).await;
    let stats = w.stats().await;
    w.stop().await.unwrap();
    assert_eq!(h.seen(), (21..=30).collect::<Vec<_>>());
    assert_eq!(stats.compacted_restarts, 1);
}

async fn seek_back_during_a_batch_wins(f: &dyn Factory) {
    let env = f.open(clock()).await;
    let log = env.store().event_log();
    append(&log, 30).await;
    let (h, mut entered) = Holding::new(&[11, 4]);
    let w = Watcher::new("rewind", Arc::clone(&log), h.clone(), fast(10)).await.unwrap();
    w.start().unwrap();
    assert_eq!(held(&mut entered).await, 11, "11..=20 is in flight");
    w.seek(Position::At(4)).await.unwrap();
    assert_eq!(log.get_checkpoint("rewind").await.unwrap(), 3);
    h.release();
    // The in-flight batch returns; the next batch starts at the seek target and is held.
    assert_eq!(held(&mut entered).await, 4, "the next delivery starts at the seek target");
    assert_eq!(
        log.get_checkpoint("rewind").await.unwrap(),
        3,
        "the in-flight batch's checkpoint does not overwrite the seek target"
    );
    assert_eq!(w.stats().await.last_handled, 3);
    h.release();
    until_handled(&w, 30).await;
    w.stop().await.unwrap();
    assert_eq!(h.seen(), (1..=20).chain(4..=30).collect::<Vec<_>>());
    assert_eq!(log.get_checkpoint("rewind").await.unwrap(), 30);
}

async fn seek_forward_during_a_batch_survives_a_restart(f: &dyn Factory) {
    let mut env = f.open(clock()).await;
    let log = env.store().event_log();
    append(&log, 30).await;
    let (h, mut entered) = Holding::new(&[11]);
    let w = Watcher::new("jump", Arc::clone(&log), h.clone(), fast(10)).await.unwrap();
    w.start().unwrap();
    assert_eq!(held(&mut entered).await, 11, "11..=20 is in flight");
    w.seek(Position::At(25)).await.unwrap();
    // Stop while the batch is in flight (asked for at once, without waiting), then let
    // the handler return: the loop ends right after that batch.
    let err = w.stop_within(Duration::ZERO).await.unwrap_err();
    assert!(matches!(err, WatchError::Timeout { .. }), "{err}");
    h.release();
    w.stop().await.unwrap();
    assert_eq!(log.get_checkpoint("jump").await.unwrap(), 24, "the seek target stays the checkpoint");
    assert_eq!(w.stats().await.last_handled, 24);
    assert_eq!(h.seen(), (1..=20).collect::<Vec<_>>());
    drop((w, log));
    env.reopen().await;
    let log = env.store().event_log();
    let r = Arc::new(Recorder::default());
    let w = Watcher::new("jump", Arc::clone(&log), r.clone(), fast(10)).await.unwrap();
    w.start().unwrap();
    until_handled(&w, 30).await;
    w.stop().await.unwrap();
    assert_eq!(r.seen(), (25..=30).collect::<Vec<_>>(), "a restart resumes at the seek target");
}

async fn seek_past_a_failing_batch_during_its_backoff(f: &dyn Factory) {
    let env = f.open(clock()).await;
    let log = env.store().event_log();
    append(&log, 20).await;
    let h = Recorder::poisoned(5);
    // Blocks on 1..=10 forever, waiting an hour between retries: only the seek gets it out.
    let hour = Duration::from_secs(3600);
    let options = WatcherOptions { initial_backoff: hour, max_backoff: hour, ..fast(10) };
    let w = Watcher::new("unstick", Arc::clone(&log), h.clone(), options).await.unwrap();
    w.start().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while w.stats().await.retries == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the first call fails and is retried");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    w.seek(Position::At(11)).await.unwrap();
    until_handled(&w, 20).await;
    let stats = w.stats().await;
    w.stop().await.unwrap();
    assert_eq!(h.seen(), (11..=20).collect::<Vec<_>>());
    assert_eq!((stats.skipped, stats.batches), (0, 1), "the abandoned batch is not counted as skipped");
    assert_eq!(log.get_checkpoint("unstick").await.unwrap(), 20);
}

async fn retention_holds_for_a_new_watcher_from_trim_horizon(f: &dyn Factory) {
    let clock = clock();
    let env = f.open(Arc::clone(&clock) as Arc<dyn Clock>).await;
    let log = env.store().event_log();
    append(&log, 50).await;
    clock.advance(Duration::from_secs(1));
    let options = RetentionOptions { min_age: Duration::ZERO, batch_size: 7, interval: Duration::from_secs(1) };
    let retention = Retention::new(Arc::clone(&log), Arc::clone(&clock) as Arc<dyn Clock>, options).unwrap();
    let pass = retention.run_once().await.unwrap();
    assert_eq!((pass.deleted, pass.up_to), (0, 0), "with no checkpoint in the store, retention deletes nothing");
    // Another watcher has handled everything; a new one starts from the oldest entry and
    // is slow with its first batch.
    log.checkpoint("ahead", 50).await.unwrap();
    let (h, mut entered) = Holding::new(&[1]);
    let options = WatcherOptions { on_compacted: OnCompacted::Stop, ..fast(10) };
    let w = Watcher::new("late", Arc::clone(&log), h.clone(), options).await.unwrap();
    w.start().unwrap();
    assert_eq!(held(&mut entered).await, 1, "1..=10 is in flight");
    let during = retention.run_once().await.unwrap();
    h.release();
    until_handled(&w, 50).await;
    let stats = w.stats().await;
    w.stop().await.unwrap();
    assert_eq!(during.deleted, 0, "the new watcher holds retention back: {during:?}");
    assert_eq!(h.seen(), (1..=50).collect::<Vec<_>>(), "every entry is delivered");
    assert_eq!(stats.compacted_restarts, 0);
    let pass = retention.run_once().await.unwrap();
    assert_eq!((pass.deleted, pass.up_to, pass.oldest), (50, 50, 51), "once handled, they go");
}

async fn retention_holds_for_watchers_not_yet_started(f: &dyn Factory) {
    let clock = clock();
    let env = f.open(Arc::clone(&clock) as Arc<dyn Clock>).await;
    let log = env.store().event_log();
    append(&log, 30).await;
    clock.advance(Duration::from_secs(1));
    let options = RetentionOptions { min_age: Duration::ZERO, batch_size: 4, interval: Duration::from_secs(1) };
    let retention = Retention::new(Arc::clone(&log), Arc::clone(&clock) as Arc<dyn Clock>, options).unwrap();
    log.checkpoint("ahead", 30).await.unwrap();
    let stop = |start| WatcherOptions { start, on_compacted: OnCompacted::Stop, ..fast(5) };
    let (at, latest) = (Arc::new(Recorder::default()), Arc::new(Recorder::default()));
    let from_20 = Watcher::new("from-20", Arc::clone(&log), at.clone(), stop(Position::At(20))).await.unwrap();
    let newest = Watcher::new("newest", Arc::clone(&log), latest.clone(), stop(Position::Latest)).await.unwrap();
    let eph = WatcherOptions { ephemeral: true, ..stop(Position::At(5)) };
    Watcher::new("eph", Arc::clone(&log), Arc::new(Recorder::default()), eph).await.unwrap();
    // Created, not started: each durable one holds back what it will read.
    let pass = retention.run_once().await.unwrap();
    assert_eq!((pass.deleted, pass.up_to, pass.oldest), (19, 19, 20));
    assert_eq!(log.get_checkpoint("newest").await.unwrap(), 30);
    assert!(!log.list_checkpoints().await.unwrap().iter().any(|(n, _)| n == "eph"), "ephemeral: no checkpoint");
    from_20.start().unwrap();
    until_handled(&from_20, 30).await;
    from_20.stop().await.unwrap();
    assert_eq!(at.seen(), (20..=30).collect::<Vec<_>>());
    append(&log, 10).await;
    clock.advance(Duration::from_secs(1));
    log.checkpoint("ahead", 40).await.unwrap();
    let pass = retention.run_once().await.unwrap();
    assert_eq!((pass.deleted, pass.up_to, pass.oldest), (11, 30, 31));
    newest.start().unwrap();
    until_handled(&newest, 40).await;
    newest.stop().await.unwrap();
    assert_eq!(latest.seen(), (31..=40).collect::<Vec<_>>(), "Latest: what came after its creation");
}

async fn retention_holds_for_a_watcher_starting_beyond_the_head(f: &dyn Factory) {
    let clock = clock();
    let env = f.open(Arc::clone(&clock) as Arc<dyn Clock>).await;
    let log = env.store().event_log();
    append(&log, 10).await;
    let options = RetentionOptions { min_age: Duration::ZERO, batch_size: 4, interval: Duration::from_secs(1) };
    let retention = Retention::new(Arc::clone(&log), Arc::clone(&clock) as Arc<dyn Clock>, options).unwrap();
    let (h, mut entered) = Holding::new(&[15]);
    let options = WatcherOptions { start: Position::At(15), on_compacted: OnCompacted::Stop, ..fast(10) };
    let w = Watcher::new("future", Arc::clone(&log), h.clone(), options).await.unwrap();
    assert_eq!(log.get_checkpoint("future").await.unwrap(), 0, "no checkpoint beyond the head");
    w.start().unwrap();
    append(&log, 10).await;
    clock.advance(Duration::from_secs(1));
    log.checkpoint("ahead", 20).await.unwrap();
    assert_eq!(held(&mut entered).await, 15, "a batch from 15 is in flight");
    assert_eq!(log.get_checkpoint("future").await.unwrap(), 14, "recorded once the head reached it");
    let pass = retention.run_once().await.unwrap();
    assert_eq!((pass.deleted, pass.up_to, pass.oldest), (14, 14, 15));
    h.release();
    until_handled(&w, 20).await;
    w.stop().await.unwrap();
    assert_eq!(h.seen(), (15..=20).collect::<Vec<_>>());
}

async fn manager_creates_looks_up_and_stops(f: &dyn Factory) {
    let env = f.open(clock()).await;
    let log = env.store().event_log();
    append(&log, 5).await;
    let m = Manager::new(Arc::clone(&log));
    let h = Arc::new(Recorder::default());
    let a = m.create("a", h.clone(), fast(2)).await.unwrap();
    let err = m.create("a", h.clone(), fast(2)).await.unwrap_err();
    assert!(matches!(err, WatchError::Duplicate { .. }) && err.to_string().contains("\"a\""), "{err}");
    let err = m.create("b", h.clone(), WatcherOptions { batch_size: 0, ..fast(1) }).await.unwrap_err();
    assert!(err.to_string().contains("batch_size"), "{err}");
    let err = m.create(" ", h.clone(), fast(1)).await.unwrap_err();
    assert!(matches!(err, WatchError::InvalidName { .. }), "{err}");
    assert_eq!(m.names().await, vec!["a".to_owned()], "failed creates leave nothing behind");
    assert_eq!(m.get("a").await.unwrap().name(), "a");
    assert!(matches!(m.get("zzz").await.unwrap_err(), WatchError::NotFound { .. }));
    until_handled(&a, 5).await;
    m.create("stuck", Arc::new(Stuck), fast(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let t = std::time::Instant::now();
    let err = m.stop_all(Duration::from_millis(200)).await.unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(2), "the deadline bounds stop_all");
    match err {
        WatchError::Timeout { names, .. } => assert_eq!(names, vec!["stuck".to_owned()]),
        other => panic!("expected Timeout, got {other}"),
    }
    assert_eq!(a.state(), WatcherState::Stopped, "the others stopped");
    m.remove("a").await.unwrap();
    assert!(m.get("a").await.is_err());
}

macro_rules! suite {
    ($factory:expr) => {
        suite!(@each $factory;
            resume_after_restart,
            fails_k_times_then_succeeds,
            skips_after_max_retries,
            blocks_after_max_retries,
            writers_and_watchers_in_parallel,
            filters_and_checkpoints_past_filtered,
            start_positions_seek_and_ephemeral,
            waits_on_commit_notification,
            retention_keeps_everything_above_the_minimum_checkpoint,
            compacted_on_a_stale_resume,
            manager_creates_looks_up_and_stops,
            seek_back_during_a_batch_wins,
            seek_forward_during_a_batch_survives_a_restart,
            seek_past_a_failing_batch_during_its_backoff,
            retention_holds_for_a_new_watcher_from_trim_horizon,
            retention_holds_for_watchers_not_yet_started,
            retention_holds_for_a_watcher_starting_beyond_the_head,
        );
    };
    (@each $factory:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(&$factory).await;
            }
        )*
    };
}

mod memory {
    suite!(super::Memory);
}

mod rocksdb {
    suite!(super::Rocks);
}

mod postgres {
    suite!(super::Postgres);
}
