//! Evaluation of a float network on a list of images: loss, accuracy,
//! per-class accuracy and the confusion matrix. The validation pass of
//! `train` and `host eval` are the same code, so their numbers agree.
use crate::data::{BatchPlan, DataError, ImageSource, LoaderConfig, Prefetcher};
use crate::nn::{try_softmax_cross_entropy, Mode, Network, NnError};
use serde::Serialize;
use shared::numeric::argmax;
use std::sync::Arc;

/// Why an evaluation failed.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Nn(#[from] NnError),
    #[error(transparent)]
    Budget(#[from] crate::budget::BudgetError),
}

/// Metrics over a set of images.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EvalResult {
    /// Mean sparse categorical cross-entropy.
    pub loss: f32,
    pub accuracy: f32,
    /// Images evaluated (unreadable ones skipped with `--skip-bad` are not counted).
    pub images: u64,
    pub class_names: Vec<String>,
    /// Accuracy of each true class (None for a class with no images).
    pub per_class_accuracy: Vec<Option<f32>>,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<u64>>,
    /// Images skipped as unreadable, with their errors.
    pub skipped: Vec<String>,
}

impl EvalResult {
    /// The text report: totals, per-class accuracy, confusion matrix.
    pub fn render(&self) -> String {
        let mut s = format!("{} images - loss: {:.4} - accuracy: {:.4}\n", self.images, self.loss, self.accuracy);
        if !self.skipped.is_empty() {
            s.push_str(&format!("skipped {} unreadable images\n", self.skipped.len()));
        }
        let width = self.class_names.iter().map(|n| n.len()).max().unwrap_or(5).max(5);
        s.push_str("\nper-class accuracy:\n");
        for (i, name) in self.class_names.iter().enumerate() {
            let n: u64 = self.confusion[i].iter().sum();
            match self.per_class_accuracy[i] {
                Some(a) => s.push_str(&format!("  {name:<width$}  {a:.4}  ({} of {n})\n", self.confusion[i][i])),
                None => s.push_str(&format!("  {name:<width$}  -       (no images)\n")),
            }
        }
        s.push_str("\nconfusion matrix (rows: true class, columns: predicted):\n");
        let cw = self.confusion.iter().flatten().map(|c| c.to_string().len()).max().unwrap_or(1).max(4);
        s.push_str(&format!("  {:<width$} ", ""));
        for i in 0..self.class_names.len() {
            s.push_str(&format!(" {:>cw$}", format!("[{i}]")));
        }
        s.push('\n');
        for (i, name) in self.class_names.iter().enumerate() {
            s.push_str(&format!("  {name:<width$} "));
            for c in &self.confusion[i] {
                s.push_str(&format!(" {c:>cw$}"));
            }
            s.push_str(&format!("   [{i}]\n"));
        }
        s
    }
}

/// Evaluate `net` (inference mode) on `indices` of `source`, in batches.
pub fn evaluate(
    net: &mut Network,
    source: Arc<dyn ImageSource>,
    indices: &[usize],
    batch: usize,
    skip_bad: bool,
) -> Result<EvalResult, EvalError> {
    let classes = net.spec().output().elements() as usize;
    let (h, w) = crate::data::image_hw(net.spec().input())?;
    let what = format!("evaluating in batches of {batch}");
    crate::budget::check_network(&what, net.spec(), batch as u64, false)?;
    let class_names = source.class_names().to_vec();
    let plans = BatchPlan::sequential(indices, batch);
    let loader = Prefetcher::spawn(source, plans, LoaderConfig { h, w, augment: None, skip_bad, prefetch: 2 });
    let mut confusion = vec![vec![0u64; classes]; classes];
    let (mut loss_sum, mut correct, mut seen) = (0f64, 0u64, 0u64);
    let mut skipped = Vec::new();
    for b in loader {
        let b = b?;
        skipped.extend(b.skipped);
        if b.labels.is_empty() {
            continue;
        }
        let logits = net.forward(b.x.view(), Mode::Eval);
        if let Some(&value) = logits.iter().find(|v| !v.is_finite()) {
            let what = format!("a batch of {} images", b.labels.len());
            return Err(EvalError::Nn(NnError::NonFiniteOutput { what, value }));
        }
        let (loss, _, c) = try_softmax_cross_entropy(logits.view(), &b.labels)?;
        loss_sum += loss as f64 * b.labels.len() as f64;
        correct += c as u64;
        seen += b.labels.len() as u64;
        for (row, &label) in logits.rows().into_iter().zip(&b.labels) {
            // Softmax keeps the order, so the logits' argmax is the class.
            confusion[label][argmax(row.iter().copied()).unwrap_or(0)] += 1;
        }
    }
    if seen == 0 && !skipped.is_empty() {
        return Err(EvalError::Data(DataError::AllUnreadable { count: skipped.len(), first: skipped[0].clone() }));
    }
    let per_class_accuracy = (0..classes)
        .map(|i| {
            let n: u64 = confusion[i].iter().sum();
            (n > 0).then(|| confusion[i][i] as f32 / n as f32)
        })
        .collect();
    Ok(EvalResult {
        loss: if seen > 0 { (loss_sum / seen as f64) as f32 } else { f32::NAN },
        accuracy: if seen > 0 { correct as f32 / seen as f32 } else { f32::NAN },
        images: seen,
        class_names,
        per_class_accuracy,
        confusion,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_lists_every_class() {
        let r = EvalResult {
            loss: 0.5,
            accuracy: 0.75,
            images: 8,
            class_names: vec!["daisy".into(), "roses".into()],
            per_class_accuracy: vec![Some(1.0), Some(0.5)],
            confusion: vec![vec![4, 0], vec![2, 2]],
            skipped: vec![],
        };
        let s = r.render();
        assert!(s.contains("daisy  1.0000  (4 of 4)"), "{s}");
        assert!(s.contains("roses  0.5000  (2 of 4)"), "{s}");
    }
}
