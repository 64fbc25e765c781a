//! The policy table: what recovery does to the executions of each (job type, state).
//!
//! A table is built in code ([`Policy::seed`], [`Policy::set`]), taken from a preset
//! ([`Policy::preset`]) or loaded from a file in TOML ([`Policy::from_toml`]) or JSON
//! ([`Policy::from_json`]); [`Policy::from_text`], which `brine recover --policy` uses,
//! reads JSON when the first character other than whitespace is `{` (a TOML document
//! cannot start with one) and TOML otherwise, whatever the file is called:
//!
//! ```toml
//! # Start from a preset (optional; "seed" when absent).
//! preset = "seed"
//!
//! # Rules apply in order; a later rule overrides an earlier one for the same cells.
//! [[rule]]
//! job_type = "batch"        # batch | ops | service | daemon | *
//! state = "live"            # a state name (Running, ExecutionStateRunning, …) | live | terminal | *
//! action = "mark-failed"    # no-action | mark-failed | requeue | delete-older-than | fail-older-than
//! message = "node restarted"
//!
//! [[rule]]
//! job_type = "*"
//! state = "terminal"
//! action = "delete-older-than"
//! age = "30d"               # humantime: 90s, 15m, 12h, 30d, 2w, "1d 12h"
//! ```
//!
//! The same table in JSON has the same fields, with `rule` a list of objects:
//!
//! ```json
//! {
//!   "preset": "seed",
//!   "rule": [
//!     {"job_type": "batch", "state": "live", "action": "mark-failed", "message": "node restarted"},
//!     {"job_type": "*", "state": "terminal", "action": "delete-older-than", "age": "30d"}
//!   ]
//! }
//! ```
//!
//! In either format, errors name the 1-based line: a syntax error, a missing, unknown
//! or mistyped field, and what validation finds. Validation names the line and the bad
//! value: an unknown state, job type, action or preset, a bad or zero age, a missing
//! age, a field the action does not take, an action that makes no sense for its cell
//! (changing a terminal execution, requeueing a batch or ops execution, requeueing an
//! execution that has not started), and a table that would mark failed in `Created`
//! the executions it requeues (not idempotent).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use brine_store::model::{ExecutionState, JobType};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use toml::Spanned;

use crate::error::{PolicyError, Problem};

/// The message [`Policy::fail_live`] marks executions failed with.
pub const NODE_RESTARTED: &str = "node restarted";

/// What recovery does to one execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// Leaves the execution as it is.
    NoAction,
    /// Moves the execution to `Failed` with this message.
    MarkFailed {
        /// The compute state's message.
        message: String,
    },
    /// Moves the execution back to `Created` with desired state `Running`, so the node
    /// runs it again (service and daemon jobs).
    Requeue,
    /// Deletes the execution (with its indexes and history) if its last change is at
    /// least this old.
    DeleteOlderThan {
        /// The minimum age, since the last modification.
        #[serde(with = "humantime_serde_compat")]
        age: Duration,
    },
    /// Moves the execution to `Failed` if its last change is at least this old.
    FailOlderThan {
        /// The minimum age, since the last modification.
        #[serde(with = "humantime_serde_compat")]
        age: Duration,
    },
}

/// Ages as humantime strings in serde output (`"30days"`).
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(age: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*age).to_string())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

