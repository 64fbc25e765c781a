//! Purge to archives, the `db_purge` of Brine (CONTRACT §6).
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
//! runs on a tokio runtime (it deletes one archive's records while writing the next),
//! with its file work on blocking threads.
//!
//! Cancel safety: dropping the future of [`purge`] is like a crash of the run, and as
//! safe: a deletion in progress finishes on its own task, and the pending markers make
//! the next run finish every archive that was begun.

pub mod archive;
mod error;
pub mod verify;

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use brine_store::model::{Event, Execution, ExecutionId, ExecutionState, JobId, Timestamp};
use brine_store::{Clock, ExecutionStore, JobBundle, JobStamp, JobStore, StoreError, SystemClock};
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

    /// Makes every write acknowledged so far durable.
    async fn sync(&self) -> Result<(), StoreError> {
        match self {
            Source::Jobs(s) => s.sync().await,
            Source::Executions(s) => s.sync().await,
        }
    }

    /// The store's id, which pending markers name.
    fn store_id(&self) -> String {
        match self {
            Source::Jobs(s) => s.store_id(),
            Source::Executions(s) => s.store_id(),
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
    /// Archives an interrupted run left pending, finished first (in a dry run: that
    /// the real run would finish first).
    pub resumed: Vec<String>,
    /// Jobs those archives hold: the interrupted jobs finished (or to finish).
    pub resumed_jobs: u64,
    /// Whether the run stopped early because it was asked to.
    pub stopped: bool,
    /// Jobs written to an archive but changed in the store before their deletion:
    /// left in the store (nothing the archive lacks is deleted) for a later run, whose
    /// archive line then supersedes the earlier one.
    pub changed_since_archived: u64,
    /// Wall time, in milliseconds.
    pub duration_ms: f64,
}

impl std::fmt::Display for PurgeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = if self.dry_run { "would archive" } else { "archived" };
        write!(
            f,
            "purge {verb} {}, {}, {}, {}",
            count(self.jobs, "job"),
            count(self.executions, "execution"),
            count(self.events, "event"),
            count(self.evaluations, "evaluation")
        )?;
        if !self.dry_run {
            let files = count(self.files.len() as u64, "file");
            write!(f, " into {files}, {} bytes ({} bytes of JSON)", self.bytes, self.raw_bytes)?;
        }
        write!(f, " in {:.0} ms", self.duration_ms)?;
        if !self.resumed.is_empty() {
            let (jobs, files) = (count(self.resumed_jobs, "job"), self.resumed.join(", "));
            if self.dry_run {
                write!(f, "; would first finish {jobs} of the interrupted archive(s) {files}")?;
            } else {
                write!(f, "; finished {jobs} of the interrupted archive(s) {files} first")?;
            }
        }
        if self.changed_since_archived > 0 {
            write!(f, "; {} changed after being archived and stay for a later run", self.changed_since_archived)?;
        }
        if self.stopped {
            write!(f, "; stopped early as asked")?;
        }
        Ok(())
    }
}

