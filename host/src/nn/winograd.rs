//! Winograd's minimal filtering (Lavin and Gray, 2016) for stride-1
//! convolutions: F(2x2, 3x3) for 3x3 kernels (each 2x2 block of outputs from
//! its 4x4 input tile, 16 multiplies per input and output channel instead of
//! 36) and F(4x4, 3x3) (6x6 tiles, 36 instead of 144, coarser rounding);
//! F(2x2, 5x5) (6x6 tiles, 36 instead of 100) and F(4x4, 5x5) (8x8 tiles,
//! 64 instead of 400) for 5x5 kernels; as one GEMM per transform point,
//! `V_xi [tiles, cin] x U_xi [cin, cout]`, on the same GEMM kernels as the
//! direct path.
//!
//! `U = G g G^T` (the filters), `V = B^T d B` (the input tiles, zeros outside
//! the image), `Y = A^T M A` (the output tiles), with the Toom-Cook matrices
//! of the points 0, 1, -1 (and 2, -2 for the 6x6 tiles, and 1/2, -1/2 for the
//! 8x8) and infinity. A variant's backward pass runs the adjoints of its own
//! linear maps, so its gradients are those of the function that variant
//! computes (the direct convolution's up to rounding).

use super::gemm::{matmul, Mat, Par};
use super::micro::Epilogue;
use super::scratch::{with_padded, with_scratch, with_staged};
use super::wide::vectorized;
use rayon::prelude::*;
use shared::geometry::ConvGeom;
use std::marker::PhantomData;
use std::ops::Range;

/// One F(m x m, r x r): `m` outputs a tile side, an `r`-tap kernel, tiles of
/// `t = m + r - 1`; the matrices row-major.
#[derive(Debug)]
pub struct Variant {
    /// `F(2x2, 3x3)` and so on, for reports.
    pub name: &'static str,
    m: usize,
    r: usize,
    t: usize,
    /// `A^T`, `m x t`.
    at: &'static [f32],
    /// `G`, `t x r`.
    g: &'static [f32],
    /// `B^T`, `t x t`.
    bt: &'static [f32],
}

/// F(2x2, 3x3): points 0, 1, -1, infinity; every entry 0, +-1 or +-1/2 (exact).
pub static F2_3: Variant = Variant {
    name: "F(2x2, 3x3)",
    m: 2,
    r: 3,
    t: 4,
    at: &[1.0, 1.0, 1.0, 0.0, 0.0, 1.0, -1.0, -1.0],
    g: &[1.0, 0.0, 0.0, 0.5, 0.5, 0.5, 0.5, -0.5, 0.5, 0.0, 0.0, 1.0],
    bt: &[1.0, 0.0, -1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, -1.0, 1.0, 0.0, 0.0, 1.0, 0.0, -1.0],
};

/// The input transform `B^T` of the 6x6 tiles (points 0, 1, -1, 2, -2,
/// infinity), shared by F(4x4, 3x3) and F(2x2, 5x5).
const BT_6: [f32; 36] = [
    4.0, 0.0, -5.0, 0.0, 1.0, 0.0, //
    0.0, -4.0, -4.0, 1.0, 1.0, 0.0, //
    0.0, 4.0, -4.0, -1.0, 1.0, 0.0, //
    0.0, -2.0, -1.0, 2.0, 1.0, 0.0, //
    0.0, 2.0, -1.0, -2.0, 1.0, 0.0, //
    0.0, 4.0, 0.0, -5.0, 0.0, 1.0,
];

/// F(4x4, 3x3): points 0, 1, -1, 2, -2, infinity (`G`'s sixths and twelfths
/// round; `A^T` holds 4s and 8s).
pub static F4_3: Variant = Variant {
    name: "F(4x4, 3x3)",
    m: 4,
    r: 3,
    t: 6,
    at: &[
        1.0, 1.0, 1.0, 1.0, 1.0, 0.0, //
        0.0, 1.0, -1.0, 2.0, -2.0, 0.0, //
        0.0, 1.0, 1.0, 4.0, 4.0, 0.0, //
        0.0, 1.0, -1.0, 8.0, -8.0, 1.0,
    ],
    g: &[
        1.0 / 4.0,
        0.0,
        0.0, //
        -1.0 / 6.0,
        -1.0 / 6.0,
        -1.0 / 6.0, //
        -1.0 / 6.0,
        1.0 / 6.0,
        -1.0 / 6.0, //
        1.0 / 24.0,
        1.0 / 12.0,
        1.0 / 6.0, //
        1.0 / 24.0,
        -1.0 / 12.0,
        1.0 / 6.0, //
        0.0,
        0.0,
        1.0,
    ],
    bt: &BT_6,
};

/// F(4x4, 5x5): points 0, 1, -1, 2, -2, 1/2, -1/2, infinity (8x8 tiles, 64
/// multiplies instead of 400; `G`'s ninths and 45ths round, `B^T` holds
/// 21/4 and 17/4).
pub static F4_5: Variant = Variant {
    name: "F(4x4, 5x5)",
    m: 4,
    r: 5,
    t: 8,
    at: &[
        1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, //
        0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 0.0, //
        0.0, 1.0, 1.0, 4.0, 4.0, 0.25, 0.25, 0.0, //
        0.0, 1.0, -1.0, 8.0, -8.0, 0.125, -0.125, 1.0,
    ],
    g: &[
        -1.0,
        0.0,
        0.0,
        0.0,
        0.0, //
        -2.0 / 9.0,
        -2.0 / 9.0,
        -2.0 / 9.0,
        -2.0 / 9.0,
        -2.0 / 9.0, //
        -2.0 / 9.0,
        2.0 / 9.0,
        -2.0 / 9.0,
        2.0 / 9.0,
        -2.0 / 9.0, //
        1.0 / 90.0,
        1.0 / 45.0,
        2.0 / 45.0,
        4.0 / 45.0,
        8.0 / 45.0, //
        1.0 / 90.0,
        -1.0 / 45.0,
        2.0 / 45.0,
        -4.0 / 45.0,
        8.0 / 45.0, //
        32.0 / 45.0,
        16.0 / 45.0,
        8.0 / 45.0,
        4.0 / 45.0,
        2.0 / 45.0, //
        32.0 / 45.0,
        -16.0 / 45.0,
        8.0 / 45.0,
        -4.0 / 45.0,
        2.0 / 45.0, //
        0.0,
        0.0,
        0.0,
        0.0,
        1.0,
    ],
    bt: &[
        -1.0, 0.0, 5.25, 0.0, -5.25, 0.0, 1.0, 0.0, //
        0.0, 1.0, 1.0, -4.25, -4.25, 1.0, 1.0, 0.0, //
        0.0, -1.0, 1.0, 4.25, -4.25, -1.0, 1.0, 0.0, //
        0.0, 0.5, 0.25, -2.5, -1.25, 2.0, 1.0, 0.0, //
        0.0, -0.5, 0.25, 2.5, -1.25, -2.0, 1.0, 0.0, //
        0.0, 2.0, 4.0, -2.5, -5.0, 0.5, 1.0, 0.0, //
        0.0, -2.0, 4.0, 2.5, -5.0, -0.5, 1.0, 0.0, //
        0.0, -1.0, 0.0, 5.25, 0.0, -5.25, 0.0, 1.0,
    ],
};

