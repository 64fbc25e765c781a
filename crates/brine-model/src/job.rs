//! Jobs: what a requester node schedules, with their states and queue statuses.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{validate_name, InvalidReason, JobId, StateCode, Timestamp, ValidationError, MAX_ID_LEN};

/// The kind of job, which decides what happens to its executions on restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[repr(u8)]
pub enum JobType {
    /// Runs to completion once.
    #[default]
    Batch = 0,
    /// Runs once on every matching node.
    Ops = 1,
    /// Long-running, kept at a count.
    Service = 2,
    /// Long-running, one on every matching node.
    Daemon = 3,
}

impl JobType {
    /// Every job type, in code order.
    pub const ALL: [JobType; 4] = [JobType::Batch, JobType::Ops, JobType::Service, JobType::Daemon];

    /// The stable one-byte code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The job type for a code.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code)).copied()
    }

    /// The lower-case name used in policy files.
    pub fn as_str(self) -> &'static str {
        match self {
            JobType::Batch => "batch",
            JobType::Ops => "ops",
            JobType::Service => "service",
            JobType::Daemon => "daemon",
        }
    }
}

impl fmt::Display for JobType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|t| t.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown job type {s:?} (expected batch, ops, service or daemon)"))
    }
}

/// The requester-side state of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum JobState {
    /// Submitted, not yet scheduled.
    Pending = 0,
    /// Waiting in a queue.
    Queued = 1,
    /// Being worked on (the queue's `in-progress`).
    Running = 2,
    /// Finished successfully.
    Completed = 3,
    /// Finished unsuccessfully.
    Failed = 4,
    /// Stopped by a user.
    Stopped = 5,
    /// Not accessed for too long.
    Expired = 6,
}

impl JobState {
    /// Every state, in code order.
    pub const ALL: [JobState; 7] = [
        JobState::Pending,
        JobState::Queued,
        JobState::Running,
        JobState::Completed,
        JobState::Failed,
        JobState::Stopped,
        JobState::Expired,
    ];

    /// The state's name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "Pending",
            JobState::Queued => "Queued",
            JobState::Running => "Running",
            JobState::Completed => "Completed",
            JobState::Failed => "Failed",
            JobState::Stopped => "Stopped",
            JobState::Expired => "Expired",
        }
    }

    /// The PostgreSQL queue status this state maps to (`compute.jobs`), if any.
    pub fn queue_status(self) -> Option<QueueStatus> {
        match self {
            JobState::Queued => Some(QueueStatus::Queued),
            JobState::Running => Some(QueueStatus::InProgress),
            JobState::Completed => Some(QueueStatus::Complete),
            JobState::Failed => Some(QueueStatus::Failed),
            JobState::Expired => Some(QueueStatus::Expired),
            JobState::Pending | JobState::Stopped => None,
        }
    }

    /// See [`StateCode::code`].
    pub fn code(self) -> u8 {
        StateCode::code(self)
    }

    /// See [`StateCode::is_terminal`].
    pub fn is_terminal(self) -> bool {
        StateCode::is_terminal(self)
    }

    /// See [`StateCode::from_code`].
    pub fn from_code(code: u8) -> Option<Self> {
        StateCode::from_code(code)
    }
}

impl StateCode for JobState {
    const ALL: &'static [Self] = &JobState::ALL;

    fn code(self) -> u8 {
        self as u8
    }

    fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code)).copied()
    }

    fn is_terminal(self) -> bool {
        matches!(self, JobState::Completed | JobState::Failed | JobState::Stopped | JobState::Expired)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
            .or_else(|| s.parse::<QueueStatus>().ok().map(JobState::from))
            .ok_or_else(|| format!("unknown job state {s:?}"))
    }
}

/// The status column of the `compute.jobs` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum QueueStatus {
    /// `queued`
    Queued,
    /// `in-progress`
    InProgress,
    /// `complete`
    Complete,
    /// `failed`
    Failed,
    /// `expired`
    Expired,
}

impl QueueStatus {
    /// Every status.
    pub const ALL: [QueueStatus; 5] = [
        QueueStatus::Queued,
        QueueStatus::InProgress,
        QueueStatus::Complete,
        QueueStatus::Failed,
        QueueStatus::Expired,
    ];

    /// The exact string stored in the `status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueStatus::Queued => "queued",
            QueueStatus::InProgress => "in-progress",
            QueueStatus::Complete => "complete",
            QueueStatus::Failed => "failed",
            QueueStatus::Expired => "expired",
        }
    }
}

impl From<QueueStatus> for JobState {
    fn from(s: QueueStatus) -> JobState {
        match s {
            QueueStatus::Queued => JobState::Queued,
            QueueStatus::InProgress => JobState::Running,
            QueueStatus::Complete => JobState::Completed,
            QueueStatus::Failed => JobState::Failed,
            QueueStatus::Expired => JobState::Expired,
        }
    }
}

impl FromStr for QueueStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.iter().copied().find(|q| q.as_str() == s).ok_or_else(|| format!("unknown queue status {s:?}"))
    }
}

impl fmt::Display for QueueStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job state with the reason it was entered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStateInfo {
    /// The state.
    pub state: JobState,
    /// Why.
    pub message: String,
}

