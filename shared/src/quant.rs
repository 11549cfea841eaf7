//! The int8 arithmetic of QUANT-SPEC.md: TFLite's QuantizeMultiplier and
//! gemmlowp's fixed-point requantization with its double rounding, plus the
//! float <-> int8 affine maps.
//!
//! Every function here is total (no panic for any input, including values a
//! corrupted model file could carry) and bit-exact on every target: the golden
//! test `tests/requant_golden.rs` holds them to 20,000 gemmlowp results.

use crate::model::TensorQuant;

/// Round half away from zero without `std` (core has no `f64::round` on our MSRV).
///
/// Exact for every finite `x`: `x - trunc(x)` is exact in binary floating point.
fn round_half_away_f64(x: f64) -> f64 {
    // |x| >= 2^52 has no fractional part; also leaves NaN/inf as they are.
    if x.is_nan() || x.abs() >= 4_503_599_627_370_496.0 {
        return x;
    }
    let t = x as i64 as f64;
    let frac = x - t;
    if frac >= 0.5 {
        t + 1.0
    } else if frac <= -0.5 {
        t - 1.0
    } else {
        t
    }
}

/// Same as [`round_half_away_f64`] for f32 (|x| >= 2^23 is already integral).
fn round_half_away_f32(x: f32) -> f32 {
    if x.is_nan() || x.abs() >= 8_388_608.0 {
        return x;
    }
    let t = x as i32 as f32;
    let frac = x - t;
    if frac >= 0.5 {
        t + 1.0
    } else if frac <= -0.5 {
        t - 1.0
    } else {
        t
    }
}

/// `frexp` for finite non-zero `x`: `x = f * 2^e` with `|f|` in `[0.5, 1)`.
fn frexp(x: f64) -> (f64, i32) {
    let bits = x.to_bits();
    let exp_field = ((bits >> 52) & 0x7ff) as i32;
    if exp_field == 0 {
        // Subnormal: scale into the normal range first (exact).
        let (f, e) = frexp(x * 18_014_398_509_481_984.0); // 2^54
        return (f, e - 54);
    }
    let e = exp_field - 1022;
    let f = f64::from_bits((bits & !(0x7ff << 52)) | (1022 << 52));
    (f, e)
}

/// TFLite's `QuantizeMultiplier`: the real multiplier `m` as a Q31 fixed-point
/// `quantized` and a power-of-two `shift` (> 0 is a left shift), so that
/// `m ~= quantized * 2^(shift - 31)`.
///
/// `m = 0`, non-finite `m` and `m < 2^-32` (shift below -31) give `(0, 0)`,
/// exactly like TFLite for the finite cases. Negative `m` is mirrored
/// (TFLite only defines `m >= 0`).
pub fn quantize_multiplier(m: f64) -> (i32, i32) {
    if m == 0.0 || !m.is_finite() {
        return (0, 0);
    }
    let (f, mut shift) = frexp(m);
    let mut q = round_half_away_f64(f * 2_147_483_648.0) as i64; // f * 2^31, |q| <= 2^31
    if q.abs() == 1 << 31 {
        q /= 2;
        shift += 1;
    }
    if shift < -31 {
        return (0, 0);
    }
    (q as i32, shift)
}

/// The per-channel multiplier of a Conv2D/Dense channel (and of the int8
/// BatchNormalization affine): `QuantizeMultiplier((f64)in * (f64)w / (f64)out)`,
/// in that order, so that host and file agree to the bit.
pub fn channel_multiplier(in_scale: f32, w_scale: f32, out_scale: f32) -> (i32, i32) {
    quantize_multiplier(in_scale as f64 * w_scale as f64 / out_scale as f64)
}

/// gemmlowp's `SaturatingRoundingDoublingHighMul`: `(a * b + 2^30) >> 31`
/// computed in i64 (ties toward +inf); `i32::MIN * i32::MIN` saturates.
pub fn saturating_rounding_doubling_high_mul(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    let ab = a as i64 * b as i64;
    // gemmlowp: nudge = ab >= 0 ? 2^30 : 1 - 2^30, then truncating division by 2^31.
    let nudge: i64 = if ab >= 0 { 1 << 30 } else { 1 - (1 << 30) };
    ((ab + nudge) / (1i64 << 31)) as i32
}

/// gemmlowp's `RoundingDivideByPOT`: `x / 2^exponent` rounded half away from zero.
///
/// `exponent` is clamped to `0..=31` so that a corrupted shift cannot panic.
pub fn rounding_divide_by_pot(x: i32, exponent: i32) -> i32 {
    let e = exponent.clamp(0, 31) as u32;
    let mask: i32 = ((1i64 << e) - 1) as i32;
    let remainder = x & mask;
    let threshold = (mask >> 1) + (x < 0) as i32;
    (x >> e) + (remainder > threshold) as i32
}

