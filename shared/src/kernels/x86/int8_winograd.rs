//! Exact integer Winograd for int8 stride-1 Conv2D on AVX2 cores without
//! VNNI (AMD Zen 3 here), where the only exact multiply-add is `vpmaddwd`
//! on i16 pairs. Two schemes ([`Scheme`]):
//! - **F(2x2, 3x3)** for 3x3 filters: 16 products per 2x2 output tile and
//!   input channel instead of 36 (1.9x fewer on a 13x13 image, whose last
//!   tile row and column are half outside).
//! - **F(2, 5) along rows** for 5x5 filters: each filter row is a 1-D F(2, 5)
//!   over 6 input columns for 2 outputs, 30 products per 2 outputs and
//!   input channel instead of 50 (1.6x fewer on a 27-wide image).
//!
//! Exact, not approximate: with Lavin's matrices scaled to integers the
//! transforms hold in integers, and the only division is by the scale.
//! - F(2x2, 3x3): `G' = 2G`, `4 Y = A^T [(G' g G'^T) . (B^T d B)] A`. `d`, a
//!   4x4 input tile minus the zero point (|d| <= 255, 0 outside the image:
//!   the plain kernel's skipped tap), enters `B^T d B` four times with signs
//!   (|V| <= 1020); `G' g G'^T` adds nine weights with coefficients whose
//!   absolute values sum to at most 9 (|U| <= 9 * 128 = 1152).
//! - F(2, 5): `G' = 24 G` (rows `6`, `-4 (1, 1, 1, 1, 1)`, `-4 (1, -1, 1, -1, 1)`,
//!   `(1, 2, 4, 8, 16)`, `(1, -2, 4, -8, 16)`, `24` at infinity: |U| <= 31 *
//!   128), `B^T` the 6-point one of Lavin's F(4, 3) (rows sum to at most 10
//!   in absolute value: |V| <= 2550), `24 y = A^T [(G' g) . (B^T d)]`.
//! - A `vpmaddwd` pair is at most 2 * 2550 * 3968, far from i32's range. The
//!   sums over the depth and the output transform wrap modulo 2^32 like the
//!   plain kernel's, and the result is the scale times the direct sum, so it
//!   is exact while that fits i32: `scale * taps * in_c * 255 * 128 < 2^31`,
//!   which bounds the input channels ([`Scheme::max_in_c`]). Dividing by the
//!   scale is then exact: `>> 2`, or `>> 3` and a multiply by 3's inverse
//!   modulo 2^32.
//!
//! So the output stage (`finish8`) sees the plain kernel's accumulator,
//! and the bytes are the same (tests/kernels_simd.rs). The filters'
//! transforms are the host's, once per model ([`transform_filters`]); a
//! call's transformed tiles and sums are in the scratch it is given
//! ([`scratch_bytes`], from the arena): nothing here allocates.

// Register blocks index the same way the formulas do.
#![allow(clippy::needless_range_loop)]

use core::arch::x86_64::*;
use core::ops::Range;

use super::int8_avx2::finish8;
use crate::geometry::ConvGeom;
use crate::kernels::generic::int8::{check_bn, Int8Params, ThenBatchNorm};
use crate::model::Int8Weights;

