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
use crate::model::{Event, ObjectType, Operation, Timestamp};
use crate::StoreError;

/// Tag of the current codec: bincode 1.3.3, fixed-width little-endian integers.
pub const TAG_BINCODE_V1: u8 = 0x01;

/// The bincode configuration of tag 0x01 (the same bytes as `bincode::serialize`).
fn options(limit: u64) -> impl Options {
    bincode::DefaultOptions::new().with_fixint_encoding().with_little_endian().with_limit(limit)
}

/// The same bytes as [`options`], with no limit: nothing to check while encoding.
fn unlimited() -> impl Options {
    bincode::DefaultOptions::new().with_fixint_encoding().with_little_endian()
}

/// Encodes `value` with the current tag.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Sized first, so the value is written once into a buffer of the right size rather
    // than copied each time a growing buffer moves.
    let size = unlimited().serialized_size(value).map_or(0, |n| n as usize);
    let mut out = Vec::with_capacity(1 + size);
    out.push(TAG_BINCODE_V1);
    append(&mut out, value);
    out
}

/// Appends the bincode encoding of `value` (no tag) to `out`.
fn append<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Serializing Brine's serde-derived data into a Vec has no failure path: there is no
    // size limit on encode and no custom serializer.
    unlimited().serialize_into(out, value).expect("bincode serializes Brine's data types");
}

/// The kind of record a change entry of the event log carries (see [`encode_change`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// `LogObject::Execution`.
    Execution,
    /// `LogObject::Job`.
    Job,
}

impl RecordKind {
    /// The object type of its entries, and its variant's index in `LogObject` (how
    /// bincode numbers an enum's variants: by declaration order, as a `u32`).
    fn of(self) -> (ObjectType, u32) {
        match self {
            RecordKind::Execution => (ObjectType::Execution, 0),
            RecordKind::Job => (ObjectType::Job, 1),
        }
    }
}

/// An encoded record for [`encode_change`]: a value as [`encode`] returns it (or as it
/// was read from the store and decoded), tag first.
fn payload(value: &[u8]) -> &[u8] {
    debug_assert_eq!(value.first(), Some(&TAG_BINCODE_V1), "an encoded value of this codec");
    value.get(1..).unwrap_or_default()
}

/// Encodes the event-log entry of an execution or job change from the records as
/// already encoded (`current` and `previous`, each as [`encode`] returns it): the same
/// bytes as [`encode`] of the `LogEntry` whose object is
/// `LogObject::{Execution|Job} { current, previous, events }`, without encoding the
/// records a second time. A write stores the record it has just encoded and, for an
/// update, has the previous one's bytes from its read, so most of the entry is a copy.
pub fn encode_change(
    seq: u64,
    operation: Operation,
    kind: RecordKind,
    current: Option<&[u8]>,
    previous: Option<&[u8]>,
    events: &[Event],
    timestamp: Timestamp,
) -> Vec<u8> {
    let (object_type, variant) = kind.of();
    let records = current.map_or(0, <[u8]>::len) + previous.map_or(0, <[u8]>::len);
    let events_size = unlimited().serialized_size(events).map_or(0, |n| n as usize);
    let mut out = Vec::with_capacity(40 + records + events_size);
    out.push(TAG_BINCODE_V1);
    // LogEntry's fields in declaration order: seq, operation, object_type, object,
    // timestamp; the object is a struct variant: its index, then its fields in order.
    append(&mut out, &seq);
    append(&mut out, &operation);
    append(&mut out, &object_type);
    out.extend_from_slice(&variant.to_le_bytes());
    for record in [current, previous] {
        match record {
            // An `Option` is a byte (0 none, 1 some), then the value; a `Box` is its value.
            Some(value) => {
                out.push(1);
                out.extend_from_slice(payload(value));
            }
            None => out.push(0),
        }
    }
    append(&mut out, events);
    append(&mut out, &timestamp);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Event, Execution, ExecutionId, Job, JobId, LogEntry, LogObject};

    fn entry(seq: u64, operation: Operation, object: LogObject, timestamp: Timestamp) -> Vec<u8> {
        encode(&LogEntry { seq, operation, object_type: object.object_type(), object, timestamp })
    }

    #[test]
    fn a_change_entry_from_encoded_records_is_the_entry_encode_writes() {
        let mut job = Job::new(JobId::new("job-1").unwrap(), "one");
        job.labels.insert("team".into(), "ml".into());
        let before = Execution::new(ExecutionId::new("e-1").unwrap(), &job);
        let mut after = before.clone();
        after.revision = 2;
        after.name = "moved".into();
        let at = Timestamp::from_nanos(1_700_000_000_123_456_789);
        let events = vec![Event::new("run", "started", at).with_detail("node", "n1"), Event::new("run", "ran", at)];
        let (b, a) = (encode(&before), encode(&after));
        let cases = [
            (Operation::Create, Some(&a), None, vec![]),
            (Operation::Update, Some(&a), Some(&b), events.clone()),
            (Operation::Delete, None, Some(&b), vec![]),
        ];
        for (operation, current, previous, events) in cases {
            let object = LogObject::Execution {
                current: current.map(|_| Box::new(after.clone())),
                previous: previous.map(|_| Box::new(before.clone())),
                events: events.clone(),
            };
            let spliced = encode_change(
                7,
                operation,
                RecordKind::Execution,
                current.map(Vec::as_slice),
                previous.map(Vec::as_slice),
                &events,
                at,
            );
            assert_eq!(spliced, entry(7, operation, object, at), "{operation:?}");
        }
        let mut job2 = job.clone();
        job2.version = 2;
        let object = LogObject::Job { current: boxed_job(&job2), previous: boxed_job(&job), events: events.clone() };
        let spliced = encode_change(
            u64::MAX,
            Operation::Update,
            RecordKind::Job,
            Some(&encode(&job2)),
            Some(&encode(&job)),
            &events,
            at,
        );
        assert_eq!(spliced, entry(u64::MAX, Operation::Update, object, at));
    }

    fn boxed_job(job: &Job) -> Option<Box<Job>> {
        Some(Box::new(job.clone()))
    }
}
