//! Batch-1 dense layers whose inputs often sit at a known value: after a
//! ReLU'd conv, a BatchNormalization maps every zero of channel `c` to its
//! shift `t_c` (`0 * s + t`), and a max pool and a flatten pass it on. Such
//! inputs are not zero, so [`gemv`] reads their weight rows; in AlexNet that
//! is FC6, 151 MB a pass, with about two inputs in five at their channel's
//! shift. Written as
//!
//! `x W = (x - d) W + d W`, with `d_i = t_(i mod c)`,
//!
//! the inputs at their dead value become exact zeros, whose rows [`gemv`]
//! skips, and `d W` is the same for every input: it is computed once, in the
//! same read of the weights as the first pass's product (a two-row GEMV of
//! `x - d` and `d`), and kept until the weights or the shifts change. Every
//! pass, the first included, sums the same way, so the bits do not depend on
//! which pass computed `d W`.

use super::gemv;

/// `d W` for one dense layer, and what it was computed from.
#[derive(Clone, Debug, Default)]
pub struct DeadInputs {
    /// The kernel's address and the dead values `d W` belongs to (`None`:
    /// none computed, or cleared).
    key: Option<(usize, Vec<f32>)>,
    dead_sum: Vec<f32>,
}

impl DeadInputs {
    /// Forget `d W`: the kernel may have changed in place.
    pub fn clear(&mut self) {
        self.key = None;
    }

    /// `y = x W` for one input row (`x` `[nin]`, `w` `[nin, units]`, `y`
    /// `[units]`), input `i` dead at `dead[i % dead.len()]`; or `false`
    /// without touching `y` where [`gemv::matvec`] does not serve (no FMA).
    pub fn matvec(&mut self, x: &[f32], nin: usize, w: &[f32], units: usize, dead: &[f32], y: &mut [f32]) -> bool {
        let c = dead.len();
        assert!(c > 0 && nin.is_multiple_of(c), "dead inputs: {nin} inputs are not rows of {c} channels");
        assert_eq!(x.len(), nin, "dead inputs: one input row");
        // `x - d` is exactly zero where `x` sits at its dead value.
        let live: Vec<f32> = x.iter().zip(dead.iter().cycle()).map(|(&v, &d)| v - d).collect();
        // Compared bit for bit, without building a key on every pass.
        let same = |(at, values): &(usize, Vec<f32>)| {
            *at == w.as_ptr() as usize && values.iter().map(|v| v.to_bits()).eq(dead.iter().map(|d| d.to_bits()))
        };
        if !self.key.as_ref().is_some_and(same) {
            let mut rows = live;
            rows.extend(dead.iter().cycle().take(nin));
            let mut both = vec![0.0f32; 2 * units];
            if !gemv::matvec(&rows, 2, nin, w, units, &mut both) {
                return false;
            }
            self.dead_sum = both.split_off(units);
            self.key = Some((w.as_ptr() as usize, dead.to_vec()));
            y.copy_from_slice(&both);
        } else if !gemv::matvec(&live, 1, nin, w, units, y) {
            return false;
        }
        y.iter_mut().zip(&self.dead_sum).for_each(|(y, s)| *y += s);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(nin: usize, units: usize) -> Vec<f32> {
        (0..nin * units).map(|i| ((i * 104729) % 89) as f32 / 89.0 - 0.5).collect()
    }

    /// About half the inputs at their channel's dead value, the rest live.
    fn input(nin: usize, dead: &[f32], seed: usize) -> Vec<f32> {
        (0..nin)
            .map(|i| {
                if (i * 7 + seed) % 5 < 2 {
                    dead[i % dead.len()]
                } else {
                    ((i * 7919 + seed) % 97) as f32 / 97.0 - 0.3
                }
            })
            .collect()
    }

    #[test]
    fn matches_the_plain_product_and_keeps_its_bits_across_passes() {
        for (nin, units, c) in [(36 * 16, 4100, 16), (12, 33, 3), (8, 16, 8)] {
            let w = weights(nin, units);
            let dead: Vec<f32> = (0..c).map(|j| 0.25 - 0.1 * j as f32).collect();
            let mut cache = DeadInputs::default();
            for seed in 0..3 {
                let x = input(nin, &dead, seed);
                let mut y = vec![f32::NAN; units];
                if !cache.matvec(&x, nin, &w, units, &dead, &mut y) {
                    return; // no FMA: the callers take the plain path
                }
                for (j, &got) in y.iter().enumerate() {
                    let want: f64 = (0..nin).map(|i| x[i] as f64 * w[i * units + j] as f64).sum();
                    assert!((got as f64 - want).abs() < 1e-4, "{nin}x{units} seed {seed} j{j}: {got} vs {want}");
                }
                // A fresh cache (whose first pass computes `d W`) gives the same bits.
                let mut fresh = vec![f32::NAN; units];
                assert!(DeadInputs::default().matvec(&x, nin, &w, units, &dead, &mut fresh));
                let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&y), bits(&fresh), "{nin}x{units} seed {seed}: first and later passes differ");
            }
        }
    }

    /// New dead values or a cleared cache (new weights in place) recompute
    /// `d W`; a stale one would be off by the difference.
    #[test]
    fn recomputes_when_the_dead_values_or_the_weights_change() {
        let (nin, units) = (64, 48);
        let mut w = weights(nin, units);
        let mut cache = DeadInputs::default();
        let check = |cache: &mut DeadInputs, w: &[f32], dead: &[f32]| {
            let x = input(nin, dead, 1);
            let mut y = vec![0.0; units];
            if !cache.matvec(&x, nin, w, units, dead, &mut y) {
                return;
            }
            for (j, &got) in y.iter().enumerate() {
                let want: f64 = (0..nin).map(|i| x[i] as f64 * w[i * units + j] as f64).sum();
                assert!((got as f64 - want).abs() < 1e-4, "j{j}: {got} vs {want}");
            }
        };
        check(&mut cache, &w, &[0.5, -0.25]);
        check(&mut cache, &w, &[0.75, -0.25]);
        w.iter_mut().for_each(|v| *v *= 2.0);
        cache.clear();
        check(&mut cache, &w, &[0.75, -0.25]);
    }
}