/// Tiles of one register block.
const TB: usize = 6;
/// 8-channel vectors of one register block (`TB * CV` = 12 accumulators,
/// two filter vectors, a broadcast and a product: the 16 registers). 8 loads
/// per 12 `vpmaddwd` instead of 6 per 9 with 3 x 3: on a Zen 4 capped at
/// AVX2, one thread, conv 3-5 5-7 % faster (conv 4 1.613 -> 1.505 ms),
/// conv 2 1.5 % (in the network, two threads, within the noise). 4 x 3
/// spilled an accumulator to the stack on every step.
const CV: usize = 2;
/// Most i16 elements of a pass's transformed input tiles, every point of
/// each (192 KB: 16 tiles of AlexNet's 384 channels under F(2x2, 3x3), 33 of
/// its conv 2 under F(2, 5)).
const V_ELEMS: usize = 96 * 1024;
/// Most i32 elements of a pass's output sums (64 KB).
const Y_ELEMS: usize = 16 * 1024;
/// Most output channels: one tile's four sums of each fit the buffer.
pub const MAX_OUT_C: usize = Y_ELEMS / 4;
/// `A^T` of F(2, 3): output `y` of a tile row is `sum_i A3[y][i] m_i`.
const A3: [[i32; 4]; 2] = [[1, 1, 1, 0], [0, 1, -1, -1]];
/// `B^T` of F(2, 3), row by row: `(a, b, add)` for the row `d_a + d_b` or
/// `d_a - d_b`.
const BT3: [(usize, usize, bool); 4] = [(0, 2, false), (1, 2, true), (2, 1, false), (1, 3, false)];
/// `G' = 2 G` of F(2, 3).
const G3: [[i32; 3]; 4] = [[2, 0, 0], [1, 1, 1], [1, -1, 1], [0, 0, 2]];
/// `A^T` of F(2, 5) (points 0, 1, -1, 2, -2, infinity).
const A5: [[i32; 6]; 2] = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 1]];
/// `G' = 24 G` of F(2, 5).
const G5: [[i32; 5]; 6] =
    [[6, 0, 0, 0, 0], [-4, -4, -4, -4, -4], [-4, 4, -4, 4, -4], [1, 2, 4, 8, 16], [1, -2, 4, -8, 16], [0, 0, 0, 0, 24]];

/// The exact integer Winograd variants, by filter size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// 3x3 filters: 2x2 output tiles, 16 points, depth `in_c`, scale 4.
    F2x2For3x3,
    /// 5x5 filters: 1x2 output tiles, each filter row a 1-D F(2, 5): 6
    /// points, depth `5 * in_c` (filter row, channel), scale 24.
    F2For5x5,
}

impl Scheme {
    /// The scheme for this layer, if one computes it: a 3x3 or 5x5 stride-1
    /// undilated ungrouped geometry within the channel bounds, and an input
    /// zero point that is an int8 value.
    pub fn of(g: &ConvGeom, p: &Int8Params) -> Option<Scheme> {
        Scheme::for_geometry(g).filter(|_| i8::try_from(p.in_zp).is_ok())
    }

    /// [`Scheme::of`] without the zero point: what the filters' layout and
    /// the scratch depend on.
    fn for_geometry(g: &ConvGeom) -> Option<Scheme> {
        let scheme = match (g.kernel_h, g.kernel_w) {
            (3, 3) => Scheme::F2x2For3x3,
            (5, 5) => Scheme::F2For5x5,
            _ => return None,
        };
        (g.is_tileable()
            && (g.stride_h, g.stride_w) == (1, 1)
            && (1..=scheme.max_in_c()).contains(&g.in_c)
            && (1..=MAX_OUT_C).contains(&g.out_c))
        .then_some(scheme)
    }

    /// Most input channels for which the scaled sum cannot leave i32 (see
    /// the module doc): `4 * 9 * 1024 * 32640 < 2^31`, `24 * 25 * 109 * 32640 < 2^31`.
    pub const fn max_in_c(self) -> usize {
        match self {
            Scheme::F2x2For3x3 => 1024,
            Scheme::F2For5x5 => 109,
        }
    }

    const fn points(self) -> usize {
        match self {
            Scheme::F2x2For3x3 => 16,
            Scheme::F2For5x5 => 6,
        }
    }

    /// Output rows and columns of a tile.
    const fn tile(self) -> (usize, usize) {
        match self {
            Scheme::F2x2For3x3 => (2, 2),
            Scheme::F2For5x5 => (1, 2),
        }
    }

