//! Exact integer Winograd F(2x2, 3x3) for int8 3x3 stride-1 Conv2D on AVX2
//! cores without VNNI (AMD Zen 3 here), where the only exact multiply-add
//! is `vpmaddwd` on i16 pairs: it does the layer's sums with 16 products
//! per 2x2 output tile and input channel instead of 36 (1.9x fewer on a
//! 13x13 image, whose last tile row and column are half outside).
//!
//! Exact, not approximate: with Lavin's F(2, 3) matrices scaled to integers
//! (`G' = 2G`), `4 Y = A^T [(G' g G'^T) . (B^T d B)] A` holds in integers.
//! - `d` is a 4x4 input tile minus the zero point (|d| <= 255, 0 outside the
//!   image: the plain kernel's skipped tap); `B^T d B` adds four of them with
//!   signs, so |V| <= 1020.
//! - `G' g G'^T` adds at most nine weights with coefficients whose absolute
//!   values sum to 9 (|U| <= 9 * 128 = 1152), computed once per model by
//!   the host ([`transform_filters`]).
//! - A `vpmaddwd` pair is at most 2 * 1020 * 1152, far from i32's range; the
//!   sums over input channels and the output transform wrap modulo 2^32 like
//!   the plain kernel's, and `4 Y` is four times the direct sum, which fits
//!   i32 while `9 * in_c * 255 * 128 * 4 < 2^31` ([`MAX_IN_C`]): then `4 Y`
//!   is exact and `>> 2` gives the plain kernel's sum bit for bit.
//!
//! So the output stage ([`finish8`]) sees the same accumulator as the plain
//! kernel, and the bytes are the same (tests/kernels_simd.rs). Everything
//! lives on the stack: nothing here allocates.

// Register blocks index the same way the formulas do.
#![allow(clippy::needless_range_loop)]

use core::arch::x86_64::*;
use core::ops::Range;

use super::int8_avx2::finish8;
use crate::geometry::ConvGeom;
use crate::kernels::generic::int8::{check_bn, Int8Params, ThenBatchNorm};
use crate::model::Int8Weights;

/// Transform points of a 4x4 tile.
const POINTS: usize = 16;
/// Most input channels for which `4 Y` cannot leave i32 (see the module doc).
pub const MAX_IN_C: usize = 1024;
/// Tiles of one register block.
const TB: usize = 3;
/// 8-channel vectors of one register block (`TB * CV` = 9 accumulators,
/// three filter vectors, a broadcast and a product: 14 of the 16 registers;
/// 4 x 3 spilled an accumulator to the stack on every step).
const CV: usize = 3;
/// i16 elements of the stack buffer one point's transformed input tiles
/// live in (64 KB: 85 tiles of AlexNet's 384 channels).
const V_ELEMS: usize = 32 * 1024;
/// i32 elements of the stack buffer the output tiles' sums live in (192 KB:
/// 49 tiles x 4 outputs x 192 channels, AlexNet's 13x13 layers on one of two
/// threads).
const Y_ELEMS: usize = 48 * 1024;
/// Most output channels: one tile's four sums of each fit the buffer.
pub const MAX_OUT_C: usize = Y_ELEMS / 4;
/// `A^T` of F(2, 3): output `y` of a tile row is `sum_i A[y][i] m_i`.
const A: [[i32; 4]; 2] = [[1, 1, 1, 0], [0, 1, -1, -1]];
/// `B^T` of F(2, 3), row by row: `(a, b, add)` for the row `d_a + d_b` or
/// `d_a - d_b`.
const BT: [(usize, usize, bool); 4] = [(0, 2, false), (1, 2, true), (2, 1, false), (1, 3, false)];

/// Whether [`conv2d_winograd_avx2`] computes this layer: a 3x3 stride-1
/// undilated ungrouped geometry with at most [`MAX_IN_C`] input and
/// [`MAX_OUT_C`] output channels, and an input zero point that is an int8 value.
pub fn serves(g: &ConvGeom, p: &Int8Params) -> bool {
    g.is_tileable()
        && (g.kernel_h, g.kernel_w, g.stride_h, g.stride_w) == (3, 3, 1, 1)
        && (1..=MAX_IN_C).contains(&g.in_c)
        && (1..=MAX_OUT_C).contains(&g.out_c)
        && i8::try_from(p.in_zp).is_ok()
}

/// Input-channel pairs (`vpmaddwd` takes two).
fn pairs(g: &ConvGeom) -> usize {
    g.in_c.div_ceil(2)
}

