"""neurocards: product photo → marketing video Telegram bot."""

# Must run before aiogram is imported anywhere: see _lazy_aiogram for why (RSS and start-up time).
from neurocards import _lazy_aiogram  # noqa: F401
