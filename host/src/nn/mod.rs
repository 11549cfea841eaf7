//! The float network of the host: every layer of a [`ModelSpec`] with its
//! forward and backward pass, on NHWC `f32` data, built for training speed on
//! a CPU (im2col + AVX-512 GEMM, rayon) and for checkpoints in Keras's names
//! and layouts, so the quantizer and a Keras user see the same tensors.
//!
//! A model is an operator graph ([`ModelSpec::inputs`]): tensor 0 is the
//! input, tensor `i + 1` layer `i`'s output, and layer `i` reads the tensors
//! its inputs name. A plain stack (every layer reading the previous one) runs
//! the same way and keeps its lean two-buffer backward.

pub mod batchnorm;
pub mod conv;
pub mod dead_inputs;
pub mod dense;
pub mod dropout;
mod epilogue;
pub mod error;
pub mod gemm;
pub mod gemv;
pub mod init;
pub mod loss;
mod micro;
pub mod pool;
mod scratch;
pub mod tune;
pub(crate) mod wide;
pub mod winograd;

pub use error::NnError;
pub use loss::{softmax, softmax_cross_entropy, try_softmax_cross_entropy};
pub use rand_chacha::ChaCha8Rng;

use crate::preprocess::Preprocess;
use batchnorm::BnCache;
use conv::ConvGeom;
use ndarray::{Array2, ArrayD, ArrayView4, IxDyn};
use pool::PoolGeom;
use rayon::prelude::*;
use shared::spec::{Activation, Inputs, Layer, ModelSpec, Shape};
use std::collections::HashMap;

/// How a forward pass runs.
pub enum Mode<'r> {
    /// Batch statistics in BatchNormalization (and a moving-statistics update),
    /// dropout drawn from the generator; keeps what [`Network::backward`] needs.
    Train(&'r mut ChaCha8Rng),
    /// Moving statistics, no dropout.
    Eval,
}

/// One trainable tensor and its gradient from the last backward pass, in Keras layout.
#[derive(Clone, Debug)]
pub struct Param {
    /// Keras-style name, `conv2d_1/kernel`.
    pub name: String,
    pub shape: Vec<usize>,
    pub value: Vec<f32>,
    pub grad: Vec<f32>,
}

impl Param {
    fn new(name: String, shape: Vec<usize>, value: Vec<f32>) -> Self {
        let n = value.len();
        Param { name, shape, value, grad: vec![0.0; n] }
    }
}

#[derive(Clone, Debug)]
enum Node {
    /// `six`: ReLU6, the ReLU's upper clamp applied after the conv's epilogue.
    Conv {
        geom: ConvGeom,
        relu: bool,
        six: bool,
        kernel: Param,
        bias: Param,
        partials: Vec<Vec<f32>>,
        /// Inference's transformed Winograd filters.
        filters: winograd::FilterCache,
    },
    Bn {
        c: usize,
        eps: f32,
        momentum: f32,
        gamma: Param,
        beta: Param,
        mean: Vec<f32>,
        var: Vec<f32>,
        cache: BnCache,
    },
    Pool {
        geom: PoolGeom,
        argmax: Vec<u32>,
    },
    /// AveragePooling2D and GlobalAveragePooling2D (a window over the whole image).
    AvgPool {
        geom: ConvGeom,
    },
    Flatten,
    Dense {
        nin: usize,
        act: Activation,
        apply_softmax: bool,
        kernel: Param,
        bias: Param,
        /// Batch-1 inference's `d W` where [`Network::dead_from`] names a source.
        dead: dead_inputs::DeadInputs,
    },
    Dropout {
        rate: f32,
        mask: Vec<f32>,
    },
    /// The sum of the `main` and `other` tensors, then `act` (None, ReLU, ReLU6).
    Add {
        act: Activation,
    },
    /// Per row (pixel of an image, or example of a flat vector): `a` values
    /// of `main` then `b` of `other`.
    Concat {
        a: usize,
        b: usize,
    },
    /// A standalone element-wise activation (None, ReLU, ReLU6).
    Act {
        act: Activation,
    },
    /// A standalone softmax over rows of `depth` values (the last axis).
    Softmax {
        depth: usize,
    },
}

/// Whether every value of `t` is finite: at memory speed where the values
/// are one slice (no early exit, so that it vectorizes), which a file's
/// hundreds of megabytes of weights feel on every load.
pub fn all_finite(t: &ArrayD<f32>) -> bool {
    t.as_slice_memory_order().map_or_else(
        || t.iter().all(|v| v.is_finite()),
        |s| s.chunks(4096).all(|c| c.iter().fold(true, |ok, v| ok & v.is_finite())),
    )
}

