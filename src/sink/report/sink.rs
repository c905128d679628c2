//! The report as `serve` sends it: due on `report.schedule_day`, each channel once, revisions
//! of a sent month noticed.

use super::*;

/// State file sections: periods whose report went out, and channels that already have the card
/// of a period not yet delivered everywhere (so a retry sends it only to the others).
const SENT: &str = "reports";
const PARTLY_SENT: &str = "report_channels";
/// The total each sent report showed, to notice a month that changes afterwards.
const SENT_TOTALS: &str = "report_totals";
/// Periods remembered as sent.
const REMEMBERED: usize = 24;

/// The monthly report as `serve` sends it: the previous month, on `report.schedule_day`.
pub struct ReportSink {
    settings: ReportSettings,
    s3: Option<ReportS3>,
    channels: Vec<Arc<Channel>>,
    dashboard_url: String,
    /// Allocates a month that is no longer watched.
    source: Arc<dyn Source>,
    /// Builds the view of such a month as the daemon builds its snapshot (activity, names).
    builder: Arc<SnapshotBuilder>,
    file: Arc<StateFile>,
    sent: BTreeSet<BillingPeriod>,
    partly_sent: BTreeMap<BillingPeriod, BTreeSet<String>>,
    sent_totals: BTreeMap<BillingPeriod, Decimal>,
    telemetry: Arc<crate::telemetry::Telemetry>,
    served: Option<Arc<crate::server::State>>,
    /// The period whose report waits for history (said once).
    waiting: Option<BillingPeriod>,
}

impl ReportSink {
    pub(super) fn new(
        settings: ReportSettings,
        cx: &crate::sink::SinkContext,
        file: Arc<StateFile>,
        s3: Option<ReportS3>,
        channels: Vec<Arc<Channel>>,
    ) -> Self {
        let (sent, problem) = file.section(SENT);
        let (partly_sent, problem2) = file.section(PARTLY_SENT);
        let (sent_totals, problem3) = file.section(SENT_TOTALS);
        for reason in problem.into_iter().chain(problem2).chain(problem3) {
            tracing::error!(file = %file.path().display(), "state file unusable ({reason}); starting with no reports recorded");
        }
        Self {
            settings,
            s3,
            channels,
            dashboard_url: cx.dashboard_url.clone(),
            source: cx.source.clone(),
            builder: cx.builder.clone(),
            file,
            sent,
            partly_sent,
            sent_totals,
            telemetry: cx.telemetry.clone(),
            served: Some(cx.server.clone()),
            waiting: None,
        }
    }

    /// The tenure of `period`'s seats as history has it; `None` while history is still reading
    /// the months before it (one after another): the report's tenure columns wait for them, so
    /// that the report says what a later one would.
    fn tenure<'s>(
        &mut self,
        snapshot: &'s Snapshot,
        period: BillingPeriod,
    ) -> Option<Option<&'s super::SeatTenure>> {
        let history = &snapshot.history;
        if history.kept && !history.settled {
            if self.waiting != Some(period) {
                tracing::info!(%period, "monthly report waits for history to read the months before it");
                self.waiting = Some(period);
            }
            return None;
        }
        Some(
            history
                .closed_tenure
                .as_ref()
                .filter(|(p, _)| *p == period)
                .map(|(_, t)| t),
        )
    }

    /// A month still watched after its report went out (AWS may update it for two weeks) whose
    /// total changed since: logged, counted, and remembered so it is counted once per change.
    async fn notice_revisions(&mut self, snapshot: &Snapshot) {
        let mut changed = false;
        for v in &snapshot.periods {
            let period = v.allocation.period;
            let Some(sent) = self.sent_totals.get(&period).copied() else {
                continue;
            };
            if sent != v.total_cost_usd {
                tracing::warn!(
                    %period,
                    reported_usd = %sent,
                    now_usd = %v.total_cost_usd,
                    "the bill of a month changed after its monthly report was sent; `report --period {period}` writes a corrected CSV"
                );
                self.telemetry.record_closed_revision();
                self.sent_totals.insert(period, v.total_cost_usd);
                changed = true;
            }
        }
        if changed {
            self.save("a revised month's total").await;
        }
    }

    /// Tells `channels` the export has no data for `period`, once (a channel that has the card
    /// is not sent it again).
    async fn send_no_data(
        &mut self,
        period: BillingPeriod,
        reason: &str,
        channels: &[&Channel],
    ) -> Result<Delivery, SinkError> {
        let card = no_data_card(period, reason, self.settings.locale);
        for ch in channels {
            if let Err(e) = ch.send(&card).await {
                self.save("the report's deliveries").await;
                return Err(SinkError::new(
                    FailureKind::Delivery,
                    format!("monthly report for {period}: the no-data card: {e}"),
                ));
            }
            self.partly_sent
                .entry(period)
                .or_default()
                .insert(ch.name().to_owned());
        }
        self.partly_sent.remove(&period);
        self.sent.insert(period);
        self.save("the report").await;
        tracing::info!(%period, "no Kiro data for the month; a no-data card was sent");
        Ok(Delivery::Done)
    }

    /// Records what was sent in the state file; a failure is counted and logged, and what was
    /// recorded stays in memory for the next save.
    async fn save(&self, what: &str) {
        self.file.put(SENT, &self.sent);
        self.file.put(SENT_TOTALS, &self.sent_totals);
        if self.partly_sent.is_empty() {
            self.file.remove(PARTLY_SENT);
        } else {
            self.file.put(PARTLY_SENT, &self.partly_sent);
        }
        let saved = self.file.save().await;
        self.telemetry.record_state_save(saved.is_ok());
        if let Err(e) = saved {
            tracing::error!(
                "cannot record {what} in the state file; it stays recorded in memory: {e}"
            );
        }
    }
}

