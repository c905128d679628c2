//! Integration tests: one binary, shared fixtures in `util`.

mod allocation;
mod cli;
mod daemon;
mod ledger;
mod monitoring;
mod savings;
mod util;
