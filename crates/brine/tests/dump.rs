//! Dumps through every backend: a store's content survives memory → RocksDB →
//! PostgreSQL → memory record for record, and a damaged dump is refused naming its line.

use std::io::Cursor;
use std::sync::Arc;

use brine::dump::{self, DumpError, Line, Store};
use brine::model::{
    Evaluation, EvaluationId, Event, Execution, ExecutionId, ExecutionState, Job, JobId, JobState, NodeId, Timestamp,
};
use brine::{ExecutionStore, JobStore, StoreConfig, StoreType, UpdateExecutionRequest, UpdateJobStateRequest};
use tokio::sync::mpsc;

/// A small deterministic generator (the workload needs variety, not quality).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn event(i: u64) -> Event {
    let mut e = Event::new("Test", format!("event {i}"), Timestamp::from_secs(1_700_000_000 + i));
    e.details.insert("n".into(), i.to_string());
    e
}

/// A requester's workload: jobs with labels and namespaces, new versions, evaluations,
/// placed executions, history, a queue with grabs, finished and purged jobs, custom log
/// entries, a trimmed log start and checkpoints.
async fn fill_requester(jobs: &dyn JobStore, rng: &mut Lcg) {
    for i in 0..40u64 {
        let id = JobId::new(format!("job-{i:03}")).unwrap();
        let mut job = Job::new(id.clone(), format!("name-{i}"));
        if i % 3 == 0 {
            job.namespace = "team-a".into();
        }
        job.labels.insert("tier".into(), ["web", "db", "batch"][(i % 3) as usize].into());
        if i % 5 == 0 {
            jobs.enqueue("default", job).await.unwrap();
            continue;
        }
        jobs.create_job(job).await.unwrap();
        if rng.below(2) == 0 {
            let current = jobs.get_job(&id).await.unwrap();
            jobs.update_job(current).await.unwrap();
        }
        let eval = EvaluationId::new(format!("eval-{i:03}")).unwrap();
        jobs.create_evaluation(Evaluation::new(eval, "default", id.clone())).await.unwrap();
        for x in 0..rng.below(3) {
            let mut execution =
                Execution::new(ExecutionId::new(format!("rx-{i:03}-{x}")).unwrap(), &jobs.get_job(&id).await.unwrap());
            execution.node_id = Some(NodeId::new(format!("node-{}", x % 2)).unwrap());
            jobs.create_execution(execution).await.unwrap();
        }
        jobs.add_job_event(&id, vec![event(i)]).await.unwrap();
        let state = [JobState::Running, JobState::Completed, JobState::Failed][rng.below(3) as usize];
        jobs.update_job_state(UpdateJobStateRequest::new(id, state, "moved")).await.unwrap();
    }
    for _ in 0..3 {
        jobs.grab_next("default").await.unwrap();
    }
    jobs.event_log().append("note", "{\"from\":\"test\"}").await.unwrap();
    let mut purge = Vec::new();
    for i in (1..40u64).step_by(7) {
        let id = JobId::new(format!("job-{i:03}")).unwrap();
        if jobs.get_job(&id).await.unwrap().state().is_terminal() {
            purge.push((id.clone(), jobs.job_bundle(&id).await.unwrap().stamp()));
        }
    }
    assert!(!purge.is_empty(), "the workload purges some jobs");
    jobs.purge_jobs(&purge, "job_archive_1700000000.jsonl").await.unwrap();
    let log = jobs.event_log();
    log.trim(10, Timestamp::MAX, 10).await.unwrap();
    log.checkpoint("requester-sync", log.head().await.unwrap() - 3).await.unwrap();
}

