//! ONNX (PyTorch's `torch.onnx.export`) onto the layer stack, read with
//! tract's ONNX crate (protobuf and tensor decoding).
//!
//! Each node reads tensors computed before it (ONNX's topological order) plus
//! constants; `Add` of two tensors and `Concat` on channels merge branches
//! ([`shared::spec::Inputs`]), and a Relu or Clip whose input is read by it
//! alone fuses into the Conv, Gemm or Add before it (else it is a layer of
//! its own). The graph has one input and one output. Layouts are converted: ONNX convolutions are NCHW with
//! OIHW kernels, the stack is NHWC with HWIO kernels, and a Flatten of an
//! NCHW tensor orders features channel-major, so the first Dense layer's
//! rows are permuted from `c*H*W + h*W + w` to `(h*W + w)*C + c`.
use super::error::ImportError;
use super::imported::Imported;
use super::tensors::{StackTensors, Tensor};
use shared::geometry::ConvGeom;
use shared::spec::{Activation, AvgPool2D, Conv2D, Hw, Inputs, Layer, ModelSpec, Padding, Shape};
use std::collections::HashMap;
use std::path::Path;
use tract_onnx::pb::{AttributeProto, NodeProto, TensorProto};
use tract_onnx::prelude::Framework;

/// An ONNX file.
pub fn import_onnx(path: &Path) -> Result<Imported, ImportError> {
    let fmt = |what: String| ImportError::Format { path: path.to_path_buf(), what };
    let onnx = tract_onnx::onnx();
    crate::budget::check_file("the ONNX model", path).map_err(|e| fmt(e.to_string()))?;
    let proto = onnx.proto_model_for_path(path).map_err(|e| fmt(format!("not a readable ONNX model: {e}")))?;
    let graph = proto.graph.as_ref().ok_or_else(|| fmt("the model has no graph".into()))?;
    let load = |t: &TensorProto| -> Result<Tensor, ImportError> {
        check_tensor_proto(t).map_err(|what| fmt(format!("tensor {:?}: {what}", t.name)))?;
        let tensor = tract_onnx::tensor::load_tensor(&*onnx.provider, t, path.parent().and_then(|p| p.to_str()))
            .and_then(|t| t.cast_to::<f32>().map(|c| c.into_owned()))
            .map_err(|e| fmt(format!("tensor {:?}: {e}", t.name)))?;
        let data = tensor.as_slice::<f32>().map_err(|e| fmt(format!("tensor {:?}: {e}", t.name)))?.to_vec();
        Ok(Tensor { location: format!("initializer {:?}", t.name), shape: tensor.shape().to_vec(), data })
    };
    let mut constants: HashMap<String, Tensor> = HashMap::new();
    for t in &graph.initializer {
        constants.insert(t.name.clone(), load(t)?);
    }
    for n in graph.node.iter().filter(|n| n.op_type == "Constant") {
        if let (Some(out), Some(t)) = (n.output.first(), attr(n, "value").and_then(|a| a.t.as_ref())) {
            let mut t = load(t)?;
            t.location = format!("constant {out:?}");
            constants.insert(out.clone(), t);
        }
    }
    let input = graph
        .input
        .iter()
        .find(|i| !constants.contains_key(&i.name))
        .ok_or_else(|| fmt("the graph has no input".into()))?;
    let dims = input_dims(input).ok_or_else(|| fmt(format!("input {:?} has no fixed shape", input.name)))?;
    // Shape subgraphs over constants (PyTorch's ZeroPad2d pads) become constants.
    let mut folded = std::collections::HashSet::new();
    for (k, n) in graph.node.iter().enumerate() {
        let inputs: Vec<&String> = n.input.iter().filter(|i| !i.is_empty()).collect();
        let all_constant = !inputs.is_empty() && inputs.iter().all(|i| constants.contains_key(*i));
        if !(super::onnx_fold::FOLDABLE.contains(&n.op_type.as_str()) && all_constant) {
            continue;
        }
        let values: Vec<&Tensor> = inputs.iter().map(|i| &constants[*i]).collect();
        let name = if n.name.is_empty() { n.op_type.clone() } else { n.name.clone() };
        let t = super::onnx_fold::fold(n, &values).map_err(|e| fmt(format!("node {name:?} ({}): {e}", n.op_type)))?;
        if let Some(out) = n.output.first() {
            constants.insert(out.clone(), t);
        }
        folded.insert(k);
    }
    if graph.output.len() > 1 {
        let names: Vec<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
        return Err(fmt(format!("the graph has outputs {names:?}: only models with one output are supported")));
    }
    let mut b = Chain::new(path, &input.name, &dims, &constants)?;
    let live = |k: usize, n: &NodeProto| n.op_type != "Constant" && !folded.contains(&k);
    for (_, node) in graph.node.iter().enumerate().filter(|(k, n)| live(*k, n)) {
        for i in node.input.iter().filter(|i| !i.is_empty() && !constants.contains_key(*i)) {
            *b.onnx_readers.entry(i.clone()).or_default() += 1;
        }
    }
    for (k, node) in graph.node.iter().enumerate() {
        if live(k, node) {
            b.node(node)?;
        }
    }
    b.finish(graph.output.first().map(|o| o.name.as_str()))
}

/// Bytes per element of the ONNX data types tract loads as numbers, or None
/// (strings, complex numbers, bfloat16 and unknown codes).
fn element_size(data_type: i32) -> Option<u64> {
    match data_type {
        2 | 3 | 9 => Some(1),   // uint8, int8, bool
        4 | 5 | 10 => Some(2),  // uint16, int16, float16
        1 | 6 | 12 => Some(4),  // float, int32, uint32
        7 | 11 | 13 => Some(8), // int64, double, uint64
        _ => None,
    }
}

