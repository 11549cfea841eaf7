//! The engine on small random models built with `Sequential` and quantized by
//! `shared::convert`: every layer's output checked through the observer (int8:
//! equal to the plain kernel on the same input, and within one quantum of the
//! float layer on the dequantized input; f16: equal to the f16 kernel), the
//! arena plan sufficient and tight, and every error typed.

mod common;

use suite::{random_params, views, Rng};

use proptest::prelude::*;
use shared::convert::{self, OwnedLayer, OwnedModel, OwnedWeights, Ranges};
use shared::engine::{self, EngineError, NoObserver, Observer};
use shared::f16;
use shared::kernels::{f16 as k16, int8 as k8, ConvGeom, PoolGeom};
use shared::model::{F16Weights, Int8Weights, LayerWeights, Precision, TensorQuant};
use shared::quant;
use shared::spec::{Activation, AvgPool2D, Conv2D, Hw, Layer, ModelSpec, Padding, Sequential, Shape};

/// Calibrate on a few random inputs and quantize.
fn int8_model(spec: &ModelSpec, p: &[OwnedLayer], rng: &mut Rng) -> (OwnedModel, Vec<f32>) {
    let v = views(p);
    let n = spec.input().elements() as usize;
    let mut ranges = Ranges::new(spec);
    let mut last = vec![];
    for _ in 0..4 {
        last = rng.vec(n, -1.0, 1.0);
        suite::observe(&mut ranges, spec, &v, &last).unwrap();
    }
    (convert::quantize_int8(spec, &v, &ranges).unwrap(), last)
}

/// Records every layer's output.
#[derive(Default)]
struct Record {
    started: Vec<usize>,
    done: Vec<(usize, Shape, Vec<u8>)>,
}

impl Observer for Record {
    fn layer_start(&mut self, index: usize) {
        self.started.push(index);
    }
    fn layer_done(&mut self, index: usize, shape: Shape, output: &[u8]) {
        self.done.push((index, shape, output.to_vec()));
    }
}

/// A [`Record`] that tells the engine it does not look at each layer's own
/// output, so the engine may fuse a Conv2D and the BatchNormalization after it.
#[derive(Default)]
struct Blind(Record);

impl Observer for Blind {
    fn layer_start(&mut self, index: usize) {
        self.0.layer_start(index);
    }
    fn layer_done(&mut self, index: usize, shape: Shape, output: &[u8]) {
        self.0.layer_done(index, shape, output);
    }
    fn sees_each_output(&self) -> bool {
        false
    }
}

/// Run `m` with a [`Blind`] observer and check it against the seeing run
/// `seen` (output `out`): the same output bytes and the same layer calls,
/// every layer's bytes the same but where a Conv2D ran fused, whose bytes
/// are the BatchNormalization's after it, or where a BatchNormalization ran
/// after the MaxPool2D that follows it (its own output never exists; the
/// pool's bytes are checked like any layer's). Returns how many convs fused and how many
/// BatchNormalizations ran after their pool.
fn check_blind_run(m: &OwnedModel, input: &[u8], out: &[u8], seen: &Record) -> Result<(usize, usize), TestCaseError> {
    let view = m.view();
    let prepared = engine::prepare(&view).unwrap();
    let mut arena = vec![0u8; prepared.plan().arena_bytes];
    let mut blind = Blind::default();
    let got = engine::run(&prepared, input, &mut arena, &mut blind).unwrap().to_vec();
    prop_assert_eq!(&got, out);
    prop_assert_eq!(&blind.0.started, &seen.started);
    prop_assert_eq!(blind.0.done.len(), seen.done.len());
    let layers = m.spec.layers();
    let (mut fused, mut pooled_first) = (0, 0);
    for (i, (b, s)) in blind.0.done.iter().zip(&seen.done).enumerate() {
        prop_assert_eq!((b.0, b.1), (s.0, s.1));
        if b.2 != s.2 {
            let next = seen.done.get(i + 1).map(|n| &n.2);
            let conv_then_bn = matches!(layers[i], Layer::Conv2D(_))
                && matches!(layers.get(i + 1), Some(Layer::BatchNorm { .. }))
                && Some(&b.2) == next;
            let bn_then_pool = matches!(layers[i], Layer::BatchNorm { .. })
                && matches!(layers.get(i + 1), Some(Layer::MaxPool2D { .. }));
            prop_assert!(conv_then_bn || bn_then_pool, "layer {i}: bytes differ without a fusion or a reorder");
            if conv_then_bn {
                fused += 1;
            } else {
                pooled_first += 1;
            }
        }
    }
    Ok((fused, pooled_first))
}

fn i8s(b: &[u8]) -> Vec<i8> {
    b.iter().map(|&x| x as i8).collect()
}

fn halves(b: &[u8]) -> Vec<f16> {
    b.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]])).collect()
}

fn int8_weights(w: &OwnedWeights) -> Int8Weights<'_> {
    match w {
        OwnedWeights::Int8 { weights, weight_scale, bias, multiplier, shift } => {
            Int8Weights { weights, weight_scale, bias, multiplier, shift }
        }
        _ => panic!("not int8"),
    }
}

/// A random model: [`random_classic_spec`], [`random_general_spec`] or [`random_graph_spec`].
fn random_spec(rng: &mut Rng) -> Option<ModelSpec> {
    match rng.int(0, 2) {
        0 => random_general_spec(rng),
        1 => random_graph_spec(rng),
        _ => random_classic_spec(rng),
    }
}

