//! The in-place parser: every field is checked before a [`QuantModel`] is
//! returned, with checked arithmetic and `get`-style reads only, so that no
//! input (truncated, corrupted or hostile) can panic or read out of bounds.

use super::error::{ErrorKind, Field, FormatError, Section};
use super::layout::{align_up, offsets, offsets::layer as rec, tag};
use super::layout::{
    BUFFER_ALIGN, GEOMETRY_FIELDS, HEADER_LEN, LAYER_RECORD_LEN, MAGIC, SECTION_SLOTS, SHIFT_MAX, SHIFT_MIN, VERSION,
    VERSION_GEOMETRY, VERSION_MIN,
};
use crate::model::{
    F16Weights, InputTransform, Int8Weights, LayerData, LayerWeights, Precision, QuantModel, TensorQuant,
};
use crate::spec::{
    Activation, AvgPool2D, Conv2D, Hw, Inputs, Layer, ModelSpec, Padding, Pads, Problem, Shape, SpecError, MAX_LAYERS,
    MAX_TENSOR_ELEMENTS,
};
use core::mem::MaybeUninit;
use half::f16;

/// CRC-32/ISO-HDLC (zlib's). On a device, with a 1 KiB table that stays in
/// flash; on a host (`std`), slice-by-16 with a 16 KiB table: the same value,
/// ~8x faster, so a 61 MB full-AlexNet model no longer takes half a second to
/// open.
const CRC32: crc::Crc<u32, CrcTable> = crc::Crc::<u32, CrcTable>::new(&crc::CRC_32_ISO_HDLC);
#[cfg(feature = "std")]
type CrcTable = crc::Table<16>;
#[cfg(not(feature = "std"))]
type CrcTable = crc::Table<1>;

/// Smallest non-zero multiplier QuantizeMultiplier produces (`0.5 * 2^31`).
const MULTIPLIER_MIN: i32 = 1 << 30;

/// The CRC-32 stored at offset 16 of a well-formed `file`: computed over the
/// whole file with the CRC field read as zeros. Tools that patch a file use it
/// to reseal it.
pub fn file_crc(file: &[u8]) -> u32 {
    let mut digest = CRC32.digest();
    let crc_at = offsets::CRC;
    match file.get(crc_at..) {
        None => digest.update(file),
        Some(rest) => {
            digest.update(file.get(..crc_at).unwrap_or(&[]));
            let zeros = [0u8; 4];
            digest.update(zeros.get(..rest.len().min(4)).unwrap_or(&[]));
            digest.update(rest.get(4..).unwrap_or(&[]));
        }
    }
    digest.finalize()
}

/// The file length a header declares, after checking its magic and version:
/// lets firmware slice a model out of a larger flash partition before [`parse`].
pub fn declared_length(bytes: &[u8]) -> Result<usize, FormatError> {
    let r = Reader { b: bytes };
    check_magic_and_version(&r)?;
    let declared = r.u32(offsets::LENGTH, Field::Length, None)?;
    usize::try_from(declared).map_err(|_| err(ErrorKind::TooLarge { bytes: declared as u64 }, Field::Length, None, 12))
}

/// Parse and fully validate a model file in place.
///
/// `bytes` must be exactly the file (its length is checked against the
/// header) and start at an address aligned to [`BUFFER_ALIGN`]; the returned
/// model's slices borrow from it. Nothing is copied or allocated.
pub fn parse(bytes: &[u8]) -> Result<QuantModel<'_>, FormatError> {
    let mut slot = MaybeUninit::uninit();
    parse_into(bytes, &mut slot)?;
    // SAFETY: `parse_into` returned Ok: every field is written.
    Ok(unsafe { slot.assume_init() })
}