/// The trainable network of one [`ModelSpec`].
#[derive(Clone, Debug)]
pub struct Network {
    spec: ModelSpec,
    names: Vec<String>,
    nodes: Vec<Node>,
    /// `acts[t]` is tensor `t` (0: the input, `i + 1`: layer `i`'s output),
    /// `acts[len]` the logits; reused between steps because reallocating
    /// hundreds of MB per step costs page faults.
    acts: Vec<Vec<f32>>,
    batch: usize,
    /// Whether the caches come from a training forward that `backward` may use.
    trained: bool,
    /// A stack's backward: dL/dy and dL/dx, swapped after each layer.
    grads: [Vec<f32>; 2],
    /// A graph's backward: dL/d(tensor t) while some reader has added to it
    /// and its producer has not yet consumed it.
    tensor_grads: Vec<Option<Vec<f32>>>,
    /// Gradient buffers no tensor holds at the moment, kept between steps.
    spare: Vec<Vec<f32>>,
    /// `fold_bn[i]`: layer `i` is a conv whose output only the BatchNormalization
    /// right after it reads, so an eval forward may apply that BN in the conv's
    /// epilogue and never store the conv's own output.
    fold_bn: Vec<bool>,
    /// `dead_from[i]`: layer `i` is a dense layer whose inputs, where dead,
    /// hold the shifts of this BatchNormalization (of a ReLU's zeros), which
    /// a batch-1 inference then skips ([`dead_inputs`]).
    dead_from: Vec<Option<usize>>,
    /// Per-layer (forward, backward) wall seconds, summed while profiling is on.
    profile: Option<Vec<(f64, f64)>>,
    /// Per layer, the path an inference conv takes whatever the table says,
    /// while [`tune`] times the candidates in the network.
    forced: Option<Vec<Option<conv::ConvPath>>>,
    /// Applied to every input before the first layer (None: pixels as given).
    preprocess: Option<Preprocess>,
}

/// Resize without clearing when the length is unchanged (callers overwrite everything).
fn ensure_len(v: &mut Vec<f32>, len: usize) {
    if v.len() != len {
        v.clear();
        v.resize(len, 0.0);
    }
}

impl Network {
    /// Keras's initialisation: Glorot-uniform kernels, zero biases, BN gamma 1 and
    /// beta 0, moving mean 0 and variance 1. Deterministic in `seed`.
    pub fn new(spec: &ModelSpec, seed: u64) -> Network {
        Network::build(spec, Some(seed))
    }

    /// [`Network::new`] with zero kernels, for a caller that loads every
    /// tensor next (a checkpoint's): drawing AlexNet's 62 M Glorot values
    /// only to overwrite them was about a fifth of `host predict`.
    pub fn for_loading(spec: &ModelSpec) -> Network {
        Network::build(spec, None)
    }

    /// The network of `spec`, its kernels drawn from `seed` (else zero).
    fn build(spec: &ModelSpec, seed: Option<u64>) -> Network {
        // Zeroed allocations are pages the loader's own values replace untouched.
        let kernel_init = |rng: &mut Option<ChaCha8Rng>, fan_in: usize, fan_out: usize, n: usize| match rng {
            Some(rng) => init::glorot_uniform(rng, fan_in, fan_out, n),
            None => vec![0.0; n],
        };
        let layers = spec.layers();
        let last = layers.len() - 1;
        let mut names = Vec::new();
        let mut nodes = Vec::new();
        for (i, layer, input, output) in spec.shapes() {
            let name = spec.layer_name(i).to_string();
            let mut rng = seed.map(|seed| init::layer_rng(seed, i));
            let node = match *layer {
                Layer::Conv2D(c) => {
                    let g = conv::geometry(&c, input);
                    // Keras's grouped kernel: [kh, kw, in_c / groups, out_c].
                    let (kh, kw, cin, cout) = (g.kernel_h, g.kernel_w, g.in_per_group(), g.out_c);
                    let k = kh * kw;
                    let kernel = kernel_init(&mut rng, k * cin, k * cout, k * cin * cout);
                    Node::Conv {
                        geom: g,
                        relu: matches!(c.activation, Activation::Relu | Activation::Relu6),
                        six: c.activation == Activation::Relu6,
                        kernel: Param::new(format!("{name}/kernel"), vec![kh, kw, cin, cout], kernel),
                        bias: Param::new(format!("{name}/bias"), vec![cout], vec![0.0; cout]),
                        partials: Vec::new(),
                        filters: winograd::FilterCache::default(),
                    }
                }
                Layer::BatchNorm { epsilon, momentum } => {
                    let c = input.channels() as usize;
                    Node::Bn {
                        c,
                        eps: epsilon,
                        momentum,
                        gamma: Param::new(format!("{name}/gamma"), vec![c], vec![1.0; c]),
                        beta: Param::new(format!("{name}/beta"), vec![c], vec![0.0; c]),
                        mean: vec![0.0; c],
                        var: vec![1.0; c],
                        cache: BnCache::default(),
                    }
                }
                Layer::MaxPool2D { pool, stride } => {
                    let Shape::Image { h, w, c } = input else { unreachable!("validated by ModelSpec") };
                    let geom = PoolGeom::new(h as usize, w as usize, c as usize, pool as usize, stride as usize);
                    Node::Pool { geom, argmax: Vec::new() }
                }
                Layer::AvgPool2D(_) | Layer::GlobalAvgPool => {
                    let geom = pool::avg_geometry(layer, input).expect("validated by ModelSpec");
                    Node::AvgPool { geom }
                }
                Layer::Flatten => Node::Flatten,
                Layer::Dense { units, activation } => {
                    let (nin, units) = (input.elements() as usize, units as usize);
                    let kernel = kernel_init(&mut rng, nin, units, nin * units);
                    Node::Dense {
                        nin,
                        act: activation,
                        apply_softmax: i != last,
                        kernel: Param::new(format!("{name}/kernel"), vec![nin, units], kernel),
                        bias: Param::new(format!("{name}/bias"), vec![units], vec![0.0; units]),
                        dead: dead_inputs::DeadInputs::default(),
                    }
                }
                Layer::Dropout { rate } => Node::Dropout { rate, mask: Vec::new() },
                Layer::Add { activation } => Node::Add { act: activation },
                Layer::Concat => {
                    // Validated by ModelSpec: both images of one h x w, or both flat.
                    let other = spec.other_input(i).unwrap_or(input);
                    Node::Concat { a: input.channels() as usize, b: other.channels() as usize }
                }
                Layer::Activation(a) => Node::Act { act: a },
                Layer::Softmax => Node::Softmax { depth: input.channels() as usize },
            };
            debug_assert!(output.elements() > 0);
            names.push(name);
            nodes.push(node);
        }
        let inputs = spec.inputs();
        let fold_bn = (0..layers.len())
            .map(|i| {
                matches!(layers[i], Layer::Conv2D(_))
                    && matches!(layers.get(i + 1), Some(Layer::BatchNorm { .. }))
                    && inputs[i + 1] == Inputs::stack(i + 1)
                    && spec.readers(i).eq([i + 1])
            })
            .collect();
        let dead_from = (0..layers.len()).map(|i| spec.batch_norm_of_relu_read_by(i).map(|(bn, _)| bn)).collect();
        Network {
            spec: *spec,
            names,
            nodes,
            acts: vec![Vec::new(); layers.len() + 1],
            batch: 0,
            trained: false,
            grads: [Vec::new(), Vec::new()],
            tensor_grads: Vec::new(),
            spare: Vec::new(),
            fold_bn,
            dead_from,
            profile: None,
            forced: None,
            preprocess: None,
        }
    }

