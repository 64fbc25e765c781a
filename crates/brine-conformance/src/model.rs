//! Model-based test: random operation sequences against a backend and a `BTreeMap`
//! model, compared after every step (and across reopen, where the backend persists).

use std::collections::{BTreeMap, BTreeSet};

use brine_store::model::ExecutionState;
use brine_store::{ExecutionStore, Result as StoreResult, StoreError};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::fixtures::{eid, event, execution, jid, to_state, Env};
use crate::Factory;

const IDS: u8 = 6;
const JOBS: u8 = 3;
const NAMES: [&str; 3] = ["w0", "w1", ""];

/// How an update's revision condition is chosen (both model tests use it).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Rev {
    Any,
    Current,
    Stale,
}

impl Rev {
    /// The revision to expect of an object now at `current`: none, the current one, or
    /// one that is stale.
    pub(crate) fn expected(self, current: u64) -> Option<u64> {
        match self {
            Rev::Any => None,
            Rev::Current => Some(current),
            Rev::Stale => Some(current + 1),
        }
    }
}

/// One step of a generated sequence.
#[derive(Debug, Clone)]
enum Op {
    Create {
        id: u8,
        job: u8,
        events: u8,
    },
    Update {
        id: u8,
        to: ExecutionState,
        expect: Vec<ExecutionState>,
        unexpected: Vec<ExecutionState>,
        rev: Rev,
        events: u8,
    },
    AddEvents {
        id: u8,
        n: u8,
    },
    Delete {
        id: u8,
    },
    Checkpoint {
        name: usize,
        back: Option<u8>,
    },
    Append,
    Tx {
        ops: Vec<Op>,
        commit: bool,
    },
    Reopen,
}

/// What an operation ended with, as far as the model can say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    AlreadyExists,
    NotFound,
    InvalidState,
    InvalidRevision,
    AlreadyTerminal,
    Blank,
    BeyondHead,
}

fn outcome<T>(r: &StoreResult<T>) -> std::result::Result<Outcome, String> {
    Ok(match r {
        Ok(_) => Outcome::Ok,
        Err(StoreError::AlreadyExists { .. }) => Outcome::AlreadyExists,
        Err(StoreError::NotFound { .. }) => Outcome::NotFound,
        Err(StoreError::InvalidState { .. }) => Outcome::InvalidState,
        Err(StoreError::InvalidRevision { .. }) => Outcome::InvalidRevision,
        Err(StoreError::AlreadyTerminal { .. }) => Outcome::AlreadyTerminal,
        Err(StoreError::BlankCheckpointName) => Outcome::Blank,
        Err(StoreError::CheckpointBeyondHead { .. }) => Outcome::BeyondHead,
        Err(other) => return Err(format!("unexpected error: {other}")),
    })
}

#[derive(Debug, Clone)]
struct MExec {
    job: u8,
    state: ExecutionState,
    revision: u64,
    events: usize,
}

#[derive(Debug, Clone, Default)]
struct Model {
    execs: BTreeMap<u8, MExec>,
    head: u64,
    checkpoints: BTreeMap<String, u64>,
}

impl Model {
    /// Applies a store operation (not Reopen, not Tx) and says how it ends.
    fn apply(&mut self, op: &Op) -> Outcome {
        match op {
            Op::Create { id, job, events } => {
                if self.execs.contains_key(id) {
                    return Outcome::AlreadyExists;
                }
                self.execs.insert(
                    *id,
                    MExec { job: *job, state: ExecutionState::Created, revision: 1, events: usize::from(*events) },
                );
                self.head += 1;
                Outcome::Ok
            }
            Op::Update { id, to, expect, unexpected, rev, events } => {
                let Some(e) = self.execs.get_mut(id) else { return Outcome::NotFound };
                if !expect.is_empty() && !expect.contains(&e.state) {
                    return Outcome::InvalidState;
                }
                if unexpected.contains(&e.state) {
                    return Outcome::InvalidState;
                }
                if matches!(rev, Rev::Stale) {
                    return Outcome::InvalidRevision;
                }
                if e.state.is_terminal() {
                    return Outcome::AlreadyTerminal;
                }
                e.state = *to;
                e.revision += 1;
                e.events += usize::from(*events);
                self.head += 1;
                Outcome::Ok
            }
            Op::AddEvents { id, n } => match self.execs.get_mut(id) {
                Some(e) => {
                    e.events += usize::from(*n);
                    // Events on a terminal execution move its modify time: an update,
                    // logged (`rules::events_added`).
                    if e.state.is_terminal() {
                        self.head += 1;
                    }
                    Outcome::Ok
                }
                None => Outcome::NotFound,
            },
            Op::Delete { id } => {
                if self.execs.remove(id).is_none() {
                    return Outcome::NotFound;
                }
                self.head += 1;
                Outcome::Ok
            }
            Op::Checkpoint { name, back } => {
                let name = NAMES[*name];
                if name.is_empty() {
                    return Outcome::Blank;
                }
                let seq = self.checkpoint_seq(*back);
                if seq > self.head {
                    return Outcome::BeyondHead;
                }
                self.checkpoints.insert(name.to_owned(), seq);
                Outcome::Ok
            }
            Op::Append => {
                self.head += 1;
                Outcome::Ok
            }
            Op::Tx { .. } | Op::Reopen => unreachable!("handled by the driver"),
        }
    }

