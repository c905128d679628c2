//! Every data family the exporter serves, in one place: name, HELP text and labels (in output
//! order, sorted as the text format's writers sort them). The encoder loops over [`DATA`]; a
//! family added here and sampled there is all a new metric takes. The exporter's own families
//! are registered in [`crate::telemetry`].

use crate::allocation::forecast::FORECAST_METHOD;

/// A family's descriptor.
#[derive(Debug, Clone, Copy)]
pub struct Def {
    pub name: &'static str,
    help: &'static str,
    /// Appended to `help` (the forecast method, shared with the documentation).
    help_suffix: &'static str,
    pub labels: &'static [&'static str],
}

impl Def {
    const fn new(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Self {
        Self {
            name,
            help,
            help_suffix: "",
            labels,
        }
    }

    pub fn help(&self) -> String {
        format!("{}{}", self.help, self.help_suffix)
    }
}

/// Labels of the per-unit families.
pub const UNIT_LABELS: &[&str] = &[
    "account_id",
    "billing_period",
    "cost_center",
    "plan",
    "region",
    "user_id",
];
const CC_LABELS: &[&str] = &["billing_period", "cost_center"];
/// Labels of the activity report's per-seat families.
const SEAT_LABELS: &[&str] = &["account_id", "billing_period", "region", "user_id"];
const PERIOD: &[&str] = &["billing_period"];
/// Labels of a seat's tenure (not of one period).
const TENURE_LABELS: &[&str] = &["account_id", "region", "user_id"];

/// The data families; [`F`] names each by its index.
pub const DATA: &[Def] = &[
    Def::new(
        "kiro_user_credits_used",
        "Kiro credits used in the billing period, per unit (account, region, user, cost center).",
        UNIT_LABELS,
    ),
    Def::new(
        "kiro_user_credits_included",
        "Credits included in the unit's plan per month (the plan table's, or the activity report's Usage_Limit for the tier where it gives one; absent for a tier the table does not know).",
        UNIT_LABELS,
    ),
    Def::new(
        "kiro_user_subscription_usd",
        "Subscription (seat) cost in USD, per unit.",
        UNIT_LABELS,
    ),
    Def::new(
        "kiro_user_overage_usd",
        "Overage cost of credits beyond the plan, in USD, per unit.",
        UNIT_LABELS,
    ),
    Def::new(
        "kiro_user_cost_usd",
        "Total cost in USD per unit, tax excluded (subscription + overage + refunds, credits, discounts).",
        UNIT_LABELS,
    ),
    Def::new(
        "kiro_cost_center_cost_usd",
        "Cost in USD per cost center (\"untagged\" for lines without the tag), tax and unattributed lines excluded.",
        CC_LABELS,
    ),
    Def::new(
        "kiro_cost_center_overage_usd",
        "Overage cost in USD per cost center.",
        CC_LABELS,
    ),
    Def::new(
        "kiro_cost_center_credits_used",
        "Credits used per cost center.",
        CC_LABELS,
    ),
    Def::new(
        "kiro_cost_center_users",
        "Distinct users with cost in the cost center.",
        CC_LABELS,
    ),
    Def {
        name: "kiro_cost_center_forecast_usd",
        help: "Month-end cost forecast in USD per cost center: ",
        help_suffix: FORECAST_METHOD,
        labels: CC_LABELS,
    },
    Def::new(
        "kiro_cost_center_savings_usd",
        "Monthly saving in USD per cost center if every recommendation is applied.",
        CC_LABELS,
    ),
    Def::new(
        "kiro_account_cost_usd",
        "Cost in USD per usage account, tax and unattributed lines excluded.",
        &["account_id", "billing_period"],
    ),
    Def::new(
        "kiro_cost_usd",
        "The whole Kiro bill in USD in the billing period, tax included: users + unattributed + tax.",
        PERIOD,
    ),
    Def::new(
        "kiro_tax_usd",
        "Tax on Kiro in USD (not allocated to users).",
        PERIOD,
    ),
    Def::new(
        "kiro_unattributed_usd",
        "Kiro cost in USD on lines that name no user (e.g. discounts).",
        PERIOD,
    ),
    Def::new(
        "kiro_untagged_users",
        "Users with cost on lines without a cost-center tag.",
        PERIOD,
    ),
    Def::new(
        "kiro_duplicate_subscriptions",
        "Users charged a seat fee in more than one (account, region).",
        PERIOD,
    ),
    Def::new(
        "kiro_data_as_of_timestamp_seconds",
        "Unix time of the newest hourly usage in the data: CUR lags a day or more behind real usage.",
        PERIOD,
    ),
    Def::new(
        "kiro_idle_seats",
        "Seats with (almost) no credits used after the grace days.",
        PERIOD,
    ),
    Def::new(
        "kiro_savings_usd",
        "Monthly saving in USD if every recommendation is applied.",
        PERIOD,
    ),
    Def::new(
        "kiro_savings_basis_seconds",
        "Length of the data the recommendations were decided from: the days of the month it covers (the whole month once closed), in seconds.",
        PERIOD,
    ),
    Def::new(
        "kiro_savings_withheld",
        "1 while a running month has fewer days of data than savings.min_days: no recommendation is made from it yet.",
        PERIOD,
    ),
    Def::new(
        "kiro_users",
        "Distinct seats (account, region, user) with cost, per plan (\"\" = no seat-fee line).",
        &["billing_period", "plan"],
    ),
    Def::new(
        "kiro_user_recommended_plan_info",
        "A seat that should change: recommended_plan is the cheaper plan, or \"\" to cancel (reason idle or duplicate); always 1.",
        &[
            "account_id",
            "billing_period",
            "cost_center",
            "plan",
            "reason",
            "recommended_plan",
            "region",
            "user_id",
        ],
    ),
    Def::new(
        "kiro_user_savings_usd",
        "Monthly saving in USD if the seat's recommendation is applied (usage projected to month end).",
        &[
            "account_id",
            "billing_period",
            "cost_center",
            "plan",
            "reason",
            "region",
            "user_id",
        ],
    ),
    Def::new(
        "kiro_user_activity_credits_used",
        "Credits the Kiro user activity report counts for the seat this billing period (in-plan use included, which the bill does not always show).",
        SEAT_LABELS,
    ),
    Def::new(
        "kiro_user_activity_overage_credits_used",
        "Overage credits the activity report counts for the seat this billing period.",
        SEAT_LABELS,
    ),
    Def::new(
        "kiro_user_messages",
        "Messages sent this billing period, per client type as Kiro writes it (KIRO_IDE, KIRO_CLI, PLUGIN), from the activity report.",
        &[
            "account_id",
            "billing_period",
            "client_type",
            "region",
            "user_id",
        ],
    ),
    Def::new(
        "kiro_user_last_active_timestamp_seconds",
        "Start (UTC) of the last day the activity report shows use by the seat.",
        SEAT_LABELS,
    ),
    Def::new(
        "kiro_user_overage_cap_credits",
        "The seat's overage cap as the activity report last gave it; absent while overage is off (Kiro then writes a preset that caps nothing).",
        SEAT_LABELS,
    ),
    Def::new(
        "kiro_activity_data_as_of_timestamp_seconds",
        "Unix time of the end of the newest day in the activity report (written daily for the day before).",
        PERIOD,
    ),
    Def::new(
        "kiro_user_info",
        "Who a user id is (Identity Store, else the activity report's e-mail); always 1. Join with group_left on user_id. Labels not configured (identity.labels) are absent.",
        &["display_name", "email", "user_id", "user_name"],
    ),
    Def::new(
        "kiro_cost_center_unbilled_credits",
        "Credits the activity report counts beyond what the bill shows for the same seat, per cost center: how far the bill lags.",
        CC_LABELS,
    ),
    Def::new(
        "kiro_billing_period_info",
        "A billing period the exporter serves; always 1. state is current (the month now running) or closing (last month, still refreshed until its bill is final). Join on it to alert on the current month only.",
        &["billing_period", "state"],
    ),
    Def::new(
        "kiro_cost_center_assigned_cost_usd",
        "Part of the cost center's cost from lines without a cost-center tag, assigned by a user attribute (identity.cost_center_from).",
        CC_LABELS,
    ),
    Def::new(
        "kiro_activity_users_without_seat",
        "Users the activity report shows with no seat in the period's bill (e.g. a free tier): never billed, so not bill lag.",
        PERIOD,
    ),
    Def::new(
        "kiro_activity_credits_without_seat",
        "Credits the activity report counts for users with no seat in the period's bill.",
        PERIOD,
    ),
    Def::new(
        "kiro_q_developer_cost_usd",
        "Amazon Q Developer Pro seat cost in USD per cost center, tax excluded: not Kiro cost, in no kiro_* Kiro total. Q Developer reaches end of support on 2027-04-30.",
        CC_LABELS,
    ),
    Def::new(
        "kiro_q_developer_users",
        "Distinct users with an Amazon Q Developer Pro seat, per cost center.",
        CC_LABELS,
    ),
    Def::new(
        "kiro_q_developer_duplicate_users",
        "Users with an Amazon Q Developer Pro seat who also hold a Kiro seat in the period (one job paid twice), per cost center.",
        CC_LABELS,
    ),
    Def::new(
        "kiro_q_developer_duplicate_cost_usd",
        "What the Q Developer Pro seats of users who also hold a Kiro seat cost, in USD, per cost center.",
        CC_LABELS,
    ),
    Def::new(
        "kiro_user_q_developer_cost_usd",
        "Amazon Q Developer Pro seat cost in USD per user, account and cost center; also_kiro is \"true\" when the user holds a Kiro seat in the period.",
        &[
            "account_id",
            "also_kiro",
            "billing_period",
            "cost_center",
            "user_id",
        ],
    ),
    Def::new(
        "kiro_history_cost_usd",
        "The whole Kiro bill per month in USD, tax included: the closed months history keeps (history.months) and the watched ones (to date).",
        PERIOD,
    ),
    Def::new(
        "kiro_history_cost_center_cost_usd",
        "Cost in USD per cost center per month, tax and unattributed lines excluded: the closed months history keeps and the watched ones.",
        CC_LABELS,
    ),
    Def::new(
        "kiro_user_licence_since_timestamp_seconds",
        "Start of the first month history knows the seat paid a seat fee in (the licence holds since then, or earlier when that is the oldest month kept).",
        TENURE_LABELS,
    ),
    Def::new(
        "kiro_user_months_active",
        "Months history knows the seat paid a seat fee and was used in (savings.idle_below_credits or more).",
        TENURE_LABELS,
    ),
    Def::new(
        "kiro_user_months_idle",
        "Months in a row up to now the seat paid a seat fee and was not used (the running month counts once its grace days are in the data).",
        TENURE_LABELS,
    ),
    Def::new(
        "kiro_user_idle_stretch_cost_usd",
        "What the seat cost in USD over its current idle stretch (kiro_user_months_idle months).",
        TENURE_LABELS,
    ),
];

/// The data families by name, in the order of [`DATA`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum F {
    UserCreditsUsed,
    UserCreditsIncluded,
    UserSubscription,
    UserOverage,
    UserCost,
    CostCenterCost,
    CostCenterOverage,
    CostCenterCreditsUsed,
    CostCenterUsers,
    CostCenterForecast,
    CostCenterSavings,
    AccountCost,
    Cost,
    Tax,
    Unattributed,
    UntaggedUsers,
    DuplicateSubscriptions,
    DataAsOf,
    IdleSeats,
    Savings,
    SavingsBasis,
    SavingsWithheld,
    Users,
    RecommendedPlanInfo,
    UserSavings,
    ActivityCredits,
    ActivityOverageCredits,
    Messages,
    LastActive,
    OverageCap,
    ActivityAsOf,
    UserInfo,
    UnbilledCredits,
    PeriodInfo,
    AssignedCost,
    UsersWithoutSeat,
    CreditsWithoutSeat,
    QDeveloperCost,
    QDeveloperUsers,
    QDeveloperDuplicateUsers,
    QDeveloperDuplicateCost,
    UserQDeveloperCost,
    HistoryCost,
    HistoryCostCenterCost,
    LicenceSince,
    MonthsActive,
    MonthsIdle,
    IdleStretchCost,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_enum_names_each_family_in_order_and_names_are_unique() {
        assert_eq!(DATA.len(), F::IdleStretchCost as usize + 1);
        assert_eq!(DATA[F::HistoryCost as usize].name, "kiro_history_cost_usd");
        assert_eq!(
            DATA[F::QDeveloperCost as usize].name,
            "kiro_q_developer_cost_usd"
        );
        assert_eq!(
            DATA[F::UsersWithoutSeat as usize].name,
            "kiro_activity_users_without_seat"
        );
        assert_eq!(
            DATA[F::UnbilledCredits as usize].name,
            "kiro_cost_center_unbilled_credits"
        );
        assert_eq!(DATA[F::UserCost as usize].name, "kiro_user_cost_usd");
        assert_eq!(DATA[F::Cost as usize].name, "kiro_cost_usd");
        assert_eq!(
            DATA[F::DataAsOf as usize].name,
            "kiro_data_as_of_timestamp_seconds"
        );
        assert_eq!(DATA[F::UserSavings as usize].name, "kiro_user_savings_usd");
        let mut names: Vec<&str> = DATA.iter().map(|d| d.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DATA.len());
        for d in DATA {
            let mut sorted = d.labels.to_vec();
            sorted.sort_unstable();
            assert_eq!(sorted, d.labels, "{} labels in output order", d.name);
        }
    }
}
