//! An AVX-512 GEMM for inference convolutions, `c = epilogue(a w)`, reading the
//! kernel in place from Keras's `[k, n]` layout.
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

/// What is applied to `a w` before it is stored: `bias`, then ReLU when
/// `relu`, then `x * scale + shift` per channel when `affine` is given
/// (rounded as [`super::batchnorm`]'s eval pass rounds: a multiply, then an add).
#[derive(Clone, Copy)]
pub struct Epilogue<'a> {
    pub bias: &'a [f32],
    pub relu: bool,
    pub affine: Option<(&'a [f32], &'a [f32])>,
}

impl Epilogue<'_> {
    /// The epilogue of one value of channel `j`, for the plain path and tests.
    pub fn apply(&self, j: usize, v: f32) -> f32 {
        let s = v + self.bias[j];
        let r = if self.relu && s < 0.0 { 0.0 } else { s };
        match self.affine {
            Some((scale, shift)) => r * scale[j] + shift[j],
            None => r,
        }
    }
}

/// Depth rows per block: a 64-channel panel of them is 96 KB, in L2 with the
/// chunk's block of im2col rows.
const KC: usize = 384;
/// Output pixels per register tile (rows of `a`).
const MR: usize = 6;

/// `c[rows, n] = epilogue(a[rows, k] w[k, n])`, all row-major and contiguous,
/// or `false` without touching `c` when this path does not apply: no AVX-512F
/// on this CPU, or `n` not a multiple of 16 (the plain GEMM serves those).
pub fn gemm(a: &[f32], rows: usize, k: usize, w: &[f32], n: usize, c: &mut [f32], ep: &Epilogue) -> bool {
    assert_eq!(a.len(), rows * k, "a has the wrong size");
    assert_eq!(w.len(), k * n, "w has the wrong size");
    assert_eq!(c.len(), rows * n, "c has the wrong size");
    assert_eq!(ep.bias.len(), n, "bias has the wrong size");
    if let Some((s, t)) = ep.affine {
        assert!(s.len() == n && t.len() == n, "affine has the wrong size");
    }
    #[cfg(target_arch = "x86_64")]
    {
        if n.is_multiple_of(16) && k > 0 && is_x86_feature_detected!("avx512f") {
            // SAFETY: AVX-512F is present; the sizes were checked above, and every
            // tile stays within `rows x k`, `k x n` and `rows x n`.
            unsafe { x86::gemm(a, rows, k, w, n, c, ep) };
            return true;
        }
    }
    false
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Epilogue, KC, MR};
    use std::arch::x86_64::*;

    /// Where one tile reads and writes, and what it applies on the last depth block.
    struct Tile {
        a: *const f32,
        lda: usize,
        w: *const f32,
        ldw: usize,
        c: *mut f32,
        ldc: usize,
        kc: usize,
        first: bool,
        /// Bias, scale and shift at the tile's first channel; scale null without affine.
        last: Option<(*const f32, bool, *const f32, *const f32)>,
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gemm(a: &[f32], rows: usize, k: usize, w: &[f32], n: usize, c: &mut [f32], ep: &Epilogue) {
        let (a, w, c) = (a.as_ptr(), w.as_ptr(), c.as_mut_ptr());
        let mut k0 = 0;
        while k0 < k {
            let kc = KC.min(k - k0);
            let last = k0 + kc == k;
            for j0 in (0..n).step_by(64) {
                let v = (n - j0).min(64) / 16;
                let last = last.then(|| {
                    let (s, t) = match ep.affine {
                        Some((s, t)) => (s[j0..].as_ptr(), t[j0..].as_ptr()),
                        None => (std::ptr::null(), std::ptr::null()),
                    };
                    (ep.bias[j0..].as_ptr(), ep.relu, s, t)
                });
                for i0 in (0..rows).step_by(MR) {
                    let m = MR.min(rows - i0);
                    let t = Tile {
                        a: a.add(i0 * k + k0),
                        lda: k,
                        w: w.add(k0 * n + j0),
                        ldw: n,
                        c: c.add(i0 * n + j0),
                        ldc: n,
                        kc,
                        first: k0 == 0,
                        last,
                    };
                    dispatch(m, v, &t);
                }
            }
            k0 += kc;
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
        for p in 0..t.kc {
            let wp = t.w.add(p * t.ldw);
            let mut b = [_mm512_setzero_ps(); V];
            for (v, b) in b.iter_mut().enumerate() {
                *b = _mm512_loadu_ps(wp.add(16 * v));
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_ps(*t.a.add(i * t.lda + p));
                for (r, b) in row.iter_mut().zip(&b) {
                    *r = _mm512_fmadd_ps(x, *b, *r);
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

    /// Against an f64 reference over ragged rows, depths past one block, every
    /// panel width, with and without ReLU and the affine map.
    #[test]
    fn matches_f64_reference() {
        for (rows, k, n) in [(1, 1, 16), (7, 5, 32), (13, 400, 96), (6, 800, 64), (20, 3, 48), (11, 385, 112)] {
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
                        return; // no AVX-512 here: the plain GEMM serves every call
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
}
