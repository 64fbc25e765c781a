//! The rows of `docs/BAD_INPUT.md` that go through the `brine` command: each bad input
//! gets one named error line on stderr, exit status 1, and leaves the store exactly as
//! it was (every key and value of every family compared before and after).

mod support;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use assert_cmd::Command;
use brine_store::model::ExecutionState;
use brine_store::{ExecutionStore, Fault};
use support::{brine, contents, error_line, id, open, requester_store, stdout, store, with_fault};

/// Runs `cmd`, which must fail with one line starting with `expected`, and must leave
/// the store at `path` unchanged. Returns the line.
fn refused(path: &Path, cmd: &mut Command, expected: &str) -> String {
    let before = contents(path);
    let err = error_line(cmd);
    assert!(err.starts_with(&format!("error: {expected}")), "expected {expected:?}, got {err:?}");
    let after = contents(path);
    if after != before {
        let changed: Vec<String> = before
            .iter()
            .filter(|(k, v)| after.get(*k) != Some(*v))
            .map(|((cf, k), _)| format!("{cf} {}", brine_store::keys::printable(k)))
            .chain(
                after
                    .keys()
                    .filter(|k| !before.contains_key(*k))
                    .map(|(cf, k)| format!("+{cf} {}", brine_store::keys::printable(k))),
            )
            .collect();
        panic!("{err}: the store changed: {changed:?}");
    }
    err
}

/// Runs `cmd`, which must fail as a usage error: clap's message starting with
/// `expected` and the usage, exit status 2, the store at `path` unchanged.
fn usage_error(path: &Path, cmd: &mut Command, expected: &str) {
    let before = contents(path);
    let out = cmd.assert().code(2).get_output().clone();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with(&format!("error: {expected}")), "expected {expected:?}, got {err:?}");
    assert!(err.contains("try '--help'"), "{err}");
    assert!(contents(path) == before, "{err}: the store changed");
}

fn non_utf8() -> &'static OsStr {
    OsStr::from_bytes(b"e-\xff\xfe")
}

#[tokio::test]
async fn bad_ids_and_keys_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = store(dir.path()).await;
    let archive = dir.path().join("archive");
    std::fs::create_dir(&archive).unwrap();
    let get = |key: &OsStr| {
        let mut cmd = brine();
        cmd.args(["db", "get"]).arg(&path).arg("executions").arg(key);
        cmd
    };
    refused(&path, &mut get(OsStr::new("")), "bad key \"\": empty");
    refused(&path, &mut get(OsStr::new("e-1\\xZZ")), "bad key \"e-1\\\\xZZ\": ");
    refused(&path, &mut get(OsStr::new("e-1\\x4")), "bad key \"e-1\\\\x4\": ");
    usage_error(&path, &mut get(non_utf8()), "invalid UTF-8 was detected in one or more arguments");
    let keys_with = |prefix: &str| {
        let mut cmd = brine();
        cmd.args(["db", "keys"]).arg(&path).args(["executions", "--prefix", prefix]);
        cmd
    };
    refused(&path, &mut keys_with("\\x"), "bad key \"\\\\x\": ");

    let archive_get = |job: &OsStr| {
        let mut cmd = brine();
        cmd.args(["archive", "get"]).arg(job).arg("--archive-dir").arg(&archive);
        cmd
    };
    let long = "j".repeat(256);
    for (job, reason) in [
        ("", "invalid id \"\": must not be empty"),
        ("job 1", "invalid id \"job 1\": must not contain whitespace"),
        (" job", "invalid id \" job\": must not contain whitespace"),
        ("job\t", "invalid id \"job\\t\": must not contain whitespace"),
    ] {
        refused(&path, &mut archive_get(OsStr::new(job)), reason);
    }
    let err = refused(&path, &mut archive_get(OsStr::new(&long)), "invalid id \"jjjj");
    assert!(err.ends_with("is 256 bytes long, at most 255 allowed"), "{err}");
    usage_error(&path, &mut archive_get(non_utf8()), "invalid UTF-8 was detected in one or more arguments");
}

