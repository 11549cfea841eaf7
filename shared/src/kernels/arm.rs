//! Cortex-M variants of the int8 Conv2D and Dense kernels (the only op
//! family with an Arm variant, so one file) for cores with the
//! DSP extension (Cortex-M4/M7 on thumbv7em, Cortex-M33/M35P/M55 on
//! thumbv8m.main built with a DSP-capable `target-cpu`), each giving exactly
//! the bytes of the plain kernel.
//!
//! The inner loop reads four int8 values at once as one word and widens them
//! to two pairs of 16-bit lanes: `SXTB16` gives bytes 0 and 2, `SXTB16 ..,
//! ROR #8` bytes 1 and 3. The activations get the input zero point removed in
//! the same instruction (`SXTAB16` adds the widened bytes to the pair
//! `(-in_zp, -in_zp)`; `x - in_zp` lies in `[-255, 255]`, so the 16-bit lanes
//! never wrap). `SMLAD` then adds both lane products to an i32 accumulator:
//! two multiply-accumulates per instruction. The weights and the activations
//! are split into the same even/odd lanes, so the products are exactly the
//! plain kernel's, added in another order; the sums wrap modulo 2^32 like the
//! plain kernel's `wrapping_add`, so the order cannot change a bit, and every
//! result goes through [`requantize`] (the plain output stage's result in
//! fewer instructions, [`requant`]).
//!
//! The loop nest is [`crate::kernels::generic::int8::conv2d_portable`]'s: for each output pixel
//! and kernel row, the in-image taps of all input channels are one contiguous
//! run in both the NHWC input and the OHWI weights, and [`BLOCK`] output
//! channels share each widened input word.
//!
//! `build.rs` sets `cfg(arm_dsp)` for the targets whose code generator accepts
//! these instructions; there they are single-instruction `asm!` blocks
//! (`core::arch::arm`'s DSP intrinsics are not stable). Anywhere else (the
//! host's unit tests) the same functions are plain Rust with the
//! instructions' documented semantics, so the kernels' indexing is tested on
//! the host too; on the device, tests/device.rs compares them with the
//! desktop's bytes.

use crate::geometry::{ConvGeom, PoolGeom};
use crate::kernels::generic::int8::{check_bn, check_conv, check_dense, AddParams, Int8Params};
use crate::model::Int8Weights;

mod requant;
mod tile;

use requant::{requantize, Channel, Fast, Output, Unshifted};

/// Output channels (or Dense units) computed together.
const BLOCK: usize = 4;

// ---------------------------------------------------------------------------
// The DSP instructions.

/// `SXTAB16 r, a, x`: halfwise `a + (bytes 0 and 2 of x, sign-extended)`, wrapping.
#[cfg(arm_dsp)]
#[inline(always)]
fn sxtab16(a: u32, x: u32) -> u32 {
    let r: u32;
    // SAFETY: SXTAB16 reads two registers and writes one; no memory, stack or flags.
    unsafe {
        core::arch::asm!("sxtab16 {r}, {a}, {x}", r = lateout(reg) r, a = in(reg) a, x = in(reg) x,
            options(pure, nomem, nostack, preserves_flags))
    };
    r
}

/// `SXTAB16 r, a, x, ROR #8`: halfwise `a + (bytes 1 and 3 of x, sign-extended)`.
#[cfg(arm_dsp)]
#[inline(always)]
fn sxtab16_ror8(a: u32, x: u32) -> u32 {
    let r: u32;
    // SAFETY: SXTAB16 reads two registers and writes one; no memory, stack or flags.
    unsafe {
        core::arch::asm!("sxtab16 {r}, {a}, {x}, ror #8", r = lateout(reg) r, a = in(reg) a, x = in(reg) x,
            options(pure, nomem, nostack, preserves_flags))
    };
    r
}

/// `SXTB16 r, x`: bytes 0 and 2 of `x`, sign-extended into the halfwords.
#[cfg(arm_dsp)]
#[inline(always)]
fn sxtb16(x: u32) -> u32 {
    let r: u32;
    // SAFETY: one register in, one out; no memory, stack or flags.
    unsafe {
        core::arch::asm!("sxtb16 {r}, {x}", r = lateout(reg) r, x = in(reg) x,
            options(pure, nomem, nostack, preserves_flags))
    };
    r
}

/// `SXTB16 r, x, ROR #8`: bytes 1 and 3 of `x`, sign-extended into the halfwords.
#[cfg(arm_dsp)]
#[inline(always)]
fn sxtb16_ror8(x: u32) -> u32 {
    let r: u32;
    // SAFETY: one register in, one out; no memory, stack or flags.
    unsafe {
        core::arch::asm!("sxtb16 {r}, {x}, ror #8", r = lateout(reg) r, x = in(reg) x,
            options(pure, nomem, nostack, preserves_flags))
    };
    r
}

/// `SMLABB r, a, b, acc`: `acc + a.lo * b.lo` (signed halfwords), modulo
/// 2^32 (an overflow only sets the sticky Q flag, which nothing reads).
#[cfg(arm_dsp)]
#[inline(always)]
fn smlabb(a: u32, b: u32, acc: i32) -> i32 {
    let r: i32;
    // SAFETY: registers only; the Q flag is not read by any code here.
    unsafe {
        core::arch::asm!("smlabb {r}, {a}, {b}, {c}", r = lateout(reg) r, a = in(reg) a, b = in(reg) b,
            c = in(reg) acc, options(pure, nomem, nostack))
    };
    r
}

/// `SMLATT r, a, b, acc`: `acc + a.hi * b.hi` (signed halfwords), modulo 2^32.
#[cfg(arm_dsp)]
#[inline(always)]
fn smlatt(a: u32, b: u32, acc: i32) -> i32 {
    let r: i32;
    // SAFETY: registers only; the Q flag is not read by any code here.
    unsafe {
        core::arch::asm!("smlatt {r}, {a}, {b}, {c}", r = lateout(reg) r, a = in(reg) a, b = in(reg) b,
            c = in(reg) acc, options(pure, nomem, nostack))
    };
    r
}

// The same instructions in plain Rust, for the host's tests of the kernels
// (the loops of `dot4`/`dot1` use SXTB16 and SMLAD inside their `asm!`).

/// Two i16 lanes as one word (low lane first).
#[cfg(not(arm_dsp))]
fn halves(lo: i32, hi: i32) -> u32 {
    (lo as u16 as u32) | ((hi as u16 as u32) << 16)
}

/// Signed 16-bit lane `i` of `x`.
#[cfg(not(arm_dsp))]
fn lane(x: u32, i: u32) -> i32 {
    (x >> (16 * i)) as u16 as i16 as i32
}

/// Signed byte `i` of `x`.
#[cfg(not(arm_dsp))]
fn byte(x: u32, i: u32) -> i32 {
    (x >> (8 * i)) as u8 as i8 as i32
}

/// `SXTB16 r, x`: bytes 0 and 2 of `x`, sign-extended into the low and high halfwords.
#[cfg(not(arm_dsp))]
fn sxtb16(x: u32) -> u32 {
    halves(byte(x, 0), byte(x, 2))
}

/// `SXTB16 r, x, ROR #8`: bytes 1 and 3 of `x`, sign-extended into the halfwords.
#[cfg(not(arm_dsp))]
fn sxtb16_ror8(x: u32) -> u32 {
    halves(byte(x, 1), byte(x, 3))
}

/// `SXTAB16 r, a, x`: halfwise `a + (bytes 0 and 2 of x, sign-extended)`, wrapping.
#[cfg(not(arm_dsp))]
fn sxtab16(a: u32, x: u32) -> u32 {
    halves(lane(a, 0) + byte(x, 0), lane(a, 1) + byte(x, 2))
}

/// `SXTAB16 r, a, x, ROR #8`: halfwise `a + (bytes 1 and 3 of x, sign-extended)`.
#[cfg(not(arm_dsp))]
fn sxtab16_ror8(a: u32, x: u32) -> u32 {
    halves(lane(a, 0) + byte(x, 1), lane(a, 1) + byte(x, 3))
}

/// `SMLABB r, a, b, acc`: `acc + a.lo * b.lo` (signed halfwords), modulo 2^32.
#[cfg(not(arm_dsp))]
fn smlabb(a: u32, b: u32, acc: i32) -> i32 {
    acc.wrapping_add(lane(a, 0) * lane(b, 0))
}

/// `SMLATT r, a, b, acc`: `acc + a.hi * b.hi` (signed halfwords), modulo 2^32.
#[cfg(not(arm_dsp))]
fn smlatt(a: u32, b: u32, acc: i32) -> i32 {
    acc.wrapping_add(lane(a, 1) * lane(b, 1))
}

/// `SMLAD r, a, b, acc`: `acc + a.lo * b.lo + a.hi * b.hi` (signed halfwords),
/// modulo 2^32 (an overflow only sets the sticky Q flag).
#[cfg(not(arm_dsp))]
fn smlad(a: u32, b: u32, acc: i32) -> i32 {
    acc.wrapping_add(lane(a, 0) * lane(b, 0)).wrapping_add(lane(a, 1) * lane(b, 1))
}

// ---------------------------------------------------------------------------
// Dot products over widened activations.

/// Activation bytes widened per pass (a multiple of 4): [`Wide`] holds
/// `CHUNK / 2` words.
const CHUNK: usize = 512;
/// Output channels (Dense units) whose accumulators live on the stack while
/// one output pixel is computed (a multiple of [`BLOCK`]).
const GROUP: usize = 128;

/// One pass's activations, widened once and then shared by every output
/// channel: for each four bytes `x[4q..4q + 4]`, word `2q` holds
/// `(x[4q] - zp, x[4q + 2] - zp)` and word `2q + 1` `(x[4q + 1] - zp, x[4q + 3] - zp)`
/// as 16-bit lanes, the order in which `SXTB16` and `SXTB16 .., ROR #8` split a weight word.
struct Wide([u32; CHUNK / 2]);

