//! A `.tflite` flatbuffer as plain data: the first subgraph's tensors (shape,
//! type, quantization, constant bytes borrowed from the file) and operators
//! (code, tensor indices, options). Every flatbuffer access goes through
//! planus's checked readers, so a damaged file is an error naming what could
//! not be read, never a panic; sizes are checked against the file before use.
use planus::ReadAsRoot;
use tflite_schema::tflite;

pub use tflite::{BuiltinOperator, BuiltinOptions, TensorType};

/// One tensor of the graph.
#[derive(Debug)]
pub struct Tensor<'f> {
    pub name: String,
    /// Dimensions as the file gives them (batch first); none negative.
    pub shape: Vec<usize>,
    pub dtype: TensorType,
    pub quant: Option<Quant>,
    /// Constant contents (weights, biases, shape operands); `None` for activations.
    pub data: Option<&'f [u8]>,
}

impl Tensor<'_> {
    /// Number of elements the shape holds (saturating: callers compare it with data lengths).
    pub fn elements(&self) -> usize {
        self.shape.iter().fold(1usize, |a, &d| a.saturating_mul(d))
    }
}

/// Affine quantization: one scale and zero point, or one per slice along `dim`.
#[derive(Clone, Debug, PartialEq)]
pub struct Quant {
    pub scales: Vec<f32>,
    pub zero_points: Vec<i64>,
    pub dim: usize,
}

/// One operator: its code, the tensors it reads (`None`: an omitted optional
/// input, index -1) and writes, and its builtin options.
#[derive(Debug)]
pub struct Op {
    pub code: BuiltinOperator,
    pub inputs: Vec<Option<usize>>,
    pub outputs: Vec<usize>,
    pub options: Option<BuiltinOptions>,
}

/// The first subgraph of a `.tflite` model.
#[derive(Debug)]
pub struct Graph<'f> {
    pub tensors: Vec<Tensor<'f>>,
    pub ops: Vec<Op>,
    pub inputs: Vec<usize>,
    pub outputs: Vec<usize>,
    /// The model's `description` (the converter writes "MLIR Converted.").
    pub description: String,
}

impl Graph<'_> {
    /// The tensor `index` names (indices are checked at read time).
    pub fn tensor(&self, index: usize) -> &Tensor<'_> {
        &self.tensors[index]
    }
}

/// Why a `.tflite` could not be read; `Display` names the part.
#[derive(Debug)]
pub struct ReadError(pub String);

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn fb<T>(what: &str, r: planus::Result<T>) -> Result<T, ReadError> {
    r.map_err(|e| ReadError(format!("{what}: {e}")))
}

fn bad(what: impl Into<String>) -> ReadError {
    ReadError(what.into())
}

/// Most tensors and operators a file may declare (a bound against hostile
/// counts; real models have a few hundred).
const MAX_ITEMS: usize = 100_000;

