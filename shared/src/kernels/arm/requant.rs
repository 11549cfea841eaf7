//! The output stage of the DSP kernels: [`crate::kernels::generic::int8::requantize`]'s
//! exact result in fewer instructions (about 40 on the Cortex-M4 for the
//! plain one, which spells out gemmlowp's nudge and its truncating division
//! by 2^31 in 64 bits).
//!
//! `SaturatingRoundingDoublingHighMul(a, b)` is `(a b + 2^30) >> 31` with an
//! arithmetic shift (QUANT-SPEC.md: for `a b < 0`, gemmlowp's
//! `trunc((a b + 1 - 2^30) / 2^31)` equals `floor((a b + 2^30) / 2^31)`),
//! one `SMLAL` and a funnel shift; the only result that does not fit an i32
//! is `a = b = i32::MIN`, whose `2^31` saturates to `i32::MAX` as gemmlowp's
//! special case does. The rounding right shift and the clamps are the plain
//! kernel's. The unit tests hold it to the plain function on the golden
//! gemmlowp vectors' shapes, random values and every edge.

use crate::kernels::generic::int8::Int8Params;

/// [`crate::quant::multiply_by_quantized_multiplier`], the same result.
#[inline(always)]
pub(crate) fn mbqm(x: i32, multiplier: i32, shift: i32) -> i32 {
    let left = shift.clamp(0, 31) as u32;
    let shifted =
        if left == 0 { x } else { (x as i64 * (1i64 << left)).clamp(i32::MIN as i64, i32::MAX as i64) as i32 };
    let high = ((shifted as i64 * multiplier as i64 + (1i64 << 30)) >> 31).min(i32::MAX as i64) as i32;
    let e = if shift < 0 { shift.saturating_neg().min(31) as u32 } else { 0 };
    let mask = ((1u32 << e) - 1) as i32;
    let threshold = (mask >> 1) + (high < 0) as i32;
    (high >> e) + ((high & mask) > threshold) as i32
}

/// [`crate::kernels::generic::int8::requantize`], the same byte.
#[inline(always)]
pub(crate) fn requantize(acc: i32, multiplier: i32, shift: i32, p: &Int8Params) -> i8 {
    let v = mbqm(acc, multiplier, shift).saturating_add(p.out_zp);
    v.clamp(p.act_min.max(-128), p.act_max.min(127)) as i8
}

/// [`requantize`] for one channel, its constants computed once: the same
/// bytes, about 15 instructions an output instead of 25.
#[derive(Clone, Copy)]
pub(crate) struct Channel {
    multiplier: i32,
    shift: i32,
    exponent: u32,
    mask: i32,
    half: i32,
}

impl Channel {
    #[inline(always)]
    pub(crate) fn new(multiplier: i32, shift: i32) -> Self {
        let exponent = if shift < 0 { shift.saturating_neg().min(31) as u32 } else { 0 };
        let mask = ((1u32 << exponent) - 1) as i32;
        Channel { multiplier, shift, exponent, mask, half: mask >> 1 }
    }

    /// Whether [`Channel::apply`] takes its short path (no left shift, no
    /// saturating product): then [`Channel::apply_short`] gives its result.
    #[inline(always)]
    pub(crate) fn is_short(&self) -> bool {
        self.shift <= 0 && self.multiplier != i32::MIN
    }

    /// [`Channel::apply`] when [`Channel::is_short`], with the clamp
    /// `lo..=hi` (`p.act_min.max(-128)`, `p.act_max.min(127)`) and `out_zp`
    /// held by the caller.
    #[inline(always)]
    pub(crate) fn apply_short(&self, acc: i32, out_zp: i32, lo: i32, hi: i32) -> i8 {
        let high = ((acc as i64 * self.multiplier as i64 + (1i64 << 30)) >> 31) as i32;
        let threshold = self.half + (high < 0) as i32;
        let v = (high >> self.exponent) + ((high & self.mask) > threshold) as i32;
        v.saturating_add(out_zp).clamp(lo, hi) as i8
    }

