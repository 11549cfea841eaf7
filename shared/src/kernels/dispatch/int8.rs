//! The int8 variant pickers: each `*_fast` function gives exactly the bytes
//! of the plain kernel in [`crate::kernels::generic::int8`] and runs the best
//! variant for this CPU or target.

use crate::geometry::{ConvGeom, PoolGeom};
#[cfg(arm_dsp)]
use crate::kernels::arm;
#[cfg(not(arm_dsp))]
use crate::kernels::generic::int8::batch_norm_in_place;
#[cfg(not(arm_dsp))]
use crate::kernels::generic::int8::{conv2d_portable, dense_portable};
use crate::kernels::generic::int8::{DeadInputs, Int8Params, ThenBatchNorm};
#[cfg(all(feature = "std", x86_simd))]
use crate::kernels::x86::{self, int8 as x86_8, int8_avx2 as x86_a2, int8_winograd as x86_w};
use crate::model::Int8Weights;

/// Conv2D with the bytes of [`conv2d`](crate::kernels::generic::int8::conv2d), faster.
///
/// Under `std` on x86_64 the best of [`crate::kernels::x86::int8`]'s variants
/// is picked at run time (AVX-512 VNNI, else the portable source compiled for
/// AVX-512BW or AVX2): integer sums, so the instruction set cannot change the
/// bytes; the tests compare every variant with the plain kernel. On Arm cores
/// with the DSP extension (`cfg(arm_dsp)`, see build.rs) it is
/// `crate::kernels::arm`'s SMLAD kernel; elsewhere
/// [`crate::kernels::generic::int8::conv2d_portable`]. `scratch` holds at
/// least [`conv2d_scratch_bytes`]`(g)` bytes (any alignment).
pub fn conv2d_fast(
    g: &ConvGeom,
    p: &Int8Params,
    w: &Int8Weights<'_>,
    input: &[i8],
    output: &mut [i8],
    scratch: &mut [u8],
) {
    if g.is_depthwise() {
        #[cfg(arm_dsp)]
        return arm::depthwise_conv2d_dsp(g, p, w, input, output, scratch);
        #[cfg(not(arm_dsp))]
        return crate::kernels::generic::int8::depthwise_conv2d_portable(g, p, w, input, output, scratch);
    }
    #[cfg(arm_dsp)]
    if g.is_tileable() {
        return arm::conv2d_dsp(g, p, w, input, output, scratch);
    }
    #[cfg(arm_dsp)]
    if g.groups == 1 && g.dilation_h == 1 && g.dilation_w == 1 {
        let _ = scratch;
        return arm::conv2d_dsp_general(g, p, w, input, output);
    }
    if !g.is_square() {
        // Rectangular, dilated or heavily padded: the plain kernel takes every geometry.
        let _ = scratch;
        return crate::kernels::generic::int8::conv2d(g, p, w, input, output);
    }
    #[cfg(all(feature = "std", x86_simd))]
    {
        if x86::has_vnni() {
            // SAFETY: the CPU supports AVX-512F/BW/VNNI, checked just above.
            return unsafe { x86_8::conv2d_vnni(g, p, w, input, output) };
        }
        if x86::has_avx512bw() {
            // SAFETY: the CPU supports AVX-512F/BW, checked just above.
            return unsafe { x86_8::conv2d_avx512bw(g, p, w, input, output) };
        }
        if x86::has_avx2() {
            if x86_a2::patches_fit(g, p) {
                // SAFETY: the CPU supports AVX2, checked just above; the patches fit.
                return unsafe { x86_a2::conv2d_avx2_patch_pixels(g, p, w, None, input, output, 0, None) };
            }
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { x86_8::conv2d_avx2(g, p, w, input, output) };
        }
    }
    #[cfg(arm_dsp)]
    return arm::conv2d_dsp(g, p, w, input, output, scratch);
    #[cfg(not(arm_dsp))]
    {
        let _ = scratch;
        conv2d_portable(g, p, w, input, output)
    }
}

