//! Softmax and sparse categorical cross-entropy. The last Dense layer's softmax
//! lives here, fused with the loss: `dL/dlogits = (softmax - onehot) / batch` is
//! exact and stable, where backpropagating through a separate softmax is not.

use super::error::NnError;
use ndarray::{Array2, ArrayView2};
use shared::numeric::{argmax, softmax_in_place};

/// Row-wise softmax of `[batch, classes]` logits, numerically stable.
pub fn softmax(logits: ArrayView2<f32>) -> Array2<f32> {
    let mut p = logits.to_owned();
    for mut row in p.rows_mut() {
        match row.as_slice_mut() {
            Some(s) => softmax_in_place(s),
            None => {
                let mut v = row.to_vec();
                softmax_in_place(&mut v);
                row.iter_mut().zip(v).for_each(|(d, s)| *d = s);
            }
        }
    }
    p
}

/// Sparse categorical cross-entropy averaged over the batch:
/// `(loss, dL/dlogits, number of rows whose arg-max is the label)`.
///
/// Panics on a label out of range or a length mismatch; use
/// [`try_softmax_cross_entropy`] where labels come from outside.
pub fn softmax_cross_entropy(logits: ArrayView2<f32>, labels: &[usize]) -> (f32, Array2<f32>, usize) {
    match try_softmax_cross_entropy(logits, labels) {
        Ok(r) => r,
        Err(e) => panic!("softmax_cross_entropy: {e}"),
    }
}

/// [`softmax_cross_entropy`] that reports bad labels instead of panicking.
pub fn try_softmax_cross_entropy(
    logits: ArrayView2<f32>,
    labels: &[usize],
) -> Result<(f32, Array2<f32>, usize), NnError> {
    let (batch, classes) = logits.dim();
    if labels.len() != batch {
        return Err(NnError::LabelCount { labels: labels.len(), batch });
    }
    if let Some((index, &label)) = labels.iter().enumerate().find(|(_, &l)| l >= classes) {
        return Err(NnError::Label { index, label, classes });
    }
    let mut grad = softmax(logits);
    let mut loss = 0.0f64;
    let mut correct = 0;
    for ((mut g, row), &label) in grad.rows_mut().into_iter().zip(logits.rows()).zip(labels) {
        // log softmax computed from the shifted logits, not log(p), so a tiny p stays finite.
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let lse = row.iter().map(|&v| ((v - max) as f64).exp()).sum::<f64>().ln() + max as f64;
        loss += lse - row[label] as f64;
        correct += usize::from(argmax(row.iter().copied()) == Some(label));
        g[label] -= 1.0;
        g.mapv_inplace(|v| flush_subnormal(v / batch as f32));
    }
    Ok(((loss / batch.max(1) as f64) as f32, grad, correct))
}

/// `v`, or zero where it is subnormal. A class whose logit trails the top one
/// by 87 to 104 gets a subnormal probability (and gradient): far below
/// anything an f32 step can use, yet every multiply with one costs a microcode
/// assist on Intel cores. On a Xeon, AlexNet's last dense backward at batch 32
/// took 130-200 ms a step instead of 3 ms with a tenth of its gradients
/// subnormal. TensorFlow flushes these for all its kernels (FTZ/DAZ); here
/// only the loss gradient is flushed, where they arise.
fn flush_subnormal(v: f32) -> f32 {
    if v.is_subnormal() {
        0.0
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn softmax_is_stable_for_huge_logits() {
        let p = softmax(array![[1000.0f32, 1000.0, -1000.0], [0.0, 0.0, 0.0]].view());
        assert!((p[[0, 0]] - 0.5).abs() < 1e-6 && p[[0, 2]] == 0.0);
        assert!((p[[1, 1]] - 1.0 / 3.0).abs() < 1e-6);
        let (loss, g, _) = softmax_cross_entropy(array![[1000.0f32, -1000.0]].view(), &[1]);
        assert!((loss - 2000.0).abs() < 1e-2 && g.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn gradient_has_no_subnormals() {
        // exp(-95) ~ 5.5e-42 and exp(-90) / 2: subnormal in f32 before the flush.
        let logits = array![[0.0f32, -95.0, -90.0, 1.0], [3.0, -92.0, 2.0, -88.0]];
        let (_, g, _) = softmax_cross_entropy(logits.view(), &[0, 2]);
        assert!(g.iter().all(|v| !v.is_subnormal()), "{g:?}");
        assert_eq!((g[[0, 1]], g[[0, 2]], g[[1, 1]], g[[1, 3]]), (0.0, 0.0, 0.0, 0.0));
        // e / (1 + e) / 2: the normal values are untouched.
        assert!((g[[0, 3]] - 0.3655).abs() < 1e-4, "{}", g[[0, 3]]);
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let logits = array![[0.3f32, -1.2, 2.0, 0.1], [1.5, 0.2, -0.7, 0.9], [-0.4, 0.0, 0.8, 0.3]];
        let labels = [2, 0, 3];
        let (loss, grad, correct) = softmax_cross_entropy(logits.view(), &labels);
        assert_eq!(correct, 2);
        let expected: f64 = [(2usize, 0usize), (0, 1), (3, 2)]
            .iter()
            .map(|&(l, r)| {
                let row = logits.row(r);
                let lse = row.iter().map(|&v| (v as f64).exp()).sum::<f64>().ln();
                lse - row[l] as f64
            })
            .sum::<f64>()
            / 3.0;
        assert!((loss as f64 - expected).abs() < 1e-6);
        let h = 1e-3f32;
        for idx in [(0, 0), (0, 2), (1, 1), (2, 3), (2, 0)] {
            let (mut p, mut m) = (logits.clone(), logits.clone());
            p[idx] += h;
            m[idx] -= h;
            let num = (softmax_cross_entropy(p.view(), &labels).0 - softmax_cross_entropy(m.view(), &labels).0) as f64
                / (2.0 * h as f64);
            assert!((num - grad[idx] as f64).abs() < 1e-3, "{idx:?}: {num} vs {}", grad[idx]);
        }
    }

    #[test]
    fn bad_labels_are_errors() {
        let l = array![[0.0f32, 1.0]];
        assert!(matches!(try_softmax_cross_entropy(l.view(), &[2]), Err(NnError::Label { label: 2, .. })));
        assert!(matches!(try_softmax_cross_entropy(l.view(), &[0, 1]), Err(NnError::LabelCount { .. })));
    }
}
