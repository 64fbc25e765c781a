//! Model-based test of the job store: random operation sequences against a backend and a
//! plain `BTreeMap` model of what the `JobStore` docs say, compared after every step
//! (and across close/reopen, where the backend persists).
//!
//! The model restates the semantics itself: what each write changes, which check refuses
//! it first (and with which error class), which versions and history entries it keeps,
//! what is logged. It borrows from `brine_store::rules` only the wording of the history
//! events (the event builders), never a decision, so it can disagree with the rules.
//!
//! Time comes from the suite's `ManualClock`: each write reads the clock once (and so
//! moves it one nanosecond), and `Advance` steps move it by seconds so ages, `expire` and
//! purge cut-offs come into play. The model takes each write's time from the clock just
//! before the call.

use std::collections::BTreeMap;
use std::time::Duration;

use brine_store::model::{
    ComputeState, Evaluation, EvaluationId, EvaluationStatus, Event, Execution, ExecutionId, ExecutionState,
    HistoryLevel, Job, JobHistory, JobId, JobState, JobType, NodeId, Timestamp,
};
use brine_store::rules;
use brine_store::{
    HistoryQuery, JobBundle, JobOutcome, JobQuery, JobSort, JobStamp, JobStore, SortOrder, StoreError,
    UpdateExecutionRequest, UpdateJobStateRequest,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};

use crate::fixtures::{jid, Env};
use crate::model::Rev;
use crate::Factory;

/// Job ids `j0..`.
const JOBS: u8 = 3;
/// Evaluation ids `ev0..`.
const EVALS: u8 = 3;
/// Execution ids `x0..`.
const EXECS: u8 = 3;
/// Job names: four valid ones (job `jN` is usually called `nN`), then two a store must
/// refuse.
const NAMES: [&str; 6] = ["n0", "n1", "n2", "n3", "", "bad name"];
const NAMESPACES: [&str; 2] = ["a", "b"];
/// Queues: two valid ones, then one a store must refuse.
const QUEUES: [&str; 3] = ["q0", "q1", ""];
const NODES: [&str; 2] = ["node-a", "node-b"];
/// Clock steps of `Advance`, in seconds.
const STEPS: [u64; 3] = [1, 10, 60];
/// `idle_for` of `Expire`, in seconds.
const IDLE: [u64; 4] = [0, 5, 30, 100];
/// Purge ages (`before = now - age`), in seconds.
const AGES: [u64; 3] = [0, 10, 60];
/// Page size of history and listing reads: small, so paging is exercised.
const PAGE: usize = 3;

/// One step of a generated sequence, in terms of the small id space.
#[derive(Debug, Clone)]
enum Op {
    /// `name`: an index into [`NAMES`], or `None` for the job's own name.
    Create {
        job: u8,
        name: Option<u8>,
        ns: u8,
        service: bool,
        state: JobState,
        label: Option<u8>,
    },
    Enqueue {
        job: u8,
        name: Option<u8>,
        ns: u8,
        queue: u8,
    },
    UpdateJob {
        job: u8,
        stale: bool,
        name: Option<u8>,
        ns: Option<u8>,
        config: u8,
        label: Option<u8>,
    },
    UpdateState {
        job: u8,
        to: JobState,
        expect: Vec<JobState>,
        unexpected: Vec<JobState>,
        rev: Rev,
        events: u8,
    },
    Grab {
        queue: u8,
    },
    Finish {
        job: u8,
        failed: bool,
        outputs: u8,
    },
    Touch {
        job: u8,
    },
    Expire {
        idle: u8,
    },
    Advance {
        step: u8,
    },
    AddEvents {
        job: u8,
        n: u8,
    },
    CreateEval {
        eval: u8,
        job: u8,
        bad_ns: bool,
        priority: i8,
    },
    UpdateEval {
        eval: u8,
        other_job: u8,
        ns: u8,
        priority: i8,
        status: u8,
    },
    DeleteEval {
        eval: u8,
    },
    CreateExec {
        exec: u8,
        job: u8,
        bad: bool,
    },
    UpdateExec {
        exec: u8,
        to: ExecutionState,
        expect: Vec<ExecutionState>,
        rev: Rev,
        node: Option<u8>,
        events: u8,
    },
    DeleteJob {
        job: u8,
    },
    /// `purgeable_jobs` (read in pages of `page`), `job_bundle` of the first `max`
    /// candidates, optionally a write to one of them after it was bundled (`disturb`:
    /// which, and a touch or an event), then `purge_jobs` with the bundles' stamps (and
    /// a `ghost` id with a borrowed stamp).
    Purge {
        age: u8,
        page: u8,
        max: u8,
        disturb: Option<(u8, bool)>,
        ghost: Option<u8>,
    },
    Reopen,
}

/// One store call, with the exact arguments both the store and the model see.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant, reason = "one short-lived call per test step")]
enum Call {
    CreateJob(Job),
    Enqueue(String, Job),
    UpdateJob(Job),
    UpdateJobState(UpdateJobStateRequest),
    GrabNext(String),
    Finish(JobId, JobOutcome, Vec<String>),
    Touch(JobId),
    Expire(Duration),
    AddJobEvents(JobId, Vec<Event>),
    CreateEvaluation(Evaluation),
    UpdateEvaluation(Evaluation),
    DeleteEvaluation(EvaluationId),
    CreateExecution(Execution),
    UpdateExecution(UpdateExecutionRequest),
    DeleteJob(JobId),
    PurgeJobs(Vec<(JobId, JobStamp)>, String),
}

/// The error class of a refused call, as the model predicts it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Class {
    NotFound,
    /// A purged job, with the archive `get_job` names.
    Archived(String),
    Conflict,
    AlreadyExists,
    Invalid,
}

/// What a successful call returned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Unit,
    Job(Box<Job>),
    Grabbed(Option<Box<Job>>),
    Evaluation(Box<Evaluation>),
    Execution(Box<Execution>),
    Ids(Vec<JobId>),
    Count(u64),
}

type Answer = std::result::Result<Value, Class>;

fn class(e: &StoreError) -> std::result::Result<Class, String> {
    Ok(match e {
        StoreError::Archived { file, .. } => Class::Archived(file.clone()),
        e if e.is_not_found() => Class::NotFound,
        e if e.is_conflict() => Class::Conflict,
        e if e.is_already_exists() => Class::AlreadyExists,
        e if e.is_invalid_input() => Class::Invalid,
        other => return Err(format!("unexpected error: {other}")),
    })
}

