//! Format versions and the numbered steps between them (`brine migrate`).
//!
//! A store records its format version in `meta/schema_version`. Opening a store of an
//! older version is refused ([`crate::OpenError::OlderSchema`]) naming the command
//! that upgrades it; [`up`] applies each pending step in order. A step writes in bounded
//! batches and bumps the version only in its last, synced batch, so a step cut short
//! (a crash, a kill) leaves the store at its old version, and running [`up`] again
//! redoes the step from the start: every step is idempotent (it derives what it writes
//! from records no one else can change meanwhile, as no other build opens the store).
//! Each applied step is recorded in `meta` under `layout::meta::migrated(to)` with the
//! time it finished.
//!
//! Steps:
//! - **2**: index jobs by state and by label (`idx_jobs_by_state_*`,
//!   `idx_jobs_by_label_*`), so filtered job listings and purge candidates read only
//!   matching entries. Compute stores have nothing to index: only the version moves.

use std::path::{Path, PathBuf};

use brine_store::model::{Job, Timestamp};
use brine_store::StoreError;
use rocksdb::{ColumnFamilyDescriptor, IteratorMode, WriteBatch, WriteOptions, DB};
use serde::Serialize;

use crate::cf::{Cf, StoreKind};
use crate::codec::{decode, encode};
use crate::engine::{db_options, family_options, store_kind_at, SCHEMA_VERSION};
use crate::layout::meta;
use crate::OpenError;

/// Records written per batch by a step.
const BATCH: usize = 1000;

/// A step's work on the open database of a store of the given kind, reporting the
/// records handled so far; returns how many it handled.
type Apply = fn(&DB, StoreKind, &mut dyn FnMut(u64)) -> Result<u64, StoreError>;

/// One numbered step: from `to - 1` to `to`.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    /// The version the step produces.
    pub to: u64,
    /// What it does, for `brine migrate status`.
    pub description: &'static str,
    apply: Apply,
}

/// Every step, in order. The oldest version a step starts from is the oldest this
/// build upgrades.
pub const STEPS: &[Step] = &[Step {
    to: 2,
    description: "index jobs by state and by label (requester stores; compute stores only change version)",
    apply: index_jobs_by_state_and_label,
}];

/// Whether a store of `version` can be upgraded to [`SCHEMA_VERSION`] by [`up`].
pub fn upgradable(version: u64) -> bool {
    version < SCHEMA_VERSION && STEPS.first().is_some_and(|s| version >= s.to - 1)
}

/// A migration that cannot run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// The store cannot be opened (missing, not a store, in use, …).
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The target version cannot be reached from the store's.
    #[error("cannot migrate {} to version {to}: {reason}", path.display())]
    Target {
        /// The store.
        path: PathBuf,
        /// The version asked for.
        to: u64,
        /// Why not.
        reason: String,
    },
    /// The checkpoint taken before the first step could not be made; nothing was
    /// migrated.
    #[error("cannot back up {} to {} before migrating: {reason}", path.display(), dest.display())]
    Backup {
        /// The store.
        path: PathBuf,
        /// Where the checkpoint was to go.
        dest: PathBuf,
        /// Why it could not be made.
        reason: String,
    },
    /// A step failed; the store stays at the version before it.
    #[error("step {to} of {}: {source}", path.display())]
    Step {
        /// The store.
        path: PathBuf,
        /// The step's target version.
        to: u64,
        /// What failed.
        #[source]
        source: StoreError,
    },
}

/// Where a store stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// The store.
    pub path: PathBuf,
    /// Its kind.
    pub kind: String,
    /// Its format version.
    pub current: u64,
    /// The version this build reads and writes.
    pub target: u64,
    /// The steps [`up`] would apply, in order: version and description.
    pub pending: Vec<PendingStep>,
}

/// A step still to apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingStep {
    /// The version it produces.
    pub to: u64,
    /// What it does.
    pub description: &'static str,
}

/// What [`up`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The version before.
    pub from: u64,
    /// The version after.
    pub to: u64,
    /// Each step applied, with the records it wrote.
    pub applied: Vec<AppliedStep>,
    /// Nothing was written (a dry run).
    pub dry_run: bool,
    /// Where the checkpoint of the store as it was before the first step went, if one
    /// was taken.
    pub backup: Option<PathBuf>,
}

