//! The value codec: one tag byte, then the bincode 1.3.3 encoding of the value.
//!
//! The tag names the codec and its version. A value with any other tag, one that does
//! not decode, or one with bytes left over is a `Corrupt` error naming the column family
//! and key, never a panic: decoding is bounded by the payload's size, so a corrupt length
//! prefix cannot make it allocate more than the value holds. Changing how values are
//! encoded means a new tag and a migration (see `docs/FORMAT.md`).

use bincode::Options;
use brine_store::keys::printable;
use brine_store::StoreError;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::cf::Cf;

/// Tag of the current codec: bincode 1.3.3, fixed-width little-endian integers.
pub const TAG_BINCODE_V1: u8 = 0x01;

/// The bincode configuration of tag 0x01 (the same bytes as `bincode::serialize`).
fn options(limit: u64) -> impl Options {
    bincode::DefaultOptions::new().with_fixint_encoding().with_little_endian().with_limit(limit)
}

/// Encodes `value` with the current tag.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = vec![TAG_BINCODE_V1];
    // Serializing Brine's serde-derived data into a Vec has no failure path: there is no
    // size limit on encode and no custom serializer.
    options(u64::MAX).serialize_into(&mut out, value).expect("bincode serializes Brine's data types");
    out
}

/// Decodes a value read from `cf` at `key`.
pub fn decode<T: DeserializeOwned>(cf: Cf, key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt { cf: cf.name().to_owned(), key: printable(key), reason };
    match bytes.split_first() {
        None => Err(corrupt("empty value".into())),
        Some((&TAG_BINCODE_V1, payload)) => {
            options(payload.len() as u64).deserialize(payload).map_err(|e| corrupt(format!("does not decode: {e}")))
        }
        Some((tag, _)) => Err(corrupt(format!("unknown codec tag 0x{tag:02x}"))),
    }
}

#[cfg(test)]
mod tests {
    use brine_store::model::{Execution, ExecutionId, Job, JobId};

    use super::*;

    fn sample() -> Execution {
        Execution::new(ExecutionId::new("e-1").unwrap(), &Job::new(JobId::new("j-1").unwrap(), "n"))
    }

    #[test]
    fn round_trips_with_the_tag_and_matches_plain_bincode() {
        let e = sample();
        let bytes = encode(&e);
        assert_eq!(bytes[0], TAG_BINCODE_V1);
        assert_eq!(&bytes[1..], bincode::serialize(&e).unwrap().as_slice());
        assert_eq!(decode::<Execution>(Cf::Executions, b"e-1", &bytes).unwrap(), e);
    }

    #[test]
    fn corrupt_values_name_family_and_key() {
        let good = encode(&sample());
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![], "empty value"),
            (vec![0x09, 1, 2], "unknown codec tag 0x09"),
            (good[..good.len() / 2].to_vec(), "does not decode"),
            ([good.clone(), vec![0]].concat(), "does not decode"),
            (vec![TAG_BINCODE_V1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f], "does not decode"),
        ];
        for (bytes, want) in cases {
            let err = decode::<Execution>(Cf::Executions, b"e\0x", &bytes).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("executions") && msg.contains("e/x") && msg.contains(want), "{msg}");
        }
    }
}
