//! Models trained elsewhere onto the layer stack: Keras (`.keras`, `.h5`,
//! weights-only `.h5`) and ONNX (PyTorch's `torch.onnx.export`), written as a
//! checkpoint every other command takes.
//!
//! Each importer yields an [`Imported`]: the stack, its tensors under our
//! (Keras's) names and layouts, and the input preprocessing the model
//! expects. What the stack cannot express is an [`ImportError`] naming the
//! layer; nothing is written then.
pub mod error;
pub mod imported;
pub mod keras;
pub mod keras_config;
pub mod keras_h5;
pub mod onnx;
mod onnx_fold;
pub mod tensors;
pub mod tflite;

pub use error::ImportError;
pub use imported::Imported;

use shared::spec::ModelSpec;
use std::path::Path;

/// The file kinds `host import` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Keras,
    H5,
    Onnx,
    /// A TensorFlow Lite flatbuffer (becomes a model file, not a checkpoint).
    Tflite,
}

impl FileKind {
    /// By content first (zip, HDF5 signatures), then by extension (ONNX has no magic).
    pub fn detect(path: &Path) -> Result<FileKind, ImportError> {
        use std::io::Read;
        let mut head = [0u8; 8];
        let mut f =
            std::fs::File::open(path).map_err(|source| ImportError::Read { path: path.to_path_buf(), source })?;
        let n = f.read(&mut head).map_err(|source| ImportError::Read { path: path.to_path_buf(), source })?;
        let head = &head[..n];
        if head.starts_with(b"PK\x03\x04") {
            return Ok(FileKind::Keras);
        }
        if head.starts_with(b"\x89HDF\r\n\x1a\n") {
            return Ok(FileKind::H5);
        }
        if tflite::is_tflite(head) {
            return Ok(FileKind::Tflite);
        }
        match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
            Some("onnx") => Ok(FileKind::Onnx),
            _ => Err(ImportError::Format {
                path: path.to_path_buf(),
                what: "not a .keras (zip), .h5 (HDF5), .tflite (TFL3) or .onnx file".into(),
            }),
        }
    }
}

/// Read `path`; `stack` (spec and its name) is needed for weights-only files.
pub fn import(path: &Path, stack: Option<(&ModelSpec, &str)>) -> Result<Imported, ImportError> {
    match FileKind::detect(path)? {
        FileKind::Keras => keras::import_keras_zip(path),
        FileKind::H5 => keras::import_h5(path, stack),
        FileKind::Onnx => onnx::import_onnx(path),
        FileKind::Tflite => Err(ImportError::Format {
            path: path.to_path_buf(),
            what: "a .tflite model imports as a model file (tflite::import_tflite), not a checkpoint".into(),
        }),
    }
}

/// Class names from `--class-names`: a file with one name per line, or a
/// comma-separated list; default `class_0..class_{n-1}`.
pub fn class_names(arg: Option<&str>, outputs: usize) -> Result<Vec<String>, String> {
    let names: Vec<String> = match arg {
        None => return Ok((0..outputs).map(|i| format!("class_{i}")).collect()),
        Some(a) if Path::new(a).is_file() => std::fs::read_to_string(a)
            .map_err(|e| format!("reading class names from {a}: {e}"))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect(),
        Some(a) => a.split(',').map(|s| s.trim().to_string()).collect(),
    };
    if names.len() != outputs {
        return Err(format!("{} class names for a model with {outputs} outputs", names.len()));
    }
    if let Some(n) = names.iter().find(|n| n.is_empty() || n.chars().any(char::is_control)) {
        return Err(format!(
            "class name {:?}: class names must be non-empty, without control characters",
            crate::out::printable(n)
        ));
    }
    Ok(names)
}
