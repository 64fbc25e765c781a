//! Restart recovery of a compute node's execution store (`docs/CONTRACT.md` §5, after
//! Bacalhau's "Compute node restarts").
//!
//! When a node opens its store it calls [`recover`]. Recovery reads the per-state
//! counters (O(1) each), then applies a [`Policy`] table keyed by (job type, execution
//! state) to the executions of each state whose cells are not all [`Action::NoAction`],
//! streaming them through the state index in bounded batches. Every change is an
//! ordinary conditional update or delete of the store (expected state and revision), so
//! it commits with its event-log entry and history event, and an execution another
//! writer changed meanwhile is left alone and counted as a conflict. With the `seed`
//! table (no action anywhere, the default) recovery reads nine counters and nothing
//! else.
//!
//! Before the policy, the cleanup: after an unclean shutdown (or when asked), the
//! store's [`ExecutionStore::repair`] puts its derived data right against the records
//! (index entries that point at nothing, records missing index entries, history without
//! an execution, counters that disagree with the state index), so the policy reads
//! counters and indexes that match the records. At the end the execution data is
//! compacted when anything was deleted or repaired.
//!
//! Cancel safety: dropping the future of [`recover`] is like killing the process midway,
//! and as safe: each batch commits whole or not at all, and a rerun finishes the job.
//!
//! A dry run computes the same [`Report`] and changes nothing. Recovery is idempotent:
//! each change moves an execution out of the state whose cell changed it (or deletes
//! it), into `Created` (requeue; its pass comes first) or `Failed` (whose cell can only
//! keep it or delete it once old, and it was just modified), so a second run, or a run
//! after one killed midway, finds nothing more to do. A table that would mark failed in
//! `Created` what it requeues there is refused when it is built.
//!
//! This crate depends on `brine-store` only and works with every backend.

mod error;
mod policy;
mod report;

use std::sync::Arc;
use std::time::Instant;

use brine_store::model::{DesiredState, DesiredStateKind, Event, Execution, ExecutionState, JobType, Timestamp};
use brine_store::{Clock, ExecutionStore, ExecutionUpdate, StoreError, SystemClock, UpdateExecutionRequest};

pub use error::{PolicyError, Problem, RecoveryError};
pub use policy::{Action, Policy, NODE_RESTARTED, PRESETS};
pub use report::{ActionTaken, CleanupReason, Report, StateCounts};

/// The topic of the history events recovery writes.
pub const TOPIC: &str = "recovery";

/// When the cleanup scan runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Cleanup {
    /// After an unclean shutdown only (the default): a store closed cleanly has
    /// consistent derived data, because every change writes it atomically.
    #[default]
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// Progress of a run, for progress bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The state being worked through.
    pub state: ExecutionState,
    /// Executions of that state read so far.
    pub done: u64,
    /// Executions in that state when the run started.
    pub total: u64,
}

/// How to run recovery.
#[derive(Clone)]
pub struct RecoveryOptions {
    /// Compute the report and change nothing.
    pub dry_run: bool,
    /// Executions read per batch (bounds memory).
    pub batch_size: usize,
    /// When the cleanup scan runs.
    pub cleanup: Cleanup,
    /// Compact the execution data after deletes or repairs.
    pub compact: bool,
    /// Where ages are measured from.
    pub clock: Arc<dyn Clock>,
    /// Called after each batch.
    pub progress: Option<Arc<dyn Fn(Progress) + Send + Sync>>,
}

impl Default for RecoveryOptions {
    fn default() -> Self {
        RecoveryOptions {
            dry_run: false,
            batch_size: 1000,
            cleanup: Cleanup::Auto,
            compact: true,
            clock: Arc::new(SystemClock),
            progress: None,
        }
    }
}

impl std::fmt::Debug for RecoveryOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecoveryOptions")
            .field("dry_run", &self.dry_run)
            .field("batch_size", &self.batch_size)
            .field("cleanup", &self.cleanup)
            .field("compact", &self.compact)
            .field("clock", &self.clock)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// What the policy decides for one execution.
