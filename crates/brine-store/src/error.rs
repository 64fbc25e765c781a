//! The error type of every store operation.

use std::fmt;

use brine_model::{ExecutionState, JobId, JobState, ValidationError};

/// Result of a store operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The kind of object an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ObjectKind {
    /// An execution.
    Execution,
    /// A job, by id.
    Job,
    /// A job, by name within a namespace.
    JobName,
    /// One version of a job.
    JobVersion,
    /// An evaluation.
    Evaluation,
    /// A watcher checkpoint.
    Checkpoint,
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjectKind::Execution => "execution",
            ObjectKind::Job => "job",
            ObjectKind::JobName => "job name",
            ObjectKind::JobVersion => "job version",
            ObjectKind::Evaluation => "evaluation",
            ObjectKind::Checkpoint => "checkpoint",
        })
    }
}

/// An execution or job state, for errors that concern either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnyState {
    /// An execution state.
    Execution(ExecutionState),
    /// A job state.
    Job(JobState),
}

impl fmt::Display for AnyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnyState::Execution(s) => fmt::Display::fmt(s, f),
            AnyState::Job(s) => fmt::Display::fmt(s, f),
        }
    }
}

impl From<ExecutionState> for AnyState {
    fn from(s: ExecutionState) -> Self {
        AnyState::Execution(s)
    }
}

impl From<JobState> for AnyState {
    fn from(s: JobState) -> Self {
        AnyState::Job(s)
    }
}

/// What a failed state condition wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateExpectation {
    /// One of these states.
    OneOf(Vec<AnyState>),
    /// None of these states.
    NoneOf(Vec<AnyState>),
}

impl fmt::Display for StateExpectation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (prefix, states) = match self {
            StateExpectation::OneOf(s) => ("one of", s),
            StateExpectation::NoneOf(s) => ("none of", s),
        };
        let names: Vec<String> = states.iter().map(ToString::to_string).collect();
        write!(f, "{prefix} [{}]", names.join(", "))
    }
}

