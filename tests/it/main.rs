//! Integration tests: one binary, shared fixtures in `util`.
// Tests may unwrap, and their helper threads may sleep.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

mod alerts;
mod allocation;
mod athena;
mod aws;
mod budgets;
mod cli;
mod cloudwatch;
mod daemon;
mod faults;
mod feishu;
mod fuzz;
mod ledger;
mod monitoring;
mod savings;
mod soak;
mod totals;
mod util;
mod web;
