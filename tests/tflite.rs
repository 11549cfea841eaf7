//! Full-integer `.tflite` models from TensorFlow's own converter
//! (`tests/tflite/`, built by `scripts/import-fixtures/make_tflite.py`): they
//! import keeping the converter's scales, zero points and biases, and every
//! operator's output bytes equal those of TFLite's reference interpreter
//! (`BUILTIN_REF`, every tensor preserved), recorded by the script.
use host::import::tflite::{self, read};
use shared::model::LayerWeights;
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tflite")
}

/// One fixture: the model, its expected JSON and every tensor's reference bytes.
struct Fixture {
    doc: serde_json::Value,
    blob: Vec<u8>,
}

impl Fixture {
    fn load(name: &str) -> Fixture {
        let doc = std::fs::read(dir().join(format!("{name}.expected.json"))).expect("fixture json");
        let blob = std::fs::read(dir().join(format!("{name}.tensors.bin"))).expect("fixture tensors");
        Fixture { doc: serde_json::from_slice(&doc).expect("json"), blob }
    }

    fn inputs(&self) -> usize {
        self.doc["inputs"].as_u64().expect("inputs") as usize
    }

    /// TFLite's bytes of tensor `t` on input `k`, if the script kept it.
    fn tensor(&self, t: usize, k: usize) -> Option<&[u8]> {
        let e = self.doc["tensors"].as_array()?.iter().find(|e| e["index"].as_u64() == Some(t as u64))?;
        let (offset, n) = (e["offset"].as_u64()? as usize, e["bytes"].as_u64()? as usize);
        self.blob.get(offset + k * n..offset + (k + 1) * n)
    }

    /// The operator that writes tensor `t`, as "NAME (operator i)".
    fn writer(&self, t: usize) -> String {
        let ops = self.doc["ops"].as_array().expect("ops");
        ops.iter()
            .find(|o| o["outputs"].as_array().is_some_and(|v| v.iter().any(|x| x.as_u64() == Some(t as u64))))
            .map(|o| format!("{} (operator {})", o["op"].as_str().unwrap_or("?"), o["index"]))
            .unwrap_or_else(|| "the input".into())
    }
}

/// Every fixture, by name.
fn fixtures() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir())
        .expect("tests/tflite")
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".tflite").map(String::from))
        .filter(|n| !n.starts_with("unsupported_") && !n.starts_with("float_"))
        .collect();
    names.sort();
    names
}

