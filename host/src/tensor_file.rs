//! `.npy` tensors as a model's input and output (`--tensor`, `--out`), so
//! that audio features and sensor vectors run as images do. Read and written
//! with `npyz`; a file is held to the size the model's input needs before
//! anything it declares is allocated (numpy writes headers of ~128 bytes:
//! more than 4 KiB is refused, and so is a header longer than the file).

use std::io::Cursor;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use npyz::WriterBuilder;
use shared::model::{Precision, QuantModel};
use shared::spec::Shape;

/// Longest `.npy` header accepted.
const MAX_HEADER: usize = 4096;

/// The values of an input tensor file, as stored.
#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    Int8(Vec<i8>),
    F32(Vec<f32>),
}

/// The values in `path`, checked to lay out `input`: its shape (`h, w, c`
/// or `1, h, w, c`; `n` or `1, n` for either kind of input with that many
/// values), C order, `int8` or finite little-endian `float32`.
pub fn read_values(path: &Path, input: Shape) -> Result<Values> {
    let n = input.elements();
    let shown = path.display();
    let len = std::fs::metadata(path).with_context(|| format!("reading {shown}"))?.len();
    let limit = n.saturating_mul(4).saturating_add(MAX_HEADER as u64 + 16);
    if len > limit {
        bail!("{shown}: {len} bytes, more than a float32 tensor of the model's input ({n} values) takes ({limit})");
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {shown}"))?;
    check_preamble(&bytes).with_context(|| format!("{shown}: not a .npy file"))?;
    let npy =
        npyz::NpyFile::new(Cursor::new(&bytes[..])).map_err(|e| anyhow!("{shown}: not a .npy file: {}", brief(&e)))?;
    let shape = npy.shape().to_vec();
    let count = shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
    if count != Some(n) || !shape_fits(&shape, input) {
        bail!("{shown}: shape {shape:?} is not the model's input {input} ({n} values)");
    }
    if npy.order() != npyz::Order::C && shape.iter().filter(|&&d| d > 1).count() > 1 {
        bail!("{shown}: Fortran-ordered array; save it in C order (numpy's default)");
    }
    let descr = npy.dtype().descr().trim_matches('\'').to_string();
    match descr.as_str() {
        "|i1" | "<i1" => Ok(Values::Int8(npy.into_vec().map_err(|e| anyhow!("{shown}: {}", brief(&e)))?)),
        "<f4" => {
            let floats = npy.into_vec::<f32>().map_err(|e| anyhow!("{shown}: {}", brief(&e)))?;
            if let Some(i) = floats.iter().position(|v| !v.is_finite()) {
                bail!("{shown}: value {i} is {}, not a finite number", floats[i]);
            }
            Ok(Values::F32(floats))
        }
        other => bail!("{shown}: dtype {other}; give int8 (|i1) or little-endian float32 (<f4)"),
    }
}

/// The model input in `path` ([`read_values`]): `int8` values in the
/// model's input quantization (int8 models), or `float32` values in the
/// model's input units, which the input quantization encodes (int8) or f16
/// rounds.
pub fn read_input(path: &Path, model: &QuantModel) -> Result<Vec<u8>> {
    let shown = path.display();
    let floats = match read_values(path, model.spec.input())? {
        Values::Int8(v) if model.precision == Precision::Int8 => return Ok(v.into_iter().map(|x| x as u8).collect()),
        Values::Int8(_) => {
            bail!("{shown}: int8 values, but the model is {}: give float32", model.precision.name())
        }
        Values::F32(v) => v,
    };
    crate::model_file::encode_values(model, &floats).with_context(|| shown.to_string())
}

/// Write the model's raw output to `path` (atomically): int8 values as
/// `int8`, f16 values widened exactly to `float32`, shaped as the output.
pub fn write_output(path: &Path, model: &QuantModel, output: &[u8]) -> Result<()> {
    let shape: Vec<u64> = match model.spec.output() {
        Shape::Image { h, w, c } => vec![h as u64, w as u64, c as u64],
        Shape::Flat(n) => vec![n as u64],
    };
    let mut buf = Vec::new();
    let encoded = match model.precision {
        Precision::Int8 => {
            let mut w = npyz::WriteOptions::new().default_dtype().shape(&shape).writer(&mut buf).begin_nd()?;
            w.extend(output.iter().map(|&b| b as i8))?;
            w.finish()
        }
        Precision::F16 => {
            let mut w = npyz::WriteOptions::new().default_dtype().shape(&shape).writer(&mut buf).begin_nd()?;
            w.extend(output.chunks_exact(2).map(|b| shared::f16::from_le_bytes([b[0], b[1]]).to_f32()))?;
            w.finish()
        }
    };
    encoded.with_context(|| format!("encoding {}", path.display()))?;
    crate::atomic::write_atomic(path, &buf).map_err(|e| anyhow!("{e}"))
}

/// The first line of a reader's error, at most 160 characters: the header
/// parser quotes the whole (hostile) header back otherwise.
fn brief(e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    let line = text.lines().next().unwrap_or("");
    match line.char_indices().nth(160) {
        Some((at, _)) => format!("{}...", &line[..at]),
        None => line.to_string(),
    }
}

/// The magic, and a header length within the file and [`MAX_HEADER`]
/// (checked before `npyz` allocates the header it declares).
fn check_preamble(bytes: &[u8]) -> Result<()> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        bail!("no \\x93NUMPY magic");
    }
    let (header, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => bail!("format version {v} (numpy writes 1, 2 or 3)"),
    };
    if header > MAX_HEADER || start + header > bytes.len() {
        bail!("a {header}-byte header in a {}-byte file (at most {MAX_HEADER})", bytes.len());
    }
    // numpy's header is one dict holding a shape tuple (brackets two deep):
    // deeper nesting is refused before `npyz` parses it (its parser took
    // minutes on 88 unclosed braces, a fuzz finding).
    let mut depth = 0usize;
    for (i, &b) in bytes[start..start + header].iter().enumerate() {
        match b {
            b'{' | b'[' | b'(' => depth += 1,
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth > MAX_HEADER_NESTING {
            bail!("its header nests brackets more than {MAX_HEADER_NESTING} deep (at byte {})", start + i);
        }
    }
    Ok(())
}

