"""Invite links: the inviter is recorded once for a brand-new user, the bonus is paid once."""

from __future__ import annotations

import re
import sqlite3

import pytest

from neurocards.services.referrals import Referrals
from neurocards.store.db import Database
from neurocards.store.referrals import ReferralBonus, ReferralStore
from neurocards.store.users import UserStore
from tests.fakes.telegram_user import FakeUser
from tests.harness import Harness
from tests.test_payments import buy, open_menu

LINK = re.compile(r"https://t\.me/neurocards_test_bot\?start=(ref_[a-z0-9]+)")


async def invite_code(user: FakeUser) -> str:
    menu = await open_menu(user)
    cursor = user.cursor()
    await user.click(menu, "👤 Кабинет")
    cabinet = await user.wait_for_message(lambda m: "Кабинет" in m.text and LINK.search(m.text), after=cursor)
    match = LINK.search(cabinet.text)
    assert match is not None
    return match.group(1)


async def cabinet_text(user: FakeUser) -> str:
    menu = await open_menu(user)
    cursor = user.cursor()
    await user.click(menu, "👤 Кабинет")
    return (await user.wait_for_message(lambda m: "Кабинет" in m.text, after=cursor)).text


async def start(user: FakeUser, arg: str) -> None:
    cursor = user.cursor()
    await user.send_text(f"/start {arg}")
    await user.wait_for_message(lambda m: "Баланс" in m.text and bool(m.buttons), after=cursor)


def referrer_of(harness: Harness, user_id: int) -> int | None:
    return harness.query("SELECT referrer_id FROM users WHERE id = ?", (user_id,))[0]["referrer_id"]


async def test_invited_user_pays_and_the_inviter_gets_the_bonus_once(harness: Harness) -> None:
    await harness.start()
    inviter = harness.tg.user(3001, "Ира")
    start_arg = await invite_code(inviter)
    assert start_arg == await invite_code(inviter)  # the link is stable

    friend = harness.tg.user(3002, "Петя")
    await start(friend, start_arg)
    assert referrer_of(harness, 3002) == 3001
    assert harness.balance(3001) == 30  # nothing before the first payment

    cursor = inviter.cursor()
    await buy(friend, "50 кредитов")
    notice = await inviter.wait_for_message(lambda m: "приглашённый друг" in m.text, after=cursor)
    assert "20" in notice.text and "50" in notice.text
    assert harness.balance(3001) == 50
    assert harness.ledger(3001) == [(30, "welcome"), (20, "referral")]
    assert harness.balance(3002) == 80  # the friend gets the pack, no bonus of their own

    await buy(friend, "50 кредитов")  # a second payment: no second bonus
    assert harness.ledger(3001) == [(30, "welcome"), (20, "referral")]
    text = await cabinet_text(inviter)
    assert "Приглашено: 1" in text and "получено бонусов: 20" in text


async def test_own_link_second_link_and_existing_users_are_ignored(harness: Harness) -> None:
    app = await harness.start()
    first = harness.tg.user(3011)
    second = harness.tg.user(3012)
    link_first = await invite_code(first)
    link_second = await invite_code(second)

    # One's own link.
    await start(first, link_first)
    assert referrer_of(harness, 3011) is None

    # A new user keeps the first inviter; a later link changes nothing.
    newcomer = harness.tg.user(3013)
    await start(newcomer, link_first)
    await start(newcomer, link_second)
    assert referrer_of(harness, 3013) == 3011

    # Someone who used the bot before opening a link is not "invited".
    regular = harness.tg.user(3014)
    await open_menu(regular)
    await start(regular, link_second)
    assert referrer_of(harness, 3014) is None

    # Unknown codes and garbage after /start are harmless.
    stranger = harness.tg.user(3015)
    await start(stranger, "ref_nosuchcode")
    assert referrer_of(harness, 3015) is None

    # The database refuses a change of referrer and self-referral on its own.
    store = ReferralStore(app.db)
    assert await store.attach(3011, link_first.removeprefix("ref_")) is None
    with pytest.raises(sqlite3.IntegrityError):
        await app.db.execute("UPDATE users SET referrer_id = 3012 WHERE id = 3013")
    with pytest.raises(sqlite3.IntegrityError):
        await app.db.execute("UPDATE users SET referrer_id = 3015 WHERE id = 3015")


async def test_first_video_mode_pays_on_delivery_not_on_payment(harness: Harness) -> None:
    harness.overrides = {"referrals": {"bonus_on": "first_video", "bonus_credits": 15}}
    await harness.start()
    inviter = harness.tg.user(3021)
    start_arg = await invite_code(inviter)
    friend = harness.tg.user(3022)
    await start(friend, start_arg)
    await buy(friend, "50 кредитов")
    assert harness.ledger(3021) == [(30, "welcome")]

    # The engine's hook (called after a delivery) grants once and tells the inviter.
    config = harness.write_config()
    db = await Database.open(harness.tmp / "hook.sqlite3")
    try:
        users = UserStore(db)
        for user_id in (1, 2):
            await users.touch(user_id, username=None, first_name=None, language=None, welcome_credits=0)
        store = ReferralStore(db)
        assert await store.attach(2, await store.code_for(1)) == 1
        told: list[ReferralBonus] = []

        async def tell(bonus: ReferralBonus) -> None:
            told.append(bonus)

        referrals = Referrals(config, store, on_bonus=tell)
        first = await referrals.on_video_delivered(2)
        assert first == ReferralBonus(referrer_id=1, invited_user_id=2, credits=15, referrer_balance=15)
        assert await referrals.on_video_delivered(2) is None
        assert await referrals.on_video_delivered(1) is None  # nobody invited user 1
        assert told == [first] and await users.balance(1) == 15
    finally:
        await db.close()


async def test_first_video_bonus_reaches_the_inviter_end_to_end(harness: Harness) -> None:
    from tests.harness import launch, videos

    harness.overrides = {"referrals": {"bonus_on": "first_video", "bonus_credits": 15}}
    await harness.start()
    inviter = harness.tg.user(3031)
    start_arg = await invite_code(inviter)
    friend = harness.tg.user(3032)
    await start(friend, start_arg)
    for expected in (1, 2):
        await launch(friend)
        await harness.tg.wait_until(lambda expected=expected: len(videos(friend)) == expected)
    await harness.wait_jobs(lambda rows: all(r["state"] == "done" for r in rows))
    await harness.tg.wait_until(lambda: (30 + 15) == harness.balance(3031))
    assert harness.ledger(3031) == [(30, "welcome"), (15, "referral")]  # once, not per video
