//! Test databases on a real server, for the tests of every crate that runs a suite on
//! this backend (cargo feature `testing`).
//!
//! The server is the one `BRINE_TEST_DATABASE_URL` names (`cargo xtask pg start` prints
//! one; `cargo xtask ci` runs one). The schema is migrated once into a template
//! database; each test gets its own copy with `CREATE DATABASE … TEMPLATE`. Without the
//! variable a test fails, saying what to do: PostgreSQL tests are never skipped.
//! Failures here are test failures, so these helpers panic with a message.

use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

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

/// A database name for DDL, which takes no parameters: only names this module makes
/// (`[a-z0-9_]`) are ever put into a statement.
fn ident(name: &str) -> &str {
    assert!(
        !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
        "not a test database name: {name:?}"
    );
    name
}

static TEMPLATE_READY: OnceCell<()> = OnceCell::const_new();

/// Makes the migrated template once per test process (and once per server: test
/// processes running at once take turns under an advisory lock).
async fn template() {
    TEMPLATE_READY
        .get_or_init(|| async {
            let admin = admin().await;
            admin.execute("SELECT pg_advisory_lock(4242)", &[]).await.unwrap();
            let name = format!("{TEMPLATE}_v{}", crate::schema::SCHEMA_VERSION);
            let exists = admin.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name]).await.unwrap();
            if exists.is_none() {
                let building = format!("{name}_building_{}", std::process::id());
                admin.batch_execute(&format!("DROP DATABASE IF EXISTS {}", ident(&building))).await.unwrap();
                admin.batch_execute(&format!("CREATE DATABASE {}", ident(&building))).await.unwrap();
                let store = crate::open_job_store(&url_for(&building), crate::PgOptions::default()).await.unwrap();
                brine_store::JobStore::close(&store).await.unwrap();
                drop(store);
                retry(&admin, &format!("ALTER DATABASE {} RENAME TO {}", ident(&building), ident(&name))).await;
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
    let template = format!("{TEMPLATE}_v{}", crate::schema::SCHEMA_VERSION);
    retry(&admin, &format!("CREATE DATABASE {} TEMPLATE {}", ident(&name), ident(&template))).await;
    name
}

/// Drops a test's database (its stores must be closed).
pub async fn drop_database(name: &str) {
    let admin = admin().await;
    let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(name))).await;
}

/// A new database without Brine's schema (PostgreSQL's own template).
pub async fn empty_database() -> String {
    let name = format!("brine_e{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    admin().await.batch_execute(&format!("CREATE DATABASE {}", ident(&name))).await.unwrap();
    name
}

/// A plain connection to `database` on the test server.
pub async fn connect(database: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&url_for(database), NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// Drops a test's database from outside any async context (a `Drop` impl): a thread of
/// its own runs the drop, terminating whatever connections are left.
pub fn drop_database_now(name: &str) {
    let name = name.to_owned();
    let dropped = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
        if let Ok(rt) = rt {
            rt.block_on(drop_database(&name));
        }
    });
    let _ = dropped.join();
}
