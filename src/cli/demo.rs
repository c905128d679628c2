//! `demo`: generate a realistic export once (cached), then serve it on loopback with a short
//! refresh, on the built-in defaults (no configuration file, no environment).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use kiro_cost_exporter::config::Settings;
use kiro_cost_exporter::curgen::{self, GenSpec};
use kiro_cost_exporter::period::BillingPeriod;
use kiro_cost_exporter::server::DEFAULT_PORT;

#[derive(Args)]
pub struct DemoArgs {
    /// Listen address.
    #[arg(long, value_name = "ADDR", default_value_t = SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)))]
    listen: SocketAddr,
    /// Where the demo export is kept (default: the user's cache folder).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    #[arg(long, default_value_t = 300)]
    users: usize,
    /// Refresh interval.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    interval: Duration,
}

/// Months the demo export holds: the current one and five closed ones for history.
const DEMO_MONTHS: u32 = 6;

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let DemoArgs {
        listen,
        data,
        users,
        interval,
    } = args;
    let mut settings = Settings::default();
    settings.log.init();
    let now = chrono::Utc::now();
    let current = BillingPeriod::containing(now);
    let base = data.unwrap_or_else(demo_cache_dir);
    // v5: the activity report as Kiro writes it (client types, plugins, tiers, profile ARNs,
    // prefixed ids, overage per profile, free-tier users, only days that have ended), and a
    // directory of synthetic people.
    // v7: six months, so history and tenure have months to show; Q Developer seats.
    let first = (1..DEMO_MONTHS).fold(current, |p, _| p.previous());
    let dir = base.join(format!("{current}-{users}users-v7"));
    if !dir.join("data").is_dir() {
        println!(
            "Generating a demo CUR export ({users} users, {} to {current} to date) in {} ...",
            first,
            dir.display()
        );
        let tmp = base.join(format!(".tmp-{current}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let mut spec = GenSpec::new(users, first);
        spec.months = DEMO_MONTHS;
        // CUR lags real usage by a day or more; so does the demo.
        spec.until = Some(now - chrono::Duration::hours(24));
        spec.activity = true;
        curgen::write_export(&spec, &tmp, |_| {})
            .with_context(|| format!("writing the demo export to {}", tmp.display()))?;
        std::fs::rename(&tmp, &dir)
            .with_context(|| format!("moving the demo export to {}", dir.display()))?;
    }
    settings.activity.path = dir.join("activity").display().to_string();
    // The closed months, allocated once and kept beside the export.
    settings.history.dir = dir.join("history");
    // Synthetic people, named from the generated directory file (Identity Store stays off):
    // their e-mails may be shown.
    settings.identity.directory = dir.join("activity/people.csv").display().to_string();
    settings.identity.labels = vec!["user_name".into(), "display_name".into(), "email".into()];
    // Budgets for three cost centers, shown on the landing page (AWS Budgets stays off).
    for (cc, limit) in [
        ("CC-1001 Platform", 5_000),
        ("CC-1002 Payments", 2_500),
        ("CC-3100 Mobile", 3_000),
    ] {
        settings
            .budgets
            .cost_centers
            .insert(cc.to_owned(), rust_decimal::Decimal::from(limit));
    }
    settings.source.cur = dir;
    settings.server.listen = listen;
    settings.refresh.interval = interval;
    settings.refresh.jitter = Duration::ZERO;
    settings.refresh.retry_initial = Duration::from_secs(5).min(interval);
    settings.validate()?;
    super::serve::serve(settings).await
}

/// `$XDG_CACHE_HOME/kiro-cost-exporter/demo`, `~/.cache/kiro-cost-exporter/demo`, or
/// `.kiro-cost-exporter-demo` in the working directory.
fn demo_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map_or_else(
            || PathBuf::from(".kiro-cost-exporter-demo"),
            |c| c.join("kiro-cost-exporter").join("demo"),
        )
}
