//! int8 kernels, integer-only per QUANT-SPEC.md, so that every target gives
//! the same bytes: the support functions every int8 kernel shares
//! ([`Int8Params`], [`requantize`], the length checks) and the plain
//! reference kernels.
//!
//! `conv2d` and `dense` are the plain reference kernels (TFLite Micro's loop
//! nest); `conv2d_portable` and `dense_portable` reorder the same integer sums
//! for speed and are tested (tests/kernels_int8.rs) to give identical bytes.
//! Integer addition is associative (the accumulators wrap rather than panic,
//! and valid AlexNet-sized layers never come near overflow), so the order
//! cannot change a result. Which variant runs is decided in
//! [`crate::kernels::dispatch`], never here.

// The plain kernels index exactly like the formulas they implement.
#![allow(clippy::needless_range_loop)]

use super::pool::max_pool_by;
use crate::geometry::{ConvGeom, PoolGeom};
use crate::model::{Int8Weights, TensorQuant};
use crate::quant::{multiply_by_quantized_multiplier, quantize_multiplier};
use crate::spec::Activation;

/// A dense layer's inputs that each sit at a known value when dead (after a
/// ReLU, a BatchNormalization maps each channel's zeros to one byte of its
/// own), and what those values add to each unit: `sums[u] = sum over j of
/// w[u][j] * (values[j] - in_zp)`. Then `sum over j of w[u][j] * (x[j] -
/// in_zp)` is `sums[u]` plus the same over the inputs not at their value,
/// with `x[j] - values[j]`: exact integers, so the same bytes, with the rows
/// of dead inputs left unread. Built by the host (`host_layouts::InputMajorCopies`).
#[derive(Clone, Copy, Debug)]
pub struct DeadInputs<'a> {
    pub values: &'a [i8],
    pub sums: &'a [i32],
}

/// Zero points and the activation clamp of one int8 layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Int8Params {
    /// Zero point of the input tensor.
    pub in_zp: i32,
    /// Zero point of the output tensor.
    pub out_zp: i32,
    /// Lower clamp after adding `out_zp` (in `[-128, 127]`).
    pub act_min: i32,
    /// Upper clamp after adding `out_zp`.
    pub act_max: i32,
}

impl Int8Params {
    /// Zero points with the clamp of `activation`: fused ReLU clamps to
    /// `[max(-128, out_zp), 127]`; None and Softmax (logits) to `[-128, 127]`.
    pub fn new(in_zp: i32, out_zp: i32, activation: Activation) -> Self {
        let act_min = match activation {
            Activation::Relu | Activation::Relu6 => out_zp.clamp(-128, 127),
            Activation::None | Activation::Softmax => -128,
        };
        Int8Params { in_zp, out_zp, act_min, act_max: 127 }
    }

    /// [`Int8Params::new`] for an output quantized as `out`: ReLU6 also
    /// clamps at `out_zp + round(6 / scale)` (TFLite's
    /// `CalculateActivationRangeQuantized`, the division in f32).
    pub fn for_output(in_zp: i32, out: TensorQuant, activation: Activation) -> Self {
        let mut p = Self::new(in_zp, out.zero_point, activation);
        if activation == Activation::Relu6 {
            p.act_max = relu6_max(out);
        }
        p
    }
}

/// The int8 value of 6.0 in `out` (clamped to `[-128, 127]`): `zero_point +
/// round(6 / scale)`, rounded half away from zero as `std::round`, exactly
/// on every target (no libm: the fraction of a positive f32 below 2^23 is exact).
pub fn relu6_max(out: TensorQuant) -> i32 {
    let x = 6.0f32 / out.scale;
    // Also NaN (a validated scale never gives one): clamp to the top.
    if x.is_nan() || x >= 1.0e9 {
        return 127;
    }
    let whole = x as i32;
    let rounded = if x - whole as f32 >= 0.5 { whole + 1 } else { whole };
    out.zero_point.saturating_add(rounded).clamp(-128, 127)
}

