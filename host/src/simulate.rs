//! `host simulate`: run a model file with the shared no_std engine — the exact
//! code the firmware runs — on the desktop, with per-layer timing, MACs and
//! (optionally) every layer's output bytes for comparison with a device run.

use std::path::Path;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use shared::engine::{self, Observer};
use shared::format::AlignedBytes;
use shared::model::{Precision, QuantModel};
use shared::spec::Shape;

/// Read a model file into a buffer aligned for in-place parsing.
pub fn read_model_file(path: &Path) -> Result<AlignedBytes> {
    let raw = std::fs::read(path).with_context(|| format!("reading model file {}", path.display()))?;
    Ok(AlignedBytes::copy_from(&raw))
}

/// Parse and validate a model file already in memory, naming the file on error.
pub fn parse_model<'a>(bytes: &'a AlignedBytes, path: &Path) -> Result<QuantModel<'a>> {
    let model = shared::format::parse(bytes.as_bytes()).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    engine::validate(&model).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    Ok(model)
}

/// Encode float pixels (NHWC, [0, 1]) as the model's input bytes.
pub fn encode_input(model: &QuantModel, pixels: &[f32]) -> Result<Vec<u8>> {
    let mut out = vec![0u8; pixels.len() * model.precision.activation_bytes()];
    match model.precision {
        Precision::Int8 => engine::quantize_input(pixels, model.input, &mut out),
        Precision::F16 => engine::encode_f16_input(pixels, &mut out),
    }
    .map_err(|e| anyhow!("encoding the input: {e}"))?;
    Ok(out)
}

/// Runs the engine's split layers (int8 Conv2D/Dense rows and units) on
/// rayon's thread pool: the threads already exist, so a layer pays no spawn.
/// The engine gives the same bytes whatever the split.
#[derive(Clone, Copy, Debug, Default)]
pub struct RayonPool;

impl engine::Parallel for RayonPool {
    fn jobs(&self) -> usize {
        rayon::current_num_threads()
    }
    fn run(&self, jobs: usize, job: &(dyn Fn(usize) + Sync)) {
        use rayon::prelude::*;
        (0..jobs).into_par_iter().for_each(job);
    }
}

/// One layer of a simulated run.
#[derive(Clone, Debug)]
pub struct LayerRun {
    pub index: usize,
    pub name: String,
    pub kind: &'static str,
    pub shape: Shape,
    pub nanos: u64,
    pub macs: u64,
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
            hash: shared::protocol::fnv1a64(output),
            bytes: self.keep_bytes.then(|| output.to_vec()),
        });
    }
}

/// Run one example through the engine.
pub fn simulate(model: &QuantModel, input: &[u8], keep_layer_bytes: bool) -> Result<SimRun> {
    let prepared = engine::prepare(model).map_err(|e| anyhow!("engine: {e}"))?;
    let plan = prepared.plan();
    let mut arena = vec![0u8; plan.arena_bytes];
    let mut rec = Recorder { model, keep_bytes: keep_layer_bytes, started: Instant::now(), layers: Vec::new() };
    let output = engine::run_with(&prepared, input, &mut arena, &mut rec, &RayonPool)
        .map_err(|e| anyhow!("engine: {e}"))?
        .to_vec();
    let mut logits = vec![0f32; output.len() / model.precision.activation_bytes()];
    engine::dequantize_output(model, &output, &mut logits).map_err(|e| anyhow!("engine: {e}"))?;
    if rec.layers.len() != model.spec.layers().len() {
        bail!("the engine reported {} layers of {}", rec.layers.len(), model.spec.layers().len());
    }
    Ok(SimRun { output, logits, layers: rec.layers, arena_bytes: plan.arena_bytes })
}

/// The output values as JSON numbers: int8 values, or f16 values as f32.
pub fn output_values(precision: Precision, output: &[u8]) -> Vec<serde_json::Value> {
    match precision {
        Precision::Int8 => output.iter().map(|&b| serde_json::json!(b as i8)).collect(),
        Precision::F16 => output
            .chunks_exact(2)
            .map(|c| serde_json::json!(shared::f16::from_le_bytes([c[0], c[1]]).to_f32()))
            .collect(),
    }
}

/// `host simulate`'s arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct SimulateArgs {
    /// The model file (from `host quantize`).
    #[arg(long)]
    pub model: std::path::PathBuf,
    /// Image files to classify.
    pub images: Vec<std::path::PathBuf>,
    /// A class-folder dataset to run instead of single images (reports accuracy).
    #[arg(long, conflicts_with = "images")]
    pub data: Option<std::path::PathBuf>,
    /// Print JSON (with the raw output tensor under "output") instead of text.
    #[arg(long)]
    pub json: bool,
    /// Write every layer's output bytes to this folder (one file per image and layer).
    #[arg(long)]
    pub dump_layers: Option<std::path::PathBuf>,
}

