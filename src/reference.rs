//! The plain float reference of the layer stack (f32 values, f64
//! accumulation), which the int8 and f16 engines are held to, and calibration
//! over it.

use shared::convert::{check_params, ConvertError, FloatLayer, Ranges};
use shared::geometry::{ConvGeom, PoolGeom};
use shared::spec::{Activation, Layer, ModelSpec};

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
        let x: &[f32] = if i == 0 { input } else { &outs[i - 1] };
        let y = match (*layer, *p) {
            (Layer::Conv2D(c), FloatLayer::Conv2D { weights, bias }) => {
                let g = ConvGeom::from_spec(&c, inp).ok_or(ConvertError::WrongKind { layer: i })?;
                let mut y = reference_conv(&g, weights, bias, x);
                if c.activation == Activation::Relu {
                    y.iter_mut().for_each(|v| *v = v.max(0.0));
                }
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
                match activation {
                    Activation::Relu => y.iter_mut().for_each(|v| *v = v.max(0.0)),
                    Activation::Softmax | Activation::None => {}
                }
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

/// Plain float Conv2D (NHWC, OHWI), f64 accumulation, padding taps skipped.
pub fn reference_conv(g: &ConvGeom, w: &[f32], bias: &[f32], x: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0f32; g.output_len()];
    let k = g.kernel;
    for oy in 0..g.out_h {
        for ox in 0..g.out_w {
            for oc in 0..g.out_c {
                let mut acc = bias[oc] as f64;
                for ky in 0..k {
                    let iy = (oy * g.stride + ky) as isize - g.pad_top as isize;
                    if iy < 0 || iy >= g.in_h as isize {
                        continue;
                    }
                    for kx in 0..k {
                        let ix = (ox * g.stride + kx) as isize - g.pad_left as isize;
                        if ix < 0 || ix >= g.in_w as isize {
                            continue;
                        }
                        for ci in 0..g.in_c {
                            let wv = w[((oc * k + ky) * k + kx) * g.in_c + ci] as f64;
                            let xv = x[(iy as usize * g.in_w + ix as usize) * g.in_c + ci] as f64;
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
