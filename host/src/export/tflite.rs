//! Our int8 model as a TensorFlow Lite flatbuffer that TFLite's interpreter
//! (and TFLite Micro) runs with the same output bytes as our engine, so a user
//! can set our engine beside theirs on one board.
//!
//! Each layer becomes the TFLite operator with the same integer arithmetic:
//! BatchNormalization (a per-channel int8 affine) is a 1x1 DEPTHWISE_CONV_2D,
//! explicit padding a PAD before a VALID convolution, Flatten a RESHAPE,
//! the global average pool a MEAN over height and width, Dropout nothing.
//! TFLite derives each channel's multiplier from the scales at Prepare; the
//! export refuses a model whose stored multipliers differ from that
//! derivation, since TFLite would then compute something else.
use std::collections::HashMap;

use shared::model::{LayerWeights, Precision, QuantModel, TensorQuant};
use shared::quant;
use shared::spec::{Activation, Layer, Padding, Shape};
use tflite_schema::tflite as t;

/// Why a model cannot be written as a `.tflite`.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("only int8 models export to .tflite (this one is {0})")]
    Precision(&'static str),
    #[error("layer {index} ({kind}): {why}")]
    Layer { index: usize, kind: &'static str, why: String },
}

/// Operator versions as TensorFlow 2.21's converter writes them for int8.
fn version(op: t::BuiltinOperator) -> i32 {
    use t::BuiltinOperator as O;
    match op {
        O::Conv2d | O::DepthwiseConv2d => 3,
        O::FullyConnected => 4,
        O::Reshape => 1,
        _ => 2,
    }
}

struct Writer {
    tensors: Vec<t::Tensor>,
    buffers: Vec<t::Buffer>,
    ops: Vec<t::Operator>,
    codes: Vec<t::OperatorCode>,
    code_index: HashMap<i32, u32>,
}

fn shape_dims(s: Shape) -> Vec<i32> {
    match s {
        Shape::Image { h, w, c } => vec![1, h as i32, w as i32, c as i32],
        Shape::Flat(n) => vec![1, n as i32],
    }
}

fn per_tensor(q: TensorQuant) -> t::QuantizationParameters {
    t::QuantizationParameters {
        scale: Some(vec![q.scale]),
        zero_point: Some(vec![q.zero_point as i64]),
        ..Default::default()
    }
}

impl Writer {
    fn tensor(
        &mut self,
        name: String,
        dims: Vec<i32>,
        type_: t::TensorType,
        quant: Option<t::QuantizationParameters>,
        data: Option<Vec<u8>>,
    ) -> i32 {
        let buffer = match data {
            Some(d) => {
                self.buffers.push(t::Buffer { data: Some(d), ..Default::default() });
                (self.buffers.len() - 1) as u32
            }
            None => 0,
        };
        self.tensors.push(t::Tensor {
            shape: Some(dims),
            type_,
            buffer,
            name: Some(name),
            quantization: quant.map(Box::new),
            ..Default::default()
        });
        (self.tensors.len() - 1) as i32
    }

    fn activation(&mut self, name: String, shape: Shape, q: TensorQuant) -> i32 {
        self.tensor(name, shape_dims(shape), t::TensorType::Int8, Some(per_tensor(q)), None)
    }

    fn int32_constant(&mut self, name: String, values: &[i32]) -> i32 {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensor(name, vec![values.len() as i32], t::TensorType::Int32, None, Some(data))
    }

    fn op(
        &mut self,
        code: t::BuiltinOperator,
        inputs: Vec<i32>,
        outputs: Vec<i32>,
        options: Option<t::BuiltinOptions>,
    ) {
        let key = code as i32;
        let next = self.codes.len() as u32;
        let index = *self.code_index.entry(key).or_insert(next);
        if index == next {
            self.codes.push(t::OperatorCode {
                deprecated_builtin_code: key.min(127) as i8,
                builtin_code: code,
                version: version(code),
                ..Default::default()
            });
        }
        self.ops.push(t::Operator {
            opcode_index: index,
            inputs: Some(inputs),
            outputs: Some(outputs),
            builtin_options: options,
            ..Default::default()
        });
    }
}

fn fused(a: Activation) -> t::ActivationFunctionType {
    match a {
        Activation::Relu => t::ActivationFunctionType::Relu,
        Activation::Relu6 => t::ActivationFunctionType::Relu6,
        // Softmax after a Dense: our engine and the export both give the logits.
        Activation::None | Activation::Softmax => t::ActivationFunctionType::None,
    }
}

/// The `.tflite` bytes of `model` (int8).
pub fn to_tflite(model: &QuantModel<'_>) -> Result<Vec<u8>, ExportError> {
    if model.precision != Precision::Int8 {
        return Err(ExportError::Precision(model.precision.name()));
    }
    let spec = &model.spec;
    let mut w = Writer {
        tensors: Vec::new(),
        buffers: vec![t::Buffer::default()],
        ops: Vec::new(),
        codes: Vec::new(),
        code_index: HashMap::new(),
    };
    // Our tensor k (0 the input, i + 1 layer i's output) -> TFLite tensor.
    let mut of = vec![w.activation("input".into(), spec.input(), model.input)];
    let mut quants = vec![model.input];
    for (i, layer, inp, out) in spec.shapes() {
        let err = |why: String| ExportError::Layer { index: i, kind: layer.kind().class_name(), why };
        let ins = spec.inputs()[i];
        let x = of[ins.main as usize];
        let in_q = quants[ins.main as usize];
        let data = &model.layer_data()[i];
        let out_q = data.output;
        let name = spec.layer_name(i).to_string();
        let weights = match data.weights {
            LayerWeights::Int8(w) => Some(w),
            _ => None,
        };
        // Stored multipliers must be what TFLite derives from the scales.
        if let Some(wt) = weights {
            for (c, &s) in wt.weight_scale.iter().enumerate() {
                if quant::channel_multiplier(in_q.scale, s, out_q.scale) != (wt.multiplier[c], wt.shift[c]) {
                    return Err(err(format!(
                        "channel {c}'s multiplier is not QuantizeMultiplier(in * w / out), which TFLite would compute"
                    )));
                }
            }
        }
        let y = match *layer {
            Layer::Dropout { .. } | Layer::Activation(Activation::None) => {
                of.push(x);
                quants.push(in_q);
                continue;
            }
            _ => w.activation(name.clone(), out, out_q),
        };
        let need_weights = || weights.ok_or_else(|| err("no int8 weights".into()));
        match *layer {
            Layer::Conv2D(c) => {
                let wt = need_weights()?;
                let in_c = inp.channels();
                let depthwise = c.groups > 1 && c.groups == in_c;
                let (x, padding) = match c.padding {
                    Padding::Same => (x, t::Padding::Same),
                    Padding::Valid => (x, t::Padding::Valid),
                    Padding::Explicit(p) => {
                        let Shape::Image { h, w: wd, c: ch } = inp else { return Err(err("padding a vector".into())) };
                        let padded = Shape::image(h + p.top + p.bottom, wd + p.left + p.right, ch);
                        let pt = w.activation(format!("{name}/pad"), padded, in_q);
                        let pads = [0, 0, p.top as i32, p.bottom as i32, p.left as i32, p.right as i32, 0, 0];
                        let pads_t = w.int32_constant(format!("{name}/paddings"), &pads);
                        let last = w.tensors.len() - 1;
                        w.tensors[last].shape = Some(vec![4, 2]);
                        w.op(
                            t::BuiltinOperator::Pad,
                            vec![x, pads_t],
                            vec![pt],
                            Some(t::BuiltinOptions::PadOptions(Box::default())),
                        );
                        (pt, t::Padding::Valid)
                    }
                };
                let (kh, kw, o) = (c.kernel.h as i32, c.kernel.w as i32, c.filters as i32);
                let per_in = (in_c / c.groups) as i32;
                let (dims, qdim, raw) = if depthwise {
                    // Ours OHWI with I = 1; TFLite's [1][kh][kw][O].
                    let taps = (kh * kw) as usize;
                    let raw = (0..wt.weights.len())
                        .map(|j| wt.weights[(j % o as usize) * taps + j / o as usize] as u8)
                        .collect();
                    (vec![1, kh, kw, o], 3, raw)
                } else {
                    (vec![o, kh, kw, per_in], 0, wt.weights.iter().map(|&v| v as u8).collect())
                };
                let (wt_t, b_t) = weights_and_bias(&mut w, &name, dims, qdim, raw, wt, in_q);
                let act = fused(c.activation);
                let (sh, sw) = (c.stride.h as i32, c.stride.w as i32);
                let (dh, dw) = (c.dilation.h as i32, c.dilation.w as i32);
                if depthwise {
                    let opts = t::DepthwiseConv2DOptions {
                        padding,
                        stride_w: sw,
                        stride_h: sh,
                        depth_multiplier: o / in_c as i32,
                        fused_activation_function: act,
                        dilation_w_factor: dw,
                        dilation_h_factor: dh,
                    };
                    w.op(
                        t::BuiltinOperator::DepthwiseConv2d,
                        vec![x, wt_t, b_t],
                        vec![y],
                        Some(t::BuiltinOptions::DepthwiseConv2DOptions(Box::new(opts))),
                    );
                } else {
                    let opts = t::Conv2DOptions {
                        padding,
                        stride_w: sw,
                        stride_h: sh,
                        fused_activation_function: act,
                        dilation_w_factor: dw,
                        dilation_h_factor: dh,
                        ..Default::default()
                    };
                    w.op(
                        t::BuiltinOperator::Conv2d,
                        vec![x, wt_t, b_t],
                        vec![y],
                        Some(t::BuiltinOptions::Conv2DOptions(Box::new(opts))),
                    );
                }
            }
            Layer::BatchNorm { .. } => {
                let wt = need_weights()?;
                let c = wt.weights.len() as i32;
                let raw = wt.weights.iter().map(|&v| v as u8).collect();
                let (wt_t, b_t) = weights_and_bias(&mut w, &name, vec![1, 1, 1, c], 3, raw, wt, in_q);
                let opts = t::DepthwiseConv2DOptions {
                    padding: t::Padding::Valid,
                    stride_w: 1,
                    stride_h: 1,
                    depth_multiplier: 1,
                    fused_activation_function: t::ActivationFunctionType::None,
                    dilation_w_factor: 1,
                    dilation_h_factor: 1,
                };
                w.op(
                    t::BuiltinOperator::DepthwiseConv2d,
                    vec![x, wt_t, b_t],
                    vec![y],
                    Some(t::BuiltinOptions::DepthwiseConv2DOptions(Box::new(opts))),
                );
            }
            Layer::Dense { units, activation } => {
                let wt = need_weights()?;
                let k = inp.elements() as i32;
                let raw = wt.weights.iter().map(|&v| v as u8).collect();
                let (wt_t, b_t) = weights_and_bias(&mut w, &name, vec![units as i32, k], 0, raw, wt, in_q);
                let opts =
                    t::FullyConnectedOptions { fused_activation_function: fused(activation), ..Default::default() };
                w.op(
                    t::BuiltinOperator::FullyConnected,
                    vec![x, wt_t, b_t],
                    vec![y],
                    Some(t::BuiltinOptions::FullyConnectedOptions(Box::new(opts))),
                );
            }
            Layer::MaxPool2D { pool, stride } => {
                let opts = t::Pool2DOptions {
                    padding: t::Padding::Valid,
                    stride_w: stride as i32,
                    stride_h: stride as i32,
                    filter_width: pool as i32,
                    filter_height: pool as i32,
                    fused_activation_function: t::ActivationFunctionType::None,
                };
                w.op(
                    t::BuiltinOperator::MaxPool2d,
                    vec![x],
                    vec![y],
                    Some(t::BuiltinOptions::Pool2DOptions(Box::new(opts))),
                );
            }
            Layer::AvgPool2D(p) => {
                let padding = match p.padding {
                    Padding::Same => t::Padding::Same,
                    Padding::Valid => t::Padding::Valid,
                    Padding::Explicit(_) => {
                        return Err(err("explicit padding (TFLite's average pool pads only SAME)".into()))
                    }
                };
                let opts = t::Pool2DOptions {
                    padding,
                    stride_w: p.stride.w as i32,
                    stride_h: p.stride.h as i32,
                    filter_width: p.pool.w as i32,
                    filter_height: p.pool.h as i32,
                    fused_activation_function: t::ActivationFunctionType::None,
                };
                w.op(
                    t::BuiltinOperator::AveragePool2d,
                    vec![x],
                    vec![y],
                    Some(t::BuiltinOptions::Pool2DOptions(Box::new(opts))),
                );
            }
            Layer::GlobalAvgPool => {
                let axes = w.int32_constant(format!("{name}/axes"), &[1, 2]);
                w.op(
                    t::BuiltinOperator::Mean,
                    vec![x, axes],
                    vec![y],
                    Some(t::BuiltinOptions::ReducerOptions(Box::new(t::ReducerOptions { keep_dims: false }))),
                );
            }
            Layer::Flatten => {
                let n = out.elements() as i32;
                let shape = w.int32_constant(format!("{name}/shape"), &[1, n]);
                let opts = t::ReshapeOptions { new_shape: Some(vec![1, n]) };
                w.op(
                    t::BuiltinOperator::Reshape,
                    vec![x, shape],
                    vec![y],
                    Some(t::BuiltinOptions::ReshapeOptions(Box::new(opts))),
                );
            }
            Layer::Add { activation } => {
                let other = of[ins.other.ok_or_else(|| err("no second operand".into()))? as usize];
                let opts = t::AddOptions { fused_activation_function: fused(activation), ..Default::default() };
                w.op(
                    t::BuiltinOperator::Add,
                    vec![x, other],
                    vec![y],
                    Some(t::BuiltinOptions::AddOptions(Box::new(opts))),
                );
            }
            Layer::Concat => {
                let o = ins.other.ok_or_else(|| err("no second operand".into()))? as usize;
                if in_q != out_q || quants[o] != out_q {
                    return Err(err(
                        "operands quantized unlike the output (TFLite's int8 CONCATENATION copies bytes)".into()
                    ));
                }
                let opts =
                    t::ConcatenationOptions { axis: -1, fused_activation_function: t::ActivationFunctionType::None };
                w.op(
                    t::BuiltinOperator::Concatenation,
                    vec![x, of[o]],
                    vec![y],
                    Some(t::BuiltinOptions::ConcatenationOptions(Box::new(opts))),
                );
            }
            Layer::Activation(a) => {
                if in_q != out_q {
                    return Err(err("output quantized unlike its input".into()));
                }
                let code = if a == Activation::Relu6 { t::BuiltinOperator::Relu6 } else { t::BuiltinOperator::Relu };
                w.op(code, vec![x], vec![y], None);
            }
            Layer::Softmax => {
                let opts = t::SoftmaxOptions { beta: 1.0 };
                w.op(
                    t::BuiltinOperator::Softmax,
                    vec![x],
                    vec![y],
                    Some(t::BuiltinOptions::SoftmaxOptions(Box::new(opts))),
                );
            }
            Layer::Dropout { .. } => unreachable!("handled above"),
        }
        of.push(y);
        quants.push(out_q);
    }
    let output = *of.last().unwrap_or(&0);
    let graph = t::SubGraph {
        tensors: Some(w.tensors),
        inputs: Some(vec![of[0]]),
        outputs: Some(vec![output]),
        operators: Some(w.ops),
        name: Some("main".into()),
    };
    let file = t::Model {
        version: 3,
        operator_codes: Some(w.codes),
        subgraphs: Some(vec![graph]),
        description: Some("exported by host export --tflite".into()),
        buffers: Some(w.buffers),
        ..Default::default()
    };
    let mut builder = planus::Builder::new();
    Ok(with_identifier(builder.finish(&file, None), *b"TFL3"))
}

/// A finished flatbuffer with a file identifier after its root offset.
/// planus 1.3 writes the identifier before the offset when asked for one,
/// so the buffer is finished without and shifted by 8 bytes instead: every
/// offset inside a flatbuffer is relative (and 8 keeps the alignment), so
/// only the root offset, the first word, changes.
fn with_identifier(plain: &[u8], id: [u8; 4]) -> Vec<u8> {
    let root = plain.get(..4).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let mut out = Vec::with_capacity(plain.len() + 8);
    out.extend_from_slice(&(root + 8).to_le_bytes());
    out.extend_from_slice(&id);
    out.extend_from_slice(plain);
    out
}

/// The weights tensor (int8, per-channel along `qdim`) and the int32 bias
/// tensor (scale `in * w[c]`) of one layer.
fn weights_and_bias(
    w: &mut Writer,
    name: &str,
    dims: Vec<i32>,
    qdim: i32,
    raw: Vec<u8>,
    wt: shared::model::Int8Weights<'_>,
    in_q: TensorQuant,
) -> (i32, i32) {
    let n = wt.weight_scale.len();
    let wq = t::QuantizationParameters {
        scale: Some(wt.weight_scale.to_vec()),
        zero_point: Some(vec![0; n]),
        quantized_dimension: qdim,
        ..Default::default()
    };
    let wt_t = w.tensor(format!("{name}/weights"), dims, t::TensorType::Int8, Some(wq), Some(raw));
    let bq = t::QuantizationParameters {
        scale: Some(wt.weight_scale.iter().map(|s| in_q.scale * s).collect()),
        zero_point: Some(vec![0; n]),
        ..Default::default()
    };
    let bias = wt.bias.iter().flat_map(|v| v.to_le_bytes()).collect();
    let b_t = w.tensor(format!("{name}/bias"), vec![n as i32], t::TensorType::Int32, Some(bq), Some(bias));
    (wt_t, b_t)
}