/// [`parse`] into `slot`, the layer table written where it stays (a device
/// keeps its model in a static: no copy of it passes over the stack). On an
/// error `slot` may be partly written and stays uninitialised.
#[inline(never)]
pub fn parse_into<'s, 'a>(
    bytes: &'a [u8],
    slot: &'s mut MaybeUninit<QuantModel<'a>>,
) -> Result<&'s mut QuantModel<'a>, FormatError> {
    let address_mod = bytes.as_ptr() as usize % BUFFER_ALIGN;
    if address_mod != 0 {
        return Err(err(ErrorKind::Misaligned { align: BUFFER_ALIGN, address_mod }, Field::Buffer, None, 0));
    }
    let r = Reader { b: bytes };
    let len = bytes.len();

    // Header, in the order that lets each check trust the previous ones.
    check_magic_and_version(&r)?;
    if len < HEADER_LEN {
        let kind = ErrorKind::Truncated { needed: HEADER_LEN as u64, len };
        return Err(err(kind, Field::Length, None, len));
    }
    let declared = r.u32(offsets::LENGTH, Field::Length, None)?;
    if declared as u64 != len as u64 {
        return Err(err(ErrorKind::LengthMismatch { declared, actual: len }, Field::Length, None, offsets::LENGTH));
    }
    let stored = r.u32(offsets::CRC, Field::Crc, None)?;
    let computed = file_crc(bytes);
    // Under `cargo fuzz` (cfg fuzzing) the CRC is not enforced, so that the
    // fuzzer's mutations reach the structural checks behind it.
    if stored != computed && !cfg!(fuzzing) {
        return Err(err(ErrorKind::CrcMismatch { stored, computed }, Field::Crc, None, offsets::CRC));
    }
    let precision = match r.u8(offsets::PRECISION, Field::Precision, None)? {
        tag::INT8 => Precision::Int8,
        tag::F16 => Precision::F16,
        t => return Err(err(ErrorKind::BadTag { value: t as u32 }, Field::Precision, None, offsets::PRECISION)),
    };
    let n = r.u8(offsets::LAYER_COUNT, Field::LayerCount, None)? as usize;
    if n == 0 || n > MAX_LAYERS {
        let e = if n == 0 { SpecError::NoLayers } else { SpecError::TooManyLayers };
        return Err(err(ErrorKind::Spec(e), Field::LayerCount, None, offsets::LAYER_COUNT));
    }
    r.zero16(offsets::RESERVED0, Field::Reserved, None)?;
    let version = r.u32(offsets::VERSION, Field::Version, None)?;
    if version == 1 {
        r.zero32(offsets::RESERVED1, Field::Reserved, None)?;
        r.zero32(offsets::RESERVED1 + 4, Field::Reserved, None)?;
    }
    let geometry = version >= VERSION_GEOMETRY;
    let table_end = if geometry { offsets::geometry_record(n, n) } else { offsets::layer_record(n) };
    if len < table_end {
        let kind = ErrorKind::Truncated { needed: table_end as u64, len };
        return Err(err(kind, Field::LayerTable, None, HEADER_LEN));
    }
    let input_shape = read_input_shape(&r)?;
    let input = read_quant(&r, precision, offsets::INPUT_SCALE, Field::InputScale, Field::InputZeroPoint, None)?;

    // The layer stack, validated by the same code the host builds models with.
    let mut layers = [Layer::Flatten; MAX_LAYERS];
    let mut inputs = [Inputs::stack(0); MAX_LAYERS];
    for (i, (layer, reads)) in layers.iter_mut().zip(inputs.iter_mut()).enumerate().take(n) {
        (*layer, *reads) = read_layer(&r, i, geometry.then_some(offsets::geometry_record(n, i)))?;
    }
    // `ModelSpec::new` also refuses tensors over `MAX_TENSOR_ELEMENTS`, a
    // misplaced softmax and counts that overflow u64, so nothing below (nor
    // any user of the model) does unchecked arithmetic on a hostile stack.
    let layers = layers.get(..n).unwrap_or(&[]);
    let inputs = inputs.get(..n).unwrap_or(&[]);
    if geometry && !super::layout::needs_geometry(layers, inputs) {
        return Err(err(ErrorKind::NeedlessGeometry, Field::Version, None, offsets::VERSION));
    }
    let at = slot.as_mut_ptr();
    // SAFETY: `at` points to a whole `QuantModel`; the spec is built in place
    // (a layer table is kilobytes: no copy of it passes over the stack) and
    // only read through `spec` while the other fields are written through
    // raw pointers; the whole is assumed initialised once all are.
    let spec: &ModelSpec = unsafe {
        let spec_at = &mut *(&raw mut (*at).spec).cast::<MaybeUninit<ModelSpec>>();
        ModelSpec::graph_into(input_shape, layers, inputs, spec_at).map_err(spec_error)?
    };

    // Data area: labels, then sections, each at its canonical place.
    let mut cursor = Cursor { pos: table_end as u64 };
    let labels = read_labels(&r, spec, &mut cursor)?;
    let preprocess = match version {
        1 => None,
        2 => Some(read_transform(&r, spec, &mut cursor)?),
        // Version 3: a transform is optional (offset and count both 0: none).
        _ => {
            let none = r.u32(offsets::TRANSFORM_OFFSET, Field::InputTransform, None)? == 0
                && r.u32(offsets::TRANSFORM_COUNT, Field::InputTransform, None)? == 0;
            if none {
                None
            } else {
                Some(read_transform(&r, spec, &mut cursor)?)
            }
        }
    };
    // SAFETY: as above; the layer data is written in place, the other fields after.
    let data = unsafe {
        let data = &raw mut (*at).layers;
        data.write([LayerData::plain(TensorQuant::IDENTITY); MAX_LAYERS]);
        &mut *data
    };
    for ((i, layer, shape_in, _), slot) in spec.shapes().zip(data.iter_mut()) {
        *slot = read_layer_data(&r, precision, i, layer, shape_in, &mut cursor)?;
    }
    let expected_len = align_up(cursor.pos);
    if (len as u64) < expected_len {
        let kind = ErrorKind::Truncated { needed: expected_len, len };
        return Err(err(kind, Field::Length, None, offsets::LENGTH));
    }
    r.zero_bytes(cursor.pos, expected_len, None)?;
    if len as u64 > expected_len {
        return Err(err(ErrorKind::TrailingData { expected_len }, Field::Length, None, expected_len as usize));
    }
    // SAFETY: as above; `layers` is written, these are the other fields.
    unsafe {
        (&raw mut (*at).precision).write(precision);
        (&raw mut (*at).input).write(input);
        (&raw mut (*at).labels).write(labels);
        (&raw mut (*at).preprocess).write(preprocess);
        Ok(slot.assume_init_mut())
    }
}

