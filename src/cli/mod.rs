//! The subcommands, one file each, behind this dispatcher, and the one way every command loads
//! its settings: defaults < `--config FILE` < environment, then the command's own flags, then
//! validation, then logging.

mod budgets;
mod check_config;
mod demo;
mod generate_cur;
mod healthcheck;
mod inspect;
mod query;
mod report;
mod rules;
mod serve;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use kiro_cost_exporter::aws::AwsContext;
use kiro_cost_exporter::config::{self, Settings};
use kiro_cost_exporter::source::Engine;

/// `--version`: the package version, the commit built and the compiler.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (revision ",
    env!("KIRO_EXPORTER_REVISION"),
    ", rustc ",
    env!("KIRO_EXPORTER_RUSTC"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "kiro-cost-exporter",
    version = VERSION,
    about = "Kiro subscription costs per user and cost center, from the AWS CUR 2.0"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
pub struct ConfigArgs {
    /// Settings file (TOML or YAML). Environment variables KIRO_EXPORTER__SECTION__KEY override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Allocate one billing period and print it.
    Query(query::QueryArgs),
    /// Show what a period's Kiro lines carry: line types, operations, pricing units, usage
    /// types, tag keys, tiers, missing optional columns and lines classified as other.
    Inspect(inspect::InspectArgs),
    /// Write a synthetic CUR 2.0 export with realistic Kiro bills among other services' lines.
    GenerateCur(generate_cur::GenerateArgs),
    /// Run the exporter: refresh on a schedule and serve /metrics.
    Serve(serve::ServeArgs),
    /// Generate a realistic export (once, cached) and serve it on 127.0.0.1 with a short refresh.
    Demo(demo::DemoArgs),
    /// Write the monthly per-user report (CSV), upload it and send its summary card.
    Report(report::ReportArgs),
    /// Keep the AWS Budgets of [budgets] in line with the config.
    Budgets {
        #[command(subcommand)]
        action: budgets::BudgetsAction,
    },
    /// Print the Prometheus alert rules for a job name, Grafana and runbook address, or as a
    /// Prometheus Operator PrometheusRule.
    Rules(rules::RulesArgs),
    /// Ask a running exporter's /healthz on loopback; exit 0 when it answers 2xx (a container's
    /// health check without curl).
    Healthcheck(healthcheck::HealthcheckArgs),
    /// Validate the settings and print them, secrets redacted.
    CheckConfig {
        #[command(flatten)]
        config: ConfigArgs,
    },
}

impl Cli {
    /// Whether the command runs the daemon (it stays up between refreshes).
    pub fn runs_daemon(&self) -> bool {
        matches!(self.command, Command::Serve(_) | Command::Demo(_))
    }
}

/// Runs the command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Query(args) => query::run(args).await,
        Command::Inspect(args) => inspect::run(args).await,
        Command::GenerateCur(args) => generate_cur::run(args),
        Command::Serve(args) => serve::run(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Report(args) => report::run(args).await,
        Command::Budgets { action } => budgets::run(action).await,
        Command::Rules(args) => rules::run(args),
        Command::Healthcheck(args) => healthcheck::run(args),
        Command::CheckConfig { config } => check_config::run(&config),
    }
}

/// Loads the settings of `args`, lets the command change them, validates them and starts
/// logging: every command goes through here.
pub fn load_settings(
    args: &ConfigArgs,
    overrides: impl FnOnce(&mut Settings),
) -> anyhow::Result<Settings> {
    let mut settings = config::load(args.config.as_deref())?;
    overrides(&mut settings);
    settings.validate()?;
    settings.log.init();
    Ok(settings)
}

/// Points the local engine at `cur` when given, whatever engine the settings name.
pub fn use_cur(settings: &mut Settings, cur: Option<PathBuf>) {
    if let Some(cur) = cur {
        settings.source.engine = Engine::Local;
        settings.source.cur = cur;
    }
}

/// The Identity Store resolver when `identity.identity_store_id` is set; it needs a region.
pub async fn identity_resolver(
    settings: &Settings,
    aws: &AwsContext,
) -> anyhow::Result<Option<kiro_cost_exporter::source::identity::IdentityResolver>> {
    if settings.identity.identity_store_id.is_empty() {
        return Ok(None);
    }
    let shared = aws.regional("identity.identity_store_id").await?;
    Ok(Some(
        kiro_cost_exporter::source::identity::IdentityResolver::new(
            shared,
            settings.identity.clone(),
        ),
    ))
}

/// The snapshot builder of `settings`: the plan table, savings settings, the activity report
/// and the names of users (Identity Store when configured, the directory file, the activity
/// report's e-mails; the labels `identity.labels` exports).
pub async fn snapshot_builder(
    settings: &Settings,
    aws: &AwsContext,
) -> anyhow::Result<kiro_cost_exporter::snapshot::SnapshotBuilder> {
    let activity = settings.activity.reader(aws).await;
    Ok(kiro_cost_exporter::snapshot::SnapshotBuilder::new(
        settings.plans.clone(),
        settings.savings.clone(),
    )
    .with_activity(activity)
    .with_identity(
        identity_resolver(settings, aws).await?,
        settings.identity.clone(),
    ))
}

/// The view of one allocated period as every command shows it, built as the daemon builds
/// its snapshot ([`snapshot_builder`]), and the people it names.
pub async fn period_view(
    settings: &Settings,
    aws: &AwsContext,
    allocation: kiro_cost_exporter::allocation::Allocation,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<(
    kiro_cost_exporter::snapshot::PeriodView,
    std::collections::BTreeMap<String, kiro_cost_exporter::source::identity::Person>,
)> {
    period_view_after(settings, aws, None, allocation, now).await
}

/// [`period_view`], with the month `before` it allocated too: a running month's seats are
/// decided with the month before (its savings windows), as the daemon decides them.
pub async fn period_view_after(
    settings: &Settings,
    aws: &AwsContext,
    before: Option<kiro_cost_exporter::allocation::Allocation>,
    allocation: kiro_cost_exporter::allocation::Allocation,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<(
    kiro_cost_exporter::snapshot::PeriodView,
    std::collections::BTreeMap<String, kiro_cost_exporter::source::identity::Person>,
)> {
    let builder = snapshot_builder(settings, aws).await?;
    let allocations = before.into_iter().chain([allocation]).collect();
    let mut snapshot = builder.build(now, allocations).await.snapshot;
    let view = snapshot
        .periods
        .pop()
        .context("the snapshot of one allocated period holds it")?;
    Ok((view, snapshot.people))
}
