"""neurocards.proxies: parsing, pool health, and real traffic through local SOCKS5/HTTP proxies."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiogram import Bot
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import TelegramNetworkError
from aiohttp import web

from neurocards.bot.session import RotatingProxySession
from neurocards.proxies import (
    NoProxyAvailable,
    Proxy,
    ProxyConfigError,
    ProxyPool,
    RotatingProxyTransport,
    load_proxies,
    parse_proxies,
)
from tests.fakes.proxy import FakeHttpConnectProxy, FakeSocks5Proxy

SECRET = "s3cr3t-Pa55w0rd"
TOKEN = "42:TEST-token"
ME = {"id": 1, "is_bot": True, "first_name": "t", "username": "t_bot"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def free_dead_url(scheme: str = "socks5") -> str:
    """A loopback port nobody listens on: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"{scheme}://user:{SECRET}@127.0.0.1:{port}"


# --- parsing ----------------------------------------------------------------------------------


def test_parse_all_formats() -> None:
    text = f"""
# comment line

10.0.0.1:1080:alice:{SECRET}
10.0.0.2:3128
socks5://bob:p%40ss@proxy.example:1081
socks5h://proxy.example:1082
http://carol:pw@10.0.0.3:8080/
https://10.0.0.4:8443
10.0.0.5:1080:dave:pa:ss:word
socks5://[::1]:1085
"""
    proxies = parse_proxies(text)
    assert [p.label for p in proxies] == [
        "10.0.0.1:1080", "10.0.0.2:3128", "proxy.example:1081", "proxy.example:1082",
        "10.0.0.3:8080", "10.0.0.4:8443", "10.0.0.5:1080", "[::1]:1085",
    ]
    first = proxies[0]
    assert first.url == f"socks5://alice:{SECRET}@10.0.0.1:1080"
    assert (first.scheme, first.host, first.port, first.username, first.password) == (
        "socks5", "10.0.0.1", 1080, "alice", SECRET)
    assert proxies[1].url == "socks5://10.0.0.2:3128" and proxies[1].password is None
    assert proxies[2].password == "p@ss" and proxies[2].url == "socks5://bob:p%40ss@proxy.example:1081"
    assert proxies[3].scheme == "socks5h" and proxies[3].rdns is True
    assert proxies[4].url == "http://carol:pw@10.0.0.3:8080"
    assert proxies[5].scheme == "https" and proxies[5].proxy_ssl is not None
    assert proxies[6].password == "pa:ss:word"  # a password may contain ':'
    assert proxies[7].host == "::1"
    assert parse_proxies("1.2.3.4:80", default_scheme="http")[0].url == "http://1.2.3.4:80"


def test_parse_dedupes_and_skips_comments() -> None:
    assert parse_proxies("# only\n\n   \n  # comments\n") == []
    assert len(parse_proxies("1.2.3.4:80\n1.2.3.4:80\n")) == 1


