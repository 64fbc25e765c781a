//! `PgExecutionStore`: a compute node's executions in `compute.executions`, their
//! history in `compute.execution_events`, per-state counters in
//! `compute.execution_counts`, all rows keyed by the node, so many nodes share one
//! database.
//!
//! Each change locks the execution's row (`SELECT … FOR UPDATE`), asks `rules` what
//! changes, and writes the row and the history; its counter moves and log entry are
//! written at commit ([`crate::db::Write`]). A plain write runs in a commit group
//! ([`crate::group`]), an explicit transaction in a database transaction of its own.

use std::sync::Arc;

use async_trait::async_trait;
use brine_store::model::{Event, Execution, ExecutionId, ExecutionState, JobId, LogObject, Operation, Timestamp};
use brine_store::{
    codec, rules, CheckReport, EventLog, ExecutionStore, ExecutionTx, ObjectKind, RepairReport, Result, StoreError,
    UpdateExecutionRequest,
};
use tokio_postgres::Row;

use crate::db::{i64_of, u64_of, Access, Db, Write};
use crate::log::PgEventLog;

const TABLE: &str = "compute.executions";

fn state_code(state: ExecutionState) -> i16 {
    i16::from(state.code())
}

/// The node whose rows a store reads and writes.
fn node(w: &Write) -> &str {
    w.db().node()
}

fn decode(row: &Row, column: usize) -> Result<Execution> {
    let id: &str = row.get("id");
    codec::decode(TABLE, id.as_bytes(), row.get(column))
}

async fn lock(w: &Write, id: &ExecutionId) -> Result<Execution> {
    let row = w
        .query_opt(
            "SELECT id, record FROM compute.executions WHERE node = $1 AND id = $2 FOR UPDATE",
            &[&node(w), &id.as_str()],
        )
        .await?
        .ok_or_else(|| StoreError::not_found(ObjectKind::Execution, id))?;
    decode(&row, 1)
}

/// Writes `e`'s row with `sql`, whose parameters are the row's columns in table order
/// (`node, id, job, state, modified_ns, revision, record`); returns the rows written.
async fn write_row(w: &Write, sql: &str, e: &Execution) -> Result<u64> {
    w.execute(
        sql,
        &[
            &node(w),
            &e.id.as_str(),
            &e.job_id.as_str(),
            &state_code(e.state()),
            &i64_of(e.modify_time.as_nanos()),
            &i64_of(e.revision),
            &codec::encode(e),
        ],
    )
    .await
}

async fn put(w: &Write, e: &Execution) -> Result<()> {
    let sql = "UPDATE compute.executions SET job = $3, state = $4, modified_ns = $5, revision = $6, record = $7 \
               WHERE node = $1 AND id = $2";
    write_row(w, sql, e).await.map(|_| ())
}

async fn add_history(w: &Write, id: &ExecutionId, events: &[Event]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let encoded: Vec<Vec<u8>> = events.iter().map(codec::encode).collect();
    w.execute(
        "INSERT INTO compute.execution_events (node, execution, event) \
         SELECT $1, $2, e.event FROM unnest($3::bytea[]) WITH ORDINALITY AS e(event, ord) ORDER BY e.ord",
        &[&node(w), &id.as_str(), &encoded],
    )
    .await
    .map(|_| ())
}

/// Moves one execution between the counters of `from` and `to` (`None`: created or
/// deleted); written at commit ([`Write::count`]).
fn count(w: &mut Write, from: Option<ExecutionState>, to: Option<ExecutionState>) {
    w.count(from.map(state_code), to.map(state_code));
}

async fn create(w: &mut Write, execution: Execution, events: Vec<Event>, now: Timestamp) -> Result<Execution> {
    let e = rules::new_execution(execution, now)?;
    let sql = "INSERT INTO compute.executions (node, id, job, state, modified_ns, revision, record) \
               VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (node, id) DO NOTHING";
    let inserted = write_row(w, sql, &e).await?;
    if inserted == 0 {
        return Err(StoreError::already_exists(ObjectKind::Execution, &e.id));
    }
    add_history(w, &e.id, &events).await?;
    count(w, None, Some(e.state()));
    w.log(Operation::Create, LogObject::Execution { current: Some(Box::new(e.clone())), previous: None, events }, now);
    Ok(e)
}

