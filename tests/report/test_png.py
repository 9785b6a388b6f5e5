"""The static PNGs are drawn on their own Agg canvas: pyplot's backend and figure list stay as they were."""

from __future__ import annotations

import os
import subprocess
import sys

DRAW_EVERY_KIND = """
import matplotlib.pyplot as plt, pandas as pd, tempfile, pathlib
from headscope.report.figures import head_heatmap
from headscope.report.curve_plot import CurvePlot
from headscope.sweeps.figures import trajectory_png
folder = pathlib.Path(tempfile.mkdtemp())
table = pd.DataFrame({"layer": [0, 1], "head": [0, 1], "score": [1.0, -1.0]})
head_heatmap("x", "score", table, "score", (2, 2)).png(folder / "x.png")
first = pd.DataFrame({"family": ["f"], "task": ["ioi"], "label": ["induction"], "layer": [0], "head": [0],
                      "first_step": [1], "last_step": [2]})
heads = pd.DataFrame({"family": ["f"] * 2, "task": ["ioi"] * 2, "analysis": ["induction"] * 2,
                      "layer": [0, 0], "head": [0, 0], "step": [1, 2], "score": [0.5, 0.6]})
trajectory_png(heads, first, "f", folder / "t.png")
print(plt.get_backend(), plt.get_fignums(), sorted(p.name for p in folder.iterdir()))
"""


def test_drawing_pngs_leaves_pyplot_alone():
    env = os.environ | {"MPLBACKEND": "svg"}
    result = subprocess.run(
        [sys.executable, "-c", DRAW_EVERY_KIND], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "svg [] ['t.png', 'x.png']"
