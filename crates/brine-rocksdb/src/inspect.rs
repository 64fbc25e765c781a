//! Operator access to a store of either kind, family by family: what `brine db` is
//! built on (Bacalhau's `bbolt` inspection commands: check, buckets, keys, get, stats,
//! compact).
//!
//! An [`Inspector`] opens an existing store (it never creates one), finds its kind from
//! its families, and reads keys and values without knowing the record types' meaning:
//! values are decoded to JSON by family ([`Inspector::get_json`]). Long reads stream:
//! `keys` visits keys one at a time, `stats` and `check` iterate each family once, and
//! `compact_into` copies in bounded batches.

use std::path::Path;
use std::sync::Arc;

use brine_store::model::{Evaluation, Event, Execution, Job, JobHistory, LogEntry};
use brine_store::{Result, StoreError};
use rocksdb::{ColumnFamilyDescriptor, WriteBatch, DB};

use serde::Serialize;

use crate::cf::{Cf, StoreKind};
use crate::check::CheckReport;
use crate::codec::decode;
use crate::engine::{db_options, family_options, Engine};
use crate::layout::meta;
use crate::OpenError;

/// One family's numbers, for `brine db stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FamilyStats {
    /// The family's name.
    pub name: String,
    /// Number of keys (counted, not estimated).
    pub keys: u64,
    /// Bytes of keys and values read while counting.
    pub logical_bytes: u64,
    /// RocksDB's estimate of the live data in SST files.
    pub live_data_bytes: u64,
    /// SST files of the family.
    pub sst_files: u64,
    /// Bytes of those SST files.
    pub sst_bytes: u64,
    /// Bytes in memtables not yet flushed.
    pub memtable_bytes: u64,
}

/// Numbers for a whole store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreStats {
    /// `compute` or `requester`.
    pub kind: String,
    /// Per family, in the store kind's order.
    pub families: Vec<FamilyStats>,
    /// Every file under the store's directory.
    pub disk_bytes: u64,
}

/// An open store for inspection and maintenance.
pub struct Inspector {
    engine: Arc<Engine>,
}

/// Bytes of every file under `path`.
pub fn disk_usage(path: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() { disk_usage(&entry.path())? } else { meta.len() };
    }
    Ok(total)
}

impl Inspector {
    /// Opens the existing store at `path`, of whichever kind it is, read-only: it takes
    /// no lock and writes nothing, so a store a node has open can be inspected while the
    /// node runs (see [`Engine::open_secondary`] for how and why).
    pub fn open(path: impl AsRef<Path>) -> std::result::Result<Inspector, OpenError> {
        Ok(Inspector { engine: Engine::open_secondary(path.as_ref())? })
    }

    /// Whether the store was marked open when the inspection opened it: a node has it
    /// open, or the last one to have it open did not close it (a crash).
    pub fn marked_open(&self) -> bool {
        self.engine.unclean_shutdown
    }

    /// The NOSPACE alarm recorded in the store, if one is raised (see
    /// [`crate::OpenOptions::quota_bytes`]).
    pub fn alarm(&self) -> Result<Option<crate::Alarm>> {
        crate::engine::read_alarm(&*self.engine.db()?)
    }

    /// The store's kind.
    pub fn kind(&self) -> StoreKind {
        self.engine.kind
    }

    /// The store's path.
    pub fn path(&self) -> &Path {
        &self.engine.path
    }