    /// The input preprocessing every forward applies first.
    pub fn preprocess(&self) -> Option<&Preprocess> {
        self.preprocess.as_ref()
    }

    /// Set the input preprocessing; its channels must be the input's.
    pub fn set_preprocess(&mut self, p: Option<Preprocess>) -> Result<(), NnError> {
        if let Some(p) = &p {
            let c = self.spec.input().channels() as usize;
            if p.channels() != c {
                return Err(NnError::Preprocess { got: p.channels(), channels: c });
            }
        }
        self.preprocess = p;
        Ok(())
    }

    /// The layer stack this network was built from.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// Check that `x` is `[batch, h, w, c]` for this model's input (a flat input
    /// accepts any `h*w*c` of the right size).
    pub fn check_input(&self, x: &ArrayView4<f32>) -> Result<(), NnError> {
        let (_, h, w, c) = x.dim();
        let ok = match self.spec.input() {
            Shape::Image { h: eh, w: ew, c: ec } => (h, w, c) == (eh as usize, ew as usize, ec as usize),
            s @ Shape::Flat(_) => (h * w * c) as u64 == s.elements(),
        };
        if ok {
            Ok(())
        } else {
            Err(NnError::Input { got: x.shape().to_vec(), expected: self.spec.input() })
        }
    }

    /// Logits `[batch, classes]` for NHWC input `x` (softmax not applied).
    ///
    /// Panics if `x` does not have the model's input shape (see [`Network::check_input`]).
    pub fn forward(&mut self, x: ArrayView4<f32>, mode: Mode) -> Array2<f32> {
        self.run(x, mode, true);
        let out = self.spec.output().elements() as usize;
        let logits = &self.acts[self.nodes.len()];
        Array2::from_shape_vec((self.batch, out), logits.clone()).expect("logits have batch * classes values")
    }

    /// With `fuse` and [`Mode::Eval`], a BatchNormalization right after a conv is
    /// applied in the conv's epilogue, straight into the BN's output; the conv's
    /// own output is then not kept (callers that read every layer's output pass
    /// `false`).
    ///
    /// The layers run on a rayon worker: each layer's parallel loop is then
    /// pushed onto that worker's own queue, instead of this (outside) thread
    /// handing every layer to the pool and sleeping until it is done, a wake-up
    /// round trip per layer that batch-1 inference notices.
    ///
    /// Under `--conv auto`, the first inference at a batch size first times
    /// the undecided convs' paths in whole passes ([`tune`]).
    fn run(&mut self, x: ArrayView4<f32>, mode: Mode, fuse: bool) {
        if matches!(mode, Mode::Eval) {
            self.tune_convs(x, fuse);
        }
        rayon::scope(|_| self.run_layers(x, mode, fuse))
    }