    /// [`mbqm`]`(x, multiplier, shift)` when [`Channel::is_short`]: the
    /// rounded high product, no zero point, no clamp (ADD's input scaling).
    #[inline(always)]
    pub(crate) fn scale_short(&self, x: i32) -> i32 {
        let high = ((x as i64 * self.multiplier as i64 + (1i64 << 30)) >> 31) as i32;
        let threshold = self.half + (high < 0) as i32;
        (high >> self.exponent) + ((high & self.mask) > threshold) as i32
    }

    /// `requantize(acc, multiplier, shift, p)`.
    #[inline(always)]
    pub(crate) fn apply(&self, acc: i32, p: &Int8Params) -> i8 {
        if self.shift > 0 || self.multiplier == i32::MIN {
            // A left shift or the one product that saturates: the general path.
            return requantize(acc, self.multiplier, self.shift, p);
        }
        // With multiplier > i32::MIN the high half always fits an i32.
        let high = ((acc as i64 * self.multiplier as i64 + (1i64 << 30)) >> 31) as i32;
        let threshold = self.half + (high < 0) as i32;
        let v = (high >> self.exponent) + ((high & self.mask) > threshold) as i32;
        v.saturating_add(p.out_zp).clamp(p.act_min.max(-128), p.act_max.min(127)) as i8
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::generic::int8;
    use crate::quant::multiply_by_quantized_multiplier;
    use crate::spec::Activation;

    #[test]
    fn mbqm_gives_the_plain_result_on_edges_and_random_values() {
        let edges = [
            i32::MIN,
            i32::MIN + 1,
            -(1 << 30) - 1,
            -(1 << 30),
            -65536,
            -2,
            -1,
            0,
            1,
            2,
            65535,
            1 << 30,
            i32::MAX - 1,
            i32::MAX,
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 32) as i32
        };
        for shift in -33..=33 {
            for &x in &edges {
                for &m in &edges {
                    assert_eq!(mbqm(x, m, shift), multiply_by_quantized_multiplier(x, m, shift), "{x} {m} {shift}");
                }
            }
            for _ in 0..3000 {
                let (x, m) = (next() >> (next() & 31), next());
                let m = if m & 1 == 0 { m.abs().max(1 << 30) } else { m };
                assert_eq!(mbqm(x, m, shift), multiply_by_quantized_multiplier(x, m, shift), "{x} {m} {shift}");
            }
        }
    }

    #[test]
    fn requantize_gives_the_plain_byte() {
        let mut state = 7u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 32) as i32
        };
        for i in 0..200_000 {
            let p = Int8Params::new(
                next() % 129,
                next() % 129,
                if i % 2 == 0 { Activation::Relu } else { Activation::None },
            );
            let (acc, m, s) = (next() >> (next() & 31), (next() & i32::MAX).max(1 << 30), next().rem_euclid(62) - 31);
            let want = int8::requantize(acc, m, s, &p);
            assert_eq!(requantize(acc, m, s, &p), want, "{acc} {m} {s} {p:?}");
            let ch = Channel::new(m, s);
            assert_eq!(ch.apply(acc, &p), want, "{acc} {m} {s} {p:?}");
            if ch.is_short() {
                let (lo, hi) = (p.act_min.max(-128), p.act_max.min(127));
                assert_eq!(ch.apply_short(acc, p.out_zp, lo, hi), want, "{acc} {m} {s} {p:?}");
                assert_eq!(ch.scale_short(acc), multiply_by_quantized_multiplier(acc, m, s), "{acc} {m} {s}");
            }
            let m2 = if i % 7 == 0 { i32::MIN } else { next() };
            assert_eq!(Channel::new(m2, s).apply(acc, &p), int8::requantize(acc, m2, s, &p), "{acc} {m2} {s}");
        }
    }
}
