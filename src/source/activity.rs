//! The Kiro user activity report: what people really use, next to what the bill says.
//!
//! Kiro writes it daily (when enabled in the Kiro console), about 02:00 UTC for the day before,
//! under `<path>/AWSLogs/<account>/KiroLogs/user_report/<region>/<yyyy>/<mm>/<dd>/00/` as
//! `KIRO_{IDE|CLI}_<account>_user_report_<yyyymmdd>0000*.csv` (split into parts above 1,000
//! users). Columns begin `Date,UserId,Client_Type,Chat_Conversations,Credits_Used,Overage_Cap,
//! Overage_Credits_Used,Overage_Enabled,ProfileId,Subscription_Tier,Total_Messages,New_User,
//! User_Email` and go on with per-model message columns, which are ignored. Ids may be quoted;
//! `User_Email` is not always filled. AWS's own Kiro dashboard reads it because in-plan credit
//! use does not always produce a billing record: "no credits lines" is not "unused".
//!
//! Reads are incremental: a day's file is parsed once and again only when its size or
//! modification time changes. A malformed file is named in one line, skipped and counted;
//! it never stops a refresh.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::config_error::ConfigError;
use crate::period::BillingPeriod;

/// `[activity]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActivitySettings {
    /// The folder that holds `AWSLogs/` (a local copy of the report's S3 prefix); empty = off.
    pub path: String,
}

impl ActivitySettings {
    /// The activity of `period` when the report is configured, read on a blocking thread (for
    /// one-shot commands; the daemon keeps an [`ActivityReader`] across refreshes).
    pub async fn read_once(&self, period: BillingPeriod) -> Option<Activity> {
        if self.path.is_empty() {
            return None;
        }
        let reader = ActivityReader::new(&self.path);
        tokio::task::spawn_blocking(move || reader.read(period))
            .await
            .ok()
    }

    /// Checks values (no I/O); errors name the key under `activity`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.path.starts_with("s3://") {
            return Err(ConfigError::key(
                "activity.path",
                "reading the activity report from S3 is not supported yet: sync the prefix to a folder and name the folder",
            ));
        }
        Ok(())
    }
}

/// One user's use in a billing period, summed over days and clients.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserActivity {
    pub credits_used: Decimal,
    pub overage_credits_used: Decimal,
    /// Messages by client type (`IDE`, `CLI`).
    pub messages: BTreeMap<String, i64>,
    /// The last day with any use, at its start (UTC).
    pub last_active: Option<DateTime<Utc>>,
    /// The latest overage cap and switch the report gave.
    pub overage_cap: Option<Decimal>,
    pub overage_enabled: Option<bool>,
    pub tier: String,
    /// One e-mail per user: the latest non-empty one.
    pub email: String,
}

/// The activity of a billing period, per seat (account, region, user): the report is written
/// per account and region, as Kiro profiles are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Activity {
    pub users: BTreeMap<(String, String, String), UserActivity>,
    /// The newest day the report covers (its end).
    pub as_of: Option<DateTime<Utc>>,
    /// Files that could not be read this time, by path.
    pub malformed: Vec<PathBuf>,
}

/// One parsed row.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    date: NaiveDate,
    user: String,
    client: String,
    credits: Decimal,
    overage_credits: Decimal,
    overage_cap: Option<Decimal>,
    overage_enabled: Option<bool>,
    tier: String,
    messages: i64,
    email: String,
}

/// Columns the report must have.
const REQUIRED: &[&str] = &["Date", "UserId", "Client_Type", "Credits_Used"];

fn clean(v: &str) -> String {
    v.trim()
        .trim_matches(|c| c == '"' || c == '\'')
        .trim()
        .to_owned()
}