impl Action {
    /// The action's name in policy files.
    pub fn name(&self) -> &'static str {
        match self {
            Action::NoAction => "no-action",
            Action::MarkFailed { .. } => "mark-failed",
            Action::Requeue => "requeue",
            Action::DeleteOlderThan { .. } => "delete-older-than",
            Action::FailOlderThan { .. } => "fail-older-than",
        }
    }

    /// Whether the action can change an execution in `state` of a job of `job_type`;
    /// the reason if it cannot.
    pub fn check(&self, job_type: JobType, state: ExecutionState) -> Result<(), &'static str> {
        match self {
            Action::NoAction | Action::DeleteOlderThan { .. } => Ok(()),
            Action::MarkFailed { .. } | Action::FailOlderThan { .. } if state.is_terminal() => {
                Err("a terminal execution cannot change state")
            }
            Action::MarkFailed { .. } | Action::FailOlderThan { .. } => Ok(()),
            Action::Requeue if state.is_terminal() => Err("a terminal execution cannot change state"),
            Action::Requeue if state == ExecutionState::Created => Err("a Created execution has not started yet"),
            Action::Requeue if matches!(job_type, JobType::Batch | JobType::Ops) => {
                Err("only service and daemon executions are requeued")
            }
            Action::Requeue => Ok(()),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::NoAction | Action::Requeue => f.write_str(self.name()),
            Action::MarkFailed { message } => write!(f, "mark-failed {message:?}"),
            Action::DeleteOlderThan { age } | Action::FailOlderThan { age } => {
                write!(f, "{} {}", self.name(), humantime::format_duration(*age))
            }
        }
    }
}

/// The table of actions per (job type, execution state), with the name it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    name: String,
    table: [[Action; 9]; 4],
}

/// The presets, by name.
pub const PRESETS: [&str; 2] = ["seed", "fail-live"];

impl Policy {
    /// Bacalhau's table: no action for every state of every job type (the default).
    pub fn seed() -> Policy {
        Policy { name: "seed".into(), table: std::array::from_fn(|_| std::array::from_fn(|_| Action::NoAction)) }
    }

    /// Live batch and ops executions are marked failed ("node restarted"); live service
    /// and daemon executions are requeued; nothing else changes.
    pub fn fail_live() -> Policy {
        let mut p = Policy::seed();
        p.name = "fail-live".into();
        for job_type in JobType::ALL {
            for state in ExecutionState::LIVE {
                p.table[usize::from(job_type.code())][usize::from(state.code())] = match job_type {
                    JobType::Batch | JobType::Ops => Action::MarkFailed { message: NODE_RESTARTED.into() },
                    JobType::Service | JobType::Daemon => Action::Requeue,
                };
            }
        }
        p
    }

    /// The preset called `name` (one of [`PRESETS`]).
    pub fn preset(name: &str) -> Result<Policy, PolicyError> {
        match name {
            "seed" => Ok(Policy::seed()),
            "fail-live" => Ok(Policy::fail_live()),
            other => Err(PolicyError::new(None, Problem::UnknownPreset { value: other.into() })),
        }
    }

    /// The table's name: a preset's, `custom`, or what [`Policy::named`] set.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Renames the table (a file's path, say).
    pub fn named(mut self, name: impl Into<String>) -> Policy {
        self.name = name.into();
        self
    }

    /// The action for executions of `job_type` in `state`.
    pub fn action(&self, job_type: JobType, state: ExecutionState) -> &Action {
        &self.table[usize::from(job_type.code())][usize::from(state.code())]
    }

    /// Whether every job type has [`Action::NoAction`] in `state`, so recovery need not
    /// read its executions.
    pub fn leaves_alone(&self, state: ExecutionState) -> bool {
        self.table.iter().all(|row| row[usize::from(state.code())] == Action::NoAction)
    }

    /// A job type whose requeued executions (sent back to `Created`) this table would
    /// then mark failed there on the next run: a table recovery could not apply
    /// idempotently.
    fn undoes_requeue(&self) -> Option<JobType> {
        JobType::ALL.into_iter().find(|&t| {
            let requeues = ExecutionState::ALL.iter().any(|&s| *self.action(t, s) == Action::Requeue);
            requeues && matches!(self.action(t, ExecutionState::Created), Action::MarkFailed { .. })
        })
    }

    fn check_requeue(&self, line: Option<usize>) -> Result<(), PolicyError> {
        match self.undoes_requeue() {
            Some(job_type) => Err(PolicyError::new(line, Problem::UndoesRequeue { job_type })),
            None => Ok(()),
        }
    }

