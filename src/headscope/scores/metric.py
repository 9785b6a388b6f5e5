"""The task metric: logit difference answer - contrast at `end`, and accuracy."""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor


def logit_diff(
    logits_end: Float[Tensor, "batch d_vocab"],
    answers: Int[Tensor, "batch"],
    contrasts: Int[Tensor, "batch"],
) -> Float[Tensor, "batch"]:
    """logit(answer) - logit(contrast) per prompt."""
    rows = torch.arange(logits_end.shape[0])
    return logits_end[rows, answers] - logits_end[rows, contrasts]


def answer_prob(
    logits_end: Float[Tensor, "batch d_vocab"], answers: Int[Tensor, "batch"]
) -> Float[Tensor, "batch"]:
    probs = logits_end.float().softmax(-1)
    return probs[torch.arange(probs.shape[0]), answers]


def top1_correct(logits_end: Float[Tensor, "batch d_vocab"], answers: Int[Tensor, "batch"]) -> Tensor:
    return logits_end.argmax(-1) == answers