/// A tensor's declared type, shape and data must agree before tract's tensor
/// code sees them (it panics, or allocates what the shape says, otherwise):
/// a known number type, non-negative dimensions whose product fits the
/// memory limit, and exactly as much data as the shape needs.
fn check_tensor_proto(t: &TensorProto) -> Result<(), String> {
    let size = element_size(t.data_type)
        .ok_or_else(|| format!("data type {} is not a number type that can be imported", t.data_type))?;
    let mut count: u64 = 1;
    for &d in &t.dims {
        let d = u64::try_from(d).map_err(|_| format!("dimension {d} of shape {:?} is negative", t.dims))?;
        count = count.checked_mul(d).ok_or_else(|| format!("shape {:?} overflows 64 bits", t.dims))?;
    }
    crate::budget::check_elements(&format!("shape {:?}", t.dims), count, size.max(4)).map_err(|e| e.to_string())?;
    if t.segment.is_some() {
        return Err("segmented tensors are not supported".into());
    }
    let external = tract_onnx::pb::tensor_proto::DataLocation::External as i32;
    if t.data_location == Some(external) {
        return Err("its data is in an external file, which import does not read: \
                    re-export with the weights inside the .onnx file"
            .into());
    }
    let (have, unit) = if !t.raw_data.is_empty() {
        (t.raw_data.len() as u64, size)
    } else {
        let n = match t.data_type {
            1 => t.float_data.len(),
            7 | 13 => t.int64_data.len(),
            11 => t.double_data.len(),
            _ => t.int32_data.len(),
        };
        (n as u64, 1)
    };
    let need = count * unit;
    if have != need {
        let what = if unit == 1 { "values" } else { "bytes of raw data" };
        return Err(format!("holds {have} {what}; its shape {:?} needs {need}", t.dims));
    }
    Ok(())
}

/// An integer attribute or dimension that must be a positive u32 (strides,
/// kernel sizes, image sizes): zero, negative and wrapped values are errors.
fn positive_or_zero(v: i64) -> Option<u32> {
    u32::try_from(v).ok()
}

fn positive_u32(v: i64) -> Option<u32> {
    u32::try_from(v).ok().filter(|&v| v > 0)
}

fn input_dims(i: &tract_onnx::pb::ValueInfoProto) -> Option<Vec<usize>> {
    use tract_onnx::pb::tensor_shape_proto::dimension::Value as D;
    use tract_onnx::pb::type_proto::Value as T;
    let Some(T::TensorType(t)) = i.r#type.as_ref()?.value.as_ref() else { return None };
    t.shape
        .as_ref()?
        .dim
        .iter()
        .map(|d| match d.value {
            Some(D::DimValue(v)) if v > 0 => Some(v as usize),
            // A symbolic batch dimension.
            _ => Some(0),
        })
        .collect()
}

fn attr<'a>(n: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}

fn ints(n: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(n, name).map(|a| a.ints.clone())
}

/// The image tensor's layout between nodes.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Layout {
    /// `[N, C, H, W]`: what ONNX convolutions take.
    Nchw,
    /// `[N, H, W, C]`: our layout (a Keras model through tf2onnx starts so).
    Nhwc,
    /// Flattened; `Some((c, h, w))` when it was flattened from NCHW.
    Flat(Option<(usize, usize, usize)>),
}

/// The weights of one stack layer waiting for its optional parts (bias from
/// an `Add` after a `MatMul`).
struct Pending {
    index: usize,
    node: String,
    tensors: Vec<Option<Tensor>>,
}

/// Where an ONNX tensor is in the stack, and its layout there.
#[derive(Clone, Debug)]
struct TensorState {
    /// The stack tensor (0 the input, `i + 1` layer `i`'s output).
    id: u16,
    layout: Layout,
    hwc: (usize, usize, usize),
    pending_pad: Option<(String, [u32; 4])>,
    pooled_flat: bool,
}

struct Chain<'a> {
    path: &'a Path,
    constants: &'a HashMap<String, Tensor>,
    /// The stack tensor it is.
    cur: u16,
    /// What each stack layer reads.
    inputs: Vec<Inputs>,
    /// The ONNX tensors computed so far.
    tensors: HashMap<String, TensorState>,
    /// How many nodes read each ONNX tensor (absent: one).
    onnx_readers: HashMap<String, usize>,
    /// How many nodes read each stack tensor: an activation fuses into the
    /// layer before it only when it is that layer's only reader.
    readers: Vec<usize>,
    layout: Layout,
    input: Shape,
    /// Current (h, w, c) of the image tensor, or features when flat.
    hwc: (usize, usize, usize),
    layers: Vec<Layer>,
    weights: Vec<Pending>,
    /// A `Pad` waiting to fold into the next Conv or AveragePool: its name
    /// and (top, bottom, left, right).
    pending_pad: Option<(String, [u32; 4])>,
    /// The last layer is a GlobalAveragePool, whose output is already flat.
    pooled_flat: bool,
}

impl<'a> Chain<'a> {
    fn new(
        path: &'a Path,
        input: &str,
        dims: &[usize],
        constants: &'a HashMap<String, Tensor>,
    ) -> Result<Self, ImportError> {
        let un = |why: String| ImportError::Unsupported {
            path: path.to_path_buf(),
            name: input.to_string(),
            kind: "graph input".into(),
            why,
            supported: super::error::ONNX_SUPPORTED,
        };
        if dims.iter().any(|&d| u32::try_from(d).is_err()) {
            return Err(un(format!("shape {dims:?} has a dimension over {}", u32::MAX)));
        }
        let (layout, hwc) = match *dims {
            [_, c, h, w] if c <= 4 && c > 0 && h > 0 && w > 0 => (Layout::Nchw, (h, w, c)),
            [_, h, w, c] if c <= 4 && c > 0 && h > 0 && w > 0 => (Layout::Nhwc, (h, w, c)),
            [_, n] if n > 0 => (Layout::Flat(None), (1, 1, n)),
            _ => {
                return Err(un(format!(
                    "shape {dims:?} is not an image [N, C, H, W] / [N, H, W, C] or features [N, n]"
                )))
            }
        };
        let input_shape = match layout {
            Layout::Flat(_) => Shape::Flat(hwc.2 as u32),
            _ => Shape::image(hwc.0 as u32, hwc.1 as u32, hwc.2 as u32),
        };
        let state = TensorState { id: 0, layout, hwc, pending_pad: None, pooled_flat: false };
        Ok(Chain {
            path,
            constants,
            cur: 0,
            inputs: Vec::new(),
            tensors: HashMap::from([(input.to_string(), state)]),
            onnx_readers: HashMap::new(),
            readers: vec![1],
            layout,
            input: input_shape,
            hwc,
            layers: Vec::new(),
            weights: Vec::new(),
            pending_pad: None,
            pooled_flat: false,
        })
    }

    fn unsupported(&self, n: &NodeProto, why: impl Into<String>) -> ImportError {
        let name = if n.name.is_empty() { n.output.first().cloned().unwrap_or_default() } else { n.name.clone() };
        ImportError::Unsupported {
            path: self.path.to_path_buf(),
            name,
            kind: n.op_type.clone(),
            why: why.into(),
            supported: super::error::ONNX_SUPPORTED,
        }
    }

