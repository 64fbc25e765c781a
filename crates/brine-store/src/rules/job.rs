//! The job store's decisions: which index entries a job has, what the queue operations
//! change, the history events each write records, and how reads page and report a
//! missing job. Every backend, `check` and `repair` ask these functions.

use brine_model::{
    Evaluation, Event, Execution, ExecutionId, HistoryLevel, Job, JobHistory, JobId, JobState, JobType, Timestamp,
};

use crate::{
    HistoryPage, HistoryQuery, JobOutcome, ObjectKind, Result, StoreError, UpdateExecutionRequest,
    UpdateJobStateRequest,
};

/// One entry a job has in one of the job store's indexes; each also names the job.
///
/// [`job_indexes`] is the only place that says which entries a job has: a backend maps
/// each variant to its storage (a map, a column family and key, a table row), and a
/// consistency check compares what is stored against the same answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobIndex<'a> {
    /// By namespace and name (unique within the namespace).
    Name {
        /// The namespace.
        namespace: &'a str,
        /// The name.
        name: &'a str,
    },
    /// Every job, by create time.
    Created(Timestamp),
    /// Every job, by modify time.
    Modified(Timestamp),
    /// The jobs of a namespace, by create time.
    NamespaceCreated {
        /// The namespace.
        namespace: &'a str,
        /// The create time.
        time: Timestamp,
    },
    /// The jobs of a namespace, by modify time.
    NamespaceModified {
        /// The namespace.
        namespace: &'a str,
        /// The modify time.
        time: Timestamp,
    },
    /// The jobs in a state, by create time.
    StateCreated {
        /// The state.
        state: JobState,
        /// The create time.
        time: Timestamp,
    },
    /// The jobs in a state, by modify time (purge candidates are read here).
    StateModified {
        /// The state.
        state: JobState,
        /// The modify time.
        time: Timestamp,
    },
    /// The jobs carrying a label, by create time.
    LabelCreated {
        /// The label's key.
        key: &'a str,
        /// The label's value.
        value: &'a str,
        /// The create time.
        time: Timestamp,
    },
    /// The jobs carrying a label, by modify time.
    LabelModified {
        /// The label's key.
        key: &'a str,
        /// The label's value.
        value: &'a str,
        /// The modify time.
        time: Timestamp,
    },
    /// The unfinished jobs of a type.
    InProgress(JobType),
    /// The waiting jobs of a queue, oldest (by create time) first: what `grab_next`
    /// takes.
    Queued {
        /// The queue.
        queue: &'a str,
        /// The create time.
        time: Timestamp,
    },
    /// Queue jobs that can expire, by last access: what `expire` reads.
    Idle(Timestamp),
}

/// Whether `job` can expire: a queue job that is waiting or running.
pub fn expirable(job: &Job) -> bool {
    job.queue.is_some() && matches!(job.state(), JobState::Queued | JobState::Running)
}

/// Every index entry `job` has.
pub fn job_indexes(job: &Job) -> Vec<JobIndex<'_>> {
    let namespace = job.namespace.as_str();
    let (created, modified) = (job.create_time, job.modify_time);
    let state = job.state();
    let mut out = vec![
        JobIndex::Name { namespace, name: &job.name },
        JobIndex::Created(created),
        JobIndex::Modified(modified),
        JobIndex::NamespaceCreated { namespace, time: created },
        JobIndex::NamespaceModified { namespace, time: modified },
        JobIndex::StateCreated { state, time: created },
        JobIndex::StateModified { state, time: modified },
    ];
    for (key, value) in &job.labels {
        out.push(JobIndex::LabelCreated { key, value, time: created });
        out.push(JobIndex::LabelModified { key, value, time: modified });
    }
    if !state.is_terminal() {
        out.push(JobIndex::InProgress(job.job_type));
    }
    if let (Some(queue), JobState::Queued) = (&job.queue, state) {
        out.push(JobIndex::Queued { queue, time: created });
    }
    if expirable(job) {
        out.push(JobIndex::Idle(job.last_accessed_time));
    }
    out
}

/// The index entries a change from `before` to `after` removes and adds (`None`: the
/// job is created or deleted); entries both have are in neither list.
pub fn job_index_moves<'a>(before: Option<&'a Job>, after: Option<&'a Job>) -> (Vec<JobIndex<'a>>, Vec<JobIndex<'a>>) {
    let old = before.map(job_indexes).unwrap_or_default();
    let new = after.map(job_indexes).unwrap_or_default();
    let removed = old.iter().filter(|e| !new.contains(e)).copied().collect();
    let added = new.iter().filter(|e| !old.contains(e)).copied().collect();
    (removed, added)
}

/// The history event of a job's creation.
pub fn submission_event(job: &Job, now: Timestamp) -> Event {
    Event::new("JobSubmission", format!("job submitted in state {}", job.state()), now)
}

