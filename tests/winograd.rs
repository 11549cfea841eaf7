//! Winograd's variants (F(2x2) and F(4x4), 3x3 and 5x5) against the
//! f64 reference convolution and the direct path: forward outputs, the three gradients, and a network's
//! gradients against finite differences with the arithmetic forced. Its own
//! test binary: `--conv` is a process-wide setting.

use host::nn::conv::{self, ConvAlgo, Epilogue};
use host::nn::winograd::{self, Variant};
use host::nn::{softmax_cross_entropy, ChaCha8Rng, Mode, Network};
use ndarray::Array4;
use rand::SeedableRng;
use shared::geometry::ConvGeom;
use shared::spec::{Activation, Conv2D, Sequential, Shape};
use suite::Rng;

mod import_support;

/// `--conv` is process-wide: the tests that set it take turns.
static ALGO_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The relative error bounds this file holds every Winograd output and
/// gradient to: the largest absolute difference from the reference over the
/// largest reference magnitude. Measured 2026-12-05 on these 34 geometries:
/// F(2x2, 3x3), the forward at most 2.0e-7 from the f64 reference and the
/// gradients 6.9e-7 from the direct path's; F(2x2, 5x5) (whose transforms
/// hold 4s, 5s and sixths), 3.4e-6 and 8.2e-6; F(4x4, 3x3) (the same
/// transforms, and 8s in `A^T`), 5.4e-6 and 4.2e-6; F(4x4, 5x5) (ninths,
/// 45ths and 21/4), 7.8e-6 and 7.8e-6 (the backward in rounds, `dU` one
/// GEMM over a round's tiles).
fn bound(v: &Variant) -> f64 {
    if std::ptr::eq(v, &winograd::F2_3) {
        2e-6
    } else {
        2e-5
    }
}

/// The worst error per variant name.
#[derive(Default)]
struct Worst(Vec<(&'static str, f64)>);

impl Worst {
    fn see(&mut self, v: &Variant, e: f64) {
        match self.0.iter_mut().find(|(n, _)| *n == v.name) {
            Some((_, w)) => *w = w.max(e),
            None => self.0.push((v.name, e)),
        }
    }
}

fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0.0f64, |m, &v| m.max((v as f64).abs())).max(1e-30);
    got.iter().zip(want).fold(0.0f64, |m, (&a, &b)| m.max((a as f64 - b as f64).abs())) / scale
}

/// HWIO (the host's kernels) to OHWI (the reference's).
fn ohwi(g: &ConvGeom, hwio: &[f32]) -> Vec<f32> {
    let (cn, kn, taps) = (g.in_c, g.out_c, g.kernel_h * g.kernel_w);
    let mut w = vec![0.0; hwio.len()];
    for t in 0..taps {
        for c in 0..cn {
            for k in 0..kn {
                w[(k * taps + t) * cn + c] = hwio[(t * cn + c) * kn + k];
            }
        }
    }
    w
}

/// Random stride-1 geometries, 3x3 and 5x5 kernels, same and valid.
fn geometries(rng: &mut Rng) -> Vec<ConvGeom> {
    let mut out = Vec::new();
    for case in 0..40 {
        let (h, w) = (rng.int(1, 17) as usize, rng.int(1, 17) as usize);
        let c = if case % 6 == 0 { rng.int(40, 70) } else { rng.int(1, 9) } as u32;
        let k = if case % 5 == 0 { rng.int(30, 66) } else { rng.int(1, 9) } as u32;
        let kernel = if case % 3 == 0 { 5 } else { 3 };
        let conv = if case % 2 == 0 { Conv2D::new(k, kernel).same() } else { Conv2D::new(k, kernel) };
        if let Some(g) = ConvGeom::from_spec(&conv, Shape::image(h as u32, w as u32, c)) {
            assert!(winograd::serves(&g), "{g:?}");
            out.push(g);
        }
    }
    assert!(out.len() > 25 && out.iter().any(|g| g.kernel_h == 5), "{}", out.len());
    out
}

