//! Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray, 2016) for
//! stride-1 3x3 convolutions: each 2x2 block of output pixels from its 4x4
//! input tile with 16 multiplies per input and output channel instead of 36
//! (2.25x fewer), as 16 GEMMs `V_xi [tiles, cin] x U_xi [cin, cout]` on the
//! same GEMM as the direct path.
//!
//! `U = G g G^T` (the filters), `V = B^T d B` (the input tiles, zeros outside
//! the image), `Y = A^T M A` (the output tiles); the backward pass runs the
//! adjoints of the same linear maps, so its gradients are those of the
//! function the forward computed (the direct convolution's up to rounding).
//! The transforms are exact in binary (their entries are 0, +-1 and +-1/2),
//! so the only extra rounding is that of the sums they add.

use super::conv::Epilogue;
use super::gemm::{matmul, Mat, Par};
use super::scratch::{with_padded, with_scratch};
use rayon::prelude::*;
use shared::geometry::ConvGeom;

/// Transform points of a tile (4 x 4).
const XI: usize = 16;
/// Tiles one task's 16 GEMMs take as rows (about the direct path's tile of
/// 512 output pixels in 128 tiles of four).
const TASK_TILES: usize = 128;
/// Groups whose filter-gradient partials are summed at the end, in order
/// (thread-count independent, as the direct path's).
const MAX_GROUPS: usize = 8;

/// Whether F(2x2, 3x3) computes this convolution: one group, a 3x3 kernel,
/// stride 1, undilated, each padding at most 2.
pub fn serves(g: &ConvGeom) -> bool {
    g.groups == 1
        && (g.kernel_h, g.kernel_w) == (3, 3)
        && (g.stride_h, g.stride_w) == (1, 1)
        && (g.dilation_h, g.dilation_w) == (1, 1)
        && g.pad_top <= 2
        && g.pad_left <= 2
}

/// Tiles along the height and the width of one image.
fn tiles(g: &ConvGeom) -> (usize, usize) {
    (g.out_h.div_ceil(2), g.out_w.div_ceil(2))
}

/// `U_xi[c][k]` for the 16 points `xi` (`[16][cin][cout]`): `G g G^T` of
/// each filter, from Keras's HWIO kernel, over runs of output channels,
/// into `u` (`16 cin cout` values, all written).
fn filter_transform_into(g: &ConvGeom, kernel: &[f32], u: &mut [f32]) {
    let (cn, kn) = (g.in_c, g.out_c);
    assert_eq!(kernel.len(), 9 * cn * kn, "winograd: kernel length");
    assert_eq!(u.len(), XI * cn * kn, "winograd: transformed filters' length");
    // t[i][kx] = (G w[.][kx])_i, then U[i][j] = (G t[i][.])_j.
    let mut t = vec![0.0f32; 12 * kn];
    for c in 0..cn {
        let w = |ky: usize, kx: usize| &kernel[((ky * 3 + kx) * cn + c) * kn..][..kn];
        for kx in 0..3 {
            let col = [w(0, kx), w(1, kx), w(2, kx)];
            for i in 0..4 {
                gm(i, &mut t[(i * 3 + kx) * kn..][..kn], col);
            }
        }
        for i in 0..4 {
            let row: [&[f32]; 3] = runs(&t[i * 3 * kn..], kn);
            for j in 0..4 {
                gm(j, &mut u[((i * 4 + j) * cn + c) * kn..][..kn], row);
            }
        }
    }
}

/// `(G w)_i` for the three runs `w`: `w0, (w0 + w1 + w2) / 2, (w0 - w1 + w2) / 2, w2`.
fn gm(i: usize, o: &mut [f32], w: [&[f32]; 3]) {
    match i {
        0 => o.copy_from_slice(w[0]),
        1 => o.iter_mut().zip(w[0].iter().zip(w[1]).zip(w[2])).for_each(|(o, ((a, b), c))| *o = 0.5 * (a + b + c)),
        2 => o.iter_mut().zip(w[0].iter().zip(w[1]).zip(w[2])).for_each(|(o, ((a, b), c))| *o = 0.5 * (a - b + c)),
        _ => o.copy_from_slice(w[2]),
    }
}

