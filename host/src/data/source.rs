//! The one interface every image source implements.
use ndarray::Array3;

use super::augment::{self, AugParams};
use super::error::DataError;

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
    /// Image `index` as a training image: resized to `h x w`, transformed by
    /// `p`, written into `out` (`h * w * 3` values, a batch's slot). By
    /// default [`ImageSource::load`] then [`augment::apply_into`]; a source
    /// of photos samples the photo once instead
    /// ([`super::resample::resize_augment_into`]).
    fn load_augmented_into(
        &self,
        index: usize,
        h: usize,
        w: usize,
        p: &AugParams,
        out: &mut [f32],
    ) -> Result<(), DataError> {
        let img = self.load(index, h, w)?;
        augment::apply_into(img.view(), p, out);
        Ok(())
    }
    /// A human name of image `index` (its path), for error messages.
    fn describe(&self, index: usize) -> String;
    /// A one-line description of the whole source, recorded in checkpoints.
    fn summary(&self) -> String;
}
