//! Every key Brine writes to RocksDB, once: the layout of each column family's keys
//! ([`key_layout`]), a typed encoder for each key and prefix, the decoders, and the
//! `meta` keys ([`meta`]).
//!
//! Nothing else in Brine builds or slices key bytes: the stores, `check`, `repair`,
//! `inspect`, `migrate` and the benches call these functions. [`key_layout`] is the
//! contract `docs/FORMAT.md` shows (a tidy test compares the two), and this module's
//! tests check every encoder against it. Parts are those of `brine_store::keys`:
//! `str(x)` is the bytes of `x` and a `0x00` separator, `last(x)` the bytes of a final
//! string, `u64(x)` eight big-endian bytes, `u8(x)` one byte.

use brine_store::keys::{KeyBuilder, KeyReader};
use brine_store::model::{EvaluationId, ExecutionId, ExecutionState, JobId, JobState, JobType, NodeId, Timestamp};
use brine_store::rules::{JobIndex, JobScan};
use brine_store::{JobSort, Result, StoreError};

use crate::cf::Cf;

/// The layout of `cf`'s keys, as `docs/FORMAT.md` shows it.
pub fn key_layout(cf: Cf) -> &'static str {
    match cf {
        Cf::Executions => "last(execution_id)",
        Cf::ExecutionEvents => "str(execution_id) u64(history_seq)",
        Cf::IdxExecutionsByJobId => "str(job_id) last(execution_id)",
        Cf::IdxExecutionsByState => "u8(state) last(execution_id)",
        Cf::IdxExecutionsByNode => "str(node_id) last(execution_id)",
        Cf::Events => "u64(seq)",
        Cf::Checkpoints => "last(name)",
        Cf::Meta => "see below",
        Cf::Jobs => "last(job_id)",
        Cf::JobVersions => "str(job_id) u64(version)",
        Cf::JobHistory => "str(job_id) u64(history_seq)",
        Cf::Evaluations => "last(evaluation_id)",
        Cf::IdxJobsByName => "str(namespace) last(name)",
        Cf::IdxJobsByCreate => "u64(create_time) last(job_id)",
        Cf::IdxJobsByModify => "u64(modify_time) last(job_id)",
        Cf::IdxJobsByNamespaceCreate => "str(namespace) u64(create_time) last(job_id)",
        Cf::IdxJobsByNamespaceModify => "str(namespace) u64(modify_time) last(job_id)",
        Cf::IdxJobsInProgress => "u8(job_type) last(job_id)",
        Cf::IdxJobsQueued => "str(queue) u64(create_time) last(job_id)",
        Cf::IdxJobsIdle => "u64(last_accessed_time) last(job_id)",
        Cf::IdxJobsByStateCreate => "u8(job_state) u64(create_time) last(job_id)",
        Cf::IdxJobsByStateModify => "u8(job_state) u64(modify_time) last(job_id)",
        Cf::IdxJobsByLabelCreate => "str(label_key) str(label_value) u64(create_time) last(job_id)",
        Cf::IdxJobsByLabelModify => "str(label_key) str(label_value) u64(modify_time) last(job_id)",
        Cf::IdxEvaluationsByJob => "str(job_id) last(evaluation_id)",
        Cf::PurgedJobs => "last(job_id)",
    }
}

