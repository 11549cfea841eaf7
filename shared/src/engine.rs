//! The allocation-free runner and its static arena planner.
//!
//! Prepare once, run many (TensorFlow Lite Micro's Prepare/Eval split):
//! [`prepare`] checks the model fully ([`validate`]), computes where each
//! layer's input and output live in one caller-provided byte arena
//! ([`plan`]) and every per-layer constant (geometry, zero points and
//! clamps), and returns a [`Prepared`] model. [`run`] then only checks the
//! input and arena sizes, copies the input into the arena and runs the
//! layers in order, calling an [`Observer`] after each one so two executors
//! can be compared layer by layer.
//!
//! Arena layout ("two-ended ping-pong"): the model input sits at the low end;
//! every layer that computes a new tensor writes it at the opposite end from
//! its input (low <-> high). A layer's input and output therefore never
//! overlap as long as `in + out <= arena`, so the arena is
//! `max(in + out)` over the computing layers, the least any executor that
//! keeps both tensors needs. Flatten and Dropout are identities (no copy,
//! no bytes) and BatchNormalization runs in place, so those layers need only
//! their input's bytes.
//!
//! The engine returns the last layer's raw output: for a final
//! `Dense(activation=Softmax)` these are the *logits*; Softmax is not applied.
//! The consumer dequantizes them ([`dequantize_output`]) and applies softmax
//! in f32 if it wants probabilities (argmax needs neither). A `Softmax`
//! *layer* (TFLite's SOFTMAX operator, as an imported model has) is another
//! operator: the engine computes it (int8: TFLite's reference arithmetic,
//! output 1/256, -128), out of place like every computing layer.
//!
//! GlobalAveragePooling2D runs int8 as TFLite's MEAN over height and width
//! (the operator the converter makes of it): the integer
//! `QuantizedMeanOrSum` of the reference kernels, to the layer's own output
//! quantization, equal to the input's or not.

use core::fmt;
use core::mem::MaybeUninit;

use half::f16;

use crate::geometry::{ConvGeom, PoolGeom};
use crate::kernels::f16 as k16;
use crate::kernels::int8::{self as k8, Int8Params};
use crate::model::{F16Weights, Int8Weights, LayerWeights, Precision, QuantModel, TensorQuant};
use crate::quant;
use crate::spec::{Activation, AvgPool2D, Hw, Layer, Padding, Shape, MAX_LAYERS};

/// Sees every layer as it runs (including the identity layers).
pub trait Observer {
    /// Layer `index` is about to run.
    fn layer_start(&mut self, index: usize) {
        let _ = index;
    }
    /// Layer `index` produced `output`: its raw activation bytes, int8 values
    /// as `u8`, or f16 values in memory order (little-endian on every target
    /// we build for).
    fn layer_done(&mut self, index: usize, shape: Shape, output: &[u8]) {
        let _ = (index, shape, output);
    }
    /// A banded run (the `band` module's `run_banded`) computed output rows `first_row..` of
    /// layer `index` (whole rows of `shape`, in order, after a
    /// [`Observer::layer_start`] for the same layer): `rows` are their bytes.
    /// The layer's [`Observer::layer_done`] then comes once, after its last
    /// rows, with an empty `output` when the whole tensor never existed (the
    /// rows seen are the layer's output, in order).
    fn layer_rows(&mut self, index: usize, shape: Shape, first_row: usize, rows: &[u8]) {
        let _ = (index, shape, first_row, rows);
    }
    /// Whether this observer reads every layer's own output in
    /// [`Observer::layer_done`] (the default). One that only times or counts
    /// layers says no, and the engine may then run an int8 Conv2D and the
    /// BatchNormalization after it as one layer where the CPU's kernel can
    /// (the BatchNormalization in the conv's output stage, one pass instead
    /// of two): the conv's `layer_done` then gets the pair's output, and
    /// the BatchNormalization's comes straight after. It may also run an
    /// int8 BatchNormalization after the MaxPool2D that follows it, on the
    /// pool's output: the BatchNormalization's `layer_done` then gets bytes
    /// that are not its output, and the pool's gets the pair's. The model's
    /// output bytes are the same either way.
    fn sees_each_output(&self) -> bool {
        true
    }
}

/// Runs independent jobs, possibly on several threads: the engine's only
/// hook for parallelism (it never spawns anything itself). The jobs of one
/// call write disjoint parts of one layer's output, so the bytes never
/// depend on how they are scheduled.
pub trait Parallel: Sync {
    /// How many jobs to split a layer into (1: do not split).
    fn jobs(&self) -> usize;
    /// Call `job(i)` once for every `i < jobs`, in any order or concurrently;
    /// return when all have returned.
    fn run(&self, jobs: usize, job: &(dyn Fn(usize) + Sync));
}

/// Everything on the calling thread, one job per layer (what [`run`] uses).
#[derive(Clone, Copy, Debug, Default)]
pub struct SingleThread;

impl Parallel for SingleThread {
    fn jobs(&self) -> usize {
        1
    }
    fn run(&self, jobs: usize, job: &(dyn Fn(usize) + Sync)) {
        (0..jobs).for_each(job)
    }
}

/// `threads` scoped std threads per split layer (the caller's thread runs one job).
#[cfg(feature = "std")]
#[derive(Clone, Copy, Debug)]
pub struct ScopedThreads(pub usize);

#[cfg(feature = "std")]
impl Parallel for ScopedThreads {
    fn jobs(&self) -> usize {
        self.0.max(1)
    }
    fn run(&self, jobs: usize, job: &(dyn Fn(usize) + Sync)) {
        std::thread::scope(|s| {
            for i in 1..jobs {
                s.spawn(move || job(i));
            }
            if jobs > 0 {
                job(0);
            }
        });
    }
}

/// A layer's output shared by the jobs of one [`Parallel::run`], each of
/// which reborrows a disjoint range of it.
struct SharedOut<T>(*mut T, usize);

// SAFETY: the jobs only create non-overlapping subslices (see `split_rows`),
// and `Parallel::run` returns only after every job has finished.
unsafe impl<T: Send> Sync for SharedOut<T> {}

impl<T> SharedOut<T> {
    /// Elements `range` of the output.
    ///
    /// # Safety
    /// No two live borrows from one `SharedOut` may overlap.
    #[allow(clippy::mut_from_ref)]
    unsafe fn part(&self, start: usize, len: usize) -> &mut [T] {
        assert!(start + len <= self.1);
        // SAFETY: in bounds (checked); exclusivity is the caller's contract.
        unsafe { core::slice::from_raw_parts_mut(self.0.add(start), len) }
    }

    /// The whole output, for jobs that write interleaved parts of it (each
    /// its own channels of every pixel) through a kernel's raw pointer.
    fn ptr(&self) -> *mut T {
        self.0
    }
}

/// Split `dst` (`n` items of `item` elements each: output rows, or units)
/// into `jobs` disjoint runs of whole items and call `job(first_item, run)`
/// for each on `par`: the one place layers are cut between threads.
fn split_jobs<T: Send>(
    par: &dyn Parallel,
    jobs: usize,
    n: usize,
    item: usize,
    dst: &mut [T],
    job: &(dyn Fn(usize, &mut [T]) + Sync),
) {
    let out = SharedOut(dst.as_mut_ptr(), dst.len());
    par.run(jobs, &|i| {
        let (first, count) = share(n, jobs, i);
        // SAFETY: job i takes items share(i), disjoint from the others'.
        let part = unsafe { out.part(first * item, count * item) };
        job(first, part);
    });
}

/// Job `i` of `jobs` over `n` items: its `(first, count)`.
fn share(n: usize, jobs: usize, i: usize) -> (usize, usize) {
    let (a, b) = (n * i / jobs, n * (i + 1) / jobs);
    (a, b - a)
}

/// An observer that does nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoObserver;

impl Observer for NoObserver {
    fn sees_each_output(&self) -> bool {
        false
    }
}

/// A byte range of the arena, relative to its (aligned) start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Region {
    pub offset: usize,
    pub len: usize,
}

impl Region {
    /// One past the last byte.
    pub fn end(&self) -> usize {
        self.offset + self.len
    }
}

/// Where one layer reads and writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LayerPlan {
    pub input: Region,
    /// The second input of an Add or Concatenate (empty otherwise).
    pub other: Region,
    pub output: Region,
    /// Output is the input region: identity layers (no work), BatchNormalization
    /// and a standalone activation (in place). In a graph, an in-place layer
    /// whose input is still read later gets its own output, which it fills
    /// with a copy of the input first.
    pub in_place: bool,
}

/// The static memory plan of a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Bytes [`run`] needs: the two-ended layout of the activations, the
    /// kernels' `scratch_bytes` and `align_slack`.
    pub arena_bytes: usize,
    /// Max over the layers of input + output bytes (identity layers count
    /// their input only; a graph's Add and Concatenate both inputs): what an
    /// executor needs that keeps every layer's inputs and output in separate
    /// buffers; for a stack the activations' part of the arena
    /// (`arena_bytes - scratch_bytes - align_slack`) never exceeds it (a
    /// graph also keeps tensors that later layers read).
    pub max_layer_io_bytes: usize,
    /// Layer attaining `max_layer_io_bytes`.
    pub peak_layer: usize,
    /// Extra bytes so an arena starting at any address can be aligned for f16
    /// (1 for f16 models, 0 for int8).
    pub align_slack: usize,
    /// Kernel scratch behind the activations (the most any layer's kernel
    /// takes, [`crate::kernels::generic::scratch`]): part of `arena_bytes`.
    pub scratch_bytes: usize,
    /// Bytes of one input example.
    pub input_bytes: usize,
    /// Where the input sits in the work area (0 for a stack).
    pub input_offset: usize,
    /// Bytes of the output (logits).
    pub output_bytes: usize,
    layers: [LayerPlan; MAX_LAYERS],
    len: usize,
}

