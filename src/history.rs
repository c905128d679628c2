//! History: closed months, allocated once and kept, so trends and seat tenure do not depend on
//! how long Prometheus has been scraping.
//!
//! Each closed month within `history.months` of now is allocated once (newest first, one at a
//! time after a refresh has published, so a first start is not held up by a year of scans)
//! and summed into a
//! [`MonthRecord`]: the bill's total, the cost per cost center, and per seat its plan, credits
//! used (the larger of the bill's and the activity report's count, as the savings count them)
//! and cost. A watched month that has closed is recorded again at every refresh until it leaves
//! the watch (its bill is final then). With `history.dir` set, each record is a file there
//! (`YYYY-MM.json`, written atomically), read back at start: a restart rescans nothing. A file
//! that cannot be read is moved aside and the month allocated again.
//!
//! From the records and the snapshot's own months, [`HistoryView`] gives the months' totals
//! (exported per cost center and in all) and each seat's [`Tenure`]
//! ([`crate::snapshot::history`] makes both from the snapshot's views).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::config_error::{ConfigError, ensure};
use crate::period::BillingPeriod;

/// `[history]`: how many closed months are kept, and where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistorySettings {
    /// Closed months kept before the watched ones (0 = none).
    pub months: u32,
    /// Folder the closed months are kept in, one file each (e.g. in the state directory,
    /// `/var/lib/kiro-cost-exporter/history`); empty = in memory only, allocated again after a
    /// restart.
    pub dir: PathBuf,
}

impl Default for HistorySettings {
    fn default() -> Self {
        Self {
            months: 12,
            dir: PathBuf::new(),
        }
    }
}

impl HistorySettings {
    /// Checks values (no I/O); errors name the key under `history`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure(
            self.months <= 36,
            "history.months",
            "must be a number of months from 0 to 36",
        )
    }

    /// The closed months to keep before `newest` (the newest watched month), newest first,
    /// leaving out `watched`.
    pub fn wanted(&self, newest: BillingPeriod, watched: &[BillingPeriod]) -> Vec<BillingPeriod> {
        let mut p = newest;
        let mut out = Vec::new();
        for _ in 0..self.months {
            p = p.previous();
            if !watched.contains(&p) {
                out.push(p);
            }
        }
        out
    }
}

/// One seat in one month, as history keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeatMonth {
    pub account_id: String,
    pub region: String,
    pub user_id: String,
    /// The plan billed (`""`: no seat-fee line that month).
    pub plan: String,
    /// Credits used: the larger of the bill's and the activity report's count.
    pub credits_used: Decimal,
    pub cost_usd: Decimal,
    /// Billed less than a whole seat-month (subscribed during the month, billed pro rata).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub part_month: bool,
}

/// One month, as history keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonthRecord {
    pub period: BillingPeriod,
    pub recorded_at: DateTime<Utc>,
    /// The whole Kiro bill, tax included.
    pub total_usd: Decimal,
    /// Cost per cost center (`""` = untagged), tax and unattributed lines excluded.
    pub cost_centers: BTreeMap<String, Decimal>,
    /// Every named seat, sorted by (account, region, user).
    pub seats: Vec<SeatMonth>,
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("history file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("history file {path}: {message}")]
    Encode { path: PathBuf, message: String },
}

/// The folder the records are kept in.
#[derive(Debug, Clone)]
pub struct HistoryStore {
    dir: PathBuf,
}

impl HistoryStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn path(&self, p: BillingPeriod) -> PathBuf {
        self.dir.join(format!("{p}.json"))
    }

    /// Hands every record in the folder to `each`, one at a time (none when the folder does
    /// not exist yet); returns how many, and what was wrong with the files that could not be
    /// read (each moved aside as `<name>.corrupt-<time>`). Blocking.
    #[allow(clippy::disallowed_methods)] // called on a blocking thread
    pub fn load(&self, mut each: impl FnMut(MonthRecord)) -> (usize, Vec<String>) {
        let mut read_ok = 0;
        let mut problems = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return (read_ok, problems);
        };
        for e in entries.flatten() {
            let path = e.path();
            let Some(period) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<BillingPeriod>().ok())
            else {
                continue;
            };
            match read(&path) {
                Ok(r) if r.period == period => {
                    read_ok += 1;
                    each(r);
                }
                Ok(r) => problems.push(format!(
                    "{}: holds {}, not {period}; ignored",
                    path.display(),
                    r.period
                )),
                Err(message) => {
                    let aside = path.with_extension(format!(
                        "json.corrupt-{}",
                        Utc::now().format("%Y%m%dT%H%M%S")
                    ));
                    let moved = std::fs::rename(&path, &aside).is_ok();
                    problems.push(format!(
                        "{}: {message}; {}",
                        path.display(),
                        if moved {
                            format!("moved aside to {}", aside.display())
                        } else {
                            "could not be moved aside".to_owned()
                        }
                    ));
                }
            }
        }
        (read_ok, problems)
    }

    /// Writes `r` atomically. Blocking.
    pub fn save(&self, r: &MonthRecord) -> Result<(), HistoryError> {
        let path = self.path(r.period);
        let bytes = serde_json::to_vec(r).map_err(|e| HistoryError::Encode {
            path: path.clone(),
            message: e.to_string(),
        })?;
        crate::state::atomic_write(&path, &bytes)
            .map_err(|source| HistoryError::Io { path, source })
    }
}

