//! The value codec: any bytes, as the value of any family, decode or give an error (no
//! panic, no over-allocation); a value that decodes encodes back to bytes that decode
//! to the same value.
#![no_main]

use brine_store::codec::{decode, encode};
use brine_store::model::{Evaluation, Event, Execution, Job, JobHistory, LogEntry};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(family: &str, bytes: &[u8]) {
    if let Ok(value) = decode::<T>(family, b"key", bytes) {
        let again = encode(&value);
        let back: T = decode(family, b"key", &again).expect("an encoded value decodes");
        assert_eq!(back, value, "decode(encode(x)) == x");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((which, bytes)) = data.split_first() else { return };
    match which % 8 {
        0 => round_trip::<Execution>("executions", bytes),
        1 => round_trip::<Event>("execution_events", bytes),
        2 => round_trip::<LogEntry>("events", bytes),
        3 => round_trip::<Job>("jobs", bytes),
        4 => round_trip::<JobHistory>("job_history", bytes),
        5 => round_trip::<Evaluation>("evaluations", bytes),
        // Checkpoints and the `meta` numbers (sequences, counters, the open marker).
        6 => round_trip::<u64>("checkpoints", bytes),
        // `meta` strings (store kind, node id, store id) and `purged_jobs` archive names.
        _ => round_trip::<String>("purged_jobs", bytes),
    }
});
