//! Conv2D over tiles of [`PX`] output pixels (CMSIS-NN's im2col + 2-column
//! kernel, six columns wide): the patches of six output pixels are widened to
//! 16-bit pairs once per pass (the "im2col", zero point removed, padding taps
//! widened to exactly 0), then every output channel streams its weights once
//! over all six: one weight word (four taps) is loaded and split by two
//! `SXTB16`s, and each half meets the six pixels' widened words in twelve
//! `SMLAD`s. Per four taps of one channel: 1 load, 2 extends, 6 `LDRD`s and
//! 12 `SMLAD`s for 24 multiply-accumulates, plus the loop's 2 (0.96
//! instructions per MAC, against 1.44 for [`super::dot4`]'s channel block).
//!
//! The products and their wrapping sum are exactly the plain kernel's (every
//! in-image tap once, padding taps times 0), so the bytes are the plain
//! kernel's; the unit tests and the device tests hold both.
//!
//! Layout of the widened patches ([`Cols`]): for quad `q` (taps `4q..4q + 4`
//! of the pass) and tile pixel `p`, words `2 (q PX + p)` and `2 (q PX + p) + 1`
//! hold taps `(4q, 4q + 2)` and `(4q + 1, 4q + 3)`, the order in which the
//! two `SXTB16`s split a weight word; the kernel then reads the six pixels'
//! pairs of one quad as six consecutive `LDRD`s.

#[cfg(arm_dsp)]
use super::requant::rounding_byte;
use super::requant::{is_full, Channel, Output};
use super::{neg_zp_pair, sxtab16, sxtab16_ror8};
use crate::geometry::ConvGeom;
use crate::kernels::generic::int8::Int8Params;
use crate::kernels::generic::scratch;
use crate::model::Int8Weights;

/// Output pixels per tile (six accumulators: with the loop's seven other
/// registers, all thirteen the inline assembly may use).
pub(super) const PX: usize = scratch::DSP_TILE_PIXELS;
/// Filter taps widened per pass (a multiple of 8: the loop takes two quads
/// a turn): one pass for every alexnet-micro layer (at most 3 x 3 x 96 = 864
/// taps), three for the full AlexNet's 5 x 5 x 96 conv2.
const KCHUNK: usize = scratch::DSP_TILE_TAPS;
/// Output channels whose accumulators stay in the scratch between passes.
const GROUP: usize = scratch::DSP_TILE_GROUP;

/// One pass's widened patches of a tile (see the module docs): up to
/// `KCHUNK / 4` quads of `PX` pixels, two words each, in the layer's
/// scratch ([`scratch::conv2d_int8_scratch_bytes`]: 10.5 KiB at most, planned
/// into the arena instead of the stack); behind them the window staging and
/// the multi-pass accumulators, where the geometry takes them.
pub(super) struct Cols<'s>(&'s mut [u32], &'s mut [u32], &'s mut [[i32; PX]]);

impl<'s> Cols<'s> {
    /// The patches buffer for `g` in `scratch`, which must hold
    /// [`scratch::conv2d_int8_scratch_bytes`]`(g)` bytes, and behind it the
    /// window staging of [`scratch::dsp_conv_staging_words`] and the
    /// accumulators of [`scratch::dsp_conv_acc_words`].
    pub(super) fn new(g: &ConvGeom, scratch: &'s mut [u8]) -> Self {
        let (need, stage, acc) =
            (scratch::dsp_conv_words(g), scratch::dsp_conv_staging_words(g), scratch::dsp_conv_acc_words(g));
        let words = scratch::words(scratch);
        let total = need + stage + acc;
        assert!(words.len() >= total, "dsp conv: scratch of {} words, {total} needed", words.len());
        let (cols, rest) = words.split_at_mut(need);
        let (stage, rest) = rest.split_at_mut(stage);
        let acc: &mut [i32] = bytemuck::cast_slice_mut(&mut rest[..acc]);
        Cols(cols, stage, bytemuck::cast_slice_mut(acc))
    }
}

/// Writes one pixel's tap stream into [`Cols`], four taps (a quad) at a time.
///
/// Raw pointers: [`widen_pixel`] checks once that every quad it writes lies
/// inside the buffer (the compiler's per-store checks and spills tripled the
/// widening's cost).
struct Sink {
    /// Where the next quad of this pixel goes.
    at: *mut u32,
    carry: [i8; 4],
    held: usize,
    zp: i8,
    zp2: u32,
}

impl Sink {
    /// # Safety
    /// `at` must have two writable words.
    #[inline(always)]
    unsafe fn emit(&mut self, xv: u32) {
        // SAFETY: the caller's contract.
        unsafe {
            self.at.write(sxtab16(self.zp2, xv));
            self.at.add(1).write(sxtab16_ror8(self.zp2, xv));
            self.at = self.at.add(2 * PX);
        }
    }

    /// # Safety
    /// As [`Sink::emit`].
    #[inline(always)]
    unsafe fn emit_zero(&mut self) {
        // SAFETY: the caller's contract.
        unsafe {
            self.at.write(0);
            self.at.add(1).write(0);
            self.at = self.at.add(2 * PX);
        }
    }

    /// # Safety
    /// As [`Sink::emit`].
    #[inline(always)]
    unsafe fn emit_carry(&mut self) {
        let c = self.carry;
        // SAFETY: the caller's contract.
        unsafe { self.emit(u32::from_le_bytes(c.map(|b| b as u8))) };
        self.held = 0;
    }