impl Plan {
    /// Per-layer placement, in order.
    pub fn layers(&self) -> &[LayerPlan] {
        &self.layers[..self.len]
    }
}

/// Why a model could not run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineError {
    /// The input is not one example of the model's input shape.
    InputLength { expected: usize, got: usize },
    /// The arena is smaller than [`Plan::arena_bytes`].
    ArenaTooSmall { needed: usize, given: usize },
    /// A Conv2D, Dense or BatchNormalization layer has no weights.
    MissingWeights { layer: usize },
    /// A MaxPool2D, Flatten or Dropout layer carries weights.
    UnexpectedWeights { layer: usize },
    /// A layer's weights are not of the model's precision.
    PrecisionMismatch { layer: usize, model: Precision },
    /// A weight array has the wrong number of elements for the layer's shape.
    WeightLength { layer: usize, what: &'static str, expected: usize, got: usize },
    /// An int8 zero point outside `[-128, 127]` (`layer: None` is the model input).
    BadZeroPoint { layer: Option<usize>, zero_point: i32 },
    /// A requantization shift outside `[-31, 30]`.
    BadShift { layer: usize, channel: usize, shift: i32 },
    /// An int8 MaxPool2D, Flatten or Dropout whose output quantization differs
    /// from its input's (they cannot requantize).
    QuantMismatch { layer: usize },
    /// A tensor's size does not fit this target's address space.
    TooLarge,
    /// A layer this engine cannot run yet.
    Unsupported { layer: usize },
    /// An int8 Softmax whose output is not quantized with scale 1/256 and
    /// zero point -128 (`output`), or whose input scale is below 2^-26: the
    /// int8 softmax TFLite defines refuses both in its Prepare.
    SoftmaxQuant { layer: usize, output: bool },
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EngineError::InputLength { expected, got } => {
                write!(f, "input has {got} bytes but the model takes {expected}")
            }
            EngineError::ArenaTooSmall { needed, given } => {
                write!(f, "arena too small: {needed} bytes needed, {given} given")
            }
            EngineError::MissingWeights { layer } => write!(f, "layer {layer} has no weights"),
            EngineError::UnexpectedWeights { layer } => {
                write!(f, "layer {layer} carries weights but has no parameters")
            }
            EngineError::PrecisionMismatch { layer, model } => {
                write!(f, "layer {layer} weights are not {} like the model", model.name())
            }
            EngineError::WeightLength { layer, what, expected, got } => {
                write!(f, "layer {layer}: {what} has {got} elements, expected {expected}")
            }
            EngineError::BadZeroPoint { layer: Some(l), zero_point } => {
                write!(f, "layer {l}: zero point {zero_point} outside [-128, 127]")
            }
            EngineError::BadZeroPoint { layer: None, zero_point } => {
                write!(f, "input zero point {zero_point} outside [-128, 127]")
            }
            EngineError::BadShift { layer, channel, shift } => {
                write!(f, "layer {layer} channel {channel}: shift {shift} outside [-31, 30]")
            }
            EngineError::QuantMismatch { layer } => {
                write!(f, "layer {layer} cannot requantize but its output quantization differs from its input's")
            }
            EngineError::TooLarge => f.write_str("a tensor does not fit this target's address space"),
            EngineError::Unsupported { layer } => write!(f, "layer {layer}: this engine cannot run it yet"),
            EngineError::SoftmaxQuant { layer, output: true } => {
                write!(f, "layer {layer}: an int8 Softmax's output must be quantized with scale 1/256, zero point -128")
            }
            EngineError::SoftmaxQuant { layer, output: false } => {
                write!(f, "layer {layer}: an int8 Softmax's input scale must be at least 2^-26")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for EngineError {}

/// Bytes of `shape` at `bytes_per` bytes an element (saturating: an
/// impossible size makes the arena check fail instead of wrapping).
pub(crate) fn tensor_bytes(shape: Shape, bytes_per: usize) -> usize {
    usize::try_from(shape.elements()).ok().and_then(|n| n.checked_mul(bytes_per)).unwrap_or(usize::MAX)
}

/// Identity layers pass their input through without touching the arena.
pub(crate) fn is_identity(layer: &Layer) -> bool {
    matches!(layer, Layer::Flatten | Layer::Dropout { .. })
}

/// Plan the arena of `model` (depends only on its layers, the tensors they
/// read and its precision): a stack with the two-ended ping-pong (module
/// docs), a graph by tensor lifetimes ([`crate::arena::greedy`]).
pub fn plan(model: &QuantModel<'_>) -> Plan {
    let mut slot = MaybeUninit::uninit();
    plan_into(model, &mut slot);
    // SAFETY: `plan_into` writes the whole plan.
    unsafe { slot.assume_init() }
}

/// [`plan`] into `slot`, the per-layer table written where it stays (no
/// copy of a whole plan on a device's stack).
pub(crate) fn plan_into<'s>(model: &QuantModel<'_>, slot: &'s mut MaybeUninit<Plan>) -> &'s mut Plan {
    let at = slot.as_mut_ptr();
    // SAFETY: every field is written through a raw pointer (the table slot
    // by slot: no whole `Plan` is built on the stack and copied) before the
    // whole is assumed initialised.
    let out = unsafe {
        (&raw mut (*at).arena_bytes).write(0);
        (&raw mut (*at).max_layer_io_bytes).write(0);
        (&raw mut (*at).peak_layer).write(0);
        (&raw mut (*at).align_slack).write(match model.precision {
            Precision::Int8 => 0,
            Precision::F16 => 1,
        });
        (&raw mut (*at).scratch_bytes).write(scratch_bytes(model));
        (&raw mut (*at).input_bytes).write(0);
        (&raw mut (*at).input_offset).write(0);
        (&raw mut (*at).output_bytes).write(0);
        let table = (&raw mut (*at).layers).cast::<LayerPlan>();
        for i in 0..MAX_LAYERS {
            table.add(i).write(LayerPlan::default());
        }
        (&raw mut (*at).len).write(model.spec.layers().len());
        slot.assume_init_mut()
    };
    if model.spec.is_stack() {
        plan_stack(model, out);
    } else {
        plan_graph(model, out);
    }
    out
}

// Never inlined: each planner's arrays take their own frame only while it
// runs (a device's stack is a few KiB).
#[inline(never)]
fn plan_stack(model: &QuantModel<'_>, out: &mut Plan) {
    let bytes = model.precision.activation_bytes();
    let spec = &model.spec;
    let input_bytes = tensor_bytes(spec.input(), bytes);
    // First pass: sizes.
    let mut need = input_bytes;
    let mut max_io = input_bytes;
    let mut peak_layer = 0;
    for (i, layer, inp, out) in spec.shapes() {
        let (ib, ob) = (tensor_bytes(inp, bytes), tensor_bytes(out, bytes));
        let io = if is_identity(layer) { ib } else { ib.saturating_add(ob) };
        if io > max_io {
            max_io = io;
            peak_layer = i;
        }
        let here = match layer {
            l if is_identity(l) => ib,
            Layer::BatchNorm { .. } => ib,
            _ => ib.saturating_add(ob),
        };
        need = need.max(here);
    }
    // Second pass: placement, alternating ends.
    let layers = &mut out.layers;
    let mut cur = Region { offset: 0, len: input_bytes };
    let mut low = true;
    let mut output_bytes = input_bytes;
    for (i, layer, _, out) in spec.shapes() {
        let ob = tensor_bytes(out, bytes);
        let lp = if is_identity(layer) || matches!(layer, Layer::BatchNorm { .. }) {
            LayerPlan { input: cur, other: Region::default(), output: cur, in_place: true }
        } else {
            let output =
                if low { Region { offset: need.saturating_sub(ob), len: ob } } else { Region { offset: 0, len: ob } };
            low = !low;
            LayerPlan { input: cur, other: Region::default(), output, in_place: false }
        };
        cur = lp.output;
        output_bytes = ob;
        layers[i] = lp;
    }
    out.arena_bytes = need.saturating_add(out.scratch_bytes).saturating_add(out.align_slack);
    out.max_layer_io_bytes = max_io;
    out.peak_layer = peak_layer;
    out.input_bytes = input_bytes;
    out.output_bytes = output_bytes;
}

/// Whether a layer runs in place on its input's bytes when nothing else reads them.
fn runs_in_place(layer: &Layer) -> bool {
    matches!(layer, Layer::BatchNorm { .. } | Layer::Activation(_))
}

/// A graph's plan: each tensor a buffer alive from its producer to its last
/// reader, placed by TFLite Micro's greedy first fit. Identity layers share
/// their input's buffer; BatchNormalization and a standalone activation
/// share it too when no later layer reads it, else they get their own.
#[inline(never)]
fn plan_graph(model: &QuantModel<'_>, out: &mut Plan) {
    use crate::arena::{greedy, tensor_buffers, Buffer, MAX_BUFFERS};
    let bytes = model.precision.activation_bytes();
    let spec = &model.spec;
    let (layers_in, inputs) = (spec.layers(), spec.inputs());
    let n = layers_in.len();
    let size = |t: usize| tensor_bytes(spec.tensor(t), bytes);
    // Identity layers always share their input's buffer; BN and a standalone
    // activation only when no later layer reads a tensor in that buffer.
    let shares_input = |i: usize, root: &[usize]| {
        let r = root[inputs[i].main as usize];
        let read_later = || {
            inputs[i + 1..].iter().any(|q| {
                [Some(q.main), q.other]
                    .into_iter()
                    .flatten()
                    .any(|t| (t as usize) < root.len() && root[t as usize] == r)
            })
        };
        is_identity(&layers_in[i]) || (runs_in_place(&layers_in[i]) && !read_later())
    };
    // root[t]: the buffer tensor t lives in (the tensor that owns it).
    let (mut root, mut buffers) = ([0usize; MAX_BUFFERS], [Buffer::default(); MAX_BUFFERS]);
    tensor_buffers(spec, size, shares_input, &mut root, &mut buffers);
    let mut offsets = [0usize; MAX_BUFFERS];
    let need = greedy(&buffers[..=n], bytes, &mut offsets);
    let region = |t: usize| Region { offset: offsets[root[t]], len: size(t) };
    let layers = &mut out.layers;
    let (mut max_io, mut peak_layer) = (size(0), 0);
    for (i, (layer, reads)) in layers_in.iter().zip(inputs).enumerate() {
        let other = reads.other.map_or(Region::default(), |t| region(t as usize));
        let shared = root[i + 1] != i + 1;
        let lp = LayerPlan { input: region(reads.main as usize), other, output: region(i + 1), in_place: shared };
        let io = if is_identity(layer) {
            lp.input.len
        } else {
            lp.input.len.saturating_add(other.len).saturating_add(if shared { 0 } else { lp.output.len })
        };
        if io > max_io {
            (max_io, peak_layer) = (io, i);
        }
        layers[i] = lp;
    }
    out.arena_bytes = need.saturating_add(out.scratch_bytes).saturating_add(out.align_slack);
    out.max_layer_io_bytes = max_io;
    out.peak_layer = peak_layer;
    out.input_bytes = size(0);
    out.input_offset = offsets[0];
    out.output_bytes = size(n);
}

/// The most kernel scratch any layer of `model` takes (the int8 Conv2D's,
/// [`k8::conv2d_scratch_bytes`], and ADD's table; the other kernels take
/// none). Planned on every target, so the desktop's arena figures are the device's.
pub fn scratch_bytes(model: &QuantModel<'_>) -> usize {
    if model.precision != Precision::Int8 {
        return 0;
    }
    let mut most = 0;
    for (_, layer, inp, _) in model.spec.shapes() {
        if let Layer::Conv2D(c) = layer {
            let need = ConvGeom::from_spec(c, inp).map_or(usize::MAX, |g| k8::conv2d_scratch_bytes(&g));
            most = most.max(need);
        }
        if let Layer::Add { .. } = layer {
            most = most.max(crate::kernels::generic::scratch::ADD_INT8_SCRATCH_BYTES);
        }
    }
    most
}

fn check_zp(layer: Option<usize>, q: TensorQuant) -> Result<(), EngineError> {
    if (-128..=127).contains(&q.zero_point) {
        Ok(())
    } else {
        Err(EngineError::BadZeroPoint { layer, zero_point: q.zero_point })
    }
}

fn check_len(layer: usize, what: &'static str, expected: usize, got: usize) -> Result<(), EngineError> {
    if expected == got {
        Ok(())
    } else {
        Err(EngineError::WeightLength { layer, what, expected, got })
    }
}

fn check_int8(layer: usize, w: &Int8Weights<'_>, weights: usize, channels: usize) -> Result<(), EngineError> {
    check_len(layer, "weights", weights, w.weights.len())?;
    check_len(layer, "bias", channels, w.bias.len())?;
    check_len(layer, "multiplier", channels, w.multiplier.len())?;
    check_len(layer, "shift", channels, w.shift.len())?;
    if let Some((channel, &shift)) = w.shift.iter().enumerate().find(|(_, s)| !(-31..=30).contains(*s)) {
        return Err(EngineError::BadShift { layer, channel, shift });
    }
    Ok(())
}

fn check_f16(layer: usize, w: &F16Weights<'_>, weights: usize, channels: usize) -> Result<(), EngineError> {
    check_len(layer, "weights", weights, w.weights.len())?;
    check_len(layer, "bias", channels, w.bias.len())
}

/// Check everything [`run`] relies on (what [`prepare`] does first): weights present, of the model's
/// precision and of the right lengths; int8 zero points and shifts in range;
/// non-requantizing int8 layers keep their input's quantization.
pub fn validate(model: &QuantModel<'_>) -> Result<(), EngineError> {
    let int8 = model.precision == Precision::Int8;
    if int8 {
        check_zp(None, model.input)?;
    }
    let data = model.layer_data();
    for (i, layer, inp, _) in model.spec.shapes() {
        let d = &data[i];
        let in_q = tensor_quant(model, model.spec.inputs()[i].main);
        let sizes = |n: u64| usize::try_from(n).map_err(|_| EngineError::TooLarge);
        let Some((weights, channels)) = layer.weight_counts(inp) else {
            if d.weights != LayerWeights::None {
                return Err(EngineError::UnexpectedWeights { layer: i });
            }
            if int8 && (layer.is_binary() || matches!(layer, Layer::GlobalAvgPool)) {
                // Add, Concatenate and the mean (TFLite's MEAN) requantize to their own output.
                check_zp(Some(i), d.output)?;
            } else if int8 && matches!(layer, Layer::Softmax) {
                k8::SoftmaxParams::new(in_q, d.output)
                    .map_err(|e| EngineError::SoftmaxQuant { layer: i, output: e == k8::SoftmaxQuantError::Output })?;
            } else if int8 && d.output != in_q {
                // Pools, reshapes and a standalone activation cannot requantize.
                return Err(EngineError::QuantMismatch { layer: i });
            }
            continue;
        };
        let (weights, channels) = (sizes(weights)?, sizes(channels)?);
        match (&d.weights, model.precision) {
            (LayerWeights::None, _) => return Err(EngineError::MissingWeights { layer: i }),
            (LayerWeights::Int8(w), Precision::Int8) => check_int8(i, w, weights, channels)?,
            (LayerWeights::F16(w), Precision::F16) => check_f16(i, w, weights, channels)?,
            _ => return Err(EngineError::PrecisionMismatch { layer: i, model: model.precision }),
        }
        if int8 {
            check_zp(Some(i), d.output)?;
        }
    }
    Ok(())
}

/// The quantization of tensor `t` (0: the model input; `i + 1`: layer `i`'s output).
pub(crate) fn tensor_quant(model: &QuantModel<'_>, t: u16) -> TensorQuant {
    match (t as usize).checked_sub(1) {
        None => model.input,
        Some(i) => model.layer_data().get(i).map_or(model.input, |d| d.output),
    }
}

/// View bytes as int8 values.
pub(crate) fn as_i8(b: &[u8]) -> &[i8] {
    // SAFETY: i8 and u8 have the same size, alignment and validity (every bit pattern).
    unsafe { core::slice::from_raw_parts(b.as_ptr().cast::<i8>(), b.len()) }
}

pub(crate) fn as_i8_mut(b: &mut [u8]) -> &mut [i8] {
    // SAFETY: as in `as_i8`; the exclusive borrow moves into the result.
    unsafe { core::slice::from_raw_parts_mut(b.as_mut_ptr().cast::<i8>(), b.len()) }
}

/// View 2-byte-aligned bytes as f16 values (the plan keeps every region even
/// and the arena start aligned, so the prefix and suffix are always empty).
pub(crate) fn as_f16(b: &[u8]) -> &[f16] {
    // SAFETY: f16 is a transparent u16: every bit pattern is valid.
    let (pre, mid, post) = unsafe { b.align_to::<f16>() };
    debug_assert!(pre.is_empty() && post.is_empty());
    mid
}

pub(crate) fn as_f16_mut(b: &mut [u8]) -> &mut [f16] {
    // SAFETY: as in `as_f16`.
    let (pre, mid, post) = unsafe { b.align_to_mut::<f16>() };
    debug_assert!(pre.is_empty() && post.is_empty());
    mid
}

/// Borrow a layer's input (shared) and output (exclusive) regions, which the
/// plan keeps disjoint.
/// The activations' work area and the kernels' scratch behind it, from an
/// arena whose aligned start is `base` and whose plan takes `planned` bytes
/// (activations and scratch, without the alignment slack).
pub(crate) fn work_and_scratch(
    arena: &mut [u8],
    base: usize,
    planned: usize,
    scratch_bytes: usize,
) -> (&mut [u8], &mut [u8]) {
    arena[base..base + planned].split_at_mut(planned - scratch_bytes)
}

/// Borrow two input regions (shared; they may be the same tensor) and an
/// output region (exclusive) that the plan keeps disjoint from both.
pub(crate) fn split2(work: &mut [u8], a: Region, b: Region, out: Region) -> (&[u8], &[u8], &mut [u8]) {
    let (low, rest) = work.split_at_mut(out.offset);
    let (dst, high) = rest.split_at_mut(out.len);
    let (low, high): (&[u8], &[u8]) = (low, high);
    let pick = |r: Region| {
        if r.end() <= out.offset {
            &low[r.offset..r.end()]
        } else {
            &high[r.offset - out.end()..r.end() - out.end()]
        }
    };
    (pick(a), pick(b), dst)
}

pub(crate) fn split(work: &mut [u8], inp: Region, out: Region) -> (&[u8], &mut [u8]) {
    if inp.end() <= out.offset {
        let (a, b) = work.split_at_mut(out.offset);
        (&a[inp.offset..inp.end()], &mut b[..out.len])
    } else {
        let (a, b) = work.split_at_mut(inp.offset);
        (&b[..inp.len], &mut a[out.offset..out.end()])
    }
}

/// One layer's work, resolved by [`prepare`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum Step {
    /// Flatten and Dropout: nothing to do.
    Identity,
    /// BatchNormalization in place (`prm` is the int8 clamp; unused for f16).
    BatchNorm { prm: Int8Params },
    /// Conv2D (`prm` unused for f16). `six`: ReLU6, whose int8 upper clamp
    /// `prm` carries and whose f16 clamp follows the kernel.
    Conv { g: ConvGeom, prm: Int8Params, relu: bool, six: bool },
    /// Dense (`prm` unused for f16).
    Dense { prm: Int8Params, relu: bool, six: bool },
    /// MaxPool2D.
    MaxPool { g: PoolGeom },
    /// AveragePooling2D (and the f16 global average pool: a window over the whole image).
    AvgPool { g: ConvGeom },
    /// GlobalAveragePooling2D: int8 TFLite's MEAN (`p`), f16 the average pool `g`.
    Mean { p: k8::MeanParams, g: ConvGeom },
    /// Softmax over rows of `depth` values (`p`: the int8 arithmetic).
    Softmax { p: k8::SoftmaxParams, depth: usize },
    /// A standalone ReLU/ReLU6 in place (`prm`: the int8 clamp).
    Activation { prm: Int8Params, relu: bool, six: bool },
    /// Add of two tensors (`p`: the int8 arithmetic; `relu`/`six` for f16).
    Add { p: k8::AddParams, relu: bool, six: bool },
    /// Concatenate on channels: `pixels` pixels, each input requantized (int8).
    Concat { pixels: usize, a: k8::Requant, b: k8::Requant },
}

/// `p` rebuilt where the kernel is called, so the compiler sees the constant
/// clamp bounds (-128 without ReLU, 127 always) and folds them into the
/// requantization: loading them from the prepared steps cost ~10 instructions
/// per BatchNormalization output on the Cortex-M4 (same bytes either way).
#[inline(always)]
pub(crate) fn with_constant_clamp(p: Int8Params, relu: bool, six: bool) -> Int8Params {
    if six {
        // ReLU6's upper bound depends on the output scale: prepared, not constant.
        return p;
    }
    Int8Params::new(p.in_zp, p.out_zp, if relu { Activation::Relu } else { Activation::None })
}

/// The window of a global average pool over an `h x w x c` input: one
/// output pixel, every input pixel counted.
pub(crate) fn global_pool_geom(input: Shape) -> Option<ConvGeom> {
    let Shape::Image { h, w, c } = input else { return None };
    let (h, w, c) = (h as usize, w as usize, c as usize);
    ConvGeom::general((h, w, c), c, Hw::new(h as u32, w as u32), Hw::ONE, Hw::ONE, Padding::Valid)
}

/// The window of an AveragePooling2D layer on its input.
pub(crate) fn avg_pool_geom(p: &AvgPool2D, input: Shape) -> Option<ConvGeom> {
    let Shape::Image { h, w, c } = input else { return None };
    let (h, w, c) = (h as usize, w as usize, c as usize);
    ConvGeom::general((h, w, c), c, p.pool, p.stride, Hw::ONE, p.padding)
}

/// A model checked and planned once, ready to [`run`] any number of times:
/// the model, its [`Plan`] and each layer's constants (geometry, zero
/// points, activation clamps). Only [`prepare`] makes one, so holding a
/// `Prepared` means the model passed [`validate`].
#[derive(Clone, Debug)]
pub struct Prepared<'m> {
    model: &'m QuantModel<'m>,
    plan: Plan,
    pub(crate) steps: [Step; MAX_LAYERS],
    /// Input-major dense weights the host lent ([`Prepared::with_input_major`]).
    input_major: Option<&'m dyn InputMajorWeights>,
    /// Winograd-transformed conv filters the host lent ([`Prepared::with_winograd`]).
    winograd: Option<&'m dyn WinogradFilters>,
    /// The pixel kernels' filter sums and packings the host lent
    /// ([`Prepared::with_pixel_filters`]).
    pixel_filters: Option<&'m dyn PixelFilterLayouts>,
}