/// i16 elements of [`transform_filters`]'s layout for `g`:
/// `[point][out_c / 8][in_c / 2][8 channels][2]`, zero past the channels.
pub fn filter_len(g: &ConvGeom) -> usize {
    POINTS * g.out_c.div_ceil(8) * pairs(g) * 16
}

/// `G' g G'^T` of every filter (OHWI int8 `weights`, 3x3) and input channel,
/// laid out for the kernel: one 32-byte load is one input-channel pair of
/// eight output channels at one point. `u` has [`filter_len`] elements.
pub fn transform_filters(g: &ConvGeom, weights: &[i8], u: &mut [i16]) {
    assert!(g.kernel_h == 3 && g.kernel_w == 3 && weights.len() == g.weights_len(), "winograd: 3x3 filters");
    assert_eq!(u.len(), filter_len(g), "winograd: transformed filter length");
    u.fill(0);
    let (cin, vectors, pairs) = (g.in_c, g.out_c.div_ceil(8), pairs(g));
    for o in 0..g.out_c {
        for c in 0..cin {
            let w = |a: usize, b: usize| weights[((o * 3 + a) * 3 + b) * cin + c] as i32;
            // G' g: 4 x 3.
            let mut t = [[0i32; 3]; 4];
            for b in 0..3 {
                let (g0, g1, g2) = (w(0, b), w(1, b), w(2, b));
                t[0][b] = 2 * g0;
                t[1][b] = g0 + g1 + g2;
                t[2][b] = g0 - g1 + g2;
                t[3][b] = 2 * g2;
            }
            for (i, r) in t.iter().enumerate() {
                let row = [2 * r[0], r[0] + r[1] + r[2], r[0] - r[1] + r[2], 2 * r[2]];
                for (j, &v) in row.iter().enumerate() {
                    // |v| <= 9 * 128.
                    u[(((i * 4 + j) * vectors + o / 8) * pairs + c / 2) * 16 + (o % 8) * 2 + c % 2] = v as i16;
                }
            }
        }
    }
}

