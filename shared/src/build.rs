//! Building a [`QuantModel`] from float parameters (host side, `std`).
//!
//! The quantizer, the tests and any tool that wants a model without a file
//! use the same routine, so there is one definition of how float weights
//! become int8/f16 ones:
//! - Conv2D/Dense: per-output-channel symmetric int8 weights (`max|w| / 127`),
//!   int32 bias at `in_scale * w_scale[c]`, multiplier/shift from
//!   [`quant::channel_multiplier`];
//! - BatchNormalization (which the tutorial places *after* the ReLU, so it is
//!   not folded into the conv): the per-channel affine
//!   `y = s[c] * x + t[c]`, `s = gamma / sqrt(var + eps)`, `t = beta - mean * s`,
//!   with `s[c]` stored as an int8 weight of +-127 at scale `|s[c]| / 127`
//!   (exact), so a negative gamma stays negative;
//! - MaxPool2D, Flatten, Dropout keep their input's quantization.
//!
//! Activation ranges come from calibration: [`float_forward`] runs the float
//! model, [`Ranges`] collects the min/max of every tensor over samples.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use half::f16;

use crate::model::{F16Weights, Int8Weights, LayerData, LayerWeights, Precision, QuantModel, TensorQuant};
use crate::quant;
use crate::spec::{Activation, Layer, ModelSpec, Shape, MAX_LAYERS};

/// The float parameters of one layer, in the engine's layouts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FloatLayer<'a> {
    /// MaxPool2D, Flatten, Dropout.
    None,
    /// OHWI weights (`[filters][kh][kw][in_c]`; Keras stores HWIO) and one bias per filter.
    Conv2D { weights: &'a [f32], bias: &'a [f32] },
    /// `[units][inputs]` weights (Keras stores `[inputs][units]`) and one bias per unit.
    Dense { weights: &'a [f32], bias: &'a [f32] },
    /// Keras's four BatchNormalization vectors, one value per channel.
    BatchNorm { gamma: &'a [f32], beta: &'a [f32], mean: &'a [f32], var: &'a [f32] },
}

/// Why float parameters could not be built into a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// `params` (or the ranges) do not have one entry per layer.
    LayerCount { expected: usize, got: usize },
    /// Layer `layer`'s parameters are of the wrong kind for the layer.
    WrongKind { layer: usize },
    /// An array has the wrong length.
    Length { layer: usize, what: &'static str, expected: usize, got: usize },
    /// The input has the wrong number of elements.
    Input { expected: usize, got: usize },
    /// A channel's requantization multiplier is out of the representable range (>= 2^30).
    Multiplier { layer: usize, channel: usize },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BuildError::LayerCount { expected, got } => write!(f, "{got} layer entries for {expected} layers"),
            BuildError::WrongKind { layer } => write!(f, "layer {layer}: parameters of the wrong kind"),
            BuildError::Length { layer, what, expected, got } => {
                write!(f, "layer {layer}: {what} has {got} values, expected {expected}")
            }
            BuildError::Input { expected, got } => write!(f, "input has {got} values, expected {expected}"),
            BuildError::Multiplier { layer, channel } => {
                write!(f, "layer {layer} channel {channel}: requantization multiplier out of range")
            }
        }
    }
}

impl std::error::Error for BuildError {}

fn len_ok(layer: usize, what: &'static str, expected: usize, got: usize) -> Result<(), BuildError> {
    if expected == got {
        Ok(())
    } else {
        Err(BuildError::Length { layer, what, expected, got })
    }
}

