"""Config loading: YAML 1.2 scalars, strict schema, every problem with file, line and path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from router import yaml12
from router.catalog import Catalog
from router.config import load_config
from router.errors import ConfigError
from router.providers import Secret

ROOT = Path(__file__).resolve().parent.parent


def test_embedded_default_is_the_seed() -> None:
    """With no file, the seed's seven chat models, two embedding models and three panels load
    on simulated providers."""
    loaded = load_config(None)
    assert loaded.embedded
    catalog = Catalog.from_config(loaded.config)
    assert {m.id for m in catalog.models.values() if m.kind == "embedding"} == {
        "text-embedding-3-large",
        "gemini-embedding-001",
    }
    assert {m.id for m in catalog.models.values() if m.kind == "chat"} == {
        "claude-fable-5",
        "claude-mythos-5",
        "claude-opus-4.8",
        "gpt-5.5",
        "gpt-5.5-mini",  # the budget tier's spare (a substitute within the tier)
        "gemini-3-flash",
        "kimi-k2.6",
        "deepseek-v4-pro",
    }
    assert set(catalog.panels) == {"budget", "frontier", "research"}
    assert catalog.panels["research"].panelist_tools == ("web_search",)
    assert catalog.panels["budget"].panelists == ("gemini-3-flash", "kimi-k2.6", "deepseek-v4-pro")
    assert catalog.panels["frontier"].synthesizers[0] == "claude-opus-4.8"
    assert {m.protocol for m in catalog.models.values()} == {"sim"}
    assert "export_restricted" in catalog.models["claude-fable-5"].tags
    assert loaded.policies_dir.is_dir()


@pytest.mark.parametrize("word", ["NO", "no", "ON", "Off", "Y", "n", "yes"])
def test_yaml_1_1_booleans_stay_strings(word: str) -> None:
    """Norway stays Norway: YAML 1.1 boolean words are strings, as keys and as values."""
    doc = yaml12.loads(f"{word}: {word}\nlist: [{word}]\n")
    assert doc.data == {word: word, "list": [word]}


def test_yaml_numbers_follow_1_2() -> None:
    """0755 is 755, 12:30 is a string; only true/false are booleans."""
    assert yaml12.loads("a: 0755\nb: 12:30\nc: true\nd: 0x1f\n").data == {
        "a": 755,
        "b": "12:30",
        "c": True,
        "d": 31,
    }


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("a: 1\na: 2\n", "duplicate key"),
        ("1: x\n", "must be a string"),
        ("a: !!python/object:os.system x\n", "unsupported tag"),
        ("a: [\n", "syntax"),
        ("", "empty"),
        ("a: &x [1]\nb: {<<: *x}\n", "merge"),
    ],
)
def test_yaml_traps_are_errors(text: str, fragment: str) -> None:
    """Duplicate keys, non-string keys, custom tags, syntax errors and empty files are refused."""
    with pytest.raises(yaml12.YamlLoadError) as info:
        yaml12.loads(text)
    assert fragment in info.value.message


BROKEN = """\
jurisdiction: us
bogus_top: 1
providers:
  p1:
    protocol: openai
    base_url: http://api.example.com/v1?key=abc
    region: us
  p2:
    protocol: smoke-signals
    region: us
models:
  m1:
    provider: nowhere
    upstream_id: x
    vendor: V
    origin: us
    tier: budget
    context_window: "big"
    price: {input_per_mtok: 1, output_per_mtok: 1}
routes:
  r1: [m1, ghost]
panels:
  p:
    panelists: [m1, phantom]
    synthesizers: [m1]
    quorum: 3
"""


def test_broken_config_reports_every_problem_with_path_and_line(tmp_path: Path) -> None:
    """One load reports all problems at once, each naming file, line and dotted path."""
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    found = {(p.path, p.line) for p in info.value.problems}
    messages = "\n".join(str(p) for p in info.value.problems)
    expected = {
        ("bogus_top", 2),
        ("providers.p1.base_url", 6),
        ("providers.p2.protocol", 9),
        ("models.m1.provider", 13),
        ("models.m1.context_window", 18),
        ("routes.r1[1]", 21),
        ("panels.p.panelists[1]", 24),
        ("panels.p.quorum", 26),
    }
    assert expected <= found, messages
    assert all(str(path) in str(p) for p in info.value.problems)


def test_plain_http_needs_an_explicit_flag(tmp_path: Path) -> None:
    """A plain-http base URL is refused unless the provider says allow_http."""
    text = (
        BROKEN.split("models:", maxsplit=1)[0].replace("?key=abc", "").replace("bogus_top: 1\n", "")
    )
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert any("allow_http" in p.message for p in info.value.problems)


def test_check_command_lists_every_problem_and_fails(tmp_path: Path) -> None:
    """`check` prints each problem on its own line with path, and exits non-zero."""
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    result = subprocess.run(
        [sys.executable, "-m", "router", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 1
    for fragment in (
        "bogus_top: unknown key",
        "routes.r1[1]: unknown model 'ghost'",
        "panels.p.quorum",
    ):
        assert fragment in result.stdout


@pytest.mark.parametrize(
    "config", [None, ROOT / "ops" / "config" / "example.yaml"], ids=["embedded", "example"]
)
def test_shipped_configs_pass_check(config: Path | None) -> None:
    """The embedded default and every shipped example config pass `check`."""
    args = ["check"] if config is None else ["check", "--config", str(config)]
    result = subprocess.run(
        [sys.executable, "-m", "router", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok:" in result.stdout


def test_readme_config_example_is_valid(tmp_path: Path) -> None:
    """The config example in the README validates."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("```yaml\n# router.yaml") + len("```yaml\n")
    block = readme[start : readme.index("```", start)]
    path = tmp_path / "router.yaml"
    path.write_text(block)
    loaded = load_config(path)
    assert loaded.config.providers


