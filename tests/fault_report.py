"""A pytest plugin that prints the refresher's fault matrix at the end of the run.

Tests append one :class:`Row` per case to :data:`ROWS`; ``pytest_terminal_summary`` writes them
as a table to the terminal (no ``-s`` needed). Registered by ``pytest_plugins`` in the test
module that fills it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class Row:
    fault: str
    phase: str  # "cold" (before any success) or "warm" (after one)
    refresh: str  # what the faulted refresh did: "failed" or "succeeded"
    reason: str  # the refresh_errors_total{reason} label, "-" when none
    warnings: int  # WARNING lines logged by the faulted refresh
    gauge: str  # what /metrics showed during the fault
    health: int  # /health status code during the fault
    recovered: bool  # the next good cycle published the truth
    logged: str = ""  # the WARNING's error text, shortened


ROWS: list[Row] = []

COLUMNS = (
    "fault",
    "phase",
    "refresh",
    "reason",
    "warnings",
    "gauge during fault",
    "health",
    "recovered",
    "WARNING says",
)


def table(rows: list[Row]) -> list[str]:
    cells = [COLUMNS] + [
        (
            r.fault,
            r.phase,
            r.refresh,
            r.reason,
            str(r.warnings),
            r.gauge,
            str(r.health),
            "yes" if r.recovered else "NO",
            r.logged,
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return lines


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not ROWS:
        return
    terminalreporter.section("refresher fault matrix")
    for line in table(sorted(ROWS, key=lambda r: (r.fault, r.phase))):
        terminalreporter.write_line(line)
