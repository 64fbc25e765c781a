//! The shared core of a PostgreSQL store: the pool, one write (a database transaction
//! that appends its event-log entries last), the commit notification and its listener.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::Duration;

use brine_store::model::{LogObject, Operation, Timestamp};
use brine_store::{codec, Clock, Result, StoreError};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio_postgres::config::Host;
use tokio_postgres::types::ToSql;
use tokio_postgres::{AsyncMessage, NoTls, Row};

use crate::error::{pg_error, OpenError};
use crate::group::{self, BoxFuture, Committer};
use crate::schema::{self, LOCK_CLASS};

/// The channel every store notifies after a commit that appended to its log; the
/// payload is `<head> <log name>`.
pub(crate) const CHANNEL: &str = "brine_log";

/// The notifier's statement: notifies [`CHANNEL`] with a payload.
const NOTIFY: &str = "SELECT pg_notify($1, $2)";

/// The listener's statement (LISTEN takes no parameters): `LISTEN` [`CHANNEL`].
const LISTEN: &str = "LISTEN brine_log";

/// How often a waiter re-reads the head when no notification arrives: the fallback
/// when the listener's connection is down.
const POLL: Duration = Duration::from_millis(500);

/// The shortest time between two notifications of one store: under load, one
/// notification carries every commit of the interval. Waiters in this process learn of a
/// commit at once; other processes' watchers at most this much later.
const NOTIFY_INTERVAL: Duration = Duration::from_millis(10);

/// How long the listener waits before reconnecting after its connection dropped.
const RECONNECT: Duration = Duration::from_millis(200);

/// How a store is opened.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Most connections the store's pool opens (the listener has one more).
    pub pool_size: usize,
    /// Where timestamps come from.
    pub clock: Arc<dyn Clock>,
    /// Open for inspection only: every session is read-only on the server
    /// (`default_transaction_read_only`), the schema is checked but never created or
    /// migrated, and a store whose event log is not registered is refused instead of
    /// created. Writes fail.
    pub read_only: bool,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions { pool_size: 16, clock: Arc::new(brine_store::SystemClock), read_only: false }
    }
}

/// Who holds an explicit transaction: the tokio task, or the thread when it was begun
/// outside any task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holder {
    Task(tokio::task::Id),
    Thread(std::thread::ThreadId),
}

impl Holder {
    fn current() -> Holder {
        match tokio::task::try_id() {
            Some(id) => Holder::Task(id),
            None => Holder::Thread(std::thread::current().id()),
        }
    }
}

/// Whether a write shares the store with other writers or excludes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// A plain write: runs beside other plain writes (row locks order them).
    Shared,
    /// An explicit transaction (`begin_tx`): other writers of the store wait.
    Exclusive,
}

/// What the background tasks share with the store.
pub(crate) struct Shared {
    pub(crate) pool: Pool,
    /// The log's name (`requester`, `compute/<node>`).
    pub(crate) log: String,
    /// The newest head known to be committed; waiters watch it.
    pub(crate) head: watch::Sender<u64>,
    /// Wakes the notifier after a commit.
    pub(crate) notify: Notify,
    closed: AtomicBool,
}

impl Shared {
    /// Publishes a committed head (never moves backwards).
    pub(crate) fn publish(&self, head: u64) {
        self.head.send_if_modified(|h| {
            let moved = head > *h;
            if moved {
                *h = head;
            }
            moved
        });
    }

    /// Reads the committed head from the database and publishes it.
    pub(crate) async fn refresh(&self) -> Result<u64> {
        let conn = get(&self.pool).await?;
        let row = conn
            .query_one("SELECT last_seq FROM compute.logs WHERE name = $1", &[&self.log])
            .await
            .map_err(|e| pg_error("read the event log head", e))?;
        let head = u64_of(row.get::<_, i64>(0));
        self.publish(head);
        Ok(head)
    }
}

/// A store's core: the pool, its log, the clock and the tasks that notify and listen.
pub(crate) struct Db {
    pub(crate) shared: Arc<Shared>,
    pub(crate) clock: Arc<dyn Clock>,
    /// The advisory-lock key of this store's writers (within [`LOCK_CLASS`]).
    lock_key: i32,
    tx_holder: Arc<Mutex<Option<Holder>>>,
    pub(crate) store_id: String,
    /// The compute node whose rows an execution store owns (empty for a job store).
    node: String,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Where plain writes go to be committed in groups ([`crate::group`]).
    committer: Committer,
}

