//! `host simulate`: run a model file on the desktop with the engine the
//! firmware runs, and print the prediction with a per-layer table.
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::model_file::{class_names, image_input, parse_model, read_model_file};
use crate::prediction::Prediction;
use crate::simulate::{dump_layers, prepare, run_json, simulate_folder, simulate_prepared, SimRun};
use crate::summary::thousands;
use crate::tensor_file::{read_input, write_output};

/// `host simulate`'s arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct SimulateArgs {
    /// The model file (from `host quantize`).
    #[arg(long)]
    pub model: PathBuf,
    /// Image files to classify.
    pub images: Vec<PathBuf>,
    /// A class-folder dataset to run instead of single images (reports accuracy).
    #[arg(long, conflicts_with = "images")]
    pub data: Option<PathBuf>,
    /// `.npy` input tensors instead of images (audio features, sensor
    /// vectors): int8 in the model's input quantization, or float32 that it
    /// encodes, shaped as the model's input.
    #[arg(long, num_args = 1.., conflicts_with_all = ["images", "data"])]
    pub tensor: Vec<PathBuf>,
    /// Write the raw output of the one `--tensor` or image to this `.npy`
    /// (int8 values, or f16 values as float32).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print JSON (with the raw output tensor under "output") instead of text.
    #[arg(long)]
    pub json: bool,
    /// Write every layer's output bytes to this folder (one file per image and layer).
    #[arg(long)]
    pub dump_layers: Option<PathBuf>,
}

/// Run `host simulate`.
pub fn run(args: &SimulateArgs) -> Result<()> {
    let bytes = read_model_file(&args.model)?;
    let model = parse_model(&bytes, &args.model)?;
    if let Some(dir) = &args.data {
        let r = simulate_folder(&model, dir)?;
        if args.json {
            crate::outln!("{}", serde_json::to_string(&r)?)?;
        } else {
            crate::outln!(
                "{}: {}/{} correct, accuracy {:.2} %, {:.3} ms per image",
                dir.display(),
                r.correct,
                r.images,
                100.0 * r.accuracy,
                r.ms_per_image
            )?;
        }
        return Ok(());
    }
    let inputs = if args.tensor.is_empty() { &args.images } else { &args.tensor };
    if inputs.is_empty() {
        bail!("give image files to classify, --tensor FILE.npy, or --data DIR");
    }
    if let Some(out) = &args.out {
        if inputs.len() != 1 {
            bail!("--out {} takes the output of one input; {} given", out.display(), inputs.len());
        }
        let ins: Vec<&std::path::Path> = inputs.iter().map(PathBuf::as_path).chain([args.model.as_path()]).collect();
        crate::atomic::refuse_input_as_output("output", out, &ins)?;
    }
    let mut layouts = shared::host_layouts::HostLayouts::default();
    let prepared = prepare(&model, &mut layouts).with_context(|| args.model.display().to_string())?;
    let mut all = Vec::new();
    for path in inputs {
        let input = if args.tensor.is_empty() { image_input(&model, path)? } else { read_input(path, &model)? };
        let run = simulate_prepared(&prepared, &input, args.dump_layers.is_some())?;
        if let Some(dir) = &args.dump_layers {
            let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into());
            dump_layers(dir, &stem, &run)?;
        }
        if let Some(out) = &args.out {
            write_output(out, &model, &run.output)?;
        }
        if args.json {
            all.push(run_json(&model, path, &run));
        } else {
            let pred = Prediction::from_output(path, &class_names(&model), &run.logits, &model.spec);
            crate::outln!("{}:", path.display())?;
            crate::out!("{}", pred.render())?;
            crate::out!("{}", layer_table(&run))?;
        }
    }
    if args.json {
        let v = if all.len() == 1 { all.remove(0) } else { serde_json::Value::Array(all) };
        crate::outln!("{}", serde_json::to_string_pretty(&v)?)?;
    }
    Ok(())
}

fn layer_table(run: &SimRun) -> String {
    let mut s = format!("{:<44} {:<14} {:>12} {:>10} {:>18}\n", "layer", "output", "MACs", "time", "fnv1a64");
    for l in &run.layers {
        let _ = writeln!(
            s,
            "{:<44} {:<14} {:>12} {:>8.3}ms {:>18}",
            format!("{} ({})", l.name, l.kind),
            l.shape.to_string().trim_start_matches("(None, ").trim_end_matches(')'),
            thousands(l.macs),
            l.nanos as f64 / 1e6,
            format!("{:016x}", l.hash)
        );
    }
    let total: u64 = run.layers.iter().map(|l| l.nanos).sum();
    let _ = writeln!(s, "total {:.3} ms, arena {} bytes", total as f64 / 1e6, thousands(run.arena_bytes as u64));
    s
}
