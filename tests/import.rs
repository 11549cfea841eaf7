//! Models trained in Keras and PyTorch, imported: every fixture in
//! `tests/import/` (built by `scripts/import-fixtures/make.sh` with the real
//! frameworks) must give the framework's own probabilities within 1e-4 and
//! its top-1; unsupported layers are named errors that write nothing; and an
//! imported model runs quantized on the emulated Cortex-M4 with the device's
//! bytes equal to the desktop simulator's.
use host::arch::ArchSource;
use host::checkpoint::Checkpoint;
use host::commands::import::{run as import_command, ImportArgs};
use host::flash::{self, Board, Step};
use host::import::{self, ImportError};
use host::nn::Mode;
use host::quantize::{self, Calibration};
use shared::engine::{self, Observer};
use shared::model::Precision;
use shared::spec::Shape;
use std::path::PathBuf;
use std::time::Duration;

mod import_support;
use import_support::{dir, expected, import_fixture, probabilities, scratch, worst_difference, Expected};

/// DS-CNN's fixture takes features, not images: Keras's float `inputs` and
/// its `probabilities` for them, from `dscnn.expected.json`.
fn dscnn_expected() -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let path = dir().join("dscnn.expected.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).expect("fixture")).expect("json");
    let rows = |key: &str| -> Vec<Vec<f32>> {
        let floats = |x: &serde_json::Value| {
            x.as_array().expect("numbers").iter().map(|f| f.as_f64().expect("number") as f32).collect()
        };
        v[key].as_array().expect(key).iter().map(floats).collect()
    };
    (rows("inputs"), rows("probabilities"))
}

/// DS-CNN imported with its float inputs taken as they are (no input transform).
fn dscnn_checkpoint() -> Checkpoint {
    let mut m = import::import(&dir().join("dscnn.keras"), None).expect("dscnn");
    m.preprocess = None;
    m.into_checkpoint((0..12).map(|i| format!("class_{i}")).collect()).expect("checkpoint")
}

fn assert_matches_framework(file: &str, name: &str, arch: Option<&str>, classes: Option<u32>) -> Checkpoint {
    let e = expected(name);
    let ck = import_fixture(file, arch, classes, &e);
    assert_eq!(ck.class_names, e.classes);
    let got = probabilities(&ck, &e.images);
    for (i, (g, want)) in got.iter().zip(&e.probabilities).enumerate() {
        let worst = worst_difference(g, want);
        assert!(worst <= 1e-4, "{file}, image {i}: probabilities differ by {worst} ({g:?} vs {want:?})");
        assert_eq!(
            shared::numeric::argmax(g.iter().copied()),
            shared::numeric::argmax(want.iter().copied()),
            "{file}, image {i}: top-1"
        );
    }
    assert_eq!(got.len(), e.probabilities.len());
    ck
}

#[test]
fn keras3_models_match_keras() {
    let ck = assert_matches_framework("keras3_rescaling.keras", "keras3_rescaling", None, None);
    assert_eq!(ck.preprocess, None, "Rescaling(1/255) of raw pixels is our [0, 1] input");
    let raw = assert_matches_framework("keras3_raw.keras", "keras3_raw", None, None);
    let p = raw.preprocess.expect("a model without Rescaling takes raw 0..255 pixels");
    assert_eq!((p.scale(), p.offset()), (&[255.0f32; 3][..], &[0.0f32; 3][..]));
    assert_matches_framework("keras3_legacy.h5", "keras3_legacy", None, None);
}

#[test]
fn tf_keras2_h5_matches_tf_keras() {
    assert_matches_framework("keras2.h5", "keras2", None, None);
}

#[test]
fn onnx_from_both_pytorch_exporters_matches_pytorch() {
    let ck = assert_matches_framework("torch.onnx", "torch", None, None);
    assert!(ck.preprocess.is_some(), "--input-scale/--input-offset are recorded");
    assert_matches_framework("torch_dynamo.onnx", "torch_dynamo", None, None);
}

