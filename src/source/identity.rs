//! Who the user ids are: Identity Store's DescribeUser turns an Identity Center user id into a
//! user name, a display name and an e-mail, so people are named where people read.
//!
//! On when `[identity] identity_store_id = "d-…"` is set (region and endpoint from `[aws]`).
//! Each id is looked up once and cached for `ttl`; calls are paced (`min_interval`) and
//! retried by the SDK on throttling and 5xx; at most `max_per_refresh` new ids are looked up
//! per refresh, so a first refresh of a large organisation is not held up (the rest follow at
//! the next refreshes). An id Identity Store does not know is remembered as unknown (shown as
//! it is) and counted; ids carrying the identity-store prefix are tried without it too.
//!
//! Without Identity Store, a directory file (`identity.directory`: a CSV with a `user_id`
//! column and any of `user_name`, `display_name`, `email` and further attributes, e.g. an
//! export from an HR system) names people the same way; Identity Store wins where both know
//! an id.
//!
//! Behind a switch (`identity.cost_center_from`), an attribute of the user (Identity Store's
//! `title` or `user_type`, the enterprise extension's `cost_center`, `department`, `division`
//! or `organization`, or the directory file's column of that name) becomes the cost center of
//! the user's lines that carry no cost-center tag. Such cost is counted apart
//! ([`crate::allocation::Allocation::assigned_cost_centers`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_identitystore::error::ProvideErrorMetadata;
use serde::{Deserialize, Serialize};

use crate::config_error::{ConfigError, ensure};

/// The IAM actions resolving names takes (`deploy/iam/identity-store.json`).
pub const IAM_ACTIONS: &[&str] = &["identitystore:DescribeUser"];

/// Labels `kiro_user_info` may carry besides `user_id`.
pub const LABELS: &[&str] = &["user_name", "display_name", "email"];

/// Attributes `identity.cost_center_from` may name: Identity Store's own, then the enterprise
/// extension's (`aws:identitystore:enterprise`, camel-cased there).
pub const ATTRIBUTES: &[(&str, Attribute)] = &[
    ("title", Attribute::Title),
    ("user_type", Attribute::UserType),
    ("cost_center", Attribute::Enterprise("costCenter")),
    ("department", Attribute::Enterprise("department")),
    ("division", Attribute::Enterprise("division")),
    ("organization", Attribute::Enterprise("organization")),
];

/// The enterprise extension's name in DescribeUser.
const ENTERPRISE: &str = "aws:identitystore:enterprise";

/// Where a user attribute lives in DescribeUser's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attribute {
    Title,
    UserType,
    /// A field of the enterprise extension (its name in the answer).
    Enterprise(&'static str),
}

/// Why the directory file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("identity.directory {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("identity.directory {path}: {source}")]
    Csv { path: String, source: csv::Error },
    #[error("identity.directory {path}: the header has no user_id column")]
    NoUserId { path: String },
}

/// `[identity]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentitySettings {
    /// The Identity Store (`d-…`) of the Identity Center instance; empty = off.
    pub identity_store_id: String,
    /// How long a name is kept before it is looked up again.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// At most one DescribeUser call per this interval.
    #[serde(with = "humantime_serde")]
    pub min_interval: Duration,
    /// New ids looked up per refresh at most.
    pub max_per_refresh: usize,
    /// Attempts per call (throttling and 5xx are retried with backoff).
    pub max_attempts: u32,
    /// Labels of `kiro_user_info` (`user_name`, `display_name`, `email`); e-mail is personal
    /// data and off by default.
    pub labels: Vec<String>,
    /// A CSV file naming people (`user_id` and any of `user_name`, `display_name`, `email`,
    /// and attribute columns); empty = none.
    pub directory: String,
    /// The user attribute that becomes the cost center of lines without a cost-center tag
    /// (one of [`ATTRIBUTES`]); empty = off.
    pub cost_center_from: String,
}

impl Default for IdentitySettings {
    fn default() -> Self {
        Self {
            identity_store_id: String::new(),
            ttl: Duration::from_secs(24 * 3600),
            min_interval: Duration::from_millis(100),
            max_per_refresh: 1_000,
            max_attempts: 5,
            labels: vec!["user_name".to_owned(), "display_name".to_owned()],
            directory: String::new(),
            cost_center_from: String::new(),
        }
    }
}

