"""OV relation scores (docs/methods.md §2): would head l.h, attending fully to keyword t, write f(t)?

`ov_scores` scores every head (or the chosen ones) at once for every relation and sign,
and returns three tables: the scores, the per-token detail (each keyword, its target, hit, rank, top-k)
and the category breakdown of the top-k slots. The scores read only hits (rank < k); the detail
tables read ranks and top-k tokens, on every prompt or on the first `detail_prompts` (the other
rows then take the kernel's exact early exit, `ov_kernel.RankCap`). The numerical core is in
`ov_kernel`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool
from torch import Tensor

from headscope.capture import Capture
from headscope.embedding import EMBEDDING_KINDS, Embeddings, effective_embeddings
from headscope.errors import HeadscopeError
from headscope.heads import all_heads, check_head
from headscope.models.loading import Model
from headscope.models.streamed import StreamedModel
from headscope.options import names
from headscope.scores.intervals import cluster_wilson, wilson
from headscope.scores.keywords import KEYWORD_TASK, keyword_dataset
from headscope.scores.ov_kernel import HeadRanks, RankCap, Targets, ov_ranks
from headscope.scores.ov_shared import KernelCall, KernelSettings
from headscope.scores.ov_within import within_table
from headscope.scores.relations import check_relations, instance_targets, row_targets
from headscope.tasks.dataset import Dataset, Tokenization

__all__ = [
    "OVInputs",
    "OVOptions",
    "OVPass",
    "OVResult",
    "kernel_call",
    "keyword_dataset",
    "ov_inputs",
    "ov_scores",
]

OTHER = "other"
DTYPES = {"float32": torch.float32, "float64": torch.float64}
SCORE = (
    "layer",
    "head",
    "relation",
    "sign",
    "k",
    "embedding",
    "score",
    "hits",
    "n",
    "ci_low",
    "ci_high",
    "ci_kind",
)
PER_TOKEN = ("layer", "head", "relation", "sign", "keyword", "target", "rank", "hit", "topk")
CATEGORY = ("layer", "head", "relation", "sign", "category", "share", "n")


@dataclass(frozen=True)
class OVOptions:
    """What to score: relations (copy, next, prev, or a mapping of the task), top-k, embedding."""

    relations: tuple[str, ...] = ("copy", "next")
    k: int = 5
    embedding: Literal["context", "token", "block0"] = "context"
    negative: bool = False  # also score sign -1 (negative copy etc.)
    heads: tuple[tuple[int, int], ...] | None = None  # None = all heads
    precision: Literal["float32", "float64"] = "float32"
    within: bool = False  # also the within-set score of the ordered relations (`ov_within`) and chance

    def __post_init__(self) -> None:  # "copy" is one relation, never ('c', 'o', 'p', 'y')
        object.__setattr__(self, "relations", names(self.relations, "relations", allow_empty=True))
        if self.heads is not None:
            object.__setattr__(self, "heads", tuple(tuple(head) for head in self.heads))

    @property
    def signs(self) -> tuple[int, ...]:
        return (1, -1) if self.negative else (1,)


@dataclass(frozen=True)
class OVResult:
    """Scores per head x relation x sign, the per-token detail and the top-k categories."""

    table: (
        pd.DataFrame
    )  # layer, head, relation, sign, k, embedding, score (0-1), hits, n, ci_low, ci_high, ci_kind
    per_token: pd.DataFrame  # layer, head, relation, sign, keyword, target, rank, hit, topk
    categories: pd.DataFrame  # layer, head, relation, sign, category, share, n (instances)


@dataclass(frozen=True)
class _Scored:
    """Everything the tables are built from."""

    heads: list[tuple[int, int]]
    options: OVOptions
    words: tuple[str, ...]
    targets: list[list[str | None]]  # per relation, per instance
    valid: np.ndarray  # [instance, relation]
    ranks: np.ndarray  # [head, sign, instance, relation]
    topk: np.ndarray  # [head, sign, row, k]
    row: np.ndarray  # [instance] -> row of topk
    prompt: np.ndarray  # [instance] -> its prompt
    n_prompts: int
    clustered: bool  # rows drawn in prompts by a task's generator (not a given keyword list)


def check_options(model: Model, dataset: Dataset, options: OVOptions) -> list[tuple[int, int]]:
    """The heads to score, after checking k, the embedding, the relations and the heads."""
    vocab = model.weights.d_vocab
    if options.k < 1:
        raise HeadscopeError(f"k={options.k}: k must be at least 1 (the top-k logits a hit is looked for in)")
    if options.k > vocab:
        raise HeadscopeError(
            f"k={options.k} is larger than the vocabulary ({vocab} tokens); choose a smaller k"
        )
    if options.embedding not in EMBEDDING_KINDS:
        raise HeadscopeError(f"embedding={options.embedding!r}: choose {', '.join(EMBEDDING_KINDS)}")
    check_relations(dataset.task, options.relations)
    if options.heads is None:
        return all_heads(model.n_layers, model.n_heads)
    return [check_head(head, model.n_layers, model.n_heads) for head in options.heads]


def kernel_device(model: Model | StreamedModel) -> torch.device:
    """Where the OV kernel runs: on the model's accelerator when the whole model is on one (each
    block of heads moved there as it is scored, float32), else on the CPU (a split model's
    weights are read to the CPU, as are a streamed model's)."""
    device = model.device
    if isinstance(model, StreamedModel):
        return device
    split = getattr(model.bridge.original_model, "hf_device_map", None)
    if device.type == "meta" or (split and len(set(split.values())) > 1):
        return model.weights.W_U.device
    return device


@dataclass(frozen=True)
class OVInputs:
    """Everything `ov_ranks` is called with for one score set: the heads, each relation's (words,
    target tokens) per instance, the embedding rows and their targets."""

    heads: list[tuple[int, int]]
    targets: list[tuple[tuple[str, ...], list]]
    embeddings: Embeddings
    table: Targets


@dataclass(frozen=True)
class OVPass:
    """A score set's inputs and the ranks the kernel found for them (its share of a shared pass)."""

    inputs: OVInputs
    ranks: HeadRanks


def ov_scores(
    model: Model,
    dataset: Dataset,
    options: OVOptions = OVOptions(),
    capture: Capture | None = None,
    detail: bool = True,
    computed: OVPass | None = None,
    detail_prompts: int | None = None,
) -> OVResult:
    """OV relation scores of every chosen head: hits / keyword instances with a target.

    `detail=False` skips the top-k tokens and the two tables read from them (`per_token` and
    `categories` come back empty): the same scores, for less work (each head stops reading a row's
    vocabulary once k tokens beat its targets: `ov_kernel.RankCap`). `detail_prompts`: those two
    tables over the instances of the dataset's first `detail_prompts` prompts alone (None: every
    prompt), the other rows capped as without `detail`; the scores are the same, every row's hit
    being exact. `computed`: the inputs and ranks of these options already found by a shared pass
    (`ov_shared.shared_ranks`), with the same `detail_prompts`.
    """
    if detail_prompts is not None and detail_prompts < 0:
        raise HeadscopeError(f"detail_prompts={detail_prompts}: give 0 or more prompts (None: every prompt)")
    if computed is None:
        inputs = ov_inputs(model, dataset, options, capture)
        exact = detail_rows(dataset, inputs.embeddings, detail_prompts) if detail else None
        computed = run_kernel(model, inputs, options, detail, exact)
    i = computed.inputs
    scored = _scored(i.heads, options, dataset, i.targets, i.embeddings, i.table, computed.ranks)
    scores = score_table(scored)
    if options.within:
        scores = _with_within(scores, model, dataset, options, i.heads, i.targets, i.embeddings)
    if not detail or detail_prompts == 0:  # no prompt detailed: every row capped, no table of ranks
        return OVResult(scores, pd.DataFrame(columns=PER_TOKEN), pd.DataFrame(columns=CATEGORY))
    sample = _detail(scored, computed.ranks, detail_prompts)
    return OVResult(scores, per_token_table(sample, model.tokens), category_table(sample, model, dataset))


def detail_rows(dataset: Dataset, embeddings: Embeddings, prompts: int | None) -> Bool[Tensor, "row"] | None:
    """The rows of the instances of the dataset's first `prompts` prompts: those the per-token and
    category tables read (None: every row)."""
    if prompts is None:
        return None
    rows = torch.zeros(embeddings.vectors.shape[0], dtype=torch.bool)
    rows[embeddings.row[dataset.keywords.batch < prompts]] = True
    return rows


def _detail(scored: _Scored, ranks: HeadRanks, prompts: int | None) -> _Scored:
    """The instances of the first `prompts` prompts (every one where None), and the top-k of their
    rows alone; each must have been read whole (not capped)."""
    keep = np.flatnonzero(scored.prompt < (scored.n_prompts if prompts is None else prompts))
    if ranks.cap is not None and ranks.cap.mask(ranks.rank.shape[2]).numpy()[scored.row[keep]].any():
        raise HeadscopeError("the per-token table needs exact ranks and top-k: compute them uncapped")
    if len(keep) == len(scored.prompt):
        return scored
    used, row = np.unique(scored.row[keep], return_inverse=True)
    return replace(
        scored,
        words=tuple(scored.words[i] for i in keep),
        targets=[[targets[i] for i in keep] for targets in scored.targets],
        valid=scored.valid[keep],
        ranks=scored.ranks[:, :, keep],
        topk=scored.topk[:, :, used],
        row=row.reshape(-1),
        prompt=scored.prompt[keep],
    )


def topk_chance(model: Model, k: int, targets: list[tuple[int, ...]]) -> float:
    """The top-k score's chance level: the mean over instances with a target of the chance that one
    of its spellings is among k logits drawn at random, at most k x spellings / |vocabulary|."""
    shares = [min(1.0, k * len(t) / model.weights.d_vocab) for t in targets if t]
    return float(np.mean(shares)) if shares else float("nan")


def _with_within(scores, model, dataset, options: OVOptions, heads, targets, embeddings) -> pd.DataFrame:
    """The score table with the top-k score's `chance` and the within-set columns (`ov_within`;
    NaN for a relation without a family of at least 2 candidates)."""
    chance = {
        r: topk_chance(model, options.k, t) for r, (_, t) in zip(options.relations, targets, strict=True)
    }
    within = within_table(
        model, dataset, options.relations, embeddings.vectors, embeddings.row, heads, options.signs,
        DTYPES[options.precision], kernel_device(model),
    )  # fmt: skip
    scores = scores.assign(chance=scores["relation"].map(chance))
    return scores.merge(within, on=["layer", "head", "relation", "sign"], how="left")


def run_kernel(
    model: Model,
    inputs: OVInputs,
    options: OVOptions,
    detail: bool = True,
    exact: Bool[Tensor, "row"] | None = None,
) -> OVPass:
    """The OV kernel on one score set's rows alone. Without `detail` only the score table is made,
    which reads hits alone: the ranks are capped at k (the kernel's exact early exit, `RankCap`);
    with `exact`, only the rows it marks are read whole (ranks and top-k), the others capped."""
    call, s = kernel_call(model, inputs, options, exact)
    cap = RankCap(s.k) if not detail else RankCap(s.k, call.capped_rows()) if call.capped else None
    ranks = ov_ranks(
        model.weights, call.x, call.targets, inputs.heads, s.k, s.signs, s.dtype, detail, s.device, cap
    )
    return OVPass(inputs, ranks)


def ov_inputs(model: Model, dataset: Dataset, options: OVOptions, capture: Capture | None = None) -> OVInputs:
    """The heads, each relation's targets per instance and the effective embedding rows (read from
    `capture`, or block 0 run here for the context embedding); bad options fail here."""
    heads = check_options(model, dataset, options)
    targets = [instance_targets(dataset, model.tokens, r) for r in options.relations]
    for relation, (_, tokens) in zip(options.relations, targets, strict=True):
        if not any(tokens):
            raise HeadscopeError(
                f"relation {relation!r} has no target token for any keyword of task {dataset.task.name}; "
                "choose another relation"
            )
    embeddings = effective_embeddings(model, dataset, options.embedding, capture)
    table = row_targets([t for _, t in targets], embeddings.row, embeddings.vectors.shape[0])
    return OVInputs(heads, targets, embeddings, table)


def kernel_call(
    model: Model, inputs: OVInputs, options: OVOptions, exact: Bool[Tensor, "row"] | None = None
) -> tuple[KernelCall, KernelSettings]:
    """What the OV kernel is handed for `inputs`, for a pass shared with other score sets: every
    row read whole, or with `exact` (`detail_rows`) those rows alone, the others capped at k."""
    settings = KernelSettings(
        tuple(inputs.heads), options.k, options.signs, DTYPES[options.precision], kernel_device(model)
    )
    capped = exact is not None and not bool(exact.all())
    x = inputs.embeddings.vectors
    return KernelCall(x, inputs.table, capped, exact if capped else None), settings


def _scored(heads, options, dataset, targets, embeddings: Embeddings, table: Targets, ranks: HeadRanks):
    row = embeddings.row
    return _Scored(
        heads=heads,
        options=options,
        words=dataset.keywords.words,
        targets=[words for words, _ in targets],
        valid=table.valid[row].numpy(),
        ranks=ranks.rank[:, :, row].numpy(),
        topk=ranks.topk.numpy(),
        row=row.numpy(),
        prompt=dataset.keywords.batch.numpy(),
        n_prompts=dataset.n,
        clustered=dataset.task.name != KEYWORD_TASK and dataset.n >= 2,
    )


def _head_columns(scored: _Scored, per: int) -> dict[str, np.ndarray]:
    """layer, head, sign columns for a [head, sign, per] block flattened row-major."""
    n_signs = len(scored.options.signs)
    layers = np.array([layer for layer, _ in scored.heads])
    heads = np.array([head for _, head in scored.heads])
    signs = np.array(scored.options.signs)
    return {
        "layer": np.repeat(layers, n_signs * per),
        "head": np.repeat(heads, n_signs * per),
        "sign": np.tile(np.repeat(signs, per), len(scored.heads)),
    }


def score_table(scored: _Scored) -> pd.DataFrame:
    """One row per head x relation x sign."""
    o = scored.options
    blocks = []
    for r, relation in enumerate(o.relations):
        valid = scored.valid[:, r]
        hits = ((scored.ranks[..., r] < o.k) & valid).sum(-1).reshape(-1)  # [head * sign]
        n = int(valid.sum())
        block = pd.DataFrame(_head_columns(scored, 1))
        block.insert(2, "relation", relation)
        block = block.assign(k=o.k, embedding=o.embedding, score=hits / n, hits=hits, n=n)
        low, high, kind = _score_interval(scored, (scored.ranks[..., r] < o.k) & valid, valid)
        blocks.append(block.assign(ci_low=low, ci_high=high, ci_kind=kind))
    table = pd.concat(blocks, ignore_index=True)
    order = {relation: i for i, relation in enumerate(o.relations)}
    table = table.sort_values(["layer", "head", "relation", "sign"], key=_relation_key(order, table))
    return table.reset_index(drop=True)[list(SCORE)]


def _score_interval(scored: _Scored, hit: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, ...]:
    """95% interval of each head x sign's score from its hits [head, sign, instance] (docs/methods.md §C).

    A task's rows come in prompts, which its generator draws independently, while the rows of one
    prompt do not (they share a context; their words are drawn together): Wilson's interval at the
    effective number of rows over prompts (`intervals.cluster_wilson`; a percentile bootstrap of
    prompts covered too little for a few hits). A score of 0 or 1, a given keyword list (its words
    given once each, not drawn) and a single prompt get Wilson over the rows."""
    hit = hit.reshape(-1, hit.shape[-1])  # [head * sign, instance]
    hits, n = hit.sum(-1), int(valid.sum())
    low, high = wilson(hits, n)
    kind = np.full(hits.shape, "wilson", dtype=object)
    if not scored.clustered:
        return low, high, kind
    rows = np.bincount(scored.prompt, weights=valid.astype(float), minlength=scored.n_prompts)  # [prompt]
    boot_low, boot_high = cluster_wilson(_per_prompt(hit, scored.prompt, scored.n_prompts), rows)
    mixed = (hits > 0) & (hits < n)
    kind[mixed] = "cluster-wilson"
    return np.where(mixed, boot_low, low), np.where(mixed, boot_high, high), kind


def _per_prompt(hit: np.ndarray, prompt: np.ndarray, n_prompts: int) -> np.ndarray:
    """Each cell's hits summed per prompt: hit [cell, instance], prompt [instance] -> [cell, prompt]."""
    order = np.argsort(prompt, kind="stable")
    ids, starts = np.unique(prompt[order], return_index=True)
    sums = np.zeros((hit.shape[0], n_prompts))
    if len(ids):
        sums[:, ids] = np.add.reduceat(hit[:, order].astype(np.float64), starts, axis=1)
    return sums


def _relation_key(order: dict[str, int], table: pd.DataFrame):
    def key(column: pd.Series) -> pd.Series:
        if column.name == "relation":
            return column.map(order)
        if column.name == "sign":
            return -column
        return column

    return key


def _topk_strings(topk: np.ndarray, tokens: Tokenization) -> np.ndarray:
    """' | '-joined top-k token strings, shape [head, sign, row]."""
    ids, inverse = np.unique(topk, return_inverse=True)
    names = np.array([tokens.decode(int(t)) for t in ids], dtype=object)[inverse.reshape(topk.shape)]
    joined = [" | ".join(r) for r in names.reshape(-1, topk.shape[-1]).tolist()]
    return np.array(joined, dtype=object).reshape(topk.shape[:-1])


def per_token_table(scored: _Scored, tokens: Tokenization) -> pd.DataFrame:
    """One row per head x relation x sign x keyword instance that has a target."""
    strings = _topk_strings(scored.topk, tokens)
    words = np.array(scored.words, dtype=object)
    blocks = []
    for r, relation in enumerate(scored.options.relations):
        keep = np.flatnonzero(scored.valid[:, r])
        rank = scored.ranks[:, :, keep, r].reshape(-1)  # [head * sign * instance]
        columns = _head_columns(scored, len(keep))
        columns |= {
            "relation": relation,
            "keyword": np.tile(words[keep], rank.size // max(len(keep), 1)),
            "target": np.tile(
                np.array(scored.targets[r], dtype=object)[keep], rank.size // max(len(keep), 1)
            ),
            "rank": rank,
            "hit": rank < scored.options.k,
            "topk": strings[:, :, scored.row[keep]].reshape(-1),
        }
        blocks.append(pd.DataFrame(columns))
    return pd.concat(blocks, ignore_index=True)[list(PER_TOKEN)]


def category_ids(dataset: Dataset, model: Model) -> tuple[list[str], torch.Tensor]:
    """Category names ('other' last) and the category index of every vocabulary token."""
    names = [*dataset.task.categories, OTHER]
    lookup = torch.full((model.weights.d_vocab,), len(names) - 1, dtype=torch.long)
    for index, words in reversed(list(enumerate(dataset.task.categories.values()))):
        for word in words:  # reversed: the first category listed wins a shared token
            lookup[list(model.tokens.target_tokens(word))] = index
    return names, lookup


def category_table(scored: _Scored, model: Model, dataset: Dataset) -> pd.DataFrame:
    """Share of the top-k slots per category, over the `n` instances each relation counts (each
    gives its k slots)."""
    names, lookup = category_ids(dataset, model)
    per_slot = lookup[torch.from_numpy(scored.topk).long()]  # [head, sign, row, k]
    blocks = []
    for r, relation in enumerate(scored.options.relations):
        keep = torch.from_numpy(scored.row[np.flatnonzero(scored.valid[:, r])])
        chosen = per_slot[:, :, keep]  # [head, sign, instance, k]
        counts = torch.nn.functional.one_hot(chosen, len(names)).sum((2, 3))  # [head, sign, category]
        slots = chosen.shape[2] * chosen.shape[3]  # no instance (an empty detail sample): no share
        share = (counts / slots).reshape(-1).numpy() if slots else np.full(counts.numel(), np.nan)
        columns = _head_columns(scored, len(names))
        columns |= {
            "relation": relation,
            "category": np.tile(names, share.size // len(names)),
            "share": share,
            "n": len(keep),
        }
        blocks.append(pd.DataFrame(columns))
    return pd.concat(blocks, ignore_index=True)[list(CATEGORY)]