#[test]
fn weights_only_files_import_onto_a_preset_or_a_stack_file() {
    // The tutorial's subclassed AlexNet (at alexnet-tiny's widths), saved with save_weights.
    assert_matches_framework("tiny_subclassed.weights.h5", "tiny_subclassed", Some("alexnet-tiny"), Some(5));
    // The same weights as a full .h5 file, onto the stack Keras's to_json() describes.
    let json = dir().join("keras3_rescaling.json");
    assert_matches_framework("keras3_legacy.h5", "keras3_legacy", Some(json.to_str().expect("utf-8")), None);
    // Wrong stack: the error names the layer and both shapes.
    let e = import::import(
        &dir().join("tiny_subclassed.weights.h5"),
        Some((&shared::spec::Arch::AlexNetTiny.build(67, 6).expect("preset"), "alexnet-tiny")),
    )
    .expect_err("6 classes do not fit 5-class weights");
    let text = e.to_string();
    assert!(matches!(e, ImportError::Weights { .. }), "{text}");
    assert!(text.contains("dense_2/kernel") && text.contains("[16, 5]") && text.contains("[16, 6]"), "{text}");
}

/// The general layers: rectangular kernels and strides, dilation, explicit
/// and asymmetric pads (Keras's ZeroPadding2D, PyTorch's ZeroPad2d exported as
/// a constant-folded shape subgraph and a Pad), ReLU6 (Keras's ReLU layer and
/// activation, PyTorch's Clip), average and global average pooling, and
/// torchvision's own AlexNet (pads 2 and 1, AdaptiveAvgPool2d as AveragePool).
#[test]
fn general_geometry_models_match_their_frameworks() {
    for (file, name) in [
        ("keras3_geometry.keras", "keras3_geometry"),
        ("keras3_geometry.h5", "keras3_geometry"),
        ("keras3_avgpool.keras", "keras3_avgpool"),
        ("torch_geometry.onnx", "torch_geometry"),
        ("torch_alexnet.onnx", "torch_alexnet"),
        // Grouped, depthwise (multipliers 1 and 2, a rectangular kernel) and separable convs.
        ("keras3_depthwise.keras", "keras3_depthwise"),
        ("torch_groups.onnx", "torch_groups"),
    ] {
        assert_matches_framework(file, name, None, None);
    }
    // The same Keras model's to_json() as a stack file gives the same stack.
    let (spec, _) = host::arch::load_stack_file(&dir().join("keras3_geometry.json")).expect("stack file");
    let ck = import_fixture("keras3_geometry.keras", None, None, &expected("keras3_geometry"));
    assert_eq!(spec, ck.spec);
}

/// An ONNX model without a softmax: the logits PyTorch computed.
#[test]
fn onnx_average_pool_logits_match_pytorch() {
    let path = dir().join("torch_avgpool.expected.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).expect("fixture")).expect("json");
    let floats = |x: &serde_json::Value| -> Vec<f32> {
        x.as_array().expect("numbers").iter().map(|f| f.as_f64().expect("number") as f32).collect()
    };
    let e = Expected {
        classes: (0..5).map(|i| format!("class_{i}")).collect(),
        images: v["images"].as_array().expect("images").iter().map(|i| dir().join(i.as_str().expect("file"))).collect(),
        probabilities: v["outputs"].as_array().expect("outputs").iter().map(floats).collect(),
        scale: floats(&v["input_scale"]),
        offset: floats(&v["input_offset"]),
    };
    let ck = import_fixture("torch_avgpool.onnx", None, None, &e);
    let mut net = ck.network().expect("network");
    let (h, w) = ck.input_hw();
    for (i, (image, want)) in e.images.iter().zip(&e.probabilities).enumerate() {
        let img = host::data::load_image_file(image, h, w).expect("image");
        let logits = net.forward(img.insert_axis(ndarray::Axis(0)).view(), Mode::Eval);
        let worst = logits.row(0).iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst <= 1e-4, "image {i}: logits differ by {worst}");
    }
}

