//! BatchNormalization over the last (channel) axis, as Keras computes it.
//!
//! Training normalises with the batch mean and the *biased* batch variance over
//! all other axes (N, H, W) and updates the moving statistics with
//! `moving = moving * momentum + batch * (1 - momentum)`, using that same biased
//! variance (Keras 3's `ops.moments`; TF 2's fused kernel differed only by the
//! factor m/(m-1) in the moving variance, negligible at AlexNet's m >= 5408).
//! Inference uses the moving statistics.

use super::wide::vectorized;
use rayon::prelude::*;

/// Rows per parallel chunk of the reductions; fixed so sums do not depend on thread count.
const CHUNK_ROWS: usize = 2048;

/// What the backward pass needs from a training forward.
#[derive(Clone, Debug, Default)]
pub struct BnCache {
    pub mean: Vec<f32>,
    pub inv_std: Vec<f32>,
}

vectorized! {
    /// Adds each channel's values of the `c`-channel rows of `x` into `s`
    /// (in f64, row after row).
    fn add_sums(x: &[f32], c: usize, s: &mut [f64]) {
        for row in x.chunks_exact(c) {
            s.iter_mut().zip(row).for_each(|(acc, &v)| *acc += v as f64);
        }
    }
}

vectorized! {
    /// Adds each channel's squared deviations from `mean` into `s` (f64).
    fn add_squared_deviations(x: &[f32], c: usize, mean: &[f64], s: &mut [f64]) {
        for row in x.chunks_exact(c) {
            for ((acc, &v), &m) in s.iter_mut().zip(row).zip(mean) {
                *acc += (v as f64 - m).powi(2);
            }
        }
    }
}

/// Per-channel f64 sums over the rows of a `[rows, c]` matrix: `add(chunk,
/// partial)` over fixed chunks of rows in parallel, then the partials in
/// chunk order (deterministic, whatever the thread count).
fn channel_sums(x: &[f32], c: usize, add: impl Fn(&[f32], &mut [f64]) + Sync) -> Vec<f64> {
    let parts: Vec<Vec<f64>> = x
        .par_chunks(CHUNK_ROWS * c)
        .map(|chunk| {
            let mut s = vec![0.0f64; c];
            add(chunk, &mut s);
            s
        })
        .collect();
    let mut total = vec![0.0f64; c];
    for p in parts {
        total.iter_mut().zip(&p).for_each(|(t, v)| *t += v);
    }
    total
}

/// Training forward: normalise with batch statistics, update the moving ones, return the cache.
#[allow(clippy::too_many_arguments)]
pub fn forward_train(
    x: &[f32],
    c: usize,
    gamma: &[f32],
    beta: &[f32],
    epsilon: f32,
    momentum: f32,
    moving_mean: &mut [f32],
    moving_var: &mut [f32],
    y: &mut [f32],
) -> BnCache {
    let rows = x.len() / c;
    let m = rows.max(1) as f64;
    let mean: Vec<f64> = channel_sums(x, c, |x, s| add_sums(x, c, s)).into_iter().map(|s| s / m).collect();
    let var: Vec<f64> =
        channel_sums(x, c, |x, s| add_squared_deviations(x, c, &mean, s)).into_iter().map(|s| s / m).collect();
    for j in 0..c {
        moving_mean[j] = moving_mean[j] * momentum + mean[j] as f32 * (1.0 - momentum);
        moving_var[j] = moving_var[j] * momentum + var[j] as f32 * (1.0 - momentum);
    }
    let mean: Vec<f32> = mean.iter().map(|&v| v as f32).collect();
    let inv_std: Vec<f32> = var.iter().map(|&v| (1.0 / (v + epsilon as f64).sqrt()) as f32).collect();
    apply(x, c, &mean, &inv_std, gamma, beta, y);
    BnCache { mean, inv_std }
}

/// Inference forward with the moving statistics.
#[allow(clippy::too_many_arguments)]
pub fn forward_eval(
    x: &[f32],
    c: usize,
    gamma: &[f32],
    beta: &[f32],
    epsilon: f32,
    moving_mean: &[f32],
    moving_var: &[f32],
    y: &mut [f32],
) {
    let (scale, shift) = eval_affine(gamma, beta, epsilon, moving_mean, moving_var);
    apply_affine(x, c, &scale, &shift, y);
}

/// The inference pass as one per-channel `(scale, shift)`: `y = x * scale + shift`,
/// so that a conv before it can apply it in its own epilogue.
pub fn eval_affine(
    gamma: &[f32],
    beta: &[f32],
    epsilon: f32,
    moving_mean: &[f32],
    moving_var: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let inv_std: Vec<f32> = moving_var.iter().map(|&v| 1.0 / (v + epsilon).sqrt()).collect();
    affine(moving_mean, &inv_std, gamma, beta)
}

