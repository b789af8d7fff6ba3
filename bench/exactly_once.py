"""Webhooks applied exactly once: many signed events, duplicated and shuffled, delivered
concurrently to two API processes that share one PostgreSQL — and again with one of them
killed (SIGKILL) in the middle of the burst.

Run: ``python -m bench.exactly_once`` (part of ``make reliability``). Options:
``--deliveries 10000 --duplicates 0.2 --concurrency 32 --out bench/out``.

What it does, for each mode (``steady``, then ``kill``):

- a fresh PostgreSQL database (Alembic), a Stripe sandbox in a thread (the replicas' refreshers
  talk to it), two ``basketball-api serve`` processes with the same ``STRIPE_WEBHOOK_SECRET``;
- pending orders created through ``POST /orders`` (no checkout link; the sessions the events
  carry are then recorded as the orders' own links, with the orders' amount), one per
  scenario: paid; link expired (stays pending); link expired
  then reissued and paid (both events, any order: *expired after completed* and *completed
  after expired*); delayed payment that succeeds or fails (``completed`` unpaid plus
  ``async_payment_*``, any order); paid after the order was cancelled (stays cancelled, the
  payment needs review);
  plus events of an unrelated type;
- ``deliveries`` signed events of which ``duplicates`` are redeliveries of an earlier event,
  shuffled; half of the duplicates sit next to their original and go to the *other* replica,
  so both replicas race on the same event id; sent with bounded concurrency;
- ``kill``: when half of the deliveries have been answered, one replica gets SIGKILL; what it
  never answered is redelivered to the survivor afterwards, as Stripe's retry would;
- then it checks, from the database and the logs: the recorded event ids are exactly the
  distinct ids sent (nothing lost, nothing twice), every order is in its expected state, each
  payment transition was logged once (in ``steady``; in ``kill`` the dead process may have
  logged a transition it never committed, which is reported), and in ``steady`` the HTTP
  answers say ``duplicate`` exactly as often as an id was sent again.

Prints a table and writes it to ``<out>/exactly_once.md``; exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select
from tests.fakes import own_links, session_event, sign
from tests.procs import ApiProcess, api_processes, temporary_postgres

from basketball_api.db import make_engine, make_session_factory
from basketball_api.models import Order, ProcessedWebhookEvent
from stripe_sandbox.app import create_app as create_sandbox
from stripe_sandbox.config import SandboxConfig
from stripe_sandbox.server import BackgroundServer

SECRET = "whsec_exactly_once_0123456789"
TOKEN = "exactly-once-admin-token-0123456789"

# scenario -> (weight, final status)
SCENARIOS: dict[str, tuple[float, str]] = {
    "paid": (0.35, "paid"),
    "expired": (0.22, "pending"),
    "reissued_then_paid": (0.15, "paid"),
    "async_succeeded": (0.10, "paid"),
    "async_failed": (0.06, "pending"),
    "paid_after_cancel": (0.06, "cancelled"),
    "unrelated": (0.06, "-"),
}


@dataclass
class Plan:
    orders: dict[int, str] = field(default_factory=dict)  # order id -> scenario
    events: dict[str, dict[str, Any]] = field(default_factory=dict)  # distinct, by id
    deliveries: list[tuple[str, int]] = field(default_factory=list)  # (event id, replica)


@dataclass
class Outcome:
    mode: str
    deliveries: int
    distinct: int
    duplicates_sent: int
    answers: Counter[str]
    failed_first_pass: int
    redelivered: int
    seconds: float
    recorded_ids: int
    missing_ids: int
    extra_ids: int
    wrong_orders: int
    transitions_logged: Counter[int]
    transitions_by_survivor_max: int
    orders: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def _sessions_of(scenario: str, run: str, n: int) -> tuple[str, ...]:
    s1, s2 = f"cs_{run}_{n}_a", f"cs_{run}_{n}_b"
    return (s1, s2) if scenario == "reissued_then_paid" else (s1,)


def _events_for(
    scenario: str, order_id: int, run: str, n: int, money: dict[str, Any]
) -> list[dict[str, Any]]:
    def evt(i: int, kind: str, session: str, **kw: Any) -> dict[str, Any]:
        return session_event(
            f"evt_{run}_{n}_{i}", kind, session_id=session, order_id=order_id, **money, **kw
        )

    s1, s2 = f"cs_{run}_{n}_a", f"cs_{run}_{n}_b"
    completed, expired = "checkout.session.completed", "checkout.session.expired"
    unpaid = {"payment_status": "unpaid"}
    if scenario in ("paid", "paid_after_cancel"):
        return [evt(0, completed, s1)]
    if scenario == "expired":
        return [evt(0, expired, s1, status="expired", **unpaid)]
    if scenario == "reissued_then_paid":
        return [evt(0, expired, s1, status="expired", **unpaid), evt(1, completed, s2)]
    if scenario == "async_succeeded":
        return [
            evt(0, completed, s1, **unpaid),
            evt(1, "checkout.session.async_payment_succeeded", s1),
        ]
    if scenario == "async_failed":
        return [
            evt(0, completed, s1, **unpaid),
            evt(1, "checkout.session.async_payment_failed", s1, **unpaid),
        ]
    raise ValueError(scenario)


def plan_events(deliveries: int, duplicate_share: float, rng: random.Random) -> list[str]:
    """Scenario names whose events add up to about ``deliveries * (1 - duplicate_share)``."""
    distinct_target = round(deliveries * (1 - duplicate_share))
    names, weights = zip(*((k, v[0]) for k, v in SCENARIOS.items()), strict=True)
    per = {"reissued_then_paid": 2, "async_succeeded": 2, "async_failed": 2}
    out: list[str] = []
    total = 0
    while total < distinct_target:
        name = rng.choices(names, weights)[0]
        out.append(name)
        total += per.get(name, 1)
    return out


async def _create_orders(api: ApiProcess, scenarios: list[str], concurrency: int) -> list[int]:
    """One pending order per scenario (none for ``unrelated``), cancelled where it should be."""
    sem = asyncio.Semaphore(concurrency)
    ids: list[int] = [0] * len(scenarios)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=api.url, timeout=30, headers=headers) as client:
        product = (await client.get("/products")).json()[0]["id"]

        async def one(i: int, scenario: str) -> None:
            if scenario == "unrelated":
                return
            body = {
                "product_id": product,
                "parent_email": f"parent{i}@example.org",
                "player_name": f"Player {i}",
                "create_checkout": False,
            }
            async with sem:
                r = await client.post("/orders", json=body)
                r.raise_for_status()
                ids[i] = int(r.json()["id"])
                if scenario == "paid_after_cancel":
                    (await client.post(f"/orders/{ids[i]}/cancel")).raise_for_status()

        await asyncio.gather(*(one(i, s) for i, s in enumerate(scenarios)))
    return ids


def _link_sessions(
    database_url: str, scenarios: list[str], order_ids: list[int], run: str
) -> dict[str, Any]:
    """Record each order's sessions as its own links; returns what they charge (one product)."""
    engine = make_engine(database_url)
    money: dict[str, Any] = {}
    try:
        factory = make_session_factory(engine)
        for n, (scenario, order_id) in enumerate(zip(scenarios, order_ids, strict=True)):
            if scenario != "unrelated":
                money = own_links(factory, order_id, *_sessions_of(scenario, run, n))
    finally:
        engine.dispose()
    return money


