//! The core shared by both RocksDB stores: opening, the commit protocol, group commit,
//! sequences and counters, and the event log.
//!
//! Commit protocol: a writer takes the store's commit lock (an async mutex over the
//! store's sequences and counters), reads what it needs through a [`Txn`] (its own
//! pending writes first, then the database), builds one `WriteBatch` holding the record,
//! its index moves, counter changes, history events, the event-log entry and the new
//! sequence values, and writes it without sync. Because the lock is held from the first
//! read to the write, conditions are decided on current data and event-log sequence
//! numbers follow commit order. The lock is released before a `Sync` commit waits for
//! its fsync, so concurrent `Sync` commits share fsyncs: whoever finds no sync running
//! syncs the WAL up to the newest write and wakes every writer it covered.
//!
//! Publication: readers of the sequences and counters (the event log's head, `wait_for`,
//! the per-state counts) see a commit only once it counts as done: at once on a
//! `Buffered` store (under the commit lock), after the WAL sync that covers it on a
//! `Sync` store, so a watcher never acts on an entry that a power loss could take back.
//! Publication is ordered by commit number, so the head never goes backwards.
//!
//! Cancel safety: any of these futures may be dropped at an `.await`. Waiting for the
//! commit lock is cancel-safe (tokio's mutex); a dropped write before its batch is
//! written writes nothing; a group sync runs on a task of its own, so a writer dropped
//! while it waits for its fsync leaves nothing half done and the sync still publishes;
//! `close` finishes on a blocking thread of its own, and a second `close` waits for the
//! first to finish.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use brine_store::model::{LogEntry, LogObject, Operation, Timestamp};
use brine_store::{Clock, Result, StoreError};
use rocksdb::{
    ColumnFamilyDescriptor, DBRawIteratorWithThreadMode, Options, ReadOptions, WriteBatch, WriteOptions, DB,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{watch, Notify, OwnedMutexGuard};

/// A consistent read view of a store's database.
pub(crate) type Snapshot<'d> = rocksdb::SnapshotWithThreadMode<'d, DB>;

use crate::cf::{Cf, StoreKind};
use crate::codec::{decode, encode};
use crate::layout::{self, meta};
use crate::{Durability, OpenError, OpenOptions};

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u64 = 2;

/// The store's sequences and counters: authoritative under the commit lock, published
/// after each commit for lock-free reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Seqs {
    pub(crate) log_head: u64,
    pub(crate) log_trimmed: u64,
    pub(crate) history_seq: u64,
    pub(crate) counts: [u64; 9],
}

/// Fsync sharing between concurrent `Sync` commits.
#[derive(Default)]
struct GroupSync {
    state: Mutex<SyncState>,
    done: Notify,
}

#[derive(Default)]
struct SyncState {
    /// Every commit numbered at or below this is durable.
    synced: u64,
    /// A sync is running.
    running: bool,
}

/// What readers see: the sequences and counters as of commit number `commit`.
#[derive(Debug, Clone, Default)]
struct Published {
    commit: u64,
    seqs: Seqs,
}

/// Who holds an explicit transaction ([`Engine::begin_tx`]): the tokio task, or the
/// thread when the transaction was begun outside any task (`block_on`).
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One open RocksDB store.
pub(crate) struct Engine {
    /// The database; `None` once closed. A commit holds the read lock while it writes
    /// its batch, so `close` (which takes the write lock) never cuts a write in half: a
    /// commit either wrote before the close (and the close's WAL sync covers it) or finds
    /// the store closed and writes nothing.
    db: RwLock<Option<Arc<DB>>>,
    pub(crate) path: PathBuf,
    pub(crate) kind: StoreKind,
    writer: Arc<tokio::sync::Mutex<Seqs>>,
    published: RwLock<Published>,
    /// The newest batch written and the sequences after it (set under the commit lock),
    /// which a `Sync` store publishes once a WAL sync covers it.
    written: Mutex<Published>,
    /// Number of batches written; a commit's number is the value after its write.
    committed: AtomicU64,
    group: GroupSync,
    head: watch::Sender<u64>,
    closed: AtomicBool,
    /// `None` until a `close` has finished, then its outcome.
    close_done: Arc<watch::Sender<Option<std::result::Result<(), String>>>>,
    /// The holder of the open explicit transaction, if any.
    tx_holder: Mutex<Option<Holder>>,
    poisoned: Mutex<Option<String>>,
    durability: Durability,
    pub(crate) clock: Arc<dyn Clock>,
    /// The previous session ended without a clean close.
    pub(crate) unclean_shutdown: bool,
    /// The store's id (`meta/store_id`).
    pub(crate) store_id: String,
    /// A repair ran in this session (after which a clean close clears the marker even
    /// when the previous session was unclean).
    pub(crate) repaired: AtomicBool,
    /// Makes the next WAL sync fail (tests of poisoning).
    #[cfg(test)]
    fail_next_sync: AtomicBool,
    /// Delays every WAL sync (tests of what readers see meanwhile).
    #[cfg(test)]
    sync_delay: Mutex<std::time::Duration>,
}

fn engine_err(context: &str, e: rocksdb::Error) -> StoreError {
    StoreError::backend(context.to_owned(), e)
}

fn create_private_dir(path: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

/// The block cache every store of this process shares (64 MiB).
fn shared_block_cache() -> &'static rocksdb::Cache {
    static CACHE: std::sync::OnceLock<rocksdb::Cache> = std::sync::OnceLock::new();
    CACHE.get_or_init(|| rocksdb::Cache::new_lru_cache(64 << 20))
}

