//! Where a full-AlexNet training step's time goes, layer by layer: forward,
//! backward, the loss and the optimizer, summed over a few steps after a
//! warm-up. `cargo bench --bench train_profile -- 32 5` (batch, steps).
//! With `eval`, the inference forward instead (`Mode::Eval`, what `predict`
//! and the `alexnet227_f32_host` latency bench run): `-- 1 50 eval` gives the
//! batch-1 latency layer by layer, the minimum over the steps as well as the
//! mean, since a shared machine's noise only ever adds time. Its
//! BatchNormalizations get trained-like statistics (`support/trained_bn.rs`).
//! With `avx2`, the kernels are capped at AVX2 (`shared::kernels::x86::limit_isa`),
//! float and int8 alike, as on a CPU without AVX-512 (an AMD Zen 3); the
//! `gemm` crate, which serves a few products, keeps its own choice.
//! For hot functions inside a layer, build it with `--profile profiling`
//! (release code with debug info) and run it under `perf record -g`.
use host::nn::{softmax_cross_entropy, ChaCha8Rng, Mode, Network};
use host::optim::{Optimizer, OptimizerKind};
use ndarray::Array4;
use rand::SeedableRng;
use std::time::Instant;

#[path = "support/trained_bn.rs"]
mod trained_bn;

fn main() {
    // `cargo bench` passes `--bench`; the numbers given are batch and steps.
    let nums: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let (batch, steps) = (nums.first().copied().unwrap_or(32), nums.get(1).copied().unwrap_or(5));
    if std::env::args().any(|a| a == "avx2") {
        shared::kernels::x86::limit_isa(shared::kernels::x86::Isa::Avx2);
    }
    // `HOST_CONV=direct|winograd|winograd-4x4|auto`, as `--conv` (auto measures in the warm-up).
    host::nn::conv::ConvAlgo::set_from_env();
    let spec = shared::spec::alexnet(227, 1000).expect("alexnet");
    let mut net = Network::new(&spec, 0);
    if std::env::args().any(|a| a == "eval") {
        trained_bn::trained_batchnorm(&mut net, 1);
        return eval_profile(&mut net, batch, steps.max(1));
    }
    let mut opt = Optimizer::new(OptimizerKind::adam());
    let x = Array4::from_shape_fn((batch, 227, 227, 3), |(n, y, x, c)| ((n + y * 3 + x * 5 + c) % 256) as f32 / 255.0);
    let labels: Vec<usize> = (0..batch).map(|i| (i * 37) % 1000).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let (mut loss_s, mut opt_s, mut total_s) = (0.0, 0.0, 0.0);
    for step in 0..=steps {
        // Step 0 warms up (allocations, page faults) and is not counted.
        if step == 1 {
            net.set_profiling(true);
        }
        let t0 = Instant::now();
        let logits = net.forward(x.view(), Mode::Train(&mut rng));
        let t1 = Instant::now();
        let (_, g, _) = softmax_cross_entropy(logits.view(), &labels);
        let t2 = Instant::now();
        net.backward(g.view());
        let t3 = Instant::now();
        opt.step(&mut net);
        let t4 = Instant::now();
        if step > 0 {
            loss_s += (t2 - t1).as_secs_f64();
            opt_s += (t4 - t3).as_secs_f64();
            total_s += (t4 - t0).as_secs_f64();
        }
    }
    let per = |s: f64| 1000.0 * s / steps as f64;
    println!(
        "full AlexNet, batch {batch}, {steps} steps after one warm-up: {:.0} ms per step, {:.1} img/s",
        per(total_s),
        (batch * steps) as f64 / total_s
    );
    println!("{:<28} {:>12} {:>12} {:>7}", "layer", "forward ms", "backward ms", "share");
    let profile = net.profile().unwrap_or_default();
    for (name, f, b) in &profile {
        println!("{name:<28} {:>12.1} {:>12.1} {:>6.1}%", per(*f), per(*b), 100.0 * (f + b) / total_s);
    }
    let (f, b): (f64, f64) = profile.iter().fold((0.0, 0.0), |(a, c), (_, f, b)| (a + f, c + b));
    println!("{:<28} {:>12.1} {:>12.1} {:>6.1}%", "all layers", per(f), per(b), 100.0 * (f + b) / total_s);
    println!("{:<28} {:>12.1} {:>12} {:>6.1}%", "softmax cross-entropy", per(loss_s), "", 100.0 * loss_s / total_s);
    println!("{:<28} {:>12.1} {:>12} {:>6.1}%", "Adam step", per(opt_s), "", 100.0 * opt_s / total_s);
}

/// Inference forwards only: per layer, the mean and the minimum over `steps`
/// forwards after one warm-up, and the whole forward's mean and minimum.
fn eval_profile(net: &mut Network, batch: usize, steps: usize) {
    let x = Array4::from_shape_fn((batch, 227, 227, 3), |(n, y, x, c)| ((n + y * 3 + x * 5 + c) % 256) as f32 / 255.0);
    net.forward(x.view(), Mode::Eval);
    // Under `HOST_CONV=auto`, what the warm-up timed and took.
    for n in host::nn::tune::network_choices() {
        println!("auto: {n}");
    }
    for c in host::nn::conv::auto_choices() {
        println!("auto: {c}");
    }
    let mut per_layer: Vec<(String, f64, f64)> = Vec::new();
    let (mut total, mut best) = (0.0, f64::INFINITY);
    for _ in 0..steps {
        net.set_profiling(true);
        let t0 = Instant::now();
        std::hint::black_box(net.forward(x.view(), Mode::Eval));
        let s = t0.elapsed().as_secs_f64();
        total += s;
        best = best.min(s);
        let p = net.profile().unwrap_or_default();
        if per_layer.is_empty() {
            per_layer = p.iter().map(|(n, _, _)| (n.clone(), 0.0, f64::INFINITY)).collect();
        }
        for (acc, (_, f, _)) in per_layer.iter_mut().zip(&p) {
            acc.1 += f;
            acc.2 = acc.2.min(*f);
        }
    }
    let ms = |s: f64| 1000.0 * s;
    println!(
        "full AlexNet eval forward, batch {batch}, {steps} forwards after one warm-up: mean {:.2} ms, min {:.2} ms",
        ms(total / steps as f64),
        ms(best)
    );
    println!("{:<28} {:>10} {:>10}", "layer", "mean ms", "min ms");
    let (mut sum_mean, mut sum_min) = (0.0, 0.0);
    for (name, f, m) in &per_layer {
        println!("{name:<28} {:>10.3} {:>10.3}", ms(f / steps as f64), ms(*m));
        sum_mean += f / steps as f64;
        sum_min += m;
    }
    println!("{:<28} {:>10.3} {:>10.3}", "all layers", ms(sum_mean), ms(sum_min));
}
