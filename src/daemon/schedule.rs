//! When refreshes happen and what they cover: `[refresh]`, the billing periods watched at a
//! given time, and the backoff after a failure.

use std::time::Duration;

use chrono::{DateTime, Datelike, Utc};
use serde::{Deserialize, Serialize};

use crate::config_error::{ConfigError, ensure};
use crate::period::BillingPeriod;

/// `[refresh]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RefreshSettings {
    /// Time between refreshes. CUR data changes a few times a day.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Random delay up to this much added to each interval, so many daemons do not query at once.
    #[serde(with = "humantime_serde")]
    pub jitter: Duration,
    /// The previous month is refreshed until this day of the month. AWS may update a month's
    /// export for up to two weeks after it ends (Data Exports delivery docs), hence 15.
    pub previous_month_final_day: u32,
    /// First retry delay after a failed refresh; doubles up to `retry_max`.
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// A refresh that takes longer fails.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Watch this one billing period only (replaying history, tests).
    pub period: Option<BillingPeriod>,
}

impl Default for RefreshSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(3600),
            jitter: Duration::from_secs(120),
            previous_month_final_day: 15,
            retry_initial: Duration::from_secs(30),
            retry_max: Duration::from_secs(900),
            timeout: Duration::from_secs(600),
            period: None,
        }
    }
}

impl RefreshSettings {
    /// Checks values (no I/O); errors name the key under `refresh`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ensure(
            self.interval >= Duration::from_secs(1),
            "refresh.interval",
            "must be at least 1s",
        )?;
        ensure(
            self.jitter <= self.interval,
            "refresh.jitter",
            "must not exceed refresh.interval",
        )?;
        ensure(
            (1..=28).contains(&self.previous_month_final_day),
            "refresh.previous_month_final_day",
            "must be a day from 1 to 28",
        )?;
        ensure(
            !self.retry_initial.is_zero(),
            "refresh.retry_initial",
            "must be greater than 0",
        )?;
        ensure(
            self.retry_max >= self.retry_initial,
            "refresh.retry_max",
            "must be at least refresh.retry_initial",
        )?;
        ensure(
            !self.timeout.is_zero(),
            "refresh.timeout",
            "must be greater than 0",
        )
    }
}

/// The billing periods a refresh at `now` allocates: the one configured, or the current month
/// and, until `previous_month_final_day`, the previous one. Oldest first.
pub fn watched_periods(now: DateTime<Utc>, settings: &RefreshSettings) -> Vec<BillingPeriod> {
    if let Some(p) = settings.period {
        return vec![p];
    }
    let current = BillingPeriod::containing(now);
    if now.day() <= settings.previous_month_final_day {
        vec![current.previous(), current]
    } else {
        vec![current]
    }
}

/// The next delay after a failure: doubles from `retry_initial`, capped at `retry_max` and at
/// the refresh interval.
pub fn backoff(failures: u32, settings: &RefreshSettings) -> Duration {
    let exp = settings
        .retry_initial
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(20)));
    exp.min(settings.retry_max).min(settings.interval)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn previous_month_is_watched_until_its_final_day() {
        let s = RefreshSettings::default();
        let d = |day| Utc.with_ymd_and_hms(2026, 1, day, 12, 0, 0).unwrap();
        assert_eq!(
            watched_periods(d(15), &s)
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["2025-12", "2026-01"]
        );
        assert_eq!(
            watched_periods(d(16), &s)
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["2026-01"]
        );
        let fixed = RefreshSettings {
            period: Some("2024-02".parse().unwrap()),
            ..s
        };
        assert_eq!(watched_periods(d(1), &fixed).len(), 1);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let s = RefreshSettings {
            retry_initial: Duration::from_secs(30),
            retry_max: Duration::from_secs(300),
            ..RefreshSettings::default()
        };
        let secs: Vec<u64> = (1..=6).map(|n| backoff(n, &s).as_secs()).collect();
        assert_eq!(secs, [30, 60, 120, 240, 300, 300]);
        let short = RefreshSettings {
            interval: Duration::from_secs(45),
            ..s
        };
        assert_eq!(
            backoff(3, &short).as_secs(),
            45,
            "never longer than the interval"
        );
        assert_eq!(backoff(u32::MAX, &short).as_secs(), 45);
    }
}
