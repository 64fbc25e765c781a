//! Transactions, concurrency, close, and the error variants (CONTRACT §3).

use std::collections::BTreeSet;
use std::sync::Arc;

use brine_store::model::{ExecutionState, JobId, JobState};
use brine_store::{EventFilter, ExecutionStore, HistoryQuery, Position, Result, StoreError, UpdateJobStateRequest};
use tokio::task::JoinSet;

use crate::assert_err;
use crate::fixtures::{counts, create_all, eid, event, execution, jid, job, to_state, Env};
use crate::Factory;

use ExecutionState::*;

/// Nothing a transaction writes is visible before commit; everything is after, with one
/// log entry per change.
pub async fn commit_applies_all_at_once(f: &dyn Factory) {
    let env = Env::new(f).await;
    let store = env.exec();
    create_all(&*store, "j1", &["e0"]).await;
    let reader = Arc::clone(&store);
    let mut tx = store.begin_tx().await.unwrap();
    tx.create_execution(execution("e1", "j1"), vec![event("a")]).await.unwrap();
    tx.update_execution_state(to_state("e0", Running)).await.unwrap();
    tx.add_execution_event(&eid("e0"), vec![event("b")]).await.unwrap();
    assert!(reader.get_execution(&eid("e1")).await.unwrap_err().is_not_found(), "uncommitted create is invisible");
    assert_eq!(reader.get_execution(&eid("e0")).await.unwrap().state(), Created);
    assert_eq!(reader.event_log().head().await.unwrap(), 1);
    tx.commit().await.unwrap();
    assert_eq!(store.get_execution(&eid("e1")).await.unwrap().revision, 1);
    assert_eq!(store.get_execution(&eid("e0")).await.unwrap().state(), Running);
    assert_eq!(store.get_execution_events(&eid("e0")).await.unwrap().len(), 1);
    assert_eq!(counts(&*store).await, vec![1, 0, 1, 0, 0, 0, 0, 0, 0]);
    assert_eq!(store.event_log().head().await.unwrap(), 3);
}

/// Inside a transaction, reads see the transaction's own writes.
pub async fn reads_own_writes(f: &dyn Factory) {
    let env = Env::new(f).await;
    let store = env.exec();
    let mut tx = store.begin_tx().await.unwrap();
    tx.create_execution(execution("e1", "j1"), vec![]).await.unwrap();
    assert_eq!(tx.get_execution(&eid("e1")).await.unwrap().revision, 1);
    tx.update_execution_state(to_state("e1", Running).expect_revision(1)).await.unwrap();
    let seen = tx.get_execution(&eid("e1")).await.unwrap();
    assert_eq!((seen.state(), seen.revision), (Running, 2));
    tx.delete_execution(&eid("e1")).await.unwrap();
    assert!(tx.get_execution(&eid("e1")).await.unwrap_err().is_not_found());
    tx.create_execution(execution("e2", "j1"), vec![]).await.unwrap();
    tx.commit().await.unwrap();
    assert!(store.get_execution(&eid("e1")).await.unwrap_err().is_not_found());
    assert_eq!(store.get_execution(&eid("e2")).await.unwrap().revision, 1);
    // A transaction sees what is committed: a second create of e2 is refused.
    let mut tx = store.begin_tx().await.unwrap();
    assert_err!(tx.create_execution(execution("e2", "j1"), vec![]).await, StoreError::AlreadyExists { .. });
}

/// Dropping a transaction without commit discards it; the store takes writes again.
pub async fn drop_rolls_back(f: &dyn Factory) {
    let env = Env::new(f).await;
    let store = env.exec();
    {
        let mut tx = store.begin_tx().await.unwrap();
        tx.create_execution(execution("e1", "j1"), vec![]).await.unwrap();
    }
    assert!(store.get_execution(&eid("e1")).await.unwrap_err().is_not_found());
    assert_eq!(store.event_log().head().await.unwrap(), 0);
    assert_eq!(counts(&*store).await, vec![0; 9]);
    store.create_execution(execution("e1", "j1"), vec![]).await.unwrap();
    assert_eq!(store.event_log().head().await.unwrap(), 1, "sequence numbers of a rolled-back tx are not used");
}

