//! The harness every test module shares, one concern per file: CUR fixtures ([`cur`]), the
//! binary and its daemon as child processes ([`process`], also used by the benchmark), HTTP
//! helpers and a loopback server ([`http`]), "an export, settings, a running daemon"
//! ([`fixture`]), hand-written Parquet files ([`files`]), AWS emulators
//! and the fault proxy ([`aws`]), and a Feishu receiver that checks signatures ([`feishu`]).

#![allow(dead_code)]

pub mod aws;
pub mod cur;
pub mod feishu;
pub mod files;
pub mod fixture;
pub mod http;
pub mod keys;
pub mod process;
pub mod repo;

pub use cur::*;
pub use files::*;
pub use http::*;
pub use process::*;
pub use repo::*;