/// One part of a key layout, with its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// A string and its separator.
    Str(&'static str),
    /// A final string.
    Last(&'static str),
    /// A big-endian `u64`.
    U64(&'static str),
    /// One byte.
    U8(&'static str),
}

/// The parts of `cf`'s key layout (none for `meta`, whose keys are listed in [`meta`]),
/// read from [`key_layout`] once per process.
pub fn parts(cf: Cf) -> &'static [Part] {
    static PARTS: std::sync::OnceLock<Vec<Vec<Part>>> = std::sync::OnceLock::new();
    let all = PARTS.get_or_init(|| Cf::ALL.iter().map(|cf| parse_layout(key_layout(*cf))).collect());
    Cf::ALL.iter().position(|c| *c == cf).map_or(&[], |i| all[i].as_slice())
}

fn parse_layout(layout: &'static str) -> Vec<Part> {
    layout
        .split(' ')
        .filter_map(|part| {
            let (kind, rest) = part.split_once('(')?;
            let name = rest.strip_suffix(')')?;
            Some(match kind {
                "str" => Part::Str(name),
                "last" => Part::Last(name),
                "u64" => Part::U64(name),
                "u8" => Part::U8(name),
                _ => return None,
            })
        })
        .collect()
}

/// A part's value in a decoded key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'k> {
    /// A `str` or `last` part.
    Str(&'k str),
    /// A `u64` part.
    U64(u64),
    /// A `u8` part.
    U8(u8),
}

/// A key decoded by its family's layout: each part's name and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded<'k>(Vec<(&'static str, Value<'k>)>);

impl<'k> Decoded<'k> {
    /// The string part called `name`.
    pub fn str(&self, name: &str) -> Option<&'k str> {
        self.0.iter().find_map(|(n, v)| match v {
            Value::Str(s) if *n == name => Some(*s),
            _ => None,
        })
    }

    /// The `u64` part called `name`.
    pub fn u64(&self, name: &str) -> Option<u64> {
        self.0.iter().find_map(|(n, v)| match v {
            Value::U64(x) if *n == name => Some(*x),
            _ => None,
        })
    }

    /// The `u8` part called `name`.
    pub fn u8(&self, name: &str) -> Option<u8> {
        self.0.iter().find_map(|(n, v)| match v {
            Value::U8(x) if *n == name => Some(*x),
            _ => None,
        })
    }

    /// Every part, in key order.
    pub fn parts(&self) -> &[(&'static str, Value<'k>)] {
        &self.0
    }
}

/// Decodes `key` by `cf`'s layout; the error says what does not fit.
pub fn decode(cf: Cf, key: &[u8]) -> std::result::Result<Decoded<'_>, String> {
    if cf == Cf::Meta {
        return Err("meta keys are names, not a layout".into());
    }
    let mut r = KeyReader::new(key);
    let mut out = Vec::new();
    for part in parts(cf) {
        let (name, value) = match *part {
            Part::Str(n) => (n, r.str().map(Value::Str)),
            Part::Last(n) => (n, r.last_str().map(Value::Str)),
            Part::U64(n) => (n, r.u64().map(Value::U64)),
            Part::U8(n) => (n, r.u8().map(Value::U8)),
        };
        out.push((name, value.map_err(|e| format!("{name}: {}", e.reason))?));
    }
    r.end().map_err(|e| e.reason)?;
    Ok(Decoded(out))
}

/// Decodes `key` by `cf`'s layout into a `Corrupt` error when it does not fit.
pub(crate) fn decode_or_corrupt(cf: Cf, key: &[u8]) -> Result<Decoded<'_>> {
    decode(cf, key).map_err(|reason| corrupt_key(cf, key, &reason))
}

/// The error for a key of `cf` that does not decode.
pub(crate) fn corrupt_key(cf: Cf, key: &[u8], reason: &str) -> StoreError {
    StoreError::Corrupt { cf: cf.name().to_owned(), key: brine_store::keys::printable(key), reason: reason.to_owned() }
}

/// The `meta` family's keys (`docs/FORMAT.md` lists each with its value).
pub mod meta {
    use brine_store::keys::KeyBuilder;

