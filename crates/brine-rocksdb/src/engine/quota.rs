//! The space quota (`OpenOptions::quota_bytes`, `BRINE_QUOTA_BYTES`), in the manner of
//! etcd's `--quota-backend-bytes` and its NOSPACE alarm.
//!
//! The store's size is what its directory holds on disk (tables, write-ahead logs,
//! manifests, info logs): what a full disk would be full of. It is measured by listing
//! the directory when the store opens and again after every [`REMEASURE_BYTES`] written;
//! in between, the bytes of each batch written are added to the last measurement. A
//! write that adds data and would take the estimate past the quota has the directory
//! measured afresh; still past it, the write is refused with `StoreError::NoSpace` and
//! the alarm is raised: recorded in `meta` (`nospace_alarm`, synced) so it survives a
//! restart. While the alarm is raised, every write that adds data is refused at once;
//! writes that only free space (deletes, purges, retention, checkpoints, repair) go on,
//! and so do reads and compaction. An operator frees space, compacts, and disarms the
//! alarm ([`Engine::disarm`], `brine db alarm disarm`); a store still past its quota
//! raises it again at the next write that adds data.

use std::path::Path;
use std::sync::atomic::Ordering;

use brine_store::model::Timestamp;
use brine_store::{Result, StoreError};
use rocksdb::{WriteBatch, WriteOptions};
use serde::{Deserialize, Serialize};

use super::{engine_err, lock, Engine};
use crate::cf::Cf;
use crate::codec::{decode, encode};
use crate::layout::meta;

/// Bytes written between two measurements of the directory.
const REMEASURE_BYTES: u64 = 1 << 20;

/// A raised NOSPACE alarm, as `meta/nospace_alarm` records it (a JSON string).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alarm {
    /// When it was raised.
    pub raised_at: Timestamp,
    /// The store's size then, in bytes.
    pub size: u64,
    /// The quota then, in bytes.
    pub quota: u64,
}

impl Alarm {
    /// The error a write refused under this alarm gets.
    pub(crate) fn error(&self) -> StoreError {
        StoreError::NoSpace { size: self.size, quota: self.quota }
    }
}

/// What a write does to the store's size, for the quota: a write is admitted while the
/// alarm is raised only when every step of it frees space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum SpaceUse {
    /// Nothing said: counts as adding data.
    #[default]
    Unknown,
    /// Only deletes (and the log entries and markers that go with them).
    Frees,
    /// Adds data.
    Adds,
}

/// The last measurement of the directory and the bytes written since.
#[derive(Debug, Default)]
pub(crate) struct Space {
    measured: u64,
    since: u64,
}

/// The bytes the regular files directly in `path` take.
pub(crate) fn dir_size(path: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        // A file RocksDB deletes between the listing and the stat is not there.
        match entry.metadata() {
            Ok(m) if m.is_file() => total += m.len(),
            _ => {}
        }
    }
    Ok(total)
}

/// Reads the recorded alarm, if any, from an open database's `meta`.
pub(crate) fn read_alarm(db: &rocksdb::DB) -> Result<Option<Alarm>> {
    let Some(handle) = db.cf_handle(Cf::Meta.name()) else { return Ok(None) };
    let Some(raw) = db.get_pinned_cf(handle, meta::NOSPACE_ALARM).map_err(|e| engine_err("read the alarm", e))? else {
        return Ok(None);
    };
    let text: String = decode(Cf::Meta, meta::NOSPACE_ALARM, &raw)?;
    serde_json::from_str(&text).map(Some).map_err(|e| StoreError::Corrupt {
        cf: Cf::Meta.name().into(),
        key: "nospace_alarm".into(),
        reason: e.to_string(),
    })
}

impl Engine {
    /// The raised alarm, if any.
    pub(crate) fn alarm(&self) -> Option<Alarm> {
        *lock(&self.alarm)
    }

    /// Measures the directory now, resetting the estimate.
    fn measure(&self) -> Result<u64> {
        let size = dir_size(&self.path).map_err(|e| StoreError::backend("measure the store's size", e))?;
        *lock(&self.space) = Space { measured: size, since: 0 };
        Ok(size)
    }

    /// Admits a write of `bytes` that uses space as `space` says, under the commit lock:
    /// refuses one that adds data while the alarm is raised, and raises the alarm for
    /// one that would take the store past its quota.
    pub(crate) fn admit(&self, bytes: u64, space: SpaceUse) -> Result<()> {
        if space == SpaceUse::Frees {
            return Ok(());
        }
        if let Some(alarm) = self.alarm() {
            return Err(alarm.error());
        }
        let Some(quota) = self.quota else { return Ok(()) };
        let estimate = {
            let s = lock(&self.space);
            s.measured + s.since
        };
        if estimate + bytes <= quota {
            return Ok(());
        }
        let size = self.measure()?;
        if size + bytes <= quota {
            return Ok(());
        }
        let alarm = Alarm { raised_at: self.now(), size, quota };
        self.record_alarm(Some(&alarm))?;
        *lock(&self.alarm) = Some(alarm);
        Err(alarm.error())
    }

    /// Counts `bytes` just written; measures the directory again every
    /// [`REMEASURE_BYTES`].
    pub(crate) fn written(&self, bytes: u64) {
        if self.quota.is_none() {
            return;
        }
        let due = {
            let mut s = lock(&self.space);
            s.since += bytes;
            s.since >= REMEASURE_BYTES
        };
        if due {
            // A failed listing keeps the estimate, which only grows.
            let _ = self.measure();
        }
    }

    /// Writes (or, with `None`, deletes) the alarm record, synced.
    fn record_alarm(&self, alarm: Option<&Alarm>) -> Result<()> {
        let db = self.db()?;
        let handle = self.cf(&db, Cf::Meta)?;
        let mut batch = WriteBatch::default();
        match alarm {
            Some(a) => {
                let text = serde_json::to_string(a).map_err(|e| StoreError::backend("encode the alarm", e))?;
                batch.put_cf(handle, meta::NOSPACE_ALARM, encode(text.as_str()));
            }
            None => batch.delete_cf(handle, meta::NOSPACE_ALARM),
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        db.write_opt(batch, &wo).map_err(|e| engine_err("record the alarm", e))
    }

    /// Disarms the alarm: writes that add data are admitted again (and raise it anew
    /// if the store is still past its quota). Returns the alarm that was raised.
    pub(crate) async fn disarm(&self) -> Result<Option<Alarm>> {
        // Under the commit lock, so no write is admitted against a half-disarmed alarm.
        let _guard = self.writer.lock().await;
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        let was = self.alarm();
        if was.is_some() {
            self.record_alarm(None)?;
            *lock(&self.alarm) = None;
            let _ = self.measure();
        }
        Ok(was)
    }

    /// Loads the recorded alarm and measures the directory (at open).
    pub(crate) fn load_space(&self) -> Result<()> {
        let db = self.db()?;
        *lock(&self.alarm) = read_alarm(&db)?;
        if self.quota.is_some() {
            self.measure()?;
        }
        Ok(())
    }
}
