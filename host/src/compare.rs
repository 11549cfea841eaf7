//! `host compare`: how close the quantized models are to the float model on
//! the validation split — accuracy, top-1 agreement, logit error and the
//! per-layer signal-to-quantization-noise ratio — with thresholds that make
//! the command fail, so CI can hold the line.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ndarray::Axis;
use plotters::prelude::*;
use shared::model::{Precision, QuantModel};
use shared::numeric::argmax;

use crate::data::loader::{BatchPlan, LoaderConfig, Prefetcher};
use crate::model_file::encode_input;
use crate::simulate::{prepare, simulate_prepared};
use shared::host_layouts::HostLayouts;

/// Noise and signal energy of one layer, summed over images.
#[derive(Clone, Copy, Debug, Default)]
struct Energy {
    signal: f64,
    noise: f64,
}

impl Energy {
    fn sqnr_db(self) -> f64 {
        if self.noise == 0.0 {
            f64::INFINITY
        } else {
            10.0 * (self.signal / self.noise).log10()
        }
    }
}

/// One quantized model's figures against the float model.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ModelReport {
    pub path: PathBuf,
    pub precision: &'static str,
    pub accuracy: f64,
    /// Fraction of images whose top-1 class equals the float model's.
    pub agreement: f64,
    /// Float accuracy minus this model's, in percentage points.
    pub accuracy_drop_pts: f64,
    pub max_abs_logit_error: f64,
    pub mean_abs_logit_error: f64,
    /// Per layer (name, SQNR in dB; infinite when exact).
    pub sqnr_db: Vec<(String, f64)>,
}

/// The whole comparison.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Comparison {
    pub images: usize,
    pub float_accuracy: f64,
    pub models: Vec<ModelReport>,
}

