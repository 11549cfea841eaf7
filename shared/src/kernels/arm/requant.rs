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

/// `QADD r, a, a`: `2 a`, saturated to the i32 range.
#[cfg(arm_dsp)]
#[inline(always)]
fn qdouble(a: i32) -> i32 {
    let r: i32;
    // SAFETY: registers only; the sticky Q flag is not read by any code here.
    unsafe { core::arch::asm!("qadd {r}, {a}, {a}", r = lateout(reg) r, a = in(reg) a, options(pure, nomem, nostack)) };
    r
}

/// `SMMULR r, a, b`: `(a b + 2^31) >> 32`, the rounded high word.
#[cfg(arm_dsp)]
#[inline(always)]
fn smmulr(a: i32, b: i32) -> i32 {
    let r: i32;
    // SAFETY: registers only, no flags.
    unsafe {
        core::arch::asm!("smmulr {r}, {a}, {b}", r = lateout(reg) r, a = in(reg) a, b = in(reg) b,
            options(pure, nomem, nostack, preserves_flags))
    };
    r
}

/// [`qdouble`] in plain Rust (the host's tests).
#[cfg(not(arm_dsp))]
#[inline(always)]
fn qdouble(a: i32) -> i32 {
    a.saturating_add(a)
}

/// [`smmulr`] in plain Rust (the host's tests).
#[cfg(not(arm_dsp))]
#[inline(always)]
fn smmulr(a: i32, b: i32) -> i32 {
    ((a as i64 * b as i64 + (1i64 << 31)) >> 32) as i32
}

/// [`requantize`] in about 8 instructions before the clamp, for the
/// channels whose multiplier is normalized (`m >= 2^30`, as
/// QuantizeMultiplier gives) and whose shift is a right shift by 1 to 21
/// (every layer of the MLPerf Tiny models); [`Fast::new`] says `None` for
/// the others, which take [`Channel`] or [`requantize`].
///
/// - `SaturatingRoundingDoublingHighMul(acc, m)` is `(2 acc m + 2^31) >> 32`,
///   one `SMMULR` of `2 acc` (`QADD`) when `2 acc` fits an i32. When it does
///   not (`|acc| >= 2^30`) the doubled value saturates; then both the exact
///   high product and `SMMULR`'s have magnitude at least `2^29`, so after a
///   right shift by at most 21 at least 256: the zero point cannot bring
///   either back inside `[-128, 127]`, and both clamp to the same bound.
/// - RoundingDivideByPOT(v, e) (ties away from zero) is
///   `(v + (v < 0 ? -1 : 0) + 2^(e-1)) >> e` for `e >= 1` (with
///   `v = q 2^e + r`, `0 <= r < 2^e`: both add 1 to `q` exactly when
///   `r >= 2^(e-1)` for `v >= 0`, `r > 2^(e-1)` for `v < 0`); `|v| <= 2^30`
///   here, so the sum never wraps.
#[derive(Clone, Copy)]
pub(crate) struct Fast {
    multiplier: i32,
    exponent: i32,
    round: i32,
}

impl Fast {
    /// The fast stage for `(multiplier, shift)`, or `None` outside its domain.
    #[inline(always)]
    pub(crate) fn new(multiplier: i32, shift: i32) -> Option<Self> {
        if multiplier >= 1 << 30 && (-21..=-1).contains(&shift) {
            let exponent = -shift;
            Some(Fast { multiplier, exponent, round: 1 << (exponent - 1) })
        } else {
            None
        }
    }

    /// [`mbqm`]`(x, multiplier, shift)` for `|x| < 2^30` (ADD's input
    /// scaling): the doubling never saturates, so the rounded high product
    /// and the rounding shift are exact (see the type's docs).
    #[inline(always)]
    pub(crate) fn scale(&self, x: i32) -> i32 {
        let v = smmulr(x << 1, self.multiplier);
        (v + (v >> 31) + self.round) >> self.exponent
    }
}

