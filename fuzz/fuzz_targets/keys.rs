//! Keys: the `\xNN` printable notation and the key reader. Any key prints, and its
//! printed form parses back to it; any text parses or gives an error; reading any bytes
//! as key parts never panics; a key built from parts reads back as those parts.
#![no_main]

use brine_store::keys::{parse_printable, printable, KeyBuilder, KeyReader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    assert_eq!(parse_printable(&printable(data)).expect("printable output parses"), data);
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(bytes) = parse_printable(text) {
            assert_eq!(parse_printable(&printable(&bytes)).expect("parses"), bytes);
        }
    }
    // Read the bytes as a sequence of parts chosen by the bytes themselves.
    let mut reader = KeyReader::new(data);
    for op in data.iter().take(8) {
        let _ = match op % 4 {
            0 => reader.str().map(|_| ()),
            1 => reader.u64().map(|_| ()),
            2 => reader.u8().map(|_| ()),
            _ => reader.last_str().map(|_| ()),
        };
    }
    let _ = reader.end();
    // Build a key from NUL-free text parts and a number, and read it back.
    let text = String::from_utf8_lossy(data).replace('\0', "");
    let (a, b) = text.split_at(text.char_indices().nth(text.chars().count() / 2).map_or(text.len(), |(i, _)| i));
    let n = data.len() as u64 * 0x0101_0101;
    let key = KeyBuilder::new().str(a).u64(n).u8(7).last_str(b).build();
    let mut r = KeyReader::new(&key);
    assert_eq!(r.str().expect("str"), a);
    assert_eq!(r.u64().expect("u64"), n);
    assert_eq!(r.u8().expect("u8"), 7);
    assert_eq!(r.last_str().expect("last"), b);
    r.end().expect("all read");
});
