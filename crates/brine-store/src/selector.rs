//! Label selectors for job listings, in the Kubernetes label-selector grammar that
//! Bacalhau passes through: requirements joined by commas, all of which must hold.
//!
//! ```text
//! selector    := "" | requirement ("," requirement)*
//! requirement := key                          the label is present
//!              | "!" key                      the label is absent
//!              | key ("=" | "==") value       present with this value
//!              | key "!=" value               absent, or another value
//!              | key ">" integer              present with an integer value above it
//!              | key "<" integer              present with an integer value below it
//!              | key "in" "(" values ")"      present with one of these values
//!              | key "notin" "(" values ")"   absent, or none of these values
//! values      := value ("," value)*
//! ```
//!
//! Keys and values are runs of characters other than whitespace and `,()=!<>`;
//! whitespace between tokens is ignored. The value after `=`, `==` or `!=` may be empty
//! (`key=`). An integer is a signed 64-bit decimal (`-3`, `10`); a label whose value is
//! not one never meets `>` or `<`. Anything else (`>=`, `<=`, `key in ()`, an empty
//! key, unbalanced parentheses, a trailing comma) is a [`SelectorError`] that names
//! the byte offset (counted from 0) where the problem starts and the text found there.

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
    /// The label is present with an integer value greater than this one.
    GreaterThan(String, i64),
    /// The label is present with an integer value less than this one.
    LessThan(String, i64),
}

impl LabelRequirement {
    /// Whether `labels` meet this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let integer = |k: &String| labels.get(k).and_then(|v| v.parse::<i64>().ok());
        match self {
            LabelRequirement::Equals(k, v) => labels.get(k) == Some(v),
            LabelRequirement::NotEquals(k, v) => labels.get(k) != Some(v),
            LabelRequirement::Exists(k) => labels.contains_key(k),
            LabelRequirement::NotExists(k) => !labels.contains_key(k),
            LabelRequirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            LabelRequirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            LabelRequirement::GreaterThan(k, n) => integer(k).is_some_and(|v| v > *n),
            LabelRequirement::LessThan(k, n) => integer(k).is_some_and(|v| v < *n),
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
#[error("invalid label selector {input:?} at byte {offset}: {reason}")]
pub struct SelectorError {
    /// The whole selector given.
    pub input: String,
    /// The byte offset in `input`, counted from 0, where the problem starts (the
    /// length of `input` when the selector ends too early).
    pub offset: usize,
    /// What is wrong, with the text found at `offset`.
    pub reason: String,
}

/// The characters that end a key or a value.
const PUNCTUATION: &str = ",()=!<>";

/// A token of a selector: its byte offset and its text.
#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    at: usize,
    text: &'a str,
}

impl Token<'_> {
    /// A key, value or keyword rather than punctuation.
    fn is_word(&self) -> bool {
        !self.text.starts_with(|c| PUNCTUATION.contains(c))
    }
}

fn tokens(s: &str) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let mut chars = s.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if c.is_whitespace() {
            continue;
        }
        let end = if "=!<>".contains(c) && chars.peek().is_some_and(|&(_, n)| n == '=') {
            chars.next();
            at + 2
        } else if PUNCTUATION.contains(c) {
            at + c.len_utf8()
        } else {
            let mut end = at + c.len_utf8();
            while let Some(&(i, n)) = chars.peek() {
                if n.is_whitespace() || PUNCTUATION.contains(n) {
                    break;
                }
                end = i + n.len_utf8();
                chars.next();
            }
            end
        };
        out.push(Token { at, text: &s[at..end] });
    }
    out
}

