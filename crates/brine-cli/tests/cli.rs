//! The `brine` binary over real stores in temp dirs: each `db` command's output, `check`
//! on each injected fault, the errors a user will hit, `recover`, and `simulate` end to
//! end.

mod support;

use brine_store::model::ExecutionState;
use brine_store::Fault;
use serde_json::Value;
use support::{brine, error_line, id, json, stdout, store, with_fault};

#[tokio::test]
async fn check_says_ok_on_a_good_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = store(dir.path()).await;
    assert_eq!(stdout(brine().args(["db", "check"]).arg(&path)), "OK\n");
    let v = json(brine().args(["db", "check", "--json"]).arg(&path));
    assert_eq!(v["ok"], true);
    assert!(v["keys_checked"].as_u64().unwrap() > 20);
    assert_eq!(v["problems"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn check_names_each_injected_fault() {
    let cases = [
        (Fault::DropStateIndexEntry(id("e-1")), "executions e-1: missing from idx_executions_by_state under Running"),
        (
            Fault::OrphanStateIndexEntry(ExecutionState::Running, id("ghost")),
            "idx_executions_by_state Running/ghost: points at missing execution ghost",
        ),
        (
            Fault::SetCounter(ExecutionState::Running, 7),
            "counter of Running is 7, the state index has 2, the records 2",
        ),
        (Fault::CorruptExecution(id("e-2")), "executions e-2: value does not decode"),
        (Fault::DropLogEntry(3), ": gap: entries 3..3 are missing"),
    ];
    let mut seen = Vec::new();
    for (fault, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = with_fault(dir.path(), fault.clone()).await;
        let out = brine().args(["db", "check"]).arg(&path).assert().code(3).get_output().stdout.clone();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(expected), "{fault:?}: expected {expected:?} in\n{text}");
        assert!(text.trim_end().ends_with("keys"), "{text}");
        let first = text.lines().next().unwrap().to_owned();
        assert!(!seen.contains(&first), "two faults gave the same message {first}");
        seen.push(first);
        let out = brine().args(["db", "check", "--json"]).arg(&path).assert().code(3).get_output().stdout.clone();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["ok"], false);
        let lines: Vec<String> = v["problems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                format!(
                    "{} {}: {}",
                    p["cf"].as_str().unwrap(),
                    p["key"].as_str().unwrap(),
                    p["problem"].as_str().unwrap()
                )
            })
            .collect();
        assert!(lines.iter().any(|l| l.contains(expected)), "{lines:?}");
    }
}

#[tokio::test]
async fn buckets_keys_and_get() {
    let dir = tempfile::tempdir().unwrap();
    let path = store(dir.path()).await;
    let buckets = stdout(brine().args(["db", "buckets"]).arg(&path));
    let names: Vec<&str> = buckets.lines().collect();
    assert_eq!(
        names,
        [
            "executions",
            "execution_events",
            "idx_executions_by_job_id",
            "idx_executions_by_state",
            "events",
            "checkpoints",
            "meta"
        ]
    );
    let v = json(brine().args(["db", "buckets", "--json"]).arg(&path));
    assert_eq!(v["kind"], "compute");
    assert_eq!(v["buckets"].as_array().unwrap().len(), 7);

    let keys = stdout(brine().args(["db", "keys"]).arg(&path).arg("executions"));
    assert_eq!(keys, "e-1\ne-2\ne-3\ne-4\ne-5\ne-6\n");
    let keys = stdout(brine().args(["db", "keys"]).arg(&path).args(["idx_executions_by_job_id", "--prefix", "job-1/"]));
    assert_eq!(keys, "job-1/e-2\njob-1/e-3\n");
    let keys = stdout(brine().args(["db", "keys"]).arg(&path).args(["executions", "--limit", "2"]));
    assert_eq!(keys, "e-1\ne-2\n");
    let v = json(brine().args(["db", "keys", "--json", "--limit", "3"]).arg(&path).arg("checkpoints"));
    assert_eq!(v, serde_json::json!(["metrics"]));

    let text = stdout(brine().args(["db", "get"]).arg(&path).args(["executions", "e-3"]));
    let value: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["id"], "e-3");
    assert_eq!(value["compute_state"]["state"], "Running");
    assert!(text.contains("\n  \"id\": \"e-3\""), "pretty JSON expected:\n{text}");
    let v = json(brine().args(["db", "get", "--json"]).arg(&path).args(["checkpoints", "metrics"]));
    assert_eq!(v, serde_json::json!({ "cf": "checkpoints", "key": "metrics", "value": 4 }));
    let v = json(brine().args(["db", "get"]).arg(&path).args(["meta", "store_kind"]));
    assert_eq!(v, "compute");
    // Every meta key decodes: the store's id is text, the sequences numbers.
    let v = json(brine().args(["db", "get"]).arg(&path).args(["meta", "store_id"]));
    assert!(v.as_str().is_some_and(|id| !id.is_empty()), "{v}");
    let keys = stdout(brine().args(["db", "keys"]).arg(&path).arg("meta"));
    for key in keys.lines() {
        brine().args(["db", "get"]).arg(&path).args(["meta", key]).assert().success();
    }
}

