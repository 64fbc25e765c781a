//! `brine db` inspects a store without writing to it: while a node holds it open and
//! writes, several at once, on a read-only mount, and killed mid-way without making the
//! next open believe the node crashed.

mod support;

use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::time::Duration;

use brine_store::model::{Event, ExecutionState, Timestamp};
use brine_store::ExecutionStore;
use support::{brine, contents, execution, open, store};

/// The `LOG*` files RocksDB keeps in the store's directory (each open rotates `LOG`).
fn info_logs(path: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(path)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("LOG"))
        .collect();
    names.sort();
    names
}

/// Every read-only `brine db` command on `path`, each of which must succeed.
fn inspections(path: &Path) -> Vec<assert_cmd::Command> {
    let p = path.to_str().unwrap();
    let mut all = Vec::new();
    for args in [
        vec!["db", "check", p],
        vec!["db", "check", p, "--json"],
        vec!["db", "buckets", p],
        vec!["db", "keys", p, "executions"],
        vec!["db", "get", p, "checkpoints", "metrics"],
        vec!["db", "stats", p, "--json"],
    ] {
        let mut cmd = brine();
        cmd.args(args);
        all.push(cmd);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_a_store_a_live_node_is_writing() {
    let dir = tempfile::tempdir().unwrap();
    let path = store(dir.path()).await;
    let node = open(&path);
    // The node keeps writing while the inspections run.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let node = node.clone();
        tokio::spawn(async move {
            let mut n = 100;
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                let events = vec![Event::new("scheduling", "bid", Timestamp::from_secs(1))];
                node.create_execution(execution(n, ExecutionState::Created), events).await.unwrap();
                n += 1;
            }
            n - 100
        })
    };
    let logs = info_logs(&path);
    let checks = tokio::task::spawn_blocking({
        let path = path.clone();
        move || {
            for mut cmd in inspections(&path) {
                cmd.assert().success();
            }
            // A check reads one consistent state: no problem a concurrent write only
            // seems to make.
            let out = brine().args(["db", "check", path.to_str().unwrap(), "--json"]).assert().success();
            let report: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
            assert_eq!(report["ok"], true, "{report}");
        }
    });
    checks.await.unwrap();
    stop.store(true, std::sync::atomic::Ordering::Release);
    let written = writer.await.unwrap();
    assert!(written > 0, "the node wrote during the inspections");
    assert_eq!(info_logs(&path), logs, "inspections do not touch the store's info log");
    assert!(!node.unclean_shutdown());
    node.close().await.unwrap();
}

#[tokio::test]
async fn inspections_run_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = store(dir.path()).await;
    let before = contents(&path);
    let p = path.to_str().unwrap();
    let children: Vec<_> = (0..4)
        .map(|i| {
            let family = ["executions", "events", "meta", "execution_events"][i];
            Process::new(env!("CARGO_BIN_EXE_brine"))
                .args(["db", "keys", p, family])
                .env_remove("BRINE_LOG")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // Two at once while a third runs its check.
    brine().args(["db", "check", p]).assert().success().stdout("OK\n");
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(contents(&path), before, "inspections wrote nothing");
}

/// A read-only bind mount of `source` at `target`, unmounted on drop.
struct ReadOnlyMount(std::path::PathBuf);

impl ReadOnlyMount {
    fn new(source: &Path, target: &Path) -> ReadOnlyMount {
        std::fs::create_dir_all(target).unwrap();
        let run = |args: &[&str]| {
            let out = Process::new("mount").args(args).output().expect("run mount");
            assert!(
                out.status.success(),
                "this test needs a read-only bind mount (run as root): mount {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&["--bind", source.to_str().unwrap(), target.to_str().unwrap()]);
        let mount = ReadOnlyMount(target.to_path_buf());
        run(&["-o", "remount,bind,ro", target.to_str().unwrap()]);
        mount
    }
}

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        let _ = Process::new("umount").arg(&self.0).status();
    }
}

#[tokio::test]
async fn inspect_a_store_on_a_read_only_mount() {
    let dir = tempfile::tempdir().unwrap();
    let path = store(dir.path()).await;
    let before = contents(&path);
    let mount = ReadOnlyMount::new(&path, &dir.path().join("ro"));
    assert!(std::fs::write(mount.0.join("probe"), b"x").is_err(), "the mount is read-only");
    for mut cmd in inspections(&mount.0) {
        cmd.assert().success();
    }
    brine().args(["db", "check", mount.0.to_str().unwrap()]).assert().success().stdout("OK\n");
    drop(mount);
    assert_eq!(contents(&path), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inspection_killed_midway_leaves_no_crash_behind() {
    let dir = tempfile::tempdir().unwrap();
    let path = store(dir.path()).await;
    {
        // Enough keys that the listing fills the pipe nobody reads, so the inspection is
        // still running (blocked writing) when it is killed.
        let node = open(&path);
        let writers: Vec<_> = (0..14)
            .map(|w| {
                let node = node.clone();
                tokio::spawn(async move {
                    for n in 0..600 {
                        let e = execution(1_000 + w * 1_000 + n, ExecutionState::Created);
                        node.create_execution(e, vec![]).await.unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        node.close().await.unwrap();
    }
    let before = contents(&path);
    let mut child = Process::new(env!("CARGO_BIN_EXE_brine"))
        .args(["db", "keys", path.to_str().unwrap(), "events", "--values"])
        // The killed inspection cannot remove its scratch directory: keep it in ours.
        .env("TMPDIR", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    assert!(child.try_wait().unwrap().is_none(), "the listing is still running, blocked on its full pipe");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_eq!(contents(&path), before, "the inspection wrote nothing");
    let node = open(&path);
    assert!(!node.unclean_shutdown(), "the next open sees the clean shutdown the node made");
    node.close().await.unwrap();
}
