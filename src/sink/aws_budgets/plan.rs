//! The plan: the budgets the config declares, those AWS holds, and the changes between them.

use super::*;

/// A budget the config declares.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub name: String,
    /// `None`: all of Kiro.
    pub cost_center: Option<String>,
    pub limit: Decimal,
}

/// The comparable part of a notification and its subscribers.
pub(super) type NotificationKey = (String, String, String);

pub(super) fn notification_key(n: &Notification) -> NotificationKey {
    (
        n.notification_type().as_str().to_owned(),
        n.comparison_operator().as_str().to_owned(),
        format!("{}", n.threshold()),
    )
}

pub(super) fn spec_notification(n: &NotificationSpec) -> Notification {
    Notification::builder()
        .notification_type(match n.kind {
            Kind::Actual => NotificationType::Actual,
            Kind::Forecasted => NotificationType::Forecasted,
        })
        .comparison_operator(ComparisonOperator::GreaterThan)
        .threshold(n.threshold_percent)
        .threshold_type(ThresholdType::Percentage)
        .build()
        .expect("type, operator and threshold set")
}

/// What an owned budget looks like now.
#[derive(Debug, Clone)]
pub struct Current {
    pub budget: Budget,
    /// Notification → its subscribers (type, address), sorted.
    pub notifications: BTreeMap<NotificationKey, (Notification, Vec<(String, String)>)>,
}

/// One change of a plan.
#[derive(Debug, Clone)]
pub enum Change {
    Create(Desired),
    Update {
        desired: Desired,
        limit_from: Option<String>,
        filter_changed: bool,
    },
    AddNotification {
        budget: String,
        notification: Notification,
    },
    RemoveNotification {
        budget: String,
        notification: Notification,
    },
    Delete {
        budget: String,
    },
}

pub(super) fn describe_notification(n: &Notification) -> String {
    format!("{} > {}%", n.notification_type().as_str(), n.threshold())
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scope = |d: &Desired| {
            d.cost_center.as_ref().map_or_else(
                || "all of Kiro".to_owned(),
                |cc| format!("cost center {cc}"),
            )
        };
        match self {
            Self::Create(d) => write!(
                f,
                "+ create {}: {} USD a month, {}",
                d.name,
                d.limit,
                scope(d)
            ),
            Self::Update {
                desired,
                limit_from,
                filter_changed,
            } => {
                write!(f, "~ update {}:", desired.name)?;
                if let Some(from) = limit_from {
                    write!(f, " limit {from} -> {} USD", desired.limit)?;
                }
                if *filter_changed {
                    write!(f, " filter -> Kiro, {}", scope(desired))?;
                }
                Ok(())
            }
            Self::AddNotification {
                budget,
                notification,
            } => write!(
                f,
                "+ notify {budget}: {}",
                describe_notification(notification)
            ),
            Self::RemoveNotification {
                budget,
                notification,
            } => write!(
                f,
                "- notify {budget}: {}",
                describe_notification(notification)
            ),
            Self::Delete { budget } => write!(f, "- delete {budget} (prune)"),
        }
    }
}
