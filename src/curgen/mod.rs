//! Synthetic CUR 2.0 exports: Kiro bills that look like real ones, among other services' lines,
//! for the demo, the tests and the benchmarks.
//!
//! What is taken from the published facts (shared facts, kiro-billing): plan prices and included
//! credits (Pro $20 / 1,000, Pro+ $40 / 2,000, Pro Max 5,000, Power $200 / 10,000), overage at
//! $0.04 per credit metered in 0.01 steps, line shapes (`FlatRateSubscription` seat lines with
//! operation `monthly-subscription`, usage type `<REGION>-KiroEnterprise-<Plan>` and prorated
//! seat-months as usage amount; hourly `Usage` lines with operation `Credits` in `Credits`),
//! upgrades refunding the lower tier and charging the higher in full, duplicate subscriptions
//! across accounts billed twice, overage switched per account, an enterprise discount line
//! without a user, and the tag map key `userAttribute/costCenter`. From what AWS's own Kiro
//! dashboard learned from real bills: seat fees dated on the 1st in most accounts and spread
//! daily in one; a user's first credits line of a month written under a second pricing unit;
//! `q-developer-snapshot` lines among Kiro's; a user subscribed in two regions of one account
//! (billed twice); `line_item_net_unblended_cost` null where an account has no discount; and,
//! with [`Shape::Cid`], an export without `line_item_user_identifier`, users named in
//! `line_item_resource_id` only, as AWS's CID export carries them.
//!
//! What is an assumption, chosen to be plausible and kept in one place ([`Assumptions`]): the plan
//! mix, the usage distribution, how often users move, upgrade, join, get refunds; the tax rate and
//! which accounts pay it; the discount rate; which accounts fill `line_item_resource_id` instead
//! of `line_item_user_identifier`; the shapes of the refund, credit, tax and snapshot lines; the
//! Pro Max price ($100); and the name of the second pricing unit (`Units`), which the allocation
//! does not depend on.
//!
//! Generation is deterministic for a seed. Lines are streamed to a [`LineSink`] so an export of
//! any size is written with bounded memory.

pub mod activity;
mod writer;

use std::path::Path;

use chrono::{DateTime, Datelike, Duration, Utc, Weekday};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal};

use crate::period::BillingPeriod;
pub use writer::{ExportWriter, ROW_GROUP_ROWS, WriteError, cur_schema};

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenSpec {
    pub users: usize,
    pub months: u32,
    pub start: BillingPeriod,
    /// Lines of other services per Kiro line.
    pub noise_ratio: f64,
    pub seed: u64,
    /// Export name, used in file names.
    pub export_name: String,
    /// Rows per Parquet file before a new file is started.
    pub rows_per_file: usize,
    /// Lines that start at or after this instant are not written (a month to date).
    pub until: Option<DateTime<Utc>>,
    /// Which columns the export has.
    pub shape: Shape,
    /// Also write a Kiro user activity report under `<dir>/activity/` ([`activity`]), and a
    /// directory file of synthetic people, `<dir>/activity/people.csv` (`identity.directory`).
    pub activity: bool,
    /// Rows per Parquet row group (AWS's files have been seen with 1M-row groups).
    pub row_group_rows: usize,
    /// Further `resourceTags/user:*` keys on every line, as an organisation with many
    /// activated cost allocation tags has (the `tags` map grows; the allocation reads one key).
    pub extra_tags: usize,
    /// Where other services' lines go among Kiro's.
    pub layout: Layout,
}

/// Where other services' lines go among Kiro's in the files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Layout {
    /// After each Kiro line, its share of other services' lines: Kiro lines spread through
    /// every row group.
    #[default]
    Interleaved,
    /// All of a month's Kiro lines first, then the other services' lines: whole row groups
    /// without a Kiro line.
    Blocks,
}

/// The column set of the export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Shape {
    /// Every CUR 2.0 column, users named in `line_item_user_identifier` (and in
    /// `line_item_resource_id` in one account).
    #[default]
    Full,
    /// As AWS's Cloud Intelligence Dashboards export: no `line_item_user_identifier`; every
    /// user named in `line_item_resource_id`.
    Cid,
}

impl Shape {
    /// Columns this shape leaves out of the export.
    pub fn omitted(self) -> &'static [&'static str] {
        match self {
            Self::Full => &[],
            Self::Cid => &["line_item_user_identifier"],
        }
    }
}

impl GenSpec {
    pub fn new(users: usize, start: BillingPeriod) -> Self {
        Self {
            users,
            months: 1,
            start,
            noise_ratio: 3.0,
            seed: 1,
            export_name: "kiro-cur".to_owned(),
            rows_per_file: 500_000,
            until: None,
            shape: Shape::Full,
            activity: false,
            row_group_rows: ROW_GROUP_ROWS,
            extra_tags: 0,
            layout: Layout::Interleaved,
        }
    }
}