impl<'m> Prepared<'m> {
    /// The model this was prepared from.
    pub fn model(&self) -> &'m QuantModel<'m> {
        self.model
    }
    /// Its arena plan ([`Plan::arena_bytes`] is what [`run`] needs).
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Run the int8 Dense layers that `layouts` has copies of through the
    /// kernel that reads only the weight rows of inputs other than the zero
    /// point ([`k8::dense_units_input_major`], where the CPU has it): the
    /// same bytes. Each copy must be the transpose of its layer's weights.
    pub fn with_input_major(&mut self, layouts: &'m dyn InputMajorWeights) -> Result<(), EngineError> {
        for (layer, d) in self.model.layer_data().iter().enumerate() {
            let copy = layouts.layer(layer);
            if copy.is_empty() {
                continue;
            }
            let (Step::Dense { .. }, LayerWeights::Int8(w)) = (self.steps[layer], d.weights) else {
                return Err(EngineError::UnexpectedWeights { layer });
            };
            if copy.len() != w.weights.len() {
                let (expected, got) = (w.weights.len(), copy.len());
                return Err(EngineError::WeightLength { layer, what: "input-major dense weights", expected, got });
            }
            if let Some(dead) = layouts.dead(layer) {
                let (expected, got) = (w.weights.len() / w.bias.len().max(1), dead.values.len());
                if got != expected {
                    return Err(EngineError::WeightLength { layer, what: "dense dead inputs", expected, got });
                }
                let (expected, got) = (w.bias.len(), dead.sums.len());
                if got != expected {
                    return Err(EngineError::WeightLength { layer, what: "dense dead inputs' sums", expected, got });
                }
            }
        }
        self.input_major = Some(layouts);
        Ok(())
    }

