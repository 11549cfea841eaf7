//! Cortex-M variants of the f16 kernels on the single-precision FPU
//! (Cortex-M4F/M7F on `thumbv7em-none-eabihf`, Cortex-M33 on
//! `thumbv8m.main-none-eabihf`), each giving exactly the bits of the plain
//! kernel in [`crate::kernels::generic::f16`].
//!
//! Both FPUs convert half to single precision in one instruction (`VCVTB`
//! for the low half of a register, `VCVTT` for the high half) and multiply
//! and accumulate without fusing (`VMLA.F32` rounds after the multiply and
//! after the add). The product of two f16 values is exact in f32, so `VMLA`
//! adds exactly the plain kernel's products; every accumulator adds them in
//! the plain kernel's order (kernel row, column, input channel), so its sum
//! has the same bits. The plain kernel's software conversions cost ~30
//! instructions a multiply-accumulate; these kernels take about 2.3.
//!
//! Conv2D ([`conv2d_rows`]) runs register blocks of [`PX`] output pixels by
//! [`CH`] output channels: the inner loop loads one word (two taps) of each
//! pixel's input run and each channel's weights, widens both halves, and
//! does 24 `VMLA`s (54 instructions for 24 multiply-accumulates). A block's
//! pixels may lie in different rows, or at the image's edge where their taps
//! differ: the taps are then walked as runs shared by a subset of the
//! pixels ([`Segment`]), and the pixels outside the subset get their
//! accumulators back unchanged after the run. Padding taps are never
//! multiplied (an infinite weight times a zero pad would be NaN, where the
//! plain kernel skips the tap). Dense ([`dense`]) runs [`UNITS`] units over
//! one input stream. BatchNormalization and MaxPool2D use the hardware
//! conversions one value at a time.
//!
//! The bits also depend on the FPU's mode: [`ieee_mode`] sets the IEEE
//! defaults (round to nearest even, no flush-to-zero, IEEE half precision,
//! NaN propagation on), as the reset value of FPSCR has them. Flush-to-zero
//! could not change a bit anyway (no f32 result of these kernels is
//! subnormal, see [`crate::kernels::generic::f16`]), and NaN results are
//! stored as the canonical NaN whatever their sign or payload.
//!
//! `build.rs` sets `cfg(arm_fpu)` for the hard-float Arm targets; there the
//! inner loops are `asm!` blocks. Anywhere else (the host's unit tests) the
//! same functions are plain Rust with the instructions' semantics, so the
//! blocking and the segment walk are tested on the host against the plain
//! kernel; on the device, tests/device.rs compares every layer's bits.

// Register blocks index the same way the formulas do.
#![allow(clippy::needless_range_loop)]

use half::f16;

use crate::geometry::{ConvGeom, PoolGeom};
use crate::kernels::generic::f16::{relu_f32, CANONICAL_NAN};
use crate::kernels::generic::pool::max_pool_by;
use crate::model::F16Weights;

/// Output pixels per Conv2D register block.
pub const PX: usize = 4;
/// Output channels per Conv2D register block (4 x 3 accumulators, 4 x 2
/// input and 3 x 2 weight values: 26 of the 32 single registers).
pub const CH: usize = 3;
/// Output channels whose accumulators stay on the stack while one segment's
/// input pointers are reused (768 bytes).
const GROUP: usize = 16 * CH;
/// Dense units per block (8 accumulators, 2 input and 16 weight values).
pub const UNITS: usize = 8;

// ---------------------------------------------------------------------------
// The FPU's instructions.

/// `VMOV s, r; VCVTB.F32.F16 s, s`: exact.
#[cfg(arm_fpu)]
#[inline(always)]
pub fn widen(h: f16) -> f32 {
    let r: u32;
    // SAFETY: register-only instructions; no memory, stack or flags. (Values
    // cross in core registers: stable rustc does not enable the `vfp2`
    // feature that the `sreg` operand class needs, but accepts s-register
    // clobbers.)
    unsafe {
        core::arch::asm!(
            "vmov s0, {h}",
            "vcvtb.f32.f16 s0, s0",
            "vmov {r}, s0",
            h = in(reg) h.to_bits() as u32,
            r = lateout(reg) r,
            out("s0") _,
            options(pure, nomem, nostack, preserves_flags)
        )
    };
    f32::from_bits(r)
}

/// [`widen`] on the host (its unit tests).
#[cfg(not(arm_fpu))]
#[inline(always)]
pub fn widen(h: f16) -> f32 {
    h.to_f32()
}

