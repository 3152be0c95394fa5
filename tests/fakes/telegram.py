"""A fake Telegram Bot API server for end-to-end tests of the bot.

It speaks real HTTP on 127.0.0.1 so the real aiogram ``Bot`` (pointed at it with
``TelegramAPIServer.from_base(fake.base_url)``) is exercised unchanged, and it
*rejects* what the real API rejects: every call is validated against aiogram's own
method models plus the semantic rules of the server (chat must exist, text limits,
HTML entities, keyboards, edits, callback ids, file ids, upload size, ...).

Typical use::

    fake = FakeTelegram()
    await fake.start()
    bot = fake.make_bot()
    user = fake.user(1001, first_name="Анна", username="anna")
    await user.send_text("/start")
    msg = await user.wait_for_message(lambda m: "Привет" in m.text)
    await user.click(msg, "🎬 Создать видео")
    ...
    fake.assert_no_rejections()
    await fake.stop()

Deliberate differences from Telegram: unknown parameters are rejected (the real API
ignores them, which hides typos); Markdown texts are not parsed; methods without a
fake behaviour answer ``true`` if they return bool and 501 otherwise (``true`` would
not even parse for them).
"""

# The test-facing wait helpers take plain ``timeout=`` seconds by design.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiohttp import web

from .telegram_format import validate_reply_markup
from .telegram_media import too_large
from .telegram_methods import MESSAGE_HANDLERS, Files, Handler, Params
from .telegram_methods_bot import BOT_HANDLERS
from .telegram_schema import (
    ApiError,
    find_method,
    prepare_params,
    read_request,
    validate_model,
)
from .telegram_state import (
    ApiCall,
    BotMessage,
    CallbackAnswer,
    Charge,
    Fault,
    FaultMode,
    Rejection,
    TelegramState,
    UserInfo,
    WaitTimeout,
)
from .telegram_user import FakeUser, Payment

__all__ = [
    "ApiCall",
    "BotMessage",
    "CallbackAnswer",
    "Charge",
    "FakeTelegram",
    "FakeUser",
    "FastCloseSession",
    "Fault",
    "Payment",
    "Rejection",
    "WaitTimeout",
]

T = TypeVar("T")
log = logging.getLogger(__name__)
HANDLERS: dict[str, Handler] = {**MESSAGE_HANDLERS, **BOT_HANDLERS}
DEFAULT_MAX_UPLOAD = 50 * 1024 * 1024


class FastCloseSession(AiohttpSession):
    """AiohttpSession without the 250 ms SSL-grace sleep on close (plain HTTP here)."""

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=lambda o: json.dumps(o, ensure_ascii=False))


