"""Egress proxies for upstream connections: HTTPS_PROXY/HTTP_PROXY/NO_PROXY rules and the CONNECT tunnel.

The rules are read once, at startup (`ProxyRules.from_environ`, or `ProxyRules.only` for a
provider's own setting); both schemes tunnel with CONNECT, so TLS to the upstream runs end to
end through the proxy. `open_tunnel` asks the proxy for the tunnel on a socket already
connected to it; `upstream_dial` connects that socket and starts TLS on the tunnel.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from router import __version__
from router.upstream_errors import ConnectFailed

# upstream_http.USER_AGENT too, not imported from there (it imports this module)
_USER_AGENT = f"fusion-router/{__version__}"
_MAX_HEAD_BYTES = 64 * 1024  # the proxy's answer to CONNECT, as an upstream's headers


class BadProxySetting(ValueError):
    """A proxy setting that cannot be used; the message never carries the URL (credentials)."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Proxy:
    """An HTTP proxy that tunnels with CONNECT; its credentials never print."""

    host: str
    port: int
    authorization: str | None = field(default=None, repr=False)  # "Basic ..." from user:pass@

    @property
    def label(self) -> str:
        """`host:port`, for messages (never the credentials)."""
        return f"{_bracketed(self.host)}:{self.port}"

    @classmethod
    def parse(cls, url: str) -> Proxy:
        """`http://[user:pass@]host[:port]` (port 80 by default; a bare `host:port` is taken as
        http, as curl does). ValueError, without the URL, for anything else."""
        text = url.strip()
        parts = urlsplit(text if "://" in text else f"http://{text}")
        if parts.scheme.lower() != "http":
            raise ValueError(
                f"only http:// proxies are supported, not {parts.scheme}:// "
                "(the tunnel is CONNECT; TLS to the upstream runs through it end to end)"
            )
        try:
            port = parts.port or 80
        except ValueError:
            raise ValueError("the proxy URL has an invalid port") from None
        if not parts.hostname:
            raise ValueError("the proxy URL has no host")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("a proxy URL is only scheme, host and port (and user:pass@)")
        authorization = None
        if parts.username is not None or parts.password is not None:
            pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
            authorization = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        return cls(parts.hostname, port, authorization)


@dataclass(frozen=True, slots=True)
class NoProxy:
    """Origins that bypass the proxy, as curl and requests read NO_PROXY: comma-separated
    names (each matching itself and its subdomains, with or without a leading dot), IPs and
    CIDR blocks, each with an optional `:port`; `*` alone bypasses it for everything.
    Loopback is not excluded unless listed."""

    everything: bool = False
    domains: tuple[tuple[str, int | None], ...] = ()
    networks: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, int | None], ...] = ()

    @classmethod
    def parse(cls, value: str) -> NoProxy:
        """The entries of a NO_PROXY value; entries that are neither IP nor name never match."""
        everything = False
        domains: list[tuple[str, int | None]] = []
        networks: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, int | None]] = []
        for raw in value.split(","):
            entry = raw.strip().lower()
            if entry == "*":
                everything = True
                continue
            host, port = _split_port(entry)
            try:
                networks.append((ipaddress.ip_network(host, strict=False), port))
            except ValueError:
                name = host.lstrip("*").strip(".")
                if name:
                    domains.append((name, port))
        return cls(everything, tuple(domains), tuple(networks))

    def matches(self, host: str, port: int) -> bool:
        """Whether connections to `host`:`port` go direct."""
        if self.everything:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            name = host.lower().rstrip(".")
            return any(
                (name == domain or name.endswith("." + domain)) and only in (None, port)
                for domain, only in self.domains
            )
        return any(address in network and only in (None, port) for network, only in self.networks)


def _split_port(entry: str) -> tuple[str, int | None]:
    """`host[:port]`, `[v6][:port]` or a bare IPv6 address, split."""
    if entry.startswith("["):
        host, _, rest = entry[1:].partition("]")
        return host, int(rest[1:]) if rest[1:].isdigit() else None
    host, colon, port = entry.rpartition(":")
    if colon and ":" not in host and port.isdigit():
        return host, int(port)
    return entry, None


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