    /// Append input bytes.
    ///
    /// # Safety
    /// The quads completed must fit the buffer.
    #[inline(always)]
    unsafe fn bytes(&mut self, mut b: &[i8]) {
        if self.held > 0 {
            while self.held < 4 {
                let Some((&x, rest)) = b.split_first() else { return };
                self.carry[self.held] = x;
                self.held += 1;
                b = rest;
            }
            // SAFETY: the caller's contract.
            unsafe { self.emit_carry() };
        }
        let quads = b.len() / 4;
        let src = b.as_ptr().cast::<u32>();
        for q in 0..quads {
            // SAFETY: 4 * quads <= b.len() bytes are readable (unaligned
            // reads); the writes are the caller's contract.
            unsafe { self.emit(src.add(q).read_unaligned()) };
        }
        for &x in &b[4 * quads..] {
            self.carry[self.held] = x;
            self.held += 1;
        }
    }

    /// Append `n` padding taps (the zero point, widened to 0).
    ///
    /// # Safety
    /// As [`Sink::bytes`].
    #[inline(always)]
    unsafe fn pad(&mut self, mut n: usize) {
        if self.held > 0 {
            while self.held < 4 && n > 0 {
                self.carry[self.held] = self.zp;
                self.held += 1;
                n -= 1;
            }
            if self.held < 4 {
                return;
            }
            // SAFETY: the caller's contract.
            unsafe { self.emit_carry() };
        }
        for _ in 0..n / 4 {
            // SAFETY: the caller's contract.
            unsafe { self.emit_zero() };
        }
        self.held = n % 4;
        self.carry = [self.zp; 4];
    }
}

/// Zero `n` quads of one tile pixel from `at` (padding past the pass's taps,
/// widened to exactly 0).
///
/// Returns the next quad's place.
///
/// # Safety
/// `n` quads from `at` writable.
#[inline(always)]
unsafe fn zero_quads(at: *mut u32, n: usize) -> *mut u32 {
    let mut at = at;
    for _ in 0..n {
        // SAFETY: the caller's contract.
        unsafe {
            at.write(0);
            at.add(1).write(0);
            at = at.add(2 * PX);
        }
    }
    at
}

/// [`ConvGeom::taps_h`] for an undilated axis whose padding is less than the
/// kernel (every tileable geometry, [`ConvGeom::is_tileable`]): `(first tap,
/// one past the last, input index of the first)` of the window at padded
/// coordinate `at`, without the general version's divisions.
#[inline(always)]
fn undilated_taps(at: usize, pad: usize, n: usize, k: usize) -> (usize, usize, usize) {
    let k0 = pad.saturating_sub(at);
    let k1 = k.min((n + pad).saturating_sub(at)).max(k0);
    (k0, k1, (at + k0).saturating_sub(pad))
}

/// The in-image part of a window for [`widen_window`]: `rows` runs of `run`
/// words, `src_skip` bytes apart in the input (end to start) and
/// `quad_skip` quads apart in the pixel's taps.
struct Window {
    rows: usize,
    run: usize,
    src_skip: usize,
    quad_skip: usize,
}

/// Widen a window's in-image rows into one tile pixel's quads from `at`
/// (two words a quad, `2 PX` words apart, the zero point removed): one loop
/// over the rows and their words, 5 instructions a quad and 4 a row (a call
/// a row cost ~15 more).
///
/// # Safety
/// `w.rows >= 1` runs of `4 w.run >= 4` bytes readable from `src`, `w.src_skip`
/// bytes between them; `w.rows (w.run + w.quad_skip)` quads from `at` writable.
#[cfg(arm_dsp)]
#[inline(always)]
unsafe fn widen_window(src: *const i8, w: &Window, zp2: u32, at: *mut u32) {
    let (src_skip, at_skip) = (w.src_skip, 8 * PX * w.quad_skip);
    // SAFETY (both blocks): the caller's contract; `subs` sets the flags.
    if w.run.is_multiple_of(2) {
        unsafe {
            core::arch::asm!(
                "1:",
                "mov {k}, {half}",
                "2:",
                "ldr {t}, [{src}], #4",
                "ldr {v}, [{src}], #4",
                "sxtab16 {u}, {zp2}, {t}",
                "sxtab16 {t}, {zp2}, {t}, ror #8",
                "strd {u}, {t}, [{at}], #{step}",
                "sxtab16 {u}, {zp2}, {v}",
                "sxtab16 {v}, {zp2}, {v}, ror #8",
                "strd {u}, {v}, [{at}], #{step}",
                "subs {k}, {k}, #1",
                "bne 2b",
                "add {src}, {src}, {src_skip}",
                "add {at}, {at}, {at_skip}",
                "subs {rows}, {rows}, #1",
                "bne 1b",
                src = inout(reg) src => _,
                at = inout(reg) at => _,
                rows = inout(reg) w.rows => _,
                half = in(reg) w.run / 2,
                src_skip = in(reg) src_skip,
                at_skip = in(reg) at_skip,
                zp2 = in(reg) zp2,
                k = out(reg) _,
                t = out(reg) _,
                u = out(reg) _,
                v = out(reg) _,
                step = const 8 * PX,
                options(nostack),
            );
        }
    } else {
        unsafe {
            core::arch::asm!(
                "1:",
                "mov {k}, {run}",
                "2:",
                "ldr {t}, [{src}], #4",
                "sxtab16 {u}, {zp2}, {t}",
                "sxtab16 {t}, {zp2}, {t}, ror #8",
                "strd {u}, {t}, [{at}], #{step}",
                "subs {k}, {k}, #1",
                "bne 2b",
                "add {src}, {src}, {src_skip}",
                "add {at}, {at}, {at_skip}",
                "subs {rows}, {rows}, #1",
                "bne 1b",
                src = inout(reg) src => _,
                at = inout(reg) at => _,
                rows = inout(reg) w.rows => _,
                run = in(reg) w.run,
                src_skip = in(reg) src_skip,
                at_skip = in(reg) at_skip,
                zp2 = in(reg) zp2,
                k = out(reg) _,
                t = out(reg) _,
                u = out(reg) _,
                step = const 8 * PX,
                options(nostack),
            );
        }
    }
}