    /// The depth of each point's products: input channels, times the filter
    /// rows that are summed directly.
    fn depth(self, g: &ConvGeom) -> usize {
        match self {
            Scheme::F2x2For3x3 => g.in_c,
            Scheme::F2For5x5 => 5 * g.in_c,
        }
    }

    /// i16 elements of a tile's row of depth in the point buffer: whole
    /// 16-lane vectors, and room for each filter row's last vector of
    /// channels (written whole).
    fn row(self, g: &ConvGeom) -> usize {
        match self {
            Scheme::F2x2For3x3 => g.in_c.next_multiple_of(16),
            Scheme::F2For5x5 => (4 * g.in_c + g.in_c.next_multiple_of(16)).next_multiple_of(16),
        }
    }

    /// Output `k` of a tile (row-major) takes `coef(pt, k)` (1, -1, 2, -2 or
    /// 0) times point `pt`'s product.
    fn coef(self, pt: usize, k: usize) -> i32 {
        match self {
            Scheme::F2x2For3x3 => A3[k / 2][pt / 4] * A3[k % 2][pt % 4],
            Scheme::F2For5x5 => A5[k][pt],
        }
    }

    /// The direct sum from the scaled one (exact: see the module doc).
    fn unscale(self, v: i32) -> i32 {
        match self {
            Scheme::F2x2For3x3 => v >> 2,
            // 24 s >> 3 = 3 s; times 3's inverse modulo 2^32.
            Scheme::F2For5x5 => (v >> 3).wrapping_mul(0xAAAA_AAABu32 as i32),
        }
    }
}

/// The output tiles of this layer's scheme: what [`conv2d_winograd_avx2`]'s
/// `tiles` range over (0 for a geometry no scheme takes).
pub fn tiles(g: &ConvGeom) -> usize {
    Scheme::for_geometry(g).map_or(0, |s| {
        let (th, tw) = s.tile();
        g.out_h.div_ceil(th) * g.out_w.div_ceil(tw)
    })
}

/// Whether [`conv2d_winograd_avx2`] computes this layer ([`Scheme::of`]).
pub fn serves(g: &ConvGeom, p: &Int8Params) -> bool {
    Scheme::of(g, p).is_some()
}

/// Depth pairs (`vpmaddwd` takes two).
fn pairs(scheme: Scheme, g: &ConvGeom) -> usize {
    scheme.depth(g).div_ceil(2)
}

/// i16 elements of [`transform_filters`]'s layout for `g`:
/// `[point][out_c / 8][depth / 2][8 channels][2]`, zero past the channels
/// (0 for a geometry no scheme takes).
pub fn filter_len(g: &ConvGeom) -> usize {
    Scheme::for_geometry(g).map_or(0, |s| s.points() * g.out_c.div_ceil(8) * pairs(s, g) * 16)
}

/// The transformed filters of every filter (OHWI int8 `weights`, 3x3 or
/// 5x5) and depth index, laid out for the kernel: one 32-byte load is one
/// depth pair of eight output channels at one point. `u` has [`filter_len`]
/// elements.
pub fn transform_filters(g: &ConvGeom, weights: &[i8], u: &mut [i16]) {
    let (k, scheme) = (g.kernel_h, Scheme::for_geometry(g).expect("winograd: a geometry no scheme takes"));
    assert_eq!(weights.len(), g.weights_len(), "winograd: filter length");
    assert_eq!(u.len(), filter_len(g), "winograd: transformed filter length");
    u.fill(0);
    let (cin, vectors, pairs) = (g.in_c, g.out_c.div_ceil(8), pairs(scheme, g));
    let mut put = |pt: usize, o: usize, depth: usize, v: i32| {
        // |v| <= 31 * 128: an i16.
        u[((pt * vectors + o / 8) * pairs + depth / 2) * 16 + (o % 8) * 2 + depth % 2] = v as i16;
    };
    for o in 0..g.out_c {
        for c in 0..cin {
            let w = |a: usize, b: usize| weights[((o * k + a) * k + b) * cin + c] as i32;
            if scheme == Scheme::F2x2For3x3 {
                // G' g G'^T.
                let t: [[i32; 3]; 4] =
                    core::array::from_fn(|i| core::array::from_fn(|b| (0..3).map(|a| G3[i][a] * w(a, b)).sum()));
                for (i, row) in t.iter().enumerate() {
                    for (j, gj) in G3.iter().enumerate() {
                        put(i * 4 + j, o, c, (0..3).map(|b| row[b] * gj[b]).sum());
                    }
                }
            } else {
                // G' along each filter row; the rows go into the depth.
                for ky in 0..5 {
                    for (pt, gp) in G5.iter().enumerate() {
                        put(pt, o, ky * cin + c, (0..5).map(|kx| gp[kx] * w(ky, kx)).sum());
                    }
                }
            }
        }
    }
}

