//! Model file: round trips, and each specific corruption gives the specific
//! typed error naming its field, layer and byte offset.

mod format_common;

use format_common::*;
use shared::format::{
    self, declared_length, offsets, parse, write, AlignedBytes, ErrorKind, Field, FormatError, Section,
};
use shared::model::{InputTransform, LayerWeights, Precision, TensorQuant};
use shared::spec::{alexnet_micro, LayerKind, Problem, SpecError};

const PRECISIONS: [Precision; 2] = [Precision::Int8, Precision::F16];

fn entry(layer: usize, slot: usize) -> usize {
    offsets::layer_record(layer) + offsets::layer::SECTIONS + 8 * slot
}

/// Patch, reseal, parse: the error (the file must be refused).
fn patched(m: &OwnedModel, patch: impl FnOnce(&mut [u8])) -> FormatError {
    let mut f = file_of(m);
    patch(&mut f);
    reseal(&mut f);
    parse(&f).expect_err("patched file must be refused")
}

fn assert_err(e: FormatError, field: Field, layer: Option<usize>, offset: usize) {
    assert_eq!((e.field, e.layer, e.offset), (field, layer, offset), "{e:?}");
}

#[test]
fn random_models_round_trip_field_for_field() {
    for precision in PRECISIONS {
        for seed in 0..300 {
            let m = random_model(seed, precision);
            let view = m.view();
            let bytes = write(&view).unwrap();
            assert_eq!(bytes.len() % 16, 0);
            let f = AlignedBytes::copy_from(&bytes);
            let back = parse(&f).unwrap();
            assert_eq!(back.spec, view.spec);
            assert_eq!(back.precision, view.precision);
            assert_eq!(back.input, view.input);
            assert_eq!(back.layer_data(), view.layer_data());
            assert_eq!(back.labels, view.labels);
            assert_eq!(back, view, "seed {seed}");
            // Canonical: writing the parsed model gives the same bytes.
            assert_eq!(write(&back).unwrap(), bytes);
            // The slices point into the file, not at copies.
            let range = f.as_ptr_range();
            for d in back.layer_data() {
                if let LayerWeights::Int8(w) = d.weights {
                    assert!(range.contains(&(w.weights.as_ptr() as *const u8)));
                    assert_eq!(w.shift.as_ptr() as usize % 16, 0);
                }
                if let LayerWeights::F16(w) = d.weights {
                    assert!(range.contains(&(w.bias.as_ptr() as *const u8)));
                }
            }
        }
    }
}

#[test]
fn alexnet_micro_round_trips_with_labels() {
    for precision in PRECISIONS {
        let m = model_for(alexnet_micro(99, 10).unwrap(), precision, &mut Rng::new(1), true);
        let f = file_of(&m);
        let back = parse(&f).unwrap();
        assert_eq!(back, m.view());
        assert_eq!(back.class_name(1), Some("clé 1"));
        assert_eq!(back.spec.params(), m.spec.params());
        assert_eq!(declared_length(&f).unwrap(), f.len());
    }
}

#[test]
fn layout_matches_the_documented_table() {
    let m = fixed_model(Precision::Int8);
    let f = file_of(&m);
    assert_eq!(&f[..8], b"AXQMODEL");
    assert_eq!(get_u32(&f, 8), 1);
    assert_eq!(get_u32(&f, 12) as usize, f.len());
    assert_eq!(f[20], 0);
    assert_eq!(f[21], 7);
    assert_eq!(get_u32(&f, 32), 0);
    assert_eq!([get_u32(&f, 36), get_u32(&f, 40), get_u32(&f, 44)], [8, 8, 3]);
    // Labels come first in the data area, right after the 7 records.
    assert_eq!(get_u32(&f, 24) as usize, 64 + 7 * 64);
    assert_eq!(get_u32(&f, 28) as usize, m.labels.len());
    // Layer 3: Conv2D(6, 3), valid, relu; 216 weights, 6 of everything else.
    let r = offsets::layer_record(3);
    assert_eq!(&f[r..r + 4], &[0, 1, 0, 0]);
    assert_eq!([get_u32(&f, r + 4), get_u32(&f, r + 8), get_u32(&f, r + 12)], [6, 3, 1]);
    assert_eq!(get_u32(&f, entry(3, 0) + 4), 216);
    for slot in 1..5 {
        assert_eq!(get_u32(&f, entry(3, slot) + 4), 6);
        assert_eq!(get_u32(&f, entry(3, slot)) % 16, 0);
    }
    // Layer 2 (MaxPool) has no sections.
    assert!((0..5).all(|s| get_u32(&f, entry(2, s)) == 0 && get_u32(&f, entry(2, s) + 4) == 0));
    assert_eq!(format::file_crc(&f), get_u32(&f, 16));
}