    /// Schema version (`u64`).
    pub const SCHEMA_VERSION: &[u8] = b"schema_version";
    /// `compute` or `requester` (string).
    pub const STORE_KIND: &[u8] = b"store_kind";
    /// Node id given at creation (string).
    pub const NODE_ID: &[u8] = b"node_id";
    /// The store's id, made when it is created (or first opened by a build that keeps
    /// one) and never changed (string).
    pub const STORE_ID: &[u8] = b"store_id";
    /// Newest event-log sequence number (`u64`).
    pub const LOG_HEAD: &[u8] = b"log_head";
    /// Highest event-log sequence number deleted by retention (`u64`).
    pub const LOG_TRIMMED: &[u8] = b"log_trimmed";
    /// Last sequence number of per-record history keys (`u64`).
    pub const HISTORY_SEQ: &[u8] = b"history_seq";
    /// `1` while a process has the store open, `0` after a clean close (`u64`).
    pub const OPEN: &[u8] = b"open";
    /// The NOSPACE alarm, while raised: a JSON string `{"raised_at", "size", "quota"}`
    /// (see the quota in `engine`).
    pub const NOSPACE_ALARM: &[u8] = b"nospace_alarm";
    /// Prefix of the per-state counters.
    const COUNT_PREFIX: &[u8] = b"count/";
    /// The part before the version of a migration record.
    const MIGRATED: &str = "migrated";

    /// The counter of executions in the state with `code` (`u64`): `count/` + `u8`.
    pub fn count(code: u8) -> Vec<u8> {
        [COUNT_PREFIX, &[code]].concat()
    }

    /// When `brine migrate up` finished the step to `version` (`u64` nanoseconds):
    /// `str("migrated") u64(version)`.
    pub fn migrated(version: u64) -> Vec<u8> {
        KeyBuilder::new().str(MIGRATED).u64(version).build()
    }

    /// Whether the value under `key` is a string (else a `u64`).
    pub fn holds_text(key: &[u8]) -> bool {
        [STORE_KIND, NODE_ID, STORE_ID, NOSPACE_ALARM].contains(&key)
    }

    /// The names of the fixed keys, for documentation checks.
    pub const NAMES: [&[u8]; 9] =
        [SCHEMA_VERSION, STORE_KIND, NODE_ID, STORE_ID, LOG_HEAD, LOG_TRIMMED, HISTORY_SEQ, OPEN, NOSPACE_ALARM];
}

/// `executions`: an execution's record.
pub fn execution(id: &ExecutionId) -> Vec<u8> {
    id.as_bytes().to_vec()
}

/// `execution_events`: one history event of an execution.
pub fn execution_event(id: &ExecutionId, seq: u64) -> Vec<u8> {
    KeyBuilder::new().str(id.as_str()).u64(seq).build()
}

/// The prefix of an execution's `execution_events`.
pub fn execution_events(id: &ExecutionId) -> Vec<u8> {
    KeyBuilder::new().str(id.as_str()).build()
}

/// The prefix of everything a job owns in a family keyed `str(job_id) …`
/// (`job_versions`, `job_history`, `idx_evaluations_by_job`,
/// `idx_executions_by_job_id`).
pub fn owned_by(job: &JobId) -> Vec<u8> {
    KeyBuilder::new().str(job.as_str()).build()
}

/// `idx_executions_by_job_id`: an execution under its job.
pub fn execution_by_job(job: &JobId, id: &ExecutionId) -> Vec<u8> {
    KeyBuilder::new().str(job.as_str()).last_str(id.as_str()).build()
}

/// `idx_executions_by_state`: an execution under its state.
pub fn execution_by_state(state: ExecutionState, id: &ExecutionId) -> Vec<u8> {
    KeyBuilder::new().u8(state.code()).last_str(id.as_str()).build()
}

/// The prefix of `idx_executions_by_state` under `state`.
pub fn in_state(state: ExecutionState) -> Vec<u8> {
    vec![state.code()]
}

/// Where a scan of `state`'s entries starts to read the ones after execution `after`
/// (the entry of `after` followed by a separator sorts after it and before the next).
pub fn in_state_after(state: ExecutionState, after: &ExecutionId) -> Vec<u8> {
    KeyBuilder::new().u8(state.code()).str(after.as_str()).build()
}

