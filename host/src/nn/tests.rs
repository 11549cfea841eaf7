//! Network-level tests: construction, Keras names and layouts, checkpoints, modes.

use super::*;
use ndarray::Array4;
use rand::SeedableRng;
use shared::spec::{alexnet_micro, Conv2D, Sequential};

fn small() -> ModelSpec {
    Sequential::new(Shape::image(9, 9, 3))
        .conv2d(Conv2D::new(4, 3).same().relu())
        .batch_norm()
        .max_pool(3, 2)
        .conv2d(Conv2D::new(5, 3).strides(2).relu())
        .flatten()
        .dense(6, Activation::Relu)
        .dropout(0.5)
        .dense(3, Activation::Softmax)
        .build()
        .unwrap()
}

fn input(batch: usize, spec: &ModelSpec) -> Array4<f32> {
    let Shape::Image { h, w, c } = spec.input() else { panic!() };
    Array4::from_shape_fn((batch, h as usize, w as usize, c as usize), |(n, y, x, c)| {
        ((n * 31 + y * 7 + x * 3 + c * 11) % 17) as f32 / 16.0
    })
}

#[test]
fn keras_names_shapes_and_init() {
    let net = Network::new(&small(), 5);
    let t = net.tensors();
    let names: Vec<&str> = t.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "conv2d/kernel",
            "conv2d/bias",
            "batch_normalization/gamma",
            "batch_normalization/beta",
            "batch_normalization/moving_mean",
            "batch_normalization/moving_variance",
            "conv2d_1/kernel",
            "conv2d_1/bias",
            "dense/kernel",
            "dense/bias",
            "dense_1/kernel",
            "dense_1/bias",
        ]
    );
    let shape = |n: &str| t.iter().find(|(m, _)| m == n).unwrap().1.shape().to_vec();
    assert_eq!(shape("conv2d/kernel"), [3, 3, 3, 4]);
    assert_eq!(shape("conv2d_1/kernel"), [3, 3, 4, 5]);
    assert_eq!(shape("dense/kernel"), [5, 6]);
    let get = |n: &str| t.iter().find(|(m, _)| m == n).unwrap().1.clone();
    assert!(get("conv2d/bias").iter().all(|&v| v == 0.0));
    assert!(get("batch_normalization/gamma").iter().all(|&v| v == 1.0));
    assert!(get("batch_normalization/moving_variance").iter().all(|&v| v == 1.0));
    let limit = (6.0f32 / (27.0 + 36.0)).sqrt();
    assert!(get("conv2d/kernel").iter().all(|v| v.abs() <= limit));
    // Same seed, same weights; another seed, others.
    let again = Network::new(&small(), 5).tensors();
    assert!(t.iter().zip(&again).all(|(a, b)| a.1 == b.1));
    assert_ne!(Network::new(&small(), 6).tensors()[0].1, t[0].1);
    // Parameter count agrees with the spec.
    let n: usize = net.params().iter().map(|p| p.value.len()).sum();
    assert_eq!(n as u64, small().params().0);
}

#[test]
fn load_tensors_round_trip_and_errors() {
    let spec = small();
    let mut a = Network::new(&spec, 1);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    a.forward(input(4, &spec).view(), Mode::Train(&mut rng)); // moves the BN statistics
    let map: HashMap<String, ArrayD<f32>> = a.tensors().into_iter().collect();
    let mut b = Network::new(&spec, 2);
    b.load_tensors(&map).unwrap();
    let x = input(3, &spec);
    assert_eq!(a.forward(x.view(), Mode::Eval), b.forward(x.view(), Mode::Eval));

    let mut missing = map.clone();
    missing.remove("batch_normalization/moving_variance");
    assert_eq!(b.load_tensors(&missing), Err(NnError::Missing { name: "batch_normalization/moving_variance".into() }));
    let mut bad = map.clone();
    bad.insert("dense/kernel".into(), ArrayD::zeros(IxDyn(&[6, 5])));
    let err = b.load_tensors(&bad).unwrap_err();
    assert!(err.to_string().contains("dense/kernel") && err.to_string().contains("[5, 6]"), "{err}");
    let mut nan = map.clone();
    nan.get_mut("dense/bias").unwrap()[[0]] = f32::NAN;
    assert!(matches!(b.load_tensors(&nan), Err(NnError::NonFinite { .. })));
    // A failed load leaves the network as it was.
    assert_eq!(a.forward(x.view(), Mode::Eval), b.forward(x.view(), Mode::Eval));
}

