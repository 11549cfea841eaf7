//! Which data a checkpoint belongs to: the folder (or embedded set) it was
//! trained on, with the same validation split, so that `eval`, `quantize` and
//! `compare` default to the run's own held-out images.

use std::path::Path;

use anyhow::{bail, Result};

use crate::checkpoint::Checkpoint;
use crate::data::{DataError, Dataset, OpenOptions};

/// Which images of a dataset to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Subset {
    /// The training run's validation split.
    Val,
    /// Every image.
    All,
}

impl Subset {
    /// The name users type (`val`, `all`).
    pub fn name(self) -> &'static str {
        match self {
            Subset::Val => "val",
            Subset::All => "all",
        }
    }
}

/// A dataset chosen for a checkpoint and the images to use from it.
pub struct CheckpointData {
    pub data: Dataset,
    pub subset: Subset,
    pub indices: Vec<usize>,
}

/// Open `data` (or, when None, the data the checkpoint was trained on) with
/// the checkpoint's split. `subset` None picks `val` for the training data
/// and `all` for another folder. Class names must match the checkpoint's.
pub fn open_for_checkpoint(ck: &Checkpoint, data: Option<&Path>, subset: Option<Subset>) -> Result<CheckpointData> {
    let meta = ck.train.as_ref();
    let trained_on = meta.and_then(|m| m.data_dir.clone());
    let same_data = match (data, &trained_on) {
        (None, _) => true,
        (Some(a), Some(b)) => a.canonicalize().ok().is_some_and(|a| b.canonicalize().ok() == Some(a)),
        (Some(_), None) => false,
    };
    if data.is_none() && meta.is_none() {
        bail!("the checkpoint does not record the data it was trained on; pass --data DIR");
    }
    if let (None, Some(dir)) = (data, &trained_on) {
        if !dir.is_dir() {
            bail!("the checkpoint was trained on {}, which is not there any more; pass --data DIR", dir.display());
        }
    }
    let subset = match subset {
        Some(s) => s,
        None if same_data => Subset::Val,
        None => Subset::All,
    };
    let opts = OpenOptions {
        val_split: if subset == Subset::All { 0.0 } else { meta.map_or(0.2, |m| m.val_split) },
        seed: meta.map_or(123, |m| m.seed),
        per_class: meta.map_or(crate::data::synthetic::DEFAULT_PER_CLASS, |m| m.per_class),
        ..Default::default()
    };
    let dir = data.map(Path::to_path_buf).or(if same_data { trained_on } else { None });
    let data = Dataset::open(dir.as_deref(), &opts)?;
    if data.class_names() != ck.class_names {
        // A 1000-class model's names would bury the message: the first ten say enough.
        let names = |v: &[String]| {
            let shown: Vec<String> = v.iter().take(10).map(|n| crate::out::printable(n)).collect();
            match v.len() {
                n if n > 10 => format!("{} classes: {}, ... {} more", n, shown.join(", "), n - 10),
                n => format!("{n}: {}", shown.join(", ")),
            }
        };
        return Err(DataError::ClassMismatch { got: names(&data.class_names()), want: names(&ck.class_names) }.into());
    }
    let indices = if subset == Subset::All { data.split.train.clone() } else { data.split.val.clone() };
    Ok(CheckpointData { data, subset, indices })
}
