"""GPT prompt enhancement: the official SDK against a fake OpenAI server, the cache, the fallbacks.

Unit level: `PromptBuilder` with `base_url=fake.url + "/v1"`. End to end: the real bot, fake
Telegram, fake KIE and the fake OpenAI server; a seller launches videos and the prompt KIE
receives is checked.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from neurocards.config import OpenAIConfig
from neurocards.jobs.prompting import MAX_PROMPT_CHARS, SYSTEM_PROMPT, PromptBuilder
from neurocards.jobs.templates import Template, TemplateCatalog
from neurocards.store.db import Database
from neurocards.store.prompt_cache import PromptCache, cache_key
from tests.fakes.openai_server import FakeOpenAI
from tests.harness import Harness, launch, videos

KEY = "sk-test-9f8e7d6c5b4a39281706f5e4d3c2b1a0"
DESC = "Белая керамическая кружка 350 мл"
GPT_TEXT = (f"Slow 360-degree turntable shot of the {DESC} on a seamless light-grey backdrop, soft "
            "softbox light from the left, gentle rim reflections, steady medium framing, crisp focus "
            "on the glaze; the mug stays exactly as in the photo. No people, no faces, no text.")


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    server = FakeOpenAI(api_key=KEY)
    await server.start()
    server.reply = GPT_TEXT
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def cache(tmp_path: Path) -> AsyncIterator[PromptCache]:
    db = await Database.open(tmp_path / "cache.sqlite3")
    try:
        yield PromptCache(db)
    finally:
        await db.close()


@pytest.fixture
def studio() -> Template:
    template = TemplateCatalog.load().get("studio")
    assert template is not None
    return template


def builder(fake: FakeOpenAI, cache: PromptCache | None = None, *, timeout_s: float = 2.0,
            api_key: str = KEY, **kwargs: object) -> PromptBuilder:
    config = OpenAIConfig(api_key=api_key, model="gpt-4o-mini", base_url=fake.url + "/v1", timeout_s=timeout_s)
    return PromptBuilder(config, cache, **kwargs)  # type: ignore[arg-type]


# ---- enhancement ------------------------------------------------------------------------------

async def test_gpt_answer_is_the_prompt(fake: FakeOpenAI, cache: PromptCache, studio: Template) -> None:
    pb = builder(fake, cache)
    try:
        prompt = await pb.build(studio, DESC, "на фоне моря")
    finally:
        await pb.aclose()
    assert prompt == GPT_TEXT
    assert fake.count == 1
    req = fake.requests[0]
    assert req.model == "gpt-4o-mini"
    assert req.authorization == f"Bearer {KEY}"
    assert [m["role"] for m in req.messages] == ["system", "user"]
    assert req.system_text == SYSTEM_PROMPT and "verbatim" in SYSTEM_PROMPT
    # GPT sees the filled template, the description and the wishes.
    assert studio.render(DESC, "на фоне моря") in req.user_text
    assert DESC in req.user_text and "на фоне моря" in req.user_text
    assert req.body["max_tokens"] > 0


async def test_answer_without_the_description_gets_it_prepended(fake: FakeOpenAI, studio: Template) -> None:
    fake.reply = '```\nPrompt: "Slow orbit around a white mug on a grey podium, soft light."\n```'
    pb = builder(fake)
    try:
        prompt = await pb.build(studio, f"  {DESC}. ", "")
    finally:
        await pb.aclose()
    assert prompt == f"Product: {DESC}. Slow orbit around a white mug on a grey podium, soft light."


async def test_description_check_ignores_case(fake: FakeOpenAI, studio: Template) -> None:
    fake.reply = GPT_TEXT.replace(DESC, DESC.upper())
    pb = builder(fake)
    try:
        assert await pb.build(studio, DESC, "") == fake.reply
    finally:
        await pb.aclose()


async def test_long_answer_is_cut_to_the_provider_limit(fake: FakeOpenAI, studio: Template) -> None:
    fake.reply = GPT_TEXT + " " + " ".join(f"Extra sentence number {i} about the light." for i in range(60))
    pb = builder(fake)
    try:
        prompt = await pb.build(studio, DESC, "")
    finally:
        await pb.aclose()
    assert len(prompt) <= MAX_PROMPT_CHARS
    assert prompt.startswith(GPT_TEXT) and prompt.endswith(".")


# ---- fallbacks: the template as is, the job goes on ---------------------------------------------

@pytest.mark.parametrize("status", [500, 401, 429, 503])
async def test_http_errors_fall_back_to_the_template(fake: FakeOpenAI, cache: PromptCache, studio: Template,
                                                     status: int) -> None:
    fake.error_status = status
    pb = builder(fake, cache)
    try:
        prompt = await pb.build(studio, DESC, "")
        assert prompt == studio.render(DESC, "")
        assert fake.count == 1  # max_retries=0: one request, then the template
        fake.error_status = None
        if status in (401, 429):  # the key itself was refused: it cools down, GPT is not asked meanwhile
            assert await pb.build(studio, DESC, "") == studio.render(DESC, "")
            assert fake.count == 1
            pb.keys.keys[0].cooling_until = 0.0  # the cool-down has passed
        # A fallback is not cached: once GPT is back, the next build asks it.
        assert await pb.build(studio, DESC, "") == GPT_TEXT
        assert fake.count == 2
    finally:
        await pb.aclose()


async def test_wrong_key_falls_back(fake: FakeOpenAI, studio: Template) -> None:
    pb = builder(fake, api_key="sk-wrong-000000000000000000000000")
    try:
        assert await pb.build(studio, DESC, "") == studio.render(DESC, "")
    finally:
        await pb.aclose()
    assert fake.count == 1


async def test_slow_gpt_never_holds_the_job_past_the_timeout(fake: FakeOpenAI, cache: PromptCache,
                                                             studio: Template) -> None:
    fake.delay_s = 5.0
    pb = builder(fake, cache, timeout_s=0.5)
    try:
        started = time.monotonic()
        prompt = await pb.build(studio, DESC, "")
        elapsed = time.monotonic() - started
    finally:
        await pb.aclose()
    assert prompt == studio.render(DESC, "")
    assert 0.4 <= elapsed < 0.5 + 0.4, elapsed


@pytest.mark.parametrize("knob", ["malformed", "empty", "refusal_field", "refusal_text", "content_filter"])
async def test_unusable_answers_fall_back(fake: FakeOpenAI, cache: PromptCache, studio: Template, knob: str) -> None:
    if knob == "malformed":
        fake.malformed = True
    elif knob == "empty":
        fake.reply = "   "
    elif knob == "refusal_field":
        fake.refusal = "I'm sorry, but I can't help with that request."
    elif knob == "refusal_text":
        fake.reply = "I'm sorry, but I can't assist with that."
    else:
        fake.finish_reason = "content_filter"
    pb = builder(fake, cache)
    try:
        assert await pb.build(studio, DESC, "") == studio.render(DESC, "")
    finally:
        await pb.aclose()
    assert fake.count == 1
    assert await cache.db.fetchone("SELECT key FROM prompt_cache") is None


async def test_unreachable_server_falls_back(cache: PromptCache, studio: Template) -> None:
    config = OpenAIConfig(api_key=KEY, base_url="http://127.0.0.1:9/v1", timeout_s=2)
    pb = PromptBuilder(config, cache)
    try:
        assert await pb.build(studio, DESC, "") == studio.render(DESC, "")
    finally:
        await pb.aclose()


async def test_no_key_means_no_http_call(fake: FakeOpenAI, cache: PromptCache, studio: Template) -> None:
    pb = builder(fake, cache, api_key="")
    try:
        assert not pb.enabled
        assert await pb.build(studio, DESC, "на фоне моря") == studio.render(DESC, "на фоне моря")
    finally:
        await pb.aclose()
    assert fake.count == 0


# ---- the cache ----------------------------------------------------------------------------------

async def test_second_identical_build_is_a_cache_hit(fake: FakeOpenAI, cache: PromptCache, studio: Template) -> None:
    pb = builder(fake, cache)
    try:
        first = await pb.build(studio, DESC, "")
        second = await pb.build(studio, f"  {DESC.replace(' ', '  ')} ", " ")  # same words, other spacing
        assert first == second == GPT_TEXT
        assert fake.count == 1
        # Different wishes are a different prompt: a miss.
        await pb.build(studio, DESC, "на фоне моря")
        assert fake.count == 2
    finally:
        await pb.aclose()
    # A restarted bot (new builder, same database) still hits.
    again = builder(fake, cache)
    try:
        assert await again.build(studio, DESC, "") == GPT_TEXT
    finally:
        await again.aclose()
    assert fake.count == 2
    row = await cache.db.fetchone("SELECT hits FROM prompt_cache WHERE key = ?",
                                  (cache_key("gpt-4o-mini", "studio", studio.prompt, DESC, "",
                                             instructions=SYSTEM_PROMPT),))
    assert row is not None and row["hits"] == 2


async def test_other_model_or_template_is_a_miss(fake: FakeOpenAI, cache: PromptCache, studio: Template) -> None:
    edited = Template(studio.id, studio.title, studio.prompt + " Extra.", studio.model,
                      studio.aspect_ratio, studio.duration_s)
    pb = builder(fake, cache)
    try:
        await pb.build(studio, DESC, "")
        await pb.build(edited, DESC, "")  # the operator edited prompts.toml
    finally:
        await pb.aclose()
    config = OpenAIConfig(api_key=KEY, model="gpt-4.1-mini", base_url=fake.url + "/v1", timeout_s=2)
    other = PromptBuilder(config, cache)
    try:
        await other.build(studio, DESC, "")
    finally:
        await other.aclose()
    assert fake.count == 3
    assert fake.requests[2].model == "gpt-4.1-mini"


async def test_cache_get_counts_hits_and_put_overwrites(cache: PromptCache) -> None:
    assert await cache.get("k") is None
    await cache.put("k", "one")
    await cache.put("k", "two")
    assert await cache.get("k") == "two"
    assert await cache.get("k") == "two"
    row = await cache.db.fetchone("SELECT prompt, hits FROM prompt_cache WHERE key = 'k'")
    assert row is not None and (row["prompt"], row["hits"]) == ("two", 2)


def test_cache_key_covers_every_input() -> None:
    base = cache_key("m", "studio", "Video of {description}.", "Кружка 350 мл", "")
    assert base == cache_key("m", "studio", "Video of {description}.", " Кружка  350 мл ", "  ")
    assert len(base) == 64
    variants = [
        cache_key("m2", "studio", "Video of {description}.", "Кружка 350 мл", ""),
        cache_key("m", "details", "Video of {description}.", "Кружка 350 мл", ""),
        cache_key("m", "studio", "Clip of {description}.", "Кружка 350 мл", ""),
        cache_key("m", "studio", "Video of {description}.", "Кружка 300 мл", ""),
        cache_key("m", "studio", "Video of {description}.", "Кружка 350 мл", "море"),
        cache_key("m", "studio", "Video of {description}.", "Кружка 350 мл", "", instructions="v2"),
    ]
    assert len({base, *variants}) == len(variants) + 1


async def test_concurrent_builds_of_one_key_call_gpt_once(fake: FakeOpenAI, cache: PromptCache,
                                                          studio: Template) -> None:
    fake.delay_s = 0.3  # the five siblings of one order all arrive while GPT is thinking
    pb = builder(fake, cache)
    try:
        prompts = await asyncio.gather(*(pb.build(studio, DESC, "") for _ in range(5)))
        assert prompts == [GPT_TEXT] * 5
        assert fake.count == 1
        assert pb._inflight == {}  # nothing left behind
    finally:
        await pb.aclose()


async def test_concurrent_builds_share_a_fallback_too(fake: FakeOpenAI, studio: Template) -> None:
    fake.delay_s = 5.0
    pb = builder(fake, timeout_s=0.3)
    try:
        started = time.monotonic()
        prompts = await asyncio.gather(*(pb.build(studio, DESC, "") for _ in range(5)))
        assert time.monotonic() - started < 0.3 + 0.4
    finally:
        await pb.aclose()
    assert prompts == [studio.render(DESC, "")] * 5
    assert fake.count == 1


async def test_one_cancelled_sibling_does_not_cancel_the_shared_call(fake: FakeOpenAI, studio: Template) -> None:
    fake.delay_s = 0.3
    pb = builder(fake)
    try:
        impatient = asyncio.create_task(pb.build(studio, DESC, ""))
        patient = asyncio.create_task(pb.build(studio, DESC, ""))
        await asyncio.sleep(0.1)
        impatient.cancel()
        assert await patient == GPT_TEXT
        assert fake.count == 1
    finally:
        await pb.aclose()


async def test_cache_failure_costs_a_gpt_call_not_the_job(fake: FakeOpenAI, tmp_path: Path, studio: Template) -> None:
    db = await Database.open(tmp_path / "closed.sqlite3")
    await db.close()  # every cache read and write now fails
    pb = builder(fake, PromptCache(db))
    try:
        assert await pb.build(studio, DESC, "") == GPT_TEXT
    finally:
        await pb.aclose()


async def test_http_client_is_used_and_left_open(fake: FakeOpenAI, studio: Template) -> None:
    seen: list[str] = []

    async def on_request(request: httpx.Request) -> None:
        seen.append(str(request.url))

    # The app can pass a client with a proxy transport; its owner closes it, not the builder.
    async with httpx.AsyncClient(event_hooks={"request": [on_request]}) as http:
        pb = builder(fake, http_client=http)
        try:
            assert await pb.build(studio, DESC, "") == GPT_TEXT
        finally:
            await pb.aclose()
        assert seen == [fake.url + "/v1/chat/completions"]
        assert not http.is_closed


# ---- logs ---------------------------------------------------------------------------------------

async def test_one_log_line_per_build_and_never_the_key(fake: FakeOpenAI, cache: PromptCache, studio: Template,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # the SDK's and httpx's debug logs too
    pb = builder(fake, cache, timeout_s=0.5)
    try:
        await pb.build(studio, DESC, "")  # miss, enhanced
        await pb.build(studio, DESC, "")  # hit
        fake.error_status = 401  # OpenAI's 401 message quotes part of the key
        await pb.build(studio, DESC, "a")
        fake.error_status = None
        pb.keys.keys[0].cooling_until = 0.0  # the refused key's cool-down has passed
        fake.delay_s = 2.0
        await pb.build(studio, DESC, "b")  # timeout
    finally:
        await pb.aclose()
    ours = [r.getMessage() for r in caplog.records if r.name == "neurocards.prompts"]
    assert len(ours) == 4, ours
    assert "cache miss" in ours[0] and "cache hit" in ours[1]
    assert "fallback" in ours[2] and "401" in ours[2]
    assert "fallback" in ours[3] and "timeout" in ours[3]
    text = caplog.text + "\n".join(str(r.__dict__) for r in caplog.records)
    assert KEY not in text and KEY[-8:] not in text and KEY[3:12] not in text


# ---- end to end -----------------------------------------------------------------------------------

def _gpt_overrides(fake: FakeOpenAI) -> dict[str, dict[str, object]]:
    return {"openai": {"api_key": KEY, "base_url": fake.url + "/v1", "timeout_s": 1}}


async def test_e2e_kie_gets_the_gpt_prompt_and_make_another_uses_the_cache(harness: Harness,
                                                                           fake: FakeOpenAI) -> None:
    harness.overrides = _gpt_overrides(fake)
    await harness.start()
    user = harness.tg.user(2001, "Вера")
    await launch(user, description=DESC, template="🔄 Студийный поворот", quantity=2)
    delivered = await harness.tg.wait_until(lambda: videos(user) if len(videos(user)) == 2 else None)
    assert fake.count == 1  # two sibling jobs, one GPT call
    assert fake.requests[0].authorization == f"Bearer {KEY}"
    prompts = [task.body["prompt"] for task in harness.kie.tasks.values()]
    assert prompts == [GPT_TEXT, GPT_TEXT]
    assert all(DESC in p for p in prompts)

    # "Make another" with the same template and no wishes: the cache answers, GPT is not asked.
    cursor = user.cursor()
    await user.click(delivered[0], "🔄 Сделать ещё с этим товаром")
    styles = await user.wait_for_message(lambda m: "Выберите стиль" in m.text, after=cursor)
    await user.click(styles, "🔄 Студийный поворот")
    formats = await user.wait_for_message(lambda m: "Формат видео" in m.text, after=cursor)
    await user.click(formats, "⏭ Оставить")
    wishes = await user.wait_for_message(lambda m: "пожелания" in m.text, after=cursor)
    await user.click(wishes, "⏭ Пропустить")
    qty = await user.wait_for_message(lambda m: "Сколько видео" in m.text, after=cursor)
    await user.click(qty, "1 видео")
    confirm = await user.wait_for_message(lambda m: "Проверьте заказ" in m.text, after=cursor)
    await user.click(confirm, "✅ Запустить")
    await harness.tg.wait_until(lambda: len(videos(user)) == 3)
    assert fake.count == 1
    assert harness.kie.count("veoGenerate") == 3
    assert [task.body["prompt"] for task in harness.kie.tasks.values()] == [GPT_TEXT] * 3
    jobs = await harness.wait_jobs(lambda rows: len(rows) == 3 and all(r["state"] == "done" for r in rows))
    assert [j["prompt"] for j in jobs] == [GPT_TEXT] * 3
    cached = harness.query("SELECT prompt, hits FROM prompt_cache")
    assert len(cached) == 1 and cached[0]["prompt"] == GPT_TEXT and cached[0]["hits"] >= 1


async def test_e2e_openai_down_still_makes_the_video_from_the_template(harness: Harness,
                                                                       fake: FakeOpenAI) -> None:
    fake.error_status = 500
    harness.overrides = _gpt_overrides(fake)
    await harness.start()
    user = harness.tg.user(2002)
    await launch(user, description=DESC, template="🔄 Студийный поворот")
    await harness.tg.wait_until(lambda: len(videos(user)) == 1)
    assert fake.count == 1
    studio = TemplateCatalog.load().get("studio")
    assert studio is not None
    [task] = harness.kie.tasks.values()
    assert task.body["prompt"] == studio.render(DESC, "")
    assert harness.query("SELECT key FROM prompt_cache") == []  # a fallback is never cached
    await harness.wait_jobs(lambda rows: all(r["state"] == "done" for r in rows))
    assert harness.balance(2002) == 20


async def test_e2e_slow_openai_costs_at_most_the_timeout(harness: Harness, fake: FakeOpenAI) -> None:
    fake.delay_s = 10.0
    harness.overrides = _gpt_overrides(fake)
    await harness.start()
    user = harness.tg.user(2003)
    await launch(user, description=DESC)
    started = time.monotonic()
    await harness.tg.wait_until(lambda: len(videos(user)) == 1, timeout=8)
    assert time.monotonic() - started < 1 + 3  # timeout_s = 1, plus the fake pipeline
    [task] = harness.kie.tasks.values()
    assert DESC in task.body["prompt"] and task.body["prompt"] != GPT_TEXT
