//! Sinks read snapshots and hand them to the tools people already run.

pub mod cloudwatch;
pub mod prometheus;