/// [`widen_window`] in plain Rust (the host's tests).
///
/// # Safety
/// As the Arm version.
#[cfg(not(arm_dsp))]
unsafe fn widen_window(src: *const i8, w: &Window, zp2: u32, at: *mut u32) {
    let (mut src, mut at) = (src, at);
    for _ in 0..w.rows {
        for _ in 0..w.run {
            // SAFETY: the caller's contract.
            unsafe {
                let xv = src.cast::<u32>().read_unaligned();
                at.write(sxtab16(zp2, xv));
                at.add(1).write(sxtab16_ror8(zp2, xv));
                at = at.add(2 * PX);
                src = src.add(4);
            }
        }
        // SAFETY: the caller's contract.
        unsafe {
            at = at.add(2 * PX * w.quad_skip);
            src = src.add(w.src_skip);
        }
    }
}

/// Widen taps `start..start + len` of output pixel `pix`'s patch (filter
/// order: kernel row, column, input channel; padding taps as the zero
/// point) into `cols` as tile pixel `p`, zero-padded to `quads` quads.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn widen_pixel(
    g: &ConvGeom,
    input: &[i8],
    zp: i32,
    pix: usize,
    start: usize,
    len: usize,
    quads: usize,
    p: usize,
    cols: &mut Cols<'_>,
) {
    // Every quad written (len.div_ceil(4) <= quads) lies inside `cols`.
    assert!(len.div_ceil(4) <= quads && 2 * (quads * PX) <= cols.0.len() && p < PX, "dsp conv tiles: widening");
    let (oy, ox) = (pix / g.out_w, pix % g.out_w);
    if g.kernel_h == 1 && g.kernel_w == 1 && len.is_multiple_of(4) {
        // A 1 x 1 kernel (no padding: is_tileable keeps pads below the
        // kernel): the taps are channels start..start + len of one input
        // pixel, whole quads.
        let at = (oy * g.stride_h * g.in_w + ox * g.stride_w) * g.in_c + start;
        let src = &input[at..at + len];
        let zp2 = neg_zp_pair(zp);
        let base = cols.0.as_mut_ptr().wrapping_add(2 * p);
        let q = len / 4;
        for i in 0..quads {
            let (e, o) = if i < q {
                // SAFETY: 4 i + 4 <= len bytes of `src` (unaligned read).
                let xv = unsafe { src.as_ptr().add(4 * i).cast::<u32>().read_unaligned() };
                (sxtab16(zp2, xv), sxtab16_ror8(zp2, xv))
            } else {
                (0, 0)
            };
            // SAFETY: quad i < quads of tile pixel p < PX: words
            // 2 (i PX + p) and the next, inside `cols` (asserted above).
            unsafe {
                base.add(2 * i * PX).write(e);
                base.add(2 * i * PX + 1).write(o);
            }
        }
        return;
    }
    let (ky0, ky1, iy0) = undilated_taps(oy * g.stride_h, g.pad_top, g.in_h, g.kernel_h);
    let (kx0, kx1, ix0) = undilated_taps(ox * g.stride_w, g.pad_left, g.in_w, g.kernel_w);
    let row_len = g.kernel_w * g.in_c;
    let inside = (ky0, ky1, kx0, kx1) == (0, g.kernel_h, 0, g.kernel_w);
    if start == 0 && len == g.kernel_h * row_len && inside && 4 * cols.1.len() >= len.next_multiple_of(4) {
        // A window inside the image whose short kernel rows are not whole
        // quads (3 x 3 x 3 first convs: rows of 9 bytes; the staging exists
        // only for those), the whole filter in this pass: its rows gathered
        // into the staging words, then widened as whole quads (the general
        // walk assembles the straddling quads byte by byte).
        let stage: &mut [u8] = bytemuck::cast_slice_mut(&mut *cols.1);
        let (words, rest) = (row_len / 4, row_len % 4);
        for ky in 0..g.kernel_h {
            let src = &input[((iy0 + ky) * g.in_w + ix0) * g.in_c..][..row_len];
            let dst = &mut stage[ky * row_len..][..row_len];
            // Whole words (unaligned loads and stores), then the last bytes:
            // ~8 instructions a 9-byte row instead of ~30 byte by byte.
            for i in 0..words {
                // SAFETY: bytes 4 i .. 4 i + 4 <= row_len of both rows.
                unsafe {
                    let v = src.as_ptr().add(4 * i).cast::<u32>().read_unaligned();
                    dst.as_mut_ptr().add(4 * i).cast::<u32>().write_unaligned(v);
                }
            }
            for (d, &x) in dst[4 * words..].iter_mut().zip(&src[4 * words..][..rest]) {
                *d = x as u8;
            }
        }
        // The last quad's spare taps: the zero point, widened to exactly 0.
        for d in &mut stage[len..len.next_multiple_of(4)] {
            *d = zp as u8;
        }
        let (at, q) = (cols.0.as_mut_ptr().wrapping_add(2 * p), len.div_ceil(4));
        let staged = Window { rows: 1, run: q, src_skip: 0, quad_skip: 0 };
        // SAFETY: q words of the staging are read; as many quads of tile
        // pixel p < PX written, then zeros up to `quads`, inside `cols`
        // (asserted above).
        unsafe {
            widen_window(cols.1.as_ptr().cast::<i8>(), &staged, neg_zp_pair(zp), at);
            zero_quads(at.wrapping_add(2 * PX * q), quads - q);
        }
        return;
    }
    if start == 0 && len == g.kernel_h * row_len && g.in_c.is_multiple_of(4) {
        // Whole quads of channels (ResNet-8's 3x3 convs of 16-64 channels),
        // the whole filter in this pass: the window's in-image rows straight
        // from the input in one call, the padding as zero quads (the general
        // walk below cost ~250 instructions a window beyond its quads).
        let q = g.in_c / 4;
        let (rows, run) = (ky1 - ky0, (kx1 - kx0) * q);
        let base = cols.0.as_mut_ptr().wrapping_add(2 * p);
        // SAFETY (both): `quads` quads of tile pixel p < PX are inside `cols`
        // (asserted above), len / 4 <= quads of them the window's.
        if rows == g.kernel_h && run == g.kernel_w * q {
            unsafe { zero_quads(base.wrapping_add(2 * PX * (len / 4)), quads - len / 4) };
        } else {
            unsafe { zero_quads(base, quads) };
        }
        if rows > 0 && run > 0 {
            let step = g.in_w * g.in_c;
            let first = (iy0 * g.in_w + ix0) * g.in_c;
            assert!(first + (rows - 1) * step + 4 * run <= input.len(), "dsp conv tiles: window");
            let window = Window { rows, run, src_skip: step - 4 * run, quad_skip: g.kernel_w * q - run };
            // SAFETY: the rows' runs lie inside `input` (asserted); the
            // quads written are the window's in-image taps' places, inside
            // the pixel's len / 4 (the skips step over the padding's).
            unsafe {
                widen_window(
                    input.as_ptr().add(first),
                    &window,
                    neg_zp_pair(zp),
                    base.wrapping_add(2 * PX * ((ky0 * g.kernel_w + kx0) * q)),
                )
            };
        }
        return;
    }
    let (a, b) = (kx0 * g.in_c, kx1 * g.in_c);
    let base = cols.0.as_mut_ptr().wrapping_add(2 * p);
    let mut sink = Sink { at: base, carry: [zp as i8; 4], held: 0, zp: zp as i8, zp2: neg_zp_pair(zp) };
    let end = start + len;
    let mut ky = start / row_len;
    // SAFETY (every sink call): the stream has `len` taps, so at most
    // `len.div_ceil(4) <= quads` quads are written (asserted above).
    while ky * row_len < end {
        let r0 = ky * row_len;
        let (lo, hi) = (start.max(r0) - r0, end.min(r0 + row_len) - r0);
        if ky < ky0 || ky >= ky1 {
            unsafe { sink.pad(hi - lo) };
        } else {
            let at = ((iy0 + ky - ky0) * g.in_w + ix0) * g.in_c;
            // [0, a) padding, [a, b) the image, [b, row_len) padding; clipped to [lo, hi).
            if lo < a {
                unsafe { sink.pad(a.min(hi) - lo) };
            }
            let (s, e) = (lo.max(a), hi.min(b));
            if s < e {
                unsafe { sink.bytes(&input[at + s - a..at + e - a]) };
            }
            if hi > b {
                unsafe { sink.pad(hi - lo.max(b)) };
            }
        }
        ky += 1;
    }
    // Close the last partial quad, then zero quads up to `quads`.
    if sink.held > 0 {
        for i in sink.held..4 {
            sink.carry[i] = sink.zp;
        }
        unsafe { sink.emit_carry() };
    }
    let stop = base.wrapping_add(2 * PX * quads);
    while sink.at < stop {
        unsafe { sink.emit_zero() };
    }
}

