//! Renders a period for people and programs: JSON (one object), CSV (one row per unit, UTF-8
//! with a byte-order mark so Excel reads non-ASCII names), and an aligned table. JSON and the
//! table read the period's views ([`crate::snapshot::PeriodView`]), as every sink does.

use std::fmt::Write as _;

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde_json::{Value, json};

use crate::allocation::savings::Savings;
use crate::allocation::{Allocation, Rollup};
use crate::snapshot::PeriodView;

/// Output formats of `query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

/// A decimal amount as a JSON number.
pub fn number(d: Decimal) -> Value {
    d.to_f64()
        .and_then(serde_json::Number::from_f64)
        .map_or(Value::Null, Value::Number)
}

fn rollup_json(key_name: &str, key: &str, r: &Rollup) -> Value {
    json!({
        key_name: key,
        "users": r.users,
        "credits_used": number(r.credits_used),
        "subscription_usd": number(r.subscription_usd),
        "overage_usd": number(r.overage_usd),
        "other_usd": number(r.other_usd),
        "total_usd": number(r.total_usd),
    })
}

/// The period, its roll-ups (with each cost center's month-end forecast) and savings
/// recommendations as one JSON object. `kiro_total_usd` is the whole bill, tax included: the
/// total cost every sink shows.
pub fn to_json(view: &PeriodView) -> Value {
    let mut v = summary_json(view);
    v["savings"] = serde_json::to_value(SavingsJson(&view.savings)).expect("string keys only");
    v["users"] = serde_json::to_value(Users(&view.allocation.units)).expect("string keys only");
    v
}

/// [`to_json`] (the reference for this) with `extra` members (such as `people`), written pretty to `w` as
/// `serde_json::to_string_pretty` writes the value, without building a value per user.
pub fn write_json(
    view: &PeriodView,
    extra: serde_json::Map<String, Value>,
    w: impl std::io::Write,
) -> serde_json::Result<()> {
    let Value::Object(mut members) = summary_json(view) else {
        unreachable!("the summary is an object")
    };
    members.extend(extra);
    let doc = Doc {
        members: &members,
        savings: SavingsJson(&view.savings),
        users: Users(&view.allocation.units),
    };
    let mut w = std::io::BufWriter::with_capacity(1 << 16, w);
    serde_json::to_writer_pretty(&mut w, &doc)?;
    std::io::Write::write_all(&mut w, b"\n").map_err(serde_json::Error::io)?;
    std::io::Write::flush(&mut w).map_err(serde_json::Error::io)
}

/// A decimal amount as [`number`] writes it.
struct Num(Decimal);

impl serde::Serialize for Num {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        number(self.0).serialize(s)
    }
}

/// The document [`write_json`] writes: the summary's members with the savings and the users
/// among them, all by name as a JSON object keeps its members.
struct Doc<'a> {
    members: &'a serde_json::Map<String, Value>,
    savings: SavingsJson<'a>,
    users: Users<'a>,
}

impl serde::Serialize for Doc<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        #[serde(untagged)]
        enum Part<'a> {
            Value(&'a Value),
            Savings(&'a SavingsJson<'a>),
            Users(&'a Users<'a>),
        }
        let mut parts: Vec<(&str, Part<'_>)> = self
            .members
            .iter()
            .map(|(k, v)| (k.as_str(), Part::Value(v)))
            .collect();
        parts.push(("savings", Part::Savings(&self.savings)));
        parts.push(("users", Part::Users(&self.users)));
        parts.sort_by_key(|(k, _)| *k);
        s.collect_map(parts)
    }
}

/// The units as a JSON array.
struct Users<'a>(&'a [crate::allocation::UserCost]);

impl serde::Serialize for Users<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(UserJson))
    }
}

/// The savings as JSON: what they were decided from, total, idle seats and the
/// recommendations, members by name.
struct SavingsJson<'a>(&'a Savings);

impl serde::Serialize for SavingsJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let b = &self.0.basis;
        let day = |d: Option<chrono::NaiveDate>| d.map(|d| d.to_string());
        let basis = serde_json::json!({
            "days": b.days,
            "from": day(b.from),
            "min_days": b.min_days,
            "projected": b.projected,
            "to": day(b.to),
            "window": window_json(b.window),
            "withheld": b.withheld,
        });
        let mut m = s.serialize_map(Some(4))?;
        m.serialize_entry("basis", &basis)?;
        m.serialize_entry("idle_seats", &self.0.idle_seats)?;
        m.serialize_entry("recommendations", &Recommendations(&self.0.recommendations))?;
        m.serialize_entry("total_usd", &Num(self.0.total_usd))?;
        m.end()
    }
}

/// A window as JSON: its kind and, when it is not the period's own, its first and last day.
fn window_json(w: crate::allocation::savings::Window) -> serde_json::Value {
    let (from, to) = w.days().map_or((None, None), |(f, t)| {
        (Some(f.to_string()), Some(t.to_string()))
    });
    serde_json::json!({"from": from, "kind": w.kind(), "to": to})
}

