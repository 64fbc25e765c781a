//! A purge killed with SIGKILL at random moments loses nothing: after each kill, every
//! original job is in the store, in a complete archive, or both; a re-run then finishes
//! the job with no id indexed twice (RocksDB, `Sync`).
//!
//! The test binary re-runs itself as the child: with `BRINE_PURGE_CHILD` set to a
//! directory, `purge_child` purges the store in it. `BRINE_PURGE_CRASH_ROUNDS` sets the
//! number of kills (default 20).

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use brine_purge::{purge, Compression, PurgeOptions, Source};
use brine_rocksdb::Durability;
use brine_store::{JobQuery, JobStore, ManualClock, StoreError};
use support::{archived_ids, fill, index_lines, jid, rocks_jobs};

const CHILD: &str = "BRINE_PURGE_CHILD";
const JOBS: usize = 240;

/// The clock every process agrees on: `OLD` after the jobs were written.
fn clock() -> Arc<ManualClock> {
    let clock = ManualClock::default();
    clock.advance(support::OLD + Duration::from_secs(3600));
    Arc::new(clock)
}

fn options(dir: &Path) -> PurgeOptions {
    PurgeOptions {
        max_per_file: 7,
        delete_batch: 2,
        compression: Compression::Zstd,
        clock: clock(),
        ..PurgeOptions::new(dir.join("archive"))
    }
}

/// The child: purges the store in `$BRINE_PURGE_CHILD`.
#[tokio::test]
async fn purge_child() {
    let Ok(dir) = std::env::var(CHILD) else { return };
    let dir = Path::new(&dir);
    let store = Arc::new(rocks_jobs(&dir.join("node-requester.db"), clock(), Durability::Sync));
    println!("ready");
    purge(&Source::Jobs(store.clone()), &options(dir)).await.unwrap();
    store.close().await.unwrap();
    println!("done");
}

async fn job_ids(store: &dyn JobStore) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut query = JobQuery { limit: 500, ..JobQuery::default() };
    loop {
        let page = store.list_jobs(&query).await.unwrap();
        out.extend(page.jobs.iter().map(|j| j.id.to_string()));
        match page.next_token {
            Some(t) => query.token = Some(t),
            None => return out,
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

#[tokio::test]
async fn a_purge_killed_at_random_moments_loses_nothing() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let rounds: u64 = std::env::var("BRINE_PURGE_CRASH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(20);
    let base = tempfile::tempdir().unwrap();
    let original = base.path().join("original");
    {
        let clock = Arc::new(ManualClock::default());
        let store = rocks_jobs(&original.join("node-requester.db"), clock.clone(), Durability::Buffered);
        fill(&store, &clock, JOBS).await;
        store.close().await.unwrap();
    }
    let all: BTreeSet<String> = {
        let store = rocks_jobs(&original.join("node-requester.db"), clock(), Durability::Buffered);
        let ids = job_ids(&store).await;
        store.close().await.unwrap();
        ids
    };
    let old: BTreeSet<String> = all.iter().filter(|id| id.starts_with("old-")).cloned().collect();
    assert_eq!(old.len(), JOBS);

    // How long a whole purge takes here, to spread the kills over it.
    let full = {
        let dir = base.path().join("timing");
        copy_dir(&original, &dir);
        let t = Instant::now();
        let status = Command::new(std::env::current_exe().unwrap())
            .args(["purge_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, &dir)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        t.elapsed()
    };

    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut mid_run = 0;
    for round in 0..rounds {
        let dir = base.path().join(format!("round-{round}"));
        copy_dir(&original, &dir);
        // Some rounds kill a re-run of an already killed purge.
        let kills = if round % 4 == 3 { 2 } else { 1 };
        for _ in 0..kills {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let delay = full.mul_f64((seed % 1000) as f64 / 1000.0);
            let mut child = Command::new(std::env::current_exe().unwrap())
                .args(["purge_child", "--exact", "--nocapture", "--test-threads=1"])
                .env(CHILD, &dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(delay);
            child.kill().unwrap();
            child.wait().unwrap();
        }

        // Nothing lost: every job is in the store or in a complete archive.
        let archive = dir.join("archive");
        let store = Arc::new(rocks_jobs(&dir.join("node-requester.db"), clock(), Durability::Sync));
        let stored = job_ids(store.as_ref()).await;
        let archived: BTreeSet<String> = archived_ids(&archive).into_iter().collect();
        let union: BTreeSet<String> = stored.union(&archived).cloned().collect();
        assert_eq!(union, all, "round {round}: the store and the archives together hold every job");
        assert!(archived.iter().all(|id| old.contains(id)), "round {round}: only old terminal jobs are archived");
        if !stored.is_superset(&old) && stored.iter().any(|id| old.contains(id)) {
            mid_run += 1;
        }

        // A re-run finishes: every old job archived once, indexed once, gone from the store.
        let report = purge(&Source::Jobs(store.clone()), &options(&dir)).await.unwrap();
        let stored = job_ids(store.as_ref()).await;
        assert!(stored.is_disjoint(&old), "round {round}: {report}");
        let lines = index_lines(&archive);
        let indexed: BTreeSet<String> = lines.iter().map(|(id, _)| id.clone()).collect();
        assert_eq!(lines.len(), indexed.len(), "round {round}: an id is indexed twice");
        assert_eq!(indexed, old, "round {round}: the index holds every old job");
        for id in old.iter().step_by(17) {
            let err = store.get_job(&jid(id)).await.unwrap_err();
            assert!(matches!(err, StoreError::Archived { .. }), "round {round}: {err}");
            assert!(brine_purge::read_archived(&archive, id).unwrap().is_some(), "round {round}: {id}");
        }
        let markers = std::fs::read_dir(&archive)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with(brine_purge::PENDING_FILE))
            .count();
        assert_eq!(markers, 0, "round {round}: a pending marker is left");
        store.close().await.unwrap();
    }
    assert!(mid_run * 2 >= rounds, "only {mid_run} of {rounds} kills landed mid-purge (a purge takes {full:?})");
}
