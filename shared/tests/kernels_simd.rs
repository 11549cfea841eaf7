//! Every SIMD variant of the int8 and f16 kernels against the plain kernel:
//! identical bytes (int8) and identical bits (f16) on generated shapes (odd
//! channel counts, counts around the 16/64-byte vector widths, all strides and
//! paddings, zero points at the extremes, weights over the whole i8 range).
//! Each instruction-set level this CPU supports is called directly, not only
//! the dispatcher's pick.

mod common;

use proptest::prelude::*;
use shared::f16;
use shared::kernels::int8::{self as k8, Int8Params};
use shared::kernels::{f16 as k16, ConvGeom};
use shared::model::{F16Weights, Int8Weights};
use shared::spec::{Activation, Padding};
use suite::Rng;

/// Raw int8 layer parameters (not from a quantizer: any bytes the engine accepts).
struct Raw {
    weights: Vec<i8>,
    scales: Vec<f32>,
    bias: Vec<i32>,
    multiplier: Vec<i32>,
    shift: Vec<i32>,
}

impl Raw {
    fn new(rng: &mut Rng, weights: usize, channels: usize, fan_in: usize) -> Raw {
        // Mostly realistic: a shift that keeps typical accumulators in range;
        // sometimes any allowed shift (saturating outputs).
        let typical = -((fan_in as f64 * 127.0 * 64.0).log2() as i32 - 7);
        Raw {
            weights: rng.i8s(weights),
            scales: vec![1.0; channels],
            bias: (0..channels).map(|_| rng.int(-200_000, 200_000)).collect(),
            multiplier: (0..channels).map(|_| rng.int(1 << 30, i32::MAX)).collect(),
            shift: (0..channels)
                .map(|_| if rng.int(0, 9) == 0 { rng.int(-31, 30) } else { (typical + rng.int(-2, 2)).clamp(-31, 30) })
                .collect(),
        }
    }
    /// A BatchNormalization's parameters over its whole domain: zero scales,
    /// biases and multipliers at the i32 extremes, any shift the engine accepts.
    fn batch_norm(rng: &mut Rng, c: usize) -> Raw {
        let pick = |rng: &mut Rng, edge: [i32; 4]| {
            if rng.int(0, 4) == 0 {
                edge[rng.int(0, 3) as usize]
            } else {
                rng.next_u64() as i32
            }
        };
        Raw {
            weights: (0..c).map(|_| if rng.int(0, 2) == 0 { 0 } else { rng.i8() }).collect(),
            scales: vec![1.0; c],
            bias: (0..c).map(|_| pick(rng, [i32::MIN, i32::MAX, 0, -1])).collect(),
            multiplier: (0..c).map(|_| pick(rng, [i32::MIN, i32::MAX, 1 << 30, 0])).collect(),
            shift: (0..c).map(|_| rng.int(-31, 30)).collect(),
        }
    }
    fn view(&self) -> Int8Weights<'_> {
        Int8Weights {
            weights: &self.weights,
            weight_scale: &self.scales,
            bias: &self.bias,
            multiplier: &self.multiplier,
            shift: &self.shift,
        }
    }
}

/// A zero point, often at an extreme.
fn zero_point(rng: &mut Rng) -> i32 {
    match rng.int(0, 3) {
        0 => -128,
        1 => 127,
        _ => rng.int(-128, 127),
    }
}

fn params(rng: &mut Rng, relu: bool) -> Int8Params {
    let act = if relu { Activation::Relu } else { Activation::None };
    Int8Params::new(zero_point(rng), zero_point(rng), act)
}