#[tokio::test]
async fn usage_errors_exit_2_never_3() {
    // 3 means "db check found problems": a typo must not look like that to a script.
    let dir = tempfile::tempdir().unwrap();
    let path = store(dir.path()).await;
    for (args, expected) in [
        (&["db", "check", "--jsn"][..], "unexpected argument '--jsn' found"),
        (&["db", "frobnicate"], "unrecognized subcommand 'frobnicate'"),
        (&["db", "keys"], "the following required arguments were not provided"),
        (&["recover", "--cleanup", "often", "--store"], "invalid value 'often' for '--cleanup <CLEANUP>'"),
    ] {
        usage_error(&path, brine().args(args).arg(&path), expected);
    }
    // Help and version are not errors.
    brine().arg("--help").assert().code(0);
    brine().arg("--version").assert().code(0);
}

#[tokio::test]
async fn stores_that_cannot_be_opened_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = store(dir.path()).await;
    // Each command that writes, on a store another process has open (the `db`
    // inspections read it read-only: tests/inspect.rs).
    {
        let held = open(&path);
        let in_use = format!("store is in use: {}", path.display());
        for args in [&["recover", "--dry-run", "--store"][..], &["purge", "--store"]] {
            refused(&path, brine().args(args).arg(&path), &in_use);
        }
        held.close().await.unwrap();
    }
    // A directory that is not a store, an empty one, a plain file, nothing at all.
    let notes = dir.path().join("notes");
    std::fs::create_dir(&notes).unwrap();
    std::fs::write(notes.join("a.txt"), "hello").unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let file = dir.path().join("file.db");
    std::fs::write(&file, "not a directory").unwrap();
    let missing = dir.path().join("missing.db");
    let other = dir.path().join("other.db");
    drop(rocksdb::DB::open_default(&other).unwrap());
    let other_before = contents(&other);
    for (p, expected) in [
        (&notes, format!("{} is not a Brine store", notes.display())),
        (&empty, format!("{} is not a Brine store", empty.display())),
        (&file, format!("{} is not a Brine store", file.display())),
        (&missing, format!("no store at {}", missing.display())),
        (&other, format!("{} is not a Brine store", other.display())),
    ] {
        for args in [&["db", "check"][..], &["recover", "--store"], &["purge", "--store"]] {
            let err = error_line(brine().args(args).arg(p));
            assert!(err.starts_with(&format!("error: {expected}")), "{args:?} {}: {err}", p.display());
        }
        assert!(!missing.exists(), "nothing is created at a missing path");
    }
    let listing: Vec<_> = std::fs::read_dir(&notes).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(listing, ["a.txt"], "nothing was written into a directory that is not a store");
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0, "nothing was written into the empty directory");
    assert!(contents(&other) == other_before, "another program's database was left alone");

    // The wrong kind: recovery on a requester store.
    let requester = requester_store(&dir.path().join("r"), 2).await;
    let err = refused(&requester, brine().args(["recover", "--store"]).arg(&requester), "");
    assert!(err.contains("is a requester store"), "{err}");

    // Newer and unknown schema versions.
    let current = brine_rocksdb::SCHEMA_VERSION;
    for (version, expected) in [
        (99u64, "newer than this build supports".to_owned()),
        (0, "unknown schema version 0".to_owned()),
        (current - 1, format!("older than this build's {current}: upgrade it with `brine migrate up ")),
    ] {
        let p = store(&dir.path().join(format!("v{version}"))).await;
        {
            let opts = brine_rocksdb::db_options();
            let cfs = rocksdb::DB::list_cf(&opts, &p).unwrap();
            let db = rocksdb::DB::open_cf(&opts, &p, cfs).unwrap();
            let meta = db.cf_handle("meta").unwrap();
            db.put_cf(meta, b"schema_version", brine_rocksdb::codec::encode(&version)).unwrap();
        }
        for args in [&["db", "check"][..], &["recover", "--store"], &["purge", "--store"]] {
            let err = refused(&p, brine().args(args).arg(&p), "");
            assert!(err.contains(&expected), "{args:?}: {err}");
        }
    }
}