/// `VCVTB.F16.F32` (round to nearest even under the IEEE mode) and the
/// canonical NaN: [`crate::kernels::generic::f16::narrow`]'s bits.
#[cfg(arm_fpu)]
#[inline(always)]
pub fn narrow(v: f32) -> f16 {
    let bits: u32;
    // SAFETY: two register-only instructions; no memory, stack or flags.
    unsafe {
        core::arch::asm!(
            "vmov s0, {v}",
            "vcvtb.f16.f32 s0, s0",
            "vmov {b}, s0",
            v = in(reg) v.to_bits(),
            b = lateout(reg) bits,
            out("s0") _,
            options(pure, nomem, nostack, preserves_flags)
        )
    };
    canonical(bits as u16)
}

/// [`narrow`] on the host (its unit tests).
#[cfg(not(arm_fpu))]
#[inline(always)]
pub fn narrow(v: f32) -> f16 {
    canonical(f16::from_f32(v).to_bits())
}

/// `h` as an f16, any NaN as the canonical one (an integer test: exponent
/// all ones and a non-zero fraction).
#[inline(always)]
fn canonical(h: u16) -> f16 {
    if h & 0x7fff > 0x7c00 {
        CANONICAL_NAN
    } else {
        f16::from_bits(h)
    }
}

/// FPSCR's mode bits: AHP (26), DN (25), FZ (24) and RMode (23:22).
#[cfg(arm_fpu)]
const FPSCR_MODE: u32 = 0b1_1111 << 22;

/// Put the FPU in the mode the f16 kernels' bits assume (the reset
/// defaults): IEEE half precision (AHP = 0), NaN operands propagated
/// (DN = 0), subnormals kept (FZ = 0), round to nearest even (RMode = 0).
/// The firmware calls this once at boot, before running a model.
#[cfg(arm_fpu)]
pub fn ieee_mode() {
    // SAFETY: reads and writes FPSCR only; the FPU is enabled by the
    // runtime before `main` on the hard-float targets.
    unsafe {
        core::arch::asm!(
            "vmrs {t}, fpscr",
            "bic {t}, {t}, {mask}",
            "vmsr fpscr, {t}",
            t = out(reg) _,
            mask = in(reg) FPSCR_MODE,
            options(nomem, nostack, preserves_flags)
        )
    };
}

/// Load one word (two f16) from `{p}` (post-incremented by 4) and widen it
/// into `lo` (the first, lower-addressed value) and `hi`.
#[cfg(arm_fpu)]
macro_rules! pair {
    ($p:literal, $lo:literal, $hi:literal) => {
        concat!(
            "ldr {t}, [{",
            $p,
            "}], #4\n",
            "vmov ",
            $lo,
            ", {t}\n",
            "vcvtt.f32.f16 ",
            $hi,
            ", ",
            $lo,
            "\n",
            "vcvtb.f32.f16 ",
            $lo,
            ", ",
            $lo,
            "\n",
        )
    };
}

/// Load one f16 from `{p}` and widen it into `r`.
#[cfg(arm_fpu)]
macro_rules! one {
    ($p:literal, $r:literal) => {
        concat!("ldrh {t}, [{", $p, "}]\n", "vmov ", $r, ", {t}\n", "vcvtb.f32.f16 ", $r, ", ", $r, "\n",)
    };
}

