//! The value codec of the RocksDB backend: `brine_store::codec` (one tag byte, then
//! bincode 1.3.3), with errors naming the column family.

use brine_store::StoreError;
use serde::de::DeserializeOwned;

use crate::cf::Cf;

pub use brine_store::codec::{encode, TAG_BINCODE_V1};

/// Decodes a value read from `cf` at `key` (see [`brine_store::codec::decode`]).
pub fn decode<T: DeserializeOwned>(cf: Cf, key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    brine_store::codec::decode(cf.name(), key, bytes)
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
