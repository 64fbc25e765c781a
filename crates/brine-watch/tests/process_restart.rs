//! A durable watcher in a real process, killed with SIGKILL while it delivers, resumes in
//! the next process re-seeing at most one batch and skipping nothing (RocksDB, `Sync`).
//!
//! The test binary re-runs itself as the child: with `BRINE_WATCH_CHILD_DIR` set,
//! `watch_child` opens the store and runs the watcher, whose handler appends each
//! delivered sequence number to a file and fsyncs it before returning.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use brine_rocksdb::{Durability, OpenOptions, RocksExecutionStore};
use brine_store::model::LogEntry;
use brine_store::{async_trait, ExecutionStore};
use brine_watch::{Handler, HandlerError, Watcher, WatcherOptions};

const CHILD_DIR: &str = "BRINE_WATCH_CHILD_DIR";
const ENTRIES: u64 = 400;
const BATCH: usize = 10;

fn open(dir: &Path) -> RocksExecutionStore {
    let options = OpenOptions { durability: Durability::Sync, ..OpenOptions::default() };
    RocksExecutionStore::open(dir.join("n-compute.db"), &options).expect("open")
}

fn options() -> WatcherOptions {
    WatcherOptions { batch_size: BATCH, ..WatcherOptions::default() }
}

/// Appends every delivered sequence number to `seen.log`, synced before returning.
struct FileRecorder(Mutex<std::fs::File>);

#[async_trait]
impl Handler for FileRecorder {
    async fn handle(&self, entries: &[LogEntry]) -> Result<(), HandlerError> {
        {
            let mut f = self.0.lock().unwrap();
            for e in entries {
                writeln!(f, "{}", e.seq)?;
            }
            f.sync_data()?;
        }
        // Slow enough that the kill lands mid-stream.
        tokio::time::sleep(Duration::from_millis(3)).await;
        Ok(())
    }
}

fn recorder(dir: &Path) -> Arc<FileRecorder> {
    let f = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("seen.log")).unwrap();
    Arc::new(FileRecorder(Mutex::new(f)))
}

fn seen(dir: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(dir.join("seen.log")).unwrap_or_default();
    // A line cut short by the kill has no newline and does not count.
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete.lines().map(|l| l.parse().expect("a sequence number")).collect()
}

/// The child: runs the watcher until killed (or, run directly, a short self-check).
#[test]
fn watch_child() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        // Run directly: one watcher over a few entries, to completion.
        let tmp = tempfile::tempdir().unwrap();
        rt.block_on(async {
            let store = open(tmp.path());
            for i in 0..25 {
                store.event_log().append("k", &i.to_string()).await.unwrap();
            }
            let w = Watcher::new("proc", store.event_log(), recorder(tmp.path()), options()).await.unwrap();
            w.start().unwrap();
            while w.stats().await.last_handled < 25 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            w.stop().await.unwrap();
            store.close().await.unwrap();
        });
        assert_eq!(seen(tmp.path()), (1..=25).collect::<Vec<_>>());
        return;
    };
    let dir = Path::new(&dir);
    rt.block_on(async {
        let store = open(dir);
        let w = Watcher::new("proc", store.event_log(), recorder(dir), options()).await.unwrap();
        w.start().unwrap();
        std::future::pending::<()>().await;
    });
}

#[test]
fn sigkill_resumes_with_at_most_one_batch_again() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let store = open(dir);
        for i in 0..ENTRIES {
            store.event_log().append("k", &i.to_string()).await.unwrap();
        }
        store.close().await.unwrap();
    });
    let exe = std::env::current_exe().unwrap();
    let mut delays = [40u64, 90, 150, 60, 120].into_iter().cycle();
    let mut handled_before = 0; // highest sequence number any earlier process delivered
    let mut restarts_with_progress = 0;
    for round in 1..=5 {
        let before = seen(dir).len();
        let mut child = Command::new(&exe)
            .args(["watch_child", "--exact", "--nocapture", "--test-threads", "1"])
            .env(CHILD_DIR, dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delays.next().unwrap()));
        child.kill().unwrap();
        child.wait().unwrap();
        let all = seen(dir);
        let this_round = &all[before..];
        if let Some(&first) = this_round.first() {
            restarts_with_progress += 1;
            assert!(first <= handled_before + 1, "round {round}: resumed at {first}, skipping past {handled_before}");
            let again = handled_before.saturating_sub(first) + 1;
            assert!(
                first > handled_before || again <= BATCH as u64,
                "round {round}: re-saw {again} entries, more than one batch of {BATCH}"
            );
            for pair in this_round.windows(2) {
                assert_eq!(pair[1], pair[0] + 1, "round {round}: delivered in order without gaps");
            }
            handled_before = handled_before.max(*this_round.last().unwrap());
        }
    }
    assert!(restarts_with_progress >= 2, "the children made progress before being killed");
    // Finish in this process: everything not yet handled arrives, from just after the
    // checkpoint.
    rt.block_on(async {
        let store = open(dir);
        let checkpoint = store.event_log().get_checkpoint("proc").await.unwrap();
        assert!(checkpoint <= handled_before && handled_before - checkpoint <= BATCH as u64);
        let before = seen(dir).len();
        let w = Watcher::new("proc", store.event_log(), recorder(dir), options()).await.unwrap();
        w.start().unwrap();
        while w.stats().await.last_handled < ENTRIES {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        w.stop().await.unwrap();
        let all = seen(dir);
        assert_eq!(all[before..].first().copied(), Some(checkpoint + 1).filter(|&s| s <= ENTRIES));
        let distinct: std::collections::BTreeSet<u64> = all.iter().copied().collect();
        assert_eq!(distinct, (1..=ENTRIES).collect(), "every entry was handled at least once");
        store.close().await.unwrap();
    });
}