/// F(2x2, 5x5): points 0, 1, -1, 2, -2, infinity (`G`'s sixths and twelfths
/// round; the rest are exact).
pub static F2_5: Variant = Variant {
    name: "F(2x2, 5x5)",
    m: 2,
    r: 5,
    t: 6,
    at: &[1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, -1.0, 2.0, -2.0, 1.0],
    g: &[
        1.0 / 4.0,
        0.0,
        0.0,
        0.0,
        0.0, //
        -1.0 / 6.0,
        -1.0 / 6.0,
        -1.0 / 6.0,
        -1.0 / 6.0,
        -1.0 / 6.0, //
        -1.0 / 6.0,
        1.0 / 6.0,
        -1.0 / 6.0,
        1.0 / 6.0,
        -1.0 / 6.0, //
        1.0 / 24.0,
        1.0 / 12.0,
        1.0 / 6.0,
        1.0 / 3.0,
        2.0 / 3.0, //
        1.0 / 24.0,
        -1.0 / 12.0,
        1.0 / 6.0,
        -1.0 / 3.0,
        2.0 / 3.0, //
        0.0,
        0.0,
        0.0,
        0.0,
        1.0,
    ],
    bt: &BT_6,
};

/// Tiles one task of the forward takes (whole tile rows, at least this
/// many): its transformed inputs and products then stay near the core
/// between the transforms and the GEMMs. At 128 (a task about the direct
/// path's tile of 512 output pixels) conv 2's F(4x4, 5x5) products were
/// 8 MB a task; 32 took its batch-32 forward from 50-52 to 37-40 ms, conv 3
/// from 29-30 to 25-27, conv 4 level (`cargo bench --bench winograd`, two
/// sweeps of 8-256). In the training step (`train_profile -- 32 3`, three
/// alternating pairs) conv 2's forward went 48.8/55.5/51.4 -> 40.7/38.8/40.6
/// ms and conv 4's 38.5/42.7/39.6 -> 44.0/41.5/43.0: conv 4's 21 MB of
/// transformed filters are read once a task, four times as often.
const TASK_TILES: usize = 32;
/// Tiles up to which a forward is one task ([`forward_by_channels`]: batch
/// 1, where the jobs split the output channels instead).
const ONE_TASK_TILES: usize = 128;

/// The 3x3 variants, finest rounding first.
static THREE: [&Variant; 2] = [&F2_3, &F4_3];
/// The 5x5 variants, finest rounding first.
static FIVE: [&Variant; 2] = [&F2_5, &F4_5];

/// The variants that compute this convolution, finest rounding first (empty
/// unless one group, a 3x3 or 5x5 kernel, stride 1, undilated, each padding
/// less than the kernel).
pub fn variants(g: &ConvGeom) -> &'static [&'static Variant] {
    let plain = g.groups == 1 && (g.stride_h, g.stride_w) == (1, 1) && (g.dilation_h, g.dilation_w) == (1, 1);
    let (vs, r): (&'static [&'static Variant], usize) = match (g.kernel_h, g.kernel_w) {
        (3, 3) => (&THREE, 3),
        (5, 5) => (&FIVE, 5),
        _ => return &[],
    };
    if plain && g.pad_top < r && g.pad_left < r {
        vs
    } else {
        &[]
    }
}

/// Whether Winograd's arithmetic computes this convolution ([`variants`]).
pub fn serves(g: &ConvGeom) -> bool {
    !variants(g).is_empty()
}

impl Variant {
    /// Multiplies of the element-wise stage for one image of `g` (`t^2` per
    /// tile, input and output channel; the transforms' additions not
    /// counted): the roofline's Winograd floor.
    pub fn multiplies(&self, g: &ConvGeom) -> u64 {
        let (th, tw) = tiles(g, self);
        (th * tw * self.t * self.t) as u64 * g.in_c as u64 * g.out_c as u64
    }
}

/// Whether `v` computes this convolution.
fn check(g: &ConvGeom, v: &Variant) {
    assert!(variants(g).iter().any(|w| std::ptr::eq(*w, v)), "winograd: {} does not serve {g:?}", v.name);
}

/// `o = sum_j coefs[j] inp[j]` over runs of channels, zero coefficients
/// skipped: `c0 x0` rounded, plus `c1 x1` rounded, rounded, and so on in
/// order (a multiply and an add each, never fused). Each block of channels
/// is summed over all the terms in registers and stored once; a pass over
/// the whole run per term (as this was) loaded and stored `o` again for
/// every term, and the output transform of F(4x4, 5x5) spent a third of its
/// time there (`perf`). The sums are the same: `1 x` and `-1 x` are exact,
/// so the additions the passes made for +-1 are these.
#[inline(always)]
fn combine(coefs: &[f32], inp: &[&[f32]], o: &mut [f32]) {
    combine_then(coefs, inp, o, None)
}

