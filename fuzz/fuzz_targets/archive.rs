//! What purge reads back from an archive directory: archive files (plain, gzip, zstd;
//! truncated or corrupt), index lines and pending markers. Any bytes give records or
//! errors, never a panic.
#![no_main]

use std::path::Path;

use brine_purge::archive::{parse_index_line, parse_marker, read_archive_from, record_id};
use brine_purge::Compression;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((which, bytes)) = data.split_first() else { return };
    let compression = match which % 3 {
        0 => Compression::None,
        1 => Compression::Gzip,
        _ => Compression::Zstd,
    };
    let input = Box::new(std::io::Cursor::new(bytes.to_vec()));
    if let Ok(records) = read_archive_from(input, compression, Path::new("fuzz")) {
        for record in records.take(1000) {
            if let Ok(value) = record {
                let _ = record_id(&value);
            }
        }
    }
    let text = String::from_utf8_lossy(bytes);
    for line in text.lines().take(1000) {
        if let Some((id, _time)) = parse_index_line(line) {
            assert!(line.starts_with(id));
        }
    }
    if let Ok((time, file, _store)) = parse_marker(&text) {
        assert!(file.contains(&time.to_string()) && !file.contains('/'), "a marker names its own archive: {file}");
    }
});
