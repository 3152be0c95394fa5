"""KIE.ai video provider: upload a photo, create an image-to-video task, poll it, download it.

Facts about the API (paths, envelopes, limits) are in docs/kie-api-notes.md. The
two things that shape this module most:

* KIE reports most errors as HTTP 200 with `{"code": 4xx/5xx, "msg": ...}` in the body, so
  every response goes through `_envelope`, which turns both HTTP and body errors into one
  `ProviderError` (kind API, http_status, numeric code, KIE's text).
* KIE drops, rather than queues, requests over its limits (20 new tasks per 10 s per account,
  10 status queries per second per key), so the client paces itself with `aiolimiter`.

API keys never leave this module: they are referred to by `key_id` (a hash prefix), every
message that could echo one is scrubbed, and the key is sent only to KIE's own hosts.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import mimetypes
import os
import re
import ssl
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from aiolimiter import AsyncLimiter

from neurocards.config import KieConfig
from neurocards.providers.base import (
    BeforeSend,
    ErrorKind,
    ProviderError,
    SubmittedTask,
    TaskStatus,
    VideoRequest,
)
from neurocards.providers.kie_models import PayloadError, get_adapter

log = logging.getLogger("neurocards.kie")

# Cloudflare in front of KIE answers odd User-Agents with 403 "error code: 1010".
USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
)
UPLOAD_PATH = "neurocards"  # KIE folder for our photos (no leading/trailing slash, per doc)
MSG_MAX = 500
SNIPPET_MAX = 160
_WRITE_CHUNK = 1 << 20  # download bytes are written to disk in 1 MiB batches off the event loop
_READ_BODY = httpx.ByteStream(b"")  # stands in for the stream of a response whose body is read


def key_id_for(key: str) -> str:
    """Stable, non-secret name of an API key (for the DB, logs, metrics)."""
    return hashlib.sha256(key.encode()).hexdigest()[:10]


@dataclass
class _Key:
    secret: str = field(repr=False)
    key_id: str
    account: str
    poll_limiter: AsyncLimiter = field(repr=False)
    disabled_until: float = 0.0  # monotonic; billing trouble (401/402/433)
    disabled_reason: str = ""
    cooldown_until: float = 0.0  # monotonic; rate limiting (429)
    requests: int = 0
    errors: int = 0

    def state(self, now: float) -> str:
        if self.disabled_until > now:
            return "disabled"
        return "cooling" if self.cooldown_until > now else "active"


def _pacer(limit: int, period_s: float) -> AsyncLimiter:
    # aiolimiter is a leaky bucket: AsyncLimiter(20, 10) lets 20 through at once and then 2/s,
    # i.e. up to ~39 in a sliding 10 s window, which KIE would answer with 429. One request
    # per period/(limit-1) instead keeps every window at <= limit even when network jitter
    # bunches two requests together (one slot of head-room), at ~95 % of the allowed rate.
    return AsyncLimiter(1, period_s / max(limit - 1, 1))


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle costs tens of ms; build it once per process, not per client.
    return httpx.create_ssl_context()


def _snippet(text: str) -> str:
    text = re.sub(r"<[^>]*>", " ", text)  # Cloudflare pages are HTML; keep the words only
    return " ".join(text.split())[:SNIPPET_MAX]


def _code(value: Any) -> int | str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = str(value).strip()
    return int(text) if text.lstrip("-").isdigit() else (text or None)


def _safe_url(url: str) -> str:
    # Result/upload URLs may carry signed query strings; logs keep host and path only.
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


class KieProvider:
    """`VideoProvider` for KIE.ai. One instance per process; it owns one HTTP connection pool."""

    name = "kie"

    def __init__(
        self,
        config: KieConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        proxy: str | None = None,
        accounts: Mapping[str, str] | None = None,
        create_limit: int = 20,
        create_period_s: float = 10.0,
        poll_limit: int = 9,  # KIE allows 10/s per key; paced at ~8/s so a busy loop's bunching stays under
        poll_period_s: float = 1.0,
        billing_cooldown_s: float = 3600.0,
        max_connections: int = 1000,
    ) -> None:
        self._config = config
        self._base = config.base_url.rstrip("/")
        self._upload_base = config.upload_base_url.rstrip("/")
        self._billing_cooldown_s = billing_cooldown_s
        accounts = accounts or {}
        self._keys: list[_Key] = []
        for secret in dict.fromkeys(k.get_secret_value() for k in config.api_keys):  # de-duplicate, keep order
            kid = key_id_for(secret)
            # `accounts` may be keyed by the key itself or by its key_id.
            account = accounts.get(secret) or accounts.get(kid) or "default"
            self._keys.append(_Key(secret, kid, account, _pacer(poll_limit, poll_period_s)))
        self._by_id = {k.key_id: k for k in self._keys}
        # KIE counts new tasks per account, so keys of one account share one limiter.
        self._create_limiters = {k.account: _pacer(create_limit, create_period_s) for k in self._keys}
        # Paid tasks rotate on their own counters (accounts in turn, then keys within the account),
        # so free calls such as uploads cannot skew which account pays for the next task.
        self._accounts = list(dict.fromkeys(k.account for k in self._keys))
        self._account_rr = 0
        self._key_rr: dict[str, int] = dict.fromkeys(self._accounts, 0)
        self._free_rr = 0
        # Longest first, so a key that contains another key is scrubbed whole.
        self._secrets = sorted((k.secret for k in self._keys), key=len, reverse=True)
        self._http = self._make_client(transport, proxy, max_connections)

    def _make_client(self, transport: httpx.AsyncBaseTransport | None, proxy: str | None,
                     max_connections: int) -> httpx.AsyncClient:
        # ~1000 tasks in flight only ever hold a connection briefly (polls are paced, downloads
        # are bounded by the engine), so a large cap mainly avoids pool-timeout stalls.
        limits = httpx.Limits(max_connections=max_connections,
                              max_keepalive_connections=min(100, max_connections), keepalive_expiry=30)
        kwargs: dict[str, Any] = {
            "timeout": httpx.Timeout(self._config.http_timeout_s),
            "headers": {"User-Agent": USER_AGENT, "Accept": "application/json, */*"},
            "limits": limits,
            "verify": _ssl_context(),
        }
        if transport is None and proxy and proxy.startswith("socks"):
            # httpx needs the optional `socksio` for SOCKS; httpx-socks is a declared dependency.
            from httpx_socks import AsyncProxyTransport

            transport = AsyncProxyTransport.from_url(proxy, limits=limits, verify=_ssl_context())
        elif transport is None and proxy:
            kwargs["proxy"] = proxy
        if transport is None and not proxy:
            from neurocards.providers.aiohttp_transport import AiohttpTransport

            transport = AiohttpTransport(limit=100, timeout_s=self._config.http_timeout_s)
        return httpx.AsyncClient(transport=transport, **kwargs)

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- keys ------------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return re.sub(r"(?i)bearer\s+[^\s\"',;]+", "Bearer ***", text)

    def _next_key(self) -> _Key:
        """Round robin over usable keys for free calls (uploads, balance)."""
        now = time.monotonic()
        n = len(self._keys)
        for i in range(n):
            key = self._keys[(self._free_rr + i) % n]
            if key.state(now) == "active":
                self._free_rr = (self._free_rr + i + 1) % n
                return key
        raise self._no_key(now)

    def _next_task_key(self) -> _Key:
        """The key that pays for the next task: accounts in turn, keys in turn within each."""
        now = time.monotonic()
        n = len(self._accounts)
        for i in range(n):
            account = self._accounts[(self._account_rr + i) % n]
            keys = [k for k in self._keys if k.account == account]
            start = self._key_rr[account]
            for j in range(len(keys)):
                key = keys[(start + j) % len(keys)]
                if key.state(now) == "active":
                    self._account_rr = (self._account_rr + i + 1) % n
                    self._key_rr[account] = (start + j + 1) % len(keys)
                    return key
        raise self._no_key(now)

    def _no_key(self, now: float) -> ProviderError:
        if any(k.state(now) == "cooling" for k in self._keys):
            # Only rate-limited, not broke: code 429 so the engine backs off instead of refunding.
            return ProviderError("all KIE API keys are cooling down after rate limiting",
                                 kind=ErrorKind.API, code=429)
        return ProviderError("no usable KIE API key", kind=ErrorKind.API, code=402)

    def _siblings(self, key: _Key, whole_account: bool) -> list[_Key]:
        return [k for k in self._keys if k.account == key.account] if whole_account else [key]

    def disable_key(self, key_id: str, reason: str, *, seconds: float | None = None,
                    whole_account: bool = False) -> bool:
        """Stop creating tasks with a key (billing: 401/402/433) for `seconds` (default 1 h),
        so a topped-up account comes back on its own. `whole_account=True` fits 402: credits
        belong to the account, not the key. Returns False for an unknown key_id."""
        key = self._by_id.get(key_id)
        if key is None:
            log.warning("kie disable_key: unknown key=%s", key_id)
            return False
        span = self._billing_cooldown_s if seconds is None else seconds
        reason = self._redact(reason)[:200]
        for k in self._siblings(key, whole_account):
            k.disabled_until = time.monotonic() + span
            k.disabled_reason = reason
            log.warning("kie key disabled key=%s account=%s for=%.0fs reason=%s",
                        k.key_id, k.account, span, reason)
        return True

    def enable_key(self, key_id: str) -> bool:
        key = self._by_id.get(key_id)
        if key is None:
            return False
        key.disabled_until = key.cooldown_until = 0.0
        key.disabled_reason = ""
        log.info("kie key enabled key=%s", key_id)
        return True

    def cool_down_key(self, key_id: str, seconds: float, *, whole_account: bool = True) -> bool:
        """Pause new tasks on a key after a 429. KIE limits new tasks per account, so by
        default every key of that account pauses too."""
        key = self._by_id.get(key_id)
        if key is None:
            log.warning("kie cool_down_key: unknown key=%s", key_id)
            return False
        until = time.monotonic() + seconds
        for k in self._siblings(key, whole_account):
            k.cooldown_until = max(k.cooldown_until, until)
            log.info("kie key cooling down key=%s for=%.1fs", k.key_id, seconds)
        return True

    def available_keys(self) -> int:
        """Keys that can still pay. A key cooling down after a 429 counts: it is only paused,
        and the engine uses this number to decide between "try the next key" and "alert"."""
        now = time.monotonic()
        return sum(k.state(now) != "disabled" for k in self._keys)

    def key_states(self) -> list[dict[str, Any]]:
        """For metrics/admin. `cooldown_until` is wall-clock epoch seconds (None when active)."""
        now, wall = time.monotonic(), time.time()
        out: list[dict[str, Any]] = []
        for k in self._keys:
            state = k.state(now)
            until = {"disabled": k.disabled_until, "cooling": k.cooldown_until}.get(state)
            out.append({
                "key_id": k.key_id, "account": k.account, "state": state,
                "cooldown_until": None if until is None else wall + (until - now),
                "reason": k.disabled_reason if state == "disabled" else "",
                "requests": k.requests, "errors": k.errors,
            })
        return out

    # --- HTTP plumbing ------------------------------------------------------------------------

    def _fail(self, op: str, kind: ErrorKind, message: str, *, key: _Key | None = None,
              http_status: int | None = None, code: int | str | None = None,
              ctx: str = "") -> ProviderError:
        if key is not None:
            key.errors += 1
        err = ProviderError(self._redact(message)[:MSG_MAX], kind=kind, http_status=http_status,
                            code=code, key_id=key.key_id if key else None)
        log.warning("kie %s failed%s key=%s %s", op, ctx, err.key_id, err)
        return err

    async def _call(self, op: str, method: str, url: str, key: _Key, *, ctx: str = "",
                    **kwargs: Any) -> dict[str, Any]:
        """One authenticated request; `ctx` (e.g. " task=...") only goes into the log line."""
        key.requests += 1
        headers = {"Authorization": f"Bearer {key.secret}"}
        try:
            resp = await self._http.request(method, url, headers=headers, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ProxyError,
                httpx.UnsupportedProtocol) as exc:  # nothing was sent: safe to repeat
            raise self._fail(op, ErrorKind.CONNECT, f"{op}: {type(exc).__name__}: {exc}",
                             key=key, ctx=ctx) from None
        except httpx.TimeoutException as exc:
            raise self._fail(op, ErrorKind.TIMEOUT, f"{op}: timed out ({type(exc).__name__})",
                             key=key, ctx=ctx) from None
        except httpx.HTTPError as exc:  # connect/read errors, resets, protocol errors
            raise self._fail(op, ErrorKind.NETWORK, f"{op}: {type(exc).__name__}: {exc}",
                             key=key, ctx=ctx) from None
        # httpx links a response and its stream both ways. The body is read by now, so unlinking
        # lets reference counting free both at once: otherwise every poll left ~40 objects to the
        # cyclic collector, whose passes then paused the bot for 10-50 ms (bench/, 100 polls/s).
        resp.stream = _READ_BODY
        return self._envelope(op, resp, key, ctx)

    def _envelope(self, op: str, resp: httpx.Response, key: _Key, ctx: str) -> dict[str, Any]:
        status = resp.status_code
        try:
            body = resp.json()
        except ValueError:
            body = None
        code = msg = None
        if isinstance(body, dict):
            code = _code(body.get("code"))
            raw_msg = body.get("msg") or body.get("message")  # the doc shows both spellings
            msg = str(raw_msg) if raw_msg else None
        if not 200 <= status < 300:
            # Includes Cloudflare's HTML 403 and gateway 5xx pages.
            text = msg or f"HTTP {status} from KIE: {_snippet(resp.text) or '(empty body)'}"
            raise self._fail(op, ErrorKind.API, text, key=key, http_status=status,
                             code=code if code not in (None, 200) else status, ctx=ctx)
        if not isinstance(body, dict):
            raise self._fail(op, ErrorKind.MALFORMED,
                             f"{op}: response is not a JSON object: {_snippet(resp.text)!r}",
                             key=key, http_status=status, ctx=ctx)
        if (code is not None and code != 200) or (code is None and body.get("success") is False):
            raise self._fail(op, ErrorKind.API, msg or f"KIE error code {code}", key=key,
                             http_status=status, code=code, ctx=ctx)
        return body

    def _malformed(self, op: str, what: str, body: Any, key: _Key, ctx: str = "") -> ProviderError:
        return self._fail(op, ErrorKind.MALFORMED, f"{op}: {what}: {_snippet(str(body))!r}", key=key,
                          http_status=200, ctx=ctx)

    # --- VideoProvider ------------------------------------------------------------------------

    async def upload_image(self, data: bytes, filename: str) -> str:
        key = self._next_key()
        # KIE overwrites files of the same name (with cache delay), so every upload is unique.
        suffix = Path(filename).suffix.lower()
        suffix = suffix if re.fullmatch(r"\.[a-z0-9]{1,5}", suffix) else ".jpg"
        name = f"{uuid.uuid4().hex}{suffix}"
        mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
        body = await self._call("upload", "POST", f"{self._upload_base}/api/file-stream-upload", key,
                                files={"file": (name, data, mime)},
                                data={"uploadPath": UPLOAD_PATH, "fileName": name})
        info = body.get("data")
        # The doc promises downloadUrl; older examples show fileUrl.
        url = (info.get("downloadUrl") or info.get("fileUrl")) if isinstance(info, dict) else None
        if not isinstance(url, str) or not url:
            raise self._malformed("upload", "no data.downloadUrl", body, key)
        log.info("kie upload ok key=%s bytes=%d url=%s", key.key_id, len(data), _safe_url(url))
        return url

    def output_aspect(self, model: str, aspect: str) -> str:
        return get_adapter(model).output_aspect(aspect)

    async def submit(self, request: VideoRequest, before_send: BeforeSend | None = None) -> SubmittedTask:
        adapter = get_adapter(request.model)
        body = adapter.build_body(request.model, request)
        key = self._next_task_key()
        await self._create_limiters[key.account].acquire()
        if before_send is not None:  # after the pacing wait: from here on a task may exist
            await before_send(key.key_id)
        payload = await self._call("submit", "POST", self._base + adapter.create_path, key,
                                   ctx=f" model={request.model}", json=body)
        data = payload.get("data")
        task_id = data.get("taskId") if isinstance(data, dict) else None
        if not isinstance(task_id, str) or not task_id:
            raise self._malformed("submit", "no data.taskId", payload, key, f" model={request.model}")
        log.info("kie submit ok task=%s model=%s key=%s", task_id, request.model, key.key_id)
        return SubmittedTask(task_id=task_id, key_id=key.key_id)

    def _poll_key(self, key_id: str | None) -> _Key:
        # Use the creating key even if it is disabled for billing: reading a task costs nothing
        # and the task belongs to that key's account. A key removed from the config falls back.
        key = self._by_id.get(key_id or "")
        if key is not None:
            return key
        try:
            return self._next_key()
        except ProviderError:
            if not self._keys:
                raise
            return self._keys[0]

    async def poll(self, task_id: str, model: str, key_id: str | None) -> TaskStatus:
        adapter = get_adapter(model)
        key = self._poll_key(key_id)
        await key.poll_limiter.acquire()
        ctx = f" task={task_id}"
        payload = await self._call("poll", "GET", self._base + adapter.status_path, key, ctx=ctx,
                                   params={"taskId": task_id})
        data = payload.get("data")
        if not isinstance(data, dict):
            raise self._malformed("poll", "no data object", payload, key, ctx)
        try:
            status = adapter.parse_status(data)
        except PayloadError as exc:
            raise self._malformed("poll", str(exc), data, key, ctx) from None
        level = logging.DEBUG if status.state == "pending" else logging.INFO
        log.log(level, "kie poll task=%s key=%s state=%s fail_code=%s", task_id, key.key_id,
                status.state, status.fail_code)
        return status

    async def download(self, url: str, dest: Path, max_bytes: int) -> int:
        part = dest.with_suffix(".part")
        where = _safe_url(url)
        size = 0
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            # No Authorization header: result files live on third-party CDNs.
            async with self._http.stream("GET", url, follow_redirects=True) as resp:
                if not 200 <= resp.status_code < 300:
                    raise self._fail("download", ErrorKind.DOWNLOAD,
                                     f"download: HTTP {resp.status_code} for {where}",
                                     http_status=resp.status_code)
                declared = resp.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise self._fail("download", ErrorKind.DOWNLOAD,
                                     f"download: file is {declared} bytes, limit {max_bytes}")
                fh = await asyncio.to_thread(open, part, "wb")
                try:
                    buf = bytearray()
                    async for chunk in resp.aiter_bytes():
                        size += len(chunk)
                        if size > max_bytes:
                            raise self._fail("download", ErrorKind.DOWNLOAD,
                                             f"download: file exceeds limit of {max_bytes} bytes")
                        buf += chunk
                        if len(buf) >= _WRITE_CHUNK:
                            await asyncio.to_thread(fh.write, bytes(buf))
                            buf.clear()
                    await asyncio.to_thread(fh.write, bytes(buf))
                finally:
                    await asyncio.to_thread(fh.close)
            if size == 0:
                raise self._fail("download", ErrorKind.DOWNLOAD, f"download: empty file at {where}")
            os.replace(part, dest)
        except ProviderError:
            part.unlink(missing_ok=True)
            raise
        except (httpx.HTTPError, OSError) as exc:
            part.unlink(missing_ok=True)
            raise self._fail("download", ErrorKind.DOWNLOAD,
                             f"download: {type(exc).__name__}: {exc} ({where})") from None
        except BaseException:  # cancellation: leave no half file behind
            part.unlink(missing_ok=True)
            raise
        log.info("kie download ok bytes=%d url=%s", size, where)
        return size

    async def get_credits(self, key_id: str | None = None) -> float:
        """Account balance in KIE credits. Works for disabled keys too (to see a top-up)."""
        if key_id is not None:
            key = self._by_id.get(key_id)
            if key is None:
                raise ValueError(f"unknown KIE key_id {key_id!r}")
        else:
            key = self._poll_key(None)
        payload = await self._call("credits", "GET", f"{self._base}/api/v1/chat/credit", key)
        value = payload.get("data")  # a bare number per the doc
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise self._malformed("credits", "data is not a number", payload, key)
        try:
            return float(value)
        except ValueError:
            raise self._malformed("credits", "data is not a number", payload, key) from None