    fn constant(&self, n: &NodeProto, k: usize, what: &str) -> Result<Tensor, ImportError> {
        let name = n.input.get(k).filter(|s| !s.is_empty());
        name.and_then(|s| self.constants.get(s))
            .cloned()
            .ok_or_else(|| self.unsupported(n, format!("its {what} (input {k}) is not a constant in the file")))
    }

    fn state(&self) -> TensorState {
        TensorState {
            id: self.cur,
            layout: self.layout,
            hwc: self.hwc,
            pending_pad: self.pending_pad.clone(),
            pooled_flat: self.pooled_flat,
        }
    }

    fn node(&mut self, n: &NodeProto) -> Result<(), ImportError> {
        // Every node reads tensors computed before it (and constants).
        let data_inputs: Vec<&String> =
            n.input.iter().filter(|i| !i.is_empty() && !self.constants.contains_key(*i)).collect();
        let mut states = Vec::with_capacity(data_inputs.len());
        for i in &data_inputs {
            let s = self.tensors.get(*i).cloned().ok_or_else(|| {
                self.unsupported(n, format!("its input {i:?} is not the graph input nor computed by a node before it"))
            })?;
            states.push(s);
        }
        let out = n.output.first().cloned().unwrap_or_default();
        if n.output.iter().filter(|o| !o.is_empty()).count() > 1 && n.op_type != "Dropout" {
            return Err(self.unsupported(n, "only nodes with one output are supported"));
        }
        let Some(first) = states.first().cloned() else {
            return Err(self.unsupported(n, "it reads no tensor (only constants)"));
        };
        self.cur = first.id;
        self.layout = first.layout;
        self.hwc = first.hwc;
        self.pending_pad = first.pending_pad.clone();
        self.pooled_flat = first.pooled_flat;
        if states.len() > 1 || matches!(n.op_type.as_str(), "Concat") {
            if let Some((pad, _)) = states.iter().find_map(|s| s.pending_pad.as_ref()) {
                let why = format!("the Pad {pad:?} before it can fold only into a Conv or AveragePool");
                return Err(self.unsupported(n, why));
            }
            match n.op_type.as_str() {
                "Add" if states.len() == 2 => self.merge(n, &states, Layer::Add { activation: Activation::None })?,
                "Concat" => self.merge(n, &states, Layer::Concat)?,
                _ => {
                    return Err(self.unsupported(
                        n,
                        format!(
                            "it reads {} tensors {data_inputs:?}; only Add (of two) and Concat merge tensors",
                            states.len()
                        ),
                    ))
                }
            }
        } else {
            self.single(n)?;
        }
        // This node read `first` once; its readers read what it gives.
        let readers = self.onnx_readers.get(&out).copied().unwrap_or(1);
        let t = self.cur as usize;
        let now = if self.cur == first.id { self.readers[t].saturating_sub(1) + readers } else { readers };
        if let Some(r) = self.readers.get_mut(t) {
            *r = now;
        }
        let state = self.state();
        self.tensors.insert(out, state);
        Ok(())
    }

    /// `Add` of two tensors, or `Concat` of two or more on channels (as a
    /// chain of two-input layers).
    fn merge(&mut self, n: &NodeProto, states: &[TensorState], layer: Layer) -> Result<(), ImportError> {
        let first = &states[0];
        let channels_axis = match first.layout {
            Layout::Nchw => [1, -3],
            Layout::Nhwc => [3, -1],
            Layout::Flat(None) => [1, -1],
            Layout::Flat(Some(_)) => [i64::MAX, i64::MAX],
        };
        let mut c = first.hwc.2;
        for s in &states[1..] {
            let same_place = s.layout == first.layout && (s.hwc.0, s.hwc.1) == (first.hwc.0, first.hwc.1);
            let fits = match layer {
                Layer::Concat => same_place,
                _ => same_place && s.hwc == first.hwc,
            };
            if !fits || s.pooled_flat != first.pooled_flat {
                return Err(self.unsupported(
                    n,
                    format!(
                        "its inputs are a {:?} tensor of (h, w, c) {:?} and a {:?} one of {:?}: Add needs equal shapes, \
                         Concat equal heights and widths",
                        first.layout, first.hwc, s.layout, s.hwc
                    ),
                ));
            }
            c += s.hwc.2;
        }
        if layer == Layer::Concat {
            let axis = attr(n, "axis").map(|a| a.i);
            if !axis.is_some_and(|a| channels_axis.contains(&a)) {
                return Err(self.unsupported(
                    n,
                    format!(
                        "axis {axis:?} of a {:?} tensor: only the channels axis (1 in NCHW, -1 in NHWC or of \
                         unflattened features) is supported",
                        first.layout
                    ),
                ));
            }
        }
        let mut main = first.id;
        for s in &states[1..] {
            self.inputs.push(Inputs { main, other: Some(s.id) });
            self.layers.push(layer);
            self.readers.push(1);
            main = self.layers.len() as u16;
        }
        self.cur = main;
        if layer == Layer::Concat {
            self.hwc.2 = c;
        }
        Ok(())
    }

    /// A node that reads one tensor.
    fn single(&mut self, n: &NodeProto) -> Result<(), ImportError> {
        if let Some((pad, _)) = &self.pending_pad {
            if !matches!(n.op_type.as_str(), "Conv" | "AveragePool") {
                let why = format!("the Pad {pad:?} before it can fold only into a Conv or AveragePool");
                return Err(self.unsupported(n, why));
            }
        }
        match n.op_type.as_str() {
            "Conv" => self.conv(n)?,
            "Relu" => self.activation(n, Activation::Relu)?,
            "Softmax" => self.activation(n, Activation::Softmax)?,
            "BatchNormalization" => self.batch_norm(n)?,
            "MaxPool" => self.max_pool(n)?,
            "AveragePool" => self.avg_pool(n)?,
            "GlobalAveragePool" => self.global_avg_pool(n)?,
            "Clip" => {
                let act = self.clip(n)?;
                self.activation(n, act)?
            }
            "Pad" => self.pad(n)?,
            "Flatten" => self.flatten(n)?,
            "Reshape" => {
                let shape = self.constant(n, 1, "shape")?;
                let flat_to_2d = shape.data.len() == 2 && (shape.data[1] == -1.0 || shape.data[0] <= 1.0);
                if !flat_to_2d {
                    return Err(self.unsupported(
                        n,
                        format!("only a reshape to [batch, features] is supported, not {:?}", shape.data),
                    ));
                }
                self.flatten(n)?;
            }
            "Transpose" => {
                let perm = ints(n, "perm").unwrap_or_default();
                self.layout = match (self.layout, perm.as_slice()) {
                    (Layout::Nhwc, [0, 3, 1, 2]) => Layout::Nchw,
                    (Layout::Nchw, [0, 2, 3, 1]) => Layout::Nhwc,
                    _ => return Err(self.unsupported(n, format!("transpose {perm:?} of a {:?} tensor", self.layout))),
                };
            }
            "Gemm" => self.gemm(n)?,
            "MatMul" => {
                let w = self.constant(n, 1, "weight")?;
                self.dense(n, w, false, None)?;
            }
            "Add" => self.add_bias(n)?,
            "Dropout" => {
                let rate = attr(n, "ratio")
                    .map(|a| a.f)
                    .or_else(|| {
                        n.input.get(1).and_then(|i| self.constants.get(i)).and_then(|t| t.data.first().copied())
                    })
                    .unwrap_or(0.5);
                if !(0.0..1.0).contains(&rate) {
                    return Err(self.unsupported(n, format!("dropout ratio {rate} is not in [0, 1)")));
                }
                self.push_layer(Layer::Dropout { rate });
            }
            "Identity" => {}
            _ => return Err(self.unsupported(n, "the layer stack has no such layer")),
        }
        Ok(())
    }

