//! Banded runs (`band::run_banded`, `run_banded_rows`) give every layer's
//! bytes of the whole-tensor engine (`engine::run`): the banded layers'
//! rows, assembled in order, and every other layer's output; for int8 and
//! f16, resident and streamed input, over random stacks of conv → [BN] →
//! pool groups (paddings, strides, pool windows, odd sizes). The arena
//! figures of the presets are held to the targets.

use shared::band::{self, InputRows};
use shared::convert::{self, OwnedModel, Ranges};
use shared::engine::{self, Observer};
use shared::model::{LayerData, Precision, QuantModel, TensorQuant};
use shared::spec::{self, Activation, Conv2D, ModelSpec, Sequential, Shape, MAX_LAYERS};
use suite::Rng;

/// Every layer's output bytes: from `layer_done`, or assembled from `layer_rows`.
#[derive(Default)]
struct Layers {
    /// Bytes per activation (1 or 2).
    bytes: usize,
    rows: Vec<Vec<u8>>,
    done: Vec<(usize, Vec<u8>)>,
    next_row: Vec<usize>,
}

impl Observer for Layers {
    fn layer_rows(&mut self, index: usize, shape: Shape, first_row: usize, rows: &[u8]) {
        if self.rows.len() <= index {
            self.rows.resize(index + 1, Vec::new());
            self.next_row.resize(index + 1, 0);
        }
        assert_eq!(
            first_row,
            self.next_row[index],
            "layer {index}: rows out of order ({} bytes, {shape:?})",
            rows.len()
        );
        let Shape::Image { w, c, .. } = shape else { panic!("rows of a flat layer") };
        let row = rows.len() / (w as usize * c as usize * self.bytes);
        self.next_row[index] += row;
        self.rows[index].extend_from_slice(rows);
    }
    fn layer_done(&mut self, index: usize, _shape: Shape, output: &[u8]) {
        let bytes = if output.is_empty() { self.rows.get(index).cloned().unwrap_or_default() } else { output.to_vec() };
        self.done.push((index, bytes));
    }
}

fn model(spec: &ModelSpec, f16: bool, rng: &mut Rng) -> (OwnedModel, Vec<u8>) {
    let params = suite::random_params(spec, rng);
    let views = suite::views(&params);
    let x = rng.vec(spec.input().elements() as usize, -1.0, 1.0);
    let model = if f16 {
        convert::convert_f16(spec, &views).unwrap()
    } else {
        let mut ranges = Ranges::new(spec);
        suite::observe(&mut ranges, spec, &views, &x).unwrap();
        convert::quantize_int8(spec, &views, &ranges).unwrap()
    };
    let mut input = vec![0u8; x.len() * model.precision.activation_bytes()];
    match model.precision {
        Precision::Int8 => engine::quantize_input(&x, model.input, &mut input).unwrap(),
        Precision::F16 => engine::encode_f16_input(&x, &mut input).unwrap(),
    }
    (model, input)
}

/// Banded (resident and streamed) against whole-tensor, every layer; returns the two banded arenas.
fn check(model: &OwnedModel, input: &[u8], name: &str) -> (usize, usize) {
    let view = model.view();
    let prepared = engine::prepare(&view).unwrap();
    let mut arena = vec![0u8; prepared.plan().arena_bytes];
    let bytes = model.precision.activation_bytes();
    let mut want = Layers { bytes, ..Layers::default() };
    let out = engine::run(&prepared, input, &mut arena, &mut want).unwrap().to_vec();
    let mut arenas = [0; 2];
    for (k, mode) in [InputRows::Resident, InputRows::Streamed].into_iter().enumerate() {
        let banded = band::prepare_banded(&view, mode).unwrap();
        let plan = banded.plan();
        assert!(plan.arena_bytes <= plan.whole_tensor_bytes, "{name}: {plan:?}");
        arenas[k] = plan.arena_bytes;
        // Garbage in the arena must not matter; one byte more must not either.
        let mut arena = vec![0xa5u8; plan.arena_bytes + k];
        let mut got = Layers { bytes, ..Layers::default() };
        let mut asked = 0;
        let res = band::run_banded_rows(
            &banded,
            &mut |first, rows: &mut [u8]| {
                let n = rows.len();
                let row = input.len() / spec_rows(&view.spec);
                assert!(first * row >= asked, "{name}: input rows asked for twice or out of order");
                asked = first * row + n;
                rows.copy_from_slice(&input[first * row..first * row + n]);
                Ok(())
            },
            &mut arena,
            &mut got,
        )
        .unwrap()
        .to_vec();
        assert_eq!(res, out, "{name} {mode:?}: output");
        if plan.input == InputRows::Streamed {
            assert!(band::run_banded_in_place(&banded, &mut arena, &mut engine::NoObserver).is_err());
        }
        assert_eq!(got.done.len(), want.done.len(), "{name} {mode:?}");
        for ((i, a), (j, b)) in got.done.iter().zip(&want.done) {
            assert_eq!(i, j, "{name} {mode:?}: layer order");
            assert!(a == b, "{name} {mode:?}: layer {i} bytes differ");
        }
        // The resident entry point gives the same bytes.
        if mode == InputRows::Resident {
            let again = band::run_banded(&banded, input, &mut arena, &mut engine::NoObserver).unwrap();
            assert_eq!(again, &out[..], "{name}");
            // And the in-place one (input written to its slot first, as the firmware does).
            arena.fill(0x3c);
            band::input_slot(&banded, &mut arena).unwrap().copy_from_slice(input);
            let in_place = band::run_banded_in_place(&banded, &mut arena, &mut engine::NoObserver).unwrap();
            assert_eq!(in_place, &out[..], "{name}: in place");
        }
    }
    (arenas[0], arenas[1])
}

