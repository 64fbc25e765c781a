//! Dumps: a store's whole content as JSON lines, streamed through the store traits in
//! bounded memory, and loaded back into an empty store of any backend.
//!
//! `brine export`, `brine import` and `brine migrate copy` are built on this module; a
//! downstream `cargo xtask` can call it the same way. [`export`] reads a store page by
//! page and sends one [`Line`] per record into a bounded channel; [`write_lines`] (on a
//! blocking thread) writes them out, [`read_lines`] reads them back with their line
//! numbers, and [`import`] loads them in batches with the stores' load methods
//! (`load_executions`, `load_jobs`, `load_purged`, `EventLog::load`), so ids, revisions,
//! versions, times, history numbers, log sequence numbers and checkpoints are kept and
//! watchers resume where they were. A copy between two stores is [`export`] feeding
//! [`import`] through a channel, then [`compare`].
//!
//! The format (version [`FORMAT`]) is in `docs/FORMAT.md`: a header line, the records,
//! the event log, the checkpoints, and an end line with the counts of what came before
//! it, so a dump cut short anywhere is refused naming the line.
//!
//! Export reads a store that nothing writes meanwhile (stop the node, or export a
//! backup). Import refuses a store that holds anything. A failed or interrupted import
//! leaves the target partly loaded: remove it and import again.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::sync::Arc;

use brine_store::model::{Event, Execution, ExecutionState, JobId, JobState, LogEntry, Timestamp};
use brine_store::{EventLog, ExecutionStore, JobBundle, JobQuery, JobStore, Position, StoreError};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// The dump format this build writes and the newest it reads.
pub const FORMAT: u32 = 1;

/// The longest line [`read_lines`] accepts (one job with all its history).
pub const MAX_LINE: usize = 256 << 20;

/// How many lines the channels between the stages hold: what bounds a dump's memory.
pub const CHANNEL_LINES: usize = 256;

/// How many records a page of the export reads at a time.
const PAGE: usize = 256;

/// How many records of each kind one load writes at a time.
const BATCH_EXECUTIONS: usize = 256;
const BATCH_JOBS: usize = 64;
const BATCH_PURGED: usize = 1024;
const BATCH_ENTRIES: usize = 1024;

/// How many records [`export`] keeps ids of for [`compare`] to read back (between this
/// and twice this many, spread over the whole export).
const SAMPLE: usize = 64;

/// Which store a dump holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A compute node's execution store.
    Compute,
    /// A requester's job store.
    Requester,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Compute => "compute",
            Kind::Requester => "requester",
        })
    }
}

/// The first line of a dump.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The dump format ([`FORMAT`]).
    pub format: u32,
    /// Which store it holds.
    pub kind: Kind,
    /// The brine version that wrote it.
    pub brine: String,
    /// The store it was exported from, in words (`rocksdb compute store at …`).
    pub source: String,
    /// When the export started.
    pub exported_at: Timestamp,
}

/// One line of a dump (externally tagged: `{"execution": {…}}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Line {
    /// The first line.
    Header(Header),
    /// An execution of a compute store, with its history events in write order.
    Execution {
        /// The record as stored.
        execution: Box<Execution>,
        /// Its history.
        events: Vec<Event>,
    },
    /// A job of a requester store with everything of it (an archive line's shape).
    Job(Box<JobBundle>),
    /// A retained purge entry of a requester store.
    Purged {
        /// The purged job's id.
        job_id: JobId,
        /// The archive file it went to.
        archive: String,
    },
    /// The start of the event log: it holds exactly `trimmed + 1 ..= head`.
    Log {
        /// The highest sequence number retention deleted.
        trimmed: u64,
        /// The newest sequence number.
        head: u64,
    },
    /// An event-log entry, under its sequence number.
    Entry(Box<LogEntry>),
    /// A watcher's checkpoint.
    Checkpoint {
        /// The watcher.
        name: String,
        /// The last sequence number it handled.
        seq: u64,
    },
    /// The last line: the counts of every line before it.
    End(Tally),
}

/// What a dump holds, counted line by line (the end line carries the writer's count).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Lines before the end line, the header included.
    pub lines: u64,
    /// Records of each kind: `executions`, `events` (compute); `jobs`, `versions`,
    /// `history`, `evaluations`, `executions`, `purged` (requester); `log_entries`,
    /// `checkpoints`.
    pub records: BTreeMap<String, u64>,
    /// Executions (compute) or jobs (requester) per state.
    pub states: BTreeMap<String, u64>,
    /// The event log's head.
    pub log_head: u64,
    /// The highest sequence number retention deleted.
    pub log_trimmed: u64,
}