/// The output stage shared by every requantizing kernel: scale the int32
/// accumulator by the channel's multiplier, add the output zero point, clamp.
#[inline(always)]
pub fn requantize(acc: i32, multiplier: i32, shift: i32, p: &Int8Params) -> i8 {
    let v = multiply_by_quantized_multiplier(acc, multiplier, shift).saturating_add(p.out_zp);
    v.clamp(p.act_min.max(-128), p.act_max.min(127)) as i8
}

/// Plain Conv2D: NHWC `input` (`g.input_len()`), OHWI `w.weights`, per-channel
/// bias/multiplier/shift, NHWC `output` (`g.output_len()`).
///
/// `acc = bias[o] + sum over in-image taps of w * (x - in_zp)`; padding taps are
/// skipped so they contribute exactly 0.
pub fn conv2d(g: &ConvGeom, p: &Int8Params, w: &Int8Weights<'_>, input: &[i8], output: &mut [i8]) {
    check_conv(g, w, input, output);
    let (kw, dh, dw) = (g.kernel_w, g.dilation_h, g.dilation_w);
    let (ipg, opg) = (g.in_per_group(), g.out_per_group());
    for oy in 0..g.out_h {
        let (ky0, ky1, iy0) = g.taps_h(oy);
        for ox in 0..g.out_w {
            let (kx0, kx1, ix0) = g.taps_w(ox);
            for oc in 0..g.out_c {
                // The input channels of this output's group.
                let base = oc / opg * ipg;
                let mut acc: i32 = 0;
                for ky in ky0..ky1 {
                    let iy = iy0 + (ky - ky0) * dh;
                    for kx in kx0..kx1 {
                        let ix = ix0 + (kx - kx0) * dw;
                        for ci in 0..ipg {
                            let wv = w.weights[((oc * g.kernel_h + ky) * kw + kx) * ipg + ci] as i32;
                            let xv = input[(iy * g.in_w + ix) * g.in_c + base + ci] as i32;
                            acc = acc.wrapping_add(wv * (xv - p.in_zp));
                        }
                    }
                }
                acc = acc.wrapping_add(w.bias[oc]);
                output[(oy * g.out_w + ox) * g.out_c + oc] = requantize(acc, w.multiplier[oc], w.shift[oc], p);
            }
        }
    }
}

/// The depthwise weights (`[channel][tap]`, OHWI with one input channel
/// per group) reordered `[tap][channel]` into `scratch` (at least
/// `kernel_h * kernel_w * in_c` bytes).
pub(crate) fn depthwise_reorder<'s>(g: &ConvGeom, w: &Int8Weights<'_>, scratch: &'s mut [u8]) -> &'s [i8] {
    let (c, taps) = (g.in_c, g.kernel_h * g.kernel_w);
    let dst = &mut scratch[..taps * c];
    for (ch, row) in w.weights.chunks_exact(taps).enumerate() {
        for (t, &v) in row.iter().enumerate() {
            dst[t * c + ch] = v as u8;
        }
    }
    // SAFETY: u8 and i8 share size, alignment and validity.
    unsafe { core::slice::from_raw_parts(dst.as_ptr().cast::<i8>(), dst.len()) }
}