fn target(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", config.get_dbname().unwrap_or("(default database)"))
}

/// Classifies a failure to connect.
pub(crate) fn connect_error(config: &tokio_postgres::Config, e: tokio_postgres::Error) -> OpenError {
    use tokio_postgres::error::SqlState;
    let target = target(config);
    match e.code() {
        Some(c) if *c == SqlState::INVALID_PASSWORD || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION => {
            OpenError::Authentication { target, reason: e.as_db_error().map_or(e.to_string(), |d| d.message().into()) }
        }
        Some(c) if *c == SqlState::INVALID_CATALOG_NAME => OpenError::NoDatabase {
            database: config.get_dbname().unwrap_or("").to_owned(),
            target: target.rsplit_once('/').map_or(target.clone(), |(h, _)| h.to_owned()),
        },
        _ => {
            let reason = std::error::Error::source(&e).map_or(e.to_string(), |s| s.to_string());
            OpenError::Unreachable { target, reason }
        }
    }
}

/// A pooled connection, mapping pool failures to store errors.
pub(crate) async fn get(pool: &Pool) -> Result<Object> {
    match pool.get().await {
        Ok(conn) => Ok(conn),
        Err(PoolError::Closed) => Err(StoreError::Closed),
        Err(PoolError::Backend(e)) => Err(pg_error("connect to PostgreSQL", e)),
        Err(e) => Err(StoreError::backend("get a PostgreSQL connection", e)),
    }
}

/// A stable 32-bit key of `name` (FNV-1a), for advisory locks.
fn lock_key(name: &str) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    i32::from_ne_bytes(h.to_ne_bytes())
}

impl Db {
    /// Connects, migrates the schema, registers the log `log` and starts the notifier
    /// and the listener.
    pub(crate) async fn open(
        url: &str,
        log: String,
        node: String,
        options: &PgOptions,
    ) -> std::result::Result<Arc<Db>, OpenError> {
        let mut config =
            tokio_postgres::Config::from_str(url).map_err(|e| OpenError::BadUrl { reason: e.to_string() })?;
        if options.read_only {
            // The server itself refuses every write of these sessions.
            let given = config.get_options().unwrap_or_default().to_owned();
            config.options(format!("{given} -c default_transaction_read_only=on").trim_start());
        }
        let database = config.get_dbname().or(config.get_user()).unwrap_or("postgres").to_owned();
        let manager =
            Manager::from_config(config.clone(), NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(Duration::from_secs(10)))
            .build()
            .map_err(|e| OpenError::Store(StoreError::backend("build the connection pool", e)))?;
        let mut first = match pool.get().await {
            Ok(c) => c,
            Err(PoolError::Backend(e)) => return Err(connect_error(&config, e)),
            Err(PoolError::Timeout(_)) => {
                return Err(OpenError::Unreachable { target: target(&config), reason: "timed out".into() })
            }
            Err(e) => return Err(OpenError::Store(StoreError::backend("get a PostgreSQL connection", e))),
        };
        if options.read_only {
            schema::check_version(&first, &database).await?;
        } else {
            schema::migrate(&mut first, &database).await?;
            let new_id = brine_store::new_store_id();
            first
                .execute(
                    "INSERT INTO compute.logs (name, store_id) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                    &[&log, &new_id],
                )
                .await
                .map_err(|e| OpenError::Store(pg_error("register the event log", e)))?;
        }
        let row = first
            .query_opt("SELECT store_id, last_seq FROM compute.logs WHERE name = $1", &[&log])
            .await
            .map_err(|e| OpenError::Store(pg_error("read the event log", e)))?;
        let Some(row) = row else {
            return Err(OpenError::NoStores { database, reason: format!("no event log {log}") });
        };
        let (store_id, head): (String, i64) = (row.get(0), row.get(1));
        if !node.is_empty() && !options.read_only {
            first
                .execute(
                    "INSERT INTO compute.execution_counts (node, state, count) \
                     SELECT $1, s::smallint, 0 FROM generate_series(0, 8) AS s ON CONFLICT (node, state) DO NOTHING",
                    &[&node],
                )
                .await
                .map_err(|e| OpenError::Store(pg_error("create the state counters", e)))?;
        }
        drop(first);
        let shared = Arc::new(Shared {
            pool,
            head: watch::channel(u64_of(head)).0,
            notify: Notify::new(),
            closed: AtomicBool::new(false),
            log: log.clone(),
        });
        let tasks =
            vec![tokio::spawn(notifier(Arc::clone(&shared))), tokio::spawn(listener(Arc::clone(&shared), config))];
        let (committer, queue) = Committer::new();
        let db = Arc::new(Db {
            shared,
            clock: Arc::clone(&options.clock),
            lock_key: lock_key(&log),
            tx_holder: Arc::new(Mutex::new(None)),
            store_id,
            node,
            tasks: Mutex::new(tasks),
            committer,
        });
        for _ in 0..group::COMMITTERS {
            let task = tokio::spawn(group::run(Arc::downgrade(&db), queue.clone()));
            db.tasks.lock().unwrap_or_else(PoisonError::into_inner).push(task);
        }
        Ok(db)
    }

