//! MaxPool2D with valid padding on NHWC data. The forward pass records which
//! input won each window so the backward pass is a scatter, not a search.

use super::wide::vectorized;
use rayon::prelude::*;

/// Input and output geometry of one pooling layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolGeom {
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub pool: usize,
    pub stride: usize,
    pub oh: usize,
    pub ow: usize,
}

impl PoolGeom {
    /// Valid pooling: `out = (in - pool) / stride + 1`.
    pub fn new(h: usize, w: usize, c: usize, pool: usize, stride: usize) -> Self {
        PoolGeom { h, w, c, pool, stride, oh: (h - pool) / stride + 1, ow: (w - pool) / stride + 1 }
    }
    fn in_len(&self) -> usize {
        self.h * self.w * self.c
    }
    fn out_len(&self) -> usize {
        self.oh * self.ow * self.c
    }
}

/// Max over each window; `argmax` (when given) receives the winner's index within its image.
/// Ties go to the first element in row-major window order, as TensorFlow does.
///
/// Parallel over output rows (not images), so a single image uses every core.
/// The channel loop is innermost: each window pixel is a contiguous run of `c`
/// values, compared lane by lane against the running maxima kept in `y` itself.
pub fn forward(g: &PoolGeom, x: &[f32], y: &mut [f32], argmax: Option<&mut [u32]>) {
    assert_eq!(x.len() / g.in_len(), y.len() / g.out_len());
    let row_len = g.ow * g.c;
    let job = |r: usize, yr: &mut [f32], ar: Option<&mut [u32]>| {
        let (n, oy) = (r / g.oh, r % g.oh);
        max_row(g, &x[n * g.in_len()..][..g.in_len()], oy, yr, ar)
    };
    let out = y.len();
    let rows = y.par_chunks_mut(row_len).enumerate();
    match argmax {
        Some(a) => {
            assert_eq!(a.len(), out);
            rows.zip(a.par_chunks_mut(row_len)).for_each(|((r, yr), ar)| job(r, yr, Some(ar)))
        }
        None => rows.for_each(|(r, yr)| job(r, yr, None)),
    }
}

vectorized! {
    /// Output row `oy` of one image `xi` into `yr` (and the winners into `ar`).
    fn max_row(g: &PoolGeom, xi: &[f32], oy: usize, yr: &mut [f32], ar: Option<&mut [u32]>) {
        let mut ar = ar;
        for ox in 0..g.ow {
            let yo = &mut yr[ox * g.c..][..g.c];
            let first = ((oy * g.stride) * g.w + ox * g.stride) * g.c;
            yo.fill(f32::NEG_INFINITY);
            let mut ao = ar.as_deref_mut().map(|a| &mut a[ox * g.c..][..g.c]);
            if let Some(a) = ao.as_deref_mut() {
                a.iter_mut().enumerate().for_each(|(ch, a)| *a = (first + ch) as u32);
            }
            for ky in 0..g.pool {
                for kx in 0..g.pool {
                    let i0 = first + (ky * g.w + kx) * g.c;
                    let xs = &xi[i0..][..g.c];
                    // `>` keeps the first maximum; NaN never wins.
                    match ao.as_deref_mut() {
                        Some(a) => {
                            for (ch, ((b, a), &v)) in yo.iter_mut().zip(a.iter_mut()).zip(xs).enumerate() {
                                if v > *b {
                                    *b = v;
                                    *a = (i0 + ch) as u32;
                                }
                            }
                        }
                        None => yo.iter_mut().zip(xs).for_each(|(b, &v)| *b = if v > *b { v } else { *b }),
                    }
                }
            }
            // Nothing beat -inf (all NaN or -inf): the first element, which the
            // argmax still points at, is the output, NaN kept if it is one.
            for (b, &v) in yo.iter_mut().zip(&xi[first..][..g.c]) {
                if *b == f32::NEG_INFINITY {
                    *b = v;
                }
            }
        }
    }
}

/// Route each output gradient to the input that won its window; `dx` is overwritten.
pub fn backward(g: &PoolGeom, argmax: &[u32], dy: &[f32], dx: &mut [f32]) {
    dx.par_chunks_mut(g.in_len()).zip(dy.par_chunks(g.out_len())).zip(argmax.par_chunks(g.out_len())).for_each(
        |((dxi, dyi), ai)| {
            dxi.fill(0.0);
            for (&a, &d) in ai.iter().zip(dyi) {
                dxi[a as usize] += d;
            }
        },
    );
}

/// The window of an AveragePooling2D or GlobalAveragePooling2D layer on its
/// input (`None` for any other layer or a flat input).
pub fn avg_geometry(layer: &shared::spec::Layer, input: shared::spec::Shape) -> Option<shared::geometry::ConvGeom> {
    use shared::spec::{Hw, Layer, Padding, Shape};
    let Shape::Image { h, w, c } = input else { return None };
    let dims = (h as usize, w as usize, c as usize);
    match *layer {
        Layer::AvgPool2D(p) => {
            shared::geometry::ConvGeom::general(dims, c as usize, p.pool, p.stride, Hw::ONE, p.padding)
        }
        Layer::GlobalAvgPool => {
            shared::geometry::ConvGeom::general(dims, c as usize, Hw::new(h, w), Hw::ONE, Hw::ONE, Padding::Valid)
        }
        _ => None,
    }
}

