//! Datasets for training, evaluation, prediction and calibration.
//!
//! A dataset is an [`ImageSource`] (a class-folder tree like Keras's
//! `image_dataset_from_directory`, or the embedded synthetic set) plus a
//! [`Split`] into training and validation indices. Every image comes out as
//! RGB `f32` in `[0, 1]`, `H x W x 3`, batched NHWC, which is what the network,
//! the quantizer's calibration and the firmware's preprocessing all expect.
//!
//! Randomness (split, per-epoch shuffle, augmentation) is drawn from streams
//! that are pure functions of `(seed, epoch, step)` (see [`stream_rng`]), so
//! a run can be resumed mid-way and still make exactly the same draws.
pub mod augment;
pub mod folder;
pub mod loader;
pub mod synthetic;

use ndarray::{Array3, Array4, Axis};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use folder::FolderDataset;
pub use loader::{Batch, BatchPlan, LoaderConfig, Prefetcher};
pub use synthetic::SyntheticDataset;

/// Why a dataset could not be opened or an image could not be read.
/// Every variant that concerns a file names it, so the user can fix or remove it.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("data directory {} does not exist", .0.display())]
    MissingDir(PathBuf),
    #[error("{} is not a directory (expected a folder with one subfolder per class)", .0.display())]
    NotADir(PathBuf),
    #[error("no class folders in {} (expected one subfolder per class, e.g. flower_photos/daisy/*.jpg)", .0.display())]
    NoClasses(PathBuf),
    #[error("only one class folder in {}: a classifier needs at least two", .0.display())]
    OneClass(PathBuf),
    #[error("class folder {} has no images (.jpg, .jpeg, .png, .bmp or .gif)", .0.display())]
    EmptyClass(PathBuf),
    #[error("cannot read image {}: {source} (pass --skip-bad to skip unreadable images)", path.display())]
    BadImage { path: PathBuf, source: image::ImageError },
    #[error("cannot read {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: image::ImageError },
    #[error("--val-split {0} must be in [0, 1)")]
    BadSplit(f32),
    #[error("{total} images with --val-split {split} leave no training images")]
    NoTraining { total: usize, split: f32 },
    #[error("the data has {got} classes but the model was trained on {want} ({names})")]
    ClassMismatch { got: usize, want: usize, names: String },
    #[error("every image of a batch was unreadable (first: {0})")]
    EmptyBatch(String),
}

/// Where images come from: a folder tree or the embedded synthetic set.
///
/// `load` takes `&self` and the trait is `Send + Sync` so that the prefetch
/// thread and rayon workers can decode images while the main thread trains.
pub trait ImageSource: Send + Sync {
    /// Number of images.
    fn len(&self) -> usize;
    /// True when there are no images.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Class names, sorted; labels index into this.
    fn class_names(&self) -> &[String];
    /// Label of image `index`.
    fn label(&self, index: usize) -> usize;
    /// Image `index` as RGB f32 in [0, 1], resized to `h x w` (shape `[h, w, 3]`).
    fn load(&self, index: usize, h: usize, w: usize) -> Result<Array3<f32>, DataError>;
    /// A human name of image `index` (its path), for error messages.
    fn describe(&self, index: usize) -> String;
    /// A one-line description of the whole source, recorded in checkpoints.
    fn summary(&self) -> String;
}

/// A Keras-like split of `0..n` into training and validation indices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    pub train: Vec<usize>,
    pub val: Vec<usize>,
}

impl Split {
    /// Shuffle `0..n` with `seed`, then keep the last `floor(val_split * n)`
    /// for validation, as `image_dataset_from_directory(validation_split=...,
    /// seed=...)` does: the same seed always gives the same split, and the
    /// training and validation subsets never overlap.
    pub fn keras(n: usize, val_split: f32, seed: u64) -> Result<Split, DataError> {
        if !(0.0..1.0).contains(&val_split) || !val_split.is_finite() {
            return Err(DataError::BadSplit(val_split));
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(&[seed, tag::SPLIT])));
        // Keras: num_val_samples = int(validation_split * len(samples)).
        let n_val = (val_split as f64 * n as f64).floor() as usize;
        if n_val >= n {
            return Err(DataError::NoTraining { total: n, split: val_split });
        }
        let val = order.split_off(n - n_val);
        Ok(Split { train: order, val })
    }
}

/// A source with its split: what `train`, `eval` and the quantizer work on.
#[derive(Clone)]
pub struct Dataset {
    pub source: Arc<dyn ImageSource>,
    pub split: Split,
}

impl Dataset {
    /// Open `dir` as a class-folder tree, or the embedded set when `dir` is None.
    pub fn open(dir: Option<&Path>, opts: &OpenOptions) -> Result<Dataset, DataError> {
        let source: Arc<dyn ImageSource> = match dir {
            Some(d) => Arc::new(FolderDataset::open(d)?),
            None => Arc::new(SyntheticDataset::new(opts.per_class, opts.synthetic_seed)),
        };
        let split = Split::keras(source.len(), opts.val_split, opts.seed)?;
        Ok(Dataset { source, split })
    }

