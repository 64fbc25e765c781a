//! What a load accepts: records restored as a dump holds them (`brine import`), checked
//! here before any backend stores them, so every backend refuses the same input.
//!
//! A load keeps what a create would set (revisions, versions, times, sequence numbers),
//! so the rules are about consistency: every record valid, everything of a job naming
//! that job, versions and history in order, and the event log numbered without a gap.

use brine_model::{InvalidReason, Job, LogEntry, ValidationError};

use crate::{JobBundle, Result};

fn invalid(field: &'static str, value: &str, why: impl Into<String>) -> crate::StoreError {
    ValidationError::new(field, value, InvalidReason::Other(why.into())).into()
}

fn stored_numbers(job: &Job) -> Result<()> {
    if job.revision == 0 {
        return Err(invalid("revision", job.id.as_str(), "a stored job has revision 1 or more"));
    }
    if job.version == 0 {
        return Err(invalid("version", job.id.as_str(), "a stored job has version 1 or more"));
    }
    Ok(())
}

/// Checks an execution a load stores as it is: valid, with a revision a store could
/// have given it.
pub fn loaded_execution(execution: &brine_model::Execution) -> Result<()> {
    execution.validate()?;
    if execution.revision == 0 {
        return Err(invalid("revision", execution.id.as_str(), "a stored execution has revision 1 or more"));
    }
    Ok(())
}

/// Checks a batch of executions a load stores: each one (`loaded_execution`), and no id
/// twice (`AlreadyExists`), so a backend only has to find ids it stores already.
pub fn loaded_executions(batch: &[(brine_model::Execution, Vec<brine_model::Event>)]) -> Result<()> {
    let mut seen = std::collections::HashSet::with_capacity(batch.len());
    for (execution, _) in batch {
        loaded_execution(execution)?;
        if !seen.insert(&execution.id) {
            return Err(crate::StoreError::already_exists(crate::ObjectKind::Execution, &execution.id));
        }
    }
    Ok(())
}

/// Checks a job with everything of it before a load stores it: each record valid, each
/// naming the job, versions ascending and ending at the job's own, history ascending.
pub fn loaded_bundle(bundle: &JobBundle) -> Result<()> {
    let job = &bundle.job;
    job.validate()?;
    stored_numbers(job)?;
    let id = job.id.as_str();
    let mut last = 0;
    for version in &bundle.versions {
        version.validate()?;
        if version.id != job.id {
            return Err(invalid("versions", id, format!("holds a version of job {}", version.id)));
        }
        if version.version <= last {
            return Err(invalid("versions", id, format!("version {} follows version {last}", version.version)));
        }
        last = version.version;
    }
    if last != job.version {
        return Err(invalid("versions", id, format!("end at version {last}, the job is at version {}", job.version)));
    }
    let mut last = 0;
    for entry in &bundle.history {
        if entry.job_id != job.id {
            return Err(invalid("history", id, format!("holds an entry of job {}", entry.job_id)));
        }
        if entry.seq <= last {
            return Err(invalid("history", id, format!("entry {} follows entry {last}", entry.seq)));
        }
        last = entry.seq;
    }
    for evaluation in &bundle.evaluations {
        evaluation.validate()?;
        if evaluation.job_id != job.id {
            return Err(invalid(
                "evaluations",
                id,
                format!("evaluation {} is of job {}", evaluation.id, evaluation.job_id),
            ));
        }
    }
    for execution in &bundle.executions {
        loaded_execution(execution)?;
        if execution.job_id != job.id {
            return Err(invalid(
                "executions",
                id,
                format!("execution {} is of job {}", execution.id, execution.job_id),
            ));
        }
    }
    Ok(())
}

/// Checks a retained purge entry a load stores: the archive file it names.
pub fn loaded_purge_entry(id: &brine_model::JobId, archive: &str) -> Result<()> {
    if archive.is_empty() || archive.contains('\0') {
        return Err(invalid("archive", id.as_str(), "a purged job names the archive file it went to"));
    }
    Ok(())
}

/// Checks a batch of retained purge entries a load stores: each one
/// (`loaded_purge_entry`), and no id twice (`AlreadyPurged`, naming the archive the
/// batch gave it first), so a backend only has to find ids it stores already.
pub fn loaded_purge_entries(entries: &[(brine_model::JobId, String)]) -> Result<()> {
    let mut seen = std::collections::HashMap::with_capacity(entries.len());
    for (id, archive) in entries {
        loaded_purge_entry(id, archive)?;
        if let Some(first) = seen.insert(id, archive) {
            return Err(crate::StoreError::AlreadyPurged { id: id.to_string(), file: first.clone() });
        }
    }
    Ok(())
}