/// The numbers no public source gives; see the module documentation.
#[derive(Debug, Clone)]
pub struct Assumptions {
    /// Share of users on Pro, Pro+, Pro Max (the rest on Power).
    pub plan_mix: [f64; 3],
    /// Share of users who use no credits in a month.
    pub idle_share: f64,
    /// Log-normal parameters of a user's monthly credits as a share of the plan's included
    /// credits: median e^mu, about 16% of active users beyond their included credits.
    pub usage_mu: f64,
    pub usage_sigma: f64,
    pub untagged_share: f64,
    pub empty_tag_share: f64,
    pub mover_share: f64,
    pub upgrade_share: f64,
    pub joiner_share: f64,
    pub duplicate_share: f64,
    pub refund_share: f64,
    pub credit_share: f64,
    pub tax_rate: f64,
    pub discount_rate: f64,
    /// Share of users whose first credits line of a month comes under the second pricing unit.
    pub second_unit_share: f64,
    /// Share of users with a `q-developer-snapshot` line in a month.
    pub snapshot_share: f64,
    /// Share of users with a second seat in the other region of their account.
    pub second_region_share: f64,
    /// Share of Kiro users who still hold an Amazon Q Developer Pro seat (drawn from the user
    /// id, so the other draws stay as they were); besides them each account has one user with
    /// a Q Developer seat and no Kiro seat.
    pub q_developer_share: f64,
    /// Q Developer Pro's monthly fee per user.
    pub q_developer_usd: f64,
}

impl Default for Assumptions {
    fn default() -> Self {
        Self {
            plan_mix: [0.55, 0.22, 0.08],
            idle_share: 0.10,
            usage_mu: -0.9,
            usage_sigma: 0.9,
            untagged_share: 0.05,
            empty_tag_share: 0.02,
            mover_share: 0.04,
            upgrade_share: 0.03,
            joiner_share: 0.05,
            duplicate_share: 0.02,
            refund_share: 0.02,
            credit_share: 0.01,
            tax_rate: 0.19,
            discount_rate: 0.03,
            second_unit_share: 0.15,
            snapshot_share: 0.05,
            second_region_share: 0.02,
            q_developer_share: 0.06,
            q_developer_usd: 19.0,
        }
    }
}

/// A Kiro plan as the generator bills it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanKind {
    Pro,
    ProPlus,
    ProMax,
    Power,
}

impl PlanKind {
    pub fn suffix(self) -> &'static str {
        match self {
            Self::Pro => "Pro",
            Self::ProPlus => "ProPlus",
            Self::ProMax => "ProMax",
            Self::Power => "Power",
        }
    }
    pub fn monthly_usd(self) -> f64 {
        match self {
            Self::Pro => 20.0,
            Self::ProPlus => 40.0,
            Self::ProMax => 100.0,
            Self::Power => 200.0,
        }
    }
    pub fn included_credits(self) -> f64 {
        match self {
            Self::Pro => 1_000.0,
            Self::ProPlus => 2_000.0,
            Self::ProMax => 5_000.0,
            Self::Power => 10_000.0,
        }
    }
    fn upgraded(self) -> Self {
        match self {
            Self::Pro => Self::ProPlus,
            Self::ProPlus => Self::ProMax,
            Self::ProMax | Self::Power => Self::Power,
        }
    }
}

/// Overage price per credit (facts: $0.04).
pub const OVERAGE_USD_PER_CREDIT: f64 = 0.04;

/// One CUR line, with the fields the export fills. The writer derives the other columns.
#[derive(Debug, Clone, PartialEq)]
pub struct CurLine {
    pub period: BillingPeriod,
    pub product_code: &'static str,
    pub account_id: String,
    pub region: &'static str,
    pub user_identifier: String,
    pub resource_id: String,
    pub line_type: &'static str,
    pub usage_type: String,
    pub operation: &'static str,
    pub pricing_unit: &'static str,
    pub usage_start: DateTime<Utc>,
    pub usage_end: DateTime<Utc>,
    pub usage_amount: f64,
    pub unblended_cost: f64,
    /// NULL where the account has no discount.
    pub net_unblended_cost: Option<f64>,
    pub rate: f64,
    pub description: String,
    /// `tags` map entries.
    pub tags: Vec<(String, String)>,
}

/// Receives generated lines in order.
pub trait LineSink {
    type Error;
    fn line(&mut self, line: CurLine) -> Result<(), Self::Error>;
    /// Called after the last line of each period.
    fn end_period(&mut self, _period: BillingPeriod) -> Result<(), Self::Error> {
        Ok(())
    }
}

impl LineSink for Vec<CurLine> {
    type Error = std::convert::Infallible;
    fn line(&mut self, line: CurLine) -> Result<(), Self::Error> {
        self.push(line);
        Ok(())
    }
}

/// Cost-center values the generator hands out, with commas, quotes and non-ASCII among them.
pub const COST_CENTERS: &[&str] = &[
    "CC-1001 Platform",
    "CC-1002 Payments",
    "CC-2040 Data & ML",
    "CC-3100 Mobile",
    "CC-4200 Security",
    "Sales, EMEA",
    "研发中心",
    "CC-5500 \"Growth\"",
];

#[derive(Debug, Clone, Copy)]
struct Region {
    code: &'static str,
    prefix: &'static str,
}

const REGIONS: [Region; 2] = [
    Region {
        code: "us-east-1",
        prefix: "USE1",
    },
    Region {
        code: "eu-central-1",
        prefix: "EUC1",
    },
];

