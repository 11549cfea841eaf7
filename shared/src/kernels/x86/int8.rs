//! x86_64 SIMD variants of the int8 kernels, each tested
//! (tests/kernels_simd.rs) to give exactly the bytes of the plain kernel in
//! [`crate::kernels::generic::int8`].
//!
//! int8 with AVX-512 VNNI: `vpdpbusd` multiplies *unsigned* bytes by signed
//! bytes. The activations are signed, so they are offset by 128 (`x ^ 0x80`
//! is `x + 128` as a `u8`), which adds `128 * sum(w)` to the accumulator;
//! the plain kernel subtracts the input zero point, so the exact accumulator
//! is `D - (128 + in_zp) * sum(w)`, with `sum(w)` over the same in-image taps.
//! All of this is wrapping i32 arithmetic, equal modulo 2^32 to the plain
//! kernel's sum whatever the order, and the result goes through the same
//! [`requantize`].
//!
//! Conv2D has three VNNI walkers, picked by [`conv2d_vnni_rows`]:
//! - [`conv2d_vnni_patch_pixels`] (the usual one): each output pixel's window
//!   is gathered into a contiguous, already offset patch whose padding taps
//!   hold the input zero point, so every window is full and the correction is
//!   one whole-filter sum per channel. Small layers (filters repacked in
//!   64 KB, like AlexNet's conv1) then run a broadcast kernel with channels
//!   across the lanes; the others a 4-pixel x 6-filter dot-product kernel
//!   on the filters as stored.
//! - [`conv2d_vnni_clipped_rows`], for filters too large for the patch
//!   buffer: kernel row by kernel row over the in-image taps.
//!
//! The scratch they need (patches, and the repacked filters and sum tables
//! where the host lends none, [`PatchFilters`]) is on the stack: nothing
//! here allocates.

// Register blocks index the same way the formulas do.
#![allow(clippy::needless_range_loop)]

use core::arch::x86_64::*;

use crate::geometry::ConvGeom;
use crate::kernels::generic::int8::{
    check_bn, check_conv, check_dense, conv2d_portable, dense_portable, requantize, Int8Params, ThenBatchNorm,
};
use crate::kernels::generic::pool::for_each_window;
use crate::kernels::x86::live;
use crate::model::Int8Weights;

// ---------------------------------------------------------------------------
// int8, auto-vectorised portable source compiled for wider ISAs.

/// [`crate::kernels::generic::int8::conv2d_portable`] compiled for AVX2.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
pub unsafe fn conv2d_avx2(g: &ConvGeom, p: &Int8Params, w: &Int8Weights<'_>, input: &[i8], output: &mut [i8]) {
    conv2d_portable(g, p, w, input, output)
}

/// [`crate::kernels::generic::int8::conv2d_portable`] compiled for AVX-512BW.
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512BW.
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn conv2d_avx512bw(g: &ConvGeom, p: &Int8Params, w: &Int8Weights<'_>, input: &[i8], output: &mut [i8]) {
    conv2d_portable(g, p, w, input, output)
}

/// [`crate::kernels::generic::int8::dense_portable`] compiled for AVX-512BW.
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512BW.
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn dense_avx512bw(p: &Int8Params, w: &Int8Weights<'_>, input: &[i8], output: &mut [i8]) {
    dense_portable(p, w, input, output)
}

// ---------------------------------------------------------------------------
// int8 with AVX-512 VNNI.

/// Output pixels of one register block.
const NP: usize = 6;
/// Output channels of one register block (`NP * NC` = 24 accumulators, two
/// vectors of sums after [`reduce16`]; with the 6 pixel vectors and a filter
/// vector, 31 of the 32 registers). 10 loads per 24 `vpdpbusd`, of which the
/// filters' come from L2: 4 x 6 read 6 of them, 384 bytes per 24 (on a Xeon
/// retiring two `vpdpbusd` a cycle, 32 bytes a cycle from L2, where its convs
/// ran at half the peak); 6 x 4 reads 4. On a Zen 4, one thread, the same
/// layers: 1-2 % faster (conv 4 1.083 -> 1.070 ms, conv 5 0.724 -> 0.711).
/// 4 x 6 was itself 3-5 % faster than 4 x 4.
const NC: usize = 4;
/// Output channels whose per-tap weight sums are tabled at a time.
const OCB: usize = 48;
/// How far ahead (bytes) [`dot_block`] asks for each filter's next bytes.
/// The six filter streams of a register block come from L2 (a chunk's 48
/// filters do not fit L1), and on a Xeon that retires two `vpdpbusd` a cycle
/// the hardware's own prefetch left the 13x13 convs 13 % slower (medians of
/// `int8_profile`, 0.514 against 0.447 ms on conv 3). Prefetching the pixels
/// as well, or 512 bytes ahead, measured no better.
const FILTER_PREFETCH: usize = 256;
/// Largest `kernel * kernel` the VNNI conv tables (larger kernels use AVX-512BW).
pub const MAX_TAPS: usize = 256;

/// Lane `i` of the result is the sum of the 16 lanes of `v[i]` (wrapping).
#[target_feature(enable = "avx512f")]
#[inline]
fn reduce16(v: [__m512i; 16]) -> __m512i {
    // Pairs: per 128-bit lane [a0+a2, b0+b2, a1+a3, b1+b3].
    let mut t = [_mm512_setzero_si512(); 8];
    for i in 0..8 {
        let (a, b) = (v[2 * i], v[2 * i + 1]);
        t[i] = _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));
    }
    // Quads: per 128-bit lane [a, b, c, d] partial sums.
    let mut q = [_mm512_setzero_si512(); 4];
    for i in 0..4 {
        let (a, b) = (t[2 * i], t[2 * i + 1]);
        q[i] = _mm512_add_epi32(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b));
    }
    // Across the four 128-bit lanes.
    let h = |a: __m512i, b: __m512i| {
        _mm512_add_epi32(_mm512_shuffle_i32x4::<0b01_00_01_00>(a, b), _mm512_shuffle_i32x4::<0b11_10_11_10>(a, b))
    };
    let (s01, s23) = (h(q[0], q[1]), h(q[2], q[3]));
    _mm512_add_epi32(_mm512_shuffle_i32x4::<0b10_00_10_00>(s01, s23), _mm512_shuffle_i32x4::<0b11_01_11_01>(s01, s23))
}

