"""The generated page in real headless Chromium: renders, requests nothing, runs no injected code."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.report.browser import CHROMIUM, opened, visit
from tests.report.conftest import MARKUP


@pytest.fixture(scope="module")
def seen(report_dir):
    assert CHROMIUM.is_file(), f"{CHROMIUM} is missing: run `make chromium` (apt-get install chromium)"
    return visit(report_dir / "index.html")


def test_no_console_errors_and_no_network(seen):
    assert seen.console_errors == []
    assert seen.page_errors == []
    assert seen.requests == []


def test_every_visible_figure_is_drawn(seen, report_run):
    shown = [figure for figure in seen.figures if not figure["hidden"]]
    assert len(shown) >= 3 * 4  # at least four figures per built-in task
    for figure in shown:
        assert figure["svg"] > 0 and figure["marks"] > 0, figure
        assert figure["width"] > 100 and figure["height"] > 100, figure
    for figure in seen.figures:  # a hidden one (another head's scatter) waits until it is picked
        assert figure["hidden"] or figure["svg"] > 0, figure


def test_the_viewer_shows_the_prompt_tokens(seen, report_run):
    assert len(seen.viewer_tokens) == len(report_run.tasks)
    tokens = report_run.for_task("tokens", "ioi")
    first = tokens[tokens["prompt"] == 0].sort_values("position")["token"].tolist()
    assert seen.viewer_tokens[0] == first


def test_markup_from_a_task_is_shown_as_text_and_never_run(seen):
    assert seen.dialogs == []
    assert MARKUP in seen.text  # the description and the example prompt, as text
    assert "xss<b>task</b>" in seen.text
    assert seen.viewer_tokens[-1][1:4] == ["<", "script", ">"]


def _options(page, selector: str) -> list[tuple[str, str]]:
    pairs = page.eval_on_selector_all(f"{selector} option", "els => els.map(o => [o.value, o.textContent])")
    return [tuple(pair) for pair in pairs]


def test_sections_lead_with_the_heads_they_measure(organism_report_dir):
    errors: list[str] = []
    with opened(organism_report_dir / "index.html", errors) as page:
        successor = _options(page, "#pick-seq-digits-next select")
        suppressors = _options(page, "#pick-ioi-negative-copy select")
        scatter = _options(page, "#pick-ioi-scatter select")
        movers = _options(page, "#pick-ioi-copy select")
        shown = page.locator("#pick-seq-digits-next .hs-choice:not([hidden])")
        keywords = shown.locator("td:first-child").all_inner_texts()
        heading = shown.locator("h3").inner_text()
    assert errors == []
    assert successor[0] == ("2.1", "2.1: top next score " + successor[0][1].split()[-1])  # not a successor by
    # the within-set rule (methods §7): the section leads with the top next score all the same
    assert {suppressors[0][0], suppressors[1][0]} == {"3.0", "3.1"}
    assert all("copy suppression" in text for _, text in suppressors[:2])
    assert {scatter[0][0], scatter[1][0]} == {"3.0", "3.1"} and "copy suppression" in scatter[0][1]
    assert movers[0] == ("1.0", movers[0][1]) and movers[0][1].startswith("1.0: name mover")
    assert len(successor) == len(scatter) == 8  # and any head can be picked
    assert heading.startswith("head 2.1: next score per keyword")
    assert keywords == sorted(keywords, key=int) and len(keywords) > 5  # 1, 2, ..., 10, not 1, 10, 2


def test_picking_a_head_shows_its_table_and_draws_its_figure(organism_report_dir):
    with opened(organism_report_dir / "index.html") as page:
        block = page.locator("#pick-ioi-scatter")
        assert block.locator(".hs-choice[data-head='1.1']").is_hidden()
        block.locator("select").select_option("1.1")
        page.wait_for_timeout(300)
        chosen = block.locator(".hs-choice[data-head='1.1']")
        assert chosen.is_visible()
        assert chosen.locator("svg.main-svg").count() > 0
        assert chosen.locator("h3").inner_text() == "head 1.1: correlation per role"
        assert block.locator(".hs-choice:not([hidden])").count() == 1


def test_the_viewer_shows_any_head_and_prompt_with_values_on_hover(organism_report_dir, organism_run):
    tokens = organism_run.for_task("tokens", "ioi")
    patterns = organism_run.for_task("patterns", "ioi")
    with opened(organism_report_dir / "index.html") as page:
        viewer = page.locator(".hs-viewer").first
        heads = _options(page, ".hs-viewer >> nth=0 >> select[aria-label=head]")
        prompts = _options(page, ".hs-viewer >> nth=0 >> select[aria-label=prompt]")
        viewer.locator("select[aria-label=head]").select_option("2.1")
        viewer.locator("select[aria-label=prompt]").select_option("2")
        sources = viewer.locator("th.hs-src").all_inner_texts()
        cell = viewer.locator("tr").nth(6).locator("td").nth(3)  # destination 5, source 3
        cell.hover()
        readout = viewer.locator(".hs-readout").inner_text()
        legend = viewer.locator(".hs-legend .hs-bar").count()
        colour = cell.evaluate("td => getComputedStyle(td).backgroundColor")
    assert sorted(h for h, _ in heads) == [f"{layer}.{head}" for layer in range(4) for head in range(2)]
    assert len(prompts) == 3
    expected_tokens = tokens[tokens["prompt"] == 2].sort_values("position")["token"].tolist()
    assert sources == expected_tokens
    row = patterns[(patterns["prompt"] == 2) & (patterns["layer"] == 2) & (patterns["head"] == 1)]
    value = float(row[row["dest"] == 5]["attention"].iloc[0].split(" ")[3])
    assert readout == f"5 {expected_tokens[5]} <- 3 {expected_tokens[3]}: {value:.4f}"
    assert legend == 1 and colour.startswith("rgb(")


def test_the_circuit_diagram_draws_edges_and_shows_their_values_on_hover(organism_report_dir, organism_run):
    edges = organism_run.for_task("edges", "ioi")
    summary = organism_run.for_task("circuit", "ioi").iloc[0]
    top = edges.iloc[0]  # the strongest edge by |eap-ig score|, patched exactly too
    key = f"{top.source}>{top.target}:{top.input}"
    errors: list[str] = []
    with opened(organism_report_dir / "index.html", errors) as page:
        diagram = page.locator(".hs-circuit").first
        drawn = diagram.locator("path.hs-edge").count()
        nodes = diagram.locator(".hs-node-label").all_text_contents()  # SVG text
        in_circuit = diagram.locator("path.hs-edge[stroke-opacity='0.85']").count()
        line = diagram.locator(f"path[data-edge='{key}']")
        line.scroll_into_view_if_needed()
        middle = line.evaluate(
            "p => { const q = p.getPointAtLength(p.getTotalLength() / 2).matrixTransform(p.getScreenCTM());"
            " return [q.x, q.y]; }"
        )
        page.mouse.move(*middle)  # the pointer on the curve itself, as a reader's
        readout = diagram.locator(".hs-readout").inner_text()
        width = float(line.get_attribute("stroke-width"))
        colour = line.get_attribute("stroke")
    assert errors == []
    assert drawn == 30 and in_circuit == summary["circuit_edges"] <= drawn  # MIB's smallest at f >= 0.8
    assert nodes == ["embed"] + [
        n for layer in range(4) for n in (f"{layer}.0", f"{layer}.1", f"mlp{layer}")
    ] + ["logits"]
    values = f"eap-ig {top.score:.4f} (approximation), exact {top.exact:.4f}"
    expected = f"{top.source} → {top.target} ({top.input}): {values}"
    assert readout.startswith(expected), readout
    assert ("; in the circuit" in readout) == bool(top.in_circuit)
    shown = pd.concat([edges[edges["in_circuit"]], edges[~edges["in_circuit"]]]).head(30)
    strongest = max(abs(v) for v in shown["exact"].fillna(shown["score"]))  # exact where patched
    assert width == pytest.approx(1 + 7 * abs(top.exact) / strongest, abs=0.01)
    assert colour == ("#b2182b" if top.exact < 0 else "#2166ac")
