//! TensorFlow Lite's model schema (`schema/schema.fbs`, the file TensorFlow
//! publishes as `tensorflow/lite/schema/schema.fbs`, Apache-2.0) as Rust,
//! generated at build time by planus: zero-copy `*Ref` readers whose every
//! access is bounds-checked (an error, never a panic, on a hostile file) and
//! owned types with a builder for writing `.tflite` files.
//!
//! The host's `.tflite` importer and exporter are the only users; keeping
//! the 50,000 generated lines in a crate of their own keeps them out of the
//! host's compile and lint.
#![allow(clippy::all, clippy::pedantic, missing_docs, unused_imports, dead_code, non_camel_case_types)]

include!(concat!(env!("OUT_DIR"), "/tflite_schema.rs"));
