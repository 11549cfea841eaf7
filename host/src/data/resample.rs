//! A training image in one bilinear sampling of the decoded 8-bit photo:
//! the resize to the network's input and the augmentation's affine map
//! composed into one map.
//!
//! Resizing to `h x w` and then warping samples the photo twice; this
//! samples it once, at the point the resize would have taken the warped
//! point from. The point is reflected at the resized image's edges, as the
//! warp does, so the same region of the photo is seen either way. This runs
//! on the loader threads beside the training step, once per pixel of every
//! training image, so the AVX-512 build gathers 16 pixels at a time.
//!
//! With the identity transform it gives [`super::decode::resize_bilinear`]'s
//! bits (same coordinates, same operations in the same order): a tested
//! property.
use super::augment::{reflect, AugParams, InverseMap};
use super::decode::source_coordinate;

/// Decoded 8-bit RGB pixels followed by one padding byte, so that a 4-byte
/// read at any pixel stays inside the buffer (the AVX-512 path reads a
/// pixel's three bytes as one gathered word).
#[derive(Clone, Debug)]
pub struct Rgb8 {
    bytes: Vec<u8>,
    w: usize,
    h: usize,
}

impl Rgb8 {
    pub fn new(img: image::RgbImage) -> Rgb8 {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let mut bytes = img.into_raw();
        bytes.push(0);
        Rgb8 { bytes, w, h }
    }

    /// Byte `k` (0..3) of pixel `(x, y)`.
    #[inline(always)]
    fn at(&self, x: usize, y: usize, k: usize) -> f32 {
        self.bytes[(y * self.w + x) * 3 + k] as f32
    }
}

/// Output pixel `(x, y)` of an `h x w` training image -> a point of the photo.
#[derive(Clone, Copy, Debug)]
struct PhotoMap {
    augment: InverseMap,
    h: usize,
    w: usize,
    /// The resize's scales, photo over output, per axis.
    scale_x: f32,
    scale_y: f32,
    /// The photo's last column and row.
    last_x: f32,
    last_y: f32,
}

impl PhotoMap {
    fn new(src: &Rgb8, p: &AugParams, h: usize, w: usize) -> PhotoMap {
        PhotoMap {
            augment: InverseMap::new(p, h, w),
            h,
            w,
            scale_x: src.w as f32 / w as f32,
            scale_y: src.h as f32 / h as f32,
            last_x: (src.w - 1) as f32,
            last_y: (src.h - 1) as f32,
        }
    }
}

/// The training image for `p` from `src`, into `out` (`h * w * 3` values,
/// NHWC, in [0, 1]); a photo without pixels gives zeros.
///
/// Panics if `out` has another length.
pub fn resize_augment_into(src: &Rgb8, p: &AugParams, h: usize, w: usize, out: &mut [f32]) {
    assert_eq!(out.len(), h * w * 3, "resize_augment: output length");
    if src.w == 0 || src.h == 0 {
        out.fill(0.0);
        return;
    }
    if h == 0 || w == 0 {
        return;
    }
    let map = PhotoMap::new(src, p, h, w);
    #[cfg(target_arch = "x86_64")]
    if x86::usable(src, h, w) {
        // SAFETY: `usable` checked the sides of 2 or more pixels and byte
        // offsets that fit an i32; `Rgb8` carries the padding byte; each
        // kernel runs only where its features were detected.
        unsafe {
            if shared::kernels::x86::has_avx512f() {
                x86::rows(src, &map, out);
                return;
            }
            if is_x86_feature_detected!("avx2") {
                x86::rows_avx2(src, &map, out);
                return;
            }
        }
    }
    for (y, row) in out.chunks_exact_mut(w * 3).enumerate() {
        for (x, o) in row.chunks_exact_mut(3).enumerate() {
            sample(src, &map, x, y, o);
        }
    }
}

