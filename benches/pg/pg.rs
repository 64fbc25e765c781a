//! The PostgreSQL harness: Brine's PostgreSQL backend beside raw SQL doing the same row
//! writes without Brine (the limit for this schema), at 1, 16 and 64 connections, on a
//! server with its default durability (`fsync` and `synchronous_commit` on).
//!
//! `cargo xtask bench-pg [N] [--json]` starts such a server, runs this with
//! `BRINE_TEST_DATABASE_URL` naming it, and stops it. N is the number of operations per
//! row (default 1000). The whole harness runs three rounds, each level on a fresh
//! database, with a `CHECKPOINT` before every timed run; each row reports the medians of
//! its rounds and the range of its ratio.
//!
//! "N conn" is the concurrency: N tasks, each raw task on a connection of its own, and
//! Brine's stores with a pool of N connections. Brine groups the plain writes that
//! arrive together into one transaction (see `brine_postgres`), so its writes use a few
//! of those connections; raw SQL commits each operation on its own.
//!
//! What "raw" does, per operation, in one transaction:
//! - `create_execution`: insert the execution row, move its state counter, append the
//!   log entry through the head row (and a second row without the log entry: what the
//!   log's head row costs);
//! - `update_execution_state`: lock and read the row, write it back, move two counters,
//!   append the log entry;
//! - `get_execution`: read the row;
//! - `grab_next`: the `SKIP LOCKED` statement that takes the next queued job (Brine also
//!   writes the job's version, history and log entry);
//! - `enqueue → grab → finish`: insert a queued job row, take it, finish it (three
//!   statements; Brine also keeps versions, history, labels and the log).

use std::sync::Arc;
use std::time::{Duration, Instant};

use brine_postgres::{PgExecutionStore, PgJobStore, PgOptions};
use brine_store::model::{Execution, ExecutionId, ExecutionState, Job, JobId, LogObject, NodeId};
use brine_store::{codec, ExecutionStore, JobOutcome, JobStore, UpdateExecutionRequest};
use tokio::task::JoinSet;
use tokio_postgres::{Client, NoTls, Statement};

const PER_JOB: u64 = 10;

/// The `i`-th execution of the workload (ten per job), with a realistic job spec.
fn sample_execution(i: u64, per_job: u64) -> Execution {
    let job_no = i / per_job;
    let mut job = Job::new(JobId::new(format!("job-{job_no:08}")).expect("id"), format!("job-{job_no}"));
    job.config = r#"{"image":"ubuntu:24.04","cmd":["python","train.py"]}"#.into();
    job.labels.insert("team".into(), "ml".into());
    Execution::new(ExecutionId::new(format!("exec-{i:010}")).expect("id"), &job)
}
const LEVELS: [usize; 3] = [1, 16, 64];

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

