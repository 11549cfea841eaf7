//! Checkpoints: one safetensors file with the network's tensors (Keras names
//! and layouts), the optimizer's state (`optimizer/...`), and JSON metadata
//! with everything needed to rebuild the model and continue training
//! exactly: the layer stack, class names, epoch and step, seed and settings,
//! scheduler state and the history so far.
//!
//! The quantizer reads the same file: [`Checkpoint::load`] gives the
//! [`ModelSpec`], the class names and the tensor map, and
//! [`Checkpoint::network`] a ready float network.
use crate::nn::{Network, NnError};
use crate::preprocess::Preprocess;
use crate::report::EpochRecord;
use ndarray::{ArrayD, IxDyn};
use safetensors::tensor::Dtype;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use shared::spec::{Activation, AvgPool2D, Conv2D, Hw, Inputs, Layer, ModelSpec, Padding, Shape};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Value of the `format` metadata key; bumped when the layout changes.
/// Version 2 always records tensor checksums: a `/2` file without them is
/// refused; a `/1` file (written before checksums existed) loads with a warning.
pub const FORMAT: &str = "host-checkpoint/2";

/// The format written before every file recorded its tensor checksums.
pub const FORMAT_V1: &str = "host-checkpoint/1";

/// Why a checkpoint could not be written or used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read checkpoint {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write checkpoint {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{} is not a safetensors file: {source}", path.display())]
    Format { path: PathBuf, source: safetensors::SafeTensorError },
    #[error("checkpoint {}: {what}", path.display())]
    Invalid { path: PathBuf, what: String },
    #[error("checkpoint {} does not fit its own layer stack: {source}", path.display())]
    Tensors { path: PathBuf, source: NnError },
}

/// The training-run state saved with the weights (the `train` metadata key).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainMeta {
    /// Epochs completed.
    pub epoch: usize,
    /// Batches already done of epoch `epoch` (non-zero only after an interrupt).
    pub step: usize,
    pub seed: u64,
    pub batch_size: usize,
    pub val_split: f32,
    /// The dataset folder, or None for the embedded set.
    pub data_dir: Option<PathBuf>,
    /// Images per class of the embedded set.
    pub per_class: usize,
    /// A description of the data, for humans.
    pub data: String,
    pub augment: bool,
    pub optimizer: OptimizerMeta,
    pub schedule: ScheduleMeta,
    /// Learning-rate scheduler state after `epoch` epochs.
    pub scheduler: SchedulerMeta,
    /// Partial sums of the interrupted epoch (zero at an epoch boundary).
    pub running: Running,
    pub history: Vec<EpochRecord>,
    /// Best validation accuracy so far (decides `best.safetensors`).
    pub best_val_accuracy: Option<f32>,
    /// How the random streams are derived; recorded so that the run's
    /// randomness is reproducible from the metadata alone.
    pub rng: String,
}

/// Running sums of a partly done epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Running {
    pub loss_sum: f64,
    pub correct: u64,
    pub seen: u64,
    pub seconds: f64,
    pub skipped: u64,
}

/// The optimizer kind and hyperparameters, serialisable as
/// `{"name": "adam", "lr": ..., ...}`.
///
/// Read and written through the flat [`TaggedRepr`] rather than serde's
/// internally tagged enums: those buffer numbers through `deserialize_any`,
/// which breaks as soon as any crate in the build turns on serde_json's
/// `arbitrary_precision` (defmt-decoder does).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "TaggedRepr", into = "TaggedRepr")]
pub enum OptimizerMeta {
    Adam { lr: f32, beta1: f32, beta2: f32, epsilon: f32 },
    Sgd { lr: f32, momentum: f32, weight_decay: f32 },
}

impl From<crate::optim::OptimizerKind> for OptimizerMeta {
    fn from(k: crate::optim::OptimizerKind) -> Self {
        use crate::optim::OptimizerKind as K;
        match k {
            K::Adam { lr, beta1, beta2, epsilon } => OptimizerMeta::Adam { lr, beta1, beta2, epsilon },
            K::Sgd { lr, momentum, weight_decay } => OptimizerMeta::Sgd { lr, momentum, weight_decay },
        }
    }
}

impl From<OptimizerMeta> for crate::optim::OptimizerKind {
    fn from(k: OptimizerMeta) -> Self {
        use crate::optim::OptimizerKind as K;
        match k {
            OptimizerMeta::Adam { lr, beta1, beta2, epsilon } => K::Adam { lr, beta1, beta2, epsilon },
            OptimizerMeta::Sgd { lr, momentum, weight_decay } => K::Sgd { lr, momentum, weight_decay },
        }
    }
}

/// The learning-rate schedule, serialisable as `{"name": "step", ...}`
/// (through [`TaggedRepr`], like [`OptimizerMeta`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "TaggedRepr", into = "TaggedRepr")]
pub enum ScheduleMeta {
    Constant,
    Step { every: usize, factor: f32 },
    Plateau { patience: usize, factor: f32, min_lr: f32 },
}

impl From<crate::optim::LrSchedule> for ScheduleMeta {
    fn from(s: crate::optim::LrSchedule) -> Self {
        use crate::optim::LrSchedule as S;
        match s {
            S::Constant => ScheduleMeta::Constant,
            S::Step { every, factor } => ScheduleMeta::Step { every, factor },
            S::Plateau { patience, factor, min_lr } => ScheduleMeta::Plateau { patience, factor, min_lr },
        }
    }
}

impl From<ScheduleMeta> for crate::optim::LrSchedule {
    fn from(s: ScheduleMeta) -> Self {
        use crate::optim::LrSchedule as S;
        match s {
            ScheduleMeta::Constant => S::Constant,
            ScheduleMeta::Step { every, factor } => S::Step { every, factor },
            ScheduleMeta::Plateau { patience, factor, min_lr } => S::Plateau { patience, factor, min_lr },
        }
    }
}