/// The RocksDB options every Brine store is opened with (also used by baselines and
/// tools that open a store's families directly).
pub fn db_options() -> Options {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
    opts.set_max_background_jobs(2);
    opts.set_keep_log_file_num(4);
    opts.set_bytes_per_sync(1 << 20);
    // One memtable budget and one block cache for all families together, so memory
    // stays bounded however many families a workload touches (by default each family
    // would get a block cache of its own).
    opts.set_db_write_buffer_size(64 << 20);
    let mut table = rocksdb::BlockBasedOptions::default();
    table.set_block_cache(shared_block_cache());
    opts.set_block_based_table_factory(&table);
    opts
}

/// The kind of store these families make up: requester stores alone have `jobs`,
/// compute stores alone have `execution_events`.
fn kind_of_families(names: &[String]) -> Option<StoreKind> {
    if names.iter().any(|n| n == Cf::Jobs.name()) {
        Some(StoreKind::Requester)
    } else if names.iter().any(|n| n == Cf::ExecutionEvents.name()) {
        Some(StoreKind::Compute)
    } else {
        None
    }
}

/// The kind of the existing store at `path`, from its families (without opening it).
pub fn store_kind_at(path: &Path) -> std::result::Result<StoreKind, OpenError> {
    if !path.exists() {
        return Err(OpenError::NotFound { path: path.to_path_buf() });
    }
    if !path.join("CURRENT").exists() {
        return Err(OpenError::NotABrineStore {
            path: path.to_path_buf(),
            reason: "it is not a RocksDB directory (no CURRENT file)".into(),
        });
    }
    let names = DB::list_cf(&db_options(), path)
        .map_err(|e| OpenError::NotABrineStore { path: path.to_path_buf(), reason: e.to_string() })?;
    kind_of_families(&names).ok_or_else(|| OpenError::NotABrineStore {
        path: path.to_path_buf(),
        reason: "it has neither a jobs nor an execution_events family".into(),
    })
}

/// Refuses a store of another format version before anything is written to it: an
/// older one names the command that upgrades it.
fn check_version_before_writing(db: &DB, path: &Path) -> std::result::Result<(), OpenError> {
    let Some(meta_cf) = db.cf_handle(Cf::Meta.name()) else { return Ok(()) };
    let raw = db.get_cf(meta_cf, meta::SCHEMA_VERSION).map_err(|e| map_open_error(path, e))?;
    let Some(raw) = raw else { return Ok(()) };
    let version: u64 = decode(Cf::Meta, meta::SCHEMA_VERSION, &raw)
        .map_err(|e| OpenError::Store { path: path.to_path_buf(), source: e })?;
    version_error(path, version).map_or(Ok(()), Err)
}

/// Why a store of format `version` cannot be opened by this build, if it cannot: newer,
/// older (a migration upgrades it), or unknown.
pub(crate) fn version_error(path: &Path, version: u64) -> Option<OpenError> {
    let path = path.to_path_buf();
    match version {
        v if v == SCHEMA_VERSION => None,
        v if v > SCHEMA_VERSION => Some(OpenError::NewerSchema { path, found: v, supported: SCHEMA_VERSION }),
        v if crate::migrate::upgradable(v) => {
            Some(OpenError::OlderSchema { path, found: v, supported: SCHEMA_VERSION })
        }
        v => Some(OpenError::UnknownSchema { path, found: v, supported: SCHEMA_VERSION }),
    }
}

pub(crate) fn map_open_error(path: &Path, e: rocksdb::Error) -> OpenError {
    let msg = e.to_string();
    let lower = msg.to_ascii_lowercase();
    if lower.contains("lock") && (lower.contains("resource temporarily unavailable") || lower.contains("lock hold")) {
        OpenError::InUse { path: path.to_path_buf() }
    } else {
        OpenError::Engine { path: path.to_path_buf(), source: e }
    }
}

