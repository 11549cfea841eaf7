//! int8 kernels for x86_64 cores with AVX2 but no AVX-512 (AMD Zen 2/3,
//! Intel's client cores): the same bytes as the plain kernels in
//! [`crate::kernels::generic::int8`] (tests/kernels_simd.rs).
//!
//! Without VNNI there is no exact byte multiply-add: `vpmaddubsw` saturates
//! its pair sums (255 * 127 * 2 > 32767). Here both factors are widened to
//! i16 and `vpmaddwd` sums pairs of products into i32, exactly: a pixel
//! minus its zero point is within +-255 and a weight within +-128, so a pair
//! is at most 65,280. The sums wrap modulo 2^32 like the plain kernel's.
//!
//! Conv2D ([`conv2d_avx2_patch_pixels`]) gathers each output pixel's window
//! into a contiguous i16 patch of `x - in_zp` (padding taps 0, which is what
//! the plain kernel's skipped tap adds). Layers whose filters fit 72 KB
//! widened (AlexNet's conv1) then run a broadcast kernel: the filters
//! widened and repacked ([`build_broadcast_filters`], once per model where
//! the host lends them, else by the call), channels across the lanes, a pair
//! of patch elements broadcast per `vpmaddwd`. The others run a 3-pixel x
//! 3-filter dot-product block over the filters as stored (OHWI, widened 16
//! bytes at a time). The output stage (`requantize8`) is the plain kernel's
//! `requantize` on 8 lanes. Dense runs over rows ([`dense_avx2_units`]) or,
//! where the host lends an input-major copy, over the rows of the live
//! inputs only ([`dense_avx2_input_major_units`]). Scratch lives on the
//! stack: nothing here allocates.

// Register blocks index the same way the formulas do.
#![allow(clippy::needless_range_loop)]

use core::arch::x86_64::*;

use crate::geometry::{ConvGeom, PoolGeom};
use crate::kernels::generic::int8::{check_bn, requantize, DeadInputs, Int8Params, ThenBatchNorm};
use crate::kernels::generic::pool::for_each_window;
use crate::kernels::x86::live;
use crate::model::Int8Weights;

/// i16 elements of the stack buffer patches are gathered in (68 KB: a few
/// patches of AlexNet's largest filter, 3x3x384).
const PATCH_ELEMS: usize = 34 * 1024;
/// Output pixels of one register block.
const NP: usize = 3;
/// Filters of one register block (`NP * NC` = 9 accumulators, 3 filter
/// vectors, a pixel vector and a product: 14 of the 16 registers).
const NC: usize = 3;
/// Output channels one pass over the gathered patches covers (their filters,
/// at most 48 x 3456 bytes for AlexNet, stay in L2 across the pixel blocks).
const OCB: usize = 48;

/// The patch buffer, 32-byte aligned for the pixel loads.
#[repr(C, align(32))]
struct PatchBuf([i16; PATCH_ELEMS]);

/// A patch's stride in the buffer: whole 16-element vectors, zero past the filter.
fn patch_stride(filter: usize) -> usize {
    filter.next_multiple_of(16)
}

/// Whether [`conv2d_avx2_patch_pixels`] can run this layer: a square,
/// undilated geometry whose filter fits the patch buffer a few times over,
/// and an input zero point that is an int8 value (so `x - in_zp` fits i16
/// with room for a pair of products).
pub fn patches_fit(g: &ConvGeom, p: &Int8Params) -> bool {
    let filter = g.kernel() * g.kernel() * g.in_c;
    g.is_square() && filter > 0 && patch_stride(filter) * NP <= PATCH_ELEMS && i8::try_from(p.in_zp).is_ok()
}

/// How [`conv2d_avx2_patch_pixels_by`] walks the gathered patches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchWalk {
    /// Dot products of each patch with the filters as stored, reduced across
    /// the lanes at the end: any layer whose patches fit.
    Dot,
    /// Channels across the lanes against filters widened and repacked
    /// ([`broadcast_fits`], [`build_broadcast_filters`]): no reduction and no
    /// widening in the loop.
    Broadcast,
}

/// The walk [`conv2d_avx2_patch_pixels`] takes for this layer: the
/// broadcast kernel wherever its repacked filters fit the stack buffer
/// (AlexNet's conv1 capped at AVX2 on a Zen 4: fastest of 150 runs 1.31 ->
/// 1.21 ms, three alternating pairs; the dot products' short filters pay a
/// reduction every 207 multiply-adds and a widening every 3).
pub fn patch_walk(g: &ConvGeom) -> PatchWalk {
    if broadcast_fits(g) {
        PatchWalk::Broadcast
    } else {
        PatchWalk::Dot
    }
}

/// Output pixels `first_px..` (row-major) of the plain Conv2D that `output`
/// holds (whole pixels), the same bytes; with `then`, the bytes of that
/// BatchNormalization run on them after (it has `g.out_c` channels).
///
/// # Safety
/// The CPU must support AVX2. [`patches_fit`]`(g, p)` (asserted). `widened`:
/// the layer's [`build_broadcast_filters`], if the caller built them.
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn conv2d_avx2_patch_pixels(
    g: &ConvGeom,
    p: &Int8Params,
    w: &Int8Weights<'_>,
    widened: Option<&[i16]>,
    input: &[i8],
    output: &mut [i8],
    first_px: usize,
    then: Option<&ThenBatchNorm<'_>>,
) {
    // SAFETY: the caller's contract.
    unsafe { conv2d_avx2_patch_pixels_by(patch_walk(g), g, p, w, widened, input, output, first_px, then) }
}

