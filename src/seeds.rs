//! The seed corpus of the `parse` fuzz target (`fuzz/seeds/parse/`): small
//! valid model files, every layer kind, int8 and f16, a few hundred bytes to
//! about 1 kB each, so that libFuzzer starts past the header checks and mutates
//! layer tables, quantization fields and sections at full speed (the golden
//! models are 400-800 kB each: about 145 executions a second).
//!
//! Regenerate with `UPDATE_FUZZ_SEEDS=1 cargo test -p shared --test fuzz_seeds`;
//! without the variable that test checks the checked-in files are current.

use shared::convert::{self, Ranges};
use shared::format;
use shared::spec::{Activation, Conv2D, ModelSpec, Sequential, Shape};

use crate::{observe, random_params, views, Rng};

/// Where the seeds live, relative to the workspace root.
pub const FUZZ_SEEDS_DIR: &str = "fuzz/seeds/parse";

/// The tiny stacks, with their labels: between them every layer kind, both
/// paddings, strides, every activation where it may stand, image and flat inputs.
fn stacks() -> Vec<(&'static str, ModelSpec, &'static str)> {
    let s = |b: Sequential| b.build().expect("a valid seed stack");
    vec![
        (
            "conv",
            s(Sequential::new(Shape::image(6, 6, 2))
                .conv2d(Conv2D::new(3, 3).relu())
                .batch_norm()
                .max_pool(2, 2)
                .flatten()
                .dense(3, Activation::Softmax)),
            "cat\ndog\nbird",
        ),
        (
            "same",
            s(Sequential::new(Shape::image(5, 5, 1))
                .conv2d(Conv2D::new(2, 3).strides(2).same())
                .dropout(0.25)
                .max_pool(2, 1)
                .flatten()
                .dense(4, Activation::Relu)
                .batch_norm()
                .dense(2, Activation::None)),
            "",
        ),
        (
            "flat",
            s(Sequential::new(Shape::Flat(5))
                .dense(4, Activation::Relu)
                .dropout(0.5)
                .batch_norm()
                .dense(3, Activation::Softmax)),
            "x\ny\nz",
        ),
        ("flatten", s(Sequential::new(Shape::image(2, 2, 1)).flatten()), ""),
        ("graph", graph(), "a\nb"),
    ]
}

/// The format version 3 layers in one small graph: a rectangular, dilated,
/// padded ReLU6 conv, a depthwise conv, an average pool, a standalone
/// activation, an Add reading an earlier tensor, a Concatenate, a global
/// average pool, a ReLU6 Dense and a Softmax layer.
fn graph() -> ModelSpec {
    use shared::spec::{AvgPool2D, Hw, Inputs, Layer, Padding};
    let layers = [
        Layer::Conv2D(Conv2D::new(4, 1).kernel_hw(3, 2).dilation(1, 2).pads(1, 1, 1, 0).relu6()),
        Layer::Conv2D(Conv2D::new(4, 3).groups(4).same()),
        Layer::Activation(Activation::Relu),
        Layer::Add { activation: Activation::Relu6 },
        Layer::Concat,
        Layer::AvgPool2D(AvgPool2D { pool: Hw::new(2, 1), stride: Hw::new(1, 1), padding: Padding::Same }),
        Layer::GlobalAvgPool,
        Layer::Dense { units: 2, activation: Activation::Relu6 },
        Layer::Softmax,
    ];
    let st = Inputs::stack;
    let inputs = [
        st(0),
        st(1),
        st(2),
        Inputs { main: 3, other: Some(1) },
        Inputs { main: 4, other: Some(2) },
        st(5),
        st(6),
        st(7),
        st(8),
    ];
    ModelSpec::graph(Shape::image(4, 4, 2), &layers, &inputs).expect("a valid seed graph")
}

/// `(file name, bytes)` of every seed: each stack as `<name>.int8` and
/// `<name>.f16`, with random parameters and, for int8, ranges calibrated on
/// random inputs through the float reference. Deterministic.
pub fn fuzz_seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (seed, (name, spec, labels)) in stacks().into_iter().enumerate() {
        let mut rng = Rng::new(0xF022_5EED + seed as u64);
        let params = random_params(&spec, &mut rng);
        let v = views(&params);
        let mut ranges = Ranges::new(&spec);
        for _ in 0..4 {
            let x = rng.vec(spec.input().elements() as usize, -1.0, 1.0);
            observe(&mut ranges, &spec, &v, &x).expect("calibration");
        }
        let int8 = convert::quantize_int8(&spec, &v, &ranges).expect("int8 seed");
        let f16 = convert::convert_f16(&spec, &v).expect("f16 seed");
        for (ext, mut model) in [("int8", int8), ("f16", f16)] {
            model.labels = labels.into();
            let bytes = format::write(&model.view()).expect("a seed writes");
            out.push((format!("{name}.{ext}"), bytes));
            // One format-version-2 seed per precision: the first stack with an input transform.
            if seed == 0 {
                let c = spec.input().channels() as usize;
                model.preprocess = (0..2 * c).map(|i| if i < c { 255.0 / (i + 1) as f32 } else { -0.5 }).collect();
                let bytes = format::write(&model.view()).expect("a version-2 seed writes");
                out.push((format!("{name}-transform.{ext}"), bytes));
            }
        }
    }
    out
}