/// Decode a layer's raw output bytes to floats.
fn dequantize_layer(model: &QuantModel, index: usize, bytes: &[u8]) -> Vec<f32> {
    match model.precision {
        Precision::Int8 => {
            let q = model.layer_data()[index].output;
            bytes.iter().map(|&b| q.scale * (b as i8 as i32 - q.zero_point) as f32).collect()
        }
        Precision::F16 => bytes.chunks_exact(2).map(|c| shared::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
    }
}

struct Tally {
    correct: usize,
    agree: usize,
    max_err: f64,
    sum_err: f64,
    n_err: usize,
    energy: Vec<Energy>,
}

/// Compare `models` (already parsed) with the float checkpoint on `indices` of `data`.
pub fn compare(
    ck: &crate::checkpoint::Checkpoint,
    models: &[(PathBuf, QuantModel)],
    data: &crate::data::Dataset,
    indices: &[usize],
) -> Result<Comparison> {
    let mut net = ck.network().context("loading the float network")?;
    for (path, m) in models {
        if m.spec != ck.spec {
            bail!("{}: its layer stack differs from the checkpoint's", path.display());
        }
    }
    let (h, w) = crate::data::image_hw(ck.spec.input())?;
    let n_layers = ck.spec.layers().len();
    let mut tallies: Vec<Tally> = models
        .iter()
        .map(|_| Tally {
            correct: 0,
            agree: 0,
            max_err: 0.0,
            sum_err: 0.0,
            n_err: 0,
            energy: vec![Energy::default(); n_layers],
        })
        .collect();
    let mut layouts = vec![HostLayouts::default(); models.len()];
    let prepared: Vec<_> = models.iter().zip(&mut layouts).map(|((_, m), l)| prepare(m, l)).collect::<Result<_>>()?;
    let (mut float_correct, mut images) = (0usize, 0usize);
    let plans = BatchPlan::sequential(indices, 32);
    let cfg = LoaderConfig { h, w, augment: None, skip_bad: false, prefetch: 2 };
    for batch in Prefetcher::spawn(data.source.clone(), plans, cfg) {
        let batch = batch?;
        let outs = net.forward_layers(batch.x.view());
        let logits = outs.last().context("the network has no layers")?;
        for (b, &label) in batch.labels.iter().enumerate() {
            let float_logits: Vec<f32> = logits.index_axis(Axis(0), b).iter().copied().collect();
            let float_top = argmax(float_logits.iter().copied());
            float_correct += usize::from(float_top == Some(label));
            images += 1;
            let pixels: Vec<f32> = batch.x.index_axis(Axis(0), b).iter().copied().collect();
            for (((_, model), p), t) in models.iter().zip(&prepared).zip(&mut tallies) {
                let input = encode_input(model, &pixels)?;
                let run = simulate_prepared(p, &input, true)?;
                let top = argmax(run.logits.iter().copied());
                t.correct += usize::from(top == Some(label));
                t.agree += usize::from(top == float_top);
                for (q, f) in run.logits.iter().zip(&float_logits) {
                    let e = (q - f).abs() as f64;
                    t.max_err = t.max_err.max(e);
                    t.sum_err += e;
                    t.n_err += 1;
                }
                for (i, layer) in run.layers.iter().enumerate() {
                    let q = dequantize_layer(model, i, layer.bytes.as_deref().unwrap_or(&[]));
                    let f = outs[i].index_axis(Axis(0), b);
                    for (qv, fv) in q.iter().zip(f.iter()) {
                        t.energy[i].signal += (*fv as f64).powi(2);
                        t.energy[i].noise += (*qv as f64 - *fv as f64).powi(2);
                    }
                }
            }
        }
    }
    if images == 0 {
        bail!("no images to compare on");
    }
    let float_accuracy = float_correct as f64 / images as f64;
    let models = models
        .iter()
        .zip(tallies)
        .map(|((path, m), t)| {
            let accuracy = t.correct as f64 / images as f64;
            ModelReport {
                path: path.clone(),
                precision: m.precision.name(),
                accuracy,
                agreement: t.agree as f64 / images as f64,
                accuracy_drop_pts: 100.0 * (float_accuracy - accuracy),
                max_abs_logit_error: t.max_err,
                mean_abs_logit_error: t.sum_err / t.n_err.max(1) as f64,
                sqnr_db: t
                    .energy
                    .iter()
                    .enumerate()
                    .map(|(i, e)| (ck.spec.layer_name(i).to_string(), e.sqnr_db()))
                    .collect(),
            }
        })
        .collect();
    Ok(Comparison { images, float_accuracy, models })
}

impl Comparison {
    /// The text report.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut s = format!("{} images; float accuracy {:.2} %\n", self.images, 100.0 * self.float_accuracy);
        for m in &self.models {
            let _ = writeln!(
                s,
                "{} ({}): accuracy {:.2} % (drop {:+.2} pts), top-1 agreement {:.2} %, logit error max {:.4} mean {:.4}",
                m.path.display(),
                m.precision,
                100.0 * m.accuracy,
                m.accuracy_drop_pts,
                100.0 * m.agreement,
                m.max_abs_logit_error,
                m.mean_abs_logit_error
            );
        }
        let _ = write!(s, "{:<24}", "SQNR (dB)");
        for m in &self.models {
            let _ = write!(s, " {:>10}", m.precision);
        }
        s.push('\n');
        for (i, (name, _)) in self.models.first().map(|m| m.sqnr_db.as_slice()).unwrap_or(&[]).iter().enumerate() {
            let _ = write!(s, "{name:<24}");
            for m in &self.models {
                let _ = write!(s, " {:>10.2}", m.sqnr_db[i].1);
            }
            s.push('\n');
        }
        s
    }

    /// Check the thresholds; the error lists every broken one.
    pub fn check(&self, max_drop_pts: Option<f64>, min_agreement: Option<f64>) -> Result<()> {
        let mut broken = Vec::new();
        for m in &self.models {
            if let Some(d) = max_drop_pts.filter(|&d| m.accuracy_drop_pts > d) {
                broken.push(format!("{}: accuracy drop {:.2} pts > {d}", m.path.display(), m.accuracy_drop_pts));
            }
            if let Some(a) = min_agreement.filter(|&a| m.agreement < a) {
                broken.push(format!("{}: agreement {:.4} < {a}", m.path.display(), m.agreement));
            }
        }
        if broken.is_empty() {
            Ok(())
        } else {
            bail!("thresholds broken:\n  {}", broken.join("\n  "))
        }
    }

    /// Draw the per-layer SQNR of every model: one row per layer (first layer
    /// on top, names readable), one coloured line of points per model.
    pub fn plot(&self, path: &Path) -> Result<()> {
        crate::report::ensure_font();
        let n = self.models.first().map_or(0, |m| m.sqnr_db.len()).max(1);
        let finite = |v: f64| if v.is_finite() { v } else { 100.0 };
        let top = self.models.iter().flat_map(|m| m.sqnr_db.iter().map(|x| finite(x.1))).fold(10.0f64, f64::max);
        let names: Vec<String> =
            self.models.first().map(|m| m.sqnr_db.iter().map(|x| x.0.clone()).collect()).unwrap_or_default();
        // Row r (from the bottom) shows layer n - 1 - r.
        let row = |i: usize| (n - 1 - i) as i32;
        let height = 120 + 26 * n as u32;
        let root = BitMapBackend::new(path, (900, height)).into_drawing_area();
        let draw = || -> std::result::Result<(), Box<dyn std::error::Error + '_>> {
            root.fill(&WHITE)?;
            let mut chart = ChartBuilder::on(&root)
                .caption("Per-layer SQNR against the float model", ("sans-serif", 22))
                .margin(14)
                .x_label_area_size(40)
                .y_label_area_size(170)
                .build_cartesian_2d(0.0..top * 1.1, -1..n as i32)?;
            chart
                .configure_mesh()
                .y_labels(n + 1)
                .y_label_formatter(&|r| {
                    usize::try_from(*r)
                        .ok()
                        .filter(|&r| r < n)
                        .and_then(|r| names.get(n - 1 - r).cloned())
                        .unwrap_or_default()
                })
                .x_desc("SQNR (dB; exact layers drawn at 100)")
                .label_style(("sans-serif", 14))
                .draw()?;
            for (k, m) in self.models.iter().enumerate() {
                let color = Palette99::pick(k).to_rgba();
                let points: Vec<(f64, i32)> =
                    m.sqnr_db.iter().enumerate().map(|(i, x)| (finite(x.1), row(i))).collect();
                chart
                    .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                    .label(format!("{} ({})", m.precision, m.path.display()))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
                chart.draw_series(points.into_iter().map(|p| Circle::new(p, 4, color.filled())))?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerLeft)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
            root.present()?;
            Ok(())
        };
        draw().map_err(|e| anyhow::anyhow!("drawing {}: {e}", path.display()))
    }
}
