//! Inverted dropout: in training each unit is kept with probability `1 - rate`
//! and scaled by `1 / (1 - rate)`, so inference is the identity (as in Keras).

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Draw a mask of `0` or `1/(1-rate)` values, one per element.
pub fn make_mask(rng: &mut ChaCha8Rng, rate: f32, len: usize, mask: &mut Vec<f32>) {
    let scale = 1.0 / (1.0 - rate);
    mask.clear();
    mask.extend((0..len).map(|_| if rng.random::<f32>() >= rate { scale } else { 0.0 }));
}

/// `y = x * mask` (forward) or `dx = dy * mask` (backward): the mask is its own adjoint.
pub fn apply(mask: &[f32], x: &[f32], y: &mut [f32]) {
    y.iter_mut().zip(x).zip(mask).for_each(|((y, x), m)| *y = x * m);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn keeps_about_one_minus_rate_and_preserves_the_mean() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut mask = Vec::new();
        make_mask(&mut rng, 0.5, 100_000, &mut mask);
        let kept = mask.iter().filter(|&&m| m != 0.0).count();
        assert!((kept as f64 / 1e5 - 0.5).abs() < 0.01);
        assert!(mask.iter().all(|&m| m == 0.0 || m == 2.0));
        let mean: f64 = mask.iter().map(|&m| m as f64).sum::<f64>() / 1e5;
        assert!((mean - 1.0).abs() < 0.02);
    }

    /// With a fixed mask the layer is linear: the finite difference equals the mask entry.
    #[test]
    fn gradient_with_a_fixed_mask_matches_finite_differences() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut mask = Vec::new();
        make_mask(&mut rng, 0.3, 20, &mut mask);
        let x: Vec<f32> = (0..20).map(|i| i as f32 * 0.3 - 2.0).collect();
        let r: Vec<f32> = (0..20).map(|i| (i % 3) as f32 - 1.0).collect();
        let loss = |x: &[f32]| -> f64 {
            let mut y = vec![0.0; 20];
            apply(&mask, x, &mut y);
            y.iter().zip(&r).map(|(a, b)| (*a * *b) as f64).sum()
        };
        let mut dx = vec![0.0; 20];
        apply(&mask, &r, &mut dx);
        for i in 0..20 {
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp[i] += 1e-2;
            xm[i] -= 1e-2;
            let num = (loss(&xp) - loss(&xm)) / 2e-2;
            assert!((num - dx[i] as f64).abs() < 1e-3);
        }
    }
}
