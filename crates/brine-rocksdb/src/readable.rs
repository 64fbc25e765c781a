//! Keys as a person reads and types them: what `brine db` prints and accepts.
//!
//! A key is shown by its family's layout ([`crate::layout::key_layout`]): its parts
//! joined by `/`, each as what it means. A string part is its text, with `/`, `\` and
//! bytes outside printable ASCII written `\xNN` (so a `/` always separates parts); a
//! `u64` is a decimal number; a `u8` is the name of the state or job type it codes
//! (`Running`, `Completed`, `batch`). So `idx_executions_by_state` shows
//! `Running/e-job-0000004-4`, `job_versions` shows `job-0000004/2`, `events` shows
//! `17`, and `meta`'s counters show `count/Running`.
//!
//! [`parse`] reads the same form back: in full for `db get`, or as a prefix for
//! `--prefix` (where the last part may be cut short: `Running/e-job-00`, or `Running`
//! for every key under that state). A text that does not fit the layout is read in the
//! older raw notation (`\x02e-1`, `/` for a zero byte), so scripts written against it
//! keep working. A key that does not fit its layout (damage) is shown raw.

use brine_store::keys::{parse_printable, printable, KeyBuilder, SEP};
use brine_store::model::{ExecutionState, JobState, JobType};

use crate::cf::Cf;
use crate::layout::{self, meta, Part, Value};

/// What the one-byte part `name` codes, by name.
fn code_name(name: &str, code: u8) -> Option<&'static str> {
    match name {
        "state" => ExecutionState::from_code(code).map(ExecutionState::as_str),
        "job_state" => JobState::from_code(code).map(JobState::as_str),
        "job_type" => JobType::from_code(code).map(JobType::as_str),
        _ => None,
    }
}

/// The code of the one-byte part `name` given as a name or a number.
fn code_of(name: &str, text: &str) -> Result<u8, String> {
    if let Ok(n) = text.parse::<u8>() {
        return Ok(n);
    }
    match name {
        "state" => text.parse::<ExecutionState>().map(ExecutionState::code),
        "job_state" => text.parse::<JobState>().map(JobState::code),
        "job_type" => text.parse::<JobType>().map(JobType::code),
        _ => Err(format!("{name}: expected a number from 0 to 255, got {text:?}")),
    }
}

/// `key` of `cf`, shown by its layout (raw when it does not fit).
pub fn show(cf: Cf, key: &[u8]) -> String {
    if cf == Cf::Meta {
        return show_meta(key);
    }
    let Ok(decoded) = layout::decode(cf, key) else { return printable(key) };
    let mut out = String::with_capacity(key.len() + 8);
    for (i, (name, value)) in decoded.parts().iter().enumerate() {
        if i > 0 {
            out.push('/');
        }
        match *value {
            // A string part holds no zero byte, so the raw notation writes it whole,
            // with `/` and `\` escaped.
            Value::Str(s) => out.push_str(&printable(s.as_bytes())),
            Value::U64(n) => out.push_str(&n.to_string()),
            Value::U8(c) => match code_name(name, c) {
                Some(text) => out.push_str(text),
                None => out.push_str(&c.to_string()),
            },
        }
    }
    out
}

fn show_meta(key: &[u8]) -> String {
    if let Some(code) = key.strip_prefix(b"count/").filter(|c| c.len() == 1).map(|c| c[0]) {
        return match ExecutionState::from_code(code) {
            Some(state) => format!("count/{state}"),
            None => format!("count/{code}"),
        };
    }
    if let Some(rest) = key.strip_prefix(b"migrated\0").filter(|r| r.len() == 8) {
        let mut n = [0u8; 8];
        n.copy_from_slice(rest);
        return format!("migrated/{}", u64::from_be_bytes(n));
    }
    printable(key)
}

/// Reads a key of `cf` typed as [`show`] prints it: the whole key, or (with `prefix`)
/// the start of one. Falls back to the raw notation; the error says what does not fit.
pub fn parse(cf: Cf, text: &str, prefix: bool) -> Result<Vec<u8>, String> {
    let readable = if cf == Cf::Meta { parse_meta(text) } else { parse_parts(cf, text, prefix) };
    match readable {
        Ok(key) => Ok(key),
        Err(reason) => parse_printable(text).ok().filter(|_| text.contains('\\')).ok_or(reason),
    }
}

fn unescape(part: &str) -> Result<Vec<u8>, String> {
    if part.contains('/') {
        return Err("a part cannot hold '/' (write \\x2f)".into());
    }
    parse_printable(part).map_err(|e| e.reason)
}

fn parse_meta(text: &str) -> Result<Vec<u8>, String> {
    if let Some(state) = text.strip_prefix("count/") {
        return Ok(meta::count(code_of("state", state)?));
    }
    if let Some(version) = text.strip_prefix("migrated/") {
        let n = version.parse::<u64>().map_err(|_| format!("migrated: expected a version number, got {version:?}"))?;
        return Ok(meta::migrated(n));
    }
    unescape(text)
}

