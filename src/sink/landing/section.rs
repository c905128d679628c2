//! One period's section: totals, cost per cost center, budgets, top users, seats near their
//! plan's limit, idle seats and right-sizing.

use std::fmt::Write as _;

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

use super::html::{cost_center_name, escape, money_td, more, person, truncate};
use super::{BARS, Health, LandingSettings, TOP};
use crate::allocation::UNTAGGED;
use crate::locale::{Locale, PageTexts as Texts, money, percent, quantity};
use crate::period::BillingPeriod;
use crate::snapshot::{PeriodView, SeatView, Snapshot};

pub(super) fn period(
    h: &mut String,
    s: &Snapshot,
    v: &PeriodView,
    settings: &LandingSettings,
    health: &Health,
    t: &Texts,
) {
    let a = &v.allocation;
    let p = a.period;
    let current = p == BillingPeriod::containing(s.taken_at);
    let _ = write!(
        h,
        "<section id=\"p-{p}\" data-period=\"{p}\"><h2>{p} <span class=\"muted\">({})</span></h2>",
        if current { t.current } else { t.closing }
    );
    // Totals.
    let _ = write!(
        h,
        "<div class=\"cards\">\
<div class=\"card\">{}<b id=\"total-{p}\" data-usd=\"{}\">{}</b><span class=\"muted\">{} {} · {} {}</span></div>\
<div class=\"card\">{}<b id=\"forecast-{p}\" data-usd=\"{}\">{}</b></div>\
<div class=\"card\">{}<b id=\"users-{p}\">{}</b><span class=\"muted\" id=\"duplicates-{p}\" data-users=\"{}\">{} {}</span></div>\
<div class=\"card\">{}<b id=\"credits-{p}\">{}</b></div>\
<div class=\"card\">{}<b id=\"savings-{p}\" data-usd=\"{}\">{}</b><span class=\"muted\">{} {}</span></div></div>",
        t.total,
        v.total_cost_usd.normalize(),
        money(v.total_cost_usd),
        t.tax,
        money(a.tax_usd),
        t.unattributed,
        money(a.unattributed_usd),
        t.forecast,
        v.forecast.total.normalize(),
        money(v.forecast.total),
        t.users,
        quantity(Decimal::from(v.totals.users)),
        escape(&v.duplicate_subscriptions.join(" ")),
        v.duplicate_subscriptions.len(),
        t.duplicates,
        t.credits,
        quantity(v.totals.credits_used),
        t.savings_month,
        v.savings.total_usd.normalize(),
        money(v.savings.total_usd),
        v.savings.idle_seats,
        t.idle_seats,
    );
    let report = crate::sink::report_file_name(p);
    if health.reports.contains(&report) {
        let _ = write!(
            h,
            "<p><a id=\"report-{p}\" href=\"/reports/{report}\">{} {p}</a></p>",
            t.report
        );
    }
    h.push_str("<div class=\"grid\"><div>");
    bars(h, v, t);
    h.push_str("</div><div>");
    budgets(h, v, settings, t);
    h.push_str("</div></div><div class=\"grid\"><div>");
    // One pass over the units gives both per-seat lists.
    let mut seats: Vec<&SeatView> = v.seats().iter().collect();
    top_users(h, s, v, &mut seats, t);
    h.push_str("</div><div>");
    near_limit(h, s, v, &seats, t);
    h.push_str("</div></div>");
    savings(h, s, v, settings.locale);
    q_developer(h, s, v, t);
    h.push_str("</section>");
}