/// [`requantize`] on 16 lanes, bit for bit: `MultiplyByQuantizedMultiplier`
/// (saturating left shift, SRDHM with its one saturating case, RDBPOT),
/// saturating `+ out_zp`, clamp. Returns the 16 results as i32.
///
/// The cases that need extra work are tested for once per call and skipped
/// when no lane has them: a left shift (valid conv and BN multipliers shift
/// right), the multiplier `i32::MIN`, and a zero point so far out that
/// moving the clamp bounds by it would overflow.
#[target_feature(enable = "avx512f")]
#[inline]
fn requantize16(x: __m512i, m: __m512i, shift: __m512i, p: &Int8Params) -> __m512i {
    let zero = _mm512_setzero_si512();
    let min = _mm512_set1_epi32(i32::MIN);
    let max = _mm512_set1_epi32(i32::MAX);
    // Saturating x * 2^left, left = clamp(shift, 0, 31).
    let a = if _mm512_cmpgt_epi32_mask(shift, zero) == 0 {
        x
    } else {
        let left = _mm512_min_epi32(_mm512_max_epi32(shift, zero), _mm512_set1_epi32(31));
        let sh = _mm512_sllv_epi32(x, left);
        let ovf = _mm512_cmpneq_epi32_mask(_mm512_srav_epi32(sh, left), x);
        let sat = _mm512_xor_si512(_mm512_srai_epi32::<31>(x), max);
        _mm512_mask_blend_epi32(ovf, sh, sat)
    };
    // SRDHM(a, m): gemmlowp adds 2^30 (or 1 - 2^30 below zero) to the i64
    // product and divides by 2^31 truncating; both cases equal
    // floor((a*m + 2^30) / 2^31), bits 31..62 of the sum: shifted down to
    // the low half in the even lanes, up to the high half in the odd ones.
    let half = _mm512_set1_epi64(1 << 30);
    let even = _mm512_srli_epi64::<31>(_mm512_add_epi64(_mm512_mul_epi32(a, m), half));
    let odd = _mm512_mul_epi32(_mm512_srli_epi64::<32>(a), _mm512_srli_epi64::<32>(m));
    let odd = _mm512_slli_epi64::<1>(_mm512_add_epi64(odd, half));
    let mut hm = _mm512_mask_blend_epi32(0xAAAA, even, odd);
    let m_min = _mm512_cmpeq_epi32_mask(m, min);
    if m_min != 0 {
        hm = _mm512_mask_blend_epi32(m_min & _mm512_cmpeq_epi32_mask(a, min), hm, max);
    }
    // RDBPOT(hm, right), right = clamp(-shift, 0, 31) (shift >= -31 first, as saturating_neg does).
    let right = _mm512_max_epi32(_mm512_sub_epi32(zero, _mm512_max_epi32(shift, _mm512_set1_epi32(-31))), zero);
    let mask = _mm512_sub_epi32(_mm512_sllv_epi32(_mm512_set1_epi32(1), right), _mm512_set1_epi32(1));
    let rem = _mm512_and_si512(hm, mask);
    let neg = _mm512_srli_epi32::<31>(hm);
    let threshold = _mm512_add_epi32(_mm512_srai_epi32::<1>(mask), neg);
    let up = _mm512_cmpgt_epi32_mask(rem, threshold);
    let q = _mm512_srav_epi32(hm, right);
    let v = _mm512_mask_add_epi32(q, up, q, _mm512_set1_epi32(1));
    let (lo, hi) = (p.act_min.max(-128), p.act_max.min(127));
    if let (Some(lo_v), Some(hi_v)) = (lo.checked_sub(p.out_zp), hi.checked_sub(p.out_zp)) {
        // clamp(v + zp, lo, hi) with a saturating add is clamp(v, lo - zp, hi - zp) + zp
        // whenever those bounds exist: a saturated sum lands on the same bound.
        let v = _mm512_min_epi32(_mm512_max_epi32(v, _mm512_set1_epi32(lo_v)), _mm512_set1_epi32(hi_v));
        return _mm512_add_epi32(v, _mm512_set1_epi32(p.out_zp));
    }
    // Saturating + out_zp.
    let zp = _mm512_set1_epi32(p.out_zp);
    let sum = _mm512_add_epi32(v, zp);
    let ovf = _mm512_cmplt_epi32_mask(_mm512_and_si512(_mm512_xor_si512(v, sum), _mm512_xor_si512(zp, sum)), zero);
    let sat = _mm512_xor_si512(_mm512_srai_epi32::<31>(v), max);
    let sum = _mm512_mask_blend_epi32(ovf, sum, sat);
    _mm512_min_epi32(_mm512_max_epi32(sum, _mm512_set1_epi32(lo)), _mm512_set1_epi32(hi))
}

/// The BatchNormalization of channels `o..o + 16` (lanes past `k` zero) on
/// the int8 values `x` (as i32): [`crate::kernels::generic::int8::batch_norm`]'s
/// arithmetic on 16 lanes. Returns the results as i32.
///
/// # Safety
/// AVX-512F/BW (inlined into functions that enable them); `w`'s weights,
/// bias, multiplier and shift hold the lanes of `k` from `o`.
#[inline(always)]
unsafe fn batch_norm16(x: __m512i, k: __mmask16, w: &Int8Weights<'_>, o: usize, p: &Int8Params) -> __m512i {
    // SAFETY: masked loads of the lanes the caller vouches for.
    unsafe {
        let wv = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(k, w.weights[o..].as_ptr()));
        let b = _mm512_maskz_loadu_epi32(k, w.bias[o..].as_ptr());
        let m = _mm512_maskz_loadu_epi32(k, w.multiplier[o..].as_ptr());
        let sh = _mm512_maskz_loadu_epi32(k, w.shift[o..].as_ptr());
        let acc = _mm512_add_epi32(_mm512_mullo_epi32(wv, _mm512_sub_epi32(x, _mm512_set1_epi32(p.in_zp))), b);
        requantize16(acc, m, sh, p)
    }
}

/// `out[i] = requantize(acc[i] - zc * sw[i] + bias[i], mult[i], shift[i])` for
/// the `out.len() <= 16` lanes (wrapping i32, as the plain kernel), then
/// `then`'s BatchNormalization on those values where the engine fused one
/// (the same arithmetic as [`batch_norm_in_place_avx512`]).
///
/// # Safety
/// AVX-512F/BW; `acc` and `sw` have 16 elements; `bias`, `mult`, `shift` (and
/// `then`'s weights, bias, multiplier, shift) at least `o + out.len()`.
///
/// Not itself a `target_feature` function, so it can be inlined always into
/// the kernels (which all enable AVX-512F/BW): called once per 16 outputs,
/// it cost conv1 a call and its spills every time (17 % of conv1's time).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn finish16(
    acc: &[i32; 16],
    sw: &[i32; 16],
    zc: i32,
    w: &Int8Weights<'_>,
    o: usize,
    p: &Int8Params,
    out: &mut [i8],
    then: Option<&ThenBatchNorm<'_>>,
) {
    let n = out.len();
    let k: __mmask16 = if n >= 16 { 0xFFFF } else { (1u16 << n) - 1 };
    // SAFETY: 16 readable lanes in `acc` and `sw`; masked loads read `n` lanes of
    // bias/multiplier/shift from `o` (the caller's contract); masked store of `n` bytes.
    unsafe {
        let d = _mm512_loadu_si512(acc.as_ptr().cast());
        let s = _mm512_loadu_si512(sw.as_ptr().cast());
        let b = _mm512_maskz_loadu_epi32(k, w.bias[o..].as_ptr());
        let m = _mm512_maskz_loadu_epi32(k, w.multiplier[o..].as_ptr());
        let sh = _mm512_maskz_loadu_epi32(k, w.shift[o..].as_ptr());
        let a = _mm512_add_epi32(_mm512_sub_epi32(d, _mm512_mullo_epi32(_mm512_set1_epi32(zc), s)), b);
        let mut r = requantize16(a, m, sh, p);
        if let Some(bn) = then {
            r = batch_norm16(r, k, &bn.w, o, &bn.p);
        }
        _mm512_mask_cvtepi32_storeu_epi8(out.as_mut_ptr().cast(), k, r);
    }
}

/// Where one register block reads: `np` pixels `xstep` bytes apart, `nc`
/// filters `wstep` bytes apart, `rows` kernel rows (`xrow`/`wrow` bytes apart)
/// of `len` contiguous bytes each.
#[derive(Clone, Copy)]
struct Block {
    x: *const i8,
    xstep: usize,
    xrow: usize,
    w: *const i8,
    wstep: usize,
    wrow: usize,
    rows: usize,
    len: usize,
}