def build_plan(
    scenarios: list[str],
    order_ids: list[int],
    deliveries: int,
    rng: random.Random,
    run: str,
    money: dict[str, Any],
) -> Plan:
    plan = Plan()
    for n, (scenario, order_id) in enumerate(zip(scenarios, order_ids, strict=True)):
        if scenario == "unrelated":
            event: dict[str, Any] = {
                "id": f"evt_{run}_{n}_0",
                "object": "event",
                "type": "customer.created",
                "data": {"object": {"id": f"cus_{n}", "object": "customer"}},
            }
            plan.events[event["id"]] = event
            continue
        plan.orders[order_id] = scenario
        for event in _events_for(scenario, order_id, run, n, money):
            plan.events[event["id"]] = event
    ids = list(plan.events)
    firsts = [(i, rng.randrange(2)) for i in ids]
    rng.shuffle(firsts)
    extra = max(0, deliveries - len(ids))
    # Half of the duplicates right after their original, on the other replica (a race);
    # the other half anywhere later (a retry minutes after).
    racing = {rng.randrange(len(firsts)) for _ in range(extra // 2)}
    sequence: list[tuple[str, int]] = []
    for k, (event_id, replica) in enumerate(firsts):
        sequence.append((event_id, replica))
        if k in racing:
            sequence.append((event_id, 1 - replica))
    while len(sequence) < len(ids) + extra:
        event_id = rng.choice(ids)
        sequence.insert(rng.randrange(len(sequence) + 1), (event_id, rng.randrange(2)))
    plan.deliveries = sequence
    return plan


async def _deliver(
    plan: Plan,
    replicas: list[ApiProcess],
    concurrency: int,
    kill_at: int | None,
) -> tuple[Counter[str], list[str]]:
    """Send every delivery; returns the answers and the event ids that got none (to retry)."""
    answers: Counter[str] = Counter()
    failed: list[str] = []
    sem = asyncio.Semaphore(concurrency)
    done = 0
    killed = asyncio.Event()
    clients = [httpx.AsyncClient(base_url=r.url, timeout=30) for r in replicas]

    async def one(event_id: str, replica: int) -> None:
        nonlocal done
        payload = json.dumps(plan.events[event_id]).encode()
        headers = {"Stripe-Signature": sign(payload, SECRET), "Content-Type": "application/json"}
        async with sem:
            try:
                r = await clients[replica].post(
                    "/webhooks/stripe", content=payload, headers=headers
                )
            except httpx.HTTPError:
                answers["no answer"] += 1
                failed.append(event_id)
            else:
                if r.status_code == 200:
                    answers[r.json()["status"]] += 1
                else:
                    answers[f"http {r.status_code}"] += 1
                    failed.append(event_id)
            done += 1
            if kill_at is not None and done == kill_at and not killed.is_set():
                killed.set()
                await asyncio.to_thread(replicas[1].kill)

    try:
        await asyncio.gather(*(one(e, r) for e, r in plan.deliveries))
    finally:
        for c in clients:
            await c.aclose()
    return answers, failed


async def _redeliver(plan: Plan, survivor: ApiProcess, event_ids: list[str]) -> Counter[str]:
    """Stripe's retries: each event that got no 200 is sent again until it does (bounded)."""
    answers: Counter[str] = Counter()
    async with httpx.AsyncClient(base_url=survivor.url, timeout=30) as client:
        for event_id in event_ids:
            payload = json.dumps(plan.events[event_id]).encode()
            for _attempt in range(5):
                headers = {"Stripe-Signature": sign(payload, SECRET)}
                r = await client.post("/webhooks/stripe", content=payload, headers=headers)
                if r.status_code == 200:
                    answers[r.json()["status"]] += 1
                    break
                await asyncio.sleep(0.2)
            else:
                answers["still failing"] += 1
    return answers


def _paid_transitions(proc: ApiProcess) -> Counter[int]:
    return Counter(
        int(e["order_id"])
        for e in proc.log_events()
        if e.get("event") == "order_transition" and e.get("new") == "paid"
    )


def run_mode(
    mode: str,
    database_url: str,
    log_dir: Path,
    *,
    deliveries: int,
    duplicate_share: float = 0.2,
    concurrency: int = 32,
    seed: int = 7,
) -> Outcome:
    """One full run (see the module docstring); ``mode`` is ``steady`` or ``kill``."""
    rng = random.Random(f"{seed}-{mode}")
    run = f"{mode}{seed}"
    sandbox = BackgroundServer(create_sandbox(SandboxConfig())).start()
    try:
        with api_processes(
            log_dir / mode,
            2,
            database_url=database_url,
            stripe_api_base=sandbox.url,
            stripe_webhook_secret=SECRET,
            admin_token=TOKEN,
            stripe_max_network_retries=0,
        ) as replicas:
            scenarios = plan_events(deliveries, duplicate_share, rng)
            order_ids = asyncio.run(_create_orders(replicas[0], scenarios, concurrency))
            money = _link_sessions(database_url, scenarios, order_ids, run)
            plan = build_plan(scenarios, order_ids, deliveries, rng, run, money)
            started = time.perf_counter()
            kill_at = len(plan.deliveries) // 2 if mode == "kill" else None
            answers, failed = asyncio.run(_deliver(plan, replicas, concurrency, kill_at))
            again = asyncio.run(_redeliver(plan, replicas[0], failed))
            seconds = time.perf_counter() - started
            logged = _paid_transitions(replicas[0]) + _paid_transitions(replicas[1])
            survivor_max = max(_paid_transitions(replicas[0]).values(), default=0)
    finally:
        sandbox.stop()
    return _verify(mode, database_url, plan, answers, failed, again, seconds, logged, survivor_max)


def _verify(
    mode: str,
    database_url: str,
    plan: Plan,
    answers: Counter[str],
    failed: list[str],
    again: Counter[str],
    seconds: float,
    logged: Counter[int],
    survivor_max: int,
) -> Outcome:
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as db:
            recorded = list(db.scalars(select(ProcessedWebhookEvent.stripe_event_id)))
            states = {o.id: o.status.value for o in db.scalars(select(Order))}
            paid_at = {o.id: o.paid_at for o in db.scalars(select(Order))}
    finally:
        engine.dispose()
    sent = set(plan.events)
    problems: list[str] = []
    recorded_set = set(recorded)
    if len(recorded) != len(recorded_set):
        problems.append(f"{len(recorded) - len(recorded_set)} event ids recorded twice")
    missing = sent - recorded_set
    extra = recorded_set - sent
    if missing:
        problems.append(f"{len(missing)} events lost, e.g. {sorted(missing)[:3]}")
    if extra:
        problems.append(f"{len(extra)} unknown event ids recorded")
    wrong = 0
    for order_id, scenario in plan.orders.items():
        expected = SCENARIOS[scenario][1]
        if states.get(order_id) != expected or (expected == "paid") != bool(paid_at[order_id]):
            wrong += 1
    if wrong:
        problems.append(f"{wrong} orders in the wrong state")
    should_pay = {o for o, s in plan.orders.items() if SCENARIOS[s][1] == "paid"}
    if set(logged) != should_pay:
        problems.append("payment transitions logged for the wrong orders")
    if mode == "steady":
        twice = [o for o, n in logged.items() if n != 1]
        if twice:
            problems.append(f"{len(twice)} payment transitions logged more than once")
        expected_duplicates = len(plan.deliveries) - len(sent)
        if answers["duplicate"] != expected_duplicates or failed:
            problems.append(
                f"answers {dict(answers)}: expected {expected_duplicates} duplicates, no failure"
            )
    elif survivor_max > 1:
        problems.append("the surviving replica logged a payment transition twice")
    if again["still failing"]:
        problems.append(f"{again['still failing']} events never accepted by the survivor")
    return Outcome(
        mode=mode,
        deliveries=len(plan.deliveries) + sum(again.values()),
        distinct=len(sent),
        duplicates_sent=len(plan.deliveries) - len(sent),
        answers=answers + again,
        failed_first_pass=len(failed),
        redelivered=sum(again.values()),
        seconds=seconds,
        recorded_ids=len(recorded),
        missing_ids=len(missing),
        extra_ids=len(extra),
        wrong_orders=wrong,
        transitions_logged=logged,
        transitions_by_survivor_max=survivor_max,
        orders=len(plan.orders),
        problems=problems,
    )


def table(outcomes: list[Outcome]) -> str:
    head = (
        "| mode | deliveries (incl. retries) | distinct events | duplicates sent | orders "
        "| answers | no 200 on first pass → redelivered | event ids recorded | lost "
        "| orders in wrong state | payments logged twice | deliveries/s | verdict |"
    )
    lines = [head, _sep(head)]
    for o in outcomes:
        twice = sum(1 for n in o.transitions_logged.values() if n > 1)
        answers = ", ".join(f"{k} {v}" for k, v in sorted(o.answers.items()))
        lines.append(
            f"| {o.mode} | {o.deliveries} | {o.distinct} | {o.duplicates_sent} | {o.orders} "
            f"| {answers} | {o.failed_first_pass} → {o.redelivered} | {o.recorded_ids} "
            f"| {o.missing_ids} | {o.wrong_orders} | {twice} "
            f"| {o.deliveries / o.seconds:.0f} | {'ok' if o.ok else '; '.join(o.problems)} |"
        )
    return "\n".join(lines)


def _sep(head: str) -> str:
    return "|" + "---|" * (head.count("|") - 1)


@contextmanager
def _log_dir(out: Path | None) -> Iterator[Path]:
    if out is not None:
        path = out / "exactly_once_logs"
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="exactly-once-") as tmp:
        yield Path(tmp)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=10_000)
    parser.add_argument("--duplicates", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--modes", default="steady,kill")
    parser.add_argument("--out", type=Path, default=Path("bench/out"))
    args = parser.parse_args(argv)
    outcomes = []
    with _log_dir(args.out) as logs:
        for mode in args.modes.split(","):
            with temporary_postgres("basketball_exactly_once") as url:
                outcome = run_mode(
                    mode,
                    url,
                    logs,
                    deliveries=args.deliveries,
                    duplicate_share=args.duplicates,
                    concurrency=args.concurrency,
                )
            outcomes.append(outcome)
            print(f"{mode}: {'ok' if outcome.ok else outcome.problems}", flush=True)
    text = (
        f"Exactly-once webhooks: {args.deliveries} deliveries, {args.duplicates:.0%} duplicates, "
        f"2 replicas on one PostgreSQL, concurrency {args.concurrency}\n\n{table(outcomes)}\n"
    )
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "exactly_once.md").write_text(text)
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