    /// Run the int8 Conv2D layers that `filters` has transformed filters
    /// for through exact integer Winograd ([`k8::conv2d_winograd`], where
    /// the CPU has it): the same bytes. Each layer's filters must be
    /// [`k8::transform_winograd_filters`]'s for it (their length is checked).
    pub fn with_winograd(&mut self, filters: &'m dyn WinogradFilters) -> Result<(), EngineError> {
        for layer in 0..self.model.layer_data().len() {
            let lent = filters.layer(layer);
            if lent.is_empty() {
                continue;
            }
            let Step::Conv { g, .. } = self.steps[layer] else {
                return Err(EngineError::UnexpectedWeights { layer });
            };
            let expected = k8::winograd_filter_len(&g);
            if lent.len() != expected {
                let got = lent.len();
                return Err(EngineError::WeightLength { layer, what: "Winograd conv filters", expected, got });
            }
        }
        self.winograd = Some(filters);
        Ok(())
    }

    /// Run the int8 Conv2D layers that `layouts` has [`k8::PixelFilters`]
    /// for through [`k8::conv2d_pixels`] on them, so that no call sums or
    /// repacks the filters: the same bytes. Each layer's parts must have
    /// [`k8::pixel_filter_lens`] (checked; their contents are
    /// [`k8::build_pixel_filters`]'s, which only the host can vouch for).
    pub fn with_pixel_filters(&mut self, layouts: &'m dyn PixelFilterLayouts) -> Result<(), EngineError> {
        for layer in 0..self.model.layer_data().len() {
            let lent = layouts.layer(layer);
            if lent.is_empty() {
                continue;
            }
            let Step::Conv { g, prm, relu, six } = self.steps[layer] else {
                return Err(EngineError::UnexpectedWeights { layer });
            };
            let expected = k8::pixel_filter_lens(&g, &with_constant_clamp(prm, relu, six));
            let parts = [
                ("pixel kernel filter sums", expected.sums, lent.sums.len()),
                ("pixel kernel packed filters", expected.packed, lent.packed.len()),
                ("pixel kernel widened filters", expected.widened, lent.widened.len()),
            ];
            if let Some(&(what, expected, got)) = parts.iter().find(|(_, e, g)| e != g) {
                return Err(EngineError::WeightLength { layer, what, expected, got });
            }
        }
        self.pixel_filters = Some(layouts);
        Ok(())
    }

    /// The arena a host run with `jobs` threads takes to run every layer on
    /// what the host lent: the planned arena ([`Plan::arena_bytes`], the
    /// device's), then one scratch part a job for the kernels that read lent
    /// layouts (the Winograd convs', [`k8::winograd_scratch_bytes`]). On the
    /// planned arena alone, those layers run their planned kernels: the same
    /// bytes, slower.
    pub fn host_arena_bytes(&self, jobs: usize) -> usize {
        let part = (0..self.model.layer_data().len())
            .filter(|&i| self.winograd_of(i).is_some())
            .filter_map(|i| match self.steps[i] {
                Step::Conv { g, .. } => Some(k8::winograd_scratch_bytes(&g)),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        self.plan.arena_bytes + jobs.max(1) * part
    }

    /// Layer `i`'s transformed filters, where lent and this CPU runs the
    /// Winograd kernel for the layer.
    fn winograd_of(&self, i: usize) -> Option<&'m [i16]> {
        let lent = self.winograd?.layer(i);
        let Step::Conv { g, prm, .. } = self.steps[i] else { return None };
        (!lent.is_empty() && k8::winograd_serves(&g, &prm)).then_some(lent)
    }

    /// Layer `i`'s lent [`k8::PixelFilters`], where lent (their lengths were
    /// checked for this CPU's pixel kernel, which serves the layer).
    fn pixel_filters_of(&self, i: usize) -> Option<k8::PixelFilters<'m>> {
        let lent = self.pixel_filters?.layer(i);
        (!lent.is_empty()).then_some(lent)
    }

