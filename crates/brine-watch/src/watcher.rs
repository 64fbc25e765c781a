//! One watcher: its delivery loop, retries, checkpoints, stop/start/seek and stats.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use brine_store::model::LogEntry;
use brine_store::{validate_checkpoint_name, EventLog, Position, StoreError};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::options::{OnCompacted, OnRetriesExhausted, WatcherOptions};
use crate::{HandlerError, WatchError};

/// How many skipped ranges the stats remember.
const SKIPPED_KEPT: usize = 16;

/// Receives a watcher's entries, in sequence order, one batch per call.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Handles `entries`; an error makes the watcher retry the same batch.
    async fn handle(&self, entries: &[LogEntry]) -> Result<(), HandlerError>;
}

/// Whether a watcher's loop is running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatcherState {
    /// Not started, or stopped.
    Stopped,
    /// Delivering or waiting for entries.
    Running,
    /// Stopped on an error (shown).
    Failed(String),
}

/// A batch the watcher skipped after its retries ran out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedRange {
    /// First sequence number of the batch.
    pub first: u64,
    /// Last sequence number of the batch.
    pub last: u64,
    /// The handler's last error.
    pub error: String,
}

/// What a watcher has done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchStats {
    /// Everything at or below this sequence number is handled (or filtered out, or
    /// skipped); 0 before the first entry.
    pub last_handled: u64,
    /// The log's head when the stats were taken.
    pub head: u64,
    /// `head - last_handled`.
    pub lag: u64,
    /// Batches handled.
    pub batches: u64,
    /// Entries delivered to the handler and handled.
    pub delivered: u64,
    /// Failed handler calls that were retried.
    pub retries: u64,
    /// Entries skipped after retries ran out.
    pub skipped: u64,
    /// The most recent skipped batches (at most 16).
    pub skipped_ranges: Vec<SkippedRange>,
    /// Times the watcher restarted from the oldest entry after its position was deleted.
    pub compacted_restarts: u64,
    /// The loop's state.
    pub state: WatcherState,
}

#[derive(Debug, Default)]
struct Progress {
    /// Where the next read starts.
    position: Option<Position>,
    last_handled: u64,
    head: u64,
    batches: u64,
    delivered: u64,
    retries: u64,
    skipped: u64,
    skipped_ranges: VecDeque<SkippedRange>,
    compacted_restarts: u64,
    /// Seeks so far: a batch read before the latest seek is superseded, and neither its
    /// completion nor its retries move the watcher.
    seeks: u64,
    /// A durable starting point beyond the head at creation, not yet recorded as the
    /// checkpoint (a checkpoint may not lie beyond the head): recorded by the loop once
    /// the head reaches it.
    start_hold: Option<u64>,
}

struct Shared {
    name: String,
    log: Arc<dyn EventLog>,
    handler: Arc<dyn Handler>,
    options: WatcherOptions,
    progress: Mutex<Progress>,
    state: Mutex<WatcherState>,
    stop: watch::Sender<bool>,
    wake: Notify,
    /// Wakes a batch waiting in backoff when a seek supersedes it.
    sought: Notify,
    /// Held across a checkpoint write and the matching change of `progress` by both a
    /// seek and the loop, so a batch's checkpoint can never land after a later seek's.
    checkpoints: tokio::sync::Mutex<()>,
    task: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The sequence number a position starts after, where it is known without the store.
fn after_of(position: Position) -> Option<u64> {
    match position {
        Position::After(n) => Some(n),
        Position::At(n) => Some(n.saturating_sub(1)),
        Position::TrimHorizon | Position::Latest => None,
    }
}

/// A named follower of one event log. Cheap to clone; clones control the same watcher.
#[derive(Clone)]
pub struct Watcher {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher").field("name", &self.shared.name).field("state", &self.state()).finish()
    }
}

enum Delivery {
    Handled,
    /// Skipped after the retries ran out, with the handler's last error.
    Skipped(String),
    /// Abandoned after a failed call because a seek moved the watcher meanwhile.
    Superseded,
    StopRequested,
}

