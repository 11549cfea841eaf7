//! Banded execution: Conv2D → (BatchNormalization) → MaxPool2D in bands of
//! output rows (MCUNetV2's patch-based inference along one axis), so that
//! the conv's output never exists as a whole tensor.
//!
//! A *band group* is a Conv2D (ReLU fused or not), an optional
//! BatchNormalization and a MaxPool2D whose stride is at most its window
//! (the tutorial's stack). For each band of `rows` pool output rows the
//! group computes the conv rows those pool rows read that are not already
//! held, normalises them in place, and pools; conv rows that the next band
//! reads again (window − stride of them) are moved to the front of the row
//! buffer. Every output value is computed by the same kernels from the same
//! inputs as in [`crate::engine::run`] (a band is a conv over a slice of input rows
//! with the padding that slice has, `conv_band`), so the bytes are the
//! whole-tensor engine's; only the order of work differs. The tests hold
//! every layer's bytes (assembled from its rows) to [`crate::engine::run`]'s.
//!
//! The arena of a banded plan is the largest over its *stages* (a band
//! group, or one layer as in [`crate::engine::plan`]) of input + output (+ the conv
//! row buffer); with [`InputRows::Streamed`] the first group reads its input
//! rows from the caller band by band (a serial port, a camera) and keeps
//! only the rows its next conv rows read. Band heights start at one pool
//! row and then grow wherever that does not raise the arena, or raises it
//! by at most a twelfth (fewer, larger kernel calls).

use core::mem::MaybeUninit;
use half::f16;

use crate::engine::{
    as_f16, as_f16_mut, as_i8, as_i8_mut, input_base, input_slot_of, is_identity, plan, prepare_into, run_layer, split,
    tensor_bytes, with_constant_clamp, work_and_scratch, EngineError, LayerPlan, Observer, Plan, Prepared, Region,
    SingleThread, Step,
};
use crate::geometry::{ConvGeom, PoolGeom};
use crate::kernels::f16 as k16;
use crate::kernels::int8 as k8;
use crate::model::{LayerWeights, Precision, QuantModel};
use crate::spec::{Layer, Shape, MAX_LAYERS};

/// Where a banded run's input comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputRows {
    /// The whole input tensor sits in the arena ([`run_banded`]).
    Resident,
    /// Input rows arrive from the caller as the first band group needs them
    /// ([`run_banded_rows`]); only those rows are held.
    Streamed,
}

/// The banded part of a [`Stage`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Band {
    /// Pool output rows per band.
    pub rows: usize,
    /// The conv output rows held between kernel calls.
    pub buffer: Region,
    /// Streamed input: the input rows the conv reads (empty otherwise).
    pub input_rows: Region,
    /// The BatchNormalization between the conv and the pool, if any.
    pub batch_norm: bool,
}

/// One step of a banded plan: one layer as in [`crate::engine::plan`], or a band
/// group (conv, optional BN, pool).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stage {
    /// The stage's first layer.
    pub first: usize,
    /// How many layers it runs (1, or 2-3 for a band group).
    pub layers: usize,
    /// Its input tensor (empty for a streamed first band group).
    pub input: Region,
    /// The second input of an Add or Concatenate (empty otherwise).
    pub other: Region,
    /// Its output tensor.
    pub output: Region,
    /// Output is the input region (identity layers, BatchNormalization alone).
    pub in_place: bool,
    /// Band group placement.
    pub band: Option<Band>,
}

/// The static memory plan of a banded run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BandedPlan {
    /// Bytes [`run_banded`]/[`run_banded_rows`] need (with `align_slack`).
    pub arena_bytes: usize,
    /// Where the input comes from ([`InputRows::Resident`] when streaming
    /// was asked for but the first layer does not start a band group).
    pub input: InputRows,
    /// The whole-tensor plan's arena ([`crate::engine::Plan::arena_bytes`]), for comparison.
    pub whole_tensor_bytes: usize,
    /// Stage attaining `arena_bytes`.
    pub peak_stage: usize,
    /// As [`crate::engine::Plan::align_slack`].
    pub align_slack: usize,
    /// As [`crate::engine::Plan::scratch_bytes`] (part of `arena_bytes`).
    pub scratch_bytes: usize,
    /// Bytes of one input example.
    pub input_bytes: usize,
    /// Where the resident input sits in the work area (0 unless the model
    /// is a graph, which runs the whole-tensor plan stage by stage).
    pub input_offset: usize,
    /// Bytes of the output.
    pub output_bytes: usize,
    stages: [Stage; MAX_LAYERS],
    len: usize,
}

