//! Purge to archives, the `db_purge` of Brine (SPEC §6, seed 004).
//!
//! [`purge`] selects terminal jobs whose last change is at least `min_age` old, with
//! everything that belongs to them, writes them to archive files in an archive
//! directory (see [`archive`] for the files and their format), and only then deletes
//! them from the store. On a requester store a job goes with its versions, history,
//! evaluations and executions, and leaves a retained entry naming its archive, so
//! `get_job` on it answers `Archived { file }`; on a compute store, a job's executions
//! go (with their events) once every one of them is terminal and old enough.
//!
//! Crash safety, per archive file: a pending marker names the file; the file is
//! written, fsynced and renamed; its ids are appended to the index and fsynced; the
//! records are deleted in batches (each batch one atomic write, with its retained
//! entries), while the next file is written; the marker is removed. A run that finds
//! markers finishes those files first: it appends the ids the index lacks and deletes
//! what is still in the store. So every record is always in the store, in a synced
//! archive, or both, and no id is indexed twice.
//!
//! The crate depends on `brine-store` only and works with every backend; [`purge`]
//! runs on a tokio runtime (it deletes one archive's records while writing the next).

pub mod archive;
mod error;

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use brine_store::model::{Event, Execution, ExecutionId, ExecutionState, JobId, Timestamp};
use brine_store::{Clock, ExecutionStore, JobBundle, JobStore, StoreError, SystemClock};
use serde::{Deserialize, Serialize};

pub use archive::{Compression, ARCHIVE_PREFIX, INDEX_FILE, PENDING_FILE};
pub use error::PurgeError;

use archive::{ArchiveWriter, Index, Pending};

/// A store to purge.
#[derive(Clone)]
pub enum Source {
    /// A requester's job store: jobs with their versions, history, evaluations and
    /// executions.
    Jobs(Arc<dyn JobStore>),
    /// A compute node's execution store: terminal executions with their events,
    /// grouped by job.
    Executions(Arc<dyn ExecutionStore>),
}

impl Source {
    /// Closes the store.
    pub async fn close(&self) -> Result<(), StoreError> {
        match self {
            Source::Jobs(s) => s.close().await,
            Source::Executions(s) => s.close().await,
        }
    }

    /// `requester` or `compute`: whose archives the directory holds.
    fn kind(&self) -> &'static str {
        match self {
            Source::Jobs(_) => "requester",
            Source::Executions(_) => "compute",
        }
    }
}

/// One execution and its events, in a compute store's archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionRecord {
    /// The execution.
    pub execution: Execution,
    /// Its history events.
    pub events: Vec<Event>,
}

/// A compute store's archive line: one job's executions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComputeJobRecord {
    /// The job.
    pub job_id: JobId,
    /// Its executions, each with its events.
    pub executions: Vec<ExecutionRecord>,
}

/// How to purge.
#[derive(Clone)]
pub struct PurgeOptions {
    /// Where archive files and the index go (created if missing).
    pub archive_dir: PathBuf,
    /// Only jobs whose last change is at least this old.
    pub min_age: Duration,
    /// At most this many jobs in one run.
    pub max: Option<u64>,
    /// At most this many jobs per archive file.
    pub max_per_file: usize,
    /// Archive compression.
    pub compression: Compression,
    /// Report what would go; write and delete nothing.
    pub dry_run: bool,
    /// Jobs deleted per atomic write.
    pub delete_batch: usize,
    /// Where ages and archive times come from.
    pub clock: Arc<dyn Clock>,
    /// Called with the number of jobs done so far.
    pub progress: Option<Arc<dyn Fn(u64) + Send + Sync>>,
    /// When set, the run stops after the archive file in progress.
    pub stop: Option<Arc<AtomicBool>>,
}

