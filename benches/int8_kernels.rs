//! AlexNet-227's int8 convolutions, each x86 kernel that serves them on this
//! CPU, on one thread: `cargo bench --bench int8_kernels [-- RUNS [cold]]`
//! (default 200 runs). The figure to A/B a kernel change on a shared
//! machine: one thread on warm caches moves 1-2 % between runs of the same
//! binary where `int8_profile`'s two-thread network figures move 10-20 %
//! with the neighbours. `cold` streams 96 MB between runs (not timed), as the
//! dense layers do between one inference's convs and the next's, so the
//! filters come from memory.
//!
//! Kernels: the VNNI patch kernel where the CPU has VNNI; the AVX2 patch
//! kernel's two walks (dot products; the broadcast one where its widened
//! filters fit) and exact integer Winograd (3x3 and 5x5) wherever it has
//! AVX2, whichever the dispatcher would pick. Each line: the fastest, 10th
//! percentile and median time, and the layer's direct multiply-adds per
//! second at the fastest (Winograd does fewer: `roofline` has both counts).

use shared::kernels::int8::Int8Params;
use shared::kernels::ConvGeom;
use shared::model::Int8Weights;
use shared::spec::Padding;
use std::time::Instant;
use suite::Rng;

/// A conv layer: (name, input, filters, kernel, stride, padding).
type ConvLayer = (&'static str, (usize, usize, usize), usize, usize, usize, Padding);
/// One kernel run over a layer's whole output.
type Kernel<'a> = (&'static str, Box<dyn FnMut(&mut [i8]) + 'a>);

/// AlexNet-227's convs.
const LAYERS: [ConvLayer; 5] = [
    ("conv 1", (227, 227, 3), 96, 11, 4, Padding::Valid),
    ("conv 2", (27, 27, 96), 256, 5, 1, Padding::Same),
    ("conv 3", (13, 13, 256), 384, 3, 1, Padding::Same),
    ("conv 4", (13, 13, 384), 384, 3, 1, Padding::Same),
    ("conv 5", (13, 13, 384), 256, 3, 1, Padding::Same),
];

/// One layer's random weights, with per-channel scalings that keep the
/// outputs spread over the int8 range (as a calibrated model's do).
struct Layer {
    weights: Vec<i8>,
    scale: Vec<f32>,
    bias: Vec<i32>,
    multiplier: Vec<i32>,
    shift: Vec<i32>,
    input: Vec<i8>,
}

impl Layer {
    fn new(g: &ConvGeom, rng: &mut Rng) -> Layer {
        let c = g.out_c;
        Layer {
            weights: rng.i8s(g.weights_len()),
            scale: vec![1.0; c],
            bias: (0..c).map(|_| rng.int(-5000, 5000)).collect(),
            multiplier: (0..c).map(|_| rng.int(1 << 30, i32::MAX)).collect(),
            shift: vec![-12; c],
            input: rng.i8s(g.input_len()),
        }
    }

    fn weights(&self) -> Int8Weights<'_> {
        Int8Weights {
            weights: &self.weights,
            weight_scale: &self.scale,
            bias: &self.bias,
            multiplier: &self.multiplier,
            shift: &self.shift,
        }
    }
}