    /// Under [`conv::ConvAlgo::Auto`] and at a batch of at most
    /// [`tune::MAX_BATCH`], decides every conv that has no path yet for
    /// `x`'s batch by whole forward passes on `x` ([`tune`]; their outputs
    /// are overwritten by the caller's pass).
    fn tune_convs(&mut self, x: ArrayView4<f32>, fuse: bool) {
        let batch = x.dim().0;
        if conv::algo() != conv::ConvAlgo::Auto || batch > tune::MAX_BATCH {
            return;
        }
        let open: Vec<tune::Open> = self
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(layer, n)| match n {
                Node::Conv { geom, .. } if conv::path(geom, batch, false).is_none() => {
                    Some(tune::Open { layer, geom: *geom, candidates: conv::ConvPath::candidates(geom).collect() })
                }
                _ => None,
            })
            .collect();
        let Some(mut plan) = tune::Plan::new(open) else {
            return;
        };
        let saved = self.profile.take();
        while let Some(setting) = plan.next_setting() {
            let (total, each) = self.time_setting(x, fuse, plan.open(), &setting);
            plan.timed(total, each);
        }
        self.profile = saved;
        plan.finish(batch);
    }

    /// Whole passes with the open convs on `setting`: every layer's fastest
    /// time in [`tune::RUNS`] of them, summed (a pass with each layer's
    /// noise removed: on a shared machine a layer that the others' noise
    /// delayed in one pass runs undelayed in another; the fastest whole pass
    /// keeps some of it, and in a small network that was more than the
    /// settings' difference), and each open conv's own fastest time.
    fn time_setting(
        &mut self,
        x: ArrayView4<f32>,
        fuse: bool,
        open: &[tune::Open],
        setting: &tune::Setting,
    ) -> (std::time::Duration, Vec<std::time::Duration>) {
        let mut forced = vec![None; self.nodes.len()];
        for (o, &p) in open.iter().zip(setting) {
            forced[o.layer] = Some(p);
        }
        self.forced = Some(forced);
        rayon::scope(|_| self.run_layers(x, Mode::Eval, fuse));
        let mut fastest = vec![f64::INFINITY; self.nodes.len()];
        for _ in 0..tune::RUNS {
            self.profile = Some(vec![(0.0, 0.0); self.nodes.len()]);
            rayon::scope(|_| self.run_layers(x, Mode::Eval, fuse));
            let layers = self.profile.take().unwrap_or_default();
            for (f, l) in fastest.iter_mut().zip(&layers) {
                *f = f.min(l.0);
            }
        }
        self.forced = None;
        let secs = |s: f64| std::time::Duration::from_secs_f64(s.max(0.0));
        let each = open.iter().map(|o| secs(fastest[o.layer])).collect();
        (secs(fastest.iter().sum()), each)
    }

    fn run_layers(&mut self, x: ArrayView4<f32>, mut mode: Mode, fuse: bool) {
        if let Err(e) = self.check_input(&x) {
            panic!("Network::forward: {e}");
        }
        let batch = x.dim().0;
        self.batch = batch;
        let training = matches!(mode, Mode::Train(_));
        self.trained = false;
        let a0 = &mut self.acts[0];
        ensure_len(a0, x.len());
        match x.as_slice() {
            Some(s) => a0.copy_from_slice(s),
            None => a0.iter_mut().zip(x.iter()).for_each(|(d, s)| *d = *s),
        }
        if let Some(p) = &self.preprocess {
            p.apply(a0);
        }
        let shapes: Vec<Shape> = self.spec.shapes().map(|(_, _, _, o)| o).collect();
        let mut skip = false;
        for i in 0..self.nodes.len() {
            if std::mem::take(&mut skip) {
                continue;
            }
            let t0 = std::time::Instant::now();
            let folded = match self.nodes.get(i + 1) {
                Some(Node::Bn { eps, gamma, beta, mean, var, .. })
                    if fuse
                        && !training
                        && self.fold_bn[i]
                        && matches!(self.nodes[i], Node::Conv { six: false, .. }) =>
                {
                    Some(batchnorm::eval_affine(&gamma.value, &beta.value, *eps, mean, var))
                }
                _ => None,
            };
            // A batch-1 inference's dense layer after a BatchNormalization of
            // a ReLU: each channel's dead value is the BN's image of 0, its shift.
            let dead = match self.dead_from[i].map(|b| &self.nodes[b]) {
                Some(Node::Bn { eps, gamma, beta, mean, var, .. }) if !training && batch == 1 => {
                    Some(batchnorm::eval_affine(&gamma.value, &beta.value, *eps, mean, var).1)
                }
                _ => None,
            };
            let reads = self.spec.inputs()[i];
            let (head, tail) = self.acts.split_at_mut(i + 1);
            let x = &head[reads.main as usize][..];
            let other = reads.other.map(|t| &head[t as usize][..]);
            let y = if folded.is_some() { &mut tail[1] } else { &mut tail[0] };
            ensure_len(y, batch * shapes[i].elements() as usize);
            match &mut self.nodes[i] {
                Node::Conv { geom, relu, six, kernel, bias, filters, .. } => {
                    let affine = folded.as_ref().map(|(s, t)| (&s[..], &t[..]));
                    skip = affine.is_some();
                    let ep = conv::Epilogue { bias: &bias.value, relu: *relu, affine };
                    if training {
                        conv::forward_with(geom, &ep, &kernel.value, x, batch, y);
                    } else {
                        let forced = self.forced.as_ref().and_then(|f| f[i]);
                        conv::forward_inference(geom, &ep, &kernel.value, x, batch, y, filters, forced);
                    }
                    if *six {
                        y.iter_mut().for_each(|v| *v = v.min(6.0));
                    }
                }
                Node::AvgPool { geom } => pool::avg_forward(geom, x, y),
                Node::Bn { c, eps, momentum, gamma, beta, mean, var, cache } => {
                    if training {
                        *cache =
                            batchnorm::forward_train(x, *c, &gamma.value, &beta.value, *eps, *momentum, mean, var, y);
                    } else {
                        batchnorm::forward_eval(x, *c, &gamma.value, &beta.value, *eps, mean, var, y);
                    }
                }
                Node::Pool { geom, argmax } => {
                    if training {
                        argmax.resize(y.len(), 0);
                        pool::forward(geom, x, y, Some(argmax));
                    } else {
                        pool::forward(geom, x, y, None);
                    }
                }
                Node::Flatten => y.copy_from_slice(x),
                Node::Dense { nin, act, apply_softmax, kernel, bias, dead: cache } => {
                    let dead = dead.as_deref().map(|d| (d, cache));
                    dense::forward(*act, *apply_softmax, &kernel.value, &bias.value, x, batch, *nin, y, dead)
                }
                Node::Dropout { rate, mask } => match &mut mode {
                    Mode::Train(rng) => {
                        dropout::make_mask(rng, *rate, x.len(), mask);
                        dropout::apply(mask, x, y);
                    }
                    Mode::Eval => y.copy_from_slice(x),
                },
                Node::Add { act } => {
                    let Some(o) = other else { unreachable!("validated by ModelSpec: Add reads two tensors") };
                    add_forward(*act, x, o, y);
                }
                Node::Concat { a, b } => {
                    let Some(o) = other else { unreachable!("validated by ModelSpec: Concatenate reads two tensors") };
                    concat_forward(*a, *b, x, o, y);
                }
                Node::Act { act } => act_forward(*act, x, y),
                Node::Softmax { depth } => softmax_forward(*depth, x, y),
            }
            if let Some(p) = &mut self.profile {
                p[i].0 += t0.elapsed().as_secs_f64();
            }
        }
        self.trained = training;
    }

    /// Backpropagate `dL/dlogits` of the last forward (which must have been
    /// [`Mode::Train`]) and store every parameter's gradient (overwriting, not adding).
    ///
    /// Panics if the last forward was not a training one or the shape differs.
    pub fn backward(&mut self, grad_logits: ndarray::ArrayView2<f32>) {
        assert!(self.trained, "Network::backward needs a preceding forward in Mode::Train");
        let out = self.spec.output().elements() as usize;
        assert_eq!(grad_logits.dim(), (self.batch, out), "Network::backward: gradient shape differs from the logits");
        if self.spec.is_stack() {
            self.backward_stack(grad_logits)
        } else {
            self.backward_graph(grad_logits)
        }
    }

    /// A stack's backward: each tensor has one reader, so two buffers
    /// (dL/dy in, dL/dx out, swapped) carry the whole pass.
    fn backward_stack(&mut self, grad_logits: ndarray::ArrayView2<f32>) {
        let batch = self.batch;
        let [mut g, mut dx] = std::mem::take(&mut self.grads);
        copy_view(&mut g, grad_logits);
        for (i, node) in self.nodes.iter_mut().enumerate().rev() {
            let t0 = std::time::Instant::now();
            let x = &self.acts[i][..];
            let y = &self.acts[i + 1][..];
            if unary_backward(node, x, y, &mut g, &mut dx, i > 0, batch) {
                std::mem::swap(&mut g, &mut dx);
            }
            if let Some(p) = &mut self.profile {
                p[i].1 += t0.elapsed().as_secs_f64();
            }
        }
        self.grads = [g, dx];
    }

    /// A graph's backward, layers in reverse order: a tensor read by several
    /// layers (a residual branch) gets the sum of its readers' gradients,
    /// complete once every reader (all later layers) has run, so its producer
    /// then consumes it and its buffer returns to the spare pool. Tensor 0
    /// (the input) needs no gradient.
    fn backward_graph(&mut self, grad_logits: ndarray::ArrayView2<f32>) {
        let batch = self.batch;
        let n = self.nodes.len();
        let mut grads = std::mem::take(&mut self.tensor_grads);
        let mut spare = std::mem::take(&mut self.spare);
        spare.extend(grads.drain(..).flatten());
        grads.resize_with(n + 1, || None);
        let mut top = spare.pop().unwrap_or_default();
        copy_view(&mut top, grad_logits);
        grads[n] = Some(top);
        for i in (0..n).rev() {
            let t0 = std::time::Instant::now();
            let reads = self.spec.inputs()[i];
            let main = reads.main as usize;
            let y = &self.acts[i + 1][..];
            // A tensor no later layer reads (a dead branch) has gradient zero.
            let mut g = grads[i + 1].take().unwrap_or_else(|| {
                let mut z = spare.pop().unwrap_or_default();
                z.clear();
                z.resize(y.len(), 0.0);
                z
            });
            match &mut self.nodes[i] {
                Node::Add { act } => {
                    act_backward(*act, &mut g, y);
                    if let Some(o) = reads.other {
                        deposit_copy(&mut grads, &mut spare, o as usize, &g);
                    }
                    deposit(&mut grads, &mut spare, main, g);
                }
                Node::Concat { a, b } => {
                    let (a, b) = (*a, *b);
                    let rows = g.len() / (a + b);
                    let parts = [(main, 0, a), (reads.other.map_or(0, usize::from), a, b)];
                    for (t, from, width) in parts {
                        if t == 0 {
                            continue;
                        }
                        let mut d = spare.pop().unwrap_or_default();
                        ensure_len(&mut d, rows * width);
                        d.par_chunks_exact_mut(width)
                            .zip(g.par_chunks_exact(a + b))
                            .with_min_len(1024)
                            .for_each(|(d, g)| d.copy_from_slice(&g[from..from + width]));
                        deposit(&mut grads, &mut spare, t, d);
                    }
                    spare.push(g);
                }
                node => {
                    let x = &self.acts[main][..];
                    let mut dx = spare.pop().unwrap_or_default();
                    let wrote = unary_backward(node, x, y, &mut g, &mut dx, main > 0, batch);
                    let (d, free) = if wrote { (dx, g) } else { (g, dx) };
                    spare.push(free);
                    deposit(&mut grads, &mut spare, main, d);
                }
            }
            if let Some(p) = &mut self.profile {
                p[i].1 += t0.elapsed().as_secs_f64();
            }
        }
        self.tensor_grads = grads;
        self.spare = spare;
    }

    /// Start (or with `false` stop) summing per-layer wall times, for `--profile` output.
    pub fn set_profiling(&mut self, on: bool) {
        self.profile = on.then(|| vec![(0.0, 0.0); self.nodes.len()]);
    }

    /// Per layer: Keras name, summed forward and backward seconds since profiling started.
    pub fn profile(&self) -> Option<Vec<(String, f64, f64)>> {
        let p = self.profile.as_ref()?;
        Some(self.names.iter().zip(p).map(|(n, &(f, b))| (n.clone(), f, b)).collect())
    }

    /// Trainable tensors with their gradients, in Keras's weight order.
    pub fn params(&self) -> Vec<&Param> {
        let mut v = Vec::new();
        for n in &self.nodes {
            match n {
                Node::Conv { kernel, bias, .. } | Node::Dense { kernel, bias, .. } => v.extend([kernel, bias]),
                Node::Bn { gamma, beta, .. } => v.extend([gamma, beta]),
                _ => {}
            }
        }
        v
    }

    /// Mutable access for the optimizer (same order as [`Network::params`]).
    /// Clears the layers' kept Winograd filters, which the caller may make
    /// stale.
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        let mut v = Vec::new();
        for n in &mut self.nodes {
            match n {
                Node::Conv { kernel, bias, filters, .. } => {
                    filters.clear();
                    v.extend([kernel, bias])
                }
                Node::Dense { kernel, bias, dead, .. } => {
                    dead.clear();
                    v.extend([kernel, bias])
                }
                Node::Bn { gamma, beta, .. } => v.extend([gamma, beta]),
                _ => {}
            }
        }
        v
    }

    /// Every parameter and state tensor by Keras name, in Keras layout and order:
    /// `conv2d/kernel` `[kh, kw, in, out]`, `conv2d/bias`, `batch_normalization/gamma`,
    /// `/beta`, `/moving_mean`, `/moving_variance`, `dense/kernel` `[in, out]`, `dense/bias`.
    pub fn tensors(&self) -> Vec<(String, ArrayD<f32>)> {
        let mut v = Vec::new();
        self.each_tensor(|name, shape, values| {
            v.push((name, ArrayD::from_shape_vec(IxDyn(shape), values.to_vec()).expect("shape matches its values")))
        });
        v
    }

    /// [`Network::tensors`]' names and shapes with their values in place:
    /// what checking a file's tensors needs, without copying 233 MB.
    fn each_tensor(&self, mut f: impl FnMut(String, &[usize], &[f32])) {
        for (name, n) in self.names.iter().zip(&self.nodes) {
            match n {
                Node::Conv { kernel, bias, .. } | Node::Dense { kernel, bias, .. } => {
                    f(kernel.name.clone(), &kernel.shape, &kernel.value);
                    f(bias.name.clone(), &bias.shape, &bias.value);
                }
                Node::Bn { c, gamma, beta, mean, var, .. } => {
                    f(gamma.name.clone(), &gamma.shape, &gamma.value);
                    f(beta.name.clone(), &beta.shape, &beta.value);
                    f(format!("{name}/moving_mean"), &[*c], mean);
                    f(format!("{name}/moving_variance"), &[*c], var);
                }
                _ => {}
            }
        }
    }

    /// Whether `tensors` holds every tensor of this network (names and
    /// layouts as [`Network::tensors`]) with finite values: what
    /// [`Network::load_tensors`] checks before it changes anything, without
    /// copying a value.
    pub fn check_tensors(&self, tensors: &HashMap<String, ArrayD<f32>>) -> Result<(), NnError> {
        let mut expected = Vec::new();
        self.each_tensor(|name, shape, _| expected.push((name, shape.to_vec())));
        for (name, want) in &expected {
            let got = tensors.get(name).ok_or_else(|| NnError::Missing { name: name.clone() })?;
            if got.shape() != &want[..] {
                return Err(NnError::Shape { name: name.clone(), expected: want.clone(), got: got.shape().to_vec() });
            }
            if !all_finite(got) {
                return Err(NnError::NonFinite { name: name.clone() });
            }
        }
        Ok(())
    }

    /// Replace every tensor from `tensors` (names and layouts as [`Network::tensors`]).
    /// Checks everything first, so on error the network is unchanged. Extra tensors
    /// (optimizer state in the same file) are ignored.
    pub fn load_tensors(&mut self, tensors: &HashMap<String, ArrayD<f32>>) -> Result<(), NnError> {
        self.check_tensors(tensors)?;
        let get = |name: &str| -> Vec<f32> {
            let t = &tensors[name];
            t.as_slice().map_or_else(|| t.iter().copied().collect(), <[f32]>::to_vec)
        };
        for (name, n) in self.names.iter().zip(&mut self.nodes) {
            match n {
                Node::Conv { kernel, bias, filters, .. } => {
                    kernel.value = get(&kernel.name);
                    bias.value = get(&bias.name);
                    filters.clear();
                }
                Node::Dense { kernel, bias, dead, .. } => {
                    kernel.value = get(&kernel.name);
                    bias.value = get(&bias.name);
                    dead.clear();
                }
                Node::Bn { gamma, beta, mean, var, .. } => {
                    gamma.value = get(&gamma.name);
                    beta.value = get(&beta.name);
                    *mean = get(&format!("{name}/moving_mean"));
                    *var = get(&format!("{name}/moving_variance"));
                }
                _ => {}
            }
        }
        self.trained = false;
        Ok(())
    }

    /// Every layer's output of an Eval forward, `[batch, h, w, c]` or `[batch, n]`, for
    /// layer-by-layer comparison with the quantized engine. The last layer's softmax,
    /// folded into the loss elsewhere, is applied here: these are Keras's layer outputs.
    pub fn forward_collect(&mut self, x: ArrayView4<f32>) -> Vec<ArrayD<f32>> {
        let mut outs = self.forward_layers(x);
        let softmax_last =
            matches!(self.spec.layers().last(), Some(Layer::Dense { activation: Activation::Softmax, .. }));
        if let (true, Some(last)) = (softmax_last, outs.last_mut()) {
            let n = last.shape()[1];
            if let Some(data) = last.as_slice_mut() {
                data.chunks_exact_mut(n).for_each(shared::numeric::softmax_in_place);
            }
        }
        outs
    }

    /// Every layer's output of an Eval forward as the layer computes it: the
    /// last entry holds the *logits* (no softmax), which is what the quantized
    /// engine outputs and what int8 calibration and comparisons measure.
    pub fn forward_layers(&mut self, x: ArrayView4<f32>) -> Vec<ArrayD<f32>> {
        self.run(x, Mode::Eval, false);
        let batch = self.batch;
        self.spec
            .shapes()
            .map(|(i, _, _, out)| {
                let mut dims = vec![batch];
                match out {
                    Shape::Image { h, w, c } => dims.extend([h as usize, w as usize, c as usize]),
                    Shape::Flat(n) => dims.push(n as usize),
                }
                ArrayD::from_shape_vec(IxDyn(&dims), self.acts[i + 1].clone()).expect("layer output matches its shape")
            })
            .collect()
    }
}

