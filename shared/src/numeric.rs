//! The two reductions every consumer of logits needs — which class won and
//! with what probability — defined once, so `eval`, `compare`, `simulate`,
//! `flash` and the firmware cannot disagree on a tie or a NaN.
//!
//! The rule is NumPy's `np.argmax` (what the tutorial calls on the scores):
//! the first NaN wins if there is one, else the first maximum.

use core::cmp::Ordering;

/// Orders two `(index, value)` candidates best first under the argmax rule:
/// NaN before any number, larger before smaller, lower index before higher.
/// Sorting with it lists classes from most to least likely, and its first
/// element is [`argmax`]'s answer.
pub fn rank(a: (usize, f32), b: (usize, f32)) -> Ordering {
    match (a.1.is_nan(), b.1.is_nan()) {
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (true, true) => a.0.cmp(&b.0),
        (false, false) => b.1.partial_cmp(&a.1).unwrap_or(Ordering::Equal).then(a.0.cmp(&b.0)),
    }
}

/// Index of the winning value under [`rank`]'s rule (first NaN, else first
/// maximum); None for an empty input.
pub fn argmax(values: impl IntoIterator<Item = f32>) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for cand in values.into_iter().enumerate() {
        if best.is_none_or(|b| rank(cand, b) == Ordering::Less) {
            best = Some(cand);
        }
        if cand.1.is_nan() {
            break;
        }
    }
    best.map(|(i, _)| i)
}

/// Softmax in place, shifted by the maximum so `exp` cannot overflow. A row
/// holding NaN comes out all NaN (no class gets a made-up probability).
#[cfg(feature = "std")]
pub fn softmax_in_place(row: &mut [f32]) {
    let max =
        row.iter().copied().fold(f32::NEG_INFINITY, |m, v| if v.is_nan() || m.is_nan() { f32::NAN } else { m.max(v) });
    let mut sum = 0.0f32;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    row.iter_mut().for_each(|v| *v /= sum);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_maximum_wins_ties() {
        assert_eq!(argmax([0.1, 0.7, 0.7, 0.2]), Some(1));
        assert_eq!(argmax([-1.0f32; 3]), Some(0));
        assert_eq!(argmax(core::iter::empty()), None);
    }

    #[test]
    fn first_nan_wins_like_numpy() {
        assert_eq!(argmax([0.5, f32::NAN, 9.0, f32::NAN]), Some(1));
        assert_eq!(argmax([f32::NAN, 0.5]), Some(0));
        assert_eq!(argmax([f32::INFINITY, f32::NAN]), Some(1));
    }

    #[test]
    fn rank_sorts_like_argmax() {
        let v = [0.2, f32::NAN, 0.9, 0.9, f32::NEG_INFINITY];
        let mut order: [(usize, f32); 5] = core::array::from_fn(|i| (i, v[i]));
        order.sort_by(|a, b| rank(*a, *b));
        let idx: [usize; 5] = core::array::from_fn(|i| order[i].0);
        assert_eq!(idx, [1, 2, 3, 0, 4]);
        assert_eq!(Some(idx[0]), argmax(v));
    }

    #[cfg(feature = "std")]
    #[test]
    fn softmax_is_stable_and_sums_to_one() {
        let mut v = [1000.0, 1001.0, 999.0];
        softmax_in_place(&mut v);
        assert!((v.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(v[1] > v[0] && v[0] > v[2]);
        let mut n = [0.0, f32::NAN];
        softmax_in_place(&mut n);
        assert!(n.iter().all(|x| x.is_nan()));
    }
}
