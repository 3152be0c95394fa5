"""The aiogram HTTP sessions the bot talks to the Bot API with: direct, or through the proxy pool."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any, cast

import aiohttp
import aiohttp_socks
from aiogram.__meta__ import __version__ as aiogram_version
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.exceptions import TelegramNetworkError
from aiogram.methods.base import TelegramType
from aiohttp import FormData
from aiohttp.hdrs import USER_AGENT
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.payload import BytesPayload

from neurocards.proxies import NoProxyAvailable, Proxy, ProxyPool, failure_text

if TYPE_CHECKING:
    from aiogram import Bot
    from aiogram.methods import TelegramMethod
    from aiogram.types import InputFile


class JsonBodySession(AiohttpSession):
    """Sends a call's parameters as one JSON body instead of a urlencoded form (the Bot API takes
    both; uploads still go as multipart). Percent-encoding runs in pure Python byte by byte, so a
    Russian text with a keyboard cost ~0.2 ms per call, about a tenth of the bot's CPU per update
    (bench/); json.dumps does the same in C. Values are exactly what aiogram would have put in the
    form: strings, with keyboards and other objects JSON-encoded, and empty values left out."""

    def build_form_data(self, bot: Bot, method: TelegramMethod[Any]) -> FormData:
        files: dict[str, InputFile] = {}
        fields: dict[str, Any] = {}
        # prepare_value drops None at every depth anyway; dropping it in the dump (Rust) saves
        # ~90 Python calls per inline keyboard (every unset field of every button).
        for key, value in method.model_dump(warnings=False, exclude_none=True).items():
            prepared = self.prepare_value(value, bot=bot, files=files)
            if prepared:
                fields[key] = prepared
        if files:
            return super().build_form_data(bot, method)
        body = json.dumps(fields, ensure_ascii=False).encode()
        # aiohttp's `data=` takes any payload; FormData is only what aiogram's signature names.
        return BytesPayload(body, content_type="application/json")  # type: ignore[return-value]


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
                raise TelegramNetworkError(method=method, message=failure_text(proxy, exc)) from exc
            except TimeoutError as exc:
                raise TelegramNetworkError(method=method, message="Request timeout error") from exc
            except aiohttp.ClientError as exc:
                raise TelegramNetworkError(method=method, message=failure_text(proxy, exc)) from exc
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
                raise aiohttp.ClientConnectionError(failure_text(proxy, exc)) from exc
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
