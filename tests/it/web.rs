//! The endpoints closed: basic auth (bcrypt, exporter-toolkit web config), a bearer token, open
//! health paths, extra headers, TLS with a minimum version, and limits on slow or oversized
//! requests, all against the real daemon on loopback.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use kiro_cost_exporter::curgen::{self, GenSpec};

use crate::support::*;

/// Standard bcrypt test vector (OpenBSD's suite): the password `U*U` at cost 5.
const U_STAR_U: &str = "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW";
const TOKEN: &str = "s3cr3t-bearer-token-for-tests";

fn export() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = GenSpec::new(20, period("2026-10"));
    spec.noise_ratio = 0.5;
    curgen::write_export(&spec, dir.path(), |_| {}).unwrap();
    dir
}

/// `serve` on `cur`'s October 2026 with the web configuration `web`, plus `extra` arguments.
fn secured(cur: &Path, web: &str, extra: &[&str]) -> Daemon {
    let mut args = vec![
        "--cur",
        cur.to_str().unwrap(),
        "--period",
        "2026-10",
        "--web.config.file",
        web,
    ];
    args.extend_from_slice(extra);
    Daemon::start(&args, &[])
}

/// One request on a fresh connection (`Connection: close`); the raw response text.
fn raw(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn get_with(addr: SocketAddr, path: &str, authorization: Option<&str>) -> String {
    let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    raw(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"),
    )
}

fn status(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// Writes settings whose `[server]` section `edit` sets to `name` in `dir`; returns its path.
fn server_config(
    dir: &Path,
    name: &str,
    edit: impl FnOnce(&mut kiro_cost_exporter::server::ServerSettings),
) -> String {
    let mut settings = kiro_cost_exporter::config::Settings::default();
    edit(&mut settings.server);
    let path = dir.join(name);
    crate::support::fixture::write_settings(&path, &settings);
    path.to_str().unwrap().to_owned()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_owned()
}

#[tokio::test]
async fn basic_auth_bearer_token_open_health_and_headers() {
    let cur = export();
    let dir = tempfile::tempdir().unwrap();
    let web = write(
        dir.path(),
        "web.yml",
        &format!(
            "basic_auth_users:\n  prometheus: {U_STAR_U}\nhttp_server_config:\n  headers:\n    \
             X-Frame-Options: deny\n    Strict-Transport-Security: max-age=31536000\n"
        ),
    );
    let token = write(dir.path(), "token", &format!("{TOKEN}\n"));
    let config = server_config(dir.path(), "serve.toml", |server| {
        server.bearer_token_file = token.into();
        server.unauthenticated_paths = vec!["/healthz".into()];
    });
    let d = secured(cur.path(), &web, &["--config", &config]);
    // Open: the health path; closed: everything else, readiness included.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = get_with(d.addr, "/readyz", Some(&basic("prometheus", "U*U")));
        if status(&r) == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never ready: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status(&get_with(d.addr, "/healthz", None)), 200);
    for path in ["/metrics", "/readyz", "/", "/nope"] {
        let r = get_with(d.addr, path, None);
        assert_eq!(status(&r), 401, "{path}: {r}");
        assert!(
            r.to_ascii_lowercase()
                .contains("www-authenticate: basic realm=\"kiro-cost-exporter\""),
            "{r}"
        );
        assert!(!r.contains("kiro_user_cost_usd"), "{path} leaked data");
    }
    for wrong in [
        basic("prometheus", "wrong"),
        basic("nobody", "U*U"),
        basic("prometheus", ""),
        "Basic !!notbase64".to_owned(),
        format!("Bearer {TOKEN}x"),
        "Bearer ".to_owned(),
        TOKEN.to_owned(),
    ] {
        assert_eq!(
            status(&get_with(d.addr, "/metrics", Some(&wrong))),
            401,
            "{wrong}"
        );
    }
    let ok = get_with(d.addr, "/metrics", Some(&basic("prometheus", "U*U")));
    assert_eq!(status(&ok), 200, "{ok}");
    assert!(ok.contains("kiro_user_cost_usd{"));
    // The second time comes from the verified-credentials cache; same answer.
    assert_eq!(
        status(&get_with(
            d.addr,
            "/metrics",
            Some(&basic("prometheus", "U*U"))
        )),
        200
    );
    let bearer = get_with(d.addr, "/metrics", Some(&format!("Bearer {TOKEN}")));
    assert_eq!(status(&bearer), 200);
    let m = parse_exposition(bearer.split_once("\r\n\r\n").unwrap().1);
    assert_scrape_reconciles(&m, "2026-10");
    let lower = ok.to_ascii_lowercase();
    assert!(lower.contains("x-frame-options: deny"), "{ok}");
    assert!(lower.contains("strict-transport-security: max-age=31536000"));
    assert!(lower.contains("x-content-type-options: nosniff"));
    assert!(!lower.contains("\r\nserver:"), "no server header: {ok}");
    let log = d.log();
    assert!(!log.contains(TOKEN) && !log.contains(U_STAR_U), "{log}");
}

#[test]
fn slow_and_oversized_requests_are_cut_off() {
    let cur = export();
    let d = Daemon::start(
        &["--cur", cur.path().to_str().unwrap(), "--period", "2026-10"],
        &[
            ("KIRO_EXPORTER__SERVER__HEADER_READ_TIMEOUT", "1s"),
            ("KIRO_EXPORTER__SERVER__MAX_CONNECTIONS", "4"),
        ],
    );
    // A client that never finishes its headers is disconnected after the timeout.
    let mut slow = TcpStream::connect(d.addr).unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(8),
        "slow client held for {waited:?}"
    );
    // More slow clients than connection slots do not stop the server from answering
    // once they are cut off.
    let pinned: Vec<TcpStream> = (0..6)
        .map(|_| {
            let mut s = TcpStream::connect(d.addr).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\n").unwrap();
            s
        })
        .collect();
    let r = get_with(d.addr, "/healthz", None);
    assert_eq!(status(&r), 200, "{r}");
    drop(pinned);
    // A request head over the limit is refused, and the server goes on.
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(200 * 1024)
    );
    let mut s = TcpStream::connect(d.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(huge.as_bytes());
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.is_empty() || status(&text) == 431 || status(&text) == 400,
        "{text}"
    );
    for bad in [
        "BREW /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "GET /metrics HTTP/9.9\r\n\r\n",
        "\u{0}\u{1}garbage\r\n\r\n",
    ] {
        let r = raw(d.addr, bad);
        assert_ne!(status(&r), 200, "{bad:?}: {r}");
    }
    assert_eq!(status(&get_with(d.addr, "/healthz", None)), 200);
}

