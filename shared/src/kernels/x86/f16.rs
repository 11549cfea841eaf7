//! x86_64 F16C/AVX variants of the f16 kernels, each tested
//! (tests/kernels_simd.rs) to give exactly the bits of the plain kernel in
//! [`crate::kernels::generic::f16`].
//!
//! The rule is one sequential f32 sum per output, so outputs are vectorised
//! *across output channels*: lane `j` of a vector holds output channel
//! `oc + j`'s accumulator and adds its products in exactly the plain
//! kernel's order (separate multiply and add, never an FMA).

// Register blocks index the same way the formulas do.
#![allow(clippy::needless_range_loop)]

use core::arch::x86_64::*;

use half::f16;

use crate::geometry::ConvGeom;
use crate::kernels::generic::f16::conv2d_rows_by;
use crate::kernels::generic::pool::for_each_window;
use crate::model::F16Weights;

// ---------------------------------------------------------------------------
// f16 with F16C.

/// Output channels per f16 vector (one AVX `__m256` of f32 accumulators).
const FC: usize = 8;
/// Output pixels per f16 register block.
const FP: usize = 4;
/// The most f16 weights [`f16_conv2d_f16c`] transposes on the stack
/// (`FC` filters of up to this many / `FC` elements each).
const F16_PACK: usize = 8 * 4096;

/// Widen one f16 to f32 with F16C.
#[target_feature(enable = "avx2,f16c")]
#[inline]
fn widen1(v: f16) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(v.to_bits() as i32)))
}

/// The f32 whose f16 is [`crate::kernels::generic::f16::CANONICAL_NAN`].
const CANONICAL_NAN_F32: f32 = f32::from_bits(0x7FC0_0000);

/// Round 8 f32 to f16 with F16C (round to nearest even, like `f16::from_f32`;
/// NaN lanes canonical, as [`crate::kernels::generic::f16::narrow`]).
#[target_feature(enable = "avx2,f16c")]
#[inline]
fn narrow8(v: __m256, out: &mut [u16; 8]) {
    let nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v);
    let v = _mm256_blendv_ps(v, _mm256_set1_ps(CANONICAL_NAN_F32), nan);
    let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
    // SAFETY: `out` is 16 writable bytes.
    unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), h) };
}

/// The plain f16 finish (ReLU as `acc < 0 -> 0`, NaN kept) on 8 lanes.
#[target_feature(enable = "avx2,f16c")]
#[inline]
fn relu8(v: __m256, relu: bool) -> __m256 {
    if relu {
        // Lanes with acc < 0 (ordered: false for NaN) become +0.0.
        let neg = _mm256_cmp_ps::<_CMP_LT_OQ>(v, _mm256_setzero_ps());
        _mm256_andnot_ps(neg, v)
    } else {
        v
    }
}

/// f16 Conv2D with the bits of [`crate::kernels::generic::f16::conv2d`], using F16C and AVX.
///
/// `FC` filters at a time are transposed (as f16) into a stack buffer so
/// that one vector load gives the weight of one tap for `FC` output
/// channels; `FP` pixels share each such load. Every lane adds its products
/// in the plain kernel's order: kernel row, then the row's taps in memory
/// order, then the bias.
///
/// # Safety
/// The CPU must support AVX2 and F16C.
#[target_feature(enable = "avx2,f16c")]
pub unsafe fn f16_conv2d_f16c(g: &ConvGeom, relu: bool, w: &F16Weights<'_>, input: &[f16], output: &mut [f16]) {
    assert!(output.len() == g.output_len(), "conv2d: activation length");
    // SAFETY: this function's contract.
    unsafe { f16_conv2d_f16c_rows(g, relu, w, input, output, 0) }
}