fn answer<T>(r: brine_store::Result<T>, value: impl FnOnce(T) -> Value) -> std::result::Result<Answer, String> {
    match r {
        Ok(v) => Ok(Ok(value(v))),
        Err(e) => Ok(Err(class(&e)?)),
    }
}

fn job_id(i: u8) -> JobId {
    jid(&format!("j{i}"))
}

fn eval_id(i: u8) -> EvaluationId {
    EvaluationId::new(format!("ev{i}")).expect("valid test id")
}

fn exec_id(i: u8) -> ExecutionId {
    ExecutionId::new(format!("x{i}")).expect("valid test id")
}

fn node_id(i: u8) -> NodeId {
    NodeId::new(NODES[usize::from(i)]).expect("valid test id")
}

fn test_event(what: &str, i: u8) -> Event {
    Event::new("Test", format!("{what}{i}"), Timestamp::from_secs(1)).with_detail("n", i.to_string())
}

fn plus_one(t: Timestamp) -> Timestamp {
    Timestamp::from_nanos(t.as_nanos() + 1)
}

/// The identifier rule, restated: not empty, no whitespace, no NUL, at most 255 bytes.
fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 255 && !s.contains('\0') && !s.chars().any(char::is_whitespace)
}

/// Values a store owns, set to junk in what the caller passes: a store must ignore them.
fn with_junk_store_fields(mut job: Job) -> Job {
    job.version = 77;
    job.create_time = Timestamp::from_secs(3);
    job.modify_time = Timestamp::from_secs(4);
    job.last_accessed_time = Timestamp::from_secs(5);
    job
}

/// The reference model: what the job store holds.
#[derive(Debug, Clone, Default)]
struct Model {
    jobs: BTreeMap<JobId, Job>,
    /// Each job's versions: a spec or state change stores the job as its current
    /// version; an access or a write to what belongs to the job does not.
    versions: BTreeMap<JobId, BTreeMap<u64, Job>>,
    /// Each job's history, in write order.
    history: BTreeMap<JobId, Vec<JobHistory>>,
    evals: BTreeMap<EvaluationId, Evaluation>,
    execs: BTreeMap<ExecutionId, Execution>,
    /// Purged ids and the archive each went to (the retained entries).
    purged: BTreeMap<JobId, String>,
    /// The store-wide history sequence.
    history_seq: u64,
    /// The event log's head: one entry per change.
    log_head: u64,
}

impl Model {
    fn name_taken(&self, namespace: &str, name: &str) -> bool {
        self.jobs.values().any(|j| j.namespace == namespace && j.name == name)
    }

    fn add_history(
        &mut self,
        job: &Job,
        level: HistoryLevel,
        execution: Option<&ExecutionId>,
        event: Event,
        now: Timestamp,
    ) {
        self.history_seq += 1;
        let entry = JobHistory {
            seq: self.history_seq,
            level,
            job_id: job.id.clone(),
            job_version: job.version,
            execution_id: execution.cloned(),
            event,
            time: now,
        };
        self.history.entry(job.id.clone()).or_default().push(entry);
    }

    /// Stores `job` as the current job, and as its current version when `version`.
    fn store(&mut self, job: Job, version: bool) {
        if version {
            self.versions.entry(job.id.clone()).or_default().insert(job.version, job.clone());
        }
        self.jobs.insert(job.id.clone(), job);
        self.log_head += 1;
    }

    /// A write to what belongs to `id`: a finished job's modify time moves (logged).
    fn touch_owner(&mut self, id: &JobId, now: Timestamp) {
        if let Some(job) = self.jobs.get(id) {
            if job.state().is_terminal() {
                let mut next = job.clone();
                next.modify_time = now;
                self.store(next, false);
            }
        }
    }

    /// The job after a conditional state change, or why the change is refused.
    fn state_change(&self, req: &UpdateJobStateRequest, now: Timestamp) -> std::result::Result<Job, Class> {
        let cur = self.jobs.get(&req.job_id).ok_or(Class::NotFound)?;
        let c = &req.condition;
        if !c.expected_states.is_empty() && !c.expected_states.contains(&cur.state()) {
            return Err(Class::Conflict);
        }
        if c.unexpected_states.contains(&cur.state()) {
            return Err(Class::Conflict);
        }
        if c.expected_revision.is_some_and(|r| r != cur.revision) {
            return Err(Class::Conflict);
        }
        if cur.state().is_terminal() {
            return Err(Class::Conflict);
        }
        let mut next = cur.clone();
        next.state.state = req.new_state;
        next.state.message = req.message.clone();
        next.revision += 1;
        next.modify_time = now;
        if req.new_state.is_terminal() {
            next.finished_time = Some(now);
        }
        // A queue job that moves into Running from another state was grabbed now, again
        // after a requeue, whichever call moved it.
        if next.queue.is_some() && req.new_state == JobState::Running && cur.state() != JobState::Running {
            next.grabbed_time = Some(now);
        }
        Ok(next)
    }

    /// Records a state change made by `state_change`: stored as the current version,
    /// with its history entries (the state change, then the caller's events).
    fn commit_state_change(&mut self, before: JobState, next: Job, extra: &[Event], now: Timestamp) -> Job {
        self.add_history(&next, HistoryLevel::Job, None, rules::job_state_event(before, &next, now), now);
        for e in extra {
            self.add_history(&next, HistoryLevel::Job, None, e.clone(), now);
        }
        self.store(next.clone(), true);
        next
    }

    fn create(&mut self, job: &Job, now: Timestamp) -> Answer {
        if !valid_name(&job.name) || !valid_name(&job.namespace) {
            return Err(Class::Invalid);
        }
        // A purged id stays taken by its archive (`AlreadyPurged`, one of the
        // already-exists answers).
        if self.jobs.contains_key(&job.id) || self.purged.contains_key(&job.id) {
            return Err(Class::AlreadyExists);
        }
        if self.name_taken(&job.namespace, &job.name) {
            return Err(Class::AlreadyExists);
        }
        let mut j = job.clone();
        j.version = 1;
        j.revision = 1;
        j.create_time = now;
        j.modify_time = now;
        j.last_accessed_time = now;
        if j.state().is_terminal() {
            j.finished_time = Some(now);
        }
        self.history.insert(j.id.clone(), Vec::new());
        self.versions.insert(j.id.clone(), BTreeMap::new());
        self.add_history(&j, HistoryLevel::Job, None, rules::submission_event(&j, now), now);
        self.store(j.clone(), true);
        Ok(Value::Job(Box::new(j)))
    }