def test_secret_never_prints() -> None:
    """A key's repr and str are masked."""
    secret = Secret("sk-CANARY-xyz")
    assert "CANARY" not in repr(secret)
    assert "CANARY" not in str(secret)
    assert "CANARY" not in f"{secret}"
    assert secret.reveal() == "sk-CANARY-xyz"


TRANSPORT = """\
jurisdiction: us
providers:
  p1:
    protocol: openai
    base_url: https://api.example.com/v1
    region: us
{settings}
models:
  m1: {{provider: p1, upstream_id: m1, vendor: x, origin: us, tier: budget, context_window: 8000, price: {{input_per_mtok: 1, output_per_mtok: 1}}}}
"""


@pytest.fixture(name="pems")
def _pems(tmp_path: Path) -> dict[str, Path]:
    """A CA bundle, a client certificate and its key, and a file that is not PEM."""
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("router.client.example")
    files = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key", "garbage")}
    ca.cert_pem.write_to_path(str(files["ca"]))
    leaf.cert_chain_pems[0].write_to_path(str(files["cert"]))
    leaf.private_key_pem.write_to_path(str(files["key"]))
    files["garbage"].write_text("not a certificate\n")
    return files


def test_transport_settings_load(tmp_path: Path, pems: dict[str, Path]) -> None:
    """tls, proxy and max_connections are provider keys; "none" turns the proxy off."""
    settings = (
        f"    tls: {{ca_bundle: {pems['ca']}, client_cert: {pems['cert']}, "
        f"client_key: {pems['key']}}}\n"
        "    proxy: http://ops:pw@proxy.internal:3128\n"
        "    max_connections: 8"
    )
    path = tmp_path / "router.yaml"
    path.write_text(TRANSPORT.format(settings=settings))
    provider = load_config(path).config.providers["p1"]
    assert provider.tls is not None
    assert provider.tls.client_key == str(pems["key"])
    assert (provider.proxy, provider.max_connections) == ("http://ops:pw@proxy.internal:3128", 8)
    path.write_text(TRANSPORT.format(settings="    proxy: none"))
    provider = load_config(path).config.providers["p1"]
    assert (provider.proxy, provider.tls, provider.max_connections) == ("none", None, 256)


@pytest.mark.parametrize(
    ("settings", "path", "fragment"),
    [
        ("    tls: {ca_bundle: /nonexistent/ca.pem}", "providers.p1.tls.ca_bundle", "no such file"),
        ("    tls: {ca_bundle: certs/ca.pem}", "providers.p1.tls.ca_bundle", "absolute path"),
        ("    tls: {client_key: KEY}", "providers.p1.tls", "client_key is set without client_cert"),
        ("    tls: {ca_bundle: GARBAGE}", "providers.p1.tls", "cannot be loaded"),
        ("    tls: {client_cert: CERT, client_key: CA}", "providers.p1.tls", "cannot be loaded"),
        ("    tls: {ca_bundle: CA, verify: false}", "providers.p1.tls.verify", "unknown key"),
        ("    proxy: socks5://ops:hunter2@proxy:1080", "providers.p1.proxy", "only http://"),
        ("    proxy: http://ops:hunter2@proxy:port", "providers.p1.proxy", "invalid port"),
        ("    max_connections: 0", "providers.p1.max_connections", "greater than or equal to 1"),
    ],
)
def test_transport_settings_are_checked_with_their_dotted_path(
    tmp_path: Path, pems: dict[str, Path], settings: str, path: str, fragment: str
) -> None:
    for name, file in (("GARBAGE", "garbage"), ("KEY", "key"), ("CERT", "cert"), ("CA", "ca")):
        settings = settings.replace(name, str(pems[file]))
    config = tmp_path / "router.yaml"
    config.write_text(TRANSPORT.format(settings=settings))
    with pytest.raises(ConfigError) as info:
        load_config(config)
    [problem] = info.value.problems
    assert problem.path == path
    assert fragment in problem.message
    assert problem.line == 7
    assert "hunter2" not in str(problem)
