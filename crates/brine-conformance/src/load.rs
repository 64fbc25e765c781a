//! Loads: restoring a store's whole content into an empty store (`brine import`, CONTRACT
//! §3), keeping ids, revisions, history numbers, log sequence numbers and checkpoints.

use std::time::Duration;

use brine_store::model::{Evaluation, EvaluationId, Event, Execution, ExecutionState, JobState, LogEntry, NodeId};
use brine_store::{
    EventLog, ExecutionStore, HistoryQuery, JobBundle, JobQuery, JobStore, ObjectKind, StoreError,
    UpdateExecutionRequest, UpdateJobStateRequest,
};

use crate::assert_err;
use crate::fixtures::{counts, create_all, eid, event, execution, jid, job, read_log, to_state, Env};
use crate::Factory;

/// Every execution of a store with its history, in state then id order, read in
/// batches of 3.
async fn all_executions(store: &dyn ExecutionStore) -> Vec<(Execution, Vec<Event>)> {
    let mut out = Vec::new();
    for state in ExecutionState::ALL {
        let mut after = None;
        loop {
            let batch = store.get_executions_in_state(state, after.as_ref(), 3).await.unwrap();
            let Some(last) = batch.last() else { break };
            after = Some(last.id.clone());
            for e in batch {
                let events = store.get_execution_events(&e.id).await.unwrap();
                out.push((e, events));
            }
        }
    }
    out
}

/// Every job of a store with everything of it, in creation order, read in pages of 2.
async fn all_jobs(store: &dyn JobStore) -> Vec<JobBundle> {
    let mut out = Vec::new();
    let mut query = JobQuery { limit: 2, ..JobQuery::default() };
    loop {
        let page = store.list_jobs(&query).await.unwrap();
        for j in &page.jobs {
            out.push(store.job_bundle(&j.id).await.unwrap());
        }
        match page.next_token {
            Some(token) => query.token = Some(token),
            None => return out,
        }
    }
}

