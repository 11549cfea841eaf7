//! What every importer yields, and the checkpoint it becomes. A leaf of the
//! import modules.
use crate::checkpoint::Checkpoint;
use crate::preprocess::Preprocess;
use ndarray::ArrayD;
use shared::spec::ModelSpec;
use std::collections::HashMap;

/// A model read from another framework's file.
#[derive(Clone, Debug)]
pub struct Imported {
    pub spec: ModelSpec,
    /// Under the stack's tensor names (`conv2d/kernel`, ...), Keras layouts.
    pub tensors: HashMap<String, ArrayD<f32>>,
    /// What the model expects of [0, 1] pixels (None: them as they are).
    pub preprocess: Option<Preprocess>,
    /// What it was read as, for the checkpoint's `arch` and for humans.
    pub source: String,
    /// Things the user should know (skipped layers, how weights were matched).
    pub notes: Vec<String>,
}

impl Imported {
    /// The checkpoint for this model with `class_names` (one per output).
    pub fn into_checkpoint(self, class_names: Vec<String>) -> Result<Checkpoint, String> {
        let outputs = self.spec.output().elements() as usize;
        if class_names.len() != outputs {
            return Err(format!("{} class names for a model with {outputs} outputs", class_names.len()));
        }
        let ck = Checkpoint {
            arch: format!("imported: {}", self.source),
            spec: self.spec,
            class_names,
            tensors: self.tensors,
            train: None,
            preprocess: self.preprocess,
        };
        // The same checks `Checkpoint::load` makes: hyperparameters in range,
        // finite weights, a network that fits the memory limit, tensors that
        // build it.
        crate::checkpoint::check_values(&ck.spec, &ck.tensors)?;
        crate::budget::check_network("the imported model", &ck.spec, 1, false).map_err(|e| e.to_string())?;
        ck.network().map_err(|e| e.to_string())?;
        Ok(ck)
    }
}
