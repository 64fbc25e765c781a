//! Cleanup: injected orphans, missing index entries and a wrong counter are found,
//! repaired, counted and compacted away, on both backends; a dry run only counts them;
//! on RocksDB the scan runs by itself after an unclean shutdown and not after a clean
//! close.

mod support;

use std::sync::Arc;
use std::time::Duration;

use brine_recovery::{recover, Cleanup, CleanupReason, Policy, RecoveryOptions};
use brine_store::model::{Event, ExecutionId, ExecutionState, JobId, JobType, Timestamp};
use brine_store::{ExecutionStore, Fault, ManualClock, RepairReport};
use support::{end_state, execution, populate, rocks_at, Store, FAULT_BACKENDS};

fn id(s: &str) -> ExecutionId {
    ExecutionId::new(s).unwrap()
}

fn rows() -> Vec<(String, JobType, ExecutionState, Duration)> {
    (0..30)
        .map(|i| {
            let state = ExecutionState::ALL[i % 9];
            (format!("e-{i:02}"), JobType::Batch, state, Duration::from_secs(60 * (30 - i as u64)))
        })
        .collect()
}

async fn inject_every_fault(store: &Store) {
    let history = vec![Event::new("t", "orphaned", Timestamp::from_secs(1)); 3];
    for fault in [
        Fault::DropStateIndexEntry(id("e-01")),
        Fault::DropJobIndexEntry(id("e-02")),
        Fault::DropStateIndexEntry(id("e-03")),
        Fault::DropJobIndexEntry(id("e-03")),
        Fault::OrphanStateIndexEntry(ExecutionState::Running, id("ghost-1")),
        Fault::OrphanStateIndexEntry(ExecutionState::Completed, id("e-04")),
        Fault::OrphanJobIndexEntry(JobId::new("j-ghost").unwrap(), id("ghost-2")),
        Fault::OrphanJobIndexEntry(JobId::new("j-other").unwrap(), id("e-05")),
        Fault::OrphanHistory(id("ghost-3"), history),
        Fault::SetCounter(ExecutionState::Failed, 99),
    ] {
        store.inject(fault).await.unwrap();
    }
}

/// What [`inject_every_fault`] breaks: 4 missing index entries, 4 orphan entries,
/// 3 orphan history events; counters Running (one entry short, e-03's removed entry…).
fn assert_found(report: &RepairReport) {
    assert_eq!(report.missing_index_entries, 4, "{report}");
    assert_eq!(report.orphan_index_entries, 4, "{report}");
    assert_eq!(report.orphan_history_events, 3, "{report}");
    // Failed (99), and the states whose index lost or gained an entry before the
    // counter pass compares them: none, because index entries are fixed first and the
    // counters were only wrong for Failed.
    assert_eq!(report.counters_fixed, 1, "{report}");
    assert_eq!(report.undecodable_records, 0, "{report}");
    assert!(report.keys_scanned >= 30, "{report}");
}

