//! Random quantized models with Vec-backed weights, for the model-file tests.
//! Deliberately independent of the host's quantizer: only the file format is under test.
#![allow(dead_code)]

use shared::f16;
use shared::format::{self, offsets, AlignedBytes};
use shared::model::{F16Weights, Int8Weights, LayerData, LayerWeights, Precision, QuantModel, TensorQuant};
use shared::spec::{
    Activation, AvgPool2D, Conv2D, Hw, Inputs, Layer, ModelSpec, Padding, Sequential, Shape, MAX_LAYERS,
};
pub use suite::Rng;

/// One layer's owned parameters.
#[derive(Clone, Debug)]
pub enum OwnedWeights {
    None,
    Int8 { w: Vec<i8>, ws: Vec<f32>, b: Vec<i32>, m: Vec<i32>, s: Vec<i32> },
    F16 { w: Vec<f16>, b: Vec<f16> },
}

/// A quantized model that owns its buffers; [`OwnedModel::view`] borrows it as a `QuantModel`.
#[derive(Clone, Debug)]
pub struct OwnedModel {
    pub spec: ModelSpec,
    pub precision: Precision,
    pub input: TensorQuant,
    pub outputs: Vec<TensorQuant>,
    pub weights: Vec<OwnedWeights>,
    pub labels: String,
}

impl OwnedModel {
    pub fn view(&self) -> QuantModel<'_> {
        // Unused entries are what `parse` fills them with, so `==` compares whole models.
        let mut layers = [LayerData::plain(TensorQuant::IDENTITY); MAX_LAYERS];
        for (i, (w, q)) in self.weights.iter().zip(&self.outputs).enumerate() {
            let weights = match w {
                OwnedWeights::None => LayerWeights::None,
                OwnedWeights::Int8 { w, ws, b, m, s } => {
                    LayerWeights::Int8(Int8Weights { weights: w, weight_scale: ws, bias: b, multiplier: m, shift: s })
                }
                OwnedWeights::F16 { w, b } => LayerWeights::F16(F16Weights { weights: w, bias: b }),
            };
            layers[i] = LayerData { weights, output: *q };
        }
        QuantModel {
            spec: self.spec,
            precision: self.precision,
            input: self.input,
            layers,
            labels: &self.labels,
            preprocess: None,
        }
    }
}

fn random_quant(rng: &mut Rng, precision: Precision) -> TensorQuant {
    match precision {
        Precision::F16 => TensorQuant::IDENTITY,
        Precision::Int8 => TensorQuant { scale: 1e-4 + rng.unit() * 0.5, zero_point: rng.range(0, 255) as i32 - 128 },
    }
}

/// (weights, channels) a layer needs, or None.
pub fn counts(layer: &Layer, input: Shape) -> Option<(usize, usize)> {
    let cin = input.channels() as usize;
    match *layer {
        Layer::Conv2D(c) => {
            let k = c.kernel.h as usize * c.kernel.w as usize;
            Some((c.filters as usize * k * (cin / c.groups as usize), c.filters as usize))
        }
        Layer::Dense { units, .. } => Some((units as usize * cin, units as usize)),
        Layer::BatchNorm { .. } => Some((cin, cin)),
        _ => None,
    }
}

/// A model for `spec` with random weights and quantization; labels when asked.
pub fn model_for(spec: ModelSpec, precision: Precision, rng: &mut Rng, labels: bool) -> OwnedModel {
    let input = random_quant(rng, precision);
    let mut outputs = Vec::new();
    let mut weights = Vec::new();
    for (_, layer, shape_in, _) in spec.shapes() {
        outputs.push(random_quant(rng, precision));
        let w = match (counts(layer, shape_in), precision) {
            (None, _) => OwnedWeights::None,
            (Some((n, c)), Precision::Int8) => OwnedWeights::Int8 {
                w: (0..n).map(|_| (rng.range(0, 254) as i32 - 127) as i8).collect(),
                ws: (0..c).map(|_| 1e-5 + rng.unit() * 0.1).collect(),
                b: (0..c).map(|_| rng.next_u64() as i32).collect(),
                m: (0..c)
                    .map(|_| if rng.chance(16) { 0 } else { (1 << 30) + rng.range(0, (1 << 30) - 1) as i32 })
                    .collect(),
                s: (0..c).map(|_| rng.range(0, 61) as i32 - 31).collect(),
            },
            (Some((n, c)), Precision::F16) => OwnedWeights::F16 {
                w: (0..n).map(|_| f16::from_f32(rng.unit() * 4.0 - 2.0)).collect(),
                b: (0..c).map(|_| f16::from_f32(rng.unit() - 0.5)).collect(),
            },
        };
        weights.push(w);
    }
    let classes = spec.output().elements();
    let labels = if labels {
        (0..classes)
            .map(|i| if i % 3 == 1 { format!("clé {i}") } else { format!("class_{i}") })
            .collect::<Vec<_>>()
            .join("\n")
    } else {
        String::new()
    };
    OwnedModel { spec, precision, input, outputs, weights, labels }
}

