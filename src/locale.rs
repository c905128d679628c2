//! The words and numbers people read, in one place: the locale (`report.locale`), the texts of
//! the monthly report and the landing page in each language, and how money, quantities and
//! shares are written. The report's CSV, its summary card, the landing page and `query`'s
//! table format with these, so a number reads the same everywhere.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Language of the report's card and CSV header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Locale {
    #[default]
    #[serde(rename = "en")]
    En,
    #[serde(rename = "zh-CN")]
    ZhCn,
}

/// The monthly report's words (CSV rows, summary card) in one language.
pub struct ReportTexts {
    pub untagged: &'static str,
    pub no_user: &'static str,
    pub tax: &'static str,
    pub title: &'static str,
    pub period: &'static str,
    pub users: &'static str,
    pub credits: &'static str,
    pub total: &'static str,
    pub tax_word: &'static str,
    pub overage_users: &'static str,
    pub untagged_users: &'static str,
    pub top_centers: &'static str,
    pub savings: &'static str,
    pub a_month: &'static str,
    pub idle_seats: &'static str,
    pub saves: &'static str,
    pub cancel: &'static str,
    pub link_until: &'static str,
    pub download: &'static str,
    pub dashboard: &'static str,
    pub no_data_title: &'static str,
    pub no_data: &'static str,
}

const REPORT_EN: ReportTexts = ReportTexts {
    untagged: crate::allocation::UNTAGGED,
    no_user: "(no user)",
    tax: "(tax)",
    title: "Kiro cost report",
    period: "Period",
    users: "Users",
    credits: "Credits used",
    total: "Total cost",
    tax_word: "tax",
    overage_users: "Users with overage",
    untagged_users: "Untagged users",
    top_centers: "Top cost centers",
    savings: "Possible savings",
    a_month: "a month",
    idle_seats: "idle seats",
    saves: "saves",
    cancel: "cancel",
    link_until: "The download link works until",
    download: "Download the CSV",
    dashboard: "Open the dashboard",
    no_data_title: "no data",
    no_data: "the export has no lines for this month, so there is no report.",
};

/// The CSV's columns in Chinese, in the order of the report's English header.
pub const ZH_CN_HEADER: [&str; 21] = [
    "计费周期",
    "账户ID",
    "区域",
    "用户ID",
    "成本中心",
    "套餐",
    "已用积分",
    "订阅费用(USD)",
    "超额费用(USD)",
    "其他费用(USD)",
    "总费用(USD)",
    "建议套餐",
    "可节省(USD)",
    "节省原因",
    "用户名",
    "显示名称",
    "邮箱",
    "开通月份",
    "活跃月数",
    "连续闲置月数",
    "闲置费用(USD)",
];

const REPORT_ZH_CN: ReportTexts = ReportTexts {
    untagged: "未设置",
    no_user: "（无用户）",
    tax: "（税费）",
    title: "Kiro 费用报告",
    period: "周期",
    users: "用户数",
    credits: "已用积分",
    total: "总费用",
    tax_word: "税费",
    overage_users: "产生超额费用的用户",
    untagged_users: "未设置成本中心的用户",
    top_centers: "费用最高的成本中心",
    savings: "可节省",
    a_month: "每月",
    idle_seats: "个闲置席位",
    saves: "可节省",
    cancel: "取消",
    link_until: "下载链接有效期至",
    download: "下载 CSV",
    dashboard: "打开仪表盘",
    no_data_title: "无数据",
    no_data: "导出中没有该月的 Kiro 费用记录，因此没有报告。",
};