/// Runs `op(task, i)` for every `i < n`, split over `tasks` concurrent tasks; returns
/// operations per second.
async fn drive<F, Fut>(tasks: usize, n: u64, op: F) -> f64
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let started = Instant::now();
    let mut set = JoinSet::new();
    for t in 0..tasks {
        let op = Arc::clone(&op);
        set.spawn(async move {
            let mut i = t as u64;
            while i < n {
                op(t, i).await;
                i += tasks as u64;
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r.expect("a bench task");
    }
    rate(n, started.elapsed())
}

/// One connection of the raw rows, with its statements prepared once (as Brine's are).
struct Raw {
    c: Client,
    insert: Statement,
    count_create: Statement,
    log: Statement,
    lock: Statement,
    update: Statement,
    count_move: Statement,
    get: Statement,
    enqueue: Statement,
    grab: Statement,
    finish: Statement,
}

/// One connection per task, for the raw rows.
async fn raw_clients(database: &str, n: usize) -> Arc<Vec<Raw>> {
    let mut clients = Vec::new();
    for _ in 0..n {
        let (c, connection) =
            tokio_postgres::connect(&brine_postgres::testing::url_for(database), NoTls).await.expect("connect");
        tokio::spawn(connection);
        let prepare = |sql: &'static str| {
            let c = &c;
            async move { c.prepare(sql).await.expect("prepare") }
        };
        clients.push(Raw {
            insert: prepare(
                "INSERT INTO compute.executions (node, id, job, state, modified_ns, revision, record) \
                 VALUES ('raw', $1, $2, 0, $3, 1, $4)",
            )
            .await,
            count_create: prepare(
                "UPDATE compute.execution_counts SET count = count + 1 WHERE node = 'raw' AND state = 0",
            )
            .await,
            log: prepare(RAW_LOG).await,
            lock: prepare("SELECT record FROM compute.executions WHERE node = 'raw' AND id = $1 FOR UPDATE").await,
            update: prepare(
                "UPDATE compute.executions SET state = 1, revision = $2, record = $3 WHERE node = 'raw' AND id = $1",
            )
            .await,
            // The counter rows locked in state order first, as Brine does: an UPDATE of
            // two rows alone locks them in heap order, and concurrent moves deadlock.
            count_move: prepare(
                "WITH locked AS (SELECT state FROM compute.execution_counts \
                     WHERE node = 'raw' AND state IN (0, 1) ORDER BY state FOR UPDATE) \
                 UPDATE compute.execution_counts c \
                 SET count = CASE WHEN c.state = 0 THEN c.count - 1 ELSE c.count + 1 END \
                 FROM locked WHERE c.node = 'raw' AND c.state = locked.state",
            )
            .await,
            get: prepare("SELECT record FROM compute.executions WHERE node = 'raw' AND id = $1").await,
            enqueue: prepare(
                "INSERT INTO compute.jobs (job_id, status, queue, input_files, created, last_accessed, id, namespace, \
                     name, state, job_type, created_ns, modified_ns, accessed_ns, revision, version, record) \
                 VALUES (decode(md5($1), 'hex'), 'queued', $2, '{}', now(), now(), $1, 'default', $1, 1, 0, $3, $3, $3, \
                     1, 1, $4)",
            )
            .await,
            grab: prepare(RAW_GRAB).await,
            finish: prepare(
                "UPDATE compute.jobs SET status = 'complete', state = 3, finished = now(), output_files = '{}' \
                 WHERE id = $1",
            )
            .await,
            c,
        });
    }
    Arc::new(clients)
}

const RAW_LOG: &str =
    "WITH head AS (UPDATE compute.logs SET last_seq = last_seq + 1 WHERE name = $1 RETURNING last_seq) \
     INSERT INTO compute.log_entries (log, seq, created_ns, object_type, operation, entry) \
     SELECT $1, head.last_seq, $2, 0, $3, $4 FROM head";

/// A raw create; `log`: with its log entry (the head row), as Brine's.
async fn raw_create(r: &Raw, i: u64, log: bool) {
    let e = sample_execution(i, PER_JOB);
    r.c.batch_execute("BEGIN").await.unwrap();
    r.c.execute(&r.insert, &[&e.id.as_str(), &e.job_id.as_str(), &(i as i64), &codec::encode(&e)]).await.unwrap();
    r.c.execute(&r.count_create, &[]).await.unwrap();
    if log {
        let object = LogObject::Execution { current: Some(Box::new(e)), previous: None, events: vec![] };
        r.c.execute(&r.log, &[&"compute/raw", &(i as i64), &0i16, &codec::encode(&object)]).await.unwrap();
    }
    r.c.batch_execute("COMMIT").await.unwrap();
}

async fn raw_update(r: &Raw, i: u64) {
    let id = sample_execution(i, PER_JOB).id;
    r.c.batch_execute("BEGIN").await.unwrap();
    let row = r.c.query_one(&r.lock, &[&id.as_str()]).await.unwrap();
    let mut e: brine_store::model::Execution = codec::decode("raw", b"", row.get(0)).unwrap();
    let before = e.clone();
    e.compute_state.state = ExecutionState::BidAccepted;
    e.revision += 1;
    r.c.execute(&r.update, &[&id.as_str(), &(e.revision as i64), &codec::encode(&e)]).await.unwrap();
    r.c.execute(&r.count_move, &[]).await.unwrap();
    let object = LogObject::Execution { current: Some(Box::new(e)), previous: Some(Box::new(before)), events: vec![] };
    r.c.execute(&r.log, &[&"compute/raw", &(i as i64), &1i16, &codec::encode(&object)]).await.unwrap();
    r.c.batch_execute("COMMIT").await.unwrap();
}

async fn raw_get(r: &Raw, i: u64) {
    let id = sample_execution(i, PER_JOB).id;
    r.c.query_one(&r.get, &[&id.as_str()]).await.unwrap();
}

const RAW_GRAB: &str = "WITH next AS MATERIALIZED (SELECT job_id FROM compute.jobs \
     WHERE queue = $1 AND state = 1 AND queue <> '' ORDER BY created_ns, id LIMIT 1 FOR UPDATE SKIP LOCKED) \
     UPDATE compute.jobs j SET status = 'in-progress', state = 2, grabbed = now() FROM next \
     WHERE j.job_id = next.job_id RETURNING j.id";

async fn raw_enqueue(r: &Raw, queue: &str, i: u64) {
    let id = format!("{queue}-{i:08}");
    let job = Job::new(JobId::new(&id).unwrap(), &id);
    r.c.execute(&r.enqueue, &[&id, &queue, &(i as i64), &codec::encode(&job)]).await.unwrap();
}

async fn raw_grab(r: &Raw, queue: &str) -> Option<String> {
    r.c.query_opt(&r.grab, &[&queue]).await.unwrap().map(|row| row.get(0))
}

async fn raw_finish(r: &Raw, id: &str) {
    r.c.execute(&r.finish, &[&id]).await.unwrap();
}

struct Row {
    name: String,
    brine: f64,
    raw: f64,
}

/// Writes every dirty page out before a row is timed, so that a checkpoint started by
/// the rows before (or by creating the database) does not land on it.
async fn settle(admin: &Client) {
    admin.batch_execute("CHECKPOINT").await.expect("checkpoint");
}

async fn open(database: &str, pool: usize) -> (Arc<PgExecutionStore>, Arc<PgJobStore>) {
    let url = brine_postgres::testing::url_for(database);
    let options = PgOptions { pool_size: pool, ..PgOptions::default() };
    let node = NodeId::new("bench").unwrap();
    let executions = brine_postgres::open_execution_store(&url, &node, options.clone()).await.expect("open");
    let jobs = brine_postgres::open_job_store(&url, options).await.expect("open");
    (Arc::new(executions), Arc::new(jobs))
}

async fn level(c: usize, n: u64) -> Vec<Row> {
    let database = brine_postgres::testing::fresh_database().await;
    let (executions, jobs) = open(&database, c).await;
    let raw = raw_clients(&database, c).await;
    let admin = brine_postgres::testing::connect(&database).await;
    admin
        .batch_execute(
            "INSERT INTO compute.logs (name, store_id) VALUES ('compute/raw', 'raw'); \
             INSERT INTO compute.execution_counts (node, state, count) SELECT 'raw', s::smallint, 0 FROM generate_series(0, 8) s",
        )
        .await
        .unwrap();
    // The pool opens its connections on first use: open them before anything is timed
    // (the raw clients are connected already).
    let s = Arc::clone(&executions);
    drive(c, 8 * c as u64, move |_, _| {
        let s = Arc::clone(&s);
        async move {
            s.get_execution_count(ExecutionState::Running).await.expect("warm up");
        }
    })
    .await;
    let mut rows = Vec::new();
    let mut row = |name: &str, brine: f64, raw: f64| rows.push(Row { name: format!("{name} ({c} conn)"), brine, raw });

    settle(&admin).await;
    let r = Arc::clone(&raw);
    let raw_rate = drive(c, n, move |t, i| {
        let r = Arc::clone(&r);
        async move { raw_create(&r[t], i, true).await }
    })
    .await;
    settle(&admin).await;
    let s = Arc::clone(&executions);
    let brine_rate = drive(c, n, move |_, i| {
        let s = Arc::clone(&s);
        async move {
            s.create_execution(sample_execution(i, PER_JOB), vec![]).await.expect("create");
        }
    })
    .await;
    row("create_execution", brine_rate, raw_rate);
    settle(&admin).await;
    let r = Arc::clone(&raw);
    let raw_rate = drive(c, n, move |t, i| {
        let r = Arc::clone(&r);
        async move { raw_create(&r[t], n + i, false).await }
    })
    .await;
    row("create_execution, raw without the log", brine_rate, raw_rate);

    settle(&admin).await;
    let r = Arc::clone(&raw);
    let raw_rate = drive(c, n, move |t, i| {
        let r = Arc::clone(&r);
        async move { raw_update(&r[t], i).await }
    })
    .await;
    settle(&admin).await;
    let s = Arc::clone(&executions);
    let brine_rate = drive(c, n, move |_, i| {
        let s = Arc::clone(&s);
        async move {
            let id: ExecutionId = sample_execution(i, PER_JOB).id;
            let request = UpdateExecutionRequest::to_state(id, ExecutionState::BidAccepted, "bid");
            s.update_execution_state(request).await.expect("update");
        }
    })
    .await;
    row("update_execution_state", brine_rate, raw_rate);

    settle(&admin).await;
    let r = Arc::clone(&raw);
    let raw_rate = drive(c, n, move |t, i| {
        let r = Arc::clone(&r);
        async move { raw_get(&r[t], i).await }
    })
    .await;
    settle(&admin).await;
    let s = Arc::clone(&executions);
    let brine_rate = drive(c, n, move |_, i| {
        let s = Arc::clone(&s);
        async move {
            s.get_execution(&sample_execution(i, PER_JOB).id).await.expect("get");
        }
    })
    .await;
    row("get_execution", brine_rate, raw_rate);

    // grab_next: a queue of n jobs each, filled untimed.
    let r = Arc::clone(&raw);
    drive(c, n, move |t, i| {
        let r = Arc::clone(&r);
        async move { raw_enqueue(&r[t], "rawq", i).await }
    })
    .await;
    let j = Arc::clone(&jobs);
    drive(c, n, move |_, i| {
        let j = Arc::clone(&j);
        async move {
            j.enqueue("q", Job::new(JobId::new(format!("q-{i:08}")).unwrap(), format!("q{i}"))).await.expect("enqueue");
        }
    })
    .await;
    settle(&admin).await;
    let r = Arc::clone(&raw);
    let raw_rate = drive(c, n, move |t, _| {
        let r = Arc::clone(&r);
        async move {
            raw_grab(&r[t], "rawq").await.expect("a queued job");
        }
    })
    .await;
    settle(&admin).await;
    let j = Arc::clone(&jobs);
    let brine_rate = drive(c, n, move |_, _| {
        let j = Arc::clone(&j);
        async move {
            j.grab_next("q").await.expect("grab").expect("a queued job");
        }
    })
    .await;
    row("grab_next", brine_rate, raw_rate);

    settle(&admin).await;
    let r = Arc::clone(&raw);
    let raw_rate = drive(c, n, move |t, i| {
        let r = Arc::clone(&r);
        async move {
            let queue = format!("rc{t}");
            raw_enqueue(&r[t], &queue, i).await;
            let id = raw_grab(&r[t], &queue).await.expect("the job just queued");
            raw_finish(&r[t], &id).await;
        }
    })
    .await;
    settle(&admin).await;
    let j = Arc::clone(&jobs);
    let brine_rate = drive(c, n, move |t, i| {
        let j = Arc::clone(&j);
        async move {
            let queue = format!("c{t}");
            j.enqueue(&queue, Job::new(JobId::new(format!("c-{i:08}")).unwrap(), format!("c{i}")))
                .await
                .expect("enqueue");
            let job = j.grab_next(&queue).await.expect("grab").expect("the job just queued");
            j.finish(&job.id, JobOutcome::Completed, vec![]).await.expect("finish");
        }
    })
    .await;
    row("enqueue -> grab -> finish", brine_rate, raw_rate);

    executions.close().await.unwrap();
    jobs.close().await.unwrap();
    drop(admin);
    drop(raw);
    brine_postgres::testing::drop_database(&database).await;
    rows
}

/// Rounds of the whole harness; each row reports the median of its rounds.
const ROUNDS: usize = 3;

/// The median of `values` (sorted in place).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let json = args.iter().any(|a| a == "--json");
    let n: u64 = args.iter().find_map(|a| a.parse().ok()).unwrap_or(1000);
    // rounds[r][i]: row i of round r; every round runs every level on fresh databases.
    let mut rounds: Vec<Vec<Row>> = Vec::new();
    for round in 0..ROUNDS {
        eprintln!("round {} of {ROUNDS}", round + 1);
        let mut rows = Vec::new();
        for c in LEVELS {
            rows.extend(level(c, n).await);
        }
        rounds.push(rows);
    }
    let summary: Vec<(String, f64, f64, f64, f64, f64)> = (0..rounds[0].len())
        .map(|i| {
            let mut brine: Vec<f64> = rounds.iter().map(|r| r[i].brine).collect();
            let mut raw: Vec<f64> = rounds.iter().map(|r| r[i].raw).collect();
            let mut ratios: Vec<f64> = rounds.iter().map(|r| r[i].brine / r[i].raw).collect();
            let ratio = median(&mut ratios);
            (
                rounds[0][i].name.clone(),
                median(&mut brine),
                median(&mut raw),
                ratio,
                ratios[0],
                ratios[ratios.len() - 1],
            )
        })
        .collect();
    // grab_next at 16 connections against one, per round.
    let grab = |c: usize| rounds[0].iter().position(|r| r.name == format!("grab_next ({c} conn)"));
    let mut scaling: Vec<f64> = match (grab(1), grab(16)) {
        (Some(one), Some(sixteen)) => rounds.iter().map(|r| r[sixteen].brine / r[one].brine).collect(),
        _ => Vec::new(),
    };
    let scaling = if scaling.is_empty() { f64::NAN } else { median(&mut scaling) };
    if json {
        let items: Vec<String> = summary
            .iter()
            .map(|(name, brine, raw, ratio, low, high)| {
                format!(
                    r#"{{"operation":"{name}","brine":{brine:.1},"raw":{raw:.1},"ratio":{ratio:.3},"ratio_min":{low:.3},"ratio_max":{high:.3}}}"#
                )
            })
            .collect();
        println!(r#"{{"n":{n},"rounds":{ROUNDS},"grab_16_vs_1":{scaling:.3},"rows":[{}]}}"#, items.join(","));
        return;
    }
    println!(
        "Brine PostgreSQL backend vs raw SQL (same rows), server durability on, n = {n} per row, median of {ROUNDS} rounds"
    );
    println!("{:<48} {:>12} {:>12} {:>8} {:>14}", "operation", "brine ops/s", "raw ops/s", "ratio", "ratio range");
    for (name, brine, raw, ratio, low, high) in &summary {
        println!("{name:<48} {brine:>12.0} {raw:>12.0} {ratio:>7.2}x {:>14}", format!("{low:.2}-{high:.2}x"));
    }
    println!("grab_next at 16 connections / at 1 (Brine, median of the rounds' ratios): {scaling:.2}x");
}
