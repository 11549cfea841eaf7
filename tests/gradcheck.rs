//! Whole-network gradient check: every parameter gradient of a small stack that
//! holds each layer kind (conv valid/same/stride, BN in training mode, pooling,
//! flatten, dense, dropout, softmax cross-entropy) against central differences,
//! and of operator graphs (Add, Concatenate, Activation, residual blocks) and
//! the Softmax layer.

use host::nn::{softmax_cross_entropy, ChaCha8Rng, Mode, Network};
use ndarray::Array4;
use rand::SeedableRng;
use shared::spec::{Activation, AvgPool2D, Conv2D, Hw, Inputs, Layer, ModelSpec, Padding, Sequential, Shape};

#[test]
fn whole_network_gradients_match_finite_differences() {
    let spec = Sequential::new(Shape::image(11, 11, 2))
        .conv2d(Conv2D::new(4, 3).strides(2).same().relu())
        .batch_norm()
        .max_pool(2, 1)
        .conv2d(Conv2D::new(5, 3).relu())
        .batch_norm()
        .flatten()
        .dense(8, Activation::Relu)
        .dropout(0.25)
        .dense(4, Activation::Softmax)
        .build()
        .unwrap();
    check_network(&spec, 12);
}

/// The general layers: a rectangular, strided, explicitly padded conv with
/// ReLU6, a same average pool on an odd size, a dilated same conv (linear:
/// fewer ReLU kinks for the finite differences to step over), the global
/// average pool and a ReLU6 Dense.
#[test]
fn general_layer_gradients_match_finite_differences() {
    let spec = Sequential::new(Shape::image(11, 11, 2))
        .conv2d(Conv2D::new(4, 1).kernel_hw(3, 5).strides_hw(2, 1).pads(1, 0, 2, 1).relu6())
        .batch_norm()
        .add(Layer::AvgPool2D(AvgPool2D { pool: Hw::new(2, 3), stride: Hw::new(2, 2), padding: Padding::Same }))
        .conv2d(Conv2D::new(5, 3).dilation(2, 1).same())
        .batch_norm()
        .add(Layer::GlobalAvgPool)
        .dense(8, Activation::Relu6)
        .dropout(0.25)
        .dense(4, Activation::Softmax)
        .build()
        .unwrap();
    check_network(&spec, 12);
}

/// Grouped convolutions: a depthwise conv (multiplier 2, strided) and a
/// two-group conv (the original AlexNet's split); linear and without
/// BatchNormalization, so that no ReLU kink sits inside a finite difference
/// and no bias gradient is zero by construction (BN cancels a constant shift).
#[test]
fn grouped_conv_gradients_match_finite_differences() {
    let spec = Sequential::new(Shape::image(11, 11, 2))
        .conv2d(Conv2D::new(4, 3))
        .conv2d(Conv2D::new(8, 3).groups(4).strides(2).same())
        .conv2d(Conv2D::new(6, 3).groups(2))
        .add(Layer::GlobalAvgPool)
        .dense(4, Activation::Softmax)
        .build()
        .unwrap();
    check_network(&spec, 8);
}

/// Softmax as a layer of its own: over each pixel's channels (between two
/// convolutions) and over a flat vector (between two Dense layers).
#[test]
fn softmax_layer_gradients_match_finite_differences() {
    let spec = Sequential::new(Shape::image(11, 11, 2))
        .conv2d(Conv2D::new(4, 3))
        .add(Layer::Softmax)
        .conv2d(Conv2D::new(5, 3).strides(2))
        .add(Layer::GlobalAvgPool)
        .dense(6, Activation::None)
        .add(Layer::Softmax)
        .dense(4, Activation::Softmax)
        .build()
        .unwrap();
    check_network(&spec, 8);
}

/// A graph from `(layer, main, other)` triples (tensor 0 the input, `i + 1`
/// layer `i`'s output).
fn graph(input: Shape, layers: &[(Layer, u16, Option<u16>)]) -> ModelSpec {
    let (l, r): (Vec<Layer>, Vec<Inputs>) = layers.iter().map(|&(l, main, other)| (l, Inputs { main, other })).unzip();
    ModelSpec::graph(input, &l, &r).unwrap()
}

