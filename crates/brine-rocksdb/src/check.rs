//! Consistency check of a store, streaming: what `brine db check` prints.
//!
//! It verifies that every value decodes; that every index entry points at a record in
//! the matching state or job; that every record has its index entries; that counters
//! equal the state index; that the event log has no gap below its head and `log_head`
//! is its newest key; and that checkpoints are at or below the head. Memory stays bounded:
//! families are iterated once and cross-checks are point reads.

use brine_store::model::{Evaluation, Execution, ExecutionState, Job, JobHistory, LogEntry};
use brine_store::{Result, StoreError};
use rocksdb::DB;
use serde::de::DeserializeOwned;

use crate::cf::{Cf, StoreKind};
use crate::codec::decode;
use crate::engine::{Engine, Snapshot};
use crate::layout::{self, meta};

pub use brine_store::{CheckReport, Problem};

/// [`check`] on a blocking thread: what the stores' `check` runs.
pub(crate) async fn check_on_blocking_thread(engine: &std::sync::Arc<Engine>) -> Result<CheckReport> {
    let engine = std::sync::Arc::clone(engine);
    tokio::task::spawn_blocking(move || check(&engine)).await.map_err(|e| StoreError::backend("check", e))?
}

struct Checker<'e> {
    engine: &'e Engine,
    db: &'e DB,
    /// Every read of a check goes through one snapshot, so a check of a live store sees
    /// one consistent state and reports no problem a concurrent write only seems to make.
    /// `None` on a read-only secondary instance, whose state never moves while it is
    /// open (and which has no snapshots).
    snapshot: Option<Snapshot<'e>>,
    report: CheckReport,
}

