//! The model file: a versioned, little-endian, aligned binary that the firmware
//! uses in place (from flash) and the host writes.
//!
//! [`parse`] validates a whole file and returns a [`QuantModel`] whose weight
//! slices point straight into the given bytes: no copy, no allocation. With the
//! `alloc` feature, [`write`] produces the bytes of a [`QuantModel`], and
//! `parse(&write(m)?)? == *m`.
//!
//! # Layout, format version 1
//!
//! All integers and floats are little-endian; `f32` is IEEE binary32, `f16` is
//! IEEE binary16. Offsets are bytes from the start of the file.
//!
//! The file is canonical: every byte is determined by the model. Sections sit
//! at fixed places (see *Data area*), reserved fields and padding are zero, and
//! the parser rejects anything else, so `write(parse(b)) == b` for every file
//! `parse` accepts.
//!
//! ## Header (64 bytes, offset 0)
//!
//! | offset | size | type     | meaning                                                                 |
//! |-------:|-----:|----------|-------------------------------------------------------------------------|
//! |      0 |    8 | `[u8;8]` | magic `b"AXQMODEL"`                                                     |
//! |      8 |    4 | `u32`    | format version, [`VERSION`] (= 1)                                       |
//! |     12 |    4 | `u32`    | total file length in bytes; must equal the buffer length               |
//! |     16 |    4 | `u32`    | CRC-32 (ISO-HDLC, as zlib) of the whole file with these 4 bytes zeroed |
//! |     20 |    1 | `u8`     | precision: 0 = int8, 1 = f16                                            |
//! |     21 |    1 | `u8`     | layer count `n`, 1..=[`MAX_LAYERS`]                                     |
//! |     22 |    2 | `u16`    | reserved, 0                                                             |
//! |     24 |    4 | `u32`    | labels offset (0 when there are no labels)                             |
//! |     28 |    4 | `u32`    | labels length in bytes (0 = no labels)                                  |
//! |     32 |    4 | `u32`    | input shape tag: 0 = image, 1 = flat                                    |
//! |     36 |    4 | `u32`    | image: height; flat: feature count                                      |
//! |     40 |    4 | `u32`    | image: width; flat: 0                                                   |
//! |     44 |    4 | `u32`    | image: channels; flat: 0                                                |
//! |     48 |    4 | `f32`    | input scale (int8: finite, > 0; f16: exactly 1.0)                       |
//! |     52 |    4 | `i32`    | input zero point (int8: -128..=127; f16: 0)                             |
//! |     56 |    8 |          | reserved, 0                                                             |
//!
//! ## Layer records (`n` x 64 bytes, record `i` at `64 + 64 * i`)
//!
//! | offset | size | type      | meaning                                                              |
//! |-------:|-----:|-----------|----------------------------------------------------------------------|
//! |     +0 |    1 | `u8`      | kind: 0 Conv2D, 1 BatchNorm, 2 MaxPool2D, 3 Flatten, 4 Dense, 5 Dropout |
//! |     +1 |    1 | `u8`      | activation (Conv2D, Dense): 0 none, 1 relu, 2 softmax; else 0         |
//! |     +2 |    1 | `u8`      | padding (Conv2D): 0 valid, 1 same; else 0                             |
//! |     +3 |    1 |           | reserved, 0                                                          |
//! |     +4 |    4 | `u32`/`f32` | Conv2D filters, BatchNorm epsilon (`f32`), MaxPool2D pool, Dense units, Dropout rate (`f32`); Flatten 0 |
//! |     +8 |    4 | `u32`/`f32` | Conv2D kernel, BatchNorm momentum (`f32`), MaxPool2D stride; else 0 |
//! |    +12 |    4 | `u32`     | Conv2D stride; else 0                                                 |
//! |    +16 |    4 | `f32`     | output scale (int8: finite, > 0; f16: exactly 1.0)                   |
//! |    +20 |    4 | `i32`     | output zero point (int8: -128..=127; f16: 0)                         |
//! |    +24 |   40 | 5 x (`u32` offset, `u32` count) | the layer's sections, see below          |
//!
//! The hyperparameters must pass [`ModelSpec::new`]. Section slots (an unused
//! slot is offset 0, count 0; counts are in elements, not bytes):
//!
//! | slot | int8 model                          | f16 model              |
//! |-----:|-------------------------------------|------------------------|
//! |    0 | weights, `i8`                       | weights, `f16`         |
//! |    1 | weight scale, `f32`, per channel (finite, > 0) | bias, `f16`, per channel |
//! |    2 | bias, `i32`, per channel            | unused                 |
//! |    3 | multiplier, `i32`, per channel (0 or in `2^30..2^31`) | unused |
//! |    4 | shift, `i32`, per channel ([`SHIFT_MIN`]..=[`SHIFT_MAX`]) | unused |
//!
//! Only Conv2D, Dense and BatchNorm have sections; every other layer has all
//! five slots unused. Counts follow from the shapes (`in` = the layer's input):
//! Conv2D weights `filters * kernel * kernel * in.channels` (OHWI), channels
//! `filters`; Dense weights `units * in.features` (`[units][inputs]`), channels
//! `units`; BatchNorm weights and channels `in.channels` (see
//! [`crate::model`] for what the BatchNorm affine holds).
//!
//! ## Data area (from `64 + 64 * n`)
//!
//! The labels (when not empty), then each layer's used sections in layer order
//! and slot order. Each starts at the first multiple of [`SECTION_ALIGN`] (16)
//! at or after the end of the previous one (the first at `64 + 64 * n`), the
//! gaps are zero, and the file ends at the first multiple of 16 at or after
//! the last section (zero padded). The stored offsets must equal these places.
//!
//! Labels are UTF-8 class names separated by `\n` (no trailing newline): as
//! many as the model's output elements, or none at all.
//!
//! ## Alignment
//!
//! Sections are 16-aligned relative to the file start, so a buffer aligned to
//! 16 (recommended) or at least [`BUFFER_ALIGN`] (4, enough for `f32`, `i32`
//! and `f16` slices) yields typed slices in place. A less aligned buffer is
//! refused with [`ErrorKind::Misaligned`] rather than copied; on the host,
//! [`AlignedBytes`] holds a file read from disk.

