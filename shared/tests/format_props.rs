//! Property tests: mutated model files never panic the parser; every
//! corruption the CRC sees is refused; edits with the CRC recomputed (so the
//! checks behind the CRC run) give Ok or a typed error, and any file accepted
//! is canonical (written back byte for byte).
//!
//! 60,000 + 50,000 + 10,000 cases in a normal `cargo test` run.

mod format_common;

use format_common::*;
use proptest::prelude::*;
use proptest::sample::Index;
use shared::format::{self, offsets, parse, AlignedBytes};
use shared::model::Precision;
use std::sync::OnceLock;

/// Valid files to mutate: random int8 and f16 models plus the fixed one.
fn corpus() -> &'static [Vec<u8>] {
    static CORPUS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let mut files = Vec::new();
        for seed in 0..24u64 {
            let precision = if seed % 2 == 0 { Precision::Int8 } else { Precision::F16 };
            files.push(file_of(&random_model(1000 + seed, precision)).to_vec());
        }
        files.push(file_of(&fixed_model(Precision::Int8)).to_vec());
        files.push(file_of(&fixed_model(Precision::F16)).to_vec());
        files
    })
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// A raw corruption; the CRC is not fixed afterwards.
#[derive(Clone, Debug)]
enum Mutation {
    FlipBit(Index, u8),
    SetByte(Index, u8),
    Truncate(Index),
    Extend(Vec<u8>),
    /// Overwrite an aligned 32-bit word with a boundary value.
    Word(Index, u32),
    /// Remove or duplicate a range (shifts everything after it).
    Remove(Index, u8),
    Duplicate(Index, u8),
}

fn interesting_u32() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(1),
        Just(2),
        Just(16),
        Just(0x7F),
        Just(0x80),
        Just(0xFF),
        Just(0x8000_0000),
        Just(0x7FFF_FFFF),
        Just(u32::MAX),
        Just(1.0f32.to_bits()),
        Just(f32::NAN.to_bits()),
        Just(f32::INFINITY.to_bits()),
        Just((-1.0f32).to_bits()),
        any::<u32>(),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        3 => (any::<Index>(), any::<u8>()).prop_map(|(i, v)| Mutation::SetByte(i, v)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => prop::collection::vec(any::<u8>(), 1..40).prop_map(Mutation::Extend),
        2 => (any::<Index>(), interesting_u32()).prop_map(|(i, v)| Mutation::Word(i, v)),
        1 => (any::<Index>(), 1u8..20).prop_map(|(i, n)| Mutation::Remove(i, n)),
        1 => (any::<Index>(), 1u8..20).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let len = bytes.len();
    if len == 0 {
        if let Mutation::Extend(tail) = m {
            bytes.extend_from_slice(tail);
        }
        return;
    }
    match m {
        Mutation::FlipBit(i, b) => bytes[i.index(len)] ^= 1 << b,
        Mutation::SetByte(i, v) => bytes[i.index(len)] = *v,
        Mutation::Truncate(i) => bytes.truncate(i.index(len)),
        Mutation::Extend(tail) => bytes.extend_from_slice(tail),
        Mutation::Word(i, v) => {
            let at = i.index(len) & !3;
            let end = (at + 4).min(len);
            bytes[at..end].copy_from_slice(&v.to_le_bytes()[..end - at]);
        }
        Mutation::Remove(i, n) => {
            let at = i.index(len);
            let end = (at + *n as usize).min(len);
            bytes.drain(at..end);
        }
        Mutation::Duplicate(i, n) => {
            let at = i.index(len);
            let end = (at + *n as usize).min(len);
            let chunk = bytes[at..end].to_vec();
            bytes.splice(at..at, chunk);
        }
    }
}

/// Parse `bytes` from an aligned copy; on success, check the model is canonical and readable.
fn check_parse(bytes: &[u8]) -> Result<(), format::FormatError> {
    let f = AlignedBytes::copy_from(bytes);
    match parse(&f) {
        Ok(m) => {
            touch(&m);
            // Every accepted file is exactly what the writer makes of its model.
            let again = format::write(&m).expect("a parsed model writes");
            assert_eq!(again, bytes, "an accepted file is not canonical");
            Ok(())
        }
        Err(e) => {
            assert!(e.offset <= bytes.len().max(64), "error offset {} past the file: {e:?}", e.offset);
            let _ = e.to_string();
            Err(e)
        }
    }
}