/// `idx_executions_by_node`: an execution under its node (requester).
pub fn execution_by_node(node: &NodeId, id: &ExecutionId) -> Vec<u8> {
    KeyBuilder::new().str(node.as_str()).last_str(id.as_str()).build()
}

/// The prefix of `idx_executions_by_node` under `node`.
pub fn on_node(node: &NodeId) -> Vec<u8> {
    KeyBuilder::new().str(node.as_str()).build()
}

/// The value of a requester's `idx_executions_by_job_id` entry: the execution's node id,
/// or the single byte `0x00` when it has none (so a purge deletes the node index entry
/// without decoding the record).
pub fn node_marker(node: Option<&NodeId>) -> Vec<u8> {
    node.map_or_else(|| vec![0], |n| n.as_bytes().to_vec())
}

/// What a requester's `idx_executions_by_job_id` value says of the execution's node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement<'v> {
    /// Nothing: an entry written before format version 2; read the record.
    Unknown,
    /// On no node.
    Unplaced,
    /// On this node.
    Node(&'v str),
}

/// Reads a [`node_marker`].
pub fn placement(value: &[u8]) -> Placement<'_> {
    match value {
        [] => Placement::Unknown,
        [0] => Placement::Unplaced,
        node => std::str::from_utf8(node).map_or(Placement::Unknown, Placement::Node),
    }
}

/// `idx_executions_by_node` from the raw parts of a by-job entry (its marker's node and
/// the execution id bytes).
pub(crate) fn execution_by_node_raw(node: &str, id: &[u8]) -> Vec<u8> {
    let mut key = KeyBuilder::new().str(node).build();
    key.extend_from_slice(id);
    key
}

/// The record key at the end of an index entry `key` read under `prefix` (an owner's
/// prefix such as [`owned_by`] or [`in_state`]): `last(id)` after it.
pub fn after_prefix<'k>(key: &'k [u8], prefix: &[u8]) -> &'k [u8] {
    key.get(prefix.len()..).unwrap_or_default()
}

/// `events`: the event-log entry `seq`.
pub fn log_entry(seq: u64) -> Vec<u8> {
    KeyBuilder::new().u64(seq).build()
}

/// Decodes an `events` key.
pub fn log_seq(key: &[u8]) -> Option<u64> {
    decode(Cf::Events, key).ok()?.u64("seq")
}

/// `checkpoints`: a watcher's checkpoint.
pub fn checkpoint(name: &str) -> Vec<u8> {
    name.as_bytes().to_vec()
}

/// `jobs`: a job's record (and `purged_jobs`: a purged job's archive).
pub fn job(id: &JobId) -> Vec<u8> {
    id.as_bytes().to_vec()
}

/// `job_versions`: one version of a job.
pub fn job_version(id: &JobId, version: u64) -> Vec<u8> {
    KeyBuilder::new().str(id.as_str()).u64(version).build()
}

/// `job_history`: one history entry of a job.
pub fn job_history(id: &JobId, seq: u64) -> Vec<u8> {
    KeyBuilder::new().str(id.as_str()).u64(seq).build()
}

/// `evaluations`: an evaluation's record.
pub fn evaluation(id: &EvaluationId) -> Vec<u8> {
    id.as_bytes().to_vec()
}

/// `idx_evaluations_by_job`: an evaluation under its job.
pub fn evaluation_by_job(job: &JobId, id: &EvaluationId) -> Vec<u8> {
    KeyBuilder::new().str(job.as_str()).last_str(id.as_str()).build()
}

/// `idx_jobs_by_name`: a job's name in its namespace (the value is the job id).
pub fn job_name(namespace: &str, name: &str) -> Vec<u8> {
    KeyBuilder::new().str(namespace).last_str(name).build()
}

/// The prefix of `idx_jobs_queued` under `queue`.
pub fn queue(queue: &str) -> Vec<u8> {
    under(queue)
}

