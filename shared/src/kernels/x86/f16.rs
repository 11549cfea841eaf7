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

/// Round 8 f32 to f16 with F16C (round to nearest even, like `f16::from_f32`).
#[target_feature(enable = "avx2,f16c")]
#[inline]
fn narrow8(v: __m256, out: &mut [u16; 8]) {
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
    let k = g.kernel;
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