// The parser reads little-endian fields and hands out `&[i32]`/`&[f32]`/`&[f16]`
// views of little-endian data in place: that is only right on a little-endian CPU.
#[cfg(target_endian = "big")]
compile_error!("shared::format reads the little-endian model file in place; big-endian targets are not supported");

mod error;
mod parse;
#[cfg(feature = "alloc")]
mod write;

pub use error::{ErrorKind, Field, FormatError, Section};
pub use parse::{declared_length, file_crc, parse};
#[cfg(feature = "alloc")]
pub use write::{write, AlignedBytes};

#[allow(unused_imports)] // for the docs above
use crate::{model::QuantModel, spec::ModelSpec, spec::MAX_LAYERS};

/// The first 8 bytes of every model file.
pub const MAGIC: [u8; 8] = *b"AXQMODEL";
/// The format version this code reads and writes.
pub const VERSION: u32 = 1;
/// Bytes of the fixed header.
pub const HEADER_LEN: usize = 64;
/// Bytes of one layer record.
pub const LAYER_RECORD_LEN: usize = 64;
/// Section slots per layer record.
pub const SECTION_SLOTS: usize = 5;
/// Alignment of every section, relative to the file start.
pub const SECTION_ALIGN: usize = 16;
/// The least alignment of the buffer start that [`parse`] accepts.
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
    pub const RESERVED1: usize = 56;
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
        super::HEADER_LEN + super::LAYER_RECORD_LEN * i
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
    pub const ACT_NONE: u8 = 0;
    pub const ACT_RELU: u8 = 1;
    pub const ACT_SOFTMAX: u8 = 2;
    pub const VALID: u8 = 0;
    pub const SAME: u8 = 1;
}

/// `n` rounded up to a multiple of [`SECTION_ALIGN`], without overflow (u64 math).
pub(crate) const fn align_up(n: u64) -> u64 {
    let a = SECTION_ALIGN as u64;
    n.saturating_add(a - 1) / a * a
}