/// Cost per cost center as horizontal bars, widths proportional to cost (the largest is the
/// full width); untagged in its own colour; beyond [`BARS`], the rest in one bar.
fn bars(h: &mut String, v: &PeriodView, t: &Texts) {
    let p = v.allocation.period;
    let mut rows: Vec<(String, bool, Decimal, usize)> = v
        .cost_centers_by_cost()
        .into_iter()
        .map(|(cc, r)| (cc.to_owned(), cc.is_empty(), r.total_usd, r.users))
        .collect();
    if rows.len() > BARS {
        // Untagged stays visible whatever its rank.
        let untagged = rows.iter().position(|r| r.1);
        let mut kept: Vec<_> = rows.drain(..BARS - 1).collect();
        if let Some(i) = untagged
            && i >= BARS - 1
        {
            kept.push(rows.remove(i - (BARS - 1)));
        }
        let rest = rows.len();
        let cost: Decimal = rows.iter().map(|r| r.2).sum();
        let users: usize = rows.iter().map(|r| r.3).sum();
        kept.push((format!("{rest} {}", t.others), false, cost, users));
        rows = kept;
    }
    let max = rows
        .iter()
        .map(|r| r.2)
        .fold(Decimal::ZERO, Decimal::max)
        .max(Decimal::new(1, 2));
    let (label_w, bar_w, row_h) = (190.0, 300.0, 22.0);
    let height = row_h * rows.len() as f64 + 4.0;
    let _ = write!(
        h,
        "<h3>{}</h3><svg id=\"cc-bars-{p}\" viewBox=\"0 0 620 {height}\" role=\"img\" aria-label=\"{}\">",
        t.by_cost_center, t.by_cost_center
    );
    for (i, (cc, untagged, cost, users)) in rows.iter().enumerate() {
        let y = i as f64 * row_h + 2.0;
        let width = (cost / max).to_f64().unwrap_or(0.0).max(0.0) * bar_w;
        let name = if *untagged {
            t.untagged.to_owned()
        } else {
            cc.clone()
        };
        let key = if *untagged { UNTAGGED } else { cc.as_str() };
        let _ = write!(
            h,
            "<g data-cost-center=\"{}\" data-usd=\"{}\" data-users=\"{users}\">\
<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\
<rect class=\"{}\" x=\"{label_w}\" y=\"{y}\" width=\"{width:.2}\" height=\"{}\"><title>{}: {}</title></rect>\
<text x=\"{}\" y=\"{}\">{}</text></g>",
            escape(key),
            cost.normalize(),
            label_w - 6.0,
            y + 15.0,
            escape(&truncate(&name, 28)),
            if *untagged { "untagged" } else { "bar" },
            row_h - 6.0,
            escape(&name),
            money(*cost),
            label_w + width + 6.0,
            y + 15.0,
            money(*cost),
        );
    }
    h.push_str("</svg>");
}

/// Budgets per cost center: limit, actual, forecast; the ones forecast over their limit first.
fn budgets(h: &mut String, v: &PeriodView, settings: &LandingSettings, t: &Texts) {
    let p = v.allocation.period;
    let _ = write!(h, "<h3>{}</h3>", t.budgets);
    let mut rows: Vec<(&str, Decimal, Decimal, Decimal)> = v
        .cost_centers
        .iter()
        .filter(|(cc, _)| !cc.is_empty())
        .filter_map(|(cc, r)| {
            let limit = settings.budgets.limit(cc)?;
            let forecast = v
                .forecast
                .cost_centers
                .get(cc)
                .copied()
                .unwrap_or(r.total_usd);
            Some((cc.as_str(), limit, r.total_usd, forecast))
        })
        .collect();
    if rows.is_empty() {
        let _ = write!(h, "<p class=\"muted\">{}</p>", t.no_budgets);
        return;
    }
    rows.sort_by(|a, b| {
        let over = |r: &(&str, Decimal, Decimal, Decimal)| r.3 > r.1;
        over(b)
            .cmp(&over(a))
            .then((b.3 - b.1).cmp(&(a.3 - a.1)))
            .then(a.0.cmp(b.0))
    });
    let shown = rows.len().min(2 * TOP);
    let _ = write!(
        h,
        "<div class=\"scroll\"><table id=\"budgets-{p}\"><thead><tr><th>{}</th><th class=\"n\">{}</th><th class=\"n\">{}</th><th class=\"n\">{}</th><th class=\"n\">%</th></tr></thead><tbody>",
        t.cost_center, t.limit, t.actual, t.forecast
    );
    for (cc, limit, actual, forecast) in &rows[..shown] {
        let over = forecast > limit;
        let pct = if limit.is_zero() {
            "-".to_owned()
        } else {
            percent(*forecast / *limit)
        };
        let _ = write!(
            h,
            "<tr data-cost-center=\"{}\" data-over=\"{over}\"{}><td>{}{}</td>{}{}{}<td class=\"n\">{pct}</td></tr>",
            escape(cc),
            if over { " class=\"over\"" } else { "" },
            escape(cc),
            if over {
                format!(" <span class=\"bad\">({})</span>", t.over)
            } else {
                String::new()
            },
            money_td(*limit),
            money_td(*actual),
            money_td(*forecast),
        );
    }
    h.push_str("</tbody></table></div>");
    more(h, rows.len() - shown, t);
}