#[tokio::test]
async fn stats_and_compact() {
    let dir = tempfile::tempdir().unwrap();
    let path = store(dir.path()).await;
    let text = stdout(brine().args(["db", "stats"]).arg(&path));
    assert!(text.starts_with(&format!("Statistics for {} (compute store), ", path.display())), "{text}");
    let row = text.lines().find(|l| l.starts_with("executions ")).unwrap();
    assert_eq!(row.split_whitespace().nth(1), Some("6"), "{row}");
    let v = json(brine().args(["db", "stats", "--json"]).arg(&path));
    let families = v["families"].as_array().unwrap();
    let exec = families.iter().find(|f| f["name"] == "executions").unwrap();
    assert_eq!(exec["keys"], 6);
    assert!(v["disk_bytes"].as_u64().unwrap() > 0);

    let dest = dir.path().join("copy.db");
    let text = stdout(brine().args(["db", "compact"]).arg(&path).arg("-o").arg(&dest));
    let line = text.trim_end();
    let (sizes, gain) = line.split_once(" bytes (gain=").unwrap_or_else(|| panic!("{line}"));
    let (before, after) = sizes.split_once(" -> ").unwrap();
    let (before, after): (u64, u64) = (before.parse().unwrap(), after.parse().unwrap());
    assert!(before > 0 && after > 0);
    let gain = gain.strip_suffix("x)").unwrap();
    assert_eq!(gain, format!("{:.2}", before as f64 / after as f64));
    assert_eq!(stdout(brine().args(["db", "check"]).arg(&dest)), "OK\n");
    assert_eq!(
        stdout(brine().args(["db", "keys"]).arg(&dest).arg("executions")),
        stdout(brine().args(["db", "keys"]).arg(&path).arg("executions"))
    );
    let err = error_line(brine().args(["db", "compact"]).arg(&path).arg("-o").arg(&dest));
    assert!(err.contains("exists and is not empty"), "{err}");
    let v = json(brine().args(["db", "compact", "--json"]).arg(&path).arg("-o").arg(dir.path().join("c2.db")));
    assert!(v["gain"].as_f64().unwrap() > 0.0);
}

#[tokio::test]
async fn errors_a_user_will_hit_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = store(dir.path()).await;
    let missing = dir.path().join("nothing-here.db");
    let err = error_line(brine().args(["db", "check"]).arg(&missing));
    assert_eq!(err, format!("error: no store at {}", missing.display()));

    let not_store = dir.path().join("notes");
    std::fs::create_dir(&not_store).unwrap();
    std::fs::write(not_store.join("a.txt"), "hello").unwrap();
    let err = error_line(brine().args(["db", "buckets"]).arg(&not_store));
    assert!(err.starts_with(&format!("error: {} is not a Brine store", not_store.display())), "{err}");

    let err = error_line(brine().args(["db", "keys"]).arg(&path).arg("jobs"));
    assert!(err.starts_with("error: unknown column family \"jobs\" (this compute store has: executions,"), "{err}");
    let err = error_line(brine().args(["db", "get"]).arg(&path).args(["executions", "e-404"]));
    assert_eq!(err, "error: key not found: executions e-404 (neither an execution id nor a job with executions)");

    let corrupt = with_fault(&dir.path().join("c"), Fault::CorruptExecution(id("e-2"))).await;
    let err = error_line(brine().args(["db", "get"]).arg(&corrupt).args(["executions", "e-2"]));
    assert!(err.starts_with("error: corrupt value in executions at key e-2: "), "{err}");

    // A store written by a newer brine.
    let newer = store(&dir.path().join("n")).await;
    {
        let opts = brine_rocksdb::db_options();
        let cfs = rocksdb::DB::list_cf(&opts, &newer).unwrap();
        let db = rocksdb::DB::open_cf(&opts, &newer, cfs).unwrap();
        let meta = db.cf_handle("meta").unwrap();
        db.put_cf(meta, b"schema_version", brine_rocksdb::codec::encode(&99u64)).unwrap();
    }
    let err = error_line(brine().args(["db", "check"]).arg(&newer));
    assert!(err.contains("has schema version 99, newer than this build supports"), "{err}");
}

