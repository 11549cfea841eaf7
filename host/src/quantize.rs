//! Post-training quantization of a checkpoint: the float tensors (Keras names
//! and layouts) and activation ranges from calibration images go through the
//! shared crate's one quantizing routine ([`shared::convert`]) to an int8 or f16
//! model file, which is written atomically and read back with the shared parser
//! before the command reports success.
//!
//! Calibration runs the host's float network (batched, fast) and records every
//! layer's output range; `--percentile` clips outliers instead of taking the
//! raw min/max.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use ndarray::{ArrayD, ArrayView4, Axis};
use shared::convert::{self, FloatLayer, OwnedLayer, OwnedModel, Ranges};
use shared::model::Precision;
use shared::spec::{Layer, ModelSpec};

use crate::nn::Network;

/// How activation ranges are chosen from calibration data.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RangeMethod {
    /// The observed minimum and maximum.
    MinMax,
    /// Clip outliers: the `(100 − p)`-th and `p`-th percentiles (e.g. 99.99).
    Percentile(f64),
}

/// Most values kept per layer for percentile estimates.
const PERCENTILE_SAMPLES: usize = 1 << 20;

/// Running statistics of one tensor over the calibration images.
#[derive(Clone, Debug)]
pub struct RangeStats {
    pub min: f32,
    pub max: f32,
    samples: Vec<f32>,
    seen: u64,
}

impl Default for RangeStats {
    fn default() -> Self {
        RangeStats { min: f32::INFINITY, max: f32::NEG_INFINITY, samples: Vec::new(), seen: 0 }
    }
}

impl RangeStats {
    /// Fold values in; `keep_samples` keeps a bounded sample for percentiles.
    pub fn observe<'a>(&mut self, values: impl IntoIterator<Item = &'a f32>, keep_samples: bool) {
        for &v in values {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
            self.seen += 1;
            if keep_samples {
                if self.samples.len() < PERCENTILE_SAMPLES {
                    self.samples.push(v);
                } else {
                    // A deterministic pseudo-random slot keeps the sample spread over all batches.
                    let slot = (self.seen.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as usize % PERCENTILE_SAMPLES;
                    self.samples[slot] = v;
                }
            }
        }
    }

    /// The (low, high) range per `method`.
    pub fn range(&self, method: RangeMethod) -> (f32, f32) {
        match method {
            RangeMethod::Percentile(p) if !self.samples.is_empty() => {
                let mut s = self.samples.clone();
                s.sort_by(f32::total_cmp);
                let at = |q: f64| s[((q / 100.0).clamp(0.0, 1.0) * (s.len() - 1) as f64).round() as usize];
                (at(100.0 - p), at(p))
            }
            _ => (self.min, self.max),
        }
    }
}

/// Float parameters of every layer in the engine's layouts (OHWI conv
/// weights, `[units][inputs]` dense weights), converted from a checkpoint.
pub struct FloatParams {
    owned: Vec<OwnedLayer>,
    spec: ModelSpec,
}

fn tensor<'a>(tensors: &'a HashMap<String, ArrayD<f32>>, name: &str, expected: &[usize]) -> Result<&'a ArrayD<f32>> {
    let t = tensors.get(name).with_context(|| format!("tensor {name:?} is missing from the checkpoint"))?;
    if t.shape() != expected {
        bail!("tensor {name:?} has shape {:?}, expected {expected:?}", t.shape());
    }
    if let Some(i) = t.iter().position(|v| !v.is_finite()) {
        bail!("tensor {name:?} holds a NaN or infinite value at flat index {i}");
    }
    Ok(t)
}

/// Gather `[out][...]` rows from a tensor whose last axis is the output channel.
fn rows_by_last_axis(t: &ArrayD<f32>) -> Vec<f32> {
    let last = Axis(t.ndim() - 1);
    (0..t.len_of(last)).flat_map(|o| t.index_axis(last, o).iter().copied().collect::<Vec<_>>()).collect()
}

