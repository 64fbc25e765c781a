//! Stores written by past format versions, kept in `tests/fixtures/v<N>/`: a small
//! requester store and a small compute store, each with `<kind>.json`, every key and
//! decoded value of every family as the version that wrote it read them.
//!
//! `write_fixture` writes them with the code it is compiled with: at the commit that
//! introduces a format version, `BRINE_WRITE_FIXTURE=1 cargo test --workspace --test
//! fixtures the_fixture_generator` writes that version's fixture (without the variable
//! the same test writes into a temporary directory, so the generator never rots). The
//! other tests open every committed fixture with today's code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use brine_rocksdb::{Inspector, OpenOptions, RocksExecutionStore, RocksJobStore};
use brine_store::keys::printable;
use brine_store::model::{
    ComputeState, Evaluation, EvaluationId, Event, Execution, ExecutionId, ExecutionState, Job, JobId, JobState,
    JobType, NodeId, Timestamp,
};
use brine_store::{rules, ExecutionStore, JobStore, ManualClock, UpdateExecutionRequest, UpdateJobStateRequest};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Every key (printable) and decoded value of every family of the store at `path`.
fn dump(path: &Path) -> BTreeMap<String, BTreeMap<String, serde_json::Value>> {
    let ins = Inspector::open(path).expect("open for inspection");
    let mut out = BTreeMap::new();
    for cf in ins.families() {
        let mut keys = Vec::new();
        ins.keys(*cf, b"", |k| {
            keys.push(k.to_vec());
            true
        })
        .expect("keys");
        let mut family = BTreeMap::new();
        for k in keys {
            let value = ins.get_json(*cf, &k).expect("decode").expect("present");
            family.insert(printable(&k), value);
        }
        out.insert(cf.name().to_owned(), family);
    }
    out
}

fn job(n: usize) -> Job {
    let mut job = Job::new(JobId::new(format!("job-{n}")).unwrap(), format!("name-{n}"));
    job.namespace = if n.is_multiple_of(3) { "team-a".into() } else { "default".into() };
    job.job_type = if n.is_multiple_of(4) { JobType::Service } else { JobType::Batch };
    job.labels.insert("tier".into(), if n.is_multiple_of(2) { "gold" } else { "silver" }.into());
    job.labels.insert("max".into(), n.to_string());
    job
}

async fn write_requester(path: &Path, clock: &Arc<ManualClock>) {
    let options = OpenOptions { clock: clock.clone(), ..OpenOptions::default() };
    let s = RocksJobStore::open(path, &options).unwrap();
    let states = [
        JobState::Pending,
        JobState::Running,
        JobState::Completed,
        JobState::Failed,
        JobState::Stopped,
        JobState::Completed,
        JobState::Running,
    ];
    for (i, state) in states.into_iter().enumerate() {
        clock.advance(Duration::from_secs(60));
        let j = s.create_job(job(i + 1)).await.unwrap();
        if state != JobState::Pending {
            s.update_job_state(UpdateJobStateRequest::new(j.id.clone(), state, "stored")).await.unwrap();
        }
    }
    // A queue: one job queued, one grabbed.
    for n in [8, 9] {
        clock.advance(Duration::from_secs(60));
        s.enqueue("q1", job(n)).await.unwrap();
    }
    s.grab_next("q1").await.unwrap().expect("a queued job");
    // A second version, history events, an evaluation, requester-side executions.
    let mut j2 = s.get_job(&JobId::new("job-2").unwrap()).await.unwrap();
    j2.labels.insert("tier".into(), "platinum".into());
    s.update_job(j2).await.unwrap();
    s.add_job_event(&JobId::new("job-7").unwrap(), vec![Event::new("note", "kept", Timestamp::from_secs(5))])
        .await
        .unwrap();
    s.create_evaluation(Evaluation::new(EvaluationId::new("eval-1").unwrap(), "default", JobId::new("job-2").unwrap()))
        .await
        .unwrap();
    let mut e = Execution::new(ExecutionId::new("e-req-1").unwrap(), &job(2));
    e.node_id = Some(NodeId::new("node-b").unwrap());
    s.create_execution(e).await.unwrap();
    // A purged job: the retained table names its archive.
    let purged = s.get_job(&JobId::new("job-3").unwrap()).await.unwrap();
    s.purge_jobs(&[(purged.id.clone(), rules::purge_stamp(&purged))], "job_archive_100.jsonl").await.unwrap();
    // What a watcher leaves: a checkpoint below the head.
    let log = s.event_log();
    let head = log.head().await.unwrap();
    log.checkpoint("fixture-watcher", head - 2).await.unwrap();
    s.close().await.unwrap();
}

