//! The plan table: which Kiro plan a subscription usage type stands for, what it costs and how
//! many credits it includes.
//!
//! Defaults come from Kiro's published enterprise pricing (Pro $20 / 1,000 credits, Pro+ $40 /
//! 2,000, Power $200 / 10,000, overage $0.04 per credit) and AWS's own Kiro dashboard (Pro Max,
//! 5,000 credits; its price, $100 here, is not in the official table: check it against your
//! bill, which the allocation learns it from when a full-month seat line shows it). The table
//! is configuration, not code.
//!
//! Tiers are spelled differently by source (`ProPlus` and `ProMax` in usage types, `PRO_PLUS`
//! and `PRO_MAX` in the activity report, `Pro+` and `Pro Max` in the console); every lookup
//! goes through one normalised key ([`tier_key`]). A tier the table does not know keeps its
//! label and is never read as 0 included credits.

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
                plan("Pro Max", "ProMax", 100, 5_000),
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

/// One key for every spelling of a tier: lower case, without `_`, `-` or spaces, `+` as
/// `plus` (`ProMax`, `PRO_MAX` and `Pro Max` are `promax`; `Pro+` and `PRO_PLUS` are `proplus`).
pub fn tier_key(tier: &str) -> String {
    let mut out = String::with_capacity(tier.len() + 3);
    for c in tier.trim().chars() {
        match c {
            '_' | '-' | ' ' => {}
            '+' => out.push_str("plus"),
            c => out.extend(c.to_lowercase()),
        }
    }
    out
}

impl PlanTable {
    pub fn new(plans: Vec<Plan>) -> Self {
        Self { plans }
    }

    pub fn plans(&self) -> &[Plan] {
        &self.plans
    }

    /// The plan a tier stands for, whatever its spelling: the plan's name or its usage type
    /// suffix (`Pro Max`, `ProMax`, `PRO_MAX`).
    pub fn resolve(&self, tier: &str) -> Option<&Plan> {
        // As written in the table (the names units carry): no key to build. Names and
        // suffixes are distinct by their keys in a valid table, so this finds the same plan.
        if !tier.is_empty()
            && let Some(p) = self
                .plans
                .iter()
                .find(|p| p.name == tier || p.usage_type_suffix == tier)
        {
            return Some(p);
        }
        let key = tier_key(tier);
        if key.is_empty() {
            return None;
        }
        self.plans
            .iter()
            .find(|p| tier_key(&p.name) == key || tier_key(&p.usage_type_suffix) == key)
    }

    /// The plan name for a seat-fee usage type. An unknown tier passes through as written, so
    /// a new tier shows up under its own name instead of disappearing.
    pub fn name_for_usage_type(&self, usage_type: &str) -> String {
        let suffix = usage_type_suffix(usage_type);
        self.resolve(suffix)
            .map_or_else(|| suffix.to_owned(), |p| p.name.clone())
    }

    /// The plan of a name (any spelling).
    pub fn by_name(&self, name: &str) -> Option<&Plan> {
        self.resolve(name)
    }

    /// The table with monthly fees learned from the bill in place of the configured ones.
    pub fn with_fees(&self, fees: &std::collections::BTreeMap<String, Decimal>) -> Self {
        let mut t = self.clone();
        for p in &mut t.plans {
            if let Some(fee) = fees.get(&p.name) {
                p.monthly_usd = *fee;
            }
        }
        t
    }

    /// The table with the included credits the activity report gives per tier
    /// (`Usage_Limit`, any spelling of the tier) in place of the configured ones, and each
    /// plan where they differ: (plan name, configured, the report's).
    pub fn with_allowances(
        &self,
        allowances: &std::collections::BTreeMap<String, Decimal>,
    ) -> (Self, Vec<(String, Decimal, Decimal)>) {
        let mut t = self.clone();
        let mut differ = Vec::new();
        for (tier, limit) in allowances {
            let key = tier_key(tier);
            let Some(p) = t
                .plans
                .iter_mut()
                .find(|p| tier_key(&p.name) == key || tier_key(&p.usage_type_suffix) == key)
            else {
                continue;
            };
            if p.included_credits != *limit {
                differ.push((p.name.clone(), p.included_credits, *limit));
                p.included_credits = *limit;
            }
        }
        (t, differ)
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
            let keys = [tier_key(&p.name), tier_key(&p.usage_type_suffix)];
            if self.plans[..i].iter().any(|q| {
                keys.contains(&tier_key(&q.name)) || keys.contains(&tier_key(&q.usage_type_suffix))
            }) {
                return Err(format!(
                    "{at}: name or usage_type_suffix appears twice (spellings are compared \
                     without case, '_', '-' or spaces)"
                ));
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
            "Pro Max"
        );
        assert_eq!(t.name_for_usage_type("USE1-SomethingElse"), "SomethingElse");
        assert_eq!(
            t.name_for_usage_type("USE1-KiroEnterprise-Ultra"),
            "Ultra",
            "an unknown tier keeps its label"
        );
        assert!(t.by_name("Ultra").is_none());
    }

    #[test]
    fn every_spelling_of_a_tier_is_one_plan() {
        let t = PlanTable::default();
        for (spelling, name, credits) in [
            ("ProMax", "Pro Max", 5_000),
            ("PRO_MAX", "Pro Max", 5_000),
            ("Pro Max", "Pro Max", 5_000),
            ("pro-max", "Pro Max", 5_000),
            ("ProPlus", "Pro+", 2_000),
            ("PRO_PLUS", "Pro+", 2_000),
            ("Pro+", "Pro+", 2_000),
            ("PRO", "Pro", 1_000),
            ("POWER", "Power", 10_000),
        ] {
            let p = t.resolve(spelling).unwrap_or_else(|| panic!("{spelling}"));
            assert_eq!(
                (p.name.as_str(), p.included_credits),
                (name, Decimal::from(credits))
            );
        }
        assert!(t.resolve("").is_none());
        assert!(t.resolve("FREE").is_none());
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