    /// Every compute node that has opened an execution store in the database.
    pub(crate) async fn compute_nodes(&self) -> Result<Vec<String>> {
        let conn = self.read().await?;
        let rows = conn
            .query("SELECT DISTINCT node FROM compute.execution_counts ORDER BY node", &[])
            .await
            .map_err(|e| pg_error("list the compute nodes", e))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// The compute node whose rows an execution store owns.
    pub(crate) fn node(&self) -> &str {
        &self.node
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        Ok(())
    }

    /// A connection for reading.
    pub(crate) async fn read(&self) -> Result<Object> {
        self.check_open()?;
        get(&self.shared.pool).await
    }

    /// A plain write from the task that holds this store's explicit transaction would
    /// wait for itself: it fails with `TransactionHeld`.
    fn check_not_holder(&self) -> Result<()> {
        if *self.tx_holder.lock().unwrap_or_else(PoisonError::into_inner) == Some(Holder::current()) {
            return Err(StoreError::TransactionHeld);
        }
        Ok(())
    }

    /// Runs a plain write in the store's next commit group ([`crate::group`]): `work`
    /// runs (perhaps more than once, each time from the start) inside a savepoint of
    /// the group's transaction, and its output comes back once the group committed.
    pub(crate) async fn write<T, F>(&self, work: F) -> Result<T>
    where
        F: for<'a> Fn(&'a mut Write, Timestamp) -> BoxFuture<'a, Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        self.write_as(None, work).await
    }

    /// As [`Db::write`]; `grabs`: the queue the write grabs from, so its group locks a
    /// queued job for each of its grabs from the queue with one statement
    /// ([`Write::lock_queued`]).
    pub(crate) async fn write_as<T, F>(&self, grabs: Option<String>, work: F) -> Result<T>
    where
        F: for<'a> Fn(&'a mut Write, Timestamp) -> BoxFuture<'a, Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        self.check_open()?;
        self.check_not_holder()?;
        self.committer.write(grabs, work).await
    }

    /// Starts a commit group: a transaction holding the store's advisory lock shared,
    /// with its row-lock waits short (see [`crate::group`]), in one round trip.
    pub(crate) async fn begin_group(self: &Arc<Self>) -> Result<Write> {
        self.begin_with(Access::Shared, Some("SET LOCAL lock_timeout = '20ms'")).await
    }

    /// Starts a write: a database transaction holding the store's advisory lock,
    /// shared for a plain write, exclusive for an explicit transaction.
    pub(crate) async fn begin(self: &Arc<Self>, access: Access) -> Result<Write> {
        if access == Access::Shared {
            self.check_not_holder()?;
        }
        self.begin_with(access, None).await
    }

    /// `BEGIN`, the advisory lock and `then`, sent together (the client pipelines
    /// requests polled together, in the order they are first polled).
    async fn begin_with(self: &Arc<Self>, access: Access, then: Option<&str>) -> Result<Write> {
        self.check_open()?;
        let conn = get(&self.shared.pool).await?;
        let mut write = Write::new(conn, Arc::clone(self));
        let lock = match access {
            Access::Shared => "SELECT pg_advisory_xact_lock_shared($1, $2)",
            Access::Exclusive => "SELECT pg_advisory_xact_lock($1, $2)",
        };
        let client = write.conn()?;
        let lock = client.prepare_cached(lock).await.map_err(|e| statement_error(lock, e))?;
        let key: [&(dyn ToSql + Sync); 2] = [&LOCK_CLASS, &self.lock_key];
        let (begun, locked, then) = tokio::join!(client.batch_execute("BEGIN"), client.execute(&lock, &key), async {
            match then {
                Some(sql) => client.batch_execute(sql).await,
                None => Ok(()),
            }
        });
        begun.map_err(|e| pg_error("begin a transaction", e))?;
        locked.map_err(|e| pg_error("take the store's advisory lock", e))?;
        then.map_err(|e| pg_error("begin a transaction", e))?;
        if access == Access::Exclusive {
            *self.tx_holder.lock().unwrap_or_else(PoisonError::into_inner) = Some(Holder::current());
            write.holder = true;
        }
        self.check_open()?;
        Ok(write)
    }

    /// Starts a read of one consistent state: a read-only, repeatable-read transaction.
    /// End it with [`Write::commit`]; dropped, its connection is discarded.
    pub(crate) async fn snapshot(self: &Arc<Self>) -> Result<Write> {
        self.check_open()?;
        let conn = get(&self.shared.pool).await?;
        let write = Write::new(conn, Arc::clone(self));
        write
            .conn()?
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(|e| pg_error("begin a snapshot", e))?;
        Ok(write)
    }

    /// Closes the store: later operations fail with `Closed`, waiters are released, the
    /// background tasks stop and the pool's connections close.
    pub(crate) fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.head.send_modify(|_| {});
        for task in self.tasks.lock().unwrap_or_else(PoisonError::into_inner).drain(..) {
            task.abort();
        }
        self.shared.pool.close();
    }

    /// Resolves once the committed head is above `after`; returns it.
    pub(crate) async fn wait_for(&self, after: u64) -> Result<u64> {
        let mut rx = self.shared.head.subscribe();
        self.check_open()?;
        let known = *rx.borrow_and_update();
        if known > after {
            return Ok(known);
        }
        // Another process may have committed since the last notification.
        let head = self.shared.refresh().await?;
        if head > after {
            return Ok(head);
        }
        loop {
            self.check_open()?;
            let head = *rx.borrow_and_update();
            if head > after {
                return Ok(head);
            }
            if tokio::time::timeout(POLL, rx.changed()).await.is_err() {
                // No notification: the listener may be reconnecting; look for ourselves.
                self.shared.refresh().await?;
            }
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        for task in self.tasks.lock().unwrap_or_else(PoisonError::into_inner).drain(..) {
            task.abort();
        }
    }
}