impl Locale {
    /// The monthly report's words.
    pub fn report(self) -> &'static ReportTexts {
        match self {
            Self::En => &REPORT_EN,
            Self::ZhCn => &REPORT_ZH_CN,
        }
    }

    /// The landing page's words.
    pub fn page(self) -> &'static PageTexts {
        match self {
            Self::En => &PAGE_EN,
            Self::ZhCn => &PAGE_ZH,
        }
    }

    /// A seat's idle stretch, as savings reasons name it: "idle 3 months, $600.00 since
    /// 2026-09".
    pub fn idle_stretch(self, t: &crate::history::Tenure) -> Option<String> {
        let since = t.idle_since.filter(|_| t.months_idle > 0)?;
        let cost = money(t.idle_cost_usd);
        Some(match self {
            Self::En => format!(
                "idle {} month{}, {cost} since {since}",
                t.months_idle,
                if t.months_idle == 1 { "" } else { "s" }
            ),
            Self::ZhCn => format!("闲置 {} 个月，自 {since} 起 {cost}", t.months_idle),
        })
    }

    /// What a period's recommendations were decided from, in a sentence.
    pub fn savings_basis(self, b: &crate::allocation::savings::Basis) -> String {
        let day =
            |d: Option<chrono::NaiveDate>| d.map_or_else(|| "-".to_owned(), |d| d.to_string());
        let (from, to) = (day(b.from), day(b.to));
        if let Some(s) = self.savings_window(b) {
            return s;
        }
        match (self, b.withheld, b.projected) {
            (Self::En, true, _) => format!(
                "No advice yet: the data covers {} of the {} days of this month a decision needs.",
                b.days, b.min_days
            ),
            (Self::En, false, true) => format!(
                "Decided from {} days of use ({from} to {to}), projected to the month's end.",
                b.days
            ),
            (Self::En, false, false) => {
                format!("Decided from the whole month ({from} to {to}).")
            }
            (Self::ZhCn, true, _) => format!(
                "暂无建议：本月数据仅覆盖 {} 天，作出判断需要 {} 天。",
                b.days, b.min_days
            ),
            (Self::ZhCn, false, true) => {
                format!(
                    "依据 {} 天的使用数据（{from} 至 {to}），按月末推算。",
                    b.days
                )
            }
            (Self::ZhCn, false, false) => format!("依据整月数据（{from} 至 {to}）。"),
        }
    }
}

impl Locale {
    /// The sentence of a running month decided from a window beyond itself.
    fn savings_window(self, b: &crate::allocation::savings::Basis) -> Option<String> {
        use crate::allocation::savings::Window;
        let when =
            |d: Option<chrono::NaiveDate>| d.map_or_else(|| "-".to_owned(), |d| d.to_string());
        let month = if b.days >= b.min_days {
            match self {
                Self::En => "the month so far, projected",
                Self::ZhCn => "本月至今的数据并按月末推算",
            }
        } else {
            match self {
                Self::En => "none yet",
                Self::ZhCn => "暂不判断",
            }
        };
        Some(match (self, b.window) {
            (_, Window::Month) => return None,
            (Self::En, Window::Trailing { from, to }) => format!(
                "Decided from 30 days of use, {from} to {to} (activity report, across months); seats new this month: {month}."
            ),
            (Self::ZhCn, Window::Trailing { from, to }) => format!(
                "依据 {from} 至 {to} 的 30 天使用数据（活动报告，跨月计算）；本月新增席位：{month}。"
            ),
            (Self::En, Window::BillTrailing { from, to }) => format!(
                "Decided from 30 days of use, {from} to {to} (the bill's credits lines by usage date, across months; in-plan use the bill does not show counts as none); seats new this month: {month}."
            ),
            (Self::ZhCn, Window::BillTrailing { from, to }) => format!(
                "依据 {from} 至 {to} 的 30 天使用数据（账单中按使用日期的积分明细，跨月计算；账单未记录的套餐内用量按零计）；本月新增席位：{month}。"
            ),
            (Self::En, Window::LastClosed(p)) => format!(
                "Decided from the last closed month, {p}: this month's data covers {} of the {} days a decision needs (to {}); seats new this month: none yet.",
                b.days,
                b.min_days,
                when(b.to)
            ),
            (Self::ZhCn, Window::LastClosed(p)) => format!(
                "依据上一个已结束的月份 {p}：本月数据仅覆盖 {} 天，作出判断需要 {} 天（至 {}）；本月新增席位：暂不判断。",
                b.days,
                b.min_days,
                when(b.to)
            ),
        })
    }
}

