//! int8 kernels against a plain float reference (within one quantum of
//! quantizing the reference computed on the dequantized inputs and weights),
//! and the fast kernels against the plain ones (identical bytes).

mod common;

use common::*;
use proptest::prelude::*;
use shared::kernels::int8::{self as k8, Int8Params};
use shared::kernels::{ConvGeom, PoolGeom};
use shared::model::{Int8Weights, TensorQuant};
use shared::quant;
use shared::spec::{Activation, Padding};
use suite::{reference_conv, reference_max_pool, Rng};

fn padding(same: bool) -> Padding {
    if same {
        Padding::Same
    } else {
        Padding::Valid
    }
}

struct ConvCase {
    g: ConvGeom,
    p: Int8Params,
    w: QWeights,
    x: Vec<i8>,
    in_q: TensorQuant,
    out_q: TensorQuant,
    relu: bool,
}

#[allow(clippy::too_many_arguments)]
fn conv_case(
    seed: u64,
    (h, w, c): (usize, usize, usize),
    filters: usize,
    k: usize,
    stride: usize,
    same: bool,
    relu: bool,
) -> Option<ConvCase> {
    let g = ConvGeom::new((h, w, c), filters, k, stride, padding(same))?;
    let mut rng = Rng::new(seed);
    let in_q = random_quant(&mut rng);
    let x = rng.i8s(g.input_len());
    let wf = rng.vec(g.weights_len(), -1.0, 1.0);
    let bf = rng.vec(filters, -0.5, 0.5);
    // Output scale from the float result with the real weights, so the
    // requantization range is realistic.
    let y = reference_conv(&g, &wf, &bf, &dequant(&x, in_q));
    let mut out_q = quant_for(&y);
    out_q.zero_point = (out_q.zero_point + rng.int(-3, 3)).clamp(-128, 127);
    let qw = quantize_channels(&wf, &bf, in_q, out_q);
    let act = if relu { Activation::Relu } else { Activation::None };
    let p = Int8Params::new(in_q.zero_point, out_q.zero_point, act);
    Some(ConvCase { g, p, w: qw, x, in_q, out_q, relu })
}

