//! Conv2D as im2col + GEMM on NHWC data, with the kernel kept in Keras's HWIO
//! layout so that it *is* the `[k*k*cin, cout]` GEMM operand (no repacking).
//!
//! Work is cut into tiles of whole images (enough output pixels for an
//! efficient GEMM, one im2col buffer per tile, never one for the whole batch:
//! AlexNet at batch 128 would need ~1 GB for conv 2 alone). The backward pass
//! recomputes im2col instead of keeping it. Kernel gradients are summed per
//! fixed group of tiles and then in group order, so results do not depend on
//! the number of threads.

use super::gemm::{matmul, Mat, Par};
use super::micro;
pub use super::micro::Epilogue;
use super::scratch::{with_padded, with_scratch, zeroed_partials};
use super::winograd::{FilterCache, Variant};
use rayon::prelude::*;
use shared::spec::{Conv2D, Shape};

/// Output pixels one GEMM tile aims for.
const TILE_ROWS: usize = 512;
/// Output pixels a chunk aims for (at most) when few images are spread over the
/// threads: 128 rows of conv 2's columns are 1.2 MB, about one core's L2.
const PAR_ROWS: usize = 128;
/// Groups whose kernel-gradient partials are summed at the end (thread-count independent).
const MAX_GROUPS: usize = 8;

/// The one conv geometry (output size, SAME padding with the odd pixel at
/// the bottom/right, as Keras), with shared's checks: the same type the
/// quantizer and the engine use.
pub use shared::geometry::ConvGeom;

/// The geometry of a Conv2D layer of a built [`shared::spec::ModelSpec`] on
/// its input shape.
///
/// # Panics
/// If `c` cannot take `input`: a built `ModelSpec` has already refused such
/// a layer (image input, non-zero hyperparameters, non-empty output).
pub fn geometry(c: &Conv2D, input: Shape) -> ConvGeom {
    ConvGeom::from_spec(c, input).expect("a built ModelSpec's Conv2D has an image input and a non-empty output")
}

/// What the im2col + GEMM formulation needs from the geometry.
pub trait GemmGeom {
    /// Rows of the GEMM's shared dimension: `k*k*cin`.
    fn kdim(&self) -> usize;
    /// Output pixels of one image.
    fn pixels(&self) -> usize;
    /// Images per GEMM tile.
    fn tile_images(&self, batch: usize) -> usize;
}

impl GemmGeom for ConvGeom {
    fn kdim(&self) -> usize {
        self.filter_len()
    }
    fn pixels(&self) -> usize {
        self.out_h * self.out_w
    }
    fn tile_images(&self, batch: usize) -> usize {
        TILE_ROWS.div_ceil(self.pixels()).clamp(1, batch.max(1))
    }
}

/// Copy the receptive fields of one image into `cols` (`[oh*ow, k*k*cin]`), zeros for padding.
pub fn im2col(g: &ConvGeom, x: &[f32], cols: &mut [f32]) {
    im2col_rows(g, x, 0, cols);
}

/// [`im2col`] for the output pixels `r0 ..` (as many as `cols` has rows) of
/// the images in `x`, counted across images, so that a few images can be
/// spread over threads in equal parts.
fn im2col_rows(g: &ConvGeom, x: &[f32], r0: usize, cols: &mut [f32]) {
    let kd = g.kdim();
    let run = g.kernel_w * g.in_c;
    let (dh, dw) = (g.dilation_h as isize, g.dilation_w as isize);
    for (r, row) in cols.chunks_exact_mut(kd).enumerate() {
        let (img, p) = ((r0 + r) / g.pixels(), (r0 + r) % g.pixels());
        let x = &x[img * g.input_len()..][..g.input_len()];
        let (oy, ox) = (p / g.out_w, p % g.out_w);
        let iy0 = (oy * g.stride_h) as isize - g.pad_top as isize;
        let ix0 = (ox * g.stride_w) as isize - g.pad_left as isize;
        for ky in 0..g.kernel_h {
            let seg = &mut row[ky * run..][..run];
            let iy = iy0 + ky as isize * dh;
            if iy < 0 || iy >= g.in_h as isize {
                seg.fill(0.0);
                continue;
            }
            let base = iy as usize * g.in_w;
            if dw == 1 && ix0 >= 0 && ix0 as usize + g.kernel_w <= g.in_w {
                // NHWC: the k pixels of one kernel row are contiguous in the input.
                seg.copy_from_slice(&x[(base + ix0 as usize) * g.in_c..][..run]);
            } else {
                for kx in 0..g.kernel_w {
                    let ix = ix0 + kx as isize * dw;
                    let dst = &mut seg[kx * g.in_c..][..g.in_c];
                    if ix < 0 || ix >= g.in_w as isize {
                        dst.fill(0.0);
                    } else {
                        dst.copy_from_slice(&x[(base + ix as usize) * g.in_c..][..g.in_c]);
                    }
                }
            }
        }
    }
}

