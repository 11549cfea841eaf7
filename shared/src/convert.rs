//! Converting float parameters to a [`crate::model::QuantModel`] (host side, `std`).
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
//! - Add and Concatenate: their own output quantization from the calibrated
//!   range (the engine requantizes each input to it).
//! - Softmax: its output quantized 1/256, zero point -128, the one int8
//!   softmax output TFLite accepts.
//! - MaxPool2D, AveragePooling2D, GlobalAveragePooling2D, Flatten, Dropout,
//!   a standalone activation
//!   keep their input's quantization (TFLite's int8 pools do too; the
//!   engine runs GlobalAveragePooling2D as TFLite's MEAN, which may also
//!   requantize to a quantization of its own, as an imported model's does).
//!
//! Activation ranges come from calibration: [`crate::convert::Ranges`] holds the min/max of
//! every tensor over samples (the host's calibrator runs its float network;
//! the tests' f64 reference forward lives in the `suite` test-support crate).

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use half::f16;

use crate::model::{
    F16Weights, InputTransform, Int8Weights, LayerData, LayerWeights, Precision, QuantModel, TensorQuant,
};
use crate::quant;
use crate::spec::{Layer, ModelSpec, MAX_LAYERS};

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

/// Why float parameters could not be converted to a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvertError {
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

impl fmt::Display for ConvertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ConvertError::LayerCount { expected, got } => write!(f, "{got} layer entries for {expected} layers"),
            ConvertError::WrongKind { layer } => write!(f, "layer {layer}: parameters of the wrong kind"),
            ConvertError::Length { layer, what, expected, got } => {
                write!(f, "layer {layer}: {what} has {got} values, expected {expected}")
            }
            ConvertError::Input { expected, got } => write!(f, "input has {got} values, expected {expected}"),
            ConvertError::Multiplier { layer, channel } => {
                write!(f, "layer {layer} channel {channel}: requantization multiplier out of range")
            }
        }
    }
}

impl std::error::Error for ConvertError {}

fn len_ok(layer: usize, what: &'static str, expected: usize, got: usize) -> Result<(), ConvertError> {
    if expected == got {
        Ok(())
    } else {
        Err(ConvertError::Length { layer, what, expected, got })
    }
}

