"""What an order's live status is made of: its videos, their places in the queue, the time they usually take."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from neurocards.store.jobs import JobState
from neurocards.store.ledger import insert_ledger_row
from tests.test_order_money import Shop, open_shop


@pytest.fixture
async def shop(tmp_path: Path) -> AsyncIterator[Shop]:
    opened = await open_shop(tmp_path)
    yield opened
    await opened.db.close()


async def _set(shop: Shop, job_id: int, **columns: object) -> None:
    assignments = ", ".join(f"{name} = ?" for name in columns)
    await shop.db.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*columns.values(), job_id))


async def _refund(shop: Shop, job_id: int, credits: int) -> None:
    async with shop.db.transaction() as conn:
        await insert_ledger_row(conn, user_id=7, delta=credits, reason="job_refund", job_id=job_id)


async def test_the_status_lists_each_video_of_the_order_with_its_product_and_refund(shop: Shop) -> None:
    mug, candle = await shop.seller(credits=100, products=2)
    created = await shop.launch([candle, mug], count=2)
    first, second, third, fourth = created.job_ids
    await _set(shop, second, state="generating", claimed=1, attempts=2, started_at=time.time())
    await _set(shop, third, state="failed", error_class="moderation", finished_at=time.time())
    await _refund(shop, third, 10)
    await _set(shop, fourth, state="done", video_file_id="vid-4", finished_at=time.time())
    jobs = await shop.store.jobs(created.order_id)
    assert [(j.id, j.pos, j.product, j.state, j.claimed, j.refunded) for j in jobs] == [
        (first, 1, "Товар 2", JobState.QUEUED, False, 0),
        (second, 2, "Товар 2", JobState.GENERATING, True, 0),
        (third, 3, "Товар 1", JobState.FAILED, False, 10),  # the failed one shows its refund
        (fourth, 4, "Товар 1", JobState.DONE, False, 0),
    ]
    assert (jobs[1].attempts, jobs[2].error_class, jobs[3].video_file_id) == (2, "moderation", "vid-4")
    assert all(j.cost == 10 and j.model == "veo3_fast" for j in jobs)
    assert await shop.store.jobs(created.order_id + 1) == []  # another order's videos are not in it


async def test_a_button_of_an_order_that_does_not_exist_finds_nothing(shop: Shop) -> None:
    assert await shop.store.get(12345) is None


async def test_a_video_made_before_orders_existed_has_no_order_caption(shop: Shop) -> None:
    [mug] = await shop.seller(credits=100)
    legacy = await shop.db.execute(  # a job row of a database older than orders: no order_id
        "INSERT INTO jobs (user_id, chat_id, product_id, request_key, template, provider, model, cost, state,"
        " run_after, created_at, updated_at) VALUES (7, 7, ?, 'old', 'studio', 'kie', 'veo3_fast', 10, 'done',"
        " 0, 0, 0)", (mug,))
    assert legacy == 1
    [old] = await shop.db.fetchall("SELECT id FROM jobs WHERE request_key = 'old'")
    assert await shop.store.caption_of(old["id"]) is None
    ordered = await shop.launch([mug], count=2)
    assert [await shop.store.caption_of(j) for j in ordered.job_ids] == [("Товар 1", 1, 2), ("Товар 1", 2, 2)]


async def test_the_status_message_is_remembered_and_the_summary_is_sent_once(shop: Shop) -> None:
    mug, candle = await shop.seller(credits=100, products=2)
    first = await shop.launch([mug], key="a")
    second = await shop.launch([candle], key="b")
    await shop.store.set_status(first.order_id, message_id=555, text="Заказ: 1 видео", at=1000.0)
    order = await shop.store.get(first.order_id)
    assert order is not None
    assert (order.status_message_id, order.status_text, order.status_edited_at) == (555, "Заказ: 1 видео", 1000.0)
    untouched = await shop.store.get(second.order_id)
    assert untouched is not None and untouched.status_message_id is None
    assert [o.id for o in await shop.store.open_orders()] == [first.order_id, second.order_id]
    assert await shop.store.claim_summary(first.order_id) is True
    assert await shop.store.claim_summary(first.order_id) is False  # a second pass never sends it again
    closed = await shop.store.get(first.order_id)
    assert closed is not None and closed.summary_sent_at is not None
    assert [o.id for o in await shop.store.open_orders()] == [second.order_id]  # its status is no longer live


async def test_my_orders_shows_only_my_open_orders(shop: Shop) -> None:
    [mug] = await shop.seller(credits=100, user_id=7)
    [cup] = await shop.seller(credits=100, user_id=8)
    mine = [await shop.launch([mug], key=f"mine-{n}", user_id=7) for n in range(2)]
    theirs = await shop.launch([cup], key="theirs", user_id=8)
    assert [o.id for o in await shop.store.open_orders(7)] == [m.order_id for m in mine]
    assert [(o.id, o.user_id) for o in await shop.store.open_orders(8)] == [(theirs.order_id, 8)]
    assert len(await shop.store.open_orders()) == 3


async def test_one_status_round_looks_at_the_thousand_oldest_open_orders(shop: Shop) -> None:
    await shop.seller(credits=0)
    async with shop.db.transaction() as conn:
        await conn.executemany(
            "INSERT INTO orders (user_id, chat_id, request_key, products, jobs_total, created_at)"
            " VALUES (7, 7, ?, 1, 1, 0)", [(f"k{n}",) for n in range(1001)])
    live = await shop.store.open_orders()
    assert len(live) == 1000 and live[0].id < live[-1].id
    assert len(await shop.store.open_orders(7)) == 1000


async def test_queue_places_count_only_waiting_videos_in_the_order_the_engine_takes_them(shop: Shop) -> None:
    [mug] = await shop.seller(credits=100)
    a, b, c, d, e = (await shop.launch([mug], count=5)).job_ids
    await _set(shop, a, claimed=1)  # being worked on
    await _set(shop, b, run_after=time.time() + 60)  # retried later: behind the others
    await _set(shop, c, state="generating", started_at=time.time())
    await _set(shop, e, started_at=time.time() - 30)  # started once, back in the queue for a retry
    assert await shop.store.queue_places() == {d: 1, b: 2}


async def test_the_usual_time_per_model_is_the_median_of_its_last_twenty_videos(shop: Shop) -> None:
    [mug] = await shop.seller(credits=1000)
    veo = (await shop.launch([mug], count=5, key="veo")).job_ids
    veo += (await shop.launch([mug], count=5, key="veo2")).job_ids
    veo += (await shop.launch([mug], count=5, key="veo3")).job_ids
    veo += (await shop.launch([mug], count=5, key="veo4")).job_ids
    veo += (await shop.launch([mug], count=1, key="veo5")).job_ids
    assert len(veo) == 21
    # The oldest of the 21 took 1000 s; of the last 20, ten took 10 s and ten 30 s.
    for n, job_id in enumerate(veo):
        took = 1000.0 if n == 0 else (10.0 if n % 2 else 30.0)
        await _set(shop, job_id, state="done", started_at=1000.0 * n, finished_at=1000.0 * n + took)
    slow = await shop.launch([mug], count=3, key="kling", template_id="reel")  # the template's model
    never_started, failed, _queued = slow.job_ids
    await _set(shop, never_started, state="done", created_at=100.0, started_at=None, finished_at=220.0)
    await _set(shop, failed, state="failed", started_at=0.0, finished_at=5000.0)
    await _refund(shop, failed, 10)
    assert await shop.store.median_durations() == {"veo3_fast": 20.0, "kling-2": 120.0}
