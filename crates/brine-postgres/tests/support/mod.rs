//! A throwaway database per test on the server `BRINE_TEST_DATABASE_URL` names
//! (`cargo xtask pg start` prints one; `cargo xtask ci` runs one). The schema is
//! migrated once into a template database; each test gets its own copy with
//! `CREATE DATABASE … TEMPLATE`. Without the variable the tests fail, saying so: they
//! are never skipped.

#![allow(dead_code)]

use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use brine_postgres::{PgExecutionStore, PgJobStore, PgOptions};
use brine_store::model::NodeId;
use brine_store::Clock;
use tokio::sync::OnceCell;
use tokio_postgres::config::Host;
use tokio_postgres::NoTls;

/// The variable naming the test server.
pub const URL_VAR: &str = "BRINE_TEST_DATABASE_URL";

/// The server's URL; panics with what to do when it is not set.
pub fn server_url() -> String {
    std::env::var(URL_VAR).unwrap_or_else(|_| {
        panic!(
            "{URL_VAR} is not set: the PostgreSQL tests need a server. Run `cargo xtask pg start` and set \
             {URL_VAR} to the URL it prints, or run the whole suite with `cargo xtask ci`, which starts one."
        )
    })
}

fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// A `key=value` connection string for database `dbname` on the test server.
pub fn url_for(dbname: &str) -> String {
    let base = tokio_postgres::Config::from_str(&server_url()).expect("the test server URL parses");
    let mut parts = Vec::new();
    for host in base.get_hosts() {
        match host {
            Host::Tcp(h) => parts.push(format!("host={}", quote(h))),
            Host::Unix(p) => parts.push(format!("host={}", quote(&p.display().to_string()))),
        }
    }
    if let Some(port) = base.get_ports().first() {
        parts.push(format!("port={port}"));
    }
    if let Some(user) = base.get_user() {
        parts.push(format!("user={}", quote(user)));
    }
    if let Some(password) = base.get_password() {
        parts.push(format!("password={}", quote(&String::from_utf8_lossy(password))));
    }
    parts.push(format!("dbname={}", quote(dbname)));
    parts.join(" ")
}

/// A connection to the server's maintenance database.
pub async fn admin() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&server_url(), NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test server at {URL_VAR}: {e}"));
    tokio::spawn(connection);
    client
}

const TEMPLATE: &str = "brine_template";

static TEMPLATE_READY: OnceCell<()> = OnceCell::const_new();

/// Makes the migrated template once per test process (and once per server: test
/// processes running at once take turns under an advisory lock).
async fn template() {
    TEMPLATE_READY
        .get_or_init(|| async {
            let admin = admin().await;
            admin.execute("SELECT pg_advisory_lock(4242)", &[]).await.unwrap();
            let name = format!("{TEMPLATE}_v{}", brine_postgres::schema::SCHEMA_VERSION);
            let exists = admin.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name]).await.unwrap();
            if exists.is_none() {
                let building = format!("{name}_building_{}", std::process::id());
                admin.batch_execute(&format!("DROP DATABASE IF EXISTS {building}")).await.unwrap();
                admin.batch_execute(&format!("CREATE DATABASE {building}")).await.unwrap();
                let store = brine_postgres::open_job_store(&url_for(&building), PgOptions::default()).await.unwrap();
                brine_store::JobStore::close(&store).await.unwrap();
                drop(store);
                retry(&admin, &format!("ALTER DATABASE {building} RENAME TO {name}")).await;
            }
            admin.execute("SELECT pg_advisory_unlock(4242)", &[]).await.unwrap();
        })
        .await;
}

/// Runs `sql`, retrying while the database is still in use by connections closing.
async fn retry(admin: &tokio_postgres::Client, sql: &str) {
    for attempt in 0.. {
        match admin.batch_execute(sql).await {
            Ok(()) => return,
            Err(e) if attempt < 100 && e.to_string().contains("being accessed by other users") => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("{sql}: {e}"),
        }
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A new database with Brine's schema, for one test; returns its name.
pub async fn fresh_database() -> String {
    template().await;
    let name = format!("brine_t{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let admin = admin().await;
    let template = format!("{TEMPLATE}_v{}", brine_postgres::schema::SCHEMA_VERSION);
    retry(&admin, &format!("CREATE DATABASE {name} TEMPLATE {template}")).await;
    name
}

/// Drops a test's database (its stores must be closed).
pub async fn drop_database(name: &str) {
    let admin = admin().await;
    let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
}

/// The node every test's execution store belongs to.
pub fn node() -> NodeId {
    NodeId::new("node-1").unwrap()
}

/// Opens both stores on `database`.
pub async fn open(database: &str, clock: Arc<dyn Clock>) -> (PgExecutionStore, PgJobStore) {
    let options = PgOptions { pool_size: 8, clock };
    let url = url_for(database);
    let executions = brine_postgres::open_execution_store(&url, &node(), options.clone()).await.unwrap();
    let jobs = brine_postgres::open_job_store(&url, options).await.unwrap();
    (executions, jobs)
}
