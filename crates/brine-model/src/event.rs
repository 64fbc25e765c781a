//! History events of executions and jobs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{ExecutionId, JobId, Timestamp};

/// One entry in the history of an execution or job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// What happened, for people.
    pub message: String,
    /// The subsystem that reported it, e.g. `Scheduling` or `Exec`.
    pub topic: String,
    /// When it happened.
    pub timestamp: Timestamp,
    /// Structured details.
    pub details: BTreeMap<String, String>,
}

impl Event {
    /// An event with a topic and message at `timestamp`, without details.
    pub fn new(topic: impl Into<String>, message: impl Into<String>, timestamp: Timestamp) -> Self {
        Event { message: message.into(), topic: topic.into(), timestamp, details: BTreeMap::new() }
    }

    /// Adds one detail.
    pub fn with_detail(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.details.insert(key.into(), value.into());
        self
    }
}

/// Whether a history entry is about the job itself or one of its executions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HistoryLevel {
    /// About the job.
    Job,
    /// About one execution of the job.
    Execution,
}

/// One entry of a job's history on the requester.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobHistory {
    /// Position in the store's history sequence: increasing in commit order.
    pub seq: u64,
    /// Job-level or execution-level.
    pub level: HistoryLevel,
    /// The job.
    pub job_id: JobId,
    /// The job's spec version when the entry was written.
    pub job_version: u64,
    /// The execution, for execution-level entries.
    pub execution_id: Option<ExecutionId>,
    /// What happened.
    pub event: Event,
    /// When the store recorded it.
    pub time: Timestamp,
}
