//! Recovery policy files (TOML or JSON): any text loads or gives an error, never a
//! panic.
#![no_main]

use brine_recovery::Policy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = Policy::from_text(text);
});