impl PurgeOptions {
    /// Options for `archive_dir` with the defaults: 7 days, 10 000 jobs per file, no
    /// compression, batches of 1 000.
    pub fn new(archive_dir: impl Into<PathBuf>) -> PurgeOptions {
        PurgeOptions {
            archive_dir: archive_dir.into(),
            min_age: Duration::from_secs(7 * 86_400),
            max: None,
            max_per_file: 10_000,
            compression: Compression::None,
            dry_run: false,
            delete_batch: 1000,
            clock: Arc::new(SystemClock),
            progress: None,
            stop: None,
        }
    }

    fn validate(&self) -> Result<(), PurgeError> {
        if self.max_per_file == 0 {
            return Err(PurgeError::Options { option: "max_per_file", reason: "must be at least 1".into() });
        }
        if self.delete_batch == 0 {
            return Err(PurgeError::Options { option: "delete_batch", reason: "must be at least 1".into() });
        }
        Ok(())
    }
}

impl std::fmt::Debug for PurgeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PurgeOptions")
            .field("archive_dir", &self.archive_dir)
            .field("min_age", &self.min_age)
            .field("max", &self.max)
            .field("max_per_file", &self.max_per_file)
            .field("compression", &self.compression)
            .field("dry_run", &self.dry_run)
            .field("delete_batch", &self.delete_batch)
            .finish_non_exhaustive()
    }
}

/// What a run archived (or, in a dry run, would archive).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PurgeReport {
    /// Whether nothing was written or deleted.
    pub dry_run: bool,
    /// Jobs archived.
    pub jobs: u64,
    /// Executions archived.
    pub executions: u64,
    /// History entries (requester) or execution events (compute) archived.
    pub events: u64,
    /// Evaluations archived.
    pub evaluations: u64,
    /// Archive files written, by name.
    pub files: Vec<String>,
    /// Bytes of those files on disk.
    pub bytes: u64,
    /// Bytes of JSON before compression.
    pub raw_bytes: u64,
    /// Archives an interrupted run left pending, finished first.
    pub resumed: Vec<String>,
    /// Whether the run stopped early because it was asked to.
    pub stopped: bool,
    /// Wall time, in milliseconds.
    pub duration_ms: f64,
}

impl std::fmt::Display for PurgeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = if self.dry_run { "would archive" } else { "archived" };
        write!(
            f,
            "purge {verb} {} jobs, {} executions, {} events, {} evaluations",
            self.jobs, self.executions, self.events, self.evaluations
        )?;
        if !self.dry_run {
            write!(f, " into {} file(s), {} bytes ({} bytes of JSON)", self.files.len(), self.bytes, self.raw_bytes)?;
        }
        write!(f, " in {:.0} ms", self.duration_ms)?;
        if !self.resumed.is_empty() {
            write!(f, "; finished the interrupted archive(s) {} first", self.resumed.join(", "))?;
        }
        if self.stopped {
            write!(f, "; stopped early as asked")?;
        }
        Ok(())
    }
}

/// A job picked for the archive file in progress: only ids, so memory stays bounded
/// by the file's job count, not by its records.
#[derive(Debug, Clone)]
enum Pick {
    /// A requester job.
    Job(JobId),
    /// A compute store's job, with the ids of its executions.
    Compute { job: JobId, executions: Vec<ExecutionId> },
}

impl Pick {
    fn id(&self) -> &str {
        match self {
            Pick::Job(id) | Pick::Compute { job: id, .. } => id.as_str(),
        }
    }
}

/// A picked job's records, read when its line is written.
enum Loaded {
    Job(Box<JobBundle>),
    Compute(ComputeJobRecord),
}

impl Loaded {
    fn count(&self, report: &mut PurgeReport) {
        report.jobs += 1;
        match self {
            Loaded::Job(b) => {
                report.executions += b.executions.len() as u64;
                report.events += b.history.len() as u64;
                report.evaluations += b.evaluations.len() as u64;
            }
            Loaded::Compute(c) => {
                report.executions += c.executions.len() as u64;
                report.events += c.executions.iter().map(|e| e.events.len() as u64).sum::<u64>();
            }
        }
    }

