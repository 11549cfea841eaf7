//! Prefetching batch loader: a background thread decodes, resizes and
//! augments the next batches (in parallel over the batch, on the loader's
//! own low-priority threads) while the main thread runs the training step,
//! and hands them over through a bounded channel so memory stays at
//! `prefetch` batches.
//!
//! What goes into each batch, and each image's augmentation, is fixed up
//! front by [`BatchPlan`]s, so results do not depend on thread timing.
use super::augment::{self, AugmentConfig};
use super::error::DataError;
use super::rng::{mix, stream_rng, tag};
use super::source::ImageSource;
use ndarray::Array4;
use rand::seq::SliceRandom;
use rayon::prelude::*;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

/// One batch: NHWC images in [0, 1] and their labels.
#[derive(Debug)]
pub struct Batch {
    pub x: Array4<f32>,
    pub labels: Vec<usize>,
    /// Source indices of the images, in batch order.
    pub indices: Vec<usize>,
    /// Images of this batch that could not be read and were skipped
    /// (`--skip-bad`): their descriptions (paths) and errors.
    pub skipped: Vec<String>,
}

/// Which images make one batch, and the seed of their augmentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchPlan {
    pub indices: Vec<usize>,
    pub aug_seed: u64,
}

impl BatchPlan {
    /// `indices` in order, cut into batches of `batch` (the last may be
    /// smaller, as Keras keeps it); no augmentation seed needed.
    pub fn sequential(indices: &[usize], batch: usize) -> Vec<BatchPlan> {
        indices.chunks(batch.max(1)).map(|c| BatchPlan { indices: c.to_vec(), aug_seed: 0 }).collect()
    }

    /// One training epoch: `train` reshuffled with `(seed, epoch)` (Keras
    /// reshuffles every epoch), cut into batches, each with its own
    /// augmentation seed from `(seed, epoch, step)`.
    pub fn epoch(train: &[usize], batch: usize, seed: u64, epoch: usize) -> Vec<BatchPlan> {
        let mut order = train.to_vec();
        order.shuffle(&mut stream_rng(&[seed, tag::SHUFFLE, epoch as u64]));
        order
            .chunks(batch.max(1))
            .enumerate()
            .map(|(step, c)| BatchPlan {
                indices: c.to_vec(),
                aug_seed: mix(&[seed, tag::AUGMENT, epoch as u64, step as u64]),
            })
            .collect()
    }
}

/// How the loader prepares images.
#[derive(Clone, Debug)]
pub struct LoaderConfig {
    pub h: usize,
    pub w: usize,
    /// Augmentation for training batches; `None` for validation and eval.
    pub augment: Option<AugmentConfig>,
    /// Skip unreadable images (reported in [`Batch::skipped`]) instead of failing.
    pub skip_bad: bool,
    /// Batches prepared ahead of the consumer.
    pub prefetch: usize,
}

/// Build one batch on the calling thread. Each image is decoded and
/// augmented straight into its slot of the batch (no image-sized copy per
/// image; the loader shares the cores with the training step).
pub fn load_batch(source: &dyn ImageSource, plan: &BatchPlan, cfg: &LoaderConfig) -> Result<Batch, DataError> {
    let per = cfg.h * cfg.w * 3;
    let mut x = vec![0f32; plan.indices.len() * per];
    // One slot per image (empty ones if the images have no pixels).
    let slots: Vec<&mut [f32]> = match per {
        0 => plan.indices.iter().map(|_| <&mut [f32]>::default()).collect(),
        _ => x.chunks_mut(per).collect(),
    };
    let loaded: Vec<Result<(), DataError>> = slots
        .into_par_iter()
        .zip(plan.indices.par_iter())
        // One image a job: on the loader's threads, jobs fill the gaps the
        // training step leaves, and a short one fits more of them.
        .with_max_len(1)
        .enumerate()
        .map(|(k, (slot, &i))| {
            // Each image's draw depends only on the batch seed and its
            // slot, so parallel decoding cannot reorder the randomness.
            let p = match &cfg.augment {
                Some(aug) => aug.sample(&mut stream_rng(&[plan.aug_seed, k as u64])),
                None => augment::AugParams::IDENTITY,
            };
            source.load_augmented_into(i, cfg.h, cfg.w, &p, slot)
        })
        .collect();
    let mut labels = Vec::with_capacity(loaded.len());
    let mut indices = Vec::with_capacity(loaded.len());
    let mut skipped = Vec::new();
    let mut kept = 0;
    for (k, (r, &i)) in loaded.into_iter().zip(&plan.indices).enumerate() {
        match r {
            Ok(()) => {
                // Close the gaps that skipped images left (rare: --skip-bad).
                if kept != k {
                    x.copy_within(k * per..(k + 1) * per, kept * per);
                }
                kept += 1;
                labels.push(source.label(i));
                indices.push(i);
            }
            Err(e) if cfg.skip_bad => skipped.push(format!("{}: {e}", source.describe(i))),
            Err(e) => return Err(e),
        }
    }
    x.truncate(kept * per);
    let x = Array4::from_shape_vec((kept, cfg.h, cfg.w, 3), x).expect("kept images fill the batch");
    Ok(Batch { x, labels, indices, skipped })
}

