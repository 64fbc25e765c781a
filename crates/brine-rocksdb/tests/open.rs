//! Opening stores: configuration paths and directory modes, a store held by another
//! handle, schema versions that are refused, the wrong kind of store, and values that do
//! not decode (written with raw RocksDB) reported as errors naming family and key, and
//! what an open store holds in memory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use brine_rocksdb::codec::encode;
use brine_rocksdb::{db_options, Cf, OpenError, OpenOptions, RocksExecutionStore, RocksJobStore, StoreKind};
use brine_store::config::StoreConfig;
use brine_store::model::{Execution, ExecutionId, Job, JobId};
use brine_store::{ExecutionStore, JobStore, StoreError};
use rocksdb::{ColumnFamilyDescriptor, DB};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// Opens a closed store's families with raw RocksDB, as a tool or an attacker would.
fn raw(path: &Path, kind: StoreKind) -> DB {
    let families = kind.families().iter().map(|cf| ColumnFamilyDescriptor::new(cf.name(), db_options()));
    DB::open_cf_descriptors(&db_options(), path, families).expect("raw open")
}

fn raw_put(path: &Path, kind: StoreKind, cf: Cf, key: &[u8], value: &[u8]) {
    let db = raw(path, kind);
    db.put_cf(db.cf_handle(cf.name()).expect("family"), key, value).expect("raw put");
    db.flush_wal(true).expect("sync");
}

fn sample(id: &str) -> Execution {
    Execution::new(ExecutionId::new(id).unwrap(), &Job::new(JobId::new("j-1").unwrap(), "j"))
}

#[test]
fn paths_come_from_the_configuration_and_directories_are_private() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("nested/brine");
    let vars: HashMap<&str, String> =
        [("BRINE_DIR", base.display().to_string()), ("BACALHAU_NODE_ID", "n7".to_owned())].into_iter().collect();
    let config = StoreConfig::from_lookup(|k| vars.get(k).cloned()).unwrap();
    let rt = runtime();
    rt.block_on(async {
        let exec = RocksExecutionStore::open_from_config(&config, &OpenOptions::default()).unwrap();
        let jobs = RocksJobStore::open_from_config(&config, &OpenOptions::default()).unwrap();
        assert_eq!(exec.path(), base.join("n7-compute.db"));
        assert_eq!(jobs.path(), base.join("n7-requester.db"));
        exec.close().await.unwrap();
        jobs.close().await.unwrap();
    });
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for dir in [tmp.path().join("nested"), base.clone(), base.join("n7-compute.db"), base.join("n7-requester.db")] {
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{} is private", dir.display());
        }
    }
}

#[test]
fn a_store_in_use_is_refused_with_its_path() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("n-compute.db");
    let first = RocksExecutionStore::open(&path, &OpenOptions::default()).unwrap();
    let err = RocksExecutionStore::open(&path, &OpenOptions::default()).err().expect("second open fails");
    assert!(matches!(err, OpenError::InUse { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.starts_with(&format!("store is in use: {}", path.display())), "{msg}");
    assert!(msg.contains("stop it"), "the message has a hint: {msg}");
    runtime().block_on(first.close()).unwrap();
    // Once closed, the lock is released.
    let again = RocksExecutionStore::open(&path, &OpenOptions::default()).unwrap();
    runtime().block_on(again.close()).unwrap();
}

fn with_schema_version(version: u64) -> (tempfile::TempDir, PathBuf, OpenError) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("n-compute.db");
    runtime().block_on(RocksExecutionStore::open(&path, &OpenOptions::default()).unwrap().close()).unwrap();
    raw_put(&path, StoreKind::Compute, Cf::Meta, b"schema_version", &encode(&version));
    let err = RocksExecutionStore::open(&path, &OpenOptions::default()).err().expect("refused");
    (tmp, path, err)
}

