//! `host dataset`: export the embedded set as a folder, or describe a folder
//! the way Keras's `image_dataset_from_directory` does.
use std::path::PathBuf;

use anyhow::Result;

use crate::data::folder::FolderDataset;
use crate::data::synthetic::SyntheticDataset;
use crate::data::{ImageSource, Split};

/// `host dataset ...`: tools for datasets.
#[derive(clap::Args, Debug, Clone)]
pub struct DatasetArgs {
    #[command(subcommand)]
    pub action: DatasetAction,
}

/// The `host dataset` actions.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum DatasetAction {
    /// Write the embedded synthetic dataset as a class-folder tree of PNGs.
    Export {
        /// The output folder (its `--help` text is the `help` below: rustdoc
        /// would read `<class>` as an HTML tag).
        #[arg(help = "Output folder (DIR/<class>/<class>_NNNN.png)")]
        dir: PathBuf,
        /// Images per class.
        #[arg(long, default_value_t = crate::data::synthetic::DEFAULT_PER_CLASS)]
        per_class: usize,
        /// Width and height of the images.
        #[arg(long, default_value_t = 128)]
        size: u32,
        /// Seed of the images (the default is the embedded set's).
        #[arg(long, default_value_t = crate::data::synthetic::DEFAULT_SEED)]
        seed: u64,
    },
    /// List a class-folder dataset: classes, counts and the split sizes.
    Info {
        dir: PathBuf,
        #[arg(long, default_value_t = 0.2)]
        val_split: f32,
        #[arg(long, default_value_t = 123)]
        seed: u64,
    },
}

/// Run `host dataset`.
pub fn run(args: &DatasetArgs) -> Result<()> {
    match &args.action {
        DatasetAction::Export { dir, per_class, size, seed } => {
            let n = SyntheticDataset::new(*per_class, *seed).export(dir, (*size).max(1))?;
            crate::outln!("wrote {n} images ({} classes) to {}", crate::data::synthetic::CLASSES.len(), dir.display())?;
        }
        DatasetAction::Info { dir, val_split, seed } => {
            let d = FolderDataset::open(dir)?;
            let split = Split::keras(d.len(), *val_split, *seed)?;
            crate::outln!("Found {} files belonging to {} classes.", d.len(), d.class_names().len())?;
            for (i, name) in d.class_names().iter().enumerate() {
                crate::outln!("  {name}: {}", d.files().iter().filter(|f| f.1 == i).count())?;
            }
            crate::outln!("Using {} files for training.", split.train.len())?;
            crate::outln!("Using {} files for validation.", split.val.len())?;
        }
    }
    Ok(())
}
