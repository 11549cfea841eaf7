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
use std::cell::RefCell;
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
    let mut terms: [(f32, &[f32]); MAX_SIDE] = [(0.0, &[]); MAX_SIDE];
    let n = nonzero_terms(coefs, inp, o.len(), &mut terms);
    if n == 0 {
        o.fill(0.0);
        return;
    }
    // 64 channels a block (four zmm registers), then 16, then one.
    let done = combine_blocks::<64>(&terms[..n], 0, o, ep);
    let done = combine_blocks::<16>(&terms[..n], done, o, ep);
    combine_blocks::<1>(&terms[..n], done, o, ep);
}

/// [`combine`]'s sums for the whole blocks of `B` channels of `o[from..]`,
/// each over all the terms (at least one) in registers; returns where the
/// blocks ended.
#[inline(always)]
fn combine_blocks<const B: usize>(terms: &[(f32, &[f32])], from: usize, o: &mut [f32], ep: Option<&Epilogue>) -> usize {
    let mut blocks = o[from..].chunks_exact_mut(B);
    let mut at = from;
    for ob in blocks.by_ref() {
        let mut acc = block_sum::<B>(terms, at);
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

/// How [`transform2`] computes one row of a [`Lin`].
#[derive(Debug)]
enum RowOp {
    /// Row `i` alone: its coefficients over the inputs.
    One(usize),
    /// Rows `i` and `i2`, which weigh every input equally up to sign, as
    /// `even + odd` and `even - odd`: `even` holds their common
    /// coefficients (zeros elsewhere), `odd` row `i`'s where they differ.
    Pair { i: usize, i2: usize, even: Vec<f32>, odd: Vec<f32> },
}

/// One side of a separable transform (`p x q`, applied to `q` runs), with
/// what its Toom-Cook points `x` and `-x` share computed once: a point's
/// powers differ from its negative's only in the odd ones' sign.
/// - Where the points index the inputs (`A^T`'s columns, `B`'s, `G^T`'s),
///   every row weighs the pair's two inputs equally up to one sign per row:
///   their sum and difference are formed once (`col_pairs`; the sum replaces
///   the first input, the difference the second) and each row reads one of
///   them, one term where it had two.
/// - Where they index the rows (`B^T`'s, `A`'s, `G`'s), the two rows are
///   `even +- odd` ([`RowOp::Pair`]): each input is read once for both, and
///   half the terms are summed.
///
/// The sums are those of the factored form, so the bits differ from a row by
/// row sum's (the forward pass and its adjoints each factor their own
/// matrices; `tests/winograd.rs` holds every path to the f64 reference).
#[derive(Debug)]
struct Lin {
    /// The rows' coefficients over the inputs after `col_pairs` (the first
    /// of a pair reads their sum, the second their difference).
    rows: Vec<Vec<f32>>,
    col_pairs: Vec<(usize, usize)>,
    ops: Vec<RowOp>,
    /// Whether row `i` is in a [`RowOp::Pair`] (a caller that takes pairs
    /// gets it there, not alone).
    paired: Vec<bool>,
}

impl Lin {
    /// Rows `0..p` of `mat` (`cols` wide), or its columns for the transpose.
    fn of(mat: &[f32], cols: usize, p: usize, transpose: bool) -> Self {
        Lin::new((0..p).map(|i| coefs(mat, cols, i, transpose)).collect())
    }

    fn new(mut rows: Vec<Vec<f32>>) -> Self {
        let q = rows.first().map_or(0, Vec::len);
        let mut col_pairs = Vec::new();
        // A pair's sum and difference cost a pass of their own, repaid only
        // where more than two rows read them.
        if rows.len() > 2 {
            let mut used = vec![false; q];
            for j in 0..q {
                for j2 in j + 1..q {
                    let mirrored = rows.iter().all(|r| r[j].abs() == r[j2].abs()) && rows.iter().any(|r| r[j] != 0.0);
                    if used[j] || used[j2] || !mirrored {
                        continue;
                    }
                    for r in rows.iter_mut() {
                        // c x_j + c x_j2 = c (x_j + x_j2); c x_j - c x_j2 = c (x_j - x_j2).
                        (r[j], r[j2]) = if r[j] == r[j2] { (r[j], 0.0) } else { (0.0, r[j]) };
                    }
                    (used[j], used[j2]) = (true, true);
                    col_pairs.push((j, j2));
                }
            }
        }
        let mut ops = Vec::new();
        let mut paired = vec![false; rows.len()];
        for i in 0..rows.len() {
            if paired[i] {
                continue;
            }
            let partner = (i + 1..rows.len()).find(|&i2| {
                let (a, b) = (&rows[i], &rows[i2]);
                !paired[i2]
                    && a.iter().zip(b).all(|(x, y)| x.abs() == y.abs())
                    && a.iter().zip(b).any(|(x, y)| *x != 0.0 && x == y)
                    && a.iter().zip(b).any(|(x, y)| *x != 0.0 && *x == -y)
            });
            match partner {
                Some(i2) => {
                    let (a, b) = (&rows[i], &rows[i2]);
                    let even = a.iter().zip(b).map(|(x, y)| if x == y { *x } else { 0.0 }).collect();
                    let odd = a.iter().zip(b).map(|(x, y)| if x == y { 0.0 } else { *x }).collect();
                    ops.push(RowOp::Pair { i, i2, even, odd });
                    (paired[i], paired[i2]) = (true, true);
                }
                None => ops.push(RowOp::One(i)),
            }
        }
        Lin { rows, col_pairs, ops, paired }
    }

    fn len(&self) -> usize {
        self.rows.len()
    }
}

/// Scratch [`transform2`] needs: `p x b` runs of `len` for the first side's
/// results, and a row's worth for paired inputs' sums and differences.
fn scratch_len(left: &Lin, b: usize, len: usize) -> usize {
    (left.len() * b + MAX_SIDE) * len
}

/// `s = a + b` and `d = a - b`, each rounded once (`col_pairs`).
#[inline(always)]
fn sum_diff(a: &[f32], b: &[f32], s: &mut [f32], d: &mut [f32]) {
    let n = s.len();
    let (a, b, d) = (&a[..n], &b[..n], &mut d[..n]);
    for k in 0..n {
        s[k] = a[k] + b[k];
        d[k] = a[k] - b[k];
    }
}

/// Replaces each of `lin`'s column pairs in `runs` by their sum and
/// difference, formed in `basis` (`len` values a run), in place.
#[inline(always)]
fn pair_inputs<'a>(lin: &Lin, runs: &mut [&'a [f32]], basis: &'a mut [f32], len: usize) {
    let mut spare = basis.chunks_exact_mut(len);
    for &(j, j2) in &lin.col_pairs {
        let (Some(s), Some(d)) = (spare.next(), spare.next()) else {
            unreachable!("winograd: basis holds MAX_SIDE runs")
        };
        sum_diff(runs[j], runs[j2], s, d);
        (runs[j], runs[j2]) = (s, d);
    }
}