/// `sum (x + 128) * w` (wrapping i32) for each of `P` pixels and `C` filters:
/// lane `p * NC + c` of the result. With `FLIP = false` the pixels' bytes are
/// taken as already offset (`u8`, see [`conv2d_vnni_patch_pixels`]).
///
/// # Safety
/// AVX-512F/BW/VNNI; every pointer `b.x + p*xstep + r*xrow` and
/// `b.w + c*wstep + r*wrow` must start `len` readable bytes for `p < P`,
/// `c < C`, `r < rows`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn dot_block<const P: usize, const C: usize, const FLIP: bool>(b: Block) -> [__m512i; 2] {
    let flip = if FLIP { _mm512_set1_epi8(i8::MIN) } else { _mm512_setzero_si512() };
    let mut acc = [[_mm512_setzero_si512(); C]; P];
    let full = b.len / 64;
    let tail = b.len % 64;
    let mask: __mmask64 = if tail == 0 { 0 } else { (1u64 << tail) - 1 };
    for r in 0..b.rows {
        // SAFETY (all loads below): in bounds by the function's contract; the
        // masked loads read only the `tail` bytes that are in the run.
        let xr = unsafe { b.x.add(r * b.xrow) };
        let wr = unsafe { b.w.add(r * b.wrow) };
        for i in 0..full {
            let off = i * 64;
            let mut xv = [_mm512_setzero_si512(); P];
            for p in 0..P {
                let v = unsafe { _mm512_loadu_si512(xr.add(p * b.xstep + off).cast()) };
                xv[p] = _mm512_xor_si512(v, flip);
            }
            for c in 0..C {
                // A hint, never a read: past a filter's end it names the next one's bytes.
                _mm_prefetch::<_MM_HINT_T0>(wr.wrapping_add(c * b.wstep + off + FILTER_PREFETCH).cast());
                let wv = unsafe { _mm512_loadu_si512(wr.add(c * b.wstep + off).cast()) };
                for p in 0..P {
                    acc[p][c] = _mm512_dpbusd_epi32(acc[p][c], xv[p], wv);
                }
            }
        }
        if tail != 0 {
            let off = full * 64;
            let mut xv = [_mm512_setzero_si512(); P];
            for p in 0..P {
                let v = unsafe { _mm512_maskz_loadu_epi8(mask, xr.add(p * b.xstep + off)) };
                // Masked-off bytes become 128 here, but their weights are 0.
                xv[p] = _mm512_xor_si512(v, flip);
            }
            for c in 0..C {
                let wv = unsafe { _mm512_maskz_loadu_epi8(mask, wr.add(c * b.wstep + off)) };
                for p in 0..P {
                    acc[p][c] = _mm512_dpbusd_epi32(acc[p][c], xv[p], wv);
                }
            }
        }
    }
    let mut all = [_mm512_setzero_si512(); 32];
    for p in 0..P {
        for c in 0..C {
            all[p * NC + c] = acc[p][c];
        }
    }
    let (lo, hi) = all.split_at(16);
    let hi = if P * NC > 16 { reduce16(hi.try_into().unwrap()) } else { _mm512_setzero_si512() };
    [reduce16(lo.try_into().unwrap()), hi]
}

/// Run [`dot_block`] for `np <= NP` pixels and `nc <= NC` filters, writing
/// `sums[p][j + c]`.
///
/// # Safety
/// As [`dot_block`] for `np` pixels and `nc` filters.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn dot_any<const FLIP: bool>(b: Block, np: usize, nc: usize, sums: &mut [[i32; OCB]; NP], j: usize) {
    macro_rules! go {
        ($p:literal, $($c:literal)*) => {
            match nc {
                // SAFETY: the caller's contract for `np` x `nc`.
                $($c => unsafe { dot_block::<$p, $c, FLIP>(b) },)*
                _ => unreachable!(),
            }
        };
    }
    let v = match np {
        1 => go!(1, 1 2 3 4),
        2 => go!(2, 1 2 3 4),
        3 => go!(3, 1 2 3 4),
        4 => go!(4, 1 2 3 4),
        5 => go!(5, 1 2 3 4),
        6 => go!(6, 1 2 3 4),
        _ => unreachable!(),
    };
    let mut lanes = [0i32; 32];
    // SAFETY: 128 writable bytes.
    unsafe {
        _mm512_storeu_si512(lanes.as_mut_ptr().cast(), v[0]);
        _mm512_storeu_si512(lanes[16..].as_mut_ptr().cast(), v[1]);
    }
    for q in 0..np {
        sums[q][j..j + nc].copy_from_slice(&lanes[q * NC..q * NC + nc]);
    }
}

/// Conv2D with the bytes of [`crate::kernels::generic::int8::conv2d`], using AVX-512 VNNI.
///
/// Runs [`conv2d_vnni_rows`] over the whole output (the module doc lists the
/// walkers it picks from); the requantization runs on 16 channels at once.
/// Kernels larger than `MAX_TAPS` taps with filters too large to gather go to
/// the AVX-512BW build of the portable kernel.
///
/// # Safety
/// The CPU must support AVX-512F, AVX-512BW and AVX-512VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn conv2d_vnni(g: &ConvGeom, p: &Int8Params, w: &Int8Weights<'_>, input: &[i8], output: &mut [i8]) {
    check_conv(g, w, input, output);
    if g.kernel() * g.kernel() > MAX_TAPS {
        // SAFETY: AVX-512F/BW are part of this function's contract.
        return unsafe { conv2d_avx512bw(g, p, w, input, output) };
    }
    // SAFETY: this function's contract.
    unsafe { conv2d_vnni_rows(g, p, w, input, output, 0) }
}

/// [`conv2d_vnni`] for the output rows `oy_first..` that `output` holds
/// (`output.len()` a multiple of `out_w * out_c`), so threads can share a layer:
/// [`conv2d_vnni_patch_pixels`] where [`patches_fit`], else
/// [`conv2d_vnni_clipped_rows`].
///
/// # Safety
/// As [`conv2d_vnni`].
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn conv2d_vnni_rows(
    g: &ConvGeom,
    p: &Int8Params,
    w: &Int8Weights<'_>,
    input: &[i8],
    output: &mut [i8],
    oy_first: usize,
) {
    // SAFETY (both): this function's contract.
    if patches_fit(g, p) {
        unsafe { conv2d_vnni_patch_pixels(g, p, w, None, input, output, oy_first * g.out_w, None) }
    } else {
        unsafe { conv2d_vnni_clipped_rows(g, p, w, input, output, oy_first) }
    }
}

/// The input and the weights of a conv whose output a caller may cut into
/// parts (the part's own length is the caller's to check).
fn check_conv_inputs(g: &ConvGeom, w: &Int8Weights<'_>, input: &[i8]) {
    assert!(input.len() == g.input_len() && w.weights.len() == g.weights_len(), "conv2d: lengths");
    assert!(w.bias.len() == g.out_c && w.multiplier.len() == g.out_c && w.shift.len() == g.out_c, "conv2d: channels");
}

/// Bytes of the stack buffer [`conv2d_vnni_patch_pixels`] gathers patches in
/// (a whole 27-pixel row of AlexNet's 5x5x96 conv2 fits, 2,432 bytes a patch).
const PATCH_BYTES: usize = 68 * 1024;

/// A patch's stride in the buffer: whole cache lines, so that the dot
/// kernel's 64-byte loads of a patch never straddle two.
fn patch_stride(filter: usize) -> usize {
    filter.next_multiple_of(64)
}

/// The patch buffer, on cache-line boundaries.
#[repr(C, align(64))]
struct PatchBuf([u8; PATCH_BYTES]);
/// Most output channels [`conv2d_vnni_patch_pixels`] tables whole-filter sums for.
const PATCH_MAX_OUT_C: usize = 1024;

/// Whether [`conv2d_vnni_patch_pixels`] can run this layer: a filter fits the
/// patch buffer, the channels fit its sum table, and the input zero point is
/// an int8 value (it fills the padding).
pub fn patches_fit(g: &ConvGeom, p: &Int8Params) -> bool {
    let filter = g.kernel() * g.kernel() * g.in_c;
    filter > 0 && patch_stride(filter) <= PATCH_BYTES && g.out_c <= PATCH_MAX_OUT_C && i8::try_from(p.in_zp).is_ok()
}

