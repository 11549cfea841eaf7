//! Whole-network gradient check: every parameter gradient of a small stack that
//! holds each layer kind (conv valid/same/stride, BN in training mode, pooling,
//! flatten, dense, dropout, softmax cross-entropy) against central differences.

use host::nn::{softmax_cross_entropy, ChaCha8Rng, Mode, Network};
use ndarray::Array4;
use rand::SeedableRng;
use shared::spec::{Activation, AvgPool2D, Conv2D, Hw, Layer, Padding, Sequential, Shape};

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

/// Every parameter gradient of `spec`'s network (with `tensors` trainable
/// tensors) against central differences on a fixed batch of 11x11x2 images.
fn check_network(spec: &shared::spec::ModelSpec, tensors: usize) {
    let mut net = Network::new(spec, 42);
    let batch = 3;
    let x = Array4::from_shape_fn((batch, 11, 11, 2), |(n, h, w, c)| {
        (((n * 131 + h * 17 + w * 5 + c * 3) * 2654435761usize) % 1000) as f32 / 1000.0
    });
    let labels = [1, 3, 0];
    // The same generator state for every forward: one fixed dropout mask.
    let rng = ChaCha8Rng::seed_from_u64(7);
    let loss = |net: &mut Network| -> f64 {
        let logits = net.forward(x.view(), Mode::Train(&mut rng.clone()));
        softmax_cross_entropy(logits.view(), &labels).0 as f64
    };
    let logits = net.forward(x.view(), Mode::Train(&mut rng.clone()));
    let (_, g, _) = softmax_cross_entropy(logits.view(), &labels);
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
}