impl BandedPlan {
    /// The stages, in order.
    pub fn stages(&self) -> &[Stage] {
        &self.stages[..self.len]
    }
    /// Whether layer `index` runs in bands without a whole output tensor
    /// (a band group's conv and BatchNormalization).
    pub fn is_banded(&self, index: usize) -> bool {
        self.stages().iter().any(|s| s.band.is_some() && index >= s.first && index + 1 < s.first + s.layers)
    }
}

/// One layer's spec, input and output shapes.
#[derive(Clone, Copy)]
struct LayerShape {
    layer: Layer,
    input: Shape,
    output: Shape,
}

/// The layers' shapes, computed from the stack when asked (no array of
/// them on the stack: the planner runs on the device).
struct Shapes<'s>(&'s crate::spec::ModelSpec);

impl Shapes<'_> {
    fn get(&self, i: usize) -> Option<LayerShape> {
        let (_, layer, input, output) = self.0.shapes().nth(i)?;
        Some(LayerShape { layer: *layer, input, output })
    }

    /// Layer `i`'s shapes (an index the caller knows to be in the stack).
    fn at(&self, i: usize) -> LayerShape {
        let input = self.0.input();
        self.get(i).unwrap_or(LayerShape { layer: Layer::Flatten, input, output: input })
    }
}

/// A band group's geometry, found from the stack.
#[derive(Clone, Copy)]
struct Group {
    conv: ConvGeom,
    pool: PoolGeom,
    batch_norm: bool,
}

impl Group {
    /// Conv output rows held for bands of `rows` pool rows.
    fn buffer_rows(&self, rows: usize) -> usize {
        ((rows - 1) * self.pool.stride + self.pool.pool).min(self.conv.out_h)
    }
    /// Input rows held (streamed) for bands of `rows` pool rows: those of the
    /// most conv rows one kernel call computes.
    fn input_rows(&self, rows: usize) -> usize {
        ((self.buffer_rows(rows) - 1) * self.conv.stride_h + self.conv.span_h()).min(self.conv.in_h)
    }
}

/// The band group starting at layer `i`, if one does.
fn group_at(shapes: &Shapes<'_>, i: usize) -> Option<(Group, usize)> {
    let Layer::Conv2D(c) = shapes.get(i)?.layer else { return None };
    let conv = ConvGeom::from_spec(&c, shapes.at(i).input)?;
    let batch_norm = matches!(shapes.get(i + 1)?.layer, Layer::BatchNorm { .. });
    let p = i + 1 + batch_norm as usize;
    let Layer::MaxPool2D { pool, stride } = shapes.get(p)?.layer else { return None };
    let pool = PoolGeom::from_spec(pool, stride, shapes.at(p).input)?;
    (pool.stride <= pool.pool && pool.in_h == conv.out_h).then_some((Group { conv, pool, batch_norm }, p + 1 - i))
}

/// Whether group `g` (layers `i..i + layers`) in bands of one pool row
/// needs no more bytes than its layers one at a time.
fn group_fits(g: &Group, shapes: &Shapes<'_>, i: usize, layers: usize, bytes: usize) -> bool {
    let (ib, cb) = (tensor_bytes(shapes.at(i).input, bytes), tensor_bytes(shapes.at(i).output, bytes));
    let pb = tensor_bytes(shapes.at(i + layers - 1).output, bytes);
    let buffer = g.buffer_rows(1).saturating_mul(g.conv.out_w * g.conv.out_c * bytes);
    ib.saturating_add(buffer).saturating_add(pb) <= ib.saturating_add(cb).max(cb.saturating_add(pb))
}