#[test]
fn unsupported_layers_are_named_and_nothing_is_written() {
    // An ONNX activation the stack has not: the geometry fixture with its
    // Softmax renamed Sigmoid throughout (same length, so the file stays valid).
    let work = scratch("unsupported");
    let mut onnx = std::fs::read(dir().join("torch_geometry.onnx")).expect("fixture");
    let at: Vec<usize> = onnx.windows(7).enumerate().filter(|(_, w)| *w == b"Softmax").map(|(i, _)| i).collect();
    assert!(!at.is_empty());
    for i in at {
        onnx[i..i + 7].copy_from_slice(b"Sigmoid");
    }
    let sigmoid = work.join("sigmoid.onnx");
    std::fs::write(&sigmoid, onnx).expect("write");
    // A Keras layer the stack has not: Conv2DTranspose in place of the first conv.
    let config = std::fs::read_to_string(dir().join("keras3_geometry.json")).expect("fixture");
    assert!(config.contains("\"Conv2D\""));
    let transpose = work.join("transpose.json");
    std::fs::write(&transpose, config.replacen("\"Conv2D\"", "\"Conv2DTranspose\"", 1)).expect("write");
    let file = sigmoid.file_name().and_then(|f| f.to_str()).expect("name").to_string();
    let out = work.join("never.safetensors");
    let args = ImportArgs::new(sigmoid.clone(), out.clone());
    let e = format!("{:#}", import_command(&args).expect_err("unsupported"));
    assert!(e.contains(&file) && e.contains("Sigmoid") && e.contains("Supported:"), "{e}");
    assert!(!out.exists(), "a checkpoint was written");
    let e = host::arch::load_stack_file(&transpose).expect_err("unsupported");
    assert!(e.contains("Conv2DTranspose") && e.contains("Supported:"), "{e}");
    let e = import::import(&dir().join("tiny_subclassed.weights.h5"), None).expect_err("weights only").to_string();
    assert!(e.contains("--arch"), "{e}");
    let _ = std::fs::remove_dir_all(&work);
}

/// Every layer's output on the desktop.
#[derive(Default)]
struct Record(Vec<Vec<u8>>);

impl Observer for Record {
    fn layer_done(&mut self, _index: usize, _shape: Shape, output: &[u8]) {
        self.0.push(output.to_vec());
    }
}

/// Whether a version 1/2 model file can hold the layer.
fn is_classic(l: &shared::spec::Layer) -> bool {
    use shared::spec::{Activation, Layer};
    match l {
        Layer::Conv2D(c) => c.is_classic(),
        Layer::Dense { activation, .. } => *activation != Activation::Relu6,
        Layer::AvgPool2D(_) | Layer::GlobalAvgPool => false,
        _ => true,
    }
}

/// Imported (with an input transform) -> quantize -> the desktop simulator and
/// the emulated Cortex-M4, byte for byte, for each fixture image.
#[test]
fn imported_models_run_on_the_cortex_m4_with_the_simulators_bytes() {
    // Calibration images: the fixtures' class folders.
    let data = dir().join("flowers");
    let elf = flash::build_firmware(Board::QemuAn386, &flash::default_firmware_dir()).expect("firmware");
    for (file, name, precision) in [
        ("keras3_raw.keras", "keras3_raw", Precision::Int8),
        ("torch.onnx", "torch", Precision::F16),
        // The general layers, in both precisions, and torchvision's AlexNet at 224x224.
        ("torch_geometry.onnx", "torch_geometry", Precision::Int8),
        ("torch_geometry.onnx", "torch_geometry", Precision::F16),
        ("keras3_geometry.keras", "keras3_geometry", Precision::Int8),
        ("keras3_geometry.keras", "keras3_geometry", Precision::F16),
        ("torch_alexnet.onnx", "torch_alexnet", Precision::Int8),
        ("keras3_depthwise.keras", "keras3_depthwise", Precision::Int8),
        ("torch_groups.onnx", "torch_groups", Precision::F16),
    ] {
        let e = expected(name);
        let ck = import_fixture(file, None, None, &e);
        let cal = Calibration { data: Some(&data), images: 5, ..Default::default() };
        let model = quantize::quantize_checkpoint(&ck, precision, &cal).expect("quantize");
        let work = scratch(&format!("{name}-{}-device", precision.name()));
        let path = work.join("model.axq");
        quantize::write_model_file(&model, &path).expect("model file");
        let bytes = host::model_file::read_model_file(&path).expect("read");
        let parsed = host::model_file::parse_model(&bytes, &path).expect("parse");
        // A transform needs version 2; the general layers version 3.
        let version = if ck.spec.layers().iter().all(is_classic) { 2 } else { 3 };
        let version = if ck.preprocess.is_none() && version == 2 { 1 } else { version };
        assert_eq!(bytes.as_bytes()[8], version, "{file}: format version");
        let prepared = engine::prepare(&parsed).expect("prepare");
        // Both images in one boot, every layer's bytes sent back.
        let inputs: Vec<Vec<u8>> =
            e.images[..2].iter().map(|image| host::model_file::image_input(&parsed, image).expect("input")).collect();
        let steps: Vec<Step<'_>> = inputs.iter().map(|input| Step::Run { input, layer_bytes: true }).collect();
        let session = flash::run_qemu(Board::QemuAn386, &elf, &path, &steps, Duration::from_secs(120), None)
            .unwrap_or_else(|err| panic!("QEMU: {err:#}"));
        for (k, input) in inputs.iter().enumerate() {
            let mut arena = vec![0u8; prepared.plan().arena_bytes];
            let mut rec = Record::default();
            let want = engine::run(&prepared, input, &mut arena, &mut rec).expect("simulate").to_vec();
            let run = session.run(k).unwrap_or_else(|| panic!("{file}: no answer for image {k}"));
            run.ensure_success().unwrap_or_else(|err| panic!("{file}: {err:#}"));
            let (_, got) = run.output.clone().expect("output frame");
            assert_eq!(got, want, "{file} image {k}: device output differs from the simulator");
            assert_eq!(run.layers.len(), rec.0.len());
            // The firmware's banded layers (conv, BN of a band group) send the hash of their rows.
            let banded = shared::band::plan_banded(&parsed, shared::band::InputRows::Resident);
            for (i, (dev, desk)) in run.layers.iter().zip(&rec.0).enumerate() {
                assert_eq!(dev.fnv, flash::fnv1a64(desk), "{file}: layer {i} hash differs");
                let want = if banded.is_banded(i) { None } else { Some(desk.as_slice()) };
                assert_eq!(dev.bytes.as_deref(), want, "{file}: layer {i} bytes differ");
            }
        }
        let _ = std::fs::remove_dir_all(&work);
    }
}