impl IdentitySettings {
    /// Checks values (no I/O); errors name the key under `identity`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let id = &self.identity_store_id;
        ensure(
            id.is_empty()
                || (id.starts_with("d-")
                    && (3..=36).contains(&id.len())
                    && id[2..].chars().all(|c| c.is_ascii_alphanumeric())),
            "identity.identity_store_id",
            "must be an Identity Store id (d- followed by letters and digits), or empty",
        )?;
        ensure(
            self.max_attempts > 0,
            "identity.max_attempts",
            "must be at least 1",
        )?;
        if let Some(l) = self.labels.iter().find(|l| !LABELS.contains(&l.as_str())) {
            return Err(ConfigError::key(
                "identity.labels",
                format!("{l:?} is not one of user_name, display_name, email"),
            ));
        }
        ensure(
            self.cost_center_from.is_empty() || self.attribute().is_some(),
            "identity.cost_center_from",
            "must be one of title, user_type, cost_center, department, division, organization, or empty",
        )?;
        ensure(
            self.cost_center_from.is_empty()
                || !self.identity_store_id.is_empty()
                || !self.directory.is_empty(),
            "identity.cost_center_from",
            "needs identity.identity_store_id or identity.directory to read the attribute from",
        )?;
        Ok(())
    }

    /// The attribute `cost_center_from` names, if any.
    pub fn attribute(&self) -> Option<Attribute> {
        ATTRIBUTES
            .iter()
            .find(|(n, _)| *n == self.cost_center_from)
            .map(|(_, a)| *a)
    }

    /// Whether `kiro_user_info` carries `label`.
    pub fn exports(&self, label: &str) -> bool {
        self.labels.iter().any(|l| l == label)
    }
}

/// A person as Identity Store (or the activity report's e-mail) knows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Person {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub user_name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub display_name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub email: String,
    /// The attribute `identity.cost_center_from` names, when switched on and known.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub cost_center: String,
}

/// How lookups went, for the exporter's own metrics, and what they found beyond names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lookups {
    pub found: usize,
    pub not_found: usize,
    pub failed: usize,
    /// Groups of user ids that share one e-mail: one person with ids in two Identity Center
    /// instances (left behind when users are migrated between accounts), holding two seats.
    pub same_person: Vec<Vec<String>>,
    /// The directory file could not be read (named in the log).
    pub directory_failed: bool,
}

/// Reads the directory file: people by user id, with the attribute `cost_center_from` names
/// (a column of that name) as their cost center.
pub fn read_directory(
    path: &str,
    bytes: &[u8],
    cost_center_from: &str,
) -> Result<BTreeMap<String, Person>, DirectoryError> {
    let csv_err = |source| DirectoryError::Csv {
        path: path.to_owned(),
        source,
    };
    let mut r = csv::ReaderBuilder::new().flexible(false).from_reader(bytes);
    let header = r.headers().map_err(csv_err)?.clone();
    let col = |name: &str| header.iter().position(|h| h.trim() == name);
    let id = col("user_id").ok_or_else(|| DirectoryError::NoUserId {
        path: path.to_owned(),
    })?;
    let (user_name, display_name, email) = (col("user_name"), col("display_name"), col("email"));
    let cost_center = (!cost_center_from.is_empty())
        .then(|| col(cost_center_from))
        .flatten();
    let mut out = BTreeMap::new();
    for record in r.records() {
        let record = record.map_err(csv_err)?;
        let get = |c: Option<usize>| {
            c.and_then(|c| record.get(c))
                .unwrap_or_default()
                .trim()
                .to_owned()
        };
        let user = get(Some(id));
        if user.is_empty() {
            continue;
        }
        out.insert(
            user,
            Person {
                user_name: get(user_name),
                display_name: get(display_name),
                email: get(email),
                cost_center: get(cost_center),
            },
        );
    }
    Ok(out)
}

