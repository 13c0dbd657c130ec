#!/usr/bin/env python3
"""Offline checks of deploy/, run by scripts/lint-deploy.sh inside .deps/deploy-lint.

  deploy_lint.py helm CHART OUTDIR --kube-version V [--expect-failure] VALUES...
      `helm lint --strict` and `helm template` through helm-python-sdk (Helm's Go SDK
      in a shared library: the package has no helm executable). One run per values
      file ("-" for the chart's defaults); each render goes to OUTDIR/<name>.yaml.
      With --expect-failure every values file must be refused by lint or render.

  deploy_lint.py validate --kube-version V FILE...
      Every resource against the Kubernetes OpenAPI schemas that kubernetes-validate
      ships, strict (unknown fields are errors). Unlike the kubernetes-validate CLI,
      a kind without a schema is an error, not a warning: a misspelt kind must fail.
      The CRD kinds the chart renders are checked against the schemas in
      deploy/lint/schemas/ instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent

# CRDs have no schema in kubernetes-validate; these are checked against our own.
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): HERE / "schemas" / "scaledobject-keda-v1alpha1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): HERE / "schemas" / "servicemonitor-monitoring-v1.json",
}

SEVERITY = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}


def load_values(path: str) -> dict | None:
    if path == "-":
        return None
    with open(path) as f:
        return yaml.safe_load(f) or {}


def helm_one(helm, chart: Path, values_path: str, outdir: Path, kube_version: str) -> list[str]:
    """Lints and renders the chart with one values file; returns the problems found."""
    name = "defaults" if values_path == "-" else Path(values_path).stem
    problems: list[str] = []
    try:
        values = load_values(values_path)
        report = helm.lint(str(chart), values, strict=True, kube_version=kube_version)
    except Exception as err:  # malformed input raises; findings are data
        return [f"lint: {err}"]
    for message in report.get("messages", []):
        severity = SEVERITY.get(message.get("severity"), "?")
        line = f"[{severity}] {message.get('path', '')}: {str(message.get('error', '')).strip()}"
        # --strict: warnings fail too. INFO (e.g. "icon is recommended") does not.
        if message.get("severity", 0) >= 2:
            problems.append("lint " + line)
    problems += [f"lint [ERROR] {str(e).strip()}" for e in report.get("errors") or []]
    if problems:
        return problems

    try:
        with helm.Chart.load(str(chart)) as loaded:
            manifests = loaded.render(values, name="pastiche", namespace="pastiche", is_install=True)
    except Exception as err:
        return [f"template: {err}"]
    docs = []
    for path in sorted(manifests):
        text = manifests[path]
        # As `helm template`: NOTES.txt is not a manifest, but it must render (it did).
        if path.endswith("NOTES.txt") or not text.strip():
            continue
        docs.append(f"---\n# Source: {path}\n{text.strip()}\n")
    out = outdir / f"{name}.yaml"
    out.write_text("".join(docs))
    print(f"helm: {name}: lint --strict clean, rendered {len(docs)} templates to {out}")
    return []


def cmd_helm(args: argparse.Namespace) -> int:
    import helm_python as helm

    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    print(f"helm: helm-python-sdk (Helm SDK {helm.helm_sdk_version()}), kube {args.kube_version}")
    failed = 0
    for values_path in args.values:
        problems = helm_one(helm, Path(args.chart), values_path, outdir, args.kube_version)
        if args.expect_failure:
            if problems:
                print(f"helm: {values_path}: refused as it should be: {problems[0][:300]}")
            else:
                print(f"FAIL helm: {values_path}: these values should have been refused")
                failed += 1
        elif problems:
            failed += 1
            for problem in problems:
                print(f"FAIL helm: {values_path}: {problem}")
    return 1 if failed else 0


def validate_crd(resource: dict, schema_path: Path) -> list[str]:
    import jsonschema

    schema = json.loads(schema_path.read_text())
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'.'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message}"
        for error in sorted(validator.iter_errors(resource), key=lambda e: list(e.absolute_path))
    ]


def cmd_validate(args: argparse.Namespace) -> int:
    import kubernetes_validate.utils as kv

    failed = 0
    for filename in args.files:
        with open(filename) as f:
            try:
                resources = [r for r in yaml.safe_load_all(f) if r]
            except yaml.YAMLError as err:
                print(f"FAIL validate: {filename}: not YAML: {err}")
                failed += 1
                continue
        if not resources:
            print(f"FAIL validate: {filename}: no resources")
            failed += 1
            continue
        seen: set[tuple[str, str, str]] = set()
        ok = crds = 0
        for resource in resources:
            if not isinstance(resource, dict) or "kind" not in resource or "apiVersion" not in resource:
                print(f"FAIL validate: {filename}: not a Kubernetes resource: {str(resource)[:200]}")
                failed += 1
                continue
            kind, api = resource["kind"], resource["apiVersion"]
            name = (resource.get("metadata") or {}).get("name", "?")
            what = f"{filename}: {kind}/{name}"
            key = (api.split("/")[0], kind, name)
            if key in seen:
                print(f"FAIL validate: {what}: defined twice")
                failed += 1
            seen.add(key)
            schema = CRD_SCHEMAS.get((api, kind))
            if schema is not None:
                errors = validate_crd(resource, schema)
                for error in errors:
                    print(f"FAIL validate: {what} ({api}, vendored schema): {error}")
                failed += bool(errors)
                crds += not errors
                continue
            try:
                kv.validate(resource, args.kube_version, strict=True)
                ok += 1
            except kv.ValidationError as err:
                path = ".".join(str(p) for p in err.path)
                print(f"FAIL validate: {what}: {path}: {err.message}")
                failed += 1
            except kv.SchemaNotFoundError:
                print(f"FAIL validate: {what}: no schema for {api} {kind} in Kubernetes {args.kube_version}")
                failed += 1
        extra = f" and {crds} custom resources against deploy/lint/schemas" if crds else ""
        print(f"validate: {filename}: {ok} resources valid (strict) against Kubernetes {args.kube_version}{extra}")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    helm = sub.add_parser("helm")
    helm.add_argument("chart")
    helm.add_argument("outdir")
    helm.add_argument("--kube-version", required=True)
    helm.add_argument("--expect-failure", action="store_true")
    helm.add_argument("values", nargs="+")
    validate = sub.add_parser("validate")
    validate.add_argument("--kube-version", required=True)
    validate.add_argument("files", nargs="+")
    args = parser.parse_args()
    # The helm SDK writes through Go; keep our lines in order with its.
    sys.stdout.reconfigure(line_buffering=True)
    return cmd_helm(args) if args.command == "helm" else cmd_validate(args)


if __name__ == "__main__":
    sys.exit(main())