/// [`conv2d_vnni_rows`] through gathered patches, for the output pixels
/// `first_px..` (row-major) that `output` holds, so threads can share a layer
/// pixel by pixel (13 rows do not split evenly in two): each output pixel's whole
/// window is copied into one contiguous run of `k * k * in_c` bytes, already
/// offset by 128 (`u8`), with the padding taps set to the input zero point.
/// Every window is then full and contiguous, so the dot products run the
/// whole filter with one masked tail instead of one per kernel row (AlexNet's
/// conv1 has 33-byte kernel rows: half of every 64-byte load was masked off),
/// and the correction is one whole-filter weight sum per channel:
/// `(zp + 128) * w - (128 + zp) * w = 0` for a padding tap, exactly what the
/// plain kernel's skipped tap adds. The same bytes as the plain kernel;
/// with `then`, the bytes of that BatchNormalization run on them after.
/// `lent`: the layer's [`PatchFilters`], if the caller built them.
///
/// # Safety
/// As [`conv2d_vnni`]; and [`patches_fit`]`(g, p)` (asserted).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn conv2d_vnni_patch_pixels(
    g: &ConvGeom,
    p: &Int8Params,
    w: &Int8Weights<'_>,
    lent: Option<&PatchFilters<'_>>,
    input: &[i8],
    output: &mut [i8],
    first_px: usize,
    then: Option<&ThenBatchNorm<'_>>,
) {
    let total = output.len() / g.out_c.max(1);
    assert!(output.len().is_multiple_of(g.out_c) && first_px + total <= g.out_h * g.out_w, "conv2d: output pixels");
    check_conv_inputs(g, w, input);
    assert!(patches_fit(g, p), "conv2d: patches do not fit");
    if let Some(bn) = then {
        assert_eq!(check_bn(&bn.w, output.len()), g.out_c, "conv2d: the fused BatchNormalization's channels");
    }
    let (k, cin) = (g.kernel(), g.in_c);
    let filter = k * k * cin;
    let zc = 128 + p.in_zp;
    // The padding byte, offset like the pixels: zp + 128 as u8.
    let fill = (p.in_zp as i8 as u8) ^ 0x80;
    // The filters' sums and repacking: lent, built once per model, or
    // built here on the stack.
    let (sums_len, packed_len) = patch_filter_lens(g);
    let (mut own_sums, mut own_packed): ([i32; PATCH_MAX_OUT_C], [i8; PACK_BYTES]);
    let lent = match lent {
        Some(f) => {
            assert!(f.sums.len() == sums_len && f.packed.len() == packed_len, "conv2d: the lent patch filters");
            *f
        }
        None => {
            (own_sums, own_packed) = ([0; PATCH_MAX_OUT_C], [0; PACK_BYTES]);
            let (sums, packed) = (&mut own_sums[..sums_len], &mut own_packed[..packed_len]);
            build_patch_filters(g, w, sums, packed);
            PatchFilters { sums, packed }
        }
    };
    // Patches start on cache lines (4-byte aligned is all the broadcast
    // kernel needs); the bytes past a filter meet zero weights there and are
    // never read by the dot kernel.
    let stride = patch_stride(filter);
    let broadcast = !lent.packed.is_empty();
    // The pixels in gathers that fit the buffer (a gather may span rows:
    // output pixels are contiguous either way): for the dot-product kernel
    // a multiple of its 4-pixel blocks, so they are full; for the broadcast
    // kernel, which takes any count, as few equal ones as fit.
    let most = PATCH_BYTES / stride;
    let per =
        if broadcast || most < NP { total.div_ceil(total.div_ceil(most).max(1)) } else { (most / NP * NP).min(total) };
    let mut buf = PatchBuf([0u8; PATCH_BYTES]);
    let buf = &mut buf.0;
    let mut done = 0;
    while done < total {
        let n = per.min(total - done);
        for (q, patch) in buf[..n * stride].chunks_exact_mut(stride).enumerate() {
            let at = first_px + done + q;
            gather_patch(g, input, at / g.out_w, at % g.out_w, fill, &mut patch[..filter]);
        }
        let out = &mut output[done * g.out_c..(done + n) * g.out_c];
        if broadcast {
            // SAFETY: `n` patches of `stride` bytes in `buf`; `packed` as
            // `pack_for_broadcast` laid it out; CPU features: this function's contract.
            unsafe { broadcast_patches(g, p, w, &buf[..n * stride], stride, &lent, out, then) };
            done += n;
            continue;
        }
        // Register blocks of at most NP pixels, as equal as possible (a lone
        // last pixel would load four filters for one dot product).
        let blocks = n.div_ceil(NP);
        let mut oc0 = 0;
        while oc0 < g.out_c {
            let nb = OCB.min(g.out_c - oc0);
            for b in 0..blocks {
                let (px, px_end) = (n * b / blocks, n * (b + 1) / blocks);
                let np = px_end - px;
                let mut acc = [[0i32; OCB]; NP];
                let mut j = 0;
                while j < nb {
                    let nc = NC.min(nb - j);
                    let blk = Block {
                        x: buf[px * stride..].as_ptr().cast(),
                        xstep: stride,
                        xrow: 0,
                        w: w.weights[(oc0 + j) * filter..].as_ptr(),
                        wstep: filter,
                        wrow: 0,
                        rows: 1,
                        len: filter,
                    };
                    // SAFETY: patches px..px+np start `stride` bytes apart in `buf`
                    // with `filter` bytes each (n * stride <= PATCH_BYTES); filters oc0+j..+nc are `filter`
                    // bytes each in the weights. CPU features: this function's contract.
                    unsafe { dot_any::<false>(blk, np, nc, &mut acc, j) };
                    j += nc;
                }
                for q in 0..np {
                    let out = &mut out[(px + q) * g.out_c + oc0..][..nb];
                    let mut h = 0;
                    while h < nb {
                        let m = 16.min(nb - h);
                        // SAFETY: 16-element views (the sum table's lanes past
                        // `m` meet masked-off outputs); bias/multiplier/shift have
                        // out_c elements, `m` of them from oc0 + h; AVX-512F/BW: contract.
                        unsafe {
                            finish16(
                                acc[q][h..h + 16].try_into().unwrap(),
                                sum_lanes(lent.sums, oc0 + h),
                                zc,
                                w,
                                oc0 + h,
                                p,
                                &mut out[h..h + m],
                                then,
                            )
                        };
                        h += m;
                    }
                }
            }
            oc0 += nb;
        }
        done += n;
    }
}

/// The 16 whole-filter sums from channel `o` (a multiple of 16 below the
/// layer's channels, so inside the table), read in place: copying the
/// channels a run has into a zeroed array was a `memcpy` call per 16
/// outputs (`int8_kernels`, one thread: conv1 0.727 -> 0.696 ms, conv 2-5
/// 1 %). Lanes past the layer's channels hold
/// zeros or nothing of use, and meet outputs the store masks off.
#[inline(always)]
fn sum_lanes(sums: &[i32], o: usize) -> &[i32; 16] {
    sums[o..o + 16].try_into().expect("sum_lanes: 16 lanes")
}

/// The byte sums (wrapping i32) of `sums.len()` runs of `len` bytes, run
/// `j` at `j * stride` in `bytes`: whole filters for
/// [`conv2d_vnni_patch_pixels`] (its correction term, summed by every thread
/// on every call), one tap of each filter for [`conv2d_vnni_clipped_rows`].
/// 16 runs at a time, 64 bytes a `vpdpbusd` against ones, one reduction per
/// 16: widening 16 bytes an instruction pair took 4 % of the convs' time
/// (`perf`, `int8_profile`).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn run_sums(bytes: &[i8], stride: usize, len: usize, sums: &mut [i32]) {
    assert!(sums.is_empty() || bytes.len() >= (sums.len() - 1) * stride + len, "run_sums: too few bytes");
    let ones = _mm512_set1_epi8(1);
    let (full, tail) = (len / 64, len % 64);
    let mask: __mmask64 = if tail == 0 { 0 } else { (1u64 << tail) - 1 };
    for (o0, out) in (0..sums.len()).step_by(16).zip(sums.chunks_mut(16)) {
        let mut acc = [_mm512_setzero_si512(); 16];
        for (j, a) in acc[..out.len()].iter_mut().enumerate() {
            let f = &bytes[(o0 + j) * stride..][..len];
            for i in 0..full {
                // SAFETY: bytes 64 i .. 64 (i + 1) of the run's `len`.
                let v = unsafe { _mm512_loadu_si512(f.as_ptr().add(64 * i).cast()) };
                *a = _mm512_dpbusd_epi32(*a, ones, v);
            }
            if tail != 0 {
                // SAFETY: the masked load reads only the `tail` bytes left.
                let v = unsafe { _mm512_maskz_loadu_epi8(mask, f.as_ptr().add(64 * full)) };
                *a = _mm512_dpbusd_epi32(*a, ones, v);
            }
        }
        let mut lanes = [0i32; 16];
        // SAFETY: 64 writable bytes.
        unsafe { _mm512_storeu_si512(lanes.as_mut_ptr().cast(), reduce16(acc)) };
        out.copy_from_slice(&lanes[..out.len()]);
    }
}

