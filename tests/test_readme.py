"""The README as a contract: its log-event table, its size, and the commands it opens with."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
OBSERVABILITY = ROOT / "ops" / "observability" / "README.md"  # the log-event table's home
CI_RUN = ROOT / ".ci" / "run"

MAX_README_BYTES = 20480
DEMO_COMMAND = (
    "python3 -m venv .venv && .venv/bin/pip install -q -e . && .venv/bin/fusion-router demo"
)

# structlog's bound-logger methods whose first argument is the event name.
LOG_METHODS = frozenset(
    {"debug", "info", "warning", "warn", "error", "exception", "critical", "fatal", "msg"}
)
LOG_METHODS |= {f"a{name}" for name in LOG_METHODS}  # the async variants (ainfo, …)
EVENT_NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")


# --- the README side ---------------------------------------------------------------------------


def readme_text() -> str:
    return README.read_text(encoding="utf-8")


def table_after_header(text: str, first_header: str) -> list[list[str]]:
    """The body rows of the markdown table whose first header cell is `first_header`."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        cells = split_row(line)
        if cells and cells[0] == first_header:
            assert i + 1 < len(lines), f"the {first_header!r} table has no separator line"
            assert set(lines[i + 1].replace("|", "").strip()) <= set("-: "), (
                f"the {first_header!r} table's header is not followed by a separator line"
            )
            rows = []
            for row in lines[i + 2 :]:
                if not row.lstrip().startswith("|"):
                    break
                rows.append(split_row(row))
            return rows
    raise AssertionError(f"README.md has no table whose first column is headed {first_header!r}")


def split_row(line: str) -> list[str]:
    stripped = line.strip()
    if not stripped.startswith("|"):
        return []
    return [cell.strip() for cell in stripped.strip("|").split("|")]


def documented_events() -> dict[str, int]:
    """Every event named in the first column of the log-event table (ops/observability/README.md), with its row."""
    events: dict[str, int] = {}
    page = OBSERVABILITY.read_text(encoding="utf-8")
    for number, row in enumerate(table_after_header(page, "event"), start=1):
        names = re.findall(r"`([^`]+)`", row[0])
        assert names, (
            f"row {number} of the log-event table (ops/observability/README.md) names no `event`: {row}"
        )
        for name in names:
            assert EVENT_NAME.match(name), f"{name!r} (row {number}) is not a dotted event name"
            assert name not in events, (
                f"{name!r} is listed twice in the log-event table (ops/observability/README.md)"
            )
            events[name] = number
    return events


# --- the code side -----------------------------------------------------------------------------


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def string_constants(tree: ast.Module) -> dict[str, str]:
    """Module-level `NAME = "literal"` (or annotated) assignments."""
    found: dict[str, str] = {}
    for node in tree.body:
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign):
            targets, value = [node.target], node.value
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            for target in targets:
                if isinstance(target, ast.Name):
                    found[target.id] = value.value
    return found


class Module:
    """One parsed module of `router/`, with what its names refer to."""

    def __init__(self, path: Path, root: Path = ROOT) -> None:
        self.path = path
        self.where = str(path.relative_to(root))
        self.name = module_name(path, root)
        self.tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        self.constants = string_constants(self.tree)
        self.imported_names: dict[str, tuple[str, str]] = {}  # local name -> (module, name)
        self.module_aliases: dict[str, str] = {}  # local name -> module
        package = self.name if path.name == "__init__.py" else self.name.rpartition(".")[0]
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname:
                        self.module_aliases[alias.asname] = alias.name
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                for alias in node.names:
                    local = alias.asname or alias.name
                    self.imported_names[local] = (base, alias.name)
                    self.module_aliases.setdefault(local, f"{base}.{alias.name}")


def router_modules(root: Path = ROOT) -> dict[str, Module]:
    modules = [Module(path, root) for path in sorted((root / "router").rglob("*.py"))]
    assert modules, f"no modules found under {root / 'router'}"
    return {module.name: module for module in modules}


def resolve(node: ast.expr, module: Module, modules: dict[str, Module]) -> str | None:
    """The string an event-name argument stands for, if it is known without running code."""
    if isinstance(node, ast.Constant):
        return node.value if isinstance(node.value, str) else None
    if isinstance(node, ast.Name):
        if node.id in module.constants:
            return module.constants[node.id]
        if node.id in module.imported_names:
            source, name = module.imported_names[node.id]
            if source in modules:
                return modules[source].constants.get(name)
        return None
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        source = module.module_aliases.get(node.value.id)
        if source in modules:
            return modules[source].constants.get(node.attr)
    return None


def event_argument(call: ast.Call) -> ast.expr | None:
    """The argument of a logging call that carries the event name."""
    assert isinstance(call.func, ast.Attribute)
    if call.func.attr in LOG_METHODS:
        if call.args:
            return call.args[0]
    elif call.func.attr in {"log", "alog"} and len(call.args) >= 2:
        return call.args[1]  # log.log(level, "event", ...)
    for keyword in call.keywords:
        if keyword.arg == "event":
            return keyword.value
    return None


