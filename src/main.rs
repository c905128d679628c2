//! The `kiro-cost-exporter` command: parses arguments and runs one subcommand ([`cli`]).
//! Any error is printed as one line (the whole cause chain) and exits with status 2.
#![warn(clippy::too_many_lines)]

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    limit_malloc_arenas();
    let args = cli::Cli::parse();
    let daemon = args.runs_daemon();
    if daemon {
        fix_mmap_threshold();
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if !daemon {
        // A one-shot command's blocking work is reading files, a few at a time: tokio's
        // default starts a thread for each read that finds none idle (a traced `query`
        // started 21 to 50 threads in all), each one more to start and to stop.
        builder.max_blocking_threads(BLOCKING_THREADS);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let status = match runtime.block_on(cli::run(args)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            2
        }
    };
    if daemon {
        // The daemon has shut down; the runtime's threads are stopped and joined.
        return ExitCode::from(status);
    }
    // A one-shot command has written all it writes (standard output is flushed by `exit`,
    // standard error is not buffered): its runtime's threads end with the process instead of
    // being woken and joined one by one.
    std::process::exit(i32::from(status))
}

/// The blocking threads of a one-shot command's runtime.
const BLOCKING_THREADS: usize = 8;

/// Two glibc malloc arenas, as the shipped image, unit and manifests set with
/// `MALLOC_ARENA_MAX=2`, unless the environment says otherwise. glibc's default (eight per
/// core) keeps each scanning thread's freed memory in an arena of its own: at 50,000 users
/// `query` peaks about a quarter higher with it. Called before the runtime starts any thread.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    malloc_default(libc::M_ARENA_MAX, 2, "MALLOC_ARENA_MAX", "arena_max");
}

/// The daemon's large blocks (a refresh's pages and buffers, the exposition's families as they
/// are encoded) served by their own mappings, returned to the system when freed, unless the
/// environment says otherwise. glibc's threshold otherwise rises with each large block freed,
/// up to 32 MB, after which such blocks come from the arenas, and what a refresh freed among
/// what it kept stays resident: at 50,000 users the daemon held 265–320 MB after its first
/// refresh with glibc's default and 262–271 MB with a fixed 4 MiB, and peaked at 408–447 MB
/// against 375–386 MB. `query` keeps glibc's default: it exits when done, and mapping each
/// large block afresh cost it time.
fn fix_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    malloc_default(
        libc::M_MMAP_THRESHOLD,
        4 << 20,
        "MALLOC_MMAP_THRESHOLD_",
        "mmap_threshold",
    );
}

/// Sets one of glibc malloc's parameters, unless the environment variable `env` or a
/// `GLIBC_TUNABLES` entry naming `tunable` set it (glibc has read those already).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn malloc_default(param: libc::c_int, value: libc::c_int, env: &str, tunable: &str) {
    if std::env::var_os(env).is_none()
        && !std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains(tunable))
    {
        // SAFETY: mallopt sets one of the allocator's parameters; it takes no pointers.
        unsafe {
            libc::mallopt(param, value);
        }
    }
}