    /// Removes a job with everything it owns; `false` when it is not stored.
    fn remove(&mut self, id: &JobId) -> bool {
        if self.jobs.remove(id).is_none() {
            return false;
        }
        self.versions.remove(id);
        self.history.remove(id);
        let evals = self.evals.len();
        self.evals.retain(|_, e| &e.job_id != id);
        let execs = self.execs.len();
        self.execs.retain(|_, e| &e.job_id != id);
        // A plain delete logs each evaluation and execution it removed, then the job.
        self.log_head += (evals - self.evals.len() + execs - self.execs.len()) as u64;
        true
    }

    fn apply(&mut self, call: &Call, now: Timestamp) -> Answer {
        match call {
            Call::CreateJob(job) => self.create(job, now),
            Call::Enqueue(queue, job) => {
                if !valid_name(queue) {
                    return Err(Class::Invalid);
                }
                let mut j = job.clone();
                j.queue = Some(queue.clone());
                j.state.state = JobState::Queued;
                self.create(&j, now)
            }
            Call::UpdateJob(update) => {
                let cur = self.jobs.get(&update.id).ok_or(Class::NotFound)?.clone();
                if !valid_name(&update.name) || !valid_name(&update.namespace) {
                    return Err(Class::Invalid);
                }
                if update.revision != cur.revision || cur.state().is_terminal() {
                    return Err(Class::Conflict);
                }
                if update.namespace != cur.namespace {
                    return Err(Class::Invalid);
                }
                if update.name != cur.name && self.name_taken(&update.namespace, &update.name) {
                    return Err(Class::AlreadyExists);
                }
                // The caller's spec; the store keeps id, state, times and queue.
                let next = Job {
                    state: cur.state.clone(),
                    version: cur.version + 1,
                    revision: cur.revision + 1,
                    create_time: cur.create_time,
                    modify_time: now,
                    grabbed_time: cur.grabbed_time,
                    finished_time: cur.finished_time,
                    last_accessed_time: cur.last_accessed_time,
                    queue: cur.queue.clone(),
                    ..update.clone()
                };
                self.add_history(&next, HistoryLevel::Job, None, rules::spec_update_event(&next, now), now);
                self.store(next.clone(), true);
                Ok(Value::Job(Box::new(next)))
            }
            Call::UpdateJobState(req) => {
                let next = self.state_change(req, now)?;
                let before = self.jobs[&req.job_id].state();
                Ok(Value::Job(Box::new(self.commit_state_change(before, next, &req.events, now))))
            }
            Call::GrabNext(queue) => {
                if !valid_name(queue) {
                    return Err(Class::Invalid);
                }
                // The oldest waiting job of the queue (by create time, then id).
                let first = self
                    .jobs
                    .values()
                    .filter(|j| j.queue.as_deref() == Some(queue.as_str()) && j.state() == JobState::Queued)
                    .min_by(|a, b| (a.create_time, &a.id).cmp(&(b.create_time, &b.id)))
                    .map(|j| j.id.clone());
                let Some(id) = first else { return Ok(Value::Grabbed(None)) };
                let req = UpdateJobStateRequest::new(id, JobState::Running, "grabbed from queue");
                let mut next = self.state_change(&req, now)?;
                next.last_accessed_time = now;
                Ok(Value::Grabbed(Some(Box::new(self.commit_state_change(JobState::Queued, next, &[], now)))))
            }
            Call::Finish(id, outcome, files) => {
                let cur = self.jobs.get(id).ok_or(Class::NotFound)?;
                if cur.state() != JobState::Running {
                    return Err(Class::Conflict);
                }
                let (state, message) = match outcome {
                    JobOutcome::Completed => (JobState::Completed, "job completed".to_owned()),
                    JobOutcome::Failed { message } => (JobState::Failed, message.clone()),
                };
                let mut next = self.state_change(&UpdateJobStateRequest::new(id.clone(), state, message), now)?;
                next.output_files = files.clone();
                next.last_accessed_time = now;
                Ok(Value::Job(Box::new(self.commit_state_change(JobState::Running, next, &[], now))))
            }
            Call::Touch(id) => {
                let mut next = self.jobs.get(id).ok_or(Class::NotFound)?.clone();
                next.last_accessed_time = now;
                self.store(next.clone(), false);
                Ok(Value::Job(Box::new(next)))
            }
            Call::Expire(idle_for) => {
                // The cut-off is read from the clock first; the bounded write that expires
                // the jobs reads it again. Only queue jobs (enqueued ones) expire: a job
                // that is Queued or Running without a queue does not.
                let cutoff = now.saturating_sub(*idle_for);
                let write = plus_one(now);
                let mut idle: Vec<&Job> = self
                    .jobs
                    .values()
                    .filter(|j| {
                        j.queue.is_some()
                            && matches!(j.state(), JobState::Queued | JobState::Running)
                            && j.last_accessed_time < cutoff
                    })
                    .collect();
                idle.sort_by(|a, b| (a.last_accessed_time, &a.id).cmp(&(b.last_accessed_time, &b.id)));
                let ids: Vec<JobId> = idle.into_iter().map(|j| j.id.clone()).collect();
                let message = format!("not accessed for {}s", idle_for.as_secs());
                for id in &ids {
                    let req = UpdateJobStateRequest::new(id.clone(), JobState::Expired, message.clone());
                    let before = self.jobs[id].state();
                    let next = self.state_change(&req, write).expect("an idle job can expire");
                    self.commit_state_change(before, next, &[], write);
                }
                Ok(Value::Ids(ids))
            }
            Call::AddJobEvents(id, events) => {
                let job = self.jobs.get(id).ok_or(Class::NotFound)?.clone();
                for e in events {
                    self.add_history(&job, HistoryLevel::Job, None, e.clone(), now);
                }
                self.touch_owner(id, now);
                Ok(Value::Unit)
            }
            Call::CreateEvaluation(eval) => {
                if !valid_name(&eval.namespace) {
                    return Err(Class::Invalid);
                }
                if !self.jobs.contains_key(&eval.job_id) {
                    return Err(Class::NotFound);
                }
                if self.evals.contains_key(&eval.id) {
                    return Err(Class::AlreadyExists);
                }
                let mut e = eval.clone();
                e.create_time = now;
                e.modify_time = now;
                self.evals.insert(e.id.clone(), e.clone());
                self.log_head += 1;
                self.touch_owner(&e.job_id, now);
                Ok(Value::Evaluation(Box::new(e)))
            }
            Call::UpdateEvaluation(update) => {
                let cur = self.evals.get(&update.id).ok_or(Class::NotFound)?.clone();
                if !valid_name(&update.namespace) {
                    return Err(Class::Invalid);
                }
                // The caller's fields; its job, namespace (the trait docs name only the job
                // and times) and create time stay.
                let next = Evaluation {
                    job_id: cur.job_id.clone(),
                    namespace: cur.namespace.clone(),
                    create_time: cur.create_time,
                    modify_time: now,
                    ..update.clone()
                };
                self.evals.insert(next.id.clone(), next.clone());
                self.log_head += 1;
                self.touch_owner(&next.job_id, now);
                Ok(Value::Evaluation(Box::new(next)))
            }
            Call::DeleteEvaluation(id) => {
                let gone = self.evals.remove(id).ok_or(Class::NotFound)?;
                self.log_head += 1;
                self.touch_owner(&gone.job_id, now);
                Ok(Value::Unit)
            }
            Call::CreateExecution(x) => {
                if !valid_name(&x.namespace) || x.job.id != x.job_id {
                    return Err(Class::Invalid);
                }
                if x.state() != ExecutionState::Created {
                    return Err(Class::Conflict);
                }
                let job = self.jobs.get(&x.job_id).ok_or(Class::NotFound)?.clone();
                if self.execs.contains_key(&x.id) {
                    return Err(Class::AlreadyExists);
                }
                let mut x = x.clone();
                x.revision = 1;
                x.create_time = now;
                x.modify_time = now;
                self.execs.insert(x.id.clone(), x.clone());
                let event = rules::execution_created_event(&x, now);
                self.add_history(&job, HistoryLevel::Execution, Some(&x.id), event, now);
                self.log_head += 1;
                self.touch_owner(&job.id, now);
                Ok(Value::Execution(Box::new(x)))
            }
            Call::UpdateExecution(req) => {
                let cur = self.execs.get(&req.execution_id).ok_or(Class::NotFound)?.clone();
                let c = &req.condition;
                if (!c.expected_states.is_empty() && !c.expected_states.contains(&cur.state()))
                    || c.unexpected_states.contains(&cur.state())
                    || c.expected_revision.is_some_and(|r| r != cur.revision)
                    || cur.state().is_terminal()
                {
                    return Err(Class::Conflict);
                }
                let job = self.jobs.get(&cur.job_id).ok_or(Class::NotFound)?.clone();
                let mut next = cur.clone();
                let v = &req.new_values;
                if let Some(s) = &v.compute_state {
                    next.compute_state = s.clone();
                }
                if let Some(n) = &v.node_id {
                    next.node_id = Some(n.clone());
                }
                next.revision += 1;
                next.modify_time = now;
                self.execs.insert(next.id.clone(), next.clone());
                if next.state() != cur.state() {
                    let event = rules::execution_state_event(cur.state(), &next, now);
                    self.add_history(&job, HistoryLevel::Execution, Some(&next.id), event, now);
                }
                for e in &req.events {
                    self.add_history(&job, HistoryLevel::Execution, Some(&next.id), e.clone(), now);
                }
                self.log_head += 1;
                self.touch_owner(&job.id, now);
                Ok(Value::Execution(Box::new(next)))
            }
            Call::DeleteJob(id) => {
                if !self.remove(id) {
                    return Err(Class::NotFound);
                }
                self.log_head += 1;
                Ok(Value::Unit)
            }
            Call::PurgeJobs(list, archive) => {
                let mut purged = 0;
                for (id, stamp) in list {
                    let Some(job) = self.jobs.get(id) else { continue };
                    let current = JobStamp {
                        revision: job.revision,
                        modify_time: job.modify_time,
                        last_accessed_time: job.last_accessed_time,
                    };
                    if current != *stamp {
                        continue;
                    }
                    // The archive holds the rest: only the job's own delete is logged.
                    let log = self.log_head;
                    self.remove(id);
                    self.log_head = log + 1;
                    self.purged.insert(id.clone(), archive.clone());
                    purged += 1;
                }
                Ok(Value::Count(purged))
            }
        }
    }