/// `--arch FILE`: a Keras `to_json()` document (the tutorial's model, edited)
/// and our layer JSON both summarise and train.
#[test]
fn stack_files_summarise_and_train() {
    use host::train::{train, TrainConfig};
    let work = scratch("stack-files");
    // The Keras fixture's stack with 6 outputs, for the embedded set's 6 classes.
    let mut keras: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir().join("keras3_rescaling.json")).expect("fixture")).expect("json");
    let layers = keras["config"]["layers"].as_array_mut().expect("layers");
    let last = layers.len() - 1;
    layers[last]["config"]["units"] = 6.into();
    let keras_file = work.join("my_model.json");
    std::fs::write(&keras_file, keras.to_string()).expect("write");
    let ours = shared::spec::Arch::AlexNetTiny.build(67, 6).expect("preset");
    let ours_file = work.join("layers.json");
    std::fs::write(&ours_file, host::checkpoint::spec_to_json(&ours).to_string()).expect("write");

    for (file, input) in [(&keras_file, 32), (&ours_file, 67)] {
        let arch = ArchSource::parse(file.to_str().expect("utf-8")).expect("a stack file");
        let stack = arch.build(None, 6).expect("stack");
        assert_eq!(stack.spec.input().hw(), (input, input));
        assert!(arch.build(None, 5).expect_err("wrong class count").contains("6 outputs but there are 5 classes"));
        let mut cfg = TrainConfig::defaults(None);
        cfg.arch = arch;
        cfg.epochs = 1;
        cfg.max_steps = Some(3);
        cfg.progress = false;
        cfg.per_class = 8;
        cfg.out = work.join(format!("run-{input}"));
        let out = train(&cfg, &std::sync::atomic::AtomicBool::new(false)).expect("train");
        let ck = Checkpoint::load(&out.checkpoint).expect("checkpoint");
        assert_eq!(ck.spec, stack.spec);
        assert!(ck.arch.starts_with("file:"), "{}", ck.arch);
    }
    assert!(ArchSource::parse("no-such-preset").expect_err("neither").contains("alexnet-micro"));
    let _ = std::fs::remove_dir_all(&work);
}

fn count(spec: &shared::spec::ModelSpec, kind: shared::spec::LayerKind) -> usize {
    spec.layers().iter().filter(|l| l.kind() == kind).count()
}

fn convs(spec: &shared::spec::ModelSpec) -> Vec<shared::spec::Conv2D> {
    spec.layers()
        .iter()
        .filter_map(|l| match l {
            shared::spec::Layer::Conv2D(c) => Some(*c),
            _ => None,
        })
        .collect()
}

