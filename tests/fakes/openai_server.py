"""A local stand-in for the OpenAI Chat Completions API, for tests over real HTTP.

Only `POST /v1/chat/completions` is served, with the body shape the real API returns (id,
object, created, model, choices[0].message, usage) and errors in OpenAI's JSON shape
(`{"error": {"message", "type", "param", "code"}}`). Every request is recorded so tests can
count GPT calls and check the model, the messages and the Authorization header. The official
`openai` SDK talks to it with `base_url=fake.url + "/v1"`.

Knobs: `reply` (text, or a function of the messages), `fail_next(status)` / `error_status`
(500, 401, 429, ...), `delay_s` (a slow answer, for timeout tests), `malformed` (a body that
is not JSON), `refusal` (a refusal instead of content), `finish_reason`, `api_key` (when set,
any other Bearer key gets the real 401), `key_errors` (a status for every request with a key).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

_DEFAULT: Any = object()  # "use the status's usual error code"

DEFAULT_REPLY = (
    "Slow 360-degree turntable shot of the product on a seamless light-grey backdrop, soft "
    "softbox lighting, gentle reflections, steady medium framing, crisp focus; the product "
    "stays exactly as in the photo, no people, no faces, no text."
)

# The messages the real API sends for these statuses (the 401 one masks the key like OpenAI does).
ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key",
          "Incorrect API key provided: {masked}. You can find your API key at "
          "https://platform.openai.com/account/api-keys."),
    403: ("invalid_request_error", "unsupported_country_region_territory",
          "Country, region, or territory not supported"),
    429: ("requests", "rate_limit_exceeded",
          "Rate limit reached for gpt-4o-mini in organization org-test on requests per min (RPM): "
          "Limit 3, Used 3, Requested 1. Please try again in 20s."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    503: ("server_error", None, "The engine is currently overloaded, please try again later"),
}


@dataclass
class ChatRequest:
    model: str
    messages: list[dict[str, Any]]
    authorization: str
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)

    @property
    def user_text(self) -> str:
        return "\n".join(str(m.get("content", "")) for m in self.messages if m.get("role") == "user")

    @property
    def system_text(self) -> str:
        return "\n".join(str(m.get("content", "")) for m in self.messages if m.get("role") == "system")


class FakeOpenAI:
    def __init__(self, *, api_key: str | None = None) -> None:
        self.api_key = api_key  # None: any Bearer key is accepted
        self.reply: str | Callable[[list[dict[str, Any]]], str] = DEFAULT_REPLY
        self.error_status: int | None = None  # every request fails with this status while set
        self.delay_s: float = 0.0
        self.malformed: bool = False
        self.refusal: str | None = None
        self.finish_reason: str = "stop"
        self.key_errors: dict[str, int] = {}  # key -> status every request with that key gets
        self.requests: list[ChatRequest] = []
        self.url = ""
        self._fail_next: deque[int] = deque()
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        # A short shutdown: a handler stuck in `delay_s` must not hold up teardown.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeOpenAI:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- knobs -------------------------------------------------------------------------------

    def fail_next(self, status: int, times: int = 1) -> None:
        self._fail_next.extend([status] * times)

    @property
    def count(self) -> int:
        return len(self.requests)

    # --- the endpoint ------------------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            return self._error(400, "We could not parse the JSON body of your request.")
        auth = request.headers.get("Authorization", "")
        self.requests.append(ChatRequest(model=str(body.get("model", "")), messages=list(body.get("messages", [])),
                                         authorization=auth, body=body, headers=dict(request.headers)))
        if self.delay_s:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.delay_s)
        key = auth.removeprefix("Bearer ").strip()
        if not key:
            return self._error(401, "You didn't provide an API key.", code=None)
        if self.api_key is not None and key != self.api_key:
            return self._error(401, key=key)
        status = self._fail_next.popleft() if self._fail_next else self.error_status
        status = self.key_errors.get(key, status)
        if status is not None:
            return self._error(status, key=key)
        if not body.get("model") or not isinstance(body.get("messages"), list) or not body["messages"]:
            return self._error(400, "you must provide a model parameter and messages")
        if self.malformed:
            return web.Response(status=200, text='{"id": "chatcmpl-broken", "choices": [{"mess',
                                content_type="application/json")
        return web.json_response(self._completion(body), headers=self._headers())

    def _completion(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body["messages"]
        content = None if self.refusal is not None else (
            self.reply(messages) if callable(self.reply) else self.reply)
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
        completion_tokens = len((content or self.refusal or "").split())
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": f"{body['model']}-2024-07-18" if body["model"] == "gpt-4o-mini" else body["model"],
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": self.refusal,
                            "annotations": []},
                "logprobs": None,
                "finish_reason": self.finish_reason,
            }],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                              "accepted_prediction_tokens": 0,
                                              "rejected_prediction_tokens": 0},
            },
            "service_tier": "default",
            "system_fingerprint": "fp_test0000",
        }

    @staticmethod
    def _headers() -> dict[str, str]:
        return {"x-request-id": f"req_{uuid.uuid4().hex}", "openai-processing-ms": "42"}

    def _error(self, status: int, message: str | None = None, *, key: str = "",
               code: Any = _DEFAULT) -> web.Response:
        err_type, default_code, default_message = ERRORS.get(status, ("server_error", None, "Error."))
        masked = f"{key[:3]}{'*' * max(0, len(key) - 7)}{key[-4:]}" if len(key) > 7 else "***"
        payload = {"error": {
            "message": (message or default_message).replace("{masked}", masked),
            "type": err_type,
            "param": None,
            "code": default_code if code is _DEFAULT else code,
        }}
        headers = self._headers()
        if status == 429:
            headers["retry-after"] = "20"
        return web.json_response(payload, status=status, headers=headers)
