"""When labels first appear across checkpoints, and the trajectory figure, on hand-built tables."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from headscope.sweeps.figures import panels, trajectory_figure, trajectory_png
from headscope.sweeps.plan import Job
from headscope.sweeps.tables import first_labels

FAMILY = "ckpt/step-*"


def _jobs(steps) -> list[Job]:
    return [Job(f"ckpt/step-{s}", f"step-{s}", s, FAMILY, Path(f"runs/{s}")) for s in steps]


def _labels(rows) -> pd.DataFrame:
    table = pd.DataFrame(rows, columns=["step", "task", "layer", "head", "label"])
    return table.assign(family=FAMILY, model="m", name="n", evidence="")


def test_a_label_first_appears_at_its_first_labelled_step_and_may_not_last():
    labels = _labels(
        [
            (200, "induction", 2, 0, "induction"),
            (300, "induction", 2, 0, "induction"),
            (100, "induction", 1, 1, "previous-token"),  # labelled early, lost by the end
            (300, "seq-digits", 2, 1, "successor"),
        ]
    )
    table = first_labels(labels, _jobs([0, 100, 200, 300]))
    rows = {(r.task, r.label, r.layer, r.head): r for r in table.itertuples(index=False)}
    induction = rows[("induction", "induction", 2, 0)]
    assert (induction.first_step, induction.last_step, induction.labelled, induction.of) == (200, 300, 2, 4)
    assert induction.at_end
    assert not rows[("induction", "previous-token", 1, 1)].at_end
    assert list(table["first_step"]) == [100, 200, 300]  # per task, in order of appearance


def _heads() -> pd.DataFrame:
    rows = [
        (step, "induction", layer, head, "induction", score)
        for step in (0, 100, 200)
        for (layer, head), score in {(2, 0): step / 200, (1, 0): 0.1}.items()
    ]
    table = pd.DataFrame(rows, columns=["step", "task", "layer", "head", "analysis", "score"])
    return table.assign(family=FAMILY)


def test_the_trajectory_shows_one_line_per_head_and_colours_the_labelled_ones(tmp_path):
    first = first_labels(_labels([(100, "induction", 2, 0, "induction")]), _jobs([0, 100, 200]))
    assert panels(first, FAMILY) == [("induction", "induction")]
    figure = trajectory_figure(_heads(), first, FAMILY)
    names = {trace.name: trace for trace in figure.data}
    assert set(names) == {"1.0", "2.0 (induction)"}
    assert list(names["2.0 (induction)"].y) == [0.0, 0.5, 1.0]
    assert names["2.0 (induction)"].line.width > names["1.0"].line.width
    assert trajectory_png(_heads(), first, FAMILY, tmp_path / "t.png").stat().st_size > 1000
