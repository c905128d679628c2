//! Integration tests: one binary, shared fixtures in `util`.

mod allocation;
mod cli;
mod ledger;
mod util;