/// The landing page's words in one language.
pub struct PageTexts {
    pub lang: &'static str,
    pub no_data: &'static str,
    pub last_refresh: &'static str,
    pub failed: &'static str,
    pub serving_last: &'static str,
    pub freshness: &'static str,
    pub cur_as_of: &'static str,
    pub activity_as_of: &'static str,
    pub not_read: &'static str,
    pub sinks: &'static str,
    pub sink: &'static str,
    pub last_ok: &'static str,
    pub last_err: &'static str,
    pub never: &'static str,
    pub current: &'static str,
    pub closing: &'static str,
    pub total: &'static str,
    pub forecast: &'static str,
    pub users: &'static str,
    pub credits: &'static str,
    pub savings_month: &'static str,
    pub tax: &'static str,
    pub unattributed: &'static str,
    pub by_cost_center: &'static str,
    pub untagged: &'static str,
    pub others: &'static str,
    pub budgets: &'static str,
    pub cost_center: &'static str,
    pub limit: &'static str,
    pub actual: &'static str,
    pub over: &'static str,
    pub no_budgets: &'static str,
    pub top_users: &'static str,
    pub user: &'static str,
    pub plan: &'static str,
    pub overage: &'static str,
    pub cost: &'static str,
    pub near_limit: &'static str,
    pub used: &'static str,
    pub none: &'static str,
    pub more: &'static str,
    pub idle: &'static str,
    pub idle_seats: &'static str,
    pub duplicates: &'static str,
    pub change: &'static str,
    pub reason: &'static str,
    pub saving: &'static str,
    pub a_month: &'static str,
    pub report: &'static str,
    pub dashboards: &'static str,
    pub q_developer: &'static str,
    pub q_both: &'static str,
    pub q_end_of_support: &'static str,
    pub by_month: &'static str,
    pub idle_for: &'static str,
    pub since: &'static str,
}

const PAGE_EN: PageTexts = PageTexts {
    lang: "en",
    no_data: "No data yet: the first refresh has not completed.",
    last_refresh: "Last refresh",
    failed: "Last refresh failed",
    serving_last: "Serving the last good data.",
    freshness: "Freshness and health",
    cur_as_of: "Newest usage in the CUR",
    activity_as_of: "Newest activity report",
    not_read: "not read",
    sinks: "Deliveries",
    sink: "Sink",
    last_ok: "Last success",
    last_err: "Last error",
    never: "never",
    current: "current month",
    closing: "closing: AWS may still revise it",
    total: "Total cost",
    forecast: "Month-end forecast",
    users: "Users",
    credits: "Credits used",
    savings_month: "Possible savings a month",
    tax: "tax",
    unattributed: "without a user",
    by_cost_center: "Cost by cost center",
    untagged: "untagged (no cost center)",
    others: "other cost centers",
    budgets: "Budgets",
    cost_center: "Cost center",
    limit: "Limit",
    actual: "Actual",
    over: "forecast over limit",
    no_budgets: "No budgets configured ([budgets]).",
    top_users: "Top users by cost",
    user: "User",
    plan: "Plan",
    overage: "Overage",
    cost: "Cost",
    near_limit: "At 80% or more of their plan's credits",
    used: "Used",
    none: "None.",
    more: "more",
    idle: "Idle seats and right-sizing",
    idle_seats: "idle seats",
    duplicates: "duplicate subscriptions",
    change: "Change",
    reason: "Reason",
    saving: "Saving a month",
    a_month: "a month",
    report: "Monthly report (CSV)",
    dashboards: "Dashboards",
    q_developer: "Q Developer Pro seats beside Kiro",
    q_both: "users pay for both",
    q_end_of_support: "Amazon Q Developer's IDE plugins and paid subscriptions reach end of support on",
    by_month: "Cost by month",
    idle_for: "idle",
    since: "since",
};