/// The sub-geometry of conv output rows `r0..r1`: a conv over input rows
/// `in0..in1` with the padding that slice has (rows above the image only
/// when `r0`'s window starts there; the slice ends where `r1 - 1`'s window
/// or the image does). Every output's taps are the whole conv's.
fn conv_band(g: &ConvGeom, r0: usize, r1: usize) -> (ConvGeom, usize, usize) {
    let in0 = (r0 * g.stride_h).saturating_sub(g.pad_top);
    let in1 = ((r1 - 1) * g.stride_h + g.span_h()).saturating_sub(g.pad_top).min(g.in_h);
    let sub = ConvGeom { in_h: in1 - in0, out_h: r1 - r0, pad_top: g.pad_top.saturating_sub(r0 * g.stride_h), ..*g };
    (sub, in0, in1)
}

/// Plan a banded run of `model` (depends only on its stack and precision).
/// A streamed plan that would need more than the resident one is the
/// resident one.
pub fn plan_banded(model: &QuantModel<'_>, input: InputRows) -> BandedPlan {
    let whole = plan(model);
    plan_banded_with(model, &whole, input)
}

fn plan_banded_with(model: &QuantModel<'_>, whole: &Plan, input: InputRows) -> BandedPlan {
    let resident = plan_with(model, whole, InputRows::Resident);
    match input {
        InputRows::Streamed => {
            let streamed = plan_with(model, whole, InputRows::Streamed);
            if streamed.arena_bytes <= resident.arena_bytes {
                streamed
            } else {
                resident
            }
        }
        InputRows::Resident => resident,
    }
}

fn plan_with(model: &QuantModel<'_>, whole: &Plan, input: InputRows) -> BandedPlan {
    let mut slot = MaybeUninit::uninit();
    plan_with_into(model, whole, input, &mut slot);
    // SAFETY: `plan_with_into` writes the whole plan.
    unsafe { slot.assume_init() }
}

/// [`plan_banded`] into `slot`, each stage written where it stays (the
/// device builds its plan in a static).
pub fn plan_banded_into<'s>(
    model: &QuantModel<'_>,
    input: InputRows,
    slot: &'s mut MaybeUninit<BandedPlan>,
) -> &'s mut BandedPlan {
    let whole = plan(model);
    plan_banded_into_with(model, &whole, input, slot)
}

/// [`plan_banded_into`] given the model's whole-tensor plan.
fn plan_banded_into_with<'s>(
    model: &QuantModel<'_>,
    whole: &Plan,
    input: InputRows,
    slot: &'s mut MaybeUninit<BandedPlan>,
) -> &'s mut BandedPlan {
    match input {
        InputRows::Resident => plan_with_into(model, whole, input, slot),
        InputRows::Streamed => slot.write(plan_banded_with(model, whole, input)),
    }
}

/// Write a plan of no stages into `slot` field by field (the stage table
/// slot by slot: no whole `BandedPlan` is built on the stack and copied).
fn init_banded<'s>(slot: &'s mut MaybeUninit<BandedPlan>, whole: &Plan) -> &'s mut BandedPlan {
    let at = slot.as_mut_ptr();
    // SAFETY: every field is written through a raw pointer before the whole
    // is assumed initialised.
    unsafe {
        (&raw mut (*at).arena_bytes).write(0);
        (&raw mut (*at).input).write(InputRows::Resident);
        (&raw mut (*at).whole_tensor_bytes).write(whole.arena_bytes);
        (&raw mut (*at).peak_stage).write(0);
        (&raw mut (*at).align_slack).write(whole.align_slack);
        (&raw mut (*at).scratch_bytes).write(whole.scratch_bytes);
        (&raw mut (*at).input_bytes).write(whole.input_bytes);
        (&raw mut (*at).input_offset).write(0);
        (&raw mut (*at).output_bytes).write(0);
        let table = (&raw mut (*at).stages).cast::<Stage>();
        for i in 0..MAX_LAYERS {
            table.add(i).write(Stage::default());
        }
        (&raw mut (*at).len).write(0);
        slot.assume_init_mut()
    }
}

