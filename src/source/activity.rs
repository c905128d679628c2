//! The Kiro user activity report: what people really use, next to what the bill says.
//!
//! Kiro writes it daily (when enabled in the Kiro console), about 02:00 UTC for the day before,
//! under `<path>/AWSLogs/<account>/KiroLogs/user_report/<region>/<yyyy>/<mm>/<dd>/00/` as
//! `KIRO_{IDE|CLI}_<account>_user_report_<yyyymmdd>0000*.csv` (split into parts above 1,000
//! users). Columns begin `Date,UserId,Client_Type,Chat_Conversations,Credits_Used,Overage_Cap,
//! Overage_Credits_Used,Overage_Enabled,ProfileId,Subscription_Tier,Total_Messages,New_User,
//! User_Email` and go on with per-model message columns, which are ignored. Ids may be quoted;
//! `User_Email` is not always filled. Newer files carry `Usage_Limit`, the credits the user's
//! plan includes: where present it is the seat's allowance, in place of the plan table's. AWS's own Kiro dashboard reads it because in-plan credit
//! use does not always produce a billing record: "no credits lines" is not "unused".
//!
//! Reads are incremental: a day's file is parsed once and again only when its size or
//! modification time changes. A malformed file is named in one line, skipped and counted;
//! it never stops a refresh.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::config_error::ConfigError;
use crate::period::BillingPeriod;

/// The IAM actions reading the activity report from S3 takes (`deploy/iam/activity-report.json`).
pub const IAM_ACTIONS: &[&str] = &["s3:ListBucket", "s3:GetObject"];

/// `[activity]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActivitySettings {
    /// The folder or `s3://bucket/prefix/` that holds `AWSLogs/`; empty = off.
    pub path: String,
}

impl ActivitySettings {
    /// A reader of the configured report, or `None` when it is off. An `s3://` path is read
    /// with the S3 client of `aws`.
    pub async fn reader(&self, aws: &crate::aws::AwsContext) -> Option<ActivityReader> {
        if self.path.is_empty() {
            return None;
        }
        match crate::aws::S3Location::parse(&self.path) {
            Ok(location) if self.path.starts_with("s3://") => {
                Some(ActivityReader::s3(aws.s3_client().await, location))
            }
            _ => Some(ActivityReader::new(&self.path)),
        }
    }

    /// The activity of `period` when the report is configured (for one-shot commands; the
    /// daemon keeps an [`ActivityReader`] across refreshes).
    pub async fn read_once(
        &self,
        aws: &crate::aws::AwsContext,
        period: BillingPeriod,
    ) -> Option<Activity> {
        Some(self.reader(aws).await?.read(period).await)
    }

    /// Checks values (no I/O); errors name the key under `activity`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.path.starts_with("s3://") {
            crate::aws::S3Location::validate_setting("activity.path", &self.path)?;
        }
        Ok(())
    }
}

/// One user's use in a billing period, summed over days and clients.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserActivity {
    pub credits_used: Decimal,
    pub overage_credits_used: Decimal,
    /// Messages by client type as Kiro writes it (`KIRO_IDE`, `KIRO_CLI`, `PLUGIN`).
    pub messages: BTreeMap<String, i64>,
    /// The last day with any use, at its start (UTC).
    pub last_active: Option<DateTime<Utc>>,
    /// The latest overage cap and switch the report gave.
    pub overage_cap: Option<Decimal>,
    pub overage_enabled: Option<bool>,
    pub tier: String,
    /// One e-mail per user: the latest non-empty one.
    pub email: String,
    /// The latest `Usage_Limit` the report gave: the credits the user's plan includes.
    pub usage_limit: Option<Decimal>,
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
    /// What each seat used in the trailing [`TRAILING_DAYS`] days, across months (a running
    /// month's, when the report reaches back that far).
    pub trailing: Option<Trailing>,
}

/// The days of the trailing window recommendations are decided from.
pub const TRAILING_DAYS: u32 = 30;