/// A random valid small stack: images through conv/BN/pool/dropout, then
/// optionally flat through dense/BN/dropout, sometimes a softmax head.
pub fn random_spec(rng: &mut Rng) -> ModelSpec {
    loop {
        let input = if rng.chance(5) {
            Shape::Flat(rng.range(1, 40))
        } else {
            Shape::image(rng.range(1, 12), rng.range(1, 12), rng.range(1, 4))
        };
        let target = rng.range(1, 9) as usize;
        let mut layers: Vec<Layer> = Vec::new();
        let mut inputs: Vec<Inputs> = Vec::new();
        let mut tensors = vec![input];
        let mut shape = input;
        let mut attempts = 0;
        while layers.len() < target && attempts < 50 {
            attempts += 1;
            // The graph layers: a second input, any earlier tensor that fits.
            let mut other = None;
            let l = match (shape, rng.range(0, 10)) {
                (_, 7) => match rng.range(0, 3) {
                    3 => Layer::Softmax,
                    k => Layer::Activation([Activation::None, Activation::Relu, Activation::Relu6][k as usize]),
                },
                (_, 8) => {
                    let fits: Vec<usize> = (0..tensors.len()).filter(|&t| tensors[t] == shape).collect();
                    other = Some(fits[rng.range(0, fits.len() as u32 - 1) as usize] as u16);
                    Layer::Add {
                        activation: [Activation::None, Activation::Relu, Activation::Relu6][rng.range(0, 2) as usize],
                    }
                }
                (_, 9) => {
                    let t = rng.range(0, tensors.len() as u32 - 1) as usize;
                    other = Some(t as u16);
                    Layer::Concat
                }
                (Shape::Image { .. }, 0) => {
                    let mut c = Conv2D::new(rng.range(1, 6), rng.range(1, 4)).strides(rng.range(1, 3));
                    if rng.chance(2) {
                        c = c.same();
                    }
                    if rng.chance(2) {
                        c = c.relu();
                    }
                    Layer::Conv2D(c)
                }
                (Shape::Image { .. }, 1) => Layer::MaxPool2D { pool: rng.range(1, 3), stride: rng.range(1, 3) },
                (Shape::Image { .. }, 2) | (Shape::Flat(_), 0) => Layer::Flatten,
                (Shape::Flat(n), 1 | 2) if n <= 400 => Layer::Dense {
                    units: rng.range(1, 12),
                    activation: if rng.chance(2) { Activation::Relu } else { Activation::None },
                },
                (_, 3) => Layer::BatchNorm {
                    epsilon: [1e-3, 1e-5, 0.5][rng.range(0, 2) as usize],
                    momentum: [0.99, 0.9, 0.0][rng.range(0, 2) as usize],
                },
                (_, 4) => Layer::Dropout { rate: if rng.chance(2) { 0.5 } else { rng.unit() * 0.99 } },
                // The version 3 layers: general convs, average pools, ReLU6.
                (Shape::Image { .. }, 5) => {
                    let mut c = Conv2D::new(rng.range(1, 6), 1)
                        .kernel_hw(rng.range(1, 4), rng.range(1, 4))
                        .strides_hw(rng.range(1, 3), rng.range(1, 3))
                        .dilation(rng.range(1, 2), rng.range(1, 2));
                    c = match rng.range(0, 2) {
                        0 => c,
                        1 => c.same(),
                        _ => c.pads(rng.range(0, 2), rng.range(0, 2), rng.range(0, 2), rng.range(0, 2)),
                    };
                    if rng.chance(2) {
                        c = c.relu6();
                    }
                    // Depthwise now and then: one group per input channel.
                    if let (Shape::Image { c: ch, .. }, true) = (shape, rng.chance(3)) {
                        c = Conv2D { filters: ch * rng.range(1, 2), groups: ch, ..c };
                    }
                    Layer::Conv2D(c)
                }
                (Shape::Image { .. }, 6) if rng.chance(2) => Layer::GlobalAvgPool,
                (Shape::Image { .. }, 6) => Layer::AvgPool2D(AvgPool2D {
                    pool: Hw::new(rng.range(1, 3), rng.range(1, 3)),
                    stride: Hw::new(rng.range(1, 3), rng.range(1, 3)),
                    padding: match rng.range(0, 2) {
                        0 => Padding::Valid,
                        1 => Padding::Same,
                        _ => Padding::explicit(rng.range(0, 1), rng.range(0, 1), rng.range(0, 1), rng.range(0, 1)),
                    },
                }),
                (Shape::Flat(n), 5) if n <= 400 => {
                    Layer::Dense { units: rng.range(1, 12), activation: Activation::Relu6 }
                }
                _ => continue,
            };
            let i = layers.len();
            let out = match other {
                Some(t) => l.output_shape2(i, shape, tensors[t as usize]),
                None => l.output_shape(i, shape),
            };
            if let Ok(out) = out {
                layers.push(l);
                inputs.push(Inputs { main: i as u16, other });
                tensors.push(out);
                shape = out;
            }
        }
        if rng.chance(2) {
            if matches!(shape, Shape::Image { .. }) {
                inputs.push(Inputs::stack(layers.len()));
                layers.push(Layer::Flatten);
            }
            inputs.push(Inputs::stack(layers.len()));
            layers.push(Layer::Dense { units: rng.range(2, 6), activation: Activation::Softmax });
        }
        // Now and then a layer reads an earlier tensor than the previous one.
        if rng.chance(4) && layers.len() > 1 {
            let i = rng.range(1, layers.len() as u32 - 1) as usize;
            inputs[i].main = rng.range(0, i as u32) as u16;
        }
        if let Ok(spec) = ModelSpec::graph(input, &layers, &inputs) {
            return spec;
        }
    }
}

