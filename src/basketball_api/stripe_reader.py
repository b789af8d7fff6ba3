"""Stripe's GET answers received and decoded in a process of their own.

Receiving and decoding one page of 100 Checkout Sessions or events costs about 8 ms of CPU
(httpx and httpcore, the SDK's JSON decode into ``OrderedDict``, the SDK's request plumbing,
the snapshots). On the event loop that also serves ``/metrics``, those steps were the scrape's
p99 during a listing at 100,000 links (docs/performance.md). Here a child process makes the
GETs and answers each with one JSON line of the snapshots' fields; this process only parses
that line, in a reader thread (about 0.2 ms a page).

One child per process, started with the service (or by the first read) and shared by every
gateway of the process (tests run several apps, each on its own event loop); it serves its
requests concurrently, paced, bounded and retried there, where they are sent (see
``stripe_gateway.answer_read``). The child exits when its standard input closes, so it never
outlives this process. If it dies, the reads waiting on it fail (:class:`ReaderGone`) and the
next read starts a new one, at most one start per :data:`RESTART_AFTER_SECONDS`. A read whose
waiter is cancelled (a refresh deadline) is cancelled in the child too.

The protocol, one JSON object a line: a request is the gateway's object plus an ``id``, or
``{"cancel": id}``; an answer is an object with the same ``id``. The child writes its answers to
a descriptor of its own: anything else printed to its standard output goes to standard error.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import IO, Any

Request = dict[str, Any]
Answer = dict[str, Any]
_Waiter = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Answer | None]"]

LINE_LIMIT = 16 * 1024 * 1024  # one line at most (a page of 100 sessions is ~40 kB)
RESTART_AFTER_SECONDS = 2.0  # a child that died is replaced no sooner than this after the last
COMMAND = (sys.executable, "-m", "basketball_api.stripe_reader")


class ReaderGone(ConnectionError):
    """The reader process could not be started, ended, could not be written to, or did not
    answer in time."""


class _Child:
    def __init__(self, lock: threading.Lock, command: Sequence[str]) -> None:
        self._lock = lock
        try:
            self.proc = subprocess.Popen(
                list(command), stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True
            )
        except OSError as e:
            raise ReaderGone(f"the Stripe reader process could not start: {e}") from e
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

    def send(self, line: bytes) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        with self._writing:
            stdin.write(line)
            stdin.flush()

    def _read(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        try:
            for line in stdout:
                waiter, answer = None, None
                with contextlib.suppress(ValueError, TypeError, KeyError):
                    answer = json.loads(line)
                    with self._lock:
                        waiter = self.pending.pop(int(answer["id"]), None)
                if waiter is not None:
                    _deliver(waiter, answer)
        except (OSError, ValueError):  # its standard output closed under us
            pass
        finally:
            self._ended(stdout)

    def _ended(self, stdout: IO[bytes]) -> None:
        with self._lock:
            self.alive = False
        with self._writing, contextlib.suppress(OSError):  # nothing is written to it any more
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        stdout.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        with self._lock:
            gone = list(self.pending.values())
            self.pending.clear()
        for waiter in gone:
            _deliver(waiter, None)

    def close(self, timeout: float) -> None:
        if self._writing.acquire(timeout=timeout):
            try:
                with contextlib.suppress(OSError):
                    if self.proc.stdin is not None:
                        self.proc.stdin.close()
            finally:
                self._writing.release()
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


def _line(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


class Reader:
    """This process's side: sends requests to the child and hands each answer to its waiter."""

    def __init__(self, command: Sequence[str] = COMMAND) -> None:
        self._command = tuple(command)
        self._lock = threading.Lock()
        self._child: _Child | None = None
        self._started_at = -RESTART_AFTER_SECONDS
        self._ids = itertools.count(1)

    async def ask(self, request: Request, *, within: float) -> Answer:
        """The child's answer to ``request``; :class:`ReaderGone` if there is none within
        ``within`` seconds (the request is then cancelled in the child)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Answer | None] = loop.create_future()
        request_id = next(self._ids)
        line = _line({**request, "id": request_id})  # before anything is registered
        with self._lock:
            child = self._running()
            child.pending[request_id] = (loop, future)
        answered = False
        try:
            child.send(line)
            async with asyncio.timeout(within):
                answer = await future
            answered = True
        except TimeoutError as e:  # before OSError, of which it is a subclass
            raise ReaderGone(f"the Stripe reader process did not answer in {within:g} s") from e
        except (OSError, ValueError) as e:  # ValueError: its standard input is closed
            raise ReaderGone(f"the Stripe reader process cannot be written to: {e}") from e
        finally:
            with self._lock:
                child.pending.pop(request_id, None)
            if not answered:
                with contextlib.suppress(OSError, ValueError):
                    child.send(_line({"cancel": request_id}))
        if answer is None:
            raise ReaderGone(
                f"the Stripe reader process ended (exit code {child.proc.returncode}) before "
                "it answered"
            )
        return answer

    def start(self) -> None:
        """Start the child now if none runs (the first read would otherwise start it, and
        wait while it loads the SDK: ~0.5 s of CPU)."""
        with self._lock:
            self._running()

    def _running(self) -> _Child:
        child = self._child
        if child is not None and child.alive:
            return child
        wait = self._started_at + RESTART_AFTER_SECONDS - time.monotonic()
        if child is not None and wait > 0:
            raise ReaderGone(f"the Stripe reader process ended; restarting in {wait:.1f} s")
        self._started_at = time.monotonic()
        self._child = _Child(self._lock, self._command)
        return self._child

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
            self._started_at = -RESTART_AFTER_SECONDS
        if child is not None:
            child.close(timeout)


_shared = Reader()
atexit.register(_shared.close, 2.0)


def shared() -> Reader:
    """The process's one reader."""
    return _shared


# -- the child ----------------------------------------------------------------------------


async def serve(
    answer: Callable[[Request], Awaitable[Answer]], stdin: IO[bytes], out: IO[bytes]
) -> None:
    """Answer each request line of ``stdin`` on ``out``, concurrently, until ``stdin`` closes;
    a ``{"cancel": id}`` line cancels that request (nothing is answered for it)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=LINE_LIMIT)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), stdin)
    running: dict[int, asyncio.Task[None]] = {}

    async def one(request: Request) -> None:
        reply = await answer(request)
        out.write(_line({**reply, "id": request["id"]}))
        out.flush()

    try:
        while line := await reader.readline():
            request = json.loads(line)
            if "cancel" in request:
                task = running.get(request["cancel"])
                if task is not None:
                    task.cancel()
                continue
            request_id: int = request["id"]
            task = running[request_id] = asyncio.create_task(one(request))
            task.add_done_callback(partial(_forget, running, request_id))
    finally:
        transport.close()


def _forget(running: dict[int, asyncio.Task[None]], request_id: int, _: object) -> None:
    running.pop(request_id, None)


def main() -> None:
    # The parent decides when this ends (it closes our standard input): a Ctrl-C in a terminal
    # or a SIGTERM to the whole process group must not cut the reads of a graceful shutdown.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Answers go to a descriptor of their own; a stray print goes to standard error.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    from basketball_api.stripe_gateway import answer_read

    asyncio.run(serve(answer_read, sys.stdin.buffer, out))


if __name__ == "__main__":
    main()