/// `(G^T u)_i`, the adjoint of [`gm`] (four runs to three): `u0 + (u1 + u2) / 2,
/// (u1 - u2) / 2, (u1 + u2) / 2 + u3`.
fn gtm(i: usize, o: &mut [f32], u: [&[f32]; 4]) {
    let z = u[1].iter().zip(u[2]);
    match i {
        0 => o.iter_mut().zip(u[0].iter().zip(z)).for_each(|(o, (a, (b, c)))| *o = a + 0.5 * (b + c)),
        1 => o.iter_mut().zip(z).for_each(|(o, (b, c))| *o = 0.5 * (b - c)),
        _ => o.iter_mut().zip(z.zip(u[3])).for_each(|(o, ((b, c), d))| *o = 0.5 * (b + c) + d),
    }
}

// Element-wise steps of the transforms over a run of channels (each
// vectorizes): every transform is a few of these per tile, along the rows
// and then along the columns.

fn add(o: &mut [f32], a: &[f32], b: &[f32]) {
    o.iter_mut().zip(a.iter().zip(b)).for_each(|(o, (a, b))| *o = a + b);
}

fn sub(o: &mut [f32], a: &[f32], b: &[f32]) {
    o.iter_mut().zip(a.iter().zip(b)).for_each(|(o, (a, b))| *o = a - b);
}

/// `a + b + c`.
fn add3(o: &mut [f32], a: &[f32], b: &[f32], c: &[f32]) {
    o.iter_mut().zip(a.iter().zip(b).zip(c)).for_each(|(o, ((a, b), c))| *o = a + b + c);
}

/// `a - b - c`.
fn sub3(o: &mut [f32], a: &[f32], b: &[f32], c: &[f32]) {
    o.iter_mut().zip(a.iter().zip(b).zip(c)).for_each(|(o, ((a, b), c))| *o = a - b - c);
}

/// `a - b + c`.
fn sub_add(o: &mut [f32], a: &[f32], b: &[f32], c: &[f32]) {
    o.iter_mut().zip(a.iter().zip(b).zip(c)).for_each(|(o, ((a, b), c))| *o = a - b + c);
}

/// `a + b - c`.
fn add_sub(o: &mut [f32], a: &[f32], b: &[f32], c: &[f32]) {
    o.iter_mut().zip(a.iter().zip(b).zip(c)).for_each(|(o, ((a, b), c))| *o = a + b - c);
}

fn neg(o: &mut [f32], a: &[f32]) {
    o.iter_mut().zip(a).for_each(|(o, a)| *o = -a);
}

/// `(B^T d)_i` for the four runs `d`: `d0 - d2, d1 + d2, d2 - d1, d1 - d3`.
fn bt(i: usize, o: &mut [f32], d: [&[f32]; 4]) {
    match i {
        0 => sub(o, d[0], d[2]),
        1 => add(o, d[1], d[2]),
        2 => sub(o, d[2], d[1]),
        _ => sub(o, d[1], d[3]),
    }
}

/// `(B e)_i`, the adjoint of [`bt`]: `e0, e1 - e2 + e3, e1 + e2 - e0, -e3`.
fn b(i: usize, o: &mut [f32], e: [&[f32]; 4]) {
    match i {
        0 => o.copy_from_slice(e[0]),
        1 => sub_add(o, e[1], e[2], e[3]),
        2 => add_sub(o, e[1], e[2], e[0]),
        _ => neg(o, e[3]),
    }
}

/// `(A^T m)_i`: `m0 + m1 + m2, m1 - m2 - m3`.
fn at(i: usize, o: &mut [f32], m: [&[f32]; 4]) {
    match i {
        0 => add3(o, m[0], m[1], m[2]),
        _ => sub3(o, m[1], m[2], m[3]),
    }
}