async fn write_compute(path: &Path, clock: &Arc<ManualClock>) {
    let options = OpenOptions { clock: clock.clone(), ..OpenOptions::default() };
    let s = RocksExecutionStore::open(path, &options).unwrap();
    let states = [
        ExecutionState::Running,
        ExecutionState::Completed,
        ExecutionState::BidAccepted,
        ExecutionState::Failed,
        ExecutionState::Created,
    ];
    for (i, state) in states.into_iter().enumerate() {
        clock.advance(Duration::from_secs(60));
        let mut e = Execution::new(ExecutionId::new(format!("e-{}", i + 1)).unwrap(), &job(i + 1));
        e.compute_state = ComputeState::new(ExecutionState::Created, "new");
        let events = vec![Event::new("scheduling", "bid submitted", Timestamp::from_secs(1))];
        let e = s.create_execution(e, events).await.unwrap();
        if state != ExecutionState::Created {
            s.update_execution_state(UpdateExecutionRequest::to_state(e.id, state, "stored")).await.unwrap();
        }
    }
    s.delete_execution(&ExecutionId::new("e-4").unwrap()).await.unwrap();
    s.checkpoint("fixture-watcher", 4).await.unwrap();
    s.close().await.unwrap();
}

/// Writes the fixture of this build's format version into `dir`.
async fn write_fixture(dir: &Path) {
    if dir.exists() {
        std::fs::remove_dir_all(dir).unwrap();
    }
    std::fs::create_dir_all(dir).unwrap();
    let clock = Arc::new(ManualClock::default());
    for (kind, path) in [("requester", dir.join("requester.db")), ("compute", dir.join("compute.db"))] {
        if kind == "requester" {
            write_requester(&path, &clock).await;
        } else {
            write_compute(&path, &clock).await;
        }
        let text = serde_json::to_string_pretty(&dump(&path)).unwrap();
        std::fs::write(dir.join(format!("{kind}.json")), text + "\n").unwrap();
        // RocksDB's own logs and options files are not part of the format.
        for entry in std::fs::read_dir(&path).unwrap() {
            let p = entry.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with("LOG") || name.starts_with("OPTIONS") || name == "LOCK" {
                std::fs::remove_file(&p).unwrap();
            }
        }
    }
}

/// The generator writes clean stores whose dumps read back. With `BRINE_WRITE_FIXTURE`
/// set it writes `tests/fixtures/v<SCHEMA_VERSION>/` (once per format version, at the
/// commit that introduces it); otherwise into a temporary directory.
#[tokio::test]
async fn the_fixture_generator_writes_clean_stores() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = match std::env::var_os("BRINE_WRITE_FIXTURE") {
        Some(_) => fixtures_dir().join(format!("v{}", brine_rocksdb::SCHEMA_VERSION)),
        None => tmp.path().join("fixture"),
    };
    write_fixture(&dir).await;
    for kind in ["requester", "compute"] {
        let path = dir.join(format!("{kind}.db"));
        let written: BTreeMap<String, BTreeMap<String, serde_json::Value>> =
            serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{kind}.json"))).unwrap()).unwrap();
        let report = Inspector::open(&path).unwrap().check().unwrap();
        assert!(report.is_ok(), "{kind}: {:#?}", report.problems);
        let now = dump(&path);
        for (family, entries) in written {
            for (key, value) in entries {
                if !moves_on_migration(&family, &key) {
                    assert_eq!(now[&family].get(&key), Some(&value), "{kind}: {family} {key}");
                }
            }
        }
    }
}

