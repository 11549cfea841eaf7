//! Helpers shared by the kernel and engine tests: int8 quantization of test
//! data (drawn from `suite::Rng`; proptest picks the shapes and the seed).
#![allow(dead_code)]

use shared::model::TensorQuant;
use shared::quant;
use suite::Rng;

/// A random activation quantization: scale in [0.005, 0.1), any zero point.
pub fn random_quant(rng: &mut Rng) -> TensorQuant {
    TensorQuant { scale: rng.uniform(0.005, 0.1), zero_point: rng.int(-128, 127) }
}

pub fn dequant(v: &[i8], q: TensorQuant) -> Vec<f32> {
    v.iter().map(|&x| quant::dequantize(x, q)).collect()
}

/// Per-channel symmetric int8 weights for float weights `w` split into `channels` rows.
pub struct QWeights {
    pub weights: Vec<i8>,
    pub scales: Vec<f32>,
    pub bias: Vec<i32>,
    pub multiplier: Vec<i32>,
    pub shift: Vec<i32>,
    /// The dequantized weights and bias: what the int8 kernel really computes with.
    pub real_w: Vec<f32>,
    pub real_b: Vec<f32>,
}

pub fn quantize_channels(w: &[f32], b: &[f32], in_q: TensorQuant, out_q: TensorQuant) -> QWeights {
    let per = w.len() / b.len();
    let mut q = QWeights {
        weights: vec![],
        scales: vec![],
        bias: vec![],
        multiplier: vec![],
        shift: vec![],
        real_w: vec![],
        real_b: vec![],
    };
    for (wc, &bc) in w.chunks_exact(per).zip(b) {
        let s = quant::symmetric_scale(wc);
        for &v in wc {
            let qv = quant::quantize_weight(v, s);
            q.weights.push(qv);
            q.real_w.push(qv as f32 * s);
        }
        let bq = quant::quantize_bias(bc, in_q.scale, s);
        q.bias.push(bq);
        q.real_b.push((bq as f64 * in_q.scale as f64 * s as f64) as f32);
        let (m, sh) = quant::channel_multiplier(in_q.scale, s, out_q.scale);
        q.multiplier.push(m);
        q.shift.push(sh);
        q.scales.push(s);
    }
    q
}

impl QWeights {
    pub fn view(&self) -> shared::model::Int8Weights<'_> {
        shared::model::Int8Weights {
            weights: &self.weights,
            weight_scale: &self.scales,
            bias: &self.bias,
            multiplier: &self.multiplier,
            shift: &self.shift,
        }
    }
}

/// An output quantization covering `v` (widened to contain 0).
pub fn quant_for(v: &[f32]) -> TensorQuant {
    let lo = v.iter().cloned().fold(0.0f32, f32::min);
    let hi = v.iter().cloned().fold(0.0f32, f32::max);
    quant::choose_quant(lo, hi)
}

/// Largest |a - b| in int8 steps.
pub fn max_step_diff(a: &[i8], b: &[i8]) -> i32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(&x, &y)| (x as i32 - y as i32).abs()).max().unwrap_or(0)
}
