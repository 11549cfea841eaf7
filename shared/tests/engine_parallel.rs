//! `engine::run_with` splitting layers across threads gives the bytes of
//! `engine::run`, for any number of jobs (including more jobs than rows).

mod common;

use common::TestRng;
use shared::build::{self, FloatLayer, Ranges};
use shared::engine::{self, NoObserver, Parallel, ScopedThreads, SingleThread};
use shared::spec::{self, Layer};

/// Jobs run in reverse order on one thread: scheduling must not matter.
struct Reversed(usize);

impl Parallel for Reversed {
    fn jobs(&self) -> usize {
        self.0
    }
    fn run(&self, jobs: usize, job: &(dyn Fn(usize) + Sync)) {
        (0..jobs).rev().for_each(job)
    }
}

/// One layer's float parameters: Conv2D/Dense use (weights, bias, -, -),
/// BatchNorm (gamma, beta, mean, var); other layers have none.
type LayerParams = (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>);

#[test]
fn split_layers_give_the_same_bytes() {
    let spec = spec::alexnet_micro(67, 7).unwrap();
    let mut rng = TestRng::new(7);
    let params: Vec<LayerParams> = spec
        .shapes()
        .map(|(_, layer, inp, out)| match *layer {
            Layer::Conv2D(c) => {
                let n = (c.kernel * c.kernel * inp.channels()) as usize;
                let a = (3.0 / n as f32).sqrt();
                (rng.vec(n * c.filters as usize, -a, a), rng.vec(c.filters as usize, -0.2, 0.2), vec![], vec![])
            }
            Layer::Dense { units, .. } => {
                let n = inp.elements() as usize;
                let a = (3.0 / n as f32).sqrt();
                (rng.vec(n * units as usize, -a, a), rng.vec(units as usize, -0.2, 0.2), vec![], vec![])
            }
            Layer::BatchNorm { .. } => {
                let c = out.channels() as usize;
                (rng.vec(c, -2.0, 2.0), rng.vec(c, -0.5, 0.5), rng.vec(c, -0.3, 0.3), rng.vec(c, 0.1, 2.0))
            }
            _ => (vec![], vec![], vec![], vec![]),
        })
        .collect();
    let views: Vec<FloatLayer<'_>> = spec
        .layers()
        .iter()
        .zip(&params)
        .map(|(l, (a, b, c, d))| match l {
            Layer::Conv2D(_) => FloatLayer::Conv2D { weights: a, bias: b },
            Layer::Dense { .. } => FloatLayer::Dense { weights: a, bias: b },
            Layer::BatchNorm { .. } => FloatLayer::BatchNorm { gamma: a, beta: b, mean: c, var: d },
            _ => FloatLayer::None,
        })
        .collect();
    let image = rng.vec(spec.input().elements() as usize, -1.0, 1.0);
    let mut ranges = Ranges::new(&spec);
    ranges.observe(&spec, &views, &image).unwrap();
    let model = build::quantize_int8(&spec, &views, &ranges).unwrap();
    let view = model.view();
    let mut input = vec![0u8; image.len()];
    engine::quantize_input(&image, model.input, &mut input).unwrap();
    let prepared = engine::prepare(&view).unwrap();
    let mut arena = vec![0u8; prepared.plan().arena_bytes];
    let want = engine::run(&prepared, &input, &mut arena, &mut NoObserver).unwrap().to_vec();
    let pars: [&dyn Parallel; 6] =
        [&SingleThread, &ScopedThreads(2), &ScopedThreads(3), &ScopedThreads(200), &Reversed(2), &Reversed(5)];
    for par in pars {
        arena.fill(0x5a);
        let got = engine::run_with(&prepared, &input, &mut arena, &mut NoObserver, par).unwrap();
        assert_eq!(got, &want[..], "{} jobs", par.jobs());
    }
}
