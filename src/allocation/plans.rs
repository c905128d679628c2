//! The plan table: which Kiro plan a subscription usage type stands for, what it costs and how
//! many credits it includes.
//!
//! Defaults come from Kiro's published enterprise pricing (Pro $20 / 1,000 credits, Pro+ $40 /
//! 2,000, Power $200 / 10,000, overage $0.04 per credit). Other tiers have been reported but not
//! confirmed, so the table is configuration, not code.

use crate::config_error::ConfigError;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// One plan as sold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Display name used in metrics and reports, e.g. `Pro+`.
    pub name: String,
    /// The last part of the subscription usage type, e.g. `ProPlus` in
    /// `USE1-KiroEnterprise-ProPlus`. The region prefix is ignored.
    pub usage_type_suffix: String,
    /// Price of a full month's seat in USD.
    pub monthly_usd: Decimal,
    /// Credits included in a month.
    pub included_credits: Decimal,
    /// Price of a credit beyond the included ones, in USD.
    pub overage_usd_per_credit: Decimal,
}

/// The configured plans, looked up by usage type or by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PlanTable {
    plans: Vec<Plan>,
}

impl Default for PlanTable {
    fn default() -> Self {
        let plan = |name: &str, suffix: &str, usd: i64, credits: i64| Plan {
            name: name.to_owned(),
            usage_type_suffix: suffix.to_owned(),
            monthly_usd: Decimal::from(usd),
            included_credits: Decimal::from(credits),
            overage_usd_per_credit: Decimal::new(4, 2),
        };
        Self {
            plans: vec![
                plan("Pro", "Pro", 20, 1_000),
                plan("Pro+", "ProPlus", 40, 2_000),
                plan("Power", "Power", 200, 10_000),
            ],
        }
    }
}

/// The part of a subscription usage type that names the plan: what follows `KiroEnterprise-`,
/// or, for another layout, what follows the region prefix.
pub fn usage_type_suffix(usage_type: &str) -> &str {
    const MARKER: &str = "KiroEnterprise-";
    if let Some(i) = usage_type.rfind(MARKER) {
        return &usage_type[i + MARKER.len()..];
    }
    usage_type
        .split_once('-')
        .map_or(usage_type, |(_, rest)| rest)
}

impl PlanTable {
    pub fn new(plans: Vec<Plan>) -> Self {
        Self { plans }
    }

    pub fn plans(&self) -> &[Plan] {
        &self.plans
    }

    /// The plan name for a `FlatRateSubscription` usage type. An unknown suffix passes through
    /// unchanged, so a new tier shows up under its own name instead of disappearing.
    pub fn name_for_usage_type(&self, usage_type: &str) -> String {
        let suffix = usage_type_suffix(usage_type);
        self.plans
            .iter()
            .find(|p| p.usage_type_suffix == suffix)
            .map_or_else(|| suffix.to_owned(), |p| p.name.clone())
    }

    pub fn by_name(&self, name: &str) -> Option<&Plan> {
        self.plans.iter().find(|p| p.name == name)
    }

    /// Problems that make the table unusable, each naming the plan (key `plans`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check().map_err(|m| ConfigError::key("plans", m))
    }

    fn check(&self) -> Result<(), String> {
        for (i, p) in self.plans.iter().enumerate() {
            let at = format!("plans[{i}] ({:?})", p.name);
            if p.name.is_empty() || p.usage_type_suffix.is_empty() {
                return Err(format!(
                    "{at}: name and usage_type_suffix must not be empty"
                ));
            }
            if p.monthly_usd.is_sign_negative()
                || p.included_credits.is_sign_negative()
                || p.overage_usd_per_credit.is_sign_negative()
            {
                return Err(format!("{at}: prices and credits must not be negative"));
            }
            if self.plans[..i]
                .iter()
                .any(|q| q.name == p.name || q.usage_type_suffix == p.usage_type_suffix)
            {
                return Err(format!("{at}: name or usage_type_suffix appears twice"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_usage_types_of_any_region() {
        let t = PlanTable::default();
        assert_eq!(t.name_for_usage_type("USE1-KiroEnterprise-Pro"), "Pro");
        assert_eq!(t.name_for_usage_type("EUC1-KiroEnterprise-ProPlus"), "Pro+");
        assert_eq!(t.name_for_usage_type("APN1-KiroEnterprise-Power"), "Power");
        assert_eq!(t.name_for_usage_type("KiroEnterprise-Power"), "Power");
        assert_eq!(
            t.name_for_usage_type("USE1-KiroEnterprise-ProMax"),
            "ProMax"
        );
        assert_eq!(t.name_for_usage_type("USE1-SomethingElse"), "SomethingElse");
    }

    #[test]
    fn rejects_duplicates_and_negative_prices() {
        let mut plans = PlanTable::default().plans().to_vec();
        plans[1].name = "Pro".into();
        assert!(
            PlanTable::new(plans)
                .validate()
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
        let mut plans = PlanTable::default().plans().to_vec();
        plans[0].monthly_usd = Decimal::from(-1);
        assert!(
            PlanTable::new(plans)
                .validate()
                .unwrap_err()
                .to_string()
                .contains("plans[0]")
        );
    }
}