/// Check that `params` fit `spec` (kinds and lengths).
pub fn check_params(spec: &ModelSpec, params: &[FloatLayer<'_>]) -> Result<(), ConvertError> {
    if params.len() != spec.layers().len() {
        return Err(ConvertError::LayerCount { expected: spec.layers().len(), got: params.len() });
    }
    for ((i, layer, inp, _), p) in spec.shapes().zip(params) {
        match (*layer, *p) {
            (Layer::Conv2D(_), FloatLayer::Conv2D { weights, bias })
            | (Layer::Dense { .. }, FloatLayer::Dense { weights, bias }) => {
                let (w, c) = layer.weight_counts(inp).unwrap_or((0, 0));
                len_ok(i, "weights", w as usize, weights.len())?;
                len_ok(i, "bias", c as usize, bias.len())?;
            }
            (Layer::BatchNorm { .. }, FloatLayer::BatchNorm { gamma, beta, mean, var }) => {
                let c = inp.channels() as usize;
                len_ok(i, "gamma", c, gamma.len())?;
                len_ok(i, "beta", c, beta.len())?;
                len_ok(i, "moving_mean", c, mean.len())?;
                len_ok(i, "moving_variance", c, var.len())?;
            }
            (
                Layer::MaxPool2D { .. }
                | Layer::AvgPool2D(_)
                | Layer::GlobalAvgPool
                | Layer::Flatten
                | Layer::Dropout { .. }
                | Layer::Add { .. }
                | Layer::Concat
                | Layer::Activation(_)
                | Layer::Softmax,
                FloatLayer::None,
            ) => {}
            _ => return Err(ConvertError::WrongKind { layer: i }),
        }
    }
    Ok(())
}

/// The weight scale of a BatchNormalization channel whose affine scale is 0:
/// `out_scale / in_scale`, so its bias is quantized in output steps.
pub fn zero_channel_scale(in_scale: f32, out_scale: f32) -> f32 {
    let s = out_scale / in_scale;
    if s.is_finite() && s > 0.0 {
        s
    } else {
        1.0
    }
}

/// BatchNormalization at inference as a per-channel affine `(scale, shift)`.
pub fn bn_affine(gamma: f32, beta: f32, mean: f32, var: f32, epsilon: f32) -> (f32, f32) {
    let s = gamma / (var + epsilon).sqrt();
    (s, beta - mean * s)
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
    /// Empty ranges for `spec` (`(+inf, -inf)`), to be widened by calibration.
    pub fn new(spec: &ModelSpec) -> Self {
        let e = (f32::INFINITY, f32::NEG_INFINITY);
        Ranges { input: e, layers: vec![e; spec.layers().len()] }
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
    /// The input transform's values (see [`crate::model::InputTransform`]); empty: none.
    pub preprocess: Vec<f32>,
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
        let preprocess = (!self.preprocess.is_empty()).then_some(InputTransform { values: &self.preprocess });
        QuantModel {
            spec: self.spec,
            precision: self.precision,
            input: self.input,
            layers,
            labels: &self.labels,
            preprocess,
        }
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
) -> Result<(), ConvertError> {
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
) -> Result<(), ConvertError> {
    let (m, sh) = quant::channel_multiplier(in_q.scale, w_scale, out_q.scale);
    if sh > 30 {
        return Err(ConvertError::Multiplier { layer, channel });
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
pub fn quantize_int8(spec: &ModelSpec, params: &[FloatLayer<'_>], ranges: &Ranges) -> Result<OwnedModel, ConvertError> {
    check_params(spec, params)?;
    if ranges.layers.len() != params.len() {
        return Err(ConvertError::LayerCount { expected: params.len(), got: ranges.layers.len() });
    }
    let input = quant::choose_quant(ranges.input.0, ranges.input.1);
    // Each tensor's quantization (0: the input, i + 1: layer i's output).
    let mut tensor_q = vec![input];
    let mut layers = Vec::with_capacity(params.len());
    for ((i, layer, inp, _), (p, r)) in spec.shapes().zip(params.iter().zip(&ranges.layers)) {
        let in_q = tensor_q[spec.inputs()[i].main as usize];
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
                        // A constant channel: only the bias matters, so give it the
                        // output's resolution (bias unit = in_scale * w_scale = out_scale);
                        // a scale of 1 would round it to the input's, which can be
                        // several output steps.
                        (zero_channel_scale(in_q.scale, out_q.scale), 0)
                    };
                    o.weights.push(wq);
                    push_channel(i, c, w_scale, quant::quantize_bias(t, in_q.scale, w_scale), in_q, out_q, &mut o)?;
                }
                (o.into(), out_q)
            }
            // A softmax's int8 output is always 1/256, -128 (TFLite's; its range is [0, 1)).
            (Layer::Softmax, _) => (OwnedWeights::None, crate::kernels::int8::SOFTMAX_OUTPUT),
            // Add and Concatenate requantize to their own calibrated range.
            (Layer::Add { .. } | Layer::Concat, _) => (OwnedWeights::None, quant::choose_quant(r.0, r.1)),
            // The rest keep their input's quantization (a standalone ReLU
            // clamps at the zero point; pools and reshapes move values).
            _ => (OwnedWeights::None, in_q),
        };
        layers.push((w, out_q));
        tensor_q.push(out_q);
    }
    Ok(OwnedModel {
        spec: *spec,
        precision: Precision::Int8,
        input,
        layers,
        labels: Default::default(),
        preprocess: Vec::new(),
    })
}

/// Convert float parameters to an f16 model: every value rounded to f16
/// once; BatchNormalization becomes `(scale, shift)` computed in f32 by
/// [`bn_affine`], then rounded.
pub fn convert_f16(spec: &ModelSpec, params: &[FloatLayer<'_>]) -> Result<OwnedModel, ConvertError> {
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
        preprocess: Vec::new(),
    })
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
    /// The borrowed view [`quantize_int8`] and [`convert_f16`] take.
    pub fn view(&self) -> FloatLayer<'_> {
        match self {
            OwnedLayer::None => FloatLayer::None,
            OwnedLayer::Conv2D { weights, bias } => FloatLayer::Conv2D { weights, bias },
            OwnedLayer::Dense { weights, bias } => FloatLayer::Dense { weights, bias },
            OwnedLayer::BatchNorm { gamma, beta, mean, var } => FloatLayer::BatchNorm { gamma, beta, mean, var },
        }
    }
}
