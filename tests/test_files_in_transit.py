"""Files on their way: the photo to the provider, the video back and on to Telegram.

How big a finished video may be, how long its upload took, Telegram's "wait" without a number, the
photo's file name at the provider and the upload locks. Over the in-memory provider (a result file
of any size is written sparse) and a scripted sendVideo: what reaches the seller, what is refunded,
and what the operator's metrics say.
"""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path

from PIL import Image

from neurocards.jobs.notifier import DeliveryError, DeliveryErrorKind
from neurocards.store.jobs import Job
from tests.engine_kit import EngineKit, done, failed, running_kit
from tests.test_faults_delivery import real_mp4

MIB = 1024 * 1024


def outputs(kit: EngineKit) -> list[Path]:
    return sorted(kit.config.storage.outputs_dir.glob("*"))


def record_sizes(kit: EngineKit) -> list[int]:
    """The size of each file handed to sendVideo."""
    sizes: list[int] = []
    deliver = kit.notifier.deliver_video

    async def measured(job: Job, path: Path | None, *args: object, **kwargs: object) -> str:
        sizes.append(path.stat().st_size if path is not None else -1)
        return await deliver(job, path, *args, **kwargs)  # type: ignore[arg-type]

    kit.notifier.deliver_video = measured  # type: ignore[method-assign]
    return sizes


async def test_a_result_over_2_gib_is_never_fetched_and_the_seller_is_refunded(engine_kit: EngineKit) -> None:
    """A small VPS's disk is not filled by one runaway result: the download stops at 2 GiB."""
    kit = engine_kit
    kit.provider.result_size = 2 * 1024**3 + 1
    [job_id] = await kit.order()
    await kit.wait(failed)
    assert kit.notifier.videos == [] and outputs(kit) == []
    assert await kit.users.balance(1) == 100
    assert any(event[1] == job_id and event[0].startswith("failed:") for event in kit.notifier.events)


async def test_a_video_of_exactly_the_upload_limit_is_sent_as_it_is(tmp_path: Path) -> None:
    async with running_kit(tmp_path, overrides={"telegram": {"max_upload_mb": 1}}) as kit:
        sizes = record_sizes(kit)
        kit.provider.result_size = MIB
        [job_id] = await kit.order()
        await kit.wait(done)
        assert kit.notifier.videos == [job_id] and sizes == [MIB]
        assert await kit.users.balance(1) == 90


async def test_a_video_one_byte_over_the_upload_limit_is_never_sent_as_it_is(tmp_path: Path) -> None:
    """Over the limit it must be shrunk first; this one is not a real video, so it cannot be, and the
    seller gets the credits back instead of a sendVideo Telegram would refuse."""
    async with running_kit(tmp_path, overrides={"telegram": {"max_upload_mb": 1}}) as kit:
        sizes = record_sizes(kit)
        kit.provider.result_size = MIB + 1
        [job_id] = await kit.order()
        await kit.wait(failed)
        await kit.event(("delivery_failed", job_id))
        assert sizes == [] and kit.notifier.videos == []
        assert await kit.users.balance(1) == 100 and outputs(kit) == []


async def test_a_video_over_the_upload_limit_is_shrunk_and_then_sent(tmp_path: Path) -> None:
    """An order without a chosen format keeps the model's video; one over Telegram's limit is
    re-encoded to fit, sent, and neither file stays on disk."""
    big = real_mp4(str(tmp_path / "big.mp4"))
    assert len(big) > MIB
    async with running_kit(tmp_path, overrides={"telegram": {"max_upload_mb": 1}}) as kit:
        sizes = record_sizes(kit)
        kit.provider.result_content = big
        [job_id] = await kit.order()
        # The file goes first, then the row forgets its path.
        await kit.wait(lambda js: done(js) and not outputs(kit) and js[0].video_path is None)
        assert kit.notifier.videos == [job_id] and len(sizes) == 1 and 0 < sizes[0] <= MIB
        assert await kit.users.balance(1) == 90


async def test_the_upload_time_metric_measures_the_send(engine_kit: EngineKit) -> None:
    kit = engine_kit
    deliver = kit.notifier.deliver_video

    async def slow_upload(*args: object, **kwargs: object) -> str:
        await asyncio.sleep(0.3)
        return await deliver(*args, **kwargs)  # type: ignore[arg-type]

    kit.notifier.deliver_video = slow_upload  # type: ignore[method-assign]
    await kit.order()
    # Measured right after the database says delivered.
    await kit.wait(lambda js: done(js) and kit.metric("neurocards_delivery_seconds_count") == 1)
    assert 0.3 <= kit.metric("neurocards_delivery_seconds_sum") < 10