/// Bytes of the stack buffer the broadcast kernel's repacked weights live in
/// when no [`PatchFilters`] are lent (AlexNet's conv1: 364 x 96 = 35 KB).
const PACK_BYTES: usize = 64 * 1024;
/// Pixels of one broadcast register block.
const BP: usize = 8;
/// 16-channel vectors of one broadcast register block (`BP * BV` = 24 accumulators).
const BV: usize = 3;

/// What [`conv2d_vnni_patch_pixels`] reads besides the filters as stored.
/// Built once per model ([`build_patch_filters`]) and lent by the host, so
/// that no call sums or repacks the filters (every call did: 7 % of the
/// convs' time, `perf` on `int8_profile`); without them a call builds its
/// own on the stack.
#[derive(Clone, Copy, Debug)]
pub struct PatchFilters<'a> {
    /// Each filter's byte sum (wrapping; the correction for the offset
    /// pixels), `out_c` rounded up to 16 with zeros past: the output stage
    /// reads 16 at a time.
    pub sums: &'a [i32],
    /// The filters as `pack_for_broadcast` lays them out for the broadcast
    /// kernel; empty where they would not fit its 64 KB (the dot-product
    /// kernel reads the filters as stored).
    pub packed: &'a [i8],
}

/// The lengths of a layer's [`PatchFilters`]: sums, packed bytes.
pub fn patch_filter_lens(g: &ConvGeom) -> (usize, usize) {
    let filter = g.kernel() * g.kernel() * g.in_c;
    let ocp = g.out_c.next_multiple_of(16);
    let packed = filter.div_ceil(4) * ocp * 4;
    (ocp, if packed <= PACK_BYTES { packed } else { 0 })
}

/// Build a layer's [`PatchFilters`] in `sums` and `packed`, of
/// [`patch_filter_lens`] (asserted).
///
/// # Safety
/// The CPU must support AVX-512F/BW/VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub fn build_patch_filters(g: &ConvGeom, w: &Int8Weights<'_>, sums: &mut [i32], packed: &mut [i8]) {
    assert_eq!((sums.len(), packed.len()), patch_filter_lens(g), "conv2d: the patch filters' lengths");
    assert_eq!(w.weights.len(), g.weights_len(), "conv2d: lengths");
    let filter = g.kernel() * g.kernel() * g.in_c;
    sums.fill(0);
    run_sums(w.weights, filter, filter, &mut sums[..g.out_c]);
    if !packed.is_empty() {
        pack_for_broadcast(g, w, packed);
    }
}

/// Repack the filters for [`broadcast_patches`] into `packed`
/// ([`patch_filter_lens`]'s bytes): `[k / 4][out_c rounded up to 16][4]`,
/// zeros past the filter and the channels, so one 64-byte load holds 4 taps
/// of 16 channels.
fn pack_for_broadcast(g: &ConvGeom, w: &Int8Weights<'_>, packed: &mut [i8]) {
    let filter = g.kernel() * g.kernel() * g.in_c;
    let ocp = g.out_c.next_multiple_of(16);
    packed.fill(0);
    // Whole groups of 4 taps move as one 4-byte word (a byte at a time this
    // was ~35,000 scattered stores per call for conv1, on every thread).
    for (o, f) in w.weights.chunks_exact(filter).enumerate() {
        let mut groups = f.chunks_exact(4);
        for (t4, taps) in groups.by_ref().enumerate() {
            packed[(t4 * ocp + o) * 4..][..4].copy_from_slice(taps);
        }
        // A short last group: its missing taps stay zero. (None when the
        // filter is whole groups: then its index may lie past `packed`.)
        let rest = groups.remainder();
        if !rest.is_empty() {
            packed[(filter / 4 * ocp + o) * 4..][..rest.len()].copy_from_slice(rest);
        }
    }
}

/// `acc[p][v]` = for pixel `p`, channels `16 v ..`: the sums over the
/// `k4` groups of 4 patch bytes (broadcast to every lane) times the packed
/// weights of those 4 taps (`wstep` bytes per group).
///
/// # Safety
/// AVX-512F/BW/VNNI; `x + p * xstep` starts `4 * k4` readable bytes for
/// `p < P`, and `w + t * wstep` starts `64 * V` readable bytes for `t < k4`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn broadcast_block<const P: usize, const V: usize>(
    x: *const u8,
    xstep: usize,
    w: *const i8,
    wstep: usize,
    k4: usize,
    acc_out: &mut [[[i32; 16]; BV]; BP],
) {
    let mut acc = [[_mm512_setzero_si512(); V]; P];
    for t in 0..k4 {
        let mut wv = [_mm512_setzero_si512(); V];
        for v in 0..V {
            // SAFETY: the function's contract.
            wv[v] = unsafe { _mm512_loadu_si512(w.add(t * wstep + 64 * v).cast()) };
        }
        for p in 0..P {
            // SAFETY: the function's contract (4 bytes at x + p*xstep + 4t).
            let xb = _mm512_set1_epi32(unsafe { x.add(p * xstep + 4 * t).cast::<i32>().read_unaligned() });
            for v in 0..V {
                acc[p][v] = _mm512_dpbusd_epi32(acc[p][v], xb, wv[v]);
            }
        }
    }
    for p in 0..P {
        for v in 0..V {
            // SAFETY: 64 writable bytes.
            unsafe { _mm512_storeu_si512(acc_out[p][v].as_mut_ptr().cast(), acc[p][v]) };
        }
    }
}

