//! The integration tests: one test binary (`it`) with a module per area, driving the real
//! binaries (`dispatch`, `dispatch-shim`, `fake-jujuc`, found through `CARGO_BIN_EXE_dispatch`)
//! against the fixtures in `fixtures/` (README, *Tests and benchmarks*).
//!
//! One binary, as ripgrep does it: the harness in `util` (the scratch charm, the scripted
//! receiver and proxy, rotel, the bare-against-traced comparison, `wait_for`) is compiled once
//! and every helper is used, so the compiler says when one no longer is. Fifteen binaries
//! compiled it fifteen times, each with `allow(dead_code)` over what it did not use. A test is
//! named by its module and its sentence: `cargo test --test it faults::` runs the fault matrix,
//! `cargo test --test it -- --exact store::the_size_cap_keeps_failed_dispatches_and_evicts_the_oldest_quiet_ones_first`
//! one test.
//!
//! Tests that act as another local user (`nobody`) need root, which CI has: they run
//! everywhere and, without root, fail at once saying so (`util::require_root`). None passes
//! without doing its work, and one only is ignored by `cargo test`: the from-source
//! charmcraft part, which needs the release tarball of a clean clone to compare with and so
//! is run by tests/release (part of tests/run) once it has built one. Tests that only
//! want permissions to bind (a read-only store directory) run as `nobody` when root and as
//! themselves otherwise, and test the same thing either way.

mod util;

mod charmcraft_part;
mod custom_spans;
mod failed_hooks;
mod faults;
mod follow;
mod hook_tools;
mod juju_versions;
mod new_user;
mod ops_charm;
mod otlp_relation;
mod proxy;
mod real_receiver;
mod relations;
mod release_notes;
mod security;
mod shipping;
mod soak;
mod store;
mod supervision;
mod tool_mode;