/// [`f16_conv2d_f16c`] for the output rows `oy_first..` that `output` holds
/// (`output.len()` a multiple of `out_w * out_c`).
///
/// # Safety
/// As [`f16_conv2d_f16c`].
#[target_feature(enable = "avx2,f16c")]
pub unsafe fn f16_conv2d_f16c_rows(
    g: &ConvGeom,
    relu: bool,
    w: &F16Weights<'_>,
    input: &[f16],
    output: &mut [f16],
    oy_first: usize,
) {
    let row_len = g.out_w * g.out_c;
    let oy_end = oy_first + output.len() / row_len;
    assert!(output.len().is_multiple_of(row_len) && oy_end <= g.out_h, "conv2d: output rows");
    assert!(input.len() == g.input_len(), "conv2d: activation length");
    assert!(w.weights.len() == g.weights_len() && w.bias.len() == g.out_c, "conv2d: weight length");
    let (oc_begin, oc_end) = (0, g.out_c);
    let k = g.kernel();
    let cin = g.in_c;
    let filter = k * k * cin;
    if filter * FC > F16_PACK {
        return f16_conv2d_scalar(g, relu, w, input, output, oy_first..oy_end);
    }
    // packed[t * FC + j] = weight t of filter oc0 + j (0 past the last filter).
    let mut packed = [0u16; F16_PACK];
    let mut oc0 = oc_begin;
    while oc0 < oc_end {
        let nc = FC.min(oc_end - oc0);
        for j in 0..FC {
            if j < nc {
                let f = &w.weights[(oc0 + j) * filter..][..filter];
                for (t, v) in f.iter().enumerate() {
                    packed[t * FC + j] = v.to_bits();
                }
            } else {
                for t in 0..filter {
                    packed[t * FC + j] = 0;
                }
            }
        }
        let mut bias = [0u16; FC];
        for j in 0..nc {
            bias[j] = w.bias[oc0 + j].to_bits();
        }
        // SAFETY: 16 readable bytes.
        let bias = _mm256_cvtph_ps(unsafe { _mm_loadu_si128(bias.as_ptr().cast()) });
        for oy in oy_first..oy_end {
            let (ky0, ky1, iy0) = g.taps(oy, g.pad_top, g.in_h);
            let mut ox = 0;
            while ox < g.out_w {
                let np = FP.min(g.out_w - ox);
                // The block shares one window shape only if every pixel's taps agree.
                let (kx0, kx1, _) = g.taps(ox, g.pad_left, g.in_w);
                let same = (1..np).all(|q| {
                    let (a, b, _) = g.taps(ox + q, g.pad_left, g.in_w);
                    (a, b) == (kx0, kx1)
                });
                let np = if same { np } else { 1 };
                let mut acc = [_mm256_setzero_ps(); FP];
                let run = (kx1 - kx0) * cin;
                for ky in ky0..ky1 {
                    let iy = iy0 + (ky - ky0);
                    let wr = &packed[(ky * k + kx0) * cin * FC..][..run * FC];
                    let mut xs = [&input[..0]; FP];
                    for q in 0..np {
                        let (_, _, ix0) = g.taps(ox + q, g.pad_left, g.in_w);
                        xs[q] = &input[(iy * g.in_w + ix0) * cin..][..run];
                    }
                    for i in 0..run {
                        // SAFETY: `wr` has `run * FC` elements, so 8 from `i * FC`.
                        let wv = _mm256_cvtph_ps(unsafe { _mm_loadu_si128(wr.as_ptr().add(i * FC).cast()) });
                        for q in 0..np {
                            let xv = _mm256_set1_ps(widen1(xs[q][i]));
                            // A product of two f16 values is exact in f32; separate add.
                            acc[q] = _mm256_add_ps(acc[q], _mm256_mul_ps(wv, xv));
                        }
                    }
                }
                for q in 0..np {
                    let v = relu8(_mm256_add_ps(acc[q], bias), relu);
                    let mut h = [0u16; 8];
                    narrow8(v, &mut h);
                    let out = &mut output[((oy - oy_first) * g.out_w + ox + q) * g.out_c + oc0..][..nc];
                    for j in 0..nc {
                        out[j] = f16::from_bits(h[j]);
                    }
                }
                ox += np;
            }
        }
        oc0 += nc;
    }
}

