"""Policy files: every problem with its path and line, directory loading, reload and the watcher."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import time
from collections.abc import Callable, Mapping
from datetime import date
from pathlib import Path

import pytest

from router import yaml12
from router.catalog import Catalog, CatalogModel
from router.config import load_config
from router.errors import PolicyError, Problem
from router.policy import PolicySet
from router.policy_loader import (
    PolicyStore,
    ReloadResult,
    check_policy_dir,
    check_policy_file,
    load_policy_dir,
    load_policy_file,
    watch,
)

VALID = """\
jurisdiction: eu
version: 3
default: allow
description: test policy
rules:
  - id: directive
    effect: deny
    reason: export directive
    effective_from: "2026-06-15"
    match:
      models: [claude-fable-5, claude-mythos-5]
  - id: residency
    effect: deny
    reason: data residency
    match:
      regions_not_in: [eu, us]
"""

US = """\
jurisdiction: us
version: "1"
default: allow
"""


@pytest.fixture(scope="module")
def catalog() -> Mapping[str, CatalogModel]:
    return Catalog.from_config(load_config(None).config).models


def write(path: Path, text: str | bytes) -> Path:
    """Write-temp-then-rename, as operators (and ConfigMaps) do."""
    data = text.encode() if isinstance(text, str) else text
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


def problems_of(
    tmp_path: Path, text: str | bytes, catalog: Mapping[str, CatalogModel], name: str = "eu.yaml"
) -> list[Problem]:
    policy, problems = check_policy_file(write(tmp_path / name, text), catalog)
    errors = [p for p in problems if p.severity == "error"]
    assert (policy is None) == bool(errors)
    return problems


def one_error(
    tmp_path: Path, text: str | bytes, catalog: Mapping[str, CatalogModel], name: str = "eu.yaml"
) -> Problem:
    errors = [p for p in problems_of(tmp_path, text, catalog, name) if p.severity == "error"]
    assert len(errors) == 1, errors
    assert errors[0].file == str(tmp_path / name)
    return errors[0]


# --- one valid file ---------------------------------------------------------------


def test_a_valid_file_loads(tmp_path: Path, catalog: Mapping[str, CatalogModel]) -> None:
    path = write(tmp_path / "eu.yaml", VALID)
    policy = load_policy_file(path, catalog)
    assert (policy.jurisdiction, policy.version, policy.default) == ("eu", "3", "allow")
    assert policy.description == "test policy"
    assert policy.sha256 == hashlib.sha256(VALID.encode()).hexdigest()
    assert policy.source == str(path)
    assert policy.warnings == ()
    directive, residency = policy.rules
    assert (directive.id, directive.effect, directive.reason) == (
        "directive",
        "deny",
        "export directive",
    )
    assert directive.effective_from == date(2026, 6, 15)
    assert directive.effective_until is None
    assert directive.match.models == ("claude-fable-5", "claude-mythos-5")
    assert residency.match.regions_not_in == ("eu", "us")
    assert residency.match.models is None


def test_norway_stays_a_string(tmp_path: Path, catalog: Mapping[str, CatalogModel]) -> None:
    policy = load_policy_file(write(tmp_path / "no.yaml", VALID.replace("eu", "no", 1)), catalog)
    assert policy.jurisdiction == "no"
    upper = one_error(
        tmp_path, VALID.replace("jurisdiction: eu", "jurisdiction: NO"), catalog, "no.yaml"
    )
    assert (upper.path, upper.line) == ("jurisdiction", 1)
    assert "'NO' is not a lower-case jurisdiction code" in upper.message
    key = one_error(tmp_path, VALID + "NO: {default: deny}\n", catalog)
    assert (key.path, key.line, key.message) == ("NO", 17, "unknown key")


def test_version_may_be_a_string_or_an_integer(
    tmp_path: Path, catalog: Mapping[str, CatalogModel]
) -> None:
    for raw, expected in (('"2026-06-15"', "2026-06-15"), ("7", "7")):
        text = VALID.replace("version: 3", f"version: {raw}")
        assert load_policy_file(write(tmp_path / "eu.yaml", text), catalog).version == expected
    for raw in ("true", "1.5", "[1]", '""'):
        problem = one_error(tmp_path, VALID.replace("version: 3", f"version: {raw}"), catalog)
        assert (problem.path, problem.line) == ("version", 2)


# --- every error path ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "path", "line", "message"),
    [
        ("description: test policy", "colour: blue", "colour", 4, "unknown key"),
        ("      models: [", "      model: [", "rules[0].match.model", 11, "unknown key"),
        (
            "    reason: data residency\n",
            "    reason: data residency\n    note: x\n",
            "rules[1].note",
            15,
            "unknown key",
        ),
        ("default: allow", "default: yes", "default", 3, "Input should be 'allow' or 'deny'"),
        ("default: allow", "default: Deny", "default", 3, "Input should be 'allow' or 'deny'"),
        (
            "    effect: deny\n    reason: export",
            "    effect: 1\n    reason: export",
            "rules[0].effect",
            7,
            "Input should be 'allow' or 'deny'",
        ),
        (
            "[claude-fable-5, claude-mythos-5]",
            "claude-fable-5",
            "rules[0].match.models",
            11,
            "Input should be a valid list",
        ),
        (
            "[claude-fable-5, claude-mythos-5]",
            "[]",
            "rules[0].match.models",
            11,
            "List should have at least 1 item after validation, not 0",
        ),
        (
            "[eu, us]",
            "[eu, 7]",
            "rules[1].match.regions_not_in[1]",
            16,
            "Input should be a valid string",
        ),
        ("version: 3\n", "", "version", 1, "required key is missing"),
        ("    reason: export directive\n", "", "rules[0].reason", 6, "required key is missing"),
        (
            "  - id: residency",
            "  - id: directive",
            "rules[1].id",
            12,
            "duplicate rule id 'directive' (first at rules[0])",
        ),
        (
            "  - id: residency",
            "  - id: DIRECTIVE",
            "rules[1].id",
            12,
            "duplicate rule id 'DIRECTIVE' (first at rules[0])",
        ),
        (
            "  - id: residency",
            "  - id: default",
            "rules[1].id",
            12,
            "'default' is reserved for the engine's own decisions",
        ),
        (
            "  - id: residency",
            "  - id: has space",
            "rules[1].id",
            12,
            "a rule id is 1-128 letters, digits, '.', '_', ':' or '-'",
        ),
        (
            '"2026-06-15"',
            '"2026-13-01"',
            "rules[0].effective_from",
            9,
            "'2026-13-01' is not a calendar date",
        ),
        (
            '"2026-06-15"',
            '"15/06/2026"',
            "rules[0].effective_from",
            9,
            "must be a date written YYYY-MM-DD",
        ),
        (
            '"2026-06-15"',
            "20260615",
            "rules[0].effective_from",
            9,
            "must be a date written YYYY-MM-DD",
        ),
        (
            'effective_from: "2026-06-15"',
            'effective_from: "2026-06-15"\n    effective_until: "2026-06-14"',
            "rules[0].effective_until",
            10,
            "is before effective_from",
        ),
        (
            "[eu, us]",
            "[eu, mars]",
            "rules[1].match.regions_not_in[1]",
            16,
            "unknown region 'mars': not an ISO 3166 alpha-2 code or 'eu'",
        ),
        (
            "[eu, us]",
            "[eu, uk]",
            "rules[1].match.regions_not_in[1]",
            16,
            "unknown region 'uk': not an ISO 3166 alpha-2 code or 'eu' (the ISO code of the United Kingdom is 'gb')",
        ),
        (
            "      regions_not_in: [eu, us]",
            "      origins: [usa]",
            "rules[1].match.origins[0]",
            16,
            "unknown origin 'usa': not an ISO 3166 alpha-2 code or 'eu'",
        ),
        (
            "      regions_not_in: [eu, us]",
            "      {}",
            "rules[1].match",
            15,
            "match names no field; use at least one of models, vendors, providers, origins, regions, regions_not_in, tags",
        ),
        (
            "      regions_not_in: [eu, us]",
            "      models: ~",
            "rules[1].match",
            15,
            "match names no field; use at least one of models, vendors, providers, origins, regions, regions_not_in, tags",
        ),
        (
            "jurisdiction: eu",
            "jurisdiction: us",
            "jurisdiction",
            1,
            "jurisdiction 'us' does not match the file name 'eu.yaml'",
        ),
        (
            "jurisdiction: eu",
            "jurisdiction: e",
            "jurisdiction",
            1,
            "'e' is not a lower-case jurisdiction code such as 'eu' or 'us-ca'",
        ),
        (
            "jurisdiction: eu",
            "jurisdiction: 7",
            "jurisdiction",
            1,
            "Input should be a valid string",
        ),
    ],
)
def test_each_error_names_its_path_and_line(
    tmp_path: Path,
    catalog: Mapping[str, CatalogModel],
    old: str,
    new: str,
    path: str,
    line: int | None,
    message: str,
) -> None:
    assert old in VALID
    problem = one_error(tmp_path, VALID.replace(old, new, 1), catalog)
    assert (problem.path, problem.line, problem.message) == (path, line, message)


def test_every_problem_of_a_file_is_reported_at_once(
    tmp_path: Path, catalog: Mapping[str, CatalogModel]
) -> None:
    text = (
        VALID.replace("description: test policy", "colour: blue")
        .replace("  - id: residency", "  - id: directive")
        .replace("[eu, us]", "[eu, mars]")
        .replace('"2026-06-15"', '"2026-02-30"')
    )
    problems = problems_of(tmp_path, text, catalog)
    assert [(p.path, p.line) for p in problems] == [
        ("colour", 4),
        ("rules[0].effective_from", 9),
        ("rules[1].id", 12),
        ("rules[1].match.regions_not_in[1]", 16),
    ]
    with pytest.raises(PolicyError) as info:
        load_policy_file(tmp_path / "eu.yaml", catalog)
    assert info.value.problems == tuple(problems)
    assert info.value.code == "policy_invalid"


@pytest.mark.parametrize(
    ("text", "path", "line", "fragment"),
    [
        (VALID + "default: deny\n", "default", 17, "duplicate key 'default'"),
        (
            VALID.replace("    effect: deny\n", "    effect: deny\n    effect: allow\n", 1),
            "rules[0].effect",
            8,
            "duplicate key 'effect'",
        ),
        ("", "", None, "file is empty"),
        ("# only a comment\n", "", None, "file is empty"),
        ("- a list\n", "", 1, "a policy file must be a mapping"),
        (
            VALID.replace('effective_from: "2026-06-15"', "effective_from: 2026-06-15"),
            "",
            9,
            'an unquoted date: quote it, e.g. "2026-06-15"',
        ),
        ("jurisdiction: eu\nversion: [1\n", "", 3, "YAML syntax error"),
        ("jurisdiction: !!python/object:os.system eu\n", "", 1, "unsupported tag"),
        ("base: &a [1]\nmore:\n  <<: *a\n", "", 3, "merge keys"),
    ],
)
def test_yaml_level_problems(
    tmp_path: Path,
    catalog: Mapping[str, CatalogModel],
    text: str,
    path: str,
    line: int | None,
    fragment: str,
) -> None:
    problem = one_error(tmp_path, text, catalog)
    assert (problem.path, problem.line) == (path, line)
    assert fragment in problem.message


def test_non_utf8_file(tmp_path: Path, catalog: Mapping[str, CatalogModel]) -> None:
    problem = one_error(tmp_path, VALID.encode().replace(b"test policy", b"caf\xe9"), catalog)
    assert problem.message.startswith("file is not UTF-8 (byte ")


def test_file_over_one_mib(tmp_path: Path, catalog: Mapping[str, CatalogModel]) -> None:
    text = VALID + "#" * yaml12.MAX_FILE_BYTES + "\n"
    problem = one_error(tmp_path, text, catalog)
    assert problem.message == f"file is larger than {yaml12.MAX_FILE_BYTES} bytes"


@pytest.mark.parametrize(
    "cut",
    [
        VALID.index("[claude-fable-5") + 5,  # inside a flow sequence: a YAML syntax error
        VALID.index("    reason: data residency"),  # a rule without reason and match
        VALID.index("  - id: directive") + 7,  # a rule with only part of its id
        len(VALID) - 6,  # inside the last value: an unknown region 'e'
    ],
)
def test_truncated_mid_write_is_invalid(
    tmp_path: Path, catalog: Mapping[str, CatalogModel], cut: int
) -> None:
    problems = problems_of(tmp_path, VALID[:cut], catalog)
    assert any(p.severity == "error" for p in problems)


def test_missing_file(tmp_path: Path, catalog: Mapping[str, CatalogModel]) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy_file(tmp_path / "eu.yaml", catalog)
    assert [p.message for p in info.value.problems] == ["file not found"]


# --- warnings -----------------------------------------------------------------------


def test_warnings_do_not_stop_a_load(tmp_path: Path, catalog: Mapping[str, CatalogModel]) -> None:
    text = VALID + (
        "  - id: anthropic-ok\n"
        "    effect: allow\n"
        "    reason: reviewed\n"
        "    match: {vendors: [Anthropic, Nobody Inc]}\n"
        "  - id: future\n"
        "    effect: deny\n"
        "    reason: not yet\n"
        "    match: {models: ['gpt-9*', 'gemini-*']}\n"
        "  - id: ghost\n"
        "    effect: deny\n"
        "    reason: nothing\n"
        "    match: {vendors: [OpenAI], origins: [cn], tags: [made_up]}\n"
    )
    policy = load_policy_file(write(tmp_path / "eu.yaml", text), catalog)
    found = {(w.path, w.line, w.message) for w in policy.warnings}
    assert all(w.severity == "warning" for w in policy.warnings)
    assert found == {
        ("rules[2].match.vendors[1]", 20, "vendor 'Nobody Inc' matches no catalog model"),
        (
            "rules[2]",
            17,
            "allow rule 'anthropic-ok' and deny rule 'directive' both match "
            "claude-fable-5, claude-mythos-5; deny wins",
        ),
        ("rules[3].match.models[0]", 24, "glob 'gpt-9*' matches no catalog model"),
        ("rules[4].match.tags[0]", 28, "tag 'made_up' is on no catalog model"),
    }


def test_allow_and_deny_in_disjoint_windows_do_not_warn(
    tmp_path: Path, catalog: Mapping[str, CatalogModel]
) -> None:
    text = VALID + (
        "  - id: before-directive\n"
        "    effect: allow\n"
        "    reason: grandfathered\n"
        '    effective_until: "2026-06-14"\n'
        "    match: {models: [claude-fable-5]}\n"
    )
    assert load_policy_file(write(tmp_path / "eu.yaml", text), catalog).warnings == ()


# --- folders ------------------------------------------------------------------------


def test_a_folder_loads_into_a_set(tmp_path: Path, catalog: Mapping[str, CatalogModel]) -> None:
    write(tmp_path / "eu.yaml", VALID)
    write(tmp_path / "us.yaml", US)
    (tmp_path / "README.md").write_text("not a policy")
    (tmp_path / ".hidden.yaml").write_text("not: [valid")
    (tmp_path / "..data").mkdir()  # a ConfigMap mount's internals
    policies = load_policy_dir(tmp_path, catalog, required=["US", "eu"])
    assert isinstance(policies, PolicySet)
    assert policies.jurisdictions == ("eu", "us")
    assert policies.version == "eu@3,us@1"
    assert check_policy_dir(tmp_path, catalog, ["us"]) == []


def test_folder_problems_are_all_listed(
    tmp_path: Path, catalog: Mapping[str, CatalogModel]
) -> None:
    write(tmp_path / "eu.yaml", VALID.replace("[eu, us]", "[eu, mars]"))
    write(tmp_path / "us.yaml", US.replace("default: allow", "default: maybe"))
    write(tmp_path / "fr.yml", US)
    with pytest.raises(PolicyError) as info:
        load_policy_dir(tmp_path, catalog, required=["us", "in"])
    found = [(Path(p.file).name, p.path, p.severity) for p in info.value.problems]
    assert found == [
        (tmp_path.name, "fr.yml", "warning"),
        ("eu.yaml", "rules[1].match.regions_not_in[1]", "error"),
        ("us.yaml", "default", "error"),
        (tmp_path.name, "", "error"),
    ]
    assert info.value.problems[-1].message == "no policy for required jurisdiction 'in' (in.yaml)"
    assert check_policy_dir(tmp_path, catalog, ["us", "in"]) == list(info.value.problems)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: None, "policy folder not found"),
        (lambda d: d.mkdir(), "no policy files (*.yaml) in the folder"),
        (lambda d: d.write_text("a file"), "policy folder not found"),
    ],
)
def test_missing_or_empty_folder(
    tmp_path: Path,
    catalog: Mapping[str, CatalogModel],
    setup: Callable[[Path], object],
    message: str,
) -> None:
    folder = tmp_path / "policies"
    setup(folder)
    with pytest.raises(PolicyError) as info:
        load_policy_dir(folder, catalog)
    assert [(p.file, p.message) for p in info.value.problems] == [(str(folder), message)]


def test_missing_required_jurisdiction(tmp_path: Path, catalog: Mapping[str, CatalogModel]) -> None:
    write(tmp_path / "us.yaml", US)
    with pytest.raises(PolicyError) as info:
        load_policy_dir(tmp_path, catalog, required=[" EU "])
    assert [p.message for p in info.value.problems] == [
        "no policy for required jurisdiction 'eu' (eu.yaml)"
    ]


# --- the store ----------------------------------------------------------------------


class Recorder:
    """Hook calls, in order."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.fail = fail

    def __call__(self, *args: object) -> None:
        self.calls.append(args)
        if self.fail:
            raise RuntimeError("hook bug")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "policies"
    folder.mkdir()
    write(folder / "eu.yaml", VALID)
    write(folder / "us.yaml", US)
    return folder


