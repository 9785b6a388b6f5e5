"""The cast from the circuit (docs/methods.md §7) on a hand-built IOI circuit (tests/scores/ioi_cast.py):
duplicate-token 0.0 -> S-inhibition 1.0 -> name mover 2.0, and a backup mover 3.0 that acts only when
2.0 is knocked out. The report's task step names each role with all three kinds of evidence and
labels nothing else; the runs the rules read are checked against the numbers the construction gives
and against the knockout sweep (another code path); the rule helpers on small tables."""

from __future__ import annotations

import pandas as pd
import pytest

from headscope.analyses.fdr import run_fdr
from headscope.models.loading import load_model
from headscope.report.compute import ReportOptions, analyse_task
from headscope.report.page import labels_view
from headscope.scores import cast, cast_runs
from headscope.scores.ablation import AblationOptions, ablate
from headscope.scores.labels import LABELS, LabelThresholds, support_kinds, support_of, threshold_failures
from headscope.tasks.dataset import build_dataset
from tests.scores.ioi_cast import BACKUP, DUP, INHIBIT, MOVER, cast_task, save_cast_model

ALL = "weights+attention+behaviour"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_model(str(save_cast_model(tmp_path_factory.mktemp("cast"))))


@pytest.fixture(scope="module")
def data(model):
    return build_dataset(cast_task(), model.tokens, 32, seed=0)


@pytest.fixture(scope="module")
def tables(model, data):
    options = ReportOptions(tasks=("cast",), n=32, n_boot=20)
    return analyse_task(model, data, options, say=lambda message: None)


def test_each_role_of_the_circuit_is_named_with_all_three_kinds_and_nothing_else(tables):
    labels = tables["labels"]
    assert labels[["layer", "head", "label"]].values.tolist() == [
        [*DUP, "duplicate-token (feeds S-inhibition 1.0)"],
        [*INHIBIT, "S-inhibition"],
        [*MOVER, "name mover"],
        [*BACKUP, "backup name mover"],
    ]
    assert (labels["support"] == ALL).all()
    kept = run_fdr({"labels": labels.assign(task="cast"), "ov_scores": tables["ov_scores"]})["labels"]
    assert len(kept) == 4  # the backup's copy test (p ~ 0.045**96) holds over the run's tests


def test_the_label_rows_print_each_value_with_its_threshold(tables):
    rows = tables["labels"].set_index("label")
    inhibition = rows.loc["S-inhibition"]
    assert inhibition.weights == "Q-composition into 2.0 0.35 >= 0.20"
    assert inhibition.attention.startswith("attention end->S 0.99 >= 0.30; end->S > end->IO 0.00")
    assert "|q-edge| into 2.0 / largest" in inhibition.behaviour
    assert "patched, 2.0's end->IO - end->S falls by 1.32 >= 0.10" in inhibition.behaviour
    backup = rows.loc["backup name mover"]
    assert backup.weights == "copy 1.00 >= 0.50 (chance 0.04)" and backup.n == 96
    assert backup.attention == "attention end->IO with 2.0 out 0.93 >= 0.30"
    assert backup.behaviour.startswith("knockout effect with 2.0 out, minus alone 0.69 >= 0.10")
    feeder = rows.loc["duplicate-token (feeds S-inhibition 1.0)"]
    assert "K/V-composition into 1.0 0.60 >= 0.20" in feeder.weights
    assert "|k/v-edge| into 1.0 / largest" in feeder.behaviour and feeder.attention.startswith("duplicate")


def test_without_the_cast_the_step_names_only_the_mover_and_the_detector(tables):
    args = (tables["ov_scores"], tables["role_attention"], tables["detectors"], "IO")
    assert threshold_failures(*args, contrast_role="S").empty  # nothing passes thresholds yet fails the FDR
    assert "S-inhibition" not in LABELS and "backup name mover" not in LABELS  # step "circuit" only


def test_the_patch_moves_the_movers_attention_as_the_construction_says(model, data):
    shift = cast_runs.attention_shift(model, data, [INHIBIT, BACKUP], [MOVER], "IO", "S").set_index("layer")
    # clean: 2.0 reads 1.0's I_S and attends IO (scores 6 vs 6 - 12 and 0 elsewhere): 0.99 - 0.00
    assert shift.loc[1, "before"] == pytest.approx(0.99, abs=0.01)
    # 1.0 from the twin (no duplicate: it rests on BOS, no I_S): IO, S1, S2 at 6, four keys at 0
    assert shift.loc[1, "after"] == pytest.approx(-1 / 3, abs=0.01)
    assert shift.loc[3, "attention_shift"] == pytest.approx(0.0, abs=1e-6)  # a later head cannot