/// Where an event log stands: its head and the highest sequence number retention
/// deleted (it holds exactly `trimmed + 1 ..= head`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBounds {
    /// The newest sequence number.
    pub head: u64,
    /// The highest deleted one.
    pub trimmed: u64,
}

/// The bounds of a log at `now` after loading `entries` numbered from `after + 1`
/// (`EventLog::load`): a log that holds entries continues at its head; one that holds
/// none (new, or trimmed empty) may start higher, and counts as trimmed up to `after`.
pub fn log_load(now: LogBounds, after: u64, entries: &[LogEntry]) -> Result<LogBounds> {
    let holds = now.head > now.trimmed;
    if holds && after != now.head {
        return Err(invalid(
            "after",
            &after.to_string(),
            format!("the log holds entries up to {}: a load continues right after its head", now.head),
        ));
    }
    if after < now.head {
        return Err(invalid("after", &after.to_string(), format!("is below the log's head {}", now.head)));
    }
    for (i, entry) in entries.iter().enumerate() {
        let expected = after + 1 + i as u64;
        if entry.seq != expected {
            return Err(invalid(
                "seq",
                &entry.seq.to_string(),
                format!("the entry after {} must be {expected}", expected - 1),
            ));
        }
    }
    Ok(LogBounds { head: after + entries.len() as u64, trimmed: if holds { now.trimmed } else { after } })
}

#[cfg(test)]
mod tests {
    use brine_model::{LogObject, Operation, Timestamp};

    use super::*;

    fn entry(seq: u64) -> LogEntry {
        let object = LogObject::Custom { kind: "k".into(), data: String::new() };
        LogEntry {
            seq,
            operation: Operation::Create,
            object_type: object.object_type(),
            object,
            timestamp: Timestamp::from_nanos(1),
        }
    }

    #[test]
    fn a_batch_names_an_id_it_repeats() {
        let id = |s: &str| brine_model::JobId::new(s).unwrap();
        let twice = [(id("a"), "1.jsonl".to_owned()), (id("b"), "2.jsonl".into()), (id("b"), "3.jsonl".into())];
        let err = loaded_purge_entries(&twice).unwrap_err().to_string();
        assert!(err.starts_with("job b already purged, archived in 2.jsonl"), "{err}");
        let job = Job::new(id("j"), "n");
        let mut e = brine_model::Execution::new(brine_model::ExecutionId::new("x").unwrap(), &job);
        e.revision = 1;
        let err = loaded_executions(&[(e.clone(), vec![]), (e, vec![])]).unwrap_err();
        assert!(err.is_already_exists() && err.to_string().contains('x'), "{err}");
    }

    #[test]
    fn a_log_load_continues_at_the_head_or_starts_an_empty_log_anywhere_above() {
        let fresh = LogBounds { head: 0, trimmed: 0 };
        assert_eq!(log_load(fresh, 0, &[entry(1), entry(2)]).unwrap(), LogBounds { head: 2, trimmed: 0 });
        // A dump of a trimmed log starts above 1: the new log counts as trimmed below.
        assert_eq!(log_load(fresh, 40, &[entry(41)]).unwrap(), LogBounds { head: 41, trimmed: 40 });
        // A log trimmed empty keeps its head.
        assert_eq!(log_load(fresh, 9, &[]).unwrap(), LogBounds { head: 9, trimmed: 9 });
        let holding = LogBounds { head: 5, trimmed: 2 };
        assert_eq!(log_load(holding, 5, &[entry(6)]).unwrap(), LogBounds { head: 6, trimmed: 2 });
        let err = log_load(holding, 7, &[entry(8)]).unwrap_err().to_string();
        assert!(err.contains("continues right after its head"), "{err}");
        let err = log_load(fresh, 0, &[entry(1), entry(3)]).unwrap_err().to_string();
        assert!(err.contains("invalid seq \"3\"") && err.contains("must be 2"), "{err}");
        let err = log_load(LogBounds { head: 4, trimmed: 4 }, 3, &[]).unwrap_err().to_string();
        assert!(err.contains("below the log's head 4"), "{err}");
    }
}