#[test]
fn forward_matches_the_f64_reference() {
    let mut rng = Rng::new(3);
    let mut worst = Worst::default();
    for g in geometries(&mut rng) {
        let batch = 2;
        let x = rng.vec(batch * g.input_len(), -1.0, 1.0);
        let kernel = rng.vec(g.filter_len() * g.out_c, -0.5, 0.5);
        let bias = rng.vec(g.out_c, -0.2, 0.2);
        let ep = Epilogue { bias: &bias, relu: false, affine: None };
        let w = ohwi(&g, &kernel);
        for &v in winograd::variants(&g) {
            let mut y = vec![0.0; batch * g.output_len()];
            winograd::forward(&g, v, &ep, &kernel, &x, batch, &mut y, None);
            for i in 0..batch {
                let want = suite::reference_conv(&g, &w, &bias, &x[i * g.input_len()..][..g.input_len()]);
                let got = &y[i * g.output_len()..][..g.output_len()];
                let e = rel_err(got, &want);
                assert!(e < bound(v), "{} {g:?}: relative error {e:e}", v.name);
                worst.see(v, e);
            }
        }
    }
    eprintln!("forward: worst relative error {:?}", worst.0);
}

#[test]
fn gradients_match_the_direct_paths() {
    let _turn = ALGO_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut rng = Rng::new(4);
    let mut worst = Worst::default();
    for g in geometries(&mut rng) {
        let batch = 3;
        let x = rng.vec(batch * g.input_len(), -1.0, 1.0);
        let kernel = rng.vec(g.filter_len() * g.out_c, -0.5, 0.5);
        let dy = rng.vec(batch * g.output_len(), -1.0, 1.0);
        let y = vec![1.0; dy.len()];
        let (mut dk, mut db, mut dx) = (vec![0.0; kernel.len()], vec![0.0; g.out_c], vec![0.0; x.len()]);
        conv::set_algo(ConvAlgo::Direct);
        let mut d = dy.clone();
        conv::backward(&g, false, &kernel, &x, &y, &mut d, batch, &mut dk, &mut db, Some(&mut dx), &mut Vec::new());
        for &v in winograd::variants(&g) {
            let (mut wk, mut wb, mut wx) = (vec![7.0; kernel.len()], vec![7.0; g.out_c], vec![7.0; x.len()]);
            winograd::backward(&g, v, &kernel, &x, &dy, batch, &mut wk, &mut wb, Some(&mut wx), &mut Vec::new());
            for (name, got, want) in [("kernel", &wk, &dk), ("bias", &wb, &db), ("input", &wx, &dx)] {
                let e = rel_err(got, want);
                assert!(e < bound(v), "{} {g:?} d{name}: relative error {e:e}", v.name);
                worst.see(v, e);
            }
        }
    }
    eprintln!("gradients: worst relative difference from the direct path {:?}", worst.0);
}

/// The filter gradient summed over several rounds of tiles (each round's
/// `dU` added to the last), with output channels the micro-kernel serves
/// (the geometries above are one round each and mostly ragged), and the
/// same bits on one, two and three threads.
#[test]
fn filter_gradients_over_several_rounds_match_the_direct_path() {
    let _turn = ALGO_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut rng = Rng::new(5);
    for (size, kernel, batch) in [(17u32, 3u32, 8usize), (17, 3, 24), (15, 5, 12)] {
        let g = ConvGeom::from_spec(&Conv2D::new(32, kernel).same(), Shape::image(size, size, 24)).expect("geometry");
        let x = rng.vec(batch * g.input_len(), -1.0, 1.0);
        let kernel = rng.vec(g.filter_len() * g.out_c, -0.5, 0.5);
        let dy = rng.vec(batch * g.output_len(), -1.0, 1.0);
        let y = vec![1.0; dy.len()];
        let (mut dk, mut db) = (vec![0.0; kernel.len()], vec![0.0; g.out_c]);
        conv::set_algo(ConvAlgo::Direct);
        let mut d = dy.clone();
        conv::backward(&g, false, &kernel, &x, &y, &mut d, batch, &mut dk, &mut db, None, &mut Vec::new());
        for &v in winograd::variants(&g) {
            // The jobs cut the tiles into runs by the thread count; the sums must not care.
            let on = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a pool");
                let (mut wk, mut wb) = (vec![7.0; kernel.len()], vec![7.0; g.out_c]);
                pool.install(|| {
                    winograd::backward(&g, v, &kernel, &x, &dy, batch, &mut wk, &mut wb, None, &mut Vec::new())
                });
                wk
            };
            let wk = on(2);
            let e = rel_err(&wk, &dk);
            assert!(e < bound(v), "{} {g:?} batch {batch} dkernel: relative error {e:e}", v.name);
            let bits = |k: &[f32]| k.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&on(1)), bits(&wk), "{} batch {batch}: one thread gave other bits", v.name);
            assert_eq!(bits(&on(3)), bits(&wk), "{} batch {batch}: three threads gave other bits", v.name);
        }
    }
}

