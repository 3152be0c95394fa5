"""Promo codes: created by the operator, redeemed by sellers once each, never past their cap."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path

import pytest

from neurocards.cli import main
from neurocards.services.promo import Promos
from neurocards.store.db import Database
from neurocards.store.promo import PromoStore, Redeemed, Refusal
from neurocards.store.users import UserStore
from tests.fakes.telegram_user import FakeUser
from tests.harness import Harness
from tests.test_cli import BASE_CONFIG, create_database

ADMIN = 900


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(BASE_CONFIG, encoding="utf-8")
    create_database(tmp_path / "store" / "bot.sqlite3")  # the bot's first run; the CLI never creates it
    return path


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_operator_creates_lists_and_disables_codes(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = ("--config", str(config_file))
    tomorrow = (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)).isoformat()
    code, out, _ = cli(capsys, "promo", "create", "Blogger-Anna", "--credits", "50", "--uses", "100",
                       "--expires", tomorrow, "--json", *cfg)
    assert code == 0
    assert json.loads(out) == {"code": "BLOGGER-ANNA", "credits": 50, "uses": 100, "used": 0,
                               "expires": tomorrow, "disabled": False}
    assert cli(capsys, "promo", "create", "open_30", "--credits", "30", *cfg)[0] == 0
    code, out, _ = cli(capsys, "promo", "list", "--json", *cfg)
    assert code == 0
    assert json.loads(out) == [
        {"code": "BLOGGER-ANNA", "credits": 50, "uses": 100, "used": 0, "expires": tomorrow, "disabled": False},
        {"code": "OPEN_30", "credits": 30, "uses": None, "used": 0, "expires": None, "disabled": False},
    ]
    code, out, _ = cli(capsys, "promo", "disable", "open_30", *cfg)
    assert code == 0 and "OPEN_30" in out and "disabled" in out
    assert json.loads(cli(capsys, "promo", "list", "--json", *cfg)[1])[1]["disabled"] is True
    code, out, _ = cli(capsys, "promo", "list", *cfg)
    assert "BLOGGER-ANNA: +50 credits, used 0/100" in out and "OPEN_30" in out and "DISABLED" in out
    code, _, err = cli(capsys, "promo", "disable", "NOPE", *cfg)
    assert code == 1 and "NOPE" in err


@pytest.mark.parametrize(("args", "named"), [
    (("with space", "--credits", "10"), "'with space'"),
    (("🎁GIFT", "--credits", "10"), "'🎁GIFT'"),
    (("A" * 200, "--credits", "10"), repr("A" * 200)),
    (("AB", "--credits", "10"), "'AB'"),
    (("SALE ", "--credits", "10"), "'SALE '"),  # a stray space is shown, not trimmed into another code
    (("GOOD", "--credits", "-5"), "-5"),
    (("GOOD", "--credits", "0"), "0"),
    (("GOOD", "--credits", "1000001"), "1000001"),
    (("GOOD", "--credits", "99999999999999999999"), "99999999999999999999"),
    (("GOOD", "--credits", "10", "--uses", "0"), "0"),
    (("GOOD", "--credits", "10", "--uses", "-1"), "-1"),
    (("GOOD", "--credits", "10", "--uses", "1000001"), "1000001"),
    (("GOOD", "--credits", "10", "--expires", "2020-01-01"), "'2020-01-01'"),
    (("GOOD", "--credits", "10", "--expires", "tomorrow"), "'tomorrow'"),
])
def test_bad_promo_input_gets_one_line_naming_it_and_creates_nothing(
        args: tuple[str, ...], named: str, config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "promo", "create", *args, "--config", str(config_file))
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.strip().endswith(f": {named}; nothing created")
    assert json.loads(cli(capsys, "promo", "list", "--json", "--config", str(config_file))[1]) == []


def test_an_existing_code_is_not_created_twice(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = ("--config", str(config_file))
    assert cli(capsys, "promo", "create", "SALE", "--credits", "10", *cfg)[0] == 0
    code, _, err = cli(capsys, "promo", "create", "sale", "--credits", "99", *cfg)
    assert code == 2 and err.strip() == "error: this code exists already: 'SALE'; nothing created"
    assert json.loads(cli(capsys, "promo", "list", "--json", *cfg)[1])[0]["credits"] == 10


async def test_database_caps_uses_when_separate_connections_redeem_at_once(tmp_path: Path) -> None:
    """Three processes' worth of connections race for a 2-use code: the database lets two through."""
    path = tmp_path / "race.sqlite3"
    db = await Database.open(path)
    users = UserStore(db)
    for uid in (1, 2, 3):
        await users.ensure(uid)
    await Promos(PromoStore(db)).create("DUO", 25, 2)
    others = [await Database.open(path) for _ in range(3)]
    try:
        results = await asyncio.gather(*(PromoStore(c).redeem(uid, "DUO") for uid, c in zip((1, 2, 3), others,
                                                                                             strict=True)))
        assert sorted(type(r).__name__ for r in results) == ["Redeemed", "Redeemed", "Refusal"]
        assert Refusal.USED_UP in results
        assert [await users.balance(uid) for uid in (1, 2, 3)].count(25) == 2
        again = next(uid for uid, r in zip((1, 2, 3), results, strict=True) if isinstance(r, Redeemed))
        assert await PromoStore(db).redeem(again, "DUO") is Refusal.ALREADY
        row = await db.fetchone("SELECT used FROM promo_codes WHERE code = 'DUO'")
        assert row is not None and row["used"] == 2
    finally:
        for c in others:
            await c.close()
        await db.close()


