"""Logging to stdout (journald picks it up) with every configured secret masked."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from typing import Any

from neurocards.config import Config


class RedactSecrets(logging.Filter):
    """Masks secrets in the final text of a record, whatever put them there (aiogram, httpx, us)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        values = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)
        self._pattern = re.compile("|".join(re.escape(v) for v in values)) if values else None

    def scrub_text(self, text: str) -> str:
        return self._pattern.sub("***", text) if self._pattern is not None else text

    def scrub_obj(self, value: Any) -> Any:
        """Mask secrets anywhere in a JSON-like structure (a Sentry event)."""
        if isinstance(value, str):
            return self.scrub_text(value)
        if isinstance(value, dict):
            return {k: self.scrub_obj(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.scrub_obj(v) for v in value]
        return value

    def filter(self, record: logging.LogRecord) -> bool:
        if self._pattern is None:
            return True
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        redacted = self._pattern.sub("***", message)
        if record.exc_text:
            record.exc_text = self._pattern.sub("***", record.exc_text)
        if redacted != message or record.args:
            record.msg, record.args = redacted, None
        return True


def config_secrets(config: Config) -> list[str]:
    token = config.telegram.token.get_secret_value()
    others = (config.openai.api_key, config.kie.callback_secret, config.kie.callback_hmac_key, *config.kie.api_keys)
    values = [token, token.split(":", 1)[-1], *(secret.get_secret_value() for secret in others)]
    return [value for value in values if value]


def setup_logging(config: Config | None, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if config is not None:
        handler.addFilter(RedactSecrets(config_secrets(config)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request URL at INFO; too chatty for 1,000 polling jobs.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    # aiogram logs every handled update at INFO ("Update id=... is handled"): at hundreds of
    # updates/s that is a few % of the CPU and a flood in the journal; the activity table keeps them.
    logging.getLogger("aiogram.event").setLevel(logging.WARNING)


def setup_sentry(config: Config) -> bool:
    """Optional error reporting; every configured secret is masked in what is sent."""
    dsn = config.ops.sentry_dsn.get_secret_value()
    if not dsn:
        return False
    try:
        import sentry_sdk
    except ImportError:
        logging.getLogger("neurocards").warning("ops.sentry_dsn is set but sentry-sdk is not installed "
                                                "(pip install 'neurocards[sentry]')")
        return False
    redact = RedactSecrets(config_secrets(config))

    def scrub(event: dict, hint: dict) -> dict:
        return redact.scrub_obj(event)

    sentry_sdk.init(dsn=dsn, before_send=scrub, send_default_pii=False, traces_sample_rate=0.0)
    return True
