//! Hook-tool interception (DESIGN §2): the persistent shim directory in front of the charm's
//! `PATH` (`shims`; the shim itself is the `dispatch-shim` crate) and the record channel the
//! shims report on (`channel`).

pub mod channel;
pub mod shims;