fn parse_parts(cf: Cf, text: &str, prefix: bool) -> Result<Vec<u8>, String> {
    let layout = layout::parts(cf);
    let given: Vec<&str> = if text.is_empty() { Vec::new() } else { text.split('/').collect() };
    let shape = || layout::key_layout(cf);
    if given.len() > layout.len() {
        return Err(format!("{} parts, but {} keys have {} ({})", given.len(), cf.name(), layout.len(), shape()));
    }
    if !prefix && given.len() < layout.len() {
        return Err(format!("{} part(s), but {} keys have {} ({})", given.len(), cf.name(), layout.len(), shape()));
    }
    let mut key = KeyBuilder::new().build();
    for (i, (part, text)) in layout.iter().zip(&given).enumerate() {
        // The last part typed as a prefix may be cut short (no separator after it), or
        // empty (`job-1/`: everything under the parts before it).
        let open_end = prefix && i + 1 == given.len();
        if open_end && text.is_empty() {
            break;
        }
        match *part {
            Part::Str(name) | Part::Last(name) => {
                let bytes = unescape(text).map_err(|e| format!("{name}: {e}"))?;
                if bytes.contains(&SEP) {
                    return Err(format!("{name}: a zero byte cannot be in a string part"));
                }
                key.extend_from_slice(&bytes);
                if matches!(part, Part::Str(_)) && !open_end {
                    key.push(SEP);
                }
            }
            Part::U64(name) => {
                let n = text.parse::<u64>().map_err(|_| format!("{name}: expected a number, got {text:?}"))?;
                key.extend_from_slice(&n.to_be_bytes());
            }
            Part::U8(name) => key.push(code_of(name, text)?),
        }
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use brine_store::model::{ExecutionId, JobId};

    #[test]
    fn keys_show_by_their_layout_and_read_back() {
        let e = ExecutionId::new("e-job-0000004-4").unwrap();
        let job = JobId::new("job-0000004").unwrap();
        let cases: Vec<(Cf, Vec<u8>, &str)> = vec![
            (
                Cf::IdxExecutionsByState,
                layout::execution_by_state(ExecutionState::Running, &e),
                "Running/e-job-0000004-4",
            ),
            (Cf::IdxExecutionsByJobId, layout::execution_by_job(&job, &e), "job-0000004/e-job-0000004-4"),
            (Cf::ExecutionEvents, layout::execution_event(&e, 7), "e-job-0000004-4/7"),
            (Cf::Events, layout::log_entry(17), "17"),
            (Cf::JobVersions, layout::job_version(&job, 2), "job-0000004/2"),
            (Cf::Executions, layout::execution(&ExecutionId::new("a/b\\c").unwrap()), "a\\x2fb\\x5cc"),
            (Cf::Meta, meta::count(ExecutionState::Running.code()), "count/Running"),
            (Cf::Meta, meta::migrated(3), "migrated/3"),
            (Cf::Meta, meta::LOG_HEAD.to_vec(), "log_head"),
        ];
        for (cf, key, shown) in cases {
            assert_eq!(show(cf, &key), shown, "{cf:?}");
            assert_eq!(parse(cf, shown, false).unwrap(), key, "{cf:?} {shown}");
        }
    }

    #[test]
    fn prefixes_may_stop_anywhere() {
        let e = ExecutionId::new("e-1").unwrap();
        let running = ExecutionState::Running.code();
        assert_eq!(parse(Cf::IdxExecutionsByState, "Running", true).unwrap(), vec![running]);
        assert_eq!(parse(Cf::IdxExecutionsByState, "running/e-", true).unwrap(), [&[running][..], b"e-"].concat());
        assert_eq!(parse(Cf::IdxExecutionsByJobId, "job-1", true).unwrap(), b"job-1".to_vec());
        assert_eq!(parse(Cf::IdxExecutionsByJobId, "job-1/", true).unwrap(), b"job-1\0".to_vec());
        assert_eq!(parse(Cf::IdxExecutionsByState, "", true).unwrap(), Vec::<u8>::new());
        assert_eq!(parse(Cf::ExecutionEvents, "e-1/", true).unwrap(), b"e-1\0".to_vec());
        // The older raw notation still reads.
        assert_eq!(
            parse(Cf::IdxExecutionsByState, "\\x02e-1", false).unwrap(),
            layout::execution_by_state(ExecutionState::from_code(2).unwrap(), &e)
        );
    }

    #[test]
    fn what_does_not_fit_is_named() {
        let e = parse(Cf::ExecutionEvents, "e-1", false).unwrap_err();
        assert!(e.contains("execution_events keys have 2 (str(execution_id) u64(history_seq))"), "{e}");
        let e = parse(Cf::ExecutionEvents, "e-1/seven", false).unwrap_err();
        assert_eq!(e, "history_seq: expected a number, got \"seven\"");
        let e = parse(Cf::IdxExecutionsByState, "Runing/e-1", false).unwrap_err();
        assert!(e.contains("unknown execution state \"Runing\""), "{e}");
        // A damaged key is shown raw.
        assert_eq!(show(Cf::ExecutionEvents, b"e-1"), "e-1");
    }
}