def store_of(
    folder: Path, catalog: Mapping[str, CatalogModel], *, fail_hooks: bool = False
) -> tuple[PolicyStore, Recorder, Recorder]:
    changes, failures = Recorder(fail_hooks), Recorder(fail_hooks)
    store = PolicyStore(folder, catalog, ["us"], on_change=changes, on_failure=failures)
    return store, changes, failures


def assert_kept(store: PolicyStore, lkg: PolicySet, result: ReloadResult, fragment: str) -> None:
    assert not result.ok
    assert not result.changed
    assert store.current is lkg
    assert result.current is lkg
    assert store.stale
    assert store.last_error is result.error
    assert result.error is not None
    assert any(fragment in p.message for p in result.error.problems), result.error.problems


def test_store_starts_only_from_a_valid_folder(
    folder: Path, catalog: Mapping[str, CatalogModel]
) -> None:
    write(folder / "eu.yaml", "jurisdiction: eu\n")
    with pytest.raises(PolicyError):
        PolicyStore(folder, catalog, ["us"])
    with pytest.raises(PolicyError):
        PolicyStore(folder / "missing", catalog)


def test_store_swaps_on_a_valid_change(folder: Path, catalog: Mapping[str, CatalogModel]) -> None:
    store, changes, failures = store_of(folder, catalog)
    first = store.current
    loaded_at = store.loaded_at
    assert (store.stale, store.last_error, store.reloads_ok, store.reloads_failed) == (
        False,
        None,
        0,
        0,
    )
    assert store.current.policies["eu"].version == "3"

    same = store.reload()
    assert (same.ok, same.changed) == (True, False)
    assert store.current is first
    assert changes.calls == []

    write(folder / "eu.yaml", VALID.replace("version: 3", "version: 4"))
    result = store.reload()
    assert (result.ok, result.changed, result.error) == (True, True, None)
    assert result.previous is first
    assert result.current is store.current
    assert store.current.policies["eu"].version == "4"
    assert store.current.sha256 != first.sha256
    assert changes.calls == [(first, store.current)]
    assert failures.calls == []
    assert (store.reloads_ok, store.reloads_failed) == (2, 0)
    assert store.loaded_at >= loaded_at