fn top_users(h: &mut String, s: &Snapshot, v: &PeriodView, all: &mut [&SeatView], t: &Texts) {
    let p = v.allocation.period;
    all.sort_by(|a, b| b.cost_usd.cmp(&a.cost_usd).then(a.id.cmp(&b.id)));
    let _ = write!(
        h,
        "<h3>{}</h3><div class=\"scroll\"><table id=\"top-users-{p}\"><thead><tr><th>{}</th><th>{}</th><th>{}</th><th class=\"n\">{}</th><th class=\"n\">{}</th><th class=\"n\">{}</th></tr></thead><tbody>",
        t.top_users, t.user, t.cost_center, t.plan, t.credits, t.overage, t.cost
    );
    for seat in all.iter().take(TOP) {
        let _ = write!(
            h,
            "<tr data-user=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td>{}{}</tr>",
            escape(&seat.id.user_id),
            person(s, &seat.id.user_id),
            escape(cost_center_name(&seat.cost_center, t)),
            escape(&seat.plan),
            quantity(seat.credits_used),
            money_td(seat.overage_usd),
            money_td(seat.cost_usd),
        );
    }
    h.push_str("</tbody></table></div>");
}

fn near_limit(h: &mut String, s: &Snapshot, v: &PeriodView, seats: &[&SeatView], t: &Texts) {
    let p = v.allocation.period;
    let mut near: Vec<(&SeatView, Decimal, Decimal)> = seats
        .iter()
        .filter_map(|seat| {
            let share = seat.credits_used_ratio()?;
            let included = seat.included_credits?;
            (share >= Decimal::new(8, 1)).then_some((*seat, included, share))
        })
        .collect();
    near.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.id.cmp(&b.0.id)));
    let _ = write!(h, "<h3>{}</h3>", t.near_limit);
    if near.is_empty() {
        let _ = write!(h, "<p class=\"muted\" id=\"near-limit-{p}\">{}</p>", t.none);
        return;
    }
    let _ = write!(
        h,
        "<div class=\"scroll\"><table id=\"near-limit-{p}\"><thead><tr><th>{}</th><th>{}</th><th class=\"n\">{}</th><th class=\"n\">%</th><th class=\"n\">{}</th></tr></thead><tbody>",
        t.user, t.plan, t.used, t.overage
    );
    for (seat, included, share) in near.iter().take(TOP) {
        let _ = write!(
            h,
            "<tr data-user=\"{}\" data-share=\"{}\"><td>{}</td><td>{}</td><td class=\"n\">{} / {}</td><td class=\"n\">{}</td>{}</tr>",
            escape(&seat.id.user_id),
            share.round_dp(4).normalize(),
            person(s, &seat.id.user_id),
            escape(&seat.plan),
            quantity(seat.credits_used),
            quantity(*included),
            percent(*share),
            money_td(seat.overage_usd),
        );
    }
    h.push_str("</tbody></table></div>");
    more(h, near.len().saturating_sub(TOP), t);
}