/// Sends the commit notification: one `pg_notify` for any number of commits since the
/// last one, outside the writing transactions (a NOTIFY inside a transaction takes a
/// global lock at its commit).
///
/// The payload is `<head> <log>`: the committed head of the log, so a listener needs no
/// read to learn it.
async fn notifier(shared: Arc<Shared>) {
    loop {
        shared.notify.notified().await;
        let sent = async {
            let conn = get(&shared.pool).await?;
            let statement = conn.prepare_cached(NOTIFY).await.map_err(|e| statement_error(NOTIFY, e))?;
            let payload = format!("{} {}", *shared.head.borrow(), shared.log);
            // A transaction that notifies gets a transaction id, so its commit would wait
            // for a WAL flush of its own: the notification is no data, so it does not
            // wait (`synchronous_commit` off for this transaction only).
            let params: [&(dyn ToSql + Sync); 2] = [&CHANNEL, &payload];
            let (begun, sent, committed) = tokio::join!(
                conn.batch_execute("BEGIN; SET LOCAL synchronous_commit TO OFF"),
                conn.execute(&statement, &params),
                conn.batch_execute("COMMIT"),
            );
            begun.and(sent).and(committed).map_err(|e| pg_error("notify the listeners", e))
        }
        .await;
        if let Err(e) = sent {
            if shared.closed.load(Ordering::Acquire) {
                return;
            }
            tracing::warn!(log = %shared.log, error = %e, "brine-postgres: commit notification not sent; listeners fall back to polling");
            tokio::time::sleep(RECONNECT).await;
        }
        // Commits meanwhile leave one permit: they share the next notification.
        tokio::time::sleep(NOTIFY_INTERVAL).await;
    }
}