/// [`combine`], then `ep` (its channels `o`'s) applied to each block
/// before it is stored. Applied as a pass of its own, the epilogue reloaded
/// each output pixel just stored, and those loads stalled: a third of the
/// output transform in the batch-1 network (`perf`). Same operations, so
/// the same bits as the pass.
#[inline(always)]
fn combine_then(coefs: &[f32], inp: &[&[f32]], o: &mut [f32], ep: Option<&Epilogue>) {
    let mut cs = [0.0f32; MAX_SIDE];
    let mut xs: [&[f32]; MAX_SIDE] = [&[]; MAX_SIDE];
    let mut terms = 0;
    for (&c, &x) in coefs.iter().zip(inp) {
        if c != 0.0 {
            assert!(terms < MAX_SIDE && x.len() >= o.len(), "winograd: a combination of {} runs", inp.len());
            (cs[terms], xs[terms]) = (c, x);
            terms += 1;
        }
    }
    let (cs, xs) = (&cs[..terms], &xs[..terms]);
    if terms == 0 {
        o.fill(0.0);
        return;
    }
    // 64 channels a block (four zmm registers), then 16, then one.
    let done = combine_blocks::<64>(cs, xs, 0, o, ep);
    let done = combine_blocks::<16>(cs, xs, done, o, ep);
    combine_blocks::<1>(cs, xs, done, o, ep);
}

/// [`combine`]'s sums for the whole blocks of `B` channels of `o[from..]`,
/// each over all the terms (at least one) in registers; returns where the
/// blocks ended.
#[inline(always)]
fn combine_blocks<const B: usize>(
    cs: &[f32],
    xs: &[&[f32]],
    from: usize,
    o: &mut [f32],
    ep: Option<&Epilogue>,
) -> usize {
    let mut blocks = o[from..].chunks_exact_mut(B);
    let mut at = from;
    for ob in blocks.by_ref() {
        let mut acc = [0.0f32; B];
        for (a, x) in acc.iter_mut().zip(&xs[0][at..][..B]) {
            *a = cs[0] * x;
        }
        for (&c, x) in cs.iter().zip(xs).skip(1) {
            for (a, x) in acc.iter_mut().zip(&x[at..][..B]) {
                *a += c * x;
            }
        }
        if let Some(ep) = ep {
            ep.apply_run(at, &mut acc);
        }
        ob.copy_from_slice(&acc);
        at += B;
    }
    at
}

/// Transform points of the largest tile (8 x 8).
const MAX_POINTS: usize = 64;
/// Points along one side of the largest tile.
const MAX_SIDE: usize = 8;

/// Runs `f(0..n)` as a stack array (`n <= N`): the transforms run per tile
/// and per channel, where a collected `Vec` was a heap allocation each time.
/// `N` is [`MAX_POINTS`] for a tile's runs and [`MAX_SIDE`] for one row or
/// column of them (a 64-entry array is 1 KB to fill and return).
#[inline(always)]
fn gather<'a, const N: usize>(n: usize, f: impl Fn(usize) -> &'a [f32]) -> [&'a [f32]; N] {
    assert!(n <= N, "winograd: {n} runs");
    let mut out: [&[f32]; N] = [&[]; N];
    for (i, o) in out.iter_mut().enumerate().take(n) {
        *o = f(i);
    }
    out
}

/// Row `i` of `mat` (`rows x cols`), or column `i` for the transpose.
fn coefs(mat: &[f32], cols: usize, i: usize, transpose: bool) -> Vec<f32> {
    if transpose {
        mat.chunks_exact(cols).map(|row| row[i]).collect()
    } else {
        mat[i * cols..][..cols].to_vec()
    }
}

/// Both sides of a separable transform `out = L in R` over runs of `len`
/// channels: `inp` holds `a x b` runs (row-major), `out` gets `p x q` runs,
/// `left` is `p x a` and `right^T` is `q x b` (each given as rows of
/// coefficients). `tmp` holds `p x b` runs.
#[inline(always)]
fn transform2(
    left: &[Vec<f32>],
    right_t: &[Vec<f32>],
    inp: &[&[f32]],
    b: usize,
    tmp: &mut [f32],
    len: usize,
    mut out: impl FnMut(usize, usize, &[&[f32]], &[f32]),
) {
    let a = inp.len() / b;
    // tmp[i][y] = sum_x left[i][x] inp[x][y]
    for (i, li) in left.iter().enumerate() {
        for y in 0..b {
            let col = gather::<MAX_SIDE>(a, |x| inp[x * b + y]);
            combine(li, &col[..a], &mut tmp[(i * b + y) * len..][..len]);
        }
    }
    // out[i][j] = sum_y tmp[i][y] right_t[j][y]
    for i in 0..left.len() {
        let row = gather::<MAX_SIDE>(b, |y| &tmp[(i * b + y) * len..][..len]);
        for (j, rj) in right_t.iter().enumerate() {
            out(i, j, &row[..b], rj);
        }
    }
}

/// Tiles along the height and the width of one image.
fn tiles(g: &ConvGeom, v: &Variant) -> (usize, usize) {
    (g.out_h.div_ceil(v.m), g.out_w.div_ceil(v.m))
}

/// `G w G^T` of `outer` filters' taps into `out` (`[t^2][outer][len]`, all
/// written), over runs of `len` channels: `taps(o, tap)` is filter `o`'s run
/// at `tap`. [`filter_transform_into`] and [`filter_transform_t_into`] differ
/// only in which channel axis is the run.
fn transform_filters<'a>(
    v: &Variant,
    outer: usize,
    len: usize,
    taps: impl Fn(usize, usize) -> &'a [f32],
    out: &mut [f32],
    packed: bool,
) {
    let (r, t) = (v.r, v.t);
    assert_eq!(out.len(), t * t * outer * len, "winograd: transformed filters' length");
    let gl: Vec<Vec<f32>> = (0..t).map(|i| coefs(v.g, r, i, false)).collect();
    let mut tmp = vec![0.0f32; t * r * len];
    let mut run = vec![0.0f32; len];
    for o in 0..outer {
        let w = gather::<MAX_POINTS>(r * r, |tap| taps(o, tap));
        transform2(&gl, &gl, &w[..r * r], r, &mut tmp, len, |i, j, row, rj| {
            let point = &mut out[(i * t + j) * outer * len..][..outer * len];
            if packed {
                combine(rj, row, &mut run);
                for cols in panels(len) {
                    point[outer * cols.start + o * cols.len()..][..cols.len()].copy_from_slice(&run[cols]);
                }
            } else {
                combine(rj, row, &mut point[o * len..][..len]);
            }
        });
    }
}