/// Add without activation, Concatenate of images and of flat vectors, and
/// tensors read by two layers (conv2d's output by the Add and a Concatenate,
/// the Add's by a conv and a pool), whose gradients are the readers' sum.
/// Linear throughout: no kink inside a finite difference.
#[test]
fn add_and_concatenate_gradients_match_finite_differences() {
    let spec = graph(
        Shape::image(11, 11, 2),
        &[
            (Layer::Conv2D(Conv2D::new(4, 3).same()), 0, None),        // t1
            (Layer::Conv2D(Conv2D::new(4, 1)), 0, None),               // t2
            (Layer::Add { activation: Activation::None }, 1, Some(2)), // t3
            (Layer::Concat, 3, Some(1)),                               // t4: 11x11x8
            (Layer::Conv2D(Conv2D::new(4, 3).strides(2)), 4, None),    // t5: 5x5x4
            (Layer::GlobalAvgPool, 5, None),                           // t6
            (Layer::GlobalAvgPool, 3, None),                           // t7
            (Layer::Concat, 6, Some(7)),                               // t8: 8
            (Layer::Dense { units: 4, activation: Activation::Softmax }, 8, None),
        ],
    );
    check_network(&spec, 8);
}

/// A residual block as ResNet's: a stem conv whose output the block's main
/// branch (conv, BN in training mode, a standalone ReLU, conv) and its
/// strided 1x1 shortcut conv both read, an Add with ReLU, then the global
/// average pool and a Dense. The stem's gradient is the sum of both branches'.
#[test]
fn residual_block_gradients_match_finite_differences() {
    let spec = graph(
        Shape::image(11, 11, 2),
        &[
            (Layer::Conv2D(Conv2D::new(4, 3).same()), 0, None), // t1: the block input
            (Layer::Conv2D(Conv2D::new(4, 3).strides(2).same()), 1, None), // t2: 6x6x4
            (Layer::BatchNorm { epsilon: 1e-3, momentum: 0.99 }, 2, None), // t3
            (Layer::Activation(Activation::Relu), 3, None),     // t4
            (Layer::Conv2D(Conv2D::new(4, 3).same()), 4, None), // t5
            (Layer::Conv2D(Conv2D::new(4, 1).strides(2)), 1, None), // t6: the shortcut
            (Layer::Add { activation: Activation::Relu }, 5, Some(6)), // t7
            (Layer::GlobalAvgPool, 7, None),                    // t8
            (Layer::Dense { units: 4, activation: Activation::Softmax }, 8, None),
        ],
    );
    check_network(&spec, 12);
}

/// Pre-activations of the masked checks: well away from ReLU's kink at 0
/// and ReLU6's at 6 (a finite difference moves them by at most `h * 8`), on
/// both sides of each, so the masks cut some gradients and pass others.
const PRE_ACTIVATIONS: [f32; 9] = [-2.0, -0.7, 0.5, 1.3, 2.9, 4.6, 5.5, 6.5, 7.9];

/// `act` as an Add's fused activation (`add`) or a standalone Activation
/// layer, after 1x1 convs set to (multiples of) the identity so that its
/// inputs are exactly [`PRE_ACTIVATIONS`]; then Flatten and Dense, so that
/// every pixel's mask shows in the conv kernels' gradients.
fn check_mask(act: Activation, add: bool) {
    let conv = Layer::Conv2D(Conv2D::new(2, 1));
    let dense = Layer::Dense { units: 3, activation: Activation::Softmax };
    let (spec, scale) = if add {
        // t1 = x, t2 = x / 2: the Add sees 1.5 x.
        let layers = [
            (conv, 0, None),
            (conv, 0, None),
            (Layer::Add { activation: act }, 1, Some(2)),
            (Layer::Flatten, 3, None),
            (dense, 4, None),
        ];
        (graph(Shape::image(3, 3, 2), &layers), 1.5)
    } else {
        let layers = [(conv, 0, None), (Layer::Activation(act), 1, None), (Layer::Flatten, 2, None), (dense, 3, None)];
        (graph(Shape::image(3, 3, 2), &layers), 1.0)
    };
    let x = Array4::from_shape_fn((2, 3, 3, 2), |(n, h, w, c)| {
        PRE_ACTIVATIONS[(n * 5 + h * 3 + w * 2 + c * 7) % PRE_ACTIVATIONS.len()] / scale
    });
    let convs = if add { 2 } else { 1 };
    let setup = |net: &mut Network| {
        for (k, p) in net.params_mut().into_iter().filter(|p| p.name.starts_with("conv2d")).enumerate() {
            if p.name.ends_with("/kernel") {
                let gain = if k == 0 { 1.0 } else { 0.5 };
                p.value = vec![gain, 0.0, 0.0, gain];
            }
        }
    };
    let mut net = Network::new(&spec, 3);
    setup(&mut net);
    // The masks bite: some outputs clipped to 0 (and to 6 for ReLU6).
    let outs = net.forward_layers(x.view());
    let y = &outs[convs];
    assert!(y.iter().any(|&v| v == 0.0) && y.iter().any(|&v| v > 0.0), "{act:?}: no kink on both sides");
    if act == Activation::Relu6 {
        assert!(y.iter().any(|&v| v == 6.0) && y.iter().all(|&v| v <= 6.0), "{act:?}: nothing clipped at 6");
    } else {
        assert!(y.iter().any(|&v| v > 6.0), "{act:?}: no output above 6 (ReLU must pass them)");
    }
    let grads = check_network_on(&spec, 2 * convs + 2, x, &[1, 2], setup);
    // The masks show in the kernels' gradients, which are not zero.
    assert!(grads.iter().filter(|(n, _)| n.starts_with("conv2d")).all(|(_, g)| g.iter().any(|v| v.abs() > 1e-4)));
}