/// Follows the notification channel on a connection of its own; on each notification
/// for this log, reads the head and publishes it. Reconnects after the connection
/// drops, and reads the head after every (re)connection, so nothing committed while it
/// was away is missed.
async fn listener(shared: Arc<Shared>, config: tokio_postgres::Config) {
    loop {
        if shared.closed.load(Ordering::Acquire) {
            return;
        }
        if let Err(e) = listen_once(&shared, &config).await {
            tracing::debug!(log = %shared.log, error = %e, "brine-postgres: listener connection ended; reconnecting");
        }
        tokio::time::sleep(RECONNECT).await;
    }
}

async fn listen_once(
    shared: &Shared,
    config: &tokio_postgres::Config,
) -> std::result::Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if tx.send(n.payload().to_owned()).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            }
        }
    });
    let _abort = AbortOnDrop(driver);
    client.batch_execute(LISTEN).await?;
    // Catch up with whatever committed before the LISTEN took effect.
    let _ = shared.refresh().await;
    while let Some(payload) = rx.recv().await {
        match payload.split_once(' ') {
            Some((head, log)) if log == shared.log => match head.parse::<u64>() {
                Ok(head) => shared.publish(head),
                Err(_) => {
                    let _ = shared.refresh().await;
                }
            },
            // The log's name alone (an older Brine's notification): read the head.
            _ if payload == shared.log => {
                let _ = shared.refresh().await;
            }
            _ => {}
        }
    }
    Ok(())
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One entry waiting to be appended to the log when its write commits.
pub(crate) struct Pending {
    operation: Operation,
    object: LogObject,
    now: Timestamp,
}

/// One write in progress: a database transaction on a pooled connection, with the log
/// entries and counter moves it will write at commit. Dropped before
/// [`Write::commit`], its connection is discarded, which rolls the transaction back on
/// the server (a connection in the middle of a transaction never returns to the pool).
pub(crate) struct Write {
    conn: Option<Object>,
    db: Arc<Db>,
    log: Vec<Pending>,
    /// Moves of the per-state execution counters: `(state, +1 or -1)`.
    counts: Vec<(i16, i64)>,
    /// Statements without parameters to send just before the next statement, in the
    /// same round trip (a commit group's savepoint steps).
    prefix: Mutex<Option<&'static str>>,
    /// Queued jobs a commit group locked for its grabs, by queue: `(id, record)`.
    locked_jobs: HashMap<String, VecDeque<(String, Vec<u8>)>>,
    holder: bool,
}

/// Where a write stood before one step of a commit group: what to forget when the step
/// rolls back to its savepoint.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mark {
    log: usize,
    counts: usize,
}

impl Write {
    fn new(conn: Object, db: Arc<Db>) -> Write {
        Write {
            conn: Some(conn),
            db,
            log: Vec::new(),
            counts: Vec::new(),
            prefix: Mutex::new(None),
            locked_jobs: HashMap::new(),
            holder: false,
        }
    }

    fn conn(&self) -> Result<&Object> {
        self.conn.as_ref().ok_or(StoreError::Closed)
    }

    /// Sends `sql` (no parameters) with the next statement, in the same round trip.
    /// When one is already waiting it stays: a waiting prefix covers the one after it
    /// (see [`crate::group`]).
    pub(crate) fn set_prefix(&self, sql: &'static str) {
        self.prefix.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(sql);
    }

    /// Locks up to `n` queued jobs of `queue` for the grabs of a commit group, in the
    /// order a grab takes them, skipping jobs another transaction holds (one statement
    /// for the group's grabs, rather than one each). A plain `SELECT … LIMIT n FOR UPDATE
    /// SKIP LOCKED` locks at most `n` rows; it changes nothing, so the grabs that take
    /// the jobs write them, and a job no grab took stays queued.
    pub(crate) async fn lock_queued(&mut self, queue: &str, n: usize) -> Result<()> {
        let rows = self
            .query(
                "SELECT id, record FROM compute.jobs WHERE queue = $1 AND state = 1 AND queue <> '' \
                 ORDER BY created_ns, id LIMIT $2 FOR UPDATE SKIP LOCKED",
                &[&queue, &i64_of(n as u64)],
            )
            .await?;
        let jobs = rows.into_iter().map(|r| (r.get(0), r.get(1))).collect();
        self.locked_jobs.insert(queue.to_owned(), jobs);
        Ok(())
    }

