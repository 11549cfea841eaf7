//! `host flash --verify`: the device's bytes against the desktop engine's.

use super::frames::DeviceRun;
use anyhow::{anyhow, bail, Result};
use shared::model::QuantModel;

/// Run `model` on the desktop and require the device's bytes: the output
/// tensor and the FNV-1a of every layer (and the layer bytes when sent).
pub fn verify_against_desktop(model: &QuantModel<'_>, input: &[u8], run: &DeviceRun) -> Result<()> {
    let desk = crate::simulate::simulate(model, input, true)?;
    let (_, got) = run.output.as_ref().ok_or_else(|| anyhow!("the device sent no output"))?;
    if run.layers.len() != desk.layers.len() {
        bail!("the device reported {} layers, the desktop ran {}", run.layers.len(), desk.layers.len());
    }
    for (dev, want) in run.layers.iter().zip(&desk.layers) {
        let bytes_differ = matches!((&dev.bytes, &want.bytes), (Some(a), Some(b)) if a != b);
        if dev.index as usize != want.index || dev.fnv != want.hash || bytes_differ {
            bail!(
                "layer {} ({}): device hash {:016x}, desktop {:016x}: the executors diverge here",
                want.index,
                want.name,
                dev.fnv,
                want.hash
            );
        }
    }
    if *got != desk.output {
        bail!("the output bytes differ between the device and the desktop");
    }
    Ok(())
}