    /// Layer `i`'s input-major weights, and its inputs' own dead values
    /// where they have them, where lent and this CPU's kernel takes its
    /// input's zero point.
    fn input_major_of(&self, i: usize) -> Option<(&'m [i8], Option<k8::DeadInputs<'m>>)> {
        let layouts = self.input_major?;
        let copy = layouts.layer(i);
        let Step::Dense { prm, .. } = self.steps[i] else { return None };
        (!copy.is_empty() && k8::can_skip_dense_inputs(prm.in_zp)).then(|| (copy, layouts.dead(i)))
    }
}

/// Dense weights laid out input-major (`[inputs][units]`, the transpose of
/// the model's `[units][inputs]`), lent to [`Prepared::with_input_major`]. A
/// host-side layout: in that order a run of zero inputs is a run of weight
/// rows that need not be read. The host builds them
/// (`host_layouts::InputMajorCopies`, with `alloc`);
/// nothing here allocates.
pub trait InputMajorWeights: Sync + fmt::Debug {
    /// Layer `i`'s copy, empty for none.
    fn layer(&self, i: usize) -> &[i8];
    /// Where layer `i`'s inputs are dead at values of their own rather than
    /// at the zero point ([`k8::DeadInputs`]): those values and their sums.
    fn dead(&self, _i: usize) -> Option<k8::DeadInputs<'_>> {
        None
    }
}

/// Int8 Conv2D filters transformed for exact integer Winograd
/// ([`k8::transform_winograd_filters`]: 3.6x the int8 filters' bytes for 3x3, 2.4x for 5x5), lent
/// to [`Prepared::with_winograd`]. The host builds them
/// (`host_layouts::WinogradCopies`, with `alloc`); nothing here allocates.
pub trait WinogradFilters: Sync + fmt::Debug {
    /// Layer `i`'s transformed filters, empty for none.
    fn layer(&self, i: usize) -> &[i16];
}

/// What the int8 conv pixel kernels read besides the filters as stored
/// ([`k8::PixelFilters`]: filter sums, packed filters), lent to
/// [`Prepared::with_pixel_filters`]. The host builds them
/// (`host_layouts::PixelFilterCopies`, with `alloc`); nothing here allocates.
pub trait PixelFilterLayouts: Sync + fmt::Debug {
    /// Layer `i`'s parts, all empty for none.
    fn layer(&self, i: usize) -> k8::PixelFilters<'_>;
}

/// Check `model` fully ([`validate`]), plan its arena ([`plan`]) and compute
/// every layer's constants, once. Never allocates; the result runs with
/// [`run`]/[`run_with`] without being checked again.
pub fn prepare<'m>(model: &'m QuantModel<'m>) -> Result<Prepared<'m>, EngineError> {
    let mut slot = MaybeUninit::uninit();
    prepare_into(model, &mut slot)?;
    // SAFETY: `prepare_into` returned Ok: every field is written.
    Ok(unsafe { slot.assume_init() })
}

/// [`prepare`] into `slot`, each field written where it stays (a device
/// keeps its preparation in a static: no copy of it passes over the stack).
/// On an error `slot` may be partly written and stays uninitialised.
pub fn prepare_into<'s, 'm>(
    model: &'m QuantModel<'m>,
    slot: &'s mut MaybeUninit<Prepared<'m>>,
) -> Result<&'s mut Prepared<'m>, EngineError> {
    validate(model)?;
    let at = slot.as_mut_ptr();
    // SAFETY: `at` points to a whole `Prepared`; each field is written
    // through a raw pointer before anything reads it, and the whole is
    // assumed initialised only once all four are.
    unsafe {
        (&raw mut (*at).model).write(model);
        let plan_at = &raw mut (*at).plan;
        let p = plan_into(model, &mut *plan_at.cast::<MaybeUninit<Plan>>());
        if p.arena_bytes == usize::MAX || p.input_bytes == usize::MAX {
            return Err(EngineError::TooLarge);
        }
        let steps = &raw mut (*at).steps;
        steps.write([Step::Identity; MAX_LAYERS]);
        fill_steps(model, &mut *steps)?;
        (&raw mut (*at).input_major).write(None);
        (&raw mut (*at).winograd).write(None);
        (&raw mut (*at).pixel_filters).write(None);
        Ok(slot.assume_init_mut())
    }
}

/// Every layer's constants ([`Step`]s) of a validated model.
fn fill_steps(model: &QuantModel<'_>, steps: &mut [Step; MAX_LAYERS]) -> Result<(), EngineError> {
    let data = model.layer_data();
    for (i, layer, inp, _) in model.spec.shapes() {
        let d = &data[i];
        let reads = model.spec.inputs()[i];
        let in_q = tensor_quant(model, reads.main);
        let other_q = tensor_quant(model, reads.other.unwrap_or(reads.main));
        let prm = |activation| Int8Params::for_output(in_q.zero_point, d.output, activation);
        let relu = |a| matches!(a, Activation::Relu | Activation::Relu6);
        steps[i] = match *layer {
            Layer::Flatten | Layer::Dropout { .. } => Step::Identity,
            Layer::BatchNorm { .. } => Step::BatchNorm { prm: prm(Activation::None) },
            Layer::Conv2D(c) => Step::Conv {
                g: ConvGeom::from_spec(&c, inp).ok_or(EngineError::TooLarge)?,
                prm: prm(c.activation),
                relu: relu(c.activation),
                six: c.activation == Activation::Relu6,
            },
            Layer::Dense { activation, .. } => {
                Step::Dense { prm: prm(activation), relu: relu(activation), six: activation == Activation::Relu6 }
            }
            Layer::MaxPool2D { pool, stride } => {
                Step::MaxPool { g: PoolGeom::from_spec(pool, stride, inp).ok_or(EngineError::TooLarge)? }
            }
            Layer::AvgPool2D(p) => Step::AvgPool { g: avg_pool_geom(&p, inp).ok_or(EngineError::TooLarge)? },
            Layer::GlobalAvgPool => {
                let g = global_pool_geom(inp).ok_or(EngineError::TooLarge)?;
                Step::Mean { p: k8::MeanParams::new(in_q, d.output, g.in_h.saturating_mul(g.in_w)), g }
            }
            Layer::Softmax => Step::Softmax {
                // f16 models carry no quantization: the int8 constants go unused.
                p: match model.precision {
                    Precision::Int8 => k8::SoftmaxParams::new(in_q, d.output)
                        .map_err(|_| EngineError::SoftmaxQuant { layer: i, output: true })?,
                    Precision::F16 => k8::SoftmaxParams { input_multiplier: 0, input_left_shift: 0, diff_min: 0 },
                },
                depth: inp.channels() as usize,
            },
            Layer::Activation(a) => Step::Activation { prm: prm(a), relu: relu(a), six: a == Activation::Relu6 },
            Layer::Add { activation } => Step::Add {
                p: k8::AddParams::new(in_q, other_q, d.output, activation),
                relu: relu(activation),
                six: activation == Activation::Relu6,
            },
            Layer::Concat => Step::Concat {
                pixels: match inp {
                    Shape::Image { h, w, .. } => (h as usize).saturating_mul(w as usize),
                    Shape::Flat(_) => 1,
                },
                a: k8::Requant::new(in_q, d.output),
                b: k8::Requant::new(other_q, d.output),
            },
        };
    }
    Ok(())
}

/// Run a prepared model on one example.
///
/// `input` holds the raw input tensor (NHWC): int8 values as bytes, or f16
/// values little-endian (see [`quantize_input`] and [`encode_f16_input`]).
/// `arena` must have at least `model.plan().arena_bytes` bytes, at any
/// address. Returns the last layer's output bytes inside `arena`: the
/// logits, softmax *not* applied. Never allocates; never panics (the model
/// was checked by [`prepare`]; only the input and arena sizes are checked
/// here). The x86 SIMD kernels (host builds) keep their scratch on the
/// stack instead: up to ~400 KB for an f16 Conv2D, well inside the 2 MiB a
/// spawned thread gets by default. The kernels on layouts the host lent
/// take theirs from the arena past the plan ([`Prepared::host_arena_bytes`]).
pub fn run<'a>(
    model: &Prepared<'_>,
    input: &[u8],
    arena: &'a mut [u8],
    observer: &mut dyn Observer,
) -> Result<&'a [u8], EngineError> {
    run_with(model, input, arena, observer, &SingleThread)
}

/// [`run`], splitting the int8 Conv2D and Dense layers into `par.jobs()`
/// jobs where the CPU has a kernel for part of a layer
/// ([`k8::can_split_conv`]); the same bytes as [`run`] whatever `par` does.
pub fn run_with<'a>(
    prepared: &Prepared<'_>,
    input: &[u8],
    arena: &'a mut [u8],
    observer: &mut dyn Observer,
    par: &dyn Parallel,
) -> Result<&'a [u8], EngineError> {
    let p = &prepared.plan;
    if input.len() != p.input_bytes {
        return Err(EngineError::InputLength { expected: p.input_bytes, got: input.len() });
    }
    input_slot(prepared, arena)?.copy_from_slice(input);
    run_layers(prepared, arena, observer, par)
}