/// Credits each seat used in the [`TRAILING_DAYS`] days to the report's newest day, whatever
/// months they fall in. Only accounts and regions whose report reaches back to `from` and up
/// to `to` count: a seat of a report started last week has no window yet.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trailing {
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// Per seat (account, region, user) with rows in the window.
    pub credits: BTreeMap<(String, String, String), Decimal>,
    /// The accounts and regions whose report covers the window: their seats without rows
    /// used nothing in it.
    pub covered: std::collections::BTreeSet<(String, String)>,
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
    usage_limit: Option<Decimal>,
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
    let limit = col("Usage_Limit");
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
            user: crate::allocation::user_id::canonical(&get(user)).to_owned(),
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
            usage_limit: opt(limit).map(|v| dec(v, "Usage_Limit")).transpose()?,
        });
    }
    Ok(rows)
}

/// A file's (size, version: modification time or ETag) when it was parsed, and its rows.
/// A file read before: where it was and its version when read, and its rows.
type Parsed = (Entry, std::sync::Arc<Vec<Row>>);

/// One report file: where it is, whose, and its version.
#[derive(Debug, Clone)]
struct Entry {
    /// Path or S3 key.
    key: String,
    account: String,
    region: String,
    /// The month of the folder the file is in.
    period: BillingPeriod,
    stamp: (u64, String),
}

/// Where the report is.
enum Store {
    Local(PathBuf),
    S3 {
        client: aws_sdk_s3::Client,
        location: crate::aws::S3Location,
    },
}

/// Reads the activity report of a folder or an S3 prefix, remembering what it parsed.
pub struct ActivityReader {
    store: Store,
    cache: tokio::sync::Mutex<HashMap<String, Parsed>>,
}

impl std::fmt::Debug for ActivityReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.store {
            Store::Local(p) => write!(f, "ActivityReader({})", p.display()),
            Store::S3 { location, .. } => write!(f, "ActivityReader({location})"),
        }
    }
}

/// `AWSLogs/<account>/KiroLogs/user_report/<region>/<yyyy>/<mm>/<dd>/00/<file>.csv` of
/// `period`, relative to the report's root, as an entry without its version.
fn parse_key(key: String, rel: &str, periods: &[BillingPeriod]) -> Option<Entry> {
    let parts: Vec<&str> = rel.split('/').collect();
    let [
        logs,
        account,
        kiro,
        report,
        region,
        year,
        month,
        _day,
        hour,
        file,
    ] = parts[..]
    else {
        return None;
    };
    let period: BillingPeriod = format!("{year}-{month}").parse().ok()?;
    let ok = logs == "AWSLogs"
        && kiro == "KiroLogs"
        && report == "user_report"
        && hour == "00"
        && periods.contains(&period)
        && file.to_ascii_lowercase().ends_with(".csv");
    ok.then(|| Entry {
        key,
        account: account.to_owned(),
        region: region.to_owned(),
        period,
        stamp: (0, String::new()),
    })
}

