//! Imported tensors onto the layer stack's tensor names and shapes (Keras's
//! names and layouts, which our checkpoints use): one place that says what
//! each layer holds, for every importer.
use super::error::ImportError;
use ndarray::{ArrayD, IxDyn};
use shared::spec::{Layer, ModelSpec};
use std::collections::HashMap;
use std::path::Path;

/// A tensor read from a file, with where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// Where in the source file (dataset path, initializer name).
    pub location: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// The kind of a stack layer that carries weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Conv,
    BatchNorm,
    Dense,
}

impl Kind {
    pub fn of(layer: &Layer) -> Option<Kind> {
        match layer {
            Layer::Conv2D(_) => Some(Kind::Conv),
            Layer::BatchNorm { .. } => Some(Kind::BatchNorm),
            Layer::Dense { .. } => Some(Kind::Dense),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Kind::Conv => "Conv2D",
            Kind::BatchNorm => "BatchNormalization",
            Kind::Dense => "Dense",
        }
    }
}

/// Layer `index`'s tensors as (name, shape), in Keras's order: kernel and
/// bias; gamma, beta, moving mean and moving variance.
pub fn expected(spec: &ModelSpec, index: usize) -> Vec<(String, Vec<usize>)> {
    let Some((_, layer, input, _)) = spec.shapes().nth(index) else { return Vec::new() };
    let name = spec.layer_name(index).to_string();
    let cin = input.channels() as usize;
    let t = |suffix: &str, shape: Vec<usize>| (format!("{name}/{suffix}"), shape);
    match *layer {
        Layer::Conv2D(c) => {
            let (kh, kw, f) = (c.kernel.h as usize, c.kernel.w as usize, c.filters as usize);
            let per_group = cin / c.groups.max(1) as usize;
            vec![t("kernel", vec![kh, kw, per_group, f]), t("bias", vec![f])]
        }
        Layer::BatchNorm { .. } => {
            ["gamma", "beta", "moving_mean", "moving_variance"].map(|s| t(s, vec![cin])).to_vec()
        }
        Layer::Dense { units, .. } => {
            let nin = input.elements() as usize;
            vec![t("kernel", vec![nin, units as usize]), t("bias", vec![units as usize])]
        }
        _ => Vec::new(),
    }
}

/// Collects a whole stack's tensors, checking each against [`expected`].
pub struct StackTensors<'a> {
    spec: &'a ModelSpec,
    path: &'a Path,
    pub map: HashMap<String, ArrayD<f32>>,
}

impl<'a> StackTensors<'a> {
    pub fn new(spec: &'a ModelSpec, path: &'a Path) -> Self {
        StackTensors { spec, path, map: HashMap::new() }
    }

    fn err(&self, what: String) -> ImportError {
        ImportError::Weights { path: self.path.to_path_buf(), what }
    }

    /// Layer `index`'s tensors, in [`expected`]'s order; `None` entries get
    /// Keras's value for an absent variable (bias 0, gamma 1, beta 0).
    /// `source` names the file's layer in errors.
    pub fn put(&mut self, index: usize, source: &str, tensors: Vec<Option<Tensor>>) -> Result<(), ImportError> {
        let want = expected(self.spec, index);
        if tensors.len() != want.len() {
            return Err(self.err(format!(
                "{source} holds {} tensors; layer {} of the stack ({}) needs {}",
                tensors.len(),
                index,
                self.spec.layer_name(index),
                want.len()
            )));
        }
        for ((name, shape), t) in want.into_iter().zip(tensors) {
            let arr = match t {
                Some(t) => {
                    if t.shape != shape {
                        return Err(self.err(format!(
                            "{} ({source}) has shape {:?}; the stack's {name} needs {shape:?}",
                            t.location, t.shape
                        )));
                    }
                    if let Some(bad) = t.data.iter().find(|v| !v.is_finite()) {
                        return Err(self.err(format!("{} ({source}) holds the non-finite value {bad}", t.location)));
                    }
                    ArrayD::from_shape_vec(IxDyn(&shape), t.data).map_err(|e| self.err(format!("{name}: {e}")))?
                }
                None => {
                    let fill = if name.ends_with("/gamma") || name.ends_with("/moving_variance") { 1.0 } else { 0.0 };
                    ArrayD::from_elem(IxDyn(&shape), fill)
                }
            };
            self.map.insert(name, arr);
        }
        Ok(())
    }

