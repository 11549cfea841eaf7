//! Why a model could not be imported. A leaf: every importer returns these.
use std::path::PathBuf;

/// Why a model file could not be imported. Nothing is written when any of
/// these is returned.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    /// The file is not what its name says, or is damaged.
    #[error("{}: {what}", path.display())]
    Format { path: PathBuf, what: String },
    /// A layer or node the layer stack cannot express.
    #[error(
        "{}: layer {name:?} ({kind}) cannot be imported: {why}. Supported: {supported}",
        path.display()
    )]
    Unsupported { path: PathBuf, name: String, kind: String, why: String, supported: &'static str },
    /// The weights do not fit the architecture.
    #[error("{}: {what}", path.display())]
    Weights { path: PathBuf, what: String },
}

/// What the layer stack takes from Keras, for the error text.
pub const KERAS_SUPPORTED: &str = "Conv2D (any kernel, strides, dilation and groups, valid/same padding, \
    relu, relu6 or linear), DepthwiseConv2D (any depth_multiplier), SeparableConv2D (as depthwise + 1x1), \
    ZeroPadding2D before a valid Conv2D or AveragePooling2D, BatchNormalization (last axis), MaxPooling2D \
    (square, valid), AveragePooling2D (valid/same), GlobalAveragePooling2D, Flatten, Dense (relu, relu6, linear, \
    softmax), Dropout, ReLU (max_value 6 or none) and Activation layers after a Conv2D or Dense, and in front of \
    them InputLayer, Rescaling and Normalization, in a straight chain; Keras's random augmentation layers are \
    skipped (they do nothing at inference)";

/// What the layer stack takes from ONNX, for the error text.
pub const ONNX_SUPPORTED: &str = "Conv (any kernel, strides, dilations, group and pads; auto_pad NOTSET, VALID or \
    SAME_UPPER), a constant zero Pad of height and width before a Conv or AveragePool, Relu, Clip(0, 6) and \
    Clip(0) after a Conv or Gemm/MatMul, BatchNormalization, MaxPool (square, unpadded), AveragePool \
    (count_include_pad=0, or no pads), GlobalAveragePool, Flatten or Reshape to [batch, features], Transpose \
    between NCHW and NHWC, Gemm or MatMul + Add, Dropout, Softmax, Identity, in a straight chain; shape \
    subgraphs over constants (ConstantOfShape, Concat, Reshape, Slice, Transpose, Cast) are folded";
