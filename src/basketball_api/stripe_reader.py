"""Stripe's GET answers received and decoded in a process of their own.

Receiving and decoding one page of 100 Checkout Sessions or events costs about 8 ms of CPU
(httpx and httpcore, the SDK's JSON decode into ``OrderedDict``, the SDK's request plumbing,
the snapshots). On the event loop that also serves ``/metrics``, those steps were the scrape's
p99 during a listing at 100,000 links (docs/performance.md). Here a child process makes the
GETs and answers each with one JSON line of the snapshots' fields; this process only parses
that line, in a reader thread (about 0.2 ms a page).

One child per process, started by the first read and shared by every gateway of the process
(tests run several apps, each on its own event loop); it serves its requests concurrently.
The pacer, the concurrency bound and the 429 backoff stay in the gateway, which counts every
call as before. The child exits when its standard input closes, so it never outlives this
process. If it dies, the reads waiting on it fail (:class:`ReaderGone`) and the next read
starts a new one.

The protocol, one JSON object a line: a request is ``{"id", ...}`` as the gateway writes it;
the answer carries the same ``id`` (see ``stripe_gateway.answer_read``).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import json
import signal
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import IO, Any

Request = dict[str, Any]
Answer = dict[str, Any]
_Waiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Answer | None]"]

LINE_LIMIT = 16 * 1024 * 1024  # one answer line at most (a page of 100 sessions is ~40 kB)


class ReaderGone(ConnectionError):
    """The reader process ended (or could not be written to) before it answered."""


class _Child:
    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "basketball_api.stripe_reader"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        self.pending: dict[int, _Waiter] = {}
        self.alive = True
        # Lines are written under a lock of their own, never under the one that guards
        # ``pending``: the answer thread takes that one, and a child blocked writing answers
        # stops reading requests.
        self._writing = threading.Lock()
        self._thread = threading.Thread(
            target=self._read, name="stripe-reader-answers", daemon=True
        )
        self._thread.start()

    def send(self, request: Request) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        line = json.dumps(request, separators=(",", ":")).encode() + b"\n"
        with self._writing:
            stdin.write(line)
            stdin.flush()

    def _read(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        for line in stdout:
            try:
                answer: Answer = json.loads(line)
            except ValueError:
                continue
            with self._lock:
                waiter = self.pending.pop(int(answer.get("id", -1)), None)
            if waiter is not None:
                _deliver(waiter, answer)
        with self._lock:
            self.alive = False
            gone = list(self.pending.values())
            self.pending.clear()
        with self._writing, contextlib.suppress(OSError):  # nothing is written to it any more
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        for waiter in gone:
            _deliver(waiter, None)
        stdout.close()
        self.proc.wait()

    def close(self, timeout: float) -> None:
        with self._writing, contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._thread.join(timeout)


def _deliver(waiter: _Waiter, answer: Answer | None) -> None:
    loop, future = waiter
    with contextlib.suppress(RuntimeError):  # that event loop is closed: nobody waits
        loop.call_soon_threadsafe(_settle, future, answer)


def _settle(future: asyncio.Future[Answer | None], answer: Answer | None) -> None:
    if not future.done():
        future.set_result(answer)


class Reader:
    """This process's side: sends requests to the child and hands each answer to its waiter."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._child: _Child | None = None
        self._ids = itertools.count(1)

    async def ask(self, request: Request) -> Answer:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Answer | None] = loop.create_future()
        with self._lock:
            child = self._child
            if child is None or not child.alive:
                child = self._child = _Child(self._lock)
            request_id = next(self._ids)
            child.pending[request_id] = (loop, future)
        try:
            child.send({**request, "id": request_id})
        except (OSError, ValueError) as e:  # ValueError: its standard input is closed
            with self._lock:
                child.pending.pop(request_id, None)
                child.alive = False
            raise ReaderGone(f"the Stripe reader process cannot be written to: {e}") from e
        try:
            answer = await future
        finally:
            with self._lock:
                child.pending.pop(request_id, None)
        if answer is None:
            raise ReaderGone(
                f"the Stripe reader process ended (exit code {child.proc.poll()}) before "
                "it answered"
            )
        return answer

    @property
    def pid(self) -> int | None:
        """The running child's process id (None before the first read or after it ended)."""
        with self._lock:
            child = self._child
            return child.proc.pid if child is not None and child.alive else None

    def close(self, timeout: float = 5.0) -> None:
        """Stop the child (it finishes nothing: waiting reads fail with :class:`ReaderGone`)."""
        with self._lock:
            child, self._child = self._child, None
        if child is not None:
            child.close(timeout)


_shared = Reader()
atexit.register(_shared.close, 2.0)


def shared() -> Reader:
    """The process's one reader."""
    return _shared


# -- the child ----------------------------------------------------------------------------


async def serve(answer: Callable[[Request], Awaitable[Answer]], stdin: IO[bytes]) -> None:
    """Answer each request line of ``stdin`` concurrently, until it closes."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=LINE_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), stdin)
    out = sys.stdout.buffer
    running: set[asyncio.Task[None]] = set()

    async def one(request: Request) -> None:
        reply = await answer(request)
        out.write(json.dumps({**reply, "id": request["id"]}, separators=(",", ":")).encode())
        out.write(b"\n")
        out.flush()

    while line := await reader.readline():
        task = asyncio.create_task(one(json.loads(line)))
        running.add(task)
        task.add_done_callback(running.discard)


def main() -> None:
    # Ctrl-C in a terminal reaches the whole process group: the parent decides when this ends
    # (it closes our standard input), so the child does not print a traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from basketball_api.stripe_gateway import answer_read

    asyncio.run(serve(answer_read, sys.stdin.buffer))


if __name__ == "__main__":
    main()
