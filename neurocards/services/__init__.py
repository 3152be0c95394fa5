"""Business services: rules above the store, below the Telegram handlers and the CLI."""