/// `(A y)_i`, the adjoint of [`at`]: `y0, y0 + y1, y0 - y1, -y1`.
fn a(i: usize, o: &mut [f32], y: [&[f32]; 2]) {
    match i {
        0 => o.copy_from_slice(y[0]),
        1 => add(o, y[0], y[1]),
        2 => sub(o, y[0], y[1]),
        _ => neg(o, y[1]),
    }
}

/// Runs `0..N` of length `len` in `buf` as slices.
fn runs<const N: usize>(buf: &[f32], len: usize) -> [&[f32]; N] {
    core::array::from_fn(|i| &buf[i * len..][..len])
}

/// A tile's place: image, tile row and column.
#[derive(Clone, Copy)]
struct Tile {
    img: usize,
    ty: usize,
    tx: usize,
}

impl Tile {
    fn of(g: &ConvGeom, index: usize) -> Self {
        let (th, tw) = tiles(g);
        Tile { img: index / (th * tw), ty: index / tw % th, tx: index % tw }
    }

    /// The input pixel (row, column) under tap `(y, x)` of the tile, if inside.
    fn input(&self, g: &ConvGeom, y: usize, x: usize) -> Option<(usize, usize)> {
        let iy = (2 * self.ty + y).checked_sub(g.pad_top)?;
        let ix = (2 * self.tx + x).checked_sub(g.pad_left)?;
        (iy < g.in_h && ix < g.in_w).then_some((iy, ix))
    }
}

/// `V_xi` rows `0..n` of tiles `first..first + n` into `v` (`[16][n][cin]`).
fn input_transform(g: &ConvGeom, x: &[f32], first: usize, n: usize, v: &mut [f32]) {
    let cn = g.in_c;
    // d: the tile's 16 input pixels (zeros outside); t: B^T d (rows).
    let mut d = vec![0.0f32; 2 * XI * cn];
    let (d, t) = d.split_at_mut(XI * cn);
    for r in 0..n {
        let tile = Tile::of(g, first + r);
        let img = &x[tile.img * g.input_len()..][..g.input_len()];
        for (pos, dp) in d.chunks_exact_mut(cn).enumerate() {
            match tile.input(g, pos / 4, pos % 4) {
                Some((iy, ix)) => dp.copy_from_slice(&img[(iy * g.in_w + ix) * cn..][..cn]),
                None => dp.fill(0.0),
            }
        }
        // t[i][x] = (B^T d[.][x])_i: column x's four pixels.
        for xc in 0..4 {
            let col: [&[f32]; 4] = core::array::from_fn(|y| &d[(y * 4 + xc) * cn..][..cn]);
            for i in 0..4 {
                bt(i, &mut t[(i * 4 + xc) * cn..][..cn], col);
            }
        }
        // V[i][j] = (B^T t[i][.])_j, straight into the GEMMs' rows.
        for i in 0..4 {
            let row: [&[f32]; 4] = runs(&t[i * 4 * cn..], cn);
            for j in 0..4 {
                bt(j, &mut v[((i * 4 + j) * n + r) * cn..][..cn], row);
            }
        }
    }
}

/// `(u, v) -> m`: the 16 GEMMs `m_xi [n, cout] = v_xi [n, cin] u_xi [cin, cout]`,
/// through the AVX-512 micro-kernel where it applies (it reads `u_xi` in
/// place; the `gemm` crate packs all of it again on every call, which at
/// batch 1 cost more than the multiplies).
fn multiply(g: &ConvGeom, u: &[f32], v: &[f32], n: usize, m: &mut [f32]) {
    let (cn, kn) = (g.in_c, g.out_c);
    let zeros = vec![0.0f32; kn];
    let plain = Epilogue { bias: &zeros, relu: false, affine: None };
    for xi in 0..XI {
        let (vx, ux, mx) =
            (&v[xi * n * cn..][..n * cn], &u[xi * cn * kn..][..cn * kn], &mut m[xi * n * kn..][..n * kn]);
        if super::micro::gemm(vx, n, cn, ux, kn, mx, &plain) {
            continue;
        }
        matmul(
            Mat::new(&v[xi * n * cn..][..n * cn], n, cn),
            Mat::new(&u[xi * cn * kn..][..cn * kn], cn, kn),
            &mut m[xi * n * kn..][..n * kn],
            false,
            Par::Seq,
        );
    }
}

