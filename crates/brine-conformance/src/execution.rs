//! Execution store checks (CONTRACT §3).

use std::time::Duration;

use brine_store::model::{
    ComputeState, DesiredState, DesiredStateKind, ExecutionState, LogObject, NodeId, ObjectType, Operation, RunOutput,
};
use brine_store::{AnyState, ExecutionUpdate, StoreError, UpdateExecutionRequest};

use crate::assert_err;
use crate::fixtures::{counts, create_all, eid, event, execution, ids, to_state, whole_log, Env};
use crate::Factory;

use ExecutionState::*;

/// Create stores revision 1 and sets create and modify time from the store's clock.
pub async fn create_sets_revision_and_times(f: &dyn Factory) {
    let env = Env::new(f).await;
    let store = env.exec();
    let before = env.clock.peek();
    let mut e = execution("e1", "j1");
    e.revision = 42;
    let created = store.create_execution(e, vec![event("hello")]).await.unwrap();
    assert_eq!(created.revision, 1);
    assert!(created.create_time >= before, "create time comes from the store clock");
    assert_eq!(created.create_time, created.modify_time);
    let got = store.get_execution(&eid("e1")).await.unwrap();
    assert_eq!(got, created);
    assert_eq!(store.get_execution_events(&eid("e1")).await.unwrap(), vec![event("hello")]);
}

/// A second create with the same id is `AlreadyExists` and changes nothing.
pub async fn create_duplicate_is_already_exists(f: &dyn Factory) {
    let env = Env::new(f).await;
    let store = env.exec();
    store.create_execution(execution("e1", "j1"), vec![]).await.unwrap();
    let head = store.event_log().head().await.unwrap();
    let err =
        assert_err!(store.create_execution(execution("e1", "j2"), vec![]).await, StoreError::AlreadyExists { .. });
    assert!(err.to_string().contains("e1"), "{err}");
    assert_eq!(store.get_execution(&eid("e1")).await.unwrap().job_id.as_str(), "j1");
    assert_eq!(store.get_execution_count(Created).await.unwrap(), 1);
    assert!(store.get_executions(&crate::fixtures::jid("j2")).await.unwrap().is_empty());
    assert_eq!(store.event_log().head().await.unwrap(), head);
}

/// A new execution starts in its first state: a create in any later state (`Running`,
/// a terminal state, …) is `InvalidState` naming the allowed states, and writes nothing,
/// on the compute store and the requester alike.
pub async fn create_refuses_a_state_past_the_first(f: &dyn Factory) {
    let env = Env::new(f).await;
    let store = env.exec();
    let jobs = env.jobs();
    jobs.create_job(crate::fixtures::job("j1")).await.unwrap();
    let jobs_head = jobs.event_log().head().await.unwrap();
    for state in ExecutionState::ALL.into_iter().filter(|s| *s != Created) {
        let mut x = execution("x", "j1");
        x.compute_state = ComputeState::new(state, "restored");
        let err = store.create_execution(x.clone(), vec![event("e")]).await.unwrap_err();
        match &err {
            StoreError::InvalidState { actual, expected, .. } => {
                assert_eq!(*actual, AnyState::Execution(state));
                assert_eq!(expected.to_string(), "one of [Created]", "{err}");
            }
            other => panic!("{state}: expected InvalidState, got {other:?}"),
        }
        assert_err!(jobs.create_execution(x).await, StoreError::InvalidState { .. });
    }
    assert!(store.get_execution(&eid("x")).await.unwrap_err().is_not_found());
    assert_eq!(counts(&*store).await, vec![0; 9]);
    assert_eq!(store.event_log().head().await.unwrap(), 0);
    assert_eq!(jobs.event_log().head().await.unwrap(), jobs_head);
    assert!(jobs.get_execution(&eid("x")).await.unwrap_err().is_not_found());
}

