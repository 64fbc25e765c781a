//! Group commit: writes that arrive together share one transaction, yet each succeeds or
//! fails on its own, a write waiting for a row lock holds back none of the others, and a
//! write whose caller stopped waiting leaves the store whole.

mod support;

use std::sync::Arc;
use std::time::Duration;

use brine_store::model::{Execution, ExecutionState, JobId};
use brine_store::{ExecutionStore, JobStore, StoreError, UpdateExecutionRequest};
use support::{eid, job, runtime};
use tokio::task::JoinSet;

fn execution(id: &str) -> Execution {
    Execution::new(eid(id), &job("j"))
}

/// 96 writes at once, a third of them failing (an id taken, a missing execution): the
/// failures get their own errors, every success is stored, logged once and counted.
#[test]
fn grouped_writes_succeed_or_fail_each_on_its_own() {
    runtime().block_on(async {
        let database = support::fresh_database().await;
        let (store, jobs) = support::open(&database, Arc::new(brine_store::SystemClock)).await;
        let store = Arc::new(store);
        for i in 0..32 {
            store.create_execution(execution(&format!("old-{i}")), vec![]).await.unwrap();
        }
        let head = store.event_log().head().await.unwrap();
        let mut set = JoinSet::new();
        for i in 0..32 {
            let s = Arc::clone(&store);
            set.spawn(async move { ("new", s.create_execution(execution(&format!("new-{i}")), vec![]).await.err()) });
            let s = Arc::clone(&store);
            set.spawn(async move { ("taken", s.create_execution(execution(&format!("old-{i}")), vec![]).await.err()) });
            let s = Arc::clone(&store);
            set.spawn(async move {
                let request =
                    UpdateExecutionRequest::to_state(eid(&format!("none-{i}")), ExecutionState::Running, "go");
                ("missing", s.update_execution_state(request).await.err())
            });
        }
        while let Some(joined) = set.join_next().await {
            match joined.unwrap() {
                ("new", err) => assert!(err.is_none(), "{err:?}"),
                ("taken", err) => assert!(err.as_ref().is_some_and(StoreError::is_already_exists), "{err:?}"),
                (_, err) => assert!(err.as_ref().is_some_and(StoreError::is_not_found), "{err:?}"),
            }
        }
        assert_eq!(store.event_log().head().await.unwrap(), head + 32, "one log entry per success");
        assert_eq!(store.get_execution_count(ExecutionState::Created).await.unwrap(), 64);
        for i in 0..32 {
            assert_eq!(store.get_execution(&eid(&format!("new-{i}"))).await.unwrap().revision, 1);
        }
        assert!(store.check().await.unwrap().is_ok());

        // Jobs whose names collide fail on the unique index, a statement error in the
        // middle of a group: only the job that took the name is stored.
        let jobs = Arc::new(jobs);
        let mut set = JoinSet::new();
        for i in 0..48 {
            let j = Arc::clone(&jobs);
            set.spawn(async move {
                let mut job = job(&format!("job-{i}"));
                job.name = format!("name-{}", i % 16);
                j.create_job(job).await.err()
            });
        }
        let mut taken = 0;
        while let Some(joined) = set.join_next().await {
            match joined.unwrap() {
                None => {}
                Some(e) => {
                    assert!(
                        matches!(&e, StoreError::AlreadyExists { id, .. } if id.starts_with("default/name-")),
                        "{e}"
                    );
                    taken += 1;
                }
            }
        }
        assert_eq!(taken, 32, "each of the 16 names is taken by exactly one job");
        assert!(jobs.check().await.unwrap().is_ok());
        support::close(&database, &store, &jobs).await;
    });
}

/// Another session holds an execution's row: the write that needs it waits, and the
/// writes of other executions, made meanwhile, commit at once.
#[test]
fn a_write_waiting_for_a_row_holds_back_no_other_write() {
    runtime().block_on(async {
        let database = support::fresh_database().await;
        let (store, jobs) = support::open(&database, Arc::new(brine_store::SystemClock)).await;
        let store = Arc::new(store);
        for id in ["held", "free"] {
            store.create_execution(execution(id), vec![]).await.unwrap();
        }
        let mut holder = support::connect(&database).await;
        let tx = holder.transaction().await.unwrap();
        tx.execute("SELECT 1 FROM compute.executions WHERE id = 'held' FOR UPDATE", &[]).await.unwrap();
        let s = Arc::clone(&store);
        let waiting = tokio::spawn(async move {
            s.update_execution_state(UpdateExecutionRequest::to_state(eid("held"), ExecutionState::Running, "go")).await
        });
        // The held write is queued first; everything after it must not wait for it.
        tokio::time::sleep(Duration::from_millis(50)).await;
        for i in 0..20 {
            let write = async {
                store.create_execution(execution(&format!("other-{i}")), vec![]).await.unwrap();
                store.add_execution_event(&eid("free"), vec![]).await.unwrap();
            };
            tokio::time::timeout(Duration::from_secs(5), write).await.expect("a write held back by another's lock");
        }
        assert!(!waiting.is_finished(), "the held row's write waits for the row");
        tx.commit().await.unwrap();
        let e = waiting.await.unwrap().unwrap();
        assert_eq!((e.state(), e.revision), (ExecutionState::Running, 2));
        assert!(store.check().await.unwrap().is_ok());
        support::close(&database, &store, &jobs).await;
    });
}