    /// Class names, sorted.
    pub fn class_names(&self) -> Vec<String> {
        self.source.class_names().to_vec()
    }

    /// The validation split as NHWC batches of at most `batch` images of
    /// `h x w`, in a fixed order (no augmentation): for evaluation and for the
    /// quantizer's accuracy checks.
    pub fn validation_batches(&self, h: usize, w: usize, batch: usize, skip_bad: bool) -> Prefetcher {
        let plans = BatchPlan::sequential(&self.split.val, batch);
        Prefetcher::spawn(self.source.clone(), plans, LoaderConfig { h, w, augment: None, skip_bad, prefetch: 2 })
    }

    /// `n` validation images (fewer if the split is smaller), picked with
    /// `seed`, as one NHWC array: representative inputs for calibrating
    /// activation ranges. Unreadable images are skipped.
    pub fn calibration_images(&self, n: usize, h: usize, w: usize, seed: u64) -> Result<Array4<f32>, DataError> {
        let pool = if self.split.val.is_empty() { &self.split.train } else { &self.split.val };
        let mut picked = pool.clone();
        picked.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(&[seed, tag::CALIBRATION])));
        picked.truncate(n);
        let images: Vec<Array3<f32>> = picked.iter().filter_map(|&i| self.source.load(i, h, w).ok()).collect();
        stack(&images, h, w)
    }
}

/// Options of [`Dataset::open`].
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// Fraction of images held out for validation.
    pub val_split: f32,
    /// Seed of the split (Keras's `seed=`).
    pub seed: u64,
    /// Images per class of the embedded set (ignored for folders).
    pub per_class: usize,
    /// Seed that generates the embedded set's images (fixed so that the
    /// embedded set is the same data whatever training seed is used).
    pub synthetic_seed: u64,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            val_split: 0.2,
            seed: 123,
            per_class: synthetic::DEFAULT_PER_CLASS,
            synthetic_seed: synthetic::DEFAULT_SEED,
        }
    }
}

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

/// Tags that keep the random streams of different purposes apart.
pub mod tag {
    pub const SPLIT: u64 = 0x5350_4c49;
    pub const SHUFFLE: u64 = 0x5348_5546;
    pub const AUGMENT: u64 = 0x4155_474d;
    pub const DROPOUT: u64 = 0x4452_4f50;
    pub const INIT: u64 = 0x494e_4954;
    pub const CALIBRATION: u64 = 0x4341_4c49;
    pub const SYNTHETIC: u64 = 0x5359_4e54;
}

/// Mix several words into one seed (splitmix64 over the words), so that
/// `(seed, epoch, step, purpose)` names an independent random stream.
pub fn mix(words: &[u64]) -> u64 {
    let mut h: u64 = 0x9E37_79B9_7F4A_7C15;
    for &w in words {
        h ^= w;
        h = h.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = h;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        h = z ^ (z >> 31);
    }
    h
}

/// The random generator for one `(seed, epoch, step, purpose)`.
pub fn stream_rng(words: &[u64]) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix(words))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_deterministic_and_keras_sized() {
        let a = Split::keras(3670, 0.2, 123).unwrap();
        let b = Split::keras(3670, 0.2, 123).unwrap();
        assert_eq!(a, b);
        // flower_photos: Keras reports 2936 for training and 734 for validation.
        assert_eq!(a.train.len(), 2936);
        assert_eq!(a.val.len(), 734);
        let mut all: Vec<usize> = a.train.iter().chain(&a.val).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..3670).collect::<Vec<_>>());
        let c = Split::keras(3670, 0.2, 124).unwrap();
        assert_ne!(a.val, c.val);
    }

    #[test]
    fn split_rejects_bad_fractions() {
        assert!(matches!(Split::keras(10, 1.0, 1), Err(DataError::BadSplit(_))));
        assert!(matches!(Split::keras(10, -0.1, 1), Err(DataError::BadSplit(_))));
        assert!(Split::keras(1, 0.99, 1).is_ok());
        assert!(matches!(Split::keras(0, 0.2, 1), Err(DataError::NoTraining { .. })));
        assert_eq!(Split::keras(10, 0.0, 1).unwrap().val.len(), 0);
    }

    #[test]
    fn resize_keeps_constant_images_and_range() {
        let img = image::RgbImage::from_pixel(37, 21, image::Rgb([255, 0, 51]));
        let out = resize_bilinear(&img, 9, 13);
        assert_eq!(out.shape(), &[9, 13, 3]);
        assert!(out.index_axis(Axis(2), 0).iter().all(|&v| (v - 1.0).abs() < 1e-6));
        assert!(out.index_axis(Axis(2), 1).iter().all(|&v| v == 0.0));
        assert!(out.index_axis(Axis(2), 2).iter().all(|&v| (v - 0.2).abs() < 1e-6));
    }

    #[test]
    fn streams_differ_by_every_word() {
        assert_ne!(mix(&[1, 2, 3]), mix(&[1, 2, 4]));
        assert_ne!(mix(&[1, 2]), mix(&[2, 1]));
        assert_eq!(mix(&[7, 8]), mix(&[7, 8]));
    }
}
