//! Decoding and resizing: the one preprocessing shared by training, eval,
//! predict, calibration and the simulator.
use ndarray::{Array3, Array4, Axis};
use std::path::Path;

use super::error::DataError;
use crate::nn::wide::vectorized;

/// Stack `[h, w, 3]` images into one `[n, h, w, 3]` array.
pub fn stack(images: &[Array3<f32>], h: usize, w: usize) -> Result<Array4<f32>, DataError> {
    let mut out = Array4::<f32>::zeros((images.len(), h, w, 3));
    for (mut dst, src) in out.axis_iter_mut(Axis(0)).zip(images) {
        dst.assign(src);
    }
    Ok(out)
}

/// Decode the image file at `path` and resize it to `h x w` (bilinear), RGB
/// f32 in [0, 1]: the one preprocessing shared by training, eval and predict.
pub fn load_image_file(path: &Path, h: usize, w: usize) -> Result<Array3<f32>, DataError> {
    Ok(resize_bilinear(&decode_image_file(path)?, h, w))
}

/// Decode the image file at `path` to 8-bit RGB, whatever its format, after
/// holding its length and its declared size to the memory limit.
pub fn decode_image_file(path: &Path) -> Result<image::RgbImage, DataError> {
    let bad = |source| DataError::BadImage { path: path.to_path_buf(), source };
    let io = |source| DataError::Io { path: path.to_path_buf(), source };
    // The file is read whole (its header is looked at twice): its length is
    // held to the image's share of the memory limit first.
    let len = std::fs::metadata(path).map_err(io)?.len();
    let limit = crate::budget::limit() / IMAGE_SHARE_OF_LIMIT;
    if len > limit {
        return Err(DataError::FileTooLarge { path: path.to_path_buf(), bytes: len, limit });
    }
    let bytes = std::fs::read(path).map_err(io)?;
    // Trust the bytes over the extension: a PNG named .jpg still loads.
    let reader = image::ImageReader::new(std::io::Cursor::new(&bytes)).with_guessed_format().map_err(io)?;
    let jpeg = reader.format() == Some(image::ImageFormat::Jpeg);
    // The header's size, held to the memory limit before any pixel is decoded.
    let (iw, ih) = reader.into_dimensions().map_err(bad)?;
    check_image_size(path, iw, ih)?;
    if jpeg && !jpeg_is_complete(&bytes) {
        return Err(DataError::Truncated(path.to_path_buf()));
    }
    let reader = image::ImageReader::new(std::io::Cursor::new(&bytes)).with_guessed_format().map_err(io)?;
    Ok(reader.decode().map_err(bad)?.into_rgb8())
}

/// Bytes per decoded pixel at worst: 16-bit RGBA (8) plus the 8-bit RGB copy (3), rounded up.
const DECODED_BYTES_PER_PIXEL: u64 = 12;

/// The share of the memory limit one image may take: several loader
/// threads decode at once.
pub const IMAGE_SHARE_OF_LIMIT: u64 = 8;

/// A `w x h` image must decode within its share of the memory limit.
pub fn check_image_size(path: &Path, w: u32, h: u32) -> Result<(), DataError> {
    let bytes = (w as u64) * (h as u64) * DECODED_BYTES_PER_PIXEL;
    let limit = crate::budget::limit() / IMAGE_SHARE_OF_LIMIT;
    if bytes > limit {
        return Err(DataError::TooLarge { path: path.to_path_buf(), w, h, bytes, limit });
    }
    Ok(())
}

/// Whether a JPEG stream ends with its end-of-image marker (`FF D9`), allowing
/// a little trailing padding. The decoder fills a cut-off file's missing rows
/// with grey and reports success, so a truncated file would otherwise be
/// classified as if it were whole. `FF D9` cannot occur inside entropy-coded
/// data (an `FF` there is followed by `00` or a restart marker).
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(4096)..];
    tail.windows(2).any(|w| w == [0xFF, 0xD9])
}

/// Bilinear resize with half-pixel centres and no antialiasing, as
/// `tf.image.resize(..., "bilinear")` does inside `image_dataset_from_directory`,
/// so the network sees images the way the Keras tutorial's network did.
pub fn resize_bilinear(img: &image::RgbImage, h: usize, w: usize) -> Array3<f32> {
    let mut out = Array3::<f32>::zeros((h, w, 3));
    resize_bilinear_into(img, h, w, out.as_slice_mut().expect("a new array is contiguous"));
    out
}