#[test]
fn eval_is_deterministic_and_differs_from_training() {
    let spec = small();
    let mut net = Network::new(&spec, 3);
    let x = input(5, &spec);
    let e1 = net.forward(x.view(), Mode::Eval);
    let e2 = net.forward(x.view(), Mode::Eval);
    assert_eq!(e1, e2);
    assert_eq!(e1.dim(), (5, 3));
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let t = net.forward(x.view(), Mode::Train(&mut rng));
    assert_ne!(t, e1);
    // Eval on one example equals its row of a batched eval (no cross-batch leakage).
    let one = net.forward(x.slice(ndarray::s![2..3, .., .., ..]), Mode::Eval);
    let all = net.forward(x.view(), Mode::Eval);
    for (a, b) in one.row(0).iter().zip(all.row(2)) {
        assert!((a - b).abs() < 1e-5);
    }
}

#[test]
fn forward_collect_gives_every_layer_output() {
    let spec = small();
    let mut net = Network::new(&spec, 3);
    let x = input(2, &spec);
    let outs = net.forward_collect(x.view());
    assert_eq!(outs.len(), spec.layers().len());
    assert_eq!(outs[0].shape(), [2, 9, 9, 4]);
    assert_eq!(outs[2].shape(), [2, 4, 4, 4]);
    assert_eq!(outs[3].shape(), [2, 1, 1, 5]);
    assert_eq!(outs[7].shape(), [2, 3]);
    // The last output is the softmax of the logits.
    let p = softmax(net.forward(x.view(), Mode::Eval).view());
    for (a, b) in outs[7].iter().zip(p.iter()) {
        assert!((a - b).abs() < 1e-6);
    }
    for row in outs[7].rows() {
        assert!((row.sum() - 1.0).abs() < 1e-5);
    }
}

#[test]
#[should_panic(expected = "Mode::Train")]
fn backward_after_eval_is_refused() {
    let spec = small();
    let mut net = Network::new(&spec, 3);
    let logits = net.forward(input(2, &spec).view(), Mode::Eval);
    net.backward(logits.view());
}

#[test]
fn wrong_input_shape_is_reported() {
    let net = Network::new(&small(), 3);
    let x = Array4::<f32>::zeros((1, 8, 9, 3));
    assert!(matches!(net.check_input(&x.view()), Err(NnError::Input { .. })));
}

#[test]
fn alexnet_micro_trains_a_step() {
    let spec = alexnet_micro(99, 10).unwrap();
    let mut net = Network::new(&spec, 0);
    let x = input(2, &spec);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let logits = net.forward(x.view(), Mode::Train(&mut rng));
    assert_eq!(logits.dim(), (2, 10));
    let (loss, g, _) = softmax_cross_entropy(logits.view(), &[1, 7]);
    assert!(loss.is_finite());
    net.backward(g.view());
    assert!(net.params().iter().all(|p| p.grad.iter().all(|v| v.is_finite())));
    assert!(net.params().iter().any(|p| p.grad.iter().any(|&v| v != 0.0)));
}

/// The eval forward folds each conv's BatchNormalization into the conv's
/// epilogue; `forward_layers` runs them as separate layers. The two round
/// identically (bias, ReLU, then a multiply and an add), so the logits agree
/// exactly, here with moving statistics far from the initial ones and channel
/// counts the AVX-512 conv kernel takes.
#[test]
fn folded_batch_norm_matches_separate_layers() {
    let spec = Sequential::new(Shape::image(11, 11, 3))
        .conv2d(Conv2D::new(32, 3).same().relu())
        .batch_norm()
        .max_pool(3, 2)
        .conv2d(Conv2D::new(16, 3).same().relu())
        .batch_norm()
        .flatten()
        .dense(3, Activation::Softmax)
        .build()
        .unwrap();
    let mut net = Network::new(&spec, 5);
    let mut tensors: HashMap<String, ArrayD<f32>> = net.tensors().into_iter().collect();
    for (name, t) in tensors.iter_mut() {
        let f = |i: usize| ((i * 7 + name.len()) % 11) as f32 / 10.0;
        if name.ends_with("moving_mean") || name.ends_with("beta") || name.ends_with("bias") {
            t.iter_mut().enumerate().for_each(|(i, v)| *v = f(i) - 0.5);
        } else if name.ends_with("moving_variance") || name.ends_with("gamma") {
            t.iter_mut().enumerate().for_each(|(i, v)| *v = f(i) + 0.2);
        }
    }
    net.load_tensors(&tensors).unwrap();
    for batch in [1, 3] {
        let x = input(batch, &spec);
        let layers = net.forward_layers(x.view());
        let logits = net.forward(x.view(), Mode::Eval);
        let last = layers.last().unwrap();
        assert_eq!(logits.as_slice().unwrap(), last.as_slice().unwrap(), "batch {batch}");
    }
}

