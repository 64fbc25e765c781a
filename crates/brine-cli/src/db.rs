//! `brine db`: Bacalhau's `bbolt` inspection commands on a Brine store directory.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use brine_rocksdb::{Cf, Inspector};
use brine_store::keys::{parse_printable, printable};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::ui::{self, outln};
use crate::Outcome;

#[derive(Debug, Args)]
pub(crate) struct DbArgs {
    #[command(subcommand)]
    command: DbCommand,
}

#[derive(Debug, Subcommand)]
enum DbCommand {
    /// Verify the store: values decode, indexes match records, counters match, the event
    /// log has no gap, checkpoints are at or below the head. Prints OK or each problem;
    /// exits with 2 when there are problems. With `--database-url`, checks every store in
    /// a PostgreSQL database instead (the job store and each compute node's).
    Check {
        /// The store directory.
        #[arg(required_unless_present = "database_url")]
        path: Option<PathBuf>,
        /// Check the stores of this PostgreSQL database (instead of a directory).
        #[arg(long, value_name = "URL", conflicts_with = "path")]
        database_url: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the column families (the buckets).
    Buckets {
        /// The store directory.
        path: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the keys of a column family, in order (binary parts as \xNN, separators as /).
    Keys {
        /// The store directory.
        path: PathBuf,
        /// The column family.
        cf: String,
        /// Only keys starting with this (same notation as the output).
        #[arg(long)]
        prefix: Option<String>,
        /// At most this many keys.
        #[arg(long)]
        limit: Option<usize>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print one value, decoded, as pretty JSON.
    Get {
        /// The store directory.
        path: PathBuf,
        /// The column family.
        cf: String,
        /// The key (as `keys` prints it).
        key: String,
        /// Print compact JSON with the family and key.
        #[arg(long)]
        json: bool,
    },
    /// Per family: keys, data size, SST files; and the size on disk.
    Stats {
        /// The store directory.
        path: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Copy the store into a fresh, compacted one at DEST.
    Compact {
        /// The store directory.
        path: PathBuf,
        /// Where to write the copy (must not exist, or be empty).
        #[arg(short = 'o', long = "output", value_name = "DEST")]
        dest: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Why the store could not be opened for inspection. `brine db` is the RocksDB
/// inspector: a path that holds no RocksDB store is refused saying so.
fn opened(e: brine_rocksdb::OpenError) -> anyhow::Error {
    match e {
        e @ brine_rocksdb::OpenError::NotABrineStore { .. } => {
            anyhow!("{e} (brine db inspects the RocksDB stores of the embedded backend)")
        }
        e => e.into(),
    }
}

/// Runs a blocking read on the store off the async workers.
async fn blocking<T: Send + 'static>(
    ins: &Arc<Inspector>,
    f: impl FnOnce(&Inspector) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let ins = Arc::clone(ins);
    tokio::task::spawn_blocking(move || f(&ins)).await.context("the inspection task failed")?
}

fn family(ins: &Inspector, name: &str) -> anyhow::Result<Cf> {
    Cf::from_name(name).filter(|cf| ins.families().contains(cf)).ok_or_else(|| {
        let known: Vec<&str> = ins.families().iter().map(|c| c.name()).collect();
        anyhow!("unknown column family {name:?} (this {} store has: {})", ins.kind().as_str(), known.join(", "))
    })
}

fn key_bytes(text: &str) -> anyhow::Result<Vec<u8>> {
    parse_printable(text).map_err(|e| anyhow!("bad key {text:?}: {}", e.reason))
}

/// Prints a check report as `db check` does, and says whether it is clean (also when
/// stdout was closed before all of it was printed).
fn print_check(report: &brine_store::CheckReport, json: bool) -> anyhow::Result<Outcome> {
    let printed = (|| {
        if json {
            let problems: Vec<_> =
                report.problems.iter().map(|p| json!({ "cf": p.place, "key": p.key, "problem": p.what })).collect();
            ui::print_json(&json!({
                "ok": report.is_ok(),
                "keys_checked": report.keys_checked,
                "problems": problems,
            }))
        } else if report.is_ok() {
            outln!("OK")
        } else {
            for p in &report.problems {
                outln!("{p}")?;
            }
            outln!("{} problem(s) in {} keys", report.problems.len(), report.keys_checked)
        }
    })();
    ui::printed(printed, if report.is_ok() { Outcome::Ok } else { Outcome::Problems })
}

/// `db check --database-url`: every store of a PostgreSQL database, one report.
async fn check_database(url: &str, json: bool) -> anyhow::Result<Outcome> {
    let stores = brine_postgres::check_database(url, brine_postgres::PgOptions::default()).await?;
    let mut all = brine_store::CheckReport::default();
    for (store, report) in stores {
        tracing::debug!(store, keys = report.keys_checked, problems = report.problems.len(), "checked");
        all.keys_checked += report.keys_checked;
        for p in report.problems {
            all.problem(format!("{store}: {}", p.place), p.key, p.what);
        }
    }
    print_check(&all, json)
}

pub(crate) async fn run(args: DbArgs) -> anyhow::Result<Outcome> {
    if let DbCommand::Check { database_url: Some(url), json, .. } = &args.command {
        return check_database(url, *json).await;
    }
    let path = match &args.command {
        DbCommand::Check { path, .. } => path.clone().context("give the store directory or --database-url")?,
        DbCommand::Buckets { path, .. }
        | DbCommand::Keys { path, .. }
        | DbCommand::Get { path, .. }
        | DbCommand::Stats { path, .. }
        | DbCommand::Compact { path, .. } => path.clone(),
    };
    let ins = match Inspector::open(&path) {
        Ok(ins) => Arc::new(ins),
        // Damaged files are what `check` is for: a problem it reports, not an error.
        Err(e) if matches!(args.command, DbCommand::Check { .. }) && brine_rocksdb::reports_corruption(&e) => {
            let json = matches!(args.command, DbCommand::Check { json: true, .. });
            let mut report = brine_store::CheckReport::default();
            report.problem(
                "store",
                path.display().to_string(),
                format!("RocksDB reports corruption, so it cannot be opened: {e}"),
            );
            return print_check(&report, json);
        }
        Err(e) => return Err(opened(e)),
    };
    // Closed on every path, errors included, so the store is not left marked open.
    let result = run_on(&ins, &path, args.command).await;
    let closed = ins.close().await;
    let outcome = result?;
    closed?;
    tracing::debug!(path = %path.display(), "db command done");
    Ok(outcome)
}

async fn run_on(ins: &Arc<Inspector>, path: &std::path::Path, command: DbCommand) -> anyhow::Result<Outcome> {
    let outcome = match command {
        DbCommand::Check { json, .. } => {
            let report = blocking(ins, |i| Ok(i.check()?)).await?;
            print_check(&report, json)?
        }
        DbCommand::Buckets { json, .. } => {
            let names: Vec<&str> = ins.families().iter().map(|c| c.name()).collect();
            if json {
                ui::print_json(&json!({ "kind": ins.kind().as_str(), "buckets": names }))?;
            } else {
                for n in &names {
                    outln!("{n}")?;
                }
            }
            Outcome::Ok
        }
        DbCommand::Keys { cf, prefix, limit, json, .. } => {
            let cf = family(ins, &cf)?;
            let prefix = prefix.as_deref().map(key_bytes).transpose()?.unwrap_or_default();
            let limit = limit.unwrap_or(usize::MAX);
            blocking(ins, move |i| {
                let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                let mut n = 0usize;
                let mut failed = None;
                if json {
                    write!(out, "[")?;
                }
                i.keys(cf, &prefix, |k| {
                    if n >= limit {
                        return false;
                    }
                    let text = printable(k);
                    let written = if json {
                        let sep = if n == 0 { "" } else { "," };
                        serde_json::to_string(&text)
                            .map_err(std::io::Error::other)
                            .and_then(|t| write!(out, "{sep}{t}"))
                    } else {
                        writeln!(out, "{text}")
                    };
                    n += 1;
                    match written {
                        Ok(()) => true,
                        Err(e) => {
                            failed = Some(e);
                            false
                        }
                    }
                })?;
                if let Some(e) = failed {
                    // A closed pipe (`| head`) ends the listing quietly.
                    if e.kind() != std::io::ErrorKind::BrokenPipe {
                        return Err(e.into());
                    }
                    return Ok(());
                }
                if json {
                    writeln!(out, "]")?;
                }
                out.flush().or_else(|e| if e.kind() == std::io::ErrorKind::BrokenPipe { Ok(()) } else { Err(e) })?;
                Ok(())
            })
            .await?;
            Outcome::Ok
        }
        DbCommand::Get { cf, key, json, .. } => {
            let family = family(ins, &cf)?;
            if key.is_empty() {
                bail!("bad key \"\": empty (every key Brine writes has at least one byte)");
            }
            let bytes = key_bytes(&key)?;
            let value = match ins.get_json(family, &bytes) {
                Ok(Some(v)) => v,
                Ok(None) => bail!("key not found: {} {key}", family.name()),
                Err(e) if e.is_corrupt() => bail!(e),
                Err(e) => return Err(e.into()),
            };
            if json {
                ui::print_json(&json!({ "cf": family.name(), "key": printable(&bytes), "value": value }))?;
            } else {
                outln!("{}", serde_json::to_string_pretty(&value)?)?;
            }
            Outcome::Ok
        }
        DbCommand::Stats { json, .. } => {
            let stats = blocking(ins, |i| Ok(i.stats()?)).await?;
            if json {
                ui::print_json(&stats)?;
            } else {
                print_stats(path, &stats)?;
            }
            Outcome::Ok
        }
        DbCommand::Compact { dest, json, .. } => {
            let bar = ui::progress(None, "copying keys", json);
            let b = bar.clone();
            let target = dest.clone();
            let (before, after) =
                blocking(ins, move |i| Ok(i.compact_into(&target, 10_000, |n| b.set_position(n))?)).await?;
            bar.finish_and_clear();
            let gain = before as f64 / after.max(1) as f64;
            if json {
                ui::print_json(&json!({
                    "source": path, "destination": dest, "before": before, "after": after, "gain": gain,
                }))?;
            } else {
                outln!("{before} -> {after} bytes (gain={gain:.2}x)")?;
            }
            Outcome::Ok
        }
    };
    Ok(outcome)
}

fn print_stats(path: &std::path::Path, stats: &brine_rocksdb::inspect::StoreStats) -> anyhow::Result<()> {
    outln!("Statistics for {} ({} store), {} on disk", path.display(), stats.kind, ui::bytes(stats.disk_bytes))?;
    outln!(
        "{:<36} {:>10} {:>11} {:>11} {:>5} {:>11} {:>11}",
        "family",
        "keys",
        "data",
        "live est.",
        "ssts",
        "sst bytes",
        "memtable"
    )?;
    let (mut keys, mut data, mut ssts, mut sst_bytes) = (0, 0, 0, 0);
    for f in &stats.families {
        outln!(
            "{:<36} {:>10} {:>11} {:>11} {:>5} {:>11} {:>11}",
            f.name,
            f.keys,
            ui::bytes(f.logical_bytes),
            ui::bytes(f.live_data_bytes),
            f.sst_files,
            ui::bytes(f.sst_bytes),
            ui::bytes(f.memtable_bytes)
        )?;
        keys += f.keys;
        data += f.logical_bytes;
        ssts += f.sst_files;
        sst_bytes += f.sst_bytes;
    }
    outln!(
        "{:<36} {:>10} {:>11} {:>11} {:>5} {:>11}",
        format!("total ({} families)", stats.families.len()),
        keys,
        ui::bytes(data),
        "",
        ssts,
        ui::bytes(sst_bytes)
    )?;
    Ok(())
}
