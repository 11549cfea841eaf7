//! `--conv auto` for inference, timed where the convs run: in whole forward
//! passes. A conv timed alone, twice back to back, finds its transformed
//! filters still in the cache; in the network the other layers' weights
//! (AlexNet's dense layers: 234 MB in fp32) pass through the cache between
//! two of its calls, so a path that reads more filter bytes (F(4x4)'s are 4x
//! the direct kernel's) pays for them there, and where the whole set of
//! weights no longer fits the last-level cache it makes the other layers pay
//! as well. So the first inference at a batch size runs the whole network
//! under each uniform setting (every undecided conv direct, then every one
//! on its finest Winograd variant, then its coarsest) and under each
//! layer's fastest of those, and keeps the setting whose passes were
//! fastest (every layer's time counted, the convs' and the others').

use super::conv::{self, AutoChoice, ConvAlgo, ConvPath};
use super::{Mode, Network, Node};
use ndarray::ArrayView4;
use shared::geometry::ConvGeom;
use std::sync::Mutex;
use std::time::Duration;

/// Forward passes timed per setting, after one that is not (it transforms
/// that setting's filters and faults in its buffers).
const RUNS: usize = 3;

/// One network-level decision: the batch, every setting timed (its label and
/// its passes' time, each layer's fastest summed) and which one was kept.
#[derive(Clone, Debug)]
pub struct NetworkChoice {
    pub batch: usize,
    pub settings: Vec<(String, Duration)>,
    pub chosen: usize,
}

/// `inference, batch 1: F(4x4) 11.4 ms (direct 15.3, F(2x2) 12.1)`.
impl std::fmt::Display for NetworkChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: &Duration| format!("{:.2}", d.as_secs_f64() * 1e3);
        let (label, t) = &self.settings[self.chosen];
        write!(f, "inference, batch {}, whole passes: {label} {} ms", self.batch, ms(t))?;
        let others: Vec<String> = self
            .settings
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != self.chosen)
            .map(|(_, (l, t))| format!("{l} {}", ms(t)))
            .collect();
        if !others.is_empty() {
            write!(f, " ({})", others.join(", "))?;
        }
        Ok(())
    }
}

static CHOICES: Mutex<Vec<NetworkChoice>> = Mutex::new(Vec::new());

/// Every network-level decision made in this process, in order.
pub fn network_choices() -> Vec<NetworkChoice> {
    CHOICES.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// An undecided conv: its layer, geometry and candidate paths.
struct Open {
    layer: usize,
    geom: ConvGeom,
    candidates: Vec<ConvPath>,
}

/// A setting: each open conv's path, in [`Open`]'s order.
type Setting = Vec<ConvPath>;

fn same(a: &Setting, b: &Setting) -> bool {
    a.iter().zip(b).all(|(p, q)| p.name() == q.name())
}

impl Network {
    /// Under [`ConvAlgo::Auto`], decides every conv of this network that has
    /// no path yet for `x`'s batch, by whole forward passes on `x` (their
    /// outputs are overwritten by the caller's pass).
    pub(super) fn tune_convs(&mut self, x: ArrayView4<f32>, fuse: bool) {
        if conv::algo() != ConvAlgo::Auto {
            return;
        }
        let batch = x.dim().0;
        let open: Vec<Open> = self
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(layer, n)| match n {
                Node::Conv { geom, .. } if conv::path(geom, batch, false).is_none() => {
                    Some(Open { layer, geom: *geom, candidates: ConvPath::candidates(geom).collect() })
                }
                _ => None,
            })
            .collect();
        let Some(ranks) = open.iter().map(|o| o.candidates.len()).max() else {
            return;
        };
        let saved = self.profile.take();
        // Uniform settings: rank k is every conv's k-th candidate (its last
        // where it has fewer).
        let mut settings: Vec<(String, Setting)> = (0..ranks)
            .map(|k| {
                let s: Setting = open.iter().map(|o| o.candidates[k.min(o.candidates.len() - 1)]).collect();
                (label(k, &s), s)
            })
            .collect();
        let timed: Vec<(Duration, Vec<Duration>)> =
            settings.iter().map(|(_, s)| self.time(x, fuse, &open, s)).collect();
        let shares: Vec<Vec<Duration>> = timed.iter().map(|(_, each)| each.clone()).collect();
        let fastest = fastest_ranks(&open, &shares);
        let mixed: Setting = open.iter().zip(&fastest).map(|(o, &k)| o.candidates[k]).collect();
        let mut totals: Vec<Duration> = timed.iter().map(|(t, _)| *t).collect();
        if !settings.iter().any(|(_, s)| same(s, &mixed)) {
            totals.push(self.time(x, fuse, &open, &mixed).0);
            settings.push(("each layer's fastest".into(), mixed));
        }
        self.profile = saved;
        let chosen = (0..totals.len()).min_by_key(|&i| totals[i]).unwrap_or(0);
        for (i, o) in open.iter().enumerate() {
            if open[..i].iter().any(|p| p.geom == o.geom) {
                continue;
            }
            let timings =
                o.candidates.iter().enumerate().map(|(k, &p)| (p, share(&open, &shares[k], &o.geom))).collect();
            let path = settings[chosen].1[i];
            conv::record(AutoChoice {
                geometry: o.geom,
                batch,
                backward: false,
                chosen: path,
                timings,
                in_network: true,
            });
        }
        let settings = settings.into_iter().map(|(l, _)| l).zip(totals).collect();
        CHOICES.lock().unwrap_or_else(|e| e.into_inner()).push(NetworkChoice { batch, settings, chosen });
    }

    /// Whole passes with the open convs on `setting`: every layer's fastest
    /// time in [`RUNS`] of them, summed (a pass with each layer's noise
    /// removed: on a shared machine a layer that the others' noise delayed
    /// in one pass runs undelayed in another; the fastest whole pass keeps
    /// some of it, and in a small network that was more than the settings'
    /// difference), and each open conv's own fastest time.
    fn time(&mut self, x: ArrayView4<f32>, fuse: bool, open: &[Open], setting: &Setting) -> (Duration, Vec<Duration>) {
        let mut forced = vec![None; self.nodes.len()];
        for (o, &p) in open.iter().zip(setting) {
            forced[o.layer] = Some(p);
        }
        self.forced = Some(forced);
        rayon::scope(|_| self.run_layers(x, Mode::Eval, fuse));
        let mut fastest = vec![f64::INFINITY; self.nodes.len()];
        for _ in 0..RUNS {
            self.profile = Some(vec![(0.0, 0.0); self.nodes.len()]);
            rayon::scope(|_| self.run_layers(x, Mode::Eval, fuse));
            let layers = self.profile.take().unwrap_or_default();
            for (f, l) in fastest.iter_mut().zip(&layers) {
                *f = f.min(l.0);
            }
        }
        self.forced = None;
        let secs = |s: f64| Duration::from_secs_f64(s.max(0.0));
        let each = open.iter().map(|o| secs(fastest[o.layer])).collect();
        (secs(fastest.iter().sum()), each)
    }
}