/// The prefix of the entries under a string part (a namespace, a queue).
fn under(part: &str) -> Vec<u8> {
    KeyBuilder::new().str(part).build()
}

/// The prefix of `idx_jobs_in_progress` under `job_type`, or the whole family.
pub fn in_progress(job_type: Option<JobType>) -> Vec<u8> {
    job_type.map(|t| vec![t.code()]).unwrap_or_default()
}

fn state_prefix(state: JobState) -> Vec<u8> {
    vec![state.code()]
}

fn label_prefix(key: &str, value: &str) -> Vec<u8> {
    KeyBuilder::new().str(key).str(value).build()
}

/// A key of a time-ordered job index: `prefix u64(time) last(job_id)`, where `prefix` is
/// that of a [`job_scan`].
pub fn time_entry(prefix: &[u8], time: Timestamp, id: &JobId) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend(KeyBuilder::new().u64(time.as_nanos()).last_str(id.as_str()).build());
    key
}

/// Decodes a key of a time-ordered job index read under a prefix of `prefix_len`
/// bytes: its time and job.
pub(crate) fn decode_time_entry(cf: Cf, key: &[u8], prefix_len: usize) -> Result<(Timestamp, JobId)> {
    let mut r = KeyReader::new(key.get(prefix_len..).unwrap_or_default());
    let time = r.u64().map_err(|e| corrupt_key(cf, key, &e.reason))?;
    let id = r.last_str().map_err(|e| corrupt_key(cf, key, &e.reason))?;
    Ok((Timestamp::from_nanos(time), JobId::new(id).map_err(|e| corrupt_key(cf, key, &e.to_string()))?))
}

/// The family, key and value of one index entry of job `id`: where each
/// [`JobIndex`] lives in RocksDB.
pub fn job_index(id: &JobId, entry: &JobIndex<'_>) -> (Cf, Vec<u8>, Vec<u8>) {
    let none = Vec::new;
    match *entry {
        JobIndex::Name { namespace, name } => (Cf::IdxJobsByName, job_name(namespace, name), id.as_bytes().to_vec()),
        JobIndex::Created(time) => (Cf::IdxJobsByCreate, time_entry(&[], time, id), none()),
        JobIndex::Modified(time) => (Cf::IdxJobsByModify, time_entry(&[], time, id), none()),
        JobIndex::NamespaceCreated { namespace, time } => {
            (Cf::IdxJobsByNamespaceCreate, time_entry(&under(namespace), time, id), none())
        }
        JobIndex::NamespaceModified { namespace, time } => {
            (Cf::IdxJobsByNamespaceModify, time_entry(&under(namespace), time, id), none())
        }
        JobIndex::StateCreated { state, time } => {
            (Cf::IdxJobsByStateCreate, time_entry(&state_prefix(state), time, id), none())
        }
        JobIndex::StateModified { state, time } => {
            (Cf::IdxJobsByStateModify, time_entry(&state_prefix(state), time, id), none())
        }
        JobIndex::LabelCreated { key, value, time } => {
            (Cf::IdxJobsByLabelCreate, time_entry(&label_prefix(key, value), time, id), none())
        }
        JobIndex::LabelModified { key, value, time } => {
            (Cf::IdxJobsByLabelModify, time_entry(&label_prefix(key, value), time, id), none())
        }
        JobIndex::InProgress(job_type) => {
            (Cf::IdxJobsInProgress, KeyBuilder::new().u8(job_type.code()).last_str(id.as_str()).build(), none())
        }
        JobIndex::Queued { queue: q, time } => (Cf::IdxJobsQueued, time_entry(&queue(q), time, id), none()),
        JobIndex::Idle(time) => (Cf::IdxJobsIdle, time_entry(&[], time, id), none()),
    }
}

/// Every index entry of `job` ([`brine_store::rules::job_indexes`]): family, key and
/// value.
pub fn job_indexes(job: &brine_store::model::Job) -> Vec<(Cf, Vec<u8>, Vec<u8>)> {
    brine_store::rules::job_indexes(job).iter().map(|entry| job_index(&job.id, entry)).collect()
}

