//! The landing page in a real browser (Debian's Chromium, headless): every part of it checked
//! in the DOM against the snapshot's own numbers (`query --format json`), a screenshot at
//! desktop and phone width into `target/`, the HTML through a validator (npm `html-validate`),
//! and its size at 50,000 users.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use kiro_cost_exporter::config::Settings;
use kiro_cost_exporter::curgen::{self, GenSpec};
use kiro_cost_exporter::locale::Locale;
use serde_json::Value;

use crate::support::fixture::write_settings;
use crate::support::*;

fn chromium() -> Option<PathBuf> {
    external(
        "chromium (Debian package chromium)",
        Path::new("/usr/bin/chromium"),
    )
}

/// Chromium headless, as this machine allows it (no sandbox as root, no background network).
fn browser(chromium: &Path, profile: &Path) -> Command {
    let mut c = Command::new(chromium);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

/// The value of `attr` in the tag starting at `at`.
fn attr<'a>(tag: &'a str, attr: &str) -> Option<&'a str> {
    let key = format!(" {attr}=\"");
    let start = tag.find(&key)? + key.len();
    let end = tag[start..].find('"')? + start;
    Some(&tag[start..end])
}

/// Every opening tag of `dom` that contains `needle`, whole.
fn tags<'a>(dom: &'a str, needle: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = dom[from..].find(needle) {
        let at = from + i;
        let start = dom[..at].rfind('<').unwrap();
        let end = at + dom[at..].find('>').unwrap() + 1;
        out.push(&dom[start..end]);
        from = end;
    }
    out
}

/// The element with `id`, from its opening tag to its closing tag (elements of the same name
/// do not nest on this page).
fn by_id<'a>(dom: &'a str, id: &str) -> &'a str {
    let key = format!("id=\"{id}\"");
    let at = dom
        .find(&key)
        .unwrap_or_else(|| panic!("no element #{id} in the page"));
    let start = dom[..at].rfind('<').unwrap();
    let name: String = dom[start + 1..]
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect();
    let close = format!("</{name}>");
    let end = dom[at..]
        .find(&close)
        .map_or(dom.len(), |e| at + e + close.len());
    &dom[start..end]
}

fn usd(tag: &str) -> f64 {
    attr(tag, "data-usd").unwrap().parse().unwrap()
}

fn close(a: f64, b: f64, what: &str) {
    assert!((a - b).abs() < 1e-6, "{what}: {a} != {b}");
}

/// A month-end export of 200 users with their activity and names, and a config with budgets
/// (one cost center far over, one far under) and a dashboard link.
fn setup(dir: &Path, locale: Locale) -> PathBuf {
    let cur = dir.join("cur");
    if !cur.exists() {
        let mut spec = GenSpec::new(200, "2026-09".parse().unwrap());
        spec.months = 2;
        spec.activity = true;
        curgen::write_export(&spec, &cur, |_| {}).unwrap();
    }
    let mut s = Settings::default();
    s.source.cur = cur.clone();
    s.activity.path = cur.join("activity").to_str().unwrap().into();
    s.identity.directory = cur.join("activity/people.csv").to_str().unwrap().into();
    s.identity.labels = vec!["display_name".into()];
    s.alerts.dashboard_url = "https://grafana.example.com/d/kiro-cost".into();
    s.budgets.cost_centers = [
        ("CC-1001 Platform".to_owned(), 100.into()),
        ("CC-1002 Payments".to_owned(), 1_000_000.into()),
    ]
    .into();
    s.report.locale = locale;
    s.aws.region = "us-east-1".into();
    s.aws.endpoint_url = "http://127.0.0.1:9".into();
    s.cloudwatch.enabled = true;
    s.cloudwatch.max_attempts = 1;
    let config = dir.join(format!("config-{locale:?}.toml"));
    write_settings(&config, &s);
    config
}

/// Per seat (account, region, user): the sum of its units' total cost.
fn seat_totals(json: &Value) -> BTreeMap<(String, String, String), f64> {
    let mut out = BTreeMap::new();
    for u in json["users"].as_array().unwrap() {
        let s = |k: &str| u[k].as_str().unwrap().to_owned();
        if s("user_id").is_empty() {
            continue;
        }
        *out.entry((s("account_id"), s("region"), s("user_id")))
            .or_insert(0.0) += u["total_usd"].as_f64().unwrap();
    }
    out
}

