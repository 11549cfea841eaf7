//! The firmware's only contact with the shared crate's format and engine.
//!
//! STUB(engine): `shared::engine` has not landed yet. Until it does, [`plan`]
//! and [`run`] below are stand-ins with the documented signatures: plan asks
//! for the largest activation tensor and run hands back zeroed tensors of the
//! right sizes, so the frames, timing and error paths can be exercised. When
//! the engine lands, replace the bodies with `shared::engine::plan` /
//! `shared::engine::run` (the `Observer` trait then comes from there too).

use shared::format::{self, FormatError};
use shared::model::QuantModel;
use shared::spec::Shape;

/// Per-layer hook, as `shared::engine::Observer` will define it.
pub trait Observer {
    fn layer_start(&mut self, _index: usize) {}
    fn layer_done(&mut self, _index: usize, _shape: Shape, _output: &[u8]) {}
}

/// Why a run failed.
#[derive(Debug)]
pub struct EngineError(&'static str);

impl core::fmt::Display for EngineError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.0)
    }
}

/// The bytes of the model file inside its memory region: the header's
/// length field says how many (the region is only an upper bound). A length
/// that is missing, tiny or larger than the region is left for `parse` to
/// report (bad magic, length mismatch) by passing the whole region.
pub fn model_bytes(region: &[u8]) -> &[u8] {
    let at = format::offsets::LENGTH;
    let Some(field) = region.get(at..at + 4) else { return region };
    let declared = u32::from_le_bytes([field[0], field[1], field[2], field[3]]) as usize;
    if declared >= format::HEADER_LEN && declared <= region.len() {
        &region[..declared]
    } else {
        region
    }
}

/// Validate the whole model file in place.
pub fn parse(bytes: &[u8]) -> Result<QuantModel<'_>, FormatError> {
    format::parse(bytes)
}

/// Arena bytes the model needs. STUB(engine): `shared::engine::plan(model).arena_bytes`.
pub fn plan(model: &QuantModel<'_>) -> usize {
    let bytes = model.precision.activation_bytes() as u64;
    let largest = model.spec.shapes().map(|(_, _, i, o)| i.elements().max(o.elements())).max().unwrap_or(0);
    (2 * largest * bytes) as usize
}

/// Run the model. STUB(engine): `shared::engine::run(model, input, arena, observer)`.
pub fn run<'a>(
    model: &QuantModel<'_>,
    input: &[u8],
    arena: &'a mut [u8],
    observer: &mut dyn Observer,
) -> Result<&'a [u8], EngineError> {
    let _ = input;
    let bytes = model.precision.activation_bytes();
    let mut last = 0;
    for (i, _, _, out) in model.spec.shapes() {
        observer.layer_start(i);
        last = out.elements() as usize * bytes;
        let out_bytes = arena.get_mut(..last).ok_or(EngineError("arena too small"))?;
        out_bytes.fill(0);
        observer.layer_done(i, out, out_bytes);
    }
    Ok(&arena[..last])
}
