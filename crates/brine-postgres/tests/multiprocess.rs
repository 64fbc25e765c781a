//! Many processes on one database: each test runs itself again as child processes
//! (`BRINE_PG_CHILD` set), each child with its own pool, and checks what they did
//! together. A child reports on stdout, one `KEY value` line per fact.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use brine_postgres::PgOptions;
use brine_store::model::{Execution, ExecutionId, ExecutionState, Job, JobId, LogObject};
use brine_store::{EventFilter, ExecutionStore, JobStore, Position, StoreError, UpdateExecutionRequest};

const CHILD: &str = "BRINE_PG_CHILD";
const DATABASE: &str = "BRINE_PG_CHILD_DATABASE";
const START_AT: &str = "BRINE_PG_CHILD_START_MS";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap()
}

/// This process's role: `Some(child number)` in a child.
fn child() -> Option<usize> {
    std::env::var(CHILD).ok().map(|c| c.parse().expect("child number"))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Starts `n` children running `test` on `database`, all released at the same moment.
fn spawn(test: &str, n: usize, database: &str) -> Vec<Child> {
    let start = now_ms() + 1500;
    (0..n)
        .map(|i| {
            Command::new(std::env::current_exe().unwrap())
                .args([test, "--exact", "--nocapture", "--test-threads=1"])
                .env(CHILD, i.to_string())
                .env(DATABASE, database)
                .env(START_AT, start.to_string())
                .stdout(Stdio::piped())
                .spawn()
                .expect("the test binary runs again as a child")
        })
        .collect()
}

/// Waits for the moment every child starts at.
fn wait_for_start() {
    let start: u64 = std::env::var(START_AT).unwrap().parse().unwrap();
    let now = now_ms();
    if start > now {
        std::thread::sleep(Duration::from_millis(start - now));
    }
}

/// Each child's report lines (`KEY value`), after it exited successfully.
fn collect(children: Vec<Child>) -> Vec<Vec<(String, String)>> {
    children
        .into_iter()
        .map(|mut c| {
            let out = BufReader::new(c.stdout.take().unwrap());
            let lines: Vec<(String, String)> = out.lines().map(Result::unwrap).filter_map(|l| fact(&l)).collect();
            let status = c.wait().unwrap();
            assert!(status.success(), "a child failed: {status}");
            lines
        })
        .collect()
}

/// The `KEY value` fact of a child's output line. The test harness prints the test's
/// name before the test's first line, so a fact is found anywhere in its line.
fn fact(line: &str) -> Option<(String, String)> {
    let at = line.find("@ ")?;
    let (key, value) = line[at + 2..].split_once(' ')?;
    Some((key.to_owned(), value.to_owned()))
}

fn report(key: &str, value: impl std::fmt::Display) {
    println!("@ {key} {value}");
}

fn options(pool: usize) -> PgOptions {
    PgOptions { pool_size: pool, ..PgOptions::default() }
}

/// Four processes open a database without Brine's schema at the same moment: every
/// open succeeds and the database ends with one schema at the current version.
#[test]
fn four_processes_migrate_a_fresh_database_at_once() {
    if child().is_some() {
        wait_for_start();
        runtime().block_on(async {
            let url = support::url_for(&std::env::var(DATABASE).unwrap());
            let jobs = brine_postgres::open_job_store(&url, options(2)).await.unwrap();
            let executions = brine_postgres::open_execution_store(&url, &support::node(), options(2)).await.unwrap();
            jobs.close().await.unwrap();
            executions.close().await.unwrap();
            report("OPENED", "yes");
        });
        return;
    }
    runtime().block_on(async {
        let database = support::empty_database().await;
        let reports = collect(spawn("four_processes_migrate_a_fresh_database_at_once", 4, &database));
        assert!(reports.iter().all(|r| r.iter().any(|(k, _)| k == "OPENED")), "every process opened: {reports:?}");
        let admin = support::connect(&database).await;
        let version: String =
            admin.query_one("SELECT value FROM compute.meta WHERE key = 'schema_version'", &[]).await.unwrap().get(0);
        assert_eq!(version, brine_postgres::schema::SCHEMA_VERSION.to_string());
        let tables: i64 = admin
            .query_one("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'compute'", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(tables, 14, "one schema, each table once");
        let logs: i64 = admin.query_one("SELECT count(*) FROM compute.logs", &[]).await.unwrap().get(0);
        assert_eq!(logs, 2, "one requester log and one compute log, however many processes opened them");
        drop(admin);
        support::drop_database(&database).await;
    });
}

const JOBS: usize = 10_000;

/// Four processes, each with its own pool and eight grabbing tasks, empty one queue of
/// 10 000 jobs: every job is grabbed exactly once.
#[test]
fn four_processes_grab_every_job_exactly_once() {
    if child().is_some() {
        wait_for_start();
        runtime().block_on(async {
            let url = support::url_for(&std::env::var(DATABASE).unwrap());
            let jobs = Arc::new(brine_postgres::open_job_store(&url, options(8)).await.unwrap());
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..8 {
                let jobs = Arc::clone(&jobs);
                tasks.spawn(async move {
                    let mut mine = Vec::new();
                    while let Some(job) = jobs.grab_next("work").await.unwrap() {
                        mine.push(job.id);
                    }
                    mine
                });
            }
            while let Some(ids) = tasks.join_next().await {
                for id in ids.unwrap() {
                    report("GRABBED", id);
                }
            }
            jobs.close().await.unwrap();
        });
        return;
    }
    runtime().block_on(async {
        let database = support::fresh_database().await;
        let url = support::url_for(&database);
        let jobs = Arc::new(brine_postgres::open_job_store(&url, options(16)).await.unwrap());
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..16 {
            let jobs = Arc::clone(&jobs);
            tasks.spawn(async move {
                for i in (t..JOBS).step_by(16) {
                    let id = JobId::new(format!("job-{i:05}")).unwrap();
                    jobs.enqueue("work", Job::new(id, format!("n{i}"))).await.unwrap();
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
        let reports = collect(spawn("four_processes_grab_every_job_exactly_once", 4, &database));
        let grabbed: Vec<&String> = reports.iter().flatten().filter(|(k, _)| k == "GRABBED").map(|(_, v)| v).collect();
        let distinct: BTreeSet<&String> = grabbed.iter().copied().collect();
        assert_eq!(grabbed.len(), JOBS, "as many grabs as jobs");
        assert_eq!(distinct.len(), JOBS, "no job grabbed twice");
        assert!(reports.iter().all(|r| !r.is_empty()), "every process grabbed some");
        assert!(jobs.grab_next("work").await.unwrap().is_none());
        assert!(jobs.check().await.unwrap().is_ok());
        jobs.close().await.unwrap();
        support::drop_database(&database).await;
    });
}

const EXECUTIONS: usize = 100;

/// Four processes of eight tasks race conditional updates on the same 100 executions:
/// no update is lost (each execution's revision is one plus the updates won on it, and
/// no revision is won twice).
#[test]
fn four_processes_race_conditional_updates_without_losing_one() {
    if let Some(me) = child() {
        wait_for_start();
        runtime().block_on(async {
            let url = support::url_for(&std::env::var(DATABASE).unwrap());
            let store =
                Arc::new(brine_postgres::open_execution_store(&url, &support::node(), options(8)).await.unwrap());
            let mut tasks = tokio::task::JoinSet::new();
            for task in 0..8 {
                let store = Arc::clone(&store);
                tasks.spawn(async move {
                    let mut wins = Vec::new();
                    for i in 0..60 {
                        let id = ExecutionId::new(format!("e{:03}", (me * 31 + task * 7 + i) % EXECUTIONS)).unwrap();
                        let seen = store.get_execution(&id).await.unwrap().revision;
                        let state = if i % 2 == 0 { ExecutionState::Running } else { ExecutionState::BidAccepted };
                        let request = UpdateExecutionRequest::to_state(id.clone(), state, "race").expect_revision(seen);
                        match store.update_execution_state(request).await {
                            Ok(e) => {
                                assert_eq!(e.revision, seen + 1);
                                wins.push(format!("{id}:{seen}"));
                            }
                            Err(StoreError::InvalidRevision { .. }) => {}
                            Err(other) => panic!("unexpected error: {other}"),
                        }
                    }
                    wins
                });
            }
            while let Some(wins) = tasks.join_next().await {
                for w in wins.unwrap() {
                    report("WON", w);
                }
            }
            store.close().await.unwrap();
        });
        return;
    }
    runtime().block_on(async {
        let database = support::fresh_database().await;
        let url = support::url_for(&database);
        let store = brine_postgres::open_execution_store(&url, &support::node(), options(8)).await.unwrap();
        let job = Job::new(JobId::new("j").unwrap(), "j");
        for i in 0..EXECUTIONS {
            store
                .create_execution(Execution::new(ExecutionId::new(format!("e{i:03}")).unwrap(), &job), vec![])
                .await
                .unwrap();
        }
        let reports = collect(spawn("four_processes_race_conditional_updates_without_losing_one", 4, &database));
        let wins: Vec<&String> = reports.iter().flatten().filter(|(k, _)| k == "WON").map(|(_, v)| v).collect();
        let distinct: BTreeSet<&String> = wins.iter().copied().collect();
        assert_eq!(distinct.len(), wins.len(), "no revision is won twice");
        let mut per_execution: HashMap<&str, u64> = HashMap::new();
        for w in &wins {
            *per_execution.entry(w.split_once(':').unwrap().0).or_default() += 1;
        }
        for i in 0..EXECUTIONS {
            let id = format!("e{i:03}");
            let e = store.get_execution(&ExecutionId::new(&id).unwrap()).await.unwrap();
            assert_eq!(e.revision, 1 + per_execution.get(id.as_str()).copied().unwrap_or(0), "{id}");
        }
        let head = store.event_log().head().await.unwrap();
        assert_eq!(head, (EXECUTIONS + wins.len()) as u64, "one log entry per create and per win");
        assert!(store.check().await.unwrap().is_ok());
        store.close().await.unwrap();
        support::drop_database(&database).await;
    });
}

const APPENDS: usize = 100;

/// Sixteen writers in four processes append to one log while a reader follows it: the
/// reader sees every sequence number once, in order, and each writer's entries in the
/// order it wrote them.
#[test]
fn sixteen_writers_across_processes_one_follower_no_gap_no_reorder() {
    if let Some(me) = child() {
        wait_for_start();
        runtime().block_on(async {
            let url = support::url_for(&std::env::var(DATABASE).unwrap());
            let store =
                Arc::new(brine_postgres::open_execution_store(&url, &support::node(), options(4)).await.unwrap());
            let mut tasks = tokio::task::JoinSet::new();
            for task in 0..4 {
                let log = store.event_log();
                tasks.spawn(async move {
                    for i in 0..APPENDS {
                        log.append("mark", &format!("{me}-{task}-{i}")).await.unwrap();
                    }
                });
            }
            while let Some(r) = tasks.join_next().await {
                r.unwrap();
            }
            store.close().await.unwrap();
            report("DONE", me);
        });
        return;
    }
    runtime().block_on(async {
        let database = support::fresh_database().await;
        let url = support::url_for(&database);
        let store = brine_postgres::open_execution_store(&url, &support::node(), options(4)).await.unwrap();
        let children = spawn("sixteen_writers_across_processes_one_follower_no_gap_no_reorder", 4, &database);
        let total = (16 * APPENDS) as u64;
        let log = store.event_log();
        let mut seen = Vec::new();
        let mut last_of: BTreeMap<String, usize> = BTreeMap::new();
        let mut after = 0;
        let deadline = Instant::now() + Duration::from_secs(120);
        while after < total {
            assert!(Instant::now() < deadline, "the follower stalled at {after}");
            log.wait_for(after).await.unwrap();
            let batch = log.get_events(Position::After(after), 100, &EventFilter::all()).await.unwrap();
            for entry in &batch.entries {
                seen.push(entry.seq);
                let LogObject::Custom { data, .. } = &entry.object else { panic!("only marks") };
                let (writer, i) = data.rsplit_once('-').unwrap();
                let i: usize = i.parse().unwrap();
                if let Some(previous) = last_of.insert(writer.to_owned(), i) {
                    assert!(i == previous + 1, "writer {writer}: {i} after {previous}");
                }
            }
            after = batch.next_after();
        }
        collect(children);
        assert_eq!(seen, (1..=total).collect::<Vec<_>>(), "every sequence number once, in order");
        assert_eq!(last_of.len(), 16);
        store.close().await.unwrap();
        support::drop_database(&database).await;
    });
}

/// A process writing creates is killed (SIGKILL) mid-run: every create it saw
/// acknowledged is there after, and the store is consistent.
#[test]
fn a_killed_writer_loses_no_acknowledged_write() {
    if child().is_some() {
        runtime().block_on(async {
            let url = support::url_for(&std::env::var(DATABASE).unwrap());
            let store =
                Arc::new(brine_postgres::open_execution_store(&url, &support::node(), options(8)).await.unwrap());
            let job = Job::new(JobId::new("j").unwrap(), "j");
            let mut tasks = tokio::task::JoinSet::new();
            for task in 0..8 {
                let (store, job) = (Arc::clone(&store), job.clone());
                tasks.spawn(async move {
                    for i in 0.. {
                        let id = ExecutionId::new(format!("e{task}-{i}")).unwrap();
                        store.create_execution(Execution::new(id.clone(), &job), vec![]).await.unwrap();
                        let next = UpdateExecutionRequest::to_state(id.clone(), ExecutionState::Running, "run");
                        store.update_execution_state(next).await.unwrap();
                        report("ACKED", id);
                    }
                });
            }
            while let Some(r) = tasks.join_next().await {
                r.unwrap();
            }
        });
        return;
    }
    runtime().block_on(async {
        let database = support::fresh_database().await;
        let mut children = spawn("a_killed_writer_loses_no_acknowledged_write", 1, &database);
        let mut child = children.pop().unwrap();
        let mut acked = Vec::new();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        while acked.len() < 300 {
            let line = lines.next().expect("the child reports").unwrap();
            if let Some((key, id)) = fact(&line) {
                assert_eq!(key, "ACKED");
                acked.push(id);
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let url = support::url_for(&database);
        let store = brine_postgres::open_execution_store(&url, &support::node(), options(4)).await.unwrap();
        for id in &acked {
            let e = store.get_execution(&ExecutionId::new(id).unwrap()).await.unwrap();
            assert_eq!((e.state(), e.revision), (ExecutionState::Running, 2), "{id}");
        }
        let report = store.check().await.unwrap();
        assert!(report.is_ok(), "{:?}", report.problems);
        let head = store.event_log().head().await.unwrap();
        let stored: u64 = {
            let mut n = 0;
            for state in ExecutionState::ALL {
                n += store.get_execution_count(state).await.unwrap();
            }
            n
        };
        assert!(head >= 2 * acked.len() as u64 && stored >= acked.len() as u64);
        store.close().await.unwrap();
        support::drop_database(&database).await;
    });
}