/// A self-signed certificate for 127.0.0.1 made with the openssl command-line tool.
fn self_signed(dir: &Path) -> Option<(String, String)> {
    let openssl = external("openssl", Path::new("/usr/bin/openssl"))?;
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    let o = std::process::Command::new(openssl)
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .arg("ec_paramgen_curve:prime256v1")
        .args(["-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "keyUsage=digitalSignature"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    Some((
        cert.to_str().unwrap().to_owned(),
        key.to_str().unwrap().to_owned(),
    ))
}

async fn tls_get(
    addr: SocketAddr,
    cert_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
    authorization: Option<&str>,
) -> Result<String, String> {
    use rustls::pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(cert_pem).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::from(addr.ip());
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    tls.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").as_bytes(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out).await;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test]
async fn tls_with_minimum_version_and_basic_auth() {
    let dir = tempfile::tempdir().unwrap();
    let Some((cert, key)) = self_signed(dir.path()) else {
        return;
    };
    let cur = export();
    let web = write(
        dir.path(),
        "web.yml",
        &format!(
            "tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  min_version: TLS13\n\
             basic_auth_users:\n  prometheus: {U_STAR_U}\n"
        ),
    );
    let d = secured(cur.path(), &web, &[]);
    let auth = basic("prometheus", "U*U");
    let tls13 = [&rustls::version::TLS13];
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let body = loop {
        let r = tls_get(d.addr, &cert, &tls13, Some(&auth)).await.unwrap();
        // 200 comes at once; the data after the first refresh.
        if status(&r) == 200 && r.contains("\nkiro_cost_usd{") {
            break r;
        }
        assert!(std::time::Instant::now() < deadline, "never served: {r}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (head, text) = body.split_once("\r\n\r\n").unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap();
    assert_eq!(text.len(), len, "whole body over TLS");
    let m = parse_exposition(text);
    assert_scrape_reconciles(&m, "2026-10");
    // Without credentials over TLS: 401.
    let r = tls_get(d.addr, &cert, &tls13, None).await.unwrap();
    assert_eq!(status(&r), 401);
    // A TLS 1.2-only client is refused at the handshake.
    let e = tls_get(d.addr, &cert, &[&rustls::version::TLS12], Some(&auth)).await;
    assert!(e.is_err(), "TLS 1.2 accepted: {e:?}");
    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = get_with(d.addr, "/metrics", Some(&auth));
    assert_ne!(status(&plain), 200, "{plain}");
    assert!(!plain.contains("kiro_user_cost_usd"));
}

#[test]
fn bad_web_configs_are_named_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str)] = &[
        ("rate_limit:\n  burst: 2\n", "rate_limit.burst"),
        (
            "basic_auth_users:\n  alice: plaintext\n",
            "basic_auth_users.alice",
        ),
        (
            "tls_server_config:\n  cert_file: /nonexistent.crt\n  key_file: /nonexistent.key\n",
            "cert_file",
        ),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS11\n",
            "min_version",
        ),
        (
            "http_server_config:\n  headers:\n    Server: kiro\n",
            "http_server_config.headers.Server",
        ),
        ("basic_auth_users: [\n", "web"),
    ];
    for (i, (text, expect)) in cases.iter().enumerate() {
        let web = write(dir.path(), &format!("web{i}.yml"), text);
        let cfg = server_config(dir.path(), &format!("c{i}.toml"), |server| {
            server.web_config_file = (&web).into();
        });
        let o = run(&["check-config", "--config", &cfg]);
        assert_eq!(o.status.code(), Some(2), "{text}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains(expect) && err.contains(&web) && err.lines().count() == 1,
            "{text}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    let missing = run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--web.config.file",
        "/nonexistent/web.yml",
    ]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).contains("/nonexistent/web.yml"));
}

