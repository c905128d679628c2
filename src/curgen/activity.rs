//! A Kiro user activity report to go with a generated export, for the demo and the tests.
//!
//! It follows the layout and columns Kiro writes (see [`crate::source::activity`]): one file a
//! day per account, region and client (`KIRO_IDE`, `KIRO_CLI`, `PLUGIN`), split into parts
//! above 1,000 users, ids quoted in one account's files and written as `d-<identity store>.<id>`
//! in another region's, e-mails missing for some users, the seat's tier as the report spells it
//! (`PRO_PLUS`), profile ids as ARNs. Overage is on in a profile whose bill charges overage:
//! there `Overage_Credits_Used` is the day's overage and no cap is written; where it is off,
//! `Overage_Enabled` is `false` and `Overage_Cap` holds the preset Kiro fills in (the plan's
//! credits, 2,500 on Pro Max), which caps nothing. Each profile also shows one user on the
//! `FREE` tier, whom the bill never names. Each seat's daily credits are those of its credits
//! lines in the bill; some seats the bill shows no credits for used Kiro inside their plan all the same
//! (AWS's own Kiro dashboard: in-plan use does not always produce a billing record). Only days
//! that have ended are written: Kiro writes a day's report after it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use chrono::{DateTime, Datelike, NaiveDate, Utc};

use super::CurLine;
use crate::period::BillingPeriod;

/// Rows per file before a new part is started.
pub const ROWS_PER_PART: usize = 1_000;

/// The identity store whose id prefixes some report rows (`d-<store>.<id>`).
pub const STORE: &str = "d-9067640ef1";

/// One row of the report: its 13 named columns.
type ReportRow = [String; 13];

/// The report's files: (account, region, client, day) → rows.
type Files = BTreeMap<(String, String, &'static str, NaiveDate), Vec<ReportRow>>;

/// A seat in a month: (period, account, region, user).
type SeatMonth = (BillingPeriod, String, String, String);

/// What the report needs of the bill, gathered line by line.
#[derive(Debug, Default)]
pub struct ActivityLog {
    /// (period, account, region, user) → day → (credits, overage credits).
    seats: BTreeMap<SeatMonth, BTreeMap<NaiveDate, (f64, f64)>>,
    /// Accounts whose bill charges overage: overage is on in their profiles.
    overage_on: BTreeSet<String>,
    /// (period, account, region, user) → the report's spelling of the seat's tier.
    tiers: BTreeMap<SeatMonth, &'static str>,
    /// Days from this one on have not ended yet: not written.
    until: Option<NaiveDate>,
}

/// The report's spelling of a plan from the usage type's suffix.
fn tier(usage_type: &str) -> Option<&'static str> {
    Some(match usage_type.rsplit('-').next()? {
        "Pro" => "PRO",
        "ProPlus" => "PRO_PLUS",
        "ProMax" => "PRO_MAX",
        "Power" => "POWER",
        _ => return None,
    })
}

/// The credits a tier includes, as `Usage_Limit` gives them; none on the free tier, whose
/// rows leave it (and the overage cap) empty.
fn allowance(tier: &str) -> Option<u32> {
    Some(match tier {
        "PRO_PLUS" => 2_000,
        "PRO_MAX" => 5_000,
        "POWER" => 10_000,
        "FREE" => return None,
        _ => 1_000,
    })
}

/// Tiers from the lowest to the highest.
const TIERS: [&str; 4] = ["PRO", "PRO_PLUS", "PRO_MAX", "POWER"];

/// The higher of two tiers.
fn higher(a: &'static str, b: &'static str) -> &'static str {
    let rank = |t: &str| TIERS.iter().position(|x| *x == t);
    if rank(b) > rank(a) { b } else { a }
}

/// The client a user works in: some in the CLI, a few in an IDE plugin, most in the IDE.
fn client(user: &str) -> &'static str {
    match draw(user, 5) {
        d if d < 0.2 => "KIRO_CLI",
        d if d < 0.3 => "PLUGIN",
        _ => "KIRO_IDE",
    }
}

/// What Kiro writes as `Overage_Cap` for a tier while overage is off: a preset, not a cap
/// (shared/facts: said to be the plan's credits; a real Pro Max row showed 2,500).
fn preset_cap(tier: &str) -> Option<u32> {
    if tier == "PRO_MAX" {
        Some(2_500)
    } else {
        allowance(tier)
    }
}

fn user_of(l: &CurLine) -> Option<&str> {
    let id = if l.user_identifier.is_empty() {
        &l.resource_id
    } else {
        &l.user_identifier
    };
    id.rsplit_once("user/").map(|(_, u)| u)
}

/// A stable pseudo-random number in [0, 1) for a user id (seat choices that do not depend on
/// the order lines arrive in).
fn draw(user: &str, salt: u64) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ salt;
    for b in user.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Given names and family names the synthetic people are made of.
