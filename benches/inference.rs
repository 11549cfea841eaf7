//! Batch-1 inference latency of the full 227x227 AlexNet (random weights).
//!
//! `cargo bench --bench inference` (add `-- int8`, `-- f16` or `-- f32` to pick
//! groups). Models are built once, outside the timed loops. The groups, all in
//! one run so that their ratios can be compared:
//! - `alexnet227_int8`, `alexnet227_int8_2threads`, `alexnet227_f16`: the
//!   `shared::engine` (the firmware's code) on the host CPU;
//! - `alexnet227_f32_host`: the host's float `host::nn::Network` in eval mode
//!   (rayon's default thread count);
//! - `alexnet227_f32_tract`: tract-core's float graph of the same network
//!   (`host::reference::TractReference`).
//!
//! The engine groups use the fixture's random weights; the two f32 groups share
//! `Network::new`'s Glorot initialisation with trained-like BatchNormalization
//! state (`support/trained_bn.rs`). Latency depends on the values in one way
//! only: the dense layers skip the weight rows of zero inputs (after a ReLU).

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use host::nn::{Mode, Network};
use host::reference::ndarray::Array4;
use host::reference::TractReference;
use shared::convert::{self, FloatLayer, OwnedLayer, OwnedModel, Ranges};
use shared::engine::{self, NoObserver, Parallel, ScopedThreads, SingleThread};
use shared::spec::{self, ModelSpec};
use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;
use suite::Rng;

#[path = "support/trained_bn.rs"]
mod trained_bn;

/// The full AlexNet, its He-like random float parameters and one input image.
struct Fixture {
    spec: ModelSpec,
    params: Vec<OwnedLayer>,
    image: Vec<f32>,
}

impl Fixture {
    fn new() -> Self {
        let spec = spec::alexnet(227, 1000).expect("alexnet spec");
        let mut rng = Rng::new(0x9E37_79B9_7F4A_7C15);
        let params = suite::random_params(&spec, &mut rng);
        let image = rng.vec(spec.input().elements() as usize, -1.0, 1.0);
        Fixture { spec, params, image }
    }

    fn views(&self) -> Vec<FloatLayer<'_>> {
        suite::views(&self.params)
    }

    /// int8 model calibrated on the one image (one float forward pass).
    fn int8(&self) -> OwnedModel {
        let v = self.views();
        let mut ranges = Ranges::new(&self.spec);
        suite::observe(&mut ranges, &self.spec, &v, &self.image).expect("calibrate");
        convert::quantize_int8(&self.spec, &v, &ranges).expect("quantize")
    }

    fn f16(&self) -> OwnedModel {
        convert::convert_f16(&self.spec, &self.views()).expect("convert")
    }
}

/// A group with the small sample every group here uses: one batch-1 AlexNet
/// inference takes tens to hundreds of ms, and the whole bench has to fit in a
/// few minutes on a shared machine.
fn group<'c>(c: &'c mut Criterion, name: &str) -> BenchmarkGroup<'c, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    g
}

/// Time `engine::run` on `model`, prepared once, with a plan-sized arena
/// built outside the loop.
fn bench_engine(c: &mut Criterion, name: &str, model: &OwnedModel, input: &[u8], par: &dyn Parallel) {
    let view = model.view();
    // As the host's commands prepare it: dense layers after a ReLU skip zero
    // inputs; on AVX2 cores without VNNI, the 3x3 and 5x5 convs run through Winograd.
    let mut layouts = shared::host_layouts::HostLayouts::default();
    let prepared = host::simulate::prepare(&view, &mut layouts).expect("prepare");
    let mut arena = vec![0u8; prepared.host_arena_bytes(par.jobs())];
    let mut g = group(c, name);
    g.bench_function("engine", |b| {
        b.iter(|| {
            let out = engine::run_with(&prepared, black_box(input), &mut arena, &mut NoObserver, par).expect("run");
            black_box(out[0]);
        })
    });
    g.finish();
}

fn int8(c: &mut Criterion) {
    let fx = Fixture::new();
    let model = fx.int8();
    let mut input = vec![0u8; fx.image.len()];
    engine::quantize_input(&fx.image, model.input, &mut input).expect("input");
    bench_engine(c, "alexnet227_int8", &model, &input, &SingleThread);
    // The latency setting: 2 threads (int8 Conv2D/Dense split by rows/units).
    bench_engine(c, "alexnet227_int8_2threads", &model, &input, &ScopedThreads(2));
    // The same split on rayon's existing pool: no thread spawn per layer, but idle threads sleep.
    bench_engine(c, "alexnet227_int8_rayon", &model, &input, &host::engine_threads::RayonPool);
    // On spinning helpers (what `host simulate` uses).
    bench_engine(c, "alexnet227_int8_spin", &model, &input, host::engine_threads::SpinPool::global());
}

fn f16(c: &mut Criterion) {
    let fx = Fixture::new();
    let model = fx.f16();
    let mut input = vec![0u8; 2 * fx.image.len()];
    engine::encode_f16_input(&fx.image, &mut input).expect("input");
    bench_engine(c, "alexnet227_f16", &model, &input, &SingleThread);
    // Conv2D split by rows and Dense by units on rayon's pool, as int8's.
    bench_engine(c, "alexnet227_f16_rayon", &model, &input, &host::engine_threads::RayonPool);
    bench_engine(c, "alexnet227_f16_spin", &model, &input, host::engine_threads::SpinPool::global());
}

/// The float executors on the host: `host::nn` (as `eval`/`predict` run it) and
/// tract-core (the independent reference) with the same weights, on the engine
/// groups' image.
fn f32(c: &mut Criterion) {
    // `HOST_CONV=direct|winograd|auto`: the 3x3 convolutions' arithmetic (as `--conv`).
    host::nn::conv::ConvAlgo::set_from_env();
    let spec = spec::alexnet(227, 1000).expect("alexnet spec");
    let image = Fixture::new().image;
    let mut net = Network::new(&spec, 42);
    trained_bn::trained_batchnorm(&mut net, 42);
    let tensors: HashMap<_, _> = net.tensors().into_iter().collect();
    let tract = TractReference::new(&spec, &tensors, 1).expect("tract graph builds");
    drop(tensors);
    let x = Array4::from_shape_vec(tract.input_shape(), image).expect("image is one NHWC input");

    let mut g = group(c, "alexnet227_f32_host");
    g.bench_function("nn", |b| {
        b.iter(|| {
            let logits = net.forward(black_box(x.view()), Mode::Eval);
            black_box(logits[[0, 0]]);
        })
    });
    g.finish();

    let mut g = group(c, "alexnet227_f32_tract");
    g.bench_function("tract", |b| {
        b.iter(|| {
            let logits = tract.run(black_box(x.view())).expect("tract runs");
            black_box(logits[[0, 0]]);
        })
    });
    g.finish();
}

criterion_group!(benches, int8, f16, f32);
criterion_main!(benches);
