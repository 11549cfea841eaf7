//! `cargo fuzz run tflite`: see `src/host_files.rs` (the body, also run by its stable test).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shared_fuzz::host_files::tflite_target(data);
});