/// Preprocess an image file for `model`: decode, resize, encode.
pub fn image_input(model: &QuantModel, path: &Path) -> Result<Vec<u8>> {
    let Shape::Image { h, w, .. } = model.spec.input() else { bail!("the model's input is not an image") };
    let img = crate::data::load_image_file(path, h as usize, w as usize)?;
    let pixels: Vec<f32> = img.iter().copied().collect();
    encode_input(model, &pixels)
}

/// The model's class names (empty when the file carries none).
pub fn class_names(model: &QuantModel) -> Vec<String> {
    (0..).map_while(|i| model.class_name(i)).map(str::to_string).collect()
}

fn layer_table(run: &SimRun) -> String {
    use std::fmt::Write as _;
    let mut s = format!("{:<44} {:<14} {:>12} {:>10} {:>18}\n", "layer", "output", "MACs", "time", "fnv1a64");
    for l in &run.layers {
        let _ = writeln!(
            s,
            "{:<44} {:<14} {:>12} {:>8.3}ms {:>18}",
            format!("{} ({})", l.name, l.kind),
            l.shape.to_string().trim_start_matches("(None, ").trim_end_matches(')'),
            crate::summary::thousands(l.macs),
            l.nanos as f64 / 1e6,
            format!("{:016x}", l.hash)
        );
    }
    let total: u64 = run.layers.iter().map(|l| l.nanos).sum();
    let _ = writeln!(
        s,
        "total {:.3} ms, arena {} bytes",
        total as f64 / 1e6,
        crate::summary::thousands(run.arena_bytes as u64)
    );
    s
}

/// Write `run`'s layer outputs under `dir/<stem>/<index>-<name>.bin`.
fn dump_layers(dir: &Path, stem: &str, run: &SimRun) -> Result<()> {
    let sub = dir.join(stem);
    for l in &run.layers {
        if let Some(b) = &l.bytes {
            crate::checkpoint::write_atomic(&sub.join(format!("{:02}-{}.bin", l.index, l.name)), b)?;
        }
    }
    Ok(())
}

/// JSON of one run: prediction, raw output, per-layer records.
pub fn run_json(model: &QuantModel, path: &Path, run: &SimRun) -> serde_json::Value {
    let pred = crate::predict::Prediction::from_logits(path, &class_names(model), &run.logits);
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

/// Run `host simulate`.
pub fn run_cli(args: &SimulateArgs) -> Result<()> {
    let bytes = read_model_file(&args.model)?;
    let model = parse_model(&bytes, &args.model)?;
    let keep = args.dump_layers.is_some();
    if let Some(dir) = &args.data {
        return simulate_folder(&model, dir, args.json);
    }
    if args.images.is_empty() {
        bail!("give image files to classify, or --data DIR");
    }
    let mut all = Vec::new();
    for path in &args.images {
        let input = image_input(&model, path)?;
        let run = simulate(&model, &input, keep)?;
        if let Some(dir) = &args.dump_layers {
            let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into());
            dump_layers(dir, &stem, &run)?;
        }
        if args.json {
            all.push(run_json(&model, path, &run));
        } else {
            let pred = crate::predict::Prediction::from_logits(path, &class_names(&model), &run.logits);
            println!("{}:", path.display());
            print!("{}", pred.render());
            print!("{}", layer_table(&run));
        }
    }
    if args.json {
        let v = if all.len() == 1 { all.remove(0) } else { serde_json::Value::Array(all) };
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    Ok(())
}

/// Classify every image of a class-folder dataset and report accuracy.
fn simulate_folder(model: &QuantModel, dir: &Path, json: bool) -> Result<()> {
    let data = crate::data::folder::FolderDataset::open(dir)?;
    let names = class_names(model);
    if !names.is_empty() && names != data.class_names() {
        bail!("{}: class folders {:?} do not match the model's classes {:?}", dir.display(), data.class_names(), names);
    }
    let (mut correct, mut total, mut nanos) = (0usize, 0usize, 0u64);
    for (path, label) in data.files() {
        let input = image_input(model, path)?;
        let run = simulate(model, &input, false)?;
        nanos += run.layers.iter().map(|l| l.nanos).sum::<u64>();
        let best = run.logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0))).map(|(i, _)| i);
        correct += usize::from(best == Some(*label));
        total += 1;
    }
    let acc = correct as f64 / total.max(1) as f64;
    let ms = nanos as f64 / 1e6 / total.max(1) as f64;
    if json {
        println!("{}", serde_json::json!({"images": total, "correct": correct, "accuracy": acc, "ms_per_image": ms}));
    } else {
        println!("{}: {correct}/{total} correct, accuracy {:.2} %, {ms:.3} ms per image", dir.display(), 100.0 * acc);
    }
    Ok(())
}
