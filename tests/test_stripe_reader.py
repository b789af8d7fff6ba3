"""Reads made in the reader process (``stripe_reader``) against the sandbox: the same answers as
reads made on the event loop, the same failures, and a child that dies costs one failed read.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import stripe
from pydantic import SecretStr
from tests.contract.support import session_params
from tests.sandbox_fixtures import KEY

from basketball_api import stripe_reader
from basketball_api.app import create_app
from basketball_api.metrics import Metrics
from basketball_api.settings import Settings
from basketball_api.stripe_gateway import (
    Connection,
    SessionSnapshot,
    StripeGateway,
    StripeRejected,
    StripeUnavailable,
)
from stripe_sandbox.control import SandboxControl
from stripe_sandbox.server import BackgroundServer

pytestmark = pytest.mark.anyio


def gateway_for(
    url: str, *, reader: stripe_reader.Reader | None = None
) -> tuple[StripeGateway, Metrics]:
    """Reads in ``reader``'s process, or here without one."""
    metrics = Metrics()
    connection = Connection(KEY, url, 5.0, 0, rate_limit_per_second=50.0, rate_limit_retries=3)
    return StripeGateway.connect(connection, metrics, reader=reader), metrics


@pytest.fixture
def reader() -> Iterator[stripe_reader.Reader]:
    """A reader of this test's own, so killing its child touches no other test."""
    own = stripe_reader.Reader()
    yield own
    own.close()


@pytest.fixture
async def both(
    server: BackgroundServer, reader: stripe_reader.Reader
) -> AsyncIterator[tuple[StripeGateway, StripeGateway]]:
    here, _ = gateway_for(server.url)
    there, _ = gateway_for(server.url, reader=reader)
    yield here, there
    await here.aclose()
    await there.aclose()


def outcomes(metrics: Metrics) -> dict[tuple[str, str], float]:
    found: dict[tuple[str, str], float] = {}
    for family in metrics.registry.collect():
        if family.name != "basketball_api_stripe_requests":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                key = (sample.labels["endpoint"], sample.labels["outcome"])
                found[key] = sample.value
    return found


def make_sessions(sdk: stripe.StripeClient, n: int) -> list[str]:
    """Sessions as the service creates them (metadata, recovery URL and all)."""
    return [sdk.v1.checkout.sessions.create(params=session_params(str(i))).id for i in range(n)]


async def test_reads_in_the_reader_process_answer_as_reads_made_here(
    both: tuple[StripeGateway, StripeGateway],
    client: stripe.StripeClient,
    control: SandboxControl,
) -> None:
    here, there = both
    ids = make_sessions(client, 150)  # two pages of sessions
    for sid in ids[:60]:
        control.expire(sid)
    control.pay(ids[70])

    async def listed(gw: StripeGateway) -> list[Any]:
        pages = gw.session_pages(created_gte=0, created_lte=int(time.time()) + 60)
        return [page async for page in pages]

    async def events(gw: StripeGateway) -> list[Any]:
        pages = gw.event_pages(created_gte=0, types=["checkout.session.expired"])
        return [page async for page in pages]

    sessions_here, sessions_there = await listed(here), await listed(there)
    assert [len(p) for p in sessions_there] == [100, 50]
    assert sessions_there == sessions_here  # every field, metadata and recovery URL included
    events_here, events_there = await events(here), await events(there)
    assert sum(len(p) for p in events_there) == 60
    assert events_there == events_here
    assert await there.retrieve_session(ids[70]) == await here.retrieve_session(ids[70])
    assert (await there.retrieve_session(ids[70])).status == "complete"
    assert (here.calls, there.calls) == (2 + 1 + 1, 2 + 1 + 2)  # pages and retrieves


async def test_a_link_stripe_does_not_know_is_missing_and_counted(
    server: BackgroundServer, reader: stripe_reader.Reader
) -> None:
    gateway, metrics = gateway_for(server.url, reader=reader)
    with pytest.raises(StripeRejected) as raised:
        await gateway.retrieve_session("cs_test_nobody_made_this")
    assert raised.value.missing
    assert raised.value.reason == "not_found"
    assert outcomes(metrics)[("GET /v1/checkout/sessions/{id}", "not_found")] == 1
    await gateway.aclose()


async def test_a_rate_limited_read_is_retried_by_the_gateways_backoff(
    server: BackgroundServer, control: SandboxControl, reader: stripe_reader.Reader
) -> None:
    gateway, metrics = gateway_for(server.url, reader=reader)
    control.inject_fault("GET /v1/events", "rate_limit", count=2, reason="endpoint-rate")
    pages = [p async for p in gateway.event_pages(created_gte=0, types=["x.y"])]
    assert pages == []
    counted = outcomes(metrics)
    assert counted[("GET /v1/events", "rate_limited")] == 2
    assert counted[("GET /v1/events", "ok")] == 1
    await gateway.aclose()