#[test]
fn newer_and_unknown_schema_versions_are_refused_naming_both() {
    let current = brine_rocksdb::SCHEMA_VERSION;
    let (_tmp, path, err) = with_schema_version(99);
    assert!(matches!(err, OpenError::NewerSchema { found: 99, supported, .. } if supported == current), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("99") && msg.contains(&format!("({current})")),
        "{msg}"
    );

    let (_tmp, _path, err) = with_schema_version(0);
    assert!(matches!(err, OpenError::UnknownSchema { found: 0, supported, .. } if supported == current), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("version 0") && msg.contains(&format!("reads only {current}")), "{msg}");
    assert!(!msg.contains("brine migrate"), "no migration starts from 0: {msg}");

    // The version before: a migration step upgrades it, and the error names the command.
    let (_tmp, path, err) = with_schema_version(current - 1);
    assert!(matches!(err, OpenError::OlderSchema { found, .. } if found == current - 1), "{err:?}");
    assert!(err.to_string().contains(&format!("brine migrate up {}", path.display())), "{err}");
}

#[test]
fn the_wrong_kind_and_missing_stores_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("n-compute.db");
    runtime().block_on(RocksExecutionStore::open(&path, &OpenOptions::default()).unwrap().close()).unwrap();
    let err = RocksJobStore::open(&path, &OpenOptions::default()).err().expect("refused");
    assert_eq!(err.to_string(), format!("store {} is a compute store, not a requester store", path.display()));
    // Refused before opening: the compute store did not gain requester families.
    let families = DB::list_cf(&db_options(), &path).unwrap();
    assert!(!families.iter().any(|f| f == "jobs"), "{families:?}");
    assert_eq!(brine_rocksdb::store_kind_at(&path).unwrap(), StoreKind::Compute);

    let missing = tmp.path().join("absent.db");
    let options = OpenOptions { create_if_missing: false, ..OpenOptions::default() };
    let err = RocksExecutionStore::open(&missing, &options).err().expect("refused");
    assert!(matches!(err, OpenError::NotFound { .. }), "{err:?}");
    assert!(!missing.exists(), "nothing was created");

    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "mine").unwrap();
    let err = RocksExecutionStore::open(&other, &OpenOptions::default()).err().expect("refused");
    assert!(matches!(err, OpenError::NotABrineStore { .. }), "{err:?}");
}

#[test]
fn garbage_values_are_errors_naming_family_and_key() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("n-compute.db");
    let rt = runtime();
    rt.block_on(async {
        let store = RocksExecutionStore::open(&path, &OpenOptions::default()).unwrap();
        store.create_execution(sample("e-good"), vec![]).await.unwrap();
        store.close().await.unwrap();
    });
    raw_put(&path, StoreKind::Compute, Cf::Executions, b"e-good", &[0x01, 0xde, 0xad]);
    raw_put(&path, StoreKind::Compute, Cf::Checkpoints, b"w", &[0x7f]);
    rt.block_on(async {
        let store = RocksExecutionStore::open(&path, &OpenOptions::default()).unwrap();
        let err = store.get_execution(&ExecutionId::new("e-good").unwrap()).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("executions") && msg.contains("e-good"), "{msg}");
        let err = store.get_checkpoint("w").await.unwrap_err();
        assert!(err.to_string().contains("checkpoints") && err.to_string().contains("unknown codec tag 0x7f"), "{err}");
        // Listing by job reads the record through the index: the same error, no panic.
        let err = store.get_executions(&JobId::new("j-1").unwrap()).await.unwrap_err();
        assert!(err.to_string().contains("e-good"), "{err}");
        let report = store.check().await.unwrap();
        assert!(!report.is_ok());
        let shown: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
        assert!(shown.iter().any(|p| p.starts_with("executions e-good")), "{shown:?}");
        assert!(shown.iter().any(|p| p.starts_with("checkpoints w")), "{shown:?}");
        store.close().await.unwrap();
    });
}

#[test]
fn a_consistent_store_checks_clean_and_a_broken_index_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("n-requester.db");
    let rt = runtime();
    rt.block_on(async {
        let store = RocksJobStore::open(&path, &OpenOptions::default()).unwrap();
        store.create_job(Job::new(JobId::new("j-1").unwrap(), "first")).await.unwrap();
        let report = store.check().await.unwrap();
        assert!(report.is_ok(), "{:?}", report.problems);
        assert!(report.keys_checked > 0);
        store.close().await.unwrap();
    });
    // An in-progress index entry for a job that does not exist.
    raw_put(&path, StoreKind::Requester, Cf::IdxJobsInProgress, b"\x00ghost", &[]);
    rt.block_on(async {
        let store = RocksJobStore::open(&path, &OpenOptions::default()).unwrap();
        let report = store.check().await.unwrap();
        let shown: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
        assert!(shown.iter().any(|p| p.starts_with("idx_jobs_in_progress") && p.contains("ghost")), "{shown:?}");
        store.close().await.unwrap();
    });
}