/// [`conv2d_avx2_patch_pixels`] with the walk chosen by the caller (tests
/// hold both to the plain bytes).
///
/// # Safety
/// As [`conv2d_avx2_patch_pixels`]; for [`PatchWalk::Broadcast`],
/// [`broadcast_fits`]`(g)` (asserted), and `widened` unread by the other walk.
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn conv2d_avx2_patch_pixels_by(
    walk: PatchWalk,
    g: &ConvGeom,
    p: &Int8Params,
    w: &Int8Weights<'_>,
    widened: Option<&[i16]>,
    input: &[i8],
    output: &mut [i8],
    first_px: usize,
    then: Option<&ThenBatchNorm<'_>>,
) {
    assert!(patches_fit(g, p), "conv2d: patches do not fit");
    assert!(input.len() == g.input_len() && w.weights.len() == g.weights_len(), "conv2d: lengths");
    assert!(w.bias.len() == g.out_c && w.multiplier.len() == g.out_c && w.shift.len() == g.out_c, "conv2d: channels");
    assert!(output.len().is_multiple_of(g.out_c.max(1)), "conv2d: whole output pixels");
    let total = output.len() / g.out_c.max(1);
    assert!(first_px + total <= g.out_h * g.out_w, "conv2d: output pixels");
    if let Some(bn) = then {
        assert_eq!(check_bn(&bn.w, output.len()), g.out_c, "conv2d: the fused BatchNormalization's channels");
    }
    let filter = g.kernel() * g.kernel() * g.in_c;
    let stride = patch_stride(filter);
    let mut buf = PatchBuf([0i16; PATCH_ELEMS]);
    let buf = &mut buf.0;
    if walk == PatchWalk::Broadcast {
        assert!(broadcast_fits(g), "conv2d: the broadcast filters do not fit");
        // Lent, built once per model, or built here on the stack.
        let mut own: PackBuf;
        let packed = match widened {
            Some(lent) => {
                assert_eq!(lent.len(), broadcast_len(g), "conv2d: the lent broadcast filters");
                lent
            }
            None => {
                own = PackBuf([0; PACK_ELEMS]);
                let own = &mut own.0[..broadcast_len(g)];
                build_broadcast_filters(g, w, own);
                own
            }
        };
        // As few equal gathers as fit: the broadcast blocks take any count.
        let most = PATCH_ELEMS / stride;
        let per = total.div_ceil(total.div_ceil(most).max(1));
        let mut done = 0;
        while done < total {
            let n = per.min(total - done);
            gather_patches(g, input, p.in_zp, first_px + done, &mut buf[..n * stride], stride);
            let out = &mut output[done * g.out_c..(done + n) * g.out_c];
            // SAFETY: `n` patches of `stride` elements in `buf`, zero past the
            // filter; `packed` as `build_broadcast_filters` laid it out; AVX2: contract.
            unsafe { broadcast_patches(g, p, w, &buf[..n * stride], stride, packed, out, then) };
            done += n;
        }
        return;
    }
    // Pixels per gather: whole register blocks that fit the buffer.
    let per = (PATCH_ELEMS / stride / NP * NP).min(total);
    // The last partial vector of every filter, zero-padded: the loads past a
    // filter's end would read the next filter (or past the last one).
    let (full, tail) = (filter / 16, filter % 16);
    let mut done = 0;
    while done < total {
        let n = per.min(total - done);
        gather_patches(g, input, p.in_zp, first_px + done, &mut buf[..n * stride], stride);
        let out = &mut output[done * g.out_c..(done + n) * g.out_c];
        let blocks = n.div_ceil(NP);
        let mut oc0 = 0;
        while oc0 < g.out_c {
            let nb = OCB.min(g.out_c - oc0);
            let mut tails = [[0i8; 16]; OCB];
            if tail != 0 {
                for (j, t) in tails[..nb].iter_mut().enumerate() {
                    t[..tail].copy_from_slice(&w.weights[(oc0 + j) * filter + full * 16..][..tail]);
                }
            }
            for b in 0..blocks {
                // Blocks as equal as possible: a lone last pixel would read
                // its filters for one dot product.
                let (px, px_end) = (n * b / blocks, n * (b + 1) / blocks);
                let np = px_end - px;
                let mut acc = [[0i32; OCB]; NP];
                let mut j = 0;
                while j < nb {
                    let nc = NC.min(nb - j);
                    let blk = Block {
                        x: buf[px * stride..].as_ptr(),
                        xstep: stride,
                        w: w.weights[(oc0 + j) * filter..].as_ptr(),
                        wstep: filter,
                        full,
                        tails: if tail == 0 { None } else { Some(&tails[j..j + nc]) },
                    };
                    // SAFETY: patches px..px+np hold `stride` elements each in `buf`
                    // (whole vectors); filters oc0+j..+nc hold `full` whole vectors
                    // each in the weights, their tails in `tails`; AVX2: contract.
                    unsafe { dot_any(blk, np, nc, &mut acc, j) };
                    j += nc;
                }
                for q in 0..np {
                    let out = &mut out[(px + q) * g.out_c + oc0..][..nb];
                    let mut h = 0;
                    while h < nb {
                        let m = 8.min(nb - h);
                        // SAFETY: AVX2; the channels oc0 + h.. + m exist in `w` and `then`.
                        unsafe { finish8(&acc[q][h..h + m], w, oc0 + h, p, &mut out[h..h + m], then) };
                        h += m;
                    }
                }
            }
            oc0 += nb;
        }
        done += n;
    }
}

/// i16 elements of the broadcast kernel's widened filters at most (72 KB;
/// AlexNet's conv1: 182 tap pairs x 96 channels x 2): the stack buffer they
/// are built in when none are lent.
const PACK_ELEMS: usize = 36 * 1024;
/// Pixels of one broadcast register block.
const BP: usize = 6;
/// 8-channel vectors of one broadcast register block (`BP * BV` = 12
/// accumulators, 2 filter vectors, a broadcast pixel pair and a product:
/// the 16 registers, 8 loads per 12 `vpmaddwd`; 3 x 3 was 5 % slower on
/// conv1, `int8_kernels`).
const BV: usize = 2;

