//! Golden files and the quantization targets, on the scaled preset trained on
//! the embedded data (`tests/golden/micro.safetensors`, made by
//! `host train` with its defaults, optimizer state stripped).
//!
//! - The checked-in int8 and f16 model files, run on the checked-in images,
//!   give exactly the recorded output bytes and per-layer hashes: a test
//!   fails if any byte changes without a format version bump.
//! - Quantizing the checkpoint again (from the recorded calibration ranges,
//!   which a fresh calibration must reproduce within 1e-4) gives the
//!   checked-in files byte for byte.
//! - int8 keeps ≥ 99 % top-1 agreement with float and loses ≤ 1 point of
//!   accuracy; f16 keeps ≥ 99.9 % agreement (the targets).
//! - The emulated Cortex-M4 computes the desktop simulator's bytes for both
//!   files on 20 validation images.
//!
//! After an intended change (and a format version bump where the bytes
//! change), regenerate with `UPDATE_GOLDEN=1 cargo test --test golden` and
//! review the diff.

use std::path::{Path, PathBuf};
use std::time::Duration;

use host::checkpoint::Checkpoint;
use host::flash::{self, Board};
use host::model_file::{encode_input, image_input, parse_model, read_model_file};
use host::quantize::{self, Calibration};
use host::simulate::simulate;
use serde_json::{json, Value};
use shared::convert::Ranges;
use shared::model::{Precision, QuantModel};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn updating() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some()
}

const MODELS: [(&str, Precision); 2] = [("micro.int8", Precision::Int8), ("micro.f16", Precision::F16)];

fn checkpoint() -> Checkpoint {
    Checkpoint::load(&dir().join("micro.safetensors")).expect("tests/golden/micro.safetensors")
}

fn images() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir().join("images"))
        .expect("tests/golden/images")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    v.sort();
    v
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every model's outputs on every golden image.
fn record(models: &[(String, QuantModel)], format_version: u32) -> Value {
    let mut cases = Vec::new();
    for (name, model) in models {
        for img in images() {
            let input = image_input(model, &img).expect("golden image");
            let run = simulate(model, &input, false).expect("engine");
            cases.push(json!({
                "model": name,
                "image": img.file_name().map(|n| n.to_string_lossy().into_owned()),
                "output": hex(&run.output),
                "layers": run.layers.iter().map(|l| format!("{:016x}", l.hash)).collect::<Vec<_>>(),
            }));
        }
    }
    json!({ "format_version": format_version, "cases": cases })
}

fn load_models() -> Vec<(String, shared::format::AlignedBytes)> {
    MODELS
        .iter()
        .map(|(name, _)| {
            let p = dir().join(name);
            (name.to_string(), read_model_file(&p).expect("golden model file"))
        })
        .collect()
}

#[test]
fn golden_model_files_give_the_recorded_bytes() {
    let files = load_models();
    let models: Vec<(String, QuantModel)> =
        files.iter().map(|(n, b)| (n.clone(), parse_model(b, Path::new(n)).expect("golden file parses"))).collect();
    // The files' own version: models without an input transform are still
    // written as version 1 (see shared::format), so these files keep their bytes.
    let v = shared::format::offsets::VERSION;
    let file_version = |b: &[u8]| u32::from_le_bytes([b[v], b[v + 1], b[v + 2], b[v + 3]]);
    let version_of_files = file_version(files[0].1.as_bytes());
    assert!(files.iter().all(|(_, b)| file_version(b.as_bytes()) == version_of_files));
    let got = record(&models, version_of_files);
    let path = dir().join("expected.json");
    if updating() {
        std::fs::write(&path, serde_json::to_string_pretty(&got).expect("json")).expect("write expected.json");
    }
    let want: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("expected.json")).expect("json");
    let version = want["format_version"].as_u64();
    assert_eq!(
        version,
        Some(version_of_files as u64),
        "the model format version changed: regenerate the golden files (UPDATE_GOLDEN=1 cargo test --test golden)"
    );
    let (got, want) = (got["cases"].as_array().expect("cases"), want["cases"].as_array().expect("cases"));
    assert_eq!(got.len(), want.len(), "number of golden cases");
    assert!(got.len() >= 12, "expected 2 models x 6 images");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g["model"], w["model"]);
        assert_eq!(g["image"], w["image"]);
        assert_eq!(g["layers"], w["layers"], "{} on {}: a layer's output bytes changed", g["model"], g["image"]);
        assert_eq!(g["output"], w["output"], "{} on {}: the output bytes changed", g["model"], g["image"]);
    }
}

