//! Integration tests: one binary, shared fixtures in `util`.

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
mod util;
mod web;
