//! The PostgreSQL harness: Brine's PostgreSQL backend beside raw SQL doing the same row
//! writes without Brine (the limit for this schema), at 1, 16 and 64 connections, on a
//! server with its default durability (`fsync` and `synchronous_commit` on).
//!
//! `cargo xtask bench-pg [N] [--json]` starts such a server, runs this with
//! `BRINE_TEST_DATABASE_URL` naming it, and stops it. N is the number of operations per
//! row (default 2000).
//!
//! What "raw" does, per operation, in one transaction where Brine uses one:
//! - `create_execution`: insert the execution row, move its state counter, append the
//!   log entry through the head row;
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
use tokio_postgres::{Client, NoTls};

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

/// One connection per task, for the raw rows.
async fn raw_clients(database: &str, n: usize) -> Arc<Vec<Client>> {
    let mut clients = Vec::new();
    for _ in 0..n {
        let (client, connection) =
            tokio_postgres::connect(&brine_postgres::testing::url_for(database), NoTls).await.expect("connect");
        tokio::spawn(connection);
        clients.push(client);
    }
    Arc::new(clients)
}

const RAW_LOG: &str =
    "WITH head AS (UPDATE compute.logs SET last_seq = last_seq + 1 WHERE name = $1 RETURNING last_seq) \
     INSERT INTO compute.log_entries (log, seq, created_ns, object_type, operation, entry) \
     SELECT $1, head.last_seq, $2, 0, $3, $4 FROM head";

async fn raw_create(c: &Client, i: u64) {
    let e = sample_execution(i, PER_JOB);
    let object = LogObject::Execution { current: Some(Box::new(e.clone())), previous: None, events: vec![] };
    c.batch_execute("BEGIN").await.unwrap();
    c.execute(
        "INSERT INTO compute.executions (node, id, job, state, modified_ns, revision, record) VALUES ('raw', $1, $2, 0, $3, 1, $4)",
        &[&e.id.as_str(), &e.job_id.as_str(), &(i as i64), &codec::encode(&e)],
    )
    .await
    .unwrap();
    c.execute("UPDATE compute.execution_counts SET count = count + 1 WHERE node = 'raw' AND state = 0", &[])
        .await
        .unwrap();
    c.execute(RAW_LOG, &[&"compute/raw", &(i as i64), &0i16, &codec::encode(&object)]).await.unwrap();
    c.batch_execute("COMMIT").await.unwrap();
}

async fn raw_update(c: &Client, i: u64) {
    let id = sample_execution(i, PER_JOB).id;
    c.batch_execute("BEGIN").await.unwrap();
    let row = c
        .query_one("SELECT record FROM compute.executions WHERE node = 'raw' AND id = $1 FOR UPDATE", &[&id.as_str()])
        .await
        .unwrap();
    let mut e: brine_store::model::Execution = codec::decode("raw", b"", row.get(0)).unwrap();
    let before = e.clone();
    e.compute_state.state = ExecutionState::BidAccepted;
    e.revision += 1;
    c.execute(
        "UPDATE compute.executions SET state = 1, revision = $2, record = $3 WHERE node = 'raw' AND id = $1",
        &[&id.as_str(), &(e.revision as i64), &codec::encode(&e)],
    )
    .await
    .unwrap();
    c.execute(
        "UPDATE compute.execution_counts SET count = CASE WHEN state = 0 THEN count - 1 ELSE count + 1 END \
         WHERE node = 'raw' AND state IN (0, 1)",
        &[],
    )
    .await
    .unwrap();
    let object = LogObject::Execution { current: Some(Box::new(e)), previous: Some(Box::new(before)), events: vec![] };
    c.execute(RAW_LOG, &[&"compute/raw", &(i as i64), &1i16, &codec::encode(&object)]).await.unwrap();
    c.batch_execute("COMMIT").await.unwrap();
}

async fn raw_get(c: &Client, i: u64) {
    let id = sample_execution(i, PER_JOB).id;
    c.query_one("SELECT record FROM compute.executions WHERE node = 'raw' AND id = $1", &[&id.as_str()]).await.unwrap();
}

