//! The training loop: Keras's `model.fit` for our network, with a progress
//! bar, validation every epoch, history files and plots, and a checkpoint
//! after every epoch that `--resume` continues from bit-exactly.
//!
//! Exact resumption rests on one rule: every random draw (epoch shuffle,
//! augmentation, dropout) comes from a stream named by `(seed, epoch, step)`
//! (see [`crate::data::stream_rng`]), never from a generator that runs on
//! across steps. So the "RNG state" is the position `(epoch, step)` that the
//! checkpoint already records, and an interrupted run (Ctrl-C mid-epoch)
//! continues with exactly the draws it would have made.
use crate::checkpoint::{Checkpoint, CheckpointError, Running, SchedulerMeta, TrainMeta};
use crate::data::augment::AugmentConfig;
use crate::data::{stream_rng, tag, BatchPlan, DataError, Dataset, LoaderConfig, OpenOptions, Prefetcher};
use crate::eval::{evaluate, EvalError};
use crate::nn::{try_softmax_cross_entropy, Mode, Network, NnError};
use crate::optim::{LrSchedule, Optimizer, OptimizerKind};
use crate::report::{EpochRecord, ReportError};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use shared::spec::{alexnet_with, AlexNetWidths, Arch, ModelSpec, SpecError};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// File names inside the output folder.
pub const LAST: &str = "last.safetensors";
/// The checkpoint with the best validation accuracy so far.
pub const BEST: &str = "best.safetensors";

/// A preset too small for anything but tests and smoke runs: the AlexNet
/// topology with a handful of filters (trains in seconds at 67x67).
pub const TINY_ARCH: &str = "alexnet-tiny";
/// Widths of [`TINY_ARCH`].
pub const TINY_WIDTHS: AlexNetWidths = AlexNetWidths { filters: [4, 8, 8, 8, 8], hidden: 16 };

/// Build a named preset (the shared presets plus [`TINY_ARCH`]).
pub fn build_arch(name: &str, input: Option<u32>, classes: u32) -> Result<ModelSpec, TrainError> {
    let bad = |e: SpecError, input: u32| TrainError::Spec { arch: name.to_string(), input, what: e.to_string() };
    if name == TINY_ARCH {
        let input = input.unwrap_or(67);
        return alexnet_with(TINY_WIDTHS, input, classes).map_err(|e| bad(e, input));
    }
    let arch = Arch::from_name(name).ok_or_else(|| TrainError::UnknownArch(name.to_string()))?;
    let input = input.unwrap_or(arch.default_input());
    arch.build(input, classes).map_err(|e| bad(e, input))
}

/// Everything `host train` can be told.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// Class-folder dataset; None for the embedded synthetic set.
    pub data_dir: Option<PathBuf>,
    pub arch: String,
    /// Input height and width (None: the preset's).
    pub input: Option<u32>,
    /// Total epochs (with `resume`, including those already done, like Keras's `epochs` with `initial_epoch`).
    pub epochs: usize,
    pub batch_size: usize,
    pub optimizer: OptimizerKind,
    pub schedule: LrSchedule,
    pub val_split: f32,
    pub seed: u64,
    pub out: PathBuf,
    /// Continue from `out/last.safetensors` with its saved settings.
    pub resume: bool,
    pub skip_bad: bool,
    /// Images per class of the embedded set.
    pub per_class: usize,
    /// The tutorial's flip/rotation/zoom on training batches.
    pub augment: bool,
    /// Draw a progress bar (when stderr is a terminal).
    pub progress: bool,
    /// Stop (as if interrupted) after this many steps in total: for tests of resumption.
    pub max_steps: Option<usize>,
}

impl TrainConfig {
    /// The defaults for `data_dir`: the tutorial's (AlexNet 227, batch 128, Adam,
    /// 10 epochs) for a folder, and a quick AlexNet-micro run for the embedded set.
    pub fn defaults(data_dir: Option<PathBuf>) -> TrainConfig {
        let embedded = data_dir.is_none();
        TrainConfig {
            data_dir,
            arch: if embedded { Arch::AlexNetMicro.name() } else { Arch::AlexNet.name() }.to_string(),
            input: None,
            epochs: if embedded { DEFAULT_EMBEDDED_EPOCHS } else { 10 },
            batch_size: if embedded { DEFAULT_EMBEDDED_BATCH } else { 128 },
            optimizer: OptimizerKind::adam(),
            schedule: if embedded { DEFAULT_EMBEDDED_SCHEDULE } else { LrSchedule::Constant },
            val_split: 0.2,
            seed: 123,
            out: PathBuf::from("runs/latest"),
            resume: false,
            skip_bad: false,
            per_class: crate::data::synthetic::DEFAULT_PER_CLASS,
            augment: true,
            progress: true,
            max_steps: None,
        }
    }
}