/// ADD with the bytes of [`add`](crate::kernels::generic::int8::add):
/// the Arm DSP kernels' output stage on those cores (one input's scalings
/// tabulated in `scratch`, of
/// [`ADD_INT8_SCRATCH_BYTES`](crate::kernels::generic::scratch::ADD_INT8_SCRATCH_BYTES)),
/// else the plain kernel.
pub fn add_fast(p: &crate::kernels::generic::int8::AddParams, a: &[i8], b: &[i8], out: &mut [i8], scratch: &mut [u8]) {
    #[cfg(arm_dsp)]
    return arm::add_dsp(p, a, b, out, scratch);
    #[cfg(not(arm_dsp))]
    {
        let _ = scratch;
        crate::kernels::generic::int8::add(p, a, b, out)
    }
}

/// Scratch bytes [`conv2d_fast`] takes for `g` (the Arm DSP kernel's widened
/// patches, sized the same on every target so that the desktop plans the
/// device's arena).
pub fn conv2d_scratch_bytes(g: &ConvGeom) -> usize {
    crate::kernels::generic::scratch::conv2d_int8_scratch_bytes(g)
}

/// Whether [`conv2d_rows`] can compute part of this layer's output rows on
/// this CPU (so a host may split the layer across threads).
pub fn can_split_conv(g: &ConvGeom) -> bool {
    #[cfg(all(feature = "std", x86_simd))]
    if x86::has_vnni() && g.is_square() && g.kernel() * g.kernel() <= x86_8::MAX_TAPS {
        return true;
    }
    let _ = g;
    false
}

/// Output rows `oy_first..` of [`conv2d`](crate::kernels::generic::int8::conv2d) (`output` holds whole rows), the
/// same bytes as the full kernel. Panics unless [`can_split_conv`].
pub fn conv2d_rows(
    g: &ConvGeom,
    p: &Int8Params,
    w: &Int8Weights<'_>,
    input: &[i8],
    output: &mut [i8],
    oy_first: usize,
) {
    assert!(can_split_conv(g), "conv2d_rows: not supported on this CPU");
    #[cfg(all(feature = "std", x86_simd))]
    // SAFETY: `can_split_conv` checked AVX-512F/BW/VNNI and the kernel size.
    unsafe {
        x86_8::conv2d_vnni_rows(g, p, w, input, output, oy_first)
    }
    #[cfg(not(all(feature = "std", x86_simd)))]
    let _ = (p, w, input, output, oy_first);
}

/// The x86 kernels that take any run of a layer's output pixels.
#[cfg(all(feature = "std", x86_simd))]
#[derive(Clone, Copy, PartialEq, Eq)]
enum PixelKernel {
    /// [`x86_8::conv2d_vnni_patch_pixels`].
    Vnni,
    /// [`x86_a2::conv2d_avx2_patch_pixels`], where there is no VNNI.
    Avx2,
}

/// Which of them serves this layer on this CPU, if one does: the one place
/// [`can_split_conv_pixels`], [`conv2d_pixels`], [`fuses_batch_norm`] and
/// [`conv_pixel_jobs_per_thread`] read the CPU's features from.
#[cfg(all(feature = "std", x86_simd))]
fn pixel_kernel(g: &ConvGeom, p: &Int8Params) -> Option<PixelKernel> {
    if x86::has_vnni() {
        (g.is_square() && x86_8::patches_fit(g, p)).then_some(PixelKernel::Vnni)
    } else {
        (x86::has_avx2() && x86_a2::patches_fit(g, p)).then_some(PixelKernel::Avx2)
    }
}

/// Whether [`conv2d_pixels`] can compute any run of this layer's output
/// pixels on this CPU (a finer cut between threads than whole rows).
pub fn can_split_conv_pixels(g: &ConvGeom, p: &Int8Params) -> bool {
    #[cfg(all(feature = "std", x86_simd))]
    return pixel_kernel(g, p).is_some();
    #[cfg(not(all(feature = "std", x86_simd)))]
    {
        let _ = (g, p);
        false
    }
}