/// The loader's threads: one per core, each at the lowest priority the OS
/// lets a single thread take (nice 19 on Linux; elsewhere a priority is the
/// whole process's, and these keep the default).
///
/// Why: the training step keeps every core busy, so the loader's work
/// (0.6 ms of CPU a 227x227 training image) competes with it. On rayon's
/// global pool, a worker that took a loader job in the middle of a step's
/// parallel layer held that layer's end until the job finished, while the
/// other worker waited; at normal priority on threads of their own, its
/// time slices still take a worker away mid-layer. At the lowest priority
/// the loader runs mostly where the step leaves a core idle (its serial
/// parts, the ends of its parallel layers), and on every core at once when
/// the step waits for a batch. `cargo bench --bench jpeg_train` under `auto`, ten
/// alternating rounds each on an AMD EPYC: `train --data` / step 0.946 on
/// average on the global pool (4 rounds of 10 within 5 %), 0.990 here (9 of
/// 10), 0.985 on threads of their own at normal priority (4 rounds); beside
/// two busy processes, level (docs/performance-log.md, 2026-12-06 evening).
/// `SCHED_IDLE` instead starved it: the step's rayon workers, waiting at
/// each layer's end, left it no time, and the step waited for batches
/// (0.833 in a first round, 2026-12-07).
/// `None` if the pool cannot be built: the loader then runs on rayon's
/// global pool.
fn loader_pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(rayon::current_num_threads())
            .thread_name(|i| format!("batch-loader-{i}"))
            .start_handler(|_| lowest_priority())
            .build()
            .ok()
    })
    .as_ref()
}

/// Give the calling thread the lowest scheduling priority (Linux, where
/// the nice value is per thread). A failure leaves it at its priority.
#[cfg(target_os = "linux")]
fn lowest_priority() {
    // SAFETY: setpriority only reads its arguments; `who = 0` names the
    // calling thread (Linux keeps a nice value per thread).
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, 19);
    }
}

/// Elsewhere a nice value is the whole process's: leave it.
#[cfg(not(target_os = "linux"))]
fn lowest_priority() {}

/// Iterator over batches prepared on a background thread. Dropping it stops
/// the thread (its next send fails) and joins it.
pub struct Prefetcher {
    rx: Option<Receiver<Result<Batch, DataError>>>,
    handle: Option<JoinHandle<()>>,
    len: usize,
}

impl Prefetcher {
    /// Start preparing `plans` in order.
    pub fn spawn(source: Arc<dyn ImageSource>, plans: Vec<BatchPlan>, cfg: LoaderConfig) -> Prefetcher {
        let len = plans.len();
        let (tx, rx) = sync_channel(cfg.prefetch.max(1));
        let handle = std::thread::Builder::new()
            .name("batch-prefetch".into())
            .spawn(move || {
                for plan in &plans {
                    let load = || load_batch(source.as_ref(), plan, &cfg);
                    let r = match loader_pool() {
                        Some(pool) => pool.install(load),
                        None => load(),
                    };
                    let failed = r.is_err();
                    if tx.send(r).is_err() || failed {
                        return;
                    }
                }
            })
            .ok();
        Prefetcher { rx: Some(rx), handle, len }
    }

    /// Number of batches planned.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no batch is planned.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Iterator for Prefetcher {
    type Item = Result<Batch, DataError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.rx.as_ref()?.recv().ok()
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        self.rx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::SyntheticDataset;

    fn cfg(augment: Option<AugmentConfig>) -> LoaderConfig {
        LoaderConfig { h: 16, w: 16, augment, skip_bad: false, prefetch: 2 }
    }

