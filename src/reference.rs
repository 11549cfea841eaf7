//! The plain float reference of the layer stack (f32 values, f64
//! accumulation), which the int8 and f16 engines are held to, and calibration
//! over it.

use shared::convert::{check_params, ConvertError, FloatLayer, Ranges};
use shared::geometry::{ConvGeom, PoolGeom};
use shared::spec::{Activation, Hw, Layer, ModelSpec, Padding, Shape};

/// The float reference forward pass (f32, f64 accumulation): every layer's
/// output, in order. Dropout is the identity. Like the engine, a Softmax
/// activation is *not* applied (the last output holds the logits), so the two
/// compare layer by layer.
pub fn float_forward(
    spec: &ModelSpec,
    params: &[FloatLayer<'_>],
    input: &[f32],
) -> Result<Vec<Vec<f32>>, ConvertError> {
    check_params(spec, params)?;
    let n = spec.input().elements() as usize;
    if input.len() != n {
        return Err(ConvertError::Input { expected: n, got: input.len() });
    }
    let mut outs: Vec<Vec<f32>> = Vec::with_capacity(params.len());
    for ((i, layer, inp, out), p) in spec.shapes().zip(params) {
        // Tensor t: the input (0) or layer t - 1's output.
        let tensor = |t: u16| -> &[f32] {
            if t == 0 {
                input
            } else {
                &outs[t as usize - 1]
            }
        };
        let reads = spec.inputs()[i];
        let x: &[f32] = tensor(reads.main);
        let y = match (*layer, *p) {
            (Layer::Conv2D(c), FloatLayer::Conv2D { weights, bias }) => {
                let g = ConvGeom::from_spec(&c, inp).ok_or(ConvertError::WrongKind { layer: i })?;
                let mut y = reference_conv(&g, weights, bias, x);
                activate(&mut y, c.activation);
                y
            }
            (Layer::Dense { activation, .. }, FloatLayer::Dense { weights, bias }) => {
                let units = out.elements() as usize;
                let mut y: Vec<f32> = (0..units)
                    .map(|u| {
                        let row = &weights[u * x.len()..][..x.len()];
                        (row.iter().zip(x).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() + bias[u] as f64) as f32
                    })
                    .collect();
                activate(&mut y, activation);
                y
            }
            (Layer::BatchNorm { epsilon, .. }, FloatLayer::BatchNorm { gamma, beta, mean, var }) => {
                let c = gamma.len();
                x.iter()
                    .enumerate()
                    .map(|(j, &v)| {
                        let ch = j % c;
                        (v - mean[ch]) / (var[ch] + epsilon).sqrt() * gamma[ch] + beta[ch]
                    })
                    .collect()
            }
            (Layer::MaxPool2D { pool, stride }, _) => {
                let g = PoolGeom::from_spec(pool, stride, inp).ok_or(ConvertError::WrongKind { layer: i })?;
                reference_max_pool(&g, x)
            }
            (Layer::AvgPool2D(p), _) => {
                let Shape::Image { h, w, c } = inp else { return Err(ConvertError::WrongKind { layer: i }) };
                let g = ConvGeom::general(
                    (h as usize, w as usize, c as usize),
                    c as usize,
                    p.pool,
                    p.stride,
                    Hw::ONE,
                    p.padding,
                )
                .ok_or(ConvertError::WrongKind { layer: i })?;
                reference_avg_pool(&g, x)
            }
            (Layer::GlobalAvgPool, _) => {
                let Shape::Image { h, w, c } = inp else { return Err(ConvertError::WrongKind { layer: i }) };
                let pool = Hw::new(h, w);
                let g = ConvGeom::general(
                    (h as usize, w as usize, c as usize),
                    c as usize,
                    pool,
                    Hw::ONE,
                    Hw::ONE,
                    Padding::Valid,
                )
                .ok_or(ConvertError::WrongKind { layer: i })?;
                reference_avg_pool(&g, x)
            }
            (Layer::Add { activation }, _) => {
                let b = tensor(reads.other.ok_or(ConvertError::WrongKind { layer: i })?);
                let mut y: Vec<f32> = x.iter().zip(b).map(|(&a, &b)| a + b).collect();
                activate(&mut y, activation);
                y
            }
            (Layer::Concat, _) => {
                let b = tensor(reads.other.ok_or(ConvertError::WrongKind { layer: i })?);
                let pixels = match inp {
                    Shape::Image { h, w, .. } => (h * w) as usize,
                    Shape::Flat(_) => 1,
                };
                let (ca, cb) = (x.len() / pixels, b.len() / pixels);
                (0..pixels)
                    .flat_map(|p| x[p * ca..(p + 1) * ca].iter().chain(&b[p * cb..(p + 1) * cb]).copied())
                    .collect()
            }
            (Layer::Activation(a), _) => {
                let mut y = x.to_vec();
                activate(&mut y, a);
                y
            }
            (Layer::Softmax, _) => {
                // Over the last axis, in f64.
                let mut y = x.to_vec();
                for row in y.chunks_mut(inp.channels() as usize) {
                    let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
                    let e: Vec<f64> = row.iter().map(|&v| (v as f64 - max).exp()).collect();
                    let s: f64 = e.iter().sum();
                    row.iter_mut().zip(&e).for_each(|(v, e)| *v = (e / s) as f32);
                }
                y
            }
            _ => x.to_vec(),
        };
        outs.push(y);
    }
    Ok(outs)
}

/// Widen `ranges` with one sample run through [`float_forward`] (calibration
/// for tests; the host calibrates with its own float network).
pub fn observe(
    ranges: &mut Ranges,
    spec: &ModelSpec,
    params: &[FloatLayer<'_>],
    input: &[f32],
) -> Result<(), ConvertError> {
    let outs = float_forward(spec, params, input)?;
    let widen = |r: &mut (f32, f32), v: &[f32]| {
        for &x in v {
            r.0 = r.0.min(x);
            r.1 = r.1.max(x);
        }
    };
    widen(&mut ranges.input, input);
    for (r, o) in ranges.layers.iter_mut().zip(&outs) {
        widen(r, o);
    }
    Ok(())
}

/// The element-wise activations (Softmax is left to the caller, as the engine does).
fn activate(y: &mut [f32], activation: Activation) {
    match activation {
        Activation::Relu => y.iter_mut().for_each(|v| *v = v.max(0.0)),
        Activation::Relu6 => y.iter_mut().for_each(|v| *v = v.clamp(0.0, 6.0)),
        Activation::Softmax | Activation::None => {}
    }
}

/// Plain float Conv2D (NHWC, OHWI), f64 accumulation, padding taps skipped:
/// tap `(ky, kx)` of output `(oy, ox)` reads input `(oy * sh + ky * dh - pad_top,
/// ox * sw + kx * dw - pad_left)`, straight from the definition.
pub fn reference_conv(g: &ConvGeom, w: &[f32], bias: &[f32], x: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0f32; g.output_len()];
    let (kh, kw) = (g.kernel_h, g.kernel_w);
    for oy in 0..g.out_h {
        for ox in 0..g.out_w {
            for oc in 0..g.out_c {
                let mut acc = bias[oc] as f64;
                for ky in 0..kh {
                    let iy = (oy * g.stride_h + ky * g.dilation_h) as isize - g.pad_top as isize;
                    if iy < 0 || iy >= g.in_h as isize {
                        continue;
                    }
                    for kx in 0..kw {
                        let ix = (ox * g.stride_w + kx * g.dilation_w) as isize - g.pad_left as isize;
                        if ix < 0 || ix >= g.in_w as isize {
                            continue;
                        }
                        // Output `oc` reads its group's input channels.
                        let (ipg, base) = (g.in_per_group(), oc / g.out_per_group() * g.in_per_group());
                        for ci in 0..ipg {
                            let wv = w[((oc * kh + ky) * kw + kx) * ipg + ci] as f64;
                            let xv = x[(iy as usize * g.in_w + ix as usize) * g.in_c + base + ci] as f64;
                            acc += wv * xv;
                        }
                    }
                }
                y[(oy * g.out_w + ox) * g.out_c + oc] = acc as f32;
            }
        }
    }
    y
}

/// Plain float average pool over `g`'s windows (kernel = pool window,
/// `in_c == out_c`): the mean of the in-image pixels, f64 sums.
pub fn reference_avg_pool(g: &ConvGeom, x: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0f32; g.output_len()];
    for oy in 0..g.out_h {
        for ox in 0..g.out_w {
            for c in 0..g.in_c {
                let (mut acc, mut count) = (0.0f64, 0u32);
                for ky in 0..g.kernel_h {
                    let iy = (oy * g.stride_h + ky) as isize - g.pad_top as isize;
                    for kx in 0..g.kernel_w {
                        let ix = (ox * g.stride_w + kx) as isize - g.pad_left as isize;
                        if iy >= 0 && iy < g.in_h as isize && ix >= 0 && ix < g.in_w as isize {
                            acc += x[(iy as usize * g.in_w + ix as usize) * g.in_c + c] as f64;
                            count += 1;
                        }
                    }
                }
                y[(oy * g.out_w + ox) * g.in_c + c] = (acc / count.max(1) as f64) as f32;
            }
        }
    }
    y
}

/// Plain float MaxPool2D (valid, clipped window).
pub fn reference_max_pool(g: &PoolGeom, x: &[f32]) -> Vec<f32> {
    let mut y = vec![f32::NEG_INFINITY; g.output_len()];
    for oy in 0..g.out_h {
        for ox in 0..g.out_w {
            for c in 0..g.channels {
                let o = &mut y[(oy * g.out_w + ox) * g.channels + c];
                for yy in oy * g.stride..(oy * g.stride + g.pool).min(g.in_h) {
                    for xx in ox * g.stride..(ox * g.stride + g.pool).min(g.in_w) {
                        *o = o.max(x[(yy * g.in_w + xx) * g.channels + c]);
                    }
                }
            }
        }
    }
    y
}