fn plan_with_into<'s>(
    model: &QuantModel<'_>,
    whole: &Plan,
    input: InputRows,
    slot: &'s mut MaybeUninit<BandedPlan>,
) -> &'s mut BandedPlan {
    let bytes = model.precision.activation_bytes();
    let spec = &model.spec;
    let shapes = Shapes(spec);
    let n = spec.layers().len();
    let input_bytes = tensor_bytes(spec.input(), bytes);
    if !spec.is_stack() {
        return graph_stages(whole, n, slot);
    }
    let streamed = input == InputRows::Streamed && group_at(&shapes, 0).is_some();

    // Stages, with one pool row per band, written into the plan returned
    // (no second copy on the stack: this runs on the device at boot). A
    // stage of more than one layer is a band group, found again from its
    // first layer where it is needed.
    let out = init_banded(slot, whole);
    let stages = &mut out.stages;
    let mut len = 0;
    let mut i = 0;
    while i < n {
        // A group whose bands would need more than its layers one at a
        // time (a pool that hardly shrinks) runs them one at a time.
        let (layers, group) = match group_at(&shapes, i) {
            Some((g, layers)) if i == 0 && streamed => (layers, Some(g)),
            Some((g, layers)) if group_fits(&g, &shapes, i, layers, bytes) => (layers, Some(g)),
            _ => (1, None),
        };
        debug_assert_eq!(group.is_some(), layers > 1);
        stages[len] = Stage { first: i, layers, ..Stage::default() };
        len += 1;
        i += layers;
    }
    let group_of = |st: &Stage| if st.layers > 1 { group_at(&shapes, st.first).map(|(g, _)| g) } else { None };
    let mut rows = [1usize; MAX_LAYERS];
    // Bytes stage `s` needs with bands of `r` pool rows.
    let need = |s: usize, r: usize| -> usize {
        let st = &stages[s];
        let last = st.first + st.layers - 1;
        let (ib, ob) = (tensor_bytes(shapes.at(st.first).input, bytes), tensor_bytes(shapes.at(last).output, bytes));
        match group_of(st) {
            Some(g) => {
                let row = |shape: Shape| match shape {
                    Shape::Image { w, c, .. } => (w as usize * c as usize).saturating_mul(bytes),
                    Shape::Flat(_) => 0,
                };
                let buffer = g.buffer_rows(r).saturating_mul(row(shapes.at(st.first).output));
                let held =
                    if s == 0 && streamed { g.input_rows(r).saturating_mul(row(shapes.at(0).input)) } else { ib };
                held.saturating_add(buffer).saturating_add(ob)
            }
            None if is_identity(&shapes.at(st.first).layer)
                || matches!(shapes.at(st.first).layer, Layer::BatchNorm { .. }) =>
            {
                ib
            }
            None => ib.saturating_add(ob),
        }
    };
    let mut arena = if streamed { 0 } else { input_bytes };
    for s in 0..len {
        arena = arena.max(need(s, 1));
    }
    // Taller bands wherever they fit the arena, and wherever they add at
    // most a twelfth of it to their group: fewer, fuller kernel calls (the
    // DSP conv's 6-pixel tiles, the per-call constants) for at most 8.3 %
    // more memory (alexnet-micro's conv1: 6 conv rows a band, 138 pixels =
    // 23 whole tiles, instead of 2).
    let minimum = arena;
    // Never more than the whole-tensor plan.
    let whole_need = whole.arena_bytes - whole.align_slack - whole.scratch_bytes;
    for s in 0..len {
        if let Some(g) = group_of(&stages[s]) {
            let held = |r: usize| need(s, r) - need(s, 1).min(need(s, r));
            let fits = |r: usize| need(s, r) <= arena || (held(r) <= minimum / 12 && need(s, r) <= whole_need);
            while rows[s] < g.pool.out_h && fits(rows[s] + 1) {
                rows[s] += 1;
            }
            arena = arena.max(need(s, rows[s]));
        }
    }
    let peak_stage = (0..len).find(|&s| need(s, rows[s]) == arena).unwrap_or(0);

    // Placement: ping-pong between the ends as in `plan`; a group's row
    // buffer sits between its input and output.
    let mut low = true;
    let mut cur = Region { offset: 0, len: if streamed { 0 } else { input_bytes } };
    let mut output_bytes = input_bytes;
    for s in 0..len {
        let st = stages[s];
        let last = st.first + st.layers - 1;
        let ob = tensor_bytes(shapes.at(last).output, bytes);
        let ident = st.layers == 1
            && (is_identity(&shapes.at(st.first).layer)
                || matches!(shapes.at(st.first).layer, Layer::BatchNorm { .. }));
        let output = if ident {
            cur
        } else if low {
            Region { offset: arena.saturating_sub(ob), len: ob }
        } else {
            Region { offset: 0, len: ob }
        };
        let band = group_of(&st).map(|g| {
            let row_out = g.conv.out_w * g.conv.out_c * bytes;
            let buf = g.buffer_rows(rows[s]) * row_out;
            if s == 0 && streamed {
                let inb = g.input_rows(rows[s]) * g.conv.in_w * g.conv.in_c * bytes;
                Band {
                    rows: rows[s],
                    input_rows: Region { offset: 0, len: inb },
                    buffer: Region { offset: inb, len: buf },
                    batch_norm: g.batch_norm,
                }
            } else {
                let offset = if low { cur.end() } else { cur.offset.saturating_sub(buf) };
                Band {
                    rows: rows[s],
                    input_rows: Region::default(),
                    buffer: Region { offset, len: buf },
                    batch_norm: g.batch_norm,
                }
            }
        });
        stages[s] = Stage { input: cur, output, in_place: ident, band, ..st };
        if !ident {
            low = !low;
        }
        cur = output;
        output_bytes = ob;
    }
    out.arena_bytes = arena.saturating_add(out.scratch_bytes).saturating_add(out.align_slack);
    out.input = if streamed { InputRows::Streamed } else { InputRows::Resident };
    out.peak_stage = peak_stage;
    out.output_bytes = output_bytes;
    out.len = len;
    out
}