/// One applied step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppliedStep {
    /// The version it produced.
    pub to: u64,
    /// Records it read and wrote index entries for.
    pub records: u64,
}

/// The database at `path`, opened with every family of its kind (adding the missing
/// ones), and its version; refuses a store no step upgrades.
fn open(path: &Path) -> Result<(DB, StoreKind, u64), OpenError> {
    let kind = store_kind_at(path)?;
    let opts = db_options();
    let mut names: Vec<String> = DB::list_cf(&opts, path)
        .map_err(|e| crate::engine::map_open_error(path, e))?
        .into_iter()
        .filter(|n| n != "default")
        .collect();
    for cf in kind.families() {
        if !names.iter().any(|n| n == cf.name()) {
            names.push(cf.name().to_owned());
        }
    }
    let descriptors = names.iter().map(|n| ColumnFamilyDescriptor::new(n, family_options(n)));
    let db = DB::open_cf_descriptors(&opts, path, descriptors).map_err(|e| crate::engine::map_open_error(path, e))?;
    let store = |source| OpenError::Store { path: path.to_path_buf(), source };
    let meta_cf = db.cf_handle(Cf::Meta.name()).ok_or_else(|| OpenError::NotABrineStore {
        path: path.to_path_buf(),
        reason: "it has no meta family".into(),
    })?;
    let raw = db.get_cf(meta_cf, meta::SCHEMA_VERSION).map_err(|e| crate::engine::map_open_error(path, e))?;
    let version: u64 = match raw {
        Some(raw) => decode(Cf::Meta, meta::SCHEMA_VERSION, &raw).map_err(store)?,
        None => {
            return Err(OpenError::NotABrineStore {
                path: path.to_path_buf(),
                reason: "it has no schema version".into(),
            })
        }
    };
    // An older version is what a migration is for; any other mismatch is refused.
    match crate::engine::version_error(path, version) {
        None | Some(OpenError::OlderSchema { .. }) => Ok((db, kind, version)),
        Some(refused) => Err(refused),
    }
}

fn pending(from: u64) -> impl Iterator<Item = &'static Step> {
    STEPS.iter().filter(move |s| s.to > from && s.to <= SCHEMA_VERSION)
}

/// Where the store at `path` stands: its version and the steps [`up`] would apply.
/// Takes the store's lock while it reads (a store in use is refused).
pub fn status(path: &Path) -> Result<Status, MigrateError> {
    let (db, kind, current) = open(path)?;
    drop(db);
    Ok(Status {
        path: path.to_path_buf(),
        kind: kind.as_str().to_owned(),
        current,
        target: SCHEMA_VERSION,
        pending: pending(current).map(|s| PendingStep { to: s.to, description: s.description }).collect(),
    })
}

/// Applies every pending step to the store at `path`, in order, calling `progress` with
/// the records each step has handled so far. With `dry_run`, reports the steps and
/// writes nothing.
pub fn up(path: &Path, dry_run: bool, progress: impl FnMut(u64, u64)) -> Result<Report, MigrateError> {
    up_with(path, &UpOptions { dry_run, ..UpOptions::default() }, progress)
}

/// How [`up_with`] runs.
#[derive(Debug, Clone, Default)]
pub struct UpOptions {
    /// Report the steps; write nothing.
    pub dry_run: bool,
    /// Stop at this version (default: this build's).
    pub to: Option<u64>,
    /// Take a RocksDB checkpoint of the store here first (hard links where the
    /// filesystem allows, copies otherwise; it must not exist yet), when there is a
    /// step to apply: the store as it was, to go back to if a step goes wrong.
    pub backup: Option<PathBuf>,
}

