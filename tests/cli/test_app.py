"""cli.app: tables on stdout (each column its own type, p-values readable), options declared once."""

from __future__ import annotations

import importlib
import io
import math
import re
from pathlib import Path

import pandas as pd
import pytest
import typer
from rich.console import Console

from headscope.cli import _register, app

app_module = importlib.import_module("headscope.cli.app")  # `headscope.cli.app` the attribute is the Typer


def printed(table: pd.DataFrame, monkeypatch, **kwargs) -> list[list[str]]:
    buffer = io.StringIO()
    monkeypatch.setattr(app_module, "results", Console(file=buffer, width=200, color_system=None))
    app_module.print_table(table, **kwargs)
    rows = [line for line in buffer.getvalue().splitlines() if line.startswith("│")]
    return [[cell.strip() for cell in line.strip("│").split("│")] for line in rows]


def test_integers_stay_integers_in_an_all_numeric_table(monkeypatch):
    table = pd.DataFrame({"layer": [0, 11], "head": [3, 7], "score": [0.5, 1 / 3]})
    assert printed(table, monkeypatch) == [["0", "3", "0.500"], ["11", "7", "0.333"]]


def test_mixed_columns_and_the_row_limit(monkeypatch):
    table = pd.DataFrame({"task": ["ioi", "x", "y"], "n": [200, 5, 1], "acc": [1.0, 0.25, 0.0]})
    assert printed(table, monkeypatch, limit=2) == [["ioi", "200", "1.000"], ["x", "5", "0.250"]]


@pytest.mark.parametrize(
    ("p", "shown"),
    [(7.5e-82, "7.5e-82"), (4e-4, "4.0e-04"), (0.001, "0.001"), (0.5, "0.500"), (1.0, "1.000"),
     (math.nan, "nan"), (0.0, "<1e-300")],
)  # fmt: skip
def test_small_p_values_print_in_scientific_notation(p, shown):
    assert app_module.format_p(p) == shown
    assert float(shown.lstrip("<")) == pytest.approx(p, rel=0.05) or math.isnan(p)


def test_p_columns_of_a_table_print_in_scientific_notation(monkeypatch):
    table = pd.DataFrame({"role": ["IO", "pooled"], "r": [0.933, 0.2], "p": [6.1e-14, 0.04]})
    assert printed(table, monkeypatch) == [["IO", "0.933", "6.1e-14"], ["pooled", "0.200", "0.040"]]


# ---- the shared options: declared once in cli/app.py ----------------------------------------

ANALYSES = ("scores", "attention", "scatter", "evaluate", "ablate", "patch", "report")
SHARED_FLAGS = ("--model", "--n", "--seed")


def _commands() -> dict[str, object]:
    _register()
    group = typer.main.get_command(app)
    found = {name: group.commands[name] for name in ANALYSES}
    found["tasks show"] = group.commands["tasks"].commands["show"]
    return found


def _option(command, flag: str):
    return next(p for p in command.params if flag in p.opts)


def test_every_command_takes_the_same_shared_options():
    commands = _commands()
    for flag in SHARED_FLAGS:
        reference = _option(commands["scores"], flag)
        for name, command in commands.items():
            option = _option(command, flag)
            assert option.help == reference.help, (name, flag)
            if (name, flag) != ("tasks show", "--n"):  # a few prompts to show, not 200
                assert option.default == reference.default, (name, flag)
    outs = {
        name: _option(c, "--out").help for name, c in commands.items() if name not in ("report", "tasks show")
    }
    assert len(set(outs.values())) == 1, outs


def test_no_command_module_declares_or_imports_a_shared_option():
    cli = Path(app_module.__file__).parent
    for module in sorted(cli.glob("*_cmd.py")):
        text = module.read_text()
        for flag in SHARED_FLAGS:
            assert not re.search(rf'typer\.Option\(\s*"{flag}"', text), (module.name, flag)
        for name in ("ModelOpt", "NOpt", "SeedOpt", "OutOpt", "DEFAULT_N", "DEFAULT_SEED", "DEFAULT_MODEL"):
            assert not re.search(rf"\b{name}\b", text), (module.name, name)


def test_python_arguments_map_to_the_flags_of_their_command():
    _register()
    from headscope.cli.scores_cmd import scores

    flags = scores.cli_flags
    assert (flags["k"], flags["n"], flags["model"], flags["per_token"]) == (
        "--k",
        "--n",
        "--model",
        "--per-token",
    )
    assert flags["relations"] == "--relation" and flags["words"] == "--keywords"  # Python spellings