    /// The store's families, in order.
    pub fn families(&self) -> &'static [Cf] {
        self.engine.kind.families()
    }

    /// Visits the keys of `cf` under `prefix`, in order, until `visit` returns `false`.
    pub fn keys(&self, cf: Cf, prefix: &[u8], mut visit: impl FnMut(&[u8]) -> bool) -> Result<()> {
        self.scan(cf, prefix, None, |k, _| visit(k))
    }

    /// Visits the keys and raw values of `cf` under `prefix` that sort after `after`
    /// (all of them when `None`), in order, until `visit` returns `false`: one page of a
    /// listing, the next page starting after the last key of this one.
    pub fn scan(
        &self,
        cf: Cf,
        prefix: &[u8],
        after: Option<&[u8]>,
        mut visit: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        let db = self.engine.db()?;
        let mut it = self.engine.iter(&db, cf, prefix, brine_store::keys::prefix_end(prefix))?;
        match after {
            Some(after) if after >= prefix => it.seek(after),
            _ => it.seek(prefix),
        }
        while it.valid() {
            let (Some(k), Some(v)) = (it.key(), it.value()) else { break };
            if after.is_some_and(|a| k <= a) {
                it.next();
                continue;
            }
            if !visit(k, v) {
                return Ok(());
            }
            it.next();
        }
        it.status().map_err(|e| StoreError::backend("scan", e))
    }

    /// The raw value of `key` in `cf`.
    pub fn get_raw(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let db = self.engine.db()?;
        let value = db
            .get_pinned_cf(self.engine.cf(&db, cf)?, key)
            .map_err(|e| StoreError::backend("read", e))?
            .map(|v| v.to_vec());
        Ok(value)
    }

    /// The value of `key` in `cf`, decoded by family and given as JSON; `Corrupt` when
    /// it does not decode. Index families hold no value (`null`) or a job id (string).
    pub fn get_json(&self, cf: Cf, key: &[u8]) -> Result<Option<serde_json::Value>> {
        let Some(raw) = self.get_raw(cf, key)? else { return Ok(None) };
        decode_json(cf, key, &raw).map(Some)
    }

    /// Per-family numbers and the size on disk.
    pub fn stats(&self) -> Result<StoreStats> {
        let db = self.engine.db()?;
        let live = db.live_files().map_err(|e| StoreError::backend("list SST files", e))?;
        let mut families = Vec::new();
        for &cf in self.families() {
            let handle = self.engine.cf(&db, cf)?;
            let (mut keys, mut logical_bytes) = (0u64, 0u64);
            self.engine.scan_prefix(cf, &[], |k, v| {
                keys += 1;
                logical_bytes += (k.len() + v.len()) as u64;
                Ok(true)
            })?;
            let prop = |name: &str| -> Result<u64> {
                Ok(db
                    .property_int_value_cf(handle, name)
                    .map_err(|e| StoreError::backend("read a property", e))?
                    .unwrap_or(0))
            };
            let files: Vec<_> = live.iter().filter(|f| f.column_family_name == cf.name()).collect();
            families.push(FamilyStats {
                name: cf.name().to_owned(),
                keys,
                logical_bytes,
                live_data_bytes: prop("rocksdb.estimate-live-data-size")?,
                sst_files: files.len() as u64,
                sst_bytes: files.iter().map(|f| f.size as u64).sum(),
                memtable_bytes: prop("rocksdb.cur-size-all-mem-tables")?,
            });
        }
        let disk_bytes = disk_usage(&self.engine.path).map_err(|e| StoreError::backend("measure the store", e))?;
        Ok(StoreStats { kind: self.kind().as_str().to_owned(), families, disk_bytes })
    }

    /// The consistency check (see [`crate::check`]).
    pub fn check(&self) -> Result<CheckReport> {
        crate::check::check(&self.engine)
    }

    /// Copies every family into a fresh store at `dest` (which must not exist or be
    /// empty), compacts the copy, and returns the sizes on disk of the store and the
    /// copy. Copies in batches of `batch` keys, calling `progress` with the keys copied.
    pub fn compact_into(&self, dest: &Path, batch: usize, mut progress: impl FnMut(u64)) -> Result<(u64, u64)> {
        let refuse =
            |kind: std::io::ErrorKind, why: String| Err(StoreError::backend("compact", std::io::Error::new(kind, why)));
        let source = resolved(&self.engine.path);
        let target = resolved(dest);
        if target == source {
            return refuse(std::io::ErrorKind::InvalidInput, format!("{} is the store itself", dest.display()));
        }
        if target.starts_with(&source) {
            return refuse(
                std::io::ErrorKind::InvalidInput,
                format!("{} is inside the store {}: write the copy elsewhere", dest.display(), source.display()),
            );
        }
        let busy = dest.exists() && std::fs::read_dir(dest).map(|mut d| d.next().is_some()).unwrap_or(true);
        if busy {
            return refuse(std::io::ErrorKind::AlreadyExists, format!("{} exists and is not empty", dest.display()));
        }
        brine_store::files::create_private_dir(dest)
            .map_err(|e| StoreError::backend(format!("create {}", dest.display()), e))?;
        let before = disk_usage(&self.engine.path).map_err(|e| StoreError::backend("measure the store", e))?;
        let names: Vec<&str> = self.families().iter().map(|c| c.name()).collect();
        let out = DB::open_cf_descriptors(
            &db_options(),
            dest,
            names.iter().map(|n| ColumnFamilyDescriptor::new(*n, family_options(n))),
        )
        .map_err(|e| StoreError::backend(format!("create {}", dest.display()), e))?;
        let mut copied = 0u64;
        for &cf in self.families() {
            let target = out.cf_handle(cf.name()).ok_or_else(|| StoreError::Corrupt {
                cf: cf.name().to_owned(),
                key: String::new(),
                reason: "column family missing in the copy".into(),
            })?;
            let mut wb = WriteBatch::default();
            let write = |wb: &mut WriteBatch| -> Result<()> {
                out.write(std::mem::take(wb)).map_err(|e| StoreError::backend("write the copy", e))
            };
            self.engine.scan_prefix(cf, &[], |k, v| {
                wb.put_cf(target, k, v);
                copied += 1;
                if wb.len() >= batch.max(1) {
                    write(&mut wb)?;
                    progress(copied);
                }
                Ok(true)
            })?;
            if !wb.is_empty() {
                write(&mut wb)?;
            }
            progress(copied);
        }
        // `meta` is copied as it is, open marker included: a copy of a store that crashed,
        // or of a live one, still gets its repair scan on its first open.
        for &cf in self.families() {
            if let Some(h) = out.cf_handle(cf.name()) {
                out.flush_cf(h).map_err(|e| StoreError::backend("flush the copy", e))?;
                out.compact_range_cf(h, None::<&[u8]>, None::<&[u8]>);
            }
        }
        drop(out);
        // RocksDB keeps old logs and manifests until the next open; they are not data.
        let after = disk_usage(dest).map_err(|e| StoreError::backend("measure the copy", e))?;
        Ok((before, after))
    }

    /// Closes the store (cleanly).
    pub async fn close(&self) -> Result<()> {
        self.engine.close().await
    }
}

