//! Event-log retention: deletes entries every durable watcher has handled once they are
//! old enough, in bounded batches, on a cadence.

use std::sync::Arc;
use std::time::Duration;

use brine_store::{Clock, EventLog};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::WatchError;

/// How retention runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionOptions {
    /// Entries younger than this are kept, whatever the checkpoints say.
    pub min_age: Duration,
    /// Most entries deleted per write (1..=100 000), so a pass never holds the store's
    /// writers up for long.
    pub batch_size: usize,
    /// Time between passes of [`Retention::spawn`] (more than zero).
    pub interval: Duration,
}

impl Default for RetentionOptions {
    fn default() -> Self {
        RetentionOptions {
            min_age: Duration::from_secs(24 * 3600),
            batch_size: 1000,
            interval: Duration::from_secs(60),
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionPass {
    /// Entries deleted.
    pub deleted: u64,
    /// The minimum checkpoint: nothing above it was eligible (0 when no durable watcher
    /// has a checkpoint, in which case nothing is deleted).
    pub up_to: u64,
    /// The oldest entry still stored after the pass.
    pub oldest: u64,
}

/// Retention of one event log.
pub struct Retention {
    log: Arc<dyn EventLog>,
    clock: Arc<dyn Clock>,
    options: RetentionOptions,
}

/// A running retention loop; dropping it leaves the loop running, [`stop`](Self::stop)
/// ends it.
pub struct RetentionTask {
    stop: watch::Sender<bool>,
    last: watch::Receiver<Option<Result<RetentionPass, String>>>,
    handle: JoinHandle<()>,
}

impl RetentionTask {
    /// The outcome of the latest pass (`None` before the first), its error shown.
    pub fn last_pass(&self) -> Option<Result<RetentionPass, String>> {
        self.last.borrow().clone()
    }

    /// Stops the loop after its current pass.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        let _ = self.handle.await;
    }
}

impl Retention {
    /// Retention of `log`, aging entries by `clock` (the store's clock). Options are
    /// validated.
    pub fn new(log: Arc<dyn EventLog>, clock: Arc<dyn Clock>, options: RetentionOptions) -> Result<Self, WatchError> {
        if options.batch_size == 0 || options.batch_size > 100_000 {
            return Err(WatchError::InvalidOption {
                field: "batch_size",
                reason: format!("{} is not in 1..=100000", options.batch_size),
            });
        }
        if options.interval.is_zero() {
            return Err(WatchError::InvalidOption { field: "interval", reason: "must be more than zero".into() });
        }
        Ok(Retention { log, clock, options })
    }

    /// One pass: deletes, oldest first and `batch_size` per write, the entries at or
    /// below the minimum checkpoint that are older than `min_age`.
    pub async fn run_once(&self) -> Result<RetentionPass, WatchError> {
        let checkpoints = self.log.list_checkpoints().await?;
        let Some(up_to) = checkpoints.iter().map(|(_, seq)| *seq).min() else {
            return Ok(RetentionPass { deleted: 0, up_to: 0, oldest: self.log.oldest().await? });
        };
        let before = self.clock.now().saturating_sub(self.options.min_age);
        let mut deleted = 0;
        loop {
            let n = self.log.trim(up_to, before, self.options.batch_size).await?;
            deleted += n;
            if n < self.options.batch_size as u64 {
                break;
            }
            tokio::task::yield_now().await;
        }
        Ok(RetentionPass { deleted, up_to, oldest: self.log.oldest().await? })
    }

    /// Runs a pass every `interval` on the current runtime until stopped. A failed pass
    /// is retried at the next tick.
    pub fn spawn(self: Arc<Self>) -> RetentionTask {
        let (stop, mut stop_rx) = watch::channel(false);
        let (report, last) = watch::channel(None);
        let handle = tokio::spawn(async move {
            let mut tick = tokio::time::interval(self.options.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop_rx.changed() => return,
                }
                if *stop_rx.borrow() {
                    return;
                }
                // A failed pass (a transient engine error) is reported through
                // `last_pass` and tried again at the next tick.
                let outcome = self.run_once().await.map_err(|e| e.to_string());
                report.send_replace(Some(outcome));
            }
        });
        RetentionTask { stop, last, handle }
    }
}
