//! `brine export`, `brine import` and `brine migrate copy` on the demo's stores: a round
//! trip through a file and through PostgreSQL keeps every line of the dump, and damaged
//! dumps and occupied targets are refused, changing nothing.

mod support;

use std::path::Path;

use support::{brine, contents, error_line, json, stdout};

/// The lines of a dump of `store` with its header left out (it names the moment and
/// the store, not the content).
fn content_of(store: &str, extra: &[&str]) -> Vec<String> {
    let out = stdout(brine().env("BRINE_NODE_ID", "sim-node").args(["export", "--store", store]).args(extra));
    let mut lines: Vec<String> = out.lines().map(str::to_owned).collect();
    assert!(lines[0].starts_with("{\"header\":{\"format\":1,"), "{}", lines[0]);
    lines.remove(0);
    lines
}

fn simulate(dir: &Path) {
    let sim = dir.join("sim");
    stdout(brine().args(["simulate", "--executions", "120", "--seed", "3", "--dir"]).arg(&sim));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_import_and_copy_keep_every_record_of_the_demo_stores() {
    let dir = tempfile::tempdir().unwrap();
    simulate(dir.path());
    let compute = dir.path().join("sim/sim-node-compute.db").display().to_string();
    let requester = dir.path().join("sim/sim-node-requester.db").display().to_string();
    let database = brine_postgres::testing::fresh_database().await;
    let url = format!("postgres:{}", brine_postgres::testing::url_for(&database));

    for (name, store, kind) in [("compute", &compute, "compute"), ("requester", &requester, "requester")] {
        let expected = content_of(store, &[]);
        // Through a compressed file: written whole, private, and loaded into a new store.
        let file = dir.path().join(format!("{name}.jsonl.zst"));
        let summary = json(brine().args(["export", "--json", "--store", store, "--output"]).arg(&file));
        assert_eq!(summary["kind"], kind, "{summary}");
        assert_eq!(summary["tally"]["lines"].as_u64().unwrap() as usize, expected.len(), "{summary}");
        let bytes = std::fs::read(&file).unwrap();
        assert_eq!(bytes[..4], [0x28, 0xb5, 0x2f, 0xfd], "a .zst output is compressed");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(!dir.path().join(format!("{name}.jsonl.zst.partial")).exists());
        let copy = dir.path().join(format!("{name}-copy.db"));
        let imported = json(brine().args(["import", "--json"]).arg(&file).arg("--store").arg(&copy));
        assert_eq!(imported["tally"], summary["tally"], "{imported}");
        stdout(brine().args(["db", "check"]).arg(&copy));
        assert_eq!(
            content_of(&copy.display().to_string(), &[]),
            expected,
            "{name}: the file's copy holds every record"
        );

        // Straight into PostgreSQL and back, compared at each end.
        let node = ["--kind", kind];
        let to_pg =
            stdout(brine().env("BRINE_NODE_ID", "sim-node").args(["migrate", "copy", "--from", store, "--to", &url]));
        assert!(to_pg.contains("comparison: equal: counts per state ("), "{to_pg}");
        let back = dir.path().join(format!("{name}-back.db"));
        let back_out = json(
            brine()
                .env("BRINE_NODE_ID", "sim-node")
                .args(["migrate", "copy", "--json", "--from", &url, "--to"])
                .arg(&back)
                .args(node),
        );
        assert_eq!(back_out["comparison"]["differences"], serde_json::json!([]), "{back_out}");
        assert!(back_out["comparison"]["sampled"].as_u64().unwrap() > 0, "{back_out}");
        assert_eq!(content_of(&back.display().to_string(), &[]), expected, "{name}: the copy through PostgreSQL");
        assert_eq!(content_of(&url, &node), expected, "{name}: the copy on PostgreSQL");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_dumps_and_occupied_targets_are_refused_changing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = support::store(dir.path()).await;
    let dump = dir.path().join("compute.jsonl");
    stdout(brine().args(["export", "--store"]).arg(&store).arg("-o").arg(&dump));
    let text = std::fs::read_to_string(&dump).unwrap();
    let lines: Vec<&str> = text.lines().collect();

    // The output exists: refused, the file untouched.
    let err = error_line(brine().args(["export", "--store"]).arg(&store).arg("-o").arg(&dump));
    assert_eq!(err, format!("error: {} exists: remove it or choose another --output", dump.display()));

    // Cut mid-line, and at a line's end.
    let cut = dir.path().join("cut.jsonl");
    std::fs::write(&cut, &text[..text.len() - 40]).unwrap();
    let target = dir.path().join("target.db");
    let err = error_line(brine().arg("import").arg(&cut).arg("--store").arg(&target));
    assert_eq!(
        err,
        format!(
            "error: cannot import {}: line {}: cut short (no newline, incomplete JSON): the dump is truncated",
            cut.display(),
            lines.len()
        )
    );
    let short: String = lines[..lines.len() - 1].iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&cut, short).unwrap();
    let fresh = dir.path().join("fresh.db");
    let err = error_line(brine().arg("import").arg(&cut).arg("--store").arg(&fresh));
    assert!(
        err.ends_with(&format!("the dump ends after line {} without its end line: it is truncated", lines.len() - 1)),
        "{err}"
    );

    // An occupied store: refused before anything is written.
    let before = contents(&store);
    let err = error_line(brine().arg("import").arg(&dump).arg("--store").arg(&store));
    assert!(err.contains("the target store is not empty: it holds 6 executions, an event log at"), "{err}");
    assert_eq!(contents(&store), before, "a refused import changes nothing");

    // A requester dump into a compute store, not a dump at all, and unnamed kinds.
    let requester = support::requester_store(dir.path(), 2).await;
    let err = error_line(brine().args(["migrate", "copy", "--from"]).arg(&requester).arg("--to").arg(&store));
    assert_eq!(err, format!("error: {} is a compute store; the source is a requester store", store.display()));
    let err = error_line(brine().arg("import").arg(requester.join("CURRENT")).args(["--store", "memory:"]));
    assert!(err.contains("is not a dump: line 1: not a dump line"), "{err}");
    let err = error_line(brine().args(["export", "--store", "postgres:postgresql:///nowhere"]));
    assert_eq!(
        err,
        "error: --store names a PostgreSQL database, which holds both kinds of store: give --kind compute or --kind requester"
    );
    let err = error_line(brine().args(["export", "--kind", "requester", "--store"]).arg(&store).arg("-o").arg(&cut));
    assert_eq!(err, format!("error: {} is a compute store, not a requester store (--kind requester)", store.display()));
    let command = format!("{} export --store {}", env!("CARGO_BIN_EXE_brine"), store.display());
    let tty = std::process::Command::new("script").args(["-qec", &command, "/dev/null"]).output();
    let tty = tty.expect("this test needs `script` (util-linux) for a pseudo-terminal");
    assert_eq!(tty.status.code(), Some(1));
    let seen = String::from_utf8_lossy(&tty.stdout);
    assert!(
        seen.contains("error: refusing to write a dump to the terminal: give --output FILE or redirect stdout"),
        "{seen}"
    );
    let err = error_line(brine().args(["migrate", "copy", "--from", "x.db", "--to", "rocksdb:x.db"]));
    assert_eq!(err, "error: --from and --to name the same store");

    // memory: checks that a dump loads, keeping nothing.
    let checked = json(brine().arg("import").arg(&dump).args(["--store", "memory:", "--json"]));
    assert_eq!(checked["tally"]["records"]["executions"], 6, "{checked}");
}

/// An export or a copy that fails midway (here on a record that does not decode) names
/// that failure, and leaves no dump file under the name asked for (not even a partial
/// one that would look finished); an import into an existing empty directory works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_export_or_copy_names_its_cause_and_leaves_no_dump() {
    let dir = tempfile::tempdir().unwrap();
    let corrupt = support::with_fault(dir.path(), brine_store::Fault::CorruptExecution(support::id("e-2"))).await;
    let file = dir.path().join("broken.jsonl");
    let err = error_line(brine().args(["export", "--store"]).arg(&corrupt).arg("-o").arg(&file));
    assert!(err.contains("corrupt value in executions at key e-2"), "{err}");
    assert!(!file.exists(), "no dump under the name asked for");
    assert!(!dir.path().join("broken.jsonl.partial").exists(), "nor a partial one");
    let target = dir.path().join("copy.db");
    let err = error_line(brine().args(["migrate", "copy", "--from"]).arg(&corrupt).arg("--to").arg(&target));
    assert!(err.contains("corrupt value in executions at key e-2"), "the export's own error: {err}");

    let healthy = dir.path().join("healthy");
    std::fs::create_dir(&healthy).unwrap();
    let path = support::store(&healthy).await;
    let dump = dir.path().join("healthy.jsonl");
    stdout(brine().args(["export", "--store"]).arg(&path).arg("-o").arg(&dump));
    let empty = dir.path().join("empty.db");
    std::fs::create_dir(&empty).unwrap();
    let out = stdout(brine().arg("import").arg(&dump).arg("--store").arg(&empty));
    assert!(out.starts_with("imported 6 compute store records"), "{out}");
}