/// Cost-center bars: each the query's cost, widths proportional to it, untagged marked.
fn check_bars(dom: &str, json: &serde_json::Value) {
    let centers: BTreeMap<String, f64> = json["cost_centers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let name = c["cost_center"].as_str().unwrap();
            (
                if name.is_empty() { "untagged" } else { name }.to_owned(),
                c["total_usd"].as_f64().unwrap(),
            )
        })
        .collect();
    let svg_at = dom.find("id=\"cc-bars-2026-10\"").unwrap();
    let svg = &dom[svg_at..svg_at + dom[svg_at..].find("</svg>").unwrap()];
    let groups = tags(svg, "data-cost-center=");
    let rects = tags(svg, "<rect ");
    assert_eq!(
        groups.len(),
        centers.len().min(12),
        "one bar per cost center"
    );
    assert_eq!(rects.len(), groups.len());
    let widest = rects
        .iter()
        .map(|r| attr(r, "width").unwrap().parse::<f64>().unwrap())
        .fold(0.0, f64::max);
    let largest = centers.values().copied().fold(0.0, f64::max);
    let mut untagged_bars = 0;
    for (g, r) in groups.iter().zip(&rects) {
        let cc = attr(g, "data-cost-center")
            .unwrap()
            .replace("&amp;", "&")
            .replace("&quot;", "\"");
        let cost = usd(g);
        close(cost, centers[&cc], &cc);
        let width: f64 = attr(r, "width").unwrap().parse().unwrap();
        assert!(
            (width / widest - cost / largest).abs() < 0.01,
            "{cc}: bar {width} of {widest} for {cost} of {largest}"
        );
        if cc == "untagged" {
            assert_eq!(attr(r, "class"), Some("untagged"));
            untagged_bars += 1;
        }
    }
    assert_eq!(untagged_bars, 1, "the generator has untagged cost");
}

/// Budgets (the one over its limit first), top users by name, seats near their limit, and the
/// largest saving first: each as the query says.
fn check_lists(dom: &str, json: &serde_json::Value, dir: &Path) {
    // Budgets: the one forecast over its limit comes first and is marked.
    let rows = tags(dom, "data-over=");
    let budgeted: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| {
            (
                attr(r, "data-cost-center").unwrap(),
                attr(r, "data-over").unwrap(),
            )
        })
        .collect();
    assert_eq!(
        budgeted,
        vec![("CC-1001 Platform", "true"), ("CC-1002 Payments", "false")]
    );

    // Top users: the seat that costs most first, by name.
    let seats = seat_totals(json);
    let (top_seat, _) = seats
        .iter()
        .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(a.0)))
        .unwrap();
    let top_table = by_id(dom, "top-users-2026-10");
    let first = tags(top_table, "data-user=")[0];
    assert_eq!(attr(first, "data-user"), Some(top_seat.2.as_str()));
    let people = std::fs::read_to_string(dir.join("cur/activity/people.csv")).unwrap();
    assert!(
        people.lines().skip(1).any(|l| {
            l.split(',')
                .nth(2)
                .is_some_and(|name| !name.is_empty() && top_table.contains(name))
        }),
        "names from the directory file are shown"
    );

    // Near the credit limit: each at 80% or more; at most ten.
    let near = tags(dom, "data-share=");
    assert!(!near.is_empty(), "the generator has users past 80%");
    assert!(near.len() <= 10);
    for n in &near {
        let share: f64 = attr(n, "data-share").unwrap().parse().unwrap();
        assert!(share >= 0.8, "{n}");
    }

    // Idle seats and right-sizing: the largest saving first, equal to the query's.
    let recs = json["savings"]["recommendations"].as_array().unwrap();
    let best = recs
        .iter()
        .map(|r| r["saving_usd"].as_f64().unwrap())
        .fold(0.0, f64::max);
    let list = by_id(dom, "savings-list-2026-10");
    let first_saving = tags(list, "data-usd=")[0];
    close(usd(first_saving), best, "largest saving");
}