fn err(kind: ErrorKind, field: Field, layer: Option<usize>, offset: usize) -> FormatError {
    FormatError::new(kind, field, layer, offset)
}

/// A stack `ModelSpec::new` refused, attributed to the field that holds the fault.
fn spec_error(e: SpecError) -> FormatError {
    match e {
        // The input tensor itself is too large (the check comes before any layer's).
        SpecError::Layer { index: 0, input, problem: Problem::TooLarge, .. }
            if input.checked_elements().is_none_or(|n| n > MAX_TENSOR_ELEMENTS) =>
        {
            err(ErrorKind::Spec(e), Field::InputShape, None, offsets::INPUT_SHAPE)
        }
        SpecError::Layer {
            index,
            problem: Problem::FutureTensor(_) | Problem::MissingOperand | Problem::UnexpectedOperand,
            ..
        } => err(ErrorKind::Spec(e), Field::Hyperparameters, Some(index), offsets::layer_record(index) + rec::KIND),
        SpecError::Layer { index, problem: Problem::MisplacedSoftmax, .. } => {
            err(ErrorKind::Spec(e), Field::Activation, Some(index), offsets::layer_record(index) + rec::ACTIVATION)
        }
        SpecError::Layer { index, .. } => {
            err(ErrorKind::Spec(e), Field::Hyperparameters, Some(index), offsets::layer_record(index) + rec::PARAMS)
        }
        SpecError::EmptyInput => err(ErrorKind::Spec(e), Field::InputShape, None, offsets::INPUT_SHAPE),
        SpecError::TooManyLayers | SpecError::NoLayers | SpecError::InputsLength { .. } => {
            err(ErrorKind::Spec(e), Field::LayerCount, None, offsets::LAYER_COUNT)
        }
    }
}