/// `y = epilogue(conv(x, kernel))` for `batch` NHWC images through F(2x2, 3x3).
///
/// # Panics
/// If [`serves`] does not hold or the lengths do not match.
pub fn forward(g: &ConvGeom, ep: &Epilogue, kernel: &[f32], x: &[f32], batch: usize, y: &mut [f32]) {
    assert!(serves(g), "winograd: not a stride-1 3x3 conv");
    assert_eq!(x.len(), batch * g.input_len());
    assert_eq!(y.len(), batch * g.output_len());
    // The transformed filters in the calling thread's second buffer (a fresh
    // 10 MB per call was page-faulted in every time).
    with_padded(XI * g.in_c * g.out_c, |u| {
        filter_transform_into(g, kernel, u);
        forward_tiles(g, ep, u, x, batch, y)
    })
}

/// [`forward`] with the transformed filters `u`.
fn forward_tiles(g: &ConvGeom, ep: &Epilogue, u: &[f32], x: &[f32], batch: usize, y: &mut [f32]) {
    let (th, tw) = tiles(g);
    // Tasks of whole tile rows: each writes output rows of its own.
    let rows_total = batch * th;
    // At least one task a thread (batch 1: a 13x13 layer's 7 tile rows over
    // the cores).
    let rows_per_task = TASK_TILES.div_ceil(tw).min(rows_total.div_ceil(rayon::current_num_threads())).max(1);
    let row_start = |r: usize| {
        let (img, ty) = (r / th, r % th);
        img * g.output_len() + (2 * ty).min(g.out_h) * g.out_w * g.out_c
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
    parts.into_par_iter().for_each(|(r0, yc)| {
        let n = rows_per_task.min(rows_total - r0) * tw;
        let first = r0 * tw;
        with_scratch(XI * n * (cn + kn), |buf| {
            let (v, m) = buf.split_at_mut(XI * n * cn);
            input_transform(g, x, first, n, v);
            multiply(g, u, v, n, m);
            let base = row_start(r0);
            // s[i][bx] = (A^T m[i][.])_bx; then a pixel's (A^T s[.][bx])_ay.
            let mut s8 = vec![0.0f32; 8 * kn];
            for r in 0..n {
                let t = Tile::of(g, first + r);
                for i in 0..4 {
                    let row: [&[f32]; 4] = core::array::from_fn(|j| &m[((i * 4 + j) * n + r) * kn..][..kn]);
                    for bx in 0..2 {
                        at(bx, &mut s8[(i * 2 + bx) * kn..][..kn], row);
                    }
                }
                for (ay, bx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                    let (oy, ox) = (2 * t.ty + ay, 2 * t.tx + bx);
                    if oy < g.out_h && ox < g.out_w {
                        let at_px = t.img * g.output_len() + (oy * g.out_w + ox) * kn - base;
                        let col: [&[f32]; 4] = core::array::from_fn(|i| &s8[(i * 2 + bx) * kn..][..kn]);
                        let px = &mut yc[at_px..][..kn];
                        at(ay, px, col);
                        super::conv::epilogue(px, ep);
                    }
                }
            }
        });
    });
}

/// Gradients of [`forward`] (its epilogue a bias and an optional ReLU, whose
/// mask the caller has applied to `dy`): writes `dL/dkernel` into
/// `dkernel`, `dbias` and, when given, `dx`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
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
    assert!(serves(g), "winograd: not a stride-1 3x3 conv");
    assert_eq!(x.len(), batch * g.input_len());
    assert_eq!(dy.len(), batch * g.output_len());
    with_padded(XI * g.in_c * g.out_c, |u| {
        filter_transform_into(g, kernel, u);
        backward_tiles(g, u, x, dy, batch, dkernel, dbias, dx, partials)
    })
}