/// Who `ids` are: Identity Store's names (when `resolver` is given), else the directory
/// file's, else the activity report's e-mail; only the fields `settings.labels` exports (the
/// e-mail only when asked), and the cost-center attribute when `cost_center_from` is set.
pub async fn people<'a>(
    resolver: Option<&IdentityResolver>,
    settings: &IdentitySettings,
    ids: impl IntoIterator<Item = &'a str>,
    activity: &[&crate::source::activity::Activity],
) -> (BTreeMap<String, Person>, Lookups) {
    let mut out: BTreeMap<String, Person> = BTreeMap::new();
    let mut lookups = Lookups::default();
    if !settings.directory.is_empty() {
        let read = tokio::fs::read(&settings.directory)
            .await
            .map_err(|source| DirectoryError::Read {
                path: settings.directory.clone(),
                source,
            })
            .and_then(|b| read_directory(&settings.directory, &b, &settings.cost_center_from));
        match read {
            Ok(d) => out = d,
            Err(e) => {
                lookups.directory_failed = true;
                tracing::warn!("people are not named from the directory file: {e}");
            }
        }
    }
    for a in activity {
        for ((_, _, user), u) in &a.users {
            if !u.email.is_empty() {
                let e = out.entry(user.clone()).or_default();
                if e.email.is_empty() {
                    e.email = u.email.clone();
                }
            }
        }
    }
    if let Some(resolver) = resolver {
        let (known, l) = resolver.resolve(ids).await;
        lookups = Lookups {
            directory_failed: lookups.directory_failed,
            ..l
        };
        for (id, p) in known {
            let e = out.entry(id).or_default();
            for (to, from) in [
                (&mut e.user_name, p.user_name),
                (&mut e.display_name, p.display_name),
                (&mut e.email, p.email),
                (&mut e.cost_center, p.cost_center),
            ] {
                if !from.is_empty() {
                    *to = from;
                }
            }
        }
    }
    if settings.cost_center_from.is_empty() {
        for p in out.values_mut() {
            p.cost_center.clear();
        }
    }
    // One person, two ids: the same e-mail, whether it is exported or not.
    let mut by_email: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, p) in &out {
        if !p.email.is_empty() {
            by_email
                .entry(p.email.to_ascii_lowercase())
                .or_default()
                .push(id.clone());
        }
    }
    lookups.same_person = by_email.into_values().filter(|ids| ids.len() > 1).collect();
    for p in out.values_mut() {
        if !settings.exports("user_name") {
            p.user_name.clear();
        }
        if !settings.exports("display_name") {
            p.display_name.clear();
        }
        if !settings.exports("email") {
            p.email.clear();
        }
    }
    out.retain(|_, p| *p != Person::default());
    (out, lookups)
}