/// One quad of [`dot_px`]'s loop: a weight word split by the two `SXTB16`s,
/// then the six pixels' pairs (one `LDRD` each) into their accumulators.
#[cfg(arm_dsp)]
macro_rules! quad {
    () => {
        concat!(
            "ldr {t}, [{pw}], #4\n",
            "sxtb16 {u}, {t}\n",
            "sxtb16 {t}, {t}, ror #8\n",
            "ldrd {xe}, {xo}, [{xp}], #8\n",
            "smlad {a0}, {u}, {xe}, {a0}\n",
            "smlad {a0}, {t}, {xo}, {a0}\n",
            "ldrd {xe}, {xo}, [{xp}], #8\n",
            "smlad {a1}, {u}, {xe}, {a1}\n",
            "smlad {a1}, {t}, {xo}, {a1}\n",
            "ldrd {xe}, {xo}, [{xp}], #8\n",
            "smlad {a2}, {u}, {xe}, {a2}\n",
            "smlad {a2}, {t}, {xo}, {a2}\n",
            "ldrd {xe}, {xo}, [{xp}], #8\n",
            "smlad {a3}, {u}, {xe}, {a3}\n",
            "smlad {a3}, {t}, {xo}, {a3}\n",
            "ldrd {xe}, {xo}, [{xp}], #8\n",
            "smlad {a4}, {u}, {xe}, {a4}\n",
            "smlad {a4}, {t}, {xo}, {a4}\n",
            "ldrd {xe}, {xo}, [{xp}], #8\n",
            "smlad {a5}, {u}, {xe}, {a5}\n",
            "smlad {a5}, {t}, {xo}, {a5}\n",
        )
    };
}

/// Four [`quad!`]s: one turn of [`dot_px`]'s loop, [`BLOCK_BYTES`] of code.
#[cfg(arm_dsp)]
macro_rules! block {
    () => {
        concat!(quad!(), quad!(), quad!(), quad!())
    };
}