#[tokio::test]
async fn recover_prints_its_report() {
    let dir = tempfile::tempdir().unwrap();
    let path = store(dir.path()).await;
    let text = stdout(brine().args(["recover", "--dry-run", "--preset", "fail-live", "--store"]).arg(&path));
    let expected = format!(
        "opened rocksdb compute store at {}\nrecovery (dry run: nothing changed) with policy fail-live",
        path.display()
    );
    assert!(text.starts_with(&expected), "{text}");
    assert!(text.contains("mark-failed"), "{text}");
    let running =
        stdout(brine().args(["db", "keys"]).arg(&path).args(["idx_executions_by_state", "--prefix", "\\x02"]));
    assert_eq!(running, "Running/e-1\nRunning/e-3\n", "the dry run changed nothing");

    let v = json(brine().args(["recover", "--json", "--preset", "fail-live", "--store"]).arg(&path));
    assert_eq!(v["dry_run"], false);
    assert_eq!(v["before"]["Running"], 2);
    assert_eq!(v["after"]["Running"], 0);
    // e-3 is a service execution (requeued); e-1 and e-5 are batch (failed).
    assert_eq!(v["after"]["Created"], 1);
    assert_eq!(v["after"]["Failed"], 3);
    assert_eq!(stdout(brine().args(["db", "check"]).arg(&path)), "OK\n");

    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "[[rule]]\njob_type = \"batch\"\nstate = \"Runing\"\naction = \"mark-failed\"\n").unwrap();
    let err = error_line(brine().args(["recover", "--store"]).arg(&path).arg("--policy").arg(&policy));
    assert!(err.contains("policy line 3: unknown execution state \"Runing\""), "{err}");
    // A JSON policy file: its errors name the line too, and a good one runs.
    let policy = dir.path().join("policy.json");
    std::fs::write(
        &policy,
        "{\"rule\": [\n  {\"job_type\": \"batch\",\n   \"state\": \"Runing\",\n   \"action\": \"mark-failed\"}\n]}\n",
    )
    .unwrap();
    let err = error_line(brine().args(["recover", "--store"]).arg(&path).arg("--policy").arg(&policy));
    assert!(err.contains("policy line 3: unknown execution state \"Runing\""), "{err}");
    std::fs::write(
        &policy,
        r#"{"preset": "fail-live", "rule": [{"job_type": "*", "state": "Failed", "action": "no-action"}]}"#,
    )
    .unwrap();
    let v = json(brine().args(["recover", "--json", "--dry-run", "--store"]).arg(&path).arg("--policy").arg(&policy));
    assert_eq!(v["dry_run"], true, "{v}");
    let err = error_line(brine().args(["recover", "--preset", "everything", "--store"]).arg(&path));
    assert!(err.contains("unknown preset \"everything\""), "{err}");
}

