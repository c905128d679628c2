//! The monthly per-user report finance asks for: a CSV (UTF-8 with BOM), optionally uploaded
//! to S3 with a presigned download link, and a Feishu summary card.
//!
//! The CSV has one row per unit (account, user, cost center) with the savings recommendation
//! of the seat on the row of its main cost center, then one row for cost without a user and
//! one for tax, so that its `total_usd` column sums to the period's Kiro total.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::{Value, json};

use crate::alert::notify::{self, Channel, NotifyError};
use crate::allocation::Allocation;
use crate::allocation::savings::Savings;
use crate::config::ReportSettings;
use crate::source::athena::S3Location;

/// Columns the report adds to the allocation's ([`crate::output::CSV_HEADER`]).
pub const SAVINGS_COLUMNS: [&str; 3] = ["recommended_plan", "savings_usd", "savings_reason"];

/// The CSV's columns.
pub fn header() -> Vec<&'static str> {
    crate::output::CSV_HEADER
        .iter()
        .chain(&SAVINGS_COLUMNS)
        .copied()
        .collect()
}

/// Label of the row for cost that names no user.
pub const UNATTRIBUTED_ROW: &str = "(no user)";
/// Label of the tax row.
pub const TAX_ROW: &str = "(tax)";

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write the report CSV: {0}")]
    Csv(#[from] csv::Error),
    #[error("report file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("report upload to {location}: {message}")]
    Upload { location: String, message: String },
    /// The card reached `delivered` and then failed on one channel; the rest were not tried.
    #[error("report card not delivered to channel {channel}: {source}")]
    Undelivered {
        delivered: Vec<String>,
        channel: String,
        #[source]
        source: NotifyError,
    },
}

/// The CSV of a period.
pub fn csv(a: &Allocation, savings: &Savings) -> Result<Vec<u8>, csv::Error> {
    let mut out = "\u{feff}".as_bytes().to_vec();
    {
        let mut w = csv::WriterBuilder::new().from_writer(&mut out);
        w.write_record(header())?;
        let period = a.period.to_string();
        for u in &a.units {
            let rec = savings.recommendations.iter().find(|r| {
                r.account_id == u.account_id
                    && r.user_id == u.user_id
                    && r.cost_center == u.cost_center
            });
            let savings = [
                rec.map_or_else(String::new, |r| r.recommended_plan.clone()),
                rec.map_or_else(String::new, |r| r.saving_usd.to_string()),
                rec.map_or_else(String::new, |r| r.reason.as_str().to_owned()),
            ];
            w.write_record(
                crate::output::unit_fields(&period, u)
                    .iter()
                    .chain(&savings),
            )?;
        }
        for (label, amount) in [(UNATTRIBUTED_ROW, a.unattributed_usd), (TAX_ROW, a.tax_usd)] {
            let amount = amount.to_string();
            w.write_record([
                period.as_str(),
                "",
                label,
                "",
                "",
                "0",
                "0",
                "0",
                &amount,
                &amount,
                "",
                "",
                "",
            ])?;
        }
        w.flush()?;
    }
    Ok(out)
}

/// The report file's name for a period.
pub fn file_name(a: &Allocation) -> String {
    format!("kiro-cost-report-{}.csv", a.period)
}

/// Writes `bytes` to `dir/name` atomically; returns the path.
pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf, ReportError> {
    use std::io::Write;
    let path = dir.join(name);
    let io = |source| ReportError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    tmp.write_all(bytes).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(&path).map_err(|e| io(e.error))?;
    Ok(path)
}

/// Uploads the CSV and returns a presigned GET link valid for `ttl`.
pub async fn upload(
    s3: &aws_sdk_s3::Client,
    location: &S3Location,
    name: &str,
    bytes: Vec<u8>,
    ttl: Duration,
) -> Result<String, ReportError> {
    let key = format!("{}{name}", location.prefix);
    let fail = |message: String| ReportError::Upload {
        location: format!("s3://{}/{key}", location.bucket),
        message,
    };
    s3.put_object()
        .bucket(&location.bucket)
        .key(&key)
        .content_type("text/csv; charset=utf-8")
        .content_disposition(format!("attachment; filename=\"{name}\""))
        .body(bytes.into())
        .send()
        .await
        .map_err(|e| fail(crate::aws::error_message(&e)))?;
    let presigning = aws_sdk_s3::presigning::PresigningConfig::expires_in(ttl)
        .map_err(|e| fail(e.to_string()))?;
    let request = s3
        .get_object()
        .bucket(&location.bucket)
        .key(&key)
        .presigned(presigning)
        .await
        .map_err(|e| fail(crate::aws::error_message(&e)))?;
    Ok(request.uri().to_owned())
}