/// The output stage of a layer's channel: [`requantize`]'s byte in about 7
/// instructions, for a normalized multiplier (`m >= 2^30`, as
/// QuantizeMultiplier gives) and a right shift by 0 to 21 (every channel of
/// the MLPerf Tiny models); [`Output::new`] says `None` for the others.
///
/// It is [`Fast`]'s arithmetic (see there) with the shift by 0 admitted
/// (RoundingDivideByPOT by 1 is the identity: no rounding term, no sign
/// correction, hence `neg`) and the zero point added before the shift:
/// `((v + (v < 0 ? -1 : 0) + 2^(e-1)) >> e) + zp` is
/// `(v + (v < 0 ? -1 : 0) + 2^(e-1) + zp 2^e) >> e` exactly (adding a
/// multiple of `2^e` before an arithmetic shift), and `|v| <= 2^30`,
/// `2^(e-1) <= 2^20`, `|zp 2^e| <= 2^28` never wrap. With the full int8
/// clamp (the converter's ReLU and ReLU6 outputs have zero point -128 and so
/// clamp to `[-128, 127]` as well) the clamp is one `SSAT`.
#[derive(Clone, Copy)]
pub(crate) struct Output {
    multiplier: i32,
    exponent: i32,
    /// `2^(e-1) + zp 2^e` (`zp` for `e = 0`).
    offset: i32,
    /// -1 where `e >= 1` (the sign correction applies), 0 for `e = 0`.
    neg: i32,
}

/// One output byte of a rounding [`Output`] stage in assembly,
/// [`Output::apply_full_rounding`]'s `SSAT8((SMMLAR(QADD(a, a), m, offset) +
/// (a >> 31)) >> e)` in 5 instructions, then `$store`: the register names
/// are the caller's (accumulator, scratch, multiplier, offset, exponent).
#[cfg(arm_dsp)]
macro_rules! rounding_byte {
    ($a:literal, $t:literal, $m:literal, $off:literal, $e:literal, $store:literal) => {
        concat!(
            "qadd ",
            $t,
            ", ",
            $a,
            ", ",
            $a,
            "\n",
            "smmlar ",
            $t,
            ", ",
            $t,
            ", ",
            $m,
            ", ",
            $off,
            "\n",
            "add ",
            $t,
            ", ",
            $t,
            ", ",
            $a,
            ", asr #31\n",
            "asr ",
            $t,
            ", ",
            $t,
            ", ",
            $e,
            "\n",
            "ssat ",
            $t,
            ", #8, ",
            $t,
            "\n",
            $store,
            "\n",
        )
    };
}
#[cfg(arm_dsp)]
pub(crate) use rounding_byte;

impl Output {
    /// The stage for `(multiplier, shift)` and the output zero point
    /// `out_zp` (in `[-128, 127]`), or `None` outside its domain.
    #[inline(always)]
    pub(crate) fn new(multiplier: i32, shift: i32, out_zp: i32) -> Option<Self> {
        Self::accepts(multiplier, shift).then(|| Self::new_accepted(multiplier, shift, out_zp))
    }

    /// Whether [`Output::new`] takes `(multiplier, shift)`.
    #[inline(always)]
    pub(crate) fn accepts(multiplier: i32, shift: i32) -> bool {
        multiplier >= 1 << 30 && (-21..=0).contains(&shift)
    }

    /// [`Output::new`] for a pair that [`Output::accepts`] (outside it, a
    /// stage with wrong bytes, never undefined behaviour).
    #[inline(always)]
    pub(crate) fn new_accepted(multiplier: i32, shift: i32, out_zp: i32) -> Self {
        let e = shift.wrapping_neg() & 31;
        // 2^(e-1) + zp 2^e, which is ((2 zp + 1) 2^e) / 2 exactly for e >= 1,
        // and zp for e = 0 ((2 zp + 1) >> 1 rounds down to zp).
        let offset = ((2 * out_zp + 1) << e) >> 1;
        // -1 for shift < 0, 0 for shift 0: one arithmetic shift.
        Output { multiplier, exponent: e, offset, neg: shift >> 31 }
    }

