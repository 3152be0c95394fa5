"""Promo code rules as the seller and the operator meet them, against a real SQLite file."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from neurocards.services.promo import (
    WRONG_WINDOW_S,
    BadPromo,
    Malformed,
    PromoInputError,
    Promos,
    Wait,
    as_json,
)
from neurocards.store.db import Database
from neurocards.store.promo import PromoStore, Redeemed, Refusal
from neurocards.store.users import UserStore

ADMIN = 900


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(tmp_path / "promo.sqlite3")
    users = UserStore(database)
    for uid in (7, 8):
        await users.ensure(uid)
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
def server_time_zone(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", request.param)
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


# Twelve hours behind UTC, its date is yesterday's before noon UTC; fourteen ahead, it is tomorrow's
# after 10:00 UTC: at any hour one of the two servers disagrees with UTC about which day it is.
@pytest.mark.parametrize("server_time_zone", ["<-12>12", "<+14>-14"], ids=["UTC-12", "UTC+14"], indirect=True)
@pytest.mark.usefixtures("server_time_zone")
async def test_expiry_days_are_utc_days_whatever_the_servers_time_zone(db: Database) -> None:
    """"--expires DAY" means that UTC day: a code for today (UTC) can be made, one for yesterday cannot,
    it is listed with the day typed and works until midnight UTC, not a moment longer."""
    promos = Promos(PromoStore(db))
    today = dt.datetime.now(dt.UTC).date()
    with pytest.raises(PromoInputError) as refused:
        await promos.create("YESTERDAY", 10, expires=(today - dt.timedelta(days=1)).isoformat())
    assert refused.value.what is BadPromo.EXPIRES
    promo = await promos.create("LASTDAY", 10, expires=today.isoformat())
    assert as_json(promo)["expires"] == today.isoformat()
    midnight = dt.datetime.combine(today + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC).timestamp()
    assert isinstance(await promos.redeem(7, "lastday", now=midnight - 1), Redeemed)
    assert await promos.redeem(8, "lastday", now=midnight) is Refusal.EXPIRED


async def test_a_one_credit_one_use_code_works_once(db: Database) -> None:
    promos = Promos(PromoStore(db))
    await promos.create("TINY", 1, 1)
    assert await promos.redeem(7, "tiny") == Redeemed(code="TINY", credits=1, balance=await UserStore(db).balance(7))
    assert await promos.redeem(8, "tiny") is Refusal.USED_UP
    assert [(p.code, p.used, p.max_uses) for p in await promos.list()] == [("TINY", 1, 1)]


async def test_the_largest_code_is_a_million_credits_for_a_million_sellers(db: Database) -> None:
    promos = Promos(PromoStore(db))
    promo = await promos.create("JACKPOT", 1_000_000, 1_000_000)
    assert (promo.credits, promo.max_uses) == (1_000_000, 1_000_000)


async def test_the_seller_reads_the_new_balance_after_redeeming(db: Database) -> None:
    before = await UserStore(db).balance(7)
    await Promos(PromoStore(db)).create("SPRING", 15)
    assert await Promos(PromoStore(db)).redeem(7, " spring ") == Redeemed(code="SPRING", credits=15,
                                                                        balance=before + 15)
    assert await UserStore(db).balance(7) == before + 15


async def test_a_code_made_in_the_bot_records_the_admin_who_made_it(db: Database) -> None:
    promos = Promos(PromoStore(db))
    await promos.create("FROMBOT", 10, created_by=ADMIN)
    await promos.create("FROMCLI", 10)
    rows = await db.fetchall("SELECT code, created_by FROM promo_codes ORDER BY code")
    assert [(r["code"], r["created_by"]) for r in rows] == [("FROMBOT", ADMIN), ("FROMCLI", None)]


async def test_disabling_a_code_that_does_not_exist_or_cannot_exist_finds_none(db: Database) -> None:
    promos = Promos(PromoStore(db))
    await promos.create("REAL", 10)
    assert await promos.disable("no such") is None
    assert await promos.disable("NOPE") is None
    disabled = await promos.disable(" real ")
    assert disabled is not None and disabled.code == "REAL" and disabled.disabled


async def test_a_text_that_cannot_be_a_code_gets_the_format_hint_and_counts_as_a_wrong_guess(db: Database) -> None:
    promos = Promos(PromoStore(db))
    now = 1_000_000.0
    assert await promos.redeem(7, "🎁 gift please", now=now) is Malformed.FORMAT
    assert await promos.redeem(7, "NOSUCH", now=now) is Refusal.UNKNOWN
    assert await PromoStore(db).wrong_attempts(7, now - 1) == 2


async def test_the_guessing_brake_lifts_after_an_hour_and_old_guesses_are_forgotten(db: Database) -> None:
    promos = Promos(PromoStore(db))
    await promos.create("SUMMER", 20)
    start = 1_000_000.0
    for i in range(5):
        assert await promos.redeem(7, f"WRONG{i}", now=start + i) is Refusal.UNKNOWN
    await promos.redeem(8, "WRONG", now=start)
    assert await promos.redeem(7, "SUMMER", now=start + 10) is Wait.TOO_MANY_WRONG
    later = start + 4 + WRONG_WINDOW_S + 1
    assert await promos.redeem(8, "STILLWRONG", now=later) is Refusal.UNKNOWN
    # Only the last hour's guesses are kept (they exist to count, not to keep a history of sellers).
    rows = await db.fetchall("SELECT user_id, at FROM promo_attempts")
    assert [(r["user_id"], r["at"]) for r in rows] == [(8, later)]
    assert isinstance(await promos.redeem(7, "SUMMER", now=later), Redeemed)


@pytest.mark.parametrize(("start", "code"), [
    ("promo_WB2026", "WB2026"), ("promo_spring", "spring"),
    (None, None), ("", None), ("ref_12345", None), ("WB2026", None), ("xpromo_WB2026", None),
])
def test_only_a_promo_link_brings_a_code_with_start(start: str | None, code: str | None) -> None:
    """t.me/<bot>?start=promo_CODE redeems CODE; a plain /start or a referral link redeems nothing."""
    assert Promos.code_from_start(start) == code


async def test_the_owner_sees_the_weeks_redemptions_per_code_most_redeemed_first(db: Database) -> None:
    promos = Promos(PromoStore(db))
    users = UserStore(db)
    for uid in (9, 10):
        await users.ensure(uid)
    for code in ("BLOGGER", "ANNA", "OLD"):
        await promos.create(code, 5)
    week_ago = 1_000_000.0
    await promos.redeem(7, "OLD", now=week_ago - 1)  # before the week: not counted
    for uid in (8, 9):
        await promos.redeem(uid, "ANNA", now=week_ago + uid)
    for uid in (7, 8, 9):
        await promos.redeem(uid, "BLOGGER", now=week_ago)
    await promos.redeem(10, "OLD", now=week_ago + 5)
    assert list((await PromoStore(db).redemptions_since(week_ago)).items()) == [("BLOGGER", 3), ("ANNA", 2),
                                                                                  ("OLD", 1)]