/// `(x - mean) * inv_std * gamma + beta` folded to `x * scale + shift`.
fn affine(mean: &[f32], inv_std: &[f32], gamma: &[f32], beta: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let scale: Vec<f32> = inv_std.iter().zip(gamma).map(|(s, g)| s * g).collect();
    let shift: Vec<f32> = (0..scale.len()).map(|j| beta[j] - mean[j] * scale[j]).collect();
    (scale, shift)
}

/// `y = (x - mean) * inv_std * gamma + beta`, folded to one multiply-add per element.
fn apply(x: &[f32], c: usize, mean: &[f32], inv_std: &[f32], gamma: &[f32], beta: &[f32], y: &mut [f32]) {
    let (scale, shift) = affine(mean, inv_std, gamma, beta);
    apply_affine(x, c, &scale, &shift, y);
}

/// `y = x * scale + shift` per channel.
fn apply_affine(x: &[f32], c: usize, scale: &[f32], shift: &[f32], y: &mut [f32]) {
    // Elementwise, so any chunking gives the same result: small chunks let one
    // image's 13x13 maps use both cores too.
    const APPLY_ROWS: usize = 128;
    y.par_chunks_mut(APPLY_ROWS * c)
        .zip(x.par_chunks(APPLY_ROWS * c))
        .for_each(|(yc, xc)| affine_rows(xc, c, scale, shift, yc));
}

vectorized! {
    /// `y = x * scale + shift` over `c`-channel rows (zipped iterators: no
    /// bounds checks, so the row vectorises).
    fn affine_rows(x: &[f32], c: usize, scale: &[f32], shift: &[f32], y: &mut [f32]) {
        for (yr, xr) in y.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
            for (((y, &x), &s), &t) in yr.iter_mut().zip(xr).zip(scale).zip(shift) {
                *y = x * s + t;
            }
        }
    }
}

/// Backward of the training forward: writes `dgamma`, `dbeta` and `dx`.
///
/// `dx = gamma * inv_std * (dy - mean(dy) - xhat * mean(dy * xhat))`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    x: &[f32],
    c: usize,
    gamma: &[f32],
    cache: &BnCache,
    dy: &[f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
    dx: &mut [f32],
) {
    let rows = x.len() / c;
    let m = rows.max(1) as f64;
    let (mean, inv_std) = (&cache.mean, &cache.inv_std);
    let sum_dy = channel_sums(dy, c, |d, s| add_sums(d, c, s));
    // Sum of dy * xhat, pairing each dy row with its x row.
    let parts: Vec<Vec<f64>> = dy
        .par_chunks(CHUNK_ROWS * c)
        .zip(x.par_chunks(CHUNK_ROWS * c))
        .map(|(dc, xc)| {
            let mut s = vec![0.0f64; c];
            add_dy_xhat(dc, xc, c, mean, inv_std, &mut s);
            s
        })
        .collect();
    let mut sum_dy_xhat = vec![0.0f64; c];
    for p in parts {
        sum_dy_xhat.iter_mut().zip(&p).for_each(|(t, v)| *t += v);
    }
    for j in 0..c {
        dbeta[j] = sum_dy[j] as f32;
        dgamma[j] = sum_dy_xhat[j] as f32;
    }
    let k: Vec<f32> = (0..c).map(|j| gamma[j] * inv_std[j]).collect();
    let mdy: Vec<f32> = sum_dy.iter().map(|s| (s / m) as f32).collect();
    let mdyx: Vec<f32> = sum_dy_xhat.iter().map(|s| (s / m) as f32).collect();
    dx.par_chunks_mut(CHUNK_ROWS * c)
        .zip(dy.par_chunks(CHUNK_ROWS * c))
        .zip(x.par_chunks(CHUNK_ROWS * c))
        .for_each(|((dxc, dc), xc)| input_gradient_rows(dc, xc, c, mean, inv_std, &k, &mdy, &mdyx, dxc));
}

vectorized! {
    /// Adds `dy * xhat` per channel into `s` (f64), `xhat = (x - mean) * inv_std`.
    fn add_dy_xhat(dy: &[f32], x: &[f32], c: usize, mean: &[f32], inv_std: &[f32], s: &mut [f64]) {
        for (dr, xr) in dy.chunks_exact(c).zip(x.chunks_exact(c)) {
            for j in 0..c {
                s[j] += (dr[j] * (xr[j] - mean[j]) * inv_std[j]) as f64;
            }
        }
    }
}