impl Engine {
    /// Opens (or creates) the store of `kind` at `path`.
    pub(crate) fn open(
        path: &Path,
        kind: StoreKind,
        options: &OpenOptions,
    ) -> std::result::Result<Arc<Engine>, OpenError> {
        let exists = path.join("CURRENT").exists();
        if !exists {
            let not_a_store =
                |reason: &str| OpenError::NotABrineStore { path: path.to_path_buf(), reason: reason.into() };
            if path.exists() && !path.is_dir() {
                return Err(not_a_store("it is not a directory"));
            }
            if !options.create_if_missing {
                return Err(if path.exists() {
                    not_a_store("it is not a RocksDB directory (no CURRENT file)")
                } else {
                    OpenError::NotFound { path: path.to_path_buf() }
                });
            }
            if path.exists() && std::fs::read_dir(path).map(|mut d| d.next().is_some()).unwrap_or(false) {
                return Err(not_a_store("the directory holds other files"));
            }
            create_private_dir(path).map_err(|source| OpenError::Io { path: path.to_path_buf(), source })?;
        }
        let opts = db_options();
        let mut names: Vec<String> = kind.families().iter().map(|cf| cf.name().to_owned()).collect();
        if exists {
            let on_disk = DB::list_cf(&opts, path).map_err(|e| map_open_error(path, e))?;
            // Refuse the other kind before opening: opening creates missing families,
            // which would turn a compute store into half a requester store.
            match kind_of_families(&on_disk) {
                Some(found) if found != kind => {
                    return Err(OpenError::WrongKind {
                        path: path.to_path_buf(),
                        found: found.as_str().to_owned(),
                        expected: kind.as_str(),
                    });
                }
                Some(_) => {}
                // Some other program's RocksDB database: never add Brine's families to it.
                None => {
                    return Err(OpenError::NotABrineStore {
                        path: path.to_path_buf(),
                        reason: "it is a RocksDB database without Brine's families".into(),
                    });
                }
            }
            // Open the families it has; add missing ones only once its version is known
            // to be this build's, so refusing an older store changes nothing in it.
            names = on_disk.into_iter().filter(|n| n != "default").collect();
        }
        let descriptors = names.iter().map(|n| ColumnFamilyDescriptor::new(n, db_options()));
        let mut db = DB::open_cf_descriptors(&opts, path, descriptors).map_err(|e| map_open_error(path, e))?;
        if exists {
            check_version_before_writing(&db, path)?;
            for cf in kind.families() {
                if db.cf_handle(cf.name()).is_none() {
                    db.create_cf(cf.name(), &db_options()).map_err(|e| map_open_error(path, e))?;
                }
            }
        }
        let engine = Engine {
            db: RwLock::new(Some(Arc::new(db))),
            path: path.to_path_buf(),
            kind,
            writer: Arc::new(tokio::sync::Mutex::new(Seqs::default())),
            published: RwLock::new(Published::default()),
            written: Mutex::new(Published::default()),
            committed: AtomicU64::new(0),
            group: GroupSync::default(),
            head: watch::channel(0).0,
            closed: AtomicBool::new(false),
            close_done: Arc::new(watch::channel(None).0),
            tx_holder: Mutex::new(None),
            poisoned: Mutex::new(None),
            durability: options.durability,
            clock: Arc::clone(&options.clock),
            unclean_shutdown: false,
            store_id: String::new(),
            repaired: AtomicBool::new(false),
            #[cfg(test)]
            fail_next_sync: AtomicBool::new(false),
            #[cfg(test)]
            sync_delay: Mutex::new(std::time::Duration::ZERO),
        };
        let mut engine = engine;
        let seqs = engine.initialize(options, exists)?;
        let (unclean, store_id) =
            engine.mark_open().map_err(|e| OpenError::Store { path: path.to_path_buf(), source: e })?;
        engine.unclean_shutdown = unclean;
        engine.store_id = store_id;
        engine.head.send_replace(seqs.log_head);
        engine.published = RwLock::new(Published { commit: 0, seqs: seqs.clone() });
        engine.written = Mutex::new(Published { commit: 0, seqs: seqs.clone() });
        engine.writer = Arc::new(tokio::sync::Mutex::new(seqs));
        Ok(Arc::new(engine))
    }

    /// Checks or writes the schema version and kind, and loads the sequences.
    fn initialize(&self, options: &OpenOptions, existed: bool) -> std::result::Result<Seqs, OpenError> {
        let path = &self.path;
        let store_err = |e: StoreError| OpenError::Store { path: path.clone(), source: e };
        let version: Option<u64> = self.get_value(Cf::Meta, meta::SCHEMA_VERSION).map_err(store_err)?;
        match version {
            None if existed && self.has_any_data().map_err(store_err)? => {
                return Err(OpenError::NotABrineStore {
                    path: path.clone(),
                    reason: "it has no schema version".into(),
                });
            }
            None => {
                let mut batch = WriteBatch::default();
                let db = self.db().map_err(store_err)?;
                let meta_cf = self.cf(&db, Cf::Meta).map_err(store_err)?;
                batch.put_cf(meta_cf, meta::SCHEMA_VERSION, encode(&SCHEMA_VERSION));
                batch.put_cf(meta_cf, meta::STORE_KIND, encode(self.kind.as_str()));
                if let Some(node) = &options.node_id {
                    batch.put_cf(meta_cf, meta::NODE_ID, encode(node.as_str()));
                }
                let mut wo = WriteOptions::default();
                wo.set_sync(true);
                db.write_opt(batch, &wo).map_err(|e| OpenError::Engine { path: path.clone(), source: e })?;
            }
            Some(v) => {
                if let Some(refused) = version_error(path, v) {
                    return Err(refused);
                }
                let kind: Option<String> = self.get_value(Cf::Meta, meta::STORE_KIND).map_err(store_err)?;
                if kind.as_deref() != Some(self.kind.as_str()) {
                    return Err(OpenError::WrongKind {
                        path: path.clone(),
                        found: kind.unwrap_or_else(|| "none".into()),
                        expected: self.kind.as_str(),
                    });
                }
            }
        }
        self.load_seqs().map_err(store_err)
    }

    /// Records (durably) that the store is open, giving the store an id if it has none
    /// yet; returns whether the previous session left it marked open (it ended without
    /// a clean close) and the store's id.
    fn mark_open(&self) -> Result<(bool, String)> {
        let previous: Option<u64> = self.get_value(Cf::Meta, meta::OPEN)?;
        let existing: Option<String> = self.get_value(Cf::Meta, meta::STORE_ID)?;
        let db = self.db()?;
        let meta_cf = self.cf(&db, Cf::Meta)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(meta_cf, meta::OPEN, encode(&1u64));
        let store_id = match existing {
            Some(id) => id,
            None => {
                let id = brine_store::new_store_id();
                batch.put_cf(meta_cf, meta::STORE_ID, encode(id.as_str()));
                id
            }
        };
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        db.write_opt(batch, &wo).map_err(|e| engine_err("write the open marker", e))?;
        Ok((previous == Some(1), store_id))
    }

    /// Makes every write acknowledged so far durable: a WAL sync on a `Buffered` store,
    /// on a blocking thread; nothing to do on a `Sync` store, whose acknowledged writes
    /// are synced already.
    pub(crate) async fn sync(&self) -> Result<()> {
        let db = self.db()?;
        if self.durability == Durability::Sync {
            return Ok(());
        }
        tokio::task::spawn_blocking(move || db.flush_wal(true))
            .await
            .map_err(|e| StoreError::backend("sync the WAL", e))?
            .map_err(|e| engine_err("sync the WAL", e))
    }

