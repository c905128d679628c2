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

/// Columns the report adds to the allocation's ([`crate::output::CSV_HEADER`]).
pub const SAVINGS_COLUMNS: [&str; 3] = ["recommended_plan", "savings_usd", "savings_reason"];
/// Who the user is, where known (Identity Store, or the activity report's e-mail when
/// `identity.labels` exports it).
pub const NAME_COLUMNS: [&str; 3] = ["user_name", "display_name", "email"];

/// The CSV's columns (English).
pub fn header() -> Vec<&'static str> {
    crate::output::CSV_HEADER
        .iter()
        .chain(&SAVINGS_COLUMNS)
        .chain(&NAME_COLUMNS)
        .copied()
        .collect()
}

/// The CSV's columns in `locale`.
pub fn header_in(locale: Locale) -> Vec<&'static str> {
    match locale {
        Locale::En => header(),
        Locale::ZhCn => ZH_CN_HEADER.to_vec(),
    }
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

/// The CSV of a period.
pub fn csv(view: &PeriodView, people: &BTreeMap<String, Person>) -> Result<Vec<u8>, csv::Error> {
    csv_in(view, people, Locale::En)
}

/// The CSV of a period with the header and row labels of `locale` (`zh-CN`: untagged cost
/// centers read 未设置).
pub fn csv_in(
    view: &PeriodView,
    people: &BTreeMap<String, Person>,
    locale: Locale,
) -> Result<Vec<u8>, csv::Error> {
    let t = locale.report();
    let (a, savings) = (&view.allocation, &view.savings);
    let mut out = "\u{feff}".as_bytes().to_vec();
    {
        let mut w = csv::WriterBuilder::new().from_writer(&mut out);
        w.write_record(header_in(locale))?;
        let period = a.period.to_string();
        // A seat's recommendation goes on the row of its main cost center.
        let recs: BTreeMap<(&str, &str, &str, &str), &Recommendation> = savings
            .recommendations
            .iter()
            .map(|r| {
                (
                    (
                        r.account_id.as_str(),
                        r.region.as_str(),
                        r.user_id.as_str(),
                        r.cost_center.as_str(),
                    ),
                    r,
                )
            })
            .collect();
        for u in &a.units {
            let rec = recs
                .get(&(
                    u.account_id.as_str(),
                    u.region.as_str(),
                    u.user_id.as_str(),
                    u.cost_center.as_str(),
                ))
                .copied();
            let savings = [
                rec.map_or_else(String::new, |r| r.recommended_plan.clone()),
                rec.map_or_else(String::new, |r| r.saving_usd.to_string()),
                rec.map_or_else(String::new, |r| r.reason.as_str().to_owned()),
            ];
            let who = people.get(&u.user_id).cloned().unwrap_or_default();
            let names = [who.user_name, who.display_name, who.email];
            let mut fields = crate::output::unit_fields(&period, u);
            if fields[4].is_empty() {
                fields[4] = t.untagged.to_owned();
            }
            w.write_record(fields.iter().chain(&savings).chain(&names))?;
        }
        for (label, amount) in [(t.no_user, a.unattributed_usd), (t.tax, a.tax_usd)] {
            let amount = amount.to_string();
            w.write_record([
                period.as_str(),
                "",
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
                "",
                "",
                "",
            ])?;
        }
        w.flush()?;
    }
    Ok(out)
}

/// The newest report files in `dir` (at most [`crate::server::REPORTS_SERVED`]), by name;
/// unreadable ones are skipped with a warning.
pub async fn load_written(dir: &Path) -> Vec<(String, bytes::Bytes)> {
    let mut names = Vec::new();
    if let Ok(mut entries) = tokio::fs::read_dir(dir).await {
        while let Ok(Some(e)) = entries.next_entry().await {
            let name = e.file_name().to_string_lossy().into_owned();
            let period = name
                .strip_prefix("kiro-cost-report-")
                .and_then(|r| r.strip_suffix(".csv"))
                .and_then(|p| p.parse::<BillingPeriod>().ok());
            if period.is_some() {
                names.push(name);
            }
        }
    }
    names.sort();
    let skip = names.len().saturating_sub(crate::server::REPORTS_SERVED);
    let mut out = Vec::new();
    for name in names.into_iter().skip(skip) {
        match tokio::fs::read(dir.join(&name)).await {
            Ok(b) => out.push((name, bytes::Bytes::from(b))),
            Err(e) => tracing::warn!(file = %dir.join(&name).display(), "report not served: {e}"),
        }
    }
    out
}

