"""GPT-enhanced prompts, stored so the same inputs never pay GPT (or make the seller wait) twice.

"Make another with this product" and the sibling jobs of one order build the very same prompt;
the key is a hash of everything that shapes the answer, so a hit is safe to reuse as is.
"""

from __future__ import annotations

import hashlib
import json
import time
import unicodedata

from neurocards.store.db import Database


def normalize(text: str) -> str:
    """Whitespace and Unicode form only: case stays, a brand's spelling can matter to the seller."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def cache_key(model: str, template_id: str, template_prompt: str, description: str, wishes: str,
              *, instructions: str = "") -> str:
    """sha256 over the GPT model, the template (id and text), description and wishes.

    `instructions` is the system prompt: editing it must not keep serving answers written
    under the old rules. JSON framing keeps field boundaries unambiguous ("a|b" + "c" vs "a" + "b|c").
    """
    payload = json.dumps(
        [model, template_id, template_prompt, normalize(description), normalize(wishes), instructions],
        ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class PromptCache:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, key: str) -> str | None:
        """The cached prompt, counting the hit (the count shows what the cache saves)."""
        async with self.db.transaction() as conn:
            cur = await conn.execute(
                "UPDATE prompt_cache SET hits = hits + 1 WHERE key = ? RETURNING prompt", (key,))
            row = await cur.fetchone()
            await cur.close()  # a RETURNING cursor left open would keep the statement alive past COMMIT
        return str(row["prompt"]) if row is not None else None

    async def put(self, key: str, prompt: str) -> None:
        await self.db.execute(
            "INSERT INTO prompt_cache (key, prompt, created_at) VALUES (?, ?, ?)"
            " ON CONFLICT(key) DO UPDATE SET prompt = excluded.prompt, created_at = excluded.created_at",
            (key, prompt, time.time()))