/// One output pixel, the definition the AVX-512 path reproduces bit for bit.
#[inline(always)]
fn sample(src: &Rgb8, m: &PhotoMap, x: usize, y: usize, o: &mut [f32]) {
    let (ux, uy) = m.augment.point(x as f32, y as f32);
    let (ux, uy) = (reflect(ux, m.w), reflect(uy, m.h));
    let sx = source_coordinate(ux, m.scale_x, m.last_x);
    let sy = source_coordinate(uy, m.scale_y, m.last_y);
    let (x0, y0) = (sx.floor(), sy.floor());
    let (fx, fy) = (sx - x0, sy - y0);
    let (x0, y0) = (x0 as usize, y0 as usize);
    let (x1, y1) = ((x0 + 1).min(src.w - 1), (y0 + 1).min(src.h - 1));
    for (k, o) in o.iter_mut().enumerate() {
        let top = src.at(x0, y0, k) * (1.0 - fx) + src.at(x1, y0, k) * fx;
        let bot = src.at(x0, y1, k) * (1.0 - fx) + src.at(x1, y1, k) * fx;
        *o = (top * (1.0 - fy) + bot * fy) / 255.0;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use crate::data::resample::{sample, PhotoMap, Rgb8};
    use std::arch::x86_64::*;

    /// Whether [`rows`] or [`rows_avx2`] may run (given its features): sides
    /// of two pixels or more ([`super::reflect`]'s one-pixel case is left to
    /// the scalar loop), and every byte offset within an i32.
    pub fn usable(src: &Rgb8, h: usize, w: usize) -> bool {
        h > 1 && w > 1 && src.bytes.len() <= i32::MAX as usize
    }

    const FLOOR: i32 = _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC;
    const TRUNC: i32 = _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC;

    /// [`super::reflect`] on 16 coordinates (`len > 1`): both branches
    /// computed with the scalar's operations, the lanes' own kept.
    #[inline(always)]
    unsafe fn reflect16(v: __m512, len: usize) -> __m512 {
        let n = _mm512_set1_ps(len as f32);
        let sz2 = _mm512_set1_ps(2.0 * len as f32);
        let last = _mm512_set1_ps(len as f32 - 1.0);
        let (zero, one) = (_mm512_setzero_ps(), _mm512_set1_ps(1.0));
        // v < 0: bring v above -2n, then mirror about -1/2.
        let neg_v = _mm512_sub_ps(zero, v);
        let far = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(v, _mm512_sub_ps(zero, sz2));
        let wraps = _mm512_mul_ps(sz2, _mm512_roundscale_ps::<TRUNC>(_mm512_div_ps(neg_v, sz2)));
        let a = _mm512_mask_add_ps(v, far, v, wraps);
        let below = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, _mm512_sub_ps(zero, n));
        let a = _mm512_mask_blend_ps(below, _mm512_sub_ps(_mm512_sub_ps(zero, a), one), _mm512_add_ps(a, sz2));
        // v > n - 1: wrap into [0, 2n), then mirror about n - 1/2.
        let b = _mm512_sub_ps(v, _mm512_mul_ps(sz2, _mm512_roundscale_ps::<TRUNC>(_mm512_div_ps(v, sz2))));
        let over = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(b, n);
        let b = _mm512_mask_blend_ps(over, b, _mm512_sub_ps(_mm512_sub_ps(sz2, b), one));
        let neg = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(v, zero);
        let above = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, last);
        let r = _mm512_mask_blend_ps(above, v, b);
        let r = _mm512_mask_blend_ps(neg, r, a);
        _mm512_min_ps(_mm512_max_ps(r, zero), last)
    }

    /// [`super::source_coordinate`] on 16 coordinates.
    #[inline(always)]
    unsafe fn source16(u: __m512, scale: f32, last: f32) -> __m512 {
        let half = _mm512_set1_ps(0.5);
        let s = _mm512_sub_ps(_mm512_mul_ps(_mm512_add_ps(u, half), _mm512_set1_ps(scale)), half);
        _mm512_min_ps(_mm512_max_ps(s, _mm512_setzero_ps()), _mm512_set1_ps(last))
    }

    /// Permutations that interleave three planes of 16 values (R, G, B) into
    /// 48 RGB values: output vector `m`, lane `j` is value `e = 16m + j`,
    /// pixel `e / 3`, channel `e % 3`. The first takes R and G from
    /// (R, G), the second B from (that, B).
    const fn interleave() -> [[[i32; 16]; 2]; 3] {
        let mut t = [[[0; 16]; 2]; 3];
        let mut m = 0;
        while m < 3 {
            let mut j = 0;
            while j < 16 {
                let e = 16 * m + j;
                let (p, ch) = ((e / 3) as i32, e % 3);
                t[m][0][j] = if ch == 1 { 16 + p } else { p };
                t[m][1][j] = if ch == 2 { 16 + p } else { j as i32 };
                j += 1;
            }
            m += 1;
        }
        t
    }
    const INTERLEAVE: [[[i32; 16]; 2]; 3] = interleave();

    /// Every output row: 16 pixels at a time, the rest through [`sample`].
    ///
    /// # Safety
    /// The CPU has AVX-512F; `m`'s sides are 2 or more; `src`'s byte
    /// offsets fit an i32 and it ends with its padding byte.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn rows(src: &Rgb8, m: &PhotoMap, out: &mut [f32]) {
        let a = &m.augment;
        let iota = _mm512_setr_ps(0., 1., 2., 3., 4., 5., 6., 7., 8., 9., 10., 11., 12., 13., 14., 15.);
        let (cos, sin, zoom) = (_mm512_set1_ps(a.cos), _mm512_set1_ps(a.sin), _mm512_set1_ps(a.zoom));
        let (cx, cy) = (_mm512_set1_ps(a.cx), _mm512_set1_ps(a.cy));
        let (one, div) = (_mm512_set1_ps(1.0), _mm512_set1_ps(255.0));
        let byte = _mm512_set1_epi32(0xFF);
        let (sw, last_col, last_row) = (_mm512_set1_epi32(src.w as i32), src.w as i32 - 1, src.h as i32 - 1);
        let (three, step_down) = (_mm512_set1_epi32(3), _mm512_set1_epi32(3 * src.w as i32));
        let perm: [[__m512i; 2]; 3] = INTERLEAVE.map(|p| p.map(|t| _mm512_loadu_si512(t.as_ptr().cast())));
        let base = src.bytes.as_ptr();
        let full = m.w / 16 * 16;
        for (y, row) in out.chunks_exact_mut(m.w * 3).enumerate() {
            // The output row's `dy` terms, shared by its 16-pixel blocks.
            let dy = _mm512_mul_ps(_mm512_sub_ps(_mm512_set1_ps(y as f32), cy), zoom);
            let (sin_dy, cos_dy) = (_mm512_mul_ps(sin, dy), _mm512_mul_ps(cos, dy));
            for x in (0..full).step_by(16) {
                // InverseMap::point, then the reflection and the resize's map.
                let dx = _mm512_mul_ps(_mm512_sub_ps(_mm512_add_ps(_mm512_set1_ps(x as f32), iota), cx), zoom);
                let rx = _mm512_add_ps(_mm512_sub_ps(_mm512_mul_ps(cos, dx), sin_dy), cx);
                let ry = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(sin, dx), cos_dy), cy);
                let rx = if a.flip { _mm512_sub_ps(_mm512_set1_ps(a.w_last), rx) } else { rx };
                let sx = source16(reflect16(rx, m.w), m.scale_x, m.last_x);
                let sy = source16(reflect16(ry, m.h), m.scale_y, m.last_y);
                let (x0, y0) = (_mm512_roundscale_ps::<FLOOR>(sx), _mm512_roundscale_ps::<FLOOR>(sy));
                let (fx, fy) = (_mm512_sub_ps(sx, x0), _mm512_sub_ps(sy, y0));
                let (x0, y0) = (_mm512_cvttps_epi32(x0), _mm512_cvttps_epi32(y0));
                let x1 = _mm512_min_epi32(_mm512_add_epi32(x0, _mm512_set1_epi32(1)), _mm512_set1_epi32(last_col));
                let below = _mm512_cmplt_epi32_mask(y0, _mm512_set1_epi32(last_row));
                // Byte offsets of the four taps: one 4-byte word each, its low
                // three bytes the pixel's R, G, B.
                let top0 = _mm512_mullo_epi32(_mm512_add_epi32(_mm512_mullo_epi32(y0, sw), x0), three);
                let top1 = _mm512_add_epi32(top0, _mm512_mullo_epi32(_mm512_sub_epi32(x1, x0), three));
                let bot0 = _mm512_mask_add_epi32(top0, below, top0, step_down);
                let bot1 = _mm512_mask_add_epi32(top1, below, top1, step_down);
                let gather = |o: __m512i| _mm512_i32gather_epi32::<1>(o, base.cast());
                let (w00, w01, w10, w11) = (gather(top0), gather(top1), gather(bot0), gather(bot1));
                let (gx, gy) = (_mm512_sub_ps(one, fx), _mm512_sub_ps(one, fy));
                let channel = |shift: u32| {
                    let c = |w: __m512i| {
                        _mm512_cvtepi32_ps(_mm512_and_si512(
                            _mm512_srlv_epi32(w, _mm512_set1_epi32(shift as i32)),
                            byte,
                        ))
                    };
                    let top = _mm512_add_ps(_mm512_mul_ps(c(w00), gx), _mm512_mul_ps(c(w01), fx));
                    let bot = _mm512_add_ps(_mm512_mul_ps(c(w10), gx), _mm512_mul_ps(c(w11), fx));
                    _mm512_div_ps(_mm512_add_ps(_mm512_mul_ps(top, gy), _mm512_mul_ps(bot, fy)), div)
                };
                let (r, g, b) = (channel(0), channel(8), channel(16));
                let dst = row[x * 3..][..48].as_mut_ptr();
                for (k, [rg, then_b]) in perm.iter().enumerate() {
                    let v = _mm512_permutex2var_ps(_mm512_permutex2var_ps(r, *rg, g), *then_b, b);
                    _mm512_storeu_ps(dst.add(16 * k), v);
                }
            }
            for (x, o) in row.chunks_exact_mut(3).enumerate().skip(full) {
                sample(src, m, x, y, o);
            }
        }
    }

    /// [`reflect16`] on 8 coordinates, for AVX2 (blends for the masks).
    #[inline(always)]
    unsafe fn reflect8(v: __m256, len: usize) -> __m256 {
        let n = _mm256_set1_ps(len as f32);
        let sz2 = _mm256_set1_ps(2.0 * len as f32);
        let last = _mm256_set1_ps(len as f32 - 1.0);
        let (zero, one) = (_mm256_setzero_ps(), _mm256_set1_ps(1.0));
        let neg_v = _mm256_sub_ps(zero, v);
        let far = _mm256_cmp_ps::<_CMP_LT_OQ>(v, _mm256_sub_ps(zero, sz2));
        let wraps = _mm256_mul_ps(sz2, _mm256_round_ps::<TRUNC>(_mm256_div_ps(neg_v, sz2)));
        let a = _mm256_blendv_ps(v, _mm256_add_ps(v, wraps), far);
        let below = _mm256_cmp_ps::<_CMP_LT_OQ>(a, _mm256_sub_ps(zero, n));
        let a = _mm256_blendv_ps(_mm256_sub_ps(_mm256_sub_ps(zero, a), one), _mm256_add_ps(a, sz2), below);
        let b = _mm256_sub_ps(v, _mm256_mul_ps(sz2, _mm256_round_ps::<TRUNC>(_mm256_div_ps(v, sz2))));
        let over = _mm256_cmp_ps::<_CMP_GE_OQ>(b, n);
        let b = _mm256_blendv_ps(b, _mm256_sub_ps(_mm256_sub_ps(sz2, b), one), over);
        let neg = _mm256_cmp_ps::<_CMP_LT_OQ>(v, zero);
        let above = _mm256_cmp_ps::<_CMP_GT_OQ>(v, last);
        let r = _mm256_blendv_ps(v, b, above);
        let r = _mm256_blendv_ps(r, a, neg);
        _mm256_min_ps(_mm256_max_ps(r, zero), last)
    }

    /// [`source16`] on 8 coordinates.
    #[inline(always)]
    unsafe fn source8(u: __m256, scale: f32, last: f32) -> __m256 {
        let half = _mm256_set1_ps(0.5);
        let s = _mm256_sub_ps(_mm256_mul_ps(_mm256_add_ps(u, half), _mm256_set1_ps(scale)), half);
        _mm256_min_ps(_mm256_max_ps(s, _mm256_setzero_ps()), _mm256_set1_ps(last))
    }

    /// [`rows`] 8 pixels at a time, for CPUs with AVX2 but not AVX-512 (an
    /// AMD Zen 3), where the scalar loop was a third of the loader's time:
    /// the same operations in the same order, so the scalar's bits.
    ///
    /// # Safety
    /// The CPU has AVX2; `m`'s sides are 2 or more; `src`'s byte offsets
    /// fit an i32 and it ends with its padding byte.
    #[target_feature(enable = "avx2")]
    pub unsafe fn rows_avx2(src: &Rgb8, m: &PhotoMap, out: &mut [f32]) {
        let a = &m.augment;
        let iota = _mm256_setr_ps(0., 1., 2., 3., 4., 5., 6., 7.);
        let (cos, sin, zoom) = (_mm256_set1_ps(a.cos), _mm256_set1_ps(a.sin), _mm256_set1_ps(a.zoom));
        let (cx, cy) = (_mm256_set1_ps(a.cx), _mm256_set1_ps(a.cy));
        let (one, div) = (_mm256_set1_ps(1.0), _mm256_set1_ps(255.0));
        let byte = _mm256_set1_epi32(0xFF);
        let (sw, last_col, last_row) = (_mm256_set1_epi32(src.w as i32), src.w as i32 - 1, src.h as i32 - 1);
        let (three, step_down) = (_mm256_set1_epi32(3), _mm256_set1_epi32(3 * src.w as i32));
        let base = src.bytes.as_ptr();
        let full = m.w / 8 * 8;
        for (y, row) in out.chunks_exact_mut(m.w * 3).enumerate() {
            let dy = _mm256_mul_ps(_mm256_sub_ps(_mm256_set1_ps(y as f32), cy), zoom);
            let (sin_dy, cos_dy) = (_mm256_mul_ps(sin, dy), _mm256_mul_ps(cos, dy));
            for x in (0..full).step_by(8) {
                let dx = _mm256_mul_ps(_mm256_sub_ps(_mm256_add_ps(_mm256_set1_ps(x as f32), iota), cx), zoom);
                let rx = _mm256_add_ps(_mm256_sub_ps(_mm256_mul_ps(cos, dx), sin_dy), cx);
                let ry = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(sin, dx), cos_dy), cy);
                let rx = if a.flip { _mm256_sub_ps(_mm256_set1_ps(a.w_last), rx) } else { rx };
                let sx = source8(reflect8(rx, m.w), m.scale_x, m.last_x);
                let sy = source8(reflect8(ry, m.h), m.scale_y, m.last_y);
                let (x0, y0) = (_mm256_round_ps::<FLOOR>(sx), _mm256_round_ps::<FLOOR>(sy));
                let (fx, fy) = (_mm256_sub_ps(sx, x0), _mm256_sub_ps(sy, y0));
                let (x0, y0) = (_mm256_cvttps_epi32(x0), _mm256_cvttps_epi32(y0));
                let x1 = _mm256_min_epi32(_mm256_add_epi32(x0, _mm256_set1_epi32(1)), _mm256_set1_epi32(last_col));
                let below = _mm256_cmpgt_epi32(_mm256_set1_epi32(last_row), y0);
                let top0 = _mm256_mullo_epi32(_mm256_add_epi32(_mm256_mullo_epi32(y0, sw), x0), three);
                let top1 = _mm256_add_epi32(top0, _mm256_mullo_epi32(_mm256_sub_epi32(x1, x0), three));
                let down = _mm256_and_si256(step_down, below);
                let (bot0, bot1) = (_mm256_add_epi32(top0, down), _mm256_add_epi32(top1, down));
                let gather = |o: __m256i| _mm256_i32gather_epi32::<1>(base.cast(), o);
                let (w00, w01, w10, w11) = (gather(top0), gather(top1), gather(bot0), gather(bot1));
                let (gx, gy) = (_mm256_sub_ps(one, fx), _mm256_sub_ps(one, fy));
                let channel = |shift: i32| {
                    let c = |w: __m256i| {
                        _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(w, _mm256_set1_epi32(shift)), byte))
                    };
                    let top = _mm256_add_ps(_mm256_mul_ps(c(w00), gx), _mm256_mul_ps(c(w01), fx));
                    let bot = _mm256_add_ps(_mm256_mul_ps(c(w10), gx), _mm256_mul_ps(c(w11), fx));
                    _mm256_div_ps(_mm256_add_ps(_mm256_mul_ps(top, gy), _mm256_mul_ps(bot, fy)), div)
                };
                let mut planes = [[0f32; 8]; 3];
                for (plane, shift) in planes.iter_mut().zip([0, 8, 16]) {
                    _mm256_storeu_ps(plane.as_mut_ptr(), channel(shift));
                }
                for (j, px) in row[x * 3..][..24].chunks_exact_mut(3).enumerate() {
                    px.copy_from_slice(&[planes[0][j], planes[1][j], planes[2][j]]);
                }
            }
            for (x, o) in row.chunks_exact_mut(3).enumerate().skip(full) {
                sample(src, m, x, y, o);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::augment::{self, AugmentConfig};
    use crate::data::decode::resize_bilinear;
    use crate::data::rng::stream_rng;

    fn photo(w: u32, h: u32) -> image::RgbImage {
        image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 37 + y * 11) as u8, (x * y) as u8, (x ^ y).wrapping_mul(29) as u8])
        })
    }

    /// The AVX2 path gives the scalar's bits on any CPU with AVX2, which
    /// [`the_wide_path_gives_the_scalar_bits`] reaches only where AVX-512 is
    /// absent.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_avx2_path_gives_the_scalar_bits() {
        if !is_x86_feature_detected!("avx2") {
            return;
        }
        let mut r = stream_rng(&[6]);
        let strong = AugmentConfig { flip_horizontal: true, rotation: 0.5, zoom: 0.9 };
        for (sw, sh, w, h) in [(320, 240, 227, 227), (64, 48, 32, 16), (7, 5, 37, 19), (300, 2, 2, 40)] {
            let src = Rgb8::new(photo(sw, sh));
            for k in 0..10 {
                let p = match k {
                    0 => AugParams::IDENTITY,
                    1 => AugParams { flip: true, angle: 1.0, zoom: 6.0 },
                    2..5 => AugmentConfig::default().sample(&mut r),
                    _ => strong.sample(&mut r),
                };
                let map = PhotoMap::new(&src, &p, h, w);
                let mut out = vec![f32::NAN; h * w * 3];
                assert!(x86::usable(&src, h, w));
                // SAFETY: AVX2 is present (checked above) and `usable` holds.
                unsafe { x86::rows_avx2(&src, &map, &mut out) };
                assert_eq!(bits(&out), bits(&scalar(&src, &p, h, w)), "{sw}x{sh} -> {w}x{h} {p:?}");
            }
        }
    }

    /// Every pixel through the scalar definition.
    fn scalar(src: &Rgb8, p: &AugParams, h: usize, w: usize) -> Vec<f32> {
        let map = PhotoMap::new(src, p, h, w);
        let mut out = vec![0f32; h * w * 3];
        for (y, row) in out.chunks_exact_mut(w * 3).enumerate() {
            for (x, o) in row.chunks_exact_mut(3).enumerate() {
                sample(src, &map, x, y, o);
            }
        }
        out
    }

    fn run(src: &Rgb8, p: &AugParams, h: usize, w: usize) -> Vec<f32> {
        let mut out = vec![f32::NAN; h * w * 3];
        resize_augment_into(src, p, h, w, &mut out);
        out
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// The 16-wide path gives the scalar's bits: down- and upscaling, sides
    /// that are and are not multiples of 16, strong rotations and zooms that
    /// reflect far outside the image.
    #[test]
    fn the_wide_path_gives_the_scalar_bits() {
        let mut r = stream_rng(&[5]);
        let strong = AugmentConfig { flip_horizontal: true, rotation: 0.5, zoom: 0.9 };
        for (sw, sh, w, h) in [(320, 240, 227, 227), (64, 48, 32, 16), (7, 5, 37, 19), (1, 1, 17, 3), (300, 2, 2, 40)] {
            let src = Rgb8::new(photo(sw, sh));
            for k in 0..12 {
                let p = match k {
                    0 => AugParams::IDENTITY,
                    1 => AugParams { flip: true, angle: 0.0, zoom: 1.0 },
                    // Points more than a side's width outside: the reflection's wrap.
                    2 => AugParams { flip: true, angle: 1.0, zoom: 6.0 },
                    3..6 => AugmentConfig::default().sample(&mut r),
                    _ => strong.sample(&mut r),
                };
                assert_eq!(bits(&run(&src, &p, h, w)), bits(&scalar(&src, &p, h, w)), "{sw}x{sh} -> {w}x{h} {p:?}");
            }
        }
    }

    /// With the identity transform, the resize's own bits.
    #[test]
    fn identity_is_the_resize() {
        for (sw, sh, w, h) in [(320, 240, 227, 227), (7, 5, 13, 3), (1, 1, 4, 4), (64, 48, 8, 8), (5, 9, 5, 9)] {
            let img = photo(sw, sh);
            let want = resize_bilinear(&img, h, w);
            let got = run(&Rgb8::new(img), &AugParams::IDENTITY, h, w);
            assert_eq!(bits(&got), bits(want.as_slice().unwrap()), "{sw}x{sh} -> {w}x{h}");
        }
    }

    /// One sampling sees what resizing and then warping sees: on a smooth
    /// photo the two differ by interpolation error only.
    #[test]
    fn close_to_resize_then_warp() {
        let (sw, sh, w, h) = (320u32, 240u32, 227usize, 227usize);
        let img = image::RgbImage::from_fn(sw, sh, |x, y| {
            let (u, v) = (x as f32 / sw as f32, y as f32 / sh as f32);
            image::Rgb([(255.0 * u) as u8, (255.0 * v) as u8, (127.0 + 120.0 * (6.0 * u + 4.0 * v).sin()) as u8])
        });
        let resized = resize_bilinear(&img, h, w);
        let src = Rgb8::new(img);
        let mut r = stream_rng(&[8]);
        for _ in 0..6 {
            let p = AugmentConfig::default().sample(&mut r);
            let two = augment::apply(resized.view(), &p);
            let one = run(&src, &p, h, w);
            let worst = two.iter().zip(&one).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst < 0.03, "{p:?}: largest difference {worst}");
        }
    }

    #[test]
    fn an_empty_photo_gives_zeros() {
        let src = Rgb8::new(image::RgbImage::new(0, 0));
        assert!(run(&src, &AugmentConfig::default().sample(&mut stream_rng(&[1])), 4, 4).iter().all(|&v| v == 0.0));
    }
}
