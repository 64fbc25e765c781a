//! Archive files, the index file and the pending marker: everything purge writes to the
//! archive directory, and the reader `brine archive get` uses.
//!
//! - `job_archive_<STAMP>.jsonl` (`.gz`, `.zst` when compressed): one JSON object per
//!   line, one line per job with everything that belonged to it. The [`Stamp`] is the
//!   Unix time the file was created, with `-N` added for the N-th file created within
//!   that second (the real time is kept, never bumped). Written to a `.tmp` name,
//!   fsynced, renamed, and the directory fsynced.
//! - `job_index`: one line per archived id, `ID     STAMP` (the id, five spaces, the
//!   archive's stamp), appended and fsynced before the records are deleted. Readers take
//!   it line by line as bytes: a line that is not UTF-8 or not of that form is skipped
//!   (and reported), not fatal to every lookup.
//! - `job_purge.lock`: locked (`flock`) by the purge running on the directory; a second
//!   one is refused. `archive_kind`: `requester` or `compute`, the kind of store whose
//!   archives the directory holds; a purge of the other kind is refused.
//! - `job_purge.pending.<STAMP>`: names an archive in progress and the store it is of
//!   (`STAMP FILE STORE_ID`), from before its file is written until its records are
//!   deleted and those deletions are durable (at most two at once: one being written
//!   while the previous one's records are deleted). A run that finds markers finishes
//!   those archives first, so a crash at any point leaves every record in the store, in
//!   a synced archive, or both, and the index never holds an id twice. A marker of
//!   another store (another node's store sharing the directory) is refused, and a marker
//!   whose file is not the archive name of its stamp is refused as damaged. Markers of
//!   builds that did not record the store (`STAMP FILE`) are finished as before.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use brine_store::files::{create_private_file, private_file_options};
use serde::{Deserialize, Serialize};

use crate::error::PurgeError;

/// The index file's name.
pub const INDEX_FILE: &str = "job_index";
/// The pending markers' name prefix (`job_purge.pending.<STAMP>`).
pub const PENDING_FILE: &str = "job_purge.pending";
/// The archive files' name prefix.
pub const ARCHIVE_PREFIX: &str = "job_archive_";
/// The lock file a purge holds while it runs.
pub const LOCK_FILE: &str = "job_purge.lock";
/// The file naming the kind of store whose archives the directory holds.
pub const KIND_FILE: &str = "archive_kind";

/// A purge's hold on its archive directory: released when dropped.
pub(crate) struct DirLock {
    _file: File,
}

/// Takes the archive directory for one run: an exclusive lock (one purge at a time per
/// directory) and a check that it holds archives of this kind of store (`requester`
/// or `compute`), recording the kind on first use.
pub(crate) fn claim(dir: &Path, kind: &str) -> Result<DirLock, PurgeError> {
    let lock = dir.join(LOCK_FILE);
    let file =
        private_file_options().create(true).truncate(false).write(true).open(&lock).map_err(io_err(&lock, "open"))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Err(PurgeError::Busy { dir: dir.to_path_buf() }),
        Err(std::fs::TryLockError::Error(e)) => return Err(io_err(&lock, "lock")(e)),
    }
    if !check_kind(dir, kind)? {
        write_marker(dir, KIND_FILE, &dir.join(KIND_FILE), kind, "write the archive kind marker")?;
    }
    Ok(DirLock { _file: file })
}

