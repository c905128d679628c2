//! The monthly per-user report finance asks for: a CSV (UTF-8 with BOM), optionally uploaded
//! to S3 with a presigned download link, and a Feishu summary card.
//!
//! The CSV has one row per unit (account, user, cost center) with the savings recommendation
//! of the seat on the row of its main cost center, then one row for cost without a user and
//! one for tax, so that its `total_usd` column sums to the period's Kiro total.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Datelike, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Delivery, Sink, SinkError};
use crate::allocation::savings::Recommendation;
use crate::aws::S3Location;
use crate::config_error::{ConfigError, ensure};
use crate::failure::FailureKind;
pub use crate::locale::Locale;
use crate::locale::{ZH_CN_HEADER, money};
use crate::notify::{Channel, NotifyError, feishu};
use crate::period::BillingPeriod;
use crate::snapshot::{PeriodView, Snapshot, SnapshotBuilder};
use crate::source::Source;
use crate::source::identity::Person;
use crate::state::StateFile;

mod card;
mod rows;
mod sink;
mod upload;

pub use card::{no_data_card, summary_card};
pub use rows::{
    NAME_COLUMNS, SAVINGS_COLUMNS, SeatTenure, TAX_ROW, TENURE_COLUMNS, UNATTRIBUTED_ROW, csv,
    csv_in, csv_with, file_name, header, header_in, load_written, write,
};
pub use sink::ReportSink;
pub use upload::{Link, ReportS3, link_expiry, upload};

/// The IAM actions uploading the report takes: the upload, and GetObject for the presigned
/// download link (signed with the exporter's credentials) (`deploy/iam/report-upload.json`).
pub const IAM_ACTIONS: &[&str] = &["s3:PutObject", "s3:GetObject"];

/// `[report]`: the monthly per-user CSV and its summary card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportSettings {
    /// Folder the CSV is written to.
    pub out_dir: PathBuf,
    /// `s3://bucket/prefix/` to upload the CSV to, with a presigned download link on the card;
    /// empty = no upload.
    pub s3: String,
    /// Lifetime of the presigned link (at most 7 days).
    #[serde(with = "humantime_serde")]
    pub link_ttl: Duration,
    /// `serve` sends the previous month's report on this day of the month (0 = never).
    pub schedule_day: u32,
    /// Channels the summary card goes to (Feishu channels of `[[alerts.channels]]`); empty =
    /// every Feishu channel.
    pub channels: Vec<String>,
    /// Cost centers and savings items listed on the card.
    pub top: usize,
    /// Language of the card and the CSV's header: `en` (default) or `zh-CN`.
    pub locale: Locale,
    /// The exporter's own address as readers reach it (e.g. `https://kiro-exporter.internal:19877`):
    /// the card then also links `/reports/FILE`, served by the exporter behind the same
    /// authentication as `/metrics`, a link that does not expire. Empty = none.
    pub exporter_url: String,
}

impl Default for ReportSettings {
    fn default() -> Self {
        Self {
            out_dir: PathBuf::from("reports"),
            s3: String::new(),
            link_ttl: Duration::from_secs(7 * 86_400),
            schedule_day: 5,
            channels: Vec::new(),
            top: 5,
            locale: Locale::En,
            exporter_url: String::new(),
        }
    }
}

impl ReportSettings {
    /// Whether `serve` sends the report: a report day, and somewhere to deliver it (a
    /// notification channel when `channels` says there is one, or S3).
    pub fn is_on(&self, channels: bool) -> bool {
        self.schedule_day != 0 && (channels || !self.s3.is_empty())
    }

    /// The sink, when [`Self::is_on`]: reports written before are served too, the card goes
    /// to the Feishu channels `report.channels` names (all when empty).
    pub async fn build(&self, cx: &crate::sink::SinkContext) -> crate::sink::Built {
        if !self.is_on(!cx.channels.is_empty()) {
            return Ok(None);
        }
        let file = cx
            .state_file
            .clone()
            .ok_or(crate::sink::BuildError::NoStateFile("report"))?;
        for (name, bytes) in load_written(&self.out_dir).await {
            cx.server.put_report(&name, bytes);
        }
        let wanted = &self.channels;
        let feishu = cx
            .channels
            .iter()
            .filter(|c| {
                c.config.kind == crate::notify::ChannelKind::Feishu
                    && (wanted.is_empty() || wanted.iter().any(|w| w == c.name()))
            })
            .cloned()
            .collect();
        tracing::info!(report_day = self.schedule_day, "monthly report enabled");
        let s3 = ReportS3::of(self, &cx.aws).await;
        Ok(Some(Box::new(ReportSink::new(
            self.clone(),
            cx,
            file,
            s3,
            feishu,
        ))))
    }

    /// Checks values (no I/O); errors name the key under `report`. Whether `report.channels`
    /// name Feishu channels is checked where both sections are known (`Settings::validate`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        S3Location::validate_setting("report.s3", &self.s3)?;
        ensure(
            !self.link_ttl.is_zero() && self.link_ttl <= Duration::from_secs(7 * 86_400),
            "report.link_ttl",
            "must be between 1s and 7d (the longest a presigned link lives)",
        )?;
        ensure(
            self.exporter_url.is_empty()
                || self.exporter_url.starts_with("http://")
                || self.exporter_url.starts_with("https://"),
            "report.exporter_url",
            "must be an http:// or https:// address, or empty",
        )?;
        ensure(
            self.schedule_day <= 28,
            "report.schedule_day",
            "must be a day from 1 to 28, or 0 for never",
        )
    }
}

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