    fn has_any_data(&self) -> Result<bool> {
        let db = self.db()?;
        for cf in self.kind.families() {
            if let Some(handle) = db.cf_handle(cf.name()) {
                let mut it = db.raw_iterator_cf(handle);
                it.seek_to_first();
                if it.valid() {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    fn load_seqs(&self) -> Result<Seqs> {
        let u = |key: &[u8]| -> Result<u64> { Ok(self.get_value::<u64>(Cf::Meta, key)?.unwrap_or(0)) };
        let mut seqs = Seqs {
            log_head: u(meta::LOG_HEAD)?,
            log_trimmed: u(meta::LOG_TRIMMED)?,
            history_seq: u(meta::HISTORY_SEQ)?,
            counts: [0; 9],
        };
        for (code, slot) in seqs.counts.iter_mut().enumerate() {
            *slot = u(&meta::count(code as u8))?;
        }
        Ok(seqs)
    }

    /// The open database, or `Closed`.
    pub(crate) fn db(&self) -> Result<Arc<DB>> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        self.db.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone().ok_or(StoreError::Closed)
    }

    pub(crate) fn cf<'d>(&self, db: &'d DB, cf: Cf) -> Result<&'d rocksdb::ColumnFamily> {
        db.cf_handle(cf.name()).ok_or_else(|| StoreError::Corrupt {
            cf: cf.name().to_owned(),
            key: String::new(),
            reason: "column family missing".into(),
        })
    }

    /// Reads and decodes one value.
    pub(crate) fn get_value<T: DeserializeOwned>(&self, cf: Cf, key: &[u8]) -> Result<Option<T>> {
        let db = self.db()?;
        let handle = self.cf(&db, cf)?;
        let raw = db.get_pinned_cf(handle, key).map_err(|e| engine_err("read", e))?;
        raw.map(|bytes| decode(cf, key, &bytes)).transpose()
    }

    /// Whether `key` exists in `cf`, without decoding its value.
    pub(crate) fn contains(&self, cf: Cf, key: &[u8]) -> Result<bool> {
        let db = self.db()?;
        let found = db.get_pinned_cf(self.cf(&db, cf)?, key).map_err(|e| engine_err("read", e))?.is_some();
        Ok(found)
    }

    /// Reads and decodes one value, `NotFound` when absent.
    pub(crate) fn get_required<T: DeserializeOwned>(
        &self,
        cf: Cf,
        key: &[u8],
        missing: impl FnOnce() -> StoreError,
    ) -> Result<T> {
        self.get_value(cf, key)?.ok_or_else(missing)
    }

    /// Visits every key (and value) under `prefix` in `cf`, in order, until `visit`
    /// returns `false`.
    pub(crate) fn scan_prefix(
        &self,
        cf: Cf,
        prefix: &[u8],
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<bool>,
    ) -> Result<()> {
        let db = self.db()?;
        let mut it = self.iter(&db, cf, prefix, brine_store::keys::prefix_end(prefix))?;
        it.seek(prefix);
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else { break };
            if !visit(k, v)? {
                return Ok(());
            }
            it.next();
        }
        it.status().map_err(|e| engine_err("scan", e))
    }

