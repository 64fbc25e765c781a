//! `brine export`, `brine import` and `brine migrate copy`: a store's whole content as a
//! dump file (JSON lines, zstd optional), loaded back into an empty store of any
//! backend, or copied straight from one backend to another (`brine::dump`).

use std::io::{BufRead, BufReader, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use brine::dump::{self, Kind, Line, Store, Tally};
use brine::{Side, StoreConfig, StoreType};
use clap::{Args, ValueEnum};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::ui::{self, outln};
use crate::Outcome;

/// The first bytes of a zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Which store of a PostgreSQL database (a RocksDB directory knows its own kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum KindArg {
    /// A compute node's execution store (of node BRINE_NODE_ID on PostgreSQL).
    Compute,
    /// The requester's job store.
    Requester,
}

impl From<KindArg> for Kind {
    fn from(k: KindArg) -> Kind {
        match k {
            KindArg::Compute => Kind::Compute,
            KindArg::Requester => Kind::Requester,
        }
    }
}

/// A store named on the command line: `rocksdb:PATH` (or a plain path),
/// `postgres:URL` (or a `postgresql://` URL), `memory:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Spec {
    Memory,
    RocksDb(PathBuf),
    Postgres(String),
}

impl Spec {
    pub(crate) fn parse(text: &str) -> anyhow::Result<Spec> {
        if text.is_empty() {
            bail!("an empty store name: give a RocksDB directory, rocksdb:PATH, postgres:URL or memory:");
        }
        if text == "memory:" || text == "memory" {
            return Ok(Spec::Memory);
        }
        if let Some(path) = text.strip_prefix("rocksdb:") {
            if path.is_empty() {
                bail!("rocksdb: needs a directory after the colon (rocksdb:PATH)");
            }
            return Ok(Spec::RocksDb(PathBuf::from(path)));
        }
        if let Some(url) = text.strip_prefix("postgres:").filter(|u| !u.starts_with("//")) {
            if url.is_empty() {
                bail!("postgres: needs a database URL after the colon (postgres:URL)");
            }
            return Ok(Spec::Postgres(url.to_owned()));
        }
        if text.starts_with("postgresql://") || text.starts_with("postgres://") {
            return Ok(Spec::Postgres(text.to_owned()));
        }
        Ok(Spec::RocksDb(PathBuf::from(text)))
    }

    /// The kind of store this names: a RocksDB directory's own, else `--kind`'s.
    fn kind(&self, flag: Option<KindArg>, role: &str) -> anyhow::Result<Kind> {
        let flag = flag.map(Kind::from);
        match self {
            Spec::RocksDb(path) if path.join("CURRENT").exists() => {
                let found = match brine_rocksdb::store_kind_at(path)? {
                    brine_rocksdb::StoreKind::Compute => Kind::Compute,
                    brine_rocksdb::StoreKind::Requester => Kind::Requester,
                };
                if let Some(asked) = flag.filter(|k| *k != found) {
                    bail!("{} is a {found} store, not a {asked} store (--kind {asked})", path.display());
                }
                Ok(found)
            }
            Spec::RocksDb(path) => flag.ok_or_else(|| anyhow::anyhow!("no store at {}", path.display())),
            Spec::Postgres(_) => flag.ok_or_else(|| {
                anyhow::anyhow!(
                    "{role} names a PostgreSQL database, which holds both kinds of store: \
                     give --kind compute or --kind requester"
                )
            }),
            Spec::Memory => flag.ok_or_else(|| {
                anyhow::anyhow!("{role} memory: can be either kind of store: give --kind compute or --kind requester")
            }),
        }
    }