impl Tally {
    fn add(&mut self, what: &str, n: u64) {
        if n > 0 {
            *self.records.entry(what.to_owned()).or_default() += n;
        }
    }

    /// Counts one line (not the end line).
    fn count(&mut self, line: &Line) {
        self.lines += 1;
        match line {
            Line::Header(_) | Line::End(_) => {}
            Line::Execution { execution, events } => {
                self.add("executions", 1);
                self.add("events", events.len() as u64);
                *self.states.entry(execution.state().to_string()).or_default() += 1;
            }
            Line::Job(bundle) => {
                self.add("jobs", 1);
                self.add("versions", bundle.versions.len() as u64);
                self.add("history", bundle.history.len() as u64);
                self.add("evaluations", bundle.evaluations.len() as u64);
                self.add("executions", bundle.executions.len() as u64);
                *self.states.entry(bundle.job.state().to_string()).or_default() += 1;
            }
            Line::Purged { .. } => self.add("purged", 1),
            Line::Log { trimmed, head } => {
                self.log_trimmed = *trimmed;
                self.log_head = *head;
            }
            Line::Entry(_) => self.add("log_entries", 1),
            Line::Checkpoint { .. } => self.add("checkpoints", 1),
        }
    }

    /// The top-level records: executions of a compute store, jobs and purge entries of
    /// a requester store.
    pub fn main_records(&self, kind: Kind) -> u64 {
        let get = |k: &str| self.records.get(k).copied().unwrap_or(0);
        match kind {
            Kind::Compute => get("executions"),
            Kind::Requester => get("jobs") + get("purged"),
        }
    }
}

