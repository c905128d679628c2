//! The report's Feishu cards: the month's summary, and the card of a month without data.

use super::*;

/// The summary card: period, users, credits, cost, top cost centers, overage and untagged
/// users, possible savings with the top items, and the download link.
pub fn summary_card(
    view: &PeriodView,
    link: Option<&Link>,
    settings: &ReportSettings,
    dashboard_url: &str,
) -> Value {
    let (a, savings, totals) = (&view.allocation, &view.savings, &view.totals);
    let overage_users = {
        let mut seen = std::collections::BTreeSet::new();
        for u in a.units.iter().filter(|u| u.overage_usd > Decimal::ZERO) {
            seen.insert((&u.account_id, &u.user_id));
        }
        seen.len()
    };
    let untagged = view.untagged_users.len();
    let t = settings.locale.report();
    let mut centers = String::new();
    for (cc, r) in view.cost_centers_by_cost().into_iter().take(settings.top) {
        let name = match (cc.is_empty(), settings.locale) {
            (false, _) => cc,
            (true, _) => t.untagged,
        };
        centers.push_str(&format!(
            "- {name}: {} ({} {})\n",
            money(r.total_usd),
            r.users,
            match settings.locale {
                Locale::En => "users",
                Locale::ZhCn => "位用户",
            }
        ));
    }
    let mut items: Vec<_> = savings.recommendations.iter().collect();
    items.sort_by_key(|r| std::cmp::Reverse(r.saving_usd));
    let mut top_savings = String::new();
    for r in items.into_iter().take(settings.top) {
        let to = if r.recommended_plan.is_empty() {
            t.cancel.to_owned()
        } else {
            format!("→ {}", r.recommended_plan)
        };
        top_savings.push_str(&format!(
            "- {} ({}): {} {to}, {} {}\n",
            r.user_id,
            r.reason.as_str(),
            r.plan,
            t.saves,
            money(r.saving_usd)
        ));
    }
    let mut body = format!(
        "**{}**: {period}\n**{}**: {users}\n**{}**: {credits}\n**{}**: {total} ({} {tax})\n**{}**: {overage_users}\n**{}**: {untagged}\n\n**{}**\n{centers}",
        t.period,
        t.users,
        t.credits,
        t.total,
        t.tax_word,
        t.overage_users,
        t.untagged_users,
        t.top_centers,
        period = a.period,
        users = totals.users,
        credits = totals.credits_used.round_dp(0),
        total = money(view.total_cost_usd),
        tax = money(a.tax_usd),
    );
    let per_month = match settings.locale {
        Locale::En => format!("{} {}", money(savings.total_usd), t.a_month),
        Locale::ZhCn => format!("{} {}", t.a_month, money(savings.total_usd)),
    };
    body.push_str(&format!(
        "\n**{}**: {per_month} ({} {})\n{top_savings}",
        t.savings, savings.idle_seats, t.idle_seats
    ));
    body.push_str(&q_developer_line(a, settings.locale));
    if let Some(link) = link {
        body.push_str(&format!(
            "\n{} {}.\n",
            t.link_until,
            link.expires.format("%Y-%m-%d %H:%M UTC")
        ));
    }
    let mut elements = vec![json!({"tag": "markdown", "content": body.trim_end()})];
    if let Some(link) = link {
        elements.push(feishu::link_button(t.download, &link.url));
    }
    if !settings.exporter_url.is_empty() {
        let url = format!(
            "{}/reports/{}",
            settings.exporter_url.trim_end_matches('/'),
            file_name(a.period)
        );
        let text = match settings.locale {
            Locale::En => "Download from the exporter",
            Locale::ZhCn => "从导出器下载",
        };
        elements.push(feishu::link_button(text, &url));
    }
    if !dashboard_url.is_empty() {
        elements.push(feishu::link_button(t.dashboard, dashboard_url));
    }
    feishu::card(&format!("{} {}", t.title, a.period), "blue", elements)
}

/// The sentence on Q Developer Pro seats of users who also hold a Kiro seat, with the
/// end-of-support date; empty when there is none.
fn q_developer_line(a: &crate::allocation::Allocation, locale: Locale) -> String {
    let both: Vec<_> = a.q_developer.duplicates().collect();
    if both.is_empty() {
        return String::new();
    }
    let t = locale.report();
    let cost: Decimal = both.iter().map(|q| q.fee_usd).sum();
    let eos = crate::allocation::q_developer::end_of_support();
    match locale {
        Locale::En => format!(
            "\n**Q Developer Pro**: {} users also hold a Kiro seat ({} {}); Amazon Q Developer reaches end of support on {eos}.\n",
            both.len(),
            money(cost),
            t.a_month
        ),
        Locale::ZhCn => format!(
            "\n**Q Developer Pro**：{} 位用户同时持有 Kiro 席位（{} {}）；Amazon Q Developer 将于 {eos} 终止支持。\n",
            both.len(),
            t.a_month,
            money(cost)
        ),
    }
}

/// The card of a month the export has no data for.
pub fn no_data_card(period: BillingPeriod, reason: &str, locale: Locale) -> Value {
    let t = locale.report();
    let lead = match locale {
        Locale::En => format!("No Kiro data for **{period}**: {}", t.no_data),
        Locale::ZhCn => format!("**{period}** {}", t.no_data),
    };
    let body = format!("{lead}\n\n{}", crate::config_error::one_line(reason));
    feishu::card(
        &format!("{} {period}: {}", t.title, t.no_data_title),
        "grey",
        vec![json!({"tag": "markdown", "content": body})],
    )
}
