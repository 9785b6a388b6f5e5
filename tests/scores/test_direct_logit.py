"""Direct logit attribution: the components sum to Hugging Face's own logit difference."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from scipy import stats

from headscope.capture import capture
from headscope.scores.direct_logit import (
    DLA_NEEDS,
    attribution_per_prompt,
    component_names,
    direct_logit_attribution,
)
from headscope.tasks.dataset import build_dataset
from headscope.tasks.registry import get_task
from tests.scores.test_scatter import folded


def hf_logit_diff(model, dataset) -> torch.Tensor:
    """logit(answer) - logit(contrast) at the last token, each prompt alone through the HF model."""
    diffs = []
    for i in range(dataset.n):
        tokens = dataset.tokens[i : i + 1, : int(dataset.lengths[i])]
        with torch.no_grad():
            logits = model.bridge.original_model(tokens).logits[0, -1]
        diffs.append(float(logits[dataset.answers[i]] - logits[dataset.contrasts[i]]))
    return torch.tensor(diffs)


@pytest.mark.parametrize("task", ["ioi", "seq-months", "recency"])
def test_components_sum_to_the_logit_difference_per_prompt(tiny_model, task):
    dataset = build_dataset(get_task(task), tiny_model.tokens, 10, seed=4)
    per_prompt = attribution_per_prompt(tiny_model.weights, dataset, capture(tiny_model, dataset, DLA_NEEDS))
    assert per_prompt.shape == (dataset.n, len(component_names(2, 4)))
    expected = hf_logit_diff(tiny_model, dataset)
    torch.testing.assert_close(per_prompt.sum(1), expected, atol=1e-4, rtol=0)


def test_head_term_through_hf_final_layer_norm(tiny_model):
    """One head's term = its result through HF's ln_f at the pass's scale, dotted with lm_head rows."""
    dataset = build_dataset(get_task("ioi"), tiny_model.tokens, 6, seed=1)
    per_prompt = attribution_per_prompt(tiny_model.weights, dataset, capture(tiny_model, dataset, DLA_NEEDS))
    column = component_names(2, 4).index("1.2")
    hf = tiny_model.bridge.original_model
    ln_f, lm_head = hf.transformer.ln_f, hf.lm_head.weight.detach()
    W_O = tiny_model.bridge.W_O[1, 2].detach()
    for i in range(dataset.n):
        tokens = dataset.tokens[i : i + 1, : int(dataset.lengths[i])]
        _, cache = tiny_model.bridge.run_with_cache(tokens)
        result = cache["blocks.1.attn.hook_z"][0, -1, 2] @ W_O  # [d_model]
        resid = cache["ln_final.hook_in"][0, -1]
        sigma = ((resid - resid.mean()).pow(2).mean() + ln_f.eps).sqrt()
        seen = (result - result.mean()) / sigma * ln_f.weight.detach()
        expected = seen @ (lm_head[dataset.answers[i]] - lm_head[dataset.contrasts[i]])
        assert float(per_prompt[i, column]) == pytest.approx(float(expected), abs=1e-5)


def test_table_is_the_mean_with_names_and_layers(tiny_model):
    dataset = build_dataset(get_task("ioi"), tiny_model.tokens, 5, seed=2)
    cap = capture(tiny_model, dataset, DLA_NEEDS)
    table = direct_logit_attribution(tiny_model.weights, dataset, cap)
    assert list(table.component[:6]) == ["embed", "0.0", "0.1", "0.2", "0.3", "mlp0"]
    assert table.component.iloc[-1] == "bias"
    assert list(table.kind[:6]) == ["embed", "head", "head", "head", "head", "mlp"]
    head = table.set_index("component").loc["1.3"]
    assert (head.layer, head["head"]) == (1, 3)
    assert table.set_index("component").loc["mlp1", "head"] is pd.NA
    assert table.set_index("component").loc["embed", "layer"] is pd.NA
    per_prompt = attribution_per_prompt(tiny_model.weights, dataset, cap).double()
    torch.testing.assert_close(torch.tensor(table.dla.to_numpy()), per_prompt.mean(0))
    assert list(table.columns[-4:]) == ["n", "ci_low", "ci_high", "ci_kind"]
    assert (table.n == 5).all() and (table.ci_kind == "t").all()
    for i, values in enumerate(per_prompt.T.numpy()):  # scipy's t interval, component by component
        sem = stats.sem(values)
        expected = stats.t.interval(0.95, 4, loc=values.mean(), scale=sem) if sem > 0 else (values[0],) * 2
        assert (table.ci_low[i], table.ci_high[i]) == pytest.approx(expected, abs=1e-9)
    assert table.dla.sum() == pytest.approx(float(hf_logit_diff(tiny_model, dataset).mean()), abs=1e-4)


def test_attribution_does_not_change_when_layer_norms_are_folded(tiny_model):
    dataset = build_dataset(get_task("ioi"), tiny_model.tokens, 6, seed=8)
    cap = capture(tiny_model, dataset, DLA_NEEDS)
    raw = attribution_per_prompt(tiny_model.weights, dataset, cap)
    fold = attribution_per_prompt(folded(tiny_model.weights), dataset, cap)
    torch.testing.assert_close(fold, raw, atol=1e-5, rtol=1e-4)
