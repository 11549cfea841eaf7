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
pub mod decode;
pub mod error;
pub mod folder;
pub mod loader;
pub mod resample;
pub mod rng;
pub mod source;
pub mod synthetic;

use ndarray::{Array3, Array4};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use std::sync::Arc;

pub use decode::{load_image_file, resize_bilinear, stack};
pub use error::DataError;
pub use folder::FolderDataset;
pub use loader::{Batch, BatchPlan, LoaderConfig, Prefetcher};
pub use rng::{mix, stream_rng, tag};
pub use source::ImageSource;
pub use synthetic::SyntheticDataset;

/// The height and width images are resized to for a model whose input is
/// `input`; an input that is not `H x W x 3` (a stack file or an imported
/// model with one channel, or flat features) is an error naming its shape,
/// where feeding it RGB images would fail deep inside the network.
pub fn image_hw(input: shared::spec::Shape) -> Result<(usize, usize), DataError> {
    match input {
        shared::spec::Shape::Image { c: 3, .. } => Ok(input.hw()),
        other => Err(DataError::NotRgbInput(other)),
    }
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
            None => {
                // --per-class is a size an option declares: the split and each
                // epoch's shuffled order hold an index per image.
                let what = format!("--per-class {}", opts.per_class);
                let n = (opts.per_class as u64).checked_mul(synthetic::CLASSES.len() as u64);
                let n = n.ok_or_else(|| crate::budget::BudgetError::Overflow { what: what.clone() })?;
                crate::budget::check_elements(&format!("{what} ({n} images)"), n, 24)?;
                Arc::new(SyntheticDataset::new(opts.per_class, opts.synthetic_seed))
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Axis;

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
