"""What ops networks need from the upstream client, against real sockets on loopback.

A CONNECT proxy, HTTPS upstreams (trustme CA and certificates, one requiring a client
certificate), an IPv6 address that refuses or never answers ahead of a working IPv4 one, the
per-origin connection cap and a request whose reused connection the server had dropped (never
sent again by the client, reported as such): each is a small asyncio server here, so each test
sees real bytes on real sockets.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme

from router import yaml12
from router.config import ProviderConfig, parse_config
from router.errors import ConfigError, ProviderError
from router.providers import (
    OpenAIProvider,
    Secret,
    build_providers,
    client_for,
    client_from_environ,
)
from router.types import ChatRequest, Message, ProviderCall, Timeouts
from router.upstream_dial import interleaved, tls_context
from router.upstream_http import (
    USER_AGENT,
    ConnectFailed,
    Disconnected,
    Endpoint,
    TimedOut,
    UpstreamClient,
    UpstreamHttpError,
    render_request,
)
from router.upstream_proxy import BadProxySetting, NoProxy, Proxy, ProxyRules
from tests.fakes.openai_server import completion_json
from tests.fakes.script import Answer
from tests.test_upstream_http import keep_alive, read_request

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


# -- servers -------------------------------------------------------------------------------------


@dataclass
class Upstream:
    """A server on 127.0.0.1: its port and what it saw."""

    port: int = 0
    accepted: int = 0  # connections accepted
    requests: int = 0  # requests that reached a handler that counts them
    busy: int = 0
    most_busy: int = 0
    hung_up: int = 0  # idle connections the client closed (for handlers that count them)

    def endpoint(self, scheme: str = "http", host: str = "127.0.0.1") -> Endpoint:
        return Endpoint.prepare(f"{scheme}://{host}:{self.port}/v1/x", {})


@asynccontextmanager
async def serving(handler: Handler, *, tls: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    """`handler` per connection on 127.0.0.1 port 0 (over TLS with `tls`), yielding the port;
    handlers still running at the end are cancelled and awaited."""
    running: set[asyncio.Task[Any]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        running.add(task)
        try:
            await handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            running.discard(task)

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        await server.wait_closed()


@asynccontextmanager
async def upstream(
    answer: Handler = keep_alive, *, tls: ssl.SSLContext | None = None
) -> AsyncIterator[Upstream]:
    """`answer` run per connection on 127.0.0.1 (over TLS with `tls`), counted."""
    state = Upstream()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.accepted += 1
        await answer(reader, writer)

    async with serving(handle, tls=tls) as port:
        state.port = port
        yield state


@dataclass
class ProxySeen:
    """A CONNECT proxy's port, and each request line and headers it received."""

    port: int = 0
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def url(self, credentials: str = "") -> str:
        return f"http://{credentials}127.0.0.1:{self.port}"


