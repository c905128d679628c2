//! The shipped dashboards and alert rules, proven with the real programs: promtool, amtool,
//! TypeScript against Grafana's own schema types, and a real Prometheus scraping the real daemon
//! and sending an alert through a real Alertmanager to a loopback webhook.
//!
//! Without the programs these tests say they skip; under KIRO_EXPORTER_REQUIRE_EXTERNAL=1
//! (as in CI) a missing program fails them.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiro_cost_exporter::curgen::GenSpec;

use crate::support::fixture::Setup;
use crate::support::*;

fn promtool() -> Option<PathBuf> {
    external(
        "promtool (Debian package prometheus)",
        Path::new("/usr/bin/promtool"),
    )
}

/// Folder with node_modules holding @grafana/schema and typescript (.ci/run installs it).
fn grafana_schema() -> Option<PathBuf> {
    let dir = std::env::var_os("KIRO_EXPORTER_GRAFANA_SCHEMA_DIR")
        .map_or_else(|| root().join("target/grafana-schema"), PathBuf::from);
    external(
        "@grafana/schema with typescript (npm)",
        &dir.join("node_modules/@grafana/schema/package.json"),
    )?;
    external("typescript (npm)", &dir.join("node_modules/.bin/tsc"))?;
    Some(dir)
}

fn run_ok(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[test]
fn rules_check_and_unit_tests_pass() {
    let Some(promtool) = promtool() else { return };
    let rules = repo_files("alerts", ".rules.yml");
    let out = run_ok(
        Command::new(&promtool)
            .arg("check")
            .arg("rules")
            .args(&rules),
    );
    assert!(out.contains("SUCCESS"), "{out}");
    let tests = repo_files("alerts/tests", ".test.yml");
    let out = run_ok(
        Command::new(&promtool)
            .arg("test")
            .arg("rules")
            .args(&tests),
    );
    assert!(out.contains("SUCCESS"), "{out}");
    // Every alert has a firing case in the unit tests.
    let rules_text: String = rules
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    let tests_text: String = tests
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    for alert in rules_text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            tests_text.contains(&format!("alertname: {alert}\n        exp_alerts:")),
            "no firing test for {alert}"
        );
    }
}

/// `rules --job … --grafana-url … --runbook-url …` renders rules that promtool accepts and that
/// pass the shipped unit tests rewritten for the same job and addresses; every alert's runbook
/// anchor is a heading of docs/runbooks.md.
#[test]
fn rules_rendered_for_another_job_pass_the_same_tests() {
    let Some(promtool) = promtool() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (job, grafana, runbook) = (
        "kiro-payer-b",
        "https://grafana.example.org",
        "https://git.example.org/finops/kiro-cost-exporter/docs/runbooks.md",
    );
    let o = run_env(
        &[
            "rules",
            "--job",
            job,
            "--grafana-url",
            grafana,
            "--runbook-url",
            runbook,
        ],
        &[],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rules = String::from_utf8(o.stdout).unwrap();
    std::fs::write(dir.path().join("kiro-cost-exporter.rules.yml"), &rules).unwrap();
    let shipped_tests =
        std::fs::read_to_string(root().join("alerts/tests/kiro-cost-exporter.test.yml")).unwrap();
    let tests = shipped_tests
        .replace("job=\"kiro-cost-exporter\"", &format!("job=\"{job}\""))
        .replace("job: kiro-cost-exporter", &format!("job: {job}"))
        .replace("var-job=kiro-cost-exporter", &format!("var-job={job}"))
        .replace("http://localhost:3000/d/", &format!("{grafana}/d/"))
        .replace(
            "https://github.com/kiro-cost-exporter/kiro-cost-exporter/blob/main/docs/runbooks.md#",
            &format!("{runbook}#"),
        );
    assert_ne!(tests, shipped_tests);
    let t = dir.path().join("tests");
    std::fs::create_dir(&t).unwrap();
    std::fs::write(t.join("rules.test.yml"), tests).unwrap();
    let out = run_ok(Command::new(&promtool).current_dir(dir.path()).args([
        "check",
        "rules",
        "kiro-cost-exporter.rules.yml",
    ]));
    assert!(out.contains("SUCCESS"), "{out}");
    let out =
        run_ok(
            Command::new(&promtool)
                .current_dir(&t)
                .args(["test", "rules", "rules.test.yml"]),
        );
    assert!(out.contains("SUCCESS"), "{out}");
    // The shipped tests fail against these rules: they select another job.
    std::fs::write(t.join("shipped.test.yml"), &shipped_tests).unwrap();
    let o = Command::new(&promtool)
        .current_dir(&t)
        .args(["test", "rules", "shipped.test.yml"])
        .output()
        .unwrap();
    assert!(!o.status.success(), "the job matcher selects nothing else");

    let runbooks = std::fs::read_to_string(root().join("docs/runbooks.md")).unwrap();
    for alert in rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            runbooks.contains(&format!("\n## {alert}\n")),
            "docs/runbooks.md has no heading for {alert}"
        );
        assert!(
            rules.contains(&format!("{runbook}#{}\"", alert.to_lowercase())),
            "{alert} has no runbook_url"
        );
    }
}