const GIVEN: &[&str] = &[
    "Ada", "Bo", "Chen", "Dana", "Emil", "Fatima", "Goro", "Hana", "Ivan", "Jia", "Kofi", "Lena",
    "Mateo", "Nadia", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tariq", "Uma", "Viktor", "Wei",
    "Ximena", "Yusuf", "Zoe",
];
const FAMILY: &[&str] = &[
    "Andersen", "Baker", "Costa", "Dubois", "Eriksson", "Fischer", "Garcia", "Hoffmann", "Ito",
    "Jensen", "Kowalski", "Li", "Moreau", "Nakamura", "Okafor", "Petrov", "Rossi", "Silva",
    "Tanaka", "Ueda", "Varga", "Wang", "Yilmaz", "Zhang",
];

/// A synthetic person: user name, display name and e-mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synthetic {
    pub user_name: String,
    pub display_name: String,
    pub email: String,
}

/// One user's day, as a report row is made of it.
struct Row<'a> {
    day: NaiveDate,
    id: &'a str,
    client: &'static str,
    credits: f64,
    overage: f64,
    overage_on: bool,
    tier: &'a str,
    email: &'a str,
}

impl Row<'_> {
    /// Adds the row to its file: the profile's (`account`, `region`) report of its client and day.
    fn add_to(&self, files: &mut Files, account: &str, region: &str) {
        files
            .entry((account.to_owned(), region.to_owned(), self.client, self.day))
            .or_default()
            .push(self.record(account, region));
    }

    fn record(&self, account: &str, region: &str) -> ReportRow {
        let round = |v: f64| (v * 100.0).round() / 100.0;
        let (credits, overage) = (round(self.credits), round(self.overage));
        let cap = (!self.overage_on)
            .then(|| preset_cap(self.tier))
            .flatten()
            .map(|c| format!("{c}.0"))
            .unwrap_or_default();
        [
            self.day.format("%Y-%m-%d").to_string(),
            self.id.to_owned(),
            self.client.to_owned(),
            "1".to_owned(),
            format!("{credits}"),
            cap,
            format!("{overage}"),
            self.overage_on.to_string(),
            format!("arn:aws:codewhisperer:{region}:{account}:profile/KIROPROFILE01"),
            self.tier.to_owned(),
            format!("{}", (credits / 2.0).ceil() as i64),
            "false".to_owned(),
            self.email.to_owned(),
        ]
    }
}

/// One user on the `FREE` tier per profile, on the profile's first two report days of each
/// month (days the report already holds, so only days that have ended): the report shows
/// them, the bill never does.
fn free_users(files: &mut Files) {
    let mut days: BTreeMap<(String, String, (i32, u32)), BTreeSet<NaiveDate>> = BTreeMap::new();
    for (account, region, _, day) in files.keys() {
        let month = (day.year(), day.month());
        days.entry((account.clone(), region.clone(), month))
            .or_default()
            .insert(*day);
    }
    for ((account, region, _), days) in days {
        let id = format!("f7ee0000-0000-4000-8000-{account}");
        for day in days.into_iter().take(2) {
            let row = Row {
                day,
                id: &id,
                client: "KIRO_IDE",
                credits: 12.5,
                overage: 0.0,
                overage_on: false,
                tier: "FREE",
                email: "",
            };
            row.add_to(files, &account, &region);
        }
    }
}

impl ActivityLog {
    /// A log whose report stops before `until`'s day (a month to date), or covers whole months.
    pub fn until(until: Option<DateTime<Utc>>) -> Self {
        Self {
            until: until.map(|t| t.date_naive()),
            ..Self::default()
        }
    }

    /// A synthetic name for every user, stable for a user id and unique: the first user (by id)
    /// to draw a name gets it plain, later ones get a number.
    pub fn people(&self) -> BTreeMap<String, Synthetic> {
        let mut used: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        let mut out = BTreeMap::new();
        for (_, _, _, user) in self.seats.keys() {
            if out.contains_key(user) {
                continue;
            }
            let pick = |list: &[&'static str], salt| {
                list[((draw(user, salt) * list.len() as f64) as usize).min(list.len() - 1)]
            };
            let (given, family) = (pick(GIVEN, 3), pick(FAMILY, 4));
            let base = format!("{}.{}", given, family).to_ascii_lowercase();
            let n = used.entry(base.clone()).or_default();
            *n += 1;
            let user_name = if *n == 1 { base } else { format!("{base}{n}") };
            out.insert(
                user.clone(),
                Synthetic {
                    email: format!("{user_name}@example.com"),
                    user_name,
                    display_name: format!("{given} {family}"),
                },
            );
        }
        out
    }

    /// Writes the people as a directory file (`identity.directory`): `user_id`, `user_name`,
    /// `display_name`, `email`.
    pub fn write_directory(&self, path: &Path) -> Result<(), csv::Error> {
        let mut w = csv::Writer::from_path(path)?;
        w.write_record(["user_id", "user_name", "display_name", "email"])?;
        for (id, p) in self.people() {
            w.write_record([&id, &p.user_name, &p.display_name, &p.email])?;
        }
        w.flush()?;
        Ok(())
    }

