//! Sinks read snapshots and hand them to the tools people already run.

pub mod prometheus;
