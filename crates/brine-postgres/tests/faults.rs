//! What goes wrong with a real server: refused logins, missing databases and rights, a
//! newer schema, statement timeouts, connections killed under a listener or a
//! transaction, and ids that would break SQL built from text.

mod support;

use std::sync::Arc;
use std::time::Duration;

use brine_postgres::{OpenError, PgOptions};
use brine_store::model::{Execution, ExecutionId, ExecutionState, Job, JobId};
use brine_store::{EventFilter, ExecutionStore, JobQuery, JobStore, Position, UpdateExecutionRequest};
use support::{eid, job, runtime};

/// Unknown role, missing database, no right to create the schema, a schema newer than
/// this code: each is one `OpenError` naming the database and what to do.
#[test]
fn opening_fails_with_errors_that_say_what_to_do() {
    runtime().block_on(async {
        let unknown_role = format!("{} user=no_such_role", support::url_for("postgres"));
        let err = brine_postgres::open_job_store(&unknown_role, PgOptions::default()).await.err().unwrap();
        assert!(matches!(err, OpenError::Authentication { .. }), "{err}");
        assert!(err.to_string().contains("refused the login") && err.to_string().contains("no_such_role"), "{err}");

        let err =
            brine_postgres::open_job_store(&support::url_for("no_such_db"), PgOptions::default()).await.err().unwrap();
        assert!(matches!(err, OpenError::NoDatabase { .. }), "{err}");
        assert!(err.to_string().contains("database no_such_db does not exist"), "{err}");
        assert!(err.to_string().contains("CREATE DATABASE no_such_db"), "{err}");

        // A role that may log in but not create a schema.
        let database = support::empty_database().await;
        let admin = support::admin().await;
        admin.batch_execute("DROP ROLE IF EXISTS brine_limited; CREATE ROLE brine_limited LOGIN").await.unwrap();
        let limited = format!("{} user=brine_limited", support::url_for(&database));
        let err = brine_postgres::open_job_store(&limited, PgOptions::default()).await.err().unwrap();
        assert!(matches!(err, OpenError::PermissionDenied { .. }), "{err}");
        assert!(err.to_string().contains(&format!("schema compute in database {database}")), "{err}");
        assert!(err.to_string().contains("GRANT ALL ON DATABASE"), "{err}");
        support::drop_database(&database).await;

        // A database migrated by newer code.
        let database = support::fresh_database().await;
        let client = support::connect(&database).await;
        client
            .batch_execute("UPDATE compute.meta SET value = '99' WHERE key IN ('schema_version', 'min_code_version')")
            .await
            .unwrap();
        drop(client);
        let err =
            brine_postgres::open_job_store(&support::url_for(&database), PgOptions::default()).await.err().unwrap();
        assert!(matches!(err, OpenError::NewerSchema { found: 99, supported: 1, .. }), "{err}");
        assert!(err.to_string().contains("schema version 99, newer than this build of Brine supports (1)"), "{err}");
        support::drop_database(&database).await;
    });
}