#[test]
fn bad_magic() {
    let m = fixed_model(Precision::Int8);
    let e = patched(&m, |f| f[0] = b'X');
    assert_eq!(e.kind, ErrorKind::BadMagic);
    assert_err(e, Field::Magic, None, 0);
    assert_eq!(parse(&AlignedBytes::copy_from(b"hello")).unwrap_err().field, Field::Magic);
}

#[test]
fn wrong_version() {
    let m = fixed_model(Precision::F16);
    let e = patched(&m, |f| put_u32(f, 8, 4));
    assert_eq!(e.kind, ErrorKind::UnsupportedVersion { found: 4, supported: 3 });
    assert_err(e, Field::Version, None, 8);
    assert!(e.to_string().contains("format version 4 is not supported"), "{e}");
}

#[test]
fn truncated_and_extended() {
    let m = fixed_model(Precision::Int8);
    let f = file_of(&m);
    let len = f.len();
    let short = AlignedBytes::copy_from(&f[..len - 1]);
    let e = parse(&short).unwrap_err();
    assert_eq!(e.kind, ErrorKind::LengthMismatch { declared: len as u32, actual: len - 1 });
    assert_err(e, Field::Length, None, 12);
    let tiny = AlignedBytes::copy_from(&f[..40]);
    let e = parse(&tiny).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Truncated { needed: 64, len: 40 });
    let mut long = f.to_vec();
    long.extend_from_slice(&[0; 16]);
    let e = parse(&AlignedBytes::copy_from(&long)).unwrap_err();
    assert_eq!(e.kind, ErrorKind::LengthMismatch { declared: len as u32, actual: len + 16 });
    // Cut with the length and CRC fixed up: the last section runs out of file.
    let mut cut = AlignedBytes::copy_from(&f[..len - 32]);
    put_u32(&mut cut, 12, (len - 32) as u32);
    reseal(&mut cut);
    let e = parse(&cut).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::OutOfBounds { .. }), "{e:?}");
    assert_err(e, Field::Section(Section::Shift), Some(6), entry(6, 4) + 4);
    // Extended with the length and CRC fixed up: trailing data.
    let mut ext = long.clone();
    put_u32(&mut ext, 12, (len + 16) as u32);
    reseal(&mut ext);
    let e = parse(&AlignedBytes::copy_from(&ext)).unwrap_err();
    assert_eq!(e.kind, ErrorKind::TrailingData { expected_len: len as u64 });
    assert_err(e, Field::Length, None, len);
}

#[test]
fn bad_crc() {
    let m = fixed_model(Precision::Int8);
    let mut f = file_of(&m);
    let last = f.len() - 20;
    f[last] ^= 0x10;
    let e = parse(&f).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::CrcMismatch { .. }));
    assert_err(e, Field::Crc, None, 16);
}

#[test]
fn misaligned_buffer_is_refused_not_copied() {
    let m = fixed_model(Precision::Int8);
    let f = file_of(&m);
    let mut shifted = AlignedBytes::copy_from(&[&[0u8][..], &f[..]].concat());
    let e = parse(&shifted[1..]).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Misaligned { align: 4, address_mod: 1 });
    assert_err(e, Field::Buffer, None, 0);
    assert!(e.to_string().contains("aligned to 16"));
    // Aligned again, it parses.
    shifted.as_bytes_mut().rotate_left(1);
    assert!(parse(&shifted[..f.len()]).is_ok());
}