    /// The next job [`Write::lock_queued`] locked for a grab from `queue`, if any is left.
    pub(crate) fn take_locked_job(&mut self, queue: &str) -> Option<(String, Vec<u8>)> {
        self.locked_jobs.get_mut(queue)?.pop_front()
    }

    /// Forgets the locked jobs: a write that is no grab may change them, so a grab after
    /// it reads the queue itself.
    pub(crate) fn forget_locked_jobs(&mut self) {
        self.locked_jobs.clear();
    }

    /// Sends `sql` with the next statement, instead of any prefix waiting.
    pub(crate) fn replace_prefix(&self, sql: &'static str) {
        *self.prefix.lock().unwrap_or_else(PoisonError::into_inner) = Some(sql);
    }

    /// Takes the prefix still waiting: `None` when a statement has sent it.
    pub(crate) fn take_prefix(&self) -> Option<&'static str> {
        self.prefix.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    /// Runs `statement`, sending the waiting prefix first in the same round trip.
    async fn run<T, F>(&self, sql: &str, statement: F) -> Result<T>
    where
        F: Future<Output = std::result::Result<T, tokio_postgres::Error>>,
    {
        match self.take_prefix() {
            None => statement.await.map_err(|e| statement_error(sql, e)),
            Some(prefix) => {
                let conn = self.conn()?;
                let (sent, out) = tokio::join!(conn.batch_execute(prefix), statement);
                sent.map_err(|e| statement_error(prefix, e))?;
                out.map_err(|e| statement_error(sql, e))
            }
        }
    }

    /// The store this write belongs to.
    pub(crate) fn db(&self) -> &Arc<Db> {
        &self.db
    }

