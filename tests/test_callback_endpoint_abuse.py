"""The public callback endpoint under hostile or broken clients: a clear 4xx, never a 500, and no
client (slow, idle or many) can hold the sockets a real KIE callback needs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

import httpx
import pytest

from neurocards.providers.base import TaskStatus
from neurocards.providers.kie_callbacks import CallbackServer

SECRET = "path-SECRET-abuse-0123"
BODY = (b'{"code":200,"msg":"ok","data":{"taskId":"t1","state":"success",'
        b'"resultJson":"{\\"resultUrls\\":[\\"https://cdn/x.mp4\\"]}"}}')


class Calls:
    def __init__(self) -> None:
        self.task_ids: list[str] = []

    async def __call__(self, task_id: str, status: TaskStatus, hint: tuple[int, int] | None = None) -> bool:
        self.task_ids.append(task_id)
        return True


@pytest.fixture
async def endpoint() -> AsyncIterator[tuple[CallbackServer, Calls]]:
    calls = Calls()
    srv = CallbackServer("127.0.0.1", 0, SECRET, None, calls, header_timeout_s=0.5, body_timeout_s=0.5,
                         max_connections=50)
    await srv.start()
    yield srv, calls
    await srv.stop()


async def _post(url: str, content: bytes) -> int:
    async with httpx.AsyncClient(timeout=5) as client:
        return (await client.post(url, content=content, headers={"Content-Type": "application/json"})).status_code


async def _eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for the server to get there (a loaded machine delays it; a broken guard never gets there)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the endpoint never got there"
        await asyncio.sleep(0.02)


async def _raw(srv: CallbackServer, data: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    writer.write(data)
    await writer.drain()
    return reader, writer


async def test_json_nested_to_blow_the_stack_is_a_400(endpoint: tuple[CallbackServer, Calls]) -> None:
    srv, calls = endpoint
    assert await _post(srv.url, b"[" * 100_000 + b"]" * 100_000) == 400
    assert await _post(srv.url, b'{"a":' * 20_000 + b"1" + b"}" * 20_000) == 400
    assert await _post(srv.url, BODY) == 200 and calls.task_ids == ["t1"]  # and it still works


async def test_a_body_over_the_limit_is_a_413(endpoint: tuple[CallbackServer, Calls]) -> None:
    srv, _ = endpoint
    assert await _post(srv.url, b" " * (256 * 1024 + 1)) == 413


async def test_a_body_that_trickles_in_is_cut_off_with_408(endpoint: tuple[CallbackServer, Calls]) -> None:
    srv, calls = endpoint
    path = urlsplit(srv.url).path
    reader, writer = await _raw(srv, f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                     f"Content-Length: {len(BODY)}\r\n\r\n".encode() + BODY[:10])
    started = time.monotonic()
    status_line = await asyncio.wait_for(reader.readline(), 5)
    assert b" 408 " in status_line and time.monotonic() - started < 2
    writer.close()
    assert calls.task_ids == []


async def test_headers_that_never_finish_lose_their_socket(endpoint: tuple[CallbackServer, Calls]) -> None:
    srv, _ = endpoint
    reader, writer = await _raw(srv, b"POST /kie/callback/x HTTP/1.1\r\nHost: x\r\n")  # and nothing more
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
    assert srv.guard.timed_out == 1
    writer.close()


async def test_hundreds_of_idle_sockets_cannot_lock_out_a_real_callback(
        endpoint: tuple[CallbackServer, Calls]) -> None:
    srv, calls = endpoint
    idle = [await _raw(srv, b"POST / HTTP/1.1\r\n") for _ in range(300)]
    await _eventually(lambda: srv.guard.refused >= 250)
    assert srv.guard.open_connections <= 50
    await _eventually(lambda: srv.guard.open_connections == 0)  # past the header deadline they are gone...
    assert await _post(srv.url, BODY) == 200 and calls.task_ids == ["t1"]  # ...and KIE gets through
    for _, writer in idle:
        writer.close()
