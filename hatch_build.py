"""Build hook: compile the span modules with mypyc when it can; without a compiler the source runs.

hatchling runs `CompiledSpansHook` for every wheel, editable or not: it compiles
`router.native.COMPILED_MODULES`, unchanged, into one mypyc group and writes `router/_native/`
(the compiled files, the group's shared library and a manifest with the sources' digest, which
`router.native` checks at import). A failed compile (no C compiler, no Python headers) is a
warning, not a failed install. `FUSION_ROUTER_NO_EXTENSIONS=1` skips it.

After editing a checked module in a checkout, `python hatch_build.py` rebuilds in place (until
then the sidecar runs the edited source, never the stale build).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from hatchling.builders.config import BuilderConfig
from hatchling.builders.hooks.plugin.interface import BuildHookInterface

ROOT = Path(__file__).resolve().parent
# Not the project's mypy settings: the compiled modules must resolve OpenTelemetry's real types
# (mypyc lays classes out by them; `Any` there built broken code), so a missing OpenTelemetry
# fails the compile and the source runs. The router modules they import are read, never
# reported on, and those modules' own imports (orjson, structlog, aiohttp: not in pip's
# isolated build environment) may be missing.
MYPYC_OPTIONS = """\
[mypy]
follow_imports = silent
ignore_missing_imports = True
[mypy-opentelemetry.*]
ignore_missing_imports = False
"""


# What the compile needs in pip's build environment (OpenTelemetry for its types).
BUILD_REQUIREMENTS = ["mypy>=2.4", "setuptools>=65", "opentelemetry-sdk>=1.40"]


def build_requirements(environ: Mapping[str, str], root: Path = ROOT) -> list[str]:
    """The hook's build requirements: none with the switch set, so that an install from an
    index without mypy (offline, a mirror) still works, as the source."""
    return [] if native_layout(root).disabled(environ) else list(BUILD_REQUIREMENTS)


def native_layout(root: Path) -> ModuleType:
    """`router/native.py` of `root`, loaded alone (its names are the build's contract)."""
    name = "_fusion_router_native_layout"
    spec = importlib.util.spec_from_file_location(name, root / "router" / "native.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"no router/native.py under {root}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look the module up while the class is built
    spec.loader.exec_module(module)
    return module


def _replace(source: Path, target: Path) -> None:
    """Copy beside the target, then rename over it: a process with the old file mapped keeps it
    (and a concurrent build writes its own partial file)."""
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    shutil.copyfile(source, partial)
    os.replace(partial, target)


def compile_span_modules(root: Path, out_dir: Path) -> list[Path]:
    """Compile the span modules of `root/router` with mypyc into `out_dir`; the files written."""
    from mypy.version import __version__ as mypy_version
    from mypyc.build import mypycify
    from setuptools import Distribution  # type: ignore[import-untyped,unused-ignore]

    layout = native_layout(root)
    manifest_path = out_dir / layout.MANIFEST_NAME
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path.unlink(missing_ok=True)  # a build that fails below leaves "not built"
    digest = layout.source_digest(root / "router")  # the bytes compiled, read before compiling
    against = layout.installed_versions(layout.COMPILED_AGAINST)
    if None in against.values():  # mypyc would build on `Any`: broken classes
        raise RuntimeError(f"not installed, the compiled code needs its types: {against}")
    names = dict(zip(layout.COMPILED_MODULES, layout.COMPILED, strict=True))
    with (
        tempfile.TemporaryDirectory(prefix="fusion-router-mypyc-") as tmp,
        contextlib.chdir(root),
    ):
        options = Path(tmp, "mypy.ini")
        options.write_text(MYPYC_OPTIONS)
        extensions = mypycify(
            [
                *("--config-file", str(options), "--cache-dir", f"{tmp}/cache"),
                *(f"router/{short}.py" for short in names.values()),
            ],
            opt_level="3",
            group_name=layout.GROUP_LIBRARY,
            target_dir=f"{tmp}/c",
        )
        distribution = Distribution({"name": "fusion-router-spans", "ext_modules": extensions})
        build: Any = distribution.get_command_obj("build_ext")
        build.build_lib = f"{tmp}/lib"
        build.build_temp = f"{tmp}/obj"
        distribution.run_command("build_ext")
        built = Path(tmp, "lib", "router")
        modules: dict[str, str] = {}
        written: list[Path] = []
        for name, short in names.items():
            [compiled] = built.glob(f"{short}.*")
            _replace(compiled, out_dir / compiled.name)
            modules[name] = compiled.name
            written.append(out_dir / compiled.name)
        library_name = f"{layout.GROUP_LIBRARY.rpartition('.')[2]}__mypyc"  # mypyc's naming
        [library] = (built / layout.NATIVE_DIR_NAME).glob(f"{library_name}.*")
        _replace(library, out_dir / library.name)
        written.append(out_dir / library.name)
    if layout.source_digest(root / "router") != digest:
        raise RuntimeError("a checked source changed during the build: build again")
    package = out_dir / "__init__.py"
    package.write_text('"""mypyc\'s build of the span modules: see router/native.py."""\n')
    manifest = {
        "digest": digest,
        "modules": modules,
        "library": library.name,
        "against": against,
        "mypy": mypy_version,
        "python": sys.version.split()[0],
    }
    partial = manifest_path.with_name(f"{manifest_path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, manifest_path)
    return [*written, package, manifest_path]


class CompiledSpansHook(BuildHookInterface[BuilderConfig]):
    """Compile the span modules into the wheel (or, for an editable install, into the checkout)."""

    _scratch: Path | None = None  # a wheel's build directory, removed in `finalize`

    def dependencies(self) -> list[str]:
        return build_requirements(os.environ, Path(self.root))

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        root, editable = Path(self.root), version == "editable"
        try:
            layout = native_layout(root)
            out_dir = (
                root / "router" / layout.NATIVE_DIR_NAME
                if editable
                else Path(tempfile.mkdtemp(prefix="fusion-router-native-"))
            )
            if not editable:
                self._scratch = out_dir
            if layout.disabled(os.environ):
                if editable:  # an earlier build in the checkout would still match: retire it
                    (out_dir / layout.MANIFEST_NAME).unlink(missing_ok=True)
                self.app.display_info(f"{layout.DISABLE_ENV} is set: the span modules stay source")
                return
            written = compile_span_modules(root, out_dir)
        except (Exception, SystemExit) as error:  # noqa: BLE001 - no compiler must not fail it
            self.app.display_warning(
                f"fusion-router: span modules not compiled ({type(error).__name__}: {error});"
                " the plain modules run"
            )
            return
        if not editable:
            for path in written:
                build_data["force_include"][str(path)] = (
                    f"router/{layout.NATIVE_DIR_NAME}/{path.name}"
                )
        build_data["pure_python"] = False
        build_data["infer_tag"] = True

    def finalize(self, version: str, build_data: dict[str, Any], artifact_path: str) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)


if __name__ == "__main__":
    for path in compile_span_modules(ROOT, ROOT / "router" / native_layout(ROOT).NATIVE_DIR_NAME):
        print(path.relative_to(ROOT))