/// The widened filters a call builds where none are lent, 32-byte aligned
/// for their loads. The engine cuts an AVX2 layer into four runs a thread,
/// and when each built its own, conv1 was 6-8 % slower (`int8_profile --
/// 300 avx2` on a Zen 4, three alternating pairs).
#[repr(C, align(32))]
struct PackBuf([i16; PACK_ELEMS]);

/// i16 elements of the widened filters' layout for `g` (a pair of taps of
/// every channel, the channels rounded up to 8), whether or not it fits.
fn widened_len(g: &ConvGeom) -> usize {
    (g.kernel() * g.kernel() * g.in_c).div_ceil(2) * g.out_c.next_multiple_of(8) * 2
}

/// Whether the broadcast walk serves this layer: its widened filters fit
/// `PACK_ELEMS`.
pub fn broadcast_fits(g: &ConvGeom) -> bool {
    widened_len(g) <= PACK_ELEMS
}

/// i16 elements of [`build_broadcast_filters`]'s layout for `g`: 0 where
/// the broadcast walk does not serve it.
pub fn broadcast_len(g: &ConvGeom) -> usize {
    let n = widened_len(g);
    if n <= PACK_ELEMS {
        n
    } else {
        0
    }
}

/// The channels of the broadcast kernel's group starting at channel `oc0`
/// (its register block's `BV` vectors, fewer in the last group).
#[inline]
fn group_width(ocp: usize, oc0: usize) -> usize {
    (8 * BV).min(ocp - oc0)
}

/// Widen and repack the filters for `broadcast_patches` into `packed`
/// ([`broadcast_len`] elements, asserted; the host builds them once per
/// model and lends them): per group of
/// `group_width` channels (from channel `oc0`, at `oc0 * k2 * 2`),
/// `[k2 = filter / 2][width][2]` i16, zeros past the filter and the
/// channels. One 32-byte load holds a pair of taps of 8 channels, what
/// `vpmaddwd` multiplies by a broadcast pair of patch elements, and a
/// group's block reads its filters front to back.
pub fn build_broadcast_filters(g: &ConvGeom, w: &Int8Weights<'_>, packed: &mut [i16]) {
    assert!(broadcast_fits(g), "conv2d: the broadcast filters do not fit");
    assert!(packed.len() == broadcast_len(g) && w.weights.len() == g.weights_len(), "conv2d: lengths");
    let filter = g.kernel() * g.kernel() * g.in_c;
    let (k2, ocp) = (filter.div_ceil(2), g.out_c.next_multiple_of(8));
    packed.fill(0);
    for (o, f) in w.weights.chunks_exact(filter).enumerate() {
        let oc0 = o / (8 * BV) * (8 * BV);
        let width = group_width(ocp, oc0);
        let group = &mut packed[oc0 * k2 * 2..][..k2 * width * 2];
        let mut pairs = f.chunks_exact(2);
        // A pair a step down the rows: indexing each tap on its own
        // (`t2 * width * 2 + i`, bounds-checked) made this loop a sixth of
        // conv1's time (`perf`).
        for (row, pair) in group.chunks_exact_mut(width * 2).zip(pairs.by_ref()) {
            row[(o - oc0) * 2..][..2].copy_from_slice(&[pair[0] as i16, pair[1] as i16]);
        }
        // An odd filter's last tap; its partner stays zero.
        if let [last] = pairs.remainder() {
            group[(k2 - 1) * width * 2 + (o - oc0) * 2] = *last as i16;
        }
    }
}

/// `acc[p][v]` = for pixel `p`, channels `8 v ..`: the sums over the `k2`
/// pairs of patch elements (broadcast to every lane) times the packed
/// weights of those 2 taps (`wstep` i16 per pair).
///
/// # Safety
/// AVX2; `x + p * xstep` starts `2 * k2` readable i16 for `p < P`, and
/// `w + t * wstep` starts `8 * V` readable i16 pairs for `t < k2`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn broadcast_block<const P: usize, const V: usize>(
    x: *const i16,
    xstep: usize,
    w: *const i16,
    wstep: usize,
    k2: usize,
    acc_out: &mut [[[i32; 8]; BV]; BP],
) {
    let mut acc = [[_mm256_setzero_si256(); V]; P];
    for t in 0..k2 {
        let mut wv = [_mm256_setzero_si256(); V];
        for v in 0..V {
            // SAFETY: the function's contract.
            wv[v] = unsafe { _mm256_loadu_si256(w.add(t * wstep + 16 * v).cast()) };
        }
        for p in 0..P {
            // SAFETY: the function's contract (2 i16 at x + p*xstep + 2t).
            let xb = _mm256_set1_epi32(unsafe { x.add(p * xstep + 2 * t).cast::<i32>().read_unaligned() });
            for v in 0..V {
                acc[p][v] = _mm256_add_epi32(acc[p][v], _mm256_madd_epi16(xb, wv[v]));
            }
        }
    }
    for p in 0..P {
        for v in 0..V {
            // SAFETY: 32 writable bytes.
            unsafe { _mm256_storeu_si256(acc_out[p][v].as_mut_ptr().cast(), acc[p][v]) };
        }
    }
}