#[allow(clippy::disallowed_methods)] // called on a blocking thread
fn read(path: &Path) -> Result<MonthRecord, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

/// A seat as history keys it: (account, region, user).
pub type SeatKey = (String, String, String);

/// A seat's month as memory keeps it: what tenure needs, the seat by its number in [`Kept`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeptSeat {
    pub seat: u32,
    /// A seat fee was billed.
    pub billed: bool,
    /// Less than a whole seat-month was billed.
    pub part_month: bool,
    pub credits_used: Decimal,
    pub cost_usd: Decimal,
}

/// A month as memory keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct KeptMonth {
    pub total_usd: Decimal,
    pub cost_centers: BTreeMap<String, Decimal>,
    pub seats: Vec<KeptSeat>,
}

/// The closed months in memory, compact: each seat's key held once, each month's seats by
/// number (a year at 50,000 seats is tens of MB, not the records' hundreds).
#[derive(Debug, Default)]
pub struct Kept {
    ids: std::collections::HashMap<SeatKey, u32>,
    keys: Vec<SeatKey>,
    months: BTreeMap<BillingPeriod, KeptMonth>,
}

impl Kept {
    /// The number of `key`, given one the first time.
    fn id(&mut self, key: (&str, &str, &str)) -> u32 {
        let owned = (key.0.to_owned(), key.1.to_owned(), key.2.to_owned());
        if let Some(&id) = self.ids.get(&owned) {
            return id;
        }
        let id = self.keys.len() as u32;
        self.keys.push(owned.clone());
        self.ids.insert(owned, id);
        id
    }

    /// The number of a seat already kept.
    pub fn id_of(&self, key: &SeatKey) -> Option<u32> {
        self.ids.get(key).copied()
    }

    /// The key of seat number `id`.
    pub fn key(&self, id: u32) -> Option<&SeatKey> {
        self.keys.get(id as usize)
    }

    /// How many seat numbers are given.
    pub fn seats(&self) -> usize {
        self.keys.len()
    }

    /// `r` in the compact form.
    fn compact(&mut self, r: &MonthRecord) -> KeptMonth {
        KeptMonth {
            total_usd: r.total_usd,
            cost_centers: r.cost_centers.clone(),
            seats: r
                .seats
                .iter()
                .map(|s| KeptSeat {
                    seat: self.id((&s.account_id, &s.region, &s.user_id)),
                    billed: !s.plan.is_empty(),
                    part_month: s.part_month,
                    credits_used: s.credits_used,
                    cost_usd: s.cost_usd,
                })
                .collect(),
        }
    }

    /// Keeps `r` (in place of what was kept of its month).
    pub fn insert(&mut self, r: &MonthRecord) {
        let m = self.compact(r);
        self.months.insert(r.period, m);
    }

    /// Whether what is kept of `r`'s month says what `r` says.
    pub fn holds(&mut self, r: &MonthRecord) -> bool {
        let m = self.compact(r);
        self.months.get(&r.period) == Some(&m)
    }

    pub fn contains(&self, p: BillingPeriod) -> bool {
        self.months.contains_key(&p)
    }

    pub fn month(&self, p: BillingPeriod) -> Option<&KeptMonth> {
        self.months.get(&p)
    }

    /// The credits each seat billed a whole seat-month in `p` used, when `p` is kept.
    pub fn billed_credits(&self, p: BillingPeriod) -> Option<BTreeMap<SeatKey, Decimal>> {
        let m = self.months.get(&p)?;
        Some(
            m.seats
                .iter()
                .filter(|s| s.billed && !s.part_month)
                .map(|s| (self.keys[s.seat as usize].clone(), s.credits_used))
                .collect(),
        )
    }

    /// Keeps only the months `keep` says.
    pub fn retain(&mut self, keep: impl Fn(BillingPeriod) -> bool) {
        self.months.retain(|p, _| keep(*p));
    }

    /// The months kept, oldest first.
    pub fn periods(&self) -> impl Iterator<Item = BillingPeriod> + '_ {
        self.months.keys().copied()
    }
}