/// The plain f16 conv loop ([`conv2d_rows_by`], its order and its
/// rounding) with F16C conversions, for filters too large to pack.
#[target_feature(enable = "avx2,f16c")]
fn f16_conv2d_scalar(
    g: &ConvGeom,
    relu: bool,
    w: &F16Weights<'_>,
    input: &[f16],
    output: &mut [f16],
    rows: core::ops::Range<usize>,
) {
    let narrow = |v: f32| {
        let mut h = [0u16; 8];
        narrow8(_mm256_set1_ps(v), &mut h);
        f16::from_bits(h[0])
    };
    conv2d_rows_by(g, relu, w, input, output, rows, |v| widen1(v), narrow)
}

/// Units of one f16 dense block (each its own sequential sum).
const FU: usize = 8;
/// Inputs per f16 dense chunk.
const FK: usize = 64;

/// f16 Dense with the bits of [`crate::kernels::generic::f16::dense`], using F16C: `FU` units
/// at a time, their weights transposed chunk by chunk so each lane is one
/// unit adding its products in input order.
///
/// # Safety
/// The CPU must support AVX2 and F16C.
#[target_feature(enable = "avx2,f16c")]
pub unsafe fn f16_dense_f16c(relu: bool, w: &F16Weights<'_>, input: &[f16], output: &mut [f16]) {
    let n = input.len();
    let units = output.len();
    assert!(w.weights.len() == n * units && w.bias.len() == units, "dense: weight length");
    let mut xf = [0.0f32; FK];
    let mut u0 = 0;
    while u0 < units {
        let nu = FU.min(units - u0);
        let mut acc = _mm256_setzero_ps();
        let mut i0 = 0;
        while i0 < n {
            let m = FK.min(n - i0);
            for (d, s) in xf[..m].iter_mut().zip(&input[i0..i0 + m]) {
                *d = widen1(*s);
            }
            // t[i][j] = weight (u0 + j, i0 + i) as f32.
            let mut t = [[0.0f32; FU]; FK];
            for j in 0..nu {
                let row = &w.weights[(u0 + j) * n + i0..][..m];
                let mut i = 0;
                while i + 8 <= m {
                    // SAFETY: 8 elements of `row` from `i`.
                    let v = _mm256_cvtph_ps(unsafe { _mm_loadu_si128(row.as_ptr().add(i).cast()) });
                    let mut f = [0.0f32; 8];
                    // SAFETY: 32 writable bytes.
                    unsafe { _mm256_storeu_ps(f.as_mut_ptr(), v) };
                    for q in 0..8 {
                        t[i + q][j] = f[q];
                    }
                    i += 8;
                }
                for q in i..m {
                    t[q][j] = widen1(row[q]);
                }
            }
            for i in 0..m {
                // SAFETY: 8 readable f32.
                let wv = unsafe { _mm256_loadu_ps(t[i].as_ptr()) };
                acc = _mm256_add_ps(acc, _mm256_mul_ps(wv, _mm256_set1_ps(xf[i])));
            }
            i0 += m;
        }
        let mut b = [0u16; FU];
        for j in 0..nu {
            b[j] = w.bias[u0 + j].to_bits();
        }
        // SAFETY: 16 readable bytes.
        let bv = _mm256_cvtph_ps(unsafe { _mm_loadu_si128(b.as_ptr().cast()) });
        let mut h = [0u16; 8];
        narrow8(relu8(_mm256_add_ps(acc, bv), relu), &mut h);
        for j in 0..nu {
            output[u0 + j] = f16::from_bits(h[j]);
        }
        u0 += nu;
    }
}

// ---------------------------------------------------------------------------
// f16 with AVX-512: 16 output channels per vector, up to 8 pixels per block.

/// Output channels per AVX-512 f16 vector (one `__m512` of f32 accumulators).
const ZC: usize = 16;
/// Most output pixels per AVX-512 register block (8 accumulators + the weights).
const ZP: usize = 8;
/// The most weights [`f16_conv2d_avx512_rows`] transposes and widens on the
/// stack (`ZC` filters of up to this many / `ZC` elements each: 256 KiB of f32).
const Z_PACK: usize = ZC * 4096;
/// The longest in-image run of one kernel row (`kernel * in_c` elements) it widens on the stack.
const Z_RUN: usize = 2048;

