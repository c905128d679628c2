//! What an alert notification says: Feishu cards and Alertmanager's webhook payload, built from
//! the notices due on one channel. Each card comes with exactly the notices it shows, so what
//! is marked delivered is what the card carried.

use serde_json::{Value, json};

use super::rules::Severity;
use super::state::{Notice, NoticeKind};
use crate::notify::feishu;

fn template(notices: &[&Notice]) -> &'static str {
    if notices.iter().all(|n| n.kind == NoticeKind::Resolved) {
        return "green";
    }
    match notices
        .iter()
        .filter(|n| n.kind != NoticeKind::Resolved)
        .map(|n| n.alert.firing.severity)
        .max()
    {
        Some(Severity::Critical) => "red",
        Some(Severity::Warning) => "orange",
        _ => "blue",
    }
}

fn notice_markdown(n: &Notice) -> String {
    let a = &n.alert.firing;
    let m = a.measure;
    let state = match n.kind {
        NoticeKind::Firing => "🔥 firing",
        NoticeKind::Repeat => "🔁 still firing",
        NoticeKind::Resolved => "✅ resolved",
    };
    format!(
        "**{rule}** · {sev} · {state}\n**Who**: {who}\n**What**: {measure} = **{value}**, threshold {threshold}\n**Since**: {since} · period {period}",
        rule = a.rule,
        sev = a.severity.as_str(),
        who = a.subject_label,
        measure = m.as_str(),
        value = m.format(a.value),
        threshold = m.format(a.threshold),
        since = n.alert.since.format("%Y-%m-%d %H:%M UTC"),
        period = a.period,
    )
}

/// Feishu interactive cards (schema 2.0) for one channel's notices of one evaluation: one card,
/// or several when one would exceed `max_bytes`, each with the notices it shows.
pub fn feishu_cards<'a>(
    notices: &[&'a Notice],
    dashboard_url: &str,
    max_bytes: usize,
) -> Vec<(Value, Vec<&'a Notice>)> {
    let mut groups: Vec<Vec<&'a Notice>> = vec![Vec::new()];
    // A card's fixed parts (header, button) stay well under 1 KB.
    let budget = max_bytes.saturating_sub(1_000);
    let mut size = 0;
    for n in notices {
        let len = serde_json::to_string(&notice_markdown(n)).map_or(0, |s| s.len()) + 64;
        let current = groups.last_mut().expect("one group");
        if !current.is_empty() && size + len > budget {
            groups.push(Vec::new());
            size = 0;
        }
        groups.last_mut().expect("one group").push(n);
        size += len;
    }
    let parts = groups.len();
    groups
        .into_iter()
        .enumerate()
        .map(|(i, g)| {
            let firing = g.iter().filter(|n| n.kind != NoticeKind::Resolved).count();
            let resolved = g.len() - firing;
            let period = g
                .first()
                .map(|n| n.alert.firing.period.to_string())
                .unwrap_or_default();
            let mut title = format!("Kiro cost alerts {period}: ");
            match (firing, resolved) {
                (f, 0) => title.push_str(&format!("{f} firing")),
                (0, r) => title.push_str(&format!("{r} resolved")),
                (f, r) => title.push_str(&format!("{f} firing, {r} resolved")),
            }
            if parts > 1 {
                title.push_str(&format!(" ({}/{parts})", i + 1));
            }
            let mut elements: Vec<Value> = Vec::new();
            for (j, n) in g.iter().enumerate() {
                if j > 0 {
                    elements.push(json!({"tag": "hr"}));
                }
                elements.push(json!({"tag": "markdown", "content": notice_markdown(n)}));
            }
            if !dashboard_url.is_empty() {
                elements.push(feishu::link_button("Open the dashboard", dashboard_url));
            }
            let card = feishu::card(&title, template(&g), elements);
            (card, g)
        })
        .collect()
}

/// Alertmanager's webhook payload (version 4) for one channel's notices.
pub fn webhook_payload(receiver: &str, notices: &[&Notice], dashboard_url: &str) -> Value {
    let alerts: Vec<Value> = notices
        .iter()
        .map(|n| {
            let a = &n.alert;
            let f = &a.firing;
            let resolved = n.kind == NoticeKind::Resolved;
            let fingerprint = {
                let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, a.key().as_bytes());
                d.as_ref()[..8]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            };
            json!({
                "status": if resolved { "resolved" } else { "firing" },
                "labels": {
                    "alertname": f.rule,
                    "severity": f.severity.as_str(),
                    "scope": f.scope,
                    "subject": f.subject,
                    "measure": f.measure.as_str(),
                    "billing_period": f.period.to_string(),
                },
                "annotations": {
                    "summary": format!("{}: {} = {} (threshold {})", f.subject_label, f.measure.as_str(), f.measure.format(f.value), f.measure.format(f.threshold)),
                    "value": f.value.to_string(),
                    "threshold": f.threshold.to_string(),
                },
                "startsAt": a.since.to_rfc3339(),
                "endsAt": a.resolved_at.map_or_else(|| "0001-01-01T00:00:00Z".to_owned(), |t| t.to_rfc3339()),
                "generatorURL": dashboard_url,
                "fingerprint": fingerprint,
            })
        })
        .collect();
    let any_firing = notices.iter().any(|n| n.kind != NoticeKind::Resolved);
    json!({
        "version": "4",
        "groupKey": "{}:{alertname=~\"kiro.*\"}",
        "truncatedAlerts": 0,
        "status": if any_firing { "firing" } else { "resolved" },
        "receiver": receiver,
        "groupLabels": {},
        "commonLabels": {"source": "kiro-cost-exporter"},
        "commonAnnotations": {},
        "externalURL": dashboard_url,
        "alerts": alerts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::period::BillingPeriod;
    use crate::sink::alerts::rules::{Firing, Measure, Scope};
    use crate::sink::alerts::state::Alert;
    use chrono::Utc;

    fn notice(i: usize) -> Notice {
        let period: BillingPeriod = "2026-10".parse().unwrap();
        Notice {
            channel: "feishu".into(),
            kind: NoticeKind::Firing,
            alert: Alert {
                firing: Firing {
                    rule: format!("rule-{i}"),
                    severity: Severity::Warning,
                    scope: Scope::User,
                    measure: Measure::CostUsd,
                    subject: format!("1/user-{i}"),
                    subject_label: format!("user-{i} with a long description {}", "x".repeat(200)),
                    period,
                    value: 10.0,
                    threshold: 5.0,
                },
                since: Utc::now(),
                resolved_at: None,
                told: Default::default(),
            },
        }
    }

    #[test]
    fn every_notice_is_on_exactly_one_card_in_order() {
        let notices: Vec<Notice> = (0..40).map(notice).collect();
        let refs: Vec<&Notice> = notices.iter().collect();
        let cards = feishu_cards(&refs, "https://grafana.example/d/kiro", 4_000);
        assert!(cards.len() > 1, "split into several cards");
        let shown: Vec<&str> = cards
            .iter()
            .flat_map(|(_, ns)| ns.iter().map(|n| n.alert.firing.rule.as_str()))
            .collect();
        let want: Vec<&str> = notices
            .iter()
            .map(|n| n.alert.firing.rule.as_str())
            .collect();
        assert_eq!(shown, want);
        for (card, ns) in &cards {
            let text = card.to_string();
            assert!(text.len() <= 4_000, "{}", text.len());
            for n in ns {
                assert!(text.contains(&format!("**{}**", n.alert.firing.rule)));
            }
        }
    }
}
