//! Renders a period for people and programs: JSON (one object), CSV (one row per unit, UTF-8
//! with a byte-order mark so Excel reads non-ASCII names), and an aligned table. JSON and the
//! table read the period's views ([`crate::snapshot::PeriodView`]), as every sink does.

use std::fmt::Write as _;
use std::io::Write as _;

use rust_decimal::Decimal;
use serde_json::ser::Formatter as _;
use serde_json::{Value, json};

use crate::allocation::amount::as_f64;
use crate::allocation::savings::Savings;
use crate::allocation::{Allocation, Rollup};
use crate::snapshot::{PeriodView, joined};

/// Output formats of `query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

/// A decimal amount as a JSON number.
pub fn number(d: Decimal) -> Value {
    serde_json::Number::from_f64(as_f64(d)).map_or(Value::Null, Value::Number)
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
/// `serde_json::to_string_pretty` writes the value, without building a value per user. The
/// users are written on two threads of their own, one half each: the first half in chunks
/// handed over as they are ready, the second kept until the first is written, while this
/// thread writes the savings and the other members.
pub fn write_json(
    view: &PeriodView,
    extra: serde_json::Map<String, Value>,
    w: impl std::io::Write,
) -> serde_json::Result<()> {
    let Value::Object(mut members) = summary_json(view) else {
        unreachable!("the summary is an object")
    };
    members.extend(extra);
    let mut keys: Vec<&str> = members.keys().map(String::as_str).collect();
    keys.extend(["savings", "users"]);
    keys.sort_unstable();
    let mut w = std::io::BufWriter::with_capacity(1 << 16, w);
    let io = serde_json::Error::io;
    // The top-level object's layout, by the formatter its members are written with.
    let mut top = Nested::at(0);
    std::thread::scope(|s| {
        let (chunks, ready) = std::sync::mpsc::sync_channel(8);
        let units = &view.allocation.units;
        let (head, tail) = units.split_at(units.len() / 2);
        let first = s.spawn(move || units_json(head, true, |chunk| chunks.send(chunk).is_ok()));
        let mut rest = Some(s.spawn(move || {
            let mut out = Vec::new();
            units_json(tail, head.is_empty(), |chunk| {
                out.push(chunk);
                true
            })
            .map(|()| out)
        }));
        top.begin_object(&mut w).map_err(io)?;
        for (i, key) in keys.iter().enumerate() {
            top.begin_object_key(&mut w, i == 0).map_err(io)?;
            serde_json::to_writer(&mut w, key)?;
            top.begin_object_value(&mut w).map_err(io)?;
            match *key {
                "users" => {
                    // The array's layout, one level deep; each unit is written at its depth.
                    let mut array = Nested::at(1);
                    array.begin_array(&mut w).map_err(io)?;
                    for chunk in &ready {
                        std::io::Write::write_all(&mut w, &chunk).map_err(io)?;
                    }
                    let rest = rest.take().map(joined).transpose()?.unwrap_or_default();
                    for chunk in rest {
                        std::io::Write::write_all(&mut w, &chunk).map_err(io)?;
                    }
                    array.has_value = !units.is_empty();
                    array.end_array(&mut w).map_err(io)?;
                }
                "savings" => {
                    let mut savings = Vec::with_capacity(view.savings.recommendations.len() * 420);
                    savings_json(&mut savings, &view.savings)?;
                    std::io::Write::write_all(&mut w, &savings).map_err(io)?;
                }
                member => std::io::Write::write_all(&mut w, &member_json(&members[member])?)
                    .map_err(io)?,
            }
            top.end_object_value(&mut w).map_err(io)?;
        }
        drop(ready);
        joined(first)
    })?;
    top.end_object(&mut w).map_err(io)?;
    std::io::Write::write_all(&mut w, b"\n").map_err(io)?;
    std::io::Write::flush(&mut w).map_err(io)
}

/// `units` as members of the `users` array of [`write_json`] (`first`: they start it), handed
/// to `send` in chunks of about 64 KiB; stops early when `send` answers that its receiver is
/// gone.
fn units_json(
    units: &[crate::allocation::UserCost],
    first: bool,
    mut send: impl FnMut(Vec<u8>) -> bool,
) -> serde_json::Result<()> {
    const CHUNK: usize = 64 << 10;
    // The depth of the array's members.
    const LEVEL: usize = 2;
    let io = serde_json::Error::io;
    let mut buf = Vec::with_capacity(CHUNK + 1024);
    let mut array = Nested::at(LEVEL);
    for (i, u) in units.iter().enumerate() {
        array
            .begin_array_value(&mut buf, first && i == 0)
            .map_err(io)?;
        user_json(&mut buf, u, LEVEL).map_err(io)?;
        if buf.len() >= CHUNK
            && !send(std::mem::replace(
                &mut buf,
                Vec::with_capacity(CHUNK + 1024),
            ))
        {
            return Ok(());
        }
    }
    // A receiver gone has stopped writing on an error of its own.
    send(buf);
    Ok(())
}

/// A JSON object written by hand as serde_json's pretty printer writes it `level` levels deep
/// (its members one deeper): for the objects [`write_json`] writes thousands of, the same
/// bytes as their `Serialize` implementations give through [`Nested`] ([`to_json`]'s).
struct Obj<'a> {
    out: &'a mut Vec<u8>,
    level: usize,
    empty: bool,
}