#[test]
fn simulate_runs_end_to_end_and_repeats_with_a_seed() {
    let dir = tempfile::tempdir().unwrap();
    let run = |sub: &str| {
        json(
            brine()
                .args(["simulate", "--executions", "80", "--seed", "7", "--durability", "buffered", "--json", "--dir"])
                .arg(dir.path().join(sub)),
        )
    };
    let a = run("a");
    assert_eq!(a["check"]["ok"], true, "{a}");
    assert_eq!(a["jobs"], 80);
    assert_eq!(a["restart_after_jobs"], 40);
    assert_eq!(a["recovery"]["cleanup_reason"], "unclean-shutdown");
    let head = a["watchers"][0]["head"].as_u64().unwrap();
    for w in a["watchers"].as_array().unwrap() {
        assert_eq!(w["checkpoint"].as_u64().unwrap(), head, "{w}");
        assert_eq!(w["lag"], 0);
    }
    let finished: u64 =
        ["Completed", "Failed", "Stopped"].iter().filter_map(|s| a["requester_states"][s].as_u64()).sum();
    assert_eq!(a["purge"]["jobs"].as_u64().unwrap(), finished, "every finished job was purged");
    let b = run("b");
    assert_eq!(a["compute_states"], b["compute_states"]);
    assert_eq!(a["requester_states"], b["requester_states"]);
    assert_eq!(a["operations"], b["operations"]);

    let text = stdout(
        brine().args(["simulate", "--executions", "30", "--durability", "buffered", "--dir"]).arg(dir.path().join("c")),
    );
    assert!(text.contains("hard restart after 15 jobs"), "{text}");
    assert!(text.trim_end().ends_with("check: OK"), "{text}");
    assert_eq!(stdout(brine().args(["db", "check"]).arg(dir.path().join("c/sim-node-compute.db"))), "OK\n");
    assert_eq!(stdout(brine().args(["db", "check"]).arg(dir.path().join("c/sim-node-requester.db"))), "OK\n");

    // Again into the used directory: refused before anything is opened.
    let requester = dir.path().join("c/sim-node-requester.db");
    let before = support::contents(&requester);
    let err = error_line(brine().args(["simulate", "--executions", "30", "--dir"]).arg(dir.path().join("c")));
    assert!(
        err.contains("already holds an earlier run (sim-node-requester.db, sim-node-compute.db, archive)"),
        "{err}"
    );
    assert!(support::contents(&requester) == before);

    // A job stored under a purged id (as an older brine let a re-run write) is a problem
    // `check` names.
    {
        let opts = brine_rocksdb::db_options();
        let cfs = rocksdb::DB::list_cf(&opts, &requester).unwrap();
        let db = rocksdb::DB::open_cf(&opts, &requester, cfs).unwrap();
        let jobs = db.cf_handle("jobs").unwrap();
        let (key, _) = db.iterator_cf(jobs, rocksdb::IteratorMode::Start).next().unwrap().unwrap();
        let purged = db.cf_handle("purged_jobs").unwrap();
        db.put_cf(purged, &key, brine_rocksdb::codec::encode("job_archive_1.jsonl")).unwrap();
    }
    let out = brine().args(["db", "check"]).arg(&requester).assert().code(3).get_output().stdout.clone();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("a stored job has the id of a job purged to job_archive_1.jsonl"), "{text}");
}

#[test]
fn simulate_on_the_memory_backend_checks_by_the_same_rules() {
    let dir = tempfile::tempdir().unwrap();
    let text = stdout(brine().args(["simulate", "--backend", "memory", "--executions", "60", "--dir"]).arg(dir.path()));
    assert!(text.contains("inmemory stores in"), "{text}");
    assert!(text.contains("in memory the stores stay open"), "{text}");
    assert!(text.trim_end().ends_with("check: OK"), "{text}");
    let stores: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".db"))
        .collect();
    assert!(stores.is_empty(), "the memory backend wrote stores to disk: {stores:?}");
}

#[test]
fn recover_honours_the_configured_backend_or_refuses_it() {
    let dir = tempfile::tempdir().unwrap();
    // In memory there is nothing stored, so there is nothing to recover; no RocksDB
    // directory is opened or created.
    let text = stdout(
        brine().args(["recover", "--json"]).env("BRINE_DIR", dir.path()).env("BRINE_COMPUTE_STORE_TYPE", "inmemory"),
    );
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    let counts = report["before"].as_object().expect("counts per state");
    assert!(!counts.is_empty() && counts.values().all(|n| n == 0), "{report}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing written");
    // A RocksDB path with another backend, and a database that cannot be reached, are
    // refused, each saying why.
    let err = error_line(brine().args(["recover", "--backend", "memory", "--store"]).arg(dir.path().join("x.db")));
    assert!(err.contains("names a RocksDB directory, but the backend is inmemory"), "{err}");
    let err = error_line(
        brine()
            .arg("recover")
            .env("BRINE_DIR", dir.path())
            .env("BRINE_COMPUTE_STORE_TYPE", "postgres")
            .env("BRINE_DATABASE_URL", "postgres://localhost:1/x"),
    );
    assert!(err.contains("cannot connect to PostgreSQL at localhost:1/x"), "{err}");
    let err = error_line(brine().args(["recover", "--backend", "postgres"]).env("BRINE_DIR", dir.path()));
    assert!(err.contains("give --database-url URL or set BRINE_DATABASE_URL"), "{err}");
}

