"""The basketball-api command: serve, migrate, refresh, the local Stripe sandbox and the demo.

Help texts are plain sentences (typer renders them with rich, so no reST or rich markup).
"""

from __future__ import annotations

import asyncio
import functools
import getpass
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar, cast

import anyio
import anyio.to_thread
import structlog
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from basketball_api import __version__
from basketball_api.errors import DomainError
from basketball_api.gauges import Counts
from basketball_api.logging_setup import configure_logging
from basketball_api.metrics import CATEGORIES
from basketball_api.settings import Settings

if TYPE_CHECKING:
    from basketball_api.recovery import StrandedOrder

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Orders and Stripe Checkout payments of a youth basketball club: serve the API, "
    "migrate its database, refresh and list stranded orders, reissue their links, and run the "
    "local Stripe sandbox or the demo.",
    pretty_exceptions_enable=False,
)
console = Console()
_Command = TypeVar("_Command", bound=Callable[..., None])


def _fail(message: str, *, code: int = 1) -> NoReturn:
    """One clear line on stderr, then exit: no traceback for an operator to read."""
    _print_error(message)
    raise typer.Exit(code)


def _print_error(message: str) -> None:
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    err.print(f"[red]error:[/red] {escape(message)}")


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def one_line_errors(command: _Command) -> _Command:
    """Every failure of ``command`` becomes one line naming what failed (Stripe, the database,
    the mail server…) and exit code 1; ``LOG_LEVEL=DEBUG`` shows the traceback instead."""
    from sqlalchemy.exc import SQLAlchemyError

    from basketball_api.stripe_gateway import StripeFailure

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> None:
        try:
            command(*args, **kwargs)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as e:
            if os.environ.get("LOG_LEVEL", "").upper() == "DEBUG":
                raise
            if isinstance(e, StripeFailure):
                _fail(str(e))
            if isinstance(e, DomainError):
                _fail(e.message)
            if isinstance(e, SQLAlchemyError):
                line = _first_line(e)
                if "no such table" in line or ("relation" in line and "does not exist" in line):
                    line += " (the schema is missing: run 'basketball-api migrate')"
                _fail(f"database: {line}")
            _fail(f"{type(e).__name__}: {_first_line(e)} (LOG_LEVEL=DEBUG shows the traceback)")

    return cast(_Command, run)


