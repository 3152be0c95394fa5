"""KieProvider against FakeKie over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import gc
import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from neurocards.config import KieConfig
from neurocards.providers.base import ErrorKind, ProviderError, TaskState, VideoRequest
from neurocards.providers.kie import USER_AGENT, KieProvider, key_id_for
from neurocards.providers.kie_models import market_status
from tests.fakes.kie import NOT_PUBLISHED, SMALL_MP4, FakeKie

KEY1 = "sk-test-SECRET-one-1111111111111111"
KEY2 = "sk-test-SECRET-two-2222222222222222"
ID1, ID2 = key_id_for(KEY1), key_id_for(KEY2)
CREDITS_MSG = "The current credits are insufficient. Please top up."


@pytest.fixture
async def fake() -> AsyncIterator[FakeKie]:
    f = FakeKie(keys=(KEY1, KEY2))
    await f.start()
    yield f
    await f.stop()


def make(fake: FakeKie, keys: tuple[str, ...] = (KEY1,), *, http_timeout_s: float = 2.0,
         base_url: str | None = None, **kw: Any) -> KieProvider:
    cfg = KieConfig(api_keys=keys, base_url=base_url or fake.base_url,
                    upload_base_url=fake.base_url, http_timeout_s=http_timeout_s)
    # Limiters are tested on their own; elsewhere they must not slow the suite down.
    kw.setdefault("create_limit", 1000)
    kw.setdefault("create_period_s", 1.0)
    kw.setdefault("poll_limit", 1000)
    return KieProvider(cfg, **kw)


@pytest.fixture
async def kie(fake: FakeKie) -> AsyncIterator[KieProvider]:
    p = make(fake)
    yield p
    await p.aclose()


def req(url: str, model: str = "kling-2.6/image-to-video", **kw: Any) -> VideoRequest:
    return VideoRequest(prompt=kw.pop("prompt", "Slow orbit around the product"), image_url=url,
                        model=model, **kw)


async def raises(coro: Any) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        await coro
    return info.value


# --- happy paths -------------------------------------------------------------------------------

async def test_upload_returns_download_url(fake: FakeKie, kie: KieProvider) -> None:
    url = await kie.upload_image(b"\xff\xd8jpeg-bytes", "Photo.JPG")
    url2 = await kie.upload_image(b"other", "photo.jpg")
    up = fake.uploads[0]
    assert url == up.url and up.data == b"\xff\xd8jpeg-bytes" and up.upload_path == "neurocards"
    assert up.filename.endswith(".jpg") and up.filename != fake.uploads[1].filename and url2 != url
    assert up.key == KEY1
    assert fake.calls[0].user_agent == USER_AGENT


async def test_upload_fallbacks_and_errors(fake: FakeKie, kie: KieProvider) -> None:
    fake.fail_next("upload", body='{"code": 200, "data": {"fileUrl": "https://t.example/a.jpg"}}')
    assert await kie.upload_image(b"img", "a.jpg") == "https://t.example/a.jpg"
    fake.fail_next("upload", body='{"success": false, "msg": "Authentication failed"}')
    err = await raises(kie.upload_image(b"img", "a.jpg"))
    assert err.kind is ErrorKind.API and err.message == "Authentication failed"
    fake.fail_next("upload", body='{"code": 200, "msg": "ok", "data": {}}')
    assert (await raises(kie.upload_image(b"img", "a.jpg"))).kind is ErrorKind.MALFORMED


async def test_task_pending_until_generation_delay(fake: FakeKie, kie: KieProvider) -> None:
    fake.generation_delay_s = 0.15
    url = await kie.upload_image(b"img", "p.jpg")
    task = await kie.submit(req(url, "sora-2-image-to-video"))
    first = await kie.poll(task.task_id, "sora-2-image-to-video", task.key_id)
    assert first.state is TaskState.PENDING and first.progress == 50
    await asyncio.sleep(0.2)
    assert (await kie.poll(task.task_id, "sora-2-image-to-video", task.key_id)).state is TaskState.SUCCESS


async def test_polls_leave_no_garbage_cycles(fake: FakeKie, kie: KieProvider) -> None:
    """1,000 jobs poll KIE 100 times a second: each poll must be freed by reference counting, or
    the cyclic collector's passes pause the whole bot (bench/)."""
    url = await kie.upload_image(b"img", "p.jpg")
    task = await kie.submit(req(url, "veo3_fast"))
    await kie.poll(task.task_id, "veo3_fast", task.key_id)  # warm up connections and caches
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(20):
            await kie.poll(task.task_id, "veo3_fast", task.key_id)
        gc.collect()
        left = [o for o in gc.garbage if isinstance(o, httpx.Response)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert left == []


async def test_veo_submit_poll_download(fake: FakeKie, kie: KieProvider, tmp_path: Path) -> None:
    fake.pending_polls = 1
    url = await kie.upload_image(b"img", "p.png")
    task = await kie.submit(req(url, "veo3_fast", duration_s=5, callback_url="https://cb.example/k"))
    assert task.key_id == ID1
    assert fake.tasks[task.task_id].body == {
        "model": "veo3_fast", "prompt": "Slow orbit around the product", "imageUrls": [url],
        "generationType": "FIRST_AND_LAST_FRAMES_2_VIDEO", "aspectRatio": "9:16", "duration": 6,
        "enableTranslation": True, "callBackUrl": "https://cb.example/k"}
    assert (await kie.poll(task.task_id, "veo3_fast", task.key_id)).state is TaskState.PENDING
    status = await kie.poll(task.task_id, "veo3_fast", task.key_id)
    assert status.state is TaskState.SUCCESS
    assert status.result_urls == (fake.result_url(task.task_id),)
    dest = tmp_path / "out" / "v.mp4"
    assert await kie.download(status.result_urls[0], dest, 10_000) == len(SMALL_MP4)
    assert dest.read_bytes() == SMALL_MP4 and not dest.with_suffix(".part").exists()
    assert fake.count("veoGenerate") == 1 and fake.count("veoRecordInfo") == 2


async def test_market_submit_poll_download(fake: FakeKie, kie: KieProvider, tmp_path: Path) -> None:
    fake.video_bytes = bytes(range(256)) * 12_000  # ~3 MB: several write batches
    url = await kie.upload_image(b"img", "p.jpg")
    task = await kie.submit(req(url, duration_s=7))
    assert fake.tasks[task.task_id].body == {"model": "kling-2.6/image-to-video", "input": {
        "prompt": "Slow orbit around the product", "image_urls": [url], "duration": "5", "sound": False}}
    status = await kie.poll(task.task_id, "kling-2.6/image-to-video", task.key_id)
    assert status.state is TaskState.SUCCESS and status.progress == 100
    dest = tmp_path / "k.mp4"
    assert await kie.download(status.result_urls[0], dest, 10_000_000) == len(fake.video_bytes)
    assert dest.read_bytes() == fake.video_bytes


@pytest.mark.parametrize(("model", "duration", "extra", "expected"), [
    ("sora-2-image-to-video", 5, {}, {"image_urls": "URL", "aspect_ratio": "portrait", "n_frames": "10",
                                      "remove_watermark": True}),
    ("sora-2-pro-image-to-video", 15, {"size": "high"}, {"n_frames": "15", "size": "high"}),
    ("wan/2-6-image-to-video", 10, {"resolution": "1080p"}, {"duration": "10", "resolution": "1080p"}),
    ("hailuo/2-3-image-to-video-standard", 5, {}, {"image_url": "URL", "duration": "6", "resolution": "768P"}),
    ("hailuo/2-3-image-to-video-pro", 10, {}, {"image_url": "URL", "duration": "10"}),
    ("bytedance/v1-pro-fast-image-to-video", 5, {}, {"image_url": "URL", "duration": "5"}),
    ("bytedance/seedance-1.5-pro", 5, {}, {"input_urls": "URL", "duration": 4, "aspect_ratio": "9:16"}),
    ("bytedance/seedance-1.5-pro", 10, {}, {"duration": 12}),
    ("grok-imagine/image-to-video", 5, {}, {"image_urls": "URL", "duration": "6", "mode": "normal"}),
    ("kling-2.6/image-to-video", 9, {"sound": True}, {"duration": "10", "sound": True}),
])
async def test_market_bodies_are_accepted(fake: FakeKie, kie: KieProvider, model: str, duration: int,
                                          extra: dict[str, Any], expected: dict[str, Any]) -> None:
    url = await kie.upload_image(b"img", "p.jpg")
    task = await kie.submit(req(url, model, duration_s=duration, extra=extra))
    sent = fake.tasks[task.task_id].input
    for name, value in expected.items():
        if value == "URL":
            value = [url] if name.endswith("urls") else url
        assert sent[name] == value, name
    assert sent["prompt"] == "Slow orbit around the product"


async def test_prompt_is_cut_to_model_limit(fake: FakeKie, kie: KieProvider) -> None:
    url = await kie.upload_image(b"img", "p.jpg")
    task = await kie.submit(req(url, prompt="x" * 1500))
    assert len(fake.tasks[task.task_id].input["prompt"]) == 1000  # Kling 2.6 limit


async def test_unknown_model_goes_to_market_with_image_urls(fake: FakeKie, kie: KieProvider) -> None:
    url = await kie.upload_image(b"img", "p.jpg")
    err = await raises(kie.submit(req(url, "acme/new-i2v")))
    assert (err.kind, err.code, err.message) == (ErrorKind.API, 422, NOT_PUBLISHED)
    fake.add_model("acme/new-i2v")
    task = await kie.submit(req(url, "acme/new-i2v", extra={"seconds": 7}))
    assert fake.tasks[task.task_id].input == {"prompt": "Slow orbit around the product",
                                             "image_urls": [url], "seconds": 7}


async def test_image_not_uploaded_is_rejected(kie: KieProvider) -> None:
    err = await raises(kie.submit(req("https://elsewhere.example/p.jpg")))
    assert err.code == 422 and "Failed to fetch the image" in err.message


# --- errors ------------------------------------------------------------------------------------

CF_PAGE = "<html><head><title>Attention Required! | Cloudflare</title></head><body>error code: 1010</body></html>"


@pytest.mark.parametrize(("fault", "kind", "http_status", "code", "text"), [
    ({"http_status": 500}, ErrorKind.API, 500, 500, "fake error 500"),
    ({"http_status": 502, "body": "<html>Bad Gateway</html>", "content_type": "text/html"},
     ErrorKind.API, 502, 502, "Bad Gateway"),
    ({"http_status": 403, "body": CF_PAGE, "content_type": "text/html"}, ErrorKind.API, 403, 403, "1010"),
    ({"code": 402, "msg": CREDITS_MSG}, ErrorKind.API, 200, 402, CREDITS_MSG),
    ({"code": 401, "msg": "You do not have access permissions"}, ErrorKind.API, 200, 401, "access"),
    ({"code": 422, "msg": "prompt is required", "message_key": "message"}, ErrorKind.API, 200, 422,
     "prompt is required"),
    ({"code": 429, "msg": "Rate limited"}, ErrorKind.API, 200, 429, "Rate limited"),
    ({"code": 455, "msg": "Service Unavailable"}, ErrorKind.API, 200, 455, "Unavailable"),
    ({"code": 505, "msg": "Feature Disabled"}, ErrorKind.API, 200, 505, "Disabled"),
    ({"malformed": True}, ErrorKind.MALFORMED, 200, None, "502 Bad Gateway"),
    ({"body": '{"code": 200, "msg": "success", "data": {}}'}, ErrorKind.MALFORMED, 200, None, "taskId"),
    ({"body": '["not", "an", "object"]'}, ErrorKind.MALFORMED, 200, None, "not a JSON object"),
    ({"drop_connection": True}, ErrorKind.NETWORK, None, None, "submit"),
])
async def test_submit_errors(fake: FakeKie, kie: KieProvider, fault: dict[str, Any], kind: ErrorKind,
                             http_status: int | None, code: int | None, text: str) -> None:
    url = await kie.upload_image(b"img", "p.jpg")
    fake.fail_next("createTask", **fault)
    err = await raises(kie.submit(req(url)))
    assert (err.kind, err.http_status, err.code, err.key_id) == (kind, http_status, code, ID1)
    assert text in err.message and len(err.message) <= 500
    assert (await kie.submit(req(url))).task_id  # the fault was one-shot


async def test_timeout_and_connection_refused(fake: FakeKie) -> None:
    kie = make(fake, http_timeout_s=0.2)
    fake.fail_next("credit", delay_s=1.0)
    err = await raises(kie.get_credits())
    assert err.kind is ErrorKind.TIMEOUT and err.key_id == ID1
    await kie.aclose()
    dead = make(fake, base_url="http://127.0.0.1:9")  # nothing listens on the discard port
    err = await raises(dead.get_credits())
    assert err.kind is ErrorKind.CONNECT and not err.outcome_unknown  # surely never sent
    await dead.aclose()


async def test_create_task_knows_when_it_is_unsure(fake: FakeKie) -> None:
    kie = make(fake, http_timeout_s=0.3)
    url = await kie.upload_image(b"img", "p.jpg")
    fake.fail_next("createTask", delay_s=1.0)  # KIE creates the task, the answer comes too late
    err = await raises(kie.submit(req(url)))
    assert err.kind is ErrorKind.TIMEOUT and err.outcome_unknown and err.key_id == ID1
    fake.fail_next("createTask", drop_connection=True)  # reset after the request went out
    assert (await raises(kie.submit(req(url)))).outcome_unknown
    fake.fail_next("createTask", code=500, msg="Server Error")  # an answer: no task was created
    assert not (await raises(kie.submit(req(url)))).outcome_unknown
    await kie.aclose()


async def test_poll_errors(fake: FakeKie, kie: KieProvider) -> None:
    err = await raises(kie.poll("task_nope", "kling-2.6/image-to-video", ID1))
    assert (err.kind, err.code, err.message) == (ErrorKind.API, 422, "recordInfo is null")
    fake.fail_next("recordInfo", malformed=True)
    assert (await raises(kie.poll("t", "kling-2.6/image-to-video", ID1))).kind is ErrorKind.MALFORMED
    fake.fail_next("recordInfo", body='{"code":200,"data":{"state":"success","resultJson":""}}')
    err = await raises(kie.poll("t", "kling-2.6/image-to-video", ID1))
    assert err.kind is ErrorKind.MALFORMED and "resultUrls" in err.message
    fake.fail_next("veoRecordInfo", body='{"code":200,"msg":"success","data":{"taskId":"x"}}')
    assert (await raises(kie.poll("x", "veo3", ID1))).kind is ErrorKind.MALFORMED


@pytest.mark.parametrize(("model", "code", "msg"), [
    ("kling-2.6/image-to-video", "500", "Internal Error - Timeout"),
    ("veo3_fast", "400", "Your prompt was flagged by Website as violating content policies."),
])
async def test_failed_task_surfaces_fail_code(fake: FakeKie, kie: KieProvider, model: str, code: str,
                                              msg: str) -> None:
    url = await kie.upload_image(b"img", "p.jpg")
    fake.fail_task("next", fail_code=code, fail_msg=msg)
    task = await kie.submit(req(url, model))
    status = await kie.poll(task.task_id, model, task.key_id)
    assert (status.state, status.fail_code, status.fail_msg) == (TaskState.FAILED, code, msg)


async def test_download_failures(fake: FakeKie, kie: KieProvider, tmp_path: Path) -> None:
    url = await kie.upload_image(b"img", "p.jpg")
    task = await kie.submit(req(url))
    result = (await kie.poll(task.task_id, "kling-2.6/image-to-video", None)).result_urls[0]
    dest = tmp_path / "v.mp4"
    fake.fail_download()
    err = await raises(kie.download(result, dest, 10_000))
    assert (err.kind, err.http_status) == (ErrorKind.DOWNLOAD, 404)
    err = await raises(kie.download(result, dest, 10))  # Content-Length over the limit
    assert err.kind is ErrorKind.DOWNLOAD and "limit" in err.message
    # aiohttp's connector transparently retries once when a kept-alive connection drops: drop twice.
    fake.fail_next("download", drop_connection=True, times=2)
    assert (await raises(kie.download(result, dest, 10_000))).kind is ErrorKind.DOWNLOAD
    fake._faults.pop("download", None)  # whatever drop the retry did not consume
    assert not dest.exists() and not dest.with_suffix(".part").exists()
    assert await kie.download(result, dest, 10_000) == len(SMALL_MP4)


async def test_download_without_content_length_stops_at_limit(fake: FakeKie, tmp_path: Path) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"x" * 1000

    transport = httpx.MockTransport(lambda r: httpx.Response(200, content=chunks()))
    kie = make(fake, transport=transport)
    dest = tmp_path / "v.mp4"
    err = await raises(kie.download("https://cdn.example/v.mp4", dest, 5000))
    assert err.kind is ErrorKind.DOWNLOAD and "exceeds" in err.message
    assert not dest.exists() and not dest.with_suffix(".part").exists()
    await kie.aclose()


async def test_credits(fake: FakeKie, kie: KieProvider) -> None:
    fake.credits = 1234.5
    assert await kie.get_credits() == 1234.5
    assert await kie.get_credits(ID1) == 1234.5
    fake.set_key_error(KEY1, code=401, msg="You do not have access permissions")
    err = await raises(kie.get_credits(ID1))
    assert (err.code, err.key_id) == (401, ID1)


# --- keys ----------------------------------------------------------------------------------------

async def test_round_robin_disable_and_no_keys(fake: FakeKie) -> None:
    kie = make(fake, (KEY1, KEY2))
    url = await kie.upload_image(b"img", "p.jpg")
    tasks = [await kie.submit(req(url)) for _ in range(4)]
    # Paid tasks rotate on their own: the upload (free, KEY1) does not shift them.
    assert [fake.tasks[t.task_id].key for t in tasks] == [KEY1, KEY2, KEY1, KEY2]
    assert [t.key_id for t in tasks] == [ID1, ID2, ID1, ID2]

    assert kie.disable_key(ID1, "code=402 credits") and kie.available_keys() == 1
    assert {fake.tasks[(await kie.submit(req(url))).task_id].key for _ in range(3)} == {KEY2}
    state = {s["key_id"]: s for s in kie.key_states()}
    assert state[ID1]["state"] == "disabled"
    assert state[ID1]["cooldown_until"] == pytest.approx(time.time() + 3600, abs=5)
    assert state[ID2]["state"] == "active" and state[ID2]["requests"] == 5

    kie.disable_key(ID2, "402")
    err = await raises(kie.submit(req(url)))
    assert (err.kind, err.code, err.message) == (ErrorKind.API, 402, "no usable KIE API key")
    # Polling still uses the creating key: reading a task costs nothing.
    await kie.poll(tasks[0].task_id, "kling-2.6/image-to-video", ID2)
    assert fake.calls_to("recordInfo")[-1].key == KEY2

    kie.enable_key(ID1)
    assert fake.tasks[(await kie.submit(req(url))).task_id].key == KEY1
    kie.disable_key(ID1, "short", seconds=0.05)
    assert kie.available_keys() == 0
    await asyncio.sleep(0.06)
    assert kie.available_keys() == 1
    assert not kie.disable_key("nope", "x")
    await kie.aclose()


async def test_cool_down_is_per_account(fake: FakeKie) -> None:
    kie = make(fake, (KEY1, KEY2))
    kie.cool_down_key(ID1, 30)  # same (default) account: both keys pause
    err = await raises(kie.upload_image(b"img", "p.jpg"))
    assert err.code == 429  # rate limited, not billing
    assert {s["state"] for s in kie.key_states()} == {"cooling"}
    await kie.aclose()

    kie = make(fake, (KEY1, KEY2), accounts={KEY1: "a", ID2: "b"})
    kie.cool_down_key(ID1, 30)
    assert kie.available_keys() == 2  # paused, not broke
    assert [s["state"] for s in kie.key_states()] == ["cooling", "active"]
    url = await kie.upload_image(b"img", "p.jpg")
    assert fake.tasks[(await kie.submit(req(url))).task_id].key == KEY2
    await kie.aclose()


async def test_per_key_error_carries_key_id(fake: FakeKie) -> None:
    kie = make(fake, (KEY1, KEY2))
    url = await kie.upload_image(b"img", "p.jpg")  # KEY1
    fake.set_key_error(KEY1, code=402, msg=CREDITS_MSG)
    err = await raises(kie.submit(req(url)))  # the first paid task goes to KEY1 too
    assert (err.code, err.key_id) == (402, ID1)
    kie.disable_key(err.key_id or "", err.message)  # what the engine does
    assert fake.tasks[(await kie.submit(req(url))).task_id].key == KEY2
    assert [s["errors"] for s in kie.key_states()] == [1, 0]
    await kie.aclose()


async def test_secrets_never_leak(fake: FakeKie, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    kie = make(fake, (KEY1,), http_timeout_s=0.2)
    url = await kie.upload_image(b"img", "p.jpg")
    errors: list[ProviderError] = []
    faults: list[dict[str, Any]] = [
        {"code": 401, "msg": f"Invalid API key {KEY1}"},  # KIE echoing the key back
        {"code": 401, "msg": f"bad header Authorization: Bearer {KEY1}"},
        {"http_status": 403, "body": f"<html>denied {KEY1}</html>", "content_type": "text/html"},
        {"http_status": 500}, {"code": 402, "msg": CREDITS_MSG}, {"malformed": True},
        {"body": f'{{"code":200,"data":{{"echo":"{KEY1}"}}}}'}, {"delay_s": 1.0},
        {"drop_connection": True},
    ]
    for fault in faults:
        fake.fail_next("createTask", **fault)
        with pytest.raises(ProviderError) as info:
            await kie.submit(req(url))
        errors.append(info.value)
    fake.fail_next("recordInfo", body=f"oops {KEY1}")
    errors.append(await raises(kie.poll("t", "kling-2.6/image-to-video", ID1)))
    fake.fail_download()
    errors.append(await raises(kie.download(f"{fake.base_url}/files/x.mp4", tmp_path / "v.mp4", 10)))
    kie.disable_key(ID1, f"reason mentioning {KEY1}")
    errors.append(await raises(kie.submit(req(url))))
    assert {e.kind for e in errors} >= {ErrorKind.API, ErrorKind.MALFORMED, ErrorKind.TIMEOUT,
                                         ErrorKind.NETWORK, ErrorKind.DOWNLOAD}
    for e in errors:
        for text in (str(e), repr(e), e.message):
            assert KEY1 not in text and "SECRET" not in text
    assert KEY1 not in repr(kie.key_states()) and KEY1 not in repr(kie._keys)
    assert "SECRET" not in caplog.text
    assert "kie submit failed" in caplog.text
    await kie.aclose()


# --- rate limits ---------------------------------------------------------------------------------

def max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max(sum(1 for t in times[i:] if t < start + window) for i, start in enumerate(times))


async def test_create_limiter_keeps_window(fake: FakeKie) -> None:
    kie = make(fake, (KEY1, KEY2), create_limit=5, create_period_s=0.25)
    url = await kie.upload_image(b"img", "p.jpg")
    t0 = time.monotonic()
    await asyncio.gather(*(kie.submit(req(url)) for _ in range(12)))
    assert time.monotonic() - t0 >= 0.5  # 12 tasks at <= 5 per 0.25 s cannot be faster
    # Two keys on one account share the budget.
    assert max_in_window([c.at for c in fake.calls_to("createTask")], 0.25) <= 5
    await kie.aclose()


async def test_poll_limiter_is_per_key(fake: FakeKie) -> None:
    kie = make(fake, (KEY1, KEY2), poll_limit=4, poll_period_s=0.2)
    t0 = time.monotonic()
    await asyncio.gather(*(raises(kie.poll("t", "veo3", kid)) for kid in [ID1] * 6 + [ID2] * 2))
    calls = fake.calls_to("veoRecordInfo")
    assert max_in_window([c.at for c in calls if c.key == KEY1], 0.2) <= 4
    assert time.monotonic() - t0 >= 0.25
    await kie.aclose()


# --- callbacks -----------------------------------------------------------------------------------

async def test_fake_sends_signed_callback(fake: FakeKie, kie: KieProvider) -> None:
    received: list[tuple[dict[str, Any], dict[str, str]]] = []

    async def handler(request: web.Request) -> web.Response:
        received.append((await request.json(), dict(request.headers)))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/cb", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    cb = f"http://127.0.0.1:{runner.addresses[0][1]}/cb"

    url = await kie.upload_image(b"img", "p.jpg")
    task = await kie.submit(req(url, callback_url=cb))
    assert fake.tasks[task.task_id].callback_url == cb
    assert await fake.send_callback(task.task_id, cb, hmac_key="whsec") == 200
    body, headers = received[0]
    ts = headers["X-Webhook-Timestamp"]
    want = base64.b64encode(hmac.new(b"whsec", f"{task.task_id}.{ts}".encode(), hashlib.sha256)
                            .digest()).decode()
    assert headers["X-Webhook-Signature"] == want
    status = market_status(body["data"])
    assert status.state is TaskState.SUCCESS and status.result_urls == (fake.result_url(task.task_id),)
    await runner.cleanup()
