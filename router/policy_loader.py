"""Policy files to validated `Policy` objects, every problem at once; hot reload that keeps LKG.

Each ``<jurisdiction>.yaml`` is read once (its SHA-256 is taken from the same
bytes that are parsed), parsed by the strict YAML 1.2 loader `yaml12`, checked
against a strict pydantic schema (``extra="forbid"``) and cross-checked
against the catalog: exact model ids and providers must exist, regions and
origins must be pinned region codes, rule ids must be unique. Every problem
carries its file, line and dotted path (``rules[2].match.models[0]``).
Warnings (a glob that matches nothing, an allow rule that a deny rule
overrides) are reported by `check_policy_dir` but do not stop a load.

`PolicyStore` keeps the current `PolicySet` as a plain attribute: readers take
it without a lock and a reload replaces it with one assignment, only after the
whole folder validated. A failed reload (invalid file, half-written file,
deleted file or folder) keeps the last-known-good set, marks the store stale
and counts the failure. `watch` polls the folder and reloads on change.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from router import yaml12
from router.catalog import CatalogModel
from router.config import JURISDICTION_RE, schema_problems
from router.errors import PolicyError, Problem
from router.logs import get_logger
from router.policy import (
    RESERVED_RULE_IDS,
    Match,
    Policy,
    PolicySet,
    Rule,
    fold,
    is_glob,
    is_known_region,
    normalize_jurisdiction,
)

POLICY_SUFFIX = ".yaml"
MATCH_FIELDS = ("models", "vendors", "providers", "origins", "regions", "regions_not_in", "tags")
_RULE_ID = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


# --- schema --------------------------------------------------------------------


def _iso_date(value: object) -> date:
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        raise ValueError("must be a date written YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a calendar date") from None


def _version(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        # pydantic turns ValueError (not TypeError) into a validation error
        raise ValueError("must be a string or an integer (quote it, e.g. '1.2')")  # noqa: TRY004
    text = str(value).strip()
    if not 1 <= len(text) <= 64:
        raise ValueError("must be 1 to 64 characters")
    return text


IsoDate = Annotated[date, BeforeValidator(_iso_date)]
Version = Annotated[str, BeforeValidator(_version)]
Text = Annotated[str, Field(min_length=1, max_length=256)]
Values = Annotated[list[Text], Field(min_length=1, max_length=1000)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class MatchSpec(_Strict):
    """What a rule applies to; every given field must match."""

    models: Values | None = None
    vendors: Values | None = None
    providers: Values | None = None
    origins: Values | None = None
    regions: Values | None = None
    regions_not_in: Values | None = None
    tags: Values | None = None


class RuleSpec(_Strict):
    """One rule as written in the file."""

    id: Annotated[str, Field(pattern=_RULE_ID)]
    effect: Literal["allow", "deny"]
    reason: Annotated[str, Field(min_length=1, max_length=1000)]
    effective_from: IsoDate | None = None
    effective_until: IsoDate | None = None
    match: MatchSpec


class PolicySpec(_Strict):
    """A whole policy file."""

    jurisdiction: Annotated[str, Field(min_length=1, max_length=17)]
    version: Version
    default: Literal["allow", "deny"]
    description: Annotated[str, Field(max_length=4000)] | None = None
    rules: Annotated[list[RuleSpec], Field(max_length=10_000)] = []


# --- problems ------------------------------------------------------------------


_MESSAGES = {
    ("string_pattern_mismatch", ".id"): "a rule id is 1-128 letters, digits, '.', '_', ':' or '-'"
}


def policy_schema_problems(
    exc: ValidationError, file: str, doc: yaml12.LoadedYaml
) -> list[Problem]:
    """Pydantic errors of a policy file as Problems with dotted paths and lines."""
    return schema_problems(exc, file, doc, _MESSAGES)


_YAML_PATH_MESSAGE = re.compile(r"^(?P<path>[^\s']+): (?P<msg>(?:duplicate key|key) .*)$", re.S)


def yaml_problem(file: str, exc: yaml12.YamlLoadError) -> Problem:
    """A loader error as a Problem, with the dotted path when the message starts with one."""
    if exc.message.endswith("tag:yaml.org,2002:timestamp"):
        return Problem(file, "", 'an unquoted date: quote it, e.g. "2026-06-15"', exc.line)
    found = _YAML_PATH_MESSAGE.match(exc.message)
    if found and found["path"] != "<root>":
        return Problem(file, found["path"], found["msg"], exc.line)
    return Problem(file, "", exc.message, exc.line)


@dataclass(frozen=True, slots=True)
class _CatalogIndex:
    """Folded names the cross-check looks up."""

    models: Mapping[str, CatalogModel]
    ids: frozenset[str]
    providers: frozenset[str]
    vendors: frozenset[str]
    tags: frozenset[str]

    @classmethod
    def of(cls, models: Mapping[str, CatalogModel]) -> _CatalogIndex:
        return cls(
            models=models,
            ids=frozenset(fold(m) for m in models),
            providers=frozenset(fold(m.provider) for m in models.values()),
            vendors=frozenset(fold(m.vendor) for m in models.values()),
            tags=frozenset(fold(t) for m in models.values() for t in m.tags),
        )


def _region_message(value: str, what: str) -> str:
    hint = " (the ISO code of the United Kingdom is 'gb')" if fold(value) == "uk" else ""
    return f"unknown {what} {value!r}: not an ISO 3166 alpha-2 code or 'eu'{hint}"


def _match_problems(
    match: Mapping[str, Any], base: str, index: _CatalogIndex, add: Callable[..., None]
) -> None:
    given = [k for k in MATCH_FIELDS if match.get(k) is not None]
    if not given and not set(match) - set(MATCH_FIELDS):
        add(base, f"match names no field; use at least one of {', '.join(MATCH_FIELDS)}")
    for key in given:
        values = match[key]
        if not isinstance(values, list):
            continue
        for k, value in enumerate(values):
            if not isinstance(value, str) or not value.strip():
                continue
            path = f"{base}.{key}[{k}]"
            folded = fold(value)
            if key == "models":
                if not is_glob(value):
                    if folded not in index.ids:
                        # a shared policy folder serves sidecars with different catalogs: the rule
                        # applies once such a model is added; `check` shows it in case of a typo
                        add(path, f"model {value!r} is not in this catalog (a typo?)", "warning")
                elif not any(Match(models=(value,)).matches(m) for m in index.models.values()):
                    add(path, f"glob {value!r} matches no catalog model", "warning")
            elif key == "providers" and folded not in index.providers:
                add(path, f"provider {value!r}: no catalog model uses it (a typo?)", "warning")
            elif key in ("regions", "regions_not_in") and not is_known_region(folded):
                add(path, _region_message(value, "region"))
            elif key == "origins" and not is_known_region(folded):
                add(path, _region_message(value, "origin"))
            elif key == "vendors" and folded not in index.vendors:
                add(path, f"vendor {value!r} matches no catalog model", "warning")
            elif key == "tags" and folded not in index.tags:
                add(path, f"tag {value!r} is on no catalog model", "warning")


def cross_check(
    data: Mapping[str, Any],
    file: str,
    doc: yaml12.LoadedYaml,
    stem: str,
    catalog_models: Mapping[str, CatalogModel],
) -> list[Problem]:
    """Names, references and rule ids, on the raw data so they are found beside schema errors."""
    problems: list[Problem] = []

    def add(path: str, message: str, severity: str = "error") -> None:
        problems.append(Problem(file, path, message, doc.line_of(path), severity))

    code = data.get("jurisdiction")
    if isinstance(code, str):
        if not JURISDICTION_RE.fullmatch(code):
            add(
                "jurisdiction",
                f"{code!r} is not a lower-case jurisdiction code such as 'eu' or 'us-ca'",
            )
        elif code != stem:
            add(
                "jurisdiction",
                f"jurisdiction {code!r} does not match the file name {stem + POLICY_SUFFIX!r}",
            )
    rules = data.get("rules")
    if not isinstance(rules, list):
        return problems
    index = _CatalogIndex.of(catalog_models)
    first_seen: dict[str, int] = {}
    for i, rule in enumerate(rules):
        if not isinstance(rule, dict):
            continue
        rule_id = rule.get("id")
        if isinstance(rule_id, str):
            folded = fold(rule_id)
            if folded in RESERVED_RULE_IDS:
                add(f"rules[{i}].id", f"{rule_id!r} is reserved for the engine's own decisions")
            elif folded in first_seen:
                add(
                    f"rules[{i}].id",
                    f"duplicate rule id {rule_id!r} (first at rules[{first_seen[folded]}])",
                )
            else:
                first_seen[folded] = i
        start, end = rule.get("effective_from"), rule.get("effective_until")
        if isinstance(start, str) and isinstance(end, str):
            try:
                if _iso_date(start) > _iso_date(end):
                    add(f"rules[{i}].effective_until", "is before effective_from")
            except ValueError:
                pass  # the schema reports the bad date
        match = rule.get("match")
        if isinstance(match, dict):
            _match_problems(match, f"rules[{i}].match", index, add)
    return problems


# --- building ------------------------------------------------------------------


def _tuple(values: list[str] | None) -> tuple[str, ...] | None:
    return None if values is None else tuple(v.strip() for v in values)


def _rule(spec: RuleSpec) -> Rule:
    m = spec.match
    return Rule(
        id=spec.id,
        effect=spec.effect,
        reason=spec.reason.strip(),
        match=Match(
            models=_tuple(m.models),
            vendors=_tuple(m.vendors),
            providers=_tuple(m.providers),
            origins=_tuple(m.origins),
            regions=_tuple(m.regions),
            regions_not_in=_tuple(m.regions_not_in),
            tags=_tuple(m.tags),
        ),
        effective_from=spec.effective_from,
        effective_until=spec.effective_until,
    )


def _windows_overlap(a: Rule, b: Rule) -> bool:
    lo, hi = date.min, date.max
    return (a.effective_from or lo) <= (b.effective_until or hi) and (b.effective_from or lo) <= (
        a.effective_until or hi
    )


def rule_warnings(
    rules: Sequence[Rule],
    file: str,
    doc: yaml12.LoadedYaml,
    catalog_models: Mapping[str, CatalogModel],
    quiet: frozenset[int],
) -> list[Problem]:
    """Rules that match no catalog model, and catalog models both allowed and denied."""
    problems: list[Problem] = []
    models = list(catalog_models.values())
    matched = [[m.id for m in models if r.match.matches(m)] for r in rules]
    for i, rule in enumerate(rules):
        if not matched[i] and i not in quiet:
            path = f"rules[{i}].match"
            problems.append(
                Problem(
                    file,
                    path,
                    f"rule {rule.id!r} matches no catalog model",
                    doc.line_of(path),
                    "warning",
                )
            )
    for i, allow in enumerate(rules):
        if allow.effect != "allow":
            continue
        for j, deny in enumerate(rules):
            if deny.effect != "deny" or not _windows_overlap(allow, deny):
                continue
            both = [m for m in matched[i] if m in matched[j]]
            if both:
                path = f"rules[{i}]"
                problems.append(
                    Problem(
                        file,
                        path,
                        f"allow rule {allow.id!r} and deny rule {deny.id!r} both match "
                        f"{', '.join(both)}; deny wins",
                        doc.line_of(path),
                        "warning",
                    )
                )
    return problems


def _read(path: Path) -> bytes:
    """The file's bytes, with yaml12's size cap and messages."""
    try:
        with path.open("rb") as f:
            raw = f.read(yaml12.MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise yaml12.YamlLoadError("file not found") from None
    except OSError as exc:
        raise yaml12.YamlLoadError(f"cannot read file: {exc.strerror}") from None
    if len(raw) > yaml12.MAX_FILE_BYTES:
        raise yaml12.YamlLoadError(f"file is larger than {yaml12.MAX_FILE_BYTES} bytes")
    return raw


def _parse(raw: bytes) -> yaml12.LoadedYaml:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise yaml12.YamlLoadError(f"file is not UTF-8 (byte {exc.start})") from None
    return yaml12.loads(text)


def check_policy_file(
    path: Path, catalog_models: Mapping[str, CatalogModel]
) -> tuple[Policy | None, list[Problem]]:
    """The policy in `path` (None if it has errors) and every problem, warnings included."""
    file = str(path)
    try:
        raw = _read(path)
        doc = _parse(raw)
    except yaml12.YamlLoadError as exc:
        return None, [yaml_problem(file, exc)]
    if not isinstance(doc.data, dict):
        return None, [
            Problem(file, "", "a policy file must be a mapping (jurisdiction, version, ...)", 1)
        ]
    problems = cross_check(doc.data, file, doc, path.stem, catalog_models)
    spec: PolicySpec | None = None
    try:
        spec = PolicySpec.model_validate(doc.data)
    except ValidationError as exc:
        problems.extend(policy_schema_problems(exc, file, doc))
    problems.sort(key=lambda p: (p.line or 0, p.path))
    policy: Policy | None = None
    if spec is not None and not any(p.severity == "error" for p in problems):
        rules = tuple(_rule(r) for r in spec.rules)
        quiet = frozenset(
            int(m[1]) for p in problems if (m := re.match(r"^rules\[(\d+)\]", p.path))
        )
        problems.extend(rule_warnings(rules, file, doc, catalog_models, quiet))
        problems.sort(key=lambda p: (p.line or 0, p.path))
        policy = Policy(
            jurisdiction=spec.jurisdiction,
            version=spec.version,
            default=spec.default,
            rules=rules,
            source=file,
            sha256=hashlib.sha256(raw).hexdigest(),
            description=spec.description,
            warnings=tuple(problems),
        )
    return policy, problems


def load_policy_file(
    path: str | os.PathLike[str], catalog_models: Mapping[str, CatalogModel]
) -> Policy:
    """One validated policy, or `PolicyError` with every problem of the file."""
    policy, problems = check_policy_file(Path(path), catalog_models)
    if policy is None:
        raise PolicyError(problems)
    return policy


def _is_policy_name(name: str) -> bool:
    return name.endswith(POLICY_SUFFIX) and not name.startswith(".")


def policy_files(directory: Path) -> list[Path]:
    """The folder's ``*.yaml`` files (hidden files are skipped), sorted by name."""
    return sorted(p for p in directory.iterdir() if _is_policy_name(p.name) and p.is_file())


