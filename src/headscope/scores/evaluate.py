"""How well the model does the task: top-1 accuracy, logit difference, answer probability."""

from __future__ import annotations

from headscope.capture import Capture, Needs
from headscope.scores.metric import answer_prob, logit_diff, top1_correct
from headscope.tasks.dataset import Dataset

EVALUATE_NEEDS = Needs(logits_end=True)


def evaluate(dataset: Dataset, capture: Capture) -> dict:
    """accuracy (answer is the top-1 token at `end`), mean logit_diff, mean answer_prob, n."""
    logits = capture.require("logits_end", "evaluate")  # [batch, d_vocab]
    return {
        "accuracy": float(top1_correct(logits, dataset.answers).float().mean()),
        "logit_diff": float(logit_diff(logits, dataset.answers, dataset.contrasts).double().mean()),
        "answer_prob": float(answer_prob(logits, dataset.answers).double().mean()),
        "n": dataset.n,
    }
