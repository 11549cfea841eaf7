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
    #[error(
        "{} links to {}, outside its class folder {}: its images would be labelled {:?}; \
         remove the link or copy the images into the class folder",
        link.display(), target.display(), class.display(),
        class.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    )]
    LinkOutsideClass { link: PathBuf, target: PathBuf, class: PathBuf },
    #[error("{} is nested more than {max} folders deep inside its class folder", dir.display())]
    TooDeep { dir: PathBuf, max: usize },
    #[error("class folder {} has a control character in its name ({name:?}): rename it", dir.display())]
    BadClassName { dir: PathBuf, name: String },
    #[error("the model's input is {0}, not an RGB image (HxWx3): images cannot be fed to it")]
    NotRgbInput(shared::spec::Shape),
    #[error("image {} is truncated: the JPEG stream has no end-of-image marker", .0.display())]
    Truncated(PathBuf),
    #[error(
        "image {} is {w}x{h} pixels: decoding it needs {}, over its share ({}) of the memory limit \
         (raise it with --max-memory or HOST_MAX_MEMORY)",
        path.display(), crate::budget::human(*bytes), crate::budget::human(*limit)
    )]
    TooLarge { path: PathBuf, w: u32, h: u32, bytes: u64, limit: u64 },
    #[error(
        "image {} is a {} file, over its share ({}) of the memory limit \
         (raise it with --max-memory or HOST_MAX_MEMORY)",
        path.display(), crate::budget::human(*bytes), crate::budget::human(*limit)
    )]
    FileTooLarge { path: PathBuf, bytes: u64, limit: u64 },
    #[error("cannot read image {}: {source}", path.display())]
    BadImage { path: PathBuf, source: image::ImageError },
    #[error("cannot read {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: image::ImageError },
    #[error("--val-split {0} must be in [0, 1)")]
    BadSplit(f32),
    #[error("{total} images with --val-split {split} leave no training images")]
    NoTraining { total: usize, split: f32 },
    #[error("the data's classes ({got}) are not the model's ({want}); give a class folder per model class, named as they are")]
    ClassMismatch { got: String, want: String },
    #[error("all {count} images were unreadable and skipped: nothing to evaluate (first: {first})")]
    AllUnreadable { count: usize, first: String },
    #[error(transparent)]
    Budget(#[from] crate::budget::BudgetError),
    #[error("every image of a batch was unreadable (first: {0})")]
    EmptyBatch(String),
}

impl DataError {
    /// Whether this is one image that could not be read (what `--skip-bad` skips).
    pub fn is_unreadable_image(&self) -> bool {
        matches!(
            self,
            DataError::BadImage { .. }
                | DataError::Truncated(_)
                | DataError::TooLarge { .. }
                | DataError::FileTooLarge { .. }
        )
    }
}