/// Everything a store operation can fail with.
///
/// Variants carry the ids and states involved so callers can react without parsing
/// messages. Backend failures wrap their source error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No such object.
    #[error("{kind} {id} not found")]
    NotFound {
        /// What was looked up.
        kind: ObjectKind,
        /// Its id or name.
        id: String,
    },
    /// An object with this id (or name) exists already.
    #[error("{kind} {id} already exists")]
    AlreadyExists {
        /// What was created.
        kind: ObjectKind,
        /// The clashing id or name.
        id: String,
    },
    /// A state condition failed; nothing was changed.
    #[error("{kind} {id} is in state {actual}, expected {expected}")]
    InvalidState {
        /// The object's kind.
        kind: ObjectKind,
        /// The object's id.
        id: String,
        /// Its current state.
        actual: AnyState,
        /// What the condition wanted.
        expected: StateExpectation,
    },
    /// A revision condition failed; nothing was changed.
    #[error("{kind} {id} is at revision {actual}, expected {expected}")]
    InvalidRevision {
        /// The object's kind.
        kind: ObjectKind,
        /// The object's id.
        id: String,
        /// Its current revision.
        actual: u64,
        /// The revision the caller expected.
        expected: u64,
    },
    /// The object is in a terminal state and cannot change any more.
    #[error("{kind} {id} is already in terminal state {state}")]
    AlreadyTerminal {
        /// The object's kind.
        kind: ObjectKind,
        /// The object's id.
        id: String,
        /// Its terminal state.
        state: AnyState,
    },
    /// A checkpoint name was empty or only whitespace.
    #[error("checkpoint name must not be blank")]
    BlankCheckpointName,
    /// A checkpoint was set beyond the newest entry of the event log.
    #[error("checkpoint {name} cannot be set to {seq}: the event log ends at {head}")]
    CheckpointBeyondHead {
        /// The checkpoint's name.
        name: String,
        /// The requested sequence number.
        seq: u64,
        /// The newest committed sequence number.
        head: u64,
    },
    /// The store was closed.
    #[error("the store is closed")]
    Closed,
    /// A plain write was called from the task that holds an open transaction on the
    /// same store: it would wait for that transaction, that is for itself.
    #[error(
        "this task holds an open transaction on the store: write through the transaction, or commit or drop it first"
    )]
    TransactionHeld,
    /// A step of this transaction failed, so it cannot commit (a failed step may have
    /// queued part of its writes); roll it back or drop it.
    #[error("the transaction cannot commit: an earlier step failed ({first_error})")]
    TransactionAborted {
        /// The first failed step's error.
        first_error: String,
    },
    /// A field of the input is invalid; nothing was written.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// A job id prefix matches more than one job.
    #[error("job id prefix {prefix:?} matches several jobs: {}", ids.iter().map(|i| i.as_str()).collect::<Vec<_>>().join(", "))]
    MultipleJobsFound {
        /// The prefix given.
        prefix: String,
        /// Some of the matching ids.
        ids: Vec<JobId>,
    },
    /// A pagination token could not be read.
    #[error("invalid page token {token:?}: {reason}")]
    InvalidToken {
        /// The token given.
        token: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The event-log position asked for has been deleted by retention.
    #[error("event log position {requested} was compacted away; the oldest entry is {oldest}")]
    Compacted {
        /// The first sequence number asked for.
        requested: u64,
        /// The oldest sequence number still stored.
        oldest: u64,
    },
    /// The job was purged to an archive file.
    #[error("job {id} was purged to archive {file}")]
    Archived {
        /// The job's id.
        id: String,
        /// The archive file holding it.
        file: String,
    },
    /// A create named a job id that was purged: the archive keeps it, so it cannot be
    /// used again (a new job would shadow the archived one for `get_job` and `brine
    /// archive get`).
    #[error("job {id} already purged, archived in {file}: its id cannot be used again")]
    AlreadyPurged {
        /// The job's id.
        id: String,
        /// The archive file holding it.
        file: String,
    },
    /// A stored value or key does not decode.
    #[error("corrupt value in {cf} at key {key}: {reason}")]
    Corrupt {
        /// The column family, table or map holding it.
        cf: String,
        /// The key, printable.
        key: String,
        /// Why it does not decode.
        reason: String,
    },
    /// A write or its fsync failed earlier (a full disk, an I/O error); the store
    /// refuses further writes until it is reopened. Reads go on, and every write
    /// acknowledged before the failure is kept.
    #[error("the store refuses writes after a failed write (reopen it once the cause is fixed): {reason}")]
    Poisoned {
        /// The original failure.
        reason: String,
    },
    /// The store is past its space quota (`BRINE_QUOTA_BYTES`): like etcd's NOSPACE
    /// alarm, writes that add data are refused until an operator frees space (purge,
    /// delete, compact) and disarms the alarm; reads, deletes, purges, checkpoints and
    /// retention go on. The alarm is recorded in the store and survives a restart.
    #[error(
        "no space: the store holds {size} bytes, past its quota of {quota}; writes that add data are refused \
         until space is freed (purge, delete, compact) and the alarm disarmed (brine db alarm disarm)"
    )]
    NoSpace {
        /// The store's size when the alarm was raised, in bytes.
        size: u64,
        /// The quota, in bytes.
        quota: u64,
    },
    /// The backend cannot do this (a fault it cannot represent, say).
    #[error("not supported by this backend: {what}")]
    Unsupported {
        /// What was asked.
        what: String,
    },
    /// The storage engine failed.
    #[error("{context}: {source}")]
    Backend {
        /// What the store was doing.
        context: String,
        /// The engine's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

impl StoreError {
    /// A not-found error.
    pub fn not_found(kind: ObjectKind, id: impl fmt::Display) -> Self {
        StoreError::NotFound { kind, id: id.to_string() }
    }

    /// An already-exists error.
    pub fn already_exists(kind: ObjectKind, id: impl fmt::Display) -> Self {
        StoreError::AlreadyExists { kind, id: id.to_string() }
    }

    /// A backend error with context.
    pub fn backend(context: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Backend { context: context.into(), source: Box::new(source) }
    }

    /// Whether the object does not exist (never did, or was deleted meanwhile).
    /// A purged job is [`StoreError::is_archived`] instead.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }

    /// Whether a write was refused because of the object's current state or revision:
    /// a condition failed, or the object is terminal already. Nothing was changed;
    /// another writer usually got there first, so re-reading shows why.
    pub fn is_conflict(&self) -> bool {
        matches!(
            self,
            StoreError::InvalidState { .. } | StoreError::InvalidRevision { .. } | StoreError::AlreadyTerminal { .. }
        )
    }

    /// Whether a create was refused because the id (or a job's name) is taken, by a
    /// stored object or by a purged job ([`StoreError::AlreadyPurged`]).
    pub fn is_already_exists(&self) -> bool {
        matches!(self, StoreError::AlreadyExists { .. } | StoreError::AlreadyPurged { .. })
    }

    /// Whether the caller's input was refused (a field, a page token, a checkpoint
    /// name or position, an ambiguous prefix); nothing was written, and retrying the
    /// same call fails the same way.
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            StoreError::Invalid(_)
                | StoreError::InvalidToken { .. }
                | StoreError::BlankCheckpointName
                | StoreError::CheckpointBeyondHead { .. }
                | StoreError::MultipleJobsFound { .. }
        )
    }

    /// Whether the job was purged to an archive file (read it there).
    pub fn is_archived(&self) -> bool {
        matches!(self, StoreError::Archived { .. } | StoreError::AlreadyPurged { .. })
    }

    /// Whether retention deleted the event-log entries asked for.
    pub fn is_compacted(&self) -> bool {
        matches!(self, StoreError::Compacted { .. })
    }

    /// Whether stored data does not decode: the store needs checking or repair.
    pub fn is_corrupt(&self) -> bool {
        matches!(self, StoreError::Corrupt { .. })
    }

    /// Whether the store takes no more writes until it is reopened: closed, or
    /// poisoned by a failed write.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Closed | StoreError::Poisoned { .. })
    }

    /// Whether the store is past its space quota: writes that add data wait for an
    /// operator to free space and disarm the alarm.
    pub fn is_no_space(&self) -> bool {
        matches!(self, StoreError::NoSpace { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variant, each in exactly the classes it belongs to.
    #[test]
    fn each_error_is_in_its_classes() {
        type Class = fn(&StoreError) -> bool;
        let classes: [(&str, Class); 9] = [
            ("not_found", StoreError::is_not_found),
            ("conflict", StoreError::is_conflict),
            ("already_exists", StoreError::is_already_exists),
            ("invalid_input", StoreError::is_invalid_input),
            ("archived", StoreError::is_archived),
            ("compacted", StoreError::is_compacted),
            ("corrupt", StoreError::is_corrupt),
            ("unavailable", StoreError::is_unavailable),
            ("no_space", StoreError::is_no_space),
        ];
        let s = String::new;
        let cases: Vec<(StoreError, &[&str])> = vec![
            (StoreError::not_found(ObjectKind::Job, "j"), &["not_found"]),
            (StoreError::already_exists(ObjectKind::Job, "j"), &["already_exists"]),
            (
                StoreError::InvalidState {
                    kind: ObjectKind::Job,
                    id: s(),
                    actual: JobState::Running.into(),
                    expected: StateExpectation::OneOf(vec![]),
                },
                &["conflict"],
            ),
            (StoreError::InvalidRevision { kind: ObjectKind::Job, id: s(), actual: 2, expected: 1 }, &["conflict"]),
            (
                StoreError::AlreadyTerminal { kind: ObjectKind::Job, id: s(), state: JobState::Failed.into() },
                &["conflict"],
            ),
            (StoreError::BlankCheckpointName, &["invalid_input"]),
            (StoreError::CheckpointBeyondHead { name: s(), seq: 2, head: 1 }, &["invalid_input"]),
            (StoreError::Invalid(brine_model::JobId::new("").unwrap_err()), &["invalid_input"]),
            (StoreError::MultipleJobsFound { prefix: s(), ids: vec![] }, &["invalid_input"]),
            (StoreError::InvalidToken { token: s(), reason: s() }, &["invalid_input"]),
            (StoreError::Compacted { requested: 1, oldest: 2 }, &["compacted"]),
            (StoreError::Archived { id: s(), file: s() }, &["archived"]),
            (StoreError::AlreadyPurged { id: s(), file: s() }, &["already_exists", "archived"]),
            (StoreError::Corrupt { cf: s(), key: s(), reason: s() }, &["corrupt"]),
            (StoreError::Closed, &["unavailable"]),
            (StoreError::Poisoned { reason: s() }, &["unavailable"]),
            (StoreError::NoSpace { size: 2, quota: 1 }, &["no_space"]),
            (StoreError::TransactionHeld, &[]),
            (StoreError::TransactionAborted { first_error: s() }, &[]),
            (StoreError::Unsupported { what: s() }, &[]),
            (StoreError::backend("x", std::io::Error::other("y")), &[]),
        ];
        for (error, expected) in &cases {
            let got: Vec<&str> = classes.iter().filter(|(_, f)| f(error)).map(|(n, _)| *n).collect();
            assert_eq!(&got, expected, "{error:?}");
        }
    }
}
