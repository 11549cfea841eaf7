//! The writer (host side, `alloc`): lays a [`QuantModel`] out canonically and
//! refuses, with the parser's own errors, any model the parser would refuse.

use super::error::{ErrorKind, Field, FormatError};
use super::layout::{offsets, offsets::layer as rec, tag};
use super::layout::{BUFFER_ALIGN, GEOMETRY_FIELDS, LAYER_RECORD_LEN, MAGIC, SECTION_ALIGN, VERSION_GEOMETRY};
use super::parse::{file_crc, parse};
use crate::model::{LayerWeights, Precision, QuantModel, TensorQuant};
use crate::spec::{Activation, Layer, Padding, Shape};
use alloc::vec;
use alloc::vec::Vec;

/// Bytes of a model file for `model` (see the layout in [`crate::format`]).
///
/// The result is checked by [`parse`] before it is returned, so a model with
/// wrong section lengths, bad scales or mislabelled outputs gives the same
/// [`FormatError`] the firmware would report, not a file it would refuse.
pub fn write(model: &QuantModel<'_>) -> Result<Vec<u8>, FormatError> {
    let layers = model.spec.layers();
    let data = model.layer_data();
    for (i, (layer, d)) in layers.iter().zip(data).enumerate() {
        let needs = matches!(layer, Layer::Conv2D(_) | Layer::Dense { .. } | Layer::BatchNorm { .. });
        let fits = match (d.weights, model.precision) {
            (LayerWeights::None, _) => !needs,
            (LayerWeights::Int8(_), Precision::Int8) | (LayerWeights::F16(_), Precision::F16) => needs,
            _ => false,
        };
        if !fits {
            return Err(FormatError::new(ErrorKind::WrongWeights, Field::Weights, Some(i), offsets::layer_record(i)));
        }
    }

    // The oldest version that can say the model: version 1 unless there is
    // a transform to carry (2) or a layer only version 3 describes, so files
    // without them keep their exact bytes from before.
    let transform = model.preprocess.filter(|t| !t.is_identity());
    let inputs = model.spec.inputs();
    let version = super::layout::version_for(model);
    let geometry = version >= VERSION_GEOMETRY;
    let n = layers.len();
    let table = if geometry { offsets::geometry_record(n, n) } else { offsets::layer_record(n) };
    let mut out = vec![0u8; table];
    out[..8].copy_from_slice(&MAGIC);
    put_u32(&mut out, offsets::VERSION, version);
    out[offsets::PRECISION] = match model.precision {
        Precision::Int8 => tag::INT8,
        Precision::F16 => tag::F16,
    };
    // ModelSpec holds at most MAX_LAYERS (48) layers.
    out[offsets::LAYER_COUNT] = layers.len() as u8;
    let (shape_tag, a, b, c) = match model.spec.input() {
        Shape::Image { h, w, c } => (tag::IMAGE, h, w, c),
        Shape::Flat(n) => (tag::FLAT, n, 0, 0),
    };
    for (k, v) in [shape_tag, a, b, c].into_iter().enumerate() {
        put_u32(&mut out, offsets::INPUT_SHAPE + 4 * k, v);
    }
    put_quant(&mut out, offsets::INPUT_SCALE, model.input);

    if !model.labels.is_empty() {
        let at = append(&mut out, model.labels.as_bytes())?;
        put_u32(&mut out, offsets::LABELS_OFFSET, at);
        put_u32(&mut out, offsets::LABELS_LEN, len_u32(model.labels.len())?);
    }
    if let Some(t) = transform {
        let at = append(&mut out, bytemuck::cast_slice(t.values))?;
        put_u32(&mut out, offsets::TRANSFORM_OFFSET, at);
        put_u32(&mut out, offsets::TRANSFORM_COUNT, len_u32(t.values.len())?);
    }

    for (i, (layer, d)) in layers.iter().zip(data).enumerate() {
        let base = offsets::layer_record(i);
        let (kind, act, pad, p, mut ext) = encode_layer(layer);
        let reads = inputs[i];
        if !reads.is_stack(i) {
            ext[9] = if reads.main as usize == i { 0 } else { reads.main as u32 + 1 };
            ext[10] = reads.other.map_or(0, |t| t as u32 + 1);
        }
        if geometry {
            for (k, v) in ext.into_iter().enumerate() {
                put_u32(&mut out, offsets::geometry_record(n, i) + 4 * k, v);
            }
        }
        out[base + rec::KIND] = kind;
        out[base + rec::ACTIVATION] = act;
        out[base + rec::PADDING] = pad;
        for (k, v) in p.into_iter().enumerate() {
            put_u32(&mut out, base + rec::PARAMS + 4 * k, v);
        }
        put_quant(&mut out, base + rec::OUTPUT_SCALE, d.output);
        let sections: [(&[u8], usize); 5] = match d.weights {
            LayerWeights::None => [(&[], 0); 5],
            LayerWeights::Int8(w) => [
                (bytemuck::cast_slice(w.weights), w.weights.len()),
                (bytemuck::cast_slice(w.weight_scale), w.weight_scale.len()),
                (bytemuck::cast_slice(w.bias), w.bias.len()),
                (bytemuck::cast_slice(w.multiplier), w.multiplier.len()),
                (bytemuck::cast_slice(w.shift), w.shift.len()),
            ],
            LayerWeights::F16(w) => [
                (bytemuck::cast_slice(w.weights), w.weights.len()),
                (bytemuck::cast_slice(w.bias), w.bias.len()),
                (&[], 0),
                (&[], 0),
                (&[], 0),
            ],
        };
        for (s, (bytes, count)) in sections.into_iter().enumerate() {
            if count == 0 {
                continue;
            }
            let at = append(&mut out, bytes)?;
            let entry = base + rec::SECTIONS + 8 * s;
            put_u32(&mut out, entry, at);
            put_u32(&mut out, entry + 4, len_u32(count)?);
        }
    }
    pad_to_align(&mut out);
    let total = len_u32(out.len())?;
    put_u32(&mut out, offsets::LENGTH, total);
    let crc = file_crc(&out);
    put_u32(&mut out, offsets::CRC, crc);

    // The writer must never hand out a file the parser refuses.
    if out.as_ptr().align_offset(BUFFER_ALIGN) == 0 {
        check(&out, model)?;
    } else {
        check(&AlignedBytes::copy_from(&out), model)?;
    }
    Ok(out)
}