#[test]
fn every_operator_equals_tflites_reference_interpreter_byte_for_byte() {
    let names = fixtures();
    assert!(names.len() >= 20, "the fixtures: {names:?}");
    let (mut compared, mut failures) = (0usize, Vec::new());
    for name in &names {
        let fx = Fixture::load(name);
        let lowered =
            tflite::import_tflite(&dir().join(format!("{name}.tflite"))).unwrap_or_else(|e| panic!("{name}: {e}"));
        let model = lowered.model.view();
        let input_t = fx.doc["input_tensor"].as_u64().expect("input tensor") as usize;
        for k in 0..fx.inputs() {
            let input = fx.tensor(lowered.tensors[0].0, k).expect("input bytes");
            assert_eq!(lowered.tensors[0].0, input_t, "{name}: the model's input tensor");
            let run = host::simulate::simulate(&model, input, true).unwrap_or_else(|e| panic!("{name}: {e}"));
            for &(t, ours) in lowered.tensors.iter().skip(1) {
                let want = fx.tensor(t, k).unwrap_or_else(|| panic!("{name}: no reference bytes for tensor {t}"));
                let got = run.layers[ours - 1].bytes.as_deref().expect("kept bytes");
                compared += 1;
                if got != want {
                    let diff = got.iter().zip(want).filter(|(a, b)| a != b).count();
                    let max = got.iter().zip(want).map(|(a, b)| (*a as i8 as i32 - *b as i8 as i32).abs()).max();
                    failures.push(format!(
                        "{name} input {k}: tensor {t} of {} (our layer {}): {diff} of {} bytes differ (max {max:?})",
                        fx.writer(t),
                        ours - 1,
                        want.len()
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {compared} tensors differ from TFLite:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{compared} tensors of {} models equal TFLite's reference interpreter byte for byte", names.len());
}

#[test]
fn the_converters_quantization_is_kept_exactly() {
    let path = dir().join("mobilenet_v1.tflite");
    let bytes = std::fs::read(&path).expect("fixture");
    let graph = read::read(&bytes).expect("reads");
    let lowered = tflite::import_tflite(&path).expect("imports");
    let model = lowered.model.view();
    let file_quant = |t: usize| graph.tensors[t].quant.clone().expect("quantized");
    let q = file_quant(lowered.tensors[0].0);
    assert_eq!((model.input.scale, model.input.zero_point as i64), (q.scales[0], q.zero_points[0]));
    let mut convs = 0;
    for &(t, ours) in lowered.tensors.iter().skip(1) {
        let q = file_quant(t);
        let layer = &model.layer_data()[ours - 1];
        assert_eq!((layer.output.scale, layer.output.zero_point as i64), (q.scales[0], q.zero_points[0]), "tensor {t}");
        // The operator writing t: its weights' scales and bias, as the file has them.
        let op = graph.ops.iter().find(|o| o.outputs == [t]).expect("writer");
        if let LayerWeights::Int8(w) = layer.weights {
            let wq = graph.tensors[op.inputs[1].expect("weights")].quant.clone().expect("weight quant");
            assert!(wq.scales.len() == 1 || wq.scales == w.weight_scale, "tensor {t}: weight scales");
            let b = &graph.tensors[op.inputs[2].expect("bias")];
            let bias: Vec<i32> =
                b.data.expect("constant").chunks(4).map(|c| i32::from_le_bytes(c.try_into().expect("4"))).collect();
            assert_eq!(bias, w.bias, "tensor {t}: bias");
            convs += 1;
        }
    }
    assert!(convs >= 28, "{convs} layers with weights checked");
}

#[test]
fn damaged_files_are_named_errors() {
    let path = dir().join("op_conv.tflite");
    let bytes = std::fs::read(&path).expect("fixture");
    // Every truncation, and every single-byte corruption of the header and tables.
    for n in (0..bytes.len()).step_by(7) {
        if let Err(e) = tflite::import_tflite_bytes(&bytes[..n], &path) {
            assert!(e.to_string().contains("op_conv.tflite"), "{e}");
        }
    }
    let mut broken = 0;
    for at in 0..bytes.len().min(800) {
        let mut b = bytes.clone();
        b[at] ^= 0xa5;
        if tflite::import_tflite_bytes(&b, &path).is_err() {
            broken += 1;
        }
    }
    assert!(broken > 100, "{broken} corruptions refused");
    let e = tflite::import_tflite_bytes(&bytes[..bytes.len() / 2], &path).expect_err("half a file");
    assert!(e.to_string().contains("op_conv.tflite"), "{e}");
}

/// The model `host export --tflite` made `exported/NAME.tflite` from.
fn export_source(name: &str) -> shared::convert::OwnedModel {
    if name == "micro" {
        let bytes =
            host::model_file::read_model_file(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/micro.int8"))
                .expect("golden model");
        let model = shared::format::parse(bytes.as_bytes()).expect("parses");
        owned(&model)
    } else {
        tflite::import_tflite(&dir().join(format!("{name}.tflite"))).expect("imports").model
    }
}

/// An owned copy of a parsed model (the exporter takes a view of either).
fn owned(m: &shared::model::QuantModel<'_>) -> shared::convert::OwnedModel {
    use shared::convert::OwnedWeights;
    shared::convert::OwnedModel {
        spec: m.spec,
        precision: m.precision,
        input: m.input,
        layers: m
            .layer_data()
            .iter()
            .map(|d| {
                let w = match d.weights {
                    LayerWeights::Int8(w) => OwnedWeights::Int8 {
                        weights: w.weights.to_vec(),
                        weight_scale: w.weight_scale.to_vec(),
                        bias: w.bias.to_vec(),
                        multiplier: w.multiplier.to_vec(),
                        shift: w.shift.to_vec(),
                    },
                    LayerWeights::F16(w) => OwnedWeights::F16 { weights: w.weights.to_vec(), bias: w.bias.to_vec() },
                    LayerWeights::None => OwnedWeights::None,
                };
                (w, d.output)
            })
            .collect(),
        labels: m.labels.to_string(),
        preprocess: m.preprocess.map(|p| p.values.to_vec()).unwrap_or_default(),
    }
}

#[test]
fn exported_tflite_files_give_our_bytes_in_tflites_interpreter() {
    let out = dir().join("exported");
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .expect("tests/tflite/exported")
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".tflite").map(String::from))
        .collect();
    names.sort();
    assert!(names.len() >= 20 && names.contains(&"micro".to_string()), "{names:?}");
    let mut runs = 0;
    for name in &names {
        let model = export_source(name);
        let file = host::export::tflite::to_tflite(&model.view()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let checked_in = std::fs::read(out.join(format!("{name}.tflite"))).expect("exported fixture");
        assert!(file == checked_in, "{name}: the export changed since TFLite ran it (rerun make_tflite.py --exported)");
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join(format!("{name}.outputs.json"))).expect("outputs"))
                .expect("json");
        for (k, want) in doc["outputs"].as_array().expect("outputs").iter().enumerate() {
            let want: Vec<u8> =
                want.as_array().expect("bytes").iter().map(|v| v.as_i64().expect("int") as i8 as u8).collect();
            let input = host::tensor_file::read_input(&out.join(format!("{name}_input_{k}.npy")), &model.view())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let run = host::simulate::simulate(&model.view(), &input, false).expect("runs");
            assert_eq!(run.output, want, "{name} input {k}: our engine vs TFLite running our export");
            runs += 1;
        }
    }
    eprintln!("{} exported models, {runs} runs: TFLite's output bytes equal our engine's", names.len());
}

#[test]
fn host_import_and_export_on_the_command_line() {
    use host::commands::export::{run as export_command, ExportArgs};
    use host::commands::import::{run as import_command, ImportArgs};
    let tmp = std::env::temp_dir().join(format!("tflite-cli-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("temp dir");
    let args = ImportArgs::new;
    let model = tmp.join("concat.int8");
    import_command(&args(dir().join("op_concat.tflite"), model.clone())).expect("imports");
    let bytes = host::model_file::read_model_file(&model).expect("written");
    let parsed = shared::format::parse(bytes.as_bytes()).expect("a model file");
    assert_eq!(parsed.spec.layers().len(), 3);
    // The export reads back through the importer before it lands.
    let exported = tmp.join("back.tflite");
    export_command(&ExportArgs { model: model.clone(), tflite: exported.clone() }).expect("exports");
    assert!(tflite::import_tflite(&exported).is_ok());
    // An output onto the input is refused and nothing is written.
    let e = export_command(&ExportArgs { model: model.clone(), tflite: model.clone() }).expect_err("same path");
    assert!(e.to_string().contains("--tflite"), "{e}");
    // An operator the engine lacks is named, with the operator's index and what is supported.
    let bad = tmp.join("bad.int8");
    let e = import_command(&args(dir().join("unsupported_logistic.tflite"), bad.clone())).expect_err("LOGISTIC");
    let text = format!("{e:#}");
    assert!(text.contains("LOGISTIC") && text.contains("operator 1") && text.contains("Supported:"), "{text}");
    assert!(!bad.exists());
}

/// The converter's models on the emulated boards: MLPerf Tiny's four on the
/// Cortex-M4 (`mps2-an386`), and the per-operator models and DS-CNN/ResNet-8
/// on the Cortex-M33 (`mps3-an524`) and the STM32F405 (`netduinoplus2`),
/// each from its `.npy` input: every layer's bytes on the device equal the
/// simulator's, and the output equals TFLite's reference interpreter's.
#[test]
fn converter_models_run_on_the_emulated_boards_with_tflites_bytes() {
    use host::flash::{self, Board, Step};
    let mlperf = ["resnet8", "dscnn", "mobilenet_v1", "autoencoder"];
    let mut plan: Vec<(Board, Vec<String>)> = vec![(Board::QemuAn386, mlperf.iter().map(|s| s.to_string()).collect())];
    // One model per operator kind (and DS-CNN) on the other two boards; all of them run on the M4 too
    // (through the MLPerf models) and in the simulator (above).
    let small: Vec<String> =
        ["dscnn", "op_depthwise_multiplier", "op_conv_relu_strided", "op_add_relu", "op_avgpool_same"]
            .into_iter()
            .chain(["op_maxpool", "op_mean", "op_pad", "op_concat", "op_softmax", "op_dense"])
            .map(String::from)
            .collect();
    plan.push((Board::QemuAn524, small.clone()));
    plan.push((Board::Stm32f405, small));
    let work = std::env::temp_dir().join(format!("tflite-device-{}", std::process::id()));
    std::fs::create_dir_all(&work).expect("temp dir");
    let mut runs = 0;
    for (board, names) in plan {
        let elf = flash::build_firmware(board, &flash::default_firmware_dir())
            .unwrap_or_else(|e| panic!("{}: firmware: {e:#}", board.name()));
        for name in names {
            let fx = Fixture::load(&name);
            let lowered = tflite::import_tflite(&dir().join(format!("{name}.tflite"))).expect("imports");
            let path = work.join(format!("{name}.int8"));
            host::quantize::write_model_file(&lowered.model, &path).expect("model file");
            let bytes = host::model_file::read_model_file(&path).expect("read");
            let model = host::model_file::parse_model(&bytes, &path).expect("parse");
            let inputs: Vec<Vec<u8>> = (0..fx.inputs())
                .map(|k| {
                    host::tensor_file::read_input(&dir().join(format!("{name}_input_{k}.npy")), &model).expect("npy")
                })
                .collect();
            let steps: Vec<Step<'_>> = inputs.iter().map(|input| Step::Run { input, layer_bytes: true }).collect();
            let session = flash::run_qemu(board, &elf, &path, &steps, std::time::Duration::from_secs(300), None)
                .unwrap_or_else(|e| panic!("{name} on {}: {e:#}", board.name()));
            let output_t = fx.doc["output_tensor"].as_u64().expect("output tensor") as usize;
            for (k, input) in inputs.iter().enumerate() {
                let desk = host::simulate::simulate(&model, input, true).expect("simulate");
                let run = session.run(k).unwrap_or_else(|| panic!("{name} on {}: no answer {k}", board.name()));
                run.ensure_success().unwrap_or_else(|e| panic!("{name} on {}: {e:#}", board.name()));
                let (_, got) = run.output.clone().expect("output frame");
                assert_eq!(run.layers.len(), desk.layers.len(), "{name} on {}", board.name());
                for (i, (dev, sim)) in run.layers.iter().zip(&desk.layers).enumerate() {
                    assert_eq!(
                        dev.bytes,
                        sim.bytes,
                        "{name} on {}: layer {i} differs from the simulator",
                        board.name()
                    );
                }
                assert_eq!(
                    Some(got.as_slice()),
                    fx.tensor(output_t, k),
                    "{name} on {}: output vs TFLite",
                    board.name()
                );
                runs += 1;
            }
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    eprintln!("{runs} device runs equal the simulator on every layer and TFLite on the output");
}

/// TensorFlow Lite Micro itself ran every fixture (make_tflite.py --tflm):
/// its outputs equal TFLite's reference interpreter's, which our engine's
/// equal (above); and our arena is never larger than its arena, in total and
/// for the activations alone (its "head", our arena less kernel scratch).
#[test]
fn our_arena_is_no_larger_than_tflite_micros() {
    for name in fixtures() {
        let fx = Fixture::load(&name);
        let tflm = &fx.doc["tflm"];
        assert_eq!(tflm["output_equals_reference"].as_bool(), Some(true), "{name}: TFLite Micro vs TFLite");
        let lowered = tflite::import_tflite(&dir().join(format!("{name}.tflite"))).expect("imports");
        let view = lowered.model.view();
        let prepared = shared::engine::prepare(&view).expect("prepares");
        let plan = prepared.plan();
        let (total, head) = (tflm["arena_total"].as_u64().expect("total"), tflm["arena_head"].as_u64().expect("head"));
        let activations = (plan.arena_bytes - plan.scratch_bytes - plan.align_slack) as u64;
        assert!(plan.arena_bytes as u64 <= total, "{name}: our arena {} > TFLite Micro's {total}", plan.arena_bytes);
        assert!(activations <= head, "{name}: our activations {activations} > TFLite Micro's {head}");
    }
}

/// A float `.tflite` (the converter without quantization) imports as a
/// checkpoint whose float network gives TFLite's outputs within 1e-4.
#[test]
fn float_tflite_files_import_as_checkpoints_that_compute_tflites_outputs() {
    let mut names: Vec<String> = std::fs::read_dir(dir())
        .expect("tests/tflite")
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".tflite").map(String::from))
        .filter(|n| n.starts_with("float_"))
        .collect();
    names.sort();
    assert!(names.len() >= 18, "{names:?}");
    let mut worst = 0f32;
    for name in &names {
        let path = dir().join(format!("{name}.tflite"));
        let host::import::tflite::TfliteModel::Float(imported) = tflite::import_any(&path).expect("imports") else {
            panic!("{name}: a float model")
        };
        let outputs = imported.spec.output().elements() as usize;
        let ck = imported.into_checkpoint((0..outputs).map(|i| format!("c{i}")).collect()).expect("checkpoint");
        let mut net = ck.network().expect("network");
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir().join(format!("{name}.expected.json"))).expect("json"))
                .expect("json");
        let shape: Vec<usize> =
            doc["input_shape"].as_array().expect("shape").iter().map(|v| v.as_u64().expect("dim") as usize).collect();
        let floats = |v: &serde_json::Value| -> Vec<f32> {
            v.as_array().expect("list").iter().map(|x| x.as_f64().expect("number") as f32).collect()
        };
        for (x, want) in
            doc["inputs"].as_array().expect("inputs").iter().zip(doc["outputs"].as_array().expect("outputs"))
        {
            let x = floats(x);
            let (h, w, c) = match shape.as_slice() {
                [h, w, c] => (*h, *w, *c),
                [n] => (1, 1, *n),
                other => panic!("{name}: input shape {other:?}"),
            };
            let input = ndarray::Array4::from_shape_vec((1, h, w, c), x).expect("input");
            let got = net.forward(input.view(), host::nn::Mode::Eval);
            let want = floats(want);
            let got: Vec<f32> = got.iter().copied().collect();
            assert_eq!(got.len(), want.len(), "{name}");
            for (g, w) in got.iter().zip(&want) {
                let err = (g - w).abs() / w.abs().max(1.0);
                worst = worst.max(err);
                assert!(err < 1e-4, "{name}: {g} vs TFLite's {w}");
            }
        }
    }
    eprintln!("{} float models: within {worst:e} of TFLite", names.len());
}

/// Files the `tflite` fuzz target found a panic with, kept as regressions:
/// each is a named error now.
#[test]
fn fuzz_findings_are_named_errors() {
    let dir = dir().join("hostile");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("tests/tflite/hostile") {
        let path = entry.expect("entry").path();
        let e = tflite::import_any(&path).err().unwrap_or_else(|| panic!("{}: imported", path.display()));
        assert!(e.to_string().contains(path.file_name().and_then(|f| f.to_str()).unwrap_or("?")), "{e}");
        n += 1;
    }
    assert!(n >= 1);
}
