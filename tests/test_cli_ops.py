"""``basketball-api stranded`` and ``basketball-api relink`` against a running sandbox and the
service's database, through typer's CliRunner."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from rich.console import Console
from tests.stack import Stack, running_stack
from tests.test_notify import Sink, free_port
from typer.testing import CliRunner

from basketball_api import cli


@pytest.fixture(autouse=True)
def wide_quiet_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wide table, and no global logging set-up leaking into other tests."""
    monkeypatch.setattr(cli, "console", Console(width=200, force_terminal=False))
    monkeypatch.setattr(cli, "configure_logging", lambda *_a, **_k: None)


def run(stack: Stack, database_url: str, *args: str, **env: str) -> Any:
    environment = {
        "DATABASE_URL": database_url,
        "STRIPE_API_BASE": stack.sandbox_url,
        "STRIPE_MAX_NETWORK_RETRIES": "0",
        **env,
    }
    return CliRunner().invoke(cli.app, list(args), env=environment)


def listed(output: str) -> list[int]:
    """Order ids in the first column of the table."""
    return [int(m) for m in re.findall(r"^│\s*(\d+)\s*│", output, flags=re.MULTILINE)]


def test_stranded_and_relink(database_url: str) -> None:
    with running_stack(database_url) as stack:
        timed_out = stack.order("tournament", parent_email="tess@example.org")
        stack.sandbox.advance_clock(25 * 3600)  # its link timed out an hour ago
        tournament = [timed_out] + [stack.order("tournament") for _ in range(2)]
        monthly = stack.order("monthly", parent_email="mo@example.org")
        for o in (*tournament[1:], monthly):
            stack.sdk.v1.checkout.sessions.expire(o["checkout_session_id"])
        live = stack.order("tournament")
        paid = stack.order("jersey")
        stack.sandbox.pay(paid["checkout_session_id"])
        stack.sandbox.wait_for_webhooks(timeout=10)
        t_ids = sorted(o["id"] for o in tournament)

        shown = run(stack, database_url, "stranded")
        assert shown.exit_code == 0, shown.output
        assert sorted(listed(shown.output)) == sorted([*t_ids, monthly["id"]])
        assert "4 stranded order(s)" in shown.output
        row = next(line for line in shown.output.splitlines() if f" {timed_out['id']} " in line)
        assert "t***@example.org" in row
        assert re.search(r"\b1 h 0[01] min\b", row), row
        assert timed_out["product_name"] in row
        early = next(line for line in shown.output.splitlines() if f" {monthly['id']} " in line)
        assert "expired early" in early
        assert f"{timed_out['amount'] / 100:.2f} USD" in row
        assert "tess@" not in shown.output
        assert live["id"] not in listed(shown.output)

        only = run(stack, database_url, "stranded", "--category", "monthly")
        assert listed(only.output) == [monthly["id"]]
        assert "m***@example.org" in only.output
        assert run(stack, database_url, "stranded", "--category", "shoes").exit_code == 2

        before = stack.sandbox.sessions()
        dry = run(stack, database_url, "relink", "--category", "tournament", "--dry-run")
        assert dry.exit_code == 0, dry.output
        assert sorted(int(n) for n in re.findall(r"would reissue order (\d+)", dry.output)) == (
            t_ids
        )
        assert "3 order(s) would get a new link" in dry.output
        assert stack.sandbox.sessions() == before  # nothing created, nothing changed
        for o in tournament:
            now = stack.api.get(f"/orders/{o['id']}").json()
            assert now["checkout_session_id"] == o["checkout_session_id"]

        done = run(stack, database_url, "relink", "--category", "tournament")
        assert done.exit_code == 0, done.output
        assert "reissuing links" in done.output
        assert "3 link(s) reissued, 0 already live, 0 failed" in done.output
        open_now = stack.sandbox.sessions(status="open")
        for o in tournament:
            fresh = stack.api.get(f"/orders/{o['id']}").json()["checkout_session_id"]
            assert fresh != o["checkout_session_id"]
            assert fresh in open_now
        assert len(open_now) == 3 + 1  # the three new links and the untouched live one
        assert listed(run(stack, database_url, "stranded").output) == [monthly["id"]]
        assert stack.refresh() == {"tournament": 0, "monthly": 1, "jersey": 0}

        # Stripe fails on the way: reported, exit 1, and the order is as it was.
        stack.sandbox.inject_fault("POST /v1/checkout/sessions", "500", count=1)
        failed = run(stack, database_url, "relink", "--category", "monthly")
        assert failed.exit_code == 1
        assert f"order {monthly['id']}:" in failed.output
        assert "0 link(s) reissued, 0 already live, 1 failed" in failed.output
        now = stack.api.get(f"/orders/{monthly['id']}").json()
        assert now["checkout_session_id"] == monthly["checkout_session_id"]

        # The retry, emailing the parent the new link.
        sink = Sink(port=free_port())
        smtp = Controller(sink, hostname="127.0.0.1", port=sink.port)
        smtp.start()
        try:
            emailed = run(
                stack,
                database_url,
                "relink",
                "--email",
                SMTP_HOST="127.0.0.1",
                SMTP_PORT=str(sink.port),
            )
        finally:
            smtp.stop()
        assert emailed.exit_code == 0, emailed.output
        assert "1 email(s) sent" in emailed.output
        [message] = sink.messages
        assert message["To"] == "mo@example.org"
        body = message.get_payload(decode=True)
        assert isinstance(body, bytes)
        assert "/pay/" in body.decode()  # the pay link, never Stripe's URL
        assert stack.sandbox_url not in body.decode()
        assert listed(run(stack, database_url, "stranded").output) == []


