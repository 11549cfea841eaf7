//! The one description of the layer stack: layer types with their Keras
//! hyperparameters, shape inference, parameter counting and the presets.
//!
//! Everything here is `Copy` and allocation-free so that the model-file parser
//! can rebuild a [`ModelSpec`] on a microcontroller, and the host can build
//! its trainable layers from the very same value.

use core::fmt;

/// Most layers a model may hold. The tutorial's AlexNet has 21.
pub const MAX_LAYERS: usize = 48;

/// Largest element count of any tensor (the input, or a layer's output) in a
/// [`ModelSpec`]. Keeps the shape arithmetic (elements, parameters, MACs) of a
/// validated stack far from u64 overflow.
pub const MAX_TENSOR_ELEMENTS: u64 = u32::MAX as u64;

/// Keras's `BatchNormalization` defaults.
pub const BN_EPSILON: f32 = 1e-3;
/// Keras's `BatchNormalization` default momentum for the running statistics.
pub const BN_MOMENTUM: f32 = 0.99;

/// A (height, width) pair: a kernel, stride, dilation or pool size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hw {
    pub h: u32,
    pub w: u32,
}

impl Hw {
    /// `(1, 1)`: no dilation, unit stride.
    pub const ONE: Hw = Hw { h: 1, w: 1 };
    /// `(n, n)`.
    pub const fn square(n: u32) -> Self {
        Hw { h: n, w: n }
    }
    /// `(h, w)`.
    pub const fn new(h: u32, w: u32) -> Self {
        Hw { h, w }
    }
    /// Both sides equal.
    pub const fn is_square(self) -> bool {
        self.h == self.w
    }
}

impl fmt::Display for Hw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_square() {
            write!(f, "{}", self.h)
        } else {
            write!(f, "({}, {})", self.h, self.w)
        }
    }
}

/// Zero padding on each side of an image, in pixels (ONNX's and PyTorch's
/// explicit `pads`; Keras's `ZeroPadding2D` folded into the next layer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pads {
    pub top: u32,
    pub bottom: u32,
    pub left: u32,
    pub right: u32,
}

/// Convolution and pooling padding: Keras's two names, or explicit pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// No padding: `out = (in - span) / stride + 1`.
    Valid,
    /// Zero padding so that `out = ceil(in / stride)`, the odd pixel at the bottom/right.
    Same,
    /// These pads: `out = (in + before + after - span) / stride + 1`. Each
    /// side is less than the (dilated) kernel's span, so every window
    /// touches the image.
    Explicit(Pads),
}

impl Padding {
    /// Explicit pads, or `Valid` when they are all zero (the same layer).
    pub const fn explicit(top: u32, bottom: u32, left: u32, right: u32) -> Self {
        if top == 0 && bottom == 0 && left == 0 && right == 0 {
            Padding::Valid
        } else {
            Padding::Explicit(Pads { top, bottom, left, right })
        }
    }
}

/// Activation fused into a Conv2D or Dense layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// Identity.
    None,
    /// `max(x, 0)`.
    Relu,
    /// Softmax over the units (Dense only, last layer).
    Softmax,
    /// `min(max(x, 0), 6)` (MobileNet's; TFLite fuses it as a clamp).
    Relu6,
}

impl Activation {
    /// The clamp the activation applies, `(low, high)`, for the
    /// element-wise ones (`None` for Softmax).
    pub fn clamp(self) -> Option<(f32, f32)> {
        match self {
            Activation::None => Some((f32::NEG_INFINITY, f32::INFINITY)),
            Activation::Relu => Some((0.0, f32::INFINITY)),
            Activation::Relu6 => Some((0.0, 6.0)),
            Activation::Softmax => None,
        }
    }
}

/// The shape of one example flowing between layers (the batch axis is implicit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Height x width x channels, stored NHWC.
    Image { h: u32, w: u32, c: u32 },
    /// A flat vector of features.
    Flat(u32),
}

impl Shape {
    /// A `h x w x c` image shape.
    pub const fn image(h: u32, w: u32, c: u32) -> Self {
        Shape::Image { h, w, c }
    }

    /// Number of scalars in one example.
    pub fn elements(self) -> u64 {
        match self {
            Shape::Image { h, w, c } => h as u64 * w as u64 * c as u64,
            Shape::Flat(n) => n as u64,
        }
    }

    /// Number of scalars in one example, or `None` if the product overflows u64
    /// (three u32 dimensions can). [`Shape::elements`] is exact on the shapes
    /// of a [`ModelSpec`], which refuses tensors over [`MAX_TENSOR_ELEMENTS`].
    pub fn checked_elements(self) -> Option<u64> {
        match self {
            Shape::Image { h, w, c } => (h as u64).checked_mul(w as u64)?.checked_mul(c as u64),
            Shape::Flat(n) => Some(n as u64),
        }
    }

    /// Channel count (features for a flat shape): the axis BN and Dense act on.
    pub fn channels(self) -> u32 {
        match self {
            Shape::Image { c, .. } => c,
            Shape::Flat(n) => n,
        }
    }

    /// Height and width, the size images are resized to (a flat input of
    /// `n` features reads as `n x 1`).
    pub fn hw(self) -> (usize, usize) {
        match self {
            Shape::Image { h, w, .. } => (h as usize, w as usize),
            Shape::Flat(n) => (n as usize, 1),
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Shape::Image { h, w, c } => write!(f, "(None, {h}, {w}, {c})"),
            Shape::Flat(n) => write!(f, "(None, {n})"),
        }
    }
}

/// Output size and leading padding of one spatial axis, per QUANT-SPEC.md
/// (the one place window arithmetic lives; [`crate::geometry`] builds on it):
/// `n` input pixels, `k` taps `d` apart, stride `s`. Explicit padding must
/// leave every window touching the image (each side less than the dilated
/// kernel's span).
pub(crate) fn axis(n: usize, k: usize, s: usize, d: usize, padding: AxisPad) -> Option<(usize, usize)> {
    if k == 0 || s == 0 || n == 0 || d == 0 {
        return None;
    }
    let span = (k - 1).checked_mul(d)?.checked_add(1)?;
    match padding {
        AxisPad::Valid => (n >= span).then(|| ((n - span) / s + 1, 0)),
        AxisPad::Same => {
            let out = n.div_ceil(s);
            let total = ((out - 1).checked_mul(s)?.checked_add(span)?).saturating_sub(n);
            Some((out, total / 2))
        }
        AxisPad::Explicit(before, after) => {
            if before >= span || after >= span {
                return None;
            }
            let padded = n.checked_add(before)?.checked_add(after)?;
            (padded >= span).then(|| ((padded - span) / s + 1, before))
        }
    }
}

/// One axis's share of a [`Padding`].
#[derive(Clone, Copy)]
pub(crate) enum AxisPad {
    Valid,
    Same,
    Explicit(usize, usize),
}

