//! `inspect`: what a period's Kiro lines actually carry, to check an export against the rules
//! the allocation applies and to find the right `cost_center_tag` spelling.

use std::io::Write as _;
use std::path::PathBuf;

use clap::Args;

use kiro_cost_exporter::allocation::plans::usage_type_suffix;
use kiro_cost_exporter::period::BillingPeriod;

use super::{ConfigArgs, load_settings, use_cur};

/// How the allocation reads a line, as `inspect --help` states it.
const RULES: &str = "\
How the allocation reads the lines it prints:
  1. Category, in this order: line type Tax is tax; an operation in
     allocation.ignored_operations (default q-developer-snapshot) is other; line type Usage or
     FlatRateSubscription with operation Credits, a usage type ending in -Credits, or pricing
     unit Credits (case-insensitive) is credits consumption; another FlatRateSubscription
     line is a seat fee; anything else is other. Its cost stays in the total either way.
  2. Tier: from the usage type (…-KiroEnterprise-ProMax) of the seat's dearest seat-fee
     line in the month, the latest of equal ones (an upgrade re-rates the month);
     spellings are compared without case, '_', '-' or spaces (ProMax = PRO_MAX = Pro Max). A
     tier the plan table does not know is reported, never read as 0 included credits; fees
     are learned from full-month seat lines.
  3. Seat: (account, region, user); region from product_region_code (product['region']
     without that column), else the usage type's prefix (USE1 = us-east-1, EUC1 =
     eu-central-1). Seats in two (account, region) pairs are two bills: a duplicate
     subscription.
  4. Columns: line_item_user_identifier, line_item_resource_id, line_item_operation,
     product_region_code, product and line_item_net_unblended_cost are optional; one of
     the two user columns is needed. A null net cost falls back to the unblended cost.
  5. Files: those the period's manifest lists, else the newest delivery; never two versions.
  6. Forecast: each seat's credits extrapolated to month end and the overage beyond its
     plan priced; fees spread daily carried to month end for active seats.";

#[derive(Args)]
#[command(after_long_help = RULES)]
pub struct InspectArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// CUR 2.0 export for the embedded engine, a folder or s3://BUCKET/PREFIX/EXPORT (overrides
    /// source.cur and the engine).
    #[arg(long, value_name = "DIR")]
    cur: Option<PathBuf>,
    /// Billing period, YYYY-MM.
    #[arg(long, value_name = "YYYY-MM")]
    period: BillingPeriod,
    /// How many values to print per facet (most lines first).
    #[arg(long, default_value_t = 20)]
    top: usize,
}

pub async fn run(args: InspectArgs) -> anyhow::Result<()> {
    let InspectArgs {
        config,
        cur,
        period,
        top,
    } = args;
    let settings = load_settings(&config, |s| use_cur(s, cur))?;
    let source = settings
        .source
        .build(
            settings.allocation_settings(),
            &kiro_cost_exporter::aws::AwsContext::new(settings.aws.clone()),
        )
        .await?;
    let ins = source.inspect(period).await?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "Kiro lines of {period} ({} engine)", source.engine())?;
    if ins.missing_columns.is_empty() {
        writeln!(out, "\nOptional columns: all present")?;
    } else {
        writeln!(
            out,
            "\nOptional columns missing: {}",
            ins.missing_columns.join(", ")
        )?;
    }
    let titles = [
        ("line_type", "Line types"),
        ("operation", "Operations"),
        ("pricing_unit", "Pricing units"),
        ("usage_type", "Usage types"),
        ("tag_key", "Tag keys (lines that carry each)"),
        (
            "other",
            "Lines classified as other (line type | operation | unit | usage type)",
        ),
    ];
    for (facet, title) in titles {
        let values = ins.facet(facet);
        writeln!(out, "\n{title}:")?;
        if values.is_empty() {
            writeln!(out, "  (none)")?;
        }
        for (value, lines, cost) in values.iter().take(top) {
            let shown = if value.is_empty() { "(empty)" } else { value };
            if facet == "tag_key" {
                writeln!(out, "  {lines:>9} lines  {shown}")?;
            } else {
                writeln!(
                    out,
                    "  {lines:>9} lines  {:>14}  {shown}",
                    format!("${}", cost.round_dp(2))
                )?;
            }
        }
        if values.len() > top {
            writeln!(out, "  … {} more", values.len() - top)?;
        }
    }
    tags_and_tiers(&mut out, &settings, &ins)?;
    out.flush()?;
    Ok(())
}

/// Whether the configured cost-center tag is on any line, and the tiers the seat-fee lines
/// name against the plan table.
fn tags_and_tiers(
    out: &mut impl std::io::Write,
    settings: &kiro_cost_exporter::config::Settings,
    ins: &kiro_cost_exporter::source::Inspection,
) -> anyhow::Result<()> {
    let tag = &settings.allocation.cost_center_tag;
    let tagged = ins
        .facet("tag_key")
        .iter()
        .find(|(k, _, _)| k == tag)
        .map_or(0, |(_, n, _)| *n);
    writeln!(
        out,
        "\nThe configured cost center tag {tag:?} is on {tagged} line(s){}",
        if tagged == 0 {
            "; pick one of the keys above (allocation.cost_center_tag)"
        } else {
            ""
        }
    )?;
    writeln!(out, "\nTiers seen on seat-fee lines:")?;
    let mut tiers: std::collections::BTreeMap<String, i64> = Default::default();
    for (usage_type, lines, _) in ins.facet("seat_usage_type") {
        *tiers
            .entry(usage_type_suffix(usage_type).to_owned())
            .or_default() += lines;
    }
    if tiers.is_empty() {
        writeln!(out, "  (none)")?;
    }
    for (tier, lines) in tiers {
        match settings.plans.resolve(&tier) {
            Some(p) => writeln!(
                out,
                "  {lines:>9} lines  {tier} = {} ({} credits, ${} a month in the plan table)",
                p.name, p.included_credits, p.monthly_usd
            )?,
            None => writeln!(
                out,
                "  {lines:>9} lines  {tier} = UNKNOWN to the plan table: no included credits assumed; add it under [[plans]]"
            )?,
        }
    }
    Ok(())
}
