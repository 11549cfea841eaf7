//! f16 kernels with one fixed arithmetic so every target gives the same bits.
//!
//! The rule (there is no TFLite reference for f16):
//! - weights, bias and activations are `half::f16`; every value is widened to
//!   f32 (exact);
//! - a product `w * x` of two f16 values is exact in f32 (11 + 11 significant
//!   bits <= 24), so no fused multiply-add can change it; each sum is a
//!   separate f32 addition (Rust never contracts `a * b + c` into an FMA);
//! - accumulation starts at `0.0` and adds the products in memory order of the
//!   weights (Conv2D: `ky`, then `kx`, then input channel, skipping padding
//!   taps; Dense: input index), then adds the bias once;
//! - ReLU is `max(acc, 0)` in f32; the result is rounded to f16 once
//!   (round to nearest even, as `f16::from_f32` does in software and F16C
//!   hardware alike);
//! - a NaN result is stored as [`CANONICAL_NAN`]. Whether a result is NaN is
//!   fixed by IEEE 754, but its sign and payload are not: x86 makes
//!   `0xFFC0_0000` for `inf * 0` where Arm makes `0x7FC0_0000`, and with two
//!   NaN operands each CPU (and the compiler's operand order) picks its own.
//!
//! No f32 result is ever subnormal (every product of two f16 values and every
//! sum of them is a multiple of 2^-48, far above f32's 2^-126), so a
//! flush-to-zero mode could not change a bit either; the Arm kernels still run
//! with the FPU's IEEE defaults ([`crate::kernels`]' `arm_fpu`).

use super::pool::max_pool_by;
use crate::geometry::{ConvGeom, PoolGeom};
use crate::model::F16Weights;
use half::f16;

/// The f16 ReLU, in f32 before the one rounding: `acc < 0` is false for NaN,
/// so NaN passes through unchanged.
#[inline(always)]
pub fn relu_f32(acc: f32, relu: bool) -> f32 {
    if relu && acc < 0.0 {
        0.0
    } else {
        acc
    }
}

/// The one f16 NaN the kernels store (positive, quiet, no payload).
pub const CANONICAL_NAN: f16 = f16::from_bits(0x7E00);

/// Round an f32 result to f16 (nearest even), any NaN as [`CANONICAL_NAN`]:
/// the one narrowing every f16 kernel's results go through.
#[inline(always)]
pub fn narrow(v: f32) -> f16 {
    if v.is_nan() {
        CANONICAL_NAN
    } else {
        f16::from_f32(v)
    }
}

#[inline(always)]
fn finish(acc: f32, relu: bool) -> f16 {
    narrow(relu_f32(acc, relu))
}

/// Conv2D: NHWC `input`, OHWI `w.weights`, `w.bias` per filter, NHWC `output`.
pub fn conv2d(g: &ConvGeom, relu: bool, w: &F16Weights<'_>, input: &[f16], output: &mut [f16]) {
    assert!(output.len() == g.output_len(), "conv2d: activation length");
    conv2d_rows_by(g, relu, w, input, output, 0..g.out_h, f16::to_f32, narrow)
}

/// The rows `rows` of [`conv2d`] (`output` holds exactly those rows), with
/// the f16 <-> f32 conversions supplied by the caller: `widen` must be exact
/// and `narrow` round to nearest even with NaN canonical, as `f16::to_f32` and
/// [`narrow`] are.
/// This is the one f16 conv loop and its summation order; an ISA module
/// that only has faster conversions (F16C) runs it with its own.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn conv2d_rows_by(
    g: &ConvGeom,
    relu: bool,
    w: &F16Weights<'_>,
    input: &[f16],
    output: &mut [f16],
    rows: core::ops::Range<usize>,
    widen: impl Fn(f16) -> f32,
    narrow: impl Fn(f32) -> f16,
) {
    let row_len = g.out_w * g.out_c;
    assert!(input.len() == g.input_len(), "conv2d: activation length");
    assert!(rows.end <= g.out_h && output.len() == rows.len() * row_len, "conv2d: output rows");
    assert!(w.weights.len() == g.weights_len() && w.bias.len() == g.out_c, "conv2d: weight length");
    let (kw, dh, dw) = (g.kernel_w, g.dilation_h, g.dilation_w);
    let (ipg, opg) = (g.in_per_group(), g.out_per_group());
    let filter = g.filter_len();
    let oy_first = rows.start;
    for oy in rows {
        let (ky0, ky1, iy0) = g.taps_h(oy);
        for ox in 0..g.out_w {
            let (kx0, kx1, ix0) = g.taps_w(ox);
            let run = (kx1 - kx0) * ipg;
            for oc in 0..g.out_c {
                // The input channels of this output's group.
                let base = oc / opg * ipg;
                let mut acc = 0.0f32;
                for ky in ky0..ky1 {
                    let iy = iy0 + (ky - ky0) * dh;
                    let wr = &w.weights[oc * filter + (ky * kw + kx0) * ipg..][..run];
                    if dw == 1 && g.groups == 1 {
                        // The in-image taps of one kernel row: contiguous in both layouts,
                        // in the order (kx, ci).
                        let x = &input[(iy * g.in_w + ix0) * g.in_c..][..run];
                        for (a, b) in wr.iter().zip(x) {
                            let prod = widen(*a) * widen(*b);
                            acc += prod;
                        }
                    } else {
                        // Dilated or grouped: the same (kx, ci) order, one tap's channels at a time.
                        for (t, wt) in wr.chunks_exact(ipg).enumerate() {
                            let x = &input[(iy * g.in_w + ix0 + t * dw) * g.in_c + base..][..ipg];
                            for (a, b) in wt.iter().zip(x) {
                                let prod = widen(*a) * widen(*b);
                                acc += prod;
                            }
                        }
                    }
                }
                acc += widen(w.bias[oc]);
                output[((oy - oy_first) * g.out_w + ox) * g.out_c + oc] = narrow(relu_f32(acc, relu));
            }
        }
    }
}

