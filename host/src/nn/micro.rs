//! An AVX-512 GEMM for inference convolutions, `c = epilogue(a w)`, reading the
//! kernel in place from Keras's `[k, n]` layout; on CPUs with AVX2 only, the
//! same products through [`avx2`]'s tile (same bits).
//!
//! The `gemm` crate packs the whole kernel matrix again on every call; the batch-1
//! conv path calls it once per chunk of output pixels (conv 2 of AlexNet-227:
//! six chunks, 2.4 MB of weights repacked each time), which is why those convs
//! ran at 60-75 % of the FMA peak. Here the weights are never copied: each
//! 64-channel panel of a depth block (`KC` rows, 96 KB) stays in L2 while every
//! 6-pixel group of the chunk streams past it, 24 zmm accumulators per tile.
//! The bias, the ReLU and an optional per-channel affine map (an inference
//! BatchNormalization folded in) are applied while the tile is still in
//! registers, so the output is written once.
//!
//! Each output is a plain ascending sum over the depth with fused
//! multiply-adds, the same whatever the chunking or thread count.

pub use super::epilogue::Epilogue;

/// Depth rows per block: a 64-channel panel of them is 96 KB, in L2 with the
/// chunk's block of im2col rows.
const KC: usize = 384;
/// Depth rows ahead that a tile asks for the kernel's next values (each row
/// is a new set of cache lines, `n` values apart). On a Xeon with two FMA
/// ports the batch-1 convs' sum went from 6.9-7.2 to 6.4-6.8 ms with it
/// (`train_profile -- 1 150 eval`, three alternating pairs); 4 rows ahead
/// measured about halfway.
const PFK: usize = 8;

use shared::geometry::ConvGeom;
use std::ops::Range;
/// Output pixels per register tile (rows of `a`).
const MR: usize = 6;

/// `c[rows, n] = epilogue(a[rows, k] w[k, n])`, all row-major and contiguous,
/// or `false` without touching `c` when this path does not apply: no micro-kernel
/// on this CPU, or `n` not a multiple of 16 (the plain GEMM serves those).
pub fn gemm(a: &[f32], rows: usize, k: usize, w: &[f32], n: usize, c: &mut [f32], ep: &Epilogue) -> bool {
    gemm_cols(a, rows, k, k, w, n, 0..n, c, n, ep, &[])
}

/// [`gemm`] for the output channels `cols` only, row `i` of `a` at `i * lda`
/// and of `c` at `i * ldc` (`cols.len()` values each; `cols` must start and
/// end at multiples of 16). Each value is the same
/// ascending sum as in [`gemm`], so splitting a product by columns across
/// threads (each reading its part of `w` once) gives the same bytes.
///
/// `next` (the weights of the caller's next product, or empty) is asked
/// for while the tiles after the first row group run: they find their own
/// weights in cache already, and without the hint a product with few rows
/// (Winograd at batch 1: 16 tiles, three row groups) streamed each panel
/// from memory in its first row group and left memory idle in the others.
/// A hint only: the values are the same.
#[allow(clippy::too_many_arguments)]
pub fn gemm_cols(
    a: &[f32],
    rows: usize,
    k: usize,
    lda: usize,
    w: &[f32],
    n: usize,
    cols: Range<usize>,
    c: &mut [f32],
    ldc: usize,
    ep: &Epilogue,
    next: &[f32],
) -> bool {
    assert!(lda >= k && (rows == 0 || a.len() >= (rows - 1) * lda + k), "a has the wrong size");
    assert!(cols.start <= cols.end && cols.end <= n, "channels out of range");
    assert!(ldc >= cols.len() && (rows == 0 || c.len() >= (rows - 1) * ldc + cols.len()), "c has the wrong size");
    check(k, w, n, ep);
    if !available(k, n) || !cols.start.is_multiple_of(16) || !cols.len().is_multiple_of(16) {
        return false;
    }
    let kc = depth_block();
    let blocks: Vec<(usize, usize)> = (0..k).step_by(kc).map(|k0| (k0, kc.min(k - k0))).collect();
    let a = a.as_ptr();
    // SAFETY: a micro-kernel serves this CPU (`available`); row `i` of `a` has `k` values
    // from `a + i * lda` (asserted), so every block `k0 .. k0 + kc` of it is in
    // bounds; `check` verified `w`, `c` holds rows of `cols.len()` values
    // `ldc` apart (asserted) and `cols` is inside `0 .. n` at multiples of 16.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        let a_row = |i: usize, k0: usize| a.wrapping_add(i * lda + k0);
        let p = Product {
            rows,
            blocks: &blocks,
            a_row,
            seg: None,
            w,
            ldw: n,
            cols: cols.clone(),
            ldc,
            ep,
            next,
            accumulate: false,
        };
        drive(p, c)
    };
    let _ = (a, blocks, cols);
    true
}

