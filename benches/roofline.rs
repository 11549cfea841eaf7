//! What this machine can do at best, and what that makes the fastest possible
//! full-AlexNet (227x227, 1000 classes) inference and training step:
//! `cargo bench --bench roofline`.
//!
//! It measures, on 1 core and on every core at once: the int8 multiply-add
//! rate of AVX-512 VNNI (`vpdpbusd` on registers, 64 per instruction; on
//! CPUs with AVX2 only, `vpmaddwd` + `vpaddd`, 16 per pair, the exact int8
//! arithmetic they have), the f32 rate of FMA (16 per AVX-512 instruction,
//! 8 per AVX2 one), and the read bandwidth of a
//! buffer the size of the dense weights, at each precision (int8 54 MB, f32
//! 218 MB), read whole again and again as back-to-back inferences read them:
//! where a last-level cache holds the int8 weights (260 MB on some of these
//! Xeons) that bandwidth is the cache's, and a floor computed from DRAM's would
//! sit above what the bench measures. From the model's own layer sizes it then
//! prints the floors: the conv layers at the peak multiply rate plus the dense
//! weights streamed once at that bandwidth (batch-1 dense layers are memory-bound),
//! and again with the dense layers reading only the rows of live inputs (as
//! they do on the benches' inputs: half after a ReLU, skipping its zeros, and
//! 57 % after a BatchNormalization of a ReLU, skipping the inputs at its image
//! of zero). A
//! latency target below its floor cannot be met by a faster kernel of the same
//! arithmetic, only by doing less of it (Winograd, pruning). The f32 floors
//! are also given for Winograd's arithmetic (`--conv`): each stride-1 3x3
//! and 5x5 conv at its fewest-multiply variant's element-wise multiplies.
//!
//! On x86 it also asks whether a stream read under `prefetchnta` spares what
//! the last-level cache holds (`nta_probe`): on a CPU where it does, the dense
//! weights streamed that way could leave Winograd's filters cached.
//!
//! Like every figure on these shared machines, the absolute numbers move from
//! day to day; compare floors with benches run in the same sitting.

use host::nn::winograd;
use shared::geometry::ConvGeom;
use shared::spec::{self, Activation, Layer};
use std::hint::black_box;
use std::time::Instant;

/// Independent accumulator chains per core: more than the multiply latency
/// times the issue width, so the loop measures throughput.
const CHAINS: usize = 12;

#[cfg(target_arch = "x86_64")]
mod peaks {
    use super::CHAINS;
    use std::arch::x86_64::*;