/// Bounds-checked little-endian reads; an out-of-range read is a typed error.
struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn bytes<const N: usize>(&self, at: usize, field: Field, layer: Option<usize>) -> Result<[u8; N], FormatError> {
        at.checked_add(N).and_then(|end| self.b.get(at..end)).and_then(|s| <[u8; N]>::try_from(s).ok()).ok_or_else(
            || {
                let needed = (at as u64).saturating_add(N as u64);
                err(ErrorKind::Truncated { needed, len: self.b.len() }, field, layer, at)
            },
        )
    }
    fn u8(&self, at: usize, field: Field, layer: Option<usize>) -> Result<u8, FormatError> {
        Ok(self.bytes::<1>(at, field, layer)?[0])
    }
    fn u32(&self, at: usize, field: Field, layer: Option<usize>) -> Result<u32, FormatError> {
        self.bytes(at, field, layer).map(u32::from_le_bytes)
    }
    fn i32(&self, at: usize, field: Field, layer: Option<usize>) -> Result<i32, FormatError> {
        self.bytes(at, field, layer).map(i32::from_le_bytes)
    }
    fn zero16(&self, at: usize, field: Field, layer: Option<usize>) -> Result<(), FormatError> {
        let v = self.bytes(at, field, layer).map(u16::from_le_bytes)?;
        if v != 0 {
            return Err(err(ErrorKind::NotZero { value: v as u32 }, field, layer, at));
        }
        Ok(())
    }
    fn zero32(&self, at: usize, field: Field, layer: Option<usize>) -> Result<(), FormatError> {
        expect_zero(self.u32(at, field, layer)?, field, layer, at)
    }
    /// Padding `[from, to)` must be zero; `to` is within the file.
    fn zero_bytes(&self, from: u64, to: u64, layer: Option<usize>) -> Result<(), FormatError> {
        let (from, to) = (usize::try_from(from).unwrap_or(usize::MAX), usize::try_from(to).unwrap_or(usize::MAX));
        let pad = self.b.get(from..to).ok_or_else(|| {
            err(ErrorKind::Truncated { needed: to as u64, len: self.b.len() }, Field::SectionPadding, layer, from)
        })?;
        match pad.iter().position(|&x| x != 0) {
            None => Ok(()),
            Some(k) => {
                let value = pad.get(k).copied().unwrap_or(0) as u32;
                Err(err(ErrorKind::NotZero { value }, Field::SectionPadding, layer, from.saturating_add(k)))
            }
        }
    }
}

fn expect_zero(v: u32, field: Field, layer: Option<usize>, at: usize) -> Result<(), FormatError> {
    if v != 0 {
        return Err(err(ErrorKind::NotZero { value: v }, field, layer, at));
    }
    Ok(())
}

fn check_magic_and_version(r: &Reader<'_>) -> Result<(), FormatError> {
    let magic: [u8; 8] = r.bytes(offsets::MAGIC, Field::Magic, None)?;
    if magic != MAGIC {
        return Err(err(ErrorKind::BadMagic, Field::Magic, None, offsets::MAGIC));
    }
    let version = r.u32(offsets::VERSION, Field::Version, None)?;
    if !(VERSION_MIN..=VERSION).contains(&version) {
        let kind = ErrorKind::UnsupportedVersion { found: version, supported: VERSION };
        return Err(err(kind, Field::Version, None, offsets::VERSION));
    }
    Ok(())
}

fn read_input_shape(r: &Reader<'_>) -> Result<Shape, FormatError> {
    let at = offsets::INPUT_SHAPE;
    let f = Field::InputShape;
    let t = r.u32(at, f, None)?;
    let (a, b, c) = (r.u32(at + 4, f, None)?, r.u32(at + 8, f, None)?, r.u32(at + 12, f, None)?);
    match t {
        tag::IMAGE => Ok(Shape::image(a, b, c)),
        tag::FLAT => {
            expect_zero(b, f, None, at + 8)?;
            expect_zero(c, f, None, at + 12)?;
            Ok(Shape::Flat(a))
        }
        _ => Err(err(ErrorKind::BadTag { value: t }, f, None, at)),
    }
}

/// A tensor's quantization: int8 needs a finite positive scale and an int8
/// zero point; f16 carries the identity, exactly.
fn read_quant(
    r: &Reader<'_>,
    precision: Precision,
    at: usize,
    scale_field: Field,
    zp_field: Field,
    layer: Option<usize>,
) -> Result<TensorQuant, FormatError> {
    let bits = r.u32(at, scale_field, layer)?;
    let zero_point = r.i32(at + 4, zp_field, layer)?;
    let scale = f32::from_bits(bits);
    match precision {
        Precision::Int8 => {
            if !(scale.is_finite() && scale > 0.0) {
                return Err(err(ErrorKind::BadScale { value: scale }, scale_field, layer, at));
            }
            if !(-128..=127).contains(&zero_point) {
                return Err(err(ErrorKind::BadZeroPoint { value: zero_point }, zp_field, layer, at + 4));
            }
        }
        Precision::F16 => {
            if bits != TensorQuant::IDENTITY.scale.to_bits() {
                return Err(err(ErrorKind::NotIdentity, scale_field, layer, at));
            }
            if zero_point != 0 {
                return Err(err(ErrorKind::NotIdentity, zp_field, layer, at + 4));
            }
        }
    }
    Ok(TensorQuant { scale, zero_point })
}

