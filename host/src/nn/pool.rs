//! MaxPool2D with valid padding on NHWC data. The forward pass records which
//! input won each window so the backward pass is a scatter, not a search.

use rayon::prelude::*;

/// Input and output geometry of one pooling layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolGeom {
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub pool: usize,
    pub stride: usize,
    pub oh: usize,
    pub ow: usize,
}

impl PoolGeom {
    /// Valid pooling: `out = (in - pool) / stride + 1`.
    pub fn new(h: usize, w: usize, c: usize, pool: usize, stride: usize) -> Self {
        PoolGeom { h, w, c, pool, stride, oh: (h - pool) / stride + 1, ow: (w - pool) / stride + 1 }
    }
    fn in_len(&self) -> usize {
        self.h * self.w * self.c
    }
    fn out_len(&self) -> usize {
        self.oh * self.ow * self.c
    }
}

/// Max over each window; `argmax` (when given) receives the winner's index within its image.
/// Ties go to the first element in row-major window order, as TensorFlow does.
pub fn forward(g: &PoolGeom, x: &[f32], y: &mut [f32], argmax: Option<&mut [u32]>) {
    let job = |(xi, yi): (&[f32], &mut [f32]), mut ai: Option<&mut [u32]>| {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let o = (oy * g.ow + ox) * g.c;
                for ch in 0..g.c {
                    let mut best = f32::NEG_INFINITY;
                    let mut at = ((oy * g.stride) * g.w + ox * g.stride) * g.c + ch;
                    for ky in 0..g.pool {
                        let row = ((oy * g.stride + ky) * g.w + ox * g.stride) * g.c + ch;
                        for kx in 0..g.pool {
                            let i = row + kx * g.c;
                            // `>` keeps the first maximum; NaN never wins but is kept if alone.
                            if xi[i] > best {
                                best = xi[i];
                                at = i;
                            }
                        }
                    }
                    yi[o + ch] = xi[at];
                    if let Some(a) = ai.as_deref_mut() {
                        a[o + ch] = at as u32;
                    }
                }
            }
        }
    };
    let xs = x.par_chunks(g.in_len()).zip(y.par_chunks_mut(g.out_len()));
    match argmax {
        Some(a) => xs.zip(a.par_chunks_mut(g.out_len())).for_each(|(p, a)| job(p, Some(a))),
        None => xs.for_each(|p| job(p, None)),
    }
}

/// Route each output gradient to the input that won its window; `dx` is overwritten.
pub fn backward(g: &PoolGeom, argmax: &[u32], dy: &[f32], dx: &mut [f32]) {
    dx.par_chunks_mut(g.in_len()).zip(dy.par_chunks(g.out_len())).zip(argmax.par_chunks(g.out_len())).for_each(
        |((dxi, dyi), ai)| {
            dxi.fill(0.0);
            for (&a, &d) in ai.iter().zip(dyi) {
                dxi[a as usize] += d;
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_window_maxima_and_routes_gradients() {
        // 4x4x1 image, pool 3 stride 1 -> 2x2 (AlexNet-style overlapping windows).
        let x: Vec<f32> = vec![1., 5., 2., 0., 3., 4., 9., 1., 0., 2., 8., 7., 6., 1., 1., 3.];
        let g = PoolGeom::new(4, 4, 1, 3, 1);
        let (mut y, mut a) = (vec![0.0; 4], vec![0u32; 4]);
        forward(&g, &x, &mut y, Some(&mut a));
        assert_eq!(y, vec![9., 9., 9., 9.]);
        let mut dx = vec![1.0; 16];
        backward(&g, &a, &[1., 2., 3., 4.], &mut dx);
        let mut want = vec![0.0; 16];
        want[6] = 10.0;
        assert_eq!(dx, want);
    }

    /// Finite differences on distinct values (no ties), two channels, stride 2.
    #[test]
    fn gradients_match_finite_differences() {
        let (h, w, c) = (7, 6, 2);
        let g = PoolGeom::new(h, w, c, 3, 2);
        let n = 2;
        let x: Vec<f32> = (0..n * h * w * c).map(|i| ((i * 37) % 101) as f32 * 0.1).collect();
        let r: Vec<f32> = (0..n * g.out_len()).map(|i| (i % 5) as f32 - 2.0).collect();
        let loss = |x: &[f32]| -> f64 {
            let mut y = vec![0.0; n * g.out_len()];
            forward(&g, x, &mut y, None);
            y.iter().zip(&r).map(|(a, b)| (*a * *b) as f64).sum()
        };
        let (mut y, mut a) = (vec![0.0; n * g.out_len()], vec![0; n * g.out_len()]);
        forward(&g, &x, &mut y, Some(&mut a));
        let mut dx = vec![0.0; x.len()];
        backward(&g, &a, &r, &mut dx);
        for i in 0..x.len() {
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp[i] += 1e-2;
            xm[i] -= 1e-2;
            let num = (loss(&xp) - loss(&xm)) / 2e-2;
            assert!((num - dx[i] as f64).abs() < 1e-3, "dx[{i}]: {num} vs {}", dx[i]);
        }
    }
}
