//! Event log and checkpoint checks (CONTRACT §4).

use std::sync::Arc;
use std::time::Duration;

use brine_store::model::{ExecutionState, LogObject, ObjectType, Operation, Timestamp};
use brine_store::{Clock, EventFilter, Position, StoreError};
use tokio::task::JoinSet;

use crate::assert_err;
use crate::fixtures::{create_all, eid, execution, to_state, whole_log, Env};
use crate::Factory;

/// Sequence numbers start at 1 and have no gaps; the head is the last one.
pub async fn sequence_is_gap_free_from_one(f: &dyn Factory) {
    let env = Env::new(f).await;
    let store = env.exec();
    assert_eq!(store.event_log().head().await.unwrap(), 0);
    assert_eq!(store.event_log().oldest().await.unwrap(), 1, "an empty log's oldest is head + 1");
    create_all(&*store, "j1", &["a", "b", "c"]).await;
    let _ = store.update_execution_state(to_state("zzz", ExecutionState::Running)).await;
    store.update_execution_state(to_state("a", ExecutionState::Running)).await.unwrap();
    store.delete_execution(&eid("b")).await.unwrap();
    let seqs: Vec<u64> = whole_log(&*store).await.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(store.event_log().head().await.unwrap(), 5);
    assert_eq!(store.event_log().oldest().await.unwrap(), 1);
}

/// TrimHorizon, Latest, At(n) and After(n) start where they say.
pub async fn positions(f: &dyn Factory) {
    let env = Env::new(f).await;
    let store = env.exec();
    create_all(&*store, "j1", &["a", "b", "c", "d"]).await;
    let log = store.event_log();
    let all = EventFilter::all();
    let first = |p| {
        let log = Arc::clone(&log);
        let all = all.clone();
        async move { log.get_events(p, 10, &all).await.unwrap().entries.iter().map(|e| e.seq).collect::<Vec<_>>() }
    };
    assert_eq!(first(Position::TrimHorizon).await, [1, 2, 3, 4]);
    assert_eq!(first(Position::At(2)).await, [2, 3, 4]);
    assert_eq!(first(Position::After(2)).await, [3, 4]);
    assert_eq!(first(Position::At(0)).await, [1, 2, 3, 4]);
    assert!(first(Position::After(4)).await.is_empty());
    assert!(first(Position::At(99)).await.is_empty());
    let latest = log.get_events(Position::Latest, 10, &all).await.unwrap();
    assert!(latest.entries.is_empty());
    assert_eq!(latest.next, Position::After(4));
    assert_eq!(latest.head, 4);
    create_all(&*store, "j1", &["e"]).await;
    let next = log.get_events(latest.next, 10, &all).await.unwrap();
    assert_eq!(next.entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [5]);
}