/// [`conv2d`]'s sums for a depthwise geometry ([`ConvGeom::is_depthwise`])
/// in a faster order: for each output pixel and in-image tap, a run of
/// channels against the tap's reordered weights (`depthwise_reorder`,
/// in `scratch`). The same products summed modulo 2^32 in another order:
/// the same bytes.
pub fn depthwise_conv2d_portable(
    g: &ConvGeom,
    p: &Int8Params,
    w: &Int8Weights<'_>,
    input: &[i8],
    output: &mut [i8],
    scratch: &mut [u8],
) {
    check_conv(g, w, input, output);
    assert!(g.is_depthwise(), "depthwise_conv2d_portable: a depthwise geometry");
    let c = g.in_c;
    let wt = depthwise_reorder(g, w, scratch);
    const LANES: usize = 16;
    for oy in 0..g.out_h {
        let (ky0, ky1, iy0) = g.taps_h(oy);
        for ox in 0..g.out_w {
            let (kx0, kx1, ix0) = g.taps_w(ox);
            let out_px = &mut output[(oy * g.out_w + ox) * c..][..c];
            let mut ch = 0;
            while ch < c {
                let n = LANES.min(c - ch);
                let mut acc = [0i32; LANES];
                for ky in ky0..ky1 {
                    let iy = iy0 + (ky - ky0) * g.dilation_h;
                    for kx in kx0..kx1 {
                        let ix = ix0 + (kx - kx0) * g.dilation_w;
                        let x = &input[(iy * g.in_w + ix) * c + ch..][..n];
                        let wv = &wt[(ky * g.kernel_w + kx) * c + ch..][..n];
                        for ((a, &xv), &wv) in acc.iter_mut().zip(x).zip(wv) {
                            *a = a.wrapping_add(wv as i32 * (xv as i32 - p.in_zp));
                        }
                    }
                }
                for (j, (o, &a)) in out_px[ch..ch + n].iter_mut().zip(&acc).enumerate() {
                    let k = ch + j;
                    *o = requantize(a.wrapping_add(w.bias[k]), w.multiplier[k], w.shift[k], p);
                }
                ch += n;
            }
        }
    }
}

pub(crate) fn check_conv(g: &ConvGeom, w: &Int8Weights<'_>, input: &[i8], output: &[i8]) {
    assert!(input.len() == g.input_len() && output.len() == g.output_len(), "conv2d: activation length");
    assert!(w.weights.len() == g.weights_len(), "conv2d: weight length");
    assert!(w.bias.len() == g.out_c && w.multiplier.len() == g.out_c && w.shift.len() == g.out_c, "conv2d: channels");
}

/// Output channels computed together by the fast kernels: each input value
/// loaded once feeds this many accumulators.
const BLOCK: usize = 4;

/// [`conv2d`]'s sums in a faster order for the baseline instruction set:
/// what no_std targets without DSP run, and the source the x86 module
/// compiles for AVX2/AVX-512BW. Square geometries only ([`ConvGeom::is_square`]).
#[inline(always)]
pub fn conv2d_portable(g: &ConvGeom, p: &Int8Params, w: &Int8Weights<'_>, input: &[i8], output: &mut [i8]) {
    check_conv(g, w, input, output);
    assert!(g.is_square(), "conv2d_portable: a square geometry");
    let k = g.kernel();
    let filter = k * k * g.in_c;
    let zp = p.in_zp;
    for oy in 0..g.out_h {
        let (ky0, ky1, iy0) = g.taps(oy, g.pad_top, g.in_h);
        for ox in 0..g.out_w {
            let (kx0, kx1, ix0) = g.taps(ox, g.pad_left, g.in_w);
            let run = (kx1 - kx0) * g.in_c;
            let out_px = &mut output[(oy * g.out_w + ox) * g.out_c..][..g.out_c];
            let mut oc = 0;
            while oc + BLOCK <= g.out_c {
                let mut acc = [0i32; BLOCK];
                for ky in ky0..ky1 {
                    let iy = iy0 + (ky - ky0);
                    let x = &input[(iy * g.in_w + ix0) * g.in_c..][..run];
                    let wo = (ky * k + kx0) * g.in_c;
                    let w0 = &w.weights[oc * filter + wo..][..run];
                    let w1 = &w.weights[(oc + 1) * filter + wo..][..run];
                    let w2 = &w.weights[(oc + 2) * filter + wo..][..run];
                    let w3 = &w.weights[(oc + 3) * filter + wo..][..run];
                    let mut a = [0i32; BLOCK];
                    for i in 0..run {
                        let xv = x[i] as i32 - zp;
                        a[0] = a[0].wrapping_add(w0[i] as i32 * xv);
                        a[1] = a[1].wrapping_add(w1[i] as i32 * xv);
                        a[2] = a[2].wrapping_add(w2[i] as i32 * xv);
                        a[3] = a[3].wrapping_add(w3[i] as i32 * xv);
                    }
                    for j in 0..BLOCK {
                        acc[j] = acc[j].wrapping_add(a[j]);
                    }
                }
                for j in 0..BLOCK {
                    let c = oc + j;
                    out_px[c] = requantize(acc[j].wrapping_add(w.bias[c]), w.multiplier[c], w.shift[c], p);
                }
                oc += BLOCK;
            }
            for c in oc..g.out_c {
                let mut acc = 0i32;
                for ky in ky0..ky1 {
                    let iy = iy0 + (ky - ky0);
                    let x = &input[(iy * g.in_w + ix0) * g.in_c..][..run];
                    let wr = &w.weights[c * filter + (ky * k + kx0) * g.in_c..][..run];
                    acc = acc.wrapping_add(dot_zp(wr, x, zp));
                }
                out_px[c] = requantize(acc.wrapping_add(w.bias[c]), w.multiplier[c], w.shift[c], p);
            }
        }
    }
}

