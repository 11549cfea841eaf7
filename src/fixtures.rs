//! Random float parameters for a layer stack.

use shared::convert::{FloatLayer, OwnedLayer};
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
