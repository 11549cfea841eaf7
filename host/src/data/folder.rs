//! A class-folder dataset, laid out as Keras's `image_dataset_from_directory`
//! expects: `root/<class>/.../<image>`, one subfolder per class.
use super::decode::load_image_file;
use super::error::DataError;
use super::source::ImageSource;
use ndarray::Array3;
use std::path::{Path, PathBuf};

/// File extensions Keras accepts (case-insensitive).
pub const IMAGE_EXTENSIONS: [&str; 5] = ["bmp", "gif", "jpeg", "jpg", "png"];

/// Images listed from a class-folder tree. Nothing is decoded when opening:
/// images are decoded lazily by the loader threads, so opening flower_photos
/// (3,670 JPEGs) is instant and decoding overlaps training.
#[derive(Clone, Debug)]
pub struct FolderDataset {
    root: PathBuf,
    class_names: Vec<String>,
    files: Vec<(PathBuf, usize)>,
}

impl FolderDataset {
    /// List `root`: subfolders (sorted by name, hidden ones ignored) are the
    /// classes; image files below each (recursively, sorted) are its examples.
    /// Files at the top level (flower_photos's LICENSE.txt) are ignored.
    pub fn open(root: &Path) -> Result<FolderDataset, DataError> {
        if !root.exists() {
            return Err(DataError::MissingDir(root.to_path_buf()));
        }
        if !root.is_dir() {
            return Err(DataError::NotADir(root.to_path_buf()));
        }
        let io = |source| DataError::Io { path: root.to_path_buf(), source };
        let mut classes: Vec<(String, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(root).map_err(io)? {
            let entry = entry.map_err(io)?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() && !name.starts_with('.') {
                classes.push((name, path));
            }
        }
        // Python's sorted() on str: by code point, which byte order of UTF-8 matches.
        classes.sort();
        match classes.len() {
            0 => return Err(DataError::NoClasses(root.to_path_buf())),
            1 => return Err(DataError::OneClass(root.to_path_buf())),
            _ => {}
        }
        let mut files = Vec::new();
        for (label, (_, dir)) in classes.iter().enumerate() {
            let mut found = Vec::new();
            list_images(dir, &mut found)?;
            if found.is_empty() {
                return Err(DataError::EmptyClass(dir.clone()));
            }
            found.sort();
            files.extend(found.into_iter().map(|p| (p, label)));
        }
        Ok(FolderDataset {
            root: root.to_path_buf(),
            class_names: classes.into_iter().map(|(n, _)| n).collect(),
            files,
        })
    }

    /// The folder this dataset was listed from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Class names, sorted (also available through [`ImageSource`]).
    pub fn class_names(&self) -> &[String] {
        &self.class_names
    }

    /// Every image path with its label, in listing order.
    pub fn files(&self) -> &[(PathBuf, usize)] {
        &self.files
    }
}

/// Append the image files under `dir` (recursively) to `out`.
fn list_images(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    let io = |source| DataError::Io { path: dir.to_path_buf(), source };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_dir() {
            list_images(&path, out)?;
        } else if is_image_name(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// Whether `path` has one of [`IMAGE_EXTENSIONS`].
pub fn is_image_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

impl ImageSource for FolderDataset {
    fn len(&self) -> usize {
        self.files.len()
    }
    fn class_names(&self) -> &[String] {
        &self.class_names
    }
    fn label(&self, index: usize) -> usize {
        self.files[index].1
    }
    fn load(&self, index: usize, h: usize, w: usize) -> Result<Array3<f32>, DataError> {
        load_image_file(&self.files[index].0, h, w)
    }
    fn describe(&self, index: usize) -> String {
        self.files[index].0.display().to_string()
    }
    fn summary(&self) -> String {
        format!("folder {} ({} images, {} classes)", self.root.display(), self.files.len(), self.class_names.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn png(path: &Path, rgb: [u8; 3]) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::RgbImage::from_pixel(6, 4, image::Rgb(rgb)).save(path).unwrap();
    }

    #[test]
    fn classes_are_sorted_and_files_labelled() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        png(&r.join("tulips/b.png"), [0, 0, 255]);
        png(&r.join("daisy/z.png"), [255, 0, 0]);
        png(&r.join("daisy/a.PNG"), [255, 0, 0]);
        png(&r.join("roses/sub/x.png"), [0, 255, 0]);
        fs::write(r.join("LICENSE.txt"), "text").unwrap();
        fs::write(r.join("daisy/notes.txt"), "ignored").unwrap();
        fs::create_dir_all(r.join(".hidden")).unwrap();
        let d = FolderDataset::open(r).unwrap();
        assert_eq!(d.class_names(), ["daisy", "roses", "tulips"]);
        assert_eq!(d.len(), 4);
        let labels: Vec<usize> = (0..d.len()).map(|i| d.label(i)).collect();
        assert_eq!(labels, [0, 0, 1, 2]);
        assert!(d.describe(0).ends_with("a.PNG"));
        let img = d.load(3, 5, 5).unwrap();
        assert_eq!(img.shape(), &[5, 5, 3]);
        assert_eq!(img[[2, 2, 2]], 1.0);
    }

    #[test]
    fn layout_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        let missing = r.join("nope");
        let e = FolderDataset::open(&missing).unwrap_err();
        assert!(e.to_string().contains(&missing.display().to_string()), "{e}");
        assert!(matches!(FolderDataset::open(r), Err(DataError::NoClasses(_))));
        png(&r.join("a/1.png"), [1, 2, 3]);
        assert!(matches!(FolderDataset::open(r), Err(DataError::OneClass(_))));
        fs::create_dir_all(r.join("b")).unwrap();
        let e = FolderDataset::open(r).unwrap_err();
        assert!(matches!(&e, DataError::EmptyClass(p) if p.ends_with("b")), "{e}");
    }

    #[test]
    fn corrupt_image_error_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        png(&r.join("a/1.png"), [1, 2, 3]);
        png(&r.join("b/1.png"), [1, 2, 3]);
        let bad = r.join("b/broken.jpg");
        fs::write(&bad, b"\xFF\xD8\xFF\xE0 definitely not a jpeg").unwrap();
        let d = FolderDataset::open(r).unwrap();
        let i = (0..d.len()).find(|&i| d.describe(i).ends_with("broken.jpg")).unwrap();
        let e = d.load(i, 8, 8).unwrap_err();
        assert!(matches!(e, DataError::BadImage { .. }));
        assert!(e.to_string().contains(&bad.display().to_string()), "{e}");
    }
}
