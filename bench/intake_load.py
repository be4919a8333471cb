"""Load scenario for the HTTP intake: submits at a fixed rate, prints one JSON object.

Open loop: a request starts every 1/rate seconds whatever the previous ones
are doing (so a slow server shows as latency, not as a lower offered rate).
Run it from its own process against a running ``leadflow serve``:

    python bench/intake_load.py --url http://127.0.0.1:8080/flows/demo/sources/source \\
        --key "$KEY" --rate 200 --seconds 20

Prints ``{"offered_rps", "achieved_rps", "requests", "status", "latency_ms": {p50, p99,
max}, ...}``. Standalone: the standard library only.

The client is a minimal HTTP/1.1 one on asyncio streams (keep-alive connections
reused last-in first-out, a new one whenever none is idle). Not httpx: its
connection pool scans every connection on each request and response, so once a
slow server has a few hundred requests open the tool itself saturates a core and
the offered rate collapses (200/s offered measured as ~50/s, for any endpoint).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from collections import Counter
from urllib.parse import urlsplit

# Connections idle longer than this are closed rather than reused: the server may
# be closing them (uvicorn's keep-alive timeout is 5 s).
IDLE_REUSE_S = 2.0


class HttpError(Exception):
    """The server's answer could not be read as HTTP/1.1."""


class Client:
    """POSTs JSON to one origin over a pool of keep-alive connections."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"only http:// URLs: {url}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.path = parts.path + (f"?{parts.query}" if parts.query else "")
        self.head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        now = time.monotonic()
        while self.idle:
            reader, writer, since = self.idle.pop()
            if now - since < IDLE_REUSE_S and not reader.at_eof():
                return reader, writer
            writer.close()
        return await asyncio.open_connection(self.host, self.port)

    async def post(self, body: bytes) -> int:
        reader, writer = await self._connection()
        try:
            writer.write(
                (
                    f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{self.head}"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                ).encode()
                + body
            )
            status_line = await reader.readline()
            fields = status_line.split(b" ", 2)
            if len(fields) < 2 or not fields[1].isdigit():
                raise HttpError(f"bad status line {status_line[:40]!r}")
            length, keep = None, True
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    keep = False
                elif name == b"transfer-encoding":
                    raise HttpError("chunked answers are not read by this tool")
            if length is None:
                await reader.read()
                keep = False
            else:
                await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        if keep:
            self.idle.append((reader, writer, time.monotonic()))
        else:
            writer.close()
        return int(fields[1])

    def close(self) -> None:
        for _, writer, _ in self.idle:
            writer.close()
        self.idle.clear()


def lead(i: int) -> dict[str, str]:
    return {
        "first_name": "Load",
        "last_name": f"Test{i}",
        "email": f"load{i}-{uuid.uuid4().hex[:8]}@example.com",
        "phone_1": "5125550123",
        "state": "CA",
        "tcpa_consent": "yes",
    }


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(url: str, key: str, rate: float, seconds: float, timeout: float) -> dict[str, object]:
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    client = Client(url, {"X-API-Key": key})

    async def one(i: int) -> None:
        started = time.perf_counter()
        try:
            status = await asyncio.wait_for(client.post(json.dumps(lead(i)).encode()), timeout)
        except (OSError, TimeoutError, HttpError, asyncio.IncompleteReadError) as exc:
            statuses[type(exc).__name__] += 1
            return
        statuses[str(status)] += 1
        latencies.append((time.perf_counter() - started) * 1000)

    total = int(rate * seconds)
    begin = time.perf_counter()
    tasks = []
    for i in range(total):
        delay = begin + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - begin
    client.close()
    return {
        "scenario": "intake_submit",
        "url": url,
        "offered_rps": rate,
        "seconds": seconds,
        "requests": total,
        "achieved_rps": round(sum(statuses.values()) / elapsed, 1),
        "status": dict(statuses),
        "latency_ms": {
            "p50": round(percentile(latencies, 0.50), 2),
            "p99": round(percentile(latencies, 0.99), 2),
            "max": round(max(latencies, default=0.0), 2),
            "mean": round(statistics.fmean(latencies), 2) if latencies else 0.0,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the source's submit URL")
    parser.add_argument("--key", required=True, help="the source's API key")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=30.0, help="per request, seconds")
    args = parser.parse_args()
    result = asyncio.run(run(args.url, args.key, args.rate, args.seconds, args.timeout))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