/// `path` made absolute with its existing part's symbolic links and `..` resolved, and
/// the rest (which does not exist yet) normalised by its names: what a destination
/// really names, to compare it with a store's directory.
fn resolved(path: &Path) -> std::path::PathBuf {
    let mut rest = Vec::new();
    let mut existing = path;
    let base = loop {
        if let Ok(real) = existing.canonicalize() {
            break real;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
            }
            // `..` or a root that does not resolve: compare as given.
            _ => break std::path::absolute(existing).unwrap_or_else(|_| existing.to_path_buf()),
        }
    };
    let mut out = base;
    for part in rest.iter().rev() {
        if part == ".." {
            out.pop();
        } else if part != "." {
            out.push(part);
        }
    }
    out
}

/// Decodes a stored value of `cf` (under `key`) to JSON, by family; `Corrupt` when it
/// does not decode.
pub fn decode_json(cf: Cf, key: &[u8], raw: &[u8]) -> Result<serde_json::Value> {
    fn json<T: serde::de::DeserializeOwned + Serialize>(cf: Cf, key: &[u8], raw: &[u8]) -> Result<serde_json::Value> {
        let value: T = decode(cf, key, raw)?;
        serde_json::to_value(value).map_err(|e| StoreError::backend("render JSON", e))
    }
    match cf {
        Cf::Executions => json::<Execution>(cf, key, raw),
        Cf::ExecutionEvents => json::<Event>(cf, key, raw),
        Cf::Events => json::<LogEntry>(cf, key, raw),
        Cf::Checkpoints => json::<u64>(cf, key, raw),
        Cf::Jobs | Cf::JobVersions => json::<Job>(cf, key, raw),
        Cf::JobHistory => json::<JobHistory>(cf, key, raw),
        Cf::Evaluations => json::<Evaluation>(cf, key, raw),
        Cf::Meta if meta::holds_text(key) => json::<String>(cf, key, raw),
        Cf::PurgedJobs => json::<String>(cf, key, raw),
        Cf::Meta => json::<u64>(cf, key, raw),
        _ if raw.is_empty() => Ok(serde_json::Value::Null),
        _ => match std::str::from_utf8(raw) {
            Ok(text) => Ok(serde_json::Value::String(text.to_owned())),
            Err(_) => Ok(serde_json::Value::String(brine_store::keys::printable(raw))),
        },
    }
}
