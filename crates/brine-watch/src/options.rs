//! Watcher options and their validation.

use std::time::Duration;

use brine_store::{EventFilter, Position};

use crate::WatchError;

/// The largest batch a watcher asks for.
pub const MAX_BATCH_SIZE: usize = 10_000;

/// What a watcher does once a batch has failed `max_retries` retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnRetriesExhausted {
    /// Keep retrying at the maximum backoff; nothing is skipped.
    #[default]
    Block,
    /// Skip the batch, record its range in the stats, and go on.
    Skip,
}

/// What a watcher does when its position was deleted by retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnCompacted {
    /// Restart from the oldest entry still stored (the gap is counted in the stats).
    #[default]
    RestartFromOldest,
    /// Stop with the `Compacted` error.
    Stop,
}

/// How a watcher reads, retries and checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatcherOptions {
    /// Where to start when the watcher has no checkpoint (or is ephemeral). A durable
    /// watcher records this start as its checkpoint when created (see
    /// [`Watcher::new`](crate::Watcher::new)) and later resumes from that checkpoint.
    pub start: Position,
    /// Most entries per handler call (1..=10 000).
    pub batch_size: usize,
    /// Which entries to deliver; the others are passed over (and checkpointed past).
    pub filter: EventFilter,
    /// Delay before the first retry of a failed batch (more than zero).
    pub initial_backoff: Duration,
    /// Longest delay between retries (at least `initial_backoff`).
    pub max_backoff: Duration,
    /// Retries of one batch before `on_retries_exhausted` applies.
    pub max_retries: u32,
    /// Block or skip after `max_retries`.
    pub on_retries_exhausted: OnRetriesExhausted,
    /// What to do when the position was deleted by retention.
    pub on_compacted: OnCompacted,
    /// Keep no checkpoint: start from `start` every time.
    pub ephemeral: bool,
}

impl Default for WatcherOptions {
    fn default() -> Self {
        WatcherOptions {
            start: Position::TrimHorizon,
            batch_size: 100,
            filter: EventFilter::all(),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            max_retries: 5,
            on_retries_exhausted: OnRetriesExhausted::Block,
            on_compacted: OnCompacted::RestartFromOldest,
            ephemeral: false,
        }
    }
}

impl WatcherOptions {
    /// Checks every option, naming the first bad one.
    pub fn validate(&self) -> Result<(), WatchError> {
        let bad = |field, reason: String| Err(WatchError::InvalidOption { field, reason });
        if self.batch_size == 0 || self.batch_size > MAX_BATCH_SIZE {
            return bad("batch_size", format!("{} is not in 1..={MAX_BATCH_SIZE}", self.batch_size));
        }
        if self.initial_backoff.is_zero() {
            return bad("initial_backoff", "must be more than zero".into());
        }
        if self.max_backoff < self.initial_backoff {
            return bad(
                "max_backoff",
                format!("{:?} is below initial_backoff {:?}", self.max_backoff, self.initial_backoff),
            );
        }
        if let Position::At(0) = self.start {
            return bad("start", "At(0): sequence numbers start at 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_options_name_the_field() {
        let cases: Vec<(WatcherOptions, &str)> = vec![
            (WatcherOptions { batch_size: 0, ..WatcherOptions::default() }, "batch_size"),
            (WatcherOptions { batch_size: MAX_BATCH_SIZE + 1, ..WatcherOptions::default() }, "batch_size"),
            (WatcherOptions { initial_backoff: Duration::ZERO, ..WatcherOptions::default() }, "initial_backoff"),
            (
                WatcherOptions {
                    initial_backoff: Duration::from_secs(2),
                    max_backoff: Duration::from_secs(1),
                    ..WatcherOptions::default()
                },
                "max_backoff",
            ),
            (WatcherOptions { start: Position::At(0), ..WatcherOptions::default() }, "start"),
        ];
        for (options, field) in cases {
            let err = options.validate().unwrap_err();
            assert!(matches!(err, WatchError::InvalidOption { field: f, .. } if f == field), "{err}");
            assert!(err.to_string().contains(field), "{err}");
        }
        WatcherOptions::default().validate().unwrap();
    }
}