#[derive(Debug, Clone)]
struct Account {
    id: String,
    region: Region,
    overage_enabled: bool,
    taxed: bool,
    discounted: bool,
    /// Lines name the user in `line_item_resource_id` only.
    resource_id_only: bool,
    /// Seat fees come as one line a day instead of one on the 1st.
    daily_fees: bool,
}

#[derive(Debug, Clone)]
enum Tag {
    Missing,
    Empty,
    Value(&'static str),
}

#[derive(Debug, Clone)]
struct User {
    id: String,
    account: usize,
    second_account: Option<usize>,
    plan: PlanKind,
    tag: Tag,
    /// Personal activity multiplier.
    activity: f64,
    /// Day of the first month the seat starts (1 = the whole month).
    join_day: u32,
    /// A second seat in the other region of the home account.
    second_region: bool,
}

/// What the parts of one user's month share.
#[derive(Clone, Copy)]
struct Month<'a> {
    /// The user's index.
    ui: usize,
    /// The first day of the month the user has a seat.
    first: u32,
    upgrade_day: Option<u32>,
    /// The user's home account, then a second one.
    accounts: &'a [usize],
    /// The cost-center tag on a day (a mover changes it mid-month).
    tag_on: &'a dyn Fn(u32) -> Tag,
}

/// Per (account, user) charges emitted so far in the current period, for tax.
#[derive(Default)]
struct Charges {
    taxable: f64,
    subscriptions: f64,
}

struct Gen<'a, S: LineSink> {
    spec: &'a GenSpec,
    a: Assumptions,
    rng: ChaCha8Rng,
    sink: &'a mut S,
    noise_carry: f64,
    /// Other services' lines owed by Kiro lines, written at the month's end (`Layout::Blocks`).
    noise_pending: usize,
    store_account: String,
    accounts: Vec<Account>,
    current_period: BillingPeriod,
}

fn round_to(x: f64, decimals: i32) -> f64 {
    let m = 10f64.powi(decimals);
    (x * m).round() / m
}

fn tags_for(tag: &Tag) -> Vec<(String, String)> {
    match tag {
        Tag::Missing => Vec::new(),
        Tag::Empty => vec![("userAttribute/costCenter".to_owned(), String::new())],
        Tag::Value(v) => vec![("userAttribute/costCenter".to_owned(), (*v).to_owned())],
    }
}

impl<S: LineSink> Gen<'_, S> {
    fn emit(&mut self, mut line: CurLine) -> Result<bool, S::Error> {
        if self.spec.until.is_some_and(|u| line.usage_start >= u) {
            return Ok(false);
        }
        let kiro = line.product_code == "Kiro";
        self.extra_tags(&mut line);
        self.sink.line(line)?;
        if kiro {
            self.noise_carry += self.spec.noise_ratio;
            while self.noise_carry >= 1.0 {
                self.noise_carry -= 1.0;
                match self.spec.layout {
                    Layout::Interleaved => self.emit_noise()?,
                    Layout::Blocks => self.noise_pending += 1,
                }
            }
        }
        Ok(true)
    }

    fn emit_noise(&mut self) -> Result<(), S::Error> {
        let mut noise = self.noise_line();
        self.extra_tags(&mut noise);
        self.sink.line(noise)
    }

    /// The other services' lines held back for the month's end (`Layout::Blocks`).
    fn flush_noise(&mut self) -> Result<(), S::Error> {
        for _ in 0..std::mem::take(&mut self.noise_pending) {
            self.emit_noise()?;
        }
        Ok(())
    }

    fn extra_tags(&self, line: &mut CurLine) {
        for i in 0..self.spec.extra_tags {
            line.tags.push((
                format!("resourceTags/user:Tag{i:02}"),
                format!(
                    "value-{}",
                    (i * 7 + line.usage_start.timestamp() as usize / 3600) % 13
                ),
            ));
        }
    }

    fn pick_tag(&mut self) -> Tag {
        let x: f64 = self.rng.random();
        if x < self.a.untagged_share {
            Tag::Missing
        } else if x < self.a.untagged_share + self.a.empty_tag_share {
            Tag::Empty
        } else {
            // Skewed towards the first cost centers, as real organisations are.
            let i = ((self.rng.random::<f64>().powi(2)) * COST_CENTERS.len() as f64) as usize;
            Tag::Value(COST_CENTERS[i.min(COST_CENTERS.len() - 1)])
        }
    }

    fn uuid(&mut self) -> String {
        let a: u32 = self.rng.random();
        let b: u16 = self.rng.random();
        let c: u16 = self.rng.random::<u16>() & 0x0fff;
        let d: u16 = (self.rng.random::<u16>() & 0x3fff) | 0x8000;
        let e: u64 = self.rng.random::<u64>() & 0xffff_ffff_ffff;
        format!("{a:08x}-{b:04x}-4{c:03x}-{d:04x}-{e:012x}")
    }

    fn noise_line(&mut self) -> CurLine {
        const SERVICES: &[(&str, &str, &str, &str)] = &[
            ("AmazonEC2", "BoxUsage:m6i.large", "RunInstances", "Hrs"),
            ("AmazonS3", "TimedStorage-ByteHrs", "PutObject", "GB-Mo"),
            (
                "AWSLambda",
                "Lambda-GB-Second",
                "Invoke",
                "Lambda-GB-Second",
            ),
            (
                "AmazonCloudWatch",
                "CW:MetricMonitorUsage",
                "MetricStorage",
                "Metrics",
            ),
            (
                "AmazonRDS",
                "InstanceUsage:db.r6g.large",
                "CreateDBInstance:0016",
                "Hrs",
            ),
            // A user-attributed seat of another product: must never count as Kiro.
            (
                "AmazonQ",
                "Q-Developer-Pro",
                "monthly-subscription",
                "Credits",
            ),
        ];
        let (product, usage, operation, unit) = SERVICES[self.rng.random_range(0..SERVICES.len())];
        let period = self.current_period;
        let day = self.rng.random_range(0..period.days());
        let hour = self.rng.random_range(0..24);
        let start = period.start() + Duration::days(i64::from(day)) + Duration::hours(hour);
        let region = REGIONS[self.rng.random_range(0..REGIONS.len())];
        let account = self.accounts[self.rng.random_range(0..self.accounts.len())]
            .id
            .clone();
        let cost = round_to(
            LogNormal::new(-2.5, 1.2)
                .expect("valid")
                .sample(&mut self.rng),
            8,
        );
        let is_q = product == "AmazonQ";
        let user = if is_q {
            let id = self.uuid();
            format!("arn:aws:identitystore::{}:user/{id}", self.store_account)
        } else {
            String::new()
        };
        let mut tags = vec![("resourceTags/user:Team".to_owned(), "infra".to_owned())];
        if is_q {
            tags = tags_for(&Tag::Value(COST_CENTERS[0]));
        }
        CurLine {
            period,
            product_code: product,
            account_id: account,
            region: region.code,
            user_identifier: user,
            resource_id: if is_q {
                String::new()
            } else {
                format!("res-{:016x}", self.rng.random::<u64>())
            },
            line_type: if is_q {
                "FlatRateSubscription"
            } else {
                "Usage"
            },
            usage_type: format!("{}-{usage}", region.prefix),
            operation,
            pricing_unit: unit,
            usage_start: start,
            usage_end: start + Duration::hours(1),
            usage_amount: round_to(self.rng.random_range(0.01..10.0), 4),
            unblended_cost: cost,
            net_unblended_cost: None,
            rate: 0.0,
            description: format!("{product} usage"),
            tags,
        }
    }
}