/// Parses one report file. An error names what is wrong.
fn parse(bytes: &[u8]) -> Result<Vec<Row>, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut r = csv::ReaderBuilder::new()
        .flexible(false)
        .from_reader(text.as_bytes());
    let header: Vec<String> = r
        .headers()
        .map_err(|e| format!("no header: {e}"))?
        .iter()
        .map(clean)
        .collect();
    let at = |name: &str| header.iter().position(|h| h.eq_ignore_ascii_case(name));
    for c in REQUIRED {
        if at(c).is_none() {
            return Err(format!("no column {c}"));
        }
    }
    let col = |name: &str| at(name);
    let (date, user, client, credits) = (
        col("Date").unwrap_or(0),
        col("UserId").unwrap_or(0),
        col("Client_Type").unwrap_or(0),
        col("Credits_Used").unwrap_or(0),
    );
    let (over, cap, enabled, tier, msgs, email) = (
        col("Overage_Credits_Used"),
        col("Overage_Cap"),
        col("Overage_Enabled"),
        col("Subscription_Tier"),
        col("Total_Messages"),
        col("User_Email"),
    );
    let mut rows = Vec::new();
    for (i, rec) in r.records().enumerate() {
        let line = i + 2;
        let rec = rec.map_err(|e| format!("line {line}: {e}"))?;
        let get = |c: usize| rec.get(c).map(clean).unwrap_or_default();
        let opt = |c: Option<usize>| c.map(get).filter(|v| !v.is_empty());
        let dec = |v: String, what: &str| -> Result<Decimal, String> {
            if v.is_empty() {
                return Ok(Decimal::ZERO);
            }
            v.parse::<Decimal>()
                .or_else(|_| Decimal::from_scientific(&v))
                .map_err(|_| format!("line {line}: {what} {v:?} is not a number"))
        };
        let d = get(date);
        let date = NaiveDate::parse_from_str(&d, "%Y-%m-%d")
            .or_else(|_| NaiveDate::parse_from_str(&d, "%Y%m%d"))
            .map_err(|_| format!("line {line}: Date {d:?} is not a date"))?;
        rows.push(Row {
            date,
            user: get(user),
            client: get(client),
            credits: dec(get(credits), "Credits_Used")?,
            overage_credits: dec(opt(over).unwrap_or_default(), "Overage_Credits_Used")?,
            overage_cap: opt(cap).map(|v| dec(v, "Overage_Cap")).transpose()?,
            overage_enabled: opt(enabled).map(|v| v.eq_ignore_ascii_case("true") || v == "1"),
            tier: opt(tier).unwrap_or_default(),
            messages: opt(msgs)
                .and_then(|v| v.parse::<f64>().ok())
                .map_or(0, |v| v as i64),
            email: opt(email).unwrap_or_default(),
        });
    }
    Ok(rows)
}

/// A file's (size, modification time) when it was parsed, and its rows.
type Parsed = ((u64, SystemTime), std::sync::Arc<Vec<Row>>);

/// Reads the activity report of a folder, remembering what it parsed.
#[derive(Debug)]
pub struct ActivityReader {
    root: PathBuf,
    /// Per file: (size, modified) when parsed, and its rows.
    cache: Mutex<HashMap<PathBuf, Parsed>>,
}

/// `<root>/AWSLogs/<account>/KiroLogs/user_report/<region>/<yyyy>/<mm>/<dd>/00/*.csv` of one
/// month: (account, region, file).
fn month_files(root: &Path, period: BillingPeriod) -> Vec<(String, String, PathBuf)> {
    let mut out = Vec::new();
    let list = |p: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(p)
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    let ym = period.to_string();
    let (year, month) = ym.split_once('-').unwrap_or((&ym, ""));
    for account in list(&root.join("AWSLogs")) {
        let Some(id) = account
            .file_name()
            .and_then(|n| n.to_str())
            .map(str::to_owned)
        else {
            continue;
        };
        for region in list(&account.join("KiroLogs").join("user_report")) {
            let Some(name) = region
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_owned)
            else {
                continue;
            };
            for day in list(&region.join(year).join(month)) {
                for f in list(&day.join("00")) {
                    if f.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")) {
                        out.push((id.clone(), name.clone(), f));
                    }
                }
            }
        }
    }
    out.sort();
    out
}