fn savings(h: &mut String, s: &Snapshot, v: &PeriodView, locale: Locale) {
    let t = locale.page();
    let p = v.allocation.period;
    let sv = &v.savings;
    let _ = write!(
        h,
        "<h3>{} <span class=\"muted\">({} {}, {} {})</span></h3>",
        t.idle,
        sv.idle_seats,
        t.idle_seats,
        money(sv.total_usd),
        t.a_month
    );
    let _ = write!(
        h,
        "<p class=\"muted\" id=\"savings-basis-{p}\" data-days=\"{}\" data-withheld=\"{}\" data-window=\"{}\">{}</p>",
        sv.basis.days,
        sv.basis.withheld,
        sv.basis.window.kind(),
        escape(&locale.savings_basis(&sv.basis))
    );
    let mut recs: Vec<_> = sv.recommendations.iter().collect();
    recs.sort_by(|a, b| {
        b.saving_usd
            .cmp(&a.saving_usd)
            .then(a.user_id.cmp(&b.user_id))
    });
    if recs.is_empty() {
        let _ = write!(
            h,
            "<p class=\"muted\" id=\"savings-list-{p}\">{}</p>",
            t.none
        );
        return;
    }
    let _ = write!(
        h,
        "<div class=\"scroll\"><table id=\"savings-list-{p}\"><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th class=\"n\">{}</th></tr></thead><tbody>",
        t.user, t.cost_center, t.change, t.reason, t.saving
    );
    for r in recs.iter().take(TOP) {
        let to = if r.recommended_plan.is_empty() {
            "—".to_owned()
        } else {
            escape(&r.recommended_plan)
        };
        // An idle seat says how long it has been idle and what that cost, where history knows.
        let stretch = (r.reason == crate::allocation::savings::Reason::Idle)
            .then(|| {
                let key = (r.account_id.clone(), r.region.clone(), r.user_id.clone());
                s.history.tenure.get(&key)
            })
            .flatten()
            .and_then(|t| locale.idle_stretch(t))
            .map_or_else(String::new, |x| {
                format!(" <span class=\"muted\">({})</span>", escape(&x))
            });
        let _ = write!(
            h,
            "<tr data-user=\"{}\"><td>{}</td><td>{}</td><td>{} → {to}</td><td>{}{stretch}</td>{}</tr>",
            escape(&r.user_id),
            person(s, &r.user_id),
            escape(cost_center_name(&r.cost_center, t)),
            escape(&r.plan),
            r.reason.as_str(),
            money_td(r.saving_usd),
        );
    }
    h.push_str("</tbody></table></div>");
    more(h, recs.len().saturating_sub(TOP), t);
}

/// The Q Developer Pro seats of users who also hold a Kiro seat, and the end-of-support date;
/// nothing when no seat was read.
fn q_developer(h: &mut String, s: &Snapshot, v: &PeriodView, t: &Texts) {
    let q = &v.allocation.q_developer;
    if !q.read || q.seats.is_empty() {
        return;
    }
    let p = v.allocation.period;
    let mut both: Vec<_> = q.duplicates().collect();
    both.sort_by(|a, b| b.fee_usd.cmp(&a.fee_usd).then(a.user_id.cmp(&b.user_id)));
    let cost: Decimal = both.iter().map(|q| q.fee_usd).sum();
    let eos = crate::allocation::q_developer::end_of_support();
    let _ = write!(
        h,
        "<h3>{} <span class=\"muted\">(<span id=\"q-both-{p}\">{}</span> {}, {} {})</span></h3>\
<p class=\"muted\" id=\"q-eos-{p}\" data-date=\"{eos}\">{} {eos}.</p>",
        t.q_developer,
        both.len(),
        t.q_both,
        money(cost),
        t.a_month,
        t.q_end_of_support,
    );
    if both.is_empty() {
        return;
    }
    let _ = write!(
        h,
        "<div class=\"scroll\"><table id=\"q-list-{p}\"><thead><tr><th>{}</th><th>{}</th><th class=\"n\">{}</th></tr></thead><tbody>",
        t.user, t.cost_center, t.cost
    );
    for q in both.iter().take(TOP) {
        let _ = write!(
            h,
            "<tr data-user=\"{}\"><td>{}</td><td>{}</td>{}</tr>",
            escape(&q.user_id),
            person(s, &q.user_id),
            escape(cost_center_name(&q.cost_center, t)),
            money_td(q.fee_usd),
        );
    }
    h.push_str("</tbody></table></div>");
    more(h, both.len().saturating_sub(TOP), t);
}