/// The output of `patches.len() / stride` gathered patches (`x - zp`, see
/// [`gather_patch`]) through the repacked filters: channels across the
/// lanes, a pair of patch elements broadcast per `vpmaddwd`.
///
/// # Safety
/// AVX2; `packed` laid out by [`build_broadcast_filters`] for `g`; `stride` a
/// multiple of 2 at least the filter length, the patches zero past the
/// filter; `out` holds the patches' output pixels.
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn broadcast_patches(
    g: &ConvGeom,
    p: &Int8Params,
    w: &Int8Weights<'_>,
    patches: &[i16],
    stride: usize,
    packed: &[i16],
    out: &mut [i8],
    then: Option<&ThenBatchNorm<'_>>,
) {
    let n = patches.len() / stride;
    let ocp = g.out_c.next_multiple_of(8);
    let k2 = (g.kernel() * g.kernel() * g.in_c).div_ceil(2);
    assert!(k2 * 2 <= stride && k2 * ocp * 2 <= packed.len() && out.len() == n * g.out_c, "conv2d: broadcast layout");
    let blocks = n.div_ceil(BP);
    let mut acc = [[[0i32; 8]; BV]; BP];
    let mut oc0 = 0;
    while oc0 < g.out_c {
        let width = group_width(ocp, oc0);
        let nv = width / 8;
        let wstep = width * 2;
        for b in 0..blocks {
            // Blocks as equal as possible.
            let (px, px_end) = (n * b / blocks, n * (b + 1) / blocks);
            let np = px_end - px;
            let (x, wp) = (patches[px * stride..].as_ptr(), packed[oc0 * k2 * 2..].as_ptr());
            macro_rules! go {
                ($($p:literal)*) => {
                    match (np, nv) {
                        // SAFETY: patches px..px+np hold 2*k2 elements each; the
                        // group's k2 pairs of `nv` channel vectors; contract.
                        $(($p, 1) => unsafe { broadcast_block::<$p, 1>(x, stride, wp, wstep, k2, &mut acc) },
                          ($p, 2) => unsafe { broadcast_block::<$p, 2>(x, stride, wp, wstep, k2, &mut acc) },)*
                        _ => unreachable!("broadcast_patches: a block of {np} x {nv}"),
                    }
                };
            }
            go!(1 2 3 4 5 6);
            for q in 0..np {
                for v in 0..nv {
                    let oc = oc0 + 8 * v;
                    let m = 8.min(g.out_c - oc);
                    let o = &mut out[(px + q) * g.out_c + oc..][..m];
                    // SAFETY: AVX2; the channels oc.. + m exist in `w` and `then`.
                    unsafe { finish8(&acc[q][v][..m], w, oc, p, o, then) };
                }
            }
        }
        oc0 += width;
    }
}

/// The patches of the output pixels from `first` (row-major) into `patches`,
/// `stride` elements apart, as many as it holds.
#[target_feature(enable = "avx2")]
fn gather_patches(g: &ConvGeom, input: &[i8], zp: i32, first: usize, patches: &mut [i16], stride: usize) {
    for (q, patch) in patches.chunks_exact_mut(stride).enumerate() {
        let at = first + q;
        gather_patch(g, input, at / g.out_w, at % g.out_w, zp, patch);
    }
}

/// Copy output pixel `(oy, ox)`'s window into `patch` as `x - zp` (i16,
/// kernel-row-major like the OHWI filters), the taps outside the image and
/// the elements past the filter set to 0.
#[target_feature(enable = "avx2")]
fn gather_patch(g: &ConvGeom, input: &[i8], oy: usize, ox: usize, zp: i32, patch: &mut [i16]) {
    let (k, cin) = (g.kernel(), g.in_c);
    let (ky0, ky1, iy0) = g.taps(oy, g.pad_top, g.in_h);
    let (kx0, kx1, ix0) = g.taps(ox, g.pad_left, g.in_w);
    let filter = k * k * cin;
    patch[filter..].fill(0);
    for (ky, row) in patch[..filter].chunks_exact_mut(k * cin).enumerate() {
        if ky < ky0 || ky >= ky1 {
            row.fill(0);
            continue;
        }
        if kx0 > 0 {
            row[..kx0 * cin].fill(0);
        }
        if kx1 < k {
            row[kx1 * cin..].fill(0);
        }
        let src = &input[((iy0 + ky - ky0) * g.in_w + ix0) * cin..][..(kx1 - kx0) * cin];
        widen_minus(src, zp, &mut row[kx0 * cin..kx1 * cin]);
    }
}

/// `dst[i] = src[i] - zp` as i16, 16 a vector.
#[target_feature(enable = "avx2")]
#[inline]
fn widen_minus(src: &[i8], zp: i32, dst: &mut [i16]) {
    assert_eq!(src.len(), dst.len(), "widen_minus: lengths");
    let zv = _mm256_set1_epi16(zp as i16);
    let whole = src.len() / 16 * 16;
    for (s, d) in src[..whole].chunks_exact(16).zip(dst[..whole].chunks_exact_mut(16)) {
        // SAFETY: 16 readable bytes and 16 writable i16.
        unsafe {
            let v = _mm256_cvtepi8_epi16(_mm_loadu_si128(s.as_ptr().cast()));
            _mm256_storeu_si256(d.as_mut_ptr().cast(), _mm256_sub_epi16(v, zv));
        }
    }
    for (s, d) in src[whole..].iter().zip(&mut dst[whole..]) {
        *d = *s as i16 - zp as i16;
    }
}

/// Where one register block reads: pixels `xstep` elements apart, filters
/// `wstep` bytes apart with `full` whole 16-byte vectors each, and (when
/// the filter is not whole vectors) each filter's zero-padded last vector.
#[derive(Clone, Copy)]
struct Block<'t> {
    x: *const i16,
    xstep: usize,
    w: *const i8,
    wstep: usize,
    full: usize,
    tails: Option<&'t [[i8; 16]]>,
}