/// Events added to a terminal execution move its modify time (not its revision) and
/// log an update, so a purge that archived it before does not delete it; events on a
/// live execution change only its history.
pub async fn events_on_a_terminal_execution_move_its_modify_time(f: &dyn Factory) {
    let env = Env::new(f).await;
    let store = env.exec();
    create_all(&*store, "j1", &["live", "done"]).await;
    let done = store.update_execution_state(to_state("done", Completed)).await.unwrap();
    let live = store.get_execution(&eid("live")).await.unwrap();
    let head = store.event_log().head().await.unwrap();
    env.advance(Duration::from_secs(5));
    store.add_execution_event(&eid("live"), vec![event("a")]).await.unwrap();
    assert_eq!(store.get_execution(&eid("live")).await.unwrap(), live);
    assert_eq!(store.event_log().head().await.unwrap(), head, "history alone is no change of the execution");
    store.add_execution_event(&eid("done"), vec![event("b")]).await.unwrap();
    let after = store.get_execution(&eid("done")).await.unwrap();
    assert!(after.modify_time > done.modify_time);
    assert_eq!((after.revision, after.state()), (done.revision, Completed));
    assert_eq!(store.event_log().head().await.unwrap(), head + 1);
    let log = whole_log(&*store).await;
    let last = log.last().unwrap();
    assert_eq!(last.operation, Operation::Update);
    assert!(matches!(&last.object, LogObject::Execution { events, .. } if events.len() == 1));
    assert_eq!(store.get_execution_events(&eid("done")).await.unwrap().len(), 1);
}

/// A create with a bad field is `Invalid` naming the field, and writes nothing.
pub async fn create_rejects_bad_fields(f: &dyn Factory) {
    let env = Env::new(f).await;
    let store = env.exec();
    let mut e = execution("e1", "j1");
    e.namespace = "bad namespace".into();
    let err = assert_err!(store.create_execution(e, vec![]).await, StoreError::Invalid(_));
    assert!(err.to_string().contains("namespace"), "{err}");
    let mut e = execution("e2", "j1");
    e.job_id = crate::fixtures::jid("other");
    let err = assert_err!(store.create_execution(e, vec![]).await, StoreError::Invalid(_));
    assert!(err.to_string().contains("job"), "{err}");
    assert_eq!(counts(&*store).await, vec![0; 9]);
    assert_eq!(store.event_log().head().await.unwrap(), 0);
    assert!(store.get_execution(&eid("e1")).await.unwrap_err().is_not_found());
}

/// Reading an unknown execution is `NotFound` naming it.
pub async fn get_missing_is_not_found(f: &dyn Factory) {
    let env = Env::new(f).await;
    let store = env.exec();
    let err = assert_err!(store.get_execution(&eid("nope")).await, StoreError::NotFound { .. });
    assert!(err.to_string().contains("nope"), "{err}");
    assert!(store.get_execution_events(&eid("nope")).await.unwrap_err().is_not_found());
    assert!(store.get_executions(&crate::fixtures::jid("nope")).await.unwrap().is_empty());
}

/// A successful update bumps the revision by exactly one, sets the modify time and moves
/// the state index entry and counters.
pub async fn update_bumps_revision_and_moves_state_index(f: &dyn Factory) {
    let env = Env::new(f).await;
    let store = env.exec();
    let created = store.create_execution(execution("e1", "j1"), vec![]).await.unwrap();
    env.advance(Duration::from_secs(5));
    let updated = store.update_execution_state(to_state("e1", BidAccepted).expect_states([Created])).await.unwrap();
    assert_eq!(updated.revision, 2);
    assert_eq!(updated.state(), BidAccepted);
    assert!(updated.modify_time > created.modify_time);
    assert_eq!(updated.create_time, created.create_time);
    assert!(store.get_executions_in_state(Created, None, 10).await.unwrap().is_empty());
    assert_eq!(ids(&store.get_executions_in_state(BidAccepted, None, 10).await.unwrap()), ["e1"]);
    assert_eq!(store.get_execution_count(Created).await.unwrap(), 0);
    assert_eq!(store.get_execution_count(BidAccepted).await.unwrap(), 1);
    let again = store.update_execution_state(to_state("e1", BidAccepted)).await.unwrap();
    assert_eq!(again.revision, 3, "an update to the same state still bumps the revision");
    assert_eq!(store.get_execution(&eid("e1")).await.unwrap(), again);
    env.assert_consistent().await;
}