    fn need_nchw(&self, n: &NodeProto) -> Result<(), ImportError> {
        if self.layout != Layout::Nchw {
            return Err(self.unsupported(n, format!("it needs an NCHW image, the tensor is {:?}", self.layout)));
        }
        Ok(())
    }

    fn conv(&mut self, n: &NodeProto) -> Result<(), ImportError> {
        self.need_nchw(n)?;
        let w = self.constant(n, 1, "weight")?;
        let [o, i, kh, kw] = w.shape[..] else {
            return Err(self.unsupported(n, format!("weight of shape {:?} is not [O, I, kh, kw]", w.shape)));
        };
        let (h, wd, c) = self.hwc;
        let group = attr(n, "group").map_or(1, |a| a.i);
        let groups = positive_u32(group)
            .filter(|&g| (g as usize).checked_mul(i) == Some(c) && o % g as usize == 0)
            .ok_or_else(|| {
                self.unsupported(
                    n,
                    format!(
                        "group {group} with a weight of {i} input channels does not fit {c} channels and {o} filters"
                    ),
                )
            })?;
        let (sh, sw) = self.pair(n, "strides", "strides")?;
        let (dh, dw) = self.pair(n, "dilations", "dilations")?;
        let filters = u32::try_from(o).map_err(|_| self.unsupported(n, format!("{o} filters do not fit 32 bits")))?;
        let fit = |v: usize| u32::try_from(v).ok();
        let (Some(kh32), Some(kw32)) = (fit(kh), fit(kw)) else {
            return Err(self.unsupported(n, format!("kernel {kh}x{kw} does not fit 32 bits")));
        };
        let input = Shape::image(h as u32, wd as u32, c as u32);
        let conv = Conv2D::new(filters, 1).kernel_hw(kh32, kw32).strides_hw(sh, sw).dilation(dh, dw).groups(groups);
        let padding = self.window_padding(n, |padding| ConvGeom::from_spec(&Conv2D { padding, ..conv }, input))?;
        let conv = Conv2D { padding, ..conv };
        let g = ConvGeom::from_spec(&conv, input)
            .ok_or_else(|| self.unsupported(n, "the kernel does not fit the input"))?;
        // OIHW -> HWIO.
        let mut hwio = vec![0.0f32; w.data.len()];
        for oo in 0..o {
            for ii in 0..i {
                for y in 0..kh {
                    for x in 0..kw {
                        hwio[((y * kw + x) * i + ii) * o + oo] = w.data[((oo * i + ii) * kh + y) * kw + x];
                    }
                }
            }
        }
        let kernel = Tensor { location: w.location.clone(), shape: vec![kh, kw, i, o], data: hwio };
        let bias = match n.input.get(2).filter(|s| !s.is_empty()) {
            Some(_) => Some(self.constant(n, 2, "bias")?),
            None => None,
        };
        self.push(n, Layer::Conv2D(conv), vec![Some(kernel), bias]);
        self.hwc = (g.out_h, g.out_w, o);
        Ok(())
    }

    fn activation(&mut self, n: &NodeProto, act: Activation) -> Result<(), ImportError> {
        if act == Activation::Softmax {
            // Over the features of a vector, or over the channels of each pixel (axis 1 of NCHW,
            // the last of NHWC): our Softmax layer's last axis either way.
            let axis = attr(n, "axis").map_or(-1, |a| a.i);
            let over_channels = match self.layout {
                Layout::Flat(_) => axis == 1 || axis == -1,
                Layout::Nchw => axis == 1,
                Layout::Nhwc => axis == 3 || axis == -1,
            };
            if !over_channels {
                return Err(self.unsupported(n, format!("softmax over axis {axis}: only over features or channels")));
            }
        }
        let elementwise = matches!(act, Activation::Relu | Activation::Relu6);
        let only_reader = self.readers.get(self.cur as usize) == Some(&1);
        let at = (self.cur as usize).checked_sub(1).filter(|_| only_reader);
        match at.and_then(|i| self.layers.get_mut(i)) {
            Some(Layer::Conv2D(c)) if c.activation == Activation::None && elementwise => c.activation = act,
            Some(Layer::Add { activation }) if *activation == Activation::None && elementwise => *activation = act,
            Some(Layer::Dense { activation, .. }) if *activation == Activation::None => *activation = act,
            _ if elementwise => self.push_layer(Layer::Activation(act)),
            // Not fused into a Dense it alone reads: TFLite's SOFTMAX, a layer of its own.
            _ => self.push_layer(Layer::Softmax),
        }
        Ok(())
    }

    fn batch_norm(&mut self, n: &NodeProto) -> Result<(), ImportError> {
        if matches!(self.layout, Layout::Flat(_)) {
            return Err(self.unsupported(n, "batch normalization of flat features is not supported"));
        }
        self.need_nchw(n)?;
        let parts: Vec<Tensor> = (1..5)
            .map(|k| self.constant(n, k, ["scale", "bias", "mean", "variance"][k - 1]))
            .collect::<Result<_, _>>()?;
        let epsilon = attr(n, "epsilon").map_or(1e-5, |a| a.f);
        let momentum = attr(n, "momentum").map_or(0.9, |a| a.f);
        if !(epsilon > 0.0 && epsilon <= crate::checkpoint::MAX_EPSILON) {
            return Err(
                self.unsupported(n, format!("epsilon {epsilon} is not in (0, {}]", crate::checkpoint::MAX_EPSILON))
            );
        }
        self.push(n, Layer::BatchNorm { epsilon, momentum }, parts.into_iter().map(Some).collect());
        Ok(())
    }

