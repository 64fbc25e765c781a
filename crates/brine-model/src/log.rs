//! Entries of the event log that watchers follow.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Evaluation, Event, Execution, Job, Timestamp};

/// What kind of change an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Operation {
    /// The object was created.
    Create,
    /// The object was changed.
    Update,
    /// The object was deleted.
    Delete,
}

impl Operation {
    /// Every operation.
    pub const ALL: [Operation; 3] = [Operation::Create, Operation::Update, Operation::Delete];
}

/// What kind of object an entry is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ObjectType {
    /// An [`Execution`].
    Execution,
    /// A [`Job`].
    Job,
    /// An [`Evaluation`].
    Evaluation,
    /// Something appended by a caller, not by the store itself.
    Custom,
}

impl ObjectType {
    /// Every object type.
    pub const ALL: [ObjectType; 4] =
        [ObjectType::Execution, ObjectType::Job, ObjectType::Evaluation, ObjectType::Custom];
}

macro_rules! display_from_debug {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self, f)
            }
        }
    )*};
}
display_from_debug!(Operation, ObjectType);

impl FromStr for ObjectType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|t| t.to_string().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown object type {s:?}"))
    }
}

impl FromStr for Operation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|t| t.to_string().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown operation {s:?}"))
    }
}

/// The object of an entry: the value after the change, the value before it, and the
/// history events written with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogObject {
    /// An execution change.
    Execution {
        /// After the change (`None` for a delete).
        current: Option<Box<Execution>>,
        /// Before the change (`None` for a create).
        previous: Option<Box<Execution>>,
        /// History events written in the same commit.
        events: Vec<Event>,
    },
    /// A job change.
    Job {
        /// After the change (`None` for a delete).
        current: Option<Box<Job>>,
        /// Before the change (`None` for a create).
        previous: Option<Box<Job>>,
        /// History events written in the same commit.
        events: Vec<Event>,
    },
    /// An evaluation change.
    Evaluation {
        /// After the change (`None` for a delete).
        current: Option<Box<Evaluation>>,
        /// Before the change (`None` for a create).
        previous: Option<Box<Evaluation>>,
    },
    /// A caller's own entry.
    Custom {
        /// The caller's kind of entry.
        kind: String,
        /// The caller's payload, usually JSON text.
        data: String,
    },
}

impl LogObject {
    /// The object type this object belongs to.
    pub fn object_type(&self) -> ObjectType {
        match self {
            LogObject::Execution { .. } => ObjectType::Execution,
            LogObject::Job { .. } => ObjectType::Job,
            LogObject::Evaluation { .. } => ObjectType::Evaluation,
            LogObject::Custom { .. } => ObjectType::Custom,
        }
    }
}

/// One committed entry of the event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Sequence number: from 1, gap-free, in commit order.
    pub seq: u64,
    /// What kind of change.
    pub operation: Operation,
    /// What kind of object.
    pub object_type: ObjectType,
    /// The object.
    pub object: LogObject,
    /// When it was committed.
    pub timestamp: Timestamp,
}
