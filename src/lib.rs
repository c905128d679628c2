//! kiro-cost-exporter: allocates Kiro subscription costs from the AWS Cost and Usage Report 2.0
//! per user and cost center, and hands the result to Prometheus and the other sinks.
//!
//! Data flows one way: a [`source::Source`] runs the allocation query for a billing period and
//! returns an [`allocation::Allocation`]; the daemon gathers allocations into a snapshot that
//! the sinks only read.
#![forbid(unsafe_code)]

pub mod alert;
pub mod allocation;
pub mod aws;
pub mod config;
pub mod curgen;
pub mod daemon;
pub mod output;
pub mod period;
pub mod report;
pub mod server;
pub mod sink;
pub mod source;
pub mod web;
