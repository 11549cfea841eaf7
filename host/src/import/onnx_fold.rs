//! Constant folding of the small shape subgraphs exporters write: PyTorch's
//! `ZeroPad2d` becomes a `Pad` whose pads come from ConstantOfShape, Concat,
//! Reshape, Slice (step -1), Transpose and Cast nodes over constants. A node
//! of those kinds whose inputs are all constants is evaluated here, so the
//! layer chain sees its output as one more constant. Everything is checked:
//! a bad shape or index is an error naming the node, never a panic, and no
//! result larger than [`MAX_FOLDED`] values is built.

use super::tensors::Tensor;
use tract_onnx::pb::NodeProto;

/// The node kinds folded when all their inputs are constants.
pub const FOLDABLE: &[&str] = &["ConstantOfShape", "Concat", "Reshape", "Slice", "Transpose", "Cast"];

/// Most values a folded tensor may have: shape arithmetic, not weights.
pub const MAX_FOLDED: usize = 1 << 16;

/// The output of `n` (one of [`FOLDABLE`]) on the constant `inputs` (its
/// non-empty inputs in order), or why not.
pub fn fold(n: &NodeProto, inputs: &[&Tensor]) -> Result<Tensor, String> {
    let ints = |t: &Tensor| -> Vec<i64> { t.data.iter().map(|&v| v as i64).collect() };
    let attr_i = |k: &str| n.attribute.iter().find(|a| a.name == k).map(|a| a.i);
    let attr_ints = |k: &str| n.attribute.iter().find(|a| a.name == k).map(|a| a.ints.clone());
    let first = inputs.first().ok_or("no input")?;
    let (shape, data) = match n.op_type.as_str() {
        "ConstantOfShape" => {
            let dims: Vec<usize> = ints(first)
                .into_iter()
                .map(|d| usize::try_from(d).map_err(|_| format!("dimension {d}")))
                .collect::<Result<_, _>>()?;
            let len = checked_len(&dims)?;
            let value = n
                .attribute
                .iter()
                .find(|a| a.name == "value")
                .and_then(|a| a.t.as_ref())
                .map(scalar_value)
                .transpose()?
                .unwrap_or(0.0);
            (dims, vec![value; len])
        }
        "Cast" => {
            // Every folded value is a small whole number or a float kept as f32;
            // a cast to an integer type truncates.
            let to_int = attr_i("to").is_some_and(|t| matches!(t, 2..=7 | 12 | 13));
            let data = first.data.iter().map(|&v| if to_int { v.trunc() } else { v }).collect();
            (first.shape.clone(), data)
        }
        "Reshape" => {
            let target = ints(inputs.get(1).ok_or("no shape input")?);
            let mut dims = Vec::with_capacity(target.len());
            let mut infer = None;
            for (k, &d) in target.iter().enumerate() {
                match d {
                    0 => dims.push(*first.shape.get(k).ok_or("a 0 dimension past the input's rank")?),
                    -1 if infer.is_none() => {
                        infer = Some(k);
                        dims.push(1);
                    }
                    d if d > 0 => dims.push(usize::try_from(d).map_err(|_| format!("dimension {d}"))?),
                    d => return Err(format!("dimension {d}")),
                }
            }
            let known = checked_len(&dims)?;
            if let Some(k) = infer {
                if known == 0 || first.data.len() % known != 0 {
                    return Err(format!("cannot infer -1 in {target:?} for {} values", first.data.len()));
                }
                dims[k] = first.data.len() / known;
            }
            if checked_len(&dims)? != first.data.len() {
                return Err(format!("shape {target:?} does not hold {} values", first.data.len()));
            }
            (dims, first.data.clone())
        }
        "Transpose" => {
            let rank = first.shape.len();
            let perm: Vec<usize> = attr_ints("perm")
                .map(|p| p.into_iter().map(|v| v as usize).collect())
                .unwrap_or_else(|| (0..rank).rev().collect());
            let mut seen = vec![false; rank];
            for &p in &perm {
                if p >= rank || std::mem::replace(&mut seen[p], true) {
                    return Err(format!("perm {perm:?} is not a permutation of {rank} axes"));
                }
            }
            if perm.len() != rank {
                return Err(format!("perm {perm:?} is not a permutation of {rank} axes"));
            }
            let dims: Vec<usize> = perm.iter().map(|&p| first.shape[p]).collect();
            let strides = strides(&first.shape);
            let data = each_index(&dims).map(|idx| {
                let at: usize = idx.iter().zip(&perm).map(|(&i, &p)| i * strides[p]).sum();
                first.data[at]
            });
            (dims.clone(), data.collect())
        }
        "Concat" => {
            let rank = first.shape.len();
            let axis = normalise_axis(attr_i("axis").unwrap_or(0), rank)?;
            let mut dims = first.shape.clone();
            dims[axis] = 0;
            for t in inputs {
                let same = t.shape.len() == rank && (0..rank).all(|k| k == axis || t.shape[k] == first.shape[k]);
                if !same {
                    return Err(format!(
                        "shapes {:?} and {:?} do not concatenate on axis {axis}",
                        first.shape, t.shape
                    ));
                }
                dims[axis] += t.shape[axis];
            }
            checked_len(&dims)?;
            let outer: usize = dims[..axis].iter().product();
            let mut data = Vec::new();
            for o in 0..outer {
                for t in inputs {
                    let chunk: usize = t.shape[axis..].iter().product();
                    data.extend_from_slice(&t.data[o * chunk..(o + 1) * chunk]);
                }
            }
            (dims, data)
        }
        "Slice" => {
            let rank = first.shape.len();
            let starts = ints(inputs.get(1).ok_or("no starts")?);
            let ends = ints(inputs.get(2).ok_or("no ends")?);
            let axes = inputs.get(3).map(|t| ints(t)).unwrap_or_else(|| (0..starts.len() as i64).collect());
            let steps = inputs.get(4).map(|t| ints(t)).unwrap_or_else(|| vec![1; starts.len()]);
            if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
                return Err("starts, ends, axes and steps differ in length".into());
            }
            // Per axis, the input indices kept, in order.
            let mut keep: Vec<Vec<usize>> = first.shape.iter().map(|&d| (0..d).collect()).collect();
            for k in 0..starts.len() {
                let axis = normalise_axis(axes[k], rank)?;
                let d = first.shape[axis] as i64;
                let step = steps[k];
                if step == 0 {
                    return Err("a step of 0".into());
                }
                let clampi = |v: i64, lo: i64, hi: i64| v.clamp(lo, hi);
                let norm = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
                let mut out = Vec::new();
                if step > 0 {
                    let (mut i, end) = (clampi(norm(starts[k]), 0, d), clampi(norm(ends[k]), 0, d));
                    while i < end {
                        out.push(i as usize);
                        i += step;
                    }
                } else {
                    let (mut i, end) = (clampi(norm(starts[k]), -1, d - 1), clampi(norm(ends[k]), -1, d - 1));
                    while i > end {
                        out.push(i as usize);
                        i += step;
                    }
                }
                keep[axis] = out;
            }
            let dims: Vec<usize> = keep.iter().map(Vec::len).collect();
            let strides = strides(&first.shape);
            let data = each_index(&dims).map(|idx| {
                let at: usize = idx.iter().enumerate().map(|(a, &i)| keep[a][i] * strides[a]).sum();
                first.data[at]
            });
            (dims.clone(), data.collect())
        }
        other => return Err(format!("{other} is not folded")),
    };
    if data.len() > MAX_FOLDED {
        return Err(format!("{} values are more than {MAX_FOLDED} for a shape computation", data.len()));
    }
    let out = n.output.first().cloned().unwrap_or_default();
    Ok(Tensor { location: format!("folded {out:?}"), shape, data })
}