const PAGE_ZH: PageTexts = PageTexts {
    lang: "zh-CN",
    no_data: "暂无数据：首次刷新尚未完成。",
    last_refresh: "上次刷新",
    failed: "上次刷新失败",
    serving_last: "当前显示最近一次成功的数据。",
    freshness: "数据新鲜度与运行状况",
    cur_as_of: "CUR 中最新用量",
    activity_as_of: "最新活动报告",
    not_read: "未读取",
    sinks: "投递",
    sink: "目标",
    last_ok: "上次成功",
    last_err: "上次错误",
    never: "从未",
    current: "本月",
    closing: "结账中：AWS 可能仍会修订",
    total: "总费用",
    forecast: "月末预测",
    users: "用户数",
    credits: "已用积分",
    savings_month: "每月可节省",
    tax: "税费",
    unattributed: "无用户归属",
    by_cost_center: "按成本中心的费用",
    untagged: "未设置（无成本中心）",
    others: "其他成本中心",
    budgets: "预算",
    cost_center: "成本中心",
    limit: "上限",
    actual: "实际",
    over: "预测超出上限",
    no_budgets: "未配置预算（[budgets]）。",
    top_users: "费用最高的用户",
    user: "用户",
    plan: "套餐",
    overage: "超额费用",
    cost: "费用",
    near_limit: "已用套餐积分 80% 及以上",
    used: "已用",
    none: "无。",
    more: "更多",
    idle: "闲置席位与套餐调整",
    idle_seats: "闲置席位",
    duplicates: "重复订阅",
    change: "调整",
    reason: "原因",
    saving: "每月节省",
    a_month: "每月",
    report: "月度报告（CSV）",
    dashboards: "仪表板",
    q_developer: "与 Kiro 并存的 Q Developer Pro 席位",
    q_both: "位用户同时付费",
    q_end_of_support: "Amazon Q Developer 的 IDE 插件与付费订阅终止支持日期：",
    by_month: "按月成本",
    idle_for: "闲置",
    since: "始于",
};

/// `d` grouped in thousands with `decimals` places: `12,345.60`.
fn grouped(d: Decimal, decimals: u32) -> String {
    let d = d.abs().round_dp_with_strategy(
        decimals,
        rust_decimal::RoundingStrategy::MidpointAwayFromZero,
    );
    let text = format!("{d:.prec$}", prec = decimals as usize);
    let (int, frac) = match text.split_once('.') {
        Some((i, f)) => (i.to_owned(), Some(f.to_owned())),
        None => (text, None),
    };
    let mut out = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if let Some(f) = frac {
        out.push('.');
        out.push_str(&f);
    }
    out
}

/// Money as currency: `$1,234.50`, `-$207.60`.
pub fn money(d: Decimal) -> String {
    let sign = if d.round_dp(2) < Decimal::ZERO {
        "-"
    } else {
        ""
    };
    format!("{sign}${}", grouped(d, 2))
}

/// A count or credits: `12,345` (credits with up to one decimal when not whole).
pub fn quantity(d: Decimal) -> String {
    let sign = if d < Decimal::ZERO { "-" } else { "" };
    if d.fract().is_zero() {
        format!("{sign}{}", grouped(d, 0))
    } else {
        format!("{sign}{}", grouped(d, 1))
    }
}

/// Money for a table of numbers: `1234.50` (no sign of currency, no grouping).
pub fn plain_money(d: Decimal) -> String {
    let d = d.round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    format!("{d:.2}")
}

/// A share as a whole percentage: `0.8` → `80%`.
pub fn percent(share: Decimal) -> String {
    format!(
        "{}%",
        (share * Decimal::ONE_HUNDRED)
            .round_dp_with_strategy(0, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_currency() {
        assert_eq!(money(Decimal::new(-20760, 2)), "-$207.60");
        assert_eq!(money(Decimal::new(123456789, 2)), "$1,234,567.89");
        assert_eq!(money(Decimal::new(5, 3)), "$0.01");
        assert_eq!(money(Decimal::new(-4, 3)), "$0.00");
        assert_eq!(money(Decimal::ZERO), "$0.00");
        assert_eq!(plain_money(Decimal::new(123456789, 3)), "123456.79");
        assert_eq!(plain_money(Decimal::new(5, 3)), "0.01");
        assert_eq!(quantity(Decimal::new(12345, 0)), "12,345");
        assert_eq!(quantity(Decimal::new(12345, 1)), "1,234.5");
        assert_eq!(percent(Decimal::new(805, 3)), "81%");
    }

    #[test]
    fn both_languages_say_everything() {
        for locale in [Locale::En, Locale::ZhCn] {
            assert!(!locale.report().title.is_empty());
            assert!(!locale.page().lang.is_empty());
        }
        assert_eq!(Locale::ZhCn.page().lang, "zh-CN");
    }
}