/// Taps `0..len` of a [`PX`] x [`CH`] block: for each tap in order,
/// `acc[p * CH + c] += w[c][t] * x[p][t]` (`VMLA.F32`: the product exact,
/// the sum rounded once). Two taps a turn (one word of each stream), then
/// an odd last tap. Accumulators in s0-s11, weights of tap `t` in
/// s12/s14/s16 (`t + 1`: s13/s15/s17), inputs in s18-s25.
///
/// # Safety
/// Every pointer must have `len` readable f16 (any alignment).
#[cfg(arm_fpu)]
#[inline(always)]
unsafe fn conv_run(acc: &mut [f32; PX * CH], x: [*const f16; PX], w: [*const f16; CH], len: usize) {
    // SAFETY: the caller's contract; `acc` is 12 writable f32.
    unsafe {
        core::arch::asm!(
            "vldm {acc}, {{s0-s11}}",
            "cmp {n}, #0",
            "beq 1f",
            "2:",
            pair!("w0", "s12", "s13"),
            pair!("w1", "s14", "s15"),
            pair!("w2", "s16", "s17"),
            pair!("x0", "s18", "s19"),
            pair!("x1", "s20", "s21"),
            pair!("x2", "s22", "s23"),
            pair!("x3", "s24", "s25"),
            // Tap t.
            "vmla.f32 s0, s12, s18",
            "vmla.f32 s1, s14, s18",
            "vmla.f32 s2, s16, s18",
            "vmla.f32 s3, s12, s20",
            "vmla.f32 s4, s14, s20",
            "vmla.f32 s5, s16, s20",
            "vmla.f32 s6, s12, s22",
            "vmla.f32 s7, s14, s22",
            "vmla.f32 s8, s16, s22",
            "vmla.f32 s9, s12, s24",
            "vmla.f32 s10, s14, s24",
            "vmla.f32 s11, s16, s24",
            // Tap t + 1.
            "vmla.f32 s0, s13, s19",
            "vmla.f32 s1, s15, s19",
            "vmla.f32 s2, s17, s19",
            "vmla.f32 s3, s13, s21",
            "vmla.f32 s4, s15, s21",
            "vmla.f32 s5, s17, s21",
            "vmla.f32 s6, s13, s23",
            "vmla.f32 s7, s15, s23",
            "vmla.f32 s8, s17, s23",
            "vmla.f32 s9, s13, s25",
            "vmla.f32 s10, s15, s25",
            "vmla.f32 s11, s17, s25",
            "subs {n}, {n}, #1",
            "bne 2b",
            "1:",
            // The odd last tap (the pointers are at it now).
            "cmp {odd}, #0",
            "beq 3f",
            one!("w0", "s12"),
            one!("w1", "s14"),
            one!("w2", "s16"),
            one!("x0", "s18"),
            one!("x1", "s20"),
            one!("x2", "s22"),
            one!("x3", "s24"),
            "vmla.f32 s0, s12, s18",
            "vmla.f32 s1, s14, s18",
            "vmla.f32 s2, s16, s18",
            "vmla.f32 s3, s12, s20",
            "vmla.f32 s4, s14, s20",
            "vmla.f32 s5, s16, s20",
            "vmla.f32 s6, s12, s22",
            "vmla.f32 s7, s14, s22",
            "vmla.f32 s8, s16, s22",
            "vmla.f32 s9, s12, s24",
            "vmla.f32 s10, s14, s24",
            "vmla.f32 s11, s16, s24",
            "3:",
            "vstm {acc}, {{s0-s11}}",
            acc = in(reg) acc.as_mut_ptr(),
            n = inout(reg) len / 2 => _,
            odd = in(reg) len % 2,
            t = out(reg) _,
            w0 = inout(reg) w[0] => _,
            w1 = inout(reg) w[1] => _,
            w2 = inout(reg) w[2] => _,
            x0 = inout(reg) x[0] => _,
            x1 = inout(reg) x[1] => _,
            x2 = inout(reg) x[2] => _,
            x3 = inout(reg) x[3] => _,
            out("s0") _, out("s1") _, out("s2") _, out("s3") _, out("s4") _, out("s5") _,
            out("s6") _, out("s7") _, out("s8") _, out("s9") _, out("s10") _, out("s11") _,
            out("s12") _, out("s13") _, out("s14") _, out("s15") _, out("s16") _, out("s17") _,
            out("s18") _, out("s19") _, out("s20") _, out("s21") _, out("s22") _, out("s23") _,
            out("s24") _, out("s25") _,
            options(nostack),
        );
    }
}

/// [`conv_run`] in plain Rust with the instructions' semantics (the host's tests).
///
/// # Safety
/// As the Arm version.
#[cfg(not(arm_fpu))]
unsafe fn conv_run(acc: &mut [f32; PX * CH], x: [*const f16; PX], w: [*const f16; CH], len: usize) {
    for t in 0..len {
        // SAFETY: the caller's contract.
        let (xs, ws) = unsafe { (x.map(|p| widen(p.add(t).read())), w.map(|p| widen(p.add(t).read()))) };
        for p in 0..PX {
            for c in 0..CH {
                let prod = ws[c] * xs[p];
                acc[p * CH + c] += prod;
            }
        }
    }
}

/// One output pixel's in-image taps: rows `ky0..ky1` starting at input row
/// `iy0`, columns `kx0..kx1` starting at input column `ix0`.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Pixel {
    ky0: usize,
    ky1: usize,
    iy0: usize,
    kx0: usize,
    kx1: usize,
    ix0: usize,
}

impl Pixel {
    /// Output pixel `i` in row-major order.
    fn new(g: &ConvGeom, i: usize) -> Self {
        let (oy, ox) = (i / g.out_w, i % g.out_w);
        let (ky0, ky1, iy0) = g.taps(oy, g.pad_top, g.in_h);
        let (kx0, kx1, ix0) = g.taps(ox, g.pad_left, g.in_w);
        Pixel { ky0, ky1, iy0, kx0, kx1, ix0 }
    }

    fn has_row(&self, ky: usize) -> bool {
        (self.ky0..self.ky1).contains(&ky)
    }

    fn has_col(&self, kx: usize) -> bool {
        (self.kx0..self.kx1).contains(&kx)
    }

    /// Offset in the NHWC input of tap `(ky, kx)`, channel 0 (an in-image tap).
    fn input_at(&self, g: &ConvGeom, ky: usize, kx: usize) -> usize {
        ((self.iy0 + ky - self.ky0) * g.in_w + self.ix0 + kx - self.kx0) * g.in_c
    }
}