/// Epochs of the default embedded run: enough for > 90% validation accuracy
/// in about three minutes on two cores.
pub const DEFAULT_EMBEDDED_EPOCHS: usize = 28;
/// The default embedded run's schedule: Adam's 1e-3 for 20 epochs, then a
/// quarter of it. The lower rate settles the weights, so BatchNormalization's
/// moving statistics (momentum 0.99) catch up with them and the validation
/// accuracy stops swinging from epoch to epoch.
pub const DEFAULT_EMBEDDED_SCHEDULE: LrSchedule = LrSchedule::Step { every: 20, factor: 0.25 };
/// Batch size of the default embedded run.
pub const DEFAULT_EMBEDDED_BATCH: usize = 32;

/// Why training stopped early or could not start.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("{0}")]
    Nn(#[from] NnError),
    #[error("unknown --arch {0:?}; choose one of: alexnet, alexnet-micro, alexnet-tiny")]
    UnknownArch(String),
    #[error("{arch} at {input}x{input}x3: {what}")]
    Spec { arch: String, input: u32, what: String },
    #[error("--batch-size must be at least 1")]
    BadBatch,
    #[error("--resume: {0}")]
    Resume(String),
    #[error(
        "the loss became {value} at epoch {epoch}, step {step}: training diverged; \
         the last good checkpoint is {}. Try a lower --lr.", last_good.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "none (no epoch finished)".into())
    )]
    NonFinite { value: f32, epoch: usize, step: usize, last_good: Option<PathBuf> },
}

impl From<EvalError> for TrainError {
    fn from(e: EvalError) -> Self {
        match e {
            EvalError::Data(d) => TrainError::Data(d),
            EvalError::Nn(n) => TrainError::Nn(n),
        }
    }
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// All epochs done.
    Finished,
    /// Ctrl-C (or `max_steps`): the checkpoint holds the state after the last whole step.
    Interrupted,
}

/// What a run produced.
#[derive(Clone, Debug)]
pub struct TrainOutcome {
    pub history: Vec<EpochRecord>,
    pub stop: StopReason,
    /// The last checkpoint written.
    pub checkpoint: PathBuf,
    /// Unreadable images skipped (`--skip-bad`), with their errors, distinct.
    pub skipped: Vec<String>,
    pub class_names: Vec<String>,
    pub epochs_done: usize,
}