/// The output of `patches.len() / stride` gathered patches (offset bytes, see
/// [`conv2d_vnni_patch_pixels`]) through the repacked filters: channels across
/// the lanes, 4 patch bytes broadcast per `vpdpbusd`, so the sums need no
/// horizontal reduction (what costs the dot-product kernel most on short
/// filters like conv1's 363 bytes).
///
/// # Safety
/// AVX-512F/BW/VNNI; `lent.packed` laid out by [`pack_for_broadcast`] for
/// `g`; `stride` a multiple of 4 at least the filter length; `out` holds the
/// patches' output pixels.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn broadcast_patches(
    g: &ConvGeom,
    p: &Int8Params,
    w: &Int8Weights<'_>,
    patches: &[u8],
    stride: usize,
    lent: &PatchFilters<'_>,
    out: &mut [i8],
    then: Option<&ThenBatchNorm<'_>>,
) {
    let n = patches.len() / stride;
    let ocp = g.out_c.next_multiple_of(16);
    let k4 = (g.kernel() * g.kernel() * g.in_c).div_ceil(4);
    let (packed, sums) = (lent.packed, lent.sums);
    assert!(k4 * 4 <= stride && k4 * ocp * 4 <= packed.len() && out.len() == n * g.out_c, "conv2d: broadcast layout");
    let zc = 128 + p.in_zp;
    let blocks = n.div_ceil(BP);
    let mut acc = [[[0i32; 16]; BV]; BP];
    let mut oc0 = 0;
    while oc0 < g.out_c {
        let nv = (g.out_c - oc0).div_ceil(16).min(BV);
        for b in 0..blocks {
            let (px, px_end) = (n * b / blocks, n * (b + 1) / blocks);
            let np = px_end - px;
            let (x, wp) = (patches[px * stride..].as_ptr(), packed[oc0 * 4..].as_ptr());
            macro_rules! go {
                ($($p:literal)*) => {
                    match (np, nv) {
                        // SAFETY: patches px..px+np hold 4*k4 bytes each; channel
                        // vectors oc0/16.. < ocp/16 of every packed group; contract.
                        $(($p, 1) => unsafe { broadcast_block::<$p, 1>(x, stride, wp, ocp * 4, k4, &mut acc) },
                          ($p, 2) => unsafe { broadcast_block::<$p, 2>(x, stride, wp, ocp * 4, k4, &mut acc) },
                          ($p, 3) => unsafe { broadcast_block::<$p, 3>(x, stride, wp, ocp * 4, k4, &mut acc) },)*
                        _ => unreachable!(),
                    }
                };
            }
            go!(1 2 3 4 5 6 7 8);
            for q in 0..np {
                for v in 0..nv {
                    let oc = oc0 + 16 * v;
                    let m = 16.min(g.out_c - oc);
                    let o = &mut out[(px + q) * g.out_c + oc..][..m];
                    // SAFETY: 16-lane views (the sum table's lanes past `m` meet
                    // masked-off outputs); bias/multiplier/shift have out_c
                    // elements, `m` of them from `oc`; AVX-512F/BW: contract.
                    unsafe { finish16(&acc[q][v], sum_lanes(sums, oc), zc, w, oc, p, o, then) };
                }
            }
        }
        oc0 += 16 * nv;
    }
}

/// Copy output pixel `(oy, ox)`'s window into `patch` (`k * k * in_c` bytes,
/// kernel-row-major like the OHWI filters), each byte offset by 128, the
/// taps outside the image set to `fill`.
#[target_feature(enable = "avx512f,avx512bw")]
fn gather_patch(g: &ConvGeom, input: &[i8], oy: usize, ox: usize, fill: u8, patch: &mut [u8]) {
    let (k, cin) = (g.kernel(), g.in_c);
    let (ky0, ky1, iy0) = g.taps(oy, g.pad_top, g.in_h);
    let (kx0, kx1, ix0) = g.taps(ox, g.pad_left, g.in_w);
    for (ky, row) in patch.chunks_exact_mut(k * cin).enumerate() {
        if ky < ky0 || ky >= ky1 {
            row.fill(fill);
            continue;
        }
        // Only at the image edge: an empty fill is still a call to memset,
        // 7 % of conv1's time for its 66,550 window rows.
        if kx0 > 0 {
            row[..kx0 * cin].fill(fill);
        }
        if kx1 < k {
            row[kx1 * cin..].fill(fill);
        }
        let src = &input[((iy0 + ky - ky0) * g.in_w + ix0) * cin..][..(kx1 - kx0) * cin];
        offset_copy(src, &mut row[kx0 * cin..kx1 * cin]);
    }
}

/// `dst[i] = src[i] + 128` as `u8`, 64 bytes per masked vector (conv1's
/// 33-byte kernel rows were a byte loop).
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
fn offset_copy(src: &[i8], dst: &mut [u8]) {
    assert_eq!(src.len(), dst.len(), "offset_copy: lengths");
    let flip = _mm512_set1_epi8(i8::MIN);
    for (s, d) in src.chunks(64).zip(dst.chunks_mut(64)) {
        let mask: __mmask64 = if s.len() == 64 { u64::MAX } else { (1u64 << s.len()) - 1 };
        // SAFETY: masked load and store of the `s.len()` bytes both chunks have.
        unsafe {
            let v = _mm512_maskz_loadu_epi8(mask, s.as_ptr());
            _mm512_mask_storeu_epi8(d.as_mut_ptr().cast(), mask, _mm512_xor_si512(v, flip));
        }
    }
}

/// [`conv2d_vnni_rows`] walking each output row as runs of pixels whose
/// windows the image edge clips alike, kernel row by kernel row, with the
/// correction summed over each run's in-image taps.
///
/// # Safety
/// As [`conv2d_vnni`].
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn conv2d_vnni_clipped_rows(
    g: &ConvGeom,
    p: &Int8Params,
    w: &Int8Weights<'_>,
    input: &[i8],
    output: &mut [i8],
    oy_first: usize,
) {
    let row_len = g.out_w * g.out_c;
    let oy_end = oy_first + output.len() / row_len;
    assert!(output.len().is_multiple_of(row_len) && oy_end <= g.out_h, "conv2d: output rows");
    check_conv_inputs(g, w, input);
    let k = g.kernel();
    assert!(k * k <= MAX_TAPS, "conv2d: kernel too large for the VNNI tables");
    let cin = g.in_c;
    let filter = k * k * cin;
    // x + 128 - (128 + in_zp) = x - in_zp.
    let zc = 128 + p.in_zp;
    // Per-tap weight sums, tap-major so that a window's sums add 32 filters at once.
    let mut taps = [[0i32; OCB]; MAX_TAPS];
    let mut oc0 = 0;
    while oc0 < g.out_c {
        let nb = OCB.min(g.out_c - oc0);
        for (t, row) in taps[..k * k].iter_mut().enumerate() {
            run_sums(&w.weights[oc0 * filter + t * cin..], filter, cin, &mut row[..nb]);
        }
        for oy in oy_first..oy_end {
            let (ky0, ky1, iy0) = g.taps(oy, g.pad_top, g.in_h);
            let mut ox = 0;
            while ox < g.out_w {
                let (kx0, kx1, ix0) = g.taps(ox, g.pad_left, g.in_w);
                let mut end = ox + 1;
                while end < g.out_w {
                    let (a, b, _) = g.taps(end, g.pad_left, g.in_w);
                    if (a, b) != (kx0, kx1) {
                        break;
                    }
                    end += 1;
                }
                // Weight sums over this window, per filter of the block.
                let mut sw = [0i32; OCB];
                for ky in ky0..ky1 {
                    for row in &taps[ky * k + kx0..ky * k + kx1] {
                        for (s, &t) in sw.iter_mut().zip(row) {
                            *s = s.wrapping_add(t);
                        }
                    }
                }
                let len = (kx1 - kx0) * cin;
                let rows = ky1 - ky0;
                let xstep = g.stride() * cin;
                let x_first = (iy0 * g.in_w + ix0) * cin;
                let mut px = ox;
                while px < end {
                    let np = NP.min(end - px);
                    let x_off = x_first + (px - ox) * xstep;
                    let mut sums = [[0i32; OCB]; NP];
                    let mut j = 0;
                    while j < nb && len > 0 && rows > 0 {
                        let nc = NC.min(nb - j);
                        let oc = oc0 + j;
                        let blk = Block {
                            x: input[x_off..].as_ptr(),
                            xstep,
                            xrow: g.in_w * cin,
                            w: w.weights[oc * filter + (ky0 * k + kx0) * cin..].as_ptr(),
                            wstep: filter,
                            wrow: k * cin,
                            rows,
                            len,
                        };
                        // SAFETY: pixel `px + q` (q < np) has this same window, so its
                        // kernel row r starts at input[x_off + q*xstep + r*in_w*cin] with
                        // `len` in-image bytes; filter `oc + c` row r starts at weight
                        // (oc+c)*filter + ((ky0+r)*k + kx0)*cin with `len` bytes of the
                        // same kernel row. AVX-512F/BW/VNNI: this function's contract.
                        unsafe { dot_any::<true>(blk, np, nc, &mut sums, j) };
                        j += nc;
                    }
                    for q in 0..np {
                        let out = &mut output[((oy - oy_first) * g.out_w + px + q) * g.out_c + oc0..][..nb];
                        let mut h = 0;
                        while h < nb {
                            let n = 16.min(nb - h);
                            let (a, s) = (&sums[q][h..h + 16], &sw[h..h + 16]);
                            // SAFETY: 16-element views; bias/multiplier/shift have out_c
                            // elements, so `n` from oc0 + h; AVX-512F/BW: contract.
                            unsafe {
                                finish16(
                                    a.try_into().unwrap(),
                                    s.try_into().unwrap(),
                                    zc,
                                    w,
                                    oc0 + h,
                                    p,
                                    &mut out[h..h + n],
                                    None,
                                )
                            };
                            h += n;
                        }
                    }
                    px += np;
                }
                ox = end;
            }
        }
        oc0 += nb;
    }
}