/// [`resize_bilinear`] into `out`, the image's `h * w * 3` values (a batch's
/// slot); an image without pixels gives zeros.
///
/// Panics if `out` has another length.
pub fn resize_bilinear_into(img: &image::RgbImage, h: usize, w: usize, out: &mut [f32]) {
    assert_eq!(out.len(), h * w * 3, "resize: output length");
    let (sw, sh) = (img.width() as usize, img.height() as usize);
    let raw = img.as_raw();
    if sw == 0 || sh == 0 || h == 0 || w == 0 {
        out.fill(0.0);
        return;
    }
    let axis = |n_out: usize, n_in: usize| -> Vec<(usize, usize, f32)> {
        let scale = n_in as f32 / n_out as f32;
        (0..n_out)
            .map(|o| {
                let c = source_coordinate(o as f32, scale, (n_in - 1) as f32);
                let i0 = c.floor() as usize;
                let i1 = (i0 + 1).min(n_in - 1);
                (i0, i1, c - i0 as f32)
            })
            .collect()
    };
    let xs = axis(w, sw);
    let ys = axis(h, sh);
    // This runs on the loader threads beside a training step. Each source
    // row is interpolated across once (neighbouring output rows share source
    // rows), then each output row blends two such rows: a plain loop over
    // contiguous values, compiled for the CPU's widest vectors. The same
    // operations in the same order as pixel by pixel, so the same bits.
    let mut source_row = vec![0f32; sw * 3];
    let mut across = |y: usize, dst: &mut [f32]| {
        widen_row(&raw[y * sw * 3..][..sw * 3], &mut source_row);
        for (o, &(x0, x1, fx)) in dst.chunks_exact_mut(3).zip(&xs) {
            let (p0, p1) = (&source_row[x0 * 3..][..3], &source_row[x1 * 3..][..3]);
            for ((o, &a), &b) in o.iter_mut().zip(p0).zip(p1) {
                *o = a * (1.0 - fx) + b * fx;
            }
        }
    };
    // The two most recent source rows, interpolated across.
    let mut kept = [(usize::MAX, vec![0f32; w * 3]), (usize::MAX, vec![0f32; w * 3])];
    for (row, &(y0, y1, fy)) in out.chunks_exact_mut(w * 3).zip(&ys) {
        for y in [y0, y1] {
            if kept[0].0 != y && kept[1].0 != y {
                // Replace the one this output row does not need.
                let slot = if kept[0].0 == y0 || kept[0].0 == y1 { 1 } else { 0 };
                across(y, &mut kept[slot].1);
                kept[slot].0 = y;
            }
        }
        let at = |y: usize| if kept[0].0 == y { &kept[0].1 } else { &kept[1].1 };
        blend_rows(at(y0), at(y1), fy, row);
    }
}

/// The input coordinate that output coordinate `o` samples when a side of
/// `n_in` pixels is resized by `scale = n_in / n_out`: half-pixel centres,
/// clamped to the first and last pixel (`last = n_in - 1`).
#[inline(always)]
pub(crate) fn source_coordinate(o: f32, scale: f32, last: f32) -> f32 {
    ((o + 0.5) * scale - 0.5).clamp(0.0, last)
}

vectorized! {
    /// `out = src as f32`, value by value (exact).
    fn widen_row(src: &[u8], out: &mut [f32]) {
        for (o, &v) in out.iter_mut().zip(src) {
            *o = v as f32;
        }
    }
}

vectorized! {
    /// `out = (top * (1 - fy) + bottom * fy) / 255`, value by value.
    fn blend_rows(top: &[f32], bottom: &[f32], fy: f32, out: &mut [f32]) {
        for ((o, &t), &b) in out.iter_mut().zip(top).zip(bottom) {
            *o = (t * (1.0 - fy) + b * fy) / 255.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 5) as u8, 90]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
        out.into_inner()
    }

    /// The decoder fills a cut-off JPEG with grey and says nothing: the
    /// missing end-of-image marker makes it an error naming the file.
    #[test]
    fn a_truncated_jpeg_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let whole = jpeg(64, 64);
        let p = dir.path().join("whole.jpg");
        std::fs::write(&p, &whole).unwrap();
        assert!(load_image_file(&p, 8, 8).is_ok());
        let cut = dir.path().join("cut.jpg");
        std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
        let e = load_image_file(&cut, 8, 8).unwrap_err();
        assert!(matches!(e, DataError::Truncated(_)), "{e}");
        assert!(e.to_string().contains("cut.jpg"), "{e}");
    }

    /// The resize element by element, as first written: the slice version
    /// must give its bits.
    fn resize_reference(img: &image::RgbImage, h: usize, w: usize) -> Array3<f32> {
        let (sw, sh) = (img.width() as usize, img.height() as usize);
        let axis = |n_out: usize, n_in: usize, o: usize| {
            let c = ((o as f32 + 0.5) * (n_in as f32 / n_out as f32) - 0.5).clamp(0.0, (n_in - 1) as f32);
            let i0 = c.floor() as usize;
            (i0, (i0 + 1).min(n_in - 1), c - i0 as f32)
        };
        let px = |x: usize, y: usize, ch: usize| img.as_raw()[(y * sw + x) * 3 + ch] as f32;
        Array3::from_shape_fn((h, w, 3), |(oy, ox, ch)| {
            let ((y0, y1, fy), (x0, x1, fx)) = (axis(h, sh, oy), axis(w, sw, ox));
            let top = px(x0, y0, ch) * (1.0 - fx) + px(x1, y0, ch) * fx;
            let bot = px(x0, y1, ch) * (1.0 - fx) + px(x1, y1, ch) * fx;
            (top * (1.0 - fy) + bot * fy) / 255.0
        })
    }

    #[test]
    fn resize_gives_the_reference_bits() {
        for (sw, sh, w, h) in [(320, 240, 227, 227), (7, 5, 13, 3), (1, 1, 4, 4), (64, 48, 8, 8), (5, 9, 5, 9)] {
            let img = image::RgbImage::from_fn(sw, sh, |x, y| {
                image::Rgb([(x * 37 + y * 11) as u8, (x * y) as u8, (x ^ y).wrapping_mul(29) as u8])
            });
            let (got, want) = (resize_bilinear(&img, h, w), resize_reference(&img, h, w));
            assert_eq!(got.dim(), want.dim());
            assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{sw}x{sh} -> {w}x{h}");
        }
    }

    /// The header's size is checked before decoding.
    #[test]
    fn a_huge_declared_image_is_refused_before_decoding() {
        let limit = crate::budget::limit() / IMAGE_SHARE_OF_LIMIT;
        let side = ((limit / DECODED_BYTES_PER_PIXEL) as f64).sqrt() as u32 + 2;
        let e = check_image_size(Path::new("big.png"), side, side).unwrap_err();
        assert!(matches!(e, DataError::TooLarge { .. }) && e.to_string().contains("big.png"), "{e}");
        assert!(check_image_size(Path::new("ok.png"), 4000, 3000).is_ok());
    }
}
