"""The page's text: escaping, inlined scripts only, one PNG per figure, re-rendering from JSON."""

from __future__ import annotations

import json
import re

from headscope.report.html import PAGE_FILE, figure_specs, script_json, write_report
from headscope.report.page import build_page
from headscope.run import load_run
from tests.report.conftest import MARKUP
from tests.report.plotly_reference import page_json, reference

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_script_json_cannot_close_its_element():
    nasty = {"k</script>": ["</script><script>alert(1)</script>", "a & b", "<!--", "ü"]}
    text = script_json(nasty)
    assert not set("<>&") & set(text)
    assert json.loads(text) == nasty


def test_markup_from_the_task_never_appears_raw(report_dir):
    html = (report_dir / PAGE_FILE).read_text(encoding="utf-8")
    assert MARKUP not in html
    assert "alert(1)" in html  # it is there, escaped
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>task</b>" not in html


def test_every_script_is_inline_and_nothing_is_fetched(report_dir, report_run):
    html = (report_dir / PAGE_FILE).read_text(encoding="utf-8")
    tags = re.findall(r"^<script[^>]*>", html, flags=re.MULTILINE)  # the page's own elements
    page = build_page(report_run)
    viewers = sum(1 for task in page.tasks if task.viewer)
    circuits = sum(1 for task in page.tasks if task.circuit)
    assert circuits == len(page.tasks)
    # specs, viewer and circuit data, then plotly, figures, viewer, circuit
    assert len(tags) == len(page.figures) + viewers + circuits + 4
    assert tags.count("<script>") == 4
    assert not re.search(r"<script[^>]*\ssrc=", html)
    assert not re.search(r"<link[^>]+href=", html)
    assert "default-src 'none'" in html  # the page forbids every request


def test_one_png_per_figure(report_dir, report_run):
    page = build_page(report_run)
    for figure in page.figures:
        assert (report_dir / f"{figure.name}.png").read_bytes()[:8] == PNG_MAGIC, figure.name
    assert len({f.name for f in page.figures}) == len(page.figures)


def test_rerender_from_results_json_gives_the_same_page(report_dir, tmp_path):
    page = write_report(load_run(report_dir), tmp_path, say=lambda message: None, pngs=True)
    assert page.read_bytes() == (report_dir / PAGE_FILE).read_bytes()


def test_a_page_without_dla_says_why_where_dla_would_be(no_dla_report_dir, no_dla_run, tmp_path):
    gemma2_report_dir, gemma2_run = no_dla_report_dir, no_dla_run
    html = (gemma2_report_dir / PAGE_FILE).read_text(encoding="utf-8")
    why = gemma2_run.for_task("not_computed", "ioi")["why"].iloc[0]
    assert html.count(f"Not computed: DLA: {why}") == 2  # the model as a whole, and the task
    assert "direct logit attribution</div>" not in html and "-dla" not in html  # no DLA figure
    assert "then the largest knockout effect |% of clean - 100|" in html  # the viewer's heads
    assert "top heads by knockout effect" in html  # the comparison's note
    rerendered = write_report(load_run(gemma2_report_dir), tmp_path, say=lambda message: None)
    assert rerendered.read_bytes() == html.encode("utf-8")


def test_a_gemma2_page_labels_dla_and_the_circuit_frozen_norm(gemma2_report_dir):
    html = (gemma2_report_dir / PAGE_FILE).read_text(encoding="utf-8")
    assert "direct logit attribution (frozen-norm: each norm&#x27;s scale from the clean run" in html or (
        "direct logit attribution (frozen-norm: each norm's scale from the clean run" in html
    )
    assert "Frozen-norm convention (" in html and "exact is a real patch of the real model" in html
    assert "Not computed" not in html


def test_pngs_only_when_asked_for(report_run, report_dir, tmp_path):
    page = write_report(report_run, tmp_path / "plain", say=lambda message: None)  # the default
    assert not list(page.parent.glob("*.png")) and 'class="png"' not in page.read_text(encoding="utf-8")
    assert 'class="png"' in (report_dir / PAGE_FILE).read_text(encoding="utf-8")  # pngs=True links them


def test_every_figures_json_on_the_page_is_what_plotly_writes_for_its_figure(report_run):
    figures = build_page(report_run).figures
    assert {type(f).__name__ for f in figures} == {"Heatmap", "Scatter", "CurvePlot"}
    specs = figure_specs(figures)
    for figure in figures:
        assert specs[figure.name] == page_json(reference(figure)), figure.name


def test_the_files_and_the_page_written_side_by_side_are_those_written_one_after_the_other(
    report_run, tmp_path, monkeypatch
):
    """Two idle cores: the CSVs and results.json in one forked process, the page in another; one
    idle core: both here. The same bytes, file for file."""
    folders = {}
    for cores in (2, 1):
        monkeypatch.setattr("headscope.report.html.idle_cores", lambda cores=cores: cores)
        folders[cores] = write_report(report_run, tmp_path / f"cores{cores}", say=lambda message: None).parent
    names = sorted(p.name for p in folders[1].iterdir())
    assert names == sorted(p.name for p in folders[2].iterdir()) and "results.json" in names
    for name in names:
        assert (folders[2] / name).read_bytes() == (folders[1] / name).read_bytes(), name