async fn assert_unchanged(env: &Env, id: &str, revision: u64, state: ExecutionState, head: u64) {
    let store = env.exec();
    let now = store.get_execution(&eid(id)).await.unwrap();
    assert_eq!((now.revision, now.state()), (revision, state), "a failed condition changes nothing");
    assert_eq!(store.event_log().head().await.unwrap(), head, "a failed condition logs nothing");
}

/// Expected states that do not hold give `InvalidState` with actual and expected, and
/// change nothing.
pub async fn update_expected_state_mismatch_changes_nothing(f: &dyn Factory) {
    let env = Env::new(f).await;
    let store = env.exec();
    create_all(&*store, "j1", &["e1"]).await;
    let head = store.event_log().head().await.unwrap();
    let req = to_state("e1", Running).expect_states([BidAccepted, Running]).with_events([event("x")]);
    let err = assert_err!(store.update_execution_state(req).await, StoreError::InvalidState { .. });
    match &err {
        StoreError::InvalidState { actual, expected, .. } => {
            assert_eq!(*actual, AnyState::Execution(Created));
            assert_eq!(expected.to_string(), "one of [BidAccepted, Running]");
        }
        other => panic!("{other}"),
    }
    assert_unchanged(&env, "e1", 1, Created, head).await;
    assert!(store.get_execution_events(&eid("e1")).await.unwrap().is_empty());
}

/// Unexpected states that hold give `InvalidState` and change nothing.
pub async fn update_unexpected_state_changes_nothing(f: &dyn Factory) {
    let env = Env::new(f).await;
    let store = env.exec();
    create_all(&*store, "j1", &["e1"]).await;
    let head = store.event_log().head().await.unwrap();
    let err = assert_err!(
        store.update_execution_state(to_state("e1", Running).unexpected_states([Created])).await,
        StoreError::InvalidState { .. }
    );
    assert!(err.to_string().contains("none of [Created]"), "{err}");
    assert_unchanged(&env, "e1", 1, Created, head).await;
}

/// A wrong expected revision gives `InvalidRevision{actual, expected}` and changes nothing.
pub async fn update_wrong_revision_changes_nothing(f: &dyn Factory) {
    let env = Env::new(f).await;
    let store = env.exec();
    create_all(&*store, "j1", &["e1"]).await;
    store.update_execution_state(to_state("e1", BidAccepted).expect_revision(1)).await.unwrap();
    let head = store.event_log().head().await.unwrap();
    let err = assert_err!(
        store.update_execution_state(to_state("e1", Running).expect_revision(1)).await,
        StoreError::InvalidRevision { .. }
    );
    assert!(matches!(err, StoreError::InvalidRevision { actual: 2, expected: 1, .. }), "{err:?}");
    assert_unchanged(&env, "e1", 2, BidAccepted, head).await;
}

/// Any update of a terminal execution is `AlreadyTerminal`, for each terminal state.
pub async fn update_terminal_is_already_terminal(f: &dyn Factory) {
    let env = Env::new(f).await;
    let store = env.exec();
    for (i, terminal) in [Completed, Failed, Cancelled].into_iter().enumerate() {
        let id = format!("e{i}");
        create_all(&*store, "j1", &[&id]).await;
        store.update_execution_state(to_state(&id, terminal)).await.unwrap();
        let head = store.event_log().head().await.unwrap();
        let err =
            assert_err!(store.update_execution_state(to_state(&id, Running)).await, StoreError::AlreadyTerminal { .. });
        assert!(matches!(err, StoreError::AlreadyTerminal { state: AnyState::Execution(s), .. } if s == terminal));
        assert_unchanged(&env, &id, 2, terminal, head).await;
    }
}