pub(crate) fn axis_pads(padding: Padding) -> (AxisPad, AxisPad) {
    match padding {
        Padding::Valid => (AxisPad::Valid, AxisPad::Valid),
        Padding::Same => (AxisPad::Same, AxisPad::Same),
        Padding::Explicit(p) => {
            (AxisPad::Explicit(p.top as usize, p.bottom as usize), AxisPad::Explicit(p.left as usize, p.right as usize))
        }
    }
}

/// Output height and width of a window of `kernel` taps `dilation` apart,
/// moved by `stride` over an `h x w` input with `padding`; `None` if the
/// output would be empty, a hyperparameter is 0, or an explicit pad reaches
/// past the window.
pub fn window_output(h: u32, w: u32, kernel: Hw, stride: Hw, dilation: Hw, padding: Padding) -> Option<(u32, u32)> {
    let (ph, pw) = axis_pads(padding);
    let (oh, _) = axis(h as usize, kernel.h as usize, stride.h as usize, dilation.h as usize, ph)?;
    let (ow, _) = axis(w as usize, kernel.w as usize, stride.w as usize, dilation.w as usize, pw)?;
    Some((u32::try_from(oh).ok()?, u32::try_from(ow).ok()?))
}

/// Keras `Conv2D`: any kernel h×w, strides, dilation and padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2D {
    pub filters: u32,
    pub kernel: Hw,
    pub stride: Hw,
    pub dilation: Hw,
    pub padding: Padding,
    pub activation: Activation,
    /// Channel groups: input and output channels split into `groups` equal
    /// parts, each output channel reading its own part (the original
    /// AlexNet's 2; depthwise when it equals the input channels).
    pub groups: u32,
}

impl Conv2D {
    /// `Conv2D(filters, kernel_size=kernel)` with Keras's defaults: stride 1, valid, no activation.
    pub const fn new(filters: u32, kernel: u32) -> Self {
        Conv2D {
            filters,
            kernel: Hw::square(kernel),
            stride: Hw::ONE,
            dilation: Hw::ONE,
            padding: Padding::Valid,
            activation: Activation::None,
            groups: 1,
        }
    }
    /// `groups=g` (Keras's `Conv2D(groups=g)`, ONNX's `group`).
    pub const fn groups(mut self, groups: u32) -> Self {
        self.groups = groups;
        self
    }
    /// `kernel_size=(h, w)`.
    pub const fn kernel_hw(mut self, h: u32, w: u32) -> Self {
        self.kernel = Hw::new(h, w);
        self
    }
    /// `strides=(s, s)`.
    pub const fn strides(mut self, stride: u32) -> Self {
        self.stride = Hw::square(stride);
        self
    }
    /// `strides=(h, w)`.
    pub const fn strides_hw(mut self, h: u32, w: u32) -> Self {
        self.stride = Hw::new(h, w);
        self
    }
    /// `dilation_rate=(h, w)`.
    pub const fn dilation(mut self, h: u32, w: u32) -> Self {
        self.dilation = Hw::new(h, w);
        self
    }
    /// `padding="same"`.
    pub const fn same(mut self) -> Self {
        self.padding = Padding::Same;
        self
    }
    /// Explicit zero padding (ONNX `pads`, PyTorch `padding=`).
    pub const fn pads(mut self, top: u32, bottom: u32, left: u32, right: u32) -> Self {
        self.padding = Padding::explicit(top, bottom, left, right);
        self
    }
    /// `activation="relu"`.
    pub const fn relu(mut self) -> Self {
        self.activation = Activation::Relu;
        self
    }
    /// `activation="relu6"`.
    pub const fn relu6(mut self) -> Self {
        self.activation = Activation::Relu6;
        self
    }
    /// Only what a version 1/2 model file can say: a square kernel and
    /// stride, no dilation, Keras's valid or same padding, no ReLU6.
    pub fn is_classic(&self) -> bool {
        self.kernel.is_square()
            && self.stride.is_square()
            && self.dilation == Hw::ONE
            && matches!(self.padding, Padding::Valid | Padding::Same)
            && self.activation != Activation::Relu6
            && self.groups == 1
    }
}

/// Keras `AveragePooling2D`: the mean of each window's real pixels (padding
/// never counts, as in Keras, TFLite and ONNX's `count_include_pad=0`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AvgPool2D {
    pub pool: Hw,
    pub stride: Hw,
    pub padding: Padding,
}

/// One layer of the stack, with Keras's hyperparameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Layer {
    Conv2D(Conv2D),
    /// Per-channel normalisation over the last axis; gamma, beta, moving mean, moving variance.
    BatchNorm {
        epsilon: f32,
        momentum: f32,
    },
    /// `MaxPool2D(pool_size=pool, strides=stride)`, valid padding.
    MaxPool2D {
        pool: u32,
        stride: u32,
    },
    Flatten,
    Dense {
        units: u32,
        activation: Activation,
    },
    /// Inverted dropout during training; identity at inference.
    Dropout {
        rate: f32,
    },
    AvgPool2D(AvgPool2D),
    /// Keras `GlobalAveragePooling2D`: each channel's mean over height and
    /// width, a flat vector of the channels.
    GlobalAvgPool,
    /// Keras `Add()([main, other])`: the element-wise sum of two tensors of
    /// one shape (a residual connection), then `activation` (TFLite fuses
    /// ReLU and ReLU6 into its ADD the same way).
    Add {
        activation: Activation,
    },
    /// Keras `Concatenate()([main, other])` on the last axis: the channels
    /// of `main` then those of `other`, of equal height and width.
    Concat,
    /// Keras `Activation`/`ReLU` as a layer of its own (after a
    /// BatchNormalization, say): ReLU or ReLU6 element-wise, or the identity.
    Activation(Activation),
    /// Keras `Softmax()` as a layer of its own (TFLite's SOFTMAX, beta = 1):
    /// over the last axis, of a flat vector or of each pixel's channels.
    /// Unlike a Dense's softmax activation, the engine computes it.
    Softmax,
}

/// The coarse kind of a layer, for names, tables and error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerKind {
    Conv2D,
    BatchNorm,
    MaxPool2D,
    Flatten,
    Dense,
    Dropout,
    AvgPool2D,
    GlobalAvgPool,
    Add,
    Concat,
    Activation,
    Softmax,
}

impl LayerKind {
    /// Keras's snake_case layer name stem (`conv2d`, `batch_normalization`, ...).
    pub fn keras_name(self) -> &'static str {
        match self {
            LayerKind::Conv2D => "conv2d",
            LayerKind::BatchNorm => "batch_normalization",
            LayerKind::MaxPool2D => "max_pooling2d",
            LayerKind::Flatten => "flatten",
            LayerKind::Dense => "dense",
            LayerKind::Dropout => "dropout",
            LayerKind::AvgPool2D => "average_pooling2d",
            LayerKind::GlobalAvgPool => "global_average_pooling2d",
            LayerKind::Add => "add",
            LayerKind::Concat => "concatenate",
            LayerKind::Activation => "activation",
            LayerKind::Softmax => "softmax",
        }
    }
    /// Keras's class name (`Conv2D`, `BatchNormalization`, ...).
    pub fn class_name(self) -> &'static str {
        match self {
            LayerKind::Conv2D => "Conv2D",
            LayerKind::BatchNorm => "BatchNormalization",
            LayerKind::MaxPool2D => "MaxPooling2D",
            LayerKind::Flatten => "Flatten",
            LayerKind::Dense => "Dense",
            LayerKind::Dropout => "Dropout",
            LayerKind::AvgPool2D => "AveragePooling2D",
            LayerKind::GlobalAvgPool => "GlobalAveragePooling2D",
            LayerKind::Add => "Add",
            LayerKind::Concat => "Concatenate",
            LayerKind::Activation => "Activation",
            LayerKind::Softmax => "Softmax",
        }
    }
}

