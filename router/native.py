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
import importlib.machinery
import importlib.util
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

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


@dataclass(frozen=True)
class NativeStatus:
    """Which modules run compiled, and in a word why the others do not."""

    compiled: tuple[str, ...]
    reason: str  # compiled, not built, stale, disabled, unreadable, other python, incomplete


def source_digest(package_dir: Path, sources: Sequence[str] = CHECKED_SOURCES) -> str:
    """SHA-256 over each checked module's name and bytes, as they are in `package_dir`."""
    digest = hashlib.sha256()
    for name in sources:
        digest.update(name.encode() + b"\0")
        digest.update((package_dir / f"{name}.py").read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def native_status(
    package_dir: Path, environ: Mapping[str, str]
) -> tuple[NativeStatus, dict[str, Path]]:
    """Decide from the manifest and the sources which compiled files may be loaded, and why."""
    if environ.get(DISABLE_ENV, "") not in ("", "0"):
        return NativeStatus((), "disabled"), {}
    native_dir = package_dir / NATIVE_DIR_NAME
    try:
        manifest = json.loads((native_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return NativeStatus((), "not built"), {}
    except (OSError, ValueError):
        return NativeStatus((), "unreadable"), {}
    files = manifest.get("modules") if isinstance(manifest, dict) else None
    library = manifest.get("library") if isinstance(manifest, dict) else None
    if (
        not isinstance(files, dict)
        or sorted(files) != sorted(COMPILED_MODULES)
        or not isinstance(library, str)
    ):
        return NativeStatus((), "unreadable"), {}
    try:
        digest = source_digest(package_dir)
    except OSError:  # a checked source is missing: nothing to check the build against
        return NativeStatus((), "unreadable"), {}
    if manifest.get("digest") != digest:
        return NativeStatus((), "stale"), {}
    paths = {name: native_dir / str(file) for name, file in files.items()}
    built = (*paths.values(), native_dir / library)
    if not all(path.name.endswith(importlib.machinery.EXTENSION_SUFFIXES[0]) for path in built):
        return NativeStatus((), "other python"), {}
    if not all(path.is_file() for path in built):
        return NativeStatus((), "incomplete"), {}
    return NativeStatus(tuple(sorted(paths)), "compiled"), paths


class CompiledModuleFinder:
    """A `sys.meta_path` finder serving each compiled module from its file in `router/_native/`."""

    def __init__(self, status: NativeStatus, paths: Mapping[str, Path]) -> None:
        self.status = status
        self._paths = dict(paths)

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None = None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        location = self._paths.get(fullname)
        if location is None:
            return None
        return importlib.util.spec_from_file_location(fullname, location)


def install(package_dir: Path, environ: Mapping[str, str]) -> NativeStatus:
    """Put the finder first on `sys.meta_path` (once), so the compiled modules win when valid."""
    for finder in sys.meta_path:
        if isinstance(finder, CompiledModuleFinder):
            return finder.status
    status, paths = native_status(package_dir, environ)
    sys.meta_path.insert(0, CompiledModuleFinder(status, paths))
    return status


def current_status() -> NativeStatus:
    """The status `install` decided for this process (nothing compiled if it never ran)."""
    for finder in sys.meta_path:
        if isinstance(finder, CompiledModuleFinder):
            return finder.status
    return NativeStatus((), "not built")