def test_stranded_shows_who_when_and_how_much(database_url: str) -> None:
    with running_stack(database_url) as stack:
        twins = [
            stack.order("monthly", player_name=name, parent_email="chen@example.org")
            for name in ("Riley Chen", "Casey Chen")
        ]
        for o in twins:
            stack.sdk.v1.checkout.sessions.expire(o["checkout_session_id"])
        stack.sandbox.wait_for_webhooks(timeout=10)
        shown = run(stack, database_url, "stranded")
        assert shown.exit_code == 0, shown.output
        header = next(line for line in shown.output.splitlines() if "order" in line)
        for column in ("player", "ordered", "outstanding"):
            assert column in header
        for o in twins:
            row = next(line for line in shown.output.splitlines() if f" {o['id']} " in line)
            assert o["player_name"] in row
            assert o["created_at"][:10] in row
            assert "60.00 USD" in row


def test_relink_email_without_smtp_says_so_and_changes_nothing(database_url: str) -> None:
    with running_stack(database_url) as stack:
        order = stack.order("tournament")
        stack.sdk.v1.checkout.sessions.expire(order["checkout_session_id"])
        stack.sandbox.wait_for_webhooks(timeout=10)
        before = stack.sandbox.sessions()
        refused = run(stack, database_url, "relink", "--email")
        assert refused.exit_code == 2
        assert "no email was sent" in refused.output
        assert "SMTP_HOST" in refused.output
        assert "reissued" not in refused.output.replace("no link was reissued", "")
        assert stack.sandbox.sessions() == before
        quiet = run(stack, database_url, "relink")
        assert quiet.exit_code == 0, quiet.output
        assert "1 link(s) reissued" in quiet.output
        assert "no email was sent" in quiet.output


@pytest.mark.parametrize("command", [["stranded"], ["relink"], ["relink", "--dry-run"]])
def test_stripe_refusing_the_key_is_one_clear_line(database_url: str, command: list[str]) -> None:
    with running_stack(database_url) as stack:
        stack.order("tournament")
        stack.sandbox.configure(api_key="sk_test_the_real_one")
        result = run(stack, database_url, *command, STRIPE_API_KEY="sk_test_wrong")
        assert result.exit_code == 1
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1, result.output
        assert lines[0].startswith("error: Stripe refused the API key on GET /v1/"), result.output
        assert "sk_test_wrong" not in result.output


def test_an_unreachable_database_is_one_clear_line(tmp_path: Any) -> None:
    missing = tmp_path / "no-such-dir" / "x" / "db.sqlite"
    (tmp_path / "no-such-dir").write_text("a file where a directory should be")
    result = CliRunner().invoke(cli.app, ["stranded"], env={"DATABASE_URL": f"sqlite:///{missing}"})
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ")


def test_a_bad_setting_is_one_clear_line() -> None:
    result = CliRunner().invoke(cli.app, ["stranded"], env={"REFRESH_INTERVAL_SECONDS": "9000"})
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "REFRESH_INTERVAL_SECONDS" in lines[0]


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["stranded", "--bogus"], "No such option: --bogus"),
        (["nosuch"], "No such command 'nosuch'"),
        (["stranded", "--category"], "requires an argument"),
        (["stranded", "--category", "shoes"], "unknown category 'shoes'"),
    ],
)
def test_usage_errors_are_one_line(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    captured = capsys.readouterr()
    lines = [line for line in (captured.out + captured.err).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ")
    assert said in lines[0]


def test_a_database_without_schema_says_to_migrate(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    result = CliRunner().invoke(cli.app, ["stranded"], env={"DATABASE_URL": url})
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "basketball-api migrate" in lines[0]


def test_pay_link_prints_a_link_that_opens_the_orders_checkout(database_url: str) -> None:
    with running_stack(database_url) as stack:
        order = stack.order("monthly")
        stack.sdk.v1.checkout.sessions.expire(order["checkout_session_id"])
        out = run(stack, database_url, "pay-link", str(order["id"]), PUBLIC_BASE_URL=stack.api_url)
        assert out.exit_code == 0, out.output
        link = out.output.split()[0]
        assert link.startswith(f"{stack.api_url}/pay/")
        assert link != order["pay_url"]  # a token of its own; the parent's first link still works
        r = httpx.get(link, follow_redirects=False)
        assert r.status_code == 303
        assert r.headers["location"].startswith(f"{stack.sandbox_url}/checkout/")
        missing = run(stack, database_url, "pay-link", "4242")
        assert missing.exit_code != 0
        assert "4242" in missing.output
