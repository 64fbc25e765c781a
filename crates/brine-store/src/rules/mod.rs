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

mod job;
mod load;
pub use job::*;
pub use load::*;

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

/// The states a new execution may be created in: the first state only, as Bacalhau's
/// store does. An execution that is further along is a state change of an existing one
/// (`update_execution_state`), or a restore (import), never a create.
pub const NEW_EXECUTION_STATES: [ExecutionState; 1] = [ExecutionState::Created];

/// Validates a new execution and sets what the store owns: revision 1, both times.
///
/// Fails with `InvalidState` naming the allowed states when the execution is not in
/// one of [`NEW_EXECUTION_STATES`].
pub fn new_execution(mut execution: Execution, now: Timestamp) -> Result<Execution> {
    execution.validate()?;
    if !NEW_EXECUTION_STATES.contains(&execution.state()) {
        return Err(StoreError::InvalidState {
            kind: ObjectKind::Execution,
            id: execution.id.to_string(),
            actual: execution.state().into(),
            expected: StateExpectation::OneOf(NEW_EXECUTION_STATES.iter().map(|s| (*s).into()).collect()),
        });
    }
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
    // A queue job moving into `Running` was grabbed now (again, after a requeue), by
    // `grab_next` or by a state change alike.
    if request.new_state == JobState::Running && current.state() != JobState::Running && next.queue.is_some() {
        next.grabbed_time = Some(now);
    }
    Ok(next)
}

/// A job after an access at `now`: only its last-accessed time moves (no new version,
/// no revision bump, so an access never fails a caller's conditional update). The
/// backend stores it and logs it as an `Update` like any change.
pub fn touch_job(current: &Job, now: Timestamp) -> Job {
    let mut next = current.clone();
    next.last_accessed_time = now;
    next
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

/// Checks a queue name (`compute.jobs`: at most 32 bytes).
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

/// How many jobs one write of `expire` moves: a store with many idle jobs expires
/// them in several bounded writes, so no write holds the writer lock for long.
pub const EXPIRE_BATCH: usize = 64;

/// The most log entries one `get_events` call examines: a selective filter returns a
/// short (even empty) batch with the position to read on from, rather than scanning to
/// the head in one call.
pub const MAX_EXAMINED: usize = 1024;

/// Runs `batch` (one bounded write of `expire`, returning the jobs it expired) until a
/// write expires fewer than [`EXPIRE_BATCH`], yielding to the runtime between writes;
/// returns every job expired. Each write commits whole, so a caller that drops this
/// future midway has expired the jobs of the writes done.
pub async fn expire_in_batches<F, Fut>(mut batch: F) -> Result<Vec<brine_model::JobId>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Vec<brine_model::JobId>>>,
{
    let mut expired = Vec::new();
    loop {
        let ids = batch().await?;
        let done = ids.len() < EXPIRE_BATCH;
        expired.extend(ids);
        if done {
            return Ok(expired);
        }
        YieldNow(false).await;
    }
}

/// Lets the other tasks of the runtime run once (whatever the runtime): pending on its
/// first poll, after asking to be polled again.
struct YieldNow(bool);

impl std::future::Future for YieldNow {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

/// The expire message and the cut-off before which a job counts as idle.
pub fn expire_cutoff(idle_for: std::time::Duration, now: Timestamp) -> (Timestamp, String) {
    (now.saturating_sub(idle_for), format!("not accessed for {}s", idle_for.as_secs()))
}

/// What expiring job `id` changes: a move to `Expired` with the expire message.
pub fn expire_request(id: &brine_model::JobId, message: &str) -> UpdateJobStateRequest {
    UpdateJobStateRequest::new(id.clone(), JobState::Expired, message)
}

/// Builds one page of a job listing from the entries of the sort index, in order: what
/// matches, where the page ends, and its token. Both backends feed it the index entries
/// they read, so they page alike.
///
/// A page examines at most [`MAX_EXAMINED`] index entries: a selective filter may give
/// a short (even empty) page with a token to read on from, rather than one call that
/// scans the whole index.
#[derive(Debug)]
pub struct JobPager<'q> {
    query: &'q crate::JobQuery,
    after: Option<(Timestamp, brine_model::JobId)>,
    jobs: Vec<Job>,
    examined: usize,
    last_seen: Option<(Timestamp, brine_model::JobId)>,
    next_token: Option<String>,
}

impl<'q> JobPager<'q> {
    /// An empty page for `query`, once its limit, namespace and token are checked.
    pub fn new(query: &'q crate::JobQuery) -> Result<Self> {
        check_limit(query.limit)?;
        if let Some(ns) = &query.namespace {
            check_namespace(ns)?;
        }
        let after = query.token.as_deref().map(parse_job_token).transpose()?;
        Ok(JobPager { query, after, jobs: Vec::new(), examined: 0, last_seen: None, next_token: None })
    }

    /// The index entry the page starts after (from the query's token): read the
    /// entries past it in the query's order.
    pub fn after(&self) -> Option<(Timestamp, brine_model::JobId)> {
        self.after.clone()
    }

    /// The index ranges the page reads ([`job_scans`]).
    pub fn scans(&self) -> Vec<JobScan<'q>> {
        job_scans(self.query)
    }

    /// The sort time of `job` under the query's sort.
    fn sort_time(&self, job: &Job) -> Timestamp {
        match self.query.sort {
            crate::JobSort::CreateTime => job.create_time,
            crate::JobSort::ModifyTime => job.modify_time,
        }
    }

    /// Offers the next index entry (its sort time and job id) with the job it points
    /// at (`None` when the record is gone); returns whether to read on.
    pub fn offer(&mut self, time: Timestamp, id: &brine_model::JobId, job: Option<&Job>) -> bool {
        if self.examined == MAX_EXAMINED {
            self.next_token = self.last_seen.as_ref().map(|(t, id)| job_token(*t, id));
            return false;
        }
        self.examined += 1;
        // An entry whose record has another sort time is stale (the record moved) and
        // is passed over: the job is listed at its current place.
        let matching = job.filter(|j| {
            self.sort_time(j) == time
                && (self.query.states.is_empty() || self.query.states.contains(&j.state()))
                && self.query.selector.matches(&j.labels)
        });
        if let Some(job) = matching {
            if self.jobs.len() == self.query.limit {
                // One more match exists: the page ends at its last job.
                self.next_token = self.jobs.last().map(|last| job_token(self.sort_time(last), &last.id));
                return false;
            }
            self.jobs.push(job.clone());
        }
        self.last_seen = Some((time, id.clone()));
        true
    }

    /// The page.
    pub fn finish(self) -> crate::JobPage {
        crate::JobPage { jobs: self.jobs, next_token: self.next_token }
    }
}

