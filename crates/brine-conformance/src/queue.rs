//! The queue operations of the `compute.jobs` schema: enqueue, grab, finish, expire.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use brine_store::model::{JobState, LogObject, Operation};
use brine_store::{EventFilter, JobOutcome, Position, StoreError, UpdateJobStateRequest};
use tokio::task::JoinSet;

use crate::assert_err;
use crate::fixtures::{jid, job, Env};
use crate::Factory;

/// Enqueue makes a queued job; grab moves it in progress with a grabbed time; finish
/// records the outcome, output files and finished time.
pub async fn enqueue_grab_finish(f: &dyn Factory) {
    let env = Env::new(f).await;
    let jobs = env.jobs();
    let mut j = job("q1");
    j.input_files = vec!["in.csv".into()];
    j.config = "{\"cmd\":\"wc\"}".into();
    let queued = jobs.enqueue("default", j).await.unwrap();
    assert_eq!(queued.state(), JobState::Queued);
    assert_eq!(queued.state().queue_status().map(|s| s.as_str()), Some("queued"));
    assert_eq!(queued.queue.as_deref(), Some("default"));
    assert_eq!(queued.grabbed_time, None);
    assert!(jobs.grab_next("other").await.unwrap().is_none(), "queues are separate");
    env.advance(Duration::from_secs(3));
    let grabbed = jobs.grab_next("default").await.unwrap().expect("a job");
    assert_eq!(grabbed.id.as_str(), "q1");
    assert_eq!(grabbed.state().queue_status().map(|s| s.as_str()), Some("in-progress"));
    assert_eq!(grabbed.grabbed_time, Some(grabbed.modify_time));
    assert_eq!(grabbed.last_accessed_time, grabbed.modify_time);
    assert!(jobs.grab_next("default").await.unwrap().is_none(), "grabbed once");
    let done = jobs.finish(&jid("q1"), JobOutcome::Completed, vec!["out.txt".into()]).await.unwrap();
    assert_eq!(done.state().queue_status().map(|s| s.as_str()), Some("complete"));
    assert_eq!(done.output_files, ["out.txt"]);
    assert_eq!(done.input_files, ["in.csv"]);
    assert_eq!(done.finished_time, Some(done.modify_time));
    jobs.enqueue("default", job("q2")).await.unwrap();
    jobs.grab_next("default").await.unwrap().unwrap();
    let failed = jobs.finish(&jid("q2"), JobOutcome::Failed { message: "exit 1".into() }, vec![]).await.unwrap();
    assert_eq!((failed.state(), failed.state.message.as_str()), (JobState::Failed, "exit 1"));
    assert_eq!(jobs.get_job(&jid("q2")).await.unwrap(), failed);
    env.assert_consistent().await;
}

/// A job grabbed again after a requeue gets the new grab time, whether `grab_next` or a
/// state change moves it into `Running` (one rule for both ways in).
pub async fn a_regrab_records_the_new_grab_time(f: &dyn Factory) {
    let env = Env::new(f).await;
    let jobs = env.jobs();
    jobs.enqueue("default", job("q1")).await.unwrap();
    env.advance(Duration::from_secs(1));
    let first = jobs.grab_next("default").await.unwrap().expect("a job");
    let requeue = || UpdateJobStateRequest::new(jid("q1"), JobState::Queued, "node lost");
    env.advance(Duration::from_secs(1));
    jobs.update_job_state(requeue()).await.unwrap();
    env.advance(Duration::from_secs(1));
    let second = jobs.grab_next("default").await.unwrap().expect("requeued");
    assert_ne!(second.grabbed_time, first.grabbed_time);
    assert_eq!(second.grabbed_time, Some(second.modify_time));
    jobs.update_job_state(requeue()).await.unwrap();
    env.advance(Duration::from_secs(1));
    let by_hand =
        jobs.update_job_state(UpdateJobStateRequest::new(jid("q1"), JobState::Running, "by hand")).await.unwrap();
    assert_eq!(by_hand.grabbed_time, Some(by_hand.modify_time));
    env.assert_consistent().await;
}

/// Each queue hands out its oldest queued job first.
pub async fn grab_is_fifo_per_queue(f: &dyn Factory) {
    let env = Env::new(f).await;
    let jobs = env.jobs();
    for (id, q) in [("a1", "alpha"), ("b1", "beta"), ("a2", "alpha"), ("a3", "alpha"), ("b2", "beta")] {
        jobs.enqueue(q, job(id)).await.unwrap();
        env.advance(Duration::from_millis(10));
    }
    let mut alpha = Vec::new();
    while let Some(j) = jobs.grab_next("alpha").await.unwrap() {
        alpha.push(j.id.to_string());
    }
    assert_eq!(alpha, ["a1", "a2", "a3"]);
    assert_eq!(jobs.grab_next("beta").await.unwrap().unwrap().id.as_str(), "b1");
    assert_err!(jobs.grab_next("").await, StoreError::Invalid(_));
}