impl Wide {
    /// Widen `x` (a multiple of 4 bytes) into quads `q..`; `zp2` is [`neg_zp_pair`].
    #[inline(always)]
    fn fill(&mut self, q: usize, x: &[i8], zp2: u32) {
        for (pair, q) in self.0[2 * q..].chunks_exact_mut(2).zip(x.chunks_exact(4)) {
            let xv = u32::from_le_bytes([q[0] as u8, q[1] as u8, q[2] as u8, q[3] as u8]);
            pair[0] = sxtab16(zp2, xv);
            pair[1] = sxtab16_ror8(zp2, xv);
        }
    }

    /// Widen quad `q` (below `CHUNK / 4`) from the bytes `x`.
    #[inline(always)]
    fn fill_one(&mut self, q: usize, x: [i8; 4], zp2: u32) {
        let xv = u32::from_le_bytes(x.map(|b| b as u8));
        self.0[2 * q] = sxtab16(zp2, xv);
        self.0[2 * q + 1] = sxtab16_ror8(zp2, xv);
    }
}

/// The pair `(-zp, -zp)` that [`sxtab16`] adds to the widened activations.
#[inline(always)]
fn neg_zp_pair(zp: i32) -> u32 {
    // zp is in [-128, 127] (the engine checks it), so -zp fits a halfword.
    ((zp.wrapping_neg() as u16) as u32) * 0x0001_0001
}

/// One quad of [`dot4`]: the widened pair of activation words, then the
/// four rows' weight words (rows 1 and 3 at `+ stride`), each split by the
/// two `SXTB16`s into two `SMLAD`s.
#[cfg(arm_dsp)]
macro_rules! dot4_quad {
    () => {
        concat!(
            "ldrd {xe}, {xo}, [{xp}], #8\n",
            "ldr {t}, [{pa}, {s}]\n",
            "sxtb16 {u}, {t}\n",
            "sxtb16 {t}, {t}, ror #8\n",
            "smlad {a1}, {u}, {xe}, {a1}\n",
            "smlad {a1}, {t}, {xo}, {a1}\n",
            "ldr {t}, [{pa}], #4\n",
            "sxtb16 {u}, {t}\n",
            "sxtb16 {t}, {t}, ror #8\n",
            "smlad {a0}, {u}, {xe}, {a0}\n",
            "smlad {a0}, {t}, {xo}, {a0}\n",
            "ldr {t}, [{pb}, {s}]\n",
            "sxtb16 {u}, {t}\n",
            "sxtb16 {t}, {t}, ror #8\n",
            "smlad {a3}, {u}, {xe}, {a3}\n",
            "smlad {a3}, {t}, {xo}, {a3}\n",
            "ldr {t}, [{pb}], #4\n",
            "sxtb16 {u}, {t}\n",
            "sxtb16 {t}, {t}, ror #8\n",
            "smlad {a2}, {u}, {xe}, {a2}\n",
            "smlad {a2}, {t}, {xo}, {a2}\n",
        )
    };
}

/// `acc[j] += sum_q` of the four products of weight word `q` of row `j` with
/// widened words `2q, 2q + 1`, for `quads` words and the four weight rows
/// starting at `w + j * stride`.
///
/// # Safety
/// `x` must be word-aligned and hold `2 * quads` words, and each row must have
/// `4 * quads` readable bytes.
#[cfg(arm_dsp)]
#[inline(always)]
unsafe fn dot4(x: *const u32, quads: usize, w: *const i8, stride: usize, acc: &mut [i32; BLOCK]) {
    if quads == 0 {
        return;
    }
    let [mut a0, mut a1, mut a2, mut a3] = *acc;
    let (mut x, mut w, mut quads) = (x, w, quads);
    if quads >= 4 {
        // SAFETY: as the loop below, four quads a turn (86 instructions for
        // 64 multiply-accumulates); it leaves the pointers after them.
        unsafe {
            core::arch::asm!(
                "2:",
                dot4_quad!(),
                dot4_quad!(),
                dot4_quad!(),
                dot4_quad!(),
                "subs {n}, {n}, #1",
                "bne 2b",
                xp = inout(reg) x,
                pa = inout(reg) w,
                pb = inout(reg) w.wrapping_add(2 * stride) => _,
                s = in(reg) stride,
                n = inout(reg) quads / 4 => _,
                a0 = inout(reg) a0,
                a1 = inout(reg) a1,
                a2 = inout(reg) a2,
                a3 = inout(reg) a3,
                xe = out(reg) _,
                xo = out(reg) _,
                t = out(reg) _,
                u = out(reg) _,
                options(nostack, readonly),
            );
        }
        quads %= 4;
        if quads == 0 {
            *acc = [a0, a1, a2, a3];
            return;
        }
    }
    // One hand-scheduled loop: 23 instructions for 16 multiply-accumulates.
    // Two pointers and one stride address the four rows (rows 1 and 3 at
    // `+ stride`), so with the 4 accumulators, the widened pair, 2 scratch
    // registers and the count it needs 13 registers and never spills (the
    // compiler's own loop, from the same Rust, spilled 7 values a pass).
    // SAFETY: reads only: `2 * quads` aligned words from `x` (LDRD) and
    // `4 * quads` bytes from each row (unaligned LDR, allowed on
    // ARMv7-M/ARMv8-M for normal memory), all in bounds by the caller's
    // contract; no stack; `subs` sets the flags, so flags are not preserved.
    unsafe {
        core::arch::asm!(
            "2:",
            dot4_quad!(),
            "subs {n}, {n}, #1",
            "bne 2b",
            xp = inout(reg) x => _,
            pa = inout(reg) w => _,
            pb = inout(reg) w.wrapping_add(2 * stride) => _,
            s = in(reg) stride,
            n = inout(reg) quads => _,
            a0 = inout(reg) a0,
            a1 = inout(reg) a1,
            a2 = inout(reg) a2,
            a3 = inout(reg) a3,
            xe = out(reg) _,
            xo = out(reg) _,
            t = out(reg) _,
            u = out(reg) _,
            options(nostack, readonly),
        );
    }
    *acc = [a0, a1, a2, a3];
}

/// [`dot4`] for one row.
///
/// # Safety
/// As [`dot4`], for the one row at `w`.
#[cfg(arm_dsp)]
#[inline(always)]
unsafe fn dot1(x: *const u32, quads: usize, w: *const i8, acc: &mut i32) {
    if quads == 0 {
        return;
    }
    let mut a = *acc;
    // SAFETY: reads `2 * quads` aligned words from `x` and `4 * quads` bytes
    // from `w`, in bounds by the caller's contract; no stack; `subs` sets the flags.
    unsafe {
        core::arch::asm!(
            "2:",
            "ldrd {xe}, {xo}, [{xp}], #8",
            "ldr {t}, [{pw}], #4",
            "sxtb16 {u}, {t}",
            "sxtb16 {t}, {t}, ror #8",
            "smlad {a}, {u}, {xe}, {a}",
            "smlad {a}, {t}, {xo}, {a}",
            "subs {n}, {n}, #1",
            "bne 2b",
            xp = inout(reg) x => _,
            pw = inout(reg) w => _,
            n = inout(reg) quads => _,
            a = inout(reg) a,
            xe = out(reg) _,
            xo = out(reg) _,
            t = out(reg) _,
            u = out(reg) _,
            options(nostack, readonly),
        );
    }
    *acc = a;
}

/// [`dot4`] in plain Rust (the host's tests).
///
/// # Safety
/// As the Arm version.
#[cfg(not(arm_dsp))]
unsafe fn dot4(x: *const u32, quads: usize, w: *const i8, stride: usize, acc: &mut [i32; BLOCK]) {
    for (j, a) in acc.iter_mut().enumerate() {
        // SAFETY: row `j` starts there (the caller's contract).
        unsafe { dot1(x, quads, w.add(j * stride), a) };
    }
}

/// [`dot1`] in plain Rust (the host's tests).
///
/// # Safety
/// As the Arm version.
#[cfg(not(arm_dsp))]
unsafe fn dot1(x: *const u32, quads: usize, w: *const i8, acc: &mut i32) {
    for q in 0..quads {
        // SAFETY: in bounds by the caller's contract.
        let (xe, xo, wv) =
            unsafe { (x.add(2 * q).read(), x.add(2 * q + 1).read(), w.add(4 * q).cast::<u32>().read_unaligned()) };
        *acc = smlad(sxtb16_ror8(wv), xo, smlad(sxtb16(wv), xe, *acc));
    }
}

/// The activations one output pixel reads, as a stream of bytes: `rows` runs
/// of `len` bytes, `step` bytes apart in `input` from `at`. The matching
/// weight taps must be contiguous: one kernel row, or all of a pixel's kernel
/// rows when its window spans the full kernel width (in OHWI, kernel row
/// `ky + 1`'s taps then follow row `ky`'s).
#[derive(Clone, Copy)]
struct Runs<'a> {
    input: &'a [i8],
    at: usize,
    step: usize,
    len: usize,
    rows: usize,
}

impl Runs<'_> {
    /// Widen bytes `start..start + n` of the stream (`n <= CHUNK`) into
    /// `wide`, straight from `input`: quads that straddle two runs are
    /// assembled byte by byte. Returns the last partial quad's bytes, the
    /// missing ones set to `zp` (widened to exactly 0); `wide` holds it too,
    /// after the `n / 4` whole quads.
    #[inline(always)]
    fn widen(&self, start: usize, n: usize, zp: i32, wide: &mut Wide) -> [i8; 4] {
        let zp2 = neg_zp_pair(zp);
        let mut carry = [zp as i8; 4];
        let mut held = 0;
        let mut q = 0;
        let (mut r, mut off) = (start / self.len, start % self.len);
        let mut left = n;
        while left > 0 {
            let take = (self.len - off).min(left);
            let mut bytes = &self.input[self.at + r * self.step + off..][..take];
            if held > 0 {
                while held < 4 && !bytes.is_empty() {
                    carry[held] = bytes[0];
                    held += 1;
                    bytes = &bytes[1..];
                }
                if held == 4 {
                    wide.fill_one(q, carry, zp2);
                    q += 1;
                    held = 0;
                    carry = [zp as i8; 4];
                }
            }
            if held == 0 {
                let m = bytes.len() / 4;
                wide.fill(q, &bytes[..4 * m], zp2);
                q += m;
                for &b in &bytes[4 * m..] {
                    carry[held] = b;
                    held += 1;
                }
            }
            left -= take;
            r += 1;
            off = 0;
        }
        if held > 0 {
            wide.fill_one(q, carry, zp2);
        }
        carry
    }
}

