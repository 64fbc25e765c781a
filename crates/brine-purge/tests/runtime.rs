//! Long work stays off the async runtime and out from under the commit lock: on a
//! current-thread runtime (one thread for every task), a writer beside expire, trim,
//! a selective log read, a filtered job listing and a purge keeps its latency bounded,
//! because each of them works in bounded batches that release the lock and yield, and
//! the purge's file work runs on blocking threads.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use brine_purge::{purge, PurgeOptions, Source};
use brine_rocksdb::Durability;
use brine_store::model::{Job, JobState, ObjectType};
use brine_store::{Clock, EventFilter, JobQuery, JobStore, ManualClock, Position, UpdateJobStateRequest};
use support::jid;

/// The writer's worst latency must stay under this while the long work runs (the
/// long work itself takes seconds in a debug build).
const BOUND: Duration = Duration::from_millis(300);

#[test]
fn a_writer_beside_long_work_on_one_thread_keeps_its_latency() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::default());
        let store: Arc<dyn JobStore> =
            Arc::new(support::rocks_jobs(&dir.path().join("node-requester.db"), clock.clone(), Durability::Buffered));
        // 4 000 queued jobs (idle, to expire), 2 000 finished ones (to purge), and a log
        // of some 14 000 entries, nearly all of jobs.
        for i in 0..4000 {
            store.enqueue("q", Job::new(jid(&format!("q-{i:05}")), format!("q-{i:05}"))).await.unwrap();
        }
        for i in 0..2000 {
            let id = jid(&format!("f-{i:05}"));
            store.create_job(Job::new(id.clone(), format!("f-{i:05}"))).await.unwrap();
            store.update_job_state(UpdateJobStateRequest::new(id, JobState::Completed, "done")).await.unwrap();
        }
        let log = store.event_log();
        let head = log.head().await.unwrap();
        store.event_log().append("marker", "the one custom entry").await.unwrap();
        log.checkpoint("w", head).await.unwrap();
        clock.advance(Duration::from_secs(30 * 86_400));

        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
            tokio::spawn(async move {
                let pause = Duration::from_millis(2);
                let (mut worst, mut n) = (Duration::ZERO, 0);
                while !stop.load(Ordering::Relaxed) {
                    // From when the writer wants to write (its pause over) to its write
                    // done: time spent waiting for the thread counts, not only in the call.
                    let due = Instant::now() + pause;
                    tokio::time::sleep(pause).await;
                    store.create_job(Job::new(jid(&format!("w-{n:06}")), format!("w-{n:06}"))).await.unwrap();
                    worst = worst.max(Instant::now().saturating_duration_since(due));
                    n += 1;
                }
                (worst, n)
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;

        let mut steps = Vec::new();
        let t = Instant::now();
        let expired = store.expire(Duration::from_secs(86_400)).await.unwrap();
        assert_eq!(expired.len(), 4000);
        steps.push(("expire", t.elapsed()));

        let t = Instant::now();
        let only_custom = EventFilter { object_types: vec![ObjectType::Custom], operations: vec![] };
        let mut after = 0;
        let mut found = 0;
        let end = log.head().await.unwrap();
        while after < end {
            let batch = log.get_events(Position::After(after), 10, &only_custom).await.unwrap();
            found += batch.entries.len();
            after = batch.next_after();
            tokio::task::yield_now().await;
        }
        assert_eq!(found, 1);
        steps.push(("selective log read", t.elapsed()));

        let t = Instant::now();
        let trimmed = log.trim(head, clock.now(), 100_000).await.unwrap();
        assert_eq!(trimmed, head);
        steps.push(("trim", t.elapsed()));

        let t = Instant::now();
        let mut query = JobQuery { states: vec![JobState::Completed], limit: 500, ..JobQuery::default() };
        let mut listed = 0;
        loop {
            let page = store.list_jobs(&query).await.unwrap();
            listed += page.jobs.len();
            match page.next_token {
                Some(token) => query.token = Some(token),
                None => break,
            }
        }
        assert_eq!(listed, 2000);
        steps.push(("filtered listing", t.elapsed()));

        let t = Instant::now();
        let options = PurgeOptions {
            clock: clock.clone(),
            max_per_file: 500,
            delete_batch: 100,
            ..PurgeOptions::new(dir.path().join("archive"))
        };
        let report = purge(&Source::Jobs(Arc::clone(&store)), &options).await.unwrap();
        assert_eq!(report.jobs, 2000, "{report}");
        steps.push(("purge", t.elapsed()));

        stop.store(true, Ordering::Relaxed);
        let (worst, writes) = writer.await.unwrap();
        assert!(writes > 10, "the writer ran beside the work ({writes} writes)");
        assert!(worst < BOUND, "a writer waited {worst:?} beside {steps:?}");
        store.close().await.unwrap();
    });
}