const RAW_GRAB: &str = "WITH next AS MATERIALIZED (SELECT job_id FROM compute.jobs \
     WHERE queue = $1 AND state = 1 AND queue <> '' ORDER BY created_ns, id LIMIT 1 FOR UPDATE SKIP LOCKED) \
     UPDATE compute.jobs j SET status = 'in-progress', state = 2, grabbed = now() FROM next \
     WHERE j.job_id = next.job_id RETURNING j.id";

async fn raw_enqueue(c: &Client, queue: &str, i: u64) {
    let id = format!("{queue}-{i:08}");
    let job = Job::new(JobId::new(&id).unwrap(), &id);
    c.execute(
        "INSERT INTO compute.jobs (job_id, status, queue, input_files, created, last_accessed, id, namespace, name, \
             state, job_type, created_ns, modified_ns, accessed_ns, revision, version, record) \
         VALUES (decode(md5($1), 'hex'), 'queued', $2, '{}', now(), now(), $1, 'default', $1, 1, 0, $3, $3, $3, 1, 1, $4)",
        &[&id, &queue, &(i as i64), &codec::encode(&job)],
    )
    .await
    .unwrap();
}

async fn raw_grab(c: &Client, queue: &str) -> Option<String> {
    c.query_opt(RAW_GRAB, &[&queue]).await.unwrap().map(|r| r.get(0))
}

async fn raw_finish(c: &Client, id: &str) {
    c.execute(
        "UPDATE compute.jobs SET status = 'complete', state = 3, finished = now(), output_files = '{}' WHERE id = $1",
        &[&id],
    )
    .await
    .unwrap();
}

struct Row {
    name: String,
    brine: f64,
    raw: f64,
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
    let mut rows = Vec::new();
    let mut row = |name: &str, brine: f64, raw: f64| rows.push(Row { name: format!("{name} ({c} conn)"), brine, raw });

    let r = Arc::clone(&raw);
    let raw_rate = drive(c, n, move |t, i| {
        let r = Arc::clone(&r);
        async move { raw_create(&r[t], i).await }
    })
    .await;
    let s = Arc::clone(&executions);
    let brine_rate = drive(c, n, move |_, i| {
        let s = Arc::clone(&s);
        async move {
            s.create_execution(sample_execution(i, PER_JOB), vec![]).await.expect("create");
        }
    })
    .await;
    row("create_execution", brine_rate, raw_rate);

    let r = Arc::clone(&raw);
    let raw_rate = drive(c, n, move |t, i| {
        let r = Arc::clone(&r);
        async move { raw_update(&r[t], i).await }
    })
    .await;
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

    let r = Arc::clone(&raw);
    let raw_rate = drive(c, n, move |t, i| {
        let r = Arc::clone(&r);
        async move { raw_get(&r[t], i).await }
    })
    .await;
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
    let r = Arc::clone(&raw);
    let raw_rate = drive(c, n, move |t, _| {
        let r = Arc::clone(&r);
        async move {
            raw_grab(&r[t], "rawq").await.expect("a queued job");
        }
    })
    .await;
    let j = Arc::clone(&jobs);
    let brine_rate = drive(c, n, move |_, _| {
        let j = Arc::clone(&j);
        async move {
            j.grab_next("q").await.expect("grab").expect("a queued job");
        }
    })
    .await;
    row("grab_next", brine_rate, raw_rate);

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

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let json = args.iter().any(|a| a == "--json");
    let n: u64 = args.iter().find_map(|a| a.parse().ok()).unwrap_or(2000);
    let mut rows = Vec::new();
    for c in LEVELS {
        rows.extend(level(c, n).await);
    }
    if json {
        let items: Vec<String> = rows
            .iter()
            .map(|r| format!(r#"{{"operation":"{}","brine":{:.1},"raw":{:.1}}}"#, r.name, r.brine, r.raw))
            .collect();
        println!(r#"{{"n":{n},"rows":[{}]}}"#, items.join(","));
        return;
    }
    println!("Brine PostgreSQL backend vs raw SQL (same rows), server durability on, n = {n} per row");
    println!("{:<40} {:>12} {:>12} {:>8}", "operation", "brine ops/s", "raw ops/s", "ratio");
    for r in &rows {
        println!("{:<40} {:>12.0} {:>12.0} {:>7.2}x", r.name, r.brine, r.raw, r.brine / r.raw);
    }
}