/// The plain Conv2D's output channels `couts` (a multiple of 8 from the
/// first, to `g.out_c` or a multiple of 8) of every output pixel, through
/// the transformed filters `u`; with `then`, that BatchNormalization run on
/// them after. Writes only those channels of `output`, so calls with
/// disjoint ranges may run at once.
///
/// # Safety
/// The CPU must support AVX2. `output` points at `g.output_len()` writable
/// bytes that nothing else reads or writes in those channels meanwhile;
/// [`serves`]`(g, p)`, and `u` is [`transform_filters`]'s for `w` (asserted
/// where cheap: the lengths).
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn conv2d_winograd_avx2(
    g: &ConvGeom,
    p: &Int8Params,
    w: &Int8Weights<'_>,
    u: &[i16],
    input: &[i8],
    output: *mut i8,
    couts: Range<usize>,
    then: Option<&ThenBatchNorm<'_>>,
) {
    assert!(serves(g, p), "winograd: not a layer it computes");
    assert!(input.len() == g.input_len() && w.weights.len() == g.weights_len(), "winograd: lengths");
    assert!(w.bias.len() == g.out_c && w.multiplier.len() == g.out_c && w.shift.len() == g.out_c, "winograd: channels");
    assert_eq!(u.len(), filter_len(g), "winograd: transformed filter length");
    assert!(couts.start.is_multiple_of(8) && couts.end <= g.out_c, "winograd: output channels");
    if let Some(bn) = then {
        assert_eq!(check_bn(&bn.w, g.output_len()), g.out_c, "winograd: the fused BatchNormalization's channels");
    }
    let (tiles_h, tiles_w) = (g.out_h.div_ceil(2), g.out_w.div_ceil(2));
    let tiles = tiles_h * tiles_w;
    // This call's 8-channel vectors, and a tile's sums: 4 outputs of each.
    let jv = (couts.end - couts.start).div_ceil(8);
    let tile_sums = 4 * 8 * jv;
    // A tile's row of channels in the point buffer: whole 16-lane vectors.
    let cs = g.in_c.next_multiple_of(16);
    // Tiles a pass, the passes as equal as possible: each reads all of this
    // call's transformed filters once, so a short last one would read them
    // for a few tiles.
    let most = (V_ELEMS / cs).min(Y_ELEMS / tile_sums.max(1)).max(1);
    let per = tiles.div_ceil(tiles.div_ceil(most).max(1));
    let mut v = VBuf([0i16; V_ELEMS]);
    let mut y = [0i32; Y_ELEMS];
    let (pairs, vectors) = (pairs(g), g.out_c.div_ceil(8));
    let zp = _mm256_set1_epi16(p.in_zp as i16);
    let mut first = 0;
    while first < tiles {
        let n = per.min(tiles - first);
        y[..n * tile_sums].fill(0);
        // One point at a time: its transformed tiles (a quarter of a 4x4
        // tile's input each), its GEMM, its share of every output added to
        // the sums. The transformed filters are read once a pass, and
        // nothing holds all 16 points of a tile.
        for pt in 0..POINTS {
            let (i, j) = (pt / 4, pt % 4);
            for t in 0..n {
                let (ty, tx) = ((first + t) / tiles_w, (first + t) % tiles_w);
                transform_point(g, zp, input, (ty, tx), (i, j), &mut v.0[t * cs..(t + 1) * cs]);
            }
            let coef: [i32; 4] = core::array::from_fn(|k| A[k / 2][i] * A[k % 2][j]);
            let up = &u[(pt * vectors + couts.start / 8) * pairs * 16..];
            let mut c = 0;
            while c < jv {
                let nv = CV.min(jv - c);
                // Register blocks as equal as possible.
                let blocks = n.div_ceil(TB);
                for b in 0..blocks {
                    let (t, nt) = (n * b / blocks, n * (b + 1) / blocks - n * b / blocks);
                    let (x, f) = (v.0[t * cs..].as_ptr(), up[c * pairs * 16..].as_ptr());
                    let sums =
                        Sums { at: y[t * tile_sums + 8 * c..].as_mut_ptr(), tile: tile_sums, output: 8 * jv, coef };
                    macro_rules! go {
                        ($($t:literal)*) => {
                            match (nt, nv) {
                                // SAFETY: tiles t..t+nt have `2 * pairs` elements
                                // each, `cs` apart; vectors c.. < `jv` of this
                                // call's filters hold `pairs` 16-element groups
                                // each, `pairs * 16` apart; tiles t..t+nt's sums
                                // of vectors c..c+nv are in `y`; AVX2.
                                $(($t, 1) => unsafe { gemm_block::<$t, 1>(x, cs, f, pairs, &sums) },
                                  ($t, 2) => unsafe { gemm_block::<$t, 2>(x, cs, f, pairs, &sums) },
                                  ($t, 3) => unsafe { gemm_block::<$t, 3>(x, cs, f, pairs, &sums) },)*
                                _ => unreachable!(),
                            }
                        };
                    }
                    go!(1 2 3);
                }
                c += nv;
            }
        }
        for t in 0..n {
            let (ty, tx) = ((first + t) / tiles_w, (first + t) % tiles_w);
            for k in 0..4 {
                let (oy, ox) = (2 * ty + k / 2, 2 * tx + k % 2);
                if oy >= g.out_h || ox >= g.out_w {
                    continue;
                }
                let at = (oy * g.out_w + ox) * g.out_c + couts.start;
                // SAFETY: channels `couts` of pixel (oy, ox) are inside the
                // output and this call's alone (contract).
                let out = unsafe { core::slice::from_raw_parts_mut(output.add(at), couts.len()) };
                let sums = &y[t * tile_sums + k * 8 * jv..][..8 * jv];
                for (c, (four, out)) in sums.chunks_exact(8).zip(out.chunks_mut(8)).enumerate() {
                    // 4 Y is exact (see the module doc): Y is the direct sum.
                    let acc: [i32; 8] = core::array::from_fn(|l| four[l] >> 2);
                    // SAFETY: AVX2; the channels couts.start + 8c.. + out.len()
                    // exist in `w` and `then`.
                    unsafe { finish8(&acc[..out.len()], w, couts.start + 8 * c, p, out, then) };
                }
            }
        }
        first += n;
    }
}

/// The transformed input tiles of one point, 32-byte aligned.
#[repr(C, align(32))]
struct VBuf([i16; V_ELEMS]);