fn usd(d: Decimal) -> String {
    format!("${:.2}", d.round_dp(2))
}

/// The summary card: period, users, credits, cost, top cost centers, overage and untagged
/// users, possible savings with the top items, and the download link.
pub fn summary_card(
    a: &Allocation,
    savings: &Savings,
    link: Option<&str>,
    settings: &ReportSettings,
    dashboard_url: &str,
) -> Value {
    let totals = a.totals();
    let overage_users = {
        let mut seen = std::collections::BTreeSet::new();
        for u in a.units.iter().filter(|u| u.overage_usd > Decimal::ZERO) {
            seen.insert((&u.account_id, &u.user_id));
        }
        seen.len()
    };
    let untagged = a.untagged_users().len();
    let mut centers = String::new();
    for (cc, r) in a.cost_centers_by_cost().into_iter().take(settings.top) {
        let name = if cc.is_empty() { "(untagged)" } else { cc };
        centers.push_str(&format!(
            "- {name}: {} ({} users)\n",
            usd(r.total_usd),
            r.users
        ));
    }
    let mut items: Vec<_> = savings.recommendations.iter().collect();
    items.sort_by_key(|r| std::cmp::Reverse(r.saving_usd));
    let mut top_savings = String::new();
    for r in items.into_iter().take(settings.top) {
        let to = if r.recommended_plan.is_empty() {
            "cancel".to_owned()
        } else {
            format!("→ {}", r.recommended_plan)
        };
        top_savings.push_str(&format!(
            "- {} ({}): {} {to}, saves {}\n",
            r.user_id,
            r.reason.as_str(),
            r.plan,
            usd(r.saving_usd)
        ));
    }
    let mut body = format!(
        "**Period**: {period}\n**Users**: {users}\n**Credits used**: {credits}\n**Total cost**: {total} (tax {tax})\n**Users with overage**: {overage_users}\n**Untagged users**: {untagged}\n\n**Top cost centers**\n{centers}",
        period = a.period,
        users = totals.users,
        credits = totals.credits_used.round_dp(0),
        total = usd(a.kiro_total_usd),
        tax = usd(a.tax_usd),
    );
    body.push_str(&format!(
        "\n**Possible savings**: {} a month ({} idle seats)\n{top_savings}",
        usd(savings.total_usd),
        savings.idle_seats
    ));
    let mut elements = vec![json!({"tag": "markdown", "content": body.trim_end()})];
    if let Some(link) = link {
        elements.push(notify::link_button("Download the CSV", link));
    }
    if !dashboard_url.is_empty() {
        elements.push(notify::link_button("Open the dashboard", dashboard_url));
    }
    notify::card(&format!("Kiro cost report {}", a.period), "blue", elements)
}

/// What a report run produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub path: PathBuf,
    pub link: Option<String>,
    pub cards_sent: usize,
}

/// Writes the CSV, uploads it when `s3` is given, and sends the card to `channels` in order,
/// stopping at the first that fails ([`ReportError::Undelivered`] says which got it).
pub async fn run(
    a: &Allocation,
    savings: &Savings,
    settings: &ReportSettings,
    s3: Option<&aws_sdk_s3::Client>,
    channels: &[&Channel],
    dashboard_url: &str,
) -> Result<Outcome, ReportError> {
    let bytes = csv(a, savings)?;
    let name = file_name(a);
    let path = write(&settings.out_dir, &name, &bytes)?;
    let link = match (s3, settings.s3.as_str()) {
        (Some(client), loc) if !loc.is_empty() => {
            let location = S3Location::parse(loc).map_err(|message| ReportError::Upload {
                location: loc.to_owned(),
                message,
            })?;
            Some(upload(client, &location, &name, bytes, settings.link_ttl).await?)
        }
        _ => None,
    };
    let card = summary_card(a, savings, link.as_deref(), settings, dashboard_url);
    let mut delivered = Vec::new();
    for ch in channels {
        if let Err(source) = ch.send(&card).await {
            return Err(ReportError::Undelivered {
                delivered,
                channel: ch.name().to_owned(),
                source,
            });
        }
        delivered.push(ch.name().to_owned());
    }
    Ok(Outcome {
        path,
        link,
        cards_sent: delivered.len(),
    })
}
