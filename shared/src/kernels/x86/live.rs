//! The live inputs of an input-major int8 Dense (those not at the input's
//! zero point), in fours: what `int8::dense_vnni_input_major_units` and
//! `int8_avx2::dense_avx2_input_major_units` walk, each with its own
//! instructions for the four rows.

use crate::kernels::generic::int8::Int8Params;
use crate::model::Int8Weights;

/// The input-major kernels' arguments, checked: `wt` is `w`'s transpose
/// (`input.len()` rows of `units`), `first + outputs` units exist, and the
/// input zero point (the dead value) is an int8. Returns `(units, zp)`.
pub fn check_input_major(
    p: &Int8Params,
    w: &Int8Weights<'_>,
    wt: &[i8],
    input: &[i8],
    outputs: usize,
    first: usize,
) -> (usize, i8) {
    let units = w.bias.len();
    assert!(wt.len() == input.len() * units, "dense: input-major weight length");
    assert!(w.multiplier.len() == units && w.shift.len() == units, "dense: units");
    assert!(first + outputs <= units, "dense: unit range");
    (units, i8::try_from(p.in_zp).expect("dense: input zero point fits an i8"))
}

/// Live inputs gathered per batch.
const LIVE: usize = 1024;
/// How many quads ahead the walk names for prefetching.
const AHEAD: usize = 2;

/// Calls `fold(quad, real, ahead)` for the indices of `input`'s values that
/// are not `zp`, four at a time in ascending order: `real` of the quad are
/// live (4, except for a last quad of 1-3, padded with the first live
/// index, whose row the caller must multiply by 0), and `ahead` is the quad
/// `AHEAD` later while there is one (the rows to prefetch: live rows are
/// runs with gaps, which the hardware prefetcher does not follow).
/// `live_bits(j0, block)` gives, for the up to 64 values from `input[j0]`,
/// bit `i` set where `block[i]` is live: each kernel's own vector compare.
///
/// Always inlined: only so do the kernels' closures (their intrinsics) run
/// inside the kernels' `target_feature` bodies, where they inline too.
#[inline(always)]
pub fn for_each_live_quad(
    input: &[i8],
    live_bits: impl Fn(usize, &[i8]) -> u64,
    mut fold: impl FnMut(&[usize; 4], usize, Option<&[usize]>),
) {
    let n = input.len();
    // A batch at a time (the 0-3 a batch leaves over start the next).
    let mut live = [0usize; LIVE + 64];
    let (mut count, mut j0) = (0, 0);
    loop {
        while j0 < n && count + 64 <= live.len() {
            let m = 64.min(n - j0);
            let mut bits = live_bits(j0, &input[j0..j0 + m]);
            while bits != 0 {
                live[count] = j0 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                count += 1;
            }
            j0 += 64;
        }
        let quads = count / 4;
        for q in 0..quads {
            let quad = [live[4 * q], live[4 * q + 1], live[4 * q + 2], live[4 * q + 3]];
            let ahead = (q + AHEAD < quads).then(|| &live[4 * (q + AHEAD)..4 * (q + AHEAD) + 4]);
            fold(&quad, 4, ahead);
        }
        live.copy_within(4 * quads..count, 0);
        count -= 4 * quads;
        if j0 >= n {
            break;
        }
    }
    if count > 0 {
        let mut quad = [live[0]; 4];
        quad[..count].copy_from_slice(&live[..count]);
        fold(&quad, count, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn every_live_index_once_in_order_with_the_tail_padded() {
        let scalar = |zp: i8| {
            move |_: usize, b: &[i8]| b.iter().enumerate().fold(0u64, |a, (i, &v)| a | u64::from(v != zp) << i)
        };
        for n in [0usize, 1, 3, 4, 63, 64, 65, 1030, 4099, 9216] {
            for every in [1usize, 2, 3, 7] {
                let input: Vec<i8> = (0..n).map(|i| if i % every == 0 { 5 } else { -128 }).collect();
                let want: Vec<usize> = (0..n).filter(|i| i % every == 0).collect();
                let (mut got, mut quads) = (Vec::new(), Vec::new());
                for_each_live_quad(&input, scalar(-128), |quad, real, ahead| {
                    got.extend_from_slice(&quad[..real]);
                    assert!(quad[real..].iter().all(|&j| j == quad[0]), "padding is the first index");
                    quads.push((*quad, ahead.map(<[usize]>::to_vec)));
                });
                assert_eq!(got, want, "n {n}, every {every}");
                // Each quad's `ahead` is the quad two later, while the batch has one.
                for (k, (_, ahead)) in quads.iter().enumerate() {
                    if let Some(a) = ahead {
                        assert_eq!(a[..], quads[k + AHEAD].0[..], "n {n}, every {every}, quad {k}");
                    }
                }
            }
        }
    }
}
