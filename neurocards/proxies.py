"""Outbound proxies: `proxies.txt` parsing, a round-robin pool with cool-down, and the httpx
transport that makes KIE and OpenAI rotate through it (Telegram's aiogram session over the same
pool is neurocards/bot/session.py). Credentials stay in `Proxy.url`/`.password`; logs, metrics
and exception messages only ever get `Proxy.label`."""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, cast
from urllib.parse import quote, unquote, urlsplit

import httpx
import python_socks
from httpx._multipart import MultipartStream
from httpx_socks import AsyncProxyTransport
from python_socks import ProxyType

log = logging.getLogger(__name__)

_SCHEMES: dict[str, ProxyType] = {
    "socks4": ProxyType.SOCKS4, "socks4a": ProxyType.SOCKS4, "socks5": ProxyType.SOCKS5,
    "socks5h": ProxyType.SOCKS5, "http": ProxyType.HTTP, "https": ProxyType.HTTP,
}
_FORMATS = "expected ip:port, ip:port:user:pass or scheme://[user:pass@]host:port"


class ProxyConfigError(ValueError):
    """A proxies file line could not be parsed. The message never contains the line itself."""


class NoProxyAvailable(RuntimeError):
    """Every proxy is cooling down and direct connections are not allowed."""


@dataclass(frozen=True, repr=False)
class Proxy:
    url: str  # with credentials: for clients only
    label: str  # host:port, safe for logs and metrics
    scheme: str
    host: str
    port: int
    username: str | None = None
    password: str | None = None

    def __repr__(self) -> str:
        return f"Proxy({self.scheme}://{self.label})"

    def __str__(self) -> str:
        return self.label

    @property
    def proxy_type(self) -> ProxyType:
        return _SCHEMES[self.scheme]

    @property
    def rdns(self) -> bool | None:
        # socks5 and socks5h both resolve at the proxy (python-socks' and aiogram's default):
        # in the networks this is for, the bot host's own DNS is often what is blocked.
        return True if self.scheme in ("socks5", "socks5h", "socks4a") else None

    @property
    def proxy_ssl(self) -> ssl.SSLContext | None:
        return ssl.create_default_context() if self.scheme == "https" else None


class _BadLine(ValueError):
    """Our own reasons; other ValueErrors (from urlsplit) may quote the line, so never shown."""


def _make_proxy(scheme: str, host: str, port: int | str | None, user: str | None,
                password: str | None) -> Proxy:
    if scheme not in _SCHEMES:
        raise _BadLine(f"unsupported scheme {scheme[:10]!r} (use {', '.join(_SCHEMES)})")
    if not host or any(c.isspace() for c in host):
        raise _BadLine("missing or invalid host")
    try:
        port = int(str(port))
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise _BadLine("missing or invalid port")
    if user == "" or (user and ":" in user and _SCHEMES[scheme] is ProxyType.HTTP):
        raise _BadLine("empty user name, or ':' in an HTTP proxy user name")
    if user is not None and password is None:
        password = ""  # python-socks wants both or neither
    hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    creds = f"{quote(user, safe='')}:{quote(password or '', safe='')}@" if user is not None else ""
    return Proxy(f"{scheme}://{creds}{hostport}", hostport, scheme, host, port, user, password)


def _parse_line(line: str, default_scheme: str) -> Proxy:
    if "://" not in line:
        fields = line.split(":", 3)  # the password may itself contain ':'
        if len(fields) not in (2, 4):
            raise _BadLine(_FORMATS)
        return _make_proxy(default_scheme, *fields[:2], *(fields[2:] or (None, None)))
    parts = urlsplit(line)
    port = parts.port if parts.netloc.rpartition(":")[2].isdigit() else None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise _BadLine("unexpected path, query or fragment (percent-encode them in credentials)")
    user = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return _make_proxy(parts.scheme.lower(), parts.hostname or "", port, user, password)