/// A random residual graph: conv -> BN, a block (conv, BN, standalone
/// ReLU/ReLU6, conv) whose output is added to the block input or to a 1x1
/// strided shortcut conv of it (the Add with a random activation), a
/// concatenation with an earlier tensor (a BN whose input is also read
/// later: it cannot run in place), a pool, then Flatten or a global pool
/// and Dense layers.
fn random_graph_spec(rng: &mut Rng) -> Option<ModelSpec> {
    use shared::spec::Inputs;
    let h = rng.int(4, 12) as u32;
    let w = rng.int(4, 12) as u32;
    let input = Shape::image(h, w, rng.int(1, 3) as u32);
    let mut layers: Vec<Layer> = Vec::new();
    let mut inputs: Vec<Inputs> = Vec::new();
    // Push a layer reading `main` (and `other`); returns its output tensor.
    let mut push = |l: Layer, main: usize, other: Option<usize>| {
        layers.push(l);
        inputs.push(Inputs { main: main as u16, other: other.map(|t| t as u16) });
        layers.len()
    };
    let act = |rng: &mut Rng| match rng.int(0, 2) {
        0 => Activation::None,
        1 => Activation::Relu,
        _ => Activation::Relu6,
    };
    let f = rng.int(1, 6) as u32;
    let stem = push(Layer::Conv2D(Conv2D::new(f, 3).same()), 0, None);
    let x = push(Layer::BatchNorm { epsilon: 1e-3, momentum: 0.99 }, stem, None);
    let stride = rng.int(1, 2) as u32;
    let f2 = if stride == 2 || rng.int(0, 1) == 1 { rng.int(1, 6) as u32 } else { f };
    let mut c1 = Conv2D::new(f2, 3).same();
    c1.stride = Hw::square(stride);
    let a = push(Layer::Conv2D(c1), x, None);
    let a = push(Layer::BatchNorm { epsilon: 1e-3, momentum: 0.99 }, a, None);
    let a6 = if rng.int(0, 1) == 1 { Activation::Relu6 } else { Activation::Relu };
    let a = push(Layer::Activation(a6), a, None);
    let b = push(Layer::Conv2D(Conv2D::new(f2, 3).same()), a, None);
    let shortcut = if stride == 1 && f2 == f {
        x
    } else {
        let mut sc = Conv2D::new(f2, 1);
        sc.stride = Hw::square(stride);
        push(Layer::Conv2D(sc), x, None)
    };
    let added = push(Layer::Add { activation: act(rng) }, b, Some(shortcut));
    // A BN on the sum that cannot run in place: the sum is concatenated after it.
    let y = push(Layer::BatchNorm { epsilon: 1e-3, momentum: 0.99 }, added, None);
    let y = if rng.int(0, 1) == 1 { push(Layer::Concat, y, Some(added)) } else { y };
    let y = if rng.int(0, 1) == 1 { push(Layer::MaxPool2D { pool: 2, stride: 1 }, y, None) } else { y };
    // A per-pixel softmax over the channels, sometimes.
    let y = if rng.int(0, 2) == 2 { push(Layer::Softmax, y, None) } else { y };
    let y = if rng.int(0, 1) == 1 { push(Layer::GlobalAvgPool, y, None) } else { push(Layer::Flatten, y, None) };
    let d = push(Layer::Dense { units: rng.int(2, 8) as u32, activation: Activation::Relu }, y, None);
    // Flat concatenation of the hidden layer with itself, sometimes.
    let d = if rng.int(0, 1) == 1 { push(Layer::Concat, d, Some(d)) } else { d };
    push(Layer::Dense { units: rng.int(2, 5) as u32, activation: Activation::Softmax }, d, None);
    ModelSpec::graph(input, &layers, &inputs).ok()
}

/// A random AlexNet-shaped stack (conv/relu -> BN -> pool -> same conv -> BN -> dense).
fn random_classic_spec(rng: &mut Rng) -> Option<ModelSpec> {
    let h = rng.int(5, 14) as u32;
    let w = rng.int(5, 14) as u32;
    let mut s = Sequential::new(Shape::image(h, w, rng.int(1, 3) as u32));
    let mut c1 = Conv2D::new(rng.int(1, 6) as u32, rng.int(1, 4) as u32).strides(rng.int(1, 2) as u32);
    if rng.int(0, 1) == 1 {
        c1 = c1.same();
    }
    if rng.int(0, 3) > 0 {
        c1 = c1.relu();
    }
    s = s.conv2d(c1).batch_norm().max_pool(rng.int(1, 3) as u32, rng.int(1, 2) as u32);
    s = s.conv2d(Conv2D::new(rng.int(1, 7) as u32, 3).same().relu()).batch_norm();
    if rng.int(0, 1) == 1 {
        s = s.max_pool(2, 2);
    }
    s = s
        .flatten()
        .dense(rng.int(1, 12) as u32, Activation::Relu)
        .dropout(0.5)
        .dense(rng.int(2, 6) as u32, Activation::Softmax);
    s.build().ok()
}

/// A random stack of the general layers: a rectangular, strided, dilated and
/// valid/same/explicitly padded conv with ReLU, ReLU6 or none, an average or
/// max pool, a same conv, a global average pool or Flatten, ReLU6 or ReLU Dense.
fn random_general_spec(rng: &mut Rng) -> Option<ModelSpec> {
    let h = rng.int(5, 14) as u32;
    let w = rng.int(5, 14) as u32;
    let mut s = Sequential::new(Shape::image(h, w, rng.int(1, 3) as u32));
    let k = |rng: &mut Rng| rng.int(1, 4) as u32;
    let f1 = rng.int(1, 6) as u32;
    let mut c1 = Conv2D::new(f1, 1).kernel_hw(k(rng), k(rng));
    c1 = c1.strides_hw(rng.int(1, 3) as u32, rng.int(1, 2) as u32);
    c1 = c1.dilation(rng.int(1, 2) as u32, rng.int(1, 2) as u32);
    let p = |rng: &mut Rng| rng.int(0, 2) as u32;
    c1 = match rng.int(0, 2) {
        0 => c1,
        1 => c1.same(),
        _ => c1.pads(p(rng), p(rng), p(rng), p(rng)),
    };
    c1 = match rng.int(0, 2) {
        0 => c1,
        1 => c1.relu6(),
        _ => c1.relu(),
    };
    s = s.conv2d(c1).batch_norm();
    // Depthwise (groups = channels, a multiplier of 1 or 2) or a grouped conv.
    match rng.int(0, 2) {
        0 => {}
        1 => s = s.conv2d(Conv2D::new(f1 * rng.int(1, 2) as u32, 3).groups(f1).same().relu6()),
        _ if f1.is_multiple_of(2) => s = s.conv2d(Conv2D::new(4, 1).kernel_hw(1, 2).groups(2).relu()),
        _ => {}
    }
    if rng.int(0, 1) == 1 {
        let pool = AvgPool2D {
            pool: Hw::new(rng.int(1, 3) as u32, rng.int(1, 3) as u32),
            stride: Hw::new(rng.int(1, 2) as u32, rng.int(1, 2) as u32),
            padding: if rng.int(0, 1) == 1 { Padding::Same } else { Padding::Valid },
        };
        s = s.add(Layer::AvgPool2D(pool));
    } else {
        s = s.max_pool(rng.int(1, 3) as u32, rng.int(1, 2) as u32);
    }
    s = s.conv2d(Conv2D::new(rng.int(1, 7) as u32, 3).same().relu()).batch_norm();
    if rng.int(0, 1) == 1 {
        s = s.add(Layer::GlobalAvgPool);
    } else {
        s = s.flatten();
    }
    let hidden = if rng.int(0, 1) == 1 { Activation::Relu6 } else { Activation::Relu };
    s = s.dense(rng.int(1, 12) as u32, hidden).dropout(0.5).dense(rng.int(2, 6) as u32, Activation::Softmax);
    s.build().ok()
}