#[test]
fn wrong_weight_count_for_layer_3() {
    let m = fixed_model(Precision::Int8);
    let e = patched(&m, |f| put_u32(f, entry(3, 0) + 4, 215));
    assert_eq!(e.kind, ErrorKind::WrongCount { expected: 216, found: 215 });
    assert_err(e, Field::Section(Section::Weights), Some(3), entry(3, 0) + 4);
    assert!(e.to_string().contains("weights section of layer 3 at byte"), "{e}");
    // The writer refuses the same model with the same error.
    let mut bad = fixed_model(Precision::Int8);
    if let OwnedWeights::Int8 { w, .. } = &mut bad.weights[3] {
        w.pop();
    }
    let e = write(&bad.view()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::WrongCount { expected: 216, found: 215 });
    assert_eq!(e.layer, Some(3));
    // f16: a per-channel array one short.
    let mut bad = fixed_model(Precision::F16);
    if let OwnedWeights::F16 { b, .. } = &mut bad.weights[6] {
        b.pop();
    }
    let e = write(&bad.view()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::WrongCount { expected: 5, found: 4 });
    assert_err(e, Field::Section(Section::Bias), Some(6), entry(6, 1) + 4);
}

#[test]
fn layer_without_weights_must_have_no_sections() {
    let m = fixed_model(Precision::Int8);
    let e = patched(&m, |f| put_u32(f, entry(2, 1) + 4, 4));
    assert_eq!(e.kind, ErrorKind::WrongCount { expected: 0, found: 4 });
    assert_err(e, Field::Section(Section::WeightScale), Some(2), entry(2, 1) + 4);
    let e = patched(&m, |f| put_u32(f, entry(4, 0), 64));
    assert_eq!(e.kind, ErrorKind::NotZero { value: 64 });
    assert_err(e, Field::Section(Section::Weights), Some(4), entry(4, 0));
    // f16 models use slots 0 and 1 only.
    let m = fixed_model(Precision::F16);
    let e = patched(&m, |f| put_u32(f, entry(0, 3) + 4, 4));
    assert_err(e, Field::Section(Section::Unused(3)), Some(0), entry(0, 3) + 4);
    // And the writer refuses weights on a MaxPool, or of the wrong precision.
    let mut bad = fixed_model(Precision::Int8);
    bad.weights[2] = bad.weights[1].clone();
    let e = write(&bad.view()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::WrongWeights);
    assert_err(e, Field::Weights, Some(2), offsets::layer_record(2));
    let mut bad = fixed_model(Precision::Int8);
    bad.precision = Precision::F16;
    assert_eq!(write(&bad.view()).unwrap_err().kind, ErrorKind::WrongWeights);
}

#[test]
fn sections_must_be_at_their_canonical_place() {
    let m = fixed_model(Precision::Int8);
    let f = file_of(&m);
    let at = get_u32(&f, entry(3, 2));
    let e = patched(&m, |f| put_u32(f, entry(3, 2), at + 16));
    assert_eq!(e.kind, ErrorKind::WrongOffset { expected: at as u64, found: at + 16 });
    assert_err(e, Field::Section(Section::Bias), Some(3), entry(3, 2));
    let e = patched(&m, |f| put_u32(f, entry(0, 0), u32::MAX));
    assert!(matches!(e.kind, ErrorKind::WrongOffset { .. }));
    // Padding after layer 3's 216 weights (216 is not a multiple of 16) must be zero.
    let w = get_u32(&f, entry(3, 0)) as usize;
    let e = patched(&m, |f| f[w + 216] = 1);
    assert_eq!(e.kind, ErrorKind::NotZero { value: 1 });
    assert_err(e, Field::SectionPadding, Some(3), w + 216);
}

