//! The trace of a dispatch (DESIGN §4, README *Span model*): where it comes from (`context`:
//! ids, the incoming `TRACEPARENT` or Juju's, linked or continued) and what it holds (`spans`:
//! the root, `charm` and hook-tool spans, the span model's verdict, OTLP encoding), and why a
//! failed hook failed (`failure`: the charm's exception).

pub mod context;
pub mod failure;
pub mod spans;
