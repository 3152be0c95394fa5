"""Shrinking a finished video to fit the Bot API upload limit (ffmpeg from imageio-ffmpeg)."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

log = logging.getLogger("neurocards.video")

_DURATION = re.compile(rb"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")


def ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


async def _run(args: list[str], timeout_s: float) -> tuple[int, bytes]:
    proc = await asyncio.create_subprocess_exec(
        *args, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return -1, b"timeout"
    return proc.returncode or 0, err


async def video_duration_s(path: Path) -> float | None:
    _, err = await _run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], 30)
    match = _DURATION.search(err)
    if not match:
        return None
    h, m, s = match.groups()
    return int(h) * 3600 + int(m) * 60 + float(s)


async def compress_to_fit(src: Path, dest: Path, max_bytes: int, *, timeout_s: float = 300) -> int | None:
    """Re-encode `src` to at most `max_bytes` (H.264, bitrate from the duration).

    Returns the new size, or None when the file is not a readable video or cannot be made small
    enough; the caller then treats the video as undeliverable.
    """
    duration = await video_duration_s(src)
    if not duration or duration <= 0:
        return None
    part = dest.with_suffix(".part.mp4")
    # 90 % of the budget for video, a little kept for the container; two tries, the second leaner.
    for share in (0.85, 0.6):
        kbits = max(64, int(max_bytes * 8 * share / duration / 1000))
        code, err = await _run([
            ffmpeg_exe(), "-hide_banner", "-y", "-i", str(src), "-c:v", "libx264", "-preset", "veryfast",
            "-b:v", f"{kbits}k", "-maxrate", f"{kbits}k", "-bufsize", f"{2 * kbits}k",
            "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", "-movflags", "+faststart", str(part),
        ], timeout_s)
        if code != 0:
            log.warning("compression of %s failed: %s", src.name, err[-300:].decode(errors="replace"))
            part.unlink(missing_ok=True)
            return None
        size = part.stat().st_size
        if size <= max_bytes:
            part.replace(dest)
            return size
    part.unlink(missing_ok=True)
    return None


async def reshape(src: Path, dest: Path, width: int, height: int, *, pad: bool,
                  timeout_s: float = 300) -> bool:
    """Re-encode `src` as width x height: centre-cropped, or (`pad`) fitted over a blurred copy
    of itself. Sound is kept as it is. Returns False when ffmpeg fails."""
    if pad:
        graph = (f"[0:v]split[a][b];[a]scale={width}:{height}:force_original_aspect_ratio=increase,"
                 f"crop={width}:{height},boxblur=20:2[bg];"
                 f"[b]scale={width}:{height}:force_original_aspect_ratio=decrease[fg];"
                 f"[bg][fg]overlay=(W-w)/2:(H-h)/2,setsar=1,format=yuv420p[v]")
    else:
        graph = (f"[0:v]scale={width}:{height}:force_original_aspect_ratio=increase,"
                 f"crop={width}:{height},setsar=1,format=yuv420p[v]")
    part = dest.with_suffix(".part.mp4")
    code, err = await _run([
        ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", "-i", str(src), "-filter_complex", graph,
        "-map", "[v]", "-map", "0:a?", "-c:v", "libx264", "-preset", "veryfast", "-crf", "20",
        "-c:a", "copy", "-movflags", "+faststart", str(part),
    ], timeout_s)
    if code != 0:
        log.warning("reshaping %s failed: %s", src.name, err[-300:].decode(errors="replace"))
        part.unlink(missing_ok=True)
        return False
    part.replace(dest)
    return True


def _boxes(data: bytes, start: int, end: int):
    """(type, payload start, box end) of the ISO-BMFF boxes in data[start:end]."""
    pos = start
    while pos + 8 <= end:
        size = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        header = 8
        if size == 1 and pos + 16 <= end:
            size, header = int.from_bytes(data[pos + 8:pos + 16], "big"), 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            return
        yield kind, pos + header, pos + size
        pos += size


def mp4_video_size(path: Path) -> tuple[int, int] | None:
    """(width, height) of the first video track from the MP4's own header (tkhd), read in Python:
    no ffmpeg process for the common case, and only the `moov` box is read into memory.
    None when the file has no such header."""
    try:
        moov = _read_moov(path)
    except OSError:
        return None
    if moov is None:
        return None
    for trak, t_start, t_end in _boxes(moov, 0, len(moov)):
        if trak != b"trak":
            continue
        for box, b_start, b_end in _boxes(moov, t_start, t_end):
            offset = b_start + (88 if moov[b_start:b_start + 1] == b"\x01" else 76)  # v1: 64-bit times
            if box != b"tkhd" or offset + 8 > b_end:
                continue
            width = int.from_bytes(moov[offset:offset + 4], "big") >> 16
            height = int.from_bytes(moov[offset + 4:offset + 8], "big") >> 16
            if width and height:  # audio tracks have 0 x 0
                return width, height
    return None


MAX_MOOV_BYTES = 64 * 1024 * 1024


def _read_moov(path: Path) -> bytes | None:
    """The payload of the top-level `moov` box, found by hopping over the other boxes."""
    with path.open("rb") as f:
        end = f.seek(0, 2)
        pos = 0
        while pos + 8 <= end:
            f.seek(pos)
            head = f.read(16)
            size, kind, header = int.from_bytes(head[:4], "big"), head[4:8], 8
            if size == 1 and len(head) == 16:
                size, header = int.from_bytes(head[8:16], "big"), 16
            elif size == 0:
                size = end - pos
            if size < header or pos + size > end:
                return None
            if kind == b"moov":
                if size > MAX_MOOV_BYTES:
                    return None
                f.seek(pos + header)
                return f.read(size - header)
            pos += size
    return None
