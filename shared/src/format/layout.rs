//! The model file's fixed layout: magic, version, sizes, field offsets and
//! tag values. A leaf: the parser, the writer and the errors read it.

use crate::spec::{Activation, Inputs, Layer};

/// The first 8 bytes of every model file.
pub const MAGIC: [u8; 8] = *b"AXQMODEL";
/// The newest format version this code reads and writes: 2 adds the input
/// transform; 3 adds a geometry record per layer (rectangular kernels and
/// strides, dilation, explicit padding), average pooling and ReLU6, and makes
/// the transform optional. A model is written in the oldest version that can
/// say it, so files without those keep their bytes from before.
pub const VERSION: u32 = 3;
/// The first version with a geometry record per layer.
pub const VERSION_GEOMETRY: u32 = 3;
/// The oldest format version this code reads.
pub const VERSION_MIN: u32 = 1;
/// Bytes of the fixed header.
pub const HEADER_LEN: usize = 64;
/// Bytes of one layer record.
pub const LAYER_RECORD_LEN: usize = 64;
/// Bytes of one layer's geometry record (version 3): twelve u32s, right
/// after the layer table. Conv2D: kernel width, stride width, dilation
/// height and width, pads top, bottom, left, right, groups; AveragePooling2D:
/// pool width, stride width, 0, 0, the pads, 0; every other layer: nine
/// zeros. Then, for every layer, the tensors it reads, each as tensor + 1
/// (tensor 0 is the model input, `i + 1` layer `i`'s output): its main input
/// (0: the previous layer's output) and its second input (Add and
/// Concatenate; 0: none), and a reserved zero.
pub const GEOMETRY_RECORD_LEN: usize = 48;
/// u32 fields of a geometry record.
pub const GEOMETRY_FIELDS: usize = GEOMETRY_RECORD_LEN / 4;
/// Section slots per layer record.
pub const SECTION_SLOTS: usize = 5;
/// Alignment of every section, relative to the file start.
pub const SECTION_ALIGN: usize = 16;
/// The least alignment of the buffer start that [`crate::format::parse`] accepts.
pub const BUFFER_ALIGN: usize = 4;
/// Smallest requantization shift accepted (QuantizeMultiplier gives `shift >= -31`).
pub const SHIFT_MIN: i32 = -31;
/// Largest requantization shift accepted (a left shift past 30 overflows any int32 accumulator).
pub const SHIFT_MAX: i32 = 30;

/// Byte offsets of the header fields, for tools and tests that patch files.
pub mod offsets {
    pub const MAGIC: usize = 0;
    pub const VERSION: usize = 8;
    pub const LENGTH: usize = 12;
    pub const CRC: usize = 16;
    pub const PRECISION: usize = 20;
    pub const LAYER_COUNT: usize = 21;
    pub const RESERVED0: usize = 22;
    pub const LABELS_OFFSET: usize = 24;
    pub const LABELS_LEN: usize = 28;
    pub const INPUT_SHAPE: usize = 32;
    pub const INPUT_SCALE: usize = 48;
    pub const INPUT_ZERO_POINT: usize = 52;
    /// Version 1: reserved (zero). Version 2: the input transform's offset and count.
    pub const RESERVED1: usize = 56;
    pub const TRANSFORM_OFFSET: usize = 56;
    pub const TRANSFORM_COUNT: usize = 60;
    /// Offsets inside a layer record.
    pub mod layer {
        pub const KIND: usize = 0;
        pub const ACTIVATION: usize = 1;
        pub const PADDING: usize = 2;
        pub const RESERVED: usize = 3;
        pub const PARAMS: usize = 4;
        pub const OUTPUT_SCALE: usize = 16;
        pub const OUTPUT_ZERO_POINT: usize = 20;
        /// Slot `s` is at `SECTIONS + 8 * s` (offset) and `SECTIONS + 8 * s + 4` (count).
        pub const SECTIONS: usize = 24;
    }
    /// Where layer `i`'s record starts.
    pub const fn layer_record(i: usize) -> usize {
        crate::format::layout::HEADER_LEN + crate::format::layout::LAYER_RECORD_LEN * i
    }
    /// Where layer `i`'s geometry record starts in a version 3 file of `n` layers.
    pub const fn geometry_record(n: usize, i: usize) -> usize {
        layer_record(n) + crate::format::layout::GEOMETRY_RECORD_LEN * i
    }
}

/// Tag values of the enums stored in the file.
pub(crate) mod tag {
    pub const INT8: u8 = 0;
    pub const F16: u8 = 1;
    pub const IMAGE: u32 = 0;
    pub const FLAT: u32 = 1;
    pub const CONV2D: u8 = 0;
    pub const BATCH_NORM: u8 = 1;
    pub const MAX_POOL2D: u8 = 2;
    pub const FLATTEN: u8 = 3;
    pub const DENSE: u8 = 4;
    pub const DROPOUT: u8 = 5;
    pub const AVG_POOL2D: u8 = 6;
    pub const GLOBAL_AVG_POOL: u8 = 7;
    pub const ADD: u8 = 8;
    pub const CONCAT: u8 = 9;
    pub const ACTIVATION: u8 = 10;
    pub const SOFTMAX: u8 = 11;
    pub const ACT_NONE: u8 = 0;
    pub const ACT_RELU: u8 = 1;
    pub const ACT_SOFTMAX: u8 = 2;
    pub const ACT_RELU6: u8 = 3;
    pub const VALID: u8 = 0;
    pub const SAME: u8 = 1;
    pub const EXPLICIT: u8 = 2;
}

/// Whether only a version 3 file can describe `layer` (the writer picks the
/// version by it; the parser refuses a version 3 file without such a layer).
pub(crate) fn layer_needs_geometry(layer: &Layer) -> bool {
    match layer {
        Layer::Conv2D(c) => !c.is_classic(),
        Layer::Dense { activation, .. } => *activation == Activation::Relu6,
        Layer::AvgPool2D(_)
        | Layer::GlobalAvgPool
        | Layer::Add { .. }
        | Layer::Concat
        | Layer::Activation(_)
        | Layer::Softmax => true,
        _ => false,
    }
}

/// Whether only a version 3 file can describe the model: a layer only it
/// describes, or a layer reading other tensors than a stack's (`inputs`
/// empty or one per layer).
pub(crate) fn needs_geometry(layers: &[Layer], inputs: &[Inputs]) -> bool {
    layers.iter().any(layer_needs_geometry) || inputs.iter().enumerate().any(|(i, r)| !r.is_stack(i))
}

/// The version a model is written in: the oldest that can say it (3 for a
/// layer or input only version 3 describes, 2 for an input transform other
/// than the identity, else 1), so files keep their bytes from before.
pub fn version_for(model: &crate::model::QuantModel<'_>) -> u32 {
    if needs_geometry(model.spec.layers(), model.spec.inputs()) {
        VERSION_GEOMETRY
    } else if model.preprocess.is_some_and(|t| !t.is_identity()) {
        2
    } else {
        1
    }
}

/// `n` rounded up to a multiple of [`SECTION_ALIGN`], without overflow (u64 math).
pub(crate) const fn align_up(n: u64) -> u64 {
    let a = SECTION_ALIGN as u64;
    n.saturating_add(a - 1) / a * a
}
