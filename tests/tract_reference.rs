//! The host's own float forward (`host::nn::Network`, Eval mode) against the
//! independent tract-core reference (`host::reference::TractReference`), on the
//! two shipped presets and a residual operator graph, with non-trivial weights.
//!
//! Metric: `max_i |host_i - tract_i| / max_i |tract_i|` over all logits of the
//! batch, i.e. the worst absolute error measured in units of the largest logit.
//! Relative error per logit would blow up on logits near zero, which float
//! summation order alone can move by far more than 1e-4 of themselves; scaling
//! by the largest logit keeps the bound meaningful for every logit.
//!
//! Both sides are f32 with different summation orders (im2col + GEMM vs tract's
//! kernels), so agreement is a few 1e-6 in practice; the 1e-4 bound leaves room
//! for that while catching any semantic slip (a padding offset, flatten order,
//! BN placement or sign), which shows up as errors of order 1e-1 or more.

use std::collections::HashMap;

use host::nn::{Mode, Network};
use host::reference::ndarray::{Array4, ArrayD};
use host::reference::TractReference;
use shared::spec::{alexnet, alexnet_micro, Activation, Conv2D, Inputs, Layer, ModelSpec, Shape};
use suite::Rng;

const TOLERANCE: f64 = 1e-4;

/// Keras's initial state has zero biases, gamma 1, beta 0, mean 0, variance 1,
/// under which a wrong BN formula or an ignored bias would still agree. Replace
/// them with random values: gammas of both signs, means off zero, variances
/// away from 1, non-zero biases.
fn perturbed_tensors(net: &Network, seed: u64) -> HashMap<String, ArrayD<f32>> {
    let mut rng = Rng::new(seed);
    net.tensors()
        .into_iter()
        .map(|(name, mut t)| {
            let range = match name.rsplit('/').next() {
                Some("gamma") => Some(-1.5..1.5),
                Some("beta") => Some(-0.5..0.5),
                Some("moving_mean") => Some(-0.3..0.3),
                Some("moving_variance") => Some(0.2..2.0),
                Some("bias") => Some(-0.1..0.1),
                _ => None, // kernels keep their Glorot-uniform values
            };
            if let Some(r) = range {
                t.mapv_inplace(|_| rng.uniform(r.start, r.end));
            }
            (name, t)
        })
        .collect()
}

/// Build both sides for `spec`, run one random batch, return the metric above.
fn agreement(spec: &ModelSpec, batch: usize, seed: u64) -> f64 {
    let mut net = Network::new(spec, seed);
    let tensors = perturbed_tensors(&net, seed + 1);
    assert!(tensors["batch_normalization/gamma"].iter().any(|&g| g < 0.0));
    net.load_tensors(&tensors).expect("perturbed tensors load");

    let reference = TractReference::new(spec, &tensors, batch).expect("tract graph builds");
    let mut rng = Rng::new(seed + 2);
    let x = Array4::from_shape_fn(reference.input_shape(), |_| rng.uniform(0.0, 1.0));

    let ours = net.forward(x.view(), Mode::Eval);
    let theirs = reference.run(x.view()).expect("tract runs");
    assert_eq!(ours.shape(), theirs.shape());

    let scale = theirs.iter().fold(0.0f64, |m, &v| m.max(v.abs() as f64));
    assert!(scale > 1e-6, "degenerate test: all tract logits are ~0");
    let worst = ours.iter().zip(&theirs).map(|(&a, &b)| (a as f64 - b as f64).abs()).fold(0.0, f64::max);
    let rel = worst / scale;
    eprintln!(
        "{:?}: batch {batch}, max |logit| {scale:.4e}, max abs diff {worst:.3e}, relative {rel:.3e}",
        spec.input()
    );
    rel
}

#[test]
fn alexnet_micro_host_forward_matches_tract() {
    let spec = alexnet_micro(99, 5).unwrap();
    let rel = agreement(&spec, 2, 11);
    assert!(rel <= TOLERANCE, "host vs tract relative max error {rel:e} > {TOLERANCE:e}");
}

#[test]
fn alexnet_full_host_forward_matches_tract() {
    let spec = alexnet(227, 1000).unwrap();
    let rel = agreement(&spec, 1, 21);
    assert!(rel <= TOLERANCE, "host vs tract relative max error {rel:e} > {TOLERANCE:e}");
}

/// A residual graph: a ResNet block (conv, BN, standalone ReLU, conv, BN;
/// a strided 1x1 shortcut; Add with ReLU), a conv whose output both its BN
/// and an Add (ReLU6) read, so that the eval forward must not fold that BN
/// into the conv, a Concatenate of two branches and a standalone ReLU6.
#[test]
fn residual_graph_host_forward_matches_tract() {
    let bn = Layer::BatchNorm { epsilon: 1e-3, momentum: 0.99 };
    let conv = |c: Conv2D| Layer::Conv2D(c);
    let add = |activation| Layer::Add { activation };
    let layers: [(Layer, u16, Option<u16>); 16] = [
        (conv(Conv2D::new(8, 3).same().relu()), 0, None), // t1
        (bn, 1, None),                                    // t2: the block input
        (conv(Conv2D::new(8, 3).strides(2).same()), 2, None),
        (bn, 3, None),
        (Layer::Activation(Activation::Relu), 4, None),
        (conv(Conv2D::new(8, 3).same()), 5, None),
        (bn, 6, None),                                 // t7
        (conv(Conv2D::new(8, 1).strides(2)), 2, None), // t8: the shortcut
        (add(Activation::Relu), 7, Some(8)),           // t9
        (conv(Conv2D::new(8, 3).same()), 9, None),     // t10: read by the BN and the Add
        (bn, 10, None),
        (add(Activation::Relu6), 11, Some(10)), // t12
        (Layer::Concat, 12, Some(9)),           // t13: 8x8x16
        (Layer::Activation(Activation::Relu6), 13, None),
        (Layer::GlobalAvgPool, 14, None),
        (Layer::Dense { units: 5, activation: Activation::Softmax }, 15, None),
    ];
    let (l, r): (Vec<Layer>, Vec<Inputs>) = layers.iter().map(|&(l, main, other)| (l, Inputs { main, other })).unzip();
    let spec = ModelSpec::graph(Shape::image(16, 16, 3), &l, &r).unwrap();
    assert!(!spec.is_stack());
    let rel = agreement(&spec, 3, 31);
    assert!(rel <= TOLERANCE, "host vs tract relative max error {rel:e} > {TOLERANCE:e}");
}
