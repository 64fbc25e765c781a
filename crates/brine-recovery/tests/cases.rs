//! Data-driven recovery cases: each case in `tests/cases/*.txt` gives a policy, the
//! stored executions, and either the expected end state and report or the expected
//! policy error. Every case runs on both backends, as a dry run first (which must
//! predict the report and change nothing), then for real, then again (which must change
//! nothing).
//!
//! Case format (`### name` starts a case; `== section` starts a section):
//!
//! ```text
//! ### fail-live marks live batch executions failed
//! == policy            TOML or JSON policy text (see brine_recovery::Policy::from_text)
//! preset = "fail-live"
//! == executions        id  job-type  state  age (humantime)
//! e-1 batch Running 2h
//! == expect            id  end state [message] | id gone
//! e-1 Failed "node restarted"
//! == report            before/after State=N…; action TYPE STATE NAME examined changed
//! before Running=1
//! after Failed=1
//! action batch Running mark-failed 1 1
//! == error             the policy error, as displayed
//! policy line 3: unknown execution state "Runing" …
//! ```

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use brine_recovery::{recover, Policy, RecoveryOptions, Report};
use brine_store::model::{ExecutionId, ExecutionState, JobType};
use brine_store::ManualClock;
use support::{end_state, populate, Store, BACKENDS};

#[derive(Debug, Default)]
struct Case {
    file: String,
    name: String,
    sections: BTreeMap<String, Vec<String>>,
}

impl Case {
    fn lines(&self, section: &str) -> &[String] {
        self.sections.get(section).map_or(&[], Vec::as_slice)
    }

    fn fail(&self, what: impl std::fmt::Display) -> ! {
        panic!("{} / {}: {what}", self.file, self.name)
    }
}

fn load_cases() -> Vec<Case> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let mut cases = Vec::new();
    for path in files {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut section = String::new();
        for line in text.lines() {
            if let Some(name) = line.strip_prefix("### ") {
                cases.push(Case { file: file.clone(), name: name.trim().to_owned(), ..Case::default() });
                section.clear();
            } else if let Some(name) = line.strip_prefix("== ") {
                section = name.trim().to_owned();
            } else if let Some(case) = cases.last_mut() {
                if !section.is_empty() && (section == "policy" || !(line.trim().is_empty() || line.starts_with('#'))) {
                    case.sections.entry(section.clone()).or_default().push(line.to_owned());
                }
            }
        }
    }
    assert!(cases.len() >= 20, "expected the case files to hold at least 20 cases, found {}", cases.len());
    cases
}

fn executions(case: &Case) -> Vec<(String, JobType, ExecutionState, Duration)> {
    case.lines("executions")
        .iter()
        .map(|line| {
            let parts: Vec<&str> = line.split_whitespace().collect();
            let [id, job_type, state, age] = parts.as_slice() else {
                case.fail(format!("bad execution line {line:?}"))
            };
            (
                (*id).to_owned(),
                job_type.parse().unwrap_or_else(|e| case.fail(e)),
                state.parse().unwrap_or_else(|e| case.fail(e)),
                humantime::parse_duration(age).unwrap_or_else(|e| case.fail(e)),
            )
        })
        .collect()
}

/// `State=N State=N` into counts.
fn counts(case: &Case, words: &[&str]) -> [u64; 9] {
    let mut out = [0; 9];
    for w in words {
        let (state, n) = w.split_once('=').unwrap_or_else(|| case.fail(format!("bad count {w:?}")));
        let state: ExecutionState = state.parse().unwrap_or_else(|e| case.fail(e));
        out[usize::from(state.code())] = n.parse().unwrap_or_else(|e| case.fail(e));
    }
    out
}

fn check_report(case: &Case, report: &Report) {
    let mut actions = Vec::new();
    for line in case.lines("report") {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["before", rest @ ..] => assert_eq!(report.before.0, counts(case, rest), "{}: before", case.name),
            ["after", rest @ ..] => assert_eq!(report.after.0, counts(case, rest), "{}: after", case.name),
            ["action", t, s, name, examined, changed] => actions.push(format!("{t} {s} {name} {examined} {changed}")),
            ["actions", "none"] => {}
            _ => case.fail(format!("bad report line {line:?}")),
        }
    }
    let got: Vec<String> = report
        .actions
        .iter()
        .map(|a| {
            let name = a.action.split_whitespace().next().unwrap_or_default();
            format!("{} {} {name} {} {}", a.job_type, a.state, a.examined, a.changed)
        })
        .collect();
    assert_eq!(got, actions, "{} / {}: actions\n{report}", case.file, case.name);
}

