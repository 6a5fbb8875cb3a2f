"""The compiled span modules: served only while they match the source, and as correct as it.

The decision (`router.native.native_status`) is checked on fake builds; a real mypyc build of a
copy of the checkout then runs the span tests compiled, and the same tests run on the source with
`FUSION_ROUTER_NO_EXTENSIONS`, each in its own process that reports which build it imported.
"""

from __future__ import annotations

import dataclasses
import importlib.machinery
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from router import native
from tests.helpers import needs_a_compiler

ROOT = Path(__file__).resolve().parent.parent
SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]
# The tests that exercise the compiled modules: recording, sampling, encoding, shipping.
SPAN_TESTS = (
    "tests/test_otlp_encoding.py",
    "tests/test_span_recorder.py",
    "tests/test_sampling.py",
    "tests/test_span_shipping.py",
)
MIN_SPAN_TESTS = 60  # (69 today): fewer means the files did not run whole


def _fake_build(package_dir: Path, *, digest: str | None = None) -> Path:
    """A manifest and empty compiled files, as the build hook lays them out."""
    native_dir = package_dir / native.NATIVE_DIR_NAME
    native_dir.mkdir()
    modules = {f"router.{name}": f"{name}{SUFFIX}" for name in native.COMPILED}
    for file in [*modules.values(), f"spans__mypyc{SUFFIX}"]:
        (native_dir / file).write_bytes(b"")
    manifest = {
        "digest": digest or native.source_digest(package_dir),
        "modules": modules,
        "library": f"spans__mypyc{SUFFIX}",
        "against": native.installed_versions(native.COMPILED_AGAINST),
    }
    (native_dir / native.MANIFEST_NAME).write_text(json.dumps(manifest))
    return native_dir


@pytest.fixture
def package_dir(tmp_path: Path) -> Path:
    """The checked sources, copied."""
    for name in native.CHECKED_SOURCES:
        shutil.copyfile(ROOT / "router" / f"{name}.py", tmp_path / f"{name}.py")
    return tmp_path


def test_a_build_matching_the_sources_is_served(package_dir: Path) -> None:
    native_dir = _fake_build(package_dir)
    status, build = native.native_status(package_dir, {})
    assert status == native.NativeStatus(native.COMPILED_MODULES, "compiled")
    assert build is not None
    assert build.paths["router.span_recorder"] == native_dir / f"span_recorder{SUFFIX}"
    assert sorted(build.paths) == sorted(native.COMPILED_MODULES)
    assert build.library == "router._native.spans__mypyc"


def test_no_build_means_the_source(package_dir: Path) -> None:
    assert native.native_status(package_dir, {}) == (native.NativeStatus((), "not built"), None)


def _finder(package_dir: Path, **changes: object) -> native.CompiledModuleFinder:
    status, build = native.native_status(package_dir, {})
    assert build is not None
    return native.CompiledModuleFinder(status, dataclasses.replace(build, **changes))


def test_the_finder_serves_a_build_whose_library_loads_against_this_opentelemetry(
    package_dir: Path,
) -> None:
    _fake_build(package_dir)
    finder = _finder(package_dir, library="json")  # (a module that imports, for the library)
    spec = finder.find_spec("router.sampling")
    assert spec is not None
    assert spec.origin == str(package_dir / native.NATIVE_DIR_NAME / f"sampling{SUFFIX}")
    assert finder.status.reason == "compiled"
    assert finder.find_spec("router.routing") is None  # only the compiled modules


@pytest.mark.parametrize("version", ["0.0.1", None])
def test_a_build_against_another_opentelemetry_is_refused_at_first_import(
    package_dir: Path, version: str | None
) -> None:
    """mypyc lays the classes out by OpenTelemetry's types: another version, and the source
    runs (checked when a span module is first imported, not at every `import router`)."""
    _fake_build(package_dir)
    against = {**native.installed_versions(native.COMPILED_AGAINST), "opentelemetry-sdk": version}
    finder = _finder(package_dir, library="json", against=against)
    assert finder.status.reason == "compiled"
    assert finder.find_spec("router.span_recorder") is None
    assert finder.status == native.NativeStatus((), "other opentelemetry")
    assert finder.find_spec("router.sampling") is None


def test_a_build_whose_library_does_not_load_is_refused(package_dir: Path) -> None:
    """Say, a wheel built against a newer C library than this machine's."""
    _fake_build(package_dir)
    finder = _finder(package_dir, library="router._native_nowhere.spans__mypyc")
    assert finder.find_spec("router.otlp_encoding") is None
    assert finder.status == native.NativeStatus((), "unloadable")