    /// Sets the action of one cell, after checking it makes sense there.
    pub fn set(mut self, job_type: JobType, state: ExecutionState, action: Action) -> Result<Policy, PolicyError> {
        check_action(&action, job_type, state, None)?;
        if !self.name.starts_with("custom") {
            self.name = format!("custom (from {})", self.name);
        }
        self.table[usize::from(job_type.code())][usize::from(state.code())] = action;
        self.check_requeue(None)?;
        Ok(self)
    }

    /// Parses and validates a policy file's text: JSON ([`Policy::from_json`]) when its
    /// first character other than whitespace is `{`, TOML ([`Policy::from_toml`])
    /// otherwise.
    pub fn from_text(text: &str) -> Result<Policy, PolicyError> {
        if text.trim_start().starts_with('{') {
            Policy::from_json(text)
        } else {
            Policy::from_toml(text)
        }
    }

    /// Parses and validates a TOML policy (see the module documentation).
    pub fn from_toml(text: &str) -> Result<Policy, PolicyError> {
        let raw: RawPolicy<Spanned<String>> = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            PolicyError::new(line, Problem::Syntax { message: e.message().trim().to_owned() })
        })?;
        Policy::from_raw(raw.located(|s| {
            let line = line_of(text, s.span().start);
            Ok(Located { value: s.into_inner(), line })
        })?)
    }

    /// Parses and validates a JSON policy: the TOML policy's fields in one object, with
    /// `rule` a list of objects (see the module documentation).
    pub fn from_json(text: &str) -> Result<Policy, PolicyError> {
        let start = text.trim_start();
        if !start.starts_with('{') {
            let line = line_of(text, text.len() - start.len());
            let found = start.chars().next().map_or_else(|| "the end".to_owned(), |c| format!("{c:?}"));
            let message = format!("a JSON policy is one object: expected '{{', found {found}");
            return Err(PolicyError::new(Some(line), Problem::Syntax { message }));
        }
        let raw: RawPolicy<&RawValue> = serde_json::from_str(text).map_err(|e| json_error(&e, None))?;
        Policy::from_raw(raw.located(|value| {
            // A borrowed raw value is a slice of `text`: its address gives its line.
            let offset = (value.get().as_ptr() as usize).saturating_sub(text.as_ptr() as usize);
            let line = line_of(text, offset);
            let value = serde_json::from_str(value.get()).map_err(|e| json_error(&e, Some(line)))?;
            Ok(Located { value, line })
        })?)
    }

    fn from_raw(raw: RawPolicy<Located>) -> Result<Policy, PolicyError> {
        let mut policy = match &raw.preset {
            Some(p) => Policy::preset(&p.value).map_err(|e| e.at(p.line))?,
            None => Policy::seed(),
        };
        if !raw.rule.is_empty() {
            policy.name = format!("custom (from {})", policy.name);
        }
        for rule in &raw.rule {
            rule.apply(&mut policy)?;
            policy.check_requeue(Some(rule.action.line))?;
        }
        Ok(policy)
    }

    /// Every cell whose action is not [`Action::NoAction`], for reports.
    pub fn rules(&self) -> impl Iterator<Item = (JobType, ExecutionState, &Action)> {
        JobType::ALL.into_iter().flat_map(move |t| {
            ExecutionState::ALL
                .into_iter()
                .map(move |s| (t, s, self.action(t, s)))
                .filter(|(_, _, a)| **a != Action::NoAction)
        })
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "policy {}:", self.name)?;
        let mut any = false;
        for (t, s, a) in self.rules() {
            any = true;
            write!(f, "\n  {t:<8} {s:<20} {a}")?;
        }
        if !any {
            write!(f, " no action for every state")?;
        }
        Ok(())
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).unwrap_or(text).matches('\n').count() + 1
}

