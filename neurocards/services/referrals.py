"""Referrals: a personal start link, the inviter recorded once, a bonus once per invited user.

The bonus is paid on the invited user's first payment (done by `Payments`) or,
when `referrals.bonus_on = "first_video"`, on their first delivered video:
the engine calls `on_video_delivered` after a job reaches `done`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from neurocards.config import Config
from neurocards.store.referrals import ReferralBonus, ReferralStats, ReferralStore

log = logging.getLogger("neurocards.referrals")

START_PREFIX = "ref_"

BonusCallback = Callable[[ReferralBonus], Awaitable[None]]


class Referrals:
    def __init__(self, config: Config, store: ReferralStore, on_bonus: BonusCallback | None = None) -> None:
        self.config = config
        self.store = store
        self.on_bonus = on_bonus  # tells the inviter; set by the bot side (Telegram lives there)

    async def start_parameter(self, user_id: int) -> str:
        """What goes after ?start= in the user's invite link."""
        return START_PREFIX + await self.store.code_for(user_id)

    async def attach_from_start(self, user_id: int, start_arg: str | None, *, is_new_user: bool) -> int | None:
        """A /start ref_<code> from a user who did not exist a moment ago records the inviter.

        Existing users, a second link, one's own link and unknown codes change nothing.
        """
        if not is_new_user or not start_arg or not start_arg.startswith(START_PREFIX):
            return None
        referrer_id = await self.store.attach(user_id, start_arg[len(START_PREFIX):])
        if referrer_id is not None:  # pragma: no mutate - equivalent: decides only the log line below
            log.info("user %d invited by %d", user_id, referrer_id)
        return referrer_id

    @property
    def payment_bonus(self) -> int:
        """Credits to grant to the inviter together with a payment (0: not on payments)."""
        rules = self.config.referrals
        return rules.bonus_credits if rules.bonus_on == "first_payment" else 0

    async def on_video_delivered(self, user_id: int) -> ReferralBonus | None:
        """Engine hook for bonus_on = "first_video": grants (once) and tells the inviter."""
        rules = self.config.referrals
        if rules.bonus_on != "first_video" or rules.bonus_credits <= 0:  # pragma: no mutate - equivalent: "< 0" grants 0, which the store refuses
            return None
        bonus = await self.store.grant(user_id, rules.bonus_credits)
        if bonus is not None:
            await self.announce(bonus)
        return bonus

    async def announce(self, bonus: ReferralBonus) -> None:
        log.info("referral bonus %d to %d for %d", bonus.credits, bonus.referrer_id, bonus.invited_user_id)
        if self.on_bonus is None:
            return
        try:
            await self.on_bonus(bonus)
        except Exception as exc:  # the credits are there; a failed message must not undo anything
            log.warning("referral bonus message to %d failed: %s", bonus.referrer_id, type(exc).__name__)

    async def stats(self, user_id: int) -> ReferralStats:
        return await self.store.stats(user_id)