/// Train as configured; `stop` is polled between steps (set by Ctrl-C).
pub fn train(cfg: &TrainConfig, stop: &AtomicBool) -> Result<TrainOutcome, TrainError> {
    let last_path = cfg.out.join(LAST);
    let resumed = if cfg.resume {
        let ck = Checkpoint::load(&last_path).map_err(|e| TrainError::Resume(e.to_string()))?;
        let meta = ck
            .train
            .clone()
            .ok_or_else(|| TrainError::Resume(format!("{} has no training state", last_path.display())))?;
        Some((ck, meta))
    } else {
        None
    };
    // With --resume the saved settings win, so the continuation is the same run.
    let (seed, batch_size, val_split, per_class, augment, opt_kind, schedule, data_dir) = match &resumed {
        Some((_, m)) => (
            m.seed,
            m.batch_size,
            m.val_split,
            m.per_class,
            m.augment,
            m.optimizer.into(),
            m.schedule.into(),
            cfg.data_dir.clone().or(m.data_dir.clone()),
        ),
        None => (
            cfg.seed,
            cfg.batch_size,
            cfg.val_split,
            cfg.per_class,
            cfg.augment,
            cfg.optimizer,
            cfg.schedule,
            cfg.data_dir.clone(),
        ),
    };
    if batch_size == 0 {
        return Err(TrainError::BadBatch);
    }
    let opts = OpenOptions { val_split, seed, per_class, ..OpenOptions::default() };
    let data = Dataset::open(data_dir.as_deref(), &opts)?;
    let class_names = data.class_names();

    let (arch, spec, mut net, mut opt, mut meta) = match resumed {
        Some((ck, m)) => {
            if ck.class_names != class_names {
                return Err(TrainError::Resume(format!(
                    "the checkpoint's classes {:?} differ from the data's {:?}",
                    ck.class_names, class_names
                )));
            }
            let net = ck.network()?;
            let mut opt = Optimizer::new(opt_kind);
            opt.load_state(&net, &ck.tensors)?;
            (ck.arch.clone(), ck.spec, net, opt, m)
        }
        None => {
            let spec = build_arch(&cfg.arch, cfg.input, class_names.len() as u32)?;
            let net = Network::new(&spec, crate::data::mix(&[seed, tag::INIT]));
            let opt = Optimizer::new(opt_kind);
            let meta = TrainMeta {
                epoch: 0,
                step: 0,
                seed,
                batch_size,
                val_split,
                data_dir: data_dir.clone(),
                per_class,
                data: data.source.summary(),
                augment,
                optimizer: opt_kind.into(),
                schedule: schedule.into(),
                scheduler: SchedulerMeta::of(&schedule.scheduler()),
                running: Running::default(),
                history: Vec::new(),
                best_val_accuracy: None,
                rng: "chacha8 streams seeded by splitmix64(seed, purpose, epoch, step)".into(),
            };
            (cfg.arch.clone(), spec, net, opt, meta)
        }
    };
    let (h, w) = match spec.input() {
        shared::spec::Shape::Image { h, w, .. } => (h as usize, w as usize),
        shared::spec::Shape::Flat(n) => (n as usize, 1),
    };
    let mut scheduler = meta.scheduler.restore(schedule);
    let aug = augment.then(AugmentConfig::default);
    let mut skipped: Vec<String> = Vec::new();
    let mut steps_run = 0usize;
    let mut last_good = last_path.exists().then(|| last_path.clone());

    println!(
        "{} on {}: {} training, {} validation images, {} classes ({})",
        arch,
        data.source.summary(),
        data.split.train.len(),
        data.split.val.len(),
        class_names.len(),
        class_names.join(", ")
    );
    if meta.epoch >= cfg.epochs {
        println!("{} already holds {} epochs; raise --epochs to train further", last_path.display(), meta.epoch);
    } else if meta.epoch > 0 || meta.step > 0 {
        println!("resuming at epoch {}, step {} from {}", meta.epoch + 1, meta.step, last_path.display());
    }

    while meta.epoch < cfg.epochs {
        let epoch = meta.epoch;
        let plans = BatchPlan::epoch(&data.split.train, batch_size, seed, epoch);
        let total_steps = plans.len();
        let start_step = meta.step.min(total_steps);
        let loader = Prefetcher::spawn(
            data.source.clone(),
            plans[start_step..].to_vec(),
            LoaderConfig { h, w, augment: aug, skip_bad: cfg.skip_bad, prefetch: 2 },
        );
        let bar = progress_bar(cfg.progress, total_steps, epoch + 1, cfg.epochs);
        bar.set_position(start_step as u64);
        let mut run = meta.running;
        let started = Instant::now();
        let mut interrupted = false;
        for (k, batch) in loader.enumerate() {
            let step = start_step + k;
            let batch = batch?;
            note_skipped(&mut skipped, &batch.skipped);
            run.skipped += batch.skipped.len() as u64;
            if !batch.labels.is_empty() {
                let mut rng = stream_rng(&[seed, tag::DROPOUT, epoch as u64, step as u64]);
                let logits = net.forward(batch.x.view(), Mode::Train(&mut rng));
                let (loss, grad, correct) = try_softmax_cross_entropy(logits.view(), &batch.labels)?;
                if !loss.is_finite() {
                    bar.abandon();
                    return Err(TrainError::NonFinite { value: loss, epoch: epoch + 1, step: step + 1, last_good });
                }
                net.backward(grad.view());
                opt.step(&mut net);
                let n = batch.labels.len() as u64;
                run.loss_sum += loss as f64 * n as f64;
                run.correct += correct as u64;
                run.seen += n;
            }
            let elapsed = run.seconds + started.elapsed().as_secs_f64();
            bar.set_position(step as u64 + 1);
            bar.set_message(format!(
                "loss: {:.4} - accuracy: {:.4} - {:.1} img/s",
                run.loss_sum / run.seen.max(1) as f64,
                run.correct as f64 / run.seen.max(1) as f64,
                run.seen as f64 / elapsed.max(1e-9)
            ));
            steps_run += 1;
            let hit_max = cfg.max_steps.is_some_and(|m| steps_run >= m);
            if (stop.load(Ordering::SeqCst) || hit_max) && step + 1 < total_steps {
                meta.step = step + 1;
                interrupted = true;
                break;
            }
        }
        run.seconds += started.elapsed().as_secs_f64();
        if interrupted {
            bar.abandon();
            meta.running = run;
            meta.scheduler = SchedulerMeta::of(&scheduler);
            let ck = Checkpoint::capture(&arch, &net, &class_names, Some(&opt), Some(meta.clone()));
            ck.save(&last_path)?;
            println!(
                "interrupted: saved epoch {} step {}/{} to {} (continue with --resume)",
                epoch + 1,
                meta.step,
                total_steps,
                last_path.display()
            );
            return Ok(outcome(&meta, StopReason::Interrupted, last_path, skipped, class_names));
        }
        bar.finish_and_clear();

        // Validation, with the moving BN statistics and no dropout.
        let val = if data.split.val.is_empty() {
            None
        } else {
            let r = evaluate(&mut net, data.source.clone(), &data.split.val, batch_size, cfg.skip_bad)?;
            note_skipped(&mut skipped, &r.skipped);
            Some(r)
        };
        let loss = (run.loss_sum / run.seen.max(1) as f64) as f32;
        if let Some(v) = val.as_ref().filter(|v| !v.loss.is_finite() && v.images > 0) {
            return Err(TrainError::NonFinite { value: v.loss, epoch: epoch + 1, step: total_steps, last_good });
        }
        let record = EpochRecord {
            epoch: epoch + 1,
            loss,
            accuracy: run.correct as f32 / run.seen.max(1) as f32,
            val_loss: val.as_ref().map(|v| v.loss),
            val_accuracy: val.as_ref().map(|v| v.accuracy),
            lr: opt.lr(),
            seconds: run.seconds,
            images_per_sec: run.seen as f64 / run.seconds.max(1e-9),
        };
        println!("{}", keras_line(&record, cfg.epochs, total_steps));
        let next_lr = scheduler.next_lr(opt.lr(), record.val_loss.unwrap_or(record.loss));
        if next_lr != opt.lr() {
            println!("learning rate {} -> {}", opt.lr(), next_lr);
            opt.set_lr(next_lr);
        }
        meta.history.push(record.clone());
        meta.epoch += 1;
        meta.step = 0;
        meta.running = Running::default();
        meta.scheduler = SchedulerMeta::of(&scheduler);
        let improved = match (record.val_accuracy, meta.best_val_accuracy) {
            (Some(a), Some(b)) => a > b,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if improved {
            meta.best_val_accuracy = record.val_accuracy;
        }
        let ck = Checkpoint::capture(&arch, &net, &class_names, Some(&opt), Some(meta.clone()));
        ck.save(&last_path)?;
        if improved {
            ck.save(&cfg.out.join(BEST))?;
        }
        last_good = Some(last_path.clone());
        crate::report::write_history(&cfg.out, &meta.history)?;
        if !skipped.is_empty() {
            println!("skipped {} unreadable images so far (first: {})", skipped.len(), skipped[0]);
        }
        let asked_to_stop = stop.load(Ordering::SeqCst) || cfg.max_steps.is_some_and(|m| steps_run >= m);
        if asked_to_stop && meta.epoch < cfg.epochs {
            println!("interrupted after epoch {}: saved {} (continue with --resume)", meta.epoch, last_path.display());
            return Ok(outcome(&meta, StopReason::Interrupted, last_path, skipped, class_names));
        }
    }
    if !skipped.is_empty() {
        println!("skipped {} unreadable images in total (--skip-bad)", skipped.len());
    }
    Ok(outcome(&meta, StopReason::Finished, last_path, skipped, class_names))
}

fn outcome(
    meta: &TrainMeta,
    stop: StopReason,
    checkpoint: PathBuf,
    skipped: Vec<String>,
    class_names: Vec<String>,
) -> TrainOutcome {
    TrainOutcome { history: meta.history.clone(), stop, checkpoint, skipped, class_names, epochs_done: meta.epoch }
}

/// Remember each unreadable image once (it fails again every epoch).
fn note_skipped(all: &mut Vec<String>, new: &[String]) {
    for s in new {
        if !all.contains(s) {
            all.push(s.clone());
        }
    }
}

/// Keras's end-of-epoch line.
pub fn keras_line(r: &EpochRecord, epochs: usize, steps: usize) -> String {
    let mut s = format!(
        "Epoch {}/{} - {steps} steps - {:.0}s - loss: {:.4} - accuracy: {:.4}",
        r.epoch, epochs, r.seconds, r.loss, r.accuracy
    );
    if let (Some(l), Some(a)) = (r.val_loss, r.val_accuracy) {
        s.push_str(&format!(" - val_loss: {l:.4} - val_accuracy: {a:.4}"));
    }
    s.push_str(&format!(" - {:.1} img/s", r.images_per_sec));
    s
}

fn progress_bar(enabled: bool, steps: usize, epoch: usize, epochs: usize) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(steps as u64),
        if enabled { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() },
    );
    let style = ProgressStyle::with_template("{prefix} [{bar:28.cyan/blue}] {pos}/{len} {elapsed_precise} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(format!("Epoch {epoch}/{epochs}"));
    bar
}

