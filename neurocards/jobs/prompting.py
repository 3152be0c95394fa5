"""Turns template + product description + wishes into the prompt sent to the provider.

Without an OpenAI key the filled template is the prompt. With one, GPT rewrites it into an
English, image-to-video-ready paragraph. GPT is an improvement, never a dependency: an error,
an empty or refused answer or a slow one falls back to the filled template and the job goes
on, and a job never waits on GPT for longer than `openai.timeout_s`.

Successful rewrites are cached (`PromptCache`): "make another with this product" with the
same inputs costs no GPT call and no waiting. The sibling jobs of one order build the same
prompt at the same moment; they share one GPT call through an in-flight task per key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from typing import Any

from neurocards.config import OpenAIConfig
from neurocards.jobs.gpt_keys import GptKeyPool, GptWatch
from neurocards.jobs.templates import Template
from neurocards.store.costs import CostStore
from neurocards.store.prompt_cache import PromptCache, cache_key, normalize

log = logging.getLogger("neurocards.prompts")

MAX_PROMPT_CHARS = 1000  # the strictest model we serve (Kling 2.6) takes 1,000 characters
GPT_MAX_TOKENS = 400  # ~1,600 characters: room for the 900 asked for, a bound on cost and latency

SYSTEM_PROMPT = (
    "You write prompts for an image-to-video model (Veo, Sora, Kling) that animates a marketplace "
    "product photo. Rewrite the draft into one English paragraph of at most 900 characters. "
    "Be concrete: camera movement and framing, lighting, setting, and what moves and how. "
    "The product must stay exactly as in the photo: same shape, colours, labels and proportions; "
    "never redesign it. No people, no faces, no hands, no added text, captions or third-party logos. "
    "Keep the seller's product name and description words verbatim, in their original language, "
    "even when they are not English: the video model needs them to recognise the product. "
    "Follow the seller's wishes unless they break these rules. "
    "Answer with the prompt only: no quotes, no labels, no explanations."
)

# How a chat model phrases "no"; a real prompt never opens like this.
_REFUSAL_OPENINGS = ("i'm sorry", "i am sorry", "sorry,", "i can't", "i can’t", "i cannot",
                     "i won't", "i'm unable", "i am unable", "as an ai")
_LABEL = re.compile(r"^(?:\*\*)?(?:prompt|video prompt|enhanced prompt)(?:\*\*)?\s*:\s*", re.IGNORECASE)


class EnhancementRejected(Exception):
    """GPT answered, but not with a usable prompt; the message is the reason for the log."""


def fit(text: str, limit: int = MAX_PROMPT_CHARS) -> str:
    """Cut to the provider's limit at a sentence end (or at least a word), not mid-word."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    sentence_end = max(cut.rfind(". "), cut.rfind("! "), cut.rfind("? "))
    if sentence_end >= limit * 0.6:  # losing more than 40% to keep a full sentence costs too much
        return cut[:sentence_end + 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > 0 else cut).rstrip(" ,;:-")


def clean_answer(answer: str) -> str:
    """One paragraph without the wrappers chat models like to add (fences, quotes, "Prompt:")."""
    lines = answer.strip().splitlines()
    if lines and lines[0].startswith("```"):  # ```text ... ```: drop the fence lines
        lines = lines[1:-1] if len(lines) > 1 and lines[-1].strip() == "```" else lines[1:]
    text = " ".join(" ".join(lines).split())
    text = _LABEL.sub("", text)
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'«“":
        text = text[1:-1].strip()
    elif len(text) >= 2 and (text[0], text[-1]) in (("«", "»"), ("“", "”")):
        text = text[1:-1].strip()
    return text


def keep_description(prompt: str, description: str) -> str:
    """Safety net: the product's own words must reach the video model (and the seller's order)."""
    desc = normalize(description).rstrip(" .")
    if not desc or desc.casefold() in prompt.casefold():
        return prompt
    return fit(f"Product: {desc}. {prompt}")


def fallback_reason(exc: BaseException) -> str:
    """A short, secret-free reason for the log: OpenAI's own messages can quote part of the key."""
    if isinstance(exc, EnhancementRejected | NoKeyAvailable):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "timeout"
    try:
        import openai
    except ImportError:  # pragma: no cover - openai is a dependency; a test double may stand in
        return type(exc).__name__
    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code} {type(exc).__name__}"
    if isinstance(exc, openai.APIConnectionError):
        return "connection error"
    if isinstance(exc, ValueError | LookupError | AttributeError | TypeError | openai.APIResponseValidationError):
        return f"malformed response ({type(exc).__name__})"
    return type(exc).__name__