/// One range of a time-ordered job index: the entries of one [`JobIndex`] kind under
/// one prefix, in time order. A listing reads one or more of them, merged
/// ([`merge_ordered`]); a backend maps each to its storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobScan<'q> {
    /// Every job ([`JobIndex::Created`] or [`JobIndex::Modified`]).
    All(crate::JobSort),
    /// The jobs of a namespace ([`JobIndex::NamespaceCreated`] or
    /// [`JobIndex::NamespaceModified`]).
    Namespace(&'q str, crate::JobSort),
    /// The jobs in a state ([`JobIndex::StateCreated`] or [`JobIndex::StateModified`]).
    State(JobState, crate::JobSort),
    /// The jobs carrying a label ([`JobIndex::LabelCreated`] or
    /// [`JobIndex::LabelModified`]).
    Label {
        /// The label's key.
        key: &'q str,
        /// The label's value.
        value: &'q str,
        /// Which time orders the range.
        sort: crate::JobSort,
    },
}

/// The index ranges a job listing reads (every backend reads the same ones): with a
/// filter, the entries of the matching jobs, not every job of the time index. The
/// selector's first `key=value` or `key in (…)` requirement reads the label index, one
/// range per value; else a state filter reads the state index, one range per state;
/// else the time index, of the namespace when one is given. The pager still applies
/// every filter, so the choice only decides how many entries are read, never what is
/// listed.
pub fn job_scans(query: &crate::JobQuery) -> Vec<JobScan<'_>> {
    use crate::selector::LabelRequirement;
    let sort = query.sort;
    for requirement in &query.selector.requirements {
        let (key, mut values): (&str, Vec<&str>) = match requirement {
            LabelRequirement::Equals(k, v) => (k, vec![v.as_str()]),
            LabelRequirement::In(k, vs) => (k, vs.iter().map(String::as_str).collect()),
            _ => continue,
        };
        values.sort_unstable();
        values.dedup();
        return values.into_iter().map(|value| JobScan::Label { key, value, sort }).collect();
    }
    if !query.states.is_empty() {
        let mut states = query.states.clone();
        states.sort_by_key(|s| s.code());
        states.dedup();
        return states.into_iter().map(|state| JobScan::State(state, sort)).collect();
    }
    vec![match &query.namespace {
        None => JobScan::All(sort),
        Some(ns) => JobScan::Namespace(ns, sort),
    }]
}