    /// `iters * CHAINS` `vpdpbusd` on registers; returns a value to keep.
    ///
    /// # Safety
    /// The CPU must support AVX-512F/BW/VNNI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub unsafe fn vnni(iters: usize) -> i32 {
        let mut acc = [_mm512_setzero_si512(); CHAINS];
        let (x, w) = (_mm512_set1_epi8(3), _mm512_set1_epi8(5));
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = _mm512_dpbusd_epi32(*a, x, w);
            }
            // Keep the loop a loop of independent chains (no folding across iterations).
            std::arch::asm!("", options(nomem, nostack));
        }
        acc.iter().fold(0, |s, &a| s.wrapping_add(_mm512_reduce_add_epi32(a)))
    }

    /// `iters * CHAINS` 16-lane f32 FMAs on registers.
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn fma(iters: usize) -> f32 {
        let mut acc = [_mm512_setzero_ps(); CHAINS];
        let (x, w) = (_mm512_set1_ps(0.5), _mm512_set1_ps(0.25));
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = _mm512_fmadd_ps(*a, x, w);
            }
            std::arch::asm!("", options(nomem, nostack));
        }
        acc.iter().map(|&a| _mm512_reduce_add_ps(a)).sum()
    }

    /// [`super::read_all`] with 512-bit loads, in 8 streams at once (eighths
    /// of `words`), as the dense kernels read 8 weight rows at once: one
    /// stream read 25-45 % slower from a last-level cache here.
    ///
    /// # Safety
    /// The CPU must support AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn read_all_512(words: &[u64]) -> u64 {
        const STREAMS: usize = 8;
        let mut acc = [_mm512_setzero_si512(); STREAMS];
        let part = words.len() / STREAMS / 8 * 8;
        let p = words.as_ptr();
        for i in (0..part).step_by(8) {
            for (k, a) in acc.iter_mut().enumerate() {
                // SAFETY: k * part + i + 8 <= STREAMS * part <= words.len().
                *a = _mm512_add_epi64(*a, unsafe { _mm512_loadu_si512(p.add(k * part + i).cast()) });
            }
        }
        let tail = words[STREAMS * part..].iter().fold(0u64, |s, &w| s.wrapping_add(w));
        acc.iter().fold(tail, |s, &a| s ^ _mm512_reduce_add_epi64(a) as u64)
    }

    /// `iters * CHAINS` pairs of `vpmaddwd` + `vpaddd` on registers: the
    /// exact int8 multiply-add without VNNI (16 per pair, i16 widened bytes).
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn madd(iters: usize) -> i32 {
        let mut acc = [_mm256_setzero_si256(); CHAINS];
        let w = _mm256_set1_epi16(5);
        for _ in 0..iters {
            // Each chain multiplies its own sum (as pairs of i16), so no two
            // products are the same value and none can leave the loop.
            for a in acc.iter_mut() {
                *a = _mm256_add_epi32(*a, _mm256_madd_epi16(*a, w));
            }
            std::arch::asm!("", options(nomem, nostack));
        }
        acc.iter().fold(0, |s, &a| s.wrapping_add(_mm256_extract_epi32::<0>(a)))
    }

    /// `iters * CHAINS` 8-lane f32 FMAs on registers.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn fma256(iters: usize) -> f32 {
        let mut acc = [_mm256_setzero_ps(); CHAINS];
        let (x, w) = (_mm256_set1_ps(0.5), _mm256_set1_ps(0.25));
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = _mm256_fmadd_ps(*a, x, w);
            }
            std::arch::asm!("", options(nomem, nostack));
        }
        acc.iter().map(|&a| _mm256_cvtss_f32(a)).sum()
    }

    pub fn has_avx2_fma() -> bool {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }

    pub fn has_vnni() -> bool {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vnni")
    }

    pub fn has_avx512f() -> bool {
        is_x86_feature_detected!("avx512f")
    }
}