/// A graph (layers reading other tensors than the previous output) runs
/// without bands: one stage per layer where the whole-tensor plan puts it.
fn graph_stages<'s>(whole: &Plan, n: usize, slot: &'s mut MaybeUninit<BandedPlan>) -> &'s mut BandedPlan {
    let out = init_banded(slot, whole);
    out.arena_bytes = whole.arena_bytes;
    out.peak_stage = whole.peak_layer;
    out.input_offset = whole.input_offset;
    out.output_bytes = whole.output_bytes;
    out.len = n;
    for (i, (st, lp)) in out.stages.iter_mut().zip(whole.layers()).enumerate() {
        *st = Stage {
            first: i,
            layers: 1,
            input: lp.input,
            other: lp.other,
            output: lp.output,
            in_place: lp.in_place,
            band: None,
        };
    }
    out
}

/// A model prepared for banded runs: [`prepare`](crate::engine::prepare)'s checks and constants and
/// a [`BandedPlan`].
#[derive(Clone, Debug)]
pub struct Banded<'m> {
    prepared: Prepared<'m>,
    plan: BandedPlan,
}

impl<'m> Banded<'m> {
    /// The whole-tensor preparation (its plan is the whole-tensor one).
    pub fn prepared(&self) -> &Prepared<'m> {
        &self.prepared
    }
    /// The banded plan ([`BandedPlan::arena_bytes`] is what a banded run needs).
    pub fn plan(&self) -> &BandedPlan {
        &self.plan
    }
}

/// [`prepare`](crate::engine::prepare) and [`plan_banded`], once.
pub fn prepare_banded<'m>(model: &'m QuantModel<'m>, input: InputRows) -> Result<Banded<'m>, EngineError> {
    let mut slot = MaybeUninit::uninit();
    prepare_banded_into(model, input, &mut slot)?;
    // SAFETY: `prepare_banded_into` returned Ok: both fields are written.
    Ok(unsafe { slot.assume_init() })
}

