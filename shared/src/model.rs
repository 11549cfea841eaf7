//! The in-memory view of a quantized model: the layer stack plus, per layer,
//! borrowed weight slices and the output tensor's quantization.
//!
//! The model-file parser ([`crate::format`]) produces a [`QuantModel`] whose
//! slices point straight into the file bytes (which may sit in flash); the
//! host's quantizer builds one from its own vectors to write a file; the
//! engine ([`crate::engine`]) runs one. No field owns memory.

use crate::spec::{ModelSpec, MAX_LAYERS};
use half::f16;

/// Numeric format of a model file's weights and activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// int8 weights and activations, int32 bias, per QUANT-SPEC.md.
    Int8,
    /// IEEE half-precision weights and activations, f32 accumulation.
    F16,
}

impl Precision {
    /// Bytes per activation element.
    pub const fn activation_bytes(self) -> usize {
        match self {
            Precision::Int8 => 1,
            Precision::F16 => 2,
        }
    }
    /// Name used on the command line and in tables.
    pub const fn name(self) -> &'static str {
        match self {
            Precision::Int8 => "int8",
            Precision::F16 => "f16",
        }
    }
}

/// Affine quantization of one activation tensor: `real = scale * (q - zero_point)`.
/// For f16 models every tensor carries `scale = 1.0, zero_point = 0` (unused).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TensorQuant {
    pub scale: f32,
    pub zero_point: i32,
}

impl TensorQuant {
    /// The identity quantization used by f16 models.
    pub const IDENTITY: TensorQuant = TensorQuant { scale: 1.0, zero_point: 0 };
}

/// Per-output-channel int8 weights with int32 bias and requantization.
///
/// Layouts: Conv2D weights are OHWI (`[filters][kh][kw][in_c]`), Dense weights
/// are `[units][inputs]`, and the BatchNormalization affine has one weight per
/// channel. `multiplier[c]`/`shift[c]` are QuantizeMultiplier of
/// `in_scale * weight_scale[c] / out_scale`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Int8Weights<'a> {
    pub weights: &'a [i8],
    /// Per-channel weight scales (kept for reports and dequantization).
    pub weight_scale: &'a [f32],
    pub bias: &'a [i32],
    pub multiplier: &'a [i32],
    pub shift: &'a [i32],
}

/// f16 weights and bias. Same layouts as [`Int8Weights`]; for the
/// BatchNormalization affine, `weights` is the per-channel scale
/// `gamma / sqrt(var + eps)` and `bias` the shift `beta - mean * scale`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct F16Weights<'a> {
    pub weights: &'a [f16],
    pub bias: &'a [f16],
}

/// The parameters one layer carries, by precision.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LayerWeights<'a> {
    /// MaxPool2D, Flatten, Dropout.
    None,
    Int8(Int8Weights<'a>),
    F16(F16Weights<'a>),
}

/// One layer's parameters and the quantization of its output tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerData<'a> {
    pub weights: LayerWeights<'a>,
    pub output: TensorQuant,
}

impl LayerData<'_> {
    /// A layer with no parameters and the given output quantization.
    pub const fn plain(output: TensorQuant) -> Self {
        LayerData { weights: LayerWeights::None, output }
    }
}

/// A quantized model, borrowed from a file or from the quantizer's buffers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QuantModel<'a> {
    pub spec: ModelSpec,
    pub precision: Precision,
    /// Quantization of the model input (int8: how the caller quantizes pixels).
    pub input: TensorQuant,
    /// One entry per `spec.layers()`; entries past `spec.layers().len()` are unused.
    pub layers: [LayerData<'a>; MAX_LAYERS],
    /// Class names, UTF-8, separated by `\n` (may be empty).
    pub labels: &'a str,
    /// How image pixels become the model's input; `None`: pixels in [0, 1]
    /// as they are (what our trainer feeds).
    pub preprocess: Option<InputTransform<'a>>,
}

/// The model's input preprocessing, per channel: `x = pixel * scale[c] + offset[c]`
/// with `pixel` in [0, 1] (raw / 255). It is part of the model because
/// models trained elsewhere expect raw 0..255 pixels (Keras without
/// `Rescaling`), [-1, 1], or a mean/std normalisation (PyTorch); the host
/// applies it before quantizing the input, so the device's input is unchanged.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct InputTransform<'a> {
    /// `scale[0..c]` followed by `offset[0..c]`.
    pub values: &'a [f32],
}

impl<'a> InputTransform<'a> {
    /// Channels the transform covers.
    pub fn channels(&self) -> usize {
        self.values.len() / 2
    }
    /// Per-channel scales.
    pub fn scale(&self) -> &'a [f32] {
        self.values.get(..self.channels()).unwrap_or(&[])
    }
    /// Per-channel offsets.
    pub fn offset(&self) -> &'a [f32] {
        self.values.get(self.channels()..).unwrap_or(&[])
    }
    /// Whether it leaves every pixel as it is (scale 1, offset 0).
    pub fn is_identity(&self) -> bool {
        self.scale().iter().all(|&s| s == 1.0) && self.offset().iter().all(|&o| o == 0.0)
    }
    /// Apply in place to channel-last pixels (`pixels.len()` a multiple of the channels).
    pub fn apply(&self, pixels: &mut [f32]) {
        let c = self.channels();
        if c == 0 {
            return;
        }
        let (scale, offset) = (self.scale(), self.offset());
        for px in pixels.chunks_mut(c) {
            for ((v, s), o) in px.iter_mut().zip(scale).zip(offset) {
                *v = *v * s + o;
            }
        }
    }
    /// The range of `apply` over pixels in [0, 1], over all channels.
    pub fn output_range(&self) -> (f32, f32) {
        let mut lo = f32::INFINITY;
        let mut hi = f32::NEG_INFINITY;
        for (s, o) in self.scale().iter().zip(self.offset()) {
            for v in [*o, s + o] {
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
        if lo > hi {
            (0.0, 1.0)
        } else {
            (lo, hi)
        }
    }
}

impl<'a> QuantModel<'a> {
    /// The data of each layer, in order (same length as `spec.layers()`).
    pub fn layer_data(&self) -> &[LayerData<'a>] {
        &self.layers[..self.spec.layers().len()]
    }

    /// The name of class `index`, if the model carries labels.
    pub fn class_name(&self, index: usize) -> Option<&'a str> {
        if self.labels.is_empty() {
            return None;
        }
        self.labels.split('\n').nth(index)
    }

    /// Quantization of the model output (the last layer's output tensor).
    pub fn output_quant(&self) -> TensorQuant {
        self.layer_data().last().map(|l| l.output).unwrap_or(self.input)
    }

    /// Bytes of weight data (weights, biases, scales, multipliers) the model carries.
    pub fn weight_bytes(&self) -> usize {
        self.layer_data()
            .iter()
            .map(|l| match l.weights {
                LayerWeights::None => 0,
                LayerWeights::Int8(w) => {
                    w.weights.len() + 4 * (w.weight_scale.len() + w.bias.len() + w.multiplier.len() + w.shift.len())
                }
                LayerWeights::F16(w) => 2 * (w.weights.len() + w.bias.len()),
            })
            .sum()
    }
}
