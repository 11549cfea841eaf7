//! Small-batch `y = x W` for dense layers: a streaming matrix-vector product.
//!
//! At batch 1 to [`MAX_BATCH`] a dense layer is memory-bound: FC6 of AlexNet
//! reads 151 MB of weights for 75 MFLOP. A general GEMM first packs the weight
//! matrix into its own blocked layout, which reads and writes it once more than
//! the product needs. Here every weight is loaded at most once, straight from
//! Keras's `[in, out]` layout (the layout training uses, so nothing is kept
//! twice). The rows of `W` are cut into `KPARTS` fixed depth parts, each a
//! contiguous run of memory that one task streams front to back (whole rows,
//! four at a time, adding `x[b, i] * W[i, cols]` into accumulators that stay
//! in L1); the parts' partial sums are then added in part order. The rows of
//! zero inputs are not read at all: after a ReLU, FC7 and FC8 stream about
//! half their weights. Cutting by
//! columns instead left each thread 8 KB runs of every 16 KB row, and the
//! prefetchers restarting at every run held FC6 to ~30 GB/s on 2 threads.
//! Each output is a fixed sequence of fused multiply-adds and part sums, so the
//! result does not depend on the thread count or on which SIMD width the CPU
//! offers.

use rayon::prelude::*;
use std::ops::Range;

/// Largest batch this path serves. Above it the GEMM's packing pays for itself:
/// on AlexNet-227's FC6 this path is 1.8x faster at batch 1, 1.15x at batch 2,
/// even at 3 and 10 % slower at 4 (the 2048-column accumulators of several
/// rows no longer fit in L1 with the weight runs).
pub const MAX_BATCH: usize = 2;
/// Accumulator values per task (all batch rows together): 16 KB, half of L1,
/// so a 4096-unit layer at batch 1 reads whole rows.
const ACC: usize = 4096;
/// Weight rows folded into one accumulator update.
const ROWS: usize = 4;
/// Depth parts: fixed (not the thread count) so that the sums are too, and
/// enough to keep a few more cores than two busy.
const KPARTS: usize = 8;

/// `y = x W` (`x` `[batch, nin]`, `W` `[nin, units]`, `y` `[batch, units]`, all
/// row-major), or `false` without touching `y` when this path does not apply:
/// a batch above [`MAX_BATCH`] or a CPU without FMA (where the fused sums
/// would need a slow software fallback).
pub fn matvec(x: &[f32], batch: usize, nin: usize, w: &[f32], units: usize, y: &mut [f32]) -> bool {
    assert_eq!(x.len(), batch * nin, "input has the wrong size");
    assert_eq!(w.len(), nin * units, "weights have the wrong size");
    assert_eq!(y.len(), batch * units, "output has the wrong size");
    let Some(isa) = Isa::detect() else { return false };
    if batch == 0 || batch > MAX_BATCH {
        return false;
    }
    if nin == 0 || units == 0 {
        y.fill(0.0);
        return true;
    }
    let width = units.min(ACC / batch);
    let depth = nin.div_ceil(KPARTS);
    let parts = nin.div_ceil(depth);
    // Partial sums laid out `[part][column block][batch][cols]`: every task's
    // output is one contiguous chunk.
    let mut partial = vec![0.0f32; parts * batch * units];
    partial.par_chunks_mut(batch * units).enumerate().for_each(|(p, pp)| {
        let rows = p * depth..(nin.min((p + 1) * depth));
        pp.par_chunks_mut(batch * width).enumerate().for_each(|(blk, t)| {
            block(isa, x, batch, nin, w, units, rows.clone(), blk * width, t);
        });
    });
    y.fill(0.0);
    for pp in partial.chunks_exact(batch * units) {
        for (blk, t) in pp.chunks(batch * width).enumerate() {
            let wd = t.len() / batch;
            for (b, tb) in t.chunks_exact(wd).enumerate() {
                y[b * units + blk * width..][..wd].iter_mut().zip(tb).for_each(|(y, v)| *y += v);
            }
        }
    }
    true
}

/// The best instruction set for the kernel on this CPU.
#[derive(Clone, Copy)]
enum Isa {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Isa {
    fn detect() -> Option<Isa> {
        #[cfg(target_arch = "x86_64")]
        {
            if shared::kernels::x86::has_avx512f() && is_x86_feature_detected!("fma") {
                return Some(Isa::Avx512);
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Some(Isa::Avx2);
            }
        }
        None
    }
}

/// Columns `c0 .. c0 + out.len() / batch` of `x[:, rows] W[rows, :]` into `out` (`[batch, width]`).
#[allow(clippy::too_many_arguments)]
fn block(
    isa: Isa,
    x: &[f32],
    batch: usize,
    nin: usize,
    w: &[f32],
    units: usize,
    rows: Range<usize>,
    c0: usize,
    out: &mut [f32],
) {
    let k = Block { x, nin, w, units, rows, c0 };
    match batch {
        1 => dispatch::<1>(isa, &k, out),
        2 => dispatch::<2>(isa, &k, out),
        _ => unreachable!("matvec checked the batch"),
    }
}

/// One task's share: weight rows `rows`, columns from `c0`.
struct Block<'a> {
    x: &'a [f32],
    nin: usize,
    w: &'a [f32],
    units: usize,
    rows: Range<usize>,
    c0: usize,
}

