//! Decoding and resizing: the one preprocessing shared by training, eval,
//! predict, calibration and the simulator.
use ndarray::{Array3, Array4, Axis};
use std::path::Path;

use super::error::DataError;

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
    let bad = |source| DataError::BadImage { path: path.to_path_buf(), source };
    let reader = image::ImageReader::open(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
    // Trust the bytes over the extension: a PNG named .jpg still loads.
    let reader = reader.with_guessed_format().map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
    let img = reader.decode().map_err(bad)?.to_rgb8();
    Ok(resize_bilinear(&img, h, w))
}

/// Bilinear resize with half-pixel centres and no antialiasing, as
/// `tf.image.resize(..., "bilinear")` does inside `image_dataset_from_directory`,
/// so the network sees images the way the Keras tutorial's network did.
pub fn resize_bilinear(img: &image::RgbImage, h: usize, w: usize) -> Array3<f32> {
    let (sw, sh) = (img.width() as usize, img.height() as usize);
    let raw = img.as_raw();
    let mut out = Array3::<f32>::zeros((h, w, 3));
    if sw == 0 || sh == 0 {
        return out;
    }
    let axis = |n_out: usize, n_in: usize| -> Vec<(usize, usize, f32)> {
        let scale = n_in as f32 / n_out as f32;
        (0..n_out)
            .map(|o| {
                let c = ((o as f32 + 0.5) * scale - 0.5).clamp(0.0, (n_in - 1) as f32);
                let i0 = c.floor() as usize;
                let i1 = (i0 + 1).min(n_in - 1);
                (i0, i1, c - i0 as f32)
            })
            .collect()
    };
    let xs = axis(w, sw);
    let ys = axis(h, sh);
    let px = |x: usize, y: usize, ch: usize| raw[(y * sw + x) * 3 + ch] as f32;
    for (oy, &(y0, y1, fy)) in ys.iter().enumerate() {
        for (ox, &(x0, x1, fx)) in xs.iter().enumerate() {
            for ch in 0..3 {
                let top = px(x0, y0, ch) * (1.0 - fx) + px(x1, y0, ch) * fx;
                let bot = px(x0, y1, ch) * (1.0 - fx) + px(x1, y1, ch) * fx;
                out[[oy, ox, ch]] = (top * (1.0 - fy) + bot * fy) / 255.0;
            }
        }
    }
    out
}
