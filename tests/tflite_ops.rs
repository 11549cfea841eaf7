//! Our engine against TensorFlow Lite's own reference interpreter
//! (`OpResolverType.BUILTIN_REF`) on SOFTMAX and MEAN, byte for byte.
//!
//! `tests/tflite/op_vectors.json` is written by
//! `scripts/import-fixtures/tflite_op_vectors.py` (TensorFlow 2.21): tiny Keras
//! models converted full-integer, run on random int8 inputs; each case holds
//! the op's input and output quantization, shapes, input bytes and the
//! reference kernel's output bytes. Each case runs here as a one-layer model
//! (Softmax, or GlobalAveragePooling2D for MEAN) with those quantizations,
//! through the model file (written and parsed back) and the engine's
//! Prepare and run: the path an imported model takes.

use serde_json::Value;
use shared::engine;
use shared::format;
use shared::model::{LayerData, Precision, QuantModel, TensorQuant};
use shared::spec::{Layer, ModelSpec, Shape, MAX_LAYERS};

fn quant(v: &Value) -> TensorQuant {
    TensorQuant { scale: v["scale"].as_f64().unwrap() as f32, zero_point: v["zero_point"].as_i64().unwrap() as i32 }
}

fn shape(v: &Value) -> Shape {
    let d: Vec<u32> = v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
    match d[..] {
        [n] => Shape::Flat(n),
        [h, w, c] => Shape::image(h, w, c),
        _ => panic!("shape {d:?}"),
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn softmax_and_mean_match_tflite_reference_kernels_byte_for_byte() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tflite/op_vectors.json");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let (mut cases, mut bytes, mut mismatched) = (0, 0, Vec::new());
    let (mut optimized, mut auto) = (0, 0);
    for case in doc["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let layer = match case["op"].as_str().unwrap() {
            "SOFTMAX" => Layer::Softmax,
            "MEAN" => Layer::GlobalAvgPool,
            op => panic!("{name}: op {op}"),
        };
        let spec = ModelSpec::new(shape(&case["input_shape"]), &[layer]).unwrap();
        assert_eq!(spec.output(), shape(&case["output_shape"]), "{name}");
        let mut layers = [LayerData::plain(TensorQuant::IDENTITY); MAX_LAYERS];
        layers[0] = LayerData::plain(quant(&case["output_quant"]));
        let model = QuantModel {
            spec,
            precision: Precision::Int8,
            input: quant(&case["input_quant"]),
            layers,
            labels: "",
            preprocess: None,
        };
        let file = format::write(&model).unwrap();
        let parsed = format::parse(&file).unwrap();
        let prepared = engine::prepare(&parsed).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut arena = vec![0u8; prepared.plan().arena_bytes];
        for (r, run) in case["runs"].as_array().unwrap().iter().enumerate() {
            let (input, want) = (hex(run["input"].as_str().unwrap()), hex(run["output"].as_str().unwrap()));
            let got = engine::run(&prepared, &input, &mut arena, &mut engine::NoObserver).unwrap();
            bytes += want.len();
            if got != &want[..] {
                let wrong = got.iter().zip(&want).filter(|(a, b)| a != b).count();
                mismatched.push(format!("{name} run {r}: {wrong} of {} bytes", want.len()));
            }
        }
        optimized += case["optimized_differs"].as_u64().unwrap();
        auto += case["auto_differs"].as_u64().unwrap();
        cases += 1;
    }
    eprintln!(
        "{cases} TFLite cases, {bytes} output bytes; TFLite's optimized kernels differ from its reference ones \
         on {optimized} bytes, the default resolver (XNNPACK) on {auto}"
    );
    assert!(cases >= 20, "{cases} cases");
    assert!(mismatched.is_empty(), "differ from TFLite's reference kernels: {mismatched:#?}");
}
