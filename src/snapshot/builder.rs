//! Gathers what a snapshot is built from besides the bill (the activity report of each
//! period, the names of its users) and builds it with [`Snapshot::build`]. The daemon, every
//! command that shows a period and the report of a month the snapshot no longer holds use
//! this one builder, so they cannot disagree.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use super::{People, Snapshot};
use crate::allocation::savings::{Prior, SavingsSettings};
use crate::allocation::{Allocation, PlanTable};
use crate::source::activity::{Activity, ActivityReader};
use crate::source::identity::{IdentityResolver, IdentitySettings, Lookups, people};

/// What a snapshot is priced with and where its activity and names come from.
#[derive(Default)]
pub struct SnapshotBuilder {
    plans: PlanTable,
    savings: SavingsSettings,
    /// The activity report, read next to the bill when configured.
    activity: Option<ActivityReader>,
    /// Identity Store, when configured.
    identity: Option<IdentityResolver>,
    /// The directory file, which of a person's fields are exported, the cost-center attribute.
    identity_settings: IdentitySettings,
}

/// A built snapshot and how reading its inputs went, for the exporter's own metrics.
#[derive(Debug)]
pub struct Built {
    pub snapshot: Snapshot,
    /// Identity Store lookups, when it is configured.
    pub lookups: Option<Lookups>,
    /// Activity report files skipped as malformed, when the report is read.
    pub activity_malformed: Option<usize>,
}

impl SnapshotBuilder {
    /// Prices with `plans`, recommends with `savings`; no activity report, no names.
    pub fn new(plans: PlanTable, savings: SavingsSettings) -> Self {
        Self {
            plans,
            savings,
            ..Self::default()
        }
    }

    /// Reads the activity report of every period, next to the bill.
    #[must_use]
    pub fn with_activity(mut self, reader: Option<ActivityReader>) -> Self {
        self.activity = reader;
        self
    }

    /// Names users from the directory file, the activity report's e-mails and Identity Store
    /// (when `resolver` is given), exporting the fields `settings.labels` lists.
    #[must_use]
    pub fn with_identity(
        mut self,
        resolver: Option<IdentityResolver>,
        settings: IdentitySettings,
    ) -> Self {
        self.identity = resolver;
        self.identity_settings = settings;
        self
    }

    /// The snapshot of `allocations` (oldest first) as of `taken_at`.
    pub async fn build(&self, taken_at: DateTime<Utc>, allocations: Vec<Allocation>) -> Built {
        self.build_with(taken_at, allocations, None).await
    }

    /// [`Self::build`], with the last closed month's seats as history kept them (`last_closed`)
    /// for a running month whose month before is not among `allocations`.
    pub async fn build_with(
        &self,
        taken_at: DateTime<Utc>,
        allocations: Vec<Allocation>,
        last_closed: Option<Prior>,
    ) -> Built {
        let mut periods = Vec::with_capacity(allocations.len());
        let mut malformed = 0;
        for a in allocations {
            let activity = match &self.activity {
                Some(reader) => {
                    let mut read = reader.read(a.period).await;
                    malformed += read.malformed.len();
                    // A running month is decided from the trailing window, across months.
                    if taken_at < a.period.end() {
                        read.trailing = reader.read_trailing(taken_at).await;
                    }
                    Some(read)
                }
                None => None,
            };
            periods.push((a, activity));
        }
        let (people, lookups) = self.people(&periods).await;
        Built {
            snapshot: Snapshot::build(
                taken_at,
                periods,
                people,
                &self.plans,
                &self.savings,
                last_closed,
            ),
            lookups,
            activity_malformed: self.activity.as_ref().map(|_| malformed),
        }
    }

    /// Who the users of `periods` are, and the ids that are one person.
    async fn people(
        &self,
        periods: &[(Allocation, Option<Activity>)],
    ) -> (People, Option<Lookups>) {
        // The ids Identity Store is asked for, only when there is one to ask.
        let ids: BTreeSet<&str> = match self.identity {
            Some(_) => periods
                .iter()
                .flat_map(|(a, _)| a.units.iter().map(|u| u.user_id.as_str()))
                .filter(|id| !id.is_empty())
                .collect(),
            None => BTreeSet::new(),
        };
        let activity: Vec<&Activity> = periods.iter().filter_map(|(_, a)| a.as_ref()).collect();
        let (names, mut lookups) = people(
            self.identity.as_ref(),
            &self.identity_settings,
            ids,
            &activity,
        )
        .await;
        let people = People {
            names,
            same_person: std::mem::take(&mut lookups.same_person),
        };
        (people, self.identity.as_ref().map(|_| lookups))
    }
}
