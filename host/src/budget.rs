//! The one place sizes declared by a file or an option are checked before
//! anything is allocated for them: a 432-byte checkpoint must not make
//! predict allocate 17 GB because its layer list says Dense 65536 -> 65536.
//!
//! Every size is computed with checked arithmetic and held to the memory
//! limit: `--max-memory` (any command), else the `HOST_MAX_MEMORY`
//! environment variable, else [`DEFAULT_LIMIT`]. Both take a byte count with
//! an optional K, M, G or T suffix (powers of 1024). Where a file must hold
//! what it declares (a checkpoint's weights), its own length is checked too.
use shared::spec::{Layer, ModelSpec};
use std::sync::atomic::{AtomicU64, Ordering};

/// The limit when neither `--max-memory` nor `HOST_MAX_MEMORY` sets one.
pub const DEFAULT_LIMIT: u64 = 8 << 30;

/// The environment variable that sets the limit.
pub const ENV: &str = "HOST_MAX_MEMORY";

/// 0: not set on the command line.
static LIMIT: AtomicU64 = AtomicU64::new(0);

/// A size over the limit, or one too large to compute.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    #[error(
        "{what} needs {} ({bytes} bytes), over the memory limit of {} \
         (raise it with --max-memory or {ENV} if this is intended)",
        human(*bytes), human(*limit)
    )]
    OverLimit { what: String, bytes: u64, limit: u64 },
    #[error("{what}: the size overflows 64 bits")]
    Overflow { what: String },
    #[error("{what} declares {} ({declared} bytes) but the file holds only {actual} bytes", human(*declared))]
    FileTooShort { what: String, declared: u64, actual: u64 },
}

/// Set the limit for this process (`--max-memory`).
pub fn set_limit(bytes: u64) {
    LIMIT.store(bytes.max(1), Ordering::Relaxed);
}

/// The limit in force: `--max-memory`, else `HOST_MAX_MEMORY`, else [`DEFAULT_LIMIT`].
/// An unparseable environment value is ignored for the default (the command line
/// is parsed by [`parse_size`], which reports it).
pub fn limit() -> u64 {
    match LIMIT.load(Ordering::Relaxed) {
        0 => std::env::var(ENV).ok().and_then(|v| parse_size(&v).ok()).unwrap_or(DEFAULT_LIMIT),
        n => n,
    }
}

/// `"512M"`, `"8G"`, `"1048576"`: a byte count with an optional binary suffix.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let not_a_count = || format!("{s:?} is not a byte count such as 8G or 512M");
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(split);
    let shift = match suffix.to_ascii_uppercase().as_str() {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(not_a_count()),
    };
    let n: u64 = digits.parse().map_err(|_| not_a_count())?;
    let bytes = n.checked_mul(1u64 << shift).ok_or_else(|| format!("{s:?} overflows 64 bits"))?;
    if bytes == 0 {
        return Err(format!("{s:?}: the memory limit must be positive"));
    }
    Ok(bytes)
}

/// `bytes` for `what` must fit the limit.
pub fn check(what: &str, bytes: u64) -> Result<(), BudgetError> {
    let limit = limit();
    if bytes > limit {
        return Err(BudgetError::OverLimit { what: what.to_string(), bytes, limit });
    }
    Ok(())
}

/// `count` elements of `size` bytes each for `what`, checked for overflow and
/// against the limit; the byte count on success.
pub fn check_elements(what: &str, count: u64, size: u64) -> Result<u64, BudgetError> {
    let bytes = count.checked_mul(size).ok_or_else(|| BudgetError::Overflow { what: what.to_string() })?;
    check(what, bytes)?;
    Ok(bytes)
}

/// A file of `actual` bytes must be able to hold the `declared` bytes it says it has.
pub fn check_file_holds(what: &str, declared: u64, actual: u64) -> Result<(), BudgetError> {
    if declared > actual {
        return Err(BudgetError::FileTooShort { what: what.to_string(), declared, actual });
    }
    Ok(())
}

/// What the float network of `spec` needs at `batch` images: its parameters
/// (four copies when `training`: weights, gradients and Adam's two moments)
/// and, per image, every layer's output twice (forward values and, in
/// training, their gradients) plus each convolution's im2col patches. An
/// estimate from below: it exists to refuse what cannot possibly fit, not to
/// predict the peak.
pub fn network_bytes(spec: &ModelSpec, batch: u64, training: bool) -> Option<u64> {
    let (t, n) = spec.params();
    let params = t.checked_add(n)?.checked_mul(if training { 16 } else { 4 })?;
    let mut per_image = spec.input().checked_elements()?;
    for (_, l, input, out) in spec.shapes() {
        per_image = per_image.checked_add(out.checked_elements()?.checked_mul(2)?)?;
        if let Layer::Conv2D(c) = l {
            let k = (c.kernel.h as u64).checked_mul(c.kernel.w as u64)?;
            let (oh, ow) = out.hw();
            let patches = (oh as u64).checked_mul(ow as u64)?.checked_mul(k)?.checked_mul(input.channels() as u64)?;
            per_image = per_image.checked_add(patches)?;
        }
    }
    params.checked_add(per_image.checked_mul(4)?.checked_mul(batch)?)
}

/// A file about to be read whole into memory (`what` names it) must fit the
/// limit: its length is what it costs, and the parsed form comes on top.
/// A file whose length cannot be read is left to the read to report.
pub fn check_file(what: &str, path: &std::path::Path) -> Result<(), BudgetError> {
    match std::fs::metadata(path) {
        Ok(m) => check(&format!("reading {what} {} ({} bytes)", path.display(), m.len()), m.len()),
        Err(_) => Ok(()),
    }
}

/// [`network_bytes`] held to the limit, `what` naming the model.
pub fn check_network(what: &str, spec: &ModelSpec, batch: u64, training: bool) -> Result<(), BudgetError> {
    let bytes = network_bytes(spec, batch, training).ok_or_else(|| BudgetError::Overflow { what: what.to_string() })?;
    check(what, bytes)
}

/// Human-readable bytes (binary units).
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_suffixes_and_refuse_junk() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("8g"), Ok(8 << 30));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("-1G").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn the_tutorial_alexnet_fits_and_a_huge_input_does_not() {
        let full = shared::spec::Arch::AlexNet.build(227, 1000).unwrap();
        let bytes = network_bytes(&full, 128, true).unwrap();
        assert!(bytes < DEFAULT_LIMIT, "{}", human(bytes));
        let huge = shared::spec::Arch::AlexNetMicro.build(30000, 6).unwrap();
        let e = check_network("alexnet-micro at 30000x30000", &huge, 1, false).unwrap_err();
        assert!(matches!(e, BudgetError::OverLimit { .. }), "{e}");
        assert!(
            e.to_string().contains("alexnet-micro at 30000x30000") && e.to_string().contains("--max-memory"),
            "{e}"
        );
    }
}