/// A peak's name, its kernel (`iters` iterations) and the multiply-adds of one iteration per chain.
type Peak = (&'static str, fn(usize) -> f64, usize);

/// Multiply-adds per second of `kernel(iters)` (which does `per_iter` of
/// them per iteration) on `threads` threads at once; best of 3.
fn rate(threads: usize, per_iter: usize, kernel: fn(usize) -> f64) -> f64 {
    let iters = 20_000_000;
    (0..3)
        .map(|_| {
            let t = Instant::now();
            std::thread::scope(|s| {
                let hs: Vec<_> = (0..threads).map(|_| s.spawn(move || kernel(iters))).collect();
                hs.into_iter().for_each(|h| {
                    black_box(h.join().expect("peak thread"));
                });
            });
            (threads * iters * per_iter) as f64 / t.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
}

/// Every word of `words` read once, into eight independent sums (no chain of
/// dependent loads); with 512-bit loads in 8 streams where the CPU has
/// AVX-512F, as the dense kernels read.
fn read_all(words: &[u64]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if peaks::has_avx512f() {
        // SAFETY: AVX-512F was checked just above.
        return unsafe { peaks::read_all_512(words) };
    }
    let mut acc = [0u64; 8];
    for line in words.chunks_exact(8) {
        for (a, &w) in acc.iter_mut().zip(line) {
            *a = a.wrapping_add(w);
        }
    }
    acc.iter().fold(0, |s, &a| s ^ a)
}

/// Read bandwidth (bytes/s) of `buf` split over `threads`, every byte read
/// once per pass: the best of 5 passes after one that warms what caches can hold.
fn bandwidth(buf: &[u64], threads: usize) -> f64 {
    (0..6)
        .map(|_| {
            let t = Instant::now();
            std::thread::scope(|s| {
                let hs: Vec<_> =
                    buf.chunks(buf.len().div_ceil(threads)).map(|c| s.spawn(move || read_all(c))).collect();
                hs.into_iter().for_each(|h| {
                    black_box(h.join().expect("bandwidth thread"));
                });
            });
            (buf.len() * 8) as f64 / t.elapsed().as_secs_f64()
        })
        .skip(1)
        .fold(0.0, f64::max)
}

/// [`bandwidth`] on 1 core and on `cores` of a buffer of `bytes`, printed.
fn weights_bandwidth(what: &str, bytes: u64, cores: usize) -> f64 {
    let buf: Vec<u64> = (0..bytes / 8).collect();
    let (bw1, bwn) = (bandwidth(&buf, 1), bandwidth(&buf, cores));
    println!(
        "read bandwidth, {what} dense weights ({:.0} MB, again and again): {:.1} GB/s on 1 core, {:.1} GB/s on {cores}",
        bytes as f64 / 1e6,
        bw1 / 1e9,
        bwn / 1e9
    );
    bwn
}

/// Whether a stream read with `prefetchnta` spares the last-level cache:
/// a 16 MB buffer (Winograd's kept filters of one conv are 14-21 MB) is
/// read warm, then after a 256 MB stream (the fp32 dense weights) read
/// normally, then after the same stream read with a non-temporal hint a line
/// ahead. Where the third time is near the first, streaming the dense
/// weights that way would leave the convs' filters cached between
/// inferences (a cache several times 16 MB, as some Xeons' 260 MB); where it
/// is near the second, the hint does not protect the cache on this CPU.
#[cfg(target_arch = "x86_64")]
fn nta_probe() {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_NTA};
    let touch = |v: &[u64]| -> f64 {
        let t = Instant::now();
        // One load per 64-byte line is what keeps the line cached.
        std::hint::black_box(v.iter().step_by(8).fold(0u64, |a, &x| a ^ x));
        t.elapsed().as_secs_f64() * 1e3
    };
    let kept: Vec<u64> = (0..(16u64 << 20) / 8).collect();
    let stream: Vec<u64> = (0..(256u64 << 20) / 8).collect();
    let stream_nta = |v: &[u64]| {
        let mut a = 0u64;
        for (i, &x) in v.iter().enumerate().step_by(8) {
            // SAFETY: a prefetch never faults.
            unsafe { _mm_prefetch::<_MM_HINT_NTA>(v.as_ptr().wrapping_add(i + 64).cast()) };
            a ^= x;
        }
        std::hint::black_box(a);
    };
    let (mut warm, mut after, mut after_nta) = (f64::INFINITY, f64::INFINITY, f64::INFINITY);
    for _ in 0..3 {
        touch(&kept);
        warm = warm.min(touch(&kept));
        touch(&stream);
        after = after.min(touch(&kept));
        touch(&kept);
        stream_nta(&stream);
        after_nta = after_nta.min(touch(&kept));
    }
    println!(
        "a 16 MB buffer read warm {warm:.2} ms, after a 256 MB stream {after:.2} ms, after the stream under prefetchnta {after_nta:.2} ms"
    );
}

fn main() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let net = spec::alexnet(227, 1000).expect("alexnet spec");
    let (mut conv, mut dense, mut conv_winograd) = (0u64, 0u64, 0u64);
    // The dense weights batch-1 inference reads: a dense layer whose input
    // comes straight from a ReLU (through Dropout or Flatten) skips the rows
    // of zero inputs, half of them on the benches' inputs (FC7, FC8); one
    // reading a BatchNormalization of a ReLU (through max pools too) skips
    // those at the BN's image of zero, 43 % on the bench network (FC6:
    // 3,942-4,018 of 9,216).
    // The graph walk is the one the kernels use (`batch_norm_of_relu_read_by`).
    let (mut dense_read, mut after_relu) = (0f64, false);
    for (i, layer, inp, out) in net.shapes() {
        if let Layer::Dense { .. } = layer {
            let share = if net.batch_norm_of_relu_read_by(i).is_some() {
                0.57
            } else if after_relu {
                0.5
            } else {
                1.0
            };
            dense_read += share * layer.macs(inp, out) as f64;
        }
        after_relu = match layer {
            Layer::Conv2D(c) => c.activation == Activation::Relu,
            Layer::Dense { activation, .. } => *activation == Activation::Relu,
            Layer::Dropout { .. } | Layer::Flatten => after_relu,
            _ => false,
        };
        match layer {
            Layer::Conv2D(c) => {
                conv += layer.macs(inp, out);
                let g = ConvGeom::from_spec(c, inp).expect("alexnet's conv geometry");
                conv_winograd += winograd::variants(&g)
                    .iter()
                    .map(|v| v.multiplies(&g))
                    .min()
                    .unwrap_or_else(|| layer.macs(inp, out));
            }
            Layer::Dense { .. } => dense += layer.macs(inp, out),
            _ => {}
        }
    }
    println!(
        "# Roofline, {cores} cores; full AlexNet: conv {:.3} GMAC ({:.3} G multiplies under Winograd), dense {:.1} M weights",
        conv as f64 / 1e9,
        conv_winograd as f64 / 1e9,
        dense as f64 / 1e6
    );

    let bw8 = weights_bandwidth("int8", dense, cores);
    let bw32 = weights_bandwidth("f32", 4 * dense, cores);
    #[cfg(target_arch = "x86_64")]
    nta_probe();

    #[cfg(target_arch = "x86_64")]
    {
        // The exact int8 multiply-add this CPU has: VNNI, else AVX2's vpmaddwd.
        // SAFETY (each closure): the features were checked where it is picked.
        let int8: Option<Peak> = if peaks::has_vnni() {
            Some(("VNNI", |n| unsafe { peaks::vnni(n) } as f64, 64))
        } else if peaks::has_avx2_fma() {
            Some(("AVX2 vpmaddwd", |n| unsafe { peaks::madd(n) } as f64, 16))
        } else {
            None
        };
        if let Some((name, k, per)) = int8 {
            let (v1, vn) = (rate(1, CHAINS * per, k), rate(cores, CHAINS * per, k));
            println!("int8 {name} peak: {:.0} GMAC/s on 1 core, {:.0} on {cores}", v1 / 1e9, vn / 1e9);
            let floor = conv as f64 / vn + dense as f64 / bw8;
            println!(
                "int8 batch-1 floor on {cores} cores: {:.2} ms (conv at peak {:.2} + dense int8 weights at bandwidth {:.2})",
                floor * 1e3,
                conv as f64 / vn * 1e3,
                dense as f64 / bw8 * 1e3
            );
            println!(
                "  reading only the live inputs' rows ({:.1} M weights): {:.2} ms",
                dense_read / 1e6,
                (conv as f64 / vn + dense_read / bw8) * 1e3
            );
        } else {
            println!("int8 peak: neither AVX-512 VNNI nor AVX2 on this CPU");
        }
        let f32: Option<Peak> = if peaks::has_avx512f() {
            Some(("AVX-512", |n| unsafe { peaks::fma(n) } as f64, 16))
        } else if peaks::has_avx2_fma() {
            Some(("AVX2", |n| unsafe { peaks::fma256(n) } as f64, 8))
        } else {
            None
        };
        if let Some((name, k, per)) = f32 {
            let (f1, fnn) = (rate(1, CHAINS * per, k), rate(cores, CHAINS * per, k));
            println!("f32 {name} FMA peak: {:.1} GMAC/s on 1 core, {:.1} on {cores}", f1 / 1e9, fnn / 1e9);
            let floor = conv as f64 / fnn + 4.0 * dense as f64 / bw32;
            println!(
                "fp32 batch-1 floor on {cores} cores: {:.2} ms (conv at peak {:.2} + dense f32 weights at bandwidth {:.2})",
                floor * 1e3,
                conv as f64 / fnn * 1e3,
                4.0 * dense as f64 / bw32 * 1e3
            );
            let floor = conv_winograd as f64 / fnn + 4.0 * dense as f64 / bw32;
            println!(
                "fp32 batch-1 floor under Winograd: {:.2} ms (conv at peak {:.2} + dense as above)",
                floor * 1e3,
                conv_winograd as f64 / fnn * 1e3
            );
            println!(
                "  reading only the live inputs' rows: {:.2} ms",
                (conv_winograd as f64 / fnn + 4.0 * dense_read / bw32) * 1e3
            );
            // Forward, then the input and the weight gradients: three products of each layer's size.
            let step = 3.0 * (conv + dense) as f64 / fnn;
            println!("training floor (3 x the forward multiply-adds at the f32 peak): {:.1} ms per image", step * 1e3);
            let step = 3.0 * (conv_winograd + dense) as f64 / fnn;
            println!("training floor under Winograd (the same, its multiplies): {:.1} ms per image", step * 1e3);
        } else {
            println!("f32 FMA peak: neither AVX-512F nor AVX2 with FMA on this CPU");
        }
    }
}