/// Every retained purge entry, read in pages of 1.
async fn all_purged(store: &dyn JobStore) -> Vec<(brine_store::model::JobId, String)> {
    let mut out: Vec<(brine_store::model::JobId, String)> = Vec::new();
    loop {
        let page = store.list_purged(out.last().map(|(id, _)| id), 1).await.unwrap();
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

/// Copies a log: its entries in batches of 4, then its checkpoints.
async fn copy_log(from: &dyn EventLog, to: &dyn EventLog) {
    let entries = read_log(from).await;
    let mut after = from.oldest().await.unwrap() - 1;
    if entries.is_empty() {
        after = from.head().await.unwrap();
        to.load(after, Vec::new()).await.unwrap();
    }
    for batch in entries.chunks(4) {
        after = to.load(after, batch.to_vec()).await.unwrap();
    }
    for (name, seq) in from.list_checkpoints().await.unwrap() {
        to.checkpoint(&name, seq).await.unwrap();
    }
}

async fn assert_same_log(a: &dyn EventLog, b: &dyn EventLog) {
    assert_eq!(read_log(a).await, read_log(b).await, "the same entries under the same numbers");
    assert_eq!(a.head().await.unwrap(), b.head().await.unwrap());
    assert_eq!(a.oldest().await.unwrap(), b.oldest().await.unwrap());
    assert_eq!(a.list_checkpoints().await.unwrap(), b.list_checkpoints().await.unwrap());
}

/// A compute store's executions, history, log (trimmed at its start) and checkpoints
/// load into an empty store as they were: the same records and revisions, counters
/// recomputed, the same log numbers, so a watcher resumes where it was; later writes
/// continue after the loaded head.
pub async fn load_restores_executions_log_and_checkpoints(f: &dyn Factory) {
    let source = Env::new(f).await;
    let store = source.exec();
    create_all(&*store, "j1", &["a", "b", "c", "d"]).await;
    create_all(&*store, "j2", &["e", "f"]).await;
    source.advance(Duration::from_secs(5));
    store.update_execution_state(to_state("a", ExecutionState::Running)).await.unwrap();
    store.update_execution_state(to_state("a", ExecutionState::Completed)).await.unwrap();
    store.update_execution_state(to_state("b", ExecutionState::Running)).await.unwrap();
    store.add_execution_event(&eid("b"), vec![event("one"), event("two")]).await.unwrap();
    store.delete_execution(&eid("c")).await.unwrap();
    let log = store.event_log();
    log.append("note", "{}").await.unwrap();
    let trimmed = log.trim(3, source.now().saturating_add(Duration::from_secs(1)), 100).await.unwrap();
    assert_eq!(trimmed, 3, "a dump of a trimmed log starts above 1");
    log.checkpoint("metrics", 7).await.unwrap();
    log.checkpoint("sync", 4).await.unwrap();

    let target = Env::new(f).await;
    let copy = target.exec();
    let records = all_executions(&*store).await;
    assert_eq!(records.len(), 5);
    for batch in records.chunks(2) {
        copy.load_executions(batch.to_vec()).await.unwrap();
    }
    copy_log(&*log, &*copy.event_log()).await;

    assert_eq!(all_executions(&*copy).await, records, "records, revisions, times and history as they were");
    assert_eq!(counts(&*copy).await, counts(&*store).await, "counters follow the records");
    assert_eq!(copy.get_executions(&jid("j1")).await.unwrap(), store.get_executions(&jid("j1")).await.unwrap());
    assert_eq!(copy.get_live_executions().await.unwrap(), store.get_live_executions().await.unwrap());
    assert_same_log(&*log, &*copy.event_log()).await;
    let report = copy.check().await.unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);

    // Life goes on after the load: the next entry follows the loaded head, and a
    // loaded execution updates from its loaded revision.
    let head = copy.event_log().head().await.unwrap();
    let b = copy.get_execution(&eid("b")).await.unwrap();
    let request =
        UpdateExecutionRequest::to_state(eid("b"), ExecutionState::Failed, "lost").expect_revision(b.revision);
    let next = copy.update_execution_state(request).await.unwrap();
    assert_eq!(next.revision, b.revision + 1);
    assert_eq!(copy.event_log().head().await.unwrap(), head + 1);
    let events = copy.get_execution_events(&eid("b")).await.unwrap();
    assert_eq!(events, store.get_execution_events(&eid("b")).await.unwrap(), "the loaded history stays");
    assert!(copy.check().await.unwrap().is_ok());
}

/// A load writes nothing when any part of it is refused: an id already stored, a
/// revision no store gives, a log numbered with a gap or not after the head.
pub async fn load_refuses_taken_ids_bad_records_and_log_gaps(f: &dyn Factory) {
    let env = Env::new(f).await;
    let store = env.exec();
    create_all(&*store, "j1", &["a"]).await;
    let taken = store.get_execution(&eid("a")).await.unwrap();
    let mut fresh = execution("n", "j1");
    fresh.revision = 4;
    let err = assert_err!(
        store.load_executions(vec![(fresh.clone(), vec![]), (taken, vec![])]).await,
        StoreError::AlreadyExists { .. }
    );
    assert!(err.to_string().contains('a'), "{err}");
    assert!(store.get_execution(&eid("n")).await.unwrap_err().is_not_found(), "nothing of the batch is written");
    let mut zero = execution("z", "j1");
    zero.revision = 0;
    let err = assert_err!(store.load_executions(vec![(zero, vec![])]).await, StoreError::Invalid(_));
    assert!(err.to_string().contains("revision"), "{err}");
    assert_eq!(counts(&*store).await.iter().sum::<u64>(), 1);

    let log = store.event_log();
    let first = read_log(&*log).await.remove(0);
    let numbered = |seq: u64| LogEntry { seq, ..first.clone() };
    // The log holds entry 1: a load continues at 2, and only without a gap.
    assert_err!(log.load(5, vec![numbered(6)]).await, StoreError::Invalid(_));
    assert_err!(log.load(1, vec![numbered(2), numbered(4)]).await, StoreError::Invalid(_));
    assert_eq!(log.head().await.unwrap(), 1, "a refused load writes no entry");
    assert_eq!(log.load(1, vec![numbered(2), numbered(3)]).await.unwrap(), 3);
    assert_eq!(read_log(&*log).await.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(store.check().await.unwrap().is_ok());

    // An empty log may start anywhere above its head.
    let other = Env::new(f).await;
    let empty = other.exec().event_log();
    assert_eq!(empty.load(9, Vec::new()).await.unwrap(), 9);
    assert_eq!((empty.head().await.unwrap(), empty.oldest().await.unwrap()), (9, 10));
    assert_eq!(empty.load(20, vec![numbered(21)]).await.unwrap(), 21);
    assert_eq!((empty.head().await.unwrap(), empty.oldest().await.unwrap()), (21, 21));
    assert!(other.exec().check().await.unwrap().is_ok());
}

/// A job store's jobs, with versions, history, evaluations and executions, and its
/// retained purge entries load into an empty store as they were: the same bundles and
/// history numbers, the listings and the queue work on them, a purged id stays taken,
/// and later history entries number after the loaded ones.
pub async fn load_restores_jobs_with_everything_and_purged_ids(f: &dyn Factory) {
    let source = Env::new(f).await;
    let jobs = source.jobs();
    for id in ["j1", "j2", "j3"] {
        let mut j = job(id);
        j.labels.insert("tier".into(), id.into());
        jobs.create_job(j).await.unwrap();
        source.advance(Duration::from_secs(1));
    }
    let j1 = jobs.get_job(&jid("j1")).await.unwrap();
    jobs.update_job(j1).await.unwrap();
    let eval = EvaluationId::new("ev1").unwrap();
    jobs.create_evaluation(Evaluation::new(eval, "default", jid("j1"))).await.unwrap();
    let mut placed = execution("x1", "j1");
    placed.node_id = Some(NodeId::new("node-1").unwrap());
    jobs.create_execution(placed).await.unwrap();
    jobs.create_execution(execution("x2", "j2")).await.unwrap();
    jobs.add_job_event(&jid("j2"), vec![event("hello")]).await.unwrap();
    jobs.enqueue("q", job("q1")).await.unwrap();
    jobs.enqueue("q", job("q2")).await.unwrap();
    jobs.update_job_state(UpdateJobStateRequest::new(jid("j3"), JobState::Completed, "done")).await.unwrap();
    let j3 = jobs.job_bundle(&jid("j3")).await.unwrap();
    assert_eq!(jobs.purge_jobs(&[(jid("j3"), j3.stamp())], "job_archive_7.jsonl").await.unwrap(), 1);
    jobs.event_log().checkpoint("requester-sync", 5).await.unwrap();

    let target = Env::new(f).await;
    let copy = target.jobs();
    let bundles = all_jobs(&*jobs).await;
    assert_eq!(bundles.iter().map(|b| b.job.id.as_str()).collect::<Vec<_>>(), ["j1", "j2", "q1", "q2"]);
    for batch in bundles.chunks(3) {
        copy.load_jobs(batch.to_vec()).await.unwrap();
    }
    let purged = all_purged(&*jobs).await;
    assert_eq!(purged, [(jid("j3"), "job_archive_7.jsonl".to_owned())]);
    copy.load_purged(purged.clone()).await.unwrap();
    copy_log(&*jobs.event_log(), &*copy.event_log()).await;

    assert_eq!(all_jobs(&*copy).await, bundles, "every job with everything of it, history numbers included");
    assert_eq!(all_purged(&*copy).await, purged);
    assert_same_log(&*jobs.event_log(), &*copy.event_log()).await;
    let archived = copy.get_job(&jid("j3")).await.unwrap_err();
    assert!(matches!(archived, StoreError::Archived { .. }), "{archived:?}");
    assert_err!(copy.create_job(job("j3")).await, StoreError::AlreadyPurged { .. });
    assert_eq!(copy.get_job_by_name("default", "name-j2").await.unwrap().id, jid("j2"));
    assert_eq!(copy.get_executions_for_node(&NodeId::new("node-1").unwrap()).await.unwrap().len(), 1);
    assert_eq!(copy.get_in_progress_jobs(None).await.unwrap(), jobs.get_in_progress_jobs(None).await.unwrap());
    let query = JobQuery { selector: "tier=j2".parse().unwrap(), ..JobQuery::default() };
    assert_eq!(copy.list_jobs(&query).await.unwrap().jobs.len(), 1, "the label index follows the loaded jobs");
    let report = copy.check().await.unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);

    // The queue and the history go on from the loaded state.
    assert_eq!(copy.grab_next("q").await.unwrap().map(|j| j.id), Some(jid("q1")));
    let top = bundles.iter().flat_map(|b| b.history.iter().map(|h| h.seq)).max().unwrap();
    copy.add_job_event(&jid("j2"), vec![event("later")]).await.unwrap();
    let history = copy.get_job_history(&jid("j2"), &HistoryQuery::default()).await.unwrap().entries;
    assert!(history.last().unwrap().seq > top, "a new entry numbers after every loaded one");
    assert!(copy.check().await.unwrap().is_ok());
}

/// A job load writes nothing when any job of it is refused: an id, name, evaluation or
/// execution already stored, a purged id, or a bundle whose parts do not agree.
pub async fn load_jobs_refuses_taken_ids_names_and_inconsistent_bundles(f: &dyn Factory) {
    let env = Env::new(f).await;
    let jobs = env.jobs();
    jobs.create_job(job("j1")).await.unwrap();
    jobs.create_execution(execution("x1", "j1")).await.unwrap();
    let bundle = jobs.job_bundle(&jid("j1")).await.unwrap();
    // Each copy's history takes numbers of its own: a store numbers every history
    // entry from one sequence.
    let shift = std::sync::atomic::AtomicU64::new(0);
    let renamed = |id: &str, name: &str| {
        let mut b = bundle.clone();
        let by = 100 * (shift.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1);
        b.job.id = jid(id);
        b.job.name = name.to_owned();
        for v in &mut b.versions {
            v.id = jid(id);
        }
        for h in &mut b.history {
            h.job_id = jid(id);
            h.seq += by;
        }
        b.executions.clear();
        b
    };
    let fresh = renamed("n1", "fresh");
    let head = jobs.event_log().head().await.unwrap();

    assert_err!(jobs.load_jobs(vec![fresh.clone(), bundle.clone()]).await, StoreError::AlreadyExists { .. });
    let err = jobs.load_jobs(vec![fresh.clone(), renamed("n2", "name-j1")]).await.unwrap_err();
    assert!(matches!(&err, StoreError::AlreadyExists { kind: ObjectKind::JobName, .. }), "{err:?}");
    let mut stolen = renamed("n3", "other");
    stolen.executions = bundle.executions.clone();
    for x in &mut stolen.executions {
        x.job_id = jid("n3");
        x.job.id = jid("n3");
    }
    let err = jobs.load_jobs(vec![fresh.clone(), stolen]).await.unwrap_err();
    assert!(matches!(&err, StoreError::AlreadyExists { kind: ObjectKind::Execution, .. }), "{err:?}");
    let mut skewed = renamed("n4", "skewed");
    skewed.versions.clear();
    let err = assert_err!(jobs.load_jobs(vec![fresh.clone(), skewed]).await, StoreError::Invalid(_));
    assert!(err.to_string().contains("versions"), "{err}");
    let mut foreign = renamed("n5", "foreign");
    foreign.history[0].job_id = jid("j1");
    assert_err!(jobs.load_jobs(vec![foreign]).await, StoreError::Invalid(_));
    assert!(jobs.get_job(&jid("n1")).await.unwrap_err().is_not_found(), "nothing of a refused batch is written");

    assert_err!(
        jobs.load_purged(vec![(jid("j1"), "job_archive_1.jsonl".into())]).await,
        StoreError::AlreadyExists { .. }
    );
    assert_err!(jobs.load_purged(vec![(jid("p1"), String::new())]).await, StoreError::Invalid(_));
    let twice = vec![(jid("p7"), "a.jsonl".into()), (jid("p8"), "b.jsonl".into()), (jid("p8"), "c.jsonl".into())];
    let err = assert_err!(jobs.load_purged(twice).await, StoreError::AlreadyPurged { .. });
    assert!(err.to_string().contains("p8"), "the repeated id is named: {err}");
    assert!(jobs.list_purged(None, 10).await.unwrap().is_empty(), "nothing of a refused batch is written");
    jobs.load_purged(vec![(jid("p1"), "job_archive_1.jsonl".into())]).await.unwrap();
    assert_err!(
        jobs.load_purged(vec![(jid("p1"), "job_archive_2.jsonl".into())]).await,
        StoreError::AlreadyPurged { .. }
    );
    assert_err!(jobs.load_jobs(vec![renamed("p1", "back")]).await, StoreError::AlreadyPurged { .. });
    assert_eq!(jobs.event_log().head().await.unwrap(), head, "a load logs nothing");
    jobs.load_jobs(vec![fresh]).await.unwrap();
    assert!(jobs.check().await.unwrap().is_ok());
}