fn spec_rows(spec: &ModelSpec) -> usize {
    match spec.input() {
        Shape::Image { h, .. } => h as usize,
        Shape::Flat(_) => 1,
    }
}

#[test]
fn banded_runs_give_the_whole_tensor_bytes_on_random_stacks() {
    let mut rng = Rng::new(12);
    let mut banded_layers = 0;
    for case in 0..40 {
        let h = 6 + (rng.next_u64() % 20) as u32;
        let w = 5 + (rng.next_u64() % 14) as u32;
        let c = 1 + (rng.next_u64() % 6) as u32;
        let pick = |rng: &mut Rng, n: u64| (rng.next_u64() % n) as u32;
        let mut s = Sequential::new(Shape::image(h, w, c));
        for _ in 0..1 + pick(&mut rng, 2) {
            let k = 1 + pick(&mut rng, 5);
            let mut conv = Conv2D::new(1 + pick(&mut rng, 9), k).strides(1 + pick(&mut rng, 3));
            if pick(&mut rng, 2) == 0 {
                conv = conv.same();
            }
            if pick(&mut rng, 3) > 0 {
                conv = conv.relu();
            }
            s = s.conv2d(conv);
            if pick(&mut rng, 3) > 0 {
                s = s.batch_norm();
            }
            let pool = 1 + pick(&mut rng, 3);
            s = s.max_pool(pool, 1 + pick(&mut rng, pool as u64));
        }
        let Ok(spec) = s.flatten().dense(3, Activation::Softmax).build() else { continue };
        let f16 = case % 4 == 3;
        let (m, input) = model(&spec, f16, &mut rng);
        let plan = band::plan_banded(&m.view(), InputRows::Resident);
        banded_layers += (0..spec.layers().len()).filter(|&i| plan.is_banded(i)).count();
        check(&m, &input, &format!("case {case}: {spec:?}"));
    }
    assert!(banded_layers > 30, "too few banded layers exercised: {banded_layers}");
}

/// A graph (a residual block, a concatenation) runs through the banded entry
/// points on the whole-tensor plan, stage by stage, with the same bytes.
#[test]
fn graphs_run_through_the_banded_entry_points_with_the_whole_tensor_bytes() {
    use shared::spec::{Inputs, Layer};
    let st = |i: usize| Inputs::stack(i);
    let layers = [
        Layer::Conv2D(Conv2D::new(4, 3).same().relu()),
        Layer::Conv2D(Conv2D::new(4, 3).same()),
        Layer::BatchNorm { epsilon: 1e-3, momentum: 0.99 },
        Layer::Add { activation: Activation::Relu },
        Layer::Concat,
        Layer::MaxPool2D { pool: 2, stride: 2 },
        Layer::Flatten,
        Layer::Dense { units: 3, activation: Activation::Softmax },
    ];
    let inputs = [
        st(0),
        st(1),
        st(2),
        Inputs { main: 3, other: Some(1) },
        Inputs { main: 4, other: Some(0) },
        st(5),
        st(6),
        st(7),
    ];
    let spec = ModelSpec::graph(Shape::image(9, 7, 2), &layers, &inputs).unwrap();
    let mut rng = Rng::new(5);
    for f16 in [false, true] {
        let (m, input) = model(&spec, f16, &mut rng);
        let (resident, streamed) = check(&m, &input, &format!("graph f16={f16}"));
        let whole = engine::plan(&m.view()).arena_bytes;
        assert_eq!((resident, streamed), (whole, whole));
    }
}

/// The presets: the bytes, and the arena targets (alexnet-micro at
/// most 36 KiB with the input resident and 16 KiB streamed; the full
/// AlexNet's plan at most 256 KiB resident).
#[test]
fn presets_run_banded_with_the_whole_tensor_bytes_in_the_target_arenas() {
    let mut rng = Rng::new(13);
    let micro = spec::alexnet_micro(spec::ALEXNET_MICRO_INPUT, 6).unwrap();
    let (m, input) = model(&micro, false, &mut rng);
    let (resident, streamed) = check(&m, &input, "alexnet-micro int8");
    // The activations meet the targets; the DSP conv's scratch (10,371 bytes,
    // once on the stack) sits behind them in every plan.
    let whole = engine::plan(&m.view());
    assert_eq!(whole.scratch_bytes, 10_371);
    assert_eq!(whole.arena_bytes - whole.scratch_bytes, 42_099);
    assert!(resident - whole.scratch_bytes <= 36 * 1024, "{resident}");
    assert!(streamed - whole.scratch_bytes <= 16 * 1024, "{streamed}");
    let (m, input) = model(&micro, true, &mut rng);
    check(&m, &input, "alexnet-micro f16");

    // The full AlexNet's plan depends only on its stack: no weights needed.
    let full = spec::alexnet(spec::ALEXNET_INPUT, 1000).unwrap();
    let q = TensorQuant { scale: 1.0, zero_point: 0 };
    let view = QuantModel {
        spec: full,
        precision: Precision::Int8,
        input: q,
        layers: [LayerData::plain(q); MAX_LAYERS],
        labels: "",
        preprocess: None,
    };
    let plan = band::plan_banded(&view, InputRows::Resident);
    assert_eq!(plan.whole_tensor_bytes - plan.scratch_bytes, 444_987);
    assert!(plan.arena_bytes - plan.scratch_bytes <= 256 * 1024, "{plan:?}");
    // The DSP conv's scratch: conv2's 5 x 5 x 96 filter in passes of 896
    // taps (10,752 bytes of widened patches) and the 64 channels' accumulators
    // between its passes (1,536), word-aligned (+3).
    assert_eq!(plan.scratch_bytes, 12_291);
}
