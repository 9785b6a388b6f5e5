"""How well the model does the task: top-1 accuracy, logit difference, answer probability."""

from __future__ import annotations

from headscope.capture import Capture, Needs
from headscope.scores.intervals import t_interval, wilson
from headscope.scores.metric import answer_prob, logit_diff, top1_correct
from headscope.tasks.dataset import Dataset

EVALUATE_NEEDS = Needs(logits_end=True)


def evaluate(dataset: Dataset, capture: Capture) -> dict:
    """accuracy (answer is the top-1 token at `end`), mean logit_diff, mean answer_prob, n, and the
    95% interval of each over the n prompts (docs/methods.md §C): `accuracy_ci_low/high` Wilson's
    (a share of prompts), `logit_diff_ci_low/high` and `answer_prob_ci_low/high` t intervals."""
    logits = capture.require("logits_end", "evaluate")  # [batch, d_vocab]
    correct = top1_correct(logits, dataset.answers)
    diffs = logit_diff(logits, dataset.answers, dataset.contrasts).double()
    probs = answer_prob(logits, dataset.answers).double()
    result = {
        "accuracy": float(correct.float().mean()),
        "logit_diff": float(diffs.mean()),
        "answer_prob": float(probs.mean()),
        "n": dataset.n,
    }
    accuracy = wilson(int(correct.sum()), dataset.n)
    intervals = {"accuracy": accuracy, "logit_diff": t_interval(diffs), "answer_prob": t_interval(probs)}
    for name, (low, high) in intervals.items():
        result |= {f"{name}_ci_low": float(low), f"{name}_ci_high": float(high)}
    return result