impl Watcher {
    /// Creates a stopped watcher. A durable watcher resumes after its checkpoint when it
    /// has one; otherwise (and always when ephemeral) it starts at `options.start`, with
    /// `Latest` meaning the head at creation. Options are validated first.
    ///
    /// A durable watcher without a checkpoint records its starting point as its
    /// checkpoint here (the entry before its first: the oldest entry's predecessor for
    /// `TrimHorizon`, the head for `Latest`, `n - 1` for `At(n)`), so retention keeps
    /// everything it is yet to read from its creation on, and a restart resumes there.
    /// A start beyond the head is recorded by the running watcher once the head reaches
    /// it. An ephemeral watcher records nothing.
    ///
    /// Cancel safety: dropping the future before it completes may leave the starting
    /// checkpoint recorded without a watcher; creating the watcher again resumes from it.
    pub async fn new(
        name: &str,
        log: Arc<dyn EventLog>,
        handler: Arc<dyn Handler>,
        options: WatcherOptions,
    ) -> Result<Watcher, WatchError> {
        options.validate()?;
        validate_checkpoint_name(name).map_err(|source| WatchError::InvalidName { name: name.to_owned(), source })?;
        let checkpoint = if options.ephemeral { 0 } else { log.get_checkpoint(name).await? };
        let mut start_hold = None;
        let (position, last_handled) = if checkpoint > 0 {
            (Position::After(checkpoint), checkpoint)
        } else {
            let head = log.head().await?;
            let (position, start_after) = match options.start {
                Position::Latest => (Position::After(head), head),
                Position::TrimHorizon => (Position::TrimHorizon, log.oldest().await?.saturating_sub(1)),
                p => (p, after_of(p).unwrap_or(0)),
            };
            if !options.ephemeral {
                if start_after <= head {
                    log.checkpoint(name, start_after).await?;
                } else {
                    start_hold = Some(start_after);
                }
            }
            (position, start_after)
        };
        let progress = Progress { position: Some(position), last_handled, start_hold, ..Progress::default() };
        Ok(Watcher {
            shared: Arc::new(Shared {
                name: name.to_owned(),
                log,
                handler,
                options,
                progress: Mutex::new(progress),
                state: Mutex::new(WatcherState::Stopped),
                stop: watch::channel(false).0,
                wake: Notify::new(),
                sought: Notify::new(),
                checkpoints: tokio::sync::Mutex::new(()),
                task: Mutex::new(None),
            }),
        })
    }

    /// The watcher's name (also its checkpoint's name).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Whether it keeps no checkpoint.
    pub fn is_ephemeral(&self) -> bool {
        self.shared.options.ephemeral
    }

    /// The loop's state.
    pub fn state(&self) -> WatcherState {
        lock(&self.shared.state).clone()
    }

    /// Starts delivering on the current tokio runtime.
    pub fn start(&self) -> Result<(), WatchError> {
        let mut task = lock(&self.shared.task);
        if task.as_ref().is_some_and(|t| !t.is_finished()) {
            return Err(WatchError::AlreadyRunning { name: self.shared.name.clone() });
        }
        self.shared.stop.send_replace(false);
        *lock(&self.shared.state) = WatcherState::Running;
        let shared = Arc::clone(&self.shared);
        *task = Some(tokio::spawn(async move { run(shared).await }));
        Ok(())
    }

    /// Asks the loop to stop and waits until it has: a handler call in progress is
    /// allowed to finish (and its batch is checkpointed); waits between retries and for
    /// new entries end at once.
    pub async fn stop(&self) -> Result<(), WatchError> {
        self.stop_within(Duration::MAX).await
    }

    /// Like [`stop`](Self::stop), but gives up after `deadline` with `Timeout` (the loop
    /// still stops once its handler returns).
    pub async fn stop_within(&self, deadline: Duration) -> Result<(), WatchError> {
        self.request_stop();
        self.join(deadline).await.map_err(|()| WatchError::Timeout { names: vec![self.shared.name.clone()], deadline })
    }

    pub(crate) fn request_stop(&self) {
        self.shared.stop.send_replace(true);
        self.shared.wake.notify_one();
    }

    /// Waits up to `deadline` for the loop to end; `Err(())` on timeout.
    pub(crate) async fn join(&self, deadline: Duration) -> Result<(), ()> {
        let Some(mut handle) = lock(&self.shared.task).take() else { return Ok(()) };
        let outcome = if deadline == Duration::MAX {
            Ok((&mut handle).await)
        } else {
            tokio::time::timeout(deadline, &mut handle).await
        };
        match outcome {
            Ok(joined) => {
                let mut state = lock(&self.shared.state);
                if let Err(e) = joined {
                    *state = WatcherState::Failed(format!("the watcher task ended abnormally: {e}"));
                } else if *state == WatcherState::Running {
                    *state = WatcherState::Stopped;
                }
                Ok(())
            }
            Err(_) => {
                *lock(&self.shared.task) = Some(handle);
                Err(())
            }
        }
    }

