//! Why a model file was refused: what, in which field, of which layer, at which byte.

use crate::spec::SpecError;
use core::fmt;

/// A model file (or, from the writer, a model) that cannot be used.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FormatError {
    /// What is wrong.
    pub kind: ErrorKind,
    /// Which field of the file.
    pub field: Field,
    /// The layer (0-based) the field belongs to, if it belongs to one.
    pub layer: Option<usize>,
    /// Byte offset in the file of the offending field or element.
    pub offset: usize,
}

/// A field of the model file; see the layout table in [`crate::format`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// The buffer as a whole (its address).
    Buffer,
    Magic,
    Version,
    Length,
    Crc,
    Precision,
    LayerCount,
    /// A reserved header or record byte that must be zero.
    Reserved,
    /// The labels' offset, length or text.
    Labels,
    /// The input transform (version 2): its offset, count or values.
    InputTransform,
    InputShape,
    InputScale,
    InputZeroPoint,
    /// The table of layer records.
    LayerTable,
    LayerKind,
    Activation,
    Padding,
    /// The hyperparameters (filters, kernel, stride, pool, units, epsilon, momentum, rate).
    Hyperparameters,
    OutputScale,
    OutputZeroPoint,
    /// One of a layer's sections (its table entry or its data).
    Section(Section),
    /// Zero padding between sections or at the end of the file.
    SectionPadding,
    /// The writer's input: a layer's weights (kind or precision do not fit the layer).
    Weights,
}

/// A layer's section slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    /// int8 or f16 weights (slot 0).
    Weights,
    /// int8 per-channel weight scales (slot 1).
    WeightScale,
    /// int32 (slot 2) or f16 (slot 1) per-channel bias.
    Bias,
    /// int8 per-channel Q31 multipliers (slot 3).
    Multiplier,
    /// int8 per-channel shifts (slot 4).
    Shift,
    /// A slot the layer's precision does not use.
    Unused(u8),
}

/// What is wrong with a field.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ErrorKind {
    /// The buffer's address is not a multiple of `align`; the file cannot be used in place.
    Misaligned { align: usize, address_mod: usize },
    /// The file ends before the field: `needed` bytes are required, the file has `len`.
    Truncated { needed: u64, len: usize },
    /// Not a model file.
    BadMagic,
    /// A format version this code does not read.
    UnsupportedVersion { found: u32, supported: u32 },
    /// The header's length disagrees with the buffer's.
    LengthMismatch { declared: u32, actual: usize },
    /// The file is corrupted.
    CrcMismatch { stored: u32, computed: u32 },
    /// An enum tag with no meaning.
    BadTag { value: u32 },
    /// A reserved field or padding byte is not zero.
    NotZero { value: u32 },
    /// The layer stack is not valid.
    Spec(SpecError),
    /// A scale that is NaN, infinite or not positive.
    BadScale { value: f32 },
    /// An int8 zero point outside -128..=127.
    BadZeroPoint { value: i32 },
    /// An f16 model's tensor quantization other than scale 1, zero point 0.
    NotIdentity,
    /// A multiplier that is neither 0 nor in `2^30..2^31`.
    BadMultiplier { value: i32 },
    /// A shift outside `SHIFT_MIN..=SHIFT_MAX`.
    BadShift { value: i32 },
    /// A section's element count disagrees with the layer's shapes.
    WrongCount { expected: u64, found: u64 },
    /// A section is not at its canonical place.
    WrongOffset { expected: u64, found: u32 },
    /// A section extends past the end of the file.
    OutOfBounds { end: u64, len: usize },
    /// Bytes after the last section's padding.
    TrailingData { expected_len: u64 },
    /// The labels are not UTF-8 (valid up to `valid_up_to` bytes).
    NotUtf8 { valid_up_to: usize },
    /// The number of labels is neither 0 nor the output size.
    LabelCount { expected: u64, found: u64 },
    /// An input transform value that is not finite, or a zero scale.
    BadTransform { value: f32 },
    /// A version-2 file whose input transform changes nothing (it must be version 1).
    IdentityTransform,
    /// A version-3 file none of whose layers needs version 3 (it must be
    /// version 1 or 2: one file per model).
    NeedlessGeometry,
    /// Writer: the layer's weights do not fit its kind or the model's precision.
    WrongWeights,
    /// Writer: the file would exceed 4 GiB.
    TooLarge { bytes: u64 },
}