/// A network whose stride-1 convs (3x3 same and valid, 5x5 same) run
/// Winograd's arithmetic: every parameter gradient against central
/// differences, as `tests/gradcheck.rs` checks the direct path.
#[test]
fn network_gradients_under_winograd_match_finite_differences() {
    let _turn = ALGO_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    for algo in [ConvAlgo::Winograd, ConvAlgo::Winograd4x4] {
        network_gradients_match_finite_differences(algo);
    }
    conv::set_algo(ConvAlgo::Direct);
}

fn network_gradients_match_finite_differences(algo: ConvAlgo) {
    conv::set_algo(algo);
    let spec = Sequential::new(Shape::image(9, 9, 3))
        .conv2d(Conv2D::new(4, 3).same())
        .conv2d(Conv2D::new(4, 5).same())
        .conv2d(Conv2D::new(5, 3))
        .flatten()
        .dense(4, Activation::Softmax)
        .build()
        .unwrap();
    let batch = 2;
    let x = Array4::from_shape_fn((batch, 9, 9, 3), |(n, h, w, c)| {
        (((n * 131 + h * 17 + w * 5 + c * 3) * 2654435761usize) % 1000) as f32 / 1000.0 - 0.5
    });
    let labels = [1, 3];
    let mut net = Network::new(&spec, 42);
    let rng = ChaCha8Rng::seed_from_u64(7);
    let loss = |net: &mut Network| -> f64 {
        let logits = net.forward(x.view(), Mode::Train(&mut rng.clone()));
        softmax_cross_entropy(logits.view(), &labels).0 as f64
    };
    let logits = net.forward(x.view(), Mode::Train(&mut rng.clone()));
    let (_, g, _) = softmax_cross_entropy(logits.view(), &labels);
    net.backward(g.view());
    let grads: Vec<(String, Vec<f32>)> = net.params().iter().map(|p| (p.name.clone(), p.grad.clone())).collect();
    let h = 3e-3f32;
    for (pi, (name, ana)) in grads.iter().enumerate() {
        let (mut err, mut norm) = (0.0f64, 0.0f64);
        for i in (0..ana.len()).step_by((ana.len() / 40).max(1)) {
            let orig = net.params()[pi].value[i];
            net.params_mut()[pi].value[i] = orig + h;
            let lp = loss(&mut net);
            net.params_mut()[pi].value[i] = orig - h;
            let lm = loss(&mut net);
            net.params_mut()[pi].value[i] = orig;
            let num = (lp - lm) / (2.0 * h as f64);
            err += (num - ana[i] as f64).powi(2);
            norm += num.powi(2) + (ana[i] as f64).powi(2);
        }
        let rel = (err / norm.max(1e-12)).sqrt();
        assert!(rel < 1e-2, "{algo:?} {name}: relative gradient error {rel:e}");
    }
}

