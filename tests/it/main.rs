//! The integration tests: one test binary (`it`) with a module per area, driving the real
//! binaries (`dispatch`, `dispatch-shim`, `fake-jujuc`, found through `CARGO_BIN_EXE_dispatch`)
//! against the fixtures in `fixtures/` (README, *Tests and benchmarks*).
//!
//! One binary, as ripgrep does it: the harness in `util` is compiled once, not once per file.
//! A test is named by its module and its sentence: `cargo test --test it faults::` runs the
//! fault matrix.

mod util;

mod charmcraft_part;
mod custom_spans;
mod faults;
mod hook_tools;
mod new_user;
mod ops_charm;
mod proxy;
mod real_receiver;
mod relations;
mod security;
mod shipping;
mod soak;
mod store;
mod supervision;
mod tool_mode;
