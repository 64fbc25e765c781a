//! The decisions every backend shares: what a create sets, when an update is allowed,
//! what it changes, and how page tokens read.
//!
//! Backends call these functions and then store the result; they never re-implement
//! a rule, so all backends decide alike and the conformance suite checks storage only.

use brine_model::{
    validate_name, validate_queue, Evaluation, Event, Execution, ExecutionState, InvalidReason, Job, JobState,
    StateCode, Timestamp, ValidationError, MAX_ID_LEN,
};

use crate::error::{AnyState, ObjectKind, StateExpectation};
use crate::{Condition, Result, StoreError, UpdateExecutionRequest, UpdateJobStateRequest};

/// Checks `condition` against an object's state and revision.
///
/// Order: expected states, unexpected states, revision. The first failing part is
/// reported.
pub fn check_condition<S>(condition: &Condition<S>, kind: ObjectKind, id: &str, state: S, revision: u64) -> Result<()>
where
    S: StateCode + Into<AnyState>,
{
    let any = |v: &[S]| v.iter().map(|s| (*s).into()).collect::<Vec<AnyState>>();
    if !condition.expected_states.is_empty() && !condition.expected_states.contains(&state) {
        return Err(StoreError::InvalidState {
            kind,
            id: id.to_owned(),
            actual: state.into(),
            expected: StateExpectation::OneOf(any(&condition.expected_states)),
        });
    }
    if condition.unexpected_states.contains(&state) {
        return Err(StoreError::InvalidState {
            kind,
            id: id.to_owned(),
            actual: state.into(),
            expected: StateExpectation::NoneOf(any(&condition.unexpected_states)),
        });
    }
    if let Some(expected) = condition.expected_revision {
        if expected != revision {
            return Err(StoreError::InvalidRevision { kind, id: id.to_owned(), actual: revision, expected });
        }
    }
    Ok(())
}

/// Refuses a change to an object in a terminal state.
pub fn check_not_terminal<S>(kind: ObjectKind, id: &str, state: S) -> Result<()>
where
    S: StateCode + Into<AnyState>,
{
    if state.is_terminal() {
        return Err(StoreError::AlreadyTerminal { kind, id: id.to_owned(), state: state.into() });
    }
    Ok(())
}

/// Validates a new execution and sets what the store owns: revision 1, both times.
pub fn new_execution(mut execution: Execution, now: Timestamp) -> Result<Execution> {
    execution.validate()?;
    execution.revision = 1;
    execution.create_time = now;
    execution.modify_time = now;
    Ok(execution)
}

/// Applies a conditional update to `current`, giving the new value.
///
/// Fails with `InvalidState`/`InvalidRevision` when the condition does not hold and
/// `AlreadyTerminal` when `current` is terminal; on success the revision is bumped by
/// exactly one and the modify time set.
pub fn update_execution(current: &Execution, request: &UpdateExecutionRequest, now: Timestamp) -> Result<Execution> {
    let id = current.id.as_str();
    check_condition(&request.condition, ObjectKind::Execution, id, current.state(), current.revision)?;
    check_not_terminal(ObjectKind::Execution, id, current.state())?;
    let v = &request.new_values;
    let mut next = current.clone();
    if let Some(s) = &v.compute_state {
        next.compute_state = s.clone();
    }
    if let Some(s) = &v.desired_state {
        next.desired_state = s.clone();
    }
    if let Some(n) = &v.node_id {
        next.node_id = Some(n.clone());
    }
    if let Some(r) = v.allocated_resources {
        next.allocated_resources = r;
    }
    if let Some(p) = &v.published_result {
        next.published_result = Some(p.clone());
    }
    if let Some(o) = &v.run_output {
        next.run_output = Some(o.clone());
    }
    if let Some(n) = &v.next_execution {
        next.next_execution = Some(n.clone());
    }
    if let Some(e) = &v.followup_eval_id {
        next.followup_eval_id = Some(e.clone());
    }
    next.revision = current.revision + 1;
    next.modify_time = now;
    Ok(next)
}

/// Validates a new job and sets what the store owns: version 1, revision 1, times.
pub fn new_job(mut job: Job, now: Timestamp) -> Result<Job> {
    job.validate()?;
    job.version = 1;
    job.revision = 1;
    job.create_time = now;
    job.modify_time = now;
    job.last_accessed_time = now;
    if job.state().is_terminal() {
        job.finished_time = Some(now);
    }
    Ok(job)
}

