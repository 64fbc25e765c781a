//! The key codec: ordered byte-string keys for ordered key-value engines.
//!
//! A key is a sequence of parts. Strings (validated ids and names, which never contain
//! NUL) are written as their bytes followed by a `0x00` separator, so that a string part
//! never is a prefix of another and prefix scans over "everything under this id" are
//! exact; numbers are fixed-width big-endian, so byte order is numeric order; state and
//! type codes are one byte. The upper bound of a prefix ending in `0x00` is the same
//! prefix ending in `0x01`.

use std::fmt;

/// Separator after a string part.
pub const SEP: u8 = 0x00;

/// Builds a key part by part.
#[derive(Debug, Default, Clone)]
pub struct KeyBuilder(Vec<u8>);

impl KeyBuilder {
    /// An empty key.
    pub fn new() -> Self {
        KeyBuilder(Vec::with_capacity(64))
    }

    /// Appends a string part and its separator. The string must not contain NUL (every
    /// validated id and name qualifies).
    pub fn str(mut self, s: &str) -> Self {
        debug_assert!(!s.as_bytes().contains(&SEP), "key strings never contain NUL");
        self.0.extend_from_slice(s.as_bytes());
        self.0.push(SEP);
        self
    }

    /// Appends a string as the last part, without a separator.
    pub fn last_str(mut self, s: &str) -> Self {
        self.0.extend_from_slice(s.as_bytes());
        self
    }

    /// Appends a big-endian `u64`.
    pub fn u64(mut self, n: u64) -> Self {
        self.0.extend_from_slice(&n.to_be_bytes());
        self
    }

    /// Appends one byte (a state or type code).
    pub fn u8(mut self, n: u8) -> Self {
        self.0.push(n);
        self
    }

    /// The key.
    pub fn build(self) -> Vec<u8> {
        self.0
    }
}

/// The smallest key greater than every key starting with `prefix`, or `None` if there
/// is none (the prefix is all `0xff`).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// A key that does not have the expected layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad key {key}: {reason}")]
pub struct KeyError {
    /// The key, printable.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

/// Reads a key part by part, in the order it was built.
#[derive(Debug, Clone)]
pub struct KeyReader<'a> {
    whole: &'a [u8],
    rest: &'a [u8],
}

impl<'a> KeyReader<'a> {
    /// Starts reading `key`.
    pub fn new(key: &'a [u8]) -> Self {
        KeyReader { whole: key, rest: key }
    }

    fn err(&self, reason: &str) -> KeyError {
        KeyError { key: printable(self.whole), reason: reason.to_owned() }
    }

    /// Reads a string part up to its separator.
    pub fn str(&mut self) -> Result<&'a str, KeyError> {
        let end = self.rest.iter().position(|b| *b == SEP).ok_or_else(|| self.err("missing separator"))?;
        let s = std::str::from_utf8(&self.rest[..end]).map_err(|_| self.err("not UTF-8"))?;
        self.rest = &self.rest[end + 1..];
        Ok(s)
    }

    /// Reads the rest of the key as a string.
    pub fn last_str(&mut self) -> Result<&'a str, KeyError> {
        let s = std::str::from_utf8(self.rest).map_err(|_| self.err("not UTF-8"))?;
        self.rest = &[];
        Ok(s)
    }

    /// Reads a big-endian `u64`.
    pub fn u64(&mut self) -> Result<u64, KeyError> {
        if self.rest.len() < 8 {
            return Err(self.err("too short for a u64"));
        }
        let (n, rest) = self.rest.split_at(8);
        self.rest = rest;
        Ok(u64::from_be_bytes(n.try_into().map_err(|_| self.err("too short for a u64"))?))
    }

    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8, KeyError> {
        let (&b, rest) = self.rest.split_first().ok_or_else(|| self.err("too short for a code"))?;
        self.rest = rest;
        Ok(b)
    }

    /// Fails unless the whole key was read.
    pub fn end(&self) -> Result<(), KeyError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(self.err("trailing bytes"))
        }
    }
}

/// A key as text: printable ASCII as is, other bytes as `\xNN`, the separator as `/`
/// when it is followed by more key (so `job-1\0e-2` prints as `job-1/e-2`).
pub fn printable(key: &[u8]) -> String {
    let mut out = String::with_capacity(key.len());
    for (i, b) in key.iter().enumerate() {
        match *b {
            SEP if i + 1 < key.len() => out.push('/'),
            0x21..=0x7e if *b != b'\\' && *b != b'/' => out.push(char::from(*b)),
            other => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\x");
                out.push(char::from(HEX[usize::from(other >> 4)]));
                out.push(char::from(HEX[usize::from(other & 0xf)]));
            }
        }
    }
    out
}

/// Parses [`printable`] output (and plain text) back to key bytes.
pub fn parse_printable(text: &str) -> Result<Vec<u8>, KeyError> {
    let bad = |at: usize| KeyError {
        key: text.to_owned(),
        reason: format!("bad escape at byte {at}: a backslash starts \\xNN, two hex digits"),
    };
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' => out.push(SEP),
            b'\\' => {
                let hex = text
                    .get(i + 2..i + 4)
                    .filter(|h| bytes.get(i + 1) == Some(&b'x') && h.bytes().all(|b| b.is_ascii_hexdigit()))
                    .ok_or_else(|| bad(i))?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad(i))?);
                i += 3;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Ok(out)
}

/// A key shown with [`printable`].
pub struct Printable<'a>(pub &'a [u8]);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&printable(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_numeric_and_prefixes_are_exact() {
        let a = KeyBuilder::new().str("job").u64(2).build();
        let b = KeyBuilder::new().str("job").u64(10).build();
        assert!(a < b, "big-endian numbers order numerically");
        let short = KeyBuilder::new().str("j").last_str("x").build();
        let long = KeyBuilder::new().str("jo").last_str("x").build();
        let prefix = KeyBuilder::new().str("j").build();
        assert!(short.starts_with(&prefix));
        assert!(!long.starts_with(&prefix), "a separator ends each string part");
        assert_eq!(prefix_end(&prefix).unwrap(), b"j\x01");
        assert_eq!(prefix_end(&[0x01, 0xff]).unwrap(), vec![0x02]);
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
    }

    #[test]
    fn reader_round_trips_and_reports_bad_keys() {
        let key = KeyBuilder::new().str("ns").u8(3).u64(77).last_str("id-1").build();
        let mut r = KeyReader::new(&key);
        assert_eq!(r.str().unwrap(), "ns");
        assert_eq!(r.u8().unwrap(), 3);
        assert_eq!(r.u64().unwrap(), 77);
        assert_eq!(r.last_str().unwrap(), "id-1");
        r.end().unwrap();
        let mut short = KeyReader::new(b"ab");
        assert_eq!(short.u64().unwrap_err().reason, "too short for a u64");
        assert_eq!(KeyReader::new(b"abc").str().unwrap_err().reason, "missing separator");
    }

    #[test]
    fn printable_round_trips() {
        let key = KeyBuilder::new().str("job-1").u64(258).last_str("e/\\x").build();
        let text = printable(&key);
        assert_eq!(parse_printable(&text).unwrap(), key);
        assert_eq!(printable(b"job-1\0e-2"), "job-1/e-2");
        assert!(parse_printable("\\xzz").is_err());
    }
}
