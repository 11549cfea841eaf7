//! What `host flash` prints: a typed [`DeviceReport`] built once from the
//! device run and the model, rendered as text or as JSON (the shape of
//! `host simulate --json`), neither read back from the other.

use super::frames::DeviceRun;
use crate::model_file::{class_names, output_values};
use crate::prediction::Prediction;
use anyhow::{anyhow, Result};
use shared::engine;
use shared::model::{Precision, QuantModel};
use std::fmt::Write as _;
use std::path::Path;

/// One layer as the device ran it, named from the model.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerRow {
    pub index: usize,
    /// The layer's name (`conv2d_1`) and Keras class (`Conv2D`); empty when
    /// the device reported an index the model does not have.
    pub name: String,
    pub kind: &'static str,
    /// Output shape, as the model says.
    pub shape: String,
    pub macs: u64,
    pub ticks: u64,
    /// `ticks` as QEMU instructions (`None` without a HELLO frame's clock).
    pub instructions: Option<u64>,
    pub fnv: u64,
    /// The output bytes, when the device sent them and they were asked for.
    pub bytes: Option<Vec<u8>>,
}

/// The device's answer for one input.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceReport {
    /// The board's name from its HELLO frame.
    pub board: Option<String>,
    /// The layer clock the device timed with, and its rate (HELLO).
    pub clock: Option<(&'static str, u32)>,
    pub precision: Precision,
    /// Class, confidence and top 5 from the dequantized output; its path is
    /// the image (or the model, for a raw input).
    pub prediction: Prediction,
    /// The output tensor's bytes.
    pub output: Vec<u8>,
    pub logits: Vec<f32>,
    /// Arena bytes the firmware planned (MODEL frame): activations and
    /// kernel scratch.
    pub arena_bytes: Option<u32>,
    /// The kernels' scratch inside `arena_bytes` (the same plan on the desktop).
    pub scratch_bytes: usize,
    /// Arena bytes the firmware ever wrote (STATS, painted high-water mark).
    pub arena_used_bytes: Option<u32>,
    pub layers: Vec<LayerRow>,
    /// Ticks of the inference and their instructions: the quiet run's
    /// where the device made one (no per-layer hashing and reports), else
    /// the reported run's.
    pub ticks: u64,
    pub instructions: Option<u64>,
    /// The reported run's ticks and instructions, when `ticks` are the
    /// quiet run's.
    pub reported: Option<(u64, Option<u64>)>,
    pub stack_bytes: Option<u32>,
    pub log: Vec<String>,
    pub log_warnings: Vec<String>,
}

impl DeviceReport {
    /// The report of `run` (which must have an output frame) for `model`;
    /// `image` names the input. With `with_bytes`, layers keep the output
    /// bytes the device sent.
    pub fn new(run: &DeviceRun, model: &QuantModel<'_>, image: &Path, with_bytes: bool) -> Result<DeviceReport> {
        let (reported_ticks, output) = run.output.clone().ok_or_else(|| anyhow!("the device sent no output frame"))?;
        let (ticks, reported) = match &run.quiet {
            Some((quiet_ticks, quiet_output)) => {
                if *quiet_output != output {
                    return Err(anyhow!("the quiet run's output differs from the reported run's"));
                }
                (*quiet_ticks, Some((reported_ticks, run.instructions(reported_ticks))))
            }
            None => (reported_ticks, None),
        };
        let mut logits = vec![0f32; output.len() / model.precision.activation_bytes()];
        engine::dequantize_output(model, &output, &mut logits).map_err(|e| anyhow!("device output: {e}"))?;
        let prediction = Prediction::from_output(image, &class_names(model), &logits, &model.spec);
        let shapes: Vec<_> = model.spec.shapes().collect();
        let layers = run
            .layers
            .iter()
            .map(|l| {
                let index = l.index as usize;
                let (name, kind, shape, macs) = shapes
                    .get(index)
                    .map(|&(_, layer, input, out)| {
                        (
                            model.spec.layer_name(index).to_string(),
                            layer.kind().class_name(),
                            out.to_string(),
                            layer.macs(input, out),
                        )
                    })
                    .unwrap_or_default();
                LayerRow {
                    index,
                    name,
                    kind,
                    shape,
                    macs,
                    ticks: l.ticks,
                    instructions: run.instructions(l.ticks),
                    fnv: l.fnv,
                    bytes: if with_bytes { l.bytes.clone() } else { None },
                }
            })
            .collect();
        Ok(DeviceReport {
            board: run.hello.as_ref().map(|h| h.board.clone()),
            clock: run.hello.as_ref().map(|h| (h.clock_name(), h.cpu_hz)),
            precision: model.precision,
            prediction,
            output,
            logits,
            arena_bytes: run.model.as_ref().map(|m| m.arena_needed),
            scratch_bytes: shared::engine::scratch_bytes(model),
            arena_used_bytes: run.arena_used,
            layers,
            ticks,
            instructions: run.instructions(ticks),
            reported,
            stack_bytes: run.stack_used,
            log: run.log.clone(),
            log_warnings: run.log_warnings.clone(),
        })
    }

