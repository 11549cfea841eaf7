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

/// gemmlowp's `SaturatingRoundingMultiplyByPOT<exponent>` for `exponent >= 0`:
/// `x * 2^exponent`, saturated to the i32 range (the `Rescale` to fewer
/// integer bits in its fixed-point types).
pub fn saturating_shift_left(x: i32, exponent: u32) -> i32 {
    ((x as i64) << exponent.min(32)).clamp(i32::MIN as i64, i32::MAX as i64) as i32
}

/// gemmlowp's `RoundingHalfSum` on int32: `(a + b + sign) / 2` in i64,
/// rounded half away from zero.
pub fn rounding_half_sum(a: i32, b: i32) -> i32 {
    let sum = a as i64 + b as i64;
    let sign = if sum >= 0 { 1 } else { -1 };
    ((sum + sign) / 2) as i32
}

/// gemmlowp's `exp_on_interval_between_negative_one_quarter_and_0_excl`:
/// `exp(a)` for `a` in `[-1/4, 0)`, both Q0.31 raws (a Taylor expansion
/// around -1/8 to the fourth order).
fn exp_on_quarter_interval(a: i32) -> i32 {
    const EXP_MINUS_ONE_EIGHTH: i32 = 1_895_147_668; // exp(-1/8) in Q0.31
    const ONE_THIRD: i32 = 715_827_883; // 1/3 in Q0.31
    let mul = saturating_rounding_doubling_high_mul;
    let x = a.wrapping_add(1 << 28); // a + 1/8
    let x2 = mul(x, x);
    let x3 = mul(x2, x);
    let x4 = mul(x2, x2);
    let x4_over_4 = rounding_divide_by_pot(x4, 2);
    let poly = rounding_divide_by_pot(mul(x4_over_4.wrapping_add(x3), ONE_THIRD).wrapping_add(x2), 1);
    EXP_MINUS_ONE_EIGHTH.wrapping_add(mul(EXP_MINUS_ONE_EIGHTH, x.wrapping_add(poly)))
}

/// Integer bits of the softmax's scaled input differences (TFLite's
/// `kScaledDiffIntegerBits`): [`exp_on_negative_values`] takes Q5.26.
pub const SOFTMAX_DIFF_INTEGER_BITS: i32 = 5;
/// Integer bits of the softmax's sum of exponentials (`kAccumulationIntegerBits`): Q12.19.
pub const SOFTMAX_ACCUM_INTEGER_BITS: i32 = 12;

/// gemmlowp's `exp_on_negative_values` on `FixedPoint<int32, 5>`: `exp(a)`
/// for a Q5.26 raw `a <= 0`, as a Q0.31 raw (`exp(0)` is `i32::MAX`). The
/// fractional part modulo 1/4 goes through `exp_on_quarter_interval`, and
/// each set bit of the rest multiplies by the constant `exp(-2^k)`.
pub fn exp_on_negative_values(a: i32) -> i32 {
    const FRACTIONAL_BITS: i32 = 31 - SOFTMAX_DIFF_INTEGER_BITS;
    const ONE_QUARTER: i32 = 1 << (FRACTIONAL_BITS - 2);
    // exp(-2^k) in Q0.31 for k = -2..=4 (the integer bits of Q5.26 reach 2^4).
    const BARREL: [(i32, i32); 7] = [
        (-2, 1_672_461_947),
        (-1, 1_302_514_674),
        (0, 790_015_084),
        (1, 290_630_308),
        (2, 39_332_535),
        (3, 720_401),
        (4, 242),
    ];
    let a_mod_quarter_minus_quarter = (a & (ONE_QUARTER - 1)).wrapping_sub(ONE_QUARTER);
    let mut result = exp_on_quarter_interval(saturating_shift_left(a_mod_quarter_minus_quarter, 5));
    let remainder = a_mod_quarter_minus_quarter.wrapping_sub(a);
    for (k, multiplier) in BARREL {
        if remainder & (1 << (FRACTIONAL_BITS + k)) != 0 {
            result = saturating_rounding_doubling_high_mul(result, multiplier);
        }
    }
    if a == 0 {
        i32::MAX
    } else {
        result
    }
}