def _print_version(value: bool) -> None:
    if value:
        console.print(f"basketball-api {__version__}", markup=False, highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Command groups take their help from the Typer object above."""


def _settings() -> Settings:
    try:
        settings = Settings()
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in err['loc']).upper() or 'settings'}: {err['msg']}"
            for err in e.errors()
        )
        _fail(f"configuration: {problems}", code=2)
    configure_logging(settings.log_level, settings.log_format)
    return settings


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Run the API with one uvicorn worker (the refresher runs inside it)."""
    import uvicorn

    from basketball_api.app import create_app

    settings = _settings()
    uvicorn.run(create_app(settings), host=host, port=port, workers=1, log_config=None)


@app.command()
@one_line_errors
def migrate() -> None:
    """Create or upgrade the database schema (Alembic) at DATABASE_URL."""
    from basketball_api.db import upgrade_database

    settings = _settings()
    upgrade_database(settings.database_url)
    # A log line, not a print: in a pod every line of output is a log line (LOG_FORMAT=json).
    structlog.get_logger("basketball_api.migrate").info("database_migrated", revision="head")


@app.command()
@one_line_errors
def refresh(
    once: Annotated[bool, typer.Option("--once", help="Run one refresh and exit.")] = False,
) -> None:
    """Run the pending-order refresh (the same function the service runs) and print counts."""
    if not once:
        console.print("only --once is supported here; the service runs the loop itself")
        raise typer.Exit(2)
    settings = _settings()
    ok, counts = asyncio.run(_refresh_once(settings))
    if counts is not None:
        table = Table(
            "category", "expired link", "paid, still pending", "open link", "failed", "missing"
        )
        for c in CATEGORIES:
            table.add_row(
                c,
                str(counts.expired[c]),
                str(counts.completed[c]),
                str(counts.open[c]),
                str(counts.failed[c]),
                str(counts.missing[c]),
            )
        console.print(table)
    raise typer.Exit(0 if ok else 1)


async def _refresh_once(settings: Settings) -> tuple[bool, Counts | None]:
    from basketball_api.ops import toolkit

    async with toolkit(settings, refresh=False) as kit:
        ok = await kit.refresher.run_cycle()
        return ok, kit.refresher.counts


@app.command()
@one_line_errors
def stranded(
    category: Annotated[
        str | None, typer.Option(help="Only this category (tournament, monthly, jersey).")
    ] = None,
) -> None:
    """List pending orders whose payment link is dead (asks Stripe, changes nothing)."""
    _check_category(category)
    settings = _settings()
    rows = asyncio.run(_stranded(settings, category))
    table = Table(
        "order",
        "player",
        "ordered",
        "category",
        "product",
        "parent",
        "link dead for",
        "outstanding",
    )
    for s in rows:
        dead_for = {"failed": "payment failed", "missing": "unknown to Stripe"}.get(
            s.link_state, "expired early"
        )
        if s.dead_for_seconds is not None:
            hours, minutes = divmod(s.dead_for_seconds // 60, 60)
            dead_for = f"{hours} h {minutes:02d} min"
        table.add_row(
            str(s.order_id),
            s.player_name,
            f"{s.ordered_at:%Y-%m-%d %H:%M}",
            s.category,
            s.product_name,
            s.parent_email,
            dead_for,
            f"{s.amount / 100:.2f} {s.currency.upper()}",
        )
    console.print(table)
    console.print(f"{len(rows)} stranded order(s)")


def _check_category(category: str | None) -> None:
    if category is not None and category not in CATEGORIES:
        _fail(f"unknown category {category!r}; one of {', '.join(CATEGORIES)}", code=2)


async def _stranded(settings: Settings, category: str | None) -> list[StrandedOrder]:
    from basketball_api.db import transaction
    from basketball_api.ops import toolkit
    from basketball_api.recovery import stranded_orders

    async with toolkit(settings) as kit:
        with transaction(kit.sessions) as db:
            return stranded_orders(
                db,
                now=kit.gateway.stripe_now(),
                grace=settings.expiry_grace_seconds,
                category=category,
            )


@app.command(name="pay-link")
@one_line_errors
def pay_link(order_id: Annotated[int, typer.Argument(help="The order's number.", min=1)]) -> None:
    """Print a pay link for an order, to give its parent (a new token; earlier links still
    work). It opens the live Checkout page, or a fresh one when the last one died."""
    from basketball_api.access import issue_link_token, pay_url
    from basketball_api.db import make_engine, make_session_factory, transaction
    from basketball_api.orders import get_order

    settings = _settings()
    engine = make_engine(settings.database_url)
    try:
        factory = make_session_factory(engine)
        with transaction(factory) as db:
            order = get_order(db, order_id)  # NotFound: a one-line error
            state = order.status.value
        token = issue_link_token(factory, order_id, "cli")
    finally:
        engine.dispose()
    console.print(pay_url(settings, token), soft_wrap=True)
    if state != "pending":
        console.print(f"order {order_id} is {state}: the link shows that, it takes no payment")


@app.command()
@one_line_errors
def relink(
    category: Annotated[str | None, typer.Option(help="Only this category.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be done.")] = False,
    email: Annotated[bool, typer.Option(help="Email each parent the new link (SMTP).")] = False,
) -> None:
    """Reissue a fresh Checkout link for every stranded order (one live link per order)."""
    _check_category(category)
    settings = _settings()
    if email and not dry_run:
        from basketball_api import notify

        if not notify.configured(settings):
            _fail(f"relink --email: {notify.NOT_CONFIGURED}; no link was reissued", code=2)
    _done, failed = anyio.run(_relink, settings, category, dry_run, email)
    raise typer.Exit(1 if failed else 0)


async def _relink(
    settings: Settings, category: str | None, dry_run: bool, email: bool
) -> tuple[int, int]:
    from rich.progress import Progress

    from basketball_api import notify
    from basketball_api.access import issue_link_token, pay_url
    from basketball_api.db import transaction
    from basketball_api.deps import ThreadStripe
    from basketball_api.ops import toolkit
    from basketball_api.recovery import reissue, stranded_orders
    from basketball_api.stripe_gateway import StripeFailure

    async with toolkit(settings) as kit:
        with transaction(kit.sessions) as db:
            targets = stranded_orders(
                db,
                now=kit.gateway.stripe_now(),
                grace=settings.expiry_grace_seconds,
                category=category,
            )
        if dry_run:
            for s in targets:
                console.print(f"would reissue order {s.order_id} ({s.category}, {s.product_name})")
            console.print(f"{len(targets)} order(s) would get a new link")
            return 0, 0
        stripe = ThreadStripe(kit.gateway, settings)
        done = failed = live = 0
        emails: dict[notify.Email, int] = dict.fromkeys(notify.Email, 0)
        who = f"cli:{getpass.getuser()}"  # whoever has a shell in the pod, for the audit log

        def one(order_id: int) -> bool:
            result = reissue(kit.sessions, stripe, order_id, operator=who)
            order = result.order
            if result.created and email:
                token = issue_link_token(kit.sessions, order.id, "email")
                sent = notify.send_link(
                    settings,
                    to=order.parent_email,
                    order_id=order.id,
                    product=order.product.name,
                    url=pay_url(settings, token),  # the pay link, never Stripe's URL
                )
                emails[sent] += 1
            return result.created

        with Progress(console=console) as progress:
            task = progress.add_task("reissuing links", total=len(targets))
            for s in targets:
                try:
                    if await anyio.to_thread.run_sync(one, s.order_id):
                        done += 1
                    else:
                        live += 1  # a live link appeared since the listing
                except (StripeFailure, DomainError) as e:
                    failed += 1
                    console.print(f"[red]order {s.order_id}: {e}[/red]")
                progress.advance(task)
        console.print(f"{done} link(s) reissued, {live} already live, {failed} failed")
        if email:
            line = f"{emails[notify.Email.sent]} email(s) sent"
            if emails[notify.Email.failed]:
                line += f", [red]{emails[notify.Email.failed]} email(s) failed[/red]"
            console.print(line)
        else:
            console.print("no email was sent (pass --email to email each parent the new link)")
        return done, failed + emails[notify.Email.failed]


@app.command()
@one_line_errors
def snooze(
    order_id: Annotated[int, typer.Argument(help="The order to snooze.")],
    days: Annotated[float, typer.Option(min=0.01, max=90, help="How long, in days.")] = 7,
    by: Annotated[str, typer.Option(help="Who snoozes it, for the audit log.")] = "cli",
) -> None:
    """Snooze a stranded order: no alert counts it and it is not cancelled until it ends."""
    settings = _settings()
    until = anyio.run(_snooze, settings, order_id, days, by)
    console.print(f"order {order_id} snoozed until {until:%Y-%m-%d %H:%M} UTC")


async def _snooze(settings: Settings, order_id: int, days: float, by: str) -> datetime:
    from basketball_api import lifecycle
    from basketball_api.db import transaction
    from basketball_api.ops import toolkit

    async with toolkit(settings) as kit:
        until = kit.gateway.stripe_now() + days * lifecycle.DAY
        with transaction(kit.sessions) as db:
            lifecycle.snooze(db, order_id, until=until, by=by)
        return datetime.fromtimestamp(until, UTC)


@app.command()
@one_line_errors
def cancel(
    order_id: Annotated[int, typer.Argument(help="The order to cancel.")],
    by: Annotated[str, typer.Option(help="Who cancels it, for the audit log.")] = "cli",
) -> None:
    """Cancel an order (its payment link is expired at Stripe first if still open)."""
    settings = _settings()
    anyio.run(_cancel, settings, order_id, by)
    console.print(f"order {order_id} cancelled")


async def _cancel(settings: Settings, order_id: int, by: str) -> None:
    from basketball_api import lifecycle
    from basketball_api.db import transaction
    from basketball_api.deps import ThreadStripe
    from basketball_api.ops import toolkit

    async with toolkit(settings) as kit:
        stripe = ThreadStripe(kit.gateway, settings)

        def work() -> None:
            with transaction(kit.sessions) as db:
                lifecycle.cancel(db, stripe, order_id, by=by)

        await anyio.to_thread.run_sync(work)


SANDBOX_MISSING = (
    "The Stripe sandbox is not installed. It is a separate distribution in this repository "
    "(basketball-stripe-sandbox, never part of the service's package): from a clone, run "
    "`make install`, or `pip install -e ./sandbox` in this environment."
)


def _require_sandbox() -> None:
    """Exit with how to install the sandbox when it is missing (it is imported lazily)."""
    try:
        import stripe_sandbox  # noqa: F401
    except ImportError:
        typer.echo(SANDBOX_MISSING, err=True)
        raise typer.Exit(1) from None


@app.command("stripe-sandbox")
def stripe_sandbox(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 12111,
    webhook_url: Annotated[
        str | None, typer.Option(help="URL the sandbox delivers its signed events to.")
    ] = None,
    webhook_secret: Annotated[
        str | None, typer.Option(help="Signing secret of those events (whsec_...).")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(help="Accept only this key (default: any sk_test_ key).")
    ] = None,
) -> None:
    """Run the local Stripe sandbox (a development and test tool, not part of the API)."""
    _require_sandbox()
    from stripe_sandbox.config import SandboxConfig
    from stripe_sandbox.server import serve as serve_sandbox

    configure_logging()
    config = SandboxConfig(api_key=api_key, webhook_url=webhook_url, webhook_secret=webhook_secret)
    serve_sandbox(host, port, config)


@app.command()
def demo(
    keep_running: Annotated[
        bool, typer.Option(help="Keep serving after seeding, until Ctrl-C.")
    ] = True,
) -> None:
    """Start the sandbox and the API on a fresh SQLite file and seed the Utah Invitational."""
    _require_sandbox()
    from basketball_api.demo import run_demo

    configure_logging()
    sys.exit(run_demo(keep_running=keep_running))


def main(argv: list[str] | None = None) -> None:
    """The console script: usage errors too are one line (``error: …``, exit 2), not a panel."""
    args = sys.argv[1:] if argv is None else argv
    if not args:
        app(args=args)  # typer shows the help
        return
    command = typer.main.get_command(app)
    try:
        code = command.main(args=args, prog_name="basketball-api", standalone_mode=False)
    except typer.Abort:
        sys.exit(1)
    except Exception as e:
        # Typer carries its own copy of click: its usage errors are recognised by their shape.
        exit_code = getattr(e, "exit_code", None)
        if not (hasattr(e, "format_message") and isinstance(exit_code, int)):
            raise
        ctx = getattr(e, "ctx", None)
        name = ctx.command_path if ctx is not None else "basketball-api"
        _print_error(f"{e.format_message()} (see '{name} --help')")
        sys.exit(exit_code)
    sys.exit(code if isinstance(code, int) else 0)
