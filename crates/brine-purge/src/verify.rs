//! Listing and verifying an archive directory: what `brine archive list` and `brine
//! archive verify` print.
//!
//! [`verify`] reads every archive file to its end (each line must decode), then every
//! index line: it must be UTF-8 and `ID     STAMP`, its archive must exist and hold the
//! id, and no line may repeat an earlier one (the same id indexed twice for one
//! archive). An id in an archive that the index does not name is a problem too, unless
//! a pending marker says that archive's purge was interrupted (the next purge indexes
//! it). Memory holds the ids of the archives (one set per file), not their records.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;

use serde::Serialize;

use crate::archive::{self, parse_archive_name, parse_index_line, Compression, Index, Pending, Stamp, INDEX_FILE};
use crate::error::PurgeError;

/// One archive file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchiveFile {
    /// The file's name in the directory.
    pub name: String,
    /// Its stamp: the Unix time it was created at (and its number within that second).
    pub stamp: String,
    /// The Unix time it was created at.
    pub created: u64,
    /// `none`, `gzip` or `zstd`.
    pub compression: Compression,
    /// Its size on disk.
    pub bytes: u64,
    /// The jobs (lines) it holds, when it was read (`verify`); `None` from `list`.
    pub jobs: Option<u64>,
}

/// What [`verify`] found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verification {
    /// The archive files, oldest first, with their job counts.
    pub files: Vec<ArchiveFile>,
    /// Index lines read.
    pub index_lines: u64,
    /// Pending markers: purges that were interrupted (the next purge finishes them).
    pub pending: Vec<String>,
    /// Each problem, one line naming the file (and line) it is in.
    pub problems: Vec<String>,
}

impl Verification {
    /// Whether no problem was found.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The archive files in `dir`, oldest first (without reading them).
pub fn list(dir: &Path) -> Result<Vec<ArchiveFile>, PurgeError> {
    let entries = std::fs::read_dir(dir).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => PurgeError::NoArchiveDir { dir: dir.to_path_buf() },
        _ => PurgeError::Io { what: "list the archive directory", path: dir.to_path_buf(), source },
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| PurgeError::Io {
            what: "list the archive directory",
            path: dir.to_path_buf(),
            source,
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((stamp, compression)) = parse_archive_name(&name) else { continue };
        let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
        files.push((
            stamp,
            ArchiveFile { name, stamp: stamp.to_string(), created: stamp.time, compression, bytes, jobs: None },
        ));
    }
    files.sort_by_key(|(stamp, _)| *stamp);
    Ok(files.into_iter().map(|(_, f)| f).collect())
}

/// Verifies the archive directory `dir` (see the module documentation), calling
/// `progress` with the files read so far.
pub fn verify(dir: &Path, mut progress: impl FnMut(u64)) -> Result<Verification, PurgeError> {
    let mut report = Verification { files: list(dir)?, ..Verification::default() };
    let pending = Pending::read_all(dir)?;
    report.pending = pending.iter().map(Pending::marker_name).collect();
    let interrupted: HashSet<String> = pending.iter().map(|p| p.file.clone()).collect();
    // The ids each archive holds, by stamp.
    let mut held: BTreeMap<Stamp, BTreeSet<String>> = BTreeMap::new();
    for (n, file) in report.files.iter_mut().enumerate() {
        let path = dir.join(&file.name);
        let stamp: Stamp =
            file.stamp.parse().map_err(|reason| PurgeError::BadArchive { path: path.clone(), line: 0, reason })?;
        let ids = held.entry(stamp).or_default();
        let mut jobs = 0;
        for (line, record) in archive::read_archive(&path)?.enumerate() {
            match record {
                Ok(record) => match archive::record_id(&record) {
                    Some(id) => {
                        jobs += 1;
                        if !ids.insert(id.to_owned()) {
                            report.problems.push(format!(
                                "{} line {}: job {id} appears twice in the file",
                                file.name,
                                line + 1
                            ));
                        }
                    }
                    None => report.problems.push(format!("{} line {}: a record without a job id", file.name, line + 1)),
                },
                Err(e) => report.problems.push(format!("{e} (the file does not decode to its end)")),
            }
        }
        file.jobs = Some(jobs);
        progress(n as u64 + 1);
    }
    let index_path = dir.join(INDEX_FILE);
    if !index_path.exists() {
        if !report.files.is_empty() {
            report.problems.push(format!("{INDEX_FILE} is missing, but the directory holds archive files"));
        }
        return Ok(report);
    }
    let mut seen: HashSet<(String, Stamp)> = HashSet::new();
    let mut indexed: BTreeMap<Stamp, HashSet<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    Index::new(dir).each_line(|n, line| {
        report.index_lines += 1;
        let Some(line) = line else {
            problems.push(format!("{INDEX_FILE} line {n}: not UTF-8 (lookups skip it)"));
            return;
        };
        let Some((id, stamp)) = parse_index_line(line) else {
            problems.push(format!("{INDEX_FILE} line {n}: not `ID     STAMP`: {line:?}"));
            return;
        };
        if !seen.insert((id.to_owned(), stamp)) {
            problems.push(format!("{INDEX_FILE} line {n}: {id} is indexed twice for archive {stamp}"));
        }
        match held.get(&stamp) {
            None => problems
                .push(format!("{INDEX_FILE} line {n}: {id} is in archive {stamp}, which is not in the directory")),
            Some(ids) if !ids.contains(id) => {
                problems.push(format!("{INDEX_FILE} line {n}: {id} is not in archive {stamp}, which the line names"))
            }
            Some(_) => {}
        }
        indexed.entry(stamp).or_default().insert(id.to_owned());
    })?;
    report.problems.extend(problems);
    for file in &report.files {
        if interrupted.contains(&file.name) {
            continue;
        }
        let Ok(stamp) = file.stamp.parse::<Stamp>() else { continue };
        let names = indexed.get(&stamp);
        let missing: Vec<&String> =
            held.get(&stamp).into_iter().flatten().filter(|id| !names.is_some_and(|n| n.contains(*id))).collect();
        if let Some(first) = missing.first() {
            report.problems.push(format!(
                "{}: {} job(s) the index does not name (the first: {first})",
                file.name,
                missing.len()
            ));
        }
    }
    Ok(report)
}