    /// Terminal jobs last modified at or before `before`, oldest modify time (then id)
    /// first.
    fn purgeable(&self, before: Timestamp) -> Vec<Job> {
        let mut out: Vec<Job> =
            self.jobs.values().filter(|j| j.state().is_terminal() && j.modify_time <= before).cloned().collect();
        out.sort_by(|a, b| (a.modify_time, &a.id).cmp(&(b.modify_time, &b.id)));
        out
    }

    fn evaluations_of(&self, id: &JobId) -> Vec<Evaluation> {
        self.evals.values().filter(|e| &e.job_id == id).cloned().collect()
    }

    fn bundle(&self, id: &JobId) -> std::result::Result<JobBundle, Class> {
        let job = self.jobs.get(id).ok_or(Class::NotFound)?.clone();
        Ok(JobBundle {
            job,
            versions: self.versions[id].values().cloned().collect(),
            history: self.history[id].clone(),
            evaluations: self.evaluations_of(id),
            executions: self.execs.values().filter(|x| &x.job_id == id).cloned().collect(),
        })
    }

    /// What `get_job` answers.
    fn get_job(&self, id: &JobId) -> std::result::Result<Job, Class> {
        match (self.jobs.get(id), self.purged.get(id)) {
            (Some(job), _) => Ok(job.clone()),
            (None, Some(archive)) => Err(Class::Archived(archive.clone())),
            (None, None) => Err(Class::NotFound),
        }
    }
}

fn job_state() -> impl Strategy<Value = JobState> {
    prop_oneof![
        3 => Just(JobState::Queued),
        3 => Just(JobState::Running),
        4 => prop::sample::select(JobState::ALL.to_vec()),
    ]
}

fn exec_state() -> impl Strategy<Value = ExecutionState> {
    prop::sample::select(ExecutionState::ALL.to_vec())
}

/// A name index: mostly valid names, sometimes one a store must refuse.
fn name() -> impl Strategy<Value = u8> {
    prop_oneof![12 => 0u8..4, 1 => 4u8..6]
}

/// A new job's name: mostly its own (`None`), sometimes one another job may hold.
fn new_name() -> impl Strategy<Value = Option<u8>> {
    prop_oneof![6 => Just(None), 2 => name().prop_map(Some)]
}

/// A state condition: mostly none, else one or two states.
fn states<S: Clone + std::fmt::Debug>(s: impl Strategy<Value = S>) -> impl Strategy<Value = Vec<S>> {
    prop_oneof![3 => Just(Vec::new()), 2 => prop::collection::vec(s, 1..3)]
}