/// What a conv's pixel kernel ([`conv2d_pixels`]) reads besides the filters
/// as stored: built once per model ([`build_pixel_filters`]; the host lends
/// them, `host_layouts::PixelFilterCopies`) rather than by every call, as TFLite
/// Micro's Prepare computes an op's constants once. Each part is empty where
/// this CPU's kernel for the layer does not read it.
#[derive(Clone, Copy, Debug, Default)]
pub struct PixelFilters<'a> {
    /// VNNI: each filter's byte sum, the correction for its offset pixels.
    pub sums: &'a [i32],
    /// VNNI's broadcast kernel: the filters, 4 taps of 16 channels a vector.
    pub packed: &'a [i8],
    /// AVX2's broadcast kernel: the filters widened, 2 taps of 8 channels a vector.
    pub widened: &'a [i16],
}

impl PixelFilters<'_> {
    /// Whether no part holds anything (nothing lent for the layer).
    pub fn is_empty(&self) -> bool {
        self.sums.is_empty() && self.packed.is_empty() && self.widened.is_empty()
    }
}

/// Element counts of a layer's [`PixelFilters`] parts on this CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PixelFilterLens {
    pub sums: usize,
    pub packed: usize,
    pub widened: usize,
}

/// The lengths of a layer's [`PixelFilters`] for this CPU's pixel kernel
/// (all 0 where none serves the layer or it reads none).
pub fn pixel_filter_lens(g: &ConvGeom, p: &Int8Params) -> PixelFilterLens {
    #[cfg(all(feature = "std", x86_simd))]
    match pixel_kernel(g, p) {
        Some(PixelKernel::Vnni) => {
            let (sums, packed) = x86_8::patch_filter_lens(g);
            return PixelFilterLens { sums, packed, widened: 0 };
        }
        Some(PixelKernel::Avx2) => return PixelFilterLens { widened: x86_a2::broadcast_len(g), ..Default::default() },
        None => {}
    }
    let _ = (g, p);
    PixelFilterLens::default()
}

/// Build a layer's [`PixelFilters`] parts, of [`pixel_filter_lens`] (asserted).
pub fn build_pixel_filters(
    g: &ConvGeom,
    p: &Int8Params,
    w: &Int8Weights<'_>,
    sums: &mut [i32],
    packed: &mut [i8],
    widened: &mut [i16],
) {
    let lens = PixelFilterLens { sums: sums.len(), packed: packed.len(), widened: widened.len() };
    assert_eq!(lens, pixel_filter_lens(g, p), "build_pixel_filters: lengths");
    #[cfg(all(feature = "std", x86_simd))]
    match pixel_kernel(g, p) {
        // SAFETY: `pixel_kernel` checked AVX-512F/BW/VNNI.
        Some(PixelKernel::Vnni) => unsafe { x86_8::build_patch_filters(g, w, sums, packed) },
        Some(PixelKernel::Avx2) if !widened.is_empty() => x86_a2::build_broadcast_filters(g, w, widened),
        _ => {}
    }
    let _ = w;
}

/// How many runs of output pixels per thread a layer cut for
/// [`conv2d_pixels`] should have. The AVX2 kernel's layers go in four runs
/// a thread, claimed as the threads free up: one run a thread left the layer
/// waiting on whichever core a neighbour slowed (on a shared 2-core Zen 3,
/// `int8_profile`'s sum of medians 22.1 -> 20.0 ms, six alternating pairs).
/// The VNNI kernel keeps one run a thread: four, on lent filter sums (no
/// per-call setup), measured no better on a Zen 4 (`int8_profile -- 300`,
/// three alternating runs, within the machine's 10 % noise).
pub fn conv_pixel_jobs_per_thread(g: &ConvGeom, p: &Int8Params) -> usize {
    #[cfg(all(feature = "std", x86_simd))]
    if pixel_kernel(g, p) == Some(PixelKernel::Avx2) {
        return 4;
    }
    let _ = (g, p);
    1
}

/// Whether [`conv2d_pixels`] should run this layer with the
/// BatchNormalization after it ([`ThenBatchNorm`]) on this CPU: it can
/// ([`can_split_conv_pixels`]), and that saves time, which it does unless
/// the separate BatchNormalization would look its values up in per-channel
/// tables (AVX-512BW, on a large tensor with few channels, like AlexNet's
/// conv1 and conv2); without AVX-512BW the separate one is the plain loop,
/// and fusing always saves its pass.
pub fn fuses_batch_norm(g: &ConvGeom, p: &Int8Params) -> bool {
    #[cfg(all(feature = "std", x86_simd))]
    if pixel_kernel(g, p).is_some() {
        return !x86::has_avx512bw() || !x86_8::batch_norm_tables(g.out_h * g.out_w, g.out_c);
    }
    let _ = (g, p);
    false
}