impl FloatParams {
    /// Pull every layer's parameters out of checkpoint tensors (Keras names and layouts).
    pub fn from_tensors(spec: &ModelSpec, tensors: &HashMap<String, ArrayD<f32>>) -> Result<Self> {
        let mut owned = Vec::with_capacity(spec.layers().len());
        for (i, layer, input, _) in spec.shapes() {
            let name = spec.layer_name(i).to_string();
            let cin = input.channels() as usize;
            owned.push(match *layer {
                Layer::Conv2D(c) => {
                    let (kh, kw, f) = (c.kernel.h as usize, c.kernel.w as usize, c.filters as usize);
                    let per_group = cin / c.groups.max(1) as usize;
                    let kernel = tensor(tensors, &format!("{name}/kernel"), &[kh, kw, per_group, f])?;
                    let bias = tensor(tensors, &format!("{name}/bias"), &[f])?;
                    // HWIO -> OHWI.
                    OwnedLayer::Conv2D { weights: rows_by_last_axis(kernel), bias: bias.iter().copied().collect() }
                }
                Layer::Dense { units, .. } => {
                    let u = units as usize;
                    let kernel = tensor(tensors, &format!("{name}/kernel"), &[input.elements() as usize, u])?;
                    let bias = tensor(tensors, &format!("{name}/bias"), &[u])?;
                    // [in, out] -> [out][in].
                    OwnedLayer::Dense { weights: rows_by_last_axis(kernel), bias: bias.iter().copied().collect() }
                }
                Layer::BatchNorm { .. } => {
                    let get = |p: &str| -> Result<Vec<f32>> {
                        Ok(tensor(tensors, &format!("{name}/{p}"), &[cin])?.iter().copied().collect())
                    };
                    OwnedLayer::BatchNorm {
                        gamma: get("gamma")?,
                        beta: get("beta")?,
                        mean: get("moving_mean")?,
                        var: get("moving_variance")?,
                    }
                }
                Layer::MaxPool2D { .. }
                | Layer::AvgPool2D(_)
                | Layer::GlobalAvgPool
                | Layer::Flatten
                | Layer::Dropout { .. }
                | Layer::Add { .. }
                | Layer::Concat
                | Layer::Activation(_)
                | Layer::Softmax => OwnedLayer::None,
            });
        }
        Ok(FloatParams { owned, spec: *spec })
    }

    /// The borrowed per-layer view [`shared::convert`] takes.
    pub fn layers(&self) -> Vec<FloatLayer<'_>> {
        self.owned.iter().map(OwnedLayer::view).collect()
    }
}

/// Collects every layer's output range over calibration batches.
pub struct Calibrator {
    stats: Vec<RangeStats>,
    method: RangeMethod,
    images: usize,
}

impl Calibrator {
    /// Empty statistics for `spec`.
    pub fn new(spec: &ModelSpec, method: RangeMethod) -> Self {
        Calibrator { stats: vec![RangeStats::default(); spec.layers().len()], method, images: 0 }
    }

    /// Run one batch (NHWC, pixels in [0, 1]) through the float network.
    pub fn observe(&mut self, net: &mut Network, batch: ArrayView4<f32>) {
        let keep = matches!(self.method, RangeMethod::Percentile(_));
        for (s, out) in self.stats.iter_mut().zip(net.forward_layers(batch)) {
            s.observe(out.iter(), keep);
        }
        self.images += batch.len_of(Axis(0));
    }

    /// Images seen so far.
    pub fn images(&self) -> usize {
        self.images
    }

    /// The ranges [`shared::convert::quantize_int8`] takes. The input range is
    /// fixed: [0, 1] (the pixel convention, so pixel bytes map exactly), or
    /// what the model's input transform makes of [0, 1].
    pub fn ranges(&self, preprocess: Option<&crate::preprocess::Preprocess>) -> Ranges {
        let input = preprocess.map_or((0.0, 1.0), |p| p.transform().output_range());
        Ranges { input, layers: self.stats.iter().map(|s| s.range(self.method)).collect() }
    }
}

/// Quantize float parameters to `precision` (ranges needed for int8 only) and attach the class names.
pub fn quantize(
    params: &FloatParams,
    precision: Precision,
    ranges: Option<&Ranges>,
    labels: &[String],
    preprocess: Option<&crate::preprocess::Preprocess>,
) -> Result<OwnedModel> {
    let layers = params.layers();
    let mut model = match precision {
        Precision::Int8 => {
            let ranges = ranges.context("int8 quantization needs calibration ranges")?;
            convert::quantize_int8(&params.spec, &layers, ranges).map_err(|e| anyhow::anyhow!("{e}"))?
        }
        Precision::F16 => convert::convert_f16(&params.spec, &layers).map_err(|e| anyhow::anyhow!("{e}"))?,
    };
    model.labels = labels.join("\n");
    model.preprocess = preprocess.map(|p| p.values().to_vec()).unwrap_or_default();
    Ok(model)
}

