//! Run folders: where `host train` writes and where the other commands look
//! for a checkpoint when none is named.
use std::path::{Path, PathBuf};

/// The folder `host train` writes to by default.
pub const DEFAULT_RUN_DIR: &str = "runs/latest";
/// The checkpoint after the newest epoch (or interrupted step).
pub const LAST: &str = "last.safetensors";
/// The checkpoint with the best validation accuracy so far.
pub const BEST: &str = "best.safetensors";

/// The checkpoint inside `run_dir` that `eval`/`predict` default to: the best
/// one if there is one, else the last.
pub fn default_checkpoint(run_dir: &Path) -> PathBuf {
    let best = run_dir.join(BEST);
    if best.exists() {
        best
    } else {
        run_dir.join(LAST)
    }
}

/// `checkpoint`, or the default one of the default run folder.
pub fn checkpoint_or_default(checkpoint: Option<&Path>) -> PathBuf {
    checkpoint.map(Path::to_path_buf).unwrap_or_else(|| default_checkpoint(Path::new(DEFAULT_RUN_DIR)))
}