/// `1 job`, `2 jobs`.
fn count(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// A job picked for the archive file in progress: only ids (and, once archived, the
/// stamps of what the archive holds), so memory stays bounded by the file's job count,
/// not by its records.
#[derive(Debug, Clone)]
enum Pick {
    /// A requester job, with the stamp of the bundle archived (`None` until loaded).
    Job(JobId, Option<JobStamp>),
    /// A compute store's job, with its executions and, once loaded, the revision and
    /// modify time of each as archived.
    Compute { job: JobId, executions: Vec<(ExecutionId, Option<(u64, Timestamp)>)> },
}

impl Pick {
    fn id(&self) -> &str {
        match self {
            Pick::Job(id, _) | Pick::Compute { job: id, .. } => id.as_str(),
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

    /// The pick of what was archived: the stamps the deletion must still find.
    fn pick(&self) -> Pick {
        match self {
            Loaded::Job(b) => Pick::Job(b.job.id.clone(), Some(b.stamp())),
            Loaded::Compute(c) => c.pick(),
        }
    }
}

impl ComputeJobRecord {
    /// The pick of this record's executions as archived.
    fn pick(&self) -> Pick {
        Pick::Compute {
            job: self.job_id.clone(),
            executions: self
                .executions
                .iter()
                .map(|r| (r.execution.id.clone(), Some((r.execution.revision, r.execution.modify_time))))
                .collect(),
        }
    }
}

/// Reads a picked job's records; `None` when they are gone (deleted since picked).
async fn load(source: &Source, pick: &Pick) -> Result<Option<Loaded>, PurgeError> {
    match (source, pick) {
        (Source::Jobs(store), Pick::Job(id, _)) => {
            let bundle = store.job_bundles(std::slice::from_ref(id)).await?.pop().flatten();
            Ok(bundle.map(|bundle| Loaded::Job(Box::new(bundle))))
        }
        (Source::Executions(store), Pick::Compute { job, executions: ids }) => {
            let mut executions = Vec::with_capacity(ids.len());
            for (id, _) in ids {
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

/// How many picked jobs are read at once (a requester store reads a page's bundles
/// together): bounds the records held beside the writer's queue.
const LOAD_PAGE: usize = 32;

/// Reads a page of picks, as [`load`] reads each; a requester store reads the page's
/// bundles at once.
async fn load_page(source: &Source, page: &[Pick]) -> Result<Vec<Option<Loaded>>, PurgeError> {
    let job_ids: Option<Vec<JobId>> = page
        .iter()
        .map(|pick| match pick {
            Pick::Job(id, _) => Some(id.clone()),
            Pick::Compute { .. } => None,
        })
        .collect();
    if let (Source::Jobs(store), Some(ids)) = (source, job_ids) {
        let bundles = store.job_bundles(&ids).await?;
        return Ok(bundles.into_iter().map(|b| b.map(|bundle| Loaded::Job(Box::new(bundle)))).collect());
    }
    let mut out = Vec::with_capacity(page.len());
    for pick in page {
        out.push(load(source, pick).await?);
    }
    Ok(out)
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
                Ok(jobs.into_iter().map(|j| Pick::Job(j.id, None)).collect())
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
                            let mut executions: Vec<(ExecutionId, Option<(u64, Timestamp)>)> =
                                all.into_iter().map(|x| (x.id, None)).collect();
                            executions.sort_by(|a, b| a.0.cmp(&b.0));
                            self.backlog.push_back(Pick::Compute { job: e.job_id.clone(), executions });
                        }
                    }
                }
                Ok(out)
            }
        }
    }
}

/// Deletes the archived jobs from the store in batches, each one atomic write, and
/// makes the deletions durable; returns how many jobs it left because they changed
/// after they were archived (only what the archive holds is ever deleted).
async fn delete(source: &Source, picks: &[Pick], file: &str, batch: usize) -> Result<u64, PurgeError> {
    let mut changed = 0;
    match source {
        Source::Jobs(store) => {
            let jobs: Vec<(JobId, JobStamp)> = picks
                .iter()
                .filter_map(|p| match p {
                    Pick::Job(id, Some(stamp)) => Some((id.clone(), *stamp)),
                    _ => None,
                })
                .collect();
            for chunk in jobs.chunks(batch) {
                let purged = store.purge_jobs(chunk, file).await?;
                changed += chunk.len() as u64 - purged.min(chunk.len() as u64);
                tokio::task::yield_now().await;
            }
        }
        Source::Executions(store) => {
            for chunk in picks.chunks(batch) {
                changed += delete_executions(store.as_ref(), chunk).await?;
                tokio::task::yield_now().await;
            }
        }
    }
    // The marker goes only after the deletions are durable (on a `Buffered` store they
    // are not when acknowledged): a power loss before must find the marker.
    source.sync().await?;
    Ok(changed)
}

/// Deletes the archived executions of `picks` in one transaction: a job goes whole, and
/// only when each of its executions is still as archived (gone ones are skipped).
/// Returns how many jobs stayed because something of them changed.
async fn delete_executions(store: &dyn ExecutionStore, picks: &[Pick]) -> Result<u64, PurgeError> {
    let mut changed = 0;
    let mut tx = store.begin_tx().await?;
    for pick in picks {
        let Pick::Compute { executions, .. } = pick else { continue };
        let mut present = Vec::with_capacity(executions.len());
        let mut unchanged = true;
        for (id, stamp) in executions {
            match tx.get_execution(id).await {
                Ok(x) => {
                    unchanged &= stamp.is_some_and(|s| s == (x.revision, x.modify_time));
                    present.push(id);
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        if !unchanged {
            changed += 1;
            continue;
        }
        for id in present {
            tx.delete_execution(id).await?;
        }
    }
    tx.commit().await?;
    Ok(changed)
}

/// Runs file work (writes, fsyncs, reads of archives) on a blocking thread, off the
/// async runtime.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, PurgeError> + Send + 'static,
) -> Result<T, PurgeError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| PurgeError::Task(format!("a file task failed: {e}")))?
}

/// The picks an archive file holds, read back from the file (for a pending marker).
fn picks_of(path: &Path, kind: &'static str) -> Result<Vec<Pick>, PurgeError> {
    let mut picks = Vec::new();
    for (n, record) in archive::read_archive(path)?.enumerate() {
        let record = record?;
        let bad = |reason: String| PurgeError::BadArchive { path: path.to_path_buf(), line: n + 1, reason };
        let id = archive::record_id(&record).ok_or_else(|| bad("no job id".into()))?.to_owned();
        let job = JobId::new(id).map_err(|e| bad(e.to_string()))?;
        // The stamps come from the archived records themselves: what the archive holds
        // is what may be deleted.
        picks.push(if kind == "requester" {
            let b: JobBundle = serde_json::from_value(record).map_err(|e| bad(e.to_string()))?;
            if b.job.id != job {
                return Err(bad("the job id does not match the record".into()));
            }
            Pick::Job(job, Some(b.stamp()))
        } else {
            let r: ComputeJobRecord = serde_json::from_value(record).map_err(|e| bad(e.to_string()))?;
            r.pick()
        });
    }
    Ok(picks)
}

/// Refuses a pending marker of another store (another node's store sharing the
/// directory): finishing it against this store would delete this store's records.
fn refuse_foreign(dir: &Path, pending: &Pending, store: &str) -> Result<(), PurgeError> {
    if pending.store.is_empty() || pending.store == store {
        return Ok(());
    }
    Err(PurgeError::ForeignMarker {
        dir: dir.to_path_buf(),
        marker: pending.marker_name(),
        marker_store: pending.store.clone(),
        store: store.to_owned(),
    })
}

/// What a dry run checks, as the real run would, without writing: the directory holds
/// archives of this kind of store and no marker of another store; returns the archives
/// the real run would finish first and the jobs they hold.
fn dry_run_checks(dir: &Path, kind: &'static str, store: &str) -> Result<(Vec<String>, u64), PurgeError> {
    if !dir.exists() {
        return Ok((Vec::new(), 0));
    }
    archive::check_kind(dir, kind)?;
    let (mut files, mut jobs) = (Vec::new(), 0);
    for pending in Pending::read_all(dir)? {
        refuse_foreign(dir, &pending, store)?;
        let path = dir.join(&pending.file);
        if path.exists() {
            jobs += picks_of(&path, kind)?.len() as u64;
        }
        files.push(pending.file);
    }
    Ok((files, jobs))
}

/// Finishes the archives an interrupted run left pending, oldest first; returns their
/// names and the jobs they hold.
async fn finish_pending(source: &Source, options: &PurgeOptions) -> Result<(Vec<String>, u64), PurgeError> {
    let dir = &options.archive_dir;
    let (mut finished, mut jobs) = (Vec::new(), 0);
    let store = source.store_id();
    let all = {
        let dir = dir.clone();
        blocking(move || Pending::read_all(&dir)).await?
    };
    for pending in all {
        refuse_foreign(dir, &pending, &store)?;
        let picks = {
            let (dir, pending, kind) = (dir.clone(), pending.clone(), source.kind());
            blocking(move || {
                let path = dir.join(&pending.file);
                if !path.exists() {
                    // Crashed before the archive was complete: its records were never
                    // deleted.
                    let tmp = dir.join(format!("{}.tmp", pending.file));
                    if tmp.exists() {
                        std::fs::remove_file(&tmp).map_err(|source| PurgeError::Io {
                            what: "remove a partial archive",
                            path: tmp.clone(),
                            source,
                        })?;
                    }
                    pending.clear(&dir)?;
                    return Ok(None);
                }
                let picks = picks_of(&path, kind)?;
                let index = Index::new(&dir);
                index.repair_tail()?;
                let indexed = index.ids_at(pending.stamp)?;
                index.append(picks.iter().map(Pick::id).filter(|id| !indexed.contains(*id)), pending.stamp)?;
                Ok(Some(picks))
            })
            .await?
        };
        let Some(picks) = picks else { continue };
        jobs += picks.len() as u64;
        delete(source, &picks, &pending.file, options.delete_batch).await?;
        {
            let (dir, pending) = (dir.clone(), pending.clone());
            blocking(move || pending.clear(&dir)).await?;
        }
        finished.push(pending.file);
    }
    Ok((finished, jobs))
}

/// Waits for the deletion of the previous archive's records.
async fn join(task: Option<tokio::task::JoinHandle<Result<u64, PurgeError>>>) -> Result<u64, PurgeError> {
    match task {
        Some(t) => t.await.map_err(|e| PurgeError::Task(format!("the deletion task failed: {e}")))?,
        None => Ok(0),
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
        let (owned, kind, store) = (dir.clone(), source.kind(), source.store_id());
        (report.resumed, report.resumed_jobs) = blocking(move || dry_run_checks(&owned, kind, &store)).await?;
        None
    } else {
        let (owned, kind) = (dir.clone(), source.kind());
        let lock = blocking(move || {
            brine_store::files::create_private_dir(&owned).map_err(|source| PurgeError::Io {
                what: "create the archive directory",
                path: owned.clone(),
                source,
            })?;
            archive::claim(&owned, kind)
        })
        .await?;
        (report.resumed, report.resumed_jobs) = finish_pending(source, options).await?;
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
    report.changed_since_archived += deleted?;
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
    deleting: &mut Option<tokio::task::JoinHandle<Result<u64, PurgeError>>>,
) -> Result<(), PurgeError> {
    let dir = &options.archive_dir;
    let mut remaining = options.max.unwrap_or(u64::MAX);
    let mut last_stamp = None;
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
        let (stamp, file, pending) = {
            let (owned, now, compression, store) =
                (dir.clone(), options.clock.now().as_secs(), options.compression, source.store_id());
            blocking(move || {
                let stamp = archive::free_stamp(&owned, now, last_stamp);
                let file = archive::archive_name(stamp, compression);
                let pending = Pending { stamp, file: file.clone(), store };
                pending.write(&owned)?;
                Ok((stamp, file, pending))
            })
            .await?
        };
        last_stamp = Some(stamp);
        // The file is written on a blocking thread fed one record at a time through a
        // bounded channel: memory holds a few jobs' records, and compression and fsync
        // stay off the async runtime.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Option<Loaded>>(16);
        let writer = {
            let (owned, compression) = (dir.clone(), options.compression);
            tokio::task::spawn_blocking(move || -> Result<(u64, u64), PurgeError> {
                let mut writer = ArchiveWriter::create(&owned, stamp, compression)?;
                while let Some(message) = rx.blocking_recv() {
                    match message {
                        Some(loaded) => loaded.write(&mut writer)?,
                        None => {
                            let raw = writer.raw_bytes;
                            let (_, size) = writer.finish()?;
                            return Ok((raw, size));
                        }
                    }
                }
                // The sender went away without finishing (an error): the `.tmp` file
                // stays unfinished and the marker makes the next run remove it.
                Err(PurgeError::Task("the archive was not finished".into()))
            })
        };
        let mut written = Vec::with_capacity(picks.len());
        let mut counts = PurgeReport::default();
        'pages: for page in picks.chunks(LOAD_PAGE) {
            // Each page is read, its records handed to the writer one by one and dropped.
            for loaded in load_page(source, page).await?.into_iter().flatten() {
                loaded.count(&mut counts);
                written.push(loaded.pick());
                if tx.send(Some(loaded)).await.is_err() {
                    break 'pages;
                }
            }
            // Reads are short, but many of them in a row would hold the thread.
            tokio::task::yield_now().await;
        }
        let _ = tx.send(None).await;
        drop(tx);
        let (raw, size) = writer.await.map_err(|e| PurgeError::Task(format!("the archive writer failed: {e}")))??;
        report.raw_bytes += raw;
        {
            let (owned, ids): (PathBuf, Vec<String>) =
                (dir.clone(), written.iter().map(|p| p.id().to_owned()).collect());
            blocking(move || Index::new(&owned).append(ids.iter().map(String::as_str), stamp)).await?;
        }
        // The records go while the next archive is written: at most one deletion runs,
        // and each archive's marker stays until its records are gone.
        report.changed_since_archived += join(deleting.take()).await?;
        let (src, dir_owned, batch) = (source.clone(), dir.clone(), options.delete_batch);
        *deleting = Some(tokio::spawn(async move {
            let changed = delete(&src, &written, &file, batch).await?;
            blocking(move || pending.clear(&dir_owned)).await?;
            Ok(changed)
        }));
        report.jobs += counts.jobs;
        report.executions += counts.executions;
        report.events += counts.events;
        report.evaluations += counts.evaluations;
        report.files.push(archive::archive_name(stamp, options.compression));
        report.bytes += size;
        if let Some(p) = &options.progress {
            p(report.jobs);
        }
    }
    Ok(())
}

