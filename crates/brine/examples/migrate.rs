//! `cargo xtask migrate status|up STORE [--to N] [--dry-run] [--backup DIR | --no-backup]`:
//! the migration task a downstream project copies into its own `xtask`, calling the
//! library (`brine::migrate`) rather than the `brine` command.
//!
//! STORE is a RocksDB store directory, or `postgres:URL` for a PostgreSQL database.
//! `status` prints the store's format version, this build's, and the pending steps;
//! `up` takes a backup (a RocksDB checkpoint next to the store, `STORE.before-v<N>`,
//! unless told otherwise), applies the steps with a line per step, and can be run
//! again after a crash. Exit status 1 on an error, with the error on stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use brine::migrate;

/// What the command line asks for.
struct Request {
    up: bool,
    store: String,
    to: Option<u64>,
    dry_run: bool,
    backup: Backup,
}

enum Backup {
    NextToStore,
    At(PathBuf),
    None,
}

fn parse(args: &[String]) -> Result<Request, String> {
    let usage = "usage: migrate status|up STORE [--to N] [--dry-run] [--backup DIR | --no-backup]";
    let (command, rest) = args.split_first().ok_or(usage)?;
    let up = match command.as_str() {
        "status" => false,
        "up" => true,
        other => return Err(format!("unknown command {other:?}; {usage}")),
    };
    let mut request = Request { up, store: String::new(), to: None, dry_run: false, backup: Backup::NextToStore };
    let mut rest = rest.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--dry-run" if up => request.dry_run = true,
            "--no-backup" if up => request.backup = Backup::None,
            "--backup" if up => request.backup = Backup::At(rest.next().ok_or("--backup needs a directory")?.into()),
            "--to" if up => {
                let n = rest.next().ok_or("--to needs a version")?;
                request.to = Some(n.parse().map_err(|_| format!("--to {n:?}: not a version number"))?);
            }
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag}; {usage}")),
            store if request.store.is_empty() => request.store = store.to_owned(),
            extra => return Err(format!("unexpected argument {extra:?}; {usage}")),
        }
    }
    if request.store.is_empty() {
        return Err(format!("no store named; {usage}"));
    }
    Ok(request)
}

async fn postgres(request: &Request, url: &str) -> Result<(), String> {
    let status = migrate::postgres::schema_status(url).await.map_err(|e| e.to_string())?;
    println!("database {}: schema version {}, this build's {}", status.database, status.current, status.target);
    for (version, description) in &status.pending {
        println!("  pending step {version}: {description}");
    }
    if !request.up || status.pending.is_empty() || request.dry_run {
        if request.up && !request.dry_run {
            println!("up to date");
        }
        return Ok(());
    }
    if request.to.is_some_and(|to| to != u64::from(status.target)) {
        return Err("a PostgreSQL schema moves to this build's version in one transaction: leave out --to".into());
    }
    let migrated = migrate::postgres::migrate_schema(url).await.map_err(|e| e.to_string())?;
    println!("migrated the schema from version {} to {}", migrated.from, migrated.to);
    Ok(())
}

fn rocksdb(request: &Request) -> Result<(), String> {
    let path = PathBuf::from(&request.store);
    let status = migrate::rocksdb::status(&path).map_err(|e| e.to_string())?;
    println!(
        "{} ({} store): format version {}, this build's {}",
        path.display(),
        status.kind,
        status.current,
        status.target
    );
    for step in &status.pending {
        println!("  pending step {}: {}", step.to, step.description);
    }
    if !request.up {
        return Ok(());
    }
    let to = request.to.unwrap_or(status.target);
    let backup = match &request.backup {
        Backup::None => None,
        Backup::At(dir) => Some(dir.clone()),
        Backup::NextToStore => {
            let mut name = path.as_os_str().to_owned();
            name.push(format!(".before-v{to}"));
            Some(PathBuf::from(name))
        }
    };
    let options = migrate::rocksdb::UpOptions { dry_run: request.dry_run, to: request.to, backup };
    let report = migrate::rocksdb::up_with(&path, &options, |step, records| {
        if records > 0 && records.is_multiple_of(100_000) {
            println!("  step {step}: {records} records");
        }
    })
    .map_err(|e| e.to_string())?;
    if let Some(backup) = &report.backup {
        println!("backup: {}", backup.display());
    }
    for step in &report.applied {
        let verb = if report.dry_run { "would apply" } else { "applied" };
        println!("{verb} step {} ({} records)", step.to, step.records);
    }
    if report.applied.is_empty() {
        println!("up to date");
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = parse(&args).and_then(|request| match request.store.strip_prefix("postgres:") {
        Some(url) => {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
            runtime.block_on(postgres(&request, url))
        }
        None => rocksdb(&request),
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("migrate: {e}");
            ExitCode::FAILURE
        }
    }
}
