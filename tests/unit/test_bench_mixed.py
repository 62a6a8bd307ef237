"""scripts/bench_mixed.py: the mixed-workload client reads answers right, counts what it should,
and the gateway is started with --workers only when asked."""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
import bench_mixed  # noqa: E402


def reader_of(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


@pytest.mark.parametrize(("raw", "expected", "left"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcNEXT", (200, True), b"NEXT"),
    (b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nNEXT",
     (403, True), b"NEXT"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\nNEXT", (200, False),
     b"NEXT"),
    (b"HTTP/1.1 502 Bad Gateway\r\n\r\nuntil the end", (502, False), b""),   # read to the end
])
def test_a_whole_response_is_read_and_no_more(raw, expected, left):
    async def read():
        reader = reader_of(raw)
        result = await bench_mixed.read_response(reader)
        return result, await reader.read()

    result, rest = asyncio.run(read())
    assert result == expected
    assert rest == left


def test_failures_count_what_the_configuration_should_not_answer():
    result = {"errors": {"session:TimeoutError": 2},
              "statuses": {"https:200": 50, "block:403": 3, "block:200": 1, "http:502": 4,
                           "search:302": 5}}
    # A filter must refuse the blocked host (403 or a redirect); squid alone just serves it.
    assert bench_mixed.failures("selective", result) == 2 + 1 + 4
    assert bench_mixed.failures("squid", result) == 2 + 3 + 4


def test_workers_are_asked_for_only_above_one(tmp_path):
    def command(workers):
        return bench_mixed.gateway_command("webpolicy", tmp_path / "p.yaml", 8080,
                                           tmp_path / "conf", tmp_path / "cache", workers)

    assert "--workers" not in command(1)
    two = command(2)
    assert two[two.index("--workers") + 1] == "2" and two[:2] == ["webpolicy", "run"]


def test_the_session_mix_is_mostly_https_tunnels():
    pick = bench_mixed._picker(bench_mixed.SESSIONS)
    rng = random.Random(1)
    requests: dict[str, int] = {}
    for _ in range(20_000):
        kind, count = pick(rng)
        requests[kind] = requests.get(kind, 0) + count
    total = sum(requests.values())
    assert 0.80 < requests["https"] / total < 0.88
    assert 0.003 < requests["block"] / total < 0.01


def test_the_client_keeps_connections_alive_through_a_forward_proxy():
    """Plain-HTTP sessions against a minimal forward proxy on loopback: every request in
    absolute form, several on one connection, each answer counted."""
    seen: list[bytes] = []
    connections = 0

    async def handle(reader, writer):
        nonlocal connections
        connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                seen.append(head.split(b" ")[1])
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def run():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        plan = {"allowed": ["a.test", "b.test"], "blocked": [],
                "pick": bench_mixed._picker((("http", 1.0, 5),))}
        async with server:
            return await bench_mixed.client_loop(port, 2, 0.3, plan, seed=1)

    tally = asyncio.run(run())
    assert tally.errors == {}
    assert tally.statuses["http:200"] == len(tally.latencies) == len(seen) > 0
    assert all(url.startswith(b"http://") for url in seen)
    assert len(seen) == 5 * connections
