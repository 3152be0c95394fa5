"""GPT like KIE: several OpenAI keys in turn, a refused key cools down, success/failure/latency on
/metrics, an admin alert when GPT keeps failing; the template stays the fallback."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from neurocards.config import OpenAIConfig, load_config
from neurocards.jobs.gpt_keys import GptWatch, gpt_key_id
from neurocards.jobs.prompting import PromptBuilder
from neurocards.jobs.templates import Template, TemplateCatalog
from tests.fakes.openai_server import FakeOpenAI
from tests.harness import Harness, launch, videos

KEY_A = "sk-test-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
KEY_B = "sk-test-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
DESC = "Синяя стеклянная ваза 30 см"
GPT_TEXT = f"Slow orbit around the {DESC} on a white table, soft daylight, no people, no text."


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    server = FakeOpenAI()
    await server.start()
    server.reply = GPT_TEXT
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def studio() -> Template:
    template = TemplateCatalog.load().get("studio")
    assert template is not None
    return template


def keys_used(fake: FakeOpenAI) -> list[str]:
    return [r.authorization.removeprefix("Bearer ") for r in fake.requests]


class Recorded:
    def __init__(self) -> None:
        self.calls: list[tuple[bool, str]] = []

    def gpt_call(self, ok: bool, latency_s: float, reason: str = "") -> None:
        self.calls.append((ok, reason))


@pytest.mark.parametrize("status", [429, 403])
async def test_a_refused_key_cools_down_and_the_next_one_answers(fake: FakeOpenAI, studio: Template,
                                                                 status: int) -> None:
    fake.key_errors[KEY_A] = status
    metrics = Recorded()
    config = OpenAIConfig(api_keys=[KEY_A, KEY_B], base_url=fake.url + "/v1", timeout_s=2, key_cooldown_s=60)
    pb = PromptBuilder(config, watch=GptWatch(None, metrics))
    try:
        assert await pb.build(studio, DESC, "") == GPT_TEXT  # A refused, B asked at once
        assert keys_used(fake) == [KEY_A, KEY_B]
        for wishes in ("медленнее", "больше света", "на фоне моря"):
            assert await pb.build(studio, DESC, wishes) == GPT_TEXT
        assert keys_used(fake)[2:] == [KEY_B, KEY_B, KEY_B]  # A is cooling down
        assert [s["state"] for s in pb.keys.states()] == ["cooling", "active"]
        assert metrics.calls == [(True, "")] * 4

        pb.keys.keys[0].cooling_until = 0.0  # the cool-down has passed: A is tried again
        del fake.key_errors[KEY_A]
        await pb.build(studio, DESC, "ещё")
        await pb.build(studio, DESC, "и ещё")
        assert sorted(keys_used(fake)[5:]) == [KEY_A, KEY_B]
    finally:
        await pb.aclose()


async def test_every_key_refused_means_the_template_without_waiting(fake: FakeOpenAI, studio: Template) -> None:
    fake.key_errors.update({KEY_A: 429, KEY_B: 429})
    metrics = Recorded()
    config = OpenAIConfig(api_keys=[KEY_A, KEY_B], base_url=fake.url + "/v1", timeout_s=2)
    pb = PromptBuilder(config, watch=GptWatch(None, metrics))
    try:
        assert await pb.build(studio, DESC, "") == studio.render(DESC, "")
        assert fake.count == 2
        assert await pb.build(studio, DESC, "x") == studio.render(DESC, "x")
        assert fake.count == 2  # both cooling: no call at all
        assert metrics.calls == [(False, "rate_limit"), (False, "no_key")]
    finally:
        await pb.aclose()


def test_keys_from_the_file_and_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'[openai]\napi_keys = ["{KEY_A}", "{KEY_B}"]\napi_key = "{KEY_A}"\n', encoding="utf-8")
    assert load_config(path, env={}, online=False).openai.keys == (KEY_A, KEY_B)
    env = {"OPENAI_API_KEYS": "sk-env-1, sk-env-2"}
    assert load_config(path, env=env, online=False).openai.keys == ("sk-env-1", "sk-env-2", KEY_A)
    assert gpt_key_id(KEY_A) != gpt_key_id(KEY_B) and KEY_A[-6:] not in gpt_key_id(KEY_A)


async def _metrics_text(harness: Harness) -> str:
    assert harness.app is not None and harness.app.ops is not None
    async with aiohttp.ClientSession() as http, \
            http.get(f"http://127.0.0.1:{harness.app.ops.port}/metrics") as resp:
        return await resp.text()


def _value(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
    assert match, name
    return float(match.group(1))


async def test_e2e_rotation_metrics_and_the_alert(harness: Harness, fake: FakeOpenAI) -> None:
    fake.key_errors[KEY_A] = 429
    harness.overrides = {
        "telegram": {"admin_ids": [9001]},
        "openai": {"api_keys": [KEY_A, KEY_B], "base_url": fake.url + "/v1", "timeout_s": 2,
                   "failure_rate_alert": 0.7, "failure_rate_min_calls": 3},
        "credits": {"welcome": 100},
    }
    await harness.start()
    admin = harness.tg.user(9001)
    await admin.send_text("/start")
    await admin.wait_for_message(lambda m: "Баланс" in m.text)
    user = harness.tg.user(5401)
    await launch(user, description=DESC)
    await harness.tg.wait_until(lambda: len(videos(user)) == 1)
    assert DESC in next(iter(harness.kie.tasks.values())).body["prompt"]
    assert keys_used(fake) == [KEY_A, KEY_B]
    text = await _metrics_text(harness)
    assert _value(text, 'neurocards_gpt_requests_total{outcome="success"}') == 1
    assert _value(text, "neurocards_gpt_latency_seconds_count") == 1
    assert _value(text, "neurocards_gpt_keys_available") == 1

    # OpenAI breaks down: every video is still made from the template, and the owner hears of it once.
    fake.error_status = 500
    for number, wishes in enumerate(("медленнее", "больше света", "на фоне моря"), start=2):
        await launch(user, description=DESC, wishes=wishes)
        await harness.tg.wait_until(lambda n=number: len(videos(user)) == n)
    alerts = [m for m in admin.messages if "GPT" in m.text]
    assert len(alerts) == 1 and "не удались 3 из 4" in alerts[0].text and "openai.api_keys" in alerts[0].text
    text = await _metrics_text(harness)
    assert _value(text, 'neurocards_gpt_requests_total{outcome="failure"}') == 3
    assert _value(text, 'neurocards_gpt_failures_total{reason="server"}') == 3
    assert harness.balance(5401) == 60
