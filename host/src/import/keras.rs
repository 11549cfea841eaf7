//! Keras files: `.keras` (Keras 3: a zip of `config.json` and
//! `model.weights.h5`), full-model `.h5` (tf.keras 2, or Keras 3's legacy
//! save: `model_config` plus `model_weights`), and weights-only `.h5` given
//! the stack (`save_weights`, how subclassed models are saved).
use super::error::ImportError;
use super::imported::Imported;
use super::keras_config::{self, KerasModel, WeightKind};
use super::keras_h5::{KerasH5, LayerVars};
use super::tensors::{natural_key, Kind, StackTensors, Tensor};
use crate::preprocess::Preprocess;
use serde_json::Value;
use shared::spec::ModelSpec;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// A `.keras` file.
pub fn import_keras_zip(path: &Path) -> Result<Imported, ImportError> {
    let fmt = |what: String| ImportError::Format { path: path.to_path_buf(), what };
    let file = std::fs::File::open(path).map_err(|source| ImportError::Read { path: path.to_path_buf(), source })?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| fmt(format!("not a .keras (zip) file: {e}")))?;
    let mut member = |name: &str| -> Result<Vec<u8>, ImportError> {
        let f = zip.by_name(name).map_err(|e| fmt(format!("no {name} inside: {e}")))?;
        // The inflated size the archive declares is held to the memory limit
        // before reading, and the reading itself stops at that size: a member
        // that inflates past what its header says is an error, not a bomb.
        // Its bytes and the tensors read from them are held at once: twice its size.
        let declared = f.size();
        crate::budget::check(
            &format!("{name}, inflated to {declared} bytes and then decoded,"),
            declared.saturating_mul(2),
        )
        .map_err(|e| fmt(e.to_string()))?;
        let mut bytes = Vec::with_capacity(declared.min(1 << 24) as usize);
        f.take(declared + 1).read_to_end(&mut bytes).map_err(|e| fmt(format!("reading {name}: {e}")))?;
        if bytes.len() as u64 != declared {
            return Err(fmt(format!(
                "{name} inflates to {}{} bytes, its header says {declared}",
                bytes.len(),
                if bytes.len() as u64 > declared { "+" } else { "" }
            )));
        }
        Ok(bytes)
    };
    let config = member("config.json")?;
    let weights = member("model.weights.h5")?;
    let config: Value = serde_json::from_slice(&config).map_err(|e| fmt(format!("config.json: {e}")))?;
    let model = keras_config::parse_for_import(&config, path)?;
    // The HDF5 bytes are dropped once the tensors are out: the full AlexNet's are 250 MB.
    let layers = KerasH5::from_bytes(weights, path)?.layers()?;
    by_name(&model, &layers, path, "keras (.keras)")
}

/// An `.h5` file: a full model, or weights only when `stack` is given.
pub fn import_h5(path: &Path, stack: Option<(&ModelSpec, &str)>) -> Result<Imported, ImportError> {
    let h5 = KerasH5::open(path)?;
    let layers = h5.layers()?;
    let config = h5.model_config()?;
    drop(h5);
    match (config, stack) {
        (_, Some((spec, arch))) => by_order(spec, arch, &layers, path),
        (Some(config), None) => {
            let config: Value = serde_json::from_str(&config)
                .map_err(|e| ImportError::Format { path: path.to_path_buf(), what: format!("model_config: {e}") })?;
            let model = keras_config::parse_for_import(&config, path)?;
            by_name(&model, &layers, path, "keras (.h5)")
        }
        (None, None) => Err(ImportError::Format {
            path: path.to_path_buf(),
            what: "holds weights only (no model_config): say which stack they belong to with --arch \
                   (a preset with --classes, or a stack file)"
                .into(),
        }),
    }
}

/// Weights matched to the config's layers by Keras layer name.
fn by_name(model: &KerasModel, layers: &[LayerVars], path: &Path, source: &str) -> Result<Imported, ImportError> {
    let found: HashMap<&str, &LayerVars> = layers.iter().map(|l| (l.name.as_str(), l)).collect();
    let missing = |name: &str| ImportError::Weights {
        path: path.to_path_buf(),
        what: format!("no weights for layer {name:?} in the file"),
    };
    let mut out = StackTensors::new(&model.spec, path);
    for w in &model.weight_layers {
        let vars = found.get(w.keras_name.as_str()).ok_or_else(|| missing(&w.keras_name))?;
        let tensors = place(w.kind, vars).map_err(|what| ImportError::Weights { path: path.to_path_buf(), what })?;
        let source = format!("layer {:?} at {}", w.keras_name, vars.location);
        match w.kind {
            WeightKind::FoldedBatchNorm { epsilon, .. } => out.fold_batch_norm(w.index, &source, tensors, epsilon)?,
            _ => out.put(w.index, &source, tensors)?,
        }
    }
    let mut preprocess = model.preprocess.clone();
    if let Some(norm) = &model.adapted {
        let vars = found.get(norm.keras_name.as_str()).ok_or_else(|| missing(&norm.keras_name))?;
        let (mean, var) = match vars.vars.as_slice() {
            [m, v, ..] => (&m.data, &v.data),
            _ => return Err(missing(&norm.keras_name)),
        };
        let (scale, offset) = keras_config::normalization_affine(mean, var);
        preprocess = Preprocess::then(norm.before.as_ref(), &scale, &offset).map_err(|e| ImportError::Unsupported {
            path: path.to_path_buf(),
            name: norm.keras_name.clone(),
            kind: "Normalization".into(),
            why: e,
            supported: super::error::KERAS_SUPPORTED,
        })?;
    }
    let mut notes = Vec::new();
    if !model.skipped.is_empty() {
        notes.push(format!("skipped (no effect at inference): {}", model.skipped.join(", ")));
    }
    Ok(Imported { spec: model.spec, tensors: out.finish()?, preprocess, source: source.into(), notes })
}