    /// [`Output::new`] for `N` consecutive channels from `first`, or `None`
    /// if any channel is outside its domain.
    #[inline(always)]
    pub(crate) fn block<const N: usize>(
        multiplier: &[i32],
        shift: &[i32],
        first: usize,
        out_zp: i32,
    ) -> Option<[Output; N]> {
        let mut out = [Output { multiplier: 1 << 30, exponent: 0, offset: 0, neg: 0 }; N];
        for (j, o) in out.iter_mut().enumerate() {
            *o = Output::new(multiplier[first + j], shift[first + j], out_zp)?;
        }
        Some(out)
    }

    /// The stage's value before the clamp.
    #[inline(always)]
    fn value(&self, acc: i32) -> i32 {
        let v = smmulr(qdouble(acc), self.multiplier);
        (v + ((v >> 31) & self.neg) + self.offset) >> self.exponent
    }

    /// `requantize(acc, multiplier, shift, p)` with `lo..=hi` =
    /// `p.act_min.max(-128)..=p.act_max.min(127)`: the same byte.
    #[inline(always)]
    pub(crate) fn apply(&self, acc: i32, lo: i32, hi: i32) -> i8 {
        self.value(acc).clamp(lo, hi) as i8
    }

    /// [`Output::apply`] for the clamp `[-128, 127]`.
    #[inline(always)]
    pub(crate) fn apply_full(&self, acc: i32) -> i8 {
        ssat8(self.value(acc))
    }

    /// [`Output::apply_full`] for a stage that [`Output::rounds`], the way
    /// the assembly computes it: `SSAT8((SMMLAR(QADD(a, a), m, offset) + (a
    /// >> 31)) >> e)`, the offset added inside the multiply and the rounding's
    /// sign correction taken from the accumulator instead of the product.
    /// The two signs differ only when the product rounds to 0, and there both
    /// give the zero point (`(2^(e-1) + zp 2^e - 1) >> e = zp` for `e >= 1`).
    #[inline(always)]
    pub(crate) fn apply_full_rounding(&self, acc: i32) -> i8 {
        let v = self.offset.wrapping_add(smmulr(qdouble(acc), self.multiplier));
        ssat8(v.wrapping_add(acc >> 31) >> self.exponent)
    }

    /// Six accumulators' [`Output::apply_full_rounding`] bytes written `step`
    /// bytes apart from `y`, for a stage that rounds (`neg` = -1, a right
    /// shift of 1 to 21): 7 instructions a byte, its constants and pointer in
    /// registers (as Rust, the six addresses and accumulators were spilled
    /// around the dot product: ~15 a byte).
    ///
    /// # Safety
    /// The six bytes `y + px * step` must be writable; `self.neg` must be -1.
    #[cfg(arm_dsp)]
    #[inline(always)]
    pub(crate) unsafe fn store6_full(&self, a: [i32; 6], y: *mut i8, step: usize) {
        macro_rules! one {
            ($a:literal) => {
                concat!(rounding_byte!($a, "{t}", "{m}", "{off}", "{e}", "strb {t}, [{y}]"), "add {y}, {y}, {s}\n")
            };
        }
        // SAFETY: six byte stores at y, y + step, ..., in bounds by the
        // caller's contract; registers only otherwise (QADD's sticky Q flag
        // is read by nothing here).
        unsafe {
            core::arch::asm!(
                one!("{a0}"),
                one!("{a1}"),
                one!("{a2}"),
                one!("{a3}"),
                one!("{a4}"),
                one!("{a5}"),
                a0 = in(reg) a[0],
                a1 = in(reg) a[1],
                a2 = in(reg) a[2],
                a3 = in(reg) a[3],
                a4 = in(reg) a[4],
                a5 = in(reg) a[5],
                m = in(reg) self.multiplier,
                off = in(reg) self.offset,
                e = in(reg) self.exponent,
                y = inout(reg) y => _,
                s = in(reg) step,
                t = out(reg) _,
                options(nostack, preserves_flags),
            );
        }
    }

