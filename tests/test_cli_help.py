"""``basketball-api --version`` and help texts a person can read (no raw reST or rich markup)."""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from basketball_api import __version__, cli

COMMANDS = sorted(typer.main.get_command(cli.app).commands)  # type: ignore[attr-defined]
# reST roles and literals, rich/BBCode tags, Markdown emphasis: what a terminal shows raw.
RAW_MARKUP = re.compile(r"``|:\w+:`|\[/?(red|bold|green|yellow|dim|i|b)\]|\*\*")


def test_version_prints_the_package_version() -> None:
    from importlib.metadata import version

    result = CliRunner().invoke(cli.app, ["--version"])

    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"basketball-api {version('basketball-api')}"
    assert __version__ == version("basketball-api")


@pytest.mark.parametrize("args", [[], *([c] for c in COMMANDS)], ids=lambda a: " ".join(a) or "-")
def test_help_has_no_raw_markup(args: list[str]) -> None:
    result = CliRunner().invoke(cli.app, [*args, "--help"], terminal_width=200)

    assert result.exit_code == 0, result.output
    assert not RAW_MARKUP.search(result.output), result.output


def test_every_command_and_option_has_help() -> None:
    group = typer.main.get_command(cli.app)
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        assert command.help, name
        for param in command.params:
            if param.param_type_name == "option" and param.name != "help":
                assert param.help, f"{name} --{param.name}"
