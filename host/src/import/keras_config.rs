//! A Keras model's architecture (`model.to_json()`, a `.keras` file's
//! `config.json`, an `.h5` file's `model_config`) onto the layer stack.
//!
//! Keras 3 and tf.keras 2 configs differ in details (`batch_shape` vs
//! `batch_input_shape`, how inbound nodes are written); both are read.
//! Sequential models, nested Sequentials (the TF tutorial's
//! `data_augmentation` block) and Functional models with one input and one
//! output are accepted: a Functional model's layers are put in topological
//! order and each reads the tensors its `inbound_nodes` name
//! ([`shared::spec::Inputs`]), `Add` and `Concatenate` merging two (or
//! more, as a chain of two-input layers). Anything the stack cannot express
//! is an error naming the layer.
//!
//! For import ([`parse_for_import`]) a linear Conv2D, DepthwiseConv2D or
//! Dense followed by a BatchNormalization that is its only reader is folded
//! into it, as TFLite's converter does, and a ReLU/ReLU6 after that becomes
//! the layer's activation: MobileNetV1 is 84 Keras layers but 29 stack
//! layers. A stack file (`--arch FILE`, [`parse`]) keeps its
//! BatchNormalizations, which training needs.
use super::error::ImportError;
use crate::preprocess::Preprocess;
use serde_json::Value;
use shared::spec::{Activation, AvgPool2D, Conv2D, Hw, Inputs, Layer, ModelSpec, Padding, Shape};
use std::collections::HashMap;
use std::path::Path;

/// A layer of the stack that carries weights, with the Keras name its
/// weights are stored under and what Keras stores for it.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightLayer {
    /// The layer's `name` in the Keras config.
    pub keras_name: String,
    /// Index in the stack.
    pub index: usize,
    pub kind: WeightKind,
}

/// What a layer's weight list holds, in Keras's order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WeightKind {
    /// kernel, then bias if `use_bias`.
    Conv { use_bias: bool },
    /// kernel, then bias if `use_bias`.
    Dense { use_bias: bool },
    /// DepthwiseConv2D: the `[kh, kw, in, multiplier]` kernel (our grouped
    /// `[kh, kw, 1, in * multiplier]`, the same values), then bias if `use_bias`.
    Depthwise { use_bias: bool },
    /// SeparableConv2D's first half: its depthwise kernel (no bias).
    SeparableDepthwise,
    /// SeparableConv2D's second half: its pointwise kernel, then bias if `use_bias`.
    SeparablePointwise { use_bias: bool },
    /// gamma if `scale`, beta if `center`, moving mean, moving variance.
    BatchNorm { scale: bool, center: bool },
    /// A BatchNormalization (its variables as [`WeightKind::BatchNorm`]'s)
    /// folded into the Conv2D or Dense at `index`: its kernel and bias are
    /// rescaled (see [`super::tensors::StackTensors::fold_batch_norm`]).
    FoldedBatchNorm { scale: bool, center: bool, epsilon: f32 },
}

/// A `Normalization` layer whose mean and variance are weights (adapted), not config.
#[derive(Clone, Debug, PartialEq)]
pub struct AdaptedNormalization {
    pub keras_name: String,
    /// The preprocessing before it, which it follows.
    pub before: Option<Preprocess>,
}

/// The architecture read from a Keras config.
#[derive(Clone, Debug)]
pub struct KerasModel {
    pub spec: ModelSpec,
    /// The input transform from `Rescaling`/`Normalization` (pixels [0, 1] to
    /// what the first layer takes), raw 0..255 pixels when there is none.
    pub preprocess: Option<Preprocess>,
    /// A `Normalization` whose statistics are in the weights file.
    pub adapted: Option<AdaptedNormalization>,
    pub weight_layers: Vec<WeightLayer>,
    /// Names of layers skipped because they do nothing at inference.
    pub skipped: Vec<String>,
}

/// Whether a JSON document is a Keras model config (not our layer JSON).
pub fn is_keras_config(v: &Value) -> bool {
    v.get("class_name").is_some() && v.get("config").is_some()
}

/// Parse a Keras model config as a stack to train (`--arch FILE`): every
/// BatchNormalization stays a layer. `path` names the file in errors.
pub fn parse(v: &Value, path: &Path) -> Result<KerasModel, ImportError> {
    parse_with(v, path, false)
}

/// Parse a Keras model config to import its weights: a BatchNormalization
/// right after a linear Conv2D/DepthwiseConv2D/Dense that it alone reads is
/// folded into that layer ([`WeightKind::FoldedBatchNorm`]), and a ReLU or
/// ReLU6 after it becomes the layer's activation, as TFLite deploys it.
pub fn parse_for_import(v: &Value, path: &Path) -> Result<KerasModel, ImportError> {
    parse_with(v, path, true)
}

fn parse_with(v: &Value, path: &Path, fold: bool) -> Result<KerasModel, ImportError> {
    let mut b = Builder {
        path,
        input: None,
        layers: Vec::new(),
        inputs: Vec::new(),
        cur: 0,
        readers: vec![1],
        fold,
        pre: Pre::Raw,
        weight_layers: Vec::new(),
        skipped: Vec::new(),
        adapted: None,
        pending_pads: None,
    };
    b.model(v)?;
    if let Some((name, _)) = &b.pending_pads {
        return Err(b.unsupported(
            name,
            "ZeroPadding2D",
            "it must be followed by a valid Conv2D, DepthwiseConv2D, SeparableConv2D or AveragePooling2D",
        ));
    }
    let input = b
        .input
        .ok_or_else(|| b.format("the config gives no input shape (no InputLayer, batch_shape or batch_input_shape)"))?;
    if b.cur as usize != b.layers.len() {
        return Err(b.format("the model's output is not computed by its last layer"));
    }
    let spec = ModelSpec::graph(input, &b.layers, &b.inputs)
        .map_err(|e| b.format(&format!("the layers do not make a valid stack: {e}")))?;
    let preprocess = b.current_preprocess(input.channels() as usize).map_err(|e| b.format(&e))?;
    Ok(KerasModel { spec, preprocess, adapted: b.adapted, weight_layers: b.weight_layers, skipped: b.skipped })
}

/// The preprocessing seen so far.
enum Pre {
    /// Raw 0..255 pixels: no Rescaling or Normalization yet.
    Raw,
    Set(Option<Preprocess>),
}

struct Builder<'p> {
    path: &'p Path,
    input: Option<Shape>,
    layers: Vec<Layer>,
    /// What each layer reads (tensor 0 the input, `i + 1` layer `i`'s output).
    inputs: Vec<Inputs>,
    /// The tensor the next layer reads.
    cur: u16,
    /// How many Keras layers read each tensor (index: tensor), for folding:
    /// a layer merges into the one before only when it is that one's only reader.
    readers: Vec<usize>,
    /// Fold BatchNormalization into the linear layer before it ([`parse_for_import`]).
    fold: bool,
    pre: Pre,
    weight_layers: Vec<WeightLayer>,
    skipped: Vec<String>,
    adapted: Option<AdaptedNormalization>,
    /// A ZeroPadding2D waiting to fold into the valid Conv2D or pool after it:
    /// its name and (top, bottom, left, right).
    pending_pads: PendingPads,
}