/// The flat JSON form of [`OptimizerMeta`] and [`ScheduleMeta`]: a `name`
/// and the variant's fields, absent ones omitted.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TaggedRepr {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lr: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    beta1: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    beta2: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    epsilon: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    momentum: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    weight_decay: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    every: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    patience: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    factor: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min_lr: Option<f32>,
}

/// A field a tagged value needs, or an error naming it.
fn field<T>(v: Option<T>, name: &str, field: &str) -> Result<T, String> {
    v.ok_or_else(|| format!("{name:?} is missing {field:?}"))
}

impl TryFrom<TaggedRepr> for OptimizerMeta {
    type Error = String;
    fn try_from(r: TaggedRepr) -> Result<Self, String> {
        let n = r.name.as_str();
        match n {
            "adam" => Ok(OptimizerMeta::Adam {
                lr: field(r.lr, n, "lr")?,
                beta1: field(r.beta1, n, "beta1")?,
                beta2: field(r.beta2, n, "beta2")?,
                epsilon: field(r.epsilon, n, "epsilon")?,
            }),
            "sgd" => Ok(OptimizerMeta::Sgd {
                lr: field(r.lr, n, "lr")?,
                momentum: field(r.momentum, n, "momentum")?,
                weight_decay: field(r.weight_decay, n, "weight_decay")?,
            }),
            other => Err(format!("unknown optimizer {other:?}")),
        }
    }
}

impl From<OptimizerMeta> for TaggedRepr {
    fn from(o: OptimizerMeta) -> Self {
        match o {
            OptimizerMeta::Adam { lr, beta1, beta2, epsilon } => TaggedRepr {
                name: "adam".into(),
                lr: Some(lr),
                beta1: Some(beta1),
                beta2: Some(beta2),
                epsilon: Some(epsilon),
                ..Default::default()
            },
            OptimizerMeta::Sgd { lr, momentum, weight_decay } => TaggedRepr {
                name: "sgd".into(),
                lr: Some(lr),
                momentum: Some(momentum),
                weight_decay: Some(weight_decay),
                ..Default::default()
            },
        }
    }
}

impl TryFrom<TaggedRepr> for ScheduleMeta {
    type Error = String;
    fn try_from(r: TaggedRepr) -> Result<Self, String> {
        let n = r.name.as_str();
        match n {
            "constant" => Ok(ScheduleMeta::Constant),
            "step" => {
                Ok(ScheduleMeta::Step { every: field(r.every, n, "every")?, factor: field(r.factor, n, "factor")? })
            }
            "plateau" => Ok(ScheduleMeta::Plateau {
                patience: field(r.patience, n, "patience")?,
                factor: field(r.factor, n, "factor")?,
                min_lr: field(r.min_lr, n, "min_lr")?,
            }),
            other => Err(format!("unknown learning-rate schedule {other:?}")),
        }
    }
}

impl From<ScheduleMeta> for TaggedRepr {
    fn from(s: ScheduleMeta) -> Self {
        match s {
            ScheduleMeta::Constant => TaggedRepr { name: "constant".into(), ..Default::default() },
            ScheduleMeta::Step { every, factor } => {
                TaggedRepr { name: "step".into(), every: Some(every), factor: Some(factor), ..Default::default() }
            }
            ScheduleMeta::Plateau { patience, factor, min_lr } => TaggedRepr {
                name: "plateau".into(),
                patience: Some(patience),
                factor: Some(factor),
                min_lr: Some(min_lr),
                ..Default::default()
            },
        }
    }
}

/// [`crate::optim::LrScheduler`]'s state; `best` is None while infinite
/// (JSON has no infinity).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SchedulerMeta {
    pub epoch: usize,
    pub best: Option<f32>,
    pub wait: usize,
}

impl SchedulerMeta {
    /// Capture a scheduler.
    pub fn of(s: &crate::optim::LrScheduler) -> Self {
        SchedulerMeta { epoch: s.epoch, best: s.best.is_finite().then_some(s.best), wait: s.wait }
    }
    /// Rebuild the scheduler for `schedule`.
    pub fn restore(&self, schedule: crate::optim::LrSchedule) -> crate::optim::LrScheduler {
        let mut s = schedule.scheduler();
        s.epoch = self.epoch;
        s.best = self.best.unwrap_or(f32::INFINITY);
        s.wait = self.wait;
        s
    }
}

/// A loaded (or about to be saved) checkpoint.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// Preset name the stack came from (`alexnet`, `alexnet-micro`, ...); informative.
    pub arch: String,
    /// The layer stack, rebuilt from the stored layers.
    pub spec: ModelSpec,
    /// Class names, in label order.
    pub class_names: Vec<String>,
    /// Every tensor: the network's (Keras names) and the optimizer's (`optimizer/...`).
    pub tensors: HashMap<String, ArrayD<f32>>,
    /// Training state; None in files written by other tools.
    pub train: Option<TrainMeta>,
    /// The input preprocessing the model expects (None: pixels in [0, 1],
    /// what our trainer feeds); imported models carry theirs.
    pub preprocess: Option<Preprocess>,
}

impl Checkpoint {
    /// Gather a network's tensors, plus optimizer state if given.
    pub fn capture(
        arch: &str,
        net: &Network,
        class_names: &[String],
        optimizer: Option<&crate::optim::Optimizer>,
        train: Option<TrainMeta>,
    ) -> Checkpoint {
        let mut tensors: HashMap<String, ArrayD<f32>> = net.tensors().into_iter().collect();
        if let Some(o) = optimizer {
            tensors.extend(o.state_tensors());
        }
        Checkpoint {
            arch: arch.to_string(),
            spec: *net.spec(),
            class_names: class_names.to_vec(),
            tensors,
            train,
            preprocess: net.preprocess().cloned(),
        }
    }

    /// The float network with this checkpoint's weights.
    pub fn network(&self) -> Result<Network, NnError> {
        let mut net = Network::for_loading(&self.spec);
        net.load_tensors(&self.tensors)?;
        net.set_preprocess(self.preprocess.clone())?;
        Ok(net)
    }

