//! The host's thread pools for the engine's split layers give the bytes of
//! one thread: the spinning helpers (what `host simulate` uses), over runs
//! spaced so that the helpers park between some of them, and rayon's pool.

use host::engine_threads::{RayonPool, SpinPool};
use shared::convert::OwnedModel;
use shared::engine::{self, NoObserver, Parallel};
use shared::host_layouts;
use shared::spec;

/// alexnet-micro at 67x67 with random parameters: its int8 model (calibrated
/// on the four random images), its f16 model, and the images.
fn micro(seed: u64) -> (OwnedModel, OwnedModel, Vec<Vec<f32>>) {
    let m = suite::random_models(&spec::alexnet_micro(67, 7).unwrap(), seed);
    (m.int8, m.f16, m.images)
}

#[test]
fn host_pools_give_the_single_thread_bytes() {
    let (int8, f16, images) = micro(11);
    let three = SpinPool::new(3);
    let pools: [&dyn Parallel; 3] = [SpinPool::global(), &three, &RayonPool];
    for model in [&int8, &f16] {
        let view = model.view();
        let prepared = engine::prepare(&view).unwrap();
        let mut arena = vec![0u8; prepared.plan().arena_bytes];
        for (k, image) in images.iter().enumerate() {
            let mut input = vec![0u8; image.len() * model.precision.activation_bytes()];
            match model.precision {
                shared::model::Precision::Int8 => engine::quantize_input(image, model.input, &mut input).unwrap(),
                shared::model::Precision::F16 => engine::encode_f16_input(image, &mut input).unwrap(),
            }
            let want = engine::run(&prepared, &input, &mut arena, &mut NoObserver).unwrap().to_vec();
            for (p, par) in pools.iter().enumerate() {
                for run in 0..3 {
                    arena.fill(0x5a);
                    let got = engine::run_with(&prepared, &input, &mut arena, &mut NoObserver, *par).unwrap();
                    assert_eq!(got, &want[..], "{:?} image {k}, pool {p}, run {run}", model.precision);
                }
            }
            // Long enough for the spinning helpers to park before the next image.
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
}

/// The dense layers after a ReLU, run from their input-major copies (rows of
/// zero-point inputs skipped, as the host's commands run them), and the
/// first, after a BatchNormalization of a ReLU (rows of inputs at their
/// channel's image of the ReLU's zero skipped), give every layer's bytes of
/// the model's own rows: one thread and the helpers, over images whose
/// dense inputs are part dead.
#[test]
fn input_major_dense_gives_the_row_bytes() {
    let (int8, _, images) = micro(12);
    let view = int8.view();
    let rows = engine::prepare(&view).unwrap();
    let copies = host_layouts::InputMajorCopies::new(&rows);
    let mut copied = engine::prepare(&view).unwrap();
    copied.with_input_major(&copies).unwrap();
    let lent =
        (0..int8.spec.layers().len()).filter(|&i| !engine::InputMajorWeights::layer(&copies, i).is_empty()).count();
    let own = (0..int8.spec.layers().len()).filter(|&i| engine::InputMajorWeights::dead(&copies, i).is_some()).count();
    if shared::kernels::int8::can_skip_dense_inputs(-128) {
        assert!(lent >= 3, "the dense layers after a ReLU or its BatchNormalization get copies ({lent})");
        assert_eq!(own, 1, "the first dense layer's inputs are dead at their BatchNormalization's values");
    }
    for (k, image) in images.iter().enumerate() {
        let mut input = vec![0u8; image.len()];
        engine::quantize_input(image, int8.input, &mut input).unwrap();
        let want = host::simulate::simulate_prepared(&rows, &input, true).unwrap();
        let got = host::simulate::simulate_prepared(&copied, &input, true).unwrap();
        let hashes = |r: &host::simulate::SimRun| r.layers.iter().map(|l| l.hash).collect::<Vec<_>>();
        assert_eq!(hashes(&got), hashes(&want), "image {k}: layer hashes");
        assert_eq!(got.output, want.output, "image {k}");
        let mut arena = vec![0u8; copied.plan().arena_bytes];
        let one = engine::run(&copied, &input, &mut arena, &mut NoObserver).unwrap().to_vec();
        assert_eq!(one, want.output, "image {k}: one thread, layers fused");
    }
}

/// The int8 convs run on the filter sums and packings the host builds once
/// per model ([`host_layouts::PixelFilterCopies`]) give every layer's bytes of the
/// calls that build their own: one thread, layers fused, and the helpers.
/// Parts of the wrong length are refused.
#[test]
fn lent_pixel_filters_give_the_built_bytes() {
    let (int8, _, images) = micro(13);
    let view = int8.view();
    let built = engine::prepare(&view).unwrap();
    let copies = host_layouts::PixelFilterCopies::new(&built);
    let mut lent = engine::prepare(&view).unwrap();
    lent.with_pixel_filters(&copies).unwrap();
    let convs = (0..int8.spec.layers().len())
        .filter(|&i| !engine::PixelFilterLayouts::layer(&copies, i).is_empty())
        .collect::<Vec<_>>();
    #[cfg(target_arch = "x86_64")]
    if shared::kernels::x86::has_vnni() {
        // Every conv's sums; conv1's filters packed for the broadcast kernel too.
        assert_eq!(convs.len(), 5, "every conv gets its filters' sums");
        assert!(!engine::PixelFilterLayouts::layer(&copies, convs[0]).packed.is_empty(), "conv1 is packed");
    }
    let pool = SpinPool::new(2);
    for (k, image) in images.iter().enumerate() {
        let mut input = vec![0u8; image.len()];
        engine::quantize_input(image, int8.input, &mut input).unwrap();
        let want = host::simulate::simulate_prepared(&built, &input, true).unwrap();
        let got = host::simulate::simulate_prepared(&lent, &input, true).unwrap();
        let hashes = |r: &host::simulate::SimRun| r.layers.iter().map(|l| l.hash).collect::<Vec<_>>();
        assert_eq!(hashes(&got), hashes(&want), "image {k}: layer hashes");
        let mut arena = vec![0u8; lent.plan().arena_bytes];
        let one = engine::run(&lent, &input, &mut arena, &mut NoObserver).unwrap().to_vec();
        assert_eq!(one, want.output, "image {k}: one thread, layers fused");
        let two = engine::run_with(&lent, &input, &mut arena, &mut NoObserver, &pool).unwrap();
        assert_eq!(two, &want.output[..], "image {k}: two threads, layers fused");
    }
    // A part one element short, and parts lent to a layer that is not a conv.
    #[derive(Debug)]
    struct Short(Vec<(Vec<i32>, Vec<i8>, Vec<i16>)>);
    impl engine::PixelFilterLayouts for Short {
        fn layer(&self, i: usize) -> shared::kernels::int8::PixelFilters<'_> {
            self.0.get(i).map_or_else(Default::default, |(sums, packed, widened)| shared::kernels::int8::PixelFilters {
                sums,
                packed,
                widened,
            })
        }
    }
    let layers = int8.spec.layers().len();
    if let Some(&conv) = convs.first() {
        let parts = engine::PixelFilterLayouts::layer(&copies, conv);
        let mut short = Short(vec![Default::default(); layers]);
        let (mut sums, mut packed, mut widened) = (parts.sums.to_vec(), parts.packed.to_vec(), parts.widened.to_vec());
        if !sums.is_empty() {
            sums.pop();
        } else if !packed.is_empty() {
            packed.pop();
        } else {
            widened.pop();
        }
        short.0[conv] = (sums, packed, widened);
        assert!(engine::prepare(&view).unwrap().with_pixel_filters(&short).is_err(), "a short part");
        let mut misplaced = Short(vec![Default::default(); layers]);
        misplaced.0[layers - 1] = (vec![0; 16], Vec::new(), Vec::new());
        assert!(
            engine::prepare(&view).unwrap().with_pixel_filters(&misplaced).is_err(),
            "parts for the last (dense) layer"
        );
    }
}
