//! Per-thread scratch buffers for im2col, kept between calls: a fresh multi-MB
//! allocation per tile would be returned to the OS and page-faulted in again
//! every time, which costs as much as a small GEMM.

use std::cell::RefCell;

use std::thread::LocalKey;

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static PADDED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static STAGED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Run `f` with this thread's scratch buffer of exactly `len` elements (contents unspecified).
pub fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    with(&SCRATCH, len, f)
}

/// As [`with_scratch`], a second buffer: a padded conv input, held by the
/// calling thread while the pool's threads (this one possibly among them)
/// use their [`with_scratch`] buffers.
pub fn with_padded<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    with(&PADDED, len, f)
}

/// A third buffer, held by the calling thread beside [`with_padded`]: data
/// computed once and then read by all of a layer's parallel jobs (Winograd's
/// transformed input tiles when the jobs split the output channels).
pub fn with_staged<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    with(&STAGED, len, f)
}

fn with<R>(key: &'static LocalKey<RefCell<Vec<f32>>>, len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            f(&mut buf[..len])
        }
        // Re-entered on this thread (a nested rayon job stole work while we were
        // inside): fall back to a temporary buffer rather than panic.
        Err(_) => f(&mut vec![0.0; len]),
    })
}

/// `partials` as `groups` zeroed buffers of `len` values, their allocations
/// kept from the last step (fresh ones were page-faulted in every step).
pub(crate) fn zeroed_partials(partials: &mut Vec<Vec<f32>>, groups: usize, len: usize) {
    partials.resize_with(groups, Vec::new);
    for p in partials.iter_mut() {
        p.clear();
        p.resize(len, 0.0);
    }
}