/// A run of taps shared by the pixels in `mask`: `len` values from each
/// pixel's `x_at` and from each filter's `w_at`. Pixels outside `mask` read
/// a member's run and have their accumulators restored afterwards.
struct Segment {
    w_at: usize,
    len: usize,
    x_at: [usize; PX],
    mask: u8,
}

const ALL: u8 = (1 << PX) - 1;

/// The taps of the block's pixels as [`Segment`]s, in the plain kernel's
/// order (kernel row, then column; the input channels within a segment), so
/// that every pixel sees exactly its in-image taps, in order. A kernel row
/// that every pixel has with the same columns is one segment; otherwise
/// columns that the same pixels share are merged into one.
fn for_each_segment(g: &ConvGeom, pix: &[Pixel; PX], mut f: impl FnMut(&Segment)) {
    let k = g.kernel();
    let ky_lo = pix.iter().map(|p| p.ky0).min().unwrap_or(0);
    let ky_hi = pix.iter().map(|p| p.ky1).max().unwrap_or(0);
    for ky in ky_lo..ky_hi {
        let mut row = 0u8;
        for (p, px) in pix.iter().enumerate() {
            if px.has_row(ky) {
                row |= 1 << p;
            }
        }
        if row == 0 {
            continue;
        }
        let (kx0, kx1) = (pix[0].kx0, pix[0].kx1);
        if row == ALL && pix.iter().all(|p| (p.kx0, p.kx1) == (kx0, kx1)) {
            if kx1 > kx0 {
                f(&Segment {
                    w_at: (ky * k + kx0) * g.in_c,
                    len: (kx1 - kx0) * g.in_c,
                    x_at: core::array::from_fn(|p| pix[p].input_at(g, ky, kx0)),
                    mask: ALL,
                });
            }
            continue;
        }
        let members = |kx: usize| {
            let mut m = 0u8;
            for (p, px) in pix.iter().enumerate() {
                if row & (1 << p) != 0 && px.has_col(kx) {
                    m |= 1 << p;
                }
            }
            m
        };
        // Each column's members once: the column that ends a run starts the next.
        let (mut kx, mut mask) = (0, members(0));
        while kx < k {
            let mut end = kx + 1;
            let mut next = 0;
            while end < k {
                next = members(end);
                if next != mask {
                    break;
                }
                end += 1;
            }
            if mask != 0 {
                let lead = mask.trailing_zeros() as usize;
                let lead_at = pix[lead].input_at(g, ky, kx);
                f(&Segment {
                    w_at: (ky * k + kx) * g.in_c,
                    len: (end - kx) * g.in_c,
                    x_at: core::array::from_fn(
                        |p| {
                            if mask & (1 << p) != 0 {
                                pix[p].input_at(g, ky, kx)
                            } else {
                                lead_at
                            }
                        },
                    ),
                    mask,
                });
            }
            (kx, mask) = (end, next);
        }
    }
}

/// The output rows `rows` of [`crate::kernels::generic::f16::conv2d`]
/// (`output` holds exactly those rows), the same bits.
pub fn conv2d_rows(
    g: &ConvGeom,
    relu: bool,
    w: &F16Weights<'_>,
    input: &[f16],
    output: &mut [f16],
    rows: core::ops::Range<usize>,
) {
    assert!(input.len() == g.input_len(), "conv2d: activation length");
    assert!(rows.end <= g.out_h && output.len() == rows.len() * g.out_w * g.out_c, "conv2d: output rows");
    assert!(w.weights.len() == g.weights_len() && w.bias.len() == g.out_c, "conv2d: weight length");
    let filter = g.kernel() * g.kernel() * g.in_c;
    let n_px = rows.len() * g.out_w;
    let first = rows.start * g.out_w;
    let mut acc = [[0.0f32; PX * CH]; GROUP / CH];
    let mut b = 0;
    while b < n_px {
        let live = (n_px - b).min(PX);
        // A last partial block repeats its last pixel and drops the results.
        let pix: [Pixel; PX] = core::array::from_fn(|p| Pixel::new(g, first + b + p.min(live - 1)));
        let mut c0 = 0;
        while c0 < g.out_c {
            let group = (g.out_c - c0).min(GROUP);
            let blocks = group.div_ceil(CH);
            acc[..blocks].fill([0.0; PX * CH]);
            for_each_segment(g, &pix, |seg| {
                // Every pixel's run lies inside the input: a member's taps are
                // in-image, and a non-member reads a member's run.
                let x = seg.x_at.map(|at| input[at..at + seg.len].as_ptr());
                for j in 0..blocks {
                    // A last partial block repeats its last filter.
                    let w = core::array::from_fn(|c| {
                        let oc = (c0 + j * CH + c).min(g.out_c - 1);
                        w.weights[oc * filter + seg.w_at..][..seg.len].as_ptr()
                    });
                    let a = &mut acc[j];
                    let keep = (seg.mask != ALL).then_some(*a);
                    // SAFETY: every pointer was cut from a slice of `seg.len` values.
                    unsafe { conv_run(a, x, w, seg.len) };
                    if let Some(keep) = keep {
                        for p in (0..PX).filter(|p| seg.mask & (1 << p) == 0) {
                            a[p * CH..][..CH].copy_from_slice(&keep[p * CH..][..CH]);
                        }
                    }
                }
            });
            for j in 0..blocks {
                for c in 0..CH.min(group - j * CH) {
                    let oc = c0 + j * CH + c;
                    let bias = widen(w.bias[oc]);
                    for p in 0..live {
                        let v = acc[j][p * CH + c] + bias;
                        output[(b + p) * g.out_c + oc] = narrow(relu_f32(v, relu));
                    }
                }
            }
            c0 += group;
        }
        b += live;
    }
}

