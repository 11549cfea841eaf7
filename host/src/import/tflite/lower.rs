//! A full-integer TFLite graph onto our operator list, keeping the
//! converter's numbers: every scale, zero point, int8 weight and int32 bias
//! is copied as the file has it; only the per-channel multipliers are derived,
//! with TFLite's own formula (`QuantizeMultiplier` of `in * w / out` in
//! double), as its Prepare does.
//!
//! Operators that only move data are absorbed: RESHAPE/SQUEEZE to a vector
//! become a Flatten (or nothing), a constant PAD in front of a valid
//! convolution becomes its explicit padding (the padded value is the zero
//! point, which adds exactly 0 to the accumulator), the shape arithmetic the
//! converter emits for a dynamic batch (SHAPE, STRIDED_SLICE, PACK) is
//! dropped, and a QUANTIZE/DEQUANTIZE at the float edges of a model is
//! stripped (our model takes and gives the int8 tensors).
use std::collections::{HashMap, HashSet};

use ndarray::ArrayD;

use shared::convert::{OwnedModel, OwnedWeights};
use shared::model::{Precision, TensorQuant};
use shared::quant;
use shared::spec::{Activation, AvgPool2D, Conv2D, Hw, Inputs, Layer, ModelSpec, Padding, Shape};
use tflite_schema::tflite::{ActivationFunctionType, Padding as TflPadding};

use super::read::{BuiltinOperator as Op, BuiltinOptions, Graph, Op as TflOp, Tensor, TensorType};

/// What the importer takes, for the error text.
pub const TFLITE_SUPPORTED: &str = "full-integer (int8) single-subgraph models with one input and one output, \
    of: CONV_2D and DEPTHWISE_CONV_2D (per-channel int8 weights, int32 bias, SAME/VALID padding, any stride, \
    dilation and depth multiplier), FULLY_CONNECTED (per-tensor or per-channel), ADD of two tensors of one \
    shape, AVERAGE_POOL_2D and MAX_POOL_2D (input and output quantized alike; max pools square and valid), \
    MEAN over height and width, PAD (constant, spatial, before a VALID convolution), RESHAPE and SQUEEZE to a \
    vector, CONCATENATION on channels, SOFTMAX, RELU and RELU6 (fused into the operators above, or alone with \
    one quantization), QUANTIZE at a float input and DEQUANTIZE at a float output";

/// The imported model and how its tensors correspond to TFLite's.
#[derive(Debug)]
pub struct Lowered {
    pub model: OwnedModel,
    /// `(TFLite tensor, our tensor)` for every tensor both compute (ours: 0
    /// the input, i + 1 layer i's output), in operator order.
    pub tensors: Vec<(usize, usize)>,
    /// What was absorbed or stripped, for the user.
    pub notes: Vec<String>,
    /// How many operators the file holds (absorbed ones included).
    pub operators: usize,
}

/// Why an operator could not be lowered: `(operator index, TFLite name, why)`.
#[derive(Debug)]
pub struct Unsupported {
    pub op: usize,
    pub name: String,
    pub why: String,
}

/// Everything else wrong with the file: a message naming the tensor or operator.
#[derive(Debug)]
pub enum LowerError {
    Unsupported(Unsupported),
    Invalid(String),
}

type Res<T> = Result<T, LowerError>;

/// TFLite's upper-case name of an operator (`CONV_2D`, `AVERAGE_POOL_2D`).
pub fn op_name(code: Op) -> String {
    let camel = format!("{code:?}");
    let mut out = String::new();
    let chars: Vec<char> = camel.chars().collect();
    for (i, &ch) in chars.iter().enumerate() {
        let next_is_d = chars.get(i + 1).is_some_and(|c| *c == 'd');
        if i > 0 && (ch.is_ascii_uppercase() || (ch.is_ascii_digit() && next_is_d)) {
            out.push('_');
        }
        out.push(ch.to_ascii_uppercase());
    }
    out
}

struct Lower<'g, 'f> {
    g: &'g Graph<'f>,
    op: usize,
    code: Op,
    layers: Vec<Layer>,
    inputs: Vec<Inputs>,
    data: Vec<(OwnedWeights, TensorQuant)>,
    /// Per our tensor: shape and quantization.
    shapes: Vec<Shape>,
    quants: Vec<TensorQuant>,
    /// TFLite tensor -> our tensor.
    ours: HashMap<usize, usize>,
    /// TFLite tensors written by a PAD not yet folded: `(source, [top, bottom, left, right])`.
    pads: HashMap<usize, (usize, [u32; 4])>,
    pairs: Vec<(usize, usize)>,
    notes: Vec<String>,
    /// A float model: weights go to `float_weights` (Keras layouts), no quantization.
    float: bool,
    /// `(layer index, kernel, bias)` of a float model's Conv2D and Dense layers.
    float_weights: Vec<(usize, ArrayD<f32>, ArrayD<f32>)>,
}

