//! What a recovery run did: `Display` for people, serde for `--json`.

use std::collections::BTreeMap;
use std::fmt;

use brine_store::model::{ExecutionState, JobType};
use brine_store::RepairReport;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A count per execution state, serialized as a map from state name to count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateCounts(pub [u64; 9]);

impl StateCounts {
    /// The count of `state`.
    pub fn get(&self, state: ExecutionState) -> u64 {
        self.0[usize::from(state.code())]
    }

    pub(crate) fn slot(&mut self, state: ExecutionState) -> &mut u64 {
        &mut self.0[usize::from(state.code())]
    }

    /// The sum over every state.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

impl Serialize for StateCounts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(ExecutionState::ALL.iter().map(|st| (st.as_str(), self.get(*st))))
    }
}

impl<'de> Deserialize<'de> for StateCounts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, u64>::deserialize(d)?;
        let mut counts = StateCounts::default();
        for (name, n) in map {
            let state: ExecutionState = name.parse().map_err(serde::de::Error::custom)?;
            *counts.slot(state) = n;
        }
        Ok(counts)
    }
}

/// What one cell of the policy did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionTaken {
    /// The job type of the cell.
    pub job_type: JobType,
    /// The state of the cell.
    pub state: ExecutionState,
    /// The action, as written in policy files.
    pub action: String,
    /// Executions of the cell read.
    pub examined: u64,
    /// Executions changed (or, in a dry run, that would be).
    pub changed: u64,
}

/// Why the cleanup scan ran or did not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CleanupReason {
    /// The previous session ended without a clean close.
    UncleanShutdown,
    /// The options asked for it.
    Requested,
    /// The store was closed cleanly, so there was nothing to suspect.
    SkippedCleanShutdown,
    /// The options turned it off.
    SkippedByOptions,
}

impl fmt::Display for CleanupReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CleanupReason::UncleanShutdown => "the previous session did not close the store",
            CleanupReason::Requested => "requested",
            CleanupReason::SkippedCleanShutdown => "skipped: the store was closed cleanly",
            CleanupReason::SkippedByOptions => "skipped: turned off",
        })
    }
}

/// The report of one recovery run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The policy's name.
    pub policy: String,
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// Executions per state before the run (from the counters).
    pub before: StateCounts,
    /// Executions per state after the run (in a dry run: what they would be).
    pub after: StateCounts,
    /// Per (job type, state) cell with an action: what it did.
    pub actions: Vec<ActionTaken>,
    /// Executions that changed under recovery (another writer got there first) and were
    /// left alone.
    pub conflicts: u64,
    /// Why the cleanup scan ran or not.
    pub cleanup_reason: CleanupReason,
    /// What the cleanup found (and fixed unless a dry run); none when it did not run.
    pub cleanup: Option<RepairReport>,
    /// Whether the execution data was compacted.
    pub compacted: bool,
    /// Wall time of the run, in milliseconds.
    pub duration_ms: f64,
}

impl Report {
    /// Executions changed by the policy.
    pub fn changed(&self) -> u64 {
        self.actions.iter().map(|a| a.changed).sum()
    }

    /// Items the cleanup repaired.
    pub fn cleaned(&self) -> u64 {
        self.cleanup.as_ref().map_or(0, RepairReport::repaired)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let title = if self.dry_run { "recovery (dry run: nothing changed)" } else { "recovery" };
        writeln!(f, "{title} with policy {} in {:.1} ms", self.policy, self.duration_ms)?;
        writeln!(f, "  {:<20} {:>10} {:>10}", "state", "before", "after")?;
        for state in ExecutionState::ALL {
            let (b, a) = (self.before.get(state), self.after.get(state));
            if b != 0 || a != 0 {
                writeln!(f, "  {:<20} {b:>10} {a:>10}", state.as_str())?;
            }
        }
        writeln!(f, "  {:<20} {:>10} {:>10}", "total", self.before.total(), self.after.total())?;
        if self.actions.is_empty() {
            writeln!(f, "  actions: none (no action for any stored state)")?;
        } else {
            let verb = if self.dry_run { "would change" } else { "changed" };
            writeln!(f, "  actions:")?;
            for a in &self.actions {
                writeln!(
                    f,
                    "    {:<8} {:<20} {:<28} {} examined, {} {verb}",
                    a.job_type.as_str(),
                    a.state.as_str(),
                    a.action,
                    a.examined,
                    a.changed
                )?;
            }
        }
        if self.conflicts > 0 {
            writeln!(f, "  conflicts: {} (changed by another writer, left alone)", self.conflicts)?;
        }
        match &self.cleanup {
            Some(c) => writeln!(f, "  cleanup ({}): {c}", self.cleanup_reason)?,
            None => writeln!(f, "  cleanup: {}", self.cleanup_reason)?,
        }
        write!(f, "  compacted: {}", if self.compacted { "yes" } else { "no" })
    }
}
