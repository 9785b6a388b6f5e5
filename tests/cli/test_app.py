"""cli.app.print_table: each column keeps its own type on the console."""

from __future__ import annotations

import importlib
import io

import pandas as pd
from rich.console import Console

app_module = importlib.import_module("headscope.cli.app")  # `headscope.cli.app` the attribute is the Typer


def printed(table: pd.DataFrame, monkeypatch, **kwargs) -> list[list[str]]:
    buffer = io.StringIO()
    monkeypatch.setattr(app_module, "console", Console(file=buffer, width=200, color_system=None))
    app_module.print_table(table, **kwargs)
    rows = [line for line in buffer.getvalue().splitlines() if line.startswith("│")]
    return [[cell.strip() for cell in line.strip("│").split("│")] for line in rows]


def test_integers_stay_integers_in_an_all_numeric_table(monkeypatch):
    table = pd.DataFrame({"layer": [0, 11], "head": [3, 7], "score": [0.5, 1 / 3]})
    assert printed(table, monkeypatch) == [["0", "3", "0.500"], ["11", "7", "0.333"]]


def test_mixed_columns_and_the_row_limit(monkeypatch):
    table = pd.DataFrame({"task": ["ioi", "x", "y"], "n": [200, 5, 1], "acc": [1.0, 0.25, 0.0]})
    assert printed(table, monkeypatch, limit=2) == [["ioi", "200", "1.000"], ["x", "5", "0.250"]]