    /// Input height and width.
    pub fn input_hw(&self) -> (usize, usize) {
        self.spec.input().hw()
    }

    /// Write to `path` atomically: a temporary file in the same folder,
    /// flushed to disk, then renamed over `path`, so a crash or Ctrl-C while
    /// saving never leaves a truncated checkpoint where a good one was.
    pub fn save(&self, path: &Path) -> Result<(), CheckpointError> {
        let werr = |source| CheckpointError::Write { path: path.to_path_buf(), source };
        // Never write a file that load would refuse.
        check_values(&self.spec, &self.tensors)
            .map_err(|what| CheckpointError::Invalid { path: path.to_path_buf(), what })?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(werr)?;
        }
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), FORMAT.to_string());
        meta.insert("arch".to_string(), self.arch.clone());
        let (h, w) = self.input_hw();
        meta.insert("input".to_string(), format!("{h}x{w}x{}", self.spec.input().channels()));
        meta.insert("classes".to_string(), self.class_names.len().to_string());
        meta.insert("class_names".to_string(), json!(self.class_names).to_string());
        meta.insert("layers".to_string(), spec_to_json(&self.spec).to_string());
        if let Some(p) = &self.preprocess {
            let s = serde_json::to_string(p).map_err(|e| werr(std::io::Error::other(e)))?;
            meta.insert(INPUT_TRANSFORM.to_string(), s);
        }
        if let Some(t) = &self.train {
            let s = serde_json::to_string(t).map_err(|e| werr(std::io::Error::other(e)))?;
            meta.insert("train".to_string(), s);
        }
        // By name: the order safetensors' own writer gives f32 tensors, so the
        // tensor table and data are those `serialize` would write (tested).
        let sorted: BTreeMap<&String, &ArrayD<f32>> = self.tensors.iter().collect();
        let tensors: Vec<(&String, F32Bytes)> = sorted.into_iter().map(|(k, v)| (k, F32Bytes::of(v))).collect();
        meta.insert(
            "checksums".to_string(),
            tensor_checksums(tensors.iter().map(|(k, t)| (*k, &*t.bytes))).to_string(),
        );
        // Streamed to the file tensor by tensor: a second copy of every byte
        // in memory (700 MB for AlexNet with Adam's state) would cost more
        // than the write.
        crate::atomic::write_atomic_with(path, |tmp| write_safetensors(tmp, &tensors, meta)).map_err(|e| werr(e.source))
    }

    /// Read and validate a checkpoint: the layer stack must rebuild, and the
    /// network tensors must match it in names and shapes.
    pub fn load(path: &Path) -> Result<Checkpoint, CheckpointError> {
        Checkpoint::load_with(path, true)
    }

    /// [`Checkpoint::load`] without the optimizer's state (`optimizer/...`,
    /// twice the weights' size with Adam), for the commands that only run
    /// the model: every checksum is still verified, but those tensors are
    /// neither converted nor kept.
    pub fn load_model(path: &Path) -> Result<Checkpoint, CheckpointError> {
        Checkpoint::load_with(path, false)
    }

    fn load_with(path: &Path, optimizer: bool) -> Result<Checkpoint, CheckpointError> {
        crate::budget::check_file("the checkpoint", path)
            .map_err(|e| CheckpointError::Invalid { path: path.to_path_buf(), what: e.to_string() })?;
        let bytes = std::fs::read(path).map_err(|source| CheckpointError::Read { path: path.to_path_buf(), source })?;
        let fmt = |source| CheckpointError::Format { path: path.to_path_buf(), source };
        let invalid = |what: String| CheckpointError::Invalid { path: path.to_path_buf(), what };
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(fmt)?;
        let meta = header.metadata().clone().unwrap_or_default();
        let get = |k: &str| {
            meta.get(k).ok_or_else(|| invalid(format!("no {k:?} in its metadata (not written by host train?)")))
        };
        let arch = get("arch")?.clone();
        let layers: Value = serde_json::from_str(get("layers")?).map_err(|e| invalid(format!("bad layers: {e}")))?;
        let spec = spec_from_json(&layers).map_err(invalid)?;
        // Before anything is allocated for it: the file must hold the weights
        // its layer list declares, and one image through the network must fit
        // the memory limit.
        let (t, n) = spec.params();
        crate::budget::check_file_holds(
            &format!("its layer list ({} parameters)", t + n),
            (t + n).saturating_mul(4),
            bytes.len() as u64,
        )
        .map_err(|e| invalid(e.to_string()))?;
        crate::budget::check_network("its layer stack", &spec, 1, false).map_err(|e| invalid(e.to_string()))?;
        let class_names: Vec<String> =
            serde_json::from_str(get("class_names")?).map_err(|e| invalid(format!("bad class_names: {e}")))?;
        if let Some(n) = class_names.iter().find(|n| n.chars().any(char::is_control)) {
            return Err(invalid(format!("class name \"{}\" has a control character", crate::out::printable(n))));
        }
        if class_names.len() as u64 != spec.output().elements() {
            return Err(invalid(format!(
                "{} class names for a model with {} outputs",
                class_names.len(),
                spec.output().elements()
            )));
        }
        let train = match meta.get("train") {
            Some(s) => Some(serde_json::from_str(s).map_err(|e| invalid(format!("bad train state: {e}")))?),
            None => None,
        };
        let preprocess = match meta.get(INPUT_TRANSFORM) {
            Some(s) => Some(serde_json::from_str(s).map_err(|e| invalid(format!("bad {INPUT_TRANSFORM}: {e}")))?),
            None => None,
        };
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(fmt)?;
        let v1 = meta.get("format").is_none_or(|f| f == FORMAT_V1);
        verify_checksums(path, &meta, &st, v1)?;
        let mut tensors = HashMap::new();
        for (name, view) in st.tensors() {
            if !optimizer && name.starts_with(crate::optim::OPTIMIZER_PREFIX) {
                continue;
            }
            if view.dtype() != Dtype::F32 {
                return Err(invalid(format!("tensor {name} is {:?}, expected F32", view.dtype())));
            }
            let data: Vec<f32> = if cfg!(target_endian = "little") {
                // One copy at memory speed (the file's offsets need not be 4-aligned in memory).
                bytemuck::pod_collect_to_vec(view.data())
            } else {
                view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
            };
            let arr = ArrayD::from_shape_vec(IxDyn(view.shape()), data).map_err(|e| invalid(format!("{name}: {e}")))?;
            tensors.insert(name, arr);
        }
        check_values(&spec, &tensors).map_err(invalid)?;
        // Validate the weights now, so every user gets the error at load
        // time: checked in place, not loaded into a network of its own.
        let mut net = Network::for_loading(&spec);
        net.check_tensors(&tensors)
            .and_then(|()| net.set_preprocess(preprocess.clone()))
            .map_err(|source| CheckpointError::Tensors { path: path.to_path_buf(), source })?;
        Ok(Checkpoint { arch, spec, class_names, tensors, train, preprocess })
    }

    /// Only the network's tensors (no optimizer state), by Keras name.
    pub fn model_tensors(&self) -> HashMap<String, ArrayD<f32>> {
        self.tensors
            .iter()
            .filter(|(k, _)| !k.starts_with(crate::optim::OPTIMIZER_PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// The metadata key holding the input preprocessing (`{"scale": [..], "offset": [..]}`), when there is one.
pub const INPUT_TRANSFORM: &str = "input_transform";

/// The metadata key holding each tensor's CRC-32 (written since
/// `host-checkpoint/1` files gained it; older files load with a warning).
pub const CHECKSUMS: &str = "checksums";

/// CRC-32 (zlib's) of each tensor's bytes, as a JSON object `name -> "xxxxxxxx"`.
fn tensor_checksums<'a>(tensors: impl Iterator<Item = (&'a String, &'a [u8])>) -> Value {
    let map: serde_json::Map<String, Value> =
        tensors.map(|(k, bytes)| (k.clone(), json!(format!("{:08x}", crc32(bytes))))).collect();
    Value::Object(map)
}

/// zlib's CRC-32 (the same as `shared::protocol::CRC32`), by `crc32fast`'s
/// carry-less multiply: several GB/s where a byte table runs at a few
/// hundred MB/s, which a checkpoint's 700 MB would feel on every save and load.
fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// One f32 tensor as the little-endian bytes safetensors stores: borrowed
/// where the array's memory already is that (a standard-layout array on a
/// little-endian machine), else converted.
struct F32Bytes<'a> {
    shape: Vec<usize>,
    bytes: std::borrow::Cow<'a, [u8]>,
}

impl<'a> F32Bytes<'a> {
    fn of(a: &'a ArrayD<f32>) -> Self {
        let bytes = match a.as_slice() {
            Some(s) if cfg!(target_endian = "little") => std::borrow::Cow::Borrowed(bytemuck::cast_slice(s)),
            _ => std::borrow::Cow::Owned(a.iter().flat_map(|x| x.to_le_bytes()).collect()),
        };
        F32Bytes { shape: a.shape().to_vec(), bytes }
    }
}

/// Write a safetensors file of `tensors` (in this order, which must be the
/// crate's: by name, all f32) with `meta`: the header from the crate's own
/// [`safetensors::tensor::Metadata`], then each tensor's bytes straight from
/// where they lie. (`safetensors::serialize` builds the whole file in memory
/// first; `serialize_to_file` writes through a private temporary of its own,
/// with 0600 permissions, renamed over the one given.)
fn write_safetensors(
    file: &Path,
    tensors: &[(&String, F32Bytes)],
    meta: HashMap<String, String>,
) -> std::io::Result<()> {
    use std::io::Write;
    let mut offset = 0;
    let table: Vec<(String, safetensors::tensor::TensorInfo)> = tensors
        .iter()
        .map(|(k, t)| {
            let at = (offset, offset + t.bytes.len());
            offset = at.1;
            (
                (*k).clone(),
                safetensors::tensor::TensorInfo { dtype: Dtype::F32, shape: t.shape.clone(), data_offsets: at },
            )
        })
        .collect();
    let header = safetensors::tensor::Metadata::new(Some(meta), table).map_err(std::io::Error::other)?;
    let mut text = serde_json::to_vec(&header)?;
    // The format pads the header with spaces to a multiple of 8 bytes.
    text.resize(text.len().next_multiple_of(8), b' ');
    let mut out = std::io::BufWriter::new(std::fs::File::create(file)?);
    out.write_all(&(text.len() as u64).to_le_bytes())?;
    out.write_all(&text)?;
    for (_, t) in tensors {
        crate::atomic::write_all_chunked(&mut out, &t.bytes)?;
    }
    out.into_inner().map_err(std::io::IntoInnerError::into_error)?;
    Ok(())
}

/// Hold every tensor to the checksum its metadata records: a flipped byte is
/// an error naming the tensor. A file without checksums is an error, unless it
/// is a `host-checkpoint/1` file (`v1`: written before checksums existed),
/// which passes with a warning on stderr.
fn verify_checksums(
    path: &Path,
    meta: &HashMap<String, String>,
    st: &safetensors::SafeTensors,
    v1: bool,
) -> Result<(), CheckpointError> {
    let invalid = |what: String| CheckpointError::Invalid { path: path.to_path_buf(), what };
    let Some(text) = meta.get(CHECKSUMS) else {
        if !v1 {
            return Err(invalid(format!(
                "it is {FORMAT} but records no tensor checksums ({CHECKSUMS:?} is missing): its bytes cannot be verified"
            )));
        }
        crate::errln!(
            "warning: checkpoint {} records no tensor checksums (written by an older host); its bytes cannot be verified",
            path.display()
        );
        return Ok(());
    };
    let sums: BTreeMap<String, String> =
        serde_json::from_str(text).map_err(|e| invalid(format!("bad {CHECKSUMS}: {e}")))?;
    for (name, view) in st.tensors() {
        let want = sums.get(&name).ok_or_else(|| invalid(format!("tensor {name} has no checksum")))?;
        let got = format!("{:08x}", crc32(view.data()));
        if &got != want {
            return Err(invalid(format!(
                "tensor {name} is corrupted: its bytes have CRC-32 {got}, the file recorded {want}"
            )));
        }
    }
    if let Some(missing) = sums.keys().find(|k| st.tensor(k).is_err()) {
        return Err(invalid(format!("tensor {missing} is listed in {CHECKSUMS} but missing")));
    }
    Ok(())
}

/// The values a checkpoint must hold to be usable: finite hyperparameters in
/// range (BatchNormalization epsilon, momentum, Dropout rate) and finite
/// tensors, with no negative BatchNormalization moving variance. The error
/// names the layer or tensor.
pub fn check_values(spec: &ModelSpec, tensors: &HashMap<String, ArrayD<f32>>) -> Result<(), String> {
    check_hyperparameters(spec)?;
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    for name in names {
        let t = &tensors[name];
        if !crate::nn::all_finite(t) {
            if let Some((i, v)) = t.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(format!("tensor {name} holds {v} at element {i}: weights must be finite numbers"));
            }
        }
        if name.ends_with("moving_variance") {
            if let Some((i, v)) = t.iter().enumerate().find(|(_, v)| **v < 0.0) {
                return Err(format!("tensor {name} holds the negative variance {v} at element {i}"));
            }
        }
    }
    Ok(())
}