/// [`up`] with a target version and a backup first (see [`UpOptions`]).
pub fn up_with(path: &Path, options: &UpOptions, mut progress: impl FnMut(u64, u64)) -> Result<Report, MigrateError> {
    let (db, kind, from) = open(path)?;
    let to = options.to.unwrap_or(SCHEMA_VERSION);
    let target = |reason: String| MigrateError::Target { path: path.to_path_buf(), to, reason };
    if to > SCHEMA_VERSION {
        return Err(target(format!("this build knows versions up to {SCHEMA_VERSION}")));
    }
    if to < from {
        return Err(target(format!("the store is at version {from} already, and steps only go up")));
    }
    let dry_run = options.dry_run;
    let steps: Vec<&Step> = pending(from).filter(|s| s.to <= to).collect();
    let mut report = Report { from, to: from, applied: Vec::new(), dry_run, backup: None };
    if let (Some(dest), false, false) = (&options.backup, dry_run, steps.is_empty()) {
        let failed = |reason: String| MigrateError::Backup { path: path.to_path_buf(), dest: dest.clone(), reason };
        if dest.exists() {
            return Err(failed("it exists already".into()));
        }
        db.flush_wal(true).map_err(|e| failed(e.to_string()))?;
        let checkpoint = rocksdb::checkpoint::Checkpoint::new(&db).map_err(|e| failed(e.to_string()))?;
        checkpoint.create_checkpoint(dest).map_err(|e| failed(e.to_string()))?;
        report.backup = Some(dest.clone());
    }
    for step in steps {
        if dry_run {
            report.applied.push(AppliedStep { to: step.to, records: 0 });
            report.to = step.to;
            continue;
        }
        let step_err = |source| MigrateError::Step { path: path.to_path_buf(), to: step.to, source };
        let records = (step.apply)(&db, kind, &mut |n| progress(step.to, n)).map_err(step_err)?;
        // The version moves last, in a synced batch of its own.
        let meta_cf = db.cf_handle(Cf::Meta.name()).ok_or_else(|| step_err(missing(Cf::Meta)))?;
        let mut batch = WriteBatch::default();
        batch.put_cf(meta_cf, meta::SCHEMA_VERSION, encode(&step.to));
        batch.put_cf(meta_cf, meta::migrated(step.to), encode(&Timestamp::now().as_nanos()));
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        db.write_opt(batch, &wo).map_err(|e| step_err(StoreError::backend("record the new version", e)))?;
        report.applied.push(AppliedStep { to: step.to, records });
        report.to = step.to;
    }
    db.flush_wal(true).map_err(|e| MigrateError::Step {
        path: path.to_path_buf(),
        to: report.to,
        source: StoreError::backend("sync the WAL", e),
    })?;
    Ok(report)
}

fn missing(cf: Cf) -> StoreError {
    StoreError::Corrupt { cf: cf.name().into(), key: String::new(), reason: "the family is missing".into() }
}

/// Step 2: writes the state and label index entries of every job.
fn index_jobs_by_state_and_label(db: &DB, kind: StoreKind, progress: &mut dyn FnMut(u64)) -> Result<u64, StoreError> {
    if kind != StoreKind::Requester {
        return Ok(0);
    }
    let new = [Cf::IdxJobsByStateCreate, Cf::IdxJobsByStateModify, Cf::IdxJobsByLabelCreate, Cf::IdxJobsByLabelModify];
    let jobs_cf = db.cf_handle(Cf::Jobs.name()).ok_or_else(|| missing(Cf::Jobs))?;
    let mut batch = WriteBatch::default();
    let mut done = 0u64;
    let write = |batch: WriteBatch| db.write(batch).map_err(|e| StoreError::backend("write index entries", e));
    for item in db.iterator_cf(jobs_cf, IteratorMode::Start) {
        let (key, value) = item.map_err(|e| StoreError::backend("read the jobs", e))?;
        let job: Job = decode(Cf::Jobs, &key, &value)?;
        for (cf, k, v) in crate::layout::job_indexes(&job) {
            if new.contains(&cf) {
                batch.put_cf(db.cf_handle(cf.name()).ok_or_else(|| missing(cf))?, k, v);
            }
        }
        done += 1;
        if done.is_multiple_of(BATCH as u64) {
            write(std::mem::take(&mut batch))?;
            progress(done);
        }
    }
    write(batch)?;
    progress(done);
    Ok(done)
}