/// `auto` leaves exactly one path's bytes: on first sight it times every
/// path and then runs the fastest (its output, its gradients), and later
/// calls repeat that choice, the one `conv::path` reports.
#[test]
fn auto_gives_one_paths_exact_results() {
    let _turn = ALGO_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut rng = Rng::new(5);
    let g = ConvGeom::from_spec(&Conv2D::new(24, 3).same(), Shape::image(9, 11, 16)).expect("geometry");
    let batch = 4;
    let x = rng.vec(batch * g.input_len(), -1.0, 1.0);
    let kernel = rng.vec(9 * g.in_c * g.out_c, -0.5, 0.5);
    let bias = rng.vec(g.out_c, -0.2, 0.2);
    let ep = Epilogue { bias: &bias, relu: true, affine: None };
    let dy = rng.vec(batch * g.output_len(), -1.0, 1.0);
    let run = |algo: ConvAlgo| {
        conv::set_algo(algo);
        let mut y = vec![0.0; batch * g.output_len()];
        conv::forward_with(&g, &ep, &kernel, &x, batch, &mut y);
        let (mut dk, mut db, mut dx) = (vec![0.0; kernel.len()], vec![0.0; g.out_c], vec![0.0; x.len()]);
        let mut d = dy.clone();
        conv::backward(&g, true, &kernel, &x, &y, &mut d, batch, &mut dk, &mut db, Some(&mut dx), &mut Vec::new());
        (y, dk, db, dx)
    };
    let forced = [
        ("direct", run(ConvAlgo::Direct)),
        (winograd::F2_3.name, run(ConvAlgo::Winograd)),
        (winograd::F4_3.name, run(ConvAlgo::Winograd4x4)),
    ];
    assert_ne!(forced[0].1 .0, forced[1].1 .0, "direct and F(2x2) round differently");
    assert_ne!(forced[1].1 .0, forced[2].1 .0, "F(2x2) and F(4x4) round differently");
    let of = |p: Option<conv::ConvPath>| {
        let name = p.expect("auto measured this layer").name();
        &forced.iter().find(|(n, _)| *n == name).expect("a forced path").1
    };
    for _ in 0..2 {
        let auto = run(ConvAlgo::Auto);
        let (fwd, bwd) = (of(conv::path(&g, batch, false)), of(conv::path(&g, batch, true)));
        assert!(auto.0 == fwd.0, "forward: not the chosen path's bytes");
        assert!(auto.1 == bwd.1 && auto.2 == bwd.2 && auto.3 == bwd.3, "backward: not the chosen path's bytes");
    }
    // What a user is shown: one decision per pass, every candidate's time,
    // the fastest taken.
    let mine: Vec<_> = conv::auto_choices().into_iter().filter(|c| c.geometry == g && c.batch == batch).collect();
    assert_eq!(mine.len(), 2, "one decision per pass: {mine:?}");
    for c in &mine {
        assert_eq!(conv::path(&g, batch, c.backward).map(|p| p.name()), Some(c.chosen.name()));
        let names: Vec<_> = c.timings.iter().map(|(p, _)| p.name()).collect();
        assert_eq!(names, ["direct", winograd::F2_3.name, winograd::F4_3.name]);
        let fastest = c.timings.iter().min_by_key(|(_, t)| *t).map(|(p, _)| p.name());
        assert_eq!(fastest, Some(c.chosen.name()));
        let line = c.to_string();
        assert!(line.starts_with("9x11x16 -> 24 (3x3), batch 4, ") && line.contains(c.chosen.name()), "{line}");
    }
    conv::set_algo(ConvAlgo::Direct);
}

/// A 3x3 and a 5x5 `valid` conv of one input shape and width are separate
/// decisions: keyed without the kernel, the second took the first's path
/// unmeasured, and where that was a Winograd variant (for the other kernel
/// size) it panicked.
#[test]
fn auto_keeps_kernel_sizes_apart() {
    let _turn = ALGO_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let mut rng = Rng::new(6);
    conv::set_algo(ConvAlgo::Auto);
    for size in [3, 5] {
        let g = ConvGeom::from_spec(&Conv2D::new(16, size), Shape::image(10, 10, 8)).expect("geometry");
        let x = rng.vec(2 * g.input_len(), -1.0, 1.0);
        let kernel = rng.vec(g.filter_len() * g.out_c, -0.5, 0.5);
        let bias = vec![0.0; g.out_c];
        let mut y = vec![0.0; 2 * g.output_len()];
        conv::forward_with(&g, &Epilogue { bias: &bias, relu: false, affine: None }, &kernel, &x, 2, &mut y);
        let w = ohwi(&g, &kernel);
        let want = suite::reference_conv(&g, &w, &bias, &x[..g.input_len()]);
        assert!(rel_err(&y[..g.output_len()], &want) < 1e-3, "{size}x{size}");
    }
    let mut kernels: Vec<usize> = conv::auto_choices()
        .iter()
        .filter(|c| (c.geometry.in_h, c.geometry.in_c, c.geometry.out_c, c.batch) == (10, 8, 16, 2))
        .map(|c| c.geometry.kernel_h)
        .collect();
    kernels.sort_unstable();
    assert_eq!(kernels, [3, 5], "one decision per kernel size");
    conv::set_algo(ConvAlgo::Direct);
}

