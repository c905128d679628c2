//! What the exporter ships to run it: the systemd unit, the log formats for collectors, the
//! container image, the Kubernetes and ECS manifests and the IAM policies, each checked by the
//! tool its users would check it with.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

/// A file of the repository, or the `.rs` files of a folder one after the other.
fn read(path: &str) -> String {
    let full = root().join(path);
    if full.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&full)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "rs"))
            .collect();
        files.sort();
        return files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap())
            .collect::<Vec<_>>()
            .join("\n");
    }
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `systemd-analyze` from Debian's systemd package.
fn systemd_analyze() -> Option<PathBuf> {
    external(
        "systemd-analyze (Debian package systemd)",
        Path::new("/usr/bin/systemd-analyze"),
    )
}

/// The shipped unit with its binary path pointed at the one this build made (verify checks
/// that the command exists).
fn unit_for_this_build(dir: &Path, text: &str) -> PathBuf {
    let unit = dir.join("kiro-cost-exporter.service");
    std::fs::write(
        &unit,
        text.replace("/usr/local/bin/kiro-cost-exporter", bin()),
    )
    .unwrap();
    unit
}

/// The exposure score `systemd-analyze security` gives a unit (0 = locked down, 10 = exposed).
fn exposure(analyze: &Path, unit: &Path) -> f64 {
    let o = Command::new(analyze)
        .args(["security", "--offline=yes"])
        .arg(unit)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    text.lines()
        .find_map(|l| l.split("Overall exposure level for ").nth(1))
        .and_then(|l| l.split(": ").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}{}", stderr(&o)))
}

