"""Sandbox video provider: a local ffmpeg "Ken Burns" clip instead of a paid AI model.

The photo is blur-filled to the frame by Pillow, slowly zoomed/panned by ffmpeg's zoompan and
captioned with the product name. The caption is a Pillow-drawn PNG overlay, not ffmpeg
`drawtext`: a static ffmpeg may lack fontconfig, and Pillow can pick a font that really has
the (usually Cyrillic) glyphs.

State lives in files so a restarted bot can keep polling: `results/<task>.mp4` appears only
when complete (ffmpeg writes `.part`), `results/<task>.failed.json` records a failure, and a
task with neither and no running render was lost in a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
import shutil
import unicodedata
import uuid
from pathlib import Path
from typing import IO

from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

from neurocards.providers.base import (
    BeforeSend,
    ErrorKind,
    ProviderError,
    SubmittedTask,
    TaskState,
    TaskStatus,
    VideoRequest,
)

log = logging.getLogger("neurocards.sandbox")

KEY_ID = "sandbox"
CAPTION_MAX = 40
MIN_DURATION_S, MAX_DURATION_S = 5.0, 10.0
SUPERSAMPLE = 2  # zoompan crops whole input pixels: a 2x source halves the visible steps
ZOOM = 0.12  # enough travel to read as motion, not enough to crop the product away
LOST_MSG = "sandbox task lost (restart during render)"
FRAME_ASPECTS = ("9:16", "3:4", "1:1", "16:9")
_TASK_RE = re.compile(r"sbx_[0-9a-f]{32}")
_UPLOAD_RE = re.compile(r"[0-9a-f]{32}\.[a-z0-9]{1,5}")
# Bold sans fonts with Cyrillic at the paths common distributions use; then any TTF at all.
_FONT_CANDIDATES = tuple(f"/usr/share/fonts/{p}" for p in (
    "truetype/dejavu/DejaVuSans-Bold.ttf", "dejavu/DejaVuSans-Bold.ttf", "TTF/DejaVuSans-Bold.ttf",
    "truetype/liberation/LiberationSans-Bold.ttf", "truetype/noto/NotoSans-Bold.ttf",
    "truetype/freefont/FreeSansBold.ttf"))
_CYR = "абвгдеёжзийклмнопрстуфхцчшщъыьэюя"
_LATIN = "a b v g d e e zh z i y k l m n o p r s t u f kh ts ch sh shch  y  e yu ya".split(" ")
_TRANSLIT = str.maketrans({"…": "...", **dict(zip(_CYR, _LATIN, strict=True)),
                           **{c.upper(): t.capitalize() for c, t in zip(_CYR, _LATIN, strict=True)}})
_Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


def caption_from_prompt(prompt: str, limit: int = CAPTION_MAX) -> str:
    """The product name: templates say "... video of {description}. ...", so take what follows."""
    match = re.search(r"\bvideo of\s+(.+)", prompt, re.I | re.S)
    text = match.group(1) if match else prompt
    return clip_caption(re.split(r"[.:;!?](?:\s|$)|\n|\s+placed\b", text, maxsplit=1)[0], limit)


def clip_caption(text: str, limit: int = CAPTION_MAX) -> str:
    # Emoji and pictographs ("So") have no glyph in text fonts: they would render as boxes.
    text = "".join(" " if unicodedata.category(ch) in ("So", "Cs", "Co", "Cc") else ch for ch in text)
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if " " in cut[limit // 2:]:  # end on a whole word unless that loses half the caption
        cut = cut[: cut.rfind(" ")]
    return cut.rstrip(" ,;-–—") + "…"


@functools.lru_cache(maxsize=1)
def _font_files() -> tuple[str, ...]:
    found = [p for p in _FONT_CANDIDATES if Path(p).is_file()]
    if Path("/usr/share/fonts").is_dir():
        found += sorted(str(p) for p in Path("/usr/share/fonts").rglob("*.ttf") if str(p) not in found)
    return tuple(found)


def _glyph(font: _Font, ch: str) -> bytes:
    side = 2 * int(getattr(font, "size", 16)) + 8
    img = Image.new("L", (side, side))
    ImageDraw.Draw(img).text((4, 4), ch, font=font, fill=255)
    return img.tobytes()


def _covers(font: _Font, text: str) -> bool:
    # A missing glyph renders as the font's .notdef, as an unassigned code point always does.
    notdef = _glyph(font, "\U0010fffd")
    return all(_glyph(font, ch) != notdef for ch in set(text) if not ch.isspace())


def _pick_font(text: str, size: int) -> tuple[_Font, str]:
    """A font with every glyph of `text`; failing that, Pillow's default and a transliteration."""
    for path in _font_files():
        with contextlib.suppress(OSError):
            font = ImageFont.truetype(path, size)
            if _covers(font, text):
                return font, text
    try:  # Pillow >= 10.1 with FreeType: scalable Aileron, which has no Cyrillic
        default: _Font = ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):
        default = ImageFont.load_default()
    return default, (text if _covers(default, text) else text.translate(_TRANSLIT))


