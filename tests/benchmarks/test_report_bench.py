"""benchmarks/report.py: the 270M-class shape's tokenizer and model, the phases outside the tasks,
and tables compared where one side has a column more."""

from __future__ import annotations

import pandas as pd
from benchmarks.report import padded_gpt2_tokenizer, save_270m_shaped
from benchmarks.report_gpt2 import compare_tables, phase_times

from headscope.models.loading import load_model

LOG = """\
10:00:05 model /tmp/m: 18 layers x 4 heads
10:00:06 OV kernel: one pass over the vocabulary for 2 score sets (500 rows)
10:01:06 task ioi: building 20 prompts
10:01:07 task ioi: ov tables
10:01:09 head atlas: 72 heads x the relation library, weights only
10:01:19 writing results.json and 21 CSV tables
10:01:22 writing the page
10:01:30 drawing 40 figures (PNG)
"""


def test_the_steps_outside_the_tasks_are_phases_of_their_own():
    seconds = {(r.task, r.phase): r.seconds for r in phase_times(LOG).itertuples(index=False)}
    assert seconds == {
        ("(model)", "set-up"): 1,
        ("(model)", "OV kernel, once"): 60,
        ("ioi", "prompts"): 1,
        ("ioi", "ov tables"): 2,
        ("(model)", "atlas"): 10,
        ("(model)", "write results + CSVs"): 3,
        ("(model)", "write page"): 8,
    }


def test_a_column_on_one_side_only_is_named_and_the_others_compared(tmp_path):
    before, after = tmp_path / "before", tmp_path / "after"
    before.mkdir(), after.mkdir()
    frame = pd.DataFrame({"component": ["a", "b"], "dla": [1.0, 2.0]})
    frame.to_csv(before / "dla.csv", index=False)
    frame.assign(convention="linear").to_csv(after / "dla.csv", index=False)
    verdicts = compare_tables(before, after).set_index("table")["verdict"].to_dict()
    assert verdicts == {"dla.csv": "identical on the shared columns (one side only: convention)"}


def test_the_270m_shape_has_the_whole_vocabulary_and_spells_text_as_gpt2(tmp_path):
    tokenizer = padded_gpt2_tokenizer()
    assert (
        len(tokenizer) == 262144 and tokenizer.decode(tokenizer.encode(" Mary and John")) == " Mary and John"
    )
    assert max(tokenizer.encode(" the quick brown fox, 1 2 3")) < 50257  # the padding spells nothing
    folder = save_270m_shaped(
        tmp_path / "m", num_hidden_layers=1, hidden_size=32, head_dim=8, intermediate_size=64
    )
    model = load_model(str(folder))
    assert (model.n_heads, model.weights.d_head, model.weights.d_vocab) == (4, 8, 262144)
