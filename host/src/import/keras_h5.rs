//! Keras weights out of HDF5, read with `hdf5-pure` (pure Rust: no libhdf5 to
//! install, the same on every OS).
//!
//! Two layouts exist:
//! - Keras 3 (`model.weights.h5` inside a `.keras` zip, and `save_weights`):
//!   every layer's variables are datasets `0`, `1`, ... of a group `vars`
//!   whose `name` attribute is the layer's name, under `layers/<name>/` for a
//!   Sequential model and under the attribute names (`c1/`, `b1/`) for a
//!   subclassed one.
//! - tf.keras 2 and Keras 3's legacy `.h5` (`model.save("x.h5")`): the root
//!   (or a `model_weights` group) lists `layer_names`; each layer group lists
//!   `weight_names`, the dataset paths inside it. The full-model file also
//!   carries the architecture as the root's `model_config` attribute.
use super::error::ImportError;
use super::tensors::Tensor;
use hdf5_pure::{AttrValue, File, Group};
use std::path::Path;

/// How deep groups may nest in a Keras 3 weights file (Keras nests a few levels).
pub const MAX_DEPTH: usize = 32;

/// How many groups a Keras 3 weights file may hold (the full AlexNet has ~60).
pub const MAX_GROUPS: usize = 100_000;

/// One layer's variables in the file's order, with the layer's Keras name.
#[derive(Clone, Debug)]
pub struct LayerVars {
    /// The Keras layer name (`conv2d_3`).
    pub name: String,
    /// Where in the file (for error messages).
    pub location: String,
    pub vars: Vec<Tensor>,
}

/// An open HDF5 file with Keras weights.
pub struct KerasH5<'p> {
    file: File,
    path: &'p Path,
}

impl<'p> KerasH5<'p> {
    pub fn open(path: &'p Path) -> Result<Self, ImportError> {
        crate::budget::check_file("the HDF5 file", path)
            .map_err(|e| ImportError::Format { path: path.to_path_buf(), what: e.to_string() })?;
        let bytes = std::fs::read(path).map_err(|source| ImportError::Read { path: path.to_path_buf(), source })?;
        Self::from_bytes(bytes, path)
    }

    pub fn from_bytes(bytes: Vec<u8>, path: &'p Path) -> Result<Self, ImportError> {
        let file = File::from_bytes(bytes).map_err(|e| ImportError::Format {
            path: path.to_path_buf(),
            what: format!("not a readable HDF5 file: {e}"),
        })?;
        Ok(KerasH5 { file, path })
    }

    fn err(&self, what: impl Into<String>) -> ImportError {
        ImportError::Format { path: self.path.to_path_buf(), what: what.into() }
    }

    /// The `model_config` attribute of a full-model `.h5` (None for weights only).
    pub fn model_config(&self) -> Result<Option<String>, ImportError> {
        let attrs = self.file.root().attrs().map_err(|e| self.err(format!("reading the root attributes: {e}")))?;
        Ok(attrs.get("model_config").and_then(attr_string))
    }

    /// Every layer's variables, in the file's layer order (legacy layout:
    /// `layer_names`; Keras 3: the order groups are listed in).
    pub fn layers(&self) -> Result<Vec<LayerVars>, ImportError> {
        let root = self.file.root();
        let legacy = if self.file.group("model_weights").is_ok() { Some("model_weights") } else { None };
        let base = match legacy {
            Some(p) => self.file.group(p).map_err(|e| self.err(format!("group {p}: {e}")))?,
            None => root,
        };
        let attrs = base.attrs().map_err(|e| self.err(format!("reading attributes: {e}")))?;
        if let Some(names) = attrs.get("layer_names").and_then(attr_strings) {
            return self.legacy_layers(&base, legacy.unwrap_or(""), &names);
        }
        let mut out = Vec::new();
        self.walk(&self.file.root(), "", &mut out)?;
        Ok(out)
    }

    /// tf.keras 2 layout: `layer_names`, then each layer's `weight_names`.
    fn legacy_layers(&self, base: &Group, prefix: &str, names: &[String]) -> Result<Vec<LayerVars>, ImportError> {
        let mut out = Vec::new();
        for name in names {
            let g = base.group(name).map_err(|e| self.err(format!("layer group {prefix}/{name} is missing: {e}")))?;
            let attrs = g.attrs().map_err(|e| self.err(format!("reading {prefix}/{name}'s attributes: {e}")))?;
            let weight_names = attrs.get("weight_names").and_then(attr_strings).unwrap_or_default();
            let mut vars = Vec::new();
            for w in &weight_names {
                let location = format!("{prefix}/{name}/{w}");
                let ds = g.dataset(w).map_err(|e| self.err(format!("dataset {location} is missing: {e}")))?;
                vars.push(self.tensor(&ds, &location)?);
            }
            if !vars.is_empty() {
                out.push(LayerVars { name: name.clone(), location: format!("{prefix}/{name}"), vars });
            }
        }
        Ok(out)
    }