/// `rollback` discards every change.
pub async fn explicit_rollback(f: &dyn Factory) {
    let env = Env::new(f).await;
    let store = env.exec();
    create_all(&*store, "j1", &["e1"]).await;
    let mut tx = store.begin_tx().await.unwrap();
    tx.update_execution_state(to_state("e1", Running)).await.unwrap();
    tx.delete_execution(&eid("e1")).await.unwrap();
    tx.rollback().await.unwrap();
    let e = store.get_execution(&eid("e1")).await.unwrap();
    assert_eq!((e.state(), e.revision), (Created, 1));
    assert_eq!(store.event_log().head().await.unwrap(), 1);
}

async fn failing_batch(store: &dyn ExecutionStore) -> Result<()> {
    let mut tx = store.begin_tx().await?;
    tx.create_execution(execution("n1", "j1"), vec![event("x")]).await?;
    tx.update_execution_state(to_state("e1", Running)).await?;
    tx.update_execution_state(to_state("e1", Publishing).expect_states([Created])).await?;
    tx.create_execution(execution("n2", "j1"), vec![]).await?;
    tx.commit().await
}

/// An error in the middle of a transaction (propagated with `?`) leaves nothing behind.
pub async fn error_in_middle_leaves_nothing(f: &dyn Factory) {
    let env = Env::new(f).await;
    let store = env.exec();
    create_all(&*store, "j1", &["e1"]).await;
    let err = failing_batch(&*store).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidState { .. }), "{err:?}");
    assert!(store.get_execution(&eid("n1")).await.unwrap_err().is_not_found());
    assert!(store.get_execution(&eid("n2")).await.unwrap_err().is_not_found());
    let e = store.get_execution(&eid("e1")).await.unwrap();
    assert_eq!((e.state(), e.revision), (Created, 1));
    assert_eq!(counts(&*store).await, vec![1, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(store.event_log().head().await.unwrap(), 1);
}

/// A caller that ignores a failed step and commits anyway gets `TransactionAborted`,
/// and nothing of the transaction is visible: a failed step may have queued part of its
/// writes, so the transaction refuses later steps and its commit.
pub async fn failed_step_aborts_the_transaction(f: &dyn Factory) {
    let env = Env::new(f).await;
    let store = env.exec();
    create_all(&*store, "j1", &["e1"]).await;
    let mut tx = store.begin_tx().await.unwrap();
    tx.create_execution(execution("n1", "j1"), vec![]).await.unwrap();
    // Fails: e1 is Created, not Running. The caller ignores the error.
    let failed = tx.update_execution_state(to_state("e1", Publishing).expect_states([Running])).await;
    assert_err!(failed, StoreError::InvalidState { .. });
    assert_err!(tx.delete_execution(&eid("e1")).await, StoreError::TransactionAborted { .. });
    let err = tx.commit().await.unwrap_err();
    assert!(matches!(err, StoreError::TransactionAborted { .. }), "{err:?}");
    assert!(err.to_string().contains("Created"), "the error names the first failure: {err}");
    assert!(store.get_execution(&eid("n1")).await.unwrap_err().is_not_found());
    assert_eq!(store.get_execution(&eid("e1")).await.unwrap().revision, 1);
    assert_eq!(counts(&*store).await, vec![1, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(store.event_log().head().await.unwrap(), 1);
    // A failed read is no failed step.
    let mut tx = store.begin_tx().await.unwrap();
    assert!(tx.get_execution(&eid("nope")).await.unwrap_err().is_not_found());
    tx.create_execution(execution("n2", "j1"), vec![]).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.get_execution(&eid("n2")).await.unwrap().revision, 1);
}

/// A plain write from the task that holds an open transaction would wait for itself: it
/// is refused with `TransactionHeld` instead of hanging, and changes nothing. Other
/// tasks still wait for the transaction as usual.
pub async fn plain_write_while_holding_a_transaction_is_refused(f: &dyn Factory) {
    let env = Env::new(f).await;
    let store = env.exec();
    let patience = std::time::Duration::from_secs(10);
    let mut tx = store.begin_tx().await.unwrap();
    tx.create_execution(execution("e1", "j1"), vec![]).await.unwrap();
    let plain = tokio::time::timeout(patience, store.create_execution(execution("e2", "j1"), vec![]))
        .await
        .expect("a plain write from the holding task returns instead of deadlocking");
    assert_err!(plain, StoreError::TransactionHeld);
    let checkpoint = tokio::time::timeout(patience, store.checkpoint("w", 0)).await.expect("no deadlock");
    assert_err!(checkpoint, StoreError::TransactionHeld);
    // Another task waits for the transaction and then writes.
    let other = Arc::clone(&store);
    let waiting = tokio::spawn(async move { other.create_execution(execution("e3", "j1"), vec![]).await });
    tokio::task::yield_now().await;
    tx.commit().await.unwrap();
    tokio::time::timeout(patience, waiting).await.expect("the other task proceeds").unwrap().unwrap();
    // The transaction is over: plain writes from this task work again.
    store.create_execution(execution("e2", "j1"), vec![]).await.unwrap();
    assert_eq!(store.event_log().head().await.unwrap(), 3);
}

/// A transaction left open (leaked, or held by a stuck task) does not block `close`:
/// close completes, and the transaction's later steps and commit get `Closed`.
pub async fn close_does_not_wait_for_a_leaked_transaction(f: &dyn Factory) {
    let mut env = Env::new(f).await;
    let store = env.exec();
    create_all(&*store, "j1", &["e1"]).await;
    let mut tx = store.begin_tx().await.unwrap();
    tx.create_execution(execution("n1", "j1"), vec![]).await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), store.close())
        .await
        .expect("close returns while a transaction is open")
        .unwrap();
    assert_err!(tx.commit().await, StoreError::Closed);
    drop(store);
    if env.backend.reopen().await {
        let store = env.exec();
        assert!(store.get_execution(&eid("n1")).await.unwrap_err().is_not_found(), "the open tx wrote nothing");
        assert_eq!(store.get_execution(&eid("e1")).await.unwrap().revision, 1);
    }
}