/// Taps `0..2 * pairs` of a Dense block: `acc[u] += w[u][t] * x[t]` in order.
/// Accumulators in s0-s7, inputs in s8/s9, unit `u`'s weights in
/// s(10 + 2u)/s(11 + 2u).
///
/// # Safety
/// Every pointer must have `2 * pairs` readable f16; `pairs >= 1`.
#[cfg(arm_fpu)]
#[inline(always)]
unsafe fn dense_pairs(acc: &mut [f32; UNITS], x: *const f16, w: [*const f16; UNITS], pairs: usize) {
    // SAFETY: the caller's contract; `acc` is 8 writable f32.
    unsafe {
        core::arch::asm!(
            "vldm {acc}, {{s0-s7}}",
            "2:",
            pair!("x", "s8", "s9"),
            pair!("w0", "s10", "s11"),
            pair!("w1", "s12", "s13"),
            pair!("w2", "s14", "s15"),
            pair!("w3", "s16", "s17"),
            pair!("w4", "s18", "s19"),
            pair!("w5", "s20", "s21"),
            pair!("w6", "s22", "s23"),
            pair!("w7", "s24", "s25"),
            "vmla.f32 s0, s10, s8",
            "vmla.f32 s1, s12, s8",
            "vmla.f32 s2, s14, s8",
            "vmla.f32 s3, s16, s8",
            "vmla.f32 s4, s18, s8",
            "vmla.f32 s5, s20, s8",
            "vmla.f32 s6, s22, s8",
            "vmla.f32 s7, s24, s8",
            "vmla.f32 s0, s11, s9",
            "vmla.f32 s1, s13, s9",
            "vmla.f32 s2, s15, s9",
            "vmla.f32 s3, s17, s9",
            "vmla.f32 s4, s19, s9",
            "vmla.f32 s5, s21, s9",
            "vmla.f32 s6, s23, s9",
            "vmla.f32 s7, s25, s9",
            "subs {n}, {n}, #1",
            "bne 2b",
            "vstm {acc}, {{s0-s7}}",
            acc = in(reg) acc.as_mut_ptr(),
            n = inout(reg) pairs => _,
            t = out(reg) _,
            x = inout(reg) x => _,
            w0 = inout(reg) w[0] => _,
            w1 = inout(reg) w[1] => _,
            w2 = inout(reg) w[2] => _,
            w3 = inout(reg) w[3] => _,
            w4 = inout(reg) w[4] => _,
            w5 = inout(reg) w[5] => _,
            w6 = inout(reg) w[6] => _,
            w7 = inout(reg) w[7] => _,
            out("s0") _, out("s1") _, out("s2") _, out("s3") _, out("s4") _, out("s5") _,
            out("s6") _, out("s7") _, out("s8") _, out("s9") _, out("s10") _, out("s11") _,
            out("s12") _, out("s13") _, out("s14") _, out("s15") _, out("s16") _, out("s17") _,
            out("s18") _, out("s19") _, out("s20") _, out("s21") _, out("s22") _, out("s23") _,
            out("s24") _, out("s25") _,
            options(nostack),
        );
    }
}

/// [`dense_pairs`] in plain Rust with the instructions' semantics (the host's tests).
///
/// # Safety
/// As the Arm version.
#[cfg(not(arm_fpu))]
unsafe fn dense_pairs(acc: &mut [f32; UNITS], x: *const f16, w: [*const f16; UNITS], pairs: usize) {
    for t in 0..2 * pairs {
        // SAFETY: the caller's contract.
        unsafe { dense_tap(acc, x, w, t) };
    }
}

/// Tap `t` of a Dense block in Rust.
///
/// # Safety
/// Every pointer must have `t + 1` readable f16.
#[inline(always)]
unsafe fn dense_tap(acc: &mut [f32; UNITS], x: *const f16, w: [*const f16; UNITS], t: usize) {
    // SAFETY: the caller's contract.
    let xv = widen(unsafe { x.add(t).read() });
    for (a, p) in acc.iter_mut().zip(w) {
        // SAFETY: the caller's contract.
        let prod = widen(unsafe { p.add(t).read() }) * xv;
        *a += prod;
    }
}