/// The micro-kernel's column panels of `n` channels: [`PANEL`] each, the
/// last what is left.
fn panels(n: usize) -> impl Iterator<Item = Range<usize>> {
    (0..n).step_by(PANEL).map(move |c0| c0..n.min(c0 + PANEL))
}

/// Whether this layer's `U` is kept in panels ([`filter_transform_into`]):
/// wherever the micro-kernel computes its products.
fn panelled(g: &ConvGeom) -> bool {
    super::micro::available(g.in_c, g.out_c)
}

/// Panel `cols` of point `xi` of panelled filters `u` (`cin` rows of
/// `cols.len()` values).
fn panel<'a>(g: &ConvGeom, u: &'a [f32], xi: usize, cols: &Range<usize>) -> &'a [f32] {
    &u[xi * g.in_c * g.out_c + g.in_c * cols.start..][..g.in_c * cols.len()]
}

/// `U_xi[c][k]` for the `t^2` points from Keras's HWIO kernel, over runs of
/// output channels, into `u`: `[t^2][cin][cout]`, or where [`panelled`],
/// each point's matrix as column panels of [`PANEL`] channels one after the
/// other (`[t^2][panel][cin][64]`), so that the micro-kernel streams each
/// panel from contiguous memory. Read in place from the `[cin][cout]`
/// layout, a panel was 384 rows 1.5 KB apart, which the prefetchers did not
/// follow: conv 4's F(4x4) forward at batch 1 read `U` at 6 GB/s.
fn filter_transform_into(g: &ConvGeom, v: &Variant, kernel: &[f32], u: &mut [f32]) {
    let (cn, kn) = (g.in_c, g.out_c);
    assert_eq!(kernel.len(), v.r * v.r * cn * kn, "winograd: kernel length");
    transform_filters(v, cn, kn, |c, tap| &kernel[(tap * cn + c) * kn..][..kn], u, panelled(g));
}

/// `U_xi^T` (`[t^2][cout][cin]`), over runs of input channels: the
/// backward's `dV = dM U^T` then runs on the micro-kernel, which reads its
/// right operand in place (the `gemm` crate packed all of `U` again for
/// every transform point of every task).
fn filter_transform_t_into(g: &ConvGeom, v: &Variant, kernel: &[f32], ut: &mut [f32]) {
    let (cn, kn, taps) = (g.in_c, g.out_c, v.r * v.r);
    assert_eq!(kernel.len(), taps * cn * kn, "winograd: kernel length");
    // The kernel as [cout][tap][cin].
    let mut wt = vec![0.0f32; kernel.len()];
    for (tc, row) in kernel.chunks_exact(kn).enumerate() {
        let (tap, c) = (tc / cn, tc % cn);
        for (k, &w) in row.iter().enumerate() {
            wt[(k * taps + tap) * cn + c] = w;
        }
    }
    transform_filters(v, kn, cn, |k, tap| &wt[(k * taps + tap) * cn..][..cn], ut, false);
}

/// A tile's place: image, tile row and column.
#[derive(Clone, Copy)]
struct Tile {
    img: usize,
    ty: usize,
    tx: usize,
}

impl Tile {
    fn of(g: &ConvGeom, v: &Variant, index: usize) -> Self {
        let (th, tw) = tiles(g, v);
        Tile { img: index / (th * tw), ty: index / tw % th, tx: index % tw }
    }

    /// The input pixel (row, column) under tap `(y, x)` of the tile, if inside.
    fn input(&self, g: &ConvGeom, v: &Variant, y: usize, x: usize) -> Option<(usize, usize)> {
        let iy = (v.m * self.ty + y).checked_sub(g.pad_top)?;
        let ix = (v.m * self.tx + x).checked_sub(g.pad_left)?;
        (iy < g.in_h && ix < g.in_w).then_some((iy, ix))
    }

    /// The output pixel (row, column) of output `(a, b)` of the tile, if inside.
    fn output(&self, g: &ConvGeom, v: &Variant, a: usize, b: usize) -> Option<(usize, usize)> {
        let (oy, ox) = (v.m * self.ty + a, v.m * self.tx + b);
        (oy < g.out_h && ox < g.out_w).then_some((oy, ox))
    }
}

vectorized! {
    /// `V_xi` rows `0..n` of tiles `first..first + n` into `vv`: `[t^2][n][cin]`
    /// when `by_point`, else `[n][t^2][cin]` (each tile's points together).
    fn input_transform(g: &ConvGeom, v: &Variant, x: &[f32], first: usize, n: usize, vv: &mut [f32], by_point: bool) {
    let (cn, t) = (g.in_c, v.t);
    let bl: Vec<Vec<f32>> = (0..t).map(|i| coefs(v.bt, t, i, false)).collect();
    let mut tmp = vec![0.0f32; t * t * cn];
    let zeros = vec![0.0f32; cn];
    for r in 0..n {
        let tile = Tile::of(g, v, first + r);
        let img = &x[tile.img * g.input_len()..][..g.input_len()];
        // The tile's pixels read in place (a copy of each was a tenth of
        // conv 2's batch-1 forward), zeros outside the image.
        let runs = gather::<MAX_POINTS>(t * t, |pos| match tile.input(g, v, pos / t, pos % t) {
            Some((iy, ix)) => &img[(iy * g.in_w + ix) * cn..][..cn],
            None => &zeros,
        });
        transform2(&bl, &bl, &runs[..t * t], t, &mut tmp, cn, |i, j, row, rj| {
            let at = if by_point { (i * t + j) * n + r } else { r * t * t + i * t + j };
            combine(rj, row, &mut vv[at * cn..][..cn]);
        });
    }
}
}

