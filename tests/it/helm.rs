//! The Helm chart (`deploy/helm/kiro-cost-exporter/`), checked with the real Helm: `helm lint
//! --strict`, `helm template` with the default values and with every optional part on, each
//! rendered document validated against the Kubernetes and Prometheus Operator schemas, the
//! rendered configuration accepted by `check-config`, and values that break the schema refused
//! at render time.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::*;

const CHART: &str = "deploy/helm/kiro-cost-exporter";

/// Helm as `.ci/run` installs it (from the npm package carrying it, under `target/helm/`).
fn helm() -> Option<PathBuf> {
    external(
        "helm (target/helm/helm/helm, installed by .ci/run)",
        &root().join("target/helm/helm/helm"),
    )
}

/// Runs helm with `args` on the chart, with its caches and configuration in `home`.
fn run_helm(helm: &Path, home: &Path, args: &[&str]) -> Output {
    Command::new(helm)
        .args(args)
        .arg(root().join(CHART))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .unwrap()
}

/// Every optional part on: an existing name, IRSA, a created Secret, the ServiceMonitor and
/// PrometheusRule, a storage class, extra environment, a pull secret.
const ALL_ON: &str = r#"
fullnameOverride: kiro-cost-exporter
serviceAccount:
  annotations:
    eks.amazonaws.com/role-arn: arn:aws:iam::111122223333:role/kiro-cost-exporter
secrets:
  create:
    KIRO_FEISHU_WEBHOOK_URL: https://open.feishu.cn/open-apis/bot/v2/hook/x
    KIRO_FEISHU_SECRET: s
config:
  source:
    cur: s3://example-billing-bucket/cur/kiro-export
  aws:
    region: us-east-1
  alerts:
    channels:
      - name: feishu
        kind: feishu
        url_env: KIRO_FEISHU_WEBHOOK_URL
        secret_env: KIRO_FEISHU_SECRET
serviceMonitor:
  enabled: true
  labels:
    release: kube-prometheus-stack
prometheusRule:
  enabled: true
persistence:
  storageClass: gp3
extraEnv:
  - name: RUST_BACKTRACE
    value: "1"
imagePullSecrets:
  - name: registry
"#;