/// Whether [`f16_conv2d_avx512_rows`] takes this geometry (its stack buffers
/// hold the filter and one kernel row); else the F16C kernel runs.
pub fn avx512_conv_fits(g: &ConvGeom) -> bool {
    g.kernel() * g.kernel() * g.in_c * ZC <= Z_PACK && g.kernel() * g.in_c <= Z_RUN
}

/// Widen `src` (f16) into `dst` (f32) with AVX-512.
#[target_feature(enable = "avx512f,avx2,f16c")]
#[inline]
fn widen_run(src: &[f16], dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    let mut i = 0;
    while i + ZC <= n {
        // SAFETY: 16 f16 readable from `src[i..]`, 16 f32 writable at `dst[i..]`.
        unsafe {
            let v = _mm512_cvtph_ps(_mm256_loadu_si256(src.as_ptr().add(i).cast()));
            _mm512_storeu_ps(dst.as_mut_ptr().add(i), v);
        }
        i += ZC;
    }
    for j in i..n {
        dst[j] = widen1(src[j]);
    }
}

/// Up to 16 f16 biases widened into one vector (zero past `bias.len()`).
#[target_feature(enable = "avx512f,avx2,f16c")]
#[inline]
fn bias16(bias: &[f16]) -> __m512 {
    let mut b = [0u16; ZC];
    for (d, s) in b.iter_mut().zip(bias) {
        *d = s.to_bits();
    }
    // SAFETY: 32 readable bytes.
    _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(b.as_ptr().cast()) })
}

/// NaN lanes of `v` as the canonical NaN (the f32 that narrows to
/// [`crate::kernels::generic::f16::CANONICAL_NAN`]).
#[target_feature(enable = "avx512f,avx2,f16c")]
#[inline]
fn canonical_nan16(v: __m512) -> __m512 {
    let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v);
    _mm512_mask_mov_ps(v, nan, _mm512_set1_ps(CANONICAL_NAN_F32))
}

/// The plain f16 finish on 16 lanes: `acc + bias`, ReLU as `v < 0 -> +0`
/// (ordered: NaN kept), one rounding to f16; the first `out.len()` lanes stored.
#[target_feature(enable = "avx512f,avx2,f16c")]
#[inline]
fn finish16(acc: __m512, bias: __m512, relu: bool, out: &mut [f16]) {
    let mut v = _mm512_add_ps(acc, bias);
    if relu {
        let neg = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(v, _mm512_setzero_ps());
        v = _mm512_mask_mov_ps(v, neg, _mm512_setzero_ps());
    }
    let v = canonical_nan16(v);
    let mut bits = [0u16; ZC];
    // SAFETY: 32 writable bytes.
    unsafe { _mm256_storeu_si256(bits.as_mut_ptr().cast(), _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v)) };
    for (o, h) in out.iter_mut().zip(bits) {
        *o = f16::from_bits(h);
    }
}