/// Copy a (possibly strided) gradient view into `v`.
fn copy_view(v: &mut Vec<f32>, g: ndarray::ArrayView2<f32>) {
    ensure_len(v, g.len());
    match g.as_slice() {
        Some(s) => v.copy_from_slice(s),
        None => v.iter_mut().zip(g.iter()).for_each(|(d, s)| *d = *s),
    }
}

/// Element-wise work splits into chunks this long across the rayon pool.
const CHUNK: usize = 1 << 15;

/// `y = act(x + o)` for an Add layer.
fn add_forward(act: Activation, x: &[f32], o: &[f32], y: &mut [f32]) {
    let (lo, hi) = act.clamp().unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .zip(o.par_chunks(CHUNK))
        .for_each(|((y, x), o)| y.iter_mut().zip(x).zip(o).for_each(|((y, x), o)| *y = (x + o).max(lo).min(hi)));
}

/// `y = act(x)` for a standalone Activation layer.
fn act_forward(act: Activation, x: &[f32], y: &mut [f32]) {
    let (lo, hi) = act.clamp().unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(y, x)| y.iter_mut().zip(x).for_each(|(y, x)| *y = x.max(lo).min(hi)));
}

/// Softmax over each row of `depth` values, shifted by the row's maximum.
fn softmax_forward(depth: usize, x: &[f32], y: &mut [f32]) {
    y.par_chunks_exact_mut(depth).zip(x.par_chunks_exact(depth)).with_min_len(64).for_each(|(y, x)| {
        y.copy_from_slice(x);
        shared::numeric::softmax_in_place(y);
    });
}