#[test]
fn the_systemd_unit_verifies_and_is_locked_down() {
    let Some(analyze) = systemd_analyze() else {
        return;
    };
    let shipped = read("deploy/systemd/kiro-cost-exporter.service");
    for needed in [
        "\nUser=kiro-cost-exporter\n",
        "\nStateDirectory=kiro-cost-exporter\n",
        "\nProtectSystem=strict\n",
        "\nNoNewPrivileges=yes\n",
        "\nCapabilityBoundingSet=\n",
        "\nRestart=on-failure\n",
        "\nEnvironmentFile=-/etc/kiro-cost-exporter/environment\n",
    ] {
        assert!(shipped.contains(needed), "the unit lacks {needed:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_for_this_build(dir.path(), &shipped);
    let o = Command::new(&analyze)
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    assert!(
        o.status.success() && !stderr(&o).contains("kiro-cost-exporter.service"),
        "systemd-analyze verify:\n{}",
        stderr(&o)
    );
    let score = exposure(&analyze, &unit);
    assert!(score <= 2.0, "exposure {score} (at most 2.0 expected)");

    // The checks bite: a unit that lost its sandbox scores worse, and a wrong binary path
    // fails verification.
    let loose: String = shipped
        .lines()
        .filter(|l| !l.starts_with("Protect") && !l.starts_with("CapabilityBoundingSet"))
        .map(|l| format!("{l}\n"))
        .collect();
    let dir2 = tempfile::tempdir().unwrap();
    let loose = unit_for_this_build(dir2.path(), &loose);
    assert!(exposure(&analyze, &loose) > 2.0);
    let dir3 = tempfile::tempdir().unwrap();
    let broken = dir3.path().join("kiro-cost-exporter.service");
    std::fs::write(&broken, &shipped).unwrap(); // /usr/local/bin/… does not exist here
    let o = Command::new(&analyze)
        .arg("verify")
        .arg(&broken)
        .output()
        .unwrap();
    assert!(!o.status.success() || stderr(&o).contains("is not executable"));

    // The unit's ExecStartPre checks the shipped configuration as it would be installed.
    let o = run_env(
        &[
            "check-config",
            "--config",
            root().join("config/local.toml").to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

/// A small export to log about.
fn small_export() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let spec = kiro_cost_exporter::curgen::GenSpec::new(20, "2026-10".parse().unwrap());
    kiro_cost_exporter::curgen::write_export(&spec, dir.path(), |_| {}).unwrap();
    dir
}

#[test]
fn logs_are_json_lines_on_request_and_never_coloured_off_a_terminal() {
    let export = small_export();
    let cur = export.path().to_str().unwrap();
    let args = [
        "query", "--cur", cur, "--period", "2026-10", "--format", "csv",
    ];
    let debug = ("RUST_LOG", "kiro_cost_exporter=debug");
    // Text, written to a pipe: readable lines without escape codes.
    let o = run_env(&args, &[debug]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stderr(&o);
    assert!(text.contains("files of the period"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "colour codes off a terminal:\n{text}"
    );
    // JSON: every line one object with a timestamp, a level and a message.
    let o = run_env(&args, &[debug, ("KIRO_EXPORTER__LOG__FORMAT", "json")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stderr(&o);
    let mut lines = 0;
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        for key in ["timestamp", "level", "message", "target"] {
            assert!(v.get(key).is_some(), "{key} missing in {line}");
        }
        lines += 1;
    }
    assert!(lines > 0, "no log lines");
    assert!(
        text.contains("\"message\":\"files of the period\""),
        "{text}"
    );
    // A wrong value is named.
    let o = run_env(&args, &[("KIRO_EXPORTER__LOG__FORMAT", "xml")]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("log.format"), "{}", stderr(&o));
}

/// A module's calls that need IAM permissions, found in its source: AWS SDK operations (the
/// fluent builders' method names) and `object_store` requests, each with the IAM action it
/// takes.
const CALLS: &[(&str, &str)] = &[
    (".put_metric_data()", "cloudwatch:PutMetricData"),
    (".describe_user()", "identitystore:DescribeUser"),
    (".describe_budgets()", "budgets:ViewBudget"),
    (".describe_budget()", "budgets:ViewBudget"),
    (".describe_notifications_for_budget()", "budgets:ViewBudget"),
    (
        ".describe_subscribers_for_notification()",
        "budgets:ViewBudget",
    ),
    (".create_budget()", "budgets:ModifyBudget"),
    (".update_budget()", "budgets:ModifyBudget"),
    (".delete_budget()", "budgets:ModifyBudget"),
    (".create_notification()", "budgets:ModifyBudget"),
    (".update_notification()", "budgets:ModifyBudget"),
    (".delete_notification()", "budgets:ModifyBudget"),
    (".create_subscriber()", "budgets:ModifyBudget"),
    (".delete_subscriber()", "budgets:ModifyBudget"),
    (".start_query_execution()", "athena:StartQueryExecution"),
    (".get_query_execution()", "athena:GetQueryExecution"),
    (".get_query_results()", "athena:GetQueryResults"),
    (".stop_query_execution()", "athena:StopQueryExecution"),
    (".get_table_metadata()", "athena:GetTableMetadata"),
    (".get_work_group()", "athena:GetWorkGroup"),
    (".list_objects_v2()", "s3:ListBucket"),
    (".get_object()", "s3:GetObject"),
    (".head_object()", "s3:GetObject"),
    (".put_object()", "s3:PutObject"),
];

/// `object_store` requests, for the modules that read through it.
const STORE_CALLS: &[(&str, &str)] = &[
    (".list(", "s3:ListBucket"),
    (".list_with_delimiter(", "s3:ListBucket"),
    (".get(", "s3:GetObject"),
    (".get_range(", "s3:GetObject"),
    (".get_ranges(", "s3:GetObject"),
    (".get_opts(", "s3:GetObject"),
    (".head(", "s3:GetObject"),
    (".put(", "s3:PutObject"),
    (".put_opts(", "s3:PutObject"),
];

/// The IAM actions the calls in `file` take (object_store requests that a wrapper only
/// forwards are not calls of the module's own).
fn actions_called(file: &str) -> std::collections::BTreeSet<&'static str> {
    let store = file.ends_with("export.rs");
    let text = read(file);
    let own = match text.find("impl ObjectStore for ") {
        Some(start) => {
            let end = text[start..]
                .find("\n}\n")
                .map_or(text.len(), |e| start + e);
            format!("{}{}", &text[..start], &text[end..])
        }
        None => text,
    };
    CALLS
        .iter()
        .chain(if store { STORE_CALLS } else { &[] })
        .filter(|(call, _)| own.contains(call))
        .map(|(_, action)| *action)
        .collect()
}

/// Every action an IAM policy file allows, and its statements.
fn policy(file: &str) -> (std::collections::BTreeSet<String>, Vec<serde_json::Value>) {
    let v: serde_json::Value = serde_json::from_str(&read(file)).unwrap();
    let statements = v["Statement"].as_array().unwrap().clone();
    let mut actions = std::collections::BTreeSet::new();
    for s in &statements {
        assert_eq!(s["Effect"], "Allow", "{file}");
        for a in s["Action"].as_array().unwrap() {
            let a = a.as_str().unwrap();
            assert!(!a.contains('*'), "{file}: wildcard action {a}");
            actions.insert(a.to_owned());
        }
        // Resource scoping: "*" only where the API has no resource type, with a condition.
        if s["Resource"] == "*" {
            assert!(
                s["Condition"].is_object(),
                "{file}: {} on every resource without a condition",
                s["Sid"]
            );
        }
    }
    (actions, statements)
}

fn set(actions: &[&str]) -> std::collections::BTreeSet<String> {
    actions.iter().map(|a| (*a).to_owned()).collect()
}

#[test]
fn each_features_iam_policy_allows_exactly_the_calls_its_code_makes() {
    use kiro_cost_exporter::{sink, source};
    // (policy, the module lists it grants, the modules whose calls they cover)
    type Feature<'a> = (&'a str, Vec<&'a [&'a str]>, &'a [&'a str]);
    let features: &[Feature] = &[
        (
            "deploy/iam/local-engine-s3.json",
            vec![source::export::IAM_ACTIONS],
            &["src/source/export.rs"],
        ),
        (
            "deploy/iam/athena.json",
            vec![
                source::athena::IAM_ACTIONS,
                source::athena::IAM_ACTIONS_FOR_ATHENA,
            ],
            &["src/source/athena.rs"],
        ),
        (
            "deploy/iam/activity-report.json",
            vec![source::activity::IAM_ACTIONS],
            &["src/source/activity.rs"],
        ),
        (
            "deploy/iam/identity-store.json",
            vec![source::identity::IAM_ACTIONS],
            &["src/source/identity.rs"],
        ),
        (
            "deploy/iam/cloudwatch.json",
            vec![sink::cloudwatch::IAM_ACTIONS],
            &["src/sink/cloudwatch.rs"],
        ),
        (
            "deploy/iam/budgets.json",
            vec![sink::aws_budgets::IAM_ACTIONS],
            &["src/sink/aws_budgets/"],
        ),
        (
            "deploy/iam/report-upload.json",
            vec![sink::report::IAM_ACTIONS],
            &["src/sink/report/"],
        ),
    ];
    for (file, lists, modules) in features {
        let (allowed, _) = policy(file);
        let declared: std::collections::BTreeSet<String> =
            lists.iter().flat_map(|l| set(l)).collect();
        assert_eq!(
            allowed, declared,
            "{file}: the policy and the modules' lists differ"
        );
        // Each module's own calls are in its list, and its list has nothing it does not call
        // (Athena's own reads and writes with the caller's credentials aside).
        let own: std::collections::BTreeSet<String> = set(lists[0]);
        let called: std::collections::BTreeSet<String> = modules
            .iter()
            .flat_map(|m| actions_called(m))
            .map(str::to_owned)
            .collect();
        assert_eq!(
            called, own,
            "{modules:?}: the calls made and IAM_ACTIONS differ"
        );
    }
    // The combined example is the union of the features it names, KMS decryption included.
    let (combined, _) = policy("deploy/iam/combined-example.json");
    let mut union = std::collections::BTreeSet::new();
    for f in [
        "local-engine-s3",
        "activity-report",
        "identity-store",
        "cloudwatch",
        "budgets",
        "report-upload",
        "kms-read",
    ] {
        union.extend(policy(&format!("deploy/iam/{f}.json")).0);
    }
    assert_eq!(combined, union);
    // KMS variants: decrypt through S3 only.
    for f in ["deploy/iam/kms-read.json", "deploy/iam/kms-write.json"] {
        let (actions, statements) = policy(f);
        assert!(actions.contains("kms:Decrypt"), "{f}");
        for s in statements {
            assert!(
                s["Condition"]["StringEquals"]["kms:ViaService"]
                    .as_str()
                    .is_some_and(|v| v.starts_with("s3.")),
                "{f}: KMS only through S3"
            );
        }
    }
    // Listing budgets needs ViewBudget on every budget; changing them only on the owned ones.
    let (_, statements) = policy("deploy/iam/budgets.json");
    assert!(
        statements
            .iter()
            .any(|s| s["Action"][0] == "budgets:ViewBudget"
                && s["Resource"].as_str().unwrap().ends_with(":budget/*"))
    );
    assert!(
        statements
            .iter()
            .any(|s| s["Action"][0] == "budgets:ModifyBudget"
                && s["Resource"].as_str().unwrap().ends_with(":budget/kiro-*"))
    );
}

/// parliament (PyPI), the IAM policy linter, in the lint virtualenv `.ci/run` makes.
fn parliament() -> Option<PathBuf> {
    external(
        "parliament (PyPI, in target/test-venvs/lint)",
        &root().join("target/test-venvs/lint/bin/parliament"),
    )
}

/// parliament's findings on `policy` (JSON lines; empty when there are none).
fn lint_policy(parliament: &Path, policy: &[u8]) -> String {
    use std::io::Write as _;
    let mut child = Command::new(parliament)
        .args(["--json", "--include-community-auditors"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(policy).unwrap();
    let o = child.wait_with_output().unwrap();
    format!("{}{}", stdout(&o), stderr(&o))
}

#[test]
fn every_iam_policy_passes_parliament_without_findings() {
    let Some(parliament) = parliament() else {
        return;
    };
    let files = repo_files("deploy/iam", ".json");
    assert!(files.len() >= 10, "{files:?}");
    for f in &files {
        let findings = lint_policy(&parliament, &std::fs::read(f).unwrap());
        assert!(findings.trim().is_empty(), "{}: {findings}", f.display());
    }
    // The linter does find what it should: a misspelt action, and an unscoped grant.
    let misspelt = br#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["identitystore:DescribeUsers"],"Resource":"*"}]}"#;
    let findings = lint_policy(&parliament, misspelt);
    assert!(findings.contains("UNKNOWN_ACTION"), "{findings}");
    let unscoped = br#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:PutObject"],"Resource":"*"}]}"#;
    let findings = lint_policy(&parliament, unscoped);
    assert!(findings.contains("RESOURCE_STAR"), "{findings}");
}

/// Python of the lint virtualenv `.ci/run` makes (parliament, cfn-lint, kubernetes-validate).
fn lint_python() -> Option<PathBuf> {
    external(
        "the lint virtualenv (target/test-venvs/lint: kubernetes-validate, cfn-lint, parliament)",
        &root().join("target/test-venvs/lint/bin/python"),
    )
}

#[test]
fn the_kubernetes_manifests_validate_and_the_rules_are_generated() {
    // The PrometheusRule is the rules file, generated.
    let o = run_env(&["rules", "--format", "prometheus-rule"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        read("deploy/kubernetes/prometheus-rule.yaml"),
        "deploy/kubernetes/prometheus-rule.yaml is stale: regenerate it with \
         `kiro-cost-exporter rules --format prometheus-rule > deploy/kubernetes/prometheus-rule.yaml`"
    );
    let manifest = read("deploy/kubernetes/kiro-cost-exporter.yaml");
    for needed in [
        "\n  replicas: 1\n",
        "\n    type: Recreate\n",
        "readOnlyRootFilesystem: true",
        "runAsNonRoot: true",
        "eks.amazonaws.com/role-arn:",
        "secretRef:",
        "kind: ServiceMonitor",
    ] {
        assert!(manifest.contains(needed), "the manifest lacks {needed:?}");
    }
    // The ConfigMap's settings are valid as the pod reads them, secrets from the Secret.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, literal_block(&manifest, "config.toml")).unwrap();
    let o = run_env(
        &["check-config", "--config", config.to_str().unwrap()],
        &[
            (
                "KIRO_FEISHU_WEBHOOK_URL",
                "https://open.feishu.cn/open-apis/bot/v2/hook/x",
            ),
            ("KIRO_FEISHU_SECRET", "s"),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("format = \"json\""), "{}", stdout(&o));

    // Against the Kubernetes and Prometheus Operator schemas.
    let Some(python) = lint_python() else {
        return;
    };
    let validator = root().join("tests/tools/validate_k8s.py");
    let files = [
        root().join("deploy/kubernetes/kiro-cost-exporter.yaml"),
        root().join("deploy/kubernetes/prometheus-rule.yaml"),
    ];
    let o = Command::new(&python)
        .arg(&validator)
        .args(&files)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    for kind in [
        "ServiceAccount",
        "ConfigMap",
        "PersistentVolumeClaim",
        "Deployment",
        "Service",
        "ServiceMonitor",
        "PrometheusRule",
    ] {
        assert!(
            out.contains(&format!(" {kind}/kiro-cost-exporter")),
            "{kind}: {out}"
        );
    }
    // It refuses what the API server would: a misspelt field, a port as a string.
    let broken = dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        manifest
            .replace("readOnlyRootFilesystem: true", "readOnlyRootFS: true")
            .replace("      interval: 1m", "      intervall: 1m"),
    )
    .unwrap();
    let o = Command::new(&python)
        .arg(&validator)
        .arg(&broken)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let out = stdout(&o);
    assert!(
        out.contains("INVALID") && out.contains("readOnlyRootFS"),
        "{out}"
    );
    assert!(out.contains("intervall"), "{out}");
}

/// The container environment of the ECS template (`- Name:` / `Value:` pairs), with its
/// parameters and pseudo parameters given example values.
fn ecs_environment(template: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = template
        .lines()
        .skip_while(|l| l.trim() != "Environment:")
        .skip(1)
        .peekable();
    while let Some(l) = lines.next() {
        let Some(name) = l.trim().strip_prefix("- Name: ") else {
            break;
        };
        let value = lines
            .next()
            .unwrap()
            .trim()
            .strip_prefix("Value: ")
            .unwrap();
        let value = value
            .trim_start_matches("!Sub ")
            .replace("!Ref AWS::Region", "us-east-1")
            .replace("!Ref CloudWatchNamespace", "Kiro/Cost")
            .replace("${CurBucket}", "example-billing-bucket")
            .replace("${CurPrefix}", "cur/kiro-export")
            .trim_matches('"')
            .to_owned();
        out.push((name.to_owned(), value));
    }
    out
}

#[test]
fn the_ecs_template_passes_cfn_lint_and_its_settings_are_valid() {
    let template = read("deploy/ecs/kiro-cost-exporter.cfn.yaml");
    for needed in [
        "DesiredCount: 1",
        "MaximumPercent: 100",
        "MinimumHealthyPercent: 0",
        "ReadonlyRootFilesystem: true",
        "TaskRoleArn: !GetAtt TaskRole.Arn",
        "Command: [CMD, /usr/local/bin/kiro-cost-exporter, healthcheck]",
    ] {
        assert!(template.contains(needed), "the template lacks {needed:?}");
    }
    // The task's settings, from its environment alone, are valid.
    let env = ecs_environment(&template);
    assert!(env.len() >= 6, "{env:?}");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let o = run_env(&["check-config"], &env);
    assert!(o.status.success(), "{}", stderr(&o));
    let printed = stdout(&o);
    assert!(
        printed.contains("cur = \"s3://example-billing-bucket/cur/kiro-export\""),
        "{printed}"
    );
    assert!(printed.contains("format = \"json\""), "{printed}");

    let Some(_) = lint_python() else {
        return;
    };
    let cfn_lint = root().join("target/test-venvs/lint/bin/cfn-lint");
    let o = Command::new(&cfn_lint)
        .arg(root().join("deploy/ecs/kiro-cost-exporter.cfn.yaml"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "cfn-lint:\n{}{}",
        stdout(&o),
        stderr(&o)
    );
    // It catches what CloudFormation would refuse: a memory size Fargate does not offer and a
    // misspelt property.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.cfn.yaml");
    std::fs::write(
        &broken,
        template
            .replace("Memory: \"2048\"", "Memory: \"1500\"")
            .replace("DesiredCount: 1", "DesiredCnt: 1"),
    )
    .unwrap();
    let o = Command::new(&cfn_lint).arg(&broken).output().unwrap();
    assert!(!o.status.success());
    let out = stdout(&o);
    assert!(out.contains("DesiredCnt"), "{out}");
}

/// The runtime stage of a Containerfile: its lines after the runtime marker, without the
/// FROM, ARG and COPY lines (where the two files differ by design).
fn runtime_stage(text: &str) -> Vec<&str> {
    text.lines()
        .skip_while(|l| !l.starts_with("# --- runtime"))
        .skip(1)
        .filter(|l| !(l.starts_with("FROM ") || l.starts_with("ARG ") || l.starts_with("COPY ")))
        .collect()
}

/// A process group (buildah run and what it runs) stopped when dropped, also on failure.
struct Group(std::process::Child);

impl Drop for Group {
    fn drop(&mut self) {
        let pgid = self.0.id().to_string();
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .status();
        let _ = self.0.wait();
    }
}

/// buildah with its storage under `work`.
struct Buildah {
    bin: PathBuf,
    work: PathBuf,
}

impl Buildah {
    /// `buildah` with the storage options and `args`.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.args(["--storage-driver", "vfs", "--root"])
            .arg(self.work.join("storage"))
            .arg("--runroot")
            .arg(self.work.join("run"))
            .args(args);
        c
    }

    /// `buildah args`: must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        run_ok(&mut self.cmd(args))
    }

    /// A base image made from Debian's packages (no registry can be reached): once, cached.
    fn base_image(&self, debootstrap: &Path) -> &'static str {
        let base = "localhost/kiro-base:bookworm";
        let have_base = self
            .cmd(&["inspect", "--type", "image", base])
            .output()
            .unwrap()
            .status
            .success();
        if have_base {
            return base;
        }
        let rootfs = self.work.join("rootfs");
        if !rootfs.join("etc/debian_version").exists() {
            let mirror = std::env::var("KIRO_EXPORTER_DEBIAN_MIRROR")
                .unwrap_or_else(|_| "http://deb.debian.org/debian".into());
            let _ = std::fs::remove_dir_all(&rootfs);
            run_ok(
                Command::new(debootstrap)
                    .args(["--variant=minbase", "bookworm"])
                    .arg(&rootfs)
                    .arg(&mirror),
            );
        }
        let ctr = self.ok(&["from", "scratch"]);
        let ctr = ctr.trim();
        self.ok(&["copy", ctr, &format!("{}/", rootfs.display()), "/"]);
        self.ok(&["commit", "--rm", ctr, base]);
        base
    }

    /// The runtime-only image from this build's binary (stripped of debug information), on
    /// `base`; returns its tag.
    fn build_prebuilt(&self, prebuilt: &str, base: &str) -> String {
        let ctx = tempfile::tempdir_in(&self.work).unwrap();
        std::fs::create_dir(ctx.path().join("state")).unwrap();
        let packed = ctx.path().join("kiro-cost-exporter");
        let stripped = Command::new("strip")
            .arg("-o")
            .arg(&packed)
            .arg(bin())
            .status()
            .is_ok_and(|s| s.success());
        if !stripped {
            std::fs::copy(bin(), &packed).unwrap();
        }
        std::fs::write(ctx.path().join("Containerfile.prebuilt"), prebuilt).unwrap();
        let tag = format!("localhost/kiro-cost-exporter:test-{}", std::process::id());
        run_ok(
            self.cmd(&[
                "bud",
                "--isolation",
                "chroot",
                "--format",
                "docker",
                "-f",
                "Containerfile.prebuilt",
                "--build-arg",
                &format!("BASE={base}"),
                "--build-arg",
                "BIN=kiro-cost-exporter",
                "-t",
                &tag,
                ".",
            ])
            .current_dir(ctx.path()),
        );
        tag
    }

    /// `command` run in container `ctr` (chroot isolation); must succeed; its stdout.
    fn run_in(&self, ctr: &str, command: &[&str]) -> String {
        self.ok(&[&["run", "--isolation", "chroot", ctr, "--"], command].concat())
    }
}

/// Runs `c`; it must succeed; its stdout.
fn run_ok(c: &mut Command) -> String {
    let o = c.output().unwrap();
    assert!(o.status.success(), "{c:?}:\n{}{}", stdout(&o), stderr(&o));
    stdout(&o)
}

/// Step: what the image says about itself (user, port, volume, health check, entrypoint).
fn the_image_describes_itself(buildah: &Buildah, tag: &str) {
    let inspect: serde_json::Value =
        serde_json::from_str(&buildah.ok(&["inspect", "--type", "image", tag])).unwrap();
    let config = &inspect["Docker"]["config"];
    assert_eq!(config["User"], "65532:65532");
    assert!(config["ExposedPorts"]["19877/tcp"].is_object(), "{config}");
    assert!(
        config["Volumes"]["/var/lib/kiro-cost-exporter"].is_object(),
        "{config}"
    );
    assert_eq!(config["Healthcheck"]["Test"][2], "healthcheck", "{config}");
    assert_eq!(config["Entrypoint"][0], "/usr/local/bin/kiro-cost-exporter");
}

/// Waits (up to two minutes) until `listen` serves cost figures at /metrics; the response.
fn wait_for_cost_figures(listen: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let got = std::net::TcpStream::connect(listen).ok().and_then(|mut s| {
            use std::io::{Read as _, Write as _};
            s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
                .ok()?;
            let mut body = String::new();
            s.read_to_string(&mut body).ok()?;
            body.contains("\nkiro_cost_usd{").then_some(body)
        });
        if let Some(body) = got {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the image's demo served no cost figures on {listen}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// Step: the image's demo, started in the image (chroot isolation shares the host's
/// loopback), scraped from the host; its health check passes and it runs unprivileged.
fn the_image_serves_the_demo_unprivileged(buildah: &Buildah, tag: &str) {
    use std::os::unix::process::CommandExt as _;
    let ctr = buildah.ok(&["from", tag]);
    let ctr = ctr.trim().to_owned();
    let listen = format!("127.0.0.1:{}", free_port());
    let demo = Group(
        buildah
            .cmd(&[
                "run",
                "--isolation",
                "chroot",
                &ctr,
                "--",
                "/usr/local/bin/kiro-cost-exporter",
                "demo",
                "--listen",
                &listen,
                "--data",
                "/var/lib/kiro-cost-exporter/demo",
                "--users",
                "30",
            ])
            .process_group(0)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let metrics = wait_for_cost_figures(&listen);
    assert!(metrics.starts_with("HTTP/1.1 200") || metrics.starts_with("HTTP/1.0 200"));
    let health = buildah.run_in(
        &ctr,
        &[
            "/usr/local/bin/kiro-cost-exporter",
            "healthcheck",
            "--url",
            &format!("http://{listen}/healthz"),
        ],
    );
    assert!(health.contains("200"), "{health}");
    let uid = buildah.run_in(&ctr, &["id", "-u"]);
    assert_eq!(uid.trim(), "65532");
    drop(demo);
    let _ = buildah.cmd(&["rm", &ctr]).output();
}

#[test]
fn the_container_image_builds_runs_unprivileged_and_serves_the_demo() {
    let source = read("Containerfile");
    let prebuilt = read("Containerfile.prebuilt");
    assert_eq!(
        runtime_stage(&source),
        runtime_stage(&prebuilt),
        "the two Containerfiles' runtime stages differ"
    );
    assert!(runtime_stage(&source).contains(&"USER 65532:65532"));
    let Some(bin) = external(
        "buildah (Debian package buildah)",
        Path::new("/usr/bin/buildah"),
    ) else {
        return;
    };
    let Some(debootstrap) = external(
        "debootstrap (Debian package debootstrap)",
        Path::new("/usr/sbin/debootstrap"),
    ) else {
        return;
    };
    let work = root().join("target/container");
    std::fs::create_dir_all(&work).unwrap();
    let buildah = Buildah { bin, work };
    let base = buildah.base_image(&debootstrap);
    let tag = buildah.build_prebuilt(&prebuilt, base);
    the_image_describes_itself(&buildah, &tag);
    the_image_serves_the_demo_unprivileged(&buildah, &tag);
    let _ = buildah.cmd(&["rmi", &tag]).output();
}
