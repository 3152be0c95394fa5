"""An order of several videos: what it costs, when it is refused, and that it is charged once, all or nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from neurocards.config import Config, load_config
from neurocards.jobs.chain import ChainEntry, ProviderChain
from neurocards.jobs.templates import Template, TemplateCatalog
from neurocards.metrics import Metrics
from neurocards.services import orders as orders_module
from neurocards.services.orders import LimitReached, Orders
from neurocards.store.db import Database
from neurocards.store.jobs import DuplicateRequest, InsufficientCredits, JobStore
from neurocards.store.orders import OrderStore
from neurocards.store.users import ProductStore, UserStore
from tests.harness import config_text

MIDNIGHT = 1_767_225_600.0  # 2026-01-01 00:00 UTC
TEMPLATES = TemplateCatalog([
    Template(id="studio", title="Студия", prompt="{description}", model=None, aspect_ratio="9:16", duration_s=8),
    Template(id="reel", title="Рилс", prompt="{description}", model="kling-2", aspect_ratio="9:16", duration_s=5),
])


@dataclass
class Shop:
    """The order service over a real SQLite file: the main way costs 10, the plain fall-over 2."""

    db: Database
    config: Config
    users: UserStore
    products: ProductStore
    jobs: JobStore
    store: OrderStore
    chain: ProviderChain
    metrics: Metrics
    orders: Orders
    wakes: list[int] = field(default_factory=list)

    async def seller(self, credits: int, user_id: int = 7, products: int = 1) -> list[int]:
        """A seller with `credits` and `products` described products; their ids."""
        await self.users.touch(user_id, username=None, first_name="S", language="ru", welcome_credits=credits)
        ids = []
        for n in range(products):
            product_id = await self.products.create(user_id, f"file{n}", f"/photos/{n}.jpg")
            await self.products.set_description(product_id, f"Товар {n + 1}")
            ids.append(product_id)
        return ids

    async def launch(self, product_ids: list[int], count: int = 1, key: str = "k1", user_id: int = 7,
                     **kwargs: Any):
        return await self.orders.launch(user_id=user_id, chat_id=user_id * 100, product_ids=product_ids,
                                        template_id=kwargs.pop("template_id", "studio"), wishes="",
                                        count=count, request_key=key, **kwargs)

    def charged_metric(self) -> float:
        return self.metrics.registry.get_sample_value("neurocards_credits_charged_total") or 0.0

    async def ledger(self, user_id: int = 7) -> list[tuple[int, str, int | None]]:
        rows = await self.db.fetchall(
            "SELECT delta, reason, job_id FROM credit_ledger WHERE user_id = ? ORDER BY id", (user_id,))
        return [(r["delta"], r["reason"], r["job_id"]) for r in rows]

    async def made_at(self, user_id: int, at: float) -> None:
        """The seller's jobs so far were made at `at` (limits count by creation time)."""
        await self.db.execute("UPDATE jobs SET created_at = ? WHERE user_id = ? AND created_at > ?",
                              (at, user_id, MIDNIGHT + 86400))


async def open_shop(tmp: Path, limits: dict[str, int] | None = None, *, wake: bool = True,
                    metrics: bool = True) -> Shop:
    fakes = SimpleNamespace(base_url="http://127.0.0.1:9")
    overrides = {"limits": limits or {"videos_per_day": 0, "min_seconds_between_orders": 0}}
    (tmp / "config.toml").write_text(config_text(fakes, fakes, overrides=overrides), encoding="utf-8")  # type: ignore[arg-type]
    config = load_config(tmp / "config.toml", env={})
    db = await Database.open(tmp / "shop.sqlite3")
    jobs = JobStore(db)
    chain = ProviderChain([
        ChainEntry(name="kie", backend=object(), fixed_model=None, cost=10, simple=False,  # type: ignore[arg-type]
                   default_model="veo3_fast", takes_template_model=True),
        ChainEntry(name="sandbox", backend=object(), fixed_model="ffmpeg", cost=2, simple=True),  # type: ignore[arg-type]
    ], format_surcharge={"16:9": 5})
    wakes: list[int] = []
    registry = Metrics(process=False)
    orders = Orders(config, jobs, TEMPLATES, chain, on_new_jobs=(lambda: wakes.append(1)) if wake else None,
                    metrics=registry if metrics else None)
    return Shop(db, config, UserStore(db), ProductStore(db), jobs, OrderStore(db), chain, registry, orders, wakes)


@pytest.fixture
async def shop(tmp_path: Path) -> AsyncIterator[Shop]:
    opened = await open_shop(tmp_path)
    yield opened
    await opened.db.close()


def main_way_down(shop: Shop) -> None:
    shop.chain.primary.down_until = shop.chain.clock() + 3600