/// The fixture stores of `version`, copied into `dir` (tests never write the originals).
fn copy_fixture(version: u64, dir: &Path) -> (PathBuf, PathBuf) {
    let from = fixtures_dir().join(format!("v{version}"));
    let mut out = Vec::new();
    for kind in ["requester", "compute"] {
        let src = from.join(format!("{kind}.db"));
        let dst = dir.join(format!("{kind}.db"));
        std::fs::create_dir_all(&dst).unwrap();
        for entry in std::fs::read_dir(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display())) {
            let p = entry.unwrap().path();
            std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
        }
        out.push(dst);
    }
    (out.remove(0), out.remove(0))
}

/// Every key and raw value of every family, read without Brine (for "nothing changed").
fn raw_contents(path: &Path) -> BTreeMap<(String, Vec<u8>), Vec<u8>> {
    let opts = brine_rocksdb::db_options();
    let cfs = rocksdb::DB::list_cf(&opts, path).unwrap();
    let db = rocksdb::DB::open_cf_for_read_only(&opts, path, &cfs, false).unwrap();
    let mut all = BTreeMap::new();
    for name in &cfs {
        let cf = db.cf_handle(name).unwrap();
        for item in db.iterator_cf(cf, rocksdb::IteratorMode::Start) {
            let (k, v) = item.unwrap();
            all.insert((name.clone(), k.to_vec()), v.to_vec());
        }
    }
    all
}