    /// [`Output::store6_full`] in plain Rust (the host's tests).
    ///
    /// # Safety
    /// As the Arm version.
    #[cfg(not(arm_dsp))]
    pub(crate) unsafe fn store6_full(&self, a: [i32; 6], y: *mut i8, step: usize) {
        debug_assert_eq!(self.neg, -1);
        for (px, &v) in a.iter().enumerate() {
            // SAFETY: the caller's contract.
            unsafe { y.add(px * step).write(self.apply_full_rounding(v)) };
        }
    }

    /// `(multiplier, offset, exponent)`: what the assembly loops load.
    #[cfg(arm_dsp)]
    #[inline(always)]
    pub(crate) fn parts(&self) -> (i32, i32, i32) {
        (self.multiplier, self.offset, self.exponent)
    }

    /// Whether the stage rounds (a right shift of 1 to 21): what
    /// [`Output::store6_full`] takes.
    #[inline(always)]
    pub(crate) fn rounds(&self) -> bool {
        self.neg == -1
    }
}

/// Whether the clamp `lo..=hi` is the whole int8 range ([`Output::apply_full`]).
#[inline(always)]
pub(crate) fn is_full(lo: i32, hi: i32) -> bool {
    lo == -128 && hi == 127
}

/// `SSAT r, #8, x`: `x` clamped to `[-128, 127]`.
#[cfg(arm_dsp)]
#[inline(always)]
fn ssat8(x: i32) -> i8 {
    let r: i32;
    // SAFETY: registers only; the sticky Q flag is not read by any code here.
    unsafe { core::arch::asm!("ssat {r}, #8, {x}", r = lateout(reg) r, x = in(reg) x, options(pure, nomem, nostack)) };
    r as i8
}

/// [`ssat8`] in plain Rust (the host's tests).
#[cfg(not(arm_dsp))]
#[inline(always)]
fn ssat8(x: i32) -> i8 {
    x.clamp(-128, 127) as i8
}

/// [`mbqm`]`(x, multiplier, 0)` for `|x| < 2^30` and `multiplier >= 2^30`
/// (ADD's larger input: its real multiplier is exactly 1/2, shift 0): the
/// rounded high product alone, one `SMMULR` of `2 x`.
#[derive(Clone, Copy)]
pub(crate) struct Unshifted(i32);

impl Unshifted {
    /// The stage for `(multiplier, 0)`, or `None` outside its domain.
    #[inline(always)]
    pub(crate) fn new(multiplier: i32, shift: i32) -> Option<Self> {
        (multiplier >= 1 << 30 && shift == 0).then_some(Unshifted(multiplier))
    }

    /// The multiplier (the assembly's `SMMULR` operand).
    #[cfg(arm_dsp)]
    #[inline(always)]
    pub(crate) fn multiplier(&self) -> i32 {
        self.0
    }

