//! Where batch-1 int8 inference of the full AlexNet-227 spends its time, layer
//! by layer, on the engine's spinning helper threads as `host simulate` and
//! the `inference` bench's `alexnet227_int8_spin` run it: `cargo bench
//! --bench int8_profile [-- RUNS [unfused] [dense-rows] [avx2 [no-winograd]]]`
//! (default 50). Each layer's
//! figures are its fastest and median time over the runs, beside the whole
//! run's fastest; `roofline` gives the floors to hold them to. Like the
//! `inference` bench, the engine runs a Conv2D and a small
//! BatchNormalization after it as one layer (the pair's time shows on the
//! conv); `unfused` asks for every layer's own output, as `host simulate`
//! does, so each runs on its own. The dense layers after a ReLU read their
//! input-major copies, skipping zero inputs (`host_layouts::HostLayouts`, as the
//! host's commands do); `dense-rows` runs them from the model's rows. `avx2`
//! caps the kernels at AVX2 (`shared::kernels::x86::limit_isa`), as on a CPU
//! without AVX-512 (AMD Zen 3): its 3x3 and 5x5 convs then run through integer
//! Winograd, unless `no-winograd` keeps them direct.

use shared::convert::{self, Ranges};
use shared::engine::{self, Observer, Parallel};
use shared::spec::{self, Shape};
use std::time::{Duration, Instant};
use suite::Rng;

/// Each layer's start and its fastest time so far.
struct Timer {
    unfused: bool,
    started: Instant,
    fastest: Vec<(Duration, Shape)>,
    this_run: Vec<(Duration, Shape)>,
    all: Vec<Vec<Duration>>,
}

impl Observer for Timer {
    fn layer_start(&mut self, _index: usize) {
        self.started = Instant::now();
    }

    fn layer_done(&mut self, index: usize, shape: Shape, _output: &[u8]) {
        let took = self.started.elapsed();
        if self.this_run.len() <= index {
            self.this_run.resize(index + 1, (Duration::ZERO, shape));
        }
        self.this_run[index] = (took, shape);
    }
    /// Only times, unless asked for every layer on its own.
    fn sees_each_output(&self) -> bool {
        self.unfused
    }
}

fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find(|a| a.parse::<usize>().is_ok())
        .map(|a| a.parse().expect("RUNS: a count"))
        .unwrap_or(50);
    let arg = |name: &str| std::env::args().skip(1).any(|a| a == name);
    if arg("avx2") {
        shared::kernels::x86::limit_isa(shared::kernels::x86::Isa::Avx2);
    }
    let spec = spec::alexnet(227, 1000).expect("alexnet spec");
    let mut rng = Rng::new(0x9E37_79B9_7F4A_7C15);
    let params = suite::random_params(&spec, &mut rng);
    let image = rng.vec(spec.input().elements() as usize, -1.0, 1.0);
    let views = suite::views(&params);
    let mut ranges = Ranges::new(&spec);
    suite::observe(&mut ranges, &spec, &views, &image).expect("calibrate");
    let model = convert::quantize_int8(&spec, &views, &ranges).expect("quantize");
    let view = model.view();
    let mut layouts = shared::host_layouts::HostLayouts::default();
    let prepared = if arg("dense-rows") {
        engine::prepare(&view).expect("prepare")
    } else if arg("no-winograd") {
        let mut prepared = engine::prepare(&view).expect("prepare");
        layouts.input_major = shared::host_layouts::InputMajorCopies::new(&prepared);
        layouts.lend(&mut prepared).expect("lend");
        prepared
    } else {
        host::simulate::prepare(&view, &mut layouts).expect("prepare")
    };
    let pool = host::engine_threads::SpinPool::global();
    let mut arena = vec![0u8; prepared.host_arena_bytes(pool.jobs())];
    let mut input = vec![0u8; image.len()];
    engine::quantize_input(&image, model.input, &mut input).expect("input");
    let unfused = std::env::args().skip(1).any(|a| a == "unfused");
    let mut timer =
        Timer { unfused, started: Instant::now(), fastest: Vec::new(), this_run: Vec::new(), all: Vec::new() };
    let mut whole = Duration::MAX;
    for _ in 0..runs {
        let t = Instant::now();
        engine::run_with(&prepared, &input, &mut arena, &mut timer, pool).expect("run");
        whole = whole.min(t.elapsed());
        if timer.fastest.is_empty() {
            timer.fastest = timer.this_run.clone();
        }
        for (f, r) in timer.fastest.iter_mut().zip(&timer.this_run) {
            f.0 = f.0.min(r.0);
        }
        timer.all.resize(timer.this_run.len(), Vec::new());
        for (a, r) in timer.all.iter_mut().zip(&timer.this_run) {
            a.push(r.0);
        }
    }
    println!(
        "int8 AlexNet-227, batch 1, {} threads, fastest of {runs} runs per layer:",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let median = |v: &[Duration]| {
        let mut v = v.to_vec();
        v.sort();
        v[v.len() / 2]
    };
    for (i, ((d, shape), all)) in timer.fastest.iter().zip(&timer.all).enumerate() {
        println!(
            "  layer {i:>2} -> {shape:?}: fastest {:.3} ms, median {:.3} ms",
            d.as_secs_f64() * 1e3,
            median(all).as_secs_f64() * 1e3
        );
    }
    let medians: Duration = timer.all.iter().map(|a| median(a)).sum();
    println!("  sum of the layers' medians {:.3} ms", medians.as_secs_f64() * 1e3);
    let sum: Duration = timer.fastest.iter().map(|f| f.0).sum();
    println!(
        "  sum of the layers' fastest {:.3} ms; the fastest whole run {:.3} ms",
        sum.as_secs_f64() * 1e3,
        whole.as_secs_f64() * 1e3
    );
}
