"""The head atlas (methods.md section 11): what every head does, read from the weights, across a
library of relations (`tasks/relation_library.py`).

For every head, relation and sign: the top-k score (share of the relation's kept sources whose
target is among the top k of the whole vocabulary, methods.md section 2, computed by the OV kernel)
and the within-set score (share whose target is the best of the relation's candidate targets;
chance 1/|T|, `atlas_within`). Every relation's source rows are stacked into one batch, so each
head's OV circuit up to the logits is formed once for all of them; the effective embedding of
each distinct source token is computed once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch

from headscope.embedding import block0_vectors, token_vectors
from headscope.errors import HeadscopeError
from headscope.heads import all_heads
from headscope.models.loading import Model
from headscope.models.product_rates import KERNEL_DTYPES, KernelDType
from headscope.scores import significance
from headscope.scores.atlas_within import candidate_sets, within_ranks
from headscope.scores.ov import kernel_device
from headscope.scores.ov_kernel import HeadRanks, RankCap, Targets, ov_ranks
from headscope.scores.ov_shared import KernelCall, KernelSettings
from headscope.tasks.relation_library import Relation, choose_relations
from headscope.tasks.relation_tokens import SpelledRelation, spell_relation

SIGNS = (1, -1)
DTYPES = {"float32": torch.float32, "float64": torch.float64}
COLUMNS = (
    "layer", "head", "relation", "group", "sign", "score", "within", "chance", "n", "dropped",
    "within_hits", "ci_low", "ci_high", "p", "p_adjusted",
)  # fmt: skip
PER_SOURCE = (
    "layer", "head", "relation", "sign", "source", "target", "rank", "hit", "within_rank", "within_hit",
    "topk",
)  # fmt: skip
CARD_WITHIN = 0.5  # a head "maps" a relation: its target is the best candidate for half the sources
CARD_TOPK = 0.5  # a head "writes the set": targets in the top k for half the sources, within-set below
CARD_LENGTH = 3  # relations named on a head's function card
MIN_CANDIDATES = 2  # a relation whose kept targets are fewer distinct tokens has no within-set score


@dataclass(frozen=True)
class AtlasOptions:
    """Top-k of the top-k score, the effective embedding, the precision, the per-source table, and
    the precision of the OV kernel's vocabulary products.

    `kernel_dtype`: "float32" (the products in `precision`), "bfloat16" (their operands in bfloat16,
    torch accumulating in float32; the counts, thresholds and within-set ranks stay in `precision`),
    or "auto": `analyses.atlas.atlas_tables` chooses (`models.product_rates.kernel_precision`:
    bfloat16 only for weights streamed in bfloat16 on a processor whose bfloat16 products are
    faster); read here, unresolved, "auto" is `precision`'s own, as before."""

    k: int = 5
    embedding: Literal["token", "block0"] = "token"
    precision: Literal["float32", "float64"] = "float32"
    per_source: bool = False  # also the per-source table (with each row's top-k tokens)
    kernel_dtype: KernelDType = "auto"


@dataclass(frozen=True)
class AtlasResult:
    table: pd.DataFrame  # COLUMNS: one row per head x relation x sign
    relations: pd.DataFrame  # relation, group, pairs, kept, dropped, candidates, chance, source
    cards: pd.DataFrame  # one row per head: its strongest relations
    per_source: pd.DataFrame  # PER_SOURCE (empty unless options.per_source)


@dataclass(frozen=True)
class _Batch:
    """Every kept pair of every relation, stacked (entry e: the pairs relation by relation). A source
    token shared by several relations is one row of the OV kernel, its pairs in the row's slots."""

    spelled: list[SpelledRelation]  # the scored relations
    tokens: torch.Tensor  # [row]: the distinct source tokens
    row: np.ndarray  # [entry] -> its row
    slot: np.ndarray  # [entry] -> its slot in the row (the kernel's relation axis)
    starts: np.ndarray  # [relation] first entry


def _batch(spelled: list[SpelledRelation]) -> _Batch:
    sources = np.array([t for s in spelled for t in s.source_tokens], dtype=np.int64)
    unique, row = np.unique(sources, return_inverse=True)
    slot, seen = np.zeros(len(row), dtype=np.int64), np.zeros(len(unique), dtype=np.int64)
    for entry, r in enumerate(row):  # the n-th pair of a row's source takes slot n
        slot[entry], seen[r] = seen[r], seen[r] + 1
    starts = np.cumsum([0, *[s.n for s in spelled]])[:-1]
    return _Batch(spelled, torch.from_numpy(unique), row, slot, starts)


