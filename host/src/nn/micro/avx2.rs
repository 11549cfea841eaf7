//! The micro-kernel for CPUs with AVX2 and FMA but no AVX-512 (an AMD Zen 3).
//!
//! AVX2 has 16 ymm registers, so the tile is 6 pixels x 16 channels: two
//! vectors a pixel, 12 accumulators, the two weight vectors and a broadcast.
//! The AVX-512 tile run as halves spilled and was slower than the `gemm`
//! crate, and so was this tile reading its operands in place: a 16-channel
//! panel's rows are one cache line each, `ldw` values apart (conv 3: 1.5 KB,
//! which falls into 8 of the L1's 64 sets). So each panel of a depth block
//! is copied first into `[kc][16]`, 16 KB that every pixel group then
//! streams from L1. The pixels' rows are read in place: copying them too
//! (into groups of six, as BLIS does) made the network slower, since
//! Winograd's products at batch 1 reuse each copy for only four panels.
//! A matrix of 16 channels (Winograd's kept filters on such CPUs) is
//! already that layout and is read where it lies.
//!
//! Each output is the same ascending chain of fused multiply-adds over the
//! depth as in the AVX-512 tile, continued from `c` between depth blocks,
//! so the two kernels give the same bits.

use super::product::Product;
use std::arch::x86_64::*;
use std::ops::Range;

/// Depth rows per block: a panel's copy (16 KB) and a pixel group's rows
/// (6 KB) stay in the 32 KB L1 together, which at the AVX-512 depth (384)
/// they would not. (Chosen by that count: timings of 128-384 on this
/// machine did not rise above its noise.)
pub(super) const KC: usize = 256;
/// Channels per panel: one tile's width.
const NR: usize = 16;
/// Pixels per tile.
const MR: usize = 6;

/// One tile's operands: `a` each pixel's first value of the depth block, `w`
/// the panel's `kc` rows of 16 (its copy, or a 16-channel matrix itself),
/// `c` its first output, rows `ldc` apart.
struct Tile {
    a: [*const f32; MR],
    /// A pixel's depth block is `kc / seg` segments of `seg` values,
    /// `seg_stride` apart, and within one, values `step` apart (1, or a
    /// transposed operand's row length).
    seg: usize,
    seg_stride: usize,
    step: usize,
    w: *const f32,
    c: *mut f32,
    ldc: usize,
    kc: usize,
    /// Start from zero (else from what `c` holds).
    first: bool,
    /// Lines asked of L2 for the caller's next weights: one at `.0 + 16 p`
    /// at each depth step `p < .1`.
    ahead: (*const f32, usize),
    /// Bias, scale and shift at the tile's first channel (scale null
    /// without affine), on the last depth block.
    last: Option<(*const f32, bool, *const f32, *const f32)>,
}

/// The [`Product`] `p` into `c`, as the AVX-512 `drive` computes it. The
/// caller's next weights (`next`) are asked for, a share a tile, by the tiles
/// after each panel's first pixel group: at batch 1 Winograd's products have
/// 16 rows, and the first group, streaming its panel from memory, is the only
/// time memory works unless the later ones fetch ahead.
///
/// # Safety
/// AVX2 and FMA must be present; `a_row(i, k0)` must be valid for `kc` reads
/// for every row and block (each segment when `seg` is given, `len` dividing
/// every `kc`), `w` for `k` rows `ldw` apart, `c` for `rows` rows of
/// `cols.len()` values `ldc` apart, `cols` inside `0 .. ldw`, its start and
/// length multiples of 16.
pub(super) unsafe fn drive(p: Product<'_, impl Fn(usize, usize) -> *const f32>, c: &mut [f32]) {
    let shallow = p.shallow();
    let Product { rows, blocks, a_row, seg, w, ldw, cols, ldc, ep, next, accumulate } = p;
    let (w, c) = (w.as_ptr(), c.as_mut_ptr());
    let groups = rows.div_ceil(MR);
    // `next`'s lines, shared out in order among the later groups' tiles.
    let lines = next.len().div_ceil(NR);
    let later = (groups.saturating_sub(1) * blocks.len() * cols.len().div_ceil(NR)).max(1);
    let per_tile = lines.div_ceil(later);
    let handed = std::cell::Cell::new(0usize);
    let ahead = |g: usize| {
        if g == 0 || shallow {
            return (std::ptr::null(), 0);
        }
        let from = handed.get().min(lines);
        handed.set(from + per_tile);
        // A hint, never a read.
        (next.as_ptr().wrapping_add(NR * from), per_tile.min(lines - from))
    };
    let mut w_copy = Vec::new();
    // One-value segments (a transposed operand) are one segment read with a step.
    let (seg, seg_stride, step) = match seg {
        Some((1, stride)) => (None, 0, stride),
        Some((len, stride)) => (Some(len), stride, 1),
        None => (None, 0, 1),
    };
    let last = |b: usize, j0: usize| {
        (b + 1 == blocks.len()).then(|| {
            let (s, t) = match ep.affine {
                Some((s, t)) => (s[j0..].as_ptr(), t[j0..].as_ptr()),
                None => (std::ptr::null(), std::ptr::null()),
            };
            (ep.bias[j0..].as_ptr(), ep.relu, s, t)
        })
    };
    // SAFETY (the closure's body): the caller's contract covers every block,
    // panel and pixel group; the copies hold what `pack_panels` put there.
    let run = |b: usize, j0: usize, g: usize, wp: *const f32| unsafe {
        let (k0, kc) = blocks[b];
        let m = MR.min(rows - g * MR);
        let mut a = [std::ptr::null(); MR];
        for (i, a) in a.iter_mut().enumerate().take(m) {
            *a = a_row(g * MR + i, k0);
        }
        let t = Tile {
            a,
            seg: seg.unwrap_or(kc),
            seg_stride,
            step,
            w: wp,
            c: c.add(g * MR * ldc + j0 - cols.start),
            ldc,
            kc,
            first: b == 0 && !accumulate,
            ahead: ahead(g),
            last: last(b, j0),
        };
        dispatch(m, &t);
    };
    if shallow {
        // One shallow block (a weight gradient's depth is the batch): pixel
        // groups outside, so each writes its rows whole (as the AVX-512
        // driver does); all panels copied once.
        let kc = blocks[0].1;
        let panels = if ldw == NR {
            w.add(blocks[0].0 * NR)
        } else {
            pack_panels(w, ldw, blocks[0], cols.clone(), &mut w_copy);
            w_copy.as_ptr()
        };
        for g in 0..groups {
            for j0 in cols.clone().step_by(NR) {
                run(0, j0, g, panels.add((j0 - cols.start) * kc));
            }
        }
    } else {
        // Each panel copied once per depth block; every pixel group
        // streams past the copy in L1.
        for (b, &block) in blocks.iter().enumerate() {
            for j0 in cols.clone().step_by(NR) {
                // A 16-channel matrix (Winograd's kept panels) is its own copy.
                let panel = if ldw == NR {
                    w.add(block.0 * NR)
                } else {
                    pack_panels(w, ldw, block, j0..j0 + NR, &mut w_copy);
                    w_copy.as_ptr()
                };
                for g in 0..groups {
                    run(b, j0, g, panel);
                }
            }
        }
    }
}

