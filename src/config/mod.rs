//! Typed settings: built-in defaults < `--config FILE` (TOML or YAML) < environment
//! (`KIRO_EXPORTER__SECTION__KEY`), then command-line overrides.
//!
//! This module only composes: each section's settings live with the component they configure
//! and validate their own keys; components never import this module. Loading is
//! parse-then-validate: [`load`] reads and deserializes (unknown keys and wrong types are
//! rejected with the full key path), [`Settings::validate`] checks values without any I/O.
//! Every error names the key, so `check-config` and start-up can say exactly what to fix.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::allocation::savings::SavingsSettings;
use crate::allocation::{AllocationConfig, AllocationSettings, PlanTable};
use crate::aws::AwsSettings;
pub use crate::config_error::ConfigError;
use crate::config_error::one_line;
use crate::daemon::RefreshSettings;
use crate::notify::ChannelKind;
use crate::server::ServerSettings;
use crate::sink::alerts::AlertSettings;
use crate::sink::aws_budgets::BudgetSettings;
use crate::sink::cloudwatch::CloudWatchSettings;
use crate::sink::prometheus::PrometheusSettings;
use crate::sink::report::ReportSettings;
use crate::source::activity::ActivitySettings;
use crate::source::identity::IdentitySettings;
use crate::source::{Engine, SourceSettings};
use crate::telemetry::LogSettings;

/// Prefix of the environment variables that override settings.
pub const ENV_PREFIX: &str = "KIRO_EXPORTER";

/// All settings of the daemon and its commands.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub source: SourceSettings,
    pub allocation: AllocationConfig,
    /// The plan table (`[[plans]]`): names, usage type suffixes, prices and included credits.
    pub plans: PlanTable,
    pub server: ServerSettings,
    pub refresh: RefreshSettings,
    /// Thresholds of the savings recommendations (idle seats, right-sizing).
    pub savings: SavingsSettings,
    /// Threshold rules, the state file and the channels they notify.
    pub alerts: AlertSettings,
    /// Monthly limits per cost center (rules relative to a budget use them), and the AWS
    /// Budgets the daemon keeps in line with them.
    pub budgets: BudgetSettings,
    /// The monthly per-user report.
    pub report: ReportSettings,
    /// CloudWatch custom metrics pushed after each refresh.
    pub cloudwatch: CloudWatchSettings,
    /// AWS access for CloudWatch, Budgets and the report's S3 upload (Athena has its own in
    /// `[source.athena]`).
    pub aws: AwsSettings,
    pub log: LogSettings,
    /// The Kiro user activity report (what people use), next to the bill.
    pub activity: ActivitySettings,
    /// Names for user ids, from Identity Store.
    pub identity: IdentitySettings,
    /// What `/metrics` carries.
    pub prometheus: PrometheusSettings,
    /// Closed months kept for trends and seat tenure.
    pub history: crate::history::HistorySettings,
}

/// Reads settings from the defaults, an optional file and the process environment.
pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
    load_with_env(file, std::env::vars().collect())
}

/// [`load`] with an explicit environment (tests pass their own instead of mutating the
/// process's).
pub fn load_with_env(
    file: Option<&Path>,
    env: HashMap<String, String>,
) -> Result<Settings, ConfigError> {
    let mut builder = config::Config::builder();
    if let Some(path) = file {
        let file_err = |message: String| ConfigError::File {
            path: path.to_owned(),
            message,
        };
        if !path.is_file() {
            return Err(file_err("not found (or not a file)".into()));
        }
        let format = match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("toml") => config::FileFormat::Toml,
            Some("yaml" | "yml") => config::FileFormat::Yaml,
            _ => {
                return Err(file_err(
                    "unknown format: name it *.toml, *.yaml or *.yml".into(),
                ));
            }
        };
        let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
        // Parse the file on its own first so that a syntax error is reported against the file.
        config::Config::builder()
            .add_source(config::File::from_str(&text, format))
            .build()
            .map_err(|e| file_err(one_line(&e.to_string())))?;
        builder = builder.add_source(config::File::from_str(&text, format));
    }
    let env: config::Map<String, String> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
        .collect();
    builder = builder.add_source(
        config::Environment::with_prefix(ENV_PREFIX)
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .source(Some(env)),
    );
    let merged = builder
        .build()
        .map_err(|e| ConfigError::key("(environment)", e.to_string()))?;
    let settings: Settings = serde_path_to_error::deserialize(merged).map_err(|e| {
        let key = e.path().to_string();
        let message = e.inner().to_string();
        // The config crate appends its own idea of the key; ours is the full path.
        let message = message
            .split(" for key `")
            .next()
            .unwrap_or(&message)
            .to_owned();
        ConfigError::key(if key == "." { "(top level)" } else { &key }, message)
    })?;
    Ok(settings)
}

