//! Lifetime-based arena planning for operator graphs: TensorFlow Lite
//! Micro's greedy planner (`GreedyMemoryPlanner`). Every buffer lives from
//! the step that writes it to the last step that reads it; buffers are placed
//! largest first, each at the lowest offset where it overlaps no buffer
//! already placed whose lifetime overlaps its own (first fit).
//!
//! A leaf: the engine plans its graphs with it, and [`tflm_arena_bytes`]
//! computes what TFLite Micro's planner would give the same graph (every
//! operator output its own buffer, 16-byte aligned), so that `host inspect`
//! and the tests can set the two side by side.

use crate::spec::{Layer, ModelSpec, MAX_LAYERS};

/// Most buffers one plan holds: the input and every layer's output.
pub const MAX_BUFFERS: usize = MAX_LAYERS + 1;

/// One buffer to place: `size` bytes, alive from step `first` to step `last`
/// (inclusive). Step 0 is before the first layer (the input is written);
/// layer `i` runs at step `i + 1`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Buffer {
    pub size: usize,
    pub first: usize,
    pub last: usize,
}

impl Buffer {
    fn overlaps_in_time(&self, other: &Buffer) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

/// Place `buffers` (at most [`MAX_BUFFERS`]; zero-sized ones get offset 0),
/// writing each one's offset to `offsets`, each rounded up to a multiple of
/// `align`. Returns the arena bytes: the highest end. Deterministic: ties in
/// size go to the lower index, as a stable sort leaves them.
pub fn greedy(buffers: &[Buffer], align: usize, offsets: &mut [usize]) -> usize {
    let n = buffers.len().min(MAX_BUFFERS).min(offsets.len());
    let align = align.max(1);
    // Placement order: size descending, index ascending (insertion sort: n <= 49).
    let mut order = [0usize; MAX_BUFFERS];
    for (k, slot) in order.iter_mut().enumerate().take(n) {
        *slot = k;
    }
    for k in 1..n {
        let mut j = k;
        while j > 0 && buffers[order[j - 1]].size < buffers[order[j]].size {
            order.swap(j - 1, j);
            j -= 1;
        }
    }
    let mut placed = [false; MAX_BUFFERS];
    let mut total = 0usize;
    for &b in &order[..n] {
        let me = buffers[b];
        if me.size == 0 {
            offsets[b] = 0;
            placed[b] = true;
            continue;
        }
        // Candidates: 0 and the (aligned) end of every placed buffer alive
        // at the same time; the lowest candidate clear of all of them wins.
        let mut best = usize::MAX;
        let mut try_at = |at: usize| {
            if at >= best {
                return;
            }
            let end = at.saturating_add(me.size);
            let clear = (0..n).all(|o| {
                !placed[o]
                    || buffers[o].size == 0
                    || !buffers[o].overlaps_in_time(&me)
                    || end <= offsets[o]
                    || offsets[o].saturating_add(buffers[o].size) <= at
            });
            if clear {
                best = at;
            }
        };
        try_at(0);
        for o in 0..n {
            if placed[o] && buffers[o].size > 0 && buffers[o].overlaps_in_time(&me) {
                let end = offsets[o].saturating_add(buffers[o].size);
                try_at(end.saturating_add(align - 1) / align * align);
            }
        }
        offsets[b] = best;
        placed[b] = true;
        total = total.max(best.saturating_add(me.size));
    }
    total
}

/// The buffers of `spec`'s tensors: `root[t]` is the tensor whose buffer
/// tensor `t` lives in, and `buffers[r]` that buffer's size (`size(r)`) and
/// lifetime, from the step that writes it to the last step reading any
/// tensor in it (the output's to the end). `shares_input(i, root)` says
/// whether layer `i`'s output lives in its main input's buffer, given the
/// roots of tensors `0..=i`. Filled for tensors `0..=layers`.
pub fn tensor_buffers(
    spec: &ModelSpec,
    size: impl Fn(usize) -> usize,
    shares_input: impl Fn(usize, &[usize]) -> bool,
    root: &mut [usize; MAX_BUFFERS],
    buffers: &mut [Buffer; MAX_BUFFERS],
) {
    let n = spec.layers().len();
    buffers[0] = Buffer { size: size(0), first: 0, last: 0 };
    for (i, reads) in spec.inputs().iter().enumerate() {
        let step = i + 1;
        for t in [Some(reads.main), reads.other].into_iter().flatten() {
            let r = root[t as usize];
            buffers[r].last = buffers[r].last.max(step);
        }
        if shares_input(i, &root[..=i]) {
            root[step] = root[reads.main as usize];
            buffers[step] = Buffer::default();
        } else {
            root[step] = step;
            buffers[step] = Buffer { size: size(step), first: step, last: step };
        }
    }
    let result = root[n];
    buffers[result].last = buffers[result].last.max(n);
}

/// The tensor arena TFLite Micro's greedy planner gives `spec`'s graph at
/// `bytes_per` bytes an element: the input and every layer's output a buffer
/// of its own, each rounded up to TFLite Micro's 16-byte buffer alignment,
/// alive from its producer to its last reader (Dropout, which the TFLite
/// converter removes, passes its input through). BatchNormalization and a
/// standalone activation count as operators (the converter folds BN into the
/// conv before it; compare graphs without them).
pub fn tflm_arena_bytes(spec: &ModelSpec, bytes_per: usize) -> usize {
    let bytes = |t: usize| {
        let b = usize::try_from(spec.tensor(t).elements()).unwrap_or(usize::MAX).saturating_mul(bytes_per);
        b.saturating_add(15) / 16 * 16
    };
    let dropout = |i: usize, _: &[usize]| matches!(spec.layers()[i], Layer::Dropout { .. });
    let (mut root, mut buffers) = ([0usize; MAX_BUFFERS], [Buffer::default(); MAX_BUFFERS]);
    tensor_buffers(spec, bytes, dropout, &mut root, &mut buffers);
    let mut offsets = [0usize; MAX_BUFFERS];
    greedy(&buffers[..=spec.layers().len()], 1, &mut offsets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_alive_together_never_overlap_and_dead_ones_are_reused() {
        // a (read by b and c: a residual), b, c, then d (written while c is read).
        let bufs = [
            Buffer { size: 100, first: 0, last: 2 },
            Buffer { size: 60, first: 1, last: 2 },
            Buffer { size: 80, first: 2, last: 3 },
            Buffer { size: 100, first: 3, last: 3 },
        ];
        let mut off = [0; 4];
        let total = greedy(&bufs, 1, &mut off);
        for i in 0..4 {
            for j in 0..i {
                if bufs[i].overlaps_in_time(&bufs[j]) {
                    let (a, b) = ((off[i], off[i] + bufs[i].size), (off[j], off[j] + bufs[j].size));
                    assert!(a.1 <= b.0 || b.1 <= a.0, "{i} and {j} overlap: {off:?}");
                }
            }
        }
        // Largest first: a at 0; d (dead a's bytes) at 0 too; c after both
        // at 100; b (alive with a and c) after c.
        assert_eq!(off, [0, 180, 100, 0]);
        assert_eq!(total, 240);
    }

    #[test]
    fn alignment_rounds_candidate_offsets_up() {
        let bufs = [Buffer { size: 5, first: 0, last: 1 }, Buffer { size: 3, first: 1, last: 1 }];
        let mut off = [0; 2];
        assert_eq!(greedy(&bufs, 4, &mut off), 11);
        assert_eq!(off, [0, 8]);
    }
}