    /// The configuration that opens this store (the rest from the environment:
    /// BRINE_NODE_ID names a compute store's node on PostgreSQL).
    fn config(&self) -> anyhow::Result<StoreConfig> {
        let mut config = StoreConfig::from_env()?;
        let (store_type, path) = match self {
            Spec::Memory => (StoreType::InMemory, None),
            Spec::RocksDb(path) => (StoreType::RocksDb, Some(path.clone())),
            Spec::Postgres(url) => {
                config.database_url = Some(url.clone());
                (StoreType::Postgres, None)
            }
        };
        config.compute_store_type = store_type;
        config.job_store_type = store_type;
        if let Some(path) = path {
            config.compute_store_path = path.clone();
            config.job_store_path = path;
        }
        Ok(config)
    }
}

fn side(kind: Kind) -> Side {
    match kind {
        Kind::Compute => Side::Compute,
        Kind::Requester => Side::Requester,
    }
}

/// Opens the `kind` store `spec` names; `create`: make it when missing (a target).
/// Targets are written `Buffered` and synced once at the end of the import.
async fn open(spec: &Spec, kind: Kind, create: bool) -> anyhow::Result<(Store, String)> {
    let config = spec.config()?;
    let described = brine::describe(&config, side(kind));
    let options = brine::Options {
        durability: if create { brine::Durability::Buffered } else { brine::Durability::Sync },
        create_if_missing: create,
        ..brine::Options::default()
    };
    let store = match kind {
        Kind::Compute => Store::Compute(brine::open_execution_store_with(&config, &options).await?),
        Kind::Requester => Store::Requester(brine::open_job_store_with(&config, &options).await?),
    };
    Ok((store, described))
}

#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    /// The store: a RocksDB directory (rocksdb:PATH, or the path alone), postgres:URL.
    #[arg(long, value_name = "STORE")]
    store: String,
    /// Which store of a PostgreSQL database (a RocksDB directory knows its kind).
    #[arg(long, value_enum)]
    kind: Option<KindArg>,
    /// Write the dump to FILE (default: stdout). Written as FILE.partial and renamed
    /// once complete and synced; an existing FILE is refused.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Compress with zstd (implied by an output name ending in .zst).
    #[arg(long)]
    zstd: bool,
    /// Print the summary as JSON (on stderr when the dump goes to stdout).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ImportArgs {
    /// The dump (JSON lines, or zstd-compressed: recognised by its first bytes); `-`
    /// reads stdin.
    file: PathBuf,
    /// The store to load it into, which must be empty: a RocksDB directory (created when
    /// missing), postgres:URL, or memory: (loads and checks the dump, keeps nothing).
    #[arg(long, value_name = "STORE")]
    store: String,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct CopyArgs {
    /// The store to copy: a RocksDB directory (rocksdb:PATH, or the path), postgres:URL.
    #[arg(long, value_name = "STORE")]
    from: String,
    /// The empty store to copy into: a RocksDB directory (created when missing),
    /// postgres:URL, or memory:.
    #[arg(long, value_name = "STORE")]
    to: String,
    /// Which store, when the source is a PostgreSQL database.
    #[arg(long, value_enum)]
    kind: Option<KindArg>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// What an export, import or copy prints.
#[derive(Debug, Serialize)]
struct Summary {
    /// `export`, `import` or `copy`.
    command: &'static str,
    kind: Kind,
    from: String,
    to: String,
    tally: Tally,
    /// Bytes of JSON lines written (an export).
    bytes: Option<u64>,
    /// The dump file's size on disk (an export to a file; compressed with zstd).
    #[serde(skip_serializing_if = "Option::is_none")]
    file_bytes: Option<u64>,
    seconds: f64,
    records_per_second: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    comparison: Option<dump::Comparison>,
}

impl Summary {
    fn line(&self) -> String {
        let records = self.tally.main_records(self.kind);
        let size = match (self.bytes, self.file_bytes) {
            (Some(b), Some(f)) => format!(" ({} of JSON lines, {} on disk)", ui::bytes(b), ui::bytes(f)),
            (Some(b), None) => format!(" ({} of JSON lines)", ui::bytes(b)),
            _ => String::new(),
        };
        format!(
            "{} {} {} store records in {:.2} s ({:.0} records/s): {}\n  from {}\n  to   {}{size}",
            match self.command {
                "export" => "exported",
                "import" => "imported",
                _ => "copied",
            },
            records,
            self.kind,
            self.seconds,
            self.records_per_second,
            dump::describe_tally(&self.tally, self.kind),
            self.from,
            self.to,
        )
    }
}

fn rate(records: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        records as f64 / seconds
    } else {
        0.0
    }
}

