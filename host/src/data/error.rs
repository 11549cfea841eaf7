//! What can go wrong reading data, each variant naming the file.
use std::path::PathBuf;

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
