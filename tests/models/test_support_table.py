"""Every analysis runs on every family (or refuses in one line), and the README's table says so."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.models import support_table as st
from tests.models.families import BY_NAME, FAMILIES, NAMES

README = Path(__file__).parents[2] / "README.md"
# Where headscope refuses, and must: (family, column) -> a word the refusal must contain.
REFUSALS = {
    ("gemma2", "scatter"): "ln_final",
    ("gemma3", "scatter"): "ln_final",
}
# Where an analysis runs under the frozen-norm convention (norms on the head outputs, soft-capping).
FROZEN_NORM = {(name, column) for name in ("gemma2", "gemma3") for column in ("DLA", "circuits")}
# Columns that work and name a part they leave out: the cell's start when that part is refused.
PARTLY = {"scatter": f"{st.OK} (not scale ln_final: ", "report": f"{st.OK} (not DLA: "}
# (family, column) known to refuse or crash today where it should not; strict, so a fix shows as XPASS.
KNOWN_FAILURES: dict[tuple[str, str], str] = {}

_rows: dict[str, dict[str, str]] = {}


def row_of(family_dir, name: str) -> dict[str, str]:
    if name not in _rows:
        _rows[name] = st.support_row(family_dir(name))
    return _rows[name]


def _cases() -> list:
    cases = []
    for name in NAMES:
        for column in st.COLUMNS:
            known = KNOWN_FAILURES.get((name, column))
            marks = [pytest.mark.xfail(strict=True, reason=known)] if known else []
            cases.append(pytest.param(name, column, marks=marks, id=f"{name}-{column}"))
    return cases


@pytest.mark.parametrize(("name", "column"), _cases())
def test_each_analysis_runs_or_refuses_as_it_must(family_dir, name, column):
    cell = row_of(family_dir, name)[column]
    assert not cell.startswith(st.CRASH), cell
    word = REFUSALS.get((name, column))
    if (name, column) in FROZEN_NORM:
        assert cell == f"{st.OK} ({st.FROZEN_NORM})", cell
    elif word is None:
        assert cell == st.OK
    elif column in PARTLY:  # the default scale works, the final-norm scale is refused; the report
        assert cell.startswith(PARTLY[column]) and word in cell, cell  # runs without its DLA section
    else:
        assert cell != st.OK and "\n" not in cell and word in cell.lower(), cell
        assert BY_NAME[name].name in "".join(c for c in cell.lower() if c.isalnum()), cell


def test_markdown_table_from_a_record():
    rows = {"GPT-2": dict.fromkeys(st.COLUMNS, st.OK), "Odd | one": dict.fromkeys(st.COLUMNS, "no: a|b")}
    lines = st.markdown_table(rows).splitlines()
    header = "| family | loads | OV | attention | scatter | DLA | knockouts | patching | circuits | report |"
    assert lines[0] == header
    assert lines[1] == "| --- |" + " --- |" * 9
    assert lines[2] == "| GPT-2 | " + " | ".join(["✓"] * 9) + " |"
    assert lines[3] == "| Odd \\| one | " + " | ".join(["no: a\\|b"] * 9) + " |"
    assert len(lines) == 4


def test_with_table_replaces_only_the_text_between_the_markers():
    readme = f"# x\n\nbefore\n{st.MARK_BEGIN}\nold\ntable\n{st.MARK_END}\nafter\n"
    updated = st.with_table(readme, "| new |")
    assert updated == f"# x\n\nbefore\n{st.MARK_BEGIN}\n| new |\n{st.MARK_END}\nafter\n"
    assert st.readme_table(updated) == "| new |"
    assert st.readme_table("no markers here") is None


def test_readme_holds_the_generated_table(family_dir):
    rows = {family.label: row_of(family_dir, family.name) for family in FAMILIES}
    expected = st.markdown_table(rows)
    assert st.readme_table(README.read_text()) == expected, (
        "the README's supported-architectures table is out of date: run "
        "`.venv/bin/python -m tests.models.support_table README.md`"
    )