/// `geom`'s time in one setting: the shares (`each`, in [`Open`]'s order) of
/// its layers summed, since one geometry is one decision whichever layers
/// have it.
fn share(open: &[Open], each: &[Duration], geom: &ConvGeom) -> Duration {
    open.iter().zip(each).filter(|(o, _)| o.geom == *geom).map(|(_, t)| *t).sum()
}

/// Each open conv's fastest rank: where its geometry's [`share`] of the
/// uniform settings' passes (`shares[k]`: rank `k`'s) was least. Ranks past
/// a conv's candidates ran its last one and are not its own.
fn fastest_ranks(open: &[Open], shares: &[Vec<Duration>]) -> Vec<usize> {
    open.iter()
        .map(|o| {
            let ranks = o.candidates.len().min(shares.len());
            (0..ranks).min_by_key(|&k| share(open, &shares[k], &o.geom)).unwrap_or(0)
        })
        .collect()
}

/// `direct`, or the variants' common name up to the comma (`F(2x2)`), or
/// their full names where they differ.
fn label(rank: usize, setting: &Setting) -> String {
    if rank == 0 {
        return "direct".into();
    }
    let mut names: Vec<&str> = setting.iter().map(|p| p.name().split(',').next().unwrap_or("")).collect();
    names.sort_unstable();
    names.dedup();
    if let [one] = names[..] {
        format!("{one})")
    } else {
        setting.iter().map(|p| p.name()).collect::<Vec<_>>().join(" / ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::spec::{Conv2D, Shape};

    fn open(layer: usize, size: u32, cin: u32) -> Open {
        let geom = ConvGeom::from_spec(&Conv2D::new(8, size).same(), Shape::image(9, 9, cin)).expect("geometry");
        Open { layer, geom, candidates: ConvPath::candidates(&geom).collect() }
    }

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    /// Two layers of one shape are one decision: their shares summed pick
    /// rank 2 for both, though rank 1 was the first layer's own fastest; a
    /// shape of its own picks by its own share.
    #[test]
    fn one_geometry_decides_by_its_layers_summed() {
        let convs = [open(0, 3, 8), open(2, 3, 8), open(4, 5, 8)];
        // shares[k][j]: conv j's time in the pass of rank k.
        let shares = [ms(&[9, 9, 9]), ms(&[4, 8, 3]), ms(&[5, 5, 6])];
        assert_eq!(fastest_ranks(&convs, &shares), [2, 2, 1]);
        assert_eq!(share(&convs, &shares[1], &convs[0].geom), Duration::from_millis(12));
    }

    /// `direct`, the variants' size without the kernel's where all share it,
    /// each name where they differ.
    #[test]
    fn settings_are_labelled_by_their_variants() {
        let convs = [open(0, 3, 8), open(1, 5, 8)];
        let rank = |k: usize| -> Setting { convs.iter().map(|o| o.candidates[k]).collect() };
        assert_eq!(label(0, &rank(0)), "direct");
        assert_eq!(label(1, &rank(1)), "F(2x2)");
        assert_eq!(label(2, &rank(2)), "F(4x4)");
        let mixed = vec![convs[0].candidates[1], convs[1].candidates[2]];
        assert_eq!(label(1, &mixed), "F(2x2, 3x3) / F(4x4, 5x5)");
    }

    #[test]
    fn a_network_choice_reads_as_one_line() {
        let n = NetworkChoice {
            batch: 1,
            settings: vec![
                ("direct".into(), Duration::from_micros(15_300)),
                ("F(4x4)".into(), Duration::from_micros(11_400)),
            ],
            chosen: 1,
        };
        assert_eq!(n.to_string(), "inference, batch 1, whole passes: F(4x4) 11.40 ms (direct 15.30)");
    }
}