/// [`prepare_banded`] into `slot`, each part written where it stays (a
/// device keeps its preparation in a static: no copy of it passes over the
/// stack). On an error `slot` may be partly written and stays uninitialised.
#[inline(never)]
pub fn prepare_banded_into<'s, 'm>(
    model: &'m QuantModel<'m>,
    input: InputRows,
    slot: &'s mut MaybeUninit<Banded<'m>>,
) -> Result<&'s mut Banded<'m>, EngineError> {
    let at = slot.as_mut_ptr();
    // SAFETY: `at` points to a whole `Banded`; each field is written in
    // place (through a `MaybeUninit` view of it) before the whole is assumed
    // initialised.
    unsafe {
        prepare_into(model, &mut *(&raw mut (*at).prepared).cast::<MaybeUninit<Prepared<'m>>>())?;
        let whole = (*at).prepared.plan();
        let plan =
            plan_banded_into_with(model, whole, input, &mut *(&raw mut (*at).plan).cast::<MaybeUninit<BandedPlan>>());
        if plan.arena_bytes == usize::MAX {
            return Err(EngineError::TooLarge);
        }
        Ok(slot.assume_init_mut())
    }
}

/// The input source of [`run_banded_rows`]: fill the buffer with input rows
/// `first_row..` (whole rows).
pub type ReadRows<'a> = dyn FnMut(usize, &mut [u8]) -> Result<(), EngineError> + 'a;

/// Run a banded model on one resident input (as [`crate::engine::run`]: same
/// input, same output bytes, the arena of [`BandedPlan::arena_bytes`]).
pub fn run_banded<'a>(
    banded: &Banded<'_>,
    input: &[u8],
    arena: &'a mut [u8],
    observer: &mut dyn Observer,
) -> Result<&'a [u8], EngineError> {
    let p = &banded.plan;
    if input.len() != p.input_bytes {
        return Err(EngineError::InputLength { expected: p.input_bytes, got: input.len() });
    }
    run_banded_rows(
        banded,
        &mut |first, out: &mut [u8]| {
            let row = out.len();
            let start = first * row;
            out.copy_from_slice(&input[start..start + row]);
            Ok(())
        },
        arena,
        observer,
    )
}

/// Where [`run_banded_in_place`] takes its input in `arena` (a resident-input
/// plan): firmware that receives requests writes the input straight there,
/// so the input needs no buffer of its own besides the arena.
pub fn input_slot<'a>(banded: &Banded<'_>, arena: &'a mut [u8]) -> Result<&'a mut [u8], EngineError> {
    let p = &banded.plan;
    input_slot_of(banded.prepared.model().precision, p.arena_bytes, p.input_offset, p.input_bytes, arena)
}

/// [`run_banded`] on the input already written to [`input_slot`]`(banded, arena)`:
/// the same bytes out as [`run_banded`] with that input. Needs an
/// [`InputRows::Resident`] plan (a streamed plan has no resident input).
pub fn run_banded_in_place<'a>(
    banded: &Banded<'_>,
    arena: &'a mut [u8],
    observer: &mut dyn Observer,
) -> Result<&'a [u8], EngineError> {
    let p = &banded.plan;
    if p.input != InputRows::Resident {
        return Err(EngineError::InputLength { expected: p.input_bytes, got: 0 });
    }
    // The rows are already in place: reading them is a no-op.
    run_banded_rows(banded, &mut |_, _| Ok(()), arena, observer)
}

