//! The model file: a versioned, little-endian, aligned binary that the firmware
//! uses in place (from flash) and the host writes.
//!
//! [`parse`] validates a whole file and returns a [`QuantModel`] whose weight
//! slices point straight into the given bytes: no copy, no allocation. With the
//! `alloc` feature, [`fn@write`] produces the bytes of a [`QuantModel`], and
//! `parse(&write(m)?)? == *m`.
//!
//! # Layout, format versions 1 and 2
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
//! |      8 |    4 | `u32`    | format version: 2 ([`VERSION`]) with an input transform, else 1         |
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
//! |     56 |    4 | `u32`    | version 1: reserved, 0; version 2: input transform offset              |
//! |     60 |    4 | `u32`    | version 1: reserved, 0; version 2: input transform count (`2 * channels`) |
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
//! Version 3 adds kinds 6 AveragePooling2D, 7 GlobalAveragePooling2D, 8 Add,
//! 9 Concatenate, 10 Activation and 11 Softmax (a layer of its own; no
//! hyperparameters, its int8 output quantized 1/256, -128).
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
//! The labels (when not empty), the input transform (version 2), then each layer's used sections in layer order
//! and slot order. Each starts at the first multiple of [`SECTION_ALIGN`] (16)
//! at or after the end of the previous one (the first at `64 + 64 * n`), the
//! gaps are zero, and the file ends at the first multiple of 16 at or after
//! the last section (zero padded). The stored offsets must equal these places.
//!
//! Labels are UTF-8 class names separated by `\n` (no trailing newline): as
//! many as the model's output elements, or none at all.
//!
//! The input transform (version 2 only) is `2 * c` `f32`s, `c` the input's
//! channels: the scales, then the offsets, of `x = pixel * scale + offset` with
//! pixels in [0, 1] (see [`crate::model::InputTransform`]). Values are finite,
//! scales non-zero, and the transform is not the identity: a model without
//! one is a version-1 file, so files from before version 2 keep their bytes.
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
pub(crate) mod layout;
mod parse;
#[cfg(feature = "alloc")]
mod write;

pub use error::{ErrorKind, Field, FormatError, Section};
pub use layout::{
    offsets, version_for, BUFFER_ALIGN, HEADER_LEN, LAYER_RECORD_LEN, MAGIC, SECTION_ALIGN, SECTION_SLOTS, SHIFT_MAX,
    SHIFT_MIN, VERSION,
};
pub use parse::{declared_length, file_crc, parse, parse_into};
#[cfg(feature = "alloc")]
pub use write::{write, AlignedBytes};

#[allow(unused_imports)] // for the docs above
use crate::{model::QuantModel, spec::ModelSpec, spec::MAX_LAYERS};
