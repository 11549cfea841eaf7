//! `cargo +nightly fuzz run parse`: the model-file parser on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shared_fuzz::parse_target(data);
});
