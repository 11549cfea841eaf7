//! Test support for the whole workspace: the one deterministic generator
//! ([`Rng`]), random float parameters ([`random_params`]) and the int8 and
//! f16 models of them ([`random_models`]), the plain f64
//! reference forward ([`float_forward`], [`reference_conv`],
//! [`reference_max_pool`]) with calibration over it ([`observe`]), and the
//! fuzz seed corpus ([`fuzz_seeds`]).
//!
//! None of this is in a production crate: `shared` and `host` carry only what
//! they run. The library depends on `shared` alone, so `shared`'s own
//! integration tests take it as a dev-dependency; the root package's
//! cross-crate tests (`tests/`) and benchmarks (`benches/`) use it with `host`.

mod fixtures;
mod reference;
mod rng;
mod seeds;

pub use fixtures::{random_models, random_params, views, RandomModels};
pub use reference::{float_forward, observe, reference_avg_pool, reference_conv, reference_max_pool};
pub use rng::Rng;
pub use seeds::{fuzz_seeds, FUZZ_SEEDS_DIR};