fn check(bytes: &[u8], model: &QuantModel<'_>) -> Result<(), FormatError> {
    let back = parse(bytes)?;
    // Weights are not compared: an f16 NaN weight round-trips by bits, not by `==`.
    debug_assert!(
        back.spec == model.spec
            && back.precision == model.precision
            && back.input == model.input
            && back.labels == model.labels
            && back.preprocess == model.preprocess.filter(|t| !t.is_identity()),
        "format::write does not round-trip"
    );
    Ok(())
}

fn len_u32(n: usize) -> Result<u32, FormatError> {
    u32::try_from(n).map_err(|_| FormatError::new(ErrorKind::TooLarge { bytes: n as u64 }, Field::Length, None, 0))
}

fn put_u32(out: &mut [u8], at: usize, v: u32) {
    out[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_quant(out: &mut [u8], at: usize, q: TensorQuant) {
    put_u32(out, at, q.scale.to_bits());
    put_u32(out, at + 4, q.zero_point as u32);
}

fn pad_to_align(out: &mut Vec<u8>) {
    let pad = out.len().wrapping_neg() % SECTION_ALIGN;
    out.resize(out.len() + pad, 0);
}

/// Append a section at the next aligned place; returns its offset.
fn append(out: &mut Vec<u8>, bytes: &[u8]) -> Result<u32, FormatError> {
    pad_to_align(out);
    let at = len_u32(out.len())?;
    out.extend_from_slice(bytes);
    Ok(at)
}

/// The padding tag and the four pads of a geometry record.
fn encode_padding(p: Padding) -> (u8, [u32; 4]) {
    match p {
        Padding::Valid => (tag::VALID, [0; 4]),
        Padding::Same => (tag::SAME, [0; 4]),
        Padding::Explicit(p) => (tag::EXPLICIT, [p.top, p.bottom, p.left, p.right]),
    }
}

/// (kind, activation, padding, [a, b, c], geometry record) of a layer.
fn encode_layer(layer: &Layer) -> (u8, u8, u8, [u32; 3], [u32; GEOMETRY_FIELDS]) {
    let act = |a: Activation| match a {
        Activation::None => tag::ACT_NONE,
        Activation::Relu => tag::ACT_RELU,
        Activation::Softmax => tag::ACT_SOFTMAX,
        Activation::Relu6 => tag::ACT_RELU6,
    };
    let none = [0u32; GEOMETRY_FIELDS];
    match *layer {
        Layer::Conv2D(c) => {
            let (pad, [t, b, l, r]) = encode_padding(c.padding);
            let ext = [c.kernel.w, c.stride.w, c.dilation.h, c.dilation.w, t, b, l, r, c.groups, 0, 0, 0];
            (tag::CONV2D, act(c.activation), pad, [c.filters, c.kernel.h, c.stride.h], ext)
        }
        Layer::AvgPool2D(p) => {
            let (pad, [t, b, l, r]) = encode_padding(p.padding);
            (tag::AVG_POOL2D, 0, pad, [p.pool.h, p.stride.h, 0], [p.pool.w, p.stride.w, 0, 0, t, b, l, r, 0, 0, 0, 0])
        }
        Layer::GlobalAvgPool => (tag::GLOBAL_AVG_POOL, 0, 0, [0; 3], none),
        Layer::Add { activation } => (tag::ADD, act(activation), 0, [0; 3], none),
        Layer::Concat => (tag::CONCAT, 0, 0, [0; 3], none),
        Layer::Activation(a) => (tag::ACTIVATION, act(a), 0, [0; 3], none),
        Layer::Softmax => (tag::SOFTMAX, 0, 0, [0; 3], none),
        Layer::BatchNorm { epsilon, momentum } => {
            (tag::BATCH_NORM, 0, 0, [epsilon.to_bits(), momentum.to_bits(), 0], none)
        }
        Layer::MaxPool2D { pool, stride } => (tag::MAX_POOL2D, 0, 0, [pool, stride, 0], none),
        Layer::Flatten => (tag::FLATTEN, 0, 0, [0; 3], none),
        Layer::Dense { units, activation } => (tag::DENSE, act(activation), 0, [units, 0, 0], none),
        Layer::Dropout { rate } => (tag::DROPOUT, 0, 0, [rate.to_bits(), 0, 0], none),
    }
}

const _: () = assert!(LAYER_RECORD_LEN == 64);

/// A byte buffer aligned for [`parse`] (a `Vec<u8>` from `std::fs::read` has
/// no alignment guarantee): the file is copied once, on the host.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AlignedBytes {
    words: Vec<u128>,
    len: usize,
}

impl AlignedBytes {
    /// A copy of `bytes` at an address aligned to at least 8 (16 on x86_64 and aarch64).
    pub fn copy_from(bytes: &[u8]) -> Self {
        let mut words = vec![0u128; bytes.len().div_ceil(16)];
        bytemuck::cast_slice_mut::<u128, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        AlignedBytes { words, len: bytes.len() }
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &bytemuck::cast_slice::<u128, u8>(&self.words)[..self.len]
    }

    /// The bytes, mutable (tools that patch a file in place).
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut::<u128, u8>(&mut self.words)[..self.len]
    }
}

impl core::ops::Deref for AlignedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl core::ops::DerefMut for AlignedBytes {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.as_bytes_mut()
    }
}

impl From<&[u8]> for AlignedBytes {
    fn from(bytes: &[u8]) -> Self {
        AlignedBytes::copy_from(bytes)
    }
}