impl Layer {
    /// This layer's kind.
    pub fn kind(&self) -> LayerKind {
        match self {
            Layer::Conv2D(_) => LayerKind::Conv2D,
            Layer::BatchNorm { .. } => LayerKind::BatchNorm,
            Layer::MaxPool2D { .. } => LayerKind::MaxPool2D,
            Layer::Flatten => LayerKind::Flatten,
            Layer::Dense { .. } => LayerKind::Dense,
            Layer::Dropout { .. } => LayerKind::Dropout,
            Layer::AvgPool2D(_) => LayerKind::AvgPool2D,
            Layer::GlobalAvgPool => LayerKind::GlobalAvgPool,
            Layer::Add { .. } => LayerKind::Add,
            Layer::Concat => LayerKind::Concat,
            Layer::Activation(_) => LayerKind::Activation,
            Layer::Softmax => LayerKind::Softmax,
        }
    }

    /// Whether the layer reads a second tensor (Add, Concatenate).
    pub fn is_binary(&self) -> bool {
        matches!(self, Layer::Add { .. } | Layer::Concat)
    }

    /// Output shape of a two-input layer (Add, Concatenate) given its
    /// `main` and `other` inputs; every other layer: [`Layer::output_shape`]
    /// of `main`.
    pub fn output_shape2(&self, index: usize, main: Shape, other: Shape) -> Result<Shape, SpecError> {
        let err = |problem| SpecError::Layer { index, kind: self.kind(), input: main, problem };
        match *self {
            Layer::Add { activation } => {
                if activation == Activation::Softmax {
                    return Err(err(Problem::MisplacedSoftmax));
                }
                if main != other {
                    return Err(err(Problem::ShapeMismatch(other)));
                }
                Ok(main)
            }
            Layer::Concat => match (main, other) {
                (Shape::Image { h, w, c }, Shape::Image { h: h2, w: w2, c: c2 }) if (h, w) == (h2, w2) => {
                    let c = c.checked_add(c2).ok_or(err(Problem::TooLarge))?;
                    Ok(Shape::image(h, w, c))
                }
                (Shape::Flat(a), Shape::Flat(b)) => Ok(Shape::Flat(a.checked_add(b).ok_or(err(Problem::TooLarge))?)),
                _ => Err(err(Problem::ShapeMismatch(other))),
            },
            _ => self.output_shape(index, main),
        }
    }

    /// Output shape for `input`, or why the layer cannot take it.
    pub fn output_shape(&self, index: usize, input: Shape) -> Result<Shape, SpecError> {
        let kind = self.kind();
        let err = |problem| SpecError::Layer { index, kind, input, problem };
        match *self {
            Layer::Conv2D(c) => {
                let Shape::Image { h, w, .. } = input else { return Err(err(Problem::NeedsImage)) };
                let zero = |v: Hw| v.h == 0 || v.w == 0;
                if c.filters == 0 || zero(c.kernel) || zero(c.stride) || zero(c.dilation) || c.groups == 0 {
                    return Err(err(Problem::ZeroHyperparameter));
                }
                let Shape::Image { c: cin, .. } = input else { return Err(err(Problem::NeedsImage)) };
                if cin % c.groups != 0 || c.filters % c.groups != 0 {
                    return Err(err(Problem::BadGroups));
                }
                match window_output(h, w, c.kernel, c.stride, c.dilation, c.padding) {
                    Some((oh, ow)) if oh > 0 && ow > 0 => Ok(Shape::image(oh, ow, c.filters)),
                    _ => Err(err(Problem::Collapsed)),
                }
            }
            Layer::AvgPool2D(p) => {
                let Shape::Image { h, w, c } = input else { return Err(err(Problem::NeedsImage)) };
                if p.pool.h == 0 || p.pool.w == 0 || p.stride.h == 0 || p.stride.w == 0 {
                    return Err(err(Problem::ZeroHyperparameter));
                }
                match window_output(h, w, p.pool, p.stride, Hw::ONE, p.padding) {
                    Some((oh, ow)) if oh > 0 && ow > 0 => Ok(Shape::image(oh, ow, c)),
                    _ => Err(err(Problem::Collapsed)),
                }
            }
            Layer::GlobalAvgPool => {
                let Shape::Image { c, .. } = input else { return Err(err(Problem::NeedsImage)) };
                Ok(Shape::Flat(c))
            }
            Layer::MaxPool2D { pool, stride } => {
                let Shape::Image { h, w, c } = input else { return Err(err(Problem::NeedsImage)) };
                if pool == 0 || stride == 0 {
                    return Err(err(Problem::ZeroHyperparameter));
                }
                if h < pool || w < pool {
                    return Err(err(Problem::Collapsed));
                }
                Ok(Shape::image((h - pool) / stride + 1, (w - pool) / stride + 1, c))
            }
            Layer::Flatten => match input {
                Shape::Image { .. } => {
                    let n = u32::try_from(input.elements()).map_err(|_| err(Problem::TooLarge))?;
                    Ok(Shape::Flat(n))
                }
                Shape::Flat(_) => Ok(input),
            },
            Layer::Dense { units, activation } => {
                let Shape::Flat(_) = input else { return Err(err(Problem::NeedsFlat)) };
                if units == 0 {
                    return Err(err(Problem::ZeroHyperparameter));
                }
                if activation == Activation::Softmax && units < 2 {
                    return Err(err(Problem::ZeroHyperparameter));
                }
                Ok(Shape::Flat(units))
            }
            Layer::BatchNorm { epsilon, momentum } => {
                if !(epsilon > 0.0 && (0.0..1.0).contains(&momentum)) {
                    return Err(err(Problem::BadRate));
                }
                Ok(input)
            }
            Layer::Dropout { rate } => {
                if !(0.0..1.0).contains(&rate) {
                    return Err(err(Problem::BadRate));
                }
                Ok(input)
            }
            Layer::Activation(a) => {
                if a == Activation::Softmax {
                    return Err(err(Problem::MisplacedSoftmax));
                }
                Ok(input)
            }
            // Over the last axis: the channels of each pixel, or the vector.
            Layer::Softmax => Ok(input),
            // Two-input layers: see `output_shape2`.
            Layer::Add { .. } | Layer::Concat => Err(err(Problem::MissingOperand)),
        }
    }

