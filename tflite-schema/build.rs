//! Generate the Rust reader/writer of TensorFlow Lite's flatbuffer schema
//! (`schema/schema.fbs`) with planus, so the schema file is the one source.
use std::path::PathBuf;

fn main() {
    let schema = PathBuf::from("schema/schema.fbs");
    println!("cargo:rerun-if-changed={}", schema.display());
    let declarations = planus_translation::translate_files(&[&schema])
        .unwrap_or_else(|| panic!("{}: planus could not translate the schema", schema.display()));
    let code = planus_codegen::generate_rust(&declarations, false)
        .unwrap_or_else(|e| panic!("{}: planus code generation failed: {e}", schema.display()));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("tflite_schema.rs");
    std::fs::write(&out, code).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
}