/// Polls the landing page until it contains `needle`, at most 60 s.
async fn wait_page(d: &Daemon, needle: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !String::from_utf8_lossy(&get(&d.url("/"), false).await.unwrap().body).contains(needle) {
        assert!(
            std::time::Instant::now() < deadline,
            "{needle} never shows; log: {}",
            d.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// The page passes html-validate, which does find errors in a broken copy of it.
fn validate_html(dir: &Path, body: &[u8]) {
    let page = dir.join("landing.html");
    std::fs::write(&page, body).unwrap();
    if let Some(validator) = external(
        "html-validate (npm, under target/html-validate)",
        &root().join("target/html-validate/node_modules/.bin/html-validate"),
    ) {
        let o = Command::new(validator).arg(&page).output().unwrap();
        assert!(
            o.status.success(),
            "html-validate:\n{}{}",
            stdout(&o),
            stderr(&o)
        );
        // It does find errors.
        let broken = dir.join("broken.html");
        std::fs::write(
            &broken,
            String::from_utf8_lossy(body).replacen("</table>", "", 1),
        )
        .unwrap();
        let o = Command::new(root().join("target/html-validate/node_modules/.bin/html-validate"))
            .arg(&broken)
            .output()
            .unwrap();
        assert!(!o.status.success(), "a broken page passes the validator");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_landing_page_in_a_real_browser_shows_the_snapshots_numbers() {
    let Some(chromium) = chromium() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), Locale::En);
    let config_arg = config.to_str().unwrap();
    // CloudWatch points at a closed port: its delivery fails, and the page says so.
    let aws_env = [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ];
    let d = Daemon::start(&["--config", config_arg, "--period", "2026-10"], &aws_env);
    wait_status(&d.url("/readyz"), 200, 60).await;
    wait_page(&d, "data-sink=\"cloudwatch\" data-healthy=\"false\"").await;
    let json = query_json_with(&["--config", config_arg], &aws_env);
    assert_json_reconciles(&json);

    // The DOM as Chromium built it, and screenshots at desktop and phone width.
    let profile = tempfile::tempdir().unwrap();
    let o = browser(&chromium, profile.path())
        .arg("--dump-dom")
        .arg(d.url("/"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let dom = stdout(&o);
    assert!(dom.contains("id=\"p-2026-10\""), "{dom}");
    let shots = root().join("target/landing");
    std::fs::create_dir_all(&shots).unwrap();
    for (name, size) in [
        ("landing.png", "1200,1800"),
        ("landing-phone.png", "390,2400"),
    ] {
        let path = shots.join(name);
        let _ = std::fs::remove_file(&path);
        let o = browser(&chromium, profile.path())
            .arg(format!("--window-size={size}"))
            .arg(format!("--screenshot={}", path.display()))
            .arg(d.url("/"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let png = std::fs::read(&path).unwrap();
        assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{name}");
    }

    // Totals: the page's equal the query's.
    close(
        usd(by_id(&dom, "total-2026-10")),
        json["kiro_total_usd"].as_f64().unwrap(),
        "total",
    );
    close(
        usd(by_id(&dom, "savings-2026-10")),
        json["savings"]["total_usd"].as_f64().unwrap(),
        "savings",
    );
    assert!(
        by_id(&dom, "users-2026-10").contains(&format!(
            ">{}<",
            seat_totals(&json)
                .keys()
                .map(|k| &k.2)
                .collect::<std::collections::BTreeSet<_>>()
                .len()
        )),
        "{}",
        by_id(&dom, "users-2026-10")
    );

    check_bars(&dom, &json);
    check_lists(&dom, &json, dir.path());

    // Freshness, sinks, links, currency.
    assert!(by_id(&dom, "last-refresh").contains("<time datetime=\""));
    let sinks = by_id(&dom, "sinks");
    assert!(
        sinks.contains("data-sink=\"cloudwatch\" data-healthy=\"false\""),
        "{sinks}"
    );
    assert!(
        !sinks.contains("secret") && !sinks.contains("AWS_SECRET"),
        "{sinks}"
    );
    assert!(dom.contains("data-cur-as-of=\"2026-10\""));
    assert!(dom.contains("href=\"/metrics\""));
    assert!(dom.contains("href=\"https://grafana.example.com/d/kiro-cost\""));
    assert!(!dom.contains("$-"), "negative money reads -$…");

    // The served HTML passes the validator.
    let html = get(&d.url("/"), false).await.unwrap();
    validate_html(dir.path(), &html.body);

    // zh-CN: the same page in Chinese.
    drop(d);
    let zh = setup(dir.path(), Locale::ZhCn);
    let d = Daemon::start(
        &["--config", zh.to_str().unwrap(), "--period", "2026-10"],
        &[],
    );
    wait_status(&d.url("/readyz"), 200, 60).await;
    let page = String::from_utf8(get(&d.url("/"), false).await.unwrap().body.to_vec()).unwrap();
    assert!(page.contains("<html lang=\"zh-CN\">"), "{page}");
    assert!(page.contains("按成本中心的费用") && page.contains("未设置（无成本中心）"));
}

/// At 50,000 users the page stays under 200 KB: its lists are top-N.
#[tokio::test]
async fn the_landing_page_stays_small_at_fifty_thousand_users() {
    use kiro_cost_exporter::allocation::PlanTable;
    use kiro_cost_exporter::allocation::savings::SavingsSettings;
    use kiro_cost_exporter::sink::landing;
    use kiro_cost_exporter::snapshot::Snapshot;
    let e = tempfile::tempdir().unwrap();
    curgen::write_export(
        &GenSpec::new(50, "2026-10".parse().unwrap()),
        e.path(),
        |_| {},
    )
    .unwrap();
    let small = kiro_cost_exporter::source::LocalSource::new(e.path(), Default::default());
    let base = kiro_cost_exporter::source::Source::allocate(&small, "2026-10".parse().unwrap())
        .await
        .unwrap();
    // The 50 users' units repeated under 50,000 user ids.
    let mut a = base.clone();
    a.units.clear();
    let mut i = 0;
    while a.units.len() < 50_000 {
        for u in &base.units {
            let mut u = u.clone();
            u.user_id = format!("{}-{i}", u.user_id);
            a.units.push(u);
            i += 1;
        }
    }
    let s = Snapshot::of_bill(
        chrono::Utc::now(),
        vec![a],
        &PlanTable::default(),
        &SavingsSettings::default(),
    );
    let page = landing::render(
        Some(&s),
        &landing::LandingSettings::default(),
        &landing::Health::default(),
    );
    eprintln!("landing page at 50,000 users: {} bytes", page.len());
    assert!(page.len() < 200 * 1024, "{} bytes", page.len());
    let text = String::from_utf8(page.to_vec()).unwrap();
    // Four lists (top users, near the limit, savings, Q Developer overlap), ten rows each
    // at most, whatever the number of users.
    assert!(tags(&text, "<tr data-user=").len() <= 40);
}
