//! A full disk in the middle of writes, with a real process: this test binary re-runs
//! itself as a child under `prlimit --fsize` (a file-size limit, so the disk is "full"
//! once the write-ahead log reaches it) with `SIGXFSZ` ignored, so a write past the
//! limit fails with `EFBIG` the way a full disk fails with `ENOSPC`.
//!
//! The child writes until a write fails and prints every acknowledged write. The parent
//! checks that the failure poisoned the store cleanly (the failed write and every later
//! one get `Poisoned`, reads still work, close releases the store), then reopens the
//! store without the limit and finds every acknowledged write, a clean `check`, and a
//! store that takes writes again. Both durabilities.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use brine_rocksdb::{Durability, OpenOptions, RocksExecutionStore};
use brine_store::model::{Execution, ExecutionId, Job, JobId};
use brine_store::{ExecutionStore, StoreError};

const CHILD_DIR: &str = "BRINE_FULL_DISK_CHILD_DIR";
const CHILD_DURABILITY: &str = "BRINE_FULL_DISK_DURABILITY";
/// The file-size limit: a write-ahead log of this size holds a few hundred writes.
const LIMIT_BYTES: u64 = 256 * 1024;

fn options(durability: Durability) -> OpenOptions {
    OpenOptions { durability, ..OpenOptions::default() }
}

fn execution(i: usize) -> Execution {
    let job = Job::new(JobId::new(format!("job{}", i % 7)).expect("id"), "job");
    let mut e = Execution::new(ExecutionId::new(format!("e{i:05}")).expect("id"), &job);
    // Some bulk, so the log fills in a few hundred writes.
    e.compute_state.message = "m".repeat(1000);
    e
}

/// The child: writes until the first failure, then reports what happened after it.
async fn child(dir: &Path, durability: Durability) {
    let store = RocksExecutionStore::open(dir.join("store.db"), &options(durability)).expect("open");
    let mut out = std::io::stdout();
    let mut i = 0;
    let first = loop {
        match store.create_execution(execution(i), vec![]).await {
            Ok(_) => writeln!(out, "ACK e{i:05}").expect("stdout"),
            Err(e) => break e,
        }
        out.flush().expect("stdout");
        i += 1;
        assert!(i < 100_000, "the file-size limit never stopped a write");
    };
    writeln!(out, "FIRST {}", kind(&first)).expect("stdout");
    for j in 1..=3 {
        let later = store.create_execution(execution(i + j), vec![]).await.expect_err("a write after the failure");
        writeln!(out, "LATER {}", kind(&later)).expect("stdout");
    }
    let read = store.get_execution(&ExecutionId::new("e00000").expect("id")).await;
    writeln!(out, "READ {}", if read.is_ok() { "ok" } else { "failed" }).expect("stdout");
    let closed = store.close().await;
    writeln!(out, "CLOSE {}", closed.map_or_else(|e| format!("error {e}"), |()| "ok".into())).expect("stdout");
    // Close released the store, even though its final flush could not be written.
    let reopened = RocksExecutionStore::open(dir.join("store.db"), &options(durability));
    writeln!(out, "REOPEN {}", reopened.map_or_else(|e| format!("error {e}"), |_| "ok".into())).expect("stdout");
    out.flush().expect("stdout");
}

fn kind(e: &StoreError) -> String {
    match e {
        StoreError::Poisoned { reason } => format!("Poisoned {reason}"),
        other => format!("Other {other}"),
    }
}

fn run_child(dir: &Path, durability: Durability) -> String {
    let exe = std::env::current_exe().expect("test binary");
    // `trap '' XFSZ` ignores the signal (ignored signals stay ignored across exec), so
    // a write past the limit returns EFBIG instead of killing the process.
    let out = Command::new("sh")
        .arg("-c")
        .arg("trap '' XFSZ; exec prlimit --fsize=\"$0\" -- \"$@\"")
        .arg(LIMIT_BYTES.to_string())
        .arg(exe)
        .args(["--exact", "a_full_disk_poisons_the_store_and_loses_no_acknowledged_write", "--nocapture"])
        .env(CHILD_DIR, dir)
        .env(CHILD_DURABILITY, format!("{durability:?}"))
        .output()
        .expect("run the child under prlimit (util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the child failed: {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

async fn full_disk(durability: Durability) {
    let dir = tempfile::tempdir().expect("temp dir");
    let stdout = run_child(dir.path(), durability);
    let acked: Vec<&str> = stdout.lines().filter_map(|l| l.strip_prefix("ACK ")).collect();
    let line = |prefix: &str| -> Vec<&str> { stdout.lines().filter_map(|l| l.strip_prefix(prefix)).collect() };
    assert!(acked.len() > 10, "{durability:?}: the child wrote something before the disk filled:\n{stdout}");
    let first = line("FIRST ");
    assert_eq!(first.len(), 1, "{stdout}");
    assert!(first[0].starts_with("Poisoned "), "{durability:?}: the failed write poisons the store: {}", first[0]);
    let later = line("LATER ");
    assert_eq!(later.len(), 3, "{stdout}");
    for l in later {
        assert!(l.starts_with("Poisoned "), "{durability:?}: writes after the failure are refused: {l}");
    }
    assert_eq!(line("READ "), ["ok"], "{durability:?}: reads still work on a poisoned store");
    assert_eq!(line("CLOSE ").len(), 1, "{durability:?}: close returns:\n{stdout}");
    let reopen = line("REOPEN ");
    assert!(reopen.len() == 1 && !reopen[0].contains("in use"), "{durability:?}: close released the store: {reopen:?}");

    // With room again: every acknowledged write is there, and the store is whole.
    let store = RocksExecutionStore::open(dir.path().join("store.db"), &options(durability)).expect("reopen");
    for id in &acked {
        let got = store.get_execution(&ExecutionId::new(*id).expect("id")).await;
        assert!(got.is_ok(), "{durability:?}: acknowledged write {id} is in the store: {got:?}");
    }
    let report = store.check().await.expect("check");
    assert!(report.is_ok(), "{durability:?}: check after the full disk: {:#?}", report.problems);
    store.create_execution(execution(99_999), vec![]).await.expect("writes work again once there is room");
    store.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_poisons_the_store_and_loses_no_acknowledged_write() {
    if let Some(dir) = std::env::var_os(CHILD_DIR) {
        let durability = match std::env::var(CHILD_DURABILITY).as_deref() {
            Ok("Sync") => Durability::Sync,
            _ => Durability::Buffered,
        };
        child(Path::new(&dir), durability).await;
        return;
    }
    full_disk(Durability::Sync).await;
    full_disk(Durability::Buffered).await;
}