/// Merges scans that each yield `(time, id)` in `order` into one scan in `order`: how a
/// listing reads several states or label values as one index.
pub fn merge_ordered<I, E>(scans: Vec<I>, order: crate::SortOrder) -> MergeOrdered<I>
where
    I: Iterator<Item = std::result::Result<(Timestamp, brine_model::JobId), E>>,
{
    MergeOrdered { heads: scans.into_iter().map(|s| (s, None)).collect(), order, primed: false }
}

/// The iterator of [`merge_ordered`].
#[derive(Debug)]
pub struct MergeOrdered<I> {
    heads: Vec<(I, Option<(Timestamp, brine_model::JobId)>)>,
    order: crate::SortOrder,
    primed: bool,
}

impl<I, E> Iterator for MergeOrdered<I>
where
    I: Iterator<Item = std::result::Result<(Timestamp, brine_model::JobId), E>>,
{
    type Item = std::result::Result<(Timestamp, brine_model::JobId), E>;

    fn next(&mut self) -> Option<Self::Item> {
        if !self.primed {
            self.primed = true;
            for (scan, head) in &mut self.heads {
                if let Err(e) = advance(scan, head) {
                    return Some(Err(e));
                }
            }
        }
        let descending = self.order == crate::SortOrder::Descending;
        let mut best: Option<usize> = None;
        for (i, (_, head)) in self.heads.iter().enumerate() {
            let Some(entry) = head else { continue };
            let better = match best.and_then(|b| self.heads[b].1.as_ref()) {
                None => true,
                Some(current) => (entry < current) != descending,
            };
            if better {
                best = Some(i);
            }
        }
        let i = best?;
        let (scan, head) = &mut self.heads[i];
        let out = head.take();
        if let Err(e) = advance(scan, head) {
            return Some(Err(e));
        }
        out.map(Ok)
    }
}

/// Moves `scan`'s next entry into `head` (`None` once it ends); an error is returned.
fn advance<I, E>(scan: &mut I, head: &mut Option<(Timestamp, brine_model::JobId)>) -> std::result::Result<(), E>
where
    I: Iterator<Item = std::result::Result<(Timestamp, brine_model::JobId), E>>,
{
    *head = scan.next().transpose()?;
    Ok(())
}

/// Collects purge candidates (`JobStore::purgeable_jobs`) from the merged
/// [`PurgeCandidates::scans`], oldest first: finished jobs last modified at or before
/// `before`, at most `limit`.
#[derive(Debug)]
pub struct PurgeCandidates {
    before: Timestamp,
    limit: usize,
    jobs: Vec<Job>,
}

impl PurgeCandidates {
    /// An empty collection; refuses a `limit` of 0.
    pub fn new(before: Timestamp, limit: usize) -> Result<Self> {
        check_limit(limit)?;
        Ok(PurgeCandidates { before, limit, jobs: Vec::new() })
    }