/// f16 Conv2D with the bits of [`crate::kernels::generic::f16::conv2d`], using AVX-512 for the
/// output rows `oy_first..` that `output` holds: like [`f16_conv2d_f16c_rows`], but 16 filters
/// per vector and up to 8 pixels per register block, each pixel's input row widened to f32 once
/// per block and broadcast from memory. Every lane keeps the plain summation order (separate
/// multiply and add: the product of two f16 values is exact in f32, and keeping the add apart
/// keeps NaN propagation identical too). Geometries [`avx512_conv_fits`] refuses go to
/// [`f16_conv2d_f16c_rows`].
///
/// # Safety
/// The CPU must support AVX-512F, AVX2 and F16C.
#[target_feature(enable = "avx512f,avx2,f16c")]
pub unsafe fn f16_conv2d_avx512_rows(
    g: &ConvGeom,
    relu: bool,
    w: &F16Weights<'_>,
    input: &[f16],
    output: &mut [f16],
    oy_first: usize,
) {
    if !avx512_conv_fits(g) {
        // SAFETY: AVX2 and F16C are part of this function's contract.
        return unsafe { f16_conv2d_f16c_rows(g, relu, w, input, output, oy_first) };
    }
    let row_len = g.out_w * g.out_c;
    let oy_end = oy_first + output.len() / row_len;
    assert!(output.len().is_multiple_of(row_len) && oy_end <= g.out_h, "conv2d: output rows");
    assert!(input.len() == g.input_len(), "conv2d: activation length");
    assert!(w.weights.len() == g.weights_len() && w.bias.len() == g.out_c, "conv2d: weight length");
    let k = g.kernel();
    let cin = g.in_c;
    let filter = k * k * cin;
    // packed[t * ZC + j] = weight t of filter oc0 + j widened to f32 (exact; 0
    // past the last filter): widened once per filter group, not once per
    // pixel block (the conversion shares the FP pipes with the adds).
    let mut packed = [0.0f32; Z_PACK];
    let mut xs = [[0.0f32; Z_RUN]; ZP];
    let mut oc0 = 0;
    while oc0 < g.out_c {
        let nc = ZC.min(g.out_c - oc0);
        for j in 0..ZC {
            for t in 0..filter {
                packed[t * ZC + j] = if j < nc { widen1(w.weights[(oc0 + j) * filter + t]) } else { 0.0 };
            }
        }
        let bias = bias16(&w.bias[oc0..oc0 + nc]);
        let out = Block { g, relu, bias, oc0, nc, oy_first };
        // Pixels whose windows the image edge clips alike (runs of rows times
        // runs of columns) share register blocks, across rows too: an edge
        // column then fills blocks of 8 instead of one pixel at a time, whose
        // lone accumulator would wait on every add.
        let mut r0 = oy_first;
        while r0 < oy_end {
            let r1 = same_taps_end(g, r0, oy_end, g.pad_top, g.in_h);
            let mut c0 = 0;
            while c0 < g.out_w {
                let c1 = same_taps_end(g, c0, g.out_w, g.pad_left, g.in_w);
                let (cols, count) = (c1 - c0, (r1 - r0) * (c1 - c0));
                let blocks = count.div_ceil(ZP);
                for b in 0..blocks {
                    let (first, end) = (count * b / blocks, count * (b + 1) / blocks);
                    let mut px = [(0usize, 0usize); ZP];
                    for (slot, i) in px.iter_mut().zip(first..end) {
                        *slot = (r0 + i / cols, c0 + i % cols);
                    }
                    macro_rules! go {
                        ($($n:literal)*) => {
                            match end - first {
                                $($n => conv_block::<$n>(&out, &packed, input, &mut xs, output, &px),)*
                                _ => unreachable!(),
                            }
                        };
                    }
                    go!(1 2 3 4 5 6 7 8);
                }
                c0 = c1;
            }
            r0 = r1;
        }
        oc0 += nc;
    }
}

/// The end of the run of output positions from `o0` (before `limit`) whose
/// windows have the same in-image taps as `o0`'s (taps are monotone, so
/// such positions are contiguous).
fn same_taps_end(g: &ConvGeom, o0: usize, limit: usize, pad: usize, n: usize) -> usize {
    let (a, b, _) = g.taps(o0, pad, n);
    let mut o = o0 + 1;
    while o < limit && {
        let (c, d, _) = g.taps(o, pad, n);
        (c, d) == (a, b)
    } {
        o += 1;
    }
    o
}

/// What every register block of one filter group shares.
struct Block<'g> {
    g: &'g ConvGeom,
    relu: bool,
    bias: __m512,
    oc0: usize,
    nc: usize,
    oy_first: usize,
}

