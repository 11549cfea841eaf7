//! Threads for the engine's split layers ([`Parallel`]): [`SpinPool`], whose
//! helpers spin between the layers of a run instead of sleeping (what `host
//! simulate` uses), and [`RayonPool`], rayon's pool (kept to compare with).
//!
//! One inference hands out a dozen parallel layers, each a fraction of a
//! millisecond, with short sequential layers (pools, Flatten) between them.
//! A pool whose idle threads go to sleep (rayon's) wakes them for each layer,
//! and a late helper holds back the layer's end. ONNX Runtime's intra-op
//! threads spin between operators for the same reason. Here each helper
//! spins for up to 300 µs (`SPIN`) after its last job, then parks until the next
//! dispatch, so between inferences (decoding the next image) it costs
//! nothing. The jobs of one dispatch write disjoint parts of one output,
//! so the bytes do not depend on which thread runs which job.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use shared::engine::Parallel;

/// Runs the engine's split layers on rayon's thread pool: the threads
/// already exist, but idle ones sleep and are woken for each layer.
#[derive(Clone, Copy, Debug, Default)]
pub struct RayonPool;

impl Parallel for RayonPool {
    fn jobs(&self) -> usize {
        rayon::current_num_threads()
    }
    fn run(&self, jobs: usize, job: &(dyn Fn(usize) + Sync)) {
        use rayon::prelude::*;
        (0..jobs).into_par_iter().for_each(job);
    }
}

/// How long an idle helper spins for the next dispatch before it parks:
/// longer than the sequential layers between two parallel ones (tens of
/// microseconds), far shorter than decoding an image.
const SPIN: Duration = Duration::from_micros(300);

/// One dispatch's job, as a raw pointer: valid while its [`Parallel::run`]
/// call has jobs left, which the claim counter's epoch guards.
#[derive(Clone, Copy)]
struct Job(*const (dyn Fn(usize) + Sync));

// SAFETY: the pointee is `Sync`, and a helper calls it only for a job index
// it claimed in the pointer's own epoch, while the dispatching call waits.
unsafe impl Send for Job {}

/// What the dispatcher and its helpers share.
struct Shared {
    /// Dispatch number (upper 32 bits) and the next unclaimed job index
    /// (lower 32): a helper that read an older dispatch's job cannot claim
    /// an index of a newer one.
    claim: AtomicU64,
    /// Jobs finished in the current dispatch.
    done: AtomicUsize,
    /// The current dispatch: its number, job and job count.
    current: Mutex<(u32, Option<Job>, usize)>,
    /// A job panicked (the dispatcher panics in turn).
    panicked: AtomicBool,
    /// Helpers parked (after [`SPIN`] without work), to be woken.
    sleeping: Vec<(AtomicBool, OnceLock<Thread>)>,
}

impl Shared {
    /// Claim the next job of dispatch `epoch` (of `jobs`), if any is left.
    fn claim(&self, epoch: u32, jobs: usize) -> Option<usize> {
        let mut v = self.claim.load(SeqCst);
        loop {
            let (e, i) = ((v >> 32) as u32, (v & 0xFFFF_FFFF) as usize);
            if e != epoch || i >= jobs {
                return None;
            }
            match self.claim.compare_exchange_weak(v, v + 1, SeqCst, SeqCst) {
                Ok(_) => return Some(i),
                Err(now) => v = now,
            }
        }
    }

    /// Run the claimed job `i`, counting it done even if it panics.
    fn run_one(&self, job: &(dyn Fn(usize) + Sync), i: usize) {
        if catch_unwind(AssertUnwindSafe(|| job(i))).is_err() {
            self.panicked.store(true, SeqCst);
        }
        self.done.fetch_add(1, SeqCst);
    }
}

/// A fixed set of spinning helper threads plus the calling thread.
pub struct SpinPool {
    shared: Arc<Shared>,
    threads: usize,
    /// One dispatch at a time (the engine never nests them; two callers on
    /// different threads take turns).
    dispatch: Mutex<u32>,
}

impl SpinPool {
    /// A pool of `threads` in all: the caller and `threads - 1` helpers.
    pub fn new(threads: usize) -> SpinPool {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            claim: AtomicU64::new(0),
            done: AtomicUsize::new(0),
            current: Mutex::new((0, None, 0)),
            panicked: AtomicBool::new(false),
            sleeping: (1..threads).map(|_| (AtomicBool::new(false), OnceLock::new())).collect(),
        });
        for h in 0..threads - 1 {
            let s = Arc::clone(&shared);
            let spawned = std::thread::Builder::new().name(format!("engine-{h}")).spawn(move || helper(&s, h));
            if let Ok(handle) = spawned {
                let _ = shared.sleeping[h].1.set(handle.thread().clone());
            }
        }
        SpinPool { shared, threads, dispatch: Mutex::new(0) }
    }

    /// The process's pool, as many threads as rayon's (`RAYON_NUM_THREADS`
    /// or the CPU count), started on first use.
    pub fn global() -> &'static SpinPool {
        static POOL: OnceLock<SpinPool> = OnceLock::new();
        POOL.get_or_init(|| SpinPool::new(rayon::current_num_threads()))
    }
}