/// Refuses a directory holding the archives of the other kind of store; returns
/// whether the directory names its kind yet (a dry run checks this and writes nothing).
pub(crate) fn check_kind(dir: &Path, kind: &str) -> Result<bool, PurgeError> {
    let kind_path = dir.join(KIND_FILE);
    match std::fs::read_to_string(&kind_path) {
        Ok(found) if found.trim() == kind => Ok(true),
        // Empty: an earlier version's purge was killed between creating the marker and
        // writing it; the directory names no kind yet.
        Ok(found) if found.trim().is_empty() => Ok(false),
        Ok(found) => Err(PurgeError::WrongDirectory {
            dir: dir.to_path_buf(),
            holds: found.trim().to_owned(),
            kind: kind.to_owned(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err(&kind_path, "read")(e)),
    }
}

/// How archive files are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Plain JSON lines.
    #[default]
    None,
    /// gzip (`.gz`), readable by `gzip -dc`.
    Gzip,
    /// zstd (`.zst`), readable by `zstd -dc`.
    Zstd,
}

impl Compression {
    /// The file name suffix.
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => ".jsonl",
            Compression::Gzip => ".jsonl.gz",
            Compression::Zstd => ".jsonl.zst",
        }
    }

    /// Every compression, longest extension first.
    const ALL: [Compression; 3] = [Compression::Zstd, Compression::Gzip, Compression::None];

    fn of_file(name: &str) -> Option<Compression> {
        Compression::ALL.into_iter().find(|c| name.ends_with(c.extension()))
    }
}

fn io_err<'p>(path: &'p Path, what: &'static str) -> impl FnOnce(std::io::Error) -> PurgeError + 'p {
    move |source| PurgeError::Io { what, path: path.to_path_buf(), source }
}

/// Writes a one-line marker file at `path` in `dir`: beside it as `<tmp_name>.tmp`,
/// synced, then renamed into place, so a kill leaves the marker whole or absent. `what`
/// names the marker in errors ("write a pending marker").
fn write_marker(dir: &Path, tmp_name: &str, path: &Path, line: &str, what: &'static str) -> Result<(), PurgeError> {
    let tmp = dir.join(format!("{tmp_name}.tmp"));
    let mut f = create_private_file(&tmp).map_err(io_err(&tmp, what))?;
    writeln!(f, "{line}").map_err(io_err(&tmp, what))?;
    f.sync_all().map_err(io_err(&tmp, what))?;
    std::fs::rename(&tmp, path).map_err(io_err(path, what))?;
    sync_dir(dir)
}

/// Fsyncs a directory, so a rename or create in it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), PurgeError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir, "sync the archive directory"))
}

/// An archive's name in the directory: the Unix time it was created at, and a number
/// for a second (third, …) archive created within that same second. Written `TIME` for
/// the first and `TIME-N` for the others (`1700000000`, `1700000000-2`), in file names,
/// index lines and pending markers; stamps sort by time, then number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp {
    /// Unix time in seconds.
    pub time: u64,
    /// 1 for the first archive of that second.
    pub n: u32,
}

impl Stamp {
    /// The first archive of second `time`.
    pub fn at(time: u64) -> Stamp {
        Stamp { time, n: 1 }
    }
}

impl std::fmt::Display for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.n <= 1 {
            write!(f, "{}", self.time)
        } else {
            write!(f, "{}-{}", self.time, self.n)
        }
    }
}

impl std::str::FromStr for Stamp {
    type Err = String;

    fn from_str(text: &str) -> Result<Stamp, String> {
        let bad = || format!("bad archive stamp {text:?} (expected TIME or TIME-N)");
        let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
        let (time, n) = match text.split_once('-') {
            Some((time, n)) if digits(time) && digits(n) => (time, n.parse::<u32>().map_err(|_| bad())?),
            None if digits(text) => (text, 1),
            _ => return Err(bad()),
        };
        if n < 2 && text.contains('-') {
            return Err(bad());
        }
        Ok(Stamp { time: time.parse().map_err(|_| bad())?, n })
    }
}

/// The file name of the archive `stamp`, compressed as `compression`.
pub fn archive_name(stamp: Stamp, compression: Compression) -> String {
    format!("{ARCHIVE_PREFIX}{stamp}{}", compression.extension())
}

/// The archive file of `stamp` in `dir`, whichever compression it has.
pub fn find_archive(dir: &Path, stamp: Stamp) -> Option<PathBuf> {
    Compression::ALL.into_iter().map(|c| dir.join(archive_name(stamp, c))).find(|p| p.exists())
}

