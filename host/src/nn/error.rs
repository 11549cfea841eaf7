//! Why tensors, labels or inputs could not be used.
use shared::spec::Shape;

/// Why tensors or labels could not be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NnError {
    #[error("tensor {name:?} is missing (the checkpoint does not match this model)")]
    Missing { name: String },
    #[error("tensor {name:?} has shape {got:?}, this model needs {expected:?}")]
    Shape { name: String, expected: Vec<usize>, got: Vec<usize> },
    #[error("tensor {name:?} holds a non-finite value")]
    NonFinite { name: String },
    #[error("label {label} of example {index} is out of range for {classes} classes")]
    Label { index: usize, label: usize, classes: usize },
    #[error("{labels} labels for a batch of {batch}")]
    LabelCount { labels: usize, batch: usize },
    #[error("an input transform for {got} channels on a model input of {channels} channels")]
    Preprocess { got: usize, channels: usize },
    #[error(
        "the network computed {value} for {what}: its weights overflow f32 arithmetic \
         (finite but far too large values?)"
    )]
    NonFiniteOutput { what: String, value: f32 },
    #[error("input of shape {got:?} does not match the model input {expected}")]
    Input { got: Vec<usize>, expected: Shape },
}