    /// (trainable, non-trainable) parameter counts given this layer's input shape.
    ///
    /// Exact for the layers of a [`ModelSpec`] (whose construction checks that
    /// every count fits); saturates at `u64::MAX` otherwise.
    pub fn params(&self, input: Shape) -> (u64, u64) {
        self.checked_params(input).unwrap_or((u64::MAX, u64::MAX))
    }

    /// [`Layer::params`] with checked arithmetic: `None` on u64 overflow.
    pub fn checked_params(&self, input: Shape) -> Option<(u64, u64)> {
        let cin = input.channels() as u64;
        Some(match *self {
            Layer::Conv2D(c) => {
                let k = (c.kernel.h as u64).checked_mul(c.kernel.w as u64)?;
                let filters = c.filters as u64;
                let per_group = cin / (c.groups.max(1) as u64);
                (k.checked_mul(per_group)?.checked_mul(filters)?.checked_add(filters)?, 0)
            }
            Layer::Dense { units, .. } => (cin.checked_mul(units as u64)?.checked_add(units as u64)?, 0),
            // gamma and beta train; the moving mean and variance do not.
            Layer::BatchNorm { .. } => (2 * cin, 2 * cin),
            Layer::MaxPool2D { .. }
            | Layer::Flatten
            | Layer::Dropout { .. }
            | Layer::AvgPool2D(_)
            | Layer::GlobalAvgPool
            | Layer::Add { .. }
            | Layer::Concat
            | Layer::Activation(_)
            | Layer::Softmax => (0, 0),
        })
    }

    /// (weights, channels): the element counts of a layer's weight arrays
    /// (kernel, and one bias/scale per output channel) given its input, or
    /// `None` for a layer without weights. The one rule the model-file
    /// parser and the engine's validation hold weights to; exact for the
    /// layers of a [`ModelSpec`] (whose parameter count fits u64).
    pub fn weight_counts(&self, input: Shape) -> Option<(u64, u64)> {
        let cin = input.channels() as u64;
        match *self {
            Layer::Conv2D(c) => {
                let k = c.kernel.h as u64 * c.kernel.w as u64;
                Some((k * (cin / c.groups.max(1) as u64) * c.filters as u64, c.filters as u64))
            }
            Layer::Dense { units, .. } => Some((input.elements() * units as u64, units as u64)),
            Layer::BatchNorm { .. } => Some((cin, cin)),
            Layer::MaxPool2D { .. }
            | Layer::AvgPool2D(_)
            | Layer::GlobalAvgPool
            | Layer::Flatten
            | Layer::Dropout { .. }
            | Layer::Add { .. }
            | Layer::Concat
            | Layer::Activation(_)
            | Layer::Softmax => None,
        }
    }

    /// Multiply-accumulates per example at inference.
    ///
    /// Exact for the layers of a [`ModelSpec`]; saturates at `u64::MAX` otherwise.
    pub fn macs(&self, input: Shape, output: Shape) -> u64 {
        self.checked_macs(input, output).unwrap_or(u64::MAX)
    }

    /// [`Layer::macs`] with checked arithmetic: `None` on u64 overflow.
    pub fn checked_macs(&self, input: Shape, output: Shape) -> Option<u64> {
        match *self {
            Layer::Conv2D(c) => {
                let k = (c.kernel.h as u64).checked_mul(c.kernel.w as u64)?;
                let per_group = input.channels() as u64 / (c.groups.max(1) as u64);
                output.checked_elements()?.checked_mul(k)?.checked_mul(per_group)
            }
            Layer::Dense { .. } => input.checked_elements()?.checked_mul(output.checked_elements()?),
            Layer::BatchNorm { .. } => output.checked_elements(),
            _ => Some(0),
        }
    }
}

/// What was wrong with a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    /// The spatial size shrank to nothing (kernel or pool larger than its input).
    Collapsed,
    /// A 2-D layer got a flat input (a Flatten came too early).
    NeedsImage,
    /// Dense got an image input (a Flatten is missing).
    NeedsFlat,
    /// A filter count, kernel, stride, pool or unit count of zero.
    ZeroHyperparameter,
    /// A dropout rate, epsilon or momentum out of range.
    BadRate,
    /// A dimension does not fit in 32 bits (or a tensor holds more than
    /// [`MAX_TENSOR_ELEMENTS`] values).
    TooLarge,
    /// A Softmax activation anywhere but on the last layer, a Dense: the
    /// engine never applies it, so the model would mean something else there.
    MisplacedSoftmax,
    /// The model's parameter, multiply-accumulate or parameter-byte count
    /// overflows 64 bits once this layer is counted.
    CountOverflow,
    /// A Conv2D's groups do not divide its input channels and filters.
    BadGroups,
    /// An Add whose second input has another shape (this one), or a
    /// Concatenate whose inputs differ in height and width.
    ShapeMismatch(Shape),
    /// An Add or Concatenate without its second input.
    MissingOperand,
    /// A second input on a layer that takes one.
    UnexpectedOperand,
    /// An input that names tensor `t`, which is not computed before this
    /// layer (tensor 0 is the model input, tensor `i + 1` layer `i`'s output).
    FutureTensor(u16),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Problem::Collapsed => "its output would have no pixels (the input is smaller than the kernel or pool)",
            Problem::NeedsImage => "it needs an image input (height, width, channels) but got a flat vector",
            Problem::NeedsFlat => "it needs a flat input; add a Flatten before it",
            Problem::ZeroHyperparameter => {
                "a filter count, kernel, stride, pool or unit count is zero (or softmax over fewer than 2 units)"
            }
            Problem::BadRate => "a rate, epsilon or momentum is out of range",
            Problem::TooLarge => "a dimension does not fit in 32 bits",
            Problem::MisplacedSoftmax => "softmax is only allowed as the activation of the last layer, a Dense",
            Problem::CountOverflow => "the model's parameter, multiply-accumulate or byte count overflows 64 bits",
            Problem::BadGroups => "its groups do not divide its input channels and its filters",
            Problem::ShapeMismatch(other) => {
                return write!(
                    f,
                    "its second input has shape {other}: Add needs equal shapes, Concatenate equal height and width"
                );
            }
            Problem::MissingOperand => "it needs a second input tensor",
            Problem::UnexpectedOperand => "it takes one input but names a second",
            Problem::FutureTensor(t) => {
                return write!(
                    f,
                    "it reads tensor {t}, which is not computed before it \
                     (tensor 0 is the model input, tensor i + 1 layer i's output)"
                );
            }
        })
    }
}