enum Decision {
    Keep,
    Update(Box<UpdateExecutionRequest>),
    Delete,
}

fn decide(e: &Execution, action: &Action, now: Timestamp) -> Decision {
    let age = now.duration_since(e.modify_time);
    let state = e.state();
    let fail = |message: String| {
        let event = Event::new(TOPIC, message.clone(), now).with_detail("previous_state", state.as_str());
        Decision::Update(Box::new(
            UpdateExecutionRequest::to_state(e.id.clone(), ExecutionState::Failed, message)
                .expect_states([state])
                .expect_revision(e.revision)
                .with_events([event]),
        ))
    };
    match action {
        Action::NoAction => Decision::Keep,
        Action::MarkFailed { message } => fail(message.clone()),
        Action::FailOlderThan { age: min } if age >= *min => {
            fail(format!("{NODE_RESTARTED}: no change for {}", humantime::format_duration(*min)))
        }
        Action::DeleteOlderThan { age: min } if age >= *min => Decision::Delete,
        Action::FailOlderThan { .. } | Action::DeleteOlderThan { .. } => Decision::Keep,
        Action::Requeue => {
            let message = "requeued after node restart";
            let event = Event::new(TOPIC, message, now).with_detail("previous_state", state.as_str());
            let mut request = UpdateExecutionRequest::to_state(e.id.clone(), ExecutionState::Created, message)
                .expect_states([state])
                .expect_revision(e.revision)
                .with_events([event]);
            request.new_values = ExecutionUpdate {
                desired_state: Some(DesiredState { state: DesiredStateKind::Running, message: message.into() }),
                ..request.new_values
            };
            Decision::Update(Box::new(request))
        }
    }
}

/// Reads the nine counters.
async fn counts(store: &dyn ExecutionStore) -> Result<StateCounts, StoreError> {
    let mut counts = StateCounts::default();
    for state in ExecutionState::ALL {
        *counts.slot(state) = store.get_execution_count(state).await?;
    }
    Ok(counts)
}

/// What one pass of the policy did (or, in a dry run, would do).
struct Pass {
    after: StateCounts,
    actions: Vec<ActionTaken>,
    conflicts: u64,
    deleted: u64,
}

/// Applies the policy to every execution in a state it acts on, in batches; with
/// `dry_run`, only reads and decides. `read_only_check` marks the reading pass run
/// before a real one (no progress reports).
async fn apply_policy(
    store: &dyn ExecutionStore,
    policy: &Policy,
    options: &RecoveryOptions,
    now: Timestamp,
    repaired_counts: StateCounts,
    dry_run: bool,
    read_only_check: bool,
) -> Result<Pass, RecoveryError> {
    let mut after = repaired_counts;
    let mut actions: Vec<ActionTaken> = Vec::new();
    let mut conflicts = 0;
    let mut deleted = 0u64;
    for state in ExecutionState::ALL {
        if repaired_counts.get(state) == 0 || policy.leaves_alone(state) {
            continue;
        }
        let mut cells: Vec<ActionTaken> = JobType::ALL
            .into_iter()
            .map(|job_type| ActionTaken {
                job_type,
                state,
                action: policy.action(job_type, state).to_string(),
                examined: 0,
                changed: 0,
            })
            .collect();
        let mut done = 0u64;
        let mut batch = store.get_executions_in_state(state, None, options.batch_size).await?;
        while let Some(last) = batch.last() {
            let cursor = last.id.clone();
            done += batch.len() as u64;
            // The batch's changes commit together: one write (and on a `Sync` store one
            // fsync) per batch, each change still a conditional update with its history
            // event and event-log entry. A change whose condition fails is a conflict
            // and leaves the rest of the batch alone.
            let mut tx = None;
            for e in &batch {
                let job_type = e.job.job_type;
                let cell = &mut cells[usize::from(job_type.code())];
                cell.examined += 1;
                // Where the execution goes: a state, or nowhere (deleted).
                let (target, request) = match decide(e, policy.action(job_type, state), now) {
                    Decision::Keep => continue,
                    Decision::Update(request) => {
                        (Some(request.new_values.compute_state.as_ref().map_or(state, |c| c.state)), Some(request))
                    }
                    Decision::Delete => (None, None),
                };
                let outcome = if dry_run {
                    Ok(())
                } else {
                    let tx = match &mut tx {
                        Some(tx) => tx,
                        None => tx.insert(store.begin_tx().await?),
                    };
                    match request {
                        Some(request) => tx.update_execution_state(*request).await.map(|_| ()),
                        None => tx.delete_execution(&e.id).await,
                    }
                };
                match outcome {
                    Ok(()) => {
                        cell.changed += 1;
                        *after.slot(state) = after.get(state).saturating_sub(1);
                        match target {
                            Some(to) => *after.slot(to) += 1,
                            None => deleted += 1,
                        }
                    }
                    Err(err) if err.is_conflict() || err.is_not_found() => conflicts += 1,
                    Err(err) => return Err(err.into()),
                }
            }
            // The next batch is read while this one commits: a large commit writes on a
            // blocking thread of the store, so the reading and the writing overlap. The
            // next batch lies after the cursor, where this one changes nothing, and each
            // of its changes is conditional again when it is made.
            let more = batch.len() == options.batch_size;
            let commit = async {
                match tx {
                    Some(tx) => tx.commit().await,
                    None => Ok(()),
                }
            };
            let next = async {
                if more {
                    store.get_executions_in_state(state, Some(&cursor), options.batch_size).await
                } else {
                    Ok(Vec::new())
                }
            };
            let (committed, next) = tokio::join!(commit, next);
            committed?;
            if let Some(progress) = options.progress.as_ref().filter(|_| !read_only_check) {
                progress(Progress { state, done, total: repaired_counts.get(state) });
            }
            batch = next?;
        }
        actions.extend(
            cells.into_iter().filter(|c| c.examined > 0 && policy.action(c.job_type, state) != &Action::NoAction),
        );
    }
    Ok(Pass { after, actions, conflicts, deleted })
}

