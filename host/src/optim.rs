//! Optimizers over a [`Network`]'s stored gradients, and learning-rate schedules.
//!
//! The update loops are fused (one pass reads parameter, gradient and state and
//! writes them back) and split across rayon in fixed chunks: on AlexNet's 62M
//! parameters the optimizer is mostly a memory-bandwidth cost, paid every step.

use crate::nn::wide::vectorized;
use crate::nn::{Network, NnError};
use ndarray::{ArrayD, IxDyn};
use rayon::prelude::*;
use std::collections::HashMap;

/// Elements per parallel chunk of the update loops.
const CHUNK: usize = 1 << 15;

vectorized! {
    /// Adam's update of one chunk, 16 wide where the CPU has AVX-512: the
    /// generic build's loop ran 4 wide, its square roots and divisions
    /// then costing more than the memory traffic. Each element's
    /// operations are the same, rounded alike (`sqrt` and `/` are exact to
    /// the last bit at any width).
    #[allow(clippy::too_many_arguments)]
    fn adam_chunk(w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], alpha: f32, beta1: f32, beta2: f32, epsilon: f32) {
        for (((w, &g), m), v) in w.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            *m += (g - *m) * (1.0 - beta1);
            *v += (g * g - *v) * (1.0 - beta2);
            *w -= alpha * *m / (v.sqrt() + epsilon);
        }
    }
}

/// Which update rule, with its hyperparameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OptimizerKind {
    /// Keras's Adam: `epsilon` is added to `sqrt(v)` and the bias correction is
    /// folded into the step size, exactly as `keras.optimizers.Adam` does.
    Adam { lr: f32, beta1: f32, beta2: f32, epsilon: f32 },
    /// SGD with momentum and L2 weight decay as in the AlexNet paper:
    /// `v = momentum * v - lr * (g + weight_decay * w); w += v`.
    Sgd { lr: f32, momentum: f32, weight_decay: f32 },
}

impl OptimizerKind {
    /// Keras's Adam defaults: lr 1e-3, betas 0.9 / 0.999, epsilon 1e-7.
    pub fn adam() -> Self {
        OptimizerKind::Adam { lr: 1e-3, beta1: 0.9, beta2: 0.999, epsilon: 1e-7 }
    }
    /// The AlexNet paper's SGD: lr 0.01, momentum 0.9, weight decay 5e-4.
    pub fn sgd() -> Self {
        OptimizerKind::Sgd { lr: 0.01, momentum: 0.9, weight_decay: 5e-4 }
    }
    fn name(&self) -> &'static str {
        match self {
            OptimizerKind::Adam { .. } => "adam",
            OptimizerKind::Sgd { .. } => "sgd",
        }
    }
}

/// What every name of [`Optimizer::state_tensors`] starts with: how a
/// checkpoint's reader tells the optimizer's state from the network's.
pub const OPTIMIZER_PREFIX: &str = "optimizer/";

/// An optimizer with its per-parameter state (Adam's m and v, SGD's velocity).
#[derive(Clone, Debug)]
pub struct Optimizer {
    kind: OptimizerKind,
    iterations: u64,
    /// Per parameter, by name: Adam `[m, v]`, SGD `[velocity]`; created on the first step.
    slots: Vec<(String, Vec<Vec<f32>>)>,
}

impl Optimizer {
    /// A fresh optimizer (state is created on the first [`Optimizer::step`]).
    pub fn new(kind: OptimizerKind) -> Self {
        Optimizer { kind, iterations: 0, slots: Vec::new() }
    }

    /// The rule and hyperparameters, with the current learning rate.
    pub fn kind(&self) -> OptimizerKind {
        self.kind
    }

    /// Steps taken so far.
    pub fn iterations(&self) -> u64 {
        self.iterations
    }

    /// The current learning rate.
    pub fn lr(&self) -> f32 {
        match self.kind {
            OptimizerKind::Adam { lr, .. } | OptimizerKind::Sgd { lr, .. } => lr,
        }
    }