/// Softmax's backward in place on `g` = dL/dy given its output `y`, per
/// row: `dL/dx_i = y_i (g_i - sum_j g_j y_j)`.
fn softmax_backward(depth: usize, g: &mut [f32], y: &[f32]) {
    g.par_chunks_exact_mut(depth).zip(y.par_chunks_exact(depth)).with_min_len(64).for_each(|(g, y)| {
        let dot: f64 = g.iter().zip(y).map(|(&g, &y)| g as f64 * y as f64).sum();
        g.iter_mut().zip(y).for_each(|(g, &y)| *g = (y as f64 * (*g as f64 - dot)) as f32);
    });
}

/// Concatenate on the last axis: each row of `y` is `a` values of `x`, then `b` of `o`.
fn concat_forward(a: usize, b: usize, x: &[f32], o: &[f32], y: &mut [f32]) {
    y.par_chunks_exact_mut(a + b).zip(x.par_chunks_exact(a)).zip(o.par_chunks_exact(b)).with_min_len(1024).for_each(
        |((y, x), o)| {
            y[..a].copy_from_slice(x);
            y[a..].copy_from_slice(o);
        },
    );
}

/// An element-wise activation's backward, in place on `g` = dL/dy given
/// its output `y`: ReLU passes where `y > 0`, ReLU6 where `0 < y < 6`.
fn act_backward(act: Activation, g: &mut [f32], y: &[f32]) {
    match act {
        Activation::Relu => g.par_chunks_mut(CHUNK).zip(y.par_chunks(CHUNK)).for_each(|(g, y)| {
            g.iter_mut().zip(y).for_each(|(d, &y)| {
                if y <= 0.0 {
                    *d = 0.0
                }
            })
        }),
        Activation::Relu6 => {
            g.par_chunks_mut(CHUNK).zip(y.par_chunks(CHUNK)).for_each(|(g, y)| dense::relu6_mask(g, y))
        }
        Activation::None | Activation::Softmax => {}
    }
}