@pytest.mark.parametrize(
    ("kind", "reason", "text"),
    [
        ("server_error", "server_error", "Stripe failed on GET /v1/events"),
        ("malformed", "bad_response", "Invalid response body"),
        ("unauthorized", "auth", "refused the API key"),
    ],
)
async def test_failures_cross_the_pipe_as_the_same_failures(
    server: BackgroundServer,
    control: SandboxControl,
    reader: stripe_reader.Reader,
    kind: str,
    reason: str,
    text: str,
) -> None:
    gateway, metrics = gateway_for(server.url, reader=reader)
    control.inject_fault("GET /v1/events", kind)
    with pytest.raises((StripeUnavailable, StripeRejected)) as raised:
        _ = [p async for p in gateway.event_pages(created_gte=0, types=["x.y"])]
    assert raised.value.reason == reason
    assert text in str(raised.value)
    assert outcomes(metrics)[("GET /v1/events", reason)] == 1
    await gateway.aclose()


async def test_a_refused_connection_is_never_sent_and_names_its_cause(
    reader: stripe_reader.Reader,
) -> None:
    gateway, _ = gateway_for("http://127.0.0.1:9", reader=reader)  # discard: nobody listens
    with pytest.raises(StripeUnavailable) as raised:
        await gateway.retrieve_session("cs_test_x")
    assert raised.value.reason == "connection"
    assert raised.value.never_sent
    assert "(cause: ConnectError)" in str(raised.value).splitlines()[0]
    await gateway.aclose()


async def test_a_reader_that_dies_fails_the_reads_waiting_and_the_next_read_starts_another(
    server: BackgroundServer, control: SandboxControl, reader: stripe_reader.Reader
) -> None:
    gateway, metrics = gateway_for(server.url, reader=reader)
    assert [p async for p in gateway.event_pages(created_gte=0, types=["x.y"])] == []
    first = reader.pid
    assert first is not None
    control.inject_fault("*", "latency", seconds=2, count=2)
    waiting = asyncio.ensure_future(gateway.retrieve_session("cs_test_slow"))
    reading = asyncio.ensure_future(gateway.event_pages(created_gte=0, types=["x.y"]).__anext__())
    await asyncio.sleep(0.5)
    os.kill(first, signal.SIGKILL)
    for pending in (waiting, reading):
        with pytest.raises(StripeUnavailable) as raised:
            await pending
        assert raised.value.reason == "connection"
        assert "reader process ended" in str(raised.value)
    control.clear_faults()
    # A child is not restarted more than once per RESTART_AFTER_SECONDS (one crashing at start
    # must not cost an interpreter per read); reads meanwhile fail at once.
    with pytest.raises(StripeUnavailable, match="restarting in"):
        await gateway.retrieve_session("cs_test_meanwhile")
    await asyncio.sleep(stripe_reader.RESTART_AFTER_SECONDS)
    assert [p async for p in gateway.event_pages(created_gte=0, types=["x.y"])] == []
    assert reader.pid not in (None, first)
    assert outcomes(metrics)[("GET /v1/events", "connection")] == 1
    await gateway.aclose()