    #[test]
    fn epoch_plans_cover_train_once_and_reshuffle() {
        let train: Vec<usize> = (0..50).collect();
        let e0 = BatchPlan::epoch(&train, 16, 7, 0);
        assert_eq!(e0.iter().map(|p| p.indices.len()).collect::<Vec<_>>(), [16, 16, 16, 2]);
        let mut seen: Vec<usize> = e0.iter().flat_map(|p| p.indices.clone()).collect();
        seen.sort_unstable();
        assert_eq!(seen, train);
        assert_eq!(e0, BatchPlan::epoch(&train, 16, 7, 0));
        assert_ne!(e0[0].indices, BatchPlan::epoch(&train, 16, 7, 1)[0].indices);
    }

    #[test]
    fn prefetched_batches_equal_direct_loads_and_are_deterministic() {
        let src: Arc<dyn ImageSource> = Arc::new(SyntheticDataset::new(4, 3));
        let plans = BatchPlan::epoch(&(0..24).collect::<Vec<_>>(), 5, 11, 2);
        let aug = Some(AugmentConfig::default());
        let a: Vec<Batch> = Prefetcher::spawn(src.clone(), plans.clone(), cfg(aug)).map(|b| b.unwrap()).collect();
        assert_eq!(a.len(), 5);
        for (b, p) in a.iter().zip(&plans) {
            let direct = load_batch(src.as_ref(), p, &cfg(aug)).unwrap();
            assert_eq!(b.x, direct.x);
            assert_eq!(b.labels, p.indices.iter().map(|&i| src.label(i)).collect::<Vec<_>>());
        }
        let plain = load_batch(src.as_ref(), &plans[0], &cfg(None)).unwrap();
        assert_ne!(plain.x, a[0].x, "training batches are augmented");
        assert_eq!(a[4].x.shape(), &[4, 16, 16, 3]);
    }

    /// The loader's priority, where a thread can have its own (Linux).
    #[cfg(target_os = "linux")]
    mod priority {
        use super::*;

        /// The calling thread's nice value.
        fn own_nice() -> i32 {
            // SAFETY: getpriority only reads its arguments; 0 names the calling thread.
            unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
        }

        #[test]
        fn loader_threads_run_at_the_lowest_priority() {
            let before = own_nice();
            let pool = loader_pool().expect("the loader's pool builds");
            let nice: Vec<i32> = pool.broadcast(|_| own_nice());
            assert_eq!(nice, vec![19; pool.current_num_threads()]);
            // The caller's own priority is untouched.
            assert_eq!(own_nice(), before);
        }

        /// A source that notes the nice value of every thread that loads from it.
        struct NotesPriority {
            inner: SyntheticDataset,
            seen: std::sync::Mutex<Vec<i32>>,
        }

        impl ImageSource for NotesPriority {
            fn len(&self) -> usize {
                self.inner.len()
            }
            fn class_names(&self) -> &[String] {
                self.inner.class_names()
            }
            fn label(&self, index: usize) -> usize {
                self.inner.label(index)
            }
            fn load(&self, index: usize, h: usize, w: usize) -> Result<ndarray::Array3<f32>, DataError> {
                self.seen.lock().unwrap_or_else(|e| e.into_inner()).push(own_nice());
                self.inner.load(index, h, w)
            }
            fn describe(&self, index: usize) -> String {
                self.inner.describe(index)
            }
            fn summary(&self) -> String {
                self.inner.summary()
            }
        }

        #[test]
        fn prefetched_images_load_on_the_low_priority_threads() {
            let src = Arc::new(NotesPriority { inner: SyntheticDataset::new(4, 3), seen: Default::default() });
            let plans = BatchPlan::epoch(&(0..24).collect::<Vec<_>>(), 5, 11, 0);
            let batches = Prefetcher::spawn(src.clone(), plans, cfg(Some(AugmentConfig::default()))).count();
            assert_eq!(batches, 5);
            let seen = src.seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
            assert_eq!(seen, vec![19; 24], "every image is decoded on a loader thread");
        }
    }

    #[test]
    fn dropping_early_stops_the_thread() {
        let src: Arc<dyn ImageSource> = Arc::new(SyntheticDataset::new(50, 3));
        let plans = BatchPlan::sequential(&(0..300).collect::<Vec<_>>(), 2);
        let mut p = Prefetcher::spawn(src, plans, cfg(None));
        assert!(p.next().is_some());
        drop(p); // must not hang
    }
}