/// A pass of [`conv2d_winograd_avx2`] and its buffers in the scratch:
/// `(tiles, transformed-tile bytes, sum bytes)`. As many tiles as the
/// buffers' budgets allow with every output channel's sums; the first size
/// rounded to 32 so that the sums start aligned too.
fn pass_buffers(scheme: Scheme, g: &ConvGeom) -> (usize, usize, usize) {
    let (th, tw) = scheme.tile();
    let tile_sums = th * tw * 8 * g.out_c.div_ceil(8);
    let tile_row = scheme.points() * scheme.row(g);
    let most = (V_ELEMS / tile_row).min(Y_ELEMS / tile_sums).clamp(1, tiles(g).max(1));
    (most, (most * tile_row * 2).next_multiple_of(32), most * tile_sums * 4)
}

/// Scratch bytes one [`conv2d_winograd_avx2`] call takes for `g` (any
/// alignment): a pass's transformed tiles, its output sums, and room to
/// align them (0 for a geometry no scheme takes).
pub fn scratch_bytes(g: &ConvGeom) -> usize {
    Scheme::for_geometry(g).map_or(0, |scheme| {
        let (_, v, y) = pass_buffers(scheme, g);
        v + y + 32
    })
}

/// The plain Conv2D's output channels `couts` (a multiple of 8 from the
/// first, to `g.out_c` or a multiple of 8) of the output pixels of `tiles`
/// (row-major, [`tiles`] in all), through the transformed filters `u`; with
/// `then`, that BatchNormalization run on them after. Writes only those
/// bytes of `output`, so calls with disjoint tiles or channels may run at once.
///
/// # Safety
/// The CPU must support AVX2. `output` points at `g.output_len()` writable
/// bytes that nothing else reads or writes in those pixels and channels meanwhile;
/// [`serves`]`(g, p)`, and `u` is [`transform_filters`]'s for `w` (asserted
/// where cheap: the lengths). `scratch` has [`scratch_bytes`]`(g)` bytes.
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn conv2d_winograd_avx2(
    g: &ConvGeom,
    p: &Int8Params,
    w: &Int8Weights<'_>,
    u: &[i16],
    input: &[i8],
    output: *mut i8,
    tiles: Range<usize>,
    couts: Range<usize>,
    then: Option<&ThenBatchNorm<'_>>,
    scratch: &mut [u8],
) {
    let scheme = Scheme::of(g, p).expect("winograd: not a layer it computes");
    assert!(scratch.len() >= scratch_bytes(g), "winograd: scratch");
    assert!(input.len() == g.input_len() && w.weights.len() == g.weights_len(), "winograd: lengths");
    assert!(w.bias.len() == g.out_c && w.multiplier.len() == g.out_c && w.shift.len() == g.out_c, "winograd: channels");
    assert_eq!(u.len(), filter_len(g), "winograd: transformed filter length");
    assert!(couts.start.is_multiple_of(8) && couts.end <= g.out_c, "winograd: output channels");
    if let Some(bn) = then {
        assert_eq!(check_bn(&bn.w, g.output_len()), g.out_c, "winograd: the fused BatchNormalization's channels");
    }
    let (th, tw) = scheme.tile();
    let outputs = th * tw;
    let (tiles_h, tiles_w) = (g.out_h.div_ceil(th), g.out_w.div_ceil(tw));
    assert!(tiles.end <= tiles_h * tiles_w, "winograd: tiles");
    // This call's 8-channel vectors, and a tile's sums: each of its outputs'.
    let jv = (couts.end - couts.start).div_ceil(8);
    let tile_sums = outputs * 8 * jv;
    let cs = scheme.row(g);
    // Tiles a pass, the passes as equal as possible: each reads all of this
    // call's transformed filters once, so a short last one would read them
    // for a few tiles.
    let (most, v_bytes, y_bytes) = pass_buffers(scheme, g);
    let per = tiles.len().div_ceil(tiles.len().div_ceil(most).max(1));
    // The transformed tiles (every element a pass reads is written first)
    // and the sums (zeroed each pass), on 32-byte boundaries in the scratch.
    let skip = scratch.as_ptr().align_offset(32);
    let (v, y) = scratch[skip..].split_at_mut(v_bytes);
    let v: &mut [i16] = bytemuck::cast_slice_mut(v);
    let y: &mut [i32] = bytemuck::cast_slice_mut(&mut y[..y_bytes]);
    let (pairs, vectors) = (pairs(scheme, g), g.out_c.div_ceil(8));
    let zp = _mm256_set1_epi16(p.in_zp as i16);
    let mut first = tiles.start;
    while first < tiles.end {
        let n = per.min(tiles.end - first);
        y[..n * tile_sums].fill(0);
        // Every point of the pass's tiles (each input loaded once a tile),
        // then one point at a time: its GEMM, its share of every output
        // added to the sums.
        let point_stride = n * cs;
        for t in 0..n {
            let tile = ((first + t) / tiles_w, (first + t) % tiles_w);
            let at = Slot { point_stride, at: t * cs };
            match scheme {
                Scheme::F2x2For3x3 => transform_tile_3x3(g, zp, input, tile, v, at),
                Scheme::F2For5x5 => transform_tile_5x5(g, zp, input, tile, v, at),
            }
        }
        for pt in 0..scheme.points() {
            let coef: [i32; 4] = core::array::from_fn(|k| if k < outputs { scheme.coef(pt, k) } else { 0 });
            let up = &u[(pt * vectors + couts.start / 8) * pairs * 16..];
            let mut c = 0;
            while c < jv {
                let nv = CV.min(jv - c);
                // Register blocks as equal as possible.
                let blocks = n.div_ceil(TB);
                for b in 0..blocks {
                    let (t, nt) = (n * b / blocks, n * (b + 1) / blocks - n * b / blocks);
                    let (x, f) = (v[pt * point_stride + t * cs..].as_ptr(), up[c * pairs * 16..].as_ptr());
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
                                  ($t, 2) => unsafe { gemm_block::<$t, 2>(x, cs, f, pairs, &sums) },)*
                                _ => unreachable!(),
                            }
                        };
                    }
                    go!(1 2 3 4 5 6);
                }
                c += nv;
            }
        }
        for t in 0..n {
            let (ty, tx) = ((first + t) / tiles_w, (first + t) % tiles_w);
            for k in 0..outputs {
                let (oy, ox) = (th * ty + k / tw, tw * tx + k % tw);
                if oy >= g.out_h || ox >= g.out_w {
                    continue;
                }
                let at = (oy * g.out_w + ox) * g.out_c + couts.start;
                // SAFETY: channels `couts` of pixel (oy, ox) are inside the
                // output and this call's alone (contract).
                let out = unsafe { core::slice::from_raw_parts_mut(output.add(at), couts.len()) };
                let sums = &y[t * tile_sums + k * 8 * jv..][..8 * jv];
                for (c, (scaled, out)) in sums.chunks_exact(8).zip(out.chunks_mut(8)).enumerate() {
                    let acc: [i32; 8] = core::array::from_fn(|l| scheme.unscale(scaled[l]));
                    // SAFETY: AVX2; the channels couts.start + 8c.. + out.len()
                    // exist in `w` and `then`.
                    unsafe { finish8(&acc[..out.len()], w, couts.start + 8 * c, p, out, then) };
                }
            }
        }
        first += n;
    }
}

