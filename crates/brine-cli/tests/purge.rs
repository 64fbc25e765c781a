//! `brine purge` and `brine archive get` over a real requester store: a purge with
//! zstd, the report, read-back, a dry run, errors, and the daemon stopping on SIGTERM.

mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{brine, requester_store as store, stdout};

#[tokio::test]
async fn purge_then_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = store(dir.path(), 12).await;
    let archive = dir.path().join("archive");

    let text = stdout(brine().args(["purge", "--dry-run", "--store"]).arg(&path).arg("--archive-dir").arg(&archive));
    assert_eq!(text.lines().next().unwrap(), format!("opened rocksdb requester store at {}", path.display()));
    assert_eq!(text.lines().nth(1).unwrap(), format!("archive directory: {}", archive.display()));
    let report = text.lines().nth(2).unwrap();
    assert!(report.starts_with("purge would archive 12 jobs, 0 executions, 24 events, 0 evaluations in "), "{text}");
    assert!(!archive.exists());

    let v: Value = serde_json::from_str(&stdout(
        brine()
            .args(["purge", "--zstd", "--max-per-file", "5", "--json", "--store"])
            .arg(&path)
            .arg("--archive-dir")
            .arg(&archive),
    ))
    .unwrap();
    assert_eq!(v["jobs"], 12);
    assert_eq!(v["files"].as_array().unwrap().len(), 3);
    assert!(v["files"][0].as_str().unwrap().ends_with(".jsonl.zst"));
    let index = std::fs::read_to_string(archive.join("job_index")).unwrap();
    assert_eq!(index.lines().count(), 12);
    assert!(index.lines().all(|l| l.starts_with("job-0") && l.contains("     ")), "{index}");

    let text = stdout(brine().args(["archive", "get", "job-007", "--archive-dir"]).arg(&archive));
    let record: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(record["job"]["id"], "job-007");
    assert_eq!(record["job"]["state"]["state"], "Completed");
    assert!(text.contains("\n  \"job\": {"), "pretty JSON:\n{text}");

    let out = brine().args(["archive", "get", "job-012", "--archive-dir"]).arg(&archive).assert().code(1);
    let err = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert!(err.starts_with("error: job-012 is not in the archive index"), "{err}");
    let out = brine().args(["db", "get"]).arg(&path).args(["purged_jobs", "job-003"]).assert().success();
    let file: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert!(file.as_str().unwrap().starts_with("job_archive_"));
    assert_eq!(stdout(brine().args(["db", "check"]).arg(&path)), "OK\n");

    let out = brine().args(["purge", "--max-per-file", "0", "--store"]).arg(&path).assert().code(1);
    let err = String::from_utf8(out.get_output().stderr.clone()).unwrap();
    assert_eq!(err, "error: --max-per-file must be at least 1\n");
}

#[tokio::test]
async fn the_daemon_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let path = store(dir.path(), 30).await;
    let archive = dir.path().join("archive");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_brine"))
        .args(["purge", "--daemon", "--interval", "1h", "--max-per-file", "10", "--json", "--store"])
        .arg(&path)
        .arg("--archive-dir")
        .arg(&archive)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["jobs"], 30);
    // Now asleep until the next pass: SIGTERM ends it at once, with status 0.
    let t = Instant::now();
    let status = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "the daemon did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit}");
    assert!(lines.next().is_none(), "no second pass");
    // It closed the store cleanly: another process can open it, and it checks OK.
    assert_eq!(stdout(brine().args(["db", "check"]).arg(&path)), "OK\n");
}