#[tokio::test]
async fn corrupt_and_truncated_values_are_named_by_family_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let corrupt = with_fault(&dir.path().join("c"), Fault::CorruptExecution(id("e-2"))).await;
    refused(
        &corrupt,
        brine().args(["db", "get"]).arg(&corrupt).args(["executions", "e-2"]),
        "corrupt value in executions at key e-2: ",
    );
    // A value cut short, and one with an unknown state code, written behind Brine's back.
    let path = store(&dir.path().join("t")).await;
    {
        let opts = brine_rocksdb::db_options();
        let cfs = rocksdb::DB::list_cf(&opts, &path).unwrap();
        let db = rocksdb::DB::open_cf(&opts, &path, cfs).unwrap();
        let cf = db.cf_handle("executions").unwrap();
        let whole = db.get_cf(cf, b"e-3").unwrap().unwrap();
        db.put_cf(cf, b"e-3", &whole[..whole.len() / 2]).unwrap();
        let idx = db.cf_handle("idx_executions_by_state").unwrap();
        db.put_cf(idx, b"\x63e-1", b"").unwrap();
    }
    refused(
        &path,
        brine().args(["db", "get"]).arg(&path).args(["executions", "e-3"]),
        "corrupt value in executions at key e-3: ",
    );
    let before = contents(&path);
    let out = brine().args(["db", "check"]).arg(&path).assert().code(3).get_output().stdout.clone();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("executions e-3: value does not decode"), "{text}");
    assert!(text.contains("idx_executions_by_state 99/e-1: unknown state code 99"), "{text}");
    assert!(contents(&path) == before, "check changed nothing");
    // Recovery refuses to act on a store it cannot read, naming the key.
    let err = refused(&path, brine().args(["recover", "--preset", "fail-live", "--store"]).arg(&path), "");
    assert!(err.contains("e-3"), "{err}");
}

#[tokio::test]
async fn bad_policy_files_are_refused_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = store(dir.path()).await;
    let policy = dir.path().join("policy");
    let with_policy = |text: &[u8]| {
        std::fs::write(&policy, text).unwrap();
        let mut cmd = brine();
        cmd.args(["recover", "--store"]).arg(&path).arg("--policy").arg(&policy);
        cmd
    };
    let rule =
        |field: &str| format!("[[rule]]\njob_type = \"batch\"\nstate = \"Running\"\naction = \"mark-failed\"\n{field}");
    for (text, expected) in [
        (rule("").replace("Running", "Runing"), "policy line 3: unknown execution state \"Runing\""),
        (rule("").replace("mark-failed", "explode"), "policy line 4: unknown action \"explode\""),
        (rule("").replace("batch", "cron"), "policy line 2: unknown job type \"cron\""),
        (rule("colour = \"blue\"\n"), "policy line 5: unknown field `colour`"),
        ("[[rule]\n".to_owned(), "policy line 1: "),
        ("{\"rule\": [\n".to_owned(), "policy line 2: "),
        ("preset = \"everything\"\n".to_owned(), "policy line 1: unknown preset \"everything\""),
    ] {
        let err = refused(&path, &mut with_policy(text.as_bytes()), "");
        assert!(err.contains(expected), "{text:?}: expected {expected:?} in {err}");
    }
    let err = refused(&path, &mut with_policy(b"\xff\xfe[[rule]]"), "");
    assert!(err.contains("did not contain valid UTF-8"), "{err}");
    let err = refused(
        &path,
        brine().args(["recover", "--store"]).arg(&path).arg("--policy").arg(dir.path().join("none.toml")),
        "",
    );
    assert!(err.contains("none.toml") && err.contains("No such file"), "{err}");
}