    /// Runs a statement (prepared once per connection).
    pub(crate) async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        let conn = self.conn()?;
        let statement = conn.prepare_cached(sql).await.map_err(|e| statement_error(sql, e))?;
        self.run(sql, conn.execute(&statement, params)).await
    }

    /// Runs a query (prepared once per connection).
    pub(crate) async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        let conn = self.conn()?;
        let statement = conn.prepare_cached(sql).await.map_err(|e| statement_error(sql, e))?;
        self.run(sql, conn.query(&statement, params)).await
    }

    /// Runs statements in order, sent together in one round trip, and returns each one's
    /// result; after a failure the later ones fail too (the transaction is aborted).
    /// All are prepared first: a statement still being prepared would be sent after the
    /// ones behind it.
    pub(crate) async fn pipeline(&self, batch: &[(&str, Vec<&(dyn ToSql + Sync)>)]) -> Result<Vec<Result<u64>>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let conn = self.conn()?;
        let mut prepared = Vec::with_capacity(batch.len());
        for (sql, _) in batch {
            prepared.push(conn.prepare_cached(sql).await.map_err(|e| statement_error(sql, e))?);
        }
        let prefix = self.take_prefix();
        let sent = async {
            match prefix {
                Some(sql) => conn.batch_execute(sql).await.map_err(|e| statement_error(sql, e)),
                None => Ok(()),
            }
        };
        let runs = batch.iter().zip(&prepared).map(|((sql, params), statement)| async move {
            conn.execute(statement, params).await.map_err(|e| statement_error(sql, e))
        });
        let (sent, results) = tokio::join!(sent, in_order(runs.collect()));
        sent?;
        Ok(results)
    }

    /// Runs a query that returns at most one row.
    pub(crate) async fn query_opt(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Option<Row>> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }

    /// Runs statements without parameters (savepoints, settings).
    pub(crate) async fn batch(&self, sql: &str) -> Result<()> {
        self.conn()?.batch_execute(sql).await.map_err(|e| statement_error(sql, e))
    }

    /// Queues an event-log entry, appended at commit.
    pub(crate) fn log(&mut self, operation: Operation, object: LogObject, now: Timestamp) {
        self.log.push(Pending { operation, object, now });
    }

    /// Moves one execution between the per-state counters of `from` and `to` (`None`:
    /// created or deleted). The moves are written at commit, all of a write's in one
    /// statement.
    pub(crate) fn count(&mut self, from: Option<i16>, to: Option<i16>) {
        if from != to {
            self.counts.extend(from.map(|s| (s, -1)).into_iter().chain(to.map(|s| (s, 1))));
        }
    }

    /// What is queued now (see [`Write::rewind`]).
    pub(crate) fn mark(&self) -> Mark {
        Mark { log: self.log.len(), counts: self.counts.len() }
    }

    /// Forgets the log entries and counter moves queued after `mark` (their step rolled
    /// back to its savepoint).
    pub(crate) fn rewind(&mut self, mark: Mark) {
        self.log.truncate(mark.log);
        self.counts.truncate(mark.counts);
    }

    /// Appends the queued log entries, taking the log's head row as the last step, and
    /// commits; then publishes the new head and wakes the notifier. Returns the head
    /// (the last sequence number appended, or 0 when nothing was).
    pub(crate) async fn commit(self) -> Result<u64> {
        self.finish(None).await
    }

    /// Commits a group ([`crate::group`]), its short row-lock wait reset first: the
    /// counter rows and the head row are waited for as long as it takes.
    pub(crate) async fn commit_group(self) -> Result<u64> {
        self.finish(Some("SET LOCAL lock_timeout TO DEFAULT")).await
    }

    /// `first`, the counter moves, the log's append and `COMMIT`, sent together. When a
    /// statement fails the transaction is aborted, so the `COMMIT` after it rolls back;
    /// the statement's error is returned.
    async fn finish(mut self, first: Option<&str>) -> Result<u64> {
        self.db.check_open()?;
        let pending = std::mem::take(&mut self.log);
        let (states, deltas) = net_moves(&self.counts);
        let client = self.conn()?;
        // Prepared before anything is sent: a statement still being prepared would be
        // executed after the COMMIT sent beside it.
        let count = match states.is_empty() {
            true => None,
            false => Some(client.prepare_cached(COUNT).await.map_err(|e| statement_error(COUNT, e))?),
        };
        let append = match pending.is_empty() {
            true => None,
            false => Some(client.prepare_cached(APPEND).await.map_err(|e| statement_error(APPEND, e))?),
        };
        let node = self.db.node();
        let (set, counted, appended, committed) = tokio::join!(
            async {
                match first {
                    Some(sql) => client.batch_execute(sql).await.map_err(|e| statement_error(sql, e)),
                    None => Ok(()),
                }
            },
            async {
                match &count {
                    Some(statement) => client
                        .execute(statement, &[&node, &states, &deltas])
                        .await
                        .map_err(|e| statement_error(COUNT, e)),
                    None => Ok(0),
                }
            },
            async {
                match &append {
                    Some(statement) => append_log(client, statement, &self.db.shared.log, &pending).await.map(Some),
                    None => Ok(None),
                }
            },
            client.batch_execute("COMMIT")
        );
        set?;
        counted?;
        let head = appended?;
        committed.map_err(|e| pg_error("commit", e))?;
        let conn = self.conn.take();
        drop(conn);
        if let Some(head) = head {
            self.db.shared.publish(head);
            self.db.shared.notify.notify_one();
        }
        Ok(head.unwrap_or(0))
    }

    /// Ends the transaction without writing anything.
    pub(crate) async fn rollback(mut self) -> Result<()> {
        if let Some(conn) = &self.conn {
            if conn.batch_execute("ROLLBACK").await.is_ok() {
                // Back to the pool in a clean state.
                let conn = self.conn.take();
                drop(conn);
            }
        }
        Ok(())
    }
}

impl Drop for Write {
    fn drop(&mut self) {
        if self.holder {
            *self.db.tx_holder.lock().unwrap_or_else(PoisonError::into_inner) = None;
        }
        if let Some(conn) = self.conn.take() {
            // Still inside a transaction: close the connection, so the server rolls it
            // back and releases its locks, rather than return it to the pool.
            drop(Object::take(conn));
        }
    }
}

/// Numbers a write's log entries: the head row moves by their count and the entries
/// take the numbers it skipped, in one statement (the last of the transaction).
const APPEND: &str =
    "WITH head AS (UPDATE compute.logs SET last_seq = last_seq + $2 WHERE name = $1 RETURNING last_seq) \
     INSERT INTO compute.log_entries (log, seq, created_ns, object_type, operation, entry) \
     SELECT $1, head.last_seq - $2 + e.ord, e.created_ns, e.object_type, e.operation, e.entry \
     FROM head, unnest($3::bigint[], $4::smallint[], $5::smallint[], $6::bytea[]) \
     WITH ORDINALITY AS e(created_ns, object_type, operation, entry, ord) \
     RETURNING seq";