/// [`backward`] with the transformed filters `u`; each group's `dU` partial
/// in one of `partials` (kept in the layer between steps, as the direct
/// path's: fresh ones were page-faulted in every step).
#[allow(clippy::too_many_arguments)]
fn backward_tiles(
    g: &ConvGeom,
    u: &[f32],
    x: &[f32],
    dy: &[f32],
    batch: usize,
    dkernel: &mut [f32],
    dbias: &mut [f32],
    dx: Option<&mut [f32]>,
    partials: &mut Vec<Vec<f32>>,
) {
    let (cn, kn) = (g.in_c, g.out_c);
    let (th, tw) = tiles(g);
    let per_image = th * tw;
    let group_images = batch.div_ceil(MAX_GROUPS).max(1);
    let imgs_per_task = TASK_TILES.div_ceil(per_image).clamp(1, group_images);
    let groups = batch.div_ceil(group_images);
    partials.resize_with(groups, Vec::new);
    for p in partials.iter_mut() {
        p.clear();
        p.resize(XI * cn * kn, 0.0);
    }
    let group = |xg: &[f32], dyg: &[f32], mut dxg: Option<&mut [f32]>, du: &mut Vec<f32>| -> Vec<f64> {
        let mut db = vec![0.0f64; kn];
        for px in dyg.chunks_exact(kn) {
            db.iter_mut().zip(px).for_each(|(b, &d)| *b += d as f64);
        }
        let images = xg.len() / g.input_len();
        for i0 in (0..images).step_by(imgs_per_task) {
            let imgs = imgs_per_task.min(images - i0);
            let n = imgs * per_image;
            let xs = &xg[i0 * g.input_len()..][..imgs * g.input_len()];
            let dys = &dyg[i0 * g.output_len()..][..imgs * g.output_len()];
            with_scratch(XI * n * (cn + kn), |buf| {
                let (v, dm) = buf.split_at_mut(XI * n * cn);
                input_transform(g, xs, 0, n, v);
                // dM = A dY A^T of each tile (zeros past the image): q[i][bx]
                // = (A dY[.][bx])_i, then dM[i][j] = (A q[i][.])_j.
                let mut tmp = vec![0.0f32; 12 * kn];
                let (dyt, q) = tmp.split_at_mut(4 * kn);
                for r in 0..n {
                    let t = Tile::of(g, r);
                    for (p, dp) in dyt.chunks_exact_mut(kn).enumerate() {
                        let (oy, ox) = (2 * t.ty + p / 2, 2 * t.tx + p % 2);
                        if oy < g.out_h && ox < g.out_w {
                            dp.copy_from_slice(&dys[t.img * g.output_len() + (oy * g.out_w + ox) * kn..][..kn]);
                        } else {
                            dp.fill(0.0);
                        }
                    }
                    for bx in 0..2 {
                        let col = [&dyt[bx * kn..][..kn], &dyt[(2 + bx) * kn..][..kn]];
                        for i in 0..4 {
                            a(i, &mut q[(i * 2 + bx) * kn..][..kn], col);
                        }
                    }
                    for i in 0..4 {
                        let row: [&[f32]; 2] = runs(&q[i * 2 * kn..], kn);
                        for j in 0..4 {
                            a(j, &mut dm[((i * 4 + j) * n + r) * kn..][..kn], row);
                        }
                    }
                }
                // dU_xi += V_xi^T dM_xi.
                for xi in 0..XI {
                    matmul(
                        Mat::new(&v[xi * n * cn..][..n * cn], n, cn).t(),
                        Mat::new(&dm[xi * n * kn..][..n * kn], n, kn),
                        &mut du[xi * cn * kn..][..cn * kn],
                        true,
                        Par::Seq,
                    );
                }
                if let Some(dxg) = dxg.as_deref_mut() {
                    // dV_xi = dM_xi U_xi^T (into v's room), then B dV B^T
                    // scattered into the input.
                    for xi in 0..XI {
                        matmul(
                            Mat::new(&dm[xi * n * kn..][..n * kn], n, kn),
                            Mat::new(&u[xi * cn * kn..][..cn * kn], cn, kn).t(),
                            &mut v[xi * n * cn..][..n * cn],
                            false,
                            Par::Seq,
                        );
                    }
                    let dxs = &mut dxg[i0 * g.input_len()..][..imgs * g.input_len()];
                    // w[i][xc] = (B dV[i][.])_xc, then a pixel's (B w[.][xc])_y.
                    let mut w = vec![0.0f32; XI * cn + cn];
                    let (w, px) = w.split_at_mut(XI * cn);
                    for r in 0..n {
                        let t = Tile::of(g, r);
                        for i in 0..4 {
                            let row: [&[f32]; 4] = core::array::from_fn(|j| &v[((i * 4 + j) * n + r) * cn..][..cn]);
                            for xc in 0..4 {
                                b(xc, &mut w[(i * 4 + xc) * cn..][..cn], row);
                            }
                        }
                        for (y, xc) in (0..4).flat_map(|y| (0..4).map(move |xc| (y, xc))) {
                            if let Some((iy, ix)) = t.input(g, y, xc) {
                                let col: [&[f32]; 4] = core::array::from_fn(|i| &w[(i * 4 + xc) * cn..][..cn]);
                                b(y, px, col);
                                let dst = &mut dxs[t.img * g.input_len() + (iy * g.in_w + ix) * cn..][..cn];
                                dst.iter_mut().zip(px.iter()).for_each(|(d, s)| *d += s);
                            }
                        }
                    }
                }
            });
        }
        db
    };
    let xs = x.par_chunks(group_images * g.input_len());
    let dys = dy.par_chunks(group_images * g.output_len());
    let parts: Vec<Vec<f64>> = match dx {
        Some(dx) => {
            assert_eq!(dx.len(), x.len());
            dx.fill(0.0);
            xs.zip(dys)
                .zip(dx.par_chunks_mut(group_images * g.input_len()))
                .zip(partials.par_iter_mut())
                .map(|(((a, b), c), p)| group(a, b, Some(c), p))
                .collect()
        }
        None => xs.zip(dys).zip(partials.par_iter_mut()).map(|((a, b), p)| group(a, b, None, p)).collect(),
    };
    // The groups' sums in group order (into the first partial), then G^T dU G
    // into the kernel gradient.
    let (du, rest) = partials.split_first_mut().expect("at least one group");
    for p in rest.iter() {
        du.iter_mut().zip(p).for_each(|(s, v)| *s += v);
    }
    let mut db = vec![0.0f64; kn];
    for q in &parts {
        db.iter_mut().zip(q).for_each(|(s, v)| *s += v);
    }
    // dkernel = G^T dU G: r[i][kx] = (G^T dU[i][.])_kx, then (G^T r[.][kx])_ky.
    let mut r = vec![0.0f32; 12 * kn];
    for c in 0..cn {
        for i in 0..4 {
            let row: [&[f32]; 4] = core::array::from_fn(|j| &du[((i * 4 + j) * cn + c) * kn..][..kn]);
            for kx in 0..3 {
                gtm(kx, &mut r[(i * 3 + kx) * kn..][..kn], row);
            }
        }
        for kx in 0..3 {
            let col: [&[f32]; 4] = core::array::from_fn(|i| &r[(i * 3 + kx) * kn..][..kn]);
            for ky in 0..3 {
                gtm(ky, &mut dkernel[((ky * 3 + kx) * cn + c) * kn..][..kn], col);
            }
        }
    }
    dbias.iter_mut().zip(&db).for_each(|(b, &v)| *b = v as f32);
}