/// The history event of a new version of a job's spec.
pub fn spec_update_event(job: &Job, now: Timestamp) -> Event {
    Event::new("JobUpdate", format!("job spec updated to version {}", job.version), now)
}

/// The history event of an execution created on the requester.
pub fn execution_created_event(execution: &Execution, now: Timestamp) -> Event {
    Event::new("ExecutionCreated", format!("execution created in state {}", execution.state()), now)
}

/// The history events an update of a requester execution records: its state change
/// (when the state moved), then the caller's events.
pub fn execution_update_events(
    before: &Execution,
    next: &Execution,
    request: &UpdateExecutionRequest,
    now: Timestamp,
) -> Vec<Event> {
    let mut events = Vec::new();
    if before.state() != next.state() {
        events.push(super::execution_state_event(before.state(), next, now));
    }
    events.extend(request.events.iter().cloned());
    events
}

/// A job's history entry number `seq`, about the job or one of its executions.
pub fn history_entry(
    seq: u64,
    job: &Job,
    level: HistoryLevel,
    execution: Option<&ExecutionId>,
    event: Event,
    now: Timestamp,
) -> JobHistory {
    JobHistory {
        seq,
        level,
        job_id: job.id.clone(),
        job_version: job.version,
        execution_id: execution.cloned(),
        event,
        time: now,
    }
}

/// A job as `enqueue` creates it: in `queue`, waiting.
pub fn enqueued(queue: &str, mut job: Job) -> Result<Job> {
    super::check_queue(queue)?;
    job.queue = Some(queue.to_owned());
    job.state.state = JobState::Queued;
    Ok(job)
}

/// The state change `grab_next` makes to the job at the head of a queue.
pub fn grab_request(id: JobId) -> UpdateJobStateRequest {
    UpdateJobStateRequest::new(id, JobState::Running, "grabbed from queue").expect_states([JobState::Queued])
}

/// A waiting job after `grab_next` took it at `now`: running, grabbed and accessed now
/// (the grab time is set by [`super::update_job_state`]).
pub fn grab(current: &Job, now: Timestamp) -> Result<Job> {
    let mut next = super::update_job_state(current, &grab_request(current.id.clone()), now)?;
    next.last_accessed_time = now;
    Ok(next)
}

/// The state change `finish` makes: a running job to `complete` or `failed`.
pub fn finish_request(id: &JobId, outcome: JobOutcome) -> UpdateJobStateRequest {
    let (state, message) = match outcome {
        JobOutcome::Completed => (JobState::Completed, "job completed".to_owned()),
        JobOutcome::Failed { message } => (JobState::Failed, message),
    };
    UpdateJobStateRequest::new(id.clone(), state, message).expect_states([JobState::Running])
}

/// A running job after `finish` at `now`: the state change of `request`
/// ([`finish_request`]), its output files, accessed now.
pub fn finish(
    current: &Job,
    request: &UpdateJobStateRequest,
    output_files: Vec<String>,
    now: Timestamp,
) -> Result<Job> {
    let mut next = super::update_job_state(current, request, now)?;
    next.output_files = output_files;
    next.last_accessed_time = now;
    Ok(next)
}

/// An evaluation after an update: the caller's fields, except what the store owns (the
/// job, the namespace, the create time); modified now.
pub fn update_evaluation(current: &Evaluation, update: Evaluation, now: Timestamp) -> Result<Evaluation> {
    update.validate()?;
    Ok(Evaluation {
        job_id: current.job_id.clone(),
        namespace: current.namespace.clone(),
        create_time: current.create_time,
        modify_time: now,
        ..update
    })
}

/// What `check` says of a stored job whose id is also in the retained purge table (a
/// create the `AlreadyPurged` rule refuses, written by an older build or by hand).
pub fn purged_id_reused(archive: &str) -> String {
    format!("a stored job has the id of a job purged to {archive}")
}

/// The error for a job that is not stored: `Archived` when a purge recorded where it
/// went, else not found.
pub fn missing_job(id: &JobId, archive: Option<String>) -> StoreError {
    match archive {
        Some(file) => StoreError::Archived { id: id.to_string(), file },
        None => StoreError::not_found(ObjectKind::Job, id),
    }
}

/// How many jobs `get_job_by_prefix` reads at most under a prefix (and names in its
/// error when the prefix is ambiguous).
pub const PREFIX_MATCHES: usize = 10;

/// The answer of `get_job_by_prefix` from the jobs whose ids start with `prefix` (up to
/// [`PREFIX_MATCHES`], in id order): the one job, not found, or ambiguous.
pub fn job_by_prefix(prefix: &str, mut matches: Vec<Job>) -> Result<Job> {
    match matches.len() {
        0 => Err(StoreError::not_found(ObjectKind::Job, prefix)),
        1 => Ok(matches.remove(0)),
        _ => Err(StoreError::MultipleJobsFound {
            prefix: prefix.to_owned(),
            ids: matches.into_iter().map(|j| j.id).collect(),
        }),
    }
}