/// Run a banded model whose input rows come from `read_rows(first_row, out)`,
/// which fills `out` (whole input rows, NHWC, the bytes [`crate::engine::run`]
/// takes) with rows `first_row..`; rows are asked for in order, each once.
/// With an [`InputRows::Resident`] plan every row is read first.
pub fn run_banded_rows<'a>(
    banded: &Banded<'_>,
    read_rows: &mut ReadRows<'_>,
    arena: &'a mut [u8],
    observer: &mut dyn Observer,
) -> Result<&'a [u8], EngineError> {
    let (model, p) = (banded.prepared.model(), &banded.plan);
    if arena.len() < p.arena_bytes {
        return Err(EngineError::ArenaTooSmall { needed: p.arena_bytes, given: arena.len() });
    }
    let base = input_base(model.precision, arena);
    let (work, scratch) = work_and_scratch(arena, base, p.arena_bytes - p.align_slack, p.scratch_bytes);
    let in_shape = model.spec.input();
    let in_row = match in_shape {
        Shape::Image { w, c, .. } => w as usize * c as usize * model.precision.activation_bytes(),
        Shape::Flat(_) => p.input_bytes,
    };
    if p.input == InputRows::Resident {
        let rows = p.input_bytes.checked_div(in_row).unwrap_or(0);
        let dst = &mut work[p.input_offset..p.input_offset + p.input_bytes];
        for r in 0..rows {
            read_rows(r, &mut dst[r * in_row..(r + 1) * in_row])?;
        }
        decode_f16_in_place(model.precision, dst);
    }
    let data = model.layer_data();
    let mut last = Region { offset: 0, len: p.input_bytes };
    let shapes: [Shape; MAX_LAYERS] = {
        let mut s = [in_shape; MAX_LAYERS];
        for (i, _, _, out) in model.spec.shapes() {
            s[i] = out;
        }
        s
    };
    for (s, st) in p.stages().iter().enumerate() {
        match st.band {
            None => {
                let i = st.first;
                let lp = LayerPlan { input: st.input, other: st.other, output: st.output, in_place: st.in_place };
                observer.layer_start(i);
                let (step, weights) = (banded.prepared.steps[i], data[i].weights);
                run_layer(model.precision, i, step, weights, work, scratch, &lp, &SingleThread)?;
                observer.layer_done(i, shapes[i], &work[st.output.offset..st.output.end()]);
            }
            Some(band) => {
                let streamed = s == 0 && p.input == InputRows::Streamed;
                run_group(banded, st, &band, streamed, &mut *read_rows, work, scratch, &shapes, observer)?;
            }
        }
        last = st.output;
    }
    let arena: &'a [u8] = arena;
    Ok(&arena[base + last.offset..base + last.end()])
}

/// Input bytes as f16 values in memory order (little-endian on the wire).
fn decode_f16_in_place(precision: Precision, bytes: &mut [u8]) {
    if precision == Precision::F16 {
        for v in as_f16_mut(bytes) {
            let b = v.to_bits().to_ne_bytes();
            *v = f16::from_le_bytes(b);
        }
    }
}