async def test_flood_control_without_a_wait_time_waits_a_second_and_sends_once(engine_kit: EngineKit) -> None:
    """Telegram's 429 normally says how long to wait; without a number the bot waits one second
    rather than hammering it (or giving up), and the video arrives once."""
    kit = engine_kit
    calls: list[float] = []
    deliver = kit.notifier.deliver_video

    async def flood_once(*args: object, **kwargs: object) -> str:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise DeliveryError(DeliveryErrorKind.RETRY_AFTER, "Too Many Requests", retry_after=None)
        return await deliver(*args, **kwargs)  # type: ignore[arg-type]

    kit.notifier.deliver_video = flood_once  # type: ignore[method-assign]
    [job_id] = await kit.order()
    await kit.wait(done)
    assert kit.notifier.videos == [job_id] and len(calls) == 2
    assert 1.0 <= calls[1] - calls[0] < 1.9
    assert ("delivery_delayed", job_id) not in kit.notifier.events


async def test_a_restart_after_the_shrinking_sends_the_shrunk_file_without_fetching_again(tmp_path: Path) -> None:
    """Killed while the shrunk video was uploading: the restart sends the file already on disk; it
    neither downloads the video again nor shrinks it a second time."""
    big = real_mp4(str(tmp_path / "big.mp4"))
    async with running_kit(tmp_path, overrides={"telegram": {"max_upload_mb": 1}}) as kit:
        kit.provider.result_content = big
        downloads: list[str] = []
        download = kit.provider.download

        async def counted(url: str, dest: Path, max_bytes: int) -> int:
            downloads.append(url)
            return await download(url, dest, max_bytes)

        kit.provider.download = counted  # type: ignore[method-assign]
        deliver = kit.notifier.deliver_video

        async def hanging(*args: object, **kwargs: object) -> str:
            await asyncio.Event().wait()
            raise AssertionError("a hanging sendVideo never answers")

        kit.notifier.deliver_video = hanging  # type: ignore[method-assign]
        [job_id] = await kit.order()
        await kit.wait(lambda js: js[0].send_pending)
        kit.notifier.deliver_video = deliver  # type: ignore[method-assign]
        await kit.restart()
        await kit.wait(lambda js: done(js) and not outputs(kit))
        assert kit.notifier.videos == [job_id] and len(downloads) == 1


async def _product(kit: EngineKit, name: str, data: bytes) -> int:
    if await kit.users.get(1) is None:
        await kit.users.touch(1, username=None, first_name="S", language="ru", welcome_credits=100)
    photo = kit.tmp / name
    photo.write_bytes(data)
    product_id = await kit.products.create(1, "file-id", str(photo))
    await kit.products.set_description(product_id, "Кружка")
    return product_id


def image(size: tuple[int, int], fmt: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 40, 40)).save(out, fmt)
    return out.getvalue()


async def test_the_photo_reaches_the_provider_named_by_its_own_type(engine_kit: EngineKit) -> None:
    """The uploaded file keeps the photo's extension (the provider serves it by that type); a photo
    without one is a JPEG from Telegram; a photo given the chosen shape is re-encoded as JPEG."""
    kit = engine_kit
    png = await _product(kit, "shoe.png", image((600, 600), "PNG"))
    bare = await _product(kit, "photo", image((600, 600), "JPEG"))
    shaped = await _product(kit, "bag.png", image((600, 600), "PNG"))
    await kit.order(product_id=png)
    await kit.order(product_id=bare)
    await kit.order(product_id=shaped, aspect_ratio="9:16")
    await kit.wait(done, timeout=15)
    assert sorted(kit.provider.uploads) == sorted([f"p{png}.png", f"p{bare}.jpg", f"p{shaped}.jpg"])


async def test_no_upload_lock_stays_behind_once_a_products_videos_are_made(engine_kit: EngineKit) -> None:
    """One lock per product while its photo uploads; a bot running for months keeps none of them."""
    kit = engine_kit
    await kit.order(count=2)
    await kit.order(count=1)
    await kit.wait(lambda js: len(js) == 3 and done(js))
    assert kit.engine._upload_locks == {}
