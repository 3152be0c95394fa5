"""Outbound proxies: `proxies.txt` parsing, a round-robin pool with cool-down, and adapters that
make httpx (KIE, OpenAI) and aiogram (Telegram) rotate through it. Credentials stay in
`Proxy.url`/`.password`; logs, metrics and exception messages only ever get `Proxy.label`."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncGenerator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, cast
from urllib.parse import quote, unquote, urlsplit

import aiohttp
import aiohttp_socks
import httpx
import python_socks
from aiogram.__meta__ import __version__ as aiogram_version
from aiogram.exceptions import TelegramNetworkError
from aiogram.methods.base import TelegramType
from aiohttp.hdrs import USER_AGENT
from aiohttp.http import SERVER_SOFTWARE
from httpx._multipart import MultipartStream
from httpx_socks import AsyncProxyTransport
from python_socks import ProxyType

from neurocards.bot.session import JsonBodySession

if TYPE_CHECKING:
    from aiogram import Bot
    from aiogram.methods import TelegramMethod

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


def _failure_text(proxy: Proxy | None, exc: BaseException) -> str:
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
    raise kind(_failure_text(proxy, exc), request=request) from exc


# --- aiogram ----------------------------------------------------------------------------------

# Failures while connecting (to the proxy, through it, or the TLS handshake behind it): Telegram
# never saw the request, so a replay cannot send a message twice. Errors after the request went
# out (disconnects, read timeouts) are not retried or blamed on the proxy.
_AIOHTTP_CONNECT_ERRORS: tuple[type[BaseException], ...] = (
    # aiohttp < 3.10 raised ServerTimeoutError for sock_connect (we set no sock_read limit).
    aiohttp.ClientConnectorError, getattr(aiohttp, "ConnectionTimeoutError", aiohttp.ServerTimeoutError),
    aiohttp.ClientHttpProxyError,
    aiohttp_socks.ProxyError, aiohttp_socks.ProxyConnectionError, aiohttp_socks.ProxyTimeoutError,
)


class RotatingProxySession(JsonBodySession):
    """aiogram session with one aiohttp ClientSession per proxy (plus one for direct), created
    lazily; a connect-phase failure cools the proxy and replays the call once via the next."""

    def __init__(self, pool: ProxyPool, *, connect_timeout: float = 15.0, limit: int = 100,
                 **kwargs: Any) -> None:
        super().__init__(limit=limit, **kwargs)
        self._pool = pool
        self._connect_timeout = connect_timeout
        self._sessions: dict[Proxy | None, aiohttp.ClientSession] = {}

    async def _session_for(self, proxy: Proxy | None) -> aiohttp.ClientSession:
        session = self._sessions.get(proxy)
        if session is None or session.closed:
            connector: aiohttp.TCPConnector
            if proxy is None:
                connector = aiohttp.TCPConnector(**self._connector_init)
            else:
                connector = aiohttp_socks.ProxyConnector(
                    host=proxy.host, port=proxy.port, proxy_type=proxy.proxy_type,
                    username=proxy.username, password=proxy.password, rdns=proxy.rdns,
                    proxy_ssl=proxy.proxy_ssl, **self._connector_init)
            session = aiohttp.ClientSession(
                connector=connector, headers={USER_AGENT: f"{SERVER_SOFTWARE} aiogram/{aiogram_version}"})
            self._sessions[proxy] = session
        return session

    async def create_session(self) -> aiohttp.ClientSession:
        """Base-class contract (used by `async with session`): a session for the next proxy."""
        return await self._session_for(self._pool.next())

    def _client_timeout(self, timeout: float | None) -> aiohttp.ClientTimeout:
        total = self.timeout if timeout is None else timeout
        # A black-holed proxy must fail over, not eat the whole (long-poll sized) timeout.
        return aiohttp.ClientTimeout(total=total, sock_connect=min(total, self._connect_timeout))

    async def make_request(self, bot: Bot, method: TelegramMethod[TelegramType],
                           timeout: int | None = None) -> TelegramType:  # noqa: ASYNC109
        url = self.api.api_url(token=bot.token, method=method.__api_method__)
        for attempt in (1, 2):
            try:
                proxy = self._pool.next()
            except NoProxyAvailable as exc:
                raise TelegramNetworkError(method=method, message=str(exc)) from exc
            session = await self._session_for(proxy)
            # Form data is single-use in aiohttp, so every attempt builds its own.
            form = self.build_form_data(bot=bot, method=method)
            try:
                async with session.post(url, data=form,
                                        timeout=self._client_timeout(timeout)) as resp:
                    raw_result = await resp.text()
            except _AIOHTTP_CONNECT_ERRORS as exc:
                self._pool.mark_failed(proxy, exc)
                if proxy is not None and attempt == 1:
                    continue
                raise TelegramNetworkError(method=method, message=_failure_text(proxy, exc)) from exc
            except TimeoutError as exc:
                raise TelegramNetworkError(method=method, message="Request timeout error") from exc
            except aiohttp.ClientError as exc:
                raise TelegramNetworkError(method=method, message=_failure_text(proxy, exc)) from exc
            self._pool.mark_ok(proxy)
            response = self.check_response(bot=bot, method=method, status_code=resp.status,
                                           content=raw_result)
            return cast(TelegramType, response.result)
        raise AssertionError("unreachable")  # pragma: no cover

    async def stream_content(self, url: str, headers: dict[str, Any] | None = None,
                             timeout: int = 30,  # noqa: ASYNC109 (aiogram's signature)
                             chunk_size: int = 65536, raise_for_status: bool = True,
                             ) -> AsyncGenerator[bytes, None]:
        """Downloads (bot.download): fail over like make_request, before the first byte only."""
        for attempt in (1, 2):
            try:
                proxy = self._pool.next()
            except NoProxyAvailable as exc:
                raise aiohttp.ClientConnectionError(str(exc)) from exc
            session = await self._session_for(proxy)
            try:
                resp = await session.get(url, timeout=self._client_timeout(timeout),
                                         headers=headers or {}, raise_for_status=raise_for_status)
            except _AIOHTTP_CONNECT_ERRORS as exc:
                self._pool.mark_failed(proxy, exc)
                if proxy is not None and attempt == 1:
                    continue
                raise aiohttp.ClientConnectionError(_failure_text(proxy, exc)) from exc
            self._pool.mark_ok(proxy)
            async with resp:
                async for chunk in resp.content.iter_chunked(chunk_size):
                    yield chunk
            return

    async def close(self) -> None:
        sessions, self._sessions = [s for s in self._sessions.values() if not s.closed], {}
        for session in sessions:
            await session.close()
        if sessions:  # AiohttpSession.close's grace period for SSL shutdown, once for all
            await asyncio.sleep(0.25)