/// Where the dump goes: stdout, or `FILE.partial` until it is complete.
#[derive(Clone)]
enum Output {
    Stdout,
    File { partial: PathBuf, path: PathBuf },
}

impl Output {
    fn choose(path: Option<&Path>) -> anyhow::Result<Output> {
        let Some(path) = path.filter(|p| *p != Path::new("-")) else {
            if std::io::stdout().is_terminal() {
                bail!("refusing to write a dump to the terminal: give --output FILE or redirect stdout");
            }
            return Ok(Output::Stdout);
        };
        if path.exists() {
            bail!("{} exists: remove it or choose another --output", path.display());
        }
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        Ok(Output::File { partial: PathBuf::from(partial), path: path.to_path_buf() })
    }

    fn name(&self) -> String {
        match self {
            Output::Stdout => "stdout".into(),
            Output::File { path, .. } => path.display().to_string(),
        }
    }
}

/// Writes the lines arriving on `rx` to `output` (zstd when `zstd`) and syncs a file;
/// returns the bytes written (before compression). The file stays `FILE.partial` until
/// [`Output::finish`], once the export is known to have succeeded.
fn write_dump(rx: &mut mpsc::Receiver<Line>, output: &Output, zstd: bool) -> anyhow::Result<u64> {
    let sink: Box<dyn Write> = match output {
        Output::Stdout => Box::new(std::io::stdout().lock()),
        Output::File { partial, .. } => {
            let _ = std::fs::remove_file(partial);
            let file = brine_store::files::create_private_file(partial)
                .with_context(|| format!("cannot create {}", partial.display()))?;
            Box::new(file)
        }
    };
    let mut out = BufWriter::with_capacity(1 << 20, sink);
    let written = if zstd {
        let mut encoder = zstd::Encoder::new(&mut out, 3).context("cannot start zstd")?;
        let written = dump::write_lines(rx, &mut encoder)?;
        encoder.finish().context("cannot finish the zstd stream")?;
        written
    } else {
        dump::write_lines(rx, &mut out)?
    };
    out.flush().map_err(ui::stdout_error)?;
    drop(out);
    if let Output::File { partial, .. } = output {
        std::fs::File::open(partial)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("cannot sync {}", partial.display()))?;
    }
    Ok(written)
}

impl Output {
    /// Renames a complete, synced dump into place (and syncs its directory).
    fn finish(&self) -> anyhow::Result<()> {
        if let Output::File { partial, path } = self {
            std::fs::rename(partial, path)
                .with_context(|| format!("cannot rename {} into place", partial.display()))?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::File::open(dir).and_then(|d| d.sync_all()).ok();
            }
        }
        Ok(())
    }

    /// Removes what a failed export wrote.
    fn discard(&self) {
        if let Output::File { partial, .. } = self {
            let _ = std::fs::remove_file(partial);
        }
    }
}

/// Prints `summary` as a line or JSON, to stdout or (`to_stderr`, when the dump went to
/// stdout) stderr.
fn print(summary: &Summary, json: bool, to_stderr: bool) -> anyhow::Result<()> {
    let text = match json {
        true => serde_json::to_string(summary)?,
        false => summary.line(),
    };
    if to_stderr {
        let _ = writeln!(std::io::stderr(), "{text}");
        return Ok(());
    }
    outln!("{text}")
}

