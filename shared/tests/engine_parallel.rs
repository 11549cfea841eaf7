//! `engine::run_with` splitting layers across threads gives the bytes of
//! `engine::run`, for any number of jobs (including more jobs than rows).

use shared::convert::{self, Ranges};
use shared::engine::{self, NoObserver, Parallel, ScopedThreads, SingleThread};
use shared::spec;
use suite::Rng;

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

#[test]
fn split_layers_give_the_same_bytes() {
    let spec = spec::alexnet_micro(67, 7).unwrap();
    let mut rng = Rng::new(7);
    let params = suite::random_params(&spec, &mut rng);
    let views = suite::views(&params);
    let image = rng.vec(spec.input().elements() as usize, -1.0, 1.0);
    let mut ranges = Ranges::new(&spec);
    suite::observe(&mut ranges, &spec, &views, &image).unwrap();
    let int8 = convert::quantize_int8(&spec, &views, &ranges).unwrap();
    let mut input = vec![0u8; image.len()];
    engine::quantize_input(&image, int8.input, &mut input).unwrap();
    check(&int8, &input);
    // f16: Conv2D split by rows and Dense by units, like int8.
    let f16 = convert::convert_f16(&spec, &views).unwrap();
    let mut input = vec![0u8; 2 * image.len()];
    engine::encode_f16_input(&image, &mut input).unwrap();
    check(&f16, &input);
}

fn check(model: &convert::OwnedModel, input: &[u8]) {
    let view = model.view();
    let prepared = engine::prepare(&view).unwrap();
    let mut arena = vec![0u8; prepared.plan().arena_bytes];
    let want = engine::run(&prepared, input, &mut arena, &mut NoObserver).unwrap().to_vec();
    let pars: [&dyn Parallel; 6] =
        [&SingleThread, &ScopedThreads(2), &ScopedThreads(3), &ScopedThreads(200), &Reversed(2), &Reversed(5)];
    for par in pars {
        arena.fill(0x5a);
        let got = engine::run_with(&prepared, input, &mut arena, &mut NoObserver, par).unwrap();
        assert_eq!(got, &want[..], "{:?}: {} jobs", model.precision, par.jobs());
    }
}
