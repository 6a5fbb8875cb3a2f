"""The span modules compiled by mypyc, served in place of their source only while they match it.

Recording, sampling and encoding spans are the sidecar's hottest pure-Python code with every span
exported. When a C compiler is present at install time, the build hook (`hatch_build.py`)
compiles `COMPILED_MODULES`, unchanged, with mypyc into `router/_native/` and writes a manifest
holding the SHA-256 of `CHECKED_SOURCES` (those modules and the router modules they were
type-checked against; mypyc inlines their constants). At import, `install` serves the compiled
modules under their own names only if that digest still matches the `.py` files beside them, so
an edited checkout never runs stale code: it runs the source, and `native_status` says why.
Without a compiler, or with `FUSION_ROUTER_NO_EXTENSIONS` set (as aiohttp's
`AIOHTTP_NO_EXTENSIONS`), the plain modules run; both paths pass the same tests.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import Literal

PACKAGE = "router"
COMPILED = ("otlp_encoding", "sampling", "span_recorder")  # modules of PACKAGE
COMPILED_MODULES = tuple(f"{PACKAGE}.{name}" for name in COMPILED)
# The compiled modules and every router module they import: the build is valid for these bytes.
CHECKED_SOURCES = (*COMPILED, "semconv", "span_shipping")
NATIVE_DIR_NAME = "_native"
# mypyc's shared library for the group: router/_native/spans__mypyc.*.so
GROUP_LIBRARY = f"{PACKAGE}.{NATIVE_DIR_NAME}.spans"
MANIFEST_NAME = "manifest.json"
DISABLE_ENV = "FUSION_ROUTER_NO_EXTENSIONS"
# Whose types the compiled classes are laid out by: the build is valid for these versions only.
COMPILED_AGAINST = ("opentelemetry-api", "opentelemetry-sdk")


Reason = Literal[
    "compiled",  # the build matches: its modules load when first imported (span export)
    "not built",
    "stale",  # a checked source changed since the build
    "disabled",  # FUSION_ROUTER_NO_EXTENSIONS
    "unreadable",  # a damaged manifest, or a checked source missing
    "other python",  # built for another interpreter (extension suffix)
    "incomplete",  # a compiled file missing
    "other opentelemetry",  # built against other OpenTelemetry versions than those installed
    "unloadable",  # the library did not load (say, a newer C library than this machine's)
]


@dataclass(frozen=True)
class NativeStatus:
    """Which modules run compiled, and in a word why the others do not."""

    compiled: tuple[str, ...]
    reason: Reason


@dataclass(frozen=True)
class Build:
    """A build that matches the sources: its files, its library, what it was compiled against."""

    paths: Mapping[str, Path]  # module name -> compiled file
    library: str  # the group's shared library, as a module name
    against: Mapping[str, str]  # distribution -> version (OpenTelemetry's, whose types it used)


def disabled(environ: Mapping[str, str]) -> bool:
    """Whether `FUSION_ROUTER_NO_EXTENSIONS` turns the build off (any value but empty or 0)."""
    return environ.get(DISABLE_ENV, "") not in ("", "0")


def source_digest(package_dir: Path, sources: Sequence[str] = CHECKED_SOURCES) -> str:
    """SHA-256 over each checked module's name and bytes, as they are in `package_dir`."""
    digest = hashlib.sha256()
    for name in sources:
        digest.update(name.encode() + b"\0")
        digest.update((package_dir / f"{name}.py").read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def installed_versions(distributions: Iterable[str]) -> dict[str, str | None]:
    """Each distribution's installed version (None if it is not installed)."""
    versions: dict[str, str | None] = {}
    for name in distributions:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def native_status(
    package_dir: Path, environ: Mapping[str, str]
) -> tuple[NativeStatus, Build | None]:
    """Decide from the manifest and the sources whether the build may be loaded, and why.
    (What it was compiled against, and whether its library loads, are checked by the finder
    when a compiled module is first imported: only a sidecar exporting spans pays for that.)"""
    if disabled(environ):
        return NativeStatus((), "disabled"), None
    native_dir = package_dir / NATIVE_DIR_NAME
    try:
        manifest = json.loads((native_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return NativeStatus((), "not built"), None
    except (OSError, ValueError, RecursionError):  # (a manifest nested past the parser's depth)
        return NativeStatus((), "unreadable"), None
    if not isinstance(manifest, dict):
        return NativeStatus((), "unreadable"), None
    files, library, against = (manifest.get(key) for key in ("modules", "library", "against"))
    if (
        not isinstance(files, dict)
        or sorted(files) != sorted(COMPILED_MODULES)
        or not isinstance(library, str)
        or not isinstance(against, dict)
        or not all(isinstance(v, str) for v in (*files.values(), *against.values()))
    ):
        return NativeStatus((), "unreadable"), None
    try:
        digest = source_digest(package_dir)
    except OSError:  # a checked source is missing: nothing to check the build against
        return NativeStatus((), "unreadable"), None
    if manifest.get("digest") != digest:
        return NativeStatus((), "stale"), None
    paths = {name: native_dir / file for name, file in files.items()}
    built = (*paths.values(), native_dir / library)
    if not all(path.name.endswith(importlib.machinery.EXTENSION_SUFFIXES[0]) for path in built):
        return NativeStatus((), "other python"), None
    if not all(path.is_file() for path in built):
        return NativeStatus((), "incomplete"), None
    library_module = f"{PACKAGE}.{NATIVE_DIR_NAME}.{library.partition('.')[0]}"
    build = Build(paths, library_module, against)
    return NativeStatus(tuple(sorted(paths)), "compiled"), build


class CompiledModuleFinder:
    """A `sys.meta_path` finder serving each compiled module from its file in `router/_native/`.

    At the first compiled module's import it checks, once, that the OpenTelemetry installed is
    the one the build was compiled against (mypyc lays out classes by its types) and that the
    build's library loads; if not, the source runs and `status` says why."""

    def __init__(self, status: NativeStatus, build: Build | None) -> None:
        self.status = status
        self._build = build
        self._checked = False

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        if self._build is None or fullname not in self._build.paths:
            return None
        location = self._build.paths[fullname]
        if not self._checked:
            self._checked = True
            refused = self._refusal(self._build)
            if refused is not None:
                self.status, self._build = NativeStatus((), refused), None
                return None
        return importlib.util.spec_from_file_location(fullname, location)

    @staticmethod
    def _refusal(build: Build) -> Reason | None:
        """Why the build must not load here, or None."""
        if installed_versions(build.against) != build.against:
            return "other opentelemetry"
        try:
            importlib.import_module(build.library)
        except ImportError:
            return "unloadable"
        return None


def install(package_dir: Path, environ: Mapping[str, str]) -> NativeStatus:
    """Put the finder first on `sys.meta_path` (once), so the compiled modules win when valid.
    Never raises: whatever goes wrong deciding, the source runs."""
    for finder in sys.meta_path:
        if isinstance(finder, CompiledModuleFinder):
            return finder.status
    try:
        status, build = native_status(package_dir, environ)
    except Exception:  # noqa: BLE001 - `import router` must not fail over its build
        status, build = NativeStatus((), "unreadable"), None
    sys.meta_path.insert(0, CompiledModuleFinder(status, build))
    return status


def current_status() -> NativeStatus:
    """The status `install` decided for this process, as the finder has since confirmed or
    refused it (nothing compiled if it never ran)."""
    for finder in sys.meta_path:
        if isinstance(finder, CompiledModuleFinder):
            return finder.status
    return NativeStatus((), "not built")