/// The family and key prefix of the entries a [`JobScan`] reads (entries
/// [`time_entry`] under that prefix).
pub fn job_scan(scan: &JobScan<'_>) -> (Cf, Vec<u8>) {
    let by_create = |sort: &JobSort| *sort == JobSort::CreateTime;
    match scan {
        JobScan::All(sort) => (if by_create(sort) { Cf::IdxJobsByCreate } else { Cf::IdxJobsByModify }, Vec::new()),
        JobScan::Namespace(ns, sort) => {
            (if by_create(sort) { Cf::IdxJobsByNamespaceCreate } else { Cf::IdxJobsByNamespaceModify }, under(ns))
        }
        JobScan::State(state, sort) => {
            (if by_create(sort) { Cf::IdxJobsByStateCreate } else { Cf::IdxJobsByStateModify }, state_prefix(*state))
        }
        JobScan::Label { key, value, sort } => (
            if by_create(sort) { Cf::IdxJobsByLabelCreate } else { Cf::IdxJobsByLabelModify },
            label_prefix(key, value),
        ),
    }
}

/// The job an entry of a job index points at: the `job_id` part of its key, or for
/// `idx_jobs_by_name` its value.
pub fn indexed_job(cf: Cf, key: &[u8], value: &[u8]) -> Option<JobId> {
    let id = match cf {
        Cf::IdxJobsByName => std::str::from_utf8(value).ok()?,
        _ => decode(cf, key).ok()?.str("job_id")?,
    };
    JobId::new(id).ok()
}

