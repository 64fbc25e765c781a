//! The errors of recovery: a policy that does not validate, or a store that fails.

use std::fmt;

use brine_store::model::{ExecutionState, JobType};
use brine_store::StoreError;

/// What is wrong with a policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// The text is not TOML or JSON, or a field is missing, unknown or of the wrong type.
    #[error("{message}")]
    Syntax {
        /// The parser's message.
        message: String,
    },
    /// An unknown preset name.
    #[error("unknown preset {value:?} (expected one of: {})", crate::PRESETS.join(", "))]
    UnknownPreset {
        /// The name given.
        value: String,
    },
    /// An unknown execution state.
    #[error(
        "unknown execution state {value:?} (expected a state name such as Running or \
         ExecutionStateRunning, or live, terminal, *)"
    )]
    UnknownState {
        /// The state given.
        value: String,
    },
    /// An unknown job type.
    #[error("unknown job type {value:?} (expected batch, ops, service, daemon or *)")]
    UnknownJobType {
        /// The job type given.
        value: String,
    },
    /// An unknown action.
    #[error(
        "unknown action {value:?} (expected no-action, mark-failed, requeue, delete-older-than or fail-older-than)"
    )]
    UnknownAction {
        /// The action given.
        value: String,
    },
    /// An age that does not parse, or is zero.
    #[error("bad age {value:?}: {reason} (write it as 90s, 15m, 12h, 30d, 2w)")]
    BadDuration {
        /// The age given.
        value: String,
        /// Why it is bad.
        reason: String,
    },
    /// An action that needs an age has none.
    #[error("{action} needs an age (age = \"30d\")")]
    MissingAge {
        /// The action.
        action: String,
    },
    /// A field the action does not take.
    #[error("{field} does not apply to {action}")]
    UnusedField {
        /// The field.
        field: &'static str,
        /// The action.
        action: &'static str,
    },
    /// A table that marks failed in `Created` what it requeues there.
    #[error(
        "{job_type} executions are requeued to Created, where this policy marks them failed: \
         a second run would undo the first (use fail-older-than or no-action for Created)"
    )]
    UndoesRequeue {
        /// The job type.
        job_type: JobType,
    },
    /// An action that makes no sense for its cell.
    #[error("{action} does not apply to {job_type} executions in {state}: {reason}")]
    NotApplicable {
        /// The action.
        action: &'static str,
        /// The job type of the cell.
        job_type: JobType,
        /// The state of the cell.
        state: ExecutionState,
        /// Why not.
        reason: &'static str,
    },
}

/// A policy that does not validate: the problem, and the line of the file it is on
/// (none for a table built in code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The 1-based line of the policy file.
    pub line: Option<usize>,
    /// What is wrong.
    pub problem: Problem,
}

impl PolicyError {
    pub(crate) fn new(line: Option<usize>, problem: Problem) -> Self {
        PolicyError { line, problem }
    }

    pub(crate) fn at(mut self, line: usize) -> Self {
        self.line = Some(line);
        self
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "policy line {line}: {}", self.problem),
            None => write!(f, "policy: {}", self.problem),
        }
    }
}

impl std::error::Error for PolicyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.problem)
    }
}

/// Why recovery failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecoveryError {
    /// The policy does not validate.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The store failed.
    #[error("recovery: {0}")]
    Store(#[from] StoreError),
    /// Options that cannot work.
    #[error("recovery option {option}: {reason}")]
    Options {
        /// The option.
        option: &'static str,
        /// Why.
        reason: String,
    },
}