/// A residual graph on 9x9x3: a stem conv whose output a block (conv, BN,
/// ReLU, conv) and the Add read, a Concatenate of the Add and the stem, and
/// a dead branch (a conv nobody reads) whose parameters get zero gradients.
fn residual() -> ModelSpec {
    use shared::spec::Inputs;
    let layers = [
        Layer::Conv2D(Conv2D::new(4, 3).same()),            // t1
        Layer::Conv2D(Conv2D::new(4, 3).same()),            // t2
        Layer::BatchNorm { epsilon: 1e-3, momentum: 0.99 }, // t3
        Layer::Activation(Activation::Relu),                // t4
        Layer::Conv2D(Conv2D::new(4, 1)),                   // t5: dead
        Layer::Add { activation: Activation::Relu },        // t6 = t4 + t1
        Layer::Concat,                                      // t7 = [t6, t1]
        Layer::GlobalAvgPool,                               // t8
        Layer::Dense { units: 3, activation: Activation::Softmax },
    ];
    let reads =
        [(0, None), (1, None), (2, None), (3, None), (1, None), (4, Some(1)), (6, Some(1)), (7, None), (8, None)];
    let inputs: Vec<Inputs> = reads.iter().map(|&(main, other)| Inputs { main, other }).collect();
    ModelSpec::graph(Shape::image(9, 9, 3), &layers, &inputs).unwrap()
}

#[test]
fn graph_layers_have_keras_names_and_no_parameters() {
    let spec = residual();
    let mut net = Network::new(&spec, 1);
    let names: Vec<String> = net.tensors().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names.iter().filter(|n| n.starts_with("conv2d")).count(), 6);
    assert!(names.iter().all(|n| !n.starts_with("add") && !n.starts_with("activation") && !n.starts_with("concat")));
    let n: usize = net.params().iter().map(|p| p.value.len()).sum();
    assert_eq!(n as u64, spec.params().0);
    let outs = net.forward_layers(input(2, &spec).view());
    assert_eq!(outs.len(), 9);
    assert_eq!(outs[6].shape(), [2, 9, 9, 8]);
    // The Concatenate holds the Add's channels, then the stem's.
    let (add, stem, cat) = (&outs[5], &outs[0], &outs[6]);
    for (p, (a, s)) in
        cat.as_slice().unwrap().chunks(8).zip(add.as_slice().unwrap().chunks(4).zip(stem.as_slice().unwrap().chunks(4)))
    {
        assert_eq!(&p[..4], a);
        assert_eq!(&p[4..], s);
    }
    let profile = net.profile();
    assert!(profile.is_none());
}

/// The graph backward reuses its buffers between steps: a second backward of
/// the same forward gives the same gradients bit for bit; the dead branch's are
/// zero, every other layer's not.
#[test]
fn graph_backward_is_repeatable_and_zero_on_a_dead_branch() {
    let spec = residual();
    assert!(!spec.is_stack());
    let mut net = Network::new(&spec, 2);
    let x = input(3, &spec);
    let grads = |net: &mut Network| {
        let logits = net.forward(x.view(), Mode::Train(&mut ChaCha8Rng::seed_from_u64(0)));
        let (_, g, _) = softmax_cross_entropy(logits.view(), &[0, 1, 2]);
        net.backward(g.view());
        net.params().iter().map(|p| (p.name.clone(), p.grad.clone())).collect::<Vec<_>>()
    };
    let first = grads(&mut net);
    net.set_profiling(true);
    let second = grads(&mut net);
    assert_eq!(first.len(), second.len());
    for ((name, a), (_, b)) in first.iter().zip(&second) {
        assert_eq!(
            a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            b.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "{name}"
        );
        if name.starts_with("conv2d_2/") {
            assert!(a.iter().all(|&v| v == 0.0), "{name}: a dead branch's gradient");
        } else if name != "conv2d_1/bias" {
            // (A bias before BatchNormalization has gradient ~0 by construction.)
            assert!(a.iter().any(|&v| v.abs() > 1e-6), "{name}: no gradient");
        }
    }
    let profile = net.profile().unwrap();
    assert_eq!(profile.len(), 9);
    assert_eq!(profile[5].0, "add");
}