/// The local files of `periods` (blocking).
#[allow(clippy::disallowed_methods)]
fn local_entries(root: &Path, periods: &[BillingPeriod]) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut stack = vec![root.join("AWSLogs")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.filter_map(Result::ok) {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let Some(rel) = path
                .strip_prefix(root)
                .ok()
                .map(|r| r.to_string_lossy().replace('\\', "/"))
            else {
                continue;
            };
            let Some(entry) = parse_key(path.display().to_string(), &rel, periods) else {
                continue;
            };
            let Ok(meta) = e.metadata() else { continue };
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            out.push(Entry {
                stamp: (meta.len(), modified.to_string()),
                ..entry
            });
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

impl ActivityReader {
    /// The report in a local folder (the one that holds `AWSLogs/`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            store: Store::Local(root.into()),
            cache: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The report under an S3 prefix (the one that holds `AWSLogs/`).
    pub fn s3(client: aws_sdk_s3::Client, location: crate::aws::S3Location) -> Self {
        Self {
            store: Store::S3 { client, location },
            cache: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    async fn entries(&self, periods: &[BillingPeriod]) -> Result<Vec<Entry>, String> {
        match &self.store {
            Store::Local(root) => {
                let root = root.clone();
                let periods = periods.to_vec();
                tokio::task::spawn_blocking(move || local_entries(&root, &periods))
                    .await
                    .map_err(|e| e.to_string())
            }
            Store::S3 { client, location } => {
                let mut out = Vec::new();
                let mut pages = client
                    .list_objects_v2()
                    .bucket(&location.bucket)
                    .prefix(format!("{}AWSLogs/", location.prefix))
                    .into_paginator()
                    .send();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(|e| {
                        format!(
                            "s3:ListObjectsV2 on {location}AWSLogs/: {}",
                            crate::aws::error_message(&e)
                        )
                    })?;
                    for o in page.contents() {
                        let key = o.key().unwrap_or_default();
                        let rel = &key[location.prefix.len().min(key.len())..];
                        if let Some(entry) = parse_key(key.to_owned(), rel, periods) {
                            out.push(Entry {
                                stamp: (
                                    o.size().unwrap_or(0).max(0) as u64,
                                    o.e_tag().unwrap_or_default().to_owned(),
                                ),
                                ..entry
                            });
                        }
                    }
                }
                Ok(out)
            }
        }
    }

    async fn fetch(&self, key: &str) -> Result<Vec<u8>, String> {
        match &self.store {
            Store::Local(_) => {
                let path = PathBuf::from(key);
                tokio::task::spawn_blocking(move || std::fs::read(path))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())
            }
            Store::S3 { client, location } => {
                let o = client
                    .get_object()
                    .bucket(&location.bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(|e| format!("s3:GetObject: {}", crate::aws::error_message(&e)))?;
                o.body
                    .collect()
                    .await
                    .map(|b| b.into_bytes().to_vec())
                    .map_err(|e| format!("s3:GetObject: {e}"))
            }
        }
    }

    /// The activity of `period`. When the report cannot be listed, what was read before is
    /// used, and the listing error logged.
    pub async fn read(&self, period: BillingPeriod) -> Activity {
        let mut out = Activity::default();
        let mut cache = self.cache.lock().await;
        let entries = match self.entries(&[period]).await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!("cannot list the activity report ({e}); using what was read before");
                let mut cached: Vec<&Parsed> =
                    cache.values().filter(|(e, _)| e.period == period).collect();
                cached.sort_by(|a, b| a.0.key.cmp(&b.0.key));
                for (entry, rows) in cached {
                    fold(&mut out, &entry.account, &entry.region, rows, period);
                }
                return out;
            }
        };
        for entry in &entries {
            let Some(rows) = self.rows(&mut cache, entry, true).await else {
                out.malformed.push(PathBuf::from(&entry.key));
                continue;
            };
            fold(&mut out, &entry.account, &entry.region, &rows, period);
        }
        // Files gone are forgotten (those of other months stay for their own reads).
        let listed: std::collections::HashSet<&str> =
            entries.iter().map(|e| e.key.as_str()).collect();
        cache.retain(|k, (e, _)| listed.contains(k.as_str()) || e.period != period);
        out
    }
}

impl ActivityReader {
    /// The rows of `entry`: as parsed before when its version is the same, else fetched and
    /// parsed now (`None`: it cannot be read, which is logged when `warn`).
    async fn rows(
        &self,
        cache: &mut HashMap<String, Parsed>,
        entry: &Entry,
        warn: bool,
    ) -> Option<std::sync::Arc<Vec<Row>>> {
        if let Some((seen, rows)) = cache.get(&entry.key)
            && seen.stamp == entry.stamp
        {
            return Some(rows.clone());
        }
        match self.fetch(&entry.key).await.and_then(|b| parse(&b)) {
            Ok(rows) => {
                let rows = std::sync::Arc::new(rows);
                cache.insert(entry.key.clone(), (entry.clone(), rows.clone()));
                Some(rows)
            }
            Err(reason) => {
                if warn {
                    tracing::warn!(file = %entry.key, "activity report file skipped: {reason}");
                }
                cache.remove(&entry.key);
                None
            }
        }
    }

    /// What each seat used in the [`TRAILING_DAYS`] days to the report's newest day at `now`,
    /// across months; `None` when no account's report reaches back that far, or the newest
    /// day is more than 3 days old (a report that stopped is no window of now). Files that
    /// cannot be read are left out here; [`Self::read`] names them.
    pub async fn read_trailing(&self, now: DateTime<Utc>) -> Option<Trailing> {
        let today = now.date_naive();
        let mut periods = Vec::new();
        let mut p = BillingPeriod::containing(now - chrono::Duration::days(40));
        while p.start() <= now {
            periods.push(p);
            p = p.next();
        }
        let entries = match self.entries(&periods).await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(
                    "cannot list the activity report ({e}); no trailing window this time"
                );
                return None;
            }
        };
        let mut cache = self.cache.lock().await;
        let mut files = Vec::with_capacity(entries.len());
        for entry in &entries {
            if let Some(rows) = self.rows(&mut cache, entry, false).await {
                files.push((entry, rows));
            }
        }
        drop(cache);
        trailing(&files, today)
    }
}