/// A ZeroPadding2D waiting to fold into the layer after it: its name and
/// (top, bottom, left, right).
type PendingPads = Option<(String, [u32; 4])>;

/// Keras's inference-time no-ops: random augmentation layers.
const AUGMENTATION: &[&str] = &[
    "RandomFlip",
    "RandomRotation",
    "RandomZoom",
    "RandomTranslation",
    "RandomContrast",
    "RandomBrightness",
    "RandomCrop",
    "RandomHeight",
    "RandomWidth",
    "GaussianNoise",
    "GaussianDropout",
    "ActivityRegularization",
];

impl Builder<'_> {
    fn format(&self, what: &str) -> ImportError {
        ImportError::Format { path: self.path.to_path_buf(), what: what.to_string() }
    }

    fn unsupported(&self, name: &str, kind: &str, why: impl Into<String>) -> ImportError {
        ImportError::Unsupported {
            path: self.path.to_path_buf(),
            name: name.into(),
            kind: kind.into(),
            why: why.into(),
            supported: super::error::KERAS_SUPPORTED,
        }
    }

    /// A Sequential or Functional model (possibly nested).
    fn model(&mut self, v: &Value) -> Result<(), ImportError> {
        let class = v.get("class_name").and_then(Value::as_str).unwrap_or("");
        let config = v.get("config").ok_or_else(|| self.format("a model without \"config\""))?;
        let name = config.get("name").and_then(Value::as_str).unwrap_or("model");
        match class {
            "Sequential" | "Functional" | "Model" => {}
            other => {
                return Err(self.unsupported(name, other, "not a Sequential or Functional model (a subclassed model has no config: import its weights with --arch)"))
            }
        }
        if let Some(shape) = config.get("build_input_shape").or_else(|| config.get("batch_input_shape")) {
            self.set_input(name, shape)?;
        }
        let layers = config
            .get("layers")
            .and_then(Value::as_array)
            .ok_or_else(|| self.format(&format!("model {name:?} lists no layers")))?;
        if class != "Sequential" {
            return self.functional(name, config, layers);
        }
        for l in layers {
            self.layer(l)?;
        }
        Ok(())
    }

    /// A Functional model: its layers in topological order (the config's
    /// order where it allows), each reading the tensors its inbound node
    /// names. Its input layer reads the tensor the model is applied to (the
    /// model input, or the layer before a nested model).
    fn functional(&mut self, model: &str, config: &Value, layers: &[Value]) -> Result<(), ImportError> {
        struct Node<'v> {
            name: String,
            kind: String,
            value: &'v Value,
            inbound: Vec<String>,
        }
        let mut nodes = Vec::new();
        for l in layers {
            let name = layer_name(l).to_string();
            let kind = l.get("class_name").and_then(Value::as_str).unwrap_or("?").to_string();
            let calls = l.get("inbound_nodes").and_then(Value::as_array).map_or(0, Vec::len);
            if calls > 1 {
                return Err(self.unsupported(
                    &name,
                    &kind,
                    format!("it is called {calls} times (a shared layer); each layer may be called once"),
                ));
            }
            let mut inbound = Vec::new();
            if let Some(n) = l.get("inbound_nodes") {
                collect_tensors(n, &mut inbound);
            }
            if let Some((from, _, t)) = inbound.iter().find(|(_, node, t)| *node != 0 || *t != 0) {
                return Err(self.unsupported(
                    &name,
                    &kind,
                    format!("it reads output {t} of layer {from:?}: only single-output layers are supported"),
                ));
            }
            nodes.push(Node { name, kind, value: l, inbound: inbound.into_iter().map(|(n, _, _)| n).collect() });
        }
        let listed = |key: &str| {
            let mut v = Vec::new();
            if let Some(x) = config.get(key) {
                collect_tensors(x, &mut v);
            }
            v.into_iter().map(|(n, _, _)| n).collect::<Vec<String>>()
        };
        let (model_inputs, model_outputs) = (listed("input_layers"), listed("output_layers"));
        let sources: Vec<&Node> = nodes.iter().filter(|n| n.inbound.is_empty()).collect();
        if model_inputs.len() > 1 || sources.len() > 1 {
            let names: Vec<&str> = sources.iter().map(|n| n.name.as_str()).collect();
            return Err(self.unsupported(
                model,
                "Functional",
                format!("it has inputs {names:?}: only models with one input are supported"),
            ));
        }
        if model_outputs.len() > 1 {
            return Err(self.unsupported(
                model,
                "Functional",
                format!("it has outputs {model_outputs:?}: only models with one output are supported"),
            ));
        }
        let output = match model_outputs.first() {
            Some(o) => o.clone(),
            None => nodes.last().map(|n| n.name.clone()).unwrap_or_default(),
        };
        // How many layers read each one.
        let mut consumers: HashMap<&str, usize> = HashMap::new();
        for n in &nodes {
            for i in &n.inbound {
                *consumers.entry(i.as_str()).or_default() += 1;
            }
        }
        // Topological order, the config's where it allows.
        let mut order = Vec::with_capacity(nodes.len());
        let mut done = vec![false; nodes.len()];
        let mut known: std::collections::HashSet<&str> = std::collections::HashSet::new();
        while order.len() < nodes.len() {
            let next =
                (0..nodes.len()).find(|&k| !done[k] && nodes[k].inbound.iter().all(|i| known.contains(i.as_str())));
            let Some(k) = next else {
                let stuck = nodes.iter().zip(&done).find(|(_, d)| !**d).map(|(n, _)| n);
                let (name, kind) = stuck.map_or(("?", "?"), |n| (n.name.as_str(), n.kind.as_str()));
                let missing: Vec<&String> = stuck
                    .map(|n| n.inbound.iter().filter(|i| !known.contains(i.as_str())).collect())
                    .unwrap_or_default();
                return Err(self.unsupported(
                    name,
                    kind,
                    format!("it reads {missing:?}, which no layer of model {model:?} computes before it"),
                ));
            };
            done[k] = true;
            known.insert(nodes[k].name.as_str());
            order.push(k);
        }
        if let Some(dead) = nodes.iter().find(|n| n.name != output && !consumers.contains_key(n.name.as_str())) {
            return Err(self.unsupported(
                &dead.name,
                &dead.kind,
                format!("no layer reads its output and it is not the model output {output:?}: only models with one output are supported"),
            ));
        }
        // Each Keras layer's output: a stack tensor, with a ZeroPadding2D's pads
        // waiting to fold into the layers that read it.
        let entry = self.cur;
        let mut tensors: HashMap<&str, (u16, PendingPads)> = HashMap::new();
        for k in order {
            let n = &nodes[k];
            let readers = consumers.get(n.name.as_str()).copied().unwrap_or(0);
            let ins: Vec<(u16, PendingPads)> =
                n.inbound.iter().filter_map(|i| tensors.get(i.as_str()).cloned()).collect();
            if let Some((_, Some((zp, _)))) = ins.iter().find(|(_, p)| p.is_some()).filter(|_| ins.len() > 1) {
                let why =
                    format!("it is read by {} {:?}; only a valid Conv2D or AveragePooling2D takes it", n.kind, n.name);
                return Err(self.unsupported(zp, "ZeroPadding2D", why));
            }
            let read = match ins.first() {
                None => entry,
                Some((t, _)) => *t,
            };
            self.cur = read;
            self.pending_pads = ins.first().and_then(|(_, p)| p.clone());
            if matches!(n.kind.as_str(), "Add" | "Concatenate") {
                let c = n.value.get("config").cloned().unwrap_or(Value::Null);
                let ids: Vec<u16> = ins.iter().map(|(t, _)| *t).collect();
                self.merge(&n.name, &n.kind, &c, &ids)?;
            } else {
                if ins.len() > 1 {
                    return Err(self.unsupported(
                        &n.name,
                        &n.kind,
                        format!(
                            "it reads {} tensors {:?}; only Add and Concatenate take more than one",
                            ins.len(),
                            n.inbound
                        ),
                    ));
                }
                self.layer(n.value)?;
            }
            let pads = if n.kind == "ZeroPadding2D" { self.pending_pads.take() } else { None };
            // This layer read `read` once; its own readers read what it gives.
            let t = self.cur as usize;
            let was = self.readers.get(t).copied().unwrap_or(1);
            let now = if t == read as usize { was.saturating_sub(1) + readers } else { readers };
            if let Some(r) = self.readers.get_mut(t) {
                *r = now;
            }
            tensors.insert(n.name.as_str(), (self.cur, pads));
        }
        match tensors.get(output.as_str()) {
            Some((t, None)) => {
                self.cur = *t;
                Ok(())
            }
            Some((_, Some((zp, _)))) => Err(self.unsupported(
                zp,
                "ZeroPadding2D",
                "it is the model output; only a valid Conv2D or AveragePooling2D takes it",
            )),
            None => Err(self.format(&format!("model {model:?}: its output layer {output:?} is not among its layers"))),
        }
    }

    /// `Add` or `Concatenate` of the tensors `ids` (two or more), as a chain
    /// of two-input layers.
    fn merge(&mut self, name: &str, kind: &str, c: &Value, ids: &[u16]) -> Result<(), ImportError> {
        let un = |why: String| self.unsupported(name, kind, why);
        if ids.len() < 2 {
            return Err(un(format!("it reads {} tensor(s); it needs two or more", ids.len())));
        }
        let layer = if kind == "Add" {
            Layer::Add { activation: Activation::None }
        } else {
            let shape = self.current_shape(name, kind)?;
            let rank = match shape {
                Shape::Image { .. } => 3,
                Shape::Flat(_) => 1,
            };
            let axis = c.get("axis").filter(|v| !v.is_null()).map_or(Some(-1), Value::as_i64);
            if !(axis == Some(-1) || axis == Some(rank)) {
                return Err(un(format!(
                    "axis {} of a {shape} tensor: only the channels (last) axis, -1 or {rank}, is supported",
                    c.get("axis").unwrap_or(&Value::Null)
                )));
            }
            Layer::Concat
        };
        let mut main = ids[0];
        for &other in &ids[1..] {
            self.inputs.push(Inputs { main, other: Some(other) });
            self.layers.push(layer);
            self.readers.push(1);
            main = self.layers.len() as u16;
        }
        self.cur = main;
        Ok(())
    }

    fn set_input(&mut self, name: &str, shape: &Value) -> Result<(), ImportError> {
        // Sizes past the batch axis must be whole numbers from 1 to u32::MAX.
        let dims: Option<Vec<Option<u32>>> =
            shape.as_array().map(|a| a.iter().skip(1).map(|d| size(d, "input dimension").ok()).collect());
        let shape = match dims.as_deref() {
            Some([Some(h), Some(w), Some(c)]) => Shape::image(*h, *w, *c),
            Some([Some(n)]) => Shape::Flat(*n),
            _ => {
                return Err(self.unsupported(
                    name,
                    "input",
                    format!(
                        "input shape {shape} is not (batch, h, w, c) or (batch, n) with known sizes from 1 to {}",
                        u32::MAX
                    ),
                ))
            }
        };
        if self.input.is_none() {
            self.input = Some(shape);
        }
        Ok(())
    }

    /// Append `layer`, reading the current tensor; its output becomes current.
    fn push(&mut self, layer: Layer) {
        self.inputs.push(Inputs { main: self.cur, other: None });
        self.layers.push(layer);
        self.readers.push(1);
        self.cur = self.layers.len() as u16;
    }

    fn has_weights(&self) -> bool {
        !self.layers.is_empty()
    }

    fn layer(&mut self, l: &Value) -> Result<(), ImportError> {
        let kind = l.get("class_name").and_then(Value::as_str).unwrap_or("");
        let name = layer_name(l).to_string();
        let c = l.get("config").cloned().unwrap_or(Value::Null);
        if let Some(shape) = c.get("batch_shape").or_else(|| c.get("batch_input_shape")) {
            self.set_input(&name, shape)?;
        }
        if let Some((zp, _)) = &self.pending_pads {
            let takes =
                ["Conv2D", "DepthwiseConv2D", "SeparableConv2D", "AveragePooling2D", "AvgPool2D", "ZeroPadding2D"];
            if !takes.contains(&kind) {
                let why = format!(
                    "it is followed by {kind} {name:?}; only a valid Conv2D, DepthwiseConv2D, SeparableConv2D or \
                     AveragePooling2D takes it"
                );
                return Err(self.unsupported(zp, "ZeroPadding2D", why));
            }
        }
        let un = |why: &str| self.unsupported(&name, kind, why);
        match kind {
            "InputLayer" => {}
            "Sequential" | "Functional" => self.model(l)?,
            k if AUGMENTATION.contains(&k) => self.skipped.push(name),
            "Rescaling" | "Normalization" if self.has_weights() || self.cur != 0 || self.readers[0] > 1 => {
                return Err(un(
                    "preprocessing is only supported in front of the first Conv2D or Dense, as the input's only reader",
                ))
            }
            "Rescaling" => {
                let channels = self.channels(&name, kind)?;
                let scale = per_channel(c.get("scale"), channels)
                    .ok_or_else(|| un("its scale is not a number or a list per channel"))?;
                let offset = per_channel(c.get("offset").or(Some(&Value::from(0.0))), channels)
                    .ok_or_else(|| un("its offset is not a number or a list per channel"))?;
                self.follow(&name, kind, &scale, &offset)?;
            }
            "Normalization" => {
                let channels = self.channels(&name, kind)?;
                let axis = c.get("axis");
                let last_axis = match axis {
                    None | Some(Value::Null) => true,
                    Some(a) => {
                        a.as_i64() == Some(-1)
                            || a.as_array().is_some_and(|v| v.len() == 1 && v[0].as_i64() == Some(-1))
                    }
                };
                if !last_axis {
                    return Err(un("only per-channel (axis -1) normalization is supported"));
                }
                if c.get("invert").and_then(Value::as_bool) == Some(true) {
                    return Err(un("invert=True is not supported"));
                }
                match (per_channel(c.get("mean"), channels), per_channel(c.get("variance"), channels)) {
                    (Some(mean), Some(var)) => {
                        let (scale, offset) = normalization_affine(&mean, &var);
                        self.follow(&name, kind, &scale, &offset)?;
                    }
                    _ => {
                        // Adapted: mean and variance live in the weights file.
                        let before = self.current_preprocess(channels).map_err(|e| self.format(&e))?;
                        self.adapted = Some(AdaptedNormalization { keras_name: name.clone(), before });
                        self.pre = Pre::Set(None);
                    }
                }
            }
            "Conv2D" | "DepthwiseConv2D" | "SeparableConv2D" => {
                let get2 = |k: &str| pair(c.get(k), k).map_err(|e| un(&e));
                let (kh, kw) = get2("kernel_size")?.ok_or_else(|| un("no kernel_size"))?;
                let (sh, sw) = get2("strides")?.unwrap_or((1, 1));
                let (dh, dw) = get2("dilation_rate")?.unwrap_or((1, 1));
                if (dh, dw) != (1, 1) && (sh, sw) != (1, 1) {
                    // Keras itself refuses this combination.
                    return Err(un("dilation with strides other than 1 is not supported"));
                }
                if c.get("data_format").and_then(Value::as_str).is_some_and(|f| f != "channels_last") {
                    return Err(un("only channels_last is supported"));
                }
                let padding = self.padding(&name, kind, &c)?;
                let activation = self.activation(&name, kind, &c)?;
                if activation == Activation::Softmax {
                    return Err(un("a softmax convolution is not supported"));
                }
                let use_bias = c.get("use_bias").and_then(Value::as_bool).unwrap_or(true);
                let conv = Conv2D::new(1, 1).kernel_hw(kh, kw).strides_hw(sh, sw).dilation(dh, dw);
                let conv = Conv2D { padding, ..conv };
                let whole = |v: Option<&Value>, what: &str, default: u32| match v.filter(|v| !v.is_null()) {
                    None => Ok(default),
                    Some(v) => size(v, what).map_err(|e| un(&e)),
                };
                if kind == "Conv2D" {
                    let filters = whole(c.get("filters"), "filters", 0)?;
                    if filters == 0 {
                        return Err(un("no filters"));
                    }
                    let groups = whole(c.get("groups"), "groups", 1)?;
                    self.pending_pads = None;
                    self.push_weights(&name, WeightKind::Conv { use_bias });
                    self.push(Layer::Conv2D(Conv2D { filters, activation, groups, ..conv }));
                } else {
                    // Depthwise: one group per input channel, `depth_multiplier` filters each.
                    let multiplier = whole(c.get("depth_multiplier"), "depth_multiplier", 1)?;
                    let cin = self.current_channels(&name, kind)?;
                    let filters = cin.checked_mul(multiplier).ok_or_else(|| {
                        un(&format!("{cin} channels x depth_multiplier {multiplier} overflow 32 bits"))
                    })?;
                    let depthwise = Conv2D { filters, groups: cin, ..conv };
                    let points = if kind == "SeparableConv2D" { whole(c.get("filters"), "filters", 0)? } else { 1 };
                    if points == 0 {
                        return Err(un("no filters"));
                    }
                    self.pending_pads = None;
                    if kind == "DepthwiseConv2D" {
                        self.push_weights(&name, WeightKind::Depthwise { use_bias });
                        self.push(Layer::Conv2D(Conv2D { activation, ..depthwise }));
                    } else {
                        // SeparableConv2D = depthwise (no bias) + pointwise 1x1 (bias, activation).
                        self.push_weights(&name, WeightKind::SeparableDepthwise);
                        self.push(Layer::Conv2D(depthwise));
                        self.push_weights(&name, WeightKind::SeparablePointwise { use_bias });
                        self.push(Layer::Conv2D(Conv2D { activation, ..Conv2D::new(points, 1) }));
                    }
                }
            }
            "ZeroPadding2D" => {
                if c.get("data_format").and_then(Value::as_str).is_some_and(|f| f != "channels_last") {
                    return Err(un("only channels_last is supported"));
                }
                let pads = zero_padding(c.get("padding")).map_err(|e| un(&e))?;
                if self.pending_pads.is_some() {
                    return Err(un("two ZeroPadding2D layers in a row are not supported"));
                }
                self.pending_pads = Some((name.clone(), pads));
            }
            "AveragePooling2D" | "AvgPool2D" => {
                let (ph, pw) = pair(c.get("pool_size"), "pool_size").map_err(|e| un(&e))?.unwrap_or((2, 2));
                let (sh, sw) = pair(c.get("strides"), "strides").map_err(|e| un(&e))?.unwrap_or((ph, pw));
                if c.get("data_format").and_then(Value::as_str).is_some_and(|f| f != "channels_last") {
                    return Err(un("only channels_last is supported"));
                }
                let padding = self.padding(&name, kind, &c)?;
                self.pending_pads = None;
                self.push(Layer::AvgPool2D(AvgPool2D { pool: Hw::new(ph, pw), stride: Hw::new(sh, sw), padding }));
            }
            "GlobalAveragePooling2D" | "GlobalAvgPool2D" => {
                if c.get("keepdims").and_then(Value::as_bool) == Some(true) {
                    return Err(un("keepdims=True is not supported (the pool's output is a flat vector)"));
                }
                if c.get("data_format").and_then(Value::as_str).is_some_and(|f| f != "channels_last") {
                    return Err(un("only channels_last is supported"));
                }
                self.push(Layer::GlobalAvgPool);
            }
            "BatchNormalization" => {
                let axis = c.get("axis");
                let last = match axis {
                    None => true,
                    Some(a) => {
                        let rank = self.rank(&name, kind)?;
                        let ax =
                            a.as_i64().or_else(|| a.as_array().filter(|v| v.len() == 1).and_then(|v| v[0].as_i64()));
                        ax == Some(-1) || ax == Some(rank as i64)
                    }
                };
                if !last {
                    return Err(un("only the last (channel) axis is supported"));
                }
                let max_eps = crate::checkpoint::MAX_EPSILON as f64;
                let range = format!("(0, {max_eps}]");
                let epsilon = float_in(&c, "epsilon", 1e-3, |x| x > 0.0 && x <= max_eps, &range).map_err(|e| un(&e))?;
                let momentum =
                    float_in(&c, "momentum", 0.99, |x| (0.0..=1.0).contains(&x), "[0, 1]").map_err(|e| un(&e))?;
                let scale = c.get("scale").and_then(Value::as_bool).unwrap_or(true);
                let center = c.get("center").and_then(Value::as_bool).unwrap_or(true);
                if self.fold
                    && self.foldable(|l| {
                        matches!(l, Layer::Conv2D(c) if c.activation == Activation::None)
                            || matches!(l, Layer::Dense { activation: Activation::None, .. })
                    })
                {
                    // Into the linear layer before it: no layer of its own.
                    let index = self.cur as usize - 1;
                    let kind = WeightKind::FoldedBatchNorm { scale, center, epsilon };
                    self.weight_layers.push(WeightLayer { keras_name: name.clone(), index, kind });
                } else {
                    self.push_weights(&name, WeightKind::BatchNorm { scale, center });
                    self.push(Layer::BatchNorm { epsilon, momentum });
                }
            }
            "MaxPooling2D" | "MaxPool2D" => {
                let (ph, pw) = pair(c.get("pool_size"), "pool_size").map_err(|e| un(&e))?.unwrap_or((2, 2));
                let (sh, sw) = pair(c.get("strides"), "strides").map_err(|e| un(&e))?.unwrap_or((ph, pw));
                if ph != pw || sh != sw {
                    return Err(un("only square pools with equal strides are supported"));
                }
                if c.get("padding").and_then(Value::as_str).is_some_and(|p| p != "valid") {
                    return Err(un("only valid padding is supported for max pooling"));
                }
                self.push(Layer::MaxPool2D { pool: ph, stride: sh });
            }
            "Flatten" => self.push(Layer::Flatten),
            "Dense" => {
                let units = size(c.get("units").ok_or_else(|| un("no units"))?, "units").map_err(|e| un(&e))?;
                let activation = self.activation(&name, kind, &c)?;
                let use_bias = c.get("use_bias").and_then(Value::as_bool).unwrap_or(true);
                self.push_weights(&name, WeightKind::Dense { use_bias });
                self.push(Layer::Dense { units, activation });
            }
            "Dropout" => {
                let rate = float_in(&c, "rate", 0.5, |x| (0.0..1.0).contains(&x), "[0, 1)").map_err(|e| un(&e))?;
                self.push(Layer::Dropout { rate });
            }
            "Activation" | "ReLU" | "Softmax" => {
                let act = match kind {
                    "ReLU" => relu_layer(&c).map_err(|e| un(&e))?,
                    "Softmax" => {
                        // Over the last axis only (Keras's default, -1).
                        match c.get("axis").map(|a| a.as_i64().or_else(|| a.get(0).and_then(Value::as_i64))) {
                            None | Some(Some(-1)) => Activation::Softmax,
                            _ => return Err(un("softmax over another axis than the last")),
                        }
                    }
                    _ => self.activation(&name, kind, &c)?,
                };
                self.fold_activation(act);
            }
            "Add" | "Concatenate" => {
                return Err(un("it merges tensors: supported in a Functional model, reading two or more layers"))
            }
            "" => return Err(self.format(&format!("layer {name:?} has no class_name"))),
            other => {
                return Err(self.unsupported(&name, other, "the layer stack has no such layer"));
            }
        }
        Ok(())
    }

    /// Whether the layer computing the current tensor passes `ok` and the
    /// next layer is its only reader (so that it may merge into it).
    fn foldable(&self, ok: impl Fn(&Layer) -> bool) -> bool {
        let t = self.cur as usize;
        t > 0 && self.readers.get(t) == Some(&1) && self.layers.get(t - 1).is_some_and(ok)
    }

    /// An activation layer: the activation of the Conv2D, Dense or Add
    /// before it when it is that layer's only reader and the layer has none,
    /// else a layer of its own (ReLU, ReLU6: Activation; softmax: Softmax,
    /// which the engine computes where a Dense's softmax is left to the consumer).
    fn fold_activation(&mut self, act: Activation) {
        if act == Activation::None {
            return;
        }
        let elementwise = matches!(act, Activation::Relu | Activation::Relu6);
        let fits = |l: &Layer| match l {
            Layer::Conv2D(c) => c.activation == Activation::None && elementwise,
            Layer::Dense { activation, .. } => *activation == Activation::None,
            Layer::Add { activation } => *activation == Activation::None && elementwise,
            _ => false,
        };
        if self.foldable(fits) {
            match self.layers.get_mut(self.cur as usize - 1) {
                Some(Layer::Conv2D(c)) => c.activation = act,
                Some(Layer::Dense { activation, .. } | Layer::Add { activation }) => *activation = act,
                _ => {}
            }
            return;
        }
        self.push(if elementwise { Layer::Activation(act) } else { Layer::Softmax });
    }

    fn activation(&self, name: &str, kind: &str, c: &Value) -> Result<Activation, ImportError> {
        let a = c.get("activation");
        let text = a.and_then(Value::as_str).or_else(|| {
            // Keras 3 may serialise an activation as {"class_name": "function", "config": "relu"}.
            a.and_then(|v| v.get("config")).and_then(Value::as_str)
        });
        match text {
            None | Some("linear") => Ok(Activation::None),
            Some("relu") => Ok(Activation::Relu),
            Some("relu6") => Ok(Activation::Relu6),
            Some("softmax") => Ok(Activation::Softmax),
            Some(other) => Err(self.unsupported(
                name,
                kind,
                format!("activation {other:?} (supported: relu, relu6, linear, softmax)"),
            )),
        }
    }

    /// A windowed layer's padding, with a pending ZeroPadding2D folded in
    /// (only in front of valid padding: same padding on the padded image is
    /// another layer).
    /// The caller clears `pending_pads` once the layer is pushed.
    fn padding(&self, name: &str, kind: &str, c: &Value) -> Result<Padding, ImportError> {
        let keras = match c.get("padding").and_then(Value::as_str) {
            Some("valid") | None => Padding::Valid,
            Some("same") => Padding::Same,
            Some(p) => return Err(self.unsupported(name, kind, format!("padding {p:?} is not supported"))),
        };
        match (&self.pending_pads, keras) {
            (None, p) => Ok(p),
            (Some((_, [t, b, l, r])), Padding::Valid) => Ok(Padding::explicit(*t, *b, *l, *r)),
            (Some((zp, _)), _) => Err(self.unsupported(
                zp,
                "ZeroPadding2D",
                format!("it is followed by {kind} {name:?} with same padding; only valid padding takes it"),
            )),
        }
    }

    fn push_weights(&mut self, name: &str, kind: WeightKind) {
        self.weight_layers.push(WeightLayer { keras_name: name.to_string(), index: self.layers.len(), kind });
    }

    /// Rank of the current tensor without the batch axis (for BN's axis).
    fn rank(&self, name: &str, kind: &str) -> Result<usize, ImportError> {
        Ok(match self.current_shape(name, kind)? {
            Shape::Image { .. } => 3,
            Shape::Flat(_) => 1,
        })
    }

    /// The shape of the tensor the next layer takes (the stack so far, validated).
    fn current_shape(&self, name: &str, kind: &str) -> Result<Shape, ImportError> {
        let input =
            self.input.ok_or_else(|| self.unsupported(name, kind, "it comes before the input shape is known"))?;
        if self.layers.is_empty() {
            return Ok(input);
        }
        let spec = ModelSpec::graph(input, &self.layers, &self.inputs)
            .map_err(|e| self.format(&format!("before {name:?}: {e}")))?;
        Ok(spec.tensor(self.cur as usize))
    }

    /// Channels of the image the next layer takes.
    fn current_channels(&self, name: &str, kind: &str) -> Result<u32, ImportError> {
        match self.current_shape(name, kind)? {
            Shape::Image { c, .. } => Ok(c),
            Shape::Flat(_) => Err(self.unsupported(name, kind, "it needs an image input, not a flat vector")),
        }
    }

    fn channels(&self, name: &str, kind: &str) -> Result<usize, ImportError> {
        self.input
            .map(|s| s.channels() as usize)
            .ok_or_else(|| self.unsupported(name, kind, "it comes before the input shape is known"))
    }

    fn current_preprocess(&self, channels: usize) -> Result<Option<Preprocess>, String> {
        match &self.pre {
            Pre::Raw => Preprocess::new(&vec![255.0; channels], &vec![0.0; channels]),
            Pre::Set(p) => Ok(p.clone()),
        }
    }

    /// Compose `x * scale + offset` after the preprocessing so far.
    fn follow(&mut self, name: &str, kind: &str, scale: &[f32], offset: &[f32]) -> Result<(), ImportError> {
        let before = self.current_preprocess(scale.len()).map_err(|e| self.unsupported(name, kind, e))?;
        let p = Preprocess::then(before.as_ref(), scale, offset).map_err(|e| self.unsupported(name, kind, e))?;
        self.pre = Pre::Set(p);
        Ok(())
    }
}

