//! The budgets as `serve` keeps them: synced on an interval, read back after every refresh.

use super::*;

/// Keeps AWS Budgets in line after a refresh, at most once per `budgets.sync_interval`, and
/// exports what they report.
pub struct BudgetsSink {
    reconciler: Reconciler,
    last_sync: Option<std::time::Instant>,
    telemetry: std::sync::Arc<Telemetry>,
}

impl BudgetsSink {
    pub fn new(reconciler: Reconciler, telemetry: std::sync::Arc<Telemetry>) -> Self {
        Self {
            reconciler,
            last_sync: None,
            telemetry,
        }
    }
}

#[async_trait]
impl Sink for BudgetsSink {
    fn name(&self) -> &'static str {
        "aws_budgets"
    }

    /// Plan and apply, then read back; a failure is retried after the next refresh.
    async fn deliver(
        &mut self,
        snapshot: &Snapshot,
        _now: DateTime<Utc>,
    ) -> Result<Delivery, SinkError> {
        let interval = self.reconciler.settings().sync_interval;
        if self.last_sync.is_some_and(|t| t.elapsed() < interval) {
            return Ok(Delivery::NotDue);
        }
        let seen: Vec<&str> = snapshot
            .current()
            .map(|v| v.cost_centers.keys().map(String::as_str).collect())
            .unwrap_or_default();
        match self.reconciler.sync(seen, false).await {
            Ok(changes) => {
                for c in &changes {
                    tracing::info!("budgets: {c}");
                }
                self.last_sync = Some(std::time::Instant::now());
            }
            Err(e) => {
                self.telemetry.record_budget_sync(false);
                return Err(SinkError::new(
                    FailureKind::Aws,
                    format!("budgets sync failed; retried after the next refresh: {e}"),
                ));
            }
        }
        match self.reconciler.readings().await {
            Ok(r) => {
                self.telemetry.record_budget_sync(true);
                self.telemetry.set_budgets(&r);
                Ok(Delivery::Done)
            }
            Err(e) => {
                self.telemetry.record_budget_sync(false);
                // Read back at the next refresh, not after the next sync interval.
                self.last_sync = None;
                Err(SinkError::new(
                    FailureKind::Aws,
                    format!("cannot read the budgets back; retried after the next refresh: {e}"),
                ))
            }
        }
    }
}