/// A new version of `current`'s spec from `update`.
///
/// `update.revision` must equal the stored revision (the caller read, changed and
/// writes back); the id, state, times and queue bookkeeping stay the store's.
pub fn new_job_version(current: &Job, update: Job, now: Timestamp) -> Result<Job> {
    update.validate()?;
    let id = current.id.as_str();
    if update.revision != current.revision {
        return Err(StoreError::InvalidRevision {
            kind: ObjectKind::Job,
            id: id.to_owned(),
            actual: current.revision,
            expected: update.revision,
        });
    }
    check_not_terminal(ObjectKind::Job, id, current.state())?;
    if update.namespace != current.namespace {
        return Err(ValidationError::new(
            "namespace",
            &update.namespace,
            InvalidReason::Other(format!("a job cannot move namespaces (it is in {})", current.namespace)),
        )
        .into());
    }
    Ok(Job {
        state: current.state.clone(),
        version: current.version + 1,
        revision: current.revision + 1,
        create_time: current.create_time,
        modify_time: now,
        grabbed_time: current.grabbed_time,
        finished_time: current.finished_time,
        last_accessed_time: current.last_accessed_time,
        queue: current.queue.clone(),
        ..update
    })
}

/// Applies a conditional job state change to `current`.
pub fn update_job_state(current: &Job, request: &UpdateJobStateRequest, now: Timestamp) -> Result<Job> {
    let id = current.id.as_str();
    check_condition(&request.condition, ObjectKind::Job, id, current.state(), current.revision)?;
    check_not_terminal(ObjectKind::Job, id, current.state())?;
    let mut next = current.clone();
    next.state.state = request.new_state;
    next.state.message = request.message.clone();
    next.revision += 1;
    next.modify_time = now;
    if request.new_state.is_terminal() {
        next.finished_time = Some(now);
    }
    if request.new_state == JobState::Running && next.grabbed_time.is_none() && next.queue.is_some() {
        next.grabbed_time = Some(now);
    }
    Ok(next)
}

/// The history event a job state change writes.
pub fn job_state_event(previous: JobState, next: &Job, now: Timestamp) -> Event {
    Event::new("JobStateUpdate", format!("job moved from {previous} to {}", next.state()), now)
        .with_detail("previous_state", previous.as_str())
        .with_detail("new_state", next.state().as_str())
        .with_detail("message", next.state.message.clone())
}

/// The history event an execution state change writes on the requester.
pub fn execution_state_event(previous: ExecutionState, next: &Execution, now: Timestamp) -> Event {
    Event::new("ExecutionStateUpdate", format!("execution moved from {previous} to {}", next.state()), now)
        .with_detail("previous_state", previous.as_str())
        .with_detail("new_state", next.state().as_str())
}

/// Validates a new evaluation and sets its times.
pub fn new_evaluation(mut eval: Evaluation, now: Timestamp) -> Result<Evaluation> {
    eval.validate()?;
    eval.create_time = now;
    eval.modify_time = now;
    Ok(eval)
}

/// Checks a queue name (seed 002: at most 32 bytes).
pub fn check_queue(queue: &str) -> Result<()> {
    Ok(validate_queue(queue)?)
}

/// Whether retention may delete log entry `seq`, committed at `timestamp`: every
/// durable watcher has handled it (`seq <= up_to`) and it is older than the cut-off
/// (`timestamp < before`). Retention deletes a prefix of the log and stops at the first
/// entry this refuses, so the log stays gap-free above its oldest entry.
pub fn may_trim(seq: u64, timestamp: brine_model::Timestamp, up_to: u64, before: brine_model::Timestamp) -> bool {
    seq <= up_to && timestamp < before
}

/// Checks a page size.
pub fn check_limit(limit: usize) -> Result<()> {
    if limit == 0 {
        return Err(ValidationError::new("limit", "0", InvalidReason::Other("must be at least 1".into())).into());
    }
    Ok(())
}

/// Checks a namespace given to a query.
pub fn check_namespace(namespace: &str) -> Result<()> {
    Ok(validate_name("namespace", namespace, MAX_ID_LEN)?)
}

/// The first sequence number a read from `from` covers, given the log's head and the
/// highest sequence number retention deleted; `Compacted` when that entry is gone.
pub fn first_seq(from: crate::Position, head: u64, trimmed: u64) -> Result<u64> {
    let first = match from {
        crate::Position::TrimHorizon => trimmed + 1,
        crate::Position::Latest => head + 1,
        crate::Position::At(n) => n.max(1),
        crate::Position::After(n) => n.saturating_add(1),
    };
    if first <= trimmed {
        return Err(StoreError::Compacted { requested: first, oldest: trimmed + 1 });
    }
    Ok(first)
}