/// Moves a node's per-state counters by their net changes in one statement, locking the
/// rows in state order first: writers moving executions between states in opposite
/// directions take the rows in the same order and cannot deadlock (an UPDATE alone locks
/// them in heap order, which changes).
const COUNT: &str = "WITH moves AS (SELECT * FROM unnest($2::smallint[], $3::bigint[]) AS m(state, delta)), \
     locked AS (SELECT state FROM compute.execution_counts \
         WHERE node = $1 AND state = ANY($2) ORDER BY state FOR UPDATE) \
     UPDATE compute.execution_counts c SET count = greatest(c.count + moves.delta, 0) \
     FROM moves JOIN locked USING (state) WHERE c.node = $1 AND c.state = moves.state";

/// The net change of each state's counter, in state order, leaving out those that
/// cancel out.
fn net_moves(moves: &[(i16, i64)]) -> (Vec<i16>, Vec<i64>) {
    let mut net = std::collections::BTreeMap::new();
    for (state, delta) in moves {
        *net.entry(*state).or_insert(0i64) += delta;
    }
    net.into_iter().filter(|(_, delta)| *delta != 0).unzip()
}

/// Appends `pending` to `log` with [`APPEND`]; returns the last sequence number.
async fn append_log(
    client: &Object,
    statement: &tokio_postgres::Statement,
    log: &str,
    pending: &[Pending],
) -> Result<u64> {
    let n = pending.len() as i64;
    let times: Vec<i64> = pending.iter().map(|p| i64_of(p.now.as_nanos())).collect();
    let types: Vec<i16> = pending.iter().map(|p| object_type_code(&p.object)).collect();
    let operations: Vec<i16> = pending.iter().map(|p| operation_code(p.operation)).collect();
    let entries: Vec<Vec<u8>> = pending.iter().map(|p| codec::encode(&p.object)).collect();
    let rows = client
        .query(statement, &[&log, &n, &times, &types, &operations, &entries])
        .await
        .map_err(|e| statement_error(APPEND, e))?;
    rows.iter().map(|r| u64_of(r.get::<_, i64>(0))).max().ok_or_else(|| crate::log::missing_log(log))
}

/// Awaits `futures` together, polling them in order, so requests they send go out in
/// that order; returns their outputs in the same order.
async fn in_order<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(v) => *output = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// A failed statement as a store error naming the statement.
pub(crate) fn statement_error(sql: &str, e: tokio_postgres::Error) -> StoreError {
    let words: Vec<&str> = sql.split_whitespace().take(4).collect();
    pg_error(&format!("PostgreSQL statement `{} …`", words.join(" ")), e)
}

/// A `BIGINT` column as the unsigned number Brine stores in it.
pub(crate) fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// An unsigned number as a `BIGINT` (saturating at `i64::MAX`).
pub(crate) fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A timestamp as a `TIMESTAMPTZ` (microseconds; the exact value is in the record).
pub(crate) fn system_time(t: Timestamp) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + Duration::from_nanos(t.as_nanos())
}

pub(crate) fn object_type_code(object: &LogObject) -> i16 {
    object_type_code_of(object.object_type())
}

pub(crate) fn object_type_code_of(object_type: brine_store::model::ObjectType) -> i16 {
    use brine_store::model::ObjectType;
    match object_type {
        ObjectType::Execution => 0,
        ObjectType::Job => 1,
        ObjectType::Evaluation => 2,
        ObjectType::Custom => 3,
    }
}

pub(crate) fn operation_code(operation: Operation) -> i16 {
    match operation {
        Operation::Create => 0,
        Operation::Update => 1,
        Operation::Delete => 2,
    }
}

pub(crate) fn operation_of(code: i16) -> Option<Operation> {
    Operation::ALL.into_iter().find(|o| operation_code(*o) == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listener_listens_on_the_channel_writers_notify() {
        assert_eq!(LISTEN, format!("LISTEN {CHANNEL}"));
    }
}