def test_deciding_never_breaks_the_import(tmp_path: Path) -> None:
    """Whatever goes wrong reading the build, `install` says why and the source runs."""
    (tmp_path / native.NATIVE_DIR_NAME).mkdir()
    (tmp_path / native.NATIVE_DIR_NAME / native.MANIFEST_NAME).write_text("[" * 100_000)
    status, build = native.native_status(tmp_path, {})  # (RecursionError, or a ValueError)
    assert (status.reason, build) == ("unreadable", None)


@pytest.mark.parametrize("edited", native.CHECKED_SOURCES)
def test_an_edit_to_any_checked_source_makes_the_build_stale(
    package_dir: Path, edited: str
) -> None:
    """Compiled or only imported by compiled code (mypyc inlines constants): one byte counts."""
    _fake_build(package_dir)
    with (package_dir / f"{edited}.py").open("a") as source:
        source.write("\n")
    assert native.native_status(package_dir, {}) == (native.NativeStatus((), "stale"), None)


@pytest.mark.parametrize("value", ["1", "yes"])
def test_the_environment_switch_turns_a_valid_build_off(package_dir: Path, value: str) -> None:
    _fake_build(package_dir)
    status, build = native.native_status(package_dir, {native.DISABLE_ENV: value})
    assert (status.reason, build) == ("disabled", None)
    assert native.native_status(package_dir, {native.DISABLE_ENV: "0"})[0].reason == "compiled"


def test_a_build_for_another_python_is_not_loaded(package_dir: Path) -> None:
    native_dir = _fake_build(package_dir)
    manifest = json.loads((native_dir / native.MANIFEST_NAME).read_text())
    manifest["library"] = "spans__mypyc.cpython-39-x86_64-linux-gnu.so"
    (native_dir / manifest["library"]).write_bytes(b"")
    (native_dir / native.MANIFEST_NAME).write_text(json.dumps(manifest))
    assert native.native_status(package_dir, {})[0].reason == "other python"


def test_a_build_missing_a_file_is_not_loaded(package_dir: Path) -> None:
    native_dir = _fake_build(package_dir)
    (native_dir / f"sampling{SUFFIX}").unlink()
    assert native.native_status(package_dir, {})[0].reason == "incomplete"


@pytest.mark.parametrize(
    "manifest",
    [
        "{",
        "[]",
        '{"digest": "x"}',
        '{"modules": {"router.sampling": "x.so"}, "library": "y", "against": {}}',
        "ALL_BUT_AGAINST",
    ],
)
def test_a_damaged_manifest_is_not_trusted(package_dir: Path, manifest: str) -> None:
    native_dir = _fake_build(package_dir)
    if manifest == "ALL_BUT_AGAINST":
        whole = json.loads((native_dir / native.MANIFEST_NAME).read_text())
        manifest = json.dumps({k: v for k, v in whole.items() if k != "against"})
    (native_dir / native.MANIFEST_NAME).write_text(manifest)
    assert native.native_status(package_dir, {})[0].reason == "unreadable"


def test_a_missing_checked_source_is_not_trusted(package_dir: Path) -> None:
    _fake_build(package_dir)
    (package_dir / "semconv.py").unlink()
    assert native.native_status(package_dir, {})[0].reason == "unreadable"