/// `sum w[i] * (x[i] - zp)` with wrapping i32 accumulation.
#[inline]
fn dot_zp(w: &[i8], x: &[i8], zp: i32) -> i32 {
    w.iter().zip(x).fold(0i32, |a, (&wv, &xv)| a.wrapping_add(wv as i32 * (xv as i32 - zp)))
}

pub(crate) fn check_dense(w: &Int8Weights<'_>, input: &[i8], output: &[i8]) {
    let (n, u) = (input.len(), output.len());
    assert!(w.weights.len() == n * u, "dense: weight length");
    assert!(w.bias.len() == u && w.multiplier.len() == u && w.shift.len() == u, "dense: units");
}

/// Plain Dense: `[units][inputs]` weights, `out[u] = requant(bias[u] + sum w[u][i] * (x[i] - in_zp))`.
/// The unit count is `output.len()`.
pub fn dense(p: &Int8Params, w: &Int8Weights<'_>, input: &[i8], output: &mut [i8]) {
    check_dense(w, input, output);
    let n = input.len();
    for (u, out) in output.iter_mut().enumerate() {
        let mut acc: i32 = 0;
        for i in 0..n {
            acc = acc.wrapping_add(w.weights[u * n + i] as i32 * (input[i] as i32 - p.in_zp));
        }
        *out = requantize(acc.wrapping_add(w.bias[u]), w.multiplier[u], w.shift[u], p);
    }
}

/// [`dense`]'s sums written so the compiler vectorises them (the weights
/// dominate, each byte is read once), for the baseline instruction set.
#[inline(always)]
pub fn dense_portable(p: &Int8Params, w: &Int8Weights<'_>, input: &[i8], output: &mut [i8]) {
    check_dense(w, input, output);
    let n = input.len();
    for (u, out) in output.iter_mut().enumerate() {
        let acc = dot_zp(&w.weights[u * n..][..n], input, p.in_zp);
        *out = requantize(acc.wrapping_add(w.bias[u]), w.multiplier[u], w.shift[u], p);
    }
}

/// MaxPool2D: input and output share scale and zero point, so no
/// requantization; the window is clipped to the image, the max starts at -128.
pub fn max_pool(g: &PoolGeom, input: &[i8], output: &mut [i8]) {
    max_pool_by(g, input, output, i8::MIN, |v, m| v > m);
}

/// One element of the BatchNormalization affine: channel `c` of `w`.
#[inline(always)]
fn bn_one(x: i8, c: usize, p: &Int8Params, w: &Int8Weights<'_>) -> i8 {
    let acc = (w.weights[c] as i32 * (x as i32 - p.in_zp)).wrapping_add(w.bias[c]);
    requantize(acc, w.multiplier[c], w.shift[c], p)
}