async def test_expired_and_disabled_codes_get_their_own_answer(tmp_path: Path) -> None:
    db = await Database.open(tmp_path / "p.sqlite3")
    try:
        await UserStore(db).ensure(7)
        promos = Promos(PromoStore(db))
        today = dt.datetime.now(dt.UTC).date().isoformat()
        await promos.create("LASTDAY", 10, expires=today)
        await promos.create("OFF", 10)
        await promos.disable("off")
        end_of_today = dt.datetime.combine(dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1), dt.time(),
                                           tzinfo=dt.UTC).timestamp()
        assert await promos.redeem(7, "lastday", now=end_of_today + 1) is Refusal.EXPIRED
        assert await promos.redeem(7, "off") is Refusal.DISABLED
        assert isinstance(await promos.redeem(7, "lastday", now=end_of_today - 60), Redeemed)
        # The database refuses a promo ledger row that no redemption backs.
        import sqlite3

        with pytest.raises(sqlite3.IntegrityError):
            await db.execute("INSERT INTO credit_ledger (user_id, delta, reason, note, created_at)"
                             " VALUES (7, 1000, 'promo', 'OFF', 0)")
    finally:
        await db.close()


async def _say(user: FakeUser, text: str, expect) -> str:
    cursor = user.cursor()
    await user.send_text(text)
    return (await user.wait_for_message(expect, after=cursor)).text


async def test_three_sellers_redeem_a_two_use_code_at_the_same_moment(harness: Harness) -> None:
    harness.overrides = {"telegram": {"admin_ids": [ADMIN]}}
    await harness.start()
    admin = harness.tg.user(ADMIN, "Owner")
    reply = await _say(admin, "/admin_promo duo 40 2", lambda m: "Промокод" in m.text)
    assert "DUO" in reply and "+40" in reply and "2 активаций" in reply
    assert "https://t.me/neurocards_test_bot?start=promo_DUO" in reply
    sellers = [harness.tg.user(uid, f"S{uid}") for uid in (7001, 7002, 7003)]
    for s in sellers:
        await _say(s, "/start", lambda m: "Баланс" in m.text)
    cursors = [s.cursor() for s in sellers]
    await asyncio.gather(*(s.send_text("/promo DUO") for s in sellers))
    answers = [(await s.wait_for_message(lambda m: "ромокод" in m.text, after=c)).text
               for s, c in zip(sellers, cursors, strict=True)]
    assert sum("активирован" in a for a in answers) == 2
    assert sum("максимальное число раз" in a for a in answers) == 1
    assert sorted(harness.balance(s.id) for s in sellers) == [30, 70, 70]
    winner = next(s for s, a in zip(sellers, answers, strict=True) if "активирован" in a)
    again = await _say(winner, "/promo duo", lambda m: "ромокод" in m.text)
    assert "уже активировали" in again and harness.balance(winner.id) == 70
    rows = harness.query("SELECT user_id, delta, note FROM credit_ledger WHERE reason = 'promo'")
    assert len(rows) == 2 and all(r["delta"] == 40 and r["note"] == "DUO" for r in rows)
    stats = await _say(admin, "/admin_stats", lambda m: "Сегодня" in m.text)
    assert "DUO ×2" in stats


