"""The money side of the numbers: margin per delivered video and how long the KIE balance lasts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from neurocards.config import Config
from neurocards.store.costs import CostStore
from neurocards.store.stats import PeriodStats


@dataclass(frozen=True)
class Margin:
    delivered: int
    revenue_usd: float  # Stars received (not refunded) at payments.usd_per_star
    cost_usd: float  # KIE credits at kie.usd_per_credit + OpenAI tokens at their prices
    wasted_share: float  # part of the KIE cost spent on failed and doubled tasks (0..1)

    @property
    def revenue_per_video(self) -> float | None:
        return self.revenue_usd / self.delivered if self.delivered else None

    @property
    def cost_per_video(self) -> float | None:
        return self.cost_usd / self.delivered if self.delivered else None

    @property
    def margin_per_video(self) -> float | None:
        return (self.revenue_usd - self.cost_usd) / self.delivered if self.delivered else None


def margin(stats: PeriodStats, config: Config) -> Margin:
    openai = config.openai
    gpt_usd = (stats.openai_prompt_tokens * openai.usd_per_1m_input_tokens
               + stats.openai_completion_tokens * openai.usd_per_1m_output_tokens) / 1_000_000
    return Margin(
        delivered=stats.delivered,
        revenue_usd=stats.stars_received * config.payments.usd_per_star,
        cost_usd=stats.kie_credits * config.kie.usd_per_credit + gpt_usd,
        wasted_share=stats.wasted_kie_credits / stats.kie_credits if stats.kie_credits else 0.0,
    )


@dataclass(frozen=True)
class BalanceForecast:
    balance: float  # KIE credits
    daily_spend: float  # credits per day lately (0: nothing spent)

    @property
    def days_left(self) -> float | None:
        return self.balance / self.daily_spend if self.daily_spend > 0 else None


async def forecast(balance_of: Callable[[], Awaitable[float | None]] | None, costs: CostStore) -> BalanceForecast | None:
    """The KIE balance now and how long it lasts at the average spend of the last 7 days."""
    balance = await balance_of() if balance_of is not None else None
    if balance is None:
        return None
    return BalanceForecast(balance=balance, daily_spend=await costs.kie_daily_spend())
