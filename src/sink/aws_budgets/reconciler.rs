//! Describes the owned budgets, applies the plan's changes, and reads budgets back.

use super::*;

#[derive(Debug, thiserror::Error)]
#[error("AWS Budgets {operation}: {message}")]
pub struct BudgetError {
    pub operation: &'static str,
    pub message: String,
}

fn sdk<E, R>(operation: &'static str) -> impl FnOnce(SdkError<E, R>) -> BudgetError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: fmt::Debug,
{
    move |e| BudgetError {
        operation,
        message: crate::aws::error_message(&e),
    }
}

fn limit_of(b: &Budget) -> Option<Decimal> {
    b.budget_limit().and_then(|s| s.amount().parse().ok())
}

fn amount(s: Option<&Spend>) -> Option<f64> {
    s.and_then(|s| s.amount().parse::<f64>().ok())
}

/// Reconciles budgets with AWS Budgets.
pub struct Reconciler {
    client: aws_sdk_budgets::Client,
    settings: BudgetSettings,
}

impl Reconciler {
    pub fn new(shared: &aws_config::SdkConfig, settings: BudgetSettings) -> Self {
        Self {
            client: aws_sdk_budgets::Client::new(shared),
            settings,
        }
    }

    pub fn settings(&self) -> &BudgetSettings {
        &self.settings
    }

    /// The owned budgets, with their notifications and subscribers.
    pub async fn current(&self) -> Result<BTreeMap<String, Current>, BudgetError> {
        let account = &self.settings.account_id;
        let mut budgets = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .describe_budgets()
                .account_id(account)
                // Without it, FilterExpression is left out of the answer.
                .show_filter_expression(true)
                .set_next_token(token)
                .send()
                .await
                .map_err(sdk("DescribeBudgets"))?;
            budgets.extend(page.budgets().iter().cloned());
            token = page
                .next_token()
                .map(str::to_owned)
                .filter(|t| !t.is_empty());
            if token.is_none() {
                break;
            }
        }
        let mut out = BTreeMap::new();
        for b in budgets
            .into_iter()
            .filter(|b| b.budget_name().starts_with(&self.settings.name_prefix))
        {
            let name = b.budget_name().to_owned();
            let notes = self
                .client
                .describe_notifications_for_budget()
                .account_id(account)
                .budget_name(&name)
                .send()
                .await
                .map_err(sdk("DescribeNotificationsForBudget"))?;
            let mut notifications = BTreeMap::new();
            for n in notes.notifications() {
                let subs = self
                    .client
                    .describe_subscribers_for_notification()
                    .account_id(account)
                    .budget_name(&name)
                    .notification(n.clone())
                    .send()
                    .await
                    .map_err(sdk("DescribeSubscribersForNotification"))?;
                let mut list: Vec<(String, String)> = subs
                    .subscribers()
                    .iter()
                    .map(|s| {
                        (
                            s.subscription_type().as_str().to_owned(),
                            s.address().to_owned(),
                        )
                    })
                    .collect();
                list.sort();
                notifications.insert(notification_key(n), (n.clone(), list));
            }
            out.insert(
                name,
                Current {
                    budget: b,
                    notifications,
                },
            );
        }
        Ok(out)
    }

    /// The changes that bring AWS in line with `desired`.
    pub fn plan(&self, desired: &[Desired], current: &BTreeMap<String, Current>) -> Vec<Change> {
        let mut changes = Vec::new();
        let mut wanted_subs: Vec<(String, String)> = self
            .settings
            .subscriber_list()
            .iter()
            .map(|s| {
                (
                    s.subscription_type().as_str().to_owned(),
                    s.address().to_owned(),
                )
            })
            .collect();
        wanted_subs.sort();
        let wanted_notes: BTreeMap<NotificationKey, Notification> = self
            .settings
            .notifications
            .iter()
            .map(spec_notification)
            .map(|n| (notification_key(&n), n))
            .collect();
        for d in desired {
            let Some(cur) = current.get(&d.name) else {
                changes.push(Change::Create(d.clone()));
                for n in wanted_notes.values() {
                    if !wanted_subs.is_empty() {
                        changes.push(Change::AddNotification {
                            budget: d.name.clone(),
                            notification: n.clone(),
                        });
                    }
                }
                continue;
            };
            let limit = limit_of(&cur.budget);
            let want_filter = self.settings.filter(d.cost_center.as_deref());
            let filter_changed = cur.budget.filter_expression() != Some(&want_filter);
            let limit_changed = limit != Some(d.limit);
            if limit_changed || filter_changed {
                changes.push(Change::Update {
                    desired: d.clone(),
                    limit_from: limit_changed
                        .then(|| limit.map_or_else(|| "none".to_owned(), |l| l.to_string())),
                    filter_changed,
                });
            }
            for (k, (n, subs)) in &cur.notifications {
                if !wanted_notes.contains_key(k) || *subs != wanted_subs {
                    changes.push(Change::RemoveNotification {
                        budget: d.name.clone(),
                        notification: n.clone(),
                    });
                }
            }
            for (k, n) in &wanted_notes {
                let same = cur
                    .notifications
                    .get(k)
                    .is_some_and(|(_, subs)| *subs == wanted_subs);
                if !same && !wanted_subs.is_empty() {
                    changes.push(Change::AddNotification {
                        budget: d.name.clone(),
                        notification: n.clone(),
                    });
                }
            }
        }
        if self.settings.prune {
            let declared: BTreeSet<&str> = desired.iter().map(|d| d.name.as_str()).collect();
            for name in current.keys() {
                if !declared.contains(name.as_str()) {
                    changes.push(Change::Delete {
                        budget: name.clone(),
                    });
                }
            }
        }
        changes
    }

    fn budget(&self, d: &Desired) -> Budget {
        Budget::builder()
            .budget_name(&d.name)
            .budget_type(BudgetType::Cost)
            .time_unit(TimeUnit::Monthly)
            .budget_limit(
                Spend::builder()
                    .amount(d.limit.to_string())
                    .unit("USD")
                    .build()
                    .expect("amount and unit set"),
            )
            .filter_expression(self.settings.filter(d.cost_center.as_deref()))
            .build()
            .expect("name, type and time unit set")
    }

    /// Applies a plan, in order.
    pub async fn apply(&self, changes: &[Change]) -> Result<(), BudgetError> {
        let account = &self.settings.account_id;
        for c in changes {
            match c {
                Change::Create(d) => {
                    let created = self
                        .client
                        .create_budget()
                        .account_id(account)
                        .budget(self.budget(d))
                        .send()
                        .await;
                    match created {
                        Ok(_) => {}
                        // Another exporter of the same bill (an HA pair) created it since the
                        // listing: make it what this configuration says.
                        Err(e) if e.code() == Some("DuplicateRecordException") => {
                            self.client
                                .update_budget()
                                .account_id(account)
                                .new_budget(self.budget(d))
                                .send()
                                .await
                                .map_err(sdk("UpdateBudget"))?;
                        }
                        Err(e) => return Err(sdk("CreateBudget")(e)),
                    }
                }
                Change::Update { desired, .. } => {
                    self.client
                        .update_budget()
                        .account_id(account)
                        .new_budget(self.budget(desired))
                        .send()
                        .await
                        .map_err(sdk("UpdateBudget"))?;
                }
                Change::AddNotification {
                    budget,
                    notification,
                } => {
                    let added = self
                        .client
                        .create_notification()
                        .account_id(account)
                        .budget_name(budget)
                        .notification(notification.clone())
                        .set_subscribers(Some(self.settings.subscriber_list()))
                        .send()
                        .await;
                    match added {
                        // Already there (added by another exporter of the same bill).
                        Ok(_) => {}
                        Err(e) if e.code() == Some("DuplicateRecordException") => {}
                        Err(e) => return Err(sdk("CreateNotification")(e)),
                    }
                }
                Change::RemoveNotification {
                    budget,
                    notification,
                } => {
                    self.client
                        .delete_notification()
                        .account_id(account)
                        .budget_name(budget)
                        .notification(notification.clone())
                        .send()
                        .await
                        .map_err(sdk("DeleteNotification"))?;
                }
                Change::Delete { budget } => {
                    self.client
                        .delete_budget()
                        .account_id(account)
                        .budget_name(budget)
                        .send()
                        .await
                        .map_err(sdk("DeleteBudget"))?;
                }
            }
        }
        Ok(())
    }

    /// Describes, plans and (unless `dry_run`) applies; returns the plan.
    pub async fn sync<'a>(
        &self,
        seen: impl IntoIterator<Item = &'a str>,
        dry_run: bool,
    ) -> Result<Vec<Change>, BudgetError> {
        let desired = self.settings.desired(seen);
        let current = self.current().await?;
        let changes = self.plan(&desired, &current);
        if !dry_run {
            self.apply(&changes).await?;
        }
        Ok(changes)
    }

    /// Limit, actual and forecasted spend of every owned budget, as AWS reports them.
    pub async fn readings(&self) -> Result<Vec<BudgetReading>, BudgetError> {
        let desired = self.settings.desired(std::iter::empty());
        let total_name = format!("{}total", self.settings.name_prefix);
        let cc_prefix = format!("{}cc-", self.settings.name_prefix);
        Ok(self
            .current()
            .await?
            .into_iter()
            .map(|(name, c)| {
                let cost_center = if name == total_name {
                    TOTAL_LABEL.to_owned()
                } else {
                    desired
                        .iter()
                        .find(|d| d.name == name)
                        .and_then(|d| d.cost_center.clone())
                        .unwrap_or_else(|| {
                            name.strip_prefix(&cc_prefix).unwrap_or(&name).to_owned()
                        })
                };
                let spend = c.budget.calculated_spend();
                BudgetReading {
                    limit_usd: limit_of(&c.budget)
                        .and_then(|d| rust_decimal::prelude::ToPrimitive::to_f64(&d))
                        .unwrap_or(0.0),
                    actual_usd: amount(spend.and_then(|s| s.actual_spend())),
                    forecast_usd: amount(spend.and_then(|s| s.forecasted_spend())),
                    budget: name,
                    cost_center,
                }
            })
            .collect())
    }
}