#[test]
fn alertmanager_example_is_valid() {
    let Some(amtool) = external(
        "amtool (Debian package prometheus-alertmanager)",
        Path::new("/usr/bin/amtool"),
    ) else {
        return;
    };
    let out = run_ok(
        Command::new(amtool)
            .arg("check-config")
            .arg(root().join("alerts/alertmanager.example.yml")),
    );
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn dashboards_type_check_against_grafana_schema() {
    let Some(dir) = grafana_schema() else { return };
    let dashboards = repo_files("dashboards", ".json");
    let work = tempfile::Builder::new()
        .prefix("check-")
        .tempdir_in(&dir)
        .unwrap();
    let mut sources = Vec::new();
    for (i, d) in dashboards.iter().enumerate() {
        let json = std::fs::read_to_string(d).unwrap();
        serde_json::from_str::<serde_json::Value>(&json)
            .unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        // Grafana's enums are TypeScript enums; dashboards spell their values as strings.
        let ts = format!(
            "import type {{ Dashboard }} from '@grafana/schema';\n\
             type Loose<T> = T extends string ? T | `${{T}}` : T extends (infer U)[] ? Loose<U>[] : T extends object ? {{ [K in keyof T]: Loose<T[K]> }} : T;\n\
             // {}\nexport const dashboard{i}: Loose<Dashboard> = {json};\n",
            d.display()
        );
        let path = work.path().join(format!("dashboard{i}.ts"));
        std::fs::write(&path, ts).unwrap();
        sources.push(path);
    }
    let tsc = dir.join("node_modules/.bin/tsc");
    run_ok(
        Command::new(tsc)
            .args([
                "--noEmit",
                "--strict",
                "--target",
                "es2020",
                "--moduleResolution",
                "node",
            ])
            .args(&sources),
    );
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Every PromQL expression in a dashboard (panel targets and query variables).
fn dashboard_queries(d: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(serde_json::Value::String(e)) = m.get("expr") {
                    out.push(e.clone());
                }
                for x in m.values() {
                    walk(x, out);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(&d["panels"], &mut out);
    for v in d["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            // label_values(selector, label) evaluates as its selector.
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.rsplit_once(','))
                .map(|(sel, _)| sel.to_owned());
            out.push(inner.unwrap_or_else(|| q.to_owned()));
        }
    }
    out
}

async fn prom_query(base: &str, expr: &str) -> serde_json::Value {
    let r = get(
        &format!("{base}/api/v1/query?query={}", encode(expr)),
        false,
    )
    .await
    .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["status"], "success", "{expr}: {v}");
    v
}

