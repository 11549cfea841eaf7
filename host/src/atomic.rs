//! Atomic file writes: every artefact a user would hate to lose half-written
//! (checkpoints, model files, histories, layer dumps) goes through here.
//!
//! The bytes go to a temporary file in the same folder (unique per process
//! and call, so two writers never share one), are synced, then renamed over
//! the destination: a crash or Ctrl-C leaves either the old file or the new.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A write that did not happen; the destination is untouched.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {}: {source}", path.display())]
pub struct WriteError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Write `bytes` to `path` atomically, creating its folder if needed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    write_atomic_with(path, |tmp| write_all_chunked(&mut std::fs::File::create(tmp)?, bytes))
}

/// `w.write_all(bytes)` in calls of at most 1 MB. On this Linux (6.x, ext4)
/// one `write` of 151 MB took 359 ms and the same bytes in 1 MB writes 37
/// ms (4 MB writes were as slow as one): a 700 MB checkpoint's tensors or a
/// 60 MB model file are many such writes.
pub fn write_all_chunked(w: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    bytes.chunks(1 << 20).try_for_each(|c| w.write_all(c))
}

/// Write `path` atomically through `write`, which creates the file it is
/// given (the temporary) and fills it: for files too big to build in memory
/// first, such as checkpoints streamed tensor by tensor. The temporary is
/// synced, then renamed over `path`; on any error it is removed.
pub fn write_atomic_with(path: &Path, write: impl FnOnce(&Path) -> std::io::Result<()>) -> Result<(), WriteError> {
    replace(path, write, |_| Ok::<(), std::convert::Infallible>(())).map_err(|e| match e {
        CheckedWriteError::Write(e) => e,
        CheckedWriteError::Check(never) => match never {},
    })
}

/// The one sequence every write here is: the folder, a temporary beside
/// `path` that `write` fills, synced, held to `check`, renamed over `path`;
/// the temporary removed on any failure, so `path` keeps what it held.
fn replace<E>(
    path: &Path,
    write: impl FnOnce(&Path) -> std::io::Result<()>,
    check: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), CheckedWriteError<E>> {
    let werr = |source| CheckedWriteError::Write(WriteError { path: path.to_path_buf(), source });
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(werr)?;
    }
    let tmp = temp_path(path);
    let written = (|| {
        write(&tmp)?;
        std::fs::OpenOptions::new().write(true).open(&tmp)?.sync_all()
    })();
    let result = match written {
        Err(e) => Err(werr(e)),
        Ok(()) => match check(&tmp) {
            Err(e) => Err(CheckedWriteError::Check(e)),
            Ok(()) => std::fs::rename(&tmp, path).map_err(werr),
        },
    };
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Make `to` a copy of the finished file `from`, atomically: a hard link
/// where the file system allows one (no bytes written; `from` is only ever
/// replaced by a rename, which leaves the link's content alone), else a
/// synced copy. What `train` uses to keep `best` beside `last`.
pub fn copy_atomic(from: &Path, to: &Path) -> Result<(), WriteError> {
    write_atomic_with(to, |tmp| match std::fs::hard_link(from, tmp) {
        Ok(()) => Ok(()),
        Err(_) => std::fs::copy(from, tmp).map(drop),
    })
}

/// Write `bytes` to `path` atomically after `check` accepted the written
/// temporary file (read it back, parse it): a file that fails the check is
/// removed and never reaches `path`, which keeps what it held before.
pub fn write_atomic_checked<E>(
    path: &Path,
    bytes: &[u8],
    check: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), CheckedWriteError<E>> {
    replace(path, |tmp| write_all_chunked(&mut std::fs::File::create(tmp)?, bytes), check)
}

/// Why [`write_atomic_checked`] wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum CheckedWriteError<E> {
    #[error(transparent)]
    Write(WriteError),
    #[error("the file written did not pass its check: {0}")]
    Check(E),
}

/// An output that names one of the command's inputs.
#[derive(Debug, thiserror::Error)]
#[error("{what} {} is the input {}: writing it would destroy the input; choose another path", out.display(), input.display())]
pub struct SameFileError {
    pub what: String,
    pub out: PathBuf,
    pub input: PathBuf,
}

/// `out` (the option `what`, e.g. `--out`) must not be any of `inputs`,
/// however either is spelled (relative, `..`, symbolic or hard links).
pub fn refuse_input_as_output(what: &str, out: &Path, inputs: &[&Path]) -> Result<(), SameFileError> {
    for &input in inputs {
        if same_file(out, input) {
            return Err(SameFileError { what: what.to_string(), out: out.to_path_buf(), input: input.to_path_buf() });
        }
    }
    Ok(())
}