def _wrap(text: str, font: _Font, max_w: float) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= max_w:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [""]


def render_caption(text: str, width: int, path: Path) -> int:
    """Draw `text` on a translucent band `width` wide into an RGBA PNG; return the band height."""
    size, max_w = max(10, width // 16), width * 0.86
    font, text = _pick_font(text, size)
    lines = _wrap(text, font, max_w)
    # The caption is one name: shrink the font rather than grow a wall of text or overflow.
    while size > 10 and (len(lines) > 2 or max(font.getlength(ln) for ln in lines) > max_w):
        size = max(10, size * 4 // 5)
        font, text = _pick_font(text, size)
        lines = _wrap(text, font, max_w)
    line_h, pad = round(size * 1.3), size // 2
    band = Image.new("RGBA", (width, line_h * len(lines) + 2 * pad), (0, 0, 0, 0))
    draw = ImageDraw.Draw(band)
    left = max(0, (width - max(font.getlength(ln) for ln in lines)) / 2 - pad)
    draw.rounded_rectangle((left, 0, width - left, band.height - 1), radius=pad, fill=(0, 0, 0, 150))
    for i, line in enumerate(lines):
        draw.text(((width - font.getlength(line)) / 2, pad + i * line_h), line, font=font, fill="white")
    band.save(path, compress_level=1)
    return band.height


class BadPhoto(Exception):
    """The uploaded photo cannot be decoded: the user's problem, not worth a retry."""


def compose_frame(photo: Path, path: Path, width: int, height: int) -> None:
    """The photo fitted into width x height over a blurred, darkened cover-crop of itself."""
    compose_image(photo, width, height).save(path, compress_level=1)


def compose_image(photo: Path | IO[bytes], width: int, height: int) -> Image.Image:
    """compose_frame's picture, in memory (also used to give a photo the shape a video needs)."""
    try:
        with Image.open(photo) as src:
            src.draft("RGB", (width, height))  # JPEG: decode big photos at a reduced scale, much faster
            img = ImageOps.exif_transpose(src)  # phones store rotation in EXIF; ffmpeg would ignore it
            img.load()
    except FileNotFoundError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise BadPhoto(str(exc).replace(str(photo), "photo")[:200]) from exc
    if "A" in img.getbands() or "transparency" in img.info:  # cut-out product PNGs: on white, not black
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    img = img.convert("RGB")
    # Blurring a tiny copy and scaling it up is far cheaper than a large-radius blur at full size.
    bg = ImageOps.fit(img, (max(1, width // 16), max(1, height // 16)), Image.Resampling.BILINEAR)
    bg = bg.filter(ImageFilter.GaussianBlur(2)).resize((width, height), Image.Resampling.BICUBIC)
    bg = bg.point(lambda v: v * 3 // 4)
    fg = ImageOps.contain(img, (width, height), Image.Resampling.LANCZOS)
    bg.paste(fg, ((width - fg.width) // 2, (height - fg.height) // 2))
    return bg


class SandboxProvider:
    name = "sandbox"

    def __init__(self, workdir: Path, *, duration_s: float = 6.0, width: int = 720, height: int = 1280,
                 fps: int = 25, max_concurrent_renders: int = 2, ffmpeg_exe: str | None = None) -> None:
        self.uploads, self.results, self.scratch = (Path(workdir) / d for d in ("uploads", "results", "tmp"))
        for folder in (self.uploads, self.results, self.scratch):
            folder.mkdir(parents=True, exist_ok=True)
        self.duration_s = duration_s  # for requests without a positive duration
        self.width, self.height = max(16, width) // 2 * 2, max(16, height) // 2 * 2  # yuv420p: even sides
        self.fps = max(1, fps)
        if ffmpeg_exe is None:
            import imageio_ffmpeg

            ffmpeg_exe = imageio_ffmpeg.get_ffmpeg_exe()
        self.ffmpeg = ffmpeg_exe
        # A render keeps a core busy for seconds; the bot must stay responsive on a small VPS.
        self._slots = asyncio.Semaphore(max(1, max_concurrent_renders))
        self._renders: dict[str, asyncio.Task[None]] = {}
        self._procs: set[asyncio.subprocess.Process] = set()

    def output_aspect(self, model: str, aspect: str) -> str:
        return aspect if aspect in FRAME_ASPECTS else "9:16"

    async def upload_image(self, data: bytes, filename: str) -> str:
        ext = Path(filename).suffix.lower()
        name = uuid.uuid4().hex + (ext if re.fullmatch(r"\.[a-z0-9]{1,5}", ext) else ".jpg")
        await asyncio.to_thread(_write_atomic, self.uploads / name, data)
        return f"sandbox://uploads/{name}"

    async def submit(self, request: VideoRequest, before_send: BeforeSend | None = None) -> SubmittedTask:
        name = request.image_url.removeprefix("sandbox://uploads/")
        if name == request.image_url or not _UPLOAD_RE.fullmatch(name):
            raise ProviderError(f"not a sandbox upload URL: {request.image_url[:100]}",
                                kind=ErrorKind.API, code=422, key_id=KEY_ID)
        photo = self.uploads / name
        if not await asyncio.to_thread(photo.is_file):
            raise ProviderError("failed to fetch the image: sandbox upload is gone",
                                kind=ErrorKind.API, code=500, key_id=KEY_ID)
        extra = request.extra.get("caption")
        caption = clip_caption(extra) if isinstance(extra, str) else ""
        caption = caption or caption_from_prompt(request.prompt)
        duration = float(request.duration_s) if request.duration_s and request.duration_s > 0 else self.duration_s
        duration = min(MAX_DURATION_S, max(MIN_DURATION_S, duration))
        if before_send is not None:
            await before_send(KEY_ID)
        task_id = f"sbx_{uuid.uuid4().hex}"
        task = asyncio.create_task(self._render(task_id, photo, caption, duration, request.aspect_ratio),
                                   name=f"sandbox-render-{task_id}")
        self._renders[task_id] = task  # a strong reference: the loop keeps only weak ones
        task.add_done_callback(lambda _t: self._renders.pop(task_id, None))
        return SubmittedTask(task_id=task_id, key_id=KEY_ID)

    async def poll(self, task_id: str, model: str, key_id: str | None) -> TaskStatus:
        render = self._renders.get(task_id)
        if render is not None and not render.done():
            return TaskStatus(TaskState.PENDING)
        if _TASK_RE.fullmatch(task_id):
            if await asyncio.to_thread((self.results / f"{task_id}.mp4").is_file):
                return TaskStatus(TaskState.SUCCESS, result_urls=(f"sandbox://results/{task_id}.mp4",),
                                  progress=100)
            failure = await asyncio.to_thread(_read_failure, self.results / f"{task_id}.failed.json")
            if failure is not None:
                return TaskStatus(TaskState.FAILED, fail_code=failure[0], fail_msg=failure[1])
            # A render cut off by a restart may have left a partial file behind.
            await asyncio.to_thread((self.results / f"{task_id}.mp4.part").unlink, missing_ok=True)
        # 500, not 4xx: the engine treats 5xx as temporary and resubmits; 422 would mean "our bug".
        return TaskStatus(TaskState.FAILED, fail_code="500", fail_msg=LOST_MSG)

    async def download(self, url: str, dest: Path, max_bytes: int) -> int:
        name = url.removeprefix("sandbox://results/")
        if name == url or not name.endswith(".mp4") or not _TASK_RE.fullmatch(name.removesuffix(".mp4")):
            raise ProviderError(f"not a sandbox result URL: {url[:100]}", kind=ErrorKind.DOWNLOAD)
        return await asyncio.to_thread(_copy_limited, self.results / name, Path(dest), max_bytes)

    async def aclose(self) -> None:
        for proc in list(self._procs):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        renders = list(self._renders.values())
        for task in renders:
            task.cancel()
        await asyncio.gather(*renders, return_exceptions=True)

    def _frame_size(self, aspect_ratio: str) -> tuple[int, int]:
        long, short = max(self.width, self.height), min(self.width, self.height)
        sizes = {"16:9": (long, short), "1:1": (short, short), "9:16": (short, long),
                 "3:4": (short, short * 4 // 3 // 2 * 2)}
        return sizes.get(aspect_ratio, (self.width, self.height))

    async def _render(self, task_id: str, photo: Path, caption: str, duration: float, aspect: str) -> None:
        part = self.results / f"{task_id}.mp4.part"
        scratch = self.scratch / task_id
        try:
            async with self._slots:
                await asyncio.to_thread(scratch.mkdir, parents=True, exist_ok=True)
                width, height = self._frame_size(aspect)
                frames = round(duration * self.fps)
                frame = scratch / "frame.png"
                try:
                    await asyncio.to_thread(compose_frame, photo, frame, width * SUPERSAMPLE, height * SUPERSAMPLE)
                except BadPhoto as exc:  # "invalid image" makes the engine blame the photo, not retry
                    return await self._fail(task_id, "400", f"invalid image: {exc}")
                args = [self.ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i", str(frame)]
                graph = self._zoompan(task_id, width, height, frames)
                if caption:
                    band_h = await asyncio.to_thread(render_caption, caption, width, scratch / "caption.png")
                    args += ["-i", str(scratch / "caption.png")]
                    top = max(0, height - band_h - height * 7 // 100)  # clear of players' bottom controls
                    graph += f"[bg];[bg][1:v]overlay=0:{top}:format=yuv420"
                args += ["-filter_complex", graph + ",format=yuv420p[v]", "-map", "[v]", "-an",
                         "-frames:v", str(frames), "-c:v", "libx264", "-preset", "veryfast", "-crf", "20",
                         "-pix_fmt", "yuv420p", "-movflags", "+faststart", "-f", "mp4", str(part)]
                code, stderr = await self._run(args)
                if code != 0:
                    lines = [ln.strip() for ln in stderr.decode(errors="replace").splitlines() if ln.strip()]
                    msg = " | ".join(lines[-3:])[-400:] or f"ffmpeg exited with code {code}"
                    return await self._fail(task_id, "500", f"ffmpeg failed: {msg}")
                await asyncio.to_thread(part.replace, self.results / f"{task_id}.mp4")
                log.info("sandbox task %s rendered (%.1f s, %dx%d)", task_id, duration, width, height)
        except asyncio.CancelledError:
            raise  # shutdown: no failure record, so a restarted bot sees "lost" and resubmits
        except Exception as exc:  # a render must always end in a state poll() can report
            log.exception("sandbox task %s crashed", task_id)
            await self._fail(task_id, "500", f"sandbox render error: {type(exc).__name__}: {exc}"[:400])
        finally:
            await asyncio.to_thread(_cleanup, scratch, part)

    def _zoompan(self, task_id: str, width: int, height: int, frames: int) -> str:
        # Cosine-eased so the camera starts and stops softly; the direction varies per task.
        ease = f"(0.5-0.5*cos(PI*on/{max(1, frames - 1)}))"
        z0, z1, fy0, fy1 = ((1.0, 1 + ZOOM, 0.5, 0.5), (1.0, 1 + ZOOM, 0.5, 0.3),
                            (1 + ZOOM, 1.0, 0.4, 0.5))[int(task_id[-2:], 16) % 3]
        return (f"[0:v]format=yuv420p,zoompan=z='{z0}+({z1 - z0:.4f})*{ease}':x='(iw-iw/zoom)/2'"
                f":y='(ih-ih/zoom)*({fy0}+({fy1 - fy0:.2f})*{ease})':d={frames}:s={width}x{height}:fps={self.fps}")

    async def _run(self, args: list[str]) -> tuple[int, bytes]:
        proc = await asyncio.create_subprocess_exec(*args, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.PIPE)
        self._procs.add(proc)
        try:
            _, stderr = await proc.communicate()
            return proc.returncode or 0, stderr
        finally:
            if proc.returncode is None:  # cancelled mid-render: leave no ffmpeg running
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
            self._procs.discard(proc)

    async def _fail(self, task_id: str, code: str, msg: str) -> None:
        log.warning("sandbox task %s failed: %s", task_id, msg)
        data = json.dumps({"code": code, "msg": msg}, ensure_ascii=False).encode()
        await asyncio.to_thread(_write_atomic, self.results / f"{task_id}.failed.json", data)


def _write_atomic(path: Path, data: bytes) -> None:
    part = path.with_name(path.name + ".part")
    part.write_bytes(data)
    part.replace(path)


def _cleanup(scratch: Path, part: Path) -> None:
    shutil.rmtree(scratch, ignore_errors=True)
    with contextlib.suppress(OSError):
        part.unlink(missing_ok=True)


def _read_failure(path: Path) -> tuple[str, str] | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return str(record["code"]), str(record["msg"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _copy_limited(src: Path, dest: Path, max_bytes: int) -> int:
    try:
        size = src.stat().st_size
    except OSError:
        raise ProviderError(f"sandbox result {src.name} not found", kind=ErrorKind.DOWNLOAD) from None
    if size > max_bytes:
        raise ProviderError(f"sandbox result is {size} bytes, over the {max_bytes} limit", kind=ErrorKind.DOWNLOAD)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        shutil.copyfile(src, part)
        part.replace(dest)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise ProviderError(f"sandbox result copy failed: {exc.strerror}", kind=ErrorKind.DOWNLOAD) from None
    return size