/// What [`find_archived`] found for an id.
#[derive(Debug, Clone, Default)]
pub struct Lookup {
    /// The record, when the index names an archive for the id.
    pub record: Option<serde_json::Value>,
    /// The archive file it was read from.
    pub file: Option<PathBuf>,
    /// Index lines skipped because they are not UTF-8 or not `ID     STAMP` (numbers
    /// from 1): damage `brine archive verify` reports; the other lines still answer.
    pub skipped_lines: Vec<usize>,
}

/// Reads job `id` back from the archives in `dir`, through the index (`None` when the
/// index does not name it).
pub fn read_archived(dir: &Path, id: &str) -> Result<Option<serde_json::Value>, PurgeError> {
    Ok(find_archived(dir, id)?.record)
}

/// Reads job `id` back from the archives in `dir`, through the index, saying which file
/// held it and which index lines had to be skipped. A directory or index that does not
/// exist is an error naming it, never "not archived".
pub fn find_archived(dir: &Path, id: &str) -> Result<Lookup, PurgeError> {
    if !dir.is_dir() {
        return Err(PurgeError::NoArchiveDir { dir: dir.to_path_buf() });
    }
    if !dir.join(INDEX_FILE).exists() {
        return Err(PurgeError::NoIndex { dir: dir.to_path_buf() });
    }
    let found = Index::new(dir).find(id)?;
    let mut lookup = Lookup { skipped_lines: found.skipped, ..Lookup::default() };
    let Some(stamp) = found.stamp else { return Ok(lookup) };
    let path = archive::find_archive(dir, stamp).ok_or_else(|| PurgeError::MissingArchive {
        id: id.to_owned(),
        stamp,
        dir: dir.to_path_buf(),
    })?;
    for record in archive::read_archive(&path)? {
        let record = record?;
        if archive::record_id(&record) == Some(id) {
            lookup.record = Some(record);
            lookup.file = Some(path);
            return Ok(lookup);
        }
    }
    Err(PurgeError::BadArchive { path, line: 0, reason: format!("the index names this file for {id}, which it lacks") })
}

impl From<StoreError> for PurgeError {
    fn from(e: StoreError) -> Self {
        PurgeError::Store(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_counts_in_words() {
        let one = PurgeReport { jobs: 1, executions: 1, events: 2, files: vec!["f".into()], ..PurgeReport::default() };
        let text = one.to_string();
        assert!(text.starts_with("purge archived 1 job, 1 execution, 2 events, 0 evaluations into 1 file, "), "{text}");
        let dry = PurgeReport { dry_run: true, jobs: 3, ..PurgeReport::default() };
        assert!(dry.to_string().starts_with("purge would archive 3 jobs, 0 executions"), "{dry}");
    }
}