struct Recommendations<'a>(&'a [crate::allocation::savings::Recommendation]);

impl serde::Serialize for Recommendations<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        s.collect_seq(self.0.iter().map(|r| {
            struct Rec<'a>(&'a crate::allocation::savings::Recommendation);
            impl serde::Serialize for Rec<'_> {
                fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                    let r = self.0;
                    let mut m = s.serialize_map(Some(10))?;
                    m.serialize_entry("account_id", &r.account_id)?;
                    m.serialize_entry("cost_center", &r.cost_center)?;
                    m.serialize_entry("plan", &r.plan)?;
                    m.serialize_entry("projected_credits", &Num(r.projected_credits))?;
                    m.serialize_entry("reason", &r.reason)?;
                    m.serialize_entry("recommended_plan", &r.recommended_plan)?;
                    m.serialize_entry("region", &r.region)?;
                    m.serialize_entry("saving_usd", &Num(r.saving_usd))?;
                    m.serialize_entry("user_id", &r.user_id)?;
                    m.serialize_entry("window", &window_json(r.window))?;
                    m.end()
                }
            }
            Rec(r)
        }))
    }
}

/// A unit as JSON ([`to_json`] and [`write_json`]): its members by name, as a JSON object
/// keeps them.
struct UserJson<'a>(&'a crate::allocation::UserCost);

impl serde::Serialize for UserJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let u = self.0;
        let mut m = s.serialize_map(Some(10))?;
        m.serialize_entry("account_id", &u.account_id)?;
        m.serialize_entry("cost_center", &u.cost_center)?;
        m.serialize_entry("credits_used", &Num(u.credits_used))?;
        m.serialize_entry("other_usd", &Num(u.other_usd))?;
        m.serialize_entry("overage_usd", &Num(u.overage_usd))?;
        m.serialize_entry("plan", &u.plan)?;
        m.serialize_entry("region", &u.region)?;
        m.serialize_entry("subscription_usd", &Num(u.subscription_usd))?;
        m.serialize_entry("total_usd", &Num(u.total_usd))?;
        m.serialize_entry("user_id", &u.user_id)?;
        m.end()
    }
}

/// Everything [`to_json`] holds but the users.
fn summary_json(view: &PeriodView) -> Value {
    let a = &view.allocation;
    let cost_centers: Vec<Value> = view
        .cost_centers
        .iter()
        .map(|(k, r)| {
            let mut v = rollup_json("cost_center", k, r);
            v["forecast_usd"] = number(
                view.forecast
                    .cost_centers
                    .get(k)
                    .copied()
                    .unwrap_or_default(),
            );
            if let Some(assigned) = a.assigned_cost_centers.get(k.as_str()) {
                v["assigned_usd"] = number(*assigned);
            }
            v
        })
        .collect();
    let mut v = json!({
        "billing_period": a.period.to_string(),
        "tax_usd": number(a.tax_usd),
        "unattributed_usd": number(a.unattributed_usd),
        "kiro_total_usd": number(a.kiro_total_usd),
        "untagged_users": view.untagged_users,
        "duplicate_subscriptions": view.duplicate_subscriptions,
        "cost_centers": cost_centers,
    });
    if a.q_developer.read {
        v["q_developer"] = q_developer_json(&a.q_developer);
    }
    v
}

/// The period's Q Developer Pro seats: apart from every Kiro figure, with their own books
/// (seats' fees + unattributed + tax = total) and the users who also hold a Kiro seat.
fn q_developer_json(q: &crate::allocation::q_developer::QDeveloper) -> Value {
    let seats: Vec<Value> = q
        .seats
        .iter()
        .map(|s| {
            json!({
                "account_id": s.account_id,
                "user_id": s.user_id,
                "cost_center": s.cost_center,
                "fee_usd": number(s.fee_usd),
                "also_kiro": s.also_kiro,
            })
        })
        .collect();
    let cost_centers: Vec<Value> = q
        .cost_centers()
        .into_iter()
        .map(|(cc, r)| {
            json!({
                "cost_center": cc,
                "users": r.users,
                "fee_usd": number(r.fee_usd),
                "duplicate_users": r.duplicate_users,
                "duplicate_usd": number(r.duplicate_usd),
            })
        })
        .collect();
    json!({
        "end_of_support": crate::allocation::q_developer::end_of_support().to_string(),
        "fee_usd": number(q.fee_usd()),
        "tax_usd": number(q.tax_usd),
        "unattributed_usd": number(q.unattributed_usd),
        "total_usd": number(q.total_usd),
        "duplicate_users": q.duplicates().count(),
        "cost_centers": cost_centers,
        "seats": seats,
    })
}