def parse_proxies(text: str, *, source: str = "proxies", default_scheme: str = "socks5") -> list[Proxy]:
    """One proxy per line; `#` comment lines and blank lines are skipped. Bare `ip:port[:user:pass]`
    lines use `default_scheme`. Duplicates are dropped, order is kept."""
    found: dict[str, Proxy] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            proxy = _parse_line(line, default_scheme)
        except ValueError as exc:
            # Our reason only: the line, and other errors' messages, may hold a password.
            reason = str(exc) if isinstance(exc, _BadLine) else "not a valid proxy"
            raise ProxyConfigError(f"{source}: line {number}: {reason}") from None
        found.setdefault(proxy.url, proxy)
    return list(found.values())


def load_proxies(path: Path, *, default_scheme: str = "socks5") -> list[Proxy]:
    """Proxies from a file; a missing file means no proxies (direct connections)."""
    if not path.exists():
        return []
    return parse_proxies(path.read_text(encoding="utf-8"), source=str(path),
                         default_scheme=default_scheme)


@dataclass
class _Health:
    cooldown_until: float | None = None
    failures: int = 0
    successes: int = 0


class ProxyPool:
    """Round robin over proxies that are not cooling down. A proxy whose cool-down has expired
    is tried again by normal traffic; if it fails again it goes straight back on cool-down."""

    def __init__(self, proxies: Iterable[Proxy], cooldown_s: float = 300.0,
                 fallback_direct: bool = True, clock: Callable[[], float] = time.monotonic) -> None:
        self._proxies = list(dict.fromkeys(proxies))
        self._health = {p: _Health() for p in self._proxies}
        self.cooldown_s = cooldown_s
        self.fallback_direct = fallback_direct
        self._clock = clock
        self._rr = 0
        self._direct_logged = False

    @property
    def proxies(self) -> list[Proxy]:
        return list(self._proxies)

    def __len__(self) -> int:
        return len(self._proxies)

    def _healthy(self, proxy: Proxy, now: float) -> bool:
        until = self._health[proxy].cooldown_until
        return until is None or now >= until

    def next(self) -> Proxy | None:
        """The next healthy proxy, or None for a direct connection."""
        if not self._proxies:
            return None
        now, n = self._clock(), len(self._proxies)
        for i in range(n):
            proxy = self._proxies[(self._rr + i) % n]
            if self._healthy(proxy, now):
                self._rr = (self._rr + i + 1) % n
                self._direct_logged = False
                return proxy
        back_in = min(cast(float, h.cooldown_until) for h in self._health.values()) - now
        if not self.fallback_direct:
            raise NoProxyAvailable(f"all {n} proxies are cooling down (first back in {back_in:.0f}s)"
                                   " and direct connections are disabled")
        if not self._direct_logged:  # once per outage, not once per request
            self._direct_logged = True
            log.warning("all %d proxies are cooling down; connecting directly for up to %.0fs",
                        n, back_in)
        return None

    def mark_failed(self, proxy: Proxy | None, error: BaseException | str | None = None) -> None:
        if proxy is None or proxy not in self._health:
            return
        health, now = self._health[proxy], self._clock()
        was_healthy = self._healthy(proxy, now)
        health.failures += 1
        health.cooldown_until = now + self.cooldown_s
        if was_healthy:  # concurrent failures of one proxy log one line
            # The exception type only: messages of some clients can embed URLs.
            reason = error if isinstance(error, str) else type(error).__name__ if error else "error"
            log.warning("proxy %s failed (%s); cooling down for %.0fs", proxy.label, reason,
                        self.cooldown_s)

    def mark_ok(self, proxy: Proxy | None) -> None:
        if proxy is None or proxy not in self._health:
            return
        health = self._health[proxy]
        health.successes += 1
        if health.cooldown_until is not None and self._clock() >= health.cooldown_until:
            health.cooldown_until = None
            log.info("proxy %s is working again", proxy.label)

    def states(self) -> list[dict[str, Any]]:
        now = self._clock()
        return [{"label": p.label, "healthy": self._healthy(p, now),
                 "cooldown_until": h.cooldown_until, "failures": h.failures,
                 "successes": h.successes} for p, h in self._health.items()]


