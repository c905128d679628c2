//! `rules`: print the shipped Prometheus rules for another job name, Grafana or runbook
//! location, or as a Prometheus Operator `PrometheusRule`.

use clap::Args;

use kiro_cost_exporter::sink::prometheus::rules::{self, RulesFormat, RulesOptions};

#[derive(Args)]
pub struct RulesArgs {
    /// The scrape job the rules select (`job="…"` in every selector).
    #[arg(long, default_value = rules::DEFAULT_JOB)]
    job: String,
    /// Grafana's address, for the `dashboard` annotations.
    #[arg(long, value_name = "URL", default_value = rules::DEFAULT_GRAFANA_URL)]
    grafana_url: String,
    /// The runbooks page (`docs/runbooks.md`, or your copy of it) whose anchors the
    /// `runbook_url` annotations name.
    #[arg(long, value_name = "URL", default_value = rules::DEFAULT_RUNBOOK_URL)]
    runbook_url: String,
    /// `prometheus` (a rule file) or `prometheus-rule` (a Prometheus Operator resource).
    #[arg(long, value_enum, default_value_t = RulesFormat::Prometheus)]
    format: RulesFormat,
    /// `metadata.namespace` of the `PrometheusRule`.
    #[arg(long)]
    namespace: Option<String>,
}

pub fn run(args: RulesArgs) -> anyhow::Result<()> {
    let out = rules::render(&RulesOptions {
        job: args.job,
        grafana_url: args.grafana_url,
        runbook_url: args.runbook_url,
        format: args.format,
        namespace: args.namespace,
    })?;
    print!("{out}");
    Ok(())
}
