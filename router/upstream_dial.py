"""Opening upstream connections: every resolved address raced (happy eyeballs), TLS contexts per provider.

`open_connection` connects a protocol (the client's `_Connection`) to an origin, directly or
through a proxy's CONNECT tunnel (`upstream_proxy`), with TLS end to end, and maps every
failure to `ConnectFailed` or `ConnectTimedOut`. A name resolves to every address it has, and
the addresses are tried in RFC 8305 order, each attempt starting when the one before fails or
after a short delay, on asyncio and uvloop alike. `tls_context` builds a provider's own
verifying context, once, at startup.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from router.upstream_errors import ConnectFailed, ConnectTimedOut
from router.upstream_proxy import Proxy, open_tunnel

_HAPPY_EYEBALLS_DELAY_S = 0.25  # RFC 8305's connection attempt delay

# host, port -> one address or several (tried in RFC 8305 order); a name is looked up in turn
Resolve = Callable[[str, int], Awaitable[str | Sequence[str]]]
SockAddr = tuple[Any, ...]  # (host, port) or (host, port, flowinfo, scope_id)


def tls_context(
    ca_bundle: str | None = None, client_cert: str | None = None, client_key: str | None = None
) -> ssl.SSLContext:
    """A verifying client context that trusts `ca_bundle` alone when given (else the system's
    store) and presents `client_cert` (its key in `client_key`, or in the same file).

    Raises `ssl.SSLError`, `OSError` or `ValueError` (an encrypted key: no prompt, ever)."""
    context = ssl.create_default_context(cafile=ca_bundle)
    if client_cert is not None:
        context.load_cert_chain(client_cert, client_key, password=_no_passphrase)
    return context


def _no_passphrase() -> str:
    raise ValueError("the client key is encrypted; give an unencrypted key file")


async def open_connection(
    protocol: asyncio.Protocol,
    host: str,
    port: int,
    *,
    tls: ssl.SSLContext | None,
    proxy: Proxy | None,
    resolve: Resolve | None,
    within: float,
    loop: asyncio.AbstractEventLoop,
) -> None:
    """Connect `protocol` to `host`:`port` (with TLS under `tls`, verified against `host`),
    directly or through `proxy`'s tunnel, within `within` seconds; every failure mapped to
    `ConnectFailed` or `ConnectTimedOut`. `resolve` (None: the loop's getaddrinfo) resolves
    the host connected to, the proxy's when there is one."""
    via = "" if proxy is None else f" (through proxy {proxy.label})"
    try:
        async with asyncio.timeout(within):
            if proxy is None:
                sock = await dial(host, port, resolve, loop)
                await loop.create_connection(
                    lambda: protocol,
                    sock=sock,
                    ssl=tls,
                    server_hostname=host if tls is not None else None,
                )
            else:
                sock = await dial(proxy.host, proxy.port, resolve, loop)
                transport = await open_tunnel(sock, host, port, proxy, loop)
                await _take_over(transport, protocol, host, tls, loop)
    except TimeoutError:
        raise ConnectTimedOut(f"no connection within {within:g} s{via}") from None
    except ssl.SSLCertVerificationError:
        raise ConnectFailed(f"TLS certificate rejected{via}", certificate=True) from None
    except socket.gaierror:
        raise ConnectFailed(f"DNS resolution failed{via}", dns=True) from None
    except (OSError, ssl.SSLError) as exc:
        raise ConnectFailed(f"connection failed: {type(exc).__name__}{via}") from None


async def _take_over(
    transport: asyncio.Transport,
    protocol: asyncio.Protocol,
    host: str,
    tls: ssl.SSLContext | None,
    loop: asyncio.AbstractEventLoop,
) -> None:
    """Give an open tunnel to `protocol`, after a TLS handshake with `host` under `tls`."""
    try:
        if tls is not None:
            secure = await loop.start_tls(transport, protocol, tls, server_hostname=host)
            if secure is None:  # pragma: no cover - only for a loop without TLS
                raise ConnectFailed("TLS is not available on this event loop")
            protocol.connection_made(secure)
        else:
            transport.set_protocol(protocol)
            protocol.connection_made(transport)
    except BaseException:
        transport.abort()
        raise


async def dial(
    host: str, port: int, resolve: Resolve | None, loop: asyncio.AbstractEventLoop
) -> socket.socket:
    """A TCP socket connected to one of `host`'s addresses (happy eyeballs)."""
    return await _first_connected(await _addresses(host, port, resolve, loop), loop)


async def _addresses(
    host: str, port: int, resolve: Resolve | None, loop: asyncio.AbstractEventLoop
) -> list[tuple[int, SockAddr]]:
    """Every address of `host` (through the `resolve` hook when set), in RFC 8305 order."""
    names: Sequence[str] = (host,)
    if resolve is not None:
        try:
            found = await resolve(host, port)
        except OSError:
            raise ConnectFailed("DNS resolution failed", dns=True) from None
        names = (found,) if isinstance(found, str) else found
    addresses: list[tuple[int, SockAddr]] = []
    for name in names:
        addresses.extend(await _lookup(name, port, loop))
    if not addresses:
        raise ConnectFailed("DNS resolution found no address", dns=True)
    return interleaved(addresses)


async def _lookup(
    name: str, port: int, loop: asyncio.AbstractEventLoop
) -> list[tuple[int, SockAddr]]:
    """`name`'s TCP addresses: an IP literal as it is, a name through getaddrinfo."""
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        infos = await loop.getaddrinfo(name, port, type=socket.SOCK_STREAM)
        return [(int(family), tuple(sockaddr)) for family, _, _, _, sockaddr in infos]
    if address.version == 6:
        return [(socket.AF_INET6, (name, port, 0, 0))]
    return [(socket.AF_INET, (name, port))]


def interleaved(addresses: Iterable[tuple[int, SockAddr]]) -> list[tuple[int, SockAddr]]:
    """Unique addresses in RFC 8305 order: families alternating, the first address's first."""
    by_family: dict[int, list[tuple[int, SockAddr]]] = {}
    seen: set[tuple[int, SockAddr]] = set()
    for address in addresses:
        if address not in seen:
            seen.add(address)
            by_family.setdefault(address[0], []).append(address)
    lists = list(by_family.values())
    return [a for i in range(max(map(len, lists), default=0)) for a in _nth_of(lists, i)]


def _nth_of(lists: list[list[tuple[int, SockAddr]]], i: int) -> list[tuple[int, SockAddr]]:
    return [items[i] for items in lists if i < len(items)]


async def _connected_socket(
    family: int, address: SockAddr, loop: asyncio.AbstractEventLoop
) -> socket.socket:
    """A TCP socket connected to `address`; closed again if that fails or is cancelled."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await loop.sock_connect(sock, address)
    except BaseException:
        sock.close()
        raise
    return sock


async def _first_connected(
    addresses: list[tuple[int, SockAddr]], loop: asyncio.AbstractEventLoop
) -> socket.socket:
    """Happy eyeballs (RFC 8305): try `addresses` in order, each attempt starting when the one
    before fails or after `_HAPPY_EYEBALLS_DELAY_S`; the first to connect wins, the rest are
    cancelled (their sockets closed). If all fail, the first failure is raised."""
    attempts: list[asyncio.Task[socket.socket]] = []
    pending: set[asyncio.Task[socket.socket]] = set()
    errors: list[BaseException] = []
    queue = iter(addresses)
    winner: socket.socket | None = None
    try:
        while winner is None:
            address = next(queue, None)
            if address is not None:
                attempt = loop.create_task(_connected_socket(*address, loop))
                attempts.append(attempt)
                pending.add(attempt)
            elif not pending:
                raise errors[0] if errors else OSError("no address to connect to")
            delay = _HAPPY_EYEBALLS_DELAY_S if address is not None else None
            done, pending = await asyncio.wait(
                pending, timeout=delay, return_when=asyncio.FIRST_COMPLETED
            )
            for attempt in attempts:
                if attempt in done and (error := attempt.exception()) is not None:
                    errors.append(error)
                elif attempt in done and winner is None:
                    winner = attempt.result()
        return winner
    finally:
        _close_losers(attempts, winner)


def _close_losers(
    attempts: list[asyncio.Task[socket.socket]], winner: socket.socket | None
) -> None:
    """Cancel the attempts still running (each closes its socket) and close the sockets of
    any that connected besides the winner."""
    for attempt in attempts:
        if not attempt.done():
            attempt.cancel()
        elif (
            not attempt.cancelled()
            and attempt.exception() is None
            and attempt.result() is not winner
        ):
            attempt.result().close()