vectorized! {
    /// `dx = k (dy - mean(dy) - xhat mean(dy xhat))` over `c`-channel rows.
    #[allow(clippy::too_many_arguments)]
    fn input_gradient_rows(
        dy: &[f32],
        x: &[f32],
        c: usize,
        mean: &[f32],
        inv_std: &[f32],
        k: &[f32],
        mdy: &[f32],
        mdyx: &[f32],
        dx: &mut [f32],
    ) {
        for ((dxr, dr), xr) in dx.chunks_exact_mut(c).zip(dy.chunks_exact(c)).zip(x.chunks_exact(c)) {
            for j in 0..c {
                let xhat = (xr[j] - mean[j]) * inv_std[j];
                dxr[j] = k[j] * (dr[j] - mdy[j] - xhat * mdyx[j]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(seed: u32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed * 97)) % 1000) as f32 / 250.0 - 1.5)
            .collect()
    }

    #[test]
    fn training_forward_normalises_and_updates_moving_stats() {
        let (rows, c) = (40, 3);
        let x: Vec<f32> = (0..rows * c).map(|i| (i % c) as f32 * 2.0 + (i / c) as f32 * 0.1).collect();
        let (mut mm, mut mv) = (vec![0.0; c], vec![1.0; c]);
        let mut y = vec![0.0; x.len()];
        forward_train(&x, c, &[1.0; 3], &[0.0; 3], 1e-3, 0.99, &mut mm, &mut mv, &mut y);
        // Channel j has mean 2j + 1.95 and biased variance 0.1^2 * (40^2 - 1) / 12.
        let var = 0.01 * (1600.0 - 1.0) / 12.0;
        for j in 0..c {
            assert!((mm[j] - 0.01 * (2.0 * j as f32 + 1.95)).abs() < 1e-5);
            assert!((mv[j] - (0.99 + 0.01 * var)).abs() < 1e-5);
            let col: Vec<f32> = y.iter().skip(j).step_by(c).copied().collect();
            let mean: f32 = col.iter().sum::<f32>() / rows as f32;
            let v: f32 = col.iter().map(|a| (a - mean).powi(2)).sum::<f32>() / rows as f32;
            assert!(mean.abs() < 1e-5);
            assert!((v - var / (var + 1e-3)).abs() < 1e-4);
        }
    }

    /// Finite differences of L = sum(r * y) through the batch statistics.
    #[test]
    fn training_gradients_match_finite_differences() {
        let (rows, c) = (12, 4);
        let x = data(1, rows * c);
        let gamma = vec![0.7, -1.3, 1.1, 0.4];
        let beta = vec![0.1, 0.2, -0.3, 0.0];
        let r = data(7, rows * c);
        let loss = |x: &[f32], g: &[f32], b: &[f32]| -> f64 {
            let mut y = vec![0.0; x.len()];
            forward_train(x, c, g, b, 1e-3, 0.99, &mut [0.0; 4], &mut [1.0; 4], &mut y);
            y.iter().zip(&r).map(|(a, b)| *a as f64 * *b as f64).sum()
        };
        let mut y = vec![0.0; x.len()];
        let cache = forward_train(&x, c, &gamma, &beta, 1e-3, 0.99, &mut [0.0; 4], &mut [1.0; 4], &mut y);
        let (mut dg, mut db, mut dx) = (vec![0.0; c], vec![0.0; c], vec![0.0; x.len()]);
        backward(&x, c, &gamma, &cache, &r, &mut dg, &mut db, &mut dx);
        let h = 1e-2;
        let fd = |f: &dyn Fn(f32) -> f64| (f(h) - f(-h)) / (2.0 * h as f64);
        for i in 0..x.len() {
            let n = fd(&|e| {
                let mut xp = x.clone();
                xp[i] += e;
                loss(&xp, &gamma, &beta)
            });
            assert!((n - dx[i] as f64).abs() < 2e-3 * (1.0 + n.abs()), "dx[{i}] {n} vs {}", dx[i]);
        }
        for j in 0..c {
            let n = fd(&|e| {
                let mut g = gamma.clone();
                g[j] += e;
                loss(&x, &g, &beta)
            });
            assert!((n - dg[j] as f64).abs() < 2e-3 * (1.0 + n.abs()), "dgamma[{j}] {n} vs {}", dg[j]);
            let n = fd(&|e| {
                let mut b = beta.clone();
                b[j] += e;
                loss(&x, &gamma, &b)
            });
            assert!((n - db[j] as f64).abs() < 2e-3 * (1.0 + n.abs()), "dbeta[{j}] {n} vs {}", db[j]);
        }
    }

    #[test]
    fn eval_uses_moving_statistics() {
        let x = vec![1.0, 2.0, 3.0, 4.0];
        let mut y = vec![0.0; 4];
        forward_eval(&x, 2, &[2.0, 1.0], &[0.5, 0.0], 0.0 + 1e-3, &[1.0, 0.0], &[4.0 - 1e-3, 1.0 - 1e-3], &mut y);
        assert_eq!(y, vec![0.5, 2.0, 2.5, 4.0]);
    }
}