/// Batch 1 (all tiles one task) splits the output channels across the
/// threads instead of the tiles: each image's bytes must be those of a batch
/// large enough for the tile split, with every epilogue part (bias, ReLU,
/// the folded affine) applied to the right channels, for 3x3 and 5x5 in each
/// variant, with the cached filters as inference runs it.
#[test]
fn batch_one_splits_channels_with_the_tile_paths_bytes() {
    let mut rng = Rng::new(9);
    // Two threads whatever the machine, so that the channel split runs.
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("a pool");
    for (kernel_size, out_c) in [(3, 96), (5, 160)] {
        let g =
            ConvGeom::from_spec(&Conv2D::new(out_c, kernel_size).same(), Shape::image(13, 13, 40)).expect("geometry");
        let batch = 9;
        let x = rng.vec(batch * g.input_len(), -1.0, 1.0);
        let kernel = rng.vec(g.filter_len() * g.out_c, -0.5, 0.5);
        let bias = rng.vec(g.out_c, -0.2, 0.2);
        let (scale, shift) = (rng.vec(g.out_c, 0.5, 1.5), rng.vec(g.out_c, -0.3, 0.3));
        let ep = Epilogue { bias: &bias, relu: true, affine: Some((&scale, &shift)) };
        for &v in winograd::variants(&g) {
            pool.install(|| {
                let mut all = vec![0.0; batch * g.output_len()];
                winograd::forward(&g, v, &ep, &kernel, &x, batch, &mut all, None);
                let mut cache = winograd::FilterCache::default();
                for i in [0, 4, 8] {
                    let mut one = vec![0.0; g.output_len()];
                    winograd::forward(
                        &g,
                        v,
                        &ep,
                        &kernel,
                        &x[i * g.input_len()..][..g.input_len()],
                        1,
                        &mut one,
                        Some(&mut cache),
                    );
                    let want = &all[i * g.output_len()..][..g.output_len()];
                    assert!(one == want, "{} {g:?}: image {i} alone differs from its batch", v.name);
                }
            });
        }
    }
}

