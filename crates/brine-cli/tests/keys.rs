//! Keys a person can read and type: printed by their family's layout, accepted in the
//! same form, paged, counted, with values, dumped; times also in RFC 3339.

mod support;

use support::{brine, error_line, json, stdout, store};

#[tokio::test]
async fn keys_read_by_their_layout_and_are_typed_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = store(dir.path()).await;
    let keys = |args: &[&str]| stdout(brine().args(["db", "keys"]).arg(&path).args(args));
    assert_eq!(keys(&["idx_executions_by_state", "--prefix", "Running"]), "Running/e-1\nRunning/e-3\n");
    assert_eq!(keys(&["idx_executions_by_state", "--prefix", "running/e-3"]), "Running/e-3\n");
    // The older raw notation still reads.
    assert_eq!(keys(&["idx_executions_by_state", "--prefix", "\\x02"]), "Running/e-1\nRunning/e-3\n");
    assert_eq!(keys(&["idx_executions_by_job_id", "--prefix", "job-1/"]), "job-1/e-2\njob-1/e-3\n");
    let events = keys(&["events"]);
    assert_eq!(events.lines().take(3).collect::<Vec<_>>(), ["1", "2", "3"], "{events}");
    let log_events = keys(&["execution_events", "--prefix", "e-1/"]);
    assert!(log_events.lines().all(|l| l.starts_with("e-1/") && l[4..].parse::<u64>().is_ok()), "{log_events}");
    let meta = keys(&["meta"]);
    assert!(meta.contains("count/Running\n") && meta.contains("log_head\n"), "{meta}");
    // What keys prints, get takes.
    let count = json(brine().args(["db", "get", "--json"]).arg(&path).args(["meta", "count/Running"]));
    assert_eq!(count["value"], 2, "{count}");
    let entry = json(brine().args(["db", "get", "--json"]).arg(&path).args(["idx_executions_by_state", "Running/e-1"]));
    assert_eq!(entry["key"], "Running/e-1");
    let event = json(brine().args(["db", "get", "--json"]).arg(&path).args(["events", "1"]));
    assert_eq!(event["key"], "1");
    // What does not fit is named.
    let err = error_line(brine().args(["db", "get"]).arg(&path).args(["execution_events", "e-1/seven"]));
    assert_eq!(err, "error: bad key \"e-1/seven\": history_seq: expected a number, got \"seven\"");
    let err =
        error_line(brine().args(["db", "keys"]).arg(&path).args(["idx_executions_by_state", "--prefix", "Runing"]));
    assert!(err.contains("unknown execution state \"Runing\""), "{err}");
}

#[tokio::test]
async fn a_job_id_lists_its_executions_and_times_read_as_dates() {
    let dir = tempfile::tempdir().unwrap();
    let path = store(dir.path()).await;
    let v = json(brine().args(["db", "get", "--json"]).arg(&path).args(["executions", "job-1"]));
    let ids: Vec<&str> = v["executions"].as_array().unwrap().iter().map(|e| e["key"].as_str().unwrap()).collect();
    assert_eq!(ids, ["e-2", "e-3"], "{v}");
    let text = stdout(brine().args(["db", "get"]).arg(&path).args(["executions", "job-1"]));
    assert!(text.starts_with('[') && text.contains("\"e-2\""), "{text}");
    let err = error_line(brine().args(["db", "get"]).arg(&path).args(["executions", "job-404"]));
    assert!(err.starts_with("error: key not found: executions job-404"), "{err}");
    let e = json(brine().args(["db", "get", "--json"]).arg(&path).args(["executions", "e-1"]));
    let value = &e["value"];
    assert!(value["create_time"].is_u64(), "{e}");
    assert_eq!(value["create_time_rfc3339"], "2026-01-01T00:00:00.000000000Z", "{e}");
}

#[tokio::test]
async fn listings_page_count_and_show_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = store(dir.path()).await;
    let keys = |args: &[&str]| stdout(brine().args(["db", "keys"]).arg(&path).arg("executions").args(args));
    assert_eq!(keys(&["--limit", "2"]), "e-1\ne-2\n");
    assert_eq!(keys(&["--start-after", "e-2", "--limit", "2"]), "e-3\ne-4\n");
    assert_eq!(keys(&["--start-after", "e-6"]), "");
    assert_eq!(keys(&["--count"]), "6\n");
    assert_eq!(json(brine().args(["db", "keys", "--count", "--json"]).arg(&path).arg("executions"))["count"], 6);
    assert_eq!(keys(&["--keys-only", "--limit", "1"]), "e-1\n");
    let with_values = keys(&["--values", "--limit", "1"]);
    let (key, value) = with_values.trim_end().split_once('\t').unwrap();
    assert_eq!(key, "e-1");
    let value: serde_json::Value = serde_json::from_str(value).unwrap();
    assert_eq!(value["id"], "e-1");
    let listed = json(brine().args(["db", "keys", "--values", "--json", "--limit", "2"]).arg(&path).arg("executions"));
    assert_eq!(listed[1]["key"], "e-2", "{listed}");
    // A dump: one JSON object per line, every key.
    let dump = stdout(brine().args(["db", "dump"]).arg(&path).arg("executions"));
    let lines: Vec<serde_json::Value> = dump.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 6);
    assert_eq!(lines[5]["key"], "e-6");
    assert!(lines[0]["value"]["modify_time_rfc3339"].is_string(), "{}", lines[0]);
    let dump =
        stdout(brine().args(["db", "dump"]).arg(&path).args(["idx_executions_by_state", "--prefix", "Completed"]));
    assert_eq!(dump.lines().count(), 2, "{dump}");
}