/// Read the model in `bytes` (the whole file).
pub fn read(bytes: &[u8]) -> Result<Graph<'_>, ReadError> {
    if bytes.len() < 8 || &bytes[4..8] != b"TFL3" {
        return Err(bad("not a TensorFlow Lite model (no \"TFL3\" identifier at byte 4)"));
    }
    let model = fb("model", tflite::ModelRef::read_as_root(bytes))?;
    let codes = fb("operator_codes", model.operator_codes())?.ok_or_else(|| bad("no operator_codes"))?;
    let mut op_codes = Vec::with_capacity(codes.len().min(MAX_ITEMS));
    for (i, c) in codes.iter().enumerate() {
        let c = fb(&format!("operator_codes[{i}]"), c)?;
        let deprecated = fb(&format!("operator_codes[{i}].deprecated_builtin_code"), c.deprecated_builtin_code())?;
        let code = match c.builtin_code() {
            Ok(code) => code,
            Err(e) => return Err(bad(format!("operator_codes[{i}]: an operator this schema does not know ({e})"))),
        };
        // TFLite's rule: files from before `builtin_code` existed carry only the deprecated field.
        let code = if (code as i32) < deprecated as i32 {
            BuiltinOperator::try_from(deprecated as i32)
                .map_err(|e| bad(format!("operator_codes[{i}]: deprecated_builtin_code {deprecated}: {e}")))?
        } else {
            code
        };
        op_codes.push(code);
    }
    let buffers = fb("buffers", model.buffers())?.ok_or_else(|| bad("no buffers"))?;
    let subgraphs = fb("subgraphs", model.subgraphs())?.ok_or_else(|| bad("no subgraphs"))?;
    if subgraphs.len() != 1 {
        return Err(bad(format!(
            "{} subgraphs: only single-subgraph models (no control flow) are supported",
            subgraphs.len()
        )));
    }
    let g = fb("subgraphs[0]", subgraphs.get(0).ok_or_else(|| bad("no subgraphs"))?)?;
    let tensor_refs = fb("subgraphs[0].tensors", g.tensors())?.ok_or_else(|| bad("subgraph without tensors"))?;
    if tensor_refs.len() > MAX_ITEMS {
        return Err(bad(format!("{} tensors (at most {MAX_ITEMS})", tensor_refs.len())));
    }
    let mut tensors = Vec::with_capacity(tensor_refs.len());
    for (i, t) in tensor_refs.iter().enumerate() {
        let at = format!("tensors[{i}]");
        let t = fb(&at, t)?;
        let name = fb(&at, t.name())?.unwrap_or_default().to_string();
        let at = format!("tensor {i} ({name:?})");
        let shape = fb(&format!("{at}.shape"), t.shape())?
            .map(|v| v.iter().map(|d| usize::try_from(d).map_err(|_| bad(format!("{at}: dimension {d}")))).collect())
            .transpose()?
            .unwrap_or_default();
        let dtype = fb(&format!("{at}.type"), t.type_())?;
        let quant = match fb(&format!("{at}.quantization"), t.quantization())? {
            None => None,
            Some(q) => {
                let scales: Vec<f32> =
                    fb(&format!("{at}.quantization.scale"), q.scale())?.map(|v| v.iter().collect()).unwrap_or_default();
                let zero_points: Vec<i64> = fb(&format!("{at}.quantization.zero_point"), q.zero_point())?
                    .map(|v| v.iter().collect())
                    .unwrap_or_default();
                let dim = fb(&format!("{at}.quantization.quantized_dimension"), q.quantized_dimension())?;
                if scales.is_empty() {
                    None
                } else {
                    let dim = usize::try_from(dim).map_err(|_| bad(format!("{at}: quantized_dimension {dim}")))?;
                    Some(Quant { scales, zero_points, dim })
                }
            }
        };
        let buffer = fb(&format!("{at}.buffer"), t.buffer())? as usize;
        let data = if buffer == 0 {
            None
        } else {
            let b = buffers.get(buffer).ok_or_else(|| bad(format!("{at}: buffer {buffer} of {}", buffers.len())))?;
            let b = fb(&format!("buffers[{buffer}]"), b)?;
            fb(&format!("buffers[{buffer}].data"), b.data())?.filter(|d| !d.is_empty())
        };
        tensors.push(Tensor { name, shape, dtype, quant, data });
    }
    let index = |what: &str, v: i32, optional: bool| -> Result<Option<usize>, ReadError> {
        if v == -1 && optional {
            return Ok(None);
        }
        match usize::try_from(v) {
            Ok(i) if i < tensors.len() => Ok(Some(i)),
            _ => Err(bad(format!("{what}: tensor index {v} (the subgraph has {})", tensors.len()))),
        }
    };
    let list = |what: &str, v: Option<planus::Vector<'_, i32>>| -> Result<Vec<usize>, ReadError> {
        v.map(|v| v.iter().map(|i| index(what, i, false).map(|i| i.unwrap_or(0))).collect())
            .transpose()
            .map(Option::unwrap_or_default)
    };
    let inputs = list("subgraph inputs", fb("subgraphs[0].inputs", g.inputs())?)?;
    let outputs = list("subgraph outputs", fb("subgraphs[0].outputs", g.outputs())?)?;
    let op_refs = fb("subgraphs[0].operators", g.operators())?.ok_or_else(|| bad("subgraph without operators"))?;
    if op_refs.len() > MAX_ITEMS {
        return Err(bad(format!("{} operators (at most {MAX_ITEMS})", op_refs.len())));
    }
    let mut ops = Vec::with_capacity(op_refs.len());
    for (i, o) in op_refs.iter().enumerate() {
        let at = format!("operator {i}");
        let o = fb(&at, o)?;
        let ci = fb(&format!("{at}.opcode_index"), o.opcode_index())? as usize;
        let code = *op_codes.get(ci).ok_or_else(|| bad(format!("{at}: opcode_index {ci} of {}", op_codes.len())))?;
        let at = format!("operator {i} ({code:?})");
        let op_inputs = fb(&format!("{at}.inputs"), o.inputs())?
            .map(|v| v.iter().map(|t| index(&at, t, true)).collect::<Result<Vec<_>, _>>())
            .transpose()?
            .unwrap_or_default();
        let op_outputs = list(&at, fb(&format!("{at}.outputs"), o.outputs())?)?;
        let options = fb(&format!("{at}.builtin_options"), o.builtin_options())?
            .map(|r| fb(&format!("{at}.builtin_options"), BuiltinOptions::try_from(r)))
            .transpose()?;
        ops.push(Op { code, inputs: op_inputs, outputs: op_outputs, options });
    }
    let description = fb("description", model.description())?.unwrap_or_default().to_string();
    Ok(Graph { tensors, ops, inputs, outputs, description })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_a_flatbuffer_is_an_error() {
        assert!(read(b"").unwrap_err().0.contains("TFL3"));
        assert!(read(b"\x10\0\0\0TFL3\xff\xff").is_err());
        let mut junk = vec![0xffu8; 64];
        junk[4..8].copy_from_slice(b"TFL3");
        assert!(read(&junk).is_err());
    }
}