/// The `NP` output pixels `px` (row, column), all with one window shape,
/// for the filter group of `b`.
#[target_feature(enable = "avx512f,avx2,f16c")]
#[inline]
fn conv_block<const NP: usize>(
    b: &Block<'_>,
    packed: &[f32; Z_PACK],
    input: &[f16],
    xs: &mut [[f32; Z_RUN]; ZP],
    output: &mut [f16],
    px: &[(usize, usize); ZP],
) {
    let g = b.g;
    let cin = g.in_c;
    let (ky0, ky1, _) = g.taps(px[0].0, g.pad_top, g.in_h);
    let (kx0, kx1, _) = g.taps(px[0].1, g.pad_left, g.in_w);
    let run = (kx1 - kx0) * cin;
    // Where each pixel's first in-image kernel row starts in the input.
    let mut first = [0usize; NP];
    for (f, &(oy, ox)) in first.iter_mut().zip(px) {
        let (_, _, iy0) = g.taps(oy, g.pad_top, g.in_h);
        let (_, _, ix0) = g.taps(ox, g.pad_left, g.in_w);
        *f = (iy0 * g.in_w + ix0) * cin;
    }
    let mut acc = [_mm512_setzero_ps(); NP];
    for ky in ky0..ky1 {
        for q in 0..NP {
            widen_run(&input[first[q] + (ky - ky0) * g.in_w * cin..][..run], &mut xs[q][..run]);
        }
        let wr = &packed[(ky * g.kernel() + kx0) * cin * ZC..][..run * ZC];
        for i in 0..run {
            // SAFETY: `wr` has `run * ZC` elements, so 16 from `i * ZC`.
            let wv = unsafe { _mm512_loadu_ps(wr.as_ptr().add(i * ZC)) };
            for q in 0..NP {
                acc[q] = _mm512_add_ps(acc[q], _mm512_mul_ps(wv, _mm512_set1_ps(xs[q][i])));
            }
        }
    }
    for q in 0..NP {
        let at = ((px[q].0 - b.oy_first) * g.out_w + px[q].1) * g.out_c + b.oc0;
        finish16(acc[q], b.bias, b.relu, &mut output[at..at + b.nc]);
    }
}

/// [`f16_conv2d_avx512_rows`] for the whole output.
///
/// # Safety
/// As [`f16_conv2d_avx512_rows`].
#[target_feature(enable = "avx512f,avx2,f16c")]
pub unsafe fn f16_conv2d_avx512(g: &ConvGeom, relu: bool, w: &F16Weights<'_>, input: &[f16], output: &mut [f16]) {
    assert!(output.len() == g.output_len(), "conv2d: activation length");
    // SAFETY: this function's contract.
    unsafe { f16_conv2d_avx512_rows(g, relu, w, input, output, 0) }
}

/// Inputs per AVX-512 dense chunk: one 64-byte cache line of each unit's row.
const ZK: usize = 32;

/// Transpose a 16x16 block of f32 in registers: afterwards `r[c]` holds
/// what was column `c` (element `j` = old `r[j][c]`). Four rounds of 16
/// shuffles: 32-bit and 64-bit unpacks within 128-bit lanes, then two
/// rounds of 128-bit lane shuffles.
#[target_feature(enable = "avx512f")]
#[inline]
fn transpose16(r: &mut [__m512; 16]) {
    let mut t = [_mm512_setzero_ps(); 16];
    for p in 0..8 {
        t[2 * p] = _mm512_unpacklo_ps(r[2 * p], r[2 * p + 1]);
        t[2 * p + 1] = _mm512_unpackhi_ps(r[2 * p], r[2 * p + 1]);
    }
    // u[4 g + k], lane L: rows 4g..4g+4 of column 4L + k.
    let mut u = [_mm512_setzero_ps(); 16];
    for g in 0..4 {
        let (a, b, c, d) = (t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]);
        let pd = _mm512_castps_pd;
        u[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(a), pd(c)));
        u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(a), pd(c)));
        u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(b), pd(d)));
        u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(b), pd(d)));
    }
    for k in 0..4 {
        // Lanes (rows 0-3 L0, L2 | rows 4-7 L0, L2) and (L1, L3 | L1, L3), then rows 8-15 alike.
        let v0 = _mm512_shuffle_f32x4::<0x88>(u[k], u[4 + k]);
        let v1 = _mm512_shuffle_f32x4::<0xDD>(u[k], u[4 + k]);
        let w0 = _mm512_shuffle_f32x4::<0x88>(u[8 + k], u[12 + k]);
        let w1 = _mm512_shuffle_f32x4::<0xDD>(u[8 + k], u[12 + k]);
        r[k] = _mm512_shuffle_f32x4::<0x88>(v0, w0);
        r[8 + k] = _mm512_shuffle_f32x4::<0xDD>(v0, w0);
        r[4 + k] = _mm512_shuffle_f32x4::<0x88>(v1, w1);
        r[12 + k] = _mm512_shuffle_f32x4::<0xDD>(v1, w1);
    }
}

