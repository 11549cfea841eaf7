//! `host train --data` on a folder of JPEG photos against the bare training
//! step, in one sitting: does decoding and augmenting the next batch overlap
//! the step, or does the step wait for it?
//!
//! `cargo bench --bench jpeg_train` writes a folder of 320x240 JPEGs (5
//! classes, 96 images each, quality 90: smooth colour fields, shapes and
//! grain, so that the decoder sees photo-like content rather than flat or
//! random blocks), then runs, `JPEG_TRAIN_ROUNDS` times (default 3), the
//! step, `train --data` and the step again, and compares `train --data` with
//! the mean of the two steps around it:
//! - **step**: the full AlexNet at 227x227 and 5 classes, batch 32, Adam,
//!   forward + backward + update on fixed tensors (what the `train_step`
//!   bench measures, at this model's class count), images/s over 12 steps
//!   after 2 warm-up steps;
//! - **train --data**: `host::train::train` on the folder, as `host train
//!   --data DIR --batch-size 32 --epochs 3` runs it (20 % validation,
//!   flip/rotation/zoom augmentation, 12 steps an epoch), the images/s of
//!   epochs 2 and 3 as the command reports them (each its training pass,
//!   from the first batch's loading to the last step), averaged over the
//!   steps.
//!
//! `HOST_CONV` picks the convolutions' arithmetic for both, as `--conv`.
//! `cargo bench --bench jpeg_train -- folder DIR` only writes the folder, to
//! run `host train --data DIR --conv auto` on it by hand.
//!
//! `cargo bench --bench jpeg_train -- loader` measures the loader alone
//! instead: the CPU time per image of a training batch (decode, resize and
//! augment) and of a validation batch (decode and resize), on one thread,
//! fastest of `JPEG_TRAIN_ROUNDS` passes over the folder.

use host::data::augment::AugmentConfig;
use host::data::loader::load_batch;
use host::data::{BatchPlan, FolderDataset, LoaderConfig};
use host::nn::{softmax_cross_entropy, ChaCha8Rng, Mode, Network};
use host::optim::{Optimizer, OptimizerKind};
use host::train::{train, TrainConfig};
use image::codecs::jpeg::JpegEncoder;
use image::{ExtendedColorType, ImageEncoder};
use ndarray::Array4;
use rand::{Rng, SeedableRng};
use shared::spec::alexnet;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

const CLASSES: usize = 5;
const PER_CLASS: usize = 96;
const BATCH: usize = 32;
const W: u32 = 320;
const H: u32 = 240;

/// One photo-like RGB image: a two-colour gradient in the class's hues,
/// a few soft-edged discs, and grain.
fn photo(class: usize, rng: &mut ChaCha8Rng) -> Vec<u8> {
    let base = [(class * 53) % 256, (class * 97 + 60) % 256, (class * 31 + 120) % 256];
    let top: Vec<f32> = base.iter().map(|&b| (b as f32 + rng.random_range(-30.0..30.0)).clamp(0.0, 255.0)).collect();
    let bottom: Vec<f32> = top.iter().map(|&t| (255.0 - t) * 0.5 + rng.random_range(0.0..40.0)).collect();
    let discs: Vec<(f32, f32, f32, [f32; 3])> = (0..rng.random_range(2..6))
        .map(|_| {
            (
                rng.random_range(0.0..W as f32),
                rng.random_range(0.0..H as f32),
                rng.random_range(15.0..80.0),
                [rng.random_range(0.0..255.0), rng.random_range(0.0..255.0), rng.random_range(0.0..255.0)],
            )
        })
        .collect();
    let mut px = Vec::with_capacity((W * H * 3) as usize);
    for y in 0..H {
        let t = y as f32 / H as f32;
        for x in 0..W {
            let mut c: [f32; 3] = [0, 1, 2].map(|i| top[i] * (1.0 - t) + bottom[i] * t);
            for &(cx, cy, r, col) in &discs {
                let d = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt();
                let a = ((r - d) / 4.0).clamp(0.0, 1.0);
                c = [0, 1, 2].map(|i| c[i] * (1.0 - a) + col[i] * a);
            }
            let grain: f32 = rng.random_range(-6.0..6.0);
            px.extend(c.map(|v| (v + grain).clamp(0.0, 255.0) as u8));
        }
    }
    px
}

/// The class folders under `dir`.
fn make_folder(dir: &Path) -> std::io::Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(320);
    for class in 0..CLASSES {
        let sub = dir.join(format!("class{class}"));
        std::fs::create_dir_all(&sub)?;
        for i in 0..PER_CLASS {
            let mut bytes = Vec::new();
            JpegEncoder::new_with_quality(&mut bytes, 90)
                .write_image(&photo(class, &mut rng), W, H, ExtendedColorType::Rgb8)
                .map_err(std::io::Error::other)?;
            std::fs::write(sub.join(format!("{i:03}.jpg")), bytes)?;
        }
    }
    Ok(())
}