/// A recursive-descent reader over the tokens of one selector.
struct Parser<'a> {
    input: &'a str,
    tokens: Vec<Token<'a>>,
    next: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<Token<'a>> {
        self.tokens.get(self.next).copied()
    }

    fn bump(&mut self) -> Option<Token<'a>> {
        let t = self.peek();
        self.next += usize::from(t.is_some());
        t
    }

    /// An error at `found` (the end of the input when `None`), naming what was found.
    fn error(&self, found: Option<Token<'a>>, expected: impl fmt::Display) -> SelectorError {
        let (offset, found) = match found {
            Some(t) => (t.at, format!("{:?}", t.text)),
            None => (self.input.len(), "end of input".to_owned()),
        };
        SelectorError { input: self.input.to_owned(), offset, reason: format!("expected {expected}, found {found}") }
    }

    fn word(&mut self, expected: impl fmt::Display) -> Result<&'a str, SelectorError> {
        match self.bump() {
            Some(t) if t.is_word() => Ok(t.text),
            other => Err(self.error(other, expected)),
        }
    }

    fn selector(&mut self) -> Result<LabelSelector, SelectorError> {
        let mut requirements = vec![self.requirement()?];
        loop {
            match self.bump() {
                None => return Ok(LabelSelector { requirements }),
                Some(t) if t.text == "," => requirements.push(self.requirement()?),
                other => return Err(self.error(other, "\",\" or the end after a requirement")),
            }
        }
    }

    fn requirement(&mut self) -> Result<LabelRequirement, SelectorError> {
        if self.peek().is_some_and(|t| t.text == "!") {
            self.bump();
            return Ok(LabelRequirement::NotExists(self.word("a label key after !")?.to_owned()));
        }
        let key = self.word("a label key")?.to_owned();
        let Some(op) = self.peek().filter(|t| t.text != ",") else {
            return Ok(LabelRequirement::Exists(key));
        };
        self.bump();
        match op.text {
            "=" | "==" | "!=" => {
                let value = match self.peek() {
                    None => String::new(),
                    Some(t) if t.text == "," => String::new(),
                    Some(t) if t.is_word() => {
                        self.bump();
                        t.text.to_owned()
                    }
                    other => return Err(self.error(other, format_args!("a value after {}", op.text))),
                };
                Ok(if op.text == "!=" {
                    LabelRequirement::NotEquals(key, value)
                } else {
                    LabelRequirement::Equals(key, value)
                })
            }
            ">" | "<" => {
                let found = self.peek();
                let n = found
                    .filter(Token::is_word)
                    .and_then(|t| t.text.parse::<i64>().ok())
                    .ok_or_else(|| self.error(found, format_args!("an integer after {}", op.text)))?;
                self.bump();
                Ok(if op.text == ">" {
                    LabelRequirement::GreaterThan(key, n)
                } else {
                    LabelRequirement::LessThan(key, n)
                })
            }
            ">=" | "<=" => Err(SelectorError {
                input: self.input.to_owned(),
                offset: op.at,
                reason: format!("unsupported operator {:?} (use =, ==, !=, >, <, in or notin)", op.text),
            }),
            "in" => Ok(LabelRequirement::In(key, self.values("in")?)),
            "notin" => Ok(LabelRequirement::NotIn(key, self.values("notin")?)),
            _ if op.is_word() => Err(self.error(Some(op), format_args!("=, ==, !=, >, <, in or notin after {key:?}"))),
            _ => Err(self.error(Some(op), "\",\" or the end after a requirement")),
        }
    }

    /// `( value, … )` after `in` or `notin`.
    fn values(&mut self, op: &str) -> Result<Vec<String>, SelectorError> {
        let open = match self.bump() {
            Some(t) if t.text == "(" => t,
            other => return Err(self.error(other, format_args!("\"(\" after {op}"))),
        };
        let mut values =
            vec![self.word(format_args!("a value in the list after {op} (it may not be empty)"))?.to_owned()];
        loop {
            match self.bump() {
                Some(t) if t.text == ")" => return Ok(values),
                Some(t) if t.text == "," => {
                    values.push(self.word(format_args!("a value in the list after {op}"))?.to_owned())
                }
                other => {
                    return Err(
                        self.error(other, format_args!("\",\" or \")\" to close the list opened at byte {}", open.at))
                    )
                }
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
        Parser { input: s, tokens: tokens(s), next: 0 }.selector()
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
                LabelRequirement::GreaterThan(k, n) => format!("{k}>{n}"),
                LabelRequirement::LessThan(k, n) => format!("{k}<{n}"),
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
    fn parses_each_form_into_its_requirement() {
        use LabelRequirement::*;
        let k = || "k".to_owned();
        let cases: Vec<(&str, Vec<LabelRequirement>)> = vec![
            ("k>1", vec![GreaterThan(k(), 1)]),
            ("k < -20", vec![LessThan(k(), -20)]),
            ("k>+7", vec![GreaterThan(k(), 7)]),
            ("k=v", vec![Equals(k(), "v".into())]),
            ("k == v", vec![Equals(k(), "v".into())]),
            ("k=", vec![Equals(k(), String::new())]),
            ("k!=,!j", vec![NotEquals(k(), String::new()), NotExists("j".into())]),
            ("k in (a,b), k notin(c)", vec![In(k(), vec!["a".into(), "b".into()]), NotIn(k(), vec!["c".into()])]),
            ("example.com/k, in", vec![Exists("example.com/k".into()), Exists("in".into())]),
            ("  ", vec![]),
        ];
        for (input, expected) in cases {
            let sel: LabelSelector = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(sel.requirements, expected, "{input}");
            assert_eq!(sel.to_string().parse::<LabelSelector>().unwrap(), sel, "{input} round trip");
        }
    }

    /// Label pairs.
    type Pairs = &'static [(&'static str, &'static str)];

    /// Selector, labels, whether they match.
    const COMPARISONS: &[(&str, Pairs, bool)] = &[
        ("max>1", &[("max", "2")], true),
        ("max>1", &[("max", "1")], false),
        ("max>1", &[("max", "abc")], false),
        ("max>1", &[], false),
        ("max<10", &[("max", "9")], true),
        ("max<10", &[("max", "10")], false),
        ("max<10", &[("max", "-3")], true),
        ("max<10", &[("max", "x9")], false),
        ("max>1, max<3", &[("max", "2")], true),
        ("max > -1", &[("max", "0")], true),
    ];

    #[test]
    fn greater_and_less_than_compare_integer_values() {
        for (input, pairs, expected) in COMPARISONS {
            let sel: LabelSelector = input.parse().unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(sel.matches(&labels(pairs)), *expected, "{input} on {pairs:?}");
            assert_eq!(sel.to_string().parse::<LabelSelector>().unwrap(), sel, "{input} round trip");
        }
    }

    /// Malformed selector, the error as displayed (byte offsets from 0).
    const ERRORS: &[(&str, &str)] = &[
        ("max>abc", r#"invalid label selector "max>abc" at byte 4: expected an integer after >, found "abc""#),
        ("max<1.5", r#"invalid label selector "max<1.5" at byte 4: expected an integer after <, found "1.5""#),
        ("max>", r#"invalid label selector "max>" at byte 4: expected an integer after >, found end of input"#),
        (
            "a>=1",
            r#"invalid label selector "a>=1" at byte 1: unsupported operator ">=" (use =, ==, !=, >, <, in or notin)"#,
        ),
        (
            "a<=1",
            r#"invalid label selector "a<=1" at byte 1: unsupported operator "<=" (use =, ==, !=, >, <, in or notin)"#,
        ),
        ("=x", r#"invalid label selector "=x" at byte 0: expected a label key, found "=""#),
        ("a===b", r#"invalid label selector "a===b" at byte 3: expected a value after ==, found "=""#),
        (
            "a=b=c",
            r#"invalid label selector "a=b=c" at byte 3: expected "," or the end after a requirement, found "=""#,
        ),
        (
            "a in ()",
            r#"invalid label selector "a in ()" at byte 6: expected a value in the list after in (it may not be empty), found ")""#,
        ),
        (
            "a in (x",
            r#"invalid label selector "a in (x" at byte 7: expected "," or ")" to close the list opened at byte 5, found end of input"#,
        ),
        (
            "a in (x,)",
            r#"invalid label selector "a in (x,)" at byte 8: expected a value in the list after in, found ")""#,
        ),
        ("a in b", r#"invalid label selector "a in b" at byte 5: expected "(" after in, found "b""#),
        ("a notin x)", r#"invalid label selector "a notin x)" at byte 8: expected "(" after notin, found "x""#),
        ("a)", r#"invalid label selector "a)" at byte 1: expected "," or the end after a requirement, found ")""#),
        ("(a)", r#"invalid label selector "(a)" at byte 0: expected a label key, found "(""#),
        (
            "a b",
            r#"invalid label selector "a b" at byte 2: expected =, ==, !=, >, <, in or notin after "a", found "b""#,
        ),
        ("a, ,b", r#"invalid label selector "a, ,b" at byte 3: expected a label key, found ",""#),
        ("a,", r#"invalid label selector "a," at byte 2: expected a label key, found end of input"#),
        ("!", r#"invalid label selector "!" at byte 1: expected a label key after !, found end of input"#),
        ("!a=b", r#"invalid label selector "!a=b" at byte 2: expected "," or the end after a requirement, found "=""#),
    ];

    #[test]
    fn errors_name_the_byte_offset_and_the_text() {
        for (input, expected) in ERRORS {
            match input.parse::<LabelSelector>() {
                Ok(sel) => panic!("{input:?} should not parse, got {sel:?}"),
                Err(e) => {
                    assert_eq!(e.to_string(), *expected);
                    assert_eq!(e.input, *input);
                }
            }
        }
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