/// Times of `runs` calls of `run`, sorted, with `cold`'s stream before each.
fn time(runs: usize, cold: Option<&mut Vec<u8>>, run: &mut dyn FnMut()) -> Vec<f64> {
    let mut junk = cold;
    let mut times: Vec<f64> = (0..runs)
        .map(|r| {
            if let Some(junk) = junk.as_deref_mut() {
                for (i, b) in junk.iter_mut().enumerate().step_by(64) {
                    *b = b.wrapping_add((i + r) as u8);
                }
            }
            let t = Instant::now();
            run();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let runs: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(200).max(1);
    let mut junk = args.iter().any(|a| a == "cold").then(|| vec![1u8; 96 << 20]);
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (runs, &mut junk);
        println!("int8_kernels: the x86 kernels only");
    }
    #[cfg(target_arch = "x86_64")]
    {
        use shared::kernels::x86::{self, int8 as vnni, int8_avx2 as a2, int8_winograd as wg};
        println!(
            "int8 convs of AlexNet-227, one thread, {runs} runs each{}:",
            if junk.is_some() { ", 96 MB streamed before each" } else { "" }
        );
        let p = Int8Params { in_zp: -3, out_zp: 5, act_min: -128, act_max: 127 };
        let mut rng = Rng::new(7);
        for (name, input, filters, k, stride, pad) in LAYERS {
            let g = ConvGeom::new(input, filters, k, stride, pad).expect("AlexNet's conv geometry");
            let layer = Layer::new(&g, &mut rng);
            let (w, input) = (layer.weights(), &layer.input);
            let macs = (g.out_h * g.out_w * g.out_c * k * k * g.in_c) as f64;
            let mut out = vec![0i8; g.output_len()];
            let mut kernels: Vec<Kernel<'_>> = Vec::new();
            if x86::has_vnni() && vnni::patches_fit(&g, &p) {
                // The filter sums and packing built once, as the engine lends them.
                let (n_sums, n_packed) = vnni::patch_filter_lens(&g);
                let (mut sums, mut packed) = (vec![0i32; n_sums], vec![0i8; n_packed]);
                // SAFETY (both): VNNI and the patches' fit, checked just above.
                unsafe { vnni::build_patch_filters(&g, &w, &mut sums, &mut packed) };
                kernels.push((
                    "vnni patches",
                    Box::new(move |o| unsafe {
                        let lent = vnni::PatchFilters { sums: &sums, packed: &packed };
                        vnni::conv2d_vnni_patch_pixels(&g, &p, &w, Some(&lent), input, o, 0, None)
                    }),
                ));
            }
            if x86::has_avx2() && a2::patches_fit(&g, &p) {
                // SAFETY (both): AVX2 and the patches' fit, checked just above.
                kernels.push((
                    "avx2 dot",
                    Box::new(|o| unsafe {
                        a2::conv2d_avx2_patch_pixels_by(a2::PatchWalk::Dot, &g, &p, &w, None, input, o, 0, None)
                    }),
                ));
                if a2::broadcast_fits(&g) {
                    let mut widened = vec![0i16; a2::broadcast_len(&g)];
                    a2::build_broadcast_filters(&g, &w, &mut widened);
                    kernels.push((
                        "avx2 broadcast",
                        Box::new(move |o| unsafe {
                            let lent = Some(widened.as_slice());
                            a2::conv2d_avx2_patch_pixels_by(
                                a2::PatchWalk::Broadcast,
                                &g,
                                &p,
                                &w,
                                lent,
                                input,
                                o,
                                0,
                                None,
                            )
                        }),
                    ));
                }
            }
            if x86::has_avx2() && wg::serves(&g, &p) {
                let mut u = vec![0i16; wg::filter_len(&g)];
                wg::transform_filters(&g, &layer.weights, &mut u);
                let mut scratch = vec![0u8; wg::scratch_bytes(&g)];
                let tiles = wg::tiles(&g);
                kernels.push((
                    "avx2 winograd",
                    Box::new(move |o| {
                        // SAFETY: AVX2 and the scheme, checked above; `o` is the
                        // whole output, `u` these filters' transform, the scratch sized for `g`.
                        unsafe {
                            wg::conv2d_winograd_avx2(
                                &g,
                                &p,
                                &w,
                                &u,
                                input,
                                o.as_mut_ptr(),
                                0..tiles,
                                0..g.out_c,
                                None,
                                &mut scratch,
                            )
                        }
                    }),
                ));
            }
            for (kernel, mut run) in kernels {
                let t = time(runs, junk.as_mut(), &mut || run(&mut out));
                println!(
                    "  {name:6} {kernel:15} fastest {:.3} ms, p10 {:.3}, median {:.3}; {:.1} GMAC/s direct at the fastest",
                    t[0],
                    t[runs / 10],
                    t[runs / 2],
                    macs / t[0] / 1e6
                );
            }
        }
    }
}