/// f16 Dense with the bits of [`crate::kernels::generic::f16::dense`], using AVX-512: 16 units
/// per vector (lane `j` is unit `u0 + j`, adding its products in input order). Each unit's
/// next 32 weights (one cache line of its `[units][inputs]` row) are loaded and widened, and
/// the 16x32 block is transposed in registers into per-input vectors of 16 units: every
/// weight byte is read from memory once, in cache-line runs, with no copy.
///
/// # Safety
/// The CPU must support AVX-512F, AVX-512BW, AVX2 and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx2,f16c")]
pub unsafe fn f16_dense_avx512(relu: bool, w: &F16Weights<'_>, input: &[f16], output: &mut [f16]) {
    let n = input.len();
    let units = output.len();
    assert!(w.weights.len() == n * units && w.bias.len() == units, "dense: weight length");
    let mut xs = [0.0f32; ZK];
    let mut u0 = 0;
    while u0 < units {
        let nu = ZC.min(units - u0);
        let mut acc = _mm512_setzero_ps();
        let mut i0 = 0;
        while i0 < n {
            let m = ZK.min(n - i0);
            widen_run(&input[i0..i0 + m], &mut xs[..m]);
            if nu == ZC && m == ZK {
                let rows = w.weights[u0 * n + i0..].as_ptr();
                // SAFETY: rows u0..u0+16 have 32 weights from i0 (`nu`, `m` full).
                acc = unsafe { dense_half::<0>(rows, n, &xs, acc) };
                acc = unsafe { dense_half::<1>(rows, n, &xs, acc) };
                i0 += m;
                continue;
            }
            // Weights (u0 + j, i0 + 0..32): the low 16 in lo[j], the high 16 in hi[j].
            let mut lo = [_mm512_setzero_ps(); 16];
            let mut hi = [_mm512_setzero_ps(); 16];
            let mask = if m == ZK { u32::MAX } else { (1u32 << m) - 1 };
            for j in 0..nu {
                let row = w.weights[(u0 + j) * n + i0..].as_ptr();
                // SAFETY: row u0 + j has `m` weights from i0; the masked load reads only those.
                let v = unsafe { _mm512_maskz_loadu_epi16(mask, row.cast()) };
                // Sixteen rows are too many streams for the hardware prefetcher to follow.
                _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(8 * ZK).cast());
                lo[j] = _mm512_cvtph_ps(_mm512_castsi512_si256(v));
                hi[j] = _mm512_cvtph_ps(_mm512_extracti64x4_epi64::<1>(v));
            }
            transpose16(&mut lo);
            for i in 0..m.min(16) {
                acc = _mm512_add_ps(acc, _mm512_mul_ps(lo[i], _mm512_set1_ps(xs[i])));
            }
            if m > 16 {
                transpose16(&mut hi);
                for i in 16..m {
                    acc = _mm512_add_ps(acc, _mm512_mul_ps(hi[i - 16], _mm512_set1_ps(xs[i])));
                }
            }
            i0 += m;
        }
        finish16(acc, bias16(&w.bias[u0..u0 + nu]), relu, &mut output[u0..u0 + nu]);
        u0 += nu;
    }
}

/// `acc` plus, in input order, inputs `16 H .. 16 H + 16` of one 32-input
/// chunk times the weights of 16 whole units (`rows`, `n` apart): the
/// full-block case of [`f16_dense_avx512`] with every loop fixed, so the 16
/// widened rows stay in registers through the transpose.
///
/// # Safety
/// AVX-512F, AVX2, F16C; `rows + j * n` starts 32 readable f16 for `j < 16`.
#[target_feature(enable = "avx512f,avx2,f16c")]
#[inline]
unsafe fn dense_half<const H: usize>(rows: *const f16, n: usize, xs: &[f32; ZK], mut acc: __m512) -> __m512 {
    let mut r = [_mm512_setzero_ps(); 16];
    for (j, v) in r.iter_mut().enumerate() {
        // SAFETY: the function's contract.
        let row = unsafe { rows.add(j * n + 16 * H) };
        *v = _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(row.cast()) });
        if H == 0 {
            // Sixteen rows are too many streams for the hardware prefetcher to follow.
            _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(8 * ZK).cast());
        }
    }
    transpose16(&mut r);
    for (i, v) in r.iter().enumerate() {
        acc = _mm512_add_ps(acc, _mm512_mul_ps(*v, _mm512_set1_ps(xs[16 * H + i])));
    }
    acc
}