/// `c = a w` (row `i` of `a`, `k` values, at `i * lda`; `w` is `k x n`
/// row-major) through the AVX-512 micro-kernel where it applies (it reads
/// `w` in place; the `gemm` crate packs all of it again on every call, which
/// at batch 1 cost more than the multiplies), else the `gemm` crate; `zeros`
/// holds `n` zeros, the micro-kernel's bias.
#[allow(clippy::too_many_arguments)]
fn product(
    a: &[f32],
    rows: usize,
    k: usize,
    lda: usize,
    w: &[f32],
    n: usize,
    c: &mut [f32],
    zeros: &[f32],
    next: &[f32],
) {
    if !super::micro::gemm_cols(a, rows, k, lda, w, n, 0..n, c, n, &Epilogue::plain(zeros), next) {
        matmul(Mat { data: a, rows, cols: k, rs: lda, cs: 1 }, Mat::new(w, k, n), c, false, Par::Seq);
    }
}

/// The GEMMs `m_xi [n, cout] = v_xi [n, cin] u_xi [cin, cout]`.
fn multiply(g: &ConvGeom, v: &Variant, u: &[f32], vv: &[f32], n: usize, m: &mut [f32]) {
    let (cn, kn) = (g.in_c, g.out_c);
    let zeros = vec![0.0f32; kn];
    if panelled(g) {
        for xi in 0..v.t * v.t {
            let (a, c) = (&vv[xi * n * cn..][..n * cn], &mut m[xi * n * kn..][..n * kn]);
            for cols in panels(kn) {
                let w = cols.len();
                let plain = Epilogue::plain(&zeros[..w]);
                let done = super::micro::gemm_cols(
                    a,
                    n,
                    cn,
                    cn,
                    panel(g, u, xi, &cols),
                    w,
                    0..w,
                    &mut c[cols.start..],
                    kn,
                    &plain,
                    &[],
                );
                assert!(done, "winograd: the micro-kernel serves panelled filters");
            }
        }
        return;
    }
    for xi in 0..v.t * v.t {
        product(
            &vv[xi * n * cn..][..n * cn],
            n,
            cn,
            cn,
            &u[xi * cn * kn..][..cn * kn],
            kn,
            &mut m[xi * n * kn..][..n * kn],
            &zeros,
            &[],
        );
    }
}

/// `y = epilogue(conv(x, kernel))` for `batch` NHWC images through Winograd's
/// arithmetic in variant `v`. Inference passes the layer's `cache` (the same
/// weights call after call); training passes none, and the filters are
/// transformed on this call into the calling thread's second buffer (a fresh
/// 10 MB per call was page-faulted in every time).
///
/// # Panics
/// If `v` is not one of [`variants`] or the lengths do not match.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    g: &ConvGeom,
    v: &Variant,
    ep: &Epilogue,
    kernel: &[f32],
    x: &[f32],
    batch: usize,
    y: &mut [f32],
    cache: Option<&mut FilterCache>,
) {
    check(g, v);
    assert_eq!(x.len(), batch * g.input_len());
    assert_eq!(y.len(), batch * g.output_len());
    match cache {
        Some(cache) => forward_tiles(g, v, ep, cache.filters(g, v, kernel), x, batch, y),
        None => with_padded(v.t * v.t * g.in_c * g.out_c, |u| {
            filter_transform_into(g, v, kernel, u);
            forward_tiles(g, v, ep, u, x, batch, y)
        }),
    }
}

/// One inference layer's transformed filters, kept until [`FilterCache::clear`]:
/// a batch-1 inference otherwise transforms the filters on every call, which
/// for AlexNet's conv 4 takes as long as its multiplies. Comparing the kernel
/// with a kept copy on every call (as this did at first) read 10 MB per call
/// for conv 4, a fifth of Winograd's batch-1 time, so validity is tracked
/// instead: whoever owns the kernel clears the cache whenever it may have
/// been written (the network does in `params_mut` and `load_tensors`, the
/// only ways to write its weights). A hit also needs the same variant, shape
/// and kernel buffer (its address; the variant and shape fix its length), so
/// another kernel is never served.
#[derive(Clone, Debug, Default)]
pub struct FilterCache {
    key: Option<(&'static str, usize, usize, usize)>,
    u: Vec<f32>,
}

impl FilterCache {
    /// Forget the filters: the kernel may have changed.
    pub fn clear(&mut self) {
        self.key = None;
    }

