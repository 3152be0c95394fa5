"""Bad pictures get a clear "send a normal photo" and cost nothing; big ones are made to fit KIE."""

from __future__ import annotations

import io
import os
import struct
import zlib

from PIL import Image

from neurocards.services.products import (
    PROVIDER_MAX_IMAGE_BYTES,
    PhotoProblem,
    PhotoRejected,
    check_photo,
)
from tests.fakes.telegram_user import FakeUser
from tests.harness import Harness, product_jpeg, videos


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 60, 60)).save(out, "PNG")
    return out.getvalue()


def with_header_size(data: bytes, width: int, height: int) -> bytes:
    """The same PNG whose IHDR claims another size (with a valid CRC, so only the pixels can tell)."""
    assert data[12:16] == b"IHDR"
    ihdr = b"IHDR" + struct.pack(">II", width, height) + data[24:29]
    return data[:8] + struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + data[33:]


def animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (400, 400), color) for color in ((255, 0, 0), (0, 0, 255))]
    out = io.BytesIO()
    frames[0].save(out, fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return out.getvalue()


def noise_jpeg(side: int, quality: int) -> bytes:
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(out, "JPEG", quality=quality)
    return out.getvalue()


def test_the_checks_name_each_problem() -> None:
    cases = {
        PhotoProblem.TOO_MANY_PIXELS: with_header_size(png(300, 300), 20000, 20000),
        PhotoProblem.DAMAGED: with_header_size(png(600, 600), 1200, 1200),
        PhotoProblem.ANIMATED: animated("GIF"),
    }
    for problem, data in cases.items():
        try:
            check_photo(data)
        except PhotoRejected as exc:
            assert exc.problem is problem
        else:
            raise AssertionError(f"{problem} was accepted")
    truncated = product_jpeg(1200, 1600)
    try:
        check_photo(truncated[: len(truncated) * 2 // 3])
    except PhotoRejected as exc:
        assert exc.problem is PhotoProblem.DAMAGED
    else:
        raise AssertionError("a truncated JPEG was accepted")
    check_photo(product_jpeg())


async def _send(user: FakeUser, data: bytes, name: str, mime: str) -> str:
    cursor = user.cursor()
    await user.send_document(data, file_name=name, mime_type=mime)
    return (await user.wait_for_message(after=cursor)).text


async def test_bad_pictures_get_a_clear_answer_and_charge_nothing(harness: Harness) -> None:
    await harness.start()
    user = harness.tg.user(5201)
    await user.send_text("/start")
    await user.wait_for_message(lambda m: "Баланс" in m.text)
    answer = await _send(user, with_header_size(png(300, 300), 20000, 20000), "bomb.png", "image/png")
    assert "слишком много пикселей" in answer and "обычное фото" in answer
    answer = await _send(user, with_header_size(png(600, 600), 1200, 1200), "liar.png", "image/png")
    assert "повреждена" in answer and "обычное фото" in answer
    jpeg = product_jpeg(1200, 1600)
    answer = await _send(user, jpeg[: len(jpeg) // 2], "cut.jpg", "image/jpeg")
    assert "повреждена" in answer
    for data, name, mime in ((animated("GIF"), "a.gif", "image/gif"), (animated("WEBP"), "a.webp", "image/webp")):
        answer = await _send(user, data, name, mime)
        assert "анимация" in answer and "обычная фотография" in answer, name
    cursor = user.cursor()
    await user.send_animation(harness.kie.video_bytes)
    answer = (await user.wait_for_message(after=cursor)).text
    assert "анимация" in answer

    assert harness.query("SELECT id FROM products WHERE user_id = 5201") == []
    assert harness.balance(5201) == 30 and harness.jobs(5201) == []
    assert harness.kie.uploads == []


async def test_a_photo_over_10_mb_is_re_encoded_before_upload(harness: Harness) -> None:
    await harness.start()
    user = harness.tg.user(5202)
    big = noise_jpeg(3000, 98)
    assert PROVIDER_MAX_IMAGE_BYTES < len(big) < 20 * 1024 * 1024
    await user.send_text("/start")
    await user.wait_for_message(lambda m: "Баланс" in m.text)
    # Sent as a file (a photo would be compressed by Telegram), described, ordered.
    cursor = user.cursor()
    await user.send_document(big, file_name="big.jpg", mime_type="image/jpeg")
    await user.wait_for_message(lambda m: "опишите товар" in m.text, after=cursor)
    await user.send_text("Картина маслом, рама из дуба")
    styles = await user.wait_for_message(lambda m: "Выберите стиль" in m.text, after=cursor)
    await user.click(styles, "🔄 Студийный поворот")
    formats = await user.wait_for_message(lambda m: "Формат видео" in m.text, after=cursor)
    await user.click(formats, "⏭ Оставить")
    wishes = await user.wait_for_message(lambda m: "пожелания" in m.text, after=cursor)
    await user.click(wishes, "⏭ Пропустить")
    qty = await user.wait_for_message(lambda m: "Сколько видео" in m.text, after=cursor)
    await user.click(qty, "1 видео")
    confirm = await user.wait_for_message(lambda m: "Проверьте заказ" in m.text, after=cursor)
    await user.click(confirm, "✅ Запустить")
    await harness.tg.wait_until(lambda: len(videos(user)) == 1, timeout=30)

    upload = harness.kie.uploads[-1].data
    assert len(upload) <= PROVIDER_MAX_IMAGE_BYTES
    with Image.open(io.BytesIO(upload)) as img:
        assert img.format == "JPEG" and max(img.size) >= 2000  # still a sharp photo
        img.load()
    await harness.wait_jobs(lambda rows: len(rows) == 1 and rows[0]["state"] == "done")
    assert harness.balance(5202) == 20
    assert [reason for _, reason in harness.ledger(5202)].count("job_refund") == 0
