"""A failed sendVideo is either surely not delivered (retried freely) or of unknown outcome (resent
once at most): the error text aiogram and our proxy session produce decides which."""

from __future__ import annotations

import pytest
from aiogram.exceptions import TelegramNetworkError

from neurocards.bot.notifier import _never_connected


@pytest.mark.parametrize(("message", "never_sent"), [
    ("HTTP Client says - ClientConnectorError: Cannot connect to host api.telegram.org:443", True),
    ("via proxy p1: ProxyConnectionError: could not connect to proxy", True),
    ("via proxy p1: ClientHttpProxyError: 407, message='Proxy Authentication Required'", True),
    ("all 3 proxies are cooling down (first back in 12s)", True),
    ("HTTP Client says - ServerDisconnectedError: Server disconnected", False),
    ("via proxy p1: ClientOSError: [Errno 104] Connection reset by peer", False),
    ("Request timeout error", False),
])
def test_connect_failures_are_told_from_unknown_outcomes(message: str, never_sent: bool) -> None:
    assert _never_connected(TelegramNetworkError(method=None, message=message)) is never_sent  # type: ignore[arg-type]