    /// Change the learning rate (schedules); the other state is kept.
    pub fn set_lr(&mut self, new: f32) {
        match &mut self.kind {
            OptimizerKind::Adam { lr, .. } | OptimizerKind::Sgd { lr, .. } => *lr = new,
        }
    }

    fn slots_per_param(&self) -> usize {
        match self.kind {
            OptimizerKind::Adam { .. } => 2,
            OptimizerKind::Sgd { .. } => 1,
        }
    }

    /// Apply one update from the gradients stored by [`Network::backward`].
    /// BatchNormalization's moving statistics are state, not parameters, and are untouched.
    pub fn step(&mut self, net: &mut Network) {
        let mut params = net.params_mut();
        let per = self.slots_per_param();
        let fits = self.slots.len() == params.len()
            && self
                .slots
                .iter()
                .zip(&params)
                .all(|((n, s), p)| *n == p.name && s.iter().all(|v| v.len() == p.value.len()));
        if !fits {
            self.slots = params.iter().map(|p| (p.name.clone(), vec![vec![0.0; p.value.len()]; per])).collect();
        }
        self.iterations += 1;
        match self.kind {
            OptimizerKind::Adam { lr, beta1, beta2, epsilon } => {
                let t = self.iterations as f64;
                let alpha = (lr as f64 * (1.0 - (beta2 as f64).powf(t)).sqrt() / (1.0 - (beta1 as f64).powf(t))) as f32;
                for (p, (_, s)) in params.iter_mut().zip(&mut self.slots) {
                    let [m, v] = &mut s[..] else { unreachable!("adam keeps two slots") };
                    p.value
                        .par_chunks_mut(CHUNK)
                        .zip(p.grad.par_chunks(CHUNK))
                        .zip(m.par_chunks_mut(CHUNK))
                        .zip(v.par_chunks_mut(CHUNK))
                        .for_each(|(((w, g), m), v)| adam_chunk(w, g, m, v, alpha, beta1, beta2, epsilon));
                }
            }
            OptimizerKind::Sgd { lr, momentum, weight_decay } => {
                for (p, (_, s)) in params.iter_mut().zip(&mut self.slots) {
                    let vel = &mut s[0];
                    p.value
                        .par_chunks_mut(CHUNK)
                        .zip(p.grad.par_chunks(CHUNK))
                        .zip(vel.par_chunks_mut(CHUNK))
                        .for_each(|((w, g), v)| {
                            for i in 0..w.len() {
                                v[i] = momentum * v[i] - lr * (g[i] + weight_decay * w[i]);
                                w[i] += v[i];
                            }
                        });
                }
            }
        }
    }