/// [`crate::kernels::generic::f16::dense`] with the same bits: [`UNITS`]
/// units per pass over the input.
pub fn dense(relu: bool, w: &F16Weights<'_>, input: &[f16], output: &mut [f16]) {
    let n = input.len();
    let units = output.len();
    assert!(w.weights.len() == n * units && w.bias.len() == units, "dense: weight length");
    let mut u0 = 0;
    while u0 < units {
        let live = (units - u0).min(UNITS);
        // A last partial block repeats its last unit.
        let rows: [*const f16; UNITS] = core::array::from_fn(|i| w.weights[(u0 + i.min(live - 1)) * n..][..n].as_ptr());
        let mut acc = [0.0f32; UNITS];
        // SAFETY: `input` and every row hold `n` values.
        unsafe {
            if n / 2 > 0 {
                dense_pairs(&mut acc, input.as_ptr(), rows, n / 2);
            }
            if n % 2 == 1 {
                dense_tap(&mut acc, input.as_ptr(), rows, n - 1);
            }
        }
        for (i, out) in output[u0..u0 + live].iter_mut().enumerate() {
            *out = narrow(relu_f32(acc[i] + widen(w.bias[u0 + i]), relu));
        }
        u0 += live;
    }
}

/// Channels `0..2 * pairs` of one pixel's BatchNormalization, in place:
/// `x * scale + shift` by `VMLA.F32` onto the widened shift (the product
/// exact, one rounding in f32), both results narrowed into one word
/// (`VCVTB`/`VCVTT.F16.F32`), then each half that is a NaN replaced by the
/// canonical NaN (integer compares on the bits).
///
/// # Safety
/// `data`, `scale` and `shift` must have `2 * pairs` f16 (any alignment),
/// `data` writable; `pairs >= 1`.
#[cfg(arm_fpu)]
#[inline(always)]
unsafe fn bn_pairs(data: *mut f16, scale: *const f16, shift: *const f16, pairs: usize) {
    // SAFETY: the caller's contract.
    unsafe {
        core::arch::asm!(
            "2:",
            "ldr {t}, [{d}]",
            "vmov s0, {t}",
            "vcvtt.f32.f16 s1, s0",
            "vcvtb.f32.f16 s0, s0",
            pair!("sc", "s2", "s3"),
            pair!("sh", "s4", "s5"),
            "vmla.f32 s4, s0, s2",
            "vmla.f32 s5, s1, s3",
            "vcvtb.f16.f32 s6, s4",
            "vcvtt.f16.f32 s6, s5",
            "vmov {t}, s6",
            "ubfx {u}, {t}, #0, #15",
            "cmp {u}, #0x7c00",
            "it hi",
            "bfihi {t}, {nan}, #0, #16",
            "ubfx {u}, {t}, #16, #15",
            "cmp {u}, #0x7c00",
            "it hi",
            "bfihi {t}, {nan}, #16, #16",
            "str {t}, [{d}], #4",
            "subs {n}, {n}, #1",
            "bne 2b",
            d = inout(reg) data => _,
            sc = inout(reg) scale => _,
            sh = inout(reg) shift => _,
            n = inout(reg) pairs => _,
            nan = in(reg) u32::from(CANONICAL_NAN.to_bits()),
            t = out(reg) _,
            u = out(reg) _,
            out("s0") _, out("s1") _, out("s2") _, out("s3") _, out("s4") _, out("s5") _, out("s6") _,
            options(nostack),
        );
    }
}

/// [`bn_pairs`] in plain Rust (the host's tests).
///
/// # Safety
/// As the Arm version.
#[cfg(not(arm_fpu))]
unsafe fn bn_pairs(data: *mut f16, scale: *const f16, shift: *const f16, pairs: usize) {
    for i in 0..2 * pairs {
        // SAFETY: the caller's contract.
        unsafe { bn_one(data.add(i), scale.add(i), shift.add(i)) };
    }
}

/// One channel of [`bn_pairs`] in Rust: `x * scale + shift`, one rounding.
///
/// # Safety
/// Each pointer must have one f16, `data` writable.
#[inline(always)]
unsafe fn bn_one(data: *mut f16, scale: *const f16, shift: *const f16) {
    // SAFETY: the caller's contract.
    unsafe {
        let prod = widen(data.read()) * widen(scale.read());
        data.write(narrow(prod + widen(shift.read())));
    }
}