/// `sum x * w` (wrapping i32) for `P` pixels and `C` filters: lane
/// `p * C + c` of the result.
///
/// # Safety
/// AVX2; `b.x + p * xstep` starts `16 * (full + 1)` readable i16 when there
/// are tails (`16 * full` otherwise), `b.w + c * wstep` starts `16 * full`
/// readable bytes, for `p < P`, `c < C`; `tails` has `C` entries.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn dot_block<const P: usize, const C: usize>(b: Block<'_>) -> [i32; 16] {
    let mut acc = [[_mm256_setzero_si256(); C]; P];
    for i in 0..b.full {
        let mut wv = [_mm256_setzero_si256(); C];
        for c in 0..C {
            // SAFETY: the function's contract.
            wv[c] = _mm256_cvtepi8_epi16(unsafe { _mm_loadu_si128(b.w.add(c * b.wstep + 16 * i).cast()) });
        }
        for p in 0..P {
            // SAFETY: the function's contract.
            let xv = unsafe { _mm256_loadu_si256(b.x.add(p * b.xstep + 16 * i).cast()) };
            for c in 0..C {
                acc[p][c] = _mm256_add_epi32(acc[p][c], _mm256_madd_epi16(xv, wv[c]));
            }
        }
    }
    if let Some(tails) = b.tails {
        let mut wv = [_mm256_setzero_si256(); C];
        for c in 0..C {
            // SAFETY: 16 bytes in each tail.
            wv[c] = _mm256_cvtepi8_epi16(unsafe { _mm_loadu_si128(tails[c].as_ptr().cast()) });
        }
        for p in 0..P {
            // SAFETY: the function's contract (the patch's last vector, zero past the filter).
            let xv = unsafe { _mm256_loadu_si256(b.x.add(p * b.xstep + 16 * b.full).cast()) };
            for c in 0..C {
                acc[p][c] = _mm256_add_epi32(acc[p][c], _mm256_madd_epi16(xv, wv[c]));
            }
        }
    }
    let mut v = [_mm256_setzero_si256(); 16];
    for p in 0..P {
        for c in 0..C {
            v[p * C + c] = acc[p][c];
        }
    }
    let mut lanes = [0i32; 16];
    // SAFETY: 2 x 8 writable lanes.
    unsafe {
        _mm256_storeu_si256(lanes.as_mut_ptr().cast(), reduce8(v[..8].try_into().unwrap()));
        if P * C > 8 {
            _mm256_storeu_si256(lanes[8..].as_mut_ptr().cast(), reduce8(v[8..].try_into().unwrap()));
        }
    }
    lanes
}

/// Lane `i` of the result is the sum of the 8 lanes of `v[i]` (wrapping).
#[target_feature(enable = "avx2")]
#[inline]
fn reduce8(v: [__m256i; 8]) -> __m256i {
    let t0 = _mm256_hadd_epi32(v[0], v[1]);
    let t1 = _mm256_hadd_epi32(v[2], v[3]);
    let t2 = _mm256_hadd_epi32(v[4], v[5]);
    let t3 = _mm256_hadd_epi32(v[6], v[7]);
    // Per 128-bit half: [s0, s1, s2, s3] and [s4, s5, s6, s7], partial.
    let u0 = _mm256_hadd_epi32(t0, t1);
    let u1 = _mm256_hadd_epi32(t2, t3);
    _mm256_add_epi32(_mm256_permute2x128_si256::<0x20>(u0, u1), _mm256_permute2x128_si256::<0x31>(u0, u1))
}

/// [`dot_block`] for `np <= NP` pixels and `nc <= NC` filters, its sums
/// stored at `acc[p][j + c]`.
///
/// # Safety
/// As [`dot_block`] for `np` pixels and `nc` filters.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn dot_any(b: Block<'_>, np: usize, nc: usize, acc: &mut [[i32; OCB]; NP], j: usize) {
    macro_rules! go {
        ($($p:literal $c:literal),*) => {
            match (np, nc) {
                // SAFETY: the caller's contract for these counts.
                $(($p, $c) => {
                    let l = unsafe { dot_block::<$p, $c>(b) };
                    for p in 0..$p {
                        acc[p][j..j + $c].copy_from_slice(&l[p * $c..p * $c + $c]);
                    }
                })*
                _ => unreachable!("dot_any: a block of {np} x {nc}"),
            }
        };
    }
    go!(1 1, 1 2, 1 3, 2 1, 2 2, 2 3, 3 1, 3 2, 3 3);
}

/// `out[i] = requantize(acc[i] + bias[o + i], ..)` for the `out.len() <= 8`
/// channels from `o`, then `then`'s BatchNormalization on those values.
///
/// # Safety
/// AVX2 (inlined into functions that enable it); `w` (and `then`'s weights)
/// hold the channels `o..o + out.len()`.
///
/// Not itself a `target_feature` function, so it can be inlined always into
/// the kernels, as `finish16` is in the VNNI ones. Called once per 8
/// outputs, its call and its copies of whole runs of 8 (`memcpy` calls) cost
/// conv1 a fifth of its time and Winograd's convs 3-5 % (`int8_kernels`, one
/// thread: conv1's broadcast walk 1.90 -> 1.52 ms, conv 4's Winograd 1.49 ->
/// 1.43).
#[inline(always)]
pub(super) unsafe fn finish8(
    acc: &[i32],
    w: &Int8Weights<'_>,
    o: usize,
    p: &Int8Params,
    out: &mut [i8],
    then: Option<&ThenBatchNorm<'_>>,
) {
    let m = out.len();
    // A macro, not a closure: this function has no AVX2 of its own (so that
    // it inlines), and a closure in it would not either: its intrinsics
    // would stay calls.
    macro_rules! lanes {
        ($s:expr) => {{
            let s: &[i32] = $s;
            if m == 8 {
                _mm256_loadu_si256(s[..8].as_ptr().cast())
            } else {
                let mut a = [0i32; 8];
                a[..m].copy_from_slice(&s[..m]);
                _mm256_loadu_si256(a.as_ptr().cast())
            }
        }};
    }
    // SAFETY: AVX2 (the caller's contract); every 8-lane load reads a
    // checked slice of 8 or an 8-lane copy, the store an 8-lane array.
    unsafe {
        let x = _mm256_add_epi32(lanes!(acc), lanes!(&w.bias[o..]));
        let mut r = requantize8(x, lanes!(&w.multiplier[o..]), lanes!(&w.shift[o..]), p);
        if let Some(bn) = then {
            let mut wb = [0i32; 8];
            for (d, &s) in wb[..m].iter_mut().zip(&bn.w.weights[o..o + m]) {
                *d = s as i32;
            }
            let wv = _mm256_loadu_si256(wb.as_ptr().cast());
            let a = _mm256_add_epi32(
                _mm256_mullo_epi32(wv, _mm256_sub_epi32(r, _mm256_set1_epi32(bn.p.in_zp))),
                lanes!(&bn.w.bias[o..]),
            );
            r = requantize8(a, lanes!(&bn.w.multiplier[o..]), lanes!(&bn.w.shift[o..]), &bn.p);
        }
        let mut res = [0i32; 8];
        _mm256_storeu_si256(res.as_mut_ptr().cast(), r);
        for (d, &s) in out.iter_mut().zip(&res) {
            // In [-128, 127]: the clamp's bounds are.
            *d = s as i8;
        }
    }
}