fn check_action(
    action: &Action,
    job_type: JobType,
    state: ExecutionState,
    line: Option<usize>,
) -> Result<(), PolicyError> {
    action.check(job_type, state).map_err(|reason| {
        PolicyError::new(line, Problem::NotApplicable { action: action.name(), job_type, state, reason })
    })
}

/// A serde_json error as a policy error: its message without the position serde_json
/// appends, on its line (or on `line`, for an error in a value parsed on its own).
fn json_error(e: &serde_json::Error, line: Option<usize>) -> PolicyError {
    let message = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    let message = message.strip_suffix(&position).unwrap_or(&message).trim().to_owned();
    let line = line.or(Some(e.line()).filter(|&l| l > 0));
    PolicyError::new(line, Problem::Syntax { message })
}

/// A policy file as written, each value an `F`: a spanned TOML string, a raw JSON
/// value, or (to validate) a [`Located`] string.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy<F> {
    preset: Option<F>,
    #[serde(default = "Vec::new")]
    rule: Vec<RawRule<F>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule<F> {
    job_type: F,
    state: F,
    action: F,
    message: Option<F>,
    age: Option<F>,
}

/// A string of a policy file and the 1-based line it is on.
struct Located {
    value: String,
    line: usize,
}

impl<F> RawPolicy<F> {
    /// The same policy with every value turned into a [`Located`] string by `locate`.
    fn located(self, locate: impl Fn(F) -> Result<Located, PolicyError>) -> Result<RawPolicy<Located>, PolicyError> {
        let optional = |v: Option<F>| v.map(&locate).transpose();
        let rule = self
            .rule
            .into_iter()
            .map(|r| {
                Ok(RawRule {
                    job_type: locate(r.job_type)?,
                    state: locate(r.state)?,
                    action: locate(r.action)?,
                    message: optional(r.message)?,
                    age: optional(r.age)?,
                })
            })
            .collect::<Result<_, PolicyError>>()?;
        Ok(RawPolicy { preset: optional(self.preset)?, rule })
    }
}