fn create() -> impl Strategy<Value = Op> {
    let state = prop::sample::select(vec![
        JobState::Pending,
        JobState::Pending,
        JobState::Queued,
        JobState::Running,
        JobState::Completed,
        JobState::Failed,
    ]);
    (0..JOBS, new_name(), 0u8..2, any::<bool>(), state, prop::option::of(0u8..2))
        .prop_map(|(job, name, ns, service, state, label)| Op::Create { job, name, ns, service, state, label })
}

fn enqueue() -> impl Strategy<Value = Op> {
    (0..JOBS, new_name(), 0u8..2, prop_oneof![12 => 0u8..2, 1 => Just(2u8)])
        .prop_map(|(job, name, ns, queue)| Op::Enqueue { job, name, ns, queue })
}

fn create_exec() -> impl Strategy<Value = Op> {
    (0..EXECS, 0..JOBS, prop::bool::weighted(0.1)).prop_map(|(exec, job, bad)| Op::CreateExec { exec, job, bad })
}

/// A sequence: a few creates and enqueues, maybe executions of them, then anything.
fn ops() -> impl Strategy<Value = Vec<Op>> {
    let jobs = prop::collection::vec(prop_oneof![create(), enqueue()], 2..6);
    (jobs, prop::collection::vec(create_exec(), 0..3), prop::collection::vec(op(), 1..80)).prop_map(
        |(mut start, execs, rest)| {
            start.extend(execs);
            start.extend(rest);
            start
        },
    )
}

fn rev() -> impl Strategy<Value = Rev> {
    prop_oneof![2 => Just(Rev::Any), 2 => Just(Rev::Current), 1 => Just(Rev::Stale)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => create(),
        3 => enqueue(),
        3 => (0..JOBS, prop::bool::weighted(0.2), prop::option::weighted(0.3, name()),
              prop::option::weighted(0.1, 0u8..2), 0u8..4, prop::option::of(0u8..2))
            .prop_map(|(job, stale, name, ns, config, label)| Op::UpdateJob { job, stale, name, ns, config, label }),
        8 => (0..JOBS, job_state(), states(job_state()), states(job_state()), rev(), 0u8..3)
            .prop_map(|(job, to, expect, unexpected, rev, events)| Op::UpdateState { job, to, expect, unexpected, rev, events }),
        6 => prop_oneof![12 => 0u8..2, 1 => Just(2u8)].prop_map(|queue| Op::Grab { queue }),
        4 => (0..JOBS, any::<bool>(), 0u8..3).prop_map(|(job, failed, outputs)| Op::Finish { job, failed, outputs }),
        2 => (0..JOBS).prop_map(|job| Op::Touch { job }),
        2 => (0..IDLE.len() as u8).prop_map(|idle| Op::Expire { idle }),
        4 => (0..STEPS.len() as u8).prop_map(|step| Op::Advance { step }),
        2 => (0..JOBS, 0u8..3).prop_map(|(job, n)| Op::AddEvents { job, n }),
        2 => (0..EVALS, 0..JOBS, prop::bool::weighted(0.1), any::<i8>())
            .prop_map(|(eval, job, bad_ns, priority)| Op::CreateEval { eval, job, bad_ns, priority }),
        2 => (0..EVALS, 0..JOBS, prop_oneof![9 => 0u8..2, 1 => Just(2u8)], any::<i8>(), 0u8..5)
            .prop_map(|(eval, other_job, ns, priority, status)| Op::UpdateEval { eval, other_job, ns, priority, status }),
        2 => (0..EVALS).prop_map(|eval| Op::DeleteEval { eval }),
        4 => create_exec(),
        4 => (0..EXECS, exec_state(), states(exec_state()), rev(),
              prop::option::of(0u8..2), 0u8..3)
            .prop_map(|(exec, to, expect, rev, node, events)| Op::UpdateExec { exec, to, expect, rev, node, events }),
        1 => (0..JOBS).prop_map(|job| Op::DeleteJob { job }),
        4 => (0..AGES.len() as u8, 1u8..4, 1u8..4, prop::option::weighted(0.3, (0u8..4, any::<bool>())),
              prop::option::weighted(0.2, 0..JOBS))
            .prop_map(|(age, page, max, disturb, ghost)| Op::Purge { age, page, max, disturb, ghost }),
        1 => Just(Op::Reopen),
    ]
}

