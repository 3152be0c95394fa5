"""CallbackServer over real HTTP: FakeKie posts exactly what KIE would post."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from neurocards.config import KieConfig
from neurocards.providers.base import TaskState, TaskStatus, VideoRequest
from neurocards.providers.kie import KieProvider
from neurocards.providers.kie_callbacks import (
    CallbackServer,
    callback_url,
    parse_callback,
    verify_signature,
)
from tests.fakes.kie import FakeKie

KEY = "sk-test-SECRET-cb-1111111111111111"
SECRET = "path-SECRET-Zq8xv3"
HMAC_KEY = "whsec-HMAC-KEY-42"


class Recorder:
    """on_status with the caller's idempotency: a task is accepted once."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[str, TaskStatus]] = []
        self.fail = fail

    async def __call__(self, task_id: str, status: TaskStatus, hint: tuple[int, int] | None = None) -> bool:
        self.calls.append((task_id, status))
        if self.fail:
            raise RuntimeError("handler bug")
        return [t for t, _ in self.calls].count(task_id) == 1


@pytest.fixture
async def fake() -> AsyncIterator[FakeKie]:
    f = FakeKie(keys=(KEY,))
    await f.start()
    yield f
    await f.stop()


@pytest.fixture
async def kie(fake: FakeKie) -> AsyncIterator[KieProvider]:
    p = KieProvider(KieConfig(api_keys=(KEY,), base_url=fake.base_url, upload_base_url=fake.base_url,
                              http_timeout_s=2.0), create_limit=1000, poll_limit=1000)
    yield p
    await p.aclose()


ServerFactory = Callable[..., Awaitable[tuple[CallbackServer, Recorder]]]


@pytest.fixture
async def server() -> AsyncIterator[ServerFactory]:
    started: list[CallbackServer] = []

    async def make(hmac_key: str | None = None, fail: bool = False) -> tuple[CallbackServer, Recorder]:
        rec = Recorder(fail)
        srv = CallbackServer("127.0.0.1", 0, SECRET, hmac_key, rec)
        await srv.start()
        started.append(srv)
        return srv, rec

    yield make
    for srv in started:
        await srv.stop()


async def submit(kie: KieProvider, cb: str, model: str = "kling-2.6/image-to-video") -> str:
    url = await kie.upload_image(b"\xff\xd8jpeg", "p.jpg")
    task = await kie.submit(VideoRequest(prompt="Slow orbit", image_url=url, model=model,
                                         callback_url=cb))
    return task.task_id


def sign(task_id: str, ts: int, key: str = HMAC_KEY) -> dict[str, str]:
    digest = hmac.new(key.encode(), f"{task_id}.{ts}".encode(), hashlib.sha256).digest()
    return {"X-Webhook-Timestamp": str(ts), "X-Webhook-Signature": base64.b64encode(digest).decode()}