/// Why a layer stack is not a valid model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SpecError {
    /// Layer `index` (0-based) of `kind` cannot take `input`.
    Layer { index: usize, kind: LayerKind, input: Shape, problem: Problem },
    /// More than [`MAX_LAYERS`] layers.
    TooManyLayers,
    /// The input shape has a zero dimension.
    EmptyInput,
    /// The stack has no layers.
    NoLayers,
    /// A graph's input list is not one entry per layer.
    InputsLength { layers: usize, inputs: usize },
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpecError::Layer { index, kind, input, problem } => {
                write!(f, "layer {index} ({}) cannot take input {input}: {problem}", kind.class_name())
            }
            SpecError::TooManyLayers => write!(f, "more than {MAX_LAYERS} layers"),
            SpecError::EmptyInput => f.write_str("the input shape has a zero dimension"),
            SpecError::NoLayers => f.write_str("the model has no layers"),
            SpecError::InputsLength { layers, inputs } => {
                write!(f, "{layers} layers but {inputs} input lists (one per layer)")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for SpecError {}

/// The tensors one layer reads, by number: tensor 0 is the model input and
/// tensor `i + 1` layer `i`'s output (a TFLite subgraph's operator inputs).
/// In a plain stack layer `i` reads tensor `i` and nothing else.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inputs {
    /// The first (for most layers the only) input.
    pub main: u16,
    /// The second input of an Add or Concatenate.
    pub other: Option<u16>,
}

impl Inputs {
    /// Layer `index` of a plain stack: the previous layer's output.
    pub const fn stack(index: usize) -> Inputs {
        Inputs { main: index as u16, other: None }
    }
    /// Whether these are what layer `index` of a plain stack reads.
    pub fn is_stack(&self, index: usize) -> bool {
        *self == Inputs::stack(index)
    }
}

/// A validated model: an input shape plus the ordered layers, each reading
/// the tensors its [`Inputs`] name (the previous layer's output unless
/// told otherwise), the model's output being the last layer's.
///
/// Construction ([`ModelSpec::new`], [`ModelSpec::graph`] or
/// [`Sequential::build`]) checks every layer's shape, so a `ModelSpec` in
/// hand always describes a runnable model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ModelSpec {
    input: Shape,
    layers: [Layer; MAX_LAYERS],
    inputs: [Inputs; MAX_LAYERS],
    /// Tensor `t`'s shape (tensor 0: the input).
    tensors: [Shape; MAX_LAYERS + 1],
    len: usize,
}

impl ModelSpec {
    /// Validate the stack `layers` on `input` (each layer reads the previous
    /// one's output): every layer's shape, every tensor within
    /// [`MAX_TENSOR_ELEMENTS`], Softmax only on the last layer (a Dense), and
    /// the parameter, MAC and parameter-byte counts of the whole model within
    /// u64 (checked arithmetic), so that [`ModelSpec::params`],
    /// [`ModelSpec::macs`] and [`Shape::elements`] are exact on what it returns,
    /// whoever built it (a preset, a file, an importer).
    pub fn new(input: Shape, layers: &[Layer]) -> Result<Self, SpecError> {
        Self::graph(input, layers, &[])
    }

    /// [`ModelSpec::new`] for layers that read the tensors `inputs` name
    /// (one per layer; an empty slice: a plain stack). Also checks that
    /// every layer reads only tensors computed before it, and that Add and
    /// Concatenate, and only they, have a second input.
    pub fn graph(input: Shape, layers: &[Layer], inputs: &[Inputs]) -> Result<Self, SpecError> {
        let mut slot = core::mem::MaybeUninit::uninit();
        Self::graph_into(input, layers, inputs, &mut slot)?;
        // SAFETY: `graph_into` returned Ok: every field is written.
        Ok(unsafe { slot.assume_init() })
    }