    fn max_pool(&mut self, n: &NodeProto) -> Result<(), ImportError> {
        self.need_nchw(n)?;
        let k = ints(n, "kernel_shape").unwrap_or_default();
        let s = ints(n, "strides").unwrap_or_else(|| vec![1, 1]);
        if k.len() != 2 || k[0] != k[1] || s.len() != 2 || s[0] != s[1] {
            return Err(
                self.unsupported(n, format!("kernel {k:?} with strides {s:?}: only square pools with equal strides"))
            );
        }
        if ints(n, "pads").is_some_and(|p| p.iter().any(|&x| x != 0)) || attr(n, "ceil_mode").is_some_and(|a| a.i != 0)
        {
            return Err(self.unsupported(n, "padded or ceil-mode pooling is not supported"));
        }
        if ints(n, "dilations").is_some_and(|d| d.iter().any(|&x| x != 1)) {
            return Err(self.unsupported(n, "dilated pooling is not supported"));
        }
        let (Some(pool), Some(stride)) = (positive_u32(k[0]), positive_u32(s[0])) else {
            return Err(self.unsupported(n, format!("kernel {k:?} and strides {s:?} must be positive 32-bit numbers")));
        };
        let (pool, stride) = (pool as usize, stride as usize);
        let (h, w, c) = self.hwc;
        if pool > h || pool > w {
            return Err(self.unsupported(n, format!("a {pool}x{pool} pool on a {h}x{w} input")));
        }
        self.push_layer(Layer::MaxPool2D { pool: pool as u32, stride: stride as u32 });
        self.hwc = ((h - pool) / stride + 1, (w - pool) / stride + 1, c);
        Ok(())
    }

    /// A 2-D attribute of positive 32-bit numbers (`strides`, `dilations`), 1s when absent.
    fn pair(&self, n: &NodeProto, key: &str, what: &str) -> Result<(u32, u32), ImportError> {
        let v = ints(n, key).unwrap_or_else(|| vec![1, 1]);
        match v[..] {
            [a, b] => match (positive_u32(a), positive_u32(b)) {
                (Some(a), Some(b)) => Ok((a, b)),
                _ => Err(self.unsupported(n, format!("{what} {v:?} are not positive 32-bit numbers"))),
            },
            _ => Err(self.unsupported(n, format!("{what} {v:?} are not two numbers (height, width)"))),
        }
    }

    /// The padding of a Conv or AveragePool: `auto_pad`, or its `pads`
    /// (`[top, left, bottom, right]`) plus a `Pad` node folded in front; Keras's
    /// same padding when the pads are exactly that (so such models keep their
    /// format version 1/2 files). `geom` builds the layer's geometry for a padding.
    fn window_padding(
        &mut self,
        n: &NodeProto,
        geom: impl Fn(Padding) -> Option<ConvGeom>,
    ) -> Result<Padding, ImportError> {
        let auto = attr(n, "auto_pad").map(|a| String::from_utf8_lossy(&a.s).to_string()).unwrap_or_default();
        let pads = ints(n, "pads").unwrap_or_else(|| vec![0; 4]);
        let [t, l, b, r] = pads[..] else {
            return Err(self.unsupported(n, format!("pads {pads:?} are not [top, left, bottom, right]")));
        };
        let (pt, pl, pb, pr) =
            match (positive_or_zero(t), positive_or_zero(l), positive_or_zero(b), positive_or_zero(r)) {
                (Some(t), Some(l), Some(b), Some(r)) => (t, l, b, r),
                _ => return Err(self.unsupported(n, format!("pads {pads:?} are not 32-bit numbers from 0"))),
            };
        let [xt, xb, xl, xr] = self.pending_pad.take().map_or([0; 4], |(_, p)| p);
        let sum = |a: u32, b: u32| a.checked_add(b);
        let (Some(t), Some(b), Some(l), Some(r)) = (sum(pt, xt), sum(pb, xb), sum(pl, xl), sum(pr, xr)) else {
            return Err(self.unsupported(n, "the pads overflow 32 bits"));
        };
        let explicit = Padding::explicit(t, b, l, r);
        let padding = match auto.as_str() {
            "" | "NOTSET" => {
                let same = geom(Padding::Same);
                let is_same = same.is_some_and(|g| {
                    (g.pad_top, g.pad_left, g.pad_bottom(), g.pad_right())
                        == (t as usize, l as usize, b as usize, r as usize)
                });
                if explicit != Padding::Valid && is_same {
                    Padding::Same
                } else {
                    explicit
                }
            }
            "VALID" if explicit == Padding::Valid => Padding::Valid,
            "SAME_UPPER" if explicit == Padding::Valid => Padding::Same,
            other => {
                return Err(self.unsupported(
                    n,
                    format!(
                        "auto_pad {other:?} (with a Pad before it) is not supported: only NOTSET, VALID and SAME_UPPER"
                    ),
                ))
            }
        };
        if geom(padding).is_none() {
            return Err(self.unsupported(
                n,
                format!(
                    "the window does not fit the {}x{} input with pads {:?} (each pad must be smaller than the window)",
                    self.hwc.0,
                    self.hwc.1,
                    [t, b, l, r]
                ),
            ));
        }
        Ok(padding)
    }

    fn avg_pool(&mut self, n: &NodeProto) -> Result<(), ImportError> {
        self.need_nchw(n)?;
        let k = ints(n, "kernel_shape").unwrap_or_default();
        let [Some(ph), Some(pw)] = k[..].iter().map(|&v| positive_u32(v)).collect::<Vec<_>>()[..] else {
            return Err(self.unsupported(n, format!("kernel_shape {k:?} is not two positive 32-bit numbers")));
        };
        let (sh, sw) = self.pair(n, "strides", "strides")?;
        if attr(n, "ceil_mode").is_some_and(|a| a.i != 0) {
            return Err(self.unsupported(n, "ceil-mode pooling is not supported"));
        }
        if ints(n, "dilations").is_some_and(|d| d.iter().any(|&x| x != 1)) {
            return Err(self.unsupported(n, "dilated pooling is not supported"));
        }
        let include_pad = attr(n, "count_include_pad").is_some_and(|a| a.i != 0);
        let (h, w, c) = self.hwc;
        let dims = (h, w, c);
        let (pool, stride) = (Hw::new(ph, pw), Hw::new(sh, sw));
        let geom = |padding| ConvGeom::general(dims, c, pool, stride, Hw::ONE, padding);
        let padding = self.window_padding(n, geom)?;
        if include_pad && padding != Padding::Valid {
            return Err(self.unsupported(
                n,
                "count_include_pad=1 with padding (PyTorch's default for a padded AvgPool2d) is not supported: \
                 the divisor here counts only the image's pixels (count_include_pad=False, Keras and TFLite)",
            ));
        }
        let g = geom(padding).ok_or_else(|| self.unsupported(n, "the pool does not fit the input"))?;
        self.push_layer(Layer::AvgPool2D(AvgPool2D { pool, stride, padding }));
        self.hwc = (g.out_h, g.out_w, c);
        Ok(())
    }