/// Point `(i, j)` of `B^T d B` for tile `(ty, tx)`, every input channel, 16
/// at a time, into `out` (channels past `in_c` set to 0): the four inputs
/// `B^T`'s rows `i` and `j` pick, added or subtracted. `out` holds `in_c`
/// rounded up to 16 elements.
#[target_feature(enable = "avx2")]
fn transform_point(
    g: &ConvGeom,
    zp: __m256i,
    input: &[i8],
    (ty, tx): (usize, usize),
    (i, j): (usize, usize),
    out: &mut [i16],
) {
    let cin = g.in_c;
    let lane = _mm256_setr_epi16(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    // Where row r and column s of the tile fall in the image, if they do.
    let at = |o: usize, r: usize, pad: usize, len: usize| (2 * o + r).checked_sub(pad).filter(|&q| q < len);
    let ((ra, rb, radd), (ca, cb, cadd)) = (BT[i], BT[j]);
    let rows = [at(ty, ra, g.pad_top, g.in_h), at(ty, rb, g.pad_top, g.in_h)];
    let cols = [at(tx, ca, g.pad_left, g.in_w), at(tx, cb, g.pad_left, g.in_w)];
    let both = |a: __m256i, b: __m256i, add: bool| if add { _mm256_add_epi16(a, b) } else { _mm256_sub_epi16(a, b) };
    for k in (0..cin).step_by(16) {
        let live = (cin - k).min(16);
        let keep = _mm256_cmpgt_epi16(_mm256_set1_epi16(live as i16), lane);
        // Input (r, s) minus the zero point; 0 outside the image and past `in_c`.
        let d = |r: Option<usize>, s: Option<usize>| {
            let (Some(iy), Some(ix)) = (r, s) else { return _mm256_setzero_si256() };
            let src = &input[(iy * g.in_w + ix) * cin + k..][..live];
            let x = if live == 16 {
                // SAFETY: 16 readable bytes (the slice is checked).
                _mm256_cvtepi8_epi16(unsafe { _mm_loadu_si128(src.as_ptr().cast()) })
            } else {
                let mut bytes = [0i8; 16];
                bytes[..live].copy_from_slice(src);
                // SAFETY: 16 readable bytes.
                _mm256_cvtepi8_epi16(unsafe { _mm_loadu_si128(bytes.as_ptr().cast()) })
            };
            _mm256_and_si256(_mm256_sub_epi16(x, zp), keep)
        };
        let ta = both(d(rows[0], cols[0]), d(rows[0], cols[1]), cadd);
        let tb = both(d(rows[1], cols[0]), d(rows[1], cols[1]), cadd);
        // SAFETY: 16 elements at `k` (the slice is checked).
        unsafe { _mm256_storeu_si256(out[k..k + 16].as_mut_ptr().cast(), both(ta, tb, radd)) };
    }
}

/// Where a point's products go: the sums of the first tile's first vector
/// at `at`, one tile's `tile` i32 apart, each of its 4 outputs `output`
/// apart; output `k` of a tile gets `coef[k]` (1, -1 or 0) times the product.
struct Sums {
    at: *mut i32,
    tile: usize,
    output: usize,
    coef: [i32; 4],
}

/// For `T` tiles (`xstep` i16 apart) and `C` 8-channel vectors
/// (`pairs * 16` i16 apart): the i32 products `sum over pairs q of
/// x[t][q] . f[c][q]`, added to or subtracted from the tiles' output sums
/// as `sums` says.
///
/// # Safety
/// AVX2; `x + t * xstep` has `2 * pairs` readable i16, `f + c * pairs * 16`
/// has `pairs * 16`, and `sums` has the 4 outputs' `8 * C` i32 of each tile.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn gemm_block<const T: usize, const C: usize>(
    x: *const i16,
    xstep: usize,
    f: *const i16,
    pairs: usize,
    sums: &Sums,
) {
    let mut acc = [[_mm256_setzero_si256(); C]; T];
    for q in 0..pairs {
        let mut fv = [_mm256_setzero_si256(); C];
        for c in 0..C {
            // SAFETY: the function's contract.
            fv[c] = unsafe { _mm256_loadu_si256(f.add((c * pairs + q) * 16).cast()) };
        }
        for t in 0..T {
            // SAFETY: the function's contract (the pair at 2q of tile t).
            let xb = _mm256_set1_epi32(unsafe { x.add(t * xstep + 2 * q).cast::<i32>().read_unaligned() });
            for c in 0..C {
                acc[t][c] = _mm256_add_epi32(acc[t][c], _mm256_madd_epi16(xb, fv[c]));
            }
        }
    }
    for (k, &coef) in sums.coef.iter().enumerate() {
        if coef == 0 {
            continue;
        }
        for t in 0..T {
            for c in 0..C {
                // SAFETY: the function's contract.
                let at = unsafe { sums.at.add(t * sums.tile + k * sums.output + 8 * c) };
                // SAFETY: 8 lanes inside the sums (contract).
                let old = unsafe { _mm256_loadu_si256(at.cast()) };
                let new = if coef > 0 { _mm256_add_epi32(old, acc[t][c]) } else { _mm256_sub_epi32(old, acc[t][c]) };
                // SAFETY: as the load.
                unsafe { _mm256_storeu_si256(at.cast(), new) };
            }
        }
    }
}