/// [`crate::kernels::generic::f16::batch_norm_in_place`] with the same bits:
/// `x * scale + shift` in f32 (the product exact), one rounding.
pub fn batch_norm_in_place(w: &F16Weights<'_>, data: &mut [f16]) {
    let c = w.weights.len();
    assert!(c > 0 && data.len().is_multiple_of(c) && w.bias.len() == c, "batch_norm: channels");
    for px in data.chunks_exact_mut(c) {
        let (d, sc, sh) = (px.as_mut_ptr(), w.weights.as_ptr(), w.bias.as_ptr());
        // SAFETY: `px`, `w.weights` and `w.bias` hold `c` values each.
        unsafe {
            if c / 2 > 0 {
                bn_pairs(d, sc, sh, c / 2);
            }
            if c % 2 == 1 {
                bn_one(d.add(c - 1), sc.add(c - 1), sh.add(c - 1));
            }
        }
    }
}

/// `v > m` as the plain max-pool compares them (in f32), on the bits: `v`
/// is not NaN and its signed magnitude is larger (`-0` and `+0` equal, as
/// in f32). `m` is never NaN (the pool starts at -inf and takes only
/// values that pass this test).
#[inline(always)]
fn greater(v: f16, m: f16) -> bool {
    let key = |h: u16| {
        let mag = i32::from(h & 0x7fff);
        if h & 0x8000 != 0 {
            -mag
        } else {
            mag
        }
    };
    let (v, m) = (v.to_bits(), m.to_bits());
    v & 0x7fff <= 0x7c00 && key(v) > key(m)
}