    /// Moves the watcher: the next batch starts at `position` (`Latest`: the current
    /// head). A durable watcher records the move as its checkpoint. While running, the
    /// move happens before the next read, and it wins over the batch in flight: that
    /// batch's handler call is not interrupted, but its completion checkpoints nothing and
    /// moves nothing, and if the call failed, the batch is abandoned at once (a wait in
    /// backoff ends) instead of retried or skipped.
    ///
    /// Cancel safety: dropping the future before it completes either leaves the watcher
    /// where it was or leaves only the stored checkpoint moved (until the watcher's next
    /// checkpoint replaces it); seek again to be sure where it is.
    pub async fn seek(&self, position: Position) -> Result<(), WatchError> {
        if let Position::At(0) = position {
            return Err(WatchError::InvalidOption {
                field: "position",
                reason: "At(0): sequence numbers start at 1".into(),
            });
        }
        let position = match position {
            Position::Latest => Position::After(self.shared.log.head().await?),
            p => p,
        };
        let after = match after_of(position) {
            Some(n) => n,
            None => self.shared.log.oldest().await?.saturating_sub(1),
        };
        let head = self.shared.log.head().await?;
        if after > head {
            return Err(StoreError::CheckpointBeyondHead { name: self.shared.name.clone(), seq: after, head }.into());
        }
        let shared = &self.shared;
        let _order = shared.checkpoints.lock().await;
        if !shared.options.ephemeral {
            shared.log.checkpoint(&shared.name, after).await?;
        }
        {
            let mut p = lock(&shared.progress);
            p.position = Some(position);
            p.last_handled = after;
            p.seeks += 1;
            p.start_hold = None;
        }
        // A batch in backoff is abandoned; a wait for new entries ends and reads again.
        shared.sought.notify_waiters();
        shared.wake.notify_one();
        Ok(())
    }

    /// Records `seq` as handled (for handlers that checkpoint inside a batch).
    pub async fn checkpoint(&self, seq: u64) -> Result<(), WatchError> {
        if self.shared.options.ephemeral {
            return Err(WatchError::Ephemeral { name: self.shared.name.clone() });
        }
        Ok(self.shared.log.checkpoint(&self.shared.name, seq).await?)
    }

    /// What the watcher has done, with the lag to the log's current head.
    pub async fn stats(&self) -> WatchStats {
        let fresh_head = self.shared.log.head().await.ok();
        let p = lock(&self.shared.progress);
        let head = fresh_head.unwrap_or(p.head).max(p.head);
        WatchStats {
            last_handled: p.last_handled,
            head,
            lag: head.saturating_sub(p.last_handled),
            batches: p.batches,
            delivered: p.delivered,
            retries: p.retries,
            skipped: p.skipped,
            skipped_ranges: p.skipped_ranges.iter().cloned().collect(),
            compacted_restarts: p.compacted_restarts,
            state: self.state(),
        }
    }
}

/// Whether stop was asked for.
fn stopping(shared: &Shared) -> bool {
    *shared.stop.borrow()
}

fn fail(shared: &Shared, error: WatchError) {
    *lock(&shared.state) = WatcherState::Failed(error.to_string());
}

async fn run(shared: Arc<Shared>) {
    if let Err(e) = deliver_loop(&shared).await {
        fail(&shared, e);
    } else {
        let mut state = lock(&shared.state);
        if *state == WatcherState::Running {
            *state = WatcherState::Stopped;
        }
    }
}

/// Whether a seek came in since the loop read its position at `generation`.
fn superseded(shared: &Shared, generation: u64) -> bool {
    lock(&shared.progress).seeks != generation
}

/// Records everything up to `after` as handled (durably first), unless a seek came in
/// since the batch was read at `generation`: then it records nothing, and the seek's
/// target stays, in the store and in memory.
///
/// Cancel safety: dropping it may leave the checkpoint written and the position in
/// memory not moved; only the delivery loop calls it, and that loop is never cancelled
/// (it ends by returning, or with its runtime).
async fn record_progress(shared: &Shared, after: u64, generation: u64) -> Result<(), WatchError> {
    let _order = shared.checkpoints.lock().await;
    if superseded(shared, generation) {
        return Ok(());
    }
    if !shared.options.ephemeral {
        shared.log.checkpoint(&shared.name, after).await?;
    }
    let mut p = lock(&shared.progress);
    p.position = Some(Position::After(after));
    p.last_handled = after;
    Ok(())
}