/// An update's events are appended to the execution's history in order.
pub async fn update_appends_events(f: &dyn Factory) {
    let env = Env::new(f).await;
    let store = env.exec();
    store.create_execution(execution("e1", "j1"), vec![event("a")]).await.unwrap();
    store.update_execution_state(to_state("e1", Running).with_events([event("b"), event("c")])).await.unwrap();
    let msgs: Vec<String> =
        store.get_execution_events(&eid("e1")).await.unwrap().into_iter().map(|e| e.message).collect();
    assert_eq!(msgs, ["a", "b", "c"]);
}

/// Updating an unknown execution is `NotFound` and logs nothing.
pub async fn update_missing_is_not_found(f: &dyn Factory) {
    let env = Env::new(f).await;
    let store = env.exec();
    assert!(store.update_execution_state(to_state("ghost", Running)).await.unwrap_err().is_not_found());
    assert_eq!(store.event_log().head().await.unwrap(), 0);
}

/// An update changes the fields it names and keeps the rest.
pub async fn update_sets_only_given_fields(f: &dyn Factory) {
    let env = Env::new(f).await;
    let store = env.exec();
    let mut e = execution("e1", "j1");
    e.name = "first".into();
    e.node_id = Some(NodeId::new("n1").unwrap());
    store.create_execution(e, vec![]).await.unwrap();
    let output = RunOutput { stdout: "hi".into(), exit_code: 3, ..RunOutput::default() };
    let req = UpdateExecutionRequest {
        execution_id: eid("e1"),
        new_values: ExecutionUpdate {
            desired_state: Some(DesiredState { state: DesiredStateKind::Stopped, message: "stop".into() }),
            run_output: Some(output.clone()),
            ..ExecutionUpdate::default()
        },
        condition: Default::default(),
        events: vec![],
    };
    let got = store.update_execution_state(req).await.unwrap();
    assert_eq!(got.state(), Created, "compute state untouched");
    assert_eq!(got.desired_state.state, DesiredStateKind::Stopped);
    assert_eq!(got.run_output, Some(output));
    assert_eq!(got.name, "first");
    assert_eq!(got.node_id, Some(NodeId::new("n1").unwrap()));
    let mut cs = ComputeState::new(Failed, "boom");
    cs.details.insert("k".into(), "v".into());
    let req = UpdateExecutionRequest {
        execution_id: eid("e1"),
        new_values: ExecutionUpdate { compute_state: Some(cs.clone()), ..ExecutionUpdate::default() },
        condition: Default::default(),
        events: vec![],
    };
    assert_eq!(store.update_execution_state(req).await.unwrap().compute_state, cs);
    assert_eq!(store.get_execution(&eid("e1")).await.unwrap().compute_state, cs);
}

/// `get_executions(job)` returns exactly that job's executions, newest modify time first.
pub async fn executions_by_job_newest_first(f: &dyn Factory) {
    let env = Env::new(f).await;
    let store = env.exec();
    create_all(&*store, "j1", &["a", "b", "c"]).await;
    create_all(&*store, "j2", &["d"]).await;
    env.advance(Duration::from_secs(1));
    store.update_execution_state(to_state("a", Running)).await.unwrap();
    let got = store.get_executions(&crate::fixtures::jid("j1")).await.unwrap();
    assert_eq!(ids(&got), ["a", "c", "b"]);
    assert_eq!(ids(&store.get_executions(&crate::fixtures::jid("j2")).await.unwrap()), ["d"]);
    store.delete_execution(&eid("d")).await.unwrap();
    assert!(store.get_executions(&crate::fixtures::jid("j2")).await.unwrap().is_empty());
}

/// `get_live_executions` returns the executions in live states only, newest first.
pub async fn live_executions_newest_first(f: &dyn Factory) {
    let env = Env::new(f).await;
    let store = env.exec();
    let all = ["c", "ba", "r", "wv", "ra", "p", "co", "f", "x"];
    create_all(&*store, "j1", &all).await;
    for (id, st) in all.iter().zip(ExecutionState::ALL).skip(1) {
        store.update_execution_state(to_state(id, st)).await.unwrap();
    }
    let live = store.get_live_executions().await.unwrap();
    assert_eq!(ids(&live), ["p", "ra", "wv", "r", "ba"]);
    assert!(live.iter().all(|e| e.state().is_live()));
}

