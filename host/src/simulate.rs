//! The desktop simulator: a model file run by the shared no_std engine — the
//! exact code the firmware runs — with per-layer timing, MACs, hashes and
//! (optionally) every layer's output bytes for comparison with a device run.

use std::path::Path;
use std::time::Instant;

use anyhow::{anyhow, bail, Result};
use shared::engine::{self, Observer, Parallel, Prepared};
use shared::host_layouts::HostLayouts;
use shared::model::QuantModel;
use shared::spec::Shape;

use crate::engine_threads::SpinPool;
use crate::model_file::{class_names, image_input, output_values};
use crate::prediction::Prediction;

/// One layer of a simulated run.
#[derive(Clone, Debug)]
pub struct LayerRun {
    pub index: usize,
    pub name: String,
    pub kind: &'static str,
    pub shape: Shape,
    pub nanos: u64,
    pub macs: u64,
    /// FNV-1a of the output bytes; 0 in an accuracy run over a folder, which hashes nothing.
    pub hash: u64,
    /// The output bytes, when asked for.
    pub bytes: Option<Vec<u8>>,
}

/// The result of one inference.
#[derive(Clone, Debug)]
pub struct SimRun {
    /// Raw output bytes (int8 values, or f16 little-endian).
    pub output: Vec<u8>,
    /// Dequantized logits.
    pub logits: Vec<f32>,
    pub layers: Vec<LayerRun>,
    pub arena_bytes: usize,
}

struct Recorder<'m> {
    model: &'m QuantModel<'m>,
    /// Hash each layer's output (for comparison with a device); without,
    /// the engine may fuse layers and `hash` stays 0.
    hash: bool,
    keep_bytes: bool,
    started: Instant,
    layers: Vec<LayerRun>,
}

impl Observer for Recorder<'_> {
    fn layer_start(&mut self, _index: usize) {
        self.started = Instant::now();
    }
    fn layer_done(&mut self, index: usize, shape: Shape, output: &[u8]) {
        let nanos = self.started.elapsed().as_nanos() as u64;
        let spec = &self.model.spec;
        let (_, layer, input, out) = spec.shapes().nth(index).expect("the engine reports layers of its model");
        self.layers.push(LayerRun {
            index,
            name: spec.layer_name(index).to_string(),
            kind: layer.kind().class_name(),
            shape,
            nanos,
            macs: layer.macs(input, out),
            hash: if self.hash { shared::protocol::fnv1a64(output) } else { 0 },
            bytes: self.keep_bytes.then(|| output.to_vec()),
        });
    }
    fn sees_each_output(&self) -> bool {
        self.hash || self.keep_bytes
    }
}

/// Validate and plan `model` once for many [`simulate_prepared`] runs, with
/// the weight layouts this CPU's kernels read made here into `layouts` (held
/// to the memory limit first): input-major copies of the int8 dense layers
/// after a ReLU, which skip the weight rows of zero inputs, and, on AVX2
/// cores without VNNI, the 3x3 and 5x5 convs' Winograd filters. The same bytes.
pub fn prepare<'m>(model: &'m QuantModel<'m>, layouts: &'m mut HostLayouts) -> Result<Prepared<'m>> {
    crate::model_file::check_runnable(model)?;
    let mut prepared = engine::prepare(model).map_err(|e| anyhow!("engine: {e}"))?;
    let bytes = HostLayouts::bytes(&prepared) as u64;
    crate::budget::check("the weight layouts of the dense and conv layers", bytes)?;
    *layouts = HostLayouts::new(&prepared);
    layouts.lend(&mut prepared).map_err(|e| anyhow!("engine: {e}"))?;
    Ok(prepared)
}

/// Run one example through the engine (preparing the model for this run
/// only; loops over many inputs call [`prepare`] once and
/// [`simulate_prepared`]).
pub fn simulate(model: &QuantModel, input: &[u8], keep_layer_bytes: bool) -> Result<SimRun> {
    simulate_prepared(&prepare(model, &mut HostLayouts::default())?, input, keep_layer_bytes)
}

/// Run one example through an already prepared model, every layer's output
/// hashed (and kept, if asked) for comparison with a device run.
pub fn simulate_prepared(prepared: &Prepared<'_>, input: &[u8], keep_layer_bytes: bool) -> Result<SimRun> {
    run_recorded(prepared, input, true, keep_layer_bytes)
}

