"""evaluate() against logits computed by the Hugging Face model itself, one prompt at a time."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from headscope.capture import Capture, capture
from headscope.scores.evaluate import EVALUATE_NEEDS, evaluate
from headscope.tasks.dataset import build_dataset
from headscope.tasks.registry import get_task


@pytest.mark.parametrize("task", ["ioi", "seq-digits"])
def test_evaluate_matches_hf_logits(tiny_model, task):
    dataset = build_dataset(get_task(task), tiny_model.tokens, 9, seed=6)
    result = evaluate(dataset, capture(tiny_model, dataset, EVALUATE_NEEDS))
    hits, diffs, probs = [], [], []
    for i in range(dataset.n):
        tokens = dataset.tokens[i : i + 1, : int(dataset.lengths[i])]
        with torch.no_grad():
            logits = tiny_model.bridge.original_model(tokens).logits[0, -1].double()
        answer, contrast = int(dataset.answers[i]), int(dataset.contrasts[i])
        hits.append(int(logits.argmax()) == answer)
        diffs.append(float(logits[answer] - logits[contrast]))
        probs.append(float(torch.softmax(logits, -1)[answer]))
    assert result["n"] == dataset.n == 9
    assert result["accuracy"] == pytest.approx(sum(hits) / len(hits))
    assert result["logit_diff"] == pytest.approx(sum(diffs) / len(diffs), abs=1e-5)
    assert result["answer_prob"] == pytest.approx(sum(probs) / len(probs), abs=1e-6)
    accuracy = stats.binomtest(sum(hits), len(hits)).proportion_ci(method="wilson")
    assert (result["accuracy_ci_low"], result["accuracy_ci_high"]) == pytest.approx(
        tuple(accuracy), abs=1e-12
    )
    for name, values in (("logit_diff", diffs), ("answer_prob", probs)):
        mean, sem = np.mean(values), stats.sem(values)
        expected = stats.t.interval(0.95, len(values) - 1, loc=mean, scale=sem)
        assert (result[f"{name}_ci_low"], result[f"{name}_ci_high"]) == pytest.approx(expected, abs=1e-5)


def test_evaluate_on_hand_made_logits():
    dataset = type("D", (), {})()
    dataset.answers, dataset.contrasts, dataset.n = torch.tensor([0, 1]), torch.tensor([1, 2]), 2
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # prompt 0 right, prompt 1 wrong
    result = evaluate(dataset, Capture(logits_end=logits))
    assert result["accuracy"] == 0.5
    assert result["logit_diff"] == pytest.approx((2.0 + -1.0) / 2)
    p0 = torch.softmax(logits[0], -1)[0]
    p1 = torch.softmax(logits[1], -1)[1]
    assert result["answer_prob"] == pytest.approx(float(p0 + p1) / 2)