/// Stores `executions` as given (a load) with their history, in three statements.
async fn load(w: &mut Write, executions: Vec<(Execution, Vec<Event>)>) -> Result<()> {
    let mut ids = Vec::with_capacity(executions.len());
    let (mut jobs, mut states, mut modified, mut revisions, mut records) = (vec![], vec![], vec![], vec![], vec![]);
    let (mut owners, mut events) = (Vec::new(), Vec::new());
    rules::loaded_executions(&executions)?;
    for (e, history) in &executions {
        ids.push(e.id.as_str());
        jobs.push(e.job_id.as_str());
        states.push(state_code(e.state()));
        modified.push(i64_of(e.modify_time.as_nanos()));
        revisions.push(i64_of(e.revision));
        records.push(codec::encode(e));
        for event in history {
            owners.push(e.id.as_str());
            events.push(codec::encode(event));
        }
    }
    let rows = w
        .query(
            "INSERT INTO compute.executions (node, id, job, state, modified_ns, revision, record) \
             SELECT $1, * FROM unnest($2::text[], $3::text[], $4::smallint[], $5::bigint[], $6::bigint[], $7::bytea[]) \
             ON CONFLICT (node, id) DO NOTHING RETURNING id",
            &[&node(w), &ids, &jobs, &states, &modified, &revisions, &records],
        )
        .await?;
    if rows.len() < ids.len() {
        // The batch repeats no id (the rule above): the first one not stored was there.
        let stored: std::collections::HashSet<String> = rows.iter().map(|r| r.get(0)).collect();
        let id = ids.iter().find(|id| !stored.contains(**id)).unwrap_or(&ids[0]);
        return Err(StoreError::already_exists(ObjectKind::Execution, id));
    }
    if !events.is_empty() {
        w.execute(
            "INSERT INTO compute.execution_events (node, execution, event) \
             SELECT $1, e.execution, e.event FROM unnest($2::text[], $3::bytea[]) WITH ORDINALITY \
             AS e(execution, event, ord) ORDER BY e.ord",
            &[&node(w), &owners, &events],
        )
        .await?;
    }
    for (e, _) in &executions {
        count(w, None, Some(e.state()));
    }
    Ok(())
}

async fn update(w: &mut Write, request: UpdateExecutionRequest, now: Timestamp) -> Result<Execution> {
    let current = lock(w, &request.execution_id).await?;
    let next = rules::update_execution(&current, &request, now)?;
    put(w, &next).await?;
    count(w, Some(current.state()), Some(next.state()));
    add_history(w, &next.id, &request.events).await?;
    let object = LogObject::Execution {
        current: Some(Box::new(next.clone())),
        previous: Some(Box::new(current)),
        events: request.events,
    };
    w.log(Operation::Update, object, now);
    Ok(next)
}

async fn add_events(w: &mut Write, id: ExecutionId, events: Vec<Event>, now: Timestamp) -> Result<()> {
    let current = lock(w, &id).await?;
    add_history(w, &id, &events).await?;
    if let Some(next) = rules::events_added(&current, now) {
        put(w, &next).await?;
        let object = LogObject::Execution { current: Some(Box::new(next)), previous: Some(Box::new(current)), events };
        w.log(Operation::Update, object, now);
    }
    Ok(())
}

async fn delete(w: &mut Write, id: ExecutionId, now: Timestamp) -> Result<()> {
    let current = lock(w, &id).await?;
    w.execute("DELETE FROM compute.executions WHERE node = $1 AND id = $2", &[&node(w), &id.as_str()]).await?;
    w.execute("DELETE FROM compute.execution_events WHERE node = $1 AND execution = $2", &[&node(w), &id.as_str()])
        .await?;
    count(w, Some(current.state()), None);
    let object = LogObject::Execution { current: None, previous: Some(Box::new(current)), events: vec![] };
    w.log(Operation::Delete, object, now);
    Ok(())
}

/// The execution store of one compute node in a PostgreSQL database.
#[derive(Clone)]
pub struct PgExecutionStore {
    pub(crate) db: Arc<Db>,
}

