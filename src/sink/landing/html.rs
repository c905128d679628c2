//! The page's HTML pieces: escaping, times, money cells, names and the style sheet.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::locale::{PageTexts as Texts, money};
use crate::snapshot::Snapshot;

pub(super) fn escape(s: &str) -> String {
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

pub(super) fn time(t: DateTime<Utc>) -> String {
    format!(
        "<time datetime=\"{}\">{}</time>",
        t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        t.format("%Y-%m-%d %H:%M UTC")
    )
}

/// A money cell: right-aligned, with the exact amount for machines.
pub(super) fn money_td(d: Decimal) -> String {
    format!(
        "<td class=\"n\" data-usd=\"{}\">{}</td>",
        d.normalize(),
        money(d)
    )
}

pub(super) fn cost_center_name<'a>(cc: &'a str, t: &'a Texts) -> &'a str {
    if cc.is_empty() { t.untagged } else { cc }
}

pub(super) const STYLE: &str = "\
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

pub(super) fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(n - 1).collect();
        out.push('…');
        out
    }
}

pub(super) fn more(h: &mut String, rest: usize, t: &Texts) {
    if rest > 0 {
        let _ = write!(h, "<p class=\"muted\">+{rest} {}</p>", t.more);
    }
}

/// A user's name where known, with the id as a tooltip.
pub(super) fn person(s: &Snapshot, user: &str) -> String {
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