def _check_dir(
    directory: Path, catalog_models: Mapping[str, CatalogModel], required: Sequence[str]
) -> tuple[PolicySet | None, list[Problem]]:
    where = str(directory)
    if not directory.is_dir():
        return None, [Problem(where, "", "policy folder not found")]
    try:
        files = policy_files(directory)
        stray = sorted(p.name for p in directory.iterdir() if p.name.endswith(".yml"))
    except OSError as exc:
        return None, [Problem(where, "", f"cannot list the policy folder: {exc.strerror}")]
    problems = [
        Problem(where, name, "ignored: policy files end in .yaml", severity="warning")
        for name in stray
    ]
    if not files:
        problems.append(Problem(where, "", "no policy files (*.yaml) in the folder"))
        return None, problems
    policies: list[Policy] = []
    for path in files:
        policy, found = check_policy_file(path, catalog_models)
        problems.extend(found)
        if policy is not None:
            policies.append(policy)
    stems = {p.stem for p in files}
    for code in dict.fromkeys(normalize_jurisdiction(r) for r in required):
        if code not in stems:
            problems.append(
                Problem(where, "", f"no policy for required jurisdiction {code!r} ({code}.yaml)")
            )
    if any(p.severity == "error" for p in problems):
        return None, problems
    return PolicySet.of(policies), problems