/// `acc[p] += sum over quads` of weight word `q` (split by the two
/// `SXTB16`s) times pixel `p`'s widened words of quad `q`, for `2 * pairs`
/// quads: four quads a turn (90 instructions for 96 multiply-accumulates,
/// 13 registers), then two if `pairs` is odd.
///
/// # Safety
/// `x` must be word-aligned with `2 * pairs * 2 * PX` readable words; `w`
/// must have `8 * pairs` readable bytes.
#[cfg(arm_dsp)]
#[inline(always)]
unsafe fn dot_px(x: *const u32, pairs: usize, w: *const i8, acc: &mut [i32; PX]) {
    let [mut a0, mut a1, mut a2, mut a3, mut a4, mut a5] = *acc;
    let (mut xp, mut pw) = (x, w);
    // SAFETY (both blocks): reads only, in bounds by the caller's contract
    // (unaligned LDR is allowed on ARMv7-M/ARMv8-M for normal memory); no
    // stack; `subs` sets the flags.
    if pairs >= 2 {
        unsafe {
            core::arch::asm!(
                "2:",
                quad!(),
                quad!(),
                quad!(),
                quad!(),
                "subs {n}, {n}, #1",
                "bne 2b",
                xp = inout(reg) xp,
                pw = inout(reg) pw,
                n = inout(reg) pairs / 2 => _,
                a0 = inout(reg) a0,
                a1 = inout(reg) a1,
                a2 = inout(reg) a2,
                a3 = inout(reg) a3,
                a4 = inout(reg) a4,
                a5 = inout(reg) a5,
                xe = out(reg) _,
                xo = out(reg) _,
                t = out(reg) _,
                u = out(reg) _,
                options(nostack, readonly),
            );
        }
    }
    if pairs % 2 == 1 {
        unsafe {
            core::arch::asm!(
                quad!(),
                quad!(),
                xp = inout(reg) xp => _,
                pw = inout(reg) pw => _,
                a0 = inout(reg) a0,
                a1 = inout(reg) a1,
                a2 = inout(reg) a2,
                a3 = inout(reg) a3,
                a4 = inout(reg) a4,
                a5 = inout(reg) a5,
                xe = out(reg) _,
                xo = out(reg) _,
                t = out(reg) _,
                u = out(reg) _,
                options(nostack, readonly, preserves_flags),
            );
        }
    }
    *acc = [a0, a1, a2, a3, a4, a5];
}

/// [`dot_px`] in plain Rust with the instructions' semantics (the host's tests).
///
/// # Safety
/// As the Arm version.
#[cfg(not(arm_dsp))]
unsafe fn dot_px(x: *const u32, pairs: usize, w: *const i8, acc: &mut [i32; PX]) {
    use super::{smlad, sxtb16, sxtb16_ror8};
    for q in 0..2 * pairs {
        // SAFETY: in bounds by the caller's contract.
        let wv = unsafe { w.add(4 * q).cast::<u32>().read_unaligned() };
        let (u, t) = (sxtb16(wv), sxtb16_ror8(wv));
        for (p, a) in acc.iter_mut().enumerate() {
            // SAFETY: as above.
            let (xe, xo) = unsafe { (x.add(2 * (q * PX + p)).read(), x.add(2 * (q * PX + p) + 1).read()) };
            *a = smlad(t, xo, smlad(u, xe, *a));
        }
    }
}

/// The widened value of tap `i` of tile pixel `p` (`x - zp`).
#[inline(always)]
fn tap(cols: &Cols<'_>, i: usize, p: usize) -> i32 {
    let word = cols.0[2 * ((i / 4) * PX + p) + (i % 4) % 2];
    (word >> (16 * ((i % 4) / 2))) as u16 as i16 as i32
}

/// A whole tile's channels in one pass (the layer's taps all widened, its
/// output stages all [`Output`]'s): for channel `c` of the slices, the bias,
/// [`dot_px`] over the row at `w + c * filter`, and the six pixels' bytes at
/// `out + c + px * out_c`. Never inlined: in a frame of its own the loop
/// keeps its pointers in registers (inside [`conv2d_tiles`] each channel
/// reloaded and rechecked ~80 instructions of spilled values).
///
/// `params` is `[bias, multiplier, shift]`, of one length; `clamp` is
/// `(full, lo, hi)`.
///
/// # Safety
/// `x` as [`dot_px`]'s for `pairs`; each channel's row must have `8 *
/// pairs` readable bytes; the bytes `out + c + px * out_c` must be
/// writable; every `(multiplier, shift)` must satisfy [`Output::accepts`].
#[allow(clippy::too_many_arguments)]
#[inline(never)]
unsafe fn one_pass_channels(
    x: *const u32,
    pairs: usize,
    w: *const i8,
    filter: usize,
    params: [&[i32]; 3],
    out_zp: i32,
    clamp: (bool, i32, i32),
    out: *mut i8,
    out_c: usize,
) {
    let [bias, multiplier, shift] = params;
    let (full, lo, hi) = clamp;
    for (c, ((&b, &m), &s)) in bias.iter().zip(multiplier).zip(shift).enumerate() {
        let mut a = [b; PX];
        // SAFETY: the caller's contract, channel by channel.
        unsafe {
            dot_px(x, pairs, w.add(c * filter), &mut a);
            core::hint::assert_unchecked((-21..=0).contains(&s));
            let o = Output::new_accepted(m, s, out_zp);
            let y = out.add(c);
            if full && o.rounds() {
                o.store6_full(a, y, out_c);
            } else {
                for (px, &v) in a.iter().enumerate() {
                    y.add(px * out_c).write(if full { o.apply_full(v) } else { o.apply(v, lo, hi) });
                }
            }
        }
    }
}