/// The stamp of an archive created now: the real time `now`, numbered past any archive
/// (or unfinished `.tmp`) of that second in `dir`, and after `last` (the run's previous
/// archive) so a run's files sort in the order it wrote them even if the clock stepped
/// back.
pub(crate) fn free_stamp(dir: &Path, now: u64, last: Option<Stamp>) -> Stamp {
    let taken = |s: Stamp| {
        Compression::ALL.into_iter().any(|c| {
            let name = archive_name(s, c);
            dir.join(&name).exists() || dir.join(format!("{name}.tmp")).exists()
        })
    };
    let mut stamp = match last {
        Some(l) if l.time >= now => Stamp { time: l.time, n: l.n + 1 },
        _ => Stamp::at(now),
    };
    while taken(stamp) {
        stamp.n += 1;
    }
    stamp
}

/// The stamp of an archive file's name, and its compression.
pub fn parse_archive_name(name: &str) -> Option<(Stamp, Compression)> {
    let rest = name.strip_prefix(ARCHIVE_PREFIX)?;
    let compression = Compression::of_file(rest)?;
    let stamp = rest.strip_suffix(compression.extension())?.parse().ok()?;
    Some((stamp, compression))
}

enum Sink {
    Plain(BufWriter<File>),
    Gzip(flate2::write::GzEncoder<BufWriter<File>>),
    Zstd(zstd::Encoder<'static, BufWriter<File>>),
}

/// An archive file being written.
pub(crate) struct ArchiveWriter {
    sink: Sink,
    tmp: PathBuf,
    path: PathBuf,
    /// Uncompressed bytes written.
    pub(crate) raw_bytes: u64,
}

impl ArchiveWriter {
    /// Starts the archive of `time` in `dir` (written under a `.tmp` name).
    pub(crate) fn create(dir: &Path, stamp: Stamp, compression: Compression) -> Result<ArchiveWriter, PurgeError> {
        let path = dir.join(archive_name(stamp, compression));
        let tmp = dir.join(format!("{}.tmp", archive_name(stamp, compression)));
        let file = create_private_file(&tmp).map_err(io_err(&tmp, "create an archive file"))?;
        let out = BufWriter::with_capacity(1 << 20, file);
        let sink = match compression {
            Compression::None => Sink::Plain(out),
            Compression::Gzip => Sink::Gzip(flate2::write::GzEncoder::new(out, flate2::Compression::default())),
            // Level 1: purge records repeat a lot (each execution carries its job), so
            // the fastest level already compresses tens of times.
            Compression::Zstd => {
                Sink::Zstd(zstd::Encoder::new(out, 1).map_err(io_err(&tmp, "start zstd compression"))?)
            }
        };
        Ok(ArchiveWriter { sink, tmp, path, raw_bytes: 0 })
    }

    /// Appends one record as a JSON line.
    pub(crate) fn write(&mut self, record: &impl Serialize) -> Result<(), PurgeError> {
        // Encoded whole first: the compressors take one large write far faster than
        // the many small ones a streaming encoder makes.
        let mut line = serde_json::to_vec(record).map_err(|e| PurgeError::Encode(e.to_string()))?;
        line.push(b'\n');
        self.raw_bytes += line.len() as u64;
        let w: &mut dyn Write = match &mut self.sink {
            Sink::Plain(w) => w,
            Sink::Gzip(w) => w,
            Sink::Zstd(w) => w,
        };
        w.write_all(&line).map_err(io_err(&self.tmp, "write an archive file"))
    }