def check_policy_dir(
    directory: str | os.PathLike[str],
    catalog_models: Mapping[str, CatalogModel],
    required: Sequence[str] = (),
) -> list[Problem]:
    """Every problem (errors and warnings) of every policy file, without raising."""
    return _check_dir(Path(directory), catalog_models, required)[1]


def load_policy_dir(
    directory: str | os.PathLike[str],
    catalog_models: Mapping[str, CatalogModel],
    required: Sequence[str] = (),
) -> PolicySet:
    """Every policy in the folder, or `PolicyError` listing every problem of every file."""
    policies, problems = _check_dir(Path(directory), catalog_models, required)
    if policies is None:
        raise PolicyError(problems)
    return policies


# --- hot reload ----------------------------------------------------------------

Fingerprint = tuple[tuple[str, int, int, int], ...] | None


def fingerprint(directory: Path) -> Fingerprint:
    """(name, mtime_ns, size, inode) of the folder's policy files; None if it cannot be listed."""
    try:
        with os.scandir(directory) as it:
            names = sorted(e.name for e in it if _is_policy_name(e.name))
    except OSError:
        return None
    out = []
    for name in names:
        try:
            st = os.stat(directory / name)
        except OSError:
            continue
        out.append((name, st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class PolicyCandidate:
    """The outcome of reading the folder once: a valid set or the error, not yet applied."""

    ticket: int
    fingerprint: Fingerprint
    policies: PolicySet | None
    error: PolicyError | None


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """What a reload did; `current` is the set in force afterwards."""

    ok: bool
    changed: bool
    current: PolicySet
    previous: PolicySet
    error: PolicyError | None = None
    superseded: bool = False


ChangeHook = Callable[[PolicySet, PolicySet], object]
FailureHook = Callable[[PolicyError], object]


class PolicyStore:
    """The current policy set, swapped whole on a valid reload; last-known-good otherwise."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        catalog_models: Mapping[str, CatalogModel],
        required: Sequence[str] = (),
        *,
        on_change: ChangeHook | None = None,
        on_failure: FailureHook | None = None,
    ) -> None:
        """Load the folder; a missing or invalid folder raises `PolicyError` (fail closed)."""
        self.directory = Path(directory)
        self.catalog_models = catalog_models
        self.required = tuple(required)
        self.on_change = on_change
        self.on_failure = on_failure
        self._tickets = itertools.count(1)
        candidate = self.load_candidate()
        if candidate.policies is None:
            assert candidate.error is not None  # noqa: S101  # one of the two is set
            raise candidate.error
        self.current: PolicySet = candidate.policies
        self.fingerprint: Fingerprint = candidate.fingerprint
        self.loaded_at: datetime = datetime.now(UTC)
        self.last_error: PolicyError | None = None
        self.stale = False
        self.reloads_ok = 0
        self.reloads_failed = 0
        self.hook_failures = 0
        self._applied = candidate.ticket

    def load_candidate(self) -> PolicyCandidate:
        """Read and validate the folder (blocking I/O: safe to run in a thread); no side effect."""
        ticket = next(self._tickets)
        seen = fingerprint(self.directory)
        # a jurisdiction that was loaded may not silently vanish on reload (a deleted or renamed
        # file keeps the last-known-good set); removing one takes a restart
        current: PolicySet | None = getattr(self, "current", None)
        loaded = current.jurisdictions if current is not None else ()
        required = tuple(dict.fromkeys((*self.required, *loaded)))
        try:
            policies = load_policy_dir(self.directory, self.catalog_models, required)
        except PolicyError as exc:
            return PolicyCandidate(ticket, seen, None, exc)
        return PolicyCandidate(ticket, seen, policies, None)

    def apply(self, candidate: PolicyCandidate) -> ReloadResult:
        """Swap in a valid candidate, or keep the current set and record the error.

        A candidate read before the last applied one is ignored (`superseded`).
        """
        old = self.current
        if candidate.ticket <= self._applied:
            return ReloadResult(not self.stale, False, old, old, self.last_error, superseded=True)
        self._applied = candidate.ticket
        self.fingerprint = candidate.fingerprint
        if candidate.policies is None:
            error = candidate.error or PolicyError([])
            self.last_error = error
            self.stale = True
            self.reloads_failed += 1
            self._call("on_failure", self.on_failure, error)
            return ReloadResult(False, False, old, old, error)
        new = candidate.policies
        changed = new.sha256 != old.sha256
        if changed:
            self.current = new  # the one assignment readers may observe
        self.loaded_at = datetime.now(UTC)
        self.last_error = None
        self.stale = False
        self.reloads_ok += 1
        if changed:
            self._call("on_change", self.on_change, old, new)
        return ReloadResult(True, changed, self.current, old)

    def reload(self) -> ReloadResult:
        """Re-read the folder now and apply the result."""
        return self.apply(self.load_candidate())

    def _call(self, name: str, hook: Callable[..., object] | None, *args: object) -> None:
        if hook is None:
            return
        try:
            hook(*args)
        except Exception:
            self.hook_failures += 1
            log = get_logger()
            log.exception("policy.hook_failed", hook=name)


async def watch(store: PolicyStore, interval_s: float = 1.0, *, debounce_s: float = 0.2) -> None:
    """Poll the store's folder every `interval_s` and reload after a change settles.

    Runs until cancelled; never raises anything else. A change is applied once
    the folder's fingerprint has stayed the same for `debounce_s`.
    """
    last = store.fingerprint
    while True:
        await asyncio.sleep(interval_s)
        try:
            last = await _poll_once(store, last, debounce_s)
        except Exception:
            log = get_logger()
            log.exception("policy.watch_failed", folder=str(store.directory))


async def _poll_once(store: PolicyStore, last: Fingerprint, debounce_s: float) -> Fingerprint:
    seen = await asyncio.to_thread(fingerprint, store.directory)
    if seen == last:
        return last
    await asyncio.sleep(debounce_s)
    if await asyncio.to_thread(fingerprint, store.directory) != seen:
        return last  # still being written: look again on the next tick
    candidate = await asyncio.to_thread(store.load_candidate)
    store.apply(candidate)
    return candidate.fingerprint