/// One band group.
#[allow(clippy::too_many_arguments)]
fn run_group(
    banded: &Banded<'_>,
    st: &Stage,
    band: &Band,
    streamed: bool,
    read_rows: &mut ReadRows<'_>,
    work: &mut [u8],
    scratch: &mut [u8],
    shapes: &[Shape; MAX_LAYERS],
    observer: &mut dyn Observer,
) -> Result<(), EngineError> {
    let model = banded.prepared.model();
    let precision = model.precision;
    let bytes = precision.activation_bytes();
    let data = model.layer_data();
    let (ci, pi) = (st.first, st.first + st.layers - 1);
    let bi = band.batch_norm.then_some(ci + 1);
    let Step::Conv { g, prm, relu, six } = banded.prepared.steps[ci] else {
        return Err(EngineError::MissingWeights { layer: ci });
    };
    let Step::MaxPool { g: pg } = banded.prepared.steps[pi] else {
        return Err(EngineError::MissingWeights { layer: pi });
    };
    let conv_row = g.out_w * g.out_c * bytes;
    let in_row = g.in_w * g.in_c * bytes;
    let pool_row = pg.out_w * pg.channels * bytes;
    let cap = band.buffer.len / conv_row;
    // Conv rows [lo, hi) sit in the buffer from its start; streamed input
    // rows [ilo, ihi) in `input_rows` from its start.
    let (mut lo, mut hi) = (0usize, 0usize);
    let (mut ilo, mut ihi) = (0usize, 0usize);
    let mut py = 0;
    while hi < g.out_h {
        // The next conv rows: those the next pool band reads, or (past the
        // last pool row) the conv's remaining rows, which only the observer sees.
        let (need_lo, need_hi, py1) = if py < pg.out_h {
            let py1 = (py + band.rows).min(pg.out_h);
            (py * pg.stride, ((py1 - 1) * pg.stride + pg.pool).min(g.out_h), py1)
        } else {
            (hi, (hi + cap).min(g.out_h), py)
        };
        // Keep the held rows the band reads again; drop the others.
        let keep_from = need_lo.max(lo).min(hi);
        let buf = &mut work[band.buffer.offset..band.buffer.end()];
        buf.copy_within((keep_from - lo) * conv_row..(hi - lo) * conv_row, 0);
        lo = need_lo.min(keep_from);
        let (r0, r1) = (hi, need_hi);
        if r1 > r0 {
            let (sub, in0, in1) = conv_band(&g, r0, r1);
            // The conv's input rows in0..in1.
            let (src, dst): (&[u8], &mut [u8]) = if streamed {
                let (inp, rest) = work[band.input_rows.offset..band.buffer.end()].split_at_mut(band.input_rows.len);
                // Drop input rows before in0, read in ..in1.
                let k = in0.max(ilo).min(ihi);
                inp.copy_within((k - ilo) * in_row..(ihi - ilo) * in_row, 0);
                ilo = in0;
                ihi = ihi.max(in0);
                if in1 > ihi {
                    let dst = &mut inp[(ihi - ilo) * in_row..(in1 - ilo) * in_row];
                    read_rows(ihi, dst)?;
                    decode_f16_in_place(precision, dst);
                    ihi = in1;
                }
                let out = &mut rest[(r0 - lo) * conv_row..(r1 - lo) * conv_row];
                (&inp[(in0 - ilo) * in_row..(in1 - ilo) * in_row], out)
            } else {
                let (inp, out) = split(work, st.input, band.buffer);
                (&inp[in0 * in_row..in1 * in_row], &mut out[(r0 - lo) * conv_row..(r1 - lo) * conv_row])
            };
            observer.layer_start(ci);
            match data[ci].weights {
                LayerWeights::Int8(w) => {
                    k8::conv2d_fast(&sub, &with_constant_clamp(prm, relu, six), &w, as_i8(src), as_i8_mut(dst), scratch)
                }
                LayerWeights::F16(w) => {
                    k16::conv2d_fast(&sub, relu, &w, as_f16(src), as_f16_mut(dst));
                    if six {
                        k16::clamp6_in_place(as_f16_mut(dst));
                    }
                }
                LayerWeights::None => return Err(EngineError::MissingWeights { layer: ci }),
            }
            observer.layer_rows(ci, shapes[ci], r0, dst);
            if let Some(bi) = bi {
                observer.layer_start(bi);
                match (banded.prepared.steps[bi], data[bi].weights) {
                    (Step::BatchNorm { prm }, LayerWeights::Int8(w)) => {
                        k8::batch_norm_in_place_fast(&with_constant_clamp(prm, false, false), &w, as_i8_mut(dst))
                    }
                    (Step::BatchNorm { .. }, LayerWeights::F16(w)) => {
                        k16::batch_norm_in_place_fast(&w, as_f16_mut(dst))
                    }
                    _ => return Err(EngineError::MissingWeights { layer: bi }),
                }
                observer.layer_rows(bi, shapes[bi], r0, dst);
            }
            hi = r1;
        }
        if py1 > py {
            let sub = PoolGeom { in_h: hi - lo, out_h: py1 - py, ..pg };
            let (src, dst) = split(work, band.buffer, st.output);
            let src = &src[..(hi - lo) * conv_row];
            let dst = &mut dst[py * pool_row..py1 * pool_row];
            observer.layer_start(pi);
            match precision {
                Precision::Int8 => k8::max_pool_fast(&sub, as_i8(src), as_i8_mut(dst)),
                Precision::F16 => k16::max_pool_fast(&sub, as_f16(src), as_f16_mut(dst)),
            }
            observer.layer_rows(pi, shapes[pi], py, dst);
            py = py1;
        }
    }
    observer.layer_done(ci, shapes[ci], &[]);
    if let Some(bi) = bi {
        observer.layer_done(bi, shapes[bi], &[]);
    }
    observer.layer_done(pi, shapes[pi], &work[st.output.offset..st.output.end()]);
    Ok(())
}