/// A BatchNormalization applied in the output stage of the Conv2D before it
/// (its input is that conv's output, its `p` the no-activation clamp): the
/// bytes of [`batch_norm_in_place`] on the conv's output, without a second
/// pass over the tensor. The engine fuses the pair only when no observer
/// looks at the conv's own output, since it never exists.
#[derive(Clone, Copy, Debug)]
pub struct ThenBatchNorm<'a> {
    pub p: Int8Params,
    pub w: Int8Weights<'a>,
}

/// BatchNormalization as a per-channel int8 affine (the channel is the last
/// axis): `y = clamp(out_zp + MBQM(w[c] * (x - in_zp) + bias[c]))`.
///
/// The quantizer stores the single BN scale `gamma / sqrt(var + eps)` as a
/// per-channel symmetric weight (+-127) so a negative gamma flips the sign in
/// integers and the following max-pool sees the true BN output. `p` should
/// carry `Activation::None`'s clamp. The channel count is `w.weights.len()`.
pub fn batch_norm(p: &Int8Params, w: &Int8Weights<'_>, input: &[i8], output: &mut [i8]) {
    let c = check_bn(w, input.len());
    assert!(output.len() == input.len(), "batch_norm: length");
    for (i, (o, &x)) in output.iter_mut().zip(input).enumerate() {
        *o = bn_one(x, i % c, p, w);
    }
}

/// [`batch_norm`] overwriting its input, so the engine needs no second buffer.
pub fn batch_norm_in_place(p: &Int8Params, w: &Int8Weights<'_>, data: &mut [i8]) {
    let c = check_bn(w, data.len());
    for px in data.chunks_exact_mut(c) {
        for (ch, v) in px.iter_mut().enumerate() {
            *v = bn_one(*v, ch, p, w);
        }
    }
}

pub(crate) fn check_bn(w: &Int8Weights<'_>, len: usize) -> usize {
    let c = w.weights.len();
    assert!(c > 0 && len / c * c == len, "batch_norm: length not a multiple of the channels");
    assert!(w.bias.len() == c && w.multiplier.len() == c && w.shift.len() == c, "batch_norm: channels");
    c
}

/// AveragePooling2D (and the global average pool, a window over the whole
/// image): input and output share scale and zero point, as TFLite's int8
/// AVERAGE_POOL_2D; the mean of each window's in-image pixels (padding never
/// counts), rounded half away from zero by integer division, as TFLite's
/// reference kernel does. `g` is a [`ConvGeom`] whose kernel is the pool
/// window, `in_c == out_c`, undilated.
pub fn avg_pool(g: &ConvGeom, input: &[i8], output: &mut [i8]) {
    assert!(input.len() == g.input_len() && output.len() == g.output_len(), "avg_pool: length");
    assert!(g.in_c == g.out_c && g.dilation_h == 1 && g.dilation_w == 1, "avg_pool: geometry");
    let c = g.in_c;
    for oy in 0..g.out_h {
        let (ky0, ky1, iy0) = g.taps_h(oy);
        for ox in 0..g.out_w {
            let (kx0, kx1, ix0) = g.taps_w(ox);
            let count = ((ky1 - ky0) * (kx1 - kx0)) as i32;
            let out = &mut output[(oy * g.out_w + ox) * c..][..c];
            for (ch, o) in out.iter_mut().enumerate() {
                let mut acc = 0i32;
                for iy in iy0..iy0 + (ky1 - ky0) {
                    for ix in ix0..ix0 + (kx1 - kx0) {
                        acc += input[(iy * g.in_w + ix) * c + ch] as i32;
                    }
                }
                *o = round_div(acc, count).clamp(-128, 127) as i8;
            }
        }
    }
}

/// `acc / count` rounded half away from zero (TFLite's average pool);
/// an empty window (which validated geometry never has) gives 0.
#[inline(always)]
pub fn round_div(acc: i32, count: i32) -> i32 {
    if count <= 0 {
        0
    } else if acc > 0 {
        (acc + count / 2) / count
    } else {
        (acc - count / 2) / count
    }
}