def failure_text(proxy: Proxy | None, exc: BaseException) -> str:
    via = f"via proxy {proxy.label}" if proxy is not None else "direct"
    return f"{via}: {type(exc).__name__}: {exc}"


# --- httpx ------------------------------------------------------------------------------------

# Errors raised before the request reached the server: safe to replay via another proxy.
# httpx-socks lets python-socks errors through unmapped, so they are listed too.
_HTTPX_CONNECT_ERRORS: tuple[type[BaseException], ...] = (
    httpx.ConnectError, httpx.ConnectTimeout, httpx.ProxyError, python_socks.ProxyError,
    python_socks.ProxyConnectionError, python_socks.ProxyTimeoutError, ssl.SSLError,
)


def _replayable(request: httpx.Request) -> bool:
    # Bytes bodies re-iterate; multipart re-renders and seeks its files. Generators can't.
    return isinstance(request.stream, httpx.ByteStream | MultipartStream)


class RotatingProxyTransport(httpx.AsyncBaseTransport):
    """httpx transport sending each request through `pool.next()`, with one cached transport per
    proxy; a connect-phase failure cools the proxy and replays the request once via the next."""

    def __init__(self, pool: ProxyPool, *, verify: ssl.SSLContext | str | bool = True,
                 limits: httpx.Limits | None = None, http2: bool = False) -> None:
        self._pool = pool
        self._options: dict[str, Any] = {"verify": verify, "http2": http2,
                                         "limits": limits or httpx.Limits()}
        self._transports: dict[Proxy | None, httpx.AsyncBaseTransport] = {}

    def _transport(self, proxy: Proxy | None) -> httpx.AsyncBaseTransport:
        transport = self._transports.get(proxy)
        if transport is None:
            if proxy is None:
                transport = httpx.AsyncHTTPTransport(**self._options)
            else:
                transport = AsyncProxyTransport(
                    proxy_type=proxy.proxy_type, proxy_host=proxy.host, proxy_port=proxy.port,
                    username=proxy.username, password=proxy.password, rdns=proxy.rdns,
                    proxy_ssl=proxy.proxy_ssl, **self._options)
            self._transports[proxy] = transport
        return transport

    def _pick(self, request: httpx.Request) -> Proxy | None:
        try:
            return self._pool.next()
        except NoProxyAvailable as exc:
            raise httpx.ConnectError(str(exc), request=request) from exc

    async def _send(self, proxy: Proxy | None, request: httpx.Request) -> httpx.Response:
        response = await self._transport(proxy).handle_async_request(request)
        self._pool.mark_ok(proxy)
        return response

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        proxy = self._pick(request)
        try:
            return await self._send(proxy, request)
        except _HTTPX_CONNECT_ERRORS as exc:
            self._pool.mark_failed(proxy, exc)
            if proxy is None or not _replayable(request):
                _raise_as_httpx(exc, proxy, request)
        retry = self._pick(request)
        try:
            return await self._send(retry, request)
        except _HTTPX_CONNECT_ERRORS as exc:
            self._pool.mark_failed(retry, exc)
            _raise_as_httpx(exc, retry, request)

    async def aclose(self) -> None:
        transports, self._transports = list(self._transports.values()), {}
        for transport in transports:
            await transport.aclose()


def _raise_as_httpx(exc: BaseException, proxy: Proxy | None, request: httpx.Request) -> NoReturn:
    # Callers (KIE, OpenAI SDK) handle httpx errors; python-socks ones would escape them.
    if isinstance(exc, httpx.TransportError):
        raise exc
    kind = httpx.ConnectError if proxy is None else httpx.ProxyError
    raise kind(failure_text(proxy, exc), request=request) from exc