impl ActivityReader {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The activity of `period`. Blocking: call it off the async runtime.
    #[allow(clippy::disallowed_methods)]
    pub fn read(&self, period: BillingPeriod) -> Activity {
        let mut out = Activity::default();
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (account, region, file) in month_files(&self.root, period) {
            let Ok(meta) = std::fs::metadata(&file) else {
                continue;
            };
            let stamp = (
                meta.len(),
                meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            );
            let rows = match cache.get(&file) {
                Some((s, rows)) if *s == stamp => rows.clone(),
                _ => {
                    let parsed = std::fs::read(&file)
                        .map_err(|e| e.to_string())
                        .and_then(|b| parse(&b));
                    match parsed {
                        Ok(rows) => {
                            let rows = std::sync::Arc::new(rows);
                            cache.insert(file.clone(), (stamp, rows.clone()));
                            rows
                        }
                        Err(reason) => {
                            tracing::warn!(file = %file.display(), "activity report file skipped: {reason}");
                            cache.remove(&file);
                            out.malformed.push(file);
                            continue;
                        }
                    }
                }
            };
            for r in rows.iter() {
                if BillingPeriod::containing(r.date.and_time(chrono::NaiveTime::MIN).and_utc())
                    != period
                    || r.user.is_empty()
                {
                    continue;
                }
                let day = r.date.and_time(chrono::NaiveTime::MIN).and_utc();
                out.as_of = out.as_of.max(Some(day + chrono::Duration::days(1)));
                let u = out
                    .users
                    .entry((account.clone(), region.clone(), r.user.clone()))
                    .or_default();
                u.credits_used += r.credits;
                u.overage_credits_used += r.overage_credits;
                *u.messages.entry(r.client.clone()).or_default() += r.messages;
                let used = r.credits > Decimal::ZERO || r.messages > 0;
                if used {
                    u.last_active = u.last_active.max(Some(day));
                }
                if u.last_active.is_none_or(|t| day >= t) || u.tier.is_empty() {
                    if r.overage_cap.is_some() {
                        u.overage_cap = r.overage_cap;
                    }
                    if r.overage_enabled.is_some() {
                        u.overage_enabled = r.overage_enabled;
                    }
                    if !r.tier.is_empty() {
                        u.tier = r.tier.clone();
                    }
                }
                if !r.email.is_empty() {
                    u.email = r.email.clone();
                }
            }
        }
        // Files gone from disk are forgotten.
        cache.retain(|p, _| p.exists());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_parse_with_quotes_missing_emails_and_unknown_columns() {
        let csv = "Date,UserId,Client_Type,Chat_Conversations,Credits_Used,Overage_Cap,Overage_Credits_Used,Overage_Enabled,ProfileId,Subscription_Tier,Total_Messages,New_User,User_Email,claude_sonnet_messages,Future_Column\n\
                   2026-10-03,\"9067d4b8-1234\",IDE,2,12.5,1000,0,true,p-1,PRO_MAX,7,false,,7,x\n";
        let rows = parse(csv.as_bytes()).unwrap();
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(
            (r.user.as_str(), r.client.as_str(), r.tier.as_str()),
            ("9067d4b8-1234", "IDE", "PRO_MAX")
        );
        assert_eq!(r.credits, Decimal::new(125, 1));
        assert_eq!(
            (r.messages, r.email.as_str(), r.overage_enabled),
            (7, "", Some(true))
        );
        let e = parse(b"Date,UserId\n2026-10-03,u\n").unwrap_err();
        assert!(e.contains("Client_Type"), "{e}");
        let e = parse(b"Date,UserId,Client_Type,Credits_Used\n2026-10-03,u,IDE,1\n2026-10-0")
            .unwrap_err();
        assert!(e.contains("line 3"), "{e}");
    }
}
