//! Random float parameters for a layer stack, and the models made of them.

use shared::convert::{self, FloatLayer, OwnedLayer, OwnedModel, Ranges};
use shared::spec::{Layer, ModelSpec};

use crate::Rng;

/// Random parameters for `spec`: He-like uniform weights, small biases, and
/// BatchNormalization with gammas of both signs (so a quantized model meets
/// the negative-scale case), moving means near 0 and variances in [0.1, 2).
pub fn random_params(spec: &ModelSpec, rng: &mut Rng) -> Vec<OwnedLayer> {
    spec.shapes()
        .map(|(_, layer, inp, out)| match *layer {
            Layer::Conv2D(c) => {
                let fan_in = (c.kernel.h * c.kernel.w * (inp.channels() / c.groups)) as usize;
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

/// The borrowed views of owned parameters, as the converters take them.
pub fn views(params: &[OwnedLayer]) -> Vec<FloatLayer<'_>> {
    params.iter().map(OwnedLayer::view).collect()
}

/// One set of [`random_params`] for a stack, as the engine runs it.
pub struct RandomModels {
    /// Quantized to int8, calibrated on [`RandomModels::images`].
    pub int8: OwnedModel,
    /// Converted to f16.
    pub f16: OwnedModel,
    /// Four random inputs in [-1, 1).
    pub images: Vec<Vec<f32>>,
}

/// [`random_params`] for `spec` from `seed`, and the models of them.
pub fn random_models(spec: &ModelSpec, seed: u64) -> RandomModels {
    let mut rng = Rng::new(seed);
    let params = random_params(spec, &mut rng);
    let views = views(&params);
    let mut ranges = Ranges::new(spec);
    let images: Vec<Vec<f32>> = (0..4).map(|_| rng.vec(spec.input().elements() as usize, -1.0, 1.0)).collect();
    for image in &images {
        crate::observe(&mut ranges, spec, &views, image).expect("calibrating random models");
    }
    RandomModels {
        int8: convert::quantize_int8(spec, &views, &ranges).expect("quantizing random models"),
        f16: convert::convert_f16(spec, &views).expect("converting random models"),
        images,
    }
}
