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
use crate::arch::ArchSource;
use crate::checkpoint::{Checkpoint, CheckpointError, Running, SchedulerMeta, TrainMeta};
use crate::data::augment::AugmentConfig;
use crate::data::{stream_rng, tag, BatchPlan, DataError, Dataset, LoaderConfig, OpenOptions, Prefetcher};
use crate::eval::{evaluate, EvalError};
use crate::nn::{try_softmax_cross_entropy, Mode, Network, NnError};
use crate::optim::{LrSchedule, Optimizer, OptimizerKind};
use crate::report::{EpochRecord, ReportError};
use crate::runs::{BEST, LAST};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use shared::spec::{Arch, ModelSpec};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Build preset `arch` for `classes` classes at `input` (default: the preset's).
pub fn build_arch(arch: Arch, input: Option<u32>, classes: u32) -> Result<ModelSpec, TrainError> {
    let input = input.unwrap_or(arch.default_input());
    arch.build(input, classes).map_err(|e| TrainError::Spec {
        arch: arch.name().to_string(),
        input,
        what: e.to_string(),
    })
}

/// Everything `host train` can be told.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// Class-folder dataset; None for the embedded synthetic set.
    pub data_dir: Option<PathBuf>,
    /// A preset, or a stack file (Keras `to_json()` or our layer JSON).
    pub arch: ArchSource,
    /// Whether `arch` was asked for (`--arch`) rather than defaulted: with
    /// `resume`, an asked-for stack must be the checkpoint's.
    pub arch_given: bool,
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
            arch: ArchSource::Preset(if embedded { Arch::AlexNetMicro } else { Arch::AlexNet }),
            arch_given: false,
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
    /// Not transparent: the StdoutError itself must stay in the error chain,
    /// where `main` looks for a closed pipe.
    #[error("{0}")]
    Stdout(#[from] crate::out::StdoutError),
    #[error("{arch} at {input}x{input}x3: {what}")]
    Spec { arch: String, input: u32, what: String },
    #[error("--arch: {0}")]
    Arch(String),
    #[error("--batch-size must be at least 1")]
    BadBatch,
    #[error("--resume: {0}")]
    Resume(String),
    #[error("epoch {epoch} trained on no image: all {skipped} were unreadable and skipped (first: {first})")]
    NothingTrained { epoch: usize, skipped: u64, first: String },
    #[error(transparent)]
    Budget(#[from] crate::budget::BudgetError),
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
            EvalError::Budget(b) => TrainError::Budget(b),
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

/// The settings a run actually uses: the configuration's for a fresh run,
/// the checkpoint's for `--resume` (so the continuation is the same run).
#[derive(Clone, Debug)]
struct RunSettings {
    seed: u64,
    batch_size: usize,
    val_split: f32,
    per_class: usize,
    augment: bool,
    optimizer: OptimizerKind,
    schedule: LrSchedule,
    data_dir: Option<PathBuf>,
}

impl RunSettings {
    fn fresh(cfg: &TrainConfig) -> RunSettings {
        RunSettings {
            seed: cfg.seed,
            batch_size: cfg.batch_size,
            val_split: cfg.val_split,
            per_class: cfg.per_class,
            augment: cfg.augment,
            optimizer: cfg.optimizer,
            schedule: cfg.schedule,
            data_dir: cfg.data_dir.clone(),
        }
    }

    /// The saved run's settings. A `--data` given now must be the recorded
    /// folder, unless that folder is gone (the same images moved): then the
    /// new one is used and recorded.
    fn resumed(cfg: &TrainConfig, m: &TrainMeta) -> Result<RunSettings, TrainError> {
        match (&cfg.data_dir, &m.data_dir) {
            (Some(now), Some(then)) if then.exists() && !same_file(now, then) => {
                return Err(TrainError::Resume(format!(
                    "--data {} is not the folder the run was trained on ({}); \
                     leave --data out, or start a new run with another --out",
                    now.display(),
                    then.display()
                )))
            }
            (Some(now), None) => {
                return Err(TrainError::Resume(format!(
                    "--data {}: the run was trained on the embedded set; start a new run with another --out",
                    now.display()
                )))
            }
            _ => {}
        }
        Ok(RunSettings {
            seed: m.seed,
            batch_size: m.batch_size,
            val_split: m.val_split,
            per_class: m.per_class,
            augment: m.augment,
            optimizer: m.optimizer.into(),
            schedule: m.schedule.into(),
            data_dir: cfg.data_dir.clone().or(m.data_dir.clone()),
        })
    }
}

/// What a run carries from step to step and saves in every checkpoint.
struct TrainState {
    /// The preset name recorded in checkpoints.
    arch: String,
    net: Network,
    opt: Optimizer,
    meta: TrainMeta,
}

impl TrainState {
    /// A new network and optimizer, initialised from the seed.
    fn fresh(cfg: &TrainConfig, s: &RunSettings, data: &Dataset) -> Result<TrainState, TrainError> {
        let stack = cfg.arch.build(cfg.input, data.class_names().len() as u32).map_err(TrainError::Arch)?;
        let what = format!(
            "training {} at {}x{} with batch {}",
            stack.name,
            stack.spec.input().hw().0,
            stack.spec.input().hw().1,
            s.batch_size
        );
        crate::budget::check_network(&what, &stack.spec, s.batch_size as u64, true)?;
        let meta = TrainMeta {
            epoch: 0,
            step: 0,
            seed: s.seed,
            batch_size: s.batch_size,
            val_split: s.val_split,
            data_dir: s.data_dir.clone(),
            per_class: s.per_class,
            data: data.source.summary(),
            augment: s.augment,
            optimizer: s.optimizer.into(),
            schedule: s.schedule.into(),
            scheduler: SchedulerMeta::of(&s.schedule.scheduler()),
            running: Running::default(),
            history: Vec::new(),
            best_val_accuracy: None,
            rng: "chacha8 streams seeded by splitmix64(seed, purpose, epoch, step)".into(),
        };
        let mut net = Network::new(&stack.spec, crate::data::mix(&[s.seed, tag::INIT]));
        // A Keras stack file's Rescaling/Normalization (or raw pixels without one).
        net.set_preprocess(stack.preprocess)?;
        Ok(TrainState { arch: stack.name, net, opt: Optimizer::new(s.optimizer), meta })
    }

    /// The network and optimizer state of a saved run, on data with its classes.
    fn resumed(
        cfg: &TrainConfig,
        ck: Checkpoint,
        mut meta: TrainMeta,
        s: &RunSettings,
        data: &Dataset,
    ) -> Result<TrainState, TrainError> {
        // An --arch or --input given now must describe the saved network.
        let (h, w) = ck.spec.input().hw();
        let contradicts = if cfg.arch_given {
            let input = cfg.input.or(Some(h as u32));
            cfg.arch.build(input, data.class_names().len() as u32).map_err(TrainError::Arch)?.spec != ck.spec
        } else {
            cfg.input.is_some_and(|i| (i as usize, i as usize) != (h, w))
        };
        if contradicts {
            return Err(TrainError::Resume(format!(
                "--arch/--input ask for another network than the run's ({}, input {h}x{w}); \
                 leave them out, or start a new run with another --out",
                ck.arch
            )));
        }
        crate::budget::check_network("training the saved network", &ck.spec, s.batch_size as u64, true)
            .map_err(|e| TrainError::Resume(e.to_string()))?;
        meta.data_dir = s.data_dir.clone();
        if ck.class_names != data.class_names() {
            return Err(TrainError::Resume(format!(
                "the checkpoint's classes {:?} differ from the data's {:?}",
                ck.class_names,
                data.class_names()
            )));
        }
        let net = ck.network()?;
        let mut opt = Optimizer::new(s.optimizer);
        opt.load_state(&net, &ck.tensors)?;
        Ok(TrainState { arch: ck.arch, net, opt, meta })
    }

    /// Save the whole state (weights, optimizer, position) to `path`.
    fn save(&self, class_names: &[String], path: &Path) -> Result<(), TrainError> {
        let ck = Checkpoint::capture(&self.arch, &self.net, class_names, Some(&self.opt), Some(self.meta.clone()));
        ck.save(path)?;
        Ok(())
    }
}

/// Whether `a` and `b` name the same file or folder (their real paths agree).
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// The saved run `--resume` continues: `out/last.safetensors` and its state.
fn load_resume(last_path: &Path) -> Result<(Checkpoint, TrainMeta), TrainError> {
    let ck = Checkpoint::load(last_path).map_err(|e| TrainError::Resume(e.to_string()))?;
    let meta =
        ck.train.clone().ok_or_else(|| TrainError::Resume(format!("{} has no training state", last_path.display())))?;
    Ok((ck, meta))
}

/// Everything one run shares across epochs besides the state.
struct RunContext<'a> {
    cfg: &'a TrainConfig,
    settings: RunSettings,
    data: Dataset,
    class_names: Vec<String>,
    last_path: PathBuf,
    stop: &'a AtomicBool,
    /// Unreadable images seen so far, each once.
    skipped: Vec<String>,
    /// Steps run by this process (for `max_steps`).
    steps_run: usize,
    /// The newest checkpoint that holds a finished state.
    last_good: Option<PathBuf>,
}

/// How one epoch's training pass ended.
enum EpochPass {
    /// Every step done; the partial sums of the whole epoch.
    Done { run: Running, steps: usize },
    /// Stopped (Ctrl-C or `max_steps`) after `meta.step` steps; state saved.
    Interrupted,
}

impl RunContext<'_> {
    fn asked_to_stop(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || self.cfg.max_steps.is_some_and(|m| self.steps_run >= m)
    }

    /// Train through the rest of epoch `st.meta.epoch`, from step `st.meta.step`.
    fn train_epoch(&mut self, st: &mut TrainState) -> Result<EpochPass, TrainError> {
        let s = &self.settings;
        let epoch = st.meta.epoch;
        let plans = BatchPlan::epoch(&self.data.split.train, s.batch_size, s.seed, epoch);
        let total_steps = plans.len();
        let start_step = st.meta.step.min(total_steps);
        let (h, w) = crate::data::image_hw(st.net.spec().input())?;
        let loader = Prefetcher::spawn(
            self.data.source.clone(),
            plans[start_step..].to_vec(),
            LoaderConfig {
                h,
                w,
                augment: s.augment.then(AugmentConfig::default),
                skip_bad: self.cfg.skip_bad,
                prefetch: 2,
            },
        );
        let bar = progress_bar(self.cfg.progress, total_steps, epoch + 1, self.cfg.epochs);
        bar.set_position(start_step as u64);
        let mut run = st.meta.running;
        let started = Instant::now();
        for (k, batch) in loader.enumerate() {
            let step = start_step + k;
            let batch = batch?;
            note_skipped(&mut self.skipped, &batch.skipped);
            run.skipped += batch.skipped.len() as u64;
            if !batch.labels.is_empty() {
                let mut rng = stream_rng(&[s.seed, tag::DROPOUT, epoch as u64, step as u64]);
                let logits = st.net.forward(batch.x.view(), Mode::Train(&mut rng));
                let (loss, grad, correct) = try_softmax_cross_entropy(logits.view(), &batch.labels)?;
                if !loss.is_finite() {
                    bar.abandon();
                    let last_good = self.last_good.clone();
                    return Err(TrainError::NonFinite { value: loss, epoch: epoch + 1, step: step + 1, last_good });
                }
                st.net.backward(grad.view());
                st.opt.step(&mut st.net);
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
            self.steps_run += 1;
            if self.asked_to_stop() && step + 1 < total_steps {
                run.seconds += started.elapsed().as_secs_f64();
                bar.abandon();
                st.meta.step = step + 1;
                st.meta.running = run;
                self.save_interrupted(st, total_steps)?;
                return Ok(EpochPass::Interrupted);
            }
        }
        run.seconds += started.elapsed().as_secs_f64();
        bar.finish_and_clear();
        if run.seen == 0 {
            let first = self.skipped.first().cloned().unwrap_or_else(|| "none".into());
            return Err(TrainError::NothingTrained { epoch: epoch + 1, skipped: run.skipped, first });
        }
        Ok(EpochPass::Done { run, steps: total_steps })
    }

    /// Save a mid-epoch state so `--resume` continues at the next step.
    fn save_interrupted(&mut self, st: &mut TrainState, total_steps: usize) -> Result<(), TrainError> {
        st.save(&self.class_names, &self.last_path)?;
        crate::outln!(
            "interrupted: saved epoch {} step {}/{} to {} (continue with --resume)",
            st.meta.epoch + 1,
            st.meta.step,
            total_steps,
            self.last_path.display()
        )?;
        Ok(())
    }

    /// The learning-rate scheduler as of the state's last finished epoch.
    fn scheduler_of(&self, st: &TrainState) -> crate::optim::LrScheduler {
        st.meta.scheduler.restore(self.settings.schedule)
    }

    /// Validation (moving BN statistics, no dropout) and the epoch's record.
    fn finish_epoch(&mut self, st: &mut TrainState, run: Running, steps: usize) -> Result<EpochRecord, TrainError> {
        let epoch = st.meta.epoch;
        let val = if self.data.split.val.is_empty() {
            None
        } else {
            let r = evaluate(
                &mut st.net,
                self.data.source.clone(),
                &self.data.split.val,
                self.settings.batch_size,
                self.cfg.skip_bad,
            )?;
            note_skipped(&mut self.skipped, &r.skipped);
            Some(r)
        };
        if let Some(v) = val.as_ref().filter(|v| !v.loss.is_finite() && v.images > 0) {
            let last_good = self.last_good.clone();
            return Err(TrainError::NonFinite { value: v.loss, epoch: epoch + 1, step: steps, last_good });
        }
        Ok(EpochRecord {
            epoch: epoch + 1,
            loss: (run.loss_sum / run.seen.max(1) as f64) as f32,
            accuracy: run.correct as f32 / run.seen.max(1) as f32,
            val_loss: val.as_ref().map(|v| v.loss),
            val_accuracy: val.as_ref().map(|v| v.accuracy),
            lr: st.opt.lr(),
            seconds: run.seconds,
            images_per_sec: run.seen as f64 / run.seconds.max(1e-9),
        })
    }

    /// Step the schedule, advance the state past the epoch, save `last` (and
    /// `best` when validation accuracy improved) and the history files.
    fn commit_epoch(&mut self, st: &mut TrainState, record: EpochRecord) -> Result<(), TrainError> {
        let mut scheduler = self.scheduler_of(st);
        let next_lr = scheduler.next_lr(st.opt.lr(), record.val_loss.unwrap_or(record.loss));
        // A closed or full stdout ends the run, but only after the epoch is saved.
        let mut printed = Ok(());
        if next_lr != st.opt.lr() {
            printed = crate::outln!("learning rate {} -> {}", st.opt.lr(), next_lr);
            st.opt.set_lr(next_lr);
        }
        let improved = match (record.val_accuracy, st.meta.best_val_accuracy) {
            (Some(a), Some(b)) => a > b,
            (Some(_), None) => true,
            (None, _) => false,
        };
        let meta = &mut st.meta;
        meta.history.push(record.clone());
        meta.epoch += 1;
        meta.step = 0;
        meta.running = Running::default();
        meta.scheduler = SchedulerMeta::of(&scheduler);
        if improved {
            meta.best_val_accuracy = record.val_accuracy;
        }
        st.save(&self.class_names, &self.last_path)?;
        if improved {
            // The same state as `last`: its file again, not a second capture
            // and write of 700 MB (AlexNet with Adam's state).
            let best = self.cfg.out.join(BEST);
            crate::atomic::copy_atomic(&self.last_path, &best)
                .map_err(|e| CheckpointError::Write { path: best, source: e.source })?;
        }
        self.last_good = Some(self.last_path.clone());
        crate::report::write_history(&self.cfg.out, &st.meta.history)?;
        printed?;
        if !self.skipped.is_empty() {
            crate::outln!("skipped {} unreadable images so far (first: {})", self.skipped.len(), self.skipped[0])?;
        }
        Ok(())
    }

    fn outcome(self, st: &TrainState, stop: StopReason) -> TrainOutcome {
        TrainOutcome {
            history: st.meta.history.clone(),
            stop,
            checkpoint: self.last_path,
            skipped: self.skipped,
            class_names: self.class_names,
            epochs_done: st.meta.epoch,
        }
    }
}

/// Train as configured; `stop` is polled between steps (set by Ctrl-C).
pub fn train(cfg: &TrainConfig, stop: &AtomicBool) -> Result<TrainOutcome, TrainError> {
    let last_path = cfg.out.join(LAST);
    let resumed = if cfg.resume { Some(load_resume(&last_path)?) } else { None };
    let settings = match &resumed {
        Some((_, m)) => RunSettings::resumed(cfg, m)?,
        None => RunSettings::fresh(cfg),
    };
    if settings.batch_size == 0 {
        return Err(TrainError::BadBatch);
    }
    let opts = OpenOptions {
        val_split: settings.val_split,
        seed: settings.seed,
        per_class: settings.per_class,
        ..OpenOptions::default()
    };
    let data = Dataset::open(settings.data_dir.as_deref(), &opts)?;
    let mut st = match resumed {
        Some((ck, meta)) => TrainState::resumed(cfg, ck, meta, &settings, &data)?,
        None => TrainState::fresh(cfg, &settings, &data)?,
    };
    // The loss applies softmax to the logits itself: a Softmax layer at the
    // end would apply it twice (a Dense(activation=softmax) is the form to train).
    if st.net.spec().ends_in_softmax() {
        return Err(TrainError::Arch(format!(
            "{} ends in a Softmax layer; training's cross-entropy applies softmax itself: end it in \
             Dense(activation=\"softmax\") instead",
            st.arch
        )));
    }
    let class_names = data.class_names();
    crate::outln!(
        "{} on {}: {} training, {} validation images, {} classes ({})",
        st.arch,
        data.source.summary(),
        data.split.train.len(),
        data.split.val.len(),
        class_names.len(),
        class_names.join(", ")
    )?;
    if st.meta.epoch >= cfg.epochs {
        crate::outln!(
            "{} already holds {} epochs; raise --epochs to train further",
            last_path.display(),
            st.meta.epoch
        )?;
    } else if st.meta.epoch > 0 || st.meta.step > 0 {
        crate::outln!("resuming at epoch {}, step {} from {}", st.meta.epoch + 1, st.meta.step, last_path.display())?;
    }
    let mut ctx = RunContext {
        cfg,
        settings,
        data,
        class_names,
        last_good: last_path.exists().then(|| last_path.clone()),
        last_path,
        stop,
        skipped: Vec::new(),
        steps_run: 0,
    };
    while st.meta.epoch < cfg.epochs {
        let (run, steps) = match ctx.train_epoch(&mut st)? {
            EpochPass::Done { run, steps } => (run, steps),
            EpochPass::Interrupted => return Ok(ctx.outcome(&st, StopReason::Interrupted)),
        };
        let record = ctx.finish_epoch(&mut st, run, steps)?;
        // Printed before the save (the tutorial's order), failing after it.
        let printed = crate::outln!("{}", keras_line(&record, cfg.epochs, steps));
        ctx.commit_epoch(&mut st, record)?;
        printed?;
        if ctx.asked_to_stop() && st.meta.epoch < cfg.epochs {
            crate::outln!(
                "interrupted after epoch {}: saved {} (continue with --resume)",
                st.meta.epoch,
                ctx.last_path.display()
            )?;
            return Ok(ctx.outcome(&st, StopReason::Interrupted));
        }
    }
    if !ctx.skipped.is_empty() {
        crate::outln!("skipped {} unreadable images in total (--skip-bad)", ctx.skipped.len())?;
    }
    Ok(ctx.outcome(&st, StopReason::Finished))
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
