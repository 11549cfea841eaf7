//! `host train`: parse the options into a [`TrainConfig`], install the
//! Ctrl-C handler, run the training library and print where things went.
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::arch::ArchSource;

use crate::optim::{LrSchedule, OptimizerKind};
use crate::train::{train, StopReason, TrainConfig};

/// `--optimizer`: the two optimizers the tutorial's users reach for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OptimizerChoice {
    /// Adam with Keras's defaults (lr 0.001).
    Adam,
    /// SGD with momentum 0.9 and weight decay 5e-4 (lr 0.01).
    Sgd,
}

impl OptimizerChoice {
    /// The optimizer with its defaults, and `lr` if given.
    pub fn kind(self, lr: Option<f32>) -> OptimizerKind {
        match (self, OptimizerKind::adam(), OptimizerKind::sgd()) {
            (OptimizerChoice::Adam, OptimizerKind::Adam { lr: d, beta1, beta2, epsilon }, _) => {
                OptimizerKind::Adam { lr: lr.unwrap_or(d), beta1, beta2, epsilon }
            }
            (OptimizerChoice::Sgd, _, OptimizerKind::Sgd { lr: d, momentum, weight_decay }) => {
                OptimizerKind::Sgd { lr: lr.unwrap_or(d), momentum, weight_decay }
            }
            (OptimizerChoice::Adam, ..) => OptimizerKind::adam(),
            (OptimizerChoice::Sgd, ..) => OptimizerKind::sgd(),
        }
    }
}

/// `host train`'s arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct TrainArgs {
    /// Class-folder dataset: one subfolder per class (like flower_photos/daisy/*.jpg).
    /// Default: the embedded synthetic shapes.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Preset: alexnet, alexnet-micro or alexnet-tiny (default: alexnet with --data, else
    /// alexnet-micro), or a stack file: a Keras model.to_json() document or a checkpoint's layer JSON.
    #[arg(long, value_parser = ArchSource::parse)]
    pub arch: Option<ArchSource>,
    /// Input height and width (default: the preset's, 227 or 99).
    #[arg(long)]
    pub input: Option<u32>,
    /// Total epochs (default: 10 with --data, 28 on the embedded set).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Batch size (default: 128 with --data, as the tutorial; 32 on the embedded set).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// adam (Keras defaults) or sgd (momentum 0.9, weight decay 5e-4).
    #[arg(long, value_enum, default_value_t = OptimizerChoice::Adam)]
    pub optimizer: OptimizerChoice,
    /// Learning rate (default: 0.001 for adam, 0.01 for sgd).
    #[arg(long)]
    pub lr: Option<f32>,
    /// The learning-rate schedule (its `--help` text is the `help` below:
    /// rustdoc would read its brackets as a link).
    #[arg(
        long,
        help = "constant, step:EVERY:FACTOR (e.g. step:5:0.1) or plateau:PATIENCE:FACTOR[:MIN_LR] \
                (default: constant with --data, step:20:0.25 on the embedded set)"
    )]
    pub lr_schedule: Option<String>,
    /// Fraction of images held out for validation (the last ones after a seeded shuffle, as Keras).
    #[arg(long, default_value_t = 0.2)]
    pub val_split: f32,
    /// Seed of the split, initialisation, shuffling, augmentation and dropout.
    #[arg(long, default_value_t = 123)]
    pub seed: u64,
    /// Output folder: checkpoints, history.csv/json, curves.png.
    #[arg(long, default_value = "runs/latest")]
    pub out: PathBuf,
    /// Continue the run in --out from its last checkpoint, with its saved settings.
    #[arg(long)]
    pub resume: bool,
    /// Skip unreadable or corrupt images (and report how many) instead of stopping.
    #[arg(long)]
    pub skip_bad: bool,
    /// Images per class of the embedded set (default 400).
    #[arg(long)]
    pub per_class: Option<usize>,
    /// Train without the flip/rotation/zoom augmentation.
    #[arg(long)]
    pub no_augment: bool,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Stop after this many steps as if interrupted (for testing --resume).
    #[arg(long, hide = true)]
    pub max_steps: Option<usize>,
}

/// Parse `--lr-schedule`.
pub fn parse_schedule(s: &str) -> Result<LrSchedule, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let num = |i: usize| -> Result<f32, String> {
        parts
            .get(i)
            .ok_or(format!("--lr-schedule {s:?} is missing a value"))?
            .parse::<f32>()
            .map_err(|e| format!("--lr-schedule {s:?}: {e}"))
    };
    let int = |i: usize| -> Result<usize, String> {
        parts
            .get(i)
            .ok_or(format!("--lr-schedule {s:?} is missing a value"))?
            .parse::<usize>()
            .map_err(|e| format!("--lr-schedule {s:?}: {e}"))
    };
    match parts[0] {
        "constant" if parts.len() == 1 => Ok(LrSchedule::Constant),
        "step" if parts.len() == 3 => Ok(LrSchedule::Step { every: int(1)?, factor: num(2)? }),
        "plateau" if parts.len() == 3 || parts.len() == 4 => Ok(LrSchedule::Plateau {
            patience: int(1)?,
            factor: num(2)?,
            min_lr: if parts.len() == 4 { num(3)? } else { 0.0 },
        }),
        _ => Err(format!(
            "unknown --lr-schedule {s:?}; use constant, step:EVERY:FACTOR or plateau:PATIENCE:FACTOR[:MIN_LR]"
        )),
    }
}

