//! `brine simulate`: the demo. A requester node and a compute node (on the embedded
//! RocksDB default, or in memory with `--backend memory`) run a workload; two watchers
//! follow the compute node's event log with durable checkpoints; halfway the stores are
//! dropped without a clean shutdown and reopened (in memory, where a restart would keep
//! nothing, they stay open), recovery runs with the chosen policy, the workload
//! finishes, and both stores are checked.
//!
//! The workload, driven by a seeded ChaCha RNG so `--seed` makes it repeatable: jobs of
//! every type are enqueued on three queues and grabbed by the compute node, which
//! creates an execution per job (with a bid event) and advances executions picked at
//! random through `BidAccepted`, `Running`, `Publishing` to `Completed`, or to `Failed`
//! or `Cancelled`; service and daemon executions keep running (with heartbeat events)
//! until cancelled. Every transition is a conditional update (expected state and
//! revision). The `requester-sync` watcher carries terminal execution states to the
//! requester's jobs (`finish`, or `Stopped` for cancellations), idempotently, as a
//! requester following a compute node would; the `metrics` watcher counts operations.
//! At the end every finished job is purged to a zstd archive (and one is read back),
//! then both stores are checked.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use brine::{Durability, StoreConfig, StoreType};
use brine_recovery::{Cleanup, Report};
use brine_store::model::{
    ComputeState, Event, Execution, ExecutionId, ExecutionState, Job, JobId, JobState, JobType, LogEntry, LogObject,
    NodeId, ObjectType, Operation, PublishedResult, Resources, RunOutput, Timestamp,
};
use brine_store::{
    async_trait, Condition, EventFilter, ExecutionStore, ExecutionUpdate, JobOutcome, JobQuery, JobStore,
    UpdateExecutionRequest, UpdateJobStateRequest,
};
use brine_watch::{Handler, HandlerError, Watcher, WatcherOptions};
use clap::{Args, ValueEnum};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::ui::{self, outln};
use crate::Outcome;

const QUEUES: [&str; 3] = ["default", "gpu", "low-priority"];
/// Executions in flight at once, at most (before the restart adds requeued ones).
const WINDOW: usize = 64;

#[derive(Debug, Args)]
pub(crate) struct SimulateArgs {
    /// Directory for the two stores (default: a new directory under the system temp dir,
    /// kept afterwards for `brine db`); one an earlier run used is refused.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Jobs (one execution each, more when requeued) to run.
    #[arg(long, default_value_t = 2000)]
    executions: u64,
    /// Seed of the workload's random choices.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Recovery preset after the restart: seed or fail-live.
    #[arg(long, default_value = "fail-live", value_name = "NAME")]
    preset: String,
    /// Recovery policy file (instead of a preset).
    #[arg(long, value_name = "FILE", conflicts_with = "preset")]
    policy: Option<PathBuf>,
    /// Commit durability of both stores.
    #[arg(long, value_enum, default_value_t = DurabilityArg::Sync)]
    durability: DurabilityArg,
    /// The backend of both stores.
    #[arg(long, value_enum, default_value_t = crate::backend::BackendArg::Rocksdb)]
    backend: crate::backend::BackendArg,
    /// The PostgreSQL database of `--backend postgres` (default: BRINE_DATABASE_URL).
    /// It must hold no jobs yet: the workload's ids start from 0.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DurabilityArg {
    /// Each commit is fsynced (concurrent commits share fsyncs).
    Sync,
    /// Each commit is in the WAL, not fsynced.
    Buffered,
}

/// One execution the compute node is working on.
#[derive(Debug, Clone)]
struct InFlight {
    id: ExecutionId,
    job_type: JobType,
    state: ExecutionState,
    revision: u64,
}

/// Counts what the `metrics` watcher sees.
#[derive(Default)]
struct Tally {
    creates: AtomicU64,
    updates: AtomicU64,
    deletes: AtomicU64,
}