/// A batch-1 inference's dense layer after a BatchNormalization of a ReLU'd
/// conv skips the rows of inputs at their channel's dead value (the BN's
/// shift) and keeps `d W` between passes: its logits stay those of the plain
/// product (batch 2 takes that path), keep their bits from pass to pass, and
/// follow the weights when the optimizer or a load changes them in place.
#[test]
fn dense_after_a_batch_norm_skips_dead_inputs_and_keeps_the_plain_result() {
    let spec = Sequential::new(Shape::image(11, 11, 3))
        .conv2d(Conv2D::new(32, 3).same().relu())
        .batch_norm()
        .max_pool(3, 2)
        .flatten()
        .dense(40, Activation::Relu)
        .dense(3, Activation::Softmax)
        .build()
        .unwrap();
    let mut net = Network::new(&spec, 9);
    assert_eq!(net.dead_from, [None, None, None, None, Some(1), None]);
    let mut tensors: HashMap<String, ArrayD<f32>> = net.tensors().into_iter().collect();
    for (name, t) in tensors.iter_mut() {
        let f = |i: usize| ((i * 7 + name.len()) % 11) as f32 / 10.0;
        if name.ends_with("moving_mean") || name.ends_with("beta") {
            t.iter_mut().enumerate().for_each(|(i, v)| *v = f(i) - 0.5);
        } else if name.ends_with("moving_variance") || name.ends_with("gamma") {
            t.iter_mut().enumerate().for_each(|(i, v)| *v = f(i) + 0.2);
        } else if name == "conv2d/bias" {
            // Many ReLU zeros, so that whole pooling windows die.
            t.iter_mut().enumerate().for_each(|(i, v)| *v = -0.3 * (i % 3) as f32);
        }
    }
    net.load_tensors(&tensors).unwrap();
    let x =
        Array4::from_shape_fn((2, 11, 11, 3), |(n, y, x, c)| (((n * 5 + y * 7 + x * 3 + c) % 13) as f32 - 6.0) / 6.0);
    let check = |net: &mut Network| {
        let plain = net.forward(x.view(), Mode::Eval);
        for b in 0..2 {
            let one = x.slice(ndarray::s![b..b + 1, .., .., ..]);
            let first = net.forward(one, Mode::Eval);
            let again = net.forward(one, Mode::Eval);
            assert_eq!(first, again, "image {b}: a later pass changed the bits");
            for (got, want) in first.iter().zip(plain.row(b)) {
                assert!((got - want).abs() < 1e-5, "image {b}: {got} against the plain product's {want}");
            }
        }
    };
    check(&mut net);
    // A fifth or more of the dense layer's inputs sat at their dead value.
    let layers = net.forward_layers(x.slice(ndarray::s![0..1, .., .., ..]));
    let shift = {
        let t = |n: &str| tensors[&format!("batch_normalization/{n}")].as_slice().unwrap().to_vec();
        batchnorm::eval_affine(&t("gamma"), &t("beta"), 1e-3, &t("moving_mean"), &t("moving_variance")).1
    };
    let flat = layers[3].as_slice().unwrap();
    let dead = flat.iter().enumerate().filter(|&(i, &v)| v == shift[i % 32]).count();
    assert!(dead * 5 >= flat.len(), "{dead} of {} inputs dead", flat.len());
    for p in net.params_mut() {
        if p.name == "dense/kernel" {
            p.value.iter_mut().for_each(|v| *v *= -0.5);
        }
    }
    check(&mut net);
    tensors.get_mut("dense/kernel").unwrap().iter_mut().for_each(|v| *v *= 2.0);
    net.load_tensors(&tensors).unwrap();
    check(&mut net);
}

/// A network built for loading draws nothing (its kernels are zero) and,
/// once loaded, computes what the network its tensors came from computes.
#[test]
fn a_network_for_loading_matches_its_source_once_loaded() {
    let spec = small();
    let mut source = Network::new(&spec, 3);
    let mut loaded = Network::for_loading(&spec);
    assert!(loaded.params().iter().filter(|p| p.name.ends_with("kernel")).all(|p| p.value.iter().all(|&v| v == 0.0)));
    let tensors: HashMap<String, ArrayD<f32>> = source.tensors().into_iter().collect();
    loaded.check_tensors(&tensors).unwrap();
    loaded.load_tensors(&tensors).unwrap();
    let x = input(2, &spec);
    assert_eq!(loaded.forward(x.view(), Mode::Eval), source.forward(x.view(), Mode::Eval));
    let mut missing = tensors.clone();
    missing.remove("dense/kernel");
    assert!(matches!(loaded.check_tensors(&missing), Err(NnError::Missing { .. })));
}