/// The largest BatchNormalization epsilon accepted (Keras's default is 1e-3).
pub const MAX_EPSILON: f32 = 1.0;

/// Hyperparameters in range: BatchNormalization epsilon in (0, [`MAX_EPSILON`]],
/// momentum in [0, 1], Dropout rate in [0, 1).
pub fn check_hyperparameters(spec: &ModelSpec) -> Result<(), String> {
    for (i, l) in spec.layers().iter().enumerate() {
        let name = spec.layer_name(i);
        match *l {
            Layer::BatchNorm { epsilon, momentum } => {
                if !(epsilon > 0.0 && epsilon <= MAX_EPSILON) {
                    return Err(format!("layer {i} ({name}): epsilon {epsilon} is not in (0, {MAX_EPSILON}]"));
                }
                if !(0.0..=1.0).contains(&momentum) {
                    return Err(format!("layer {i} ({name}): momentum {momentum} is not in [0, 1]"));
                }
            }
            Layer::Dropout { rate } if !(0.0..1.0).contains(&rate) => {
                return Err(format!("layer {i} ({name}): dropout rate {rate} is not in [0, 1)"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The layer stack as JSON: the input shape and each layer with its Keras
/// hyperparameters. Any stack round-trips, presets or not.
pub fn spec_to_json(spec: &ModelSpec) -> Value {
    let input = match spec.input() {
        Shape::Image { h, w, c } => json!([h, w, c]),
        Shape::Flat(n) => json!([n]),
    };
    let act = |a: Activation| match a {
        Activation::None => "linear",
        Activation::Relu => "relu",
        Activation::Softmax => "softmax",
        Activation::Relu6 => "relu6",
    };
    // A square size as one number (every stack from before), else [h, w].
    let hw = |v: Hw| if v.is_square() { json!(v.h) } else { json!([v.h, v.w]) };
    let padding = |p: Padding| match p {
        Padding::Valid => json!("valid"),
        Padding::Same => json!("same"),
        Padding::Explicit(p) => json!([p.top, p.bottom, p.left, p.right]),
    };
    let layers: Vec<Value> = spec
        .layers()
        .iter()
        .zip(spec.inputs())
        .enumerate()
        .map(|(i, (l, reads))| {
            (
                i,
                reads,
                match *l {
                    Layer::Conv2D(c) => {
                        let mut v = json!({"type": "Conv2D", "filters": c.filters, "kernel": hw(c.kernel),
                    "stride": hw(c.stride), "padding": padding(c.padding), "activation": act(c.activation)});
                        if c.dilation != Hw::ONE {
                            v["dilation"] = hw(c.dilation);
                        }
                        if c.groups != 1 {
                            v["groups"] = json!(c.groups);
                        }
                        v
                    }
                    Layer::AvgPool2D(p) => {
                        json!({"type": "AveragePooling2D", "pool": hw(p.pool), "stride": hw(p.stride),
                "padding": padding(p.padding)})
                    }
                    Layer::GlobalAvgPool => json!({"type": "GlobalAveragePooling2D"}),
                    Layer::BatchNorm { epsilon, momentum } => {
                        json!({"type": "BatchNormalization", "epsilon": epsilon, "momentum": momentum})
                    }
                    Layer::MaxPool2D { pool, stride } => {
                        json!({"type": "MaxPooling2D", "pool": pool, "stride": stride})
                    }
                    Layer::Flatten => json!({"type": "Flatten"}),
                    Layer::Dense { units, activation } => {
                        json!({"type": "Dense", "units": units, "activation": act(activation)})
                    }
                    Layer::Dropout { rate } => json!({"type": "Dropout", "rate": rate}),
                    Layer::Add { activation } => json!({"type": "Add", "activation": act(activation)}),
                    Layer::Concat => json!({"type": "Concatenate"}),
                    Layer::Activation(a) => json!({"type": "Activation", "activation": act(a)}),
                    Layer::Softmax => json!({"type": "Softmax"}),
                },
            )
        })
        // A layer that reads other tensors than the previous output names
        // them (tensor 0: the input, tensor i + 1: layer i's output).
        .map(|(i, reads, mut v)| {
            if !reads.is_stack(i) {
                v["inputs"] = match reads.other {
                    Some(o) => json!([reads.main, o]),
                    None => json!([reads.main]),
                };
            }
            v
        })
        .collect();
    json!({"input": input, "layers": layers})
}

/// Rebuild a layer stack from [`spec_to_json`]'s form.
pub fn spec_from_json(v: &Value) -> Result<ModelSpec, String> {
    let u = |l: &Value, k: &str| -> Result<u32, String> {
        l.get(k).and_then(Value::as_u64).and_then(|n| u32::try_from(n).ok()).ok_or(format!("layer field {k:?} missing"))
    };
    let f = |l: &Value, k: &str| -> Result<f32, String> {
        l.get(k).and_then(Value::as_f64).map(|x| x as f32).ok_or(format!("layer field {k:?} missing"))
    };
    let act = |l: &Value| -> Result<Activation, String> {
        match l.get("activation").and_then(Value::as_str) {
            Some("linear") => Ok(Activation::None),
            Some("relu") => Ok(Activation::Relu),
            Some("softmax") => Ok(Activation::Softmax),
            Some("relu6") => Ok(Activation::Relu6),
            other => Err(format!("unknown activation {other:?}")),
        }
    };
    let num = |v: &Value| v.as_u64().and_then(|n| u32::try_from(n).ok());
    // One number (square) or [h, w]; `default` when the field is absent.
    let hw = |l: &Value, k: &str, default: Option<Hw>| -> Result<Hw, String> {
        match l.get(k) {
            None => default.ok_or(format!("layer field {k:?} missing")),
            Some(v) => match v.as_array().map(Vec::as_slice) {
                Some([h, w]) => num(h).zip(num(w)).map(|(h, w)| Hw::new(h, w)),
                Some(_) => None,
                None => num(v).map(Hw::square),
            }
            .ok_or(format!("layer field {k:?} is not a size or [height, width]")),
        }
    };
    let padding = |l: &Value| -> Result<Padding, String> {
        let p = l.get("padding");
        match (p.and_then(Value::as_str), p.and_then(Value::as_array).map(Vec::as_slice)) {
            (Some("same"), _) => Ok(Padding::Same),
            (Some("valid"), _) => Ok(Padding::Valid),
            (_, Some([t, b, le, r])) => match (num(t), num(b), num(le), num(r)) {
                (Some(t), Some(b), Some(le), Some(r)) => Ok(Padding::explicit(t, b, le, r)),
                _ => Err(format!("bad padding {p:?}")),
            },
            _ => Err(format!("unknown padding {p:?}")),
        }
    };
    let dims: Vec<u32> = v
        .get("input")
        .and_then(Value::as_array)
        .ok_or("no input shape")?
        .iter()
        .map(|d| d.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or("bad input dimension"))
        .collect::<Result<_, _>>()?;
    let input = match dims[..] {
        [h, w, c] => Shape::image(h, w, c),
        [n] => Shape::Flat(n),
        _ => return Err(format!("bad input shape {dims:?}")),
    };
    let mut layers = Vec::new();
    let mut inputs = Vec::new();
    for (i, l) in v.get("layers").and_then(Value::as_array).ok_or("no layers")?.iter().enumerate() {
        let tensor = |t: &Value| t.as_u64().and_then(|n| u16::try_from(n).ok()).ok_or(format!("bad tensor {t}"));
        inputs.push(match l.get("inputs").map(|v| v.as_array().map(Vec::as_slice)) {
            None => Inputs::stack(i),
            Some(Some([m])) => Inputs { main: tensor(m)?, other: None },
            Some(Some([m, o])) => Inputs { main: tensor(m)?, other: Some(tensor(o)?) },
            Some(_) => return Err(format!("layer {i}: \"inputs\" is not [tensor] or [tensor, tensor]")),
        });
        let layer = match l.get("type").and_then(Value::as_str) {
            Some("Conv2D") => Layer::Conv2D(Conv2D {
                filters: u(l, "filters")?,
                kernel: hw(l, "kernel", None)?,
                stride: hw(l, "stride", None)?,
                dilation: hw(l, "dilation", Some(Hw::ONE))?,
                padding: padding(l)?,
                activation: act(l)?,
                groups: if l.get("groups").is_some() { u(l, "groups")? } else { 1 },
            }),
            Some("AveragePooling2D") => Layer::AvgPool2D(AvgPool2D {
                pool: hw(l, "pool", None)?,
                stride: hw(l, "stride", None)?,
                padding: padding(l)?,
            }),
            Some("GlobalAveragePooling2D") => Layer::GlobalAvgPool,
            Some("BatchNormalization") => Layer::BatchNorm { epsilon: f(l, "epsilon")?, momentum: f(l, "momentum")? },
            Some("MaxPooling2D") => Layer::MaxPool2D { pool: u(l, "pool")?, stride: u(l, "stride")? },
            Some("Flatten") => Layer::Flatten,
            Some("Dense") => Layer::Dense { units: u(l, "units")?, activation: act(l)? },
            Some("Dropout") => Layer::Dropout { rate: f(l, "rate")? },
            Some("Add") => Layer::Add { activation: act(l)? },
            Some("Concatenate") => Layer::Concat,
            Some("Activation") => Layer::Activation(act(l)?),
            Some("Softmax") => Layer::Softmax,
            other => return Err(format!("unknown layer type {other:?}")),
        };
        layers.push(layer);
    }
    let spec = ModelSpec::graph(input, &layers, &inputs).map_err(|e| e.to_string())?;
    check_hyperparameters(&spec)?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::TensorView;

    #[test]
    fn optimizer_and_schedule_keep_their_tagged_json() {
        let adam = OptimizerMeta::Adam { lr: 0.001, beta1: 0.9, beta2: 0.999, epsilon: 1e-7 };
        let text = serde_json::to_string(&adam).unwrap();
        assert_eq!(text, r#"{"name":"adam","lr":0.001,"beta1":0.9,"beta2":0.999,"epsilon":1e-7}"#);
        assert_eq!(serde_json::from_str::<OptimizerMeta>(&text).unwrap(), adam);
        let step = ScheduleMeta::Step { every: 20, factor: 0.25 };
        let text = serde_json::to_string(&step).unwrap();
        assert_eq!(text, r#"{"name":"step","every":20,"factor":0.25}"#);
        assert_eq!(serde_json::from_str::<ScheduleMeta>(&text).unwrap(), step);
        let err = serde_json::from_str::<OptimizerMeta>(r#"{"name":"sgd","lr":0.1}"#).unwrap_err().to_string();
        assert!(err.contains("momentum"), "{err}");
    }
    use crate::optim::{Optimizer, OptimizerKind};
    use shared::spec::{alexnet, alexnet_micro, Sequential};

    fn tiny() -> ModelSpec {
        Sequential::new(Shape::image(8, 8, 3))
            .conv2d(Conv2D::new(2, 3).same().relu())
            .batch_norm()
            .max_pool(2, 2)
            .flatten()
            .dense(5, Activation::Relu)
            .dropout(0.5)
            .dense(3, Activation::Softmax)
            .build()
            .unwrap()
    }

    #[test]
    fn layer_stacks_round_trip_through_json() {
        for spec in [tiny(), alexnet(227, 5).unwrap(), alexnet_micro(99, 6).unwrap()] {
            let back = spec_from_json(&spec_to_json(&spec)).unwrap();
            assert_eq!(back, spec);
        }
        assert!(spec_from_json(&json!({"input": [8, 8, 3], "layers": [{"type": "Nope"}]})).is_err());
    }

    #[test]
    fn save_load_round_trip_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/ck.safetensors");
        let net = Network::new(&tiny(), 42);
        let opt = Optimizer::new(OptimizerKind::adam());
        let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let meta = TrainMeta {
            epoch: 3,
            step: 1,
            seed: 9,
            batch_size: 4,
            val_split: 0.2,
            data_dir: None,
            per_class: 10,
            data: "x".into(),
            augment: true,
            optimizer: OptimizerKind::adam().into(),
            schedule: ScheduleMeta::Plateau { patience: 2, factor: 0.5, min_lr: 1e-6 },
            scheduler: SchedulerMeta { epoch: 3, best: None, wait: 1 },
            running: Running { loss_sum: 0.1 + 0.2, correct: 3, seen: 4, seconds: 1.5, skipped: 0 },
            history: vec![],
            best_val_accuracy: Some(0.75),
            rng: "r".into(),
        };
        let ck = Checkpoint::capture("tiny", &net, &names, Some(&opt), Some(meta.clone()));
        ck.save(&path).unwrap();
        let leftovers: Vec<_> =
            std::fs::read_dir(dir.path().join("sub")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("ck.safetensors")]);
        let back = Checkpoint::load(&path).unwrap();
        assert_eq!(back.spec, tiny());
        assert_eq!(back.class_names, names);
        assert_eq!(back.train, Some(meta.clone()));
        assert_eq!(back.tensors, ck.tensors);
        let net2 = back.network().unwrap();
        for ((n1, t1), (n2, t2)) in net.tensors().iter().zip(net2.tensors().iter()) {
            assert_eq!(n1, n2);
            assert_eq!(t1, t2);
        }
        // The model alone: every network tensor, none of the optimizer's.
        let model = Checkpoint::load_model(&path).unwrap();
        assert!(ck.tensors.keys().any(|k| k.starts_with(crate::optim::OPTIMIZER_PREFIX)));
        assert_eq!(model.tensors, ck.model_tensors());
        assert_eq!(model.train, Some(meta));
        // Saving over an existing file replaces it whole.
        ck.save(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap().len(), std::fs::metadata(&path).unwrap().len() as usize);
    }

    /// The streamed save writes the bytes `safetensors::serialize` builds in
    /// memory (the way it was written before), tensors borrowed or converted.
    #[test]
    fn the_streamed_file_is_what_serialize_builds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ck.safetensors");
        let net = Network::new(&tiny(), 5);
        let mut ck = Checkpoint::capture("tiny", &net, &["a".into(), "b".into(), "c".into()], None, None);
        // One tensor in a transposed (not standard) layout: converted, not borrowed.
        let (name, t) = ck
            .tensors
            .iter()
            .find(|(_, t)| t.shape().iter().filter(|&&d| d > 1).count() > 1)
            .map(|(k, t)| (k.clone(), t.clone()))
            .unwrap();
        let column_major = t.t().as_standard_layout().into_owned().reversed_axes();
        assert!(column_major.as_slice().is_none() && column_major == t);
        ck.tensors.insert(name, column_major);
        ck.save(&path).unwrap();
        let written = std::fs::read(&path).unwrap();
        let st = safetensors::SafeTensors::deserialize(&written).unwrap();
        let (_, header) = safetensors::SafeTensors::read_metadata(&written).unwrap();
        let views: BTreeMap<String, TensorView> = st.tensors().into_iter().collect();
        for (k, v) in &views {
            let want: Vec<u8> = ck.tensors[k].iter().flat_map(|x| x.to_le_bytes()).collect();
            assert_eq!(v.data(), &want[..], "{k}");
        }
        let rebuilt = safetensors::serialize(views, header.metadata().clone()).unwrap();
        // The same length, tensor table and data; the metadata keys come in
        // a HashMap's order, so their text is compared parsed.
        assert_eq!(written.len(), rebuilt.len());
        let (at, again) = safetensors::SafeTensors::read_metadata(&rebuilt).unwrap();
        assert_eq!(written[at..], rebuilt[at..]);
        assert_eq!(again.metadata(), header.metadata());
        let table = |m: &safetensors::tensor::Metadata| {
            let mut t: Vec<_> = m.tensors().into_iter().map(|(k, i)| (k, i.shape.clone(), i.data_offsets)).collect();
            t.sort();
            t
        };
        assert_eq!(table(&again), table(&header));
    }

    #[test]
    fn checksums_are_the_protocols_crc32() {
        let bytes: Vec<u8> = (0..100_003u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for end in [0, 1, 15, 16, 17, 4095, bytes.len()] {
            assert_eq!(crc32(&bytes[..end]), shared::protocol::CRC32.checksum(&bytes[..end]), "{end} bytes");
        }
    }

    /// Regression: one flipped byte in the tensor data used to load and
    /// predict silently. Now the load fails naming the tensor.
    #[test]
    fn a_flipped_tensor_byte_is_an_error_naming_the_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ck.safetensors");
        let net = Network::new(&tiny(), 3);
        let ck = Checkpoint::capture("tiny", &net, &["a".into(), "b".into(), "c".into()], None, None);
        ck.save(&path).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() - 10;
        bytes[at] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let e = Checkpoint::load(&path).unwrap_err().to_string();
        assert!(e.contains("is corrupted") && e.contains("ck.safetensors"), "{e}");
        let named = ck.tensors.keys().find(|k| e.contains(&format!("tensor {k} "))).cloned();
        assert!(named.is_some(), "the error names no tensor: {e}");
    }

    /// Files written before checksums existed (format 1) still load, with a
    /// warning; a current file whose checksums were removed is refused.
    #[test]
    fn checkpoints_without_checksums_load_only_as_format_1() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.safetensors");
        let net = Network::new(&tiny(), 4);
        let ck = Checkpoint::capture("tiny", &net, &["a".into(), "b".into(), "c".into()], None, None);
        ck.save(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let mut meta = header.metadata().clone().unwrap();
        assert!(meta.remove(CHECKSUMS).is_some());
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let stripped = safetensors::serialize(st.tensors(), Some(meta.clone())).unwrap();
        std::fs::write(&path, stripped).unwrap();
        let e = Checkpoint::load(&path).unwrap_err().to_string();
        assert!(e.contains("records no tensor checksums") && e.contains("old.safetensors"), "{e}");
        meta.insert("format".into(), FORMAT_V1.into());
        let old = safetensors::serialize(st.tensors(), Some(meta)).unwrap();
        std::fs::write(&path, old).unwrap();
        let back = Checkpoint::load(&path).unwrap();
        assert_eq!(back.tensors, ck.tensors);
    }

    /// A tiny file whose layer list declares a huge model is refused before
    /// anything is allocated; non-finite weights, a negative moving variance
    /// and an out-of-range epsilon are refused naming the tensor or layer.
    #[test]
    fn declared_sizes_and_values_are_checked_on_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bomb.safetensors");
        let layers = json!({"input": [1, 1, 65536], "layers": [
            {"type": "Flatten"}, {"type": "Dense", "units": 65536, "activation": "linear"}]});
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), FORMAT.to_string());
        meta.insert("arch".to_string(), "bomb".to_string());
        meta.insert("layers".to_string(), layers.to_string());
        let names: Vec<String> = (0..65536).map(|i| format!("c{i}")).collect();
        meta.insert("class_names".to_string(), json!(names).to_string());
        meta.insert(CHECKSUMS.to_string(), "{}".to_string());
        let empty: Vec<(String, TensorView)> = Vec::new();
        std::fs::write(&path, safetensors::serialize(empty, Some(meta)).unwrap()).unwrap();
        let e = Checkpoint::load(&path).unwrap_err().to_string();
        assert!(e.contains("4295032832 parameters") && e.contains("the file holds only"), "{e}");

        let net = Network::new(&tiny(), 1);
        let names3: Vec<String> = vec!["a".into(), "b".into(), "c".into()];
        let mut ck = Checkpoint::capture("tiny", &net, &names3, None, None);
        let key = ck.tensors.keys().find(|k| k.ends_with("kernel")).unwrap().clone();
        *ck.tensors.get_mut(&key).unwrap().iter_mut().next().unwrap() = f32::INFINITY;
        let e = ck.save(&dir.path().join("inf.safetensors")).unwrap_err().to_string();
        assert!(e.contains(&format!("tensor {key} holds inf")), "{e}");
        assert!(!dir.path().join("inf.safetensors").exists());

        let mut ck = Checkpoint::capture("tiny", &net, &names3, None, None);
        let var = ck.tensors.keys().find(|k| k.ends_with("moving_variance")).unwrap().clone();
        *ck.tensors.get_mut(&var).unwrap().iter_mut().next().unwrap() = -0.5;
        let e = check_values(&ck.spec, &ck.tensors).unwrap_err();
        assert!(e.contains(&format!("tensor {var} holds the negative variance -0.5")), "{e}");

        // A BatchNormalization epsilon of 1e39 (infinity as f32) or 0 never builds a stack.
        for eps in [json!(1e39), json!(0.0), json!(2.0)] {
            let mut layers = spec_to_json(&tiny());
            layers["layers"][1]["epsilon"] = eps.clone();
            let e = spec_from_json(&layers).unwrap_err();
            assert!(e.contains("layer 1") && e.contains("epsilon"), "{eps}: {e}");
        }
    }

    #[test]
    fn bad_files_are_typed_errors_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.safetensors");
        assert!(matches!(Checkpoint::load(&missing), Err(CheckpointError::Read { .. })));
        let junk = dir.path().join("junk.safetensors");
        std::fs::write(&junk, b"not a checkpoint at all").unwrap();
        let e = Checkpoint::load(&junk).unwrap_err();
        assert!(matches!(e, CheckpointError::Format { .. }), "{e}");
        assert!(e.to_string().contains("junk.safetensors"));
        // Weights that do not fit the stored stack.
        let net = Network::new(&tiny(), 1);
        let mut ck = Checkpoint::capture("tiny", &net, &["a".into(), "b".into(), "c".into()], None, None);
        ck.tensors.remove("dense/bias");
        let p = dir.path().join("partial.safetensors");
        ck.save(&p).unwrap();
        assert!(matches!(Checkpoint::load(&p), Err(CheckpointError::Tensors { .. })));
    }
}