/// `o1 = even . inp + odd . inp` and `o2 = even . inp - odd . inp`
/// ([`RowOp::Pair`]): both sums per block in registers, as [`combine`]
/// sums one; each input read once for both rows.
#[inline(always)]
fn combine_pair(even: &[f32], odd: &[f32], inp: &[&[f32]], o1: &mut [f32], o2: &mut [f32]) {
    let mut e: [(f32, &[f32]); MAX_SIDE] = [(0.0, &[]); MAX_SIDE];
    let mut d = e;
    let (ne, nd) = (nonzero_terms(even, inp, o1.len(), &mut e), nonzero_terms(odd, inp, o1.len(), &mut d));
    assert!(ne > 0 && nd > 0 && o2.len() == o1.len(), "winograd: a row pair without both parts");
    let done = pair_blocks::<64>(&e[..ne], &d[..nd], 0, o1, o2);
    let done = pair_blocks::<16>(&e[..ne], &d[..nd], done, o1, o2);
    pair_blocks::<1>(&e[..ne], &d[..nd], done, o1, o2);
}

/// Fills `t` with the terms of `cs . inp` whose coefficient is not zero (at
/// most [`MAX_SIDE`]), each run at least `len` long; returns how many. In
/// place: an array of terms returned by value was copied with 64-byte moves
/// right after its 8-byte stores, a store-forwarding stall per call that
/// cost the input transform more than the terms saved.
#[inline(always)]
fn nonzero_terms<'a>(cs: &[f32], inp: &[&'a [f32]], len: usize, t: &mut [(f32, &'a [f32]); MAX_SIDE]) -> usize {
    let mut n = 0;
    for (&c, &x) in cs.iter().zip(inp) {
        if c != 0.0 {
            assert!(n < MAX_SIDE && x.len() >= len, "winograd: a combination of {} runs", inp.len());
            t[n] = (c, x);
            n += 1;
        }
    }
    n
}

/// [`combine_pair`]'s blocks of `B` channels from `from`; returns where they ended.
#[inline(always)]
fn pair_blocks<const B: usize>(
    even: &[(f32, &[f32])],
    odd: &[(f32, &[f32])],
    from: usize,
    o1: &mut [f32],
    o2: &mut [f32],
) -> usize {
    let mut at = from;
    while at + B <= o1.len() {
        let (e, d) = (block_sum::<B>(even, at), block_sum::<B>(odd, at));
        let (p, m) = (&mut o1[at..][..B], &mut o2[at..][..B]);
        for k in 0..B {
            p[k] = e[k] + d[k];
            m[k] = e[k] - d[k];
        }
        at += B;
    }
    at
}

/// `sum_j c_j x_j[at..at + B]` over `terms` (at least one), in order: `c0
/// x0` rounded, plus `c1 x1` rounded, rounded, and so on (a multiply and an
/// add each, never fused).
#[inline(always)]
fn block_sum<const B: usize>(terms: &[(f32, &[f32])], at: usize) -> [f32; B] {
    let mut acc = [0.0f32; B];
    for (a, x) in acc.iter_mut().zip(&terms[0].1[at..][..B]) {
        *a = terms[0].0 * x;
    }
    // Slices, not `skip(1)`: its `nth` was left a call, and the
    // accumulators were spilled around it on every term.
    for &(c, x) in &terms[1..] {
        for (a, x) in acc.iter_mut().zip(&x[at..][..B]) {
            *a += c * x;
        }
    }
    acc
}

/// [`transform2`]'s outputs as runs of `len` values of `dst` at `at(i, j)`
/// (the transforms into point-by-point buffers), a row pair's two runs
/// written at once. Its callers' closures only forward here: written in
/// their `vectorized!` bodies they are compiled for AVX-512, and these
/// methods inline into them (closures written in a plain function were not,
/// and ran at SSE width).
struct RunsAt<'d, F> {
    dst: &'d mut [f32],
    len: usize,
    at: F,
}

