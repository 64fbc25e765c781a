//! Output helpers: lines on stdout that end quietly on a closed pipe, one-line errors,
//! progress bars, byte sizes, JSON.

use std::io::Write;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// Stdout was closed by its reader (`brine … | head`): the command stops writing and
/// `main` ends it quietly, with status 0 (as a shell pipeline expects of a producer
/// whose consumer has seen enough).
#[derive(Debug)]
pub(crate) struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stdout was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// A failed write to stdout as the command's error: [`StdoutClosed`] for a closed pipe.
pub(crate) fn stdout_error(e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        anyhow::Error::new(StdoutClosed)
    } else {
        anyhow::Error::new(e).context("cannot write to stdout")
    }
}

/// Whether `e` is a closed stdout ([`StdoutClosed`]).
pub(crate) fn is_stdout_closed(e: &anyhow::Error) -> bool {
    e.is::<StdoutClosed>()
}

/// A command's `outcome` once its report was `printed`: a closed stdout does not hide
/// the outcome (a check that found problems still exits with 3).
pub(crate) fn printed(printed: anyhow::Result<()>, outcome: crate::Outcome) -> anyhow::Result<crate::Outcome> {
    match printed {
        Ok(()) => Ok(outcome),
        Err(e) if is_stdout_closed(&e) => Ok(outcome),
        Err(e) => Err(e),
    }
}

/// Writes one line to stdout; what [`outln!`] expands to.
pub(crate) fn write_line(args: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(args).and_then(|()| out.write_all(b"\n")).map_err(stdout_error)
}

/// `println!` that returns an error instead of panicking when stdout is closed.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::ui::write_line(format_args!($($arg)*))
    };
}
pub(crate) use outln;

/// An error and its causes on one line, without repeating a cause whose text the
/// message already includes.
pub(crate) fn one_line(e: &anyhow::Error) -> String {
    let mut line = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

/// A progress bar on stderr for `total` items (a spinner when the total is unknown);
/// hidden when stderr is not a terminal or when `quiet`.
pub(crate) fn progress(total: Option<u64>, what: &str, quiet: bool) -> ProgressBar {
    let bar = match total {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template("{spinner} {msg:<24} [{bar:30}] {pos}/{len} ({per_sec}, eta {eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {msg:<24} {pos} ({per_sec})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    if quiet {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_message(what.to_owned());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Prints `value` as one line of JSON.
pub(crate) fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string(value)?)?;
    Ok(())
}

/// Sets `stop` on SIGINT (Ctrl-C) or SIGTERM and wakes `wake`, logging `doing` (what
/// the command finishes before it stops).
pub(crate) fn watch_signals(
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    wake: std::sync::Arc<tokio::sync::Notify>,
    doing: &'static str,
) -> anyhow::Result<()> {
    use anyhow::Context;
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("stop requested: {doing}");
        stop.store(true, std::sync::atomic::Ordering::Release);
        wake.notify_one();
    });
    Ok(())
}

/// `report` as a JSON object with `"opened": opened` (what the command opened) added.
pub(crate) fn with_opened(report: &impl Serialize, opened: &str) -> anyhow::Result<serde_json::Value> {
    let mut object = serde_json::Map::new();
    object.insert("opened".into(), opened.into());
    match serde_json::to_value(report)? {
        serde_json::Value::Object(fields) => object.extend(fields),
        other => {
            object.insert("report".into(), other);
        }
    }
    Ok(serde_json::Value::Object(object))
}

/// `1234567` as `1.2 MiB`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_do_not_repeat_their_causes() {
        let inner = std::io::Error::other("disk on fire");
        let e = anyhow::Error::new(inner).context("cannot open /x: disk on fire");
        assert_eq!(one_line(&e), "cannot open /x: disk on fire");
        let e = anyhow::Error::new(std::io::Error::other("denied")).context("reading the policy");
        assert_eq!(one_line(&e), "reading the policy: denied");
    }

    #[test]
    fn sizes_read_like_sizes() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
    }
}
