//! Recovery killed with SIGKILL in the middle (RocksDB) and run again ends in the same
//! state as one clean run.
//!
//! The test binary re-runs itself as the child: with `BRINE_RECOVERY_CHILD` set to a
//! store path, `recovery_child` opens that store and runs recovery, printing a line
//! after each batch; the parent kills it after a few lines.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use brine_recovery::{recover, CleanupReason, Policy, RecoveryOptions};
use brine_store::model::{ExecutionState, JobType};
use brine_store::{ExecutionStore, ManualClock, SystemClock};
use support::{create_in_state, end_state, execution, rocks_at};

const CHILD: &str = "BRINE_RECOVERY_CHILD";
const LIVE: usize = 1500;
const DONE: usize = 300;

/// fail-live, and terminal executions older than a day are deleted.
fn policy() -> Policy {
    Policy::from_toml(
        "preset = \"fail-live\"\n[[rule]]\njob_type = \"*\"\nstate = \"terminal\"\naction = \"delete-older-than\"\nage = \"1d\"\n",
    )
    .unwrap()
}

fn options() -> RecoveryOptions {
    RecoveryOptions { batch_size: 25, clock: Arc::new(SystemClock), ..RecoveryOptions::default() }
}

async fn build(path: &Path) {
    // Written on a clock at 2026-01-01, so every record is months old for the policy.
    let store = rocks_at(path, Arc::new(ManualClock::default()));
    let types = JobType::ALL;
    for i in 0..LIVE {
        let state = ExecutionState::LIVE[i % 5];
        create_in_state(&store, execution(&format!("e-{i:05}"), types[i % 4], state)).await;
    }
    for i in 0..DONE {
        let state = [ExecutionState::Completed, ExecutionState::Failed, ExecutionState::Cancelled][i % 3];
        create_in_state(&store, execution(&format!("t-{i:05}"), types[i % 4], state)).await;
    }
    store.close().await.unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// The child: recovery on the store at `$BRINE_RECOVERY_CHILD`, slowed so the kill lands.
#[tokio::test]
async fn recovery_child() {
    let Ok(path) = std::env::var(CHILD) else { return };
    let store = rocks_at(Path::new(&path), Arc::new(SystemClock));
    let progress = Arc::new(|p: brine_recovery::Progress| {
        println!("batch {} {}/{}", p.state, p.done, p.total);
        std::thread::sleep(Duration::from_millis(4));
    });
    let options = RecoveryOptions { progress: Some(progress), ..options() };
    recover(&store, &policy(), &options).await.unwrap();
    store.close().await.unwrap();
    println!("done");
}

#[tokio::test]
async fn a_run_killed_midway_and_run_again_equals_one_clean_run() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("original.db");
    build(&original).await;

    // One clean run on a copy: the state every other run must end in.
    let reference = dir.path().join("reference.db");
    copy_dir(&original, &reference);
    let store = rocks_at(&reference, Arc::new(SystemClock));
    let clean = recover(&store, &policy(), &options()).await.unwrap();
    assert_eq!(clean.changed() as usize, LIVE + DONE, "{clean}");
    let expected = end_state(&store).await;
    store.close().await.unwrap();

    for (round, kill_after) in [3usize, 17, 40].into_iter().enumerate() {
        let path = dir.path().join(format!("killed-{round}.db"));
        copy_dir(&original, &path);
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["recovery_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut batches = 0;
        while batches < kill_after {
            let line = lines.next().expect("the child ended early").unwrap();
            if line.starts_with("batch ") {
                batches += 1;
            }
            assert_ne!(line, "done", "the child finished before the kill");
        }
        child.kill().unwrap();
        child.wait().unwrap();

        let store = rocks_at(&path, Arc::new(SystemClock));
        assert!(store.unclean_shutdown(), "round {round}");
        let live: u64 = {
            let mut n = 0;
            for s in ExecutionState::LIVE {
                n += store.get_execution_count(s).await.unwrap();
            }
            n
        };
        assert!(live > 0 && live < LIVE as u64, "round {round}: the kill should land midway ({live} live left)");
        let report = recover(&store, &policy(), &options()).await.unwrap();
        assert_eq!(report.cleanup_reason, CleanupReason::UncleanShutdown);
        assert_eq!(report.cleaned(), 0, "round {round}: atomic batches leave nothing to repair\n{report}");
        assert_eq!(end_state(&store).await, expected, "round {round}");
        let problems = store.check().await.unwrap().problems;
        assert!(problems.is_empty(), "round {round}: {problems:?}");
        let again = recover(&store, &policy(), &options()).await.unwrap();
        assert_eq!(again.changed(), 0, "round {round}: {again}");
        store.close().await.unwrap();
    }
}