    /// Finishes the compression, fsyncs the file, renames it to its final name and
    /// fsyncs the directory. Returns the final path and its size.
    pub(crate) fn finish(self) -> Result<(PathBuf, u64), PurgeError> {
        let tmp = self.tmp.clone();
        let buffered = match self.sink {
            Sink::Plain(w) => w,
            Sink::Gzip(w) => w.finish().map_err(io_err(&tmp, "finish gzip compression"))?,
            Sink::Zstd(w) => w.finish().map_err(io_err(&tmp, "finish zstd compression"))?,
        };
        let file = buffered.into_inner().map_err(|e| PurgeError::Io {
            what: "flush an archive file",
            path: tmp.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(io_err(&tmp, "sync an archive file"))?;
        let size = file.metadata().map_err(io_err(&tmp, "measure an archive file"))?.len();
        drop(file);
        std::fs::rename(&tmp, &self.path).map_err(io_err(&self.path, "rename an archive file"))?;
        if let Some(dir) = self.path.parent() {
            sync_dir(dir)?;
        }
        Ok((self.path, size))
    }
}

/// Reads an archive file's records, decompressing by its name.
pub fn read_archive(path: &Path) -> Result<impl Iterator<Item = Result<serde_json::Value, PurgeError>>, PurgeError> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let compression = Compression::of_file(&name).unwrap_or(Compression::None);
    let file = File::open(path).map_err(io_err(path, "open an archive file"))?;
    read_archive_from(Box::new(file), compression, path)
}

/// The longest archive line a reader accepts: far above any job with everything it
/// owns, and a bound on what a damaged or hostile file (a compressed stream that
/// inflates to gigabytes without a newline) makes a reader hold. Fuzzing builds use a
/// smaller bound so that each input stays cheap.
#[cfg(not(fuzzing))]
pub const MAX_LINE: usize = 64 << 20;
/// The longest archive line a reader accepts (smaller under fuzzing).
#[cfg(fuzzing)]
pub const MAX_LINE: usize = 1 << 20;

/// Reads archive records from `input`, compressed as `compression`; `origin` names the
/// input in errors. A line that is not JSON, a line longer than [`MAX_LINE`], a
/// truncated or corrupt compressed stream and bytes that are not UTF-8 are errors naming
/// the line (reading stops there), never a panic.
pub fn read_archive_from(
    input: Box<dyn Read>,
    compression: Compression,
    origin: &Path,
) -> Result<impl Iterator<Item = Result<serde_json::Value, PurgeError>>, PurgeError> {
    let path = origin;
    let reader: Box<dyn Read> = match compression {
        Compression::None => input,
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
        Compression::Zstd => Box::new(zstd::Decoder::new(input).map_err(io_err(path, "start zstd decompression"))?),
    };
    Ok(Records { reader: BufReader::with_capacity(64 << 10, reader), path: path.to_path_buf(), line: 0, done: false })
}

/// The records of an archive, one JSON line each, read up to [`MAX_LINE`] bytes a line.
struct Records {
    reader: BufReader<Box<dyn Read>>,
    path: PathBuf,
    line: usize,
    done: bool,
}

impl Iterator for Records {
    type Item = Result<serde_json::Value, PurgeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        self.line += 1;
        let mut buf = Vec::new();
        let read = (&mut self.reader).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut buf);
        let bad = |reason: String| PurgeError::BadArchive { path: self.path.clone(), line: self.line, reason };
        let result = match read {
            Err(source) => Err(PurgeError::Io { what: "read an archive file", path: self.path.clone(), source }),
            Ok(0) => {
                self.done = true;
                return None;
            }
            Ok(_) if buf.last() != Some(&b'\n') && buf.len() > MAX_LINE => {
                Err(bad(format!("longer than {} MiB", MAX_LINE >> 20)))
            }
            Ok(_) => {
                let text = buf.strip_suffix(b"\n").unwrap_or(&buf);
                let text = text.strip_suffix(b"\r").unwrap_or(text);
                serde_json::from_slice(text).map_err(|e| bad(e.to_string()))
            }
        };
        self.done = result.is_err();
        Some(result)
    }
}

/// The id a record is archived under: the job's id.
pub fn record_id(record: &serde_json::Value) -> Option<&str> {
    record.get("job_id").and_then(|v| v.as_str()).or_else(|| record.pointer("/job/id").and_then(|v| v.as_str()))
}