/// The window geometry of an average pool layer (the global one: the whole image).
fn avg_geom(layer: &Layer, inp: Shape) -> ConvGeom {
    let Shape::Image { h, w, c } = inp else { panic!("an image input") };
    let dims = (h as usize, w as usize, c as usize);
    match *layer {
        Layer::AvgPool2D(p) => ConvGeom::general(dims, c as usize, p.pool, p.stride, Hw::ONE, p.padding).unwrap(),
        _ => ConvGeom::general(dims, c as usize, Hw::new(h, w), Hw::ONE, Hw::ONE, Padding::Valid).unwrap(),
    }
}

/// Run `m` with a plan-sized arena, recording every layer.
fn run_recorded(m: &OwnedModel, input: &[u8]) -> (Vec<u8>, Record) {
    let view = m.view();
    let prepared = engine::prepare(&view).unwrap();
    let mut arena = vec![0u8; prepared.plan().arena_bytes];
    let mut rec = Record::default();
    let out = engine::run(&prepared, input, &mut arena, &mut rec).unwrap().to_vec();
    (out, rec)
}

fn check_int8_layers(m: &OwnedModel, input: &[u8]) -> Result<(), TestCaseError> {
    let (out, rec) = run_recorded(m, input);
    check_blind_run(m, input, &out, &rec)?;
    let n = m.spec.layers().len();
    prop_assert_eq!(&rec.started, &(0..n).collect::<Vec<_>>());
    prop_assert_eq!(rec.done.len(), n);
    prop_assert_eq!(&out, &rec.done[n - 1].2);
    // Every tensor's bytes and quantization (0: the input).
    let mut tensors = vec![i8s(input)];
    let mut quants = vec![m.input];
    for ((i, layer, inp, outs), (w, out_q)) in m.spec.shapes().zip(&m.layers) {
        let (idx, shape, ref bytes) = rec.done[i];
        prop_assert_eq!((idx, shape), (i, outs));
        let got = i8s(bytes);
        let reads = m.spec.inputs()[i];
        let (prev, in_q) = (tensors[reads.main as usize].clone(), quants[reads.main as usize]);
        let other = reads.other.map(|t| (tensors[t as usize].clone(), quants[t as usize]));
        let xf: Vec<f32> = prev.iter().map(|&v| quant::dequantize(v, in_q)).collect();
        match *layer {
            Layer::Conv2D(c) => {
                let g = ConvGeom::from_spec(&c, inp).unwrap();
                let wt = int8_weights(w);
                let p = k8::Int8Params::for_output(in_q.zero_point, *out_q, c.activation);
                let mut plain = vec![0i8; g.output_len()];
                k8::conv2d(&g, &p, &wt, &prev, &mut plain);
                prop_assert_eq!(&got, &plain, "layer {}", i);
                // Float layer on the dequantized input and weights.
                let per = wt.weights.len() / wt.bias.len();
                let rw: Vec<f32> =
                    wt.weights.iter().enumerate().map(|(j, &v)| v as f32 * wt.weight_scale[j / per]).collect();
                let rb: Vec<f32> = wt
                    .bias
                    .iter()
                    .zip(wt.weight_scale)
                    .map(|(&b, &s)| (b as f64 * in_q.scale as f64 * s as f64) as f32)
                    .collect();
                let y = suite::reference_conv(&g, &rw, &rb, &xf);
                for (j, &v) in y.iter().enumerate() {
                    let v = match c.activation {
                        Activation::Relu => v.max(0.0),
                        Activation::Relu6 => v.clamp(0.0, 6.0),
                        _ => v,
                    };
                    prop_assert!(
                        (quant::quantize(v, *out_q) as i32 - got[j] as i32).abs() <= 1,
                        "layer {} elem {}",
                        i,
                        j
                    );
                }
            }
            Layer::Dense { activation, .. } => {
                let wt = int8_weights(w);
                let p = k8::Int8Params::for_output(in_q.zero_point, *out_q, activation);
                let mut plain = vec![0i8; outs.elements() as usize];
                k8::dense(&p, &wt, &prev, &mut plain);
                prop_assert_eq!(&got, &plain, "layer {}", i);
            }
            Layer::BatchNorm { .. } => {
                let wt = int8_weights(w);
                let c = wt.weights.len();
                for (j, (&x, &g)) in xf.iter().zip(&got).enumerate() {
                    let ch = j % c;
                    let s = wt.weights[ch] as f64 * wt.weight_scale[ch] as f64;
                    let t = wt.bias[ch] as f64 * in_q.scale as f64 * wt.weight_scale[ch] as f64;
                    let want = quant::quantize((s * x as f64 + t) as f32, *out_q);
                    prop_assert!((want as i32 - g as i32).abs() <= 1, "BN layer {} elem {}: {} vs {}", i, j, want, g);
                }
            }
            Layer::MaxPool2D { pool, stride } => {
                let g = PoolGeom::from_spec(pool, stride, inp).unwrap();
                let mut plain = vec![0i8; g.output_len()];
                k8::max_pool(&g, &prev, &mut plain);
                prop_assert_eq!(&got, &plain);
                prop_assert_eq!(*out_q, in_q);
            }
            Layer::AvgPool2D(_) | Layer::GlobalAvgPool => {
                let g = avg_geom(layer, inp);
                let mut plain = vec![0i8; g.output_len()];
                if matches!(layer, Layer::GlobalAvgPool) {
                    // TFLite's MEAN.
                    k8::mean(&k8::MeanParams::new(in_q, *out_q, g.in_h * g.in_w), &prev, &mut plain);
                } else {
                    k8::avg_pool(&g, &prev, &mut plain);
                }
                prop_assert_eq!(&got, &plain);
                prop_assert_eq!(*out_q, in_q);
                // Within one step of the float mean of the dequantized input.
                let y = suite::reference_avg_pool(&g, &xf);
                for (j, &v) in y.iter().enumerate() {
                    prop_assert!((quant::quantize(v, in_q) as i32 - got[j] as i32).abs() <= 1, "avg pool elem {}", j);
                }
            }
            Layer::Flatten | Layer::Dropout { .. } => prop_assert_eq!(&got, &prev),
            Layer::Add { activation } => {
                let (b, b_q) = other.unwrap();
                let p = k8::AddParams::new(in_q, b_q, *out_q, activation);
                let mut plain = vec![0i8; got.len()];
                k8::add(&p, &prev, &b, &mut plain);
                prop_assert_eq!(&got, &plain, "add layer {}", i);
                // Within one step of the real sum, clamped by the activation.
                let (lo, hi) = activation.clamp().unwrap();
                for (j, (&x, &y)) in prev.iter().zip(&b).enumerate() {
                    let real = (quant::dequantize(x, in_q) + quant::dequantize(y, b_q)).clamp(lo, hi);
                    let want = quant::quantize(real, *out_q) as i32;
                    prop_assert!(
                        (want - got[j] as i32).abs() <= 1,
                        "add layer {} elem {}: {} vs {}",
                        i,
                        j,
                        want,
                        got[j]
                    );
                }
            }
            Layer::Concat => {
                let (b, b_q) = other.unwrap();
                let pixels = match inp {
                    Shape::Image { h, w, .. } => (h * w) as usize,
                    Shape::Flat(_) => 1,
                };
                let mut plain = vec![0i8; got.len()];
                k8::concat(
                    pixels,
                    &k8::Requant::new(in_q, *out_q),
                    &k8::Requant::new(b_q, *out_q),
                    &prev,
                    &b,
                    &mut plain,
                );
                prop_assert_eq!(&got, &plain, "concat layer {}", i);
                // Every value is its input requantized: within one step of the real value.
                let (ca, cb) = (prev.len() / pixels, b.len() / pixels);
                for p in 0..pixels {
                    let reals = prev[p * ca..(p + 1) * ca]
                        .iter()
                        .map(|&v| quant::dequantize(v, in_q))
                        .chain(b[p * cb..(p + 1) * cb].iter().map(|&v| quant::dequantize(v, b_q)));
                    for (k, r) in reals.enumerate() {
                        let g = got[p * (ca + cb) + k] as i32;
                        prop_assert!((quant::quantize(r, *out_q) as i32 - g).abs() <= 1, "concat layer {}", i);
                    }
                }
            }
            Layer::Softmax => {
                prop_assert_eq!(*out_q, k8::SOFTMAX_OUTPUT);
                let mut plain = vec![0i8; got.len()];
                k8::softmax(&k8::SoftmaxParams::new(in_q, *out_q).unwrap(), inp.channels() as usize, &prev, &mut plain);
                prop_assert_eq!(&got, &plain, "softmax layer {}", i);
            }
            Layer::Activation(a) => {
                prop_assert_eq!(*out_q, in_q);
                let (lo, hi) = (
                    if a == Activation::None { -128 } else { in_q.zero_point.clamp(-128, 127) },
                    if a == Activation::Relu6 { k8::relu6_max(in_q) } else { 127 },
                );
                let want: Vec<i8> = prev.iter().map(|&v| (v as i32).clamp(lo, hi) as i8).collect();
                prop_assert_eq!(&got, &want, "activation layer {}", i);
            }
        }
        tensors.push(got);
        quants.push(*out_q);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn int8_every_layer_matches_plain_kernels_and_float(seed: u64) {
        let mut rng = Rng::new(seed);
        let Some(spec) = random_spec(&mut rng) else { return Ok(()) };
        let p = random_params(&spec, &mut rng);
        let (m, sample) = int8_model(&spec, &p, &mut rng);
        let mut input = vec![0u8; sample.len()];
        engine::quantize_input(&sample, m.input, &mut input).unwrap();
        check_int8_layers(&m, &input)?;
    }

    #[test]
    fn f16_every_layer_matches_kernels_and_float(seed: u64) {
        let mut rng = Rng::new(seed);
        let Some(spec) = random_spec(&mut rng) else { return Ok(()) };
        let p = random_params(&spec, &mut rng);
        let v = views(&p);
        let m = convert::convert_f16(&spec, &v).unwrap();
        let x = rng.vec(spec.input().elements() as usize, -1.0, 1.0);
        let mut input = vec![0u8; 2 * x.len()];
        engine::encode_f16_input(&x, &mut input).unwrap();
        let (out, rec) = run_recorded(&m, &input);
        let mut tensors = vec![halves(&input)];
        for ((i, layer, inp, outs), (w, _)) in spec.shapes().zip(&m.layers) {
            let got = halves(&rec.done[i].2);
            let reads = spec.inputs()[i];
            let prev = tensors[reads.main as usize].clone();
            let other = reads.other.map(|t| tensors[t as usize].clone());
            let fw = match w {
                OwnedWeights::F16 { weights, bias } => Some(F16Weights { weights, bias }),
                _ => None,
            };
            let mut want = vec![f16::ZERO; outs.elements() as usize];
            match *layer {
                Layer::Conv2D(c) => {
                    k16::conv2d(&ConvGeom::from_spec(&c, inp).unwrap(), c.activation != Activation::None, &fw.unwrap(), &prev, &mut want);
                    if c.activation == Activation::Relu6 {
                        k16::clamp6_in_place(&mut want);
                    }
                }
                Layer::Dense { activation, .. } => {
                    k16::dense(matches!(activation, Activation::Relu | Activation::Relu6), &fw.unwrap(), &prev, &mut want);
                    if activation == Activation::Relu6 {
                        k16::clamp6_in_place(&mut want);
                    }
                }
                Layer::AvgPool2D(_) | Layer::GlobalAvgPool => k16::avg_pool(&avg_geom(layer, inp), &prev, &mut want),
                Layer::Softmax => k16::softmax(inp.channels() as usize, &prev, &mut want),
                Layer::BatchNorm { .. } => k16::batch_norm(&fw.unwrap(), &prev, &mut want),
                Layer::MaxPool2D { pool, stride } => k16::max_pool(&PoolGeom::from_spec(pool, stride, inp).unwrap(), &prev, &mut want),
                Layer::Add { activation } => {
                    let relu = matches!(activation, Activation::Relu | Activation::Relu6);
                    k16::add(relu, activation == Activation::Relu6, &prev, other.as_ref().unwrap(), &mut want);
                    // The f32 sum rounded once.
                    for (j, (x, y)) in prev.iter().zip(other.as_ref().unwrap()).enumerate() {
                        let (lo, hi) = activation.clamp().unwrap();
                        let real = (x.to_f32() + y.to_f32()).clamp(lo, hi);
                        prop_assert_eq!(want[j], f16::from_f32(real), "add elem {}", j);
                    }
                }
                Layer::Concat => {
                    let pixels = match inp { Shape::Image { h, w, .. } => (h * w) as usize, Shape::Flat(_) => 1 };
                    k16::concat(pixels, &prev, &other.unwrap(), &mut want);
                }
                Layer::Activation(a) => {
                    want.copy_from_slice(&prev);
                    k16::activation_in_place(a != Activation::None, a == Activation::Relu6, &mut want);
                    let (lo, hi) = a.clamp().unwrap();
                    for (j, x) in prev.iter().enumerate() {
                        prop_assert_eq!(want[j], f16::from_f32(x.to_f32().clamp(lo, hi)), "activation elem {}", j);
                    }
                }
                _ => want.copy_from_slice(&prev),
            }
            prop_assert_eq!(&got, &want, "layer {}", i);
            tensors.push(got);
        }
        // End to end against the float model: f16 keeps ~3 decimal digits per
        // layer, relative to the values each layer handles. The scale is the
        // largest value anywhere in the float network, not only in the logits:
        // a last Dense layer can cancel activations of 15 down to logits of
        // 0.07 (seed 2740698589644358600, kept in the regression file), and
        // its f16 rounding error is relative to the 15.
        let float = suite::float_forward(&spec, &v, &x).unwrap();
        let logits = float.last().unwrap();
        let mut deq = vec![0.0f32; logits.len()];
        engine::dequantize_output(&m.view(), &out, &mut deq).unwrap();
        let scale = float.iter().flatten().fold(1e-3f32, |a, &b| a.max(b.abs()));
        for (a, b) in deq.iter().zip(logits) {
            prop_assert!((a - b).abs() <= 0.02 * scale, "{} vs {}", a, b);
        }
    }

    #[test]
    fn plan_is_sufficient_and_one_byte_less_fails(seed: u64, f16_model: bool) {
        let mut rng = Rng::new(seed);
        let Some(spec) = random_spec(&mut rng) else { return Ok(()) };
        let p = random_params(&spec, &mut rng);
        let m = if f16_model { convert::convert_f16(&spec, &views(&p)).unwrap() } else { int8_model(&spec, &p, &mut rng).0 };
        let view = m.view();
        let prepared = engine::prepare(&view).unwrap();
        let plan = *prepared.plan();
        prop_assert_eq!(plan, engine::plan(&view));
        let activations = plan.arena_bytes - plan.align_slack - plan.scratch_bytes;
        if spec.is_stack() {
            prop_assert!(activations <= plan.max_layer_io_bytes);
        } else {
            // A graph: no tensor's bytes overlap another's while both are alive.
            check_graph_plan(&spec, &plan, activations)?;
        }
        // The scratch is the most any conv kernel or ADD takes (int8), none for f16.
        let needs = spec.shapes().filter_map(|(_, l, inp, _)| match l {
            shared::spec::Layer::Conv2D(c) => {
                shared::kernels::ConvGeom::from_spec(c, inp).map(|g| shared::kernels::int8::conv2d_scratch_bytes(&g))
            }
            shared::spec::Layer::Add { .. } => Some(shared::kernels::generic::scratch::ADD_INT8_SCRATCH_BYTES),
            _ => None,
        });
        let most = needs.max().unwrap_or(0);
        prop_assert_eq!(plan.scratch_bytes, if f16_model { 0 } else { most });
        // Every computing layer's input and output are disjoint and inside the activations.
        for (lp, layer) in plan.layers().iter().zip(spec.layers()) {
            prop_assert!(lp.output.offset + lp.output.len <= activations);
            if !lp.in_place {
                let disjoint = lp.input.offset + lp.input.len <= lp.output.offset || lp.output.offset + lp.output.len <= lp.input.offset;
                prop_assert!(disjoint, "{:?} {:?}", layer, lp);
            }
        }
        let input: Vec<u8> = (0..plan.input_bytes).map(|_| if f16_model { 0x30 } else { rng.i8() as u8 }).collect();
        // Any start address: compare an aligned and a misaligned arena.
        let mut big = vec![0u8; plan.arena_bytes + 1];
        let a = engine::run(&prepared, &input, &mut big[..plan.arena_bytes], &mut NoObserver).unwrap().to_vec();
        let b = engine::run(&prepared, &input, &mut big[1..], &mut NoObserver).unwrap().to_vec();
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(a.len(), plan.output_bytes);
        // The input written into the arena's input slot runs to the same bytes
        // (what the firmware does with an input it receives over its UART),
        // at an aligned and a misaligned arena.
        for start in [0, 1] {
            let arena = &mut big[start..start + plan.arena_bytes];
            arena.fill(0x55);
            engine::input_slot(&prepared, arena).unwrap().copy_from_slice(&input);
            let c = engine::run_in_place(&prepared, arena, &mut NoObserver).unwrap();
            prop_assert_eq!(&a[..], c);
        }
        let mut small = vec![0u8; plan.arena_bytes - 1];
        prop_assert!(engine::input_slot(&prepared, &mut small).is_err());
        prop_assert!(engine::run_in_place(&prepared, &mut small, &mut NoObserver).is_err());
        let mut small = vec![0u8; plan.arena_bytes - 1];
        let err = engine::run(&prepared, &input, &mut small, &mut NoObserver).unwrap_err();
        prop_assert_eq!(err, EngineError::ArenaTooSmall { needed: plan.arena_bytes, given: plan.arena_bytes - 1 });
    }
}

/// Tensor `t`'s region in a graph plan: the input's, or layer `t - 1`'s output.
fn tensor_region(plan: &engine::Plan, t: usize) -> engine::Region {
    if t == 0 {
        engine::Region { offset: plan.input_offset, len: plan.input_bytes }
    } else {
        plan.layers()[t - 1].output
    }
}

/// No two tensors alive at once share a byte, unless one is the other's
/// in-place successor (identity layers, BN or an activation on a tensor
/// nothing later reads); every tensor lies inside the activations.
fn check_graph_plan(spec: &ModelSpec, plan: &engine::Plan, activations: usize) -> Result<(), TestCaseError> {
    let n = spec.layers().len();
    // Alive from the step that writes it (layer t - 1, step t) to its last reader's step.
    let mut last = vec![0usize; n + 1];
    for (i, r) in spec.inputs().iter().enumerate() {
        for t in [Some(r.main), r.other].into_iter().flatten() {
            last[t as usize] = last[t as usize].max(i + 1);
        }
    }
    last[n] = n;
    // Tensors sharing one buffer (chains of in-place layers) count as one.
    let mut root: Vec<usize> = (0..=n).collect();
    for (i, lp) in plan.layers().iter().enumerate() {
        if lp.in_place {
            prop_assert_eq!(lp.output, tensor_region(plan, spec.inputs()[i].main as usize));
            root[i + 1] = root[spec.inputs()[i].main as usize];
        }
    }
    let mut alive = vec![(usize::MAX, 0usize); n + 1];
    for t in 0..=n {
        let r = root[t];
        alive[r] = (alive[r].0.min(t), alive[r].1.max(last[t]));
        prop_assert!(tensor_region(plan, t).end() <= activations);
    }
    for a in 0..=n {
        for b in 0..a {
            if root[a] != a || root[b] != b {
                continue;
            }
            let ((fa, la), (fb, lb)) = (alive[a], alive[b]);
            if fa <= lb && fb <= la {
                let (ra, rb) = (tensor_region(plan, a), tensor_region(plan, b));
                let disjoint = ra.end() <= rb.offset || rb.end() <= ra.offset || ra.len == 0 || rb.len == 0;
                prop_assert!(disjoint, "tensors {} and {} overlap while both alive: {:?} {:?}", a, b, ra, rb);
            }
        }
    }
    Ok(())
}

/// Make a BatchNormalization's gammas at least 0.2 from zero: negative for
/// the channels `negative` picks, positive for the others.
fn set_gammas(bn: &mut OwnedLayer, negative: impl Fn(usize) -> bool) {
    if let OwnedLayer::BatchNorm { gamma, .. } = bn {
        for (c, v) in gamma.iter_mut().enumerate() {
            *v = if negative(c) { -v.abs() - 0.2 } else { v.abs() + 0.2 };
        }
    }
}

/// conv -> relu -> BN (negative gammas) -> maxpool -> same conv, end to end
/// against the float model: BN is kept after the ReLU, so a negative gamma
/// makes the pool pick the BN output's max (the conv output's min).
#[test]
fn bn_after_relu_with_negative_gammas_follows_the_float_model() {
    let spec = Sequential::new(Shape::image(12, 12, 3))
        .conv2d(Conv2D::new(6, 3).relu())
        .batch_norm()
        .max_pool(3, 2)
        .conv2d(Conv2D::new(4, 3).same())
        .build()
        .unwrap();
    let mut worst = 0.0f32;
    for seed in 0..20 {
        let mut rng = Rng::new(seed);
        let mut p = random_params(&spec, &mut rng);
        set_gammas(&mut p[1], |c| c % 2 == 0);
        let (m, x) = int8_model(&spec, &p, &mut rng);
        let mut input = vec![0u8; x.len()];
        engine::quantize_input(&x, m.input, &mut input).unwrap();
        let (out, _) = run_recorded(&m, &input);
        let mut deq = vec![0.0; out.len()];
        engine::dequantize_output(&m.view(), &out, &mut deq).unwrap();
        let float = suite::float_forward(&spec, &views(&p), &x).unwrap();
        let q = m.view().output_quant();
        let range = float.last().unwrap().iter().fold(0.0f32, |a, &b| a.max(b.abs()));
        for (a, b) in deq.iter().zip(float.last().unwrap()) {
            // Four layers of int8 rounding: a few output quanta.
            worst = worst.max((a - b).abs() / q.scale);
            assert!((a - b).abs() <= 6.0 * q.scale, "seed {seed}: {a} vs {b} (scale {}, range {range})", q.scale);
        }
    }
    assert!(worst > 0.0);
}

/// conv -> ReLU (a layer of its own, so no conv fuses the BN) -> BN -> 3x3
/// stride-2 max pool: the BN runs after the pool on its output (a quarter
/// of the values) and gives the same pool and output bytes, with every
/// gamma positive and with some negative (those channels' BN reverses the
/// order: the pool takes their min).
#[test]
fn batch_norm_runs_after_the_max_pool_with_the_same_bytes() {
    let spec = Sequential::new(Shape::image(20, 20, 3))
        .conv2d(Conv2D::new(8, 3).same())
        .add(Layer::Activation(Activation::Relu))
        .batch_norm()
        .max_pool(3, 2)
        .flatten()
        .dense(5, Activation::Softmax)
        .build()
        .unwrap();
    for seed in 0..12u64 {
        let negative = !seed.is_multiple_of(2);
        let mut rng = Rng::new(100 + seed);
        let mut p = random_params(&spec, &mut rng);
        set_gammas(&mut p[2], |c| negative && (c + seed as usize).is_multiple_of(3));
        let (m, x) = int8_model(&spec, &p, &mut rng);
        let mut input = vec![0u8; x.len()];
        engine::quantize_input(&x, m.input, &mut input).unwrap();
        let (out, rec) = run_recorded(&m, &input);
        let (fused, pooled_first) = check_blind_run(&m, &input, &out, &rec).unwrap();
        assert_eq!(fused, 0, "seed {seed}: nothing to fuse");
        assert_eq!(pooled_first, 1, "seed {seed}: negative gammas {negative}");
    }
}

fn tiny() -> (ModelSpec, Vec<OwnedLayer>) {
    let spec = Sequential::new(Shape::image(6, 6, 2))
        .conv2d(Conv2D::new(3, 3).relu())
        .batch_norm()
        .max_pool(2, 2)
        .flatten()
        .dense(3, Activation::Softmax)
        .build()
        .unwrap();
    let mut rng = Rng::new(7);
    let p = random_params(&spec, &mut rng);
    (spec, p)
}

#[test]
fn errors_are_typed_and_never_panic() {
    let (spec, p) = tiny();
    let mut rng = Rng::new(1);
    let (m, _) = int8_model(&spec, &p, &mut rng);
    let view = m.view();
    let prepared = engine::prepare(&view).unwrap();
    let plan = prepared.plan();
    let mut arena = vec![0u8; plan.arena_bytes];
    let input = vec![0u8; plan.input_bytes];
    let mut errors = vec![];

    let e = engine::run(&prepared, &input[1..], &mut arena, &mut NoObserver).unwrap_err();
    assert_eq!(e, EngineError::InputLength { expected: plan.input_bytes, got: plan.input_bytes - 1 });
    errors.push(e);

    let mut v = m.view();
    v.layers[0].weights = LayerWeights::None;
    let e = engine::prepare(&v).unwrap_err();
    assert_eq!(e, EngineError::MissingWeights { layer: 0 });
    errors.push(e);

    let h = [f16::ONE; 3];
    let mut v = m.view();
    v.layers[1].weights = LayerWeights::F16(F16Weights { weights: &h, bias: &h });
    let e = engine::prepare(&v).unwrap_err();
    assert_eq!(e, EngineError::PrecisionMismatch { layer: 1, model: Precision::Int8 });
    errors.push(e);

    let mut v = m.view();
    v.layers[2].weights = v.layers[0].weights;
    assert_eq!(engine::validate(&v), Err(EngineError::UnexpectedWeights { layer: 2 }));
    errors.push(EngineError::UnexpectedWeights { layer: 2 });

    let mut v = m.view();
    v.layers[2].output = TensorQuant { scale: 9.0, zero_point: 0 };
    assert_eq!(engine::validate(&v), Err(EngineError::QuantMismatch { layer: 2 }));
    errors.push(EngineError::QuantMismatch { layer: 2 });

    let mut v = m.view();
    v.input.zero_point = 300;
    let e = engine::validate(&v).unwrap_err();
    assert_eq!(e, EngineError::BadZeroPoint { layer: None, zero_point: 300 });
    errors.push(e);

    let bad_shift = [40, 0, 0];
    let mut v = m.view();
    if let LayerWeights::Int8(w) = &mut v.layers[0].weights {
        w.shift = &bad_shift;
    }
    let e = engine::validate(&v).unwrap_err();
    assert_eq!(e, EngineError::BadShift { layer: 0, channel: 0, shift: 40 });
    errors.push(e);

    let mut v = m.view();
    if let LayerWeights::Int8(w) = &mut v.layers[4].weights {
        w.weights = &w.weights[1..];
    }
    let e = engine::validate(&v).unwrap_err();
    assert!(matches!(e, EngineError::WeightLength { layer: 4, what: "weights", .. }), "{e:?}");
    errors.push(e);

    errors.push(EngineError::ArenaTooSmall { needed: 10, given: 9 });
    errors.push(EngineError::TooLarge);
    for e in errors {
        let s = e.to_string();
        assert!(!s.is_empty() && s.chars().next().unwrap().is_lowercase(), "{s}");
        let _: &dyn std::error::Error = &e;
    }
}

#[test]
fn helpers_round_trip() {
    let q = TensorQuant { scale: 0.1, zero_point: 5 };
    let mut b = [0u8; 3];
    engine::quantize_input(&[0.0, 1.0, -20.0], q, &mut b).unwrap();
    assert_eq!(b.map(|x| x as i8), [5, 15, -128]);
    assert!(engine::quantize_input(&[0.0], q, &mut b).is_err());
    let mut out = [0.0f32; 3];
    engine::dequantize_tensor(Precision::Int8, q, &b, &mut out).unwrap();
    assert_eq!(out, [0.0, 1.0, -13.3]);
    let mut h = [0u8; 4];
    engine::encode_f16_input(&[1.0, -2.5], &mut h).unwrap();
    assert_eq!(h, [0x00, 0x3c, 0x00, 0xc1]);
    assert_eq!(engine::argmax(Precision::F16, &h), Some(0));
    assert_eq!(engine::argmax(Precision::Int8, &[0x80, 0x7f, 3]), Some(1));
    // The engine's argmax is the one every host command uses: an f16 NaN in
    // the logits wins, as in np.argmax (regression: eval and compare differed).
    let nan = f16::NAN.to_le_bytes();
    let logits = [0x00, 0x3c, nan[0], nan[1], 0x00, 0x40];
    assert_eq!(engine::argmax(Precision::F16, &logits), Some(1));
    assert_eq!(engine::argmax(Precision::F16, &logits), shared::numeric::argmax([1.0, f32::NAN, 2.0]));
}

/// The scaled preset end to end: plans, runs, and the arena is the two-ended bound.
#[test]
fn alexnet_micro_runs_int8_and_f16() {
    let spec = shared::spec::alexnet_micro(99, 10).unwrap();
    let mut rng = Rng::new(3);
    let p = random_params(&spec, &mut rng);
    let (m, x) = int8_model(&spec, &p, &mut rng);
    let view = m.view();
    let plan = engine::plan(&view);
    // 99x99x3 input + 23x23x24 conv1 output is the peak; behind it the DSP
    // conv's widened patches for the largest filter (3x3x96 = 864 taps: 108
    // pairs of quads of 6 pixels, 4 words each) and 3 bytes to align them.
    assert_eq!(plan.scratch_bytes, 108 * 6 * 4 * 4 + 3);
    assert_eq!(plan.arena_bytes, 99 * 99 * 3 + 23 * 23 * 24 + plan.scratch_bytes);
    let mut input = vec![0u8; x.len()];
    engine::quantize_input(&x, m.input, &mut input).unwrap();
    let mut arena = vec![0u8; plan.arena_bytes];
    let mut rec = Record::default();
    let out = engine::run(&engine::prepare(&view).unwrap(), &input, &mut arena, &mut rec).unwrap().to_vec();
    assert_eq!(out.len(), 10);
    assert_eq!(rec.done.len(), spec.layers().len());
    // Unobserved, the Conv2D + BatchNormalization pairs run as one where the
    // CPU has the fusing kernel (x86 with AVX-512 VNNI), with the same output
    // bytes: conv 2 to 5 (11x11 and 5x5 outputs); conv 1's 23x23 output keeps
    // its separate, tabled BatchNormalization.
    let (fused, _) = check_blind_run(&m, &input, &out, &rec).unwrap();
    #[cfg(x86_simd)]
    if shared::kernels::x86::has_vnni() {
        assert_eq!(fused, 4);
    }
    let _ = fused;
    let f = convert::convert_f16(&spec, &views(&p)).unwrap();
    let fplan = engine::plan(&f.view());
    assert_eq!(fplan.scratch_bytes, 0);
    assert_eq!(fplan.arena_bytes, 2 * (plan.arena_bytes - plan.scratch_bytes) + 1);
}

/// Every layer's bytes of 40 random int8 and f16 models, one digest per
/// precision. The digests were recorded with the engine before `prepare`
/// existed (commit 605f1f8): a prepared model runs to the same bytes. (The
/// digests also depend on this file's fixtures: if `suite::Rng` or the random
/// models change, re-record them with the engine of that commit.)
fn layer_digest(f16_model: bool) -> u64 {
    let mut all = Vec::new();
    for seed in 0..40u64 {
        let mut rng = Rng::new(1000 + seed);
        let Some(spec) = random_classic_spec(&mut rng) else { continue };
        let p = random_params(&spec, &mut rng);
        let (m, x) = int8_model(&spec, &p, &mut rng);
        let m = if f16_model { convert::convert_f16(&spec, &views(&p)).unwrap() } else { m };
        let mut input = vec![0u8; x.len() * m.precision.activation_bytes()];
        if f16_model {
            engine::encode_f16_input(&x, &mut input).unwrap();
        } else {
            engine::quantize_input(&x, m.input, &mut input).unwrap();
        }
        let (out, rec) = run_recorded(&m, &input);
        all.extend_from_slice(&seed.to_le_bytes());
        for (_, _, bytes) in &rec.done {
            all.extend_from_slice(&shared::protocol::fnv1a64(bytes).to_le_bytes());
        }
        all.extend_from_slice(&out);
    }
    shared::protocol::fnv1a64(&all)
}

#[test]
fn prepared_runs_give_the_bytes_of_before() {
    assert_eq!(layer_digest(false), 0xf005_1835_09a2_f071);
    assert_eq!(layer_digest(true), 0x7bdb_1bb1_45bb_a0a9);
}

/// `prepare` refuses every model `validate` refuses, with the same error
/// (so no unchecked model reaches `run`), and a prepared model runs many
/// inputs to the bytes a fresh `prepare` gives each.
#[test]
fn a_model_that_fails_validation_cannot_be_prepared() {
    let (spec, p) = tiny();
    let mut rng = Rng::new(7);
    let (m, _) = int8_model(&spec, &p, &mut rng);
    let bad_shift = [40, 0, 0];
    let h = [f16::ONE; 3];
    for i in 0..6 {
        let mut v = m.view();
        match i {
            0 => v.layers[0].weights = LayerWeights::None,
            1 => v.layers[1].weights = LayerWeights::F16(F16Weights { weights: &h, bias: &h }),
            2 => v.layers[2].weights = v.layers[0].weights,
            3 => v.layers[2].output = TensorQuant { scale: 9.0, zero_point: 0 },
            4 => v.input.zero_point = 300,
            _ => {
                if let LayerWeights::Int8(w) = &mut v.layers[0].weights {
                    w.shift = &bad_shift;
                }
            }
        }
        let want = engine::validate(&v).expect_err("the corruption is caught");
        assert_eq!(engine::prepare(&v).map(|_| ()), Err(want), "corruption {i}");
    }

    let view = m.view();
    let prepared = engine::prepare(&view).unwrap();
    let mut arena = vec![0u8; prepared.plan().arena_bytes];
    for _ in 0..5 {
        let input: Vec<u8> = (0..prepared.plan().input_bytes).map(|_| rng.i8() as u8).collect();
        let again = engine::run(&prepared, &input, &mut arena, &mut NoObserver).unwrap().to_vec();
        assert_eq!(again, run_recorded(&m, &input).0);
    }
}

/// The graph generator makes graphs (not stacks) that validate, so the
/// property tests above do exercise Add, Concatenate and the graph planner.
#[test]
fn random_graphs_are_graphs_and_mostly_valid() {
    let mut rng = Rng::new(7);
    let specs: Vec<ModelSpec> = (0..200).filter_map(|_| random_graph_spec(&mut rng)).collect();
    assert!(specs.len() >= 150, "{} of 200 valid", specs.len());
    assert!(specs.iter().all(|s| !s.is_stack()));
    let concats = specs.iter().filter(|s| s.layers().iter().any(|l| matches!(l, Layer::Concat))).count();
    assert!(concats >= 50, "{concats}");
}