def test_an_invalid_change_keeps_the_last_known_good(
    folder: Path, catalog: Mapping[str, CatalogModel]
) -> None:
    store, changes, failures = store_of(folder, catalog)
    lkg = store.current
    write(folder / "eu.yaml", VALID.replace("[eu, us]", "[eu, mars]"))
    result = store.reload()
    assert_kept(store, lkg, result, "unknown region 'mars'")
    assert (store.reloads_ok, store.reloads_failed) == (0, 1)
    assert failures.calls == [(result.error,)]
    assert changes.calls == []

    write(folder / "eu.yaml", VALID.replace("version: 3", "version: 5"))
    fixed = store.reload()
    assert (fixed.ok, fixed.changed) == (True, True)
    assert (store.stale, store.last_error) == (False, None)
    assert store.current.policies["eu"].version == "5"
    assert (store.reloads_ok, store.reloads_failed) == (1, 1)


def test_an_invalid_file_is_never_partly_applied(
    folder: Path, catalog: Mapping[str, CatalogModel]
) -> None:
    store, _, _ = store_of(folder, catalog)
    lkg = store.current
    write(folder / "us.yaml", US.replace('"1"', '"2"'))  # valid
    write(folder / "eu.yaml", VALID + "  - {}\n")  # invalid
    assert_kept(store, lkg, store.reload(), "required key is missing")
    assert store.current.policies["us"].version == "1"