/// For the channels `first..first + acc.len()`:
/// `acc[c] += sum_i weights[(first + c) * filter + wo + i] * (x[i] - zp)` (wrapping),
/// `x` the stream of `runs`, whose taps are `wo..` of every channel's
/// `filter` weights.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn accumulate(
    runs: Runs<'_>,
    weights: &[i8],
    filter: usize,
    wo: usize,
    first: usize,
    zp: i32,
    acc: &mut [i32],
    wide: &mut Wide,
) {
    let n = runs.len * runs.rows;
    let channels = acc.len();
    if channels == 0 || n == 0 {
        return;
    }
    // Every row read below lies inside `weights`.
    assert!(wo + n <= filter && (first + channels) * filter <= weights.len(), "dsp conv: weight bounds");
    let mut start = 0;
    while start < n {
        let len = CHUNK.min(n - start);
        let quads = len / 4;
        // A last partial quad is widened with zero lanes past the stream's
        // end, so a row may read up to 3 weight bytes past its taps (the
        // next taps or channel: times 0, exactly 0) wherever those bytes
        // exist; the very last row of `weights` takes the scalar tail.
        let last = runs.widen(start, len, zp, wide);
        let padded = len.div_ceil(4);
        let xw = wide.0.as_ptr();
        let row = |c: usize| (first + c) * filter + wo + start;
        // Quads for rows `c..end`, and whether they need the scalar tail.
        let quads_for = |end: usize| {
            if row(end - 1) + 4 * padded <= weights.len() {
                (padded, false)
            } else {
                (quads, len > 4 * quads)
            }
        };
        let tail = |c: usize, a: &mut i32| {
            for i in 4 * quads..len {
                *a = a.wrapping_add(weights[row(c) + i] as i32 * (last[i - 4 * quads] as i32 - zp));
            }
        };
        let mut c = 0;
        while c + BLOCK <= channels {
            let (q, scalar) = quads_for(c + BLOCK);
            let block: &mut [i32; BLOCK] = (&mut acc[c..c + BLOCK]).try_into().expect("a block");
            // SAFETY: `wide` holds 2 * padded >= 2 * q aligned words (just
            // filled); rows `c..c + 4` start at `row(c) + j * filter` and read
            // 4 * q bytes, inside `weights` by the assertion (q = quads) or by
            // `quads_for`'s check of the last row (q = padded).
            unsafe { dot4(xw, q, weights.as_ptr().add(row(c)), filter, block) };
            if scalar {
                for (j, a) in block.iter_mut().enumerate() {
                    tail(c + j, a);
                }
            }
            c += BLOCK;
        }
        while c < channels {
            let (q, scalar) = quads_for(c + 1);
            // SAFETY: as above, for one row.
            unsafe { dot1(xw, q, weights.as_ptr().add(row(c)), &mut acc[c]) };
            if scalar {
                tail(c, &mut acc[c]);
            }
            c += 1;
        }
        start += len;
    }
}

// ---------------------------------------------------------------------------
// Kernels.

/// Conv2D with the bytes of [`crate::kernels::generic::int8::conv2d`], through the DSP instructions:
/// tiles of [`tile::PX`] output pixels through [`tile::conv2d_tiles`] (a last
/// [`PARTIAL`] or more pixels too, as a tile overlapping the one before);
/// fewer remaining pixels one at a time with [`BLOCK`] channels sharing each widened input word. The tiles'
/// widened patches live in `scratch`, of at least
/// [`crate::kernels::generic::scratch::conv2d_int8_scratch_bytes`]`(g)` bytes
/// (the engine plans it into the arena), not on the stack. Never inlined,
/// like [`conv2d_dsp_general`]: each kernel's frame is then a sibling of the
/// others under the dispatcher, not one frame summing them.
#[inline(never)]
pub fn conv2d_dsp(
    g: &ConvGeom,
    p: &Int8Params,
    w: &Int8Weights<'_>,
    input: &[i8],
    output: &mut [i8],
    scratch: &mut [u8],
) {
    check_conv(g, w, input, output);
    assert!(g.is_tileable(), "conv2d_dsp: one group, undilated, pads below the kernel");
    let pixels = g.out_h * g.out_w;
    let tiles = pixels / tile::PX + usize::from(pixels % tile::PX >= PARTIAL);
    let tiled = pixels.min(tiles * tile::PX);
    if tiles > 0 {
        tile::conv2d_tiles(g, p, w, input, output, tiled, tiles, &mut tile::Cols::new(g, scratch));
    }
    if tiled < pixels {
        conv2d_pixels(g, p, w, input, output, tiled..pixels);
    }
}

/// [`conv2d_dsp`] for the geometries its tiles do not take: rectangular
/// kernels and strides, pads beyond the kernel (one group, undilated), one
/// output pixel at a time through the same SMLAD dot products. The plain
/// kernel's bytes. Never inlined (see [`conv2d_dsp`]).
#[inline(never)]
pub fn conv2d_dsp_general(g: &ConvGeom, p: &Int8Params, w: &Int8Weights<'_>, input: &[i8], output: &mut [i8]) {
    check_conv(g, w, input, output);
    assert!(g.groups == 1 && g.dilation_h == 1 && g.dilation_w == 1, "conv2d_dsp_general: one group, undilated");
    conv2d_pixels(g, p, w, input, output, 0..g.out_h * g.out_w);
}

/// The fewest pixels worth a tile of [`tile::PX`]: six pixels' taps at 0.96
/// instructions a MAC cost what four cost one at a time (1.44).
const PARTIAL: usize = 4;

/// `out[j] = requantize(acc[j], multiplier[j], shift[j], p)` for a run of
/// channels, through [`Output`] where its domain holds (every MLPerf Tiny
/// layer): ~15 instructions an output instead of ~30. Never inlined: in a
/// frame of its own its few values stay in registers (inlined into the
/// kernels' loops they were spilled, 60 instructions an output).
#[inline(never)]
fn requantize_run(acc: &[i32], multiplier: &[i32], shift: &[i32], p: &Int8Params, out: &mut [i8]) {
    requantize_run_checked(acc, multiplier, shift, p, out, stages_fit(multiplier, shift));
}

/// Whether [`Output::accepts`] every channel's `(multiplier, shift)`.
fn stages_fit(multiplier: &[i32], shift: &[i32]) -> bool {
    // Branch-free, [`Output::accepts`] for all: a multiplier in [2^30, 2^31)
    // has top bits 01, so `m ^ 2^30` has top bits 00; a shift in [-21, 0]
    // has `s + 21` and `-s` both non-negative.
    let (ms, ss) = multiplier.iter().zip(shift).fold((0u32, 0i32), |(ms, ss), (&m, &s)| {
        (ms | (m as u32 ^ (1 << 30)), ss | s.wrapping_add(21) | s.wrapping_neg())
    });
    ms >> 30 == 0 && ss >= 0
}

/// [`requantize_run`] with [`stages_fit`] already known (once per layer).
#[inline(never)]
fn requantize_run_checked(acc: &[i32], multiplier: &[i32], shift: &[i32], p: &Int8Params, out: &mut [i8], fast: bool) {
    let (lo, hi) = (p.act_min.max(-128), p.act_max.min(127));
    let run = out.iter_mut().zip(acc).zip(multiplier.iter().zip(shift));
    match (fast, requant::is_full(lo, hi)) {
        (true, true) => {
            for ((o, &a), (&m, &s)) in run {
                // SAFETY: the check above: every shift is in [-21, 0] (so
                // the stage's shifts need no masking).
                unsafe { core::hint::assert_unchecked((-21..=0).contains(&s)) };
                *o = Output::new_accepted(m, s, p.out_zp).apply_full(a);
            }
        }
        (true, false) => {
            for ((o, &a), (&m, &s)) in run {
                // SAFETY: as above.
                unsafe { core::hint::assert_unchecked((-21..=0).contains(&s)) };
                *o = Output::new_accepted(m, s, p.out_zp).apply(a, lo, hi);
            }
        }
        _ => {
            for ((o, &a), (&m, &s)) in run {
                *o = match Output::new(m, s, p.out_zp) {
                    Some(stage) => stage.apply(a, lo, hi),
                    None => requantize(a, m, s, p),
                };
            }
        }
    }
}

/// Output pixels `range` (row-major) of [`conv2d_dsp`], one at a time.
/// Always inlined: its widened-input buffer and the tiles' accumulators then
/// share one stack slot in [`conv2d_dsp`]'s frame (as a frame of its own
/// under the tiles' it added 2.1 KB to the stack's high-water mark).
#[inline(always)]
fn conv2d_pixels(
    g: &ConvGeom,
    p: &Int8Params,
    w: &Int8Weights<'_>,
    input: &[i8],
    output: &mut [i8],
    range: core::ops::Range<usize>,
) {
    if range.is_empty() {
        return;
    }
    let (kh, kw) = (g.kernel_h, g.kernel_w);
    let filter = kh * kw * g.in_c;
    let mut wide = Wide([0; CHUNK / 2]);
    let mut acc = [0i32; GROUP];
    let fits = stages_fit(w.multiplier, w.shift);
    for pix in range {
        let (oy, ox) = (pix / g.out_w, pix % g.out_w);
        let (ky0, ky1, iy0) = g.taps_h(oy);
        let (kx0, kx1, ix0) = g.taps_w(ox);
        let run = (kx1 - kx0) * g.in_c;
        let at = (iy0 * g.in_w + ix0) * g.in_c;
        let step = g.in_w * g.in_c;
        let out_px = &mut output[pix * g.out_c..][..g.out_c];
        for first in (0..g.out_c).step_by(GROUP) {
            let n = GROUP.min(g.out_c - first);
            let acc = &mut acc[..n];
            acc.copy_from_slice(&w.bias[first..first + n]);
            if kx1 - kx0 == kw {
                // The full kernel width: all kernel rows' taps are one run of weights.
                let runs = Runs { input, at, step, len: run, rows: ky1 - ky0 };
                accumulate(runs, w.weights, filter, ky0 * kw * g.in_c, first, p.in_zp, acc, &mut wide);
            } else {
                for ky in ky0..ky1 {
                    let runs = Runs { input, at: at + (ky - ky0) * step, step, len: run, rows: 1 };
                    let wo = (ky * kw + kx0) * g.in_c;
                    accumulate(runs, w.weights, filter, wo, first, p.in_zp, acc, &mut wide);
                }
            }
            let channels = first..first + n;
            let (m, sh) = (&w.multiplier[channels.clone()], &w.shift[channels.clone()]);
            requantize_run_checked(acc, m, sh, p, &mut out_px[channels], fits);
        }
    }
}