/// `(x - mean) / sqrt(var)` as a scale and offset. Keras divides by
/// `max(sqrt(var), epsilon)` with its backend epsilon 1e-7.
pub fn normalization_affine(mean: &[f32], var: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let scale: Vec<f32> = var.iter().map(|v| (1.0 / (*v as f64).sqrt().max(1e-7)) as f32).collect();
    let offset: Vec<f32> =
        mean.iter().zip(var).map(|(m, v)| (-(*m as f64) / (*v as f64).sqrt().max(1e-7)) as f32).collect();
    (scale, offset)
}

fn layer_name(l: &Value) -> &str {
    l.get("config")
        .and_then(|c| c.get("name"))
        .and_then(Value::as_str)
        .or_else(|| l.get("name").and_then(Value::as_str))
        .unwrap_or("?")
}

/// A size (filters, units, kernel, stride, input dimension): an integer in
/// 1..=u32::MAX. Negative, fractional, textual and wrapping values are errors,
/// never taken modulo 2^32 or replaced by a default.
fn size(v: &Value, what: &str) -> Result<u32, String> {
    v.as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{what} {v} is not a whole number from 1 to {}", u32::MAX))
}

/// A `ReLU` layer: plain, or capped at 6 (`max_value=6`, MobileNet's ReLU6);
/// any other cap, slope or threshold is refused.
fn relu_layer(c: &Value) -> Result<Activation, String> {
    let num = |k: &str| c.get(k).filter(|v| !v.is_null()).map(|v| v.as_f64().ok_or(format!("{k} {v} is not a number")));
    if let Some(slope) = num("negative_slope").transpose()? {
        if slope != 0.0 {
            return Err(format!("negative_slope {slope} (a leaky ReLU) is not supported"));
        }
    }
    if let Some(t) = num("threshold").transpose()? {
        if t != 0.0 {
            return Err(format!("threshold {t} is not supported"));
        }
    }
    match num("max_value").transpose()? {
        None => Ok(Activation::Relu),
        Some(6.0) => Ok(Activation::Relu6),
        Some(m) => Err(format!("max_value {m} is not supported (only 6, ReLU6)")),
    }
}