/// `c (+)= a^T w` on the calling thread, with `a` given as its transpose:
/// `k` rows of `rows` values `lda` apart, and `w` as `k` rows of `n` values
/// `ldw` apart; `c` is `[rows, n]` contiguous, added to when `accumulate`.
/// The weight gradient of a Winograd point, `dU = V^T dM`, has this shape
/// with `k` the tiles, and both operands are read in place; the `gemm`
/// crate packed both again on every call, a tenth of conv 2's backward.
/// `false` without touching `c` where the micro-kernel does not serve `n`
/// ([`gemm`]). Each value is one chain of fused multiply-adds in ascending
/// `p`, from zero or from `c`'s value, so a product split along `k` into
/// calls that accumulate gives the same bits as one call.
#[allow(clippy::too_many_arguments)]
pub fn gemm_at(
    a: &[f32],
    rows: usize,
    k: usize,
    lda: usize,
    w: &[f32],
    n: usize,
    ldw: usize,
    c: &mut [f32],
    accumulate: bool,
) -> bool {
    assert!(lda >= rows && (k == 0 || a.len() >= (k - 1) * lda + rows), "a has the wrong size");
    assert!(ldw >= n && (k == 0 || w.len() >= (k - 1) * ldw + n), "w has the wrong size");
    assert_eq!(c.len(), rows * n, "c has the wrong size");
    if !available(k, n) || rows == 0 {
        return false;
    }
    let kc = depth_block();
    let blocks: Vec<(usize, usize)> = (0..k).step_by(kc).map(|k0| (k0, kc.min(k - k0))).collect();
    let zeros = vec![0.0f32; n];
    let a = a.as_ptr();
    // SAFETY: a micro-kernel serves this CPU (`available`). Row `i` of `a^T` is column `i`
    // of `a`: the values `a[p * lda + i]`, read as `kc` one-value segments
    // `lda` apart from `a_row(i, k0)`, in bounds for every `p < k` and
    // `i < rows <= lda` (asserted); `w` has `k` rows of `n` values `ldw`
    // apart (asserted), `c` `rows` rows of `n` and `n` is a multiple of 16.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        let a_row = |i: usize, k0: usize| a.wrapping_add(k0 * lda + i);
        let ep = Epilogue::plain(&zeros);
        let p = Product {
            rows,
            blocks: &blocks,
            a_row,
            seg: Some((1, lda)),
            w,
            ldw,
            cols: 0..n,
            ldc: n,
            ep: &ep,
            next: &[],
            accumulate,
        };
        drive(p, c)
    };
    let _ = (a, blocks, zeros, lda, ldw, accumulate);
    true
}

/// `c = a w` (all row-major and contiguous, `c` `[rows, n]`) on the
/// micro-kernel across rayon's pool, or `false` without touching `c` where
/// it does not serve `k x n` ([`gemm`]). Few rows against large weights (a
/// dense layer's batch) are split by column panels, each job reading only
/// its columns of `w` and writing its own buffer; others by runs of rows. Each value is the
/// kernel's ascending sum over `k`, whatever the split or thread count.
pub fn gemm_par(a: &[f32], rows: usize, k: usize, w: &[f32], n: usize, c: &mut [f32]) -> bool {
    use rayon::prelude::*;
    assert_eq!(a.len(), rows * k, "a has the wrong size");
    assert_eq!(c.len(), rows * n, "c has the wrong size");
    assert_eq!(w.len(), k * n, "w has the wrong size");
    if !available(k, n) || rows == 0 {
        return false;
    }
    let zeros = vec![0.0f32; n];
    let plain = Epilogue::plain(&zeros);
    let threads = rayon::current_num_threads();
    let panels = n.div_ceil(64);
    // Split by columns where that moves fewer values: each column job reads
    // all of `a` and its share of `w` and writes its own block (copied into
    // `c`), each row job reads all of `w`. A dense layer's weights dwarf its
    // batch of rows: at batch 128 (the tutorial's) FC6's row jobs read its
    // 151 MB eight times.
    let (col_jobs, row_jobs) = (2 * threads, 4 * threads);
    let by_cols = rows * k * col_jobs + k * n + 2 * rows * n <= k * n * row_jobs + rows * k + rows * n;
    if panels >= col_jobs && by_cols {
        let per = panels.div_ceil(col_jobs) * 64;
        let jobs: Vec<Range<usize>> = (0..n).step_by(per).map(|c0| c0..n.min(c0 + per)).collect();
        par_column_blocks(c, n, &jobs, |cols| {
            let mut out = vec![0.0f32; rows * cols.len()];
            let done = gemm_cols(a, rows, k, k, w, n, cols.clone(), &mut out, cols.len(), &plain, &[]);
            assert!(done, "served (checked above)");
            out
        });
    } else {
        let per = rows.div_ceil(row_jobs).next_multiple_of(MR);
        c.par_chunks_mut(per * n).enumerate().for_each(|(j, cj)| {
            let nr = cj.len() / n;
            let done = gemm_cols(&a[j * per * k..][..nr * k], nr, k, k, w, n, 0..n, cj, n, &plain, &[]);
            assert!(done, "served (checked above)");
        });
    }
    true
}

