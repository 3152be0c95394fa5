"""Buying credits with Telegram Stars through the fake Telegram: invoice, pre-checkout,
successful payment (also delivered twice), refusals, admin and command-line refunds."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

from neurocards.services.credits import add_credits
from tests.fakes.telegram_state import BotMessage, PreCheckoutRecord
from tests.fakes.telegram_user import FakeUser, Payment
from tests.harness import Harness, child_env

ADMIN = 9001


async def open_menu(user: FakeUser) -> BotMessage:
    cursor = user.cursor()
    await user.send_text("/start")
    return await user.wait_for_message(lambda m: "Баланс" in m.text and bool(m.buttons), after=cursor)


async def buy(user: FakeUser, button: str = "120 кредитов") -> Payment:
    """Menu → 💳 Пополнить → pack → invoice → pay; waits for the bot's receipt."""
    menu = await open_menu(user)
    cursor = user.cursor()
    await user.click(menu, "💳 Пополнить")
    packs = await user.wait_for_message(lambda m: "Пополнение баланса" in m.text, after=cursor)
    await user.click(packs, button)
    await user.wait_for_message(lambda m: m.kind == "invoice", after=cursor)
    cursor = user.cursor()
    payment = await user.pay()
    assert payment.ok, payment.error_message
    await user.wait_for_message(lambda m: "Оплата получена" in m.text, after=cursor)
    return payment


async def pre_checkout(harness: Harness, user: FakeUser, payload: str, total: int,
                       currency: str = "XTR") -> tuple[bool, str | None]:
    """A pre_checkout_query with any amount (a tampered or outdated invoice)."""
    state = harness.tg.state
    record = PreCheckoutRecord(id=state.random_id(), user_id=user.id, currency=currency, total_amount=total,
                               payload=payload)
    state.pre_checkouts[record.id] = record
    harness.tg.push_update("pre_checkout_query", {
        "id": record.id, "from": user.info.as_user(), "currency": currency, "total_amount": total,
        "invoice_payload": payload})
    return await harness.tg.wait_until(lambda: record.answer)


def payments(harness: Harness, user_id: int) -> list[dict[str, Any]]:
    return [dict(r) for r in harness.query("SELECT * FROM payments WHERE user_id = ? ORDER BY id", (user_id,))]


async def test_buying_a_pack_credits_once_even_when_telegram_repeats(harness: Harness) -> None:
    await harness.start()
    user = harness.tg.user(2001, "Вера")
    payment = await buy(user, "120 кредитов")

    invoice = harness.tg.last_call("sendInvoice").params
    assert invoice["currency"] == "XTR" and not invoice.get("provider_token")
    assert [int(p["amount"]) for p in invoice["prices"]] == [100]
    assert payment.total_amount == 100 and payment.payload.endswith(":2001")
    receipt = user.messages[-1]
    assert "120" in receipt.text and "150" in receipt.text  # 30 welcome + 120
    assert harness.balance(2001) == 150

    # Telegram delivers the same successful_payment again: nothing more is credited.
    cursor = user.cursor()
    await user.repeat_payment(payment)
    await user.wait_for_message(lambda m: "уже зачислен" in m.text, after=cursor)
    assert harness.balance(2001) == 150
    rows = payments(harness, 2001)
    assert len(rows) == 1
    assert rows[0]["telegram_payment_charge_id"] == payment.charge_id
    assert (rows[0]["pack_id"], rows[0]["credits"], rows[0]["stars"], rows[0]["status"]) == ("m", 120, 100, "paid")
    assert harness.ledger(2001) == [(30, "welcome"), (120, "payment")]
    ledger = harness.query("SELECT payment_id FROM credit_ledger WHERE user_id = 2001 AND reason = 'payment'")
    assert [r["payment_id"] for r in ledger] == [rows[0]["id"]]

    # The balance screen and the insufficient-credits screen offer the top-up too.
    menu = await open_menu(user)
    cursor = user.cursor()
    await user.click(menu, "💰 Баланс")
    screen = await user.wait_for_message(lambda m: "Ваш баланс" in m.text, after=cursor)
    assert ["💳 Пополнить"] in screen.buttons


