"""KIE.ai model adapters: which endpoint a model uses, how its body looks, how its status reads.

KIE has two API families for video. Veo 3.1 has dedicated endpoints with camelCase fields;
every other model goes through the "Market" pair createTask/recordInfo, where only `model`
and the `input` dict differ. Field names, types and allowed values below come from
docs/kie-api-notes.md and the KIE OpenAPI pages it cites (Henji-AI mirror of
docs.kie.ai). Types matter: KIE rejects "5" where it wants 5 and vice versa.

A model that is not in the registry is sent as a Market model with `image_urls`, so an
operator can try a new model from the config without a code change; `VideoRequest.extra`
fills in whatever else that model needs.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from neurocards.providers.base import TaskState, TaskStatus, VideoRequest


class Family(StrEnum):
    VEO = "veo"
    MARKET = "market"


PATHS: dict[Family, tuple[str, str]] = {  # family -> (create path, status path)
    Family.VEO: ("/api/v1/veo/generate", "/api/v1/veo/record-info"),
    Family.MARKET: ("/api/v1/jobs/createTask", "/api/v1/jobs/recordInfo"),
}


class PayloadError(ValueError):
    """A status payload of an unexpected shape; the provider reports it as MALFORMED."""


# --- mapping our (aspect ratio, seconds) onto each model's allowed values ---------------------

def _ratio(aspect: str) -> float:
    """'9:16' -> 0.5625. Anything unparsable counts as portrait: the bot makes vertical videos."""
    try:
        w, h = (float(x) for x in aspect.split(":"))
        if w > 0 and h > 0:
            return w / h
    except ValueError:
        pass
    return 9 / 16


def nearest_aspect(aspect: str, allowed: Sequence[str]) -> str:
    """The allowed 'W:H' closest to `aspect`; compared on a log scale so 1:2 and 2:1 are symmetric."""
    target = math.log(_ratio(aspect))
    return min(allowed, key=lambda a: abs(math.log(_ratio(a)) - target))


def orientation(aspect: str) -> str:
    r = _ratio(aspect)
    return "square" if abs(r - 1) < 0.05 else ("landscape" if r > 1 else "portrait")


def nearest_duration(seconds: int, allowed: Sequence[int]) -> int:
    # On a tie take the longer clip: a buyer who asked for 5 s should not get 4 s.
    return min(allowed, key=lambda v: (abs(v - seconds), -v))


# --- adapters -------------------------------------------------------------------------------

InputBuilder = Callable[[VideoRequest], dict[str, Any]]


@dataclass(frozen=True)
class ModelAdapter:
    family: Family
    prompt_max: int  # characters; longer prompts are cut, KIE would answer 422
    build_input: InputBuilder  # model-specific fields besides the prompt
    # Shapes the model makes on request; None: it keeps the shape of the photo it animates.
    aspects: tuple[str, ...] | None = None

    def output_aspect(self, aspect: str) -> str:
        """The shape this model will deliver for a video wanted in `aspect`."""
        return aspect if self.aspects is None or aspect in self.aspects else nearest_aspect(aspect, self.aspects)

    @property
    def create_path(self) -> str:
        return PATHS[self.family][0]

    @property
    def status_path(self) -> str:
        return PATHS[self.family][1]

    def build_body(self, model: str, request: VideoRequest) -> dict[str, Any]:
        fields: dict[str, Any] = {"prompt": request.prompt[: self.prompt_max]}
        fields.update(self.build_input(request))
        fields.update(request.extra)  # template-level overrides win
        if self.family is Family.VEO:
            body = {"model": model, **fields}  # Veo has no `input` wrapper
        else:
            body = {"model": model, "input": fields}
        if request.callback_url:
            body["callBackUrl"] = request.callback_url
        return body

    def parse_status(self, data: Mapping[str, Any]) -> TaskStatus:
        status = veo_status(data) if self.family is Family.VEO else market_status(data)
        return dataclasses.replace(status, callback_url=created_with_callback(data))


def _veo(r: VideoRequest) -> dict[str, Any]:
    orient = orientation(r.aspect_ratio)
    return {
        "imageUrls": [r.image_url],
        # One image with FIRST_AND_LAST_FRAMES_2_VIDEO = "animate this picture" (doc); the
        # REFERENCE mode is fast/lite only and fixed at 8 s.
        "generationType": "FIRST_AND_LAST_FRAMES_2_VIDEO",
        # "Auto" centre-crops to whichever of 16:9/9:16 the photo is closer to.
        "aspectRatio": {"portrait": "9:16", "landscape": "16:9"}.get(orient, "Auto"),
        "duration": nearest_duration(r.duration_s, (4, 6, 8)),  # integer per the doc
        "enableTranslation": True,  # Veo fails non-English prompts otherwise
    }


def _kling26(r: VideoRequest) -> dict[str, Any]:
    # `sound` is required by the doc; marketplace cards play muted, sound costs more.
    return {"image_urls": [r.image_url], "duration": str(nearest_duration(r.duration_s, (5, 10))),
            "sound": False}


def _sora2(r: VideoRequest) -> dict[str, Any]:
    # Sora has no square output; portrait suits marketplace cards best.
    return {"image_urls": [r.image_url],
            "aspect_ratio": "landscape" if orientation(r.aspect_ratio) == "landscape" else "portrait",
            "n_frames": str(nearest_duration(r.duration_s, (10, 15))), "remove_watermark": True}


def _wan26(r: VideoRequest) -> dict[str, Any]:
    # KIE defaults to 1080p; 720p is the cheaper, consistent choice across models. Override via extra.
    return {"image_urls": [r.image_url], "duration": str(nearest_duration(r.duration_s, (5, 10, 15))),
            "resolution": "720p"}


def _hailuo23(r: VideoRequest) -> dict[str, Any]:
    # 768P because 1080P does not allow 10 s.
    return {"image_url": r.image_url, "duration": str(nearest_duration(r.duration_s, (6, 10))),
            "resolution": "768P"}


def _bytedance_v1(r: VideoRequest) -> dict[str, Any]:
    return {"image_url": r.image_url, "duration": str(nearest_duration(r.duration_s, (5, 10))),
            "resolution": "720p"}


SEEDANCE_ASPECTS = ("1:1", "4:3", "3:4", "16:9", "9:16", "21:9")


def _seedance15(r: VideoRequest) -> dict[str, Any]:
    # The doc allows 4-12 s, older copies 4/8/12; those three are valid under both readings.
    return {"input_urls": [r.image_url],
            "aspect_ratio": nearest_aspect(r.aspect_ratio, SEEDANCE_ASPECTS),
            "duration": nearest_duration(r.duration_s, (4, 8, 12)), "resolution": "720p"}


def _grok(r: VideoRequest) -> dict[str, Any]:
    # Single-image mode takes the aspect ratio from the photo, so none is sent.
    return {"image_urls": [r.image_url], "duration": str(nearest_duration(r.duration_s, (6, 10))),
            "mode": "normal"}


def _generic(r: VideoRequest) -> dict[str, Any]:
    return {"image_urls": [r.image_url]}


# Portrait first: for a square video both are as near, and marketplaces want vertical ones.
_PORTRAIT_OR_LANDSCAPE = ("9:16", "16:9")
VEO = ModelAdapter(Family.VEO, 2000, _veo, _PORTRAIT_OR_LANDSCAPE)  # prompt limit undocumented; a 3rd-party copy says 1000 (GUESS)
DEFAULT_ADAPTER = ModelAdapter(Family.MARKET, 5000, _generic)

MODELS: dict[str, ModelAdapter] = {
    "veo3": VEO,
    "veo3_fast": VEO,
    "veo3_lite": VEO,
    "kling-2.6/image-to-video": ModelAdapter(Family.MARKET, 1000, _kling26),
    "sora-2-image-to-video": ModelAdapter(Family.MARKET, 10000, _sora2, _PORTRAIT_OR_LANDSCAPE),
    "sora-2-pro-image-to-video": ModelAdapter(Family.MARKET, 10000, _sora2, _PORTRAIT_OR_LANDSCAPE),
    "wan/2-6-image-to-video": ModelAdapter(Family.MARKET, 5000, _wan26),
    "hailuo/2-3-image-to-video-standard": ModelAdapter(Family.MARKET, 5000, _hailuo23),
    "hailuo/2-3-image-to-video-pro": ModelAdapter(Family.MARKET, 5000, _hailuo23),
    "bytedance/v1-pro-fast-image-to-video": ModelAdapter(Family.MARKET, 10000, _bytedance_v1),
    "bytedance/seedance-1.5-pro": ModelAdapter(Family.MARKET, 20000, _seedance15, SEEDANCE_ASPECTS),
    "grok-imagine/image-to-video": ModelAdapter(Family.MARKET, 5000, _grok),
}


def get_adapter(model: str) -> ModelAdapter:
    return MODELS.get(model, DEFAULT_ADAPTER)


# --- status payloads (recordInfo `data`, also the `data` of a callback) ------------------------

def _opt_str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _progress(value: Any) -> int | None:
    try:
        return None if value is None or isinstance(value, bool) else int(float(value))
    except (TypeError, ValueError):
        return None


def _url_list(value: Any) -> list[str]:
    """resultUrls arrive as a list, or (in some Veo callbacks) as a JSON string of a list."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = [value]
    if not isinstance(value, list):
        return []
    return [u for u in value if isinstance(u, str) and u]