/// Channels [`f16_batch_norm_in_place_avx512`] widens its scale and shift for on the stack.
const Z_BN: usize = 4096;

/// f16 BatchNormalization in place with the bits of
/// [`crate::kernels::generic::f16::batch_norm_in_place`], 16 channels per vector: the same
/// f32 product (exact), the same separate add, one rounding. More channels than `Z_BN`
/// go to the plain kernel.
///
/// # Safety
/// The CPU must support AVX-512F, AVX-512BW, AVX2 and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx2,f16c")]
pub unsafe fn f16_batch_norm_in_place_avx512(w: &F16Weights<'_>, data: &mut [f16]) {
    let c = w.weights.len();
    assert!(c > 0 && data.len().is_multiple_of(c) && w.bias.len() == c, "batch_norm: channels");
    if c > Z_BN {
        return crate::kernels::generic::f16::batch_norm_in_place(w, data);
    }
    let mut scale = [0.0f32; Z_BN];
    let mut shift = [0.0f32; Z_BN];
    widen_run(w.weights, &mut scale[..c]);
    widen_run(w.bias, &mut shift[..c]);
    for px in data.chunks_exact_mut(c) {
        let mut ch = 0;
        while ch < c {
            let m = ZC.min(c - ch);
            let mask: __mmask16 = if m == ZC { 0xffff } else { (1u16 << m) - 1 };
            // SAFETY: `m` f16 at `px[ch..]`, `m` f32 at `scale[ch..]`/`shift[ch..]`; masked loads and store.
            unsafe {
                let x = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, px.as_ptr().add(ch).cast()));
                let s = _mm512_maskz_loadu_ps(mask, scale.as_ptr().add(ch));
                let b = _mm512_maskz_loadu_ps(mask, shift.as_ptr().add(ch));
                let y = canonical_nan16(_mm512_add_ps(_mm512_mul_ps(x, s), b));
                let h = _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(y);
                _mm256_mask_storeu_epi16(px.as_mut_ptr().add(ch).cast(), mask, h);
            }
            ch += m;
        }
    }
}

/// f16 MaxPool2D with the bits of [`crate::kernels::generic::f16::max_pool`], 16 channels per
/// vector: each output starts at -inf and takes a value only when it is greater in f32
/// (NaN never is), and the f16 of the winner is its own bits (f16 -> f32 -> f16 is exact).
///
/// # Safety
/// The CPU must support AVX-512F, AVX-512BW, AVX2 and F16C.
#[target_feature(enable = "avx512f,avx512bw,avx2,f16c")]
pub unsafe fn f16_max_pool_avx512(g: &crate::geometry::PoolGeom, input: &[f16], output: &mut [f16]) {
    let c = g.channels;
    for_each_window(g, input, output, |window, out| {
        let mut ch = 0;
        while ch < c {
            let m = ZC.min(c - ch);
            let mask: __mmask16 = if m == ZC { 0xffff } else { (1u16 << m) - 1 };
            let mut best = _mm512_set1_ps(f32::NEG_INFINITY);
            window.for_each_pixel(|at| {
                // SAFETY: `m` f16 from `input[at + ch..]` (a pixel's channels); masked load.
                let v = _mm512_cvtph_ps(unsafe { _mm256_maskz_loadu_epi16(mask, input.as_ptr().add(at + ch).cast()) });
                let greater = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, best);
                best = _mm512_mask_mov_ps(best, greater, v);
            });
            let h = _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(best);
            // SAFETY: `m` f16 writable at `out[ch..]`; masked store.
            unsafe { _mm256_mask_storeu_epi16(out.as_mut_ptr().add(ch).cast(), mask, h) };
            ch += m;
        }
    });
}
