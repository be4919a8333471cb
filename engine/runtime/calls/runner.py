"""Many calls in flight on one event loop, for threads that go on meanwhile.

``AsyncCallRunner`` runs an asyncio loop in a daemon thread with one aiohttp
session. A caller hands it the calls one lead's step asks for
(``start``) and goes on; when all of them have answered (or the window is over)
the runner calls ``done`` with the answers, from its own thread, once. The
loop that keeps many leads in flight (``engine.runtime.concurrent_loop``) uses
``start``; the one-at-a-time path uses ``run``, which blocks.

Bounds: at most ``max_in_flight`` calls on the wire per process and at most a
step's ``max_concurrency`` per destination (a buyer's own limit). A call beyond
them waits inside the runner for a slot; that wait is the engine's, not the
service's, so it is not in the answer's ``wait_ms`` (which starts when the call
is sent). Each exchange holds its own deadline (``engine.runtime.calls.exchange``).

Nothing raised inside the runner escapes it or is lost: an unexpected error in
a call becomes that call's error answer. ``close`` cancels what is in flight
and does not call ``done`` for it: an unfinished call is the loop's to replay,
never an answer to record.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
import traceback
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import aiohttp
import structlog

from engine.runtime.calls import metrics
from engine.runtime.calls.breaker import Breakers, State
from engine.runtime.calls.exchange import CallLimits, exchange, new_session, now_ms
from engine.settings import Settings, get_settings
from engine.steps.calls import Answer, Call

log = structlog.get_logger(__name__)

DEFAULT_MAX_IN_FLIGHT = 256
# How long ``close`` waits for the loop to cancel what is in flight.
CLOSE_TIMEOUT_S = 10.0


class RunnerClosedError(RuntimeError):
    """A call was handed to a runner after ``close``."""


def _failed(call: Call, reason: str, sent_at: float | None) -> Answer:
    """An error answer made by the runner; ``sent_at`` (perf counter) if the call was sent."""
    waited = int((time.perf_counter() - sent_at) * 1000) if sent_at is not None else 0
    at = now_ms()
    return Answer(None, {}, b"", reason, waited, at - waited, at)


def _where(exc: BaseException) -> dict[str, str]:
    """What a log says of an unexpected error: its type and where it was raised. Not its
    message nor a traceback with locals (they may hold a lead's body or a URL's secret)."""
    frames = traceback.extract_tb(exc.__traceback__)
    last = frames[-1] if frames else None
    where = f"{last.filename}:{last.lineno} in {last.name}" if last is not None else "?"
    return {"error": type(exc).__name__, "raised_at": where}


class AsyncCallRunner:
    """Calls made at once on one event loop thread; see the module docstring."""

    def __init__(
        self,
        *,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        limits: CallLimits | None = None,
        breakers: Breakers | None = None,
        name: str = "calls",
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, not {max_in_flight}")
        self.max_in_flight = max_in_flight
        self.limits = limits or CallLimits()
        self.breakers = breakers or Breakers()
        self._session: aiohttp.ClientSession | None = None
        self._lock = threading.Lock()
        self._in_flight = 0
        self._closed = False
        # Touched on the loop's thread only: no lock.
        self._groups: set[asyncio.Task[None]] = set()
        self._per_destination: dict[tuple[str, int], asyncio.Semaphore] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._open(), self._loop).result()

    async def _open(self) -> None:
        # Made on the loop: asyncio primitives and the client belong to it.
        self._slots = asyncio.Semaphore(self.max_in_flight)
        if self._session is None:
            # As many connections as calls may be in flight: a call never waits for a
            # connection inside its deadline (it waited for its slot before the clock).
            self._session = new_session(self.max_in_flight)

    # -- the API -----------------------------------------------------------------------

    def start(
        self,
        calls: list[Call],
        done: Callable[[list[Answer]], None],
        *,
        window_ms: int | None = None,
    ) -> None:
        """Make ``calls`` at once; call ``done(answers)`` (in the calls' order) from the
        runner's thread when all have answered or ``window_ms`` has passed (a call not
        answered by then gets an error answer). Returns at once. ``done`` runs on the
        event loop: it should hand the answers over and return, not do the work."""
        self._enter(len(calls))
        try:
            self._loop.call_soon_threadsafe(self._spawn, list(calls), done, window_ms)
        except RuntimeError as exc:  # the loop closed between the check and now
            self._leave(len(calls))
            raise RunnerClosedError("the call runner is closed") from exc

    def run(self, call: Call) -> Answer:
        """Make one call and wait for its answer (the one-at-a-time path)."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("run() from the runner's own thread would wait for itself")
        self._enter(1)
        try:
            future = asyncio.run_coroutine_threadsafe(self._counted([call], None), self._loop)
            return future.result()[0]
        except (RuntimeError, concurrent.futures.CancelledError) as exc:
            raise RunnerClosedError("the call runner closed before the answer") from exc

    def in_flight(self) -> int:
        """Calls handed to the runner whose answers are not yet given back."""
        with self._lock:
            return self._in_flight

    def close(self) -> None:
        """Cancel what is in flight (its ``done`` is not called), close the connections
        and join the thread. Idempotent."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("close() from the runner's own thread would wait for itself")
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(CLOSE_TIMEOUT_S)
        except Exception:  # a shutdown that fails must still stop the thread
            log.exception("call runner shutdown failed")
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(CLOSE_TIMEOUT_S)
        if not self._thread.is_alive():
            self._loop.close()
        with self._lock:
            self._in_flight = 0

    # -- on the loop's thread ----------------------------------------------------------

    def _enter(self, n: int) -> None:
        with self._lock:
            if self._closed:
                raise RunnerClosedError("the call runner is closed")
            self._in_flight += n

    def _leave(self, n: int) -> None:
        with self._lock:
            self._in_flight = max(0, self._in_flight - n)

    def _spawn(
        self, calls: list[Call], done: Callable[[list[Answer]], None], window_ms: int | None
    ) -> None:
        task = self._loop.create_task(self._group(calls, done, window_ms))
        self._groups.add(task)
        task.add_done_callback(self._groups.discard)

    async def _group(
        self, calls: list[Call], done: Callable[[list[Answer]], None], window_ms: int | None
    ) -> None:
        try:
            answers = await self._counted(calls, window_ms)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a runner bug: every call answered as failed, never silence
            log.error("a call group failed inside the runner", calls=len(calls), **_where(exc))
            answers = [
                _failed(call, f"{call.service} call failed: {type(exc).__name__}", None)
                for call in calls
            ]
        try:
            done(answers)
        except Exception as exc:
            # The caller's bug, on our thread: it must not kill the loop, nor vanish.
            log.error("a call group's done callback raised", calls=len(calls), **_where(exc))

    async def _counted(self, calls: list[Call], window_ms: int | None) -> list[Answer]:
        try:
            return await self._answers(calls, window_ms)
        finally:
            self._leave(len(calls))

    async def _answers(self, calls: list[Call], window_ms: int | None) -> list[Answer]:
        sent: list[float | None] = [None] * len(calls)
        tasks = [self._loop.create_task(self._one(call, sent, i)) for i, call in enumerate(calls)]
        if not tasks:
            return []
        try:
            timeout = window_ms / 1000 if window_ms is not None else None
            _, pending = await asyncio.wait(tasks, timeout=timeout)
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            raise
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        answers = []
        for i, (call, task) in enumerate(zip(calls, tasks, strict=True)):
            if task in pending or task.cancelled():
                reason = f"{call.service} no answer within the {window_ms}ms window"
                answers.append(replace(_failed(call, reason, sent[i]), cut=True))
            elif (exc := task.exception()) is not None:  # _one catches all: a runner bug
                answers.append(
                    _failed(call, f"{call.service} call failed: {type(exc).__name__}", sent[i])
                )
            else:
                answers.append(task.result())
        return answers

    async def _one(self, call: Call, sent: list[float | None], i: int) -> Answer:
        try:
            async with self._slot(call):
                sent[i] = time.perf_counter()
                refused = self.breakers.refuse(call)
                if refused is not None:
                    metrics.refused(call.destination)
                    return replace(_failed(call, refused, sent[i]), breaker_state="open")
                return await self._exchange(call)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("call failed inside the runner", service=call.service, **_where(exc))
            return _failed(call, f"{call.service} call failed: {type(exc).__name__}", sent[i])

    async def _exchange(self, call: Call) -> Answer:
        assert self._session is not None
        destination = call.destination
        metrics.sent(destination)
        answer: Answer | None = None
        try:
            answer = await exchange(self._session, call, self.limits)
        except asyncio.CancelledError:
            self.breakers.cancelled(call)  # a probe cut by a window proves nothing
            raise
        finally:
            metrics.ended(destination, answer)
        state = self.breakers.record(call, answer)
        if state is None:
            return answer
        metrics.breaker_state(destination, state)
        return replace(answer, breaker_state=state)

    def breaker_states(self) -> dict[str, State]:
        """Each destination's breaker state (closed, open, half_open), for status output."""
        return self.breakers.states()

    @contextlib.asynccontextmanager
    async def _slot(self, call: Call) -> AsyncIterator[None]:
        """The destination's slot, then the process's: a call waits here, unclocked. In
        that order, so a call queued behind a busy buyer holds no slot another buyer's
        call could use."""
        if call.max_concurrency is None:
            async with self._slots:
                yield
            return
        key = (call.destination, call.max_concurrency)
        limit = self._per_destination.get(key)
        if limit is None:
            limit = self._per_destination[key] = asyncio.Semaphore(call.max_concurrency)
        async with limit, self._slots:
            yield

    async def _shutdown(self) -> None:
        for task in list(self._groups):
            task.cancel()
        if self._groups:
            await asyncio.gather(*self._groups, return_exceptions=True)
        if self._session is not None:
            await self._session.close()


def call_runner(settings: Settings | None = None) -> AsyncCallRunner:
    """The runner a step process uses, bounded by its settings."""
    s = settings or get_settings()
    return AsyncCallRunner(
        max_in_flight=s.call_max_in_flight,
        limits=CallLimits(max_response_bytes=s.call_max_response_bytes),
        breakers=Breakers(s.call_breaker_failures, s.call_breaker_cool_down_ms),
    )