/// One tap of [`dw3x3`]: the activation word at `$x` and the weight word at
/// `$w` widened into even/odd lanes, multiplied lane by lane into the four
/// channels' accumulators.
#[cfg(arm_dsp)]
macro_rules! dw_tap {
    ($x:literal, $w:literal) => {
        concat!(
            "ldr {x}, ",
            $x,
            "\n",
            "ldr {w}, ",
            $w,
            "\n",
            "sxtab16 {xo}, {nzp}, {x}, ror #8\n",
            "sxtab16 {x}, {nzp}, {x}\n",
            "sxtb16 {wo}, {w}, ror #8\n",
            "sxtb16 {w}, {w}\n",
            "smlabb {a0}, {x}, {w}, {a0}\n",
            "smlatt {a2}, {x}, {w}, {a2}\n",
            "smlabb {a1}, {xo}, {wo}, {a1}\n",
            "smlatt {a3}, {xo}, {wo}, {a3}\n",
        )
    };
}

/// A 3 x 3 depthwise window wholly inside the image, four channels: `acc[j]
/// += sum over the nine taps of (x - zp) w` for channel `j`, the activations
/// of kernel row `ky` at `x + ky * row_step + kx * c`, the tap-major weights
/// at `w + (3 ky + kx) * c`. One block of 93 instructions for 36
/// multiply-accumulates, 13 registers, nothing spilled.
///
/// # Safety
/// Every one of those 9 + 9 words must be readable (unaligned reads).
#[cfg(arm_dsp)]
#[inline(always)]
unsafe fn dw3x3(x: *const i8, w: *const i8, c: usize, row_step: usize, nzp: u32, acc: &mut [i32; 4]) {
    let [mut a0, mut a1, mut a2, mut a3] = *acc;
    // SAFETY: reads only, in bounds by the caller's contract (unaligned LDR
    // is allowed on ARMv7-M/ARMv8-M for normal memory); no stack, no flags.
    unsafe {
        core::arch::asm!(
            dw_tap!("[{xp}]", "[{wp}]"),
            dw_tap!("[{xp}, {s}]", "[{wp}, {s}]"),
            dw_tap!("[{xp}, {s}, lsl #1]", "[{wp}, {s}, lsl #1]"),
            "add {xp}, {xp}, {rs}",
            "add {wp}, {wp}, {s}, lsl #1",
            "add {wp}, {wp}, {s}",
            dw_tap!("[{xp}]", "[{wp}]"),
            dw_tap!("[{xp}, {s}]", "[{wp}, {s}]"),
            dw_tap!("[{xp}, {s}, lsl #1]", "[{wp}, {s}, lsl #1]"),
            "add {xp}, {xp}, {rs}",
            "add {wp}, {wp}, {s}, lsl #1",
            "add {wp}, {wp}, {s}",
            dw_tap!("[{xp}]", "[{wp}]"),
            dw_tap!("[{xp}, {s}]", "[{wp}, {s}]"),
            dw_tap!("[{xp}, {s}, lsl #1]", "[{wp}, {s}, lsl #1]"),
            xp = inout(reg) x => _,
            wp = inout(reg) w => _,
            s = in(reg) c,
            rs = in(reg) row_step,
            nzp = in(reg) nzp,
            a0 = inout(reg) a0,
            a1 = inout(reg) a1,
            a2 = inout(reg) a2,
            a3 = inout(reg) a3,
            x = out(reg) _,
            xo = out(reg) _,
            w = out(reg) _,
            wo = out(reg) _,
            options(nostack, readonly, preserves_flags),
        );
    }
    *acc = [a0, a1, a2, a3];
}

/// [`dw3x3`] in plain Rust with the instructions' semantics (the host's tests).
///
/// # Safety
/// As the Arm version.
#[cfg(not(arm_dsp))]
unsafe fn dw3x3(x: *const i8, w: *const i8, c: usize, row_step: usize, nzp: u32, acc: &mut [i32; 4]) {
    for ky in 0..3 {
        for kx in 0..3 {
            // SAFETY: in bounds by the caller's contract.
            let (xv, wv) = unsafe {
                (
                    x.add(ky * row_step + kx * c).cast::<u32>().read_unaligned(),
                    w.add((3 * ky + kx) * c).cast::<u32>().read_unaligned(),
                )
            };
            let (xe, xo, we, wo) = (sxtab16(nzp, xv), sxtab16_ror8(nzp, xv), sxtb16(wv), sxtb16_ror8(wv));
            acc[0] = smlabb(xe, we, acc[0]);
            acc[2] = smlatt(xe, we, acc[2]);
            acc[1] = smlabb(xo, wo, acc[1]);
            acc[3] = smlatt(xo, wo, acc[3]);
        }
    }
}

/// A run of `n` output pixels of four channels whose 3 x 3 windows lie
/// wholly inside the image: [`dw3x3`] on each, then the four channels'
/// output stages, the window `steps[2]` bytes further each pixel. Never
/// inlined: in a frame of its own the loop keeps its pointers in registers
/// (in the kernel's frame each pixel reloaded 40 spilled values).
///
/// `steps` is `[c, row_step, pixel_step]`; `clamp` is `(full, lo, hi)`.
///
/// # Safety
/// For each pixel `i < n`, the nine words of [`dw3x3`] at `x + i *
/// pixel_step` and `w` must be readable, and the four bytes at `out + i * c`
/// writable.
#[allow(clippy::too_many_arguments)]
#[inline(never)]
unsafe fn dw3x3_run(
    x: *const i8,
    w: *const i8,
    steps: [usize; 3],
    nzp: u32,
    bias: &[i32; 4],
    stages: &[Output; 4],
    clamp: (bool, i32, i32),
    out: *mut i8,
    n: usize,
) {
    let [c, row_step, pixel_step] = steps;
    let (full, lo, hi) = clamp;
    let (mut x, mut out) = (x, out);
    for _ in 0..n {
        let mut acc = *bias;
        // SAFETY: the caller's contract, pixel by pixel.
        unsafe {
            dw3x3(x, w, c, row_step, nzp, &mut acc);
            for j in 0..4 {
                let v = if full { stages[j].apply_full(acc[j]) } else { stages[j].apply(acc[j], lo, hi) };
                out.add(j).write(v);
            }
            x = x.wrapping_add(pixel_step);
            out = out.wrapping_add(c);
        }
    }
}

