//! Dense (fully connected) layers: `y = act(x W + b)` with `W` in Keras's
//! `[in, out]` layout, which is the GEMM's right operand as stored.

use super::dead_inputs::DeadInputs;
use super::gemm::{matmul, Mat, Par};
use super::gemv;
use super::micro;
use rayon::prelude::*;
use shared::numeric::softmax_in_place;
use shared::spec::Activation;

/// Forward for a `[batch, nin]` input. A softmax here is applied only when the caller
/// asks (`apply_softmax`): the last layer's softmax is folded into the loss instead.
/// With `dead`, each input channel's dead value (input `i`'s is
/// `dead[i % len]`) and the layer's kept `d W`: at batch 1 the rows of inputs
/// at their dead value are then not read ([`DeadInputs`]).
#[allow(clippy::too_many_arguments)]
pub fn forward(
    act: Activation,
    apply_softmax: bool,
    kernel: &[f32],
    bias: &[f32],
    x: &[f32],
    batch: usize,
    nin: usize,
    y: &mut [f32],
    dead: Option<(&[f32], &mut DeadInputs)>,
) {
    let units = bias.len();
    if let Some((d, cache)) = dead.filter(|_| batch == 1) {
        if cache.matvec(x, nin, kernel, units, d, y) {
            return finish(act, apply_softmax, bias, y);
        }
    }
    // Small batches (inference) stream the weights once instead of packing them.
    if !gemv::matvec(x, batch, nin, kernel, units, y) && !micro::gemm_par(x, batch, nin, kernel, units, y) {
        matmul(Mat::new(x, batch, nin), Mat::new(kernel, nin, units), y, false, Par::Rayon);
    }
    finish(act, apply_softmax, bias, y);
}

/// The bias and the activation over the products `y` (rows of `bias.len()`).
fn finish(act: Activation, apply_softmax: bool, bias: &[f32], y: &mut [f32]) {
    let units = bias.len();
    for row in y.chunks_exact_mut(units) {
        row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
        match act {
            Activation::Relu => row.iter_mut().for_each(|v| *v = v.max(0.0)),
            Activation::Relu6 => row.iter_mut().for_each(|v| *v = v.clamp(0.0, 6.0)),
            Activation::Softmax if apply_softmax => softmax_in_place(row),
            _ => {}
        }
    }
}

/// ReLU6's backward: the gradient passes only where `0 < y < 6`.
pub fn relu6_mask(dy: &mut [f32], y: &[f32]) {
    dy.iter_mut().zip(y).for_each(|(d, &y)| {
        if y <= 0.0 || y >= 6.0 {
            *d = 0.0
        }
    })
}

/// Backward; `dy` is consumed (turned into the pre-activation gradient in place).
/// `softmax_applied` says whether the forward applied the softmax (its output is `y`).
#[allow(clippy::too_many_arguments)]
pub fn backward(
    act: Activation,
    softmax_applied: bool,
    kernel: &[f32],
    x: &[f32],
    y: &[f32],
    dy: &mut [f32],
    batch: usize,
    nin: usize,
    dkernel: &mut [f32],
    dbias: &mut [f32],
    dx: Option<&mut [f32]>,
) {
    let units = dbias.len();
    match act {
        Activation::Relu => dy.iter_mut().zip(y).for_each(|(d, &y)| {
            if y <= 0.0 {
                *d = 0.0
            }
        }),
        Activation::Relu6 => relu6_mask(dy, y),
        Activation::Softmax if softmax_applied => {
            // dz = y * (dy - sum(dy * y)) row by row.
            for (d, yr) in dy.chunks_exact_mut(units).zip(y.chunks_exact(units)) {
                let dot: f32 = d.iter().zip(yr).map(|(a, b)| a * b).sum();
                d.iter_mut().zip(yr).for_each(|(d, y)| *d = y * (*d - dot));
            }
        }
        _ => {}
    }
    let dy: &[f32] = dy;
    // dW = x^T dy, and below dX^T = W dy^T, on the micro-kernel from
    // transposed copies of the small operands (x and dy: a batch of rows):
    // the gemm crate ran the first layer's backward at a quarter of the FMA
    // peak (batch 32: K = 32 for dW, a strided W^T for dX).
    if !micro::gemm_par(&transpose_padded(x, batch, nin, batch), nin, batch, dy, units, dkernel) {
        matmul(Mat::new(x, batch, nin).t(), Mat::new(dy, batch, units), dkernel, false, Par::Rayon);
    }
    let sums: Vec<f64> = dy
        .par_chunks(units.max(1))
        .fold(
            || vec![0.0f64; units],
            |mut s, row| {
                s.iter_mut().zip(row).for_each(|(s, &d)| *s += d as f64);
                s
            },
        )
        .collect::<Vec<_>>()
        .into_iter()
        .fold(vec![0.0f64; units], |mut a, b| {
            a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
            a
        });
    dbias.iter_mut().zip(&sums).for_each(|(d, s)| *d = *s as f32);
    if let Some(dx) = dx {
        // dX^T = W dy^T over the batch padded with zero columns to the
        // micro-kernel's 16: a batch of 36 (or an epoch's last, short one)
        // fell to the gemm crate on a strided W^T, FC6's backward 107 ms
        // against 43. Each column is its own sum, so the padding changes no
        // value.
        let padded = batch.next_multiple_of(16);
        let mut dxt = vec![0.0f32; nin * padded];
        if micro::gemm_par(kernel, nin, units, &transpose_padded(dy, batch, units, padded), padded, &mut dxt) {
            for (p, row) in dxt.chunks_exact(padded).enumerate() {
                for (i, &v) in row[..batch].iter().enumerate() {
                    dx[i * nin + p] = v;
                }
            }
        } else {
            matmul(Mat::new(dy, batch, units), Mat::new(kernel, nin, units).t(), dx, false, Par::Rayon);
        }
    }
}

