"""A local stand-in for KIE.ai (api.kie.ai + the upload host), for tests over real HTTP.

It answers the way the real API does as far as docs/kie-api-notes.md knows: errors as
HTTP 200 with `{"code": ..., "msg": ...}`, `resultJson` as a JSON string, 422 with
"The page does not exist or is not published" for unknown models. Everything is recorded
so tests can assert on exact request bodies, and faults can be injected per endpoint.

Endpoint names (for `fail_next`, `count`, `calls`): upload, createTask, recordInfo,
veoGenerate, veoRecordInfo, credit, download (GET /files/<task_id>.mp4), uploaded (GET of an
uploaded photo).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

# ftyp + free + mdat boxes: enough for "looks like an MP4" checks; tests may set real bytes.
SMALL_MP4 = (
    b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
    + b"\x00\x00\x00\x08free"
    + b"\x00\x00\x00\x28mdat" + bytes(range(32))
)
VEO_MODELS = ("veo3", "veo3_fast", "veo3_lite")
NOT_PUBLISHED = "The page does not exist or is not published"
CANNOT_FETCH = "Failed to fetch the image. Kindly verify any access limits set by you or your service provider."

# Market model -> (image field, required input fields, {field: allowed values (typed)}).
MARKET_SPECS: dict[str, tuple[str, tuple[str, ...], dict[str, tuple[Any, ...]]]] = {
    "kling-2.6/image-to-video": ("image_urls", ("sound", "duration"), {"duration": ("5", "10")}),
    "sora-2-image-to-video": ("image_urls", (), {"aspect_ratio": ("portrait", "landscape"),
                                                 "n_frames": ("10", "15")}),
    "sora-2-pro-image-to-video": ("image_urls", (), {"aspect_ratio": ("portrait", "landscape"),
                                                     "n_frames": ("10", "15"), "size": ("standard", "high")}),
    "wan/2-6-image-to-video": ("image_urls", (), {"duration": ("5", "10", "15"),
                                                  "resolution": ("720p", "1080p")}),
    "hailuo/2-3-image-to-video-standard": ("image_url", (), {"duration": ("6", "10"),
                                                             "resolution": ("768P", "1080P")}),
    "hailuo/2-3-image-to-video-pro": ("image_url", (), {"duration": ("6", "10"),
                                                        "resolution": ("768P", "1080P")}),
    "bytedance/v1-pro-fast-image-to-video": ("image_url", (), {"duration": ("5", "10"),
                                                               "resolution": ("720p", "1080p")}),
    "bytedance/seedance-1.5-pro": ("input_urls", ("aspect_ratio", "duration"), {
        "aspect_ratio": ("1:1", "4:3", "3:4", "16:9", "9:16", "21:9"),
        "duration": tuple(range(4, 13))}),  # an integer; "8" is rejected
    "grok-imagine/image-to-video": ("image_urls", (), {"duration": ("6", "10"),
                                                       "mode": ("normal", "fun", "spicy")}),
}


@dataclass
class Fault:
    http_status: int | None = None
    code: int | None = None
    msg: str | None = None
    message_key: str = "msg"  # KIE's docs also show "message"
    malformed: bool = False
    body: str | None = None  # raw body, e.g. a Cloudflare HTML page
    content_type: str = "application/json"
    delay_s: float = 0.0
    drop_connection: bool = False
    times: int = 1

    @property
    def responds(self) -> bool:  # a pure delay lets the normal answer through afterwards
        return any((self.http_status, self.code is not None, self.malformed, self.body is not None))


@dataclass
class Call:
    endpoint: str
    method: str
    path: str
    key: str | None
    status: int  # 0 = connection dropped
    code: int | None  # the body `code`, when JSON
    at: float = 0.0  # time.monotonic() on arrival
    user_agent: str = ""


@dataclass
class Upload:
    data: bytes
    filename: str
    upload_path: str
    url: str
    key: str | None


@dataclass
class FakeTask:
    task_id: str
    family: str  # "market" | "veo"
    model: str
    body: dict[str, Any]
    input: dict[str, Any]  # Market `input`, or the whole Veo body
    key: str
    created_at: float  # time.monotonic()
    callback_url: str | None = None
    polls: int = 0
    fail_code: str | None = None
    fail_msg: str | None = None


Handler = Callable[[web.Request, str | None], Awaitable[tuple[int, Any]]]


IMAGE_MAX_BYTES = 10 * 1024 * 1024


class FakeKie:
    def __init__(self, keys: Iterable[str] = ("kie-test-key-0001",)) -> None:
        self.keys: set[str] = set(keys)
        self.credits: float = 100.0
        self.video_bytes: bytes = SMALL_MP4
        # creditsConsumed reported in recordInfo per final state ("success" / "fail"); absent if unset.
        self.credits_consumed: dict[str, float] = {}
        self.generation_delay_s: float = 0.0  # a task is pending at least this long...
        self.pending_polls: int = 0  # ...and for this many polls
        self.require_uploaded_images = True  # image URLs must come from our upload endpoint
        # Per endpoint: the request takes effect at once, its answer comes this much later (an
        # answer after the client's timeout is "KIE created the task, we never heard").
        self.answer_delay_s: dict[str, float] = {}
        # POST every finished task to its callBackUrl, retrying while the bot is down (KIE
        # documents no retries; this models a sender that retries for `callback_retry_for_s`).
        self.auto_callbacks = False
        self.callback_retry_for_s = 15.0
        self.callbacks_sent = 0
        self._background: set[asyncio.Task[None]] = set()
        self.extra_models: dict[str, str] = {}  # extra Market model -> image field
        self.uploads: list[Upload] = []
        self.tasks: dict[str, FakeTask] = {}
        self.calls: list[Call] = []
        self.base_url = ""
        self._faults: dict[str, deque[Fault]] = {}
        self._key_errors: dict[str, tuple[int, int, str]] = {}
        self._fail_next_tasks: deque[tuple[str, str]] = deque()
        self._issued_urls: set[str] = set()
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application(client_max_size=100 * 1024 * 1024)  # stream uploads take big files
        route = self._route
        app.router.add_post("/api/file-stream-upload", route("upload", self._upload))
        app.router.add_post("/api/v1/jobs/createTask", route("createTask", self._create_market))
        app.router.add_get("/api/v1/jobs/recordInfo", route("recordInfo", self._record("market")))
        app.router.add_post("/api/v1/veo/generate", route("veoGenerate", self._create_veo))
        app.router.add_get("/api/v1/veo/record-info", route("veoRecordInfo", self._record("veo")))
        app.router.add_get("/api/v1/chat/credit", route("credit", self._credit))
        app.router.add_get("/files/{name}", route("download", None))
        app.router.add_get("/uploads/{path:.+}", route("uploaded", None))
        # A short shutdown: handlers stuck in an injected delay must not hold up teardown.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        self._stopping.set()
        for task in list(self._background):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- knobs -------------------------------------------------------------------------------

    def fail_next(self, endpoint: str, *, times: int = 1, http_status: int | None = None,
                  code: int | None = None, msg: str | None = None, message_key: str = "msg",
                  malformed: bool = False, body: str | None = None,
                  content_type: str = "application/json", delay_s: float = 0.0,
                  drop_connection: bool = False) -> None:
        """Make the next `times` calls to `endpoint` misbehave. `code` alone answers HTTP 200
        with that body code (KIE style); `http_status` alone answers that status with a JSON
        envelope; `body` sends raw text (e.g. a Cloudflare page); `malformed` sends non-JSON;
        `delay_s` alone only delays the normal answer; `drop_connection` closes the socket."""
        self._faults.setdefault(endpoint, deque()).append(Fault(
            http_status, code, msg, message_key, malformed, body, content_type, delay_s,
            drop_connection, times))

    def fail_download(self, times: int = 1, http_status: int = 404) -> None:
        self.fail_next("download", times=times, http_status=http_status, body="not found",
                       content_type="text/plain")

    def fail_task(self, task_id: str = "next", fail_code: str = "500",
                  fail_msg: str = "Internal Error - Timeout") -> None:
        """End a task (or the next one created) in failure: Market `state: fail`,
        Veo `successFlag: 3` with errorCode/errorMessage."""
        if task_id == "next":
            self._fail_next_tasks.append((fail_code, fail_msg))
        else:
            self.tasks[task_id].fail_code, self.tasks[task_id].fail_msg = fail_code, fail_msg

    def set_key_error(self, key: str, code: int = 402,
                      msg: str = "The current credits are insufficient. Please top up.",
                      http_status: int = 200) -> None:
        """Every authenticated call with `key` gets this error until `clear_key_error`."""
        self._key_errors[key] = (http_status, code, msg)

    def clear_key_error(self, key: str) -> None:
        self._key_errors.pop(key, None)

    def add_model(self, model: str, image_field: str = "image_urls") -> None:
        self.extra_models[model] = image_field

    def count(self, endpoint: str) -> int:
        return sum(c.endpoint == endpoint for c in self.calls)

    def calls_to(self, endpoint: str) -> list[Call]:
        return [c for c in self.calls if c.endpoint == endpoint]

    def result_url(self, task_id: str) -> str:
        return f"{self.base_url}/files/{task_id}.mp4"

    # --- plumbing ----------------------------------------------------------------------------

    def _route(self, endpoint: str, handler: Handler | None) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            auth = request.headers.get("Authorization", "")
            key = auth[7:] if auth.startswith("Bearer ") else None
            call = Call(endpoint, request.method, request.path, key, 0, None, time.monotonic(),
                        request.headers.get("User-Agent", ""))
            self.calls.append(call)
            status, payload, raw, ctype = await self._answer(endpoint, request, key, handler)
            if raw is None and payload is None:  # dropped connection
                return web.Response()
            code = payload.get("code") if isinstance(payload, dict) else None
            call.status, call.code = status, code if isinstance(code, int) else None
            if raw is not None:
                return web.Response(status=status, body=raw, content_type=ctype)
            return web.json_response(payload, status=status)
        return wrapped

    async def _answer(self, endpoint: str, request: web.Request, key: str | None,
                      handler: Handler | None) -> tuple[int, Any, bytes | None, str]:
        fault = self._take_fault(endpoint)
        if fault is not None:
            if fault.delay_s:
                try:  # interruptible, so stop() is not held up by a sleeping handler
                    await asyncio.wait_for(self._stopping.wait(), fault.delay_s)
                except TimeoutError:
                    pass
            if fault.drop_connection:
                if request.transport is not None:
                    request.transport.close()
                return 0, None, None, ""
            if fault.responds:
                return self._fault_answer(fault)
        if handler is None:  # file endpoints: public, no key
            return self._file(request)
        if key not in self.keys:
            return 200, {"code": 401, "msg": "You do not have access permissions"}, None, ""
        if key in self._key_errors:
            status, code, msg = self._key_errors[key]
            return status, {"code": code, "msg": msg}, None, ""
        status, payload = await handler(request, key)
        delay = self.answer_delay_s.get(endpoint, 0.0)
        if delay:
            try:  # interruptible, so stop() is not held up
                await asyncio.wait_for(self._stopping.wait(), delay)
            except TimeoutError:
                pass
        return status, payload, None, ""

    def _take_fault(self, endpoint: str) -> Fault | None:
        queue = self._faults.get(endpoint)
        if not queue:
            return None
        fault = queue[0]
        fault.times -= 1
        if fault.times <= 0:
            queue.popleft()
        return fault

    @staticmethod
    def _fault_answer(f: Fault) -> tuple[int, Any, bytes | None, str]:
        status = f.http_status or 200
        if f.body is not None:
            return status, None, f.body.encode(), f.content_type
        if f.malformed:
            return status, None, b"<html><body>502 Bad Gateway</body></html>{", "text/html"
        code = f.code if f.code is not None else status
        return status, {"code": code, f.message_key: f.msg or f"fake error {code}", "data": None}, None, ""

    def _file(self, request: web.Request) -> tuple[int, Any, bytes | None, str]:
        if "name" in request.match_info:
            task_id = request.match_info["name"].removesuffix(".mp4")
            if task_id in self.tasks:
                return 200, None, self.video_bytes, "video/mp4"
        else:
            url = f"{self.base_url}/uploads/{request.match_info['path']}"
            for up in self.uploads:
                if up.url == url:
                    return 200, None, up.data, "image/jpeg"
        return 404, None, b"not found", "text/plain"

    @staticmethod
    def _bad(msg: str, code: int = 422) -> tuple[int, Any]:
        return 200, {"code": code, "msg": msg, "data": None}

    def _image_ok(self, url: Any) -> bool:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            return False
        if any(up.url == url and len(up.data) > IMAGE_MAX_BYTES for up in self.uploads):
            return False  # image_urls: "max 10.0 MB" (api-notes §1)
        return url in self._issued_urls or not self.require_uploaded_images

    def _new_task(self, family: str, model: str, body: dict[str, Any], inp: dict[str, Any],
                  key: str) -> tuple[int, Any]:
        task_id = f"{'veo_task' if family == 'veo' else 'task'}_{uuid.uuid4().hex[:16]}"
        task = FakeTask(task_id, family, model, body, inp, key, time.monotonic(),
                        body.get("callBackUrl"))
        if self._fail_next_tasks:
            task.fail_code, task.fail_msg = self._fail_next_tasks.popleft()
        self.tasks[task_id] = task
        if self.auto_callbacks and task.callback_url:
            job = asyncio.create_task(self._call_back_when_done(task))
            self._background.add(job)
            job.add_done_callback(self._background.discard)
        return 200, {"code": 200, "msg": "success", "data": {"taskId": task_id}}

    def _outcome(self, task: FakeTask, final: bool = False) -> str:
        ready = final or (time.monotonic() - task.created_at >= self.generation_delay_s
                          and task.polls > self.pending_polls)
        if not ready:
            return "generating"
        return "fail" if task.fail_code is not None or task.fail_msg is not None else "success"

    # --- endpoints ---------------------------------------------------------------------------

    async def _upload(self, request: web.Request, key: str | None) -> tuple[int, Any]:
        form = await request.post()
        file = form.get("file")
        upload_path = form.get("uploadPath")
        if not isinstance(file, web.FileField):
            return self._bad("Missing required parameter: file", 400)
        if not isinstance(upload_path, str) or not upload_path:
            return self._bad("Missing required parameter: uploadPath", 400)
        name = str(form.get("fileName") or file.filename or "upload.bin")
        data = file.file.read()
        url = f"{self.base_url}/uploads/{upload_path}/{name}"
        self.uploads.append(Upload(data, name, upload_path, url, key))
        self._issued_urls.add(url)
        return 200, {"success": True, "code": 200, "msg": "File uploaded successfully", "data": {
            "fileName": name, "filePath": f"{upload_path}/{name}", "downloadUrl": url,
            "fileSize": len(data), "mimeType": file.content_type,
            "uploadedAt": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())}}

    async def _json_body(self, request: web.Request) -> dict[str, Any] | None:
        try:
            body = await request.json()
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    async def _create_market(self, request: web.Request, key: str | None) -> tuple[int, Any]:
        body = await self._json_body(request)
        if body is None:
            return self._bad("request body is not valid JSON")
        model = body.get("model")
        if not model:
            return self._bad("model is required")
        if model in MARKET_SPECS:
            image_field, required, enums = MARKET_SPECS[model]
        elif model in self.extra_models:
            image_field, required, enums = self.extra_models[model], (), {}
        else:
            return self._bad(NOT_PUBLISHED)
        inp = body.get("input")
        if not isinstance(inp, dict):
            return self._bad("input is required")
        for name in ("prompt", image_field, *required):
            if inp.get(name) in (None, "", []):
                return self._bad(f"{name} is required")
        images = inp[image_field] if isinstance(inp[image_field], list) else [inp[image_field]]
        if image_field.endswith("_url") and not isinstance(inp[image_field], str):
            return self._bad(f"{image_field} must be a string")
        if not all(self._image_ok(u) for u in images):
            return self._bad(CANNOT_FETCH)
        for name, allowed in enums.items():
            value = inp.get(name)
            if value is not None and (isinstance(value, bool) or value not in allowed
                                      or type(value) is not type(allowed[0])):
                return self._bad(f"{name} is invalid: {value!r}")
        return self._new_task("market", model, body, inp, key or "")

    async def _create_veo(self, request: web.Request, key: str | None) -> tuple[int, Any]:
        body = await self._json_body(request)
        if body is None:
            return self._bad("request body is not valid JSON")
        if not body.get("prompt"):
            return self._bad("prompt is required")
        model = body.get("model", "veo3_fast")
        if model not in VEO_MODELS:
            return self._bad(f"model is invalid: {model!r}")
        gen_type = body.get("generationType")
        if gen_type not in (None, "TEXT_2_VIDEO", "FIRST_AND_LAST_FRAMES_2_VIDEO", "REFERENCE_2_VIDEO"):
            return self._bad("generationType is invalid")
        images = body.get("imageUrls") or []
        if gen_type and gen_type != "TEXT_2_VIDEO":
            if not isinstance(images, list) or not 1 <= len(images) <= 3:
                return self._bad("imageUrls is required")
            if not all(self._image_ok(u) for u in images):
                return self._bad(CANNOT_FETCH)
        if body.get("aspectRatio", "16:9") not in ("16:9", "9:16", "Auto"):
            return self._bad("aspectRatio is invalid")
        duration = body.get("duration", 8)
        if isinstance(duration, bool) or duration not in (4, 6, 8) or not isinstance(duration, int):
            return self._bad("duration is invalid")
        return self._new_task("veo", model, body, body, key or "")

    def _task_for_poll(self, request: web.Request) -> FakeTask | tuple[int, Any]:
        task_id = request.query.get("taskId", "")
        if not task_id:
            return self._bad("taskId is required")
        task = self.tasks.get(task_id)
        if task is None:
            return self._bad("recordInfo is null")
        task.polls += 1
        return task

    def market_data(self, task: FakeTask, final: bool = False) -> dict[str, Any]:
        state = self._outcome(task, final)
        ms = int(time.time() * 1000)
        return {
            "taskId": task.task_id, "model": task.model, "state": state,
            "param": json.dumps(task.body),
            "resultJson": json.dumps({"resultUrls": [self.result_url(task.task_id)]})
            if state == "success" else "",
            "failCode": (task.fail_code or "") if state == "fail" else "",
            "failMsg": (task.fail_msg or "") if state == "fail" else "",
            "costTime": 1000 if state == "success" else None,
            "completeTime": ms if state in ("success", "fail") else None,
            "createTime": ms, "updateTime": ms,
            "progress": 100 if state == "success" else 50,
            **self._consumed(state),
        }

    def veo_data(self, task: FakeTask, final: bool = False) -> dict[str, Any]:
        state = self._outcome(task, final)
        flag = {"generating": 0, "success": 1, "fail": 3}[state]
        code = task.fail_code
        return {
            "taskId": task.task_id, "paramJson": json.dumps(task.body),
            "response": {"taskId": task.task_id, "resultUrls": [self.result_url(task.task_id)],
                         "originUrls": [], "resolution": "720p"} if state == "success" else None,
            "successFlag": flag,
            "errorCode": (int(code) if code and code.isdigit() else code) if state == "fail" else None,
            "errorMessage": task.fail_msg if state == "fail" else "",
            "createTime": "2025-06-06 10:25:00", "completeTime": None, "fallbackFlag": False,
            **self._consumed(state),
        }

    def _consumed(self, state: str) -> dict[str, float]:
        return {"creditsConsumed": self.credits_consumed[state]} if state in self.credits_consumed else {}

    def _record(self, family: str) -> Handler:
        async def handler(request: web.Request, key: str | None) -> tuple[int, Any]:
            task = self._task_for_poll(request)
            if not isinstance(task, FakeTask):
                return task
            data = self.veo_data(task) if family == "veo" else self.market_data(task)
            return 200, {"code": 200, "msg": "success", "data": data}
        return handler

    async def _credit(self, request: web.Request, key: str | None) -> tuple[int, Any]:
        return 200, {"code": 200, "msg": "success", "data": self.credits}

    # --- callbacks ---------------------------------------------------------------------------

    async def _call_back_when_done(self, task: FakeTask) -> None:
        assert task.callback_url is not None
        await asyncio.sleep(max(0.0, task.created_at + self.generation_delay_s - time.monotonic()))
        give_up = time.monotonic() + self.callback_retry_for_s
        while time.monotonic() < give_up:
            try:
                if await self.send_callback(task.task_id, task.callback_url) < 500:
                    self.callbacks_sent += 1
                    return
            except (aiohttp.ClientError, OSError):
                pass
            await asyncio.sleep(0.5)

    async def send_callback(self, task_id: str, url: str, hmac_key: str | None = None) -> int:
        """POST the finished task (recordInfo-shaped body) to `url`; returns the HTTP status.
        With `hmac_key`, signs like KIE: base64(HMAC-SHA256(taskId + "." + timestamp))."""
        task = self.tasks[task_id]
        data = self.veo_data(task, True) if task.family == "veo" else self.market_data(task, True)
        ok = self._outcome(task, True) == "success"
        body = {"code": 200 if ok else 501, "msg": "success" if ok else "task failed", "data": data}
        headers = {}
        if hmac_key is not None:
            ts = str(int(time.time()))
            digest = hmac.new(hmac_key.encode(), f"{task_id}.{ts}".encode(), hashlib.sha256).digest()
            headers = {"X-Webhook-Timestamp": ts,
                       "X-Webhook-Signature": base64.b64encode(digest).decode()}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session, \
                session.post(url, json=body, headers=headers) as resp:
            await resp.read()
            return resp.status