/// Depthwise Conv2D ([`ConvGeom::is_depthwise`]: depth multiplier 1, any
/// kernel, stride, dilation, padding), CMSIS-NN's `arm_depthwise_conv_s8_opt`
/// idea: the weights reordered tap-major into `scratch`
/// ([`crate::kernels::generic::scratch::depthwise_weights_bytes`]), then for
/// each output pixel four channels at a time, each in-image tap one word of
/// activations and one of weights, widened into even and odd lanes
/// (`SXTAB16` removing the zero point) and multiplied lane by lane into four
/// accumulators (`SMLABB`, `SMLATT`): 2.5 instructions per multiply-accumulate
/// before the loop's own. The plain kernel's products summed modulo 2^32 in
/// another order: its bytes. Never inlined: in a frame of its own its
/// constants stay in registers (inlined into the dispatcher they were spilled).
#[inline(never)]
pub fn depthwise_conv2d_dsp(
    g: &ConvGeom,
    p: &Int8Params,
    w: &Int8Weights<'_>,
    input: &[i8],
    output: &mut [i8],
    scratch: &mut [u8],
) {
    check_conv(g, w, input, output);
    assert!(g.is_depthwise(), "depthwise_conv2d_dsp: a depthwise geometry");
    let c = g.in_c;
    let wt = crate::kernels::generic::int8::depthwise_reorder(g, w, scratch);
    let nzp = neg_zp_pair(p.in_zp);
    let (x0, w0) = (input.as_ptr(), wt.as_ptr());
    let (x_step, w_step) = (g.dilation_w * c, c);
    let (x_row_step, w_row_step) = (g.dilation_h * g.in_w * c, g.kernel_w * c);
    let (out_zp, lo, hi) = (p.out_zp, p.act_min.max(-128), p.act_max.min(127));
    let full = requant::is_full(lo, hi);
    // 3 x 3, undilated along the width: interior windows take [`dw3x3`].
    let k3 = g.kernel_h == 3 && g.kernel_w == 3 && g.dilation_w == 1;
    // A window wholly inside the image along the width takes every tap: no
    // divisions (taps_w's) for the interior columns.
    let (span_w, kw) = (g.span_w(), g.kernel_w);
    let columns = |ox: usize| {
        let x = ox * g.stride_w;
        if x >= g.pad_left && x - g.pad_left + span_w <= g.in_w {
            (0, kw, x - g.pad_left)
        } else {
            g.taps_w(ox)
        }
    };
    // The output columns whose windows lie inside the image along the width.
    let interior = {
        let lo = g.pad_left.div_ceil(g.stride_w);
        let hi = if g.in_w + g.pad_left >= span_w { (g.in_w + g.pad_left - span_w) / g.stride_w + 1 } else { 0 };
        lo.min(g.out_w)..hi.min(g.out_w).max(lo.min(g.out_w))
    };
    // Channel blocks outermost: each block's requantization constants are
    // computed once for all its output pixels.
    let mut ch = 0;
    while ch + 4 <= c {
        let chans: [Channel; 4] = core::array::from_fn(|j| Channel::new(w.multiplier[ch + j], w.shift[ch + j]));
        let short = chans.iter().all(Channel::is_short);
        let fast = Output::block::<4>(w.multiplier, w.shift, ch, out_zp);
        let bias = [w.bias[ch], w.bias[ch + 1], w.bias[ch + 2], w.bias[ch + 3]];
        for oy in 0..g.out_h {
            let (ky0, ky1, iy0) = g.taps_h(oy);
            let rows_full = k3 && ky0 == 0 && ky1 == 3;
            // The row's interior windows, one run through `dw3x3_run`.
            let run = match &fast {
                Some(stages) if rows_full && interior.start < interior.end => Some(stages),
                _ => None,
            };
            let mut ox = 0;
            while ox < g.out_w {
                if let (Some(stages), true) = (run, ox == interior.start) {
                    let ix0 = ox * g.stride_w - g.pad_left;
                    let n = interior.end - interior.start;
                    let out = &mut output[(oy * g.out_w + ox) * c + ch..];
                    // The run's last output word lies inside `output`.
                    assert!((n - 1) * c + 4 <= out.len(), "depthwise run: output");
                    // SAFETY: every window of the run lies inside the image
                    // (`interior`, rows_full) undilated along the width (k3):
                    // its nine words of channels ch..ch + 4 lie inside
                    // `input`, the nine tap words inside `wt` (ch + 4 <= c);
                    // the outputs inside `out` (asserted).
                    unsafe {
                        dw3x3_run(
                            x0.add((iy0 * g.in_w + ix0) * c + ch),
                            w0.add(ch),
                            [c, x_row_step, g.stride_w * c],
                            nzp,
                            &bias,
                            stages,
                            (full, lo, hi),
                            out.as_mut_ptr(),
                            n,
                        )
                    };
                    ox = interior.end;
                    continue;
                }
                let (kx0, kx1, ix0) = columns(ox);
                let taps_w = kx1 - kx0;
                let mut acc = bias;
                let out = &mut output[(oy * g.out_w + ox) * c + ch..][..4];
                if rows_full && taps_w == 3 {
                    // SAFETY: the whole 3 x 3 window lies inside the image
                    // (taps_h/columns), undilated along the width (k3): its
                    // nine words of channels ch..ch + 4 lie inside `input`,
                    // and the nine tap words inside `wt` (ch + 4 <= c).
                    unsafe { dw3x3(x0.add((iy0 * g.in_w + ix0) * c + ch), w0.add(ch), c, x_row_step, nzp, &mut acc) };
                } else {
                    // SAFETY: taps_h/taps_w keep every tap inside the image and
                    // the kernel (check_conv checked the lengths), and ch + 4 <= c:
                    // each word read lies inside `input` / `wt`. The row pointers
                    // are only formed for rows that are read (ky < ky1).
                    unsafe {
                        let mut x_row = x0.add((iy0 * g.in_w + ix0) * c + ch);
                        let mut w_row = w0.add((ky0 * g.kernel_w + kx0) * c + ch);
                        for ky in ky0..ky1 {
                            let (mut xp, mut wp) = (x_row, w_row);
                            // One tap: a word of four channels' activations and weights.
                            let mut tap = |x: u32, wv: u32| {
                                let (xe, xo) = (sxtab16(nzp, x), sxtab16_ror8(nzp, x));
                                let (we, wo) = (sxtb16(wv), sxtb16_ror8(wv));
                                acc[0] = smlabb(xe, we, acc[0]);
                                acc[2] = smlatt(xe, we, acc[2]);
                                acc[1] = smlabb(xo, wo, acc[1]);
                                acc[3] = smlatt(xo, wo, acc[3]);
                            };
                            if taps_w == 3 {
                                // The 3-wide kernels of MobileNet and DS-CNN, unrolled.
                                let word = |q: *const i8| q.cast::<u32>().read_unaligned();
                                let (x0, x1, x2) = (word(xp), word(xp.add(x_step)), word(xp.add(2 * x_step)));
                                let (w0, w1, w2) = (word(wp), word(wp.add(w_step)), word(wp.add(2 * w_step)));
                                tap(x0, w0);
                                tap(x1, w1);
                                tap(x2, w2);
                            } else if taps_w == 2 {
                                // Their windows at the left and right edges.
                                let word = |q: *const i8| q.cast::<u32>().read_unaligned();
                                let (x0, x1) = (word(xp), word(xp.add(x_step)));
                                let (w0, w1) = (word(wp), word(wp.add(w_step)));
                                tap(x0, w0);
                                tap(x1, w1);
                            } else {
                                for _ in 0..taps_w {
                                    tap(xp.cast::<u32>().read_unaligned(), wp.cast::<u32>().read_unaligned());
                                    xp = xp.add(x_step);
                                    wp = wp.add(w_step);
                                }
                            }
                            if ky + 1 < ky1 {
                                x_row = x_row.add(x_row_step);
                                w_row = w_row.add(w_row_step);
                            }
                        }
                    }
                }
                match &fast {
                    Some(f) if full => {
                        for j in 0..4 {
                            out[j] = f[j].apply_full(acc[j]);
                        }
                    }
                    Some(f) => {
                        for j in 0..4 {
                            out[j] = f[j].apply(acc[j], lo, hi);
                        }
                    }
                    None => {
                        for j in 0..4 {
                            out[j] = if short {
                                chans[j].apply_short(acc[j], out_zp, lo, hi)
                            } else {
                                chans[j].apply(acc[j], p)
                            };
                        }
                    }
                }
                ox += 1;
            }
        }
        ch += 4;
    }
    // The last channels, one at a time.
    for ch in ch..c {
        for oy in 0..g.out_h {
            let (ky0, ky1, iy0) = g.taps_h(oy);
            for ox in 0..g.out_w {
                let (kx0, kx1, ix0) = g.taps_w(ox);
                let mut acc = w.bias[ch];
                for ky in ky0..ky1 {
                    let iy = iy0 + (ky - ky0) * g.dilation_h;
                    for kx in kx0..kx1 {
                        let ix = ix0 + (kx - kx0) * g.dilation_w;
                        let x = input[(iy * g.in_w + ix) * c + ch] as i32 - p.in_zp;
                        acc = acc.wrapping_add(x * wt[(ky * g.kernel_w + kx) * c + ch] as i32);
                    }
                }
                output[(oy * g.out_w + ox) * c + ch] = requantize(acc, w.multiplier[ch], w.shift[ch], p);
            }
        }
    }
}

/// ADD ([`crate::kernels::generic::int8::add`]) with the DSP kernels' output
/// stage: [`Fast`]'s and [`Unshifted`]'s stages where their domains hold
/// (every MLPerf Tiny ADD), else the three scalings' constants computed once
/// ([`Channel`]), the short path for each when its shift allows (the inputs' always: their real
/// multipliers are at most 1/2), else the plain requantization. The same bytes.
pub fn add_dsp(p: &AddParams, a: &[i8], b: &[i8], out: &mut [i8], scratch: &mut [u8]) {
    use crate::kernels::generic::int8::ADD_LEFT_SHIFT;
    assert!(a.len() == out.len() && b.len() == out.len(), "add: length");
    let (ca, cb, co) = (
        Channel::new(p.a_multiplier, p.a_shift),
        Channel::new(p.b_multiplier, p.b_shift),
        Channel::new(p.out_multiplier, p.out_shift),
    );
    let (lo, hi) = (p.out.act_min.max(-128), p.out.act_max.min(127));
    let full = requant::is_full(lo, hi);
    if let Some(fo) = Output::new(p.out_multiplier, p.out_shift, p.out.out_zp) {
        // The inputs' `(x + offset) << 20` have magnitude below 2^28 (offsets
        // are zero points negated, in [-127, 128]), inside the scalings'
        // domain; their scaled sum is at most 2^28 in magnitude.
        let (ua, ub) = (Unshifted::new(p.a_multiplier, p.a_shift), Unshifted::new(p.b_multiplier, p.b_shift));
        let (fa, fb) = (Fast::new(p.a_multiplier, p.a_shift), Fast::new(p.b_multiplier, p.b_shift));
        let shifted = |x: i8, offset: i32| (x as i32 + offset) << ADD_LEFT_SHIFT;
        let (sa, sb) = (|x| shifted(x, p.a_offset), |y| shifted(y, p.b_offset));
        // A rounding input's scalings (4 instructions and 4 constants an
        // element) come from a table of its 256 byte values instead.
        let words = crate::kernels::generic::scratch::words(scratch);
        let table = words.get_mut(..256);
        match (ua, ub, fa, fb, table) {
            (Some(ua), Some(ub), ..) => return add_fast(p, a, b, out, fo, |x| ua.scale(sa(x)), |y| ub.scale(sb(y))),
            (Some(ua), _, _, Some(fb), Some(t)) => {
                let tb = ScaledBytes::fill(t, |y| fb.scale(sb(y)));
                if full && fo.rounds() {
                    return add_table_rounding(&tb, b, a, p.a_offset, ua, fo, out);
                }
                return add_fast(p, a, b, out, fo, |x| ua.scale(sa(x)), |y| tb.get(y));
            }
            (_, Some(ub), Some(fa), _, Some(t)) => {
                let ta = ScaledBytes::fill(t, |x| fa.scale(sa(x)));
                if full && fo.rounds() {
                    return add_table_rounding(&ta, a, b, p.b_offset, ub, fo, out);
                }
                return add_fast(p, a, b, out, fo, |x| ta.get(x), |y| ub.scale(sb(y)));
            }
            (_, _, Some(fa), Some(fb), Some(t)) => {
                let ta = ScaledBytes::fill(t, |x| fa.scale(sa(x)));
                return add_fast(p, a, b, out, fo, |x| ta.get(x), |y| fb.scale(sb(y)));
            }
            (Some(ua), _, _, Some(fb), None) => {
                return add_fast(p, a, b, out, fo, |x| ua.scale(sa(x)), |y| fb.scale(sb(y)))
            }
            (_, Some(ub), Some(fa), _, None) => {
                return add_fast(p, a, b, out, fo, |x| fa.scale(sa(x)), |y| ub.scale(sb(y)))
            }
            (_, _, Some(fa), Some(fb), None) => {
                return add_fast(p, a, b, out, fo, |x| fa.scale(sa(x)), |y| fb.scale(sb(y)))
            }
            _ => {}
        }
    }
    if ca.is_short() && cb.is_short() && co.is_short() {
        for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
            let x = ca.scale_short((x as i32 + p.a_offset) << ADD_LEFT_SHIFT);
            let y = cb.scale_short((y as i32 + p.b_offset) << ADD_LEFT_SHIFT);
            *o = co.apply_short(x + y, p.out.out_zp, lo, hi);
        }
    } else {
        crate::kernels::generic::int8::add(p, a, b, out);
    }
}

