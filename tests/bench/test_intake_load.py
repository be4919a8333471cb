"""The intake load tool's own HTTP client, against a tiny asyncio HTTP/1.1 server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bench.intake_load import Client, HttpError, run


async def _serve(answer: bytes, seen: dict[str, Any]) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen["connections"] += 1
        try:
            while line := await reader.readline():
                seen["request_lines"].append(line)
                length = 0
                while (header := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = header.partition(b":")
                    seen["headers"].append(name.strip().lower())
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                writer.write(answer)
                await writer.drain()
                if b"Connection: close" in answer:
                    break
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def _seen() -> dict[str, Any]:
    return {"connections": 0, "request_lines": [], "headers": []}


CREATED = b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}"


def test_a_fixed_rate_run_counts_statuses_and_reuses_connections() -> None:
    async def go() -> tuple[dict[str, object], dict[str, Any]]:
        seen = _seen()
        server = await _serve(CREATED, seen)
        port = server.sockets[0].getsockname()[1]
        async with server:
            out = await run(f"http://127.0.0.1:{port}/flows/f/sources/s", "k", 100, 0.3, 5)
        return out, seen

    out, seen = asyncio.run(go())
    assert out["requests"] == 30
    assert out["status"] == {"201": 30}
    assert seen["request_lines"][0] == b"POST /flows/f/sources/s HTTP/1.1\r\n"
    assert b"x-api-key" in seen["headers"]
    assert seen["connections"] < 30  # keep-alive: an answered connection takes the next one


def test_a_closed_connection_is_not_reused() -> None:
    answer = CREATED.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")

    async def go() -> dict[str, Any]:
        seen = _seen()
        server = await _serve(answer, seen)
        port = server.sockets[0].getsockname()[1]
        async with server:
            client = Client(f"http://127.0.0.1:{port}/x", {})
            assert [await client.post(b"{}") for _ in range(3)] == [201, 201, 201]
            client.close()
        return seen

    assert asyncio.run(go())["connections"] == 3


def test_an_unreadable_answer_is_an_error() -> None:
    async def go() -> None:
        server = await _serve(b"garbage\r\n\r\n", _seen())
        port = server.sockets[0].getsockname()[1]
        async with server:
            with pytest.raises(HttpError):
                await Client(f"http://127.0.0.1:{port}/x", {}).post(b"{}")

    asyncio.run(go())
