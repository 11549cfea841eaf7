//! An independent float reference of the layer stack, built on `tract-core`.
//!
//! The host's own float forward (`host::nn`), its quantizer and the firmware
//! are all compared against *something*; if that something were our own
//! code, a shared misunderstanding (padding split, flatten order, BN placement)
//! would pass every test. This module rebuilds the same Keras-semantics
//! inference graph with a third-party inference engine, from nothing but the
//! [`ModelSpec`] and the Keras-named float tensors, so that agreement with it
//! is evidence that our forward is right, not merely self-consistent.
//!
//! It is deliberately plain: one tract op per Keras operation, explicit
//! paddings, BatchNormalization folded into a per-channel `mul` + `add` with
//! constants. It is also reusable for a latency benchmark: the graph is
//! optimised once in [`TractReference::new`] and [`TractReference::run`] only
//! executes the plan (single-threaded, tract's default executor; a benchmark
//! that wants threads sets `tract_linalg::multithread`'s executor itself).
//!
//! Layouts (Keras's): input NHWC `[batch, h, w, c]`; `conv2d*/kernel` HWIO
//! `[kh, kw, in, out]`, `conv2d*/bias` `[out]`;
//! `batch_normalization*/{gamma,beta,moving_mean,moving_variance}` `[c]`;
//! `dense*/kernel` `[in, out]`, `dense*/bias` `[out]`.

use std::collections::HashMap;

/// The `ndarray` this API speaks, re-exported so that callers without their own
/// dependency on it (the suite's integration tests and benchmarks) can build
/// inputs of exactly the matching version.
pub use ndarray;

use ndarray::{Array2, ArrayD, ArrayView4, IxDyn};
use shared::geometry::ConvGeom;
use shared::spec::{Activation, Layer, ModelSpec, Shape};
use tract_core::internal::*;
use tract_core::ops::array::TypedConcat;
use tract_core::ops::change_axes::wire_with_rank_broadcast;
use tract_core::ops::cnn::{Conv, KernelFormat, MaxPool, PaddingSpec, PoolSpec, SumPool};
use tract_core::ops::einsum::EinSum;
use tract_core::ops::math::{add, max, min, mul};
use tract_core::ops::nn::DataFormat;

/// Why the reference graph could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    /// A parameter tensor the spec calls for is absent from the map.
    #[error("layer {layer}: tensor \"{tensor}\" is missing")]
    MissingTensor { layer: String, tensor: String },
    /// A parameter tensor has the wrong shape for its layer.
    #[error("tensor \"{tensor}\" has shape {got:?}, layer needs {expected:?}")]
    TensorShape { tensor: String, expected: Vec<usize>, got: Vec<usize> },
    /// The spec uses something this reference does not model (a softmax
    /// anywhere but the last layer, or a model whose output is not flat).
    #[error("layer {layer}: {what}")]
    Unsupported { layer: String, what: &'static str },
    /// The batch size is zero.
    #[error("the batch size must be at least 1")]
    EmptyBatch,
    /// `run` was given an input of the wrong shape.
    #[error("input has shape {got:?}, the reference was built for {expected:?}")]
    InputShape { expected: Vec<usize>, got: Vec<usize> },
    /// tract rejected the graph or failed while running it.
    #[error("tract failed while {context}: {source:#}")]
    Tract {
        context: String,
        #[source]
        source: TractError,
    },
}

/// Attach a human-readable context to tract's errors.
trait TractContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, ReferenceError>;
}

impl<T> TractContext<T> for TractResult<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T, ReferenceError> {
        self.map_err(|source| ReferenceError::Tract { context: context(), source })
    }
}

/// The spec's inference graph, optimised and ready to run in tract.
#[derive(Debug)]
pub struct TractReference {
    plan: TypedSimplePlan<TypedModel>,
    input_shape: [usize; 4],
    classes: usize,
}