/// Keras Functional models (MLPerf Tiny's ResNet-8, DS-CNN and MobileNetV1,
/// a model with Concatenates and BN after activations) and a PyTorch graph
/// import as operator graphs: each layer reads the tensors its inbound nodes
/// name, and a BatchNormalization right after a linear conv that it alone
/// reads is folded into the conv (with the ReLU after it), as TFLite does.
#[test]
fn functional_models_import_as_graphs_with_batch_norm_folded() {
    use shared::spec::{Activation, Inputs, Layer, LayerKind, Padding};
    let import = |f: &str| import::import(&dir().join(f), None).unwrap_or_else(|e| panic!("{f}: {e}"));

    // ResNet-8: conv; 3 stacks of two convs closed by Add + relu, the last two
    // with a strided 1x1 shortcut conv; pool, flatten, dense. 9 BNs folded.
    let spec = import("resnet8.keras").spec;
    assert_eq!(spec.layers().len(), 15);
    assert_eq!(count(&spec, LayerKind::BatchNorm), 0);
    assert_eq!(count(&spec, LayerKind::Conv2D), 9);
    assert_eq!(count(&spec, LayerKind::Add), 3);
    let shortcuts = convs(&spec).iter().filter(|c| c.kernel.h == 1 && c.stride.h == 2).count();
    assert_eq!(shortcuts, 2);
    for (i, l) in spec.layers().iter().enumerate() {
        if let Layer::Add { activation } = l {
            assert_eq!(*activation, Activation::Relu, "the relu after each Add is fused");
            assert!(spec.inputs()[i].other.is_some());
        }
    }
    // Stack 1's identity shortcut: its Add reads the first conv's output and the stack's second conv.
    assert_eq!(spec.inputs()[3], Inputs { main: 1, other: Some(3) });
    // Stack 2: the Add reads the shortcut conv (layer 6) and the second conv (layer 5).
    assert_eq!(spec.inputs()[7], Inputs { main: 7, other: Some(6) });
    assert_eq!(spec.inputs()[6], Inputs { main: 4, other: None }, "the shortcut reads the stack's input");

    // DS-CNN: conv, dropout, 4 x (depthwise, pointwise), dropout, pool, flatten, dense; 9 BNs folded.
    let spec = import("dscnn.keras").spec;
    assert_eq!(spec.layers().len(), 14);
    assert!(spec.is_stack());
    assert_eq!(count(&spec, LayerKind::BatchNorm), 0);
    assert_eq!(count(&spec, LayerKind::Dropout), 2);
    let c = convs(&spec);
    assert_eq!(c.len(), 9);
    assert!(c.iter().all(|c| c.activation == Activation::Relu));
    assert_eq!(c.iter().filter(|c| c.groups == 64).count(), 4);

    // MobileNetV1 0.25 (keras.applications, 89 Keras layers): conv + 13 x
    // (depthwise, pointwise), global pool, dense; 27 BNs folded, the strided
    // depthwise convs' ZeroPadding2D folded into their pads.
    let spec = import("mobilenet_v1.keras").spec;
    assert_eq!(spec.layers().len(), 29);
    assert!(spec.is_stack());
    assert_eq!(count(&spec, LayerKind::BatchNorm), 0);
    let c = convs(&spec);
    assert_eq!(c.len(), 27);
    assert!(c.iter().all(|c| c.activation == Activation::Relu6));
    assert_eq!(c.iter().filter(|c| c.groups > 1).count(), 13);
    let padded = c.iter().filter(|c| c.padding == Padding::explicit(0, 1, 0, 1) && c.stride.h == 2).count();
    assert_eq!(padded, 4);

    // Concatenates (of branches and of a skip), BN after activations and
    // after a Concatenate (layers of their own), a ReLU after a BN (an
    // Activation layer), an Add whose ReLU6 fuses, and one read twice whose
    // ReLU6 cannot.
    let m = import("keras3_concat.keras");
    let spec = m.spec;
    let kinds: Vec<LayerKind> = spec.layers().iter().map(|l| l.kind()).collect();
    use LayerKind::*;
    assert_eq!(
        kinds,
        [
            Conv2D,
            Conv2D,
            Conv2D,
            BatchNorm,
            Concat,
            BatchNorm,
            Activation,
            Concat,
            MaxPool2D,
            Conv2D,
            Add,
            Conv2D,
            Add,
            Activation,
            Concat,
            GlobalAvgPool,
            Dense
        ]
    );
    let reads: Vec<(u16, Option<u16>)> = spec.inputs().iter().map(|i| (i.main, i.other)).collect();
    assert_eq!(reads[4], (2, Some(4)), "concat of a (folded a_conv) and b (b_bn)");
    assert_eq!(reads[7], (7, Some(1)), "concat_skip of the ReLU and the stem");
    assert_eq!(reads[10], (9, Some(10)));
    assert_eq!(reads[14], (14, Some(13)));
    assert_eq!(spec.layers()[10], Layer::Add { activation: Activation::Relu6 });
    assert_eq!(spec.layers()[12], Layer::Add { activation: Activation::None });
    assert_eq!(spec.layers()[13], Layer::Activation(Activation::Relu6));
    assert!(matches!(spec.layers()[1], Layer::Conv2D(c) if c.activation == Activation::Relu), "a_bn, a_relu folded");
    // Its .h5 files, Keras 3's and tf.keras 2's, give the same graph.
    assert_eq!(import("keras3_concat.h5").spec, spec);
    assert_eq!(import("keras2_concat.h5").spec, spec);
    // The same model's to_json() as a stack to train keeps every BN (19 layers).
    let (stack, _) = host::arch::load_stack_file(&dir().join("keras3_concat.json")).expect("stack file");
    assert_eq!(stack.layers().len(), 19);
    assert_eq!(count(&stack, LayerKind::BatchNorm), 3);
    // Edited: a Concatenate on another axis, and a second output, are named errors.
    let work = scratch("graph-errors");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir().join("keras3_concat.json")).expect("fixture")).expect("json");
    let mut on_width = config.clone();
    let layers = on_width["config"]["layers"].as_array_mut().expect("layers");
    let cat = layers.iter_mut().find(|l| l["config"]["name"] == "concat").expect("the concat layer");
    cat["config"]["axis"] = 2.into();
    let mut two_outputs = config;
    two_outputs["config"]["output_layers"] = serde_json::json!([["probs", 0, 0], ["gap", 0, 0]]);
    for (doc, file, want) in [
        (on_width, "on_width.json", ["\"concat\" (Concatenate)", "axis 2", "Supported:"]),
        (two_outputs, "two_outputs.json", ["\"concat\" (Functional)", "one output", "Supported:"]),
    ] {
        let path = work.join(file);
        std::fs::write(&path, doc.to_string()).expect("write");
        let e = host::arch::load_stack_file(&path).expect_err(file);
        assert!(e.contains(file) && want.iter().all(|w| e.contains(w)), "{e}");
    }
    let _ = std::fs::remove_dir_all(&work);

    // PyTorch: the exporter folds Conv + BatchNorm; x + y then Clip(0, 6)
    // fuses into the Add; torch.cat on channels; a Relu after the Concat is a layer.
    let spec = import("torch_graph.onnx").spec;
    let kinds: Vec<LayerKind> = spec.layers().iter().map(|l| l.kind()).collect();
    assert_eq!(kinds, [Conv2D, Conv2D, Conv2D, Add, Conv2D, Concat, Activation, AvgPool2D, Flatten, Dense]);
    assert_eq!(spec.layers()[3], Layer::Add { activation: Activation::Relu6 });
    assert_eq!(spec.inputs()[3], Inputs { main: 1, other: Some(3) });
    assert_eq!(spec.inputs()[5], Inputs { main: 4, other: Some(5) });
    assert_eq!(spec.layers()[6], Layer::Activation(Activation::Relu));
}

