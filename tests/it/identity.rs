//! Names for user ids from Identity Store (moto, with the real SDK client through the fault
//! proxy): looked up, paced and retried through throttling and 5xx, unknown ids shown as they
//! are and counted, `kiro_user_info` for joins, and the e-mail only when switched on.

use std::path::Path;

use aws_sdk_identitystore::types::Email;

use crate::support::aws::{self, Emulator, Kind, Proxy};
use kiro_cost_exporter::config::Settings;
use kiro_cost_exporter::sink::alerts::rules::{Measure, Rule, Scope};

use crate::support::fixture::{feishu_channel, write_settings};
use crate::support::*;

const STORE: &str = "d-1234567890";

async fn create(client: &aws_sdk_identitystore::Client, name: &str, display: &str) -> String {
    create_with_title(client, name, display, None).await
}

/// A user with a primary e-mail, and a title when given.
async fn create_with_title(
    client: &aws_sdk_identitystore::Client,
    name: &str,
    display: &str,
    title: Option<&str>,
) -> String {
    client
        .create_user()
        .identity_store_id(STORE)
        .user_name(name)
        .display_name(display)
        .name(
            aws_sdk_identitystore::types::Name::builder()
                .given_name(display)
                .family_name("Example")
                .build(),
        )
        .emails(
            Email::builder()
                .value(format!("{name}@example.com"))
                .primary(true)
                .build(),
        )
        .set_title(title.map(str::to_owned))
        .send()
        .await
        .unwrap()
        .user_id()
        .to_owned()
}