/// Runs `job(cols)` for each column range of `jobs` on rayon's pool, each
/// returning its `[rows, cols.len()]` block, and copies the blocks into the
/// rows of `c` (`n` values each): a product split by output channels, each
/// job reading only its columns of the weights ([`gemm_par`]).
pub fn par_column_blocks(
    c: &mut [f32],
    n: usize,
    jobs: &[Range<usize>],
    job: impl Fn(&Range<usize>) -> Vec<f32> + Sync,
) {
    use rayon::prelude::*;
    let blocks: Vec<Vec<f32>> = jobs.par_iter().map(&job).collect();
    for (cols, block) in jobs.iter().zip(&blocks) {
        for (row, b) in c.chunks_exact_mut(n).zip(block.chunks_exact(cols.len())) {
            row[cols.clone()].copy_from_slice(b);
        }
    }
}

/// A batch of NHWC images with the conv's zero padding already in place: every
/// receptive field of the output lies inside its image, so each kernel row of
/// it is one contiguous run of `kernel * c` values.
pub struct Padded<'a> {
    pub data: &'a [f32],
    pub h: usize,
    pub w: usize,
}

/// Output channels `cols` of the output pixels `r0 .. r0 + out.len() / cols.len()`
/// (counted across images) of the convolution `g` of `x`, with `ep` applied,
/// into `out` (`[pixels, cols.len()]`): the GEMM of [`gemm`] reading the
/// receptive fields straight from the padded input instead of an im2col copy
/// (conv 2 of AlexNet-227 would copy 7 MB). `false` without touching `out`
/// where [`gemm`] would refuse, or when a kernel row is shorter than 16 values
/// (the loop per row would cost more than its multiplies).
pub fn conv(
    g: &ConvGeom,
    x: &Padded,
    r0: usize,
    cols: Range<usize>,
    w: &[f32],
    out: &mut [f32],
    ep: &Epilogue,
) -> bool {
    let (k, n, run) = (g.kernel() * g.kernel() * g.in_c, g.out_c, g.kernel() * g.in_c);
    assert!(cols.start <= cols.end && cols.end <= n, "channels out of range");
    let rows = out.len() / cols.len().max(1);
    check(k, w, n, ep);
    assert_eq!(out.len(), rows * cols.len(), "out has the wrong size");
    if !serves_conv(g) || rows == 0 || !cols.start.is_multiple_of(16) || !cols.len().is_multiple_of(16) {
        return false;
    }
    let img = x.h * x.w * g.in_c;
    assert!(x.h >= (g.out_h - 1) * g.stride() + g.kernel(), "padded input too short");
    assert!(x.w >= (g.out_w - 1) * g.stride() + g.kernel(), "padded input too narrow");
    let pixels = g.out_h * g.out_w;
    assert!((r0 + rows).div_ceil(pixels) * img <= x.data.len(), "padded input has too few images");
    // Long kernel rows (runs) are cut into even depth blocks of at most KC;
    // short ones (conv 1's 33) are grouped, whole, into blocks of segments.
    let (data, row_len, cin) = (x.data.as_ptr(), x.w * g.in_c, g.in_c);
    let kc = depth_block();
    let (blocks, seg): (Vec<(usize, usize)>, _) = if run >= kc {
        let parts = run.div_ceil(kc);
        let blocks = (0..g.kernel())
            .flat_map(|ky| {
                (0..parts).map(move |b| {
                    let (s, e) = (b * run / parts, (b + 1) * run / parts);
                    (ky * run + s, e - s)
                })
            })
            .collect();
        (blocks, None)
    } else {
        let per = kc / run;
        let blocks = (0..g.kernel()).step_by(per).map(|ky| (ky * run, per.min(g.kernel() - ky) * run)).collect();
        (blocks, Some((run, row_len)))
    };
    let a_row = |i: usize, k0: usize| {
        let (n_img, p) = ((r0 + i) / pixels, (r0 + i) % pixels);
        let (oy, ox) = (p / g.out_w, p % g.out_w);
        let (ky, off) = (k0 / run, k0 % run);
        let at = n_img * img + (oy * g.stride() + ky) * row_len + ox * g.stride() * cin + off;
        data.wrapping_add(at)
    };
    // SAFETY: a micro-kernel serves this CPU. A block `(k0, kc)` of row `i` reads `kc`
    // values from `a_row(i, k0)`: kernel row `ky` at column offset `off + kc <=
    // run`, or whole kernel rows `ky ..` one padded row apart, inside the window of output pixel (oy, ox), which the asserts above
    // put inside image `n_img` of `data`; `check` verified `w` and `out`.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        let ldc = cols.len();
        let p = Product { rows, blocks: &blocks, a_row, seg, w, ldw: n, cols, ldc, ep, next: &[], accumulate: false };
        drive(p, out)
    };
    let _ = (a_row, blocks, seg);
    true
}