    /// A raw iterator over `cf` bounded to `[lower, upper)`.
    pub(crate) fn iter<'d>(
        &self,
        db: &'d DB,
        cf: Cf,
        lower: &[u8],
        upper: Option<Vec<u8>>,
    ) -> Result<DBRawIteratorWithThreadMode<'d, DB>> {
        self.iter_at(db, None, cf, lower, upper)
    }

    /// A raw iterator over `cf` bounded to `[lower, upper)`, reading `snapshot` when
    /// given.
    pub(crate) fn iter_at<'d>(
        &self,
        db: &'d DB,
        snapshot: Option<&Snapshot<'_>>,
        cf: Cf,
        lower: &[u8],
        upper: Option<Vec<u8>>,
    ) -> Result<DBRawIteratorWithThreadMode<'d, DB>> {
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(lower.to_vec());
        if let Some(u) = upper {
            ro.set_iterate_upper_bound(u);
        }
        if let Some(s) = snapshot {
            ro.set_snapshot(s);
        }
        Ok(db.raw_iterator_cf_opt(self.cf(db, cf)?, ro))
    }

    /// Reads and decodes one value as of `snapshot`.
    pub(crate) fn get_value_at<T: DeserializeOwned>(
        &self,
        db: &DB,
        snapshot: &Snapshot<'_>,
        cf: Cf,
        key: &[u8],
    ) -> Result<Option<T>> {
        let raw = snapshot.get_pinned_cf(self.cf(db, cf)?, key).map_err(|e| engine_err("read", e))?;
        raw.map(|bytes| decode(cf, key, &bytes)).transpose()
    }

    /// The sequences and counters as of the last commit that counts as done (see the
    /// module doc: on a `Sync` store, the last one synced).
    pub(crate) fn published(&self) -> Result<Seqs> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        Ok(self.published.read().unwrap_or_else(PoisonError::into_inner).seqs.clone())
    }

    /// Makes commit `commit` (and its sequences) what readers see, unless a later one
    /// already is, and wakes `wait_for` callers when the head moved.
    fn publish(&self, commit: u64, seqs: &Seqs) {
        let mut published = self.published.write().unwrap_or_else(PoisonError::into_inner);
        if commit <= published.commit {
            return;
        }
        *published = Published { commit, seqs: seqs.clone() };
        let head = seqs.log_head;
        // Under the lock, so two publishers cannot send heads out of order.
        self.head.send_if_modified(|h| {
            let moved = head > *h;
            if moved {
                *h = head;
            }
            moved
        });
    }

    /// Starts a write: waits for the commit lock.
    ///
    /// Fails with `TransactionHeld` instead of waiting forever when the calling task
    /// holds an explicit transaction on this store (it would wait for itself).
    pub(crate) async fn begin(self: &Arc<Self>) -> Result<Txn> {
        self.check_writable()?;
        // A cooperative yield point: a task writing in a loop on an uncontended store
        // still lets the other tasks of its runtime run (tokio's task budget).
        tokio::task::coop::consume_budget().await;
        let guard = match Arc::clone(&self.writer).try_lock_owned() {
            Ok(guard) => guard,
            Err(_) => {
                if *lock(&self.tx_holder) == Some(Holder::current()) {
                    return Err(StoreError::TransactionHeld);
                }
                Arc::clone(&self.writer).lock_owned().await
            }
        };
        self.check_writable()?;
        let seqs = guard.clone();
        Ok(Txn {
            engine: Arc::clone(self),
            guard,
            seqs,
            batch: WriteBatch::default(),
            overlay: BTreeMap::new(),
            cleared: Vec::new(),
            holder: None,
        })
    }

    /// Starts an explicit transaction (`begin_tx`): a write held open by the caller,
    /// whose task is remembered so that a plain write from the same task is refused
    /// rather than deadlocking.
    pub(crate) async fn begin_tx(self: &Arc<Self>) -> Result<Txn> {
        let mut txn = self.begin().await?;
        *lock(&self.tx_holder) = Some(Holder::current());
        txn.holder = Some(HolderMark(Arc::clone(self)));
        Ok(txn)
    }

    fn check_writable(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        if let Some(reason) = self.poisoned.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone() {
            return Err(StoreError::Poisoned { reason });
        }
        Ok(())
    }

    fn poison(&self, reason: String) -> StoreError {
        let mut p = self.poisoned.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        p.get_or_insert(reason.clone());
        StoreError::Poisoned { reason }
    }

    /// Waits until every commit up to `commit` is on disk, sharing fsyncs: whoever
    /// finds no sync running starts one, on a task of its own, which syncs the WAL up to
    /// the newest batch written, publishes what it covered and wakes every waiter.
    ///
    /// Cancel-safe: the sync is not this future's work, so dropping it (before or
    /// during the sync) leaves nothing half done; the sync still completes and publishes.
    async fn sync_up_to(self: &Arc<Self>, commit: u64) -> Result<()> {
        loop {
            let notified = self.group.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = lock(&self.group.state);
                if s.synced >= commit {
                    return Ok(());
                }
                if let Some(reason) = lock(&self.poisoned).clone() {
                    return Err(StoreError::Poisoned { reason });
                }
                if self.closed.load(Ordering::Acquire) {
                    // Closing synced the WAL; this writer only learns the store is closed.
                    return Err(StoreError::Closed);
                }
                if !std::mem::replace(&mut s.running, true) {
                    tokio::spawn(Arc::clone(self).group_sync());
                }
            }
            notified.await;
        }
    }

    /// One group sync: syncs the WAL, then publishes every commit written before it
    /// began and marks them synced; a failure poisons the store. The [`SyncLead`] guard
    /// hands the lead back however the task ends (even dropped with its runtime).
    async fn group_sync(self: Arc<Self>) {
        let mut lead = SyncLead { group: &self.group, finished: false };
        let covered = lock(&self.written).clone();
        let Some(db) = self.db.read().unwrap_or_else(PoisonError::into_inner).clone() else { return };
        #[cfg(test)]
        {
            if self.fail_next_sync.swap(false, Ordering::AcqRel) {
                self.poison("WAL sync failed: injected by a test".into());
                return;
            }
            let delay = *lock(&self.sync_delay);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        }
        let result = tokio::task::spawn_blocking(move || db.flush_wal(true))
            .await
            .map_err(|e| format!("the WAL sync task failed: {e}"))
            .and_then(|r| r.map_err(|e| format!("WAL sync failed: {e}")));
        match result {
            Ok(()) => {
                // Published before `synced` moves, so a writer that sees itself synced
                // also sees its commit published.
                self.publish(covered.commit, &covered.seqs);
                lead.finish(Some(covered.commit));
            }
            Err(reason) => {
                self.poison(reason);
            }
        }
    }

    /// Closes the store: flushes the memtables, syncs the WAL, releases the database
    /// (and its lock file once in-flight reads finish), wakes every waiter.
    ///
    /// Does not wait for an open transaction: its later steps and its commit get
    /// `Closed`. Cancel-safe: the work runs on a blocking thread that finishes even if
    /// this future is dropped, and every `close` call (the first or a later one) waits
    /// for that work to finish and returns its outcome.
    pub(crate) async fn close(&self) -> Result<()> {
        let mut done = self.close_done.subscribe();
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.start_close();
        }
        loop {
            if let Some(outcome) = done.borrow_and_update().clone() {
                return outcome.map_err(|reason| StoreError::backend("close", std::io::Error::other(reason)));
            }
            if done.changed().await.is_err() {
                return Err(StoreError::backend("close", std::io::Error::other("the close task ended early")));
            }
        }
    }

    /// Takes the database away (waiting only for a batch being written) and finishes
    /// the close on a blocking thread, which reports to `close_done`.
    fn start_close(&self) {
        // The marker stays set when this session did not close cleanly (a failed sync
        // poisoned it) or when the previous one did not and no repair has run since, so
        // the next recovery still knows to scan.
        let poisoned = lock(&self.poisoned).is_some();
        let pending = self.unclean_shutdown && !self.repaired.load(Ordering::Acquire);
        let clear_marker = !(poisoned || pending);
        let db = self.db.write().unwrap_or_else(PoisonError::into_inner).take();
        self.head.send_modify(|_| {});
        self.group.done.notify_waiters();
        let done = Arc::clone(&self.close_done);
        let Some(db) = db else {
            done.send_replace(Some(Ok(())));
            return;
        };
        // Flushing the memtables leaves nothing in the WAL to replay, so the next open
        // is quick however much was written. The marker is written first and made
        // durable by the same flush.
        let kind = self.kind;
        tokio::task::spawn_blocking(move || {
            let outcome = (|| -> Result<()> {
                if clear_marker {
                    let meta_cf = db.cf_handle(Cf::Meta.name()).ok_or_else(|| StoreError::Corrupt {
                        cf: Cf::Meta.name().to_owned(),
                        key: String::new(),
                        reason: "column family missing".into(),
                    })?;
                    db.put_cf(meta_cf, meta::OPEN, encode(&0u64))
                        .map_err(|e| engine_err("clear the open marker", e))?;
                }
                for cf in kind.families() {
                    if let Some(handle) = db.cf_handle(cf.name()) {
                        db.flush_cf(handle).map_err(|e| engine_err("flush on close", e))?;
                    }
                }
                db.flush_wal(true).map_err(|e| engine_err("sync on close", e))
            })();
            // Release the database before reporting, so a caller that reopens the
            // store right after `close` returns finds its lock free.
            drop(db);
            done.send_replace(Some(outcome.map_err(|e| e.to_string())));
        });
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.clock.now()
    }
}