/// The state of [`rounding_channels`]' loop, which its assembly reads and
/// advances through one pointer (all thirteen free registers hold the dot
/// product's values, so the per-channel values live here, not in registers).
#[cfg(arm_dsp)]
#[repr(C)]
struct ChannelRun {
    /// The widened patches.
    x: *const u32,
    /// Passes through the unrolled dot product's [`UNROLLED`] blocks of four
    /// quads (`(pairs / 2).div_ceil(UNROLLED)`).
    passes: usize,
    /// The unrolled block where a channel's first pass enters (the table
    /// branch's index), so that it runs the blocks left over by the whole
    /// passes: [`ChannelRun::entry`].
    entry: usize,
    /// The next channel's weight row.
    w: *const i8,
    /// Bytes from the end of one row's `8 pairs` to the next row.
    skip: usize,
    /// The next channel's bias, multiplier and shift.
    bias: *const i32,
    multiplier: *const i32,
    shift: *const i32,
    /// The next channel's first output byte, and the bytes between pixels.
    y: *mut i8,
    step: usize,
    /// `2 out_zp + 1`, shifted by each channel's exponent into its offset.
    zp21: i32,
    /// Channels left.
    left: usize,
}

/// Blocks of four quads that [`rounding_channels`] unrolls: ResNet-8's 3 x 3
/// x 16 filters (144 taps, 9 blocks) in one pass, its 3 x 3 x 32 and 3 x 3 x
/// 64 in two and four; ~3 KB of code.
#[cfg(arm_dsp)]
const UNROLLED: usize = 9;
// The table branch in `rounding_channels` lists nine blocks.
#[cfg(arm_dsp)]
const _: () = assert!(UNROLLED == 9);

/// Code bytes of one [`block!`]: 4 quads of 21 instructions, every one of
/// them a 32-bit encoding (post-indexed loads, `SXTB16`, `LDRD`, `SMLAD`;
/// the assembly checks the total).
#[cfg(arm_dsp)]
const BLOCK_BYTES: usize = 4 * 21 * 4;

#[cfg(arm_dsp)]
impl ChannelRun {
    /// [`ChannelRun::entry`] for `turns >= 1` blocks a channel.
    fn entry(turns: usize) -> usize {
        let first = match turns % UNROLLED {
            0 => UNROLLED,
            r => r,
        };
        UNROLLED - first
    }
}

/// One output byte of [`rounding_channels`]: [`rounding_byte!`] with the
/// loop's registers (xe: multiplier, xo: offset, u: exponent). The sign
/// correction takes the accumulator's sign instead of the product's: they
/// differ only when the product rounds to 0, where both give the zero point
/// (for `e >= 1`; the unit test `output_rounding_by_the_accumulators_sign`
/// holds the identity).
#[cfg(arm_dsp)]
macro_rules! out_byte {
    ($a:literal, $store:literal) => {
        rounding_byte!($a, "{t}", "{xe}", "{xo}", "{u}", $store)
    };
}

