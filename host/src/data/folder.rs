//! A class-folder dataset, laid out as Keras's `image_dataset_from_directory`
//! expects: `root/<class>/.../<image>`, one subfolder per class.
use super::augment::AugParams;
use super::decode::{decode_image_file, load_image_file, resize_bilinear_into};
use super::error::DataError;
use super::resample::{resize_augment_into, Rgb8};
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
                // A class name is a label printed in tables and written one per
                // line in checkpoints and model files: no control characters.
                if name.chars().any(char::is_control) {
                    return Err(DataError::BadClassName { dir: path, name });
                }
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
        let real_root = canonical(root)?;
        for (label, (_, dir)) in classes.iter().enumerate() {
            let mut found = Vec::new();
            ClassWalk::new(dir, &real_root)?.list(dir, 0, &mut found)?;
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

/// How deep folders may nest inside a class folder.
pub const MAX_DEPTH: usize = 64;

/// The real (canonical) path of `path`.
fn canonical(path: &Path) -> Result<PathBuf, DataError> {
    std::fs::canonicalize(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })
}

/// One class folder's walk. Symbolic links are followed, each real folder is
/// listed once (a second link to a folder already listed, such as `ln -s .
/// loop`, is skipped: its images are there once already), and a link to a
/// folder that would put images under the wrong label (another class, the
/// dataset's root, or any folder holding this class folder) is an error
/// naming the link, since silently skipping it would drop images the user
/// meant to train on. Links to folders outside the dataset are followed: a
/// class may be assembled from folders elsewhere.
struct ClassWalk<'a> {
    class_dir: &'a Path,
    real_class: PathBuf,
    real_root: &'a Path,
    seen: std::collections::HashSet<PathBuf>,
}

impl<'a> ClassWalk<'a> {
    fn new(class_dir: &'a Path, real_root: &'a Path) -> Result<Self, DataError> {
        let real_class = canonical(class_dir)?;
        // A class folder that is a link to the dataset's root (or above it)
        // would hold every class.
        if real_root.starts_with(&real_class) {
            return Err(DataError::LinkOutsideClass {
                link: class_dir.to_path_buf(),
                target: real_class,
                class: class_dir.to_path_buf(),
            });
        }
        let mut seen = std::collections::HashSet::new();
        seen.insert(real_class.clone());
        Ok(ClassWalk { class_dir, real_class, real_root, seen })
    }

    /// Append the image files under `dir` (recursively) to `out`.
    fn list(&mut self, dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
        if depth > MAX_DEPTH {
            return Err(DataError::TooDeep { dir: dir.to_path_buf(), max: MAX_DEPTH });
        }
        let io = |source| DataError::Io { path: dir.to_path_buf(), source };
        let mut entries: Vec<_> = std::fs::read_dir(dir).map_err(io)?.collect::<Result<_, _>>().map_err(io)?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            if !path.is_dir() {
                if is_image_name(&path) {
                    out.push(path);
                }
                continue;
            }
            let is_link = entry.file_type().map_err(io)?.is_symlink();
            let real = if is_link { canonical(&path)? } else { path.clone() };
            if is_link {
                let inside_class = real.starts_with(&self.real_class);
                // Another class, the root, or an ancestor of this class folder.
                if !inside_class && (real.starts_with(self.real_root) || self.real_class.starts_with(&real)) {
                    return Err(DataError::LinkOutsideClass {
                        link: path,
                        target: real,
                        class: self.class_dir.to_path_buf(),
                    });
                }
            }
            let key = if is_link { real } else { canonical(&path)? };
            if !self.seen.insert(key) {
                continue; // this real folder is listed already (a link loop or a second link)
            }
            self.list(&path, depth + 1, out)?;
        }
        Ok(())
    }
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
    fn load_augmented_into(
        &self,
        index: usize,
        h: usize,
        w: usize,
        p: &AugParams,
        out: &mut [f32],
    ) -> Result<(), DataError> {
        let photo = decode_image_file(&self.files[index].0)?;
        if *p == AugParams::IDENTITY {
            resize_bilinear_into(&photo, h, w, out);
        } else {
            resize_augment_into(&Rgb8::new(photo), p, h, w, out);
        }
        Ok(())
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

    #[cfg(unix)]
    #[test]
    fn symlink_loops_list_each_folder_once() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        png(&r.join("a/1.png"), [1, 2, 3]);
        png(&r.join("a/sub/2.png"), [1, 2, 3]);
        png(&r.join("b/1.png"), [1, 2, 3]);
        std::os::unix::fs::symlink(".", r.join("a/s1")).unwrap();
        std::os::unix::fs::symlink(".", r.join("a/s2")).unwrap();
        std::os::unix::fs::symlink("..", r.join("a/sub/up")).unwrap();
        std::os::unix::fs::symlink("sub", r.join("a/again")).unwrap();
        let d = FolderDataset::open(r).unwrap();
        let names: Vec<String> = (0..d.len()).map(|i| d.describe(i)).collect();
        assert_eq!(d.len(), 3, "{names:?}");
        assert_eq!((0..d.len()).filter(|&i| d.label(i) == 0).count(), 2, "{names:?}");
    }

    #[cfg(unix)]
    #[test]
    fn links_out_of_the_class_are_named_errors() {
        for target in ["..", "../b", "../.."] {
            let dir = tempfile::tempdir().unwrap();
            let r = dir.path().join("data");
            png(&r.join("a/1.png"), [1, 2, 3]);
            png(&r.join("b/1.png"), [1, 2, 3]);
            let link = r.join("a/escape");
            std::os::unix::fs::symlink(target, &link).unwrap();
            let e = FolderDataset::open(&r).unwrap_err();
            assert!(matches!(e, DataError::LinkOutsideClass { .. }), "{target}: {e}");
            assert!(e.to_string().contains(&link.display().to_string()), "{e}");
        }
        // A link to a folder outside the dataset is followed.
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path().join("data");
        png(&r.join("a/1.png"), [1, 2, 3]);
        png(&r.join("b/1.png"), [1, 2, 3]);
        png(&dir.path().join("pool/x.png"), [1, 2, 3]);
        std::os::unix::fs::symlink(dir.path().join("pool"), r.join("b/pool")).unwrap();
        let d = FolderDataset::open(&r).unwrap();
        assert_eq!(d.len(), 3);
        // A class folder that is a link to the root.
        std::os::unix::fs::symlink(".", r.join("c")).unwrap();
        assert!(matches!(FolderDataset::open(&r), Err(DataError::LinkOutsideClass { .. })));
    }

    #[test]
    fn control_characters_in_class_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        png(&r.join("a/1.png"), [1, 2, 3]);
        png(&r.join("b\nc/1.png"), [1, 2, 3]);
        let e = FolderDataset::open(r).unwrap_err();
        assert!(matches!(e, DataError::BadClassName { .. }), "{e}");
        assert!(e.to_string().contains("b\\nc"), "{e}");
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