impl<'a> Obj<'a> {
    fn open(out: &'a mut Vec<u8>, level: usize) -> Self {
        out.push(b'{');
        Self {
            out,
            level,
            empty: true,
        }
    }

    /// A member's key, `key` being plain ASCII (no character to escape); its value follows.
    fn key(&mut self, key: &str) -> &mut Vec<u8> {
        self.out
            .extend_from_slice(if self.empty { b"\n" } else { b",\n" });
        self.empty = false;
        indent(self.out, self.level + 1);
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\": ");
        self.out
    }

    fn str(&mut self, key: &str, value: &str) -> std::io::Result<()> {
        let out = self.key(key);
        // Most values hold nothing serde_json escapes (a control character, `"` or `\\`):
        // copied as they are.
        if !value.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
            out.reserve(value.len() + 2);
            out.push(b'"');
            out.extend_from_slice(value.as_bytes());
            out.push(b'"');
            return Ok(());
        }
        serde_json::to_writer(out, value).map_err(std::io::Error::from)
    }

    /// An amount as [`number`] writes it.
    fn num(&mut self, key: &str, value: Decimal) -> std::io::Result<()> {
        let out = self.key(key);
        let f = as_f64(value);
        if f.is_finite() {
            serde_json::ser::CompactFormatter.write_f64(out, f)
        } else {
            out.extend_from_slice(b"null");
            Ok(())
        }
    }

    /// A day as its ISO 8601 text, or null.
    fn day(&mut self, key: &str, day: Option<chrono::NaiveDate>) -> std::io::Result<()> {
        let out = self.key(key);
        match day {
            Some(d) => write!(out, "\"{d}\""),
            None => std::io::Write::write_all(out, b"null"),
        }
    }

    fn close(self) {
        if !self.empty {
            self.out.push(b'\n');
            indent(self.out, self.level);
        }
        self.out.push(b'}');
    }
}

fn indent(out: &mut Vec<u8>, level: usize) {
    for _ in 0..level {
        out.extend_from_slice(b"  ");
    }
}

/// A unit as [`UserJson`] writes it, `level` levels deep.
fn user_json(
    out: &mut Vec<u8>,
    u: &crate::allocation::UserCost,
    level: usize,
) -> std::io::Result<()> {
    let mut o = Obj::open(out, level);
    o.str("account_id", &u.account_id)?;
    o.str("cost_center", &u.cost_center)?;
    o.num("credits_used", u.credits_used)?;
    o.num("other_usd", u.other_usd)?;
    o.num("overage_usd", u.overage_usd)?;
    o.str("plan", &u.plan)?;
    o.str("region", &u.region)?;
    o.num("subscription_usd", u.subscription_usd)?;
    o.num("total_usd", u.total_usd)?;
    o.str("user_id", &u.user_id)?;
    o.close();
    Ok(())
}

/// The savings as [`SavingsJson`] writes them as a member of the top-level object, the
/// recommendations by hand.
fn savings_json(out: &mut Vec<u8>, savings: &Savings) -> serde_json::Result<()> {
    const LEVEL: usize = 1;
    let io = serde_json::Error::io;
    let mut o = Obj::open(out, LEVEL);
    let basis = o.key("basis");
    let mut s = serde_json::Serializer::with_formatter(basis, Nested::at(LEVEL + 1));
    serde::Serialize::serialize(&basis_json(&savings.basis), &mut s)?;
    let idle = o.key("idle_seats");
    write!(idle, "{}", savings.idle_seats).map_err(io)?;
    let recs = o.key("recommendations");
    // The array's layout, at the savings' members' depth; each one a level deeper.
    let mut array = Nested::at(LEVEL + 1);
    array.begin_array(recs).map_err(io)?;
    for (i, r) in savings.recommendations.iter().enumerate() {
        array.begin_array_value(recs, i == 0).map_err(io)?;
        recommendation_json(recs, r, LEVEL + 2).map_err(io)?;
        array.end_array_value(recs).map_err(io)?;
    }
    array.end_array(recs).map_err(io)?;
    o.num("total_usd", savings.total_usd).map_err(io)?;
    o.close();
    Ok(())
}