fn read_activation(r: &Reader<'_>, base: usize, i: usize, geometry: bool) -> Result<Activation, FormatError> {
    match r.u8(base + rec::ACTIVATION, Field::Activation, Some(i))? {
        tag::ACT_NONE => Ok(Activation::None),
        tag::ACT_RELU => Ok(Activation::Relu),
        tag::ACT_SOFTMAX => Ok(Activation::Softmax),
        tag::ACT_RELU6 if geometry => Ok(Activation::Relu6),
        t => Err(err(ErrorKind::BadTag { value: t as u32 }, Field::Activation, Some(i), base + rec::ACTIVATION)),
    }
}

/// A padding tag with the pads of a geometry record (`ext[4..8]`, which
/// must be zero unless the tag is explicit).
fn read_padding(
    tag_value: u8,
    ext: &[u32; GEOMETRY_FIELDS],
    at: usize,
    ext_at: usize,
    l: Option<usize>,
) -> Result<Padding, FormatError> {
    let [t, b, le, ri] = [ext[4], ext[5], ext[6], ext[7]];
    match tag_value {
        tag::VALID | tag::SAME => {
            for (k, v) in [t, b, le, ri].into_iter().enumerate() {
                expect_zero(v, Field::Padding, l, ext_at + 16 + 4 * k)?;
            }
            Ok(if tag_value == tag::VALID { Padding::Valid } else { Padding::Same })
        }
        tag::EXPLICIT if ext_at != 0 => {
            if t == 0 && b == 0 && le == 0 && ri == 0 {
                // All-zero explicit pads are written as Valid: one spelling per model.
                return Err(err(ErrorKind::BadTag { value: tag_value as u32 }, Field::Padding, l, at));
            }
            Ok(Padding::Explicit(Pads { top: t, bottom: b, left: le, right: ri }))
        }
        v => Err(err(ErrorKind::BadTag { value: v as u32 }, Field::Padding, l, at)),
    }
}