/// The one value of ConstantOfShape's `value` tensor (float or int64, inline or raw).
fn scalar_value(t: &tract_onnx::pb::TensorProto) -> Result<f32, String> {
    if let Some(&v) = t.float_data.first() {
        return Ok(v);
    }
    if let Some(&v) = t.int64_data.first() {
        return Ok(v as f32);
    }
    match (t.data_type, t.raw_data.as_slice()) {
        (1, [a, b, c, d]) => Ok(f32::from_le_bytes([*a, *b, *c, *d])),
        (7, raw) if raw.len() == 8 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(raw);
            Ok(i64::from_le_bytes(b) as f32)
        }
        (_, []) => Ok(0.0),
        (dt, raw) => Err(format!("a value of data type {dt} in {} bytes", raw.len())),
    }
}

/// Element count of `dims`, refusing overflow and anything over [`MAX_FOLDED`].
fn checked_len(dims: &[usize]) -> Result<usize, String> {
    let n = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or("the size overflows")?;
    if n > MAX_FOLDED {
        return Err(format!("{n} values are more than {MAX_FOLDED} for a shape computation"));
    }
    Ok(n)
}

fn normalise_axis(axis: i64, rank: usize) -> Result<usize, String> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    usize::try_from(a).ok().filter(|&a| a < rank).ok_or(format!("axis {axis} of a rank-{rank} tensor"))
}