/// Add `d` to tensor `t`'s gradient (moving it in when it is the first
/// reader's); tensor 0 (the input) needs none. `d`'s buffer ends up spare.
fn deposit(grads: &mut [Option<Vec<f32>>], spare: &mut Vec<Vec<f32>>, t: usize, d: Vec<f32>) {
    if t == 0 {
        spare.push(d);
        return;
    }
    match &mut grads[t] {
        slot @ None => *slot = Some(d),
        Some(acc) => {
            add_into(acc, &d);
            spare.push(d);
        }
    }
}

/// [`deposit`] of a gradient the caller keeps using.
fn deposit_copy(grads: &mut [Option<Vec<f32>>], spare: &mut Vec<Vec<f32>>, t: usize, d: &[f32]) {
    if t == 0 {
        return;
    }
    match &mut grads[t] {
        Some(acc) => add_into(acc, d),
        slot @ None => {
            let mut v = spare.pop().unwrap_or_default();
            ensure_len(&mut v, d.len());
            v.copy_from_slice(d);
            *slot = Some(v);
        }
    }
}

fn add_into(acc: &mut [f32], d: &[f32]) {
    acc.par_chunks_mut(CHUNK)
        .zip(d.par_chunks(CHUNK))
        .for_each(|(a, d)| a.iter_mut().zip(d).for_each(|(a, d)| *a += d));
}

