"""The registry of a Run's tables (headscope.run_tables) against the runs a report builds."""

from __future__ import annotations

import dataclasses

import pytest

from headscope.report.html import PAGE_FILE, write_report
from headscope.run import load_run
from headscope.run_tables import TABLES

RUNS = ("report_run", "organism_run", "gemma2_run", "no_dla_run")


@pytest.mark.parametrize("fixture", RUNS)
def test_every_table_a_report_writes_is_registered_and_loads_back(fixture, request, tmp_path):
    run = request.getfixturevalue(fixture)
    assert set(run.tables) <= set(TABLES), (
        f"tables missing from run_tables.TABLES: {set(run.tables) - set(TABLES)}"
    )
    run.save(tmp_path)
    assert set(load_run(tmp_path).tables) == set(run.tables)


def test_the_registered_columns_are_enough_for_the_page(organism_run, tmp_path):
    """With every column the registry does not name dropped, the page and its figures still render."""
    tables = {
        name: table[[c for c in table.columns if c in TABLES[name].columns]]
        for name, table in organism_run.tables.items()
    }
    assert any(len(table.columns) < len(organism_run.tables[name].columns) for name, table in tables.items())
    page = write_report(dataclasses.replace(organism_run, tables=tables), tmp_path, say=lambda message: None)
    assert page == tmp_path / PAGE_FILE and page.stat().st_size > 0
