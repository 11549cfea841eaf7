//! Training-time augmentation: the tutorial's
//! `RandomFlip("horizontal"), RandomRotation(0.1), RandomZoom(0.1)`.
//!
//! The three Keras layers are folded into one affine map per image, sampled
//! once with bilinear interpolation and `fill_mode="reflect"` (Keras's
//! default, `d c b a | a b c d | d c b a`). One resampling instead of
//! Keras's two keeps the image sharper; the distribution of transforms is
//! the same. Photos from a folder go further: their resize to the input
//! size and this map are one sampling of the decoded photo
//! ([`super::resample`]).
use ndarray::{Array3, ArrayView3};
use rand::Rng;

use crate::nn::wide::vectorized;

/// Augmentation strengths, in Keras's terms.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AugmentConfig {
    /// `RandomFlip("horizontal")`: mirror left-right with probability 1/2.
    pub flip_horizontal: bool,
    /// `RandomRotation(factor)`: angle uniform in `[-factor, factor] * 2*pi`.
    pub rotation: f32,
    /// `RandomZoom(factor)`: scale uniform in `[1 - factor, 1 + factor]`,
    /// the same for height and width; above 1 zooms out.
    pub zoom: f32,
}

impl Default for AugmentConfig {
    /// The tutorial's augmentation.
    fn default() -> Self {
        AugmentConfig { flip_horizontal: true, rotation: 0.1, zoom: 0.1 }
    }
}

/// One image's drawn transform.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AugParams {
    pub flip: bool,
    /// Rotation in radians (counter-clockwise as displayed).
    pub angle: f32,
    /// Sampling scale: > 1 shows more of the image (zoom out).
    pub zoom: f32,
}

impl AugParams {
    /// The identity transform.
    pub const IDENTITY: AugParams = AugParams { flip: false, angle: 0.0, zoom: 1.0 };
}

impl AugmentConfig {
    /// Draw one image's transform. Always consumes the same number of random
    /// values, so the stream stays aligned whatever is enabled.
    pub fn sample<R: Rng>(&self, rng: &mut R) -> AugParams {
        let f: f32 = rng.random();
        let a: f32 = rng.random();
        let z: f32 = rng.random();
        AugParams {
            flip: self.flip_horizontal && f < 0.5,
            angle: (a * 2.0 - 1.0) * self.rotation * std::f32::consts::TAU,
            zoom: 1.0 + (z * 2.0 - 1.0) * self.zoom,
        }
    }
}

/// Apply `p` to an `[h, w, c]` image.
pub fn apply(img: ArrayView3<f32>, p: &AugParams) -> Array3<f32> {
    let mut out = Array3::<f32>::zeros(img.dim());
    apply_into(img, p, out.as_slice_mut().expect("a new array is contiguous"));
    out
}

/// [`apply`] into `out`, the image's `h * w * c` values in NHWC order (a
/// batch's slot: the loader writes each image where the batch keeps it).
///
/// Panics if `out` has another length.
pub fn apply_into(img: ArrayView3<f32>, p: &AugParams, out: &mut [f32]) {
    let (h, w, c) = img.dim();
    assert_eq!(out.len(), h * w * c, "augment: output length");
    let src = img.as_standard_layout();
    let src = src.as_slice().expect("standard layout is contiguous");
    if *p == AugParams::IDENTITY || c == 0 {
        out.copy_from_slice(src);
        return;
    }
    warp(src, out, h, w, c, p);
}

vectorized! {
    /// [`apply`] on contiguous `[h, w, c]` pixels (`c > 0`). It runs on the
    /// loader threads beside a training step, once per pixel: slices instead
    /// of element indexing, the channel loop unrolled for RGB, and the
    /// AVX-512 build's SSE4.1 rounds `floor` in one instruction where the
    /// generic build calls libm twice a pixel. The same operations either
    /// way, so the same bits.
    fn warp(src: &[f32], dst: &mut [f32], h: usize, w: usize, c: usize, p: &AugParams) {
        if c == 3 {
            warp_channels::<3>(src, dst, h, w, 3, p)
        } else {
            warp_channels::<0>(src, dst, h, w, c, p)
        }
    }
}

