"""A hand-built GPT-2 with an IOI-like circuit, every weight set by hand (docs/methods.md §7, the cast).

Prompts `<bos> IO S said S gave to` and `<bos> S IO said S gave to` (positions 0-6: the names at 1
and 2, S2 at 4, `end` at 6); the twin replaces S2 by a third name. The residual stream is linear: every
direction has mean 0 (LayerNorm's centring leaves it) and each LayerNorm has eps 1e8 and gain 1e4, so
in float32 it multiplies by exactly 1. Unit directions: per name `u` (what the movers copy), `w` (what
the backup's keys read) and the shared `N`; per other token `u`; per position `p`; `D` (a duplicate
seen) and per name `I` (inhibit this name). A token's embedding is the sum of its directions (tied
unembedding: a logit reads `u + w + N`).

- 0.0, duplicate-token: from each position to the earlier position holding its name (not itself),
  else to BOS; writes `D` from `N`.
- 1.0, S-inhibition: from `end` (`to`) to the position holding `D` (S2), else BOS; writes `I_n`
  from `u_n` (inhibit S).
- 2.0, name mover: from `end` to every name, minus 12 per unit of `I_n` on name n's key: IO;
  copies `u_n` (4 per unit).
- 3.0, backup mover: from `end` to names like 2.0, minus 2 per unit of the mover's `u_n` at `end`
  on name n's key, BOS at 2: in the clean run 2.0 wrote 4 `u_IO` there, so 3.0 rests on BOS; with
  2.0 mean-ablated (the twin's mean: about 0.5 of each name) it attends IO and copies it (`w_n` to
  3 `u_n`: it reads the embedding alone, not what 2.0 wrote at the positions it attends).
- the vocabulary has 100 unused words (zero rows) besides the names and `said`, `gave`, `to`.
- every other head and every MLP writes nothing.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from headscope.models.organism.tokenizer import word_level_tokenizer
from headscope.tasks.prompt import Prompt, PromptPair, fill, occurrence_roles
from headscope.tasks.task import Task, WordFilter

NAMES = ["Ann", "Bob", "Cat", "Dan", "Eve", "Fay", "Gus", "Hal"]
OTHERS = ["said", "gave", "to"]
UNUSED = [f"x{i}" for i in range(100)]  # a vocabulary of 112: the top-5 scores' chance is 5/112
TEMPLATES = ("{IO} {S} said {S} gave to", "{S} {IO} said {S} gave to")
D_MODEL, N_LAYER, N_HEAD = 128, 4, 2
D_HEAD = D_MODEL // N_HEAD
POSITIONS = 7
EPS, GAIN = 1e8, 1e4  # LayerNorm: x * GAIN / sqrt(var + EPS) == x in float32 for |var| << 8
DUP, INHIBIT, MOVER, BACKUP = (0, 0), (1, 0), (2, 0), (3, 0)


def _prompts(n: int, rng: random.Random, word_ok: WordFilter) -> list[PromptPair]:
    names = [w for w in NAMES if word_ok(w)]
    pairs = []
    for _ in range(n):
        template = rng.choice(TEMPLATES)
        io, s, c = rng.sample(names, 3)
        roles = occurrence_roles(template)
        clean = fill(template, {"IO": io, "S": s}, roles)
        corrupted = fill(template.replace("{S} gave", "{C} gave"), {"IO": io, "S": s, "C": c}, roles)
        pairs.append(PromptPair(Prompt(clean, io, s), Prompt(corrupted, io, s)))
    return pairs


def cast_task() -> Task:
    return Task(
        name="cast",
        description="IO S said S gave to: the hand-built IOI circuit",
        generator=_prompts,
        keyword_roles=("IO", "S1", "S2"),
        answer_role="IO",
        contrast_role="S1",
        role_groups={"S": ("S1", "S2")},
        keep_patterns=True,
    )


def _directions(count: int) -> torch.Tensor:
    """`count` orthonormal rows of mean 0, (e_2i - e_2i+1) / sqrt 2: rows of disjoint support, so
    every product of two of them is exactly 0 in floating point (a head that writes off the
    embeddings gives logits that tie exactly, not rounding noise that a top-k score would count)."""
    rows = torch.zeros(count, D_MODEL)
    for i in range(count):
        rows[i, 2 * i], rows[i, 2 * i + 1] = 0.5**0.5, -(0.5**0.5)
    return rows


class _Space:
    """Named unit directions of the residual stream."""

    def __init__(self) -> None:
        names = [f"{kind}:{n}" for n in NAMES for kind in ("u", "w", "I")]
        names += [f"u:{t}" for t in ["<bos>", *OTHERS]] + [f"p:{i}" for i in range(POSITIONS)]
        names += ["N", "D"]
        rows = _directions(len(names))
        self.of = dict(zip(names, rows, strict=True))

    def __call__(self, name: str) -> torch.Tensor:
        return self.of[name]

    def positions(self) -> torch.Tensor:
        return sum(self(f"p:{i}") for i in range(POSITIONS))


def _qk(attn, head: int, terms: list[tuple[torch.Tensor, torch.Tensor, float]]) -> None:
    """Head `head`'s score q.k / sqrt(d_head) = sum of weight * (x_q . a)(x_k . b) over the terms."""
    for j, (a, b, weight) in enumerate(terms):
        attn.c_attn.weight[:, head * D_HEAD + j] = weight * D_HEAD**0.5 * a
        attn.c_attn.weight[:, D_MODEL + head * D_HEAD + j] = b


