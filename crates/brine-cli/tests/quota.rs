//! The space quota from the command line: `brine db alarm list|disarm`, `brine purge`
//! freeing a store past its quota, and BRINE_QUOTA_BYTES read and refused by name.

mod support;

use std::path::Path;

use brine_rocksdb::{Durability, OpenOptions, RocksJobStore};
use brine_store::model::{Job, JobId, JobState};
use brine_store::{JobStore, UpdateJobStateRequest};
use support::{brine, error_line, json, stdout};

/// `n` bytes in MiB, as `brine` prints sizes of a few MiB.
fn mib(n: u64) -> String {
    format!("{:.1} MiB", n as f64 / f64::from(1 << 20))
}

fn dir_size(path: &Path) -> u64 {
    let sizes = std::fs::read_dir(path).unwrap().flatten().filter_map(|e| e.metadata().ok());
    sizes.filter(|m| m.is_file()).map(|m| m.len()).sum()
}

/// A requester store filled with finished jobs past a quota of its empty size plus
/// 2 MiB, its alarm raised; returns the quota.
async fn full_store(path: &Path) -> u64 {
    let options =
        |quota| OpenOptions { durability: Durability::Buffered, quota_bytes: quota, ..OpenOptions::default() };
    RocksJobStore::open(path, &options(None)).unwrap().close().await.unwrap();
    let quota = dir_size(path) + (2 << 20);
    let store = RocksJobStore::open(path, &options(Some(quota))).unwrap();
    for i in 0.. {
        let mut job = Job::new(JobId::new(format!("job-{i:05}")).unwrap(), format!("name-{i}"));
        job.config = "z".repeat(8 << 10);
        let done = UpdateJobStateRequest::new(job.id.clone(), JobState::Completed, "done");
        if store.create_job(job).await.is_err() || store.update_job_state(done).await.is_err() {
            break;
        }
    }
    assert!(store.alarm().is_some());
    store.close().await.unwrap();
    quota
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_lists_the_alarm_purges_and_disarms_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node-requester.db");
    let quota = full_store(&path).await;

    let listed = stdout(brine().args(["db", "alarm", "list"]).arg(&path));
    assert!(listed.starts_with("NOSPACE alarm raised at "), "{listed}");
    assert!(listed.contains(&format!(", past its quota of {} ({quota} bytes)", mib(quota))), "{listed}");
    let listed = json(brine().args(["db", "alarm", "list", "--json"]).arg(&path));
    assert_eq!(listed["alarms"][0]["alarm"], "nospace", "{listed}");
    assert_eq!(listed["alarms"][0]["quota"], quota, "{listed}");

    // A write that adds data is refused by name; the purge, which frees space, runs.
    let quota_text = quota.to_string();
    let purged = stdout(
        brine()
            .env("BRINE_QUOTA_BYTES", &quota_text)
            .env("BRINE_DIR", dir.path())
            .args(["purge", "--min-age-days", "0", "--store"])
            .arg(&path),
    );
    assert!(purged.contains("purge archived "), "{purged}");
    stdout(brine().args(["db", "check"]).arg(&path));

    let disarmed = stdout(brine().args(["db", "alarm", "disarm"]).arg(&path));
    assert!(disarmed.starts_with("disarmed: NOSPACE alarm raised at "), "{disarmed}");
    assert_eq!(stdout(brine().args(["db", "alarm", "list"]).arg(&path)), "no alarm\n");
    let again = json(brine().args(["db", "alarm", "disarm", "--json"]).arg(&path));
    assert_eq!(again["disarmed"], serde_json::json!([]), "{again}");
}

#[test]
fn a_quota_is_read_by_name_and_refused_where_no_quota_is_kept() {
    let err = error_line(brine().env("BRINE_QUOTA_BYTES", "lots").args(["recover", "--dry-run"]));
    assert!(err.starts_with("error: BRINE_QUOTA_BYTES: \"lots\" is not a size"), "{err}");
    let err = error_line(brine().env("BRINE_QUOTA_BYTES", "0").args(["recover", "--dry-run"]));
    assert!(err.contains("a quota of 0 bytes would refuse every write"), "{err}");
    let err = error_line(
        brine()
            .env("BRINE_QUOTA_BYTES", "64MiB")
            .env("BRINE_COMPUTE_STORE_TYPE", "inmemory")
            .args(["recover", "--dry-run"]),
    );
    assert_eq!(
        err,
        "error: cannot open the compute store on inmemory: BRINE_QUOTA_BYTES applies to rocksdb stores only (a \
         PostgreSQL database's space is the server's to limit); unset it for this store"
    );
}