/// BatchNormalization in place with the bytes of
/// [`crate::kernels::generic::int8::batch_norm_in_place`]: 16 channels at a time.
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512BW.
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn batch_norm_in_place_avx512(p: &Int8Params, w: &Int8Weights<'_>, data: &mut [i8]) {
    let c = check_bn(w, data.len());
    if batch_norm_tables(data.len() / c, c) {
        // SAFETY: this function's contract.
        return unsafe { batch_norm_by_table(p, w, data) };
    }
    for px in data.chunks_exact_mut(c) {
        let mut h = 0;
        while h < c {
            let n = 16.min(c - h);
            let k: __mmask16 = if n >= 16 { 0xFFFF } else { (1u16 << n) - 1 };
            // SAFETY: masked loads/stores touch `n` elements from `h`, all in
            // bounds (`check_bn`); AVX-512F/BW: this function's contract.
            unsafe {
                let x = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(k, px[h..].as_ptr()));
                let r = batch_norm16(x, k, w, h, p);
                _mm512_mask_cvtepi32_storeu_epi8(px[h..].as_mut_ptr().cast(), k, r);
            }
            h += n;
        }
    }
}

/// Most channels [`batch_norm_by_table`] tables (256 bytes each, on the stack).
const BN_TABLE_CHANNELS: usize = 256;

/// Whether [`batch_norm_in_place_avx512`] tables each channel's 256 results
/// for a tensor of `pixels` x `channels`: more pixels than table entries per
/// channel, and few enough channels for the stack. Where it does, that pass
/// costs less than requantizing every value again in a conv's output stage,
/// so the engine keeps the two layers apart.
pub fn batch_norm_tables(pixels: usize, channels: usize) -> bool {
    channels <= BN_TABLE_CHANNELS && pixels > 256
}

/// [`batch_norm_in_place_avx512`] for tensors of more than 256 pixels: each
/// channel maps an int8 to an int8, so its 256 results are computed once
/// (16 input values per vector, the same arithmetic) and every pixel looks
/// its bytes up. AlexNet's first BatchNormalization has 3025 pixels of 96
/// channels: 12x fewer requantizations.
///
/// # Safety
/// AVX-512F/BW; `w` checked for `data` by the caller, at most
/// [`BN_TABLE_CHANNELS`] channels.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn batch_norm_by_table(p: &Int8Params, w: &Int8Weights<'_>, data: &mut [i8]) {
    let c = w.weights.len();
    assert!(c <= BN_TABLE_CHANNELS, "batch_norm: too many channels for the table");
    let mut table = [0i8; BN_TABLE_CHANNELS * 256];
    let zp = _mm512_set1_epi32(p.in_zp);
    for (ch, t) in table.chunks_exact_mut(256).take(c).enumerate() {
        let wv = _mm512_set1_epi32(w.weights[ch] as i32);
        let (b, m, sh) =
            (_mm512_set1_epi32(w.bias[ch]), _mm512_set1_epi32(w.multiplier[ch]), _mm512_set1_epi32(w.shift[ch]));
        for (i, out) in t.chunks_exact_mut(16).enumerate() {
            // Lane l: the int8 value whose bit pattern is 16 i + l.
            let x = _mm512_add_epi32(
                _mm512_set1_epi32((16 * i) as i32),
                _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
            );
            let x = _mm512_srai_epi32::<24>(_mm512_slli_epi32::<24>(x));
            let acc = _mm512_add_epi32(_mm512_mullo_epi32(wv, _mm512_sub_epi32(x, zp)), b);
            let r = requantize16(acc, m, sh, p);
            // SAFETY: 16 writable bytes.
            unsafe { _mm512_mask_cvtepi32_storeu_epi8(out.as_mut_ptr().cast(), 0xFFFF, r) };
        }
    }
    for px in data.chunks_exact_mut(c) {
        for (ch, v) in px.iter_mut().enumerate() {
            *v = table[ch * 256 + *v as u8 as usize];
        }
    }
}

/// Units of one dense register block.
const NU: usize = 8;

/// `(sum (x + 128) * w, sum w)` for `U` weight rows `n` bytes apart.
///
/// # Safety
/// AVX-512F/BW/VNNI; `x` has `n` bytes and `w + u*n` starts `n` bytes for `u < U`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn dense_block<const U: usize>(x: *const i8, w: *const i8, n: usize) -> [(i32, i32); U] {
    let flip = _mm512_set1_epi8(i8::MIN);
    let ones = _mm512_set1_epi8(1);
    let mut d = [_mm512_setzero_si512(); U];
    let mut s = [_mm512_setzero_si512(); U];
    let full = n / 64;
    let tail = n % 64;
    for i in 0..full {
        let off = i * 64;
        // SAFETY: `off + 64 <= n` for both x and every row.
        let xv = _mm512_xor_si512(unsafe { _mm512_loadu_si512(x.add(off).cast()) }, flip);
        for u in 0..U {
            let wv = unsafe { _mm512_loadu_si512(w.add(u * n + off).cast()) };
            d[u] = _mm512_dpbusd_epi32(d[u], xv, wv);
            s[u] = _mm512_dpbusd_epi32(s[u], ones, wv);
        }
    }
    if tail != 0 {
        let off = full * 64;
        let mask: __mmask64 = (1u64 << tail) - 1;
        // SAFETY: masked loads read only the `tail` bytes left in x and each row.
        let xv = _mm512_xor_si512(unsafe { _mm512_maskz_loadu_epi8(mask, x.add(off)) }, flip);
        for u in 0..U {
            let wv = unsafe { _mm512_maskz_loadu_epi8(mask, w.add(u * n + off)) };
            d[u] = _mm512_dpbusd_epi32(d[u], xv, wv);
            s[u] = _mm512_dpbusd_epi32(s[u], ones, wv);
        }
    }
    let mut out = [(0, 0); U];
    for u in 0..U {
        out[u] = (_mm512_reduce_add_epi32(d[u]), _mm512_reduce_add_epi32(s[u]));
    }
    out
}

/// Dense with the bytes of [`crate::kernels::generic::int8::dense`], using AVX-512 VNNI.
///
/// # Safety
/// The CPU must support AVX-512F, AVX-512BW and AVX-512VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn dense_vnni(p: &Int8Params, w: &Int8Weights<'_>, input: &[i8], output: &mut [i8]) {
    check_dense(w, input, output);
    // SAFETY: this function's contract.
    unsafe { dense_vnni_units(p, w, input, output, 0) }
}

/// [`dense_vnni`] for the units `first..first + output.len()` of a layer
/// with `w.bias.len()` units (so threads can share a layer).
///
/// # Safety
/// As [`dense_vnni`].
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn dense_vnni_units(p: &Int8Params, w: &Int8Weights<'_>, input: &[i8], output: &mut [i8], first: usize) {
    let n = input.len();
    let units = w.bias.len();
    assert!(w.weights.len() == n * units, "dense: weight length");
    assert!(w.multiplier.len() == units && w.shift.len() == units, "dense: units");
    assert!(first + output.len() <= units, "dense: unit range");
    let zc = 128 + p.in_zp;
    let mut u = 0;
    while u < output.len() {
        let nu = NU.min(output.len() - u);
        let row = (first + u) * n;
        let mut r = [(0i32, 0i32); NU];
        // SAFETY: rows first+u .. first+u+nu exist (checked above), each `n` bytes;
        // AVX-512F/BW/VNNI: this function's contract.
        let (x, wp) = (input.as_ptr(), w.weights[row..].as_ptr());
        if nu == NU {
            r = unsafe { dense_block::<NU>(x, wp, n) };
        } else {
            for q in 0..nu {
                r[q] = unsafe { dense_block::<1>(x, wp.add(q * n), n) }[0];
            }
        }
        for q in 0..nu {
            let o = first + u + q;
            let (d, s) = r[q];
            let acc = d.wrapping_sub(zc.wrapping_mul(s)).wrapping_add(w.bias[o]);
            output[u + q] = requantize(acc, w.multiplier[o], w.shift[o], p);
        }
        u += nu;
    }
}