/// One ADD input's scaled values for each of the 256 byte values, in the
/// layer's scratch: a lookup instead of the scaling's arithmetic, the same
/// values.
struct ScaledBytes<'t>(&'t [u32]);

impl<'t> ScaledBytes<'t> {
    /// `table[x + 128] = scale(x)` for every byte `x`.
    fn fill(table: &'t mut [u32], scale: impl Fn(i8) -> i32) -> Self {
        assert!(table.len() == 256, "add table: 256 words");
        for (t, x) in table.iter_mut().zip(-128i32..) {
            *t = scale(x as i8) as u32;
        }
        ScaledBytes(table)
    }

    /// The word of byte 0 (the assembly indexes it with signed bytes).
    #[cfg(arm_dsp)]
    fn middle(&self) -> *const u32 {
        self.0[128..].as_ptr()
    }

    /// `scale(x)`.
    #[inline(always)]
    fn get(&self, x: i8) -> i32 {
        // SAFETY: x + 128 is in 0..256, the table's length (asserted at fill).
        unsafe { *self.0.as_ptr().add(128).offset(x as isize) as i32 }
    }
}

/// [`add_dsp`]'s loop with the inputs' scaled values `sa`, `sb` of their
/// bytes (exact) and the output's [`Output`] stage: ~17 instructions an
/// element with one input tabulated, instead of ~75 for the plain kernel.
#[inline(always)]
fn add_fast(
    p: &AddParams,
    a: &[i8],
    b: &[i8],
    out: &mut [i8],
    fo: Output,
    sa: impl Fn(i8) -> i32,
    sb: impl Fn(i8) -> i32,
) {
    let (lo, hi) = (p.out.act_min.max(-128), p.out.act_max.min(127));
    let pairs = out.iter_mut().zip(a).zip(b);
    if requant::is_full(lo, hi) {
        for ((o, &x), &y) in pairs {
            *o = fo.apply_full(sa(x) + sb(y));
        }
    } else {
        for ((o, &x), &y) in pairs {
            *o = fo.apply(sa(x) + sb(y), lo, hi);
        }
    }
}

/// [`add_fast`] for one input tabulated (`t`, its scaled values in `table`),
/// the other scaled by an [`Unshifted`] stage (`u`, `u_offset`), an output
/// stage that [`Output::rounds`] and the clamp the whole int8 range (ResNet's
/// ADD + ReLU): [`Output::apply_full_rounding`] of the sum, the same bytes.
/// The sum commutes, so either input may be the tabulated one.
fn add_table_rounding(
    table: &ScaledBytes<'_>,
    t: &[i8],
    u: &[i8],
    u_offset: i32,
    us: Unshifted,
    o: Output,
    out: &mut [i8],
) {
    use crate::kernels::generic::int8::ADD_LEFT_SHIFT;
    assert!(t.len() == out.len() && u.len() == out.len() && o.rounds(), "add: length, stage");
    let one = |x: i8, y: i8| o.apply_full_rounding(table.get(x) + us.scale((y as i32 + u_offset) << ADD_LEFT_SHIFT));
    #[cfg(arm_dsp)]
    {
        let pairs = out.len() / 2;
        if pairs > 0 {
            // SAFETY: 2 pairs <= len bytes read from `t` and `u` and written to
            // `out`; the table's words at -128..128 around its middle (every
            // byte value); registers otherwise.
            unsafe {
                add_table_rounding_pairs(table, t.as_ptr(), u.as_ptr(), u_offset, us, o, out.as_mut_ptr(), pairs)
            };
        }
        if out.len() % 2 == 1 {
            let i = out.len() - 1;
            out[i] = one(t[i], u[i]);
        }
    }
    #[cfg(not(arm_dsp))]
    for ((y, &a), &b) in out.iter_mut().zip(t).zip(u) {
        *y = one(a, b);
    }
}

/// [`add_table_rounding`]'s loop in assembly, two elements a turn: 14
/// instructions an element (as Rust, ~21: three constants were spilled).
///
/// # Safety
/// `t`, `u` readable and `out` writable for `2 pairs` bytes, `pairs >= 1`.
#[cfg(arm_dsp)]
#[allow(clippy::too_many_arguments)]
#[inline(never)]
unsafe fn add_table_rounding_pairs(
    table: &ScaledBytes<'_>,
    t: *const i8,
    u: *const i8,
    u_offset: i32,
    us: Unshifted,
    o: Output,
    out: *mut i8,
    pairs: usize,
) {
    use crate::kernels::generic::int8::ADD_LEFT_SHIFT;
    macro_rules! element {
        () => {
            concat!(
                "ldrsb {x}, [{pt}], #1\n",
                "ldrsb {y}, [{pu}], #1\n",
                "ldr {x}, [{tab}, {x}, lsl #2]\n",
                "add {y}, {y}, {uoff}\n",
                "lsl {y}, {y}, #{sh}\n",
                "smmulr {y}, {y}, {um}\n",
                "add {x}, {x}, {y}\n",
                "qadd {y}, {x}, {x}\n",
                "smmlar {y}, {y}, {m}, {off}\n",
                "add {y}, {y}, {x}, asr #31\n",
                "asr {y}, {y}, {e}\n",
                "ssat {y}, #8, {y}\n",
                "strb {y}, [{po}], #1\n",
            )
        };
    }
    let (m, off, e) = o.parts();
    // SAFETY: the caller's contract; `subs` sets the flags (QADD's sticky Q
    // flag is read by nothing here).
    unsafe {
        core::arch::asm!(
            "2:",
            element!(),
            element!(),
            "subs {n}, {n}, #1",
            "bne 2b",
            pt = inout(reg) t => _,
            pu = inout(reg) u => _,
            po = inout(reg) out => _,
            n = inout(reg) pairs => _,
            tab = in(reg) table.middle(),
            uoff = in(reg) u_offset,
            um = in(reg) us.multiplier(),
            m = in(reg) m,
            off = in(reg) off,
            e = in(reg) e,
            x = out(reg) _,
            y = out(reg) _,
            sh = const ADD_LEFT_SHIFT + 1,
            options(nostack),
        );
    }
}

/// Dense with the bytes of [`crate::kernels::generic::int8::dense`], through the DSP instructions.
pub fn dense_dsp(p: &Int8Params, w: &Int8Weights<'_>, input: &[i8], output: &mut [i8]) {
    check_dense(w, input, output);
    let n = input.len();
    let mut wide = Wide([0; CHUNK / 2]);
    let mut acc = [0i32; GROUP];
    let runs = Runs { input, at: 0, step: n, len: n, rows: 1 };
    for first in (0..output.len()).step_by(GROUP) {
        let m = GROUP.min(output.len() - first);
        let acc = &mut acc[..m];
        acc.copy_from_slice(&w.bias[first..first + m]);
        accumulate(runs, w.weights, n, 0, first, p.in_zp, acc, &mut wide);
        let channels = first..first + m;
        requantize_run(acc, &w.multiplier[channels.clone()], &w.shift[channels.clone()], p, &mut output[channels]);
    }
}

/// BatchNormalization in place with the bytes of
/// [`crate::kernels::generic::int8::batch_norm_in_place`]: each channel's
/// constants (weight, bias with the zero point folded in, requantization)
/// computed once per call for up to [`BN_GROUP`] channels at a time, then
/// the short output stage of [`requant::Channel`].
#[inline(never)]
pub fn batch_norm_in_place_dsp(p: &Int8Params, w: &Int8Weights<'_>, data: &mut [i8]) {
    let c = check_bn(w, data.len());
    let (lo, hi) = (p.act_min.max(-128), p.act_max.min(127));
    let mut consts = [(0i32, 0i32, requant::Channel::new(0, 0)); BN_GROUP];
    for first in (0..c).step_by(BN_GROUP) {
        let n = BN_GROUP.min(c - first);
        let mut short = true;
        for (k, ch) in consts[..n].iter_mut().zip(first..) {
            let wc = w.weights[ch] as i32;
            // w (x - zp) + b = w x + (b - w zp) modulo 2^32, and w (x - zp) never wraps.
            *k = (wc, w.bias[ch].wrapping_sub(wc * p.in_zp), requant::Channel::new(w.multiplier[ch], w.shift[ch]));
            short &= k.2.is_short();
        }
        // The short stage with the clamp as constants when it is the full
        // range (always for BN, which has no activation): a saturation.
        #[inline(always)]
        fn short_pass(
            data: &mut [i8],
            c: usize,
            first: usize,
            consts: &[(i32, i32, requant::Channel)],
            zp: i32,
            lo: i32,
            hi: i32,
        ) {
            // Channel outermost: its constants stay in registers down the
            // column of pixels (the M4 has no cache: a strided walk costs
            // what a contiguous one does).
            for (k, &(wc, b, ch)) in consts.iter().enumerate() {
                for v in data[first + k..].iter_mut().step_by(c) {
                    *v = ch.apply_short((wc * *v as i32).wrapping_add(b), zp, lo, hi);
                }
            }
        }
        if short && (lo, hi) == (-128, 127) {
            short_pass(data, c, first, &consts[..n], p.out_zp, -128, 127);
            continue;
        }
        if short {
            short_pass(data, c, first, &consts[..n], p.out_zp, lo, hi);
            continue;
        }
        for px in data.chunks_exact_mut(c) {
            let px = &mut px[first..first + n];
            {
                for (v, &(wc, b, ch)) in px.iter_mut().zip(&consts[..n]) {
                    *v = ch.apply((wc * *v as i32).wrapping_add(b), p);
                }
            }
        }
    }
}