/// Where in `arena` the model input goes: [`run_in_place`] runs on the bytes
/// written there (int8 values, or f16 little-endian), so a caller that
/// receives the input piece by piece (the firmware, from its serial port)
/// writes it straight into the arena instead of holding it twice.
pub fn input_slot<'a>(prepared: &Prepared<'_>, arena: &'a mut [u8]) -> Result<&'a mut [u8], EngineError> {
    let p = &prepared.plan;
    input_slot_of(prepared.model.precision, p.arena_bytes, p.input_offset, p.input_bytes, arena)
}

/// The input's bytes at the start of an arena's work area, once the arena is
/// known to hold `arena_bytes` (the whole-tensor and the banded plans alike).
pub(crate) fn input_slot_of(
    precision: Precision,
    arena_bytes: usize,
    input_offset: usize,
    input_bytes: usize,
    arena: &mut [u8],
) -> Result<&mut [u8], EngineError> {
    if arena.len() < arena_bytes {
        return Err(EngineError::ArenaTooSmall { needed: arena_bytes, given: arena.len() });
    }
    let base = input_base(precision, arena) + input_offset;
    Ok(&mut arena[base..base + input_bytes])
}

/// [`run`] on the input already written to [`input_slot`]`(prepared, arena)`:
/// the same bytes out as [`run`] with that input.
pub fn run_in_place<'a>(
    prepared: &Prepared<'_>,
    arena: &'a mut [u8],
    observer: &mut dyn Observer,
) -> Result<&'a [u8], EngineError> {
    input_slot(prepared, arena)?;
    run_layers(prepared, arena, observer, &SingleThread)
}

/// Where the work area starts in `arena`: f16 tensors need 2-byte alignment.
pub(crate) fn input_base(precision: Precision, arena: &[u8]) -> usize {
    match precision {
        Precision::Int8 => 0,
        // 0 or 1 for a byte pointer; anything else would be a platform oddity.
        Precision::F16 => arena.as_ptr().align_offset(2).min(1),
    }
}

/// The layers, on the input at [`input_slot`] (little-endian bytes; the
/// arena's size was checked there).
fn run_layers<'a>(
    prepared: &Prepared<'_>,
    arena: &'a mut [u8],
    observer: &mut dyn Observer,
    par: &dyn Parallel,
) -> Result<&'a [u8], EngineError> {
    let (model, p) = (prepared.model, &prepared.plan);
    // Past the planned arena: the host's scratch for lent layouts, if any
    // ([`Prepared::host_arena_bytes`]).
    let (arena, lent_scratch) = arena.split_at_mut(p.arena_bytes.min(arena.len()));
    let base = input_base(model.precision, arena);
    let (work, scratch) = work_and_scratch(arena, base, p.arena_bytes - p.align_slack, p.scratch_bytes);
    let first = Region { offset: p.input_offset, len: p.input_bytes };
    if model.precision == Precision::F16 {
        // Little-endian bytes to native f16 values, in place (a no-op on Arm and x86).
        for v in work[first.offset..first.end()].chunks_exact_mut(2) {
            let x = f16::from_le_bytes([v[0], v[1]]);
            v.copy_from_slice(&x.to_ne_bytes());
        }
    }
    let data = model.layer_data();
    let mut last = first;
    let fuse = !observer.sees_each_output();
    // Layer `i + 1` already ran with layer `i`: a BatchNormalization fused
    // into the conv before it, or a MaxPool2D run before its BatchNormalization.
    let mut ran_ahead = false;
    for ((i, _, _, out), (lp, step)) in model.spec.shapes().zip(p.layers().iter().zip(&prepared.steps)) {
        observer.layer_start(i);
        if ran_ahead {
            ran_ahead = false;
        } else if let Some(then) = fuse.then(|| batch_norm_after(prepared, i)).flatten() {
            let winograd = prepared.winograd_of(i).map(|u| (u, &mut *lent_scratch));
            let pixels = prepared.pixel_filters_of(i);
            run_conv_then_batch_norm(*step, data[i].weights, winograd, pixels, &then, work, lp, par);
            ran_ahead = true;
        } else if let Some((bn, reversing)) = fuse.then(|| pool_before_batch_norm(prepared, i)).flatten() {
            // The pool takes each reversing channel's min: a max of its bytes
            // flipped (`!x = -1 - x` reverses the int8 order), flipped back.
            let pool = &p.layers()[i + 1];
            if reversing {
                flip_reversing_channels(&bn, as_i8_mut(&mut work[lp.output.offset..lp.output.end()]));
            }
            run_layer(model.precision, i + 1, prepared.steps[i + 1], data[i + 1].weights, work, scratch, pool, par)?;
            if reversing {
                flip_reversing_channels(&bn, as_i8_mut(&mut work[pool.output.offset..pool.output.end()]));
            }
            let on_pooled = LayerPlan { input: pool.output, output: pool.output, ..*lp };
            run_layer(model.precision, i, *step, data[i].weights, work, scratch, &on_pooled, par)?;
            ran_ahead = true;
        } else {
            // An int8 Dense with a lent input-major copy reads the copy when
            // enough of its inputs are dead, an int8 Conv2D with lent
            // Winograd filters or pixel kernel filters runs on them; every
            // other layer runs as planned.
            let on_copy = prepared
                .input_major_of(i)
                .is_some_and(|(wt, dead)| run_dense_input_major(*step, data[i].weights, wt, dead, work, lp, par));
            let on_winograd = !on_copy
                && prepared
                    .winograd_of(i)
                    .is_some_and(|u| run_conv_winograd(*step, data[i].weights, u, lent_scratch, work, lp, par));
            let on_pixels = !on_copy
                && !on_winograd
                && prepared
                    .pixel_filters_of(i)
                    .is_some_and(|f| run_conv_by_pixels(*step, data[i].weights, &f, work, lp, par));
            if !on_copy && !on_winograd && !on_pixels {
                run_layer(model.precision, i, *step, data[i].weights, work, scratch, lp, par)?;
            }
        }
        last = lp.output;
        observer.layer_done(i, out, &work[last.offset..last.end()]);
    }
    let arena: &'a [u8] = arena;
    Ok(&arena[base + last.offset..base + last.end()])
}

/// The BatchNormalization that layer `i`, an int8 Conv2D, may apply in its
/// output stage: layer `i + 1` is one, works in place on the conv's output
/// (so nothing else reads the conv's own bytes), and this CPU's kernel for
/// the conv fuses it ([`k8::fuses_batch_norm`]).
fn batch_norm_after<'m>(prepared: &Prepared<'m>, i: usize) -> Option<k8::ThenBatchNorm<'m>> {
    let (Step::Conv { g, prm, relu, six }, Step::BatchNorm { prm: bn_prm }) =
        (prepared.steps[i], *prepared.steps.get(i + 1)?)
    else {
        return None;
    };
    let layers = prepared.plan.layers();
    let (conv, bn) = (layers[i], *layers.get(i + 1)?);
    let data = prepared.model.layer_data();
    let (LayerWeights::Int8(_), LayerWeights::Int8(w)) = (data[i].weights, data[i + 1].weights) else {
        return None;
    };
    let in_place = bn.input == conv.output && bn.output == conv.output;
    // Tensor i + 1 is layer i's output.
    let reads_conv = prepared.model.spec.inputs()[i + 1].is_stack(i + 1);
    (in_place
        && reads_conv
        && w.weights.len() == g.out_c
        && k8::fuses_batch_norm(&g, &with_constant_clamp(prm, relu, six)))
    .then_some(k8::ThenBatchNorm { p: with_constant_clamp(bn_prm, false, false), w })
}

/// Layer `i`'s weights if the engine may run it, an int8
/// BatchNormalization, after the MaxPool2D that follows it, on the pool's
/// output: a quarter of the values for a 3x3 stride-2 pool (AlexNet's first
/// two). The bytes are the same because each channel's BatchNormalization
/// is a monotone function of its input byte: non-decreasing where the
/// channel's weight is at least 0 (it then commutes with the pool's max),
/// non-increasing where it is negative, as a negative `gamma` gives (there
/// the max of the outputs is the output of the min, which the engine takes
/// as a max of flipped bytes). That holds while the channel's multiplier is
/// at least 0 and its accumulator cannot wrap (`|w (x - zp)| <= 32640`
/// beside the bias): the product and bias move one way with `x`, and the
/// requantization's rounding, shifts and clamps never reverse an order.
/// Only the pool may read the BatchNormalization's output, which never
/// exists; the observer must not look at each layer's output. With the
/// weights, whether any channel reverses (then the pool needs flips).
fn pool_before_batch_norm<'m>(prepared: &Prepared<'m>, i: usize) -> Option<(Int8Weights<'m>, bool)> {
    let model = prepared.model;
    let (Some(Step::BatchNorm { .. }), Some(Step::MaxPool { .. })) = (prepared.steps.get(i), prepared.steps.get(i + 1))
    else {
        return None;
    };
    let (Some(bn), Some(pool)) = (prepared.plan.layers().get(i), prepared.plan.layers().get(i + 1)) else {
        return None;
    };
    let LayerWeights::Int8(w) = model.layer_data()[i].weights else {
        return None;
    };
    let spec = &model.spec;
    let alone = bn.input == bn.output
        && pool.input == bn.output
        && spec.inputs()[i + 1].is_stack(i + 1)
        && spec.readers(i).eq([i + 1]);
    if !alone {
        return None;
    }
    // One pass over the channels: each monotone, and whether any reverses.
    let mut reversing = false;
    for ((&s, &m), &b) in w.weights.iter().zip(w.multiplier).zip(w.bias) {
        if m < 0 || b.checked_add(32_640).is_none() || b.checked_sub(32_640).is_none() {
            return None;
        }
        reversing |= s < 0;
    }
    Some((w, reversing))
}

