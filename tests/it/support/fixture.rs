//! "An export, settings, a running daemon": the setup the daemon's tests share. The settings
//! are the daemon's own `Settings`, serialised to TOML as `check-config` prints them, so a
//! renamed key breaks the build here rather than a test at run time.

use std::path::{Path, PathBuf};

use kiro_cost_exporter::config::Settings;
use kiro_cost_exporter::curgen::{self, GenSpec};

use super::http::wait_status;
use super::process::Daemon;

/// A folder with an export and the settings that read it.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub settings: Settings,
}

impl Setup {
    /// A folder holding the export `spec` generates (at `cur/`), with settings reading it.
    pub fn generated(spec: &GenSpec) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cur = dir.path().join("cur");
        curgen::write_export(spec, &cur, |_| {}).unwrap();
        Self::at(dir, cur)
    }

    /// A folder holding the export `lines` make (at `cur/`), with settings reading it.
    pub fn with_lines(
        lines: impl IntoIterator<Item = kiro_cost_exporter::curgen::CurLine>,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let export = super::cur::Export::write(lines);
        let cur = dir.path().join("cur");
        std::fs::rename(export.path(), &cur).unwrap();
        Self::at(dir, cur)
    }

    fn at(dir: tempfile::TempDir, cur: PathBuf) -> Self {
        let mut settings = Settings::default();
        settings.source.cur = cur;
        // State and reports stay in the test's folder.
        settings.alerts.state_file = dir.path().join("state.json");
        settings.report.out_dir = dir.path().join("reports");
        Self { dir, settings }
    }

    /// `name` in the folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes the settings to `name` in the folder, as TOML; returns its path.
    pub fn write_config(&self, name: &str) -> PathBuf {
        let path = self.path(name);
        write_settings(&path, &self.settings);
        path
    }

    /// Starts `serve` on the settings (written to `name`) with `env` added, and returns it once
    /// `/readyz` answers 200.
    pub async fn start(&self, name: &str, env: &[(&str, &str)]) -> Daemon {
        let config = self.write_config(name);
        start_with(&config, env).await
    }
}

/// Writes `settings` to `path` as TOML, as `check-config` prints them.
pub fn write_settings(path: &Path, settings: &Settings) {
    std::fs::write(path, toml::to_string_pretty(settings).unwrap()).unwrap();
}

/// A Feishu channel named `name` whose URL is in the variable `url_env` (no signing secret),
/// sending at most every 10 ms.
pub fn feishu_channel(name: &str, url_env: &str) -> kiro_cost_exporter::notify::ChannelConfig {
    kiro_cost_exporter::notify::ChannelConfig {
        name: name.into(),
        url_env: url_env.into(),
        min_interval: std::time::Duration::from_millis(10),
        ..Default::default()
    }
}

/// Starts `serve --config config` with `env` added, and returns it once `/readyz` answers 200.
pub async fn start_with(config: &Path, env: &[(&str, &str)]) -> Daemon {
    let d = Daemon::start(&["--config", config.to_str().unwrap()], env);
    wait_status(&d.url("/readyz"), 200, 60).await;
    d
}