proptest! {
    #![proptest_config(config(60_000))]

    /// Without the CRC recomputed, every changed file is refused.
    #[test]
    fn corrupted_files_are_refused(file in any::<Index>(), muts in prop::collection::vec(mutation(), 1..4)) {
        let original = &corpus()[file.index(corpus().len())];
        let mut bytes = original.clone();
        for m in &muts {
            apply(&mut bytes, m);
        }
        let result = check_parse(&bytes);
        if bytes == *original {
            prop_assert!(result.is_ok());
        } else {
            prop_assert!(result.is_err(), "corrupted file accepted after {:?}", muts);
        }
    }
}

/// Where a resealed edit lands: a header field, a layer record field, or any byte.
#[derive(Clone, Debug)]
enum Target {
    Header(usize, u8),
    Record(Index, usize, u8),
    Byte(Index),
}

/// Header fields by (offset, width in bytes).
const HEADER_FIELDS: [(usize, u8); 16] = [
    (offsets::VERSION, 4),
    (offsets::LENGTH, 4),
    (offsets::PRECISION, 1),
    (offsets::LAYER_COUNT, 1),
    (offsets::RESERVED0, 1),
    (offsets::LABELS_OFFSET, 4),
    (offsets::LABELS_LEN, 4),
    (offsets::INPUT_SHAPE, 4),
    (offsets::INPUT_SHAPE + 4, 4),
    (offsets::INPUT_SHAPE + 8, 4),
    (offsets::INPUT_SHAPE + 12, 4),
    (offsets::INPUT_SCALE, 4),
    (offsets::INPUT_ZERO_POINT, 4),
    (offsets::RESERVED1, 4),
    (offsets::RESERVED1 + 4, 4),
    (offsets::MAGIC, 1),
];

fn target() -> impl Strategy<Value = Target> {
    let record_field = prop_oneof![(0usize..4).prop_map(|o| (o, 1u8)), (1usize..16).prop_map(|w| (w * 4, 4u8)),];
    prop_oneof![
        3 => (0..HEADER_FIELDS.len()).prop_map(|k| Target::Header(HEADER_FIELDS[k].0, HEADER_FIELDS[k].1)),
        5 => (any::<Index>(), record_field).prop_map(|(i, (o, w))| Target::Record(i, o, w)),
        2 => any::<Index>().prop_map(Target::Byte),
    ]
}

/// The value written: a boundary value, or the old one nudged.
#[derive(Clone, Debug)]
enum Value {
    Set(u32),
    Add(i32),
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        interesting_u32().prop_map(Value::Set),
        prop_oneof![-17i32..=17, Just(16), Just(-16), Just(64), Just(-64)].prop_map(Value::Add),
    ]
}

fn edit(bytes: &mut [u8], t: &Target, v: &Value) {
    let layers = bytes[offsets::LAYER_COUNT] as usize;
    let (at, width) = match t {
        Target::Header(at, w) => (*at, *w as usize),
        Target::Record(i, o, w) => (offsets::layer_record(i.index(layers.max(1))) + o, *w as usize),
        Target::Byte(i) => (i.index(bytes.len()), 1),
    };
    if at + width > bytes.len() {
        return;
    }
    let mut word = [0u8; 4];
    word[..width].copy_from_slice(&bytes[at..at + width]);
    let old = u32::from_le_bytes(word);
    let new = match v {
        Value::Set(x) => *x,
        Value::Add(d) => old.wrapping_add(*d as u32),
    };
    bytes[at..at + width].copy_from_slice(&new.to_le_bytes()[..width]);
}

proptest! {
    #![proptest_config(config(50_000))]

    /// With the CRC recomputed, the structural checks run: never a panic, and
    /// whatever is accepted is a canonical file.
    #[test]
    fn resealed_edits_are_validated(
        file in any::<Index>(),
        edits in prop::collection::vec((target(), value()), 1..4),
    ) {
        let mut bytes = corpus()[file.index(corpus().len())].clone();
        for (t, v) in &edits {
            edit(&mut bytes, t, v);
        }
        reseal(&mut bytes);
        let _ = check_parse(&bytes);
    }
}

proptest! {
    #![proptest_config(config(10_000))]

    /// Arbitrary bytes behind a valid magic, version, length and CRC.
    #[test]
    fn sealed_garbage_never_panics(body in prop::collection::vec(any::<u8>(), 0..600), layers in 0u8..6) {
        let mut bytes = b"AXQMODEL".to_vec();
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&[0; 8]);
        bytes.extend_from_slice(&body);
        if bytes.len() > offsets::LAYER_COUNT {
            bytes[offsets::LAYER_COUNT] = layers;
        }
        let len = bytes.len() as u32;
        put_u32(&mut bytes, offsets::LENGTH, len);
        reseal(&mut bytes);
        prop_assert!(check_parse(&bytes).is_err());
    }
}