def test_a_deleted_file_keeps_the_last_known_good(
    folder: Path, catalog: Mapping[str, CatalogModel]
) -> None:
    store, _, _ = store_of(folder, catalog)
    lkg = store.current
    (folder / "eu.yaml").unlink()  # eu is not in `required`, but it was loaded
    assert_kept(store, lkg, store.reload(), "no policy for required jurisdiction 'eu'")
    assert store.current.get("eu") is not None


def test_a_deleted_folder_keeps_the_last_known_good(
    folder: Path, catalog: Mapping[str, CatalogModel]
) -> None:
    store, _, _ = store_of(folder, catalog)
    lkg = store.current
    shutil.rmtree(folder)
    assert_kept(store, lkg, store.reload(), "policy folder not found")


def test_a_file_truncated_mid_write_keeps_the_last_known_good(
    folder: Path, catalog: Mapping[str, CatalogModel]
) -> None:
    store, _, _ = store_of(folder, catalog)
    lkg = store.current
    (folder / "eu.yaml").write_text(VALID[: VALID.index("claude-mythos-5")])  # in place, half done
    assert_kept(store, lkg, store.reload(), "YAML syntax error")


def test_hooks_that_raise_do_not_break_a_reload(
    folder: Path, catalog: Mapping[str, CatalogModel]
) -> None:
    store, changes, failures = store_of(folder, catalog, fail_hooks=True)
    write(folder / "eu.yaml", VALID.replace("version: 3", "version: 4"))
    assert store.reload().ok
    assert store.current.policies["eu"].version == "4"
    write(folder / "eu.yaml", "jurisdiction: [")
    assert not store.reload().ok
    assert store.current.policies["eu"].version == "4"
    assert (len(changes.calls), len(failures.calls), store.hook_failures) == (1, 1, 2)
    assert (store.reloads_ok, store.reloads_failed) == (1, 1)