    /// [`ModelSpec::new`] into `slot`, the layer table written where it
    /// stays: a device builds its model in a static, and a [`Layer`] table
    /// is kilobytes that must not be copied over a 16 KiB stack. On an error
    /// `slot` stays uninitialised.
    pub fn new_into<'s>(
        input: Shape,
        layers: &[Layer],
        slot: &'s mut core::mem::MaybeUninit<ModelSpec>,
    ) -> Result<&'s mut ModelSpec, SpecError> {
        Self::graph_into(input, layers, &[], slot)
    }

    /// [`ModelSpec::graph`] into `slot` (see [`ModelSpec::new_into`]).
    pub fn graph_into<'s>(
        input: Shape,
        layers: &[Layer],
        inputs: &[Inputs],
        slot: &'s mut core::mem::MaybeUninit<ModelSpec>,
    ) -> Result<&'s mut ModelSpec, SpecError> {
        if !inputs.is_empty() && inputs.len() != layers.len() {
            return Err(SpecError::InputsLength { layers: layers.len(), inputs: inputs.len() });
        }
        let at = slot.as_mut_ptr();
        // SAFETY: `at` points to a whole `ModelSpec`; every field is written
        // through raw pointers (each table slot once) before the whole is
        // assumed initialised; `check` reads only the tensor slots it wrote.
        unsafe {
            let tensors = (&raw mut (*at).tensors).cast::<Shape>();
            for t in 0..=MAX_LAYERS {
                tensors.add(t).write(input);
            }
            Self::check(input, layers, inputs, &mut (*at).tensors)?;
            (&raw mut (*at).input).write(input);
            (&raw mut (*at).len).write(layers.len());
            let table = (&raw mut (*at).layers).cast::<Layer>();
            let reads = (&raw mut (*at).inputs).cast::<Inputs>();
            for i in 0..MAX_LAYERS {
                table.add(i).write(layers.get(i).copied().unwrap_or(Layer::Flatten));
                reads.add(i).write(inputs.get(i).copied().unwrap_or(Inputs::stack(i)));
            }
            Ok(slot.assume_init_mut())
        }
    }

    /// Every check of [`ModelSpec::graph`], writing each tensor's shape to `tensors`.
    #[inline(never)]
    fn check(
        input: Shape,
        layers: &[Layer],
        inputs: &[Inputs],
        tensors: &mut [Shape; MAX_LAYERS + 1],
    ) -> Result<(), SpecError> {
        if layers.len() > MAX_LAYERS {
            return Err(SpecError::TooManyLayers);
        }
        let Some(&first) = layers.first() else { return Err(SpecError::NoLayers) };
        let fits = |s: Shape| s.checked_elements().is_some_and(|e| e <= MAX_TENSOR_ELEMENTS);
        if input.checked_elements() == Some(0) {
            return Err(SpecError::EmptyInput);
        }
        if !fits(input) {
            return Err(SpecError::Layer { index: 0, kind: first.kind(), input, problem: Problem::TooLarge });
        }
        tensors[0] = input;
        let last = layers.len() - 1;
        // Parameters (trainable + not), MACs, and parameter bytes at the widest
        // element (4: f32 scales, i32 bias/multiplier/shift).
        let (mut params, mut macs) = (0u64, 0u64);
        for (i, l) in layers.iter().enumerate() {
            let reads = inputs.get(i).copied().unwrap_or(Inputs::stack(i));
            let computed = |t: u16| (t as usize <= i).then(|| tensors[t as usize]);
            let shape = computed(reads.main).unwrap_or(input);
            let err = |problem| SpecError::Layer { index: i, kind: l.kind(), input: shape, problem };
            if computed(reads.main).is_none() {
                return Err(err(Problem::FutureTensor(reads.main)));
            }
            let out = match (reads.other, l.is_binary()) {
                (Some(t), true) => {
                    let other = computed(t).ok_or(err(Problem::FutureTensor(t)))?;
                    l.output_shape2(i, shape, other)?
                }
                (None, true) => return Err(err(Problem::MissingOperand)),
                (Some(_), false) => return Err(err(Problem::UnexpectedOperand)),
                (None, false) => l.output_shape(i, shape)?,
            };
            if !fits(out) {
                return Err(err(Problem::TooLarge));
            }
            let softmax = match *l {
                Layer::Conv2D(c) => c.activation == Activation::Softmax,
                Layer::Dense { activation, .. } => activation == Activation::Softmax && i != last,
                _ => false,
            };
            if softmax {
                return Err(err(Problem::MisplacedSoftmax));
            }
            let counted = (|| {
                let (t, n) = l.checked_params(shape)?;
                params = params.checked_add(t)?.checked_add(n)?;
                macs = macs.checked_add(l.checked_macs(shape, out)?)?;
                params.checked_mul(4)
            })();
            if counted.is_none() {
                return Err(err(Problem::CountOverflow));
            }
            tensors[i + 1] = out;
        }
        Ok(())
    }

    /// The input shape of one example.
    pub fn input(&self) -> Shape {
        self.input
    }

    /// The layers, in order.
    pub fn layers(&self) -> &[Layer] {
        &self.layers[..self.len]
    }

    /// The tensors each layer reads, in order.
    pub fn inputs(&self) -> &[Inputs] {
        &self.inputs[..self.len]
    }

    /// Whether every layer reads just the previous layer's output (a plain stack).
    pub fn is_stack(&self) -> bool {
        self.inputs().iter().enumerate().all(|(i, r)| r.is_stack(i))
    }

    /// Shape of tensor `t` (0: the model input; `i + 1`: layer `i`'s output).
    pub fn tensor(&self, t: usize) -> Shape {
        self.tensors[..=self.len][t]
    }

    /// The shape of layer `i`'s second input (Add, Concatenate), if it has one.
    pub fn other_input(&self, i: usize) -> Option<Shape> {
        self.inputs()[i].other.map(|t| self.tensor(t as usize))
    }

    /// The layers after `i` that read layer `i`'s output, as either input.
    pub fn readers(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        let t = (i + 1) as u16;
        self.inputs().iter().enumerate().filter(move |(_, r)| r.main == t || r.other == Some(t)).map(|(j, _)| j)
    }

    /// For a Dense layer `i` that reads, through MaxPool2D, Flatten and
    /// Dropout layers only, a BatchNormalization of a ReLU'd (or ReLU6'd)
    /// layer's output: that BatchNormalization and the ReLU'd layer. A
    /// dead input of layer `i` then holds its channel's image of the ReLU's
    /// zero, whose weight rows the hosts' kernels need not read.
    pub fn batch_norm_of_relu_read_by(&self, i: usize) -> Option<(usize, usize)> {
        let (layers, inputs) = (self.layers(), self.inputs());
        if !matches!(layers.get(i)?, Layer::Dense { .. }) {
            return None;
        }
        // Tensor `t` is layer `t - 1`'s output (tensor 0: the model's input).
        let producer = |i: usize| match inputs[i] {
            Inputs { main, other: None } => (main as usize).checked_sub(1),
            _ => None,
        };
        let mut bn = producer(i)?;
        while matches!(layers[bn], Layer::Flatten | Layer::Dropout { .. } | Layer::MaxPool2D { .. }) {
            bn = producer(bn)?;
        }
        let relu_layer = producer(bn)?;
        let relu = |a: Activation| matches!(a, Activation::Relu | Activation::Relu6);
        let relu_out = match layers[relu_layer] {
            Layer::Conv2D(c) => relu(c.activation),
            Layer::Dense { activation, .. } | Layer::Add { activation } | Layer::Activation(activation) => {
                relu(activation)
            }
            _ => false,
        };
        (matches!(layers[bn], Layer::BatchNorm { .. }) && relu_out).then_some((bn, relu_layer))
    }

    /// Each layer with its (main) input and output shapes.
    pub fn shapes(&self) -> impl Iterator<Item = (usize, &Layer, Shape, Shape)> + '_ {
        self.layers()
            .iter()
            .zip(self.inputs())
            .enumerate()
            .map(move |(i, (l, r))| (i, l, self.tensors[r.main as usize], self.tensors[i + 1]))
    }

    /// The output shape of the whole model.
    pub fn output(&self) -> Shape {
        self.tensors[self.len]
    }

    /// Whether the model ends in its own Softmax layer (a converter's
    /// SOFTMAX), so that its output is probabilities rather than logits.
    pub fn ends_in_softmax(&self) -> bool {
        matches!(self.layers().last(), Some(Layer::Softmax))
    }

    /// (trainable, non-trainable) parameters of the whole model.
    pub fn params(&self) -> (u64, u64) {
        self.shapes().fold((0, 0), |(t, n), (_, l, i, _)| {
            let (a, b) = l.params(i);
            (t + a, n + b)
        })
    }

    /// Multiply-accumulates per example at inference.
    pub fn macs(&self) -> u64 {
        self.shapes().map(|(_, l, i, o)| l.macs(i, o)).sum()
    }

    /// Keras-style layer names (`conv2d`, `conv2d_1`, `batch_normalization`, ...).
    pub fn layer_name(&self, index: usize) -> LayerName {
        let kind = self.layers()[index].kind();
        let ordinal = self.layers()[..index].iter().filter(|l| l.kind() == kind).count();
        LayerName { kind, ordinal }
    }
}

/// A Keras-style layer name; `Display` gives `conv2d_3`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerName {
    pub kind: LayerKind,
    pub ordinal: usize,
}

impl fmt::Display for LayerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ordinal == 0 {
            f.write_str(self.kind.keras_name())
        } else {
            write!(f, "{}_{}", self.kind.keras_name(), self.ordinal)
        }
    }
}

/// A builder that reads like Keras's `Sequential([...])` code.
///
/// ```
/// use shared::spec::{Sequential, Conv2D, Shape, Activation};
/// let m = Sequential::new(Shape::image(32, 32, 3))
///     .conv2d(Conv2D::new(8, 3).same().relu())
///     .batch_norm()
///     .max_pool(2, 2)
///     .flatten()
///     .dense(10, Activation::Softmax)
///     .build()
///     .unwrap();
/// assert_eq!(m.output(), Shape::Flat(10));
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Sequential {
    input: Shape,
    layers: [Layer; MAX_LAYERS],
    len: usize,
    overflow: bool,
}