/// `get_executions_in_state` pages through a state in id order with bounded batches.
pub async fn state_streams_in_bounded_batches(f: &dyn Factory) {
    let env = Env::new(f).await;
    let store = env.exec();
    let names: Vec<String> = (0..10).map(|i| format!("e{i:02}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    create_all(&*store, "j1", &refs).await;
    store.update_execution_state(to_state("e05", Running)).await.unwrap();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let batch = store.get_executions_in_state(Created, after.as_ref(), 3).await.unwrap();
        assert!(batch.len() <= 3);
        let Some(last) = batch.last() else { break };
        after = Some(last.id.clone());
        seen.extend(batch.into_iter().map(|e| e.id.to_string()));
    }
    let expected: Vec<String> = names.into_iter().filter(|n| n != "e05").collect();
    assert_eq!(seen, expected);
    assert!(matches!(store.get_executions_in_state(Created, None, 0).await, Err(StoreError::Invalid(_))));
}

/// Per-state counters follow create, update and delete exactly.
pub async fn counters_follow_every_change(f: &dyn Factory) {
    let env = Env::new(f).await;
    let store = env.exec();
    create_all(&*store, "j1", &["a", "b", "c"]).await;
    store.update_execution_state(to_state("a", Running)).await.unwrap();
    store.update_execution_state(to_state("b", Running)).await.unwrap();
    store.update_execution_state(to_state("b", Completed)).await.unwrap();
    assert_eq!(counts(&*store).await, vec![1, 0, 1, 0, 0, 0, 1, 0, 0]);
    store.delete_execution(&eid("a")).await.unwrap();
    assert_eq!(counts(&*store).await, vec![1, 0, 0, 0, 0, 0, 1, 0, 0]);
    let _ = store.update_execution_state(to_state("b", Running)).await.unwrap_err();
    assert_eq!(counts(&*store).await, vec![1, 0, 0, 0, 0, 0, 1, 0, 0], "a failed update moves no counter");
    env.assert_consistent().await;
}

/// History events come back in write order; adding to a missing execution is `NotFound`.
pub async fn events_in_write_order(f: &dyn Factory) {
    let env = Env::new(f).await;
    let store = env.exec();
    create_all(&*store, "j1", &["e1", "e2"]).await;
    for i in 0..12 {
        store.add_execution_event(&eid("e1"), vec![event(&format!("m{i}"))]).await.unwrap();
    }
    store.add_execution_event(&eid("e2"), vec![event("other")]).await.unwrap();
    let msgs: Vec<String> =
        store.get_execution_events(&eid("e1")).await.unwrap().into_iter().map(|e| e.message).collect();
    let expected: Vec<String> = (0..12).map(|i| format!("m{i}")).collect();
    assert_eq!(msgs, expected, "numeric order, not lexical");
    assert!(store.add_execution_event(&eid("ghost"), vec![event("x")]).await.unwrap_err().is_not_found());
    assert_eq!(store.get_execution(&eid("e1")).await.unwrap().revision, 1, "events do not bump the revision");
}

/// Delete removes the record, both index entries, its counter share and its history.
pub async fn delete_removes_everything(f: &dyn Factory) {
    let env = Env::new(f).await;
    let store = env.exec();
    store.create_execution(execution("e1", "j1"), vec![event("a")]).await.unwrap();
    store.update_execution_state(to_state("e1", Running)).await.unwrap();
    create_all(&*store, "j1", &["e2"]).await;
    store.delete_execution(&eid("e1")).await.unwrap();
    assert!(store.get_execution(&eid("e1")).await.unwrap_err().is_not_found());
    assert!(store.get_execution_events(&eid("e1")).await.unwrap_err().is_not_found());
    assert_eq!(ids(&store.get_executions(&crate::fixtures::jid("j1")).await.unwrap()), ["e2"]);
    assert!(store.get_live_executions().await.unwrap().is_empty());
    assert!(store.get_executions_in_state(Running, None, 10).await.unwrap().is_empty());
    assert_eq!(store.get_execution_count(Running).await.unwrap(), 0);
    store.create_execution(execution("e1", "j9"), vec![]).await.unwrap();
    assert!(store.get_execution_events(&eid("e1")).await.unwrap().is_empty(), "old history does not come back");
    env.assert_consistent().await;
}

/// Deleting an unknown execution is `NotFound`.
pub async fn delete_missing_is_not_found(f: &dyn Factory) {
    let env = Env::new(f).await;
    let store = env.exec();
    assert!(store.delete_execution(&eid("ghost")).await.unwrap_err().is_not_found());
    assert_eq!(store.event_log().head().await.unwrap(), 0);
}

/// Each create, update and delete appends exactly one entry with current, previous and
/// events; `add_execution_event` changes no record and appends none.
pub async fn every_change_logs_one_entry(f: &dyn Factory) {
    let env = Env::new(f).await;
    let store = env.exec();
    store.create_execution(execution("e1", "j1"), vec![event("c")]).await.unwrap();
    store.update_execution_state(to_state("e1", Running).with_events([event("u")])).await.unwrap();
    store.add_execution_event(&eid("e1"), vec![event("extra")]).await.unwrap();
    store.delete_execution(&eid("e1")).await.unwrap();
    let log = whole_log(&*store).await;
    let ops: Vec<(u64, Operation, ObjectType)> = log.iter().map(|e| (e.seq, e.operation, e.object_type)).collect();
    assert_eq!(
        ops,
        [
            (1, Operation::Create, ObjectType::Execution),
            (2, Operation::Update, ObjectType::Execution),
            (3, Operation::Delete, ObjectType::Execution)
        ]
    );
    match &log[1].object {
        LogObject::Execution { current: Some(c), previous: Some(p), events } => {
            assert_eq!((p.state(), c.state()), (Created, Running));
            assert_eq!((p.revision, c.revision), (1, 2));
            assert_eq!(events.len(), 1);
            assert_eq!(events[0].message, "u");
        }
        other => panic!("unexpected object {other:?}"),
    }
    match &log[0].object {
        LogObject::Execution { current: Some(c), previous: None, events } => {
            assert_eq!(c.id.as_str(), "e1");
            assert_eq!(events[0].message, "c");
        }
        other => panic!("unexpected object {other:?}"),
    }
    assert!(matches!(&log[2].object, LogObject::Execution { current: None, previous: Some(_), .. }));
    assert!(log.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));
    env.assert_consistent().await;
}