def check_atlas(model: Model, options: AtlasOptions) -> None:
    if options.k < 1 or options.k > model.weights.d_vocab:
        raise HeadscopeError(
            f"k={options.k}: give a k from 1 to the vocabulary's {model.weights.d_vocab} tokens "
            "(a hit when the target is among the top k logits)"
        )
    if options.embedding not in ("token", "block0"):
        raise HeadscopeError(f"unknown embedding {options.embedding!r}: choose token or block0")
    if options.precision not in DTYPES:
        raise HeadscopeError(f"unknown precision {options.precision!r}: choose float32 or float64")
    if options.kernel_dtype not in KERNEL_DTYPES:
        raise HeadscopeError(f"kernel_dtype={options.kernel_dtype!r}: choose auto, float32 or bfloat16")


def products_dtype(options: AtlasOptions) -> torch.dtype | None:
    """The OV kernel's vocabulary products' precision (None: the kernel's own, `precision`)."""
    return torch.bfloat16 if options.kernel_dtype == "bfloat16" else None


def scored(spelled: SpelledRelation) -> bool:
    """Whether a relation is scored: its kept pairs have at least MIN_CANDIDATES distinct targets."""
    return len(spelled.candidates) >= MIN_CANDIDATES


def spell_all(model: Model, relations: list[Relation]) -> list[SpelledRelation]:
    """Every relation spelled by the model's tokenizer; an error when none can be scored."""
    spelled = [spell_relation(r, model.tokens) for r in relations]
    if not any(scored(s) for s in spelled):
        names = ", ".join(r.name for r in relations[:5]) + (", ..." if len(relations) > 5 else "")
        raise HeadscopeError(
            f"none of the relations asked for ({names}) keeps {MIN_CANDIDATES} pairs with distinct targets "
            "whose source is one token for this tokenizer; choose other relations or give a TOML file "
            "of words this model spells"
        )
    return spelled


@dataclass(frozen=True)
class AtlasInputs:
    """Every relation spelled, the kept pairs batched, and the effective embedding of each row."""

    every: list[SpelledRelation]
    batch: _Batch
    x: torch.Tensor  # [row, d_model]


@dataclass(frozen=True)
class AtlasPass:
    """The atlas's inputs and the ranks the kernel found for them (its share of a shared pass)."""

    inputs: AtlasInputs
    ranks: HeadRanks


def atlas_scores(
    model: Model,
    relations: list[Relation] | None = None,
    options: AtlasOptions = AtlasOptions(),
    computed: AtlasPass | None = None,
) -> AtlasResult:
    """Top-k and within-set scores of every head, relation (default: the whole library) and sign;
    `computed`: these options' inputs and ranks already found by a shared pass."""
    found = computed or _run_kernel(model, atlas_inputs(model, relations, options), options)
    if options.per_source and found.ranks.cap is not None:
        raise HeadscopeError("the per-source table needs exact ranks and top-k: compute them uncapped")
    every, batch, x = found.inputs.every, found.inputs.batch, found.inputs.x
    heads = all_heads(model.n_layers, model.n_heads)
    device, dtype = kernel_device(model), DTYPES[options.precision]
    within = _within_ranks(model, batch, x, heads, dtype, device)  # [head, sign, entry]
    rank = found.ranks.rank.numpy()[:, :, batch.row, batch.slot]  # [head, sign, entry]
    table = score_table(batch, heads, rank, within, options.k)
    per_source = pd.DataFrame(columns=PER_SOURCE)
    if options.per_source:
        topk = found.ranks.topk.numpy()[:, :, batch.row]  # [head, sign, entry, k]
        per_source = per_source_table(batch, heads, rank, within, topk, model, options.k)
    return AtlasResult(table, relation_table(every), function_cards(table), per_source)


def _run_kernel(model: Model, inputs: AtlasInputs, options: AtlasOptions) -> AtlasPass:
    """The OV kernel on the atlas's rows; without the per-source table (its ranks and top-k tokens)
    the ranks are capped at k, found with the kernel's exact early exit (`RankCap`)."""
    call, s = kernel_call(model, inputs, options)
    cap = RankCap(s.k) if call.capped else None
    ranks = ov_ranks(
        model.weights, call.x, call.targets, list(s.heads), s.k, s.signs, s.dtype, options.per_source,
        s.device, cap, s.products,
    )  # fmt: skip
    return AtlasPass(inputs, ranks)


def atlas_inputs(
    model: Model, relations: list[Relation] | None = None, options: AtlasOptions = AtlasOptions()
) -> AtlasInputs:
    """Every relation spelled, the kept pairs batched, and the effective embedding of each row."""
    check_atlas(model, options)
    every = spell_all(model, choose_relations(None) if relations is None else list(relations))
    batch = _batch([s for s in every if scored(s)])
    x = (token_vectors if options.embedding == "token" else block0_vectors)(model, batch.tokens)  # [row, d]
    return AtlasInputs(every, batch, x)


