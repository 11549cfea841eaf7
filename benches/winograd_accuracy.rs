//! Does training under Winograd's arithmetic reach the accuracy of the direct
//! path, or only something within the runs' own noise of it?
//!
//! Training is chaotic: two runs whose arithmetic differs in the last bit
//! drift apart within an epoch, and end a few points of validation accuracy
//! apart either way. So a difference between `direct` and a Winograd variant
//! means something only next to a control whose difference is rounding and
//! nothing else. Per seed, `cargo bench --bench winograd_accuracy` trains the
//! default embedded run (alexnet-micro, 28 epochs, as `host train --seed S`
//! runs it) four ways:
//! - **direct**: `--conv direct` throughout;
//! - **control**: the first step under F(2x2), then `--resume` under
//!   `direct`: one step's worth of rounding difference, after which it is
//!   the direct arithmetic (resumption is bit-exact, `train_cli.rs`);
//! - **F(2x2)** and **F(4x4)**: `--conv winograd` and `--conv winograd-4x4`
//!   throughout.
//!
//! It prints each run's final and best validation accuracy, then per arm the
//! mean, and the paired difference from `direct` (mean, and how many seeds
//! came out lower, equal, higher). A systematic effect of Winograd shows as
//! F(2x2)/F(4x4) differences well outside the control's; noise as
//! differences of the control's size and sign spread.
//!
//! `WINOGRAD_ACCURACY_SEEDS` (comma-separated, default 123 and 1..=9) picks
//! the seeds; each run takes about 45 s on two cores.

use host::nn::conv::{set_algo, ConvAlgo};
use host::train::{train, TrainConfig};
use std::sync::atomic::AtomicBool;

/// The arms, in the order they run for each seed.
const ARMS: [&str; 4] = ["direct", "control", "F(2x2)", "F(4x4)"];

/// Final and best validation accuracy of one run.
#[derive(Clone, Copy)]
struct Result {
    last: f64,
    best: f64,
}

fn config(seed: u64, out: std::path::PathBuf) -> TrainConfig {
    let mut c = TrainConfig::defaults(None);
    c.seed = seed;
    c.out = out;
    c.progress = false;
    c
}

fn run(arm: &str, seed: u64, dir: &std::path::Path) -> Result {
    let never = AtomicBool::new(false);
    let out = dir.join(format!("{}-{seed}", arm.replace(['(', ')'], "")));
    let outcome = match arm {
        "control" => {
            set_algo(ConvAlgo::Winograd);
            let mut first = config(seed, out.clone());
            first.max_steps = Some(1);
            train(&first, &never).expect("the control's first step");
            set_algo(ConvAlgo::Direct);
            let mut rest = config(seed, out);
            rest.resume = true;
            train(&rest, &never)
        }
        _ => {
            set_algo(match arm {
                "direct" => ConvAlgo::Direct,
                "F(2x2)" => ConvAlgo::Winograd,
                _ => ConvAlgo::Winograd4x4,
            });
            train(&config(seed, out), &never)
        }
    }
    .expect("training");
    let acc: Vec<f64> = outcome.history.iter().filter_map(|r| r.val_accuracy).map(f64::from).collect();
    let last = *acc.last().expect("a validation split");
    Result { last, best: acc.iter().copied().fold(f64::MIN, f64::max) }
}

fn main() {
    let seeds: Vec<u64> = match std::env::var("WINOGRAD_ACCURACY_SEEDS") {
        Ok(s) => s.split(',').map(|x| x.trim().parse().expect("WINOGRAD_ACCURACY_SEEDS: integers")).collect(),
        Err(_) => std::iter::once(123).chain(1..=9).collect(),
    };
    let dir = std::env::temp_dir().join(format!("winograd-accuracy-{}", std::process::id()));
    let mut table: Vec<[Result; 4]> = Vec::new();
    for &seed in &seeds {
        let row = ARMS.map(|arm| run(arm, seed, &dir));
        println!(
            "ACCURACY seed {seed:>4}: {}",
            ARMS.iter()
                .zip(&row)
                .map(|(a, r)| format!("{a} {:.3} ({:.3})", r.last, r.best))
                .collect::<Vec<_>>()
                .join(", ")
        );
        table.push(row);
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!("\nACCURACY over {} seeds: final (best) validation accuracy", seeds.len());
    for (i, arm) in ARMS.iter().enumerate() {
        let n = table.len() as f64;
        let mean = |f: &dyn Fn(&[Result; 4]) -> f64| table.iter().map(f).sum::<f64>() / n;
        let (last, best) = (mean(&|r| r[i].last), mean(&|r| r[i].best));
        let diffs: Vec<f64> = table.iter().map(|r| r[i].last - r[0].last).collect();
        let lower = diffs.iter().filter(|&&d| d < 0.0).count();
        let higher = diffs.iter().filter(|&&d| d > 0.0).count();
        let mean_abs = diffs.iter().map(|d| d.abs()).sum::<f64>() / n;
        println!(
            "ACCURACY {arm:>8}: mean {last:.4} ({best:.4}); against direct: mean {:+.4}, mean |diff| {mean_abs:.4}, \
             lower/equal/higher {lower}/{}/{higher}",
            last - mean(&|r| r[0].last),
            table.len() - lower - higher,
        );
    }
}