/// A layer's variables in [`super::tensors::expected`]'s order, with `None`
/// where Keras stores nothing (no bias, BN without scale or center).
fn place(kind: WeightKind, layer: &LayerVars) -> Result<Vec<Option<Tensor>>, String> {
    let mut v = layer.vars.iter().cloned();
    let mut next =
        |what: &str| v.next().ok_or_else(|| format!("layer {:?} at {} has no {what}", layer.name, layer.location));
    let out = match kind {
        WeightKind::Conv { use_bias } | WeightKind::Dense { use_bias } => {
            vec![Some(next("kernel")?), if use_bias { Some(next("bias")?) } else { None }]
        }
        WeightKind::Depthwise { use_bias } => {
            vec![Some(depthwise(next("depthwise kernel")?)?), if use_bias { Some(next("bias")?) } else { None }]
        }
        WeightKind::SeparableDepthwise => {
            // The pointwise kernel and bias belong to the next stack layer.
            return Ok(vec![Some(depthwise(next("depthwise kernel")?)?), None]);
        }
        WeightKind::SeparablePointwise { use_bias } => {
            next("depthwise kernel")?;
            vec![Some(next("pointwise kernel")?), if use_bias { Some(next("bias")?) } else { None }]
        }
        WeightKind::BatchNorm { scale, center } | WeightKind::FoldedBatchNorm { scale, center, .. } => vec![
            if scale { Some(next("gamma")?) } else { None },
            if center { Some(next("beta")?) } else { None },
            Some(next("moving mean")?),
            Some(next("moving variance")?),
        ],
    };
    if let Some(extra) = v.next() {
        return Err(format!("layer {:?} has an unexpected extra tensor {}", layer.name, extra.location));
    }
    Ok(out)
}

/// Keras's depthwise kernel `[kh, kw, in, multiplier]` as our grouped one
/// `[kh, kw, 1, in * multiplier]`: the same values in the same order.
fn depthwise(mut t: Tensor) -> Result<Tensor, String> {
    let [kh, kw, cin, m] = t.shape[..] else {
        return Err(format!(
            "{}: a depthwise kernel of shape {:?} is not [kh, kw, in, multiplier]",
            t.location, t.shape
        ));
    };
    t.shape = vec![kh, kw, 1, cin * m];
    Ok(t)
}

/// Weights-only: the file's layers matched to `spec`'s by kind, in creation
/// (name) order within each kind, and checked shape by shape.
fn by_order(spec: &ModelSpec, arch: &str, layers: &[LayerVars], path: &Path) -> Result<Imported, ImportError> {
    let err = |what: String| ImportError::Weights { path: path.to_path_buf(), what };
    let kind_of = |l: &LayerVars| -> Option<Kind> {
        let ranks: Vec<usize> = l.vars.iter().map(|t| t.shape.len()).collect();
        match ranks.as_slice() {
            [4] | [4, 1] => Some(Kind::Conv),
            [2] | [2, 1] => Some(Kind::Dense),
            [1, 1, 1, 1] => Some(Kind::BatchNorm),
            _ => None,
        }
    };
    let mut by_kind: std::collections::BTreeMap<Kind, Vec<&LayerVars>> = Default::default();
    for l in layers {
        let k = kind_of(l).ok_or_else(|| {
            let shapes: Vec<&Vec<usize>> = l.vars.iter().map(|t| &t.shape).collect();
            err(format!(
                "layer {:?} at {} holds tensors of shapes {shapes:?}, which fit no Conv2D, BatchNormalization or Dense",
                l.name, l.location
            ))
        })?;
        by_kind.entry(k).or_default().push(l);
    }
    for v in by_kind.values_mut() {
        v.sort_by_key(|l| natural_key(&l.name));
    }
    let mut out = StackTensors::new(spec, path);
    let mut used: HashMap<Kind, usize> = HashMap::new();
    for (i, layer) in spec.layers().iter().enumerate() {
        let Some(kind) = Kind::of(layer) else { continue };
        let n = used.entry(kind).or_default();
        let file_layers = by_kind.get(&kind).map(Vec::as_slice).unwrap_or(&[]);
        let l = file_layers.get(*n).ok_or_else(|| {
            err(format!(
                "the file has {} {} layers; the stack {arch} needs more (its layer {i}, {}, has none)",
                file_layers.len(),
                kind.name(),
                spec.layer_name(i)
            ))
        })?;
        *n += 1;
        let mut tensors: Vec<Option<Tensor>> = l.vars.iter().cloned().map(Some).collect();
        if tensors.len() == 1 {
            tensors.push(None); // no bias
        }
        out.put(i, &format!("layer {:?} at {}", l.name, l.location), tensors)?;
    }
    for (kind, file_layers) in &by_kind {
        let n = used.get(kind).copied().unwrap_or(0);
        if let Some(extra) = file_layers.get(n) {
            return Err(err(format!(
                "the file has {} {} layers, the stack {arch} only {n}: {:?} at {} is left over",
                file_layers.len(),
                kind.name(),
                extra.name,
                extra.location
            )));
        }
    }
    Ok(Imported {
        spec: *spec,
        tensors: out.finish()?,
        preprocess: None,
        source: format!("keras weights only, onto {arch}"),
        notes: vec![format!("weights matched to {arch} by layer kind in creation order, every shape checked")],
    })
}
