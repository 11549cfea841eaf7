//! Small-batch `y = x W` for dense layers: a streaming matrix-vector product.
//!
//! At batch 1 to [`MAX_BATCH`] a dense layer is memory-bound: FC6 of AlexNet
//! reads 151 MB of weights for 75 MFLOP. A general GEMM first packs the weight
//! matrix into its own blocked layout, which reads and writes it once more than
//! the product needs. Here every weight is loaded exactly once, straight from
//! Keras's `[in, out]` layout (the layout training uses, so nothing is kept
//! twice): each task owns a block of output columns and walks the rows of `W`,
//! four at a time, adding `x[b, i] * W[i, cols]` into accumulators that stay
//! in L1. Each output is a plain ascending sum over `i` with fused
//! multiply-adds, so the result does not depend on the thread count or on
//! which SIMD width the CPU offers.

use rayon::prelude::*;

/// Largest batch this path serves. Above it the GEMM's packing pays for itself:
/// on AlexNet-227's FC6 this path is 1.8x faster at batch 1, 1.15x at batch 2,
/// even at 3 and 10 % slower at 4 (the 2048-column accumulators of several
/// rows no longer fit in L1 with the weight runs).
pub const MAX_BATCH: usize = 2;
/// Most output columns per task: 8 KB of every weight row, long contiguous
/// runs for the prefetchers (narrower blocks measured slower on FC6), and
/// accumulators of `MAX_BATCH * 8 KB`, still in L1.
const COLS: usize = 2048;
/// Weight rows folded into one accumulator update.
const ROWS: usize = 4;

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
    // As many column blocks as threads (more for wide layers): every output's
    // sum is the same whatever the blocking, so it may follow the thread count.
    let tasks = rayon::current_num_threads().max(units.div_ceil(COLS));
    let width = units.div_ceil(tasks).next_multiple_of(16).min(COLS);
    if batch == 1 {
        // One row: the column blocks of `y` are its contiguous chunks.
        y.par_chunks_mut(width).enumerate().for_each(|(blk, yb)| block(isa, x, 1, nin, w, units, blk * width, yb));
    } else {
        // Blocks laid out `[block][batch][cols]`, then scattered into `y`.
        let mut tmp = vec![0.0f32; batch * units];
        tmp.par_chunks_mut(batch * width).enumerate().for_each(|(blk, t)| {
            block(isa, x, batch, nin, w, units, blk * width, t);
        });
        for (blk, t) in tmp.chunks(batch * width).enumerate() {
            let wd = t.len() / batch;
            for (b, tb) in t.chunks_exact(wd).enumerate() {
                y[b * units + blk * width..][..wd].copy_from_slice(tb);
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
            if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma") {
                return Some(Isa::Avx512);
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Some(Isa::Avx2);
            }
        }
        None
    }
}

/// Columns `c0 .. c0 + out.len() / batch` of `x W` into `out` (`[batch, width]`).
#[allow(clippy::too_many_arguments)]
fn block(isa: Isa, x: &[f32], batch: usize, nin: usize, w: &[f32], units: usize, c0: usize, out: &mut [f32]) {
    match batch {
        1 => dispatch::<1>(isa, x, nin, w, units, c0, out),
        2 => dispatch::<2>(isa, x, nin, w, units, c0, out),
        _ => unreachable!("matvec checked the batch"),
    }
}

fn dispatch<const B: usize>(isa: Isa, x: &[f32], nin: usize, w: &[f32], units: usize, c0: usize, out: &mut [f32]) {
    match isa {
        // SAFETY: `Isa::detect` found these features on the running CPU.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { block_avx512::<B>(x, nin, w, units, c0, out) },
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { block_avx2::<B>(x, nin, w, units, c0, out) },
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
fn block_avx512<const B: usize>(x: &[f32], nin: usize, w: &[f32], units: usize, c0: usize, out: &mut [f32]) {
    block_body::<B>(x, nin, w, units, c0, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn block_avx2<const B: usize>(x: &[f32], nin: usize, w: &[f32], units: usize, c0: usize, out: &mut [f32]) {
    block_body::<B>(x, nin, w, units, c0, out)
}

/// The kernel, compiled once per instruction set by the wrappers above (which
/// turn `mul_add` into vector FMAs); `out` is `[B, width]`.
#[inline(always)]
fn block_body<const B: usize>(x: &[f32], nin: usize, w: &[f32], units: usize, c0: usize, out: &mut [f32]) {
    let wd = out.len() / B;
    let mut acc = [[0.0f32; COLS]; B];
    let row = |i: usize| &w[i * units + c0..][..wd];
    let mut i = 0;
    while i + ROWS <= nin {
        let (w0, w1, w2, w3) = (row(i), row(i + 1), row(i + 2), row(i + 3));
        for (b, a) in acc.iter_mut().enumerate() {
            let xb = &x[b * nin + i..][..ROWS];
            let (x0, x1, x2, x3) = (xb[0], xb[1], xb[2], xb[3]);
            for ((((a, &v0), &v1), &v2), &v3) in a[..wd].iter_mut().zip(w0).zip(w1).zip(w2).zip(w3) {
                *a = x3.mul_add(v3, x2.mul_add(v2, x1.mul_add(v1, x0.mul_add(v0, *a))));
            }
        }
        i += ROWS;
    }
    for i in i..nin {
        let wi = row(i);
        for (b, a) in acc.iter_mut().enumerate() {
            let xi = x[b * nin + i];
            a[..wd].iter_mut().zip(wi).for_each(|(a, &v)| *a = xi.mul_add(v, *a));
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
        for (nin, units) in [(7, 5), (9, 1030), (33, 2048), (1, 3)] {
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
        let n = MAX_BATCH + 1;
        assert!(!matvec(&vec![0.0; n], n, 1, &[0.0; 1], 1, &mut vec![0.0; n]), "batch {n} is the GEMM's");
    }
}