class NoKeyAvailable(Exception):
    """Every OpenAI key is cooling down: the template is the prompt, without a call."""


def failure_label(exc: BaseException) -> str:
    """A small fixed set of failure kinds for the metrics' `reason` label."""
    if isinstance(exc, NoKeyAvailable):
        return "no_key"
    if isinstance(exc, EnhancementRejected):
        return "rejected"
    if isinstance(exc, TimeoutError):
        return "timeout"
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return {401: "auth", 403: "forbidden", 429: "rate_limit"}.get(status, "server" if status >= 500 else "http")
    reason = fallback_reason(exc)
    return {"timeout": "timeout", "connection error": "connection"}.get(
        reason, "malformed" if reason.startswith("malformed") else "other")


class PromptBuilder:
    def __init__(self, config: OpenAIConfig, cache: PromptCache | None = None, client: Any | None = None,
                 *, http_client: Any | None = None, watch: GptWatch | None = None,
                 costs: CostStore | None = None) -> None:
        """`client`: a ready AsyncOpenAI-like client (tests), standing for every key. `http_client`:
        an httpx AsyncClient for the SDK, e.g. one with a proxy transport; its owner closes it,
        `aclose` does not. `watch`: where each call's outcome goes (metrics, failure-rate alert)."""
        self.config = config
        self.cache = cache
        self.watch = watch
        self.costs = costs  # the tokens of every answer, for the cost of a video
        keys = list(config.keys) or (["ready-client"] if client is not None else [])
        self.keys = GptKeyPool(keys, config.key_cooldown_s)
        # key id -> the SDK client of that key (one per key: the key is fixed per client)
        self._clients: dict[str, Any] = {}
        self._owns_clients = False
        # key -> the one GPT call for it in flight; entries leave when the call ends, so the map
        # never holds more than the builds running right now (bounded by generation.max_parallel).
        self._inflight: dict[str, asyncio.Task[str | None]] = {}
        if client is not None:
            self._clients = {key.key_id: client for key in self.keys.keys}
        elif self.keys.keys:
            from openai import AsyncOpenAI  # imported lazily: most test runs never need it

            self._clients = {key.key_id: AsyncOpenAI(
                api_key=key.secret,
                base_url=config.base_url or None,
                timeout=config.timeout_s,
                max_retries=0,  # a retry would blow the timeout budget; the template is the retry
                http_client=http_client,
            ) for key in self.keys.keys}
            # AsyncOpenAI.close() closes the http client too, even one it was given.
            self._owns_clients = http_client is None
        if not self._clients:
            log.info("GPT prompt enhancement off (no openai.api_keys): templates are used as is")

    @property
    def enabled(self) -> bool:
        return bool(self._clients)

    async def build(self, template: Template, description: str, wishes: str) -> str:
        draft = fit(template.render(description, wishes))
        if not self._clients:
            return draft
        key = cache_key(self.config.model, template.id, template.prompt, description, wishes,
                        instructions=SYSTEM_PROMPT)
        short = key[:12]
        task = self._inflight.get(key)
        if task is None:
            cached = await self._cache_get(key)
            if cached is not None:
                log.info("prompt: cache hit (template %s, key %s)", template.id, short)
                return cached
            task = self._inflight.get(key)  # another build may have started while we read the cache
        if task is None:
            task = asyncio.create_task(self._enhance(key, template.id, draft, description, wishes),
                                       name=f"prompt-{short}")
            self._inflight[key] = task
            task.add_done_callback(lambda t: self._forget(key, t))
        else:
            log.info("prompt: sharing the in-flight GPT call (template %s, key %s)", template.id, short)
        # shield: one impatient (cancelled) job must not cancel the call its siblings wait on.
        # The shared call is itself bounded by timeout_s, so no waiter waits longer than that.
        enhanced = await asyncio.shield(task)
        return enhanced if enhanced is not None else draft

    def _forget(self, key: str, task: asyncio.Task[str | None]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]

    async def _enhance(self, key: str, template_id: str, draft: str, description: str, wishes: str) -> str | None:
        """The GPT call for one key: the prompt, or None for "use the template" (never cached)."""
        started = time.monotonic()
        try:
            answer = await asyncio.wait_for(self._ask_with_keys(draft, description, wishes), self.config.timeout_s)
            prompt = self._accept(answer, description)
        except Exception as exc:  # any failure means: use the template, the job goes on
            log.warning("prompt: GPT fallback to the template (%s; template %s, key %s, %.1fs)",
                        fallback_reason(exc), template_id, key[:12], time.monotonic() - started)
            await self._record(False, time.monotonic() - started, exc)
            return None
        await self._record(True, time.monotonic() - started)
        await self._cache_put(key, prompt)
        log.info("prompt: cache miss, enhanced by %s (template %s, key %s, %d chars, %.1fs)",
                 self.config.model, template_id, key[:12], len(prompt), time.monotonic() - started)
        return prompt

    async def _ask_with_keys(self, draft: str, description: str, wishes: str) -> str:
        """Ask with the next key; a key-level refusal (429/403/401) sets it aside and the next
        key is asked at once, within the same timeout."""
        refused: Exception | None = None
        for _ in range(len(self.keys)):
            gpt_key = self.keys.take()
            if gpt_key is None:
                break
            try:
                return await self._ask(self._clients[gpt_key.key_id], draft, description, wishes)
            except Exception as exc:
                if not self.keys.failed(gpt_key, getattr(exc, "status_code", None)):
                    raise
                refused = exc
        if refused is not None:  # every key asked was refused: the last refusal is the reason
            raise refused
        raise NoKeyAvailable("every GPT key is cooling down")

    async def _record(self, ok: bool, latency_s: float, exc: BaseException | None = None) -> None:
        if self.watch is None:
            return
        try:
            await self.watch.record(ok, latency_s, fallback_reason(exc) if exc is not None else "",
                                    failure_label(exc) if exc is not None else "")
        except Exception as err:  # bookkeeping must never cost the prompt
            log.warning("GPT outcome not recorded: %s", type(err).__name__)

    async def _record_usage(self, response: Any) -> None:
        usage = getattr(response, "usage", None)
        if self.costs is None or usage is None:
            return
        try:
            await self.costs.openai_used(str(getattr(response, "model", None) or self.config.model),
                                         int(getattr(usage, "prompt_tokens", 0) or 0),
                                         int(getattr(usage, "completion_tokens", 0) or 0))
        except Exception as exc:  # the bill is a record; the prompt matters more
            log.warning("prompt: could not record OpenAI usage: %s", type(exc).__name__)

    async def _ask(self, client: Any, draft: str, description: str, wishes: str) -> str:
        user = (f"Draft prompt: {draft}\n"
                f"Product description from the seller (keep these words verbatim): {normalize(description)}\n"
                f"Seller's wishes: {normalize(wishes) or 'none'}")
        response = await client.chat.completions.create(
            model=self.config.model,
            messages=[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}],
            temperature=0.7,
            max_tokens=GPT_MAX_TOKENS,
        )
        await self._record_usage(response)
        choice = response.choices[0]
        if getattr(choice.message, "refusal", None):
            raise EnhancementRejected("refusal")
        if choice.finish_reason == "content_filter":
            raise EnhancementRejected("content filter")
        content = choice.message.content
        if content is not None and not isinstance(content, str):
            raise EnhancementRejected("malformed response (content is not text)")
        return content or ""

    @staticmethod
    def _accept(answer: str, description: str) -> str:
        text = clean_answer(answer)
        if not text:
            raise EnhancementRejected("empty answer")
        if text.casefold().startswith(_REFUSAL_OPENINGS):
            raise EnhancementRejected("refusal")
        return keep_description(fit(text), description)

    async def _cache_get(self, key: str) -> str | None:
        if self.cache is None:
            return None
        try:
            return await self.cache.get(key)
        except Exception as exc:  # a cache problem costs a GPT call, never the job
            log.warning("prompt cache read failed (%s); asking GPT", type(exc).__name__)
            return None

    async def _cache_put(self, key: str, prompt: str) -> None:
        if self.cache is None:
            return
        try:
            await self.cache.put(key, prompt)
        except Exception as exc:
            log.warning("prompt cache write failed (%s); the prompt is used anyway", type(exc).__name__)

    async def aclose(self) -> None:
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._owns_clients:
            for client in self._clients.values():
                await client.close()