/// TFLite's `ADD` arithmetic on int8, its Prepare done once: each input is
/// offset by its zero point, shifted left by [`ADD_LEFT_SHIFT`] and scaled
/// to a common scale (`scale / (2 * max(scale_a, scale_b))`), the two summed
/// and scaled to the output (`2 * max / (2^20 * scale_out)`), each multiplier
/// by `QuantizeMultiplier` (the double rounding of the reference kernels).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddParams {
    pub a_offset: i32,
    pub b_offset: i32,
    pub a_multiplier: i32,
    pub a_shift: i32,
    pub b_multiplier: i32,
    pub b_shift: i32,
    pub out_multiplier: i32,
    pub out_shift: i32,
    /// The output zero point and the fused activation's clamp.
    pub out: Int8Params,
}

/// TFLite's left shift of int8 ADD inputs (20 for 8-bit, 15 for 16-bit).
pub const ADD_LEFT_SHIFT: i32 = 20;

impl AddParams {
    /// TFLite Micro's `CalculateOpData` for ADD: the real multipliers in f64
    /// from the f32 scales.
    pub fn new(a: TensorQuant, b: TensorQuant, out: TensorQuant, activation: Activation) -> Self {
        let twice_max = 2.0 * (a.scale as f64).max(b.scale as f64);
        let (a_multiplier, a_shift) = quantize_multiplier(a.scale as f64 / twice_max);
        let (b_multiplier, b_shift) = quantize_multiplier(b.scale as f64 / twice_max);
        let (out_multiplier, out_shift) =
            quantize_multiplier(twice_max / ((1i64 << ADD_LEFT_SHIFT) as f64 * out.scale as f64));
        AddParams {
            a_offset: -a.zero_point,
            b_offset: -b.zero_point,
            a_multiplier,
            a_shift,
            b_multiplier,
            b_shift,
            out_multiplier,
            out_shift,
            out: Int8Params::for_output(0, out, activation),
        }
    }
}

/// ADD, element-wise: `out[i] = a[i] + b[i]` in real terms (see [`AddParams`]).
pub fn add(p: &AddParams, a: &[i8], b: &[i8], out: &mut [i8]) {
    assert!(a.len() == out.len() && b.len() == out.len(), "add: length");
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = add_one(p, x, y);
    }
}

#[inline(always)]
fn add_one(p: &AddParams, x: i8, y: i8) -> i8 {
    let x = (x as i32 + p.a_offset) << ADD_LEFT_SHIFT;
    let y = (y as i32 + p.b_offset) << ADD_LEFT_SHIFT;
    let x = multiply_by_quantized_multiplier(x, p.a_multiplier, p.a_shift);
    let y = multiply_by_quantized_multiplier(y, p.b_multiplier, p.b_shift);
    requantize(x + y, p.out_multiplier, p.out_shift, &p.out)
}

/// How one input of a concatenation becomes the output's quantization.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Requant {
    /// Same scale and zero point: the bytes are copied.
    pub identity: bool,
    pub in_zp: i32,
    pub multiplier: i32,
    pub shift: i32,
    pub out: Int8Params,
}

impl Requant {
    /// From `input` to `output`: `QuantizeMultiplier(in / out)` (f64 of the
    /// f32 scales), unless both are equal (TFLite's converter gives a
    /// concatenation's inputs the output's quantization, so its bytes are copies).
    pub fn new(input: TensorQuant, output: TensorQuant) -> Self {
        let (multiplier, shift) = quantize_multiplier(input.scale as f64 / output.scale as f64);
        Requant {
            identity: input == output,
            in_zp: input.zero_point,
            multiplier,
            shift,
            out: Int8Params::new(input.zero_point, output.zero_point, Activation::None),
        }
    }

    /// One value.
    #[inline(always)]
    pub fn apply(&self, x: i8) -> i8 {
        if self.identity {
            x
        } else {
            requantize(x as i32 - self.in_zp, self.multiplier, self.shift, &self.out)
        }
    }
}