/// A write in progress: holds the commit lock, the pending batch and an overlay of the
/// pending writes so that reads see them.
pub(crate) struct Txn {
    engine: Arc<Engine>,
    guard: OwnedMutexGuard<Seqs>,
    pub(crate) seqs: Seqs,
    batch: WriteBatch,
    overlay: BTreeMap<(Cf, Vec<u8>), Option<Vec<u8>>>,
    /// Prefixes deleted whole in this transaction (range deletes): keys under them read
    /// as absent unless the overlay has a later write.
    cleared: Vec<(Cf, Vec<u8>)>,
    /// Set for an explicit transaction: forgets its holder when the transaction ends.
    holder: Option<HolderMark>,
}

/// Clears the store's transaction holder when an explicit transaction ends (commit,
/// rollback or drop).
struct HolderMark(Arc<Engine>);

impl Drop for HolderMark {
    fn drop(&mut self) {
        *lock(&self.0.tx_holder) = None;
    }
}

/// The lead of a group sync. Dropped before [`SyncLead::finish`] (the leader failed or
/// its future was dropped mid-sync), it hands the lead back and wakes the waiters, one
/// of which leads the next sync.
struct SyncLead<'a> {
    group: &'a GroupSync,
    finished: bool,
}

impl SyncLead<'_> {
    /// Ends the lead, recording that every commit up to `synced` is durable.
    fn finish(&mut self, synced: Option<u64>) {
        {
            let mut s = lock(&self.group.state);
            s.running = false;
            if let Some(n) = synced {
                s.synced = s.synced.max(n);
            }
        }
        self.finished = true;
        self.group.done.notify_waiters();
    }
}

impl Drop for SyncLead<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.finish(None);
        }
    }
}

impl Txn {
    pub(crate) fn now(&self) -> Timestamp {
        self.engine.now()
    }

    /// Reads raw bytes: the transaction's own write if any, else the database.
    pub(crate) fn get_raw(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if let Some(pending) = self.overlay.get(&(cf, key.to_vec())) {
            return Ok(pending.clone());
        }
        if self.is_cleared(cf, key) {
            return Ok(None);
        }
        let db = self.engine.db()?;
        let handle = self.engine.cf(&db, cf)?;
        let value = db.get_pinned_cf(handle, key).map_err(|e| engine_err("read", e))?.map(|v| v.to_vec());
        Ok(value)
    }

    /// Reads and decodes a value, seeing pending writes.
    pub(crate) fn get<T: DeserializeOwned>(&self, cf: Cf, key: &[u8]) -> Result<Option<T>> {
        self.get_raw(cf, key)?.map(|bytes| decode(cf, key, &bytes)).transpose()
    }

    /// Whether a key exists, seeing pending writes.
    pub(crate) fn exists(&self, cf: Cf, key: &[u8]) -> Result<bool> {
        Ok(self.get_raw(cf, key)?.is_some())
    }

    /// Queues a put of raw bytes.
    pub(crate) fn put_raw(&mut self, cf: Cf, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        let db = self.engine.db()?;
        self.batch.put_cf(self.engine.cf(&db, cf)?, &key, &value);
        self.overlay.insert((cf, key), Some(value));
        Ok(())
    }

    /// Queues a put of an encoded value.
    pub(crate) fn put<T: Serialize + ?Sized>(&mut self, cf: Cf, key: Vec<u8>, value: &T) -> Result<()> {
        self.put_raw(cf, key, encode(value))
    }

    /// Queues a delete.
    pub(crate) fn delete(&mut self, cf: Cf, key: Vec<u8>) -> Result<()> {
        let db = self.engine.db()?;
        self.batch.delete_cf(self.engine.cf(&db, cf)?, &key);
        self.overlay.insert((cf, key), None);
        Ok(())
    }

    fn is_cleared(&self, cf: Cf, key: &[u8]) -> bool {
        self.cleared.iter().any(|(c, p)| *c == cf && key.starts_with(p))
    }

