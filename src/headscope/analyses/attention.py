"""Attention analyses: role-to-role attention, the head detectors, whole patterns of chosen heads."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from jaxtyping import Float
from torch import Tensor

from headscope.analyses.record import PerTask, captured, keeps_patterns
from headscope.capture import Capture, Needs
from headscope.heads import Head
from headscope.models.loading import Model
from headscope.scores import attention as _attention
from headscope.tasks.dataset import Dataset

ROLE_ATTENTION = PerTask(
    name="role_attention",
    needs=_attention.ROLE_ATTENTION_NEEDS,
    compute=lambda model, dataset, taken: _attention.role_attention(dataset, taken),
    doc="""Mean attention from each query role to each key role, every head (docs/methods.md §3).

    Args:
        model: from `hs.load_model`.
        task: a task name, `Task`, TOML path or `Dataset`.
        n, seed: prompts to build and the generator's seed.

    Returns:
        `layer, head, query_role, key_role, attention, n, ci_low, ci_high, ci_kind` (the t
        interval over the `n` prompts); a group key (IOI's S) sums its members,
        and the mean runs over the `n` prompts holding both roles.

    Example:
        >>> att = hs.role_attention(model, "ioi", n=20)
        >>> att[(att.query_role == "end") & (att.key_role == "IO")]
    """,
)

HEAD_DETECTORS = PerTask(
    name="head_detectors",
    needs=_attention.DETECTOR_NEEDS,
    compute=lambda model, dataset, taken: _attention.head_detectors(dataset, taken),
    applies=keeps_patterns,
    table="detectors",
    doc="""Previous-token, duplicate-token and induction scores of every head (docs/methods.md §3).

    Each is the share of a head's attention on the ideal pattern, over the query rows where that
    pattern has a key (an ideal head scores 1.0; NaN when no prompt has such a row). The
    induction score needs repeated tokens: use the `induction` task.

    Args:
        model: from `hs.load_model`.
        task: a task name, `Task`, TOML path or `Dataset`.
        n, seed: prompts to build and the generator's seed.

    Returns:
        `layer, head, previous_token, duplicate_token, induction`, one row per head.

    Example:
        >>> hs.head_detectors(model, "induction", n=20).sort_values("induction").tail(2)
    """,
)


ATTENTION_ENTROPY = PerTask(
    name="attention_entropy",
    command="entropy",
    needs=_attention.ENTROPY_NEEDS,
    compute=lambda model, dataset, taken: _attention.end_entropy(dataset, taken),
    doc="""Entropy of each head's attention at `end`, mean over prompts (docs/methods.md §3).

    Args:
        model: from `hs.load_model`.
        task: a task name, `Task`, TOML path or `Dataset`.
        n, seed: prompts to build and the generator's seed.

    Returns:
        `layer, head, entropy, n, ci_low, ci_high, ci_kind` (its t interval):
        the mean over the `n` prompts of -sum_k A[end, k] log A[end, k]
        in nats (0 for a head on one token; log(end + 1) for a head spread evenly).

    Example:
        >>> hs.attention_entropy(model, "ioi", n=20).sort_values("entropy").head(3)
    """,
)


def attention_needs(dataset: Dataset) -> Needs:
    """Role attention always; whole patterns too where the task keeps them (for the detectors)."""
    if HEAD_DETECTORS.applies(dataset.task):
        return Needs(pattern_roles=True, pattern_full=True, logits_end=False)
    return ROLE_ATTENTION.needs


def attention_tables(model: Model, dataset: Dataset, taken: Capture | None = None) -> dict[str, pd.DataFrame]:
    """`role_attention` of every head, and `detectors` where the task keeps whole patterns."""
    taken = captured(model, dataset, attention_needs(dataset), taken)
    tables = {"role_attention": ROLE_ATTENTION.run(model, dataset, taken)}
    if HEAD_DETECTORS.applies(dataset.task):
        tables["detectors"] = HEAD_DETECTORS.run(model, dataset, taken)
    return tables


def whole_patterns(
    model: Model, dataset: Dataset, prompts: int | Sequence[int]
) -> tuple[Dataset, Float[Tensor, "prompt layer head pos pos"]]:
    """The chosen prompts (the first `prompts`, or these indices) as a Dataset, and every head's
    whole pattern on each (zero-padded past a prompt's length)."""
    chosen = prompts if isinstance(prompts, int) else list(prompts)
    subset = dataset.subset(chosen)
    full = captured(model, subset, Needs(pattern_full=True, logits_end=False)).pattern_full
    return subset, full


def prompt_tokens(model: Model, dataset: Dataset, row: int) -> list[str]:
    """The tokens of prompt `row`, decoded one by one."""
    return [model.tokens.decode(int(t)) for t in dataset.tokens[row, : int(dataset.lengths[row])]]


def attention_patterns(
    model: Model, dataset: Dataset, heads: Sequence[Head], prompts: Sequence[int]
) -> pd.DataFrame:
    """Whole patterns of `heads` on the prompts at these indices, long form: `prompt, layer, head,
    destination, destination_token, source, source_token, attention` (the causal half)."""
    subset, full = whole_patterns(model, dataset, prompts)
    frames = [
        _attention.pattern_records(full[row], list(heads), prompt_tokens(model, subset, row)).assign(
            prompt=index
        )
        for row, index in enumerate(prompts)
    ]
    table = pd.concat(frames, ignore_index=True)
    return table[["prompt", *[c for c in table.columns if c != "prompt"]]]


def example_patterns(
    model: Model, dataset: Dataset, heads: Sequence[Head], count: int
) -> dict[str, pd.DataFrame]:
    """Whole attention patterns of `heads` on the first `count` prompts, their tokens and texts.

    `patterns` has one row per prompt, head and destination position; `attention` holds the
    weights on sources 0..dest, space-separated with 4 decimals (a compact lower triangle).
    """
    if not heads or count < 1:
        return {}
    examples, full = whole_patterns(model, dataset, count)
    texts = [
        {"prompt": i, "text": p.text, "answer": p.answer, "contrast": p.contrast}
        for i, p in enumerate(examples.prompts)
    ]
    token_rows, pattern_rows = [], []
    for i in range(examples.n):
        length = int(examples.lengths[i])
        ids = examples.tokens[i, :length].tolist()
        token_rows += [
            {"prompt": i, "position": p, "token_id": t, "token": model.tokens.decode(t)}
            for p, t in enumerate(ids)
        ]
        for layer, head in heads:
            grid = full[i, layer, head, :length, :length].tolist()  # [dest, src]
            pattern_rows += [
                {
                    "prompt": i,
                    "layer": layer,
                    "head": head,
                    "dest": d,
                    "attention": _weights(grid[d][: d + 1]),
                }
                for d in range(length)
            ]
    tables = {"tokens": token_rows, "patterns": pattern_rows, "prompts": texts}
    return {name: pd.DataFrame(rows) for name, rows in tables.items()}


def _weights(values: list[float]) -> str:
    return " ".join(f"{v:.4f}".rstrip("0").rstrip(".") for v in values)