def test_pair_knockouts_agree_with_the_knockout_sweep(model, data):
    pairs = cast_runs.pair_knockouts(model, data, [MOVER], [BACKUP, INHIBIT], "IO")
    sweep = ablate(model, data, AblationOptions(components=("heads",))).set_index(["layer", "head"])
    for row in pairs.itertuples(index=False):
        assert row.clean == pytest.approx(sweep.attrs["clean"], rel=1e-5)
        assert row.mover_out == pytest.approx(sweep.loc[MOVER, "metric"], rel=1e-4)
        assert row.candidate_out == pytest.approx(sweep.loc[(row.layer, row.head), "metric"], rel=1e-4)
    backup = pairs.set_index("layer").loc[3]
    assert backup.candidate_out / backup.clean > 0.98  # alone, 3.0 rests on BOS
    assert backup.both_out / backup.clean < 0.05 and backup.backup_attention > 0.9  # with 2.0 out: IO
    # 1.0's knockout costs a little more once 2.0 is out (3.0 reads its inhibition too): under the bar
    assert 0 < pairs.set_index("layer").loc[1, "backup_growth"] < LabelThresholds().backup


def test_edge_shares_take_each_heads_largest_edge_into_the_targets():
    edges = pd.DataFrame(
        {
            "source": ["1.0", "1.0", "0.1", "embed", "1.1"],
            "target": ["2.0", "2.0", "2.0", "2.0", "logits"],
            "input": ["q", "k", "q", "q", "logits"],
            "score": [-2.0, 9.0, 1.0, 3.0, 4.0],
            "exact": [-3.0, None, None, 1.0, 4.0],
        }
    )
    shares = cast.edge_shares(edges, ["2.0"], ["q"], "share")  # largest |edge|: 9 (approximation)
    assert shares.values.tolist() == [[0, 1, pytest.approx(1 / 9)], [1, 0, pytest.approx(3 / 9)]]
    assert cast.kv_targets([(3, 5), (3, 4), (2, 1)], 2) == ["2.0", "3.2"]


def test_feeders_are_renamed_only_where_their_edge_passes():
    labels = pd.DataFrame(
        [
            {"layer": 0, "head": 0, "label": "duplicate-token", "support": "attention only",
             "weights": "", "attention": "duplicate-token 0.9 >= 0.40", "behaviour": "contradicts: x",
             "evidence": "duplicate-token 0.9 >= 0.40"},
            {"layer": 0, "head": 1, "label": "induction", "support": "attention only", "weights": "",
             "attention": "induction 0.5 >= 0.40", "behaviour": "", "evidence": ""},
        ]
    )  # fmt: skip
    scores = pd.DataFrame({"layer": [0, 0], "head": [0, 1], "feed_edge_share": [0.5, 0.1],
                           "feed_composition": [0.3, 0.9]})  # fmt: skip
    fed = cast.with_feeds(labels, scores, LabelThresholds(), {"S": "1.0"})
    assert fed["label"].tolist() == ["duplicate-token (feeds S-inhibition 1.0)", "induction"]
    assert fed["support"].tolist() == [ALL, "attention only"]
    assert fed.loc[0, "weights"] == "K/V-composition into 1.0 0.30 >= 0.20"


def test_support_kinds_reads_back_support_of():
    for kinds in (["weights"], ["attention", "behaviour"], ["weights", "attention", "behaviour"], []):
        assert support_kinds(support_of(kinds)) == kinds


def test_the_pages_label_section_shows_the_cast_with_its_support(tables):
    view = labels_view("Labelled heads", tables["labels"], "")
    rows = {row[1]: row for row in view.rows}
    assert set(rows) == set(tables["labels"]["label"])
    assert rows["S-inhibition"][0] == "1.0" and rows["S-inhibition"][2] == ALL
    assert rows["backup name mover"][0] == "3.0" and rows["backup name mover"][2] == ALL