/// Inference keeps each layer's transformed filters: the cached forward gives
/// the uncached one's bytes; after `clear` (what the network does when its
/// weights may change) a changed kernel is transformed again; another variant
/// or another kernel buffer on the same cache is never served the old filters.
#[test]
fn cached_filters_give_the_uncached_bytes_and_follow_the_kernel() {
    let mut rng = Rng::new(6);
    let g = ConvGeom::from_spec(&Conv2D::new(12, 3).same(), Shape::image(10, 7, 8)).expect("geometry");
    let batch = 2;
    let x = rng.vec(batch * g.input_len(), -1.0, 1.0);
    let mut kernel = rng.vec(g.filter_len() * g.out_c, -0.5, 0.5);
    let bias = rng.vec(g.out_c, -0.2, 0.2);
    let ep = Epilogue { bias: &bias, relu: false, affine: None };
    // One cache each variant (kernel changes) and one they share (variant
    // changes).
    let mut own = vec![winograd::FilterCache::default(); winograd::variants(&g).len()];
    let mut shared = winograd::FilterCache::default();
    let mut last = Vec::new();
    for round in 0..3 {
        for (&v, own) in winograd::variants(&g).iter().zip(own.iter_mut()) {
            let mut plain = vec![0.0; batch * g.output_len()];
            winograd::forward(&g, v, &ep, &kernel, &x, batch, &mut plain, None);
            for cache in [own, &mut shared] {
                for _ in 0..2 {
                    let mut cached = vec![0.0; plain.len()];
                    winograd::forward(&g, v, &ep, &kernel, &x, batch, &mut cached, Some(cache));
                    assert!(cached == plain, "round {round}, {}: cached filters differ", v.name);
                }
            }
            assert!(plain != last, "round {round}, {}: the change did not show", v.name);
            // Another kernel's buffer, through the same cache, uncleared.
            let other: Vec<f32> = kernel.iter().map(|w| -w).collect();
            let mut want = vec![0.0; plain.len()];
            winograd::forward(&g, v, &ep, &other, &x, batch, &mut want, None);
            let mut got = vec![0.0; plain.len()];
            winograd::forward(&g, v, &ep, &other, &x, batch, &mut got, Some(&mut shared));
            assert!(got == want, "round {round}, {}: another kernel got stale filters", v.name);
            last = plain;
        }
        kernel[round * 37] += 0.25;
        own.iter_mut().for_each(winograd::FilterCache::clear);
        shared.clear();
    }
}

/// A network in inference under Winograd: after its weights change through
/// `params_mut` or `load_tensors`, its output is that of a network built with
/// those weights.
#[test]
fn inference_follows_weight_changes_under_winograd() {
    let _turn = ALGO_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let spec = Sequential::new(Shape::image(8, 8, 3))
        .conv2d(Conv2D::new(6, 3).same())
        .conv2d(Conv2D::new(4, 5).same())
        .flatten()
        .dense(3, Activation::Softmax)
        .build()
        .unwrap();
    let x = Array4::from_shape_fn((1, 8, 8, 3), |(_, h, w, c)| ((h * 17 + w * 5 + c * 3) % 11) as f32 / 11.0 - 0.5);
    for algo in [ConvAlgo::Winograd, ConvAlgo::Winograd4x4] {
        conv::set_algo(algo);
        let mut warm = Network::new(&spec, 9);
        let before = warm.forward(x.view(), Mode::Eval).to_owned();
        assert_eq!(before, warm.forward(x.view(), Mode::Eval).to_owned());
        let mut fresh = Network::new(&spec, 9);
        for net in [&mut warm, &mut fresh] {
            net.params_mut()[0].value.iter_mut().for_each(|w| *w *= -1.5);
        }
        let after = warm.forward(x.view(), Mode::Eval).to_owned();
        assert_ne!(before, after, "{algo:?}");
        assert_eq!(after, fresh.forward(x.view(), Mode::Eval).to_owned(), "{algo:?}: stale filters");
        // And back through `load_tensors` (as a checkpoint loads).
        let original: std::collections::HashMap<_, _> = Network::new(&spec, 9).tensors().into_iter().collect();
        warm.load_tensors(&original).expect("same network");
        assert_eq!(before, warm.forward(x.view(), Mode::Eval).to_owned(), "{algo:?}: stale filters after a load");
    }
    conv::set_algo(ConvAlgo::Direct);
}

/// The frameworks' cross-check under Winograd: models trained in PyTorch and
/// Keras, imported, still give the framework's probabilities within 1e-4 and
/// its top-1 with every variant forced and with `auto`.
#[test]
fn imported_models_match_their_frameworks_under_winograd() {
    let _turn = ALGO_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    for (file, name) in [("torch.onnx", "torch"), ("torch_alexnet.onnx", "torch_alexnet"), ("keras2.h5", "keras2")] {
        let e = import_support::expected(name);
        let ck = import_support::import_fixture(file, None, None, &e);
        for algo in [ConvAlgo::Winograd, ConvAlgo::Winograd4x4, ConvAlgo::Auto] {
            conv::set_algo(algo);
            let got = import_support::probabilities(&ck, &e.images);
            assert_eq!(got.len(), e.probabilities.len());
            for (i, (g, want)) in got.iter().zip(&e.probabilities).enumerate() {
                let worst = import_support::worst_difference(g, want);
                assert!(worst <= 1e-4, "{file} {algo:?}, image {i}: probabilities differ by {worst}");
                assert_eq!(
                    shared::numeric::argmax(g.iter().copied()),
                    shared::numeric::argmax(want.iter().copied()),
                    "{file} {algo:?}, image {i}: top-1"
                );
            }
        }
    }
    conv::set_algo(ConvAlgo::Direct);
}