/// Layer `i`'s kind and hyperparameters; fields the kind does not use must
/// be zero. `ext_at`: where its geometry record is (version 3), if any.
fn read_layer(r: &Reader<'_>, i: usize, ext_at: Option<usize>) -> Result<(Layer, Inputs), FormatError> {
    let base = offsets::layer_record(i);
    let l = Some(i);
    let hp = Field::Hyperparameters;
    let geometry = ext_at.is_some();
    let kind = r.u8(base + rec::KIND, Field::LayerKind, l)?;
    let activation = r.u8(base + rec::ACTIVATION, Field::Activation, l)?;
    let padding = r.u8(base + rec::PADDING, Field::Padding, l)?;
    expect_zero(r.u8(base + rec::RESERVED, Field::Reserved, l)? as u32, Field::Reserved, l, base + rec::RESERVED)?;
    let p = base + rec::PARAMS;
    let (a, b, c) = (r.u32(p, hp, l)?, r.u32(p + 4, hp, l)?, r.u32(p + 8, hp, l)?);
    // The geometry record; before version 3, what a square layer implies.
    let mut ext = [0u32; GEOMETRY_FIELDS];
    if let Some(at) = ext_at {
        for (k, v) in ext.iter_mut().enumerate() {
            *v = r.u32(at + 4 * k, hp, l)?;
        }
    }
    let ext_at = ext_at.unwrap_or(0);
    // The tensors the layer reads (fields 9 and 10: tensor + 1, 0 for the
    // default), then the reserved tail.
    let inputs = Inputs {
        main: match ext[9] {
            0 => i as u16,
            t => u16::try_from(t - 1).map_err(|_| err(ErrorKind::BadTag { value: t }, hp, l, ext_at + 36))?,
        },
        other: match ext[10] {
            0 => None,
            t => Some(u16::try_from(t - 1).map_err(|_| err(ErrorKind::BadTag { value: t }, hp, l, ext_at + 40))?),
        },
    };
    if ext[9] == i as u32 + 1 {
        // The default is written as 0: one spelling per model.
        return Err(err(ErrorKind::BadTag { value: ext[9] }, hp, l, ext_at + 36));
    }
    expect_zero(ext[11], hp, l, ext_at + 44)?;
    let windowed = kind == tag::CONV2D || (kind == tag::AVG_POOL2D && geometry);
    let activated =
        kind == tag::CONV2D || kind == tag::DENSE || (geometry && matches!(kind, tag::ADD | tag::ACTIVATION));
    // Every kind but those with an activation: none; every kind but the windowed ones: no padding.
    if !activated {
        expect_zero(activation as u32, Field::Activation, l, base + rec::ACTIVATION)?;
    }
    if !windowed {
        expect_zero(padding as u32, Field::Padding, l, base + rec::PADDING)?;
        for (k, &v) in ext.iter().enumerate().take(9) {
            expect_zero(v, hp, l, ext_at + 4 * k)?;
        }
    }
    let layer = match kind {
        tag::CONV2D => {
            let (kernel, stride, dilation, groups) = if geometry {
                (Hw::new(b, ext[0]), Hw::new(c, ext[1]), Hw::new(ext[2], ext[3]), ext[8])
            } else {
                (Hw::square(b), Hw::square(c), Hw::ONE, 1)
            };
            let padding = read_padding(padding, &ext, base + rec::PADDING, ext_at, l)?;
            let activation = read_activation(r, base, i, geometry)?;
            Layer::Conv2D(Conv2D { filters: a, kernel, stride, dilation, padding, activation, groups })
        }
        tag::AVG_POOL2D if geometry => {
            expect_zero(c, hp, l, p + 8)?;
            expect_zero(ext[2], hp, l, ext_at + 8)?;
            expect_zero(ext[3], hp, l, ext_at + 12)?;
            expect_zero(ext[8], hp, l, ext_at + 32)?;
            let padding = read_padding(padding, &ext, base + rec::PADDING, ext_at, l)?;
            Layer::AvgPool2D(AvgPool2D { pool: Hw::new(a, ext[0]), stride: Hw::new(b, ext[1]), padding })
        }
        tag::GLOBAL_AVG_POOL | tag::CONCAT | tag::ADD | tag::ACTIVATION | tag::SOFTMAX if geometry => {
            expect_zero(a, hp, l, p)?;
            expect_zero(b, hp, l, p + 4)?;
            expect_zero(c, hp, l, p + 8)?;
            match kind {
                tag::GLOBAL_AVG_POOL => Layer::GlobalAvgPool,
                tag::CONCAT => Layer::Concat,
                tag::SOFTMAX => Layer::Softmax,
                tag::ADD => Layer::Add { activation: read_activation(r, base, i, geometry)? },
                _ => Layer::Activation(read_activation(r, base, i, geometry)?),
            }
        }
        tag::BATCH_NORM => {
            expect_zero(c, hp, l, p + 8)?;
            Layer::BatchNorm { epsilon: f32::from_bits(a), momentum: f32::from_bits(b) }
        }
        tag::MAX_POOL2D => {
            expect_zero(c, hp, l, p + 8)?;
            Layer::MaxPool2D { pool: a, stride: b }
        }
        tag::FLATTEN => {
            expect_zero(a, hp, l, p)?;
            expect_zero(b, hp, l, p + 4)?;
            expect_zero(c, hp, l, p + 8)?;
            Layer::Flatten
        }
        tag::DENSE => {
            expect_zero(b, hp, l, p + 4)?;
            expect_zero(c, hp, l, p + 8)?;
            Layer::Dense { units: a, activation: read_activation(r, base, i, geometry)? }
        }
        tag::DROPOUT => {
            expect_zero(b, hp, l, p + 4)?;
            expect_zero(c, hp, l, p + 8)?;
            Layer::Dropout { rate: f32::from_bits(a) }
        }
        t => return Err(err(ErrorKind::BadTag { value: t as u32 }, Field::LayerKind, l, base + rec::KIND)),
    };
    Ok((layer, inputs))
}

/// The next free byte of the data area; sections are placed after it in file order.
struct Cursor {
    pos: u64,
}