/// Rows `k0 .. k0 + kc` of `w`'s columns `cols` (multiples of 16) into
/// `out` as 16-channel panels one after the other, each `kc` rows of 16.
///
/// # Safety
/// `w` must be valid for rows `k0 .. k0 + kc` of `ldw` values, `cols` inside them.
unsafe fn pack_panels(w: *const f32, ldw: usize, (k0, kc): (usize, usize), cols: Range<usize>, out: &mut Vec<f32>) {
    out.clear();
    out.resize(kc * cols.len(), 0.0);
    let mut to = out.as_mut_ptr();
    for j0 in cols.step_by(NR) {
        for p in 0..kc {
            // A fixed-size copy: vector moves, not a call to memcpy per row.
            to.cast::<[f32; NR]>().write_unaligned(w.add((k0 + p) * ldw + j0).cast::<[f32; NR]>().read_unaligned());
            to = to.add(NR);
        }
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn dispatch(m: usize, t: &Tile) {
    // Tiles that fetch ahead are compiled apart, so that the others' depth
    // loop carries no test for it.
    macro_rules! by_fetch {
        ($m:literal) => {
            if t.ahead.1 > 0 {
                tile::<$m, true>(t)
            } else {
                tile::<$m, false>(t)
            }
        };
    }
    match m {
        1 => by_fetch!(1),
        2 => by_fetch!(2),
        3 => by_fetch!(3),
        4 => by_fetch!(4),
        5 => by_fetch!(5),
        _ => by_fetch!(6),
    }
}

/// `M` pixels x 16 channels over one depth block, accumulated in registers;
/// with `FETCH`, asking for `t.ahead`'s lines on the way.
#[target_feature(enable = "avx2,fma")]
unsafe fn tile<const M: usize, const FETCH: bool>(t: &Tile) {
    let mut acc = [[_mm256_setzero_ps(); 2]; M];
    if !t.first {
        for (i, row) in acc.iter_mut().enumerate() {
            for (h, r) in row.iter_mut().enumerate() {
                *r = _mm256_loadu_ps(t.c.add(i * t.ldc + 8 * h));
            }
        }
    }
    let mut w = t.w;
    for s in 0..t.kc / t.seg {
        let a0 = s * t.seg_stride;
        for p in 0..t.seg {
            let step = s * t.seg + p;
            if FETCH && step < t.ahead.1 {
                _mm_prefetch::<_MM_HINT_T1>(t.ahead.0.wrapping_add(NR * step).cast());
            }
            let (b0, b1) = (_mm256_loadu_ps(w), _mm256_loadu_ps(w.add(8)));
            for (i, row) in acc.iter_mut().enumerate() {
                let x = _mm256_broadcast_ss(&*t.a[i].add(a0 + p * t.step));
                row[0] = _mm256_fmadd_ps(x, b0, row[0]);
                row[1] = _mm256_fmadd_ps(x, b1, row[1]);
            }
            w = w.add(NR);
        }
    }
    if let Some((bias, relu, scale, shift)) = t.last {
        let zero = _mm256_setzero_ps();
        for h in 0..2 {
            let bv = _mm256_loadu_ps(bias.add(8 * h));
            let affine =
                (!scale.is_null()).then(|| (_mm256_loadu_ps(scale.add(8 * h)), _mm256_loadu_ps(shift.add(8 * h))));
            for row in acc.iter_mut() {
                let mut x = _mm256_add_ps(row[h], bv);
                if relu {
                    // max(0, x) returns its second operand for NaN, as the plain `s < 0` test keeps NaN.
                    x = _mm256_max_ps(zero, x);
                }
                if let Some((s, sh)) = affine {
                    x = _mm256_add_ps(_mm256_mul_ps(x, s), sh);
                }
                row[h] = x;
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (h, r) in row.iter().enumerate() {
            _mm256_storeu_ps(t.c.add(i * t.ldc + 8 * h), *r);
        }
    }
}
