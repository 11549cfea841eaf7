//! The firmware's only contact with the shared crate's format and engine:
//! one place to adapt when their APIs move.

use shared::engine;
use shared::format::{self, FormatError};
use shared::model::QuantModel;

pub use shared::engine::{EngineError, Observer};

/// The bytes of the model file inside its memory region: the header's
/// length field says how many (the region is only an upper bound). When the
/// header is unreadable or claims more than the region holds, the whole
/// region goes to `parse`, which then names the problem (bad magic, version,
/// length mismatch).
pub fn model_bytes(region: &[u8]) -> &[u8] {
    match format::declared_length(region) {
        Ok(n) if n <= region.len() => &region[..n],
        _ => region,
    }
}

/// Validate the whole model file in place.
pub fn parse(bytes: &[u8]) -> Result<QuantModel<'_>, FormatError> {
    format::parse(bytes)
}

/// Arena bytes the model needs.
pub fn plan(model: &QuantModel<'_>) -> usize {
    engine::plan(model).arena_bytes
}

/// Run the model in `arena`; the output bytes live in the arena.
pub fn run<'a>(
    model: &QuantModel<'_>,
    input: &[u8],
    arena: &'a mut [u8],
    observer: &mut dyn Observer,
) -> Result<&'a [u8], EngineError> {
    engine::run(model, input, arena, observer)
}
