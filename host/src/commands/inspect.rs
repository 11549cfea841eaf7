//! `host inspect FILE`: what a model file holds, layer by layer, and the
//! arena the engine plans for it.
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Result;
use shared::model::{LayerWeights, QuantModel};

use crate::summary::thousands;

/// `host inspect`'s arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct InspectArgs {
    /// The model file.
    pub file: PathBuf,
    /// Also check that the model's run fits this board's RAM (arena, stack
    /// and static data; an error if not), as `host flash` does first.
    #[arg(long, value_enum)]
    pub board: Option<crate::flash::Board>,
}

/// Render the per-layer table of a parsed model.
pub fn render(model: &QuantModel, file_bytes: usize) -> String {
    let mut s = String::new();
    let plan = shared::engine::plan(model);
    let _ = writeln!(
        s,
        "format version {}, {} model, {} bytes, input {} (scale {:.6}, zero point {})",
        // Canonical files: the oldest version that says the model.
        shared::format::version_for(model),
        model.precision.name(),
        thousands(file_bytes as u64),
        model.spec.input(),
        model.input.scale,
        model.input.zero_point
    );
    if let Some(t) = model.preprocess {
        let _ = writeln!(s, "input transform: x = pixel(0..1) * {:?} + {:?}", t.scale(), t.offset());
    }
    let _ = writeln!(
        s,
        "{:<44} {:<14} {:>11} {:>11} {:>12} {:>11} {:>6}  weight scales",
        "layer", "output", "params", "bytes", "MACs", "out scale", "out zp"
    );
    for ((i, layer, input, output), data) in model.spec.shapes().zip(model.layer_data()) {
        let (t, n) = layer.params(input);
        let (bytes, wscales) = match data.weights {
            LayerWeights::None => (0, String::new()),
            LayerWeights::Int8(w) => {
                let lo = w.weight_scale.iter().copied().fold(f32::INFINITY, f32::min);
                let hi = w.weight_scale.iter().copied().fold(0.0, f32::max);
                (
                    w.weights.len() + 4 * (w.weight_scale.len() + w.bias.len() + w.multiplier.len() + w.shift.len()),
                    format!("{lo:.3e}..{hi:.3e}"),
                )
            }
            LayerWeights::F16(w) => (2 * (w.weights.len() + w.bias.len()), String::new()),
        };
        // A graph's layers name the tensors they read (t0 the input, t{i+1} layer i's output).
        let reads = model.spec.inputs()[i];
        let from = match (model.spec.is_stack(), reads.other) {
            (true, _) => String::new(),
            (false, Some(o)) => format!(" <- t{},t{}", reads.main, o),
            (false, None) => format!(" <- t{}", reads.main),
        };
        let _ = writeln!(
            s,
            "{:<44} {:<14} {:>11} {:>11} {:>12} {:>11.6} {:>6}  {}",
            format!("{} ({}){from}", model.spec.layer_name(i), layer.kind().class_name()),
            output.to_string().trim_start_matches("(None, ").trim_end_matches(')'),
            thousands(t + n),
            thousands(bytes as u64),
            thousands(layer.macs(input, output)),
            data.output.scale,
            data.output.zero_point,
            wscales
        );
    }
    let _ = writeln!(s, "weight bytes: {}", thousands(model.weight_bytes() as u64));
    let _ = writeln!(
        s,
        "arena bytes: {} = {} of activations ({}: {}, the largest input+output of layer {}) + {} of kernel scratch",
        thousands(plan.arena_bytes as u64),
        thousands((plan.arena_bytes - plan.scratch_bytes) as u64),
        if model.spec.is_stack() {
            "smallest possible"
        } else {
            "planned by tensor lifetime, first fit; no plan needs less than"
        },
        thousands(plan.max_layer_io_bytes as u64),
        model.spec.layer_name(plan.peak_layer),
        thousands(plan.scratch_bytes as u64)
    );
    let bytes_per = model.precision.activation_bytes();
    let n = model.spec.layers().len();
    let every: u64 = (0..=n).map(|t| model.spec.tensor(t).elements().saturating_mul(bytes_per as u64)).sum();
    let _ = writeln!(
        s,
        "activations if every tensor had its own buffer: {}; TFLite Micro's greedy plan of the same graph: {} \
         (16-byte aligned buffers, no layer in place)",
        thousands(every),
        thousands(shared::arena::tflm_arena_bytes(&model.spec, bytes_per) as u64)
    );
    let resident = shared::band::plan_banded(model, shared::band::InputRows::Resident);
    let streamed = shared::band::plan_banded(model, shared::band::InputRows::Streamed);
    let _ = writeln!(
        s,
        "banded arena bytes (conv -> BN -> pool in bands of rows, what the firmware runs): {} with the input resident, {} with input rows streamed{}",
        thousands(resident.arena_bytes as u64),
        thousands(streamed.arena_bytes as u64),
        if streamed.input == shared::band::InputRows::Streamed { "" } else { " (no band group at the input: resident)" }
    );
    let _ = writeln!(s, "MACs per inference: {}", thousands(model.spec.macs()));
    // Names come from the file: control characters are shown escaped.
    let labels: Vec<String> = (0..).map_while(|i| model.class_name(i)).map(crate::out::printable).collect();
    if !labels.is_empty() {
        let _ = writeln!(s, "classes: {}", labels.join(", "));
    }
    s
}

/// Run `host inspect`.
pub fn run(args: &InspectArgs) -> Result<()> {
    let bytes = crate::model_file::read_model_file(&args.file)?;
    let model = crate::model_file::parse_model(&bytes, &args.file)?;
    crate::out!("{}", render(&model, bytes.as_bytes().len()))?;
    if let Some(board) = args.board {
        let ram = crate::flash::check_ram(board, &model)?;
        crate::outln!("fits {}: {ram}", board.name())?;
    }
    Ok(())
}