#[test]
fn enum_tags_and_reserved_fields() {
    let m = fixed_model(Precision::Int8);
    let e = patched(&m, |f| f[20] = 2);
    assert_eq!(e.kind, ErrorKind::BadTag { value: 2 });
    assert_err(e, Field::Precision, None, 20);
    let r5 = offsets::layer_record(5);
    let e = patched(&m, |f| f[r5] = 9);
    assert_eq!(e.kind, ErrorKind::BadTag { value: 9 });
    assert_err(e, Field::LayerKind, Some(5), r5);
    let r0 = offsets::layer_record(0);
    let e = patched(&m, |f| f[r0 + 1] = 3);
    assert_err(e, Field::Activation, Some(0), r0 + 1);
    let e = patched(&m, |f| f[r0 + 2] = 2);
    assert_err(e, Field::Padding, Some(0), r0 + 2);
    // Dropout (layer 5) has no activation, padding, or second parameter.
    let e = patched(&m, |f| f[r5 + 1] = 1);
    assert_err(e, Field::Activation, Some(5), r5 + 1);
    let e = patched(&m, |f| put_u32(f, r5 + 8, 1));
    assert_err(e, Field::Hyperparameters, Some(5), r5 + 8);
    let e = patched(&m, |f| f[r5 + 3] = 1);
    assert_err(e, Field::Reserved, Some(5), r5 + 3);
    let e = patched(&m, |f| f[60] = 1);
    assert_err(e, Field::Reserved, None, 60);
    let e = patched(&m, |f| put_u32(f, 32, 7));
    assert_eq!(e.kind, ErrorKind::BadTag { value: 7 });
    assert_err(e, Field::InputShape, None, 32);
}