impl<F: Fn(usize, usize) -> usize> RunsAt<'_, F> {
    #[inline(always)]
    fn one(&mut self, i: usize, j: usize, row: &[&[f32]], coefs: &[f32]) {
        combine(coefs, row, &mut self.dst[(self.at)(i, j)..][..self.len]);
    }

    #[inline(always)]
    fn pair(&mut self, i: usize, j: usize, j2: usize, row: &[&[f32]], even: &[f32], odd: &[f32]) {
        let (a, b, len) = ((self.at)(i, j), (self.at)(i, j2), self.len);
        let [o1, o2] = self.dst.get_disjoint_mut([a..a + len, b..b + len]).expect("winograd: two points' runs");
        combine_pair(even, odd, row, o1, o2);
    }
}

/// A [`transform2`] caller's writer of a row pair at once: called with
/// `(i, j, j2, row, even, odd)` for outputs `(i, j)` and `(i, j2)`
/// ([`combine_pair`]'s operands). `None::<NoPair>` where there is none: each
/// is then a [`combine`] of its own row. (A generic, not a `dyn`: the
/// callers are `vectorized!` bodies, whose AVX-512 copy must inline it.)
type NoPair = fn(usize, usize, usize, &[&[f32]], &[f32], &[f32]);

/// Both sides of a separable transform `out = L in R` over runs of `len`
/// channels: `inp` holds `a x b` runs (row-major), `out` gets `p x q` runs,
/// `left` is `L` (`p x a`) and `right` is `R^T` (`q x b`), both as
/// [`Lin`]s. `tmp` holds [`scratch_len`] values. `out(i, j, row, coefs)`
/// gets output `(i, j)` as `coefs . row`; `pair`, where given, takes the
/// second side's row pairs.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn transform2(
    left: &Lin,
    right: &Lin,
    inp: &[&[f32]],
    b: usize,
    tmp: &mut [f32],
    len: usize,
    mut out: impl FnMut(usize, usize, &[&[f32]], &[f32]),
    mut pair: Option<impl FnMut(usize, usize, usize, &[&[f32]], &[f32], &[f32])>,
) {
    let a = inp.len() / b;
    let (tmp, basis) = tmp.split_at_mut(left.len() * b * len);
    let basis = &mut basis[..MAX_SIDE * len];
    // tmp[i][y] = sum_x left[i][x] inp[x][y]
    for y in 0..b {
        let mut col = gather::<MAX_SIDE>(a, |x| inp[x * b + y]);
        pair_inputs(left, &mut col[..a], basis, len);
        for op in &left.ops {
            match op {
                RowOp::One(i) => combine(&left.rows[*i], &col[..a], &mut tmp[(i * b + y) * len..][..len]),
                RowOp::Pair { i, i2, even, odd } => {
                    let (lo, hi) = tmp.split_at_mut(i2 * b * len);
                    combine_pair(even, odd, &col[..a], &mut lo[(i * b + y) * len..][..len], &mut hi[y * len..][..len]);
                }
            }
        }
    }
    // out[i][j] = sum_y tmp[i][y] right[j][y]
    for i in 0..left.len() {
        let mut row = gather::<MAX_SIDE>(b, |y| &tmp[(i * b + y) * len..][..len]);
        pair_inputs(right, &mut row[..b], basis, len);
        // One call site each, so that the callers' closures inline.
        if let Some(pair) = pair.as_mut() {
            for op in &right.ops {
                if let RowOp::Pair { i: j, i2: j2, even, odd } = op {
                    pair(i, *j, *j2, &row[..b], even, odd);
                }
            }
        }
        for (j, rj) in right.rows.iter().enumerate() {
            if !(pair.is_some() && right.paired[j]) {
                out(i, j, &row[..b], rj);
            }
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
    let gl = Lin::of(v.g, r, t, false);
    let mut tmp = vec![0.0f32; scratch_len(&gl, r, len)];
    let mut run = vec![0.0f32; len];
    for o in 0..outer {
        let w = gather::<MAX_POINTS>(r * r, |tap| taps(o, tap));
        let each = |i: usize, j: usize, row: &[&[f32]], rj: &[f32]| {
            let point = &mut out[(i * t + j) * outer * len..][..outer * len];
            if packed {
                combine(rj, row, &mut run);
                for cols in panels(len) {
                    point[outer * cols.start + o * cols.len()..][..cols.len()].copy_from_slice(&run[cols]);
                }
            } else {
                combine(rj, row, &mut point[o * len..][..len]);
            }
        };
        transform2(&gl, &gl, &w[..r * r], r, &mut tmp, len, each, None::<NoPair>);
    }
}

/// The micro-kernel's column panels of `n` channels: [`panel_width`] each, the
/// last what is left.
fn panels(n: usize) -> impl Iterator<Item = Range<usize>> {
    cut(0..n, panel_width())
}

/// `r` cut into ranges of `width` from its start, the last what is left.
fn cut(r: Range<usize>, width: usize) -> impl Iterator<Item = Range<usize>> {
    let end = r.end;
    r.step_by(width).map(move |c0| c0..end.min(c0 + width))
}

/// `c = a w` for one panel `w` of the kept filters (`k x w.len() / k`, the
/// micro-kernel reads it where it lies): row `i` of `a` at `i * lda`, of `c`
/// at `i * ldc`; `zeros` holds the panel's width of zeros (the bias);
/// `next` is only prefetched.
#[allow(clippy::too_many_arguments)]
fn panel_product(
    a: &[f32],
    rows: usize,
    k: usize,
    lda: usize,
    w: &[f32],
    c: &mut [f32],
    ldc: usize,
    zeros: &[f32],
    next: &[f32],
) {
    let width = zeros.len();
    let plain = Epilogue::plain(zeros);
    let done = super::micro::gemm_cols(a, rows, k, lda, w, width, 0..width, c, ldc, &plain, next);
    assert!(done, "winograd: the micro-kernel serves panelled filters");
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
/// each point's matrix as column panels of [`panel_width`] channels one after the
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
    let bl = Lin::of(v.bt, t, t, false);
    let mut tmp = vec![0.0f32; scratch_len(&bl, t, cn)];
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
        let at = |i: usize, j: usize| (if by_point { (i * t + j) * n + r } else { r * t * t + i * t + j }) * cn;
        let dst = RefCell::new(RunsAt { dst: &mut *vv, len: cn, at });
        let one = |i: usize, j: usize, row: &[&[f32]], c: &[f32]| dst.borrow_mut().one(i, j, row, c);
        let pair = |i: usize, j: usize, j2: usize, row: &[&[f32]], e: &[f32], o: &[f32]| {
            dst.borrow_mut().pair(i, j, j2, row, e, o)
        };
        transform2(&bl, &bl, &runs[..t * t], t, &mut tmp, cn, one, Some(pair));
    }
}
}