/// TFLite's `MultiplyByQuantizedMultiplier` with the double rounding of the
/// reference kernels: `RDBPOT(SRDHM(x * 2^max(shift, 0), m), max(-shift, 0))`.
///
/// The left shift saturates instead of overflowing (TFLite leaves that case
/// undefined; valid models never reach it: shift <= 30 and the engine checks it).
pub fn multiply_by_quantized_multiplier(x: i32, multiplier: i32, shift: i32) -> i32 {
    let left = shift.clamp(0, 31) as u32;
    let right = if shift < 0 { shift.saturating_neg() } else { 0 };
    let shifted =
        if left == 0 { x } else { (x as i64 * (1i64 << left)).clamp(i32::MIN as i64, i32::MAX as i64) as i32 };
    rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, multiplier), right)
}

/// Quantize one real value: `clamp(round_half_away(x / scale) + zp, -128, 127)`,
/// the division in f32 as TFLite does. NaN maps to the zero point.
pub fn quantize(x: f32, q: TensorQuant) -> i8 {
    let r = round_half_away_f32(x / q.scale);
    let v = if r.is_nan() { 0.0 } else { r } as f64 + q.zero_point as f64;
    v.clamp(-128.0, 127.0) as i8
}

/// `scale * (q - zero_point)`.
pub fn dequantize(v: i8, q: TensorQuant) -> f32 {
    q.scale * (v as i32 - q.zero_point) as f32
}

/// Symmetric per-channel weight scale: `max|w| / 127` (1.0 for an all-zero
/// channel, so that the scale is never 0 and the multiplier stays defined).
pub fn symmetric_scale(weights: &[f32]) -> f32 {
    let m = weights.iter().fold(0.0f32, |m, &w| if w.abs() > m { w.abs() } else { m });
    if m > 0.0 && m.is_finite() {
        m / 127.0
    } else {
        1.0
    }
}

/// Quantize a weight symmetrically to `[-127, 127]` with zero point 0.
pub fn quantize_weight(w: f32, scale: f32) -> i8 {
    let r = round_half_away_f32(w / scale);
    if r.is_nan() {
        0
    } else {
        r.clamp(-127.0, 127.0) as i8
    }
}

/// Quantize a bias to int32 at scale `in_scale * w_scale` (TFLite rounds the
/// f32 quotient half away from zero and saturates).
pub fn quantize_bias(b: f32, in_scale: f32, w_scale: f32) -> i32 {
    let s = in_scale * w_scale;
    let r = round_half_away_f64(b as f64 / s as f64);
    if r.is_nan() {
        0
    } else {
        r.clamp(i32::MIN as f64, i32::MAX as f64) as i32
    }
}

/// The affine quantization that covers the real range `[min, max]` (widened to
/// contain 0, as TFLite requires so that 0 is exactly representable), with a
/// zero point nudged into `[-128, 127]`.
pub fn choose_quant(min: f32, max: f32) -> TensorQuant {
    let min = if min.is_finite() { min.min(0.0) } else { 0.0 };
    let max = if max.is_finite() { max.max(0.0) } else { 0.0 };
    if max - min <= 0.0 {
        return TensorQuant { scale: 1.0, zero_point: 0 };
    }
    let scale = (max - min) / 255.0;
    let zp = -128.0 - min / scale;
    let zp = round_half_away_f32(zp).clamp(-128.0, 127.0) as i32;
    TensorQuant { scale, zero_point: zp }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frexp_matches_definition() {
        for &x in &[1.0f64, 0.5, 0.75, 3.0, 1e-300, 5e-324, 1e300, -2.5] {
            let (f, e) = frexp(x);
            assert!((0.5..1.0).contains(&f.abs()), "{x}: {f}");
            // Two steps: 2^e alone underflows for subnormal x.
            assert_eq!(f * 2f64.powi(e / 2) * 2f64.powi(e - e / 2), x);
        }
    }

    #[test]
    fn multiplier_edges() {
        assert_eq!(quantize_multiplier(0.0), (0, 0));
        assert_eq!(quantize_multiplier(0.5), (1 << 30, 0));
        assert_eq!(quantize_multiplier(1.0), (1 << 30, 1));
        assert_eq!(quantize_multiplier(f64::NAN), (0, 0));
        assert_eq!(quantize_multiplier(1e-12), (0, 0));
        // Rounds up to 2^31: renormalised.
        assert_eq!(quantize_multiplier(1.0 - 1e-12), (1 << 30, 1));
    }

    #[test]
    fn rdbpot_ties_away() {
        assert_eq!(rounding_divide_by_pot(5, 1), 3);
        assert_eq!(rounding_divide_by_pot(-5, 1), -3);
        assert_eq!(rounding_divide_by_pot(4, 1), 2);
        assert_eq!(rounding_divide_by_pot(i32::MIN, 31), -1);
        assert_eq!(rounding_divide_by_pot(i32::MAX, 31), 1);
        assert_eq!(saturating_rounding_doubling_high_mul(i32::MIN, i32::MIN), i32::MAX);
    }

    #[test]
    fn quantize_rounds_half_away() {
        let q = TensorQuant { scale: 0.5, zero_point: -3 };
        assert_eq!(quantize(0.25, q), -2);
        assert_eq!(quantize(-0.25, q), -4);
        assert_eq!(quantize(1e9, q), 127);
        assert_eq!(quantize(-1e9, q), -128);
        assert_eq!(quantize(f32::NAN, q), -3);
        assert_eq!(dequantize(-2, q), 0.5);
    }
}