/// The label of the uniform setting a path belongs to in
/// [`host::nn::tune`]'s report: `direct`, `F(2x2)` or `F(4x4)`.
fn setting_of(p: conv::ConvPath) -> String {
    match p.name().split(',').next() {
        Some(f) if f.starts_with('F') => format!("{f})"),
        _ => "direct".into(),
    }
}

/// `auto` times an inference network's undecided convs in whole forward
/// passes, where the other layers' weights pass through the cache between
/// two calls of a conv: one network decision (every uniform setting timed,
/// the fastest pass kept), an in-network decision for the conv, and the
/// network's output is then the kept setting's bytes, call after call.
#[test]
fn auto_times_inference_in_whole_passes() {
    let _turn = ALGO_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // Wide enough that Winograd's passes are usually faster than direct.
    let spec = Sequential::new(Shape::image(20, 20, 48))
        .conv2d(Conv2D::new(64, 3).same())
        .flatten()
        .dense(3, Activation::Softmax)
        .build()
        .unwrap();
    let batch = 3;
    let x = Array4::from_shape_fn((batch, 20, 20, 48), |(n, h, w, c)| ((n * 7 + h * 3 + w * 5 + c) % 17) as f32 / 17.0);
    let mut net = Network::new(&spec, 11);
    let mut forced = |algo| {
        conv::set_algo(algo);
        net.forward(x.view(), Mode::Eval)
    };
    let outs = [
        ("direct", forced(ConvAlgo::Direct)),
        ("F(2x2)", forced(ConvAlgo::Winograd)),
        ("F(4x4)", forced(ConvAlgo::Winograd4x4)),
    ];
    assert_ne!(outs[0].1, outs[2].1, "the settings round differently");
    conv::set_algo(ConvAlgo::Auto);
    let auto = net.forward(x.view(), Mode::Eval);
    let again = net.forward(x.view(), Mode::Eval);
    let mine: Vec<_> = host::nn::tune::network_choices().into_iter().filter(|n| n.batch == batch).collect();
    assert_eq!(mine.len(), 1, "one decision, at the first inference: {mine:?}");
    let n = &mine[0];
    let labels: Vec<&str> = n.settings.iter().map(|(l, _)| l.as_str()).collect();
    // One conv: its fastest setting is one of the uniform ones, not timed again.
    assert_eq!(labels, ["direct", "F(2x2)", "F(4x4)"]);
    let fastest = n.settings.iter().enumerate().min_by_key(|(_, (_, t))| *t).map(|(i, _)| i);
    assert_eq!(fastest, Some(n.chosen));
    let kept = &outs.iter().find(|(l, _)| *l == labels[n.chosen]).expect("a uniform setting").1;
    assert!(auto == *kept && again == *kept, "not the kept setting's bytes");
    let g = ConvGeom::from_spec(&Conv2D::new(64, 3).same(), Shape::image(20, 20, 48)).expect("geometry");
    let layer: Vec<_> = conv::auto_choices().into_iter().filter(|c| c.geometry == g && c.batch == batch).collect();
    assert_eq!(layer.len(), 1, "{layer:?}");
    let c = &layer[0];
    assert!(c.in_network && !c.backward);
    assert_eq!(setting_of(c.chosen), labels[n.chosen]);
    let names: Vec<_> = c.timings.iter().map(|(p, _)| p.name()).collect();
    assert_eq!(names, ["direct", winograd::F2_3.name, winograd::F4_3.name]);
    assert!(c.to_string().contains("forward in the network: "), "{c}");
    assert!(n.to_string().starts_with(&format!("inference, batch 3, whole passes: {} ", labels[n.chosen])), "{n}");
    conv::set_algo(ConvAlgo::Direct);
}

