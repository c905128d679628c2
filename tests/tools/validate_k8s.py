"""Validate Kubernetes manifests offline.

    validate_k8s.py FILE...

Core resources are checked by kubernetes-validate (PyPI; the Kubernetes OpenAPI schemas it
carries, strict: unknown fields are errors) against the newest Kubernetes version it knows.
The Prometheus Operator's ServiceMonitor and PrometheusRule are checked against their CRDs'
openAPIV3Schema (tests/tools/schemas/, from prometheus-operator's repository), with unknown
fields refused as the API server's pruning would drop them.

Prints "OK <file> <kind>/<name>" per resource or "INVALID <file> <kind>/<name>: <why>";
exits 1 when any is invalid.
"""
import json
import os
import sys

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate import utils

SCHEMAS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "schemas")
CRDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-v1.json",
}


def strict(schema):
    """The schema with additionalProperties false wherever properties are listed and unknown
    fields are not preserved."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def check_crd(doc, schema_file):
    with open(os.path.join(SCHEMAS, schema_file), encoding="utf-8") as f:
        schema = strict(json.load(f))
    # metadata is the API server's ObjectMeta, not described by the CRD schema
    schema.setdefault("properties", {})["metadata"] = {"type": "object"}
    errors = sorted(
        jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.path)
    )
    if errors:
        raise ValueError(
            "; ".join(f"{'.'.join(map(str, e.path)) or '(root)'}: {e.message}" for e in errors[:5])
        )


def main(paths):
    version = utils.latest_version()
    ok = True
    for path in paths:
        with open(path, encoding="utf-8") as f:
            docs = [d for d in yaml.safe_load_all(f) if d is not None]
        if not docs:
            print(f"INVALID {path}: no resources")
            ok = False
        for doc in docs:
            name = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
            try:
                crd = CRDS.get((doc.get("apiVersion"), doc.get("kind")))
                if crd:
                    check_crd(doc, crd)
                else:
                    kubernetes_validate.validate(doc, version, strict=True)
                print(f"OK {path} {name}")
            except (ValueError, utils.ValidationError, utils.SchemaNotFoundError) as e:
                msg = str(getattr(e, "message", e)).replace("\n", " ")
                print(f"INVALID {path} {name}: {msg}")
                ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
