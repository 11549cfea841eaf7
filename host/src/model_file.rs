//! Model files (from `host quantize`) on the desktop: read into an aligned
//! buffer, parse and validate naming the file, and turn images into the
//! model's input bytes and output bytes back into numbers. Every command that
//! takes `--model` goes through here.
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use shared::engine;
use shared::format::AlignedBytes;
use shared::model::{Precision, QuantModel};

/// Read a model file into a buffer aligned for in-place parsing.
pub fn read_model_file(path: &Path) -> Result<AlignedBytes> {
    crate::budget::check_file("the model file", path)?;
    let raw = std::fs::read(path).with_context(|| format!("reading model file {}", path.display()))?;
    Ok(AlignedBytes::copy_from(&raw))
}

/// Parse and validate a model file already in memory, naming the file on error.
pub fn parse_model<'a>(bytes: &'a AlignedBytes, path: &Path) -> Result<QuantModel<'a>> {
    let model = shared::format::parse(bytes.as_bytes()).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    engine::validate(&model).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    Ok(model)
}

/// What running `model` allocates, held to the memory limit before any run
/// (the file declares it: a tiny file may declare a huge input): the
/// engine's arena, and the float image and encoded input at its input size.
pub fn check_runnable(model: &QuantModel) -> Result<(), crate::budget::BudgetError> {
    let arena = engine::plan(model).arena_bytes as u64;
    let input = model.spec.input().elements().saturating_mul(4 + 4);
    crate::budget::check("running the model (its activation arena and input)", arena.saturating_add(input))
}

/// Encode float pixels (NHWC, [0, 1]) as the model's input bytes, through
/// the model's input transform when it has one.
pub fn encode_input(model: &QuantModel, pixels: &[f32]) -> Result<Vec<u8>> {
    let pixels: std::borrow::Cow<[f32]> = match model.preprocess {
        Some(t) => {
            let mut x = pixels.to_vec();
            t.apply(&mut x);
            x.into()
        }
        None => pixels.into(),
    };
    encode_values(model, &pixels)
}

/// Encode values in the model's input units (after any input transform)
/// as its input bytes: int8 through its input quantization, or f16.
pub fn encode_values(model: &QuantModel, values: &[f32]) -> Result<Vec<u8>> {
    let mut out = vec![0u8; values.len() * model.precision.activation_bytes()];
    match model.precision {
        Precision::Int8 => engine::quantize_input(values, model.input, &mut out),
        Precision::F16 => engine::encode_f16_input(values, &mut out),
    }
    .map_err(|e| anyhow!("encoding the input: {e}"))?;
    Ok(out)
}

/// Preprocess an image file for `model`: decode, resize, encode.
pub fn image_input(model: &QuantModel, path: &Path) -> Result<Vec<u8>> {
    check_runnable(model)?;
    let (h, w) = crate::data::image_hw(model.spec.input())?;
    let img = crate::data::load_image_file(path, h, w)?;
    let pixels: Vec<f32> = img.iter().copied().collect();
    encode_input(model, &pixels)
}

/// The model's class names (empty when the file carries none).
pub fn class_names(model: &QuantModel) -> Vec<String> {
    (0..).map_while(|i| model.class_name(i)).map(str::to_string).collect()
}

/// The output values as JSON numbers: int8 values, or f16 values as f32.
pub fn output_values(precision: Precision, output: &[u8]) -> Vec<serde_json::Value> {
    match precision {
        Precision::Int8 => output.iter().map(|&b| serde_json::json!(b as i8)).collect(),
        Precision::F16 => output
            .chunks_exact(2)
            .map(|c| serde_json::json!(shared::f16::from_le_bytes([c[0], c[1]]).to_f32()))
            .collect(),
    }
}
