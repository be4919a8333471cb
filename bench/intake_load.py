"""Load scenario for the HTTP intake: submits at a fixed rate, prints one JSON object.

Open loop: a request starts every 1/rate seconds whatever the previous ones
are doing (so a slow server shows as latency, not as a lower offered rate).
Run it from its own process against a running ``leadflow serve``:

    python bench/intake_load.py --url http://127.0.0.1:8080/flows/demo/sources/source \\
        --key "$KEY" --rate 200 --seconds 20

Prints ``{"offered_rps", "achieved_rps", "requests", "status", "latency_ms": {p50, p99,
max}, ...}``. Standalone: needs only httpx.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from collections import Counter

import httpx


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
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=1000)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:

        async def one(i: int) -> None:
            started = time.perf_counter()
            try:
                answer = await client.post(url, json=lead(i), headers={"X-API-Key": key})
                statuses[str(answer.status_code)] += 1
            except httpx.HTTPError as exc:
                statuses[type(exc).__name__] += 1
                return
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
