//! kiro-cost-exporter: allocates Kiro subscription costs from the AWS Cost and Usage Report 2.0
//! per user and cost center, and hands the result to Prometheus and the other sinks.
//!
//! Data flows one way (tick → source → snapshot → sinks): the [`daemon`] asks a
//! [`source::Source`] to allocate each watched billing period ([`allocation`], pure), builds
//! one [`snapshot::Snapshot`] whose derived views are computed once, and hands it to every
//! consumer under [`sink`]. [`config`] only composes the components' settings; [`server`]
//! serves the bytes the last refresh published.
#![forbid(unsafe_code)]
// A function over clippy.toml's too-many-lines-threshold is split, or says with an allow why
// it is not (SQL text, a table of data).
#![warn(clippy::too_many_lines)]

pub mod allocation;
pub mod aws;
pub mod config;
pub mod config_error;
pub mod curgen;
pub mod daemon;
pub mod failure;
pub mod history;
pub mod locale;
pub mod notify;
pub mod output;
pub mod period;
pub mod server;
pub mod sink;
pub mod snapshot;
pub mod source;
pub mod state;
pub mod telemetry;