/// Write a model file atomically (temp file + rename), then read it back and
/// validate it with the shared parser before reporting success.
pub fn write_model_file(model: &OwnedModel, path: &Path) -> Result<usize> {
    let bytes = shared::format::write(&model.view()).map_err(|e| anyhow::anyhow!("encoding the model file: {e}"))?;
    // Read back and compared before it is renamed into place: a file that
    // fails is removed, and whatever `path` held stays.
    crate::atomic::write_atomic_checked(path, &bytes, |tmp| -> Result<()> {
        let back = crate::model_file::read_model_file(tmp)?;
        let parsed = shared::format::parse(back.as_bytes()).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if parsed != model.view() {
            bail!("{}: the file read back differs from the model written", path.display());
        }
        Ok(())
    })
    .map_err(|e| match e {
        crate::atomic::CheckedWriteError::Write(w) => anyhow::Error::new(w),
        crate::atomic::CheckedWriteError::Check(c) => c.context(format!("{}: nothing was written", path.display())),
    })?;
    Ok(bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_clips_outliers() {
        let mut s = RangeStats::default();
        let mut v: Vec<f32> = (0..10_000).map(|i| (i % 100) as f32 / 100.0).collect();
        v.push(1000.0);
        s.observe(v.iter(), true);
        assert_eq!(s.range(RangeMethod::MinMax), (0.0, 1000.0));
        let (lo, hi) = s.range(RangeMethod::Percentile(99.9));
        assert!(lo == 0.0 && hi < 1.0, "{lo} {hi}");
    }

    #[test]
    fn checkpoint_layouts_become_engine_layouts() {
        let spec = shared::spec::Sequential::new(shared::spec::Shape::image(3, 3, 2))
            .conv2d(shared::spec::Conv2D::new(2, 2))
            .flatten()
            .dense(3, shared::spec::Activation::None)
            .build()
            .unwrap();
        let mut t = HashMap::new();
        // HWIO kernel with value = 1000*h + 100*w + 10*i + o.
        let k = ArrayD::from_shape_fn(vec![2, 2, 2, 2], |ix| (1000 * ix[0] + 100 * ix[1] + 10 * ix[2] + ix[3]) as f32);
        t.insert("conv2d/kernel".into(), k);
        t.insert("conv2d/bias".into(), ArrayD::zeros(vec![2]));
        t.insert("dense/kernel".into(), ArrayD::from_shape_fn(vec![8, 3], |ix| (10 * ix[0] + ix[1]) as f32));
        t.insert("dense/bias".into(), ArrayD::zeros(vec![3]));
        let p = FloatParams::from_tensors(&spec, &t).unwrap();
        let layers = p.layers();
        let FloatLayer::Conv2D { weights, .. } = layers[0] else { panic!() };
        // OHWI: output 1, then (h, w, i) = (0,0,0), (0,0,1), (0,1,0)...
        assert_eq!(&weights[8..12], &[1.0, 11.0, 101.0, 111.0]);
        let FloatLayer::Dense { weights, .. } = layers[2] else { panic!() };
        assert_eq!(&weights[8..10], &[1.0, 11.0]); // unit 1: inputs 0, 1
        t.remove("dense/bias");
        let err = FloatParams::from_tensors(&spec, &t).err().unwrap().to_string();
        assert!(err.contains("dense/bias"), "{err}");
    }
}

/// How to calibrate int8 activation ranges.
#[derive(Clone, Debug)]
pub struct Calibration<'a> {
    /// Class-folder dataset; None: the data the checkpoint was trained on.
    pub data: Option<&'a Path>,
    pub images: usize,
    pub method: RangeMethod,
    /// Seed that picks the images.
    pub seed: u64,
    /// `.npy` tensors in the model's input units (after its input
    /// transform) to calibrate on instead of images: for models that take
    /// features (`--calibration-tensors`).
    pub tensors: &'a [std::path::PathBuf],
}

impl Default for Calibration<'_> {
    fn default() -> Self {
        Calibration { data: None, images: 256, method: RangeMethod::MinMax, seed: 7, tensors: &[] }
    }
}

