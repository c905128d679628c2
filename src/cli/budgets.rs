//! `budgets sync`: keep the AWS Budgets of `[budgets]` in line with the configuration, or
//! print the plan with `--dry-run`.

use clap::Subcommand;

use kiro_cost_exporter::period::BillingPeriod;
use kiro_cost_exporter::sink::aws_budgets::Reconciler;

use super::{ConfigArgs, load_settings};

#[derive(Subcommand)]
pub enum BudgetsAction {
    /// Create, update (and with budgets.prune, delete) the owned budgets; prints the plan.
    Sync {
        #[command(flatten)]
        config: ConfigArgs,
        /// Print the plan, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

pub async fn run(action: BudgetsAction) -> anyhow::Result<()> {
    let BudgetsAction::Sync { config, dry_run } = action;
    let settings = load_settings(&config, |_| {})?;
    anyhow::ensure!(
        !settings.budgets.account_id.is_empty(),
        "config key budgets.account_id: set the account that holds the budgets"
    );
    let aws = kiro_cost_exporter::aws::AwsContext::new(settings.aws.clone());
    let seen: Vec<String> = if settings.budgets.auto_cost_centers {
        let now = chrono::Utc::now();
        let a = settings
            .source
            .build(settings.allocation_settings(), &aws)
            .await?
            .allocate(BillingPeriod::containing(now))
            .await?;
        a.cost_centers().into_keys().map(str::to_owned).collect()
    } else {
        Vec::new()
    };
    let reconciler = Reconciler::new(aws.config().await, settings.budgets.clone());
    let changes = reconciler
        .sync(seen.iter().map(String::as_str), dry_run)
        .await?;
    for c in &changes {
        println!("{c}");
    }
    let verb = if dry_run { "to apply" } else { "applied" };
    println!("{} change(s) {verb}", changes.len());
    Ok(())
}
