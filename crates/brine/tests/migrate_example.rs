//! `crates/brine/examples/migrate.rs`, the program `cargo xtask migrate` runs and a
//! downstream project copies: it upgrades the oldest format's fixture, backing it up
//! first, and a second run finds nothing to do.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The example's binary, built beside this test by `cargo test`.
fn example() -> PathBuf {
    let deps = std::env::current_exe().unwrap().parent().unwrap().to_path_buf();
    let path = deps.parent().unwrap().join("examples").join("migrate");
    assert!(path.exists(), "cargo test builds the examples: {} is missing", path.display());
    path
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(example()).args(args).output().unwrap();
    (out.status.success(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

#[test]
fn the_xtask_migration_upgrades_a_version_1_store_after_backing_it_up() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../brine-rocksdb/tests/fixtures/v1/requester.db");
    let store = dir.path().join("requester.db");
    copy_dir(&fixture, &store);
    let store = store.display().to_string();

    let (ok, out, _) = run(&["status", &store]);
    assert!(ok);
    assert!(out.contains("format version 1, this build's 2") && out.contains("pending step 2: "), "{out}");
    let (ok, out, err) = run(&["up", &store]);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("backup: {store}.before-v2")), "{out}");
    assert!(out.contains("applied step 2 ("), "{out}");
    assert!(Path::new(&format!("{store}.before-v2")).join("CURRENT").exists(), "the backup is a whole store");
    let (ok, out, _) = run(&["up", &store]);
    assert!(ok);
    assert!(out.contains("format version 2, this build's 2") && out.contains("up to date"), "{out}");

    let (ok, _, err) = run(&["up", &store, "--to", "x"]);
    assert!(!ok);
    assert_eq!(err.trim(), "migrate: --to \"x\": not a version number");
    let (ok, _, err) = run(&["down", &store]);
    assert!(!ok);
    assert!(err.starts_with("migrate: unknown command \"down\""), "{err}");
}