/// The execution an entry of an execution index points at.
pub fn indexed_execution(cf: Cf, key: &[u8]) -> Option<ExecutionId> {
    ExecutionId::new(decode(cf, key).ok()?.str("execution_id")?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use brine_store::model::{Job, JobId};
    use brine_store::rules;

    fn jid() -> JobId {
        JobId::new("job-1").unwrap()
    }

    fn xid() -> ExecutionId {
        ExecutionId::new("exec-1").unwrap()
    }

    /// Every typed encoder writes its family's layout: the key decodes by
    /// [`key_layout`] into the values it was built from.
    #[test]
    fn every_encoder_follows_its_layout() {
        let t = Timestamp::from_nanos(7);
        type Case = (Cf, Vec<u8>, Vec<(&'static str, Value<'static>)>);
        let cases: Vec<Case> = vec![
            (Cf::Executions, execution(&xid()), vec![("execution_id", Value::Str("exec-1"))]),
            (
                Cf::ExecutionEvents,
                execution_event(&xid(), 9),
                vec![("execution_id", Value::Str("exec-1")), ("history_seq", Value::U64(9))],
            ),
            (
                Cf::IdxExecutionsByJobId,
                execution_by_job(&jid(), &xid()),
                vec![("job_id", Value::Str("job-1")), ("execution_id", Value::Str("exec-1"))],
            ),
            (
                Cf::IdxExecutionsByState,
                execution_by_state(ExecutionState::Running, &xid()),
                vec![("state", Value::U8(ExecutionState::Running.code())), ("execution_id", Value::Str("exec-1"))],
            ),
            (
                Cf::IdxExecutionsByNode,
                execution_by_node(&NodeId::new("n1").unwrap(), &xid()),
                vec![("node_id", Value::Str("n1")), ("execution_id", Value::Str("exec-1"))],
            ),
            (Cf::Events, log_entry(3), vec![("seq", Value::U64(3))]),
            (Cf::Checkpoints, checkpoint("w"), vec![("name", Value::Str("w"))]),
            (Cf::Jobs, job(&jid()), vec![("job_id", Value::Str("job-1"))]),
            (Cf::PurgedJobs, job(&jid()), vec![("job_id", Value::Str("job-1"))]),
            (
                Cf::JobVersions,
                job_version(&jid(), 2),
                vec![("job_id", Value::Str("job-1")), ("version", Value::U64(2))],
            ),
            (
                Cf::JobHistory,
                job_history(&jid(), 4),
                vec![("job_id", Value::Str("job-1")), ("history_seq", Value::U64(4))],
            ),
            (Cf::Evaluations, evaluation(&EvaluationId::new("ev").unwrap()), vec![("evaluation_id", Value::Str("ev"))]),
            (
                Cf::IdxEvaluationsByJob,
                evaluation_by_job(&jid(), &EvaluationId::new("ev").unwrap()),
                vec![("job_id", Value::Str("job-1")), ("evaluation_id", Value::Str("ev"))],
            ),
        ];
        for (cf, key, expected) in cases {
            let decoded = decode(cf, &key).unwrap_or_else(|e| panic!("{cf}: {e}"));
            assert_eq!(decoded.parts(), expected.as_slice(), "{cf}");
        }
        // Every job index entry, for a job that has one of each.
        let mut j = Job::new(jid(), "name");
        j.namespace = "ns".into();
        j.labels.insert("tier".into(), "gold".into());
        let j = rules::new_job(rules::enqueued("q", j).unwrap(), t).unwrap();
        let mut families = Vec::new();
        for entry in rules::job_indexes(&j) {
            let (cf, key, value) = job_index(&j.id, &entry);
            let decoded = decode(cf, &key).unwrap_or_else(|e| panic!("{cf}: {e}"));
            if cf == Cf::IdxJobsByName {
                assert_eq!((decoded.str("namespace"), decoded.str("name")), (Some("ns"), Some("name")));
            } else {
                assert_eq!(decoded.str("job_id"), Some("job-1"), "{cf}");
            }
            assert_eq!(indexed_job(cf, &key, &value), Some(jid()), "{cf}");
            families.push(cf);
        }
        for cf in [Cf::IdxJobsByLabelCreate, Cf::IdxJobsQueued, Cf::IdxJobsIdle, Cf::IdxJobsInProgress] {
            assert!(families.contains(&cf), "{cf} missing");
        }
    }

    /// A scan's prefix with [`time_entry`] is the key [`job_index`] writes, and
    /// [`decode_time_entry`] reads it back.
    #[test]
    fn scans_read_the_entries_indexes_write() {
        let t = Timestamp::from_nanos(11);
        let pairs = [
            (JobScan::All(JobSort::CreateTime), JobIndex::Created(t)),
            (JobScan::Namespace("ns", JobSort::ModifyTime), JobIndex::NamespaceModified { namespace: "ns", time: t }),
            (
                JobScan::State(JobState::Failed, JobSort::ModifyTime),
                JobIndex::StateModified { state: JobState::Failed, time: t },
            ),
            (
                JobScan::Label { key: "k", value: "v", sort: JobSort::CreateTime },
                JobIndex::LabelCreated { key: "k", value: "v", time: t },
            ),
        ];
        for (scan, entry) in pairs {
            let (cf, prefix) = job_scan(&scan);
            let (index_cf, key, _) = job_index(&jid(), &entry);
            assert_eq!(cf, index_cf);
            assert_eq!(key, time_entry(&prefix, t, &jid()));
            assert_eq!(decode_time_entry(cf, &key, prefix.len()).unwrap(), (t, jid()));
        }
    }

    #[test]
    fn markers_read_back() {
        let node = NodeId::new("n1").unwrap();
        assert_eq!(placement(&node_marker(Some(&node))), Placement::Node("n1"));
        assert_eq!(placement(&node_marker(None)), Placement::Unplaced);
        assert_eq!(placement(&[]), Placement::Unknown);
        assert_eq!(log_seq(&log_entry(5)), Some(5));
        assert!(decode(Cf::IdxExecutionsByState, b"").is_err());
    }
}