#[test]
fn hyperparameters_go_through_model_spec() {
    let m = fixed_model(Precision::Int8);
    let r5 = offsets::layer_record(5);
    let e = patched(&m, |f| put_u32(f, r5 + 4, 1.5f32.to_bits()));
    match e.kind {
        ErrorKind::Spec(SpecError::Layer { index: 5, kind: LayerKind::Dropout, problem: Problem::BadRate, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_err(e, Field::Hyperparameters, Some(5), r5 + 4);
    let r1 = offsets::layer_record(1);
    let e = patched(&m, |f| put_u32(f, r1 + 4, f32::NAN.to_bits()));
    assert!(matches!(e.kind, ErrorKind::Spec(SpecError::Layer { index: 1, problem: Problem::BadRate, .. })));
    let r3 = offsets::layer_record(3);
    let e = patched(&m, |f| put_u32(f, r3 + 8, 0));
    assert!(matches!(e.kind, ErrorKind::Spec(SpecError::Layer { index: 3, problem: Problem::ZeroHyperparameter, .. })));
    // A kernel larger than the 4x4 input of layer 3 collapses it.
    let e = patched(&m, |f| put_u32(f, r3 + 8, 5));
    assert!(matches!(e.kind, ErrorKind::Spec(SpecError::Layer { index: 3, problem: Problem::Collapsed, .. })));
    let e = patched(&m, |f| f[21] = 0);
    assert_eq!(e.kind, ErrorKind::Spec(SpecError::NoLayers));
    assert_err(e, Field::LayerCount, None, 21);
    let e = patched(&m, |f| f[21] = 49);
    assert_eq!(e.kind, ErrorKind::Spec(SpecError::TooManyLayers));
    // More layers than the file holds records for.
    let e = patched(&m, |f| f[21] = 48);
    assert!(matches!(e.kind, ErrorKind::Truncated { .. } | ErrorKind::BadTag { .. }), "{e:?}");
    let e = patched(&m, |f| put_u32(f, 44, 0));
    assert_eq!(e.kind, ErrorKind::Spec(SpecError::EmptyInput));
    assert_err(e, Field::InputShape, None, 32);
}

#[test]
fn huge_shapes_are_refused_without_overflow() {
    let m = fixed_model(Precision::Int8);
    // 2^32-1 cubed overflows u64 in Shape::elements; the parser must catch it first.
    let e = patched(&m, |f| {
        for at in [36, 40, 44] {
            put_u32(f, at, u32::MAX);
        }
    });
    assert!(matches!(e.kind, ErrorKind::Spec(SpecError::Layer { problem: Problem::TooLarge, .. })), "{e:?}");
    assert_eq!(e.field, Field::InputShape);
    // A same-padded conv with a 2^32-1 kernel: its weight count overflows u64,
    // which `ModelSpec::new` refuses (before issue 8 the parser saturated the
    // count and refused it as a `WrongCount` of its section).
    let r0 = offsets::layer_record(0);
    let e = patched(&m, |f| put_u32(f, r0 + 8, u32::MAX));
    assert!(
        matches!(e.kind, ErrorKind::Spec(SpecError::Layer { index: 0, problem: Problem::CountOverflow, .. })),
        "{e:?}"
    );
    assert_err(e, Field::Hyperparameters, Some(0), r0 + offsets::layer::PARAMS);
    let e = patched(&m, |f| put_u32(f, r0 + 4, u32::MAX));
    assert!(matches!(e.kind, ErrorKind::Spec(_) | ErrorKind::WrongCount { .. }), "{e:?}");
}

// Regression (issue 8): a softmax before the last layer was a valid file; the
// engine ignores it, the host's float network applied it.
#[test]
fn a_mid_stack_softmax_is_refused_naming_its_layer() {
    // The activation tags: 0 none, 1 relu, 2 softmax. Layer 3 is a Conv2D, 6 the Dense head.
    const SOFTMAX: u8 = 2;
    for precision in PRECISIONS {
        let m = fixed_model(precision);
        let r3 = offsets::layer_record(3);
        let e = patched(&m, |f| f[r3 + offsets::layer::ACTIVATION] = SOFTMAX);
        match e.kind {
            ErrorKind::Spec(SpecError::Layer {
                index: 3,
                kind: LayerKind::Conv2D,
                problem: Problem::MisplacedSoftmax,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        assert_err(e, Field::Activation, Some(3), r3 + offsets::layer::ACTIVATION);
        assert!(e.to_string().contains("softmax"), "{e}");
    }
    // A Dense with softmax that is not last: the stack ends Dense(softmax), Dropout.
    let spec = shared::spec::Sequential::new(shared::spec::Shape::Flat(6))
        .dense(4, shared::spec::Activation::Softmax)
        .dropout(0.5)
        .build();
    assert!(matches!(spec, Err(SpecError::Layer { index: 0, problem: Problem::MisplacedSoftmax, .. })));
    // In a file: turn the Dropout (layer 5, on 24 features) into a
    // Dense(24, softmax) in front of the head.
    let m = fixed_model(Precision::F16);
    let r5 = offsets::layer_record(5);
    let mut f = file_of(&m);
    f[r5 + offsets::layer::KIND] = 4; // Dense
    f[r5 + offsets::layer::ACTIVATION] = SOFTMAX;
    put_u32(&mut f, r5 + offsets::layer::PARAMS, 24);
    reseal(&mut f);
    let e = parse(&f).expect_err("a mid-stack softmax Dense must be refused");
    assert!(
        matches!(
            e.kind,
            ErrorKind::Spec(SpecError::Layer {
                index: 5,
                kind: LayerKind::Dense,
                problem: Problem::MisplacedSoftmax,
                ..
            })
        ),
        "{e:?}"
    );
    assert_err(e, Field::Activation, Some(5), r5 + offsets::layer::ACTIVATION);
}

#[test]
fn quantization_parameters() {
    let m = fixed_model(Precision::Int8);
    for bad in [0.0f32, -1.0, f32::NAN, f32::INFINITY, -0.0] {
        let e = patched(&m, |f| put_u32(f, 48, bad.to_bits()));
        assert!(matches!(e.kind, ErrorKind::BadScale { .. }), "{bad}: {e:?}");
        assert_err(e, Field::InputScale, None, 48);
    }
    let e = patched(&m, |f| put_u32(f, 52, 128));
    assert_eq!(e.kind, ErrorKind::BadZeroPoint { value: 128 });
    assert_err(e, Field::InputZeroPoint, None, 52);
    let r4 = offsets::layer_record(4);
    let e = patched(&m, |f| put_u32(f, r4 + 16, f32::NAN.to_bits()));
    assert_err(e, Field::OutputScale, Some(4), r4 + 16);
    let e = patched(&m, |f| put_u32(f, r4 + 20, (-129i32) as u32));
    assert_eq!(e.kind, ErrorKind::BadZeroPoint { value: -129 });
    assert_err(e, Field::OutputZeroPoint, Some(4), r4 + 20);

    // Per-channel values of layer 3: channel 2 of each array.
    let f = file_of(&m);
    let ws = get_u32(&f, entry(3, 1)) as usize;
    let e = patched(&m, |f| put_u32(f, ws + 8, 0));
    assert_eq!(e.kind, ErrorKind::BadScale { value: 0.0 });
    assert_err(e, Field::Section(Section::WeightScale), Some(3), ws + 8);
    let mul = get_u32(&f, entry(3, 3)) as usize;
    let e = patched(&m, |f| put_u32(f, mul + 8, (-5i32) as u32));
    assert_eq!(e.kind, ErrorKind::BadMultiplier { value: -5 });
    assert_err(e, Field::Section(Section::Multiplier), Some(3), mul + 8);
    let e = patched(&m, |f| put_u32(f, mul + 8, 12345));
    assert_eq!(e.kind, ErrorKind::BadMultiplier { value: 12345 });
    let sh = get_u32(&f, entry(3, 4)) as usize;
    let e = patched(&m, |f| put_u32(f, sh + 8, 31));
    assert_eq!(e.kind, ErrorKind::BadShift { value: 31 });
    assert_err(e, Field::Section(Section::Shift), Some(3), sh + 8);
    let e = patched(&m, |f| put_u32(f, sh + 8, (-32i32) as u32));
    assert_eq!(e.kind, ErrorKind::BadShift { value: -32 });

    // f16 models carry the identity quantization.
    let m = fixed_model(Precision::F16);
    let e = patched(&m, |f| put_u32(f, 48, 0.5f32.to_bits()));
    assert_eq!(e.kind, ErrorKind::NotIdentity);
    assert_err(e, Field::InputScale, None, 48);
    let r2 = offsets::layer_record(2);
    let e = patched(&m, |f| put_u32(f, r2 + 20, 1));
    assert_err(e, Field::OutputZeroPoint, Some(2), r2 + 20);
    let mut bad = fixed_model(Precision::F16);
    bad.outputs[1] = TensorQuant { scale: 0.1, zero_point: 0 };
    assert_eq!(write(&bad.view()).unwrap_err().kind, ErrorKind::NotIdentity);
}

#[test]
fn labels() {
    let m = fixed_model(Precision::Int8);
    let f = file_of(&m);
    let at = get_u32(&f, 24) as usize;
    let e = patched(&m, |f| f[at + 2] = 0xFF);
    assert_eq!(e.kind, ErrorKind::NotUtf8 { valid_up_to: 2 });
    assert_err(e, Field::Labels, None, at + 2);
    // Turning a separator into a space leaves 4 labels for 5 classes.
    let nl = at + m.labels.find('\n').unwrap();
    let e = patched(&m, |f| f[nl] = b' ');
    assert_eq!(e.kind, ErrorKind::LabelCount { expected: 5, found: 4 });
    assert_err(e, Field::Labels, None, at);
    let mut bad = fixed_model(Precision::Int8);
    bad.labels.push('\n');
    assert_eq!(write(&bad.view()).unwrap_err().kind, ErrorKind::LabelCount { expected: 5, found: 6 });
    let e = patched(&m, |f| put_u32(f, 28, 1 << 30));
    assert!(matches!(e.kind, ErrorKind::OutOfBounds { .. }), "{e:?}");
    // Empty labels are fine and parse as "".
    let mut none = fixed_model(Precision::F16);
    none.labels.clear();
    let f = file_of(&none);
    assert_eq!(parse(&f).unwrap().labels, "");
    assert_eq!(parse(&f).unwrap().class_name(0), None);
}

#[test]
fn errors_display_and_are_std_errors() {
    let m = fixed_model(Precision::Int8);
    let e = patched(&m, |f| put_u32(f, offsets::layer_record(5) + 4, 2.0f32.to_bits()));
    let text = e.to_string();
    assert!(text.starts_with("model file: hyperparameters of layer 5 at byte 388: invalid layer stack"), "{text}");
    let dynerr: &dyn std::error::Error = &e;
    assert!(dynerr.source().is_some());
}

#[test]
fn declared_length_reads_a_prefix() {
    let m = fixed_model(Precision::Int8);
    let f = file_of(&m);
    let mut partition = f.to_vec();
    partition.resize(f.len() + 1000, 0xFF);
    let n = declared_length(&partition).unwrap();
    assert_eq!(n, f.len());
    let part = AlignedBytes::copy_from(&partition);
    assert_eq!(parse(&part[..n]).unwrap(), m.view());
    assert_eq!(declared_length(b"AXQMODEL").unwrap_err().kind, ErrorKind::Truncated { needed: 12, len: 8 });
}

/// Version 2 carries the input transform; a model without one (or with the
/// identity) is still version 1, byte for byte.
#[test]
fn input_transform_makes_a_version_2_file_that_round_trips() {
    for precision in PRECISIONS {
        let m = fixed_model(precision);
        let plain = write(&m.view()).unwrap();
        assert_eq!(get_u32(&plain, 8), 1);
        let c = m.spec.input().channels() as usize;
        let identity: Vec<f32> = [vec![1.0; c], vec![0.0; c]].concat();
        let mut view = m.view();
        view.preprocess = Some(InputTransform { values: &identity });
        assert_eq!(write(&view).unwrap(), plain, "an identity transform is written as version 1");

        let values: Vec<f32> = (0..2 * c).map(|i| if i < c { 255.0 / (i + 1) as f32 } else { -(i as f32) }).collect();
        view.preprocess = Some(InputTransform { values: &values });
        let f = AlignedBytes::copy_from(&write(&view).unwrap());
        assert_eq!(get_u32(&f, 8), 2);
        assert_eq!(get_u32(&f, offsets::TRANSFORM_COUNT) as usize, 2 * c);
        let back = parse(&f).unwrap();
        assert_eq!(back, view);
        assert_eq!(back.preprocess.unwrap().scale(), &values[..c]);
        assert_eq!(back.preprocess.unwrap().offset(), &values[c..]);
        assert_eq!(write(&back).unwrap(), f.as_bytes(), "canonical");

        // Each broken field is refused, naming the transform.
        let at = get_u32(&f, offsets::TRANSFORM_OFFSET) as usize;
        let refuse = |patch: &dyn Fn(&mut [u8])| {
            let mut g = AlignedBytes::copy_from(f.as_bytes());
            patch(g.as_bytes_mut());
            reseal(g.as_bytes_mut());
            parse(&g).expect_err("patched transform must be refused")
        };
        let e = refuse(&|g| put_u32(g, offsets::TRANSFORM_COUNT, 2 * c as u32 + 2));
        assert_eq!(e.field, Field::InputTransform);
        assert!(matches!(e.kind, ErrorKind::WrongCount { .. }), "{e}");
        let e = refuse(&|g| put_u32(g, at + 4, f32::NAN.to_bits()));
        assert_eq!((e.field, e.offset), (Field::InputTransform, at + 4));
        assert!(matches!(e.kind, ErrorKind::BadTransform { .. }), "{e}");
        let e = refuse(&|g| put_u32(g, at, 0));
        assert!(matches!(e.kind, ErrorKind::BadTransform { value } if value == 0.0), "{e}");
        let e = refuse(&|g| {
            for (k, v) in identity.iter().enumerate() {
                put_u32(g, at + 4 * k, v.to_bits());
            }
        });
        assert_eq!(e.kind, ErrorKind::IdentityTransform, "{e}");
        let e = refuse(&|g| put_u32(g, offsets::TRANSFORM_OFFSET, at as u32 + 16));
        assert!(matches!(e.kind, ErrorKind::WrongOffset { .. }), "{e}");
        // A version-1 file keeps the bytes reserved.
        let e = patched(&m, |g| put_u32(g, offsets::TRANSFORM_COUNT, 6));
        assert_eq!((e.field, e.offset), (Field::Reserved, offsets::TRANSFORM_COUNT));
    }
}

/// A graph's input tensors live in the geometry record (fields 9 and 10,
/// tensor + 1): they round trip, and a layer reading a tensor not yet
/// computed, an Add without its second input, a second input on a one-input
/// layer and the default spelled out are each refused naming the layer.
#[test]
fn graph_inputs_round_trip_and_bad_ones_are_refused_naming_the_layer() {
    use shared::spec::{Activation, Conv2D, Inputs, Layer, ModelSpec, Shape};
    let layers = [
        Layer::Conv2D(Conv2D::new(4, 3).same()),
        Layer::Activation(Activation::Relu6),
        Layer::Conv2D(Conv2D::new(4, 1)),
        Layer::Add { activation: Activation::Relu },
        Layer::Concat,
        Layer::GlobalAvgPool,
        Layer::Dense { units: 3, activation: Activation::Softmax },
    ];
    let inputs = [
        Inputs::stack(0),
        Inputs::stack(1),
        Inputs { main: 1, other: None },
        Inputs { main: 2, other: Some(3) },
        Inputs { main: 4, other: Some(0) },
        Inputs::stack(5),
        Inputs::stack(6),
    ];
    let spec = ModelSpec::graph(Shape::image(6, 6, 4), &layers, &inputs).unwrap();
    let mut rng = Rng::new(3);
    for precision in PRECISIONS {
        let m = model_for(spec, precision, &mut rng, false);
        let f = file_of(&m);
        assert_eq!(get_u32(&f, 8), 3);
        let back = parse(&f).unwrap();
        assert_eq!(back.spec.inputs(), &inputs);
        assert_eq!(write(&back).unwrap(), f.as_bytes(), "canonical");
        let n = layers.len();
        let field = |i: usize, k: usize| offsets::geometry_record(n, i) + 4 * k;
        // Layer 2 reads tensor 5 (layer 4's output): not computed yet.
        let e = patched(&m, |g| put_u32(g, field(2, 9), 6));
        assert!(
            matches!(e.kind, ErrorKind::Spec(SpecError::Layer { index: 2, problem: Problem::FutureTensor(5), .. })),
            "{e}"
        );
        assert_eq!(e.layer, Some(2));
        // The Add without its second input.
        let e = patched(&m, |g| put_u32(g, field(3, 10), 0));
        assert!(
            matches!(e.kind, ErrorKind::Spec(SpecError::Layer { index: 3, problem: Problem::MissingOperand, .. })),
            "{e}"
        );
        // A second input on the global pool.
        let e = patched(&m, |g| put_u32(g, field(5, 10), 1));
        assert!(
            matches!(e.kind, ErrorKind::Spec(SpecError::Layer { index: 5, problem: Problem::UnexpectedOperand, .. })),
            "{e}"
        );
        // Layer 5's default input spelled out: one spelling per model.
        let e = patched(&m, |g| put_u32(g, field(5, 9), 6));
        assert_eq!(e.layer, Some(5), "{e}");
        // The reserved last field.
        let e = patched(&m, |g| put_u32(g, field(0, 11), 1));
        assert_eq!(e.layer, Some(0), "{e}");
    }
}
