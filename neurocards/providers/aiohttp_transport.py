"""An httpx transport on aiohttp's connector.

httpx's own pool does per-request bookkeeping that grows with the number of pooled connections;
with 1,000 jobs polling KIE it dominated the bot's CPU (bench/). aiohttp's connector (already
installed for aiogram) does the same job in O(1). Timeouts and connection errors are mapped to
httpx's exceptions so the KIE client's error handling is unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import httpx


class _Stream(httpx.AsyncByteStream):
    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.content.iter_chunked(1 << 16):
                yield chunk
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise httpx.ReadError(str(exc)) from None

    async def aclose(self) -> None:
        self._resp.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    def __init__(self, limit: int = 100, timeout_s: float = 60.0) -> None:
        self._limit = limit
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout_s, sock_read=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def _get(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._limit, keepalive_timeout=30),
                timeout=self._timeout, auto_decompress=True)
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        try:
            resp = await self._get().request(
                request.method, str(request.url), headers=list(request.headers.multi_items()),
                data=body or None, allow_redirects=False)
        # Whether the request may have reached the server matters to the caller (a paid task may
        # exist), so "never connected" and "connected, then no answer" stay different exceptions.
        except aiohttp.ConnectionTimeoutError:
            raise httpx.ConnectTimeout("connect timed out", request=request) from None
        except aiohttp.ClientConnectorError as exc:  # refused, DNS, TLS handshake, proxy connect
            raise httpx.ConnectError(str(exc), request=request) from None
        except TimeoutError:
            raise httpx.ReadTimeout("timed out waiting for the answer", request=request) from None
        except aiohttp.ClientError as exc:  # reset or closed after the request was written
            raise httpx.ReadError(f"{type(exc).__name__}: {exc}", request=request) from None
        headers = [(k, v) for k, v in resp.raw_headers]
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers
                   if k.lower() not in (b"content-encoding", b"transfer-encoding")]
        return httpx.Response(resp.status, headers=headers, stream=_Stream(resp), request=request)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