@pytest.mark.parametrize("bad", [
    f"1.2.3.4:1080:user{SECRET}",  # three fields
    f"1.2.3.4:notaport:user:{SECRET}",
    f"1.2.3.4:99999:user:{SECRET}",
    f"ftp://user:{SECRET}@1.2.3.4:21",
    f"socks5://user:{SECRET}@1.2.3.4",  # no port
    f"socks5://user:{SECRET}#x@1.2.3.4:1080",  # unencoded '#'
    f"1.2.3.4:1080::{SECRET}",  # empty user
    f"socks5://user:{SECRET}\uff03@1.2.3.4:1080",  # urlsplit's own error would quote the netloc
    f"http://us%3Aer:{SECRET}@1.2.3.4:1080",  # ":" in an HTTP user name
])
def test_bad_line_names_line_number_without_password(bad: str) -> None:
    with pytest.raises(ProxyConfigError) as info:
        parse_proxies(f"# header\n1.2.3.4:80\n{bad}\n", source="proxies.txt")
    message = str(info.value)
    assert "line 3" in message and "proxies.txt" in message
    assert SECRET not in message and SECRET not in repr(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_load_proxies(tmp_path: Path) -> None:
    assert load_proxies(tmp_path / "missing.txt") == []
    path = tmp_path / "proxies.txt"
    path.write_text("# nothing yet\n")
    assert load_proxies(path) == []
    path.write_text(f"# two\n1.1.1.1:1080:u:{SECRET}\nhttp://2.2.2.2:3128\n")
    assert [p.label for p in load_proxies(path)] == ["1.1.1.1:1080", "2.2.2.2:3128"]
    path.write_text("bogus\n")
    with pytest.raises(ProxyConfigError, match="line 1"):
        load_proxies(path)


def test_proxy_text_never_shows_password() -> None:
    proxy = parse_proxies(f"socks5://user:{SECRET}@1.2.3.4:1080")[0]
    assert SECRET in proxy.url
    for text in (repr(proxy), str(proxy), proxy.label, f"{proxy}", repr([proxy])):
        assert SECRET not in text and "user" not in text
    assert str(proxy) == "1.2.3.4:1080"


# --- pool -------------------------------------------------------------------------------------


def _pool(n: int, **kwargs: object) -> tuple[ProxyPool, list[Proxy], FakeClock]:
    clock = FakeClock()
    proxies = parse_proxies("\n".join(f"10.0.0.{i}:1080:u:{SECRET}" for i in range(1, n + 1)))
    return ProxyPool(proxies, clock=clock, **kwargs), proxies, clock  # type: ignore[arg-type]


def test_pool_round_robin_and_cooldown(caplog: pytest.LogCaptureFixture) -> None:
    pool, (a, b, c), clock = _pool(3, cooldown_s=60.0)
    assert [pool.next() for _ in range(4)] == [a, b, c, a]
    with caplog.at_level(logging.DEBUG):
        pool.mark_failed(b, ConnectionRefusedError(f"user:{SECRET}"))
        pool.mark_failed(b, "again")  # already cooling: no second log line
    assert [r.getMessage() for r in caplog.records] == [
        "proxy 10.0.0.2:1080 failed (ConnectionRefusedError); cooling down for 60s"]
    assert [pool.next() for _ in range(4)] == [c, a, c, a]
    state = {s["label"]: s for s in pool.states()}["10.0.0.2:1080"]
    assert state == {"label": "10.0.0.2:1080", "healthy": False, "cooldown_until": 1060.0,
                     "failures": 2, "successes": 0}
    clock.now += 61  # cool-down over: back in rotation, and a success clears it
    assert b in {pool.next() for _ in range(3)}
    pool.mark_ok(b)
    state = {s["label"]: s for s in pool.states()}["10.0.0.2:1080"]
    assert state["healthy"] and state["cooldown_until"] is None and state["successes"] == 1


def test_pool_all_down(caplog: pytest.LogCaptureFixture) -> None:
    assert ProxyPool([]).next() is None  # no proxies: direct
    assert ProxyPool([], fallback_direct=False).next() is None
    pool, proxies, clock = _pool(2, cooldown_s=30.0)
    for p in proxies:
        pool.mark_failed(p)
    with caplog.at_level(logging.WARNING):
        assert pool.next() is None and pool.next() is None  # fallback to direct
    assert sum("connecting directly" in r.getMessage() for r in caplog.records) == 1
    clock.now += 31
    assert pool.next() in proxies

    strict, proxies, clock = _pool(2, cooldown_s=30.0, fallback_direct=False)
    for p in proxies:
        strict.mark_failed(p)
    with pytest.raises(NoProxyAvailable, match="all 2 proxies are cooling down"):
        strict.next()
    clock.now += 31
    assert strict.next() in proxies


def test_pool_ignores_unknown_and_direct() -> None:
    pool, _, _ = _pool(1)
    pool.mark_failed(None)
    pool.mark_ok(None)
    pool.mark_failed(parse_proxies("9.9.9.9:1")[0])
    assert pool.states()[0]["failures"] == 0


# --- real traffic -----------------------------------------------------------------------------


class Upstream:
    """Tiny aiohttp server: /ping for httpx, /bot<token>/getMe for aiogram, /file for downloads."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.url = ""
        app = web.Application()
        app.router.add_route("*", "/ping", self._ping)
        app.router.add_post("/bot{token}/{method}", self._bot)
        app.router.add_get("/file", self._file)
        self._runner = web.AppRunner(app, access_log=None)

    async def _ping(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.hits.append(request.path)
        return web.Response(text=f"pong {len(body)}")

    async def _bot(self, request: web.Request) -> web.Response:
        self.hits.append(request.match_info["method"])
        if request.match_info["token"] != TOKEN:
            return web.json_response({"ok": False, "error_code": 401, "description": "Unauthorized"},
                                     status=401)
        return web.json_response({"ok": True, "result": ME})

    async def _file(self, request: web.Request) -> web.Response:
        self.hits.append(request.path)
        return web.Response(body=b"x" * 100_000)

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        await self._runner.cleanup()


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    server = Upstream()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def socks() -> AsyncIterator[FakeSocks5Proxy]:
    async with FakeSocks5Proxy("user", SECRET) as proxy:
        yield proxy


def _client(pool: ProxyPool) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=RotatingProxyTransport(pool), timeout=5.0)


@pytest.mark.parametrize("kind", [FakeSocks5Proxy, FakeHttpConnectProxy])
async def test_httpx_goes_through_proxy(kind: type[FakeSocks5Proxy], upstream: Upstream) -> None:
    async with kind("user", SECRET) as proxy:
        await _check_httpx_through(proxy, upstream)


async def _check_httpx_through(proxy: FakeSocks5Proxy, upstream: Upstream) -> None:
    pool = ProxyPool(parse_proxies(proxy.url))
    async with _client(pool) as client:
        first = await client.post(f"{upstream.url}/ping", content=b"hello")
        second = await client.get(f"{upstream.url}/ping")
    assert (first.text, second.text) == ("pong 5", "pong 0")
    assert upstream.hits == ["/ping", "/ping"]
    assert proxy.connections == 1 and proxy.tunnels == 1  # keep-alive reused the tunnel
    assert proxy.bytes_up > 0 and proxy.bytes_down > 0
    assert proxy.targets == [("127.0.0.1", int(upstream.url.rsplit(":", 1)[1]))]
    assert pool.states()[0]["successes"] == 2


async def test_httpx_fails_over_from_dead_proxy(socks: FakeSocks5Proxy, upstream: Upstream,
                                                caplog: pytest.LogCaptureFixture) -> None:
    dead = free_dead_url()
    clock = FakeClock()
    pool = ProxyPool(parse_proxies(f"{dead}\n{socks.url}"), cooldown_s=60, clock=clock)
    with caplog.at_level(logging.DEBUG):
        async with _client(pool) as client:
            response = await client.post(f"{upstream.url}/ping", json={"a": 1})
            again = await client.get(f"{upstream.url}/ping")
            clock.now += 61  # the dead proxy is due for another try
            upload = await client.post(f"{upstream.url}/ping", files={"f": b"12345"})
    assert response.status_code == again.status_code == 200
    assert upload.status_code == 200  # multipart bodies are replayed too
    assert socks.connections == 1 and upstream.hits == ["/ping", "/ping", "/ping"]
    dead_state, live_state = pool.states()
    assert not dead_state["healthy"] and dead_state["failures"] == 2
    assert live_state["healthy"] and live_state["successes"] == 3
    assert any("cooling down" in r.getMessage() and dead_state["label"] in r.getMessage()
               for r in caplog.records)
    assert SECRET not in caplog.text


@pytest.mark.parametrize("kind", [FakeSocks5Proxy, FakeHttpConnectProxy])
async def test_httpx_wrong_password_and_all_down_errors_hide_secret(
        kind: type[FakeSocks5Proxy], upstream: Upstream, caplog: pytest.LogCaptureFixture) -> None:
    async with kind("user", SECRET) as proxy:
        wrong = proxy.url.replace(SECRET, SECRET + "-wrong")
        pool = ProxyPool(parse_proxies(f"{wrong}\n{free_dead_url('http')}"), fallback_direct=False)
        with caplog.at_level(logging.DEBUG):
            async with _client(pool) as client:
                with pytest.raises(httpx.ProxyError) as first:
                    await client.get(f"{upstream.url}/ping")
                with pytest.raises(httpx.ConnectError, match="cooling down") as second:
                    await client.get(f"{upstream.url}/ping")
    assert proxy.auth_failures == 1 and upstream.hits == []
    assert [s["healthy"] for s in pool.states()] == [False, False]
    for exc in (first.value, second.value):
        assert SECRET not in str(exc) and SECRET not in repr(exc)
    assert SECRET not in caplog.text


async def test_httpx_streaming_body_is_not_replayed(socks: FakeSocks5Proxy,
                                                    upstream: Upstream) -> None:
    pool = ProxyPool(parse_proxies(f"{free_dead_url()}\n{socks.url}"))

    async def body() -> AsyncIterator[bytes]:
        yield b"chunk"

    async with _client(pool) as client:
        with pytest.raises(httpx.ProxyError):
            await client.post(f"{upstream.url}/ping", content=body())
        assert (await client.post(f"{upstream.url}/ping", content=body())).text == "pong 5"
    assert socks.connections == 1 and upstream.hits == ["/ping"]


async def test_httpx_direct_without_proxies(upstream: Upstream) -> None:
    async with _client(ProxyPool([])) as client:
        assert (await client.get(f"{upstream.url}/ping")).status_code == 200
        with pytest.raises(httpx.ConnectError) as info:
            await client.get(free_dead_url("http").replace(f"user:{SECRET}@", ""))
    assert upstream.hits == ["/ping"]
    assert info.value.__cause__ is not info.value


@pytest.mark.parametrize("kind", [FakeSocks5Proxy, FakeHttpConnectProxy])
async def test_aiogram_get_me_through_proxy(kind: type[FakeSocks5Proxy], upstream: Upstream) -> None:
    async with kind("user", SECRET) as proxy:
        await _check_aiogram_through(proxy, upstream)


async def _check_aiogram_through(proxy: FakeSocks5Proxy, upstream: Upstream) -> None:
    pool = ProxyPool(parse_proxies(f"{free_dead_url(proxy.scheme)}\n{proxy.url}"))
    session = RotatingProxySession(pool, api=TelegramAPIServer.from_base(upstream.url), timeout=5)
    async with Bot(TOKEN, session=session) as bot:
        me = await bot.get_me()
        assert (me.id, me.username) == (1, "t_bot")
        await bot.get_me()
        chunks = [c async for c in bot.session.stream_content(f"{upstream.url}/file")]
        assert sum(map(len, chunks)) == 100_000
    assert upstream.hits == ["getMe", "getMe", "/file"]
    assert proxy.connections >= 1 and proxy.tunnels >= 1
    assert [s["healthy"] for s in pool.states()] == [False, True]
    assert pool.states()[1]["successes"] == 3


async def test_aiogram_all_proxies_dead_hides_secret(upstream: Upstream,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    pool = ProxyPool(parse_proxies(f"{free_dead_url()}\n{free_dead_url('http')}"),
                     fallback_direct=False)
    session = RotatingProxySession(pool, api=TelegramAPIServer.from_base(upstream.url), timeout=5)
    with caplog.at_level(logging.DEBUG):
        async with Bot(TOKEN, session=session) as bot:
            with pytest.raises(TelegramNetworkError) as first:
                await bot.get_me()
            with pytest.raises(TelegramNetworkError, match="cooling down") as second:
                await bot.get_me()
    assert upstream.hits == []
    for exc in (first.value, second.value):
        assert SECRET not in str(exc) and SECRET not in repr(exc)
    assert SECRET not in caplog.text


async def test_aiogram_falls_back_to_direct(upstream: Upstream) -> None:
    pool = ProxyPool(parse_proxies(free_dead_url()))
    session = RotatingProxySession(pool, api=TelegramAPIServer.from_base(upstream.url), timeout=5)
    async with Bot(TOKEN, session=session) as bot:
        assert (await bot.get_me()).id == 1  # dead proxy, then the retry goes direct
    assert upstream.hits == ["getMe"] and pool.states()[0]["failures"] == 1


async def test_hanging_proxy_times_out_and_fails_over(socks: FakeSocks5Proxy,
                                                      upstream: Upstream) -> None:
    async with FakeSocks5Proxy("user", SECRET) as hung:
        hung.hang = True
        pool = ProxyPool(parse_proxies(f"{hung.url}\n{socks.url}"))
        async with httpx.AsyncClient(transport=RotatingProxyTransport(pool),
                                     timeout=httpx.Timeout(5.0, connect=0.3)) as client:
            assert (await client.get(f"{upstream.url}/ping")).status_code == 200
        assert [s["healthy"] for s in pool.states()] == [False, True]

        pool = ProxyPool(parse_proxies(f"{hung.url}\n{socks.url}"))
        session = RotatingProxySession(pool, api=TelegramAPIServer.from_base(upstream.url),
                                       timeout=5, connect_timeout=0.3)
        async with Bot(TOKEN, session=session) as bot:
            assert (await bot.get_me()).id == 1
        assert [s["healthy"] for s in pool.states()] == [False, True]
    assert hung.connections == 2 and upstream.hits == ["/ping", "getMe"]


async def test_fake_proxy_switch_off_refuses(socks: FakeSocks5Proxy, upstream: Upstream) -> None:
    pool = ProxyPool(parse_proxies(socks.url), fallback_direct=False)
    async with _client(pool) as client:
        await client.get(f"{upstream.url}/ping")
        await socks.switch_off()
        with pytest.raises(httpx.TransportError):
            await client.get(f"{upstream.url}/ping")
        assert not pool.states()[0]["healthy"]
        await socks.switch_on()
    async with _client(ProxyPool(parse_proxies(socks.url))) as client:
        assert (await client.get(f"{upstream.url}/ping")).status_code == 200