impl Lower<'_, '_> {
    fn unsupported<T>(&self, why: impl Into<String>) -> Res<T> {
        Err(LowerError::Unsupported(Unsupported { op: self.op, name: op_name(self.code), why: why.into() }))
    }

    fn invalid<T>(&self, what: impl std::fmt::Display) -> Res<T> {
        Err(LowerError::Invalid(format!("operator {} ({}): {what}", self.op, op_name(self.code))))
    }

    fn tensor(&self, t: usize) -> &Tensor<'_> {
        self.g.tensor(t)
    }

    fn operand(&self, op: &TflOp, slot: usize) -> Res<usize> {
        match op.inputs.get(slot) {
            Some(Some(t)) => Ok(*t),
            _ => self.invalid(format!("input {slot} is missing")),
        }
    }

    /// Our tensor holding TFLite tensor `t` (computed earlier).
    fn ours(&self, t: usize) -> Res<usize> {
        if self.pads.contains_key(&t) {
            return self.unsupported(format!(
                "reads tensor {t} ({:?}), a PAD's output: a PAD is only taken in front of a VALID CONV_2D or \
                 DEPTHWISE_CONV_2D",
                self.tensor(t).name
            ));
        }
        match self.ours.get(&t) {
            Some(&o) => Ok(o),
            None if self.tensor(t).data.is_some() => {
                self.unsupported(format!("reads a constant tensor {t} ({:?}) as an activation", self.tensor(t).name))
            }
            None => self.invalid(format!("reads tensor {t} ({:?}) before anything writes it", self.tensor(t).name)),
        }
    }

    /// The int8 quantization of activation tensor `t`.
    fn act_quant(&self, t: usize) -> Res<TensorQuant> {
        let x = self.tensor(t);
        if self.float {
            if x.dtype != TensorType::Float32 {
                return self.unsupported(format!("tensor {t} ({:?}) is {:?} in a float model", x.name, x.dtype));
            }
            return Ok(TensorQuant::IDENTITY);
        }
        if x.dtype != TensorType::Int8 {
            return self.unsupported(format!("tensor {t} ({:?}) is {:?}, not int8", x.name, x.dtype));
        }
        let Some(q) = &x.quant else {
            return self.unsupported(format!("tensor {t} ({:?}) has no quantization", x.name));
        };
        let (scale, zp) = (q.scales[0], q.zero_points.first().copied().unwrap_or(0));
        if q.scales.len() != 1 || q.zero_points.len() > 1 {
            return self.unsupported(format!("activation tensor {t} ({:?}) is quantized per channel", x.name));
        }
        if !(scale.is_finite() && scale > 0.0 && (-128..=127).contains(&zp)) {
            return self.invalid(format!("tensor {t} ({:?}): scale {scale}, zero point {zp}", x.name));
        }
        Ok(TensorQuant { scale, zero_point: zp as i32 })
    }

    /// The shape of activation tensor `t` in our terms: `[1, h, w, c]` or `[1, n]`.
    fn shape_of(&self, t: usize) -> Res<Shape> {
        let x = self.tensor(t);
        let dim = |d: usize| u32::try_from(d).ok().filter(|&d| d > 0);
        let shape = match x.shape.as_slice() {
            [1, h, w, c] => dim(*h).zip(dim(*w)).zip(dim(*c)).map(|((h, w), c)| Shape::image(h, w, c)),
            [1, n] | [n] => dim(*n).map(Shape::Flat),
            _ => None,
        };
        match shape {
            Some(s) if s.checked_elements().is_some_and(|n| n <= shared::spec::MAX_TENSOR_ELEMENTS) => Ok(s),
            Some(s) => self.invalid(format!(
                "tensor {t} ({:?}) of shape {:?}: more than {} elements",
                x.name,
                s,
                shared::spec::MAX_TENSOR_ELEMENTS
            )),
            None => self.unsupported(format!(
                "tensor {t} ({:?}) has shape {:?}: only [1, height, width, channels] and [1, features] are taken",
                x.name, x.shape
            )),
        }
    }

    fn activation(&self, f: ActivationFunctionType) -> Res<Activation> {
        match f {
            ActivationFunctionType::None => Ok(Activation::None),
            ActivationFunctionType::Relu => Ok(Activation::Relu),
            ActivationFunctionType::Relu6 => Ok(Activation::Relu6),
            other => self.unsupported(format!("fused activation {other:?}")),
        }
    }

    /// Append a layer reading our tensors `main` (and `other`); its output is TFLite tensor `out` (if any).
    fn push(
        &mut self,
        layer: Layer,
        main: usize,
        other: Option<usize>,
        weights: OwnedWeights,
        q: TensorQuant,
        out: Option<usize>,
    ) -> Res<usize> {
        let main_shape = self.shapes[main];
        let shape = match other {
            Some(o) => layer.output_shape2(self.layers.len(), main_shape, self.shapes[o]),
            None => layer.output_shape(self.layers.len(), main_shape),
        };
        let shape = match shape {
            Ok(s) => s,
            Err(e) => return self.unsupported(e.to_string()),
        };
        let to16 = |v: usize| u16::try_from(v).unwrap_or(u16::MAX);
        self.layers.push(layer);
        self.inputs.push(Inputs { main: to16(main), other: other.map(to16) });
        self.data.push((weights, q));
        self.shapes.push(shape);
        self.quants.push(q);
        let id = self.layers.len();
        if let Some(t) = out {
            let want = self.shape_of(t)?;
            if want.checked_elements() != shape.checked_elements()
                || (matches!(want, Shape::Image { .. }) && want != shape)
            {
                return self.invalid(format!("computes {shape:?} where the file says {want:?} (tensor {t})"));
            }
            self.ours.insert(t, id);
            self.pairs.push((t, id));
        }
        Ok(id)
    }

    /// Int8 per-channel weights `[channels][per]`, their scales (one per
    /// channel, or one for all), the int32 bias, and the multipliers.
    fn int8_weights(
        &self,
        w: usize,
        bias: Option<usize>,
        channels: usize,
        channel_dim: usize,
        in_q: TensorQuant,
        out_q: TensorQuant,
    ) -> Res<OwnedWeights> {
        let wt = self.tensor(w);
        let Some(raw) = wt.data else {
            return self.unsupported(format!("weights tensor {w} ({:?}) is not a constant", wt.name));
        };
        if wt.dtype != TensorType::Int8 {
            return self.unsupported(format!("weights tensor {w} ({:?}) is {:?}, not int8", wt.name, wt.dtype));
        }
        if raw.len() != wt.elements() {
            return self.invalid(format!("weights tensor {w} holds {} bytes for shape {:?}", raw.len(), wt.shape));
        }
        let Some(q) = &wt.quant else { return self.unsupported(format!("weights tensor {w} has no quantization")) };
        let scales: Vec<f32> = match q.scales.len() {
            1 => vec![q.scales[0]; channels],
            n if n == channels && q.dim == channel_dim => q.scales.clone(),
            n => {
                return self.invalid(format!(
                    "weights tensor {w}: {n} scales along dimension {} for {channels} channels",
                    q.dim
                ))
            }
        };
        if q.zero_points.iter().any(|&z| z != 0) {
            return self.unsupported(format!(
                "weights tensor {w} has nonzero zero points (TFLite int8 weights are symmetric)"
            ));
        }
        if let Some(bad) = scales.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return self.invalid(format!("weights tensor {w}: scale {bad}"));
        }
        let weights: Vec<i8> = raw.iter().map(|&b| b as i8).collect();
        let bias: Vec<i32> = match bias {
            None => vec![0; channels],
            Some(b) => {
                let bt = self.tensor(b);
                match (bt.dtype, bt.data) {
                    (TensorType::Int32, Some(d))
                        if Some(d.len()) == channels.checked_mul(4) && bt.elements() == channels =>
                    {
                        d.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
                    }
                    _ => {
                        return self.unsupported(format!(
                            "bias tensor {b} ({:?}) is not {channels} constant int32 values ({:?}, shape {:?})",
                            bt.name, bt.dtype, bt.shape
                        ))
                    }
                }
            }
        };
        let (mut multiplier, mut shift) = (Vec::with_capacity(channels), Vec::with_capacity(channels));
        for &s in &scales {
            let (m, sh) = quant::channel_multiplier(in_q.scale, s, out_q.scale);
            multiplier.push(m);
            shift.push(sh);
        }
        Ok(OwnedWeights::Int8 { weights, weight_scale: scales, bias, multiplier, shift })
    }

    /// A float model's constant weights (file order, flat) and bias (`channels` values, zeros if absent).
    fn float_weights(&self, w: usize, bias: Option<usize>, channels: usize) -> Res<(Vec<f32>, ArrayD<f32>)> {
        let floats = |t: usize| -> Res<Vec<f32>> {
            let x = self.tensor(t);
            match (x.dtype, x.data) {
                (TensorType::Float32, Some(d)) if Some(d.len()) == x.elements().checked_mul(4) => {
                    Ok(d.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
                }
                _ => self.unsupported(format!(
                    "tensor {t} ({:?}) is not a constant float32 tensor of shape {:?} ({:?})",
                    x.name, x.shape, x.dtype
                )),
            }
        };
        let kernel = floats(w)?;
        if let Some(bad) = kernel.iter().find(|v| !v.is_finite()) {
            return self.invalid(format!("weights tensor {w} holds {bad}"));
        }
        let bias = match bias {
            Some(b) => floats(b)?,
            None => vec![0.0; channels],
        };
        if bias.len() != channels || bias.iter().any(|v| !v.is_finite()) {
            return self.invalid(format!("bias of {channels} channels: {} values or a non-finite one", bias.len()));
        }
        Ok((kernel, ArrayD::from_shape_vec(vec![channels], bias).map_err(|e| LowerError::Invalid(e.to_string()))?))
    }

    fn conv(&mut self, op: &TflOp, depthwise: bool) -> Res<()> {
        let (x_t, w_t, out_t) = (self.operand(op, 0)?, self.operand(op, 1)?, op.outputs[0]);
        let b_t = op.inputs.get(2).copied().flatten();
        let (padding, stride, dilation, act, multiplier) = match &op.options {
            Some(BuiltinOptions::Conv2DOptions(o)) if !depthwise => (
                o.padding,
                (o.stride_h, o.stride_w),
                (o.dilation_h_factor, o.dilation_w_factor),
                o.fused_activation_function,
                1,
            ),
            Some(BuiltinOptions::DepthwiseConv2DOptions(o)) if depthwise => (
                o.padding,
                (o.stride_h, o.stride_w),
                (o.dilation_h_factor, o.dilation_w_factor),
                o.fused_activation_function,
                o.depth_multiplier,
            ),
            _ => return self.invalid("options missing"),
        };
        let hw = |(h, w): (i32, i32), what: &str| -> Res<Hw> {
            match (u32::try_from(h), u32::try_from(w)) {
                (Ok(h), Ok(w)) if h > 0 && w > 0 => Ok(Hw { h, w }),
                _ => self.invalid(format!("{what} {h}x{w}")),
            }
        };
        let (stride, dilation) = (hw(stride, "stride")?, hw(dilation, "dilation")?);
        let activation = self.activation(act)?;
        // A PAD in front: its source is the real input, its pads the conv's.
        let (source, pads) = match self.pads.get(&x_t) {
            Some(&(src, pads)) => (src, Some(pads)),
            None => (x_t, None),
        };
        let x = self.ours(source)?;
        let in_q = self.quants[x];
        let in_c = match self.shapes[x] {
            Shape::Image { c, .. } => c as usize,
            Shape::Flat(_) => return self.unsupported("a convolution of a vector"),
        };
        let padding = match (padding, pads) {
            (TflPadding::Same, None) => Padding::Same,
            (TflPadding::Valid, None) => Padding::Valid,
            (TflPadding::Valid, Some([t, b, l, r])) => Padding::explicit(t, b, l, r),
            (TflPadding::Same, Some(_)) => return self.unsupported("a PAD in front of a SAME convolution"),
        };
        let out_q = self.act_quant(out_t)?;
        let ws = &self.tensor(w_t).shape;
        let (filters, kh, kw, groups, channel_dim) = match (depthwise, ws.as_slice()) {
            (false, &[o, kh, kw, i]) if i > 0 && in_c % i == 0 => (o, kh, kw, in_c / i, 0),
            (true, &[1, kh, kw, o]) if multiplier > 0 && Some(o) == in_c.checked_mul(multiplier as usize) => {
                (o, kh, kw, in_c, 3)
            }
            _ => {
                return self.unsupported(format!(
                    "weights of shape {ws:?} for {in_c} input channels{}",
                    if depthwise { format!(" and depth multiplier {multiplier}") } else { String::new() }
                ))
            }
        };
        // Every size a layer holds is a u32 of at least 1 (the spec's); the kernel's bytes are held to
        // the file's when they are read.
        let fits = |d: usize| d >= 1 && u32::try_from(d).is_ok();
        if ![filters, kh, kw].into_iter().all(fits) {
            return self.invalid(format!("weights of shape {ws:?}"));
        }
        let mut w = if self.float {
            // Keras's HWIO: TFLite's depthwise [1][kh][kw][out] is that already (I = 1);
            // its conv OHWI is transposed.
            let (kernel, bias) = self.float_weights(w_t, b_t, filters)?;
            let per_in = kernel.len() / (kh * kw * filters);
            let hwio = if depthwise {
                kernel
            } else {
                (0..kernel.len())
                    .map(|j| {
                        let (o, rest) = (j % filters, j / filters);
                        kernel[o * kh * kw * per_in + rest]
                    })
                    .collect()
            };
            let kernel = ArrayD::from_shape_vec(vec![kh, kw, per_in, filters], hwio)
                .map_err(|e| LowerError::Invalid(e.to_string()))?;
            self.float_weights.push((self.layers.len(), kernel, bias));
            OwnedWeights::None
        } else {
            self.int8_weights(w_t, b_t, filters, channel_dim, in_q, out_q)?
        };
        // Depthwise weights are [1][kh][kw][out]; ours are OHWI with I = 1.
        if let (true, OwnedWeights::Int8 { weights, .. }) = (depthwise, &mut w) {
            let taps = kh * kw;
            *weights = (0..filters * taps).map(|i| weights[(i % taps) * filters + i / taps]).collect();
        }
        let conv = Conv2D {
            filters: filters as u32,
            kernel: Hw { h: kh as u32, w: kw as u32 },
            stride,
            dilation,
            padding,
            activation,
            groups: groups as u32,
        };
        self.push(Layer::Conv2D(conv), x, None, w, out_q, Some(out_t))?;
        Ok(())
    }

    fn fully_connected(&mut self, op: &TflOp) -> Res<()> {
        let (x_t, w_t, out_t) = (self.operand(op, 0)?, self.operand(op, 1)?, op.outputs[0]);
        let b_t = op.inputs.get(2).copied().flatten();
        let act = match &op.options {
            Some(BuiltinOptions::FullyConnectedOptions(o)) => {
                if o.weights_format != tflite_schema::tflite::FullyConnectedOptionsWeightsFormat::Default {
                    return self.unsupported(format!("weights format {:?}", o.weights_format));
                }
                o.fused_activation_function
            }
            None => ActivationFunctionType::None,
            _ => return self.invalid("options of another operator"),
        };
        let activation = self.activation(act)?;
        let mut x = self.ours(x_t)?;
        let in_q = self.quants[x];
        let ws = self.tensor(w_t).shape.clone();
        let &[units, k] = ws.as_slice() else { return self.unsupported(format!("weights of shape {ws:?}")) };
        if units == 0 || u32::try_from(units).is_err() {
            return self.invalid(format!("weights of shape {ws:?}"));
        }
        if self.shapes[x].checked_elements() != Some(k as u64) {
            return self.unsupported(format!("{:?} inputs for weights of shape {ws:?}", self.shapes[x]));
        }
        if matches!(self.shapes[x], Shape::Image { .. }) {
            x = self.push(Layer::Flatten, x, None, OwnedWeights::None, in_q, None)?;
        }
        let out_q = self.act_quant(out_t)?;
        let w = if self.float {
            // Keras's [in][units] from TFLite's [units][in].
            let (kernel, bias) = self.float_weights(w_t, b_t, units)?;
            let t: Vec<f32> = (0..kernel.len()).map(|j| kernel[(j % units) * k + j / units]).collect();
            let kernel = ArrayD::from_shape_vec(vec![k, units], t).map_err(|e| LowerError::Invalid(e.to_string()))?;
            self.float_weights.push((self.layers.len(), kernel, bias));
            OwnedWeights::None
        } else {
            self.int8_weights(w_t, b_t, units, 0, in_q, out_q)?
        };
        self.push(Layer::Dense { units: units as u32, activation }, x, None, w, out_q, Some(out_t))?;
        Ok(())
    }

    /// A layer whose output keeps its input's quantization (pools, activations).
    fn same_quant(&self, x: usize, out_t: usize) -> Res<TensorQuant> {
        let q = self.act_quant(out_t)?;
        if q != self.quants[x] {
            return self.unsupported(format!(
                "output quantized ({}, {}) unlike its input ({}, {}); TFLite requires them equal here",
                q.scale, q.zero_point, self.quants[x].scale, self.quants[x].zero_point
            ));
        }
        Ok(q)
    }

    fn pool(&mut self, op: &TflOp, max: bool) -> Res<()> {
        let (x_t, out_t) = (self.operand(op, 0)?, op.outputs[0]);
        let Some(BuiltinOptions::Pool2DOptions(o)) = &op.options else { return self.invalid("options missing") };
        let x = self.ours(x_t)?;
        let q = self.same_quant(x, out_t)?;
        let activation = self.activation(o.fused_activation_function)?;
        let dims = [o.filter_height, o.filter_width, o.stride_h, o.stride_w];
        if dims.iter().any(|&d| d <= 0) {
            return self.invalid(format!("filter {}x{}, stride {}x{}", dims[0], dims[1], dims[2], dims[3]));
        }
        let [fh, fw, sh, sw] = dims.map(|d| d as u32);
        let layer = if max {
            if fh != fw || sh != sw {
                return self.unsupported(format!("a {fh}x{fw} window with stride {sh}x{sw}: max pools are square"));
            }
            let valid = Layer::MaxPool2D { pool: fh, stride: sh };
            let same_is_valid = valid
                .output_shape(self.layers.len(), self.shapes[x])
                .is_ok_and(|s| self.shape_of(out_t).is_ok_and(|t| t == s));
            if o.padding == TflPadding::Same && !same_is_valid {
                return self.unsupported("SAME padding that pads (max pools are valid)");
            }
            valid
        } else {
            let padding = if o.padding == TflPadding::Same { Padding::Same } else { Padding::Valid };
            Layer::AvgPool2D(AvgPool2D { pool: Hw { h: fh, w: fw }, stride: Hw { h: sh, w: sw }, padding })
        };
        if activation == Activation::None {
            self.push(layer, x, None, OwnedWeights::None, q, Some(out_t))?;
        } else {
            // TFLite clamps the pooled value to the activation's range: the same as a ReLU after it.
            let p = self.push(layer, x, None, OwnedWeights::None, q, None)?;
            self.push(Layer::Activation(activation), p, None, OwnedWeights::None, q, Some(out_t))?;
        }
        Ok(())
    }

    fn constant_i32(&self, t: usize) -> Res<Vec<i32>> {
        let x = self.tensor(t);
        match (x.dtype, x.data) {
            (TensorType::Int32, Some(d)) if Some(d.len()) == x.elements().checked_mul(4) => {
                Ok(d.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
            }
            _ => self.unsupported(format!("operand {t} ({:?}) is not a constant int32 tensor", x.name)),
        }
    }

    fn mean(&mut self, op: &TflOp) -> Res<()> {
        let (x_t, axes_t, out_t) = (self.operand(op, 0)?, self.operand(op, 1)?, op.outputs[0]);
        let mut axes = self.constant_i32(axes_t)?;
        axes.sort_unstable();
        if axes != [1, 2] {
            return self.unsupported(format!("axes {axes:?}: only the mean over height and width [1, 2]"));
        }
        let x = self.ours(x_t)?;
        let q = self.act_quant(out_t)?;
        self.push(Layer::GlobalAvgPool, x, None, OwnedWeights::None, q, Some(out_t))?;
        Ok(())
    }

    fn pad(&mut self, op: &TflOp) -> Res<()> {
        let (x_t, p_t, out_t) = (self.operand(op, 0)?, self.operand(op, 1)?, op.outputs[0]);
        if op.code == Op::Padv2 {
            if let Some(v) = op.inputs.get(2).copied().flatten() {
                let zp = self.act_quant(x_t)?.zero_point;
                let value = self.tensor(v).data.and_then(|d| d.first().map(|&b| b as i8 as i32));
                if value != Some(zp) {
                    return self.unsupported("a pad value other than the zero point");
                }
            }
        }
        let p = self.constant_i32(p_t)?;
        let [0, 0, top, bottom, left, right, 0, 0] = p.as_slice().try_into().unwrap_or([-1; 8]) else {
            return self.unsupported(format!("paddings {p:?}: only height and width are padded"));
        };
        if [top, bottom, left, right].iter().any(|&v| v < 0) {
            return self.invalid(format!("paddings {p:?}"));
        }
        let x = self.ours(x_t)?;
        self.same_quant(x, out_t)?;
        self.pads.insert(out_t, (x_t, [top as u32, bottom as u32, left as u32, right as u32]));
        self.notes.push(format!("PAD (operator {}) folded into the convolution after it", self.op));
        Ok(())
    }

    fn reshape(&mut self, op: &TflOp) -> Res<()> {
        let (x_t, out_t) = (self.operand(op, 0)?, op.outputs[0]);
        let x = self.ours(x_t)?;
        let want = self.shape_of(out_t)?;
        if want.checked_elements() != self.shapes[x].checked_elements() {
            return self.invalid(format!("reshapes {:?} to {want:?}", self.shapes[x]));
        }
        let q = self.same_quant(x, out_t)?;
        match (self.shapes[x], want) {
            (Shape::Image { .. }, Shape::Flat(_)) => {
                self.push(Layer::Flatten, x, None, OwnedWeights::None, q, Some(out_t))?;
            }
            (Shape::Flat(_), Shape::Flat(_)) => {
                self.ours.insert(out_t, x);
            }
            (Shape::Image { h, w, c }, Shape::Image { h: h2, w: w2, c: c2 }) if (h, w, c) == (h2, w2, c2) => {
                self.ours.insert(out_t, x);
            }
            (from, to) => return self.unsupported(format!("a reshape of {from:?} to {to:?}")),
        }
        Ok(())
    }

    fn add(&mut self, op: &TflOp) -> Res<()> {
        let (a_t, b_t, out_t) = (self.operand(op, 0)?, self.operand(op, 1)?, op.outputs[0]);
        let act = match &op.options {
            Some(BuiltinOptions::AddOptions(o)) => o.fused_activation_function,
            _ => ActivationFunctionType::None,
        };
        let activation = self.activation(act)?;
        let (a, b) = (self.ours(a_t)?, self.ours(b_t)?);
        if self.shapes[a] != self.shapes[b] {
            return self.unsupported(format!(
                "operands of shapes {:?} and {:?} (no broadcasting)",
                self.shapes[a], self.shapes[b]
            ));
        }
        let q = self.act_quant(out_t)?;
        self.push(Layer::Add { activation }, a, Some(b), OwnedWeights::None, q, Some(out_t))?;
        Ok(())
    }

    fn concat(&mut self, op: &TflOp) -> Res<()> {
        let Some(BuiltinOptions::ConcatenationOptions(o)) = &op.options else { return self.invalid("options missing") };
        if self.activation(o.fused_activation_function)? != Activation::None {
            return self.unsupported("a fused activation on CONCATENATION");
        }
        let out_t = op.outputs[0];
        let rank = self.tensor(out_t).shape.len() as i32;
        if o.axis != -1 && o.axis != rank - 1 {
            return self.unsupported(format!("axis {} of a rank-{rank} tensor: only the last axis", o.axis));
        }
        let q = self.act_quant(out_t)?;
        let parts = (0..op.inputs.len()).map(|i| self.operand(op, i)).collect::<Res<Vec<_>>>()?;
        if parts.len() < 2 {
            return self.unsupported("fewer than two operands");
        }
        let mut acc = self.ours(parts[0])?;
        for (i, &p) in parts.iter().enumerate().skip(1) {
            let other = self.ours(p)?;
            let last = i + 1 == parts.len();
            acc = self.push(Layer::Concat, acc, Some(other), OwnedWeights::None, q, last.then_some(out_t))?;
        }
        Ok(())
    }

    fn softmax(&mut self, op: &TflOp) -> Res<()> {
        let (x_t, out_t) = (self.operand(op, 0)?, op.outputs[0]);
        if let Some(BuiltinOptions::SoftmaxOptions(o)) = &op.options {
            if o.beta != 1.0 {
                return self.unsupported(format!("beta {} (only 1)", o.beta));
            }
        }
        let x = self.ours(x_t)?;
        let q = self.act_quant(out_t)?;
        self.push(Layer::Softmax, x, None, OwnedWeights::None, q, Some(out_t))?;
        Ok(())
    }

    fn activation_op(&mut self, op: &TflOp, activation: Activation) -> Res<()> {
        let (x_t, out_t) = (self.operand(op, 0)?, op.outputs[0]);
        let x = self.ours(x_t)?;
        let q = self.same_quant(x, out_t)?;
        self.push(Layer::Activation(activation), x, None, OwnedWeights::None, q, Some(out_t))?;
        Ok(())
    }
}

/// TFLite tensors that only feed shape arithmetic: RESHAPE's shape operand,
/// or operators (SHAPE, STRIDED_SLICE, PACK...) whose outputs all do.
fn shape_only_tensors(g: &Graph<'_>) -> HashSet<usize> {
    let mut consumers: HashMap<usize, Vec<(usize, usize)>> = HashMap::new();
    for (i, op) in g.ops.iter().enumerate() {
        for (slot, t) in op.inputs.iter().enumerate() {
            if let Some(t) = t {
                consumers.entry(*t).or_default().push((i, slot));
            }
        }
    }
    let mut shape_only = HashSet::new();
    for op in g.ops.iter().rev() {
        for &t in &op.outputs {
            let x = g.tensor(t);
            if !matches!(x.dtype, TensorType::Int32 | TensorType::Int64) || g.outputs.contains(&t) {
                continue;
            }
            let all = consumers.get(&t).is_some_and(|c| {
                c.iter().all(|&(i, slot)| {
                    let o = &g.ops[i];
                    (matches!(o.code, Op::Reshape) && slot == 1) || o.outputs.iter().all(|u| shape_only.contains(u))
                })
            });
            if all {
                shape_only.insert(t);
            }
        }
    }
    shape_only
}

/// A float `.tflite` lowered: the operator list and Keras-layout tensors under our layer names.
#[derive(Debug)]
pub struct LoweredFloat {
    pub spec: ModelSpec,
    pub tensors: HashMap<String, ArrayD<f32>>,
    pub notes: Vec<String>,
}

/// Whether `g` is a float model (a float input that no QUANTIZE reads).
pub fn is_float(g: &Graph<'_>) -> bool {
    let Some(&input) = g.inputs.first() else { return false };
    g.tensor(input).dtype == TensorType::Float32
        && !g.ops.iter().any(|o| o.code == Op::Quantize && o.inputs.first() == Some(&Some(input)))
}

/// Lower a float `g` to our operator list and float tensors (a checkpoint's).
pub fn lower_float(g: &Graph<'_>) -> Res<LoweredFloat> {
    let (lw, spec) = lower_graph(g, true)?;
    let mut tensors = HashMap::new();
    for (i, kernel, bias) in lw.float_weights {
        let name = spec.layer_name(i);
        tensors.insert(format!("{name}/kernel"), kernel);
        tensors.insert(format!("{name}/bias"), bias);
    }
    Ok(LoweredFloat { spec, tensors, notes: lw.notes })
}

/// Lower `g` (a full-integer model) to our operator list and weights.
pub fn lower(g: &Graph<'_>) -> Res<Lowered> {
    if is_float(g) {
        return Err(LowerError::Unsupported(Unsupported {
            op: 0,
            name: "model".into(),
            why: "a float model (it imports as a checkpoint, not a model file)".into(),
        }));
    }
    let (lw, spec) = lower_graph(g, false)?;
    let in_q = lw.quants[0];
    let model = OwnedModel {
        spec,
        precision: Precision::Int8,
        input: in_q,
        layers: lw.data,
        labels: String::new(),
        preprocess: Vec::new(),
    };
    Ok(Lowered { model, tensors: lw.pairs, notes: lw.notes, operators: g.ops.len() })
}

/// The operator walk both precisions share.
fn lower_graph<'g, 'f>(g: &'g Graph<'f>, float: bool) -> Res<(Lower<'g, 'f>, ModelSpec)> {
    let invalid = |s: String| Err(LowerError::Invalid(s));
    if g.inputs.len() != 1 || g.outputs.len() != 1 {
        return Err(LowerError::Unsupported(Unsupported {
            op: 0,
            name: "model".into(),
            why: format!("{} inputs and {} outputs (one of each is supported)", g.inputs.len(), g.outputs.len()),
        }));
    }
    let mut lw = Lower {
        g,
        op: 0,
        code: Op::Add,
        layers: Vec::new(),
        inputs: Vec::new(),
        data: Vec::new(),
        shapes: Vec::new(),
        quants: Vec::new(),
        ours: HashMap::new(),
        pads: HashMap::new(),
        pairs: Vec::new(),
        notes: Vec::new(),
        float,
        float_weights: Vec::new(),
    };
    let shape_only = shape_only_tensors(g);
    // The model's input: the int8 input tensor, or the output of the QUANTIZE reading a float one.
    let mut input_t = g.inputs[0];
    let mut skip = HashSet::new();
    if !float && g.tensor(input_t).dtype == TensorType::Float32 {
        // (One output: a QUANTIZE with none is no input's quantization.)
        let q = g
            .ops
            .iter()
            .position(|o| o.code == Op::Quantize && o.inputs.first() == Some(&Some(input_t)) && o.outputs.len() == 1);
        match q {
            Some(i) => {
                skip.insert(i);
                input_t = g.ops[i].outputs[0];
                lw.notes
                    .push(format!("the float input's QUANTIZE (operator {i}) is stripped: the model takes int8 input"));
            }
            None => {
                return Err(LowerError::Unsupported(Unsupported {
                    op: 0,
                    name: "model".into(),
                    why: "a float input not quantized by a QUANTIZE (a float model: only full-integer models are \
                          imported)"
                        .into(),
                }))
            }
        }
    }
    let mut output_t = g.outputs[0];
    if !float && g.tensor(output_t).dtype == TensorType::Float32 {
        if let Some(i) = g.ops.iter().position(|o| o.code == Op::Dequantize && o.outputs.first() == Some(&output_t)) {
            if let Some(Some(src)) = g.ops[i].inputs.first() {
                skip.insert(i);
                output_t = *src;
                lw.notes.push(format!(
                    "the float output's DEQUANTIZE (operator {i}) is stripped: the model gives int8 output"
                ));
            }
        }
    }
    let in_shape = lw.shape_of(input_t)?;
    let in_q = lw.act_quant(input_t)?;
    lw.shapes.push(in_shape);
    lw.quants.push(in_q);
    lw.ours.insert(input_t, 0);
    lw.pairs.push((input_t, 0));
    for (i, op) in g.ops.iter().enumerate() {
        lw.op = i;
        lw.code = op.code;
        if skip.contains(&i) || (!op.outputs.is_empty() && op.outputs.iter().all(|t| shape_only.contains(t))) {
            continue;
        }
        if op.outputs.len() != 1 {
            return lw.unsupported(format!("{} outputs", op.outputs.len()));
        }
        match op.code {
            Op::Conv2d => lw.conv(op, false)?,
            Op::DepthwiseConv2d => lw.conv(op, true)?,
            Op::FullyConnected => lw.fully_connected(op)?,
            Op::AveragePool2d => lw.pool(op, false)?,
            Op::MaxPool2d => lw.pool(op, true)?,
            Op::Mean => lw.mean(op)?,
            Op::Pad | Op::Padv2 => lw.pad(op)?,
            Op::Reshape | Op::Squeeze => lw.reshape(op)?,
            Op::Add => lw.add(op)?,
            Op::Concatenation => lw.concat(op)?,
            Op::Softmax => lw.softmax(op)?,
            Op::Relu => lw.activation_op(op, Activation::Relu)?,
            Op::Relu6 => lw.activation_op(op, Activation::Relu6)?,
            _ => return lw.unsupported("not an operator the engine runs"),
        }
    }
    let Some(&out) = lw.ours.get(&output_t) else {
        return invalid(format!("the output tensor {output_t} is not computed by the operators taken"));
    };
    if out != lw.layers.len() {
        return invalid(format!(
            "the output tensor {output_t} is not the last operator's (a model whose last operator is not its output)"
        ));
    }
    let spec = ModelSpec::graph(in_shape, &lw.layers, &lw.inputs).map_err(|e| LowerError::Invalid(e.to_string()))?;
    Ok((lw, spec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_names_are_tflites() {
        assert_eq!(op_name(Op::Conv2d), "CONV_2D");
        assert_eq!(op_name(Op::DepthwiseConv2d), "DEPTHWISE_CONV_2D");
        assert_eq!(op_name(Op::AveragePool2d), "AVERAGE_POOL_2D");
        assert_eq!(op_name(Op::FullyConnected), "FULLY_CONNECTED");
        assert_eq!(op_name(Op::Padv2), "PADV2");
    }
}