impl Cursor {
    /// Check a section's table entry (at `entry`) against its canonical place
    /// and `count` elements of `size` bytes, check the zero padding before it,
    /// and return its bytes.
    #[allow(clippy::too_many_arguments)]
    fn take<'a>(
        &mut self,
        r: &Reader<'a>,
        offset: u32,
        count: u64,
        size: u64,
        field: Field,
        layer: Option<usize>,
        entry: usize,
    ) -> Result<&'a [u8], FormatError> {
        let place = align_up(self.pos);
        if offset as u64 != place {
            return Err(err(ErrorKind::WrongOffset { expected: place, found: offset }, field, layer, entry));
        }
        let end = place.saturating_add(count.saturating_mul(size));
        let len = r.b.len();
        if end > len as u64 {
            return Err(err(ErrorKind::OutOfBounds { end, len }, field, layer, entry + 4));
        }
        r.zero_bytes(self.pos, place, layer)?;
        self.pos = end;
        // In bounds: `place <= end <= len`.
        Ok(r.b.get(place as usize..end as usize).unwrap_or(&[]))
    }
}

fn read_labels<'a>(r: &Reader<'a>, spec: &ModelSpec, cursor: &mut Cursor) -> Result<&'a str, FormatError> {
    let offset = r.u32(offsets::LABELS_OFFSET, Field::Labels, None)?;
    let len = r.u32(offsets::LABELS_LEN, Field::Labels, None)?;
    if len == 0 {
        if offset != 0 {
            let kind = ErrorKind::WrongOffset { expected: 0, found: offset };
            return Err(err(kind, Field::Labels, None, offsets::LABELS_OFFSET));
        }
        return Ok("");
    }
    let raw = cursor.take(r, offset, len as u64, 1, Field::Labels, None, offsets::LABELS_OFFSET)?;
    let text = core::str::from_utf8(raw).map_err(|e| {
        let valid_up_to = e.valid_up_to();
        err(ErrorKind::NotUtf8 { valid_up_to }, Field::Labels, None, (offset as usize).saturating_add(valid_up_to))
    })?;
    let found = text.split('\n').count() as u64;
    let expected = spec.output().elements();
    if found != expected {
        return Err(err(ErrorKind::LabelCount { expected, found }, Field::Labels, None, offset as usize));
    }
    Ok(text)
}

/// The version-2 input transform: `2 * channels` finite `f32`s right after
/// the labels, no zero scale, and not the identity (that is version 1).
fn read_transform<'a>(
    r: &Reader<'a>,
    spec: &ModelSpec,
    cursor: &mut Cursor,
) -> Result<InputTransform<'a>, FormatError> {
    let f = Field::InputTransform;
    let offset = r.u32(offsets::TRANSFORM_OFFSET, f, None)?;
    let count = r.u32(offsets::TRANSFORM_COUNT, f, None)? as u64;
    let expected = 2 * spec.input().channels() as u64;
    if count != expected {
        return Err(err(ErrorKind::WrongCount { expected, found: count }, f, None, offsets::TRANSFORM_COUNT));
    }
    let raw = cursor.take(r, offset, count, 4, f, None, offsets::TRANSFORM_OFFSET)?;
    let values: &[f32] = bytemuck::try_cast_slice(raw).map_err(|_| {
        let kind = ErrorKind::Misaligned { align: 4, address_mod: raw.as_ptr() as usize % 4 };
        err(kind, f, None, offset as usize)
    })?;
    let t = InputTransform { values };
    let channels = t.channels();
    let bad = values.iter().enumerate().find(|&(i, v)| !v.is_finite() || (i < channels && *v == 0.0));
    if let Some((i, &value)) = bad {
        return Err(err(ErrorKind::BadTransform { value }, f, None, (offset as usize).saturating_add(4 * i)));
    }
    if t.is_identity() {
        return Err(err(ErrorKind::IdentityTransform, f, None, offsets::VERSION));
    }
    Ok(t)
}

/// Each slot's name and element size for a precision (size 0: unused).
fn slots(precision: Precision) -> [(Section, u64); SECTION_SLOTS] {
    match precision {
        Precision::Int8 => [
            (Section::Weights, 1),
            (Section::WeightScale, 4),
            (Section::Bias, 4),
            (Section::Multiplier, 4),
            (Section::Shift, 4),
        ],
        Precision::F16 => [
            (Section::Weights, 2),
            (Section::Bias, 2),
            (Section::Unused(2), 0),
            (Section::Unused(3), 0),
            (Section::Unused(4), 0),
        ],
    }
}

