"""Paid tasks spread evenly over KIE keys and accounts; free calls (uploads, polls) do not skew it."""

from __future__ import annotations

import asyncio
from collections import Counter

from neurocards.config import KieConfig
from neurocards.providers.base import VideoRequest
from neurocards.providers.kie import KieProvider
from tests.harness import KIE_KEY, Harness, launch

SECOND = "kie-test-key-0002"
THIRD = "kie-test-key-0003"


async def _thirty_jobs(harness: Harness) -> Counter[str]:
    await harness.start()
    sellers = [harness.tg.user(7100 + n) for n in range(6)]
    await asyncio.gather(*(launch(s, quantity=5) for s in sellers))  # 6 products x 5 videos
    await harness.wait_jobs(lambda rows: len(rows) == 30 and all(r["state"] == "done" for r in rows), 30)
    return Counter(t.key for t in harness.kie.tasks.values())


async def test_thirty_jobs_over_two_accounts_split_evenly(harness: Harness) -> None:
    harness.kie.keys.update({SECOND, THIRD})
    # Account "a" has two keys, "b" one: KIE limits new tasks per account, so accounts take turns.
    harness.overrides = {"kie": {"api_keys": [], "accounts": {"a": [KIE_KEY, SECOND], "b": [THIRD]}},
                         "credits": {"welcome": 50}}
    per_key = await _thirty_jobs(harness)
    per_account = {"a": per_key[KIE_KEY] + per_key[SECOND], "b": per_key[THIRD]}
    assert abs(per_account["a"] - per_account["b"]) <= 1, per_key
    assert abs(per_key[KIE_KEY] - per_key[SECOND]) <= 1, per_key


async def test_thirty_sellers_over_two_keys_split_evenly(harness: Harness) -> None:
    """30 sellers at once, each with its own photo: before, each upload took one key and each
    paid task always the other, so all 30 tasks landed on one key."""
    harness.kie.keys.add(SECOND)
    kie = KieProvider(KieConfig(api_keys=(KIE_KEY, SECOND), base_url=harness.kie.base_url,
                                upload_base_url=harness.kie.base_url), create_limit=1000, poll_limit=1000)
    try:
        keys = []
        for _ in range(30):  # the engine's pattern for unshared products: upload, create, poll
            url = await kie.upload_image(b"img", "p.jpg")
            task = await kie.submit(VideoRequest(prompt="p", image_url=url, model="veo3_fast"))
            await kie.poll(task.task_id, "veo3_fast", task.key_id)
            keys.append(harness.kie.tasks[task.task_id].key)
        assert Counter(keys) == {KIE_KEY: 15, SECOND: 15}
    finally:
        await kie.aclose()