/// Runs one plain write, `$op(&mut write, …, now)`, in the store's next commit group.
/// The arguments are moved into the write and cloned for each run of it.
macro_rules! plain_write {
    ($store:expr, $op:ident ( $($arg:ident),* )) => {{
        $store.db.write(move |w, now| Box::pin($op(w, $(Clone::clone(&$arg),)* now))).await
    }};
}

impl PgExecutionStore {
    async fn read_all(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Execution>> {
        let conn = self.db.read().await?;
        let statement = conn.prepare_cached(sql).await.map_err(|e| crate::db::statement_error(sql, e))?;
        let rows = conn.query(&statement, params).await.map_err(|e| crate::db::statement_error(sql, e))?;
        rows.iter().map(|r| decode(r, 1)).collect()
    }
}

#[async_trait]
impl ExecutionStore for PgExecutionStore {
    async fn create_execution(&self, execution: Execution, events: Vec<Event>) -> Result<Execution> {
        plain_write!(self, create(execution, events))
    }

    async fn get_execution(&self, id: &ExecutionId) -> Result<Execution> {
        self.read_all(
            "SELECT id, record FROM compute.executions WHERE node = $1 AND id = $2",
            &[&self.db.node(), &id.as_str()],
        )
        .await?
        .pop()
        .ok_or_else(|| StoreError::not_found(ObjectKind::Execution, id))
    }

    async fn get_executions(&self, job_id: &JobId) -> Result<Vec<Execution>> {
        let all = self
            .read_all(
                "SELECT id, record FROM compute.executions WHERE node = $1 AND job = $2",
                &[&self.db.node(), &job_id.as_str()],
            )
            .await?;
        Ok(rules::newest_first(all))
    }

    async fn get_live_executions(&self) -> Result<Vec<Execution>> {
        let live: Vec<i16> = ExecutionState::LIVE.iter().map(|s| state_code(*s)).collect();
        let all = self
            .read_all(
                "SELECT id, record FROM compute.executions WHERE node = $1 AND state = ANY($2)",
                &[&self.db.node(), &live],
            )
            .await?;
        Ok(rules::newest_first(all))
    }

    async fn get_executions_in_state(
        &self,
        state: ExecutionState,
        after: Option<&ExecutionId>,
        limit: usize,
    ) -> Result<Vec<Execution>> {
        rules::check_limit(limit)?;
        self.read_all(
            "SELECT id, record FROM compute.executions WHERE node = $1 AND state = $2 AND id > $3 ORDER BY id LIMIT $4",
            &[&self.db.node(), &state_code(state), &after.map_or("", |a| a.as_str()), &i64_of(limit as u64)],
        )
        .await
    }

    async fn get_execution_count(&self, state: ExecutionState) -> Result<u64> {
        let conn = self.db.read().await?;
        let row = conn
            .query_opt(
                "SELECT count FROM compute.execution_counts WHERE node = $1 AND state = $2",
                &[&self.db.node(), &state_code(state)],
            )
            .await
            .map_err(|e| crate::error::pg_error("read a counter", e))?;
        Ok(row.map_or(0, |r| u64_of(r.get(0))))
    }

    async fn update_execution_state(&self, request: UpdateExecutionRequest) -> Result<Execution> {
        plain_write!(self, update(request))
    }

    async fn add_execution_event(&self, id: &ExecutionId, events: Vec<Event>) -> Result<()> {
        let id = id.clone();
        plain_write!(self, add_events(id, events))
    }

    async fn get_execution_events(&self, id: &ExecutionId) -> Result<Vec<Event>> {
        let read = self.db.snapshot().await?;
        let node = self.db.node();
        let exists = read
            .query_opt("SELECT 1 FROM compute.executions WHERE node = $1 AND id = $2", &[&node, &id.as_str()])
            .await?;
        if exists.is_none() {
            return Err(StoreError::not_found(ObjectKind::Execution, id));
        }
        let rows = read
            .query(
                "SELECT seq, event FROM compute.execution_events WHERE node = $1 AND execution = $2 ORDER BY seq",
                &[&node, &id.as_str()],
            )
            .await?;
        read.commit().await?;
        rows.iter()
            .map(|r| codec::decode("compute.execution_events", &u64_of(r.get(0)).to_be_bytes(), r.get(1)))
            .collect()
    }