/// Runs recovery on an open store (see the crate documentation).
pub async fn recover(
    store: &dyn ExecutionStore,
    policy: &Policy,
    options: &RecoveryOptions,
) -> Result<Report, RecoveryError> {
    if options.batch_size == 0 {
        return Err(RecoveryError::Options { option: "batch_size", reason: "must be at least 1".into() });
    }
    let started = Instant::now();
    let now = options.clock.now();
    let before = counts(store).await?;
    // Repair first, so the policy reads counters and indexes that match the records.
    let (cleanup_reason, run_cleanup) = match options.cleanup {
        Cleanup::Never => (CleanupReason::SkippedByOptions, false),
        Cleanup::Always => (CleanupReason::Requested, true),
        Cleanup::Auto if store.unclean_shutdown() => (CleanupReason::UncleanShutdown, true),
        Cleanup::Auto => (CleanupReason::SkippedCleanShutdown, false),
    };
    let cleanup = if run_cleanup { Some(store.repair(options.dry_run).await?) } else { None };
    let repaired_counts = if cleanup.as_ref().is_some_and(|c| c.repaired() > 0) && !options.dry_run {
        counts(store).await?
    } else {
        before
    };
    // A reading pass first: every execution the policy acts on must decode before the
    // first change, so a corrupt record stops recovery with nothing changed.
    if !options.dry_run {
        apply_policy(store, policy, options, now, repaired_counts, true, true).await?;
    }
    let Pass { mut after, actions, conflicts, deleted } =
        apply_policy(store, policy, options, now, repaired_counts, options.dry_run, false).await?;
    if !options.dry_run {
        // Conflicts make the predicted counts stale: read them.
        after = counts(store).await?;
    }
    let repaired = cleanup.as_ref().map_or(0, |c| c.repaired());
    let compacted = options.compact && !options.dry_run && (deleted > 0 || repaired > 0);
    if compacted {
        store.compact().await?;
    }
    Ok(Report {
        policy: policy.name().to_owned(),
        dry_run: options.dry_run,
        before,
        after,
        actions,
        conflicts,
        cleanup_reason,
        cleanup,
        compacted,
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
    })
}
