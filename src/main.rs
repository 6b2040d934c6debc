//! The `dispatch` binary; everything lives in the library.
//!
//! `no_main`: std's start-up would ignore SIGPIPE and reopen closed standard descriptors
//! before we could see what the hook inherited; the child must get exactly that.
#![no_main]

use std::os::raw::{c_char, c_int};

/// The one place the process ends: with `entry`'s exit code, or by the charm's signal.
#[no_mangle]
extern "C" fn main(_argc: c_int, _argv: *const *const c_char) -> c_int {
    dispatch_shim::child::end_as(dispatch::entry())
}