/// gemmlowp's `one_over_one_plus_x_for_x_in_0_1`: `1 / (1 + x)` for a Q0.31
/// raw `x` in `[0, 1)`, as a Q0.31 raw (three Newton-Raphson steps from
/// 48/17 - 32/17 d on the half denominator `d`, in Q2.29).
pub fn one_over_one_plus_x_for_x_in_0_1(x: i32) -> i32 {
    const F48_OVER_17: i32 = 1_515_870_810; // Q2.29
    const NEG_F32_OVER_17: i32 = -1_010_580_540; // Q2.29
    const ONE_Q2: i32 = 1 << 29;
    let mul = saturating_rounding_doubling_high_mul;
    let half_denominator = rounding_half_sum(x, i32::MAX);
    let mut r = F48_OVER_17.wrapping_add(mul(half_denominator, NEG_F32_OVER_17));
    for _ in 0..3 {
        let one_minus = ONE_Q2.wrapping_sub(mul(half_denominator, r));
        r = r.wrapping_add(saturating_shift_left(mul(r, one_minus), 2));
    }
    saturating_shift_left(r, 1)
}

/// TFLite's `GetReciprocal`: for a positive fixed-point `x` with
/// `integer_digits` integer bits, `(1 / x` scaled into Q0.31 by
/// `2^num_bits_over_unit`, `num_bits_over_unit)`. `x = 0` (which the softmax
/// never sums to) gives the reciprocal of 1 with `integer_digits - 32` bits.
pub fn get_reciprocal(x: i32, integer_digits: i32) -> (i32, i32) {
    let headroom_plus_one = (x as u32).leading_zeros();
    let num_bits_over_unit = integer_digits - headroom_plus_one as i32;
    let shifted = (x as u32).checked_shl(headroom_plus_one).unwrap_or(0);
    let shifted_minus_one = shifted.wrapping_sub(1 << 31) as i32;
    (one_over_one_plus_x_for_x_in_0_1(shifted_minus_one), num_bits_over_unit)
}

/// TFLite's `PreprocessSoftmaxScaling` then `QuantizeMultiplierGreaterThanOne`
/// (the double-rounding build): the multiplier taking an int8 input
/// difference to Q5.26, `min(beta * input_scale * 2^26, 2^31 - 1)` as
/// `(quantized, left_shift)`; `None` when that is not above 1 (TFLite
/// aborts there: an input scale below 2^-26).
pub fn softmax_input_multiplier(beta: f64, input_scale: f64) -> Option<(i32, i32)> {
    let real = (beta * input_scale * (1u64 << (31 - SOFTMAX_DIFF_INTEGER_BITS)) as f64).min(2_147_483_647.0);
    // Not above 1, or NaN.
    if real.partial_cmp(&1.0) != Some(core::cmp::Ordering::Greater) {
        return None;
    }
    let (m, shift) = quantize_multiplier(real);
    (shift >= 0).then_some((m, shift))
}

/// TFLite's `CalculateInputRadius(integer_bits, left_shift, 31)`: the largest
/// input difference whose rescaled value still fits Q`integer_bits`
/// (`floor((2^ib - 1) * 2^(31 - ib) / 2^left_shift)`); the softmax counts
/// differences below `-radius` as probability 0.
pub fn calculate_input_radius(integer_bits: i32, left_shift: i32) -> i32 {
    let ib = integer_bits.clamp(0, 31);
    let max = ((1u64 << ib) - 1) as f64 * (1u64 << (31 - ib)) as f64 / (1u64 << left_shift.clamp(0, 62)) as f64;
    // Floor of a non-negative value below 2^31.
    max as i32
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
