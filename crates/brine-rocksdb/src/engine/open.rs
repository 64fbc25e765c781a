//! Opening a store: options, directories, the store kind and schema version checks
//! made before anything is written, the first-open setup, and loading the sequences.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, RwLock};

use brine_store::{Result, StoreError};
use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};
use tokio::sync::watch;

use super::{engine_err, Engine, GroupSync, Published, Seqs};
use crate::cf::{Cf, StoreKind};
use crate::codec::{decode, encode};
use crate::layout::meta;
use crate::{OpenError, OpenOptions};

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u64 = 2;

/// The block cache every store of this process shares (64 MiB).
pub(super) fn shared_block_cache() -> &'static rocksdb::Cache {
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

/// The options of the family called `name`: [`db_options`], plus, on the families read
/// by id (records whose create first checks that the id is free), a bloom filter of
/// whole keys in each table and in the memtable, so a lookup of an id that is not
/// there costs a few hashes instead of a search of every table and the memtable, and a
/// hash index in each data block for the lookup of one that is.
/// Families read only by prefix scans (indexes, the event log, histories) go without.
pub fn family_options(name: &str) -> Options {
    let mut opts = db_options();
    let by_id = [Cf::Executions, Cf::Jobs, Cf::Evaluations, Cf::PurgedJobs];
    if by_id.iter().any(|cf| cf.name() == name) {
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_block_cache(shared_block_cache());
        table.set_bloom_filter(10.0, false);
        table.set_whole_key_filtering(true);
        // A hash table in each data block finds a key without the binary search over
        // the block's restart points (readable by any RocksDB since 5.16).
        table.set_data_block_index_type(rocksdb::DataBlockIndexType::BinaryAndHash);
        table.set_data_block_hash_ratio(0.75);
        opts.set_block_based_table_factory(&table);
        opts.set_memtable_whole_key_filtering(true);
        opts.set_memtable_prefix_bloom_ratio(0.05);
    }
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
            brine_store::files::create_private_dir(path)
                .map_err(|source| OpenError::Io { path: path.to_path_buf(), source })?;
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
        let descriptors = names.iter().map(|n| ColumnFamilyDescriptor::new(n, family_options(n)));
        let mut db = DB::open_cf_descriptors(&opts, path, descriptors).map_err(|e| map_open_error(path, e))?;
        if exists {
            check_version_before_writing(&db, path)?;
            for cf in kind.families() {
                if db.cf_handle(cf.name()).is_none() {
                    db.create_cf(cf.name(), &family_options(cf.name())).map_err(|e| map_open_error(path, e))?;
                }
            }
        }
        let engine = Engine::assemble(db, path, kind, options, None);
        let mut engine = engine;
        let seqs = engine.initialize(options, exists)?;
        let (unclean, store_id) =
            engine.mark_open().map_err(|e| OpenError::Store { path: path.to_path_buf(), source: e })?;
        engine.unclean_shutdown = unclean;
        engine.store_id = store_id;
        engine.install(seqs);
        engine.load_space().map_err(|e| OpenError::Store { path: path.to_path_buf(), source: e })?;
        Ok(Arc::new(engine))
    }

    /// An engine over `db`, before its sequences are loaded.
    fn assemble(
        db: DB,
        path: &Path,
        kind: StoreKind,
        options: &OpenOptions,
        secondary: Option<tempfile::TempDir>,
    ) -> Engine {
        Engine {
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
            quota: options.quota_bytes,
            space: Mutex::new(Default::default()),
            alarm: Mutex::new(None),
            secondary,
            #[cfg(test)]
            fail_next_sync: AtomicBool::new(false),
            #[cfg(test)]
            sync_delay: Mutex::new(std::time::Duration::ZERO),
        }
    }

    /// Makes the sequences loaded from `meta` the engine's starting point: the head
    /// watchers see, what readers and the writer start from.
    fn install(&mut self, seqs: Seqs) {
        self.head.send_replace(seqs.log_head);
        self.published = RwLock::new(Published { commit: 0, seqs: seqs.clone() });
        self.written = Mutex::new(Published { commit: 0, seqs: seqs.clone() });
        self.writer = Arc::new(tokio::sync::Mutex::new(seqs));
    }

    /// Opens the existing store at `path` read-only, as a RocksDB *secondary instance*,
    /// for inspection.
    ///
    /// A secondary instance takes no lock and creates no file in the store's directory
    /// (its own info log goes to a scratch directory under the system temp dir, removed
    /// on close), so it opens while a node holds the store open for writing, next to
    /// other inspections, and on a read-only mount, and killing it leaves nothing
    /// behind. It reads the state the store's files and write-ahead log hold when it
    /// opens, and keeps that one state (it never catches up with the primary), so every
    /// read of an inspection sees the same consistent store. RocksDB's plain read-only
    /// mode is not used because it does not support a primary that keeps running (it
    /// may lose files the primary deletes after a compaction) and writes its info log
    /// into the store's directory. The format version and kind are checked as on a
    /// normal open; `unclean_shutdown` reports the open marker as found (set while a
    /// node has the store open, or after a crash).
    pub(crate) fn open_secondary(path: &Path) -> std::result::Result<Arc<Engine>, OpenError> {
        let kind = store_kind_at(path)?;
        let scratch = tempfile::Builder::new()
            .prefix("brine-inspect-")
            .tempdir()
            .map_err(|source| OpenError::Io { path: std::env::temp_dir(), source })?;
        let mut opts = db_options();
        opts.create_if_missing(false);
        opts.create_missing_column_families(false);
        // A secondary keeps every table file open, so a file the primary deletes after a
        // compaction stays readable until the inspection ends.
        opts.set_max_open_files(-1);
        let names = DB::list_cf(&opts, path).map_err(|e| map_open_error(path, e))?;
        let descriptors = names.iter().map(|n| {
            let mut cf_opts = family_options(n);
            cf_opts.set_max_open_files(-1);
            ColumnFamilyDescriptor::new(n, cf_opts)
        });
        let db = DB::open_cf_descriptors_as_secondary(&opts, path, scratch.path(), descriptors)
            .map_err(|e| map_open_error(path, e))?;
        check_version_before_writing(&db, path)?;
        let options = OpenOptions { durability: crate::Durability::Sync, ..OpenOptions::default() };
        let mut engine = Engine::assemble(db, path, kind, &options, Some(scratch));
        let store_err = |e: StoreError| OpenError::Store { path: path.to_path_buf(), source: e };
        let version: Option<u64> = engine.get_value(Cf::Meta, meta::SCHEMA_VERSION).map_err(store_err)?;
        if version.is_none() {
            return Err(OpenError::NotABrineStore {
                path: path.to_path_buf(),
                reason: "it has no schema version".into(),
            });
        }
        if let Some(missing) = kind.families().iter().find(|cf| !names.iter().any(|n| n == cf.name())) {
            return Err(OpenError::NotABrineStore {
                path: path.to_path_buf(),
                reason: format!("its {} family is missing", missing.name()),
            });
        }
        let found: Option<String> = engine.get_value(Cf::Meta, meta::STORE_KIND).map_err(store_err)?;
        if found.as_deref() != Some(kind.as_str()) {
            return Err(OpenError::WrongKind {
                path: path.to_path_buf(),
                found: found.unwrap_or_else(|| "none".into()),
                expected: kind.as_str(),
            });
        }
        let seqs = engine.load_seqs().map_err(store_err)?;
        let marker: Option<u64> = engine.get_value(Cf::Meta, meta::OPEN).map_err(store_err)?;
        engine.unclean_shutdown = marker == Some(1);
        engine.store_id = engine.get_value(Cf::Meta, meta::STORE_ID).map_err(store_err)?.unwrap_or_default();
        engine.install(seqs);
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
}