/// Calibration ranges recorded with the golden files. The float network's
/// last bits depend on the CPU's SIMD kernels, so a fresh calibration is held
/// to these within a tolerance, and the files are rebuilt from these exactly:
/// the quantizer itself (integer and f32/f64 scalar arithmetic) must give
/// the same bytes on every machine.
fn recorded_ranges(ck: &Checkpoint) -> Ranges {
    let path = dir().join("ranges.json");
    if updating() {
        let r = quantize::calibrate(ck, &Calibration::default()).expect("calibrate");
        let v = json!({ "input": [r.input.0, r.input.1], "layers": r.layers.iter().map(|l| [l.0, l.1]).collect::<Vec<_>>() });
        std::fs::write(&path, serde_json::to_string_pretty(&v).expect("json")).expect("write ranges.json");
    }
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("ranges.json")).expect("json");
    let pair = |p: &Value| (p[0].as_f64().expect("number") as f32, p[1].as_f64().expect("number") as f32);
    Ranges { input: pair(&v["input"]), layers: v["layers"].as_array().expect("layers").iter().map(pair).collect() }
}

#[test]
fn quantizing_the_checkpoint_again_gives_the_same_files() {
    let ck = checkpoint();
    let recorded = recorded_ranges(&ck);
    let fresh = quantize::calibrate(&ck, &Calibration::default()).expect("calibrate");
    assert_eq!(fresh.input, recorded.input);
    assert_eq!(fresh.layers.len(), recorded.layers.len());
    for (i, (f, r)) in fresh.layers.iter().zip(&recorded.layers).enumerate() {
        let tol = 1e-4 * (r.1 - r.0).abs().max(1e-3);
        assert!(
            (f.0 - r.0).abs() <= tol && (f.1 - r.1).abs() <= tol,
            "layer {i}: calibrated range {f:?} drifted from the recorded {r:?}"
        );
    }
    let params = quantize::FloatParams::from_tensors(&ck.spec, &ck.tensors).expect("params");
    for (name, precision) in MODELS {
        let ranges = (precision == Precision::Int8).then_some(&recorded);
        let model =
            quantize::quantize(&params, precision, ranges, &ck.class_names, ck.preprocess.as_ref()).expect("quantize");
        let bytes = shared::format::write(&model.view()).expect("encode");
        let path = dir().join(name);
        if updating() {
            std::fs::write(&path, &bytes).expect("write golden model");
        }
        let want = std::fs::read(&path).expect("golden model file");
        assert!(bytes == want, "{name}: quantizing micro.safetensors no longer gives the checked-in bytes");
    }
}

#[test]
fn quantized_models_meet_the_accuracy_targets() {
    let ck = checkpoint();
    let files = load_models();
    let models: Vec<(PathBuf, QuantModel)> =
        files.iter().map(|(n, b)| (PathBuf::from(n), parse_model(b, Path::new(n)).expect("parse"))).collect();
    let sel = host::provenance::open_for_checkpoint(&ck, None, None).expect("the embedded data");
    assert!(sel.indices.len() >= 400, "the validation split has {} images", sel.indices.len());
    let report = host::compare::compare(&ck, &models, &sel.data, &sel.indices).expect("compare");
    eprint!("{}", report.render());
    assert!(report.float_accuracy > 0.90, "the float model itself is at {:.3}", report.float_accuracy);
    let int8 = &report.models[0];
    let f16 = &report.models[1];
    assert!(int8.agreement >= 0.99, "int8 top-1 agreement {:.4} < 0.99", int8.agreement);
    assert!(int8.accuracy_drop_pts <= 1.0, "int8 accuracy drop {:.2} pts > 1", int8.accuracy_drop_pts);
    assert!(f16.agreement >= 0.999, "f16 top-1 agreement {:.4} < 0.999", f16.agreement);
    // The thresholds the CLI enforces are the same ones.
    report.check(Some(1.0), Some(0.99)).expect("thresholds");
    // Every int8 layer keeps a usable signal-to-noise ratio, f16 a far better one.
    for ((name, a), (_, b)) in int8.sqnr_db.iter().zip(&f16.sqnr_db) {
        assert!(*a > 20.0, "int8 {name}: SQNR {a:.1} dB");
        assert!(*b > *a, "f16 {name}: SQNR {b:.1} dB not above int8's {a:.1}");
    }
}