    async fn delete_execution(&self, id: &ExecutionId) -> Result<()> {
        let id = id.clone();
        plain_write!(self, delete(id))
    }

    async fn load_executions(&self, executions: Vec<(Execution, Vec<Event>)>) -> Result<()> {
        let mut w = self.db.begin(Access::Shared).await?;
        load(&mut w, executions).await?;
        w.commit().await.map(|_| ())
    }

    async fn begin_tx(&self) -> Result<Box<dyn ExecutionTx>> {
        let w = self.db.begin(Access::Exclusive).await?;
        Ok(Box::new(PgExecutionTx { w, steps: rules::TxSteps::default() }))
    }

    fn event_log(&self) -> Arc<dyn EventLog> {
        Arc::new(PgEventLog(Arc::clone(&self.db)))
    }

    async fn repair(&self, dry_run: bool) -> Result<RepairReport> {
        let w = self.db.begin(Access::Exclusive).await?;
        let node = self.db.node();
        let mut report = RepairReport::default();
        let rows = w
            .query(
                "SELECT c.state, c.count, coalesce(x.n, 0) FROM compute.execution_counts c \
                 LEFT JOIN (SELECT state, count(*) AS n FROM compute.executions WHERE node = $1 GROUP BY state) x \
                 ON x.state = c.state WHERE c.node = $1",
                &[&node],
            )
            .await?;
        for row in &rows {
            report.keys_scanned += 1;
            let (stored, actual): (i64, i64) = (row.get(1), row.get(2));
            if stored != actual {
                report.counters_fixed += 1;
                if !dry_run {
                    w.execute(
                        "UPDATE compute.execution_counts SET count = $3 WHERE node = $1 AND state = $2",
                        &[&node, &row.get::<_, i16>(0), &actual],
                    )
                    .await?;
                }
            }
        }
        let sql = if dry_run {
            "SELECT count(*) FROM compute.execution_events e WHERE e.node = $1 AND NOT EXISTS \
             (SELECT 1 FROM compute.executions x WHERE x.node = e.node AND x.id = e.execution)"
        } else {
            "WITH d AS (DELETE FROM compute.execution_events e WHERE e.node = $1 AND NOT EXISTS \
             (SELECT 1 FROM compute.executions x WHERE x.node = e.node AND x.id = e.execution) RETURNING 1) \
             SELECT count(*) FROM d"
        };
        let row = w.query_opt(sql, &[&node]).await?;
        report.orphan_history_events = row.map_or(0, |r| u64_of(r.get(0)));
        if dry_run {
            w.rollback().await?;
        } else {
            w.commit().await?;
        }
        Ok(report)
    }

    async fn check(&self) -> Result<CheckReport> {
        let read = self.db.snapshot().await?;
        let mut report = CheckReport::default();
        check(&read, &mut report).await?;
        crate::log::check(&read, &mut report).await?;
        read.commit().await?;
        Ok(report)
    }

    async fn compact(&self) -> Result<()> {
        // PostgreSQL reclaims space itself (autovacuum).
        self.db.check_open()
    }

    fn unclean_shutdown(&self) -> bool {
        // A process dying mid-write leaves nothing half-written: the server rolls its
        // transaction back, so there is never derived data to repair.
        false
    }

    async fn sync(&self) -> Result<()> {
        // Every commit is durable when acknowledged (synchronous_commit).
        self.db.check_open()
    }

    fn store_id(&self) -> String {
        self.db.store_id.clone()
    }

