"""Every failure class end to end: what KIE saw, what the seller got, what the balance is."""

from __future__ import annotations

from tests.harness import KIE_KEY, Harness, launch, videos

DELAYS = [0.05, 0.1, 0.2, 0.4]


async def _failed(harness: Harness, user_id: int) -> None:
    await harness.wait_jobs(lambda rows: bool(rows) and all(r["state"] == "failed" for r in rows))


async def _done(harness: Harness) -> None:
    await harness.wait_jobs(lambda rows: bool(rows) and all(r["state"] == "done" for r in rows))


def _retry_delays(harness: Harness, job_id: int) -> list[float]:
    events = harness.query("SELECT detail FROM job_events WHERE job_id = ? AND detail LIKE 'retry %' ORDER BY id",
                           (job_id,))
    return [float(e["detail"].split(" in ")[1].split("s ")[0]) for e in events]


async def _admin(harness: Harness):
    admin = harness.tg.user(900, "Admin")
    await admin.send_text("/start")
    await admin.wait_for_message(lambda m: "Баланс" in m.text)
    return admin


async def test_user_violation_is_not_retried_and_refunded(harness: Harness) -> None:
    await harness.start()
    user = harness.tg.user(3001)
    harness.kie.fail_task("next", fail_code="400", fail_msg="public error prominent people upload")
    await launch(user)
    message = await user.wait_for_message(lambda m: "отклонил" in m.text)
    await _failed(harness, 3001)
    assert harness.kie.count("veoGenerate") == 1
    assert "без людей" in message.text and "Кредиты возвращены" in message.text
    assert "люди" in message.text  # the reason, in words a seller understands
    assert message.buttons == [["📷 Отправить другое фото"], ["🏠 Меню"]]
    assert harness.balance(3001) == 30
    assert harness.ledger(3001) == [(30, "welcome"), (-10, "job_charge"), (10, "job_refund")]
    # "Try another photo" really starts over with a photo.
    cursor = user.cursor()
    await user.click(message, "📷 Отправить другое фото")
    await user.wait_for_message(lambda m: "Отправьте фото товара" in m.text, after=cursor)


async def test_temporary_errors_are_retried_with_growing_backoff_then_succeed(harness: Harness) -> None:
    await harness.start()
    user = harness.tg.user(3002)
    harness.kie.fail_next("veoGenerate", http_status=500, times=2)
    await launch(user)
    await harness.tg.wait_until(lambda: len(videos(user)) == 1)
    await _done(harness)
    assert harness.kie.count("veoGenerate") == 3
    assert sum("Первая попытка не удалась" in m.text for m in user.messages) == 1  # one calm note
    job_id = harness.jobs(3002)[0]["id"]
    assert _retry_delays(harness, job_id) == DELAYS[:2]
    assert harness.balance(3002) == 20  # charged once, no refund while retrying


async def test_temporary_errors_exhausted_refund_after_five_attempts(harness: Harness) -> None:
    await harness.start()
    user = harness.tg.user(3003)
    harness.kie.fail_next("veoGenerate", code=500, msg="Server Error", times=10)
    await launch(user)
    message = await user.wait_for_message(lambda m: "Не удалось создать видео" in m.text, timeout=15)
    await _failed(harness, 3003)
    assert "после 5 попыток" in message.text and "Кредиты возвращены" in message.text
    assert message.buttons == [["🔄 Попробовать ещё раз"], ["🏠 Меню"]]
    assert harness.kie.count("veoGenerate") == 5  # the first try and 4 retries, no more
    assert _retry_delays(harness, harness.jobs(3003)[0]["id"]) == DELAYS
    # The operator's error report names KIE's own answer, not a crash of ours after one retry too many.
    job = harness.jobs(3003)[0]
    assert (job["error_class"], job["error_text"]) == ("temporary", "Server Error")
    assert harness.balance(3003) == 30
    cursor = user.cursor()
    await user.click(message, "🔄 Попробовать ещё раз")  # back to the styles with the same product
    await user.wait_for_message(lambda m: "Выберите стиль" in m.text, after=cursor)


async def test_failed_task_is_resubmitted_as_a_new_task(harness: Harness) -> None:
    await harness.start()
    user = harness.tg.user(3004)
    harness.kie.fail_task("next", fail_code="500", fail_msg="Internal Error - Timeout")
    await launch(user)
    await harness.tg.wait_until(lambda: len(videos(user)) == 1)
    await _done(harness)
    assert harness.kie.count("veoGenerate") == 2
    job = harness.jobs(3004)[0]
    assert job["task_id"] == list(harness.kie.tasks)[-1]
    assert harness.balance(3004) == 20


async def test_rate_limit_waits_on_its_own_schedule_without_scaring_the_user(harness: Harness) -> None:
    harness.overrides = {"generation.retry": {"rate_limit_delays_s": [0.3, 0.6, 1.2]}}
    await harness.start()
    user = harness.tg.user(3005)
    harness.kie.fail_next("veoGenerate", code=429, msg="Rate limited")
    await launch(user)
    await harness.tg.wait_until(lambda: len(videos(user)) == 1)
    await _done(harness)
    assert harness.kie.count("veoGenerate") == 2
    assert not any("Первая попытка" in m.text for m in user.messages)
    assert _retry_delays(harness, harness.jobs(3005)[0]["id"]) == [0.3]
    assert harness.balance(3005) == 20