/// Whether [`conv`] computes `g` on this CPU (the caller then pads the input).
pub fn serves_conv(g: &ConvGeom) -> bool {
    g.is_square() && available(g.kernel() * g.kernel() * g.in_c, g.out_c) && g.kernel() * g.in_c >= 16
}

/// The size checks both entry points share.
fn check(k: usize, w: &[f32], n: usize, ep: &Epilogue) {
    assert_eq!(w.len(), k * n, "w has the wrong size");
    assert_eq!(ep.bias.len(), n, "bias has the wrong size");
    if let Some((s, t)) = ep.affine {
        assert!(s.len() == n && t.len() == n, "affine has the wrong size");
    }
}

/// Whether the micro-kernel serves a depth `k`, `n`-channel product here.
pub(crate) fn available(k: usize, n: usize) -> bool {
    n.is_multiple_of(16) && k > 0 && isa().is_some()
}

/// Which micro-kernel this CPU runs: AVX-512's, or on CPUs with AVX2 and
/// FMA only (an AMD Zen 3) [`avx2`]'s, shaped for their 16 registers. Both
/// sum each output in the same order, so they give the same bits.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Isa {
    Avx512,
    Avx2,
}

/// The micro-kernel this CPU runs, or `None` (the `gemm` crate serves every
/// product).
pub(crate) fn isa() -> Option<Isa> {
    #[cfg(test)]
    if let Some(forced) = tests::FORCED.with(|f| f.get()) {
        return Some(forced);
    }
    #[cfg(target_arch = "x86_64")]
    {
        if shared::kernels::x86::has_avx512f() {
            return Some(Isa::Avx512);
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Some(Isa::Avx2);
        }
    }
    None
}

/// Depth rows per block: [`KC`] for AVX-512, [`avx2::KC`] for AVX2.
fn depth_block() -> usize {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        Some(Isa::Avx2) => avx2::KC,
        _ => KC,
    }
}