/// The concrete call of a simple op, built from what the model holds (a caller's view).
fn call_for(model: &Model, op: &Op) -> Call {
    match op {
        Op::Create { job, name, ns, service, state, label } => {
            let mut j = Job::new(job_id(*job), NAMES[usize::from(name.unwrap_or(*job))]);
            j.namespace = NAMESPACES[usize::from(*ns)].to_owned();
            j.job_type = if *service { JobType::Service } else { JobType::Batch };
            j.state.state = *state;
            j.state.message = "submitted".into();
            if let Some(l) = label {
                j.labels.insert("tier".into(), format!("t{l}"));
            }
            j.config = "c0".into();
            j.input_files = vec![format!("in-{job}")];
            j.revision = 9;
            Call::CreateJob(with_junk_store_fields(j))
        }
        Op::Enqueue { job, name, ns, queue } => {
            let mut j = Job::new(job_id(*job), NAMES[usize::from(name.unwrap_or(*job))]);
            j.namespace = NAMESPACES[usize::from(*ns)].to_owned();
            // Enqueue decides the state and the queue, whatever the caller passed.
            j.state.state = JobState::Completed;
            j.queue = Some("elsewhere".into());
            Call::Enqueue(QUEUES[usize::from(*queue)].to_owned(), with_junk_store_fields(j))
        }
        Op::UpdateJob { job, stale, name, ns, config, label } => {
            let id = job_id(*job);
            let mut j = model.jobs.get(&id).cloned().unwrap_or_else(|| {
                let mut j = Job::new(id, "n0");
                j.namespace = "a".into();
                j.revision = 1;
                j
            });
            if *stale {
                j.revision += 1;
            }
            if let Some(n) = name {
                j.name = NAMES[usize::from(*n)].to_owned();
            }
            if let Some(ns) = ns {
                j.namespace = NAMESPACES[usize::from(*ns)].to_owned();
            }
            j.config = format!("c{config}");
            match label {
                Some(l) => j.labels.insert("tier".into(), format!("t{l}")),
                None => j.labels.remove("tier"),
            };
            // What the store owns is kept whatever the caller passes.
            j.state.state = JobState::Stopped;
            j.state.message = "junk".into();
            j.grabbed_time = Some(Timestamp::from_secs(6));
            j.finished_time = Some(Timestamp::from_secs(7));
            j.queue = Some("junk-queue".into());
            Call::UpdateJob(with_junk_store_fields(j))
        }
        Op::UpdateState { job, to, expect, unexpected, rev, events } => {
            let id = job_id(*job);
            let current = model.jobs.get(&id).map_or(1, |j| j.revision);
            let mut req = UpdateJobStateRequest::new(id, *to, format!("to {to}"))
                .expect_states(expect.iter().copied())
                .unexpected_states(unexpected.iter().copied());
            if let Some(revision) = rev.expected(current) {
                req = req.expect_revision(revision);
            }
            req.events = (0..*events).map(|i| test_event("s", i)).collect();
            Call::UpdateJobState(req)
        }
        Op::Grab { queue } => Call::GrabNext(QUEUES[usize::from(*queue)].to_owned()),
        Op::Finish { job, failed, outputs } => {
            let outcome = if *failed { JobOutcome::Failed { message: "exit 1".into() } } else { JobOutcome::Completed };
            Call::Finish(job_id(*job), outcome, (0..*outputs).map(|i| format!("out-{i}")).collect())
        }
        Op::Touch { job } => Call::Touch(job_id(*job)),
        Op::Expire { idle } => Call::Expire(Duration::from_secs(IDLE[usize::from(*idle)])),
        Op::AddEvents { job, n } => Call::AddJobEvents(job_id(*job), (0..*n).map(|i| test_event("a", i)).collect()),
        Op::CreateEval { eval, job, bad_ns, priority } => {
            let ns = if *bad_ns { "" } else { "a" };
            let mut e = Evaluation::new(eval_id(*eval), ns, job_id(*job));
            e.priority = i32::from(*priority);
            e.triggered_by = "job-register".into();
            e.create_time = Timestamp::from_secs(2);
            Call::CreateEvaluation(e)
        }
        Op::UpdateEval { eval, other_job, ns, priority, status } => {
            let id = eval_id(*eval);
            // A caller's update: the fields it means to set, and a job, namespace and
            // times the store keeps as they are.
            let ns = ["a", "b", ""][usize::from(*ns)];
            let mut e = Evaluation::new(id, ns, job_id(*other_job));
            e.priority = i32::from(*priority);
            e.status = [
                EvaluationStatus::Pending,
                EvaluationStatus::Blocked,
                EvaluationStatus::Complete,
                EvaluationStatus::Failed,
                EvaluationStatus::Cancelled,
            ][usize::from(*status)];
            e.comment = format!("p{priority}");
            e.wait_until = Some(Timestamp::from_secs(9));
            e.create_time = Timestamp::from_secs(2);
            e.modify_time = Timestamp::from_secs(2);
            Call::UpdateEvaluation(e)
        }
        Op::DeleteEval { eval } => Call::DeleteEvaluation(eval_id(*eval)),
        Op::CreateExec { exec, job, bad } => {
            let snapshot = Job::new(job_id(*job), "snapshot");
            let mut x = Execution::new(exec_id(*exec), &snapshot);
            if *bad {
                x.job_id = job_id((*job + 1) % JOBS);
            }
            x.name = format!("run-{exec}");
            x.revision = 5;
            x.create_time = Timestamp::from_secs(2);
            Call::CreateExecution(x)
        }
        Op::UpdateExec { exec, to, expect, rev, node, events } => {
            let id = exec_id(*exec);
            let current = model.execs.get(&id).map_or(1, |x| x.revision);
            let mut req = UpdateExecutionRequest::to_state(id, *to, format!("to {to}"))
                .expect_states(expect.iter().copied())
                .with_events((0..*events).map(|i| test_event("x", i)));
            req.new_values.compute_state = Some(ComputeState::new(*to, format!("to {to}")));
            req.new_values.node_id = node.map(node_id);
            if let Some(revision) = rev.expected(current) {
                req = req.expect_revision(revision);
            }
            Call::UpdateExecution(req)
        }
        Op::DeleteJob { job } => Call::DeleteJob(job_id(*job)),
        Op::Purge { .. } | Op::Advance { .. } | Op::Reopen => unreachable!("handled by the driver"),
    }
}

async fn run_call(store: &dyn JobStore, call: &Call) -> std::result::Result<Answer, String> {
    let job = |j: brine_store::model::Job| Value::Job(Box::new(j));
    match call.clone() {
        Call::CreateJob(j) => answer(store.create_job(j).await, job),
        Call::Enqueue(q, j) => answer(store.enqueue(&q, j).await, job),
        Call::UpdateJob(j) => answer(store.update_job(j).await, job),
        Call::UpdateJobState(r) => answer(store.update_job_state(r).await, job),
        Call::GrabNext(q) => answer(store.grab_next(&q).await, |j| Value::Grabbed(j.map(Box::new))),
        Call::Finish(id, o, files) => answer(store.finish(&id, o, files).await, job),
        Call::Touch(id) => answer(store.touch_job(&id).await, job),
        Call::Expire(d) => answer(store.expire(d).await, Value::Ids),
        Call::AddJobEvents(id, events) => answer(store.add_job_event(&id, events).await, |()| Value::Unit),
        Call::CreateEvaluation(e) => answer(store.create_evaluation(e).await, |e| Value::Evaluation(Box::new(e))),
        Call::UpdateEvaluation(e) => answer(store.update_evaluation(e).await, |e| Value::Evaluation(Box::new(e))),
        Call::DeleteEvaluation(id) => answer(store.delete_evaluation(&id).await, |()| Value::Unit),
        Call::CreateExecution(x) => answer(store.create_execution(x).await, |x| Value::Execution(Box::new(x))),
        Call::UpdateExecution(r) => answer(store.update_execution(r).await, |x| Value::Execution(Box::new(x))),
        Call::DeleteJob(id) => answer(store.delete_job(&id).await, |()| Value::Unit),
        Call::PurgeJobs(list, archive) => answer(store.purge_jobs(&list, &archive).await, Value::Count),
    }
}

/// Runs one call on the store and the model (at the clock's current time) and compares
/// what each answered.
async fn step_call(env: &Env, model: &mut Model, call: &Call) -> std::result::Result<(), String> {
    let now = env.clock.peek();
    let got = run_call(&*env.jobs(), call).await?;
    let want = model.apply(call, now);
    if got != want {
        return Err(format!("{call:?}\n  store answered {got:?}\n  model answered {want:?}"));
    }
    Ok(())
}

