//! The landing page at `/`: last refresh, periods, totals and the top cost centers, rendered
//! from the snapshot's views once per publish, like the exposition; a request only copies it.

use std::fmt::Write as _;

use bytes::Bytes;

use crate::output::number;
use crate::snapshot::Snapshot;

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

/// The landing page: last refresh, periods, totals, top cost centers.
pub fn render(snapshot: Option<&Snapshot>, last_error: Option<&str>) -> Bytes {
    let mut h = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>kiro-cost-exporter</title>\
<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:60em}table{border-collapse:collapse}\
td,th{padding:.2em .8em;border-bottom:1px solid #ddd;text-align:left}td.n{text-align:right}.err{color:#b00}</style>\
</head><body><h1>kiro-cost-exporter</h1><p><a href=\"/metrics\">Metrics</a> · <a href=\"/healthz\">Health</a> · <a href=\"/readyz\">Readiness</a></p>",
    );
    if let Some(e) = last_error {
        let _ = write!(
            h,
            "<p class=\"err\">Last refresh failed: {}. Serving the last good data.</p>",
            escape(e)
        );
    }
    match snapshot {
        None => h.push_str("<p>No data yet: the first refresh has not completed.</p>"),
        Some(s) => {
            // An absolute time: the page is rendered once per refresh, so an age computed
            // here would always read the refresh's own duration.
            let _ = write!(
                h,
                "<p>Last refresh: <time datetime=\"{}\">{}</time></p>",
                s.taken_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                s.taken_at.format("%Y-%m-%d %H:%M:%S UTC")
            );
            for v in s.periods.iter().rev() {
                let a = &v.allocation;
                let t = &v.totals;
                let _ = write!(
                    h,
                    "<h2>{}</h2><p>Data as of {}. {} users, {} credits, total ${} (tax ${}, unattributed ${}).</p>",
                    a.period,
                    a.data_as_of.map_or("-".to_owned(), |t| t
                        .format("%Y-%m-%d %H:%M UTC")
                        .to_string()),
                    t.users,
                    number(t.credits_used.round_dp(2)),
                    number(v.total_cost_usd.round_dp(2)),
                    number(a.tax_usd.round_dp(2)),
                    number(a.unattributed_usd.round_dp(2)),
                );
                h.push_str("<table><tr><th>Cost center</th><th>Users</th><th>Cost (USD)</th></tr>");
                for (cc, r) in v.cost_centers_by_cost().iter().take(10) {
                    let name = escape(crate::allocation::cost_center_label(cc));
                    let _ = write!(
                        h,
                        "<tr><td>{name}</td><td class=\"n\">{}</td><td class=\"n\">{:.2}</td></tr>",
                        r.users, r.total_usd
                    );
                }
                h.push_str("</table>");
            }
        }
    }
    h.push_str("</body></html>\n");
    Bytes::from(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn landing_page_escapes() {
        let body = render(None, Some("<script>"));
        let text = std::str::from_utf8(&body).unwrap();
        assert!(text.contains("&lt;script&gt;") && !text.contains("<script>"));
    }

    #[test]
    fn the_last_refresh_is_an_absolute_time() {
        let a = crate::allocation::forecast::tests::alloc(Some(10));
        let taken = a.period.start() + chrono::Duration::days(12);
        let s = Snapshot::build(taken, vec![a], &Default::default(), &Default::default());
        let body = render(Some(&s), None);
        let text = std::str::from_utf8(&body).unwrap();
        assert!(
            text.contains(&taken.format("%Y-%m-%d %H:%M:%S UTC").to_string()),
            "{text}"
        );
        assert!(!text.contains(" ago"), "{text}");
    }
}
