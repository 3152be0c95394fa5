"""The seller's statement: every credit movement in plain words, as CSV, and for operators offline."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sqlite3
import time
from pathlib import Path

from neurocards.cli import main
from tests.harness import Harness, launch, videos


def _charge_and_refund(harness: Harness) -> None:
    """Rows of every kind a seller meets: a welcome gift, a purchase, a referral bonus, an admin grant."""
    conn = sqlite3.connect(harness.db_path)
    now = time.time()
    with conn:
        conn.execute("INSERT INTO payments (user_id, telegram_payment_charge_id, pack_id, credits, stars, currency,"
                     " payload, created_at) VALUES (2001, 'ch-1', 'm', 50, 100, 'XTR', 'p', ?)", (now,))
        conn.execute("INSERT INTO credit_ledger (user_id, delta, reason, payment_id, created_at)"
                     " VALUES (2001, 50, 'payment', 1, ?)", (now,))
        conn.execute("INSERT INTO credit_ledger (user_id, delta, reason, invited_user_id, created_at)"
                     " VALUES (2001, 5, 'referral', 2999, ?)", (now,))
    conn.close()


async def test_statement_lists_every_movement_and_sums_to_the_balance(harness: Harness, tmp_path: Path,
                                                                      capsys) -> None:
    await harness.start()
    user = harness.tg.user(2001, "Вера")
    await launch(user, description="Кружка керамическая белая 350 мл")
    await harness.tg.wait_until(lambda: len(videos(user)) == 1)
    harness.kie.fail_task(fail_code="400", fail_msg="Your image was flagged as violating content policies")
    await launch(user, description="Футболка с принтом")
    await harness.wait_jobs(lambda rows: any(r["state"] == "failed" for r in rows))
    await asyncio.to_thread(_charge_and_refund, harness)  # a thread: the bot shares this event loop
    balance = harness.balance(2001)
    assert balance == 30 - 10 - 10 + 10 + 50 + 5

    cursor = user.cursor()
    await user.send_text("/start")
    menu = await user.wait_for_message(lambda m: "Привет" in m.text and bool(m.buttons), after=cursor)
    await user.click(menu, "💰 Баланс")
    screen = await user.wait_for_message(lambda m: "Ваш баланс" in m.text, after=cursor)
    await user.click(screen, "📄 Выписка")
    statement = await user.wait_for_message(lambda m: "Выписка" in m.text, after=cursor)
    lines = statement.text.splitlines()
    assert any("−10 · видео «Кружка керамическая белая 350 мл» · заказ 1" in line for line in lines)
    assert any("+10 · возврат: сервис отклонил фото по правилам" in line for line in lines)
    assert any("+50 · покупка 100 ⭐" in line for line in lines)
    assert any("+5 · бонус за друга" in line for line in lines)
    assert any("+30 · подарок" in line for line in lines)
    assert lines[2].endswith(f"→ {balance} кр.")  # newest first, with the balance after it
    assert f"Баланс: {balance} кр." in statement.text

    await user.click(statement, "📥 Скачать CSV")
    document = await user.wait_for_message(lambda m: m.kind == "document", after=cursor)
    assert document.raw["document"]["file_name"].endswith(".csv")
    rows = list(csv.reader(io.StringIO(document.media.decode("utf-8-sig"))))
    assert rows[0] == ["дата", "вид", "сумма", "баланс после", "заказ", "задача", "платёж", "описание"]
    amounts = [int(r[2]) for r in rows[1:]]
    assert sum(amounts) == balance and int(rows[-1][3]) == balance
    assert [r[1] for r in rows[1:]] == ["welcome", "job_charge", "job_charge", "job_refund", "payment",
                                        "referral"]
    await harness.stop()

    # The operator's copy, offline: a config with neither the token nor the KIE keys is enough.
    offline = tmp_path / "offline.toml"
    offline.write_text(f'[storage]\ndir = "storage"\ndatabase = "{harness.db_path}"\n', encoding="utf-8")
    assert await asyncio.to_thread(main, ["statement", "2001", "--json", "--config", str(offline)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["user_id"] == 2001 and data["balance"] == balance
    assert sum(r["amount"] for r in data["rows"]) == balance == data["rows"][-1]["balance_after"]
    assert set(data["rows"][0]) == {"at", "kind", "amount", "balance_after", "ref", "text"}
    assert data["rows"][0]["at"] < data["rows"][-1]["at"] or data["rows"][0]["at"] == data["rows"][-1]["at"]
    assert data["rows"][1]["ref"] == "order 1 job 1"
    assert data["rows"][4]["ref"] == "payment 1" and data["rows"][4]["text"] == "покупка 100 ⭐"
    assert await asyncio.to_thread(main, ["statement", "2001", "--csv", "--config", str(offline)]) == 0
    assert capsys.readouterr().out.startswith("дата,вид,сумма")
    assert await asyncio.to_thread(main, ["statement", "2001", "--config", str(offline)]) == 0
    assert f"balance {balance}, 6 ledger rows" in capsys.readouterr().out


async def test_statement_of_a_new_user_is_empty(harness: Harness) -> None:
    harness.overrides = {"credits": {"welcome": 0}}
    await harness.start()
    user = harness.tg.user(2002)
    await user.send_text("/start")
    menu = await user.wait_for_message(lambda m: "Баланс" in m.text and bool(m.buttons))
    await user.click(menu, "💰 Баланс")
    screen = await user.wait_for_message(lambda m: "Ваш баланс" in m.text)
    await user.click(screen, "📄 Выписка")
    await user.wait_for_message(lambda m: "Движений по балансу пока не было" in m.text)


def test_statement_command_refuses_a_missing_database(tmp_path: Path, capsys) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[storage]\ndir = "storage"\ndatabase = "nowhere/db.sqlite3"\n', encoding="utf-8")
    assert main(["statement", "5", "--config", str(config)]) == 1
    assert "no database at" in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()