/// Check that `params` fit `spec` (kinds and lengths).
pub fn check_params(spec: &ModelSpec, params: &[FloatLayer<'_>]) -> Result<(), BuildError> {
    if params.len() != spec.layers().len() {
        return Err(BuildError::LayerCount { expected: spec.layers().len(), got: params.len() });
    }
    for ((i, layer, inp, _), p) in spec.shapes().zip(params) {
        match (*layer, *p) {
            (Layer::Conv2D(c), FloatLayer::Conv2D { weights, bias }) => {
                let k = c.kernel as usize;
                len_ok(i, "weights", c.filters as usize * k * k * inp.channels() as usize, weights.len())?;
                len_ok(i, "bias", c.filters as usize, bias.len())?;
            }
            (Layer::Dense { units, .. }, FloatLayer::Dense { weights, bias }) => {
                len_ok(i, "weights", units as usize * inp.elements() as usize, weights.len())?;
                len_ok(i, "bias", units as usize, bias.len())?;
            }
            (Layer::BatchNorm { .. }, FloatLayer::BatchNorm { gamma, beta, mean, var }) => {
                let c = inp.channels() as usize;
                len_ok(i, "gamma", c, gamma.len())?;
                len_ok(i, "beta", c, beta.len())?;
                len_ok(i, "moving_mean", c, mean.len())?;
                len_ok(i, "moving_variance", c, var.len())?;
            }
            (Layer::MaxPool2D { .. } | Layer::Flatten | Layer::Dropout { .. }, FloatLayer::None) => {}
            _ => return Err(BuildError::WrongKind { layer: i }),
        }
    }
    Ok(())
}

/// BatchNormalization at inference as a per-channel affine `(scale, shift)`.
pub fn bn_affine(gamma: f32, beta: f32, mean: f32, var: f32, epsilon: f32) -> (f32, f32) {
    let s = gamma / (var + epsilon).sqrt();
    (s, beta - mean * s)
}

/// The float reference forward pass (f32, f64 accumulation): every layer's
/// output, in order. Dropout is the identity. Like the engine, a Softmax
/// activation is *not* applied (the last output holds the logits; apply
/// [`softmax`] for probabilities), so the two compare layer by layer.
pub fn float_forward(spec: &ModelSpec, params: &[FloatLayer<'_>], input: &[f32]) -> Result<Vec<Vec<f32>>, BuildError> {
    check_params(spec, params)?;
    let n = spec.input().elements() as usize;
    if input.len() != n {
        return Err(BuildError::Input { expected: n, got: input.len() });
    }
    let mut outs: Vec<Vec<f32>> = Vec::with_capacity(params.len());
    for ((i, layer, inp, out), p) in spec.shapes().zip(params) {
        let x: &[f32] = if i == 0 { input } else { &outs[i - 1] };
        let y = match (*layer, *p) {
            (Layer::Conv2D(c), FloatLayer::Conv2D { weights, bias }) => {
                let g = crate::geometry::ConvGeom::from_spec(&c, inp).ok_or(BuildError::WrongKind { layer: i })?;
                let mut y = reference_conv(&g, weights, bias, x);
                if c.activation == Activation::Relu {
                    y.iter_mut().for_each(|v| *v = v.max(0.0));
                }
                y
            }
            (Layer::Dense { activation, .. }, FloatLayer::Dense { weights, bias }) => {
                let units = out.elements() as usize;
                let mut y: Vec<f32> = (0..units)
                    .map(|u| {
                        let row = &weights[u * x.len()..][..x.len()];
                        (row.iter().zip(x).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() + bias[u] as f64) as f32
                    })
                    .collect();
                match activation {
                    Activation::Relu => y.iter_mut().for_each(|v| *v = v.max(0.0)),
                    Activation::Softmax | Activation::None => {}
                }
                y
            }
            (Layer::BatchNorm { epsilon, .. }, FloatLayer::BatchNorm { gamma, beta, mean, var }) => {
                let c = gamma.len();
                x.iter()
                    .enumerate()
                    .map(|(j, &v)| {
                        let ch = j % c;
                        (v - mean[ch]) / (var[ch] + epsilon).sqrt() * gamma[ch] + beta[ch]
                    })
                    .collect()
            }
            (Layer::MaxPool2D { pool, stride }, _) => {
                let g = crate::geometry::PoolGeom::from_spec(pool, stride, inp)
                    .ok_or(BuildError::WrongKind { layer: i })?;
                reference_max_pool(&g, x)
            }
            _ => x.to_vec(),
        };
        outs.push(y);
    }
    Ok(outs)
}

/// Softmax in place (max-subtracted, f32).
pub fn softmax(v: &mut [f32]) {
    let m = v.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for x in v.iter_mut() {
        *x = (*x - m).exp();
        sum += *x;
    }
    v.iter_mut().for_each(|x| *x /= sum);
}

/// Plain float Conv2D (NHWC, OHWI), f64 accumulation, padding taps skipped.
pub fn reference_conv(g: &crate::geometry::ConvGeom, w: &[f32], bias: &[f32], x: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0f32; g.output_len()];
    let k = g.kernel;
    for oy in 0..g.out_h {
        for ox in 0..g.out_w {
            for oc in 0..g.out_c {
                let mut acc = bias[oc] as f64;
                for ky in 0..k {
                    let iy = (oy * g.stride + ky) as isize - g.pad_top as isize;
                    if iy < 0 || iy >= g.in_h as isize {
                        continue;
                    }
                    for kx in 0..k {
                        let ix = (ox * g.stride + kx) as isize - g.pad_left as isize;
                        if ix < 0 || ix >= g.in_w as isize {
                            continue;
                        }
                        for ci in 0..g.in_c {
                            let wv = w[((oc * k + ky) * k + kx) * g.in_c + ci] as f64;
                            let xv = x[(iy as usize * g.in_w + ix as usize) * g.in_c + ci] as f64;
                            acc += wv * xv;
                        }
                    }
                }
                y[(oy * g.out_w + ox) * g.out_c + oc] = acc as f32;
            }
        }
    }
    y
}

/// Plain float MaxPool2D (valid, clipped window).
pub fn reference_max_pool(g: &crate::geometry::PoolGeom, x: &[f32]) -> Vec<f32> {
    let mut y = vec![f32::NEG_INFINITY; g.output_len()];
    for oy in 0..g.out_h {
        for ox in 0..g.out_w {
            for c in 0..g.channels {
                let o = &mut y[(oy * g.out_w + ox) * g.channels + c];
                for yy in oy * g.stride..(oy * g.stride + g.pool).min(g.in_h) {
                    for xx in ox * g.stride..(ox * g.stride + g.pool).min(g.in_w) {
                        *o = o.max(x[(yy * g.in_w + xx) * g.channels + c]);
                    }
                }
            }
        }
    }
    y
}

/// Min/max of the model input and of every layer's output over calibration samples.
#[derive(Clone, Debug, PartialEq)]
pub struct Ranges {
    pub input: (f32, f32),
    /// One per layer. For a final Softmax layer this is the range of the
    /// logits (what the engine outputs), not of the probabilities.
    pub layers: Vec<(f32, f32)>,
}

impl Ranges {
    /// Empty ranges for `spec` (to be widened by [`Ranges::observe`]).
    pub fn new(spec: &ModelSpec) -> Self {
        let e = (f32::INFINITY, f32::NEG_INFINITY);
        Ranges { input: e, layers: vec![e; spec.layers().len()] }
    }

    /// Widen the ranges with one sample run through the float model.
    pub fn observe(&mut self, spec: &ModelSpec, params: &[FloatLayer<'_>], input: &[f32]) -> Result<(), BuildError> {
        let outs = float_forward(spec, params, input)?;
        let widen = |r: &mut (f32, f32), v: &[f32]| {
            for &x in v {
                r.0 = r.0.min(x);
                r.1 = r.1.max(x);
            }
        };
        widen(&mut self.input, input);
        for (r, o) in self.layers.iter_mut().zip(&outs) {
            widen(r, o);
        }
        Ok(())
    }
}

/// Owned weights of one layer; [`OwnedModel::view`] borrows them.
#[derive(Clone, Debug, PartialEq)]
pub enum OwnedWeights {
    None,
    Int8 { weights: Vec<i8>, weight_scale: Vec<f32>, bias: Vec<i32>, multiplier: Vec<i32>, shift: Vec<i32> },
    F16 { weights: Vec<f16>, bias: Vec<f16> },
}

/// A quantized model that owns its buffers (what a quantizer produces before
/// writing a file, or what a test runs directly).
#[derive(Clone, Debug, PartialEq)]
pub struct OwnedModel {
    pub spec: ModelSpec,
    pub precision: Precision,
    pub input: TensorQuant,
    /// `(weights, output quantization)` per layer.
    pub layers: Vec<(OwnedWeights, TensorQuant)>,
    pub labels: alloc::string::String,
}

impl OwnedModel {
    /// The borrowed view the engine and the file writer take.
    pub fn view(&self) -> QuantModel<'_> {
        let mut layers = [LayerData::plain(TensorQuant::IDENTITY); MAX_LAYERS];
        for (d, (w, q)) in layers.iter_mut().zip(&self.layers) {
            let weights = match w {
                OwnedWeights::None => LayerWeights::None,
                OwnedWeights::Int8 { weights, weight_scale, bias, multiplier, shift } => {
                    LayerWeights::Int8(Int8Weights { weights, weight_scale, bias, multiplier, shift })
                }
                OwnedWeights::F16 { weights, bias } => LayerWeights::F16(F16Weights { weights, bias }),
            };
            *d = LayerData { weights, output: *q };
        }
        QuantModel { spec: self.spec, precision: self.precision, input: self.input, layers, labels: &self.labels }
    }
}

/// Per-channel int8 weights for one channel's float weights.
fn int8_channel(
    layer: usize,
    channel: usize,
    w: &[f32],
    b: f32,
    in_q: TensorQuant,
    out_q: TensorQuant,
    out: &mut OwnedInt8,
) -> Result<(), BuildError> {
    let s = quant::symmetric_scale(w);
    out.weights.extend(w.iter().map(|&v| quant::quantize_weight(v, s)));
    push_channel(layer, channel, s, quant::quantize_bias(b, in_q.scale, s), in_q, out_q, out)
}

fn push_channel(
    layer: usize,
    channel: usize,
    w_scale: f32,
    bias: i32,
    in_q: TensorQuant,
    out_q: TensorQuant,
    out: &mut OwnedInt8,
) -> Result<(), BuildError> {
    let (m, sh) = quant::channel_multiplier(in_q.scale, w_scale, out_q.scale);
    if sh > 30 {
        return Err(BuildError::Multiplier { layer, channel });
    }
    out.weight_scale.push(w_scale);
    out.bias.push(bias);
    out.multiplier.push(m);
    out.shift.push(sh);
    Ok(())
}

#[derive(Default)]
struct OwnedInt8 {
    weights: Vec<i8>,
    weight_scale: Vec<f32>,
    bias: Vec<i32>,
    multiplier: Vec<i32>,
    shift: Vec<i32>,
}

impl From<OwnedInt8> for OwnedWeights {
    fn from(o: OwnedInt8) -> Self {
        OwnedWeights::Int8 {
            weights: o.weights,
            weight_scale: o.weight_scale,
            bias: o.bias,
            multiplier: o.multiplier,
            shift: o.shift,
        }
    }
}

/// Quantize float parameters to an int8 model with the calibrated `ranges`
/// (each widened to contain 0, see [`quant::choose_quant`]).
pub fn quantize_int8(spec: &ModelSpec, params: &[FloatLayer<'_>], ranges: &Ranges) -> Result<OwnedModel, BuildError> {
    check_params(spec, params)?;
    if ranges.layers.len() != params.len() {
        return Err(BuildError::LayerCount { expected: params.len(), got: ranges.layers.len() });
    }
    let input = quant::choose_quant(ranges.input.0, ranges.input.1);
    let mut in_q = input;
    let mut layers = Vec::with_capacity(params.len());
    for ((i, layer, inp, _), (p, r)) in spec.shapes().zip(params.iter().zip(&ranges.layers)) {
        let (w, out_q) = match (*layer, *p) {
            (Layer::Conv2D(_), FloatLayer::Conv2D { weights, bias })
            | (Layer::Dense { .. }, FloatLayer::Dense { weights, bias }) => {
                let out_q = quant::choose_quant(r.0, r.1);
                let per = weights.len() / bias.len();
                let mut o = OwnedInt8::default();
                for (c, (wc, &b)) in weights.chunks_exact(per).zip(bias).enumerate() {
                    int8_channel(i, c, wc, b, in_q, out_q, &mut o)?;
                }
                (o.into(), out_q)
            }
            (Layer::BatchNorm { epsilon, .. }, FloatLayer::BatchNorm { gamma, beta, mean, var }) => {
                let out_q = quant::choose_quant(r.0, r.1);
                let mut o = OwnedInt8::default();
                for c in 0..inp.channels() as usize {
                    let (s, t) = bn_affine(gamma[c], beta[c], mean[c], var[c], epsilon);
                    let (w_scale, wq) = if s != 0.0 && s.is_finite() {
                        (s.abs() / 127.0, if s > 0.0 { 127 } else { -127 })
                    } else {
                        (1.0, 0)
                    };
                    o.weights.push(wq);
                    push_channel(i, c, w_scale, quant::quantize_bias(t, in_q.scale, w_scale), in_q, out_q, &mut o)?;
                }
                (o.into(), out_q)
            }
            _ => (OwnedWeights::None, in_q),
        };
        layers.push((w, out_q));
        in_q = out_q;
    }
    Ok(OwnedModel { spec: *spec, precision: Precision::Int8, input, layers, labels: Default::default() })
}

/// Convert float parameters to an f16 model: every value rounded to f16
/// once; BatchNormalization becomes `(scale, shift)` computed in f32 by
/// [`bn_affine`], then rounded.
pub fn convert_f16(spec: &ModelSpec, params: &[FloatLayer<'_>]) -> Result<OwnedModel, BuildError> {
    check_params(spec, params)?;
    let h = |v: &[f32]| v.iter().map(|&x| f16::from_f32(x)).collect::<Vec<f16>>();
    let mut layers = Vec::with_capacity(params.len());
    for ((_, layer, _, _), p) in spec.shapes().zip(params) {
        let w = match (*layer, *p) {
            (_, FloatLayer::Conv2D { weights, bias }) | (_, FloatLayer::Dense { weights, bias }) => {
                OwnedWeights::F16 { weights: h(weights), bias: h(bias) }
            }
            (Layer::BatchNorm { epsilon, .. }, FloatLayer::BatchNorm { gamma, beta, mean, var }) => {
                let (s, t): (Vec<f32>, Vec<f32>) =
                    (0..gamma.len()).map(|c| bn_affine(gamma[c], beta[c], mean[c], var[c], epsilon)).unzip();
                OwnedWeights::F16 { weights: h(&s), bias: h(&t) }
            }
            _ => OwnedWeights::None,
        };
        layers.push((w, TensorQuant::IDENTITY));
    }
    Ok(OwnedModel {
        spec: *spec,
        precision: Precision::F16,
        input: TensorQuant::IDENTITY,
        layers,
        labels: Default::default(),
    })
}

/// Element count of `shape` as usize (for buffers sized by a spec).
pub fn elements(shape: Shape) -> usize {
    shape.elements() as usize
}

/// Owned float parameters of one layer, in the engine's layouts (see
/// [`FloatLayer`]): what a checkpoint loader or a test fixture holds.
#[derive(Clone, Debug, PartialEq)]
pub enum OwnedLayer {
    None,
    Conv2D { weights: Vec<f32>, bias: Vec<f32> },
    Dense { weights: Vec<f32>, bias: Vec<f32> },
    BatchNorm { gamma: Vec<f32>, beta: Vec<f32>, mean: Vec<f32>, var: Vec<f32> },
}

impl OwnedLayer {
    /// The borrowed view the builders take.
    pub fn view(&self) -> FloatLayer<'_> {
        match self {
            OwnedLayer::None => FloatLayer::None,
            OwnedLayer::Conv2D { weights, bias } => FloatLayer::Conv2D { weights, bias },
            OwnedLayer::Dense { weights, bias } => FloatLayer::Dense { weights, bias },
            OwnedLayer::BatchNorm { gamma, beta, mean, var } => FloatLayer::BatchNorm { gamma, beta, mean, var },
        }
    }
}

/// A tiny deterministic generator (64-bit LCG): the same random models on
/// every machine, for tests, benchmarks and device checks.
#[derive(Clone, Debug)]
pub struct Lcg(pub u64);

impl Lcg {
    /// The next 53 random bits.
    pub fn next_bits(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 11
    }
    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * (self.next_bits() as f32 / (1u64 << 53) as f32)
    }
    /// `n` uniform values.
    pub fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
}

/// Random parameters for `spec`: He-like uniform weights, small biases, and
/// BatchNormalization with gammas of both signs (so a quantized model meets
/// the negative-scale case), moving means near 0 and variances in [0.1, 2).
pub fn random_params(spec: &ModelSpec, rng: &mut Lcg) -> Vec<OwnedLayer> {
    spec.shapes()
        .map(|(_, layer, inp, out)| match *layer {
            Layer::Conv2D(c) => {
                let fan_in = (c.kernel * c.kernel * inp.channels()) as usize;
                let a = (3.0 / fan_in as f32).sqrt();
                OwnedLayer::Conv2D {
                    weights: rng.vec(fan_in * c.filters as usize, -a, a),
                    bias: rng.vec(c.filters as usize, -0.2, 0.2),
                }
            }
            Layer::Dense { units, .. } => {
                let n = inp.elements() as usize;
                let a = (3.0 / n as f32).sqrt();
                OwnedLayer::Dense {
                    weights: rng.vec(n * units as usize, -a, a),
                    bias: rng.vec(units as usize, -0.2, 0.2),
                }
            }
            Layer::BatchNorm { .. } => {
                let c = out.channels() as usize;
                OwnedLayer::BatchNorm {
                    gamma: rng.vec(c, -2.0, 2.0),
                    beta: rng.vec(c, -0.5, 0.5),
                    mean: rng.vec(c, -0.3, 0.3),
                    var: rng.vec(c, 0.1, 2.0),
                }
            }
            _ => OwnedLayer::None,
        })
        .collect()
}
