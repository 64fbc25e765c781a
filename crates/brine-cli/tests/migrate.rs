//! `brine migrate up` killed with SIGKILL at random moments, then run again: it finishes,
//! the store checks clean and holds every job. And `--to` outside the known versions is
//! refused naming both.

mod support;

use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::sync::Arc;
use std::time::Instant;

use brine_rocksdb::{Durability, OpenOptions, RocksJobStore};
use brine_store::model::{Job, JobId};
use brine_store::JobStore;
use support::{brine, error_line, stdout};

const JOBS: usize = 20_000;

/// A requester store of `JOBS` jobs as the format version before this one wrote it:
/// the version set back, and the families the last step fills dropped.
async fn older_store(path: &Path) {
    let options = OpenOptions { durability: Durability::Buffered, ..OpenOptions::default() };
    let store = Arc::new(RocksJobStore::open(path, &options).unwrap());
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in (w..JOBS).step_by(8) {
                    let mut job = Job::new(JobId::new(format!("job-{i:06}")).unwrap(), format!("name-{i}"));
                    job.labels.insert("team".into(), format!("t{}", i % 7));
                    store.create_job(job).await.unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    store.close().await.unwrap();
    let opts = brine_rocksdb::db_options();
    let cfs = rocksdb::DB::list_cf(&opts, path).unwrap();
    let mut db = rocksdb::DB::open_cf(&opts, path, cfs).unwrap();
    let previous = brine_rocksdb::SCHEMA_VERSION - 1;
    db.put_cf(db.cf_handle("meta").unwrap(), b"schema_version", brine_rocksdb::codec::encode(&previous)).unwrap();
    for cf in [
        "idx_jobs_by_state_create_time",
        "idx_jobs_by_state_modify_time",
        "idx_jobs_by_label_create_time",
        "idx_jobs_by_label_modify_time",
    ] {
        db.drop_cf(cf).unwrap();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn migrate(path: &Path) -> Process {
    let mut cmd = Process::new(env!("CARGO_BIN_EXE_brine"));
    cmd.args(["migrate", "up", "--no-backup"])
        .arg(path)
        .env_remove("BRINE_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_up_killed_midway_finishes_when_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("older.db");
    older_store(&original).await;
    // How long a whole run takes, on a copy.
    let timed = dir.path().join("timed.db");
    copy_dir(&original, &timed);
    let started = Instant::now();
    assert!(migrate(&timed).status().unwrap().success());
    let full = started.elapsed();
    let rounds = std::env::var("BRINE_MIGRATE_KILL_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(6u32);
    let mut midway = 0;
    for round in 0..rounds {
        let path = dir.path().join(format!("round-{round}.db"));
        copy_dir(&original, &path);
        let mut child = migrate(&path).spawn().unwrap();
        // Spread over the run: from its start to just before its end.
        let at = full.mul_f64(f64::from(round + 1) / f64::from(rounds + 1));
        std::thread::sleep(at);
        if child.try_wait().unwrap().is_none() {
            midway += 1;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Run again: it finishes, and the store is whole.
        let text = stdout(brine().args(["migrate", "up", "--no-backup"]).arg(&path));
        assert!(text.contains("format version") || text.contains("nothing to do"), "round {round}: {text}");
        assert_eq!(stdout(brine().args(["db", "check"]).arg(&path)), "OK\n", "round {round}");
        assert_eq!(stdout(brine().args(["db", "keys", "--count"]).arg(&path).arg("jobs")), format!("{JOBS}\n"));
        let by_label = stdout(brine().args(["db", "keys", "--count"]).arg(&path).arg("idx_jobs_by_label_create_time"));
        assert_eq!(by_label, format!("{JOBS}\n"), "round {round}: every job indexed by its label");
        std::fs::remove_dir_all(&path).unwrap();
    }
    eprintln!("{midway} of {rounds} kills landed while the migration ran (a whole run takes {full:?})");
    assert!(midway >= 1, "no kill of {rounds} landed while the migration ran (a run takes {full:?})");
}

#[tokio::test]
async fn to_names_a_version_this_build_can_reach() {
    let dir = tempfile::tempdir().unwrap();
    let path = support::requester_store(dir.path(), 2).await;
    let current = brine_rocksdb::SCHEMA_VERSION;
    let err = error_line(brine().args(["migrate", "up", "--to", &(current + 1).to_string()]).arg(&path));
    assert!(err.contains(&format!("to version {}: this build knows versions up to {current}", current + 1)), "{err}");
    let err = error_line(brine().args(["migrate", "up", "--to", "1"]).arg(&path));
    assert!(err.contains(&format!("the store is at version {current} already")), "{err}");
    let text = stdout(brine().args(["migrate", "up", "--to", &current.to_string()]).arg(&path));
    assert!(text.contains("nothing to do"), "{text}");
}

/// `brine migrate status|up postgres:URL`: a database's schema version and pending
/// steps; `up` applies them in one transaction, a dry run writes nothing, and RocksDB's
/// backup and `--to` are refused by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_status_and_up_on_a_postgres_database() {
    let database = brine_postgres::testing::empty_database().await;
    let url = format!("postgres:{}", brine_postgres::testing::url_for(&database));
    let status = stdout(brine().args(["migrate", "status", &url]));
    assert!(status.starts_with(&format!("database {database}: schema version 0, this build writes 1\n")), "{status}");
    assert!(status.contains("  1: the seed's compute.jobs"), "{status}");
    let dry = stdout(brine().args(["migrate", "up", "--dry-run", &url]));
    assert!(dry.contains("would go from schema version 0 to 1"), "{dry}");
    let err = error_line(brine().args(["migrate", "up", "--backup", "/tmp/x", &url]));
    assert_eq!(
        err,
        "error: --backup is for RocksDB stores: back a PostgreSQL schema up with pg_dump (docs/POSTGRES.md)"
    );
    let err = error_line(brine().args(["migrate", "up", "--to", "7", &url]));
    assert_eq!(err, "error: --to: a PostgreSQL schema moves to this build's version (1) in one transaction");
    let still = support::json(brine().args(["migrate", "status", "--json", &url]));
    assert_eq!(still["current"], 0, "a dry run and refused runs write nothing: {still}");
    let up = support::json(brine().args(["migrate", "up", "--json", &url]));
    assert_eq!((up["from"].as_u64(), up["to"].as_u64()), (Some(0), Some(1)), "{up}");
    let done = stdout(brine().args(["migrate", "status", &url]));
    assert!(done.ends_with("schema version 1, this build writes 1\nup to date\n"), "{done}");
    let again = stdout(brine().args(["migrate", "up", &url]));
    assert!(again.contains("is at schema version 1: nothing to do"), "{again}");
}