impl FormatError {
    pub(crate) const fn new(kind: ErrorKind, field: Field, layer: Option<usize>, offset: usize) -> Self {
        FormatError { kind, field, layer, offset }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::Buffer => f.write_str("buffer"),
            Field::Magic => f.write_str("magic"),
            Field::Version => f.write_str("format version"),
            Field::Length => f.write_str("file length"),
            Field::Crc => f.write_str("CRC-32"),
            Field::Precision => f.write_str("precision"),
            Field::LayerCount => f.write_str("layer count"),
            Field::Reserved => f.write_str("reserved field"),
            Field::Labels => f.write_str("labels"),
            Field::InputTransform => f.write_str("input transform"),
            Field::InputShape => f.write_str("input shape"),
            Field::InputScale => f.write_str("input scale"),
            Field::InputZeroPoint => f.write_str("input zero point"),
            Field::LayerTable => f.write_str("layer table"),
            Field::LayerKind => f.write_str("layer kind"),
            Field::Activation => f.write_str("activation"),
            Field::Padding => f.write_str("padding"),
            Field::Hyperparameters => f.write_str("hyperparameters"),
            Field::OutputScale => f.write_str("output scale"),
            Field::OutputZeroPoint => f.write_str("output zero point"),
            Field::Section(s) => write!(f, "{s} section"),
            Field::SectionPadding => f.write_str("section padding"),
            Field::Weights => f.write_str("weights"),
        }
    }
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Section::Weights => f.write_str("weights"),
            Section::WeightScale => f.write_str("weight scale"),
            Section::Bias => f.write_str("bias"),
            Section::Multiplier => f.write_str("multiplier"),
            Section::Shift => f.write_str("shift"),
            Section::Unused(slot) => write!(f, "unused slot {slot}"),
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ErrorKind::Misaligned { align, address_mod } => write!(
                f,
                "the buffer starts at an address {address_mod} bytes past a multiple of {align}; \
                 load the file at an address aligned to 16 (it is used in place, never copied)"
            ),
            ErrorKind::Truncated { needed, len } => write!(f, "the file ends early: needs {needed} bytes, has {len}"),
            ErrorKind::BadMagic => f.write_str("not a model file (bad magic)"),
            ErrorKind::UnsupportedVersion { found, supported } => {
                write!(
                    f,
                    "format version {found} is not supported (this build reads versions {}..={supported})",
                    super::layout::VERSION_MIN
                )
            }
            ErrorKind::LengthMismatch { declared, actual } => {
                write!(f, "the header says {declared} bytes but the buffer has {actual} (truncated or extended)")
            }
            ErrorKind::CrcMismatch { stored, computed } => {
                write!(f, "stored {stored:#010x}, computed {computed:#010x}: the file is corrupted")
            }
            ErrorKind::BadTag { value } => write!(f, "unknown tag {value}"),
            ErrorKind::NotZero { value } => write!(f, "must be zero, found {value:#x}"),
            ErrorKind::Spec(e) => write!(f, "invalid layer stack: {e}"),
            ErrorKind::BadScale { value } => write!(f, "scale {value} is not finite and positive"),
            ErrorKind::BadZeroPoint { value } => write!(f, "zero point {value} is outside -128..=127"),
            ErrorKind::NotIdentity => f.write_str("an f16 model's tensors must have scale 1.0 and zero point 0"),
            ErrorKind::BadMultiplier { value } => write!(f, "multiplier {value} is neither 0 nor in 2^30..2^31"),
            ErrorKind::BadShift { value } => {
                write!(f, "shift {value} is outside {}..={}", super::layout::SHIFT_MIN, super::layout::SHIFT_MAX)
            }
            ErrorKind::WrongCount { expected, found } => {
                write!(f, "{found} elements where the layer's shapes need {expected}")
            }
            ErrorKind::WrongOffset { expected, found } => write!(f, "at offset {found}, expected {expected}"),
            ErrorKind::OutOfBounds { end, len } => write!(f, "ends at byte {end}, past the file's {len} bytes"),
            ErrorKind::TrailingData { expected_len } => {
                write!(f, "data after the last section; the file should be {expected_len} bytes")
            }
            ErrorKind::NotUtf8 { valid_up_to } => write!(f, "not UTF-8 after {valid_up_to} bytes"),
            ErrorKind::LabelCount { expected, found } => {
                write!(f, "{found} labels for {expected} outputs (give one per output, or none)")
            }
            ErrorKind::BadTransform { value } => {
                write!(f, "value {value} is not finite (or is a zero scale)")
            }
            ErrorKind::IdentityTransform => {
                f.write_str("the transform is the identity; such a model is written as format version 1")
            }
            ErrorKind::NeedlessGeometry => f.write_str(
                "no layer needs format version 3 (general conv geometry, average pooling, ReLU6); \
                 such a model is written as version 1 or 2",
            ),
            ErrorKind::WrongWeights => {
                f.write_str("the weights do not fit the layer (none for this kind, or another precision)")
            }
            ErrorKind::TooLarge { bytes } => write!(f, "the file would be {bytes} bytes, over 4 GiB"),
        }
    }
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "model file: {}", self.field)?;
        if let Some(layer) = self.layer {
            write!(f, " of layer {layer}")?;
        }
        write!(f, " at byte {}: {}", self.offset, self.kind)
    }
}

#[cfg(feature = "std")]
impl std::error::Error for FormatError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ErrorKind::Spec(e) => Some(e),
            _ => None,
        }
    }
}
