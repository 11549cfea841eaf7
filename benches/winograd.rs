//! The stride-1 convolutions through the direct im2col + GEMM and through
//! Winograd's F(2x2) and F(4x4) variants (3x3 and 5x5), side by side in one sitting:
//! AlexNet's conv 2 (27x27, 5x5, 96 -> 256) and conv 3-4 (13x13, 3x3, 256/384
//! channels) forward and backward at the training batch, and
//! forward at batch 1 (as inference runs it: transformed filters kept); then a whole AlexNet training step (batch 32, Adam)
//! with `--conv direct` and with `--conv auto`. `cargo bench --bench winograd`.

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use host::nn::conv::{self, ConvAlgo, Epilogue};
use host::nn::winograd::FilterCache;
use host::nn::{softmax_cross_entropy, ChaCha8Rng, Mode, Network};
use host::optim::{Optimizer, OptimizerKind};
use ndarray::Array4;
use rand::SeedableRng;
use shared::geometry::ConvGeom;
use shared::spec::{alexnet, Conv2D, Shape};
use std::time::Duration;

fn layer(c: &mut Criterion, name: &str, (size, k): (u32, u32), cin: u32, cout: u32, batch: usize) {
    let g = ConvGeom::from_spec(&Conv2D::new(cout, k).same(), Shape::image(size, size, cin)).expect("geometry");
    let x: Vec<f32> = (0..batch * g.input_len()).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
    let kernel: Vec<f32> =
        (0..g.filter_len() * g.out_c).map(|i| ((i * 104729) % 1000) as f32 / 20000.0 - 0.025).collect();
    let bias = vec![0.01f32; g.out_c];
    let ep = Epilogue { bias: &bias, relu: true, affine: None };
    let mut y = vec![0.0f32; batch * g.output_len()];
    let mut group = c.benchmark_group("winograd");
    group.sample_size(10).measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    group.sampling_mode(SamplingMode::Flat);
    let algos =
        [(ConvAlgo::Direct, "direct"), (ConvAlgo::Winograd, "winograd"), (ConvAlgo::Winograd4x4, "winograd-4x4")];
    for (algo, label) in algos {
        conv::set_algo(algo);
        // Batch 1 is inference: the transformed filters are kept between calls.
        let mut filters = FilterCache::default();
        group.bench_function(format!("{name}/batch{batch}/forward/{label}"), |b| {
            b.iter(|| {
                if batch == 1 {
                    conv::forward_inference(&g, &ep, &kernel, &x, batch, &mut y, &mut filters, None)
                } else {
                    conv::forward_with(&g, &ep, &kernel, &x, batch, &mut y)
                }
            })
        });
        if batch > 1 {
            let (mut dk, mut db, mut dx) = (vec![0.0; kernel.len()], vec![0.0; g.out_c], vec![0.0; x.len()]);
            let mut dy = y.clone();
            let mut partials = Vec::new();
            group.bench_function(format!("{name}/batch{batch}/backward/{label}"), |b| {
                b.iter(|| {
                    conv::backward(
                        &g,
                        false,
                        &kernel,
                        &x,
                        &y,
                        &mut dy,
                        batch,
                        &mut dk,
                        &mut db,
                        Some(&mut dx),
                        &mut partials,
                    )
                })
            });
        }
    }
    conv::set_algo(ConvAlgo::Direct);
    group.finish();
}

/// One training step of the full AlexNet (1000 classes, batch 32) under each
/// arithmetic; `auto` times both paths of every 3x3 layer on its first step
/// (in the warm-up) and keeps the faster.
fn train_step(c: &mut Criterion) {
    let batch = 32;
    let spec = alexnet(227, 1000).expect("alexnet");
    let x =
        Array4::from_shape_fn((batch, 227, 227, 3), |(n, y, x, c)| ((n * 7 + y * 3 + x * 5 + c) % 256) as f32 / 255.0);
    let labels: Vec<usize> = (0..batch).map(|i| (i * 37) % 1000).collect();
    let mut group = c.benchmark_group("winograd");
    group.sample_size(10).measurement_time(Duration::from_secs(20)).warm_up_time(Duration::from_secs(5));
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(batch as u64));
    for (algo, label) in [(ConvAlgo::Direct, "direct"), (ConvAlgo::Auto, "auto")] {
        conv::set_algo(algo);
        let mut net = Network::new(&spec, 0);
        let mut opt = Optimizer::new(OptimizerKind::adam());
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        group.bench_function(format!("alexnet_train_step/batch{batch}/{label}"), |b| {
            b.iter(|| {
                let logits = net.forward(x.view(), Mode::Train(&mut rng));
                let (_, g, _) = softmax_cross_entropy(logits.view(), &labels);
                net.backward(g.view());
                opt.step(&mut net);
            })
        });
    }
    conv::set_algo(ConvAlgo::Direct);
    group.finish();
}

fn benches(c: &mut Criterion) {
    for batch in [32, 1] {
        layer(c, "conv2_96_256_5x5", (27, 5), 96, 256, batch);
        layer(c, "conv3_256_384", (13, 3), 256, 384, batch);
        layer(c, "conv4_384_384", (13, 3), 384, 384, batch);
    }
    train_step(c);
}

criterion_group!(winograd, benches);
criterion_main!(winograd);