#[tokio::test]
async fn injected_faults_are_repaired_and_counted() {
    for backend in FAULT_BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::default());
        let store = Store::open(backend, dir.path(), Arc::clone(&clock)).await;
        let s = store.dyn_store();
        populate(s, &clock, &rows()).await;
        let clean = end_state(s).await;
        inject_every_fault(&store).await;
        // Every fault is one problem or more, on either backend (one check, one rulebook).
        assert!(store.check_problems().await.len() >= 10, "{backend:?}: {:?}", store.check_problems().await);
        let options = RecoveryOptions { cleanup: Cleanup::Always, clock: clock.clone(), ..RecoveryOptions::default() };

        let dry = recover(s, &Policy::seed(), &RecoveryOptions { dry_run: true, ..options.clone() }).await.unwrap();
        assert_found(dry.cleanup.as_ref().unwrap());
        assert!(!dry.compacted);
        assert_eq!(s.get_execution_count(ExecutionState::Failed).await.unwrap(), 99, "a dry run repaired");

        let head = s.event_log().head().await.unwrap();
        let report = recover(s, &Policy::seed(), &options).await.unwrap();
        assert_eq!(report.cleanup_reason, CleanupReason::Requested);
        assert_found(report.cleanup.as_ref().unwrap());
        assert_eq!(report.cleaned(), 12);
        assert!(report.compacted, "{report}");
        assert_eq!(report.before.get(ExecutionState::Failed), 99);
        assert_eq!(report.after.get(ExecutionState::Failed), 3);
        assert_eq!(s.event_log().head().await.unwrap(), head, "repairs write no event-log entries");

        // Everything reads as before the faults, through both indexes.
        assert_eq!(end_state(s).await, clean);
        for i in [1, 2, 3, 5] {
            let job = JobId::new(format!("j-e-{i:02}")).unwrap();
            assert_eq!(s.get_executions(&job).await.unwrap().len(), 1, "job index of e-{i:02}");
        }
        assert!(s.get_executions(&JobId::new("j-ghost").unwrap()).await.unwrap().is_empty());
        assert!(s.get_executions(&JobId::new("j-other").unwrap()).await.unwrap().is_empty());
        for state in ExecutionState::ALL {
            let n = end_state(s).await.iter().filter(|(_, st, _)| *st == state).count() as u64;
            assert_eq!(s.get_execution_count(state).await.unwrap(), n, "counter of {state}");
        }
        assert!(store.check_problems().await.is_empty(), "{:?}", store.check_problems().await);

        let again = recover(s, &Policy::seed(), &options).await.unwrap();
        assert_eq!(again.cleaned(), 0, "{again}");
        assert!(!again.compacted);
        s.close().await.unwrap();
    }
}

#[tokio::test]
async fn the_scan_runs_after_an_unclean_shutdown_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node-compute.db");
    let clock = Arc::new(ManualClock::default());
    let options = RecoveryOptions { clock: clock.clone(), ..RecoveryOptions::default() };

    let store = rocks_at(&path, clock.clone());
    assert!(!store.unclean_shutdown(), "a new store");
    support::create_in_state(&store, execution("e-1", JobType::Batch, ExecutionState::Running)).await;
    store.inject(Fault::SetCounter(ExecutionState::Running, 7)).await.unwrap();
    store.close().await.unwrap();

    let store = rocks_at(&path, clock.clone());
    assert!(!store.unclean_shutdown());
    let report = recover(&store, &Policy::seed(), &options).await.unwrap();
    assert_eq!(report.cleanup_reason, CleanupReason::SkippedCleanShutdown);
    assert!(report.cleanup.is_none());
    assert_eq!(report.before.get(ExecutionState::Running), 7, "only the counters were read");
    // Dropped without close: the next open sees an unclean shutdown.
    drop(store);

    // A session that does not repair (an operator inspecting the store, say) keeps the
    // crash visible to the next recovery.
    let store = rocks_at(&path, clock.clone());
    assert!(store.unclean_shutdown());
    let never = recover(&store, &Policy::seed(), &RecoveryOptions { cleanup: Cleanup::Never, ..options.clone() })
        .await
        .unwrap();
    assert_eq!(never.cleanup_reason, CleanupReason::SkippedByOptions);
    store.close().await.unwrap();

    let store = rocks_at(&path, clock.clone());
    assert!(store.unclean_shutdown(), "still unclean: nothing repaired it");
    let report = recover(&store, &Policy::seed(), &options).await.unwrap();
    assert_eq!(report.cleanup_reason, CleanupReason::UncleanShutdown);
    assert_eq!(report.cleanup.as_ref().unwrap().counters_fixed, 1, "{report}");
    assert_eq!(report.after.get(ExecutionState::Running), 1);
    store.close().await.unwrap();

    let store = rocks_at(&path, clock);
    assert!(!store.unclean_shutdown(), "closed cleanly after the repair");
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_zero_batch_size_is_refused() {
    let store = brine_memory::MemExecutionStore::new();
    let options = RecoveryOptions { batch_size: 0, ..RecoveryOptions::default() };
    let err = recover(&store, &Policy::fail_live(), &options).await.unwrap_err();
    assert_eq!(err.to_string(), "recovery option batch_size: must be at least 1");
}