/// Grouped convolution (depthwise included), direct loops over each output's
/// taps and its group's input channels; images in parallel. The kernel is
/// HWIO with `I = in_c / groups` (Keras's grouped layout).
fn forward_grouped(g: &ConvGeom, ep: &Epilogue, kernel: &[f32], x: &[f32], y: &mut [f32]) {
    let (ipg, opg) = (g.in_per_group(), g.out_per_group());
    y.par_chunks_mut(g.output_len()).zip(x.par_chunks(g.input_len())).for_each(|(yi, xi)| {
        for oy in 0..g.out_h {
            let (ky0, ky1, iy0) = g.taps_h(oy);
            for ox in 0..g.out_w {
                let (kx0, kx1, ix0) = g.taps_w(ox);
                let out = &mut yi[(oy * g.out_w + ox) * g.out_c..][..g.out_c];
                for (oc, o) in out.iter_mut().enumerate() {
                    let base = oc / opg * ipg;
                    let mut acc = 0.0f32;
                    for ky in ky0..ky1 {
                        let iy = iy0 + (ky - ky0) * g.dilation_h;
                        for kx in kx0..kx1 {
                            let ix = ix0 + (kx - kx0) * g.dilation_w;
                            let xp = &xi[(iy * g.in_w + ix) * g.in_c + base..][..ipg];
                            let row = (ky * g.kernel_w + kx) * ipg;
                            for (i, &xv) in xp.iter().enumerate() {
                                acc += xv * kernel[(row + i) * g.out_c + oc];
                            }
                        }
                    }
                    *o = acc;
                }
            }
        }
    });
    epilogue(y, ep);
}