/// The graph models give their framework's probabilities within 1e-4 and
/// its top-1 (BN folded, Adds, Concatenates). DS-CNN's inputs are not
/// images: its expected JSON holds the float inputs the framework was given.
#[test]
fn functional_models_match_their_frameworks() {
    for (file, name) in [
        ("resnet8.keras", "resnet8"),
        ("mobilenet_v1.keras", "mobilenet_v1"),
        ("keras3_concat.keras", "keras3_concat"),
        // The same model as Keras 3's legacy .h5, and from tf.keras 2 (its nested inbound_nodes lists).
        ("keras3_concat.h5", "keras3_concat"),
        ("keras2_concat.h5", "keras2_concat"),
        ("torch_graph.onnx", "torch_graph"),
    ] {
        assert_matches_framework(file, name, None, None);
    }
    let (inputs, want) = dscnn_expected();
    let ck = dscnn_checkpoint();
    let mut net = ck.network().expect("network");
    assert_eq!(inputs.len(), 2);
    for (i, (x, want)) in inputs.iter().zip(&want).enumerate() {
        let x = ndarray::Array4::from_shape_vec((1, 49, 10, 1), x.clone()).expect("49x10x1");
        let logits = net.forward(x.view(), Mode::Eval);
        let mut got = logits.row(0).to_vec();
        shared::numeric::softmax_in_place(&mut got);
        let worst = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst <= 1e-4, "dscnn input {i}: probabilities differ by {worst} ({got:?} vs {want:?})");
        assert_eq!(
            shared::numeric::argmax(got.iter().copied()),
            shared::numeric::argmax(want.iter().copied()),
            "dscnn input {i}: top-1"
        );
    }
}