@dataclass(frozen=True, slots=True)
class ProxyRules:
    """Which proxy, if any, an origin's connections go through: `https` for https origins,
    `http` for http ones (both tunnel with CONNECT), none for those `bypass` matches."""

    https: Proxy | None = None
    http: Proxy | None = None
    bypass: NoProxy = NoProxy()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ProxyRules:
        """HTTPS_PROXY, HTTP_PROXY and NO_PROXY (the lower-case name first, as curl and requests
        read them; empty is unset). `BadProxySetting` names the variable, never its value."""
        return cls(
            https=_proxy_from(environ, "https_proxy"),
            http=_proxy_from(environ, "http_proxy"),
            bypass=NoProxy.parse(_variable(environ, "no_proxy") or ""),
        )

    @classmethod
    def only(cls, proxy: Proxy | None) -> ProxyRules:
        """Every origin through `proxy`, or (None) none through any: a provider's own setting,
        which NO_PROXY does not override."""
        return cls(https=proxy, http=proxy)

    def for_origin(self, host: str, port: int, *, tls: bool) -> Proxy | None:
        """The proxy for a new connection to `host`:`port` (an https origin with `tls`), or
        None to connect directly."""
        proxy = self.https if tls else self.http
        if proxy is None or self.bypass.matches(host, port):
            return None
        return proxy


DIRECT = ProxyRules()


def _variable(environ: Mapping[str, str], lower: str) -> str | None:
    return environ.get(lower) or environ.get(lower.upper()) or None


def _proxy_from(environ: Mapping[str, str], lower: str) -> Proxy | None:
    value = _variable(environ, lower)
    if value is None:
        return None
    where = lower if environ.get(lower) else lower.upper()
    try:
        return Proxy.parse(value)
    except ValueError as exc:
        raise BadProxySetting(where, str(exc)) from None


# -- the CONNECT tunnel --------------------------------------------------------------------------


async def open_tunnel(
    sock: socket.socket, host: str, port: int, proxy: Proxy, loop: asyncio.AbstractEventLoop
) -> asyncio.Transport:
    """Ask `proxy` (connected on `sock`) for a tunnel to `host`:`port`: the transport, ready to
    carry the upstream's bytes (TLS not started) once the proxy said 2xx. `ConnectFailed`
    otherwise, the connection to the proxy closed."""
    tunnel = _Tunnel(loop)
    transport, _ = await loop.create_connection(lambda: tunnel, sock=sock)
    try:
        transport.write(connect_head(host, port, proxy))
        status = await tunnel.status
        if not 200 <= status < 300:
            raise ConnectFailed(f"proxy {proxy.label} refused the tunnel: {status}")
        if tunnel.extra:
            raise ConnectFailed(f"proxy {proxy.label} sent bytes after its CONNECT answer")
    except BaseException:
        transport.abort()
        raise
    return transport


def connect_head(host: str, port: int, proxy: Proxy) -> bytes:
    """The CONNECT request for a tunnel to `host`:`port`."""
    target = f"{_bracketed(host)}:{port}"
    lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}", f"User-Agent: {_USER_AGENT}"]
    if proxy.authorization is not None:
        lines.append(f"Proxy-Authorization: {proxy.authorization}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Tunnel(asyncio.Protocol):
    """A proxy connection until its answer to CONNECT: reads the status, then hands over."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.status: asyncio.Future[int] = loop.create_future()
        self.extra = b""  # bytes after the answer's head: none are expected
        self._head = bytearray()

    def data_received(self, data: bytes) -> None:
        if self.status.done():
            self.extra += data
            return
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > _MAX_HEAD_BYTES:
                self.status.set_exception(
                    ConnectFailed("the proxy's answer to CONNECT is too large")
                )
            return
        self.extra = bytes(self._head[end + 4 :])
        line = bytes(self._head[: self._head.find(b"\r\n")])
        version, _, rest = line.partition(b" ")
        code = rest[:3]
        if not version.startswith(b"HTTP/1.") or not code.isdigit():
            self.status.set_exception(ConnectFailed("the proxy's answer to CONNECT is not HTTP"))
            return
        self.status.set_result(int(code))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.status.done():
            self.status.set_exception(ConnectFailed("the proxy closed the connection at CONNECT"))
