//! Keras's default initialisers, reproducible from one seed.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The generator for layer `index`: one ChaCha stream per layer, so that the
/// weights of a layer do not change when another layer's size does.
pub fn layer_rng(seed: u64, index: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index as u64);
    rng
}

/// `GlorotUniform`: uniform in `[-l, l]` with `l = sqrt(6 / (fan_in + fan_out))`.
pub fn glorot_uniform(rng: &mut ChaCha8Rng, fan_in: usize, fan_out: usize, n: usize) -> Vec<f32> {
    let limit = (6.0 / (fan_in + fan_out).max(1) as f64).sqrt() as f32;
    (0..n).map(|_| rng.random_range(-limit..=limit)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glorot_is_bounded_deterministic_and_spread() {
        let a = glorot_uniform(&mut layer_rng(7, 0), 363, 1056, 10_000);
        let b = glorot_uniform(&mut layer_rng(7, 0), 363, 1056, 10_000);
        let c = glorot_uniform(&mut layer_rng(7, 1), 363, 1056, 10_000);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let limit = (6.0f32 / 1419.0).sqrt();
        assert!(a.iter().all(|v| v.abs() <= limit));
        let var: f32 = a.iter().map(|v| v * v).sum::<f32>() / a.len() as f32;
        assert!((var - limit * limit / 3.0).abs() < 0.05 * limit * limit);
    }
}