/// Output pixels `first..` (row-major) of [`conv2d`](crate::kernels::generic::int8::conv2d)
/// (`output` holds whole pixels), the same bytes as the full kernel, and
/// with `then` the bytes of that BatchNormalization applied to them after
/// (it has `g.out_c` channels; asserted). `lent`: the layer's
/// [`PixelFilters`] where built (their lengths asserted), else the call
/// builds what its kernel reads. Panics unless [`can_split_conv_pixels`].
#[allow(clippy::too_many_arguments)]
pub fn conv2d_pixels(
    g: &ConvGeom,
    p: &Int8Params,
    w: &Int8Weights<'_>,
    lent: Option<&PixelFilters<'_>>,
    input: &[i8],
    output: &mut [i8],
    first: usize,
    then: Option<&ThenBatchNorm<'_>>,
) {
    #[cfg(all(feature = "std", x86_simd))]
    match pixel_kernel(g, p) {
        Some(PixelKernel::Vnni) => {
            let lent = lent.map(|f| x86_8::PatchFilters { sums: f.sums, packed: f.packed });
            // SAFETY: `pixel_kernel` checked AVX-512F/BW/VNNI and that the patches fit.
            unsafe { x86_8::conv2d_vnni_patch_pixels(g, p, w, lent.as_ref(), input, output, first, then) }
        }
        Some(PixelKernel::Avx2) => {
            let widened = lent.map(|f| f.widened).filter(|u| !u.is_empty());
            // SAFETY: `pixel_kernel` checked AVX2 and that the patches fit.
            unsafe { x86_a2::conv2d_avx2_patch_pixels(g, p, w, widened, input, output, first, then) }
        }
        None => panic!("conv2d_pixels: not supported on this CPU"),
    }
    #[cfg(not(all(feature = "std", x86_simd)))]
    {
        let _ = (g, p, w, lent, input, output, first, then);
        panic!("conv2d_pixels: not supported on this CPU");
    }
}

/// Whether [`conv2d_winograd`] computes this layer on this CPU: an AVX2
/// core without VNNI, whose exact multiply-add (`vpmaddwd`) is half as wide
/// as VNNI's, so that 1.6-2.25x fewer products pay for the transforms; and
/// a 3x3 or 5x5 stride-1 layer the kernel takes (`x86::int8_winograd::Scheme`). Where it does, the host lends the
/// layer's [`transform_winograd_filters`] (`host_layouts::WinogradCopies`).
pub fn winograd_serves(g: &ConvGeom, p: &Int8Params) -> bool {
    #[cfg(all(feature = "std", x86_simd))]
    return !x86::has_vnni() && x86::has_avx2() && x86_w::serves(g, p);
    #[cfg(not(all(feature = "std", x86_simd)))]
    {
        let _ = (g, p);
        false
    }
}

/// i16 elements of [`transform_winograd_filters`]'s output for `g` (0 where
/// no kernel reads them).
pub fn winograd_filter_len(g: &ConvGeom) -> usize {
    #[cfg(all(feature = "std", x86_simd))]
    return x86_w::filter_len(g);
    #[cfg(not(all(feature = "std", x86_simd)))]
    {
        let _ = g;
        0
    }
}

/// The Winograd transform of a 3x3 or 5x5 layer's int8 filters, laid out for
/// [`conv2d_winograd`]; `u` has [`winograd_filter_len`] elements.
pub fn transform_winograd_filters(g: &ConvGeom, weights: &[i8], u: &mut [i16]) {
    #[cfg(all(feature = "std", x86_simd))]
    x86_w::transform_filters(g, weights, u);
    #[cfg(not(all(feature = "std", x86_simd)))]
    {
        let _ = (g, weights);
        assert!(u.is_empty(), "winograd: no kernel on this target");
    }
}

/// The Winograd output tiles of a layer [`winograd_serves`]: what
/// [`conv2d_winograd`]'s `tiles` range over.
pub fn winograd_tiles(g: &ConvGeom) -> usize {
    #[cfg(all(feature = "std", x86_simd))]
    return x86_w::tiles(g);
    #[cfg(not(all(feature = "std", x86_simd)))]
    {
        let _ = g;
        0
    }
}