    /// GlobalAveragePool: `[N, C, 1, 1]`, which the Flatten after it leaves as
    /// the flat vector of channels our layer gives.
    fn global_avg_pool(&mut self, n: &NodeProto) -> Result<(), ImportError> {
        self.need_nchw(n)?;
        let (_, _, c) = self.hwc;
        self.push_layer(Layer::GlobalAvgPool);
        self.layout = Layout::Nchw;
        self.hwc = (1, 1, c);
        self.pooled_flat = true;
        Ok(())
    }

    /// `Clip(x, 0, 6)` is ReLU6 and `Clip(x, 0)` ReLU (PyTorch exports both
    /// so); other bounds are refused.
    fn clip(&self, n: &NodeProto) -> Result<Activation, ImportError> {
        let bound = |k: usize, key: &str| -> Result<Option<f32>, ImportError> {
            if let Some(a) = attr(n, key) {
                return Ok(Some(a.f));
            }
            match n.input.get(k).filter(|s| !s.is_empty()) {
                None => Ok(None),
                Some(_) => {
                    let t = self.constant(n, k, key)?;
                    match t.data[..] {
                        [v] => Ok(Some(v)),
                        _ => Err(self.unsupported(n, format!("its {key} is not one number"))),
                    }
                }
            }
        };
        match (bound(1, "min")?, bound(2, "max")?) {
            (Some(lo), Some(hi)) if lo == 0.0 && hi == 6.0 => Ok(Activation::Relu6),
            (Some(0.0), None) => Ok(Activation::Relu),
            (lo, hi) => {
                Err(self.unsupported(n, format!("clip to [{lo:?}, {hi:?}]: only [0, 6] (ReLU6) and [0, none] (ReLU)")))
            }
        }
    }

    /// A constant zero `Pad` of height and width, folded into the Conv or
    /// AveragePool right after it.
    fn pad(&mut self, n: &NodeProto) -> Result<(), ImportError> {
        self.need_nchw(n)?;
        let mode = attr(n, "mode").map(|a| String::from_utf8_lossy(&a.s).to_string()).unwrap_or_default();
        if !(mode.is_empty() || mode == "constant") {
            return Err(self.unsupported(n, format!("mode {mode:?}: only constant (zero) padding is supported")));
        }
        let pads: Vec<i64> = match ints(n, "pads") {
            Some(p) => p,
            None => self.constant(n, 1, "pads")?.data.iter().map(|&v| v as i64).collect(),
        };
        if let Some(k) = n.input.get(2).filter(|s| !s.is_empty()) {
            let v = self.constants.get(k).map(|t| t.data.clone());
            if v.as_deref() != Some(&[0.0][..]) {
                return Err(self.unsupported(n, "only a zero constant value is supported"));
            }
        }
        if n.input.get(3).is_some_and(|s| !s.is_empty()) {
            return Err(self.unsupported(n, "padding chosen axes is not supported"));
        }
        // [N, C, H, W] begins then ends: only H and W may be padded.
        let [0, 0, t, l, 0, 0, b, r] = pads[..] else {
            return Err(
                self.unsupported(n, format!("pads {pads:?}: only height and width may be padded, by 0 or more"))
            );
        };
        let (Some(t), Some(b), Some(l), Some(r)) =
            (positive_or_zero(t), positive_or_zero(b), positive_or_zero(l), positive_or_zero(r))
        else {
            return Err(self.unsupported(n, format!("pads {pads:?} are not 32-bit numbers from 0")));
        };
        if self.pending_pad.is_some() {
            return Err(self.unsupported(n, "two Pad nodes in a row are not supported"));
        }
        let name = if n.name.is_empty() { n.op_type.clone() } else { n.name.clone() };
        self.pending_pad = Some((name, [t, b, l, r]));
        Ok(())
    }

    fn flatten(&mut self, n: &NodeProto) -> Result<(), ImportError> {
        if attr(n, "axis").is_some_and(|a| a.i != 1) {
            return Err(self.unsupported(n, "only a flatten after the batch axis (axis 1) is supported"));
        }
        let (h, w, c) = self.hwc;
        if std::mem::take(&mut self.pooled_flat) {
            // After a GlobalAveragePool: already our flat vector of channels.
            self.layout = Layout::Flat(None);
            return Ok(());
        }
        self.layout = match self.layout {
            Layout::Nchw => Layout::Flat(Some((c, h, w))),
            Layout::Nhwc => Layout::Flat(None),
            flat @ Layout::Flat(_) => flat,
        };
        let same_as_input = u32::try_from(h * w * c).is_ok_and(|f| self.input == Shape::Flat(f));
        if !matches!(self.producer(), Some(Layer::Flatten)) && !same_as_input {
            self.push_layer(Layer::Flatten);
        }
        self.hwc = (1, 1, h * w * c);
        Ok(())
    }

    fn gemm(&mut self, n: &NodeProto) -> Result<(), ImportError> {
        let f = |k: &str, d: f32| attr(n, k).map_or(d, |a| a.f);
        let i = |k: &str| attr(n, k).map_or(0, |a| a.i);
        if i("transA") != 0 || f("alpha", 1.0) != 1.0 || f("beta", 1.0) != 1.0 {
            return Err(self.unsupported(n, "only Gemm with transA=0, alpha=1, beta=1 is supported"));
        }
        let w = self.constant(n, 1, "weight")?;
        let bias = match n.input.get(2).filter(|s| !s.is_empty()) {
            Some(_) => Some(self.constant(n, 2, "bias")?),
            None => None,
        };
        self.dense(n, w, i("transB") != 0, bias)
    }

