"""The whole bot behind proxies: Telegram and KIE traffic go through them and survive a dead one."""

from __future__ import annotations

from tests.fakes.proxy import FakeHttpConnectProxy, FakeSocks5Proxy
from tests.harness import Harness, launch, videos


async def test_bot_works_through_rotating_proxies_with_a_dead_one(harness: Harness) -> None:
    socks = FakeSocks5Proxy(username="u1", password="s3cr3t-proxy-pass")
    http = FakeHttpConnectProxy(username="u2", password="an0ther-pass")
    dead = FakeSocks5Proxy(username="u3", password="dead-pass")
    for proxy in (socks, http, dead):
        await proxy.start()
    await dead.switch_off()
    try:
        (harness.tmp / "proxies.txt").write_text(
            f"# operators' proxies\n{dead.url}\n\n{socks.url}\n{http.url}\n", encoding="utf-8")
        harness.overrides = {"network": {"proxies_file": "proxies.txt", "proxy_for_kie": True,
                                         "proxy_fallback_direct": False}}
        await harness.start()
        user = harness.tg.user(5001)
        await launch(user)
        await harness.tg.wait_until(lambda: len(videos(user)) == 1, timeout=20)
        assert socks.connections > 0 and http.connections > 0  # round robin over the live ones
        assert harness.app is not None
        states = {s["label"]: s for pool in harness.app.proxy_pools for s in pool.states()}
        assert not states[dead.url.split("@")[1]]["healthy"]
        log_dump = "\n".join(str(s) for s in states.values())
        assert "s3cr3t-proxy-pass" not in log_dump
    finally:
        for proxy in (socks, http, dead):
            await proxy.stop()