    fn checkpoint_seq(&self, back: Option<u8>) -> u64 {
        match back {
            Some(k) => self.head.saturating_sub(u64::from(k)),
            None => self.head + 1,
        }
    }
}

fn state() -> impl Strategy<Value = ExecutionState> {
    prop::sample::select(ExecutionState::ALL.to_vec())
}

fn simple_op() -> impl Strategy<Value = Op> {
    let rev = prop_oneof![Just(Rev::Any), Just(Rev::Current), Just(Rev::Stale)];
    prop_oneof![
        3 => (0..IDS, 0..JOBS, 0u8..3).prop_map(|(id, job, events)| Op::Create { id, job, events }),
        5 => (0..IDS, state(), prop::collection::vec(state(), 0..3), prop::collection::vec(state(), 0..2), rev, 0u8..3)
            .prop_map(|(id, to, expect, unexpected, rev, events)| Op::Update { id, to, expect, unexpected, rev, events }),
        1 => (0..IDS, 1u8..3).prop_map(|(id, n)| Op::AddEvents { id, n }),
        1 => (0..IDS).prop_map(|id| Op::Delete { id }),
        1 => (0..NAMES.len(), prop::option::weighted(0.8, 0u8..3)).prop_map(|(name, back)| Op::Checkpoint { name, back }),
        1 => Just(Op::Append),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => simple_op(),
        2 => (prop::collection::vec(simple_op().prop_filter("no checkpoints or appends in a tx", |o| {
            matches!(o, Op::Create { .. } | Op::Update { .. } | Op::AddEvents { .. } | Op::Delete { .. })
        }), 1..5), any::<bool>())
            .prop_map(|(ops, commit)| Op::Tx { ops, commit }),
        1 => Just(Op::Reopen),
    ]
}

fn xid(id: u8) -> String {
    format!("x{id}")
}

fn update_request(model: &Model, op: &Op) -> brine_store::UpdateExecutionRequest {
    let Op::Update { id, to, expect, unexpected, rev, events } = op else { unreachable!() };
    let current = model.execs.get(id).map_or(1, |e| e.revision);
    let mut req = to_state(&xid(*id), *to)
        .expect_states(expect.iter().copied())
        .unexpected_states(unexpected.iter().copied())
        .with_events((0..*events).map(|i| event(&format!("u{i}"))));
    if let Some(revision) = rev.expected(current) {
        req = req.expect_revision(revision);
    }
    req
}

async fn run_simple(store: &dyn ExecutionStore, model: &Model, op: &Op) -> std::result::Result<Outcome, String> {
    match op {
        Op::Create { id, job, events } => {
            let evs = (0..*events).map(|i| event(&format!("c{i}"))).collect();
            outcome(&store.create_execution(execution(&xid(*id), &format!("job{job}")), evs).await)
        }
        Op::Update { .. } => outcome(&store.update_execution_state(update_request(model, op)).await),
        Op::AddEvents { id, n } => {
            let evs = (0..*n).map(|i| event(&format!("a{i}"))).collect();
            outcome(&store.add_execution_event(&eid(&xid(*id)), evs).await)
        }
        Op::Delete { id } => outcome(&store.delete_execution(&eid(&xid(*id))).await),
        Op::Checkpoint { name, back } => outcome(&store.checkpoint(NAMES[*name], model.checkpoint_seq(*back)).await),
        Op::Append => outcome(&store.event_log().append("model", "step").await),
        Op::Tx { .. } | Op::Reopen => unreachable!(),
    }
}

