//! The model-file parser on arbitrary bytes. From `fuzz/` (see the README for
//! the toolchain): `cargo fuzz run parse corpus/parse seeds/parse`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shared_fuzz::parse_target(data);
});
