//! What `--help` teaches besides the flags: examples, the environment a command reads,
//! and the exit statuses (the same on every page).

/// Every variable `brine` reads, with what it sets.
const VARIABLES: [(&str, &str); 9] = [
    ("BRINE_DIR", "where stores and archives live (default ~/.brine)"),
    ("BRINE_NODE_ID", "this node's id, part of its store file names (default node-0; no '/', not starting with '.')"),
    (
        "BRINE_JOB_STORE_TYPE",
        "the requester store's backend: rocksdb (default; boltdb names it too), inmemory or postgres",
    ),
    ("BRINE_COMPUTE_STORE_TYPE", "the compute store's backend, likewise"),
    ("BRINE_JOB_STORE_PATH", "the requester store (default {BRINE_DIR}/{NODE_ID}-requester.db)"),
    ("BRINE_COMPUTE_STORE_PATH", "the compute store (default {BRINE_DIR}/{NODE_ID}-compute.db)"),
    ("BRINE_DATABASE_URL", "the PostgreSQL database of the postgres backend"),
    (
        "BRINE_QUOTA_BYTES",
        "a space quota for each rocksdb store (bytes, or 512MiB, 8GiB, ...): past it, writes that add data fail \
         with NoSpace until an operator frees space and runs brine db alarm disarm",
    ),
    ("BRINE_LOG", "what to log on stderr: error, warn (default), info, debug, trace"),
];

/// The exit statuses, as every `--help` lists them.
pub(crate) const EXIT_STATUS: &str = "\
Exit status:
  0    success (also when stdout is closed early, as in `brine ... | head`)
  1    an error: one line on stderr naming what failed
  2    a usage error: an unknown command or flag, a missing or unparsable value
  3    problems found: `db check`, `archive verify` (or `simulate`'s final check) found
       inconsistencies or corruption
  130  interrupted by Ctrl-C (SIGINT) or SIGTERM: `simulate` and `purge` stop at a safe
       point, say what was interrupted, and leave the stores consistent";

/// The environment section for `names` (all variables when `None`).
fn environment(names: Option<&[&str]>) -> String {
    let mut out = String::from("Environment (each BRINE_* name falls back to Bacalhau's BACALHAU_* name):\n");
    for (name, what) in VARIABLES {
        if names.is_none_or(|n| n.contains(&name)) {
            out.push_str(&format!("  {name:<26}{what}\n"));
        }
    }
    out.trim_end().to_owned()
}

/// What `brine --help` ends with: every variable and the exit statuses.
pub(crate) fn footer() -> String {
    format!("{}\n\n{EXIT_STATUS}", environment(None))
}

/// A subcommand's help page end: its `examples`, the variables `env` it reads, and the
/// exit statuses.
pub(crate) fn page(examples: &[&str], env: &[&str]) -> String {
    let mut out = String::from("Examples:\n");
    for e in examples {
        out.push_str(&format!("  {e}\n"));
    }
    out.push('\n');
    out.push_str(&environment(Some(env)));
    out.push_str("\n\n");
    out.push_str(EXIT_STATUS);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_has_examples_its_variables_and_the_exit_statuses() {
        let text = page(&["brine db check S"], &["BRINE_LOG"]);
        assert!(text.starts_with("Examples:\n  brine db check S\n"), "{text}");
        assert!(text.contains("  BRINE_LOG ") && !text.contains("BRINE_DIR"), "{text}");
        assert!(text.ends_with(EXIT_STATUS));
        let footer = footer();
        assert!(VARIABLES.iter().all(|(name, _)| footer.contains(&format!("  {name} "))), "{footer}");
    }
}