def log_calls(modules: dict[str, Module]) -> Iterator[tuple[str, Module, ast.Call]]:
    """(event name, module, call) for every logging call with a resolvable dotted event name."""
    for module in modules.values():
        for node in ast.walk(module.tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr not in LOG_METHODS | {"log", "alog"}:
                continue
            argument = event_argument(node)
            if argument is None:
                continue
            name = resolve(argument, module, modules)
            if name is not None and EVENT_NAME.match(name):
                yield name, module, node


def emitted_events() -> dict[str, list[str]]:
    """Every dotted event name `router/` logs, with where it is logged."""
    events: dict[str, list[str]] = {}
    for name, module, call in log_calls(router_modules()):
        where = f"{module.where}:{call.lineno}"
        events.setdefault(name, []).append(where)
    return events


# --- the tests ---------------------------------------------------------------------------------


def test_log_event_table_matches_the_events_the_code_emits() -> None:
    """Every event the code logs is in the README's table, and the table lists nothing else."""
    documented = documented_events()
    emitted = emitted_events()
    missing = sorted(set(emitted) - set(documented))
    extra = sorted(set(documented) - set(emitted))
    message = []
    if missing:
        message.append(
            "logged by router/ but missing from the log-event table (ops/observability/README.md):\n"
            + "\n".join(f"  `{name}` ({', '.join(emitted[name])})" for name in missing)
        )
    if extra:
        message.append(
            "in the log-event table (ops/observability/README.md) but logged nowhere in router/:\n"
            + "\n".join(f"  `{name}` (row {documented[name]})" for name in extra)
        )
    assert not message, "\n".join(message)


def test_the_scan_finds_events_in_every_form_the_code_may_use(tmp_path: Path) -> None:
    """The scanner sees literals, module constants, imported constants and module attributes."""
    package = tmp_path / "router"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "names.py").write_text(
        'EVENT_B = "area.imported"\nEVENT_C = "area.attribute"\nEVENT_D: str = "area.relative"\n'
    )
    (package / "sub").mkdir()
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "relative.py").write_text(
        "from ..names import EVENT_D\n"
        "from .. import names as n\n"
        "def g(log):\n"
        "    log.critical(EVENT_D)\n"
        "    log.info(n.EVENT_C)\n"
    )
    (package / "user.py").write_text(
        "from router import names\n"
        "from router.names import EVENT_B\n"
        'LOCAL = "area.constant"\n'
        "def f(log, get_logger, x):\n"
        '    log.info("area.literal", field=1)\n'
        "    log.warning(LOCAL)\n"
        "    get_logger().error(EVENT_B)\n"
        "    log.exception(names.EVENT_C)\n"
        '    log.log(20, "area.via_log")\n'
        '    log.debug(event="area.keyword")\n'
        '    log.info("a sentence. with a dot")\n'
        "    log.info(x)\n"
        "    x.exception()\n"
        '    span.add_event("area.not_a_log")\n'
    )
    modules = router_modules(tmp_path)
    found = sorted(name for name, _, _ in log_calls(modules))
    assert found == [
        "area.attribute",
        "area.attribute",
        "area.constant",
        "area.imported",
        "area.keyword",
        "area.literal",
        "area.relative",
        "area.via_log",
    ]


def test_readme_stays_under_20_kib() -> None:
    """The README is for users; the benchmark diary and history live elsewhere."""
    size = len(README.read_bytes())
    assert size < MAX_README_BYTES, (
        f"README.md is {size} bytes, over the {MAX_README_BYTES}-byte limit: move detail to "
        "ops/bench/README.md, CONTRIBUTING.md or CHANGELOG.md"
    )


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(info string, body) of every fenced code block, in order."""
    return [
        (info, body)
        for info, body in re.findall(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", text, re.M | re.S)
    ]


def ci_test_command() -> str:
    """The line of `.ci/run` that installs and runs the tests (the README's test command)."""
    commands = [
        line.strip()
        for line in CI_RUN.read_text(encoding="utf-8").splitlines()
        if line.strip().startswith("python3 -m venv") and "pytest" in line
    ]
    assert len(commands) == 1, f".ci/run should have one install-and-test line, found {commands}"
    return commands[0]


def test_readme_opens_with_the_demo_and_the_ci_test_command() -> None:
    """The first two code blocks are the demo command and exactly the test command CI runs."""
    text = readme_text()
    blocks = fenced_blocks(text)
    assert len(blocks) >= 2, "README.md should open with two command blocks"
    (demo_info, demo), (test_info, test) = blocks[:2]
    assert demo_info == "sh"
    assert test_info == "sh"
    assert demo.strip() == DEMO_COMMAND
    assert test.strip() == ci_test_command()
    # Nothing but the title and the tagline comes before them.
    before = text[: text.index("```")]
    assert before.startswith("# fusion-router\n")
    assert "##" not in before


def test_the_demo_command_names_the_installed_console_script() -> None:
    """`fusion-router` in the demo command is the console script pyproject.toml installs."""
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^fusion-router = "router\.cli:main"$', pyproject, re.M)
    assert DEMO_COMMAND.endswith(".venv/bin/fusion-router demo")


def _registered_metrics() -> set[str]:
    """The metric names the app registers, as Prometheus exposes them (counters without
    their `_total` suffix in the registry, so it is added back)."""
    from router.metrics import Metrics

    names = set()
    for collector in Metrics.create().registry._collector_to_names:
        for metric in collector.describe():
            names.add(metric.name + ("_total" if metric.type == "counter" else ""))
    return names


def test_the_observability_page_lists_every_metric_the_code_registers() -> None:
    """ops/observability/README.md's metric table is exactly the registered metrics."""
    page = (ROOT / "ops" / "observability" / "README.md").read_text()
    listed = set(re.findall(r"^\| `(router_[a-z_]+)` \|", page, flags=re.M))
    assert listed == _registered_metrics()