#[tokio::test]
async fn bad_environment_values_are_refused_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let path = store(dir.path()).await;
    let before = contents(&path);
    let with_env = |name: &str, value: &OsStr| {
        let mut cmd = brine();
        cmd.env("BRINE_DIR", dir.path()).env("BRINE_NODE_ID", "node").env(name, value).args(["recover", "--dry-run"]);
        cmd
    };
    for (name, value, expected) in [
        (
            "BRINE_NODE_ID",
            OsStr::new("a node"),
            "BRINE_NODE_ID: invalid node_id \"a node\": must not contain whitespace",
        ),
        ("BACALHAU_NODE_ID", OsStr::new("x"), ""),
        ("BRINE_NODE_ID", non_utf8(), "BRINE_NODE_ID: not valid UTF-8"),
        ("BRINE_COMPUTE_STORE_TYPE", OsStr::new("mysql"), "BRINE_COMPUTE_STORE_TYPE: "),
        ("BRINE_COMPUTE_STORE_TYPE", non_utf8(), "BRINE_COMPUTE_STORE_TYPE: not valid UTF-8"),
        (
            "BRINE_COMPUTE_STORE_TYPE",
            OsStr::new("postgres"),
            "the postgres backend needs a database: give --database-url URL or set BRINE_DATABASE_URL",
        ),
        ("BRINE_LOG", OsStr::new("[[["), ""),
    ] {
        let mut cmd = with_env(name, value);
        if expected.is_empty() {
            // Harmless: Bacalhau's name is a fallback under BRINE_NODE_ID; a bad log
            // filter falls back to warnings. The store is found and recovered.
            cmd.assert().success();
            continue;
        }
        let err = error_line(&mut cmd);
        assert!(err.starts_with(&format!("error: {expected}")), "{name}={value:?}: {err}");
    }
    assert!(contents(&path) == before, "the dry runs and refusals changed nothing");
}

/// `brine` under a file-size limit of `bytes`, with `SIGXFSZ` ignored: a write past the
/// limit fails with `EFBIG`, as a write to a full disk fails with `ENOSPC`.
fn limited(bytes: u64) -> std::process::Command {
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg("trap '' XFSZ; exec prlimit --fsize=\"$0\" -- \"$@\"")
        .arg(bytes.to_string())
        .arg(env!("CARGO_BIN_EXE_brine"));
    cmd
}

