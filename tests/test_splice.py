"""The relay's data path (:mod:`scheduler_plugins.splice`) on real TCP sockets.

Both variants — the kernel pipe (``os.splice``, Linux) and the user-space buffer used
where there is none — carry bytes both ways intact, forward what the opening reader had
already taken first, count what they deliver, stop reading from a sender whose receiver
does not read (TCP back-pressure reaches the sender), and end both connections when one
ends.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket

import pytest

from scheduler_plugins import splice as sp

VARIANTS = [pytest.param(True, id="os.splice"), pytest.param(False, id="buffer")]


def _tcp_pair(server: socket.socket) -> tuple[socket.socket, socket.socket]:
    """(peer end, relay end) of one loopback TCP connection, both non-blocking."""
    peer = socket.create_connection(server.getsockname())
    relay, _ = server.accept()
    for s in (peer, relay):
        s.setblocking(False)
    return peer, relay


async def _send(sock: socket.socket, data: bytes) -> None:
    await asyncio.get_running_loop().sock_sendall(sock, data)


async def _recv_all(sock: socket.socket, n: int) -> bytes:
    loop, got = asyncio.get_running_loop(), bytearray()
    while len(got) < n:
        chunk = await loop.sock_recv(sock, 1 << 20)
        if not chunk:
            break
        got += chunk
    return bytes(got)


@pytest.fixture
def server():
    with socket.create_server(("127.0.0.1", 0)) as s:
        yield s


@pytest.mark.parametrize("kernel", VARIANTS)
def test_splice_copies_both_ways_prefix_first_and_counts(server, kernel):
    if kernel and not sp.SPLICE:
        pytest.skip("os.splice needs Linux")

    async def main() -> None:
        a, a_relay = _tcp_pair(server)
        b, b_relay = _tcp_pair(server)
        counted = {"ab": 0, "ba": 0}
        splice = sp.Splice(
            a_relay, b_relay, b"early-a|", b"early-b|",
            lambda n: counted.__setitem__("ab", counted["ab"] + n),
            lambda n: counted.__setitem__("ba", counted["ba"] + n), kernel=kernel,
        )
        running = asyncio.ensure_future(splice.run())
        ab, ba = os.urandom(6 << 20), os.urandom(1 << 20)
        _, _, got_b, got_a = await asyncio.wait_for(asyncio.gather(
            _send(a, ab), _send(b, ba),
            _recv_all(b, 8 + len(ab)), _recv_all(a, 8 + len(ba)),
        ), 30)
        assert got_b[:8] == b"early-a|" and hashlib.sha256(got_b[8:]).digest() == (
            hashlib.sha256(ab).digest())
        assert got_a == b"early-b|" + ba
        assert counted == {"ab": 8 + len(ab), "ba": 8 + len(ba)}
        # one peer closes: the other sees the end too, and the splice is done
        a.close()
        assert await asyncio.wait_for(asyncio.get_running_loop().sock_recv(b, 10), 10) == b""
        await asyncio.wait_for(running, 10)
        assert a_relay.fileno() == -1 and b_relay.fileno() == -1
        b.close()

    asyncio.run(main())


@pytest.mark.parametrize("kernel", VARIANTS)
def test_splice_stops_reading_while_the_receiver_does_not(server, kernel):
    if kernel and not sp.SPLICE:
        pytest.skip("os.splice needs Linux")

    async def main() -> None:
        a, a_relay = _tcp_pair(server)
        b, b_relay = _tcp_pair(server)
        splice = sp.Splice(a_relay, b_relay, b"", b"", lambda n: None, lambda n: None,
                           kernel=kernel)
        running = asyncio.ensure_future(splice.run())
        data = os.urandom(64 << 20)
        sending = asyncio.ensure_future(_send(a, data))
        await asyncio.sleep(1.0)
        # b reads nothing: the relay holds at most one buffer, the rest waits in the
        # kernels' socket buffers and then at the sender
        assert not sending.done()
        got = await asyncio.wait_for(_recv_all(b, len(data)), 60)
        await sending
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
        splice.close()  # as the relay's reset does: both connections end
        assert await asyncio.wait_for(asyncio.get_running_loop().sock_recv(a, 10), 10) == b""
        await running
        a.close()
        b.close()

    asyncio.run(main())
