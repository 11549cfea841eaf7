//! The `cargo fuzz` target's body (`fuzz/src/lib.rs`) on stable: valid files,
//! their prefixes, and seeded random corruptions of them.

mod format_common;
#[path = "../../fuzz/src/parse.rs"]
mod fuzz_body;

use format_common::*;
use shared::model::Precision;

#[test]
fn fuzz_target_body_runs_on_stable() {
    let mut rng = Rng::new(0xF022);
    for seed in 0..16u64 {
        let precision = if seed % 2 == 0 { Precision::Int8 } else { Precision::F16 };
        let file = file_of(&random_model(seed, precision)).to_vec();
        fuzz_body::parse_target(&file);
        for cut in [0, 1, 8, 12, 16, 63, 64, file.len() / 2, file.len() - 1] {
            fuzz_body::parse_target(&file[..cut.min(file.len())]);
        }
        for _ in 0..500 {
            let mut bytes = file.clone();
            for _ in 0..rng.range(1, 4) {
                let at = rng.range(0, bytes.len() as u32 - 1) as usize;
                bytes[at] = rng.next_u64() as u8;
            }
            if rng.chance(2) {
                reseal(&mut bytes);
            }
            fuzz_body::parse_target(&bytes);
        }
    }
    let mut garbage = vec![0u8; 4096];
    for _ in 0..200 {
        garbage.iter_mut().for_each(|b| *b = rng.next_u64() as u8);
        fuzz_body::parse_target(&garbage[..rng.range(0, 4096) as usize]);
    }
}