/// Every int8 conv variant this CPU can run, by name.
type Conv8 = fn(&ConvGeom, &Int8Params, &Int8Weights<'_>, &[i8], &mut [i8]);
type Dense8 = fn(&Int8Params, &Int8Weights<'_>, &[i8], &mut [i8]);

fn conv_variants() -> Vec<(&'static str, Conv8)> {
    let mut v: Vec<(&'static str, Conv8)> = vec![
        ("fast", |g, p, w, x, o| k8::conv2d_fast(g, p, w, x, o, &mut vec![0; k8::conv2d_scratch_bytes(g)])),
        ("portable", k8::conv2d_portable as Conv8),
    ];
    #[cfg(x86_simd)]
    {
        use shared::kernels::x86;
        if x86::has_avx2() {
            // SAFETY (each closure): the CPU feature was checked just above.
            v.push(("avx2", |g, p, w, x, o| unsafe { x86::int8::conv2d_avx2(g, p, w, x, o) }));
            v.push(("avx2-patches", |g, p, w, x, o| {
                if x86::int8_avx2::patches_fit(g, p) {
                    unsafe { x86::int8_avx2::conv2d_avx2_patch_pixels(g, p, w, None, x, o, 0, None) }
                } else {
                    unsafe { x86::int8::conv2d_avx2(g, p, w, x, o) }
                }
            }));
        }
        if x86::has_avx512bw() {
            v.push(("avx512bw", |g, p, w, x, o| unsafe { x86::int8::conv2d_avx512bw(g, p, w, x, o) }));
        }
        if x86::has_vnni() {
            v.push(("vnni", |g, p, w, x, o| unsafe { x86::int8::conv2d_vnni(g, p, w, x, o) }));
            // Both row walkers on their own, whichever `conv2d_vnni` picks for the case.
            v.push(("vnni-clipped", |g, p, w, x, o| {
                if g.kernel() * g.kernel() <= x86::int8::MAX_TAPS {
                    unsafe { x86::int8::conv2d_vnni_clipped_rows(g, p, w, x, o, 0) }
                } else {
                    unsafe { x86::int8::conv2d_vnni(g, p, w, x, o) }
                }
            }));
            v.push(("vnni-patches", |g, p, w, x, o| {
                if x86::int8::patches_fit(g, p) {
                    unsafe { x86::int8::conv2d_vnni_patch_pixels(g, p, w, None, x, o, 0, None) }
                } else {
                    unsafe { x86::int8::conv2d_vnni(g, p, w, x, o) }
                }
            }));
        }
    }
    v
}

fn dense_variants() -> Vec<(&'static str, Dense8)> {
    let mut v: Vec<(&'static str, Dense8)> =
        vec![("fast", k8::dense_fast as Dense8), ("portable", k8::dense_portable as Dense8)];
    #[cfg(x86_simd)]
    {
        use shared::kernels::x86;
        if x86::has_avx2() {
            // SAFETY (each closure): the CPU feature was checked just above.
            v.push(("avx2-units", |p, w, x, o| unsafe { x86::int8_avx2::dense_avx2_units(p, w, x, o, 0) }));
        }
        if x86::has_avx512bw() {
            v.push(("avx512bw", |p, w, x, o| unsafe { x86::int8::dense_avx512bw(p, w, x, o) }));
        }
        if x86::has_vnni() {
            v.push(("vnni", |p, w, x, o| unsafe { x86::int8::dense_vnni(p, w, x, o) }));
        }
    }
    v
}

fn check_conv8(g: &ConvGeom, seed: u64, relu: bool) -> Result<(), TestCaseError> {
    let mut rng = Rng::new(seed);
    let raw = Raw::new(&mut rng, g.weights_len(), g.out_c, g.kernel() * g.kernel() * g.in_c);
    let p = params(&mut rng, relu);
    let x = rng.i8s(g.input_len());
    let mut want = vec![0i8; g.output_len()];
    k8::conv2d(g, &p, &raw.view(), &x, &mut want);
    for (name, f) in conv_variants() {
        let mut got = vec![0x55i8; g.output_len()];
        f(g, &p, &raw.view(), &x, &mut got);
        prop_assert!(got == want, "{name} differs: {g:?} {p:?}");
    }
    // The engine's fused Conv2D + BatchNormalization, whole and cut in two
    // at an odd pixel: the conv's bytes, then the plain BatchNormalization;
    // with the filter sums and packings built by each call, and built once
    // and lent, as the host lends them.
    if k8::can_split_conv_pixels(g, &p) {
        check_fused(g, &want, &mut rng, "dispatched", &|part, first, then| {
            k8::conv2d_pixels(g, &p, &raw.view(), None, &x, part, first, Some(then))
        })?;
        let lens = k8::pixel_filter_lens(g, &p);
        let (mut sums, mut packed, mut widened) = (vec![0; lens.sums], vec![0; lens.packed], vec![0; lens.widened]);
        k8::build_pixel_filters(g, &p, &raw.view(), &mut sums, &mut packed, &mut widened);
        let lent = k8::PixelFilters { sums: &sums, packed: &packed, widened: &widened };
        check_fused(g, &want, &mut rng, "dispatched, lent filters", &|part, first, then| {
            k8::conv2d_pixels(g, &p, &raw.view(), Some(&lent), &x, part, first, Some(then))
        })?;
    }
    // Exact integer Winograd (3x3 stride 1) on every CPU that has AVX2 (the
    // dispatcher takes it only where there is no VNNI).
    #[cfg(x86_simd)]
    if shared::kernels::x86::has_avx2() && shared::kernels::x86::int8_winograd::serves(g, &p) {
        check_winograd(g, &p, &raw, &x, &want, &mut rng)?;
    }
    // The AVX2 patch kernel the same way, on every CPU that has AVX2 (the
    // dispatcher picks VNNI where it can), by both walks where both fit.
    #[cfg(x86_simd)]
    if shared::kernels::x86::has_avx2() && shared::kernels::x86::int8_avx2::patches_fit(g, &p) {
        use shared::kernels::x86::int8_avx2::{
            broadcast_fits, broadcast_len, build_broadcast_filters, conv2d_avx2_patch_pixels_by, PatchWalk,
        };
        let mut widened = vec![0; broadcast_len(g)];
        if broadcast_fits(g) {
            build_broadcast_filters(g, &raw.view(), &mut widened);
        }
        for (walk, lent) in
            [(PatchWalk::Dot, None), (PatchWalk::Broadcast, None), (PatchWalk::Broadcast, Some(&widened))]
        {
            if walk == PatchWalk::Broadcast && !broadcast_fits(g) {
                continue;
            }
            let name = format!("avx2 {walk:?}, lent filters: {}", lent.is_some());
            let lent = lent.map(|u| u.as_slice());
            check_fused(g, &want, &mut rng, &name, &|part, first, then| {
                // SAFETY: AVX2, the patches' fit and the walk's, checked just above.
                unsafe { conv2d_avx2_patch_pixels_by(walk, g, &p, &raw.view(), lent, &x, part, first, Some(then)) }
            })?;
        }
    }
    Ok(())
}

/// The Winograd kernel against the plain conv's bytes `want`: whole, in two
/// calls that split the channels at a multiple of 8, and in two that split
/// the tiles (as the engine's threads do); then with a BatchNormalization fused.
#[cfg(x86_simd)]
fn check_winograd(
    g: &ConvGeom,
    p: &Int8Params,
    raw: &Raw,
    x: &[i8],
    want: &[i8],
    rng: &mut Rng,
) -> Result<(), TestCaseError> {
    use shared::kernels::x86::int8_winograd as wg;
    use std::ops::Range;
    let mut u = vec![0i16; wg::filter_len(g)];
    wg::transform_filters(g, &raw.weights, &mut u);
    let run = |parts: &[(Range<usize>, Range<usize>)], then: Option<&k8::ThenBatchNorm<'_>>| {
        let mut got = vec![0x55i8; g.output_len()];
        // Not aligned, and left dirty from the call before.
        let mut scratch = vec![0x5au8; wg::scratch_bytes(g) + 1];
        for (tiles, couts) in parts.iter().filter(|(t, c)| !t.is_empty() && !c.is_empty()) {
            // SAFETY: AVX2 and the geometry were checked by the caller; `got`
            // holds the output, and the calls run one after the other.
            unsafe {
                wg::conv2d_winograd_avx2(
                    g,
                    p,
                    &raw.view(),
                    &u,
                    x,
                    got.as_mut_ptr(),
                    tiles.clone(),
                    couts.clone(),
                    then,
                    &mut scratch[1..],
                )
            };
        }
        got
    };
    let (tiles, c) = (wg::tiles(g), g.out_c);
    let (tcut, ccut) = ((tiles / 2) | 1, c / 16 * 8);
    let splits = [
        vec![(0..tiles, 0..c)],
        vec![(0..tiles, 0..ccut), (0..tiles, ccut..c)],
        vec![(0..tcut.min(tiles), 0..c), (tcut.min(tiles)..tiles, 0..c)],
    ];
    for parts in &splits {
        prop_assert!(run(parts, None) == want, "winograd differs: {g:?} {p:?} {parts:?}");
    }
    let bn = Raw::batch_norm(rng, g.out_c);
    let then = k8::ThenBatchNorm { p: params(rng, false), w: bn.view() };
    let mut fused = want.to_vec();
    k8::batch_norm_in_place(&then.p, &then.w, &mut fused);
    for parts in &splits[1..] {
        prop_assert!(run(parts, Some(&then)) == fused, "winograd fused batch norm differs: {g:?} {parts:?}");
    }
    Ok(())
}

/// `run` (output pixels `first..` of `g` into `part`, with a BatchNormalization
/// fused) against the plain conv's bytes `conv` then the plain
/// BatchNormalization, whole and cut in two at an odd pixel.
fn check_fused(
    g: &ConvGeom,
    conv: &[i8],
    rng: &mut Rng,
    name: &str,
    run: &dyn Fn(&mut [i8], usize, &k8::ThenBatchNorm<'_>),
) -> Result<(), TestCaseError> {
    let bn = Raw::batch_norm(rng, g.out_c);
    let then = k8::ThenBatchNorm { p: params(rng, false), w: bn.view() };
    let mut want = conv.to_vec();
    k8::batch_norm_in_place(&then.p, &then.w, &mut want);
    let pixels = g.out_h * g.out_w;
    for cut in [0, (pixels / 2) | 1] {
        let cut = cut.min(pixels);
        let mut got = vec![0x55i8; g.output_len()];
        let (a, b) = got.split_at_mut(cut * g.out_c);
        run(a, 0, &then);
        run(b, cut, &then);
        prop_assert!(got == want, "{name} fused batch norm differs: {g:?} cut at {cut}");
    }
    Ok(())
}

fn check_dense8(n: usize, units: usize, seed: u64, relu: bool) -> Result<(), TestCaseError> {
    let mut rng = Rng::new(seed);
    let raw = Raw::new(&mut rng, n * units, units, n);
    let p = params(&mut rng, relu);
    let x = rng.i8s(n);
    let mut want = vec![0i8; units];
    k8::dense(&p, &raw.view(), &x, &mut want);
    for (name, f) in dense_variants() {
        let mut got = vec![0x55i8; units];
        f(&p, &raw.view(), &x, &mut got);
        prop_assert!(got == want, "{name} differs: n={n} units={units} {p:?}");
    }
    // Cut in two at an odd unit, as the engine's threads share a layer.
    if k8::can_split_dense() {
        let cut = (units / 2) | 1;
        let cut = cut.min(units);
        let mut got = vec![0x55i8; units];
        let (a, b) = got.split_at_mut(cut);
        k8::dense_units(&p, &raw.view(), &x, a, 0);
        k8::dense_units(&p, &raw.view(), &x, b, cut);
        prop_assert!(got == want, "dense_units differs: n={n} units={units} {p:?} cut at {cut}");
    }
    Ok(())
}

/// The input-major dense kernel (rows of zero-point inputs skipped) against
/// the plain dense: every unit, and the units cut in two at `cut`, with
/// `dead` of every 8 inputs set to the zero point (0: as drawn; 8: all).
fn check_dense8_input_major(n: usize, units: usize, seed: u64, relu: bool, dead: u64) -> Result<(), TestCaseError> {
    check_dense8_input_major_at(n, units, seed, relu, dead, false)
}

/// [`check_dense8_input_major`], with `own`: each input dead at a value of
/// its own (a channel's of `n % 7 + 1` channels, drawn) instead of the zero
/// point, its sums computed here ([`k8::DeadInputs`]).
fn check_dense8_input_major_at(
    n: usize,
    units: usize,
    seed: u64,
    relu: bool,
    dead: u64,
    own: bool,
) -> Result<(), TestCaseError> {
    let mut rng = Rng::new(seed);
    let raw = Raw::new(&mut rng, n * units, units, n);
    let p = params(&mut rng, relu);
    if !k8::can_skip_dense_inputs(p.in_zp) {
        return Ok(());
    }
    let channels = rng.i8s(n % 7 + 1);
    let values: Vec<i8> = (0..n).map(|j| if own { channels[j % channels.len()] } else { p.in_zp as i8 }).collect();
    let mut x = rng.i8s(n);
    for (v, &d) in x.iter_mut().zip(&values) {
        if (rng.next_u64() % 8) < dead {
            *v = d;
        }
    }
    let sums: Vec<i32> = raw
        .weights
        .chunks_exact(n.max(1))
        .take(units)
        .map(|row| row.iter().zip(&values).map(|(&w, &d)| i32::from(w) * (i32::from(d) - p.in_zp)).sum())
        .collect();
    let own = own.then_some(k8::DeadInputs { values: &values, sums: &sums });
    let mut wt = vec![0i8; n * units];
    for (u, row) in raw.weights.chunks_exact(n).enumerate() {
        for (j, &v) in row.iter().enumerate() {
            wt[j * units + u] = v;
        }
    }
    let mut want = vec![0i8; units];
    k8::dense(&p, &raw.view(), &x, &mut want);
    let mut got = vec![0x55i8; units];
    k8::dense_units_input_major(&p, &raw.view(), &wt, &x, own, &mut got, 0);
    prop_assert!(got == want, "input-major differs: n={n} units={units} dead={dead}/8 {p:?}");
    let cut = (seed as usize) % (units + 1);
    let mut got = vec![0x55i8; units];
    let (a, b) = got.split_at_mut(cut);
    k8::dense_units_input_major(&p, &raw.view(), &wt, &x, own, a, 0);
    k8::dense_units_input_major(&p, &raw.view(), &wt, &x, own, b, cut);
    prop_assert!(got == want, "input-major cut at {cut} differs: n={n} units={units} dead={dead}/8 {p:?}");
    // The AVX2 kernel too where the dispatch picked VNNI (it serves AVX2-only cores).
    #[cfg(target_arch = "x86_64")]
    if shared::kernels::x86::has_avx2() {
        use shared::kernels::x86::int8_avx2::dense_avx2_input_major_units;
        let mut got = vec![0x55i8; units];
        let (a, b) = got.split_at_mut(cut);
        // SAFETY: AVX2 checked; `can_skip_dense_inputs` checked the zero point.
        unsafe {
            dense_avx2_input_major_units(&p, &raw.view(), &wt, &x, own, a, 0);
            dense_avx2_input_major_units(&p, &raw.view(), &wt, &x, own, b, cut);
        }
        prop_assert!(got == want, "AVX2 input-major cut at {cut} differs: n={n} units={units} dead={dead}/8 {p:?}");
    }
    Ok(())
}

/// Random f16 values, some zero, subnormal, large (overflowing sums),
/// infinite or NaN (negative, with a payload).
fn halves(rng: &mut Rng, n: usize, scale: f32, specials: bool) -> Vec<f16> {
    (0..n)
        .map(|_| match rng.int(0, if specials { 80 } else { 40 }) {
            0 => f16::ZERO,
            1 => f16::from_bits(rng.int(1, 0x3ff) as u16), // subnormal
            2 => -f16::ZERO,
            41 => f16::INFINITY,
            42 => f16::NEG_INFINITY,
            43..=46 => f16::from_f32(rng.uniform(-60000.0, 60000.0)),
            47 => f16::from_bits(0xfc01 | rng.int(0, 0x3fe) as u16),
            _ => f16::from_f32(rng.uniform(-scale, scale)),
        })
        .collect()
}

/// Every NaN in `v` is the one the kernels store (its sign and payload
/// would differ between x86 and Arm).
fn nans_canonical(v: &[f16]) -> bool {
    v.iter().all(|h| !h.is_nan() || h.to_bits() == k16::CANONICAL_NAN.to_bits())
}

fn bits(v: &[f16]) -> Vec<u16> {
    v.iter().map(|h| h.to_bits()).collect()
}

type Conv16 = fn(&ConvGeom, bool, &F16Weights<'_>, &[f16], &mut [f16]);
type Dense16 = fn(bool, &F16Weights<'_>, &[f16], &mut [f16]);

fn conv16_variants() -> Vec<(&'static str, Conv16)> {
    let mut v: Vec<(&'static str, Conv16)> = vec![("fast", k16::conv2d_fast as Conv16)];
    #[cfg(x86_simd)]
    {
        use shared::kernels::x86;
        if x86::has_f16c() {
            // SAFETY: the CPU features were checked just above.
            v.push(("f16c", |g, r, w, x, o| unsafe { x86::f16::f16_conv2d_f16c(g, r, w, x, o) }));
        }
        if x86::has_avx512_f16() {
            // SAFETY: the CPU features were checked just above.
            v.push(("avx512", |g, r, w, x, o| unsafe { x86::f16::f16_conv2d_avx512(g, r, w, x, o) }));
        }
    }
    v
}

fn dense16_variants() -> Vec<(&'static str, Dense16)> {
    let mut v: Vec<(&'static str, Dense16)> = vec![("fast", k16::dense_fast as Dense16)];
    #[cfg(x86_simd)]
    {
        use shared::kernels::x86;
        if x86::has_f16c() {
            // SAFETY: the CPU features were checked just above.
            v.push(("f16c", |r, w, x, o| unsafe { x86::f16::f16_dense_f16c(r, w, x, o) }));
        }
        if x86::has_avx512_f16() {
            // SAFETY: the CPU features were checked just above.
            v.push(("avx512", |r, w, x, o| unsafe { x86::f16::f16_dense_avx512(r, w, x, o) }));
        }
    }
    v
}

fn check_conv16(g: &ConvGeom, seed: u64, relu: bool, specials: bool) -> Result<(), TestCaseError> {
    let mut rng = Rng::new(seed);
    let x = halves(&mut rng, g.input_len(), 4.0, specials);
    let wt = halves(&mut rng, g.weights_len(), 1.0, specials);
    let b = halves(&mut rng, g.out_c, 1.0, specials);
    let w = F16Weights { weights: &wt, bias: &b };
    let mut want = vec![f16::ZERO; g.output_len()];
    k16::conv2d(g, relu, &w, &x, &mut want);
    prop_assert!(nans_canonical(&want), "a NaN result that is not the canonical one");
    for (name, f) in conv16_variants() {
        let mut got = vec![f16::from_bits(0x5555); g.output_len()];
        f(g, relu, &w, &x, &mut got);
        prop_assert!(bits(&got) == bits(&want), "{name} differs: {g:?}");
    }
    // Split in two row ranges, as the engine's jobs run it.
    let row = g.out_w * g.out_c;
    let cut = g.out_h / 2;
    let mut got = vec![f16::from_bits(0x5555); g.output_len()];
    let (top, bottom) = got.split_at_mut(cut * row);
    k16::conv2d_rows(g, relu, &w, &x, top, 0);
    k16::conv2d_rows(g, relu, &w, &x, bottom, cut);
    prop_assert!(bits(&got) == bits(&want), "conv2d_rows split at {cut} differs: {g:?}");
    Ok(())
}

fn check_dense16(n: usize, units: usize, seed: u64, relu: bool, specials: bool) -> Result<(), TestCaseError> {
    let mut rng = Rng::new(seed);
    let x = halves(&mut rng, n, 2.0, specials);
    let wt = halves(&mut rng, n * units, 0.5, specials);
    let b = halves(&mut rng, units, 1.0, specials);
    let w = F16Weights { weights: &wt, bias: &b };
    let mut want = vec![f16::ZERO; units];
    k16::dense(relu, &w, &x, &mut want);
    prop_assert!(nans_canonical(&want), "a NaN result that is not the canonical one");
    for (name, f) in dense16_variants() {
        let mut got = vec![f16::from_bits(0x5555); units];
        f(relu, &w, &x, &mut got);
        prop_assert!(bits(&got) == bits(&want), "{name} differs: n={n} units={units}");
    }
    Ok(())
}

fn pad(same: bool) -> Padding {
    if same {
        Padding::Same
    } else {
        Padding::Valid
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The vectorised requantization over its whole input domain: any
    /// accumulator (the bias alone when the weight is 0), any multiplier
    /// (including the one saturating SRDHM case, i32::MIN), any shift the
    /// engine accepts, any zero points.
    #[test]
    fn int8_batch_norm_variants_equal_plain(seed: u64, pixels in 1usize..6, c in 1usize..70, relu: bool, many: bool) {
        // More than 256 pixels: the x86 kernel tables each channel's 256 results.
        let pixels = if many { 250 + 7 * pixels } else { pixels };
        let mut rng = Rng::new(seed);
        let raw = Raw::batch_norm(&mut rng, c);
        let w = raw.view();
        let p = params(&mut rng, relu);
        let x = rng.i8s(pixels * c);
        let mut want = x.clone();
        k8::batch_norm_in_place(&p, &w, &mut want);
        let mut got = x.clone();
        k8::batch_norm_in_place_fast(&p, &w, &mut got);
        prop_assert_eq!(&got, &want);
        #[cfg(x86_simd)]
        if shared::kernels::x86::has_avx512bw() {
            let mut got = x.clone();
            // SAFETY: the CPU features were checked just above.
            unsafe { shared::kernels::x86::int8::batch_norm_in_place_avx512(&p, &w, &mut got) };
            prop_assert_eq!(&got, &want);
        }
    }

    /// 3x3 and 5x5 stride-1 layers, which integer Winograd takes on AVX2
    /// cores: odd and even sizes (a last tile row or column half outside),
    /// channel counts on both sides of the vector widths.
    #[test]
    fn int8_3x3_and_5x5_conv_variants_equal_plain(
        seed: u64, h in 1usize..20, w in 1usize..20, c in 1usize..80, filters in 1usize..60, five: bool, same: bool,
        relu: bool,
    ) {
        let k = if five { 5 } else { 3 };
        let Some(g) = ConvGeom::new((h, w, c), filters, k, 1, pad(same)) else { return Ok(()) };
        check_conv8(&g, seed, relu)?;
    }

    #[test]
    fn int8_conv_variants_equal_plain(
        seed: u64, h in 1usize..16, w in 1usize..16, c in 1usize..80, filters in 1usize..40,
        k in 1usize..7, stride in 1usize..5, same: bool, relu: bool,
    ) {
        let Some(g) = ConvGeom::new((h, w, c), filters, k, stride, pad(same)) else { return Ok(()) };
        check_conv8(&g, seed, relu)?;
    }

    #[test]
    fn int8_dense_variants_equal_plain(seed: u64, n in 1usize..700, units in 1usize..40, relu: bool) {
        check_dense8(n, units, seed, relu)?;
    }

    #[test]
    fn int8_dense_input_major_equals_plain(seed: u64, n in 1usize..300, units in 1usize..200, relu: bool, dead in 0u64..9) {
        check_dense8_input_major(n, units, seed, relu, dead)?;
    }

    #[test]
    fn int8_dense_input_major_with_dead_values_of_its_own_equals_plain(seed: u64, n in 1usize..300, units in 1usize..200, relu: bool, dead in 0u64..9) {
        check_dense8_input_major_at(n, units, seed, relu, dead, true)?;
    }

    #[test]
    fn f16_conv_variants_equal_plain(
        seed: u64, h in 1usize..12, w in 1usize..12, c in 1usize..40, filters in 1usize..30,
        k in 1usize..6, stride in 1usize..4, same: bool, relu: bool, specials: bool,
    ) {
        let Some(g) = ConvGeom::new((h, w, c), filters, k, stride, pad(same)) else { return Ok(()) };
        check_conv16(&g, seed, relu, specials)?;
    }

    #[test]
    fn f16_dense_variants_equal_plain(seed: u64, n in 1usize..600, units in 1usize..30, relu: bool, specials: bool) {
        check_dense16(n, units, seed, relu, specials)?;
    }
}

/// Shapes of the real AlexNet layers (scaled down spatially), where the
/// channel counts are multiples of the vector widths, and channel counts
/// straddling 16 and 64.
#[test]
fn alexnet_like_shapes() {
    let shapes = [
        ((31, 31, 3), 96, 11, 4, Padding::Valid),
        ((9, 9, 96), 256, 5, 1, Padding::Same),
        ((5, 5, 256), 384, 3, 1, Padding::Same),
        ((5, 5, 384), 256, 3, 1, Padding::Same),
        ((7, 6, 63), 17, 3, 2, Padding::Same),
        ((6, 7, 65), 15, 2, 1, Padding::Same),
        ((4, 4, 64), 16, 4, 3, Padding::Same),
        ((3, 3, 1), 1, 17, 1, Padding::Same),     // more taps than the VNNI table
        ((4, 5, 520), 9, 3, 1, Padding::Same),    // f16 filters too large to pack (the F16C scalar loop)
        ((3, 40, 600), 20, 3, 1, Padding::Same),  // a row of int8 patches gathered in four pieces
        ((63, 63, 3), 96, 11, 4, Padding::Valid), // conv1's broadcast kernel over two gathers of patches
        ((13, 13, 384), 40, 3, 1, Padding::Same), // AlexNet's conv4 input: 49 Winograd tiles
        ((27, 27, 96), 24, 5, 1, Padding::Same),  // AlexNet's conv2 input: 378 Winograd tiles in passes
    ];
    for (i, &(inp, f, k, s, p)) in shapes.iter().enumerate() {
        let g = ConvGeom::new(inp, f, k, s, p).unwrap();
        for relu in [false, true] {
            check_conv8(&g, i as u64, relu).unwrap();
            check_conv16(&g, i as u64, relu, false).unwrap();
        }
    }
    // The F16C scalar fallback (the plain loop with F16C conversions) on NaN, inf and subnormals.
    let big = ConvGeom::new((3, 4, 600), 5, 3, 2, Padding::Same).unwrap();
    for seed in 0..4 {
        check_conv16(&big, seed, seed % 2 == 0, true).unwrap();
    }
    for (n, u) in [(9216, 9), (4096, 17), (63, 8), (64, 16), (65, 7), (1, 1)] {
        check_dense8(n, u, n as u64, true).unwrap();
        check_dense8_input_major(n, u, n as u64, true, 4).unwrap();
        check_dense16(n, u, n as u64, false, false).unwrap();
    }
}

/// Integer Winograd at the edge of its range: every input at the end of the
/// int8 range farthest from its zero point and every weight -128 or 127 (each
/// product +-32,640), at each scheme's most input channels, where the scaled
/// direct sum comes closest to leaving i32; and past them, where the kernel
/// is not used.
#[cfg(x86_simd)]
#[test]
fn int8_winograd_at_its_range_limit() {
    use shared::kernels::x86::int8_winograd as wg;
    if !shared::kernels::x86::has_avx2() {
        return;
    }
    let mut rng = Rng::new(7);
    for (k, scheme, shift) in [(3, wg::Scheme::F2x2For3x3, -22), (5, wg::Scheme::F2For5x5, -20)] {
        let c = scheme.max_in_c();
        let g = ConvGeom::new((6, 7, c), 16, k, 1, Padding::Same).unwrap();
        extremes(&g, shift, &mut rng);
        let past = ConvGeom::new((6, 7, c + 1), 16, k, 1, Padding::Same).unwrap();
        assert!(!wg::serves(&past, &Int8Params::new(0, 0, Activation::None)));
    }
}

/// [`check_winograd`] on inputs and weights at the extremes that make every
/// product +-32,640, with outputs that move with the sum.
#[cfg(x86_simd)]
fn extremes(g: &ConvGeom, shift: i32, rng: &mut Rng) {
    let c = g.in_c;
    for (x0, zp, w0) in [(127i8, -128, -128i8), (-128, 127, -128), (127, -128, 127), (-128, 127, 127)] {
        let mut raw = Raw::new(rng, g.weights_len(), g.out_c, g.kernel() * g.kernel() * c);
        raw.weights.fill(w0);
        // Outputs that move with the sum (about +-3e8 times 0.75, over 2^22).
        raw.shift.fill(shift);
        let p = Int8Params::new(zp, 0, Activation::None);
        assert!(shared::kernels::x86::int8_winograd::serves(g, &p));
        let x = vec![x0; g.input_len()];
        let mut want = vec![0i8; g.output_len()];
        k8::conv2d(g, &p, &raw.view(), &x, &mut want);
        assert!(want.iter().any(|&v| v != want[0]), "outputs that tell sums apart");
        check_winograd(g, &p, &raw, &x, &want, rng).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// f16 BatchNormalization and MaxPool2D, and int8 MaxPool2D: the dispatched variants give the plain bits,
    /// with infinities, signed zeros and subnormals (and NaN inputs for the pool).
    #[test]
    fn batch_norm_and_max_pool_variants_equal_plain(
        seed: u64, h in 1usize..9, w in 1usize..9, c in 1usize..70, pool in 1usize..4, stride in 1usize..4,
    ) {
        let mut rng = Rng::new(seed);
        let mut x = halves(&mut rng, h * w * c, 8.0, true);
        let scale = halves(&mut rng, c, 2.0, true);
        let shift = halves(&mut rng, c, 2.0, true);
        let bn = F16Weights { weights: &scale, bias: &shift };
        let mut want = x.clone();
        k16::batch_norm_in_place(&bn, &mut want);
        prop_assert!(nans_canonical(&want), "a NaN result that is not the canonical one");
        let mut got = x.clone();
        k16::batch_norm_in_place_fast(&bn, &mut got);
        prop_assert!(bits(&got) == bits(&want), "batch_norm differs: {h}x{w}x{c}");

        if let Some(g) = shared::kernels::PoolGeom::new((h, w, c), pool, stride) {
            if c > 1 {
                x[rng.int(0, (h * w * c - 1) as i32) as usize] = f16::NAN;
            }
            let mut want = vec![f16::ZERO; g.output_len()];
            k16::max_pool(&g, &x, &mut want);
            let mut got = vec![f16::from_bits(0x5555); g.output_len()];
            k16::max_pool_fast(&g, &x, &mut got);
            prop_assert!(bits(&got) == bits(&want), "max_pool differs: {g:?}");
            let x8 = rng.i8s(h * w * c);
            let mut want = vec![0i8; g.output_len()];
            k8::max_pool(&g, &x8, &mut want);
            let mut got = vec![0x55i8; g.output_len()];
            k8::max_pool_fast(&g, &x8, &mut got);
            prop_assert_eq!(&got, &want, "int8 max_pool differs: {:?}", g);
            #[cfg(x86_simd)]
            if shared::kernels::x86::has_avx2() {
                let mut got = vec![0x55i8; g.output_len()];
                // SAFETY: AVX2, checked just above.
                unsafe { shared::kernels::x86::int8_avx2::max_pool_avx2(&g, &x8, &mut got) };
                prop_assert_eq!(&got, &want, "int8 AVX2 max_pool differs: {:?}", g);
            }
        }
    }
}

/// The input-major dense kernel over more units than one pass holds (2048),
/// half and all of its inputs dead, every zero point class, dead at the
/// zero point and at values of their own.
#[test]
fn int8_dense_input_major_wide_layers() {
    for (seed, (n, units, dead)) in [(130, 4100, 4), (77, 2048, 8), (40, 2111, 0), (5, 1000, 5)].into_iter().enumerate()
    {
        for relu in [false, true] {
            for own in [false, true] {
                check_dense8_input_major_at(n, units, seed as u64 * 2 + relu as u64, relu, dead, own).unwrap();
            }
        }
    }
}