    /// Fold a BatchNormalization that reads only layer `index` (a Conv2D or
    /// Dense without activation, already [`StackTensors::put`]) into its
    /// kernel and bias: with `s = gamma / sqrt(variance + epsilon)` per output
    /// channel, `kernel[.., o] *= s[o]` and `bias[o] = (bias[o] - mean[o]) *
    /// s[o] + beta[o]`. In real arithmetic this is exactly
    /// `BN(conv(x)) = conv'(x)` (TFLite's converter folds the same way);
    /// in floats it differs by rounding only (computed here in f64).
    /// `tensors` are gamma, beta, moving mean and moving variance, `None`
    /// for Keras's absent gamma (1) or beta (0).
    pub fn fold_batch_norm(
        &mut self,
        index: usize,
        source: &str,
        tensors: Vec<Option<Tensor>>,
        epsilon: f32,
    ) -> Result<(), ImportError> {
        let name = self.spec.layer_name(index).to_string();
        let (kernel_name, bias_name) = (format!("{name}/kernel"), format!("{name}/bias"));
        let units = match self.map.get(&bias_name) {
            Some(b) if self.map.contains_key(&kernel_name) => b.len(),
            _ => {
                return Err(self.err(format!(
                    "{source}: the batch normalization folds into layer {index} ({name}), which has no weights yet"
                )))
            }
        };
        let [gamma, beta, mean, var] = <[Option<Tensor>; 4]>::try_from(tensors)
            .map_err(|t| self.err(format!("{source} holds {} tensors; a batch normalization has 4", t.len())))?;
        let values = |t: Option<Tensor>, what: &str, fill: f32| -> Result<Vec<f64>, ImportError> {
            let Some(t) = t else { return Ok(vec![fill as f64; units]) };
            if t.shape != [units] {
                return Err(self.err(format!(
                    "{} ({source}): its {what} has shape {:?}; the layer {name} it folds into has {units} channels",
                    t.location, t.shape
                )));
            }
            if let Some(bad) = t.data.iter().find(|v| !v.is_finite()) {
                return Err(self.err(format!("{} ({source}) holds the non-finite value {bad}", t.location)));
            }
            Ok(t.data.iter().map(|&v| v as f64).collect())
        };
        let (gamma, beta) = (values(gamma, "gamma", 1.0)?, values(beta, "beta", 0.0)?);
        let (mean, var) = (values(mean, "moving mean", 0.0)?, values(var, "moving variance", 1.0)?);
        let mut scale = Vec::with_capacity(units);
        for (o, (&g, &v)) in gamma.iter().zip(&var).enumerate() {
            let denominator = (v + epsilon as f64).sqrt();
            if !(denominator > 0.0 && denominator.is_finite()) {
                return Err(self.err(format!(
                    "{source}: channel {o}'s moving variance {v} plus epsilon {epsilon} is not positive"
                )));
            }
            scale.push(g / denominator);
        }
        let fold = |x: f64, o: usize| x * scale[o];
        if let Some(kernel) = self.map.get_mut(&kernel_name) {
            for (k, w) in kernel.iter_mut().enumerate() {
                *w = fold(*w as f64, k % units) as f32;
            }
        }
        if let Some(bias) = self.map.get_mut(&bias_name) {
            for (o, b) in bias.iter_mut().enumerate() {
                *b = ((*b as f64 - mean[o]) * scale[o] + beta[o]) as f32;
            }
        }
        let bad = [&kernel_name, &bias_name]
            .into_iter()
            .find(|n| self.map.get(*n).is_some_and(|t| t.iter().any(|v| !v.is_finite())));
        if let Some(n) = bad {
            return Err(self.err(format!("{source}: folding it into {n} overflows to a non-finite value")));
        }
        Ok(())
    }

    /// Every weight layer must have been filled.
    pub fn finish(self) -> Result<HashMap<String, ArrayD<f32>>, ImportError> {
        for (i, layer) in self.spec.layers().iter().enumerate() {
            if Kind::of(layer).is_some() && !expected(self.spec, i).iter().all(|(n, _)| self.map.contains_key(n)) {
                return Err(self.err(format!("no weights for layer {i} ({})", self.spec.layer_name(i))));
            }
        }
        Ok(self.map)
    }
}

/// Sort key that puts `conv2d`, `conv2d_1`, `conv2d_2`, `conv2d_10` in
/// creation order (Keras numbers auto-named layers as it creates them).
pub fn natural_key(name: &str) -> (String, u64) {
    match name.rsplit_once('_') {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            (base.to_string(), n.parse::<u64>().map_or(u64::MAX, |v| v + 1))
        }
        _ => (name.to_string(), 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order_is_creation_order() {
        let mut v = vec!["conv2d_10", "conv2d_2", "conv2d", "conv2d_1"];
        v.sort_by_key(|n| natural_key(n));
        assert_eq!(v, ["conv2d", "conv2d_1", "conv2d_2", "conv2d_10"]);
    }
}