    /// The index ranges candidates are read from: the terminal states' ranges of the
    /// state index by modify time, so a purge never reads an unfinished job.
    pub fn scans() -> Vec<JobScan<'static>> {
        let terminal = JobState::ALL.into_iter().filter(|s| s.is_terminal());
        terminal.map(|state| JobScan::State(state, crate::JobSort::ModifyTime)).collect()
    }

    /// Offers the next index entry: its modify time, and `read`, which reads the job it
    /// points at (`None` when the record is gone) only if the entry is still wanted.
    /// Returns whether to read on. An entry whose record has another modify time or is
    /// not finished is passed over.
    pub fn offer<E>(
        &mut self,
        time: Timestamp,
        read: impl FnOnce() -> std::result::Result<Option<Job>, E>,
    ) -> std::result::Result<bool, E> {
        if time > self.before || self.jobs.len() == self.limit {
            return Ok(false);
        }
        if let Some(job) = read()?.filter(|j| j.state().is_terminal() && j.modify_time == time) {
            self.jobs.push(job);
        }
        Ok(self.jobs.len() < self.limit)
    }

    /// The candidates.
    pub fn finish(self) -> Vec<Job> {
        self.jobs
    }
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

/// What purge must still find of a job it archived: its revision, modify time and
/// last access time. A state or spec change moves the revision, a touch the access
/// time, and a write to what belongs to a finished job its modify time
/// ([`dependent_change`]).
pub fn purge_stamp(job: &Job) -> crate::JobStamp {
    crate::JobStamp { revision: job.revision, modify_time: job.modify_time, last_accessed_time: job.last_accessed_time }
}

/// The job after a write to something that belongs to it (an execution, an evaluation,
/// a history event), when that moves it: a finished job's modify time moves to `now`,
/// so a purge that archived it before the write does not delete it, and a later purge
/// waits its minimum age again. An unfinished job is not changed (`None`): it is no
/// purge candidate, and its own finish moves its modify time anyway.
pub fn dependent_change(job: &Job, now: Timestamp) -> Option<Job> {
    if !job.state().is_terminal() {
        return None;
    }
    let mut next = job.clone();
    next.modify_time = now;
    Some(next)
}

/// The execution after events were added to it, when that moves it: a terminal
/// execution's modify time moves to `now` (its revision does not: a terminal execution
/// takes no conditional update), so a purge that archived it before does not delete it.
/// A live execution is not changed (`None`).
pub fn events_added(execution: &Execution, now: Timestamp) -> Option<Execution> {
    if !execution.state().is_terminal() {
        return None;
    }
    let mut next = execution.clone();
    next.modify_time = now;
    Some(next)
}

/// Runs `purge_one` for each job of `jobs` (inside one write) with the job as stored,
/// skipping the ones that are gone already and the ones whose stamp moved since they
/// were archived; returns how many were purged (see `JobStore::purge_jobs`).
pub fn purge_each<S: ?Sized>(
    store: &mut S,
    jobs: &[(brine_model::JobId, crate::JobStamp)],
    current: impl Fn(&S, &brine_model::JobId) -> Result<Option<Job>>,
    mut purge_one: impl FnMut(&mut S, &brine_model::JobId) -> Result<()>,
) -> Result<u64> {
    let mut purged = 0;
    for (id, stamp) in jobs {
        match current(store, id)? {
            Some(job) if purge_stamp(&job) == *stamp => {
                purge_one(store, id)?;
                purged += 1;
            }
            _ => {}
        }
    }
    Ok(purged)
}

/// The history event of a job purge's event-log entry: the archive holding the job and
/// everything that belonged to it.
pub fn purge_event(archive: &str, now: Timestamp) -> brine_model::Event {
    brine_model::Event::new("purge", format!("purged to {archive}"), now).with_detail("archive", archive)
}

/// The rule every backend's transaction follows for failed steps: once a write step
/// has failed, the transaction is aborted. A failed step may have queued part of its
/// writes (a delete without its log entry, say), so later steps and `commit` are refused
/// with `TransactionAborted`; rolling back (or dropping) is all that is left.
#[derive(Debug, Default)]
pub struct TxSteps {
    first_error: Option<String>,
}

impl TxSteps {
    /// Refuses to go on after a failed step.
    pub fn check(&self) -> Result<()> {
        match &self.first_error {
            Some(e) => Err(StoreError::TransactionAborted { first_error: e.clone() }),
            None => Ok(()),
        }
    }

    /// Runs one write step: refused after a failed step, and its own failure aborts
    /// the transaction.
    pub fn step<T>(&mut self, step: impl FnOnce() -> Result<T>) -> Result<T> {
        self.check()?;
        let out = step();
        if let Err(e) = &out {
            self.first_error = Some(e.to_string());
        }
        out
    }
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
