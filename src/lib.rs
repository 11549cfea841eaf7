//! Helpers shared by the workspace's integration tests (`tests/`) and
//! benchmarks (`benches/`): this package exists only to carry them.
