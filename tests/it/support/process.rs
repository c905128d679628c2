//! The binary under test: one-shot runs, the daemon as a child process (killed on drop, so a
//! failing test leaves nothing running), and external programs the tests need.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Environment for a daemon that refreshes every second and retries after a second.
pub const FAST: &[(&str, &str)] = &[
    ("KIRO_EXPORTER__REFRESH__INTERVAL", "1s"),
    ("KIRO_EXPORTER__REFRESH__JITTER", "0s"),
    ("KIRO_EXPORTER__REFRESH__RETRY_INITIAL", "1s"),
    ("KIRO_EXPORTER__REFRESH__RETRY_MAX", "1s"),
];

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_kiro-cost-exporter")
}

/// Runs the binary with arguments and an environment free of KIRO_EXPORTER__ overrides.
pub fn run(args: &[&str]) -> Output {
    run_env(args, &[])
}

/// [`run`] with variables added to the environment (e.g. the AWS emulator's credentials).
pub fn run_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = std::process::Command::new(bin());
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("KIRO_EXPORTER__") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().unwrap()
}

/// `query --period 2026-10 --format json` with `args` (the export, a config) and `env` added:
/// its JSON, once it succeeded.
pub fn query_json_with(args: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    let mut all = vec!["query", "--period", "2026-10", "--format", "json"];
    all.extend_from_slice(args);
    let o = run_env(&all, env);
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The daemon under test: a real `serve` process on a free loopback port. Killed on drop, so a
/// failing test does not leave it running.
pub struct Daemon {
    pub child: std::process::Child,
    pub addr: std::net::SocketAddr,
    pub stderr_log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Daemon {
    /// Starts `serve --listen 127.0.0.1:0` with `args` and extra environment variables, and
    /// waits for its address.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_wrapped(&[], args, env)
    }

    /// Like [`Daemon::start`], with the binary run by `wrapper` (a program and its arguments,
    /// which end by running the binary with the rest: `unshare`, `sh -c '…; exec "$@"'`).
    pub fn start_wrapped(wrapper: &[&str], args: &[&str], env: &[(&str, &str)]) -> Self {
        use std::io::{BufRead, BufReader};
        let mut cmd = match wrapper {
            [] => std::process::Command::new(bin()),
            [program, rest @ ..] => {
                let mut c = std::process::Command::new(program);
                c.args(rest).arg(bin());
                c
            }
        };
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(args);
        for (k, _) in std::env::vars() {
            if k.starts_with("KIRO_EXPORTER__") {
                cmd.env_remove(k);
            }
        }
        cmd.env("RUST_LOG", "info");
        cmd.envs(env.iter().copied());
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&l);
                s.push('\n');
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let mut d = Self {
            child,
            addr: "127.0.0.1:1".parse().unwrap(),
            stderr_log: log,
        };
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("daemon printed no address; stderr: {}", d.log()));
        let url = line.split("://").nth(1).unwrap().split('/').next().unwrap();
        d.addr = url.parse().unwrap();
        d
    }

    pub fn log(&self) -> String {
        self.stderr_log.lock().unwrap().clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let ok = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits for the process to exit, at most `secs`.
    pub fn wait_exit(&mut self, secs: u64) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "daemon did not exit within {secs}s; stderr: {}",
                self.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the daemon's log contains `needle`, at most `secs`; the log then.
pub fn wait_log(d: &Daemon, needle: &str, secs: u64) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let log = d.log();
        if log.contains(needle) {
            return log;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {needle:?} in the log within {secs}s:\n{log}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The path of an external program, or `None` (skip) when it is missing and not required.
pub fn external(name: &str, path: &Path) -> Option<PathBuf> {
    if path.exists() {
        return Some(path.to_owned());
    }
    let required = std::env::var("KIRO_EXPORTER_REQUIRE_EXTERNAL").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "{name} is required (KIRO_EXPORTER_REQUIRE_EXTERNAL=1) but {} does not exist; .ci/run installs it",
        path.display()
    );
    eprintln!(
        "SKIPPED: {name} not found at {}; install it (see .ci/run) to run this test",
        path.display()
    );
    None
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What `/proc` says of a process: resident and peak resident bytes, and open descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub rss_bytes: u64,
    pub peak_rss_bytes: u64,
    pub fds: usize,
}

/// Reads [`Usage`] of process `pid` (Linux).
pub fn usage(pid: u32) -> std::io::Result<Usage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let bytes = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    Ok(Usage {
        rss_bytes: bytes("VmRSS:"),
        peak_rss_bytes: bytes("VmHWM:"),
        fds,
    })
}

/// The commit of this checkout (`unknown` outside one) and the compiler's version: what the
/// binary's build provenance must say.
pub fn build_provenance() -> (String, String) {
    let out = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let revision = std::env::var("KIRO_EXPORTER_REVISION")
        .ok()
        .filter(|r| !r.trim().is_empty())
        .or_else(|| out("git", &["rev-parse", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_owned());
    let rustc = out("rustc", &["--version"])
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned());
    (revision, rustc)
}
