//! `brine recover`: restart recovery on a compute store, with a policy file or preset.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use brine::{ExecutionStore, StoreConfig};
use brine_recovery::{recover, Cleanup, Policy, RecoveryOptions, Report};
use clap::{Args, ValueEnum};

use crate::ui::{self, outln};
use crate::Outcome;

#[derive(Debug, Args)]
pub(crate) struct RecoverArgs {
    /// The compute store (default: BRINE_COMPUTE_STORE_PATH, else {BRINE_DIR}/{NODE_ID}-compute.db).
    #[arg(long, value_name = "PATH")]
    store: Option<PathBuf>,
    /// The backend (default: BRINE_COMPUTE_STORE_TYPE, else rocksdb). A memory store
    /// starts empty.
    #[arg(long, value_enum)]
    backend: Option<crate::backend::BackendArg>,
    /// The PostgreSQL database of the postgres backend (default: BRINE_DATABASE_URL).
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Compute and print the report, change nothing.
    #[arg(long)]
    dry_run: bool,
    /// A policy file, TOML or JSON (JSON when it starts with `{`).
    #[arg(long, value_name = "FILE", conflicts_with = "preset")]
    policy: Option<PathBuf>,
    /// A built-in policy: seed (no action anywhere, the default) or fail-live.
    #[arg(long, value_name = "NAME")]
    preset: Option<String>,
    /// When to scan for and repair inconsistent indexes, history and counters.
    #[arg(long, value_enum, default_value_t = CleanupArg::Auto)]
    cleanup: CleanupArg,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// When the cleanup scan runs.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum CleanupArg {
    /// After an unclean shutdown.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

impl From<CleanupArg> for Cleanup {
    fn from(c: CleanupArg) -> Self {
        match c {
            CleanupArg::Auto => Cleanup::Auto,
            CleanupArg::Always => Cleanup::Always,
            CleanupArg::Never => Cleanup::Never,
        }
    }
}

/// The policy the flags name: a file, a preset, or `seed`.
pub(crate) fn load_policy(file: Option<&Path>, preset: Option<&str>) -> anyhow::Result<Policy> {
    match (file, preset) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            let policy = Policy::from_text(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            Ok(policy.named(path.display().to_string()))
        }
        (None, Some(name)) => Ok(Policy::preset(name)?),
        (None, None) => Ok(Policy::seed()),
    }
}

/// Runs recovery on `store` with a progress bar (hidden when `quiet`).
pub(crate) async fn run_with_progress(
    store: &dyn ExecutionStore,
    policy: &Policy,
    dry_run: bool,
    cleanup: Cleanup,
    quiet: bool,
) -> anyhow::Result<Report> {
    let bar = ui::progress(Some(0), "recovery", quiet);
    let b = bar.clone();
    let options = RecoveryOptions {
        dry_run,
        cleanup,
        progress: Some(Arc::new(move |p: brine_recovery::Progress| {
            b.set_length(p.total);
            b.set_position(p.done);
            b.set_message(format!("recovery: {}", p.state));
        })),
        ..RecoveryOptions::default()
    };
    let report = recover(store, policy, &options).await;
    bar.finish_and_clear();
    Ok(report?)
}

pub(crate) async fn run(args: RecoverArgs) -> anyhow::Result<Outcome> {
    let policy = load_policy(args.policy.as_deref(), args.preset.as_deref())?;
    let mut config = StoreConfig::from_env()?;
    config.compute_store_type = crate::backend::choose(args.backend, config.compute_store_type, args.store.as_deref())?;
    let backend = config.compute_store_type;
    crate::backend::database_url(&mut config, backend, args.database_url.clone())?;
    if let Some(path) = args.store {
        config.compute_store_path = path;
    }
    let options = brine::Options { create_if_missing: false, ..brine::Options::default() };
    let store = brine::open_execution_store_with(&config, &options).await?;
    let opened = brine::describe(&config, brine::Side::Compute);
    tracing::debug!(%opened, dry_run = args.dry_run, policy = %policy.name(), "recovering");
    let report = run_with_progress(&*store, &policy, args.dry_run, args.cleanup.into(), args.json).await;
    store.close().await?;
    let report = report?;
    if args.json {
        ui::print_json(&ui::with_opened(&report, &opened)?)?;
    } else {
        outln!("opened {opened}")?;
        outln!("{report}")?;
    }
    Ok(Outcome::Ok)
}