async def post(url: str, *, json: Any = None, content: bytes | None = None,
               headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with httpx.AsyncClient() as client:
        resp = await client.post(url, json=json, content=content, headers=headers)
    try:
        return resp.status_code, resp.json()
    except ValueError:
        return resp.status_code, None


def market_body(fake: FakeKie, task_id: str) -> dict[str, Any]:
    return {"code": 200, "msg": "success", "data": fake.market_data(fake.tasks[task_id], True)}


# --- delivery -----------------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["kling-2.6/image-to-video", "veo3_fast"])
async def test_success_callback(fake: FakeKie, kie: KieProvider, server: ServerFactory,
                                model: str) -> None:
    srv, rec = await server()
    task_id = await submit(kie, srv.url, model)
    assert fake.tasks[task_id].callback_url == srv.url
    assert await fake.send_callback(task_id, srv.url) == 200
    assert rec.calls == [(task_id, TaskStatus(TaskState.SUCCESS, (fake.result_url(task_id),),
                                              progress=100))]


@pytest.mark.parametrize("model", ["kling-2.6/image-to-video", "veo3_fast"])
async def test_failed_callback(fake: FakeKie, kie: KieProvider, server: ServerFactory,
                               model: str) -> None:
    srv, rec = await server()
    fake.fail_task("next", fail_code="400", fail_msg="Your prompt was flagged by Website")
    task_id = await submit(kie, srv.url, model)
    assert await fake.send_callback(task_id, srv.url) == 200
    [(got_id, status)] = rec.calls
    assert got_id == task_id and status.state is TaskState.FAILED
    assert (status.fail_code, status.fail_msg) == ("400", "Your prompt was flagged by Website")


async def test_wrong_secret_is_404(fake: FakeKie, kie: KieProvider, server: ServerFactory) -> None:
    srv, rec = await server()
    task_id = await submit(kie, srv.url)
    bad = srv.url.replace(SECRET, SECRET + "x")
    assert await fake.send_callback(task_id, bad) == 404
    assert await fake.send_callback(task_id, bad.rsplit("/", 1)[0]) == 404
    assert rec.calls == []


# --- signatures ---------------------------------------------------------------------------------

async def test_signed_callbacks(fake: FakeKie, kie: KieProvider, server: ServerFactory) -> None:
    srv, rec = await server(hmac_key=HMAC_KEY)
    task_id = await submit(kie, srv.url)
    assert await fake.send_callback(task_id, srv.url, hmac_key="forged-key") == 401
    assert await fake.send_callback(task_id, srv.url) == 401  # unsigned
    stale = sign(task_id, int(time.time()) - 301)
    assert (await post(srv.url, json=market_body(fake, task_id), headers=stale))[0] == 401
    # Signed for another task id: the signature binds the id we act on.
    other = sign("task_other", int(time.time()))
    assert (await post(srv.url, json=market_body(fake, task_id), headers=other))[0] == 401
    assert rec.calls == []
    assert await fake.send_callback(task_id, srv.url, hmac_key=HMAC_KEY) == 200
    assert [(t, s.state) for t, s in rec.calls] == [(task_id, TaskState.SUCCESS)]


async def test_replay_reaches_caller_which_decides(fake: FakeKie, kie: KieProvider,
                                                   server: ServerFactory) -> None:
    srv, rec = await server(hmac_key=HMAC_KEY)
    task_id = await submit(kie, srv.url)
    body, headers = market_body(fake, task_id), sign(task_id, int(time.time()))
    assert await post(srv.url, json=body, headers=headers) == (200, {"ok": True, "accepted": True})
    assert await post(srv.url, json=body, headers=headers) == (200, {"ok": True, "accepted": False})
    assert len(rec.calls) == 2


# --- bad input and handler failures -------------------------------------------------------------

async def test_bad_bodies(fake: FakeKie, kie: KieProvider, server: ServerFactory) -> None:
    srv, rec = await server()
    task_id = await submit(kie, srv.url)
    assert (await post(srv.url, content=b"{not json", headers={"Content-Type": "application/json"}))[0] == 400
    assert (await post(srv.url, content=b"\xff\xfe"))[0] == 400
    for body in ([1, 2], {"foo": 1}, {"code": 200, "data": {"state": "success"}},
                 {"code": 200, "data": {"taskId": task_id, "state": "success", "resultJson": "{"}}):
        assert (await post(srv.url, json=body))[0] == 400, body
    assert (await post(srv.url, content=b" " * (256 * 1024 + 1)))[0] == 413
    assert rec.calls == []


async def test_handler_exception_answers_200(fake: FakeKie, kie: KieProvider, server: ServerFactory,
                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    srv, rec = await server(hmac_key=HMAC_KEY, fail=True)
    task_id = await submit(kie, srv.url)
    body = market_body(fake, task_id)
    assert await post(srv.url, json=body, headers=sign(task_id, int(time.time()))) == \
        (200, {"ok": True, "accepted": False})
    assert len(rec.calls) == 1
    assert "handler failed" in caplog.text and task_id in caplog.text
    await fake.send_callback(task_id, srv.url.replace(SECRET, "nope"))
    # Only our records: the test's own httpx client logs the URL it posts to.
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name == "neurocards.kie.callbacks")
    assert "wrong path secret" in ours and SECRET not in ours and HMAC_KEY not in ours


# --- pure functions -----------------------------------------------------------------------------

def test_parse_documented_veo_callbacks() -> None:
    ok = {"code": 200, "msg": "Veo3.1 video generated successfully.",
          "data": {"taskId": "veo_1", "info": {"resultUrls": ["https://x/v.mp4"]}, "fallbackFlag": False}}
    assert parse_callback(ok) == ("veo_1", TaskStatus(TaskState.SUCCESS, ("https://x/v.mp4",), progress=100))
    bad = {"code": 400, "msg": "Only English prompts are supported at this time.",
           "data": {"task_id": "veo_2", "fallbackFlag": False}}
    assert parse_callback(bad) == ("veo_2", TaskStatus(
        TaskState.FAILED, fail_code="400", fail_msg="Only English prompts are supported at this time."))
    assert parse_callback({"code": 200, "data": {"taskId": "veo_3", "info": {}}}) is None
    assert parse_callback({"data": {"taskId": "veo_4"}}) is None
    assert parse_callback(None) is None


def test_verify_signature_and_url() -> None:
    headers = sign("t1", 1_000_000)
    ts, sig = headers["X-Webhook-Timestamp"], headers["X-Webhook-Signature"]
    assert verify_signature("t1", ts, sig, HMAC_KEY, now=1_000_100)
    assert not verify_signature("t1", ts, sig, HMAC_KEY, now=1_000_301)  # stale
    assert not verify_signature("t1", ts, sig, HMAC_KEY, now=999_600)  # from the future
    assert not verify_signature("t2", ts, sig, HMAC_KEY, now=1_000_000)
    assert not verify_signature("t1", ts, sig, "other", now=1_000_000)
    assert not verify_signature("t1", ts, "ünïcode", HMAC_KEY, now=1_000_000)
    assert not verify_signature("t1", None, sig, HMAC_KEY, now=1_000_000)
    assert not verify_signature("t1", "abc", sig, HMAC_KEY, now=1_000_000)
    assert callback_url("https://bot.example.com/", "s3") == "https://bot.example.com/kie/callback/s3"
    assert callback_url("https://h/prefix", "a b") == "https://h/prefix/kie/callback/a%20b"
    with pytest.raises(ValueError):
        callback_url("bot.example.com", "s3")
    with pytest.raises(ValueError):
        CallbackServer("127.0.0.1", 0, "", None, Recorder())