pub(crate) async fn run_export(args: ExportArgs) -> anyhow::Result<Outcome> {
    let spec = Spec::parse(&args.store)?;
    let kind = spec.kind(args.kind, "--store")?;
    let output = Output::choose(args.output.as_deref())?;
    let zstd = args.zstd || output.name().ends_with(".zst");
    let (store, opened) = open(&spec, kind, false).await?;
    let started = Instant::now();
    let bar = ui::progress(store.records_hint().await?, &format!("{kind} records exported"), args.json);
    let (tx, mut rx) = mpsc::channel(dump::CHANNEL_LINES);
    let writer = {
        let output = output.clone();
        tokio::task::spawn_blocking(move || write_dump(&mut rx, &output, zstd))
    };
    let b = bar.clone();
    let exported = dump::export(&store, &opened, &tx, &move |n| b.set_position(n)).await;
    drop(tx);
    let written = writer.await.context("the writer task failed")?;
    bar.finish_and_clear();
    store.close().await?;
    let (exported, bytes) = match (exported, written) {
        // The export's own failure comes first; the writer's explains an export that
        // stopped because the writer did.
        (Err(e), _) if !matches!(e, dump::DumpError::Stopped(_)) => {
            output.discard();
            return Err(e.into());
        }
        (_, Err(e)) => {
            output.discard();
            return Err(e);
        }
        (Err(e), Ok(_)) => {
            output.discard();
            return Err(e.into());
        }
        (Ok(exported), Ok(bytes)) => (exported, bytes),
    };
    output.finish()?;
    let seconds = started.elapsed().as_secs_f64();
    let summary = Summary {
        command: "export",
        kind,
        from: opened,
        to: output.name(),
        records_per_second: rate(exported.tally.main_records(kind), seconds),
        tally: exported.tally,
        bytes: Some(bytes),
        file_bytes: match &output {
            Output::File { path, .. } => std::fs::metadata(path).ok().map(|m| m.len()),
            Output::Stdout => None,
        },
        seconds,
        comparison: None,
    };
    print(&summary, args.json, matches!(output, Output::Stdout))?;
    Ok(Outcome::Ok)
}

/// Opens a dump for reading: a file or stdin, decompressed when it starts with zstd's
/// magic bytes.
fn open_dump(path: &Path) -> anyhow::Result<Box<dyn BufRead + Send>> {
    let raw: Box<dyn Read + Send> = if path == Path::new("-") {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(path).with_context(|| format!("cannot open the dump {}", path.display()))?)
    };
    let mut input = BufReader::with_capacity(1 << 20, raw);
    let head = input.fill_buf().with_context(|| format!("cannot read {}", path.display()))?;
    if head.starts_with(&ZSTD_MAGIC) {
        let decoder = zstd::Decoder::with_buffer(input).context("cannot start zstd")?;
        return Ok(Box::new(BufReader::with_capacity(1 << 20, decoder)));
    }
    Ok(Box::new(input))
}

pub(crate) async fn run_import(args: ImportArgs) -> anyhow::Result<Outcome> {
    let spec = Spec::parse(&args.store)?;
    let input = open_dump(&args.file)?;
    let (tx, mut rx) = mpsc::channel(dump::CHANNEL_LINES);
    let reader = tokio::task::spawn_blocking(move || dump::read_lines(input, &tx));
    let header = dump::read_header(&mut rx).await.with_context(|| format!("{} is not a dump", args.file.display()))?;
    if let Spec::RocksDb(path) = &spec {
        if path.join("CURRENT").exists() {
            let found = spec.kind(None, "--store")?;
            if found != header.kind {
                bail!("the dump holds a {} store; {} is a {found} store", header.kind, path.display());
            }
        }
    }
    let kind = header.kind;
    let (store, opened) = open(&spec, kind, true).await?;
    let started = Instant::now();
    let bar = ui::progress(None, &format!("{kind} records imported"), args.json);
    let b = bar.clone();
    let imported = dump::import_after_header(&store, header, &mut rx, &move |n| b.set_position(n)).await;
    drop(rx);
    bar.finish_and_clear();
    let closed = store.close().await;
    reader.await.context("the reader task failed")?;
    let imported = imported.with_context(|| format!("cannot import {}", args.file.display()))?;
    closed?;
    let seconds = started.elapsed().as_secs_f64();
    let summary = Summary {
        command: "import",
        kind,
        from: args.file.display().to_string(),
        to: opened,
        records_per_second: rate(imported.tally.main_records(kind), seconds),
        tally: imported.tally,
        bytes: None,
        file_bytes: None,
        seconds,
        comparison: None,
    };
    print(&summary, args.json, false)?;
    Ok(Outcome::Ok)
}