/// A loopback HTTP receiver that records every POST body, like an Alertmanager webhook target.
async fn webhook_receiver() -> (
    SocketAddr,
    Arc<Mutex<Vec<String>>>,
    tokio::task::JoinHandle<()>,
) {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let sink = sink.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let sink = sink.clone();
                        async move {
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            sink.lock()
                                .unwrap()
                                .push(String::from_utf8_lossy(&body).into_owned());
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                            ))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, got, task)
}

/// The programs the end-to-end test needs, or `None` (the test then says it skips).
struct Programs {
    promtool: PathBuf,
    prometheus: PathBuf,
    alertmanager: PathBuf,
    faketime: String,
}

impl Programs {
    fn find() -> Option<Self> {
        let promtool = promtool()?;
        let prometheus = external(
            "prometheus (Debian package)",
            Path::new("/usr/bin/prometheus"),
        )?;
        let alertmanager = external(
            "prometheus-alertmanager (Debian package)",
            Path::new("/usr/bin/prometheus-alertmanager"),
        )?;
        let faketime = external(
            "libfaketime (Debian package faketime)",
            Path::new("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"),
        )?;
        Some(Self {
            promtool,
            prometheus,
            alertmanager,
            faketime: faketime.to_str().unwrap().to_owned(),
        })
    }
}

/// Settings for 60 users with the activity report (whose e-mails name users in
/// kiro_user_info) and AWS Budgets on `budgets`, so that the budget panels and the
/// forecast-over-budget alert have the daemon's real budget gauges.
fn monitored_setup(budgets: &str) -> Setup {
    let mut spec = GenSpec::new(60, period("2026-10"));
    spec.seed = 21;
    spec.noise_ratio = 0.5;
    spec.activity = true;
    let mut setup = Setup::generated(&spec);
    let s = &mut setup.settings;
    s.budgets.enabled = true;
    s.budgets.account_id = "123456789012".into();
    s.budgets.notifications = vec![];
    s.budgets.cost_centers = [("CC-1001 Platform".to_owned(), 500.into())].into();
    s.aws.region = "us-east-1".into();
    s.aws.endpoint_url = budgets.into();
    s.activity.path = s.source.cur.join("activity").to_str().unwrap().into();
    s.identity.labels = vec!["email".into()];
    setup
}

#[tokio::test]
async fn prometheus_scrapes_the_daemon_evaluates_dashboards_and_alerts() {
    let Some(programs) = Programs::find() else {
        return;
    };
    let Some(budgets) = crate::support::aws::Emulator::start(crate::support::aws::Kind::Ministack)
    else {
        return;
    };
    let setup = monitored_setup(&budgets.url());
    let config = setup.write_config("monitoring.toml");
    // The daemon's clock in October 2026, so that October is the current month: the rules
    // alert on the current month only (kiro_billing_period_info{state="current"}).
    let mut env = crate::support::aws::aws_env();
    env.extend([
        ("LD_PRELOAD", programs.faketime.as_str()),
        ("FAKETIME", "@2026-10-20 12:00:00"),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ("TZ", "UTC"),
    ]);
    let start = || {
        Daemon::start(
            &["--config", config.to_str().unwrap(), "--period", "2026-10"],
            &env,
        )
    };
    // Two targets of one bill, as an HA pair runs them: dashboards must not count twice and
    // alerts must fire once.
    let daemon = start();
    let twin = start();
    wait_status(&daemon.url("/readyz"), 200, 60).await;
    promtool_lints_a_real_scrape(&programs.promtool, &daemon).await;

    let (hook, received, hook_task) = webhook_receiver().await;
    let work = tempfile::tempdir().unwrap();
    let (_am, am_port) = start_alertmanager(&programs.alertmanager, work.path(), hook);
    let (_prom, base) =
        start_prometheus(&programs.prometheus, work.path(), am_port, [&daemon, &twin]).await;
    wait_for_both_targets(&base, &daemon, &twin).await;
    every_dashboard_query_returns_data(&base, &daemon, &twin).await;
    users_are_named_and_figures_reconcile(&base, &daemon).await;
    one_alert_reaches_the_webhook(&received).await;
    hook_task.abort();
}

