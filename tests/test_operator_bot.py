"""The operator's side of the running bot: admin input out of range, forged buttons."""

from __future__ import annotations

from tests.harness import Harness

ADMIN = 900


async def _started(harness: Harness, user_id: int, name: str = "Test"):
    user = harness.tg.user(user_id, name)
    cursor = user.cursor()
    await user.send_text("/start")
    await user.wait_for_message(lambda m: "Баланс" in m.text, after=cursor)
    return user


async def _reply(user, text: str) -> str:
    cursor = user.cursor()
    await user.send_text(text)
    return (await user.wait_for_message(lambda m: True, after=cursor)).text


async def test_admin_numbers_outside_int64_get_one_line(harness: Harness) -> None:
    harness.overrides = {"telegram": {"admin_ids": [ADMIN]}}
    await harness.start()
    admin = await _started(harness, ADMIN, "Admin")
    await _started(harness, 6001)
    for command, needle in (("/admin_add_credits 6001 100000000000000000000", "сумма"),
                            ("/admin_add_credits 6001 9223372036854775807", "сумма"),
                            ("/admin_add_credits 6001 1000001", "сумма"),
                            ("/admin_add_credits 100000000000000000000 10", "не id"),
                            ("/admin_add_credits -5 10", "не id"),
                            ("/admin_ban -5", "не id"),
                            ("/admin_user_info 1180591620717411303424", "не id"),
                            ("/admin_refund 100000000000000000000 charge", "Использование")):
        reply = await _reply(admin, command)
        assert needle in reply and "\n" not in reply, (command, reply)
    assert harness.balance(6001) == 30
    assert harness.query("SELECT COUNT(*) AS n FROM users")[0]["n"] == 2
    reply = await _reply(admin, "/admin_add_credits 6001 1000000")  # the bound itself is allowed
    assert "+1000000" in reply and harness.balance(6001) == 1_000_030


async def test_forged_callback_numbers_are_a_stale_button(harness: Harness) -> None:
    await harness.start()
    user = await _started(harness, 6002)
    menu = user.last_message
    assert menu is not None
    for data in (f"a:{2**70}", "a:-1", f"vr:{2**64}", f"t:{2**70}:studio", "q:99999999999999999999"):
        query_id = await user.click_data(menu, data)
        answer = await harness.tg.wait_until(lambda q=query_id: harness.tg.state.callbacks[q].answer)
        assert answer.text and "\n" not in answer.text, (data, answer)
    assert harness.balance(6002) == 30
    assert harness.app is not None and harness.app._polling is not None and not harness.app._polling.done()