async fn run_tx(
    store: &dyn ExecutionStore,
    model: &Model,
    ops: &[Op],
    commit: bool,
) -> std::result::Result<Model, String> {
    let mut tx = store.begin_tx().await.map_err(|e| e.to_string())?;
    let mut staged = model.clone();
    for op in ops {
        let expected = staged.clone().apply(op);
        let got = match op {
            Op::Create { id, job, events } => {
                let evs = (0..*events).map(|i| event(&format!("c{i}"))).collect();
                outcome(&tx.create_execution(execution(&xid(*id), &format!("job{job}")), evs).await)?
            }
            Op::Update { .. } => outcome(&tx.update_execution_state(update_request(&staged, op)).await)?,
            Op::AddEvents { id, n } => {
                let evs = (0..*n).map(|i| event(&format!("a{i}"))).collect();
                outcome(&tx.add_execution_event(&eid(&xid(*id)), evs).await)?
            }
            Op::Delete { id } => outcome(&tx.delete_execution(&eid(&xid(*id))).await)?,
            _ => unreachable!(),
        };
        if got != expected {
            return Err(format!("in a transaction, {op:?}: store says {got:?}, model says {expected:?}"));
        }
        if got != Outcome::Ok {
            return Ok(model.clone());
        }
        staged.apply(op);
    }
    if commit {
        tx.commit().await.map_err(|e| e.to_string())?;
        Ok(staged)
    } else {
        drop(tx);
        Ok(model.clone())
    }
}

async fn compare(store: &dyn ExecutionStore, model: &Model) -> std::result::Result<(), String> {
    let err = |what: &str, got: &dyn std::fmt::Debug, want: &dyn std::fmt::Debug| {
        Err(format!("{what}: store has {got:?}, model has {want:?}"))
    };
    for id in 0..IDS {
        let got = store.get_execution(&eid(&xid(id))).await;
        match (got, model.execs.get(&id)) {
            (Err(e), None) if e.is_not_found() => {}
            (Ok(e), Some(m)) => {
                let g = (e.state(), e.revision, e.job_id.to_string());
                let w = (m.state, m.revision, format!("job{}", m.job));
                if g != w {
                    return err(&format!("execution {id}"), &g, &w);
                }
                let events = store.get_execution_events(&e.id).await.map_err(|e| e.to_string())?.len();
                if events != m.events {
                    return err(&format!("events of {id}"), &events, &m.events);
                }
            }
            (got, want) => return err(&format!("presence of {id}"), &got.map(|e| e.id), &want),
        }
    }
    for st in ExecutionState::ALL {
        let count = store.get_execution_count(st).await.map_err(|e| e.to_string())?;
        let want = model.execs.values().filter(|e| e.state == st).count() as u64;
        if count != want {
            return err(&format!("count of {st}"), &count, &want);
        }
        let listed: BTreeSet<String> = store
            .get_executions_in_state(st, None, 100)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|e| e.id.to_string())
            .collect();
        let want: BTreeSet<String> =
            model.execs.iter().filter(|(_, e)| e.state == st).map(|(id, _)| xid(*id)).collect();
        if listed != want {
            return err(&format!("state index of {st}"), &listed, &want);
        }
    }
    for job in 0..JOBS {
        let got: BTreeSet<String> = store
            .get_executions(&jid(&format!("job{job}")))
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|e| e.id.to_string())
            .collect();
        let want: BTreeSet<String> = model.execs.iter().filter(|(_, e)| e.job == job).map(|(id, _)| xid(*id)).collect();
        if got != want {
            return err(&format!("job index of job{job}"), &got, &want);
        }
    }
    let live: BTreeSet<String> =
        store.get_live_executions().await.map_err(|e| e.to_string())?.into_iter().map(|e| e.id.to_string()).collect();
    let want: BTreeSet<String> =
        model.execs.iter().filter(|(_, e)| e.state.is_live()).map(|(id, _)| xid(*id)).collect();
    if live != want {
        return err("live executions", &live, &want);
    }
    let head = store.event_log().head().await.map_err(|e| e.to_string())?;
    if head != model.head {
        return err("log head", &head, &model.head);
    }
    let cps: BTreeMap<String, u64> =
        store.event_log().list_checkpoints().await.map_err(|e| e.to_string())?.into_iter().collect();
    if cps != model.checkpoints {
        return err("checkpoints", &cps, &model.checkpoints);
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
            Op::Tx { ops, commit } => {
                model = run_tx(&*env.exec(), &model, ops, *commit).await.map_err(fail)?;
            }
            _ => {
                let got = run_simple(&*env.exec(), &model, op).await.map_err(fail)?;
                let want = model.apply(op);
                if got != want {
                    return Err(fail(format!("store says {got:?}, model says {want:?}")));
                }
            }
        }
        compare(&*env.exec(), &model).await.map_err(fail)?;
    }
    env.exec().close().await.map_err(|e| TestCaseError::fail(e.to_string()))?;
    Ok(())
}

/// Number of generated cases: `BRINE_PROPTEST_CASES`, default 64.
pub fn cases_from_env() -> u32 {
    std::env::var("BRINE_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64)
}

/// Runs `cases` random sequences of up to 60 steps against `factory` and the model.
pub fn check(factory: &dyn Factory, cases: u32) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&prop::collection::vec(op(), 1..60), |ops| rt.block_on(run_case(factory, ops)));
    if let Err(e) = result {
        panic!("model-based test failed: {e}");
    }
}