/// The checkpoint path inside `out` that `eval`/`predict` default to: the
/// best one if there is one, else the last.
pub fn default_checkpoint(out: &Path) -> PathBuf {
    let best = out.join(BEST);
    if best.exists() {
        best
    } else {
        out.join(LAST)
    }
}

/// `host train`'s arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct TrainArgs {
    /// Class-folder dataset: one subfolder per class (like flower_photos/daisy/*.jpg).
    /// Default: the embedded synthetic shapes.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Preset: alexnet, alexnet-micro or alexnet-tiny (default: alexnet with --data, else alexnet-micro).
    #[arg(long)]
    pub arch: Option<String>,
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
    #[arg(long, default_value = "adam", value_parser = ["adam", "sgd"])]
    pub optimizer: String,
    /// Learning rate (default: 0.001 for adam, 0.01 for sgd).
    #[arg(long)]
    pub lr: Option<f32>,
    /// constant, step:EVERY:FACTOR (e.g. step:5:0.1) or plateau:PATIENCE:FACTOR[:MIN_LR]
    /// (default: constant with --data, step:20:0.25 on the embedded set).
    #[arg(long)]
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
        }
        cfg.input = self.input;
        cfg.epochs = self.epochs.unwrap_or(cfg.epochs);
        cfg.batch_size = self.batch_size.unwrap_or(cfg.batch_size);
        cfg.optimizer = match (self.optimizer.as_str(), self.lr) {
            ("sgd", lr) => {
                let OptimizerKind::Sgd { lr: d, momentum, weight_decay } = OptimizerKind::sgd() else { unreachable!() };
                OptimizerKind::Sgd { lr: lr.unwrap_or(d), momentum, weight_decay }
            }
            (_, lr) => {
                let OptimizerKind::Adam { lr: d, beta1, beta2, epsilon } = OptimizerKind::adam() else {
                    unreachable!()
                };
                OptimizerKind::Adam { lr: lr.unwrap_or(d), beta1, beta2, epsilon }
            }
        };
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
pub fn run_cli(args: &TrainArgs) -> anyhow::Result<()> {
    let cfg = args.config().map_err(anyhow::Error::msg)?;
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    // Fails only if a handler is already installed (a second call in one process).
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\nCtrl-C: stopping after this step and saving a checkpoint (press again to quit now)");
    });
    let t0 = Instant::now();
    let out = train(&cfg, &stop)?;
    let last = out.history.last();
    println!(
        "{} after {} epochs in {:.1}s; checkpoint {}{}",
        if out.stop == StopReason::Finished { "done" } else { "stopped" },
        out.epochs_done,
        t0.elapsed().as_secs_f64(),
        out.checkpoint.display(),
        last.and_then(|r| r.val_accuracy).map(|a| format!("; val_accuracy {a:.4}")).unwrap_or_default()
    );
    println!("history: {0}/history.csv, {0}/history.json, plots: {0}/curves.png", cfg.out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

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
        assert_eq!(embedded.arch, "alexnet-micro");
        assert_eq!((embedded.epochs, embedded.batch_size), (DEFAULT_EMBEDDED_EPOCHS, DEFAULT_EMBEDDED_BATCH));
        assert_eq!(embedded.schedule, DEFAULT_EMBEDDED_SCHEDULE);
        let flowers = cfg(&["--data", "flower_photos"]).unwrap();
        assert_eq!((flowers.arch.as_str(), flowers.batch_size), ("alexnet", 128));
        assert_eq!(flowers.schedule, LrSchedule::Constant);
        assert_eq!(flowers.optimizer, OptimizerKind::adam());
        let sgd = cfg(&["--optimizer", "sgd", "--lr", "0.05"]).unwrap();
        assert!(matches!(sgd.optimizer, OptimizerKind::Sgd { lr, .. } if lr == 0.05));
        assert!(cfg(&["--lr", "-1"]).is_err());
        assert!(cfg(&["--optimizer", "rmsprop"]).is_err());
    }

    #[test]
    fn presets_build_including_the_tiny_one() {
        assert!(build_arch("alexnet", None, 5).is_ok());
        assert!(build_arch("alexnet-micro", Some(99), 6).is_ok());
        let tiny = build_arch(TINY_ARCH, None, 3).unwrap();
        assert!(tiny.params().0 < 20_000);
        assert!(matches!(build_arch("alexnet", Some(32), 5), Err(TrainError::Spec { .. })));
        assert!(matches!(build_arch("vgg", None, 5), Err(TrainError::UnknownArch(_))));
    }
}