pub(crate) async fn run_copy(args: CopyArgs) -> anyhow::Result<Outcome> {
    let (from, to) = (Spec::parse(&args.from)?, Spec::parse(&args.to)?);
    if from == to {
        bail!("--from and --to name the same store");
    }
    let kind = from.kind(args.kind, "--from")?;
    if let Spec::RocksDb(path) = &to {
        if path.join("CURRENT").exists() {
            let found = to.kind(None, "--to")?;
            if found != kind {
                bail!("{} is a {found} store; the source is a {kind} store", path.display());
            }
        }
    }
    let (source, source_name) = open(&from, kind, false).await?;
    let (target, target_name) = open(&to, kind, true).await?;
    let started = Instant::now();
    let bar = ui::progress(source.records_hint().await?, &format!("{kind} records copied"), args.json);
    let b = bar.clone();
    let copied = dump::copy(&source, &source_name, &target, &move |n| b.set_position(n)).await;
    bar.finish_and_clear();
    let closed = (source.close().await, target.close().await);
    let (imported, comparison) = copied?;
    closed.0?;
    closed.1?;
    let seconds = started.elapsed().as_secs_f64();
    let same = comparison.differences.is_empty();
    let summary = Summary {
        command: "copy",
        kind,
        from: source_name,
        to: target_name,
        records_per_second: rate(imported.tally.main_records(kind), seconds),
        tally: imported.tally,
        bytes: None,
        file_bytes: None,
        seconds,
        comparison: Some(comparison),
    };
    if args.json {
        ui::print_json(&summary)?;
    } else {
        outln!("{}", summary.line())?;
        if let Some(c) = &summary.comparison {
            let states: Vec<String> = c.states.iter().map(|(s, (x, _))| format!("{s}={x}")).collect();
            let verdict = if same { "equal" } else { "DIFFERENT" };
            outln!(
                "comparison: {verdict}: counts per state ({}), log head {}, {} checkpoints, {} sampled records read back",
                states.join(" "),
                c.log_head.0,
                c.checkpoints,
                c.sampled
            )?;
            for d in &c.differences {
                outln!("  {d}")?;
            }
        }
    }
    Ok(if same { Outcome::Ok } else { Outcome::Problems })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_names_parse() {
        assert_eq!(Spec::parse("memory:").unwrap(), Spec::Memory);
        assert_eq!(Spec::parse("rocksdb:/a:b").unwrap(), Spec::RocksDb("/a:b".into()));
        assert_eq!(Spec::parse("/var/lib/x.db").unwrap(), Spec::RocksDb("/var/lib/x.db".into()));
        assert_eq!(Spec::parse("postgres:host=/tmp dbname=b").unwrap(), Spec::Postgres("host=/tmp dbname=b".into()));
        assert_eq!(Spec::parse("postgresql://u@h/db").unwrap(), Spec::Postgres("postgresql://u@h/db".into()));
        assert_eq!(Spec::parse("postgres://u@h/db").unwrap(), Spec::Postgres("postgres://u@h/db".into()));
        for bad in ["", "rocksdb:", "postgres:"] {
            assert!(Spec::parse(bad).is_err(), "{bad:?}");
        }
    }
}
