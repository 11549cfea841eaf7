//! The int8 3x3 and 5x5 convs through exact integer Winograd, conv 1 on its
//! lent widened filters, and the dense layers after a ReLU through their
//! input-major copies, as the engine runs
//! them on AVX2 cores without VNNI (AMD Zen 3), give every layer's bytes of
//! the direct kernels. On an AVX-512 machine the kernels are capped at AVX2
//! first (`shared::kernels::x86::limit_isa`, process-wide: this test has a
//! binary of its own), so that every x86 machine runs this path.

use shared::convert::OwnedModel;
use shared::engine::{self, InputMajorWeights, NoObserver, Parallel, PixelFilterLayouts, WinogradFilters};
use shared::host_layouts::HostLayouts;
use shared::spec;

/// alexnet-micro at 67x67 with random parameters: its int8 model (calibrated
/// on the four random images) and the images.
fn micro(seed: u64) -> (OwnedModel, Vec<Vec<f32>>) {
    let m = suite::random_models(&spec::alexnet_micro(67, 7).unwrap(), seed);
    (m.int8, m.images)
}

/// Cap the kernels at AVX2; false where the CPU has no AVX2 (nothing to test).
fn avx2_only() -> bool {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        shared::kernels::x86::limit_isa(shared::kernels::x86::Isa::Avx2);
        return true;
    }
    eprintln!("no AVX2: the Winograd int8 kernel does not run on this CPU");
    false
}

#[test]
fn winograd_convs_give_the_direct_bytes() {
    if !avx2_only() {
        return;
    }
    let (int8, images) = micro(21);
    let view = int8.view();
    let direct = engine::prepare(&view).unwrap();
    // What `host::simulate::prepare` does (less its memory budget).
    let mut winograd = engine::prepare(&view).unwrap();
    let layouts = HostLayouts::new(&winograd);
    layouts.lend(&mut winograd).unwrap();
    // Every stride-1 conv (alexnet-micro's 5x5 conv 2 and 3x3 conv 3-5) got its filters.
    let lent = (0..int8.spec.layers().len()).filter(|&i| !WinogradFilters::layer(&layouts.winograd, i).is_empty());
    assert_eq!(lent.count(), 4, "conv 2-5 run through Winograd");
    // And the dense layers after a ReLU (FC7, FC8) or its BatchNormalization
    // (FC6) their input-major copies.
    let copied =
        (0..int8.spec.layers().len()).filter(|&i| !InputMajorWeights::layer(&layouts.input_major, i).is_empty());
    assert_eq!(copied.count(), 3, "FC6, FC7 and FC8 read input-major");
    // And conv 1, whose filters fit the broadcast kernel, them widened.
    let widened = (0..int8.spec.layers().len())
        .filter(|&i| !PixelFilterLayouts::layer(&layouts.pixel_filters, i).widened.is_empty())
        .collect::<Vec<_>>();
    assert_eq!(widened, [0], "conv 1 runs on its widened filters");
    let two = host::engine_threads::SpinPool::new(2);
    let pools: [&dyn Parallel; 3] = [&engine::SingleThread, &two, &host::engine_threads::RayonPool];
    // Scratch for two jobs: rayon's pool may have more threads, which then
    // share them out (at most one job per part).
    let mut arena = vec![0u8; winograd.host_arena_bytes(2)];
    for (k, image) in images.iter().enumerate() {
        let mut input = vec![0u8; image.len()];
        engine::quantize_input(image, int8.input, &mut input).unwrap();
        // Every layer on its own (an observer that sees each output).
        let want = host::simulate::simulate_prepared(&direct, &input, true).unwrap();
        let got = host::simulate::simulate_prepared(&winograd, &input, true).unwrap();
        let hashes = |r: &host::simulate::SimRun| r.layers.iter().map(|l| l.hash).collect::<Vec<_>>();
        assert_eq!(hashes(&got), hashes(&want), "image {k}: layer hashes");
        assert_eq!(got.output, want.output, "image {k}");
        // The fused conv + BatchNormalization, split by output channels.
        for (p, par) in pools.iter().enumerate() {
            arena.fill(0x5a);
            let got = engine::run_with(&winograd, &input, &mut arena, &mut NoObserver, *par).unwrap();
            assert_eq!(got, &want.output[..], "image {k}, pool {p}");
        }
    }
}

/// Filters of the wrong length, or for a layer that is not a conv, are refused.
#[test]
fn lent_winograd_filters_are_checked() {
    if !avx2_only() {
        return;
    }
    #[derive(Debug)]
    struct Lent(Vec<Vec<i16>>);
    impl WinogradFilters for Lent {
        fn layer(&self, i: usize) -> &[i16] {
            self.0.get(i).map_or(&[], |v| v)
        }
    }
    let (int8, _) = micro(22);
    let view = int8.view();
    let layouts = HostLayouts::new(&engine::prepare(&view).unwrap());
    let conv =
        (0..int8.spec.layers().len()).find(|&i| !WinogradFilters::layer(&layouts.winograd, i).is_empty()).unwrap();
    let len = WinogradFilters::layer(&layouts.winograd, conv).len();
    let mut short = vec![Vec::new(); conv + 1];
    short[conv] = vec![0; len - 1];
    let short = Lent(short);
    let err = engine::prepare(&view).unwrap().with_winograd(&short).unwrap_err();
    assert!(err.to_string().contains("Winograd"), "{err}");
    let last = int8.spec.layers().len() - 1;
    let mut misplaced = vec![Vec::new(); last + 1];
    misplaced[last] = vec![0; len];
    let misplaced = Lent(misplaced);
    assert!(engine::prepare(&view).unwrap().with_winograd(&misplaced).is_err(), "filters for the last (dense) layer");
}