async def test_an_order_of_two_products_three_videos_each_is_charged_once_per_video(shop: Shop) -> None:
    mug, candle = await shop.seller(credits=100, products=2)
    created = await shop.launch([mug, candle], count=3, template_id="reel")
    assert created.balance == 40 and await shop.users.balance(7) == 40
    assert len(created.job_ids) == 6
    # Every video has its own charge of 10, so each can be refunded on its own.
    assert await shop.ledger() == [(100, "welcome", None)] + [(-10, "job_charge", j) for j in created.job_ids]
    rows = await shop.db.fetchall(
        "SELECT id, user_id, chat_id, product_id, template, provider, model, cost, state, aspect_ratio, order_id,"
        " order_pos FROM jobs ORDER BY id")
    assert [r["id"] for r in rows] == created.job_ids
    assert [(r["product_id"], r["order_pos"]) for r in rows] == [
        (mug, 1), (mug, 2), (mug, 3), (candle, 4), (candle, 5), (candle, 6)]
    assert {(r["user_id"], r["chat_id"], r["template"], r["provider"], r["model"], r["cost"], r["state"],
             r["aspect_ratio"], r["order_id"]) for r in rows} == {
        (7, 700, "reel", "kie", "kling-2", 10, "queued", None, created.order_id)}  # the template's own model
    order = await shop.store.get(created.order_id)
    assert order is not None and (order.user_id, order.chat_id, order.products, order.jobs_total) == (7, 700, 2, 6)
    assert await shop.store.caption_of(created.job_ids[3]) == ("Товар 2", 4, 6)  # "video 4 of 6" under it
    assert shop.charged_metric() == 60  # the operator's charged-credits counter
    assert shop.wakes == [1]  # the engine is woken once for the whole order


async def test_a_wide_video_costs_the_format_surcharge_on_each_video(shop: Shop) -> None:
    [mug] = await shop.seller(credits=100)
    assert shop.orders.quote(2, 100, "16:9").cost == 30
    created = await shop.launch([mug], count=2, aspect="16:9")
    assert created.balance == 70 and shop.charged_metric() == 30
    rows = await shop.db.fetchall("SELECT cost, aspect_ratio, model FROM jobs")
    assert [(r["cost"], r["aspect_ratio"], r["model"]) for r in rows] == [(15, "16:9", "veo3_fast")] * 2


async def test_an_order_the_seller_cannot_afford_charges_nothing(shop: Shop) -> None:
    mug, candle = await shop.seller(credits=50, products=2)
    with pytest.raises(InsufficientCredits) as refused:
        await shop.launch([mug, candle], count=3)
    assert (refused.value.balance, refused.value.cost, refused.value.missing) == (50, 60, 10)
    assert await shop.users.balance(7) == 50 and await shop.ledger() == [(50, "welcome", None)]
    assert await shop.db.fetchall("SELECT id FROM orders") == [] and await shop.db.fetchall("SELECT id FROM jobs") == []
    assert shop.charged_metric() == 0 and shop.wakes == []


async def test_exactly_enough_credits_buy_the_order_and_leave_zero(shop: Shop) -> None:
    [mug] = await shop.seller(credits=30)
    created = await shop.launch([mug], count=3)
    assert created.balance == 0 and len(created.job_ids) == 3


async def test_a_seller_the_bot_never_saw_has_nothing_to_pay_with(shop: Shop) -> None:
    [mug] = await shop.seller(credits=10, user_id=8)
    with pytest.raises(InsufficientCredits) as refused:
        await shop.store.create_charged(user_id=99, chat_id=99, request_key="k", product_ids=[mug], per_product=1,
                                        template="studio", wishes="", provider="kie", model="veo3_fast", cost_each=1)
    assert (refused.value.balance, refused.value.cost) == (0, 1)
    assert await shop.db.fetchall("SELECT id FROM orders") == []


async def test_pressing_confirm_twice_charges_once(shop: Shop) -> None:
    [mug] = await shop.seller(credits=100)
    first = await shop.launch([mug], count=2, key="confirm-1")
    with pytest.raises(DuplicateRequest):
        await shop.launch([mug], count=2, key="confirm-1")
    assert await shop.users.balance(7) == 80 == first.balance
    assert len(await shop.db.fetchall("SELECT id FROM orders")) == 1
    assert shop.wakes == [1] and shop.charged_metric() == 20


async def test_only_the_offered_quantities_and_one_to_ten_products_are_accepted(shop: Shop) -> None:
    products = await shop.seller(credits=1000, products=11)
    for count, chosen in ((4, products[:1]), (1, []), (1, products)):
        with pytest.raises(ValueError):
            await shop.launch(chosen, count=count, key=f"bad-{count}-{len(chosen)}")
    with pytest.raises(KeyError):
        await shop.launch(products[:1], template_id="no-such-template", key="bad-template")
    assert await shop.users.balance(7) == 1000  # a refused order charges nothing
    one = await shop.launch(products[:1], count=5, key="one")
    album = await shop.launch(products[:10], count=1, key="album")  # an album holds at most 10 photos
    assert (len(one.job_ids), len(album.job_ids), album.balance) == (5, 10, 1000 - 50 - 100)


async def test_an_order_without_metrics_or_a_waiting_engine_still_goes_through(tmp_path: Path) -> None:
    shop = await open_shop(tmp_path, wake=False, metrics=False)
    try:
        [mug] = await shop.seller(credits=20)
        assert (await shop.launch([mug])).balance == 10
    finally:
        await shop.db.close()


