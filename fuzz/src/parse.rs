//! The body of the `parse` fuzz target, kept free of libfuzzer so that the
//! stable tests (`shared/tests/format_fuzz.rs`, `shared/tests/fuzz_seeds.rs`)
//! run it too.

use shared::format::{self, AlignedBytes};
use shared::model::LayerWeights;

/// Parse `data` as given (any alignment) and from an aligned copy; on success,
/// read every element of every slice and check the file is canonical.
/// Panics only on a bug in the parser or writer.
pub fn parse_target(data: &[u8]) {
    let _ = format::parse(data);
    let aligned = AlignedBytes::copy_from(data);
    let Ok(model) = format::parse(&aligned) else { return };
    let mut acc = model.labels.len() as u64;
    for d in model.layer_data() {
        acc = acc.wrapping_add(d.output.scale.to_bits() as u64 ^ d.output.zero_point as u64);
        match d.weights {
            LayerWeights::None => {}
            LayerWeights::Int8(w) => {
                acc = w.weights.iter().fold(acc, |a, &x| a.wrapping_add(x as u64));
                acc = w.weight_scale.iter().fold(acc, |a, &x| a.wrapping_add(x.to_bits() as u64));
                for s in [w.bias, w.multiplier, w.shift] {
                    acc = s.iter().fold(acc, |a, &x| a.wrapping_add(x as u64));
                }
            }
            LayerWeights::F16(w) => {
                for s in [w.weights, w.bias] {
                    acc = s.iter().fold(acc, |a, &x| a.wrapping_add(x.to_bits() as u64));
                }
            }
        }
    }
    for i in 0..=model.spec.output().elements().min(1 << 16) as usize {
        acc = acc.wrapping_add(model.class_name(i).map_or(0, str::len) as u64);
    }
    std::hint::black_box(acc);
    let written = format::write(&model).expect("a parsed model writes");
    // Canonical, except the CRC: under `cfg(fuzzing)` the parser does not enforce it.
    let crc = format::offsets::CRC..format::offsets::CRC + 4;
    assert_eq!(written.len(), data.len(), "an accepted file is not canonical");
    assert_eq!(written[..crc.start], data[..crc.start], "an accepted file is not canonical");
    assert_eq!(written[crc.end..], data[crc.end..], "an accepted file is not canonical");
}