pub use super::report_file_name as file_name;

/// Writes `bytes` to `dir/name` atomically, on a blocking thread; returns the path.
pub async fn write(dir: &Path, name: &str, bytes: Vec<u8>) -> Result<PathBuf, ReportError> {
    let path = dir.join(name);
    let target = path.clone();
    let written =
        tokio::task::spawn_blocking(move || crate::state::atomic_write(&target, &bytes)).await;
    let io = |source| ReportError::Io {
        path: path.clone(),
        source,
    };
    match written {
        Ok(r) => r.map_err(io)?,
        Err(e) => return Err(io(std::io::Error::other(e.to_string()))),
    }
    Ok(path)
}

/// Where the report is uploaded: the S3 client and the credentials it signs with (their expiry
/// bounds the download link's life).
#[derive(Debug, Clone)]
pub struct ReportS3 {
    pub client: aws_sdk_s3::Client,
    pub credentials: Option<aws_credential_types::provider::SharedCredentialsProvider>,
}

impl ReportS3 {
    /// The client and credentials of `shared`.
    pub fn new(aws: &crate::aws::AwsSettings, shared: &aws_config::SdkConfig) -> Self {
        Self {
            client: aws.s3_client(shared),
            credentials: shared.credentials_provider(),
        }
    }
}

/// A presigned download link and when it stops working.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub url: String,
    /// `link_ttl` from now, or sooner: a link signed with temporary credentials (an ECS task
    /// role, an instance profile, web identity) dies with them.
    pub expires: chrono::DateTime<chrono::Utc>,
}

/// When a link signed now for `ttl` with credentials expiring at `credentials` stops working.
pub fn link_expiry(
    now: chrono::DateTime<chrono::Utc>,
    ttl: Duration,
    credentials: Option<std::time::SystemTime>,
) -> chrono::DateTime<chrono::Utc> {
    let by_ttl = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::zero());
    match credentials.map(chrono::DateTime::<chrono::Utc>::from) {
        Some(c) if c < by_ttl => c,
        _ => by_ttl,
    }
}

/// Uploads the CSV and returns a presigned GET link valid for `ttl` (or until the signing
/// credentials expire, when that is sooner).
pub async fn upload(
    store: &ReportS3,
    location: &S3Location,
    name: &str,
    bytes: Vec<u8>,
    ttl: Duration,
) -> Result<Link, ReportError> {
    let s3 = &store.client;
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
    let credentials = match &store.credentials {
        Some(p) => {
            use aws_credential_types::provider::ProvideCredentials;
            p.provide_credentials().await.ok().and_then(|c| c.expiry())
        }
        None => None,
    };
    Ok(Link {
        url: request.uri().to_owned(),
        expires: link_expiry(chrono::Utc::now(), ttl, credentials),
    })
}

