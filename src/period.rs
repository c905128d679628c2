//! Billing periods: the `YYYY-MM` partitions of a CUR 2.0 export.
//!
//! A period is validated once, when it is parsed; everything downstream (SQL rendering, file
//! paths, metric labels) can rely on its canonical `YYYY-MM` form.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};

/// The partition column of a CUR 2.0 export, as its folders spell it
/// (`data/BILLING_PERIOD=YYYY-MM/`); Athena's table has it in lower case.
pub const PARTITION_COLUMN: &str = "BILLING_PERIOD";

/// One calendar month, as CUR 2.0 partitions it (`BILLING_PERIOD=YYYY-MM`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BillingPeriod {
    year: i32,
    month: u32,
}

/// A string that is not a `YYYY-MM` billing period.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid billing period {value:?}: expected YYYY-MM with a month from 01 to 12, e.g. 2026-10"
)]
pub struct PeriodError {
    /// The rejected input, verbatim.
    pub value: String,
}

impl BillingPeriod {
    /// The period for a year and month; `None` when the month is not 1..=12 or the year is not
    /// a four-digit year.
    pub fn new(year: i32, month: u32) -> Option<Self> {
        ((1000..=9999).contains(&year) && (1..=12).contains(&month)).then_some(Self { year, month })
    }

    /// The period containing `at`.
    pub fn containing(at: DateTime<Utc>) -> Self {
        Self {
            year: at.year(),
            month: at.month(),
        }
    }

    pub fn year(self) -> i32 {
        self.year
    }

    pub fn month(self) -> u32 {
        self.month
    }

    /// The month before this one.
    pub fn previous(self) -> Self {
        if self.month == 1 {
            Self {
                year: self.year - 1,
                month: 12,
            }
        } else {
            Self {
                year: self.year,
                month: self.month - 1,
            }
        }
    }

    /// The month after this one.
    pub fn next(self) -> Self {
        if self.month == 12 {
            Self {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Self {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    pub fn first_day(self) -> NaiveDate {
        NaiveDate::from_ymd_opt(self.year, self.month, 1).expect("validated year and month")
    }

    /// Number of days in the month.
    pub fn days(self) -> u32 {
        let next = self.next().first_day();
        (next - self.first_day()).num_days() as u32
    }

    /// 00:00 UTC on the first day.
    pub fn start(self) -> DateTime<Utc> {
        Utc.from_utc_datetime(&self.first_day().and_hms_opt(0, 0, 0).expect("midnight"))
    }

    /// 00:00 UTC on the first day of the next month (exclusive end).
    pub fn end(self) -> DateTime<Utc> {
        self.next().start()
    }
}

impl fmt::Display for BillingPeriod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl FromStr for BillingPeriod {
    type Err = PeriodError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || PeriodError {
            value: s.to_owned(),
        };
        let b = s.as_bytes();
        if b.len() != 7
            || b[4] != b'-'
            || !s
                .bytes()
                .enumerate()
                .all(|(i, c)| i == 4 || c.is_ascii_digit())
        {
            return Err(err());
        }
        let year: i32 = s[..4].parse().map_err(|_| err())?;
        let month: u32 = s[5..].parse().map_err(|_| err())?;
        Self::new(year, month).ok_or_else(err)
    }
}

impl serde::Serialize for BillingPeriod {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for BillingPeriod {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_canonical_form_only() {
        assert_eq!(
            "2026-10".parse::<BillingPeriod>().unwrap().to_string(),
            "2026-10"
        );
        for bad in [
            "2026-13",
            "2026-00",
            "2026-1",
            "26-10",
            "2026/10",
            "2026-10-01",
            " 2026-10",
            "abcd-ef",
            "",
            "+026-10",
        ] {
            let e = bad.parse::<BillingPeriod>().unwrap_err();
            assert_eq!(e.value, bad);
            assert!(e.to_string().contains("YYYY-MM"), "{e}");
        }
    }

    #[test]
    fn neighbours_and_lengths() {
        let jan: BillingPeriod = "2026-01".parse().unwrap();
        assert_eq!(jan.previous().to_string(), "2025-12");
        assert_eq!(jan.previous().next(), jan);
        assert_eq!(jan.days(), 31);
        assert_eq!("2028-02".parse::<BillingPeriod>().unwrap().days(), 29);
        assert_eq!("2026-02".parse::<BillingPeriod>().unwrap().days(), 28);
        assert_eq!(
            jan.end(),
            "2026-02".parse::<BillingPeriod>().unwrap().start()
        );
    }
}