class FakeTelegram:
    """Fake Bot API server plus the test-facing controls (users, faults, call log)."""

    def __init__(
        self,
        token: str = "123456:TEST-TOKEN",
        bot_username: str = "neurocards_test_bot",
        *,
        bot_name: str = "NeuroCards Test",
        max_upload_bytes: int = DEFAULT_MAX_UPLOAD,
    ) -> None:
        self.token = token
        self.state = TelegramState(token, bot_username, bot_name, max_upload_bytes)
        self._users: dict[int, FakeUser] = {}
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    # -- lifecycle -----------------------------------------------------------------
    async def start(self) -> None:
        app = web.Application(client_max_size=2 * self.state.max_upload_bytes + (1 << 20))
        app.router.add_route("*", "/bot{token}/{method}", self._handle_api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._handle_file)
        # handler_cancellation: a long poll whose client went away must stop at once,
        # or it would later "terminate" the next poller with a bogus 409.
        self._runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=0.5, access_log=None
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        self.state.closing = True
        self.state.changed()  # release pending long polls
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeTelegram:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` — the bot's ``telegram.api_base``."""
        if self._port is None:
            raise RuntimeError("FakeTelegram is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def api_server(self) -> TelegramAPIServer:
        return TelegramAPIServer.from_base(self.base_url)

    def make_bot(self, **kwargs: Any) -> Bot:
        """A real aiogram Bot talking to this server (close its session when done)."""
        return Bot(self.token, session=FastCloseSession(api=self.api_server), **kwargs)

    # -- scripted world ------------------------------------------------------------
    def user(
        self,
        user_id: int,
        first_name: str = "Test",
        *,
        last_name: str | None = None,
        username: str | None = None,
        language_code: str | None = "ru",
    ) -> FakeUser:
        """The user with this id (created on first call); a private chat with the bot."""
        if user_id not in self._users:
            info = UserInfo(user_id, first_name, last_name, username, language_code)
            self._users[user_id] = FakeUser(self.state, info)
        return self._users[user_id]

    def push_update(self, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Escape hatch: queue any raw update (``kind`` is the Update field name)."""
        return self.state.push_update(kind, payload)

    def serve_url(
        self, url: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> None:
        """Make send* with this HTTP URL succeed (the fake has no internet)."""
        self.state.url_contents[url] = (data, content_type)

    def file_bytes(self, file_id: str) -> bytes:
        return self.state.files[file_id].data

    @property
    def pending_updates(self) -> list[dict[str, Any]]:
        """Updates pushed but not yet confirmed by the bot's getUpdates offset."""
        return list(self.state.pending_updates)

    @property
    def charges(self) -> dict[str, Charge]:
        return self.state.charges

    @property
    def commands(self) -> dict[str, list[dict[str, Any]]]:
        """setMyCommands results keyed by ``"<scope json>|<language_code>"``."""
        return self.state.commands

    # -- call log --------------------------------------------------------------------
    @property
    def calls(self) -> list[ApiCall]:
        return self.state.calls

    def calls_of(self, method: str) -> list[ApiCall]:
        return [c for c in self.state.calls if c.method.lower() == method.lower()]

    def count(self, method: str, *, ok_only: bool = False) -> int:
        return sum(1 for c in self.calls_of(method) if not ok_only or c.status == 200)

    def last_call(self, method: str) -> ApiCall:
        calls = self.calls_of(method)
        if not calls:
            raise LookupError(f"{method} was never called")
        return calls[-1]

    @property
    def rejected(self) -> list[Rejection]:
        """Error answers caused by the bot (not by fail_next or a user's block())."""
        return self.state.rejected

    def forgive_repeated_edits(self) -> int:
        """Drop the "message is not modified" answers to editMessageText; returns how many there were.
        For tests that kill the bot: an edit Telegram applied just before the kill, which the bot
        had no time to record, is sent once more after the restart, and Telegram answers this."""
        kept = [r for r in self.state.rejected
                if not (r.method == "editMessageText" and "not modified" in r.description)]
        forgiven = len(self.state.rejected) - len(kept)
        self.state.rejected[:] = kept
        return forgiven

    def assert_no_rejections(self) -> None:
        if self.state.rejected:
            lines = "\n".join(f"  {r.method}: {r.status} {r.description}" for r in self.rejected)
            raise AssertionError(f"the bot made calls the Bot API rejects:\n{lines}")

    async def wait_until(self, predicate: Callable[[], T], timeout: float = 10.0) -> T:
        """Wait until ``predicate()`` is truthy (re-checked on every state change)."""
        return await self.state.wait_until(predicate, timeout, self._describe)

    def _describe(self) -> str:
        recent = [f"{c.method}->{c.status}" for c in self.calls[-8:]]
        return f"Recent calls: {recent}; rejected: {self.rejected}"

    # -- fault injection -----------------------------------------------------------
    def fail_next(
        self,
        method: str,
        status: int = 429,
        description: str | None = None,
        *,
        retry_after: int | None = None,
        times: int = 1,
        chat_id: int | None = None,
        mode: FaultMode = "error",
        delay: float = 0.0,
        process: bool = False,
    ) -> Fault:
        """Script a failure of the next ``times`` calls of ``method`` (optionally only
        for ``chat_id``).

        mode="error": answer ``status``/``description`` (429 carries retry_after,
        default 1). mode="drop": close the connection without an answer. mode="delay":
        answer normally but only after ``delay`` seconds (beyond the client timeout,
        the client gives up). ``process=True`` makes a drop/delay happen *after* the
        call took effect (message delivered, the bot just never learns it).
        """
        fault = Fault(
            method, status, description, retry_after, times, chat_id, mode, delay, process
        )
        self.state.faults.append(fault)
        return fault

    def _take_fault(self, method: str, params: Params) -> Fault | None:
        for fault in self.state.faults:
            if fault.matches(method, params):
                fault.times -= 1
                return fault
        return None

    # -- HTTP ------------------------------------------------------------------------
    async def _handle_api(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["method"]
        cls = find_method(name)
        call = ApiCall(method=cls.__api_method__ if cls else name, params={}, files={},
                       content_type=request.content_type)
        self.state.calls.append(call)
        try:
            if request.match_info["token"] != self.state.token:
                raise ApiError(401, "Unauthorized")
            if cls is None:
                raise ApiError(404, "Not Found")
            raw = await read_request(request, self.state.max_upload_bytes)
            call.params, call.files = raw.params, {k: f.data for k, f in raw.files.items()}
            if raw.too_large:
                raise too_large()
            params = prepare_params(cls, raw)
            call.params = params
            fault = self._take_fault(call.method, params)
            if fault is not None:
                return await self._inject(fault, request, call, cls, params, raw.files)
            return self._answer(call, await self._execute(cls, params, raw.files))
        except ApiError as error:
            return self._answer_error(call, error)
        except asyncio.CancelledError:
            call.status = None  # the client disconnected (e.g. a cancelled long poll)
            raise
        except Exception as exc:  # a bug in the fake must fail the test, not hang it
            log.exception("fake Telegram crashed on %s", call.method)
            return self._answer_error(
                call, ApiError(500, f"Internal Server Error: fake crashed: {exc!r}")
            )
        finally:
            self.state.changed()

    async def _execute(self, cls: Any, params: Params, files: Files) -> Any:
        method = cls.__api_method__
        if "reply_markup" in params:
            validate_reply_markup(params["reply_markup"], invoice=method == "sendInvoice")
        validate_model(cls, params, files)
        handler = HANDLERS.get(method.lower())
        if handler is not None:
            return await handler(self.state, params, files)
        if cls.__returning__ is bool:
            return True
        raise ApiError(501, f"Not Implemented: the fake has no behaviour for {method}")

    async def _inject(
        self,
        fault: Fault,
        request: web.Request,
        call: ApiCall,
        cls: Any,
        params: Params,
        files: Files,
    ) -> web.StreamResponse:
        call.injected = True
        if fault.mode == "error":
            return self._answer_error(call, fault.error())
        outcome: Any = None
        if fault.process:
            try:
                outcome = await self._execute(cls, params, files)
            except ApiError as error:
                outcome = error
        if fault.mode == "drop":
            if request.transport is not None:
                request.transport.abort()  # the client sees a broken connection
            call.status, call.description = None, "connection dropped by fail_next"
            return web.Response(status=500)  # never reaches the client
        await asyncio.sleep(fault.delay)
        if not fault.process:
            call.injected = False  # a merely slow call is still validated normally
            try:
                outcome = await self._execute(cls, params, files)
            except ApiError as error:
                outcome = error
        if isinstance(outcome, ApiError):
            return self._answer_error(call, outcome)
        return self._answer(call, outcome)

    def _answer(self, call: ApiCall, result: Any) -> web.Response:
        call.status, call.result = 200, result
        return _json({"ok": True, "result": result})

    def _answer_error(self, call: ApiCall, error: ApiError) -> web.Response:
        call.status, call.description = error.status, error.description
        if not call.injected and not error.expected:
            self.state.rejected.append(Rejection(call.method, error.status, error.description))
        return _json(error.payload(), status=error.status)

    async def _handle_file(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self.state.token:
            return _json(ApiError(401, "Unauthorized").payload(), status=401)
        record = self.state.files_by_path.get(request.match_info["path"])
        if record is None:
            return _json(ApiError(404, "Not Found").payload(), status=404)
        mime = record.meta.get("mime_type") or ("image/jpeg" if record.kind == "photo" else None)
        return web.Response(body=record.data, content_type=mime or "application/octet-stream")