/// The purge step: candidates (paged), bundles, an optional write after bundling, then
/// the purge with the bundles' stamps.
async fn purge_step(env: &Env, model: &mut Model, op: &Op, archive: String) -> std::result::Result<(), String> {
    let Op::Purge { age, page, max, disturb, ghost } = op else { unreachable!() };
    let store = env.jobs();
    let before = env.clock.peek().saturating_sub(Duration::from_secs(AGES[usize::from(*age)]));
    let page = usize::from(*page);
    let want = model.purgeable(before);
    let mut got: Vec<Job> = Vec::new();
    let mut after = None;
    for _ in 0..=want.len() + 1 {
        let batch = store.purgeable_jobs(before, after.clone(), page).await.map_err(|e| e.to_string())?;
        let full = batch.len() == page;
        after = batch.last().map(|j| (j.modify_time, j.id.clone()));
        got.extend(batch);
        if !full {
            break;
        }
    }
    if got != want {
        return Err(format!("purgeable_jobs before {before}: store has {got:#?}\nmodel has {want:#?}"));
    }
    let mut stamps = Vec::new();
    for job in want.iter().take(usize::from(*max)) {
        let bundle = store.job_bundle(&job.id).await.map_err(|e| class(&e).map_or_else(|e| e, |c| format!("{c:?}")));
        let expected = model.bundle(&job.id).map_err(|c| format!("{c:?}"));
        if bundle != expected {
            return Err(format!("job_bundle({}): store has {bundle:#?}\nmodel has {expected:#?}", job.id));
        }
        stamps.push((job.id.clone(), bundle.expect("compared equal to an Ok").stamp()));
    }
    // The same jobs read as one page, with an id that is not there in the middle.
    let mut page: Vec<JobId> = stamps.iter().map(|(id, _)| id.clone()).collect();
    page.insert(page.len() / 2, JobId::new("no-such-job").expect("id"));
    let bundles = store.job_bundles(&page).await.map_err(|e| format!("job_bundles: {e}"))?;
    let expected: Vec<Option<JobBundle>> = page.iter().map(|id| model.bundle(id).ok()).collect();
    if bundles != expected {
        return Err(format!("job_bundles({page:?}): store has {bundles:#?}\nmodel has {expected:#?}"));
    }
    if let (Some((k, touch)), false) = (disturb, stamps.is_empty()) {
        let id = stamps[usize::from(*k) % stamps.len()].0.clone();
        let call = if *touch { Call::Touch(id) } else { Call::AddJobEvents(id, vec![test_event("late", 0)]) };
        step_call(env, model, &call).await.map_err(|e| format!("write after bundling: {e}"))?;
    }
    if let Some(g) = ghost {
        let stamp = stamps.first().map_or(
            JobStamp { revision: 1, modify_time: Timestamp::ZERO, last_accessed_time: Timestamp::ZERO },
            |(_, s)| *s,
        );
        stamps.push((job_id(*g), stamp));
    }
    step_call(env, model, &Call::PurgeJobs(stamps, archive)).await
}

/// A history read in pages of [`PAGE`], following the token: each page's entries and
/// whether it had a token. Ends at a page without a token, or at an empty page (an
/// unfinished job's history always has a token to read on from).
async fn read_history(
    store: &dyn JobStore,
    id: &JobId,
    level: Option<HistoryLevel>,
) -> std::result::Result<std::result::Result<Vec<(Vec<JobHistory>, bool)>, Class>, String> {
    let mut pages = Vec::new();
    let mut token = None;
    for _ in 0..1000 {
        let query = HistoryQuery { level, limit: PAGE, token: token.clone(), ..HistoryQuery::default() };
        let page = match store.get_job_history(id, &query).await {
            Ok(p) => p,
            Err(e) => return Ok(Err(class(&e)?)),
        };
        let empty = page.entries.is_empty();
        pages.push((page.entries, page.next_token.is_some()));
        token = page.next_token;
        if token.is_none() || empty {
            return Ok(Ok(pages));
        }
    }
    Err(format!("history of {id} never ends"))
}

/// The pages [`read_history`] must see: chunks of [`PAGE`] entries, each with a token
/// while more follow; the last one has a token only for an unfinished job, whose reader
/// then reads one empty page (with a token) too.
fn expected_pages(entries: &[JobHistory], terminal: bool) -> Vec<(Vec<JobHistory>, bool)> {
    let mut pages: Vec<(Vec<JobHistory>, bool)> = entries.chunks(PAGE).map(|c| (c.to_vec(), true)).collect();
    match pages.last_mut() {
        Some(last) => {
            last.1 = !terminal;
            if !terminal {
                pages.push((Vec::new(), true));
            }
        }
        None => pages.push((Vec::new(), !terminal)),
    }
    pages
}

/// A job listing read in pages of [`PAGE`], following the token.
async fn read_listing(
    store: &dyn JobStore,
    sort: JobSort,
    order: SortOrder,
) -> std::result::Result<Vec<Vec<Job>>, String> {
    let mut pages = Vec::new();
    let mut token = None;
    for _ in 0..100 {
        let query = JobQuery { sort, order, limit: PAGE, token: token.clone(), ..JobQuery::default() };
        let page = store.list_jobs(&query).await.map_err(|e| e.to_string())?;
        pages.push(page.jobs);
        token = page.next_token;
        if token.is_none() {
            return Ok(pages);
        }
    }
    Err("listing never ends".into())
}

/// A read's value, or the class of its error.
fn ok_or_class<T>(r: brine_store::Result<T>) -> std::result::Result<std::result::Result<T, Class>, String> {
    match r {
        Ok(v) => Ok(Ok(v)),
        Err(e) => Ok(Err(class(&e)?)),
    }
}

fn mismatch(what: &str, got: &dyn std::fmt::Debug, want: &dyn std::fmt::Debug) -> String {
    format!("{what}:\n  store has {got:?}\n  model has {want:?}")
}