    async fn close(&self) -> Result<()> {
        self.db.close();
        Ok(())
    }
}

/// Checks the node's executions in one snapshot: every record decodes and its columns
/// agree with it, every history row belongs to a stored execution, and the counters equal
/// the number of records in each state.
async fn check(read: &Write, report: &mut CheckReport) -> Result<()> {
    let node = read.db().node();
    let mut counts = [0u64; 9];
    let mut after = String::new();
    loop {
        let rows = read
            .query(
                "SELECT id, record, job, state, modified_ns, revision FROM compute.executions \
                 WHERE node = $1 AND id > $2 ORDER BY id LIMIT 1000",
                &[&node, &after],
            )
            .await?;
        let Some(last) = rows.last() else { break };
        after = last.get::<_, String>(0);
        for row in &rows {
            report.keys_checked += 1;
            let id: String = row.get(0);
            let e = match decode(row, 1) {
                Ok(e) => e,
                Err(err) => {
                    report.problem(TABLE, id, err.to_string());
                    continue;
                }
            };
            counts[usize::from(e.state().code())] += 1;
            let columns = (row.get::<_, String>(2), row.get::<_, i16>(3), row.get::<_, i64>(4), row.get::<_, i64>(5));
            let expected =
                (e.job_id.to_string(), state_code(e.state()), i64_of(e.modify_time.as_nanos()), i64_of(e.revision));
            if e.id.as_str() != id || columns != expected {
                report.problem(TABLE, id, format!("columns {columns:?} disagree with the record {expected:?}"));
            }
        }
    }
    let rows = read
        .query(
            "SELECT e.execution, count(*) FROM compute.execution_events e WHERE e.node = $1 AND NOT EXISTS \
             (SELECT 1 FROM compute.executions x WHERE x.node = e.node AND x.id = e.execution) GROUP BY e.execution",
            &[&node],
        )
        .await?;
    for row in &rows {
        report.problem(
            "compute.execution_events",
            row.get::<_, String>(0),
            format!("{} history events of a missing execution", row.get::<_, i64>(1)),
        );
    }
    let rows = read.query("SELECT state, count FROM compute.execution_counts WHERE node = $1", &[&node]).await?;
    for state in ExecutionState::ALL {
        report.keys_checked += 1;
        let stored = rows.iter().find(|r| r.get::<_, i16>(0) == state_code(state)).map(|r| u64_of(r.get(1)));
        let actual = counts[usize::from(state.code())];
        if stored != Some(actual) {
            report.problem(
                "compute.execution_counts",
                state.as_str(),
                format!("counter of {state} is {stored:?}, the records {actual}"),
            );
        }
    }
    Ok(())
}

/// A transaction on a [`PgExecutionStore`]: a database transaction holding the store's
/// lock exclusively.
struct PgExecutionTx {
    w: Write,
    steps: rules::TxSteps,
}

impl PgExecutionTx {
    /// Records a failed step, so later steps and the commit are refused.
    fn step<T>(&mut self, out: Result<T>) -> Result<T> {
        self.steps.step(|| out)
    }
}

#[async_trait]
impl ExecutionTx for PgExecutionTx {
    async fn create_execution(&mut self, execution: Execution, events: Vec<Event>) -> Result<Execution> {
        self.steps.check()?;
        let now = self.w.db().clock.now();
        let out = create(&mut self.w, execution, events, now).await;
        self.step(out)
    }

    async fn get_execution(&mut self, id: &ExecutionId) -> Result<Execution> {
        // A failed read is no failed step.
        lock(&self.w, id).await
    }

    async fn update_execution_state(&mut self, request: UpdateExecutionRequest) -> Result<Execution> {
        self.steps.check()?;
        let now = self.w.db().clock.now();
        let out = update(&mut self.w, request, now).await;
        self.step(out)
    }

    async fn add_execution_event(&mut self, id: &ExecutionId, events: Vec<Event>) -> Result<()> {
        self.steps.check()?;
        let now = self.w.db().clock.now();
        let out = add_events(&mut self.w, id.clone(), events, now).await;
        self.step(out)
    }

    async fn delete_execution(&mut self, id: &ExecutionId) -> Result<()> {
        self.steps.check()?;
        let now = self.w.db().clock.now();
        let out = delete(&mut self.w, id.clone(), now).await;
        self.step(out)
    }

    async fn commit(self: Box<Self>) -> Result<()> {
        self.steps.check()?;
        self.w.commit().await.map(|_| ())
    }

    async fn rollback(self: Box<Self>) -> Result<()> {
        self.w.rollback().await
    }
}