    fn write(&self, w: &mut ArchiveWriter) -> Result<(), PurgeError> {
        match self {
            Loaded::Job(b) => w.write(b.as_ref()),
            Loaded::Compute(c) => w.write(c),
        }
    }
}

/// Reads a picked job's records; `None` when they are gone (deleted since picked).
async fn load(source: &Source, pick: &Pick) -> Result<Option<Loaded>, PurgeError> {
    match (source, pick) {
        (Source::Jobs(store), Pick::Job(id)) => match store.job_bundle(id).await {
            Ok(bundle) => Ok(Some(Loaded::Job(Box::new(bundle)))),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        },
        (Source::Executions(store), Pick::Compute { job, executions: ids }) => {
            let mut executions = Vec::with_capacity(ids.len());
            for id in ids {
                let execution = match store.get_execution(id).await {
                    Ok(x) => x,
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(e.into()),
                };
                let events = match store.get_execution_events(id).await {
                    Ok(ev) => ev,
                    Err(e) if e.is_not_found() => continue,
                    Err(e) => return Err(e.into()),
                };
                executions.push(ExecutionRecord { execution, events });
            }
            if executions.is_empty() {
                return Ok(None);
            }
            Ok(Some(Loaded::Compute(ComputeJobRecord { job_id: job.clone(), executions })))
        }
        _ => Ok(None),
    }
}

/// Walks a store's candidates in order, remembering where it got to.
struct Selector {
    cutoff: Timestamp,
    /// Requester: the last job returned, by modify time and id.
    job_cursor: Option<(Timestamp, JobId)>,
    /// Compute: the terminal state being walked and the last execution read in it.
    state: usize,
    exec_cursor: Option<ExecutionId>,
    /// Compute: jobs already taken or turned down in this run.
    seen: HashSet<JobId>,
    /// Compute: jobs picked past the last batch's limit, taken first next time.
    backlog: VecDeque<Pick>,
}

const TERMINAL: [ExecutionState; 3] = [ExecutionState::Completed, ExecutionState::Failed, ExecutionState::Cancelled];

impl Selector {
    /// Up to `limit` more jobs to archive.
    async fn next(&mut self, source: &Source, limit: usize) -> Result<Vec<Pick>, PurgeError> {
        match source {
            Source::Jobs(store) => {
                let jobs = store.purgeable_jobs(self.cutoff, self.job_cursor.clone(), limit).await?;
                if let Some(last) = jobs.last() {
                    self.job_cursor = Some((last.modify_time, last.id.clone()));
                }
                Ok(jobs.into_iter().map(|j| Pick::Job(j.id)).collect())
            }
            Source::Executions(store) => {
                let mut out = Vec::new();
                while out.len() < limit {
                    if let Some(p) = self.backlog.pop_front() {
                        out.push(p);
                        continue;
                    }
                    let Some(&state) = TERMINAL.get(self.state) else { break };
                    let page = store.get_executions_in_state(state, self.exec_cursor.as_ref(), 500).await?;
                    let Some(last) = page.last() else {
                        self.state += 1;
                        self.exec_cursor = None;
                        continue;
                    };
                    self.exec_cursor = Some(last.id.clone());
                    for e in page {
                        if e.modify_time > self.cutoff || !self.seen.insert(e.job_id.clone()) {
                            continue;
                        }
                        // A job goes once every execution of it is terminal and old enough.
                        let all = store.get_executions(&e.job_id).await?;
                        if all.iter().all(|x| x.state().is_terminal() && x.modify_time <= self.cutoff) {
                            let mut executions: Vec<ExecutionId> = all.into_iter().map(|x| x.id).collect();
                            executions.sort();
                            self.backlog.push_back(Pick::Compute { job: e.job_id.clone(), executions });
                        }
                    }
                }
                Ok(out)
            }
        }
    }
}