async fn deliver_loop(shared: &Shared) -> Result<(), WatchError> {
    let stopped = |source: StoreError| WatchError::Stopped { name: shared.name.clone(), source };
    let mut stop_rx = shared.stop.subscribe();
    loop {
        if stopping(shared) {
            return Ok(());
        }
        let (position, generation) = {
            let p = lock(&shared.progress);
            (p.position.unwrap_or(Position::TrimHorizon), p.seeks)
        };
        let record = |after| async move {
            record_progress(shared, after, generation).await.map_err(|e| match e {
                WatchError::Store(s) => stopped(s),
                other => other,
            })
        };
        let batch = match shared.log.get_events(position, shared.options.batch_size, &shared.options.filter).await {
            Ok(batch) => batch,
            // A seek since the read: its target is read next.
            Err(StoreError::Compacted { .. }) if superseded(shared, generation) => continue,
            Err(StoreError::Compacted { requested, oldest }) => match shared.options.on_compacted {
                OnCompacted::RestartFromOldest => {
                    let mut p = lock(&shared.progress);
                    if p.seeks == generation {
                        p.position = Some(Position::TrimHorizon);
                        p.compacted_restarts += 1;
                    }
                    continue;
                }
                OnCompacted::Stop => return Err(stopped(StoreError::Compacted { requested, oldest })),
            },
            Err(e) => return Err(stopped(e)),
        };
        let after = batch.next_after();
        let hold = {
            let mut p = lock(&shared.progress);
            p.head = batch.head;
            if p.seeks != generation {
                // A seek since the read: this batch is not delivered.
                continue;
            }
            p.start_hold.take_if(|hold| *hold <= batch.head)
        };
        if let Some(hold) = hold {
            // The head reached a start that lay beyond it at creation: hold retention there.
            record(hold).await?;
        }
        if batch.entries.is_empty() {
            if after_of(position).is_none_or(|before| after > before) {
                // Entries were passed over by the filter (or the start was resolved).
                record(after).await?;
                continue;
            }
            tokio::select! {
                waited = shared.log.wait_for(after) => {
                    let head = waited.map_err(stopped)?;
                    lock(&shared.progress).head = head;
                }
                _ = stop_rx.changed() => {}
                () = shared.wake.notified() => {}
            }
            continue;
        }
        let (first, last) = (batch.entries[0].seq, batch.entries[batch.entries.len() - 1].seq);
        match deliver(shared, &batch.entries, generation, &mut stop_rx).await {
            Delivery::StopRequested => return Ok(()),
            Delivery::Superseded => continue,
            Delivery::Handled => {
                let mut p = lock(&shared.progress);
                p.batches += 1;
                p.delivered += batch.entries.len() as u64;
            }
            Delivery::Skipped(error) => {
                let mut p = lock(&shared.progress);
                p.skipped += batch.entries.len() as u64;
                p.skipped_ranges.push_back(SkippedRange { first, last, error });
                while p.skipped_ranges.len() > SKIPPED_KEPT {
                    p.skipped_ranges.pop_front();
                }
            }
        }
        // After a seek during the batch, this records nothing: the seek's target stays.
        record(after).await?;
    }
}

/// Calls the handler until it succeeds, retrying with exponential backoff; after
/// `max_retries` retries, blocks (keeps retrying at the maximum backoff) or skips. A
/// failed call after a seek (one since the batch was read at `generation`) abandons the
/// batch, and a seek during the backoff ends it.
async fn deliver(
    shared: &Shared,
    entries: &[LogEntry],
    generation: u64,
    stop_rx: &mut watch::Receiver<bool>,
) -> Delivery {
    let options = &shared.options;
    let mut backoff = options.initial_backoff;
    let mut failures: u32 = 0;
    loop {
        let error = match shared.handler.handle(entries).await {
            Ok(()) => return Delivery::Handled,
            Err(e) => e.to_string(),
        };
        // Created before the check, so it is woken by any seek after the check.
        let sought = shared.sought.notified();
        if superseded(shared, generation) {
            return Delivery::Superseded;
        }
        failures = failures.saturating_add(1);
        if failures > options.max_retries && options.on_retries_exhausted == OnRetriesExhausted::Skip {
            return Delivery::Skipped(error);
        }
        lock(&shared.progress).retries += 1;
        if stopping(shared) {
            return Delivery::StopRequested;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop_rx.changed() => return Delivery::StopRequested,
            () = sought => return Delivery::Superseded,
        }
        backoff = backoff.saturating_mul(2).min(options.max_backoff);
    }
}