/// Images/s of the bare step: 2 warm-up steps, then 12 timed.
fn bare_step() -> f64 {
    let spec = alexnet(227, CLASSES as u32).expect("alexnet");
    let mut net = Network::new(&spec, 0);
    let mut opt = Optimizer::new(OptimizerKind::adam());
    let x =
        Array4::from_shape_fn((BATCH, 227, 227, 3), |(n, y, x, c)| ((n * 7 + y * 3 + x * 5 + c) % 256) as f32 / 255.0);
    let labels: Vec<usize> = (0..BATCH).map(|i| i % CLASSES).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut step = || {
        let logits = net.forward(x.view(), Mode::Train(&mut rng));
        let (_, g, _) = softmax_cross_entropy(logits.view(), &labels);
        net.backward(g.view());
        opt.step(&mut net);
    };
    step();
    step();
    let t = Instant::now();
    for _ in 0..12 {
        step();
    }
    (12 * BATCH) as f64 / t.elapsed().as_secs_f64()
}

/// Images/s of `host train --data dir` over its second and third epochs.
fn train_data(dir: &Path, out: PathBuf) -> f64 {
    let mut cfg = TrainConfig::defaults(Some(dir.to_path_buf()));
    cfg.batch_size = BATCH;
    cfg.epochs = 3;
    cfg.progress = false;
    cfg.out = out;
    let outcome = train(&cfg, &AtomicBool::new(false)).expect("train --data");
    let later = &outcome.history[1..];
    let images: f64 = later.iter().map(|r| r.images_per_sec * r.seconds).sum();
    images / later.iter().map(|r| r.seconds).sum::<f64>()
}

/// Milliseconds of one thread's time per image that the loader spends on
/// `plans`, fastest of `rounds` passes.
fn loader_ms(source: &FolderDataset, plans: &[BatchPlan], cfg: &LoaderConfig, rounds: usize) -> f64 {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("a one-thread pool");
    let images: usize = plans.iter().map(|p| p.indices.len()).sum();
    (0..rounds.max(1))
        .map(|_| {
            let t = Instant::now();
            for plan in plans {
                pool.install(|| load_batch(source, plan, cfg)).expect("loading a batch");
            }
            t.elapsed().as_secs_f64() * 1e3 / images as f64
        })
        .fold(f64::INFINITY, f64::min)
}

/// The loader alone: training batches (augmented) and validation batches.
fn loader_only(photos: &Path, rounds: usize) {
    let source = FolderDataset::open(photos).expect("the JPEG folder");
    let all: Vec<usize> = (0..source.files().len()).collect();
    let cfg = |augment| LoaderConfig { h: 227, w: 227, augment, skip_bad: false, prefetch: 1 };
    let augmented =
        loader_ms(&source, &BatchPlan::epoch(&all, BATCH, 123, 0), &cfg(Some(AugmentConfig::default())), rounds);
    let plain = loader_ms(&source, &BatchPlan::sequential(&all, BATCH), &cfg(None), rounds);
    println!("loader, one thread, ms per image: training (augmented) {augmented:.3}, validation {plain:.3}");
}

fn main() {
    // `cargo bench` passes `--bench`; a test run (`cargo test --benches`)
    // passes nothing and should not spend minutes here.
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    // `-- folder DIR`: only write the folder, for `host train --data DIR`.
    if let Some(at) = args.iter().position(|a| a == "folder") {
        let dir = PathBuf::from(args.get(at + 1).expect("folder DIR: where to write the JPEGs"));
        make_folder(&dir).expect("writing the JPEG folder");
        println!("{} JPEGs of {W}x{H} in {}", CLASSES * PER_CLASS, dir.display());
        return;
    }
    host::nn::conv::ConvAlgo::set_from_env();
    let rounds: usize = std::env::var("JPEG_TRAIN_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let dir = std::env::temp_dir().join(format!("jpeg-train-{}", std::process::id()));
    let photos = dir.join("photos");
    make_folder(&photos).expect("writing the JPEG folder");
    println!("{} JPEGs of {W}x{H} in {}, batch {BATCH}", CLASSES * PER_CLASS, photos.display());
    if args.iter().any(|a| a == "loader") {
        loader_only(&photos, rounds);
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    for round in 1..=rounds {
        // The step before and after: a neighbour that slows the machine for
        // part of the round moves both sides.
        let before = bare_step();
        let data = train_data(&photos, dir.join(format!("run{round}")));
        let after = bare_step();
        let step = (before + after) / 2.0;
        println!(
            "round {round}: step {before:.2} and {after:.2} img/s, train --data {data:.2} img/s, \
             train --data / step {:.3}",
            data / step
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