/// Generates the export described by `spec`, streaming lines to `sink` month by month.
pub fn generate<S: LineSink>(spec: &GenSpec, sink: &mut S) -> Result<(), S::Error> {
    generate_with(spec, &Assumptions::default(), sink)
}

/// [`generate`] with explicit assumptions.
pub fn generate_with<S: LineSink>(
    spec: &GenSpec,
    assumptions: &Assumptions,
    sink: &mut S,
) -> Result<(), S::Error> {
    let mut g = Gen {
        spec,
        a: assumptions.clone(),
        rng: ChaCha8Rng::seed_from_u64(spec.seed),
        sink,
        noise_carry: 0.0,
        noise_pending: 0,
        store_account: String::new(),
        accounts: Vec::new(),
        current_period: spec.start,
    };
    // Account 0 has an enterprise discount, account 1 is in Frankfurt and pays tax, account 2
    // has overage switched off and names users in the resource id only.
    let n_accounts = (spec.users / 150).clamp(3, 8);
    for i in 0..n_accounts {
        let id = format!(
            "{:012}",
            g.rng.random_range(100_000_000_000u64..1_000_000_000_000)
        );
        g.accounts.push(Account {
            id,
            region: REGIONS[usize::from(i % 3 == 1)],
            overage_enabled: i != 2,
            taxed: i == 1,
            discounted: i == 0,
            resource_id_only: i == 2,
            daily_fees: i == 1,
        });
    }
    g.store_account = g.accounts[0].id.clone();
    let mut users = Vec::with_capacity(spec.users);
    for i in 0..spec.users {
        let x: f64 = g.rng.random();
        let mix = g.a.plan_mix;
        let plan = if x < mix[0] {
            PlanKind::Pro
        } else if x < mix[0] + mix[1] {
            PlanKind::ProPlus
        } else if x < mix[0] + mix[1] + mix[2] {
            PlanKind::ProMax
        } else {
            PlanKind::Power
        };
        let drawn = g.rng.random_range(0..n_accounts);
        // The first users go one to each account, so that every account's role (discount,
        // tax, overage off) shows in any export with enough users.
        let account = if i < n_accounts { i } else { drawn };
        let second_account =
            (g.rng.random::<f64>() < g.a.duplicate_share).then(|| (account + 1) % n_accounts);
        let second_region = g.rng.random::<f64>() < g.a.second_region_share;
        let join_day = if g.rng.random::<f64>() < g.a.joiner_share {
            g.rng.random_range(2..=25)
        } else {
            1
        };
        // Untagged users, and users whose tag is empty, are in every export of two users or
        // more; the rest are drawn.
        let drawn_tag = g.pick_tag();
        let tag = match i {
            0 => Tag::Missing,
            1 => Tag::Empty,
            _ => drawn_tag,
        };
        let id = g.uuid();
        users.push(User {
            id,
            account,
            second_account,
            plan,
            tag,
            activity: if g.rng.random::<f64>() < g.a.idle_share {
                0.0
            } else {
                1.0
            },
            join_day,
            second_region,
        });
    }
    let mut period = spec.start;
    for _ in 0..spec.months {
        g.current_period = period;
        let mut charges: std::collections::BTreeMap<(usize, usize), Charges> = Default::default();
        for (ui, user) in users.iter_mut().enumerate() {
            if g.holds_q_developer(user) {
                let day = user.join_day.min(period.days());
                let line = g.q_developer_line(user.account, &g.arn(user), &user.tag, day);
                g.emit(line)?;
            }
            g.user_month(ui, user, &mut charges)?;
            user.join_day = 1;
        }
        g.month_end(&users, &charges)?;
        g.q_developer_month_end(&users)?;
        g.flush_noise()?;
        g.sink.end_period(period)?;
        period = period.next();
    }
    Ok(())
}