/// Why an export, import or comparison failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DumpError {
    /// The store refused a read or a load.
    #[error("{doing}: {source}")]
    Store {
        /// What was being done (`load lines 2–257`, `read the event log`).
        doing: String,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// Reading or writing the dump failed.
    #[error("{doing}: {source}")]
    Io {
        /// What was being done.
        doing: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A line is not what a dump holds there.
    #[error("line {line}: {reason}")]
    Line {
        /// The line's number, from 1.
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// The dump ended before its end line.
    #[error("the dump ends after line {lines} without its end line: it is truncated")]
    Truncated {
        /// Lines read.
        lines: u64,
    },
    /// The target store holds data already.
    #[error("the target store is not empty: it holds {what}; import into a new store")]
    NotEmpty {
        /// What it holds.
        what: String,
    },
    /// The other side of a channel stopped (its own error says why).
    #[error("the {0} stopped")]
    Stopped(&'static str),
}

fn store_err(doing: impl Into<String>) -> impl FnOnce(StoreError) -> DumpError {
    let doing = doing.into();
    move |source| DumpError::Store { doing, source }
}

/// An open store of either kind.
#[derive(Clone)]
pub enum Store {
    /// A compute node's execution store.
    Compute(Arc<dyn ExecutionStore>),
    /// A requester's job store.
    Requester(Arc<dyn JobStore>),
}

impl Store {
    /// Which kind it is.
    pub fn kind(&self) -> Kind {
        match self {
            Store::Compute(_) => Kind::Compute,
            Store::Requester(_) => Kind::Requester,
        }
    }

    /// Its event log.
    pub fn event_log(&self) -> Arc<dyn EventLog> {
        match self {
            Store::Compute(s) => s.event_log(),
            Store::Requester(s) => s.event_log(),
        }
    }

    /// How many top-level records an export of it sends, when the store knows without
    /// reading them (a compute store's counters); `None` for a job store.
    pub async fn records_hint(&self) -> Result<Option<u64>, DumpError> {
        match self {
            Store::Compute(s) => {
                let mut total = 0;
                for state in ExecutionState::ALL {
                    total += s.get_execution_count(state).await.map_err(store_err("count the executions"))?;
                }
                Ok(Some(total))
            }
            Store::Requester(_) => Ok(None),
        }
    }

    /// Makes everything written durable.
    pub async fn sync(&self) -> Result<(), DumpError> {
        match self {
            Store::Compute(s) => s.sync().await,
            Store::Requester(s) => s.sync().await,
        }
        .map_err(store_err("sync the store"))
    }

    /// Closes it.
    pub async fn close(&self) -> Result<(), DumpError> {
        match self {
            Store::Compute(s) => s.close().await,
            Store::Requester(s) => s.close().await,
        }
        .map_err(store_err("close the store"))
    }
}

/// What [`export`] sent.
#[derive(Debug, Clone, Default)]
pub struct Exported {
    /// The counts, as written on the end line.
    pub tally: Tally,
    /// Ids of records spread over the export, for [`compare`].
    pub sample: Vec<String>,
}

/// Keeps every `stride`-th id, doubling the stride whenever the sample is full, so it
/// stays spread over everything seen in bounded memory.
#[derive(Default)]
struct Sampler {
    ids: Vec<String>,
    seen: u64,
    stride: u64,
}

impl Sampler {
    fn offer(&mut self, id: &str) {
        let stride = self.stride.max(1);
        if self.seen.is_multiple_of(stride) {
            self.ids.push(id.to_owned());
            if self.ids.len() == SAMPLE * 2 {
                self.ids = self.ids.iter().step_by(2).cloned().collect();
                self.stride = stride * 2;
            }
        }
        self.seen += 1;
    }
}

/// Sends lines on, counting them.
struct Sender<'a> {
    out: &'a mpsc::Sender<Line>,
    tally: Tally,
}

impl Sender<'_> {
    async fn send(&mut self, line: Line) -> Result<(), DumpError> {
        self.tally.count(&line);
        self.out.send(line).await.map_err(|_| DumpError::Stopped("writer"))
    }
}

/// Sends the whole content of `store` to `out`, one [`Line`] per record, ending with the
/// end line; `source` names the store in the header. `progress` is called with the
/// number of top-level records sent so far. Reads page by page: memory stays bounded
/// by the channel and one page.
pub async fn export(
    store: &Store,
    source: &str,
    out: &mpsc::Sender<Line>,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<Exported, DumpError> {
    let mut tx = Sender { out, tally: Tally::default() };
    let mut sampler = Sampler::default();
    let header = Header {
        format: FORMAT,
        kind: store.kind(),
        brine: env!("CARGO_PKG_VERSION").to_owned(),
        source: source.to_owned(),
        exported_at: Timestamp::now(),
    };
    tx.send(Line::Header(header)).await?;
    let mut sent = 0u64;
    match store {
        Store::Compute(s) => {
            for state in ExecutionState::ALL {
                let mut after = None;
                loop {
                    let page = s
                        .get_executions_in_state(state, after.as_ref(), PAGE)
                        .await
                        .map_err(store_err(format!("read the {state} executions")))?;
                    let Some(last) = page.last() else { break };
                    after = Some(last.id.clone());
                    for execution in page {
                        let events = s
                            .get_execution_events(&execution.id)
                            .await
                            .map_err(store_err(format!("read the events of execution {}", execution.id)))?;
                        sampler.offer(execution.id.as_str());
                        tx.send(Line::Execution { execution: Box::new(execution), events }).await?;
                        sent += 1;
                        progress(sent);
                    }
                }
            }
        }
        Store::Requester(s) => {
            let mut query = JobQuery { limit: PAGE, ..JobQuery::default() };
            loop {
                let page = s.list_jobs(&query).await.map_err(store_err("list the jobs"))?;
                for job in page.jobs {
                    let bundle = s
                        .job_bundle(&job.id)
                        .await
                        .map_err(store_err(format!("read job {} with its records", job.id)))?;
                    sampler.offer(job.id.as_str());
                    tx.send(Line::Job(Box::new(bundle))).await?;
                    sent += 1;
                    progress(sent);
                }
                match page.next_token {
                    Some(token) => query.token = Some(token),
                    None => break,
                }
            }
            let mut after: Option<JobId> = None;
            loop {
                let page = s.list_purged(after.as_ref(), PAGE).await.map_err(store_err("list the purged jobs"))?;
                let Some((last, _)) = page.last() else { break };
                after = Some(last.clone());
                for (job_id, archive) in page {
                    tx.send(Line::Purged { job_id, archive }).await?;
                    sent += 1;
                    progress(sent);
                }
            }
        }
    }
    let log = store.event_log();
    let head = log.head().await.map_err(store_err("read the event log's head"))?;
    let trimmed = log.oldest().await.map_err(store_err("read the event log's oldest entry"))? - 1;
    tx.send(Line::Log { trimmed, head }).await?;
    // Entries up to the head read at the start; the import checks they have no gap.
    let mut at = trimmed;
    'log: while at < head {
        let batch = log
            .get_events(Position::After(at), BATCH_ENTRIES, &brine_store::EventFilter::all())
            .await
            .map_err(store_err(format!("read the event log after {at}")))?;
        if batch.entries.is_empty() {
            break;
        }
        for entry in batch.entries {
            if entry.seq > head {
                break 'log;
            }
            at = entry.seq;
            tx.send(Line::Entry(Box::new(entry))).await?;
        }
    }
    for (name, seq) in log.list_checkpoints().await.map_err(store_err("list the checkpoints"))? {
        tx.send(Line::Checkpoint { name, seq }).await?;
    }
    let tally = tx.tally.clone();
    tx.out.send(Line::End(tally.clone())).await.map_err(|_| DumpError::Stopped("writer"))?;
    Ok(Exported { tally, sample: sampler.ids })
}

/// Writes the lines from `lines` to `out`, one JSON object and a newline each, until
/// the channel closes; returns the bytes written. Blocking: run it on a blocking
/// thread.
pub fn write_lines(lines: &mut mpsc::Receiver<Line>, out: impl Write) -> Result<u64, DumpError> {
    let mut out = Counted { inner: out, bytes: 0 };
    let io = |source| DumpError::Io { doing: "write the dump".into(), source };
    while let Some(line) = lines.blocking_recv() {
        serde_json::to_writer(&mut out, &line).map_err(|e| io(e.into()))?;
        out.write_all(b"\n").map_err(io)?;
    }
    out.flush().map_err(io)?;
    Ok(out.bytes)
}

/// A writer that counts the bytes through it.
struct Counted<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A line read back, with its number from 1, or why the dump cannot be read on.
pub type Numbered = Result<(u64, Line), DumpError>;

/// Reads a dump from `input`, sending each line with its number; stops after the first
/// error, which it sends too. A last line cut short (no newline, not whole JSON) is
/// named as truncation. Blocking: run it on a blocking thread.
pub fn read_lines(mut input: impl BufRead, lines: &mpsc::Sender<Numbered>) {
    let mut buf = Vec::new();
    let mut number = 0u64;
    loop {
        buf.clear();
        number += 1;
        let read = std::io::Read::take(&mut input, MAX_LINE as u64 + 1).read_until(b'\n', &mut buf);
        let item = match read {
            Ok(0) => return,
            Ok(_) => parse_line(number, &buf),
            Err(source) => Err(DumpError::Io { doing: format!("read line {number} of the dump"), source }),
        };
        let failed = item.is_err();
        if lines.blocking_send(item).is_err() || failed {
            return;
        }
    }
}

fn parse_line(number: u64, buf: &[u8]) -> Numbered {
    let whole = buf.ends_with(b"\n");
    if !whole && buf.len() > MAX_LINE {
        return Err(DumpError::Line { line: number, reason: format!("longer than {} MiB", MAX_LINE >> 20) });
    }
    let text = buf.strip_suffix(b"\n").unwrap_or(buf);
    match serde_json::from_slice::<Line>(text) {
        Ok(line) => Ok((number, line)),
        Err(e) if !whole && e.is_eof() => Err(DumpError::Line {
            line: number,
            reason: "cut short (no newline, incomplete JSON): the dump is truncated".into(),
        }),
        Err(e) if text.iter().all(u8::is_ascii_whitespace) => {
            Err(DumpError::Line { line: number, reason: format!("empty, where a dump line belongs ({e})") })
        }
        Err(e) => Err(DumpError::Line { line: number, reason: format!("not a dump line: {e}") }),
    }
}

/// What [`import`] loaded.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The dump's header.
    pub header: Header,
    /// What it held (equal to its end line's counts).
    pub tally: Tally,
}