#[tokio::test]
async fn bad_purge_options_and_archives_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = requester_store(dir.path(), 250).await;
    let archive = dir.path().join("archive");
    let purge = |extra: &[&str]| {
        let mut cmd = brine();
        cmd.args(["purge", "--store"]).arg(&path).arg("--archive-dir").arg(&archive).args(extra);
        cmd
    };
    for (extra, expected) in [
        (&["--min-age-days=-1"][..], "--min-age-days must be a number of days, 0 or more"),
        (&["--min-age-days", "NaN"], "--min-age-days must be a number of days, 0 or more"),
        (&["--max-per-file", "0"], "--max-per-file must be at least 1"),
        (&["--max", "0"], "--max must be at least 1 (leave it out for no limit)"),
        (&["--daemon", "--interval", "0s"], "--interval must be at least 1s (got 0s)"),
        (&["--daemon", "--interval", "500ms"], "--interval must be at least 1s (got 500ms)"),
        (&["--daemon", "--dry-run"], "--daemon and --dry-run together would repeat the same report forever"),
    ] {
        refused(&path, &mut purge(extra), expected);
    }
    for (extra, expected) in [
        (&["--max", "-3"][..], "unexpected argument '-3' found"),
        (&["--max", "x"], "invalid value 'x' for '--max <N>'"),
        (&["--daemon", "--interval", "soon"], "invalid value 'soon' for '--interval <INTERVAL>'"),
    ] {
        usage_error(&path, &mut purge(extra), expected);
    }
    assert!(!archive.exists(), "no archive directory was made");

    // A full disk while opening the store (its options file does not fit).
    let before = contents(&path);
    let out = limited(4096).args(["purge", "--dry-run", "--store"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("error: cannot open ") && err.contains("File too large"), "{err}");
    assert!(contents(&path) == before, "a store that could not be opened is unchanged");

    // A full disk while writing the archive: nothing is deleted from the store.
    let out = limited(196_608)
        .args(["purge", "--min-age-days", "0", "--max-per-file", "1000", "--store"])
        .arg(&path)
        .arg("--archive-dir")
        .arg(&archive)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("error: cannot ") && err.contains("archive") && err.contains("File too large"), "{err}");
    let after = contents(&path);
    let jobs =
        |c: &std::collections::BTreeMap<(String, Vec<u8>), Vec<u8>>| c.keys().filter(|(cf, _)| cf == "jobs").count();
    assert_eq!(jobs(&after), jobs(&before), "a purge that could not write its archive deleted no job");
    // With room again, the purge finishes and the jobs read back.
    stdout(&mut purge(&["--min-age-days", "0"]));
    assert!(stdout(brine().args(["archive", "get", "job-002", "--archive-dir"]).arg(&archive)).contains("job-002"));

    // A damaged archive directory: an index line cut short, an archive file cut short,
    // an archive file gone.
    let index = archive.join("job_index");
    let text = std::fs::read_to_string(&index).unwrap();
    let file = std::fs::read_dir(&archive)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("job_archive_"))
        .unwrap();
    let archive_get = |job: &str| {
        let mut cmd = brine();
        cmd.args(["archive", "get", job, "--archive-dir"]).arg(&archive);
        cmd
    };
    let last = text.lines().last().unwrap();
    std::fs::write(&index, format!("{}{}", &text[..text.len() - last.len() - 1], &last[..4])).unwrap();
    let cut = last.split_whitespace().next().unwrap();
    let out = archive_get(cut).assert().code(1).get_output().clone();
    let err = String::from_utf8(out.stderr).unwrap();
    let lines = text.lines().count();
    let warning = format!("warning: {} line {lines}: not an index line (skipped)", index.display());
    assert_eq!(
        err.lines().collect::<Vec<_>>(),
        [warning, format!("error: {cut} is not in the archive index {}", index.display())]
    );
    std::fs::write(&index, &text).unwrap();
    let whole = std::fs::read(&file).unwrap();
    std::fs::write(&file, &whole[..whole.len() - 7]).unwrap();
    let err = error_line(&mut archive_get(cut));
    assert!(err.starts_with(&format!("error: {} line ", file.display())), "{err}");
    std::fs::remove_file(&file).unwrap();
    let err = error_line(&mut archive_get(cut));
    assert!(err.contains("which is not in"), "{err}");
    assert_eq!(stdout(brine().args(["db", "check"]).arg(&path)), "OK\n");
}

#[tokio::test]
async fn unknown_states_never_reach_the_store() {
    // States have no text form on the API (they are enums); where text names them (policy
    // files, above) unknown names are refused, and an unknown state code on disk is
    // corruption (above). A new execution in a state other than Created is refused.
    let dir = tempfile::tempdir().unwrap();
    let path = store(dir.path()).await;
    let before = contents(&path);
    let s = open(&path);
    let err = s.create_execution(support::execution(9, ExecutionState::Running), vec![]).await.unwrap_err();
    assert!(err.to_string().contains("expected one of [Created]"), "{err}");
    s.close().await.unwrap();
    assert!(contents(&path) == before, "the refused create left nothing behind");
    assert_eq!(stdout(brine().args(["db", "check"]).arg(&path)), "OK\n");
}
