//! The value codec of the persistent backends: one tag byte, then the bincode 1.3.3
//! encoding of the value.
//!
//! The tag names the codec and its version. A value with any other tag, one that does
//! not decode, or one with bytes left over is a `Corrupt` error naming the family (or
//! table) and key, never a panic: decoding is bounded by the payload's size, so a
//! corrupt length prefix cannot make it allocate more than the value holds. Changing how
//! values are encoded means a new tag and a migration (see `docs/FORMAT.md`). It lives
//! here, beside the traits and free of any engine, so every backend that stores values
//! as bytes shares it and the fuzz targets can reach it without building an engine.

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::keys::printable;
use crate::StoreError;

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

/// Decodes a value read from `family` (a column family or table name) at `key`.
pub fn decode<T: DeserializeOwned>(family: &str, key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt { cf: family.to_owned(), key: printable(key), reason };
    match bytes.split_first() {
        None => Err(corrupt("empty value".into())),
        Some((&TAG_BINCODE_V1, payload)) => {
            options(payload.len() as u64).deserialize(payload).map_err(|e| corrupt(format!("does not decode: {e}")))
        }
        Some((tag, _)) => Err(corrupt(format!("unknown codec tag 0x{tag:02x}"))),
    }
}