/// Milliseconds of `n` authorised scrapes, one after another, each on a fresh connection.
fn authorised_scrapes(addr: SocketAddr, n: usize) -> Vec<f64> {
    let auth = basic("prometheus", "U*U");
    (0..n)
        .map(|_| {
            let t = std::time::Instant::now();
            let r = get_with(addr, "/metrics", Some(&auth));
            assert_eq!(status(&r), 200, "{r}");
            assert!(r.contains("kiro_user_cost_usd{"));
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect()
}

fn p99(mut ms: Vec<f64>) -> f64 {
    ms.sort_by(f64::total_cmp);
    ms[(ms.len() * 99).div_ceil(100) - 1]
}

/// Hundreds of wrong basic-auth passwords at once cost bcrypt each; they are verified on a
/// blocking thread behind a small gate (and answered 429 beyond it), so the runtime keeps
/// serving authorised scrapes fast and no bad login ever gets data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_auth_storm_leaves_authorised_scrapes_fast() {
    const STORM: usize = 300;
    let cur = export();
    let dir = tempfile::tempdir().unwrap();
    let web = write(
        dir.path(),
        "web.yml",
        &format!("basic_auth_users:\n  prometheus: {U_STAR_U}\n"),
    );
    let d = secured(cur.path(), &web, &[]);
    wait_status(&d.url("/healthz"), 401, 30).await;
    let addr = d.addr;
    // Readiness, and the authorised credentials verified once (then cached).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while status(&get_with(
        addr,
        "/readyz",
        Some(&basic("prometheus", "U*U")),
    )) != 200
    {
        assert!(std::time::Instant::now() < deadline, "{}", d.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let quiet = tokio::task::spawn_blocking(move || authorised_scrapes(addr, 100))
        .await
        .unwrap();

    let go = Arc::new(std::sync::Barrier::new(STORM + 1));
    let storm: Vec<_> = (0..STORM)
        .map(|i| {
            let go = go.clone();
            std::thread::spawn(move || {
                let auth = basic("prometheus", &format!("wrong-{i}"));
                go.wait();
                status(&get_with(addr, "/metrics", Some(&auth)))
            })
        })
        .collect();
    go.wait();
    let during = tokio::task::spawn_blocking(move || authorised_scrapes(addr, 100))
        .await
        .unwrap();
    let answers: Vec<u16> = storm.into_iter().map(|t| t.join().unwrap()).collect();
    let (denied, busy) = (
        answers.iter().filter(|s| **s == 401).count(),
        answers.iter().filter(|s| **s == 429).count(),
    );
    assert_eq!(denied + busy, STORM, "only 401 and 429: {answers:?}");
    assert!(denied > 0, "some were verified and denied");
    let (q, s) = (p99(quiet), p99(during));
    eprintln!(
        "authorised scrapes p99: {q:.1} ms quiet, {s:.1} ms during a storm of {STORM} bad logins ({denied} denied after bcrypt, {busy} answered 429)"
    );
    assert!(
        s < 1000.0,
        "authorised scrapes stalled by the storm: p99 {s:.1} ms (quiet {q:.1} ms)"
    );
    let log = d.log();
    assert!(!log.contains(U_STAR_U) && !log.contains("wrong-1"), "{log}");
}