/// The summary card: period, users, credits, cost, top cost centers, overage and untagged
/// users, possible savings with the top items, and the download link.
pub fn summary_card(
    view: &PeriodView,
    link: Option<&Link>,
    settings: &ReportSettings,
    dashboard_url: &str,
) -> Value {
    let (a, savings, totals) = (&view.allocation, &view.savings, &view.totals);
    let overage_users = {
        let mut seen = std::collections::BTreeSet::new();
        for u in a.units.iter().filter(|u| u.overage_usd > Decimal::ZERO) {
            seen.insert((&u.account_id, &u.user_id));
        }
        seen.len()
    };
    let untagged = view.untagged_users.len();
    let t = settings.locale.report();
    let mut centers = String::new();
    for (cc, r) in view.cost_centers_by_cost().into_iter().take(settings.top) {
        let name = match (cc.is_empty(), settings.locale) {
            (false, _) => cc,
            (true, _) => t.untagged,
        };
        centers.push_str(&format!(
            "- {name}: {} ({} {})\n",
            money(r.total_usd),
            r.users,
            match settings.locale {
                Locale::En => "users",
                Locale::ZhCn => "位用户",
            }
        ));
    }
    let mut items: Vec<_> = savings.recommendations.iter().collect();
    items.sort_by_key(|r| std::cmp::Reverse(r.saving_usd));
    let mut top_savings = String::new();
    for r in items.into_iter().take(settings.top) {
        let to = if r.recommended_plan.is_empty() {
            t.cancel.to_owned()
        } else {
            format!("→ {}", r.recommended_plan)
        };
        top_savings.push_str(&format!(
            "- {} ({}): {} {to}, {} {}\n",
            r.user_id,
            r.reason.as_str(),
            r.plan,
            t.saves,
            money(r.saving_usd)
        ));
    }
    let mut body = format!(
        "**{}**: {period}\n**{}**: {users}\n**{}**: {credits}\n**{}**: {total} ({} {tax})\n**{}**: {overage_users}\n**{}**: {untagged}\n\n**{}**\n{centers}",
        t.period,
        t.users,
        t.credits,
        t.total,
        t.tax_word,
        t.overage_users,
        t.untagged_users,
        t.top_centers,
        period = a.period,
        users = totals.users,
        credits = totals.credits_used.round_dp(0),
        total = money(view.total_cost_usd),
        tax = money(a.tax_usd),
    );
    let per_month = match settings.locale {
        Locale::En => format!("{} {}", money(savings.total_usd), t.a_month),
        Locale::ZhCn => format!("{} {}", t.a_month, money(savings.total_usd)),
    };
    body.push_str(&format!(
        "\n**{}**: {per_month} ({} {})\n{top_savings}",
        t.savings, savings.idle_seats, t.idle_seats
    ));
    if let Some(link) = link {
        body.push_str(&format!(
            "\n{} {}.\n",
            t.link_until,
            link.expires.format("%Y-%m-%d %H:%M UTC")
        ));
    }
    let mut elements = vec![json!({"tag": "markdown", "content": body.trim_end()})];
    if let Some(link) = link {
        elements.push(feishu::link_button(t.download, &link.url));
    }
    if !settings.exporter_url.is_empty() {
        let url = format!(
            "{}/reports/{}",
            settings.exporter_url.trim_end_matches('/'),
            file_name(a.period)
        );
        let text = match settings.locale {
            Locale::En => "Download from the exporter",
            Locale::ZhCn => "从导出器下载",
        };
        elements.push(feishu::link_button(text, &url));
    }
    if !dashboard_url.is_empty() {
        elements.push(feishu::link_button(t.dashboard, dashboard_url));
    }
    feishu::card(&format!("{} {}", t.title, a.period), "blue", elements)
}