/// [`simulate_prepared`], hashing the layers' outputs only if `hash` (an
/// accuracy run needs the output and the times: the engine may then fuse a
/// Conv2D with its BatchNormalization).
fn run_recorded(prepared: &Prepared<'_>, input: &[u8], hash: bool, keep_layer_bytes: bool) -> Result<SimRun> {
    let model = prepared.model();
    // The device's planned arena is what the run reports; the host's kernels
    // on lent layouts take their scratch past it.
    let arena_bytes = prepared.plan().arena_bytes;
    let mut arena = vec![0u8; prepared.host_arena_bytes(SpinPool::global().jobs())];
    let mut rec = Recorder { model, hash, keep_bytes: keep_layer_bytes, started: Instant::now(), layers: Vec::new() };
    let output = engine::run_with(prepared, input, &mut arena, &mut rec, SpinPool::global())
        .map_err(|e| anyhow!("engine: {e}"))?
        .to_vec();
    let mut logits = vec![0f32; output.len() / model.precision.activation_bytes()];
    engine::dequantize_output(model, &output, &mut logits).map_err(|e| anyhow!("engine: {e}"))?;
    if rec.layers.len() != model.spec.layers().len() {
        bail!("the engine reported {} layers of {}", rec.layers.len(), model.spec.layers().len());
    }
    Ok(SimRun { output, logits, layers: rec.layers, arena_bytes })
}

/// JSON of one run: prediction, raw output, per-layer records. `host flash
/// --json` reports a device run in the same shape.
pub fn run_json(model: &QuantModel, path: &Path, run: &SimRun) -> serde_json::Value {
    let pred = Prediction::from_output(path, &class_names(model), &run.logits, &model.spec);
    serde_json::json!({
        "image": path,
        "precision": model.precision.name(),
        "class": pred.class,
        "confidence": pred.confidence,
        "top5": pred.top,
        "output": output_values(model.precision, &run.output),
        "logits": run.logits,
        "arena_bytes": run.arena_bytes,
        "layers": run.layers.iter().map(|l| serde_json::json!({
            "index": l.index, "name": l.name, "kind": l.kind, "shape": l.shape.to_string(),
            "macs": l.macs, "nanos": l.nanos, "fnv1a64": format!("{:016x}", l.hash),
        })).collect::<Vec<_>>(),
    })
}

/// Write `run`'s layer outputs under `dir/<stem>/<index>-<name>.bin`.
pub fn dump_layers(dir: &Path, stem: &str, run: &SimRun) -> Result<()> {
    let sub = dir.join(stem);
    for l in &run.layers {
        if let Some(b) = &l.bytes {
            crate::atomic::write_atomic(&sub.join(format!("{:02}-{}.bin", l.index, l.name)), b)?;
        }
    }
    Ok(())
}

/// Accuracy of a model file over a class-folder dataset.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct FolderAccuracy {
    pub images: usize,
    pub correct: usize,
    pub accuracy: f64,
    pub ms_per_image: f64,
}

/// Classify every image of a class-folder dataset with the engine.
pub fn simulate_folder(model: &QuantModel, dir: &Path) -> Result<FolderAccuracy> {
    let data = crate::data::folder::FolderDataset::open(dir)?;
    let names = class_names(model);
    if !names.is_empty() && names != data.class_names() {
        bail!("{}: class folders {:?} do not match the model's classes {:?}", dir.display(), data.class_names(), names);
    }
    let mut layouts = HostLayouts::default();
    let prepared = prepare(model, &mut layouts)?;
    let (mut correct, mut images, mut nanos) = (0usize, 0usize, 0u64);
    for (path, label) in data.files() {
        let input = image_input(model, path)?;
        let run = run_recorded(&prepared, &input, false, false)?;
        nanos += run.layers.iter().map(|l| l.nanos).sum::<u64>();
        correct += usize::from(shared::numeric::argmax(run.logits.iter().copied()) == Some(*label));
        images += 1;
    }
    Ok(FolderAccuracy {
        images,
        correct,
        accuracy: correct as f64 / images.max(1) as f64,
        ms_per_image: nanos as f64 / 1e6 / images.max(1) as f64,
    })
}