#[async_trait]
impl Handler for Tally {
    async fn handle(&self, entries: &[LogEntry]) -> Result<(), HandlerError> {
        for e in entries {
            let counter = match e.operation {
                Operation::Create => &self.creates,
                Operation::Update => &self.updates,
                Operation::Delete => &self.deletes,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Carries terminal execution states to the requester's jobs.
struct RequesterSync {
    requester: Arc<dyn JobStore>,
    applied: Arc<AtomicU64>,
}

#[async_trait]
impl Handler for RequesterSync {
    async fn handle(&self, entries: &[LogEntry]) -> Result<(), HandlerError> {
        for entry in entries {
            let LogObject::Execution { current: Some(e), .. } = &entry.object else { continue };
            let job = &e.job_id;
            let result = match e.state() {
                ExecutionState::Completed => {
                    let outputs = vec![format!("s3://results/{}/output.tar.gz", e.id)];
                    self.requester.finish(job, JobOutcome::Completed, outputs).await.map(|_| ())
                }
                ExecutionState::Failed => {
                    let message = e.compute_state.message.clone();
                    self.requester.finish(job, JobOutcome::Failed { message }, Vec::new()).await.map(|_| ())
                }
                ExecutionState::Cancelled => self
                    .requester
                    .update_job_state(UpdateJobStateRequest::new(job.clone(), JobState::Stopped, "execution cancelled"))
                    .await
                    .map(|_| ()),
                _ => continue,
            };
            match result {
                Ok(()) => {
                    self.applied.fetch_add(1, Ordering::Relaxed);
                }
                // Delivery is at-least-once: a conflict means the change was made already.
                Err(e) if e.is_conflict() => {}
                Err(e) => return Err(Box::new(e)),
            }
        }
        Ok(())
    }
}

/// The two nodes' stores and the watchers following the compute node.
struct Nodes {
    requester: Arc<dyn JobStore>,
    compute: Arc<dyn ExecutionStore>,
    watchers: Vec<Watcher>,
}

/// Everything the run measures.
#[derive(Debug, Serialize)]
struct SimulationReport {
    dir: PathBuf,
    backend: String,
    seed: u64,
    jobs: u64,
    executions_created: u64,
    operations: u64,
    seconds: f64,
    operations_per_second: f64,
    restart_after_jobs: u64,
    compute_states: BTreeMap<String, u64>,
    requester_states: BTreeMap<String, u64>,
    watchers: Vec<WatcherPosition>,
    recovery: Report,
    requester_sync_applied: u64,
    purge: brine_purge::PurgeReport,
    check: CheckResult,
}

#[derive(Debug, Serialize)]
struct WatcherPosition {
    name: String,
    checkpoint: u64,
    head: u64,
    lag: u64,
    delivered_since_restart: u64,
}

#[derive(Debug, Serialize)]
struct CheckResult {
    compute: Vec<String>,
    requester: Vec<String>,
    ok: bool,
}

/// Opens both stores through the facade, on `backend`, in `dir` (as node `sim-node`).
async fn open_nodes(
    dir: &Path,
    backend: StoreType,
    database_url: Option<&str>,
    durability: Durability,
) -> anyhow::Result<(Arc<dyn JobStore>, Arc<dyn ExecutionStore>)> {
    let dir = dir.to_str().with_context(|| format!("{} is not valid UTF-8", dir.display()))?;
    let kind = backend.to_string();
    let mut vars = vec![
        ("BRINE_DIR", dir),
        ("BRINE_NODE_ID", "sim-node"),
        ("BRINE_JOB_STORE_TYPE", &kind),
        ("BRINE_COMPUTE_STORE_TYPE", &kind),
    ];
    if let Some(url) = database_url {
        vars.push(("BRINE_DATABASE_URL", url));
    } else if backend == StoreType::Postgres {
        anyhow::bail!("the postgres backend needs a database: give --database-url URL or set BRINE_DATABASE_URL");
    }
    // The demo's stores live in its own directory; of the environment it honours only
    // the space quota, so a quota's NOSPACE alarm can be seen on them.
    let quota = std::env::var("BRINE_QUOTA_BYTES").ok().filter(|v| !v.is_empty());
    if let Some(q) = &quota {
        brine_store::config::parse_size(q).map_err(|reason| anyhow::anyhow!("BRINE_QUOTA_BYTES: {reason}"))?;
        vars.push(("BRINE_QUOTA_BYTES", q));
    }
    let config = StoreConfig::from_lookup(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned()))?;
    let options = brine::Options { durability, ..brine::Options::default() };
    Ok((
        brine::open_job_store_with(&config, &options).await?,
        brine::open_execution_store_with(&config, &options).await?,
    ))
}

async fn start_watchers(
    requester: &Arc<dyn JobStore>,
    compute: &Arc<dyn ExecutionStore>,
    tally: &Arc<Tally>,
    applied: &Arc<AtomicU64>,
) -> anyhow::Result<Vec<Watcher>> {
    let log = compute.event_log();
    let metrics =
        Watcher::new("metrics", log.clone(), tally.clone(), WatcherOptions { batch_size: 200, ..Default::default() })
            .await?;
    let sync = Arc::new(RequesterSync { requester: requester.clone(), applied: applied.clone() });
    let filter = EventFilter { object_types: vec![ObjectType::Execution], operations: vec![Operation::Update] };
    let requester_sync =
        Watcher::new("requester-sync", log, sync, WatcherOptions { batch_size: 50, filter, ..Default::default() })
            .await?;
    metrics.start()?;
    requester_sync.start()?;
    Ok(vec![metrics, requester_sync])
}

/// The workload's state between steps.
struct Workload {
    rng: ChaCha8Rng,
    total: u64,
    submitted: u64,
    created: u64,
    operations: u64,
    in_flight: Vec<InFlight>,
}

impl Workload {
    fn job_type(&mut self) -> JobType {
        match self.rng.random_range(0..100) {
            0..70 => JobType::Batch,
            70..82 => JobType::Ops,
            82..91 => JobType::Service,
            _ => JobType::Daemon,
        }
    }

    /// Enqueues a job, grabs it as the compute node and creates its execution.
    async fn submit(&mut self, nodes: &Nodes) -> anyhow::Result<()> {
        let n = self.submitted;
        let queue = QUEUES[self.rng.random_range(0..QUEUES.len())];
        let mut job = Job::new(JobId::new(format!("job-{n:07}"))?, format!("sim-{n}"));
        job.job_type = self.job_type();
        job.priority = self.rng.random_range(0..10);
        job.labels.insert("team".into(), ["ml", "etl", "infra"][self.rng.random_range(0..3)].into());
        job.config = format!(r#"{{"image":"ubuntu:24.04","cmd":["run","{n}"]}}"#);
        job.input_files = vec![format!("s3://inputs/{n}.csv")];
        nodes.requester.enqueue(queue, job).await?;
        let Some(job) = nodes.requester.grab_next(queue).await? else {
            anyhow::bail!("queue {queue} was empty right after an enqueue");
        };
        self.operations += 2;
        self.submitted += 1;
        self.create_execution(nodes, &job).await
    }

    async fn create_execution(&mut self, nodes: &Nodes, job: &Job) -> anyhow::Result<()> {
        let id = ExecutionId::new(format!("e-{}-{}", job.id, self.created))?;
        let mut e = Execution::new(id.clone(), job);
        e.node_id = Some(NodeId::new("sim-node")?);
        e.allocated_resources = Resources {
            cpu_millis: self.rng.random_range(1u64..=8) * 500,
            memory_bytes: self.rng.random_range(1u64..=16) << 28,
            disk_bytes: 1 << 30,
            gpus: u64::from(self.rng.random_bool(0.1)),
        };
        let now = Timestamp::now();
        let bid =
            Event::new("scheduling", "bid submitted", now).with_detail("queue", job.queue.clone().unwrap_or_default());
        let stored = nodes.compute.create_execution(e, vec![bid]).await?;
        self.created += 1;
        self.operations += 1;
        self.in_flight.push(InFlight { id, job_type: job.job_type, state: stored.state(), revision: stored.revision });
        Ok(())
    }

    /// Moves one execution picked at random one step on.
    async fn advance(&mut self, nodes: &Nodes) -> anyhow::Result<()> {
        let i = self.rng.random_range(0..self.in_flight.len());
        let f = self.in_flight[i].clone();
        let long_running = matches!(f.job_type, JobType::Service | JobType::Daemon);
        let roll = self.rng.random_range(0..100);
        use ExecutionState as S;
        let (next, message, topic) = match f.state {
            S::Created if roll < 4 => (S::Cancelled, "bid rejected", "scheduling"),
            S::Created => (S::BidAccepted, "bid accepted", "scheduling"),
            S::BidAccepted => (S::Running, "started", "execution"),
            S::Running if long_running && roll < 96 => {
                let beat = Event::new("execution", "heartbeat", Timestamp::now());
                nodes.compute.add_execution_event(&f.id, vec![beat]).await?;
                self.operations += 1;
                return Ok(());
            }
            S::Running if long_running => (S::Cancelled, "stopped by the user", "execution"),
            S::Running if roll < 84 => (S::Publishing, "publishing results", "publishing"),
            S::Running if roll < 95 => (S::Failed, "exit code 1", "execution"),
            S::Running => (S::Cancelled, "cancelled by the user", "execution"),
            S::Publishing => (S::Completed, "results published", "publishing"),
            other => anyhow::bail!("execution {} is in flight in {other}", f.id),
        };
        let mut update =
            ExecutionUpdate { compute_state: Some(ComputeState::new(next, message)), ..Default::default() };
        match next {
            S::Completed => {
                update.published_result = Some(PublishedResult {
                    kind: "s3".into(),
                    params: BTreeMap::from([("key".into(), format!("results/{}", f.id))]),
                });
                update.run_output = Some(RunOutput { stdout: "done\n".into(), exit_code: 0, ..RunOutput::default() });
            }
            S::Failed => {
                update.run_output = Some(RunOutput {
                    stderr: "error: input not found\n".into(),
                    exit_code: 1,
                    error_msg: "exit code 1".into(),
                    ..RunOutput::default()
                });
            }
            _ => {}
        }
        let request = UpdateExecutionRequest {
            execution_id: f.id.clone(),
            new_values: update,
            condition: Condition {
                expected_states: vec![f.state],
                unexpected_states: vec![],
                expected_revision: Some(f.revision),
            },
            events: vec![Event::new(topic, message, Timestamp::now())],
        };
        let stored = nodes.compute.update_execution_state(request).await?;
        self.operations += 1;
        if next.is_terminal() {
            self.in_flight.swap_remove(i);
        } else {
            self.in_flight[i].state = next;
            self.in_flight[i].revision = stored.revision;
        }
        Ok(())
    }

    /// Whether the run is over: every job submitted and no batch or ops execution left.
    fn done(&self) -> bool {
        self.submitted >= self.total
            && self.in_flight.iter().all(|f| matches!(f.job_type, JobType::Service | JobType::Daemon))
    }

    /// One step: submit a job or advance an execution.
    async fn step(&mut self, nodes: &Nodes) -> anyhow::Result<()> {
        let room = self.in_flight.len() < WINDOW;
        let submit = self.submitted < self.total && (self.in_flight.is_empty() || (room && self.rng.random_bool(0.35)));
        if submit {
            self.submit(nodes).await
        } else {
            self.advance(nodes).await
        }
    }

    /// Rebuilds the in-flight list from the store (after recovery changed it).
    async fn reload(&mut self, compute: &dyn ExecutionStore) -> anyhow::Result<()> {
        self.in_flight.clear();
        for state in ExecutionState::ALL.into_iter().filter(|s| !s.is_terminal()) {
            let mut after: Option<ExecutionId> = None;
            loop {
                let batch = compute.get_executions_in_state(state, after.as_ref(), 500).await?;
                let Some(last) = batch.last() else { break };
                after = Some(last.id.clone());
                self.in_flight.extend(batch.into_iter().map(|e| InFlight {
                    id: e.id.clone(),
                    job_type: e.job.job_type,
                    state: e.state(),
                    revision: e.revision,
                }));
            }
        }
        // Id order, then a shuffle from the seeded RNG: repeatable.
        for i in (1..self.in_flight.len()).rev() {
            let j = self.rng.random_range(0..=i);
            self.in_flight.swap(i, j);
        }
        Ok(())
    }
}

async fn wait_for_watchers(watchers: &[Watcher], head: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    for w in watchers {
        while w.stats().await.last_handled < head {
            if Instant::now() > deadline {
                anyhow::bail!("watcher {} did not reach the head {head} within a minute", w.name());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    Ok(())
}

async fn job_states(requester: &dyn JobStore) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for state in JobState::ALL {
        let mut query = JobQuery { states: vec![state], limit: 1000, ..JobQuery::default() };
        let mut n = 0;
        loop {
            let page = requester.list_jobs(&query).await?;
            n += page.jobs.len() as u64;
            match page.next_token {
                Some(t) => query.token = Some(t),
                None => break,
            }
        }
        if n > 0 {
            out.insert(format!("{state:?}"), n);
        }
    }
    Ok(out)
}

fn fresh_dir() -> anyhow::Result<PathBuf> {
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("brine-simulate-{stamp}-{}", std::process::id()));
    brine_store::files::create_private_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

pub(crate) async fn run(args: SimulateArgs) -> anyhow::Result<Outcome> {
    if args.executions == 0 {
        anyhow::bail!("--executions must be at least 1");
    }
    let policy = crate::recover::load_policy(
        args.policy.as_deref(),
        Some(&args.preset).filter(|_| args.policy.is_none()).map(String::as_str),
    )?;
    let dir = match &args.dir {
        Some(d) => {
            // The workload's ids start from 0 again: in an earlier run's stores they would
            // collide with its jobs (and with the ids its purge archived).
            let used: Vec<String> = ["sim-node-requester.db", "sim-node-compute.db", "archive"]
                .into_iter()
                .filter(|name| d.join(name).exists())
                .map(str::to_owned)
                .collect();
            if !used.is_empty() {
                anyhow::bail!(
                    "--dir {} already holds an earlier run ({}): give a new or empty directory",
                    d.display(),
                    used.join(", ")
                );
            }
            brine_store::files::create_private_dir(d).with_context(|| format!("cannot create {}", d.display()))?;
            d.clone()
        }
        None => fresh_dir()?,
    };
    let durability = match args.durability {
        DurabilityArg::Sync => Durability::Sync,
        DurabilityArg::Buffered => Durability::Buffered,
    };
    let quiet = args.json;
    let tally = Arc::new(Tally::default());
    let applied = Arc::new(AtomicU64::new(0));
    let backend = StoreType::from(args.backend);
    let database_url = args.database_url.clone().or_else(|| StoreConfig::from_env().ok().and_then(|c| c.database_url));
    let database_url = database_url.filter(|_| backend == StoreType::Postgres);
    let (requester, compute) = open_nodes(&dir, backend, database_url.as_deref(), durability).await?;
    if backend == StoreType::Postgres {
        let existing = requester.list_jobs(&brine::JobQuery { limit: 1, ..brine::JobQuery::default() }).await?;
        if !existing.jobs.is_empty() {
            anyhow::bail!(
                "the database already holds jobs: brine simulate needs an empty one (create a fresh database, e.g. createdb brine_demo)"
            );
        }
    }
    let watchers = start_watchers(&requester, &compute, &tally, &applied).await?;
    let mut nodes = Nodes { requester, compute, watchers };
    let mut work = Workload {
        rng: ChaCha8Rng::seed_from_u64(args.seed),
        total: args.executions,
        submitted: 0,
        created: 0,
        operations: 0,
        in_flight: Vec::new(),
    };
    let restart_at = args.executions.div_ceil(2);
    // Ctrl-C (or SIGTERM) stops the workload between two operations.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    ui::watch_signals(stop.clone(), Arc::new(tokio::sync::Notify::new()), "stopping the workload")?;
    let stopped = || stop.load(Ordering::Acquire);
    let bar = ui::progress(Some(args.executions), "jobs (before restart)", quiet);
    let started = Instant::now();
    while work.submitted < restart_at && !stopped() {
        work.step(&nodes).await?;
        bar.set_position(work.submitted);
    }
    if stopped() {
        bar.finish_and_clear();
        return interrupted(nodes, &work, "before the restart").await;
    }

    // Hard restart: stop following, then drop both stores without closing them.
    bar.set_message("hard restart");
    for w in &nodes.watchers {
        w.stop().await?;
    }
    let Nodes { requester, compute, watchers } = nodes;
    drop(watchers);
    // In memory a restart would keep nothing: the stores stay open, and recovery runs
    // on them as they are.
    let (requester, compute) = if backend == StoreType::InMemory {
        (requester, compute)
    } else {
        drop(requester);
        drop(compute);
        open_nodes(&dir, backend, database_url.as_deref(), durability).await?
    };
    let unclean = compute.unclean_shutdown();
    bar.set_message("recovery");
    let recovery = crate::recover::run_with_progress(&*compute, &policy, false, Cleanup::Auto, true).await?;
    tally.creates.store(0, Ordering::Relaxed);
    tally.updates.store(0, Ordering::Relaxed);
    tally.deletes.store(0, Ordering::Relaxed);
    let watchers = start_watchers(&requester, &compute, &tally, &applied).await?;
    nodes = Nodes { requester, compute, watchers };
    work.reload(&*nodes.compute).await?;

    bar.set_message("jobs (after restart)".to_owned());
    while !work.done() && !stopped() {
        work.step(&nodes).await?;
        bar.set_position(work.submitted);
    }
    if stopped() {
        bar.finish_and_clear();
        return interrupted(nodes, &work, "after the restart and its recovery").await;
    }
    let seconds = started.elapsed().as_secs_f64();
    bar.set_message("watchers catching up");
    let head = nodes.compute.event_log().head().await?;
    wait_for_watchers(&nodes.watchers, head).await?;
    bar.finish_and_clear();

    let mut watchers = Vec::new();
    for w in &nodes.watchers {
        let stats = w.stats().await;
        w.stop().await?;
        let delivered = if w.name() == "metrics" {
            tally.creates.load(Ordering::Relaxed)
                + tally.updates.load(Ordering::Relaxed)
                + tally.deletes.load(Ordering::Relaxed)
        } else {
            stats.delivered
        };
        watchers.push(WatcherPosition {
            name: w.name().to_owned(),
            checkpoint: nodes.compute.get_checkpoint(w.name()).await?,
            head,
            lag: head.saturating_sub(stats.last_handled),
            delivered_since_restart: delivered,
        });
    }
    let mut compute_states = BTreeMap::new();
    for state in ExecutionState::ALL {
        let n = nodes.compute.get_execution_count(state).await?;
        if n > 0 {
            compute_states.insert(state.as_str().to_owned(), n);
        }
    }
    let requester_states = job_states(&*nodes.requester).await?;
    // Purge: every finished job goes to a zstd archive, and one is read back.
    let purge_options = brine_purge::PurgeOptions {
        min_age: Duration::ZERO,
        compression: brine_purge::Compression::Zstd,
        ..brine_purge::PurgeOptions::new(dir.join("archive"))
    };
    let purged = brine_purge::purge(&brine_purge::Source::Jobs(nodes.requester.clone()), &purge_options).await?;
    let read_back = match brine_purge::read_archived(&purge_options.archive_dir, "job-0000000")? {
        Some(record) => record.pointer("/job/id").and_then(|v| v.as_str()) == Some("job-0000000"),
        None => !nodes.requester.get_job(&JobId::new("job-0000000")?).await.is_err_and(|e| e.is_archived()),
    };
    if !read_back {
        anyhow::bail!("job-0000000 was purged but does not read back from {}", purge_options.archive_dir.display());
    }
    let compute_problems: Vec<String> = nodes.compute.check().await?.problems.iter().map(ToString::to_string).collect();
    let requester_problems: Vec<String> =
        nodes.requester.check().await?.problems.iter().map(ToString::to_string).collect();
    let Nodes { requester, compute, watchers: live } = nodes;
    drop(live);
    compute.close().await?;
    requester.close().await?;
    let ok = compute_problems.is_empty() && requester_problems.is_empty();
    let report = SimulationReport {
        dir: dir.clone(),
        backend: backend.to_string(),
        seed: args.seed,
        jobs: work.submitted,
        executions_created: work.created,
        operations: work.operations,
        seconds,
        operations_per_second: work.operations as f64 / seconds.max(f64::EPSILON),
        restart_after_jobs: restart_at,
        compute_states,
        requester_states,
        watchers,
        recovery,
        requester_sync_applied: applied.load(Ordering::Relaxed),
        purge: purged,
        check: CheckResult { compute: compute_problems, requester: requester_problems, ok },
    };
    let printed = if args.json { ui::print_json(&report) } else { print_report(&report, unclean) };
    ui::printed(printed, if ok { Outcome::Ok } else { Outcome::Problems })
}

/// Ends a run that Ctrl-C (or SIGTERM) stopped between two operations: stops the
/// watchers (their checkpoints are durable), checks and closes both stores cleanly, and
/// says on stderr what was interrupted and whether the stores are consistent.
async fn interrupted(nodes: Nodes, work: &Workload, phase: &str) -> anyhow::Result<Outcome> {
    for w in &nodes.watchers {
        w.stop().await?;
    }
    let problems = nodes.compute.check().await?.problems.len() + nodes.requester.check().await?.problems.len();
    let Nodes { requester, compute, watchers } = nodes;
    drop(watchers);
    compute.close().await?;
    requester.close().await?;
    let consistent = if problems == 0 {
        "both stores are consistent (check: OK) and closed cleanly".to_owned()
    } else {
        format!("check found {problems} problem(s); the stores are closed")
    };
    let _ = writeln!(
        std::io::stderr(),
        "interrupted: simulate stopped {phase}, after {} of {} jobs, between two operations; {consistent}",
        work.submitted,
        work.total
    );
    Ok(if problems == 0 { Outcome::Interrupted } else { Outcome::Problems })
}

fn print_report(r: &SimulationReport, unclean: bool) -> anyhow::Result<()> {
    outln!("brine simulate: {} jobs, seed {}, {} stores in {}", r.jobs, r.seed, r.backend, r.dir.display())?;
    outln!(
        "workload: {} operations in {:.2} s = {:.0} operations/s ({} executions created)",
        r.operations,
        r.seconds,
        r.operations_per_second,
        r.executions_created
    )?;
    let line = |m: &BTreeMap<String, u64>| m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ");
    outln!("compute executions: {}", line(&r.compute_states))?;
    outln!("requester jobs:     {}", line(&r.requester_states))?;
    if r.backend == StoreType::InMemory.to_string() {
        outln!("restart after {} jobs: watchers restarted; in memory the stores stay open", r.restart_after_jobs)?;
    } else {
        outln!(
            "hard restart after {} jobs: stores dropped without close, reopened ({})",
            r.restart_after_jobs,
            if unclean {
                "unclean shutdown detected"
            } else if r.backend == StoreType::Postgres.to_string() {
                "the server rolled back whatever was in flight: nothing to repair"
            } else {
                "no unclean shutdown seen"
            }
        )?;
    }
    for line in r.recovery.to_string().lines() {
        outln!("  {line}")?;
    }
    outln!("watchers (checkpoint / head):")?;
    for w in &r.watchers {
        outln!(
            "  {:<15} {:>8} / {:<8} lag {:<4} {} entries handled since the restart",
            w.name,
            w.checkpoint,
            w.head,
            w.lag,
            w.delivered_since_restart
        )?;
    }
    outln!("requester-sync applied {} terminal states to the requester's jobs", r.requester_sync_applied)?;
    outln!("{} (archive: {})", r.purge, r.dir.join("archive").display())?;
    if r.check.ok {
        outln!("check: OK")?;
    } else {
        outln!("check: {} problem(s)", r.check.compute.len() + r.check.requester.len())?;
        for p in r.check.compute.iter().chain(&r.check.requester) {
            outln!("  {p}")?;
        }
    }
    Ok(())
}