    /// A dense layer from a `[in, out]` (or `[out, in]` when `trans`) weight.
    fn dense(&mut self, n: &NodeProto, w: Tensor, trans: bool, bias: Option<Tensor>) -> Result<(), ImportError> {
        let Layout::Flat(from) = self.layout else {
            return Err(self.unsupported(n, "a dense layer needs flat features (Flatten first)"));
        };
        let [a, b] = w.shape[..] else {
            return Err(self.unsupported(n, format!("weight of shape {:?} is not 2-D", w.shape)));
        };
        let (nin, units) = if trans { (b, a) } else { (a, b) };
        if nin != self.hwc.2 {
            return Err(self.unsupported(n, format!("weight for {nin} inputs after {} features", self.hwc.2)));
        }
        // Our kernel is [in, out]; row r of ours is ONNX's input feature `src(r)`.
        let src = |r: usize| -> usize {
            match from {
                Some((c, h, ww)) => {
                    let (pix, ch) = (r / c, r % c);
                    let (y, x) = (pix / ww, pix % ww);
                    (ch * h + y) * ww + x
                }
                None => r,
            }
        };
        let mut kernel = vec![0.0f32; nin * units];
        for r in 0..nin {
            let s = src(r);
            for o in 0..units {
                kernel[r * units + o] = if trans { w.data[o * nin + s] } else { w.data[s * units + o] };
            }
        }
        // Only the first dense layer after a flatten needs the permutation.
        self.layout = Layout::Flat(None);
        let kernel = Tensor { location: w.location.clone(), shape: vec![nin, units], data: kernel };
        let units32 =
            u32::try_from(units).map_err(|_| self.unsupported(n, format!("{units} units do not fit 32 bits")))?;
        self.push(n, Layer::Dense { units: units32, activation: Activation::None }, vec![Some(kernel), bias]);
        self.hwc = (1, 1, units);
        Ok(())
    }

    /// `Add` of a bias right after a `MatMul`.
    fn add_bias(&mut self, n: &NodeProto) -> Result<(), ImportError> {
        let k = n.input.iter().position(|i| self.constants.contains_key(i)).unwrap_or(1);
        let bias = self.constant(n, k, "bias")?;
        let bare_dense = matches!(self.producer(), Some(Layer::Dense { activation: Activation::None, .. }))
            && self.readers.get(self.cur as usize) == Some(&1);
        let at = (self.cur as usize).wrapping_sub(1);
        match self.weights.iter_mut().find(|p| p.index == at) {
            Some(p) if bare_dense && p.tensors[1].is_none() => {
                p.tensors[1] = Some(bias);
                Ok(())
            }
            _ => Err(self.unsupported(n, "an Add is supported only as the bias right after a MatMul")),
        }
    }

    fn push(&mut self, n: &NodeProto, layer: Layer, tensors: Vec<Option<Tensor>>) {
        let node = if n.name.is_empty() { n.op_type.clone() } else { n.name.clone() };
        self.weights.push(Pending { index: self.layers.len(), node, tensors });
        self.push_layer(layer);
    }

    /// Append `layer`, reading the current tensor; its output becomes current.
    fn push_layer(&mut self, layer: Layer) {
        self.inputs.push(Inputs { main: self.cur, other: None });
        self.layers.push(layer);
        self.readers.push(1);
        self.cur = self.layers.len() as u16;
    }

    /// The layer computing the current tensor (None: the input).
    fn producer(&self) -> Option<&Layer> {
        (self.cur as usize).checked_sub(1).and_then(|i| self.layers.get(i))
    }

