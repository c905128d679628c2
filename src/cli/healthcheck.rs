//! `healthcheck`: ask a running exporter's `/healthz` (or another path) over plain HTTP on
//! loopback and exit 0 when it answers 2xx: the probe of a container image that carries no
//! curl (`HEALTHCHECK`, an ECS task's `healthCheck`). Exits 1 when unhealthy.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;

#[derive(Args)]
pub struct HealthcheckArgs {
    /// What to ask: http://HOST:PORT/PATH (no TLS; the probe runs next to the exporter).
    #[arg(long, default_value = "http://127.0.0.1:19877/healthz")]
    url: String,
    /// Give up after this long.
    #[arg(long, default_value = "5s")]
    timeout: humantime::Duration,
}

/// Exits 0 when healthy and 1 otherwise (2 is reserved by container health checks), with the
/// reason on standard error.
pub fn run(args: HealthcheckArgs) -> anyhow::Result<()> {
    if let Err(e) = probe(&args) {
        eprintln!("unhealthy: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}

fn probe(args: &HealthcheckArgs) -> anyhow::Result<()> {
    let rest = args
        .url
        .strip_prefix("http://")
        .with_context(|| format!("--url {:?}: expected http://HOST:PORT/PATH", args.url))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let timeout: Duration = args.timeout.into();
    let addr: SocketAddr = authority
        .to_socket_addrs()
        .with_context(|| format!("--url {:?}: cannot resolve {authority}", args.url))?
        .next()
        .with_context(|| format!("--url {:?}: no address for {authority}", args.url))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: kiro-cost-exporter-healthcheck\r\n\r\n"
    )?;
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.windows(2).any(|w| w == b"\r\n") {
        let n = stream
            .read(&mut buf)
            .with_context(|| format!("reading the answer of {addr}"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > 4096 {
            break;
        }
    }
    let status_line = String::from_utf8_lossy(&head);
    let status_line = status_line.lines().next().unwrap_or("");
    let code: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("{addr} answered no HTTP status: {status_line:?}"))?;
    if (200..300).contains(&code) {
        println!("{} {path}: {code}", addr);
        Ok(())
    } else {
        bail!("{addr} {path}: HTTP {code}")
    }
}
