//! What the tests that hold imported models to their frameworks share:
//! the fixtures' expected outputs, importing one as `host import` does, and
//! the float network's probabilities on the fixture's images.
#![allow(dead_code)]

use host::arch::ArchSource;
use host::checkpoint::Checkpoint;
use host::commands::import::{run as import_command, ImportArgs};
use host::nn::Mode;
use std::path::{Path, PathBuf};

pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/import")
}

/// What the framework computed, from `NAME.expected.json`.
pub struct Expected {
    pub classes: Vec<String>,
    pub images: Vec<PathBuf>,
    pub probabilities: Vec<Vec<f32>>,
    pub scale: Vec<f32>,
    pub offset: Vec<f32>,
}

pub fn expected(name: &str) -> Expected {
    let path = dir().join(format!("{name}.expected.json"));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).expect("fixture")).expect("json");
    let floats = |x: &serde_json::Value| -> Vec<f32> {
        x.as_array().map(|a| a.iter().map(|f| f.as_f64().expect("number") as f32).collect()).unwrap_or_default()
    };
    Expected {
        classes: v["classes"].as_array().expect("classes").iter().map(|c| c.as_str().expect("name").into()).collect(),
        images: v["images"].as_array().expect("images").iter().map(|i| dir().join(i.as_str().expect("file"))).collect(),
        probabilities: v["probabilities"].as_array().expect("probabilities").iter().map(floats).collect(),
        scale: floats(&v["input_scale"]),
        offset: floats(&v["input_offset"]),
    }
}

pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("import-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// Import a fixture as `host import` does and load the written checkpoint back.
pub fn import_fixture(file: &str, arch: Option<&str>, classes: Option<u32>, e: &Expected) -> Checkpoint {
    let out = scratch(file).join("imported.safetensors");
    let args = ImportArgs {
        file: dir().join(file),
        out: out.clone(),
        class_names: Some(e.classes.join(",")),
        arch: arch.map(|a| ArchSource::parse(a).expect("arch")),
        classes,
        input: None,
        input_scale: e.scale.clone(),
        input_offset: e.offset.clone(),
    };
    import_command(&args).unwrap_or_else(|err| panic!("importing {file}: {err:#}"));
    Checkpoint::load(&out).expect("the imported checkpoint loads")
}

/// Softmax probabilities of the float network, images read as every command reads them.
pub fn probabilities(ck: &Checkpoint, images: &[PathBuf]) -> Vec<Vec<f32>> {
    let mut net = ck.network().expect("network");
    let (h, w) = ck.input_hw();
    images
        .iter()
        .map(|p| {
            let img = host::data::load_image_file(p, h, w).expect("image");
            let logits = net.forward(img.insert_axis(ndarray::Axis(0)).view(), Mode::Eval);
            let mut row = logits.row(0).to_vec();
            shared::numeric::softmax_in_place(&mut row);
            row
        })
        .collect()
}

/// The largest difference between two probability rows.
pub fn worst_difference(got: &[f32], want: &[f32]) -> f32 {
    got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max)
}