impl Settings {
    /// Checks values (no I/O). The first problem found is returned, naming its key. Each
    /// section checks its own keys; what spans sections is checked here.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.refresh.validate()?;
        self.server.validate()?;
        self.allocation.validate()?;
        self.plans.validate()?;
        self.savings.validate()?;
        self.history.validate()?;
        self.source.validate()?;
        if self.source.engine == Engine::Athena
            && self.source.athena.query_timeout * 2 >= self.refresh.timeout
        {
            return Err(ConfigError::key(
                "source.athena.query_timeout",
                "must be less than half of refresh.timeout (a refresh may query two months), \
                 so a slow query is stopped, not abandoned",
            ));
        }
        self.alerts.validate()?;
        self.cloudwatch.validate()?;
        self.budgets.validate()?;
        self.report.validate()?;
        for (i, ch) in self.report.channels.iter().enumerate() {
            match self.alerts.channels.iter().find(|c| &c.name == ch) {
                Some(c) if c.kind == ChannelKind::Feishu => {}
                _ => {
                    return Err(ConfigError::key(
                        &format!("report.channels[{i}]"),
                        format!("no Feishu channel named {ch:?} in [[alerts.channels]]"),
                    ));
                }
            }
        }
        self.aws.validate("aws")?;
        self.activity.validate()?;
        self.identity.validate()?;
        self.log.validate()
    }

    /// The settings that shape the allocation.
    pub fn allocation_settings(&self) -> AllocationSettings {
        self.allocation.with_plans(&self.plans)
    }

    /// What the landing page shows besides the snapshot. It has no section of its own: it
    /// speaks the report's language (`report.locale`), links the dashboard the alert cards
    /// link (`alerts.dashboard_url`) and compares with the budgets (`[budgets]`).
    pub fn landing_settings(&self) -> crate::sink::landing::LandingSettings {
        crate::sink::landing::LandingSettings {
            locale: self.report.locale,
            dashboard_url: Some(self.alerts.dashboard_url.clone()).filter(|u| !u.is_empty()),
            budgets: self.budgets.limits(),
        }
    }

    /// The effective settings as TOML, with secrets redacted (secrets are named by the
    /// settings, never held in them).
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render settings: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocation::sql::CostColumn;
    use std::path::PathBuf;
    use std::time::Duration;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn file(ext: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("c.{ext}"));
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn defaults_are_valid() {
        let s = load_with_env(None, HashMap::new()).unwrap();
        assert_eq!(s, Settings::default());
        s.validate().unwrap();
        assert_eq!(s.server.listen.to_string(), "127.0.0.1:19877");
    }

    #[test]
    fn env_overrides_file_overrides_defaults() {
        let (_d, p) = file(
            "toml",
            "[refresh]\ninterval = \"10m\"\njitter = \"1m\"\n[source]\ncur = \"/data/a\"\n",
        );
        let s = load_with_env(
            Some(&p),
            env(&[
                ("KIRO_EXPORTER__REFRESH__INTERVAL", "90s"),
                ("KIRO_EXPORTER__SERVER__LISTEN", "127.0.0.1:9999"),
            ]),
        )
        .unwrap();
        assert_eq!(s.refresh.interval, Duration::from_secs(90));
        assert_eq!(s.refresh.jitter, Duration::from_secs(60));
        assert_eq!(s.source.cur, PathBuf::from("/data/a"));
        assert_eq!(s.server.listen.port(), 9999);
        assert_eq!(
            s.refresh.retry_max,
            Duration::from_secs(900),
            "untouched keys keep defaults"
        );
    }

    #[test]
    fn athena_settings_load_and_validate() {
        let (_d, p) = file(
            "toml",
            "[source]\nengine = \"athena\"\n[source.athena]\ndatabase = \"billing\"\nquery_timeout = \"2m\"\nresult_reuse_max_age = \"1h\"\n",
        );
        let s = load_with_env(
            Some(&p),
            env(&[("KIRO_EXPORTER__SOURCE__ATHENA__TABLE", "kiro_cur")]),
        )
        .unwrap();
        s.validate().unwrap();
        assert_eq!(s.source.engine, Engine::Athena);
        assert_eq!(s.source.athena.database, "billing");
        assert_eq!(s.source.athena.table, "kiro_cur");
        assert_eq!(s.source.athena.query_timeout, Duration::from_secs(120));
        assert_eq!(s.source.athena.workgroup, "primary");

        let bad = |edit: fn(&mut Settings), key: &str| {
            let mut t = s.clone();
            edit(&mut t);
            let e = t.validate().unwrap_err().to_string();
            assert!(e.starts_with(&format!("config key {key}: ")), "{e}");
        };
        bad(
            |t| t.source.athena.table = "kiro;drop".into(),
            "source.athena.table",
        );
        bad(
            |t| t.source.athena.database = "a.b".into(),
            "source.athena.database",
        );
        bad(
            |t| t.source.athena.output_location = "/tmp/results".into(),
            "source.athena.output_location",
        );
        bad(
            |t| t.source.athena.skip_unchanged = "s3://Bad_Bucket/x".into(),
            "source.athena.skip_unchanged",
        );
        bad(
            |t| t.source.athena.endpoint_url = "localhost:4566".into(),
            "source.athena.endpoint_url",
        );
        bad(
            |t| t.source.athena.result_reuse_max_age = Duration::from_secs(8 * 86400),
            "source.athena.result_reuse_max_age",
        );
        bad(
            |t| t.source.athena.query_timeout = Duration::from_secs(3600),
            "source.athena.query_timeout",
        );
        bad(
            |t| t.source.athena.max_attempts = 0,
            "source.athena.max_attempts",
        );
        // The local engine does not look at [source.athena].
        let mut local = s.clone();
        local.source.engine = Engine::Local;
        local.source.athena.table = "kiro;drop".into();
        local.validate().unwrap();
    }

    #[test]
    fn yaml_is_read_too() {
        let (_d, p) = file(
            "yaml",
            "allocation:\n  cost_center_tag: userAttribute/Department\n  cost_column: line_item_net_unblended_cost\n",
        );
        let s = load_with_env(Some(&p), HashMap::new()).unwrap();
        assert_eq!(s.allocation.cost_center_tag, "userAttribute/Department");
        assert_eq!(s.allocation.cost_column, CostColumn::NetUnblended);
    }

    #[test]
    fn errors_name_the_key() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "toml",
                "[refresh]\nintervall = \"1h\"\n",
                "config key refresh.intervall: unknown field `intervall`",
            ),
            (
                "toml",
                "[refresh]\ninterval = \"soon\"\n",
                "refresh.interval",
            ),
            (
                "toml",
                "[server]\nlisten = \"localhost\"\n",
                "server.listen",
            ),
            (
                "toml",
                "[refresh]\nperiod = \"2026-13\"\n",
                "refresh.period",
            ),
            (
                "toml",
                "[allocation]\ncost_column = \"line_item_blended_cost\"\n",
                "allocation.cost_column",
            ),
            (
                "toml",
                "[sauce]\nx = 1\n",
                "config key sauce: unknown field `sauce`",
            ),
            ("yaml", "refresh: [1, 2\n", "config file"),
            ("toml", "[refresh\n", "config file"),
        ];
        for (ext, text, want) in cases {
            let (_d, p) = file(ext, text);
            let e = load_with_env(Some(&p), HashMap::new())
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let e = load_with_env(
            None,
            env(&[("KIRO_EXPORTER__REFRESH__PREVIOUS_MONTH_FINAL_DAY", "x")]),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("refresh.previous_month_final_day"),
            "{e}"
        );
    }

    #[test]
    fn validation_names_the_key() {
        let check = |f: &dyn Fn(&mut Settings), want: &str| {
            let mut s = Settings::default();
            f(&mut s);
            let e = s.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        };
        check(&|s| s.refresh.interval = Duration::ZERO, "refresh.interval");
        check(
            &|s| s.savings.idle_grace_days = 40,
            "savings.idle_grace_days",
        );
        check(
            &|s| s.refresh.jitter = Duration::from_secs(7200),
            "refresh.jitter",
        );
        check(
            &|s| s.refresh.previous_month_final_day = 31,
            "refresh.previous_month_final_day",
        );
        check(
            &|s| s.refresh.retry_max = Duration::from_secs(1),
            "refresh.retry_max",
        );
        check(
            &|s| s.allocation.cost_center_tag = "a'b".into(),
            "allocation.cost_center_tag",
        );
        check(
            &|s| s.server.shutdown_grace = Duration::ZERO,
            "server.shutdown_grace",
        );
        check(&|s| s.log.level = "[[[".into(), "log.level");
    }

    #[test]
    fn missing_file_and_unknown_format() {
        let e = load_with_env(Some(Path::new("/nonexistent/x.toml")), HashMap::new()).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/x.toml"), "{e}");
        let (_d, p) = file("ini", "a=1");
        assert!(
            load_with_env(Some(&p), HashMap::new())
                .unwrap_err()
                .to_string()
                .contains("unknown format")
        );
    }
}