/// The card of a month the export has no data for.
pub fn no_data_card(period: BillingPeriod, reason: &str, locale: Locale) -> Value {
    let t = locale.report();
    let lead = match locale {
        Locale::En => format!("No Kiro data for **{period}**: {}", t.no_data),
        Locale::ZhCn => format!("**{period}** {}", t.no_data),
    };
    let body = format!("{lead}\n\n{}", crate::config_error::one_line(reason));
    feishu::card(
        &format!("{} {period}: {}", t.title, t.no_data_title),
        "grey",
        vec![json!({"tag": "markdown", "content": body})],
    )
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
) -> Result<Written, ReportError> {
    let bytes = csv_in(view, people, settings.locale)?;
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

/// State file sections: periods whose report went out, and channels that already have the card
/// of a period not yet delivered everywhere (so a retry sends it only to the others).
const SENT: &str = "reports";
const PARTLY_SENT: &str = "report_channels";
/// The total each sent report showed, to notice a month that changes afterwards.
const SENT_TOTALS: &str = "report_totals";
/// Periods remembered as sent.
const REMEMBERED: usize = 24;

/// The monthly report as `serve` sends it: the previous month, on `report.schedule_day`.
pub struct ReportSink {
    settings: ReportSettings,
    s3: Option<ReportS3>,
    channels: Vec<Arc<Channel>>,
    dashboard_url: String,
    /// Allocates a month that is no longer watched.
    source: Arc<dyn Source>,
    /// Builds the view of such a month as the daemon builds its snapshot (activity, names).
    builder: Arc<SnapshotBuilder>,
    file: Arc<StateFile>,
    sent: BTreeSet<BillingPeriod>,
    partly_sent: BTreeMap<BillingPeriod, BTreeSet<String>>,
    sent_totals: BTreeMap<BillingPeriod, Decimal>,
    telemetry: Arc<crate::telemetry::Telemetry>,
    served: Option<Arc<crate::server::State>>,
}

/// What the report sink needs besides its settings.
pub struct ReportContext {
    /// Where written reports are served (`/reports/`), if anywhere.
    pub served: Option<Arc<crate::server::State>>,
    pub s3: Option<ReportS3>,
    /// Feishu channels the card goes to.
    pub channels: Vec<Arc<Channel>>,
    pub dashboard_url: String,
    pub source: Arc<dyn Source>,
    /// The daemon's snapshot builder, for a month the snapshot no longer holds.
    pub builder: Arc<SnapshotBuilder>,
    pub file: Arc<StateFile>,
    pub telemetry: Arc<crate::telemetry::Telemetry>,
}

impl ReportSink {
    pub fn new(settings: ReportSettings, ctx: ReportContext) -> Self {
        let (sent, problem) = ctx.file.section(SENT);
        let (partly_sent, problem2) = ctx.file.section(PARTLY_SENT);
        let (sent_totals, problem3) = ctx.file.section(SENT_TOTALS);
        for reason in problem.into_iter().chain(problem2).chain(problem3) {
            tracing::error!(file = %ctx.file.path().display(), "state file unusable ({reason}); starting with no reports recorded");
        }
        Self {
            settings,
            s3: ctx.s3,
            channels: ctx.channels,
            dashboard_url: ctx.dashboard_url,
            source: ctx.source,
            builder: ctx.builder,
            file: ctx.file,
            sent,
            partly_sent,
            sent_totals,
            telemetry: ctx.telemetry,
            served: ctx.served,
        }
    }

    /// A month still watched after its report went out (AWS may update it for two weeks) whose
    /// total changed since: logged, counted, and remembered so it is counted once per change.
    async fn notice_revisions(&mut self, snapshot: &Snapshot) {
        let mut changed = false;
        for v in &snapshot.periods {
            let period = v.allocation.period;
            let Some(sent) = self.sent_totals.get(&period).copied() else {
                continue;
            };
            if sent != v.total_cost_usd {
                tracing::warn!(
                    %period,
                    reported_usd = %sent,
                    now_usd = %v.total_cost_usd,
                    "the bill of a month changed after its monthly report was sent; `report --period {period}` writes a corrected CSV"
                );
                self.telemetry.record_closed_revision();
                self.sent_totals.insert(period, v.total_cost_usd);
                changed = true;
            }
        }
        if changed {
            self.save("a revised month's total").await;
        }
    }

    /// Records what was sent in the state file; a failure is counted and logged, and what was
    /// recorded stays in memory for the next save.
    async fn save(&self, what: &str) {
        self.file.put(SENT, &self.sent);
        self.file.put(SENT_TOTALS, &self.sent_totals);
        if self.partly_sent.is_empty() {
            self.file.remove(PARTLY_SENT);
        } else {
            self.file.put(PARTLY_SENT, &self.partly_sent);
        }
        let saved = self.file.save().await;
        self.telemetry.record_state_save(saved.is_ok());
        if let Err(e) = saved {
            tracing::error!(
                "cannot record {what} in the state file; it stays recorded in memory: {e}"
            );
        }
    }
}

#[async_trait]
impl Sink for ReportSink {
    fn name(&self) -> &'static str {
        "report"
    }

    async fn deliver(
        &mut self,
        snapshot: &Snapshot,
        now: DateTime<Utc>,
    ) -> Result<Delivery, SinkError> {
        self.notice_revisions(snapshot).await;
        let day = self.settings.schedule_day;
        if day == 0 || now.day() < day {
            return Ok(Delivery::NotDue);
        }
        let period = BillingPeriod::containing(now).previous();
        if self.sent.contains(&period) {
            return Ok(Delivery::NotDue);
        }
        let wanted = &self.settings.channels;
        let done = self.partly_sent.get(&period).cloned().unwrap_or_default();
        let channels: Vec<&Channel> = self
            .channels
            .iter()
            .map(Arc::as_ref)
            .filter(|c| {
                (wanted.is_empty() || wanted.iter().any(|w| w == c.name()))
                    && !done.contains(c.name())
            })
            .collect();
        let built;
        let (view, people) = match snapshot.period(period) {
            Some(v) => (v, &snapshot.people),
            // Built as the daemon builds its snapshot: with the activity report and names.
            None => match self.source.allocate(period).await {
                Ok(allocation) => {
                    built = self.builder.build(now, vec![allocation]).await.snapshot;
                    match built.periods.first() {
                        Some(v) => (v, &built.people),
                        None => return Ok(Delivery::NotDue),
                    }
                }
                // The export has no such month: say so rather than stay silent.
                Err(e) if e.kind() == FailureKind::NoData => {
                    let card = no_data_card(period, &e.to_string(), self.settings.locale);
                    for ch in &channels {
                        if let Err(e) = ch.send(&card).await {
                            // The channels that have it are not sent it again.
                            self.save("the report's deliveries").await;
                            return Err(SinkError::new(
                                FailureKind::Delivery,
                                format!("monthly report for {period}: the no-data card: {e}"),
                            ));
                        }
                        self.partly_sent
                            .entry(period)
                            .or_default()
                            .insert(ch.name().to_owned());
                    }
                    self.partly_sent.remove(&period);
                    self.sent.insert(period);
                    self.save("the report").await;
                    tracing::info!(%period, "no Kiro data for the month; a no-data card was sent");
                    return Ok(Delivery::Done);
                }
                Err(e) => {
                    return Err(SinkError::new(
                        e.kind(),
                        format!("monthly report for {period}: cannot allocate the month: {e}"),
                    ));
                }
            },
        };
        match run(
            view,
            people,
            &self.settings,
            self.s3.as_ref(),
            &channels,
            &self.dashboard_url,
        )
        .await
        {
            Ok(out) => {
                if let Some(state) = &self.served {
                    state.put_report(&file_name(period), out.csv.clone());
                }
                self.sent.insert(period);
                self.sent_totals.insert(period, view.total_cost_usd);
                self.partly_sent.remove(&period);
                while self.sent.len() > REMEMBERED {
                    self.sent.pop_first();
                }
                while self.sent_totals.len() > REMEMBERED {
                    self.sent_totals.pop_first();
                }
                self.save("the report").await;
                // Logged once recorded, so whoever reads the line finds the state file saying so.
                tracing::info!(%period, path = %out.path.display(), uploaded = out.link.is_some(), cards = out.cards_sent, "monthly report sent");
                Ok(Delivery::Done)
            }
            Err(e) => {
                if let ReportError::Undelivered { delivered, .. } = &e
                    && !delivered.is_empty()
                {
                    // Recorded so that the retry does not send these channels the card again.
                    self.partly_sent
                        .entry(period)
                        .or_default()
                        .extend(delivered.iter().cloned());
                    self.save("the report's deliveries").await;
                }
                Err(SinkError {
                    kind: e.kind(),
                    message: format!(
                        "monthly report for {period} failed; retried at the next refresh for the channels that lack it: {e}"
                    ),
                })
            }
        }
    }
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
