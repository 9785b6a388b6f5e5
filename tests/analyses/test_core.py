"""The analysis core: task properties as data, one capture shared, the front ends agreeing."""

from __future__ import annotations

import pandas as pd
import pytest

import headscope as hs
from headscope.analyses import attention, logits, ov
from headscope.analyses.record import union
from headscope.capture import Needs, capture
from headscope.errors import HeadscopeError
from headscope.report.compute import CAPTURE_STEPS, needs_for
from headscope.tasks.dataset import build_dataset
from headscope.tasks.registry import get_task
from headscope.tasks.toml_task import load_task_file
from tests.tasks.task_files import MINIMAL


def _task_file(tmp_path, extra: str = ""):
    path = tmp_path / "names.toml"
    path.write_text(extra + MINIMAL)
    return load_task_file(path)


def test_keep_patterns_is_data_on_the_task(tmp_path):
    assert get_task("induction").keep_patterns and not get_task("ioi").keep_patterns
    assert not _task_file(tmp_path).keep_patterns
    assert _task_file(tmp_path, "keep_patterns = true\n").keep_patterns
    with pytest.raises(HeadscopeError, match="keep_patterns must be true or false"):
        _task_file(tmp_path, 'keep_patterns = "yes"\n')


def test_a_task_file_keeping_patterns_gets_the_detectors(tmp_path, tiny_model):
    """Whether the detectors run follows the task's field, not its name."""
    plain = build_dataset(_task_file(tmp_path), tiny_model.tokens, 6, 0)
    keeping = build_dataset(_task_file(tmp_path, "keep_patterns = true\n"), tiny_model.tokens, 6, 0)
    assert set(attention.attention_tables(tiny_model, plain)) == {"role_attention"}
    tables = attention.attention_tables(tiny_model, keeping)
    assert set(tables) == {"role_attention", "detectors"}
    expected = hs.head_detectors(tiny_model, keeping)
    pd.testing.assert_frame_equal(tables["detectors"], expected, check_like=False)
    assert needs_for(keeping.task).pattern_full and not needs_for(plain.task).pattern_full


def test_the_reports_capture_is_the_union_of_its_analyses_needs():
    """Everything the report's capture kept before the core (and what DLA's norms add since)."""
    kept = ["resid0_keywords", "pattern_end", "pattern_roles", "z_end", "mlp_end", "embed_end", "scale_end"]
    for name in ("induction", "ioi"):
        needs = needs_for(get_task(name))
        assert all(getattr(needs, flag) for flag in [*kept, "logits_end"]), name
        assert needs.pattern_full == (name == "induction")
        assert needs == union(needs, logits.DLA_NEEDS, logits.SCATTER_NEEDS, ov.OV_NEEDS)
    assert union(Needs(logits_end=False), Needs(pattern_end=True, logits_end=False)) == Needs(
        pattern_end=True, logits_end=False
    )
    assert all(step.table_name for step in CAPTURE_STEPS)


def test_a_shared_capture_gives_what_a_capture_of_its_own_gives(tiny_model):
    data = build_dataset(get_task("ioi"), tiny_model.tokens, 8, 1)
    shared = capture(tiny_model, data, needs_for(data.task))
    for step in CAPTURE_STEPS:
        if step.applies(data.task):
            pd.testing.assert_frame_equal(step.run(tiny_model, data, shared), step.run(tiny_model, data))
    alone = ov.ov_tables(tiny_model, data, 3, "context")
    pd.testing.assert_frame_equal(
        ov.ov_tables(tiny_model, data, 3, "context", shared)["ov_scores"], alone["ov_scores"]
    )
    pd.testing.assert_frame_equal(
        logits.direct_logit_attribution(tiny_model, data, shared),
        logits.direct_logit_attribution(tiny_model, data),
    )


def test_the_report_and_the_api_label_heads_through_one_pipeline():
    organism = hs.load_model("organism")
    data = build_dataset(get_task("ioi"), organism.tokens, 40, 0)
    limits = ov.thresholds_of(None)
    tables = ov.label_tables(organism, data, limits)
    api = hs.label_heads(organism, data)
    pd.testing.assert_frame_equal(api, tables["labels"])
    assert ("1.0", "name mover") in {(f"{r.layer}.{r.head}", r.label) for r in api.itertuples()}
    pd.testing.assert_frame_equal(ov.labels_of(data.task, tables, limits), tables["labels"])