#[async_trait]
impl Sink for ReportSink {
    fn name(&self) -> &'static str {
        "report"
    }

    async fn deliver(
        &mut self,
        snapshot: &Snapshot,
        now: DateTime<Utc>,
    ) -> Result<Delivery, SinkError> {
        self.notice_revisions(snapshot).await;
        let day = self.settings.schedule_day;
        if day == 0 || now.day() < day {
            return Ok(Delivery::NotDue);
        }
        let period = BillingPeriod::containing(now).previous();
        if self.sent.contains(&period) {
            return Ok(Delivery::NotDue);
        }
        let Some(tenure) = self.tenure(snapshot, period) else {
            return Ok(Delivery::NotDue);
        };
        let wanted = &self.settings.channels;
        let done = self.partly_sent.get(&period).cloned().unwrap_or_default();
        let owned: Vec<Arc<Channel>> = self
            .channels
            .iter()
            .filter(|c| {
                (wanted.is_empty() || wanted.iter().any(|w| w == c.name()))
                    && !done.contains(c.name())
            })
            .cloned()
            .collect();
        let channels: Vec<&Channel> = owned.iter().map(Arc::as_ref).collect();
        let built;
        let (view, people) = match snapshot.period(period) {
            Some(v) => (v, &snapshot.people),
            // Built as the daemon builds its snapshot: with the activity report and names.
            None => match self.source.allocate(period).await {
                Ok(allocation) => {
                    built = self.builder.build(now, vec![allocation]).await.snapshot;
                    match built.periods.first() {
                        Some(v) => (v, &built.people),
                        None => return Ok(Delivery::NotDue),
                    }
                }
                // The export has no such month: say so rather than stay silent.
                Err(e) if e.kind() == FailureKind::NoData => {
                    return self.send_no_data(period, &e.to_string(), &channels).await;
                }
                Err(e) => {
                    return Err(SinkError::new(
                        e.kind(),
                        format!("monthly report for {period}: cannot allocate the month: {e}"),
                    ));
                }
            },
        };
        match run(
            view,
            people,
            &self.settings,
            self.s3.as_ref(),
            &channels,
            &self.dashboard_url,
            tenure,
        )
        .await
        {
            Ok(out) => {
                if let Some(state) = &self.served {
                    state.put_report(&file_name(period), out.csv.clone());
                }
                self.sent.insert(period);
                self.sent_totals.insert(period, view.total_cost_usd);
                self.partly_sent.remove(&period);
                while self.sent.len() > REMEMBERED {
                    self.sent.pop_first();
                }
                while self.sent_totals.len() > REMEMBERED {
                    self.sent_totals.pop_first();
                }
                self.save("the report").await;
                // Logged once recorded, so whoever reads the line finds the state file saying so.
                tracing::info!(%period, path = %out.path.display(), uploaded = out.link.is_some(), cards = out.cards_sent, "monthly report sent");
                Ok(Delivery::Done)
            }
            Err(e) => {
                if let ReportError::Undelivered { delivered, .. } = &e
                    && !delivered.is_empty()
                {
                    // Recorded so that the retry does not send these channels the card again.
                    self.partly_sent
                        .entry(period)
                        .or_default()
                        .extend(delivered.iter().cloned());
                    self.save("the report's deliveries").await;
                }
                Err(SinkError {
                    kind: e.kind(),
                    message: format!(
                        "monthly report for {period} failed; retried at the next refresh for the channels that lack it: {e}"
                    ),
                })
            }
        }
    }
}