impl TractReference {
    /// Build the model's inference graph in tract-core from a spec and its float
    /// tensors (Keras names from `spec.layer_name(i)`, Keras layouts; see the
    /// module docs), for inputs NHWC f32 `[batch, h, w, c]`.
    ///
    /// Inference semantics: Dropout is the identity, BatchNormalization uses
    /// the moving statistics and its layer's epsilon, and a final Softmax is
    /// left out so that [`run`](Self::run) returns logits (comparing logits is
    /// far more sensitive than comparing saturated probabilities).
    pub fn new(spec: &ModelSpec, tensors: &HashMap<String, ArrayD<f32>>, batch: usize) -> Result<Self, ReferenceError> {
        if batch == 0 {
            return Err(ReferenceError::EmptyBatch);
        }
        let Shape::Image { h, w, c } = spec.input() else {
            return Err(ReferenceError::Unsupported { layer: "input".into(), what: "the input must be an image" });
        };
        let input_shape = [batch, h as usize, w as usize, c as usize];
        let mut model = TypedModel::default();
        let source = model.add_source("input", f32::fact(input_shape)).ctx(|| "adding the input".into())?;
        // `wires[t]`: tensor `t` (0: the input, `i + 1`: layer `i`'s output).
        let mut wires = vec![source];

        let last = spec.layers().len() - 1;
        for (i, layer, input, output) in spec.shapes() {
            let name = spec.layer_name(i).to_string();
            let get = |suffix: &str, expected: &[usize]| param(tensors, &name, suffix, expected);
            let reads = spec.inputs()[i];
            // A validated spec reads only tensors computed before the layer.
            let wire = wires[reads.main as usize];
            let other = reads.other.map(|t| wires[t as usize]);
            let out = match *layer {
                Layer::Conv2D(conv) => {
                    let Shape::Image { c: cin, .. } = input else { unreachable!("validated spec") };
                    let (kh, kw) = (conv.kernel.h as usize, conv.kernel.w as usize);
                    let (cin, cout) = (cin as usize, conv.filters as usize);
                    let groups = conv.groups as usize;
                    let kernel = get("kernel", &[kh, kw, cin / groups, cout])?;
                    let bias = get("bias", &[cout])?;
                    // Grouped: tract's HWIO groups the I axis, Keras's the O axis, so hand
                    // tract OIHW ([O, I / groups, kh, kw], ONNX's layout: groups on O).
                    let (kernel, kernel_fmt) = if groups > 1 {
                        (
                            kernel.permuted_axes(IxDyn(&[3, 2, 0, 1])).as_standard_layout().into_owned(),
                            KernelFormat::OIHW,
                        )
                    } else {
                        (kernel, KernelFormat::HWIO)
                    };
                    // The one conv geometry (shared's), as the engine and host::nn use it.
                    let g = ConvGeom::from_spec(&conv, input)
                        .ok_or(ReferenceError::Unsupported { layer: name.clone(), what: "empty convolution" })?;
                    let op = Conv {
                        pool_spec: PoolSpec {
                            data_format: DataFormat::NHWC,
                            kernel_shape: tvec![kh, kw],
                            padding: explicit_padding(&g),
                            dilations: Some(tvec![g.dilation_h, g.dilation_w]),
                            strides: Some(tvec![g.stride_h, g.stride_w]),
                            input_channels: cin,
                            output_channels: cout,
                        },
                        kernel_fmt,
                        group: groups,
                        q_params: None,
                    };
                    let kernel =
                        model.add_const(format!("{name}.kernel"), Tensor::from(kernel)).ctx(|| name.clone())?;
                    let bias = model.add_const(format!("{name}.bias"), Tensor::from(bias)).ctx(|| name.clone())?;
                    let out = model.wire_node(&name, op, &[wire, kernel, bias]).ctx(|| format!("wiring {name}"))?[0];
                    activation(&mut model, &name, conv.activation, i == last, out)?
                }
                Layer::BatchNorm { epsilon, .. } => {
                    let ch = input.channels() as usize;
                    let gamma = get("gamma", &[ch])?;
                    let beta = get("beta", &[ch])?;
                    let mean = get("moving_mean", &[ch])?;
                    let var = get("moving_variance", &[ch])?;
                    // y = (x - mean) / sqrt(var + eps) * gamma + beta = x * scale + shift,
                    // folded in f64 so the constants carry no extra float32 rounding.
                    let (mut scale, mut shift) = (Vec::with_capacity(ch), Vec::with_capacity(ch));
                    for j in 0..ch {
                        let sc = gamma[j] as f64 / (var[j] as f64 + epsilon as f64).sqrt();
                        scale.push(sc as f32);
                        shift.push((beta[j] as f64 - mean[j] as f64 * sc) as f32);
                    }
                    let scale = model.add_const(format!("{name}.scale"), tensor1(&scale)).ctx(|| name.clone())?;
                    let shift = model.add_const(format!("{name}.shift"), tensor1(&shift)).ctx(|| name.clone())?;
                    let y = wire_with_rank_broadcast(format!("{name}.mul"), &mut model, mul(), &[wire, scale])
                        .ctx(|| format!("wiring {name}"))?[0];
                    wire_with_rank_broadcast(format!("{name}.add"), &mut model, add(), &[y, shift])
                        .ctx(|| format!("wiring {name}"))?[0]
                }
                Layer::MaxPool2D { pool, stride } => {
                    let ch = input.channels() as usize;
                    let op = MaxPool {
                        pool_spec: PoolSpec {
                            data_format: DataFormat::NHWC,
                            kernel_shape: tvec![pool as usize, pool as usize],
                            padding: PaddingSpec::Valid,
                            dilations: None,
                            strides: Some(tvec![stride as usize, stride as usize]),
                            input_channels: ch,
                            output_channels: ch,
                        },
                        with_index_outputs: None,
                    };
                    model.wire_node(&name, op, &[wire]).ctx(|| format!("wiring {name}"))?[0]
                }
                Layer::AvgPool2D(_) | Layer::GlobalAvgPool => {
                    let ch = input.channels() as usize;
                    let g = crate::nn::pool::avg_geometry(layer, input)
                        .ok_or(ReferenceError::Unsupported { layer: name.clone(), what: "empty pool" })?;
                    // Padding never counts: the divisor is each window's in-image pixels.
                    let op = SumPool {
                        pool_spec: PoolSpec {
                            data_format: DataFormat::NHWC,
                            kernel_shape: tvec![g.kernel_h, g.kernel_w],
                            padding: explicit_padding(&g),
                            dilations: None,
                            strides: Some(tvec![g.stride_h, g.stride_w]),
                            input_channels: ch,
                            output_channels: ch,
                        },
                        count_include_pad: false,
                        normalize: true,
                    };
                    let out = model.wire_node(&name, op, &[wire]).ctx(|| format!("wiring {name}"))?[0];
                    if matches!(layer, Layer::GlobalAvgPool) {
                        // [batch, 1, 1, c] -> [batch, c], as Keras's GlobalAveragePooling2D.
                        let from: TVec<TDim> = tvec![1.to_dim(), 1.to_dim(), ch.to_dim()];
                        let to: TVec<TDim> = tvec![ch.to_dim()];
                        model
                            .wire_node(format!("{name}.flat"), AxisOp::Reshape(1, from, to), &[out])
                            .ctx(|| format!("wiring {name}"))?[0]
                    } else {
                        out
                    }
                }
                Layer::Flatten => match input {
                    // Row-major reshape of [batch, h, w, c]: Keras's h, w, c order.
                    Shape::Image { h, w, c } => {
                        let from: TVec<TDim> =
                            tvec![(h as usize).to_dim(), (w as usize).to_dim(), (c as usize).to_dim()];
                        let to: TVec<TDim> = tvec![(output.elements() as usize).to_dim()];
                        model
                            .wire_node(&name, AxisOp::Reshape(1, from, to), &[wire])
                            .ctx(|| format!("wiring {name}"))?[0]
                    }
                    Shape::Flat(_) => wire,
                },
                Layer::Dense { units, activation: act } => {
                    let (fin, units) = (input.channels() as usize, units as usize);
                    let kernel = get("kernel", &[fin, units])?;
                    let bias = get("bias", &[units])?;
                    let kernel =
                        model.add_const(format!("{name}.kernel"), Tensor::from(kernel)).ctx(|| name.clone())?;
                    let bias = model.add_const(format!("{name}.bias"), Tensor::from(bias)).ctx(|| name.clone())?;
                    let axes: AxesMapping = "bi,io->bo".parse().ctx(|| "parsing the dense einsum".into())?;
                    let y = model
                        .wire_node(format!("{name}.matmul"), EinSum::new(axes, f32::datum_type()), &[wire, kernel])
                        .ctx(|| format!("wiring {name}"))?[0];
                    let y = wire_with_rank_broadcast(format!("{name}.bias_add"), &mut model, add(), &[y, bias])
                        .ctx(|| format!("wiring {name}"))?[0];
                    activation(&mut model, &name, act, i == last, y)?
                }
                Layer::Dropout { .. } => wire,
                Layer::Add { activation: act } => {
                    let other = other.ok_or(ReferenceError::Unsupported { layer: name.clone(), what: "one input" })?;
                    let y = model.wire_node(&name, add(), &[wire, other]).ctx(|| format!("wiring {name}"))?[0];
                    activation(&mut model, &name, act, false, y)?
                }
                Layer::Concat => {
                    let other = other.ok_or(ReferenceError::Unsupported { layer: name.clone(), what: "one input" })?;
                    // The last axis: channels of NHWC [batch, h, w, c], features of [batch, n].
                    let axis = match input {
                        Shape::Image { .. } => 3,
                        Shape::Flat(_) => 1,
                    };
                    model.wire_node(&name, TypedConcat { axis }, &[wire, other]).ctx(|| format!("wiring {name}"))?[0]
                }
                Layer::Activation(act) => activation(&mut model, &name, act, false, wire)?,
                Layer::Softmax => {
                    return Err(ReferenceError::Unsupported { layer: name, what: "a Softmax layer" });
                }
            };
            wires.push(out);
        }
        let wire = wires[spec.layers().len()];
        let Shape::Flat(classes) = spec.output() else {
            return Err(ReferenceError::Unsupported {
                layer: spec.layer_name(last).to_string(),
                what: "the model must end in a flat output (Flatten or Dense)",
            });
        };
        model.set_output_outlets(&[wire]).ctx(|| "setting the output".into())?;
        let plan = model
            .into_optimized()
            .ctx(|| "optimising the graph".into())?
            .into_runnable()
            .ctx(|| "planning the graph".into())?;
        Ok(TractReference { plan, input_shape, classes: classes as usize })
    }

