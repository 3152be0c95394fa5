"""neurocards: product photo → marketing video Telegram bot."""
