//! What the micro-kernel drivers compute, in one description that the
//! dispatcher hands to the AVX-512 or the AVX2 driver (a leaf: the drivers
//! live in `micro`'s children, which may not import their parent).

use crate::nn::epilogue::Epilogue;
use std::ops::Range;

/// Deepest single depth block whose tiles a driver runs row group by row
/// group: at that depth a tile's stores, not its multiplies, set the pace.
/// Deeper single blocks (conv 1's 363) keep the panel order, which was 5 %
/// faster for them at batch 1.
const SHALLOW: usize = 128;

/// `c[rows, cols] = epilogue(a w[:, cols])` over the depth blocks `(k0, kc)`
/// in order (together `0 .. k`), row `i`'s values `k0 .. k0 + kc` read from
/// `a_row(i, k0)`, or with `seg` = `(len, stride)` in segments of `len`
/// values `stride` apart from there; row `i` of `c` at `i * ldc`. With
/// `accumulate`, the products are added to what `c` holds. `next` (the
/// caller's next weights, or empty) is only prefetched.
pub(crate) struct Product<'a, A: Fn(usize, usize) -> *const f32> {
    pub rows: usize,
    pub blocks: &'a [(usize, usize)],
    pub a_row: A,
    pub seg: Option<(usize, usize)>,
    pub w: &'a [f32],
    pub ldw: usize,
    pub cols: Range<usize>,
    pub ldc: usize,
    pub ep: &'a Epilogue<'a>,
    pub next: &'a [f32],
    pub accumulate: bool,
}

impl<A: Fn(usize, usize) -> *const f32> Product<'_, A> {
    /// One depth block shallow enough (a weight gradient's depth is the
    /// batch) that row groups go outside, each writing its rows whole.
    pub fn shallow(&self) -> bool {
        self.blocks.len() == 1 && self.blocks[0].1 <= SHALLOW
    }
}