async def test_pre_checkout_refuses_wrong_price_other_user_and_unknown_pack(harness: Harness) -> None:
    await harness.start()
    user = harness.tg.user(2002)
    await open_menu(user)
    ok, error = await pre_checkout(harness, user, "cr1:m:120:100:2002", total=1)
    assert not ok and "Цена" in (error or "")
    ok, error = await pre_checkout(harness, user, "cr1:m:500:100:2002", total=100)  # forged credits
    assert not ok and "Цена" in (error or "")
    ok, error = await pre_checkout(harness, user, "cr1:m:120:100:7777", total=100)
    assert not ok and "другому пользователю" in (error or "")
    ok, error = await pre_checkout(harness, user, "cr1:xl:999:1:2002", total=1)
    assert not ok and "не продаётся" in (error or "")
    ok, error = await pre_checkout(harness, user, "cr1:m:120:100:2002", total=100, currency="USD")
    assert not ok and "Stars" in (error or "")
    ok, _ = await pre_checkout(harness, user, "cr1:m:120:100:2002", total=100)
    assert ok
    assert payments(harness, 2002) == [] and harness.balance(2002) == 30


async def test_banned_user_cannot_pay_but_a_payment_already_made_is_kept(harness: Harness) -> None:
    app = await harness.start()
    user = harness.tg.user(2003)
    menu = await open_menu(user)
    cursor = user.cursor()
    await user.click(menu, "💳 Пополнить")
    await user.click(await user.wait_for_message(lambda m: "Пополнение" in m.text, after=cursor), "50 кредитов")
    invoice = await user.wait_for_message(lambda m: m.kind == "invoice", after=cursor)
    await app.users.set_banned(2003, True)
    refused = await user.pay(invoice)
    assert not refused.ok and "ограничен" in (refused.error_message or "")
    assert payments(harness, 2003) == [] and harness.balance(2003) == 30

    # Banned between pre-checkout and payment: the Stars are taken, so the payment is recorded.
    await user.send_successful_payment(payload=refused.payload, total_amount=50, charge_id="stx-banned-1")
    await harness.tg.wait_until(lambda: payments(harness, 2003))
    assert harness.balance(2003) == 80


async def test_admin_refund_once_and_non_admin_gets_nothing(harness: Harness) -> None:
    harness.overrides = {"telegram": {"admin_ids": [ADMIN]}}
    await harness.start()
    user = harness.tg.user(2004, "Гоша")
    payment = await buy(user, "50 кредитов")
    assert harness.balance(2004) == 80

    # Not an admin: the normal answer to an unknown command, and nothing changes.
    cursor = user.cursor()
    await user.send_text(f"/admin_refund 2004 {payment.charge_id}")
    await user.wait_for_message(lambda m: "Не понял" in m.text, after=cursor)
    assert harness.tg.count("refundStarPayment") == 0
    assert payments(harness, 2004)[0]["status"] == "paid" and harness.balance(2004) == 80

    admin = harness.tg.user(ADMIN, "Админ")
    cursor = admin.cursor()
    user_cursor = user.cursor()
    await admin.send_text(f"/admin_refund 2004 {payment.charge_id}")
    done = await admin.wait_for_message(lambda m: "возвращено" in m.text, after=cursor)
    assert "50 ⭐" in done.text and "30" in done.text
    notice = await user.wait_for_message(lambda m: "возвращён" in m.text, after=user_cursor)
    assert "30" in notice.text
    call = harness.tg.last_call("refundStarPayment")
    assert int(call.params["user_id"]) == 2004 and call.params["telegram_payment_charge_id"] == payment.charge_id
    assert harness.tg.charges[payment.charge_id].refunded
    row = payments(harness, 2004)[0]
    assert (row["status"], row["refunded_credits"], row["refunded_by"]) == ("refunded", 50, ADMIN)
    assert harness.ledger(2004) == [(30, "welcome"), (50, "payment"), (-50, "payment_refund")]
    assert harness.query("SELECT action FROM admin_audit WHERE user_id = 2004")[0]["action"] == "payment_refund"

    # Twice: refused without asking Telegram.
    cursor = admin.cursor()
    await admin.send_text(f"/admin_refund 2004 {payment.charge_id}")
    await admin.wait_for_message(lambda m: "уже возвращён" in m.text, after=cursor)
    assert harness.tg.count("refundStarPayment") == 1 and harness.balance(2004) == 30
    cursor = admin.cursor()
    await admin.send_text("/admin_refund 2004 stx-no-such-charge")
    await admin.wait_for_message(lambda m: "не найден" in m.text, after=cursor)
    cursor = admin.cursor()
    await admin.send_text("/admin_refund")
    await admin.wait_for_message(lambda m: "Использование" in m.text, after=cursor)