fn dispatch<const B: usize>(isa: Isa, k: &Block, out: &mut [f32]) {
    match isa {
        // SAFETY: `Isa::detect` found these features on the running CPU.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { block_avx512::<B>(k, out) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { block_avx2::<B>(k, out) },
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
fn block_avx512<const B: usize>(k: &Block, out: &mut [f32]) {
    block_body::<B>(k, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn block_avx2<const B: usize>(k: &Block, out: &mut [f32]) {
    block_body::<B>(k, out)
}

/// The kernel, compiled once per instruction set by the wrappers above (which
/// turn `mul_add` into vector FMAs); `out` is `[B, width]`.
#[inline(always)]
fn block_body<const B: usize>(k: &Block, out: &mut [f32]) {
    let wd = out.len() / B;
    let mut acc = [[0.0f32; ACC]; B];
    let row = |i: usize| &k.w[i * k.units + k.c0..][..wd];
    let (x, nin) = (k.x, k.nin);
    // Rows whose inputs are all zero add nothing (`0 * w + a == a` for
    // finite `w`) and are not read: after a ReLU about half of a dense
    // layer's inputs are zero, so it streams about half its weights. The
    // rows read are folded in the same order with the same operations, so
    // skipping gives the bits of folding every row.
    let mut live = k.rows.clone().filter(|&i| (0..B).any(|b| x[b * nin + i] != 0.0));
    loop {
        let group: [usize; ROWS] = std::array::from_fn(|_| live.next().unwrap_or(usize::MAX));
        if group[ROWS - 1] == usize::MAX {
            // The last 1-3 rows, one at a time.
            for i in group.into_iter().take_while(|&i| i != usize::MAX) {
                let wi = row(i);
                for (b, a) in acc.iter_mut().enumerate() {
                    let xi = x[b * nin + i];
                    a[..wd].iter_mut().zip(wi).for_each(|(a, &v)| *a = xi.mul_add(v, *a));
                }
            }
            break;
        }
        let [i0, i1, i2, i3] = group;
        let (w0, w1, w2, w3) = (row(i0), row(i1), row(i2), row(i3));
        for (b, a) in acc.iter_mut().enumerate() {
            let xb = &x[b * nin..][..nin];
            let (x0, x1, x2, x3) = (xb[i0], xb[i1], xb[i2], xb[i3]);
            for ((((a, &v0), &v1), &v2), &v3) in a[..wd].iter_mut().zip(w0).zip(w1).zip(w2).zip(w3) {
                *a = x3.mul_add(v3, x2.mul_add(v2, x1.mul_add(v1, x0.mul_add(v0, *a))));
            }
        }
    }
    for (o, a) in out.chunks_exact_mut(wd).zip(&acc) {
        o.copy_from_slice(&a[..wd]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_f64_reference_over_batches_and_ragged_shapes() {
        for (nin, units) in [(7, 5), (9, 1030), (33, 2048), (1, 3), (37, 4100), (3, 20), (0, 4)] {
            for batch in 1..=MAX_BATCH {
                let x: Vec<f32> = (0..batch * nin).map(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5).collect();
                let w: Vec<f32> = (0..nin * units).map(|i| ((i * 104729) % 89) as f32 / 89.0 - 0.5).collect();
                let mut y = vec![f32::NAN; batch * units];
                if !matvec(&x, batch, nin, &w, units, &mut y) {
                    return; // no FMA on this CPU: the caller uses the GEMM
                }
                for b in 0..batch {
                    for j in 0..units {
                        let want: f64 = (0..nin).map(|i| x[b * nin + i] as f64 * w[i * units + j] as f64).sum();
                        let got = y[b * units + j] as f64;
                        assert!((got - want).abs() < 1e-4, "{nin}x{units} b{b} j{j}: {got} vs {want}");
                    }
                }
            }
        }
    }

    /// Rows of zero inputs are skipped, not folded: the bits must still be
    /// those of folding every row in order (per depth part, then the parts'
    /// sums in order), whatever the pattern of zeros (runs, singles, -0.0, a
    /// row zero in one batch row only, all zero).
    #[test]
    fn skipping_zero_inputs_gives_the_bits_of_folding_every_row() {
        for (nin, units) in [(37, 4100), (64, 33), (9, 16), (5, 1)] {
            for batch in 1..=MAX_BATCH {
                for pattern in 0..4 {
                    let x: Vec<f32> = (0..batch * nin)
                        .map(|i| {
                            let (b, r) = (i / nin, i % nin);
                            let zero = match pattern {
                                0 => r % 3 != 1,
                                1 => (r / 5) % 2 == 0 && b == 0,
                                2 => true,
                                _ => r % 7 == 0,
                            };
                            let v = ((i * 7919) % 97) as f32 / 97.0 - 0.5;
                            if !zero {
                                v
                            } else if r % 2 == 0 {
                                0.0
                            } else {
                                -0.0
                            }
                        })
                        .collect();
                    let w: Vec<f32> = (0..nin * units).map(|i| ((i * 104729) % 89) as f32 / 89.0 - 0.5).collect();
                    let mut y = vec![f32::NAN; batch * units];
                    if !matvec(&x, batch, nin, &w, units, &mut y) {
                        return;
                    }
                    let depth = nin.div_ceil(KPARTS);
                    for b in 0..batch {
                        for j in 0..units {
                            let mut want = 0.0f32;
                            for part in (0..nin).collect::<Vec<_>>().chunks(depth) {
                                let a = part.iter().fold(0.0f32, |a, &i| x[b * nin + i].mul_add(w[i * units + j], a));
                                want += a;
                            }
                            let got = y[b * units + j];
                            assert_eq!(got.to_bits(), want.to_bits(), "{nin}x{units} b{b} j{j} pattern {pattern}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn rejects_batches_above_the_limit() {
        let n = MAX_BATCH + 1;
        assert!(!matvec(&vec![0.0; n], n, 1, &[0.0; 1], 1, &mut vec![0.0; n]), "batch {n} is the GEMM's");
    }
}