#[tokio::test]
async fn migrate_reports_and_upgrades_an_older_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = support::requester_store(dir.path(), 3).await;
    let current = brine_rocksdb::SCHEMA_VERSION;
    let text = stdout(brine().args(["migrate", "status"]).arg(&path));
    assert!(
        text.contains(&format!("(requester store): format version {current}, this build writes {current}")),
        "{text}"
    );
    assert!(text.trim_end().ends_with("up to date"), "{text}");
    // As a store of the version before: every command refuses it, naming the upgrade.
    {
        let opts = brine_rocksdb::db_options();
        let cfs = rocksdb::DB::list_cf(&opts, &path).unwrap();
        let db = rocksdb::DB::open_cf(&opts, &path, cfs).unwrap();
        let meta = db.cf_handle("meta").unwrap();
        db.put_cf(meta, b"schema_version", brine_rocksdb::codec::encode(&(current - 1))).unwrap();
    }
    let err = error_line(brine().args(["db", "check"]).arg(&path));
    assert!(err.contains(&format!("upgrade it with `brine migrate up {}`", path.display())), "{err}");
    let v = json(brine().args(["migrate", "status", "--json"]).arg(&path));
    assert_eq!(v["current"], current - 1);
    assert_eq!(v["target"], current);
    assert_eq!(v["pending"][0]["to"], current);
    let text = stdout(brine().args(["migrate", "up", "--dry-run"]).arg(&path));
    assert!(text.starts_with("dry run (nothing written)"), "{text}");
    let text = stdout(brine().args(["migrate", "up"]).arg(&path));
    assert!(
        text.starts_with(&format!("migrated {} from format version {} to {current}", path.display(), current - 1)),
        "{text}"
    );
    assert!(text.contains(&format!("step {current}: 4 records")), "{text}");
    // A checkpoint of the store as it was came first, next to it.
    let backup = path.with_file_name(format!("{}.before-v{current}", path.file_name().unwrap().to_str().unwrap()));
    assert!(text.contains(&format!("backup of version {} at {}", current - 1, backup.display())), "{text}");
    let v = json(brine().args(["migrate", "status", "--json"]).arg(&backup));
    assert_eq!(v["current"], current - 1, "the backup is the store before the migration");
    assert_eq!(stdout(brine().args(["db", "check"]).arg(&path)), "OK\n");
    let v = json(brine().args(["migrate", "up", "--json"]).arg(&path));
    assert_eq!(v["applied"], serde_json::json!([]), "nothing left to do");
    assert_eq!(v["backup"], serde_json::Value::Null, "nothing to do, nothing backed up");
}

/// The demo's workload on PostgreSQL: both stores in one database, each with its own
/// log; it ends with `check: OK`, and `db check --database-url` agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_on_postgres_and_check_the_database() {
    let database = brine_postgres::testing::fresh_database().await;
    let url = brine_postgres::testing::url_for(&database);
    let dir = tempfile::tempdir().unwrap();
    let run = |sub: &str| {
        let mut cmd = brine();
        cmd.args(["simulate", "--backend", "postgres", "--database-url", &url, "--executions", "60", "--dir"])
            .arg(dir.path().join(sub));
        cmd
    };
    // Inspecting a database without Brine's schema creates nothing: asked twice, it
    // answers the same.
    let empty = brine_postgres::testing::url_for(&brine_postgres::testing::empty_database().await);
    for _ in 0..2 {
        let err = error_line(brine().args(["db", "check", "--database-url", &empty]));
        assert!(err.contains("holds no Brine stores (no compute schema)"), "{err}");
    }
    let text = stdout(&mut run("first"));
    assert!(text.contains("postgres stores in"), "{text}");
    assert!(text.trim_end().ends_with("check: OK"), "{text}");
    assert_eq!(stdout(brine().args(["db", "check", "--database-url", &url])), "OK\n");
    let report = json(brine().args(["db", "check", "--json", "--database-url", &url]));
    assert_eq!(report["ok"], true, "{report}");
    // The database now holds jobs: a second run (into a new directory) is refused,
    // saying what to do.
    let err = error_line(&mut run("second"));
    assert!(err.contains("the database already holds jobs"), "{err}");
    // recover and purge reach the same stores through the facade.
    let recovered = json(
        brine()
            .args(["recover", "--backend", "postgres", "--dry-run", "--json", "--database-url", &url])
            .env("BRINE_NODE_ID", "sim-node"),
    );
    assert!(
        recovered["before"]["Completed"].as_u64().unwrap_or(0) + recovered["before"]["Running"].as_u64().unwrap_or(0)
            > 0,
        "{recovered}"
    );
    let purged = json(
        brine()
            .args([
                "purge",
                "--backend",
                "postgres",
                "--min-age-days",
                "0",
                "--json",
                "--database-url",
                &url,
                "--archive-dir",
            ])
            .arg(dir.path().join("archive-again")),
    );
    assert_eq!(purged["jobs"], 0, "the simulation purged every finished job already: {purged}");
}