/// The index file of an archive directory.
pub(crate) struct Index {
    path: PathBuf,
}

/// What the index says about one id.
#[derive(Debug, Default)]
pub(crate) struct IndexLookup {
    /// The archive of the id's last line, if any.
    pub(crate) stamp: Option<Stamp>,
    /// Numbers of the lines that are not UTF-8 or not `ID     STAMP`, skipped.
    pub(crate) skipped: Vec<usize>,
}

impl Index {
    pub(crate) fn new(dir: &Path) -> Index {
        Index { path: dir.join(INDEX_FILE) }
    }

    /// Removes a last line cut short by a crash (no newline at its end).
    pub(crate) fn repair_tail(&self) -> Result<(), PurgeError> {
        let Ok(text) = std::fs::read(&self.path) else { return Ok(()) };
        if text.is_empty() || text.ends_with(b"\n") {
            return Ok(());
        }
        let keep = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let f = OpenOptions::new().write(true).open(&self.path).map_err(io_err(&self.path, "open the index"))?;
        f.set_len(keep as u64).map_err(io_err(&self.path, "truncate the index"))?;
        f.sync_all().map_err(io_err(&self.path, "sync the index"))
    }

    /// The ids indexed under `time`.
    pub(crate) fn ids_at(&self, stamp: Stamp) -> Result<BTreeSet<String>, PurgeError> {
        let mut out = BTreeSet::new();
        if !self.path.exists() {
            return Ok(out);
        }
        self.each_line(|_, line| {
            if let Some((id, t)) = line.and_then(parse_index_line) {
                if t == stamp {
                    out.insert(id.to_owned());
                }
            }
        })?;
        Ok(out)
    }

    /// Appends `ID     STAMP` lines and fsyncs.
    pub(crate) fn append<'a>(&self, ids: impl IntoIterator<Item = &'a str>, stamp: Stamp) -> Result<(), PurgeError> {
        let existed = self.path.exists();
        let file = private_file_options()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(io_err(&self.path, "open the index"))?;
        let mut w = BufWriter::new(file);
        for id in ids {
            writeln!(w, "{id}     {stamp}").map_err(io_err(&self.path, "append to the index"))?;
        }
        let file = w.into_inner().map_err(|e| PurgeError::Io {
            what: "append to the index",
            path: self.path.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(io_err(&self.path, "sync the index"))?;
        if !existed {
            if let Some(dir) = self.path.parent() {
                sync_dir(dir)?;
            }
        }
        Ok(())
    }

    /// The archive time of `id`, if indexed: the newest line naming it (an id purged,
    /// re-created and purged again is read back as it was last).
    pub(crate) fn find(&self, id: &str) -> Result<IndexLookup, PurgeError> {
        let mut out = IndexLookup::default();
        self.each_line(|n, line| match line.and_then(parse_index_line) {
            Some((found, stamp)) if found == id => out.stamp = Some(stamp),
            Some(_) => {}
            None => out.skipped.push(n),
        })?;
        Ok(out)
    }

    /// Calls `visit` with each line's number (from 1) and text: `None` for a line that
    /// is not UTF-8. Fails when the index does not exist.
    pub(crate) fn each_line(&self, mut visit: impl FnMut(usize, Option<&str>)) -> Result<(), PurgeError> {
        let file = File::open(&self.path).map_err(io_err(&self.path, "open the index"))?;
        let mut reader = BufReader::new(file);
        let mut buf = Vec::new();
        let mut n = 0;
        loop {
            buf.clear();
            let read = reader.read_until(b'\n', &mut buf).map_err(io_err(&self.path, "read the index"))?;
            if read == 0 {
                return Ok(());
            }
            n += 1;
            let bytes = buf.strip_suffix(b"\n").unwrap_or(&buf);
            visit(n, std::str::from_utf8(bytes).ok());
        }
    }
}

/// Parses `ID     STAMP`.
pub fn parse_index_line(line: &str) -> Option<(&str, Stamp)> {
    let (id, stamp) = line.split_once("     ")?;
    Some((id, stamp.trim().parse().ok()?))
}

/// The run in progress, as the pending marker records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pending {
    pub(crate) stamp: Stamp,
    pub(crate) file: String,
    /// The id of the store whose records the archive holds (empty in markers written
    /// before markers named their store).
    pub(crate) store: String,
}