    /// `U` of `kernel` in variant `v`, transformed again only if the key
    /// changed or the cache was cleared since the last call.
    fn filters(&mut self, g: &ConvGeom, v: &Variant, kernel: &[f32]) -> &[f32] {
        let key = Some((v.name, g.in_c, g.out_c, kernel.as_ptr() as usize));
        if self.key != key {
            self.u.resize(v.t * v.t * g.in_c * g.out_c, 0.0);
            filter_transform_into(g, v, kernel, &mut self.u);
            self.key = key;
        }
        &self.u
    }
}

/// Output channels of one panel of the kept filters ([`filter_transform_into`]),
/// and of one job of [`forward_by_channels`]: the micro-kernel's panel width.
const PANEL: usize = 64;

/// [`forward`] with the transformed filters `u`.
fn forward_tiles(g: &ConvGeom, v: &Variant, ep: &Epilogue, u: &[f32], x: &[f32], batch: usize, y: &mut [f32]) {
    let (th, tw) = tiles(g, v);
    if batch * th * tw <= ONE_TASK_TILES && g.out_c > PANEL && rayon::current_num_threads() > 1 && panelled(g) {
        return forward_by_channels(g, v, ep, u, x, batch, y);
    }
    let (t, mm) = (v.t, v.m);
    // Tasks of whole tile rows: each writes output rows of its own.
    let rows_total = batch * th;
    // At least one task a thread (batch 1: a 13x13 layer's 7 tile rows over
    // the cores).
    let rows_per_task = TASK_TILES.div_ceil(tw).min(rows_total.div_ceil(rayon::current_num_threads())).max(1);
    let row_start = |r: usize| {
        let (img, ty) = (r / th, r % th);
        img * g.output_len() + (mm * ty).min(g.out_h) * g.out_w * g.out_c
    };
    let mut parts: Vec<(usize, &mut [f32])> = Vec::new();
    let mut rest = y;
    let mut at_r = 0;
    while at_r < rows_total {
        let next = (at_r + rows_per_task).min(rows_total);
        let len = if next == rows_total { rest.len() } else { row_start(next) - row_start(at_r) };
        let (head, tail) = rest.split_at_mut(len);
        parts.push((at_r, head));
        rest = tail;
        at_r = next;
    }
    let (cn, kn) = (g.in_c, g.out_c);
    let al: Vec<Vec<f32>> = (0..mm).map(|i| coefs(v.at, t, i, false)).collect();
    parts.into_par_iter().for_each(|(r0, yc)| {
        let n = rows_per_task.min(rows_total - r0) * tw;
        let first = r0 * tw;
        with_scratch(t * t * n * (cn + kn), |buf| {
            let (vv, m) = buf.split_at_mut(t * t * n * cn);
            input_transform(g, v, x, first, n, vv, true);
            multiply(g, v, u, vv, n, m);
            output_transform(g, v, ep, &al, m, first, n, OutPixels::of(yc, kn), row_start(r0) / kn);
        });
    });
}

/// [`forward_tiles`] when all the tiles make one task (batch 1): split by
/// tiles, every thread would read all of `U` (conv 4's 9.4 MB under F(2x2),
/// from memory, for 49 tiles), which made Winograd slower than direct there.
/// Instead the input is transformed once and jobs split the output channels:
/// each reads only its columns of `U` and transforms only its channels of
/// `M`. Each value is the same sum as on the tile path (the micro-kernel's
/// sums do not depend on the column split), so the bytes are the same.
fn forward_by_channels(g: &ConvGeom, v: &Variant, ep: &Epilogue, u: &[f32], x: &[f32], batch: usize, y: &mut [f32]) {
    let (th, tw) = tiles(g, v);
    let (n, t, cn, kn) = (batch * th * tw, v.t, g.in_c, g.out_c);
    let al: Vec<Vec<f32>> = (0..v.m).map(|i| coefs(v.at, t, i, false)).collect();
    let jobs: Vec<Range<usize>> = panels(kn).collect();
    let zeros = vec![0.0f32; PANEL];
    with_staged(t * t * n * cn, |vv| {
        // Tiles laid out whole ([n][t^2][cin]) so that the threads transform
        // disjoint runs of them; the GEMMs read point xi's rows t^2 cin apart.
        let per = n.div_ceil(rayon::current_num_threads());
        vv.par_chunks_mut(per * t * t * cn)
            .enumerate()
            .for_each(|(i, chunk)| input_transform(g, v, x, i * per, chunk.len() / (t * t * cn), chunk, false));
        let vv = &*vv;
        let out = OutPixels::of(y, kn);
        jobs.par_iter().for_each(|cols| {
            let cw = cols.len();
            // SAFETY: each job writes only its own channels `cols` of every
            // pixel (the jobs' ranges are disjoint panels), and `y` outlives
            // the jobs.
            let out = unsafe { out.columns(cols.start) };
            with_scratch(t * t * n * cw, |m| {
                for xi in 0..t * t {
                    let c = &mut m[xi * n * cw..][..n * cw];
                    // The next point's panel is asked for while this one's later row groups run.
                    let next = if xi + 1 < t * t { panel(g, u, xi + 1, cols) } else { &[] };
                    product(&vv[xi * cn..], n, cn, t * t * cn, panel(g, u, xi, cols), cw, c, &zeros[..cw], next);
                }
                output_transform(g, v, &ep.cols(cols.clone()), &al, m, 0, n, out, 0);
            });
        });
    });
}

/// Where [`output_transform`] writes: output pixels `ld` values apart from
/// `ptr` (`len` values there), each call its epilogue's channels of every
/// pixel. Jobs that split a layer's output channels write one output buffer
/// in place this way; each used to fill a buffer of its own that was then
/// copied into the output (a `memcpy` and fresh pages every call).
#[derive(Clone, Copy)]
struct OutPixels<'y> {
    ptr: *mut f32,
    len: usize,
    ld: usize,
    /// The buffer stays borrowed (mutably) while any view of it lives.
    _y: PhantomData<&'y mut [f32]>,
}

// SAFETY: an `OutPixels` is a view of a buffer the caller borrows mutably
// for as long as the view is used; jobs that share one write disjoint
// channels (see `columns`).
unsafe impl Send for OutPixels<'_> {}
unsafe impl Sync for OutPixels<'_> {}

impl<'y> OutPixels<'y> {
    /// All of `y`, pixels of `ld` values.
    fn of(y: &'y mut [f32], ld: usize) -> Self {
        OutPixels { ptr: y.as_mut_ptr(), len: y.len(), ld, _y: PhantomData }
    }

    /// The channels from `col` of every pixel.
    ///
    /// # Safety
    /// Views used at the same time must write disjoint channels.
    unsafe fn columns(self, col: usize) -> Self {
        assert!(col <= self.ld && col <= self.len, "winograd: column out of range");
        // SAFETY: `col <= len`: inside the buffer or one past its end.
        OutPixels { ptr: unsafe { self.ptr.add(col) }, len: self.len - col, ..self }
    }

    /// The `kn` values of pixel `at` (counted from the view's start).
    #[allow(clippy::mut_from_ref)]
    #[inline(always)]
    fn pixel(&self, at: usize, kn: usize) -> &mut [f32] {
        assert!(at * self.ld + kn <= self.len, "winograd: output pixel out of range");
        // SAFETY: in bounds (asserted); no other view writes these values
        // (`columns`' contract) and this one hands out each pixel once per write.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(at * self.ld), kn) }
    }
}

vectorized! {
    /// `Y = A^T M A` of tiles `first..first + n` (`m` is `[t^2][n][len]`,
    /// `len` the epilogue's channels: all or some of the layer's), the
    /// epilogue applied, into `out`'s pixels, counted from output pixel
    /// `base`.
    #[allow(clippy::too_many_arguments)]
    fn output_transform(
        g: &ConvGeom,
        v: &Variant,
        ep: &Epilogue,
        al: &[Vec<f32>],
        m: &[f32],
        first: usize,
        n: usize,
        out: OutPixels<'_>,
        base: usize,
    ) {
        let (t, kn) = (v.t, ep.bias.len());
        let mut tmp = vec![0.0f32; v.m * t * kn];
        for r in 0..n {
            let tile = Tile::of(g, v, first + r);
            let runs = gather::<MAX_POINTS>(t * t, |xi| &m[(xi * n + r) * kn..][..kn]);
            transform2(al, al, &runs[..t * t], t, &mut tmp, kn, |a, b, row, rb| {
                if let Some((oy, ox)) = tile.output(g, v, a, b) {
                    let px = out.pixel(tile.img * g.out_h * g.out_w + oy * g.out_w + ox - base, kn);
                    combine_then(rb, row, px, Some(ep));
                }
            });
        }
    }
}