/// Cost by month, from history: the whole bill and the cost centers that cost most in the
/// newest month, one row of bars each, every row scaled to its own largest month; nothing
/// with fewer than two months.
pub(super) fn by_month(h: &mut String, s: &Snapshot, t: &Texts) {
    let months = &s.history.months;
    if months.len() < 2 {
        return;
    }
    let newest = &months[months.len() - 1];
    let mut centers: Vec<(&String, &Decimal)> = newest.cost_centers.iter().collect();
    centers.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let mut rows: Vec<(String, String, Vec<Decimal>)> = vec![(
        t.total.to_owned(),
        "total".to_owned(),
        months.iter().map(|m| m.total_usd).collect(),
    )];
    for (cc, _) in centers.into_iter().take(BARS - 1) {
        let name = if cc.is_empty() {
            t.untagged
        } else {
            cc.as_str()
        };
        let key = if cc.is_empty() { UNTAGGED } else { cc.as_str() };
        let values = months
            .iter()
            .map(|m| m.cost_centers.get(cc).copied().unwrap_or_default())
            .collect();
        rows.push((name.to_owned(), key.to_owned(), values));
    }
    let (label_w, area_w, row_h) = (190.0, 420.0, 44.0);
    let step = area_w / months.len() as f64;
    let height = row_h * rows.len() as f64 + 18.0;
    let _ = write!(
        h,
        "<section id=\"by-month\"><h2>{}</h2><svg viewBox=\"0 0 620 {height}\" role=\"img\" aria-label=\"{}\">",
        t.by_month, t.by_month
    );
    for (i, (name, key, values)) in rows.iter().enumerate() {
        let top = i as f64 * row_h + 2.0;
        let max = values
            .iter()
            .copied()
            .fold(Decimal::ZERO, Decimal::max)
            .max(Decimal::new(1, 2));
        let _ = write!(
            h,
            "<g data-row=\"{}\"><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            escape(key),
            label_w - 6.0,
            top + row_h / 2.0 + 4.0,
            escape(&truncate(name, 28)),
        );
        for (j, (m, v)) in months.iter().zip(values).enumerate() {
            let bar = (v / max).to_f64().unwrap_or(0.0).clamp(0.0, 1.0) * (row_h - 8.0);
            let _ = write!(
                h,
                "<rect class=\"bar\" data-period=\"{}\" data-usd=\"{}\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bar:.1}\"><title>{} {}: {}</title></rect>",
                m.period,
                v.normalize(),
                label_w + j as f64 * step + 2.0,
                top + row_h - 4.0 - bar,
                (step - 4.0).max(1.0),
                escape(name),
                m.period,
                money(*v),
            );
        }
        h.push_str("</g>");
    }
    let y = rows.len() as f64 * row_h + 14.0;
    for (j, m) in months.iter().enumerate() {
        let _ = write!(
            h,
            "<text x=\"{:.1}\" y=\"{y}\" text-anchor=\"middle\">{}</text>",
            label_w + (j as f64 + 0.5) * step,
            &m.period.to_string()[2..],
        );
    }
    h.push_str("</svg></section>");
}