async def test_billing_moves_to_the_next_key(harness: Harness) -> None:
    second = "kie-test-key-0002"
    harness.kie.keys.add(second)
    harness.overrides = {"kie": {"api_keys": [KIE_KEY, second]}, "telegram": {"admin_ids": [900]}}
    admin = harness.tg.user(900, "Admin")
    await admin.send_text("/start")
    await harness.start()
    harness.kie.set_key_error(KIE_KEY, code=402, msg="The current credits are insufficient. Please top up.")
    user = harness.tg.user(3006)
    for expected in (1, 2):
        await launch(user)
        await harness.tg.wait_until(lambda expected=expected: len(videos(user)) == expected)
    await _done(harness)
    assert all(t.key == second for t in harness.kie.tasks.values())
    assert harness.balance(3006) == 10
    alert = await admin.wait_for_message(lambda m: "отключён" in m.text)
    assert "осталось рабочих ключей: 1" in alert.text and KIE_KEY not in alert.text


async def test_billing_with_no_key_left_refunds_and_alerts_admins(harness: Harness) -> None:
    harness.overrides = {"telegram": {"admin_ids": [900]}}
    await harness.start()
    admin = await _admin(harness)
    harness.kie.set_key_error(KIE_KEY, code=402, msg="The current credits are insufficient. Please top up.")
    user = harness.tg.user(3007)
    await launch(user, quantity=2)
    await harness.tg.wait_until(lambda: sum("Временная техническая проблема" in m.text for m in user.messages) == 2)
    await _failed(harness, 3007)
    message = next(m for m in user.messages if "Временная техническая проблема" in m.text)
    assert "Кредиты возвращены" in message.text and "@nc_help" in message.text
    assert harness.balance(3007) == 30
    alert = await admin.wait_for_message(lambda m: "KIE" in m.text and "ключ" in m.text)
    assert "insufficient" in alert.text
    assert sum("ни один API-ключ" in m.text for m in admin.messages) == 1  # de-duplicated


async def test_our_bug_is_not_retried_and_admins_get_the_raw_text(harness: Harness) -> None:
    harness.overrides = {"telegram": {"admin_ids": [900]}}
    await harness.start()
    admin = await _admin(harness)
    harness.kie.fail_next("veoGenerate", code=422, msg="The page does not exist or is not published")
    user = harness.tg.user(3008)
    await launch(user)
    await user.wait_for_message(lambda m: "Временная техническая проблема" in m.text)
    await _failed(harness, 3008)
    assert harness.kie.count("veoGenerate") == 1
    await admin.wait_for_message(lambda m: "The page does not exist or is not published" in m.text)
    assert harness.balance(3008) == 30


async def test_unknown_error_is_retried_like_temporary(harness: Harness) -> None:
    await harness.start()
    user = harness.tg.user(3009)
    harness.kie.fail_next("veoGenerate", code=418, msg="I'm a teapot")
    await launch(user)
    await harness.tg.wait_until(lambda: len(videos(user)) == 1)
    assert harness.kie.count("veoGenerate") == 2
    events = harness.query("SELECT detail FROM job_events WHERE detail LIKE 'retry%unknown'")
    assert len(events) == 1


async def test_malformed_and_failed_polls_do_not_create_new_tasks(harness: Harness) -> None:
    await harness.start()
    user = harness.tg.user(3010)
    harness.kie.fail_next("veoRecordInfo", malformed=True, times=2)
    harness.kie.fail_next("veoRecordInfo", http_status=502, times=1)
    await launch(user)
    await harness.tg.wait_until(lambda: len(videos(user)) == 1)
    assert harness.kie.count("veoGenerate") == 1
    assert harness.balance(3010) == 20


async def test_task_running_too_long_is_refunded_not_resubmitted(harness: Harness) -> None:
    harness.overrides = {"kie": {"timeout_s": 0.5}}
    harness.kie.generation_delay_s = 3600
    await harness.start()
    user = harness.tg.user(3011)
    await launch(user)
    message = await user.wait_for_message(lambda m: "слишком много времени" in m.text)
    await _failed(harness, 3011)
    assert "Кредиты возвращены" in message.text
    assert harness.kie.count("veoGenerate") == 1
    assert harness.balance(3011) == 30


async def test_result_download_failure_is_retried_as_a_download(harness: Harness) -> None:
    await harness.start()
    user = harness.tg.user(3012)
    harness.kie.fail_download(times=2, http_status=503)
    await launch(user)
    await harness.tg.wait_until(lambda: len(videos(user)) == 1)
    assert harness.kie.count("veoGenerate") == 1
    assert harness.kie.count("download") == 3
    assert videos(user)[0].media == harness.kie.video_bytes


async def test_upload_timeout_is_retried(harness: Harness) -> None:
    harness.overrides = {"kie": {"http_timeout_s": 0.3}}
    await harness.start()
    user = harness.tg.user(3013)
    harness.kie.fail_next("upload", delay_s=1.0)
    await launch(user)
    await harness.tg.wait_until(lambda: len(videos(user)) == 1)
    assert harness.kie.count("veoGenerate") == 1
    assert harness.balance(3013) == 20


async def test_long_wait_gets_exactly_one_calm_notice(harness: Harness) -> None:
    harness.overrides = {"generation.retry": {"queue_notice_after_s": 0.4}}
    harness.kie.generation_delay_s = 2.0
    await harness.start()
    user = harness.tg.user(3014)
    await launch(user, quantity=2)
    notice = await user.wait_for_message(lambda m: "Сервис генерации загружен" in m.text)
    assert "Осталось примерно" in notice.text and "мин" in notice.text
    await harness.tg.wait_until(lambda: len(videos(user)) == 2, timeout=15)
    assert sum("Сервис генерации загружен" in m.text for m in user.messages) == 1