    /// Notes a generated line: seats and their credits.
    pub fn observe(&mut self, l: &CurLine) {
        if l.product_code != "Kiro" || l.region.is_empty() {
            return;
        }
        let Some(user) = user_of(l) else { return };
        let key = (
            l.period,
            l.account_id.clone(),
            l.region.to_owned(),
            user.to_owned(),
        );
        if l.operation == "monthly-subscription"
            && let Some(t) = tier(&l.usage_type)
        {
            // The highest tier billed in the month, as the month is re-rated on an upgrade.
            let e = self.tiers.entry(key.clone()).or_insert(t);
            *e = higher(e, t);
        }
        let days = self.seats.entry(key).or_default();
        if l.line_type == "Usage" && l.operation == "Credits" {
            let day = days.entry(l.usage_start.date_naive()).or_default();
            day.0 += l.usage_amount;
            if l.unblended_cost > 0.0 {
                // Priced per credit: the line's overage credits.
                day.1 += l.unblended_cost / super::OVERAGE_USD_PER_CREDIT;
                self.overage_on.insert(l.account_id.clone());
            }
        }
    }

    /// The report's rows per file.
    fn files(&self) -> Files {
        let mut files = Files::new();
        let people = self.people();
        let ended = |day: &NaiveDate| self.until.is_none_or(|u| *day < u);
        let prefixed_region = self.seats.keys().map(|k| k.2.as_str()).max();
        for (key, days) in &self.seats {
            let (period, account, region, user) = key;
            let mut days = days.clone();
            // In-plan use the bill did not show: a third of the seats without credits lines.
            if days.is_empty() && draw(user, 1) < 1.0 / 3.0 {
                for d in [3, 4] {
                    if let Some(day) =
                        NaiveDate::from_ymd_opt(period.start().year(), period.start().month(), d)
                    {
                        days.insert(day, (20.0, 0.0));
                    }
                }
            }
            let email = match people.get(user) {
                Some(p) if draw(user, 2) >= 0.15 => p.email.clone(),
                _ => String::new(),
            };
            // One region's report writes ids with the identity store's prefix.
            let id = if Some(region.as_str()) == prefixed_region {
                format!("{STORE}.{user}")
            } else {
                user.clone()
            };
            let tier = self.tiers.get(key).copied().unwrap_or("PRO");
            let client = client(user);
            let overage_on = self.overage_on.contains(account);
            for (day, (credits, overage)) in days.into_iter().filter(|(d, _)| ended(d)) {
                let row = Row {
                    day,
                    id: &id,
                    client,
                    credits,
                    overage,
                    overage_on,
                    tier,
                    email: &email,
                };
                row.add_to(&mut files, account, region);
            }
        }
        free_users(&mut files);
        files
    }

    /// Writes the report under `dir` (the folder that then holds `AWSLogs/`).
    pub fn write(&self, dir: &Path) -> std::io::Result<usize> {
        let files = self.files();
        let first_account = files.keys().next().map(|k| k.0.clone());
        let mut written = 0;
        for ((account, region, client, day), rows) in files {
            let folder = dir
                .join("AWSLogs")
                .join(&account)
                .join("KiroLogs/user_report")
                .join(&region)
                .join(day.format("%Y/%m/%d").to_string())
                .join("00");
            std::fs::create_dir_all(&folder)?;
            for (part, chunk) in rows.chunks(ROWS_PER_PART).enumerate() {
                let suffix = if part == 0 {
                    String::new()
                } else {
                    format!("_part{}", part + 1)
                };
                let name = format!(
                    "{client}_{account}_user_report_{}0000{suffix}.csv",
                    day.format("%Y%m%d")
                );
                let quote = if first_account.as_deref() == Some(account.as_str()) {
                    csv::QuoteStyle::Always
                } else {
                    csv::QuoteStyle::Necessary
                };
                let mut w = csv::WriterBuilder::new()
                    .quote_style(quote)
                    .from_path(folder.join(name))?;
                // Newer files carry the plan's allowance: the second account's, here.
                let limit = first_account.as_deref() != Some(account.as_str());
                let mut header = vec![
                    "Date",
                    "UserId",
                    "Client_Type",
                    "Chat_Conversations",
                    "Credits_Used",
                    "Overage_Cap",
                    "Overage_Credits_Used",
                    "Overage_Enabled",
                    "ProfileId",
                    "Subscription_Tier",
                    "Total_Messages",
                    "New_User",
                    "User_Email",
                    "claude_sonnet_4_messages",
                ];
                if limit {
                    header.push("Usage_Limit");
                }
                w.write_record(&header)?;
                for r in chunk {
                    let allowance =
                        limit.then(|| allowance(&r[9]).map(|a| a.to_string()).unwrap_or_default());
                    w.write_record(
                        r.iter()
                            .map(String::as_str)
                            .chain([r[10].as_str()])
                            .chain(allowance.as_deref()),
                    )?;
                }
                w.flush()?;
                written += 1;
            }
        }
        Ok(written)
    }
}