/// The 16 input channels from `k` of pixel `(iy, ix)` (where it is in the
/// image) minus the zero point as i16; 0 outside the image and past `in_c`.
#[target_feature(enable = "avx2")]
#[inline]
fn pixel16(g: &ConvGeom, zp: __m256i, input: &[i8], at: (Option<usize>, Option<usize>), k: usize) -> __m256i {
    let (Some(iy), Some(ix)) = at else { return _mm256_setzero_si256() };
    let live = (g.in_c - k).min(16);
    let src = &input[(iy * g.in_w + ix) * g.in_c + k..][..live];
    let x = if live == 16 {
        // SAFETY: 16 readable bytes (the slice is checked).
        _mm256_cvtepi8_epi16(unsafe { _mm_loadu_si128(src.as_ptr().cast()) })
    } else {
        let mut bytes = [0i8; 16];
        bytes[..live].copy_from_slice(src);
        // SAFETY: 16 readable bytes.
        _mm256_cvtepi8_epi16(unsafe { _mm_loadu_si128(bytes.as_ptr().cast()) })
    };
    let lane = _mm256_setr_epi16(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    _mm256_and_si256(_mm256_sub_epi16(x, zp), _mm256_cmpgt_epi16(_mm256_set1_epi16(live as i16), lane))
}

/// Where input row or column `r` of tile `o` (of `size` outputs) falls in
/// the image, if it does.
fn tap(o: usize, size: usize, r: usize, pad: usize, len: usize) -> Option<usize> {
    (size * o + r).checked_sub(pad).filter(|&q| q < len)
}

/// Where a tile's transformed inputs go in the pass's buffer: point `pt`'s
/// row of depth at `pt * point_stride + at`.
#[derive(Clone, Copy)]
struct Slot {
    point_stride: usize,
    at: usize,
}

/// `B^T d B` (F(2x2, 3x3)) of tile `(ty, tx)` for every input channel, 16
/// at a time: its 16 points into `v` at `slot` (channels past `in_c` set to 0).
#[target_feature(enable = "avx2")]
fn transform_tile_3x3(g: &ConvGeom, zp: __m256i, input: &[i8], (ty, tx): (usize, usize), v: &mut [i16], slot: Slot) {
    let rows: [Option<usize>; 4] = core::array::from_fn(|r| tap(ty, 2, r, g.pad_top, g.in_h));
    let cols: [Option<usize>; 4] = core::array::from_fn(|s| tap(tx, 2, s, g.pad_left, g.in_w));
    // Loops, not `array::from_fn` or `map` over the vectors: the generic
    // code that calls their closure lacks this function's AVX2, so the
    // closure (`pixel16` and the arithmetic in it) stayed a call (`perf`).
    for k in (0..g.in_c).step_by(16) {
        // B^T along each column, then along each row of the result.
        let mut cols_t = [[_mm256_setzero_si256(); 4]; 4];
        for s in 0..4 {
            let mut d = [_mm256_setzero_si256(); 4];
            for r in 0..4 {
                d[r] = pixel16(g, zp, input, (rows[r], cols[s]), k);
            }
            cols_t[s] = bt3(d);
        }
        for i in 0..4 {
            let mut d = [_mm256_setzero_si256(); 4];
            for s in 0..4 {
                d[s] = cols_t[s][i];
            }
            for (j, val) in bt3(d).iter().enumerate() {
                let at = (i * 4 + j) * slot.point_stride + slot.at + k;
                // SAFETY: 16 elements at `at` (the slice is checked).
                unsafe { _mm256_storeu_si256(v[at..at + 16].as_mut_ptr().cast(), *val) };
            }
        }
    }
}

/// `B^T d` of F(2, 3) on four vectors (rows [`BT3`]).
#[target_feature(enable = "avx2")]
#[inline]
fn bt3(d: [__m256i; 4]) -> [__m256i; 4] {
    let mut out = [_mm256_setzero_si256(); 4];
    for (o, &(a, b, add)) in out.iter_mut().zip(&BT3) {
        *o = if add { _mm256_add_epi16(d[a], d[b]) } else { _mm256_sub_epi16(d[a], d[b]) };
    }
    out
}

/// `B^T d` (F(2, 5)) along each of the 5 input rows of tile `(oy, tx)` (one
/// output row, two columns): its 6 points into `v` at `slot`, at depth
/// `row * in_c + c` (past `5 * in_c` set to 0; [`Scheme::row`] elements).
#[target_feature(enable = "avx2")]
fn transform_tile_5x5(g: &ConvGeom, zp: __m256i, input: &[i8], (oy, tx): (usize, usize), v: &mut [i16], slot: Slot) {
    let cin = g.in_c;
    let cols: [Option<usize>; 6] = core::array::from_fn(|s| tap(tx, 2, s, g.pad_left, g.in_w));
    // A loop, not `array::from_fn` (see `transform_tile_3x3`).
    macro_rules! times {
        ($d:expr, $n:expr) => {
            _mm256_mullo_epi16($d, _mm256_set1_epi16($n))
        };
    }
    for ky in 0..5 {
        let row = tap(oy, 1, ky, g.pad_top, g.in_h);
        for k in (0..cin).step_by(16) {
            let mut d = [_mm256_setzero_si256(); 6];
            for s in 0..6 {
                d[s] = pixel16(g, zp, input, (row, cols[s]), k);
            }
            // Lavin's 6-point B^T, row by row, with their shared terms:
            // (4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0),
            // (0, -2, -1, 2, 1, 0), (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1).
            let a = _mm256_sub_epi16(d[4], times!(d[2], 4));
            let b = _mm256_sub_epi16(d[3], times!(d[1], 4));
            let c = _mm256_sub_epi16(d[4], d[2]);
            let e = times!(_mm256_sub_epi16(d[3], d[1]), 2);
            let points = [
                _mm256_add_epi16(times!(_mm256_sub_epi16(d[0], d[2]), 4), c),
                _mm256_add_epi16(a, b),
                _mm256_sub_epi16(a, b),
                _mm256_add_epi16(c, e),
                _mm256_sub_epi16(c, e),
                _mm256_add_epi16(times!(_mm256_sub_epi16(d[1], d[3]), 4), _mm256_sub_epi16(d[5], d[3])),
            ];
            for (pt, val) in points.iter().enumerate() {
                // Written in order: a short last vector's zero lanes fall on
                // the next row's first channels, which that row then writes.
                let at = pt * slot.point_stride + slot.at + ky * cin + k;
                // SAFETY: 16 elements at `at` (the slice is checked).
                unsafe { _mm256_storeu_si256(v[at..at + 16].as_mut_ptr().cast(), *val) };
            }
        }
    }
}

/// Where a point's products go: the sums of the first tile's first vector
/// at `at`, one tile's `tile` i32 apart, each of its 4 outputs `output`
/// apart; output `k` of a tile gets `coef[k]` (0, +-1 or +-2) times the product.
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
                let term = if coef.abs() == 2 { _mm256_slli_epi32::<1>(acc[t][c]) } else { acc[t][c] };
                let new = if coef > 0 { _mm256_add_epi32(old, term) } else { _mm256_sub_epi32(old, term) };
                // SAFETY: as the load.
                unsafe { _mm256_storeu_si256(at.cast(), new) };
            }
        }
    }
}