/// Where the import stands in the dump's sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Section {
    Records,
    Log,
    Checkpoints,
}

/// Records waiting to be loaded, with the number of the first line they came from.
struct Pending<T> {
    items: Vec<T>,
    first_line: u64,
    last_line: u64,
}

impl<T> Pending<T> {
    fn new() -> Self {
        Pending { items: Vec::new(), first_line: 0, last_line: 0 }
    }

    fn push(&mut self, line: u64, item: T) {
        if self.items.is_empty() {
            self.first_line = line;
        }
        self.last_line = line;
        self.items.push(item);
    }

    fn take(&mut self) -> (Vec<T>, String) {
        let doing = match self.first_line == self.last_line {
            true => format!("load line {}", self.first_line),
            false => format!("load lines {}–{}", self.first_line, self.last_line),
        };
        (std::mem::take(&mut self.items), doing)
    }
}

/// The parts of an import in flight.
struct Loader<'a> {
    store: &'a Store,
    log: Arc<dyn EventLog>,
    executions: Pending<(Execution, Vec<Event>)>,
    jobs: Pending<JobBundle>,
    purged: Pending<(JobId, String)>,
    entries: Pending<LogEntry>,
    /// The log section's bounds, and the sequence number loaded up to.
    log_bounds: Option<(u64, u64)>,
    after: u64,
}