/// `x86::drive` or `avx2::drive`, whichever [`isa`] names (same contract).
#[cfg(target_arch = "x86_64")]
unsafe fn drive(p: Product<'_, impl Fn(usize, usize) -> *const f32>, c: &mut [f32]) {
    match isa() {
        Some(Isa::Avx512) => x86::drive(p, c),
        Some(Isa::Avx2) => avx2::drive(p, c),
        None => unreachable!("callers check `available` first"),
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod product;
#[cfg(target_arch = "x86_64")]
use product::Product;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use crate::nn::micro::{Product, MR, PFK};
    use std::arch::x86_64::*;

    /// Where one tile reads and writes, and what it applies on the last depth block.
    pub(super) struct Tile {
        /// Each pixel row's first value of the depth block.
        a: [*const f32; MR],
        w: *const f32,
        ldw: usize,
        c: *mut f32,
        ldc: usize,
        kc: usize,
        /// `kc` is made of segments of `seg` values, each `seg_stride` after the
        /// last in `a` (and contiguous in `w`): the kernel rows of a receptive field.
        seg: usize,
        seg_stride: usize,
        first: bool,
        /// What the tile asks the cache for, one line per 16 values of a
        /// depth step ([`Ahead`]).
        ahead: Ahead,
        /// Bias, scale and shift at the tile's first channel; scale null without affine.
        last: Option<(*const f32, bool, *const f32, *const f32)>,
    }

    /// The lines a tile prefetches: at depth step `p < steps`, one line per
    /// 16-value vector of the tile (`V`) from `at + p * step`, into L1 (`l1`:
    /// its own weights' rows `PFK` ahead) or L2 (its share of the caller's
    /// next weights).
    #[derive(Clone, Copy)]
    pub(super) struct Ahead {
        at: *const f32,
        step: usize,
        steps: usize,
        l1: bool,
    }

    /// The [`Product`] `p` into `c`.
    ///
    /// # Safety
    /// AVX-512F must be present; `a_row(i, k0)` must be valid for `kc` reads for
    /// every row and block (each segment when `seg` is given, `len` dividing
    /// every `kc`), `w` for `k` rows `ldw` apart, `c` for `rows` rows of `cols.len()` values `ldc` apart,
    /// `cols` inside `0 .. ldw`, its start and length multiples of 16. `next`
    /// is only prefetched (any slice).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn drive(p: Product<'_, impl Fn(usize, usize) -> *const f32>, c: &mut [f32]) {
        let shallow = p.shallow();
        let Product { rows, blocks, a_row, seg, w, ldw, cols, ldc, ep, next, accumulate } = p;
        // `next`'s lines, shared out in order among the tiles after the
        // first row group (the first one streams the weights themselves).
        let lines = next.len().div_ceil(16);
        let later = rows.div_ceil(MR).saturating_sub(1) * blocks.len() * cols.len().div_ceil(64);
        let per_tile = lines.div_ceil(later.max(1));
        let mut handed = 0usize;
        let mut ahead_of_later = |v: usize| {
            let steps = per_tile.div_ceil(v);
            let at = next.as_ptr().wrapping_add(16 * handed.min(lines));
            let left = lines.saturating_sub(handed);
            handed += steps * v;
            Ahead { at, step: 16 * v, steps: steps.min(left.div_ceil(v)), l1: false }
        };
        let (w, c) = (w.as_ptr(), c.as_mut_ptr());
        // SAFETY (the closure's body): the caller's contract covers every
        // block, panel and row group of the loops below.
        // A panel's vector count and, on the last depth block, its epilogue.
        let panel = |b: usize, j0: usize| {
            let v = (cols.end - j0).min(64) / 16;
            let last = (b + 1 == blocks.len()).then(|| {
                let (s, t) = match ep.affine {
                    Some((s, t)) => (s[j0..].as_ptr(), t[j0..].as_ptr()),
                    None => (std::ptr::null(), std::ptr::null()),
                };
                (ep.bias[j0..].as_ptr(), ep.relu, s, t)
            });
            (v, last)
        };
        let mut run = |b: usize, j0: usize, (v, last): (usize, Option<_>), i0: usize| unsafe {
            let (k0, kc) = blocks[b];
            let ahead = if i0 == 0 {
                // A hint, never a read: past the last row it names other memory.
                Ahead { at: w.wrapping_add((k0 + PFK) * ldw + j0), step: ldw, steps: kc, l1: true }
            } else {
                ahead_of_later(v)
            };
            let m = MR.min(rows - i0);
            let mut a = [std::ptr::null(); MR];
            for (i, a) in a.iter_mut().enumerate().take(m) {
                *a = a_row(i0 + i, k0);
            }
            let t = Tile {
                a,
                w: w.add(k0 * ldw + j0),
                ldw,
                c: c.add(i0 * ldc + j0 - cols.start),
                ldc,
                kc,
                seg: seg.map_or(kc, |s| s.0),
                seg_stride: seg.map_or(0, |s| s.1),
                first: b == 0 && !accumulate,
                ahead,
                last,
            };
            dispatch(m, v, &t);
        };
        if shallow {
            // One shallow depth block (a weight gradient's K is the batch):
            // row groups outside, so each writes its rows whole, front to
            // back. Panels outside wrote every row 256 bytes at a time, one
            // panel's pass after another, and FC6's weight gradient ran at
            // 26 GMAC/s (batch 32: its backward took 68 ms, now 43).
            for i0 in (0..rows).step_by(MR) {
                for j0 in cols.clone().step_by(64) {
                    run(0, j0, panel(0, j0), i0);
                }
            }
        } else {
            // Each panel of a depth block stays in L2 while every row group
            // streams past it.
            for b in 0..blocks.len() {
                for j0 in cols.clone().step_by(64) {
                    let p = panel(b, j0);
                    for i0 in (0..rows).step_by(MR) {
                        run(b, j0, p, i0);
                    }
                }
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn dispatch(m: usize, v: usize, t: &Tile) {
        macro_rules! by_v {
            ($m:literal) => {
                match v {
                    1 => tile::<$m, 1>(t),
                    2 => tile::<$m, 2>(t),
                    3 => tile::<$m, 3>(t),
                    _ => tile::<$m, 4>(t),
                }
            };
        }
        match m {
            1 => by_v!(1),
            2 => by_v!(2),
            3 => by_v!(3),
            4 => by_v!(4),
            5 => by_v!(5),
            _ => by_v!(6),
        }
    }

    /// `M` pixels x `16 V` channels over one depth block, accumulated in registers.
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const M: usize, const V: usize>(t: &Tile) {
        let mut acc = [[_mm512_setzero_ps(); V]; M];
        if !t.first {
            for (i, row) in acc.iter_mut().enumerate() {
                for (v, r) in row.iter_mut().enumerate() {
                    *r = _mm512_loadu_ps(t.c.add(i * t.ldc + 16 * v));
                }
            }
        }
        for s in 0..t.kc / t.seg {
            let (a0, w0) = (s * t.seg_stride, t.w.add(s * t.seg * t.ldw));
            for p in 0..t.seg {
                let wp = w0.add(p * t.ldw);
                let step = s * t.seg + p;
                if step < t.ahead.steps {
                    let at = t.ahead.at.wrapping_add(step * t.ahead.step);
                    for v in 0..V {
                        if t.ahead.l1 {
                            _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(16 * v).cast());
                        } else {
                            _mm_prefetch::<_MM_HINT_T1>(at.wrapping_add(16 * v).cast());
                        }
                    }
                }
                let mut b = [_mm512_setzero_ps(); V];
                for (v, b) in b.iter_mut().enumerate() {
                    *b = _mm512_loadu_ps(wp.add(16 * v));
                }
                for (i, row) in acc.iter_mut().enumerate() {
                    let x = _mm512_set1_ps(*t.a[i].add(a0 + p));
                    for (r, b) in row.iter_mut().zip(&b) {
                        *r = _mm512_fmadd_ps(x, *b, *r);
                    }
                }
            }
        }
        if let Some((bias, relu, scale, shift)) = t.last {
            let zero = _mm512_setzero_ps();
            for v in 0..V {
                let bv = _mm512_loadu_ps(bias.add(16 * v));
                let affine = (!scale.is_null())
                    .then(|| (_mm512_loadu_ps(scale.add(16 * v)), _mm512_loadu_ps(shift.add(16 * v))));
                for row in acc.iter_mut() {
                    let mut x = _mm512_add_ps(row[v], bv);
                    if relu {
                        // max(0, x) returns its second operand for NaN, as the plain `s < 0` test keeps NaN.
                        x = _mm512_max_ps(zero, x);
                    }
                    if let Some((s, sh)) = affine {
                        x = _mm512_add_ps(_mm512_mul_ps(x, s), sh);
                    }
                    row[v] = x;
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            for (v, r) in row.iter().enumerate() {
                _mm512_storeu_ps(t.c.add(i * t.ldc + 16 * v), *r);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        /// The micro-kernel [`isa`] names on this thread while a test
        /// forces one (only kernels this CPU runs). Per thread, so that tests
        /// running beside it keep the CPU's choice: Winograd's kept filters
        /// are laid out for the kernel that was chosen when they were made.
        pub(super) static FORCED: Cell<Option<Isa>> = const { Cell::new(None) };
    }

    /// The micro-kernels this CPU can run.
    fn kernels_here() -> Vec<Isa> {
        let mut out = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") {
                out.push(Isa::Avx512);
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                out.push(Isa::Avx2);
            }
        }
        out
    }

    /// `f` under each micro-kernel this CPU runs, in turn, on this thread
    /// (`f` must not hand its products to other threads).
    fn on_each_kernel<T>(mut f: impl FnMut() -> T) -> Vec<(Isa, T)> {
        let out = kernels_here()
            .into_iter()
            .map(|isa| {
                FORCED.with(|forced| forced.set(Some(isa)));
                (isa, f())
            })
            .collect();
        FORCED.with(|forced| forced.set(None));
        out
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// The AVX2 tile and the AVX-512 tile (where this CPU has both) give
    /// the same bits for every entry point: plain and transposed products
    /// with depths past a block (AVX2's blocks are shallower), the shallow
    /// order, the epilogues, and convolutions read in place (long kernel rows
    /// cut into blocks, short ones grouped into segments); and each is close
    /// to an f64 reference. On a CPU with AVX2 alone this checks its tile
    /// against f64; the cross-check runs wherever AVX-512 is present.
    #[test]
    fn each_micro_kernel_gives_the_same_bits() {
        let data = |len: usize, seed: usize| -> Vec<f32> {
            (0..len).map(|i| ((i * 7919 + seed * 104729) % 97) as f32 / 97.0 - 0.5).collect()
        };
        let tol = |k: usize| 1e-4 * (1.0 + k as f64).sqrt();
        for (rows, k, n) in [(13, 700, 48), (7, 100, 64), (20, 1, 16), (6, 257, 32)] {
            let (a, w) = (data(rows * k, 1), data(k * n, 2));
            let bias = data(n, 3);
            let (scale, shift) = (data(n, 4), data(n, 5));
            let ep = Epilogue { bias: &bias, relu: true, affine: Some((&scale, &shift)) };
            let runs = on_each_kernel(|| {
                let mut c = vec![f32::NAN; rows * n];
                assert!(gemm(&a, rows, k, &w, n, &mut c, &ep));
                c
            });
            for (isa, c) in &runs {
                assert_eq!(bits(c), bits(&runs[0].1), "{rows}x{k}x{n}: {isa:?} against {:?}", runs[0].0);
                for (idx, &got) in c.iter().enumerate() {
                    let (i, j) = (idx / n, idx % n);
                    let s: f64 = (0..k).map(|p| a[i * k + p] as f64 * w[p * n + j] as f64).sum();
                    let want = ep.apply(j, s as f32) as f64;
                    assert!((got as f64 - want).abs() < tol(k) * 4.0, "{isa:?} {rows}x{k}x{n} [{i},{j}]");
                }
            }
            // Asking for the next weights (here `a`, any slice) is a hint only.
            let hinted = on_each_kernel(|| {
                let mut c = vec![f32::NAN; rows * n];
                assert!(gemm_cols(&a, rows, k, k, &w, n, 0..n, &mut c, n, &ep, &a));
                c
            });
            for (isa, c) in &hinted {
                assert_eq!(bits(c), bits(&runs[0].1), "{rows}x{k}x{n}: {isa:?} with a hint");
            }
            // The transposed product, accumulating onto `c`.
            let start = data(rows * n, 6);
            let runs = on_each_kernel(|| {
                let mut c = start.clone();
                assert!(gemm_at(&a, rows, k, rows, &w, n, n, &mut c, true));
                c
            });
            for (isa, c) in &runs {
                assert_eq!(bits(c), bits(&runs[0].1), "transposed {rows}x{k}x{n}: {isa:?}");
                for (idx, &got) in c.iter().enumerate() {
                    let (i, j) = (idx / n, idx % n);
                    let s: f64 = (0..k).map(|p| a[p * rows + i] as f64 * w[p * n + j] as f64).sum();
                    let want = s + start[idx] as f64;
                    assert!((got as f64 - want).abs() < tol(k), "{isa:?} transposed {rows}x{k}x{n} [{i},{j}]");
                }
            }
        }
        // Convolutions read in place: (input side, channels in, kernel, stride, channels out).
        for (side, cin, kern, stride, cout) in [(9, 8, 3, 1, 32), (7, 200, 3, 1, 16), (15, 3, 11, 4, 48)] {
            let out_side = (side - kern) / stride + 1;
            let g = ConvGeom::new((side, side, cin), cout, kern, stride, shared::spec::Padding::Valid)
                .expect("a valid geometry");
            assert_eq!(g.out_h, out_side);
            let (x, w) = (data(2 * side * side * cin, 7), data(kern * kern * cin * cout, 8));
            let bias = data(cout, 9);
            let ep = Epilogue { bias: &bias, relu: false, affine: None };
            let rows = 2 * out_side * out_side;
            let runs = on_each_kernel(|| {
                let mut out = vec![f32::NAN; rows * cout];
                let xp = Padded { data: &x, h: side, w: side };
                assert!(conv(&g, &xp, 0, 0..cout, &w, &mut out, &ep));
                out
            });
            let k = kern * kern * cin;
            for (isa, out) in &runs {
                assert_eq!(bits(out), bits(&runs[0].1), "conv {side}x{side}x{cin} k{kern}: {isa:?}");
                for (idx, &got) in out.iter().enumerate() {
                    let (r, j) = (idx / cout, idx % cout);
                    let (img, p) = (r / (out_side * out_side), r % (out_side * out_side));
                    let (oy, ox) = (p / out_side, p % out_side);
                    let mut s = bias[j] as f64;
                    for ky in 0..kern {
                        for kx in 0..kern {
                            for c in 0..cin {
                                let xi = ((img * side + oy * stride + ky) * side + ox * stride + kx) * cin + c;
                                s += x[xi] as f64 * w[((ky * kern + kx) * cin + c) * cout + j] as f64;
                            }
                        }
                    }
                    assert!((got as f64 - s).abs() < tol(k), "{isa:?} conv k{kern} [{r},{j}]: {got} vs {s}");
                }
            }
        }
    }

    /// The pool's splits (by columns for few rows or large weights, by rows
    /// otherwise) give the bytes of one single-threaded call, and those are
    /// close to f64 sums.
    #[test]
    fn parallel_splits_give_the_single_call_bytes() {
        for (rows, k, n) in [(32, 200, 512), (200, 300, 512), (400, 40, 64), (97, 20, 1024), (600, 40, 256)] {
            let a: Vec<f32> = (0..rows * k).map(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5).collect();
            let w: Vec<f32> = (0..k * n).map(|i| ((i * 104729) % 89) as f32 / 89.0 - 0.5).collect();
            let zeros = vec![0.0f32; n];
            let mut one = vec![f32::NAN; rows * n];
            if !gemm(&a, rows, k, &w, n, &mut one, &Epilogue::plain(&zeros)) {
                return; // no micro-kernel here (neither AVX-512 nor AVX2)
            }
            let mut par = vec![f32::NAN; rows * n];
            assert!(gemm_par(&a, rows, k, &w, n, &mut par));
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&par), bits(&one), "{rows}x{k}x{n}");
            for (idx, &got) in par.iter().enumerate() {
                let (i, j) = (idx / n, idx % n);
                let want: f64 = (0..k).map(|p| a[i * k + p] as f64 * w[p * n + j] as f64).sum();
                assert!((got as f64 - want).abs() < 1e-4 * (1.0 + k as f64).sqrt(), "{rows}x{k}x{n} [{i},{j}]");
            }
        }
    }

    /// Against an f64 reference over ragged rows, depths past one block, every
    /// panel width, with and without ReLU and the affine map.
    #[test]
    fn matches_f64_reference() {
        for (rows, k, n) in
            [(1, 1, 16), (7, 5, 32), (13, 400, 96), (6, 800, 64), (20, 3, 48), (11, 385, 112), (13, 32, 160)]
        {
            let a: Vec<f32> = (0..rows * k).map(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5).collect();
            let w: Vec<f32> = (0..k * n).map(|i| ((i * 104729) % 89) as f32 / 89.0 - 0.5).collect();
            let bias: Vec<f32> = (0..n).map(|j| (j % 7) as f32 * 0.1 - 0.3).collect();
            let scale: Vec<f32> = (0..n).map(|j| (j % 5) as f32 * 0.5 - 1.0).collect();
            let shift: Vec<f32> = (0..n).map(|j| (j % 3) as f32 * 0.2).collect();
            for relu in [false, true] {
                for affine in [None, Some((&scale[..], &shift[..]))] {
                    let ep = Epilogue { bias: &bias, relu, affine };
                    let mut c = vec![f32::NAN; rows * n];
                    if !gemm(&a, rows, k, &w, n, &mut c, &ep) {
                        return; // no micro-kernel here: the plain GEMM serves every call
                    }
                    for i in 0..rows {
                        for j in 0..n {
                            let s: f64 = (0..k).map(|p| a[i * k + p] as f64 * w[p * n + j] as f64).sum();
                            let want = ep.apply(j, s as f32);
                            let got = c[i * n + j];
                            assert!(
                                (got - want).abs() < 1e-4 * (1.0 + k as f32).sqrt(),
                                "{rows}x{k}x{n} [{i},{j}]: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
        let mut c = [0.0; 8];
        assert!(!gemm(
            &[1.0; 8],
            1,
            8,
            &[1.0; 64],
            8,
            &mut c,
            &Epilogue { bias: &[0.0; 8], relu: false, affine: None }
        ));
    }

    /// `gemm_at` against an f64 reference: strided operands, ragged rows,
    /// depths past one block, and accumulation onto what `c` holds.
    #[test]
    fn transposed_product_matches_f64_reference() {
        for (rows, k, n, lda, ldw) in
            [(1, 1, 16, 1, 16), (7, 5, 32, 9, 48), (13, 400, 96, 13, 96), (20, 800, 64, 41, 80), (6, 385, 112, 6, 128)]
        {
            let a: Vec<f32> = (0..k * lda).map(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5).collect();
            let w: Vec<f32> = (0..k * ldw).map(|i| ((i * 104729) % 89) as f32 / 89.0 - 0.5).collect();
            let start: Vec<f32> = (0..rows * n).map(|i| (i % 11) as f32 * 0.25 - 1.0).collect();
            for accumulate in [false, true] {
                let mut c = if accumulate { start.clone() } else { vec![f32::NAN; rows * n] };
                if !gemm_at(&a, rows, k, lda, &w, n, ldw, &mut c, accumulate) {
                    return; // no micro-kernel here (neither AVX-512 nor AVX2)
                }
                for i in 0..rows {
                    for j in 0..n {
                        let s: f64 = (0..k).map(|p| a[p * lda + i] as f64 * w[p * ldw + j] as f64).sum();
                        let want = if accumulate { s + start[i * n + j] as f64 } else { s };
                        let got = c[i * n + j] as f64;
                        assert!(
                            (got - want).abs() < 1e-4 * (1.0 + k as f64).sqrt(),
                            "{rows}x{k}x{n} acc {accumulate} [{i},{j}]: {got} vs {want}"
                        );
                    }
                }
            }
        }
        assert!(!gemm_at(&[1.0; 8], 1, 8, 1, &[1.0; 64], 8, 8, &mut [0.0; 8], false));
    }
}