/// `check-config` accepts the configuration `rendered`'s ConfigMap holds, with the
/// environment its Deployment sets.
fn the_rendered_config_is_valid(rendered: &str, dir: &Path) {
    let config = dir.join("config.yaml");
    let text = literal_block(rendered, "config.yaml");
    assert!(text.contains("source:"), "{rendered}");
    std::fs::write(&config, text).unwrap();
    let state = dir.join("state.json");
    let o = run_env(
        &["check-config", "--config", config.to_str().unwrap()],
        &[
            ("KIRO_EXPORTER__SERVER__LISTEN", "0.0.0.0:19877"),
            ("KIRO_EXPORTER__ALERTS__STATE_FILE", state.to_str().unwrap()),
            ("KIRO_EXPORTER__LOG__FORMAT", "json"),
            (
                "KIRO_FEISHU_WEBHOOK_URL",
                "https://open.feishu.cn/open-apis/bot/v2/hook/x",
            ),
            ("KIRO_FEISHU_SECRET", "s"),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("format = \"json\""), "{}", stdout(&o));
}

/// Validates `files` against the Kubernetes and Prometheus Operator schemas; returns what the
/// validator printed.
fn validate(files: &[&Path]) -> Option<String> {
    let python = external(
        "the lint virtualenv (target/test-venvs/lint: kubernetes-validate)",
        &root().join("target/test-venvs/lint/bin/python"),
    )?;
    let o = Command::new(python)
        .arg(root().join("tests/tools/validate_k8s.py"))
        .args(files)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    Some(stdout(&o))
}

#[test]
fn the_helm_chart_lints_renders_and_validates() {
    let Some(helm) = helm() else { return };
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    // The PrometheusRule carries the shipped rules: the chart's copy is kept equal.
    assert_eq!(
        std::fs::read_to_string(
            root()
                .join(CHART)
                .join("files/kiro-cost-exporter.rules.yml")
        )
        .unwrap(),
        std::fs::read_to_string(root().join("alerts/kiro-cost-exporter.rules.yml")).unwrap(),
        "the chart's rules are stale: cp alerts/kiro-cost-exporter.rules.yml {CHART}/files/"
    );
    let o = run_helm(&helm, home, &["lint", "--strict"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let all_on = home.join("all-on.yaml");
    std::fs::write(&all_on, ALL_ON).unwrap();
    let o = run_helm(
        &helm,
        home,
        &["lint", "--strict", "-f", all_on.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));

    let default = run_helm(&helm, home, &["template", "kce"]);
    assert!(default.status.success(), "{}", stderr(&default));
    let on = run_helm(
        &helm,
        home,
        &["template", "kce", "-f", all_on.to_str().unwrap()],
    );
    assert!(on.status.success(), "{}", stderr(&on));
    let (default, on) = (stdout(&default), stdout(&on));
    let files = [home.join("default.yaml"), home.join("on.yaml")];
    std::fs::write(&files[0], &default).unwrap();
    std::fs::write(&files[1], &on).unwrap();
    the_rendered_config_is_valid(&default, home);
    the_rendered_config_is_valid(&on, home);
    the_deployment_runs_as_the_image_does(&on);
    assert!(!default.contains("kind: ServiceMonitor") && !default.contains("kind: Secret"));
    let Some(out) = validate(&[&files[0], &files[1]]) else {
        return;
    };
    for kind in [
        "ServiceAccount",
        "Secret",
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
}

/// One replica replaced by Recreate, as unprivileged as the image, JSON logs, two malloc
/// arenas, IRSA, secrets from the Secret, the state on its claim.
fn the_deployment_runs_as_the_image_does(rendered: &str) {
    for needed in [
        "\n  replicas: 1\n",
        "\n    type: Recreate\n",
        "readOnlyRootFilesystem: true",
        "runAsNonRoot: true",
        "runAsUser: 65532",
        "- ALL",
        "name: KIRO_EXPORTER__LOG__FORMAT\n              value: json",
        "name: MALLOC_ARENA_MAX\n              value: \"2\"",
        "eks.amazonaws.com/role-arn: arn:aws:iam::111122223333:role/kiro-cost-exporter",
        "secretRef:\n                name: kiro-cost-exporter",
        "claimName: kiro-cost-exporter-state",
        "storageClassName: \"gp3\"",
        "args: [\"serve\", \"--config\", \"/etc/kiro-cost-exporter/config.yaml\"]",
        "alert: KiroExporterDown",
        "release: kube-prometheus-stack",
    ] {
        assert!(
            rendered.contains(needed),
            "the chart lacks {needed:?}:\n{rendered}"
        );
    }
}

/// Values the schema refuses fail at render time and name what is wrong: a misspelt key, a
/// port as a string, no image repository, no configuration at all.
#[test]
fn the_helm_chart_refuses_values_it_does_not_know() {
    let Some(helm) = helm() else { return };
    let dir = tempfile::tempdir().unwrap();
    for (set, named) in [
        ("serviceMonitor.enabeld=true", "enabeld"),
        ("service.port=metrics", "/service/port"),
        ("image.repository=", "/image/repository"),
        ("config=null", "config"),
        ("persistence.size=lots", "/persistence/size"),
    ] {
        let o = run_helm(&helm, dir.path(), &["template", "kce", "--set", set]);
        assert!(!o.status.success(), "{set} was accepted");
        let err = stderr(&o);
        assert!(
            err.contains("values don't meet the specifications") && err.contains(named),
            "{set}: {err}"
        );
    }
    // TOML instead of YAML: the ConfigMap holds config.toml and the pod reads it.
    let toml = dir.path().join("config.toml");
    std::fs::write(&toml, "[source]\ncur = \"/var/lib/cur\"\n").unwrap();
    let set_file = format!("configToml={}", toml.display());
    let o = run_helm(
        &helm,
        dir.path(),
        &["template", "kce", "--set-file", &set_file],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("config.toml: |") && out.contains("/etc/kiro-cost-exporter/config.toml"));
    let toml = literal_block(&out, "config.toml");
    assert!(toml.contains("cur = \"/var/lib/cur\""), "{toml}");
}