    /// The input shape `[batch, h, w, c]` this reference runs on.
    pub fn input_shape(&self) -> [usize; 4] {
        self.input_shape
    }

    /// Logits (the final softmax NOT applied), `[batch, classes]`.
    pub fn run(&self, x: ArrayView4<f32>) -> Result<Array2<f32>, ReferenceError> {
        if x.shape() != self.input_shape {
            return Err(ReferenceError::InputShape { expected: self.input_shape.to_vec(), got: x.shape().to_vec() });
        }
        let data: Vec<f32> = x.iter().copied().collect();
        let input = Tensor::from_shape(&self.input_shape, &data).ctx(|| "building the input tensor".into())?;
        let out = self.plan.run(tvec![input.into_tvalue()]).ctx(|| "running the graph".into())?;
        let out = out[0].as_slice::<f32>().ctx(|| "reading the output".into())?;
        Array2::from_shape_vec((self.input_shape[0], self.classes), out.to_vec()).map_err(|_| {
            ReferenceError::Unsupported { layer: "output".into(), what: "the output size is not batch x classes" }
        })
    }
}

/// Look up `{layer}/{suffix}`, check its shape and return it.
fn param(
    tensors: &HashMap<String, ArrayD<f32>>,
    layer: &str,
    suffix: &str,
    expected: &[usize],
) -> Result<ArrayD<f32>, ReferenceError> {
    let key = format!("{layer}/{suffix}");
    let a = tensors
        .get(&key)
        .ok_or_else(|| ReferenceError::MissingTensor { layer: layer.to_string(), tensor: key.clone() })?;
    if a.shape() != expected {
        return Err(ReferenceError::TensorShape { tensor: key, expected: expected.to_vec(), got: a.shape().to_vec() });
    }
    // A standard-layout copy, whatever the caller's strides.
    Ok(a.as_standard_layout().into_owned())
}