/// The trained alexnet-micro, int8 and f16, on the emulated STM32F405
/// (through its HAL) and the MPS2 Cortex-M4: 20 validation images in one
/// boot each, the output and every layer's hash equal to the desktop
/// simulator's, and on the STM32F405 every layer's bytes too (the MPS2 sends
/// hashes only: QEMU's UART writes a byte per system call, and the bytes
/// double this test's time).
#[test]
fn the_cortex_m4_boards_compute_the_simulator_bytes_for_20_images_in_one_boot() {
    let ck = checkpoint();
    let sel = host::provenance::open_for_checkpoint(&ck, None, None).expect("the embedded data");
    let (h, w) = ck.input_hw();
    let images = sel.data.calibration_images(20, h, w, 99).expect("validation images");
    assert_eq!(images.shape()[0], 20);
    let models = load_models();
    // One board per core.
    std::thread::scope(|s| {
        for board in [Board::Stm32f405, Board::QemuAn386] {
            let (models, images) = (&models, &images);
            s.spawn(move || {
                let elf = flash::build_firmware(board, &flash::default_firmware_dir())
                    .unwrap_or_else(|e| panic!("building the {board} firmware (run scripts/setup.sh): {e:#}"));
                for (name, bytes) in models {
                    let model = parse_model(bytes, Path::new(name)).expect("parse");
                    let inputs: Vec<Vec<u8>> = images
                        .outer_iter()
                        .map(|img| encode_input(&model, &img.iter().copied().collect::<Vec<f32>>()).expect("encode"))
                        .collect();
                    let layer_bytes = board == Board::Stm32f405;
                    // The firmware's banded layers (conv, BN of a band group) send only their rows' hash.
                    let banded = shared::band::plan_banded(&model, shared::band::InputRows::Resident);
                    let steps: Vec<_> = inputs.iter().map(|input| flash::Step::Run { input, layer_bytes }).collect();
                    let session =
                        flash::run_qemu(board, &elf, &dir().join(name), &steps, Duration::from_secs(300), None)
                            .unwrap_or_else(|e| panic!("{name} on {board}: {e:#}"));
                    assert_eq!((session.exit_code, session.done), (Some(0), Some(0)), "{name} on {board}");
                    assert_eq!(session.answers.len(), 20, "{name} on {board}: one answer per image");
                    for (k, input) in inputs.iter().enumerate() {
                        let run = session.run(k).expect("an answer");
                        run.ensure_success().unwrap_or_else(|e| panic!("{name} image {k} on {board}: {e:#}"));
                        let want = simulate(&model, input, true).expect("desktop");
                        let (_, got) = run.output.clone().expect("output frame");
                        assert_eq!(got, want.output, "{name} image {k} on {board}: device output bytes differ");
                        assert_eq!(run.layers.len(), want.layers.len());
                        for (dev, desk) in run.layers.iter().zip(&want.layers) {
                            assert_eq!(dev.fnv, desk.hash, "{name} image {k} on {board}: layer {} hash", desk.index);
                            let want =
                                if layer_bytes && !banded.is_banded(desk.index) { desk.bytes.as_ref() } else { None };
                            assert_eq!(
                                dev.bytes.as_ref(),
                                want,
                                "{name} image {k} on {board}: layer {} bytes",
                                desk.index
                            );
                        }
                    }
                }
            });
        }
    });
}