async def splice(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy bytes one way until the end, then close the other side."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@asynccontextmanager
async def connect_proxy(status: int = 200) -> AsyncIterator[ProxySeen]:
    """A tiny CONNECT proxy on 127.0.0.1: records each request; answers `status`, and on 200
    splices bytes to the target."""
    seen = ProxySeen()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        line, *fields = head.split("\r\n")[:-2]
        seen.requests.append((line, dict(f.split(": ", 1) for f in fields)))
        method, target, _ = line.split(" ")
        if status != 200 or method != "CONNECT":
            writer.write(b"HTTP/1.1 %d Refused\r\nContent-Length: 4\r\n\r\nnope" % status)
            await writer.drain()
            return
        host, _, port = target.rpartition(":")
        to_reader, to_writer = await asyncio.open_connection(host.strip("[]"), int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await asyncio.gather(splice(reader, to_writer), splice(to_reader, writer))

    async with serving(handle) as port:
        seen.port = port
        yield seen


@dataclass
class Pki:
    """A CA, its bundle on disk, a client certificate and key on disk, and server contexts."""

    ca: trustme.CA
    ca_bundle: Path
    client_cert: Path
    client_key: Path

    def server(self, *, require_client_cert: bool = False) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        if require_client_cert:
            context.verify_mode = ssl.CERT_REQUIRED
            self.ca.configure_trust(context)
        return context


@pytest.fixture(name="pki")
def _pki(tmp_path: Path) -> Pki:
    ca = trustme.CA()
    client = ca.issue_cert("router.client.example")
    pki = Pki(ca, tmp_path / "ca.pem", tmp_path / "client.pem", tmp_path / "client.key")
    ca.cert_pem.write_to_path(str(pki.ca_bundle))
    client.cert_chain_pems[0].write_to_path(str(pki.client_cert))
    client.private_key_pem.write_to_path(str(pki.client_key))
    return pki


async def fetch(
    client: UpstreamClient,
    endpoint: Endpoint,
    body: bytes = b"hi",
    *,
    connect_timeout: float = 2.0,
    within: float = 5.0,
) -> bytes:
    """One POST; the whole answer body."""
    data = render_request(endpoint, body, None)
    response = await client.post(endpoint, data, connect_timeout=connect_timeout, within=within)
    try:
        out = bytearray()
        while piece := await response.read_some(within=within):
            out += piece
        return bytes(out)
    finally:
        response.release()


def provider_config(**settings: Any) -> ProviderConfig:
    return ProviderConfig.model_validate(
        {"protocol": "openai", "base_url": "https://api.example.com/v1", "region": "us"} | settings
    )


def chat_call(connect: float = 2.0) -> ProviderCall:
    request = ChatRequest(model="m1", messages=(Message("user", "What is 2+2?"),), max_tokens=5)
    return ProviderCall(request, "m1", Timeouts(connect=connect, first_byte=3, idle=3, total=10))


# -- proxies -------------------------------------------------------------------------------------


async def test_https_goes_through_the_connect_proxy_and_is_verified_end_to_end(pki: Pki) -> None:
    """The proxy sees CONNECT 127.0.0.1:port; the upstream's certificate is checked against
    the configured CA through the tunnel, and the tunnelled connection is reused."""
    async with upstream(tls=pki.server()) as up, connect_proxy() as proxy:
        proxies = ProxyRules.from_environ({"HTTPS_PROXY": proxy.url()})
        trusting = tls_context(str(pki.ca_bundle))
        async with UpstreamClient(ssl_context=trusting, proxies=proxies) as client:
            assert await fetch(client, up.endpoint("https"), b"one") == b"one"
            assert await fetch(client, up.endpoint("https"), b"two") == b"two"
            assert client.proxy_connects == 1
        assert up.accepted == 1
        [(line, headers)] = proxy.requests
        assert line == f"CONNECT 127.0.0.1:{up.port} HTTP/1.1"
        assert headers["Host"] == f"127.0.0.1:{up.port}"
        assert headers["User-Agent"] == USER_AGENT
        assert "Proxy-Authorization" not in headers
        async with UpstreamClient(proxies=proxies) as client:  # the system store: not our CA
            with pytest.raises(ConnectFailed) as caught:
                await fetch(client, up.endpoint("https"))
        assert caught.value.certificate
        assert "through proxy" in str(caught.value)


async def test_an_http_origin_tunnels_with_connect_too() -> None:
    async with upstream() as up, connect_proxy() as proxy:
        proxies = ProxyRules.from_environ({"http_proxy": proxy.url()})
        async with UpstreamClient(proxies=proxies) as client:
            assert await fetch(client, up.endpoint(), b"plain") == b"plain"
            assert client.proxy_connects == 1
    assert [line for line, _ in proxy.requests] == [f"CONNECT 127.0.0.1:{up.port} HTTP/1.1"]


async def test_proxy_credentials_go_in_proxy_authorization_and_never_print() -> None:
    async with upstream() as up, connect_proxy() as proxy:
        url = proxy.url("ops%40corp:s3cr%3At@")
        proxies = ProxyRules.from_environ({"HTTP_PROXY": url})
        async with UpstreamClient(proxies=proxies) as client:
            assert await fetch(client, up.endpoint()) == b"hi"
    [(_, headers)] = proxy.requests
    expected = base64.b64encode(b"ops@corp:s3cr:t").decode()
    assert headers["Proxy-Authorization"] == f"Basic {expected}"
    for shown in (repr(proxies), str(proxies), repr(proxies.http)):
        assert "s3cr" not in shown
        assert expected not in shown


@pytest.mark.parametrize("status", [407, 502])
async def test_a_proxy_refusing_the_tunnel_is_connect_failed_and_provider_unavailable(
    status: int,
) -> None:
    async with connect_proxy(status) as proxy:
        proxies = ProxyRules.from_environ({"HTTPS_PROXY": proxy.url("ops:hunter2@")})
        endpoint = Endpoint.prepare("https://127.0.0.1:9/v1/x", {})
        async with UpstreamClient(proxies=proxies) as client:
            with pytest.raises(ConnectFailed) as caught:
                await fetch(client, endpoint)
            assert str(status) in str(caught.value)
            assert "hunter2" not in str(caught.value)
            assert client.proxy_connects == 0
            provider = OpenAIProvider("p", client, "https://127.0.0.1:9/v1", Secret("k"))
            with pytest.raises(ProviderError) as mapped:
                await provider.complete(chat_call())
    assert mapped.value.code == "provider_unavailable"
    assert "hunter2" not in str(mapped.value)


@pytest.mark.parametrize(
    ("no_proxy", "bypassed"),
    [
        ("127.0.0.1", True),
        ("example.com, 127.0.0.0/8", True),
        ("127.0.0.1:{port}", True),  # the upstream's own port
        ("*", True),
        ("localhost", False),  # loopback is not excluded unless listed
        ("127.0.0.1:1", False),  # another port
        ("", False),
    ],
)
async def test_no_proxy_decides_who_bypasses_the_proxy(no_proxy: str, bypassed: bool) -> None:
    async with upstream() as up, connect_proxy() as proxy:
        environ = {"http_proxy": proxy.url(), "NO_PROXY": no_proxy.format(port=up.port)}
        async with UpstreamClient(proxies=ProxyRules.from_environ(environ)) as client:
            assert await fetch(client, up.endpoint()) == b"hi"
            assert client.proxy_connects == (0 if bypassed else 1)
    assert len(proxy.requests) == (0 if bypassed else 1)
    assert up.accepted == 1


@pytest.mark.parametrize(
    ("entries", "host", "port", "matches"),
    [
        ("example.com", "api.example.com", 443, True),
        (".example.com", "api.example.com", 443, True),
        (".example.com", "example.com", 443, True),
        ("*.example.com", "deep.api.example.com", 443, True),
        ("example.com", "notexample.com", 443, False),
        ("example.com:8443", "api.example.com", 443, False),
        ("example.com:8443", "api.example.com", 8443, True),
        ("API.Example.COM", "api.example.com", 443, True),
        ("10.0.0.0/8", "10.1.2.3", 443, True),
        ("10.0.0.0/8", "11.1.2.3", 443, False),
        ("::1", "::1", 443, True),
        ("[::1]:8080", "::1", 8080, True),
        ("[::1]:8080", "::1", 443, False),
        ("fd00::/8", "fd12::1", 443, True),
        ("0.0.1", "127.0.0.1", 443, False),  # names never match IP addresses
        (" , *", "anything.example", 1, True),
        ("", "api.example.com", 443, False),
    ],
)
def test_no_proxy_matching_follows_curl_and_requests(
    entries: str, host: str, port: int, matches: bool
) -> None:
    assert NoProxy.parse(entries).matches(host, port) is matches


def test_proxy_variables_lower_case_first_empty_is_unset_and_bad_ones_are_named() -> None:
    rules = ProxyRules.from_environ(
        {"https_proxy": "proxy-a:3128", "HTTPS_PROXY": "http://proxy-b:1", "http_proxy": ""}
    )
    assert rules.https == Proxy("proxy-a", 3128)
    assert rules.http is None
    assert rules.for_origin("api.example.com", 443, tls=True) == Proxy("proxy-a", 3128)
    assert rules.for_origin("api.example.com", 80, tls=False) is None
    with pytest.raises(BadProxySetting) as caught:
        ProxyRules.from_environ({"HTTPS_PROXY": "socks5://ops:hunter2@proxy:1080"})
    assert caught.value.where == "HTTPS_PROXY"
    assert "only http://" in str(caught.value)
    assert "hunter2" not in str(caught.value)
    with pytest.raises(ConfigError) as config_error:
        client_from_environ({"http_proxy": "http://proxy:notaport"})
    [problem] = config_error.value.problems
    assert (problem.path, problem.message) == ("http_proxy", "the proxy URL has an invalid port")
    assert client_from_environ({"HTTPS_PROXY": "http://p:3128"}).proxies.https == Proxy("p", 3128)


async def test_a_provider_s_own_proxy_setting_overrides_the_environment() -> None:
    async with upstream() as up, connect_proxy() as proxy:
        base = UpstreamClient(proxies=ProxyRules.from_environ({"HTTP_PROXY": proxy.url()}))
        async with base:
            direct = client_for("direct", provider_config(proxy="none"), base, {})
            assert await fetch(direct, up.endpoint()) == b"hi"
            assert proxy.requests == []
            assert await fetch(base, up.endpoint()) == b"hi"  # the environment's proxy
            assert len(proxy.requests) == 1
        unproxied = UpstreamClient()  # no environment proxy, the provider names one
        async with unproxied:
            own = client_for("own", provider_config(proxy=proxy.url()), unproxied, {})
            assert await fetch(own, up.endpoint()) == b"hi"
            assert own.proxy_connects == unproxied.proxy_connects == 1
    assert len(proxy.requests) == 2


async def test_a_config_s_provider_goes_through_its_proxy_with_its_own_ca(
    pki: Pki, tmp_path: Path
) -> None:
    """From YAML to the answer: the provider's `tls.ca_bundle` verifies the upstream through
    the provider's `proxy`; a provider without them, on the same client, cannot connect."""

    async def chat(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader):
            body = completion_json("m1", Answer("4")).encode()
            head = (
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            )
            writer.write(head % len(body) + body)
            await writer.drain()

    async with upstream(chat, tls=pki.server()) as up, connect_proxy() as proxy:
        text = f"""
jurisdiction: us
providers:
  corp:
    protocol: openai
    base_url: https://127.0.0.1:{up.port}/v1
    region: us
    proxy: {proxy.url()}
    tls: {{ca_bundle: {pki.ca_bundle}}}
    max_connections: 4
  plain:
    protocol: openai
    base_url: https://127.0.0.1:{up.port}/v1
    region: us
models:
  m1: {{provider: corp, upstream_id: m1, vendor: x, origin: us, tier: budget, context_window: 8000, price: {{input_per_mtok: 1, output_per_mtok: 1}}}}
"""
        config = parse_config(yaml12.loads(text), "test.yaml")
        async with UpstreamClient() as session:
            providers = build_providers(config, session, {"corp": Secret("k"), "plain": None})
            completion = await providers["corp"].complete(chat_call())
            assert completion.text == "4"
            with pytest.raises(ProviderError) as caught:
                await providers["plain"].complete(chat_call())
    assert caught.value.code == "provider_unavailable"
    assert [line for line, _ in proxy.requests] == [f"CONNECT 127.0.0.1:{up.port} HTTP/1.1"]
    assert up.accepted == 1  # the plain provider's handshake failed: it never got a request


# -- TLS profiles --------------------------------------------------------------------------------


async def test_a_client_certificate_is_presented_when_configured(pki: Pki) -> None:
    served: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served.append(await read_request(reader))
        writer.write(OK)
        await writer.drain()

    with_cert = provider_config(
        tls={
            "ca_bundle": str(pki.ca_bundle),
            "client_cert": str(pki.client_cert),
            "client_key": str(pki.client_key),
        }
    )
    without = provider_config(tls={"ca_bundle": str(pki.ca_bundle)})
    requiring = pki.server(require_client_cert=True)
    async with upstream(record, tls=requiring) as up, UpstreamClient() as base:
        assert await fetch(client_for("a", with_cert, base, {}), up.endpoint("https")) == b"ok"
        with pytest.raises(UpstreamHttpError):  # TLS 1.3: refused after the handshake
            await fetch(client_for("b", without, base, {}), up.endpoint("https"))
    assert len(served) == 1


async def test_different_tls_settings_never_share_a_connection(pki: Pki) -> None:
    ca_only = provider_config(tls={"ca_bundle": str(pki.ca_bundle)})
    with_cert = provider_config(
        tls={
            "ca_bundle": str(pki.ca_bundle),
            "client_cert": str(pki.client_cert),
            "client_key": str(pki.client_key),
        }
    )
    async with upstream(tls=pki.server()) as up, UpstreamClient() as base:
        variants: dict[tuple[object, ...], UpstreamClient] = {}
        first = client_for("a", ca_only, base, variants)
        second = client_for("b", with_cert, base, variants)
        assert client_for("c", ca_only, base, variants) is first  # same settings: same pools
        assert client_for("d", provider_config(), base, variants) is base
        for client in (first, second, first, second):
            assert await fetch(client, up.endpoint("https")) == b"hi"
        assert up.accepted == 2
    assert up.accepted == 2


def test_an_encrypted_client_key_is_refused_without_a_prompt(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    leaf = trustme.CA().issue_cert("client.example")
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    (tmp_path / "key.pem").write_bytes(encrypted)
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    with pytest.raises(ValueError, match="encrypted"):
        tls_context(None, str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"))


# -- happy eyeballs ------------------------------------------------------------------------------


def resolving_to(*addresses: str) -> Callable[[str, int], Awaitable[Sequence[str]]]:
    async def resolve(host: str, port: int) -> Sequence[str]:
        return addresses

    return resolve


@asynccontextmanager
async def blackhole_v6(port: int) -> AsyncIterator[None]:
    """[::1]:`port` as a blackhole: a listener whose accept queue is full, so new SYNs are
    dropped and a connect hangs, as to a firewalled or unrouted address."""
    listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    fillers: list[socket.socket] = []
    try:
        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        listener.bind(("::1", port))
        listener.listen(0)
        for _ in range(4):
            filler = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            filler.setblocking(False)
            fillers.append(filler)
            with suppress(BlockingIOError):
                filler.connect(("::1", port))
        await asyncio.sleep(0.05)
        yield
    finally:
        for sock in (*fillers, listener):
            sock.close()


@pytest.mark.parametrize("v6", ["refused", "blackholed"])
async def test_an_unreachable_ipv6_address_falls_back_to_ipv4(v6: str) -> None:
    resolve = resolving_to("::1", "127.0.0.1")
    async with upstream() as up, UpstreamClient(resolve=resolve) as client:
        endpoint = up.endpoint("http", "api.test")
        async with blackhole_v6(up.port) if v6 == "blackholed" else nullcontext():
            started = asyncio.get_running_loop().time()
            assert await fetch(client, endpoint, connect_timeout=2) == b"hi"
            elapsed = asyncio.get_running_loop().time() - started
    assert elapsed < 1.0  # well within the 2 s connect clock
    if v6 == "blackholed":
        assert elapsed >= 0.2  # IPv4 was tried after the 0.25 s attempt delay, not at once
    assert up.accepted == 1


async def test_every_address_failing_is_connect_failed() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    endpoint = Endpoint.prepare(f"http://api.test:{port}/", {})
    async with UpstreamClient(resolve=resolving_to("::1", "127.0.0.1")) as client:
        with pytest.raises(ConnectFailed, match="ConnectionRefusedError"):
            await fetch(client, endpoint)
    async with UpstreamClient(resolve=resolving_to()) as client:
        with pytest.raises(ConnectFailed) as caught:
            await fetch(client, endpoint)
    assert caught.value.dns


def test_addresses_alternate_families_starting_with_the_first() -> None:
    v6a, v6b = (socket.AF_INET6, ("::1", 1, 0, 0)), (socket.AF_INET6, ("::2", 1, 0, 0))
    v4a, v4b = (socket.AF_INET, ("10.0.0.1", 1)), (socket.AF_INET, ("10.0.0.2", 1))
    assert interleaved([v6a, v6b, v4a, v6a, v4b]) == [v6a, v4a, v6b, v4b]
    assert interleaved([v4a, v6a, v6b]) == [v4a, v6a, v6b]


# -- the connection cap --------------------------------------------------------------------------


def slow(delay: float, *, close: bool = False) -> Callable[[Upstream], Handler]:
    """Answers after `delay`, counting requests in progress (with `Connection: close` if asked)."""

    def make(state: Upstream) -> Handler:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while request := await read_request(reader):
                state.requests += 1
                state.busy += 1
                state.most_busy = max(state.most_busy, state.busy)
                await asyncio.sleep(delay)
                state.busy -= 1
                body = request.split(b"\r\n\r\n", 1)[1]
                extra = b"Connection: close\r\n" if close else b""
                writer.write(
                    b"HTTP/1.1 200 OK\r\n%sContent-Length: %d\r\n\r\n%s" % (extra, len(body), body)
                )
                await writer.drain()
                if close:
                    return

        return answer

    return make


@asynccontextmanager
async def counted(make: Callable[[Upstream], Handler]) -> AsyncIterator[Upstream]:
    """An upstream whose handler updates the upstream's own counters."""
    holder: list[Upstream] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await make(holder[0])(reader, writer)

    async with upstream(answer) as state:
        holder.append(state)
        yield state


async def test_at_the_cap_calls_wait_for_a_connection_instead_of_opening_one() -> None:
    async with counted(slow(0.1)) as up, UpstreamClient(max_connections=2) as client:
        bodies = [f"call {i}".encode() for i in range(5)]
        answers = await asyncio.gather(*(fetch(client, up.endpoint(), b) for b in bodies))
    assert answers == bodies
    assert up.accepted == 2  # never more than two connections, so never two more at once
    assert up.most_busy == 2


async def test_a_slot_freed_by_a_closed_connection_goes_to_a_waiting_call() -> None:
    async with counted(slow(0.05, close=True)) as up, UpstreamClient(max_connections=1) as client:
        answers = await asyncio.gather(*(fetch(client, up.endpoint(), b"x") for _ in range(3)))
    assert answers == [b"x"] * 3
    assert up.accepted == 3  # each answer closed its connection; the next call opened one
    assert up.most_busy == 1


async def test_a_call_waiting_at_the_cap_past_its_clock_times_out() -> None:
    async with counted(slow(0.5)) as up, UpstreamClient(max_connections=1) as client:
        loop = asyncio.get_running_loop()
        first = asyncio.ensure_future(fetch(client, up.endpoint(), b"first"))
        await asyncio.sleep(0.05)  # the first call holds the only connection
        started = loop.time()
        with pytest.raises(TimedOut):
            await fetch(client, up.endpoint(), within=0.1)
        assert loop.time() - started < 0.4
        assert await first == b"first"
        assert await fetch(client, up.endpoint(), b"after") == b"after"  # the slot came back
    assert up.accepted == 1
    assert up.requests == 2  # the call that timed out never sent its request


async def test_a_failed_connect_gives_its_slot_back() -> None:
    lookups: list[str] = []

    async def flaky_dns(host: str, port: int) -> str:
        lookups.append(host)
        if len(lookups) == 1:
            raise OSError("temporary failure in name resolution")
        return "127.0.0.1"

    async with upstream() as up, UpstreamClient(resolve=flaky_dns, max_connections=1) as client:
        with pytest.raises(ConnectFailed):
            await fetch(client, up.endpoint("http", "api.test"))
        assert await fetch(client, up.endpoint("http", "api.test"), within=1) == b"hi"
    assert up.accepted == 1


async def test_a_connection_handed_to_a_call_that_gave_up_goes_to_the_next() -> None:
    async with upstream() as up, UpstreamClient(max_connections=1) as client:
        endpoint = up.endpoint()
        data = render_request(endpoint, b"first", None)
        holding = await client.post(endpoint, data, connect_timeout=1, within=1)
        waiting = asyncio.ensure_future(fetch(client, endpoint, b"second"))
        await asyncio.sleep(0.05)  # the second call waits at the cap
        while not holding.at_end:
            await holding.read_some(within=1)
        holding.release()  # handed to the waiting call...
        waiting.cancel()  # ...which gives up before it runs
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert await fetch(client, endpoint, b"third", within=1) == b"third"
    assert up.accepted == 1


# -- a request on a connection the server had dropped: reported, never sent again ---------------


def drops_reused(
    *, reset: bool = False, dropping: int = 1, drop_after: float = 0.0, answer_after: float = 0.0
) -> Callable[[Upstream], Handler]:
    """The first `dropping` connections each answer one request, then drop the connection when
    the next arrives (after `drop_after` s; closed, or reset with `reset`): the idle keep-alive
    connection the server closed just as the client reused it. Later connections answer every
    request, after `answer_after` s. Counts requests, and idle connections the client closed."""

    def make(state: Upstream) -> Handler:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            drops = state.accepted <= dropping
            answered = False
            while True:
                try:
                    await read_request(reader)
                except (asyncio.IncompleteReadError, ConnectionError):
                    state.hung_up += 1
                    return
                state.requests += 1
                if drops and answered:
                    await asyncio.sleep(drop_after)
                    if reset:
                        sock = writer.get_extra_info("socket")
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                        writer.transport.abort()  # RST, not FIN
                    return
                await asyncio.sleep(0.0 if drops else answer_after)
                writer.write(OK)
                await writer.drain()
                answered = True

        return answer

    return make


@pytest.mark.parametrize("reset", [False, True], ids=["closed", "reset"])
async def test_a_request_on_a_dropped_keep_alive_connection_is_reported_not_sent_again(
    reset: bool,
) -> None:
    async with counted(drops_reused(reset=reset)) as up, UpstreamClient() as client:
        assert await fetch(client, up.endpoint()) == b"ok"
        with pytest.raises(Disconnected) as caught:
            await fetch(client, up.endpoint())
        assert (caught.value.began, caught.value.reused) == (False, True)
        assert up.requests == 2  # the dropped request reached the server once, and only once
        assert await fetch(client, up.endpoint()) == b"ok"
        assert up.accepted == 2  # the next call connected afresh
    assert up.requests == 3  # one per call: nothing was sent twice


async def wait_for_count(read: Callable[[], int], at_least: int) -> None:
    """Until `read()` reaches `at_least`, for at most a second."""
    for _ in range(100):
        if read() >= at_least:
            return
        await asyncio.sleep(0.01)


async def test_the_origin_s_connections_idle_as_long_are_closed_with_a_stale_one() -> None:
    """Three connections pooled, all dropped by the server: the first reuse fails, and the
    next call connects afresh instead of finding one of the two others dead too."""
    async with counted(drops_reused(dropping=3)) as up, UpstreamClient() as client:
        answers = await asyncio.gather(*(fetch(client, up.endpoint()) for _ in range(3)))
        assert answers == [b"ok"] * 3
        assert up.accepted == 3
        with pytest.raises(Disconnected) as caught:
            await fetch(client, up.endpoint())
        assert caught.value.reused
        assert await fetch(client, up.endpoint()) == b"ok"
        assert up.accepted == 4  # a new connection, not another dropped one
        await wait_for_count(lambda: up.hung_up, 2)
        assert up.hung_up == 2  # the two others were closed by the client, never used again
        assert up.requests == 5


async def test_a_connection_pooled_after_the_stale_one_was_taken_is_kept() -> None:
    """Only connections idle at least as long as the stale one go: one released while the
    stale request was in flight proved alive since, and carries the next call."""
    make = drops_reused(dropping=1, drop_after=0.2, answer_after=0.1)
    async with counted(make) as up, UpstreamClient() as client:
        calls = [asyncio.ensure_future(fetch(client, up.endpoint())) for _ in range(2)]
        done, _ = await asyncio.wait(calls, return_when=asyncio.FIRST_COMPLETED)
        assert [call.result() for call in done] == [b"ok"]  # the first connection is idle
        with pytest.raises(Disconnected) as caught:  # reuses it; the second is released meanwhile
            await fetch(client, up.endpoint())
        assert caught.value.reused
        assert await asyncio.gather(*calls) == [b"ok", b"ok"]
        assert await fetch(client, up.endpoint()) == b"ok"
        assert up.accepted == 2  # the second connection was kept and reused
        assert up.hung_up == 0
    assert up.requests == 4


async def test_a_dropped_connection_handed_over_at_the_cap_is_reused_too() -> None:
    async with counted(drops_reused()) as up, UpstreamClient(max_connections=1) as client:
        endpoint = up.endpoint()
        holding = await client.post(
            endpoint, render_request(endpoint, b"first", None), connect_timeout=1, within=1
        )
        waiting = asyncio.ensure_future(fetch(client, endpoint))
        await asyncio.sleep(0.05)  # the second call waits at the cap
        while not holding.at_end:
            await holding.read_some(within=1)
        holding.release()  # handed to the waiting call, whose request the server drops
        with pytest.raises(Disconnected) as caught:
            await waiting
        assert (caught.value.began, caught.value.reused) == (False, True)
        assert await fetch(client, endpoint) == b"ok"
    assert (up.accepted, up.requests) == (2, 3)


async def test_a_fresh_connection_closed_before_the_answer_is_not_reused() -> None:
    def make(state: Upstream) -> Handler:
        async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            state.requests += 1

        return close_at_once

    async with counted(make) as up, UpstreamClient() as client:
        with pytest.raises(Disconnected) as caught:
            await fetch(client, up.endpoint())
    assert (caught.value.began, caught.value.reused) == (False, False)
    assert (up.accepted, up.requests) == (1, 1)


async def test_a_reused_connection_that_began_its_answer_is_not_stale() -> None:
    def make(state: Upstream) -> Handler:
        async def status_then_close(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            await read_request(reader)
            writer.write(OK)
            await writer.drain()
            await read_request(reader)
            state.requests += 2
            writer.write(b"HTTP/1.1 200 OK\r\n")
            await writer.drain()

        return status_then_close

    async with counted(make) as up, UpstreamClient() as client:
        assert await fetch(client, up.endpoint()) == b"ok"
        with pytest.raises(Disconnected) as caught:
            await fetch(client, up.endpoint())
    assert (caught.value.began, caught.value.reused) == (True, False)
    assert (up.accepted, up.requests) == (1, 2)


async def test_a_dropped_keep_alive_connection_is_a_neutral_stale_connection() -> None:
    """The adapter reports it as `StaleConnection`, no fault of the provider's (routing tries
    again, as an attempt); the adapter itself never sends it again."""
    requests: list[int] = []

    async def chat(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = completion_json("m1", Answer("4")).encode()
        await read_request(reader)
        requests.append(1)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        await read_request(reader)  # then dropped, as an idle connection the server timed out
        requests.append(1)

    async with upstream(chat) as up, UpstreamClient() as client:
        provider = OpenAIProvider("p", client, f"http://127.0.0.1:{up.port}/v1", Secret("k"))
        assert (await provider.complete(chat_call())).text == "4"
        with pytest.raises(ProviderError) as caught:
            await provider.complete(chat_call())
        assert type(caught.value).__name__ == "StaleConnection"
        assert caught.value.outcome.value == "neutral"
        assert len(requests) == 2  # the dropped request was not sent again
        assert (await provider.complete(chat_call())).text == "4"
    assert up.accepted == 2
    assert len(requests) == 3


async def test_a_reused_connection_dropped_after_a_long_silence_is_no_stale_connection() -> None:
    """Only a drop at once is the keep-alive race; a generation the server cuts after a while
    on a reused connection is the provider's fault (and would be billed twice if re-sent)."""
    async with counted(drops_reused(drop_after=1.3)) as up, UpstreamClient() as client:
        assert await fetch(client, up.endpoint()) == b"ok"
        with pytest.raises(Disconnected) as caught:
            await fetch(client, up.endpoint())
        assert (caught.value.began, caught.value.reused) == (False, False)
        assert up.requests == 2