/// `c = a w` (row `i` of `a`, `k` values, at `i * lda`; `w` is `k x n`
/// row-major) through the micro-kernel where it applies (it reads
/// `w` in place; the `gemm` crate packs all of it again on every call, which
/// at batch 1 cost more than the multiplies), else the `gemm` crate; `zeros`
/// holds `n` zeros, the micro-kernel's bias.
#[allow(clippy::too_many_arguments)]
fn product(a: &[f32], rows: usize, k: usize, lda: usize, w: &[f32], n: usize, c: &mut [f32], zeros: &[f32]) {
    if !super::micro::gemm_cols(a, rows, k, lda, w, n, 0..n, c, n, &Epilogue::plain(zeros), &[]) {
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
                let w = panel(g, u, xi, &cols);
                panel_product(a, n, cn, cn, w, &mut c[cols.start..], kn, &zeros[..cols.len()], &[]);
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

/// Output channels of one panel of the kept filters ([`filter_transform_into`]):
/// the micro-kernel's panel width, 64 for AVX-512's tile and 16 for AVX2's,
/// which then reads each panel where it lies instead of copying it first.
fn panel_width() -> usize {
    match super::micro::isa() {
        Some(super::micro::Isa::Avx2) => 16,
        _ => 64,
    }
}

/// Output channels of one [`forward_by_channels`] job at least (whole
/// panels). On AVX2 (16-channel panels) the output transform over one panel
/// at a time spent most of its time on per-tile bookkeeping rather than
/// arithmetic: 8 % of a batch-1 forward, a quarter of conv 2's F(4x4, 5x5)
/// (`perf`). With four panels a job, conv 2's batch-1 forward (`cargo bench
/// --bench winograd -- batch1/forward/winograd-4x4`, four alternating pairs)
/// went 2.03-2.15 -> 1.60-1.97 ms (32 channels: between); conv 3-5 in the
/// network 5-20 % faster (`train_profile -- 1 150 eval`), as a point's rows of
/// the transformed input are also read once for four panels.
const JOB_CHANNELS: usize = 64;

/// [`forward`] with the transformed filters `u`.
fn forward_tiles(g: &ConvGeom, v: &Variant, ep: &Epilogue, u: &[f32], x: &[f32], batch: usize, y: &mut [f32]) {
    let (th, tw) = tiles(g, v);
    if batch * th * tw <= ONE_TASK_TILES && g.out_c > panel_width() && rayon::current_num_threads() > 1 && panelled(g) {
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
    let al = Lin::of(v.at, t, mm, false);
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
/// Each job reads its panels of the kept `U` (four times the raw kernel's
/// bytes under F(4x4, 3x3)) from memory for 16 tiles; transforming a depth
/// block of the raw kernel per job instead, just before its GEMMs, read a
/// quarter of the bytes and was slower (conv 4 in the network 1.16-1.44
/// -> 1.56-1.89 ms, 2026-12-07): the transform's traffic through L2 costs
/// more than the memory it saves.
fn forward_by_channels(g: &ConvGeom, v: &Variant, ep: &Epilogue, u: &[f32], x: &[f32], batch: usize, y: &mut [f32]) {
    let (th, tw) = tiles(g, v);
    let (n, t, cn, kn) = (batch * th * tw, v.t, g.in_c, g.out_c);
    let al = Lin::of(v.at, t, v.m, false);
    let jobs: Vec<Range<usize>> = cut(0..kn, JOB_CHANNELS.next_multiple_of(panel_width())).collect();
    let zeros = vec![0.0f32; panel_width()];
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
            // pixel (the jobs' ranges are disjoint runs of panels), and `y` outlives
            // the jobs.
            let out = unsafe { out.columns(cols.start) };
            let job_panels: Vec<Range<usize>> = cut(cols.clone(), panel_width()).collect();
            with_scratch(t * t * n * cw, |m| {
                for xi in 0..t * t {
                    let c = &mut m[xi * n * cw..][..n * cw];
                    // Each panel of the job in turn, on the point's rows of
                    // `vv` while they are near the core.
                    for (q, pc) in job_panels.iter().enumerate() {
                        // The next panel is asked for while this one's later row groups run.
                        let next = match (job_panels.get(q + 1), xi + 1 < t * t) {
                            (Some(np), _) => panel(g, u, xi, np),
                            (None, true) => panel(g, u, xi + 1, &job_panels[0]),
                            (None, false) => &[],
                        };
                        let (w, c) = (panel(g, u, xi, pc), &mut c[pc.start - cols.start..]);
                        panel_product(&vv[xi * cn..], n, cn, t * t * cn, w, c, cw, &zeros[..pc.len()], next);
                    }
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
        al: &Lin,
        m: &[f32],
        first: usize,
        n: usize,
        out: OutPixels<'_>,
        base: usize,
    ) {
        let (t, kn) = (v.t, ep.bias.len());
        let mut tmp = vec![0.0f32; scratch_len(al, t, kn)];
        for r in 0..n {
            let tile = Tile::of(g, v, first + r);
            let runs = gather::<MAX_POINTS>(t * t, |xi| &m[(xi * n + r) * kn..][..kn]);
            let each = |a: usize, b: usize, row: &[&[f32]], rb: &[f32]| {
                if let Some((oy, ox)) = tile.output(g, v, a, b) {
                    let px = out.pixel(tile.img * g.out_h * g.out_w + oy * g.out_w + ox - base, kn);
                    combine_then(rb, row, px, Some(ep));
                }
            };
            transform2(al, al, &runs[..t * t], t, &mut tmp, kn, each, None::<NoPair>);
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
        a_adj: &Lin,
        dys: &[f32],
        first: usize,
        n: usize,
        dm: &mut [f32],
        by_point: bool,
    ) {
        let (t, mm, kn) = (v.t, v.m, g.out_c);
        let zeros = vec![0.0f32; kn];
        let mut tmp = vec![0.0f32; scratch_len(a_adj, mm, kn)];
        for r in 0..n {
            let tile = Tile::of(g, v, first + r);
            let runs = gather::<MAX_POINTS>(mm * mm, |p| match tile.output(g, v, p / mm, p % mm) {
                Some((oy, ox)) => &dys[tile.img * g.output_len() + (oy * g.out_w + ox) * kn..][..kn],
                None => &zeros,
            });
            let at = |i: usize, j: usize| (if by_point { (i * t + j) * n + r } else { r * t * t + i * t + j }) * kn;
            let dst = RefCell::new(RunsAt { dst: &mut *dm, len: kn, at });
            let one = |i: usize, j: usize, row: &[&[f32]], c: &[f32]| dst.borrow_mut().one(i, j, row, c);
            let pair = |i: usize, j: usize, j2: usize, row: &[&[f32]], e: &[f32], o: &[f32]| {
                dst.borrow_mut().pair(i, j, j2, row, e, o)
            };
            transform2(a_adj, a_adj, &runs[..mm * mm], mm, &mut tmp, kn, one, Some(pair));
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
        b_adj: &Lin,
        vv: &[f32],
        rows: usize,
        first: usize,
        n: usize,
        dxs: &mut [f32],
    ) {
        let (t, cn) = (v.t, g.in_c);
        let base = Tile::of(g, v, first).img;
        let mut tmp = vec![0.0f32; scratch_len(b_adj, t, cn)];
        let mut px = vec![0.0f32; cn];
        for r in first..first + n {
            let tile = Tile::of(g, v, r);
            let runs = gather::<MAX_POINTS>(t * t, |xi| &vv[(xi * rows + r) * cn..][..cn]);
            let each = |yy: usize, xx: usize, row: &[&[f32]], rx: &[f32]| {
                if let Some((iy, ix)) = tile.input(g, v, yy, xx) {
                    combine(rx, row, &mut px);
                    let at = (tile.img - base) * g.input_len() + (iy * g.in_w + ix) * cn;
                    dxs[at..][..cn].iter_mut().zip(&px).for_each(|(d, s)| *d += s);
                }
            };
            transform2(b_adj, b_adj, &runs[..t * t], t, &mut tmp, cn, each, None::<NoPair>);
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
    let a_adj = Lin::of(v.at, t, t, true);
    let b_adj = Lin::of(v.bt, t, t, true);
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
            // 2. Point by point, over the jobs' runs in tile order. Where the
            //    micro-kernel does not serve (no AVX-512, or `kn` not a
            //    multiple of 16), the `gemm` crate's sums of a run would
            //    depend on where the thread count cut the runs: the point's
            //    rows are gathered across the runs into one product instead.
            let chained = super::micro::available(1, kn) && cn > 0;
            let runs = || (0..n).step_by(job_tiles).map(|first| (first, job_tiles.min(n - first)));
            fn point(src: &[f32], c: usize, xis: usize, xi: usize, (first, count): (usize, usize)) -> &[f32] {
                &src[(first * xis + xi * count) * c..][..count * c]
            }
            du.par_chunks_mut(cn * kn).zip(dv.par_chunks_mut(n * cn)).enumerate().for_each_init(
                || (Vec::new(), Vec::new()),
                |(v_all, dm_all), (xi, (du_xi, dv_xi))| {
                    if chained {
                        for run in runs() {
                            let (v_xi, dm_xi) = (point(vv, cn, xis, xi, run), point(dm, kn, xis, xi, run));
                            let accumulate = i0 > 0 || run.0 > 0;
                            let done = super::micro::gemm_at(v_xi, cn, run.1, cn, dm_xi, kn, kn, du_xi, accumulate);
                            assert!(done, "winograd: the micro-kernel serves these channels");
                        }
                    } else {
                        v_all.clear();
                        dm_all.clear();
                        for run in runs() {
                            v_all.extend_from_slice(point(vv, cn, xis, xi, run));
                            dm_all.extend_from_slice(point(dm, kn, xis, xi, run));
                        }
                        matmul(Mat::new(v_all, n, cn).t(), Mat::new(dm_all, n, kn), du_xi, i0 > 0, Par::Seq);
                    }
                    if want_dx {
                        let ut_xi = &ut[xi * kn * cn..][..kn * cn];
                        for run in runs() {
                            let dv_run = &mut dv_xi[run.0 * cn..][..run.1 * cn];
                            product(point(dm, kn, xis, xi, run), run.1, kn, kn, ut_xi, cn, dv_run, &zeros);
                        }
                    }
                },
            );
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
    let g_adj = Lin::of(v.g, r, r, true);
    // Channel-major ([cin][tap][cout]) so that the channels are disjoint chunks.
    let mut by_channel = vec![0.0f32; cn * r * r * kn];
    by_channel.par_chunks_mut(r * r * kn).enumerate().for_each(|(c, dk)| {
        let runs = gather::<MAX_POINTS>(xis, |xi| &du[(xi * cn + c) * kn..][..kn]);
        let mut tmp = vec![0.0f32; scratch_len(&g_adj, t, kn)];
        let each = |ky: usize, kx: usize, row: &[&[f32]], rx: &[f32]| {
            combine(rx, row, &mut dk[(ky * r + kx) * kn..][..kn]);
        };
        transform2(&g_adj, &g_adj, &runs[..xis], t, &mut tmp, kn, each, None::<NoPair>);
    });
    for (c, dk) in by_channel.chunks_exact(r * r * kn).enumerate() {
        for (tap, run) in dk.chunks_exact(kn).enumerate() {
            dkernel[(tap * cn + c) * kn..][..kn].copy_from_slice(run);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 7919 + seed * 104_729) % 2000) as f32 / 1000.0 - 1.0).collect()
    }

    fn identity(n: usize) -> Lin {
        Lin::new((0..n).map(|i| (0..n).map(|j| if i == j { 1.0 } else { 0.0 }).collect()).collect())
    }

    /// Every side each variant uses (`B^T`, `A^T`, `G` and their
    /// transposes), factored, applied by [`transform2`] to runs of 37
    /// channels (blocks of 16 and single channels), with and without a pair
    /// writer, against the f64 product of the unfactored matrix.
    #[test]
    fn factored_sides_compute_their_matrices() {
        let len = 37;
        for v in [&F2_3, &F4_3, &F2_5, &F4_5] {
            let (t, m, r) = (v.t, v.m, v.r);
            let sides: [(&str, &[f32], usize, usize, bool); 6] = [
                ("B^T", v.bt, t, t, false),
                ("B", v.bt, t, t, true),
                ("A^T", v.at, t, m, false),
                ("A", v.at, t, t, true),
                ("G", v.g, r, t, false),
                ("G^T", v.g, r, r, true),
            ];
            for (name, mat, cols, p, transpose) in sides {
                let rows: Vec<Vec<f32>> = (0..p).map(|i| coefs(mat, cols, i, transpose)).collect();
                let q = rows[0].len();
                let lin = Lin::new(rows.clone());
                // `out = L x I`: the left side alone, over q x 2 runs, and `I x L^T`.
                for left_side in [true, false] {
                    let (a, b) = if left_side { (q, 2) } else { (2, q) };
                    let inp: Vec<Vec<f32>> = (0..a * b).map(|k| values(len, k)).collect();
                    let runs: Vec<&[f32]> = inp.iter().map(|x| &x[..]).collect();
                    let id = identity(2);
                    let (l, rt) = if left_side { (&lin, &id) } else { (&id, &lin) };
                    let outs = if left_side { (p, 2) } else { (2, p) };
                    for with_pairs in [false, true] {
                        let mut got = vec![vec![0.0f32; len]; outs.0 * outs.1];
                        let mut tmp = vec![0.0f32; scratch_len(l, b, len)];
                        let cell = RefCell::new(&mut got);
                        let one = |i: usize, j: usize, row: &[&[f32]], c: &[f32]| {
                            combine(c, row, &mut cell.borrow_mut()[i * outs.1 + j]);
                        };
                        let pair = |i: usize, j: usize, j2: usize, row: &[&[f32]], e: &[f32], o: &[f32]| {
                            let mut got = cell.borrow_mut();
                            let [o1, o2] =
                                got.get_disjoint_mut([i * outs.1 + j, i * outs.1 + j2]).expect("two outputs");
                            combine_pair(e, o, row, o1, o2);
                        };
                        if with_pairs {
                            transform2(l, rt, &runs, b, &mut tmp, len, one, Some(pair));
                        } else {
                            transform2(l, rt, &runs, b, &mut tmp, len, one, None::<NoPair>);
                        }
                        for (o, out) in got.iter().enumerate() {
                            let (i, j) = (o / outs.1, o % outs.1);
                            for (ch, &g) in out.iter().enumerate() {
                                let want: f64 = if left_side {
                                    (0..q).map(|x| rows[i][x] as f64 * inp[x * b + j][ch] as f64).sum()
                                } else {
                                    (0..q).map(|y| rows[j][y] as f64 * inp[i * b + y][ch] as f64).sum()
                                };
                                let scale: f64 =
                                    (0..q).map(|k| (rows[if left_side { i } else { j }][k] as f64).abs()).sum();
                                assert!(
                                    (g as f64 - want).abs() <= 1e-6 * scale.max(1.0),
                                    "{} {name} (left {left_side}, pairs {with_pairs}): output {o} channel {ch}: {g} against {want}",
                                    v.name
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// The structure the savings come from: F(4x4, 5x5)'s points +-1, +-2
    /// and +-1/2 pair `B^T`'s rows and `A^T`'s columns (and the transposes'
    /// columns and rows); F(2x2, 3x3)'s two-row `A^T` is left unpaired (a
    /// pair's sums would be read by two rows only).
    #[test]
    fn the_points_and_their_negatives_are_paired() {
        let pairs = |lin: &Lin| lin.ops.iter().filter(|op| matches!(op, RowOp::Pair { .. })).count();
        let v = &F4_5;
        let bt = Lin::of(v.bt, 8, 8, false);
        assert_eq!((pairs(&bt), bt.col_pairs.len()), (3, 0));
        let at = Lin::of(v.at, 8, 4, false);
        assert_eq!((pairs(&at), at.col_pairs.clone()), (0, vec![(1, 2), (3, 4), (5, 6)]));
        let a = Lin::of(v.at, 8, 8, true);
        assert_eq!((pairs(&a), a.col_pairs.len()), (3, 0));
        let b = Lin::of(v.bt, 8, 8, true);
        assert_eq!(b.col_pairs, vec![(1, 2), (3, 4), (5, 6)]);
        let at2 = Lin::of(F2_3.at, 4, 2, false);
        assert!(at2.col_pairs.is_empty());
        assert_eq!(pairs(&Lin::of(F2_3.bt, 4, 4, false)), 1);
    }
}