impl Loader<'_> {
    async fn flush_records(&mut self) -> Result<(), DumpError> {
        if !self.executions.items.is_empty() {
            let (items, doing) = self.executions.take();
            if let Store::Compute(s) = self.store {
                s.load_executions(items).await.map_err(store_err(doing))?;
            }
        }
        if !self.jobs.items.is_empty() {
            let (items, doing) = self.jobs.take();
            if let Store::Requester(s) = self.store {
                s.load_jobs(items).await.map_err(store_err(doing))?;
            }
        }
        if !self.purged.items.is_empty() {
            let (items, doing) = self.purged.take();
            if let Store::Requester(s) = self.store {
                s.load_purged(items).await.map_err(store_err(doing))?;
            }
        }
        Ok(())
    }

    async fn flush_entries(&mut self) -> Result<(), DumpError> {
        if !self.entries.items.is_empty() {
            let (items, doing) = self.entries.take();
            self.after = self.log.load(self.after, items).await.map_err(store_err(doing))?;
        }
        Ok(())
    }

    /// Ends the log section at `line`: every entry up to the head was there.
    async fn finish_log(&mut self, line: u64) -> Result<(), DumpError> {
        self.flush_entries().await?;
        let Some((trimmed, head)) = self.log_bounds else { return Ok(()) };
        if self.after == trimmed && trimmed == head && head > 0 {
            self.after = self.log.load(head, Vec::new()).await.map_err(store_err(format!("load line {line}")))?;
        }
        if self.after != head {
            return Err(DumpError::Line {
                line,
                reason: format!("the log section ends at entry {}, but its head is {head}", self.after),
            });
        }
        Ok(())
    }
}

/// Refuses a target that holds anything: records, log entries, a moved log head or
/// checkpoints.
async fn check_empty(store: &Store) -> Result<(), DumpError> {
    let mut held = Vec::new();
    match store {
        Store::Compute(s) => {
            let mut n = 0;
            for state in ExecutionState::ALL {
                n += s.get_execution_count(state).await.map_err(store_err("count the target's executions"))?;
            }
            if n > 0 {
                held.push(format!("{n} executions"));
            }
        }
        Store::Requester(s) => {
            let page = s.list_jobs(&JobQuery { limit: 1, ..JobQuery::default() }).await;
            if !page.map_err(store_err("list the target's jobs"))?.jobs.is_empty() {
                held.push("jobs".to_owned());
            }
            if !s.list_purged(None, 1).await.map_err(store_err("list the target's purged jobs"))?.is_empty() {
                held.push("purged job ids".to_owned());
            }
        }
    }
    let log = store.event_log();
    let head = log.head().await.map_err(store_err("read the target's log head"))?;
    if head > 0 {
        held.push(format!("an event log at {head}"));
    }
    let checkpoints = log.list_checkpoints().await.map_err(store_err("list the target's checkpoints"))?;
    if !checkpoints.is_empty() {
        held.push(format!("{} checkpoints", checkpoints.len()));
    }
    match held.is_empty() {
        true => Ok(()),
        false => Err(DumpError::NotEmpty { what: held.join(", ") }),
    }
}

fn misplaced(line: u64, what: &str, why: &str) -> DumpError {
    DumpError::Line { line, reason: format!("{what} {why}") }
}

/// Reads a dump's first line, which must be its header in a format this build reads.
pub async fn read_header(lines: &mut mpsc::Receiver<Numbered>) -> Result<Header, DumpError> {
    let header = match lines.recv().await {
        None => return Err(DumpError::Truncated { lines: 0 }),
        Some(Err(e)) => return Err(e),
        Some(Ok((_, Line::Header(h)))) => h,
        Some(Ok((n, _))) => return Err(misplaced(n, "the first line", "must be the dump's header")),
    };
    if header.format == 0 || header.format > FORMAT {
        let reason =
            format!("dump format {} is not one this brine reads (1 to {FORMAT}): upgrade brine", header.format);
        return Err(DumpError::Line { line: 1, reason });
    }
    Ok(header)
}