/// A whole tile's channels in one pass, all in assembly, for layers whose
/// every stage [`Output::rounds`] and whose clamp is the whole int8 range
/// (every ReLU and linear layer of the MLPerf Tiny models): per channel the
/// bias into six accumulators, [`dot_px`]'s loop, and six bytes through
/// [`out_byte`], with ~30 instructions of bookkeeping around them (in Rust
/// the stage's constants and the spilled pointers cost ~55). `TURNS`: the
/// dot product has four-quad turns (`pairs >= 2`); `TAIL`: two more quads
/// (`pairs` odd).
///
/// # Safety
/// As [`one_pass_channels`], with `run.left >= 1`, every channel's shift in
/// `-21..=-1` and multiplier at least `2^30`.
#[cfg(arm_dsp)]
#[inline(never)]
unsafe fn rounding_channels<const TURNS: bool, const TAIL: bool>(run: &mut ChannelRun) {
    use core::mem::offset_of;
    macro_rules! channel_loop {
        ($($body:tt)*) => {
            // SAFETY: the caller's contract: reads of the patches, weights and
            // stage arrays, byte writes of the outputs, all in bounds; the
            // state through `run`; one word pushed and popped.
            unsafe {
                core::arch::asm!(
                    "@ {unrolled_bytes} bytes of unrolled blocks",
                    "push {{{pw}}}",
                    "3:",
                    // The channel's bias into the six accumulators.
                    "ldr {t}, [{pw}, #{bias}]",
                    "ldr {a0}, [{t}], #4",
                    "str {t}, [{pw}, #{bias}]",
                    "mov {a1}, {a0}",
                    "mov {a2}, {a0}",
                    "mov {a3}, {a0}",
                    "mov {a4}, {a0}",
                    "mov {a5}, {a0}",
                    "ldr {xp}, [{pw}, #{x}]",
                    "ldr {n}, [{pw}, #{passes}]",
                    "ldr {u}, [{pw}, #{entry}]",
                    "ldr {pw}, [{pw}, #{w}]",
                    $($body)*,
                    // Back to the state: the next row, then this channel's stage
                    // (xe: multiplier, u: exponent, xo: offset; xp: output, n: step).
                    "ldr {t}, [sp]",
                    "ldr {u}, [{t}, #{skip}]",
                    "add {pw}, {pw}, {u}",
                    "str {pw}, [{t}, #{w}]",
                    "mov {pw}, {t}",
                    "ldr {t}, [{pw}, #{multiplier}]",
                    "ldr {xe}, [{t}], #4",
                    "str {t}, [{pw}, #{multiplier}]",
                    "ldr {t}, [{pw}, #{shift}]",
                    "ldr {u}, [{t}], #4",
                    "str {t}, [{pw}, #{shift}]",
                    "rsb {u}, {u}, #0",
                    "ldr {xo}, [{pw}, #{zp21}]",
                    "lsl {xo}, {xo}, {u}",
                    "asr {xo}, {xo}, #1",
                    "ldr {xp}, [{pw}, #{y}]",
                    "ldr {n}, [{pw}, #{step}]",
                    "add {t}, {xp}, #1",
                    "str {t}, [{pw}, #{y}]",
                    out_byte!("{a0}", "strb {t}, [{xp}]"),
                    out_byte!("{a1}", "strb {t}, [{xp}, {n}]"),
                    "add {xp}, {xp}, {n}, lsl #1",
                    out_byte!("{a2}", "strb {t}, [{xp}]"),
                    out_byte!("{a3}", "strb {t}, [{xp}, {n}]"),
                    "add {xp}, {xp}, {n}, lsl #1",
                    out_byte!("{a4}", "strb {t}, [{xp}]"),
                    out_byte!("{a5}", "strb {t}, [{xp}, {n}]"),
                    "ldr {t}, [{pw}, #{left}]",
                    "subs {t}, {t}, #1",
                    "str {t}, [{pw}, #{left}]",
                    "bne 3b",
                    "add sp, sp, #4",
                    pw = inout(reg) run as *mut ChannelRun => _,
                    xp = out(reg) _,
                    n = out(reg) _,
                    a0 = out(reg) _,
                    a1 = out(reg) _,
                    a2 = out(reg) _,
                    a3 = out(reg) _,
                    a4 = out(reg) _,
                    a5 = out(reg) _,
                    xe = out(reg) _,
                    xo = out(reg) _,
                    t = out(reg) _,
                    u = out(reg) _,
                    x = const offset_of!(ChannelRun, x),
                    passes = const offset_of!(ChannelRun, passes),
                    entry = const offset_of!(ChannelRun, entry),
                    w = const offset_of!(ChannelRun, w),
                    skip = const offset_of!(ChannelRun, skip),
                    bias = const offset_of!(ChannelRun, bias),
                    multiplier = const offset_of!(ChannelRun, multiplier),
                    shift = const offset_of!(ChannelRun, shift),
                    y = const offset_of!(ChannelRun, y),
                    step = const offset_of!(ChannelRun, step),
                    zp21 = const offset_of!(ChannelRun, zp21),
                    left = const offset_of!(ChannelRun, left),
                    unrolled_bytes = const UNROLLED * BLOCK_BYTES,
                );
            }
        };
    }
    // UNROLLED blocks of four quads, entered at `entry` (a computed `BX`:
    // the first pass runs the blocks left over, every later pass all of
    // them), then the loop back to the first block: 2 instructions of loop a
    // pass instead of 2 a block.
    macro_rules! unrolled {
        ($($tail:tt)*) => {
            channel_loop!(
                // A table branch into the blocks (TBH reads its table at
                // its own address + 4, whatever the function's alignment: an
                // `ADR` is assembled for a 4-aligned section and was 2 bytes
                // off in a function at 2 mod 4).
                "tbh [pc, {u}, lsl #1]",
                // (Its own label: "3" is the channel loop's.)
                "39:",
                ".hword (40f - 39b) / 2, (41f - 39b) / 2, (42f - 39b) / 2, (43f - 39b) / 2, (44f - 39b) / 2",
                ".hword (45f - 39b) / 2, (46f - 39b) / 2, (47f - 39b) / 2, (48f - 39b) / 2",
                "4:",
                "40:", block!(), "41:", block!(), "42:", block!(), "43:", block!(), "44:", block!(),
                "45:", block!(), "46:", block!(), "47:", block!(), "48:", block!(),
                "5:",
                "subs {n}, {n}, #1",
                "bne 4b",
                ".if 5b - 4b != {unrolled_bytes}",
                ".error \"the unrolled blocks' size\"",
                ".endif",
                $($tail)*
            )
        };
    }
    match (TURNS, TAIL) {
        (true, false) => unrolled!(""),
        (true, true) => unrolled!(quad!(), quad!()),
        (false, _) => channel_loop!(quad!(), quad!()),
    }
}