    /// Keras 3 layout: every `vars` group with datasets `0..n`.
    ///
    /// An HDF5 group can be hard-linked below itself (`f["b1/loop"] = f["/"]`
    /// in h5py), and hdf5-pure exposes no object address to recognise a group
    /// seen before, so the walk is bounded instead: at most [`MAX_DEPTH`]
    /// groups deep and [`MAX_GROUPS`] groups in all, each bound an error
    /// naming where it was hit. Children are opened as they are listed
    /// (`iter_groups`), not looked up again by name, which made a group with
    /// many members quadratic.
    fn walk(&self, g: &Group, at: &str, out: &mut Vec<LayerVars>) -> Result<(), ImportError> {
        let mut visited = 0usize;
        self.walk_bounded(g, at, 0, &mut visited, out)
    }

    fn walk_bounded(
        &self,
        g: &Group,
        at: &str,
        depth: usize,
        visited: &mut usize,
        out: &mut Vec<LayerVars>,
    ) -> Result<(), ImportError> {
        if depth > MAX_DEPTH {
            return Err(
                self.err(format!("groups nest more than {MAX_DEPTH} deep at {at}/ (a group linked inside itself?)"))
            );
        }
        let children = g.iter_groups().map_err(|e| self.err(format!("listing {at}/: {e}")))?;
        for (child, cg) in children {
            *visited += 1;
            if *visited > MAX_GROUPS {
                return Err(self.err(format!(
                    "more than {MAX_GROUPS} groups (at {at}/{child}): not a Keras weights file, \
                     or a group linked inside itself"
                )));
            }
            let path = format!("{at}/{child}");
            if child == "vars" {
                let mut sets: Vec<(String, hdf5_pure::Dataset)> =
                    cg.iter_datasets().map_err(|e| self.err(format!("listing {path}: {e}")))?.collect();
                if sets.is_empty() {
                    continue;
                }
                sets.sort_by_key(|(n, _)| n.parse::<u64>().unwrap_or(u64::MAX));
                let mut vars = Vec::new();
                for (n, ds) in &sets {
                    vars.push(self.tensor(ds, &format!("{path}/{n}"))?);
                }
                let attrs = cg.attrs().map_err(|e| self.err(format!("reading {path}'s attributes: {e}")))?;
                let name = attrs
                    .get("name")
                    .and_then(attr_string)
                    .unwrap_or_else(|| at.rsplit('/').next().unwrap_or("").to_string());
                out.push(LayerVars { name, location: at.to_string(), vars });
            } else {
                self.walk_bounded(&cg, &path, depth + 1, visited, out)?;
            }
        }
        Ok(())
    }

    fn tensor(&self, ds: &hdf5_pure::Dataset, location: &str) -> Result<Tensor, ImportError> {
        let dims = ds.shape().map_err(|e| self.err(format!("{location}: {e}")))?;
        // The declared size, held to the memory limit before it is read.
        let count = dims.iter().try_fold(1u64, |n, &d| n.checked_mul(d));
        let count = count.ok_or_else(|| self.err(format!("{location}: shape {dims:?} overflows")))?;
        crate::budget::check_elements(&format!("{location} (shape {dims:?})"), count, 4)
            .map_err(|e| self.err(e.to_string()))?;
        let shape: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
        let data = ds.read_f32().map_err(|e| self.err(format!("{location}: cannot read as numbers: {e}")))?;
        if data.len() != shape.iter().product::<usize>() {
            return Err(self.err(format!("{location}: {} values for shape {shape:?}", data.len())));
        }
        Ok(Tensor { location: location.to_string(), shape, data })
    }
}

fn attr_string(v: &AttrValue) -> Option<String> {
    match v {
        AttrValue::String(s)
        | AttrValue::AsciiString(s)
        | AttrValue::VarLenString(s)
        | AttrValue::VarLenAsciiString(s) => Some(s.clone()),
        AttrValue::StringSized { value, .. } | AttrValue::AsciiStringSized { value, .. } => Some(value.clone()),
        AttrValue::StringArray(a)
        | AttrValue::AsciiStringArray(a)
        | AttrValue::VarLenStringArray(a)
        | AttrValue::VarLenAsciiStringArray(a)
            if a.len() == 1 =>
        {
            Some(a[0].clone())
        }
        AttrValue::U8Array(b) => String::from_utf8(b.clone()).ok(),
        _ => None,
    }
}

/// A list of names (empty lists are stored as float arrays by h5py).
fn attr_strings(v: &AttrValue) -> Option<Vec<String>> {
    match v {
        AttrValue::StringArray(a)
        | AttrValue::AsciiStringArray(a)
        | AttrValue::VarLenStringArray(a)
        | AttrValue::VarLenAsciiStringArray(a) => Some(a.clone()),
        AttrValue::StringArraySized { values, .. } | AttrValue::AsciiStringArraySized { values, .. } => {
            Some(values.clone())
        }
        AttrValue::F64Array(a) if a.is_empty() => Some(Vec::new()),
        AttrValue::F32Array(a) if a.is_empty() => Some(Vec::new()),
        other => attr_string(other).map(|s| vec![s]),
    }
}
