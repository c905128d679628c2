//! The landing page at `/`: the month at a glance, rendered from the snapshot's views once per
//! publish, like the exposition; a request only copies it.
//!
//! Per watched period (newest first): totals and forecast, cost per cost center as horizontal
//! bars (inline SVG, untagged marked), budgets (forecast over limit first), the top users by
//! cost, the seats at 80% or more of their plan's credits, idle seats and right-sizing; and for
//! the exporter: data freshness, the last refresh and its error, each sink's health, links.
//! No script and no external asset, so it works offline and behind the same authentication as
//! `/metrics`. Lists are top-N, so the page stays small whatever the number of users.
//!
//! Numbers the tests read back carry `data-*` attributes (`data-usd` with the exact amount).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

use crate::allocation::UNTAGGED;
use crate::locale::{Locale, PageTexts as Texts, money, percent, quantity};
use crate::period::BillingPeriod;
use crate::sink::BudgetLimits;
use crate::snapshot::{PeriodView, SeatView, Snapshot};

/// How many rows a list shows (the rest is counted).
pub const TOP: usize = 10;
/// How many cost centers get a bar (the rest are summed in one).
pub const BARS: usize = 12;

/// What the page shows besides the snapshot, fixed at start.
#[derive(Debug, Clone, Default)]
pub struct LandingSettings {
    /// Words and labels: English or Chinese (`report.locale`).
    pub locale: Locale,
    /// Grafana's address of the overview dashboard (`alerts.dashboard_url`), linked when set.
    pub dashboard_url: Option<String>,
    /// Budgets per cost center (`[budgets]`), for the budget table.
    pub budgets: BudgetLimits,
}

/// The exporter's own state at publish time.
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// The last refresh's error, when it failed (the page then shows the last good data).
    pub last_error: Option<String>,
    /// Per sink: the last successful delivery and the last error, if any.
    pub sinks: BTreeMap<String, SinkHealth>,
    /// Report files served at `/reports/NAME`.
    pub reports: Vec<String>,
}