/// Header of the per-unit CSV.
pub const CSV_HEADER: [&str; 11] = [
    "billing_period",
    "account_id",
    "region",
    "user_id",
    "cost_center",
    "plan",
    "credits_used",
    "subscription_usd",
    "overage_usd",
    "other_usd",
    "total_usd",
];

/// One row per unit, with a header; UTF-8 with a byte-order mark.
pub fn to_csv(a: &Allocation) -> Result<Vec<u8>, csv::Error> {
    let mut out = "\u{feff}".as_bytes().to_vec();
    {
        let mut w = csv::WriterBuilder::new().from_writer(&mut out);
        w.write_record(CSV_HEADER)?;
        let period = a.period.to_string();
        for u in &a.units {
            w.write_record(unit_fields(&period, u))?;
        }
        w.flush()?;
    }
    Ok(out)
}

/// A unit's fields in [`CSV_HEADER`] order.
pub fn unit_fields(period: &str, u: &crate::allocation::UserCost) -> [String; 11] {
    [
        period.to_owned(),
        u.account_id.clone(),
        u.region.clone(),
        u.user_id.clone(),
        u.cost_center.clone(),
        u.plan.clone(),
        u.credits_used.to_string(),
        u.subscription_usd.to_string(),
        u.overage_usd.to_string(),
        u.other_usd.to_string(),
        u.total_usd.to_string(),
    ]
}

use crate::locale::plain_money as money;

fn width(s: &str) -> usize {
    s.chars().map(|c| if c.is_ascii() { 1 } else { 2 }).sum()
}

/// An aligned table of units, with the roll-ups, totals and savings at the bottom.
pub fn to_table(view: &PeriodView) -> String {
    let a = &view.allocation;
    let header = [
        "ACCOUNT",
        "REGION",
        "USER",
        "COST CENTER",
        "PLAN",
        "CREDITS",
        "SUBSCRIPTION",
        "OVERAGE",
        "OTHER",
        "TOTAL",
    ];
    let mut rows: Vec<Vec<String>> = a
        .units
        .iter()
        .map(|u| {
            vec![
                u.account_id.clone(),
                if u.region.is_empty() {
                    "-".into()
                } else {
                    u.region.clone()
                },
                u.user_id.clone(),
                crate::allocation::cost_center_label(&u.cost_center).to_owned(),
                if u.plan.is_empty() {
                    "-".into()
                } else {
                    u.plan.clone()
                },
                u.credits_used.round_dp(2).to_string(),
                money(u.subscription_usd),
                money(u.overage_usd),
                money(u.other_usd),
                money(u.total_usd),
            ]
        })
        .collect();
    let t = &view.totals;
    rows.push(vec![
        "TOTAL".into(),
        String::new(),
        format!("{} users", t.users),
        String::new(),
        String::new(),
        t.credits_used.round_dp(2).to_string(),
        money(t.subscription_usd),
        money(t.overage_usd),
        money(t.other_usd),
        money(t.total_usd),
    ]);
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(width(c));
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            let pad = " ".repeat(w - width(c));
            if i >= 5 {
                let _ = write!(l, "{pad}{c}  ");
            } else {
                let _ = write!(l, "{c}{pad}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&header.map(String::from));
    let n = rows.len();
    for (i, r) in rows.iter().enumerate() {
        if i + 1 == n {
            line(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>());
        }
        line(r);
    }
    summary(&mut out, view);
    out
}

/// Below the table: the bill's totals, untagged users, duplicates, savings, cost centers.
fn summary(out: &mut String, view: &PeriodView) {
    let (a, savings, t) = (&view.allocation, &view.savings, &view.totals);
    let _ = writeln!(out);
    let _ = writeln!(out, "Billing period      {}", a.period);
    let _ = writeln!(out, "Users' total        {}", money(t.total_usd));
    let _ = writeln!(out, "Unattributed        {}", money(a.unattributed_usd));
    let _ = writeln!(out, "Tax                 {}", money(a.tax_usd));
    let _ = writeln!(out, "Kiro total          {}", money(a.kiro_total_usd));
    let untagged = &view.untagged_users;
    let dups = &view.duplicate_subscriptions;
    let _ = writeln!(out, "Untagged users      {}", untagged.len());
    let _ = writeln!(out, "Duplicate subs      {}", dups.len());
    let _ = writeln!(
        out,
        "Possible savings    {} a month ({} recommendations, {} idle seats)",
        money(savings.total_usd),
        savings.recommendations.len(),
        savings.idle_seats
    );
    let _ = writeln!(out, "\nBy cost center:");
    let ccs = view.cost_centers_by_cost();
    let ccw = ccs
        .iter()
        .map(|(k, _)| width(crate::allocation::cost_center_label(k)))
        .max()
        .unwrap_or(0);
    for (k, r) in ccs {
        let name = crate::allocation::cost_center_label(k);
        let _ = writeln!(
            out,
            "  {name}{}  {:>5} users  {:>12}",
            " ".repeat(ccw - width(name)),
            r.users,
            money(r.total_usd)
        );
    }
}