fn read_layer_data<'a>(
    r: &Reader<'a>,
    precision: Precision,
    i: usize,
    layer: &Layer,
    input: Shape,
    cursor: &mut Cursor,
) -> Result<LayerData<'a>, FormatError> {
    let base = offsets::layer_record(i);
    let l = Some(i);
    let output = read_quant(r, precision, base + rec::OUTPUT_SCALE, Field::OutputScale, Field::OutputZeroPoint, l)?;
    let counts = layer.weight_counts(input);
    let mut raw: [(&'a [u8], usize); SECTION_SLOTS] = [(&[], 0); SECTION_SLOTS];
    for (s, ((section, size), out)) in slots(precision).into_iter().zip(raw.iter_mut()).enumerate() {
        let entry = base + rec::SECTIONS + 8 * s;
        let field = Field::Section(section);
        let offset = r.u32(entry, field, l)?;
        let count = r.u32(entry + 4, field, l)? as u64;
        let expected = match counts {
            Some((weights, _)) if s == 0 => weights,
            Some((_, channels)) if size > 0 => channels,
            _ => 0,
        };
        if count != expected {
            return Err(err(ErrorKind::WrongCount { expected, found: count }, field, l, entry + 4));
        }
        if expected == 0 {
            expect_zero(offset, field, l, entry)?;
            continue;
        }
        *out = (cursor.take(r, offset, count, size, field, l, entry)?, offset as usize);
    }
    if counts.is_none() {
        return Ok(LayerData::plain(output));
    }
    let weights = match precision {
        Precision::Int8 => {
            let [(w, w_at), (ws, ws_at), (b, b_at), (m, m_at), (sh, sh_at)] = raw;
            let w = Int8Weights {
                weights: cast::<i8>(w, l, Section::Weights, w_at)?,
                weight_scale: cast::<f32>(ws, l, Section::WeightScale, ws_at)?,
                bias: cast::<i32>(b, l, Section::Bias, b_at)?,
                multiplier: cast::<i32>(m, l, Section::Multiplier, m_at)?,
                shift: cast::<i32>(sh, l, Section::Shift, sh_at)?,
            };
            check_int8(&w, l, ws_at, m_at, sh_at)?;
            LayerWeights::Int8(w)
        }
        Precision::F16 => {
            let [(w, w_at), (b, b_at), ..] = raw;
            LayerWeights::F16(F16Weights {
                weights: cast::<f16>(w, l, Section::Weights, w_at)?,
                bias: cast::<f16>(b, l, Section::Bias, b_at)?,
            })
        }
    };
    Ok(LayerData { weights, output })
}

/// A typed view of an aligned section (sections are 16-aligned in a 4-aligned buffer).
fn cast<T: bytemuck::Pod>(raw: &[u8], layer: Option<usize>, section: Section, at: usize) -> Result<&[T], FormatError> {
    bytemuck::try_cast_slice(raw).map_err(|_| {
        let align = core::mem::align_of::<T>();
        let kind = ErrorKind::Misaligned { align, address_mod: raw.as_ptr() as usize % align };
        err(kind, Field::Section(section), layer, at)
    })
}

/// Per-channel values the requantization relies on.
fn check_int8(
    w: &Int8Weights<'_>,
    l: Option<usize>,
    ws_at: usize,
    m_at: usize,
    sh_at: usize,
) -> Result<(), FormatError> {
    let at = |base: usize, c: usize| base.saturating_add(c.saturating_mul(4));
    if let Some(c) = w.weight_scale.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
        let value = w.weight_scale.get(c).copied().unwrap_or(f32::NAN);
        return Err(err(ErrorKind::BadScale { value }, Field::Section(Section::WeightScale), l, at(ws_at, c)));
    }
    if let Some(c) = w.multiplier.iter().position(|&m| m != 0 && m < MULTIPLIER_MIN) {
        let value = w.multiplier.get(c).copied().unwrap_or(0);
        return Err(err(ErrorKind::BadMultiplier { value }, Field::Section(Section::Multiplier), l, at(m_at, c)));
    }
    if let Some(c) = w.shift.iter().position(|s| !(SHIFT_MIN..=SHIFT_MAX).contains(s)) {
        let value = w.shift.get(c).copied().unwrap_or(0);
        return Err(err(ErrorKind::BadShift { value }, Field::Section(Section::Shift), l, at(sh_at, c)));
    }
    Ok(())
}

// The record table above fills the record exactly.
const _: () = assert!(LAYER_RECORD_LEN == rec::SECTIONS + 8 * SECTION_SLOTS);
