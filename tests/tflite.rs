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
        .filter(|n| !n.starts_with("unsupported_"))
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