/// On a store whose derived data is consistent (any sequence of ordinary changes),
/// repair finds nothing and changes nothing, dry run or not; compaction keeps every
/// record readable; a fresh store reports no unclean shutdown.
pub async fn repair_finds_nothing_in_a_consistent_store(f: &dyn Factory) {
    let env = Env::new(f).await;
    let store = env.exec();
    assert!(!store.unclean_shutdown());
    for (i, state) in [Running, Completed, BidAccepted, Failed].into_iter().enumerate() {
        let id = format!("x{i}");
        store.create_execution(execution(&id, "j1"), vec![event("created")]).await.unwrap();
        store.update_execution_state(to_state(&id, state)).await.unwrap();
    }
    store.update_execution_state(to_state("x0", Publishing)).await.unwrap();
    store.delete_execution(&eid("x3")).await.unwrap();
    let head = store.event_log().head().await.unwrap();
    for dry_run in [true, false] {
        let report = store.repair(dry_run).await.unwrap();
        assert_eq!(report.repaired(), 0, "dry run {dry_run}: {report}");
        assert_eq!(report.undecodable_records, 0);
        assert!(report.keys_scanned >= 3, "{report}");
    }
    store.compact().await.unwrap();
    assert_eq!(store.event_log().head().await.unwrap(), head, "repair and compaction log nothing");
    assert_eq!(counts(store.as_ref()).await[usize::from(Publishing.code())], 1);
    assert_eq!(store.get_execution(&eid("x1")).await.unwrap().state(), Completed);
    assert_eq!(store.get_execution_events(&eid("x2")).await.unwrap().len(), 1);
    env.assert_consistent().await;
}