/// Concurrent read-modify-write transactions are serialized: none is lost.
pub async fn transactions_serialize(f: &dyn Factory) {
    let env = Env::new(f).await;
    let store = env.exec();
    create_all(&*store, "j1", &["e1"]).await;
    let mut tasks = JoinSet::new();
    for _ in 0..16 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let mut tx = store.begin_tx().await.unwrap();
            let current = tx.get_execution(&eid("e1")).await.unwrap();
            tokio::task::yield_now().await;
            tx.update_execution_state(to_state("e1", Running).expect_revision(current.revision)).await.unwrap();
            tx.commit().await.unwrap();
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    assert_eq!(store.get_execution(&eid("e1")).await.unwrap().revision, 17);
}

/// 32 tasks race conditional updates on one execution: every revision is won exactly
/// once, losers get `InvalidRevision`, and the final revision is wins + 1.
pub async fn racing_conditional_updates(f: &dyn Factory) {
    let env = Env::new(f).await;
    let store = env.exec();
    create_all(&*store, "j1", &["e1"]).await;
    let mut tasks = JoinSet::new();
    for task in 0..32 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let (mut won, mut lost) = (Vec::new(), 0u32);
            for _ in 0..20 {
                let seen = store.get_execution(&eid("e1")).await.unwrap().revision;
                let state = if task % 2 == 0 { Running } else { BidAccepted };
                match store.update_execution_state(to_state("e1", state).expect_revision(seen)).await {
                    Ok(e) => {
                        assert_eq!(e.revision, seen + 1);
                        won.push(seen);
                    }
                    Err(StoreError::InvalidRevision { expected, actual, .. }) => {
                        assert_eq!(expected, seen);
                        assert!(actual > seen, "a loser sees a newer revision");
                        lost += 1;
                    }
                    Err(other) => panic!("unexpected error {other}"),
                }
            }
            (won, lost)
        });
    }
    let mut wins = Vec::new();
    let mut losses = 0;
    while let Some(r) = tasks.join_next().await {
        let (won, lost) = r.unwrap();
        wins.extend(won);
        losses += lost;
    }
    let unique: BTreeSet<u64> = wins.iter().copied().collect();
    assert_eq!(unique.len(), wins.len(), "no revision is won twice");
    assert_eq!(wins.len() + losses as usize, 32 * 20);
    let expected: BTreeSet<u64> = (1..=wins.len() as u64).collect();
    assert_eq!(unique, expected, "every revision from 1 was won exactly once");
    let last = store.get_execution(&eid("e1")).await.unwrap();
    assert_eq!(last.revision, wins.len() as u64 + 1);
    assert_eq!(store.event_log().head().await.unwrap(), 1 + wins.len() as u64, "one log entry per win");
}

