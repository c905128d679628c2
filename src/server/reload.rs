//! The endpoints' security as the files say now: the web configuration, the bearer token file
//! and the certificates, keys and CAs the configuration names are checked every
//! [`CHECK_EVERY`] on a blocking thread (a digest of their contents, so an edit within the same
//! second or an atomic rename is seen as well) and read again when any changed. No request
//! pays for it: requests and handshakes take the current reading from an [`ArcSwap`].
//!
//! A reading that fails keeps the last good one and is reported once (until the files change
//! again). Turning TLS on or off needs a restart (the listener's protocol is chosen once), so a
//! reload that would do either is refused the same way.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

use super::auth::WebSecurity;
use super::web_config::{WebConfigError, WebSources};

/// How often the files are checked for changes.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The current reading of the endpoints' security, and how to tell when it is out of date.
#[derive(Debug)]
pub struct LiveSecurity {
    sources: WebSources,
    current: ArcSwap<WebSecurity>,
    watched: Mutex<Watched>,
}

/// The files the last reading looked at, and a digest of their contents then.
#[derive(Debug)]
struct Watched {
    files: Vec<PathBuf>,
    digest: [u8; 32],
}

/// What a check found.
#[derive(Debug)]
pub enum Reload {
    /// No file changed.
    Unchanged,
    /// The files changed and the new reading is in force.
    Reloaded,
    /// The files changed but cannot be used; the last good reading stays in force.
    Failed(WebConfigError),
}

impl LiveSecurity {
    /// Reads the files; an error names the file and the key.
    pub fn load(sources: WebSources) -> Result<Self, WebConfigError> {
        let mut files = Vec::new();
        let security = sources.load_noting(&mut files)?;
        let digest = digest(
            sources
                .own_files()
                .chain(files.iter().map(PathBuf::as_path)),
        );
        Ok(Self {
            sources,
            current: ArcSwap::from_pointee(security),
            watched: Mutex::new(Watched { files, digest }),
        })
    }

    /// The reading in force.
    pub fn current(&self) -> Arc<WebSecurity> {
        self.current.load_full()
    }

    /// Reads the files again if any changed since the last check. Blocking (file reads).
    pub fn check(&self) -> Reload {
        let Ok(mut watched) = self.watched.lock() else {
            return Reload::Unchanged;
        };
        let own = || self.sources.own_files();
        let now = digest(own().chain(watched.files.iter().map(PathBuf::as_path)));
        if now == watched.digest {
            return Reload::Unchanged;
        }
        let mut files = Vec::new();
        let result = self.sources.load_noting(&mut files);
        watched.digest = digest(own().chain(files.iter().map(PathBuf::as_path)));
        watched.files = files;
        let mut next = match result {
            Ok(next) => next,
            Err(e) => return Reload::Failed(e),
        };
        let previous = self.current.load();
        if next.tls.is_some() != previous.tls.is_some() {
            let path = self.sources.web_config.clone().unwrap_or_default();
            let change = if next.tls.is_some() { "on" } else { "off" };
            return Reload::Failed(WebConfigError::Invalid {
                path,
                message: format!(
                    "tls_server_config: a reload cannot turn TLS {change}; restart the daemon \
                     to apply this file (the previous settings stay in force)"
                ),
            });
        }
        next.carry_over(&previous);
        self.current.store(Arc::new(next));
        Reload::Reloaded
    }

    /// Checks the files every [`CHECK_EVERY`] until `shutdown`, logging each reload or failure
    /// once and telling `report` whether it succeeded.
    pub async fn watch(
        self: Arc<Self>,
        report: impl Fn(bool) + Send + 'static,
        shutdown: impl Future<Output = ()>,
    ) {
        if self.sources.own_files().next().is_none() {
            return;
        }
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = tokio::time::sleep(CHECK_EVERY) => {}
                () = &mut shutdown => return,
            }
            let this = self.clone();
            let Ok(outcome) = tokio::task::spawn_blocking(move || this.check()).await else {
                continue;
            };
            match outcome {
                Reload::Unchanged => {}
                Reload::Reloaded => {
                    tracing::info!("web config reloaded");
                    report(true);
                }
                Reload::Failed(e) => {
                    tracing::error!(
                        "web config not reloaded, the previous one stays in force: {e}"
                    );
                    report(false);
                }
            }
        }
    }
}

/// A digest of each file's path and contents (or that it could not be read).
fn digest<'a>(files: impl Iterator<Item = &'a Path>) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for path in files {
        let name = path.as_os_str().as_encoded_bytes();
        ctx.update(&(name.len() as u64).to_be_bytes());
        ctx.update(name);
        match std::fs::read(path) {
            Ok(bytes) => {
                ctx.update(&(bytes.len() as u64).to_be_bytes());
                ctx.update(&bytes);
            }
            Err(e) => {
                ctx.update(&u64::MAX.to_be_bytes());
                ctx.update(format!("{:?}", e.kind()).as_bytes());
            }
        }
    }
    let mut out = [0; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}
