"""What an admin can do, shared by the in-bot commands and the command line."""

from __future__ import annotations

from dataclasses import dataclass

from neurocards.services.credits import check_user_id
from neurocards.store.db import Database
from neurocards.store.jobs import JobStore
from neurocards.store.stats import record_admin_action
from neurocards.store.users import UserStore


@dataclass(frozen=True)
class BanResult:
    changed: bool
    cancelled_jobs: list[int]


async def ban_user(db: Database, users: UserStore, jobs: JobStore, user_id: int, *,
                   admin_id: int | None) -> BanResult:
    """Ban a user; their jobs that have not reached the provider are cancelled and refunded.
    Someone who never started the bot is banned ahead (a row "not yet seen", no gift taken)."""
    check_user_id(user_id)
    await users.ensure(user_id)
    changed = await users.set_banned(user_id, True)
    cancelled = await jobs.cancel_queued(user_id, "user banned by admin")
    await record_admin_action(db, admin_id=admin_id, action="ban", user_id=user_id,
                              detail=f"cancelled jobs {cancelled}" if cancelled else None)
    return BanResult(changed, cancelled)


async def unban_user(db: Database, users: UserStore, user_id: int, *, admin_id: int | None) -> bool:
    check_user_id(user_id)
    changed = await users.set_banned(user_id, False)
    if changed:
        await record_admin_action(db, admin_id=admin_id, action="unban", user_id=user_id)
    return changed
