//! TensorFlow Lite models (`.tflite`): the converter's full-integer output
//! as our int8 model file, keeping its quantization exactly; a float model
//! as a checkpoint.
//!
//! [`read`] turns the flatbuffer into plain data through the published
//! schema (the `tflite-schema` crate, planus-generated); [`lower`] maps its
//! operators onto ours.
pub mod lower;
pub mod read;

use std::path::Path;

pub use lower::{Lowered, TFLITE_SUPPORTED};

use super::error::ImportError;
use super::imported::Imported;

/// What a `.tflite` becomes.
#[derive(Debug)]
pub enum TfliteModel {
    /// A full-integer model: our int8 model file.
    Int8(Lowered),
    /// A float model: a checkpoint's spec and tensors.
    Float(Imported),
}

/// Read the `.tflite` at `path`, int8 or float.
pub fn import_any(path: &Path) -> Result<TfliteModel, ImportError> {
    let bytes = read_file(path)?;
    let graph = parse(&bytes, path)?;
    if lower::is_float(&graph) {
        let f = lower::lower_float(&graph).map_err(|e| lower_error(e, path))?;
        return Ok(TfliteModel::Float(Imported {
            spec: f.spec,
            tensors: f.tensors,
            preprocess: None,
            source: "TensorFlow Lite (float)".into(),
            notes: f.notes,
        }));
    }
    lower::lower(&graph).map(TfliteModel::Int8).map_err(|e| lower_error(e, path))
}

/// Read and lower the `.tflite` at `path`.
pub fn import_tflite(path: &Path) -> Result<Lowered, ImportError> {
    import_tflite_bytes(&read_file(path)?, path)
}

/// [`import_tflite`] on a file already read (`path` names it in errors).
pub fn import_tflite_bytes(bytes: &[u8], path: &Path) -> Result<Lowered, ImportError> {
    lower::lower(&parse(bytes, path)?).map_err(|e| lower_error(e, path))
}

/// The file's bytes, its size first held to the memory budget.
fn read_file(path: &Path) -> Result<Vec<u8>, ImportError> {
    crate::budget::check_file("the .tflite model", path)
        .map_err(|e| ImportError::Format { path: path.to_path_buf(), what: e.to_string() })?;
    std::fs::read(path).map_err(|source| ImportError::Read { path: path.to_path_buf(), source })
}

fn parse<'f>(bytes: &'f [u8], path: &Path) -> Result<read::Graph<'f>, ImportError> {
    read::read(bytes).map_err(|e| ImportError::Format { path: path.to_path_buf(), what: e.to_string() })
}

fn lower_error(e: lower::LowerError, path: &Path) -> ImportError {
    match e {
        lower::LowerError::Unsupported(u) => ImportError::Unsupported {
            path: path.to_path_buf(),
            name: format!("operator {}", u.op),
            kind: u.name,
            why: u.why,
            supported: TFLITE_SUPPORTED,
        },
        lower::LowerError::Invalid(what) => ImportError::Format { path: path.to_path_buf(), what },
    }
}

/// Whether `head` (a file's first bytes) is a TFLite flatbuffer: `TFL3` at byte 4.
pub fn is_tflite(head: &[u8]) -> bool {
    head.get(4..8) == Some(b"TFL3")
}