#[test]
fn add_with_relu_gradients_match_finite_differences() {
    check_mask(Activation::Relu, true);
}

#[test]
fn add_with_relu6_gradients_match_finite_differences() {
    check_mask(Activation::Relu6, true);
}

#[test]
fn activation_relu_gradients_match_finite_differences() {
    check_mask(Activation::Relu, false);
}

#[test]
fn activation_relu6_gradients_match_finite_differences() {
    check_mask(Activation::Relu6, false);
}

/// Every parameter gradient of `spec`'s network (with `tensors` trainable
/// tensors) against central differences on a fixed batch of 11x11x2 images.
fn check_network(spec: &ModelSpec, tensors: usize) {
    let batch = 3;
    let x = Array4::from_shape_fn((batch, 11, 11, 2), |(n, h, w, c)| {
        (((n * 131 + h * 17 + w * 5 + c * 3) * 2654435761usize) % 1000) as f32 / 1000.0
    });
    check_network_on(spec, tensors, x, &[1, 3, 0], |_| {});
}

/// [`check_network`] on the batch `x` with `labels`, the parameters as
/// `setup` leaves them after initialisation; returns the analytic gradients.
fn check_network_on(
    spec: &ModelSpec,
    tensors: usize,
    x: Array4<f32>,
    labels: &[usize],
    setup: impl Fn(&mut Network),
) -> Vec<(String, Vec<f32>)> {
    let mut net = Network::new(spec, 42);
    setup(&mut net);
    // The same generator state for every forward: one fixed dropout mask.
    let rng = ChaCha8Rng::seed_from_u64(7);
    let loss = |net: &mut Network| -> f64 {
        let logits = net.forward(x.view(), Mode::Train(&mut rng.clone()));
        softmax_cross_entropy(logits.view(), labels).0 as f64
    };
    let logits = net.forward(x.view(), Mode::Train(&mut rng.clone()));
    let (_, g, _) = softmax_cross_entropy(logits.view(), labels);
    net.backward(g.view());
    let grads: Vec<(String, Vec<f32>)> = net.params().iter().map(|p| (p.name.clone(), p.grad.clone())).collect();
    assert_eq!(grads.len(), tensors);

    let h = 3e-3f32;
    for (pi, (name, ana)) in grads.iter().enumerate() {
        let (mut err, mut norm) = (0.0f64, 0.0f64);
        // Every element of the small tensors, a strided sample of the large ones.
        let step = (ana.len() / 40).max(1);
        for i in (0..ana.len()).step_by(step) {
            let orig = net.params()[pi].value[i];
            net.params_mut()[pi].value[i] = orig + h;
            let lp = loss(&mut net);
            net.params_mut()[pi].value[i] = orig - h;
            let lm = loss(&mut net);
            net.params_mut()[pi].value[i] = orig;
            let num = (lp - lm) / (2.0 * h as f64);
            err += (num - ana[i] as f64).powi(2);
            norm += num.powi(2) + (ana[i] as f64).powi(2);
        }
        // A floor for gradients that are zero by construction (noise over noise).
        let rel = (err / norm.max(1e-10)).sqrt();
        // f32 forward passes: ~1e-3 is the noise floor; a wrong gradient is O(1).
        println!("{name:32} relative error {rel:.2e} (gradient norm {:.2e})", (norm / 2.0).sqrt());
        assert!(rel < 2e-2, "{name}: relative error {rel:.2e}");
    }
    grads
}
