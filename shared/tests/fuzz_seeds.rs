//! The checked-in seed corpus of the `parse` fuzz target (`fuzz/seeds/parse/`)
//! is what `suite::fuzz_seeds` generates, and every seed is a valid, canonical
//! model file that the fuzz target's body accepts.
//!
//! After changing the generator or the format:
//! `UPDATE_FUZZ_SEEDS=1 cargo test -p shared --test fuzz_seeds`.

#[path = "../../fuzz/src/parse.rs"]
mod fuzz_body;

use std::path::PathBuf;

use shared::format::{self, AlignedBytes};
use shared::spec::LayerKind;

fn seeds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(suite::FUZZ_SEEDS_DIR)
}

#[test]
fn the_checked_in_seeds_are_current() {
    let dir = seeds_dir();
    let seeds = suite::fuzz_seeds();
    if std::env::var_os("UPDATE_FUZZ_SEEDS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in &seeds {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_FUZZ_SEEDS=1 writes it)", dir.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    on_disk.sort();
    let mut names: Vec<String> = seeds.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    assert_eq!(on_disk, names, "stale files in {} (UPDATE_FUZZ_SEEDS=1 rewrites it)", dir.display());
    for (name, bytes) in &seeds {
        let file = std::fs::read(dir.join(name)).unwrap();
        assert!(file == *bytes, "{name} is stale: UPDATE_FUZZ_SEEDS=1 cargo test -p shared --test fuzz_seeds");
    }
}

#[test]
fn the_seeds_are_small_valid_and_cover_every_layer_kind_and_precision() {
    let mut kinds = vec![];
    let mut precisions = vec![];
    for (name, bytes) in suite::fuzz_seeds() {
        assert!(bytes.len() <= 4096, "{name}: {} bytes; seeds must stay small for speed", bytes.len());
        let aligned = AlignedBytes::copy_from(&bytes);
        let model = format::parse(&aligned).unwrap_or_else(|e| panic!("{name}: {e}"));
        kinds.extend(model.spec.layers().iter().map(|l| l.kind()));
        precisions.push(model.precision);
        fuzz_body::parse_target(&bytes);
    }
    for kind in [
        LayerKind::Conv2D,
        LayerKind::BatchNorm,
        LayerKind::MaxPool2D,
        LayerKind::Flatten,
        LayerKind::Dense,
        LayerKind::Dropout,
        LayerKind::AvgPool2D,
        LayerKind::GlobalAvgPool,
        LayerKind::Add,
        LayerKind::Concat,
        LayerKind::Activation,
        LayerKind::Softmax,
    ] {
        assert!(kinds.contains(&kind), "no seed has a {kind:?}");
    }
    assert!(
        precisions.contains(&shared::model::Precision::Int8) && precisions.contains(&shared::model::Precision::F16)
    );
}