/// Executions in the order the job store lists them: newest modification first, then
/// by id.
pub fn newest_first(mut executions: Vec<Execution>) -> Vec<Execution> {
    executions.sort_by(|a, b| b.modify_time.cmp(&a.modify_time).then_with(|| a.id.cmp(&b.id)));
    executions
}

/// Jobs in the order `get_in_progress_jobs` lists them: by id.
pub fn in_id_order(mut jobs: Vec<Job>) -> Vec<Job> {
    jobs.sort_by(|a, b| a.id.cmp(&b.id));
    jobs
}

/// Builds one page of a job's history from its entries in sequence order, after the
/// query's token: what matches, where the page ends and its token. Both backends feed
/// it the entries they read, so they page alike.
#[derive(Debug)]
pub struct HistoryPager<'q> {
    query: &'q HistoryQuery,
    entries: Vec<JobHistory>,
    last_examined: u64,
    more: bool,
}

impl<'q> HistoryPager<'q> {
    /// An empty page for `query`; [`HistoryPager::after`] says where reading starts.
    pub fn new(query: &'q HistoryQuery) -> Result<Self> {
        super::check_limit(query.limit)?;
        let after = query.token.as_deref().map(super::parse_history_token).transpose()?.unwrap_or(0);
        Ok(HistoryPager { query, entries: Vec::new(), last_examined: after, more: false })
    }

    /// The sequence number the page starts after: read the entries above it.
    pub fn after(&self) -> u64 {
        self.last_examined
    }

    /// Offers the next entry; returns whether to read on.
    pub fn offer(&mut self, entry: JobHistory) -> bool {
        let full = self.entries.len() == self.query.limit;
        if self.query.matches(&entry) {
            if full {
                self.more = true;
                return false;
            }
            self.last_examined = entry.seq;
            self.entries.push(entry);
        } else if !full {
            self.last_examined = entry.seq;
        }
        true
    }

    /// The page of a job in `state`: an unfinished job's history can grow, so its page
    /// always has a token to read on from.
    pub fn finish(self, state: JobState) -> HistoryPage {
        HistoryPage {
            entries: self.entries,
            next_token: super::history_next_token(self.more, state.is_terminal(), self.last_examined),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use brine_model::JobId;

    fn queue_job() -> Job {
        let mut job = Job::new(JobId::new("j1").unwrap(), "n");
        job.labels.insert("tier".into(), "gold".into());
        enqueued("q", job).unwrap()
    }

    #[test]
    fn a_waiting_queue_job_is_queued_idle_and_in_progress() {
        let job = super::super::new_job(queue_job(), Timestamp::from_nanos(5)).unwrap();
        let entries = job_indexes(&job);
        assert!(entries.contains(&JobIndex::Queued { queue: "q", time: Timestamp::from_nanos(5) }));
        assert!(entries.contains(&JobIndex::Idle(Timestamp::from_nanos(5))));
        assert!(entries.contains(&JobIndex::InProgress(job.job_type)));
        assert!(entries.contains(&JobIndex::LabelModified { key: "tier", value: "gold", time: job.modify_time }));
    }

    #[test]
    fn a_touch_moves_only_the_idle_entry() {
        let job = super::super::new_job(queue_job(), Timestamp::from_nanos(5)).unwrap();
        let touched = super::super::touch_job(&job, Timestamp::from_nanos(9));
        let (removed, added) = job_index_moves(Some(&job), Some(&touched));
        assert_eq!(removed, [JobIndex::Idle(Timestamp::from_nanos(5))]);
        assert_eq!(added, [JobIndex::Idle(Timestamp::from_nanos(9))]);
    }

    #[test]
    fn a_job_grabbed_again_after_a_requeue_gets_the_new_grab_time() {
        let job = super::super::new_job(queue_job(), Timestamp::from_nanos(5)).unwrap();
        let grabbed = grab(&job, Timestamp::from_nanos(6)).unwrap();
        assert_eq!(grabbed.grabbed_time, Some(Timestamp::from_nanos(6)));
        let requeued = super::super::update_job_state(
            &grabbed,
            &UpdateJobStateRequest::new(job.id.clone(), JobState::Queued, "requeued"),
            Timestamp::from_nanos(7),
        )
        .unwrap();
        let again = grab(&requeued, Timestamp::from_nanos(8)).unwrap();
        assert_eq!(again.grabbed_time, Some(Timestamp::from_nanos(8)));
        let by_state = super::super::update_job_state(
            &requeued,
            &UpdateJobStateRequest::new(job.id.clone(), JobState::Running, "by hand"),
            Timestamp::from_nanos(9),
        )
        .unwrap();
        assert_eq!(by_state.grabbed_time, Some(Timestamp::from_nanos(9)), "one rule for both ways in");
    }
}
