"""Receiving KIE.ai task callbacks (callBackUrl) inside the bot process.

Callbacks are an optimisation: KIE documents no retries or delivery guarantees
(docs/kie-api-notes.md §5), so polling stays the source of truth. The receiver
therefore only translates a POST into `on_status(task_id, status)`; the caller decides
whether the task is known and still open (idempotency by task id).

Two layers of protection: an unguessable path secret (the URL is all a stranger could
learn from us) and, when the operator enabled `webhookHmacKey` at kie.ai, the signature
headers. The signature covers only `taskId.timestamp`, not the body, so a captured
signature could be reused with an edited body for `max_age_s`; HTTPS and the path secret
keep it from being captured.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

from aiohttp import web

from neurocards.providers.base import TaskStatus
from neurocards.providers.connection_guard import ConnectionGuard
from neurocards.providers.kie_models import PayloadError, market_status, veo_status

log = logging.getLogger("neurocards.kie.callbacks")

ROUTE_PREFIX = "/kie/callback/"
MAX_BODY_BYTES = 256 * 1024  # a callback is a few KB; `param` echoes our prompt (<= 10,000 chars)
TS_HEADER = "X-Webhook-Timestamp"
SIG_HEADER = "X-Webhook-Signature"

# (task id, status from the body, (job id, attempt) named by the URL or None) -> accepted
OnStatus = Callable[[str, TaskStatus, tuple[int, int] | None], Awaitable[bool]]


def new_path_secret() -> str:
    """A fresh secret for config. It must stay stable across restarts: in-flight tasks
    carry the old URL, and a changed secret turns their callbacks into 404s."""
    return secrets.token_urlsafe(24)


def callback_url(public_base: str, path_secret: str, job_id: int | None = None,
                 attempt: int | None = None) -> str:
    """`https://bot.example.com` (optionally with a reverse-proxy prefix) -> full callBackUrl.

    With a job and attempt the URL names them, so a task whose createTask answer was lost can
    still be matched to its job when KIE calls back (the hint is confirmed, never trusted)."""
    parts = urlsplit(public_base.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("kie.callback_url must be an http(s) URL like https://bot.example.com")
    if not path_secret:
        raise ValueError("callback path secret is empty")
    url = public_base.strip().rstrip("/") + ROUTE_PREFIX + quote(path_secret, safe="")
    if job_id is not None and attempt is not None:
        url += f"?job={int(job_id)}&attempt={int(attempt)}"
    return url


def callback_urls(public_base: str, path_secret: str) -> Callable[[int, int], str]:
    """(job id, attempt) -> callBackUrl, checked once now so a bad base URL fails at start-up."""
    callback_url(public_base, path_secret)
    return functools.partial(callback_url, public_base, path_secret)


def _hint(request: web.Request) -> tuple[int, int] | None:
    """(job id, attempt) named by the URL; None when absent or not two small integers."""
    job, attempt = request.query.get("job", ""), request.query.get("attempt", "")
    if not (job.isdigit() and attempt.isdigit() and len(job) < 16 and len(attempt) < 8):
        return None
    return int(job), int(attempt)


def _task_id(data: Mapping[str, Any]) -> str | None:
    # Market callbacks carry `taskId`; the webhook-verification doc reads `task_id`.
    for name in ("taskId", "task_id"):
        value = data.get(name)
        if isinstance(value, str) and 0 < len(value) <= 256:
            return value
    return None


def _veo_callback_as_record(code: Any, msg: Any, data: Mapping[str, Any]) -> dict[str, Any]:
    """The documented Veo callback has no `successFlag`: the envelope `code` is the outcome
    (200 ok; 400/422/500/501 failed), `msg` the error and `data.info` the result. Rewrite it
    into the record-info shape so `veo_status` stays the only Veo parser."""
    ok = code == 200
    return {"successFlag": 1 if ok else 2, "response": data.get("info"),
            "errorCode": None if ok else code, "errorMessage": None if ok else msg}


def parse_callback(body: Any) -> tuple[str, TaskStatus] | None:
    """(task id, status) of a Market or Veo callback body; None if we don't understand it."""
    if not isinstance(body, Mapping):
        return None
    data = body.get("data")
    if not isinstance(data, Mapping):
        return None
    task_id = _task_id(data)
    if task_id is None:
        return None
    try:
        if "state" in data:  # Market: same shape as recordInfo `data`
            return task_id, market_status(data)
        if "successFlag" in data:  # Veo, record-info shaped
            return task_id, veo_status(data)
        try:
            code = int(body.get("code"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None
        return task_id, veo_status(_veo_callback_as_record(code, body.get("msg"), data))
    except PayloadError:
        return None


def verify_signature(task_id: str, timestamp: str | None, signature: str | None,
                     hmac_key: str, *, now: float | None = None, max_age_s: float = 300) -> bool:
    """KIE's webhook signature: base64(HMAC-SHA256(f"{task_id}.{timestamp}", key)).
    Timestamps further than `max_age_s` from now (either way) are rejected as replays."""
    if not timestamp or not signature or not hmac_key:
        return False
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - ts) > max_age_s:
        return False
    digest = hmac.new(hmac_key.encode(), f"{task_id}.{timestamp}".encode(), hashlib.sha256)
    expected = base64.b64encode(digest.digest())
    # Bytes, because compare_digest refuses non-ASCII str, and a header may carry anything.
    return hmac.compare_digest(expected, signature.strip().encode("utf-8", "replace"))


def _reject(status: int, reason: str, request: web.Request) -> web.Response:
    # Never log request.path: it contains the secret.
    log.warning("kie callback rejected: %s (http %d) from %s", reason, status, request.remote)
    return web.json_response({"ok": False}, status=status)


class CallbackServer:
    """An aiohttp app serving `POST /kie/callback/{secret}` in the bot's event loop."""

    def __init__(self, host: str, port: int, path_secret: str, hmac_key: str | None,
                 on_status: OnStatus, *, max_age_s: float = 300, header_timeout_s: float = 10.0,
                 body_timeout_s: float = 10.0, max_connections: int = 100) -> None:
        if not path_secret or "/" in path_secret:
            raise ValueError("path_secret must be a non-empty string without '/'")
        self.host = host
        self.port = port
        self._secret = path_secret
        self._hmac_key = hmac_key or None  # "" in config means "not enabled"
        self._on_status = on_status
        self._max_age_s = max_age_s
        self._body_timeout_s = body_timeout_s
        self.guard = ConnectionGuard(header_timeout_s=header_timeout_s, max_connections=max_connections)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{ROUTE_PREFIX}{quote(self._secret, safe='')}"

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[self.guard.middleware])
        app.router.add_post(ROUTE_PREFIX + "{secret}", self._handle)
        # access_log=None: the default access log would write the secret path to disk.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0, keepalive_timeout=1.0)
        await self._runner.setup()
        self.port = await self.guard.listen(self._runner, self.host, self.port)  # resolves port 0
        log.info("kie callback server listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        await self.guard.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        if not hmac.compare_digest(request.match_info["secret"].encode(), self._secret.encode()):
            return _reject(404, "wrong path secret", request)  # same as any unknown path
        if self._hmac_key and not (request.headers.get(TS_HEADER)
                                   and request.headers.get(SIG_HEADER)):
            return _reject(401, "missing signature headers", request)
        try:
            async with asyncio.timeout(self._body_timeout_s):  # a body trickling in holds a socket
                raw = await request.read()  # raises 413 beyond client_max_size
            body = json.loads(raw)
        except TimeoutError:
            return _reject(408, "body not received in time", request)
        except web.HTTPRequestEntityTooLarge:
            return _reject(413, "body too large", request)
        except (ValueError, RecursionError):  # not JSON (incl. bad UTF-8), or nested to blow the stack
            return _reject(400, "body is not JSON", request)
        parsed = parse_callback(body)
        if parsed is None:
            return _reject(400, "not a callback we understand", request)
        task_id, status = parsed
        # Verify against the exact id we will act on, so a body with two ids can't slip through.
        if self._hmac_key and not verify_signature(
                task_id, request.headers.get(TS_HEADER), request.headers.get(SIG_HEADER),
                self._hmac_key, max_age_s=self._max_age_s):
            return _reject(401, f"bad or stale signature for task {task_id!r}", request)
        try:
            accepted = bool(await self._on_status(task_id, status, _hint(request)))
        except Exception:
            # A 5xx would only make KIE retry (if it retries at all); polling will catch up.
            log.exception("kie callback handler failed task=%r", task_id)
            accepted = False
        log.info("kie callback task=%r state=%s accepted=%s", task_id, status.state.value, accepted)
        return web.json_response({"ok": True, "accepted": accepted})