def test_the_checked_sources_cover_every_router_import_of_the_compiled_modules() -> None:
    """A compiled module is type-checked against what it imports from router: those bytes count."""
    import ast

    imported = set()
    for name in native.COMPILED:
        tree = ast.parse((ROOT / "router" / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported |= {
                    alias.name.partition(".")[2]
                    for alias in node.names
                    if alias.name.startswith("router.")
                }
            elif isinstance(node, ast.ImportFrom) and node.level:
                raise AssertionError(f"{name}.py: a relative import this test does not read")
            elif isinstance(node, ast.ImportFrom) and node.module == "router":
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("router."):
                imported.add(node.module.partition(".")[2])
    assert imported
    assert imported <= set(native.CHECKED_SOURCES)


def test_the_switch_also_drops_the_builds_requirements() -> None:
    """With FUSION_ROUTER_NO_EXTENSIONS set, pip's build environment needs no mypy, setuptools or
    OpenTelemetry: an install from an index without them (offline, a mirror) still works."""
    spec = importlib.util.spec_from_file_location(
        "_hatch_build_under_test", ROOT / "hatch_build.py"
    )
    assert spec is not None
    assert spec.loader is not None
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    needed = hook.build_requirements({})
    assert {"mypy", "setuptools", "opentelemetry-sdk"} == {r.split(">")[0] for r in needed}
    assert hook.build_requirements({native.DISABLE_ENV: "0"}) == needed
    assert hook.build_requirements({native.DISABLE_ENV: "1"}) == []


def _checkout_copy(destination: Path) -> Path:
    """The router package and the tests, as a checkout without a build."""
    ignore = shutil.ignore_patterns("__pycache__", native.NATIVE_DIR_NAME, ".hypothesis")
    for part in ("router", "tests"):
        shutil.copytree(ROOT / part, destination / part, ignore=ignore)
    for file in ("pyproject.toml", "hatch_build.py"):
        shutil.copyfile(ROOT / file, destination / file)
    return destination


_WHICH = (
    "import json, router.native, router.span_recorder, router.otlp_encoding, router.sampling;"
    "print(json.dumps([router.native.current_status().reason,"
    " router.span_recorder.__file__, router.otlp_encoding.__file__, router.sampling.__file__]))"
)


def _run(checkout: Path, args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != native.DISABLE_ENV}
    environ |= {"PYTHONPATH": str(checkout), "PYTHONDONTWRITEBYTECODE": "1", **env}
    return subprocess.run(
        [sys.executable, *args],
        cwd=checkout,
        env=environ,
        capture_output=True,
        text=True,
        check=False,
        timeout=240,
    )


def _span_tests(checkout: Path, reason: str, **env: str) -> None:
    """The span tests in their own process; the summary names the build and the package it ran."""
    result = _run(checkout, ["-m", "pytest", "-p", "no:cacheprovider", *SPAN_TESTS], **env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert f"span modules: {reason} ({checkout / 'router'})" in result.stdout
    passed = re.search(r"(\d+) passed", result.stdout)
    assert passed is not None
    assert int(passed.group(1)) >= MIN_SPAN_TESTS, result.stdout[-500:]


@needs_a_compiler
@pytest.mark.timeout(600)
def test_the_compiled_build_passes_the_span_tests_and_an_edit_falls_back(tmp_path: Path) -> None:
    """mypyc builds the copy; its span tests pass compiled; one edit and the source runs again."""
    checkout = _checkout_copy(tmp_path)
    built = _run(checkout, ["hatch_build.py"])  # the in-place rebuild a contributor runs
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    assert f"router/{native.NATIVE_DIR_NAME}/{native.MANIFEST_NAME}" in built.stdout

    result = _run(checkout, ["-c", _WHICH])
    reason, *files = json.loads(result.stdout)
    assert reason == "compiled", result.stderr
    assert all(file.endswith(SUFFIX) and file.startswith(str(checkout)) for file in files)
    _span_tests(checkout, "compiled")
    reason, *files = json.loads(_run(checkout, ["-c", _WHICH], **{native.DISABLE_ENV: "1"}).stdout)
    assert reason == "disabled"
    assert all(file.endswith(".py") for file in files)  # the switch, with a valid build there

    with (checkout / "router" / "semconv.py").open("a") as source:
        source.write("# edited after the build\n")
    reason, *files = json.loads(_run(checkout, ["-c", _WHICH]).stdout)
    assert reason == "stale"
    assert [Path(file).name for file in files] == [
        "span_recorder.py",
        "otlp_encoding.py",
        "sampling.py",
    ]


@pytest.mark.timeout(600)
def test_the_source_passes_the_span_tests_with_extensions_off(tmp_path: Path) -> None:
    """The fallback every machine without a compiler runs, tested even where the build exists."""
    checkout = _checkout_copy(tmp_path)
    reason, *files = json.loads(_run(checkout, ["-c", _WHICH], **{native.DISABLE_ENV: "1"}).stdout)
    assert reason == "disabled"
    assert all(file.endswith(".py") for file in files)
    _span_tests(checkout, "disabled", **{native.DISABLE_ENV: "1"})


def test_an_untraced_sidecar_never_loads_the_span_modules() -> None:
    """The whole CLI imported and telemetry built without OTLP export: none of them is loaded
    (the idle RSS budget). With export, all three are."""
    probe = (
        "import sys, router.cli; from router.tracing import build_telemetry; build_telemetry({});"
        f"print(sorted(m for m in {native.COMPILED_MODULES!r} if m in sys.modules))"
    )
    untraced = _run(ROOT, ["-c", probe])
    assert untraced.stdout.strip() == "[]", untraced.stderr[-2000:]
    traced = _run(ROOT, ["-c", probe.replace("build_telemetry({})", _TRACED)])
    assert traced.stdout.strip() == repr(sorted(native.COMPILED_MODULES)), traced.stderr[-2000:]


_TRACED = "build_telemetry({'OTEL_EXPORTER_OTLP_ENDPOINT': 'http://127.0.0.1:9'}).shutdown()"
