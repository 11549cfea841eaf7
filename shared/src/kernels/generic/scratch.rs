//! Kernel scratch sizes (CMSIS-NN's `*_get_buffer_size`): what a kernel
//! needs beside its input and output, planned into the arena by
//! [`crate::engine::plan`] and [`crate::band::plan_banded`] so that nothing
//! large lives on the stack.
//!
//! The rule: a kernel that needs scratch has a `*_scratch_bytes` function
//! here, a pure function of the layer's geometry, the same on every target
//! (so the desktop's plan is the device's byte for byte), and takes the
//! scratch as a `&mut [u8]` of at least that many bytes, any alignment (the
//! size includes the slack to align it).

use crate::geometry::ConvGeom;

/// Output pixels per tile of the Arm DSP int8 conv (`kernels::arm`'s tiles).
pub const DSP_TILE_PIXELS: usize = 6;
/// Filter taps that tile kernel widens per pass (a multiple of 8).
pub const DSP_TILE_TAPS: usize = 896;

/// u32 words of widened patches the DSP int8 conv holds for `g`: one pass
/// of up to [`DSP_TILE_TAPS`] taps, in whole pairs of quads, for
/// [`DSP_TILE_PIXELS`] pixels (two words a quad and pixel).
pub fn dsp_conv_words(g: &ConvGeom) -> usize {
    let taps = g.kernel_h.saturating_mul(g.kernel_w).saturating_mul(g.in_c).min(DSP_TILE_TAPS);
    taps.div_ceil(8).saturating_mul(4 * DSP_TILE_PIXELS)
}

/// The longest kernel row (bytes) the DSP int8 conv gathers before
/// widening: longer rows are mostly whole quads, which the general walk
/// widens straight from the input.
pub const DSP_STAGED_ROW: usize = 16;

/// u32 words in which the DSP int8 conv gathers one window's bytes before
/// widening them, for a kernel whose rows are short and not whole quads (a
/// first conv of 3 input channels: 3 x 3 x 3 taps in rows of 9 bytes) and
/// whose filter fits one pass; 0 for the others.
pub fn dsp_conv_staging_words(g: &ConvGeom) -> usize {
    let taps = g.kernel_h.saturating_mul(g.kernel_w).saturating_mul(g.in_c);
    let row = g.kernel_w.saturating_mul(g.in_c);
    if !row.is_multiple_of(4) && row <= DSP_STAGED_ROW && taps <= DSP_TILE_TAPS {
        taps.div_ceil(4)
    } else {
        0
    }
}

/// Output channels whose accumulators the DSP int8 conv keeps between the
/// passes of a filter longer than [`DSP_TILE_TAPS`].
pub const DSP_TILE_GROUP: usize = 64;

/// u32 words of those accumulators ([`DSP_TILE_GROUP`] channels of
/// [`DSP_TILE_PIXELS`] pixels) for a filter of more than one pass, 0 for
/// the others: in the arena, not on the stack (1.5 KB of every conv's frame
/// before).
pub fn dsp_conv_acc_words(g: &ConvGeom) -> usize {
    let taps = g.kernel_h.saturating_mul(g.kernel_w).saturating_mul(g.in_c);
    if taps > DSP_TILE_TAPS {
        DSP_TILE_GROUP * DSP_TILE_PIXELS
    } else {
        0
    }
}

/// Scratch bytes of the int8 Conv2D (`kernels::int8::conv2d_fast`): the DSP
/// kernel's widened patches (and staging words and multi-pass accumulators,
/// where it takes them) plus 3 bytes to align them to a word; for a
/// depthwise conv the weights reordered tap-major ([`depthwise_weights_bytes`]);
/// none for the other geometries, which run on the plain kernel.
pub fn conv2d_int8_scratch_bytes(g: &ConvGeom) -> usize {
    if g.is_depthwise() {
        depthwise_weights_bytes(g)
    } else if g.is_tileable() {
        dsp_conv_words(g)
            .saturating_add(dsp_conv_staging_words(g))
            .saturating_add(dsp_conv_acc_words(g))
            .saturating_mul(4)
            .saturating_add(3)
    } else {
        0
    }
}

/// Scratch bytes of the int8 ADD (`kernels::int8::add_fast`): on the Arm
/// DSP, one input's 256 scaled values, one word per byte value, plus 3 bytes
/// to align them to a word. Every model's scratch is the most any layer
/// takes, so next to a conv's patches this adds nothing.
pub const ADD_INT8_SCRATCH_BYTES: usize = 256 * 4 + 3;

/// The depthwise kernels' weights reordered `[tap][channel]` (from OHWI's
/// `[channel][tap]`), so that a word holds four channels of one tap.
pub fn depthwise_weights_bytes(g: &ConvGeom) -> usize {
    g.kernel_h.saturating_mul(g.kernel_w).saturating_mul(g.in_c)
}

/// The words of `scratch` from its first word-aligned byte (what a kernel
/// sized by this module casts its scratch to).
pub fn words(scratch: &mut [u8]) -> &mut [u32] {
    let skip = scratch.as_ptr().align_offset(4).min(scratch.len());
    let rest = &mut scratch[skip..];
    let n = rest.len() / 4 * 4;
    if n == 0 {
        // (An empty slice's dangling pointer need not be word-aligned.)
        return &mut [];
    }
    bytemuck::cast_slice_mut(&mut rest[..n])
}