async def test_refund_of_spent_credits_follows_the_policy(harness: Harness) -> None:
    harness.overrides = {"telegram": {"admin_ids": [ADMIN]}}
    app = await harness.start()
    user = harness.tg.user(2005)
    payment = await buy(user, "50 кредитов")
    await add_credits(app.db, app.users, 2005, -60, note="spent on videos")  # 80 → 20
    admin = harness.tg.user(ADMIN)
    cursor = admin.cursor()
    await admin.send_text(f"/admin_refund 2005 {payment.charge_id}")
    await admin.wait_for_message(lambda m: "потрачены" in m.text, after=cursor)
    assert harness.tg.count("refundStarPayment") == 0
    assert payments(harness, 2005)[0]["status"] == "paid" and harness.balance(2005) == 20

    harness.overrides["payments"] = {"refund_when_spent": "allow"}
    await harness.restart()
    cursor = admin.cursor()
    await admin.send_text(f"/admin_refund 2005 {payment.charge_id}")
    done = await admin.wait_for_message(lambda m: "возвращено" in m.text, after=cursor)
    assert "списано 20" in done.text
    assert harness.balance(2005) == 0 and harness.tg.count("refundStarPayment") == 1
    assert payments(harness, 2005)[0]["refunded_credits"] == 20


async def test_telegram_refusing_the_refund_changes_nothing(harness: Harness) -> None:
    harness.overrides = {"telegram": {"admin_ids": [ADMIN]}}
    await harness.start()
    user = harness.tg.user(2006)
    payment = await buy(user, "50 кредитов")
    harness.tg.fail_next("refundStarPayment", status=400, description="Bad Request: CHARGE_NOT_FOUND")
    admin = harness.tg.user(ADMIN)
    cursor = admin.cursor()
    await admin.send_text(f"/admin_refund 2006 {payment.charge_id}")
    await admin.wait_for_message(lambda m: "Telegram отказал" in m.text, after=cursor)
    assert payments(harness, 2006)[0]["status"] == "paid" and harness.balance(2006) == 80
    # It can be tried again.
    cursor = admin.cursor()
    await admin.send_text(f"/admin_refund 2006 {payment.charge_id}")
    await admin.wait_for_message(lambda m: "возвращено" in m.text, after=cursor)
    assert harness.balance(2006) == 30


def run_cli(harness: Harness, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "neurocards", *args, "--config", str(harness.config_path)],
                          cwd=harness.tmp, capture_output=True, text=True, timeout=60, env=child_env())


async def test_cli_refund_calls_telegram_once(harness: Harness) -> None:
    await harness.start()
    user = harness.tg.user(2007)
    payment = await buy(user, "50 кредитов")
    assert payment.charge_id is not None
    cursor = user.cursor()
    result = await asyncio.to_thread(run_cli, harness, "payments", "refund", "2007", payment.charge_id)
    assert result.returncode == 0, result.stderr
    assert "refunded 50 stars, -50 credits, balance 30" in result.stdout
    await user.wait_for_message(lambda m: "возвращён" in m.text, after=cursor)
    assert harness.tg.charges[payment.charge_id].refunded and harness.balance(2007) == 30
    again = await asyncio.to_thread(run_cli, harness, "payments", "refund", "2007", payment.charge_id)
    assert again.returncode == 1 and "AlreadyRefunded" in again.stderr
    assert harness.tg.count("refundStarPayment") == 1
    row = payments(harness, 2007)[0]
    assert row["status"] == "refunded" and row["refunded_by"] is None


async def test_paysupport_and_terms(harness: Harness) -> None:
    harness.overrides = {"payments": {"terms_text": "Наши условия <простые>."}}
    await harness.start()
    user = harness.tg.user(2008)
    await user.send_text("/paysupport")
    await user.wait_for_message(lambda m: "@nc_help" in m.text and "оплате" in m.text)
    await user.send_text("/terms")
    await user.wait_for_message(lambda m: "Наши условия <простые>." in m.text)