/// With several convs, each geometry is one decision (two layers of one
/// shape share it, their times summed), and where the geometries' fastest
/// shares come from different uniform settings, that mixture is timed as a
/// whole pass too; whichever setting is kept, every conv's recorded path is
/// that setting's. Larger batches keep the per-layer timing.
#[test]
fn auto_in_whole_passes_decides_each_geometry_once() {
    let _turn = ALGO_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let spec = Sequential::new(Shape::image(11, 11, 6))
        .conv2d(Conv2D::new(10, 3).same())
        .conv2d(Conv2D::new(10, 3).same())
        .conv2d(Conv2D::new(10, 3).same())
        .conv2d(Conv2D::new(10, 5).same())
        .flatten()
        .dense(3, Activation::Softmax)
        .build()
        .unwrap();
    let batch = 4;
    let x = Array4::from_shape_fn((batch, 11, 11, 6), |(n, h, w, c)| ((n * 5 + h * 7 + w * 3 + c) % 13) as f32 / 13.0);
    let mut net = Network::new(&spec, 12);
    conv::set_algo(ConvAlgo::Auto);
    let auto = net.forward(x.view(), Mode::Eval);
    assert_eq!(auto, net.forward(x.view(), Mode::Eval), "the same paths call after call");
    let mine: Vec<_> = host::nn::tune::network_choices().into_iter().filter(|n| n.batch == batch).collect();
    assert_eq!(mine.len(), 1, "{mine:?}");
    let n = &mine[0];
    let image = |c: u32| Shape::image(11, 11, c);
    let geoms = [
        ConvGeom::from_spec(&Conv2D::new(10, 3).same(), image(6)).expect("geometry"),
        ConvGeom::from_spec(&Conv2D::new(10, 3).same(), image(10)).expect("geometry"),
        ConvGeom::from_spec(&Conv2D::new(10, 5).same(), image(10)).expect("geometry"),
    ];
    let decided: Vec<conv::AutoChoice> = geoms
        .iter()
        .map(|g| {
            let d: Vec<_> = conv::auto_choices().into_iter().filter(|c| c.geometry == *g && c.batch == batch).collect();
            assert_eq!(d.len(), 1, "one decision per geometry: {d:?}");
            assert!(d[0].in_network);
            d[0].clone()
        })
        .collect();
    // Each geometry's fastest share, as a uniform setting's label.
    let fastest: Vec<String> = decided
        .iter()
        .map(|c| setting_of(c.timings.iter().min_by_key(|(_, t)| *t).map(|(p, _)| *p).expect("timings")))
        .collect();
    let labels: Vec<&str> = n.settings.iter().map(|(l, _)| l.as_str()).collect();
    let uniform = fastest.iter().all(|f| *f == fastest[0]);
    if uniform {
        assert_eq!(labels, ["direct", "F(2x2)", "F(4x4)"]);
    } else {
        assert_eq!(labels, ["direct", "F(2x2)", "F(4x4)", "each layer's fastest"]);
    }
    let kept = labels[n.chosen];
    for (c, f) in decided.iter().zip(&fastest) {
        let want = if kept == "each layer's fastest" { f.as_str() } else { kept };
        assert_eq!(setting_of(c.chosen), want, "{c}");
    }
    // Past `tune::MAX_BATCH` (eval's batches) each conv is timed alone, as in training.
    let big = host::nn::tune::MAX_BATCH + 2;
    let xb = Array4::from_shape_fn((big, 11, 11, 6), |(n, h, w, c)| ((n * 3 + h * 7 + w + c) % 11) as f32 / 11.0);
    net.forward(xb.view(), Mode::Eval);
    assert!(host::nn::tune::network_choices().iter().all(|n| n.batch != big));
    let alone: Vec<_> = conv::auto_choices().into_iter().filter(|c| c.batch == big).collect();
    assert_eq!(alone.len(), 3, "{alone:?}");
    assert!(alone.iter().all(|c| !c.in_network && !c.backward));
    conv::set_algo(ConvAlgo::Direct);
}
