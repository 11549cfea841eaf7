//! The dataset API the trainer and the quantizer share, through the public
//! library: folder listing, Keras-like split, batches, calibration images.
use host::data::augment::{apply, AugParams, AugmentConfig};
use host::data::{Dataset, FolderDataset, ImageSource, OpenOptions, Split, SyntheticDataset};

fn opts(val_split: f32, seed: u64) -> OpenOptions {
    OpenOptions { val_split, seed, per_class: 5, ..OpenOptions::default() }
}

#[test]
fn exported_folder_opens_with_sorted_classes_and_a_stable_split() {
    let tmp = tempfile::tempdir().unwrap();
    SyntheticDataset::new(5, 77).export(tmp.path(), 20).unwrap();
    // Class folders named so that creation order, case and length do not decide the order.
    std::fs::rename(tmp.path().join("circle"), tmp.path().join("Zebra")).unwrap();
    let a = Dataset::open(Some(tmp.path()), &opts(0.2, 123)).unwrap();
    assert_eq!(a.class_names(), ["Zebra", "checker", "cross", "square", "stripes", "triangle"]);
    assert_eq!((a.split.train.len(), a.split.val.len()), (24, 6));
    let b = Dataset::open(Some(tmp.path()), &opts(0.2, 123)).unwrap();
    assert_eq!(a.split, b.split);
    let c = Dataset::open(Some(tmp.path()), &opts(0.2, 7)).unwrap();
    assert_ne!(a.split, c.split);
}

#[test]
fn keras_proportions_for_common_sizes() {
    for (n, split, val) in [(3670, 0.2, 734), (100, 0.2, 20), (7, 0.2, 1), (4, 0.2, 0), (10, 0.5, 5)] {
        let s = Split::keras(n, split, 1).unwrap();
        assert_eq!(s.val.len(), val, "{n} images at {split}");
        assert_eq!(s.train.len() + s.val.len(), n);
    }
}

#[test]
fn validation_batches_and_calibration_images_for_the_quantizer() {
    let d = Dataset::open(None, &opts(0.2, 123)).unwrap();
    assert_eq!(d.source.len(), 30);
    let batches: Vec<_> = d.validation_batches(24, 24, 4, false).map(|b| b.unwrap()).collect();
    assert_eq!(batches.iter().map(|b| b.labels.len()).collect::<Vec<_>>(), [4, 2]);
    assert_eq!(batches[0].x.shape(), &[4, 24, 24, 3]);
    assert!(batches[0].x.iter().all(|v| (0.0..=1.0).contains(v)));
    // Same order every time, no augmentation.
    let again: Vec<_> = d.validation_batches(24, 24, 4, false).map(|b| b.unwrap()).collect();
    assert_eq!(batches[1].x, again[1].x);
    assert_eq!(batches[0].indices, d.split.val[..4]);
    let cal = d.calibration_images(5, 24, 24, 9).unwrap();
    assert_eq!(cal.shape(), &[5, 24, 24, 3]);
    assert_eq!(cal, d.calibration_images(5, 24, 24, 9).unwrap());
}

#[test]
fn skip_bad_counts_unreadable_images() {
    let tmp = tempfile::tempdir().unwrap();
    SyntheticDataset::new(2, 1).export(tmp.path(), 16).unwrap();
    for (class, name) in [("cross", "bad1.jpg"), ("square", "bad2.gif"), ("square", "bad3.bmp")] {
        std::fs::write(tmp.path().join(class).join(name), b"garbage").unwrap();
    }
    let d = Dataset::open(Some(tmp.path()), &opts(0.0, 1)).unwrap();
    assert_eq!(d.source.len(), 15);
    let plans = host::data::BatchPlan::sequential(&d.split.train, 4);
    let cfg = host::data::LoaderConfig { h: 16, w: 16, augment: None, skip_bad: true, prefetch: 1 };
    let batches: Vec<_> =
        host::data::Prefetcher::spawn(d.source.clone(), plans.clone(), cfg.clone()).map(|b| b.unwrap()).collect();
    let skipped: Vec<&String> = batches.iter().flat_map(|b| &b.skipped).collect();
    assert_eq!(skipped.len(), 3);
    assert!(skipped.iter().any(|s| s.contains("bad2.gif")));
    assert_eq!(batches.iter().map(|b| b.labels.len()).sum::<usize>(), 12);
    // The images kept are in their slots, the gaps of the skipped ones closed.
    for b in &batches {
        assert_eq!(b.x.dim().0, b.indices.len());
        for (k, &i) in b.indices.iter().enumerate() {
            assert_eq!(b.x.index_axis(ndarray::Axis(0), k), d.source.load(i, 16, 16).unwrap(), "image {i}");
        }
    }
    // Without --skip-bad the first bad file is an error naming it.
    let strict = host::data::LoaderConfig { skip_bad: false, ..cfg };
    let err = host::data::Prefetcher::spawn(d.source.clone(), plans, strict).find_map(|b| b.err()).unwrap();
    assert!(err.to_string().contains("bad"), "{err}");
}

#[test]
fn augmentation_is_deterministic_and_flip_is_an_involution() {
    let src = SyntheticDataset::new(1, 3);
    let img = src.load(2, 32, 32).unwrap();
    let flip = AugParams { flip: true, angle: 0.0, zoom: 1.0 };
    assert_eq!(apply(apply(img.view(), &flip).view(), &flip), img);
    let p = AugmentConfig::default().sample(&mut host::data::stream_rng(&[1, 2, 3]));
    let q = AugmentConfig::default().sample(&mut host::data::stream_rng(&[1, 2, 3]));
    assert_eq!(p, q);
    assert_eq!(apply(img.view(), &p), apply(img.view(), &q));
    assert_eq!(apply(img.view(), &p).dim(), (32, 32, 3));
}

#[test]
fn folder_errors_name_the_folder() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("roses")).unwrap();
    std::fs::create_dir_all(tmp.path().join("daisy")).unwrap();
    image::RgbImage::new(4, 4).save(tmp.path().join("daisy/a.png")).unwrap();
    let e = FolderDataset::open(tmp.path()).unwrap_err().to_string();
    assert!(e.contains("roses") && e.contains("no images"), "{e}");
}
