"""The notebook API (headscope.api): hs.<analysis>(model, task, **options) -> DataFrame.

Each function is checked against the lower-level call it wraps on the same prompts (whose numbers
the score tests prove against independent computations), or against TransformerLens's own
forward pass; the options in every accepted form; the errors naming Python arguments.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import pytest
import torch

import headscope as hs
from headscope.capture import capture
from headscope.errors import HeadscopeError
from headscope.scores import ablation, attention, evaluate, labels, ov, patching, scatter
from headscope.scores.relations import default_relations
from headscope.tasks.dataset import build_dataset
from headscope.tasks.registry import get_task
from tests.tasks.task_files import MINIMAL


@pytest.fixture(scope="module")
def organism():
    return hs.load_model("organism")


def test_the_notebook_block_runs_as_written(organism):
    import headscope as hs

    model = hs.load_model("organism")
    hs.ov_scores(model, "ioi", n=20)  # DataFrame; the task's default relations
    hs.ov_scores(model, "seq-digits", relations="next", n=20)  # a string where a list is expected
    fig = hs.plot.heatmap(hs.ov_scores(model, "seq-digits", relations="next", n=20))  # a plotly Figure
    hs.ablate(model, "seq-digits", n=16)  # DataFrame
    hs.head_detectors(model, "induction", n=20)  # DataFrame with an `induction` column
    model.cfg.n_layers, model.to_tokens("1 2 3")  # what a TransformerLens user reaches for

    assert isinstance(fig, go.Figure)
    assert model.cfg.n_layers == 4 and model.to_tokens("1 2 3").shape == (1, 4)  # BOS + 3 words


def test_default_relations_are_the_tasks(organism):
    scores = hs.ov_scores(organism, "ioi", n=20)
    assert tuple(scores["relation"].unique()) == default_relations(get_task("ioi")) == ("copy",)
    digits = hs.ov_scores(organism, "seq-digits", n=20)
    assert tuple(digits["relation"].unique()) == ("copy", "next")


def test_ov_scores_equal_the_lower_level_call(tiny_model):
    data = build_dataset(get_task("seq-digits"), tiny_model.tokens, 20, 3)
    expected = ov.ov_scores(tiny_model, data, ov.OVOptions(relations=("next",), k=3, heads=((1, 2),)))
    table = hs.ov_scores(tiny_model, "seq-digits", relations="next", k=3, heads="1.2", n=20, seed=3)
    pd.testing.assert_frame_equal(table, expected.table)
    pd.testing.assert_frame_equal(table.attrs["per_token"], expected.per_token)
    pd.testing.assert_frame_equal(table.attrs["categories"], expected.categories)
    assert table.attrs["task"] == "seq-digits" and table.attrs["n"] == 20


@pytest.mark.parametrize(
    "relations", ["next", ("next",), ["next"], "next,copy", ("next", "copy", "next"), " next , copy "]
)
def test_relations_as_a_string_or_a_sequence(tiny_model, relations):
    table = hs.ov_scores(tiny_model, "seq-digits", relations=relations, heads=[(0, 0)], n=8)
    expected = ("next",) if "copy" not in relations else ("next", "copy")
    assert tuple(table["relation"].unique()) == expected


@pytest.mark.parametrize("heads", ["1.2,0.1", [(1, 2), (0, 1)], ["1.2", "0.1"], ("1.2", (0, 1))])
def test_heads_in_every_form(tiny_model, heads):
    table = hs.ov_scores(tiny_model, "seq-digits", relations="copy", heads=heads, n=8)
    assert list(zip(table["layer"], table["head"], strict=True)) == [(0, 1), (1, 2)]


def test_a_task_by_name_task_toml_path_or_dataset_gives_the_same_table(tiny_model, tmp_path):
    path = tmp_path / "meeting.toml"
    path.write_text(MINIMAL)
    task = hs.load_task_file(path)
    built = build_dataset(task, tiny_model.tokens, 12, 1)
    tables = [hs.evaluate(tiny_model, form, n=12, seed=1) for form in (str(path), Path(path), task)] + [
        hs.evaluate(tiny_model, built)
    ]
    for table in tables[1:]:
        pd.testing.assert_frame_equal(table, tables[0])
    assert len(built) == built.n == 12


def test_evaluate_is_one_row_of_the_lower_level_numbers(tiny_model):
    data = build_dataset(get_task("ioi"), tiny_model.tokens, 16, 0)
    expected = evaluate.evaluate(data, capture(tiny_model, data, evaluate.EVALUATE_NEEDS))
    row = hs.evaluate(tiny_model, "ioi", n=16)
    intervals = [
        f"{name}_ci_{end}" for name in ("accuracy", "logit_diff", "answer_prob") for end in ("low", "high")
    ]
    assert list(row.columns) == ["task", "accuracy", "logit_diff", "answer_prob", "n", *intervals, "dropped"]
    assert len(row) == 1 and row.loc[0, "task"] == "ioi" and row.loc[0, "dropped"] == 0
    for key, value in expected.items():
        assert row.loc[0, key] == pytest.approx(value, rel=1e-6)


def test_dla_sums_to_the_logit_difference_of_the_forward_pass(tiny_model):
    dla = hs.direct_logit_attribution(tiny_model, "ioi", n=16)
    data = build_dataset(get_task("ioi"), tiny_model.tokens, 16, 0)
    with torch.no_grad():
        logits = tiny_model.bridge(data.tokens)  # padded prompts: read each at its own end
    rows = logits[torch.arange(data.n), data.end]
    diff = rows[torch.arange(data.n), data.answers] - rows[torch.arange(data.n), data.contrasts]
    assert dla["dla"].sum() == pytest.approx(float(diff.mean()), abs=1e-4)
    assert dla.attrs["logit_diff"] == pytest.approx(float(diff.mean()), abs=1e-4)


def test_role_attention_and_detectors_equal_the_lower_level(tiny_model):
    data = build_dataset(get_task("induction"), tiny_model.tokens, 10, 0)
    taken = capture(tiny_model, data, dataclasses.replace(attention.ROLE_ATTENTION_NEEDS, pattern_full=True))
    pd.testing.assert_frame_equal(
        hs.role_attention(tiny_model, "induction", n=10), attention.role_attention(data, taken)
    )
    pd.testing.assert_frame_equal(
        hs.head_detectors(tiny_model, "induction", n=10), attention.head_detectors(data, taken)
    )


def test_attention_patterns_equal_run_with_cache(tiny_model):
    table = hs.attention_patterns(tiny_model, "ioi", heads="1.3,0.2", prompts=[2, 0], n=6)
    data = build_dataset(get_task("ioi"), tiny_model.tokens, 6, 0)
    for prompt in (0, 2):
        length = int(data.lengths[prompt])
        _, cache = tiny_model.bridge.run_with_cache(data.tokens[prompt : prompt + 1, :length])
        for layer, head in ((1, 3), (0, 2)):
            pattern = cache[f"blocks.{layer}.attn.hook_pattern"][0, head]  # [q, k]
            rows = table[(table.prompt == prompt) & (table.layer == layer) & (table["head"] == head)]
            got = torch.tensor(rows["attention"].tolist())
            expected = pattern[rows["destination"].tolist(), rows["source"].tolist()]
            assert torch.allclose(got, expected, atol=1e-6)
            assert len(rows) == length * (length + 1) // 2
    assert table.attrs["texts"][2] == data.prompts[2].text


def test_scatter_points_and_stats_equal_the_lower_level(organism):
    points = hs.scatter(organism, "ioi", head=(1, 0), n=30, n_boot=200)
    data = build_dataset(get_task("ioi"), organism.tokens, 30, 0)
    taken = capture(organism, data, scatter.SCATTER_NEEDS)
    expected = scatter.scatter_points(organism.weights, data, taken, (1, 0), ["IO", "S"])
    pd.testing.assert_frame_equal(points, expected)
    pd.testing.assert_frame_equal(points.attrs["stats"], scatter.scatter_stats(expected, n_boot=200, seed=0))
    same = hs.scatter(organism, "ioi", head="1.0", roles="IO,S", n=30, n_boot=200)
    pd.testing.assert_frame_equal(same, points)


def test_ablate_and_circuits_equal_the_lower_level(tiny_model):
    data = build_dataset(get_task("seq-digits"), tiny_model.tokens, 8, 0)
    options = ablation.AblationOptions(components=("mlps",), method="zero", positions=("end",))
    table = hs.ablate(tiny_model, "seq-digits", components="mlps", method="zero", positions="end", n=8)
    pd.testing.assert_frame_equal(table, ablation.ablate(tiny_model, data, options))
    kept = hs.keep_circuit(tiny_model, "seq-digits", "mlp1", components="mlps", method="zero", n=8)
    expected = ablation.keep_circuit(
        tiny_model, data, ["mlp1"], options=dataclasses.replace(options, positions=("all",))
    )
    assert kept.loc[0, "kept"] == "mlp1" and kept.attrs["components"] == ["mlp1"]
    assert kept.loc[0, "pct_of_clean"] == pytest.approx(expected["pct_of_clean"])
    greedy = hs.greedy_circuit(tiny_model, "seq-digits", threshold=5, components="mlps", method="zero", n=8)
    found = ablation.greedy_circuit(
        tiny_model, data, dataclasses.replace(options, positions=("all",)), threshold=5.0
    )
    assert greedy.attrs["components"] == found and greedy.loc[0, "kept"] == ",".join(found)


def test_patching_equals_the_lower_level(tiny_model):
    data = build_dataset(get_task("seq-digits"), tiny_model.tokens, 8, 0)
    pd.testing.assert_frame_equal(
        hs.patch(tiny_model, "seq-digits", direction="noise", n=8), patching.patch(tiny_model, data, "noise")
    )
    pd.testing.assert_frame_equal(
        hs.attribution_patch(tiny_model, "seq-digits", n=8), patching.attribution_patch(tiny_model, data)
    )


def test_label_heads_finds_the_organisms_induction_heads(organism):
    found = hs.label_heads(organism, "induction", n=20)
    induction = {(int(r.layer), int(r.head)) for r in found.itertuples() if r.label == "induction"}
    assert induction == {(2, 0), (2, 1)}  # the organism's induction heads (README organism card)
    strict = hs.label_heads(organism, "induction", thresholds={"detector": 1.01}, n=20)
    assert strict.empty
    assert set(found.attrs["detectors"].columns) >= {"induction", "previous_token"}


def test_label_heads_equal_the_lower_level(tiny_model):
    data = build_dataset(get_task("ioi"), tiny_model.tokens, 12, 0)
    loose = labels.LabelThresholds(copy=0.0, answer_attention=0.0, negative_copy=0.0)
    table = hs.label_heads(tiny_model, "ioi", thresholds=loose, n=12)
    ov_table = ov.ov_scores(tiny_model, data, ov.OVOptions(("copy",), negative=True, within=True)).table
    roles = attention.role_attention(data, capture(tiny_model, data, attention.ROLE_ATTENTION_NEEDS))
    expected = labels.label_heads(ov_table, roles, pd.DataFrame(), "IO", loose, contrast_role="S")
    pd.testing.assert_frame_equal(table, expected)
    assert not table.empty  # thresholds of zero: every head whose copy share beats chance (BH)


def test_results_concatenate_and_keep_their_extra_tables(tiny_model):
    first = hs.ov_scores(tiny_model, "seq-digits", relations="copy", n=8)
    second = hs.ov_scores(tiny_model, "seq-digits", relations="copy", n=8, seed=1)
    joined = pd.concat([first.assign(seed=0), second.assign(seed=1)])  # attrs differ: dropped, no error
    assert len(joined) == 2 * len(first)
    strong = first[first["score"] >= 0]
    assert isinstance(strong.attrs["per_token"], pd.DataFrame)
    assert strong.attrs["per_token"] is first.attrs["per_token"]  # shared, not deep-copied
    kept = first.attrs["per_token"].query("hit")
    assert type(kept) is pd.DataFrame  # what is computed from an attached table is a plain DataFrame


CALLS = {
    "n=0": lambda m: hs.ov_scores(m, "ioi", n=0),
    "n=2 with a built Dataset": lambda m: hs.evaluate(m, hs.dataset(m, "ioi", n=3), n=2),
    "task=3": lambda m: hs.evaluate(m, 3),
    "k=0": lambda m: hs.ov_scores(m, "ioi", k=0, n=4),
    "k=100000 is larger": lambda m: hs.ov_scores(m, "ioi", k=100000, n=4),
    "embedding='tokens'": lambda m: hs.ov_scores(m, "ioi", embedding="tokens", n=4),
    "relations=''": lambda m: hs.ov_scores(m, "ioi", relations="", n=4),
    "unknown relation 'sideways'": lambda m: hs.ov_scores(m, "ioi", relations="sideways", n=4),
    "head 9.0 does not exist": lambda m: hs.ov_scores(m, "ioi", heads="9.0", n=4),
    "method='knock'": lambda m: hs.ablate(m, "ioi", method="knock", n=4),
    "components='attn'": lambda m: hs.ablate(m, "ioi", components="attn", n=4),
    "unknown role 'middle'": lambda m: hs.ablate(m, "ioi", positions="end,middle", n=4),
    "direction='sideways'": lambda m: hs.patch(m, "ioi", direction="sideways", n=4),
    "scale='log'": lambda m: hs.scatter(m, "ioi", head="1.0", scale="log", n=4),
    "pass roles=": lambda m: hs.scatter(m, "induction", head="1.0", n=4),
    "threshold=-1": lambda m: hs.greedy_circuit(m, "ioi", threshold=-1, n=4),
    "thresholds: unknown copies": lambda m: hs.label_heads(m, "ioi", thresholds={"copies": 1}, n=4),
    "prompts=[7]": lambda m: hs.attention_patterns(m, "ioi", prompts=[7], n=4),
}


@pytest.mark.parametrize("expected", list(CALLS))
def test_errors_name_python_arguments(tiny_model, expected):
    with pytest.raises(HeadscopeError) as error:
        CALLS[expected](tiny_model)
    message = str(error.value)
    assert expected in message
    assert "--" not in message  # no command-line flag


def test_options_never_split_a_string_into_characters():
    assert ov.OVOptions(relations="copy").relations == ("copy",)
    assert ov.OVOptions(relations="copy,next").relations == ("copy", "next")
    assert ov.OVOptions(relations=["next"], heads=[[1, 2]]).heads == ((1, 2),)
    assert ablation.AblationOptions(positions="end", components="heads").positions == ("end",)
    assert ablation.AblationOptions(components="heads").components == ("heads",)


def test_keyword_words_as_one_string_or_a_list(organism):
    from_string = hs.ov_scores(organism, hs.keyword_dataset("1 2 3 4 5", organism.tokens), relations="next")
    from_list = hs.ov_scores(
        organism, hs.keyword_dataset(["1", "2", "3", "4", "5"], organism.tokens), relations="next"
    )
    pd.testing.assert_frame_equal(from_string, from_list)
    assert set(from_string["n"]) == {4}  # four of the five words have a successor in the list