impl Sequential {
    /// Start a model on `input`.
    pub fn new(input: Shape) -> Self {
        Sequential { input, layers: [Layer::Flatten; MAX_LAYERS], len: 0, overflow: false }
    }
    /// Append any layer (Keras's `model.add(layer)`; not `std::ops::Add`).
    #[allow(clippy::should_implement_trait)]
    pub fn add(mut self, layer: Layer) -> Self {
        if self.len < MAX_LAYERS {
            self.layers[self.len] = layer;
            self.len += 1;
        } else {
            self.overflow = true;
        }
        self
    }
    /// `Conv2D(...)`.
    pub fn conv2d(self, c: Conv2D) -> Self {
        self.add(Layer::Conv2D(c))
    }
    /// `BatchNormalization()` with Keras's defaults.
    pub fn batch_norm(self) -> Self {
        self.add(Layer::BatchNorm { epsilon: BN_EPSILON, momentum: BN_MOMENTUM })
    }
    /// `MaxPool2D(pool_size=pool, strides=stride)`.
    pub fn max_pool(self, pool: u32, stride: u32) -> Self {
        self.add(Layer::MaxPool2D { pool, stride })
    }
    /// `Flatten()`.
    pub fn flatten(self) -> Self {
        self.add(Layer::Flatten)
    }
    /// `Dense(units, activation=...)`.
    pub fn dense(self, units: u32, activation: Activation) -> Self {
        self.add(Layer::Dense { units, activation })
    }
    /// `Dropout(rate)`.
    pub fn dropout(self, rate: f32) -> Self {
        self.add(Layer::Dropout { rate })
    }
    /// Validate and return the model.
    pub fn build(self) -> Result<ModelSpec, SpecError> {
        if self.overflow {
            return Err(SpecError::TooManyLayers);
        }
        ModelSpec::new(self.input, &self.layers[..self.len])
    }
}

/// Widths of an AlexNet-shaped stack: five conv filter counts and the hidden Dense units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlexNetWidths {
    pub filters: [u32; 5],
    pub hidden: u32,
}

/// The tutorial's widths: 96, 256, 384, 384, 256 filters and 4096 hidden units.
pub const ALEXNET_WIDTHS: AlexNetWidths = AlexNetWidths { filters: [96, 256, 384, 384, 256], hidden: 4096 };

/// The scaled widths: 1/4 of the filters, 1/16 of the hidden units.
pub const ALEXNET_MICRO_WIDTHS: AlexNetWidths = AlexNetWidths { filters: [24, 64, 96, 96, 64], hidden: 256 };

/// The tutorial's input size.
pub const ALEXNET_INPUT: u32 = 227;
/// The scaled preset's default input size (a multiple of 4 plus 11 -> 23x23 after conv 1).
pub const ALEXNET_MICRO_INPUT: u32 = 99;

/// The tutorial's AlexNet topology with the given widths, input size and class count.
pub fn alexnet_with(widths: AlexNetWidths, input: u32, classes: u32) -> Result<ModelSpec, SpecError> {
    let [f1, f2, f3, f4, f5] = widths.filters;
    Sequential::new(Shape::image(input, input, 3))
        .conv2d(Conv2D::new(f1, 11).strides(4).relu())
        .batch_norm()
        .max_pool(3, 2)
        .conv2d(Conv2D::new(f2, 5).same().relu())
        .batch_norm()
        .max_pool(3, 2)
        .conv2d(Conv2D::new(f3, 3).same().relu())
        .batch_norm()
        .conv2d(Conv2D::new(f4, 3).same().relu())
        .batch_norm()
        .conv2d(Conv2D::new(f5, 3).same().relu())
        .batch_norm()
        .max_pool(3, 2)
        .flatten()
        .dense(widths.hidden, Activation::Relu)
        .dropout(0.5)
        .dense(widths.hidden, Activation::Relu)
        .dropout(0.5)
        .dense(classes, Activation::Softmax)
        .build()
}

/// The tutorial's exact AlexNet (227x227x3 by default).
pub fn alexnet(input: u32, classes: u32) -> Result<ModelSpec, SpecError> {
    alexnet_with(ALEXNET_WIDTHS, input, classes)
}

/// The scaled AlexNet: same topology, fewer filters and units, for a Cortex-M4 with
/// 1 MiB of flash and 256 KiB of RAM.
pub fn alexnet_micro(input: u32, classes: u32) -> Result<ModelSpec, SpecError> {
    alexnet_with(ALEXNET_MICRO_WIDTHS, input, classes)
}

/// The smallest widths that keep the topology: a smoke-test and tutorial-test
/// preset that trains in seconds at 67x67.
pub const ALEXNET_TINY_WIDTHS: AlexNetWidths = AlexNetWidths { filters: [4, 8, 8, 8, 8], hidden: 16 };
/// The tiny preset's default input size.
pub const ALEXNET_TINY_INPUT: u32 = 67;

/// The preset registry: every named stack any command accepts (`--arch`),
/// in one place. The import issue extends it with stack files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// The tutorial's AlexNet.
    AlexNet,
    /// The scaled AlexNet for a Cortex-M4 with 1 MiB flash.
    AlexNetMicro,
    /// The topology with a handful of filters, for tests and smoke runs.
    AlexNetTiny,
}

impl Arch {
    /// All presets, for help texts and parsing.
    pub const ALL: [Arch; 3] = [Arch::AlexNet, Arch::AlexNetMicro, Arch::AlexNetTiny];