fn expected_dump(version: u64, kind: &str) -> BTreeMap<String, BTreeMap<String, serde_json::Value>> {
    let text = std::fs::read_to_string(fixtures_dir().join(format!("v{version}/{kind}.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Meta keys a migration or an open rewrites: the version, the step records, the open
/// marker.
fn moves_on_migration(family: &str, key: &str) -> bool {
    family == "meta" && (key == "schema_version" || key == "open" || key.starts_with("migrated"))
}

#[test]
fn every_past_format_version_has_a_fixture() {
    for version in 1..brine_rocksdb::SCHEMA_VERSION {
        for file in ["requester.db/CURRENT", "requester.json", "compute.db/CURRENT", "compute.json"] {
            let path = fixtures_dir().join(format!("v{version}/{file}"));
            assert!(
                path.exists(),
                "format version {} has no fixture {}: write it with generate_fixture at the commit of that version",
                version,
                path.display()
            );
        }
    }
}

#[tokio::test]
async fn every_past_fixture_migrates_and_reads_back() {
    for version in 1..brine_rocksdb::SCHEMA_VERSION {
        let dir = tempfile::tempdir().unwrap();
        let (requester, compute) = copy_fixture(version, dir.path());
        // Opening is refused, naming the command, and changes nothing.
        for path in [&requester, &compute] {
            let before = raw_contents(path);
            let refused = if path == &compute {
                RocksExecutionStore::open(path, &OpenOptions::default()).err()
            } else {
                RocksJobStore::open(path, &OpenOptions::default()).err()
            };
            let err = refused.unwrap_or_else(|| panic!("v{version} {} opened without migrating", path.display()));
            let err = err.to_string();
            assert!(err.contains(&format!("upgrade it with `brine migrate up {}`", path.display())), "{err}");
            assert!(raw_contents(path) == before, "v{version}: a refused open changed the store");
            let status = brine_rocksdb::migrate::status(path).unwrap();
            assert_eq!((status.current, status.target), (version, brine_rocksdb::SCHEMA_VERSION));
            assert!(!status.pending.is_empty());
            let dry = brine_rocksdb::migrate::up(path, true, |_, _| {}).unwrap();
            assert!(dry.dry_run && dry.to == brine_rocksdb::SCHEMA_VERSION);
            assert!(raw_contents(path) == before, "v{version}: a dry run changed the store");
            let report = brine_rocksdb::migrate::up(path, false, |_, _| {}).unwrap();
            assert_eq!((report.from, report.to), (version, brine_rocksdb::SCHEMA_VERSION));
        }
        // Everything the old version held reads back the same.
        for (kind, path) in [("requester", &requester), ("compute", &compute)] {
            let now = dump(path);
            for (family, entries) in expected_dump(version, kind) {
                for (key, value) in entries {
                    if moves_on_migration(&family, &key) {
                        continue;
                    }
                    assert_eq!(now[&family].get(&key), Some(&value), "v{version} {kind}: {family} {key}");
                }
            }
        }
        // And today's code finds it whole and uses the new indexes.
        let jobs = RocksJobStore::open(&requester, &OpenOptions::default()).unwrap();
        let report = jobs.check().await.unwrap();
        assert!(report.is_ok(), "v{version} requester: {:#?}", report.problems);
        let all = jobs.list_jobs(&brine_store::JobQuery { limit: 1000, ..Default::default() }).await.unwrap().jobs;
        for state in JobState::ALL {
            let q = brine_store::JobQuery { states: vec![state], limit: 1000, ..Default::default() };
            let listed: Vec<JobId> = jobs.list_jobs(&q).await.unwrap().jobs.into_iter().map(|j| j.id).collect();
            let want: Vec<JobId> = all.iter().filter(|j| j.state() == state).map(|j| j.id.clone()).collect();
            assert_eq!(listed, want, "v{version}: jobs in {state:?}");
        }
        let q = brine_store::JobQuery { selector: "tier=gold".parse().unwrap(), limit: 1000, ..Default::default() };
        let gold: Vec<JobId> = jobs.list_jobs(&q).await.unwrap().jobs.into_iter().map(|j| j.id).collect();
        let want: Vec<JobId> = all.iter().filter(|j| j.labels["tier"] == "gold").map(|j| j.id.clone()).collect();
        assert!(!want.is_empty());
        assert_eq!(gold, want, "v{version}: jobs labelled tier=gold");
        let purged = jobs.get_job(&JobId::new("job-3").unwrap()).await.unwrap_err();
        assert!(purged.to_string().contains("job_archive_100.jsonl"), "{purged}");
        jobs.close().await.unwrap();
        let execs = RocksExecutionStore::open(&compute, &OpenOptions::default()).unwrap();
        let report = execs.check().await.unwrap();
        assert!(report.is_ok(), "v{version} compute: {:#?}", report.problems);
        execs.close().await.unwrap();
    }
}

#[tokio::test]
async fn a_migration_run_again_after_an_interruption_finishes_the_same() {
    // A step only counts once its final batch has moved the version: a store put back
    // to the old version after (part of) a step has run migrates again to the same end.
    let dir = tempfile::tempdir().unwrap();
    let (requester, _) = copy_fixture(1, dir.path());
    brine_rocksdb::migrate::up(&requester, false, |_, _| {}).unwrap();
    let done = raw_contents(&requester);
    {
        let opts = brine_rocksdb::db_options();
        let cfs = rocksdb::DB::list_cf(&opts, &requester).unwrap();
        let db = rocksdb::DB::open_cf(&opts, &requester, cfs).unwrap();
        let meta = db.cf_handle("meta").unwrap();
        db.put_cf(meta, b"schema_version", brine_rocksdb::codec::encode(&1u64)).unwrap();
        // Half of the new entries lost, as if the step had stopped midway.
        let idx = db.cf_handle("idx_jobs_by_label_modify_time").unwrap();
        let keys: Vec<Vec<u8>> =
            db.iterator_cf(idx, rocksdb::IteratorMode::Start).map(|i| i.unwrap().0.to_vec()).collect();
        for k in keys.iter().step_by(2) {
            db.delete_cf(idx, k).unwrap();
        }
    }
    brine_rocksdb::migrate::up(&requester, false, |_, _| {}).unwrap();
    let again = raw_contents(&requester);
    let differs: Vec<_> = done
        .keys()
        .chain(again.keys())
        .filter(|k| done.get(*k) != again.get(*k))
        .filter(|(family, key)| !moves_on_migration(family, &printable(key)))
        .collect();
    assert!(differs.is_empty(), "{differs:?}");
    let jobs = RocksJobStore::open(&requester, &OpenOptions::default()).unwrap();
    assert!(jobs.check().await.unwrap().is_ok());
    jobs.close().await.unwrap();
}