def created_with_callback(data: Mapping[str, Any]) -> str | None:
    """The callBackUrl from the create request KIE echoes (`param` / `paramJson`, a JSON string)."""
    for name in ("param", "paramJson"):
        raw = data.get(name)
        try:
            body = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            continue
        if isinstance(body, Mapping) and isinstance(body.get("callBackUrl"), str):
            return str(body["callBackUrl"])
    return None


def _credits(value: Any) -> float | None:
    """creditsConsumed, when KIE reports it (a number, sometimes as a string)."""
    try:
        credits = None if value is None or isinstance(value, bool) or value == "" else float(value)
    except (TypeError, ValueError):
        return None
    return credits if credits is not None and credits >= 0 else None


def market_status(data: Mapping[str, Any]) -> TaskStatus:
    state = data.get("state")
    if not isinstance(state, str) or not state:
        raise PayloadError("recordInfo without `state`")
    state = state.lower()
    progress = _progress(data.get("progress"))
    if state == "success":
        raw = data.get("resultJson")
        try:
            result = json.loads(raw) if isinstance(raw, str) and raw.strip() else raw
        except ValueError as exc:
            raise PayloadError("resultJson is not valid JSON") from exc
        urls = _url_list(result.get("resultUrls")) if isinstance(result, dict) else []
        if not urls:
            raise PayloadError("state=success but resultJson has no resultUrls")
        return TaskStatus(TaskState.SUCCESS, tuple(urls), progress=100,
                          credits_consumed=_credits(data.get("creditsConsumed")))
    if state == "fail":
        return TaskStatus(TaskState.FAILED, fail_code=_opt_str(data.get("failCode")),
                          fail_msg=_opt_str(data.get("failMsg")) or "task failed", progress=progress,
                          credits_consumed=_credits(data.get("creditsConsumed")))
    # waiting | queuing | generating, and any state KIE adds later: keep polling; the engine's
    # overall timeout ends a task that never finishes.
    return TaskStatus(TaskState.PENDING, progress=progress)


def veo_status(data: Mapping[str, Any]) -> TaskStatus:
    flag = data.get("successFlag")
    try:
        flag = int(flag)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise PayloadError("record-info without a numeric `successFlag`") from exc
    if flag == 1:
        response = data.get("response")
        urls = _url_list(response.get("resultUrls")) if isinstance(response, dict) else []
        if not urls:
            raise PayloadError("successFlag=1 but response.resultUrls is empty")
        return TaskStatus(TaskState.SUCCESS, tuple(urls), progress=100,
                          credits_consumed=_credits(data.get("creditsConsumed")))
    if flag in (2, 3):
        return TaskStatus(TaskState.FAILED, fail_code=_opt_str(data.get("errorCode")),
                          fail_msg=_opt_str(data.get("errorMessage")) or "task failed",
                          credits_consumed=_credits(data.get("creditsConsumed")))
    return TaskStatus(TaskState.PENDING, progress=_progress(data.get("progress")))