/// The deepest bracket nesting a `.npy` header may have (numpy writes 2).
const MAX_HEADER_NESTING: usize = 8;

/// Whether `shape` lays out `input`: its own dimensions, with a leading batch of 1, or flat.
fn shape_fits(shape: &[u64], input: Shape) -> bool {
    let dims: Vec<u64> = match input {
        Shape::Image { h, w, c } => vec![h as u64, w as u64, c as u64],
        Shape::Flat(n) => vec![n as u64],
    };
    let n = input.elements();
    shape == dims.as_slice()
        || (shape.first() == Some(&1) && &shape[1..] == dims.as_slice())
        || shape == [n]
        || shape == [1, n]
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::convert::{self, FloatLayer, OwnedModel, Ranges};
    use shared::engine;
    use shared::spec::{Activation, ModelSpec};

    /// A flat 4 -> 2 Dense model in `precision`.
    fn tiny(precision: Precision) -> OwnedModel {
        let spec =
            ModelSpec::new(Shape::Flat(4), &[shared::spec::Layer::Dense { units: 2, activation: Activation::None }])
                .unwrap();
        let (w, b) = ([0.5f32, -0.25, 1.0, 0.0, 0.1, 0.2, 0.3, 0.4], [0.0f32, 0.5]);
        let layers = [FloatLayer::Dense { weights: &w, bias: &b }];
        match precision {
            Precision::F16 => convert::convert_f16(&spec, &layers).unwrap(),
            Precision::Int8 => {
                let ranges = Ranges { input: (-2.0, 2.0), layers: vec![(-3.0, 3.0)] };
                convert::quantize_int8(&spec, &layers, &ranges).unwrap()
            }
        }
    }

    fn npy<T: npyz::AutoSerialize + Copy>(dir: &Path, name: &str, shape: &[u64], data: &[T]) -> std::path::PathBuf {
        let path = dir.join(name);
        let mut buf = Vec::new();
        let mut w = npyz::WriteOptions::new().default_dtype().shape(shape).writer(&mut buf).begin_nd().unwrap();
        w.extend(data.iter().copied()).unwrap();
        w.finish().unwrap();
        std::fs::write(&path, buf).unwrap();
        path
    }

    #[test]
    fn float_and_int8_tensors_encode_as_the_model_input() {
        let dir = tempfile::tempdir().unwrap();
        let x = [0.5f32, -1.0, 1.5, 0.25];
        for precision in [Precision::Int8, Precision::F16] {
            let m = tiny(precision);
            let view = m.view();
            let mut want = vec![0u8; 4 * precision.activation_bytes()];
            match precision {
                Precision::Int8 => engine::quantize_input(&x, view.input, &mut want).unwrap(),
                Precision::F16 => engine::encode_f16_input(&x, &mut want).unwrap(),
            }
            for shape in [&[4u64][..], &[1, 4]] {
                let p = npy(dir.path(), "x.npy", shape, &x);
                assert_eq!(read_input(&p, &view).unwrap(), want, "{precision:?} {shape:?}");
            }
        }
        // int8 values pass through to an int8 model, and are refused by an f16 one.
        let p = npy(dir.path(), "q.npy", &[4], &[-128i8, 0, 5, 127]);
        assert_eq!(read_input(&p, &tiny(Precision::Int8).view()).unwrap(), vec![128u8, 0, 5, 127]);
        let e = read_input(&p, &tiny(Precision::F16).view()).unwrap_err().to_string();
        assert!(e.contains("q.npy") && e.contains("float32"), "{e}");
    }

    #[test]
    fn bad_tensors_are_named_errors() {
        let dir = tempfile::tempdir().unwrap();
        let m = tiny(Precision::Int8);
        let view = m.view();
        let err = |p: &Path| read_input(p, &view).unwrap_err().to_string();
        let e = err(&npy(dir.path(), "shape.npy", &[2, 2], &[0.0f32; 4]));
        assert!(e.contains("shape [2, 2]") && e.contains("(4 values)"), "{e}");
        let e = err(&npy(dir.path(), "f8.npy", &[4], &[0.0f64; 4]));
        assert!(e.contains("<f8"), "{e}");
        let e = err(&npy(dir.path(), "nan.npy", &[4], &[0.0f32, f32::NAN, 0.0, 0.0]));
        assert!(e.contains("value 1 is NaN"), "{e}");
        // Larger than any tensor of 4 values could be.
        let big = npy(dir.path(), "big.npy", &[3000], &[0.0f32; 3000]);
        assert!(err(&big).contains("more than a float32 tensor"), "{}", err(&big));
        // Data cut short: the header promises 4 values.
        let p = npy(dir.path(), "cut.npy", &[4], &[1.0f32; 4]);
        let mut b = std::fs::read(&p).unwrap();
        b.truncate(b.len() - 6);
        std::fs::write(&p, b).unwrap();
        assert!(err(&p).contains("cut.npy"), "{}", err(&p));
        // A hostile header: deep nesting is a one-line error, not the header quoted back.
        let mut nested = b"\x93NUMPY\x01\x00".to_vec();
        let text =
            format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {}{}, }}\n", "(".repeat(900), ")".repeat(900));
        nested.extend_from_slice(&(text.len() as u16).to_le_bytes());
        nested.extend_from_slice(text.as_bytes());
        let p = dir.path().join("nest.npy");
        std::fs::write(&p, nested).unwrap();
        let e = read_input(&p, &tiny(Precision::F16).view()).unwrap_err().to_string();
        assert!(e.contains("nest.npy") && !e.contains('\n') && e.len() < 300, "{e}");
        // The fuzzer's hang (npyz's parser on unclosed braces): refused at once, naming the byte.
        let mut braces = b"\x93NUMPY\x01\x00".to_vec();
        let text = format!("{}'descr': '|i1', 'fortran_order': False, 'shape': (2,), }}\n", "{".repeat(88));
        braces.extend_from_slice(&(text.len() as u16).to_le_bytes());
        braces.extend_from_slice(text.as_bytes());
        let p = dir.path().join("braces.npy");
        std::fs::write(&p, braces).unwrap();
        let e = format!("{:#}", read_input(&p, &tiny(Precision::F16).view()).unwrap_err());
        assert!(e.contains("braces.npy") && e.contains("more than 8 deep (at byte 18)"), "{e}");
        // Not an .npy at all.
        std::fs::write(dir.path().join("png.npy"), b"\x89PNG\r\n\x1a\n").unwrap();
        assert!(err(&dir.path().join("png.npy")).contains("not a .npy"));
    }

    #[test]
    fn outputs_round_trip_through_npy() {
        let dir = tempfile::tempdir().unwrap();
        let m = tiny(Precision::F16);
        let out = [shared::f16::from_f32(1.5).to_le_bytes(), shared::f16::from_f32(-0.125).to_le_bytes()].concat();
        let p = dir.path().join("y.npy");
        write_output(&p, &m.view(), &out).unwrap();
        let back: Vec<f32> = npyz::NpyFile::new(&std::fs::read(&p).unwrap()[..]).unwrap().into_vec().unwrap();
        assert_eq!(back, vec![1.5, -0.125]);
        let m = tiny(Precision::Int8);
        write_output(&p, &m.view(), &[3u8, 250]).unwrap();
        let back: Vec<i8> = npyz::NpyFile::new(&std::fs::read(&p).unwrap()[..]).unwrap().into_vec().unwrap();
        assert_eq!(back, vec![3, -6]);
    }

    #[test]
    fn preamble_checks_come_before_any_allocation() {
        assert!(check_preamble(b"\x93NUMPY\x01\x00\x10\x00").is_err(), "header past the end");
        let mut huge = b"\x93NUMPY\x02\x00".to_vec();
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(check_preamble(&huge).unwrap_err().to_string().contains("header"));
        assert!(check_preamble(b"PK\x03\x04 not npy").is_err());
    }

    #[test]
    fn shapes_that_lay_out_the_input() {
        let img = Shape::image(49, 10, 1);
        for ok in [&[49u64, 10, 1][..], &[1, 49, 10, 1], &[490], &[1, 490]] {
            assert!(shape_fits(ok, img), "{ok:?}");
        }
        for bad in [&[10u64, 49, 1][..], &[2, 245], &[49, 10]] {
            assert!(!shape_fits(bad, img), "{bad:?}");
        }
    }
}