/// One sink's health.
#[derive(Debug, Clone, Default)]
pub struct SinkHealth {
    pub last_success: Option<DateTime<Utc>>,
    pub last_error: Option<(DateTime<Utc>, String)>,
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn time(t: DateTime<Utc>) -> String {
    format!(
        "<time datetime=\"{}\">{}</time>",
        t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        t.format("%Y-%m-%d %H:%M UTC")
    )
}

/// A money cell: right-aligned, with the exact amount for machines.
fn money_td(d: Decimal) -> String {
    format!(
        "<td class=\"n\" data-usd=\"{}\">{}</td>",
        d.normalize(),
        money(d)
    )
}

fn cost_center_name<'a>(cc: &'a str, t: &'a Texts) -> &'a str {
    if cc.is_empty() { t.untagged } else { cc }
}

const STYLE: &str = "\
:root{color-scheme:light;--fg:#1d2433;--muted:#5b6475;--line:#e3e6ec;--bar:#3b6fd8;--untagged:#d9822b;--bad:#b3261e;--ok:#1e7d32}\
*{box-sizing:border-box}\
body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,'Noto Sans','PingFang SC','Microsoft YaHei',sans-serif;color:var(--fg);margin:0;padding:1rem;max-width:75rem;margin-inline:auto}\
header{display:flex;flex-wrap:wrap;align-items:baseline;gap:.5rem 1.5rem;border-bottom:1px solid var(--line);padding-bottom:.5rem}\
h1{font-size:1.3rem;margin:0}h2{font-size:1.15rem;margin:1.6rem 0 .4rem}h3{font-size:1rem;margin:1.2rem 0 .4rem}\
nav a{margin-right:1rem}a{color:#2452b5}\
.muted{color:var(--muted)}.err{color:var(--bad);font-weight:600}.ok{color:var(--ok)}.bad{color:var(--bad)}\
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(11rem,1fr));gap:.6rem;margin:.6rem 0}\
.card{border:1px solid var(--line);border-radius:.4rem;padding:.5rem .7rem}\
.card b{display:block;font-size:1.25rem;font-variant-numeric:tabular-nums}\
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(30rem,100%),1fr));gap:0 2rem}.grid>div{min-width:0}\
.scroll{overflow-x:auto}\
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}\
th,td{padding:.25rem .5rem;border-bottom:1px solid var(--line);text-align:left}td.n,th.n,td time{white-space:nowrap}\
th{font-weight:600;color:var(--muted);font-size:.85rem}td.n,th.n{text-align:right}\
tr.over td{background:#fdecea}\
svg{width:100%;height:auto;font:12px system-ui,sans-serif}\
svg .bar{fill:var(--bar)}svg .untagged{fill:var(--untagged)}svg text{fill:var(--fg)}\
@media (max-width:40rem){body{padding:.5rem;font-size:14px}.grid{grid-template-columns:1fr}th,td{padding:.2rem .3rem}}";

/// The landing page for `snapshot` (none yet: a page that says so).
pub fn render(snapshot: Option<&Snapshot>, settings: &LandingSettings, health: &Health) -> Bytes {
    let t = settings.locale.page();
    let mut h = String::with_capacity(32 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"{}\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>kiro-cost-exporter</title><style>{STYLE}</style></head><body>\
<header><h1>kiro-cost-exporter</h1><nav><a href=\"/metrics\">/metrics</a>",
        t.lang
    );
    if let Some(url) = &settings.dashboard_url {
        let _ = write!(h, "<a href=\"{}\">{}</a>", escape(url), t.dashboards);
    }
    h.push_str(
        "<a href=\"/healthz\">/healthz</a><a href=\"/readyz\">/readyz</a></nav></header><main>",
    );
    if let Some(e) = &health.last_error {
        let _ = write!(
            h,
            "<p class=\"err\" id=\"last-error\">{}: {}. {}</p>",
            t.failed,
            escape(e),
            t.serving_last
        );
    }
    match snapshot {
        None => {
            let _ = write!(h, "<p id=\"no-data\">{}</p>", t.no_data);
        }
        Some(s) => {
            freshness(&mut h, s, health, t);
            for v in s.periods.iter().rev() {
                period(&mut h, s, v, settings, health, t);
            }
        }
    }
    h.push_str("</main></body></html>\n");
    Bytes::from(h)
}

fn freshness(h: &mut String, s: &Snapshot, health: &Health, t: &Texts) {
    let _ = write!(
        h,
        "<section id=\"freshness\"><h2>{}</h2><p>{}: <span id=\"last-refresh\">{}</span></p><ul>",
        t.freshness,
        t.last_refresh,
        time(s.taken_at)
    );
    for v in s.periods.iter().rev() {
        let a = &v.allocation;
        let cur = a.data_as_of.map_or_else(|| "-".to_owned(), time);
        let activity = match &v.activity {
            Some(act) => act.as_of.map_or_else(|| "-".to_owned(), time),
            None => t.not_read.to_owned(),
        };
        let _ = write!(
            h,
            "<li>{}: {} <span data-cur-as-of=\"{}\">{cur}</span> · {} {activity}</li>",
            a.period, t.cur_as_of, a.period, t.activity_as_of
        );
    }
    h.push_str("</ul>");
    if !health.sinks.is_empty() {
        let _ = write!(
            h,
            "<h3>{}</h3><div class=\"scroll\"><table id=\"sinks\"><thead><tr><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
            t.sinks, t.sink, t.last_ok, t.last_err
        );
        for (name, sh) in &health.sinks {
            let failing = match (&sh.last_error, sh.last_success) {
                (Some((at, _)), Some(ok)) => *at > ok,
                (Some(_), None) => true,
                _ => false,
            };
            let _ = write!(
                h,
                "<tr data-sink=\"{}\" data-healthy=\"{}\"><td class=\"{}\">{}</td><td>{}</td><td>{}</td></tr>",
                escape(name),
                !failing,
                if failing { "bad" } else { "ok" },
                escape(name),
                sh.last_success.map_or_else(|| t.never.to_owned(), time),
                sh.last_error
                    .as_ref()
                    .map_or_else(String::new, |(at, e)| format!(
                        "{} {}",
                        time(*at),
                        escape(&truncate(e, 240))
                    ))
            );
        }
        h.push_str("</tbody></table></div>");
    }
    h.push_str("</section>");
}

fn period(
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
    let mut seats: Vec<&SeatView> = v.seats.iter().collect();
    top_users(h, s, v, &mut seats, t);
    h.push_str("</div><div>");
    near_limit(h, s, v, &seats, t);
    h.push_str("</div></div>");
    savings(h, s, v, t);
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

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(n - 1).collect();
        out.push('…');
        out
    }
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

fn more(h: &mut String, rest: usize, t: &Texts) {
    if rest > 0 {
        let _ = write!(h, "<p class=\"muted\">+{rest} {}</p>", t.more);
    }
}

/// A user's name where known, with the id as a tooltip.
fn person(s: &Snapshot, user: &str) -> String {
    match s.people.get(user) {
        Some(p) => {
            let name = [&p.display_name, &p.user_name, &p.email]
                .into_iter()
                .find(|n| !n.is_empty());
            match name {
                Some(n) => format!("<span title=\"{}\">{}</span>", escape(user), escape(n)),
                None => escape(user),
            }
        }
        None => escape(user),
    }
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

fn savings(h: &mut String, s: &Snapshot, v: &PeriodView, t: &Texts) {
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
        let _ = write!(
            h,
            "<tr data-user=\"{}\"><td>{}</td><td>{}</td><td>{} → {to}</td><td>{}</td>{}</tr>",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_without_data_says_so() {
        let page = render(None, &LandingSettings::default(), &Health::default());
        let text = String::from_utf8(page.to_vec()).unwrap();
        assert!(text.contains("id=\"no-data\""));
        assert!(text.starts_with("<!DOCTYPE html><html lang=\"en\">"));
    }
}
