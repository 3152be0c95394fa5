"""Promo codes: what a valid code looks like, creating them, and a seller redeeming one.

The rules of a redemption live in the database (store/promo.py); here are the rules of the
input (code format, bounds, dates) and the brake on guessing: after WRONG_LIMIT wrong codes
within WRONG_WINDOW_S a seller is asked to wait.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from dataclasses import dataclass
from enum import StrEnum

from neurocards.store.promo import CodeExists, PromoCode, PromoStore, Redeemed, Refusal

CODE_RE = re.compile(r"[A-Z0-9_-]{3,32}")
START_PREFIX = "promo_"
MAX_CREDITS = 1_000_000
MAX_USES = 1_000_000
WRONG_LIMIT = 5
WRONG_WINDOW_S = 3600.0


class BadPromo(StrEnum):
    """Why a new code was not created (the CLI and the bot each phrase it)."""

    CODE = "code"
    CREDITS = "credits"
    USES = "uses"
    EXPIRES = "expires"
    EXISTS = "exists"


class PromoInputError(Exception):
    def __init__(self, what: BadPromo, value: object) -> None:
        super().__init__(f"{what}: {value!r}")
        self.what = what
        self.value = value


class Wait(StrEnum):
    TOO_MANY_WRONG = "too_many_wrong"


class Malformed(StrEnum):
    FORMAT = "format"


RedeemResult = Redeemed | Refusal | Wait | Malformed


def normalize(text: str) -> str | None:
    """The code as stored (upper case), or None if it cannot be a code at all."""
    code = text.strip().upper()
    return code if CODE_RE.fullmatch(code) else None


def expiry_moment(day: str) -> float:
    """`YYYY-MM-DD` → the end of that UTC day (the code works through the whole day)."""
    try:
        date = dt.date.fromisoformat(day)
    except ValueError:
        raise PromoInputError(BadPromo.EXPIRES, day) from None
    if date < dt.datetime.now(dt.UTC).date() or len(day) != 10:
        raise PromoInputError(BadPromo.EXPIRES, day)
    end = dt.datetime.combine(date + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    return end.timestamp()


def expiry_day(expires_at: float | None) -> str | None:
    if expires_at is None:
        return None
    return (dt.datetime.fromtimestamp(expires_at, dt.UTC) - dt.timedelta(days=1)).date().isoformat()


def as_json(promo: PromoCode) -> dict[str, object]:
    return {"code": promo.code, "credits": promo.credits, "uses": promo.max_uses, "used": promo.used,
            "expires": expiry_day(promo.expires_at), "disabled": promo.disabled}


@dataclass
class Promos:
    store: PromoStore

    async def create(self, code: str, credits: int, uses: int | None = None, expires: str | None = None,
                     *, created_by: int | None = None) -> PromoCode:
        normal = normalize(code)
        if normal is None or normal != code.upper():
            raise PromoInputError(BadPromo.CODE, code)
        if not 0 < credits <= MAX_CREDITS:
            raise PromoInputError(BadPromo.CREDITS, credits)
        if uses is not None and not 0 < uses <= MAX_USES:
            raise PromoInputError(BadPromo.USES, uses)
        expires_at = expiry_moment(expires) if expires is not None else None
        try:
            return await self.store.create(normal, credits, uses, expires_at, created_by)
        except CodeExists:
            raise PromoInputError(BadPromo.EXISTS, normal) from None

    async def disable(self, code: str) -> PromoCode | None:
        """The disabled code, or None if there is no such code (a text that is not a code matches none)."""
        return await self.store.disable(normalize(code) or code)

    async def list(self) -> list[PromoCode]:
        return await self.store.all()

    async def redeem(self, user_id: int, text: str, now: float | None = None) -> RedeemResult:
        now = time.time() if now is None else now
        since = now - WRONG_WINDOW_S
        if await self.store.wrong_attempts(user_id, since) >= WRONG_LIMIT:
            return Wait.TOO_MANY_WRONG
        code = normalize(text)
        result: RedeemResult = Malformed.FORMAT if code is None else await self.store.redeem(user_id, code, now)
        if result in (Malformed.FORMAT, Refusal.UNKNOWN):
            await self.store.record_wrong_attempt(user_id, now, keep_since=since)
        return result

    @staticmethod
    def code_from_start(start_arg: str | None) -> str | None:
        """`promo_CODE` from a t.me/<bot>?start=promo_CODE link."""
        if not start_arg or not start_arg.startswith(START_PREFIX):
            return None
        return start_arg[len(START_PREFIX):]
