//! Label selectors for job listings: `key=value`, `key!=value`, `key`, `!key`,
//! `key in (a,b)`, `key notin (a,b)`, joined by commas.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelRequirement {
    /// The label is present with this value.
    Equals(String, String),
    /// The label is absent or has another value.
    NotEquals(String, String),
    /// The label is present.
    Exists(String),
    /// The label is absent.
    NotExists(String),
    /// The label is present with one of these values.
    In(String, Vec<String>),
    /// The label is absent or has none of these values.
    NotIn(String, Vec<String>),
}

impl LabelRequirement {
    /// Whether `labels` meet this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            LabelRequirement::Equals(k, v) => labels.get(k) == Some(v),
            LabelRequirement::NotEquals(k, v) => labels.get(k) != Some(v),
            LabelRequirement::Exists(k) => labels.contains_key(k),
            LabelRequirement::NotExists(k) => !labels.contains_key(k),
            LabelRequirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            LabelRequirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
        }
    }
}

/// All requirements must hold; an empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    /// The requirements.
    pub requirements: Vec<LabelRequirement>,
}

impl LabelSelector {
    /// Whether `labels` meet every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

/// A selector string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid label selector {input:?}: {reason}")]
pub struct SelectorError {
    /// The whole selector given.
    pub input: String,
    /// What is wrong.
    pub reason: String,
}

fn split_top_level(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn key(raw: &str) -> Result<String, String> {
    let k = raw.trim();
    if k.is_empty() || k.contains(|c: char| c.is_whitespace() || "=!(),".contains(c)) {
        return Err(format!("bad label key {raw:?}"));
    }
    Ok(k.to_owned())
}

fn set_values(raw: &str) -> Result<Vec<String>, String> {
    let inner = raw
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("expected a parenthesised list, found {raw:?}"))?;
    let values: Vec<String> = inner.split(',').map(|v| v.trim().to_owned()).collect();
    if values.iter().any(String::is_empty) {
        return Err(format!("empty value in {raw:?}"));
    }
    Ok(values)
}

fn requirement(part: &str) -> Result<LabelRequirement, String> {
    let p = part.trim();
    if p.is_empty() {
        return Err("empty requirement".into());
    }
    if let Some((k, v)) = p.split_once("!=") {
        return Ok(LabelRequirement::NotEquals(key(k)?, v.trim().to_owned()));
    }
    if let Some((k, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
        return Ok(LabelRequirement::Equals(key(k)?, v.trim().to_owned()));
    }
    if let Some(k) = p.strip_prefix('!') {
        return Ok(LabelRequirement::NotExists(key(k)?));
    }
    let mut words = p.splitn(2, char::is_whitespace);
    let k = words.next().unwrap_or_default();
    match words.next().map(str::trim_start) {
        None => Ok(LabelRequirement::Exists(key(k)?)),
        Some(rest) => {
            if let Some(list) = rest.strip_prefix("notin") {
                Ok(LabelRequirement::NotIn(key(k)?, set_values(list)?))
            } else if let Some(list) = rest.strip_prefix("in") {
                Ok(LabelRequirement::In(key(k)?, set_values(list)?))
            } else {
                Err(format!("expected =, !=, in or notin after {k:?}"))
            }
        }
    }
}

impl FromStr for LabelSelector {
    type Err = SelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            return Ok(LabelSelector::default());
        }
        let requirements = split_top_level(s)
            .into_iter()
            .map(requirement)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|reason| SelectorError { input: s.to_owned(), reason })?;
        Ok(LabelSelector { requirements })
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .requirements
            .iter()
            .map(|r| match r {
                LabelRequirement::Equals(k, v) => format!("{k}={v}"),
                LabelRequirement::NotEquals(k, v) => format!("{k}!={v}"),
                LabelRequirement::Exists(k) => k.clone(),
                LabelRequirement::NotExists(k) => format!("!{k}"),
                LabelRequirement::In(k, vs) => format!("{k} in ({})", vs.join(",")),
                LabelRequirement::NotIn(k, vs) => format!("{k} notin ({})", vs.join(",")),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn parses_and_matches_every_form() {
        let sel: LabelSelector = "env=prod, tier!=db, team, !canary, zone in (a, b), os notin (win)".parse().unwrap();
        assert_eq!(sel.requirements.len(), 6);
        let good = labels(&[("env", "prod"), ("tier", "web"), ("team", "x"), ("zone", "b"), ("os", "linux")]);
        assert!(sel.matches(&good));
        let mut bad = good.clone();
        bad.insert("canary".into(), "1".into());
        assert!(!sel.matches(&bad));
        let mut bad = good;
        bad.insert("zone".into(), "c".into());
        assert!(!sel.matches(&bad));
        assert_eq!(sel.to_string().parse::<LabelSelector>().unwrap(), sel);
    }

    #[test]
    fn refuses_malformed_selectors() {
        for s in ["=x", "a in b", "a in (x,)", "a b", ",", "a b=c"] {
            let err = s.parse::<LabelSelector>().unwrap_err();
            assert_eq!(err.input, s);
        }
        assert!("".parse::<LabelSelector>().unwrap().matches(&BTreeMap::new()));
    }
}