    /// The JSON of `host flash --json`: the shape of `host simulate --json`
    /// (image, precision, class, confidence, top5, raw `output`, `logits`,
    /// `layers`), plus the board, tick/instruction counts, the stack
    /// high-water mark and the decoded defmt log (`log`, `log_warnings`).
    pub fn to_json(&self) -> serde_json::Value {
        let layers: Vec<serde_json::Value> = self
            .layers
            .iter()
            .map(|l| {
                let mut o = serde_json::json!({
                    "index": l.index, "name": l.name, "kind": l.kind, "shape": l.shape, "macs": l.macs,
                    "ticks": l.ticks, "instructions": l.instructions, "fnv1a64": format!("{:016x}", l.fnv),
                });
                if let Some(b) = &l.bytes {
                    o["output"] = serde_json::json!(output_values(self.precision, b));
                }
                o
            })
            .collect();
        serde_json::json!({
            "image": self.prediction.path,
            "board": self.board,
            "clock": self.clock.map(|(name, _)| name),
            "clock_hz": self.clock.map(|(_, hz)| hz),
            "precision": self.precision.name(),
            "class": self.prediction.class,
            "confidence": self.prediction.confidence,
            "top5": self.prediction.top,
            "output": output_values(self.precision, &self.output),
            "logits": self.logits,
            "arena_bytes": self.arena_bytes,
            "scratch_bytes": self.scratch_bytes,
            "arena_used_bytes": self.arena_used_bytes,
            "layers": layers,
            "ticks": self.ticks,
            "instructions": self.instructions,
            "reported_ticks": self.reported.map(|(t, _)| t),
            "reported_instructions": self.reported.and_then(|(_, n)| n),
            "stack_bytes": self.stack_bytes,
            "log": self.log,
            "log_warnings": self.log_warnings,
        })
    }

    /// The text of `host flash`: the board, the prediction, a table of the
    /// layers and the totals.
    pub fn render_text(&self) -> String {
        let clock = self.clock.map(|(name, hz)| format!(" (layer clock: {name} at {} MHz)", hz / 1_000_000));
        let mut s = format!("{}{}:\n", self.board.as_deref().unwrap_or("?"), clock.unwrap_or_default());
        s.push_str(&self.prediction.render());
        let _ = writeln!(
            s,
            "{:>3}  {:<44} {:<20} {:>14} {:>16} {:>8}  fnv1a64",
            "#", "layer", "output shape", "ticks", "instructions", "per MAC"
        );
        for l in &self.layers {
            let name = if l.kind.is_empty() { String::new() } else { format!("{} ({})", l.name, l.kind) };
            let _ = writeln!(
                s,
                "{:>3}  {:<44} {:<20} {:>14} {:>16} {:>8}  {:016x}",
                l.index,
                name,
                l.shape,
                l.ticks,
                l.instructions.unwrap_or(0),
                match (l.instructions, l.macs) {
                    (Some(n), m) if m > 0 => format!("{:.3}", n as f64 / m as f64),
                    _ => String::new(),
                },
                l.fnv
            );
        }
        let _ = writeln!(
            s,
            "total: {} ticks, ~{} instructions (QEMU -icount shift=0, {:.3} per MAC), {} stack bytes",
            self.ticks,
            self.instructions.unwrap_or(0),
            self.instructions.unwrap_or(0) as f64 / self.layers.iter().map(|l| l.macs).sum::<u64>().max(1) as f64,
            self.stack_bytes.unwrap_or(0)
        );
        if let Some((ticks, instructions)) = self.reported {
            let _ = writeln!(
                s,
                "(the inference alone; the run that hashed and reported every layer: {ticks} ticks, ~{} instructions)",
                instructions.unwrap_or(0)
            );
        }
        if let Some(arena) = self.arena_bytes {
            let _ = writeln!(
                s,
                "arena: {arena} bytes planned ({} activations + {} kernel scratch), {} written; stack: {} bytes",
                (arena as usize).saturating_sub(self.scratch_bytes),
                self.scratch_bytes,
                self.arena_used_bytes.map_or("?".to_string(), |n| n.to_string()),
                self.stack_bytes.map_or("?".to_string(), |n| n.to_string()),
            );
        }
        s
    }
}