/// A month's totals, as exported.
#[derive(Debug, Clone, PartialEq)]
pub struct MonthTotals {
    pub period: BillingPeriod,
    /// The whole Kiro bill, tax included (to date, for the running month).
    pub total_usd: Decimal,
    pub cost_centers: BTreeMap<String, Decimal>,
}

/// A seat's tenure, from the months known (history and the watched months).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenure {
    /// The first month known with a seat fee: the licence holds since then (or earlier, when
    /// that is the oldest month known).
    pub licence_since: BillingPeriod,
    /// Months with a seat fee and use.
    pub months_active: u32,
    /// Months with a seat fee and no use in a row, up to now (the running month counts once
    /// its grace days are in the data).
    pub months_idle: u32,
    /// The first month of that idle stretch.
    pub idle_since: Option<BillingPeriod>,
    /// What the seat cost over the idle stretch.
    pub idle_cost_usd: Decimal,
}

/// What the snapshot shows of history.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistoryView {
    /// Oldest first: the kept closed months, then the watched ones.
    pub months: Vec<MonthTotals>,
    /// Per seat (account, region, user) of the watched months with a seat fee in a month
    /// known.
    pub tenure: BTreeMap<SeatKey, Tenure>,
    /// The last closed month and each of its seats' tenure as of its end: what the monthly
    /// report of that month says.
    pub closed_tenure: Option<(BillingPeriod, BTreeMap<SeatKey, Tenure>)>,
    /// History is kept (the daemon's).
    pub kept: bool,
    /// Every month history wants is read (kept, or known to have no data): tenure will not
    /// change as months arrive.
    pub settled: bool,
}

/// A seat's tenure from its months, oldest first; none without a seat fee in any of them.
pub fn tenure_of(ms: &[(BillingPeriod, bool, bool, Decimal, bool)]) -> Option<Tenure> {
    let licence_since = ms.iter().find(|m| m.1)?.0;
    let months_active = ms.iter().filter(|m| m.1 && m.2).count() as u32;
    let (mut months_idle, mut idle_since, mut idle_cost) = (0, None, Decimal::ZERO);
    // Back from the newest month: idle months with a seat fee, without a gap, skipping a
    // running month that does not count yet.
    let mut expected: Option<BillingPeriod> = None;
    for &(p, billed, in_use, cost, counts) in ms.iter().rev() {
        if expected.is_some_and(|e| e != p) {
            break;
        }
        expected = Some(p.previous());
        if !counts {
            continue;
        }
        if !billed || in_use {
            break;
        }
        months_idle += 1;
        idle_since = Some(p);
        idle_cost += cost;
    }
    Some(Tenure {
        licence_since,
        months_active,
        months_idle,
        idle_since,
        idle_cost_usd: idle_cost.normalize(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> BillingPeriod {
        s.parse().unwrap()
    }

    #[test]
    fn tenure_counts_the_idle_stretch_up_to_now() {
        let d = Decimal::from;
        // Billed since 2026-07, used until 2026-08, idle since 2026-09, a running month that
        // does not count yet.
        let ms = [
            (p("2026-06"), false, false, d(0), true),
            (p("2026-07"), true, true, d(20), true),
            (p("2026-08"), true, true, d(25), true),
            (p("2026-09"), true, false, d(200), true),
            (p("2026-10"), true, false, d(200), true),
            (p("2026-11"), true, false, d(200), true),
            (p("2026-12"), true, false, d(200), false),
        ];
        let t = tenure_of(&ms).unwrap();
        assert_eq!(t.licence_since, p("2026-07"));
        assert_eq!(t.months_active, 2);
        assert_eq!(t.months_idle, 3);
        assert_eq!(t.idle_since, Some(p("2026-09")));
        assert_eq!(t.idle_cost_usd, d(600));
        // A month without the seat breaks the stretch.
        let gap = [
            (p("2026-09"), true, false, d(20), true),
            (p("2026-11"), true, false, d(20), true),
        ];
        assert_eq!(tenure_of(&gap).unwrap().months_idle, 1);
        // In use now: no idle stretch.
        let busy = [(p("2026-11"), true, true, d(20), true)];
        let t = tenure_of(&busy).unwrap();
        assert_eq!((t.months_idle, t.idle_since), (0, None));
        // Never a seat fee: no tenure.
        assert!(tenure_of(&[(p("2026-11"), false, true, d(3), true)]).is_none());
    }

    #[test]
    fn wanted_months_leave_out_the_watched_ones_newest_first() {
        let s = HistorySettings {
            months: 3,
            ..HistorySettings::default()
        };
        assert_eq!(
            s.wanted(p("2026-12"), &[p("2026-11"), p("2026-12")]),
            vec![p("2026-10"), p("2026-09")]
        );
    }
}
