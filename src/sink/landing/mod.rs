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

use crate::locale::{Locale, PageTexts as Texts};
use crate::sink::BudgetLimits;
use crate::snapshot::Snapshot;

mod html;
mod section;

use html::{STYLE, escape, time, truncate};

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
            section::by_month(&mut h, s, t);
            for v in s.periods.iter().rev() {
                section::period(&mut h, s, v, settings, health, t);
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