/// Dense: `[units][inputs]` weights; the unit count is `output.len()`.
pub fn dense(relu: bool, w: &F16Weights<'_>, input: &[f16], output: &mut [f16]) {
    let n = input.len();
    assert!(w.weights.len() == n * output.len() && w.bias.len() == output.len(), "dense: weight length");
    for (u, out) in output.iter_mut().enumerate() {
        let mut acc = 0.0f32;
        for (a, b) in w.weights[u * n..][..n].iter().zip(input) {
            let prod = a.to_f32() * b.to_f32();
            acc += prod;
        }
        acc += w.bias[u].to_f32();
        *out = finish(acc, relu);
    }
}

/// MaxPool2D, window clipped to the image. Starts from -inf and takes `v`
/// only when `v > max` in f32, so NaN inputs are skipped deterministically.
pub fn max_pool(g: &PoolGeom, input: &[f16], output: &mut [f16]) {
    max_pool_by(g, input, output, f16::NEG_INFINITY, |v, m| v.to_f32() > m.to_f32());
}

#[inline(always)]
fn bn_one(x: f16, c: usize, w: &F16Weights<'_>) -> f16 {
    let prod = x.to_f32() * w.weights[c].to_f32();
    narrow(prod + w.bias[c].to_f32())
}

/// BatchNormalization affine: `y = f16(x * scale[c] + shift[c])`, product and
/// sum in f32 (the product is exact), one rounding to f16. `w.weights` holds
/// `gamma / sqrt(var + eps)`, `w.bias` holds `beta - mean * scale`.
pub fn batch_norm(w: &F16Weights<'_>, input: &[f16], output: &mut [f16]) {
    let c = check_bn(w, input.len());
    assert!(output.len() == input.len(), "batch_norm: length");
    for (i, (o, &x)) in output.iter_mut().zip(input).enumerate() {
        *o = bn_one(x, i % c, w);
    }
}

/// [`batch_norm`] overwriting its input.
pub fn batch_norm_in_place(w: &F16Weights<'_>, data: &mut [f16]) {
    let c = check_bn(w, data.len());
    for px in data.chunks_exact_mut(c) {
        for (ch, v) in px.iter_mut().enumerate() {
            *v = bn_one(*v, ch, w);
        }
    }
}

fn check_bn(w: &F16Weights<'_>, len: usize) -> usize {
    let c = w.weights.len();
    assert!(c > 0 && len / c * c == len && w.bias.len() == c, "batch_norm: channels");
    c
}

/// AveragePooling2D and the global average pool (see
/// [`crate::kernels::generic::int8::avg_pool`] for `g`): each window's
/// in-image pixels summed in f32 in row-major order, divided by their count
/// in f32, one rounding to f16.
pub fn avg_pool(g: &ConvGeom, input: &[f16], output: &mut [f16]) {
    assert!(input.len() == g.input_len() && output.len() == g.output_len(), "avg_pool: length");
    assert!(g.in_c == g.out_c && g.dilation_h == 1 && g.dilation_w == 1, "avg_pool: geometry");
    let c = g.in_c;
    for oy in 0..g.out_h {
        let (ky0, ky1, iy0) = g.taps_h(oy);
        for ox in 0..g.out_w {
            let (kx0, kx1, ix0) = g.taps_w(ox);
            let count = ((ky1 - ky0) * (kx1 - kx0)) as f32;
            let out = &mut output[(oy * g.out_w + ox) * c..][..c];
            for (ch, o) in out.iter_mut().enumerate() {
                let mut acc = 0.0f32;
                for iy in iy0..iy0 + (ky1 - ky0) {
                    for ix in ix0..ix0 + (kx1 - kx0) {
                        acc += input[(iy * g.in_w + ix) * c + ch].to_f32();
                    }
                }
                *o = narrow(acc / count);
            }
        }
    }
}