/// The trailing window of `files` (each with its rows) as of `today`; see
/// [`ActivityReader::read_trailing`].
fn trailing(files: &[(&Entry, std::sync::Arc<Vec<Row>>)], today: NaiveDate) -> Option<Trailing> {
    // The days each account and region's report covers.
    let mut covers: BTreeMap<(&str, &str), (NaiveDate, NaiveDate)> = BTreeMap::new();
    for (e, rows) in files {
        for r in rows.iter().filter(|r| r.date <= today) {
            let c = covers
                .entry((&e.account, &e.region))
                .or_insert((r.date, r.date));
            *c = (c.0.min(r.date), c.1.max(r.date));
        }
    }
    let to = covers.values().map(|c| c.1).max()?;
    if to + chrono::Days::new(3) < today {
        return None;
    }
    let from = to - chrono::Days::new(u64::from(TRAILING_DAYS) - 1);
    // A report that reaches back to `from` and is at most a day behind the newest.
    let covered = |a: &str, r: &str| {
        covers
            .get(&(a, r))
            .is_some_and(|&(first, last)| first <= from && last + chrono::Days::new(1) >= to)
    };
    let mut out = Trailing {
        from,
        to,
        ..Trailing::default()
    };
    // Summed under borrowed keys first: each seat's key is copied once, not once a file.
    let mut per_seat: HashMap<(&str, &str, &str), Decimal> = HashMap::new();
    for (e, rows) in files {
        if !covered(&e.account, &e.region) {
            continue;
        }
        out.covered.insert((e.account.clone(), e.region.clone()));
        for r in rows.iter() {
            if r.date >= from && r.date <= to && !r.user.is_empty() {
                *per_seat
                    .entry((&e.account, &e.region, &r.user))
                    .or_default() += r.credits;
            }
        }
    }
    out.credits = per_seat
        .into_iter()
        .map(|((a, r, u), c)| ((a.to_owned(), r.to_owned(), u.to_owned()), c))
        .collect();
    (!out.covered.is_empty()).then_some(out)
}

/// Adds a file's rows of `period` to `out`.
fn fold(out: &mut Activity, account: &str, region: &str, rows: &[Row], period: BillingPeriod) {
    for r in rows {
        let day = r.date.and_time(chrono::NaiveTime::MIN).and_utc();
        if BillingPeriod::containing(day) != period || r.user.is_empty() {
            continue;
        }
        out.as_of = out.as_of.max(Some(day + chrono::Duration::days(1)));
        out.users
            .entry((account.to_owned(), region.to_owned(), r.user.clone()))
            .or_default()
            .add(r, day);
    }
}