/// ZeroPadding2D's `padding`: `n`, `(h, w)` or `((top, bottom), (left, right))`,
/// as (top, bottom, left, right).
fn zero_padding(v: Option<&Value>) -> Result<[u32; 4], String> {
    let Some(v) = v.filter(|v| !v.is_null()) else { return Ok([1; 4]) };
    let n =
        |v: &Value| v.as_u64().and_then(|n| u32::try_from(n).ok()).ok_or(format!("padding {v} is not a whole number"));
    if v.is_number() {
        let p = n(v)?;
        return Ok([p; 4]);
    }
    match v.as_array().map(Vec::as_slice) {
        Some([h, w]) if h.is_number() && w.is_number() => {
            let (h, w) = (n(h)?, n(w)?);
            Ok([h, h, w, w])
        }
        Some([h, w]) => match (h.as_array().map(Vec::as_slice), w.as_array().map(Vec::as_slice)) {
            (Some([t, b]), Some([l, r])) => Ok([n(t)?, n(b)?, n(l)?, n(r)?]),
            _ => Err(format!("padding {v} is not ((top, bottom), (left, right))")),
        },
        _ => Err(format!("padding {v} is not a number, a pair or a pair of pairs")),
    }
}

/// `[a, b]` or a single `a` (meaning `[a, a]`), each a [`size`]; `Ok(None)` when absent.
fn pair(v: Option<&Value>, what: &str) -> Result<Option<(u32, u32)>, String> {
    let Some(v) = v.filter(|v| !v.is_null()) else { return Ok(None) };
    if v.is_number() {
        let n = size(v, what)?;
        return Ok(Some((n, n)));
    }
    match v.as_array().map(Vec::as_slice) {
        Some([a, b]) => Ok(Some((size(a, what)?, size(b, what)?))),
        _ => Err(format!("{what} {v} is not a number or a pair of numbers")),
    }
}

