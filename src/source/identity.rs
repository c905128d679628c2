//! Who the user ids are: Identity Store's DescribeUser turns an Identity Center user id into a
//! user name, a display name and an e-mail, so people are named where people read.
//!
//! On when `[identity] identity_store_id = "d-…"` is set (region and endpoint from `[aws]`).
//! Each id is looked up once and cached for `ttl`; calls are paced (`min_interval`) and
//! retried by the SDK on throttling and 5xx; at most `max_per_refresh` new ids are looked up
//! per refresh, so a first refresh of a large organisation is not held up (the rest follow at
//! the next refreshes). An id Identity Store does not know is remembered as unknown (shown as
//! it is) and counted; ids carrying the identity-store prefix are tried without it too.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_identitystore::error::ProvideErrorMetadata;
use serde::{Deserialize, Serialize};

use crate::config_error::{ConfigError, ensure};

/// Labels `kiro_user_info` may carry besides `user_id`.
pub const LABELS: &[&str] = &["user_name", "display_name", "email"];

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
        Ok(())
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
}

/// Who `ids` are: Identity Store's names (when `resolver` is given), else the activity report's
/// e-mail; only the fields `settings.labels` exports (the e-mail only when asked).
pub async fn people<'a>(
    resolver: Option<&IdentityResolver>,
    settings: &IdentitySettings,
    ids: impl IntoIterator<Item = &'a str>,
    activity: &[&crate::source::activity::Activity],
) -> (BTreeMap<String, Person>, Lookups) {
    let mut out: BTreeMap<String, Person> = BTreeMap::new();
    for a in activity {
        for ((_, _, user), u) in &a.users {
            if !u.email.is_empty() {
                out.entry(user.clone()).or_default().email = u.email.clone();
            }
        }
    }
    let mut lookups = Lookups::default();
    if let Some(resolver) = resolver {
        let (known, l) = resolver.resolve(ids).await;
        lookups = l;
        for (id, p) in known {
            let e = out.entry(id).or_default();
            e.user_name = p.user_name;
            e.display_name = p.display_name;
            if !p.email.is_empty() {
                e.email = p.email;
            }
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

    /// The ids to try for `id`: as it is, and without the identity-store prefix.
    fn candidates(&self, id: &str) -> Vec<String> {
        let store = self.settings.identity_store_id.trim_start_matches("d-");
        let mut out = vec![id.to_owned()];
        if let Some(rest) = id.strip_prefix(&format!("{store}-")) {
            out.push(rest.to_owned());
        }
        out
    }

    async fn describe(&self, id: &str) -> Result<Option<Person>, String> {
        for candidate in self.candidates(id) {
            let answer = self
                .client
                .describe_user()
                .identity_store_id(&self.settings.identity_store_id)
                .user_id(&candidate)
                .send()
                .await;
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
                    return Ok(Some(Person {
                        user_name: u.user_name().unwrap_or_default().to_owned(),
                        display_name: u.display_name().unwrap_or_default().to_owned(),
                        email,
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