async def test_a_new_seller_from_a_promo_link_keeps_the_welcome_gift(harness: Harness) -> None:
    await harness.start()
    await Promos(PromoStore(harness.app.db)).create("WB2026", 25)  # type: ignore[union-attr]
    seller = harness.tg.user(7101, "Новый")
    cursor = seller.cursor()
    await seller.send_text("/start promo_WB2026")
    menu = await seller.wait_for_message(lambda m: "Баланс" in m.text and bool(m.buttons), after=cursor)
    texts = [m.text for m in seller.messages]
    assert any("30 кр. в подарок" in t for t in texts)
    assert any("WB2026 активирован: +25" in t for t in texts)
    assert "55" in menu.text and harness.balance(7101) == 55
    assert sorted(r for _, r in harness.ledger(7101)) == ["promo", "welcome"]


async def test_balance_button_takes_the_code_and_wrong_guesses_are_braked(harness: Harness) -> None:
    await harness.start()
    await Promos(PromoStore(harness.app.db)).create("SPRING", 15)  # type: ignore[union-attr]
    seller = harness.tg.user(7201)
    menu_text = await _say(seller, "/start", lambda m: "Баланс" in m.text and bool(m.buttons))
    assert menu_text
    for guess in ("WINTER1", "WINTER2", "a b", "WINTER4"):
        await _say(seller, f"/promo {guess}", lambda m: "ромокод" in m.text)
    cursor = seller.cursor()
    await seller.click(None, "💰 Баланс")
    balance = await seller.wait_for_message(lambda m: "Ваш баланс" in m.text, after=cursor)
    cursor = seller.cursor()
    await seller.click(balance, "🎁 Промокод")
    await seller.wait_for_message(lambda m: "Отправьте промокод" in m.text, after=cursor)
    reply = await _say(seller, "spring", lambda m: "ромокод" in m.text)
    assert "SPRING активирован: +15" in reply and harness.balance(7201) == 45
    wrong = await _say(seller, "/promo WINTER5", lambda m: "ромокод" in m.text)
    assert "Такого промокода нет" in wrong
    wait = await _say(seller, "/promo WINTER6", lambda m: "ромокод" in m.text)
    assert "через час" in wait
    await Promos(PromoStore(harness.app.db)).create("LATER", 5)  # type: ignore[union-attr]
    still = await _say(seller, "/promo LATER", lambda m: "ромокод" in m.text)
    assert "через час" in still and harness.balance(7201) == 45


def test_promo_commands_need_no_token_or_kie_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    offline = tmp_path / "offline.toml"
    offline.write_text('[storage]\ndir = "store"\n', encoding="utf-8")
    cfg = ("--config", str(offline))
    code, _, err = cli(capsys, "promo", "create", "OFFLINE", "--credits", "5", *cfg)
    assert code != 0 and "store" in err  # no database yet: refused, none created by a typo'd path

    async def bot_ran_once() -> None:
        await (await Database.open(tmp_path / "store" / "neurocards.sqlite3")).close()

    asyncio.run(bot_ran_once())
    assert cli(capsys, "promo", "create", "OFFLINE", "--credits", "5", *cfg)[0] == 0
    code, out, err = cli(capsys, "promo", "list", "--json", *cfg)
    assert code == 0, err
    assert [p["code"] for p in json.loads(out)] == ["OFFLINE"]
    assert cli(capsys, "promo", "disable", "offline", *cfg)[0] == 0
    assert cli(capsys, "broadcast", "list", "--json", *cfg)[1].strip() == "[]"