/// The plain kernels' `requantize` on 8 lanes, bit for bit:
/// `MultiplyByQuantizedMultiplier` (saturating left shift, SRDHM with its
/// one saturating case, RDBPOT), saturating `+ out_zp`, clamp. Returns the
/// results as i32. The cases that need extra work (a left shift, the
/// multiplier `i32::MIN`, a zero point so far out that moving the clamp by
/// it overflows) are tested for once per call and skipped when no lane has them.
#[target_feature(enable = "avx2")]
#[inline]
fn requantize8(x: __m256i, m: __m256i, shift: __m256i, p: &Int8Params) -> __m256i {
    let zero = _mm256_setzero_si256();
    let min = _mm256_set1_epi32(i32::MIN);
    let max = _mm256_set1_epi32(i32::MAX);
    // Saturating x * 2^left, left = clamp(shift, 0, 31).
    let a = if _mm256_movemask_epi8(_mm256_cmpgt_epi32(shift, zero)) == 0 {
        x
    } else {
        let left = _mm256_min_epi32(_mm256_max_epi32(shift, zero), _mm256_set1_epi32(31));
        let sh = _mm256_sllv_epi32(x, left);
        let same = _mm256_cmpeq_epi32(_mm256_srav_epi32(sh, left), x);
        let sat = _mm256_xor_si256(_mm256_srai_epi32::<31>(x), max);
        _mm256_blendv_epi8(sat, sh, same)
    };
    // SRDHM(a, m) = floor((a * m + 2^30) / 2^31) (gemmlowp's two nudges
    // agree with it): bits 31..62 of the sum, shifted down to the low half
    // of the even lanes and up to the high half of the odd ones.
    let half = _mm256_set1_epi64x(1 << 30);
    let even = _mm256_srli_epi64::<31>(_mm256_add_epi64(_mm256_mul_epi32(a, m), half));
    let odd = _mm256_mul_epi32(_mm256_srli_epi64::<32>(a), _mm256_srli_epi64::<32>(m));
    let odd = _mm256_slli_epi64::<1>(_mm256_add_epi64(odd, half));
    let mut hm = _mm256_blend_epi32::<0b1010_1010>(even, odd);
    let both_min = _mm256_and_si256(_mm256_cmpeq_epi32(m, min), _mm256_cmpeq_epi32(a, min));
    if _mm256_movemask_epi8(both_min) != 0 {
        hm = _mm256_blendv_epi8(hm, max, both_min);
    }
    // RDBPOT(hm, right), right = clamp(-shift, 0, 31).
    let right = _mm256_max_epi32(_mm256_sub_epi32(zero, _mm256_max_epi32(shift, _mm256_set1_epi32(-31))), zero);
    let mask = _mm256_sub_epi32(_mm256_sllv_epi32(_mm256_set1_epi32(1), right), _mm256_set1_epi32(1));
    let rem = _mm256_and_si256(hm, mask);
    let threshold = _mm256_add_epi32(_mm256_srai_epi32::<1>(mask), _mm256_srli_epi32::<31>(hm));
    // `up` is -1 where the remainder rounds up.
    let up = _mm256_cmpgt_epi32(rem, threshold);
    let v = _mm256_sub_epi32(_mm256_srav_epi32(hm, right), up);
    let (lo, hi) = (p.act_min.max(-128), p.act_max.min(127));
    if let (Some(lo_v), Some(hi_v)) = (lo.checked_sub(p.out_zp), hi.checked_sub(p.out_zp)) {
        // clamp(v + zp, lo, hi) with a saturating add is clamp(v, lo - zp, hi - zp) + zp
        // whenever those bounds exist: a saturated sum lands on the same bound.
        let v = _mm256_min_epi32(_mm256_max_epi32(v, _mm256_set1_epi32(lo_v)), _mm256_set1_epi32(hi_v));
        return _mm256_add_epi32(v, _mm256_set1_epi32(p.out_zp));
    }
    // Saturating + out_zp.
    let zp = _mm256_set1_epi32(p.out_zp);
    let sum = _mm256_add_epi32(v, zp);
    let ovf = _mm256_srai_epi32::<31>(_mm256_and_si256(_mm256_xor_si256(v, sum), _mm256_xor_si256(zp, sum)));
    let sat = _mm256_xor_si256(_mm256_srai_epi32::<31>(v), max);
    let sum = _mm256_blendv_epi8(sum, sat, ovf);
    _mm256_min_epi32(_mm256_max_epi32(sum, _mm256_set1_epi32(lo)), _mm256_set1_epi32(hi))
}

/// Units of one [`dense_block`]: they share each 16-input vector of `x - zp`.
/// Eight rows are eight memory streams in flight: FC7's shape on one thread
/// took 1.02 ms with four, 0.64-0.69 with eight (the loads were the wait).
const DU: usize = 8;