/// Calibrate on `.npy` tensors in the model's input units: the float network
/// runs without its input transform, and the input range is the tensors' own.
fn calibrate_on_tensors(ck: &crate::checkpoint::Checkpoint, cal: &Calibration) -> Result<Ranges> {
    use crate::tensor_file::{read_values, Values};
    let input = ck.spec.input();
    let (h, w, c) = match input {
        shared::spec::Shape::Image { h, w, c } => (h as usize, w as usize, c as usize),
        shared::spec::Shape::Flat(n) => (1, 1, n as usize),
    };
    crate::budget::check_network("calibrating one tensor at a time", &ck.spec, 1, false)?;
    let mut net = ck.network()?;
    net.set_preprocess(None)?;
    let mut calibrator = Calibrator::new(&ck.spec, cal.method);
    let mut range = (f32::INFINITY, f32::NEG_INFINITY);
    for path in cal.tensors {
        let values = match read_values(path, input)? {
            Values::F32(v) => v,
            Values::Int8(_) => bail!("{}: calibration takes float32 tensors", path.display()),
        };
        range = values.iter().fold(range, |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let batch = ndarray::Array4::from_shape_vec((1, h, w, c), values).context("tensor shape")?;
        calibrator.observe(&mut net, batch.view());
    }
    crate::errln!("calibrated on {} tensors", calibrator.images());
    let mut ranges = calibrator.ranges(None);
    ranges.input = range;
    check_finite_ranges(ck, ranges)
}

/// Calibrate a checkpoint's int8 activation ranges on `cal`'s images with
/// the float network.
pub fn calibrate(ck: &crate::checkpoint::Checkpoint, cal: &Calibration) -> Result<Ranges> {
    if !cal.tensors.is_empty() {
        return calibrate_on_tensors(ck, cal);
    }
    let sel = crate::provenance::open_for_checkpoint(ck, cal.data, None).context("choosing calibration images")?;
    let (h, w) = crate::data::image_hw(ck.spec.input())?;
    // The calibration images are held at once, then run in chunks of 32.
    let pixels = (cal.images.max(1) as u64).saturating_mul((h * w * 3) as u64);
    crate::budget::check_elements(&format!("{} calibration images at {h}x{w}", cal.images.max(1)), pixels, 4)?;
    crate::budget::check_network("calibrating in batches of 32", &ck.spec, 32, false)?;
    let images = sel.data.calibration_images(cal.images.max(1), h, w, cal.seed)?;
    if images.len_of(Axis(0)) == 0 {
        bail!("no readable calibration images in {}", sel.data.source.summary());
    }
    let mut net = ck.network()?;
    let mut calibrator = Calibrator::new(&ck.spec, cal.method);
    for chunk in images.axis_chunks_iter(Axis(0), 32) {
        calibrator.observe(&mut net, chunk);
    }
    crate::errln!("calibrated on {} images of {}", calibrator.images(), sel.data.source.summary());
    check_finite_ranges(ck, calibrator.ranges(ck.preprocess.as_ref()))
}

/// Finite weights can still overflow f32 on the way through (values near
/// 3e38): a non-finite range would quantize to nonsense.
fn check_finite_ranges(ck: &crate::checkpoint::Checkpoint, ranges: Ranges) -> Result<Ranges> {
    for (i, &(lo, hi)) in ranges.layers.iter().enumerate() {
        if !(lo.is_finite() && hi.is_finite()) {
            bail!(
                "calibration: layer {i} ({}) computed values in [{lo}, {hi}]: the weights overflow f32 arithmetic",
                ck.spec.layer_name(i)
            );
        }
    }
    Ok(ranges)
}

/// Quantize a loaded checkpoint: calibrate (int8) on `cal`'s images, then
/// build the model with the checkpoint's class names.
pub fn quantize_checkpoint(
    ck: &crate::checkpoint::Checkpoint,
    precision: Precision,
    cal: &Calibration,
) -> Result<OwnedModel> {
    let params = FloatParams::from_tensors(&ck.spec, &ck.tensors)?;
    let ranges = match precision {
        Precision::F16 => None,
        Precision::Int8 => Some(calibrate(ck, cal)?),
    };
    let model = quantize(&params, precision, ranges.as_ref(), &ck.class_names, ck.preprocess.as_ref())?;
    check_f16_range(&model)?;
    Ok(model)
}

/// f16 tops out at 65504: a weight (or a BatchNormalization scale or shift,
/// folded before rounding) beyond it becomes infinity, and the model would
/// compute NaN. Named by layer instead.
pub fn check_f16_range(model: &OwnedModel) -> Result<()> {
    for (i, (w, _)) in model.layers.iter().enumerate() {
        if let convert::OwnedWeights::F16 { weights, bias } = w {
            if let Some(v) = weights.iter().chain(bias).find(|v| !v.is_finite()) {
                bail!(
                    "layer {i} ({}): a value beyond f16's range (largest 65504) became {v}: \
                     this model cannot be stored as f16 (int8 may fit)",
                    model.spec.layer_name(i)
                );
            }
        }
    }
    Ok(())
}