def _ov(attn, head: int, terms: list[tuple[torch.Tensor, torch.Tensor, float]]) -> None:
    """Head `head` writes weight * (x . a) * b for each term (its value read where it attends)."""
    for j, (a, b, weight) in enumerate(terms):
        attn.c_attn.weight[:, 2 * D_MODEL + head * D_HEAD + j] = a
        attn.c_proj.weight[head * D_HEAD + j] = weight * b


def _embedding(s: _Space, vocab: dict[str, int]) -> torch.Tensor:
    E = torch.zeros(len(vocab), D_MODEL)
    for word, index in vocab.items():
        if word in UNUSED:
            continue  # a zero row
        E[index] = s(f"u:{word}") + (s(f"w:{word}") + s("N") if word in NAMES else 0)
    return E


def _plant_heads(model: GPT2LMHeadModel, s: _Space) -> None:
    h = model.transformer.h
    bos = (s.positions(), s("u:<bos>"))
    _qk(h[0].attn, 0, [(s(f"u:{n}"), s(f"u:{n}"), 10.0) for n in NAMES]
        + [(s(f"p:{i}"), s(f"p:{i}"), -20.0) for i in range(POSITIONS)] + [(*bos, 5.0)])  # fmt: skip
    _ov(h[0].attn, 0, [(s("N"), s("D"), 1.0)])
    _qk(h[1].attn, 0, [(s("u:to"), s("D"), 10.0), (*bos, 5.0)])
    _ov(h[1].attn, 0, [(s(f"u:{n}"), s(f"I:{n}"), 1.0) for n in NAMES])
    _qk(h[2].attn, 0, [(s("u:to"), s("N"), 6.0)] + [(s(f"I:{n}"), s(f"u:{n}"), -12.0) for n in NAMES])
    _ov(h[2].attn, 0, [(s(f"u:{n}"), s(f"u:{n}"), 4.0) for n in NAMES])
    _qk(h[3].attn, 0, [(s("u:to"), s("N"), 6.0), (*bos, 2.0)]
        + [(s(f"I:{n}"), s(f"w:{n}"), -12.0) for n in NAMES]
        + [(s(f"u:{n}"), s(f"w:{n}"), -2.0) for n in NAMES])  # fmt: skip
    _ov(h[3].attn, 0, [(s(f"w:{n}"), s(f"u:{n}"), 3.0) for n in NAMES])


def save_cast_model(folder: Path) -> Path:
    words = NAMES + OTHERS + UNUSED
    return save_planted(folder, words, POSITIONS, N_LAYER, N_HEAD, _Space(), _embedding, _plant_heads)


def save_planted(
    folder: Path, words: list[str], positions: int, n_layer: int, n_head: int, space, embedding, plant
) -> Path:
    """A GPT-2 of `words` with every weight zero but the norms' gains, the embedding
    (`embedding(space, vocab)`), the positions' directions and what `plant(model, space)` sets."""
    tokenizer = word_level_tokenizer(words)
    vocab = {("<bos>" if i == 0 else w): i for w, i in tokenizer.get_vocab().items()}
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=positions + 2, n_embd=D_MODEL, n_layer=n_layer,
        n_head=n_head, bos_token_id=0, eos_token_id=0, layer_norm_epsilon=EPS,
    )  # fmt: skip
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        for norm in [model.transformer.ln_f, *(n for b in model.transformer.h for n in (b.ln_1, b.ln_2))]:
            norm.weight.fill_(GAIN)
        model.transformer.wte.weight.copy_(embedding(space, vocab))
        model.transformer.wpe.weight[:positions] = torch.stack([space(f"p:{i}") for i in range(positions)])
        plant(model, space)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