/// [`crate::kernels::generic::f16::max_pool`] with the same bits, the
/// comparison on the integer bits ([`greater`]); the winner keeps its bits.
pub fn max_pool(g: &PoolGeom, input: &[f16], output: &mut [f16]) {
    max_pool_by(g, input, output, f16::NEG_INFINITY, greater);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::generic::f16 as plain;
    use crate::spec::Padding;
    use std::vec;
    use std::vec::Vec;

    /// A small xorshift: the unit tests under `src/` cannot use the suite's PRNG.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        /// Mostly ordinary values, with subnormals, zeros of both signs,
        /// infinities and NaNs (with payloads) mixed in.
        fn value(&mut self, specials: bool) -> f16 {
            let r = self.next();
            if specials {
                match r % 40 {
                    0 => return f16::INFINITY,
                    1 => return f16::NEG_INFINITY,
                    2 => return f16::from_bits(0x7c01 | (r >> 8) as u16 & 0x3ff | (r >> 20) as u16 & 0x8000),
                    3 => return f16::from_bits((r >> 8) as u16 & 0x83ff),
                    4 => return f16::from_bits(0x8000),
                    5 => return f16::from_bits(0x7bff),
                    _ => {}
                }
            }
            f16::from_f32(((r >> 11) as f32 / (1u64 << 53) as f32) * 4.0 - 2.0)
        }

        fn values(&mut self, n: usize, specials: bool) -> Vec<f16> {
            (0..n).map(|_| self.value(specials)).collect()
        }
    }

    fn bits(v: &[f16]) -> Vec<u16> {
        v.iter().map(|h| h.to_bits()).collect()
    }

    fn geom(rng: &mut Rng) -> ConvGeom {
        loop {
            let k = 1 + rng.below(5);
            let stride = 1 + rng.below(3);
            let (in_h, in_w, in_c, out_c) = (k + rng.below(9), k + rng.below(9), 1 + rng.below(7), 1 + rng.below(9));
            let same = rng.below(2) == 0;
            let padding = if same { Padding::Same } else { Padding::Valid };
            let Some(g) = ConvGeom::new((in_h, in_w, in_c), out_c, k, stride, padding) else { continue };
            if g.output_len() > 0 {
                return g;
            }
        }
    }

    #[test]
    fn conv_blocks_give_the_plain_bits_with_edges_tails_and_special_values() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for case in 0..400 {
            let g = geom(&mut rng);
            let specials = case % 2 == 1;
            let input = rng.values(g.input_len(), specials);
            let weights = rng.values(g.weights_len(), specials);
            let bias = rng.values(g.out_c, specials);
            let w = F16Weights { weights: &weights, bias: &bias };
            let relu = case % 3 == 0;
            let mut want = vec![f16::ZERO; g.output_len()];
            plain::conv2d(&g, relu, &w, &input, &mut want);
            let mut got = vec![f16::ZERO; g.output_len()];
            conv2d_rows(&g, relu, &w, &input, &mut got, 0..g.out_h);
            assert_eq!(bits(&got), bits(&want), "case {case}: {g:?}");
            // Any band of rows gives those rows.
            let (r0, r1) = (rng.below(g.out_h), g.out_h);
            let row = g.out_w * g.out_c;
            let mut part = vec![f16::ZERO; (r1 - r0) * row];
            conv2d_rows(&g, relu, &w, &input, &mut part, r0..r1);
            assert_eq!(bits(&part), bits(&want[r0 * row..]), "case {case}: rows {r0}..{r1} of {g:?}");
        }
    }

    #[test]
    fn an_infinite_weight_never_meets_a_padding_tap() {
        // 3x3 same on a 2x2 image: every pixel is at an edge; an infinite
        // weight on a padding tap would make NaN if it were multiplied by 0.
        let g = ConvGeom::new((2, 2, 1), 1, 3, 1, Padding::Same).expect("geometry");
        assert_eq!((g.out_h, g.out_w, g.pad_top, g.pad_left), (2, 2, 1, 1));
        let mut weights = vec![f16::ONE; 9];
        weights[0] = f16::INFINITY;
        let input = vec![f16::ONE; 4];
        let bias = [f16::ZERO];
        let w = F16Weights { weights: &weights, bias: &bias };
        let mut got = vec![f16::ZERO; 4];
        conv2d_rows(&g, false, &w, &input, &mut got, 0..2);
        let mut want = vec![f16::ZERO; 4];
        plain::conv2d(&g, false, &w, &input, &mut want);
        assert_eq!(bits(&got), bits(&want));
        assert_eq!(got[3], f16::INFINITY, "the bottom-right pixel has the top-left tap");
        assert_eq!(bits(&got[..3]), [0x4400, 0x4400, 0x4400], "4.0 from four in-image taps");
    }

    #[test]
    fn dense_bn_and_pool_give_the_plain_bits() {
        let mut rng = Rng(77);
        for case in 0..200 {
            let specials = case % 2 == 1;
            let (n, units) = (1 + rng.below(40), 1 + rng.below(20));
            let input = rng.values(n, specials);
            let weights = rng.values(n * units, specials);
            let bias = rng.values(units, specials);
            let w = F16Weights { weights: &weights, bias: &bias };
            let relu = case % 3 == 0;
            let (mut got, mut want) = (vec![f16::ZERO; units], vec![f16::ZERO; units]);
            dense(relu, &w, &input, &mut got);
            plain::dense(relu, &w, &input, &mut want);
            assert_eq!(bits(&got), bits(&want), "dense case {case}");

            let c = 1 + rng.below(6);
            let px = 1 + rng.below(9);
            let data = rng.values(c * px, specials);
            let (scale, shift) = (rng.values(c, specials), rng.values(c, specials));
            let w = F16Weights { weights: &scale, bias: &shift };
            let mut got = data.clone();
            batch_norm_in_place(&w, &mut got);
            let mut want = vec![f16::ZERO; data.len()];
            plain::batch_norm(&w, &data, &mut want);
            assert_eq!(bits(&got), bits(&want), "batch norm case {case}");

            let (h, wd) = (2 + rng.below(6), 2 + rng.below(6));
            let g = PoolGeom::new((h, wd, c), 2 + rng.below(2).min(h.min(wd) - 2), 1 + rng.below(2)).expect("pool");
            let x = rng.values(h * wd * c, specials);
            let (mut got, mut want) = (vec![f16::ZERO; g.out_h * g.out_w * c], vec![f16::ZERO; g.out_h * g.out_w * c]);
            max_pool(&g, &x, &mut got);
            plain::max_pool(&g, &x, &mut want);
            assert_eq!(bits(&got), bits(&want), "max pool case {case}");
        }
    }

    #[test]
    fn pooling_keeps_the_first_of_equal_zeros_and_skips_nan() {
        let g = PoolGeom::new((2, 2, 1), 1, 1).expect("pool");
        let g2 = PoolGeom::new((2, 2, 1), 2, 1).expect("pool");
        let (pz, nz, nan) = (f16::from_bits(0), f16::from_bits(0x8000), f16::from_bits(0xfe01));
        for [a, b] in [[pz, nz], [nz, pz], [nan, nz], [nz, nan], [nan, nan], [f16::NEG_INFINITY, nan]] {
            let x = [a, b, b, a];
            for g in [g, g2] {
                let n = g.out_h * g.out_w;
                let (mut got, mut want) = (vec![f16::ZERO; n], vec![f16::ZERO; n]);
                max_pool(&g, &x, &mut got);
                plain::max_pool(&g, &x, &mut want);
                assert_eq!(bits(&got), bits(&want), "{:?}", bits(&x));
            }
        }
    }

    #[test]
    fn nan_results_are_canonical_whatever_made_them() {
        for v in [f32::NAN, -f32::NAN, f32::from_bits(0xffc0_0000), f32::from_bits(0x7f80_0001), f32::INFINITY * 0.0] {
            assert_eq!(narrow(v).to_bits(), 0x7e00, "{:#x}", v.to_bits());
            assert_eq!(plain::narrow(v).to_bits(), 0x7e00, "{:#x}", v.to_bits());
        }
        for h in [0x0001u16, 0x8001, 0x03ff, 0x7bff, 0x7c00, 0xfc00, 0x8000, 0x3c00] {
            assert_eq!(narrow(widen(f16::from_bits(h))).to_bits(), h, "{h:#x} round trip");
        }
    }
}
