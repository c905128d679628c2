//! CUR fixtures: hand-made lines, small exports on disk, and the reconciliation check every
//! money test applies.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, TimeZone, Utc};
use kiro_cost_exporter::allocation::{Allocation, AllocationSettings};
use kiro_cost_exporter::curgen::{CurLine, ExportWriter, LineSink};
use kiro_cost_exporter::period::BillingPeriod;
use kiro_cost_exporter::source::{LocalSource, Source, SourceError};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

pub const ACCOUNT: &str = "111122223333";
pub const ACCOUNT_2: &str = "444455556666";
pub const TAG: &str = "userAttribute/costCenter";

pub fn period(s: &str) -> BillingPeriod {
    s.parse().unwrap()
}

pub fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

pub fn at(p: BillingPeriod, day: u32, hour: u32) -> DateTime<Utc> {
    p.start() + Duration::days(i64::from(day) - 1) + Duration::hours(i64::from(hour))
}

pub fn arn(user: &str) -> String {
    format!("arn:aws:identitystore::999988887777:user/{user}")
}

/// A Kiro line in October 2026 for `user` in `ACCOUNT`, with the cost center tag `cc`
/// (`None`: no tag at all). Change fields with struct update syntax.
pub fn line(user: &str, cc: Option<&str>) -> CurLine {
    let p = period("2026-10");
    CurLine {
        period: p,
        product_code: "Kiro",
        account_id: ACCOUNT.to_owned(),
        region: "us-east-1",
        user_identifier: if user.is_empty() {
            String::new()
        } else {
            arn(user)
        },
        resource_id: String::new(),
        line_type: "Usage",
        usage_type: "USE1-KiroEnterprise-Credits".to_owned(),
        operation: "Credits",
        pricing_unit: "Credits",
        usage_start: at(p, 2, 10),
        usage_end: at(p, 2, 11),
        usage_amount: 0.0,
        unblended_cost: 0.0,
        net_unblended_cost: None,
        rate: 0.04,
        description: "Kiro credits".to_owned(),
        tags: cc
            .map(|v| vec![(TAG.to_owned(), v.to_owned())])
            .unwrap_or_default(),
    }
}

/// A seat line for `plan` (usage type suffix) starting on `day`.
pub fn seat(user: &str, cc: Option<&str>, plan: &str, day: u32, cost: f64) -> CurLine {
    let p = period("2026-10");
    CurLine {
        line_type: "FlatRateSubscription",
        usage_type: format!("USE1-KiroEnterprise-{plan}"),
        operation: "monthly-subscription",
        pricing_unit: "Users",
        usage_start: at(p, day, 0),
        usage_end: p.end(),
        usage_amount: 1.0,
        unblended_cost: cost,
        net_unblended_cost: None,
        description: format!("Kiro {plan} subscription"),
        ..line(user, cc)
    }
}

/// Credits used on `day`, of which `overage` credits are charged at $0.04.
pub fn credits(user: &str, cc: Option<&str>, day: u32, amount: f64, overage: f64) -> CurLine {
    let p = period("2026-10");
    let cost = (overage * 0.04 * 10_000.0).round() / 10_000.0;
    CurLine {
        usage_start: at(p, day, 10),
        usage_end: at(p, day, 11),
        usage_amount: amount,
        unblended_cost: cost,
        net_unblended_cost: None,
        ..line(user, cc)
    }
}

/// A temporary CUR export written from lines.
pub struct Export {
    pub dir: tempfile::TempDir,
}

impl Export {
    pub fn write(lines: impl IntoIterator<Item = CurLine>) -> Self {
        Self::write_omitting(lines, &[])
    }

    /// [`Export::write`] for an export without `omit`'s columns (a narrower export).
    pub fn write_omitting(
        lines: impl IntoIterator<Item = CurLine>,
        omit: &'static [&'static str],
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ExportWriter::new(dir.path(), "test-export", 100_000, |_| {})
            .unwrap()
            .omitting(omit);
        for l in lines {
            w.line(l).unwrap();
        }
        w.finish().unwrap();
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn partition(&self, p: &str) -> PathBuf {
        self.path().join("data").join(format!("BILLING_PERIOD={p}"))
    }

    pub async fn allocate(&self, p: &str) -> Result<Allocation, SourceError> {
        self.allocate_with(p, AllocationSettings::default()).await
    }

