//! The embedded default dataset: procedurally drawn shapes and textures.
//!
//! `host train` with no `--data` must work out of the box, offline, in a few
//! minutes, and still exercise everything a real photo set does (colour,
//! position, scale, rotation, clutter, noise). Each image is a pure function
//! of `(seed, index)`, drawn at whatever size is asked for, so nothing is
//! stored and any input size works; `host dataset export` writes it out as a
//! class-folder tree to test the folder path with real files.
use super::error::DataError;
use super::rng::{mix, tag};
use super::source::ImageSource;
use ndarray::Array3;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;

/// The classes, sorted (as folder names would be).
pub const CLASSES: [&str; 6] = ["checker", "circle", "cross", "square", "stripes", "triangle"];
/// Images per class of the default embedded set.
pub const DEFAULT_PER_CLASS: usize = 400;
/// Seed of the default embedded set's images.
pub const DEFAULT_SEED: u64 = 2024;

/// The embedded dataset: `per_class` images of each of [`CLASSES`].
#[derive(Clone, Debug)]
pub struct SyntheticDataset {
    per_class: usize,
    seed: u64,
    names: Vec<String>,
}

impl SyntheticDataset {
    /// `per_class` images of each class, drawn from `seed`.
    pub fn new(per_class: usize, seed: u64) -> Self {
        SyntheticDataset { per_class, seed, names: CLASSES.iter().map(|s| s.to_string()).collect() }
    }

    /// Write every image as `dir/<class>/<class>_NNNN.png` at `size x size`,
    /// a tree that [`super::folder::FolderDataset`] reads back with the same labels.
    pub fn export(&self, dir: &Path, size: u32) -> Result<usize, DataError> {
        // Each image is rendered as f32 and then as 8-bit RGB: 15 bytes a pixel.
        let pixels = (size as u64) * (size as u64);
        crate::budget::check_elements(&format!("rendering {size}x{size} images"), pixels, 15)?;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| DataError::Io { path, source }
        };
        for name in &self.names {
            let d = dir.join(name);
            std::fs::create_dir_all(&d).map_err(io(&d))?;
        }
        for i in 0..self.len() {
            let img = self.render(i, size as usize, size as usize);
            let rgb = image::RgbImage::from_fn(size, size, |x, y| {
                let p = |c| (img[[y as usize, x as usize, c]] * 255.0).round().clamp(0.0, 255.0) as u8;
                image::Rgb([p(0), p(1), p(2)])
            });
            let class = &self.names[self.label(i)];
            let path = dir.join(class).join(format!("{class}_{:04}.png", i / CLASSES.len()));
            rgb.save(&path).map_err(|source| DataError::Write { path, source })?;
        }
        Ok(self.len())
    }

    /// Draw image `index` at `h x w`.
    pub fn render(&self, index: usize, h: usize, w: usize) -> Array3<f32> {
        let class = index % CLASSES.len();
        let mut rng = ChaCha8Rng::seed_from_u64(mix(&[self.seed, tag::SYNTHETIC, index as u64]));
        let mut out = Array3::<f32>::zeros((h, w, 3));

        // Background: a gradient between two random colours along a random direction.
        let bg0 = random_colour(&mut rng);
        let bg1 = random_colour(&mut rng);
        let gdir = rng.random_range(0.0..std::f32::consts::TAU);
        let (gc, gs) = (gdir.cos(), gdir.sin());
        let bg_mean = mean3(&bg0, &bg1);
        // Foreground colours contrast with the background so the shape is visible.
        let fg = loop {
            let c = random_colour(&mut rng);
            if dist(&c, &bg_mean) > 0.45 {
                break c;
            }
        };
        let fg2 = loop {
            let c = random_colour(&mut rng);
            if dist(&c, &fg) > 0.45 {
                break c;
            }
        };
        // Shape frame: centre, size (radius as a fraction of the image), rotation.
        let s = rng.random_range(0.20..0.36f32);
        let cx = rng.random_range(s + 0.02..1.0 - s - 0.02);
        let cy = rng.random_range(s + 0.02..1.0 - s - 0.02);
        let rot = rng.random_range(0.0..std::f32::consts::TAU);
        let (rc, rs) = (rot.cos(), rot.sin());
        let period = rng.random_range(0.45..0.7f32);
        // Clutter: a few faint small blobs anywhere, not part of the class.
        let blobs: Vec<(f32, f32, f32, [f32; 3])> = (0..rng.random_range(0..4))
            .map(|_| {
                (
                    rng.random_range(0.0..1.0),
                    rng.random_range(0.0..1.0),
                    rng.random_range(0.02..0.06),
                    random_colour(&mut rng),
                )
            })
            .collect();
        let noise = rng.random_range(0.01..0.06f32);

        // 2x2 supersampling gives smooth edges at any size.
        const SUB: [f32; 2] = [0.25, 0.75];
        for y in 0..h {
            for x in 0..w {
                let mut acc = [0f32; 3];
                for sy in SUB {
                    for sx in SUB {
                        let px = (x as f32 + sx) / w as f32;
                        let py = (y as f32 + sy) / h as f32;
                        let t = ((px - 0.5) * gc + (py - 0.5) * gs + 0.71) / 1.42;
                        let mut c = lerp3(&bg0, &bg1, t.clamp(0.0, 1.0));
                        for &(bx, by, br, bc) in &blobs {
                            if (px - bx).powi(2) + (py - by).powi(2) < br * br {
                                c = lerp3(&c, &bc, 0.5);
                            }
                        }
                        // Shape-local coordinates: unit radius, rotated.
                        let (dx, dy) = ((px - cx) / s, (py - cy) / s);
                        let u = dx * rc + dy * rs;
                        let v = -dx * rs + dy * rc;
                        if let Some(which) = shape_at(class, u, v, period) {
                            c = if which { fg } else { fg2 };
                        }
                        for k in 0..3 {
                            acc[k] += c[k] * 0.25;
                        }
                    }
                }
                for (k, a) in acc.iter().enumerate() {
                    let n: f32 = rng.random_range(-1.0..1.0f32) * noise;
                    out[[y, x, k]] = (a + n).clamp(0.0, 1.0);
                }
            }
        }
        out
    }
}