/// Flip (`!x`) the bytes of the channels whose BatchNormalization weight is
/// negative, in `data` (whole pixels of `bn.weights.len()` channels): the
/// order of those channels reverses, so a max pool takes their min.
fn flip_reversing_channels(bn: &Int8Weights<'_>, data: &mut [i8]) {
    for px in data.chunks_exact_mut(bn.weights.len()) {
        for (v, &s) in px.iter_mut().zip(bn.weights) {
            // `s >> 7` is -1 (all bits) for a negative weight, else 0.
            *v ^= s >> 7;
        }
    }
}

/// An int8 Conv2D and the BatchNormalization [`batch_norm_after`] found for
/// it, as one layer: through Winograd where its filters are lent
/// (`winograd`: them and the host's scratch) and the scratch holds a job,
/// else split by output pixels as [`run_layer`] splits the conv, on the
/// pixel kernel's lent filters if any (`pixels`).
#[allow(clippy::too_many_arguments)]
fn run_conv_then_batch_norm(
    step: Step,
    weights: LayerWeights<'_>,
    winograd: Option<(&[i16], &mut [u8])>,
    pixels: Option<k8::PixelFilters<'_>>,
    then: &k8::ThenBatchNorm<'_>,
    work: &mut [u8],
    lp: &LayerPlan,
    par: &dyn Parallel,
) {
    let (Step::Conv { g, prm, relu, six }, LayerWeights::Int8(w)) = (step, weights) else {
        return;
    };
    let (src, dst) = split(work, lp.input, lp.output);
    let prm = with_constant_clamp(prm, relu, six);
    let (x, y) = (as_i8(src), as_i8_mut(dst));
    let on_winograd =
        winograd.is_some_and(|(u, scratch)| conv_winograd(&g, &prm, &w, u, x, y, par, Some(then), scratch));
    if !on_winograd {
        conv_by_pixels(&g, &prm, &w, pixels.as_ref(), x, y, par, Some(then));
    }
}

/// An int8 Conv2D through its pixel kernel on the layer's lent filters
/// `lent`, cut by output pixels: whether it ran (not for any other step).
fn run_conv_by_pixels(
    step: Step,
    weights: LayerWeights<'_>,
    lent: &k8::PixelFilters<'_>,
    work: &mut [u8],
    lp: &LayerPlan,
    par: &dyn Parallel,
) -> bool {
    let (Step::Conv { g, prm, relu, six }, LayerWeights::Int8(w)) = (step, weights) else {
        return false;
    };
    let prm = with_constant_clamp(prm, relu, six);
    if !k8::can_split_conv_pixels(&g, &prm) {
        return false;
    }
    let (src, dst) = split(work, lp.input, lp.output);
    conv_by_pixels(&g, &prm, &w, Some(lent), as_i8(src), as_i8_mut(dst), par, None);
    true
}

/// An int8 Conv2D through its lent Winograd filters `u`, its jobs' scratch
/// in `scratch`: whether it ran (not for any other step, nor without
/// scratch for one job).
fn run_conv_winograd(
    step: Step,
    weights: LayerWeights<'_>,
    u: &[i16],
    scratch: &mut [u8],
    work: &mut [u8],
    lp: &LayerPlan,
    par: &dyn Parallel,
) -> bool {
    let (Step::Conv { g, prm, relu, six }, LayerWeights::Int8(w)) = (step, weights) else {
        return false;
    };
    let (src, dst) = split(work, lp.input, lp.output);
    conv_winograd(&g, &with_constant_clamp(prm, relu, six), &w, u, as_i8(src), as_i8_mut(dst), par, None, scratch)
}

/// [`k8::conv2d_winograd`], one job a thread, split by output tiles: each
/// job transforms only its tiles' inputs and reads all the filters. (Split
/// by output channels instead, each job would read only its share of the
/// filters but transform every tile: conv 2-5 were 3-10 % slower so, with
/// the kernels capped at AVX2 on a Zen 4.) Each job takes its scratch part
/// from `scratch`, so there are at most as many jobs as parts; with none,
/// returns false and runs nothing.
#[allow(clippy::too_many_arguments)]
fn conv_winograd(
    g: &ConvGeom,
    prm: &Int8Params,
    w: &Int8Weights<'_>,
    u: &[i16],
    x: &[i8],
    dst: &mut [i8],
    par: &dyn Parallel,
    then: Option<&k8::ThenBatchNorm<'_>>,
    scratch: &mut [u8],
) -> bool {
    assert_eq!(dst.len(), g.output_len(), "winograd: output length");
    let (tiles, part) = (k8::winograd_tiles(g), k8::winograd_scratch_bytes(g));
    let jobs = par.jobs().min(tiles).min(scratch.len() / part.max(1));
    if jobs == 0 {
        return false;
    }
    let out = SharedOut(dst.as_mut_ptr(), dst.len());
    let parts = SharedOut(scratch.as_mut_ptr(), scratch.len());
    par.run(jobs, &|i| {
        let (first, count) = share(tiles, jobs, i);
        if count > 0 {
            // SAFETY: job i takes scratch part i, disjoint from the others'.
            let scratch = unsafe { parts.part(i * part, part) };
            // SAFETY: `out` holds the layer's output (asserted); job i writes
            // only the pixels of its tiles, disjoint from every other job's,
            // and `run` returns after all of them.
            unsafe { k8::conv2d_winograd(g, prm, w, u, x, out.ptr(), first..first + count, 0..g.out_c, then, scratch) }
        }
    });
    true
}

/// An int8 Dense through [`k8::dense_units_input_major`], its units cut
/// into `par`'s jobs, if at least a quarter of its inputs are dead (at the
/// zero point, or at their own values with `dead`): with fewer the skipped rows do not pay for the copy's gappy reads
/// and unpacks (FC7's shape, one thread: 0.77 against the row kernel's 0.61
/// ms with no input dead, level at a quarter, 0.37 against 0.42 at a half;
/// that is VNNI's kernel: AVX2's is ahead of its row kernel even with none
/// dead, 0.83 against 1.08 ms).
/// Returns whether it ran.
fn run_dense_input_major(
    step: Step,
    weights: LayerWeights<'_>,
    wt: &[i8],
    dead: Option<k8::DeadInputs<'_>>,
    work: &mut [u8],
    lp: &LayerPlan,
    par: &dyn Parallel,
) -> bool {
    let (Step::Dense { prm, relu, six }, LayerWeights::Int8(w)) = (step, weights) else {
        return false;
    };
    let (src, dst) = split(work, lp.input, lp.output);
    let x = as_i8(src);
    let dead_count = match dead {
        Some(d) => x.iter().zip(d.values).filter(|(v, d)| v == d).count(),
        None => x.iter().filter(|&&v| i32::from(v) == prm.in_zp).count(),
    };
    if dead_count * 4 < x.len() {
        return false;
    }
    let prm = with_constant_clamp(prm, relu, six);
    let units = dst.len();
    split_jobs(par, par.jobs().min(units).max(1), units, 1, as_i8_mut(dst), &|first, part| {
        k8::dense_units_input_major(&prm, &w, wt, x, dead, part, first)
    });
    true
}

/// An int8 Conv2D through [`k8::conv2d_pixels`] (only where
/// [`k8::can_split_conv_pixels`]), on its `lent` filters if any, its output
/// pixels cut into `par`'s jobs, with `then` applied in its output stage.
#[allow(clippy::too_many_arguments)]
fn conv_by_pixels(
    g: &ConvGeom,
    prm: &Int8Params,
    w: &Int8Weights<'_>,
    lent: Option<&k8::PixelFilters<'_>>,
    x: &[i8],
    dst: &mut [i8],
    par: &dyn Parallel,
    then: Option<&k8::ThenBatchNorm<'_>>,
) {
    let pixels = g.out_h * g.out_w;
    let jobs = par.jobs() * k8::conv_pixel_jobs_per_thread(g, prm);
    split_jobs(par, jobs.min(pixels).max(1), pixels, g.out_c, dst, &|first, part| {
        k8::conv2d_pixels(g, prm, w, lent, x, part, first, then)
    });
}

/// Fewest pixels per BatchNormalization job: below this a thread hand-off
/// costs more than the pixels (AlexNet's smallest BN has 169 pixels x 256).
const BN_MIN_PIXELS: usize = 64;