/// Where output pixel `(x, y)` of an `h x w` image samples its input under an
/// [`AugParams`], before reflection: zoom, then rotate, then flip (the
/// inverse maps of the Keras layers, applied in reverse). One definition
/// for the f32 warp here and the 8-bit one of [`super::resample`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct InverseMap {
    pub cos: f32,
    pub sin: f32,
    pub zoom: f32,
    pub cx: f32,
    pub cy: f32,
    pub flip: bool,
    /// `w - 1`: a flip maps `x` to `w - 1 - x`.
    pub w_last: f32,
}

impl InverseMap {
    pub fn new(p: &AugParams, h: usize, w: usize) -> InverseMap {
        let (cy, cx) = ((h as f32 - 1.0) / 2.0, (w as f32 - 1.0) / 2.0);
        let (cos, sin) = (p.angle.cos(), p.angle.sin());
        InverseMap { cos, sin, zoom: p.zoom, cx, cy, flip: p.flip, w_last: w as f32 - 1.0 }
    }

    /// The input point of output pixel `(x, y)`.
    #[inline(always)]
    pub fn point(&self, x: f32, y: f32) -> (f32, f32) {
        let (dx, dy) = ((x - self.cx) * self.zoom, (y - self.cy) * self.zoom);
        let rx = self.cos * dx - self.sin * dy + self.cx;
        let ry = self.sin * dx + self.cos * dy + self.cy;
        (if self.flip { self.w_last - rx } else { rx }, ry)
    }
}

/// [`warp`]'s loop for `C` channels (`C == c`), or any `c` with `C == 0`.
#[inline(always)]
fn warp_channels<const C: usize>(src: &[f32], dst: &mut [f32], h: usize, w: usize, c: usize, p: &AugParams) {
    let c = if C > 0 { C } else { c };
    let map = InverseMap::new(p, h, w);
    let at = |y: usize, x: usize| &src[(y * w + x) * c..][..c];
    for (y, row) in dst.chunks_exact_mut(w * c).enumerate() {
        for (x, o) in row.chunks_exact_mut(c).enumerate() {
            let (sx, sy) = map.point(x as f32, y as f32);
            let (sx, sy) = (reflect(sx, w), reflect(sy, h));
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = (sx - x0, sy - y0);
            let (x0, y0) = (x0 as usize, y0 as usize);
            let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
            if fx == 0.0 && fy == 0.0 {
                // Exact for integer points, so a flip is lossless.
                o.copy_from_slice(at(y0, x0));
                continue;
            }
            let (a, b, d, e) = (at(y0, x0), at(y0, x1), at(y1, x0), at(y1, x1));
            for (k, o) in o.iter_mut().enumerate() {
                let top = a[k] * (1.0 - fx) + b[k] * fx;
                let bot = d[k] * (1.0 - fx) + e[k] * fx;
                *o = top * (1.0 - fy) + bot * fy;
            }
        }
    }
}