/// Gradients of [`forward`] (its epilogue a bias and an optional ReLU, whose
/// mask the caller has applied to `dy`): writes `dL/dkernel` into
/// `dkernel`, `dbias` and, when given, `dx`. Each group's `dU` partial lives
/// in one of `partials` (kept in the layer between steps, as the direct
/// path's: fresh ones were page-faulted in every step).
#[allow(clippy::too_many_arguments)]
pub fn backward(
    g: &ConvGeom,
    v: &Variant,
    kernel: &[f32],
    x: &[f32],
    dy: &[f32],
    batch: usize,
    dkernel: &mut [f32],
    dbias: &mut [f32],
    dx: Option<&mut [f32]>,
    partials: &mut Vec<Vec<f32>>,
) {
    check(g, v);
    assert_eq!(x.len(), batch * g.input_len());
    assert_eq!(dy.len(), batch * g.output_len());
    with_padded(v.t * v.t * g.in_c * g.out_c, |ut| {
        filter_transform_t_into(g, v, kernel, ut);
        backward_tiles(g, v, ut, x, dy, batch, dkernel, dbias, dx, partials)
    })
}

vectorized! {
    /// `dM = A dY A^T` of tiles `first..first + n` of the images in `dys`
    /// (zeros past the image) into `dm`: `[t^2][n][cout]` when `by_point`,
    /// else tile after tile (`[n][t^2][cout]`).
    #[allow(clippy::too_many_arguments)]
    fn output_adjoint(
        g: &ConvGeom,
        v: &Variant,
        a_adj: &[Vec<f32>],
        dys: &[f32],
        first: usize,
        n: usize,
        dm: &mut [f32],
        by_point: bool,
    ) {
        let (t, mm, kn) = (v.t, v.m, g.out_c);
        let zeros = vec![0.0f32; kn];
        let mut tmp = vec![0.0f32; t * mm * kn];
        for r in 0..n {
            let tile = Tile::of(g, v, first + r);
            let runs = gather::<MAX_POINTS>(mm * mm, |p| match tile.output(g, v, p / mm, p % mm) {
                Some((oy, ox)) => &dys[tile.img * g.output_len() + (oy * g.out_w + ox) * kn..][..kn],
                None => &zeros,
            });
            transform2(a_adj, a_adj, &runs[..mm * mm], mm, &mut tmp, kn, |i, j, row, rj| {
                let at = if by_point { (i * t + j) * n + r } else { r * t * t + i * t + j };
                combine(rj, row, &mut dm[at * kn..][..kn]);
            });
        }
    }
}

vectorized! {
    /// `B dV B^T` of tiles `first..first + n` (`vv` is `[t^2][rows][cin]`,
    /// tile `first + r` its row `first + r`) added into the input gradient
    /// `dxs` of their images (the parts inside the image), `dxs` starting at
    /// tile `first`'s image.
    #[allow(clippy::too_many_arguments)]
    fn input_adjoint(
        g: &ConvGeom,
        v: &Variant,
        b_adj: &[Vec<f32>],
        vv: &[f32],
        rows: usize,
        first: usize,
        n: usize,
        dxs: &mut [f32],
    ) {
        let (t, cn) = (v.t, g.in_c);
        let base = Tile::of(g, v, first).img;
        let mut tmp = vec![0.0f32; t * t * cn];
        let mut px = vec![0.0f32; cn];
        for r in first..first + n {
            let tile = Tile::of(g, v, r);
            let runs = gather::<MAX_POINTS>(t * t, |xi| &vv[(xi * rows + r) * cn..][..cn]);
            transform2(b_adj, b_adj, &runs[..t * t], t, &mut tmp, cn, |yy, xx, row, rx| {
                if let Some((iy, ix)) = tile.input(g, v, yy, xx) {
                    combine(rx, row, &mut px);
                    let at = (tile.img - base) * g.input_len() + (iy * g.in_w + ix) * cn;
                    dxs[at..][..cn].iter_mut().zip(&px).for_each(|(d, s)| *d += s);
                }
            });
        }
    }
}

/// Tiles of one round of [`backward_tiles`]: whole images, about this many.
/// A round's `dU` GEMMs run over all its tiles at once: rounds of 64, 128,
/// 256, 512 and 1024 tiles gave conv 4's F(4x4) backward 103, 98, 84, 79 and
/// 82 ms at batch 32 (conv 3 and conv 2 moved less).
const ROUND_TILES: usize = 512;