    /// The stack, its output the graph's `output` (None: a graph that names
    /// none, the last node's).
    fn finish(self, output: Option<&str>) -> Result<Imported, ImportError> {
        let format = |what: String| ImportError::Format { path: self.path.to_path_buf(), what };
        let out = match output {
            Some(o) => {
                self.tensors.get(o).cloned().ok_or_else(|| format(format!("no node computes the output {o:?}")))?
            }
            None => self.state(),
        };
        let output = output.unwrap_or("of the last node");
        if let Some((pad, _)) = &out.pending_pad {
            return Err(format(format!(
                "the Pad {pad:?} ends the graph: it must be followed by a Conv or AveragePool"
            )));
        }
        if out.id as usize != self.layers.len() {
            return Err(format(format!(
                "the output {output:?} is not computed by the last node that makes a layer: only models with one \
                 output, every node on the way to it, are supported"
            )));
        }
        let spec = ModelSpec::graph(self.input, &self.layers, &self.inputs).map_err(|e| ImportError::Format {
            path: self.path.to_path_buf(),
            what: format!("the nodes do not make a valid layer stack: {e}"),
        })?;
        let mut out = StackTensors::new(&spec, self.path);
        for p in self.weights {
            out.put(p.index, &format!("node {:?}", p.node), p.tensors)?;
        }
        Ok(Imported {
            spec,
            tensors: out.finish()?,
            preprocess: None,
            source: "onnx".into(),
            notes: vec!["ONNX input preprocessing is not in the file: pixels in [0, 1] unless --input-scale/--input-offset say otherwise".into()],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::pb::tensor_proto::DataType;

    fn tensor(dims: &[i64], data_type: i32, raw: usize) -> TensorProto {
        TensorProto { name: "w".into(), dims: dims.to_vec(), data_type, raw_data: vec![0; raw], ..Default::default() }
    }

    /// What tract's tensor code would panic on, or allocate without limit,
    /// is refused first, each with what is wrong.
    #[test]
    fn bad_initializers_are_named_before_tract_sees_them() {
        let float = DataType::Float as i32;
        assert_eq!(check_tensor_proto(&tensor(&[2, 3], float, 24)), Ok(()));
        let cases = [
            (tensor(&[2, 3], float, 8), "holds 8 bytes of raw data; its shape [2, 3] needs 24"),
            (tensor(&[2, 3], 999, 24), "data type 999"),
            (tensor(&[2, 3], DataType::String as i32, 24), "data type 8"),
            (tensor(&[-2, 3], float, 24), "dimension -2"),
            (tensor(&[1_000_000_000_000, 1], float, 4), "over the memory limit"),
            (tensor(&[i64::MAX, i64::MAX], float, 4), "overflows"),
            (TensorProto { float_data: vec![1.0; 5], ..tensor(&[2, 3], float, 0) }, "holds 5 values"),
        ];
        for (t, want) in cases {
            let e = check_tensor_proto(&t).expect_err(want);
            assert!(e.contains(want), "want {want:?} in {e:?}");
        }
    }

    fn node(op: &str, input: &str, attrs: Vec<AttributeProto>) -> NodeProto {
        NodeProto {
            op_type: op.into(),
            name: format!("{op}_0"),
            input: vec![input.into()],
            output: vec![format!("{op}_out")],
            attribute: attrs,
            ..Default::default()
        }
    }

    fn ints_attr(name: &str, v: &[i64]) -> AttributeProto {
        AttributeProto { name: name.into(), ints: v.to_vec(), ..Default::default() }
    }

    /// Zero, negative and 32-bit-wrapping strides and kernels are named errors
    /// (a zero MaxPool stride divided by zero).
    #[test]
    fn pool_and_conv_attributes_must_be_positive_32_bit_numbers() {
        let constants = HashMap::new();
        let path = Path::new("m.onnx");
        for (k, s) in [([2, 2], [0, 0]), ([2, 2], [-1, -1]), ([0, 0], [1, 1]), ([2, 2], [4294967298, 4294967298])] {
            let mut chain = Chain::new(path, "x", &[1, 3, 8, 8], &constants).unwrap();
            let n = node("MaxPool", "x", vec![ints_attr("kernel_shape", &k), ints_attr("strides", &s)]);
            let e = chain.node(&n).expect_err("bad pool").to_string();
            assert!(e.contains("MaxPool_0") && e.contains("positive 32-bit"), "{e}");
        }
        let mut constants = HashMap::new();
        constants
            .insert("w".to_string(), Tensor { location: "w".into(), shape: vec![2, 3, 3, 3], data: vec![0.0; 54] });
        for s in [[0, 0], [-2, -2], [4294967297, 4294967297]] {
            let mut chain = Chain::new(path, "x", &[1, 3, 8, 8], &constants).unwrap();
            let mut n = node("Conv", "x", vec![ints_attr("strides", &s)]);
            n.input.push("w".into());
            let e = chain.node(&n).expect_err("bad conv").to_string();
            assert!(e.contains("Conv_0") && e.contains("positive 32-bit"), "{e}");
        }
        let e = Chain::new(path, "x", &[1, 3, 4294967304, 8], &constants).err().expect("huge input").to_string();
        assert!(e.contains("4294967304"), "{e}");
    }

    fn op(op: &str, name: &str, inputs: &[&str], output: &str, attrs: Vec<AttributeProto>) -> NodeProto {
        NodeProto {
            op_type: op.into(),
            name: name.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            attribute: attrs,
            ..Default::default()
        }
    }

    /// Branches read the tensors they name; Concat on channels and Add of
    /// equal shapes merge them, with a Relu fused into the Add it alone
    /// reads; another axis, unequal shapes and unknown inputs are named.
    #[test]
    fn branches_merge_with_add_and_concat_and_the_rest_is_named() {
        let path = Path::new("g.onnx");
        let mut constants = HashMap::new();
        let w = |o: usize| Tensor { location: "w".into(), shape: vec![o, 3, 1, 1], data: vec![0.5; o * 3] };
        constants.insert("w3".to_string(), w(3));
        constants.insert("w2".to_string(), w(2));
        let axis = |a: i64| vec![AttributeProto { name: "axis".into(), i: a, ..Default::default() }];
        let build = |last: NodeProto| -> Result<Chain<'_>, ImportError> {
            let mut chain = Chain::new(path, "x", &[1, 3, 8, 8], &constants)?;
            chain.node(&op("Conv", "a", &["x", "w3"], "a", vec![]))?;
            chain.node(&op("Conv", "b", &["x", "w2"], "b", vec![]))?;
            chain.node(&last)?;
            Ok(chain)
        };
        let chain = build(op("Concat", "cat", &["a", "b", "x"], "cat", axis(1))).expect("concat");
        assert_eq!(
            chain.layers,
            [Layer::Conv2D(Conv2D::new(3, 1)), Layer::Conv2D(Conv2D::new(2, 1)), Layer::Concat, Layer::Concat]
        );
        assert_eq!(chain.inputs[2], Inputs { main: 1, other: Some(2) });
        assert_eq!(chain.inputs[3], Inputs { main: 3, other: Some(0) });
        assert_eq!(chain.hwc, (8, 8, 8));
        let mut chain = build(op("Add", "add", &["a", "x"], "sum", vec![])).expect("add");
        chain.node(&op("Relu", "relu", &["sum"], "out", vec![])).expect("relu");
        assert_eq!(chain.layers[2], Layer::Add { activation: Activation::Relu });
        assert_eq!(chain.inputs[2], Inputs { main: 1, other: Some(0) });
        for (node, want) in [
            (op("Concat", "cat_h", &["a", "b"], "c", axis(2)), "axis Some(2)"),
            (op("Add", "add_ab", &["a", "b"], "c", vec![]), "equal shapes"),
            (op("Mul", "mul", &["a", "b"], "c", vec![]), "only Add (of two) and Concat"),
            (op("Relu", "relu_y", &["y"], "c", vec![]), "\"y\""),
        ] {
            let e = build(node.clone()).err().expect(want).to_string();
            assert!(e.contains(&format!("{:?}", node.name)) && e.contains(want) && e.contains("Supported:"), "{e}");
        }
    }

    /// A Softmax over channels (axis 1 of NCHW) is a Softmax layer of its own
    /// (TFLite's SOFTMAX, per pixel); over height or width it is named.
    #[test]
    fn softmax_over_channels_is_a_layer_and_over_another_axis_is_named() {
        let path = Path::new("s.onnx");
        let mut constants = HashMap::new();
        constants
            .insert("w".to_string(), Tensor { location: "w".into(), shape: vec![4, 3, 1, 1], data: vec![0.5; 12] });
        let axis = |a: i64| vec![AttributeProto { name: "axis".into(), i: a, ..Default::default() }];
        let mut chain = Chain::new(path, "x", &[1, 3, 8, 8], &constants).expect("chain");
        chain.node(&op("Conv", "c", &["x", "w"], "a", vec![])).expect("conv");
        chain.node(&op("Softmax", "sm", &["a"], "p", axis(1))).expect("softmax over channels");
        assert_eq!(chain.layers, [Layer::Conv2D(Conv2D::new(4, 1)), Layer::Softmax]);
        let mut chain = Chain::new(path, "x", &[1, 3, 8, 8], &constants).expect("chain");
        chain.node(&op("Conv", "c", &["x", "w"], "a", vec![])).expect("conv");
        let e = chain.node(&op("Softmax", "sm_h", &["a"], "p", axis(2))).expect_err("over height").to_string();
        assert!(e.contains("sm_h") && e.contains("axis 2"), "{e}");
    }
}