/// Quantize an imported checkpoint, calibrated on `batches` (NHWC in the
/// network's input units: pixels in [0, 1] before its transform, or the raw
/// features of a model without one).
fn quantize_on(ck: &Checkpoint, precision: Precision, batches: &[ndarray::Array4<f32>]) -> shared::convert::OwnedModel {
    let params = quantize::FloatParams::from_tensors(&ck.spec, &ck.tensors).expect("params");
    let ranges = (precision == Precision::Int8).then(|| {
        let mut net = ck.network().expect("network");
        let mut cal = quantize::Calibrator::new(&ck.spec, quantize::RangeMethod::MinMax);
        for b in batches {
            cal.observe(&mut net, b.view());
        }
        let mut r = cal.ranges(ck.preprocess.as_ref());
        if ck.preprocess.is_none() {
            let all = batches.iter().flat_map(|b| b.iter().copied());
            r.input = all.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
        }
        r
    });
    quantize::quantize(&params, precision, ranges.as_ref(), &ck.class_names, ck.preprocess.as_ref()).expect("quantize")
}

/// MLPerf Tiny's architectures as imported from Keras (ResNet-8 32x32x3,
/// DS-CNN on 49x10x1 features, MobileNetV1 0.25 at 96x96x3), quantized to
/// int8 and f16, on the emulated Cortex-M4: the device's output and every
/// layer's bytes equal the simulator's. The int8 graphs' arenas are no
/// larger than TFLite Micro's greedy plan of the same graph.
#[test]
fn mlperf_tiny_graphs_run_on_the_cortex_m4_with_the_simulators_bytes() {
    use ndarray::Array4;
    let elf = flash::build_firmware(Board::QemuAn386, &flash::default_firmware_dir()).expect("firmware");
    let mut rng = suite::Rng::new(17);
    for (file, name) in [("resnet8.keras", "resnet8"), ("dscnn.keras", "dscnn"), ("mobilenet_v1.keras", "mobilenet_v1")]
    {
        // The model, its calibration batches and two device inputs (as floats).
        let (ck, inputs): (Checkpoint, Vec<Vec<f32>>) = if name == "dscnn" {
            (dscnn_checkpoint(), dscnn_expected().0)
        } else {
            let e = expected(name);
            let ck = import_fixture(file, None, None, &e);
            let (h, w) = ck.input_hw();
            let inputs = e.images[..2]
                .iter()
                .map(|p| host::data::load_image_file(p, h, w).expect("image").into_raw_vec_and_offset().0)
                .collect();
            (ck, inputs)
        };
        // ResNet-8's residuals make it a graph; DS-CNN and MobileNet, their BN folded, are chains.
        assert_eq!(ck.spec.is_stack(), name != "resnet8", "{file}");
        let Shape::Image { h, w, c } = ck.spec.input() else { panic!("{file}: an image-shaped input") };
        let shape = (1, h as usize, w as usize, c as usize);
        let (lo, hi) =
            inputs.iter().flatten().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        let mut batches: Vec<Array4<f32>> =
            inputs.iter().map(|x| Array4::from_shape_vec(shape, x.clone()).expect("shape")).collect();
        for _ in 0..6 {
            batches.push(Array4::from_shape_vec(shape, rng.vec(shape.1 * shape.2 * shape.3, lo, hi)).expect("shape"));
        }
        for precision in [Precision::Int8, Precision::F16] {
            let model = quantize_on(&ck, precision, &batches);
            let work = scratch(&format!("{name}-{}-graph-device", precision.name()));
            let path = work.join("model.axq");
            quantize::write_model_file(&model, &path).expect("model file");
            let bytes = host::model_file::read_model_file(&path).expect("read");
            let parsed = host::model_file::parse_model(&bytes, &path).expect("parse");
            assert_eq!(bytes.as_bytes()[8], 3, "{file}: version 3 (graph, general geometry or pools)");
            let prepared = engine::prepare(&parsed).expect("prepare");
            let plan = prepared.plan();
            if precision == Precision::Int8 {
                let ours = plan.arena_bytes - plan.scratch_bytes - plan.align_slack;
                let tflm = shared::arena::tflm_arena_bytes(&parsed.spec, 1);
                eprintln!(
                    "{file} int8: activations {ours} B (+{} scratch), TFLite Micro's greedy plan {tflm} B",
                    plan.scratch_bytes
                );
                assert!(ours <= tflm, "{file}: our arena {ours} > TFLite Micro's {tflm}");
            }
            // The model's own input encoding: its transform, then int8 or f16.
            let device_inputs: Vec<Vec<u8>> =
                inputs.iter().map(|x| host::model_file::encode_input(&parsed, x).expect("input")).collect();
            let steps: Vec<Step<'_>> =
                device_inputs.iter().map(|input| Step::Run { input, layer_bytes: true }).collect();
            let session = flash::run_qemu(Board::QemuAn386, &elf, &path, &steps, Duration::from_secs(300), None)
                .unwrap_or_else(|err| panic!("QEMU: {err:#}"));
            for (k, input) in device_inputs.iter().enumerate() {
                let mut arena = vec![0u8; plan.arena_bytes];
                let mut rec = Record::default();
                let want = engine::run(&prepared, input, &mut arena, &mut rec).expect("simulate").to_vec();
                let run = session.run(k).unwrap_or_else(|| panic!("{file}: no answer for input {k}"));
                run.ensure_success().unwrap_or_else(|err| panic!("{file}: {err:#}"));
                let (_, got) = run.output.clone().expect("output frame");
                assert_eq!(
                    got,
                    want,
                    "{file} {} input {k}: device output differs from the simulator",
                    precision.name()
                );
                assert_eq!(run.layers.len(), rec.0.len());
                for (i, (dev, desk)) in run.layers.iter().zip(&rec.0).enumerate() {
                    assert_eq!(dev.fnv, flash::fnv1a64(desk), "{file}: layer {i} hash differs");
                    assert_eq!(dev.bytes.as_deref(), Some(desk.as_slice()), "{file}: layer {i} bytes differ");
                }
            }
            let _ = std::fs::remove_dir_all(&work);
        }
    }
}

