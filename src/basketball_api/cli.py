"""``basketball-api``: serve, migrate, refresh, the local Stripe sandbox and the demo."""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from basketball_api.knowledge import Counts
from basketball_api.logging_setup import configure_logging
from basketball_api.metrics import CATEGORIES
from basketball_api.settings import Settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
console = Console()


def _settings() -> Settings:
    try:
        settings = Settings()
    except ValueError as e:
        console.print(f"[red]configuration error:[/red] {e}")
        raise typer.Exit(2) from e
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
def migrate() -> None:
    """Create or upgrade the database schema (Alembic) at DATABASE_URL."""
    from basketball_api.db import upgrade_database

    settings = _settings()
    upgrade_database(settings.database_url)
    console.print("database is at the latest revision")


@app.command()
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
        table = Table("category", "expired link", "paid, still pending", "open link")
        for c in CATEGORIES:
            table.add_row(c, str(counts.expired[c]), str(counts.completed[c]), str(counts.open[c]))
        console.print(table)
    raise typer.Exit(0 if ok else 1)


async def _refresh_once(settings: Settings) -> tuple[bool, Counts | None]:
    from functools import partial

    from basketball_api.app import _load_pending
    from basketball_api.db import make_engine, make_session_factory
    from basketball_api.metrics import Metrics
    from basketball_api.refresher import Refresher
    from basketball_api.stripe_gateway import StripeGateway

    metrics = Metrics()
    engine = make_engine(settings.database_url)
    gateway = StripeGateway.from_settings(settings, metrics)
    try:
        refresher = Refresher(
            load_pending=partial(_load_pending, make_session_factory(engine)),
            source=gateway,
            metrics=metrics,
            deadline_seconds=settings.refresh_deadline_seconds,
            grace_seconds=settings.expiry_grace_seconds,
        )
        ok = await refresher.run_cycle()
        return ok, refresher.counts
    finally:
        await gateway.aclose()
        engine.dispose()


@app.command("stripe-sandbox")
def stripe_sandbox(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 12111,
    webhook_url: Annotated[str | None, typer.Option(help="Where to deliver events.")] = None,
    webhook_secret: Annotated[str | None, typer.Option(help="whsec_… signing secret.")] = None,
    api_key: Annotated[
        str | None, typer.Option(help="Accept only this key (default: any sk_test_ key).")
    ] = None,
) -> None:
    """Run the local Stripe sandbox (a development and test tool, not part of the API)."""
    from stripe_sandbox.server import serve as serve_sandbox

    from stripe_sandbox.config import SandboxConfig

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
    from basketball_api.demo import run_demo

    configure_logging()
    sys.exit(run_demo(keep_running=keep_running))


def main() -> None:
    app()