/// Channels whose BatchNormalization constants [`batch_norm_in_place_dsp`] holds at once.
const BN_GROUP: usize = 64;

/// `SSUB8` then `SEL`: the bytewise signed maximum of `a` and `b`.
#[cfg(arm_dsp)]
#[inline(always)]
fn max8(a: u32, b: u32) -> u32 {
    let r: u32;
    // SAFETY: two register-only instructions; SSUB8 sets the GE flags that SEL reads.
    unsafe {
        core::arch::asm!("ssub8 {r}, {a}, {b}", "sel {r}, {a}, {b}", r = out(reg) r, a = in(reg) a, b = in(reg) b,
            options(pure, nomem, nostack))
    };
    r
}

/// [`max8`] in plain Rust (the host's tests).
#[cfg(not(arm_dsp))]
fn max8(a: u32, b: u32) -> u32 {
    u32::from_le_bytes(core::array::from_fn(|i| byte(a, i as u32).max(byte(b, i as u32)) as u8))
}

/// MaxPool2D with the bytes of [`crate::kernels::generic::int8::max_pool`],
/// four channels per instruction pair ([`max8`]) when the channel count is a
/// multiple of 4 (the plain kernel otherwise).
pub fn max_pool_dsp(g: &PoolGeom, input: &[i8], output: &mut [i8]) {
    let c = g.channels;
    if !c.is_multiple_of(4) {
        return crate::kernels::generic::int8::max_pool(g, input, output);
    }
    assert!(input.len() == g.input_len() && output.len() == g.output_len(), "max_pool: length");
    let src = input.as_ptr();
    for oy in 0..g.out_h {
        let (y0, y1) = g.window(oy, g.in_h);
        for ox in 0..g.out_w {
            let (x0, x1) = g.window(ox, g.in_w);
            let out = &mut output[(oy * g.out_w + ox) * c..][..c];
            for (j, o) in out.chunks_exact_mut(4).enumerate() {
                // -128 in every lane, then the window's maximum.
                let mut m = 0x8080_8080;
                for y in y0..y1 {
                    for x in x0..x1 {
                        // SAFETY: y < in_h and x < in_w (the window is
                        // clipped to the image) and 4 j + 4 <= c, so the four
                        // bytes lie inside `input` (its length is asserted).
                        let v = unsafe { src.add((y * g.in_w + x) * c + 4 * j).cast::<u32>().read_unaligned() };
                        m = max8(v, m);
                    }
                }
                o.copy_from_slice(&m.to_le_bytes().map(|b| b as i8));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::generic::int8::{batch_norm_in_place, conv2d, dense, max_pool};
    use crate::kernels::generic::scratch::conv2d_int8_scratch_bytes;
    use crate::spec::{Activation, Padding};

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            self.0 >> 33
        }
        fn int(&mut self, lo: i32, hi: i32) -> i32 {
            lo + (self.next() % (hi - lo + 1) as u64) as i32
        }
        fn i8s(&mut self, n: usize, lo: i32, hi: i32) -> std::vec::Vec<i8> {
            (0..n).map(|_| self.int(lo, hi) as i8).collect()
        }
    }

    struct Owned {
        weights: std::vec::Vec<i8>,
        scale: std::vec::Vec<f32>,
        bias: std::vec::Vec<i32>,
        mult: std::vec::Vec<i32>,
        shift: std::vec::Vec<i32>,
    }

    impl Owned {
        fn random(rng: &mut Rng, n: usize, channels: usize) -> Self {
            Owned {
                weights: rng.i8s(n, -127, 127),
                scale: std::vec![1.0; channels],
                bias: (0..channels).map(|_| rng.int(-40_000, 40_000)).collect(),
                mult: (0..channels).map(|_| rng.int(1 << 30, i32::MAX)).collect(),
                shift: (0..channels).map(|_| rng.int(-12, 1)).collect(),
            }
        }
        fn view(&self) -> Int8Weights<'_> {
            Int8Weights {
                weights: &self.weights,
                weight_scale: &self.scale,
                bias: &self.bias,
                multiplier: &self.mult,
                shift: &self.shift,
            }
        }
    }

    fn params(rng: &mut Rng) -> Int8Params {
        let zp = |rng: &mut Rng| match rng.int(0, 3) {
            0 => -128,
            1 => 127,
            _ => rng.int(-128, 127),
        };
        let act = if rng.int(0, 1) == 0 { Activation::Relu } else { Activation::None };
        Int8Params::new(zp(rng), zp(rng), act)
    }

    #[test]
    fn dsp_semantics_match_the_architecture() {
        assert_eq!(sxtb16(0x80_7f_01_ff), 0x007f_ffff);
        assert_eq!(sxtb16_ror8(0x80_7f_01_ff), 0xff80_0001);
        assert_eq!(sxtab16(0x0080_ff81, 0x00_7f_00_80), 0x00ff_ff01);
        assert_eq!(sxtab16_ror8(0x0080_ff81, 0x7f_00_80_00), 0x00ff_ff01);
        assert_eq!(smlad(halves(-255, 255), halves(-127, 127), 5), 5 + 255 * 127 * 2);
        assert_eq!(smlabb(halves(-255, 7), halves(-127, 9), 5), 5 + 255 * 127);
        assert_eq!(smlatt(halves(7, -255), halves(9, 127), i32::MAX), i32::MAX.wrapping_sub(255 * 127));
    }

    /// A random geometry of the rectangular kind (kernels up to 10x5, strides
    /// up to 3x3, SAME, VALID or explicit pads; many channels one case in
    /// seven) and its filter count, or `None` where it has no output.
    fn rectangular_geometry(rng: &mut Rng, case: usize) -> Option<(ConvGeom, usize)> {
        use crate::spec::Hw;
        let (h, wd) = (rng.int(1, 50) as usize, rng.int(1, 12) as usize);
        let c = if case.is_multiple_of(7) { rng.int(30, 70) } else { rng.int(1, 9) } as usize;
        let filters = rng.int(1, 70) as usize;
        let kernel = Hw::new(rng.int(1, 10) as u32, rng.int(1, 5) as u32);
        let stride = Hw::new(rng.int(1, 3) as u32, rng.int(1, 3) as u32);
        let pad = match rng.int(0, 2) {
            0 => Padding::Same,
            1 => Padding::Valid,
            _ => Padding::explicit(
                rng.int(0, 4) as u32,
                rng.int(0, 4) as u32,
                rng.int(0, 3) as u32,
                rng.int(0, 3) as u32,
            ),
        };
        ConvGeom::general((h, wd, c), filters, kernel, stride, Hw::ONE, pad).map(|g| (g, filters))
    }

    /// Rectangular kernels and strides, explicit pads (DS-CNN's 10x4 stride-2
    /// first conv among them) through the pixel path, against the plain kernel.
    #[test]
    fn conv2d_dsp_general_gives_the_plain_bytes() {
        let mut rng = Rng(41);
        let mut ran = 0;
        for case in 0..300 {
            let Some((g, filters)) = rectangular_geometry(&mut rng, case) else { continue };
            let p = params(&mut rng);
            let x = rng.i8s(g.input_len(), -128, 127);
            let o = Owned::random(&mut rng, g.weights_len(), filters);
            let (mut want, mut got) = (std::vec![0i8; g.output_len()], std::vec![1i8; g.output_len()]);
            conv2d(&g, &p, &o.view(), &x, &mut want);
            conv2d_dsp_general(&g, &p, &o.view(), &x, &mut got);
            assert_eq!(got, want, "case {case}: {g:?} {p:?}");
            ran += 1;
        }
        assert!(ran > 200, "{ran}");
    }

    /// ADD on random quantizations (input scales up to 100x apart, every
    /// activation) against the plain kernel.
    #[test]
    fn add_dsp_gives_the_plain_bytes() {
        use crate::kernels::generic::int8::{add, AddParams};
        use crate::model::TensorQuant;
        let mut rng = Rng(31);
        for case in 0..2000 {
            let q = |rng: &mut Rng| TensorQuant {
                scale: (rng.int(1, 10_000) as f32) * 1e-4 * if rng.int(0, 3) == 0 { 50.0 } else { 1.0 },
                zero_point: rng.int(-128, 127),
            };
            let act = [Activation::None, Activation::Relu, Activation::Relu6][rng.int(0, 2) as usize];
            let qa = q(&mut rng);
            // Equal input scales now and then (both scalings by exactly 1/2).
            let qb = if case % 5 == 0 { TensorQuant { zero_point: rng.int(-128, 127), ..qa } } else { q(&mut rng) };
            let p = AddParams::new(qa, qb, q(&mut rng), act);
            let n = rng.int(1, 40) as usize;
            let (a, b) = (rng.i8s(n, -128, 127), rng.i8s(n, -128, 127));
            let (mut want, mut got) = (std::vec![0i8; n], std::vec![1i8; n]);
            add(&p, &a, &b, &mut want);
            // Exactly the planned scratch at any alignment (a rounding
            // input tabulated), and none at all (computed).
            let skew = case % 4;
            let mut scratch = std::vec![0xa5u8; skew + crate::kernels::generic::scratch::ADD_INT8_SCRATCH_BYTES];
            add_dsp(&p, &a, &b, &mut got, &mut scratch[skew..]);
            assert_eq!(got, want, "case {case}: {p:?}");
            got.fill(1);
            add_dsp(&p, &a, &b, &mut got, &mut []);
            assert_eq!(got, want, "case {case} without scratch: {p:?}");
        }
    }

    /// Depthwise geometries of every kind (rectangular, strided, dilated,
    /// padded; channels not a multiple of 4) against the plain kernel, with
    /// exactly the planned scratch at any alignment; the portable reordering too.
    #[test]
    fn depthwise_conv2d_dsp_gives_the_plain_bytes() {
        use crate::kernels::generic::int8::depthwise_conv2d_portable;
        use crate::spec::Hw;
        let mut rng = Rng(21);
        let mut ran = 0;
        for case in 0..400 {
            let (h, wd) = (rng.int(1, 12) as usize, rng.int(1, 12) as usize);
            let c = if case % 9 == 0 { rng.int(60, 130) } else { rng.int(2, 11) } as usize;
            let kernel = Hw::new(rng.int(1, 5) as u32, rng.int(1, 5) as u32);
            let stride = Hw::new(rng.int(1, 3) as u32, rng.int(1, 3) as u32);
            let dilation = Hw::new(rng.int(1, 2) as u32, rng.int(1, 2) as u32);
            let pad = match rng.int(0, 2) {
                0 => Padding::Same,
                1 => Padding::Valid,
                _ => Padding::explicit(
                    rng.int(0, 2) as u32,
                    rng.int(0, 2) as u32,
                    rng.int(0, 2) as u32,
                    rng.int(0, 2) as u32,
                ),
            };
            let Some(mut g) = ConvGeom::general((h, wd, c), c, kernel, stride, dilation, pad) else { continue };
            g.groups = c;
            assert!(g.is_depthwise());
            let p = params(&mut rng);
            let x = rng.i8s(g.input_len(), -128, 127);
            let o = Owned::random(&mut rng, g.weights_len(), c);
            let (mut want, mut got) = (std::vec![0i8; g.output_len()], std::vec![1i8; g.output_len()]);
            conv2d(&g, &p, &o.view(), &x, &mut want);
            let skew = case % 4;
            let mut scratch = std::vec![0xa5u8; skew + conv2d_int8_scratch_bytes(&g)];
            depthwise_conv2d_dsp(&g, &p, &o.view(), &x, &mut got, &mut scratch[skew..]);
            assert_eq!(got, want, "case {case}: {g:?} {p:?}");
            got.fill(1);
            depthwise_conv2d_portable(&g, &p, &o.view(), &x, &mut got, &mut scratch[skew..]);
            assert_eq!(got, want, "portable, case {case}: {g:?} {p:?}");
            ran += 1;
        }
        assert!(ran > 200, "{ran}");
    }

    /// The 3 x 3 windows of MobileNet and DS-CNN ([`dw3x3`] inside the image,
    /// the tap loop on the borders), strides 1 and 2, every padding, row
    /// dilation, channel counts with and without a tail, multipliers inside
    /// and outside [`requant::Fast`]'s domain, against the plain kernel.
    #[test]
    fn depthwise_3x3_gives_the_plain_bytes() {
        use crate::spec::Hw;
        let mut rng = Rng(22);
        let mut ran = 0;
        for case in 0..300 {
            let (h, wd) = (rng.int(1, 14) as usize, rng.int(1, 14) as usize);
            let c = 4 * rng.int(1, 20) as usize + if case % 5 == 0 { rng.int(1, 3) as usize } else { 0 };
            let stride = Hw::new(rng.int(1, 2) as u32, rng.int(1, 2) as u32);
            let dilation = Hw::new(if case % 7 == 0 { 2 } else { 1 }, 1);
            let pad = match rng.int(0, 2) {
                0 => Padding::Same,
                1 => Padding::Valid,
                _ => Padding::explicit(
                    rng.int(0, 2) as u32,
                    rng.int(0, 2) as u32,
                    rng.int(0, 2) as u32,
                    rng.int(0, 2) as u32,
                ),
            };
            let Some(mut g) = ConvGeom::general((h, wd, c), c, Hw::new(3, 3), stride, dilation, pad) else { continue };
            g.groups = c;
            let p = params(&mut rng);
            let x = rng.i8s(g.input_len(), -128, 127);
            let mut o = Owned::random(&mut rng, g.weights_len(), c);
            if case % 3 != 0 {
                // Every channel inside the fast stage's domain (shifts -1..=-21).
                o.shift = (0..c).map(|_| rng.int(-21, -1)).collect();
            }
            let (mut want, mut got) = (std::vec![0i8; g.output_len()], std::vec![1i8; g.output_len()]);
            conv2d(&g, &p, &o.view(), &x, &mut want);
            let skew = case % 4;
            let mut scratch = std::vec![0xa5u8; skew + conv2d_int8_scratch_bytes(&g)];
            depthwise_conv2d_dsp(&g, &p, &o.view(), &x, &mut got, &mut scratch[skew..]);
            assert_eq!(got, want, "case {case}: {g:?} {p:?}");
            ran += 1;
        }
        assert!(ran > 200, "{ran}");
    }

    #[test]
    fn conv2d_dsp_gives_the_plain_bytes() {
        let mut rng = Rng(11);
        for case in 0..300 {
            let (h, wd) = (rng.int(1, 12) as usize, rng.int(1, 12) as usize);
            let big = case % 13 == 0;
            let c = if big { rng.int(100, 230) } else { rng.int(1, 9) } as usize;
            let filters = if big { rng.int(125, 140) } else { rng.int(1, 11) } as usize;
            let k = rng.int(1, 5) as usize;
            let stride = rng.int(1, 3) as usize;
            let pad = if rng.int(0, 1) == 0 { Padding::Same } else { Padding::Valid };
            let Some(g) = ConvGeom::new((h, wd, c), filters, k, stride, pad) else { continue };
            let p = params(&mut rng);
            let x =
                if case % 5 == 0 { std::vec![p.in_zp as i8; g.input_len()] } else { rng.i8s(g.input_len(), -128, 127) };
            let o = Owned::random(&mut rng, g.weights_len(), filters);
            let (mut want, mut got) = (std::vec![0i8; g.output_len()], std::vec![1i8; g.output_len()]);
            conv2d(&g, &p, &o.view(), &x, &mut want);
            // Exactly the planned scratch, at any alignment.
            let skew = case % 4;
            let mut scratch = std::vec![0xa5u8; skew + conv2d_int8_scratch_bytes(&g)];
            conv2d_dsp(&g, &p, &o.view(), &x, &mut got, &mut scratch[skew..]);
            assert_eq!(got, want, "case {case}: {g:?} {p:?}");
        }
    }

    /// The tiles on rectangular kernels and strides and explicit pads below
    /// the kernel (DS-CNN's 10x4 stride-2 first conv among them).
    #[test]
    fn conv2d_dsp_takes_rectangular_geometries_with_the_plain_bytes() {
        let mut rng = Rng(43);
        let mut ran = 0;
        for case in 0..300 {
            let Some((g, filters)) = rectangular_geometry(&mut rng, case) else { continue };
            if !g.is_tileable() {
                continue;
            }
            let p = params(&mut rng);
            let x = rng.i8s(g.input_len(), -128, 127);
            let o = Owned::random(&mut rng, g.weights_len(), filters);
            let (mut want, mut got) = (std::vec![0i8; g.output_len()], std::vec![1i8; g.output_len()]);
            conv2d(&g, &p, &o.view(), &x, &mut want);
            let skew = case % 4;
            let mut scratch = std::vec![0xa5u8; skew + conv2d_int8_scratch_bytes(&g)];
            conv2d_dsp(&g, &p, &o.view(), &x, &mut got, &mut scratch[skew..]);
            assert_eq!(got, want, "case {case}: {g:?} {p:?}");
            ran += 1;
        }
        assert!(ran > 150, "{ran}");
    }

    #[test]
    fn dense_dsp_gives_the_plain_bytes() {
        let mut rng = Rng(12);
        for case in 0..300 {
            let n = if case % 7 == 0 { rng.int(500, 1400) } else { rng.int(1, 70) } as usize;
            let units = if case % 11 == 0 { rng.int(120, 270) } else { rng.int(1, 13) } as usize;
            let p = params(&mut rng);
            let x = rng.i8s(n, -128, 127);
            let o = Owned::random(&mut rng, n * units, units);
            let (mut want, mut got) = (std::vec![0i8; units], std::vec![1i8; units]);
            dense(&p, &o.view(), &x, &mut want);
            dense_dsp(&p, &o.view(), &x, &mut got);
            assert_eq!(got, want, "case {case}: n {n} units {units} {p:?}");
        }
    }

    #[test]
    fn batch_norm_dsp_gives_the_plain_bytes() {
        let mut rng = Rng(13);
        for case in 0..100 {
            let c = rng.int(1, 40) as usize;
            let n = c * rng.int(1, 30) as usize;
            let p = Int8Params::new(rng.int(-128, 127), rng.int(-128, 127), Activation::None);
            let o = Owned::random(&mut rng, c, c);
            let x = rng.i8s(n, -128, 127);
            let (mut want, mut got) = (x.clone(), x);
            batch_norm_in_place(&p, &o.view(), &mut want);
            batch_norm_in_place_dsp(&p, &o.view(), &mut got);
            assert_eq!(got, want, "case {case}");
        }
    }

    #[test]
    fn max_pool_dsp_gives_the_plain_bytes() {
        let mut rng = Rng(14);
        assert_eq!(max8(0x80_7f_01_ff, 0x7f_80_00_fe), 0x7f_7f_01_ff);
        for case in 0..200 {
            let c = rng.int(1, 12) as usize;
            let (h, wd) = (rng.int(1, 9) as usize, rng.int(1, 9) as usize);
            let (pool, stride) = (rng.int(1, 3) as usize, rng.int(1, 3) as usize);
            let Some(g) = PoolGeom::new((h, wd, c), pool, stride) else { continue };
            let x = rng.i8s(g.input_len(), -128, 127);
            let (mut want, mut got) = (std::vec![0i8; g.output_len()], std::vec![1i8; g.output_len()]);
            max_pool(&g, &x, &mut want);
            max_pool_dsp(&g, &x, &mut got);
            assert_eq!(got, want, "case {case}: {g:?}");
        }
    }
}