def test_one_reader_serves_gateways_on_several_event_loops_at_once(
    server: BackgroundServer, client: stripe.StripeClient, reader: stripe_reader.Reader
) -> None:
    ids = make_sessions(client, 5)
    found: dict[int, list[str]] = {}

    def on_its_own_loop(n: int) -> None:
        async def read() -> list[str]:
            gateway, _ = gateway_for(server.url, reader=reader)
            try:
                got = await asyncio.gather(*(gateway.retrieve_session(s) for s in ids))
                return [s.id for s in got]
            finally:
                await gateway.aclose()

        found[n] = asyncio.run(read())

    threads = [threading.Thread(target=on_its_own_loop, args=(n,), daemon=True) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert found == {n: ids for n in range(4)}


def test_the_reader_process_ends_when_closed(
    server: BackgroundServer, reader: stripe_reader.Reader
) -> None:
    async def one() -> None:
        gateway, _ = gateway_for(server.url, reader=reader)
        with pytest.raises(StripeRejected):
            await gateway.retrieve_session("cs_test_nobody")
        await gateway.aclose()

    asyncio.run(one())
    pid = reader.pid
    assert pid is not None
    reader.close()
    assert reader.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # gone, and reaped


async def test_the_services_gateway_reads_nothing_on_its_event_loop(
    server: BackgroundServer,
    client: stripe.StripeClient,
    control: SandboxControl,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The gateway the app builds makes its GETs in the reader process. Before, each list page
    was received and decoded on the event loop (~8 ms of CPU a page), and those steps were
    ``/metrics``' p99 during a listing at 100,000 links."""
    ids = make_sessions(client, 3)
    control.expire(ids[0])

    def not_here(*args: object, **kwargs: object) -> None:
        raise AssertionError("a Stripe read was received or decoded in the service's process")

    monkeypatch.setattr(stripe.StripeClient, "raw_request_async", not_here)
    monkeypatch.setattr(SessionSnapshot, "from_stripe", not_here)
    settings = Settings(stripe_api_base=server.url, stripe_api_key=SecretStr(KEY))
    gateway = StripeGateway.from_settings(settings, Metrics())
    listed = [
        s.id
        async for page in gateway.session_pages(created_gte=0, created_lte=int(time.time()) + 60)
        for s in page
    ]
    assert listed == list(reversed(ids))
    events = [
        p async for p in gateway.event_pages(created_gte=0, types=["checkout.session.expired"])
    ]
    assert [e.session.id for page in events for e in page] == [ids[0]]
    assert (await gateway.retrieve_session(ids[1])).status == "open"
    await gateway.aclose()


def test_the_service_starts_its_reader_when_it_starts(server: BackgroundServer) -> None:
    """Started by the first read instead, the child loaded the SDK (~0.5 s of CPU) while the
    first refresh waited and ``/metrics`` was scraped."""
    reader = stripe_reader.shared()
    reader.close()
    assert reader.pid is None
    settings = Settings(
        database_url="sqlite://", stripe_api_base=server.url, stripe_api_key=SecretStr(KEY)
    )
    app = create_app(settings, start_refresher=False)
    with BackgroundServer(app):
        assert reader.pid is not None


# -- the protocol's failure paths, with stand-in children -------------------------------------

SILENT_CHILD = """
import sys
with open(sys.argv[1], "a") as seen:
    for line in sys.stdin:
        seen.write(line)
        seen.flush()
"""

NOISY_CHILD = """
import json, sys
for line in sys.stdin:
    request = json.loads(line)
    for junk in ("not json", "[1]", '{"id": null}', '{"no": 1}', '{"id": 999}'):
        print(junk)
    print(json.dumps({"id": request["id"], "echo": request["x"]}), flush=True)
"""


async def test_a_read_the_child_never_answers_fails_in_time_and_is_cancelled_there(
    tmp_path: Any,
) -> None:
    seen = tmp_path / "seen"
    reader = stripe_reader.Reader([sys.executable, "-c", SILENT_CHILD, str(seen)])
    try:
        with pytest.raises(stripe_reader.ReaderGone, match=r"did not answer in 0\.5 s"):
            await reader.ask({"x": 1}, within=0.5)
        reader.close()  # the child has then read everything, and ended
        request, cancel = (json.loads(line) for line in seen.read_text().splitlines())
        assert request["x"] == 1
        assert cancel == {"cancel": request["id"]}
    finally:
        reader.close()


async def test_lines_that_are_not_answers_are_skipped(tmp_path: Any) -> None:
    reader = stripe_reader.Reader([sys.executable, "-c", NOISY_CHILD])
    try:
        answers = await asyncio.gather(*(reader.ask({"x": n}, within=10) for n in range(5)))
        assert [a["echo"] for a in answers] == list(range(5))
    finally:
        reader.close()


async def test_a_child_that_cannot_start_is_a_connection_failure() -> None:
    reader = stripe_reader.Reader(["/nonexistent/python", "-m", "basketball_api.stripe_reader"])
    with pytest.raises(stripe_reader.ReaderGone, match="could not start"):
        await reader.ask({"x": 1}, within=5)


async def test_the_child_cancels_a_request_its_parent_gave_up() -> None:
    requests_r, requests_w = os.pipe()
    answers_r, answers_w = os.pipe()
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def answer(request: dict[str, Any]) -> dict[str, Any]:
        if request.get("slow"):
            started.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.set()
                raise
        return {"fine": True}

    with os.fdopen(requests_r, "rb", buffering=0) as stdin, os.fdopen(answers_w, "wb") as out:
        serving = asyncio.ensure_future(stripe_reader.serve(answer, stdin, out))
        os.write(requests_w, b'{"id": 1, "slow": true}\n{"id": 2}\n')
        await asyncio.wait_for(started.wait(), 5)
        os.write(requests_w, b'{"cancel": 1}\n{"cancel": 7}\n')  # 7: unknown, ignored
        await asyncio.wait_for(cancelled.wait(), 5)
        os.close(requests_w)  # the parent ended
        await asyncio.wait_for(serving, 5)
    with os.fdopen(answers_r, "rb") as answers:
        assert [json.loads(line) for line in answers] == [{"fine": True, "id": 2}]