/// One single-input layer's backward: `g` (dL/dy, consumed) and the layer's
/// input `x` and output `y`. Returns true when it wrote dL/dx to `dx`
/// (sized here), false when it turned `g` into dL/dx in place (Flatten,
/// Dropout, Activation). `need_dx`: false for the first layer, whose input
/// gradient nobody needs (the layers that can skip it do).
#[allow(clippy::too_many_arguments)]
fn unary_backward(
    node: &mut Node,
    x: &[f32],
    y: &[f32],
    g: &mut [f32],
    dx: &mut Vec<f32>,
    need_dx: bool,
    batch: usize,
) -> bool {
    ensure_len(dx, x.len());
    match node {
        Node::Conv { geom, relu, six, kernel, bias, partials, .. } => {
            if *six {
                dense::relu6_mask(g, y);
            }
            let dxo = if need_dx { Some(&mut dx[..]) } else { None };
            conv::backward(geom, *relu, &kernel.value, x, y, g, batch, &mut kernel.grad, &mut bias.grad, dxo, partials);
            true
        }
        Node::Bn { c, gamma, beta, cache, .. } => {
            batchnorm::backward(x, *c, &gamma.value, cache, g, &mut gamma.grad, &mut beta.grad, dx);
            true
        }
        Node::Pool { geom, argmax } => {
            pool::backward(geom, argmax, g, dx);
            true
        }
        Node::AvgPool { geom } => {
            pool::avg_backward(geom, g, dx);
            true
        }
        Node::Flatten => false,
        Node::Dense { nin, act, apply_softmax, kernel, bias, .. } => {
            let dxo = if need_dx { Some(&mut dx[..]) } else { None };
            dense::backward(
                *act,
                *apply_softmax,
                &kernel.value,
                x,
                y,
                g,
                batch,
                *nin,
                &mut kernel.grad,
                &mut bias.grad,
                dxo,
            );
            true
        }
        Node::Dropout { mask, .. } => {
            g.iter_mut().zip(mask.iter()).for_each(|(d, m)| *d *= m);
            false
        }
        Node::Act { act } => {
            act_backward(*act, g, y);
            false
        }
        Node::Softmax { depth } => {
            softmax_backward(*depth, g, y);
            false
        }
        Node::Add { .. } | Node::Concat { .. } => unreachable!("two-input layers run in the graph backward"),
    }
}

#[cfg(test)]
mod tests;