/// Callers that stop waiting (their futures dropped at every point of a write's life)
/// leave a store that works, whose writes are each whole or absent.
#[test]
fn writes_whose_callers_stopped_waiting_are_whole_or_absent() {
    runtime().block_on(async {
        let database = support::fresh_database().await;
        let (store, jobs) = support::open(&database, Arc::new(brine_store::SystemClock)).await;
        let store = Arc::new(store);
        let mut set = JoinSet::new();
        for i in 0..200u64 {
            let s = Arc::clone(&store);
            set.spawn(async move {
                let create = s.create_execution(execution(&format!("e-{i}")), vec![]);
                // From not at all to the whole write, in steps of 25 µs.
                let _ = tokio::time::timeout(Duration::from_micros(25 * (i % 80)), create).await;
            });
        }
        while let Some(joined) = set.join_next().await {
            joined.unwrap();
        }
        // Writes already handed over may still commit: wait for the store to settle.
        store.create_execution(execution("last"), vec![]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let report = store.check().await.unwrap();
        assert!(report.is_ok(), "{report:?}");
        let count = store.get_execution_count(ExecutionState::Created).await.unwrap();
        let head = store.event_log().head().await.unwrap();
        assert_eq!(head, count, "one log entry for each stored execution");
        support::close(&database, &store, &jobs).await;
    });
}

/// 24 tasks grab from one queue while 8 others delete queued jobs: grabs grouped
/// together lock their jobs with one statement, yet no job is grabbed twice, and no
/// deleted job is ever grabbed.
#[test]
fn grouped_grabs_take_each_job_once_and_never_a_deleted_one() {
    runtime().block_on(async {
        let database = support::fresh_database().await;
        let (store, jobs) = support::open(&database, Arc::new(brine_store::SystemClock)).await;
        let jobs = Arc::new(jobs);
        for i in 0..600 {
            jobs.enqueue("q", job(&format!("job-{i:04}"))).await.unwrap();
        }
        let mut set = JoinSet::new();
        for _ in 0..24 {
            let j = Arc::clone(&jobs);
            set.spawn(async move {
                let mut grabbed = Vec::new();
                while let Some(job) = j.grab_next("q").await.unwrap() {
                    grabbed.push(job.id.as_str().to_owned());
                }
                (grabbed, Vec::new())
            });
        }
        for t in 0..8 {
            let j = Arc::clone(&jobs);
            set.spawn(async move {
                let mut deleted = Vec::new();
                for i in (t..600).step_by(40) {
                    let id = JobId::new(format!("job-{i:04}")).unwrap();
                    match j.delete_job(&id).await {
                        Ok(()) => deleted.push(id.as_str().to_owned()),
                        Err(e) => assert!(e.is_not_found(), "{e}"),
                    }
                }
                (Vec::new(), deleted)
            });
        }
        let (mut grabbed, mut deleted) = (Vec::new(), Vec::new());
        while let Some(joined) = set.join_next().await {
            let (g, d) = joined.unwrap();
            grabbed.extend(g);
            deleted.extend(d);
        }
        let mut seen = std::collections::HashSet::new();
        for id in &grabbed {
            assert!(seen.insert(id.clone()), "{id} grabbed twice");
        }
        // A job is either deleted (while queued or after its grab) or grabbed, and every
        // one was one of the two.
        for i in 0..600 {
            let id = format!("job-{i:04}");
            assert!(seen.contains(&id) || deleted.contains(&id), "{id} neither grabbed nor deleted");
        }
        for id in &deleted {
            if seen.contains(id) {
                // Deleted after its grab: the grab came first, so it was queued then.
                continue;
            }
            assert!(jobs.get_job(&JobId::new(id.as_str()).unwrap()).await.is_err());
        }
        assert!(jobs.check().await.unwrap().is_ok());
        support::close(&database, &store, &jobs).await;
    });
}