/// Output pixels `0..end` (in row-major order) of
/// [`crate::kernels::generic::int8::conv2d`], the same bytes, [`PX`] at a
/// time in `tiles` tiles; with `end >= PX` the last tile overlaps the one
/// before, else the one partial tile repeats pixel `end - 1` in its spare
/// lanes and drops their results.
#[allow(clippy::too_many_arguments)]
pub(super) fn conv2d_tiles(
    g: &ConvGeom,
    p: &Int8Params,
    w: &Int8Weights<'_>,
    input: &[i8],
    output: &mut [i8],
    end: usize,
    tiles: usize,
    cols: &mut Cols<'_>,
) {
    let filter = g.kernel_h * g.kernel_w * g.in_c;
    let weights = w.weights;
    assert!(
        end <= g.out_h * g.out_w && end <= tiles * PX && end + PX > tiles * PX && weights.len() == g.out_c * filter,
        "dsp conv tiles: bounds"
    );
    let (lo, hi) = (p.act_min.max(-128), p.act_max.min(127));
    let full = is_full(lo, hi);
    let stages_fit = w.multiplier.iter().zip(w.shift).all(|(&m, &s)| Output::accepts(m, s));
    // Every stage rounds and the clamp is the whole range: the assembly's channel loop.
    #[cfg(arm_dsp)]
    let rounding = stages_fit && full && w.shift.iter().all(|&s| s < 0);
    for t in 0..tiles {
        // The last of several tiles ends at `end`, overlapping the tile
        // before it: its first pixels are computed again and written with
        // the same bytes, and all its lanes are pixels (a partial tile's
        // spare lanes cost as much and take the general path).
        let pix0 = if end >= PX { (t * PX).min(end - PX) } else { t * PX };
        for first in (0..g.out_c).step_by(GROUP) {
            let n = GROUP.min(g.out_c - first);
            let mut start = 0;
            while start < filter {
                let len = KCHUNK.min(filter - start);
                let last = start + len == filter;
                // Whole quad pairs, the pass padded with zero taps.
                let pairs = len.div_ceil(8);
                for px in 0..PX {
                    let pix = (pix0 + px).min(end - 1);
                    widen_pixel(g, input, p.in_zp, pix, start, len, 2 * pairs, px, cols);
                }
                let xw = cols.0.as_ptr();
                let mut from = first;
                if stages_fit && start == 0 && last && end - pix0 >= PX {
                    // Channel c reads weight bytes c filter .. c filter + 8 pairs.
                    let fit = match weights.len().checked_sub(8 * pairs) {
                        Some(room) => (room / filter + 1).min(first + n),
                        None => first,
                    };
                    if fit > first {
                        let at = pix0 * g.out_c + first;
                        assert!(at + (PX - 1) * g.out_c + (fit - first) <= output.len(), "dsp conv tiles: output");
                        #[cfg(arm_dsp)]
                        if rounding {
                            let mut run = ChannelRun {
                                x: xw,
                                passes: (pairs / 2).div_ceil(UNROLLED),
                                entry: ChannelRun::entry(pairs / 2),
                                // SAFETY: inside `weights` (first < fit).
                                w: unsafe { weights.as_ptr().add(first * filter) },
                                skip: filter.wrapping_sub(8 * pairs),
                                bias: w.bias[first..fit].as_ptr(),
                                multiplier: w.multiplier[first..fit].as_ptr(),
                                shift: w.shift[first..fit].as_ptr(),
                                // SAFETY: inside `output` (asserted).
                                y: unsafe { output.as_mut_ptr().add(at) },
                                step: g.out_c,
                                zp21: 2 * p.out_zp + 1,
                                left: fit - first,
                            };
                            // SAFETY: as below, and every stage rounds
                            // (`rounding`) with the clamp the whole range.
                            unsafe {
                                match (pairs >= 2, pairs % 2 == 1) {
                                    (true, false) => rounding_channels::<true, false>(&mut run),
                                    (true, true) => rounding_channels::<true, true>(&mut run),
                                    (false, _) => rounding_channels::<false, true>(&mut run),
                                }
                            }
                            from = fit;
                        }
                        // SAFETY: `cols` holds 2 * pairs quads of PX pixels
                        // (just widened); the rows' reads lie inside
                        // `weights` (`fit`), the outputs inside `output`
                        // (asserted); every channel's stage is accepted
                        // (`stages_fit`).
                        if from < fit {
                            unsafe {
                                one_pass_channels(
                                    xw,
                                    pairs,
                                    weights.as_ptr().add(first * filter),
                                    filter,
                                    [&w.bias[first..fit], &w.multiplier[first..fit], &w.shift[first..fit]],
                                    p.out_zp,
                                    (full, lo, hi),
                                    output.as_mut_ptr().add(at),
                                    g.out_c,
                                )
                            };
                        }
                        from = fit;
                    }
                }
                for c in from..first + n {
                    let row = c * filter + start;
                    let mut a = if start == 0 { [w.bias[c]; PX] } else { cols.2[c - first] };
                    if row + 8 * pairs <= weights.len() {
                        // The padded taps read up to 7 weight bytes past this
                        // pass (the next channel's): times 0, exactly 0.
                        // SAFETY: `cols` holds 2 * pairs quads of PX pixels
                        // (just widened); the row has 8 * pairs readable bytes
                        // (checked).
                        unsafe { dot_px(xw, pairs, weights.as_ptr().add(row), &mut a) };
                    } else {
                        // The layer's last row: whole pairs, then the taps one by one.
                        let whole = len / 8;
                        // SAFETY: as above, with 8 * whole <= len bytes inside the row.
                        unsafe { dot_px(xw, whole, weights.as_ptr().add(row), &mut a) };
                        for i in 8 * whole..len {
                            let wv = weights[row + i] as i32;
                            for (px, a) in a.iter_mut().enumerate() {
                                *a = a.wrapping_add(wv * tap(cols, i, px));
                            }
                        }
                    }
                    if last {
                        let out = &mut output[pix0 * g.out_c + c..];
                        let stage = Output::new(w.multiplier[c], w.shift[c], p.out_zp);
                        if let (Some(o), true) = (stage, end - pix0 >= PX) {
                            // Six outputs `out_c` apart, all inside `out`
                            // (one check instead of six).
                            assert!((PX - 1) * g.out_c < out.len(), "dsp conv tiles: output");
                            let (y, step) = (out.as_mut_ptr(), g.out_c);
                            for (px, &a) in a.iter().enumerate() {
                                let v = if full { o.apply_full(a) } else { o.apply(a, lo, hi) };
                                // SAFETY: px * step <= (PX - 1) * out_c < out.len() (asserted).
                                unsafe { y.add(px * step).write(v) };
                            }
                            continue;
                        }
                        let ch = Channel::new(w.multiplier[c], w.shift[c]);
                        if ch.is_short() && end - pix0 >= PX {
                            // Six outputs `out_c` apart, all inside `out`.
                            let tile_out = &mut out[..(PX - 1) * g.out_c + 1];
                            for (px, &a) in a.iter().enumerate() {
                                tile_out[px * g.out_c] = ch.apply_short(a, p.out_zp, lo, hi);
                            }
                        } else {
                            for (px, &a) in a.iter().enumerate().take(end - pix0) {
                                out[px * g.out_c] = ch.apply(a, p);
                            }
                        }
                    } else {
                        cols.2[c - first] = a;
                    }
                }
                start += len;
            }
        }
    }
}