/// At most `limit` entries come back; `next` continues exactly where the batch ended.
pub async fn limit_and_next_position(f: &dyn Factory) {
    let env = Env::new(f).await;
    let store = env.exec();
    let names: Vec<String> = (0..10).map(|i| format!("e{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    create_all(&*store, "j1", &refs).await;
    let log = store.event_log();
    let b1 = log.get_events(Position::TrimHorizon, 4, &EventFilter::all()).await.unwrap();
    assert_eq!(b1.entries.len(), 4);
    assert_eq!(b1.next, Position::After(4));
    assert_eq!(b1.next_after(), 4);
    let b2 = log.get_events(b1.next, 4, &EventFilter::all()).await.unwrap();
    assert_eq!(b2.entries.first().map(|e| e.seq), Some(5));
    let b3 = log.get_events(b2.next, 4, &EventFilter::all()).await.unwrap();
    assert_eq!(b3.entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [9, 10]);
    assert_eq!(b3.next, Position::After(10));
    assert_err!(log.get_events(Position::TrimHorizon, 0, &EventFilter::all()).await, StoreError::Invalid(_));
}

/// Filters by object type and operation; `next` still moves past skipped entries.
pub async fn filter_by_type_and_operation(f: &dyn Factory) {
    let env = Env::new(f).await;
    let store = env.exec();
    create_all(&*store, "j1", &["a", "b"]).await;
    store.update_execution_state(to_state("a", ExecutionState::Running)).await.unwrap();
    store.event_log().append("note", "{}").await.unwrap();
    store.delete_execution(&eid("b")).await.unwrap();
    let log = store.event_log();
    let updates = EventFilter { object_types: vec![], operations: vec![Operation::Update, Operation::Delete] };
    let b = log.get_events(Position::TrimHorizon, 10, &updates).await.unwrap();
    assert_eq!(b.entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 5]);
    assert_eq!(b.next, Position::After(5));
    let custom = EventFilter { object_types: vec![ObjectType::Custom], operations: vec![] };
    let b = log.get_events(Position::TrimHorizon, 10, &custom).await.unwrap();
    assert_eq!(b.entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [4]);
    let none = EventFilter { object_types: vec![ObjectType::Job], operations: vec![] };
    let b = log.get_events(Position::TrimHorizon, 10, &none).await.unwrap();
    assert!(b.entries.is_empty());
    assert_eq!(b.next, Position::After(5), "a reader skips past entries that do not match");
}

/// Custom entries get the next sequence number and carry their payload.
pub async fn append_custom_entries(f: &dyn Factory) {
    let env = Env::new(f).await;
    let store = env.exec();
    let log = store.event_log();
    assert_eq!(log.append("marker", "one").await.unwrap(), 1);
    create_all(&*store, "j1", &["a"]).await;
    assert_eq!(log.append("marker", "two").await.unwrap(), 3);
    let entries = whole_log(&*store).await;
    match &entries[2].object {
        LogObject::Custom { kind, data } => assert_eq!((kind.as_str(), data.as_str()), ("marker", "two")),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(entries[2].object_type, ObjectType::Custom);
}

/// `wait_for` resolves at once when a newer entry exists, and as soon as one commits
/// otherwise.
pub async fn wait_for_resolves_on_commit(f: &dyn Factory) {
    let env = Env::new(f).await;
    let store = env.exec();
    create_all(&*store, "j1", &["a"]).await;
    let log = store.event_log();
    assert_eq!(tokio::time::timeout(Duration::from_secs(5), log.wait_for(0)).await.unwrap().unwrap(), 1);
    let waiter = {
        let log = Arc::clone(&log);
        tokio::spawn(async move { log.wait_for(1).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!waiter.is_finished(), "nothing newer yet");
    create_all(&*store, "j1", &["b"]).await;
    let head = tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("woken by the commit").unwrap();
    assert_eq!(head.unwrap(), 2);
    let rolled_back = {
        let log = Arc::clone(&log);
        tokio::spawn(async move { log.wait_for(2).await })
    };
    {
        let mut tx = store.begin_tx().await.unwrap();
        tx.create_execution(execution("c", "j1"), vec![]).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!rolled_back.is_finished(), "a rolled-back transaction wakes nobody with a new entry");
    store.event_log().append("k", "v").await.unwrap();
    assert_eq!(tokio::time::timeout(Duration::from_secs(5), rolled_back).await.unwrap().unwrap().unwrap(), 3);
}

/// 8 writers commit concurrently while a follower uses `wait_for`: it sees every sequence
/// number exactly once, in order, with no gaps.
pub async fn concurrent_writers_follower_sees_every_entry(f: &dyn Factory) {
    const WRITERS: usize = 8;
    const EACH: usize = 40;
    let env = Env::new(f).await;
    let store = env.exec();
    let log = store.event_log();
    let total = (WRITERS * EACH * 2) as u64;
    let follower = tokio::spawn(async move {
        let mut after = 0u64;
        let mut seen = Vec::new();
        while after < total {
            log.wait_for(after).await.unwrap();
            let batch = log.get_events(Position::After(after), 64, &EventFilter::all()).await.unwrap();
            for entry in &batch.entries {
                assert_eq!(entry.seq, after + 1, "no gap and no repeat");
                after = entry.seq;
                seen.push(entry.seq);
            }
        }
        seen
    });
    let mut writers = JoinSet::new();
    for w in 0..WRITERS {
        let store = Arc::clone(&store);
        writers.spawn(async move {
            for i in 0..EACH {
                let id = format!("w{w}-{i}");
                store.create_execution(execution(&id, "j1"), vec![]).await.unwrap();
                store.update_execution_state(to_state(&id, ExecutionState::Running)).await.unwrap();
            }
        });
    }
    while let Some(r) = writers.join_next().await {
        r.unwrap();
    }
    let seen = tokio::time::timeout(Duration::from_secs(30), follower).await.expect("follower done").unwrap();
    assert_eq!(seen, (1..=total).collect::<Vec<_>>());
}

/// After many concurrent writers stop, every waiter reaches the head without a
/// further commit: the commit notification never goes backwards, so nobody waits for
/// an entry that is already there. Many short bursts of concurrent writes, each
/// followed by silence in which a wait for the head's last entry must resolve at once.
pub async fn waiters_reach_the_head_when_writers_stop(f: &dyn Factory) {
    const WRITERS: usize = 8;
    let env = Env::new(f).await;
    let store = env.exec();
    let log = store.event_log();
    for round in 0..300 {
        let mut writers = JoinSet::new();
        for w in 0..WRITERS {
            let store = Arc::clone(&store);
            writers.spawn(async move {
                store.create_execution(execution(&format!("r{round}-w{w}"), "j1"), vec![]).await.unwrap();
            });
        }
        while let Some(r) = writers.join_next().await {
            r.unwrap();
        }
        let head = log.head().await.unwrap();
        assert_eq!(head, ((round + 1) * WRITERS) as u64);
        let waited = tokio::time::timeout(Duration::from_secs(2), log.wait_for(head - 1)).await;
        assert!(
            matches!(waited, Ok(Ok(h)) if h == head),
            "round {round}: a wait for entry {head} stalled with the entry committed and no commit to come"
        );
    }
}

/// Retention racing a reader never yields a silent gap: a read from position `n`
/// returns entries starting at `n`, or `Compacted` when `n` was trimmed meanwhile.
pub async fn trim_racing_reads_is_compacted_never_a_gap(f: &dyn Factory) {
    const ENTRIES: u64 = 3000;
    let env = Env::new(f).await;
    let store = env.exec();
    let log = store.event_log();
    let mut tx = store.begin_tx().await.unwrap();
    for i in 0..ENTRIES {
        tx.create_execution(execution(&format!("e{i}"), "j1"), vec![]).await.unwrap();
    }
    tx.commit().await.unwrap();
    env.advance(Duration::from_secs(60));
    let trimmer = {
        let log = Arc::clone(&log);
        let now = env.clock.now();
        tokio::spawn(async move {
            while log.trim(ENTRIES, now, 1).await.unwrap() == 1 {
                tokio::task::yield_now().await;
            }
        })
    };
    loop {
        let oldest = log.oldest().await.unwrap();
        if oldest > ENTRIES {
            break;
        }
        match log.get_events(Position::At(oldest), 1, &EventFilter::all()).await {
            Ok(batch) => {
                let first = batch.entries.first().map(|e| e.seq);
                assert_eq!(first, Some(oldest), "a read from {oldest} started elsewhere: a silent gap");
            }
            Err(StoreError::Compacted { requested, oldest: now_oldest }) => {
                assert_eq!(requested, oldest);
                assert!(now_oldest > oldest);
            }
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    trimmer.await.unwrap();
}

/// A checkpoint reads back as written; an unknown one is 0; checkpoints are listed and
/// can be moved back and deleted.
pub async fn checkpoint_round_trip_and_missing_is_zero(f: &dyn Factory) {
    let env = Env::new(f).await;
    let store = env.exec();
    create_all(&*store, "j1", &["a", "b", "c"]).await;
    assert_eq!(store.get_checkpoint("w1").await.unwrap(), 0);
    store.checkpoint("w1", 2).await.unwrap();
    store.checkpoint("w2", 3).await.unwrap();
    assert_eq!(store.get_checkpoint("w1").await.unwrap(), 2);
    store.checkpoint("w1", 1).await.unwrap();
    assert_eq!(store.get_checkpoint("w1").await.unwrap(), 1, "a watcher may seek back");
    let log = store.event_log();
    assert_eq!(log.list_checkpoints().await.unwrap(), vec![("w1".to_owned(), 1), ("w2".to_owned(), 3)]);
    log.delete_checkpoint("w1").await.unwrap();
    assert_eq!(log.get_checkpoint("w1").await.unwrap(), 0);
    assert_eq!(log.head().await.unwrap(), 3, "checkpoints are not log entries");
}

/// Blank names are `BlankCheckpointName`; other bad names are `Invalid`.
pub async fn blank_checkpoint_name_is_refused(f: &dyn Factory) {
    let env = Env::new(f).await;
    let store = env.exec();
    assert_err!(store.checkpoint("", 0).await, StoreError::BlankCheckpointName);
    assert_err!(store.checkpoint("   ", 0).await, StoreError::BlankCheckpointName);
    assert_err!(store.get_checkpoint("").await, StoreError::BlankCheckpointName);
    assert_err!(store.checkpoint("a b", 0).await, StoreError::Invalid(_));
    assert!(store.event_log().list_checkpoints().await.unwrap().is_empty());
}

/// A checkpoint cannot point past the head of the log.
pub async fn checkpoint_beyond_head_is_refused(f: &dyn Factory) {
    let env = Env::new(f).await;
    let store = env.exec();
    create_all(&*store, "j1", &["a"]).await;
    let err = assert_err!(store.checkpoint("w", 2).await, StoreError::CheckpointBeyondHead { .. });
    assert!(matches!(err, StoreError::CheckpointBeyondHead { seq: 2, head: 1, .. }));
    store.checkpoint("w", 1).await.unwrap();
    assert_eq!(store.get_checkpoint("w").await.unwrap(), 1);
}

/// `trim` deletes, oldest first and at most `max` per call, the entries at or below
/// `up_to` older than `before`; it stops at the first young entry; reads below the oldest
/// entry are `Compacted`; the head and new sequence numbers are unaffected; it survives a
/// reopen.
pub async fn trim_deletes_an_old_handled_prefix(f: &dyn Factory) {
    let mut env = Env::new(f).await;
    let log = env.exec().event_log();
    for i in 0..6 {
        log.append("k", &i.to_string()).await.unwrap();
    }
    env.advance(Duration::from_secs(60));
    for i in 6..10 {
        log.append("k", &i.to_string()).await.unwrap();
    }
    let entries = whole_log(&*env.exec()).await;
    let before = entries[6].timestamp; // entries 1..=6 are older than this, 7..=10 are not
    assert_eq!(log.trim(0, before, 10).await.unwrap(), 0, "nothing handled, nothing deleted");
    assert_err!(log.trim(10, before, 0).await, StoreError::Invalid(_));
    assert_eq!(log.trim(4, before, 3).await.unwrap(), 3, "at most max per call");
    assert_eq!(log.oldest().await.unwrap(), 4);
    assert_eq!(log.trim(100, before, 10).await.unwrap(), 3, "stops at the first young entry");
    assert_eq!(log.oldest().await.unwrap(), 7);
    let all = EventFilter::all();
    let kept = log.get_events(Position::TrimHorizon, 100, &all).await.unwrap();
    assert_eq!(kept.entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [7, 8, 9, 10]);
    let err = assert_err!(log.get_events(Position::At(6), 10, &all).await, StoreError::Compacted { .. });
    assert!(matches!(err, StoreError::Compacted { requested: 6, oldest: 7 }), "{err}");
    assert_err!(log.get_events(Position::After(4), 10, &all).await, StoreError::Compacted { .. });
    assert_eq!(log.get_events(Position::After(6), 10, &all).await.unwrap().entries.len(), 4);
    assert_eq!(log.head().await.unwrap(), 10);
    assert_eq!(log.append("k", "next").await.unwrap(), 11, "sequence numbers go on");
    let log = if env.backend.reopen().await { env.exec().event_log() } else { log };
    assert_eq!(log.oldest().await.unwrap(), 7, "the trimmed point persists");
    assert_err!(log.get_events(Position::At(1), 10, &all).await, StoreError::Compacted { .. });
    env.advance(Duration::from_secs(60));
    assert_eq!(log.trim(u64::MAX, Timestamp::MAX, 100).await.unwrap(), 5);
    assert_eq!(log.oldest().await.unwrap(), 12, "an emptied log's oldest is head + 1");
    let empty = log.get_events(Position::TrimHorizon, 10, &all).await.unwrap();
    assert!(empty.entries.is_empty());
    assert_eq!(empty.next_after(), 11);
    assert_eq!(log.append("k", "after").await.unwrap(), 12);
}
