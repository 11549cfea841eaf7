//! Batch normalization as a trained network has it, for the float benches.
//!
//! `Network::new` starts every BatchNormalization as the identity (moving
//! mean 0, variance 1, scale 1, offset 0). In AlexNet each one follows a
//! ReLU, so the identity keeps the ReLU's zeros all the way into FC6, and the
//! dense kernels skip the rows of zero inputs: an untrained network would
//! flatter FC6. After training the statistics move every zero to some
//! channel's own constant. These are the values the peers' ONNX export gives
//! its model (`benches/peers/peers.py`), so both sides run the same kind of
//! network.
use host::nn::{ChaCha8Rng, Network};
use rand::{Rng, SeedableRng};
use std::collections::HashMap;

/// Give every BatchNormalization of `net` random trained-like state.
pub fn trained_batchnorm(net: &mut Network, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // `tensors` lists them in the network's order, so the draws are reproducible.
    let mut tensors = net.tensors();
    for (name, t) in &mut tensors {
        let range = match name.rsplit('/').next() {
            Some("moving_mean") => -0.5..0.5,
            Some("moving_variance") => 0.5..2.0,
            Some("gamma") => 0.5..1.5,
            Some("beta") => -0.2..0.2,
            _ => continue,
        };
        t.iter_mut().for_each(|v| *v = rng.random_range(range.clone()));
    }
    let tensors: HashMap<_, _> = tensors.into_iter().collect();
    net.load_tensors(&tensors).expect("the network's own tensors load back");
}