def kernel_call(
    model: Model, inputs: AtlasInputs, options: AtlasOptions = AtlasOptions()
) -> tuple[KernelCall, KernelSettings]:
    """What the OV kernel is handed for the atlas's rows, for a pass shared with other score sets:
    capped (hits alone, the exact early exit) unless the per-source table asks for ranks and top-k."""
    heads = tuple(all_heads(model.n_layers, model.n_heads))
    dtype, device = DTYPES[options.precision], kernel_device(model)
    settings = KernelSettings(heads, options.k, SIGNS, dtype, device, products_dtype(options))
    return KernelCall(inputs.x, _targets(inputs.batch), capped=not options.per_source), settings


def _within_ranks(model: Model, batch: _Batch, x, heads, dtype, device) -> np.ndarray:
    """Within-set ranks [head, sign, entry] of every relation's kept pairs, relation by relation."""
    rows = [
        batch.row[start : start + s.n].tolist() for start, s in zip(batch.starts, batch.spelled, strict=True)
    ]
    union, sets = candidate_sets(
        rows, [s.candidates for s in batch.spelled], [s.answer for s in batch.spelled]
    )
    return torch.cat(within_ranks(model.weights, x, heads, union, sets, SIGNS, dtype, device), -1).numpy()


def _targets(batch: _Batch) -> Targets:
    """Each row's pairs in its slots: the target tokens (padded by repeating the first); slots a row
    does not fill are not valid."""
    spelled = [t for s in batch.spelled for t in s.target_tokens]
    width = max(len(t) for t in spelled)
    tokens = torch.zeros(len(batch.tokens), int(batch.slot.max()) + 1, width, dtype=torch.long)
    valid = torch.zeros(tokens.shape[:2], dtype=torch.bool)  # [row, slot]
    for target, row, slot in zip(spelled, batch.row, batch.slot, strict=True):
        tokens[row, slot] = torch.tensor([*target, *[target[0]] * (width - len(target))])
        valid[row, slot] = True
    return Targets(tokens, valid)  # [row, slot, width]


def _head_sign_columns(heads: list[tuple[int, int]], per: int) -> dict[str, np.ndarray]:
    """layer, head, sign of a [head, sign, per] block flattened row-major."""
    layers, index = np.array([la for la, _ in heads]), np.array([h for _, h in heads])
    return {
        "layer": np.repeat(layers, len(SIGNS) * per),
        "head": np.repeat(index, len(SIGNS) * per),
        "sign": np.tile(np.repeat(np.array(SIGNS), per), len(heads)),
    }


def score_table(batch: _Batch, heads, rank: np.ndarray, within: np.ndarray, k: int) -> pd.DataFrame:
    """One row per head x relation x sign: shares of hits over the relation's kept pairs."""
    n = np.array([s.n for s in batch.spelled])
    hits = np.add.reduceat((rank < k).astype(np.int64), batch.starts, axis=-1)  # [head, sign, relation]
    best = np.add.reduceat((within == 0).astype(np.int64), batch.starts, axis=-1)
    columns = _head_sign_columns(heads, len(batch.spelled))
    repeat = len(heads) * len(SIGNS)
    table = pd.DataFrame(
        {
            "layer": columns["layer"],
            "head": columns["head"],
            "relation": np.tile([s.relation.name for s in batch.spelled], repeat),
            "group": np.tile([s.relation.group for s in batch.spelled], repeat),
            "sign": columns["sign"],
            "score": (hits / n).reshape(-1),
            "within": (best / n).reshape(-1),
            "chance": np.tile([s.chance for s in batch.spelled], repeat),
            "n": np.tile(n, repeat),
            "dropped": np.tile([s.dropped for s in batch.spelled], repeat),
            "within_hits": best.reshape(-1),
        }
    )
    return with_tests(table)[list(COLUMNS)]


def with_tests(table: pd.DataFrame) -> pd.DataFrame:
    """The within-set share's test against chance: its Wilson interval, the one-sided exact binomial
    p and the Benjamini–Hochberg adjusted p over every row of the table (heads x relations x signs)."""
    tests = significance.share_test(table["within_hits"], table["n"], table["chance"])
    table = table.assign(ci_low=tests["ci_low"], ci_high=tests["ci_high"], p=tests["p"])
    return table.assign(p_adjusted=significance.adjusted(table["p"]))