/// A random model of `precision` (labels half the time).
pub fn random_model(seed: u64, precision: Precision) -> OwnedModel {
    let mut rng = Rng::new(seed);
    let spec = random_spec(&mut rng);
    let labels = rng.chance(2);
    model_for(spec, precision, &mut rng, labels)
}

/// The fixed stack the unit tests patch: layer 3 is a Conv2D with 6*3*3*4 = 216 weights.
pub fn fixed_spec() -> ModelSpec {
    Sequential::new(Shape::image(8, 8, 3))
        .conv2d(Conv2D::new(4, 3).same().relu()) // 0: 8x8x4
        .batch_norm() // 1
        .max_pool(2, 2) // 2: 4x4x4
        .conv2d(Conv2D::new(6, 3).relu()) // 3: 2x2x6
        .flatten() // 4: 24
        .dropout(0.5) // 5
        .dense(5, Activation::Softmax) // 6: 5
        .build()
        .unwrap()
}

pub fn fixed_model(precision: Precision) -> OwnedModel {
    model_for(fixed_spec(), precision, &mut Rng::new(7), true)
}

/// Written bytes of `m`, in an aligned buffer.
pub fn file_of(m: &OwnedModel) -> AlignedBytes {
    AlignedBytes::copy_from(&format::write(&m.view()).expect("valid model writes"))
}

/// Recompute the CRC after a patch, so that validation past the CRC is exercised.
pub fn reseal(bytes: &mut [u8]) {
    if bytes.len() >= offsets::CRC + 4 {
        let crc = format::file_crc(bytes);
        bytes[offsets::CRC..offsets::CRC + 4].copy_from_slice(&crc.to_le_bytes());
    }
}

pub fn put_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

pub fn get_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

/// Read every element of every slice (what a user of the model would do).
pub fn touch(m: &QuantModel<'_>) -> u64 {
    let mut acc = m.labels.len() as u64 + m.spec.params().0;
    for d in m.layer_data() {
        acc = acc.wrapping_add(d.output.scale.to_bits() as u64);
        match d.weights {
            LayerWeights::None => {}
            LayerWeights::Int8(w) => {
                acc = w.weights.iter().fold(acc, |a, &x| a.wrapping_add(x as u64));
                acc = w.weight_scale.iter().fold(acc, |a, &x| a.wrapping_add(x.to_bits() as u64));
                for s in [w.bias, w.multiplier, w.shift] {
                    acc = s.iter().fold(acc, |a, &x| a.wrapping_add(x as u64));
                }
            }
            LayerWeights::F16(w) => {
                for s in [w.weights, w.bias] {
                    acc = s.iter().fold(acc, |a, &x| a.wrapping_add(x.to_bits() as u64));
                }
            }
        }
    }
    acc
}