impl RawRule<Located> {
    fn apply(&self, policy: &mut Policy) -> Result<(), PolicyError> {
        let line = |s: &Located| s.line;
        let job_types: Vec<JobType> = match self.job_type.value.as_str() {
            "*" => JobType::ALL.to_vec(),
            one => vec![JobType::from_str(one).map_err(|_| {
                PolicyError::new(Some(line(&self.job_type)), Problem::UnknownJobType { value: one.into() })
            })?],
        };
        let states: Vec<ExecutionState> = match self.state.value.as_str() {
            "*" => ExecutionState::ALL.to_vec(),
            "live" => ExecutionState::LIVE.to_vec(),
            "terminal" => ExecutionState::ALL.into_iter().filter(|s| s.is_terminal()).collect(),
            one => vec![ExecutionState::from_str(one)
                .map_err(|_| PolicyError::new(Some(line(&self.state)), Problem::UnknownState { value: one.into() }))?],
        };
        let age = || -> Result<Duration, PolicyError> {
            let Some(age) = &self.age else {
                return Err(PolicyError::new(
                    Some(line(&self.action)),
                    Problem::MissingAge { action: self.action.value.clone() },
                ));
            };
            let bad = |reason: String| {
                PolicyError::new(Some(line(age)), Problem::BadDuration { value: age.value.clone(), reason })
            };
            let parsed = humantime::parse_duration(&age.value).map_err(|e| bad(e.to_string()))?;
            if parsed.is_zero() {
                return Err(bad("an age must be more than zero".into()));
            }
            Ok(parsed)
        };
        let action = match self.action.value.as_str() {
            "no-action" => Action::NoAction,
            "mark-failed" => Action::MarkFailed {
                message: self.message.as_ref().map_or_else(|| NODE_RESTARTED.to_owned(), |m| m.value.clone()),
            },
            "requeue" => Action::Requeue,
            "delete-older-than" => Action::DeleteOlderThan { age: age()? },
            "fail-older-than" => Action::FailOlderThan { age: age()? },
            other => {
                return Err(PolicyError::new(Some(line(&self.action)), Problem::UnknownAction { value: other.into() }))
            }
        };
        if let (Some(age), false) =
            (&self.age, matches!(action, Action::DeleteOlderThan { .. } | Action::FailOlderThan { .. }))
        {
            return Err(PolicyError::new(
                Some(line(age)),
                Problem::UnusedField { field: "age", action: action.name() },
            ));
        }
        if let (Some(message), false) = (&self.message, matches!(action, Action::MarkFailed { .. })) {
            return Err(PolicyError::new(
                Some(line(message)),
                Problem::UnusedField { field: "message", action: action.name() },
            ));
        }
        for &job_type in &job_types {
            for &state in &states {
                check_action(&action, job_type, state, Some(line(&self.action)))?;
            }
        }
        for &job_type in &job_types {
            for &state in &states {
                policy.table[usize::from(job_type.code())][usize::from(state.code())] = action.clone();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOML: &str = r#"
preset = "fail-live"

[[rule]]
job_type = "*"
state = "terminal"
action = "delete-older-than"
age = "30d"

[[rule]]
job_type = "ops"
state = "Running"
action = "mark-failed"
message = "lost in a restart"

[[rule]]
job_type = "service"
state = "BidAccepted"
action = "no-action"
"#;

    const JSON: &str = r#"
{
  "preset": "fail-live",
  "rule": [
    {"job_type": "*", "state": "terminal", "action": "delete-older-than", "age": "30d"},
    {"job_type": "ops", "state": "Running", "action": "mark-failed", "message": "lost in a restart"},
    {"job_type": "service", "state": "BidAccepted", "action": "no-action"}
  ]
}
"#;

    #[test]
    fn a_json_policy_loads_to_the_same_table_as_its_toml() {
        let toml = Policy::from_toml(TOML).unwrap();
        assert_eq!(Policy::from_json(JSON).unwrap(), toml);
        assert_eq!(Policy::from_text(JSON).unwrap(), toml, "JSON is recognised by its opening brace");
        assert_eq!(Policy::from_text(TOML).unwrap(), toml);
        assert_eq!(toml.action(JobType::Ops, ExecutionState::Running).to_string(), "mark-failed \"lost in a restart\"");
        assert_eq!(Policy::from_text(" \n{}").unwrap(), Policy::seed());
        assert_eq!(Policy::from_text("").unwrap(), Policy::seed());
    }

    #[test]
    fn json_errors_name_the_line() {
        let cases = [
            // A syntax error: serde_json's line.
            ("{\n  \"preset\": \"seed\",\n  \"rule\": [}\n", "policy line 3: expected value"),
            ("{\"preset\": \"seed\"", "policy line 1: EOF while parsing an object"),
            // Validation: the line of the bad value.
            (
                "{\"rule\": [\n {\"job_type\": \"batch\",\n  \"state\": \"Running\",\n  \"action\": \"restart\"}]}",
                "policy line 4: unknown action \"restart\" (expected no-action, mark-failed, requeue, \
                 delete-older-than or fail-older-than)",
            ),
            ("{\n\"preset\":\n  \"all\"}", "policy line 3: unknown preset \"all\" (expected one of: seed, fail-live)"),
            // A value of the wrong type: its own line, not the line inside the value.
            ("{\n\n  \"preset\": [\n\"seed\"]}", "policy line 3: invalid type: sequence, expected a string"),
            ("{\"rule\": {}}", "policy line 1: invalid type: map, expected a sequence"),
            // The whole policy is one object.
            ("\n [\"seed\"]", "policy line 2: a JSON policy is one object: expected '{', found '['"),
            ("", "policy line 1: a JSON policy is one object: expected '{', found the end"),
        ];
        for (text, expected) in cases {
            let err = Policy::from_json(text).unwrap_err();
            assert_eq!(err.to_string(), expected, "{text:?}");
            assert!(err.line.is_some(), "{text:?}");
        }
    }
}