    fn slot_names(&self) -> &'static [&'static str] {
        match self.kind {
            OptimizerKind::Adam { .. } => &["m", "v"],
            OptimizerKind::Sgd { .. } => &["velocity"],
        }
    }

    /// Everything needed to resume exactly, every name under [`OPTIMIZER_PREFIX`]: `optimizer/iterations`, `optimizer/learning_rate`
    /// (scalars) and `optimizer/<slot>/<param name>` for each slot (`m`, `v` or `velocity`).
    pub fn state_tensors(&self) -> Vec<(String, ArrayD<f32>)> {
        let scalar = |v: f32| ArrayD::from_elem(IxDyn(&[]), v);
        // The step count as two exactly representable 24-bit halves: an f32 alone
        // would round counts above 2^24.
        let it = self.iterations;
        let mut out = vec![
            (
                "optimizer/iterations".to_string(),
                ArrayD::from_shape_vec(IxDyn(&[2]), vec![(it >> 24) as f32, (it & 0xff_ffff) as f32])
                    .expect("2 values"),
            ),
            ("optimizer/learning_rate".to_string(), scalar(self.lr())),
        ];
        for (name, slots) in &self.slots {
            for (slot, data) in self.slot_names().iter().zip(slots) {
                out.push((
                    format!("optimizer/{slot}/{name}"),
                    ArrayD::from_shape_vec(IxDyn(&[data.len()]), data.clone()).expect("flat"),
                ));
            }
        }
        out
    }

    /// Restore [`Optimizer::state_tensors`] for `net`'s parameters. A state without
    /// slots (saved before the first step) is accepted; partial slots are an error.
    pub fn load_state(&mut self, net: &Network, tensors: &HashMap<String, ArrayD<f32>>) -> Result<(), NnError> {
        let get = |name: &str| tensors.get(name).ok_or_else(|| NnError::Missing { name: name.to_string() });
        let it = get("optimizer/iterations")?;
        if it.len() != 2 {
            return Err(NnError::Shape {
                name: "optimizer/iterations".into(),
                expected: vec![2],
                got: it.shape().to_vec(),
            });
        }
        let v: Vec<f32> = it.iter().copied().collect();
        let (hi, lo) = (v[0], v[1]);
        if !(hi >= 0.0 && lo >= 0.0 && hi.fract() == 0.0 && lo.fract() == 0.0 && lo < 16_777_216.0) {
            return Err(NnError::NonFinite { name: "optimizer/iterations".into() });
        }
        let iterations = ((hi as u64) << 24) | lo as u64;
        let lr = get("optimizer/learning_rate")?;
        let lr = lr
            .iter()
            .copied()
            .next()
            .filter(|v| v.is_finite())
            .ok_or_else(|| NnError::NonFinite { name: "optimizer/learning_rate".into() })?;
        let names = self.slot_names();
        let params = net.params();
        let any =
            params.iter().any(|p| names.iter().any(|s| tensors.contains_key(&format!("optimizer/{s}/{}", p.name))));
        let mut slots = Vec::new();
        if any {
            for p in &params {
                let mut ps = Vec::new();
                for s in names {
                    let key = format!("optimizer/{s}/{}", p.name);
                    let t = get(&key)?;
                    if t.len() != p.value.len() {
                        return Err(NnError::Shape {
                            name: key,
                            expected: vec![p.value.len()],
                            got: t.shape().to_vec(),
                        });
                    }
                    ps.push(t.iter().copied().collect());
                }
                slots.push((p.name.clone(), ps));
            }
        }
        self.iterations = iterations;
        self.slots = slots;
        self.set_lr(lr);
        Ok(())
    }

    /// A short name for logs: `adam` or `sgd`.
    pub fn name(&self) -> &'static str {
        self.kind.name()
    }
}

/// How the learning rate changes between epochs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LrSchedule {
    /// Never changes.
    Constant,
    /// Multiply by `factor` every `every` epochs.
    Step { every: usize, factor: f32 },
    /// Keras's `ReduceLROnPlateau`: multiply by `factor` when the validation loss has
    /// not improved for `patience` epochs, never below `min_lr`.
    Plateau { patience: usize, factor: f32, min_lr: f32 },
}

/// A schedule with the little state it needs between epochs (saved with checkpoints
/// through its public fields).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrScheduler {
    pub schedule: LrSchedule,
    /// Epochs completed.
    pub epoch: usize,
    /// Best validation loss so far (Plateau).
    pub best: f32,
    /// Epochs since `best` improved or the rate was last reduced (Plateau).
    pub wait: usize,
}

impl LrSchedule {
    /// Start tracking this schedule from epoch 0.
    pub fn scheduler(self) -> LrScheduler {
        LrScheduler { schedule: self, epoch: 0, best: f32::INFINITY, wait: 0 }
    }
}

