//! Feedback on long work: a progress bar on a terminal only (never in `--json`, never in
//! a pipe), Ctrl-C that says what it interrupted and leaves the stores consistent, and
//! `BRINE_LOG=debug` logs without colour off a terminal.

mod support;

use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use brine_store::ExecutionStore;
use support::{brine, open, stdout, store};

/// Runs `brine ARGS` under a pseudo-terminal (`script`), returning all it wrote there.
fn on_a_terminal(args: &str) -> String {
    let command = format!("{} {args}", env!("CARGO_BIN_EXE_brine"));
    let out = Process::new("script").args(["-qec", &command, "/dev/null"]).env_remove("BRINE_LOG").output();
    let out = out.expect("this test needs `script` (util-linux) for a pseudo-terminal");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn simulate_shows_progress_on_a_terminal_only() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).display().to_string();
    let seen = on_a_terminal(&format!("simulate --executions 300 --durability buffered --dir {}", d("tty")));
    assert!(seen.contains("jobs (before restart)"), "a progress bar on a terminal: {seen}");
    assert!(seen.contains("check: OK"), "{seen}");
    let seen = on_a_terminal(&format!("simulate --executions 300 --durability buffered --json --dir {}", d("json")));
    assert!(!seen.contains("jobs ("), "no progress bar with --json: {seen}");
    let out =
        brine().args(["simulate", "--executions", "300", "--durability", "buffered", "--dir"]).arg(d("pipe")).assert();
    assert!(out.get_output().stderr.is_empty(), "nothing on stderr when it is not a terminal");
}

#[tokio::test]
async fn ctrl_c_says_what_it_interrupted_and_leaves_the_stores_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let sim = dir.path().join("sim");
    let child = Process::new(env!("CARGO_BIN_EXE_brine"))
        .args(["simulate", "--executions", "1000000", "--durability", "buffered", "--dir"])
        .arg(&sim)
        .env_remove("BRINE_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Let the workload run a while, then press Ctrl-C.
    let started = Instant::now();
    while !sim.join("sim-node-compute.db").exists() && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let status = Process::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.starts_with("interrupted: simulate stopped before the restart, after "), "{err}");
    assert!(err.contains("both stores are consistent (check: OK) and closed cleanly"), "{err}");
    for name in ["sim-node-compute.db", "sim-node-requester.db"] {
        assert_eq!(stdout(brine().args(["db", "check"]).arg(sim.join(name))), "OK\n", "{name}");
    }
    let compute = open(&sim.join("sim-node-compute.db"));
    assert!(!compute.unclean_shutdown(), "closed cleanly");
    compute.close().await.unwrap();
}

#[tokio::test]
async fn debug_logs_say_what_was_opened_without_colour_in_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let path = store(dir.path()).await;
    let out = brine().env("BRINE_LOG", "debug").args(["db", "check"]).arg(&path).assert().success();
    let err = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert!(err.contains("opened the store read-only"), "{err}");
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(!err.contains('\u{1b}'), "no colour codes off a terminal: {err:?}");
    let out = brine().env("BRINE_LOG", "debug").args(["recover", "--dry-run", "--store"]).arg(&path).assert().success();
    let err = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert!(err.contains("recovering") && err.contains("rocksdb compute store at"), "{err}");
}