/// A string field of the enterprise extension in DescribeUser's `Extensions`.
fn enterprise_field(
    extensions: Option<&HashMap<String, aws_smithy_types::Document>>,
    field: &str,
) -> Option<String> {
    use aws_smithy_types::Document;
    match extensions?.get(ENTERPRISE)? {
        Document::Object(fields) => match fields.get(field)? {
            Document::String(s) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// Gives `allocation`'s lines without a cost-center tag the cost center their user's
/// attribute names (`identity.cost_center_from`; `people` carry it only when it is on).
pub fn assign_cost_centers(
    allocation: &mut crate::allocation::Allocation,
    people: &BTreeMap<String, Person>,
) {
    allocation.assign_untagged(|user| people.get(user).map(|p| p.cost_center.clone()));
}

/// Looks user ids up in Identity Store, with a cache.
pub struct IdentityResolver {
    client: aws_sdk_identitystore::Client,
    settings: IdentitySettings,
    /// Per id: when it was looked up, and what was found (`None`: unknown).
    cache: Mutex<HashMap<String, (Instant, Option<Person>)>>,
}

impl IdentityResolver {
    /// `shared` supplies region, credentials and endpoint; retries follow `settings`.
    pub fn new(shared: &aws_config::SdkConfig, settings: IdentitySettings) -> Self {
        let conf = aws_sdk_identitystore::config::Builder::from(shared)
            .retry_config(crate::aws::retry_config(
                settings.max_attempts,
                Duration::from_millis(200),
                Duration::from_secs(10),
            ))
            .build();
        Self {
            client: aws_sdk_identitystore::Client::from_conf(conf),
            settings,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, id: &str) -> Option<Option<Person>> {
        let cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache
            .get(id)
            .filter(|(at, _)| at.elapsed() < self.settings.ttl)
            .map(|(_, p)| p.clone())
    }

    /// The ids to try for `id`: as it is written (without quotes, an ARN's `…user/` or a
    /// `d-<store>.` prefix: [`canonical`]), and without the identity store's `<store>-` prefix.
    ///
    /// [`canonical`]: crate::allocation::user_id::canonical
    fn candidates(&self, id: &str) -> Vec<String> {
        let store = self.settings.identity_store_id.trim_start_matches("d-");
        let id = crate::allocation::user_id::canonical(id);
        let mut out = vec![id.to_owned()];
        if let Some(rest) = id.strip_prefix(&format!("{store}-")) {
            out.push(rest.to_owned());
        }
        out
    }

    async fn describe(&self, id: &str) -> Result<Option<Person>, String> {
        for candidate in self.candidates(id) {
            let attribute = self.settings.attribute();
            let mut call = self
                .client
                .describe_user()
                .identity_store_id(&self.settings.identity_store_id)
                .user_id(&candidate);
            if let Some(Attribute::Enterprise(_)) = attribute {
                call = call.extensions(ENTERPRISE);
            }
            let answer = call.send().await;
            match answer {
                Ok(u) => {
                    let email = u
                        .emails()
                        .iter()
                        .find(|e| e.primary())
                        .or_else(|| u.emails().first())
                        .and_then(|e| e.value())
                        .unwrap_or_default()
                        .to_owned();
                    let cost_center = match attribute {
                        None => None,
                        Some(Attribute::Title) => u.title().map(str::to_owned),
                        Some(Attribute::UserType) => u.user_type().map(str::to_owned),
                        Some(Attribute::Enterprise(field)) => {
                            enterprise_field(u.extensions(), field)
                        }
                    };
                    return Ok(Some(Person {
                        user_name: u.user_name().unwrap_or_default().to_owned(),
                        display_name: u.display_name().unwrap_or_default().to_owned(),
                        email,
                        cost_center: cost_center.unwrap_or_default().trim().to_owned(),
                    }));
                }
                Err(e) if e.code() == Some("ResourceNotFoundException") => continue,
                Err(e) => return Err(crate::aws::error_message(&e)),
            }
        }
        Ok(None)
    }

    /// The people among `ids` that are known, looking new ones up (at most
    /// `max_per_refresh`, paced). Failures are logged once per refresh and retried later.
    pub async fn resolve<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> (BTreeMap<String, Person>, Lookups) {
        let mut out = BTreeMap::new();
        let mut lookups = Lookups::default();
        let mut budget = self.settings.max_per_refresh;
        let mut first_error = None;
        let mut last_call: Option<Instant> = None;
        for id in ids {
            if out.contains_key(id) {
                continue;
            }
            let known = match self.cached(id) {
                Some(p) => p,
                None if budget == 0 => continue,
                None => {
                    budget -= 1;
                    if let Some(t) = last_call {
                        let wait = self.settings.min_interval.saturating_sub(t.elapsed());
                        tokio::time::sleep(wait).await;
                    }
                    last_call = Some(Instant::now());
                    match self.describe(id).await {
                        Ok(p) => {
                            if p.is_some() {
                                lookups.found += 1;
                            } else {
                                lookups.not_found += 1;
                            }
                            self.cache
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .insert(id.to_owned(), (Instant::now(), p.clone()));
                            p
                        }
                        Err(e) => {
                            lookups.failed += 1;
                            first_error.get_or_insert(e);
                            None
                        }
                    }
                }
            };
            if let Some(p) = known {
                out.insert(id.to_owned(), p);
            }
        }
        if let Some(e) = first_error {
            tracing::warn!(
                failed = lookups.failed,
                "Identity Store lookups failed; those users are shown by id and looked up again at the next refresh: {e}"
            );
        }
        (out, lookups)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_smithy_types::Document;

    #[test]
    fn the_enterprise_extension_gives_its_string_fields() {
        let ext = HashMap::from([(
            ENTERPRISE.to_owned(),
            Document::Object(HashMap::from([
                ("costCenter".to_owned(), Document::String("CC-42".into())),
                (
                    "manager".to_owned(),
                    Document::Object(HashMap::from([(
                        "value".to_owned(),
                        Document::String("x".into()),
                    )])),
                ),
            ])),
        )]);
        assert_eq!(
            enterprise_field(Some(&ext), "costCenter").as_deref(),
            Some("CC-42")
        );
        assert_eq!(enterprise_field(Some(&ext), "department"), None);
        assert_eq!(enterprise_field(Some(&ext), "manager"), None);
        assert_eq!(enterprise_field(None, "costCenter"), None);
    }

    #[test]
    fn the_directory_reads_names_and_the_attribute_column() {
        let d = read_directory(
            "people.csv",
            b"user_id,display_name,division\n\"u-1\",Ana,R&D\n,nobody,x\n",
            "division",
        )
        .unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d["u-1"].display_name, "Ana");
        assert_eq!(d["u-1"].cost_center, "R&D");
        let e = read_directory("people.csv", b"user_id,a\nu-1,1,2\n", "").unwrap_err();
        assert!(
            e.to_string().starts_with("identity.directory people.csv:"),
            "{e}"
        );
    }
}
