//! Label selectors typed by a user: any text parses or gives an error naming a position
//! inside it; a selector that parses prints back to text that parses to the same
//! selector.
#![no_main]

use brine_store::LabelSelector;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match text.parse::<LabelSelector>() {
        Ok(selector) => {
            let printed = selector.to_string();
            let again: LabelSelector = printed.parse().expect("a printed selector parses");
            assert_eq!(again, selector, "{text:?} printed as {printed:?}");
        }
        Err(e) => assert!(e.offset <= text.len(), "error offset {} past the end of {text:?}", e.offset),
    }
});