async fn run_case(case: &Case, backend: support::Backend) {
    let policy_text = case.lines("policy").join("\n");
    let policy = Policy::from_text(&policy_text);
    if !case.lines("error").is_empty() {
        let expected = case.lines("error").join("\n");
        let err = policy.map(|p| p.to_string()).expect_err(&format!("{}: the policy should not load", case.name));
        assert_eq!(err.to_string(), expected, "{} / {}", case.file, case.name);
        return;
    }
    let policy = policy.unwrap_or_else(|e| case.fail(e));
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::default());
    let store = Store::open(backend, dir.path(), Arc::clone(&clock)).await;
    let s = store.dyn_store();
    populate(s, &clock, &executions(case)).await;
    let options = RecoveryOptions { clock: clock.clone(), batch_size: 2, ..RecoveryOptions::default() };

    // A dry run predicts the report and changes nothing.
    let stored = end_state(s).await;
    let head = s.event_log().head().await.unwrap();
    let dry = recover(s, &policy, &RecoveryOptions { dry_run: true, ..options.clone() }).await.unwrap();
    assert_eq!(end_state(s).await, stored, "{}: a dry run changed the store", case.name);
    assert_eq!(s.event_log().head().await.unwrap(), head, "{}: a dry run wrote to the event log", case.name);

    let report = recover(s, &policy, &options).await.unwrap();
    check_report(case, &report);
    assert_eq!(
        (dry.before, dry.after, dry.changed()),
        (report.before, report.after, report.changed()),
        "{}",
        case.name
    );
    // Every change wrote one event-log entry.
    assert_eq!(s.event_log().head().await.unwrap(), head + report.changed(), "{}: event-log entries", case.name);

    let end = end_state(s).await;
    for line in case.lines("expect") {
        let (id, rest) = line.split_once(' ').unwrap_or_else(|| case.fail(format!("bad expect line {line:?}")));
        let found = end.iter().find(|(e, _, _)| e == id);
        let rest = rest.trim();
        if rest == "gone" {
            assert!(found.is_none(), "{}: {id} should be deleted", case.name);
            let err = s.get_execution(&ExecutionId::new(id).unwrap()).await.unwrap_err();
            assert!(err.is_not_found(), "{err}");
            continue;
        }
        let (state, message) = rest.split_once(' ').map_or((rest, None), |(s, m)| (s, Some(m.trim_matches('"'))));
        let state: ExecutionState = state.parse().unwrap_or_else(|e| case.fail(e));
        let Some((_, got, got_message)) = found else { case.fail(format!("{id} is missing")) };
        assert_eq!(*got, state, "{}: state of {id}", case.name);
        if let Some(m) = message {
            assert_eq!(got_message, m, "{}: message of {id}", case.name);
        }
    }
    // Changed executions carry a recovery history event.
    for (id, _, message) in &end {
        if message != "stored before the restart" {
            let events = s.get_execution_events(&ExecutionId::new(id.as_str()).unwrap()).await.unwrap();
            assert!(
                events.iter().any(|e| e.topic == brine_recovery::TOPIC),
                "{}: {id} has no recovery event",
                case.name
            );
        }
    }

    // A second run changes nothing.
    let again = recover(s, &policy, &options).await.unwrap();
    assert_eq!(again.changed(), 0, "{}: the second run changed something\n{again}", case.name);
    assert_eq!(end_state(s).await, end, "{}", case.name);
    assert!(store.check_problems().await.is_empty(), "{}: {:?}", case.name, store.check_problems().await);
    s.close().await.unwrap();
}

#[tokio::test]
async fn every_case_on_every_backend() {
    let cases = load_cases();
    for backend in BACKENDS {
        for case in &cases {
            run_case(case, backend).await;
        }
    }
}

#[test]
fn every_action_and_preset_has_a_case() {
    let cases = load_cases();
    let policies: String = cases.iter().flat_map(|c| c.lines("policy").iter().cloned()).collect::<Vec<_>>().join("\n");
    for needle in ["no-action", "mark-failed", "requeue", "delete-older-than", "fail-older-than"] {
        assert!(policies.contains(&format!("action = \"{needle}\"")), "no case uses {needle}");
    }
    for preset in brine_recovery::PRESETS {
        assert!(policies.contains(&format!("preset = \"{preset}\"")), "no case uses preset {preset}");
    }
    for problem in [
        "unknown execution state",
        "unknown job type",
        "unknown action",
        "bad age",
        "needs an age",
        "does not apply to",
        "unknown preset",
        "unknown field",
    ] {
        assert!(
            cases.iter().any(|c| c.lines("error").iter().any(|l| l.contains(problem))),
            "no case expects the error {problem:?}"
        );
    }
}
