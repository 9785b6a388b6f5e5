"""The generated page in real headless Chromium: renders, requests nothing, runs no injected code."""

from __future__ import annotations

import pytest

from tests.report.browser import CHROMIUM, visit
from tests.report.conftest import MARKUP


@pytest.fixture(scope="module")
def seen(report_dir):
    assert CHROMIUM.is_file(), f"{CHROMIUM} is missing: run `make chromium` (apt-get install chromium)"
    return visit(report_dir / "index.html")


def test_no_console_errors_and_no_network(seen):
    assert seen.console_errors == []
    assert seen.page_errors == []
    assert seen.requests == []


def test_every_figure_is_drawn(seen, report_run):
    assert len(seen.figures) >= 3 * 4  # at least four figures per built-in task
    for figure in seen.figures:
        assert figure["svg"] > 0 and figure["marks"] > 0, figure
        assert figure["width"] > 100 and figure["height"] > 100, figure


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
