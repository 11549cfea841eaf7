//! The weight layouts the host builds once per model and lends to the
//! engine ([`HostLayouts`]): input-major dense weights, Winograd conv filters
//! and the pixel kernels' filter sums and packings, each only where this
//! CPU's kernels read it. As TFLite Micro's Prepare computes an op's
//! constants once, these are computed at load time, not per inference; the
//! engine reads them through its traits ([`InputMajorWeights`],
//! [`WinogradFilters`], [`PixelFilterLayouts`]) and never allocates. This
//! module needs `alloc` and depends on the engine, never the reverse.
use alloc::vec;
use alloc::vec::Vec;

use crate::engine::{
    with_constant_clamp, EngineError, InputMajorWeights, PixelFilterLayouts, Prepared, Step, WinogradFilters,
};
use crate::geometry::ConvGeom;
use crate::kernels::int8::{self as k8, Int8Params};
use crate::model::{Int8Weights, LayerWeights};

/// Input-major copies of the int8 Dense layers worth one: those whose input's
/// zero point is -128, the bottom of the range, as after a ReLU (whose zeros
/// are frequent: about half of AlexNet's FC7 and FC8 inputs), and those
/// reading a BatchNormalization of a ReLU's output through max pools and
/// flattens (AlexNet's FC6), whose dead inputs hold each channel's image of
/// the ReLU's zero ([`k8::DeadInputs`]: about two in five of FC6's). Only on
/// a CPU with the kernel ([`k8::can_skip_dense_inputs`]); none elsewhere.
#[derive(Clone, Debug, Default)]
pub struct InputMajorCopies {
    copies: Vec<Vec<i8>>,
    /// Per layer, its inputs' dead values and their sums, where they have their own.
    dead: Vec<Option<(Vec<i8>, Vec<i32>)>>,
}

impl InputMajorCopies {
    pub fn new(prepared: &Prepared<'_>) -> InputMajorCopies {
        let (copies, dead) = (0..prepared.model().layer_data().len())
            .map(|i| {
                let source = own_dead_source(prepared, i);
                match worth_input_major(prepared, i, source.is_some()) {
                    Some(w) => {
                        let (units, n) = (w.bias.len(), w.weights.len() / w.bias.len());
                        let mut t = vec![0i8; units * n];
                        for (u, row) in w.weights.chunks_exact(n).enumerate() {
                            for (j, &v) in row.iter().enumerate() {
                                t[j * units + u] = v;
                            }
                        }
                        (t, source.map(|s| own_dead_values(&w, s)))
                    }
                    None => (Vec::new(), None),
                }
            })
            .unzip();
        InputMajorCopies { copies, dead }
    }

    /// The bytes [`InputMajorCopies::new`] would allocate for `prepared`
    /// (for a memory budget to hold them to first).
    pub fn bytes(prepared: &Prepared<'_>) -> usize {
        (0..prepared.model().layer_data().len())
            .filter_map(|i| {
                let own = own_dead_source(prepared, i).is_some();
                worth_input_major(prepared, i, own).map(|w| {
                    let (units, nin) = (w.bias.len(), w.weights.len() / w.bias.len());
                    w.weights.len() + if own { nin + 4 * units } else { 0 }
                })
            })
            .sum()
    }
}

/// Layer `i`'s weights if it is worth an input-major copy (see
/// [`InputMajorCopies`]); `own_dead`: its inputs have dead values of their own.
fn worth_input_major<'m>(prepared: &Prepared<'m>, i: usize, own_dead: bool) -> Option<Int8Weights<'m>> {
    match (prepared.steps[i], prepared.model().layer_data()[i].weights) {
        (Step::Dense { prm, .. }, LayerWeights::Int8(w))
            if (prm.in_zp == -128 || own_dead) && k8::can_skip_dense_inputs(prm.in_zp) && !w.bias.is_empty() =>
        {
            Some(w)
        }
        _ => None,
    }
}

