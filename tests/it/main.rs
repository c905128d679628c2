//! Integration tests: one binary, shared fixtures in `util`.

mod allocation;
mod athena;
mod aws;
mod cli;
mod daemon;
mod ledger;
mod monitoring;
mod savings;
mod util;