/// CONCATENATION on the last axis: each of `pixels` output pixels (1 for
/// flat vectors) holds
/// `a`'s channels, then `b`'s, each requantized to the output.
pub fn concat(pixels: usize, ra: &Requant, rb: &Requant, a: &[i8], b: &[i8], out: &mut [i8]) {
    super::concat::concat_by(pixels, a, b, out, |x| ra.apply(x), |x| rb.apply(x));
}

/// A standalone ReLU or ReLU6 that keeps its input's quantization: a clamp
/// to `[p.act_min, p.act_max]`, in place.
pub fn clamp_in_place(p: &Int8Params, data: &mut [i8]) {
    let (lo, hi) = (p.act_min.clamp(-128, 127) as i8, p.act_max.clamp(-128, 127) as i8);
    for v in data {
        *v = (*v).clamp(lo, hi);
    }
}

/// Why TFLite's int8 SOFTMAX cannot take a layer's quantization (its
/// Prepare refuses the same models).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SoftmaxQuantError {
    /// The output is not quantized with scale 1/256 (within 0.1 %) and zero
    /// point -128, the only int8 softmax output TFLite accepts.
    Output,
    /// The input scale is so small (below 2^-26) that the difference
    /// multiplier is not above 1.
    InputScale,
}

/// The quantization of every int8 softmax output: scale 1/256, zero point -128.
pub const SOFTMAX_OUTPUT: TensorQuant = TensorQuant { scale: 1.0 / 256.0, zero_point: -128 };

/// TFLite's reference int8 SOFTMAX (beta = 1), its Prepare done once: the
/// multiplier taking an input difference `x - max` to Q5.26, and the least
/// difference that still counts ([`crate::quant::calculate_input_radius`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftmaxParams {
    pub input_multiplier: i32,
    pub input_left_shift: i32,
    pub diff_min: i32,
}

impl SoftmaxParams {
    /// Prepare for an input quantized as `input` and an output as `output`.
    pub fn new(input: TensorQuant, output: TensorQuant) -> Result<Self, SoftmaxQuantError> {
        let want = 1.0f32 / 256.0;
        // TFLite's TF_LITE_ENSURE_NEAR (a NaN scale is not near).
        let near = (output.scale - want).abs() <= 0.001 * want;
        if output.zero_point != -128 || !near {
            return Err(SoftmaxQuantError::Output);
        }
        let (input_multiplier, input_left_shift) =
            crate::quant::softmax_input_multiplier(1.0, input.scale as f64).ok_or(SoftmaxQuantError::InputScale)?;
        let diff_min = -crate::quant::calculate_input_radius(crate::quant::SOFTMAX_DIFF_INTEGER_BITS, input_left_shift);
        Ok(SoftmaxParams { input_multiplier, input_left_shift, diff_min })
    }

    /// `exp(x - max)` in Q0.31 for a difference that counts (`diff >= diff_min`).
    #[inline]
    fn exp(&self, diff: i32) -> i32 {
        use crate::quant::{exp_on_negative_values, saturating_rounding_doubling_high_mul};
        // |diff| * 2^left_shift < 31 * 2^26 for diff >= diff_min: no overflow.
        let scaled = saturating_rounding_doubling_high_mul(
            diff.wrapping_mul(1 << self.input_left_shift.clamp(0, 30)),
            self.input_multiplier,
        );
        exp_on_negative_values(scaled)
    }
}