/// tract's explicit padding for `g`: the pads a window reaches on each side
/// (shared's geometry), which give the same output size as the declared ones.
fn explicit_padding(g: &ConvGeom) -> PaddingSpec {
    PaddingSpec::Explicit(tvec![g.pad_top, g.pad_left], tvec![g.pad_bottom(), g.pad_right()])
}

/// Wire a fused activation: ReLU as `max(x, 0)`; Softmax only as the very last
/// operation, where it is dropped so the graph yields logits.
fn activation(
    model: &mut TypedModel,
    name: &str,
    act: Activation,
    is_last: bool,
    wire: OutletId,
) -> Result<OutletId, ReferenceError> {
    match act {
        Activation::None => Ok(wire),
        Activation::Softmax if is_last => Ok(wire),
        Activation::Softmax => Err(ReferenceError::Unsupported {
            layer: name.to_string(),
            what: "softmax is only supported on the last layer",
        }),
        Activation::Relu => {
            let zero = model.add_const(format!("{name}.zero"), tensor0(0f32)).ctx(|| name.to_string())?;
            Ok(wire_with_rank_broadcast(format!("{name}.relu"), model, max(), &[wire, zero])
                .ctx(|| format!("wiring {name}.relu"))?[0])
        }
        Activation::Relu6 => {
            let relu = activation(model, name, Activation::Relu, is_last, wire)?;
            let six = model.add_const(format!("{name}.six"), tensor0(6f32)).ctx(|| name.to_string())?;
            Ok(wire_with_rank_broadcast(format!("{name}.relu6"), model, min(), &[relu, six])
                .ctx(|| format!("wiring {name}.relu6"))?[0])
        }
    }
}

