"""PNG text in any script: no flood of glyph warnings; what no font can draw becomes '?'."""

from __future__ import annotations

import warnings

import pandas as pd
from matplotlib.ft2font import FT2Font

from headscope.report.figures import head_heatmap
from headscope.report.fonts import MISSING, drawable, font_files


def test_characters_no_font_has_become_a_question_mark():
    charmaps = [set(FT2Font(path).get_charmap()) for path in font_files().values()]
    text = "task задача 任务"
    expected = "".join(c if c.isspace() or any(ord(c) in m for m in charmaps) else MISSING for c in text)
    assert drawable(text) == expected
    assert drawable("ioi, seq-digits") == "ioi, seq-digits"
    assert drawable("задача") == "задача"  # DejaVu Sans draws Cyrillic


def test_a_non_latin_task_name_draws_without_warnings(tmp_path):
    table = pd.DataFrame({"layer": [0], "head": [0], "score": [1.0]})
    heatmap = head_heatmap("x", "copy score", table, "score", (1, 1), context="задача-任务-タスク")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert heatmap.png(tmp_path / "x.png").read_bytes()[:4] == b"\x89PNG"
