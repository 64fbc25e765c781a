//! The demo: a requester and a compute node on the in-memory backend under a small
//! workload, with a watcher following the compute node's event log.
//!
//! Run it with `cargo xtask demo` (or `cargo run -p brine-memory --example demo -- [JOBS] [SEED]`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use brine_memory::{MemExecutionStore, MemJobStore};
use brine_store::model::{
    Event, Execution, ExecutionId, ExecutionState, Job, JobId, NodeId, ObjectType, Operation, Timestamp,
};
use brine_store::{
    EventFilter, EventLog, ExecutionStore, HistoryQuery, JobOutcome, JobQuery, JobStore, Position, Result,
    UpdateExecutionRequest,
};

/// A small deterministic generator (xorshift), so a seed replays the same run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Follows the event log from the start, checkpointing after each batch, until `stop`.
async fn watcher(log: Arc<dyn EventLog>, name: &'static str, stop: u64) -> Result<BTreeMap<String, u64>> {
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    let mut after = log.get_checkpoint(name).await?;
    while after < stop {
        log.wait_for(after).await?;
        let batch = log.get_events(Position::After(after), 100, &EventFilter::all()).await?;
        for entry in &batch.entries {
            *seen.entry(format!("{} {}", entry.object_type, entry.operation)).or_default() += 1;
        }
        after = batch.next_after();
        log.checkpoint(name, after).await?;
    }
    Ok(seen)
}

fn step(id: &ExecutionId, from: ExecutionState, to: ExecutionState, msg: &str) -> UpdateExecutionRequest {
    UpdateExecutionRequest::to_state(id.clone(), to, msg).expect_states([from]).with_events([Event::new(
        "Exec",
        msg,
        Timestamp::now(),
    )])
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let jobs_n = args.first().copied().unwrap_or(200);
    let mut rng = Rng(args.get(1).copied().unwrap_or(42).max(1));
    let requester: Arc<dyn JobStore> = Arc::new(MemJobStore::new());
    let compute: Arc<dyn ExecutionStore> = Arc::new(MemExecutionStore::new());
    let node = NodeId::new("node-1").expect("valid id");
    println!("brine demo: {jobs_n} jobs on the in-memory backend (requester + compute node)");

    // Every job produces on the compute node: one create and four or five updates.
    let started = Instant::now();
    let mut plans = Vec::new();
    for i in 0..jobs_n {
        let mut job = Job::new(JobId::new(format!("j-{i:05}")).expect("valid id"), format!("job-{i}"));
        job.labels.insert("team".into(), if i % 3 == 0 { "ml".into() } else { "etl".into() });
        job.input_files = vec![format!("input-{i}.csv")];
        requester.enqueue("default", job).await?;
        plans.push((rng.chance(15), rng.chance(5)));
    }
    let expected: u64 = plans
        .iter()
        .map(|(fail, cancel)| {
            if *cancel {
                3
            } else if *fail {
                4
            } else {
                7
            }
        })
        .sum();
    let follower = tokio::spawn(watcher(compute.event_log(), "reporter", expected));

    let mut counts = BTreeMap::new();
    while let Some(job) = requester.grab_next("default").await? {
        let (fail, cancel) = plans[counts.values().sum::<usize>()];
        let id = ExecutionId::new(format!("e-{}", job.id)).expect("valid id");
        let mut exec = Execution::new(id.clone(), &job);
        exec.node_id = Some(node.clone());
        compute.create_execution(exec, vec![Event::new("Bid", "execution received", Timestamp::now())]).await?;
        use ExecutionState::*;
        compute.update_execution_state(step(&id, Created, BidAccepted, "bid accepted")).await?;
        let outcome = if cancel {
            compute.update_execution_state(step(&id, BidAccepted, Cancelled, "cancelled by user")).await?;
            JobOutcome::Failed { message: "cancelled".into() }
        } else {
            compute.update_execution_state(step(&id, BidAccepted, Running, "started")).await?;
            if fail {
                compute.update_execution_state(step(&id, Running, Failed, "exit code 1")).await?;
                JobOutcome::Failed { message: "exit code 1".into() }
            } else {
                compute.update_execution_state(step(&id, Running, WaitingVerification, "finished")).await?;
                compute.update_execution_state(step(&id, WaitingVerification, ResultAccepted, "verified")).await?;
                compute.update_execution_state(step(&id, ResultAccepted, Publishing, "publishing")).await?;
                compute.update_execution_state(step(&id, Publishing, Completed, "published")).await?;
                JobOutcome::Completed
            }
        };
        let ok = matches!(outcome, JobOutcome::Completed);
        let files = if ok { vec![format!("{}.out", job.id)] } else { vec![] };
        requester.finish(&job.id, outcome, files).await?;
        *counts.entry(if ok { "completed" } else { "failed" }).or_insert(0usize) += 1;
    }
    let elapsed = started.elapsed();
    let seen = follower.await.expect("watcher task")?;

    println!("\nexecutions per state (O(1) counters):");
    for st in ExecutionState::ALL {
        println!("  {:<20} {}", st.as_str(), compute.get_execution_count(st).await?);
    }
    println!("\njobs: {counts:?}");
    let head = compute.event_log().head().await?;
    println!(
        "compute event log: head {head}, watcher 'reporter' checkpoint {}",
        compute.get_checkpoint("reporter").await?
    );
    for (kind, n) in &seen {
        println!("  {kind:<22} {n}");
    }
    let updates = EventFilter { object_types: vec![ObjectType::Execution], operations: vec![Operation::Update] };
    let first = compute.event_log().get_events(Position::TrimHorizon, 3, &updates).await?;
    println!("first execution updates:");
    for e in first.entries {
        println!("  #{:<4} {} {:?}", e.seq, e.operation, e.object_type);
    }
    let ml = requester
        .list_jobs(&JobQuery { selector: "team=ml".parse().expect("selector"), limit: 5, ..JobQuery::default() })
        .await?;
    println!("\nfirst jobs with label team=ml: {:?}", ml.jobs.iter().map(|j| j.id.as_str()).collect::<Vec<_>>());
    if let Some(job) = ml.jobs.first() {
        let history =
            requester.get_job_history(&job.id, &HistoryQuery { limit: 10, ..HistoryQuery::default() }).await?;
        println!("history of {}:", job.id);
        for h in &history.entries {
            println!("  #{:<5} {:?} {}", h.seq, h.level, h.event.message);
        }
    }
    // Compute writes are the log entries; each job also had enqueue, grab and finish.
    let writes = head + 3 * jobs_n;
    println!(
        "\n{writes} writes in {:.1} ms ({:.0} writes/s, debug build)",
        elapsed.as_secs_f64() * 1e3,
        writes as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    Ok(())
}