impl Checker<'_> {
    fn problem(&mut self, cf: Cf, key: &[u8], what: impl Into<String>) {
        self.report.problem(cf.name(), crate::readable::show(cf, key), what);
    }

    fn read(&self, cf: Cf, key: &[u8]) -> Result<Option<rocksdb::DBPinnableSlice<'_>>> {
        let handle = self.engine.cf(self.db, cf)?;
        let raw = match &self.snapshot {
            Some(snapshot) => snapshot.get_pinned_cf(handle, key),
            None => self.db.get_pinned_cf(handle, key),
        };
        raw.map_err(|e| read_error(cf, key, e))
    }

    fn exists(&self, cf: Cf, key: &[u8]) -> Result<bool> {
        Ok(self.read(cf, key)?.is_some())
    }

    fn get<T: DeserializeOwned>(&self, cf: Cf, key: &[u8]) -> Result<Option<std::result::Result<T, StoreError>>> {
        Ok(self.read(cf, key)?.map(|v| decode(cf, key, &v)))
    }

    /// Iterates a whole family, decoding each value as `T` and reporting the ones that do
    /// not decode; `visit` gets the good ones.
    fn each<T: DeserializeOwned>(
        &mut self,
        cf: Cf,
        mut visit: impl FnMut(&mut Self, &[u8], T) -> Result<()>,
    ) -> Result<()> {
        self.each_key(cf, |c, k, v| match decode::<T>(cf, k, v) {
            Ok(value) => visit(c, k, value),
            Err(e) => {
                c.problem(cf, k, format!("value does not decode: {}", reason(&e)));
                Ok(())
            }
        })
    }

    /// Iterates an index family's keys.
    fn each_key(&mut self, cf: Cf, mut visit: impl FnMut(&mut Self, &[u8], &[u8]) -> Result<()>) -> Result<()> {
        let db = self.db;
        let mut it = self.engine.iter_at(db, self.snapshot.as_ref(), cf, &[], None)?;
        it.seek_to_first();
        let mut last = Vec::new();
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else { break };
            self.report.keys_checked += 1;
            visit(self, k, v)?;
            last.clear();
            last.extend_from_slice(k);
            it.next();
        }
        it.status().map_err(|e| read_error(cf, &last, e))
    }

    fn executions(&mut self) -> Result<()> {
        let mut counts = [0u64; 9];
        self.each::<Execution>(Cf::Executions, |c, k, e| {
            if k != layout::execution(&e.id).as_slice() {
                c.problem(Cf::Executions, k, format!("key does not match the record's id {}", e.id));
            }
            counts[usize::from(e.state().code())] += 1;
            if !c.exists(Cf::IdxExecutionsByJobId, &layout::execution_by_job(&e.job_id, &e.id))? {
                c.problem(Cf::Executions, k, format!("missing from idx_executions_by_job_id under job {}", e.job_id));
            }
            if !c.exists(Cf::IdxExecutionsByState, &layout::execution_by_state(e.state(), &e.id))? {
                c.problem(Cf::Executions, k, format!("missing from idx_executions_by_state under {}", e.state()));
            }
            Ok(())
        })?;
        self.each_key(Cf::IdxExecutionsByJobId, |c, k, _| {
            let decoded = layout::decode(Cf::IdxExecutionsByJobId, k).ok();
            let parsed = decoded.as_ref().and_then(|d| Some((d.str("job_id")?, d.str("execution_id")?)));
            let Some((job, id)) = parsed else {
                c.problem(Cf::IdxExecutionsByJobId, k, "key is not job id / execution id");
                return Ok(());
            };
            match c.get::<Execution>(Cf::Executions, id.as_bytes())? {
                None => c.problem(Cf::IdxExecutionsByJobId, k, format!("points at missing execution {id}")),
                Some(Ok(e)) if e.job_id.as_str() != job => {
                    c.problem(Cf::IdxExecutionsByJobId, k, format!("execution {id} belongs to job {}", e.job_id))
                }
                Some(_) => {}
            }
            Ok(())
        })?;
        let mut indexed = [0u64; 9];
        self.each_key(Cf::IdxExecutionsByState, |c, k, _| {
            let Ok(decoded) = layout::decode(Cf::IdxExecutionsByState, k) else {
                c.problem(Cf::IdxExecutionsByState, k, "key is not state / execution id");
                return Ok(());
            };
            let (code, id) = (decoded.u8("state").unwrap_or_default(), decoded.str("execution_id").unwrap_or_default());
            let Some(state) = ExecutionState::from_code(code) else {
                c.problem(Cf::IdxExecutionsByState, k, format!("unknown state code {code}"));
                return Ok(());
            };
            indexed[usize::from(code)] += 1;
            match c.get::<Execution>(Cf::Executions, id.as_bytes())? {
                None => c.problem(Cf::IdxExecutionsByState, k, format!("points at missing execution {id}")),
                Some(Ok(e)) if e.state() != state => c.problem(
                    Cf::IdxExecutionsByState,
                    k,
                    format!("execution is in state {}, indexed under {state}", e.state()),
                ),
                Some(_) => {}
            }
            Ok(())
        })?;
        for state in ExecutionState::ALL {
            let key = meta::count(state.code());
            let stored = match self.get::<u64>(Cf::Meta, &key)? {
                None => 0,
                Some(Ok(n)) => n,
                Some(Err(e)) => {
                    self.problem(Cf::Meta, &key, format!("value does not decode: {}", reason(&e)));
                    continue;
                }
            };
            let slot = usize::from(state.code());
            if stored != indexed[slot] || stored != counts[slot] {
                self.problem(
                    Cf::Meta,
                    &key,
                    format!(
                        "counter of {state} is {stored}, the state index has {}, the records {}",
                        indexed[slot], counts[slot]
                    ),
                );
            }
        }
        self.each_key(Cf::ExecutionEvents, |c, k, v| {
            let Some(id) = layout::decode(Cf::ExecutionEvents, k).ok().and_then(|d| d.str("execution_id")) else {
                c.problem(Cf::ExecutionEvents, k, "key is not execution id / sequence");
                return Ok(());
            };
            if let Err(e) = decode::<brine_store::model::Event>(Cf::ExecutionEvents, k, v) {
                c.problem(Cf::ExecutionEvents, k, format!("value does not decode: {}", reason(&e)));
            }
            if !c.exists(Cf::Executions, id.as_bytes())? {
                c.problem(Cf::ExecutionEvents, k, format!("history of missing execution {id}"));
            }
            Ok(())
        })
    }

    fn jobs(&mut self) -> Result<()> {
        self.each::<Job>(Cf::Jobs, |c, k, job| {
            if k != layout::job(&job.id).as_slice() {
                c.problem(Cf::Jobs, k, format!("key does not match the record's id {}", job.id));
            }
            if let Some(Ok(file)) = c.get::<String>(Cf::PurgedJobs, &layout::job(&job.id))? {
                c.problem(Cf::Jobs, k, brine_store::rules::purged_id_reused(&file));
            }
            for (cf, key, _) in layout::job_indexes(&job) {
                if !c.exists(cf, &key)? {
                    c.problem(Cf::Jobs, k, format!("missing from {cf} at {}", crate::readable::show(cf, &key)));
                }
            }
            Ok(())
        })?;
        for cf in [
            Cf::IdxJobsByCreate,
            Cf::IdxJobsByModify,
            Cf::IdxJobsByNamespaceCreate,
            Cf::IdxJobsByNamespaceModify,
            Cf::IdxJobsInProgress,
            Cf::IdxJobsQueued,
            Cf::IdxJobsIdle,
            Cf::IdxJobsByName,
            Cf::IdxJobsByStateCreate,
            Cf::IdxJobsByStateModify,
            Cf::IdxJobsByLabelCreate,
            Cf::IdxJobsByLabelModify,
        ] {
            self.each_key(cf, |c, k, v| {
                let id = layout::indexed_job(cf, k, v);
                let Some(id) = id else {
                    c.problem(cf, k, "key does not end in a job id");
                    return Ok(());
                };
                match c.get::<Job>(Cf::Jobs, &layout::job(&id))? {
                    None => c.problem(cf, k, format!("points at missing job {id}")),
                    Some(Ok(job)) => {
                        if !layout::job_indexes(&job).iter().any(|(f, key, _)| *f == cf && key == k) {
                            c.problem(cf, k, format!("does not match job {id} (stale entry)"));
                        }
                    }
                    Some(Err(_)) => {}
                }
                Ok(())
            })?;
        }
        for cf in [Cf::JobVersions, Cf::JobHistory] {
            self.each_key(cf, |c, k, v| {
                let job = layout::decode(cf, k).ok().and_then(|d| d.str("job_id"));
                let decoded = if cf == Cf::JobHistory {
                    decode::<JobHistory>(cf, k, v).map(|_| ())
                } else {
                    decode::<Job>(cf, k, v).map(|_| ())
                };
                if let Err(e) = decoded {
                    c.problem(cf, k, format!("value does not decode: {}", reason(&e)));
                }
                match job {
                    Some(job) if !c.exists(Cf::Jobs, job.as_bytes())? => {
                        c.problem(cf, k, format!("belongs to missing job {job}"))
                    }
                    Some(_) => {}
                    None => c.problem(cf, k, "key is not job id / number"),
                }
                Ok(())
            })?;
        }
        // The retained table: each entry names the archive file of a purged job.
        self.each::<String>(Cf::PurgedJobs, |c, k, file| {
            if file.is_empty() {
                c.problem(Cf::PurgedJobs, k, "names no archive file");
            }
            Ok(())
        })?;
        self.each::<Evaluation>(Cf::Evaluations, |c, k, e| {
            if !c.exists(Cf::Jobs, e.job_id.as_bytes())? {
                c.problem(Cf::Evaluations, k, format!("belongs to missing job {}", e.job_id));
            }
            Ok(())
        })?;
        self.each::<Execution>(Cf::Executions, |c, k, e| {
            if !c.exists(Cf::IdxExecutionsByJobId, &layout::execution_by_job(&e.job_id, &e.id))? {
                c.problem(Cf::Executions, k, format!("missing from idx_executions_by_job_id under job {}", e.job_id));
            }
            if let Some(node) = &e.node_id {
                if !c.exists(Cf::IdxExecutionsByNode, &layout::execution_by_node(node, &e.id))? {
                    c.problem(Cf::Executions, k, format!("missing from idx_executions_by_node under node {node}"));
                }
            }
            if !c.exists(Cf::Jobs, e.job_id.as_bytes())? {
                c.problem(Cf::Executions, k, format!("belongs to missing job {}", e.job_id));
            }
            Ok(())
        })?;
        for (index, records) in [
            (Cf::IdxExecutionsByJobId, Cf::Executions),
            (Cf::IdxExecutionsByNode, Cf::Executions),
            (Cf::IdxEvaluationsByJob, Cf::Evaluations),
        ] {
            let last = if index == Cf::IdxEvaluationsByJob { "evaluation_id" } else { "execution_id" };
            self.each_key(index, |c, k, _| {
                match layout::decode(index, k).ok().and_then(|d| d.str(last)) {
                    Some(id) if !c.exists(records, id.as_bytes())? => {
                        c.problem(index, k, format!("points at missing {records} {id}"))
                    }
                    Some(_) => {}
                    None => c.problem(index, k, "key is not owner id / record id"),
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    fn event_log(&mut self) -> Result<u64> {
        let head = match self.get::<u64>(Cf::Meta, meta::LOG_HEAD)? {
            None => 0,
            Some(Ok(h)) => h,
            Some(Err(e)) => {
                self.problem(Cf::Meta, meta::LOG_HEAD, format!("value does not decode: {}", reason(&e)));
                return Ok(0);
            }
        };
        let trimmed = match self.get::<u64>(Cf::Meta, meta::LOG_TRIMMED)? {
            Some(Ok(t)) => t,
            _ => 0,
        };
        let mut expected = trimmed + 1;
        let mut last = trimmed;
        self.each_key(Cf::Events, |c, k, v| {
            let Ok(bytes) = <[u8; 8]>::try_from(k) else {
                c.problem(Cf::Events, k, "key is not an 8-byte sequence number");
                return Ok(());
            };
            let seq = u64::from_be_bytes(bytes);
            if seq < expected {
                c.problem(Cf::Events, k, format!("entry {seq} is at or below the trimmed point {trimmed}"));
            } else if seq > expected {
                c.problem(Cf::Events, k, format!("gap: entries {expected}..{} are missing", seq - 1));
            }
            match decode::<LogEntry>(Cf::Events, k, v) {
                Ok(entry) if entry.seq != seq => c.problem(Cf::Events, k, format!("entry says seq {}", entry.seq)),
                Ok(_) => {}
                Err(e) => c.problem(Cf::Events, k, format!("value does not decode: {}", reason(&e))),
            }
            expected = seq + 1;
            last = seq;
            Ok(())
        })?;
        if last != head {
            self.problem(Cf::Meta, meta::LOG_HEAD, format!("log_head is {head} but the newest entry is {last}"));
        }
        self.each::<u64>(Cf::Checkpoints, |c, k, seq| {
            if seq > head {
                c.problem(Cf::Checkpoints, k, format!("checkpoint {seq} is beyond the head {head}"));
            }
            Ok(())
        })?;
        Ok(head)
    }
}

fn reason(e: &StoreError) -> String {
    match e {
        StoreError::Corrupt { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

/// A failed read of the check: corruption RocksDB itself reports (a block checksum
/// mismatch, a truncated file) is `Corrupt`, naming the family and the key at or after
/// which it was found, so the check reports it as a problem.
fn read_error(cf: Cf, key: &[u8], e: rocksdb::Error) -> StoreError {
    if e.kind() == rocksdb::ErrorKind::Corruption {
        StoreError::Corrupt {
            cf: cf.name().to_owned(),
            key: crate::readable::show(cf, key),
            reason: format!("RocksDB reports corruption: {e}"),
        }
    } else {
        StoreError::backend("check", e)
    }
}

/// Checks an open store. Each part (the records with their indexes, the event log)
/// runs to its end unless a read finds corruption, which becomes a problem of the
/// report and ends that part; the next part still runs.
pub(crate) fn check(engine: &Engine) -> Result<CheckReport> {
    let db = engine.db()?;
    let snapshot = (!engine.is_read_only()).then(|| db.snapshot());
    let mut c = Checker { engine, db: &db, snapshot, report: CheckReport::default() };
    let records = match engine.kind {
        StoreKind::Compute => c.executions(),
        StoreKind::Requester => c.jobs(),
    };
    c.unless_corrupt(records)?;
    let log = c.event_log().map(|_| ());
    c.unless_corrupt(log)?;
    Ok(c.report)
}

impl Checker<'_> {
    /// A part's outcome: corruption becomes a problem; other errors end the check.
    fn unless_corrupt(&mut self, outcome: Result<()>) -> Result<()> {
        match outcome {
            Err(StoreError::Corrupt { cf, key, reason }) => {
                self.report.problem(cf, key, format!("{reason} (the rest of this part was not checked)"));
                Ok(())
            }
            other => other,
        }
    }
}