/// Parses a pending marker's text (`STAMP FILE STORE_ID`, or `STAMP FILE` from older
/// builds) into its time, archive file and store id (empty when not recorded); the
/// reason when it is damaged. For tools and the fuzz targets; purge reads markers
/// through the same parser.
pub fn parse_marker(text: &str) -> Result<(Stamp, String, String), String> {
    Pending::parse(text).map(|p| (p.stamp, p.file, p.store))
}

/// Whether `file` is the name of the archive of `time` (in some compression): the only
/// file a marker may name, so a damaged marker can never point outside the directory.
pub(crate) fn is_archive_of(file: &str, stamp: Stamp) -> bool {
    Compression::ALL.into_iter().any(|c| file == archive_name(stamp, c))
}

impl Pending {
    fn path(dir: &Path, stamp: Stamp) -> PathBuf {
        dir.join(format!("{PENDING_FILE}.{stamp}"))
    }

    /// The marker's file name.
    pub(crate) fn marker_name(&self) -> String {
        format!("{PENDING_FILE}.{}", self.stamp)
    }

    /// Parses a marker's text (`STAMP FILE STORE_ID`, or `STAMP FILE` from older builds).
    pub(crate) fn parse(text: &str) -> Result<Pending, String> {
        let mut parts = text.split_whitespace();
        let (Some(time), Some(file)) = (parts.next(), parts.next()) else {
            return Err("expected `STAMP FILE STORE_ID`".into());
        };
        let stamp: Stamp = time.parse()?;
        if !is_archive_of(file, stamp) {
            return Err(format!("{file:?} is not the archive file of {stamp}"));
        }
        let store = parts.next().unwrap_or_default().to_owned();
        if parts.next().is_some() {
            return Err("expected `STAMP FILE STORE_ID`".into());
        }
        Ok(Pending { stamp, file: file.to_owned(), store })
    }