/// TFLite's reference int8 softmax over the last axis: `input` and `output`
/// are rows of `depth` values. Per row, integer only: the maximum; each
/// counted `exp(x - max)` (gemmlowp's `exp_on_negative_values`) summed in
/// Q12.19; the sum's reciprocal ([`crate::quant::get_reciprocal`]); each output
/// `RDBPOT(SRDHM(reciprocal, exp), num_bits_over_unit + 23) - 128`, clamped
/// (differences below `diff_min` give -128). Where the exponentials sum to
/// 256 or more (every probability below 1/256) the division is by more than
/// 2^31, where TFLite's reference kernel aborts: we give its rounded value,
/// 0, so -128.
pub fn softmax(p: &SoftmaxParams, depth: usize, input: &[i8], output: &mut [i8]) {
    use crate::quant::SOFTMAX_ACCUM_INTEGER_BITS as ACCUM;
    use crate::quant::{get_reciprocal, rounding_divide_by_pot, saturating_rounding_doubling_high_mul};
    assert!(input.len() == output.len() && depth > 0 && input.len().is_multiple_of(depth), "softmax: length");
    for (row, out) in input.chunks_exact(depth).zip(output.chunks_exact_mut(depth)) {
        let max = row.iter().copied().max().unwrap_or(i8::MIN) as i32;
        let mut sum = 0i32;
        for &x in row {
            let diff = x as i32 - max;
            if diff >= p.diff_min {
                // Rescale<12> from Q0.31: a rounding division by 2^12.
                sum = sum.wrapping_add(rounding_divide_by_pot(p.exp(diff), ACCUM));
            }
        }
        let (reciprocal, bits_over_unit) = get_reciprocal(sum, ACCUM);
        let exponent = bits_over_unit + 31 - 8;
        for (o, &x) in out.iter_mut().zip(row) {
            let diff = x as i32 - max;
            *o = if diff >= p.diff_min {
                let prod = saturating_rounding_doubling_high_mul(reciprocal, p.exp(diff));
                // prod >= 0: past 2^31 the quotient rounds to 0.
                let unsat = if exponent > 31 { 0 } else { rounding_divide_by_pot(prod, exponent) };
                (unsat - 128).clamp(-128, 127) as i8
            } else {
                i8::MIN
            };
        }
    }
}

/// TFLite's int8 MEAN over height and width (`reduce.cc` with the reference
/// kernels, `reference_ops::QuantizedMeanOrSum`), its Prepare done once:
/// `QuantizeMultiplier(in_scale / out_scale)` (f64 of the f32 scales) with
/// `1 / count` folded in: `shift = min(floor(log2 count), 32, 31 + s)`,
/// `multiplier = (m << shift) / count` (i64, truncating), `s - shift`. TFLite
/// takes this path whether or not the two quantizations are equal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MeanParams {
    pub in_zp: i32,
    pub out_zp: i32,
    /// Pixels averaged per channel.
    pub count: i32,
    pub multiplier: i32,
    pub shift: i32,
}

impl MeanParams {
    /// Prepare the mean of `count` (>= 1) values per output.
    pub fn new(input: TensorQuant, output: TensorQuant, count: usize) -> Self {
        let count = count.clamp(1, i32::MAX as usize) as i32;
        let (m, s) = quantize_multiplier(input.scale as f64 / output.scale as f64);
        let shift = (31 - (count as u32).leading_zeros() as i32).min(32).min(31 + s).max(0);
        let multiplier = (((m as i64) << shift) / count as i64) as i32;
        MeanParams { in_zp: input.zero_point, out_zp: output.zero_point, count, multiplier, shift: s - shift }
    }
}

/// TFLite's int8 MEAN of `input` (`pixels x channels`, NHWC) over its pixels
/// into `output` (`channels`): per channel `MBQM(sum - in_zp * count,
/// multiplier, shift) + out_zp`, clamped; the sum is of the raw int8 values.
pub fn mean(p: &MeanParams, input: &[i8], output: &mut [i8]) {
    let c = output.len();
    assert!(c > 0 && input.len().is_multiple_of(c), "mean: length");
    for (ch, o) in output.iter_mut().enumerate() {
        let sum: i32 = input[ch..].iter().step_by(c).map(|&x| x as i32).fold(0, i32::wrapping_add);
        let shifted = (sum as i64 - p.in_zp as i64 * p.count as i64) as i32;
        let v = multiply_by_quantized_multiplier(shifted, p.multiplier, p.shift).saturating_add(p.out_zp);
        *o = v.clamp(-128, 127) as i8;
    }
}