/// [`backward`] with the transposed transformed filters `ut`, in rounds of
/// whole images, each in three parallel steps:
/// 1. over tiles: `V = B^T d B` and `dM = A dY A^T`, each job's run of
///    tiles laid out point by point;
/// 2. over the transform points: `dU_xi (+)= V_xi^T dM_xi` over all of the
///    round's tiles, one run after another on the micro-kernel
///    ([`super::micro::gemm_at`]), and `dV_xi = dM_xi U_xi^T`;
/// 3. over images: `dX += B dV B^T`.
///
/// Each point's `dU_xi` belongs to one job, so there are no per-thread
/// partials to zero and sum (eight of conv 4's 21 MB partials were, a
/// seventh of its backward). On the micro-kernel the sums do not depend on
/// the thread count either: each is one ascending chain over the tiles,
/// however the jobs cut them into runs.
#[allow(clippy::too_many_arguments)]
fn backward_tiles(
    g: &ConvGeom,
    v: &Variant,
    ut: &[f32],
    x: &[f32],
    dy: &[f32],
    batch: usize,
    dkernel: &mut [f32],
    dbias: &mut [f32],
    mut dx: Option<&mut [f32]>,
    partials: &mut Vec<Vec<f32>>,
) {
    let (cn, kn, t) = (g.in_c, g.out_c, v.t);
    let xis = t * t;
    let (th, tw) = tiles(g, v);
    let per_image = th * tw;
    let round_images = ROUND_TILES.div_ceil(per_image).clamp(1, batch.max(1));
    // Tiles a job of steps 1 and 3 takes: whole images, at least one job a
    // thread.
    let job_images = |imgs: usize| imgs.div_ceil(rayon::current_num_threads()).max(1);
    // The bias gradient: per-pixel sums in f64 over fixed runs, in order.
    let parts: Vec<Vec<f64>> = dy
        .par_chunks(kn * 1024)
        .map(|run| {
            let mut db = vec![0.0f64; kn];
            for px in run.chunks_exact(kn) {
                db.iter_mut().zip(px).for_each(|(b, &d)| *b += d as f64);
            }
            db
        })
        .collect();
    let mut db = vec![0.0f64; kn];
    for q in &parts {
        db.iter_mut().zip(q).for_each(|(s, v)| *s += v);
    }
    dbias.iter_mut().zip(&db).for_each(|(b, &v)| *b = v as f32);
    // dU lives in the layer's kept buffer (the direct path keeps its
    // per-group partials there); the first round writes it whole.
    partials.resize_with(1, Vec::new);
    let du = &mut partials[0];
    du.resize(xis * cn * kn, 0.0);
    if let Some(dx) = dx.as_deref_mut() {
        assert_eq!(dx.len(), x.len());
        dx.fill(0.0);
    }
    let a_adj: Vec<Vec<f32>> = (0..t).map(|i| coefs(v.at, t, i, true)).collect();
    let b_adj: Vec<Vec<f32>> = (0..t).map(|i| coefs(v.bt, t, i, true)).collect();
    let zeros = vec![0.0f32; cn];
    let want_dx = dx.is_some();
    for i0 in (0..batch).step_by(round_images) {
        let imgs = round_images.min(batch - i0);
        let n = imgs * per_image;
        let xs = &x[i0 * g.input_len()..][..imgs * g.input_len()];
        let dys = &dy[i0 * g.output_len()..][..imgs * g.output_len()];
        let per_job = job_images(imgs);
        with_staged(xis * n * (2 * cn + kn), |buf| {
            let (vv, rest) = buf.split_at_mut(xis * n * cn);
            let (dm, dv) = rest.split_at_mut(xis * n * kn);
            // 1. Each job its run of tiles, point by point within the run
            //    (`[t^2][count][c]`), so that a point's rows are contiguous.
            let job_tiles = per_job * per_image;
            vv.par_chunks_mut(job_tiles * xis * cn).zip(dm.par_chunks_mut(job_tiles * xis * kn)).enumerate().for_each(
                |(j, (vj, dmj))| {
                    let (first, count) = (j * job_tiles, vj.len() / (xis * cn));
                    input_transform(g, v, xs, first, count, vj, true);
                    output_adjoint(g, v, &a_adj, dys, first, count, dmj, true);
                },
            );
            let (vv, dm) = (&*vv, &*dm);
            // 2. Point by point, over the jobs' runs in tile order.
            du.par_chunks_mut(cn * kn).zip(dv.par_chunks_mut(n * cn)).enumerate().for_each(|(xi, (du_xi, dv_xi))| {
                for first in (0..n).step_by(job_tiles) {
                    let count = job_tiles.min(n - first);
                    let v_xi = &vv[(first * xis + xi * count) * cn..][..count * cn];
                    let dm_xi = &dm[(first * xis + xi * count) * kn..][..count * kn];
                    let accumulate = i0 > 0 || first > 0;
                    if !super::micro::gemm_at(v_xi, cn, count, cn, dm_xi, kn, kn, du_xi, accumulate) {
                        matmul(Mat::new(v_xi, count, cn).t(), Mat::new(dm_xi, count, kn), du_xi, accumulate, Par::Seq);
                    }
                    if want_dx {
                        let ut_xi = &ut[xi * kn * cn..][..kn * cn];
                        product(dm_xi, count, kn, kn, ut_xi, cn, &mut dv_xi[first * cn..][..count * cn], &zeros, &[]);
                    }
                }
            });
            // 3. Image by image.
            if let Some(dx) = dx.as_deref_mut() {
                let dxs = &mut dx[i0 * g.input_len()..][..imgs * g.input_len()];
                let dv = &*dv;
                dxs.par_chunks_mut(per_job * g.input_len()).enumerate().for_each(|(j, dxj)| {
                    let (first, count) = (j * per_job * per_image, dxj.len() / g.input_len() * per_image);
                    input_adjoint(g, v, &b_adj, dv, n, first, count, dxj);
                });
            }
        });
    }
    filter_gradient(g, v, &partials[0], dkernel);
}

/// `dkernel = G^T dU G`, in parallel over the input channels.
fn filter_gradient(g: &ConvGeom, v: &Variant, du: &[f32], dkernel: &mut [f32]) {
    let (cn, kn, t, r) = (g.in_c, g.out_c, v.t, v.r);
    let xis = t * t;
    let g_adj: Vec<Vec<f32>> = (0..r).map(|i| coefs(v.g, r, i, true)).collect();
    // Channel-major ([cin][tap][cout]) so that the channels are disjoint chunks.
    let mut by_channel = vec![0.0f32; cn * r * r * kn];
    by_channel.par_chunks_mut(r * r * kn).enumerate().for_each(|(c, dk)| {
        let runs = gather::<MAX_POINTS>(xis, |xi| &du[(xi * cn + c) * kn..][..kn]);
        let mut tmp = vec![0.0f32; r * t * kn];
        transform2(&g_adj, &g_adj, &runs[..xis], t, &mut tmp, kn, |ky, kx, row, rx| {
            combine(rx, row, &mut dk[(ky * r + kx) * kn..][..kn]);
        });
    });
    for (c, dk) in by_channel.chunks_exact(r * r * kn).enumerate() {
        for (tap, run) in dk.chunks_exact(kn).enumerate() {
            dkernel[(tap * cn + c) * kn..][..kn].copy_from_slice(run);
        }
    }
}