/// `close` is idempotent; afterwards every operation is `Closed` (no panic), and waiters
/// are released with `Closed`.
pub async fn close_is_idempotent_and_later_calls_fail(f: &dyn Factory) {
    let env = Env::new(f).await;
    let store = env.exec();
    let jobs = env.jobs();
    create_all(&*store, "j1", &["e1"]).await;
    jobs.create_job(job("j1")).await.unwrap();
    let log = store.event_log();
    let waiter = tokio::spawn(async move { log.wait_for(100).await });
    tokio::task::yield_now().await;
    store.close().await.unwrap();
    store.close().await.unwrap();
    jobs.close().await.unwrap();
    jobs.close().await.unwrap();
    let waited = tokio::time::timeout(std::time::Duration::from_secs(10), waiter).await.expect("waiter released");
    assert!(matches!(waited.unwrap(), Err(StoreError::Closed)));
    assert_err!(store.get_execution(&eid("e1")).await, StoreError::Closed);
    assert_err!(store.create_execution(execution("e2", "j1"), vec![]).await, StoreError::Closed);
    assert_err!(store.update_execution_state(to_state("e1", Running)).await, StoreError::Closed);
    assert_err!(store.delete_execution(&eid("e1")).await, StoreError::Closed);
    assert_err!(store.get_execution_count(Created).await, StoreError::Closed);
    assert_err!(store.get_live_executions().await, StoreError::Closed);
    assert!(matches!(store.begin_tx().await, Err(StoreError::Closed)));
    assert_err!(store.checkpoint("w", 0).await, StoreError::Closed);
    assert_err!(store.event_log().get_events(Position::TrimHorizon, 1, &EventFilter::all()).await, StoreError::Closed);
    assert_err!(jobs.get_job(&jid("j1")).await, StoreError::Closed);
    assert_err!(jobs.create_job(job("j2")).await, StoreError::Closed);
    assert_err!(jobs.grab_next("q").await, StoreError::Closed);
}

/// Every error variant of the contract is produced by some operation.
pub async fn every_error_variant_is_produced(f: &dyn Factory) {
    let env = Env::new(f).await;
    let store = env.exec();
    let jobs = env.jobs();
    create_all(&*store, "j1", &["e1", "done"]).await;
    store.update_execution_state(to_state("done", Completed)).await.unwrap();
    assert_err!(store.create_execution(execution("e1", "j1"), vec![]).await, StoreError::AlreadyExists { .. });
    assert_err!(store.get_execution(&eid("zzz")).await, StoreError::NotFound { .. });
    assert_err!(
        store.update_execution_state(to_state("e1", Running).expect_states([Running])).await,
        StoreError::InvalidState { .. }
    );
    assert_err!(
        store.update_execution_state(to_state("e1", Running).expect_revision(9)).await,
        StoreError::InvalidRevision { .. }
    );
    assert_err!(store.update_execution_state(to_state("done", Running)).await, StoreError::AlreadyTerminal { .. });
    assert_err!(store.checkpoint("", 0).await, StoreError::BlankCheckpointName);
    assert_err!(store.checkpoint("w", 99).await, StoreError::CheckpointBeyondHead { .. });
    let mut bad = job("j-bad");
    bad.namespace = "has space".into();
    let err = assert_err!(jobs.create_job(bad).await, StoreError::Invalid(_));
    assert!(err.to_string().contains("namespace"));
    assert_err!(jobs.get_job_by_prefix("a b").await, StoreError::Invalid(_));
    jobs.create_job(job("abc1")).await.unwrap();
    jobs.create_job(job("abc2")).await.unwrap();
    assert_err!(jobs.get_job_by_prefix("abc").await, StoreError::MultipleJobsFound { .. });
    let q = HistoryQuery { token: Some("garbage".into()), ..HistoryQuery::default() };
    assert_err!(jobs.get_job_history(&jid("abc1"), &q).await, StoreError::InvalidToken { .. });
    jobs.update_job_state(UpdateJobStateRequest::new(jid("abc1"), JobState::Stopped, "stop")).await.unwrap();
    assert_err!(
        jobs.update_job_state(UpdateJobStateRequest::new(jid("abc1"), JobState::Running, "again")).await,
        StoreError::AlreadyTerminal { .. }
    );
    assert!(JobId::new("no good").is_err());
    store.close().await.unwrap();
    assert_err!(store.get_execution(&eid("e1")).await, StoreError::Closed);
}