/// Dense units `first..first + output.len()` of a layer with `w.bias.len()`
/// units (so threads can share a layer), the bytes of the plain `dense`:
/// each unit's row against `x - in_zp`, both widened to i16 16 at a time.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn dense_avx2_units(p: &Int8Params, w: &Int8Weights<'_>, input: &[i8], output: &mut [i8], first: usize) {
    let n = input.len();
    let units = w.bias.len();
    assert!(w.weights.len() == n * units, "dense: weight length");
    assert!(w.multiplier.len() == units && w.shift.len() == units, "dense: units");
    assert!(first + output.len() <= units, "dense: unit range");
    let full = n / 16;
    let mut u = 0;
    while u < output.len() {
        let nu = DU.min(output.len() - u);
        let rows = &w.weights[(first + u) * n..(first + u + nu) * n];
        let mut sums = [0i32; DU];
        if nu == DU {
            // SAFETY: `DU` rows of `n` bytes; `input` has `n`; AVX2: contract.
            sums = unsafe { dense_block::<DU>(input.as_ptr(), rows.as_ptr(), n, full, p.in_zp) };
        } else {
            for q in 0..nu {
                // SAFETY: as above, one row.
                sums[q] = unsafe { dense_block::<1>(input.as_ptr(), rows[q * n..].as_ptr(), n, full, p.in_zp) }[0];
            }
        }
        for q in 0..nu {
            let o = first + u + q;
            // The inputs past the whole vectors.
            let row = &rows[q * n..(q + 1) * n];
            let rest = row[16 * full..]
                .iter()
                .zip(&input[16 * full..])
                .fold(0i32, |a, (&wv, &xv)| a.wrapping_add(wv as i32 * (xv as i32 - p.in_zp)));
            let acc = sums[q].wrapping_add(rest).wrapping_add(w.bias[o]);
            output[u + q] = requantize(acc, w.multiplier[o], w.shift[o], p);
        }
        u += nu;
    }
}

/// `sum (x - zp) * w` over the first `16 * full` inputs for `R` rows `n`
/// bytes apart (wrapping i32).
///
/// # Safety
/// AVX2; `x` starts `16 * full` readable bytes, `w + r * n` too for `r < R`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn dense_block<const R: usize>(x: *const i8, w: *const i8, n: usize, full: usize, zp: i32) -> [i32; DU] {
    let zv = _mm256_set1_epi16(zp as i16);
    let mut acc = [_mm256_setzero_si256(); R];
    for i in 0..full {
        // SAFETY: the function's contract.
        let xv = _mm256_sub_epi16(_mm256_cvtepi8_epi16(unsafe { _mm_loadu_si128(x.add(16 * i).cast()) }), zv);
        for r in 0..R {
            // SAFETY: the function's contract.
            let wv = _mm256_cvtepi8_epi16(unsafe { _mm_loadu_si128(w.add(r * n + 16 * i).cast()) });
            acc[r] = _mm256_add_epi32(acc[r], _mm256_madd_epi16(xv, wv));
        }
    }
    let mut v = [_mm256_setzero_si256(); 8];
    v[..R].copy_from_slice(&acc);
    let mut lanes = [0i32; 8];
    // SAFETY: 8 writable lanes.
    unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), reduce8(v)) };
    let mut out = [0i32; DU];
    out[..R].copy_from_slice(&lanes[..R]);
    out
}

/// Units per pass of [`dense_avx2_input_major_units`]: their `i32` sums (8
/// KB) stay in L1 while the live rows stream by.
const IM_CHUNK: usize = 2048;

