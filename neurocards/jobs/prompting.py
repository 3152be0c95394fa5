"""Turns template + product description + wishes into the prompt sent to the provider.

Without an OpenAI key the filled template is the prompt. With one, a model
rewrites it; any error or a slow answer falls back to the filled template, so
a job never waits on GPT for longer than `openai.timeout_s`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from neurocards.config import OpenAIConfig
from neurocards.jobs.templates import Template

log = logging.getLogger("neurocards.prompts")

MAX_PROMPT_CHARS = 1000  # the strictest model we serve (Kling 2.6) takes 1,000 characters

SYSTEM_PROMPT = (
    "You write prompts for an image-to-video model that animates a marketplace product photo. "
    "Rewrite the draft into one English paragraph of at most 900 characters: concrete camera "
    "movement, lighting, setting and motion; the product must stay exactly as in the photo "
    "(shape, colours, labels); no people, no faces, no hands, no added text or third-party logos. "
    "Keep the product name from the draft. Answer with the prompt only."
)


class PromptBuilder:
    def __init__(self, config: OpenAIConfig, client: Any | None = None) -> None:
        self.config = config
        self._client = client
        if self._client is None and config.api_key:
            from openai import AsyncOpenAI  # imported lazily: most test runs never need it

            self._client = AsyncOpenAI(
                api_key=config.api_key,
                base_url=config.base_url or None,
                timeout=config.timeout_s,
                max_retries=0,
            )

    async def build(self, template: Template, description: str, wishes: str) -> str:
        draft = template.render(description, wishes)
        if self._client is None:
            return draft[:MAX_PROMPT_CHARS]
        try:
            enhanced = await asyncio.wait_for(self._enhance(draft), self.config.timeout_s)
        except Exception as exc:  # any failure means: use the draft, the job goes on
            log.warning("prompt enhancement failed, using the template: %s", type(exc).__name__)
            return draft[:MAX_PROMPT_CHARS]
        return (enhanced or draft)[:MAX_PROMPT_CHARS]

    async def _enhance(self, draft: str) -> str:
        response = await self._client.chat.completions.create(  # type: ignore[union-attr]
            model=self.config.model,
            messages=[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": draft}],
            temperature=0.7,
            max_tokens=400,
        )
        content = response.choices[0].message.content or ""
        return " ".join(content.split())

    async def aclose(self) -> None:
        if self._client is not None and hasattr(self._client, "close"):
            await self._client.close()
