//! The int8 SOFTMAX and MEAN kernels (TFLite's reference arithmetic) against
//! plain f64 references written here, and the f16 softmax against f64.
//! Bit-exactness against TFLite itself is `tests/tflite_ops.rs` (the
//! interpreter's own bytes).

use half::f16;
use proptest::prelude::*;
use shared::kernels::f16 as k16;
use shared::kernels::int8 as k8;
use shared::model::TensorQuant;

fn softmax_f64(row: &[f64]) -> Vec<f64> {
    let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = row.iter().map(|v| (v - max).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

/// A row of `depth` int8 values: uniform, or bunched near one value.
fn row_strategy() -> impl Strategy<Value = Vec<i8>> {
    (1usize..300, any::<bool>(), any::<i8>(), any::<u64>()).prop_map(|(depth, bunched, centre, seed)| {
        let mut rng = suite::Rng::new(seed);
        (0..depth)
            .map(|_| {
                if bunched {
                    (centre as i32 + rng.range(0, 12) as i32 - 6).clamp(-128, 127) as i8
                } else {
                    (rng.range(0, 255) as i32 - 128) as i8
                }
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Every output within 1 LSB of `round(256 p) - 128` (clamped to 127),
    /// `p` the f64 softmax of the dequantized row.
    #[test]
    fn int8_softmax_is_within_one_step_of_f64(
        row in row_strategy(),
        scale_exp in -9.0f64..1.0,
        zp in -128i32..=127,
    ) {
        let in_q = TensorQuant { scale: 2f64.powf(scale_exp) as f32, zero_point: zp };
        let p = k8::SoftmaxParams::new(in_q, k8::SOFTMAX_OUTPUT).unwrap();
        let mut out = vec![0i8; row.len()];
        k8::softmax(&p, row.len(), &row, &mut out);
        let reals: Vec<f64> = row.iter().map(|&q| in_q.scale as f64 * (q as i32 - zp) as f64).collect();
        for (j, (prob, &got)) in softmax_f64(&reals).iter().zip(&out).enumerate() {
            let want = ((256.0 * prob).round() - 128.0).min(127.0);
            prop_assert!((want - got as f64).abs() <= 1.0, "elem {}: p {} -> {} got {}", j, prob, want, got);
        }
    }

    /// Rows of several pixels are softmaxed independently.
    #[test]
    fn int8_softmax_rows_are_independent(a in row_strategy(), b in row_strategy()) {
        let depth = a.len().min(b.len());
        let in_q = TensorQuant { scale: 0.05, zero_point: 3 };
        let p = k8::SoftmaxParams::new(in_q, k8::SOFTMAX_OUTPUT).unwrap();
        let both: Vec<i8> = a[..depth].iter().chain(&b[..depth]).copied().collect();
        let mut out = vec![0i8; 2 * depth];
        k8::softmax(&p, depth, &both, &mut out);
        let (mut oa, mut ob) = (vec![0i8; depth], vec![0i8; depth]);
        k8::softmax(&p, depth, &a[..depth], &mut oa);
        k8::softmax(&p, depth, &b[..depth], &mut ob);
        prop_assert_eq!(&out[..depth], &oa[..]);
        prop_assert_eq!(&out[depth..], &ob[..]);
    }

    /// TFLite's MEAN: within 1 LSB of quantizing the real mean of the
    /// dequantized values to the output quantization (equal or not).
    #[test]
    fn int8_mean_is_within_one_step_of_f64(
        pixels in 1usize..200,
        channels in 1usize..6,
        seed in any::<u64>(),
        in_exp in -8.0f64..0.0,
        ratio_exp in -3.0f64..3.0,
        same in any::<bool>(),
        zps in (-128i32..=127, -128i32..=127),
    ) {
        let mut rng = suite::Rng::new(seed);
        let x: Vec<i8> = (0..pixels * channels).map(|_| (rng.range(0, 255) as i32 - 128) as i8).collect();
        let in_q = TensorQuant { scale: 2f64.powf(in_exp) as f32, zero_point: zps.0 };
        let out_q = if same { in_q } else { TensorQuant { scale: (in_q.scale as f64 * 2f64.powf(ratio_exp)) as f32, zero_point: zps.1 } };
        let p = k8::MeanParams::new(in_q, out_q, pixels);
        let mut out = vec![0i8; channels];
        k8::mean(&p, &x, &mut out);
        for c in 0..channels {
            let sum: f64 = (0..pixels).map(|i| x[i * channels + c] as f64).sum();
            let real = in_q.scale as f64 * (sum / pixels as f64 - in_q.zero_point as f64);
            let want = ((real / out_q.scale as f64).round() + out_q.zero_point as f64).clamp(-128.0, 127.0);
            prop_assert!((want - out[c] as f64).abs() <= 1.0, "channel {}: want {} got {}", c, want, out[c]);
        }
    }

    /// The f16 softmax: each output the f64 softmax of the f16 inputs to within
    /// one f16 rounding (relative 2^-10, or 2^-24 absolute near 0).
    #[test]
    fn f16_softmax_is_within_one_rounding_of_f64(depth in 1usize..200, seed in any::<u64>(), spread in 0.1f32..40.0) {
        let mut rng = suite::Rng::new(seed);
        let x: Vec<f16> = (0..depth).map(|_| f16::from_f32((rng.unit() * 2.0 - 1.0) * spread)).collect();
        let mut out = vec![f16::ZERO; depth];
        k16::softmax(depth, &x, &mut out);
        let reals: Vec<f64> = x.iter().map(|v| v.to_f64()).collect();
        for (j, (p, got)) in softmax_f64(&reals).iter().zip(&out).enumerate() {
            let err = (got.to_f64() - p).abs();
            prop_assert!(err <= p * 2f64.powi(-10) + 2f64.powi(-24), "elem {}: {} vs {}", j, got, p);
        }
    }
}

#[test]
fn exp_nonpositive_is_close_to_f64_exp() {
    let mut worst = 0.0f64;
    for i in 0..=200_000 {
        let d = -87.0f32 * i as f32 / 200_000.0;
        let got = k16::exp_nonpositive(d) as f64;
        let want = (d as f64).exp();
        worst = worst.max(((got - want) / want).abs());
    }
    assert!(worst < 4e-7, "relative error {worst}");
    assert_eq!(k16::exp_nonpositive(0.0), 1.0);
    assert_eq!(k16::exp_nonpositive(-100.0), 0.0);
    assert!(k16::exp_nonpositive(f32::NAN).is_nan());
}

#[test]
fn softmax_refuses_other_output_quantizations() {
    let in_q = TensorQuant { scale: 0.1, zero_point: 0 };
    for out in [TensorQuant { scale: 1.0 / 256.0, zero_point: 0 }, TensorQuant { scale: 1.0 / 255.0, zero_point: -128 }]
    {
        assert_eq!(k8::SoftmaxParams::new(in_q, out), Err(k8::SoftmaxQuantError::Output));
    }
    let tiny = TensorQuant { scale: 1e-9, zero_point: 0 };
    assert_eq!(k8::SoftmaxParams::new(tiny, k8::SOFTMAX_OUTPUT), Err(k8::SoftmaxQuantError::InputScale));
}

/// Hundreds of equal values sum to 256 or more, where TFLite's reference
/// kernel aborts: every output is then below 1/256, so -128, and no panic.
#[test]
fn softmax_of_many_equal_values_is_all_minus_128() {
    let p = k8::SoftmaxParams::new(TensorQuant { scale: 0.1, zero_point: 0 }, k8::SOFTMAX_OUTPUT).unwrap();
    let x = vec![5i8; 1000];
    let mut out = vec![0i8; 1000];
    k8::softmax(&p, 1000, &x, &mut out);
    assert!(out.iter().all(|&v| v == -128));
    // 200 equal values: p = 1/200, 256 p = 1.28.
    let mut out = vec![0i8; 200];
    k8::softmax(&p, 200, &x[..200], &mut out);
    assert!(out.iter().all(|&v| v == -127), "{out:?}");
}