/// Row-major strides of `dims`.
fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for k in (0..dims.len().saturating_sub(1)).rev() {
        s[k] = s[k + 1] * dims[k + 1];
    }
    s
}

/// Every index of `dims` in row-major order.
fn each_index(dims: &[usize]) -> impl Iterator<Item = Vec<usize>> + '_ {
    let total: usize = dims.iter().product();
    (0..total).map(move |mut flat| {
        let mut idx = vec![0; dims.len()];
        for k in (0..dims.len()).rev() {
            idx[k] = flat % dims[k];
            flat /= dims[k];
        }
        idx
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: &[usize], data: &[f32]) -> Tensor {
        Tensor { location: "t".into(), shape: shape.to_vec(), data: data.to_vec() }
    }

    fn node(op: &str) -> NodeProto {
        NodeProto { op_type: op.into(), output: vec!["y".into()], ..Default::default() }
    }

    #[test]
    fn pytorch_zero_pad_subgraph_folds_to_onnx_pads() {
        // ZeroPad2d((1, 0, 2, 1)) as PyTorch 2 exports it: [l, r, t, b] padded to 8 values,
        // reshaped to pairs, reversed, transposed, flattened.
        let pads = t(&[4], &[1.0, 0.0, 2.0, 1.0]);
        let zeros = fold(&node("ConstantOfShape"), &[&t(&[1], &[4.0])]).unwrap();
        let mut concat = node("Concat");
        concat.attribute.push(tract_onnx::pb::AttributeProto { name: "axis".into(), i: 0, ..Default::default() });
        let all = fold(&concat, &[&pads, &zeros]).unwrap();
        let pairs = fold(&node("Reshape"), &[&all, &t(&[2], &[-1.0, 2.0])]).unwrap();
        let rev =
            fold(&node("Slice"), &[&pairs, &t(&[1], &[-1.0]), &t(&[1], &[-9.0]), &t(&[1], &[0.0]), &t(&[1], &[-1.0])])
                .unwrap();
        let tr = fold(&node("Transpose"), &[&rev]).unwrap();
        let flat = fold(&node("Reshape"), &[&tr, &t(&[1], &[-1.0])]).unwrap();
        // ONNX pads: [n, c, h, w] begins, then ends.
        assert_eq!(flat.data, [0.0, 0.0, 2.0, 1.0, 0.0, 0.0, 1.0, 0.0]);
    }

    #[test]
    fn bad_shapes_are_errors_not_panics() {
        assert!(fold(&node("Reshape"), &[&t(&[4], &[0.0; 4]), &t(&[1], &[3.0])]).is_err());
        assert!(fold(&node("ConstantOfShape"), &[&t(&[2], &[1e9, 1e9])]).is_err());
        assert!(fold(&node("Slice"), &[&t(&[2], &[1.0, 2.0]), &t(&[1], &[0.0]), &t(&[1], &[2.0]), &t(&[1], &[5.0])])
            .is_err());
    }
}