/// Loads the dump arriving on `lines` into `store`, which must be empty and of the
/// dump's kind, in batches; checks the end line's counts against what arrived and makes
/// the store durable. `progress` is called with the number of top-level records
/// loaded so far.
pub async fn import(
    store: &Store,
    lines: &mut mpsc::Receiver<Numbered>,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<Imported, DumpError> {
    let header = read_header(lines).await?;
    import_after_header(store, header, lines, progress).await
}

/// [`import`] of a dump whose header [`read_header`] has read already (to learn which
/// kind of store to open).
pub async fn import_after_header(
    store: &Store,
    header: Header,
    lines: &mut mpsc::Receiver<Numbered>,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<Imported, DumpError> {
    if header.kind != store.kind() {
        let reason = format!("the dump holds a {} store; the target is a {} store", header.kind, store.kind());
        return Err(DumpError::Line { line: 1, reason });
    }
    check_empty(store).await?;
    let mut tally = Tally::default();
    tally.count(&Line::Header(header.clone()));
    let mut loader = Loader {
        store,
        log: store.event_log(),
        executions: Pending::new(),
        jobs: Pending::new(),
        purged: Pending::new(),
        entries: Pending::new(),
        log_bounds: None,
        after: 0,
    };
    let mut section = Section::Records;
    let mut loaded = 0u64;
    let mut last_line = 1;
    loop {
        let (n, line) = match lines.recv().await {
            None => return Err(DumpError::Truncated { lines: last_line }),
            Some(item) => item?,
        };
        last_line = n;
        let kind = store.kind();
        match (&line, kind) {
            (Line::Header(_), _) => return Err(misplaced(n, "a header", "after the first line")),
            (Line::Execution { .. }, Kind::Requester) | (Line::Job(_) | Line::Purged { .. }, Kind::Compute) => {
                return Err(misplaced(n, "a record", &format!("of the other kind of store, in a {kind} dump")));
            }
            (Line::Execution { .. } | Line::Job(_) | Line::Purged { .. }, _) if section != Section::Records => {
                return Err(misplaced(n, "a record", "after the event log"));
            }
            (Line::Log { .. }, _) if section != Section::Records => {
                return Err(misplaced(n, "a second log section", "in one dump"));
            }
            (Line::Entry(_), _) if section != Section::Log => {
                return Err(misplaced(n, "a log entry", "outside the log section"));
            }
            (Line::Checkpoint { .. }, _) if section == Section::Records => {
                return Err(misplaced(n, "a checkpoint", "before the event log"));
            }
            _ => {}
        }
        if !matches!(line, Line::End(_)) {
            tally.count(&line);
        }
        match line {
            Line::Header(_) => {}
            Line::Execution { execution, events } => {
                loader.executions.push(n, (*execution, events));
                loaded += 1;
                if loader.executions.items.len() >= BATCH_EXECUTIONS {
                    loader.flush_records().await?;
                    progress(loaded);
                }
            }
            Line::Job(bundle) => {
                loader.jobs.push(n, *bundle);
                loaded += 1;
                if loader.jobs.items.len() >= BATCH_JOBS {
                    loader.flush_records().await?;
                    progress(loaded);
                }
            }
            Line::Purged { job_id, archive } => {
                // Jobs go first: a purged id must not be taken by a job still pending.
                if !loader.jobs.items.is_empty() {
                    loader.flush_records().await?;
                }
                loader.purged.push(n, (job_id, archive));
                loaded += 1;
                if loader.purged.items.len() >= BATCH_PURGED {
                    loader.flush_records().await?;
                    progress(loaded);
                }
            }
            Line::Log { trimmed, head } => {
                if trimmed > head {
                    return Err(misplaced(n, "the log section", &format!("says trimmed {trimmed} above head {head}")));
                }
                loader.flush_records().await?;
                progress(loaded);
                loader.log_bounds = Some((trimmed, head));
                loader.after = trimmed;
                section = Section::Log;
            }
            Line::Entry(entry) => {
                loader.entries.push(n, *entry);
                if loader.entries.items.len() >= BATCH_ENTRIES {
                    loader.flush_entries().await?;
                }
            }
            Line::Checkpoint { name, seq } => {
                if section == Section::Log {
                    loader.finish_log(n).await?;
                    section = Section::Checkpoints;
                }
                loader.log.checkpoint(&name, seq).await.map_err(store_err(format!("load line {n}")))?;
            }
            Line::End(written) => {
                if section == Section::Records {
                    return Err(misplaced(n, "the end line", "before the event log section"));
                }
                if section == Section::Log {
                    loader.finish_log(n).await?;
                }
                if written != tally {
                    return Err(DumpError::Line {
                        line: n,
                        reason: format!(
                            "the end line counts {}, but the dump holds {}: lines are missing or were changed",
                            describe_in_full(&written, kind),
                            describe_in_full(&tally, kind)
                        ),
                    });
                }
                break;
            }
        }
    }
    if let Some(item) = lines.recv().await {
        let (n, _) = item?;
        return Err(misplaced(n, "a line", "after the end line"));
    }
    store.sync().await?;
    progress(loaded);
    Ok(Imported { header, tally })
}

/// A tally in words: `2000 executions, 9248 log entries, …`.
pub fn describe_tally(tally: &Tally, kind: Kind) -> String {
    let mut parts = vec![format!("{} lines", tally.lines)];
    let order: &[&str] = match kind {
        Kind::Compute => &["executions", "events"],
        Kind::Requester => &["jobs", "versions", "history", "evaluations", "executions", "purged"],
    };
    for what in order.iter().chain(&["log_entries", "checkpoints"]) {
        let n = tally.records.get(*what).copied().unwrap_or(0);
        parts.push(format!("{n} {}", what.replace('_', " ")));
    }
    parts.join(", ")
}

/// A tally in words with everything it compares: the records, the states and the log.
fn describe_in_full(tally: &Tally, kind: Kind) -> String {
    let states: Vec<String> = tally.states.iter().map(|(s, n)| format!("{s}={n}")).collect();
    format!(
        "{}, states {}, log {}..={}",
        describe_tally(tally, kind),
        if states.is_empty() { "none".to_owned() } else { states.join(" ") },
        tally.log_trimmed + 1,
        tally.log_head
    )
}

/// What [`compare`] found different between a source and its copy (empty: none).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Comparison {
    /// Counts per state, compared (`state: source = copy`).
    pub states: BTreeMap<String, (u64, u64)>,
    /// The log heads.
    pub log_head: (u64, u64),
    /// Checkpoints compared.
    pub checkpoints: usize,
    /// Sampled records read back from both and compared.
    pub sampled: usize,
    /// Every difference, in words.
    pub differences: Vec<String>,
}

/// Compares a copy with its source after [`export`] fed [`import`]: counts per state
/// (compute stores' counters; requester stores' jobs counted from the export and by
/// listing the copy), the log's head and oldest entry, every checkpoint, and the
/// sampled records read back from both.
pub async fn compare(source: &Store, copy: &Store, exported: &Exported) -> Result<Comparison, DumpError> {
    let mut out = Comparison::default();
    match (source, copy) {
        (Store::Compute(a), Store::Compute(b)) => {
            for state in ExecutionState::ALL {
                let x = a.get_execution_count(state).await.map_err(store_err("count the source"))?;
                let y = b.get_execution_count(state).await.map_err(store_err("count the copy"))?;
                if x > 0 || y > 0 {
                    out.states.insert(state.to_string(), (x, y));
                }
            }
            for id in &exported.sample {
                let id = brine_store::model::ExecutionId::new(id.as_str())
                    .map_err(|e| DumpError::Store { doing: "read a sampled execution".into(), source: e.into() })?;
                let x = read_back(a.get_execution(&id).await, a.get_execution_events(&id).await)?;
                let y = read_back(b.get_execution(&id).await, b.get_execution_events(&id).await)?;
                if x != y {
                    out.differences.push(format!("execution {id} differs"));
                }
                out.sampled += 1;
            }
        }
        (Store::Requester(a), Store::Requester(b)) => {
            let mut counted: BTreeMap<String, u64> = BTreeMap::new();
            let mut query = JobQuery { limit: PAGE, ..JobQuery::default() };
            loop {
                let page = b.list_jobs(&query).await.map_err(store_err("list the copy's jobs"))?;
                for job in &page.jobs {
                    *counted.entry(job.state().to_string()).or_default() += 1;
                }
                match page.next_token {
                    Some(token) => query.token = Some(token),
                    None => break,
                }
            }
            for state in JobState::ALL {
                let name = state.to_string();
                let x = exported.tally.states.get(&name).copied().unwrap_or(0);
                let y = counted.get(&name).copied().unwrap_or(0);
                if x > 0 || y > 0 {
                    out.states.insert(name, (x, y));
                }
            }
            for id in &exported.sample {
                let id = JobId::new(id.as_str())
                    .map_err(|e| DumpError::Store { doing: "read a sampled job".into(), source: e.into() })?;
                let x = a.job_bundle(&id).await.map_err(store_err(format!("read job {id} in the source")))?;
                match b.job_bundle(&id).await {
                    Ok(y) if y == x => {}
                    Ok(_) => out.differences.push(format!("job {id} differs")),
                    Err(e) if e.is_not_found() => out.differences.push(format!("job {id} is missing from the copy")),
                    Err(e) => return Err(store_err(format!("read job {id} in the copy"))(e)),
                }
                out.sampled += 1;
            }
        }
        _ => out.differences.push(format!("a {} store against a {} store", source.kind(), copy.kind())),
    }
    for (state, (x, y)) in &out.states {
        if x != y {
            out.differences.push(format!("{state}: {x} in the source, {y} in the copy"));
        }
    }
    let (a, b) = (source.event_log(), copy.event_log());
    let head = (
        a.head().await.map_err(store_err("read the source's log head"))?,
        b.head().await.map_err(store_err("read the copy's log head"))?,
    );
    out.log_head = head;
    if head.0 != head.1 {
        out.differences.push(format!("log head: {} in the source, {} in the copy", head.0, head.1));
    }
    let oldest = (
        a.oldest().await.map_err(store_err("read the source's log"))?,
        b.oldest().await.map_err(store_err("read the copy's log"))?,
    );
    if oldest.0 != oldest.1 {
        out.differences.push(format!("oldest log entry: {} in the source, {} in the copy", oldest.0, oldest.1));
    }
    let checkpoints = (
        a.list_checkpoints().await.map_err(store_err("list the source's checkpoints"))?,
        b.list_checkpoints().await.map_err(store_err("list the copy's checkpoints"))?,
    );
    out.checkpoints = checkpoints.0.len();
    if checkpoints.0 != checkpoints.1 {
        out.differences
            .push(format!("checkpoints: {:?} in the source, {:?} in the copy", checkpoints.0, checkpoints.1));
    }
    Ok(out)
}

/// An execution with its events as one side of a comparison holds it (`None`: it has
/// no such execution).
fn read_back(
    execution: brine_store::Result<Execution>,
    events: brine_store::Result<Vec<Event>>,
) -> Result<Option<(Execution, Vec<Event>)>, DumpError> {
    match (execution, events) {
        (Ok(e), Ok(events)) => Ok(Some((e, events))),
        (Err(e), _) | (_, Err(e)) if e.is_not_found() => Ok(None),
        (Err(e), _) | (_, Err(e)) => Err(store_err("read a sampled execution")(e)),
    }
}

/// Copies `source` into the empty store `target` without a file: [`export`] feeding
/// [`import`] through a bounded channel, then [`compare`].
pub async fn copy(
    source: &Store,
    source_name: &str,
    target: &Store,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<(Imported, Comparison), DumpError> {
    let (lines_tx, mut lines_rx) = mpsc::channel::<Line>(CHANNEL_LINES);
    let (numbered_tx, mut numbered_rx) = mpsc::channel::<Numbered>(CHANNEL_LINES);
    // The export (with the numbering of its lines) runs as a task of its own, so it and
    // the import use two cores. When the import stops (or this future is dropped), the
    // receiver goes, and the numbering and the export see their channels close and stop.
    let (from, name) = (source.clone(), source_name.to_owned());
    let exporting = tokio::spawn(async move {
        let number = async move {
            let mut n = 0u64;
            while let Some(line) = lines_rx.recv().await {
                n += 1;
                if numbered_tx.send(Ok((n, line))).await.is_err() {
                    return;
                }
            }
        };
        let export = async {
            let out = export(&from, &name, &lines_tx, &|_| {}).await;
            drop(lines_tx);
            out
        };
        tokio::join!(export, number).0
    });
    let imported = import(target, &mut numbered_rx, progress).await;
    drop(numbered_rx);
    let exported = match exporting.await {
        Ok(exported) => exported,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(DumpError::Stopped("export")),
    };
    // The export's own failure explains an import that found the dump cut short; the
    // import's explains an export that stopped because the import did.
    let (imported, exported) = match (imported, exported) {
        (_, Err(e)) if !matches!(e, DumpError::Stopped(_)) => return Err(e),
        (Err(e), _) => return Err(e),
        (Ok(_), Err(e)) => return Err(e),
        (Ok(imported), Ok(exported)) => (imported, exported),
    };
    let comparison = compare(source, target, &exported).await?;
    Ok((imported, comparison))
}
