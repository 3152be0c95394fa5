"""Support that reaches a person: with `telegram.support_username` the seller writes there;
without it, the seller's message is relayed to the admins (or `telegram.support_chat_id`) with
who they are and their last jobs, and an admin's reply to that message goes back to the seller.

The relayed message itself carries the seller's id (a fixed marker line), so a reply finds its
seller after a restart too, with no table to keep."""

from __future__ import annotations

import re
from dataclasses import dataclass

from neurocards.config import Config
from neurocards.store.db import Database

ID_MARKER = "ID продавца: "
_ID_LINE = re.compile(re.escape(ID_MARKER) + r"(\d{1,19})\b")
RECENT_JOBS = 5


@dataclass(frozen=True)
class RecentJob:
    id: int
    state: str
    template: str
    error_class: str | None


def relay_targets(config: Config) -> tuple[int, ...]:
    """Where relayed messages go; empty: there is no support channel at all."""
    if config.telegram.support_chat_id:
        return (config.telegram.support_chat_id,)
    return config.telegram.admin_ids


def has_relay(config: Config) -> bool:
    return not config.telegram.support_username and bool(relay_targets(config))


def is_support_chat(config: Config, chat_id: int, user_id: int) -> bool:
    """A reply from here is an operator's answer: an admin's own chat, or the support group."""
    if config.telegram.support_chat_id and chat_id == config.telegram.support_chat_id:
        return True
    return user_id in config.telegram.admin_ids and chat_id == user_id


async def recent_jobs(db: Database, user_id: int, limit: int = RECENT_JOBS) -> list[RecentJob]:
    rows = await db.fetchall(
        "SELECT id, state, template, error_class FROM jobs WHERE user_id = ? ORDER BY id DESC LIMIT ?",
        (user_id, limit))
    return [RecentJob(r["id"], r["state"], r["template"], r["error_class"]) for r in rows]


def seller_of(relayed_text: str | None) -> int | None:
    """The seller a relayed message is about, from its marker line; None for anything else."""
    found = _ID_LINE.search(relayed_text or "")
    return int(found.group(1)) if found else None