impl<S: LineSink> Gen<'_, S> {
    fn arn(&self, user: &User) -> String {
        format!(
            "arn:aws:identitystore::{}:user/{}",
            self.store_account, user.id
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn kiro_line(
        &self,
        account: usize,
        region: Region,
        user: &User,
        tag: &Tag,
        line_type: &'static str,
        usage_type: String,
        operation: &'static str,
        pricing_unit: &'static str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        usage_amount: f64,
        cost: f64,
        rate: f64,
        description: String,
    ) -> CurLine {
        let acc = &self.accounts[account];
        let arn = self.arn(user);
        let (user_identifier, resource_id) =
            if acc.resource_id_only || self.spec.shape == Shape::Cid {
                (
                    String::new(),
                    format!("arn:aws:identitystore:::user/{}", user.id),
                )
            } else {
                (arn, String::new())
            };
        CurLine {
            period: self.current_period,
            product_code: "Kiro",
            account_id: acc.id.clone(),
            region: region.code,
            user_identifier,
            resource_id,
            line_type,
            usage_type,
            operation,
            pricing_unit,
            usage_start: start,
            usage_end: end,
            usage_amount,
            unblended_cost: cost,
            // Net of the account's discount where it has one; NULL elsewhere.
            net_unblended_cost: acc
                .discounted
                .then(|| round_to(cost * (1.0 - self.a.discount_rate), 8)),
            rate,
            description,
            tags: tags_for(tag),
        }
    }

    /// The seat fee of `plan` in `account` and `region` from `from_day` on: one line dated that
    /// day (prorated when `prorate`), or, in an account billed daily, one line a day up to
    /// `to_day`.
    #[allow(clippy::too_many_arguments)]
    fn seat_lines(
        &self,
        account: usize,
        region: Region,
        user: &User,
        tag_on: &dyn Fn(u32) -> Tag,
        plan: PlanKind,
        from_day: u32,
        to_day: u32,
        prorate: bool,
    ) -> Vec<CurLine> {
        let p = self.current_period;
        let days = p.days();
        let line = |day: u32, end: DateTime<Utc>, amount: f64, cost: f64| {
            self.kiro_line(
                account,
                region,
                user,
                &tag_on(day),
                "FlatRateSubscription",
                format!("{}-KiroEnterprise-{}", region.prefix, plan.suffix()),
                "monthly-subscription",
                "Users",
                p.start() + Duration::days(i64::from(day - 1)),
                end,
                amount,
                cost,
                plan.monthly_usd(),
                format!("Kiro {} subscription", plan.suffix()),
            )
        };
        if self.accounts[account].daily_fees {
            let amount = round_to(1.0 / f64::from(days), 6);
            let cost = round_to(plan.monthly_usd() / f64::from(days), 8);
            return (from_day..=to_day.min(days))
                .map(|d| line(d, p.start() + Duration::days(i64::from(d)), amount, cost))
                .collect();
        }
        let amount = if prorate {
            round_to(f64::from(days - from_day + 1) / f64::from(days), 6)
        } else {
            1.0
        };
        let cost = round_to(plan.monthly_usd() * amount, 2);
        vec![line(from_day, p.end(), amount, cost)]
    }

    /// A refund or credit line of `cost` on `day`, on the credits usage type.
    #[allow(clippy::too_many_arguments)]
    fn adjustment(
        &self,
        account: usize,
        user: &User,
        tag: &Tag,
        line_type: &'static str,
        unit: &'static str,
        day: u32,
        cost: f64,
        description: &str,
    ) -> CurLine {
        let start = self.current_period.start() + Duration::days(i64::from(day - 1));
        let region = self.accounts[account].region;
        let usage_type = format!("{}-KiroEnterprise-Credits", region.prefix);
        self.kiro_line(
            account,
            region,
            user,
            tag,
            line_type,
            usage_type,
            "Credits",
            unit,
            start,
            start + Duration::hours(1),
            0.0,
            cost,
            0.0,
            description.to_owned(),
        )
    }

    fn charge(
        &mut self,
        charges: &mut std::collections::BTreeMap<(usize, usize), Charges>,
        key: (usize, usize),
        line: CurLine,
    ) -> Result<(), S::Error> {
        let (cost, sub) = (
            line.unblended_cost,
            line.line_type == "FlatRateSubscription",
        );
        if self.emit(line)? {
            let c = charges.entry(key).or_default();
            c.taxable += cost;
            if sub {
                c.subscriptions += cost;
            }
        }
        Ok(())
    }

    fn user_month(
        &mut self,
        ui: usize,
        user: &mut User,
        charges: &mut std::collections::BTreeMap<(usize, usize), Charges>,
    ) -> Result<(), S::Error> {
        let p = self.current_period;
        let days = p.days();
        let first = user.join_day.min(days);
        // Events of this month.
        let mover_day = (self.rng.random::<f64>() < self.a.mover_share).then(|| {
            self.rng
                .random_range(first.max(5)..=days.min(25).max(first.max(5)))
        });
        let new_tag = mover_day.map(|_| self.pick_tag());
        let upgrade_day = (user.plan != PlanKind::Power
            && self.rng.random::<f64>() < self.a.upgrade_share)
            .then(|| {
                self.rng
                    .random_range(first.max(3)..=days.min(24).max(first.max(3)))
            });
        let refund = self.rng.random::<f64>() < self.a.refund_share;
        let credit = self.rng.random::<f64>() < self.a.credit_share;
        let ratio = if user.activity > 0.0 {
            LogNormal::new(self.a.usage_mu, self.a.usage_sigma)
                .expect("valid")
                .sample(&mut self.rng)
        } else {
            0.0
        };
        let base_tag = user.tag.clone();
        let tag_on = |day: u32| -> Tag {
            match (mover_day, &new_tag) {
                (Some(d), Some(t)) if day >= d => t.clone(),
                _ => base_tag.clone(),
            }
        };
        let home = user.account;
        let accounts: Vec<usize> = std::iter::once(home).chain(user.second_account).collect();
        let old_plan = user.plan;
        let month = Month {
            ui,
            first,
            upgrade_day,
            accounts: &accounts,
            tag_on: &tag_on,
        };
        self.seat_month(&month, user, charges)?;
        let overage_usd = self.credits_month(&month, user, old_plan, ratio, charges)?;
        if self.rng.random::<f64>() < self.a.snapshot_share {
            // A `q-developer-snapshot` line: neither consumption nor a seat, whatever its unit.
            let day = first.max(days.min(20));
            let region = self.accounts[home].region;
            let start = p.start() + Duration::days(i64::from(day - 1)) + Duration::hours(3);
            let line = self.kiro_line(
                home,
                region,
                user,
                &tag_on(day),
                "Usage",
                format!("{}-KiroEnterprise-Credits", region.prefix),
                "q-developer-snapshot",
                "Credits",
                start,
                start + Duration::hours(1),
                12.5,
                0.0,
                0.0,
                "Kiro snapshot".to_owned(),
            );
            self.charge(charges, (home, ui), line)?;
        }
        if refund && overage_usd > 0.0 {
            let amount = round_to(overage_usd * 0.5, 2);
            let day = days.min(27);
            let line = self.adjustment(
                home,
                user,
                &tag_on(day),
                "Refund",
                "Credits",
                day,
                -amount,
                "Goodwill refund of Kiro overage",
            );
            self.charge(charges, (home, ui), line)?;
        }
        if credit {
            let day = days.min(26);
            let line = self.adjustment(
                home,
                user,
                &tag_on(day),
                "Credit",
                "",
                day,
                -5.0,
                "AWS promotional credit",
            );
            self.charge(charges, (home, ui), line)?;
        }
        if let Some(t) = new_tag {
            user.tag = t;
        }
        Ok(())
    }

    /// Whether `user` still holds a Q Developer Pro seat: drawn from the id's first byte, so
    /// that no other draw moves.
    fn holds_q_developer(&self, user: &User) -> bool {
        let byte = u8::from_str_radix(user.id.get(..2).unwrap_or("ff"), 16).unwrap_or(255);
        f64::from(byte) < self.a.q_developer_share * 256.0
    }

    /// A Q Developer Pro seat line of `arn` in `account` from `day` on (shared/facts: product
    /// `AmazonQ`, operation `number-q-dev-subscriptions`, the user in the resource id, a
    /// `Usage` line; its usage type and unit are assumptions the allocation does not read),
    /// and its tax line where the account pays tax.
    fn q_developer_line(&self, account: usize, arn: &str, tag: &Tag, day: u32) -> CurLine {
        let p = self.current_period;
        let acc = &self.accounts[account];
        let start = p.start() + Duration::days(i64::from(day.max(1) - 1));
        CurLine {
            period: p,
            product_code: "AmazonQ",
            account_id: acc.id.clone(),
            region: acc.region.code,
            user_identifier: String::new(),
            resource_id: arn.to_owned(),
            line_type: "Usage",
            usage_type: format!("{}-QDeveloper-Pro-User", acc.region.prefix),
            operation: "number-q-dev-subscriptions",
            pricing_unit: "User",
            usage_start: start,
            usage_end: p.end(),
            usage_amount: 1.0,
            unblended_cost: self.a.q_developer_usd,
            net_unblended_cost: None,
            rate: self.a.q_developer_usd,
            description: "Amazon Q Developer Pro subscription".to_owned(),
            tags: tags_for(tag),
        }
    }

    /// Each account's user with a Q Developer seat and no Kiro seat, and the tax of the
    /// month's Q Developer seats in taxed accounts.
    fn q_developer_month_end(&mut self, users: &[User]) -> Result<(), S::Error> {
        let p = self.current_period;
        let mut seats: Vec<(usize, String, Tag)> = users
            .iter()
            .filter(|u| self.holds_q_developer(u))
            .map(|u| (u.account, self.arn(u), u.tag.clone()))
            .collect();
        for acc in 0..self.accounts.len() {
            let id = format!("0dec0000-0000-4000-8000-{acc:012}");
            let arn = format!("arn:aws:identitystore::{}:user/{id}", self.store_account);
            let tag = Tag::Value(COST_CENTERS[acc % COST_CENTERS.len()]);
            let line = self.q_developer_line(acc, &arn, &tag, 1);
            self.emit(line)?;
            seats.push((acc, arn, tag));
        }
        for (acc, arn, tag) in seats {
            if !self.accounts[acc].taxed {
                continue;
            }
            let mut line = self.q_developer_line(acc, &arn, &tag, 1);
            line.line_type = "Tax";
            line.usage_type = "Tax".to_owned();
            line.operation = "number-q-dev-subscriptions";
            line.pricing_unit = "";
            line.usage_start = p.start();
            line.usage_amount = 0.0;
            line.unblended_cost = round_to(self.a.q_developer_usd * self.a.tax_rate, 2);
            line.rate = 0.0;
            line.description = "VAT".to_owned();
            self.emit(line)?;
        }
        Ok(())
    }

    /// The month's seat fees: in each account of the user, in a second region, and on an
    /// upgrade (the lower tier refunded where fees are billed at once, the higher one from the
    /// day of the upgrade).
    fn seat_month(
        &mut self,
        m: &Month<'_>,
        user: &mut User,
        charges: &mut std::collections::BTreeMap<(usize, usize), Charges>,
    ) -> Result<(), S::Error> {
        let Month {
            ui,
            first,
            upgrade_day,
            accounts,
            tag_on,
        } = *m;
        let p = self.current_period;
        let days = p.days();
        let home = user.account;
        let old_plan = user.plan;
        let home_daily = self.accounts[home].daily_fees;
        for &acc in accounts {
            // Billed daily, the lower tier's fee stops the day before an upgrade.
            let to_day = match upgrade_day {
                Some(d) if acc == home && home_daily => d - 1,
                _ => days,
            };
            let region = self.accounts[acc].region;
            for line in self.seat_lines(
                acc,
                region,
                user,
                tag_on,
                old_plan,
                first,
                to_day,
                first > 1,
            ) {
                self.charge(charges, (acc, ui), line)?;
            }
        }
        if user.second_region {
            // The same person subscribed in the account's other region: a second profile,
            // billed again.
            let region = REGIONS[usize::from(self.accounts[home].region.code == REGIONS[0].code)];
            for line in
                self.seat_lines(home, region, user, tag_on, old_plan, first, days, first > 1)
            {
                self.charge(charges, (home, ui), line)?;
            }
        }
        if let Some(d) = upgrade_day {
            let new_plan = old_plan.upgraded();
            if !home_daily {
                // The lower tier's seat line, refunded on the day of the upgrade.
                let region = self.accounts[home].region;
                for mut refund_line in
                    self.seat_lines(home, region, user, tag_on, old_plan, first, days, first > 1)
                {
                    refund_line.line_type = "Refund";
                    refund_line.usage_amount = -refund_line.usage_amount;
                    refund_line.unblended_cost = -refund_line.unblended_cost;
                    refund_line.net_unblended_cost = refund_line.net_unblended_cost.map(|c| -c);
                    refund_line.usage_start = p.start() + Duration::days(i64::from(d - 1));
                    refund_line.tags = tags_for(&tag_on(d));
                    refund_line.description = format!(
                        "Refund of Kiro {} subscription (upgrade)",
                        old_plan.suffix()
                    );
                    self.charge(charges, (home, ui), refund_line)?;
                }
            }
            let region = self.accounts[home].region;
            for line in self.seat_lines(home, region, user, tag_on, new_plan, d, days, false) {
                self.charge(charges, (home, ui), line)?;
            }
            user.plan = new_plan;
        }
        Ok(())
    }

    /// The month's credits: hourly lines on working days, free up to the plan's credits, then
    /// overage (where the account allows it). Returns the overage billed in the home account.
    fn credits_month(
        &mut self,
        m: &Month<'_>,
        user: &User,
        old_plan: PlanKind,
        ratio: f64,
        charges: &mut std::collections::BTreeMap<(usize, usize), Charges>,
    ) -> Result<f64, S::Error> {
        let Month {
            ui,
            first,
            upgrade_day,
            accounts,
            tag_on,
        } = *m;
        let p = self.current_period;
        let days = p.days();
        // Credits: hourly lines on working days, free up to the plan's credits, then overage.
        let target = ratio * old_plan.included_credits();
        let work_days: Vec<u32> = (first..=days)
            .filter(|&d| {
                !matches!(
                    (p.first_day() + Duration::days(i64::from(d - 1))).weekday(),
                    Weekday::Sat | Weekday::Sun
                )
            })
            .collect();
        let expected_lines = (work_days.len() as f64 * 0.85 * 3.0).max(1.0);
        let per_line = target / expected_lines;
        let mut used = [0.0f64; 2];
        let mut overage_usd = 0.0;
        // Some users' first credits line of the month comes under a second pricing unit.
        let mut second_unit = self.rng.random::<f64>() < self.a.second_unit_share;
        if target > 0.0 {
            for &day in &work_days {
                if self.rng.random::<f64>() > 0.85 {
                    continue;
                }
                let hours = self.rng.random_range(1..=5u32);
                let first_hour = self.rng.random_range(8..=(19 - hours));
                for h in first_hour..first_hour + hours {
                    let which = usize::from(
                        user.second_account.is_some() && self.rng.random::<f64>() < 0.3,
                    );
                    let acc = accounts[which];
                    let included = if which == 0 && upgrade_day.is_some_and(|u| day >= u) {
                        user.plan.included_credits()
                    } else {
                        old_plan.included_credits()
                    };
                    let mut amount =
                        round_to((per_line * self.rng.random_range(0.3..1.7)).max(0.01), 2);
                    let before = used[which];
                    if !self.accounts[acc].overage_enabled {
                        if before >= included {
                            break;
                        }
                        amount = round_to(amount.min(included - before), 2);
                    }
                    let after = round_to(before + amount, 2);
                    let over = round_to(
                        (after - included).max(0.0) - (before - included).max(0.0),
                        2,
                    );
                    let cost = round_to(over * OVERAGE_USD_PER_CREDIT, 4);
                    let start = p.start()
                        + Duration::days(i64::from(day - 1))
                        + Duration::hours(i64::from(h));
                    let region = self.accounts[acc].region;
                    let unit = if std::mem::take(&mut second_unit) {
                        "Units"
                    } else {
                        "Credits"
                    };
                    let line = self.kiro_line(
                        acc,
                        region,
                        user,
                        &tag_on(day),
                        "Usage",
                        format!("{}-KiroEnterprise-Credits", region.prefix),
                        "Credits",
                        unit,
                        start,
                        start + Duration::hours(1),
                        amount,
                        cost,
                        OVERAGE_USD_PER_CREDIT,
                        "Kiro credits".to_owned(),
                    );
                    if self.emit(line.clone())? {
                        used[which] = after;
                        overage_usd += if which == 0 { cost } else { 0.0 };
                        let c = charges.entry((acc, ui)).or_default();
                        c.taxable += cost;
                    }
                }
            }
        }
        Ok(overage_usd)
    }

    fn month_end(
        &mut self,
        users: &[User],
        charges: &std::collections::BTreeMap<(usize, usize), Charges>,
    ) -> Result<(), S::Error> {
        let p = self.current_period;
        let mut discountable = vec![0.0f64; self.accounts.len()];
        for (&(acc, ui), c) in charges {
            discountable[acc] += c.subscriptions;
            if !self.accounts[acc].taxed || c.taxable <= 0.0 {
                continue;
            }
            let tax = round_to(c.taxable * self.a.tax_rate, 2);
            let user = &users[ui];
            let line = self.kiro_line(
                acc,
                self.accounts[acc].region,
                user,
                &user.tag,
                "Tax",
                "Tax".to_owned(),
                "",
                "",
                p.start(),
                p.end(),
                0.0,
                tax,
                0.0,
                "VAT".to_owned(),
            );
            self.emit(line)?;
        }
        for (acc, base) in discountable.into_iter().enumerate() {
            if !self.accounts[acc].discounted || base <= 0.0 {
                continue;
            }
            let a = &self.accounts[acc];
            let cost = -round_to(base * self.a.discount_rate, 2);
            let line = CurLine {
                period: p,
                product_code: "Kiro",
                account_id: a.id.clone(),
                region: a.region.code,
                user_identifier: String::new(),
                resource_id: String::new(),
                line_type: "EdpDiscount",
                usage_type: format!("{}-KiroEnterprise-Pro", a.region.prefix),
                operation: "",
                pricing_unit: "",
                usage_start: p.start(),
                usage_end: p.end(),
                usage_amount: 0.0,
                unblended_cost: cost,
                net_unblended_cost: Some(0.0),
                rate: 0.0,
                description: "Enterprise Discount Program discount".to_owned(),
                tags: Vec::new(),
            };
            self.emit(line)?;
        }
        Ok(())
    }
}

/// Generates `spec` and writes it under `dir` as a CUR 2.0 export
/// (`dir/data/BILLING_PERIOD=YYYY-MM/<export>-0000N.snappy.parquet`). `observe` sees every line
/// written, in order.
pub fn write_export(
    spec: &GenSpec,
    dir: &Path,
    observe: impl FnMut(&CurLine),
) -> Result<writer::WriteSummary, WriteError> {
    let mut observe = observe;
    let mut log = activity::ActivityLog::until(spec.until);
    let mut w = ExportWriter::new(dir, &spec.export_name, spec.rows_per_file, |l: &CurLine| {
        if spec.activity {
            log.observe(l);
        }
        observe(l);
    })?
    .omitting(spec.shape.omitted())
    .with_row_group_rows(spec.row_group_rows);
    generate(spec, &mut w)?;
    let summary = w.finish()?;
    if spec.activity {
        let folder = dir.join("activity");
        log.write(&folder).map_err(|source| WriteError::Io {
            path: folder.clone(),
            source,
        })?;
        let people = folder.join("people.csv");
        log.write_directory(&people).map_err(|e| WriteError::Io {
            path: people,
            source: e.into(),
        })?;
    }
    Ok(summary)
}