/// An optional float field: the default when absent, else a finite number
/// within `ok` (described by `range` in the error).
fn float_in(c: &Value, key: &str, default: f64, ok: impl Fn(f64) -> bool, range: &str) -> Result<f32, String> {
    let Some(v) = c.get(key).filter(|v| !v.is_null()) else { return Ok(default as f32) };
    let x = v.as_f64().ok_or_else(|| format!("{key} {v} is not a number"))?;
    let f = x as f32;
    if !(f.is_finite() && ok(x)) {
        return Err(format!("{key} {v} is not in {range}"));
    }
    Ok(f)
}

/// A scalar (for every channel) or one value per channel.
fn per_channel(v: Option<&Value>, channels: usize) -> Option<Vec<f32>> {
    let v = v?;
    if let Some(x) = v.as_f64() {
        return Some(vec![x as f32; channels]);
    }
    let list: Vec<f32> = v.as_array()?.iter().map(|x| x.as_f64().map(|f| f as f32)).collect::<Option<_>>()?;
    match list.len() {
        1 => Some(vec![list[0]; channels]),
        n if n == channels => Some(list),
        _ => None,
    }
}

/// The `(layer, node index, tensor index)` triples an `inbound_nodes` entry
/// (or `input_layers`/`output_layers`) names, in order: Keras 2's nested
/// lists `[[["name", 0, 0, {}], ...]]` or Keras 3's `keras_history`.
fn collect_tensors(v: &Value, out: &mut Vec<(String, u64, u64)>) {
    let index = |x: Option<&Value>| x.and_then(Value::as_u64).unwrap_or(0);
    match v {
        Value::Object(m) => {
            if let Some(h) = m.get("keras_history").and_then(Value::as_array) {
                if let Some(n) = h.first().and_then(Value::as_str) {
                    out.push((n.to_string(), index(h.get(1)), index(h.get(2))));
                }
                return;
            }
            m.values().for_each(|x| collect_tensors(x, out));
        }
        Value::Array(a) => {
            // Keras 2: ["name", node_index, tensor_index, kwargs]
            if let (Some(n), Some(Value::Number(_))) = (a.first().and_then(Value::as_str), a.get(1)) {
                out.push((n.to_string(), index(a.get(1)), index(a.get(2))));
                return;
            }
            a.iter().for_each(|x| collect_tensors(x, out));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn layer(class: &str, name: &str, config: Value, inbound: Option<&str>) -> Value {
        let mut c = config;
        c["name"] = name.into();
        let mut l = json!({"class_name": class, "config": c});
        if let Some(from) = inbound {
            l["inbound_nodes"] =
                json!([{"args": [{"class_name": "__keras_tensor__", "config": {"keras_history": [from, 0, 0]}}]}]);
        } else {
            l["inbound_nodes"] = json!([]);
        }
        l
    }

    fn functional(layers: Vec<Value>) -> Value {
        json!({"class_name": "Functional", "config": {"name": "f", "layers": layers}})
    }

    #[test]
    fn a_functional_chain_imports_and_a_dangling_layer_is_named() {
        let input = layer("InputLayer", "in", json!({"batch_shape": [null, 8, 8, 3]}), None);
        let conv = layer("Conv2D", "c", json!({"filters": 4, "kernel_size": [3, 3], "padding": "same"}), Some("in"));
        let relu = layer("ReLU", "r", json!({}), Some("c"));
        let flat = layer("Flatten", "f", json!({}), Some("r"));
        let dense = layer("Dense", "d", json!({"units": 2, "activation": "softmax"}), Some("f"));
        let m = parse(&functional(vec![input.clone(), conv.clone(), relu, flat, dense.clone()]), Path::new("x.json"))
            .expect("a chain");
        assert_eq!(m.spec.layers().len(), 3);
        assert!(m.spec.is_stack());
        assert!(matches!(m.spec.layers()[0], Layer::Conv2D(Conv2D { activation: Activation::Relu, .. })));
        assert_eq!(m.preprocess.as_ref().map(|p| p.scale()[0]), Some(255.0), "no Rescaling: raw pixels");
        // A layer that nothing reads and that is not the output: a second output.
        let g = layer("Flatten", "g", json!({}), Some("in"));
        let f = layer("Flatten", "f", json!({}), Some("c"));
        let e = parse(&functional(vec![input.clone(), conv.clone(), g, f, dense.clone()]), Path::new("x.json"))
            .expect_err("dangling")
            .to_string();
        assert!(e.contains("\"g\"") && e.contains("one output") && e.contains("Supported:"), "{e}");
        // Reading a layer that does not exist.
        let e = parse(&functional(vec![input, conv, dense]), Path::new("x.json")).expect_err("no f").to_string();
        assert!(e.contains("\"d\"") && e.contains("\"f\""), "{e}");
    }

    fn merge(class: &str, name: &str, config: Value, from: &[&str]) -> Value {
        let mut c = config;
        c["name"] = name.into();
        let args: Vec<Value> = from
            .iter()
            .map(|f| json!({"class_name": "__keras_tensor__", "config": {"keras_history": [f, 0, 0]}}))
            .collect();
        json!({"class_name": class, "config": c, "inbound_nodes": [{"args": [args], "kwargs": {}}]})
    }

    /// A residual block: Conv -> BN -> ReLU, Conv -> BN, Add, ReLU. Folded
    /// for import (3 layers, the Add's ReLU fused), every BN kept for a stack
    /// file (the ReLUs after BNs become Activation layers).
    #[test]
    fn residual_adds_read_both_branches_and_batch_norms_fold_for_import() {
        let model = json!({"class_name": "Functional", "config": {"name": "res",
            "input_layers": [["in", 0, 0]], "output_layers": [["out", 0, 0]], "layers": [
            layer("InputLayer", "in", json!({"batch_shape": [null, 8, 8, 4]}), None),
            layer("Conv2D", "c1", json!({"filters": 4, "kernel_size": 3, "padding": "same"}), Some("in")),
            layer("BatchNormalization", "b1", json!({}), Some("c1")),
            layer("ReLU", "r1", json!({}), Some("b1")),
            layer("Conv2D", "c2", json!({"filters": 4, "kernel_size": 3, "padding": "same"}), Some("r1")),
            layer("BatchNormalization", "b2", json!({}), Some("c2")),
            merge("Add", "add", json!({}), &["in", "b2"]),
            layer("Activation", "out", json!({"activation": "relu"}), Some("add")),
        ]}});
        let m = parse_for_import(&model, Path::new("r.json")).expect("imports");
        let l = m.spec.layers();
        assert_eq!(l.len(), 3);
        assert!(matches!(l[0], Layer::Conv2D(Conv2D { activation: Activation::Relu, .. })));
        assert!(matches!(l[1], Layer::Conv2D(Conv2D { activation: Activation::None, .. })));
        assert_eq!(l[2], Layer::Add { activation: Activation::Relu });
        assert_eq!(m.spec.inputs()[2], Inputs { main: 0, other: Some(2) });
        let folded: Vec<(&str, usize)> = m
            .weight_layers
            .iter()
            .filter(|w| matches!(w.kind, WeightKind::FoldedBatchNorm { .. }))
            .map(|w| (w.keras_name.as_str(), w.index))
            .collect();
        assert_eq!(folded, [("b1", 0), ("b2", 1)]);
        let stack = parse(&model, Path::new("r.json")).expect("a stack");
        let kinds: Vec<_> = stack.spec.layers().iter().map(|l| l.kind().keras_name()).collect();
        assert_eq!(kinds, ["conv2d", "batch_normalization", "activation", "conv2d", "batch_normalization", "add"]);
        assert_eq!(stack.spec.layers()[5], Layer::Add { activation: Activation::Relu });
    }

    /// Keras 2's inbound form, a Concatenate of three (two layers), a BN
    /// read twice (not folded: the conv is not its only reader's input) and
    /// the named errors: another axis, two outputs, two inputs, a shared layer.
    #[test]
    fn keras2_concatenates_and_what_is_refused() {
        let k2 = |class: &str, name: &str, config: Value, from: &[&str]| {
            let mut c = config;
            c["name"] = name.into();
            let inbound: Vec<Value> = from.iter().map(|f| json!([f, 0, 0, {}])).collect();
            let nodes = if from.is_empty() { json!([]) } else { json!([inbound]) };
            json!({"class_name": class, "name": name, "config": c, "inbound_nodes": nodes})
        };
        let model = |concat_axis: Value, outputs: Value| {
            json!({"class_name": "Model", "config": {"name": "m", "input_layers": [["in", 0, 0]],
                "output_layers": outputs, "layers": [
                k2("InputLayer", "in", json!({"batch_input_shape": [null, 6, 6, 2]}), &[]),
                k2("Conv2D", "a", json!({"filters": 3, "kernel_size": 1}), &["in"]),
                k2("Conv2D", "b", json!({"filters": 5, "kernel_size": 1, "activation": "relu"}), &["in"]),
                k2("BatchNormalization", "bn", json!({}), &["b"]),
                k2("Concatenate", "cat", json!({"axis": concat_axis}), &["a", "bn", "in"]),
                k2("GlobalAveragePooling2D", "gap", json!({}), &["cat"]),
                k2("Dense", "d", json!({"units": 2, "activation": "softmax"}), &["gap"]),
            ]}})
        };
        let m = parse_for_import(&model(json!(-1), json!([["d", 0, 0]])), Path::new("k2.json")).expect("imports");
        let kinds: Vec<_> = m.spec.layers().iter().map(|l| l.kind().keras_name()).collect();
        assert_eq!(
            kinds,
            [
                "conv2d",
                "conv2d",
                "batch_normalization",
                "concatenate",
                "concatenate",
                "global_average_pooling2d",
                "dense"
            ]
        );
        assert_eq!(m.spec.inputs()[3], Inputs { main: 1, other: Some(3) });
        assert_eq!(m.spec.inputs()[4], Inputs { main: 4, other: Some(0) });
        assert_eq!(m.spec.tensor(5), Shape::image(6, 6, 10));
        let e = parse_for_import(&model(json!(1), json!([["d", 0, 0]])), Path::new("k2.json"))
            .expect_err("axis 1")
            .to_string();
        assert!(e.contains("\"cat\"") && e.contains("Concatenate") && e.contains("axis 1"), "{e}");
        let e = parse_for_import(&model(json!(3), json!([["d", 0, 0], ["gap", 0, 0]])), Path::new("k2.json"))
            .expect_err("two outputs")
            .to_string();
        assert!(e.contains("one output") && e.contains("\"m\""), "{e}");
        let mut two_in = model(json!(3), json!([["d", 0, 0]]));
        let extra = k2("InputLayer", "in2", json!({"batch_input_shape": [null, 6, 6, 2]}), &[]);
        two_in["config"]["layers"].as_array_mut().expect("layers").insert(1, extra);
        let e = parse_for_import(&two_in, Path::new("k2.json")).expect_err("two inputs").to_string();
        assert!(e.contains("one input") && e.contains("in2"), "{e}");
        let mut shared = model(json!(3), json!([["d", 0, 0]]));
        shared["config"]["layers"][1]["inbound_nodes"] = json!([[["in", 0, 0, {}]], [["in", 0, 0, {}]]]);
        let e = parse_for_import(&shared, Path::new("k2.json")).expect_err("shared").to_string();
        assert!(e.contains("\"a\"") && e.contains("called 2 times"), "{e}");
    }

    #[test]
    fn rescaling_and_normalization_become_the_input_transform() {
        let seq = json!({"class_name": "Sequential", "config": {"name": "s", "layers": [
            {"class_name": "InputLayer", "config": {"name": "in", "batch_input_shape": [null, 4, 4, 3]}},
            {"class_name": "Rescaling", "config": {"name": "r", "scale": 0.00784313725490196, "offset": -1.0}},
            {"class_name": "Normalization", "config": {"name": "n", "axis": -1, "mean": [0.5, 0.0, -0.5], "variance": [4.0, 1.0, 0.25]}},
            {"class_name": "RandomFlip", "config": {"name": "flip"}},
            {"class_name": "Flatten", "config": {"name": "f"}},
            {"class_name": "Dense", "config": {"name": "d", "units": 2, "activation": "linear"}}
        ]}});
        let m = parse(&seq, Path::new("s.json")).expect("imports");
        let p = m.preprocess.expect("a transform");
        // pixel p: ((255 p) / 127.5 - 1 - mean) / std
        let want_scale = [1.0, 2.0, 4.0];
        let want_offset = [-0.75, -1.0, -1.0];
        for c in 0..3 {
            assert!(
                (p.scale()[c] - want_scale[c]).abs() < 1e-6 && (p.offset()[c] - want_offset[c]).abs() < 1e-6,
                "{p:?}"
            );
        }
        assert_eq!(m.skipped, vec!["flip".to_string()]);
        let bad = json!({"class_name": "Sequential", "config": {"name": "s", "layers": [
            {"class_name": "InputLayer", "config": {"name": "in", "batch_input_shape": [null, 4, 4, 3]}},
            {"class_name": "Conv2D", "config": {"name": "c", "filters": 2, "kernel_size": [3, 3], "data_format": "channels_first"}}
        ]}});
        let e = parse(&bad, Path::new("s.json")).expect_err("channels first").to_string();
        assert!(e.contains("\"c\"") && e.contains("Conv2D") && e.contains("channels_last"), "{e}");
    }

    /// Sizes past u32 are refused, not wrapped; negative strides, text where
    /// a number belongs, and out-of-range epsilon or dropout rates are named.
    #[test]
    fn numbers_are_parsed_strictly() {
        let model = |conv: Value, extra: Value| {
            json!({"class_name": "Sequential", "config": {"name": "s", "layers": [
                {"class_name": "InputLayer", "config": {"name": "in", "batch_input_shape": [null, 8, 8, 3]}},
                {"class_name": "Conv2D", "config": conv},
                extra,
                {"class_name": "Flatten", "config": {"name": "f"}},
                {"class_name": "Dense", "config": {"name": "d", "units": 2}}
            ]}})
        };
        let conv = |k: &str, v: Value| {
            let mut c = json!({"name": "c", "filters": 2, "kernel_size": 3});
            c[k] = v;
            c
        };
        let bn = |k: &str, v: Value| {
            let mut c = json!({"class_name": "BatchNormalization", "config": {"name": "bn"}});
            c["config"][k] = v;
            c
        };
        let drop = |v: Value| json!({"class_name": "Dropout", "config": {"name": "dr", "rate": v}});
        let ok = json!({"class_name": "Dropout", "config": {"name": "dr", "rate": 0.25}});
        assert!(parse(&model(conv("strides", json!(1)), ok.clone()), Path::new("m.json")).is_ok());
        let cases = [
            (model(conv("filters", json!(4294967298u64)), ok.clone()), "filters 4294967298"),
            (model(conv("strides", json!([-1, -1])), ok.clone()), "strides -1"),
            (model(conv("strides", json!(4294967297u64)), ok.clone()), "strides 4294967297"),
            (model(conv("kernel_size", json!("3")), ok.clone()), "kernel_size \"3\""),
            (model(conv("filters", json!(0)), ok.clone()), "filters 0"),
            (model(conv("strides", json!(1)), bn("epsilon", json!("tiny"))), "epsilon \"tiny\""),
            (model(conv("strides", json!(1)), bn("epsilon", json!(1e39))), "epsilon 1e+39"),
            (model(conv("strides", json!(1)), bn("epsilon", json!(-0.001))), "epsilon -0.001"),
            (model(conv("strides", json!(1)), drop(json!("half"))), "rate \"half\""),
            (model(conv("strides", json!(1)), drop(json!(1.5))), "rate 1.5"),
        ];
        for (m, want) in cases {
            let e = parse(&m, Path::new("m.json")).expect_err(want).to_string();
            assert!(e.contains(want) && e.contains("m.json"), "want {want:?} in: {e}");
        }
        let mut huge_input = model(conv("strides", json!(1)), ok);
        huge_input["config"]["layers"][0]["config"]["batch_input_shape"] = json!([null, 4294967304u64, 8, 3]);
        let e = parse(&huge_input, Path::new("m.json")).expect_err("input").to_string();
        assert!(e.contains("4294967304"), "{e}");
    }
}