/// Average pooling (and the global average pool) over `batch` NHWC images:
/// `g`'s kernel is the window, `in_c == out_c`; each output is the mean of
/// its window's in-image pixels (padding never counts, as Keras and TFLite).
pub fn avg_forward(g: &shared::geometry::ConvGeom, x: &[f32], y: &mut [f32]) {
    let c = g.in_c;
    y.par_chunks_mut(g.output_len()).zip(x.par_chunks(g.input_len())).for_each(|(yi, xi)| {
        for oy in 0..g.out_h {
            let (ky0, ky1, iy0) = g.taps_h(oy);
            for ox in 0..g.out_w {
                let (kx0, kx1, ix0) = g.taps_w(ox);
                let inv = 1.0 / ((ky1 - ky0) * (kx1 - kx0)).max(1) as f32;
                let out = &mut yi[(oy * g.out_w + ox) * c..][..c];
                out.fill(0.0);
                for iy in iy0..iy0 + (ky1 - ky0) {
                    for ix in ix0..ix0 + (kx1 - kx0) {
                        out.iter_mut().zip(&xi[(iy * g.in_w + ix) * c..][..c]).for_each(|(o, v)| *o += v);
                    }
                }
                out.iter_mut().for_each(|o| *o *= inv);
            }
        }
    });
}

/// The adjoint of [`avg_forward`]: each output's gradient spread evenly over
/// its window's in-image pixels.
pub fn avg_backward(g: &shared::geometry::ConvGeom, dy: &[f32], dx: &mut [f32]) {
    let c = g.in_c;
    dx.par_chunks_mut(g.input_len()).zip(dy.par_chunks(g.output_len())).for_each(|(dxi, dyi)| {
        dxi.fill(0.0);
        for oy in 0..g.out_h {
            let (ky0, ky1, iy0) = g.taps_h(oy);
            for ox in 0..g.out_w {
                let (kx0, kx1, ix0) = g.taps_w(ox);
                let inv = 1.0 / ((ky1 - ky0) * (kx1 - kx0)).max(1) as f32;
                let d = &dyi[(oy * g.out_w + ox) * c..][..c];
                for iy in iy0..iy0 + (ky1 - ky0) {
                    for ix in ix0..ix0 + (kx1 - kx0) {
                        dxi[(iy * g.in_w + ix) * c..][..c].iter_mut().zip(d).for_each(|(o, v)| *o += v * inv);
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_window_maxima_and_routes_gradients() {
        // 4x4x1 image, pool 3 stride 1 -> 2x2 (AlexNet-style overlapping windows).
        let x: Vec<f32> = vec![1., 5., 2., 0., 3., 4., 9., 1., 0., 2., 8., 7., 6., 1., 1., 3.];
        let g = PoolGeom::new(4, 4, 1, 3, 1);
        let (mut y, mut a) = (vec![0.0; 4], vec![0u32; 4]);
        forward(&g, &x, &mut y, Some(&mut a));
        assert_eq!(y, vec![9., 9., 9., 9.]);
        let mut dx = vec![1.0; 16];
        backward(&g, &a, &[1., 2., 3., 4.], &mut dx);
        let mut want = vec![0.0; 16];
        want[6] = 10.0;
        assert_eq!(dx, want);
    }

    /// The first maximum wins ties, NaN never wins, and a window with nothing
    /// above -inf returns (and points at) its first element.
    #[test]
    fn ties_nan_and_negative_infinity() {
        let (nan, ninf) = (f32::NAN, f32::NEG_INFINITY);
        // 2x2x2 image, pool 2 -> 1x1x2; channel 0: a tie, channel 1: NaN first, then a value.
        let g = PoolGeom::new(2, 2, 2, 2, 1);
        let x = vec![3., nan, 1., -2., 3., 5., 0., nan];
        let (mut y, mut a) = (vec![0.0; 2], vec![0u32; 2]);
        forward(&g, &x, &mut y, Some(&mut a));
        assert_eq!((y[0], y[1], a[0], a[1]), (3., 5., 0, 5));
        let x = vec![nan, ninf, ninf, nan, nan, ninf, ninf, nan];
        forward(&g, &x, &mut y, Some(&mut a));
        assert!(y[0].is_nan() && y[1] == ninf && a[0] == 0 && a[1] == 1, "{y:?} {a:?}");
        let mut y2 = vec![0.0; 2];
        forward(&g, &x, &mut y2, None);
        assert!(y2[0].is_nan() && y2[1] == ninf);
    }

    /// Finite differences on distinct values (no ties), two channels, stride 2.
    #[test]
    fn gradients_match_finite_differences() {
        let (h, w, c) = (7, 6, 2);
        let g = PoolGeom::new(h, w, c, 3, 2);
        let n = 2;
        let x: Vec<f32> = (0..n * h * w * c).map(|i| ((i * 37) % 101) as f32 * 0.1).collect();
        let r: Vec<f32> = (0..n * g.out_len()).map(|i| (i % 5) as f32 - 2.0).collect();
        let loss = |x: &[f32]| -> f64 {
            let mut y = vec![0.0; n * g.out_len()];
            forward(&g, x, &mut y, None);
            y.iter().zip(&r).map(|(a, b)| (*a * *b) as f64).sum()
        };
        let (mut y, mut a) = (vec![0.0; n * g.out_len()], vec![0; n * g.out_len()]);
        forward(&g, &x, &mut y, Some(&mut a));
        let mut dx = vec![0.0; x.len()];
        backward(&g, &a, &r, &mut dx);
        for i in 0..x.len() {
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp[i] += 1e-2;
            xm[i] -= 1e-2;
            let num = (loss(&xp) - loss(&xm)) / 2e-2;
            assert!((num - dx[i] as f64).abs() < 1e-3, "dx[{i}]: {num} vs {}", dx[i]);
        }
    }
}