def relation_table(spelled: list[SpelledRelation]) -> pd.DataFrame:
    """Per relation: pairs in the library, kept for this tokenizer, dropped, candidates, chance, and
    whether it is scored (at least MIN_CANDIDATES distinct targets kept)."""
    return pd.DataFrame(
        {
            "relation": [s.relation.name for s in spelled],
            "group": [s.relation.group for s in spelled],
            "pairs": [len(s.relation.pairs) for s in spelled],
            "kept": [s.n for s in spelled],
            "dropped": [s.dropped for s in spelled],
            "candidates": [len(s.candidates) for s in spelled],
            "chance": [s.chance for s in spelled],
            "scored": [scored(s) for s in spelled],
            "source": [s.relation.source for s in spelled],
        }
    )


def card_kind(score: float, within: float, chance: float, p_adjusted: float) -> str:
    """'maps' (the target is the best candidate for most sources, beyond chance: the within-set
    share's BH-adjusted binomial p below significance.ALPHA), 'writes the set' (targets in the top k,
    yet not significantly the best among them), or '' (neither)."""
    if within >= CARD_WITHIN and within > chance and p_adjusted < significance.ALPHA:
        return "maps"
    return "writes the set" if score >= CARD_TOPK else ""


def above_chance(table: pd.DataFrame) -> pd.Series:
    """(within - chance) / (1 - chance): 0 at chance, 1 when the target is always the best candidate."""
    return (table["within"] - table["chance"]) / (1 - table["chance"])


KIND_ORDER = {"maps": 0, "writes the set": 1, "": 2}


def function_cards(table: pd.DataFrame) -> pd.DataFrame:
    """One row per head: its relations (both signs) ordered by kind (maps, then writes the set), then
    within-set score above chance, then top-k score; the first named in columns of its own, the
    first CARD_LENGTH in `card`."""
    values = zip(table["score"], table["within"], table["chance"], table["p_adjusted"], strict=True)
    kinds = [card_kind(*v) for v in values]
    ranked = table.assign(strength=above_chance(table), kind=kinds, order=[KIND_ORDER[k] for k in kinds])
    ranked = ranked.sort_values(
        ["layer", "head", "order", "strength", "score"],
        ascending=[True, True, True, False, False],
        kind="stable",
    )
    rows = []
    for (layer, head), group in ranked.groupby(["layer", "head"], sort=True):
        top = group.head(CARD_LENGTH)
        first = top.iloc[0]
        rows.append(
            {
                "layer": layer,
                "head": head,
                "relation": first.relation,
                "sign": first.sign,
                "within": first.within,
                "score": first.score,
                "chance": first.chance,
                "n": first.n,
                "ci_low": first.ci_low,
                "ci_high": first.ci_high,
                "p_adjusted": first.p_adjusted,
                "strength": first.strength,
                "kind": first.kind,
                "card": "; ".join(_card_entry(r) for r in top.itertuples(index=False)),
            }
        )
    cards = pd.DataFrame(rows).assign(order=lambda t: t["kind"].map(KIND_ORDER))
    cards = cards.sort_values(["order", "strength", "score"], ascending=[True, False, False], kind="stable")
    return cards.drop(columns="order").reset_index(drop=True)


def _card_entry(row) -> str:
    sign = "" if row.sign > 0 else "-"
    return (
        f"{sign}{row.relation} {row.within:.2f} [{row.ci_low:.2f}, {row.ci_high:.2f}] (chance "
        f"{row.chance:.2f}, p_adj {row.p_adjusted:.2g}; top-k {row.score:.2f})"
    )


def per_source_table(batch: _Batch, heads, rank, within, topk, model: Model, k: int) -> pd.DataFrame:
    """One row per head x sign x kept pair: its top-k rank, within-set rank and top-k tokens."""
    sources = np.array([w for s in batch.spelled for w in s.sources], dtype=object)
    targets = np.array([w for s in batch.spelled for w in s.targets], dtype=object)
    names = np.array([s.relation.name for s in batch.spelled for _ in range(s.n)], dtype=object)
    ids, inverse = np.unique(topk, return_inverse=True)
    spelled = np.array([model.tokens.decode(int(t)) for t in ids], dtype=object)[inverse.reshape(topk.shape)]
    joined = np.array([" | ".join(r) for r in spelled.reshape(-1, topk.shape[-1]).tolist()], dtype=object)
    repeat = len(heads) * len(SIGNS)
    columns = _head_sign_columns(heads, len(sources))
    table = pd.DataFrame(
        {
            **columns,
            "relation": np.tile(names, repeat),
            "source": np.tile(sources, repeat),
            "target": np.tile(targets, repeat),
            "rank": rank.reshape(-1),
            "hit": rank.reshape(-1) < k,
            "within_rank": within.reshape(-1),
            "within_hit": within.reshape(-1) == 0,
            "topk": joined,
        }
    )
    return table[list(PER_SOURCE)]
