//! Integration tests: one binary, one module per area, the shared harness in `support`.
// Tests may unwrap, and their helper threads may sleep.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]
#![warn(clippy::too_many_lines)]

mod activity;
mod alerts;
mod allocation;
mod athena;
mod bills;
mod budgets;
mod cli;
mod cloudwatch;
mod consistency;
mod daemon;
mod deploy;
mod docs;
mod faults;
mod fuzz;
mod helm;
mod history;
mod identity;
mod landing;
mod layout;
mod ledger;
mod monitoring;
mod q_developer;
mod report;
mod report_delivery;
mod s3;
mod savings;
mod scan;
mod soak;
mod support;
mod totals;
mod web;
mod web_config;
mod window;