/// The transpose of the row-major `rows x cols` matrix `m`, each of its
/// `cols` rows padded with zeros to `width` values (`width >= rows`).
fn transpose_padded(m: &[f32], rows: usize, cols: usize, width: usize) -> Vec<f32> {
    assert_eq!(m.len(), rows * cols, "rows x cols values");
    let mut t = vec![0.0f32; cols * width];
    for (i, row) in m.chunks_exact(cols).enumerate() {
        for (j, &v) in row.iter().enumerate() {
            t[j * width + i] = v;
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(seed: usize, n: usize) -> Vec<f32> {
        (0..n).map(|i| (((i + seed * 131) * 2654435761usize) % 1009) as f32 / 504.5 - 1.0).collect()
    }

    /// The batched shapes that run on the micro-kernel (units multiples of
    /// 16: forward, dW and dX all take it where the CPU has AVX-512; dX pads
    /// a batch that is not) against f64 sums.
    #[test]
    fn batched_products_match_f64_sums() {
        for batch in [32, 36, 5] {
            batched_products_at(batch);
        }
    }

    fn batched_products_at(batch: usize) {
        let (nin, units) = (70, 48);
        let (x, k, b) = (data(5, batch * nin), data(6, nin * units), data(7, units));
        let mut y = vec![0.0; batch * units];
        forward(Activation::None, false, &k, &b, &x, batch, nin, &mut y, None);
        let mut dy = data(8, batch * units);
        let dy0 = dy.clone();
        let (mut dk, mut db, mut dx) = (vec![0.0; k.len()], vec![0.0; units], vec![0.0; x.len()]);
        backward(Activation::None, false, &k, &x, &y, &mut dy, batch, nin, &mut dk, &mut db, Some(&mut dx));
        let close = |got: f32, want: f64, what: &str| {
            assert!((got as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()), "{what}: {got} vs {want}");
        };
        for i in 0..batch {
            for j in 0..units {
                let want: f64 =
                    (0..nin).map(|p| x[i * nin + p] as f64 * k[p * units + j] as f64).sum::<f64>() + b[j] as f64;
                close(y[i * units + j], want, "y");
            }
        }
        for p in 0..nin {
            for j in 0..units {
                let want: f64 = (0..batch).map(|i| x[i * nin + p] as f64 * dy0[i * units + j] as f64).sum();
                close(dk[p * units + j], want, "dW");
            }
            for i in 0..batch {
                let want: f64 = (0..units).map(|j| dy0[i * units + j] as f64 * k[p * units + j] as f64).sum();
                close(dx[i * nin + p], want, "dX");
            }
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let (batch, nin, units) = (3, 7, 5);
        for (act, sm) in [
            (Activation::None, false),
            (Activation::Relu, false),
            (Activation::Relu6, false),
            (Activation::Softmax, true),
        ] {
            let x = data(1, batch * nin);
            let k = data(2, nin * units);
            let b = data(3, units);
            let r = data(4, batch * units);
            let loss = |x: &[f32], k: &[f32], b: &[f32]| -> f64 {
                let mut y = vec![0.0; batch * units];
                forward(act, sm, k, b, x, batch, nin, &mut y, None);
                y.iter().zip(&r).map(|(a, b)| *a as f64 * *b as f64).sum()
            };
            let mut y = vec![0.0; batch * units];
            forward(act, sm, &k, &b, &x, batch, nin, &mut y, None);
            let mut dy = r.clone();
            let (mut dk, mut db, mut dx) = (vec![0.0; k.len()], vec![0.0; units], vec![0.0; x.len()]);
            backward(act, sm, &k, &x, &y, &mut dy, batch, nin, &mut dk, &mut db, Some(&mut dx));
            let h = 1e-2f32;
            let tol = |n: f64| 2e-3 * (1.0 + n.abs());
            for i in 0..k.len() {
                let (mut kp, mut km) = (k.clone(), k.clone());
                kp[i] += h;
                km[i] -= h;
                let n = (loss(&x, &kp, &b) - loss(&x, &km, &b)) / (2.0 * h as f64);
                assert!((n - dk[i] as f64).abs() < tol(n), "{act:?} dk[{i}] {n} vs {}", dk[i]);
            }
            for i in 0..units {
                let (mut bp, mut bm) = (b.clone(), b.clone());
                bp[i] += h;
                bm[i] -= h;
                let n = (loss(&x, &k, &bp) - loss(&x, &k, &bm)) / (2.0 * h as f64);
                assert!((n - db[i] as f64).abs() < tol(n), "{act:?} db[{i}] {n} vs {}", db[i]);
            }
            for i in 0..x.len() {
                let (mut xp, mut xm) = (x.clone(), x.clone());
                xp[i] += h;
                xm[i] -= h;
                let n = (loss(&xp, &k, &b) - loss(&xm, &k, &b)) / (2.0 * h as f64);
                assert!((n - dx[i] as f64).abs() < tol(n), "{act:?} dx[{i}] {n} vs {}", dx[i]);
            }
        }
    }
}