#[test]
fn a_compacted_copy_of_a_crashed_store_keeps_its_unclean_mark() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("n-compute.db");
    let copy = tmp.path().join("copy.db");
    let clean_copy = tmp.path().join("clean-copy.db");
    let rt = runtime();
    rt.block_on(async {
        let store = RocksExecutionStore::open(&path, &OpenOptions::default()).unwrap();
        store.create_execution(sample("e-1"), vec![]).await.unwrap();
        // Dropped without close: as after a crash, the store stays marked open.
        drop(store);
        let inspector = brine_rocksdb::Inspector::open(&path).unwrap();
        inspector.compact_into(&copy, 100, |_| {}).unwrap();
        inspector.close().await.unwrap();
        let copied = RocksExecutionStore::open(&copy, &OpenOptions::default()).unwrap();
        assert!(copied.unclean_shutdown(), "the copy of a crashed store still needs its repair scan");
        copied.close().await.unwrap();
        // After a clean close and a repair, the copy is clean.
        let store = RocksExecutionStore::open(&path, &OpenOptions::default()).unwrap();
        store.repair(false).await.unwrap();
        store.close().await.unwrap();
        let inspector = brine_rocksdb::Inspector::open(&path).unwrap();
        inspector.compact_into(&clean_copy, 100, |_| {}).unwrap();
        inspector.close().await.unwrap();
        let copied = RocksExecutionStore::open(&clean_copy, &OpenOptions::default()).unwrap();
        assert!(!copied.unclean_shutdown(), "a copy of a cleanly closed store is clean");
        copied.close().await.unwrap();
    });
}

#[test]
fn a_check_beside_writers_reports_no_false_problems() {
    use brine_store::model::ExecutionState;
    use brine_store::UpdateExecutionRequest;
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime();
    rt.block_on(async {
        let options = OpenOptions { durability: brine_rocksdb::Durability::Buffered, ..OpenOptions::default() };
        let store = std::sync::Arc::new(RocksExecutionStore::open(tmp.path().join("n-compute.db"), &options).unwrap());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (store, stop) = (store.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let id = format!("e-{i}");
                    store.create_execution(sample(&id), vec![]).await.unwrap();
                    let to =
                        UpdateExecutionRequest::to_state(ExecutionId::new(&id).unwrap(), ExecutionState::Running, "go");
                    store.update_execution_state(to).await.unwrap();
                    if i.is_multiple_of(3) {
                        store.delete_execution(&ExecutionId::new(&id).unwrap()).await.unwrap();
                    }
                    i += 1;
                    tokio::time::sleep(std::time::Duration::from_micros(200)).await;
                }
            })
        };
        for round in 0..12 {
            let report = store.check().await.unwrap();
            assert!(report.is_ok(), "round {round}: a check of a live store reported {:?}", report.problems);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.await.unwrap();
        store.close().await.unwrap();
    });
}

#[test]
fn memory_usage_counts_what_was_written_and_a_closed_store_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = runtime();
    rt.block_on(async {
        let store = RocksExecutionStore::open(tmp.path().join("c.db"), &OpenOptions::default()).unwrap();
        let before = store.memory_usage().unwrap();
        for n in 0..500 {
            store.create_execution(sample(&format!("e-{n:04}")), Vec::new()).await.unwrap();
        }
        let after = store.memory_usage().unwrap();
        // 500 records, their index entries and log entries: well over 100 KiB of memtable.
        assert!(after.memtables >= before.memtables + (100 << 10), "{before:?} then {after:?}");
        assert!(after.block_cache_pinned <= after.block_cache, "{after:?}");
        assert_eq!(after.total(), after.memtables + after.table_readers + after.block_cache);
        store.close().await.unwrap();
        assert!(matches!(store.memory_usage(), Err(StoreError::Closed)), "{:?}", store.memory_usage());
    });
}
