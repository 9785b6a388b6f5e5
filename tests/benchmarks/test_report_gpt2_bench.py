"""benchmarks/report_gpt2.py: phases timed from the report's log lines, and the CSVs compared."""

from __future__ import annotations

import time

import pandas as pd
import pytest
from benchmarks.report_gpt2 import compare_tables, phase_name, phase_times

LOG = """\
10:00:05 model /tmp/m: 12 layers x 12 heads
10:00:05 task ioi: building 200 prompts
10:00:06 task ioi: one forward pass over 200 prompts
forward:  50%|#####     | 2/4 [00:01<00:01]
10:00:27 task ioi: ov tables
10:01:35 task ioi: knockout table
10:01:35   mean-ablating each head and MLP on 32 prompts
10:06:05 task ioi: attention vs. logit scatter for 12 heads
10:06:10 task seq-digits: building 200 prompts
10:06:11 task seq-digits: knockout table
10:09:00 wrote index.html
"""


def _at(hms: str) -> float:
    """time.time() of today's local clock at HH:MM:SS."""
    today = time.localtime()
    hours, minutes, seconds = (int(x) for x in hms.split(":"))
    return time.mktime((today.tm_year, today.tm_mon, today.tm_mday, hours, minutes, seconds, 0, 0, -1))


def test_each_phase_lasts_until_the_next_stamped_line():
    table = phase_times(LOG, started=_at("10:00:01"), ended=_at("10:09:03"))
    seconds = {(r.task, r.phase): r.seconds for r in table.itertuples(index=False)}
    assert seconds == {
        ("(model)", "import + load"): 4,
        ("(model)", "set-up"): 0,
        ("ioi", "prompts"): 1,
        ("ioi", "forward"): 21,
        ("ioi", "ov tables"): 68,
        ("ioi", "knockout table"): 270,  # the indented line belongs to it
        ("ioi", "scatter + examples"): 5,
        ("seq-digits", "prompts"): 1,
        ("seq-digits", "knockout table"): 169,
        ("(model)", "write page"): 3,
    }
    assert table["seconds"].sum() == 9 * 60 + 2  # 10:00:01 to 10:09:03


def test_a_phase_past_midnight_is_not_negative():
    table = phase_times("23:59:58 task a: ov tables\n00:00:03 task a: knockout table\n")
    assert table.set_index("phase")["seconds"].to_dict() == {"ov tables": 5}


@pytest.mark.parametrize(
    ("message", "phase"),
    [("one forward pass over 64 prompts", "forward"), ("circuit tables", "circuit tables")],
)
def test_phase_names_leave_numbers_out(message, phase):
    assert phase_name(message) == phase


def test_tables_compared_exactly_then_to_rounding(tmp_path):
    before, after = tmp_path / "before", tmp_path / "after"
    for folder in (before, after):
        (folder / "data").mkdir(parents=True)
    frame = pd.DataFrame({"component": ["mlp0", "mlp1"], "metric": [1.0, 2.0]})
    frame.to_csv(before / "data" / "same.csv", index=False)
    frame.to_csv(after / "data" / "same.csv", index=False)
    frame.to_csv(before / "data" / "rounded.csv", index=False)
    frame.assign(metric=[1.0, 2.0 + 3e-7]).to_csv(after / "data" / "rounded.csv", index=False)
    frame.to_csv(before / "data" / "renamed.csv", index=False)
    frame.assign(component=["mlp0", "mlp2"]).to_csv(after / "data" / "renamed.csv", index=False)
    frame.to_csv(before / "data" / "only_before.csv", index=False)
    verdicts = compare_tables(before, after).set_index("table")["verdict"].to_dict()
    assert verdicts == {
        "data/renamed.csv": "different text columns",
        "data/rounded.csv": "max |diff| 3.00e-07",
        "data/same.csv": "identical",
    }


def test_a_screened_knockout_table_is_compared_on_its_exact_rows(tmp_path):
    before, after = tmp_path / "before", tmp_path / "after"
    for folder in (before, after):
        folder.mkdir()
    frame = pd.DataFrame({"component": ["0.0", "0.1", "mlp0"], "metric": [1.0, 2.0, 3.0]})
    frame.to_csv(before / "knockout.csv", index=False)
    frame.assign(metric=[1.0, 2.5, 3.0], exact=[True, False, True]).to_csv(
        after / "knockout.csv", index=False
    )
    frame.to_csv(before / "moved.csv", index=False)
    frame.assign(metric=[1.5, 2.0, 3.0], exact=[True, False, True]).to_csv(after / "moved.csv", index=False)
    verdicts = compare_tables(before, after).set_index("table")["verdict"].to_dict()
    assert verdicts == {
        "knockout.csv": "identical on the 2 exact rows; 1 estimates",
        "moved.csv": "max |diff| 5.00e-01 on the 2 exact rows; 1 estimates",
    }