    pub async fn allocate_with(
        &self,
        p: &str,
        settings: AllocationSettings,
    ) -> Result<Allocation, SourceError> {
        LocalSource::new(self.path(), settings)
            .allocate(period(p))
            .await
    }
}

/// An expected unit: amounts as decimal text, the total their sum.
#[allow(clippy::too_many_arguments)]
pub fn expected_unit(
    account: &str,
    region: &str,
    user: &str,
    cc: &str,
    plan: &str,
    credits: &str,
    sub: &str,
    over: &str,
    other: &str,
) -> kiro_cost_exporter::allocation::UserCost {
    let (sub, over, other) = (dec(sub), dec(over), dec(other));
    kiro_cost_exporter::allocation::UserCost {
        account_id: account.into(),
        region: region.into(),
        user_id: user.into(),
        cost_center: cc.into(),
        plan: plan.into(),
        credits_used: dec(credits).normalize(),
        subscription_usd: sub.normalize(),
        overage_usd: over.normalize(),
        other_usd: other.normalize(),
        total_usd: (sub + over + other).normalize(),
    }
}

/// Every field of every unit, tax, unattributed and the total, then the reconciliation.
pub fn check_allocation(
    a: &Allocation,
    units: Vec<kiro_cost_exporter::allocation::UserCost>,
    tax: &str,
    unattributed: &str,
    total: &str,
) {
    assert_eq!(a.units, units);
    assert_eq!(a.tax_usd, dec(tax).normalize(), "tax");
    assert_eq!(
        a.unattributed_usd,
        dec(unattributed).normalize(),
        "unattributed"
    );
    assert_eq!(a.kiro_total_usd, dec(total).normalize(), "kiro total");
    assert_reconciles(a);
}

/// The reconciliation invariant (DESIGN.md): Σ units.total + unattributed + tax = Kiro total,
/// to 1e-6, checked in floating point independently of the allocation's own exact check.
pub fn assert_reconciles(a: &Allocation) {
    a.reconcile().unwrap();
    // Q Developer seats keep books of their own.
    let q = &a.q_developer;
    q.reconcile(a.period).unwrap();
    let seats: f64 = q.seats.iter().map(|s| s.fee_usd.to_f64().unwrap()).sum();
    let lhs = seats + q.unattributed_usd.to_f64().unwrap() + q.tax_usd.to_f64().unwrap();
    assert!(
        (lhs - q.total_usd.to_f64().unwrap()).abs() < 1e-6,
        "Q Developer seats {seats} + unattributed + tax != total {}",
        q.total_usd
    );
    let units: f64 = a.units.iter().map(|u| u.total_usd.to_f64().unwrap()).sum();
    let lhs = units + a.unattributed_usd.to_f64().unwrap() + a.tax_usd.to_f64().unwrap();
    let rhs = a.kiro_total_usd.to_f64().unwrap();
    assert!(
        (lhs - rhs).abs() < 1e-6,
        "units {units} + unattributed {} + tax {} != total {rhs}",
        a.unattributed_usd,
        a.tax_usd
    );
}

/// Same invariant over `query --format json` output.
pub fn assert_json_reconciles(v: &serde_json::Value) {
    let f = |v: &serde_json::Value| v.as_f64().unwrap();
    let units: f64 = v["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| f(&u["total_usd"]))
        .sum();
    let lhs = units + f(&v["unattributed_usd"]) + f(&v["tax_usd"]);
    assert!(
        (lhs - f(&v["kiro_total_usd"])).abs() < 1e-6,
        "json does not reconcile: {lhs} vs {}",
        v["kiro_total_usd"]
    );
    let cc: f64 = v["cost_centers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| f(&c["total_usd"]))
        .sum();
    assert!(
        (cc - units).abs() < 1e-6,
        "cost centers {cc} != users {units}"
    );
    if let Some(q) = v.get("q_developer") {
        let seats: f64 = q["seats"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| f(&s["fee_usd"]))
            .sum();
        let lhs = seats + f(&q["unattributed_usd"]) + f(&q["tax_usd"]);
        assert!(
            (lhs - f(&q["total_usd"])).abs() < 1e-6 && (seats - f(&q["fee_usd"])).abs() < 1e-6,
            "Q Developer json does not reconcile: {lhs} vs {}",
            q["total_usd"]
        );
    }
}

pub fn utc(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).unwrap()
}