/// Compares everything the store answers about the id space with the model.
async fn compare(store: &dyn JobStore, model: &Model) -> std::result::Result<(), String> {
    for j in 0..JOBS {
        let id = job_id(j);
        let got = ok_or_class(store.get_job(&id).await)?;
        let want = model.get_job(&id);
        if got != want {
            return Err(mismatch(&format!("get_job({id})"), &got, &want));
        }
        let stored = model.jobs.get(&id);
        let got = ok_or_class(store.get_job_versions(&id).await)?;
        let want = stored.map(|_| model.versions[&id].values().cloned().collect::<Vec<_>>()).ok_or(Class::NotFound);
        if got != want {
            return Err(mismatch(&format!("get_job_versions({id})"), &got, &want));
        }
        for level in [None, Some(HistoryLevel::Execution)] {
            let got = read_history(store, &id, level).await?;
            let want = stored
                .map(|job| {
                    let entries: Vec<JobHistory> =
                        model.history[&id].iter().filter(|h| level.is_none_or(|l| h.level == l)).cloned().collect();
                    expected_pages(&entries, job.state().is_terminal())
                })
                .ok_or(Class::NotFound);
            if got != want {
                return Err(mismatch(&format!("history of {id} (level {level:?}) in pages"), &got, &want));
            }
        }
        let got = ok_or_class(store.get_evaluations(&id).await)?;
        let want = stored.map(|_| model.evaluations_of(&id)).ok_or(Class::NotFound);
        if got != want {
            return Err(mismatch(&format!("get_evaluations({id})"), &got, &want));
        }
        let got = store.get_executions_for_job(&id).await.map_err(|e| e.to_string())?;
        let mut want: Vec<Execution> = model.execs.values().filter(|x| x.job_id == id).cloned().collect();
        want.sort_by(|a, b| b.modify_time.cmp(&a.modify_time).then_with(|| a.id.cmp(&b.id)));
        if got != want {
            return Err(mismatch(&format!("get_executions_for_job({id}), newest first"), &got, &want));
        }
    }
    for e in 0..EVALS {
        let id = eval_id(e);
        let got = ok_or_class(store.get_evaluation(&id).await)?;
        let want = model.evals.get(&id).cloned().ok_or(Class::NotFound);
        if got != want {
            return Err(mismatch(&format!("get_evaluation({id})"), &got, &want));
        }
    }
    for x in 0..EXECS {
        let id = exec_id(x);
        let got = ok_or_class(store.get_execution(&id).await)?;
        let want = model.execs.get(&id).cloned().ok_or(Class::NotFound);
        if got != want {
            return Err(mismatch(&format!("get_execution({id})"), &got, &want));
        }
    }
    for n in 0..NODES.len() as u8 {
        let node = node_id(n);
        let got = store.get_executions_for_node(&node).await.map_err(|e| e.to_string())?;
        let mut want: Vec<Execution> =
            model.execs.values().filter(|x| x.node_id.as_ref() == Some(&node)).cloned().collect();
        want.sort_by(|a, b| b.modify_time.cmp(&a.modify_time).then_with(|| a.id.cmp(&b.id)));
        if got != want {
            return Err(mismatch(&format!("get_executions_for_node({node})"), &got, &want));
        }
    }
    for ty in [None, Some(JobType::Batch), Some(JobType::Service)] {
        let got = store.get_in_progress_jobs(ty).await.map_err(|e| e.to_string())?;
        let want: Vec<Job> = model
            .jobs
            .values()
            .filter(|j| !j.state().is_terminal() && ty.is_none_or(|t| j.job_type == t))
            .cloned()
            .collect();
        if got != want {
            return Err(mismatch(&format!("get_in_progress_jobs({ty:?})"), &got, &want));
        }
    }
    for ns in NAMESPACES {
        for name in &NAMES[..4] {
            let got = ok_or_class(store.get_job_by_name(ns, name).await)?;
            let want =
                model.jobs.values().find(|j| j.namespace == ns && j.name == *name).cloned().ok_or(Class::NotFound);
            if got != want {
                return Err(mismatch(&format!("get_job_by_name({ns}, {name})"), &got, &want));
            }
        }
    }
    for (sort, order) in [(JobSort::CreateTime, SortOrder::Ascending), (JobSort::ModifyTime, SortOrder::Descending)] {
        let got = read_listing(store, sort, order).await?;
        let mut all: Vec<Job> = model.jobs.values().cloned().collect();
        all.sort_by(|a, b| match sort {
            JobSort::CreateTime => (a.create_time, &a.id).cmp(&(b.create_time, &b.id)),
            JobSort::ModifyTime => (a.modify_time, &a.id).cmp(&(b.modify_time, &b.id)),
        });
        if order == SortOrder::Descending {
            all.reverse();
        }
        let mut want: Vec<Vec<Job>> = all.chunks(PAGE).map(<[Job]>::to_vec).collect();
        if want.is_empty() {
            want.push(Vec::new());
        }
        if got != want {
            return Err(mismatch(&format!("list_jobs({sort:?}, {order:?}) in pages"), &got, &want));
        }
    }
    let head = store.event_log().head().await.map_err(|e| e.to_string())?;
    if head != model.log_head {
        return Err(mismatch("event log head", &head, &model.log_head));
    }
    Ok(())
}

async fn run_case(factory: &dyn Factory, ops: Vec<Op>) -> std::result::Result<(), TestCaseError> {
    let mut env = Env::new(factory).await;
    let mut model = Model::default();
    for (step, op) in ops.iter().enumerate() {
        let fail = |msg: String| TestCaseError::fail(format!("step {step} ({op:?}): {msg}"));
        match op {
            Op::Reopen => {
                env.backend.reopen().await;
            }
            Op::Advance { step } => env.advance(Duration::from_secs(STEPS[usize::from(*step)])),
            Op::Purge { .. } => {
                purge_step(&env, &mut model, op, format!("job_archive_{step}.jsonl")).await.map_err(fail)?
            }
            _ => {
                let call = call_for(&model, op);
                step_call(&env, &mut model, &call).await.map_err(fail)?
            }
        }
        compare(&*env.jobs(), &model).await.map_err(fail)?;
    }
    env.jobs().close().await.map_err(|e| TestCaseError::fail(e.to_string()))?;
    env.exec().close().await.map_err(|e| TestCaseError::fail(e.to_string()))?;
    Ok(())
}

/// Number of generated cases: `BRINE_JOB_MODEL_CASES`, else `BRINE_PROPTEST_CASES`,
/// else 64.
pub fn cases_from_env() -> u32 {
    ["BRINE_JOB_MODEL_CASES", "BRINE_PROPTEST_CASES"]
        .iter()
        .find_map(|var| std::env::var(var).ok().and_then(|v| v.parse().ok()))
        .unwrap_or(64)
}

/// The generator's seed: `BRINE_JOB_MODEL_SEED`, else a fresh one (printed when a case
/// fails, so the run can be repeated).
pub fn seed_from_env() -> u64 {
    std::env::var("BRINE_JOB_MODEL_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        (nanos as u64) ^ u64::from(std::process::id()).rotate_left(32)
    })
}

/// Runs `cases` random sequences of up to 60 job-store steps against `factory` and the
/// model, generated from `seed`.
pub fn check(factory: &dyn Factory, cases: u32, seed: u64) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let config = Config { cases, failure_persistence: None, rng_seed: RngSeed::Fixed(seed), ..Config::default() };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&ops(), |ops| rt.block_on(run_case(factory, ops)));
    if let Err(e) = result {
        panic!("job model-based test failed (BRINE_JOB_MODEL_SEED={seed} repeats this run): {e}");
    }
}