impl LrScheduler {
    /// Call once at the end of each epoch with its validation loss (or the training
    /// loss when there is no validation set); returns the learning rate for the next epoch.
    pub fn next_lr(&mut self, lr: f32, val_loss: f32) -> f32 {
        self.epoch += 1;
        match self.schedule {
            LrSchedule::Constant => lr,
            LrSchedule::Step { every, factor } => {
                if every > 0 && self.epoch.is_multiple_of(every) {
                    lr * factor
                } else {
                    lr
                }
            }
            LrSchedule::Plateau { patience, factor, min_lr } => {
                // Keras's default min_delta is 1e-4 (mode "min", relative to best).
                if val_loss < self.best - 1e-4 {
                    self.best = val_loss;
                    self.wait = 0;
                    lr
                } else {
                    self.wait += 1;
                    if self.wait >= patience.max(1) && lr > min_lr {
                        self.wait = 0;
                        (lr * factor).max(min_lr)
                    } else {
                        lr
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{softmax_cross_entropy, Mode};
    use ndarray::Array4;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use shared::spec::{Activation, Conv2D, Sequential, Shape};

    fn tiny() -> Network {
        let spec = Sequential::new(Shape::image(6, 6, 2))
            .conv2d(Conv2D::new(3, 3).relu())
            .batch_norm()
            .flatten()
            .dense(4, Activation::Softmax)
            .build()
            .unwrap();
        Network::new(&spec, 1)
    }

    #[test]
    fn every_state_tensor_is_under_the_prefix() {
        for kind in [OptimizerKind::adam(), OptimizerKind::sgd()] {
            let (mut net, mut opt) = (tiny(), Optimizer::new(kind));
            train_steps(&mut net, &mut opt, 1);
            let names: Vec<String> = opt.state_tensors().into_iter().map(|(k, _)| k).collect();
            assert!(names.len() > 2 && names.iter().all(|k| k.starts_with(OPTIMIZER_PREFIX)), "{names:?}");
            assert!(net.tensors().iter().all(|(k, _)| !k.starts_with(OPTIMIZER_PREFIX)));
        }
    }

    fn train_steps(net: &mut Network, opt: &mut Optimizer, steps: usize) -> f32 {
        let x = Array4::from_shape_fn((4, 6, 6, 2), |(n, h, w, c)| ((n * 7 + h * 3 + w + c) % 5) as f32 / 5.0);
        let labels = [0, 1, 2, 3];
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut loss = 0.0;
        for _ in 0..steps {
            let logits = net.forward(x.view(), Mode::Train(&mut rng));
            let (l, g, _) = softmax_cross_entropy(logits.view(), &labels);
            net.backward(g.view());
            opt.step(net);
            loss = l;
        }
        loss
    }

    /// The wide update gives, value for value, the bytes of the plain
    /// loop it replaced (the same operations in the same order).
    #[test]
    fn adam_chunk_matches_the_plain_update_bit_for_bit() {
        let n = 1000;
        let val = |seed: usize, i: usize| (((i + seed * 7919) * 2654435761usize) % 2003) as f32 / 1001.0 - 1.0;
        let (alpha, beta1, beta2, eps) = (0.00137f32, 0.9f32, 0.999f32, 1e-7f32);
        let g: Vec<f32> = (0..n).map(|i| val(1, i) * 1e-2).collect();
        let (mut w, mut m, mut v): (Vec<f32>, Vec<f32>, Vec<f32>) = (
            (0..n).map(|i| val(2, i)).collect(),
            (0..n).map(|i| val(3, i) * 1e-3).collect(),
            (0..n).map(|i| val(4, i).abs() * 1e-5).collect(),
        );
        let (mut w0, mut m0, mut v0) = (w.clone(), m.clone(), v.clone());
        adam_chunk(&mut w, &g, &mut m, &mut v, alpha, beta1, beta2, eps);
        for i in 0..n {
            m0[i] += (g[i] - m0[i]) * (1.0 - beta1);
            v0[i] += (g[i] * g[i] - v0[i]) * (1.0 - beta2);
            w0[i] -= alpha * m0[i] / (v0[i].sqrt() + eps);
        }
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!((bits(&w), bits(&m), bits(&v)), (bits(&w0), bits(&m0), bits(&v0)));
    }

    #[test]
    fn adam_first_step_moves_each_weight_by_about_lr() {
        // With bias correction, step 1 is lr * g / (|g| + eps') = lr * sign(g).
        let mut net = tiny();
        let before: Vec<Vec<f32>> = net.params().iter().map(|p| p.value.clone()).collect();
        let mut opt = Optimizer::new(OptimizerKind::adam());
        train_steps(&mut net, &mut opt, 1);
        for (p, b) in net.params().iter().zip(&before) {
            for ((w, w0), g) in p.value.iter().zip(b).zip(&p.grad) {
                if g.abs() > 1e-3 {
                    assert!(((w0 - w) - 1e-3 * g.signum()).abs() < 1e-5, "{}", p.name);
                }
            }
        }
    }

    #[test]
    fn optimizers_reduce_the_loss() {
        for kind in [OptimizerKind::adam(), OptimizerKind::Sgd { lr: 0.1, momentum: 0.9, weight_decay: 5e-4 }] {
            let mut net = tiny();
            let mut opt = Optimizer::new(kind);
            let first = train_steps(&mut net, &mut opt, 1);
            let last = train_steps(&mut net, &mut opt, 30);
            assert!(last < first * 0.75, "{kind:?}: {first} -> {last}");
        }
    }

    #[test]
    fn state_round_trip_resumes_exactly() {
        for kind in [OptimizerKind::adam(), OptimizerKind::sgd()] {
            let (mut a, mut oa) = (tiny(), Optimizer::new(kind));
            train_steps(&mut a, &mut oa, 3);
            let weights: HashMap<_, _> = a.tensors().into_iter().collect();
            let state: HashMap<_, _> = oa.state_tensors().into_iter().collect();
            let mut b = tiny();
            b.load_tensors(&weights).unwrap();
            let mut ob = Optimizer::new(kind);
            ob.load_state(&b, &state).unwrap();
            assert_eq!(ob.iterations(), 3);
            train_steps(&mut a, &mut oa, 2);
            train_steps(&mut b, &mut ob, 2);
            for (pa, pb) in a.params().iter().zip(b.params()) {
                assert_eq!(pa.value, pb.value, "{}", pa.name);
            }
        }
    }

    #[test]
    fn load_state_names_the_missing_tensor() {
        let net = tiny();
        let mut o = Optimizer::new(OptimizerKind::adam());
        let mut state: HashMap<_, _> = {
            let mut n2 = tiny();
            let mut o2 = Optimizer::new(OptimizerKind::adam());
            train_steps(&mut n2, &mut o2, 1);
            o2.state_tensors().into_iter().collect()
        };
        state.remove("optimizer/v/dense/kernel");
        let err = o.load_state(&net, &state).unwrap_err();
        assert_eq!(err, NnError::Missing { name: "optimizer/v/dense/kernel".into() });
    }

    #[test]
    fn schedules() {
        let mut s = LrSchedule::Step { every: 2, factor: 0.1 }.scheduler();
        let lrs: Vec<f32> = (0..4)
            .scan(1.0, |lr, _| {
                *lr = s.next_lr(*lr, 0.0);
                Some(*lr)
            })
            .collect();
        assert_eq!(lrs, vec![1.0, 0.1, 0.1, 0.1f32 * 0.1]);
        let mut p = LrSchedule::Plateau { patience: 2, factor: 0.5, min_lr: 0.2 }.scheduler();
        let mut lr = 1.0;
        let mut seen = vec![];
        for loss in [3.0, 2.0, 2.5, 2.4, 2.6, 2.7, 1.0, 1.5, 1.5, 1.6, 1.7] {
            lr = p.next_lr(lr, loss);
            seen.push(lr);
        }
        assert_eq!(seen, vec![1.0, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.25, 0.2, 0.2, 0.2]);
        assert_eq!(LrSchedule::Constant.scheduler().next_lr(0.3, 9.0), 0.3);
    }
}
