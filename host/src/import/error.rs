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
pub const KERAS_SUPPORTED: &str = "Sequential and Functional models with one input and one output (layers \
    called once) of: Conv2D (any kernel, strides, dilation and groups, valid/same padding, relu, relu6 or linear), \
    DepthwiseConv2D (any depth_multiplier), SeparableConv2D (as depthwise + 1x1), ZeroPadding2D before a valid \
    Conv2D, DepthwiseConv2D, SeparableConv2D or AveragePooling2D, BatchNormalization (last axis; folded into a \
    linear Conv2D, DepthwiseConv2D or Dense that it alone reads), MaxPooling2D (square, valid), AveragePooling2D \
    (valid/same), GlobalAveragePooling2D, Flatten, Dense (relu, relu6, linear, softmax), Dropout, Add and \
    Concatenate (channels axis, -1) of two or more tensors, ReLU (max_value 6 or none) and Activation (relu, \
    relu6, linear; softmax right after the last Dense) layers, and in front of the first Conv2D or Dense \
    InputLayer, Rescaling and Normalization; Keras's random augmentation layers are skipped (they do nothing at \
    inference)";

/// What the layer stack takes from ONNX, for the error text.
pub const ONNX_SUPPORTED: &str = "graphs with one input and one output, each node reading tensors computed \
    before it, of: Conv (any kernel, strides, dilations, group and pads; auto_pad NOTSET, VALID or SAME_UPPER), a \
    constant zero Pad of height and width before a Conv or AveragePool, Relu, Clip(0, 6) and Clip(0) (fused into \
    the Conv, Gemm/MatMul or Add before them when they alone read it, else a layer of their own), \
    BatchNormalization, MaxPool (square, unpadded), AveragePool (count_include_pad=0, or no pads), \
    GlobalAveragePool, Add of two tensors of one shape, Concat on channels (axis 1 of NCHW), Flatten or Reshape to \
    [batch, features], Transpose between NCHW and NHWC, Gemm or MatMul + Add, Dropout, Softmax over features or \
    channels (fused into a Gemm/MatMul it alone follows, else a layer of its own), Identity; shape subgraphs over constants (ConstantOfShape, Concat, Reshape, Slice, Transpose, \
    Cast) are folded";
