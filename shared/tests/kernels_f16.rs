//! f16 kernels against an f64 reference on the same f16 inputs and weights.
//!
//! Tolerance: the kernel rounds once to f16 (<= 2^-11 relative) after an f32
//! accumulation whose error is at most K * 2^-24 * sum|w * x|; we allow
//! `2^-11 * |ref| + 2^-18 * sum|w * x| + 2^-24` per output.

mod common;

use proptest::prelude::*;
use shared::f16;
use shared::kernels::f16 as k16;
use shared::kernels::{ConvGeom, PoolGeom};
use shared::model::F16Weights;
use shared::spec::Padding;
use suite::Rng;
use suite::{reference_conv, reference_max_pool};

fn halves(v: &[f32]) -> Vec<f16> {
    v.iter().map(|&x| f16::from_f32(x)).collect()
}
fn floats(v: &[f16]) -> Vec<f32> {
    v.iter().map(|x| x.to_f32()).collect()
}

fn within(got: f32, want: f32, abs_sum: f32) -> bool {
    (got - want).abs() <= want.abs() / 2048.0 + abs_sum / 262_144.0 + 6e-8
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(120))]

    #[test]
    fn conv_within_tolerance(
        seed: u64, h in 1usize..10, w in 1usize..10, c in 1usize..6, filters in 1usize..6,
        k in 1usize..5, stride in 1usize..4, same: bool, relu: bool,
    ) {
        let pad = if same { Padding::Same } else { Padding::Valid };
        let Some(g) = ConvGeom::new((h, w, c), filters, k, stride, pad) else { return Ok(()) };
        let mut rng = Rng::new(seed);
        let x = halves(&rng.vec(g.input_len(), -4.0, 4.0));
        let wt = halves(&rng.vec(g.weights_len(), -1.0, 1.0));
        let b = halves(&rng.vec(filters, -1.0, 1.0));
        let mut out = vec![f16::ZERO; g.output_len()];
        k16::conv2d(&g, relu, &F16Weights { weights: &wt, bias: &b }, &x, &mut out);
        let xf = floats(&x);
        let wf = floats(&wt);
        let want = reference_conv(&g, &wf, &floats(&b), &xf);
        let wabs: Vec<f32> = wf.iter().map(|v| v.abs()).collect();
        let xabs: Vec<f32> = xf.iter().map(|v| v.abs()).collect();
        let sums = reference_conv(&g, &wabs, &vec![0.0; filters], &xabs);
        for i in 0..out.len() {
            let r = if relu { want[i].max(0.0) } else { want[i] };
            prop_assert!(within(out[i].to_f32(), r, sums[i] + b[i % filters].to_f32().abs()), "{i}: {} vs {r}", out[i]);
        }
    }

    #[test]
    fn dense_within_tolerance(seed: u64, n in 1usize..400, units in 1usize..12, relu: bool) {
        let mut rng = Rng::new(seed);
        let x = halves(&rng.vec(n, -2.0, 2.0));
        let wt = halves(&rng.vec(n * units, -0.5, 0.5));
        let b = halves(&rng.vec(units, -1.0, 1.0));
        let mut out = vec![f16::ZERO; units];
        k16::dense(relu, &F16Weights { weights: &wt, bias: &b }, &x, &mut out);
        for u in 0..units {
            let row = &wt[u * n..][..n];
            let r: f64 = row.iter().zip(&x).map(|(a, b)| a.to_f64() * b.to_f64()).sum::<f64>() + b[u].to_f64();
            let s: f64 = row.iter().zip(&x).map(|(a, b)| (a.to_f64() * b.to_f64()).abs()).sum::<f64>() + b[u].to_f64().abs();
            let r = if relu { r.max(0.0) } else { r } as f32;
            prop_assert!(within(out[u].to_f32(), r, s as f32));
        }
    }

    #[test]
    fn max_pool_is_exact(seed: u64, h in 1usize..10, w in 1usize..10, c in 1usize..5, pool in 1usize..4, stride in 1usize..4) {
        let Some(g) = PoolGeom::new((h, w, c), pool, stride) else { return Ok(()) };
        let mut rng = Rng::new(seed);
        let x = halves(&rng.vec(g.input_len(), -10.0, 10.0));
        let mut out = vec![f16::ZERO; g.output_len()];
        k16::max_pool(&g, &x, &mut out);
        prop_assert_eq!(floats(&out), reference_max_pool(&g, &floats(&x)));
    }

    #[test]
    fn batch_norm_rounds_once(seed: u64, n in 1usize..40, c in 1usize..8) {
        let mut rng = Rng::new(seed);
        let x = halves(&rng.vec(n * c, -5.0, 5.0));
        let s = halves(&rng.vec(c, -3.0, 3.0)); // negative scales included
        let t = halves(&rng.vec(c, -1.0, 1.0));
        let w = F16Weights { weights: &s, bias: &t };
        let mut out = vec![f16::ZERO; x.len()];
        k16::batch_norm(&w, &x, &mut out);
        let mut inplace = x.clone();
        k16::batch_norm_in_place(&w, &mut inplace);
        prop_assert_eq!(&out, &inplace);
        for i in 0..x.len() {
            // The documented rule, written out: f32 product (exact), f32 sum, one f16 rounding.
            let prod = x[i].to_f32() * s[i % c].to_f32();
            prop_assert_eq!(out[i], f16::from_f32(prod + t[i % c].to_f32()));
        }
    }
}
