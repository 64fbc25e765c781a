//! Exit statuses a script can trust (0 ok, 1 an error, 2 usage, 3 problems found), and
//! every command ending quietly when its output pipe is closed.

mod support;

use std::io::Read;
use std::path::Path;
use std::process::{Command as Process, Stdio};

use brine_store::{ExecutionStore, Fault};
use support::{brine, id, open, requester_store, store, with_fault};

/// Runs `brine ARGS` with its stdout a pipe whose reading end is already closed, as in
/// `brine … | head -c0`: every write gets EPIPE. Returns the exit status and stderr.
fn with_closed_stdout(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Process::new(env!("CARGO_BIN_EXE_brine"))
        .args(args)
        .env_remove("BRINE_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (child.wait().unwrap().code(), err)
}

#[tokio::test]
async fn a_closed_pipe_ends_every_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let compute = store(dir.path()).await;
    let requester = requester_store(dir.path(), 3).await;
    let archive = dir.path().join("archive");
    let c = compute.to_str().unwrap();
    let r = requester.to_str().unwrap();
    let a = archive.to_str().unwrap();
    // A job to read back from the archive.
    let out = brine().args(["purge", "--store", r, "--archive-dir", a, "--min-age-days", "0", "--json"]).assert();
    out.success();
    let sim = dir.path().join("sim");
    for args in [
        vec!["db", "stats", c],
        vec!["db", "stats", c, "--json"],
        vec!["db", "check", c],
        vec!["db", "check", c, "--json"],
        vec!["db", "buckets", c],
        vec!["db", "keys", c, "executions"],
        vec!["db", "keys", c, "executions", "--json"],
        vec!["db", "get", c, "executions", "e-1"],
        vec!["recover", "--dry-run", "--store", c],
        vec!["recover", "--dry-run", "--store", c, "--json"],
        vec!["archive", "get", "job-000", "--archive-dir", a, "--json"],
        vec!["archive", "get", "job-000", "--archive-dir", a],
        vec!["purge", "--store", r, "--archive-dir", a, "--dry-run"],
        vec!["migrate", "status", c],
        vec!["simulate", "--executions", "20", "--dir", sim.to_str().unwrap()],
        vec!["--help"],
        vec!["db", "--help"],
    ] {
        let (code, err) = with_closed_stdout(&args);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?} printed on stderr: {err}");
    }
    // Nothing was left marked open.
    let node = open(&compute);
    assert!(!node.unclean_shutdown());
    node.close().await.unwrap();
}

#[tokio::test]
async fn check_finding_problems_exits_3_usage_2_errors_1() {
    let dir = tempfile::tempdir().unwrap();
    let good = store(&dir.path().join("good")).await;
    let bad = with_fault(&dir.path().join("bad"), Fault::CorruptExecution(id("e-2"))).await;
    brine().args(["db", "check"]).arg(&good).assert().code(0).stdout("OK\n");
    let out = brine().args(["db", "check"]).arg(&bad).assert().code(3).get_output().stdout.clone();
    assert!(String::from_utf8(out).unwrap().contains("executions e-2: value does not decode"));
    let out = brine().args(["db", "check", "--json"]).arg(&bad).assert().code(3).get_output().stdout.clone();
    let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(report["ok"], false);
    // Usage errors: 2, with clap's message and the usage.
    for args in [&["db", "check", "--jsn"][..], &["db", "frobnicate"], &["db", "keys"], &["nope"]] {
        let out = brine().args(args).assert().code(2).get_output().clone();
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.starts_with("error: ") && err.contains("--help"), "{args:?}: {err}");
    }
    // An error: 1 and one line.
    let missing = dir.path().join("missing.db");
    support::error_line(brine().args(["db", "check"]).arg(&missing));
    // The codes are in the help.
    let help = support::stdout(brine().arg("--help"));
    for line in ["0  ", "1  ", "2  ", "3  "] {
        assert!(help.lines().any(|l| l.trim_start().starts_with(line)), "exit code {line} in --help: {help}");
    }
}

/// Flips bytes at the start of the table files of `family`, where their first data
/// block is. Returns how many files it damaged.
fn corrupt_tables(path: &Path, family: &str) -> usize {
    let files: Vec<String> = {
        let opts = brine_rocksdb::db_options();
        let cfs = rocksdb::DB::list_cf(&opts, path).unwrap();
        let db = rocksdb::DB::open_cf_for_read_only(&opts, path, &cfs, false).unwrap();
        let live = db.live_files().unwrap();
        live.into_iter().filter(|f| f.column_family_name == family).map(|f| f.name).collect()
    };
    for name in &files {
        let p = path.join(name.trim_start_matches('/'));
        let mut bytes = std::fs::read(&p).unwrap();
        for b in &mut bytes[8..40] {
            *b ^= 0x5a;
        }
        std::fs::write(&p, bytes).unwrap();
    }
    files.len()
}

fn check_reports_corruption(path: &Path) {
    let out = brine().args(["db", "check"]).arg(path).assert().code(3).get_output().clone();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("RocksDB reports corruption"), "{text}");
    let out = brine().args(["db", "check", "--json"]).arg(path).assert().code(3).get_output().clone();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    let problems = report["problems"].as_array().unwrap();
    assert!(problems.iter().any(|p| p["problem"].as_str().unwrap().contains("RocksDB reports corruption")), "{report}");
}

#[tokio::test]
async fn corruption_rocksdb_reports_is_a_problem_check_finds() {
    let dir = tempfile::tempdir().unwrap();
    let path = store(dir.path()).await;
    {
        // Enough data for real blocks, flushed to table files by the close.
        let node = open(&path);
        for n in 100..400 {
            let e = support::execution(n, brine_store::model::ExecutionState::Created);
            node.create_execution(e, vec![]).await.unwrap();
        }
        node.close().await.unwrap();
    }
    // The records' tables: the check's scan meets the damage.
    assert!(corrupt_tables(&path, "executions") > 0, "the store has table files");
    check_reports_corruption(&path);
    // The `meta` table too: the store cannot even be opened.
    assert!(corrupt_tables(&path, "meta") > 0);
    check_reports_corruption(&path);
}
