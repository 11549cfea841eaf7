//! Our models in other tools' formats: `.tflite` for TensorFlow Lite (Micro).
pub mod tflite;