/// Where int8 Dense layer `i`'s inputs are dead at values of their own: it
/// reads an int8 BatchNormalization of a ReLU'd layer's output
/// ([`crate::spec::ModelSpec::batch_norm_of_relu_read_by`]) whose channels
/// divide its inputs. Each channel's dead byte is that BN's output for the
/// ReLU's zero (the ReLU'd layer's output zero point), as the engine's own
/// BN kernel computes it, one value a channel; with `i`'s input zero point.
fn own_dead_source(prepared: &Prepared<'_>, i: usize) -> Option<(Vec<i8>, i32)> {
    let (bn, relu) = prepared.model().spec.batch_norm_of_relu_read_by(i)?;
    let data = prepared.model().layer_data();
    let (Step::Dense { prm, .. }, LayerWeights::Int8(w)) = (prepared.steps[i], data[i].weights) else {
        return None;
    };
    let (Step::BatchNorm { prm: bn_prm }, LayerWeights::Int8(bw)) = (prepared.steps[bn], data[bn].weights) else {
        return None;
    };
    let (Step::Conv { prm: relu_prm, .. } | Step::Dense { prm: relu_prm, .. } | Step::Activation { prm: relu_prm, .. }) =
        prepared.steps[relu]
    else {
        return None;
    };
    let (c, units) = (bw.weights.len(), w.bias.len());
    if c == 0 || units == 0 || w.weights.len() % (units * c) != 0 {
        return None;
    }
    let mut pixel = vec![i8::try_from(relu_prm.out_zp).ok()?; c];
    k8::batch_norm_in_place_fast(&with_constant_clamp(bn_prm, false, false), &bw, &mut pixel);
    Some((pixel, prm.in_zp))
}

/// A copied layer's inputs' dead values, each channel's from
/// [`own_dead_source`], and their sums ([`k8::DeadInputs`]).
fn own_dead_values(w: &Int8Weights<'_>, (pixel, in_zp): (Vec<i8>, i32)) -> (Vec<i8>, Vec<i32>) {
    let nin = w.weights.len() / w.bias.len();
    let values: Vec<i8> = (0..nin).map(|j| pixel[j % pixel.len()]).collect();
    let sums = w
        .weights
        .chunks_exact(nin)
        .map(|row| {
            row.iter()
                .zip(&values)
                .fold(0i32, |a, (&wv, &d)| a.wrapping_add(i32::from(wv).wrapping_mul(i32::from(d) - in_zp)))
        })
        .collect();
    (values, sums)
}

impl InputMajorWeights for InputMajorCopies {
    fn layer(&self, i: usize) -> &[i8] {
        self.copies.get(i).map_or(&[], |c| c)
    }

    fn dead(&self, i: usize) -> Option<k8::DeadInputs<'_>> {
        let (values, sums) = self.dead.get(i)?.as_ref()?;
        Some(k8::DeadInputs { values, sums })
    }
}

/// Winograd-transformed filters of the int8 Conv2D layers this CPU runs
/// that way ([`k8::winograd_serves`]: 3x3 and 5x5 stride-1 layers on AVX2 cores
/// without VNNI); none elsewhere.
#[derive(Clone, Debug, Default)]
pub struct WinogradCopies(Vec<Vec<i16>>);

impl WinogradCopies {
    pub fn new(prepared: &Prepared<'_>) -> WinogradCopies {
        let layers = (0..prepared.model().layer_data().len()).map(|i| match winograd_layer(prepared, i) {
            Some((g, w)) => {
                let mut u = vec![0i16; k8::winograd_filter_len(&g)];
                k8::transform_winograd_filters(&g, w.weights, &mut u);
                u
            }
            None => Vec::new(),
        });
        WinogradCopies(layers.collect())
    }

    /// The bytes [`WinogradCopies::new`] would allocate for `prepared`.
    pub fn bytes(prepared: &Prepared<'_>) -> usize {
        (0..prepared.model().layer_data().len())
            .filter_map(|i| winograd_layer(prepared, i))
            .map(|(g, _)| 2 * k8::winograd_filter_len(&g))
            .sum()
    }
}

/// Layer `i`'s geometry and weights if this CPU runs it through Winograd.
fn winograd_layer<'m>(prepared: &Prepared<'m>, i: usize) -> Option<(ConvGeom, Int8Weights<'m>)> {
    match (prepared.steps[i], prepared.model().layer_data()[i].weights) {
        (Step::Conv { g, prm, .. }, LayerWeights::Int8(w)) if k8::winograd_serves(&g, &prm) => Some((g, w)),
        _ => None,
    }
}

impl WinogradFilters for WinogradCopies {
    fn layer(&self, i: usize) -> &[i16] {
        self.0.get(i).map_or(&[], |c| c)
    }
}