#[cfg(test)]
mod tests {
    //! TractReference against a naive, loop-based f64 forward written here from
    //! the Keras definitions, so that both the tract graph construction and the
    //! naive code would have to make the same mistake for a test to pass.
    use super::*;
    use ndarray::{Array4, ArrayD, IxDyn};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use shared::spec::Padding;
    use shared::spec::{Conv2D, Sequential};

    /// Random Keras-named tensors for every parameterised layer of `spec`.
    /// BN gets gammas of both signs, non-zero means and variances away from 1,
    /// so that a mistake in the folding cannot hide behind identity statistics.
    fn random_tensors(spec: &ModelSpec, seed: u64) -> HashMap<String, ArrayD<f32>> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut out = HashMap::new();
        let mut put = |name: String, shape: &[usize], lo: f32, hi: f32, rng: &mut ChaCha8Rng| {
            let a = ArrayD::from_shape_fn(IxDyn(shape), |_| rng.random_range(lo..hi));
            out.insert(name, a);
        };
        for (i, layer, input, _) in spec.shapes() {
            let name = spec.layer_name(i).to_string();
            let cin = input.channels() as usize;
            match *layer {
                Layer::Conv2D(c) => {
                    let (kh, kw, f) = (c.kernel.h as usize, c.kernel.w as usize, c.filters as usize);
                    let bound = (1.0 / (kh * kw * cin) as f32).sqrt();
                    put(format!("{name}/kernel"), &[kh, kw, cin, f], -bound, bound, &mut rng);
                    put(format!("{name}/bias"), &[f], -0.2, 0.2, &mut rng);
                }
                Layer::BatchNorm { .. } => {
                    put(format!("{name}/gamma"), &[cin], -1.5, 1.5, &mut rng);
                    put(format!("{name}/beta"), &[cin], -0.5, 0.5, &mut rng);
                    put(format!("{name}/moving_mean"), &[cin], -0.3, 0.3, &mut rng);
                    put(format!("{name}/moving_variance"), &[cin], 0.2, 2.0, &mut rng);
                }
                Layer::Dense { units, .. } => {
                    let u = units as usize;
                    let bound = (1.0 / cin as f32).sqrt();
                    put(format!("{name}/kernel"), &[cin, u], -bound, bound, &mut rng);
                    put(format!("{name}/bias"), &[u], -0.2, 0.2, &mut rng);
                }
                _ => {}
            }
        }
        out
    }

    fn random_input(shape: [usize; 4], seed: u64) -> Array4<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        Array4::from_shape_fn(shape, |_| rng.random_range(-1.0..1.0))
    }

    /// The naive forward: f64 throughout, direct convolution loops, Keras semantics.
    fn naive_forward(spec: &ModelSpec, t: &HashMap<String, ArrayD<f32>>, x: &Array4<f32>) -> Array2<f64> {
        let p = |name: &str, suffix: &str| -> Vec<f64> {
            t[&format!("{name}/{suffix}")].iter().map(|&v| v as f64).collect()
        };
        let batch = x.shape()[0];
        // Activations as [batch][h][w][c] flattened per example, with the current (h, w, c).
        let mut a: Vec<Vec<f64>> =
            (0..batch).map(|b| x.index_axis(ndarray::Axis(0), b).iter().map(|&v| v as f64).collect()).collect();
        let Shape::Image { h, w, c } = spec.input() else { unreachable!() };
        let (mut h, mut w, mut c) = (h as usize, w as usize, c as usize);
        let relu = |v: f64, act: Activation| if act == Activation::Relu { v.max(0.0) } else { v };
        for (i, layer, _, output) in spec.shapes() {
            let name = spec.layer_name(i).to_string();
            match *layer {
                Layer::Conv2D(conv) => {
                    // Square, undilated convs only (the general geometry is held to
                    // tract in tests/tract_reference.rs through shared's geometry).
                    assert!(conv.is_classic(), "the naive forward takes square convs");
                    let (k, s, f) = (conv.kernel.h as usize, conv.stride.h as usize, conv.filters as usize);
                    let (oh, ow, pt, pl) = match conv.padding {
                        Padding::Valid => ((h - k) / s + 1, (w - k) / s + 1, 0, 0),
                        Padding::Same => {
                            let (oh, ow) = (h.div_ceil(s), w.div_ceil(s));
                            let th = ((oh - 1) * s + k).saturating_sub(h);
                            let tw = ((ow - 1) * s + k).saturating_sub(w);
                            (oh, ow, th / 2, tw / 2)
                        }
                        Padding::Explicit(_) => unreachable!("a classic conv"),
                    };
                    let (kern, bias) = (p(&name, "kernel"), p(&name, "bias"));
                    for ex in a.iter_mut() {
                        let mut y = vec![0.0; oh * ow * f];
                        for oy in 0..oh {
                            for ox in 0..ow {
                                for o in 0..f {
                                    let mut acc = bias[o];
                                    for ky in 0..k {
                                        for kx in 0..k {
                                            let iy = (oy * s + ky) as isize - pt as isize;
                                            let ix = (ox * s + kx) as isize - pl as isize;
                                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                                continue;
                                            }
                                            for ci in 0..c {
                                                let xv = ex[(iy as usize * w + ix as usize) * c + ci];
                                                acc += xv * kern[((ky * k + kx) * c + ci) * f + o];
                                            }
                                        }
                                    }
                                    y[(oy * ow + ox) * f + o] = relu(acc, conv.activation);
                                }
                            }
                        }
                        *ex = y;
                    }
                    (h, w, c) = (oh, ow, f);
                }
                Layer::BatchNorm { epsilon, .. } => {
                    let (g, be, m, v) =
                        (p(&name, "gamma"), p(&name, "beta"), p(&name, "moving_mean"), p(&name, "moving_variance"));
                    let ch = output.channels() as usize;
                    for ex in a.iter_mut() {
                        for (j, val) in ex.iter_mut().enumerate() {
                            let q = j % ch;
                            *val = (*val - m[q]) / (v[q] + epsilon as f64).sqrt() * g[q] + be[q];
                        }
                    }
                }
                Layer::MaxPool2D { pool, stride } => {
                    let (pk, s) = (pool as usize, stride as usize);
                    let (oh, ow) = ((h - pk) / s + 1, (w - pk) / s + 1);
                    for ex in a.iter_mut() {
                        let mut y = vec![f64::NEG_INFINITY; oh * ow * c];
                        for oy in 0..oh {
                            for ox in 0..ow {
                                for ch in 0..c {
                                    for ky in 0..pk {
                                        for kx in 0..pk {
                                            let v = ex[((oy * s + ky) * w + ox * s + kx) * c + ch];
                                            let o = &mut y[(oy * ow + ox) * c + ch];
                                            *o = o.max(v);
                                        }
                                    }
                                }
                            }
                        }
                        *ex = y;
                    }
                    (h, w) = (oh, ow);
                }
                // The per-example buffer is already h, w, c row-major: Keras's flatten order.
                Layer::Flatten | Layer::Dropout { .. } => {}
                Layer::AvgPool2D(_)
                | Layer::GlobalAvgPool
                | Layer::Add { .. }
                | Layer::Concat
                | Layer::Activation(_)
                | Layer::Softmax => unreachable!("classic stacks only"),
                Layer::Dense { units, activation } => {
                    let (kern, bias) = (p(&name, "kernel"), p(&name, "bias"));
                    let u = units as usize;
                    for ex in a.iter_mut() {
                        let y = (0..u)
                            .map(|o| {
                                let acc =
                                    bias[o] + ex.iter().enumerate().map(|(j, &xv)| xv * kern[j * u + o]).sum::<f64>();
                                relu(acc, activation)
                            })
                            .collect();
                        *ex = y;
                    }
                }
            }
        }
        let n = a[0].len();
        Array2::from_shape_fn((batch, n), |(b, j)| a[b][j])
    }

    /// max |tract - naive| / max |naive|: one figure per model, insensitive to
    /// individual logits that happen to be near zero.
    fn rel_err(got: &Array2<f32>, want: &Array2<f64>) -> f64 {
        assert_eq!(got.shape(), want.shape());
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-30);
        got.iter().zip(want).map(|(&g, &w)| (g as f64 - w).abs()).fold(0.0, f64::max) / scale
    }

    fn check(spec: &ModelSpec, batch: usize, seed: u64) -> f64 {
        let t = random_tensors(spec, seed);
        let r = TractReference::new(spec, &t, batch).unwrap();
        let x = random_input(r.input_shape(), seed + 1);
        let got = r.run(x.view()).unwrap();
        let want = naive_forward(spec, &t, &x);
        let e = rel_err(&got, &want);
        eprintln!("{:?} batch {batch}: relative max error {e:.3e}", spec.input());
        assert!(e <= 1e-5, "relative error {e:e}");
        assert!(want.iter().any(|v| v.abs() > 1e-3), "degenerate test: all outputs ~0");
        e
    }

    #[test]
    fn valid_strided_conv_matches_naive() {
        let spec = Sequential::new(Shape::image(11, 9, 3))
            .conv2d(Conv2D::new(5, 3).strides(2))
            .conv2d(Conv2D::new(4, 2).relu())
            .flatten()
            .build()
            .unwrap();
        check(&spec, 2, 1);
    }

    #[test]
    fn same_conv_with_asymmetric_padding_matches_naive() {
        // 7x6 input, k=4, s=3: out 3x2, total pads 3 (h) and 1 (w): 1 before / 2 after, 0 / 1.
        let g = ConvGeom::new((7, 6, 2), 3, 4, 3, Padding::Same).unwrap();
        assert_eq!((g.pad_top, g.pad_bottom(), g.pad_left, g.pad_right()), (1, 2, 0, 1));
        let spec = Sequential::new(Shape::image(7, 6, 2))
            .conv2d(Conv2D::new(3, 4).strides(3).same())
            .conv2d(Conv2D::new(4, 3).same().relu())
            .conv2d(Conv2D::new(2, 5).strides(2).same())
            .flatten()
            .build()
            .unwrap();
        check(&spec, 2, 2);
    }

    #[test]
    fn batch_norm_after_relu_with_negative_gammas_matches_naive() {
        let spec = Sequential::new(Shape::image(6, 6, 3))
            .conv2d(Conv2D::new(8, 3).same().relu())
            .batch_norm()
            .flatten()
            .batch_norm()
            .build()
            .unwrap();
        let t = random_tensors(&spec, 3);
        assert!(t["batch_normalization/gamma"].iter().any(|&g| g < 0.0));
        check(&spec, 3, 3);
    }

    #[test]
    fn pool_flatten_dense_stack_matches_naive() {
        let spec = Sequential::new(Shape::image(19, 19, 3))
            .conv2d(Conv2D::new(6, 5).strides(2).relu())
            .batch_norm()
            .max_pool(3, 2)
            .conv2d(Conv2D::new(8, 3).same().relu())
            .batch_norm()
            .max_pool(2, 1)
            .flatten()
            .dense(16, Activation::Relu)
            .dropout(0.5)
            .dense(7, Activation::Softmax)
            .build()
            .unwrap();
        check(&spec, 2, 4);
    }

    #[test]
    fn tiny_alexnet_matches_naive() {
        let widths = shared::spec::AlexNetWidths { filters: [4, 6, 8, 8, 6], hidden: 12 };
        let spec = shared::spec::alexnet_with(widths, 67, 5).unwrap();
        check(&spec, 1, 5);
    }

    #[test]
    fn flatten_is_keras_h_w_c_order() {
        // Identity dense after flatten: output j must be input[h][w][c] in row-major order.
        let spec = Sequential::new(Shape::image(2, 3, 2)).flatten().dense(12, Activation::None).build().unwrap();
        let mut t = HashMap::new();
        t.insert("dense/kernel".to_string(), ndarray::Array2::<f32>::eye(12).into_dyn());
        t.insert("dense/bias".to_string(), ArrayD::zeros(IxDyn(&[12])));
        let r = TractReference::new(&spec, &t, 1).unwrap();
        let x = Array4::from_shape_fn((1, 2, 3, 2), |(_, y, xx, c)| (100 * y + 10 * xx + c) as f32);
        let got = r.run(x.view()).unwrap();
        let want: Vec<f32> = x.iter().copied().collect();
        assert_eq!(got.as_slice().unwrap(), &want[..]);
    }

    #[test]
    fn errors_name_the_tensor() {
        let spec = alexnet_tiny();
        let mut t = random_tensors(&spec, 6);
        t.remove("batch_normalization_2/moving_variance");
        let err = TractReference::new(&spec, &t, 1).unwrap_err();
        assert!(err.to_string().contains("batch_normalization_2/moving_variance"), "{err}");

        let mut t = random_tensors(&spec, 6);
        t.insert("dense_1/bias".into(), ArrayD::zeros(IxDyn(&[3])));
        let err = TractReference::new(&spec, &t, 1).unwrap_err();
        assert!(matches!(&err, ReferenceError::TensorShape { tensor, .. } if tensor == "dense_1/bias"), "{err}");

        let r = TractReference::new(&spec, &random_tensors(&spec, 6), 2).unwrap();
        let err = r.run(Array4::zeros((1, 67, 67, 3)).view()).unwrap_err();
        assert!(matches!(err, ReferenceError::InputShape { .. }), "{err}");
    }

    fn alexnet_tiny() -> ModelSpec {
        shared::spec::alexnet_with(shared::spec::AlexNetWidths { filters: [4, 6, 8, 8, 6], hidden: 12 }, 67, 5).unwrap()
    }
}
