//! The host's readers of user files on arbitrary bytes: checkpoints, the
//! importers (`.keras`, `.h5`, `.onnx`), the Keras config JSON, image
//! decoding, `.npy` tensors and `.tflite` flatbuffers. Each must end in an error or a result, never a panic, a hang or
//! an allocation past the memory limit (issue 22's hostile-input rules).
//!
//! The readers take paths, so each input is written to a scratch file first.
//! The memory limit (`host::budget`) is set to 512 MiB, under libFuzzer's
//! default 2 GiB RSS limit, so that an allocation the limit lets through is a
//! finding rather than an expected out-of-memory.
use std::path::{Path, PathBuf};
use std::sync::Once;

/// The memory limit the targets run under.
const LIMIT: u64 = 512 << 20;

fn setup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| host::budget::set_limit(LIMIT));
}

/// `data` written to `name` in this process's scratch folder.
fn scratch_file(name: &str, data: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("host-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch folder");
    let path = dir.join(name);
    std::fs::write(&path, data).expect("scratch file");
    path
}

/// A checkpoint file: `Checkpoint::load`, and the network it describes.
pub fn checkpoint_target(data: &[u8]) {
    setup();
    let path = scratch_file("fuzz.safetensors", data);
    if let Ok(c) = host::checkpoint::Checkpoint::load(&path) {
        let _ = c.network();
    }
}

/// An imported model: the first byte picks the format (`.keras`, `.h5`,
/// `.onnx`), the rest is the file.
pub fn import_target(data: &[u8]) {
    setup();
    let Some((&pick, file)) = data.split_first() else { return };
    let ext = ["keras", "h5", "onnx"][pick as usize % 3];
    let path = scratch_file(&format!("fuzz.{ext}"), file);
    let _ = host::import::import(&path, None);
}

/// A Keras `model.to_json()` / `config.json` document.
pub fn keras_config_target(data: &[u8]) {
    setup();
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        if host::import::keras_config::is_keras_config(&v) {
            let _ = host::import::keras_config::parse(&v, Path::new("fuzz.json"));
        }
    }
}

/// An image file, decoded and resized as `predict` and the data loader do.
pub fn image_target(data: &[u8]) {
    setup();
    let path = scratch_file("fuzz.img", data);
    let _ = host::data::decode::load_image_file(&path, 32, 32);
}

/// A `.npy` tensor as `--tensor` and `--calibration-tensors` read it, for
/// an image input (the first byte picks its height) and a flat one.
pub fn npy_target(data: &[u8]) {
    setup();
    let Some((&pick, file)) = data.split_first() else { return };
    let path = scratch_file("fuzz.npy", file);
    let h = 1 + u32::from(pick % 64);
    let _ = host::tensor_file::read_values(&path, shared::spec::Shape::image(h, 10, 1));
    let _ = host::tensor_file::read_values(&path, shared::spec::Shape::Flat(490));
}

/// A `.tflite` model as `host import` reads it, int8 or float; an int8
/// model that imports is also prepared for the engine and exported back to
/// a `.tflite`, a float one built as a checkpoint's network.
pub fn tflite_target(data: &[u8]) {
    setup();
    let path = scratch_file("fuzz.tflite", data);
    match host::import::tflite::import_any(&path) {
        Ok(host::import::tflite::TfliteModel::Int8(lowered)) => {
            let view = lowered.model.view();
            let _ = host::simulate::prepare(&view);
            let _ = host::export::tflite::to_tflite(&view);
        }
        Ok(host::import::tflite::TfliteModel::Float(imported)) => {
            let n = imported.spec.output().elements() as usize;
            let _ = imported.into_checkpoint((0..n).map(|i| i.to_string()).collect());
        }
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The targets on the repository's own files and some cut-short or
    /// flipped copies of them: the bodies run on stable, without libFuzzer.
    #[test]
    fn the_targets_take_real_files_and_broken_ones() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let read = |p: &str| std::fs::read(root.join(p)).expect(p);
        let variants = |b: Vec<u8>| {
            let mut flipped = b.clone();
            if let Some(x) = flipped.get_mut(b.len() / 2) {
                *x ^= 0x5a;
            }
            vec![b[..b.len() / 3].to_vec(), flipped, b]
        };
        for b in variants(read("tests/golden/micro.safetensors")) {
            checkpoint_target(&b);
        }
        for (pick, file) in
            [(0u8, "tests/import/keras3_raw.keras"), (1, "tests/import/keras2.h5"), (2, "tests/import/torch.onnx")]
        {
            for b in variants(read(file)) {
                import_target(&[[pick].as_slice(), &b].concat());
            }
        }
        keras_config_target(&read("tests/import/keras3_rescaling.json"));
        for b in variants(read("tests/golden/images/circle.png")) {
            image_target(&b);
        }
        for file in [
            "tests/tflite/op_pad.tflite",
            "tests/tflite/resnet8.tflite",
            "tests/tflite/exported/micro.tflite",
            "tests/tflite/float_op_concat.tflite",
        ] {
            for b in variants(read(file)) {
                tflite_target(&b);
            }
        }
        for b in variants(read("tests/import/dscnn_input_0.npy")) {
            npy_target(&[[48u8].as_slice(), &b].concat());
        }
    }
}