    /// The preset's command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Arch::AlexNet => "alexnet",
            Arch::AlexNetMicro => "alexnet-micro",
            Arch::AlexNetTiny => "alexnet-tiny",
        }
    }

    /// Parse a command-line name.
    pub fn from_name(name: &str) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.name() == name)
    }

    /// The preset's widths.
    pub fn widths(self) -> AlexNetWidths {
        match self {
            Arch::AlexNet => ALEXNET_WIDTHS,
            Arch::AlexNetMicro => ALEXNET_MICRO_WIDTHS,
            Arch::AlexNetTiny => ALEXNET_TINY_WIDTHS,
        }
    }

    /// The preset's default input size.
    pub fn default_input(self) -> u32 {
        match self {
            Arch::AlexNet => ALEXNET_INPUT,
            Arch::AlexNetMicro => ALEXNET_MICRO_INPUT,
            Arch::AlexNetTiny => ALEXNET_TINY_INPUT,
        }
    }

    /// Build the preset.
    pub fn build(self, input: u32, classes: u32) -> Result<ModelSpec, SpecError> {
        alexnet_with(self.widths(), input, classes)
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_fc6_reads_a_batch_norm_of_a_relu() {
        let net = alexnet(227, 1000).unwrap();
        let found: alloc::vec::Vec<_> =
            (0..net.layers().len()).filter_map(|i| Some((i, net.batch_norm_of_relu_read_by(i)?))).collect();
        // FC6 (layer 14) reads conv 5's BN (11) through the pool and the flatten;
        // FC7 and FC8 read a ReLU'd dense layer straight, no BN between.
        assert_eq!(found, [(14, (11, 10))]);
        // Without the ReLU there is no dead value to skip.
        let plain = Sequential::new(Shape::image(9, 9, 3))
            .conv2d(Conv2D::new(4, 3))
            .batch_norm()
            .flatten()
            .dense(3, Activation::Softmax)
            .build()
            .unwrap();
        assert_eq!(plain.batch_norm_of_relu_read_by(3), None);
    }

    #[test]
    fn alexnet_matches_the_keras_summary() {
        let m = alexnet(227, 1000).unwrap();
        let expected: [(Shape, u64); 19] = [
            (Shape::image(55, 55, 96), 34_944),
            (Shape::image(55, 55, 96), 384),
            (Shape::image(27, 27, 96), 0),
            (Shape::image(27, 27, 256), 614_656),
            (Shape::image(27, 27, 256), 1_024),
            (Shape::image(13, 13, 256), 0),
            (Shape::image(13, 13, 384), 885_120),
            (Shape::image(13, 13, 384), 1_536),
            (Shape::image(13, 13, 384), 1_327_488),
            (Shape::image(13, 13, 384), 1_536),
            (Shape::image(13, 13, 256), 884_992),
            (Shape::image(13, 13, 256), 1_024),
            (Shape::image(6, 6, 256), 0),
            (Shape::Flat(9216), 0),
            (Shape::Flat(4096), 37_752_832),
            (Shape::Flat(4096), 0),
            (Shape::Flat(4096), 16_781_312),
            (Shape::Flat(4096), 0),
            (Shape::Flat(1000), 4_097_000),
        ];
        let got: [(Shape, u64); 19] = core::array::from_fn(|i| {
            let (_, l, input, out) = m.shapes().nth(i).unwrap();
            let (t, n) = l.params(input);
            (out, t + n)
        });
        assert_eq!(m.layers().len(), 19);
        assert_eq!(got, expected);
        assert_eq!(m.params(), (62_381_096, 2_752));
        assert_eq!(m.params().0 + m.params().1, 62_383_848);
    }

    #[test]
    fn impossible_stack_names_the_layer() {
        let err = alexnet(32, 10).unwrap_err();
        // 32 -> conv 6 -> pool 2 -> conv 2 -> pool fails (2 < 3).
        match err {
            SpecError::Layer { index, kind, problem, .. } => {
                assert_eq!(index, 5);
                assert_eq!(kind, LayerKind::MaxPool2D);
                assert_eq!(problem, Problem::Collapsed);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn dense_before_flatten_is_an_error() {
        let err = Sequential::new(Shape::image(8, 8, 1)).dense(3, Activation::None).build().unwrap_err();
        assert!(matches!(err, SpecError::Layer { index: 0, problem: Problem::NeedsFlat, .. }));
    }

    #[test]
    fn same_padding_rounds_up() {
        let m = Sequential::new(Shape::image(7, 5, 2)).conv2d(Conv2D::new(4, 3).strides(2).same()).build().unwrap();
        assert_eq!(m.output(), Shape::image(4, 3, 4));
    }

    #[test]
    fn layer_names_follow_keras() {
        let m = alexnet(227, 5).unwrap();
        extern crate std;
        use std::string::ToString;
        assert_eq!(m.layer_name(0).to_string(), "conv2d");
        assert_eq!(m.layer_name(3).to_string(), "conv2d_1");
        assert_eq!(m.layer_name(17).to_string(), "dropout_1");
    }

    // Regression (issue 8): a mid-stack softmax was accepted; the host's float
    // network applied it and the engine did not, so one model meant two things.
    #[test]
    fn softmax_only_on_the_last_dense_layer() {
        let head = || Sequential::new(Shape::image(6, 6, 2)).conv2d(Conv2D::new(3, 3).relu()).flatten();
        assert!(head().dense(4, Activation::Softmax).build().is_ok());
        let mid_dense = head().dense(8, Activation::Softmax).dense(4, Activation::None).build().unwrap_err();
        assert_eq!(
            mid_dense,
            SpecError::Layer {
                index: 2,
                kind: LayerKind::Dense,
                input: Shape::Flat(48),
                problem: Problem::MisplacedSoftmax
            }
        );
        // A Dropout after the softmax head makes it mid-stack too.
        let before_dropout = head().dense(4, Activation::Softmax).dropout(0.5).build().unwrap_err();
        assert!(matches!(before_dropout, SpecError::Layer { index: 2, problem: Problem::MisplacedSoftmax, .. }));
        let mut conv = Conv2D::new(3, 3);
        conv.activation = Activation::Softmax;
        let on_conv = Sequential::new(Shape::image(6, 6, 2)).conv2d(conv).build().unwrap_err();
        assert!(matches!(
            on_conv,
            SpecError::Layer { index: 0, kind: LayerKind::Conv2D, problem: Problem::MisplacedSoftmax, .. }
        ));
        extern crate std;
        use std::string::ToString;
        let text = mid_dense.to_string();
        assert!(text.starts_with("layer 2 (Dense)") && text.contains("softmax"), "{text}");
    }

    // Regression (issue 8): the overflow guards lived only in the file parser;
    // a stack built in code overflowed (a panic in debug, a wrapped count in release).
    #[test]
    fn counts_that_overflow_u64_are_refused() {
        let overflow = |input: Shape, layers: &[Layer]| match ModelSpec::new(input, layers) {
            Err(SpecError::Layer { problem, index, .. }) => (index, problem),
            other => panic!("{other:?}"),
        };
        // Three u32 dimensions: the element count itself overflows u64.
        let huge = Shape::image(u32::MAX, u32::MAX, u32::MAX);
        assert_eq!(overflow(huge, &[Layer::Flatten]), (0, Problem::TooLarge));
        // A tensor over MAX_TENSOR_ELEMENTS (but within u64).
        let conv = |filters, kernel| Layer::Conv2D(Conv2D::new(filters, kernel).same());
        assert_eq!(overflow(Shape::image(1 << 16, 1 << 16, 1), &[conv(2, 1)]), (0, Problem::TooLarge));
        // Same padding lets the kernel grow past the input: 2^32-1 squared times 3 channels.
        assert_eq!(overflow(Shape::image(8, 8, 3), &[conv(4, u32::MAX)]), (0, Problem::CountOverflow));
        // Parameters fit (2^40) but MACs do not: 2^32-2^17+1 outputs x 2^40 taps.
        let big = Shape::image(u16::MAX as u32, u16::MAX as u32, 1);
        assert_eq!(overflow(big, &[conv(1, 1 << 20)]), (0, Problem::CountOverflow));
        // Parameters fit in u64 ((2^32-1)^2 + 2^32-1 < 2^64) but not their bytes.
        let dense = Layer::Dense { units: u32::MAX, activation: Activation::None };
        assert_eq!(overflow(Shape::Flat(u32::MAX), &[dense]), (0, Problem::CountOverflow));
        // Each layer fits on its own; the sum over the stack does not.
        let dense = Layer::Dense { units: 1 << 30, activation: Activation::None };
        let m = ModelSpec::new(Shape::Flat(1 << 30), &[dense]).unwrap();
        assert_eq!(m.params().0, (1 << 60) + (1 << 30));
        assert_eq!(overflow(Shape::Flat(1 << 30), &[dense; 16]), (3, Problem::CountOverflow));
        // The unchecked accessors saturate instead of wrapping on layers outside a spec.
        assert_eq!(Layer::Conv2D(Conv2D::new(4, u32::MAX)).params(Shape::image(8, 8, 3)).0, u64::MAX);
    }
}