impl UserActivity {
    /// Adds one row of `day`.
    fn add(&mut self, r: &Row, day: DateTime<Utc>) {
        self.credits_used += r.credits;
        self.overage_credits_used += r.overage_credits;
        *self.messages.entry(r.client.clone()).or_default() += r.messages;
        if r.credits > Decimal::ZERO || r.messages > 0 {
            self.last_active = self.last_active.max(Some(day));
        }
        if self.last_active.is_none_or(|t| day >= t) || self.tier.is_empty() {
            if r.overage_cap.is_some() {
                self.overage_cap = r.overage_cap;
            }
            if r.overage_enabled.is_some() {
                self.overage_enabled = r.overage_enabled;
            }
            if r.usage_limit.is_some() {
                self.usage_limit = r.usage_limit;
            }
            if !r.tier.is_empty() {
                self.tier = r.tier.clone();
            }
        }
        if !r.email.is_empty() {
            self.email = r.email.clone();
        }
    }

    /// Adds what `other`, the same person under another spelling of the id, used.
    fn absorb(&mut self, other: Self) {
        let newer = other.last_active > self.last_active;
        self.credits_used += other.credits_used;
        self.overage_credits_used += other.overage_credits_used;
        for (client, n) in other.messages {
            *self.messages.entry(client).or_default() += n;
        }
        if newer || self.tier.is_empty() {
            self.overage_cap = other.overage_cap.or(self.overage_cap);
            self.overage_enabled = other.overage_enabled.or(self.overage_enabled);
            self.usage_limit = other.usage_limit.or(self.usage_limit);
            if !other.tier.is_empty() {
                self.tier = other.tier;
            }
        }
        if !other.email.is_empty() && (newer || self.email.is_empty()) {
            self.email = other.email;
        }
        self.last_active = self.last_active.max(other.last_active);
    }
}

impl Activity {
    /// Credits each tier includes as the report's `Usage_Limit` says, per tier as written: the
    /// value most of the tier's users show (on a tie, the larger). Empty for files without it.
    pub fn allowances(&self) -> BTreeMap<String, Decimal> {
        let mut seen: BTreeMap<&str, BTreeMap<Decimal, usize>> = BTreeMap::new();
        for u in self.users.values() {
            if let Some(limit) = u.usage_limit.filter(|_| !u.tier.is_empty()) {
                *seen.entry(&u.tier).or_default().entry(limit).or_default() += 1;
            }
        }
        seen.into_iter()
            .filter_map(|(tier, counts)| {
                let (limit, _) = counts.into_iter().max_by_key(|&(l, n)| (n, l))?;
                Some((tier.to_owned(), limit))
            })
            .collect()
    }