/// A statement the server cancels (its `statement_timeout`) is an error saying so, and
/// the store goes on working.
#[test]
fn a_statement_timeout_is_reported_and_the_store_goes_on() {
    runtime().block_on(async {
        let database = support::fresh_database().await;
        let url = format!("{} options='-c statement_timeout=300'", support::url_for(&database));
        let store = brine_postgres::open_execution_store(&url, &support::node(), PgOptions::default()).await.unwrap();
        store.create_execution(Execution::new(eid("e1"), &job("j")), vec![]).await.unwrap();
        // Another session holds the row.
        let mut holder = support::connect(&database).await;
        let tx = holder.transaction().await.unwrap();
        tx.execute("SELECT 1 FROM compute.executions WHERE id = 'e1' FOR UPDATE", &[]).await.unwrap();
        let err = store
            .update_execution_state(UpdateExecutionRequest::to_state(eid("e1"), ExecutionState::Running, "go"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("statement was cancelled"), "{err}");
        tx.rollback().await.unwrap();
        let e = store
            .update_execution_state(UpdateExecutionRequest::to_state(eid("e1"), ExecutionState::Running, "go"))
            .await
            .unwrap();
        assert_eq!(e.revision, 2);
        assert!(store.check().await.unwrap().is_ok());
        store.close().await.unwrap();
        support::drop_database(&database).await;
    });
}

/// The listener's connection is killed (`pg_terminate_backend`) while a waiter waits:
/// the waiter is still woken by the next commit, and a reader following the log misses
/// nothing.
#[test]
fn a_killed_listener_never_makes_a_waiter_skip_or_stall() {
    runtime().block_on(async {
        let database = support::fresh_database().await;
        let (store, jobs) = support::open(&database, Arc::new(brine_store::SystemClock)).await;
        let store = Arc::new(store);
        let admin = support::connect(&database).await;
        for round in 0..3u64 {
            let log = store.event_log();
            let after = log.head().await.unwrap();
            let waiter = tokio::spawn(async move { log.wait_for(after).await });
            // Both stores' listeners are connected (again, after the previous round).
            let listening =
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'";
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while admin.query_one(listening, &[]).await.unwrap().get::<_, i64>(0) < 2 {
                assert!(std::time::Instant::now() < deadline, "round {round}: the listeners reconnect");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let killed: i64 = admin
                .query_one(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                     WHERE datname = current_database() AND query LIKE 'LISTEN%'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            assert!(killed >= 1, "round {round}: a listener connection was found and killed");
            store.create_execution(Execution::new(eid(&format!("e{round}")), &job("j")), vec![]).await.unwrap();
            let woke = tokio::time::timeout(Duration::from_secs(10), waiter).await.expect("the waiter is woken");
            assert_eq!(woke.unwrap().unwrap(), after + 1);
        }
        let batch = store.event_log().get_events(Position::TrimHorizon, 100, &EventFilter::all()).await.unwrap();
        assert_eq!(batch.entries.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        support::close(&database, &store, &jobs).await;
    });
}

/// The connection of an open transaction is terminated between two of its writes:
/// nothing of it is written, and the store takes writes again.
#[test]
fn a_connection_lost_mid_transaction_leaves_nothing_half_written() {
    runtime().block_on(async {
        let database = support::fresh_database().await;
        let (store, jobs) = support::open(&database, Arc::new(brine_store::SystemClock)).await;
        store.create_execution(Execution::new(eid("e0"), &job("j")), vec![]).await.unwrap();
        let mut tx = store.begin_tx().await.unwrap();
        tx.create_execution(Execution::new(eid("e1"), &job("j")), vec![]).await.unwrap();
        tx.update_execution_state(UpdateExecutionRequest::to_state(eid("e0"), ExecutionState::Running, "go"))
            .await
            .unwrap();
        let admin = support::connect(&database).await;
        let killed: i64 = admin
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(killed, 1, "the transaction's connection");
        assert!(tx.create_execution(Execution::new(eid("e2"), &job("j")), vec![]).await.is_err());
        assert!(tx.commit().await.is_err(), "a transaction whose connection died cannot commit");
        assert!(store.get_execution(&eid("e1")).await.unwrap_err().is_not_found());
        assert_eq!(store.get_execution(&eid("e0")).await.unwrap().revision, 1);
        assert_eq!(store.event_log().head().await.unwrap(), 1);
        store.create_execution(Execution::new(eid("e3"), &job("j")), vec![]).await.unwrap();
        assert_eq!(store.get_execution_count(ExecutionState::Created).await.unwrap(), 2);
        assert!(store.check().await.unwrap().is_ok());
        support::close(&database, &store, &jobs).await;
    });
}

/// Ids and names holding quotes, backslashes, semicolons and SQL comment marks are data,
/// never SQL: every operation stores and finds them as they are.
#[test]
fn ids_with_quotes_backslashes_and_semicolons_are_only_data() {
    runtime().block_on(async {
        let database = support::fresh_database().await;
        let (store, jobs) = support::open(&database, Arc::new(brine_store::SystemClock)).await;
        let nasty = ["it's", "a\\b", "x;DROP_TABLE_compute.jobs;--", "q\"uote", "%_like", "';--"];
        for (i, text) in nasty.iter().enumerate() {
            let id = JobId::new(*text).unwrap();
            let mut j = Job::new(id.clone(), format!("name{text}"));
            j.labels.insert("k".into(), format!("v{i}"));
            jobs.create_job(j).await.unwrap();
            assert_eq!(jobs.get_job(&id).await.unwrap().id, id);
            assert_eq!(jobs.get_job_by_name("default", &format!("name{text}")).await.unwrap().id, id);
            assert_eq!(jobs.get_job_by_prefix(text).await.unwrap().id, id);
            let e = store.create_execution(Execution::new(ExecutionId::new(*text).unwrap(), &job(text)), vec![]).await;
            assert_eq!(e.unwrap().job_id, JobId::new(*text).unwrap());
            assert_eq!(store.get_executions(&JobId::new(*text).unwrap()).await.unwrap().len(), 1);
            store.checkpoint(text, 0).await.unwrap();
        }
        let page = jobs.list_jobs(&JobQuery { limit: 100, ..JobQuery::default() }).await.unwrap();
        assert_eq!(page.jobs.len(), nasty.len());
        assert_eq!(store.event_log().list_checkpoints().await.unwrap().len(), nasty.len());
        for text in nasty {
            jobs.delete_job(&JobId::new(text).unwrap()).await.unwrap();
        }
        assert!(jobs.check().await.unwrap().is_ok());
        assert!(store.check().await.unwrap().is_ok());
        support::close(&database, &store, &jobs).await;
    });
}

/// Sixteen tasks (sixteen connections) create the same job, the same name under other
/// ids, and the same evaluation at once: exactly one of each wins, every other gets
/// `AlreadyExists`, and nothing is overwritten.
#[test]
fn racing_creates_of_one_id_or_name_have_one_winner() {
    runtime().block_on(async {
        let database = support::fresh_database().await;
        let url = support::url_for(&database);
        let options = PgOptions { pool_size: 16, ..PgOptions::default() };
        let jobs = Arc::new(brine_postgres::open_job_store(&url, options).await.unwrap());
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..16 {
            let jobs = Arc::clone(&jobs);
            tasks.spawn(async move {
                let mut same_id = Job::new(JobId::new("same").unwrap(), format!("by-{t}"));
                same_id.config = format!("writer {t}");
                let by_id = jobs.create_job(same_id).await;
                let same_name = Job::new(JobId::new(format!("other-{t}")).unwrap(), "shared-name");
                let by_name = jobs.create_job(same_name).await;
                (t, by_id.map(|j| j.config), by_name.map(|j| j.id))
            });
        }
        let (mut id_winners, mut name_winners) = (Vec::new(), Vec::new());
        while let Some(r) = tasks.join_next().await {
            let (t, by_id, by_name) = r.unwrap();
            match by_id {
                Ok(config) => id_winners.push((t, config)),
                Err(e) => assert!(e.is_already_exists(), "{e}"),
            }
            match by_name {
                Ok(id) => name_winners.push(id),
                Err(e) => assert!(e.is_already_exists(), "{e}"),
            }
        }
        assert_eq!(id_winners.len(), 1, "one create of the id wins");
        assert_eq!(name_winners.len(), 1, "one create of the name wins");
        let stored = jobs.get_job(&JobId::new("same").unwrap()).await.unwrap();
        assert_eq!(stored.config, id_winners[0].1, "the winner's job is the one stored");
        assert_eq!(stored.revision, 1);
        assert_eq!(jobs.get_job_by_name("default", "shared-name").await.unwrap().id, name_winners[0]);
        assert!(jobs.check().await.unwrap().is_ok());
        jobs.close().await.unwrap();
        support::drop_database(&database).await;
    });
}