/// Step: promtool's linter on a real scrape.
async fn promtool_lints_a_real_scrape(promtool: &Path, daemon: &Daemon) {
    let scrape_body = get(&daemon.url("/metrics"), false).await.unwrap().body;
    let mut lint = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut lint.stdin.take().unwrap(), &scrape_body).unwrap();
    let lint = lint.wait_with_output().unwrap();
    assert!(
        lint.status.success() && lint.stdout.is_empty() && lint.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
}

/// An Alertmanager on a free loopback port that sends every group to `hook`.
fn start_alertmanager(alertmanager: &Path, work: &Path, hook: SocketAddr) -> (Proc, u16) {
    let am_port = free_port();
    std::fs::write(
        work.join("am.yml"),
        format!(
            "route:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n  - name: hook\n    webhook_configs:\n      - url: http://{hook}/alerts\n        send_resolved: true\n"
        ),
    )
    .unwrap();
    let am = Proc(
        Command::new(alertmanager)
            .arg(format!("--config.file={}", work.join("am.yml").display()))
            .arg(format!("--storage.path={}", work.join("am-data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    (am, am_port)
}

/// A Prometheus scraping `targets` every second with the shipped rules, alerting to the
/// Alertmanager at `am_port`; returns it and its address once ready.
async fn start_prometheus(
    prometheus: &Path,
    work: &Path,
    am_port: u16,
    targets: [&Daemon; 2],
) -> (Proc, String) {
    let prom_port = free_port();
    let rules = root().join("alerts/kiro-cost-exporter.rules.yml");
    std::fs::write(
        work.join("prom.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files: ['{}']\n\
             alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{am_port}']\n\
             scrape_configs:\n  - job_name: kiro-cost-exporter\n    static_configs:\n      - targets: ['{}', '{}']\n",
            rules.display(),
            targets[0].addr,
            targets[1].addr
        ),
    )
    .unwrap();
    let prom = Proc(
        Command::new(prometheus)
            .arg(format!("--config.file={}", work.join("prom.yml").display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                work.join("prom-data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{prom_port}");
    wait_status(&format!("{base}/-/ready"), 200, 60).await;
    (prom, base)
}

/// Whether `expr` returns at least one series.
async fn has_data(base: &str, expr: &str) -> bool {
    prom_query(base, expr).await["data"]["result"]
        .as_array()
        .is_some_and(|r| !r.is_empty())
}

/// Step: waits until both targets' scrapes and the recording rules have produced data.
async fn wait_for_both_targets(base: &str, daemon: &Daemon, twin: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if has_data(
            base,
            "count(count by (instance) (kiro:user_credits_used:ratio)) == 2",
        )
        .await
            && has_data(
                base,
                "count(count by (instance) (kiro_budget_limit_usd)) == 2",
            )
            .await
            && has_data(base, "count(count by (instance) (increase(kiro_exporter_refresh_failures_total[1m]))) == 2").await
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never got the daemons' data; logs:\n{}\n{}",
            daemon.log(),
            twin.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `q` with the dashboards' variables set for `instance`: single-value variables (exact
/// matchers) get a real value, multi-value ones "All".
fn substitute(q: &str, instance: &str) -> String {
    let expr = q
        .replace("$billing_period", "2026-10")
        .replace("$job", "kiro-cost-exporter")
        .replace("$instance", instance)
        .replace("$topk", "20")
        .replace("=\"$cost_center\"", "=\"CC-1001 Platform\"")
        .replace("$cost_center", ".*")
        .replace("$account_id", ".*")
        .replace("$__rate_interval", "1m");
    assert!(!expr.contains('$'), "unsubstituted variable in {q}");
    expr
}

/// The first value of a query's result, as a number.
fn first_value(v: &serde_json::Value) -> f64 {
    v["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Step: every PromQL expression of every dashboard returns data, for either target, and the
/// overview's total counts a target once (it equals the daemon's own figure).
async fn every_dashboard_query_returns_data(base: &str, daemon: &Daemon, twin: &Daemon) {
    let mut checked = BTreeSet::new();
    for instance in [daemon.addr.to_string(), twin.addr.to_string()] {
        for d in repo_files("dashboards", ".json") {
            let dash: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&d).unwrap()).unwrap();
            for q in dashboard_queries(&dash) {
                let expr = substitute(&q, &instance);
                assert!(
                    has_data(base, &expr).await,
                    "{}: no data for {expr}",
                    d.display()
                );
                checked.insert(q);
            }
        }
        let total = prom_query(
            base,
            &format!(
                r#"sum(kiro_cost_usd{{job="kiro-cost-exporter", instance="{instance}", billing_period="2026-10"}})"#
            ),
        )
        .await;
        let served = value(
            &scrape(daemon).await,
            "kiro_cost_usd",
            &[("billing_period", "2026-10")],
        )
        .unwrap();
        let got = first_value(&total);
        assert!((got - served).abs() < 1e-6, "{got} != {served}");
    }
    assert!(checked.len() >= 20, "only {} expressions", checked.len());
}

/// Step: the user table's join with kiro_user_info carries e-mails, and Prometheus's sum of
/// users, unattributed and tax equals the daemon's roll-up.
async fn users_are_named_and_figures_reconcile(base: &str, daemon: &Daemon) {
    let i = daemon.addr;
    let named = prom_query(
        base,
        &format!(
            r#"topk(20, kiro_user_cost_usd{{instance="{i}", billing_period="2026-10"}}) * on (user_id) group_left (user_name, display_name, email) kiro_user_info{{instance="{i}"}}"#
        ),
    )
    .await;
    let rows = named["data"]["result"].as_array().unwrap();
    assert!(
        rows.iter().any(|r| r["metric"]["email"]
            .as_str()
            .is_some_and(|e| e.ends_with("@example.com"))),
        "{named}"
    );
    let total = prom_query(base, &format!(r#"sum(kiro_user_cost_usd{{instance="{i}", billing_period="2026-10"}}) + sum(kiro_unattributed_usd{{instance="{i}"}}) + sum(kiro_tax_usd{{instance="{i}"}})"#)).await;
    let cost = prom_query(
        base,
        &format!(r#"sum(kiro_cost_usd{{instance="{i}", billing_period="2026-10"}})"#),
    )
    .await;
    assert!(
        (first_value(&total) - first_value(&cost)).abs() < 1e-6,
        "reconciliation in Prometheus: {} vs {}",
        first_value(&total),
        first_value(&cost)
    );
}

/// Step: one alert travels Prometheus → Alertmanager → the webhook, once per user although
/// two targets report it.
async fn one_alert_reaches_the_webhook(received: &Mutex<Vec<String>>) {
    let deadline = Instant::now() + Duration::from_secs(90);
    let payload = loop {
        if let Some(p) = received
            .lock()
            .unwrap()
            .iter()
            .find(|b| b.contains("\"alertname\":\"KiroUserInOverage\""))
        {
            break p.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no KiroUserInOverage notification reached the webhook; got {:?}",
            received.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let v: serde_json::Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(v["status"], "firing");
    let alert = &v["alerts"][0];
    assert_eq!(alert["labels"]["severity"], "warning");
    assert_eq!(alert["labels"]["billing_period"], "2026-10");
    let alerts = v["alerts"].as_array().unwrap();
    let users: BTreeSet<&str> = alerts
        .iter()
        .map(|a| a["labels"]["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(users.len(), alerts.len(), "{v}");
    assert!(
        alerts.iter().all(|a| a["labels"].get("instance").is_none()),
        "{v}"
    );
    assert!(
        alert["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("overage"),
        "{alert}"
    );
}
