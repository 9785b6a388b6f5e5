"""A hand-built GPT-2 for the real `seq-digits` task, every weight set by hand (docs/methods.md §7):
a successor head beside a digit-category head.

Prompts `<bos> W V in x1 . W V in x2 . W V in x3 . W V in x4 . W V in` (tasks/builtin.py's template,
every word one token of a word-level tokenizer: W a name, V a verb, x1..x4 four consecutive digits of
1..20), answer x4 + 1, contrast x4; the twin draws x1..x4 at random. Positions 0-23: x4 at 19, `end`
(the last `in`) at 23. The residual stream is linear as in tests/scores/ioi_cast.py (LayerNorm eps
1e8, gain 1e4: x1 in float32; directions of disjoint support, mean 0). Unit directions: per token
`u` and per position `p`; a token's embedding is its `u` (tied unembedding: token t's logit reads
`u_t`). Block 0 writes nothing, so a keyword's context embedding (§2) is `u_d + p_position`.

Both heads of layer 1 attend from `end` to x4 (score 12 from p:23 to p:19, 4 to BOS from every
query, 0 elsewhere: e^12 / (e^12 + e^4 + 22) = 0.9995) and read only a digit's `u`:

- 1.0, successor: writes 4 `u_{d+1}` from `u_d` (d = 1..19). Its OV logits are 4 on d + 1 and
  exactly 0 on every other token: within-set next 1.00 (the successor first of the 20 digits; chance
  1/20), top-5 next 1.00, copy 0 (d ties at 0 with the whole vocabulary; ties count against).
- 1.1, digit category: writes every digit, `sum_j (1 + 0.2 max(0, 3 - |j - d|)) u_j` from `u_d`:
  1.0 on each digit, more near d (d 1.6, d +- 1 1.4, d +- 2 1.2: 5 -> 5, then 4 and 6, then 3 and 7).
  Its top 5 is d and its neighbours: copy 1.00 and top-5 next 1.00 (d + 1 ranks behind d and d - 1),
  yet the successor is never first among the digits (d is): within-set next 0.00 against chance
  0.05. Top-k cannot tell "writes the successor" from "writes some digit"; the within-set score can.
- every other head and every MLP writes nothing.

The metric (logit(x4 + 1) - logit(x4) at `end`) is 4 x 0.9995 from 1.0 and 0.2 x 0.9995 less from
1.1 (1.4 - 1.6): 3.80. Knocked out (hook_z replaced by the twin's mean, whose x4 is random), 1.0
writes about 4/20 of every successor, the same to answer and contrast: the metric drops to about
-0.20 (effect about 1.05); 1.1's mean band gives answer and contrast about the same: the metric
rises to about 4.00 (effect about 0.05, under the 0.1 threshold).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import GPT2LMHeadModel

from headscope.tasks.registry import get_task
from headscope.tasks.task import Task
from tests.scores.ioi_cast import D_MODEL, _directions, _ov, _qk, save_planted

NAMES = ["Mary", "John"]  # of the task's names: the filler checks refuse the others (not in the vocabulary)
VERBS = ["arrived", "left"]
FRAME = ["in", "."]
DIGITS = [str(i) for i in range(1, 21)]  # the task's digits family
UNUSED = [f"w{i}" for i in range(100)]  # a vocabulary of 127: the top-5 score's chance is 5/127
N_LAYER, N_HEAD = 2, 2
POSITIONS = 24
X4, END = 19, 23
SUCCESSOR, CATEGORY = (1, 0), (1, 1)
SUCCESSOR_WEIGHT = 4.0
BAND = 0.2  # the category head's extra per step of closeness to d (3 steps: d, d +- 1, d +- 2)


def digits_task() -> Task:
    """The built-in seq-digits task itself (its roles x1..x4 and `end`, its metric and twin)."""
    return get_task("seq-digits")


def category_weight(d: int, j: int) -> float:
    """What the category head writes on digit j when it reads digit d."""
    return 1.0 + BAND * max(0, 3 - abs(j - d))


class _Space:
    """Named unit directions of the residual stream."""

    def __init__(self) -> None:
        names = [f"u:{t}" for t in ["<bos>", *NAMES, *VERBS, *FRAME, *DIGITS]]
        names += [f"p:{i}" for i in range(POSITIONS)]
        self.of = dict(zip(names, _directions(len(names)), strict=True))

    def __call__(self, name: str) -> torch.Tensor:
        return self.of[name]

    def positions(self) -> torch.Tensor:
        return sum(self(f"p:{i}") for i in range(POSITIONS))


def _embedding(s: _Space, vocab: dict[str, int]) -> torch.Tensor:
    E = torch.zeros(len(vocab), D_MODEL)
    for word, index in vocab.items():
        if word not in UNUSED:  # an unused word is a zero row
            E[index] = s(f"u:{word}")
    return E


def _plant_heads(model: GPT2LMHeadModel, s: _Space) -> None:
    attn = model.transformer.h[1].attn
    reads_x4 = [(s(f"p:{END}"), s(f"p:{X4}"), 12.0), (s.positions(), s("u:<bos>"), 4.0)]
    u = {int(d): s(f"u:{d}") for d in DIGITS}
    _qk(attn, SUCCESSOR[1], reads_x4)
    _ov(attn, SUCCESSOR[1], [(u[d], u[d + 1], SUCCESSOR_WEIGHT) for d in range(1, 20)])
    _qk(attn, CATEGORY[1], reads_x4)
    band = {d: sum(category_weight(d, j) * u[j] for j in u) for d in u}
    _ov(attn, CATEGORY[1], [(u[d], band[d], 1.0) for d in u])


def save_successor_model(folder: Path) -> Path:
    words = NAMES + VERBS + FRAME + DIGITS + UNUSED
    return save_planted(folder, words, POSITIONS, N_LAYER, N_HEAD, _Space(), _embedding, _plant_heads)