/// One layer of a whole-tensor run: its input and output where `lp` says,
/// its kernel's scratch in `scratch`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_layer(
    precision: Precision,
    i: usize,
    step: Step,
    weights: LayerWeights<'_>,
    work: &mut [u8],
    scratch: &mut [u8],
    lp: &LayerPlan,
    par: &dyn Parallel,
) -> Result<(), EngineError> {
    // An in-place layer given its own output (a graph whose input tensor is
    // read again later) works on a copy.
    if matches!(step, Step::BatchNorm { .. } | Step::Activation { .. }) && lp.output != lp.input {
        let (src, dst) = split(work, lp.input, lp.output);
        dst.copy_from_slice(src);
    }
    match (step, weights) {
        (Step::Identity, _) => {}
        (Step::Activation { prm, relu, six }, _) => {
            let data = &mut work[lp.output.offset..lp.output.end()];
            match precision {
                Precision::Int8 => k8::clamp_in_place(&prm, as_i8_mut(data)),
                Precision::F16 => k16::activation_in_place(relu, six, as_f16_mut(data)),
            }
        }
        (Step::Add { p, relu, six }, _) => {
            let (a, b, dst) = split2(work, lp.input, lp.other, lp.output);
            match precision {
                Precision::Int8 => k8::add_fast(&p, as_i8(a), as_i8(b), as_i8_mut(dst), scratch),
                Precision::F16 => k16::add(relu, six, as_f16(a), as_f16(b), as_f16_mut(dst)),
            }
        }
        (Step::Concat { pixels, a: ra, b: rb }, _) => {
            let (a, b, dst) = split2(work, lp.input, lp.other, lp.output);
            match precision {
                Precision::Int8 => k8::concat(pixels, &ra, &rb, as_i8(a), as_i8(b), as_i8_mut(dst)),
                Precision::F16 => k16::concat(pixels, as_f16(a), as_f16(b), as_f16_mut(dst)),
            }
        }
        // BatchNormalization is per pixel, so any cut into whole pixels gives the same bytes.
        (Step::BatchNorm { prm }, LayerWeights::Int8(w)) => {
            let prm = with_constant_clamp(prm, false, false);
            let data = as_i8_mut(&mut work[lp.output.offset..lp.output.end()]);
            let c = w.weights.len();
            let jobs = par.jobs().min(data.len() / c / BN_MIN_PIXELS);
            if jobs > 1 {
                split_jobs(par, jobs, data.len() / c, c, data, &|_, part| k8::batch_norm_in_place_fast(&prm, &w, part));
            } else {
                k8::batch_norm_in_place_fast(&prm, &w, data);
            }
        }
        (Step::BatchNorm { .. }, LayerWeights::F16(w)) => {
            let data = as_f16_mut(&mut work[lp.output.offset..lp.output.end()]);
            let c = w.weights.len();
            let jobs = par.jobs().min(data.len() / c / BN_MIN_PIXELS);
            if jobs > 1 {
                split_jobs(par, jobs, data.len() / c, c, data, &|_, part| k16::batch_norm_in_place_fast(&w, part));
            } else {
                k16::batch_norm_in_place_fast(&w, data);
            }
        }
        (step, weights) => {
            let (src, dst) = split(work, lp.input, lp.output);
            match (step, weights) {
                (Step::Conv { g, prm, relu, six }, LayerWeights::Int8(w)) => {
                    let prm = with_constant_clamp(prm, relu, six);
                    let (x, pixels) = (as_i8(src), g.out_h * g.out_w);
                    // Cut by output pixels where the CPU's kernel takes any run of
                    // them, else by whole rows, else not at all.
                    if par.jobs().min(pixels) > 1 && k8::can_split_conv_pixels(&g, &prm) {
                        conv_by_pixels(&g, &prm, &w, None, x, as_i8_mut(dst), par, None);
                    } else if par.jobs().min(g.out_h) > 1 && k8::can_split_conv(&g) {
                        split_jobs(
                            par,
                            par.jobs().min(g.out_h),
                            g.out_h,
                            g.out_w * g.out_c,
                            as_i8_mut(dst),
                            &|first, part| k8::conv2d_rows(&g, &prm, &w, x, part, first),
                        );
                    } else {
                        k8::conv2d_fast(&g, &prm, &w, x, as_i8_mut(dst), scratch);
                    }
                }
                (Step::Conv { g, relu, six, .. }, LayerWeights::F16(w)) => {
                    let jobs = par.jobs().min(g.out_h);
                    if jobs > 1 {
                        let x = as_f16(src);
                        split_jobs(par, jobs, g.out_h, g.out_w * g.out_c, as_f16_mut(dst), &|first, part| {
                            k16::conv2d_rows(&g, relu, &w, x, part, first)
                        });
                    } else {
                        k16::conv2d_fast(&g, relu, &w, as_f16(src), as_f16_mut(dst));
                    }
                    if six {
                        k16::clamp6_in_place(as_f16_mut(dst));
                    }
                }
                (Step::Dense { prm, relu, six }, LayerWeights::Int8(w)) => {
                    let prm = with_constant_clamp(prm, relu, six);
                    let units = dst.len();
                    let jobs = par.jobs().min(units);
                    if jobs > 1 && k8::can_split_dense() {
                        let x = as_i8(src);
                        split_jobs(par, jobs, units, 1, as_i8_mut(dst), &|first, part| {
                            k8::dense_units(&prm, &w, x, part, first)
                        });
                    } else {
                        k8::dense_fast(&prm, &w, as_i8(src), as_i8_mut(dst));
                    }
                }
                (Step::Dense { relu, six, .. }, LayerWeights::F16(w)) => {
                    let (x, dst) = (as_f16(src), as_f16_mut(dst));
                    let units = dst.len();
                    let jobs = par.jobs().min(units);
                    if jobs > 1 {
                        split_jobs(par, jobs, units, 1, dst, &|first, part| {
                            // Units are rows of `[units][inputs]`: a unit range is a sub-slice.
                            let n = part.len();
                            let rows = F16Weights {
                                weights: &w.weights[first * x.len()..(first + n) * x.len()],
                                bias: &w.bias[first..first + n],
                            };
                            k16::dense_fast(relu, &rows, x, part);
                        });
                    } else {
                        k16::dense_fast(relu, &w, x, dst);
                    }
                    if six {
                        k16::clamp6_in_place(dst);
                    }
                }
                (Step::MaxPool { g }, _) => match precision {
                    Precision::Int8 => k8::max_pool_fast(&g, as_i8(src), as_i8_mut(dst)),
                    Precision::F16 => k16::max_pool_fast(&g, as_f16(src), as_f16_mut(dst)),
                },
                (Step::AvgPool { g }, _) => match precision {
                    Precision::Int8 => k8::avg_pool(&g, as_i8(src), as_i8_mut(dst)),
                    Precision::F16 => k16::avg_pool(&g, as_f16(src), as_f16_mut(dst)),
                },
                (Step::Mean { p, g }, _) => match precision {
                    Precision::Int8 => k8::mean(&p, as_i8(src), as_i8_mut(dst)),
                    Precision::F16 => k16::avg_pool(&g, as_f16(src), as_f16_mut(dst)),
                },
                (Step::Softmax { p, depth }, _) => match precision {
                    Precision::Int8 => k8::softmax(&p, depth, as_i8(src), as_i8_mut(dst)),
                    Precision::F16 => k16::softmax(depth, as_f16(src), as_f16_mut(dst)),
                },
                // `prepare` (through `validate`) rejected every other pairing.
                _ => return Err(EngineError::MissingWeights { layer: i }),
            }
        }
    }
    Ok(())
}

/// Quantize float pixels (NHWC, already normalised as the model expects)
/// into int8 input bytes: `out[i] = quantize(pixels[i], quant) as u8`.
pub fn quantize_input(pixels: &[f32], quant: TensorQuant, out: &mut [u8]) -> Result<(), EngineError> {
    if pixels.len() != out.len() {
        return Err(EngineError::InputLength { expected: out.len(), got: pixels.len() });
    }
    for (o, &x) in out.iter_mut().zip(pixels) {
        *o = quant::quantize(x, quant) as u8;
    }
    Ok(())
}

/// Encode float pixels as the f16 model input: little-endian f16, two bytes each.
pub fn encode_f16_input(pixels: &[f32], out: &mut [u8]) -> Result<(), EngineError> {
    if out.len() != 2 * pixels.len() {
        return Err(EngineError::InputLength { expected: out.len(), got: 2 * pixels.len() });
    }
    for (o, &x) in out.chunks_exact_mut(2).zip(pixels) {
        o.copy_from_slice(&f16::from_f32(x).to_le_bytes());
    }
    Ok(())
}

/// Decode the model input (or any int8/f16 tensor of `model`'s precision)
/// from bytes to reals: int8 with `quant`, f16 little-endian (`quant` unused).
pub fn dequantize_tensor(
    precision: Precision,
    quant: TensorQuant,
    bytes: &[u8],
    out: &mut [f32],
) -> Result<(), EngineError> {
    if bytes.len() != out.len() * precision.activation_bytes() {
        return Err(EngineError::InputLength { expected: out.len() * precision.activation_bytes(), got: bytes.len() });
    }
    match precision {
        Precision::Int8 => {
            for (o, &b) in out.iter_mut().zip(bytes) {
                *o = quant::dequantize(b as i8, quant);
            }
        }
        Precision::F16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
    }
    Ok(())
}

/// Dequantize [`run`]'s output (the logits) to reals. Apply softmax to the
/// result for probabilities; the engine never does.
pub fn dequantize_output(model: &QuantModel<'_>, output: &[u8], out: &mut [f32]) -> Result<(), EngineError> {
    dequantize_tensor(model.precision, model.output_quant(), output, out)
}

/// Index of the winning output straight from the bytes, under the one rule
/// of [`crate::numeric::argmax`] (ties: the first; an f16 NaN wins): int8
/// order equals real order since the scale is positive.
pub fn argmax(precision: Precision, output: &[u8]) -> Option<usize> {
    match precision {
        Precision::Int8 => crate::numeric::argmax(output.iter().map(|&b| b as i8 as f32)),
        Precision::F16 => {
            crate::numeric::argmax(output.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()))
        }
    }
}