/// Scratch bytes one [`conv2d_winograd`] call takes for `g` (0 where no
/// kernel runs it).
pub fn winograd_scratch_bytes(g: &ConvGeom) -> usize {
    #[cfg(all(feature = "std", x86_simd))]
    return x86_w::scratch_bytes(g);
    #[cfg(not(all(feature = "std", x86_simd)))]
    {
        let _ = g;
        0
    }
}

/// Output channels `couts` (from a multiple of 8) of the output pixels of
/// Winograd tiles `tiles` ([`winograd_tiles`]) of
/// [`conv2d`](crate::kernels::generic::int8::conv2d), the same bytes, through
/// the layer's [`transform_winograd_filters`] `u`; with `then`, the bytes of
/// that BatchNormalization applied to them after; `scratch` has
/// [`winograd_scratch_bytes`]`(g)` bytes. Panics unless [`winograd_serves`].
///
/// # Safety
/// `output` points at the layer's `g.output_len()` bytes, whose pixels of
/// `tiles` in channels `couts` nothing else reads or writes during the call.
#[allow(clippy::too_many_arguments)]
pub unsafe fn conv2d_winograd(
    g: &ConvGeom,
    p: &Int8Params,
    w: &Int8Weights<'_>,
    u: &[i16],
    input: &[i8],
    output: *mut i8,
    tiles: core::ops::Range<usize>,
    couts: core::ops::Range<usize>,
    then: Option<&ThenBatchNorm<'_>>,
    scratch: &mut [u8],
) {
    assert!(winograd_serves(g, p), "conv2d_winograd: not supported on this CPU");
    #[cfg(all(feature = "std", x86_simd))]
    // SAFETY: `winograd_serves` checked AVX2 and the geometry; `output`: the contract.
    unsafe {
        x86_w::conv2d_winograd_avx2(g, p, w, u, input, output, tiles, couts, then, scratch)
    }
    #[cfg(not(all(feature = "std", x86_simd)))]
    let _ = (w, u, input, output, tiles, couts, then, scratch);
}

/// Whether [`dense_units`] is available on this CPU.
pub fn can_split_dense() -> bool {
    #[cfg(all(feature = "std", x86_simd))]
    if x86::has_vnni() || x86::has_avx2() {
        return true;
    }
    false
}

/// Units `first..first + output.len()` of [`dense`](crate::kernels::generic::int8::dense) (a layer of
/// `w.bias.len()` units), the same bytes. Panics unless [`can_split_dense`].
pub fn dense_units(p: &Int8Params, w: &Int8Weights<'_>, input: &[i8], output: &mut [i8], first: usize) {
    assert!(can_split_dense(), "dense_units: not supported on this CPU");
    #[cfg(all(feature = "std", x86_simd))]
    if x86::has_vnni() {
        // SAFETY: `can_split_dense` checked AVX-512F/BW/VNNI.
        unsafe { x86_8::dense_vnni_units(p, w, input, output, first) }
    } else {
        // SAFETY: `can_split_dense` checked AVX2.
        unsafe { x86_a2::dense_avx2_units(p, w, input, output, first) }
    }
    #[cfg(not(all(feature = "std", x86_simd)))]
    let _ = (p, w, input, output, first);
}

/// Whether [`dense_units_input_major`] runs on this CPU for a layer whose
/// input has zero point `in_zp`.
pub fn can_skip_dense_inputs(in_zp: i32) -> bool {
    #[cfg(all(feature = "std", x86_simd))]
    if (x86::has_vnni() || x86::has_avx2()) && i8::try_from(in_zp).is_ok() {
        return true;
    }
    let _ = in_zp;
    false
}