/// A compute node's workload: executions moved through their states at random, with
/// events, some deleted, a trimmed log start and two checkpoints.
async fn fill_compute(store: &dyn ExecutionStore, rng: &mut Lcg) {
    let path =
        [ExecutionState::BidAccepted, ExecutionState::Running, ExecutionState::Publishing, ExecutionState::Completed];
    for i in 0..60u64 {
        let job = Job::new(JobId::new(format!("job-{:03}", i / 2)).unwrap(), format!("name-{}", i / 2));
        let id = ExecutionId::new(format!("x-{i:03}")).unwrap();
        store.create_execution(Execution::new(id.clone(), &job), vec![event(i)]).await.unwrap();
        for state in path.iter().take(rng.below(5) as usize) {
            let request = UpdateExecutionRequest::to_state(id.clone(), *state, format!("to {state}"));
            store.update_execution_state(request).await.unwrap();
        }
        if rng.below(4) == 0 {
            store.add_execution_event(&id, vec![event(i + 100), event(i + 200)]).await.unwrap();
        }
        if rng.below(10) == 0 {
            store.delete_execution(&id).await.unwrap();
        }
    }
    let log = store.event_log();
    log.trim(25, Timestamp::MAX, 25).await.unwrap();
    let head = log.head().await.unwrap();
    log.checkpoint("metrics", head).await.unwrap();
    log.checkpoint("requester-sync", head - 10).await.unwrap();
}

/// Every line of `store`'s dump, the header's own time and source left out (they name
/// the moment and the store, not the content).
async fn lines_of(store: &Store) -> Vec<Line> {
    let (tx, mut rx) = mpsc::channel(dump::CHANNEL_LINES);
    let collect = async move {
        let mut out = Vec::new();
        while let Some(line) = rx.recv().await {
            out.push(line);
        }
        out
    };
    let export = async move { dump::export(store, "test", &tx, &|_| {}).await.unwrap() };
    let (_, mut lines) = tokio::join!(export, collect);
    if let Some(Line::Header(h)) = lines.first_mut() {
        h.exported_at = Timestamp::ZERO;
    }
    lines
}

/// `source`'s dump as bytes: written by `write_lines`, as `brine export` writes it.
async fn dump_bytes(source: &Store) -> Vec<u8> {
    let (tx, mut rx) = mpsc::channel(dump::CHANNEL_LINES);
    let writer = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        dump::write_lines(&mut rx, &mut out).unwrap();
        out
    });
    dump::export(source, "test", &tx, &|_| {}).await.unwrap();
    drop(tx);
    writer.await.unwrap()
}

/// Imports `bytes` into `target`, read by `read_lines` as `brine import` reads them.
async fn import_bytes(bytes: Vec<u8>, target: &Store) -> Result<dump::Imported, DumpError> {
    let (tx, mut rx) = mpsc::channel(dump::CHANNEL_LINES);
    let reader = tokio::task::spawn_blocking(move || dump::read_lines(Cursor::new(bytes), &tx));
    let out = dump::import(target, &mut rx, &|_| {}).await;
    drop(rx);
    reader.await.unwrap();
    out
}

fn memory_pair() -> (Store, Store) {
    (
        Store::Compute(Arc::new(brine_memory::MemExecutionStore::new())),
        Store::Requester(Arc::new(brine_memory::MemJobStore::new())),
    )
}

async fn open_pair(config: &StoreConfig) -> (Store, Store) {
    let options = brine::Options { durability: brine::Durability::Buffered, ..brine::Options::default() };
    (
        Store::Compute(brine::open_execution_store_with(config, &options).await.unwrap()),
        Store::Requester(brine::open_job_store_with(config, &options).await.unwrap()),
    )
}

