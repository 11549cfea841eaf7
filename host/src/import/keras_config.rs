//! A Keras model's architecture (`model.to_json()`, a `.keras` file's
//! `config.json`, an `.h5` file's `model_config`) onto the layer stack.
//!
//! Keras 3 and tf.keras 2 configs differ in details (`batch_shape` vs
//! `batch_input_shape`, how inbound nodes are written); both are read.
//! Sequential models, nested Sequentials (the TF tutorial's
//! `data_augmentation` block) and Functional models that are a straight chain
//! are accepted; anything the stack cannot express is an error naming the
//! layer.
use super::error::ImportError;
use crate::preprocess::Preprocess;
use serde_json::Value;
use shared::spec::{Activation, AvgPool2D, Conv2D, Hw, Layer, ModelSpec, Padding, Shape};
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

/// Parse a Keras model config; `path` names the file in errors.
pub fn parse(v: &Value, path: &Path) -> Result<KerasModel, ImportError> {
    let mut b = Builder {
        path,
        input: None,
        layers: Vec::new(),
        pre: Pre::Raw,
        weight_layers: Vec::new(),
        skipped: Vec::new(),
        adapted: None,
        pending_pads: None,
    };
    b.model(v)?;
    if let Some((name, _)) = &b.pending_pads {
        return Err(b.unsupported(name, "ZeroPadding2D", "it must be followed by a valid Conv2D or AveragePooling2D"));
    }
    let input = b
        .input
        .ok_or_else(|| b.format("the config gives no input shape (no InputLayer, batch_shape or batch_input_shape)"))?;
    let spec = ModelSpec::new(input, &b.layers)
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
    pre: Pre,
    weight_layers: Vec<WeightLayer>,
    skipped: Vec<String>,
    adapted: Option<AdaptedNormalization>,
    /// A ZeroPadding2D waiting to fold into the valid Conv2D or pool after it:
    /// its name and (top, bottom, left, right).
    pending_pads: Option<(String, [u32; 4])>,
}

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
            self.check_chain(layers)?;
        }
        for l in layers {
            self.layer(l)?;
        }
        Ok(())
    }

    /// A Functional model must be a straight chain: each layer's one input is the previous layer.
    fn check_chain(&self, layers: &[Value]) -> Result<(), ImportError> {
        let mut previous: Option<&str> = None;
        for l in layers {
            let name = layer_name(l);
            let kind = l.get("class_name").and_then(Value::as_str).unwrap_or("?");
            let mut inbound = Vec::new();
            if let Some(nodes) = l.get("inbound_nodes") {
                collect_inbound(nodes, &mut inbound);
            }
            inbound.dedup();
            let ok = match previous {
                None => inbound.is_empty(),
                Some(p) => inbound.len() == 1 && inbound[0] == p,
            };
            if !ok {
                return Err(self.unsupported(
                    name,
                    kind,
                    format!("its inputs are {inbound:?}; only a straight chain of layers (no branches or merges) is supported"),
                ));
            }
            previous = Some(name);
        }
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
            if !matches!(kind, "Conv2D" | "AveragePooling2D" | "AvgPool2D" | "ZeroPadding2D") {
                let why =
                    format!("it is followed by {kind} {name:?}; only a valid Conv2D or AveragePooling2D takes it");
                return Err(self.unsupported(zp, "ZeroPadding2D", why));
            }
        }
        let un = |why: &str| self.unsupported(&name, kind, why);
        match kind {
            "InputLayer" => {}
            "Sequential" | "Functional" => self.model(l)?,
            k if AUGMENTATION.contains(&k) => self.skipped.push(name),
            "Rescaling" | "Normalization" if self.has_weights() => {
                return Err(un("preprocessing is only supported in front of the first Conv2D or Dense"))
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
                    self.layers.push(Layer::Conv2D(Conv2D { filters, activation, groups, ..conv }));
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
                        self.layers.push(Layer::Conv2D(Conv2D { activation, ..depthwise }));
                    } else {
                        // SeparableConv2D = depthwise (no bias) + pointwise 1x1 (bias, activation).
                        self.push_weights(&name, WeightKind::SeparableDepthwise);
                        self.layers.push(Layer::Conv2D(depthwise));
                        self.push_weights(&name, WeightKind::SeparablePointwise { use_bias });
                        self.layers.push(Layer::Conv2D(Conv2D { activation, ..Conv2D::new(points, 1) }));
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
                self.layers.push(Layer::AvgPool2D(AvgPool2D {
                    pool: Hw::new(ph, pw),
                    stride: Hw::new(sh, sw),
                    padding,
                }));
            }
            "GlobalAveragePooling2D" | "GlobalAvgPool2D" => {
                if c.get("keepdims").and_then(Value::as_bool) == Some(true) {
                    return Err(un("keepdims=True is not supported (the pool's output is a flat vector)"));
                }
                if c.get("data_format").and_then(Value::as_str).is_some_and(|f| f != "channels_last") {
                    return Err(un("only channels_last is supported"));
                }
                self.layers.push(Layer::GlobalAvgPool);
            }
            "BatchNormalization" => {
                let axis = c.get("axis");
                let last = match axis {
                    None => true,
                    Some(a) => {
                        let rank = self.rank();
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
                self.push_weights(&name, WeightKind::BatchNorm { scale, center });
                self.layers.push(Layer::BatchNorm { epsilon, momentum });
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
                self.layers.push(Layer::MaxPool2D { pool: ph, stride: sh });
            }
            "Flatten" => self.layers.push(Layer::Flatten),
            "Dense" => {
                let units = size(c.get("units").ok_or_else(|| un("no units"))?, "units").map_err(|e| un(&e))?;
                let activation = self.activation(&name, kind, &c)?;
                let use_bias = c.get("use_bias").and_then(Value::as_bool).unwrap_or(true);
                self.push_weights(&name, WeightKind::Dense { use_bias });
                self.layers.push(Layer::Dense { units, activation });
            }
            "Dropout" => {
                let rate = float_in(&c, "rate", 0.5, |x| (0.0..1.0).contains(&x), "[0, 1)").map_err(|e| un(&e))?;
                self.layers.push(Layer::Dropout { rate });
            }
            "Activation" | "ReLU" | "Softmax" => {
                let act = match kind {
                    "ReLU" => relu_layer(&c).map_err(|e| un(&e))?,
                    "Softmax" => Activation::Softmax,
                    _ => self.activation(&name, kind, &c)?,
                };
                self.fold_activation(&name, kind, act)?;
            }
            "" => return Err(self.format(&format!("layer {name:?} has no class_name"))),
            other => {
                return Err(self.unsupported(&name, other, "the layer stack has no such layer"));
            }
        }
        Ok(())
    }

    /// An activation layer merges into the Conv2D or Dense right before it.
    fn fold_activation(&mut self, name: &str, kind: &str, act: Activation) -> Result<(), ImportError> {
        if act == Activation::None {
            return Ok(());
        }
        match self.layers.last_mut() {
            Some(Layer::Conv2D(c))
                if c.activation == Activation::None && matches!(act, Activation::Relu | Activation::Relu6) =>
            {
                c.activation = act;
                Ok(())
            }
            Some(Layer::Dense { activation, .. }) if *activation == Activation::None => {
                *activation = act;
                Ok(())
            }
            _ => Err(self.unsupported(
                name,
                kind,
                "an activation is supported only right after a linear Conv2D or Dense",
            )),
        }
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

    /// Rank of the current tensor including the batch axis (for BN's axis).
    fn rank(&self) -> usize {
        let flat = self.layers.iter().any(|l| matches!(l, Layer::Flatten | Layer::Dense { .. } | Layer::GlobalAvgPool))
            || matches!(self.input, Some(Shape::Flat(_)));
        if flat {
            1
        } else {
            3
        }
    }

    /// Channels of the tensor the next layer takes (the stack so far, validated).
    fn current_channels(&self, name: &str, kind: &str) -> Result<u32, ImportError> {
        let input =
            self.input.ok_or_else(|| self.unsupported(name, kind, "it comes before the input shape is known"))?;
        if self.layers.is_empty() {
            return Ok(input.channels());
        }
        let spec = ModelSpec::new(input, &self.layers).map_err(|e| self.format(&format!("before {name:?}: {e}")))?;
        match spec.output() {
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

/// Names of the layers an `inbound_nodes` entry refers to (Keras 2's nested
/// lists `[[["name", 0, 0, {}]]]` or Keras 3's `keras_history`).
fn collect_inbound(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(h) = m.get("keras_history").and_then(Value::as_array) {
                if let Some(n) = h.first().and_then(Value::as_str) {
                    out.push(n.to_string());
                }
                return;
            }
            m.values().for_each(|x| collect_inbound(x, out));
        }
        Value::Array(a) => {
            // Keras 2: ["name", node_index, tensor_index, kwargs]
            if let (Some(n), Some(Value::Number(_))) = (a.first().and_then(Value::as_str), a.get(1)) {
                out.push(n.to_string());
                return;
            }
            a.iter().for_each(|x| collect_inbound(x, out));
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
    fn a_functional_chain_imports_and_a_branch_is_named() {
        let input = layer("InputLayer", "in", json!({"batch_shape": [null, 8, 8, 3]}), None);
        let conv = layer("Conv2D", "c", json!({"filters": 4, "kernel_size": [3, 3], "padding": "same"}), Some("in"));
        let relu = layer("ReLU", "r", json!({}), Some("c"));
        let flat = layer("Flatten", "f", json!({}), Some("r"));
        let dense = layer("Dense", "d", json!({"units": 2, "activation": "softmax"}), Some("f"));
        let m = parse(&functional(vec![input.clone(), conv.clone(), relu, flat, dense.clone()]), Path::new("x.json"))
            .expect("a chain");
        assert_eq!(m.spec.layers().len(), 3);
        assert!(matches!(m.spec.layers()[0], Layer::Conv2D(Conv2D { activation: Activation::Relu, .. })));
        assert_eq!(m.preprocess.as_ref().map(|p| p.scale()[0]), Some(255.0), "no Rescaling: raw pixels");
        // A layer fed from two places is a branch.
        let add = layer("Flatten", "g", json!({}), Some("in"));
        let e = parse(&functional(vec![input, conv, add, dense]), Path::new("x.json")).expect_err("branch").to_string();
        assert!(e.contains("\"g\"") && e.contains("straight chain"), "{e}");
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