/// The backward of [`forward_grouped`] on `dy` (the ReLU already applied):
/// kernel, bias and (when asked) input gradients, in one fixed order.
fn backward_grouped(
    g: &ConvGeom,
    kernel: &[f32],
    x: &[f32],
    dy: &[f32],
    dkernel: &mut [f32],
    dbias: &mut [f32],
    mut dx: Option<&mut [f32]>,
) {
    let (ipg, opg) = (g.in_per_group(), g.out_per_group());
    dkernel.fill(0.0);
    dbias.fill(0.0);
    if let Some(dx) = dx.as_deref_mut() {
        dx.fill(0.0);
    }
    for (n, (xi, dyi)) in x.chunks(g.input_len()).zip(dy.chunks(g.output_len())).enumerate() {
        for oy in 0..g.out_h {
            let (ky0, ky1, iy0) = g.taps_h(oy);
            for ox in 0..g.out_w {
                let (kx0, kx1, ix0) = g.taps_w(ox);
                let d = &dyi[(oy * g.out_w + ox) * g.out_c..][..g.out_c];
                for (oc, &dv) in d.iter().enumerate() {
                    dbias[oc] += dv;
                    let base = oc / opg * ipg;
                    for ky in ky0..ky1 {
                        let iy = iy0 + (ky - ky0) * g.dilation_h;
                        for kx in kx0..kx1 {
                            let ix = ix0 + (kx - kx0) * g.dilation_w;
                            let at = (iy * g.in_w + ix) * g.in_c + base;
                            let row = (ky * g.kernel_w + kx) * ipg;
                            for i in 0..ipg {
                                let k = (row + i) * g.out_c + oc;
                                dkernel[k] += dv * xi[at + i];
                                if let Some(dx) = dx.as_deref_mut() {
                                    dx[n * g.input_len() + at + i] += dv * kernel[k];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: add each column entry back onto its input pixel.
pub fn col2im_add(g: &ConvGeom, cols: &[f32], dx: &mut [f32]) {
    let kd = g.kdim();
    let run = g.kernel_w * g.in_c;
    let (dh, dw) = (g.dilation_h as isize, g.dilation_w as isize);
    for oy in 0..g.out_h {
        for ox in 0..g.out_w {
            let row = &cols[(oy * g.out_w + ox) * kd..][..kd];
            let iy0 = (oy * g.stride_h) as isize - g.pad_top as isize;
            let ix0 = (ox * g.stride_w) as isize - g.pad_left as isize;
            for ky in 0..g.kernel_h {
                let iy = iy0 + ky as isize * dh;
                if iy < 0 || iy >= g.in_h as isize {
                    continue;
                }
                let seg = &row[ky * run..][..run];
                let base = iy as usize * g.in_w;
                if dw == 1 && ix0 >= 0 && ix0 as usize + g.kernel_w <= g.in_w {
                    let dst = &mut dx[(base + ix0 as usize) * g.in_c..][..run];
                    dst.iter_mut().zip(seg).for_each(|(d, s)| *d += s);
                } else {
                    for kx in 0..g.kernel_w {
                        let ix = ix0 + kx as isize * dw;
                        if ix >= 0 && ix < g.in_w as isize {
                            let dst = &mut dx[(base + ix as usize) * g.in_c..][..g.in_c];
                            dst.iter_mut().zip(&seg[kx * g.in_c..][..g.in_c]).for_each(|(d, s)| *d += s);
                        }
                    }
                }
            }
        }
    }
}

/// `y = act(conv(x, kernel) + bias)` for `batch` NHWC images; `y` is fully overwritten.
pub fn forward(g: &ConvGeom, relu: bool, kernel: &[f32], bias: &[f32], x: &[f32], batch: usize, y: &mut [f32]) {
    forward_with(g, &Epilogue { bias, relu, affine: None }, kernel, x, batch, y)
}

/// The arithmetic of the stride-1 3x3 and 5x5 convolutions (`--conv`): the
/// direct im2col + GEMM; Winograd's F(2x2, 3x3) or F(2x2, 5x5)
/// ([`super::winograd`], 2.25x or 2.8x fewer multiplies, other rounding);
/// F(4x4, 3x3) or F(4x4, 5x5) (4x or 6.25x fewer, coarser rounding); or per layer, batch
/// size and pass whichever of these ran fastest the first time it was timed
/// on this machine (a network's inference: in whole passes, [`super::tune`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvAlgo {
    Direct,
    Winograd,
    Winograd4x4,
    Auto,
}

static ALGO: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

impl ConvAlgo {
    /// `direct`, `winograd`, `winograd-4x4` or `auto` (the benches'
    /// `HOST_CONV`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "direct" => Some(ConvAlgo::Direct),
            "winograd" => Some(ConvAlgo::Winograd),
            "winograd-4x4" => Some(ConvAlgo::Winograd4x4),
            "auto" => Some(ConvAlgo::Auto),
            _ => None,
        }
    }

    /// [`ConvAlgo::parse`] of `$HOST_CONV`, set for the process if given
    /// (the criterion benches take no flags of their own).
    ///
    /// # Panics
    /// On any other value.
    pub fn set_from_env() {
        if let Ok(v) = std::env::var("HOST_CONV") {
            set_algo(
                ConvAlgo::parse(&v)
                    .unwrap_or_else(|| panic!("HOST_CONV={v}: not direct, winograd, winograd-4x4 or auto")),
            );
        }
    }
}

/// Sets the process's [`ConvAlgo`] (the commands' `--conv`).
pub fn set_algo(algo: ConvAlgo) {
    ALGO.store(algo as u8, std::sync::atomic::Ordering::Relaxed);
}

/// The process's [`ConvAlgo`] (direct unless set).
pub fn algo() -> ConvAlgo {
    match ALGO.load(std::sync::atomic::Ordering::Relaxed) {
        1 => ConvAlgo::Winograd,
        2 => ConvAlgo::Winograd4x4,
        3 => ConvAlgo::Auto,
        _ => ConvAlgo::Direct,
    }
}

/// How one conv computes: the direct path or a Winograd variant.
#[derive(Clone, Copy, Debug)]
pub enum ConvPath {
    Direct,
    Winograd(&'static Variant),
}

impl ConvPath {
    /// The paths that compute `g`: the direct one, then each Winograd variant.
    pub fn candidates(g: &ConvGeom) -> impl Iterator<Item = ConvPath> {
        std::iter::once(ConvPath::Direct).chain(super::winograd::variants(g).iter().map(|&v| ConvPath::Winograd(v)))
    }

    /// `direct` or the variant's name.
    pub fn name(&self) -> &'static str {
        match self {
            ConvPath::Direct => "direct",
            ConvPath::Winograd(v) => v.name,
        }
    }
}

/// One of [`ConvAlgo::Auto`]'s decisions: the layer's shape, batch and
/// pass, the path it took from then on, and what each candidate measured
/// (the fastest of its runs), so that a user can see why.
#[derive(Clone, Debug)]
pub struct AutoChoice {
    /// The layer's geometry (the key, with the batch and the pass).
    pub geometry: ConvGeom,
    pub batch: usize,
    pub backward: bool,
    pub chosen: ConvPath,
    pub timings: Vec<(ConvPath, std::time::Duration)>,
    /// Timed inside whole forward passes (`super::tune`: the network's
    /// inference; the times are the layer's share of them and `chosen` the
    /// fastest whole pass's path), not alone.
    pub in_network: bool,
}

impl AutoChoice {
    fn is_for(&self, g: &ConvGeom, batch: usize, backward: bool) -> bool {
        self.geometry == *g && self.batch == batch && self.backward == backward
    }
}

/// `27x27x96 -> 256 (5x5), batch 32, backward: F(4x4, 5x5) 100 ms (direct
/// 313, F(2x2, 5x5) 200)`.
impl std::fmt::Display for AutoChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = &self.geometry;
        // Three significant figures: small layers take microseconds.
        let ms = |d: &std::time::Duration| {
            let v = d.as_secs_f64() * 1e3;
            let places = if v >= 100.0 {
                0
            } else if v >= 10.0 {
                1
            } else if v >= 1.0 {
                2
            } else {
                3
            };
            format!("{v:.places$}")
        };
        write!(
            f,
            "{}x{}x{} -> {} ({}x{}), batch {}, {}{}: {}",
            g.in_h,
            g.in_w,
            g.in_c,
            g.out_c,
            g.kernel_h,
            g.kernel_w,
            self.batch,
            if self.backward { "backward" } else { "forward" },
            if self.in_network { " in the network" } else { "" },
            self.chosen.name()
        )?;
        let (chosen, others): (Vec<_>, Vec<_>) = self.timings.iter().partition(|(p, _)| p.name() == self.chosen.name());
        if let Some((_, t)) = chosen.first() {
            write!(f, " {} ms", ms(t))?;
        }
        if !others.is_empty() {
            let others: Vec<String> = others.iter().map(|(p, t)| format!("{} {}", p.name(), ms(t))).collect();
            write!(f, " ({})", others.join(", "))?;
        }
        Ok(())
    }
}

/// [`ConvAlgo::Auto`]'s measured choices, in the order they were made.
static AUTO: std::sync::Mutex<Vec<AutoChoice>> = std::sync::Mutex::new(Vec::new());

/// Every choice [`ConvAlgo::Auto`] has made in this process, in order.
pub fn auto_choices() -> Vec<AutoChoice> {
    AUTO.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The path this layer at this batch takes now in this pass; `None` under
/// [`ConvAlgo::Auto`] until it was measured.
pub fn path(g: &ConvGeom, batch: usize, backward: bool) -> Option<ConvPath> {
    let vs = super::winograd::variants(g);
    let (Some(&finest), Some(&coarsest)) = (vs.first(), vs.last()) else {
        return Some(ConvPath::Direct);
    };
    match algo() {
        ConvAlgo::Direct => Some(ConvPath::Direct),
        ConvAlgo::Winograd => Some(ConvPath::Winograd(finest)),
        ConvAlgo::Winograd4x4 => Some(ConvPath::Winograd(coarsest)),
        ConvAlgo::Auto => {
            let table = AUTO.lock().unwrap_or_else(|e| e.into_inner());
            table.iter().find(|c| c.is_for(g, batch, backward)).map(|c| c.chosen)
        }
    }
}

/// Times `run` on every candidate path of `g`, twice each and back to back
/// (the first run also pays for its buffers' page faults and, in inference,
/// for filling the layer's transformed-filter cache, which alternating
/// variants would empty each time), records the fastest for
/// [`ConvAlgo::Auto`] and returns it (`run` must leave its results to be
/// overwritten by the next call).
fn measure(g: &ConvGeom, batch: usize, backward: bool, mut run: impl FnMut(ConvPath)) -> ConvPath {
    let timings: Vec<(ConvPath, std::time::Duration)> = ConvPath::candidates(g)
        .map(|p| {
            let best = (0..2)
                .map(|_| {
                    let t = std::time::Instant::now();
                    run(p);
                    t.elapsed()
                })
                .min()
                .unwrap_or_default();
            (p, best)
        })
        .collect();
    let chosen = timings.iter().min_by_key(|(_, t)| *t).map_or(ConvPath::Direct, |&(p, _)| p);
    record(AutoChoice { geometry: *g, batch, backward, chosen, timings, in_network: false });
    chosen
}

/// Adds a decision to [`ConvAlgo::Auto`]'s table ([`path`] then returns
/// its `chosen` for its key). One key keeps its first decision: two threads
/// that timed the same key at once leave the earlier one.
pub(crate) fn record(choice: AutoChoice) {
    let mut table = AUTO.lock().unwrap_or_else(|e| e.into_inner());
    if !table.iter().any(|c| c.is_for(&choice.geometry, choice.batch, choice.backward)) {
        table.push(choice);
    }
}

/// [`forward`] with any [`Epilogue`]: an inference BatchNormalization that
/// follows the conv is folded in here, saving a pass over the output.
pub fn forward_with(g: &ConvGeom, ep: &Epilogue, kernel: &[f32], x: &[f32], batch: usize, y: &mut [f32]) {
    forward_any(g, ep, kernel, x, batch, y, None, None)
}

/// [`forward_with`] for inference: a Winograd path takes its transformed
/// filters from the layer's `cache` (the weights do not change between
/// calls). On `path` where given, whatever [`algo`] says (for timing each
/// candidate in the network, `super::tune`).
#[allow(clippy::too_many_arguments)]
pub fn forward_inference(
    g: &ConvGeom,
    ep: &Epilogue,
    kernel: &[f32],
    x: &[f32],
    batch: usize,
    y: &mut [f32],
    cache: &mut FilterCache,
    path: Option<ConvPath>,
) {
    forward_any(g, ep, kernel, x, batch, y, Some(cache), path)
}

/// One forward: on `forced` where given, else on the path [`algo`] gives
/// this layer (timing the candidates first under [`ConvAlgo::Auto`]).
#[allow(clippy::too_many_arguments)]
fn forward_any(
    g: &ConvGeom,
    ep: &Epilogue,
    kernel: &[f32],
    x: &[f32],
    batch: usize,
    y: &mut [f32],
    mut cache: Option<&mut FilterCache>,
    forced: Option<ConvPath>,
) {
    assert_eq!(x.len(), batch * g.input_len());
    assert_eq!(y.len(), batch * g.output_len());
    let mut run = |p: ConvPath, y: &mut [f32]| match p {
        ConvPath::Direct => forward_direct(g, ep, kernel, x, batch, y),
        ConvPath::Winograd(v) => super::winograd::forward(g, v, ep, kernel, x, batch, y, cache.as_deref_mut()),
    };
    let chosen = match forced.or_else(|| path(g, batch, false)) {
        Some(p) => p,
        // First sight under Auto: time every path on this call's data.
        None => measure(g, batch, false, |p| run(p, y)),
    };
    run(chosen, y)
}

/// [`forward_with`] through the direct im2col + GEMM.
fn forward_direct(g: &ConvGeom, ep: &Epilogue, kernel: &[f32], x: &[f32], batch: usize, y: &mut [f32]) {
    if g.groups > 1 {
        return forward_grouped(g, ep, kernel, x, y);
    }
    // The micro-kernel reads the receptive fields in place wherever it
    // serves the conv; im2col and the gemm crate only elsewhere (training's
    // conv 1 at batch 32: 39 ms a step that way).
    if micro::serves_conv(g) || batch.div_ceil(g.tile_images(batch)) < rayon::current_num_threads() {
        forward_spread(g, ep, kernel, x, batch, y, true)
    } else {
        forward_tiles(g, ep, kernel, x, batch, y)
    }
}

/// The epilogue over whole output pixels, after the plain GEMM.
fn epilogue(px: &mut [f32], ep: &Epilogue) {
    ep.apply_pixels(px)
}

/// Where the micro-kernel does not serve the conv, from as many tiles as
/// threads: one task per tile of whole images, im2col and single-threaded
/// GEMMs of the gemm crate.
fn forward_tiles(g: &ConvGeom, ep: &Epilogue, kernel: &[f32], x: &[f32], batch: usize, y: &mut [f32]) {
    let tile = g.tile_images(batch);
    let kd = g.kdim();
    y.par_chunks_mut(tile * g.output_len()).zip(x.par_chunks(tile * g.input_len())).for_each(|(yt, xt)| {
        let imgs = xt.len() / g.input_len();
        let rows = imgs * g.pixels();
        with_scratch(rows * kd, |cols| {
            for (i, xi) in xt.chunks(g.input_len()).enumerate() {
                im2col(g, xi, &mut cols[i * g.pixels() * kd..][..g.pixels() * kd]);
            }
            matmul(Mat::new(cols, rows, kd), Mat::new(kernel, kd, g.out_c), yt, false, Par::Seq);
        });
        epilogue(yt, ep);
    });
}

/// Wherever the micro-kernel serves the conv, and with fewer tiles than
/// threads: the output pixels of all images are cut into equal chunks, a
/// multiple of the thread count, each doing its own im2col (none on the
/// micro-kernel), single-threaded GEMM and epilogue. A chunk's columns are
/// still in its core's cache when the GEMM reads them, and this split beat the
/// gemm crate's own threading on one big GEMM (AlexNet-227 batch 1: conv
/// layers 7.3 -> 6.8 ms). With `fast`, the GEMM and epilogue are
/// [`micro::gemm`]'s where it applies (the plain twin is kept for tests and
/// other CPUs).
fn forward_spread(g: &ConvGeom, ep: &Epilogue, kernel: &[f32], x: &[f32], batch: usize, y: &mut [f32], fast: bool) {
    let threads = rayon::current_num_threads();
    let kd = g.kdim();
    let rows = batch * g.pixels();
    let chunks = threads * rows.div_ceil(threads * PAR_ROWS);
    let chunk = rows.div_ceil(chunks);
    if fast && micro::serves_conv(g) {
        // Pad once; each chunk then reads its receptive fields in place.
        let (hp, wp) = ((g.out_h - 1) * g.stride() + g.kernel(), (g.out_w - 1) * g.stride() + g.kernel());
        let exact = (g.pad_top, g.pad_left, hp, wp) == (0, 0, g.in_h, g.in_w);
        // No padding to add (conv 1: 227 = 54 * 4 + 11): the input as it is.
        let len = if exact { 0 } else { batch * hp * wp * g.in_c };
        return with_padded(len, |buf| {
            let data = if exact {
                x
            } else {
                pad(g, x, hp, wp, buf);
                buf
            };
            let xp = micro::Padded { data, h: hp, w: wp };
            let panels = g.out_c.div_ceil(64);
            if chunks == threads && panels >= threads && rows < threads * PAR_ROWS {
                // Few pixels (13x13): cut the channels instead, so that each
                // thread reads only its share of the weights from memory.
                let per = panels.div_ceil(threads) * 64;
                let parts: Vec<(usize, Vec<f32>)> = (0..g.out_c)
                    .step_by(per)
                    .collect::<Vec<_>>()
                    .into_par_iter()
                    .map(|j0| {
                        let cols = j0..(j0 + per).min(g.out_c);
                        let mut out = vec![0.0; rows * cols.len()];
                        let served = micro::conv(g, &xp, 0, cols, kernel, &mut out, ep);
                        assert!(served, "micro::serves_conv promised this conv");
                        (j0, out)
                    })
                    .collect();
                for (j0, part) in parts {
                    let nj = part.len() / rows;
                    for (yr, pr) in y.chunks_exact_mut(g.out_c).zip(part.chunks_exact(nj)) {
                        yr[j0..j0 + nj].copy_from_slice(pr);
                    }
                }
                return;
            }
            y.par_chunks_mut(chunk * g.out_c).enumerate().for_each(|(j, yc)| {
                let served = micro::conv(g, &xp, j * chunk, 0..g.out_c, kernel, yc, ep);
                assert!(served, "micro::serves_conv promised this conv");
            });
        });
    }
    y.par_chunks_mut(chunk * g.out_c).enumerate().for_each(|(j, yc)| {
        let n = yc.len() / g.out_c;
        let done = with_scratch(n * kd, |cols| {
            im2col_rows(g, x, j * chunk, cols);
            if fast && micro::gemm(cols, n, kd, kernel, g.out_c, yc, ep) {
                return true;
            }
            matmul(Mat::new(cols, n, kd), Mat::new(kernel, kd, g.out_c), yc, false, Par::Seq);
            false
        });
        if !done {
            epilogue(yc, ep);
        }
    });
}

/// Copy NHWC images `x` into `out` (`[batch, hp, wp, c]`) at the conv's
/// leading padding, zeros around: every receptive field then lies inside.
fn pad(g: &ConvGeom, x: &[f32], hp: usize, wp: usize, out: &mut [f32]) {
    out.fill(0.0);
    let c = g.in_c;
    for (xi, oi) in x.chunks_exact(g.input_len()).zip(out.chunks_exact_mut(hp * wp * c)) {
        // Valid convs may leave trailing input rows and columns unread.
        let (h, w) = (g.in_h.min(hp - g.pad_top), g.in_w.min(wp - g.pad_left));
        for iy in 0..h {
            let src = &xi[iy * g.in_w * c..][..w * c];
            oi[((iy + g.pad_top) * wp + g.pad_left) * c..][..w * c].copy_from_slice(src);
        }
    }
}

/// Gradients of one convolution. `dy` (dL/dy) is consumed: the ReLU mask is applied
/// to it in place. Writes `dkernel` and `dbias`, and `dx` when given (skipped for the
/// first layer, whose input gradient nobody needs).
#[allow(clippy::too_many_arguments)]
pub fn backward(
    g: &ConvGeom,
    relu: bool,
    kernel: &[f32],
    x: &[f32],
    y: &[f32],
    dy: &mut [f32],
    batch: usize,
    dkernel: &mut [f32],
    dbias: &mut [f32],
    dx: Option<&mut [f32]>,
    partials: &mut Vec<Vec<f32>>,
) {
    assert_eq!(x.len(), batch * g.input_len());
    assert_eq!(dy.len(), batch * g.output_len());
    assert_eq!(y.len(), dy.len());
    if relu {
        dy.par_chunks_mut(1 << 16).zip(y.par_chunks(1 << 16)).for_each(|(d, y)| {
            d.iter_mut().zip(y).for_each(|(d, &y)| {
                if y <= 0.0 {
                    *d = 0.0
                }
            })
        });
    }
    let dy: &[f32] = dy;
    if g.groups > 1 {
        return backward_grouped(g, kernel, x, dy, dkernel, dbias, dx);
    }
    let mut dx = dx;
    let mut run = |p: ConvPath| match p {
        ConvPath::Direct => backward_direct(g, kernel, x, dy, batch, dkernel, dbias, dx.as_deref_mut(), partials),
        ConvPath::Winograd(v) => {
            super::winograd::backward(g, v, kernel, x, dy, batch, dkernel, dbias, dx.as_deref_mut(), partials)
        }
    };
    let chosen = match path(g, batch, true) {
        Some(p) => p,
        // First sight under Auto: time every path (each overwrites the
        // gradients).
        None => measure(g, batch, true, &mut run),
    };
    run(chosen)
}

/// [`backward`]'s direct im2col + GEMM, after the mask.
#[allow(clippy::too_many_arguments)]
fn backward_direct(
    g: &ConvGeom,
    kernel: &[f32],
    x: &[f32],
    dy: &[f32],
    batch: usize,
    dkernel: &mut [f32],
    dbias: &mut [f32],
    dx: Option<&mut [f32]>,
    partials: &mut Vec<Vec<f32>>,
) {
    let kd = g.kdim();
    let tile = g.tile_images(batch);
    let tiles = batch.div_ceil(tile);
    let groups = tiles.clamp(1, MAX_GROUPS);
    let group_images = tiles.div_ceil(groups) * tile;
    let par = if groups >= rayon::current_num_threads() { Par::Seq } else { Par::Rayon };

    // Kernel-gradient partials live in the layer between steps: fresh ones would
    // be page-faulted in (tens of MB per step on AlexNet).
    let n_groups = batch.div_ceil(group_images);
    zeroed_partials(partials, n_groups, kd * g.out_c);
    let group_job = |xg: &[f32], dyg: &[f32], dxg: Option<&mut [f32]>, dk: &mut Vec<f32>| -> Vec<f64> {
        let mut db = vec![0.0f64; g.out_c];
        for px in dyg.chunks_exact(g.out_c) {
            db.iter_mut().zip(px).for_each(|(b, &d)| *b += d as f64);
        }
        let mut dxg = dxg;
        if let Some(d) = dxg.as_deref_mut() {
            d.fill(0.0);
        }
        for (t, (xt, dyt)) in xg.chunks(tile * g.input_len()).zip(dyg.chunks(tile * g.output_len())).enumerate() {
            let imgs = xt.len() / g.input_len();
            let rows = imgs * g.pixels();
            with_scratch(rows * kd, |cols| {
                for (i, xi) in xt.chunks(g.input_len()).enumerate() {
                    im2col(g, xi, &mut cols[i * g.pixels() * kd..][..g.pixels() * kd]);
                }
                matmul(Mat::new(cols, rows, kd).t(), Mat::new(dyt, rows, g.out_c), dk, true, par);
                if let Some(d) = dxg.as_deref_mut() {
                    // Reuse the buffer for dL/dcols = dy * kernel^T.
                    matmul(Mat::new(dyt, rows, g.out_c), Mat::new(kernel, kd, g.out_c).t(), cols, false, par);
                    let dxt = &mut d[t * tile * g.input_len()..][..imgs * g.input_len()];
                    for (i, dxi) in dxt.chunks_mut(g.input_len()).enumerate() {
                        col2im_add(g, &cols[i * g.pixels() * kd..][..g.pixels() * kd], dxi);
                    }
                }
            });
        }
        db
    };

    let xs = x.par_chunks(group_images * g.input_len());
    let dys = dy.par_chunks(group_images * g.output_len());
    let bias_parts: Vec<Vec<f64>> = match dx {
        Some(dx) => {
            assert_eq!(dx.len(), x.len());
            xs.zip(dys)
                .zip(dx.par_chunks_mut(group_images * g.input_len()))
                .zip(partials.par_iter_mut())
                .map(|(((a, b), c), p)| group_job(a, b, Some(c), p))
                .collect()
        }
        None => xs.zip(dys).zip(partials.par_iter_mut()).map(|((a, b), p)| group_job(a, b, None, p)).collect(),
    };
    sum_partials(partials, &bias_parts, dkernel, dbias);
}

/// Sum per-group partial gradients in group order (deterministic).
pub(crate) fn sum_partials(dws: &[Vec<f32>], dbs: &[Vec<f64>], dw: &mut [f32], db: &mut [f32]) {
    dw.par_chunks_mut(1 << 15).enumerate().for_each(|(i, d)| {
        d.fill(0.0);
        for p in dws {
            d.iter_mut().zip(&p[i << 15..]).for_each(|(d, s)| *d += s);
        }
    });
    for (j, d) in db.iter_mut().enumerate() {
        *d = dbs.iter().map(|b| b[j]).sum::<f64>() as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::spec::Conv2D;

    fn lcg(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Direct convolution in f64, the obviously-correct reference.
    fn naive(g: &ConvGeom, kernel: &[f32], bias: &[f32], x: &[f32], batch: usize) -> Vec<f64> {
        let mut y = vec![0.0f64; batch * g.out_h * g.out_w * g.out_c];
        for n in 0..batch {
            for oy in 0..g.out_h {
                for ox in 0..g.out_w {
                    for co in 0..g.out_c {
                        let mut s = bias[co] as f64;
                        for ky in 0..g.kernel_h {
                            for kx in 0..g.kernel_w {
                                let iy = (oy * g.stride_h + ky * g.dilation_h) as isize - g.pad_top as isize;
                                let ix = (ox * g.stride_w + kx * g.dilation_w) as isize - g.pad_left as isize;
                                if iy < 0 || ix < 0 || iy >= g.in_h as isize || ix >= g.in_w as isize {
                                    continue;
                                }
                                let (ipg, base) = (g.in_per_group(), co / g.out_per_group() * g.in_per_group());
                                for ci in 0..ipg {
                                    let xv =
                                        x[((n * g.in_h + iy as usize) * g.in_w + ix as usize) * g.in_c + base + ci];
                                    let kv = kernel[((ky * g.kernel_w + kx) * ipg + ci) * g.out_c + co];
                                    s += xv as f64 * kv as f64;
                                }
                            }
                        }
                        y[((n * g.out_h + oy) * g.out_w + ox) * g.out_c + co] = s;
                    }
                }
            }
        }
        y
    }

    fn cases() -> Vec<(Conv2D, Shape, usize)> {
        vec![
            (Conv2D::new(4, 3), Shape::image(6, 7, 2), 3),
            (Conv2D::new(5, 3).same(), Shape::image(5, 6, 3), 2),
            (Conv2D::new(3, 3).same().strides(2), Shape::image(7, 6, 2), 2),
            (Conv2D::new(4, 4).same().strides(3), Shape::image(8, 9, 2), 2),
            (Conv2D::new(2, 5).strides(2), Shape::image(11, 9, 3), 2),
            (Conv2D::new(6, 1), Shape::image(3, 3, 4), 50),
            // The general geometry: rectangular kernels and strides, dilation, explicit pads.
            (Conv2D::new(3, 1).kernel_hw(3, 5).strides_hw(2, 1).pads(1, 0, 2, 1), Shape::image(7, 8, 2), 2),
            (Conv2D::new(3, 3).dilation(2, 2).same(), Shape::image(6, 5, 2), 1),
            (Conv2D::new(2, 1).kernel_hw(2, 3).dilation(2, 1).pads(1, 1, 0, 2), Shape::image(6, 5, 3), 3),
            // Groups: two (the original AlexNet's), and depthwise with a multiplier of 2.
            (Conv2D::new(4, 3).groups(2).same(), Shape::image(5, 6, 4), 2),
            (Conv2D::new(6, 3).groups(3).strides(2).same(), Shape::image(7, 6, 3), 2),
        ]
    }

    #[test]
    fn forward_matches_direct_convolution() {
        // The last case: several chunks of output pixels that cross image boundaries.
        let more = (Conv2D::new(3, 3).same(), Shape::image(12, 12, 2), 5);
        for (c, shape, batch) in cases().into_iter().chain([more]) {
            let g = geometry(&c, shape);
            let x = lcg(1, batch * g.input_len());
            let k = lcg(2, g.kdim() * g.out_c);
            let b = lcg(3, g.out_c);
            let want = naive(&g, &k, &b, &x, batch);
            // Both work splits, whichever `forward` picks with this thread count.
            let ep = Epilogue { bias: &b, relu: false, affine: None };
            type Split<'a> = &'a dyn Fn(&mut [f32]);
            let splits: [Split; 4] = [
                &|y| forward(&g, false, &k, &b, &x, batch, y),
                &|y| forward_tiles(&g, &ep, &k, &x, batch, y),
                &|y| forward_spread(&g, &ep, &k, &x, batch, y, true),
                &|y| forward_spread(&g, &ep, &k, &x, batch, y, false),
            ];
            // Grouped convs have one path (direct loops), through `forward`.
            let paths = if g.groups > 1 { 1 } else { splits.len() };
            for f in &splits[..paths] {
                let mut y = vec![f32::NAN; batch * g.output_len()];
                f(&mut y);
                for (a, w) in y.iter().zip(&want) {
                    assert!((*a as f64 - w).abs() < 1e-4, "{c:?} {a} vs {w}");
                }
            }
        }
    }

    /// The inference path with channel counts the AVX-512 kernel takes (multiples
    /// of 16, a partial 64-channel panel, depth past one block; short kernel
    /// rows grouped into one block, long ones cut; unpadded and padded input) and a folded
    /// BatchNormalization, against the plain twin (im2col, `gemm` crate, then the
    /// epilogue) and the direct convolution followed by the same epilogue.
    #[test]
    fn fused_inference_path_matches_plain_twin_and_reference() {
        for (c, shape, batch) in [
            (Conv2D::new(96, 11).strides(4), Shape::image(31, 31, 3), 1),
            (Conv2D::new(32, 3).same(), Shape::image(9, 9, 48), 2),
            (Conv2D::new(16, 5).same(), Shape::image(7, 6, 20), 1),
            // Chunks that start inside an image; valid padding leaving input unread.
            (Conv2D::new(16, 3).same(), Shape::image(10, 10, 32), 3),
            (Conv2D::new(64, 3).strides(2), Shape::image(9, 8, 32), 2),
            // Few pixels, several 64-channel panels: split by channels.
            (Conv2D::new(160, 3).same(), Shape::image(5, 5, 32), 1),
            // Kernel rows of 480 values, cut into two depth blocks each.
            (Conv2D::new(16, 3).same(), Shape::image(6, 6, 160), 1),
        ] {
            let g = geometry(&c, shape);
            let x = lcg(1, batch * g.input_len());
            let k = lcg(2, g.kdim() * g.out_c);
            let b = lcg(3, g.out_c);
            let scale = lcg(4, g.out_c);
            let shift = lcg(5, g.out_c);
            let raw = naive(&g, &k, &b.iter().map(|_| 0.0).collect::<Vec<_>>(), &x, batch);
            for (relu, affine) in [(true, Some((&scale[..], &shift[..]))), (false, None), (true, None)] {
                let ep = Epilogue { bias: &b, relu, affine };
                let mut fast = vec![f32::NAN; batch * g.output_len()];
                let mut plain = fast.clone();
                forward_spread(&g, &ep, &k, &x, batch, &mut fast, true);
                forward_spread(&g, &ep, &k, &x, batch, &mut plain, false);
                for (i, ((f, p), r)) in fast.iter().zip(&plain).zip(&raw).enumerate() {
                    let want = ep.apply(i % g.out_c, *r as f32);
                    assert!((f - want).abs() < 1e-4, "{c:?} fast {f} vs {want}");
                    assert!((p - want).abs() < 1e-4, "{c:?} plain {p} vs {want}");
                }
            }
        }
    }

    /// Finite differences of L = sum(r * y) against the analytic gradients, for the
    /// kernel, bias and input, over valid/same padding and strides, with and without ReLU.
    #[test]
    fn gradients_match_finite_differences() {
        for (ci, (c, shape, batch)) in cases().into_iter().enumerate() {
            let batch = batch.min(3);
            for relu in [false, true] {
                let g = geometry(&c, shape);
                let x = lcg(10 + ci as u64, batch * g.input_len());
                let k = lcg(20 + ci as u64, g.kdim() * g.out_c);
                let b: Vec<f32> = lcg(30, g.out_c).iter().map(|v| v * 0.1).collect();
                let r = lcg(40, batch * g.output_len());
                // L and the ReLU pattern: a coordinate whose +-h step flips a unit
                // crosses a kink, where finite differences mean nothing; it is skipped.
                let loss = |x: &[f32], k: &[f32], b: &[f32]| -> (f64, Vec<bool>) {
                    let mut y = vec![0.0; batch * g.output_len()];
                    forward(&g, relu, k, b, x, batch, &mut y);
                    (y.iter().zip(&r).map(|(a, b)| *a as f64 * *b as f64).sum(), y.iter().map(|&v| v > 0.0).collect())
                };
                let mut y = vec![0.0; batch * g.output_len()];
                forward(&g, relu, &k, &b, &x, batch, &mut y);
                let mut dy = r.clone();
                let (mut dk, mut db, mut dx) = (vec![0.0; k.len()], vec![0.0; b.len()], vec![0.0; x.len()]);
                backward(&g, relu, &k, &x, &y, &mut dy, batch, &mut dk, &mut db, Some(&mut dx), &mut Vec::new());
                let h = 1e-2f32;
                let check = |name: &str, ana: &[f32], num: &mut dyn FnMut(usize) -> Option<f64>| {
                    let (mut err, mut norm, mut skipped) = (0.0f64, 0.0f64, 0);
                    for (i, &a) in ana.iter().enumerate() {
                        let Some(n) = num(i) else {
                            skipped += 1;
                            continue;
                        };
                        err += (n - a as f64).powi(2);
                        norm += n.powi(2) + (a as f64).powi(2);
                    }
                    let rel = (err / norm.max(1e-12)).sqrt();
                    assert!(rel < 2e-3, "{c:?} relu={relu} d{name}: relative error {rel}");
                    // A bias moves every unit of its channel, so it may meet a kink more often.
                    let allowed = if name == "bias" { ana.len() - 1 } else { ana.len() / 4 };
                    assert!(skipped <= allowed, "{c:?} d{name}: {skipped} of {} at kinks", ana.len());
                };
                let fd =
                    |p: (f64, Vec<bool>), m: (f64, Vec<bool>)| (p.1 == m.1).then(|| (p.0 - m.0) / (2.0 * h as f64));
                check("kernel", &dk, &mut |i| {
                    let (mut kp, mut km) = (k.clone(), k.clone());
                    kp[i] += h;
                    km[i] -= h;
                    fd(loss(&x, &kp, &b), loss(&x, &km, &b))
                });
                check("bias", &db, &mut |i| {
                    let (mut bp, mut bm) = (b.clone(), b.clone());
                    bp[i] += h;
                    bm[i] -= h;
                    fd(loss(&x, &k, &bp), loss(&x, &k, &bm))
                });
                check("input", &dx, &mut |i| {
                    let (mut xp, mut xm) = (x.clone(), x.clone());
                    xp[i] += h;
                    xm[i] -= h;
                    fd(loss(&xp, &k, &b), loss(&xm, &k, &b))
                });
            }
        }
    }

    #[test]
    fn same_padding_puts_the_odd_pixel_last() {
        // in 8, k 3, stride 2 -> out 4, total pad (4-1)*2+3-8 = 1: 0 before, 1 after.
        let g = geometry(&Conv2D::new(1, 3).same().strides(2), Shape::image(8, 8, 1));
        assert_eq!((g.out_h, g.out_w, g.pad_top, g.pad_left), (4, 4, 0, 0));
        // in 5, k 5, stride 1 -> out 5, total pad 4: 2 before.
        let g = geometry(&Conv2D::new(1, 5).same(), Shape::image(5, 5, 1));
        assert_eq!((g.out_h, g.pad_top), (5, 2));
    }
}