    /// Queues the delete of every key under `prefix` as one range delete (no scan), for
    /// key spaces a write removes whole (a job's versions and history).
    pub(crate) fn clear_prefix(&mut self, cf: Cf, prefix: &[u8]) -> Result<()> {
        let Some(end) = brine_store::keys::prefix_end(prefix) else {
            self.delete_prefix(cf, prefix)?;
            return Ok(());
        };
        let db = self.engine.db()?;
        self.batch.delete_range_cf(self.engine.cf(&db, cf)?, prefix, &end);
        // Pending writes under the prefix are deleted by the range (it comes later in
        // the batch); the overlay says so too.
        for ((_, _), v) in self.overlay.range_mut((cf, prefix.to_vec())..(cf, end)) {
            *v = None;
        }
        self.cleared.push((cf, prefix.to_vec()));
        Ok(())
    }

    /// The keys under `prefix`, seeing pending writes.
    pub(crate) fn keys_with_prefix(&self, cf: Cf, prefix: &[u8]) -> Result<Vec<Vec<u8>>> {
        Ok(self.merged(cf, prefix, false)?.into_keys().collect())
    }

    /// The keys and values under `prefix`, seeing pending writes (for small key spaces
    /// such as one job's index entries).
    pub(crate) fn entries_with_prefix(&self, cf: Cf, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(self.merged(cf, prefix, true)?.into_iter().collect())
    }

    /// What is under `prefix` once the pending writes apply; values only when asked.
    fn merged(&self, cf: Cf, prefix: &[u8], values: bool) -> Result<BTreeMap<Vec<u8>, Vec<u8>>> {
        let mut out = BTreeMap::new();
        self.engine.scan_prefix(cf, prefix, |k, v| {
            if !self.is_cleared(cf, k) {
                out.insert(k.to_vec(), if values { v.to_vec() } else { Vec::new() });
            }
            Ok(true)
        })?;
        for ((c, k), v) in self.overlay.range((cf, prefix.to_vec())..) {
            if *c != cf || !k.starts_with(prefix) {
                break;
            }
            match v {
                Some(v) => out.insert(k.clone(), if values { v.clone() } else { Vec::new() }),
                None => out.remove(k),
            };
        }
        Ok(out)
    }