/// Alice and Bob (under his prefixed id) are named as exported, without e-mails; the unknown
/// id has no info, is shown by id and counted.
fn check_named(
    m: &std::collections::BTreeMap<Series, f64>,
    alice: &str,
    bob_prefixed: &str,
    unknown: &str,
) {
    let info = |m: &std::collections::BTreeMap<Series, f64>, id: &str| {
        m.iter()
            .find(|((n, l), _)| n == "kiro_user_info" && l["user_id"] == id)
            .map(|((_, l), v)| (l.clone(), *v))
    };
    let (a, v) = info(m, alice).unwrap();
    assert_eq!(v, 1.0);
    assert_eq!(a["user_name"], "alice");
    assert_eq!(a["display_name"], "Alice Liddell");
    assert!(
        a.get("email").is_none_or(String::is_empty),
        "no e-mail unless asked: {a:?}"
    );
    assert_eq!(info(m, bob_prefixed).unwrap().0["user_name"], "bob");
    // The unknown id: no info, shown by id, counted.
    assert!(info(m, unknown).is_none());
    assert!(
        m.keys()
            .any(|(n, l)| n == "kiro_user_cost_usd" && l["user_id"] == unknown)
    );
    assert_eq!(
        value(
            m,
            "kiro_exporter_identity_lookups_total",
            &[("result", "not_found")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            m,
            "kiro_exporter_identity_lookups_total",
            &[("result", "success")]
        ),
        Some(2.0)
    );
}

/// Identity Store on at `endpoint`, exporting `labels`.
fn store_settings(endpoint: &str, labels: &[&str]) -> Settings {
    let mut s = Settings::default();
    s.identity.identity_store_id = STORE.into();
    s.identity.min_interval = std::time::Duration::from_millis(1);
    s.identity.labels = labels.iter().map(|l| (*l).to_owned()).collect();
    s.aws.region = "us-east-1".into();
    s.aws.endpoint_url = endpoint.into();
    s
}

/// The report's CSV and `query`'s JSON (by user id) name the users with the exported labels.
fn check_commands(config: &Path, cur: &str, out: &Path, ids: [&str; 3]) {
    let [alice, bob_prefixed, unknown] = ids;
    let o = run_env(
        &[
            "report",
            "--config",
            config.to_str().unwrap(),
            "--cur",
            cur,
            "--period",
            "2026-10",
            "--out",
            out.to_str().unwrap(),
            "--no-notify",
        ],
        &aws::aws_env(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let csv = std::fs::read_to_string(out.join("kiro-cost-report-2026-10.csv")).unwrap();
    assert!(
        csv.lines().next().unwrap().ends_with(
            "user_name,display_name,email,licence_since,months_active,months_idle,idle_cost_usd"
        ),
        "{csv}"
    );
    assert!(csv.contains("alice,,alice@example.com"), "{csv}");
    // And `query`'s JSON, by user id, with the exported labels only.
    let o = run_env(
        &[
            "query",
            "--config",
            config.to_str().unwrap(),
            "--cur",
            cur,
            "--period",
            "2026-10",
            "--format",
            "json",
        ],
        &aws::aws_env(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        json["people"][alice],
        serde_json::json!({"user_name": "alice", "email": "alice@example.com"})
    );
    assert_eq!(json["people"][bob_prefixed]["user_name"], "bob");
    assert!(json["people"].get(unknown).is_none(), "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_named_from_identity_store_through_throttling() {
    let Some(moto) = Emulator::start(Kind::Moto) else {
        return;
    };
    let client = aws_sdk_identitystore::Client::new(&aws::sdk_config(&moto.url()).await);
    let alice = create(&client, "alice", "Alice Liddell").await;
    let bob = create(&client, "bob", "Bob Builder").await;
    let unknown = "00000000-0000-4000-8000-000000000000";
    // Bob's id as some bills carry it: with the identity store's prefix.
    let bob_prefixed = format!("1234567890-{bob}");
    let e = Export::write([
        seat(&alice, Some("A"), "Pro", 1, 20.0),
        seat(&bob_prefixed, Some("A"), "Pro", 1, 20.0),
        seat(unknown, Some("B"), "Pro", 1, 20.0),
    ]);
    let proxy = Proxy::start(&moto.url(), false);
    let dir = tempfile::tempdir().unwrap();
    let settings = |labels: &[&str]| store_settings(&proxy.url(), labels);
    // Throttled, then a 500, then through: the SDK retries.
    proxy.fail_next(Some(2));
    let plain = dir.path().join("identity.toml");
    write_settings(&plain, &settings(&["user_name", "display_name"]));
    let cur = e.path().to_str().unwrap();
    let d = Daemon::start(
        &[
            "--config",
            plain.to_str().unwrap(),
            "--cur",
            cur,
            "--period",
            "2026-10",
        ],
        &aws::aws_env(),
    );
    let m = wait_for(&d, "names", |m| {
        m.keys()
            .any(|(n, l)| n == "kiro_user_info" && l.get("user_name").is_some_and(|u| u == "bob"))
    })
    .await;
    assert_scrape_reconciles(&m, "2026-10");
    assert_eq!(proxy.injected(), 2);
    let info = |m: &std::collections::BTreeMap<Series, f64>, id: &str| {
        m.iter()
            .find(|((n, l), _)| n == "kiro_user_info" && l["user_id"] == id)
            .map(|((_, l), v)| (l.clone(), *v))
    };
    check_named(&m, &alice, &bob_prefixed, unknown);
    // Cached: the next refreshes look nothing up again.
    let calls = proxy.count("DescribeUser");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let again = scrape(&d).await;
    assert_eq!(
        value(
            &again,
            "kiro_exporter_identity_lookups_total",
            &[("result", "success")]
        ),
        Some(2.0)
    );
    assert_eq!(proxy.count("DescribeUser"), calls);
    drop(d);

    // With the e-mail switched on, and a Feishu channel: cards name the user.
    let mut named = settings(&["user_name", "email"]);
    named.alerts.state_file = dir.path().join("state.json");
    named.alerts.channels = vec![feishu_channel("feishu", "TEST_FEISHU_URL")];
    named.alerts.rules = vec![Rule::new("user-cost", Scope::User, Measure::CostUsd, 1.0)];
    named.report.schedule_day = 0;
    let with_email = dir.path().join("identity-email.toml");
    write_settings(&with_email, &named);
    let rx = crate::support::feishu::Receiver::start(None);
    let url = rx.url();
    let mut env = aws::aws_env();
    env.push(("TEST_FEISHU_URL", &url));
    let d = Daemon::start(
        &[
            "--config",
            with_email.to_str().unwrap(),
            "--cur",
            cur,
            "--period",
            "2026-10",
        ],
        &env,
    );
    let m = wait_for(&d, "e-mails", |m| {
        m.keys().any(|(n, l)| {
            n == "kiro_user_info" && l.get("email").is_some_and(|e| e == "alice@example.com")
        })
    })
    .await;
    let (a, _) = info(&m, &alice).unwrap();
    assert!(a.get("display_name").is_none_or(String::is_empty), "{a:?}");
    wait_log(&d, "alerts evaluated", 30);
    let cards: String = rx.accepted().iter().map(|c| c.to_string()).collect();
    assert!(cards.contains(&format!("alice · {alice}")), "{cards}");
    assert!(
        cards.contains(unknown),
        "the unknown id is shown as it is: {cards}"
    );
    // The report CSV and `query`'s JSON name them too.
    let out = dir.path().join("reports");
    check_commands(&with_email, cur, &out, [&alice, &bob_prefixed, unknown]);
    assert!(!d.log().contains("testing"), "no credentials in the log");
}

#[test]
fn a_bad_identity_store_id_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[identity]\nidentity_store_id = \"1234\"\n").unwrap();
    let o = run(&["check-config", "--config", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("identity.identity_store_id"),
        "{}",
        stderr(&o)
    );
    std::fs::write(&path, "[identity]\nlabels = [\"phone\"]\n").unwrap();
    let o = run(&["check-config", "--config", path.to_str().unwrap()]);
    assert!(stderr(&o).contains("identity.labels"), "{}", stderr(&o));
}

/// `query --format json` over `cur` with `config`, in the emulator's AWS environment.
fn query_json(config: &std::path::Path, cur: &std::path::Path) -> serde_json::Value {
    query_json_with(
        &[
            "--config",
            config.to_str().unwrap(),
            "--cur",
            cur.to_str().unwrap(),
        ],
        &aws::aws_env(),
    )
}

/// The cost center of `user`'s units in `json`, with their summed cost.
fn units_of(json: &serde_json::Value, user: &str) -> Vec<(String, f64)> {
    json["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["user_id"] == user)
        .map(|u| {
            (
                u["cost_center"].as_str().unwrap().to_owned(),
                u["total_usd"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_store_attribute_assigns_untagged_lines_behind_a_switch() {
    let Some(moto) = Emulator::start(Kind::Moto) else {
        return;
    };
    let client = aws_sdk_identitystore::Client::new(&aws::sdk_config(&moto.url()).await);
    // Carol's lines carry no tag; her title names a cost center. Dan has a tagged seat and
    // untagged credits; his title names the same cost center as his tag, so the two merge.
    // Erin is untagged and has no title: she stays untagged.
    let carol = create_with_title(&client, "carol", "carol", Some("Research")).await;
    let dan = create_with_title(&client, "dan", "dan", Some("Platform")).await;
    let erin = create(&client, "erin", "Erin").await;
    let e = Export::write([
        seat(&carol, None, "Pro", 1, 20.0),
        credits(&carol, None, 3, 1200.0, 200.0),
        seat(&dan, Some("Platform"), "Pro", 1, 20.0),
        credits(&dan, None, 4, 1100.0, 100.0),
        seat(&erin, None, "Pro", 1, 20.0),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let config = |from: &str| {
        let path = dir.path().join(format!("assign-{from}.toml"));
        let mut s = store_settings(&moto.url(), &["user_name", "display_name"]);
        s.identity.cost_center_from = from.into();
        write_settings(&path, &s);
        path
    };
    // Off: the untagged lines stay untagged.
    let off = query_json(&config(""), e.path());
    assert_json_reconciles(&off);
    assert_eq!(units_of(&off, &carol), vec![("".to_owned(), 28.0)]);
    assert_eq!(units_of(&off, &dan).len(), 2, "{off}");

    let on = query_json(&config("title"), e.path());
    assert_json_reconciles(&on);
    assert_eq!(on["kiro_total_usd"], off["kiro_total_usd"]);
    assert_eq!(units_of(&on, &carol), vec![("Research".to_owned(), 28.0)]);
    assert_eq!(units_of(&on, &dan), vec![("Platform".to_owned(), 24.0)]);
    assert_eq!(units_of(&on, &erin), vec![("".to_owned(), 20.0)]);
    // Counted apart: what each cost center got from the attribute.
    let cc = |name: &str| {
        on["cost_centers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["cost_center"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no cost center {name} in {on}"))
    };
    assert_eq!(cc("Research")["assigned_usd"], 28.0);
    assert_eq!(cc("Research")["total_usd"], 28.0);
    assert_eq!(cc("Platform")["assigned_usd"], 4.0);
    assert_eq!(cc("Platform")["total_usd"], 24.0);
    assert!(cc("")["assigned_usd"].is_null());
    assert_eq!(on["untagged_users"], serde_json::json!([erin]));

    // The daemon exports the assigned part next to the cost center's cost.
    let path = config("title");
    let d = Daemon::start(
        &[
            "--config",
            path.to_str().unwrap(),
            "--cur",
            e.path().to_str().unwrap(),
            "--period",
            "2026-10",
        ],
        &aws::aws_env(),
    );
    let m = wait_for(&d, "assigned cost", |m| {
        m.keys()
            .any(|(n, _)| n == "kiro_cost_center_assigned_cost_usd")
    })
    .await;
    assert_scrape_reconciles(&m, "2026-10");
    let assigned = |cc: &str| {
        m.iter()
            .find(|((n, l), _)| n == "kiro_cost_center_assigned_cost_usd" && l["cost_center"] == cc)
            .map(|(_, v)| *v)
    };
    assert_eq!(assigned("Research"), Some(28.0));
    assert_eq!(assigned("Platform"), Some(4.0));
    assert_eq!(assigned(""), None);
}

#[test]
fn a_directory_file_names_people_and_can_assign_cost_centers() {
    let e = Export::write([
        seat("u-1", None, "Pro", 1, 20.0),
        seat("u-2", Some("Platform"), "Pro", 1, 20.0),
        seat("u-3", None, "Pro", 1, 20.0),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let people = dir.path().join("people.csv");
    std::fs::write(
        &people,
        "user_id,user_name,display_name,email,department\n\
         u-1,ana,Ana Lima,ana@example.com,Research\n\
         u-2,ben,Ben Ode,ben@example.com,Sales\n",
    )
    .unwrap();
    let config = dir.path().join("c.toml");
    let mut settings = Settings::default();
    settings.identity.directory = people.to_str().unwrap().into();
    settings.identity.cost_center_from = "department".into();
    write_settings(&config, &settings);
    let json = query_json(&config, e.path());
    assert_json_reconciles(&json);
    assert_eq!(
        json["people"]["u-1"],
        serde_json::json!({"user_name": "ana", "display_name": "Ana Lima", "cost_center": "Research"})
    );
    // The tag wins over the attribute; only untagged lines are assigned.
    assert_eq!(units_of(&json, "u-1"), vec![("Research".to_owned(), 20.0)]);
    assert_eq!(units_of(&json, "u-2"), vec![("Platform".to_owned(), 20.0)]);
    assert_eq!(units_of(&json, "u-3"), vec![("".to_owned(), 20.0)]);

    // A directory file without a user_id column is named, and nobody is named from it.
    std::fs::write(&people, "id,user_name\nu-1,ana\n").unwrap();
    let o = run(&[
        "query",
        "--config",
        config.to_str().unwrap(),
        "--cur",
        e.path().to_str().unwrap(),
        "--period",
        "2026-10",
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("people.csv") && stderr(&o).contains("no user_id column"),
        "{}",
        stderr(&o)
    );
    let json: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_json_reconciles(&json);
    assert!(json.get("people").is_none(), "{json}");
    assert_eq!(units_of(&json, "u-1"), vec![("".to_owned(), 20.0)]);

    // The switch needs somewhere to read the attribute from, and a known attribute.
    std::fs::write(&config, "[identity]\ncost_center_from = \"department\"\n").unwrap();
    let o = run(&["check-config", "--config", config.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("identity.cost_center_from"),
        "{}",
        stderr(&o)
    );
    std::fs::write(
        &config,
        "[identity]\ndirectory = \"x.csv\"\ncost_center_from = \"shoe_size\"\n",
    )
    .unwrap();
    let o = run(&["check-config", "--config", config.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("identity.cost_center_from"),
        "{}",
        stderr(&o)
    );
}
