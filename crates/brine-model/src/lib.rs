//! Plain data types shared by every part of Brine.
//!
//! This crate holds what a job store and an execution store keep: [`Job`], [`Execution`],
//! [`Evaluation`], [`Event`], [`JobHistory`] and the event-log [`LogEntry`], with their
//! state enums. It has no behaviour beyond validation and small predicates, and it must
//! not depend on any storage engine, async runtime or other Brine crate: everything else
//! depends on it, so it stays cheap to compile and stable to serialize.
//!
//! Two rules hold for every type here:
//! - state enums have a stable `u8` code ([`ExecutionState::code`], [`JobState::code`])
//!   that backends use in keys; a code is never reused or renumbered;
//! - identifiers are validated newtypes ([`ExecutionId`], [`JobId`], ...): a value of
//!   one of those types is known to be non-empty, at most 255 bytes, free of NUL and
//!   whitespace, so backends can use it as a key component without checking again.

mod evaluation;
mod event;
mod execution;
mod id;
mod job;
mod log;
mod time;

pub use evaluation::{Evaluation, EvaluationStatus};
pub use event::{Event, HistoryLevel, JobHistory};
pub use execution::{
    ComputeState, DesiredState, DesiredStateKind, Execution, ExecutionState, PublishedResult, Resources, RunOutput,
};
pub use id::{validate_name, EvaluationId, ExecutionId, InvalidReason, JobId, NodeId, ValidationError, MAX_ID_LEN};
pub use job::{validate_label_value, validate_queue, Job, JobState, JobStateInfo, JobType, QueueStatus, MAX_QUEUE_LEN};
pub use log::{LogEntry, LogObject, ObjectType, Operation};
pub use time::Timestamp;

/// A state enum with a stable one-byte code, shared by executions and jobs so that
/// generic code (conditions, counters, errors) can treat both alike.
pub trait StateCode: Copy + Eq + std::fmt::Debug + std::fmt::Display + Send + Sync + 'static {
    /// Every state, in code order.
    const ALL: &'static [Self];
    /// The stable one-byte code.
    fn code(self) -> u8;
    /// The state for a code, or `None` for an unknown code.
    fn from_code(code: u8) -> Option<Self>;
    /// Whether no further transition is allowed.
    fn is_terminal(self) -> bool;
}