/// The next-page token of a history read: more matching entries remain, or the job can
/// still change, so the reader must be able to read on.
pub fn history_next_token(more: bool, job_terminal: bool, last_examined: u64) -> Option<String> {
    (more || !job_terminal).then(|| history_token(last_examined))
}

/// Encodes a history page token: the sequence number of the last entry examined.
pub fn history_token(seq: u64) -> String {
    format!("h1.{seq}")
}

/// Decodes a history page token.
pub fn parse_history_token(token: &str) -> Result<u64> {
    token
        .strip_prefix("h1.")
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| StoreError::InvalidToken { token: token.to_owned(), reason: "not a history token".into() })
}

/// Encodes a job listing token: the sort time and id of the last job returned.
pub fn job_token(time: Timestamp, id: &brine_model::JobId) -> String {
    format!("j1.{}.{}", time.as_nanos(), id)
}

/// Decodes a job listing token.
pub fn parse_job_token(token: &str) -> Result<(Timestamp, brine_model::JobId)> {
    let bad = |reason: &str| StoreError::InvalidToken { token: token.to_owned(), reason: reason.to_owned() };
    let rest = token.strip_prefix("j1.").ok_or_else(|| bad("not a job listing token"))?;
    let (time, id) = rest.split_once('.').ok_or_else(|| bad("missing id"))?;
    let time = time.parse::<u64>().map_err(|_| bad("bad time"))?;
    let id = brine_model::JobId::new(id).map_err(|e| bad(&e.to_string()))?;
    Ok((Timestamp::from_nanos(time), id))
}

/// Runs `purge_one` for each job of `ids` (inside one write), skipping the ones that
/// are gone already; returns how many were purged (see `JobStore::purge_jobs`).
pub fn purge_each(
    ids: &[brine_model::JobId],
    mut purge_one: impl FnMut(&brine_model::JobId) -> Result<()>,
) -> Result<u64> {
    let mut purged = 0;
    for id in ids {
        match purge_one(id) {
            Ok(()) => purged += 1,
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(purged)
}

/// The history event of a job purge's event-log entry: the archive holding the job and
/// everything that belonged to it.
pub fn purge_event(archive: &str, now: Timestamp) -> brine_model::Event {
    brine_model::Event::new("purge", format!("purged to {archive}"), now).with_detail("archive", archive)
}

#[cfg(test)]
mod tests {
    use super::*;
    use brine_model::JobId;

    #[test]
    fn condition_order_and_errors() {
        let c = Condition {
            expected_states: vec![ExecutionState::Running],
            unexpected_states: vec![],
            expected_revision: Some(3),
        };
        let err = check_condition(&c, ObjectKind::Execution, "e1", ExecutionState::Created, 1).unwrap_err();
        assert!(matches!(err, StoreError::InvalidState { actual: AnyState::Execution(ExecutionState::Created), .. }));
        assert_eq!(err.to_string(), "execution e1 is in state Created, expected one of [Running]");
        let err = check_condition(&c, ObjectKind::Execution, "e1", ExecutionState::Running, 1).unwrap_err();
        assert!(matches!(err, StoreError::InvalidRevision { actual: 1, expected: 3, .. }));
        assert!(check_condition(&c, ObjectKind::Execution, "e1", ExecutionState::Running, 3).is_ok());
        let u = Condition { unexpected_states: vec![JobState::Queued], ..Condition::default() };
        let err = check_condition(&u, ObjectKind::Job, "j", JobState::Queued, 1).unwrap_err();
        assert_eq!(err.to_string(), "job j is in state Queued, expected none of [Queued]");
    }

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        assert_eq!(parse_history_token(&history_token(42)).unwrap(), 42);
        assert!(matches!(parse_history_token("x"), Err(StoreError::InvalidToken { .. })));
        let id = JobId::new("a.b").unwrap();
        let (t, back) = parse_job_token(&job_token(Timestamp::from_nanos(7), &id)).unwrap();
        assert_eq!((t, back), (Timestamp::from_nanos(7), id));
        assert!(parse_job_token("j1.x.y").is_err());
        assert!(parse_job_token("j1.5. ").is_err());
    }
}