/// Deletes the archived jobs from the store in batches.
async fn delete(source: &Source, picks: &[Pick], file: &str, batch: usize) -> Result<(), PurgeError> {
    match source {
        Source::Jobs(store) => {
            let ids: Vec<JobId> = picks
                .iter()
                .filter_map(|p| match p {
                    Pick::Job(id) => Some(id.clone()),
                    Pick::Compute { .. } => None,
                })
                .collect();
            for chunk in ids.chunks(batch) {
                store.purge_jobs(chunk, file).await?;
            }
        }
        Source::Executions(store) => {
            for pick in picks {
                let Pick::Compute { executions, .. } = pick else { continue };
                for id in executions {
                    match store.delete_execution(id).await {
                        Ok(()) => {}
                        Err(e) if e.is_not_found() => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
    }
    Ok(())
}

/// Finishes the archives an interrupted run left pending, oldest first; returns their
/// names.
async fn finish_pending(source: &Source, options: &PurgeOptions) -> Result<Vec<String>, PurgeError> {
    let dir = &options.archive_dir;
    let mut finished = Vec::new();
    let index = Index::new(dir);
    for pending in Pending::read_all(dir)? {
        let path = dir.join(&pending.file);
        if !path.exists() {
            // Crashed before the archive was complete: its records were never deleted.
            let tmp = dir.join(format!("{}.tmp", pending.file));
            if tmp.exists() {
                std::fs::remove_file(&tmp).map_err(|source| PurgeError::Io {
                    what: "remove a partial archive",
                    path: tmp.clone(),
                    source,
                })?;
            }
            pending.clear(dir)?;
            continue;
        }
        let mut picks = Vec::new();
        for (n, record) in archive::read_archive(&path)?.enumerate() {
            let record = record?;
            let bad = |reason: String| PurgeError::BadArchive { path: path.clone(), line: n + 1, reason };
            let id = archive::record_id(&record).ok_or_else(|| bad("no job id".into()))?.to_owned();
            let job = JobId::new(id).map_err(|e| bad(e.to_string()))?;
            picks.push(match source {
                Source::Jobs(_) => Pick::Job(job),
                Source::Executions(_) => {
                    let r: ComputeJobRecord = serde_json::from_value(record).map_err(|e| bad(e.to_string()))?;
                    Pick::Compute { job, executions: r.executions.into_iter().map(|x| x.execution.id).collect() }
                }
            });
        }
        index.repair_tail()?;
        let indexed = index.ids_at(pending.time)?;
        let ids = picks.iter().map(Pick::id);
        index.append(ids.filter(|id| !indexed.contains(*id)), pending.time)?;
        delete(source, &picks, &pending.file, options.delete_batch).await?;
        pending.clear(dir)?;
        finished.push(pending.file);
    }
    Ok(finished)
}

/// Waits for the deletion of the previous archive's records.
async fn join(task: Option<tokio::task::JoinHandle<Result<(), PurgeError>>>) -> Result<(), PurgeError> {
    match task {
        Some(t) => t.await.map_err(|e| PurgeError::Task(format!("the deletion task failed: {e}")))?,
        None => Ok(()),
    }
}

/// Runs one purge (see the crate documentation).
pub async fn purge(source: &Source, options: &PurgeOptions) -> Result<PurgeReport, PurgeError> {
    options.validate()?;
    let started = Instant::now();
    let mut report = PurgeReport { dry_run: options.dry_run, ..PurgeReport::default() };
    let dir = &options.archive_dir;
    // Held to the end of the run: one purge per archive directory.
    let _lock = if options.dry_run {
        None
    } else {
        std::fs::create_dir_all(dir).map_err(|source| PurgeError::Io {
            what: "create the archive directory",
            path: dir.clone(),
            source,
        })?;
        let lock = archive::claim(dir, source.kind())?;
        report.resumed = finish_pending(source, options).await?;
        Some(lock)
    };
    let now = options.clock.now();
    let mut selector = Selector {
        cutoff: now.saturating_sub(options.min_age),
        job_cursor: None,
        state: 0,
        exec_cursor: None,
        seen: HashSet::new(),
        backlog: VecDeque::new(),
    };
    // The archive whose records are being deleted; always waited for, also on errors.
    let mut deleting = None;
    let outcome = archive_files(source, options, &mut selector, &mut report, &mut deleting).await;
    let deleted = join(deleting.take()).await;
    outcome?;
    deleted?;
    report.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    Ok(report)
}

/// Writes archive files until the candidates, `max` or a stop request run out; leaves
/// the last archive's deletion running in `deleting`.
async fn archive_files(
    source: &Source,
    options: &PurgeOptions,
    selector: &mut Selector,
    report: &mut PurgeReport,
    deleting: &mut Option<tokio::task::JoinHandle<Result<(), PurgeError>>>,
) -> Result<(), PurgeError> {
    let dir = &options.archive_dir;
    let mut remaining = options.max.unwrap_or(u64::MAX);
    let mut last_time = 0;
    while remaining > 0 {
        if options.stop.as_ref().is_some_and(|s| s.load(Ordering::Acquire)) {
            report.stopped = true;
            break;
        }
        let limit = usize::try_from(remaining).unwrap_or(usize::MAX).min(options.max_per_file);
        let picks = selector.next(source, limit).await?;
        if picks.is_empty() {
            break;
        }
        remaining -= picks.len() as u64;
        if options.dry_run {
            for pick in &picks {
                if let Some(loaded) = load(source, pick).await? {
                    loaded.count(report);
                }
            }
            if let Some(p) = &options.progress {
                p(report.jobs);
            }
            continue;
        }
        let time = archive::free_time(dir, options.clock.now().as_secs().max(last_time + 1));
        last_time = time;
        let file = archive::archive_name(time, options.compression);
        let pending = Pending { time, file: file.clone() };
        pending.write(dir)?;
        let mut writer = ArchiveWriter::create(dir, time, options.compression)?;
        let mut written = Vec::with_capacity(picks.len());
        let mut counts = PurgeReport::default();
        for pick in picks {
            // Each record is read, written and dropped: memory holds one job's records.
            let Some(loaded) = load(source, &pick).await? else { continue };
            loaded.write(&mut writer)?;
            loaded.count(&mut counts);
            written.push(pick);
        }
        report.raw_bytes += writer.raw_bytes;
        let (_, size) = writer.finish()?;
        Index::new(dir).append(written.iter().map(Pick::id), time)?;
        // The records go while the next archive is written: at most one deletion runs,
        // and each archive's marker stays until its records are gone.
        join(deleting.take()).await?;
        let (src, dir_owned, batch) = (source.clone(), dir.clone(), options.delete_batch);
        *deleting = Some(tokio::spawn(async move {
            delete(&src, &written, &file, batch).await?;
            pending.clear(&dir_owned)
        }));
        report.jobs += counts.jobs;
        report.executions += counts.executions;
        report.events += counts.events;
        report.evaluations += counts.evaluations;
        report.files.push(archive::archive_name(time, options.compression));
        report.bytes += size;
        if let Some(p) = &options.progress {
            p(report.jobs);
        }
    }
    Ok(())
}

/// Reads job `id` back from the archives in `dir`, through the index.
pub fn read_archived(dir: &Path, id: &str) -> Result<Option<serde_json::Value>, PurgeError> {
    let Some(time) = Index::new(dir).find(id)? else { return Ok(None) };
    let path = archive::find_archive(dir, time).ok_or_else(|| PurgeError::MissingArchive {
        id: id.to_owned(),
        time,
        dir: dir.to_path_buf(),
    })?;
    for record in archive::read_archive(&path)? {
        let record = record?;
        if archive::record_id(&record) == Some(id) {
            return Ok(Some(record));
        }
    }
    Err(PurgeError::BadArchive { path, line: 0, reason: format!("the index names this file for {id}, which it lacks") })
}

impl From<StoreError> for PurgeError {
    fn from(e: StoreError) -> Self {
        PurgeError::Store(e)
    }
}