fn expected(y: &[f32], out_q: TensorQuant, relu: bool) -> Vec<i8> {
    y.iter().map(|&v| quant::quantize(if relu { v.max(0.0) } else { v }, out_q)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(160))]

    #[test]
    fn conv_plain_within_one_quantum_of_float(
        seed: u64, h in 1usize..10, w in 1usize..10, c in 1usize..5, filters in 1usize..7,
        k in 1usize..5, stride in 1usize..4, same: bool, relu: bool,
    ) {
        let Some(cc) = conv_case(seed, (h, w, c), filters, k, stride, same, relu) else { return Ok(()) };
        let mut out = vec![0i8; cc.g.output_len()];
        k8::conv2d(&cc.g, &cc.p, &cc.w.view(), &cc.x, &mut out);
        let y = reference_conv(&cc.g, &cc.w.real_w, &cc.w.real_b, &dequant(&cc.x, cc.in_q));
        let want = expected(&y, cc.out_q, cc.relu);
        prop_assert!(max_step_diff(&out, &want) <= 1, "{:?}\n{:?}\n{:?}", cc.g, out, want);
    }

    #[test]
    fn conv_fast_equals_plain(
        seed: u64, h in 1usize..14, w in 1usize..14, c in 1usize..9, filters in 1usize..11,
        k in 1usize..6, stride in 1usize..5, same: bool, relu: bool,
    ) {
        let Some(cc) = conv_case(seed, (h, w, c), filters, k, stride, same, relu) else { return Ok(()) };
        let mut a = vec![0i8; cc.g.output_len()];
        let mut b = vec![1i8; cc.g.output_len()];
        k8::conv2d(&cc.g, &cc.p, &cc.w.view(), &cc.x, &mut a);
        let mut scratch = vec![0u8; k8::conv2d_scratch_bytes(&cc.g)];
        k8::conv2d_fast(&cc.g, &cc.p, &cc.w.view(), &cc.x, &mut b, &mut scratch);
        prop_assert_eq!(&a, &b);
        k8::conv2d_portable(&cc.g, &cc.p, &cc.w.view(), &cc.x, &mut b);
        prop_assert_eq!(&a, &b);
    }

    #[test]
    fn dense_plain_and_fast(seed: u64, n in 1usize..300, units in 1usize..20, relu: bool) {
        let mut rng = Rng::new(seed);
        let in_q = random_quant(&mut rng);
        let x = rng.i8s(n);
        let wf = rng.vec(n * units, -0.3, 0.3);
        let bf = rng.vec(units, -1.0, 1.0);
        let xf = dequant(&x, in_q);
        let y: Vec<f32> = (0..units)
            .map(|u| (wf[u * n..][..n].iter().zip(&xf).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() + bf[u] as f64) as f32)
            .collect();
        let out_q = quant_for(&y);
        let qw = quantize_channels(&wf, &bf, in_q, out_q);
        let act = if relu { Activation::Relu } else { Activation::None };
        let p = Int8Params::new(in_q.zero_point, out_q.zero_point, act);
        let mut a = vec![0i8; units];
        let mut b = vec![0i8; units];
        k8::dense(&p, &qw.view(), &x, &mut a);
        k8::dense_fast(&p, &qw.view(), &x, &mut b);
        prop_assert_eq!(&a, &b);
        k8::dense_portable(&p, &qw.view(), &x, &mut b);
        prop_assert_eq!(&a, &b);
        let yr: Vec<f32> = (0..units)
            .map(|u| (qw.real_w[u * n..][..n].iter().zip(&xf).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() + qw.real_b[u] as f64) as f32)
            .collect();
        prop_assert!(max_step_diff(&a, &expected(&yr, out_q, relu)) <= 1);
    }

    #[test]
    fn max_pool_is_exact(seed: u64, h in 1usize..12, w in 1usize..12, c in 1usize..6, pool in 1usize..5, stride in 1usize..4) {
        let Some(g) = PoolGeom::new((h, w, c), pool, stride) else { return Ok(()) };
        let mut rng = Rng::new(seed);
        let x = rng.i8s(g.input_len());
        let mut out = vec![0i8; g.output_len()];
        k8::max_pool(&g, &x, &mut out);
        let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let want: Vec<i8> = reference_max_pool(&g, &xf).iter().map(|&v| v as i8).collect();
        prop_assert_eq!(out, want);
    }

    #[test]
    fn batch_norm_affine_with_negative_gammas(seed: u64, n in 1usize..50, c in 1usize..9) {
        let mut rng = Rng::new(seed);
        let in_q = random_quant(&mut rng);
        let x = rng.i8s(n * c);
        // gamma/sqrt(var+eps) of either sign, some exactly 0.
        let s: Vec<f32> = (0..c).map(|i| if i == 3 { 0.0 } else { rng.uniform(-3.0, 3.0) }).collect();
        let t = rng.vec(c, -1.0, 1.0);
        let xf = dequant(&x, in_q);
        let y: Vec<f32> = xf.iter().enumerate().map(|(i, &v)| v * s[i % c] + t[i % c]).collect();
        let out_q = quant_for(&y);
        // The quantizer's BN rule: weight +-127 at scale |s|/127.
        let mut wq = vec![];
        let mut ws = vec![];
        let (mut b, mut m, mut sh) = (vec![], vec![], vec![]);
        for i in 0..c {
            let scale = if s[i] != 0.0 { s[i].abs() / 127.0 } else { shared::convert::zero_channel_scale(in_q.scale, out_q.scale) };
            wq.push(if s[i] > 0.0 { 127 } else if s[i] < 0.0 { -127 } else { 0 });
            ws.push(scale);
            b.push(quant::quantize_bias(t[i], in_q.scale, scale));
            let (mm, ss) = quant::channel_multiplier(in_q.scale, scale, out_q.scale);
            m.push(mm);
            sh.push(ss);
        }
        let w = Int8Weights { weights: &wq, weight_scale: &ws, bias: &b, multiplier: &m, shift: &sh };
        let p = Int8Params::new(in_q.zero_point, out_q.zero_point, Activation::None);
        let mut out = vec![0i8; x.len()];
        k8::batch_norm(&p, &w, &x, &mut out);
        let mut inplace = x.clone();
        k8::batch_norm_in_place(&p, &w, &mut inplace);
        prop_assert_eq!(&out, &inplace);
        prop_assert!(max_step_diff(&out, &expected(&y, out_q, false)) <= 1);
    }
}

#[test]
fn relu_clamps_at_the_output_zero_point() {
    let p = Int8Params::new(0, -20, Activation::Relu);
    assert_eq!((p.act_min, p.act_max), (-20, 127));
    assert_eq!(k8::requantize(-1000, 1 << 30, 0, &p), -20);
    let p = Int8Params::new(0, -200, Activation::Relu);
    assert_eq!(p.act_min, -128);
}

#[test]
fn padding_taps_contribute_zero_whatever_the_zero_point() {
    // A 1x1 image, 3x3 same conv: only the centre tap is in the image.
    let g = ConvGeom::new((1, 1, 1), 1, 3, 1, Padding::Same).unwrap();
    let w = [1i8; 9];
    let (b, m, s, sc) = ([0i32], [1 << 30], [1], [1.0f32]);
    let wt = Int8Weights { weights: &w, weight_scale: &sc, bias: &b, multiplier: &m, shift: &s };
    let p = Int8Params::new(100, 0, Activation::None);
    let mut out = [0i8];
    k8::conv2d(&g, &p, &wt, &[110], &mut out);
    assert_eq!(out, [10]);
    k8::conv2d_fast(&g, &p, &wt, &[110], &mut out, &mut vec![0; k8::conv2d_scratch_bytes(&g)]);
    assert_eq!(out, [10]);
}