impl TrainArgs {
    /// The configuration these arguments describe.
    pub fn config(&self) -> Result<TrainConfig, String> {
        let mut cfg = TrainConfig::defaults(self.data.clone());
        if let Some(a) = &self.arch {
            cfg.arch = a.clone();
            cfg.arch_given = true;
        }
        if self.epochs == Some(0) {
            return Err("--epochs 0 trains nothing: give at least 1".into());
        }
        cfg.input = self.input;
        cfg.epochs = self.epochs.unwrap_or(cfg.epochs);
        cfg.batch_size = self.batch_size.unwrap_or(cfg.batch_size);
        cfg.optimizer = self.optimizer.kind(self.lr);
        if let Some(lr) = self.lr {
            if !(lr > 0.0 && lr.is_finite()) {
                return Err(format!("--lr {lr} must be a positive number"));
            }
        }
        if let Some(s) = &self.lr_schedule {
            cfg.schedule = parse_schedule(s)?;
        }
        cfg.val_split = self.val_split;
        cfg.seed = self.seed;
        cfg.out = self.out.clone();
        cfg.resume = self.resume;
        cfg.skip_bad = self.skip_bad;
        cfg.per_class = self.per_class.unwrap_or(cfg.per_class);
        cfg.augment = !self.no_augment;
        cfg.progress = !self.no_progress;
        cfg.max_steps = self.max_steps;
        Ok(cfg)
    }
}

/// Run `host train`: Ctrl-C asks the loop to stop after the current step
/// and save; a second Ctrl-C quits at once.
pub fn run(args: &TrainArgs) -> anyhow::Result<()> {
    let cfg = args.config().map_err(anyhow::Error::msg)?;
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    // Fails only if a handler is already installed (a second call in one process).
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        crate::errln!("\nCtrl-C: stopping after this step and saving a checkpoint (press again to quit now)");
    });
    let t0 = Instant::now();
    let out = train(&cfg, &stop).map_err(|e| super::with_skip_bad_hint(e.into()))?;
    let last = out.history.last();
    crate::outln!(
        "{} after {} epochs in {:.1}s; checkpoint {}{}",
        if out.stop == StopReason::Finished { "done" } else { "stopped" },
        out.epochs_done,
        t0.elapsed().as_secs_f64(),
        out.checkpoint.display(),
        last.and_then(|r| r.val_accuracy).map(|a| format!("; val_accuracy {a:.4}")).unwrap_or_default()
    )?;
    crate::outln!("history: {0}/history.csv, {0}/history.json, plots: {0}/curves.png", cfg.out.display())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::{
        build_arch, TrainError, DEFAULT_EMBEDDED_BATCH, DEFAULT_EMBEDDED_EPOCHS, DEFAULT_EMBEDDED_SCHEDULE,
    };
    use clap::Parser;
    use shared::spec::Arch;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        args: TrainArgs,
    }

    fn cfg(argv: &[&str]) -> Result<TrainConfig, String> {
        let mut full = vec!["train"];
        full.extend_from_slice(argv);
        Wrap::try_parse_from(full).map_err(|e| e.to_string())?.args.config()
    }

    #[test]
    fn schedules_parse() {
        assert_eq!(parse_schedule("constant"), Ok(LrSchedule::Constant));
        assert_eq!(parse_schedule("step:5:0.1"), Ok(LrSchedule::Step { every: 5, factor: 0.1 }));
        assert_eq!(
            parse_schedule("plateau:3:0.5:1e-6"),
            Ok(LrSchedule::Plateau { patience: 3, factor: 0.5, min_lr: 1e-6 })
        );
        assert!(parse_schedule("plateau:3").is_err());
        assert!(parse_schedule("step:x:0.1").is_err());
        assert!(parse_schedule("cosine").is_err());
    }

    #[test]
    fn defaults_follow_the_data() {
        let embedded = cfg(&[]).unwrap();
        assert_eq!(embedded.arch, ArchSource::Preset(Arch::AlexNetMicro));
        assert_eq!((embedded.epochs, embedded.batch_size), (DEFAULT_EMBEDDED_EPOCHS, DEFAULT_EMBEDDED_BATCH));
        assert_eq!(embedded.schedule, DEFAULT_EMBEDDED_SCHEDULE);
        let flowers = cfg(&["--data", "flower_photos"]).unwrap();
        assert_eq!((flowers.arch, flowers.batch_size), (ArchSource::Preset(Arch::AlexNet), 128));
        assert_eq!(flowers.schedule, LrSchedule::Constant);
        assert_eq!(flowers.optimizer, OptimizerKind::adam());
        let sgd = cfg(&["--optimizer", "sgd", "--lr", "0.05"]).unwrap();
        assert!(matches!(sgd.optimizer, OptimizerKind::Sgd { lr, .. } if lr == 0.05));
        assert!(cfg(&["--lr", "-1"]).is_err());
        assert!(cfg(&["--optimizer", "rmsprop"]).is_err());
    }

    #[test]
    fn presets_build_including_the_tiny_one() {
        assert!(build_arch(Arch::AlexNet, None, 5).is_ok());
        assert!(build_arch(Arch::AlexNetMicro, Some(99), 6).is_ok());
        let tiny = build_arch(Arch::AlexNetTiny, None, 3).unwrap();
        assert!(tiny.params().0 < 20_000);
        assert!(matches!(build_arch(Arch::AlexNet, Some(32), 5), Err(TrainError::Spec { .. })));
        let err = cfg(&["--arch", "vgg"]).unwrap_err();
        assert!(err.contains("alexnet-micro") && err.contains("vgg"), "{err}");
        assert_eq!(cfg(&["--arch", "alexnet-tiny"]).unwrap().arch, ArchSource::Preset(Arch::AlexNetTiny));
    }
}