/// Whether `a` and `b` are the same file (a missing file is the same as
/// nothing, except a path that spells the other's).
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::MetadataExt;
                x.dev() == y.dev() && x.ino() == y.ino()
            }
            #[cfg(not(unix))]
            {
                let _ = (x, y);
                std::fs::canonicalize(a).ok() == std::fs::canonicalize(b).ok()
            }
        }
        _ => false,
    }
}

/// A temporary name beside `path` that no other write (in this process or
/// another) uses at the same time: `<name>.<pid>.<n>.tmp`.
fn temp_path(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".{}.{n}.tmp", std::process::id()));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/model.bin");
        write_atomic(&p, b"old").unwrap();
        write_atomic(&p, b"new").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("model.bin")]);
    }

    #[test]
    fn a_failed_check_leaves_nothing_and_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("model.bin");
        let e = write_atomic_checked(&p, b"new", |_| Err("differs")).unwrap_err();
        assert!(matches!(e, CheckedWriteError::Check("differs")));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        std::fs::write(&p, b"old").unwrap();
        assert!(write_atomic_checked(&p, b"new", |t| if std::fs::read(t).unwrap() == b"new" {
            Err(1)
        } else {
            Ok(())
        })
        .is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        write_atomic_checked::<()>(&p, b"new", |_| Ok(())).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn an_output_spelled_differently_is_still_the_input() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.safetensors");
        std::fs::write(&p, b"x").unwrap();
        let other = dir.path().join("sub/../c.safetensors");
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let e = refuse_input_as_output("--out", &other, &[&p]).unwrap_err();
        assert!(e.to_string().contains("--out") && e.to_string().contains("c.safetensors"), "{e}");
        #[cfg(unix)]
        {
            let link = dir.path().join("hard");
            std::fs::hard_link(&p, &link).unwrap();
            assert!(refuse_input_as_output("--out", &link, &[&p]).is_err());
        }
        assert!(refuse_input_as_output("--out", &dir.path().join("new.bin"), &[&p]).is_ok());
    }

    #[test]
    fn a_copy_outlives_the_next_write_of_its_source() {
        let dir = tempfile::tempdir().unwrap();
        let (last, best) = (dir.path().join("last.bin"), dir.path().join("best.bin"));
        write_atomic(&last, b"epoch 1").unwrap();
        copy_atomic(&last, &best).unwrap();
        #[cfg(unix)]
        {
            // A link where the file system allows one: no bytes written again.
            use std::os::unix::fs::MetadataExt;
            assert_eq!(std::fs::metadata(&best).unwrap().ino(), std::fs::metadata(&last).unwrap().ino());
        }
        write_atomic(&last, b"epoch 2").unwrap();
        assert_eq!(std::fs::read(&best).unwrap(), b"epoch 1");
        assert_eq!(std::fs::read(&last).unwrap(), b"epoch 2");
        copy_atomic(&last, &best).unwrap();
        assert_eq!(std::fs::read(&best).unwrap(), b"epoch 2");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2, "no temporary left");
        let err = copy_atomic(&dir.path().join("missing.bin"), &best).unwrap_err();
        assert!(err.to_string().contains("best.bin"), "{err}");
        assert_eq!(std::fs::read(&best).unwrap(), b"epoch 2", "a failed copy keeps the old file");
    }

    #[test]
    fn a_write_of_several_chunks_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.bin");
        let bytes: Vec<u8> = (0..(5 << 19) + 7).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
        write_atomic(&p, &bytes).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), bytes);
    }

    #[test]
    fn a_failed_streamed_write_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.bin");
        let e = write_atomic_with(&p, |tmp| {
            std::fs::write(tmp, b"half")?;
            Err(std::io::Error::other("disk full"))
        })
        .unwrap_err();
        assert!(e.to_string().contains("big.bin") && e.to_string().contains("disk full"), "{e}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn temporaries_never_repeat() {
        let p = Path::new("runs/x.bin");
        assert_ne!(temp_path(p), temp_path(p));
    }

    #[test]
    fn a_failed_write_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"x").unwrap();
        let err = write_atomic(&blocker.join("child.bin"), b"y").unwrap_err();
        assert!(err.to_string().contains("child.bin"), "{err}");
    }
}