/// [`dense_units`] from input-major weights (`wt`, the transpose of
/// `w.weights`), reading only the rows of inputs that are not the zero
/// point; the same bytes. Panics unless [`can_skip_dense_inputs`].
///
/// With `dead` ([`DeadInputs`]), the rows not read are those of inputs at
/// their own dead value; that runs on the AVX2 kernel, whose `vpmaddwd`
/// takes the live inputs' `x - value` (±255) where VNNI's byte products
/// would not, on VNNI cores too (a stream of weights, bound by memory).
pub fn dense_units_input_major(
    p: &Int8Params,
    w: &Int8Weights<'_>,
    wt: &[i8],
    input: &[i8],
    dead: Option<DeadInputs<'_>>,
    output: &mut [i8],
    first: usize,
) {
    assert!(can_skip_dense_inputs(p.in_zp), "dense_units_input_major: not supported on this CPU");
    #[cfg(all(feature = "std", x86_simd))]
    if x86::has_vnni() && dead.is_none() {
        // SAFETY: `can_skip_dense_inputs` checked AVX-512F/BW/VNNI and the zero point.
        unsafe { x86_8::dense_vnni_input_major_units(p, w, wt, input, output, first) }
    } else {
        // SAFETY: `can_skip_dense_inputs` checked AVX2 (which every VNNI core has) and the zero point.
        unsafe { x86_a2::dense_avx2_input_major_units(p, w, wt, input, dead, output, first) }
    }
    #[cfg(not(all(feature = "std", x86_simd)))]
    let _ = (p, w, wt, input, dead, output, first);
}

/// Dense with the bytes of [`dense`](crate::kernels::generic::int8::dense),
/// faster: x86 SIMD under `std`, `crate::kernels::arm`'s SMLAD kernel on
/// Arm cores with DSP, elsewhere
/// [`crate::kernels::generic::int8::dense_portable`].
pub fn dense_fast(p: &Int8Params, w: &Int8Weights<'_>, input: &[i8], output: &mut [i8]) {
    #[cfg(all(feature = "std", x86_simd))]
    {
        if x86::has_vnni() {
            // SAFETY: the CPU supports AVX-512F/BW/VNNI, checked just above.
            return unsafe { x86_8::dense_vnni(p, w, input, output) };
        }
        if x86::has_avx512bw() {
            // SAFETY: the CPU supports AVX-512F/BW, checked just above.
            return unsafe { x86_8::dense_avx512bw(p, w, input, output) };
        }
        if x86::has_avx2() {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { x86_a2::dense_avx2_units(p, w, input, output, 0) };
        }
    }
    #[cfg(arm_dsp)]
    return arm::dense_dsp(p, w, input, output);
    #[cfg(not(arm_dsp))]
    dense_portable(p, w, input, output)
}

/// [`batch_norm_in_place`] with the same bytes, 16 channels at a time under
/// `std` on x86_64 with AVX-512BW ([`x86_8::batch_norm_in_place_avx512`]);
/// on Arm cores with DSP through `crate::kernels::arm`'s shorter output stage.
pub fn batch_norm_in_place_fast(p: &Int8Params, w: &Int8Weights<'_>, data: &mut [i8]) {
    #[cfg(all(feature = "std", x86_simd))]
    if x86::has_avx512bw() {
        // SAFETY: the CPU supports AVX-512F/BW, checked just above.
        return unsafe { x86_8::batch_norm_in_place_avx512(p, w, data) };
    }
    #[cfg(arm_dsp)]
    return arm::batch_norm_in_place_dsp(p, w, data);
    #[cfg(not(arm_dsp))]
    batch_norm_in_place(p, w, data)
}

/// [`max_pool`](crate::kernels::generic::int8::max_pool) with the same bytes: 64 channels per
/// vector where an x86 CPU has AVX-512BW, four at a time on Arm cores with DSP
/// (`arm::max_pool_dsp`).
pub fn max_pool_fast(g: &PoolGeom, input: &[i8], output: &mut [i8]) {
    #[cfg(all(feature = "std", x86_simd))]
    if x86::has_avx512bw() {
        // SAFETY: the CPU supports AVX-512F and AVX-512BW, checked just above.
        return unsafe { x86_8::max_pool_avx512(g, input, output) };
    }
    #[cfg(all(feature = "std", x86_simd))]
    if x86::has_avx2() {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { x86_a2::max_pool_avx2(g, input, output) };
    }
    #[cfg(arm_dsp)]
    return arm::max_pool_dsp(g, input, output);
    #[cfg(not(arm_dsp))]
    crate::kernels::generic::int8::max_pool(g, input, output)
}