/// Units per pass of [`dense_vnni_input_major_units`]: its accumulators
/// (two `i32` per unit, 16 KB) stay in L1 while the live rows stream by.
const IM_CHUNK: usize = 2048;

/// [`dense_vnni_units`] over weights laid out input-major (`wt[j * units + u]`,
/// the transpose of `w.weights`), reading only the rows of live inputs (`x !=
/// in_zp`): a dead input adds `(x - in_zp) * w = 0` to every unit, so after a
/// ReLU (zero point at the bottom of the range) about half of the layer's
/// weights need not be streamed. The same integer sums, so the same bytes.
///
/// Live inputs go in fours: each unit's four weights are interleaved into
/// one 32-bit group by byte and word unpacks (lane order `16 (i / 4) + 4 k +
/// i % 4` for register `k`, lane `i`, undone when the units are written) and
/// meet the four inputs, broadcast, in one `vpdpbusd`. A last group of fewer
/// than four is padded with a dead input, which adds nothing.
///
/// # Safety
/// The CPU must support AVX-512F, AVX-512BW and AVX-512VNNI; `p.in_zp` must
/// fit an i8.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub unsafe fn dense_vnni_input_major_units(
    p: &Int8Params,
    w: &Int8Weights<'_>,
    wt: &[i8],
    input: &[i8],
    output: &mut [i8],
    first: usize,
) {
    let (units, zp) = live::check_input_major(p, w, wt, input, output.len(), first);
    let zc = 128 + p.in_zp;
    let dead = _mm512_set1_epi8(zp);
    let ones = _mm512_set1_epi8(1);
    let mut c0 = 0;
    while c0 < output.len() {
        let cn = IM_CHUNK.min(output.len() - c0);
        let blocks = cn.div_ceil(64);
        let u0 = first + c0;
        // Per 64-unit block: 4 registers of sums `(x + 128) * w`, 4 of `w`.
        let mut d = [[_mm512_setzero_si512(); 4]; IM_CHUNK / 64];
        let mut s = [[_mm512_setzero_si512(); 4]; IM_CHUNK / 64];
        // Fold one quad of live inputs (`bytes`: their `x + 128`) into every
        // block, asking for the rows of the quad `ahead` meanwhile: live rows
        // are runs of `cn` bytes with gaps, which the hardware prefetcher
        // does not follow.
        let mut fold = |quad: &[usize; 4], bytes: u32, ahead: Option<&[usize]>| {
            let xq = _mm512_set1_epi32(bytes as i32);
            for b in 0..blocks {
                let off = u0 + b * 64;
                let left = cn - b * 64;
                let mask: __mmask64 = if left >= 64 { u64::MAX } else { (1u64 << left) - 1 };
                if let Some(next) = ahead {
                    for &j in next {
                        // SAFETY: inside row `j` (a hint; it never faults).
                        _mm_prefetch::<_MM_HINT_T0>(unsafe { wt.as_ptr().add(j * units + off) }.cast());
                    }
                }
                // SAFETY: row `quad[r]` has `units` bytes from `quad[r] * units`;
                // the masked loads read the block's `min(64, left)` of them.
                let row = |r: usize| unsafe { _mm512_maskz_loadu_epi8(mask, wt.as_ptr().add(quad[r] * units + off)) };
                let (r0, r1, r2, r3) = (row(0), row(1), row(2), row(3));
                let (lo01, hi01) = (_mm512_unpacklo_epi8(r0, r1), _mm512_unpackhi_epi8(r0, r1));
                let (lo23, hi23) = (_mm512_unpacklo_epi8(r2, r3), _mm512_unpackhi_epi8(r2, r3));
                let q = [
                    _mm512_unpacklo_epi16(lo01, lo23),
                    _mm512_unpackhi_epi16(lo01, lo23),
                    _mm512_unpacklo_epi16(hi01, hi23),
                    _mm512_unpackhi_epi16(hi01, hi23),
                ];
                for k in 0..4 {
                    d[b][k] = _mm512_dpbusd_epi32(d[b][k], xq, q[k]);
                    s[b][k] = _mm512_dpbusd_epi32(s[b][k], ones, q[k]);
                }
            }
        };
        let u8_of = |j: usize| (input[j] as u8 ^ 0x80) as u32;
        let live_bits = |_: usize, block: &[i8]| {
            let mask: __mmask64 = if block.len() == 64 { u64::MAX } else { (1u64 << block.len()) - 1 };
            // SAFETY: the masked load reads the block's `len() <= 64` bytes.
            let x = unsafe { _mm512_maskz_loadu_epi8(mask, block.as_ptr()) };
            _mm512_mask_cmpneq_epi8_mask(mask, x, dead)
        };
        live::for_each_live_quad(input, live_bits, |quad, real, ahead| {
            // A padded input sits at the dead value, `x + 128 = zc`.
            let bytes = (0..4).fold(0u32, |a, r| a | if r < real { u8_of(quad[r]) } else { zc as u32 } << (8 * r));
            fold(quad, bytes, ahead);
        });
        for b in 0..blocks {
            let (mut dv, mut sv) = ([0i32; 64], [0i32; 64]);
            for k in 0..4 {
                // SAFETY: 16 i32 each into 64-value arrays at 16 k.
                unsafe {
                    _mm512_storeu_si512(dv.as_mut_ptr().add(16 * k).cast(), d[b][k]);
                    _mm512_storeu_si512(sv.as_mut_ptr().add(16 * k).cast(), s[b][k]);
                }
            }
            for slot in 0..64 {
                let (k, i) = (slot / 16, slot % 16);
                let unit = b * 64 + 16 * (i / 4) + 4 * k + i % 4;
                if unit >= cn {
                    continue;
                }
                let o = u0 + unit;
                let acc = dv[slot].wrapping_sub(zc.wrapping_mul(sv[slot])).wrapping_add(w.bias[o]);
                output[c0 + unit] = requantize(acc, w.multiplier[o], w.shift[o], p);
            }
        }
        c0 += cn;
    }
}

/// int8 MaxPool2D with the bytes of [`crate::kernels::generic::int8::max_pool`], 64 channels
/// per vector (`max` of integers is exact in any order).
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512BW.
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn max_pool_avx512(g: &crate::geometry::PoolGeom, input: &[i8], output: &mut [i8]) {
    let c = g.channels;
    for_each_window(g, input, output, |window, out| {
        let mut ch = 0;
        while ch < c {
            let m = 64.min(c - ch);
            let mask: __mmask64 = if m == 64 { u64::MAX } else { (1u64 << m) - 1 };
            let mut best = _mm512_set1_epi8(i8::MIN);
            window.for_each_pixel(|at| {
                // SAFETY: `m` bytes from `input[at + ch..]` (a pixel's channels); masked load.
                let v = unsafe { _mm512_maskz_loadu_epi8(mask, input.as_ptr().add(at + ch)) };
                best = _mm512_max_epi8(best, v);
            });
            // SAFETY: `m` bytes writable at `out[ch..]`; masked store.
            unsafe { _mm512_mask_storeu_epi8(out.as_mut_ptr().add(ch), mask, best) };
            ch += m;
        }
    });
}
