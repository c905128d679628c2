//! Build provenance for `--version` and `kiro_exporter_build_info`: the commit the binary was
//! built from and the compiler that built it.
//!
//! The revision is `KIRO_EXPORTER_REVISION` when set (a container build without `.git`), else
//! `git rev-parse HEAD` of the checkout, else `unknown`. The compiler is `rustc --version`'s version number.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=KIRO_EXPORTER_REVISION");
    println!("cargo:rerun-if-changed=build.rs");
    let revision = std::env::var("KIRO_EXPORTER_REVISION")
        .ok()
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty())
        .or_else(git_revision)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=KIRO_EXPORTER_REVISION={revision}");
    println!("cargo:rustc-env=KIRO_EXPORTER_RUSTC={}", rustc_version());
}

/// The checkout's commit, or `None` outside a checkout or without git. Reruns when `HEAD`
/// moves (a commit, a checkout).
fn git_revision() -> Option<String> {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let dir = git(&["rev-parse", "--git-dir"])?;
    let dir = Path::new(&dir);
    for f in ["HEAD", "packed-refs"] {
        if dir.join(f).exists() {
            println!("cargo:rerun-if-changed={}", dir.join(f).display());
        }
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"])
        && dir.join(&branch).exists()
    {
        println!("cargo:rerun-if-changed={}", dir.join(branch).display());
    }
    git(&["rev-parse", "HEAD"]).filter(|h| !h.is_empty())
}

/// `rustc --version`'s version number (`1.94.0`), or `unknown`.
fn rustc_version() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.split_whitespace().nth(1).map(str::to_owned)
        })
        .unwrap_or_else(|| "unknown".to_owned())
}