/// [`dense_avx2_units`] over weights laid out input-major (`wt[j * units +
/// u]`, the transpose of `w.weights`), reading only the rows of live inputs
/// (`x != in_zp`): a dead input adds `(x - in_zp) * w = 0` to every unit, so
/// after a ReLU about half of the layer's weights need not be streamed. The
/// same integer sums, so the same bytes.
///
/// Live inputs go in fours. For every 32 units, the rows of a pair of them
/// are interleaved by a byte unpack and widened to i16 pairs, which meet the
/// pair's `x - in_zp`, broadcast, in one `vpmaddwd`; the two pairs' products
/// are added before the sums in L1. (The unpack works within 128-bit lanes:
/// its halves hold units 0-7 and 16-23, its high one 8-15 and 24-31.) A last
/// group of fewer than four is padded with inputs of value 0 after the
/// zero point, which add nothing.
///
/// With `dead`, input `j` is dead at `dead.values[j]` instead, the live
/// ones meet `x - values[j]` (within ±255, an i16 as well) and each unit
/// starts from `dead.sums` ([`DeadInputs`]): the same sums again.
///
/// # Safety
/// The CPU must support AVX2; `p.in_zp` must fit an i8.
#[target_feature(enable = "avx2")]
pub unsafe fn dense_avx2_input_major_units(
    p: &Int8Params,
    w: &Int8Weights<'_>,
    wt: &[i8],
    input: &[i8],
    dead: Option<DeadInputs<'_>>,
    output: &mut [i8],
    first: usize,
) {
    let (units, zp) = live::check_input_major(p, w, wt, input, output.len(), first);
    if let Some(d) = dead {
        assert!(d.values.len() == input.len() && d.sums.len() == units, "dense: dead inputs' lengths");
    }
    let at_zp = _mm256_set1_epi8(zp);
    let mut c0 = 0;
    while c0 < output.len() {
        let cn = IM_CHUNK.min(output.len() - c0);
        let groups = cn.div_ceil(32);
        let u0 = first + c0;
        let mut sums = [0i32; IM_CHUNK];
        // Fold one quad of live inputs (`x - in_zp` of each) into every
        // group of 32 units, asking for the rows of the quad `ahead`
        // meanwhile: live rows are runs of `cn` bytes with gaps, which the
        // hardware prefetcher does not follow.
        let mut fold = |quad: &[usize; 4], xs: [i32; 4], ahead: Option<&[usize]>| {
            let pair = |a: i32, b: i32| _mm256_set1_epi32((b << 16) | (a & 0xffff));
            let (x01, x23) = (pair(xs[0], xs[1]), pair(xs[2], xs[3]));
            for g in 0..groups {
                let off = u0 + 32 * g;
                let left = cn - 32 * g;
                if let Some(next) = ahead {
                    for &j in next {
                        // SAFETY: inside row `j` (a hint; it never faults).
                        _mm_prefetch::<_MM_HINT_T0>(unsafe { wt.as_ptr().add(j * units + off) }.cast());
                    }
                }
                let row = |r: usize| {
                    let at = quad[r] * units + off;
                    if left >= 32 {
                        // SAFETY: row `quad[r]` has `units` bytes from
                        // `quad[r] * units`, 32 of them from `off`.
                        unsafe { _mm256_loadu_si256(wt.as_ptr().add(at).cast()) }
                    } else {
                        let mut tail = [0i8; 32];
                        tail[..left].copy_from_slice(&wt[at..at + left]);
                        // SAFETY: 32 bytes of `tail`.
                        unsafe { _mm256_loadu_si256(tail.as_ptr().cast()) }
                    }
                };
                let (r0, r1, r2, r3) = (row(0), row(1), row(2), row(3));
                let (lo01, hi01) = (_mm256_unpacklo_epi8(r0, r1), _mm256_unpackhi_epi8(r0, r1));
                let (lo23, hi23) = (_mm256_unpacklo_epi8(r2, r3), _mm256_unpackhi_epi8(r2, r3));
                let widen = |v: __m256i, half: bool| {
                    let h = if half { _mm256_extracti128_si256::<1>(v) } else { _mm256_castsi256_si128(v) };
                    _mm256_cvtepi8_epi16(h)
                };
                // (register, its half, the first of its 8 units)
                for (from01, from23, half, unit) in
                    [(lo01, lo23, false, 0), (hi01, hi23, false, 8), (lo01, lo23, true, 16), (hi01, hi23, true, 24)]
                {
                    let v = _mm256_add_epi32(
                        _mm256_madd_epi16(widen(from01, half), x01),
                        _mm256_madd_epi16(widen(from23, half), x23),
                    );
                    let at = &mut sums[32 * g + unit..32 * g + unit + 8];
                    // SAFETY: 8 i32 of `sums` (a group's 32 fit the array: `cn <= IM_CHUNK`).
                    unsafe {
                        let old = _mm256_loadu_si256(at.as_ptr().cast());
                        _mm256_storeu_si256(at.as_mut_ptr().cast(), _mm256_add_epi32(old, v));
                    }
                }
            }
        };
        let dead_at = |j: usize| dead.map_or(zp, |d| d.values[j]);
        let x_of = |j: usize| i32::from(input[j]) - i32::from(dead_at(j));
        let live_bits = |j0: usize, block: &[i8]| {
            let half = |j0: usize, h: &[i8]| -> u64 {
                if h.len() == 32 {
                    // SAFETY: 32 bytes of `h`, and of `dead.values` from `j0` (as long as the input).
                    let (x, at) = unsafe {
                        let x = _mm256_loadu_si256(h.as_ptr().cast());
                        (x, dead.map_or(at_zp, |d| _mm256_loadu_si256(d.values[j0..j0 + 32].as_ptr().cast())))
                    };
                    u64::from(!(_mm256_movemask_epi8(_mm256_cmpeq_epi8(x, at)) as u32))
                } else {
                    h.iter().enumerate().fold(0, |a, (i, &v)| a | u64::from(v != dead_at(j0 + i)) << i)
                }
            };
            let (lo, hi) = block.split_at(32.min(block.len()));
            half(j0, lo) | half(j0 + 32, hi) << 32
        };
        live::for_each_live_quad(input, live_bits, |quad, real, ahead| {
            // A padded input is 0 after its dead value.
            let xs = [0, 1, 2, 3].map(|r| if r < real { x_of(quad[r]) } else { 0 });
            fold(quad, xs, ahead);
        });
        for (unit, &sum) in sums[..cn].iter().enumerate() {
            let o = u0 + unit;
            let sum = dead.map_or(sum, |d| sum.wrapping_add(d.sums[o]));
            output[c0 + unit] = requantize(sum.wrapping_add(w.bias[o]), w.multiplier[o], w.shift[o], p);
        }
        c0 += cn;
    }
}

/// The plain int8 MaxPool2D, 32 channels a vector (the rest one by one).
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn max_pool_avx2(g: &PoolGeom, input: &[i8], output: &mut [i8]) {
    let c = g.channels;
    let whole = c / 32 * 32;
    for_each_window(g, input, output, |window, out| {
        for ch in (0..whole).step_by(32) {
            let mut best = _mm256_set1_epi8(i8::MIN);
            window.for_each_pixel(|at| {
                // SAFETY: 32 bytes from `input[at + ch..]`, within the pixel's `c` channels.
                let v = unsafe { _mm256_loadu_si256(input[at + ch..at + ch + 32].as_ptr().cast()) };
                best = _mm256_max_epi8(best, v);
            });
            // SAFETY: 32 writable bytes at `out[ch..]`.
            unsafe { _mm256_storeu_si256(out[ch..ch + 32].as_mut_ptr().cast(), best) };
        }
        if whole < c {
            out[whole..].fill(i8::MIN);
            window.for_each_pixel(|at| {
                for (o, &v) in out[whole..].iter_mut().zip(&input[at + whole..at + c]) {
                    *o = (*o).max(v);
                }
            });
        }
    });
}
