"""Local SOCKS5 (RFC 1928 + RFC 1929 auth, CONNECT only) and HTTP CONNECT proxies for tests.

Both listen on 127.0.0.1 with a random port, count connections/tunnels/bytes, record the
targets they were asked for, and can be switched off (the port then refuses connections) and on
again. They only ever connect to loopback targets, so a test cannot leak traffic off the machine.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import struct
from urllib.parse import quote

_LOOPBACK_NAMES = {"localhost"}


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _FakeProxy:
    scheme = ""

    def __init__(self, username: str | None = "user", password: str | None = "pass") -> None:
        self.username = username
        self.password = password
        self.host = "127.0.0.1"
        self.port = 0
        self.connections = 0  # TCP connections accepted from clients
        self.tunnels = 0  # successful CONNECTs
        self.auth_failures = 0
        self.bytes_up = 0  # client -> target
        self.bytes_down = 0  # target -> client
        self.targets: list[tuple[str, int]] = []
        self.hang = False  # accept TCP, then never answer: a black-holed proxy
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        creds = ""
        if self.username is not None:
            creds = f"{quote(self.username, safe='')}:{quote(self.password or '', safe='')}@"
        return f"{self.scheme}://{creds}{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        """Listen (again, on the same port once one was assigned)."""
        if self._server is None:
            self._server = await asyncio.start_server(self._accept, self.host, self.port)
            self.port = self._server.sockets[0].getsockname()[1]

    async def switch_off(self) -> None:
        """Stop listening and drop open tunnels: new connections are refused."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def switch_on(self) -> None:
        await self.start()

    async def stop(self) -> None:
        await self.switch_off()

    async def __aenter__(self) -> _FakeProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        try:
            if self.hang:
                await asyncio.Event().wait()  # until switch_off/stop cancels us
            target = await self._handshake(reader, writer)
            if target is not None:
                await self._relay(reader, writer, *target)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                         ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        raise NotImplementedError

    async def _open(self, host: str, port: int
                    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        self.targets.append((host, port))
        if not _is_loopback(host):
            return None
        try:
            return await asyncio.open_connection(host, port)
        except OSError:
            return None

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter) -> None:
        self.tunnels += 1
        self._writers.add(up_writer)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, up: bool) -> None:
            try:
                while data := await src.read(65536):
                    if up:
                        self.bytes_up += len(data)
                    else:
                        self.bytes_down += len(data)
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.write_eof() if dst.can_write_eof() else dst.close()

        try:
            await asyncio.gather(pump(reader, up_writer, True), pump(up_reader, writer, False))
        finally:
            self._writers.discard(up_writer)
            up_writer.close()


class FakeSocks5Proxy(_FakeProxy):
    """SOCKS5 with username/password auth (or no auth when username is None)."""

    scheme = "socks5"

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                         ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        version, n_methods = await reader.readexactly(2)
        methods = await reader.readexactly(n_methods)
        if version != 5:
            return None
        wanted = 0x02 if self.username is not None else 0x00
        if wanted not in methods:
            writer.write(b"\x05\xff")
            return None
        writer.write(bytes([5, wanted]))
        if wanted == 0x02:
            _, ulen = await reader.readexactly(2)
            user = (await reader.readexactly(ulen)).decode()
            (plen,) = await reader.readexactly(1)
            password = (await reader.readexactly(plen)).decode()
            if (user, password) != (self.username, self.password):
                self.auth_failures += 1
                writer.write(b"\x01\x01")
                return None
            writer.write(b"\x01\x00")
        _, cmd, _, atyp = await reader.readexactly(4)
        if atyp == 1:
            host = str(ipaddress.IPv4Address(await reader.readexactly(4)))
        elif atyp == 4:
            host = str(ipaddress.IPv6Address(await reader.readexactly(16)))
        elif atyp == 3:
            (length,) = await reader.readexactly(1)
            host = (await reader.readexactly(length)).decode()
        else:
            return self._reply(writer, 8)  # address type not supported
        (port,) = struct.unpack("!H", await reader.readexactly(2))
        if cmd != 1:
            return self._reply(writer, 7)  # command not supported: CONNECT only
        upstream = await self._open(host, port)
        if upstream is None:
            return self._reply(writer, 5)  # connection refused
        self._reply(writer, 0)
        return upstream

    @staticmethod
    def _reply(writer: asyncio.StreamWriter, code: int) -> None:
        writer.write(bytes([5, code, 0, 1, 127, 0, 0, 1, 0, 0]))


class FakeHttpConnectProxy(_FakeProxy):
    """HTTP proxy that only tunnels (CONNECT), with Basic Proxy-Authorization."""

    scheme = "http"

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                         ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        request_line, *header_lines = head.split("\r\n")
        headers = {}
        for line in header_lines:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        method, _, target = request_line.partition(" ")
        target = target.rsplit(" ", 1)[0]
        if method != "CONNECT":
            writer.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            return None
        if self.username is not None:
            expected = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            if headers.get("proxy-authorization") != f"Basic {expected}":
                self.auth_failures += 1
                writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                             b'Proxy-Authenticate: Basic realm="fake"\r\nContent-Length: 0\r\n\r\n')
                return None
        host, _, port_text = target.rpartition(":")
        upstream = await self._open(host.strip("[]"), int(port_text))
        if upstream is None:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return None
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        return upstream