/// Whether shape-local point `(u, v)` is inside the class's figure, and if so
/// which of the two foreground colours it takes (`true`: the first).
fn shape_at(class: usize, u: f32, v: f32, period: f32) -> Option<bool> {
    let r2 = u * u + v * v;
    match CLASSES[class] {
        // Textures fill a disk, so the outline alone does not tell them from
        // "circle": the network has to look at the pattern.
        "checker" => (r2 <= 1.0).then(|| {
            let a = (u / period).floor() as i32 + (v / period).floor() as i32;
            a.rem_euclid(2) == 0
        }),
        "stripes" => (r2 <= 1.0).then(|| ((u / period).floor() as i32).rem_euclid(2) == 0),
        "circle" => (r2 <= 1.0).then_some(true),
        "square" => (u.abs() <= 0.8 && v.abs() <= 0.8).then_some(true),
        "cross" => ((u.abs() <= 1.0 && v.abs() <= 0.3) || (u.abs() <= 0.3 && v.abs() <= 1.0)).then_some(true),
        "triangle" => {
            // Equilateral, inscribed in the unit circle: three half-planes.
            let inside = (0..3).all(|k| {
                let a = std::f32::consts::FRAC_PI_2 + k as f32 * std::f32::consts::TAU / 3.0;
                u * a.cos() + v * a.sin() <= 0.5
            });
            inside.then_some(true)
        }
        _ => None,
    }
}

fn random_colour(rng: &mut ChaCha8Rng) -> [f32; 3] {
    [rng.random_range(0.0..1.0), rng.random_range(0.0..1.0), rng.random_range(0.0..1.0)]
}

fn lerp3(a: &[f32; 3], b: &[f32; 3], t: f32) -> [f32; 3] {
    [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t]
}

fn mean3(a: &[f32; 3], b: &[f32; 3]) -> [f32; 3] {
    lerp3(a, b, 0.5)
}

fn dist(a: &[f32; 3], b: &[f32; 3]) -> f32 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

impl ImageSource for SyntheticDataset {
    fn len(&self) -> usize {
        self.per_class * CLASSES.len()
    }
    fn class_names(&self) -> &[String] {
        &self.names
    }
    fn label(&self, index: usize) -> usize {
        index % CLASSES.len()
    }
    fn load(&self, index: usize, h: usize, w: usize) -> Result<Array3<f32>, DataError> {
        Ok(self.render(index, h, w))
    }
    fn describe(&self, index: usize) -> String {
        format!("embedded image #{index} ({})", CLASSES[self.label(index)])
    }
    fn summary(&self) -> String {
        format!("embedded synthetic shapes ({} per class, seed {})", self.per_class, self.seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{FolderDataset, Split};

    #[test]
    fn classes_are_balanced_and_sorted() {
        let d = SyntheticDataset::new(7, 1);
        assert_eq!(d.len(), 42);
        let mut counts = [0usize; CLASSES.len()];
        for i in 0..d.len() {
            counts[d.label(i)] += 1;
        }
        assert!(counts.iter().all(|&c| c == 7));
        let mut sorted = CLASSES.to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, CLASSES);
        // The split keeps every class represented in both halves.
        let split = Split::keras(SyntheticDataset::new(100, 1).len(), 0.2, 123).unwrap();
        for c in 0..CLASSES.len() {
            let n = split.val.iter().filter(|&&i| i % CLASSES.len() == c).count();
            assert!((10..=30).contains(&n), "class {c}: {n} of 120 validation images");
        }
    }

    #[test]
    fn images_are_deterministic_in_range_and_distinct() {
        let d = SyntheticDataset::new(3, 5);
        let a = d.render(4, 33, 41);
        assert_eq!(a.shape(), &[33, 41, 3]);
        assert_eq!(a, d.render(4, 33, 41));
        assert!(a.iter().all(|v| (0.0..=1.0).contains(v)));
        assert_ne!(a, d.render(5, 33, 41));
        assert_ne!(a, SyntheticDataset::new(3, 6).render(4, 33, 41));
    }

    #[test]
    fn export_reads_back_as_a_folder_dataset() {
        let dir = tempfile::tempdir().unwrap();
        let d = SyntheticDataset::new(2, 9);
        assert_eq!(d.export(dir.path(), 24).unwrap(), 12);
        let f = FolderDataset::open(dir.path()).unwrap();
        assert_eq!(f.class_names(), d.class_names());
        assert_eq!(f.len(), 12);
        let img = f.load(0, 24, 24).unwrap();
        let want = d.render(0, 24, 24);
        let max = img.iter().zip(want.iter()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(max <= 0.5 / 255.0 + 1e-6, "{max}");
    }
}
