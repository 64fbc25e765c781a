//! Evaluations: requests to (re)schedule a job.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{EvaluationId, JobId, Timestamp, ValidationError};

/// Progress of an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum EvaluationStatus {
    /// Waiting to be processed.
    #[default]
    Pending,
    /// Waiting for resources.
    Blocked,
    /// Processed.
    Complete,
    /// Processing failed.
    Failed,
    /// No longer needed.
    Cancelled,
}

impl fmt::Display for EvaluationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A request to evaluate a job's placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evaluation {
    /// The evaluation's id.
    pub id: EvaluationId,
    /// Namespace of the job.
    pub namespace: String,
    /// The job to evaluate.
    pub job_id: JobId,
    /// What triggered it, e.g. `job-register` or `node-update`.
    pub triggered_by: String,
    /// Scheduling priority.
    pub priority: i32,
    /// Scheduler type, usually the job type.
    pub eval_type: String,
    /// Progress.
    pub status: EvaluationStatus,
    /// Free-form comment.
    pub comment: String,
    /// Do not process before this time.
    pub wait_until: Option<Timestamp>,
    /// Set by the store on create.
    pub create_time: Timestamp,
    /// Set by the store on every change.
    pub modify_time: Timestamp,
}

impl Evaluation {
    /// A pending evaluation of `job_id`; the store sets the times.
    pub fn new(id: EvaluationId, namespace: impl Into<String>, job_id: JobId) -> Self {
        Evaluation {
            id,
            namespace: namespace.into(),
            job_id,
            triggered_by: String::new(),
            priority: 0,
            eval_type: String::new(),
            status: EvaluationStatus::Pending,
            comment: String::new(),
            wait_until: None,
            create_time: Timestamp::ZERO,
            modify_time: Timestamp::ZERO,
        }
    }

    /// Checks the fields that become key parts.
    pub fn validate(&self) -> Result<(), ValidationError> {
        crate::validate_name("namespace", &self.namespace, crate::MAX_ID_LEN)
    }
}