def test_an_older_read_never_replaces_a_newer_one(
    folder: Path, catalog: Mapping[str, CatalogModel]
) -> None:
    store, _, _ = store_of(folder, catalog)
    older = store.load_candidate()
    write(folder / "eu.yaml", VALID.replace("version: 3", "version: 9"))
    newer = store.load_candidate()
    assert store.apply(newer).changed
    late = store.apply(older)
    assert late.superseded
    assert not late.changed
    assert store.current.policies["eu"].version == "9"


# --- the watcher --------------------------------------------------------------------


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_the_watcher_picks_up_changes_and_keeps_running(
    folder: Path, catalog: Mapping[str, CatalogModel]
) -> None:
    store, changes, _ = store_of(folder, catalog, fail_hooks=True)
    task = asyncio.create_task(watch(store, interval_s=0.02, debounce_s=0.01))
    try:
        await asyncio.sleep(0.1)
        assert (store.reloads_ok, store.reloads_failed) == (0, 0)  # nothing changed yet

        write(folder / "eu.yaml", VALID.replace("version: 3", "version: 4"))
        await wait_for(lambda: store.current.policies["eu"].version == "4")
        assert len(changes.calls) == 1  # the hook raised; the watcher carried on

        write(folder / "eu.yaml", "jurisdiction: eu\nversion: [")
        await wait_for(lambda: store.reloads_failed == 1)
        assert store.stale
        assert store.current.policies["eu"].version == "4"

        shutil.rmtree(folder)
        await wait_for(lambda: store.reloads_failed == 2)
        folder.mkdir()
        write(folder / "us.yaml", US)
        write(folder / "eu.yaml", VALID.replace("version: 3", "version: 6"))
        await wait_for(lambda: store.current.policies["eu"].version == "6")
        assert not store.stale
        assert not task.done()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_the_watcher_waits_for_a_change_to_settle(
    folder: Path, catalog: Mapping[str, CatalogModel]
) -> None:
    store, _, _ = store_of(folder, catalog)
    task = asyncio.create_task(watch(store, interval_s=0.01, debounce_s=0.3))
    try:
        path = folder / "eu.yaml"
        for version in range(10, 20):  # a slow writer: the file changes every 20 ms
            path.write_text(VALID.replace("version: 3", f"version: {version}"))
            os.utime(path, ns=(version * 10**9, version * 10**9))
            await asyncio.sleep(0.02)
        assert store.reloads_ok + store.reloads_failed == 0
        await wait_for(lambda: store.current.policies["eu"].version == "19")
        assert store.reloads_ok == 1
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_unknown_model_or_provider_in_a_rule_is_a_warning(
    tmp_path: Path, catalog: Mapping[str, CatalogModel]
) -> None:
    """A shared policy folder serves sidecars with different catalogs: a rule naming a model or
    provider this catalog lacks still loads, with a warning that `check` shows (a typo?)."""
    text = VALID.replace("claude-mythos-5]", "claude-mythos-9]", 1).replace(
        "      regions_not_in: [eu, us]", "      providers: [sim-nowhere]", 1
    )
    policy = load_policy_file(write(tmp_path / "eu.yaml", text), catalog)
    found = {(w.path, w.message) for w in policy.warnings}
    assert (
        "rules[0].match.models[1]",
        "model 'claude-mythos-9' is not in this catalog (a typo?)",
    ) in found
    assert (
        "rules[1].match.providers[0]",
        "provider 'sim-nowhere': no catalog model uses it (a typo?)",
    ) in found