async fn assert_consistent(pair: &(Store, Store), on: &str) {
    let (Store::Compute(c), Store::Requester(r)) = pair else { unreachable!("pairs are compute, requester") };
    let report = c.check().await.unwrap();
    assert!(report.is_ok(), "{on} compute store: {:?}", report.problems);
    let report = r.check().await.unwrap();
    assert!(report.is_ok(), "{on} requester store: {:?}", report.problems);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_survives_memory_rocksdb_postgres_memory_record_for_record() {
    let first = memory_pair();
    let mut rng = Lcg(42);
    let (Store::Compute(c), Store::Requester(r)) = &first else { unreachable!() };
    fill_requester(&**r, &mut rng).await;
    fill_compute(&**c, &mut rng).await;
    let expected = (lines_of(&first.0).await, lines_of(&first.1).await);
    assert!(expected.0.len() > 100 && expected.1.len() > 100, "the workload fills both stores");

    let dir = tempfile::tempdir().unwrap();
    let database = brine_postgres::testing::fresh_database().await;
    let lookup = |side: StoreType| {
        let dir = dir.path().display().to_string();
        let url = brine_postgres::testing::url_for(&database);
        StoreConfig::from_lookup(move |k| match k {
            "BRINE_DIR" => Some(dir.clone()),
            "BRINE_COMPUTE_STORE_TYPE" | "BRINE_JOB_STORE_TYPE" => Some(side.to_string()),
            "BRINE_DATABASE_URL" => Some(url.clone()),
            _ => None,
        })
        .unwrap()
    };
    let rocks = open_pair(&lookup(StoreType::RocksDb)).await;
    let postgres = open_pair(&lookup(StoreType::Postgres)).await;
    let last = memory_pair();
    let hops = [(&first, &rocks, "rocksdb"), (&rocks, &postgres, "postgres"), (&postgres, &last, "memory")];
    for (from, to, name) in hops {
        for (source, target) in [(&from.0, &to.0), (&from.1, &to.1)] {
            let imported = import_bytes(dump_bytes(source).await, target).await.unwrap();
            assert_eq!(imported.header.kind, source.kind());
        }
        assert_consistent(to, name).await;
        assert_eq!(lines_of(&to.0).await, expected.0, "the compute store on {name} holds what the first held");
        assert_eq!(lines_of(&to.1).await, expected.1, "the requester store on {name} holds what the first held");
    }

    // A watcher resumes on the last copy where it was on the first.
    let (Store::Compute(c), _) = &last else { unreachable!() };
    let (Store::Compute(c0), _) = &first else { unreachable!() };
    let log = c.event_log();
    assert_eq!(log.get_checkpoint("metrics").await.unwrap(), c0.event_log().get_checkpoint("metrics").await.unwrap());
    let job = Job::new(JobId::new("job-new").unwrap(), "new");
    c.create_execution(Execution::new(ExecutionId::new("x-new").unwrap(), &job), vec![]).await.unwrap();
    assert_eq!(
        log.head().await.unwrap(),
        c0.event_log().head().await.unwrap() + 1,
        "new entries follow the copied head"
    );
    for pair in [&rocks, &postgres] {
        pair.0.close().await.unwrap();
        pair.1.close().await.unwrap();
    }
}

/// A compute dump of three executions, as bytes, and its lines.
async fn small_dump() -> (Vec<u8>, Vec<String>) {
    let (compute, _) = memory_pair();
    let Store::Compute(c) = &compute else { unreachable!() };
    let job = Job::new(JobId::new("j1").unwrap(), "one");
    for id in ["a", "b", "c"] {
        c.create_execution(Execution::new(ExecutionId::new(id).unwrap(), &job), vec![event(1)]).await.unwrap();
    }
    c.event_log().checkpoint("w", 2).await.unwrap();
    let bytes = dump_bytes(&compute).await;
    let lines = String::from_utf8(bytes.clone()).unwrap().lines().map(str::to_owned).collect();
    (bytes, lines)
}

fn joined(lines: &[String]) -> Vec<u8> {
    lines.iter().flat_map(|l| format!("{l}\n").into_bytes()).collect()
}

async fn import_error(bytes: Vec<u8>) -> String {
    let (compute, _) = memory_pair();
    import_bytes(bytes, &compute).await.unwrap_err().to_string()
}

#[tokio::test]
async fn a_damaged_dump_is_refused_naming_its_line() {
    let (bytes, lines) = small_dump().await;
    assert_eq!(lines.len(), 10, "header, 3 executions, log, 3 entries, checkpoint, end: {lines:#?}");

    // Cut in the middle of a line: the line is named, cut short.
    let cut = joined(&lines[..4]).len() + 20;
    let err = import_error(bytes[..cut].to_vec()).await;
    assert_eq!(err, "line 5: cut short (no newline, incomplete JSON): the dump is truncated");
    // Cut at a line's end: the dump has no end line.
    let err = import_error(joined(&lines[..7])).await;
    assert_eq!(err, "the dump ends after line 7 without its end line: it is truncated");
    // A line dropped from the middle: the end line's counts disagree.
    let mut dropped = lines.clone();
    dropped.remove(2);
    let err = import_error(joined(&dropped)).await;
    assert!(err.starts_with("line 9: the end line counts 9 lines, 3 executions"), "{err}");
    assert!(err.contains("but the dump holds 8 lines, 2 executions"), "{err}");
    // A record changed in place: the counts per state name what differs.
    let changed: Vec<String> = lines
        .iter()
        .map(|l| {
            if l.starts_with("{\"execution\"") {
                l.replacen("\"state\":\"Created\"", "\"state\":\"Running\"", 1)
            } else {
                l.clone()
            }
        })
        .collect();
    assert_ne!(changed, lines, "the test changed a state");
    let err = import_error(joined(&changed)).await;
    assert!(err.starts_with("line 10: the end line counts "), "{err}");
    assert!(err.contains("Created=3") && err.contains("Running=3"), "the states that differ: {err}");
    // Not JSON, and lines out of place.
    let mut garbled = lines.clone();
    garbled[3] = "{\"execution\": 7}".into();
    let err = import_error(joined(&garbled)).await;
    assert!(err.starts_with("line 4: not a dump line: "), "{err}");
    let err = import_error(joined(&lines[1..])).await;
    assert_eq!(err, "line 1: the first line must be the dump's header");
    let mut late = lines.clone();
    late.push(lines[1].clone());
    let err = import_error(joined(&late)).await;
    assert_eq!(err, "line 11: a line after the end line");
    let newer = lines[0].replace("\"format\":1", "\"format\":2");
    let err = import_error(joined(&[&[newer], &lines[1..]].concat())).await;
    assert_eq!(err, "line 1: dump format 2 is not one this brine reads (1 to 1): upgrade brine");

    // The wrong kind of store, and a store that holds something.
    let (_, requester) = memory_pair();
    let err = import_bytes(bytes.clone(), &requester).await.unwrap_err().to_string();
    assert_eq!(err, "line 1: the dump holds a compute store; the target is a requester store");
    let (compute, _) = memory_pair();
    import_bytes(bytes.clone(), &compute).await.unwrap();
    let err = import_bytes(bytes, &compute).await.unwrap_err().to_string();
    assert_eq!(
        err,
        "the target store is not empty: it holds 3 executions, an event log at 3, 1 checkpoints; import into a new store"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_compares_counts_log_checkpoints_and_a_sample() {
    let source = memory_pair();
    let mut rng = Lcg(7);
    let (Store::Compute(c), Store::Requester(r)) = &source else { unreachable!() };
    fill_requester(&**r, &mut rng).await;
    fill_compute(&**c, &mut rng).await;
    let target = memory_pair();
    for (from, to) in [(&source.0, &target.0), (&source.1, &target.1)] {
        let (imported, comparison) = dump::copy(from, "source", to, &|_| {}).await.unwrap();
        assert!(comparison.differences.is_empty(), "{:?}", comparison.differences);
        assert!(comparison.sampled > 0 && comparison.checkpoints > 0);
        assert_eq!(
            comparison.states.values().map(|(a, _)| a).sum::<u64>(),
            imported.tally.states.values().sum::<u64>()
        );
    }
    // A copy into a store that holds something stops at once, naming what it holds.
    let err = dump::copy(&source.0, "source", &target.0, &|_| {}).await.unwrap_err();
    assert!(matches!(err, DumpError::NotEmpty { .. }), "{err}");
    // The comparison sees a difference made after the copy.
    let Store::Compute(copy) = &target.0 else { unreachable!() };
    let some = copy.get_live_executions().await.unwrap().remove(0).id;
    let exported = dump::Exported { sample: vec![some.to_string()], ..Default::default() };
    copy.add_execution_event(&some, vec![event(9)]).await.unwrap();
    let comparison = dump::compare(&source.0, &target.0, &exported).await.unwrap();
    assert_eq!(comparison.differences, [format!("execution {some} differs")]);
}

/// Runs a PostgreSQL client tool, failing the test with its output when it fails.
fn pg_tool(program: &str, args: &[&str]) {
    let out = std::process::Command::new(program).args(args).output();
    let out = out.unwrap_or_else(|e| panic!("{program} (Debian postgresql-client) must be installed: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// The backup docs/POSTGRES.md gives: `pg_dump` of the `compute` schema from a live
/// database, `pg_restore` into an empty one, and every store opens there as it was,
/// its sequences included (new history entries and log entries number on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pg_dump_of_the_compute_schema_restores_every_store() {
    let database = brine_postgres::testing::fresh_database().await;
    let config = |dbname: &str| {
        let url = brine_postgres::testing::url_for(dbname);
        StoreConfig::from_lookup(move |k| match k {
            "BRINE_DIR" => Some("/nonexistent".into()),
            "BRINE_NODE_ID" => Some("node-7".into()),
            "BRINE_COMPUTE_STORE_TYPE" | "BRINE_JOB_STORE_TYPE" => Some("postgres".into()),
            "BRINE_DATABASE_URL" => Some(url.clone()),
            _ => None,
        })
        .unwrap()
    };
    let live = open_pair(&config(&database)).await;
    let mut rng = Lcg(11);
    let (Store::Compute(c), Store::Requester(r)) = &live else { unreachable!() };
    fill_requester(&**r, &mut rng).await;
    fill_compute(&**c, &mut rng).await;
    let expected = (lines_of(&live.0).await, lines_of(&live.1).await);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("compute.pgdump").display().to_string();
    let source = brine_postgres::testing::url_for(&database);
    pg_tool("pg_dump", &["--schema=compute", "--format=custom", "--file", &file, "--dbname", &source]);
    let restored_db = brine_postgres::testing::empty_database().await;
    let target = brine_postgres::testing::url_for(&restored_db);
    pg_tool("pg_restore", &["--exit-on-error", "--dbname", &target, &file]);

    let restored = open_pair(&config(&restored_db)).await;
    assert_consistent(&restored, "the restored database").await;
    assert_eq!(lines_of(&restored.0).await, expected.0, "the compute store as it was");
    assert_eq!(lines_of(&restored.1).await, expected.1, "the requester store as it was");
    let (Store::Compute(c2), Store::Requester(r2)) = &restored else { unreachable!() };
    let top = expected.1.iter().filter_map(|l| match l {
        Line::Job(b) => b.history.iter().map(|h| h.seq).max(),
        _ => None,
    });
    let top = top.max().unwrap();
    let job = JobId::new("job-002").unwrap();
    r2.add_job_event(&job, vec![event(1)]).await.unwrap();
    let history = r2.get_job_history(&job, &brine::HistoryQuery::default()).await.unwrap().entries;
    assert!(history.last().unwrap().seq > top, "the history sequence came back with the schema");
    let head = c2.event_log().head().await.unwrap();
    let j = Job::new(JobId::new("job-new").unwrap(), "new");
    c2.create_execution(Execution::new(ExecutionId::new("x-new").unwrap(), &j), vec![]).await.unwrap();
    assert_eq!(c2.event_log().head().await.unwrap(), head + 1);
    for pair in [&live, &restored] {
        pair.0.close().await.unwrap();
        pair.1.close().await.unwrap();
    }
}