/// 8 concurrent grabbers over 100 queued jobs: each job is grabbed exactly once.
pub async fn concurrent_grabbers_never_share_a_job(f: &dyn Factory) {
    let env = Env::new(f).await;
    let jobs = env.jobs();
    for i in 0..100 {
        jobs.enqueue("work", job(&format!("job{i:03}"))).await.unwrap();
    }
    let mut grabbers = JoinSet::new();
    for _ in 0..8 {
        let jobs = Arc::clone(&jobs);
        grabbers.spawn(async move {
            let mut mine = Vec::new();
            while let Some(j) = jobs.grab_next("work").await.unwrap() {
                assert_eq!(j.state(), JobState::Running);
                mine.push(j.id.to_string());
            }
            mine
        });
    }
    let mut all = Vec::new();
    while let Some(r) = grabbers.join_next().await {
        all.extend(r.unwrap());
    }
    let unique: BTreeSet<&String> = all.iter().collect();
    assert_eq!(all.len(), 100, "every job grabbed");
    assert_eq!(unique.len(), 100, "no job grabbed twice");
}

/// Queued and in-progress jobs not accessed for `idle_for` expire; touching resets the
/// idle time; finished jobs never expire.
pub async fn expire_idle_jobs(f: &dyn Factory) {
    let env = Env::new(f).await;
    let jobs = env.jobs();
    for id in ["idle-running", "touched", "finished", "idle-queued"] {
        jobs.enqueue("q", job(id)).await.unwrap();
    }
    jobs.create_job(job("not-queue")).await.unwrap();
    for _ in 0..3 {
        jobs.grab_next("q").await.unwrap();
    }
    jobs.finish(&jid("finished"), JobOutcome::Completed, vec![]).await.unwrap();
    env.advance(Duration::from_secs(50));
    let touched = jobs.touch_job(&jid("touched")).await.unwrap();
    assert_eq!(touched.last_accessed_time.as_nanos() + 1, env.clock.peek().as_nanos());
    env.advance(Duration::from_secs(50));
    let expired = jobs.expire(Duration::from_secs(60)).await.unwrap();
    let mut names: Vec<String> = expired.iter().map(|i| i.to_string()).collect();
    names.sort();
    assert_eq!(names, ["idle-queued", "idle-running"]);
    for id in ["idle-queued", "idle-running"] {
        let j = jobs.get_job(&jid(id)).await.unwrap();
        assert_eq!(j.state().queue_status().map(|s| s.as_str()), Some("expired"));
        assert!(j.finished_time.is_some());
    }
    assert_eq!(jobs.get_job(&jid("touched")).await.unwrap().state(), JobState::Running);
    assert_eq!(jobs.get_job(&jid("not-queue")).await.unwrap().state(), JobState::Pending);
    assert!(jobs.expire(Duration::from_secs(60)).await.unwrap().is_empty(), "expire is idempotent");
    assert!(jobs.grab_next("q").await.unwrap().is_none(), "an expired job is not grabbed");
    env.assert_consistent().await;
}

/// A touch records the access time on the job and logs it like any change (one
/// `Update` entry with the previous and current job), and leaves the stored versions as
/// they were written.
pub async fn touch_is_logged_and_keeps_versions(f: &dyn Factory) {
    let env = Env::new(f).await;
    let jobs = env.jobs();
    let created = jobs.enqueue("q", job("j1")).await.unwrap();
    let log = jobs.event_log();
    let head = log.head().await.unwrap();
    env.advance(Duration::from_secs(5));
    let touched = jobs.touch_job(&jid("j1")).await.unwrap();
    assert!(touched.last_accessed_time > created.last_accessed_time);
    assert_eq!(jobs.get_job(&jid("j1")).await.unwrap().last_accessed_time, touched.last_accessed_time);
    assert_eq!(log.head().await.unwrap(), head + 1, "a touch appends one log entry");
    let batch = log.get_events(Position::After(head), 10, &EventFilter::all()).await.unwrap();
    let entry = &batch.entries[0];
    assert_eq!(entry.operation, Operation::Update);
    match &entry.object {
        LogObject::Job { current: Some(current), previous: Some(previous), .. } => {
            assert_eq!(current.last_accessed_time, touched.last_accessed_time);
            assert_eq!(previous.last_accessed_time, created.last_accessed_time);
        }
        other => panic!("expected a job update, got {other:?}"),
    }
    let v1 = jobs.get_job_version(&jid("j1"), 1).await.unwrap();
    assert_eq!(v1, created, "version 1 is kept as it was written");
    env.assert_consistent().await;
}

/// Finishing a job that is not in progress is `InvalidState`; an unknown job `NotFound`.
pub async fn finish_requires_in_progress(f: &dyn Factory) {
    let env = Env::new(f).await;
    let jobs = env.jobs();
    jobs.enqueue("q", job("j1")).await.unwrap();
    assert_err!(jobs.finish(&jid("j1"), JobOutcome::Completed, vec![]).await, StoreError::InvalidState { .. });
    assert_eq!(jobs.get_job(&jid("j1")).await.unwrap().revision, 1);
    assert!(jobs.finish(&jid("ghost"), JobOutcome::Completed, vec![]).await.unwrap_err().is_not_found());
    jobs.grab_next("q").await.unwrap();
    jobs.finish(&jid("j1"), JobOutcome::Completed, vec![]).await.unwrap();
    assert_err!(jobs.finish(&jid("j1"), JobOutcome::Completed, vec![]).await, StoreError::InvalidState { .. });
}