/// A helper's life: spin for a dispatch, run what it can claim of it, and
/// park when none came for [`SPIN`]. It lives as long as the process.
fn helper(s: &Shared, index: usize) {
    let mut seen = 0u32;
    let mut idle_since = Instant::now();
    loop {
        let epoch = (s.claim.load(SeqCst) >> 32) as u32;
        if epoch == seen {
            if idle_since.elapsed() < SPIN {
                std::hint::spin_loop();
                continue;
            }
            let flag = &s.sleeping[index].0;
            flag.store(true, SeqCst);
            // Checked again after raising the flag: a dispatch that came in
            // between either sees the flag (and unparks) or is seen here.
            if (s.claim.load(SeqCst) >> 32) as u32 == seen {
                std::thread::park();
            }
            flag.store(false, SeqCst);
            continue;
        }
        seen = epoch;
        let (e, job, jobs) = *s.current.lock().unwrap_or_else(|p| p.into_inner());
        if let (true, Some(job)) = (e == epoch, job) {
            while let Some(i) = s.claim(epoch, jobs) {
                // SAFETY: `i` was claimed in the job's own dispatch, which
                // waits for it to finish before its job goes out of scope.
                s.run_one(unsafe { &*job.0 }, i);
            }
        }
        idle_since = Instant::now();
    }
}

impl Parallel for SpinPool {
    fn jobs(&self) -> usize {
        self.threads
    }

    fn run(&self, jobs: usize, job: &(dyn Fn(usize) + Sync)) {
        if self.threads == 1 || jobs <= 1 {
            (0..jobs).for_each(job);
            return;
        }
        let mut epoch = self.dispatch.lock().unwrap_or_else(|p| p.into_inner());
        *epoch = epoch.wrapping_add(1);
        let s = &*self.shared;
        // SAFETY (lifetime erasure): helpers call the job only for indices
        // claimed in this epoch, and this call returns only once all of
        // them are done.
        let ptr: *const (dyn Fn(usize) + Sync + '_) = job;
        let ptr: *const (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(ptr) };
        *s.current.lock().unwrap_or_else(|p| p.into_inner()) = (*epoch, Some(Job(ptr)), jobs);
        s.done.store(0, SeqCst);
        s.claim.store((*epoch as u64) << 32, SeqCst);
        for (asleep, thread) in &s.sleeping {
            if asleep.load(SeqCst) {
                if let Some(t) = thread.get() {
                    t.unpark();
                }
            }
        }
        while let Some(i) = s.claim(*epoch, jobs) {
            s.run_one(job, i);
        }
        while s.done.load(SeqCst) < jobs {
            std::hint::spin_loop();
        }
        *s.current.lock().unwrap_or_else(|p| p.into_inner()) = (*epoch, None, 0);
        if s.panicked.swap(false, SeqCst) {
            panic!("an engine job panicked on a helper thread");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    /// Every job runs exactly once per dispatch, over many dispatches, with
    /// pauses long enough for the helpers to park and be woken.
    #[test]
    fn every_job_runs_once_per_dispatch() {
        let pool = SpinPool::new(3);
        for round in 0..400u32 {
            let jobs = (round % 7) as usize + 1;
            let counts: Vec<AtomicU32> = (0..jobs).map(|_| AtomicU32::new(0)).collect();
            pool.run(jobs, &|i| {
                counts[i].fetch_add(1, SeqCst);
            });
            assert!(counts.iter().all(|c| c.load(SeqCst) == 1), "round {round}");
            if round % 50 == 0 {
                std::thread::sleep(SPIN * 3);
            }
        }
    }

    /// A job's panic reaches the dispatcher, and the pool still works after.
    #[test]
    fn a_panicking_job_panics_the_dispatch() {
        let pool = SpinPool::new(2);
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.run(8, &|i| assert!(i != 5, "job 5"));
        }));
        assert!(r.is_err());
        let n = AtomicU32::new(0);
        pool.run(8, &|_| {
            n.fetch_add(1, SeqCst);
        });
        assert_eq!(n.load(SeqCst), 8);
    }
}
