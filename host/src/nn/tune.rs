//! `--conv auto` for inference, timed where the convs run: in whole forward
//! passes. A conv timed alone, twice back to back, finds its transformed
//! filters still in the cache; in the network the other layers' weights
//! (AlexNet's dense layers: 234 MB in fp32) pass through the cache between
//! two of its calls, so a path that reads more filter bytes (F(4x4)'s are 4x
//! the direct kernel's) pays for them there, and where the whole set of
//! weights no longer fits the last-level cache it makes the other layers pay
//! as well. So the first inference at a small batch size ([`MAX_BATCH`])
//! runs the whole network under each uniform setting (every undecided conv
//! direct, then every one on its finest Winograd variant, then its
//! coarsest) and under each layer's fastest of those, and keeps the setting
//! whose passes were fastest (every layer's time counted, the convs' and the
//! others').

use super::conv::{self, AutoChoice, ConvPath};
use shared::geometry::ConvGeom;
use std::sync::Mutex;
use std::time::Duration;

/// Forward passes timed per setting, after one that is not (it transforms
/// that setting's filters and faults in its buffers). The network
/// (`Network::tune_convs`) runs them; this module plans and decides, and
/// knows nothing of the network.
pub const RUNS: usize = 3;

/// Largest batch whose inference is decided in whole passes: latency
/// inference (`predict`, a batch-1 service). Larger batches (`eval`'s 32)
/// read each filter for many tiles, so what the other layers leave in the
/// cache matters less, and a whole pass costs more: AlexNet's 16 passes at
/// batch 32 would take seconds, more than some whole `eval`s. They keep the
/// per-layer timing, as training does.
pub const MAX_BATCH: usize = 4;

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
pub struct Open {
    pub layer: usize,
    pub geom: ConvGeom,
    pub candidates: Vec<ConvPath>,
}

/// A setting: each open conv's path, in [`Open`]'s order.
pub type Setting = Vec<ConvPath>;

fn same(a: &Setting, b: &Setting) -> bool {
    a.iter().zip(b).all(|(p, q)| p.name() == q.name())
}

/// One network's decision in the making: the settings to time, in order
/// (the uniform ones, then each layer's fastest mixture where it is another
/// setting), and what each measured.
pub struct Plan {
    open: Vec<Open>,
    settings: Vec<(String, Setting)>,
    /// Per timed setting: its passes' time, and each open conv's share.
    timed: Vec<(Duration, Vec<Duration>)>,
    /// Whether the mixture has been considered.
    mixed: bool,
}

impl Plan {
    /// The plan for these undecided convs; `None` when there are none.
    pub fn new(open: Vec<Open>) -> Option<Plan> {
        let ranks = open.iter().map(|o| o.candidates.len()).max()?;
        // Uniform settings: rank k is every conv's k-th candidate (its last
        // where it has fewer).
        let settings = (0..ranks)
            .map(|k| {
                let s: Setting = open.iter().map(|o| o.candidates[k.min(o.candidates.len() - 1)]).collect();
                (label(k, &s), s)
            })
            .collect();
        Some(Plan { open, settings, timed: Vec::new(), mixed: false })
    }

    pub fn open(&self) -> &[Open] {
        &self.open
    }

    /// The next setting to time, or `None` when all are.
    pub fn next_setting(&mut self) -> Option<Setting> {
        if self.timed.len() == self.settings.len() && !self.mixed {
            self.mixed = true;
            let shares: Vec<Vec<Duration>> = self.timed.iter().map(|(_, each)| each.clone()).collect();
            let fastest = fastest_ranks(&self.open, &shares);
            let mixed: Setting = self.open.iter().zip(&fastest).map(|(o, &k)| o.candidates[k]).collect();
            if !self.settings.iter().any(|(_, s)| same(s, &mixed)) {
                self.settings.push(("each layer's fastest".into(), mixed));
            }
        }
        self.settings.get(self.timed.len()).map(|(_, s)| s.clone())
    }

    /// What [`Plan::next_setting`]'s setting measured: the passes' time and each
    /// open conv's share of them.
    pub fn timed(&mut self, total: Duration, each: Vec<Duration>) {
        assert_eq!(each.len(), self.open.len(), "tune: one share per open conv");
        self.timed.push((total, each));
    }

    /// Keeps the fastest setting: records each geometry's path in it for
    /// [`conv::ConvAlgo::Auto`] (with its share under every candidate) and
    /// the network's decision.
    pub fn finish(self, batch: usize) {
        let Plan { open, settings, timed, .. } = self;
        assert_eq!(timed.len(), settings.len(), "tune: every setting timed");
        let chosen = (0..timed.len()).min_by_key(|&i| timed[i].0).unwrap_or(0);
        for (i, o) in open.iter().enumerate() {
            if open[..i].iter().any(|p| p.geom == o.geom) {
                continue;
            }
            // Rank k's pass gave this geometry's candidate k its share.
            let timings =
                o.candidates.iter().enumerate().map(|(k, &p)| (p, share(&open, &timed[k].1, &o.geom))).collect();
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
        let settings = settings.into_iter().map(|(l, _)| l).zip(timed.iter().map(|(t, _)| *t)).collect();
        CHOICES.lock().unwrap_or_else(|e| e.into_inner()).push(NetworkChoice { batch, settings, chosen });
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
    use crate::nn::winograd::F4_3;
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

    /// The plan times the three uniform settings, then the mixture of each
    /// geometry's fastest (here another setting: F(4x4) for the 3x3 layers,
    /// direct for the 5x5), and keeps the fastest pass, whose paths the
    /// table then gives every layer.
    #[test]
    fn a_plan_times_the_uniform_settings_then_the_mixture() {
        let batch = 977;
        let convs = vec![open(0, 3, 8), open(2, 3, 8), open(4, 5, 8)];
        let geoms: Vec<ConvGeom> = convs.iter().map(|o| o.geom).collect();
        let mut plan = Plan::new(convs).expect("open convs");
        let shares = [ms(&[9, 9, 3]), ms(&[6, 6, 8]), ms(&[4, 5, 6])];
        let totals = [40, 35, 30, 28];
        let mut seen = Vec::new();
        while let Some(setting) = plan.next_setting() {
            seen.push(setting.iter().map(|p| p.name()).collect::<Vec<_>>());
            let k = seen.len() - 1;
            let each = shares.get(k).cloned().unwrap_or_else(|| ms(&[4, 5, 3]));
            plan.timed(Duration::from_millis(totals[k]), each);
        }
        assert_eq!(seen.len(), 4, "{seen:?}");
        assert_eq!(seen[3], [F4_3.name, F4_3.name, "direct"]);
        plan.finish(batch);
        let n = network_choices().into_iter().find(|n| n.batch == batch).expect("recorded");
        assert_eq!(n.chosen, 3);
        assert_eq!(n.settings.last().map(|(l, _)| l.as_str()), Some("each layer's fastest"));
        // One decision per geometry (the two 3x3 layers share theirs).
        let table: Vec<AutoChoice> = conv::auto_choices().into_iter().filter(|c| c.batch == batch).collect();
        let paths: Vec<_> = table.iter().map(|c| (c.geometry, c.chosen.name())).collect();
        assert_eq!(paths, [(geoms[0], F4_3.name), (geoms[2], "direct")]);
        assert_eq!(geoms[0], geoms[1]);
        // The 3x3 geometry's shares are its two layers' summed, per rank.
        let ms3: Vec<_> = table[0].timings.iter().map(|(_, t)| t.as_millis()).collect();
        assert_eq!(ms3, [18, 12, 9]);
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