async def test_the_price_shown_before_confirming(shop: Shop) -> None:
    quote = shop.orders.quote(3, 25)
    assert (quote.count, quote.cost, quote.balance, quote.affordable) == (3, 30, 25, False)
    assert not quote.simple and not quote.cheaper  # the main way at its own price
    assert shop.orders.quote(3, 45, "16:9").affordable and shop.orders.quote(3, 45, "16:9").cost == 45


async def test_while_the_main_way_is_down_the_plainer_cheaper_one_is_quoted_and_charged(shop: Shop) -> None:
    [mug] = await shop.seller(credits=10)
    main_way_down(shop)
    quote = shop.orders.quote(2, 10)
    assert (quote.cost, quote.simple, quote.cheaper, quote.affordable) == (4, True, True, True)
    created = await shop.launch([mug], count=2)
    assert created.balance == 6
    rows = await shop.db.fetchall("SELECT provider, model, cost FROM jobs")
    assert [(r["provider"], r["model"], r["cost"]) for r in rows] == [("sandbox", "ffmpeg", 2)] * 2


async def test_a_fall_over_at_the_same_price_is_not_called_cheaper(shop: Shop) -> None:
    shop.chain.entries[1].cost = 10
    main_way_down(shop)
    quote = shop.orders.quote(1, 0)
    assert quote.simple and not quote.cheaper


async def test_the_balance_is_told_in_videos_of_the_price_now(shop: Shop) -> None:
    view = shop.orders.balance_view(25)
    assert (view.balance, view.price, view.videos_left, view.low, view.short) == (25, 10, 2, True, False)
    assert shop.config.credits.low_balance_videos == 3  # "fewer than 3 videos left" is the warning
    main_way_down(shop)
    view = shop.orders.balance_view(25)
    assert (view.price, view.videos_left, view.low) == (2, 12, False)
    assert shop.orders.balance_view(1).short


# ---- per-seller limits ---------------------------------------------------------------------------

@pytest.fixture
def ten_am(monkeypatch: pytest.MonkeyPatch) -> float:
    """The limits are checked at 10:00 UTC."""
    now = MIDNIGHT + 10 * 3600
    monkeypatch.setattr(orders_module, "time", SimpleNamespace(time=lambda: now))
    return now


async def test_the_daily_limit_counts_every_video_made_since_midnight_utc(tmp_path: Path, ten_am: float) -> None:
    shop = await open_shop(tmp_path, {"videos_per_day": 8, "min_seconds_between_orders": 0})
    try:
        mug, candle = await shop.seller(credits=1000, products=2)
        await shop.launch([mug], count=3, key="yesterday")
        await shop.made_at(7, MIDNIGHT - 1800)  # 23:30 yesterday: not today's
        await shop.launch([mug], count=5, key="early")
        await shop.made_at(7, MIDNIGHT + 1800)
        with pytest.raises(LimitReached) as refused:
            await shop.launch([mug, candle], count=2, key="four-more")  # 5 + 2 x 2 > 8
        assert (refused.value.kind, refused.value.limit, refused.value.retry_in_s) == ("per_day", 8, 14 * 3600)
        await shop.launch([candle], count=3, key="three-more")  # 5 + 3 = 8: the limit itself is allowed
        with pytest.raises(LimitReached):
            await shop.launch([candle], count=1, key="one-more")
        assert await shop.users.balance(7) == 1000 - 110  # refused orders charged nothing
    finally:
        await shop.db.close()


async def test_orders_closer_than_the_spacing_wait_the_rest_of_it(tmp_path: Path, ten_am: float) -> None:
    shop = await open_shop(tmp_path, {"videos_per_day": 0, "min_seconds_between_orders": 20})
    try:
        [mug] = await shop.seller(credits=100)
        await shop.launch([mug], key="first")  # the first order ever has nothing to be spaced from
        await shop.made_at(7, ten_am - 5)
        with pytest.raises(LimitReached) as refused:
            await shop.launch([mug], key="second")
        assert (refused.value.kind, refused.value.limit, refused.value.retry_in_s) == ("too_soon", 20, 15)
        await shop.db.execute("UPDATE jobs SET created_at = ? WHERE user_id = 7", (ten_am - 20,))  # exactly 20 s
        assert (await shop.launch([mug], key="third")).balance == 80
    finally:
        await shop.db.close()


async def test_limits_are_per_seller(tmp_path: Path, ten_am: float) -> None:
    shop = await open_shop(tmp_path, {"videos_per_day": 2, "min_seconds_between_orders": 20})
    try:
        [mug] = await shop.seller(credits=100, user_id=7)
        [cup] = await shop.seller(credits=100, user_id=8)
        await shop.launch([mug], count=2, key="a", user_id=7)
        await shop.made_at(7, ten_am - 5)
        with pytest.raises(LimitReached):
            await shop.launch([cup], count=3, key="b", user_id=8)  # 3 > 2: his own limit
        assert (await shop.launch([cup], count=2, key="c", user_id=8)).balance == 80  # 7's orders are not his
    finally:
        await shop.db.close()
