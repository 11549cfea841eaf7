//! One training step (forward, softmax cross-entropy, backward, Adam) in images/s.
//!
//! `cargo bench --bench train_step`: the full 227x227 AlexNet at 1000 classes and
//! batch 32 (about 6.6 GFLOP per image for forward + backward), and alexnet-micro.
//! `HOST_CONV=auto` (or `winograd`) runs the 3x3 convolutions as `--conv` would.

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use host::nn::{softmax_cross_entropy, ChaCha8Rng, Mode, Network};
use host::optim::{Optimizer, OptimizerKind};
use ndarray::Array4;
use rand::SeedableRng;
use shared::spec::{alexnet, alexnet_micro, ModelSpec, Shape};
use std::time::Duration;

fn step_bench(c: &mut Criterion, name: &str, spec: ModelSpec, batch: usize, samples: usize, secs: u64) {
    let Shape::Image { h, w, c: ch } = spec.input() else { unreachable!() };
    let classes = spec.output().elements() as usize;
    let mut net = Network::new(&spec, 0);
    let mut opt = Optimizer::new(OptimizerKind::adam());
    let x = Array4::from_shape_fn((batch, h as usize, w as usize, ch as usize), |(n, y, x, c)| {
        ((n * 7 + y * 3 + x * 5 + c) % 256) as f32 / 255.0
    });
    let labels: Vec<usize> = (0..batch).map(|i| (i * 37) % classes).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut group = c.benchmark_group("train_step");
    group.sample_size(samples).measurement_time(Duration::from_secs(secs)).warm_up_time(Duration::from_secs(3));
    // Flat: every sample runs the same number of steps (linear sampling would run
    // 1 + 2 + ... + n steps, minutes for AlexNet).
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(batch as u64));
    group.bench_function(format!("{name}/batch{batch}"), |b| {
        b.iter(|| {
            let logits = net.forward(x.view(), Mode::Train(&mut rng));
            let (_, g, _) = softmax_cross_entropy(logits.view(), &labels);
            net.backward(g.view());
            opt.step(&mut net);
        })
    });
    group.finish();
}

fn train_step(c: &mut Criterion) {
    // `HOST_CONV=direct|winograd|auto`: the 3x3 convolutions' arithmetic (as `--conv`).
    host::nn::conv::ConvAlgo::set_from_env();
    step_bench(c, "alexnet-micro", alexnet_micro(99, 10).unwrap(), 32, 20, 10);
    step_bench(c, "alexnet", alexnet(227, 1000).unwrap(), 32, 10, 30);
}

criterion_group!(benches, train_step);
criterion_main!(benches);
