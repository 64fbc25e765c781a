//! `brine migrate`: a store's format version and the numbered steps that upgrade it.

use std::path::PathBuf;

use anyhow::Context;
use brine_rocksdb::migrate;
use clap::{Args, Subcommand};

use crate::ui::{self, outln};
use crate::Outcome;

#[derive(Debug, Args)]
pub(crate) struct MigrateArgs {
    #[command(subcommand)]
    command: MigrateCommand,
}

#[derive(Debug, Subcommand)]
enum MigrateCommand {
    /// Print the store's format version, this build's, and the steps `up` would apply.
    #[command(after_help = crate::help::page(
        &[
            "brine migrate status /var/lib/brine/node-0-compute.db",
            "brine migrate status postgres:postgresql://brine@db/brine --json",
        ],
        &["BRINE_LOG"],
    ))]
    Status {
        /// The store directory, or postgres:URL for a PostgreSQL database.
        path: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Apply the pending steps in order (if interrupted, run it again: a step only
    /// counts once it has finished).
    #[command(after_help = crate::help::page(
        &[
            "brine migrate up --dry-run /var/lib/brine/node-0-compute.db",
            "brine migrate up /var/lib/brine/node-0-compute.db",
            "brine migrate up --to 2 --backup /srv/backups/compute-v1 /var/lib/brine/node-0-compute.db",
            "brine migrate up postgres:postgresql://brine@db/brine",
        ],
        &["BRINE_LOG"],
    ))]
    Up {
        /// The store directory, or postgres:URL for a PostgreSQL database (whose schema
        /// moves in one transaction; back it up with pg_dump first).
        path: PathBuf,
        /// Print the steps that would run; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Where to put the checkpoint of the store taken before the first step
        /// (default: next to it, `PATH.before-v<N>` for the version it goes to).
        #[arg(long, value_name = "DIR", conflicts_with = "no_backup")]
        backup: Option<PathBuf>,
        /// Take no checkpoint first.
        #[arg(long)]
        no_backup: bool,
        /// Stop at this format version (default: this build's).
        #[arg(long, value_name = "N")]
        to: Option<u64>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Copy a store into an empty store of another backend (export piped to import,
    /// no file), then compare the two: counts per state, log head, checkpoints and a
    /// sample of records read back from both (exit status 3 when they differ).
    #[command(after_help = crate::help::page(
        &[
            "brine migrate copy --from /var/lib/brine/node-0-compute.db --to postgres:postgresql://brine@db/brine",
            "brine migrate copy --from rocksdb:/srv/old-requester.db --to rocksdb:/srv/new-requester.db --json",
            "brine migrate copy --from postgres:postgresql:///brine --kind compute --to /srv/node-3-compute.db",
        ],
        &["BRINE_NODE_ID", "BRINE_QUOTA_BYTES", "BRINE_LOG"],
    ))]
    Copy(crate::transfer::CopyArgs),
}

/// Prints a store's version line, then "up to date" or its pending steps (`how`: what
/// applies them).
fn print_status<'a>(
    head: &str,
    how: &str,
    pending: impl ExactSizeIterator<Item = (u64, &'a str)>,
) -> anyhow::Result<()> {
    outln!("{head}")?;
    if pending.len() == 0 {
        return outln!("up to date");
    }
    outln!("pending steps ({how}):")?;
    for (version, description) in pending {
        outln!("  {version}: {description}")?;
    }
    Ok(())
}

/// The database URL when `path` names a PostgreSQL database (`postgres:URL`, or a
/// `postgresql://` URL) rather than a store directory.
fn postgres_url(path: &std::path::Path) -> Option<String> {
    match crate::transfer::Spec::parse(&path.to_string_lossy()) {
        Ok(crate::transfer::Spec::Postgres(url)) => Some(url),
        _ => None,
    }
}