    /// The same activity keyed by the bill's spelling of each user id: a report user whose id
    /// meets a seat's (account, region, [`join_key`]) takes the seat's id; two spellings of one
    /// user are summed. Users without a seat keep their own id.
    ///
    /// [`join_key`]: crate::allocation::user_id::join_key
    pub fn aligned_to<'a>(
        self,
        seats: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
    ) -> Self {
        use crate::allocation::user_id::join_key;
        let billed: HashMap<(&str, &str, String), &str> = seats
            .into_iter()
            .map(|(a, r, u)| ((a, r, join_key(u)), u))
            .collect();
        let bill_spelling = |a: &str, r: &str, u: String| {
            billed
                .get(&(a, r, join_key(&u)))
                .map_or(u, |b| (*b).to_owned())
        };
        let trailing = self.trailing.map(|t| Trailing {
            credits: t
                .credits
                .into_iter()
                .fold(BTreeMap::new(), |mut m, ((a, r, u), c)| {
                    let u = bill_spelling(&a, &r, u);
                    *m.entry((a, r, u)).or_default() += c;
                    m
                }),
            ..t
        });
        let mut users: BTreeMap<(String, String, String), UserActivity> = BTreeMap::new();
        for ((a, r, u), activity) in self.users {
            let user = bill_spelling(&a, &r, u);
            match users.entry((a, r, user)) {
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(activity);
                }
                std::collections::btree_map::Entry::Occupied(mut e) => e.get_mut().absorb(activity),
            }
        }
        Self {
            users,
            trailing,
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(d: &str) -> NaiveDate {
        d.parse().unwrap()
    }

    fn row(date: &str, user: &str, credits: i64) -> Row {
        Row {
            date: day(date),
            user: user.into(),
            client: "KIRO_IDE".into(),
            credits: Decimal::from(credits),
            overage_credits: Decimal::ZERO,
            overage_cap: None,
            overage_enabled: None,
            tier: "PRO".into(),
            messages: 1,
            email: String::new(),
            usage_limit: None,
        }
    }

    fn entry(region: &str) -> Entry {
        Entry {
            key: format!("k-{region}"),
            account: "1".into(),
            region: region.into(),
            period: "2026-11".parse().unwrap(),
            stamp: (0, String::new()),
        }
    }

    #[test]
    fn the_trailing_window_counts_only_reports_that_reach_back_to_its_start() {
        let (east, west, late) = (entry("us-east-1"), entry("eu-west-1"), entry("ap-south-1"));
        let files = vec![
            // Since September, a day's lag behind the newest region.
            (
                &east,
                std::sync::Arc::new(vec![
                    row("2026-09-30", "a", 500),
                    row("2026-10-04", "a", 7),
                    row("2026-11-01", "a", 3),
                    row("2026-11-01", "b", 0),
                ]),
            ),
            (
                &west,
                std::sync::Arc::new(vec![row("2026-10-01", "c", 1), row("2026-11-02", "c", 2)]),
            ),
            // Started a week ago: no month of use to judge from.
            (
                &late,
                std::sync::Arc::new(vec![row("2026-10-27", "d", 1), row("2026-11-02", "d", 1)]),
            ),
        ];
        let t = trailing(&files, day("2026-11-03")).unwrap();
        assert_eq!((t.from, t.to), (day("2026-10-04"), day("2026-11-02")));
        let seat = |r: &str, u: &str| ("1".to_owned(), r.to_owned(), u.to_owned());
        assert_eq!(
            t.credits,
            BTreeMap::from([
                (seat("us-east-1", "a"), Decimal::from(10)),
                (seat("us-east-1", "b"), Decimal::ZERO),
                (seat("eu-west-1", "c"), Decimal::from(2)),
            ])
        );
        assert!(
            !t.covered
                .contains(&("1".to_owned(), "ap-south-1".to_owned()))
        );
        assert_eq!(t.covered.len(), 2);
        // A report whose newest day is more than 3 days old is no window of now; rows dated
        // after today are not taken as its newest day.
        assert!(trailing(&files, day("2026-11-06")).is_none());
        let future = vec![(&west, std::sync::Arc::new(vec![row("2026-12-25", "c", 9)]))];
        assert!(trailing(&future, day("2026-11-03")).is_none());
    }

    #[test]
    fn rows_parse_with_quotes_missing_emails_and_unknown_columns() {
        let csv = "Date,UserId,Client_Type,Chat_Conversations,Credits_Used,Overage_Cap,Overage_Credits_Used,Overage_Enabled,ProfileId,Subscription_Tier,Total_Messages,New_User,User_Email,claude_sonnet_messages,Future_Column\n\
                   2026-10-03,\"9067d4b8-1234\",KIRO_IDE,2,12.5,1000,0,true,p-1,PRO_MAX,7,false,,7,x\n";
        let rows = parse(csv.as_bytes()).unwrap();
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(
            (r.user.as_str(), r.client.as_str(), r.tier.as_str()),
            ("9067d4b8-1234", "KIRO_IDE", "PRO_MAX")
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