/// The [`k8::PixelFilters`] of the int8 Conv2D layers this CPU's pixel
/// kernels serve ([`k8::can_split_conv_pixels`]) and read any for: every such
/// layer's filter sums with VNNI (a few KB), and the packed filters of those
/// small enough for the broadcast kernels (AlexNet's conv1: 35 KB with VNNI,
/// 70 KB widened on AVX2); none elsewhere.
#[derive(Clone, Debug, Default)]
pub struct PixelFilterCopies(Vec<(Vec<i32>, Vec<i8>, Vec<i16>)>);

impl PixelFilterCopies {
    pub fn new(prepared: &Prepared<'_>) -> PixelFilterCopies {
        let layers = (0..prepared.model().layer_data().len()).map(|i| match pixel_layer(prepared, i) {
            Some((g, prm, w, lens)) => {
                let (mut sums, mut packed) = (vec![0i32; lens.sums], vec![0i8; lens.packed]);
                let mut widened = vec![0i16; lens.widened];
                k8::build_pixel_filters(&g, &prm, &w, &mut sums, &mut packed, &mut widened);
                (sums, packed, widened)
            }
            None => Default::default(),
        });
        PixelFilterCopies(layers.collect())
    }

    /// The bytes [`PixelFilterCopies::new`] would allocate for `prepared`.
    pub fn bytes(prepared: &Prepared<'_>) -> usize {
        (0..prepared.model().layer_data().len())
            .filter_map(|i| pixel_layer(prepared, i))
            .map(|(.., n)| 4 * n.sums + n.packed + 2 * n.widened)
            .sum()
    }
}

/// Layer `i`'s geometry, parameters (as the engine runs them), weights and
/// [`k8::PixelFilters`] lengths if this CPU's pixel kernel reads any for it.
fn pixel_layer<'m>(
    prepared: &Prepared<'m>,
    i: usize,
) -> Option<(ConvGeom, Int8Params, Int8Weights<'m>, k8::PixelFilterLens)> {
    let (Step::Conv { g, prm, relu, six }, LayerWeights::Int8(w)) =
        (prepared.steps[i], prepared.model().layer_data()[i].weights)
    else {
        return None;
    };
    let prm = with_constant_clamp(prm, relu, six);
    let lens = k8::pixel_filter_lens(&g, &prm);
    (lens != k8::PixelFilterLens::default()).then_some((g, prm, w, lens))
}

impl PixelFilterLayouts for PixelFilterCopies {
    fn layer(&self, i: usize) -> k8::PixelFilters<'_> {
        self.0.get(i).map_or_else(Default::default, |(sums, packed, widened)| k8::PixelFilters {
            sums,
            packed,
            widened,
        })
    }
}

/// Every weight layout the host builds once per model and lends to the
/// engine: input-major dense weights ([`InputMajorCopies`]), Winograd conv
/// filters ([`WinogradCopies`]) and the pixel kernels' filter sums and
/// packings ([`PixelFilterCopies`]), each only where this CPU's kernels
/// read it.
#[derive(Clone, Debug, Default)]
pub struct HostLayouts {
    pub input_major: InputMajorCopies,
    pub winograd: WinogradCopies,
    pub pixel_filters: PixelFilterCopies,
}

impl HostLayouts {
    pub fn new(prepared: &Prepared<'_>) -> HostLayouts {
        HostLayouts {
            input_major: InputMajorCopies::new(prepared),
            winograd: WinogradCopies::new(prepared),
            pixel_filters: PixelFilterCopies::new(prepared),
        }
    }

    /// The bytes [`HostLayouts::new`] would allocate for `prepared` (for a
    /// memory budget to hold them to first).
    pub fn bytes(prepared: &Prepared<'_>) -> usize {
        InputMajorCopies::bytes(prepared) + WinogradCopies::bytes(prepared) + PixelFilterCopies::bytes(prepared)
    }

    /// Lend them all to `prepared`.
    pub fn lend<'m>(&'m self, prepared: &mut Prepared<'m>) -> Result<(), EngineError> {
        prepared.with_input_major(&self.input_major)?;
        prepared.with_winograd(&self.winograd)?;
        prepared.with_pixel_filters(&self.pixel_filters)
    }
}
