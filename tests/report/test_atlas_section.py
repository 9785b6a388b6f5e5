"""The report's atlas section: weights only, the same numbers as `hs.atlas`, on the page once."""

from __future__ import annotations

import pandas as pd
import pandas.testing as pdt

import headscope as hs
from headscope.report.atlas_section import REPORT_HEADS, atlas_section
from headscope.report.merge import _joined_tables


def test_the_run_holds_the_atlas_of_hs_atlas(organism_run):
    """The same scores and tests; the run adjusts the p-values over every test it makes (its tasks'
    too: analyses.fdr), so its adjusted p and the cards made from them are the run's own."""
    from headscope.scores.atlas import function_cards

    table = hs.atlas(hs.load_model("organism"))
    run_atlas = organism_run.table("atlas")
    pdt.assert_frame_equal(
        run_atlas.drop(columns="p_adjusted"), table.drop(columns="p_adjusted"), check_dtype=False
    )
    pdt.assert_frame_equal(organism_run.table("atlas_cards"), function_cards(run_atlas), check_dtype=False)
    relations = organism_run.table("atlas_relations")
    assert list(relations.relation) == list(table.attrs["relations"].relation)


def test_the_page_has_the_atlas_section(organism_run, organism_report_dir):
    section = atlas_section(organism_run.tables)
    assert section is not None and len(section.heatmaps) == 2
    heads = organism_run.model["n_layers"] * organism_run.model["n_heads"]
    assert len(section.heatmaps[0].x) == min(heads, REPORT_HEADS)
    assert section.heatmaps[0].y == list(dict.fromkeys(organism_run.table("atlas").relation))
    page = (organism_report_dir / "index.html").read_text()
    assert '<section id="atlas">' in page and 'href="#atlas"' in page
    assert "Function cards" in page and 'id="spec-report-atlas-within"' in page
    assert (organism_report_dir / "report-atlas-within.png").is_file()


def test_a_run_without_an_atlas_has_no_section():
    assert atlas_section({"dla": pd.DataFrame()}) is None


class _Run:
    def __init__(self, tables: dict[str, pd.DataFrame]):
        self.tables = tables

    def table(self, name: str) -> pd.DataFrame:
        return self.tables.get(name, pd.DataFrame())


def test_merged_runs_keep_one_atlas():
    atlas = pd.DataFrame({"layer": [0], "head": [0], "relation": ["month_next"]})
    dla = pd.DataFrame({"task": ["a"], "dla": [1.0]})
    joined = _joined_tables([_Run({"atlas": atlas, "dla": dla}), _Run({"atlas": atlas, "dla": dla})])
    assert len(joined["atlas"]) == 1 and len(joined["dla"]) == 2