pub(crate) async fn run(args: MigrateArgs) -> anyhow::Result<Outcome> {
    match args.command {
        MigrateCommand::Copy(args) => return crate::transfer::run_copy(args).await,
        MigrateCommand::Status { path, json } if postgres_url(&path).is_some() => {
            let url = postgres_url(&path).unwrap_or_default();
            let status = brine_postgres::schema_status(&url).await?;
            if json {
                ui::print_json(&status)?;
                return Ok(Outcome::Ok);
            }
            let head = format!(
                "database {}: schema version {}, this build writes {}",
                status.database, status.current, status.target
            );
            let pending = status.pending.iter().map(|(v, d)| (u64::from(*v), *d));
            print_status(&head, "applied by brine migrate up, or when a store opens", pending)?;
        }
        MigrateCommand::Up { path, dry_run, backup, no_backup: _, to, json } if postgres_url(&path).is_some() => {
            let url = postgres_url(&path).unwrap_or_default();
            if backup.is_some() {
                anyhow::bail!(
                    "--backup is for RocksDB stores: back a PostgreSQL schema up with pg_dump (docs/POSTGRES.md)"
                );
            }
            let status = brine_postgres::schema_status(&url).await?;
            if to.is_some_and(|to| to != u64::from(status.target)) {
                anyhow::bail!(
                    "--to: a PostgreSQL schema moves to this build's version ({}) in one transaction",
                    status.target
                );
            }
            let (from, to) = match dry_run || status.pending.is_empty() {
                true => (status.current, if dry_run { status.target } else { status.current }),
                false => {
                    let migrated = brine_postgres::migrate_schema(&url).await?;
                    (migrated.from, migrated.to)
                }
            };
            let steps: Vec<u32> = status.pending.iter().map(|(v, _)| *v).collect();
            if json {
                let report = serde_json::json!({
                    "database": status.database, "from": from, "to": to, "dry_run": dry_run, "steps": steps,
                });
                ui::print_json(&report)?;
                return Ok(Outcome::Ok);
            }
            match (steps.is_empty(), dry_run) {
                (true, _) => outln!("database {} is at schema version {from}: nothing to do", status.database)?,
                (false, true) => outln!(
                    "dry run (nothing written): database {} would go from schema version {from} to {to}",
                    status.database
                )?,
                (false, false) => outln!(
                    "migrated database {} from schema version {from} to {to} (one transaction)",
                    status.database
                )?,
            }
            for (version, description) in &status.pending {
                outln!("  step {version}: {description}")?;
            }
        }
        MigrateCommand::Status { path, json } => {
            let status = tokio::task::spawn_blocking(move || migrate::status(&path))
                .await
                .context("the migration task failed")??;
            if json {
                ui::print_json(&status)?;
                return Ok(Outcome::Ok);
            }
            let head = format!(
                "{} ({} store): format version {}, this build writes {}",
                status.path.display(),
                status.kind,
                status.current,
                status.target
            );
            let pending = status.pending.iter().map(|s| (s.to, s.description));
            print_status(&head, &format!("brine migrate up {}", status.path.display()), pending)?;
        }
        MigrateCommand::Up { path, dry_run, backup, no_backup, to, json } => {
            let bar = ui::progress(None, "records migrated", json);
            let b = bar.clone();
            let shown = path.clone();
            let backup = match (no_backup, backup) {
                (true, _) => None,
                (false, Some(dir)) => Some(dir),
                (false, None) => {
                    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                    Some(path.with_file_name(format!("{name}.before-v{}", to.unwrap_or(brine_rocksdb::SCHEMA_VERSION))))
                }
            };
            let report = tokio::task::spawn_blocking(move || {
                let options = migrate::UpOptions { dry_run, to, backup };
                migrate::up_with(&path, &options, |to, n| {
                    b.set_message(format!("step {to}"));
                    b.set_position(n);
                })
            })
            .await
            .context("the migration task failed")?;
            bar.finish_and_clear();
            let report = report?;
            if json {
                ui::print_json(&report)?;
                return Ok(Outcome::Ok);
            }
            match (report.applied.is_empty(), dry_run) {
                (true, _) => outln!("{} is at format version {}: nothing to do", shown.display(), report.to)?,
                (false, true) => outln!(
                    "dry run (nothing written): {} would go from version {} to {}",
                    shown.display(),
                    report.from,
                    report.to
                )?,
                (false, false) => {
                    outln!("migrated {} from format version {} to {}", shown.display(), report.from, report.to)?
                }
            }
            if let Some(backup) = &report.backup {
                outln!("  backup of version {} at {} (a RocksDB checkpoint)", report.from, backup.display())?;
            }
            for step in &report.applied {
                outln!("  step {}: {} records", step.to, step.records)?;
            }
        }
    }
    Ok(Outcome::Ok)
}