/// A job as the requester stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// The job's id.
    pub id: JobId,
    /// Name, unique within the namespace.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Kind of job.
    pub job_type: JobType,
    /// Scheduling priority, higher first.
    pub priority: i32,
    /// How many executions to run.
    pub count: u32,
    /// Labels, matched by label selectors.
    pub labels: BTreeMap<String, String>,
    /// Free-form metadata.
    pub meta: BTreeMap<String, String>,
    /// Task spec or queue config: opaque JSON text.
    pub config: String,
    /// Queue the job was submitted to, for queued jobs.
    pub queue: Option<String>,
    /// Names of the files given to the job.
    pub input_files: Vec<String>,
    /// Names of the files the job made.
    pub output_files: Vec<String>,
    /// Current state.
    pub state: JobStateInfo,
    /// Spec version: 1 on create, bumped when the spec is updated.
    pub version: u64,
    /// Bumped by exactly one on every change; 1 after creation.
    pub revision: u64,
    /// Set by the store on create.
    pub create_time: Timestamp,
    /// Set by the store on every change.
    pub modify_time: Timestamp,
    /// When the job was taken from its queue.
    pub grabbed_time: Option<Timestamp>,
    /// When the job finished.
    pub finished_time: Option<Timestamp>,
    /// When the job was last read or changed through the queue API.
    pub last_accessed_time: Timestamp,
}

/// The longest queue name (`compute.jobs`: `VARCHAR(32)`).
pub const MAX_QUEUE_LEN: usize = 32;

impl Job {
    /// A new pending batch job in the `default` namespace; the store sets the rest.
    pub fn new(id: JobId, name: impl Into<String>) -> Self {
        Job {
            id,
            name: name.into(),
            namespace: "default".to_owned(),
            job_type: JobType::Batch,
            priority: 0,
            count: 1,
            labels: BTreeMap::new(),
            meta: BTreeMap::new(),
            config: String::new(),
            queue: None,
            input_files: Vec::new(),
            output_files: Vec::new(),
            state: JobStateInfo { state: JobState::Pending, message: String::new() },
            version: 0,
            revision: 0,
            create_time: Timestamp::ZERO,
            modify_time: Timestamp::ZERO,
            grabbed_time: None,
            finished_time: None,
            last_accessed_time: Timestamp::ZERO,
        }
    }

    /// The current state.
    pub fn state(&self) -> JobState {
        self.state.state
    }

    /// Checks the fields that become key parts: namespace, name, queue, labels (keys
    /// follow the id rule; values may be empty or hold spaces, but no NUL, and are at
    /// most 255 bytes, as they are part of the label index's keys).
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_name("namespace", &self.namespace, MAX_ID_LEN)?;
        validate_name("name", &self.name, MAX_ID_LEN)?;
        if let Some(queue) = &self.queue {
            validate_queue(queue)?;
        }
        for (key, value) in &self.labels {
            validate_name("label key", key, MAX_ID_LEN)?;
            validate_label_value(value)?;
        }
        Ok(())
    }
}

/// Checks a label value: at most [`MAX_ID_LEN`] bytes, no NUL (empty is allowed).
pub fn validate_label_value(value: &str) -> Result<(), ValidationError> {
    let reason = if value.len() > MAX_ID_LEN {
        InvalidReason::TooLong { len: value.len(), max: MAX_ID_LEN }
    } else if value.contains('\0') {
        InvalidReason::ContainsNul
    } else {
        return Ok(());
    };
    Err(ValidationError::new("label value", value, reason))
}

/// Checks a queue name: the id rule, at most 32 bytes.
pub fn validate_queue(queue: &str) -> Result<(), ValidationError> {
    validate_name("queue", queue, MAX_QUEUE_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_statuses_map_onto_states() {
        for status in QueueStatus::ALL {
            let state = JobState::from(status);
            assert_eq!(state.queue_status(), Some(status));
            assert_eq!(status.as_str().parse::<QueueStatus>(), Ok(status));
            assert_eq!(status.as_str().parse::<JobState>(), Ok(state));
        }
        assert_eq!(JobState::Pending.queue_status(), None);
    }

    #[test]
    fn terminal_job_states() {
        let terminal: Vec<_> = JobState::ALL.into_iter().filter(|s| s.is_terminal()).collect();
        assert_eq!(terminal, [JobState::Completed, JobState::Failed, JobState::Stopped, JobState::Expired]);
    }

    #[test]
    fn validate_names_each_field() {
        let mut job = Job::new(JobId::new("j1").unwrap(), "name");
        assert!(job.validate().is_ok());
        job.queue = Some("q".repeat(33));
        assert_eq!(job.validate().unwrap_err().field, "queue");
        job.queue = None;
        job.namespace = "bad ns".into();
        assert_eq!(job.validate().unwrap_err().field, "namespace");
        job.namespace = "ns".into();
        job.name = String::new();
        assert_eq!(job.validate().unwrap_err().field, "name");
        job.name = "name".into();
        job.labels.insert("tier".into(), "a\0b".into());
        assert_eq!(job.validate().unwrap_err().field, "label value");
        job.labels.insert("tier".into(), "v".repeat(256));
        assert_eq!(job.validate().unwrap_err().field, "label value");
        job.labels.insert("tier".into(), "gold plated".into());
        assert!(job.validate().is_ok(), "spaces and empty values are fine in label values");
        job.labels.insert("empty".into(), String::new());
        assert!(job.validate().is_ok());
    }

    #[test]
    fn job_types_parse() {
        assert_eq!("Service".parse::<JobType>(), Ok(JobType::Service));
        assert!("cron".parse::<JobType>().is_err());
        assert_eq!(JobType::from_code(3), Some(JobType::Daemon));
    }
}