    /// The smallest key under `prefix`, seeing pending writes; reads one key from disk
    /// per pending delete it skips, not the whole prefix.
    pub(crate) fn first_key_with_prefix(&self, cf: Cf, prefix: &[u8]) -> Result<Option<Vec<u8>>> {
        let pending = self
            .overlay
            .range((cf, prefix.to_vec())..)
            .take_while(|((c, k), _)| *c == cf && k.starts_with(prefix))
            .find(|(_, v)| v.is_some())
            .map(|((_, k), _)| k.clone());
        let db = self.engine.db()?;
        let mut it = self.engine.iter(&db, cf, prefix, brine_store::keys::prefix_end(prefix))?;
        it.seek(prefix);
        let mut on_disk = None;
        while it.valid() {
            let Some(k) = it.key() else { break };
            let visible = match self.overlay.get(&(cf, k.to_vec())) {
                Some(pending) => pending.is_some(),
                None => !self.is_cleared(cf, k),
            };
            if visible {
                on_disk = Some(k.to_vec());
                break;
            }
            it.next();
        }
        it.status().map_err(|e| engine_err("scan", e))?;
        Ok(match (pending, on_disk) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Visits the keys under `prefix` in order, seeing pending writes, until `visit`
    /// returns false. Reads from disk only as far as `visit` goes, unless this
    /// transaction has written under the prefix (then it merges the whole prefix).
    pub(crate) fn scan_keys(&self, cf: Cf, prefix: &[u8], mut visit: impl FnMut(&[u8]) -> Result<bool>) -> Result<()> {
        let pending = self
            .overlay
            .range((cf, prefix.to_vec())..)
            .next()
            .is_some_and(|((c, k), _)| *c == cf && k.starts_with(prefix));
        if pending || self.cleared.iter().any(|(c, _)| *c == cf) {
            for key in self.keys_with_prefix(cf, prefix)? {
                if !visit(&key)? {
                    break;
                }
            }
            return Ok(());
        }
        self.engine.scan_prefix(cf, prefix, |k, _| visit(k))
    }

    /// Queues deletes of every key under `prefix`.
    pub(crate) fn delete_prefix(&mut self, cf: Cf, prefix: &[u8]) -> Result<usize> {
        let keys = self.keys_with_prefix(cf, prefix)?;
        let n = keys.len();
        for k in keys {
            self.delete(cf, k)?;
        }
        Ok(n)
    }

    /// Queues an event-log entry and returns its sequence number.
    pub(crate) fn append_log(&mut self, operation: Operation, object: LogObject, now: Timestamp) -> Result<u64> {
        self.seqs.log_head += 1;
        let seq = self.seqs.log_head;
        let entry = LogEntry { seq, operation, object_type: object.object_type(), object, timestamp: now };
        self.put(Cf::Events, layout::log_entry(seq), &entry)?;
        Ok(seq)
    }

    /// The next history sequence number.
    pub(crate) fn next_history_seq(&mut self) -> u64 {
        self.seqs.history_seq += 1;
        self.seqs.history_seq
    }

    /// Writes the batch. Sequences and counters that changed are written with it; a
    /// `Sync` store returns once the batch is on disk.
    pub(crate) async fn commit(mut self) -> Result<()> {
        let before = self.guard.clone();
        let changed: Vec<(&[u8], u64, u64)> = vec![
            (meta::LOG_HEAD, before.log_head, self.seqs.log_head),
            (meta::LOG_TRIMMED, before.log_trimmed, self.seqs.log_trimmed),
            (meta::HISTORY_SEQ, before.history_seq, self.seqs.history_seq),
        ];
        for (key, old, new) in changed {
            if old != new {
                self.put(Cf::Meta, key.to_vec(), &new)?;
            }
        }
        for code in 0..9u8 {
            let (old, new) = (before.counts[usize::from(code)], self.seqs.counts[usize::from(code)]);
            if old != new {
                self.put(Cf::Meta, meta::count(code), &new)?;
            }
        }
        if self.batch.is_empty() {
            return Ok(());
        }
        let engine = Arc::clone(&self.engine);
        let batch = std::mem::take(&mut self.batch);
        let commit = {
            // Held while the batch is written, so a close waits for this write (and
            // then syncs it) or has already happened (and nothing is written).
            let db = engine.db.read().unwrap_or_else(PoisonError::into_inner);
            let Some(db) = db.as_ref().filter(|_| !engine.closed.load(Ordering::Acquire)) else {
                return Err(StoreError::Closed);
            };
            let mut wo = WriteOptions::default();
            wo.set_sync(false);
            if let Err(e) = db.write_opt(batch, &wo) {
                // A failed write (a full disk, an I/O error) may have left part of the
                // batch in the write-ahead log; RocksDB itself stops taking writes.
                // Poisoning makes every later write say so by name; reads go on, and
                // a reopen with room again replays what was acknowledged.
                return Err(engine.poison(format!("write failed: {e}")));
            }
            engine.committed.fetch_add(1, Ordering::AcqRel) + 1
        };
        *self.guard = self.seqs.clone();
        match engine.durability {
            Durability::Buffered => {
                engine.publish(commit, &self.seqs);
                drop(self.guard);
                drop(self.holder);
                Ok(())
            }
            Durability::Sync => {
                *lock(&engine.written) = Published { commit, seqs: self.seqs.clone() };
                drop(self.guard);
                drop(self.holder);
                engine.sync_up_to(commit).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use brine_store::model::{Execution, ExecutionId, Job, JobId};
    use brine_store::{ExecutionStore, StoreError};

    use crate::{OpenOptions, RocksExecutionStore};

    fn exec(id: &str) -> Execution {
        Execution::new(ExecutionId::new(id).unwrap(), &Job::new(JobId::new("j").unwrap(), "j"))
    }

    #[tokio::test]
    async fn publication_never_goes_backwards() {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksExecutionStore::open(dir.path().join("s.db"), &OpenOptions::default()).unwrap();
        let engine = store.engine();
        let seqs = |head: u64| super::Seqs { log_head: head, ..super::Seqs::default() };
        // Commit 2 (head 11) is published before commit 1 (head 10) gets to it, as when
        // commit 1's writer is preempted between its write and its publication.
        engine.publish(2, &seqs(11));
        engine.publish(1, &seqs(10));
        assert_eq!(engine.published().unwrap().log_head, 11, "a later commit's sequences stay");
        assert_eq!(*engine.subscribe().borrow(), 11, "the head notification does not go back to 10");
        let log = store.event_log();
        let waited = tokio::time::timeout(std::time::Duration::from_millis(200), log.wait_for(10)).await;
        assert_eq!(waited.unwrap().unwrap(), 11, "a waiter for entry 11 does not sleep");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sync_commit_is_published_only_once_synced() {
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let store = RocksExecutionStore::open(dir.path().join("s.db"), &OpenOptions::default()).unwrap();
        *store.engine().sync_delay.lock().unwrap() = Duration::from_millis(500);
        let log = store.event_log();
        let writer = {
            let store = store.clone();
            tokio::spawn(async move { store.create_execution(exec("e-1"), vec![]).await })
        };
        tokio::time::sleep(Duration::from_millis(150)).await;
        // The batch is written but its WAL sync has not finished: a power loss now could
        // take it back, so the log's readers, its waiters and the counters do not see it.
        assert_eq!(log.head().await.unwrap(), 0);
        assert_eq!(store.get_execution_count(brine_store::model::ExecutionState::Created).await.unwrap(), 0);
        assert!(tokio::time::timeout(Duration::from_millis(50), log.wait_for(0)).await.is_err());
        let batch = log.get_events(brine_store::Position::TrimHorizon, 10, &brine_store::EventFilter::all()).await;
        assert!(batch.unwrap().entries.is_empty());
        // Once synced, the writer's acknowledgement and the publication come together.
        writer.await.unwrap().unwrap();
        assert_eq!(log.head().await.unwrap(), 1);
        assert_eq!(store.get_execution_count(brine_store::model::ExecutionState::Created).await.unwrap(), 1);
        store.close().await.unwrap();
    }

    #[tokio::test]
    async fn a_failed_sync_poisons_the_store_for_writes_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksExecutionStore::open(dir.path().join("s.db"), &OpenOptions::default()).unwrap();
        store.create_execution(exec("e-1"), vec![]).await.unwrap();
        store.engine().fail_next_sync.store(true, std::sync::atomic::Ordering::Release);
        let err = store.create_execution(exec("e-2"), vec![]).await.unwrap_err();
        assert!(matches!(err, StoreError::Poisoned { .. }), "{err:?}");
        assert!(err.to_string().contains("refuses writes") && err.to_string().contains("injected"), "{err}");
        // Every later write is refused with the original reason, before anything is written.
        let err = store.create_execution(exec("e-3"), vec![]).await.unwrap_err();
        assert!(err.to_string().contains("injected"), "{err}");
        assert!(store.get_execution(&ExecutionId::new("e-3").unwrap()).await.unwrap_err().is_not_found());
        let err = store.checkpoint("w", 1).await.unwrap_err();
        assert!(matches!(err, StoreError::Poisoned { .. }), "{err:?}");
        // Reads still work, so an operator can inspect what is there.
        assert_eq!(store.get_execution(&ExecutionId::new("e-1").unwrap()).await.unwrap().revision, 1);
        store.close().await.unwrap();
    }
}
