//! What `--arch` names: a preset from [`shared::spec::Arch`], or a file that
//! describes a Sequential stack — a Keras `model.to_json()` document (a user's
//! variant of the tutorial's model) or the layer JSON our checkpoints carry.
use crate::import::keras_config;
use crate::preprocess::Preprocess;
use shared::spec::{Arch, ModelSpec};
use std::path::{Path, PathBuf};

/// A preset or a stack file.
#[derive(Clone, Debug, PartialEq)]
pub enum ArchSource {
    Preset(Arch),
    File(PathBuf),
}

/// A stack ready to build a network.
#[derive(Clone, Debug)]
pub struct Stack {
    pub spec: ModelSpec,
    /// The input preprocessing a Keras stack file asks for (`Rescaling`...).
    pub preprocess: Option<Preprocess>,
    /// The name recorded in checkpoints (`alexnet-micro`, `file:my_model.json`).
    pub name: String,
}

impl ArchSource {
    /// `--arch`: a preset name, else an existing `.json` file; the error
    /// lists the presets.
    pub fn parse(s: &str) -> Result<ArchSource, String> {
        if let Some(a) = Arch::from_name(s) {
            return Ok(ArchSource::Preset(a));
        }
        if Path::new(s).is_file() {
            return Ok(ArchSource::File(PathBuf::from(s)));
        }
        let names: Vec<_> = Arch::ALL.iter().map(|a| a.name()).collect();
        Err(format!(
            "{s:?} is neither a preset ({}) nor a stack file (Keras model.to_json() or a checkpoint's layer JSON)",
            names.join(", ")
        ))
    }

    pub fn name(&self) -> String {
        match self {
            ArchSource::Preset(a) => a.name().to_string(),
            ArchSource::File(p) => format!("file:{}", p.display()),
        }
    }

    /// The stack for `classes` outputs at `input` (presets: default size when
    /// None). A stack file fixes both: asking for others is an error.
    pub fn build(&self, input: Option<u32>, classes: u32) -> Result<Stack, String> {
        self.build_with(input, Some(classes))
    }

    /// [`ArchSource::build`] where the class count may be left to the stack
    /// file (a preset needs one): the file is read once.
    pub fn build_with(&self, input: Option<u32>, classes: Option<u32>) -> Result<Stack, String> {
        match self {
            ArchSource::Preset(a) => {
                let classes =
                    classes.ok_or_else(|| format!("the preset {} needs a class count (--classes)", a.name()))?;
                let size = input.unwrap_or(a.default_input());
                let spec = a.build(size, classes).map_err(|e| format!("{} at {size}x{size}x3: {e}", a.name()))?;
                Ok(Stack { spec, preprocess: None, name: self.name() })
            }
            ArchSource::File(p) => {
                let (spec, preprocess) = load_stack_file(p)?;
                let outputs = spec.output().elements();
                let classes = classes.map_or(outputs, u64::from);
                if outputs != classes {
                    return Err(format!(
                        "{} ends in {outputs} outputs but there are {classes} classes (edit its last Dense layer)",
                        p.display()
                    ));
                }
                if let Some(size) = input {
                    if spec.input().hw() != (size as usize, size as usize) {
                        let (h, w) = spec.input().hw();
                        return Err(format!("{} takes {h}x{w} inputs, not --input {size}", p.display()));
                    }
                }
                Ok(Stack { spec, preprocess, name: self.name() })
            }
        }
    }
}

/// Read a stack file: Keras's `to_json()` or our layer JSON.
pub fn load_stack_file(path: &Path) -> Result<(ModelSpec, Option<Preprocess>), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    if keras_config::is_keras_config(&v) {
        let m = keras_config::parse(&v, path).map_err(|e| e.to_string())?;
        return Ok((m.spec, m.preprocess));
    }
    let spec = crate::checkpoint::spec_from_json(&v).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((spec, None))
}