    /// Every pending marker in `dir`, oldest first.
    pub(crate) fn read_all(dir: &Path) -> Result<Vec<Pending>, PurgeError> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(dir, "list the archive directory")(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err(dir, "list the archive directory"))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(suffix) = name.strip_prefix(&format!("{PENDING_FILE}.")) else { continue };
            if suffix.parse::<Stamp>().is_err() {
                continue;
            }
            let path = entry.path();
            let text = std::fs::read_to_string(&path).map_err(io_err(&path, "read a pending marker"))?;
            let pending = Pending::parse(&text).map_err(|reason| PurgeError::BadArchive {
                path: path.clone(),
                line: 1,
                reason,
            })?;
            if suffix != pending.stamp.to_string() {
                return Err(PurgeError::BadArchive {
                    path: path.clone(),
                    line: 1,
                    reason: format!("the marker of {suffix} names {}", pending.stamp),
                });
            }
            out.push(pending);
        }
        out.sort_by_key(|p| p.stamp);
        Ok(out)
    }

    /// Writes (and syncs) the marker of this archive.
    pub(crate) fn write(&self, dir: &Path) -> Result<(), PurgeError> {
        let line = format!("{} {} {}", self.stamp, self.file, self.store);
        write_marker(dir, PENDING_FILE, &Self::path(dir, self.stamp), &line, "write a pending marker")
    }

    /// Removes the marker of this archive: its records are deleted.
    pub(crate) fn clear(&self, dir: &Path) -> Result<(), PurgeError> {
        let path = Self::path(dir, self.stamp);
        match std::fs::remove_file(&path) {
            Ok(()) => sync_dir(dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path, "remove a pending marker")(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_marker_cut_short_by_a_kill_is_written_again() {
        let dir = tempfile::tempdir().unwrap();
        // What a purge killed between creating the marker and writing it left behind.
        std::fs::write(dir.path().join(KIND_FILE), "").unwrap();
        drop(claim(dir.path(), "requester").expect("an empty marker names no kind yet"));
        assert_eq!(std::fs::read_to_string(dir.path().join(KIND_FILE)).unwrap(), "requester\n");
        assert!(matches!(claim(dir.path(), "compute"), Err(PurgeError::WrongDirectory { .. })));
        assert!(!dir.path().join(format!("{KIND_FILE}.tmp")).exists(), "no temporary file is left");
    }

    #[test]
    fn stamps_read_and_sort() {
        let first: Stamp = "1700000000".parse().unwrap();
        let second: Stamp = "1700000000-2".parse().unwrap();
        assert_eq!((first, second), (Stamp::at(1_700_000_000), Stamp { time: 1_700_000_000, n: 2 }));
        assert!(first < second && second < Stamp::at(1_700_000_001));
        assert_eq!((first.to_string(), second.to_string()), ("1700000000".to_owned(), "1700000000-2".to_owned()));
        for bad in ["", "-2", "17-", "17-1", "17-x", "x", "17 ", "17-2-3"] {
            let e = bad.parse::<Stamp>().unwrap_err();
            assert!(e.starts_with("bad archive stamp"), "{bad:?}: {e}");
        }
        assert_eq!(
            parse_archive_name("job_archive_17-3.jsonl.zst"),
            Some((Stamp { time: 17, n: 3 }, Compression::Zstd))
        );
        assert_eq!(parse_index_line("job-1     17-2"), Some(("job-1", Stamp { time: 17, n: 2 })));
        // A second archive in the same second keeps the second and takes the next number.
        let dir = std::env::temp_dir().join(format!("brine-stamps-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(free_stamp(&dir, 17, None), Stamp::at(17));
        std::fs::write(dir.join(archive_name(Stamp::at(17), Compression::None)), b"").unwrap();
        assert_eq!(free_stamp(&dir, 17, None), Stamp { time: 17, n: 2 });
        assert_eq!(free_stamp(&dir, 17, Some(Stamp { time: 17, n: 4 })), Stamp { time: 17, n: 5 });
        assert_eq!(
            free_stamp(&dir, 16, Some(Stamp { time: 17, n: 1 })),
            Stamp { time: 17, n: 2 },
            "the clock stepped back"
        );
        assert_eq!(free_stamp(&dir, 18, Some(Stamp { time: 17, n: 9 })), Stamp::at(18));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_line_past_the_bound_is_an_error_not_an_allocation() {
        // A few kilobytes of zstd that inflate to one 96 MiB line with no newline: a
        // damaged (or hostile) archive must not make a reader hold it all.
        let bomb = zstd::encode_all(std::io::repeat(b'a').take(96 << 20), 19).unwrap();
        assert!(bomb.len() < 64 << 10, "{} bytes", bomb.len());
        let mut records =
            read_archive_from(Box::new(std::io::Cursor::new(bomb)), Compression::Zstd, Path::new("bomb.jsonl.zst"))
                .unwrap();
        let err = records.next().unwrap().unwrap_err().to_string();
        assert!(err.starts_with("bomb.jsonl.zst line 1: longer than"), "{err}");
        assert!(records.next().is_none(), "reading stops at the bad line");
        // Below the bound, lines read as before, with or without a last newline.
        let text = b"{\"job_id\":\"a\"}\n{\"job_id\":\"b\"}".to_vec();
        let ids: Vec<String> =
            read_archive_from(Box::new(std::io::Cursor::new(text)), Compression::None, Path::new("x"))
                .unwrap()
                .map(|r| record_id(&r.unwrap()).unwrap().to_owned())
                .collect();
        assert_eq!(ids, ["a", "b"]);
    }
}