/// DS-CNN takes features: `.npy` tensors calibrate its int8 model
/// (`quantize --calibration-tensors`) and feed it (`--tensor`); the int8
/// probabilities follow Keras's (same top-1, within 0.01) and the model's
/// input quantization covers the tensors' range.
#[test]
fn feature_models_quantize_and_run_from_npy_tensors() {
    let e = dscnn_expected().1;
    let out = scratch("dscnn-npy").join("imported.safetensors");
    let args = ImportArgs::new(dir().join("dscnn.keras"), out.clone());
    import_command(&args).expect("import");
    let ck = Checkpoint::load(&out).expect("checkpoint");
    let tensors: Vec<PathBuf> = (0..2).map(|i| dir().join(format!("dscnn_input_{i}.npy"))).collect();
    let cal = Calibration { tensors: &tensors, ..Default::default() };
    let model = quantize::quantize_checkpoint(&ck, Precision::Int8, &cal).expect("quantize on tensors");
    let view = model.view();
    let prepared = engine::prepare(&view).expect("prepare");
    for (path, want) in tensors.iter().zip(&e) {
        let values = match host::tensor_file::read_values(path, ck.spec.input()).expect("npy") {
            host::tensor_file::Values::F32(v) => v,
            other => panic!("{other:?}"),
        };
        let (lo, hi) = values.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        let q = view.input;
        assert!(
            shared::quant::dequantize(-128, q) <= lo + q.scale && shared::quant::dequantize(127, q) >= hi - q.scale,
            "the input quantization {q:?} covers [{lo}, {hi}]"
        );
        let input = host::tensor_file::read_input(path, &view).expect("input");
        let mut arena = vec![0u8; prepared.plan().arena_bytes];
        let raw = engine::run(&prepared, &input, &mut arena, &mut engine::NoObserver).expect("run").to_vec();
        let mut got = vec![0f32; raw.len()];
        engine::dequantize_output(&view, &raw, &mut got).expect("dequantize");
        shared::numeric::softmax_in_place(&mut got);
        let worst = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst <= 0.01, "{}: int8 probabilities differ by {worst}", path.display());
        assert_eq!(shared::numeric::argmax(got.iter().copied()), shared::numeric::argmax(want.iter().copied()));
    }
}
