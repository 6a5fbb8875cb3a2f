"""The deployment files are real: manifests validate, the Containerfile lints, alert rules and
scrape config pass promtool, and every metric the rules and dashboard name exists."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from router import yaml12
from router.catalog import Catalog
from router.config import parse_config
from router.metrics import Metrics
from router.policy_loader import load_policy_dir

OPS = Path(__file__).resolve().parent.parent / "ops"
BIN = Path(sys.executable).parent
MANIFESTS = sorted((OPS / "k8s").glob("*.yaml"))


def tool(name: str) -> str:
    found = shutil.which(name) or (str(BIN / name) if (BIN / name).exists() else None)
    if found is None:
        pytest.skip(f"{name} is not installed (.ci/run installs it)")
    return found


def test_manifests_validate_against_the_kubernetes_schemas() -> None:
    manifests = [m for m in MANIFESTS if m.name != "kustomization.yaml"]
    result = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "-k", "1.33.0", *map(str, manifests)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") == len(manifests)


def test_kustomization_lists_every_manifest() -> None:
    listed = set(yaml.safe_load((OPS / "k8s" / "kustomization.yaml").read_text())["resources"])
    assert listed == {m.name for m in MANIFESTS if m.name != "kustomization.yaml"}


def test_router_is_a_hardened_native_sidecar() -> None:
    deployment = yaml.safe_load((OPS / "k8s" / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    router = next(c for c in pod["initContainers"] if c["name"] == "fusion-router")
    assert router["restartPolicy"] == "Always"  # a native sidecar
    security = router["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["runAsNonRoot"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    assert security["seccompProfile"]["type"] == "RuntimeDefault"
    assert {"livenessProbe", "readinessProbe", "startupProbe", "resources"} <= set(router)
    assert router["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"secretRef": {"name": "router-keys"}} in router["envFrom"]
    assert pod["terminationGracePeriodSeconds"] > 20


def test_configmaps_hold_a_valid_config_and_policies(tmp_path: Path) -> None:
    """The ConfigMaps' router.yaml and policy files pass the sidecar's own validation."""
    router_cm = yaml.safe_load((OPS / "k8s" / "configmap-router.yaml").read_text())
    config = parse_config(yaml12.loads(router_cm["data"]["router.yaml"]), "router.yaml")
    policies_cm = yaml.safe_load((OPS / "k8s" / "configmap-policies.yaml").read_text())
    for name, text in policies_cm["data"].items():
        (tmp_path / name).write_text(text)
    catalog = Catalog.from_config(config)
    policies = load_policy_dir(tmp_path, catalog.models, required=[config.jurisdiction])
    assert config.jurisdiction in policies.jurisdictions


def test_containerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [tool("hadolint"), str(OPS / "container" / "Containerfile")],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_and_scrape_config_pass_promtool() -> None:
    promtool = tool("promtool")
    for args in (["check", "rules", "alerts.yml"], ["check", "config", "prometheus.yml"]):
        result = subprocess.run(
            [promtool, *args],
            cwd=OPS / "observability",
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def _names(text: str) -> set[str]:
    found = set(re.findall(r"router_[a-z_]+", text))
    return {re.sub(r"_(bucket|sum|count|created)$", "", n) for n in found}


def test_every_metric_the_rules_and_dashboard_use_exists() -> None:
    registry = Metrics.create().registry
    exported = {metric.name for metric in registry.collect()}
    exported |= {f"{name}_total" for name in exported}
    rules = _names((OPS / "observability" / "alerts.yml").read_text())
    dashboard = json.loads((OPS / "observability" / "grafana-dashboard.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    used = rules | _names(exprs)
    assert used, "no metric names found"
    assert used <= exported, sorted(used - exported)


def test_systemd_unit_is_hardened() -> None:
    unit = (OPS / "systemd" / "fusion-router.service").read_text()
    for setting in (
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "KillSignal=SIGTERM",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
    ):
        assert setting in unit