    /// [`mbqm`]`(x, multiplier, 0)`, `|x| < 2^30`.
    #[inline(always)]
    pub(crate) fn scale(&self, x: i32) -> i32 {
        smmulr(x << 1, self.0)
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

    /// The output stage against the plain requantization on its whole domain's
    /// edges: accumulators near the doubling's saturation, every exponent,
    /// the extreme multipliers, zero points and clamps.
    #[test]
    fn output_stage_gives_the_plain_byte() {
        let mut state = 11u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 32) as i32
        };
        let accs = [
            i32::MIN,
            i32::MIN + 1,
            -(1 << 30) - 1,
            -(1 << 30),
            -(1 << 30) + 1,
            -1,
            0,
            1,
            (1 << 30) - 1,
            1 << 30,
            (1 << 30) + 1,
            i32::MAX,
        ];
        assert!(Fast::new((1 << 30) - 1, -5).is_none() && Fast::new(1 << 30, 0).is_none());
        assert!(Fast::new(1 << 30, -22).is_none() && Fast::new(i32::MAX, -21).is_some());
        assert!(Output::new((1 << 30) - 1, -5, 0).is_none() && Output::new(1 << 30, 1, 0).is_none());
        assert!(Output::new(1 << 30, -22, 0).is_none() && Output::new(i32::MAX, -21, 0).is_some());
        assert!(Output::new(1 << 30, 0, -128).is_some());
        for i in 0..400_000 {
            let act = [Activation::None, Activation::Relu, Activation::Relu6][i % 3];
            let p = Int8Params::new(next() % 129, next() % 129, act);
            let (lo, hi) = (p.act_min.max(-128), p.act_max.min(127));
            let m = if i % 5 == 0 { [1 << 30, i32::MAX][i % 2] } else { (next() & i32::MAX).max(1 << 30) };
            // Shifts -21..=0, 0 one time in seven.
            let s = if i % 7 == 0 { 0 } else { -(1 + (next().rem_euclid(21))) };
            let acc =
                if i % 4 == 0 { accs[(next() as u32 % accs.len() as u32) as usize] } else { next() >> (next() & 31) };
            let want = int8::requantize(acc, m, s, &p);
            let o = Output::new(m, s, p.out_zp).expect("in the domain");
            assert_eq!(o.apply(acc, lo, hi), want, "{acc} {m} {s} {p:?}");
            if is_full(lo, hi) {
                assert_eq!(o.apply_full(acc), want, "{acc} {m} {s} {p:?}");
                if o.rounds() {
                    assert_eq!(o.apply_full_rounding(acc), want, "{acc} {m} {s} {p:?}");
                }
            }
        }
    }

    /// [`Output::apply_full_rounding`]'s sign correction from the accumulator:
    /// where the product rounds to 0 from below (small negative accumulators,
    /// every exponent and zero point), the byte is still the plain one.
    #[test]
    fn output_rounding_by_the_accumulators_sign() {
        for s in -21..=-1 {
            for zp in [-128, -1, 0, 5, 127] {
                let p = Int8Params::new(0, zp, Activation::None);
                for m in [1 << 30, (1 << 30) + 12345, i32::MAX] {
                    let o = Output::new(m, s, zp).expect("in the domain");
                    for acc in (-4096..=4096).chain([i32::MIN, i32::MIN + 1, i32::MAX]) {
                        assert_eq!(o.apply_full_rounding(acc), int8::requantize(acc, m, s, &p), "{acc} {m} {s} {zp}");
                    }
                }
            }
        }
    }

    /// [`Fast::scale`] against [`mbqm`] on its domain's edges and random values.
    #[test]
    fn fast_scale_gives_the_plain_result() {
        let mut state = 5u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 32) as i32
        };
        let xs = [-(1 << 30) + 1, -(1 << 29), -1, 0, 1, 1 << 29, (1 << 30) - 1];
        for i in 0..400_000 {
            let m = if i % 5 == 0 { [1 << 30, i32::MAX][i % 2] } else { (next() & i32::MAX).max(1 << 30) };
            let s = -(1 + (next().rem_euclid(21)));
            let x = if i % 4 == 0 {
                xs[(next() as u32 % xs.len() as u32) as usize]
            } else {
                (next() >> 2) >> (next() & 31)
            };
            let f = Fast::new(m, s).expect("in the domain");
            assert_eq!(f.scale(x), mbqm(x, m, s), "{x} {m} {s}");
            let u = Unshifted::new(m, 0).expect("in the domain");
            assert_eq!(u.scale(x), mbqm(x, m, 0), "{x} {m} 0");
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