impl ReportError {
    /// Fixed label value for the exporter's sink errors.
    pub fn kind(&self) -> FailureKind {
        match self {
            Self::Csv(_) | Self::Io { .. } => FailureKind::Io,
            Self::Upload { .. } => FailureKind::Aws,
            Self::Undelivered { .. } => FailureKind::Delivery,
        }
    }
}

/// What a report run produced.
#[derive(Debug, Clone)]
pub struct Written {
    pub path: PathBuf,
    pub link: Option<Link>,
    pub cards_sent: usize,
    /// The CSV written.
    pub csv: bytes::Bytes,
}

/// Writes the CSV, uploads it when `s3` is given, and sends the card to `channels` in order,
/// stopping at the first that fails ([`ReportError::Undelivered`] says which got it).
pub async fn run(
    view: &PeriodView,
    people: &BTreeMap<String, Person>,
    settings: &ReportSettings,
    s3: Option<&ReportS3>,
    channels: &[&Channel],
    dashboard_url: &str,
    tenure: Option<&SeatTenure>,
) -> Result<Written, ReportError> {
    let bytes = csv_with(view, people, settings.locale, tenure)?;
    let csv = bytes::Bytes::from(bytes.clone());
    let name = file_name(view.allocation.period);
    let path = write(&settings.out_dir, &name, bytes.clone()).await?;
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
    let card = summary_card(view, link.as_ref(), settings, dashboard_url);
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
    Ok(Written {
        path,
        link,
        cards_sent: delivered.len(),
        csv,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocation::PlanTable;
    use crate::allocation::savings::SavingsSettings;

    fn view() -> PeriodView {
        let mut a = crate::allocation::forecast::tests::alloc(Some(10));
        a.units[0].cost_center = String::new();
        a.reconcile().unwrap();
        let now = a.period.start() + chrono::Duration::days(12);
        PeriodView::build(a, &PlanTable::default(), &SavingsSettings::default(), now)
    }

    #[test]
    fn both_headers_name_every_column() {
        assert_eq!(header_in(Locale::En), header());
        assert_eq!(header_in(Locale::ZhCn).len(), header().len());
    }

    #[test]
    fn zh_cn_translates_the_header_the_rows_and_the_card() {
        let v = view();
        let text = String::from_utf8(csv_in(&v, &BTreeMap::new(), Locale::ZhCn).unwrap()).unwrap();
        let mut lines = text.trim_start_matches('\u{feff}').lines();
        assert!(
            lines
                .next()
                .unwrap()
                .starts_with("计费周期,账户ID,区域,用户ID,成本中心")
        );
        assert!(text.contains(",未设置,"), "{text}");
        assert!(
            text.contains("（税费）") && text.contains("（无用户）"),
            "{text}"
        );
        // The amounts are the English file's, row for row: the books still balance.
        let en = String::from_utf8(csv(&v, &BTreeMap::new()).unwrap()).unwrap();
        let total = |t: &str| -> Decimal {
            t.lines()
                .skip(1)
                .map(|l| l.split(',').nth(10).unwrap().parse::<Decimal>().unwrap())
                .sum()
        };
        assert_eq!(total(&text), total(&en));
        assert_eq!(total(&en), v.allocation.kiro_total_usd);
        let settings = ReportSettings {
            locale: Locale::ZhCn,
            ..ReportSettings::default()
        };
        let card = summary_card(&v, None, &settings, "https://grafana.example.com");
        let card_text = card.to_string();
        assert!(
            card_text.contains(&format!("Kiro 费用报告 {}", v.allocation.period)),
            "{card_text}"
        );
        assert!(
            card_text.contains("**总费用**") && card_text.contains("- 未设置: "),
            "{card_text}"
        );
        assert!(card_text.contains("打开仪表盘"), "{card_text}");
        let none = no_data_card(v.allocation.period, "no partition", Locale::ZhCn).to_string();
        assert!(
            none.contains("无数据") && none.contains("没有报告"),
            "{none}"
        );
    }

    #[test]
    fn a_link_dies_with_the_credentials_that_signed_it() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-05T06:00:00Z")
            .unwrap()
            .to_utc();
        let week = Duration::from_secs(7 * 86_400);
        // Static credentials: the link lives its whole ttl.
        assert_eq!(
            link_expiry(now, week, None),
            now + chrono::Duration::days(7)
        );
        // A role session ending in 6 hours ends the link with it.
        let session = std::time::SystemTime::from(now + chrono::Duration::hours(6));
        assert_eq!(
            link_expiry(now, week, Some(session)),
            now + chrono::Duration::hours(6)
        );
        // A session outliving the ttl does not lengthen it.
        let long = std::time::SystemTime::from(now + chrono::Duration::days(30));
        assert_eq!(
            link_expiry(now, week, Some(long)),
            now + chrono::Duration::days(7)
        );
    }
}