/// ReLU6's upper clamp, after a kernel that applied the ReLU: values over 6
/// become 6 (exact in f16; narrowing is monotonic, so clamping after it
/// equals clamping before), NaN stays NaN.
pub fn clamp6_in_place(data: &mut [f16]) {
    let six = f16::from_f32(6.0);
    for v in data {
        if v.to_f32() > 6.0 {
            *v = six;
        }
    }
}

/// ADD, element-wise: the f32 sum of the two f16 values, rounded once to
/// f16, then ReLU (`relu`) and the ReLU6 clamp (`six`).
pub fn add(relu: bool, six: bool, a: &[f16], b: &[f16], out: &mut [f16]) {
    assert!(a.len() == out.len() && b.len() == out.len(), "add: length");
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = finish(x.to_f32() + y.to_f32(), relu);
    }
    if six {
        clamp6_in_place(out);
    }
}

/// CONCATENATION on the last axis: each of `pixels` output pixels (1 for
/// flat vectors) holds `a`'s channels, then `b`'s.
pub fn concat(pixels: usize, a: &[f16], b: &[f16], out: &mut [f16]) {
    super::concat::concat_by(pixels, a, b, out, |x| x, |x| x);
}

/// A standalone ReLU (`relu`) and ReLU6 clamp (`six`), in place, with the
/// conv epilogue's rules (a negative value, -0 excepted, becomes +0).
pub fn activation_in_place(relu: bool, six: bool, data: &mut [f16]) {
    if relu {
        for v in data.iter_mut() {
            *v = finish(v.to_f32(), true);
        }
    }
    if six {
        clamp6_in_place(data);
    }
}

/// `exp(d)` for `d <= 0` in f32, computed the same way on every target (no
/// libm, whose last bit differs between platforms): `d = k ln 2 + r` with
/// `k = round(d / ln 2)` and `ln 2` in two parts (Cody-Waite), a degree-7
/// Taylor polynomial of `exp(r)` for `|r| <= ln 2 / 2` by Horner (separate
/// multiplies and adds, never fused), times `2^k` built from its bits.
/// Below -87 (where `exp` leaves f32's normal range) it is 0, so no
/// subnormal ever appears; NaN stays NaN.
pub fn exp_nonpositive(d: f32) -> f32 {
    const LOG2E: f32 = core::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75; // 0x3F317200: 16 significant bits, k * LN2_HI exact
    const LN2_LO: f32 = 1.428_606_8e-6;
    if d.is_nan() {
        return d;
    }
    if d < -87.0 {
        return 0.0;
    }
    let d = if d > 0.0 { 0.0 } else { d };
    let k = -((-d * LOG2E + 0.5) as i32); // round half away, d <= 0
    let kf = k as f32;
    let r = (d - kf * LN2_HI) - kf * LN2_LO;
    let mut p = 1.0 / 5040.0;
    for c in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = p * r + c;
    }
    p * f32::from_bits(((k + 127).clamp(1, 254) as u32) << 23)
}

/// Softmax (beta = 1) over rows of `depth` values. The f16 rule: each value
/// widened to f32; the row's maximum `m`; `e_i = exp_nonpositive(x_i - m)`
/// (f32 subtraction); `s` the f32 sum of the `e_i` in index order; each
/// output `e_i / s` (one f32 division) rounded to f16 once ([`narrow`]). A
/// row holding NaN or an infinity comes out NaN wherever the arithmetic
/// makes it so, stored as [`CANONICAL_NAN`].
pub fn softmax(depth: usize, input: &[f16], output: &mut [f16]) {
    assert!(input.len() == output.len() && depth > 0 && input.len().is_multiple_of(depth), "softmax: length");
    for (row, out) in input.chunks_exact(depth).zip(output.chunks_exact_mut(depth)) {
        let max = row.iter().fold(f32::NEG_INFINITY, |m, v| {
            let v = v.to_f32();
            if v.is_nan() || m.is_nan() {
                f32::NAN
            } else if v > m {
                v
            } else {
                m
            }
        });
        // The e_i are computed twice (the same bits both times) rather than
        // kept: the f16 output cannot hold them in f32.
        let mut sum = 0.0f32;
        for x in row {
            sum += exp_nonpositive(x.to_f32() - max);
        }
        for (o, x) in out.iter_mut().zip(row) {
            *o = narrow(exp_nonpositive(x.to_f32() - max) / sum);
        }
    }
}