/// Map a coordinate outside `[0, len - 1]` back inside by reflection, as
/// TensorFlow's `ImageProjectiveTransformV3` does for `fill_mode="reflect"`.
#[inline(always)]
pub(crate) fn reflect(mut v: f32, len: usize) -> f32 {
    let n = len as f32;
    if len <= 1 {
        return 0.0;
    }
    let sz2 = 2.0 * n;
    if v < 0.0 {
        if v < -sz2 {
            v += sz2 * (-v / sz2).trunc();
        }
        v = if v < -n { v + sz2 } else { -v - 1.0 };
    } else if v > n - 1.0 {
        v -= sz2 * (v / sz2).trunc();
        if v >= n {
            v = sz2 - v - 1.0;
        }
    }
    v.clamp(0.0, n - 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::rng::stream_rng;
    use ndarray::Array3;

    fn ramp(h: usize, w: usize) -> Array3<f32> {
        Array3::from_shape_fn((h, w, 3), |(y, x, c)| (y * 31 + x * 7 + c) as f32 / 1000.0)
    }

    #[test]
    fn flip_twice_is_identity_and_mirrors() {
        let img = ramp(7, 9);
        let flip = AugParams { flip: true, angle: 0.0, zoom: 1.0 };
        let once = apply(img.view(), &flip);
        assert_eq!(once[[2, 0, 1]], img[[2, 8, 1]]);
        assert_eq!(apply(once.view(), &flip), img);
        assert_eq!(apply(img.view(), &AugParams::IDENTITY), img);
    }

    #[test]
    fn half_turn_rotates_exactly() {
        let img = ramp(5, 5);
        let p = AugParams { flip: false, angle: std::f32::consts::PI, zoom: 1.0 };
        let out = apply(img.view(), &p);
        assert!((out[[0, 0, 0]] - img[[4, 4, 0]]).abs() < 1e-4);
        assert!((out[[1, 3, 2]] - img[[3, 1, 2]]).abs() < 1e-4);
    }

    #[test]
    fn sampling_is_deterministic_and_in_range() {
        let cfg = AugmentConfig::default();
        let a: Vec<AugParams> = (0..200)
            .map({
                let mut r = stream_rng(&[1, 2]);
                move |_| cfg.sample(&mut r)
            })
            .collect();
        let mut r = stream_rng(&[1, 2]);
        let b: Vec<AugParams> = (0..200).map(|_| cfg.sample(&mut r)).collect();
        assert_eq!(a, b);
        let max_angle = 0.1 * std::f32::consts::TAU;
        assert!(a.iter().all(|p| p.angle.abs() <= max_angle && (0.9..=1.1).contains(&p.zoom)));
        let flips = a.iter().filter(|p| p.flip).count();
        assert!((60..140).contains(&flips), "{flips}");
        assert!(a.iter().any(|p| p.angle > 0.5) && a.iter().any(|p| p.angle < -0.5));
    }

    #[test]
    fn output_keeps_shape_and_range() {
        let img = ramp(11, 13).mapv(|v| v.min(1.0));
        let mut r = stream_rng(&[3]);
        for _ in 0..20 {
            let p = AugmentConfig::default().sample(&mut r);
            let out = apply(img.view(), &p);
            assert_eq!(out.dim(), img.dim());
            assert!(out.iter().all(|v| (0.0..=1.0).contains(v)));
        }
    }

    /// The warp element by element, as first written: [`apply`] must give its bits.
    fn apply_reference(img: ArrayView3<f32>, p: &AugParams) -> Array3<f32> {
        let (h, w, _) = img.dim();
        let (cy, cx) = ((h as f32 - 1.0) / 2.0, (w as f32 - 1.0) / 2.0);
        let (cos, sin) = (p.angle.cos(), p.angle.sin());
        Array3::from_shape_fn(img.dim(), |(y, x, k)| {
            let (dx, dy) = ((x as f32 - cx) * p.zoom, (y as f32 - cy) * p.zoom);
            let rx = cos * dx - sin * dy + cx;
            let ry = sin * dx + cos * dy + cy;
            let sx = if p.flip { (w as f32 - 1.0) - rx } else { rx };
            let (sx, sy) = (reflect(sx, w), reflect(ry, h));
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = (sx - x0, sy - y0);
            let (x0, y0) = (x0 as usize, y0 as usize);
            let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
            if fx == 0.0 && fy == 0.0 {
                return img[[y0, x0, k]];
            }
            let top = img[[y0, x0, k]] * (1.0 - fx) + img[[y0, x1, k]] * fx;
            let bot = img[[y1, x0, k]] * (1.0 - fx) + img[[y1, x1, k]] * fx;
            top * (1.0 - fy) + bot * fy
        })
    }

    #[test]
    fn apply_gives_the_reference_bits() {
        let mut r = stream_rng(&[9]);
        for (h, w) in [(227, 227), (11, 13), (1, 5), (6, 1)] {
            let img = ramp(h, w).mapv(|v| (v * 7.3).sin());
            // A non-standard layout too (the warp reads any view): planes, seen as HWC.
            let planes = Array3::from_shape_fn((3, h, w), |(k, y, x)| img[[y, x, k]]);
            let t = planes.view().permuted_axes([1, 2, 0]);
            assert!(!t.is_standard_layout());
            for k in 0..8 {
                let p = if k == 0 {
                    AugParams { flip: true, angle: 0.0, zoom: 1.0 }
                } else {
                    AugmentConfig::default().sample(&mut r)
                };
                let want = apply_reference(img.view(), &p);
                for got in [apply(img.view(), &p), apply(t, &p)] {
                    assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{h}x{w} {p:?}");
                }
            }
        }
    }

    #[test]
    fn reflect_matches_tensorflow() {
        // d c b a | a b c d | d c b a, on pixel indices 0..4.
        assert_eq!(reflect(-1.0, 4), 0.0);
        assert_eq!(reflect(-2.0, 4), 1.0);
        assert_eq!(reflect(4.0, 4), 3.0);
        assert_eq!(reflect(5.0, 4), 2.0);
        assert_eq!(reflect(1.5, 4), 1.5);
        assert_eq!(reflect(-0.5, 4), 0.0);
    }
}