/// A recommendation as [`Recommendations`] writes it, `level` levels deep.
fn recommendation_json(
    out: &mut Vec<u8>,
    r: &crate::allocation::savings::Recommendation,
    level: usize,
) -> std::io::Result<()> {
    let mut o = Obj::open(out, level);
    o.str("account_id", &r.account_id)?;
    o.str("cost_center", &r.cost_center)?;
    o.str("plan", &r.plan)?;
    o.num("projected_credits", r.projected_credits)?;
    o.str("reason", r.reason.as_str())?;
    o.str("recommended_plan", &r.recommended_plan)?;
    o.str("region", &r.region)?;
    o.num("saving_usd", r.saving_usd)?;
    o.str("user_id", &r.user_id)?;
    let window = o.key("window");
    let mut w = Obj::open(window, level + 1);
    let (from, to) = r.window.days().unzip();
    w.day("from", from)?;
    w.str("kind", r.window.kind())?;
    w.day("to", to)?;
    w.close();
    o.close();
    Ok(())
}

/// `value` written pretty as a member of a top-level object: as `serde_json::to_string_pretty`
/// writes it one level deep.
fn member_json(value: &impl serde::Serialize) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut s = serde_json::Serializer::with_formatter(&mut out, Nested::at(1));
    value.serialize(&mut s)?;
    Ok(out)
}

/// serde_json's pretty formatter (two spaces a level), starting `level` levels deep; also
/// the layout [`write_json`] writes its top-level object and the users' array with.
struct Nested {
    level: usize,
    has_value: bool,
}

impl Nested {
    fn at(level: usize) -> Self {
        Self {
            level,
            has_value: false,
        }
    }

    fn open<W: ?Sized + std::io::Write>(&mut self, w: &mut W, b: &[u8]) -> std::io::Result<()> {
        self.level += 1;
        self.has_value = false;
        w.write_all(b)
    }

    fn close<W: ?Sized + std::io::Write>(&mut self, w: &mut W, b: &[u8]) -> std::io::Result<()> {
        self.level -= 1;
        if self.has_value {
            w.write_all(b"\n")?;
            self.indent(w)?;
        }
        w.write_all(b)
    }

    fn next<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        w.write_all(if first { b"\n" } else { b",\n" })?;
        self.indent(w)
    }

    fn indent<W: ?Sized + std::io::Write>(&self, w: &mut W) -> std::io::Result<()> {
        for _ in 0..self.level {
            w.write_all(b"  ")?;
        }
        Ok(())
    }
}

impl serde_json::ser::Formatter for Nested {
    fn begin_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.open(w, b"[")
    }

    fn end_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.close(w, b"]")
    }

    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.next(w, first)
    }

    fn end_array_value<W: ?Sized + std::io::Write>(&mut self, _: &mut W) -> std::io::Result<()> {
        self.has_value = true;
        Ok(())
    }

    fn begin_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.open(w, b"{")
    }

    fn end_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.close(w, b"}")
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.next(w, first)
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }

    fn end_object_value<W: ?Sized + std::io::Write>(&mut self, _: &mut W) -> std::io::Result<()> {
        self.has_value = true;
        Ok(())
    }
}

/// A decimal amount as [`number`] writes it.
struct Num(Decimal);

impl serde::Serialize for Num {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        number(self.0).serialize(s)
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
        let basis = basis_json(&self.0.basis);
        let mut m = s.serialize_map(Some(4))?;
        m.serialize_entry("basis", &basis)?;
        m.serialize_entry("idle_seats", &self.0.idle_seats)?;
        m.serialize_entry("recommendations", &Recommendations(&self.0.recommendations))?;
        m.serialize_entry("total_usd", &Num(self.0.total_usd))?;
        m.end()
    }
}

/// What the savings were decided from, as JSON.
fn basis_json(b: &crate::allocation::savings::Basis) -> Value {
    let day = |d: Option<chrono::NaiveDate>| d.map(|d| d.to_string());
    serde_json::json!({
        "days": b.days,
        "from": day(b.from),
        "min_days": b.min_days,
        "projected": b.projected,
        "to": day(b.to),
        "window": WindowJson(b.window),
        "withheld": b.withheld,
    })
}

/// A window as JSON: its kind and, when it is not the period's own, its first and last day.
struct WindowJson(crate::allocation::savings::Window);

impl serde::Serialize for WindowJson {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        /// A day as its ISO 8601 text.
        struct Day(chrono::NaiveDate);
        impl serde::Serialize for Day {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(&self.0)
            }
        }
        let (from, to) = self
            .0
            .days()
            .map_or((None, None), |(f, t)| (Some(Day(f)), Some(Day(t))));
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("from", &from)?;
        m.serialize_entry("kind", self.0.kind())?;
        m.serialize_entry("to", &to)?;
        m.end()
    }
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
                    m.serialize_entry("window", &WindowJson(r.window))?;
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
